/*-------------------------------------------------------------------------
 *
 * share.c
 *	  The effective budget, publishing the allocation, pool_share(), and
 *	  the snapshots behind the views.
 *
 * The publication model
 * ---------------------
 * The allocation is computed off the request path, by one publisher: the
 * allocator worker (worker.c).  Whoever changes an input (a connect, an
 * exit, a changed demand, new limits or settings) bumps input_gen and sets
 * the allocator's latch.  The allocator recomputes at most once per
 * publish period (a tenth of connbudget.refresh_interval, between 10 ms and
 * 1 s) and whenever a lease ends: it reclaims pods and sessions that are
 * no longer live, copies the inputs out under the shared lock, computes
 * the allocation (allocation.c) with no lock held, and writes every
 * application's allocation, every pod's share and every session's part
 * into the snapshot that nobody reads, then makes it the current one.
 *
 * pool_share() records the caller's demand and heartbeat with atomic
 * stores and returns its part of the latest snapshot: it never recomputes
 * and takes no lock.  A changed demand is reflected in the published
 * shares within one publish period.  Only a session's first report (or its
 * first after its report went stale) waits for the publication that
 * includes it, at most a period, so that a new pool learns a share that
 * knows about it.  The views wait the same way for the inputs of the
 * moment they are read, so a change is visible in them at once.
 *
 * Without the allocator (no background worker slot was free, or it is
 * restarting), the views and pool_share() publish themselves, one at a
 * time under publish_lock: slower, but never wrong.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

/* How long readers wait for a publication before answering without it. */
#define CB_AWAIT_PUBLICATION_MS 2000

/* ---------------------------------------------------------------------
 * The publish period
 * ---------------------------------------------------------------------
 */

int32
cb_publish_period_ms(void)
{
	return Min(1000, Max(10, cb_shared->refresh_ms / 10));
}

/* ---------------------------------------------------------------------
 * The publisher
 * ---------------------------------------------------------------------
 */

/*
 * A publisher's private copy of the inputs, kept between publications:
 * while no slot is added or freed (membership_gen), the same items sit at
 * the same positions, the names need not be copied again and the order
 * that breaks ties need not be sorted again.
 */
typedef struct CbPublisher
{
	uint64		order_gen;		/* membership_gen of the inputs, 0: none */
	int			napps;
	int			npods;
	int			nsessions;
	CbAllocApp *apps;
	CbAllocPod *pods;
	CbAllocSession *sessions;
	int32	   *app_slot;		/* where each input came from */
	int32	   *pod_slot;
	int32	   *session_slot;
	uint32	   *app_incarnation;
	uint32	   *pod_incarnation;
	uint32	   *session_incarnation;
	char		(*app_names)[CB_NAME_LEN];
	char		(*pod_ids)[CB_NAME_LEN];
	int32	   *app_position;	/* slot -> input position */
	int32	   *pod_position;
	CbAllocOrder order;			/* the identity once the inputs are sorted */
	CbAllocOrder sort;			/* step 0's order, to sort the inputs by */
	void	   *scratch;		/* for sorting the inputs */
	void	   *work;
	TimestampTz last_published;
	TimestampTz next_event;		/* earliest lease end after the last one */
} CbPublisher;

static CbPublisher *cb_publisher = NULL;

static CbPublisher *
cb_get_publisher(void)
{
	int			napps = cb_shared->app_capacity;
	int			npods = cb_shared->pod_capacity;
	int			nsessions = cb_shared->session_capacity;
	MemoryContext old;
	CbPublisher *p;

	if (cb_publisher != NULL)
		return cb_publisher;
	old = MemoryContextSwitchTo(TopMemoryContext);
	p = palloc0(sizeof(CbPublisher));
	p->apps = MemoryContextAllocHuge(TopMemoryContext, sizeof(CbAllocApp) * napps);
	p->pods = MemoryContextAllocHuge(TopMemoryContext, sizeof(CbAllocPod) * npods);
	p->sessions = MemoryContextAllocHuge(TopMemoryContext, sizeof(CbAllocSession) * nsessions);
	p->app_slot = palloc(sizeof(int32) * napps);
	p->pod_slot = palloc(sizeof(int32) * npods);
	p->session_slot = palloc(sizeof(int32) * nsessions);
	p->app_incarnation = palloc(sizeof(uint32) * napps);
	p->pod_incarnation = palloc(sizeof(uint32) * npods);
	p->session_incarnation = palloc(sizeof(uint32) * nsessions);
	p->app_names = MemoryContextAllocHuge(TopMemoryContext, (Size) CB_NAME_LEN * napps);
	p->pod_ids = MemoryContextAllocHuge(TopMemoryContext, (Size) CB_NAME_LEN * npods);
	p->app_position = palloc(sizeof(int32) * napps);
	p->pod_position = palloc(sizeof(int32) * npods);
	p->order.app_order = palloc(sizeof(int32) * napps);
	p->order.pod_order = palloc(sizeof(int32) * npods);
	p->order.session_order = palloc(sizeof(int32) * nsessions);
	p->sort.app_order = palloc(sizeof(int32) * napps);
	p->sort.pod_order = palloc(sizeof(int32) * npods);
	p->sort.session_order = palloc(sizeof(int32) * nsessions);
	p->scratch = MemoryContextAllocHuge(TopMemoryContext,
										Max(Max(sizeof(CbAllocApp) * napps,
												sizeof(CbAllocPod) * npods),
											sizeof(CbAllocSession) * nsessions));
	p->work = MemoryContextAllocHuge(TopMemoryContext,
									 cb_allocation_work_size_sessions(napps, npods,
																	  nsessions));
	MemoryContextSwitchTo(old);
	cb_publisher = p;
	return p;
}

/* A session's demand as the allocation sees it (README "Demand"). */
static int32
cb_session_demand(CbSession *session, TimestampTz now, int32 ttl_ms)
{
	int32		demand = (int32) pg_atomic_read_u32(&session->demand);
	uint64		heartbeat = pg_atomic_read_u64(&session->heartbeat);

	if (demand == CB_LEFT)
		return 0;
	if (demand == CB_NO_REPORT || cb_lease_end(heartbeat, ttl_ms) <= now)
		return session->connections;
	return demand;
}

/*
 * Copy the slots that take part into the publisher's inputs.  Called with
 * the lock held in shared mode, after a change of membership.
 */
static void
cb_gather_members_locked(CbPublisher *p)
{
	int			na = 0,
				np = 0,
				ns = 0;

	for (int i = 0; i < cb_shared->app_capacity; i++)
	{
		CbApp	   *app = &cb_apps[i];

		p->app_position[i] = -1;
		if (app->incarnation == 0 || (!app->configured && app->npods == 0))
			continue;
		memcpy(p->app_names[na], app->name, CB_NAME_LEN);
		p->apps[na].name = p->app_names[na];
		p->apps[na].min_connections = app->min_connections;
		p->apps[na].max_connections = app->max_connections;
		p->apps[na].weight = app->weight;
		p->apps[na].unconfigured = !app->configured;
		p->app_slot[na] = i;
		p->app_incarnation[na] = app->incarnation;
		p->app_position[i] = na++;
	}
	for (int i = 0; i < cb_shared->pod_capacity; i++)
	{
		CbPod	   *pod = &cb_pods[i];

		p->pod_position[i] = -1;
		if (pod->incarnation == 0)
			continue;
		Assert(p->app_position[pod->app] >= 0);
		memcpy(p->pod_ids[np], pod->id, CB_NAME_LEN);
		p->pods[np].id = p->pod_ids[np];
		p->pods[np].app = p->app_position[pod->app];
		p->pod_slot[np] = i;
		p->pod_incarnation[np] = pod->incarnation;
		p->pod_position[i] = np++;
	}
	for (int i = 0; i < cb_shared->session_capacity; i++)
	{
		CbSession  *session = &cb_sessions[i];

		if (session->incarnation == 0)
			continue;
		Assert(p->pod_position[session->pod] >= 0);
		p->sessions[ns].pod = p->pod_position[session->pod];
		p->sessions[ns].token = session->token;
		p->session_slot[ns] = i;
		p->session_incarnation[ns] = session->incarnation;
		ns++;
	}
	p->napps = na;
	p->npods = np;
	p->nsessions = ns;
}

/*
 * Put the inputs in tie-breaking order (step 0), moving the slots they
 * came from along, so that the recomputes that follow -- every publish
 * period until somebody joins or leaves -- walk them in memory order with
 * an identity order, instead of hopping through 10,000 pods at random.
 */
#define CB_PERMUTE(type, array, order, n, scratch) \
	do { \
		type	   *tmp_ = (type *) (scratch); \
		for (int i_ = 0; i_ < (n); i_++) \
			tmp_[i_] = (array)[(order)[i_]]; \
		memcpy((array), tmp_, sizeof(type) * (n)); \
	} while (0)

static void
cb_sort_inputs(CbPublisher *p)
{
	CbAllocOrder *o = &p->sort;

	cb_allocation_order(p->apps, p->napps, p->pods, p->npods,
						p->sessions, p->nsessions, o, p->work);

	/* where each app and pod ends up, to remap the references to them */
	for (int i = 0; i < p->napps; i++)
		p->app_position[o->app_order[i]] = i;
	for (int i = 0; i < p->npods; i++)
		p->pod_position[o->pod_order[i]] = i;

	CB_PERMUTE(CbAllocApp, p->apps, o->app_order, p->napps, p->scratch);
	CB_PERMUTE(int32, p->app_slot, o->app_order, p->napps, p->scratch);
	CB_PERMUTE(uint32, p->app_incarnation, o->app_order, p->napps, p->scratch);
	CB_PERMUTE(CbAllocPod, p->pods, o->pod_order, p->npods, p->scratch);
	CB_PERMUTE(int32, p->pod_slot, o->pod_order, p->npods, p->scratch);
	CB_PERMUTE(uint32, p->pod_incarnation, o->pod_order, p->npods, p->scratch);
	CB_PERMUTE(CbAllocSession, p->sessions, o->session_order, p->nsessions, p->scratch);
	CB_PERMUTE(int32, p->session_slot, o->session_order, p->nsessions, p->scratch);
	CB_PERMUTE(uint32, p->session_incarnation, o->session_order, p->nsessions, p->scratch);
	for (int i = 0; i < p->npods; i++)
		p->pods[i].app = p->app_position[p->pods[i].app];
	for (int i = 0; i < p->nsessions; i++)
		p->sessions[i].pod = p->pod_position[p->sessions[i].pod];

	for (int i = 0; i < p->napps; i++)
		p->order.app_order[i] = i;
	for (int i = 0; i < p->npods; i++)
		p->order.pod_order[i] = i;
	for (int i = 0; i < p->nsessions; i++)
		p->order.session_order[i] = i;
}

/* Write the result into the snapshot readers are not reading, then flip. */
static void
cb_write_publication(CbPublisher *p, uint64 input_gen, int32 budget,
					 int32 refresh_ms, TimestampTz now)
{
	uint32		current = pg_atomic_read_u32(&cb_shared->current_pub);
	CbPublication *pub = &cb_shared->pubs[1 - current];
	uint32		pubno = cb_shared->pubs[current].pubno + 1;
	uint64		seq = pg_atomic_read_u64(&pub->seq);

	if (pubno == 0)
		pubno = 1;
	pg_atomic_write_u64(&pub->seq, seq + 1);
	pg_write_barrier();
	for (int i = 0; i < p->napps; i++)
	{
		CbPubApp   *out = &pub->apps[p->app_slot[i]];

		out->incarnation = p->app_incarnation[i];
		out->pubno = pubno;
		out->allocation = p->apps[i].allocation;
		out->live_pods = p->apps[i].live_pods;
		out->demand = p->apps[i].demand;
	}
	for (int i = 0; i < p->npods; i++)
	{
		CbPubPod   *out = &pub->pods[p->pod_slot[i]];

		out->incarnation = p->pod_incarnation[i];
		out->pubno = pubno;
		out->share = p->pods[i].share;
		out->min_share = p->pods[i].min_share;
		out->demand = p->pods[i].demand;
	}
	for (int i = 0; i < p->nsessions; i++)
	{
		CbPubSession *out = &pub->sessions[p->session_slot[i]];

		out->incarnation = p->session_incarnation[i];
		out->pubno = pubno;
		out->share = p->sessions[i].share;
		out->min_share = p->sessions[i].min_share;
	}
	pub->pubno = pubno;
	pub->input_gen = input_gen;
	pub->published_at = now;
	pub->budget = budget;
	pub->refresh_ms = refresh_ms;
	pub->live_pods = p->npods;
	pg_write_barrier();
	pg_atomic_write_u64(&pub->seq, seq + 2);
	pg_write_barrier();
	pg_atomic_write_u32(&cb_shared->current_pub, 1 - current);
	ConditionVariableBroadcast(&cb_shared->published_cv);
}

/*
 * Reclaim what is no longer live, share the budget among what is, and
 * publish it.  The caller holds publish_lock.
 */
static void
cb_publish_locked(CbPublisher *p, TimestampTz now, bool reclaim)
{
	uint64		input_gen;
	bool		reorder = false;
	int32		budget;
	int32		unconfigured_cap;
	int32		ttl;
	int32		refresh_ms;
	TimestampTz next_event = DT_NOEND;

	if (reclaim)
	{
		LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
		(void) cb_reclaim_locked(now);
		LWLockRelease(cb_shared->lock);
	}

	/* what was counted before we look is in what we publish */
	input_gen = pg_atomic_read_u64(&cb_shared->input_gen);
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	if (p->order_gen != pg_atomic_read_u64(&cb_shared->membership_gen))
	{
		cb_gather_members_locked(p);
		p->order_gen = pg_atomic_read_u64(&cb_shared->membership_gen);
		reorder = true;
	}
	ttl = cb_shared->pod_ttl_ms;
	refresh_ms = cb_shared->refresh_ms;
	for (int i = 0; i < p->nsessions; i++)
	{
		CbSession  *session = &cb_sessions[p->session_slot[i]];
		TimestampTz end = cb_lease_end(pg_atomic_read_u64(&session->heartbeat), ttl);

		p->sessions[i].demand = cb_session_demand(session, now, ttl);
		if (end > now && end < next_event)
			next_event = end;
	}
	budget = cb_effective_budget_locked();
	unconfigured_cap = cb_shared->unconfigured_max;
	LWLockRelease(cb_shared->lock);

	if (reorder)
		cb_sort_inputs(p);
	(void) cb_allocate_ordered(budget, unconfigured_cap, p->apps, p->napps, p->pods, p->npods,
							   p->sessions, p->nsessions, &p->order, p->work);
	cb_write_publication(p, input_gen, budget, refresh_ms, now);
	p->last_published = now;
	p->next_event = next_event;
}

/* Publish from this process now: the allocator's fallback. */
static void
cb_publish_here(void)
{
	TimestampTz now;
	TimestampTz next;
	CbPublisher *p = cb_get_publisher();

	/* nobody else publishes this process's settings reloads either */
	cb_publish_settings();
	LWLockAcquire(cb_shared->publish_lock, LW_EXCLUSIVE);
	now = GetCurrentTimestamp();
	cb_publish_locked(p, now, cb_reclaim_due(p->last_published, now, &next));
	LWLockRelease(cb_shared->publish_lock);
}

/* ---------------------------------------------------------------------
 * The allocator's side
 * ---------------------------------------------------------------------
 */

void
cb_allocator_attach(Latch *latch)
{
	pg_atomic_write_u32(&cb_shared->allocator_pid, (uint32) MyProcPid);
	pg_atomic_write_u64(&cb_shared->allocator_latch, (uint64) (uintptr_t) latch);
}

void
cb_allocator_detach(void)
{
	pg_atomic_write_u64(&cb_shared->allocator_latch, 0);
	pg_atomic_write_u32(&cb_shared->allocator_pid, 0);
	/* readers waiting for us publish themselves */
	ConditionVariableBroadcast(&cb_shared->published_cv);
}

/*
 * One turn of the allocator's loop: publish if an input changed or a lease
 * ended, at most once per publish period.  Returns how long to wait for
 * the latch, in ms, or minus how long to sleep without it (the rest of the
 * period; meanwhile SetLatch() from backends is only a store).
 */
long
cb_allocator_cycle(void)
{
	CbPublisher *p = cb_get_publisher();
	TimestampTz now = GetCurrentTimestamp();
	CbPublication *current = &cb_shared->pubs[pg_atomic_read_u32(&cb_shared->current_pub)];
	TimestampTz next_event;
	bool		lease_ended = cb_reclaim_due(p->last_published, now, &next_event);
	bool		due;
	long		since_ms;

	due = current->pubno == 0 || lease_ended ||
		current->input_gen != pg_atomic_read_u64(&cb_shared->input_gen);
	if (!due)
	{
		if (next_event == DT_NOEND)
			return 1000;
		return Min(1000, Max(1, TimestampDifferenceMilliseconds(now, next_event)));
	}
	/* a wall clock stepped back publishes at once rather than wait for it */
	since_ms = TimestampDifferenceMilliseconds(p->last_published, now);
	if (p->last_published != 0 && p->last_published <= now &&
		since_ms < cb_publish_period_ms())
		return -(cb_publish_period_ms() - since_ms);

	LWLockAcquire(cb_shared->publish_lock, LW_EXCLUSIVE);
	cb_publish_locked(p, now, lease_ended);
	LWLockRelease(cb_shared->publish_lock);
	return 0;
}

/* ---------------------------------------------------------------------
 * Readers
 * ---------------------------------------------------------------------
 */

static bool
cb_allocator_running(void)
{
	return pg_atomic_read_u32(&cb_shared->allocator_pid) != 0;
}

static uint64
cb_published_input_gen(void)
{
	CbPublication *pub = &cb_shared->pubs[pg_atomic_read_u32(&cb_shared->current_pub)];

	pg_read_barrier();
	return pub->pubno == 0 ? 0 : pub->input_gen;
}

/*
 * Wait until the current publication was computed from inputs at least as
 * new as input_gen: at most a period or two while the allocator runs;
 * without it, publish here.  Returns false on timeout.
 */
static bool
cb_await_publication(uint64 input_gen)
{
	TimestampTz deadline;
	bool		done = true;

	if (cb_published_input_gen() >= input_gen)
		return true;
	if (!cb_allocator_running())
	{
		cb_publish_here();
		return true;
	}
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   CB_AWAIT_PUBLICATION_MS);
	ConditionVariablePrepareToSleep(&cb_shared->published_cv);
	while (cb_published_input_gen() < input_gen)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   deadline);

		if (!cb_allocator_running())
		{
			ConditionVariableCancelSleep();
			cb_publish_here();
			return true;
		}
		if (left <= 0)
		{
			done = false;
			break;
		}
		(void) ConditionVariableTimedSleep(&cb_shared->published_cv,
										   Min(left, 100), PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return done;
}

/*
 * Run "body" over the current publication until it was read without the
 * publisher rewriting it meanwhile (a seqlock read; the publisher writes
 * the other snapshot, so a retry needs two publications within the read).
 */
#define CB_READ_PUBLICATION(pub, ...) \
	for (;;) \
	{ \
		CbPublication *pub = &cb_shared->pubs[pg_atomic_read_u32(&cb_shared->current_pub)]; \
		uint64		seq_ = pg_atomic_read_u64(&pub->seq); \
		if (seq_ & 1) \
		{ \
			pg_spin_delay(); \
			continue; \
		} \
		pg_read_barrier(); \
		__VA_ARGS__; \
		pg_read_barrier(); \
		if (pg_atomic_read_u64(&pub->seq) == seq_) \
			break; \
	}

static void
cb_not_governed(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("this connection is not governed by connbudget"),
			 errdetail("Its application \"%s\" has no row in connbudget.application_limits and it gave no connbudget.pod at connect time.",
					   cb_backends[CB_MY_BACKEND_INDEX()].identity.application_name),
			 errhint("Connect with options='-c connbudget.pod=<pod id>', or add the application to connbudget.application_limits and reconnect.")));
}

/* This session's part of the current publication; false if not in it. */
static bool
cb_read_share(int32 session_slot, uint32 session_inc, CbShare *share)
{
	CbSession  *session = &cb_sessions[session_slot];
	CbPod	   *pod = &cb_pods[session->pod];
	CbApp	   *app = &cb_apps[pod->app];
	uint32		app_inc = app->incarnation;
	bool		found = false;

	CB_READ_PUBLICATION(pub, {
		CbPubSession ps = pub->sessions[session_slot];
		CbPubApp	pa = pub->apps[pod->app];

		found = pub->pubno != 0 &&
			ps.incarnation == session_inc && ps.pubno == pub->pubno &&
			pa.incarnation == app_inc && pa.pubno == pub->pubno;
		share->max_size = ps.share;
		share->min_size = ps.min_share;
		share->allocation = pa.allocation;
		share->pods = pa.live_pods;
		share->budget = pub->budget;
		share->refresh_ms = pub->refresh_ms;
	});
	return found;
}

/*
 * The pool session this backend reports for, pinned by its own connection
 * (a parallel worker's: its leader's), or NULL if it is not governed.
 */
static CbSession *
cb_my_session(int32 *slot, uint32 *incarnation)
{
	CbBackend  *me = &cb_backends[CB_LEADER_BACKEND_INDEX()];
	uint64		reporting = pg_atomic_read_u64(&me->reporting);

	if (reporting == 0)
		return NULL;
	*slot = (int32) (reporting >> 32) - 1;
	*incarnation = (uint32) reporting;
	return &cb_sessions[*slot];
}

/* This backend's session left and has not reported since. */
static bool cb_left = false;

/* A report whose publication the next read waits for (a first one). */
static bool cb_report_unpublished = false;

/*
 * Record a report of this backend's pool session: renew its lease and
 * store its demand (>= 0, or CB_UNBOUNDED).  Returns true if it was the
 * session's first report (or its first after its report went stale), whose
 * publication a reader should wait for; false also when the backend is
 * not governed (nothing is recorded).  Takes no lock and raises no error:
 * connbudget.demand's assign hook calls it.
 */
static bool
cb_record_report(int32 demand)
{
	int32		slot;
	uint32		incarnation;
	CbSession  *session = cb_my_session(&slot, &incarnation);
	CbPod	   *pod;
	TimestampTz now;
	int32		old_demand;
	uint64		old_heartbeat;
	bool		first;

	if (session == NULL)
		return false;
	pod = &cb_pods[session->pod];
	now = GetCurrentTimestamp();
	old_demand = (int32) pg_atomic_read_u32(&session->demand);
	old_heartbeat = pg_atomic_read_u64(&session->heartbeat);
	first = old_demand == CB_NO_REPORT || old_demand == CB_LEFT || old_heartbeat == 0 ||
		cb_lease_end(old_heartbeat, cb_shared->pod_ttl_ms) <= now;

	if (old_demand != demand)
		pg_atomic_write_u32(&session->demand, (uint32) demand);
	pg_atomic_write_u64(&session->heartbeat, (uint64) now);
	pg_atomic_write_u64(&pod->heartbeat, (uint64) now);
	pg_atomic_write_u64(&pod->last_seen, (uint64) now);
	cb_left = false;

	if (first || old_demand != demand)
		cb_inputs_changed();
	return first;
}

/*
 * This backend's pool session leaves the budget: it demands nothing from
 * now on and its lease ends at once (and its pod's, if it is the pod's only
 * session), so that the pods that stay get its share at the next
 * publication, a publish period later, not pod_ttl later.  Its connections
 * still count until they close.  A later report brings it back.
 */
static void
cb_leave(void)
{
	int32		slot;
	uint32		incarnation;
	CbSession  *session = cb_my_session(&slot, &incarnation);

	if (session == NULL)
		return;
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (session->incarnation == incarnation)
	{
		pg_atomic_write_u32(&session->demand, (uint32) CB_LEFT);
		pg_atomic_write_u64(&session->heartbeat, 0);
		if (cb_pods[session->pod].nsessions == 1)
			pg_atomic_write_u64(&cb_pods[session->pod].heartbeat, 0);
		cb_inputs_changed();
	}
	LWLockRelease(cb_shared->lock);
	cb_left = true;
}

/*
 * Read this session's share from the latest publication; if the session
 * is not in it yet (a new session), or a first report is not published
 * yet, wait for the publication that knows about it (at most a period or
 * two).  Without one in time: what it holds, which was admitted.
 */
static void
cb_read_own_share(int32 slot, uint32 incarnation, bool wait, CbShare *share)
{
	CbSession  *session = &cb_sessions[slot];

	if (!wait && cb_read_share(slot, incarnation, share))
		return;
	(void) cb_await_publication(pg_atomic_read_u64(&cb_shared->input_gen));
	if (cb_read_share(slot, incarnation, share))
		return;
	share->max_size = Max(1, session->connections);
	share->min_size = 0;
	share->allocation = share->max_size;
	share->pods = 1;
	share->budget = Max(share->max_size, cb_configured_budget());
	share->refresh_ms = cb_publish_period_ms();
}

/*
 * pool_share(): renew this backend's session lease, record its demand, and
 * return its part of the latest published allocation.  Takes no lock.
 */
void
cb_pool_share(int32 demand, CbShare *share)
{
	int32		slot;
	uint32		incarnation;
	bool		first;

	if (cb_my_session(&slot, &incarnation) == NULL)
		cb_not_governed();
	first = cb_record_report(demand);
	cb_read_own_share(slot, incarnation, first, share);
}

/*
 * connbudget.demand was set: report it ("leave" leaves).  From an assign
 * hook, so it never raises an error; a backend that is not governed
 * reports nothing, and connbudget.share says why.
 */
void
cb_report_demand(int32 demand, bool leave)
{
	if (cb_shared == NULL || !IsUnderPostmaster || MyBackendType != B_BACKEND)
		return;
	if (leave)
		cb_leave();
	else if (cb_record_report(demand))
		cb_report_unpublished = true;
}

/*
 * The value of connbudget.share: this session's share and what a pool
 * needs with it, as "key=value" words (see docs/protocol.md).  From a show
 * hook, so it never raises an error: a connection that is not governed,
 * or was left "other" by a re-sort, gets a status saying so.
 */
const char *
cb_share_text(void)
{
	static char text[256];
	int32		slot;
	uint32		incarnation;
	CbShare		share;
	CbVerdict	verdict;
	bool		demoted = false;

	if (cb_shared == NULL || !IsUnderPostmaster ||
		(MyBackendType != B_BACKEND && !IsParallelWorker()))
		return "protocol=" CppAsString2(CB_PROTOCOL_VERSION) " status=unavailable";
	verdict = IsParallelWorker() ? cb_backends[CB_LEADER_BACKEND_INDEX()].verdict :
		cb_check_own_claim_quietly(&demoted);
	if (demoted)
		cb_request_reload();	/* the loader judges the role's other connections */
	if (verdict != CB_ADMIT)
	{
		snprintf(text, sizeof(text),
				 "protocol=%d status=refused sqlstate=%s reason=%s refresh_ms=%d",
				 CB_PROTOCOL_VERSION, cb_verdict_sqlstate(verdict), cb_verdict_word(verdict),
				 cb_shared->refresh_ms);
		return text;
	}
	if (cb_my_session(&slot, &incarnation) == NULL)
	{
		snprintf(text, sizeof(text), "protocol=%d status=other refresh_ms=%d",
				 CB_PROTOCOL_VERSION, cb_shared->refresh_ms);
		return text;
	}
	cb_read_own_share(slot, incarnation, cb_report_unpublished && !IsParallelWorker(),
					  &share);
	cb_report_unpublished = false;
	if (cb_left)
		share.max_size = share.min_size = 0;	/* what a pool that left may hold */
	snprintf(text, sizeof(text),
			 "protocol=%d status=%s max_size=%d min_size=%d allocation=%d pods=%d budget=%d refresh_ms=%d",
			 CB_PROTOCOL_VERSION, cb_left ? "left" : "ok", share.max_size, share.min_size,
			 share.allocation, share.pods, share.budget, share.refresh_ms);
	return text;
}

/* ---------------------------------------------------------------------
 * Snapshots for the views
 * ---------------------------------------------------------------------
 */

static bool
cb_app_is_visible(CbApp *app)
{
	return app->incarnation != 0 &&
		(app->configured || app->connections > 0 || app->npods > 0 ||
		 app->refused > 0);
}

/* The views show the inputs of the moment they are read. */
static void
cb_await_current_inputs(void)
{
	(void) cb_await_publication(pg_atomic_read_u64(&cb_shared->input_gen));
}

void
cb_snapshot_budget(CbBudgetRow *row)
{
	TimestampTz now;
	int32		apps = 0;
	int32		pods = 0;

	cb_await_current_inputs();
	now = GetCurrentTimestamp();
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	for (int i = 0; i < cb_shared->app_capacity; i++)
		if (cb_app_is_visible(&cb_apps[i]))
			apps++;
	for (int i = 0; i < cb_shared->pod_capacity; i++)
		if (cb_pod_is_live(&cb_pods[i], now, cb_shared->pod_ttl_ms))
			pods++;
	row->max_connections = MaxConnections;
	row->superuser_reserved = CB_SUPERUSER_RESERVED();
	row->reserved_connections = CB_SERVER_RESERVED();
	row->extension_reserved = cb_shared->extension_reserved;
	CB_READ_PUBLICATION(pub, row->budget = pub->pubno ? pub->budget
						: cb_effective_budget_locked());
	row->governed = cb_shared->governed;
	row->other = cb_shared->other;
	row->free = Max(0, row->budget - cb_shared->governed);
	row->applications = apps;
	row->pods = pods;
	LWLockRelease(cb_shared->lock);
}

int
cb_snapshot_applications(CbApplicationRow **rows_out)
{
	CbApplicationRow *rows = palloc(sizeof(CbApplicationRow) * cb_shared->app_capacity);
	int			n = 0;

	cb_await_current_inputs();
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	CB_READ_PUBLICATION(pub, {
		n = 0;
		for (int i = 0; i < cb_shared->app_capacity; i++)
		{
			CbApp	   *app = &cb_apps[i];
			CbPubApp	pa = pub->apps[i];
			bool		published = pa.incarnation == app->incarnation &&
				pa.pubno == pub->pubno;
			CbApplicationRow *row;

			if (!cb_app_is_visible(app))
				continue;
			row = &rows[n++];
			memcpy(row->application_name, app->name, CB_NAME_LEN);
			row->configured = app->configured;
			row->min_connections = app->min_connections;
			row->max_connections = app->max_connections;
			row->weight = app->weight;
			row->allocation = published ? pa.allocation : 0;
			row->connections = app->connections;
			row->pods = published ? pa.live_pods : 0;
			row->demand = row->pods > 0 ? pa.demand : 0;
			row->refused = (int64) app->refused;
		}
	});
	LWLockRelease(cb_shared->lock);
	*rows_out = rows;
	return n;
}

int
cb_snapshot_pods(CbPodRow **rows_out)
{
	CbPodRow   *rows = palloc(sizeof(CbPodRow) * cb_shared->pod_capacity);
	int			n = 0;
	TimestampTz now;

	cb_await_current_inputs();
	now = GetCurrentTimestamp();
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	CB_READ_PUBLICATION(pub, {
		n = 0;
		for (int i = 0; i < cb_shared->pod_capacity; i++)
		{
			CbPod	   *pod = &cb_pods[i];
			CbPubPod	pp = pub->pods[i];
			bool		published = pp.incarnation == pod->incarnation &&
				pp.pubno == pub->pubno;
			CbPodRow   *row;

			if (!cb_pod_is_live(pod, now, cb_shared->pod_ttl_ms))
				continue;
			row = &rows[n++];
			memcpy(row->application_name, cb_apps[pod->app].name, CB_NAME_LEN);
			memcpy(row->pod, pod->id, CB_NAME_LEN);
			row->connections = pod->connections;
			row->share = published ? pp.share : 0;
			row->demand = published ? pp.demand : pod->connections;
			memcpy(row->client_addr, pod->client_addr, CB_ADDR_LEN);
			memcpy(row->owner, cb_roles[pod->role].name, CB_NAME_LEN);
			row->derived = pod->derived;
			row->first_seen = pod->first_seen;
			row->last_seen = (TimestampTz) pg_atomic_read_u64(&pod->last_seen);
			row->lease_expires = cb_pod_lease_end(pod, cb_shared->pod_ttl_ms);
		}
	});
	LWLockRelease(cb_shared->lock);
	*rows_out = rows;
	return n;
}
