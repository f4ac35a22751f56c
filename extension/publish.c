/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  Putting limits and settings in force in shared memory: the rows of
 *	  connbudget.application_limits that connects are checked against, the
 *	  sighup settings every backend shares the budget with, and the state
 *	  of loading limits after a start.
 *
 * limits.c reads and validates the table; this file only makes a set of
 * rows the one in force.  See state.h for the locking rules.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/memutils.h"
#include "storage/condition_variable.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

/* ---------------------------------------------------------------------
 * Loading limits after a start
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
 * Wait until the loader has loaded limits (or given up).  Returns false on
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

	/* the loader never came: later connections should not wait too */
	{
		uint32		expected = CB_LIMITS_LOADING;

		pg_atomic_compare_exchange_u32(&cb_shared->limits_state, &expected,
									   CB_LIMITS_FAILED);
	}
	return false;
}

/* ---------------------------------------------------------------------
 * Limits in force
 * ---------------------------------------------------------------------
 */

/* Does the application slot hold these roles (nroles -1: any role)? */
static bool
cb_roles_equal_locked(const CbApp *app, const CbLimit *limit)
{
	const CbRoleList *list;

	if (app->role_list < 0 || limit->nroles < 0)
		return app->role_list < 0 && limit->nroles < 0;
	list = &cb_role_lists[app->role_list];
	if (list->nroles != limit->nroles)
		return false;
	for (int i = 0; i < limit->nroles; i++)
		if (strcmp(list->roles[i], limit->roles[i]) != 0)
			return false;
	return true;
}

/* Bind the application to these roles, or to none (any role). */
static bool
cb_set_roles_locked(CbApp *app, const CbLimit *limit)
{
	if (limit->nroles < 0)
	{
		if (app->role_list >= 0)
			cb_role_list_free_stack[cb_shared->role_lists_free++] = app->role_list;
		app->role_list = -1;
		return true;
	}
	if (app->role_list < 0)
	{
		if (cb_shared->role_lists_free == 0)
			return false;		/* more than CB_MAX_CONFIGURED_APPS: checked before */
		app->role_list = cb_role_list_free_stack[--cb_shared->role_lists_free];
	}
	cb_role_lists[app->role_list].nroles = limit->nroles;
	memcpy(cb_role_lists[app->role_list].roles, limit->roles,
		   sizeof(limit->roles[0]) * limit->nroles);
	return true;
}

static bool
cb_limits_equal_locked(const CbLimit *limits, int nlimits)
{
	if (cb_shared->configured_apps != nlimits)
		return false;
	for (int k = 0; k < nlimits; k++)
	{
		const CbLimit *limit = &limits[k];
		int			i = cb_find_app_locked(limit->application_name,
										   cb_name_hash(limit->application_name));

		if (i < 0 || !cb_apps[i].configured ||
			cb_apps[i].min_connections != limit->min_connections ||
			cb_apps[i].max_connections != limit->max_connections ||
			cb_apps[i].weight != limit->weight ||
			!cb_roles_equal_locked(&cb_apps[i], limit))
			return false;
	}
	return true;
}

/* Put these rows in shared memory; returns how many found no room. */
static int
cb_install_limits_locked(const CbLimit *limits, int nlimits)
{
	int			unplaced = 0;

	/*
	 * Place every row first, while the applications configured so far still
	 * count as configured; then unconfigure those that lost their row.  Only
	 * a slot that merely keeps a refusal counter may be evicted to make room.
	 */
	for (int i = 0; i < cb_shared->app_capacity; i++)
		cb_apps[i].listed = false;
	for (int k = 0; k < nlimits; k++)
	{
		const CbLimit *limit = &limits[k];
		uint32		hash = cb_name_hash(limit->application_name);
		int			i = cb_find_app_locked(limit->application_name, hash);

		if (i < 0)
			i = cb_add_app_locked(limit->application_name, hash, true);
		if (i < 0)
		{
			unplaced++;
			continue;
		}
		if (!cb_apps[i].configured)
			cb_apps[i].role_list = -1;
		cb_apps[i].configured = true;
		cb_apps[i].listed = true;
		cb_apps[i].min_connections = limit->min_connections;
		cb_apps[i].max_connections = limit->max_connections;
		cb_apps[i].weight = limit->weight;
		if (!cb_set_roles_locked(&cb_apps[i], limit))
			unplaced++;
	}
	cb_shared->configured_apps = 0;
	for (int i = 0; i < cb_shared->app_capacity; i++)
	{
		CbApp	   *app = &cb_apps[i];

		if (app->incarnation == 0)
			continue;
		if (app->configured && !app->listed)
		{
			CbLimit		any = {.nroles = -1};

			(void) cb_set_roles_locked(app, &any);
			app->configured = false;
			app->min_connections = 0;
			app->max_connections = CB_UNBOUNDED;
			app->weight = 1;
		}
		if (app->configured)
			cb_shared->configured_apps++;
	}
	return unplaced;
}

/*
 * A change of limits that failed half way (an error, or the process
 * exiting): the old limits stay in force; let connects go on.
 */
static void
cb_abandon_limits_change(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	uint64		gen = pg_atomic_read_u64(&cb_shared->limits_gen);

	if (gen & 1)
		pg_atomic_write_u64(&cb_shared->limits_gen, gen + 1);
}

/*
 * Make these rows the limits in force, re-sort every open connection
 * against them with every check that connect applies, and mark limits as
 * loaded.  The caller has validated them (cb_check_limits) and holds the
 * limits lock (cb_lock_limits), so there is one change at a time.  With
 * resort, open connections are judged again even if the limits are the
 * ones in force (a role's memberships changed).
 *
 * Whether a role may claim an application is a catalog lookup, which
 * cannot be made under the registry lock; so it is made first, for every
 * open connection and every pod, with limits_gen odd meanwhile.  A
 * connect that copied its claim before then is refused by
 * cb_backend_attach() as stale and checks it again; one that copies it
 * meanwhile waits for the new limits.  So every connection is either
 * judged here or checks the new limits itself.
 */
void
cb_publish_limits(const CbLimit *limits, int nlimits, bool resort)
{
	volatile int unplaced = 0;
	bool		same;

	LWLockAcquire(cb_shared->lock, LW_SHARED);
	same = cb_limits_equal_locked(limits, nlimits) && !resort;
	LWLockRelease(cb_shared->lock);

	if (!same)
	{
		CbClaimant *backends = palloc(sizeof(CbClaimant) * cb_shared->nbackends);
		CbClaimant *pods = MemoryContextAllocHuge(CurrentMemoryContext,
												  sizeof(CbClaimant) * cb_shared->pod_capacity);
		int8	   *claims = palloc(sizeof(int8) * cb_shared->nbackends);
		int			nbackends;
		int			npods;
		volatile int demoted = 0;

		pg_atomic_fetch_add_u64(&cb_shared->limits_gen, 1);
		PG_ENSURE_ERROR_CLEANUP(cb_abandon_limits_change, (Datum) 0);
		{
			LWLockAcquire(cb_shared->lock, LW_SHARED);
			nbackends = cb_collect_claimants_locked(backends, pods, &npods);
			LWLockRelease(cb_shared->lock);

			cb_claim_verdicts(limits, nlimits, backends, nbackends);
			cb_claim_verdicts(limits, nlimits, pods, npods);
			memset(claims, -1, sizeof(int8) * cb_shared->nbackends);
			for (int i = 0; i < nbackends; i++)
				claims[backends[i].slot] = backends[i].ok ? 1 : 0;

			LWLockAcquire(cb_shared->lock, LW_EXCLUSIVE);
			unplaced = cb_install_limits_locked(limits, nlimits);
			cb_recount_locked(GetCurrentTimestamp(), claims, cb_enforce);
			if (cb_enforce == CB_ENFORCE_ON)
				cb_revoke_leases_locked(pods, npods);
			for (int i = 0; i < nbackends; i++)
				if (!backends[i].ok && cb_backends[backends[i].slot].verdict == CB_CLAIM_REFUSED)
					demoted++;
			pg_atomic_fetch_add_u64(&cb_shared->limits_gen, 1);
			LWLockRelease(cb_shared->lock);
		}
		PG_END_ENSURE_ERROR_CLEANUP(cb_abandon_limits_change, (Datum) 0);

		if (demoted > 0)
			ereport(LOG,
					(errmsg("connbudget: %d open connections are \"other\" from now on: their roles may no longer claim their applications",
							demoted)));
		pfree(backends);
		pfree(pods);
		pfree(claims);
	}
	if (unplaced > 0)
		ereport(WARNING,
				(errmsg("connbudget: %d application limits could not be put in force: no room in shared memory",
						unplaced)));
	cb_set_limits_state(CB_LIMITS_LOADED);
}

/* ---------------------------------------------------------------------
 * Settings
 * ---------------------------------------------------------------------
 */

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
 * Asking the limits loader to re-read the table
 * ---------------------------------------------------------------------
 */

void
cb_set_loader_latch(Latch *latch)
{
	pg_atomic_write_u64(&cb_shared->loader_latch, (uint64) (uintptr_t) latch);
}

/* Ask the loader to re-read the limits table soon. */
void
cb_request_reload(void)
{
	Latch	   *latch;

	pg_atomic_write_u32(&cb_shared->reload_requested, 1);
	latch = (Latch *) (uintptr_t) pg_atomic_read_u64(&cb_shared->loader_latch);
	if (latch)
		SetLatch(latch);
}

bool
cb_take_reload_request(void)
{
	return pg_atomic_exchange_u32(&cb_shared->reload_requested, 0) != 0;
}
