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
 * Readers and publishers serialise on one transaction-level lock
 * (cb_lock_limits), taken before reading, so publications happen in commit
 * order: a transaction publishing at pre-commit holds the lock until its
 * commit is visible, and whoever reads next sees that commit.  The table
 * is read with a fresh snapshot, so concurrent writers under REPEATABLE
 * READ cannot publish a stale view either.  The lock's tag is one no SQL
 * function can produce, so no login can take it and hold up every change.
 *
 * The table is the extension's own: found through the extension's
 * membership and owner, never by its name alone, and its columns' types
 * are checked before a value is read.  A table that merely has the name
 * (in a schema somebody else created or renamed) is not read, and a table
 * whose columns were altered is reported, not trusted.  So no table
 * content, however wrong, can crash the loader or put foreign limits in
 * force.
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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
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
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "compat.h"
#include "connbudget.h"

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

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

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

/* The columns of the limits table, with the types they must have. */
typedef struct CbColumn
{
	const char *name;
	Oid			type;
	bool		optional;		/* added in a later version of the table */
} CbColumn;

static const CbColumn cb_columns[] = {
	{"application_name", TEXTOID, false},
	{"min_connections", INT4OID, false},
	{"max_connections", INT4OID, false},
	{"weight", INT4OID, false},
	{"roles", NAMEARRAYOID, true},	/* from version 1.1 */
};

#define CB_NCOLUMNS (sizeof(cb_columns) / sizeof(cb_columns[0]))

/*
 * Is this role a superuser?  The extension, its schema and its limits table
 * must all belong to one, so that no other login can replace or drop them.
 */
static bool
cb_owned_by_superuser(Oid owner)
{
	return OidIsValid(owner) && superuser_arg(owner);
}

/*
 * The connbudget extension's row in pg_extension of this database: its oid,
 * schema and owner.  False if it is not installed here.
 */
static bool
cb_extension_row(Oid *extoid, Oid *nspid, Oid *owner)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		found = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("connbudget"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_extension ext = (Form_pg_extension) GETSTRUCT(tuple);

		*extoid = ext->oid;
		*nspid = ext->extnamespace;
		*owner = ext->extowner;
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Find the extension's own limits table: application_limits in the
 * extension's schema, a member of the extension, owned by the extension's
 * owner, with the extension, its schema and the table belonging to
 * superusers.  Returns its oid; InvalidOid with *why set if it cannot be
 * trusted, or with *why NULL if the extension is not installed here.
 */
static Oid
cb_find_limits_table(const char **why)
{
	Oid			extoid;
	Oid			nspid;
	Oid			owner;
	Oid			relid;
	HeapTuple	tuple;
	Form_pg_class rel;
	bool		trusted;

	*why = NULL;
	if (!cb_extension_row(&extoid, &nspid, &owner))
		return InvalidOid;
	if (!cb_owned_by_superuser(owner))
	{
		*why = psprintf("the extension belongs to role \"%s\", which is not a superuser",
						GetUserNameFromId(owner, true) ?: "?");
		return InvalidOid;
	}
	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tuple))
	{
		*why = "the extension's schema does not exist";
		return InvalidOid;
	}
	trusted = cb_owned_by_superuser(((Form_pg_namespace) GETSTRUCT(tuple))->nspowner);
	ReleaseSysCache(tuple);
	if (!trusted)
	{
		*why = psprintf("schema \"%s\" belongs to a role that is not a superuser",
						get_namespace_name(nspid));
		return InvalidOid;
	}
	relid = get_relname_relid("application_limits", nspid);
	if (!OidIsValid(relid))
	{
		*why = "the extension has no table application_limits";
		return InvalidOid;
	}
	if (getExtensionOfObject(RelationRelationId, relid) != extoid)
	{
		*why = "the table application_limits in the extension's schema is not the extension's own";
		return InvalidOid;
	}
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
	{
		*why = "the table application_limits was dropped";
		return InvalidOid;
	}
	rel = (Form_pg_class) GETSTRUCT(tuple);
	trusted = rel->relkind == RELKIND_RELATION && rel->relowner == owner;
	ReleaseSysCache(tuple);
	if (!trusted)
	{
		*why = "the table application_limits is not an ordinary table owned by the extension's owner";
		return InvalidOid;
	}
	return relid;
}

/*
 * The number of each column (0 for an optional one that is missing), or
 * false and *why if a column is missing or has the wrong type.
 */
static bool
cb_check_columns(TupleDesc desc, int *attnums, const char **why)
{
	for (int c = 0; c < (int) CB_NCOLUMNS; c++)
	{
		attnums[c] = 0;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute attr = TupleDescAttr(desc, i);

			if (!attr->attisdropped && strcmp(NameStr(attr->attname), cb_columns[c].name) == 0)
			{
				if (attr->atttypid != cb_columns[c].type)
				{
					*why = psprintf("column %s is of type %s, not %s", cb_columns[c].name,
									format_type_be(attr->atttypid),
									format_type_be(cb_columns[c].type));
					return false;
				}
				attnums[c] = i + 1;
			}
		}
		if (attnums[c] == 0 && !cb_columns[c].optional)
		{
			*why = psprintf("column %s is missing", cb_columns[c].name);
			return false;
		}
	}
	return true;
}

/*
 * Check a row's values as the table's constraints would (a superuser may
 * have dropped them): false and *why if it cannot be put in force.
 */
static bool
cb_check_row(const CbLimit *limit, const char **why)
{
	if (limit->min_connections < 0)
		*why = "min_connections is negative";
	else if (limit->max_connections < 0 && limit->max_connections != CB_UNBOUNDED)
		*why = "max_connections is negative";
	else if (limit->max_connections != CB_UNBOUNDED &&
			 limit->min_connections > limit->max_connections)
		*why = "min_connections is above max_connections";
	else if (limit->weight < 1)
		*why = "weight is below 1";
	else if (limit->application_name[0] == '\0')
		*why = "application_name is empty";
	else
		return true;
	return false;
}

/*
 * Read every row of the extension's connbudget.application_limits in this
 * database with a fresh snapshot (this transaction's own changes
 * included).  Returns the number of rows; CB_LIMITS_MISSING if the
 * extension is not installed here, or CB_LIMITS_UNTRUSTED with *why if its
 * table cannot be trusted or read.  Rows whose values break the table's
 * rules are left out, *why saying so.  Must be called inside a
 * transaction.
 */
int
cb_read_limits(CbLimit **limits_out, const char **why)
{
	Oid			relid;
	Relation	rel;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	int			att[CB_NCOLUMNS];
	int			n = 0;
	int			size = 16;
	CbLimit    *limits;

	*limits_out = NULL;
	relid = cb_find_limits_table(why);
	if (!OidIsValid(relid))
		return *why ? CB_LIMITS_UNTRUSTED : CB_LIMITS_MISSING;

	rel = table_open(relid, AccessShareLock);
	if (!cb_check_columns(RelationGetDescr(rel), att, why))
	{
		table_close(rel, AccessShareLock);
		return CB_LIMITS_UNTRUSTED;
	}

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
		const char *bad;

		if (n == size)
		{
			size *= 2;
			limits = repalloc(limits, sizeof(CbLimit) * size);
		}
		limit = &limits[n];

		value = slot_getattr(slot, att[0], &isnull);
		if (isnull)
			continue;			/* the primary key rules this out */
		name = TextDatumGetCString(value);
		if (strlen(name) >= CB_NAME_LEN)
		{
			*why = "an application_name is longer than 63 bytes";
			continue;
		}
		strlcpy(limit->application_name, name, CB_NAME_LEN);

		value = slot_getattr(slot, att[1], &isnull);
		limit->min_connections = isnull ? 0 : DatumGetInt32(value);
		value = slot_getattr(slot, att[2], &isnull);
		limit->max_connections = isnull ? CB_UNBOUNDED : DatumGetInt32(value);
		value = slot_getattr(slot, att[3], &isnull);
		limit->weight = isnull ? 1 : DatumGetInt32(value);
		limit->nroles = -1;
		if (att[4] > 0)
		{
			value = slot_getattr(slot, att[4], &isnull);
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
		if (!cb_check_row(limit, &bad))
		{
			*why = psprintf("in the row of application \"%s\", %s", limit->application_name, bad);
			continue;
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

/* ---------------------------------------------------------------------
 * Read-only on a standby
 * ---------------------------------------------------------------------
 */

static Oid
cb_limits_relid(void)
{
	const char *why;

	return cb_find_limits_table(&why);
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

/*
 * CREATE EXTENSION connbudget installs into schema connbudget, creating it
 * if it does not exist yet.  If a login with CREATE on the database created
 * it first, it would own the extension's schema: it could rename it and
 * put a table of its own in place of the limits.  So the extension is only
 * installed (or updated) in a schema a superuser owns.
 */
static void
cb_refuse_untrusted_schema(Node *stmt)
{
	const char *extname = IsA(stmt, CreateExtensionStmt) ?
		((CreateExtensionStmt *) stmt)->extname : ((AlterExtensionStmt *) stmt)->extname;
	Oid			nspid;
	HeapTuple	tuple;
	Oid			owner;

	if (strcmp(extname, "connbudget") != 0)
		return;
	if (IsA(stmt, CreateExtensionStmt))
		nspid = get_namespace_oid("connbudget", true);
	else
	{
		Oid			extoid;
		Oid			extowner;

		if (!cb_extension_row(&extoid, &nspid, &extowner))
			return;
	}
	if (!OidIsValid(nspid))
		return;
	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tuple))
		return;
	owner = ((Form_pg_namespace) GETSTRUCT(tuple))->nspowner;
	ReleaseSysCache(tuple);
	if (!cb_owned_by_superuser(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("schema \"%s\" is owned by role \"%s\", which is not a superuser",
						get_namespace_name(nspid), GetUserNameFromId(owner, true) ?: "?"),
				 errdetail("The owner of connbudget's schema could replace the limits table with one of its own."),
				 errhint("Drop the schema, or make a superuser its owner with ALTER SCHEMA %s OWNER TO, then try again.",
						 quote_identifier(get_namespace_name(nspid)))));
}

/*
 * A few statements lock their table before they check that the user owns
 * it: CREATE RULE and DROP RULE, TRIGGER or POLICY take ACCESS EXCLUSIVE,
 * CREATE TRIGGER SHARE ROW EXCLUSIVE (it checks the TRIGGER privilege
 * rather than ownership).  Waiting behind a lock another
 * session holds, such a request from any login that can name the table
 * would queue every later INSERT into the limits, and the limits loader,
 * behind it.  On the extension's relations, refuse it before it locks
 * anything, with the error PostgreSQL gives a moment later anyway.
 */
static void
cb_check_owner_before_lock(const RangeVar *rv, AclMode privilege)
{
	Oid			relid;
	Oid			extoid;
	Oid			nspid;
	Oid			owner;
	ObjectType	kind;

	if (rv == NULL || superuser())
		return;
	relid = RangeVarGetRelid(rv, NoLock, true);
	if (!OidIsValid(relid) || !cb_extension_row(&extoid, &nspid, &owner) ||
		get_rel_namespace(relid) != nspid)
		return;
	kind = get_relkind_objtype(get_rel_relkind(relid));
	if (privilege != ACL_NO_RIGHTS)
	{
		if (pg_class_aclcheck(relid, GetUserId(), privilege) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, kind, get_rel_name(relid));
	}
	else if (!CB_OWNS_RELATION(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, kind, get_rel_name(relid));
}

static void
cb_check_owner_of_named(List *names)
{
	/* trigger, rule and policy names are qualified by their relation */
	if (list_length(names) > 1)
		cb_check_owner_before_lock(makeRangeVarFromNameList(list_truncate(list_copy(names),
																		   list_length(names) - 1)),
								   ACL_NO_RIGHTS);
}

static void
cb_refuse_lock_before_ownership(Node *stmt)
{
	if (IsA(stmt, RuleStmt))
		cb_check_owner_before_lock(((RuleStmt *) stmt)->relation, ACL_NO_RIGHTS);
	else if (IsA(stmt, CreateTrigStmt))
		cb_check_owner_before_lock(((CreateTrigStmt *) stmt)->relation, ACL_TRIGGER);
	else if (IsA(stmt, DropStmt))
	{
		DropStmt   *drop = (DropStmt *) stmt;
		ListCell   *cell;

		if (drop->removeType != OBJECT_TRIGGER && drop->removeType != OBJECT_RULE &&
			drop->removeType != OBJECT_POLICY)
			return;
		foreach(cell, drop->objects)
			cb_check_owner_of_named(lfirst_node(List, cell));
	}
}

static void
cb_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (IsA(pstmt->utilityStmt, CreateExtensionStmt) ||
		IsA(pstmt->utilityStmt, AlterExtensionStmt))
		cb_refuse_untrusted_schema(pstmt->utilityStmt);
	cb_refuse_lock_before_ownership(pstmt->utilityStmt);
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
