/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Putting connbudget.application_limits in force: in shared memory, in
 *	  commit order, with every open connection judged again.
 *
 * The table is the management interface: operators change limits with
 * plain INSERT, UPDATE, DELETE and TRUNCATE, in the database named by
 * connbudget.database.  Shared memory holds the rows in force.  They get
 * there three ways:
 *
 * 1. At server start, the limits loader (loader.c) reads the table and
 *	  publishes it; the connect hook waits for that, so limits are in force
 *	  from the first connection after a restart.
 * 2. When a transaction changes the table, a statement trigger validates
 *	  the new contents (reporting errors at the statement), and just before
 *	  commit the transaction reads the table once more and publishes it.
 *	  Publishing before commit means the next connection after COMMIT
 *	  returns already sees the new limits.
 * 3. The loader re-reads the table every CB_WORKER_RELOAD_MS and when
 *	  asked, which repairs the rare cases above cannot see: a transaction
 *	  that failed after publishing (serialization failure at commit), or
 *	  the table being dropped with the extension.
 * 4. On a hot standby the table is a replica of the primary's and cannot
 *	  be written (guards.c says so clearly); the loader
 *	  follows replay instead, re-reading it whenever replay has moved on,
 *	  a few times per refresh interval.
 *
 * Readers and publishers serialise on one transaction-level lock
 * (cb_lock_limits), taken before reading, so publications happen in commit
 * order: a transaction publishing at pre-commit holds the lock until its
 * commit is visible, and whoever reads next sees that commit.  The table
 * is read with a fresh snapshot, so concurrent writers under REPEATABLE
 * READ cannot publish a stale view either.  The lock's tag is one no SQL
 * function can produce, so no login can take it and hold up every change.
 *
 * limits_table.c finds the table and reads its rows; this file makes a
 * set of rows the one in force.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "state.h"

/*
 * The limits lock's tag: an advisory lock with keys "conn" and "budg" and a
 * fourth field of "cb".  pg_advisory_lock() and its kin only ever set the
 * fourth field to 1 (one bigint key) or 2 (two int keys), so no SQL can
 * take or wait on this lock.
 */
#define CB_LOCK_KEY1	0x636f6e6e
#define CB_LOCK_KEY2	0x62756467
#define CB_LOCK_KEY4	0x6362

/* This transaction changed the table / published it. */
static bool cb_limits_dirty = false;
static bool cb_limits_published = false;
static bool cb_xact_callback_registered = false;

PG_FUNCTION_INFO_V1(connbudget_limits_changed);

/*
 * Serialise reading-and-publishing of limits; held until the transaction
 * ends.  It shows in pg_locks as an advisory lock with classid 1668247150,
 * objid 1651860583 and objsubid 25442.
 */
void
cb_lock_limits(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, CB_LOCK_KEY1, CB_LOCK_KEY2, CB_LOCK_KEY4);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

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
			pg_atomic_write_u64(&cb_shared->limits_input_gen,
								pg_atomic_read_u64(&cb_shared->input_gen));
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
 * Reading the table, and changing it
 * ---------------------------------------------------------------------
 */

static bool
cb_is_authoritative_database(void)
{
	char	   *name = get_database_name(MyDatabaseId);

	return name != NULL && cb_database != NULL && strcmp(name, cb_database) == 0;
}

/*
 * Read the limits for a change made by this transaction: a table that
 * cannot be trusted or read, or rows the table's rules forbid, are an
 * error for whoever changed it.
 */
static int
cb_read_limits_or_error(CbLimit **limits)
{
	const char *why;
	int			n = cb_read_limits(limits, &why);

	if (n == CB_LIMITS_MISSING)
		return 0;
	if (n < 0 || why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("connbudget cannot put connbudget.application_limits in force: %s", why),
				 errhint("Reinstall the extension, or restore the table as the extension created it.")));
	return n;
}

/*
 * Re-read the table and put it in force.  Called by the loader inside a
 * transaction.  Committed rows that break cb_check_limits are published
 * anyway, with a warning: refusing to load them would leave no limits.  A
 * table that cannot be trusted or read is treated as no table (every
 * application is unconfigured), and *why says why; rows that cannot be
 * put in force are left out, *why saying so too.  With resort, every open
 * connection is judged again even if the limits did not change (some
 * role's memberships did).
 */
void
cb_reload_limits(bool resort, const char **why)
{
	CbLimit    *limits;
	int			n;
	Oid			relid = cb_find_limits_table(why);

	/*
	 * Lock the table before the limits lock, in the order writers take them
	 * (they hold the table from their first statement and take the limits
	 * lock at pre-commit); the other order deadlocks with a TRUNCATE in
	 * progress.
	 */
	if (OidIsValid(relid))
		LockRelationOid(relid, AccessShareLock);
	cb_lock_limits();
	n = cb_read_limits(&limits, why);
	if (n < 0)
		n = 0;
	(void) cb_check_limits(limits, n, WARNING);
	cb_publish_limits(limits, Min(n, CB_MAX_CONFIGURED_APPS), resort);
}

static void
cb_limits_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			if (cb_limits_dirty)
			{
				CbLimit    *limits;
				int			n;

				cb_lock_limits();
				n = cb_read_limits_or_error(&limits);
				(void) cb_check_limits(limits, n, ERROR);
				cb_publish_limits(limits, n, false);
				cb_limits_published = true;
			}
			break;

		case XACT_EVENT_PRE_PREPARE:
			if (cb_limits_dirty)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed connbudget.application_limits")));
			break;

		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* published, then failed after all: let the worker restore */
			if (cb_limits_published)
				cb_request_reload();
			cb_limits_dirty = false;
			cb_limits_published = false;
			break;

		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			cb_limits_dirty = false;
			cb_limits_published = false;
			break;
	}
}

/*
 * Statement trigger on connbudget.application_limits: validate what the
 * table now holds and arrange for it to be published at commit.
 */
Datum
connbudget_limits_changed(PG_FUNCTION_ARGS)
{
	CbLimit    *limits;
	int			n;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("connbudget.limits_changed() can only be called as a trigger")));

	/* without preload there is no shared memory; the worker loads at start */
	if (!cb_shmem_attached())
		return PointerGetDatum(NULL);

	if (!cb_is_authoritative_database())
	{
		ereport(WARNING,
				(errmsg("connbudget.application_limits of database \"%s\" is not in force",
						get_database_name(MyDatabaseId)),
				 errdetail("Limits are read from database \"%s\" (connbudget.database).",
						   cb_database)));
		return PointerGetDatum(NULL);
	}

	n = cb_read_limits_or_error(&limits);
	(void) cb_check_limits(limits, n, ERROR);

	if (!cb_xact_callback_registered)
	{
		RegisterXactCallback(cb_limits_xact_callback, NULL);
		cb_xact_callback_registered = true;
	}
	cb_limits_dirty = true;
	return PointerGetDatum(NULL);
}
