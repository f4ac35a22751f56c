/*-------------------------------------------------------------------------
 *
 * limits_table.c
 *	  connbudget.application_limits: finding the extension's own table,
 *	  and reading and validating its rows.
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
 * loader needs no SPI.
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
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "compat.h"
#include "connbudget.h"

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
bool
cb_owned_by_superuser(Oid owner)
{
	return OidIsValid(owner) && superuser_arg(owner);
}

/*
 * The connbudget extension's row in pg_extension of this database: its oid,
 * schema and owner.  False if it is not installed here.
 */
bool
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
Oid
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
