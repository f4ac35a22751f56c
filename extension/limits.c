/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  connbudget.application_limits: reading it, validating it, and putting
 *	  it in force.
 *
 * The table is the management interface: operators change limits with
 * plain INSERT, UPDATE, DELETE and TRUNCATE, in the database named by
 * connbudget.database.  Shared memory holds the rows in force.  They get
 * there three ways:
 *
 * 1. At server start, the background worker (worker.c) reads the table and
 *	  publishes it; the connect hook waits for that, so limits are in force
 *	  from the first connection after a restart.
 * 2. When a transaction changes the table, a statement trigger validates
 *	  the new contents (reporting errors at the statement), and just before
 *	  commit the transaction reads the table once more and publishes it.
 *	  Publishing before commit means the next connection after COMMIT
 *	  returns already sees the new limits.
 * 3. The worker re-reads the table every CB_WORKER_RELOAD_MS and when
 *	  asked, which repairs the rare cases above cannot see: a transaction
 *	  that failed after publishing (serialization failure at commit), or
 *	  the table being dropped with the extension.
 * 4. On a hot standby the table is a replica of the primary's and cannot
 *	  be written (cb_refuse_on_standby says so clearly); the worker
 *	  follows replay instead, re-reading it whenever replay has moved on,
 *	  a few times per refresh interval.
 *
 * Readers and publishers serialise on one transaction-level advisory lock
 * (cb_lock_limits), taken before reading, so publications happen in commit
 * order: a transaction publishing at pre-commit holds the lock until its
 * commit is visible, and whoever reads next sees that commit.  The table
 * is read with a fresh snapshot, so concurrent writers under REPEATABLE
 * READ cannot publish a stale view either.
 *
 * The table is read with a plain heap scan rather than SQL so that a role
 * granted only INSERT on it can still change limits, and so that the
 * worker needs no SPI.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "connbudget.h"

/* advisory lock keys: "conn", "budg" */
#define CB_LOCK_KEY1	0x636f6e6e
#define CB_LOCK_KEY2	0x62756467

/* This transaction changed the table / published it. */
static bool cb_limits_dirty = false;
static bool cb_limits_published = false;
static bool cb_xact_callback_registered = false;

PG_FUNCTION_INFO_V1(connbudget_limits_changed);

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * Serialise reading-and-publishing of limits; held until the transaction
 * ends.  It shows in pg_locks as an advisory lock with keys
 * (1668247150, 1651860583).
 */
void
cb_lock_limits(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, CB_LOCK_KEY1, CB_LOCK_KEY2, 2);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* The column's number, or 0 if the table has no such column. */
static int
cb_attnum_if_any(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (!attr->attisdropped && strcmp(NameStr(attr->attname), name) == 0)
			return i + 1;
	}
	return 0;
}

static int
cb_attnum(TupleDesc desc, const char *name)
{
	int			attnum = cb_attnum_if_any(desc, name);

	if (attnum > 0)
		return attnum;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("connbudget.application_limits has no column \"%s\"", name),
			 errhint("The extension's table was altered; recreate it with ALTER EXTENSION connbudget UPDATE or reinstall the extension.")));
	return 0;					/* keep compiler quiet */
}

/*
 * Read every row of connbudget.application_limits in this database with a
 * fresh snapshot (this transaction's own changes included).  Returns the
 * number of rows, or -1 if the extension is not installed here.  Must be
 * called inside a transaction.
 */
int
cb_read_limits(CbLimit **limits_out)
{
	Oid			nspid;
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int			att_name,
				att_min,
				att_max,
				att_weight,
				att_roles;
	int			n = 0;
	int			size = 16;
	CbLimit    *limits;

	*limits_out = NULL;
	nspid = get_namespace_oid("connbudget", true);
	if (!OidIsValid(nspid))
		return -1;
	relid = get_relname_relid("application_limits", nspid);
	if (!OidIsValid(relid))
		return -1;

	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	att_name = cb_attnum(desc, "application_name");
	att_min = cb_attnum(desc, "min_connections");
	att_max = cb_attnum(desc, "max_connections");
	att_weight = cb_attnum(desc, "weight");
	/* version 1.0 of the extension has no roles: any role */
	att_roles = cb_attnum_if_any(desc, "roles");

	limits = palloc(sizeof(CbLimit) * size);

	/*
	 * Make this transaction's own changes visible: in an AFTER trigger or at
	 * pre-commit of a single-statement transaction, the rows written by the
	 * current command are not visible to a snapshot of that same command.
	 */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		CbLimit    *limit;
		bool		isnull;
		Datum		value;
		char	   *name;

		if (n == size)
		{
			size *= 2;
			limits = repalloc(limits, sizeof(CbLimit) * size);
		}
		limit = &limits[n];

		value = slot_getattr(slot, att_name, &isnull);
		if (isnull)
			continue;
		name = TextDatumGetCString(value);
		if (strlen(name) >= CB_NAME_LEN)
			continue;			/* the check constraint rules this out */
		strlcpy(limit->application_name, name, CB_NAME_LEN);

		value = slot_getattr(slot, att_min, &isnull);
		limit->min_connections = isnull ? 0 : DatumGetInt32(value);
		value = slot_getattr(slot, att_max, &isnull);
		limit->max_connections = isnull ? CB_UNBOUNDED : DatumGetInt32(value);
		value = slot_getattr(slot, att_weight, &isnull);
		limit->weight = isnull ? 1 : DatumGetInt32(value);
		limit->nroles = -1;
		if (att_roles > 0)
		{
			value = slot_getattr(slot, att_roles, &isnull);
			if (!isnull)
			{
				ArrayType  *array = DatumGetArrayTypeP(value);
				Datum	   *elems;
				bool	   *elem_nulls;
				int			nelems;

				deconstruct_array(array, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR,
								  &elems, &elem_nulls, &nelems);
				/* the check constraints keep nulls out and the count in bounds */
				limit->nroles = 0;
				for (int k = 0; k < nelems && limit->nroles < CB_MAX_APP_ROLES; k++)
					if (!elem_nulls[k])
						strlcpy(limit->roles[limit->nroles++],
								NameStr(*DatumGetName(elems[k])), CB_NAME_LEN);
			}
		}
		n++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);

	*limits_out = limits;
	return n;
}

/*
 * The rules a set of limits must satisfy beyond the table's check
 * constraints: it fits in shared memory, and the guaranteed minimums fit
 * in the budget.  Reported at "elevel": ERROR when a user changes the
 * table, WARNING when the worker loads what is already committed (the
 * budget may have shrunk across a restart; the allocation copes by
 * scaling the minimums down).  Returns false if something was reported.
 */
bool
cb_check_limits(const CbLimit *limits, int nlimits, int elevel)
{
	int64		sum_min = 0;
	int32		budget = cb_configured_budget();

	if (nlimits > CB_MAX_CONFIGURED_APPS)
	{
		ereport(elevel,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("connbudget.application_limits may hold at most %d applications",
						CB_MAX_CONFIGURED_APPS),
				 errdetail("It holds %d.", nlimits)));
		return false;
	}

	for (int i = 0; i < nlimits; i++)
		sum_min += limits[i].min_connections;
	if (sum_min > budget)
	{
		ereport(elevel,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("the applications' min_connections add up to %lld, more than the connection budget of %d",
						(long long) sum_min, budget),
				 errdetail("The budget is max_connections (%d) minus superuser_reserved_connections (%d), reserved_connections (%d) and connbudget.reserved_connections (%d).",
						   MaxConnections, CB_SUPERUSER_RESERVED(), CB_SERVER_RESERVED(),
						   cb_extension_reserved()),
				 errhint("Lower some min_connections, or raise max_connections.")));
		return false;
	}
	return true;
}

static bool
cb_is_authoritative_database(void)
{
	char	   *name = get_database_name(MyDatabaseId);

	return name != NULL && cb_database != NULL && strcmp(name, cb_database) == 0;
}

/*
 * Re-read the table and put it in force.  Called by the worker inside a
 * transaction.  Committed rows that break cb_check_limits are published
 * anyway, with a warning: refusing to load them would leave no limits.
 */
void
cb_reload_limits(void)
{
	CbLimit    *limits;
	int			n;
	Oid			nspid = get_namespace_oid("connbudget", true);
	Oid			relid = OidIsValid(nspid) ?
		get_relname_relid("application_limits", nspid) : InvalidOid;

	/*
	 * Lock the table before the advisory lock, in the order writers take
	 * them (they hold the table from their first statement and take the
	 * advisory lock at pre-commit); the other order deadlocks with a
	 * TRUNCATE in progress.
	 */
	if (OidIsValid(relid))
		LockRelationOid(relid, AccessShareLock);
	cb_lock_limits();
	n = cb_read_limits(&limits);
	if (n < 0)
		n = 0;
	(void) cb_check_limits(limits, n, WARNING);
	cb_publish_limits(limits, Min(n, CB_MAX_CONFIGURED_APPS));
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
				n = cb_read_limits(&limits);
				if (n < 0)
					n = 0;
				(void) cb_check_limits(limits, n, ERROR);
				cb_publish_limits(limits, n);
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

	n = cb_read_limits(&limits);
	(void) cb_check_limits(limits, Max(n, 0), ERROR);

	if (!cb_xact_callback_registered)
	{
		RegisterXactCallback(cb_limits_xact_callback, NULL);
		cb_xact_callback_registered = true;
	}
	cb_limits_dirty = true;
	return PointerGetDatum(NULL);
}

/* ---------------------------------------------------------------------
 * Read-only on a standby
 * ---------------------------------------------------------------------
 */

static Oid
cb_limits_relid(void)
{
	Oid			nspid = get_namespace_oid("connbudget", true);

	return OidIsValid(nspid) ? get_relname_relid("application_limits", nspid) : InvalidOid;
}

/*
 * A change of the limits on a hot standby: PostgreSQL would refuse it as a
 * write in a read-only transaction; say what to do instead.
 */
static void
cb_refuse_on_standby(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("cannot %s connbudget.application_limits on a standby", what),
			 errdetail("The limits of a standby are the primary's: they replicate here and are in force within two refresh intervals."),
			 errhint("Change them on the primary.")));
}

static void
cb_executor_start(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;

	if (RecoveryInProgress() && stmt->commandType != CMD_SELECT && stmt->resultRelations != NIL)
	{
		Oid			limits = cb_limits_relid();
		ListCell   *cell;

		foreach(cell, stmt->resultRelations)
			if (OidIsValid(limits) && rt_fetch(lfirst_int(cell), stmt->rtable)->relid == limits)
				cb_refuse_on_standby("change");
	}
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
cb_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (RecoveryInProgress() && IsA(pstmt->utilityStmt, TruncateStmt))
	{
		Oid			limits = cb_limits_relid();
		ListCell   *cell;

		foreach(cell, ((TruncateStmt *) pstmt->utilityStmt)->relations)
			if (OidIsValid(limits) &&
				RangeVarGetRelid(lfirst_node(RangeVar, cell), NoLock, true) == limits)
				cb_refuse_on_standby("truncate");
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
cb_install_standby_hooks(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = cb_executor_start;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = cb_process_utility;
}

/* Where replay has got to on a standby: the worker re-reads when it moves. */
uint64
cb_replay_position(void)
{
	return RecoveryInProgress() ? (uint64) GetXLogReplayRecPtr(NULL) : 0;
}
