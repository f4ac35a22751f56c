/*-------------------------------------------------------------------------
 *
 * allocator.c
 *	  The allocator: the background worker that computes every
 *	  application's allocation, every pod's share and every session's part,
 *	  and publishes them for the readers (share.c).
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
 * shares within one publish period (later when the allocator waits for a
 * CPU; every share says which of the session's demands it answers, see
 * docs/protocol.md).  Only a session's first report (or its
 * first after its report went stale) waits for the publication that
 * includes it, at most a period, so that a new pool learns a share that
 * knows about it.  The views wait the same way for the inputs of the
 * moment they are read, so a change is visible in them at once.
 *
 * Without the allocator (no background worker slot was free, or it is
 * restarting), the views and pool_share() publish themselves, one at a
 * time under publish_lock: slower, but never wrong.
 *
 * The allocator needs only shared memory, so it runs from postmaster start
 * on every server, whatever the state of any database.  It also publishes
 * the sighup settings after every configuration reload (guc.c), so that
 * every backend shares the budget with the same values.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

PGDLLEXPORT void connbudget_allocator_main(Datum main_arg);

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

/* A session's demand as the allocation sees it (docs/identity-and-arithmetic.md, "Demand"). */
static int32
cb_session_demand(CbSession *session, TimestampTz now, int32 ttl_ms)
{
	int32		demand = (int32) pg_atomic_read_u32(&session->demand);
	uint64		heartbeat;

	if (demand == CB_LEFT)
		return 0;
	/* a report stores the heartbeat before the demand */
	pg_read_barrier();
	heartbeat = pg_atomic_read_u64(&session->heartbeat);
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
		/* the sum of its sessions' once computed; none demand nothing */
		p->pods[np].demand = 0;
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
		out->demand = p->sessions[i].demand;
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
		TimestampTz end = cb_session_lease_end(session, ttl);

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
void
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
 * The settings
 * ---------------------------------------------------------------------
 */

/*
 * Publish this process's view of the sighup settings.  The allocator calls
 * it at startup and after each reload of the configuration file, so that
 * every backend shares the budget with the same values.
 */
void
cb_publish_settings(void)
{
	bool		changed = false;

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (cb_shared->extension_reserved != cb_reserved_connections ||
		cb_shared->pod_ttl_ms != cb_pod_ttl_ms ||
		cb_shared->refresh_ms != cb_refresh_interval_ms ||
		cb_shared->unconfigured != cb_unconfigured_applications ||
		cb_shared->unconfigured_max != cb_unconfigured_max_connections ||
		cb_shared->max_pods_per_role != cb_max_pods_per_role)
	{
		bool		regroup = cb_shared->unconfigured != cb_unconfigured_applications;

		cb_store_settings();
		/* under unconfigured = other, such connections stop being governed */
		if (regroup)
			cb_recount_locked(GetCurrentTimestamp(), NULL, cb_enforce);
		changed = true;
	}
	LWLockRelease(cb_shared->lock);
	if (changed)
		cb_inputs_changed();
}

/* ---------------------------------------------------------------------
 * The allocator's loop
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

static void
cb_allocator_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	cb_allocator_detach();
}

void
connbudget_allocator_main(Datum main_arg pg_attribute_unused())
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	/* a shutdown ends the loop below: exit 0, no FATAL in the log */
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/*
	 * A worker ignores SIGHUP from its fork until the handler above is set,
	 * so a reload signalled in between would be lost until the next one:
	 * read the configuration files once now.
	 */
	ProcessConfigFile(PGC_SIGHUP);

	before_shmem_exit(cb_allocator_exit, (Datum) 0);
	cb_publish_settings();
	cb_allocator_attach(MyLatch);

	for (;;)
	{
		long		wait_ms;

		ResetLatch(MyLatch);
		if (cb_worker_interrupts())
			cb_publish_settings();

		wait_ms = cb_allocator_cycle();
		if (wait_ms < 0)
			/* the rest of the publish period: latches set meanwhile stay set */
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 -wait_ms, PG_WAIT_EXTENSION);
		else if (wait_ms > 0)
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
	}
}
