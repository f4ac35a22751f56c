/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The shared-memory state of connbudget: one slot per backend, the
 *	  table of applications, the table of pods, and the current shares.
 *
 * What is kept where
 * ------------------
 * backends[]	one slot per PGPROC that can be a client backend, indexed by
 *				CB_MY_BACKEND_INDEX().  The connect hook fills it in with the
 *				connection's identity and whether it is governed; the exit
 *				callback empties it.  Every count below is derived from these
 *				slots and can be rebuilt from them (cb_rebuild_counts_locked).
 * apps[]		one entry per application that is configured (a row in
 *				connbudget.application_limits), has governed connections or
 *				pods, or was refused since server start (to keep its counter).
 * pods[]		one entry per live pod: a pod with governed connections, or
 *				one whose lease from its last pool_share() has not expired.
 * results		each app's allocation and each pod's share, computed by
 *				cb_allocate() from the above.  They are recomputed lazily:
 *				anything that changes an input clears alloc_valid, and the
 *				next reader (pool_share() or a view) recomputes.
 *
 * Locking
 * -------
 * One LWLock protects everything except the fields declared atomic.
 *
 * - The connect hook and the exit callback take it exclusively, for a few
 *	 microseconds: find the app and pod, adjust counts, compare with limits.
 *	 Counting and checking under the same exclusive lock is what makes
 *	 admission exact: no two connections can take the same last slot.
 *	 ProcArrayLock is never taken and no catalog is read on this path.
 * - pool_share() takes it shared when nothing changed since the last
 *	 allocation (the common case: same demand, no pod joined or left), and
 *	 renews its lease with an atomic store; otherwise it takes it
 *	 exclusively and recomputes.
 * - The views take it shared to copy rows out (exclusively only if the
 *	 allocation is stale), and build tuples after releasing it.
 * - Nothing that can raise an error is done while holding it, so it never
 *	 needs releasing on an error path.  The allocation arithmetic works in a
 *	 scratch area in shared memory and does not palloc.
 *
 * limits_state and reload_requested are atomics so that the connect hook
 * can test them without the lock.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "connbudget.h"

typedef struct CbApp
{
	bool		in_use;
	bool		configured;		/* has a row in application_limits */
	bool		listed;			/* scratch for cb_publish_limits */
	int32		min_connections;
	int32		max_connections;	/* CB_UNBOUNDED = no cap */
	int32		weight;
	int32		connections;	/* governed backends of this app */
	int32		npods;			/* pod entries referring to this app */
	uint64		refused;		/* refusals (or warnings) since start */
	int32		alloc_index;	/* position in the allocation input */

	/* results of the last allocation */
	int32		allocation;
	int32		guaranteed;
	int32		live_pods;
	int64		demand;

	char		name[CB_NAME_LEN];
} CbApp;

typedef struct CbPod
{
	bool		in_use;
	int32		app;			/* index into apps[] */
	int32		connections;	/* governed backends of this pod */
	int32		demand;			/* last reported, CB_UNBOUNDED if none */
	TimestampTz first_seen;
	pg_atomic_uint64 last_seen; /* last connect or pool_share() */
	pg_atomic_uint64 heartbeat; /* last pool_share(), 0 = never */

	/* results of the last allocation */
	int32		share;
	int32		min_share;

	char		id[CB_NAME_LEN];
	char		client_addr[CB_ADDR_LEN];
} CbPod;

typedef struct CbBackend
{
	CbBackendKind kind;
	int32		app;			/* apps[] index when governed, else -1 */
	int32		pod;			/* pods[] index when governed, else -1 */
	CbIdentity	identity;
} CbBackend;

typedef struct CbShared
{
	LWLock	   *lock;
	ConditionVariable limits_cv;	/* signalled when limits_state changes */
	pg_atomic_uint32 limits_state;	/* CbLimitsState */
	pg_atomic_uint32 reload_requested;
	Latch	   *worker_latch;	/* the worker's, or NULL when not running */

	/* sighup settings, as last published by the worker */
	int32		extension_reserved;
	int32		pod_ttl_ms;
	int32		refresh_ms;

	/* counts, derived from backends[] */
	int32		governed;
	int32		other;
	int32		committed;		/* sum over apps of max(connections, min) */

	/* the last allocation */
	bool		alloc_valid;
	TimestampTz alloc_expiry;	/* earliest lease expiry it depends on */
	int32		budget;			/* the effective budget it shared */
	int32		live_pods;

	/* capacities of the arrays that follow */
	int			napps;
	int			npods;
	int			nbackends;
} CbShared;

static CbShared *cb_shared = NULL;
static CbApp *cb_apps;
static CbPod *cb_pods;
static CbBackend *cb_backends;

/*
 * Lookup keys, parallel to apps[] and pods[]: the name's hash with the low
 * bit set while the entry is in use, 0 while it is free.  The connect path
 * scans these few kilobytes instead of the entries themselves, so a new
 * backend touches two pages of them rather than every entry.
 */
static uint32 *cb_app_keys;
static uint32 *cb_pod_keys;

/* scratch space for cb_allocate(), used under the exclusive lock */
static CbAllocApp *cb_work_apps;
static CbAllocPod *cb_work_pods;
static int32 *cb_work_app_slot;
static int32 *cb_work_pod_slot;
static void *cb_work;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Pods: one per governed connection at most, plus as many again holding
 * only a lease.  Applications: every configured one, plus one per pod
 * (an unconfigured application exists only through its pods).
 */
static int
cb_capacity_pods(void)
{
	return 2 * MaxConnections + 16;
}

static int
cb_capacity_apps(void)
{
	return CB_MAX_CONFIGURED_APPS + cb_capacity_pods() + 16;
}

static Size
cb_shmem_size(void)
{
	int			napps = cb_capacity_apps();
	int			npods = cb_capacity_pods();
	Size		size = MAXALIGN(sizeof(CbShared));

	size = add_size(size, MAXALIGN(mul_size(napps, sizeof(CbApp))));
	size = add_size(size, MAXALIGN(mul_size(npods, sizeof(CbPod))));
	size = add_size(size, MAXALIGN(mul_size(MaxBackends, sizeof(CbBackend))));
	size = add_size(size, MAXALIGN(mul_size(napps, sizeof(uint32))));
	size = add_size(size, MAXALIGN(mul_size(npods, sizeof(uint32))));
	size = add_size(size, MAXALIGN(mul_size(napps, sizeof(CbAllocApp))));
	size = add_size(size, MAXALIGN(mul_size(npods, sizeof(CbAllocPod))));
	size = add_size(size, MAXALIGN(mul_size(napps, sizeof(int32))));
	size = add_size(size, MAXALIGN(mul_size(npods, sizeof(int32))));
	size = add_size(size, MAXALIGN(cb_allocation_work_size(napps, npods)));
	return size;
}

/*
 * Ask for our shared memory and lock.  Runs in the postmaster once
 * MaxBackends is known.
 */
static void
cb_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(cb_shmem_size());
	RequestNamedLWLockTranche("connbudget", 1);
}

void
cb_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cb_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cb_shmem_startup;
}

/*
 * Create or attach to the shared state.  Runs in the postmaster at startup
 * and after every crash restart, so all counts start from zero: backends
 * that were counted are gone.
 */
void
cb_shmem_startup(void)
{
	bool		found;
	char	   *cursor;
	int			napps = cb_capacity_apps();
	int			npods = cb_capacity_pods();

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cb_shared = ShmemInitStruct("connbudget", cb_shmem_size(), &found);
	cursor = (char *) cb_shared + MAXALIGN(sizeof(CbShared));
	cb_apps = (CbApp *) cursor;
	cursor += MAXALIGN(mul_size(napps, sizeof(CbApp)));
	cb_pods = (CbPod *) cursor;
	cursor += MAXALIGN(mul_size(npods, sizeof(CbPod)));
	cb_backends = (CbBackend *) cursor;
	cursor += MAXALIGN(mul_size(MaxBackends, sizeof(CbBackend)));
	cb_app_keys = (uint32 *) cursor;
	cursor += MAXALIGN(mul_size(napps, sizeof(uint32)));
	cb_pod_keys = (uint32 *) cursor;
	cursor += MAXALIGN(mul_size(npods, sizeof(uint32)));
	cb_work_apps = (CbAllocApp *) cursor;
	cursor += MAXALIGN(mul_size(napps, sizeof(CbAllocApp)));
	cb_work_pods = (CbAllocPod *) cursor;
	cursor += MAXALIGN(mul_size(npods, sizeof(CbAllocPod)));
	cb_work_app_slot = (int32 *) cursor;
	cursor += MAXALIGN(mul_size(napps, sizeof(int32)));
	cb_work_pod_slot = (int32 *) cursor;
	cursor += MAXALIGN(mul_size(npods, sizeof(int32)));
	cb_work = cursor;

	if (!found)
	{
		memset(cb_shared, 0, cb_shmem_size());
		cb_shared->lock = &(GetNamedLWLockTranche("connbudget"))->lock;
		ConditionVariableInit(&cb_shared->limits_cv);
		pg_atomic_init_u32(&cb_shared->limits_state, CB_LIMITS_LOADING);
		pg_atomic_init_u32(&cb_shared->reload_requested, 0);
		cb_shared->extension_reserved = cb_reserved_connections;
		cb_shared->pod_ttl_ms = cb_pod_ttl_ms;
		cb_shared->refresh_ms = cb_refresh_interval_ms;
		cb_shared->napps = napps;
		cb_shared->npods = npods;
		cb_shared->nbackends = MaxBackends;
		for (int i = 0; i < npods; i++)
		{
			pg_atomic_init_u64(&cb_pods[i].last_seen, 0);
			pg_atomic_init_u64(&cb_pods[i].heartbeat, 0);
		}
		for (int i = 0; i < MaxBackends; i++)
			cb_backends[i].kind = CB_BACKEND_FREE;
	}
	LWLockRelease(AddinShmemInitLock);
}

bool
cb_shmem_attached(void)
{
	return cb_shared != NULL;
}

/*
 * Raise the error every SQL entry point gives when the library was not
 * preloaded (its shared memory does not exist then).
 */
void
cb_require_preload(void)
{
	if (cb_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("connbudget must be loaded via shared_preload_libraries"),
				 errhint("Add connbudget to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* ---------------------------------------------------------------------
 * Budget
 * ---------------------------------------------------------------------
 */

/* connbudget.reserved_connections as all backends use it (see worker.c). */
int32
cb_extension_reserved(void)
{
	return cb_shared ? cb_shared->extension_reserved : cb_reserved_connections;
}

/*
 * The budget as configured: max_connections minus every reserve.
 */
int32
cb_configured_budget(void)
{
	int32		reserve = CB_SUPERUSER_RESERVED() + CB_SERVER_RESERVED();

	return Max(0, MaxConnections - reserve - cb_extension_reserved());
}

/*
 * The budget that is shared right now: the configured budget minus what
 * "other" connections use beyond the reserve they may use (reserved
 * connections of the server and of connbudget; superuser_reserved_connections
 * stays for superusers).  Pools shrink rather than connects failing.
 */
static int32
cb_effective_budget_locked(void)
{
	int32		reserve = CB_SERVER_RESERVED() + cb_shared->extension_reserved;
	int32		overflow = Max(0, cb_shared->other - reserve);

	return Max(0, cb_configured_budget() - overflow);
}

/* ---------------------------------------------------------------------
 * Applications and pods
 * ---------------------------------------------------------------------
 */

/* The lookup key of a name: never 0, which marks a free entry. */
static uint32
cb_hash_name(const char *name)
{
	return hash_bytes((const unsigned char *) name, (int) strlen(name)) | 1;
}

static int
cb_find_app_locked(const char *name, uint32 hash)
{
	for (int i = 0; i < cb_shared->napps; i++)
	{
		if (cb_app_keys[i] == hash && strcmp(cb_apps[i].name, name) == 0)
			return i;
	}
	return -1;
}

/*
 * Add an application entry.  When the table is full, the entry of an
 * application that is neither configured nor in use is recycled (it only
 * held a refusal counter).  Returns -1 if there is no room, which the
 * capacities make impossible in practice.
 */
static int
cb_add_app_locked(const char *name, uint32 hash)
{
	int			slot = -1;

	for (int i = 0; i < cb_shared->napps && slot < 0; i++)
		if (cb_app_keys[i] == 0)
			slot = i;
	for (int i = 0; i < cb_shared->napps && slot < 0; i++)
	{
		CbApp	   *app = &cb_apps[i];

		if (!app->configured && app->connections == 0 && app->npods == 0)
			slot = i;
	}
	if (slot < 0)
		return -1;

	memset(&cb_apps[slot], 0, sizeof(CbApp));
	cb_apps[slot].in_use = true;
	cb_apps[slot].max_connections = CB_UNBOUNDED;
	cb_apps[slot].weight = 1;
	strlcpy(cb_apps[slot].name, name, CB_NAME_LEN);
	cb_app_keys[slot] = hash;
	return slot;
}

static int
cb_find_pod_locked(int app, const char *id, uint32 hash)
{
	for (int i = 0; i < cb_shared->npods; i++)
	{
		if (cb_pod_keys[i] == hash && cb_pods[i].app == app &&
			strcmp(cb_pods[i].id, id) == 0)
			return i;
	}
	return -1;
}

static void
cb_free_pod_locked(int slot)
{
	CbPod	   *pod = &cb_pods[slot];

	Assert(pod->in_use && pod->connections == 0);
	cb_apps[pod->app].npods--;
	pod->in_use = false;
	cb_pod_keys[slot] = 0;
	cb_shared->alloc_valid = false;
}

/* When a pod without connections stops being live (0 if it already has). */
static TimestampTz
cb_pod_lease_end(CbPod *pod)
{
	uint64		heartbeat = pg_atomic_read_u64(&pod->heartbeat);

	if (heartbeat == 0)
		return 0;
	return (TimestampTz) heartbeat + (TimestampTz) cb_shared->pod_ttl_ms * 1000;
}

/*
 * Add a pod entry.  When the table is full, the lease-only pod whose lease
 * ends first is dropped to make room.
 */
static int
cb_add_pod_locked(int app, const char *id, uint32 hash, TimestampTz now)
{
	int			slot = -1;
	CbPod	   *pod;

	for (int i = 0; i < cb_shared->npods && slot < 0; i++)
		if (cb_pod_keys[i] == 0)
			slot = i;
	if (slot < 0)
	{
		TimestampTz earliest = DT_NOEND;

		for (int i = 0; i < cb_shared->npods; i++)
		{
			pod = &cb_pods[i];
			if (pod->connections == 0 && cb_pod_lease_end(pod) < earliest)
			{
				earliest = cb_pod_lease_end(pod);
				slot = i;
			}
		}
		if (slot < 0)
			return -1;
		cb_free_pod_locked(slot);
	}

	pod = &cb_pods[slot];
	pod->in_use = true;
	pod->app = app;
	pod->connections = 0;
	pod->demand = CB_UNBOUNDED;
	pod->first_seen = now;
	pg_atomic_write_u64(&pod->last_seen, (uint64) now);
	pg_atomic_write_u64(&pod->heartbeat, 0);
	pod->share = 0;
	pod->min_share = 0;
	strlcpy(pod->id, id, CB_NAME_LEN);
	pod->client_addr[0] = '\0';
	cb_pod_keys[slot] = hash;
	cb_apps[app].npods++;
	cb_shared->alloc_valid = false;
	return slot;
}

/* ---------------------------------------------------------------------
 * Counting backends
 * ---------------------------------------------------------------------
 */

/*
 * Classify a backend from its identity and count it: governed when its
 * application is configured or it named its pod, "other" otherwise.
 */
static void
cb_count_backend_locked(CbBackend *backend, TimestampTz now)
{
	const CbIdentity *id = &backend->identity;
	uint32		app_hash = cb_hash_name(id->application_name);
	uint32		pod_hash;
	int			app;
	int			pod;

	backend->app = -1;
	backend->pod = -1;
	backend->kind = CB_BACKEND_OTHER;

	app = cb_find_app_locked(id->application_name, app_hash);
	if (!id->explicit_pod && (app < 0 || !cb_apps[app].configured))
	{
		cb_shared->other++;
		return;
	}
	if (app < 0)
		app = cb_add_app_locked(id->application_name, app_hash);
	pod_hash = cb_hash_name(id->pod);
	pod = app < 0 ? -1 : cb_find_pod_locked(app, id->pod, pod_hash);
	if (app >= 0 && pod < 0)
		pod = cb_add_pod_locked(app, id->pod, pod_hash, now);
	if (pod < 0)
	{
		/* no room at all: impossible with the capacities we reserve */
		cb_shared->other++;
		return;
	}

	backend->kind = CB_BACKEND_GOVERNED;
	backend->app = app;
	backend->pod = pod;
	if (cb_apps[app].connections >= cb_apps[app].min_connections)
		cb_shared->committed++;
	cb_apps[app].connections++;
	cb_pods[pod].connections++;
	cb_shared->governed++;
	strlcpy(cb_pods[pod].client_addr, id->client_addr, CB_ADDR_LEN);
	pg_atomic_write_u64(&cb_pods[pod].last_seen, (uint64) now);
}

static void
cb_uncount_backend_locked(CbBackend *backend)
{
	if (backend->kind == CB_BACKEND_OTHER)
		cb_shared->other--;
	else if (backend->kind == CB_BACKEND_GOVERNED)
	{
		CbApp	   *app = &cb_apps[backend->app];
		CbPod	   *pod = &cb_pods[backend->pod];

		app->connections--;
		if (app->connections >= app->min_connections)
			cb_shared->committed--;
		pod->connections--;
		cb_shared->governed--;
		/* a pod without connections may end now or at its lease's end */
		if (pod->connections == 0)
			cb_shared->alloc_valid = false;
	}
	backend->kind = CB_BACKEND_FREE;
	backend->app = -1;
	backend->pod = -1;
}

/*
 * Re-sort every backend by its identity.  Needed when limits change:
 * configuring an application turns its existing connections into governed
 * ones, and removing it turns them back into "other".  Each backend is
 * uncounted and counted again in turn, so that the pods of backends not
 * yet re-sorted keep their connections and are never evicted meanwhile.
 */
static void
cb_rebuild_counts_locked(TimestampTz now)
{
	for (int i = 0; i < cb_shared->nbackends; i++)
	{
		CbBackend  *backend = &cb_backends[i];
		CbBackendKind kind = backend->kind;

		if (kind == CB_BACKEND_FREE)
			continue;
		cb_uncount_backend_locked(backend);
		cb_count_backend_locked(backend, now);
	}

	/* minimums changed too: recompute what is committed from scratch */
	cb_shared->committed = 0;
	for (int i = 0; i < cb_shared->napps; i++)
		if (cb_apps[i].in_use)
			cb_shared->committed += Max(cb_apps[i].connections,
										cb_apps[i].min_connections);
	cb_shared->alloc_valid = false;
}

/* ---------------------------------------------------------------------
 * Allocation
 * ---------------------------------------------------------------------
 */

static bool
cb_is_fresh_locked(TimestampTz now)
{
	return cb_shared->alloc_valid && now < cb_shared->alloc_expiry &&
		cb_shared->budget == cb_effective_budget_locked();
}

/*
 * Drop pods whose lease ended, then share the budget among what is live.
 */
static void
cb_recompute_locked(TimestampTz now)
{
	TimestampTz next_expiry = DT_NOEND;
	int			na = 0;
	int			np = 0;
	int32		budget = cb_effective_budget_locked();

	for (int i = 0; i < cb_shared->npods; i++)
	{
		CbPod	   *pod = &cb_pods[i];
		TimestampTz lease_end;

		if (!pod->in_use || pod->connections > 0)
			continue;
		lease_end = cb_pod_lease_end(pod);
		if (lease_end <= now)
			cb_free_pod_locked(i);
		else if (lease_end < next_expiry)
			next_expiry = lease_end;
	}

	for (int i = 0; i < cb_shared->napps; i++)
	{
		CbApp	   *app = &cb_apps[i];

		app->alloc_index = -1;
		app->allocation = 0;
		app->guaranteed = 0;
		app->live_pods = 0;
		app->demand = 0;
		if (!app->in_use || (!app->configured && app->npods == 0))
			continue;
		cb_work_apps[na].name = app->name;
		cb_work_apps[na].min_connections = app->min_connections;
		cb_work_apps[na].max_connections = app->max_connections;
		cb_work_apps[na].weight = app->weight;
		cb_work_app_slot[na] = i;
		app->alloc_index = na++;
	}
	for (int i = 0; i < cb_shared->npods; i++)
	{
		CbPod	   *pod = &cb_pods[i];

		if (!pod->in_use)
			continue;
		Assert(cb_apps[pod->app].alloc_index >= 0);
		cb_work_pods[np].app = cb_apps[pod->app].alloc_index;
		cb_work_pods[np].id = pod->id;
		cb_work_pods[np].demand = pod->demand;
		cb_work_pod_slot[np] = i;
		np++;
	}

	cb_allocate(budget, cb_work_apps, na, cb_work_pods, np, cb_work);

	for (int k = 0; k < na; k++)
	{
		CbApp	   *app = &cb_apps[cb_work_app_slot[k]];

		app->allocation = cb_work_apps[k].allocation;
		app->guaranteed = cb_work_apps[k].guaranteed;
		app->live_pods = cb_work_apps[k].live_pods;
		app->demand = cb_work_apps[k].demand;
	}
	for (int k = 0; k < np; k++)
	{
		CbPod	   *pod = &cb_pods[cb_work_pod_slot[k]];

		pod->share = cb_work_pods[k].share;
		pod->min_share = cb_work_pods[k].min_share;
	}

	cb_shared->alloc_valid = true;
	cb_shared->alloc_expiry = next_expiry;
	cb_shared->budget = budget;
	cb_shared->live_pods = np;
}

/* Take the lock with the allocation up to date; shared when possible. */
static void
cb_lock_fresh(TimestampTz now)
{
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	if (cb_is_fresh_locked(now))
		return;
	LWLockRelease(cb_shared->lock);
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (!cb_is_fresh_locked(now))
		cb_recompute_locked(now);
}

/* ---------------------------------------------------------------------
 * Connect and exit
 * ---------------------------------------------------------------------
 */

/*
 * Count this backend first, then check it against the limits, all under
 * the exclusive lock; see the locking rules at the top.  The caller decides
 * what to do with a verdict other than CB_ADMIT (superusers are never
 * refused) and reports back with cb_backend_refused().
 */
void
cb_backend_attach(const CbIdentity *identity, bool enforce,
				  CbAdmission *admission)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];
	TimestampTz now = GetCurrentTimestamp();

	memset(admission, 0, sizeof(CbAdmission));
	admission->verdict = CB_ADMIT;

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);

	/* a slot is emptied at exit; be safe against a reused one anyway */
	if (me->kind != CB_BACKEND_FREE)
		cb_uncount_backend_locked(me);

	me->identity = *identity;
	cb_count_backend_locked(me, now);

	if (me->kind == CB_BACKEND_GOVERNED)
	{
		CbApp	   *app = &cb_apps[me->app];
		int32		budget = cb_effective_budget_locked();

		admission->connections = app->connections;
		admission->cap = app->max_connections;
		admission->governed = cb_shared->governed;
		admission->budget = budget;
		admission->committed = cb_shared->committed;

		if (!enforce)
			admission->verdict = CB_ADMIT;
		else if (app->max_connections >= 0 &&
				 app->connections > app->max_connections)
			admission->verdict = CB_OVER_CAP;
		else if (cb_shared->governed > budget)
			admission->verdict = CB_OVER_BUDGET;
		else if (app->connections > app->min_connections &&
				 cb_shared->committed > budget)
			admission->verdict = CB_OVER_MINIMUMS;
	}

	LWLockRelease(cb_shared->lock);
}

/*
 * Record a refusal against this backend's application.  Unless the
 * connection is kept (enforce = warn), it is also uncounted at once, so
 * that the slot is free before the FATAL error reaches the client.
 *
 * A refused connection still renews its pod's lease.  Otherwise a pod
 * could never join a budget that the pods already there fill: it needs a
 * connection to be counted, and it cannot connect until the others shrink,
 * which they only do once it is counted.  With the lease, the pod is live
 * for pod_ttl, the others' shares shrink at their next refresh, and the
 * pod's retry finds room.
 */
void
cb_backend_refused(bool keep)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (me->kind == CB_BACKEND_GOVERNED)
	{
		CbPod	   *pod = &cb_pods[me->pod];

		cb_apps[me->app].refused++;
		if (!keep)
		{
			pg_atomic_write_u64(&pod->heartbeat, (uint64) GetCurrentTimestamp());
			cb_uncount_backend_locked(me);
			cb_shared->alloc_valid = false;
		}
	}
	LWLockRelease(cb_shared->lock);
}

/*
 * Exit callback: release this backend's slot.  Runs on every exit path of
 * a backend that was counted (normal exit, FATAL during startup,
 * pg_terminate_backend); a crash reinitialises shared memory instead.
 */
void
cb_backend_detach(void)
{
	CbBackend  *me;

	if (cb_shared == NULL)
		return;
	me = &cb_backends[CB_MY_BACKEND_INDEX()];
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	cb_uncount_backend_locked(me);
	LWLockRelease(cb_shared->lock);
}

/* ---------------------------------------------------------------------
 * pool_share()
 * ---------------------------------------------------------------------
 */

static void
cb_fill_share_locked(const CbBackend *me, CbShare *share)
{
	CbPod	   *pod = &cb_pods[me->pod];
	CbApp	   *app = &cb_apps[me->app];

	share->max_size = pod->share;
	share->min_size = pod->min_share;
	share->allocation = app->allocation;
	share->pods = app->live_pods;
	share->budget = cb_shared->budget;
	share->refresh_ms = cb_shared->refresh_ms;
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

/*
 * Renew this backend's pod lease, record its demand, and return its share.
 * The common case (demand unchanged, nothing else changed) takes the lock
 * in shared mode only.
 */
void
cb_pool_share(int32 demand, CbShare *share)
{
	CbBackend  *me = &cb_backends[CB_MY_BACKEND_INDEX()];
	TimestampTz now = GetCurrentTimestamp();
	CbPod	   *pod;

	LWLockAcquire(cb_shared->lock, LW_SHARED);
	if (me->kind != CB_BACKEND_GOVERNED)
	{
		LWLockRelease(cb_shared->lock);
		cb_not_governed();
	}
	pod = &cb_pods[me->pod];
	pg_atomic_write_u64(&pod->heartbeat, (uint64) now);
	pg_atomic_write_u64(&pod->last_seen, (uint64) now);
	if (pod->demand == demand && cb_is_fresh_locked(now))
	{
		cb_fill_share_locked(me, share);
		LWLockRelease(cb_shared->lock);
		return;
	}
	LWLockRelease(cb_shared->lock);

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	/* limits may have changed in between and made this backend "other" */
	if (me->kind != CB_BACKEND_GOVERNED)
	{
		LWLockRelease(cb_shared->lock);
		cb_not_governed();
	}
	pod = &cb_pods[me->pod];
	pg_atomic_write_u64(&pod->heartbeat, (uint64) now);
	if (pod->demand != demand)
	{
		pod->demand = demand;
		cb_shared->alloc_valid = false;
	}
	if (!cb_is_fresh_locked(now))
		cb_recompute_locked(now);
	cb_fill_share_locked(me, share);
	LWLockRelease(cb_shared->lock);
}

/* ---------------------------------------------------------------------
 * Snapshots for the views
 * ---------------------------------------------------------------------
 */

static int32
cb_count_visible_apps_locked(void)
{
	int32		n = 0;

	for (int i = 0; i < cb_shared->napps; i++)
	{
		CbApp	   *app = &cb_apps[i];

		if (app->in_use && (app->configured || app->connections > 0 ||
							app->npods > 0 || app->refused > 0))
			n++;
	}
	return n;
}

void
cb_snapshot_budget(CbBudgetRow *row)
{
	cb_lock_fresh(GetCurrentTimestamp());
	row->max_connections = MaxConnections;
	row->superuser_reserved = CB_SUPERUSER_RESERVED();
	row->reserved_connections = CB_SERVER_RESERVED();
	row->extension_reserved = cb_shared->extension_reserved;
	row->budget = cb_shared->budget;
	row->governed = cb_shared->governed;
	row->other = cb_shared->other;
	row->free = Max(0, cb_shared->budget - cb_shared->governed);
	row->applications = cb_count_visible_apps_locked();
	row->pods = cb_shared->live_pods;
	LWLockRelease(cb_shared->lock);
}

int
cb_snapshot_applications(CbApplicationRow **rows_out)
{
	CbApplicationRow *rows = palloc(sizeof(CbApplicationRow) * cb_shared->napps);
	int			n = 0;

	cb_lock_fresh(GetCurrentTimestamp());
	for (int i = 0; i < cb_shared->napps; i++)
	{
		CbApp	   *app = &cb_apps[i];
		CbApplicationRow *row;

		if (!app->in_use || !(app->configured || app->connections > 0 ||
							  app->npods > 0 || app->refused > 0))
			continue;
		row = &rows[n++];
		memcpy(row->application_name, app->name, CB_NAME_LEN);
		row->configured = app->configured;
		row->min_connections = app->min_connections;
		row->max_connections = app->max_connections;
		row->weight = app->weight;
		row->allocation = app->allocation;
		row->connections = app->connections;
		row->pods = app->live_pods;
		row->demand = app->live_pods > 0 ? app->demand : 0;
		row->refused = (int64) app->refused;
	}
	LWLockRelease(cb_shared->lock);
	*rows_out = rows;
	return n;
}

int
cb_snapshot_pods(CbPodRow **rows_out)
{
	CbPodRow   *rows = palloc(sizeof(CbPodRow) * cb_shared->npods);
	int			n = 0;

	cb_lock_fresh(GetCurrentTimestamp());
	for (int i = 0; i < cb_shared->npods; i++)
	{
		CbPod	   *pod = &cb_pods[i];
		CbPodRow   *row;

		if (!pod->in_use)
			continue;
		row = &rows[n++];
		memcpy(row->application_name, cb_apps[pod->app].name, CB_NAME_LEN);
		memcpy(row->pod, pod->id, CB_NAME_LEN);
		row->connections = pod->connections;
		row->share = pod->share;
		row->demand = pod->demand;
		memcpy(row->client_addr, pod->client_addr, CB_ADDR_LEN);
		row->first_seen = pod->first_seen;
		row->last_seen = (TimestampTz) pg_atomic_read_u64(&pod->last_seen);
		row->lease_expires = cb_pod_lease_end(pod);
	}
	LWLockRelease(cb_shared->lock);
	*rows_out = rows;
	return n;
}

/* ---------------------------------------------------------------------
 * Limits and settings
 * ---------------------------------------------------------------------
 */

CbLimitsState
cb_limits_state(void)
{
	return (CbLimitsState) pg_atomic_read_u32(&cb_shared->limits_state);
}

void
cb_set_limits_state(CbLimitsState state)
{
	pg_atomic_write_u32(&cb_shared->limits_state, (uint32) state);
	ConditionVariableBroadcast(&cb_shared->limits_cv);
}

/*
 * Wait until the worker has loaded limits (or given up).  Returns false on
 * timeout.
 */
bool
cb_wait_for_limits(long timeout_ms)
{
	TimestampTz deadline;

	if (cb_limits_state() != CB_LIMITS_LOADING)
		return true;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	ConditionVariablePrepareToSleep(&cb_shared->limits_cv);
	while (cb_limits_state() == CB_LIMITS_LOADING)
	{
		long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																 deadline);

		if (remaining <= 0 ||
			ConditionVariableTimedSleep(&cb_shared->limits_cv, remaining,
										PG_WAIT_EXTENSION))
			break;
	}
	ConditionVariableCancelSleep();
	if (cb_limits_state() != CB_LIMITS_LOADING)
		return true;

	/* the worker never came: later connections should not wait too */
	{
		uint32		expected = CB_LIMITS_LOADING;

		pg_atomic_compare_exchange_u32(&cb_shared->limits_state, &expected,
									   CB_LIMITS_FAILED);
	}
	return false;
}

static bool
cb_limits_equal_locked(const CbLimit *limits, int nlimits)
{
	int			configured = 0;

	for (int i = 0; i < cb_shared->napps; i++)
		if (cb_apps[i].in_use && cb_apps[i].configured)
			configured++;
	if (configured != nlimits)
		return false;
	for (int k = 0; k < nlimits; k++)
	{
		const CbLimit *limit = &limits[k];
		int			i = cb_find_app_locked(limit->application_name,
										   cb_hash_name(limit->application_name));

		if (i < 0 || !cb_apps[i].configured ||
			cb_apps[i].min_connections != limit->min_connections ||
			cb_apps[i].max_connections != limit->max_connections ||
			cb_apps[i].weight != limit->weight)
			return false;
	}
	return true;
}

/*
 * Make these rows the limits in force, recount every backend against them,
 * and mark limits as loaded.  The caller has validated them
 * (cb_check_limits), so they fit.
 */
void
cb_publish_limits(const CbLimit *limits, int nlimits)
{
	TimestampTz now = GetCurrentTimestamp();
	int			unplaced = 0;

	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (!cb_limits_equal_locked(limits, nlimits))
	{
		/*
		 * Place every row first, while the applications configured so far
		 * still count as configured and so cannot be recycled for a new
		 * name; then unconfigure those that lost their row.
		 */
		for (int i = 0; i < cb_shared->napps; i++)
			cb_apps[i].listed = false;
		for (int k = 0; k < nlimits; k++)
		{
			const CbLimit *limit = &limits[k];
			uint32		hash = cb_hash_name(limit->application_name);
			int			i = cb_find_app_locked(limit->application_name, hash);

			if (i < 0)
				i = cb_add_app_locked(limit->application_name, hash);
			if (i < 0)
			{
				unplaced++;
				continue;
			}
			cb_apps[i].configured = true;
			cb_apps[i].listed = true;
			cb_apps[i].min_connections = limit->min_connections;
			cb_apps[i].max_connections = limit->max_connections;
			cb_apps[i].weight = limit->weight;
		}
		for (int i = 0; i < cb_shared->napps; i++)
		{
			CbApp	   *app = &cb_apps[i];

			if (app->in_use && app->configured && !app->listed)
			{
				app->configured = false;
				app->min_connections = 0;
				app->max_connections = CB_UNBOUNDED;
				app->weight = 1;
			}
		}
		cb_rebuild_counts_locked(now);
	}
	LWLockRelease(cb_shared->lock);
	if (unplaced > 0)
		ereport(WARNING,
				(errmsg("connbudget: %d application limits could not be put in force: no room in shared memory",
						unplaced)));
	cb_set_limits_state(CB_LIMITS_LOADED);
}

/*
 * Publish this process's view of the sighup settings.  The worker calls it
 * at startup and after each reload of the configuration file, so that
 * every backend computes shares from the same values.
 */
void
cb_publish_settings(void)
{
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	if (cb_shared->extension_reserved != cb_reserved_connections ||
		cb_shared->pod_ttl_ms != cb_pod_ttl_ms ||
		cb_shared->refresh_ms != cb_refresh_interval_ms)
	{
		cb_shared->extension_reserved = cb_reserved_connections;
		cb_shared->pod_ttl_ms = cb_pod_ttl_ms;
		cb_shared->refresh_ms = cb_refresh_interval_ms;
		cb_shared->alloc_valid = false;
	}
	LWLockRelease(cb_shared->lock);
}

void
cb_set_worker_latch(Latch *latch)
{
	LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
	cb_shared->worker_latch = latch;
	LWLockRelease(cb_shared->lock);
}

/* Ask the worker to re-read the limits table soon. */
void
cb_request_reload(void)
{
	pg_atomic_write_u32(&cb_shared->reload_requested, 1);
	LWLockAcquire(cb_shared->lock, LW_SHARED);
	if (cb_shared->worker_latch)
		SetLatch(cb_shared->worker_latch);
	LWLockRelease(cb_shared->lock);
}

bool
cb_take_reload_request(void)
{
	return pg_atomic_exchange_u32(&cb_shared->reload_requested, 0) != 0;
}
