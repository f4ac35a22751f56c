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
		 * still count as configured; then unconfigure those that lost their
		 * row.  Only a slot that merely keeps a refusal counter may be
		 * evicted to make room.
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
		cb_recount_locked(now);
	}
	LWLockRelease(cb_shared->lock);
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
			cb_recount_locked(GetCurrentTimestamp());
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
