/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared-memory layout of connbudget, written once: sizes, the
 *	  order of the arrays, and the hooks that request and attach it.
 *
 * Everything is sized at server start from settings that need a restart
 * (max_connections and friends, connbudget.max_pods), so nothing grows
 * later.  Per pod, the registry, its lookup table and the two published
 * snapshots take about 700 bytes (docs/fleets.md).
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "compat.h"
#include "state.h"

CbShared   *cb_shared = NULL;
CbApp	   *cb_apps;
CbPod	   *cb_pods;
CbSession  *cb_sessions;
CbBackend  *cb_backends;
CbLookup   *cb_app_lookup;
CbLookup   *cb_pod_lookup;
CbLookup   *cb_session_lookup;
CbLookup   *cb_role_lookup;
CbRole	   *cb_roles;
CbRoleList *cb_role_lists;
int32	   *cb_app_free_stack;
int32	   *cb_pod_free_stack;
int32	   *cb_session_free_stack;
int32	   *cb_role_free_stack;
int32	   *cb_role_list_free_stack;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Applications: every configured one, plus one per pod (an unconfigured
 * application exists only through its pods), so that a new pod always
 * finds room for its application while the pod table has room; plus room
 * for the refusal counters of CB_COUNTER_ONLY_APPS applications that hold
 * nothing (an application whose limits row was deleted keeps its counter
 * until more than that many such applications need room).
 */
static int
cb_app_capacity(void)
{
	return CB_MAX_CONFIGURED_APPS + cb_max_pods + CB_COUNTER_ONLY_APPS;
}

static int
cb_session_capacity(void)
{
	return CB_SESSIONS_PER_POD * cb_max_pods;
}

/*
 * Walk the layout: with base == NULL only add up the size; otherwise also
 * point the globals at their arrays.  One function for both, so that the
 * size and the layout cannot disagree.
 */
static Size
cb_layout(char *base)
{
	int			napps = cb_app_capacity();
	int			npods = cb_max_pods;
	int			nsessions = cb_session_capacity();
	Size		offset = 0;

#define CB_PLACE(ptr, type, bytes) \
	do { \
		if (base) (ptr) = (type) (base + offset); \
		offset = add_size(offset, MAXALIGN(bytes)); \
	} while (0)

	CB_PLACE(cb_shared, CbShared *, sizeof(CbShared));
	CB_PLACE(cb_apps, CbApp *, mul_size(napps, sizeof(CbApp)));
	CB_PLACE(cb_pods, CbPod *, mul_size(npods, sizeof(CbPod)));
	CB_PLACE(cb_sessions, CbSession *, mul_size(nsessions, sizeof(CbSession)));
	CB_PLACE(cb_backends, CbBackend *, mul_size(MaxBackends, sizeof(CbBackend)));
	CB_PLACE(cb_roles, CbRole *, mul_size(npods, sizeof(CbRole)));
	CB_PLACE(cb_role_lists, CbRoleList *, mul_size(CB_MAX_CONFIGURED_APPS, sizeof(CbRoleList)));
	CB_PLACE(cb_role_lookup, CbLookup *, cb_lookup_size(npods));
	CB_PLACE(cb_role_free_stack, int32 *, mul_size(npods, sizeof(int32)));
	CB_PLACE(cb_role_list_free_stack, int32 *, mul_size(CB_MAX_CONFIGURED_APPS, sizeof(int32)));
	CB_PLACE(cb_app_lookup, CbLookup *, cb_lookup_size(napps));
	CB_PLACE(cb_pod_lookup, CbLookup *, cb_lookup_size(npods));
	CB_PLACE(cb_session_lookup, CbLookup *, cb_lookup_size(nsessions));
	CB_PLACE(cb_app_free_stack, int32 *, mul_size(napps, sizeof(int32)));
	CB_PLACE(cb_pod_free_stack, int32 *, mul_size(npods, sizeof(int32)));
	CB_PLACE(cb_session_free_stack, int32 *, mul_size(nsessions, sizeof(int32)));
	for (int i = 0; i < 2; i++)
	{
		CbPublication *pub = base ? &cb_shared->pubs[i] : NULL;
		CbPubApp   *apps = NULL;
		CbPubPod   *pods = NULL;
		CbPubSession *sessions = NULL;

		CB_PLACE(apps, CbPubApp *, mul_size(napps, sizeof(CbPubApp)));
		CB_PLACE(pods, CbPubPod *, mul_size(npods, sizeof(CbPubPod)));
		CB_PLACE(sessions, CbPubSession *, mul_size(nsessions, sizeof(CbPubSession)));
		if (pub)
		{
			pub->apps = apps;
			pub->pods = pods;
			pub->sessions = sessions;
		}
	}
#undef CB_PLACE
	return offset;
}

Size
cb_shmem_size(void)
{
	return cb_layout(NULL);
}

/*
 * Ask for our shared memory and locks.  Runs in the postmaster once
 * MaxBackends is known.
 */
static void
cb_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(cb_shmem_size());
	RequestNamedLWLockTranche("connbudget", 2);
}

/* Every slot free, every stack full (slot 0 on top). */
static void
cb_init_state(void)
{
	int			napps = cb_app_capacity();
	int			npods = cb_max_pods;
	int			nsessions = cb_session_capacity();
	CbPublication pubs[2];
	LWLockPadded *locks = GetNamedLWLockTranche("connbudget");

	/* the publications' array pointers were set by cb_layout */
	memcpy(pubs, cb_shared->pubs, sizeof(pubs));
	memset(cb_shared, 0, sizeof(CbShared));
	memcpy(cb_shared->pubs, pubs, sizeof(pubs));

	cb_shared->lock = &locks[0].lock;
	cb_shared->publish_lock = &locks[1].lock;
	ConditionVariableInit(&cb_shared->limits_cv);
	ConditionVariableInit(&cb_shared->published_cv);
	pg_atomic_init_u32(&cb_shared->limits_state, CB_LIMITS_LOADING);
	pg_atomic_init_u32(&cb_shared->reload_requested, 0);
	pg_atomic_init_u64(&cb_shared->input_gen, 1);
	pg_atomic_init_u64(&cb_shared->membership_gen, 1);
	pg_atomic_init_u64(&cb_shared->limits_gen, 2);
	pg_atomic_init_u64(&cb_shared->limits_input_gen, 0);
	pg_atomic_init_u32(&cb_shared->current_pub, 0);
	pg_atomic_init_u32(&cb_shared->allocator_pid, 0);
	pg_atomic_init_u64(&cb_shared->allocator_latch, 0);
	pg_atomic_init_u64(&cb_shared->loader_latch, 0);
	cb_store_settings();
	cb_shared->next_incarnation = 1;
	cb_shared->app_capacity = napps;
	cb_shared->pod_capacity = npods;
	cb_shared->session_capacity = nsessions;
	cb_shared->role_capacity = npods;
	cb_shared->nbackends = MaxBackends;

	memset(cb_apps, 0, mul_size(napps, sizeof(CbApp)));
	memset(cb_pods, 0, mul_size(npods, sizeof(CbPod)));
	memset(cb_sessions, 0, mul_size(nsessions, sizeof(CbSession)));
	memset(cb_roles, 0, mul_size(npods, sizeof(CbRole)));
	memset(cb_role_lists, 0, mul_size(CB_MAX_CONFIGURED_APPS, sizeof(CbRoleList)));
	for (int i = 0; i < npods; i++)
		pg_atomic_init_u64(&cb_pods[i].last_seen, 0);
	for (int i = 0; i < nsessions; i++)
	{
		pg_atomic_init_u32(&cb_sessions[i].demand, (uint32) CB_NO_REPORT);
		pg_atomic_init_u64(&cb_sessions[i].heartbeat, 0);
	}
	for (int i = 0; i < MaxBackends; i++)
	{
		memset(&cb_backends[i], 0, sizeof(CbBackend));
		cb_backends[i].kind = CB_BACKEND_FREE;
		cb_backends[i].app = cb_backends[i].pod = cb_backends[i].session = -1;
		pg_atomic_init_u64(&cb_backends[i].reporting, 0);
	}

	cb_lookup_init(cb_app_lookup, napps);
	cb_lookup_init(cb_pod_lookup, npods);
	cb_lookup_init(cb_session_lookup, nsessions);
	cb_lookup_init(cb_role_lookup, npods);
	for (int i = 0; i < npods; i++)
		cb_role_free_stack[i] = npods - 1 - i;
	for (int i = 0; i < CB_MAX_CONFIGURED_APPS; i++)
		cb_role_list_free_stack[i] = CB_MAX_CONFIGURED_APPS - 1 - i;
	cb_shared->roles_free = npods;
	cb_shared->role_lists_free = CB_MAX_CONFIGURED_APPS;
	for (int i = 0; i < napps; i++)
		cb_app_free_stack[i] = napps - 1 - i;
	for (int i = 0; i < npods; i++)
		cb_pod_free_stack[i] = npods - 1 - i;
	for (int i = 0; i < nsessions; i++)
		cb_session_free_stack[i] = nsessions - 1 - i;
	cb_shared->apps_free = napps;
	cb_shared->pods_free = npods;
	cb_shared->sessions_free = nsessions;

	for (int i = 0; i < 2; i++)
	{
		CbPublication *pub = &cb_shared->pubs[i];

		pg_atomic_init_u64(&pub->seq, 0);
		memset(pub->apps, 0, mul_size(napps, sizeof(CbPubApp)));
		memset(pub->pods, 0, mul_size(npods, sizeof(CbPubPod)));
		memset(pub->sessions, 0, mul_size(nsessions, sizeof(CbPubSession)));
	}
}

/*
 * Create or attach to the shared state.  Runs in the postmaster at startup
 * and after every crash restart, so all counts start from zero: backends
 * that were counted are gone.
 */
static void
cb_shmem_startup_hook(void)
{
	bool		found;
	char	   *base;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("connbudget", cb_shmem_size(), &found);
	cb_layout(base);
	if (!found)
		cb_init_state();
	LWLockRelease(AddinShmemInitLock);
}

void
cb_shmem_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cb_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cb_shmem_startup_hook;
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

/*
 * Store this process's view of the sighup settings in shared memory: at
 * startup (shmem.c) and, from the allocator, under the lock.
 */
void
cb_store_settings(void)
{
	cb_shared->extension_reserved = cb_reserved_connections;
	cb_shared->pod_ttl_ms = cb_pod_ttl_ms;
	cb_shared->refresh_ms = cb_refresh_interval_ms;
	cb_shared->unconfigured = cb_unconfigured_applications;
	cb_shared->unconfigured_max = cb_unconfigured_max_connections;
	cb_shared->max_pods_per_role = cb_max_pods_per_role;
}
