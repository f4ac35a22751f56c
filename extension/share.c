/*-------------------------------------------------------------------------
 *
 * share.c
 *	  The readers of the published allocation: pool_share(), the reports
 *	  and reads of the protocol in every database (connbudget.demand and
 *	  connbudget.share), and the snapshots behind the views.
 *
 * A report (pool_share()'s demand, or setting connbudget.demand) records
 * the caller's demand and heartbeat with atomic stores; a read returns its
 * part of the latest publication (allocator.c): it never recomputes and
 * takes no lock.  A changed demand is reflected in the published shares
 * within one publish period.  Only a session's first report (or its first
 * after its report went stale) waits for the publication that includes it,
 * at most a period, so that a new pool learns a share that knows about it.
 * The views wait the same way for the inputs of the moment they are read,
 * so a change is visible in them at once.  Without the allocator (no
 * background worker slot was free, or it is restarting), readers publish
 * themselves, one at a time: slower, but never wrong.
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
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

/* connbudget.demand as set, and connbudget.share's variable (shown by a
   hook, never read). */
char	   *cb_demand = NULL;
static char *cb_share = NULL;

/* How long readers wait for a publication before answering without it. */
#define CB_AWAIT_PUBLICATION_MS 2000

/* ---------------------------------------------------------------------
 * Reading the publication
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
		share->demand = ps.demand;
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

/* ---------------------------------------------------------------------
 * Reports and reads
 * ---------------------------------------------------------------------
 */

/*
 * Record a report of this backend's pool session: renew its lease and
 * store its demand (>= 0, or CB_UNBOUNDED), the heartbeat first (see
 * state.h).  Returns true if it was the session's first report (or its
 * first after its report went stale, or after it left), whose publication
 * a reader should wait for; false also when the backend is not governed
 * (nothing is recorded).  Takes no lock and raises no error:
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

	pg_atomic_write_u64(&session->heartbeat, (uint64) now);
	pg_write_barrier();
	if (old_demand != demand)
		pg_atomic_write_u32(&session->demand, (uint32) demand);
	pg_atomic_write_u64(&pod->last_seen, (uint64) now);
	cb_left = false;

	if (first || old_demand != demand)
		cb_inputs_changed();
	return first;
}

/*
 * This backend's pool session leaves the budget: it demands nothing from
 * now on and its lease ends at once (and its pod's, once no other session
 * of the pod holds one), so that the pods that stay get its share at the
 * next publication, a publish period later, not pod_ttl later.  Its
 * connections still count until they close.  A later report brings it
 * back.
 *
 * CB_LEFT alone ends the lease: the heartbeat is left alone, so that a
 * report of the same session racing with the leave (from another of its
 * connections) cannot leave a left session with a lease, or a demand
 * without its heartbeat.  Nothing of the pod's is written: its lease is
 * its sessions', so sessions leaving at once, or while others report,
 * cannot keep it alive.
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
	uint64		limits_input_gen = pg_atomic_read_u64(&cb_shared->limits_input_gen);

	/*
	 * A change of limits is in force from its commit: a publication
	 * computed before it is not read, however recent.
	 */
	if (cb_published_input_gen() < limits_input_gen)
		(void) cb_await_publication(limits_input_gen);
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
	share->demand = CB_NO_REPORT;
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
	char		demand[32] = "";

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
	/* which report the share answers: a pool that just reported another
	   demand learns that the server has not published it yet */
	if (share.demand >= 0)
		snprintf(demand, sizeof(demand), " demand=%d", share.demand);
	else if (share.demand == CB_UNBOUNDED)
		strlcpy(demand, " demand=unbounded", sizeof(demand));
	snprintf(text, sizeof(text),
			 "protocol=%d status=%s max_size=%d min_size=%d allocation=%d pods=%d budget=%d refresh_ms=%d connections=%d%s",
			 CB_PROTOCOL_VERSION, cb_left ? "left" : "ok", share.max_size, share.min_size,
			 share.allocation, share.pods, share.budget, share.refresh_ms,
			 cb_pods[cb_sessions[slot].pod].connections, demand);
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
	TimestampTz *lease_ends = palloc(sizeof(TimestampTz) * cb_shared->pod_capacity);
	int32		apps = 0;
	int32		pods = 0;

	cb_await_current_inputs();
	now = GetCurrentTimestamp();
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	for (int i = 0; i < cb_shared->app_capacity; i++)
		if (cb_app_is_visible(&cb_apps[i]))
			apps++;
	cb_pod_lease_ends_locked(lease_ends, cb_shared->pod_ttl_ms);
	for (int i = 0; i < cb_shared->pod_capacity; i++)
		if (cb_pod_is_live(&cb_pods[i], lease_ends[i], now))
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
	pfree(lease_ends);
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
	TimestampTz *lease_ends = palloc(sizeof(TimestampTz) * cb_shared->pod_capacity);
	int			n = 0;
	TimestampTz now;

	cb_await_current_inputs();
	now = GetCurrentTimestamp();
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	cb_pod_lease_ends_locked(lease_ends, cb_shared->pod_ttl_ms);
	CB_READ_PUBLICATION(pub, {
		n = 0;
		for (int i = 0; i < cb_shared->pod_capacity; i++)
		{
			CbPod	   *pod = &cb_pods[i];
			CbPubPod	pp = pub->pods[i];
			bool		published = pp.incarnation == pod->incarnation &&
				pp.pubno == pub->pubno;
			CbPodRow   *row;

			if (!cb_pod_is_live(pod, lease_ends[i], now))
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
			row->lease_expires = lease_ends[i];
		}
	});
	LWLockRelease(cb_shared->lock);
	pfree(lease_ends);
	*rows_out = rows;
	return n;
}

/* ---------------------------------------------------------------------
 * The protocol's settings: connbudget.demand and connbudget.share
 * ---------------------------------------------------------------------
 */

static bool
cb_check_demand(char **newval, void **extra pg_attribute_unused(),
				GucSource source pg_attribute_unused())
{
	int32_t		demand;
	bool		leave;
	bool		report;

	if (!cb_parse_demand(*newval, &demand, &leave, &report))
	{
		GUC_check_errdetail("connbudget.demand is a number of connections from 0 to %d, \"unbounded\" or \"leave\".",
							CB_MAX_DEMAND);
		return false;
	}
	return true;
}

/*
 * Setting connbudget.demand is a report: it renews the lease of this
 * connection's pool session and records its demand (share.c).  An assign
 * hook may not fail, and runs again when a transaction that set it rolls
 * back (reporting the value that is back in force); a connection that is
 * not governed reports nothing, and connbudget.share says why.
 */
static void
cb_assign_demand(const char *newval, void *extra pg_attribute_unused())
{
	int32_t		demand;
	bool		leave;
	bool		report;

	if (cb_parse_demand(newval, &demand, &leave, &report) && report)
		cb_report_demand(demand, leave);
}

/* Reading connbudget.share reads this session's share. */
static const char *
cb_show_share(void)
{
	return cb_share_text();
}

/* Define connbudget.demand and connbudget.share (from _PG_init). */
void
cb_define_protocol_settings(void)
{
	DefineCustomStringVariable("connbudget.demand",
							   "The connections this connection's pool could use right now; setting it reports it.",
							   "A number from 0 up, \"unbounded\", or \"leave\" when the pool closes and hands its "
							   "share back. Each setting renews the pool's lease, like connbudget.pool_share(). "
							   "Works in every database, without the extension's objects.",
							   &cb_demand,
							   "",
							   PGC_USERSET, GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   cb_check_demand, cb_assign_demand, NULL);

	DefineCustomStringVariable("connbudget.share",
							   "This connection's pool's share of the connection budget, read-only.",
							   "Words of the form key=value: protocol, status, max_size, min_size, allocation, "
							   "pods, budget and refresh_ms (see the protocol in the documentation). "
							   "Works in every database, without the extension's objects.",
							   &cb_share,
							   "",
							   PGC_INTERNAL, GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, cb_show_share);
}

/*
 * How full the shared-memory tables are.  "used" counts the slots that
 * hold something; a kind is consistent when that equals its capacity less
 * its free stack and, where it has a lookup table, the table's entries.
 * Costs one pass over every table: for operators and tests, not for pools.
 */
void
cb_snapshot_slots(CbSlotsRow rows[CB_SLOT_KINDS])
{
	int32		backends = 0,
				apps = 0,
				pods = 0,
				sessions = 0,
				roles = 0,
				lists = 0;

	LWLockAcquire(cb_shared->lock, LW_SHARED);
	for (int i = 0; i < cb_shared->nbackends; i++)
		if (cb_backends[i].kind != CB_BACKEND_FREE)
			backends++;
	for (int i = 0; i < cb_shared->app_capacity; i++)
		if (cb_apps[i].incarnation != 0)
		{
			apps++;
			if (cb_apps[i].role_list >= 0)
				lists++;
		}
	for (int i = 0; i < cb_shared->pod_capacity; i++)
		if (cb_pods[i].incarnation != 0)
			pods++;
	for (int i = 0; i < cb_shared->session_capacity; i++)
		if (cb_sessions[i].incarnation != 0)
			sessions++;
	for (int i = 0; i < cb_shared->role_capacity; i++)
		if (cb_roles[i].incarnation != 0)
			roles++;

	rows[0] = (CbSlotsRow) {"backends", backends, cb_shared->nbackends,
		backends == cb_shared->governed + cb_shared->other};
	rows[1] = (CbSlotsRow) {"applications", apps, cb_shared->app_capacity,
		apps == cb_shared->app_capacity - cb_shared->apps_free &&
	apps == cb_app_lookup->count};
	rows[2] = (CbSlotsRow) {"pods", pods, cb_shared->pod_capacity,
		pods == cb_shared->pod_capacity - cb_shared->pods_free &&
	pods == cb_pod_lookup->count};
	rows[3] = (CbSlotsRow) {"pool sessions", sessions, cb_shared->session_capacity,
		sessions == cb_shared->session_capacity - cb_shared->sessions_free &&
	sessions == cb_session_lookup->count};
	rows[4] = (CbSlotsRow) {"roles", roles, cb_shared->role_capacity,
		roles == cb_shared->role_capacity - cb_shared->roles_free &&
	roles == cb_role_lookup->count};
	rows[5] = (CbSlotsRow) {"role lists", lists, CB_MAX_CONFIGURED_APPS,
	lists == CB_MAX_CONFIGURED_APPS - cb_shared->role_lists_free};
	LWLockRelease(cb_shared->lock);
}
