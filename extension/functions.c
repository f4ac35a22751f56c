/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  SQL-callable functions: pool_share() and the set-returning functions
 *	  behind the views connbudget.budget, connbudget.applications and
 *	  connbudget.pods.
 *
 * Each copies what it needs out of shared memory (share.c) and builds
 * tuples after the lock is released.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

#include "connbudget.h"

PG_FUNCTION_INFO_V1(connbudget_pool_share);
PG_FUNCTION_INFO_V1(connbudget_read_budget);
PG_FUNCTION_INFO_V1(connbudget_read_applications);
PG_FUNCTION_INFO_V1(connbudget_read_pods);
PG_FUNCTION_INFO_V1(connbudget_read_slots);

/*
 * The result descriptor of a function returning a record, looked up once
 * per call site: pool_share() is called by every pod every refresh
 * interval, so it is kept cheap.
 *
 * Nothing locks a function or its result type while it is called, so a
 * DROP EXTENSION that commits meanwhile could leave the type's relation
 * gone by the time it is read ("could not open relation with OID").  The
 * function is locked as DROP locks what it drops, without waiting more
 * than a few milliseconds (a reader of the views already holds locks the
 * DROP may be waiting for), and then looked up again: a call either
 * finishes before the drop or reports the function gone, cleanly.
 */
#define CB_DROP_LOCK_TRIES 20

static TupleDesc
cb_result_desc(FunctionCallInfo fcinfo)
{
	TupleDesc	desc = (TupleDesc) fcinfo->flinfo->fn_extra;

	if (desc == NULL)
	{
		MemoryContext old;
		LOCKTAG		tag;
		Oid			fn = fcinfo->flinfo->fn_oid;

		SET_LOCKTAG_OBJECT(tag, MyDatabaseId, ProcedureRelationId, fn, 0);
		for (int tries = 0;
			 LockAcquire(&tag, AccessShareLock, false, true) == LOCKACQUIRE_NOT_AVAIL;
			 tries++)
		{
			char	   *name;

			/*
			 * A transaction that just ended releases its locks one
			 * partition at a time: a reader woken by one of them may find
			 * the next still held for a moment.
			 */
			if (tries < CB_DROP_LOCK_TRIES)
			{
				CHECK_FOR_INTERRUPTS();
				pg_usleep(1000L);
				continue;
			}
			name = get_func_name(fn);

			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 name ? errmsg("function %s of connbudget is being dropped", name)
					 : errmsg("a function of connbudget is being dropped"),
					 errdetail("DROP EXTENSION connbudget is under way.")));
		}
		AcceptInvalidationMessages();
		if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("a function of connbudget was dropped while this statement was running"),
					 errdetail("DROP EXTENSION connbudget has committed.")));
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		desc = BlessTupleDesc(CreateTupleDescCopy(desc));
		fcinfo->flinfo->fn_extra = desc;
		MemoryContextSwitchTo(old);
	}
	return desc;
}

/* A row of integer columns, none NULL, as the function's result. */
static Datum
cb_integer_row(FunctionCallInfo fcinfo, const int32 *columns, int n)
{
	Datum		values[16];
	bool		nulls[16] = {false};

	Assert(n >= 0 && (size_t) n <= lengthof(values));
	for (int i = 0; i < n; i++)
		values[i] = Int32GetDatum(columns[i]);
	return HeapTupleGetDatum(heap_form_tuple(cb_result_desc(fcinfo), values, nulls));
}

/*
 * pool_share(demand int default null): renew this session's pod lease,
 * record its demand (NULL = unbounded) and return its share.
 */
Datum
connbudget_pool_share(PG_FUNCTION_ARGS)
{
	int32		demand = CB_UNBOUNDED;
	CbShare		share;

	cb_require_preload();
	if (!PG_ARGISNULL(0))
	{
		demand = PG_GETARG_INT32(0);
		if (demand < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("demand must not be negative: %d", demand),
					 errhint("Pass the number of connections the pod could use, or NULL for no bound.")));
	}

	{
		bool		demoted;
		CbVerdict	verdict = cb_check_own_claim_quietly(&demoted);

		if (demoted)
			cb_request_reload();	/* the loader judges the role's other connections */
		cb_report_own_claim(verdict);
	}
	cb_pool_share(demand, &share);

	PG_RETURN_DATUM(cb_integer_row(fcinfo, (int32[]) {
		share.max_size, share.min_size, share.allocation, share.pods,
		share.budget, share.refresh_ms}, 6));
}

Datum
connbudget_read_budget(PG_FUNCTION_ARGS)
{
	CbBudgetRow row;

	cb_require_preload();
	cb_snapshot_budget(&row);

	PG_RETURN_DATUM(cb_integer_row(fcinfo, (int32[]) {
		row.max_connections, row.superuser_reserved, row.reserved_connections,
		row.extension_reserved, row.budget, row.governed, row.other, row.free,
		row.applications, row.pods}, 10));
}

Datum
connbudget_read_applications(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CbApplicationRow *rows;
	int			n;

	cb_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	n = cb_snapshot_applications(&rows);
	for (int i = 0; i < n; i++)
	{
		CbApplicationRow *row = &rows[i];
		Datum		values[9];
		bool		nulls[9] = {false};

		values[0] = CStringGetTextDatum(row->application_name);
		values[1] = Int32GetDatum(row->min_connections);
		values[2] = Int32GetDatum(row->max_connections);
		nulls[2] = row->max_connections == CB_UNBOUNDED;
		values[3] = Int32GetDatum(row->weight);
		values[4] = Int32GetDatum(row->allocation);
		values[5] = Int32GetDatum(row->connections);
		values[6] = Int32GetDatum(row->pods);
		values[7] = Int64GetDatum(row->demand);
		nulls[7] = row->demand == CB_UNBOUNDED;
		values[8] = Int64GetDatum(row->refused);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* client_addr as inet, like pg_stat_activity.client_addr */
static Datum
cb_inet_datum(const char *addr, bool *isnull)
{
	char		host[CB_ADDR_LEN];

	*isnull = addr[0] == '\0';
	if (*isnull)
		return (Datum) 0;
	/* inet has no room for an IPv6 zone ("fe80::1%eth0"): drop it */
	strlcpy(host, addr, sizeof(host));
	host[strcspn(host, "%")] = '\0';
	return DirectFunctionCall1(inet_in, CStringGetDatum(host));
}

/*
 * Where a pod connects from is shown as pg_stat_activity shows a backend's
 * client_addr: to the pod's own role (and roles with its privileges), to
 * members of pg_read_all_stats and to superusers.  So is the id of a pod
 * that gave none, which is that address.
 */
static bool
cb_may_see_pod(const char *owner)
{
	Oid			viewer = GetUserId();
	Oid			role;

	if (superuser() || has_privs_of_role(viewer, ROLE_PG_READ_ALL_STATS))
		return true;
	role = get_role_oid(owner, true);
	return OidIsValid(role) && has_privs_of_role(viewer, role);
}

Datum
connbudget_read_pods(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CbPodRow   *rows;
	int			n;

	cb_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	n = cb_snapshot_pods(&rows);
	for (int i = 0; i < n; i++)
	{
		CbPodRow   *row = &rows[i];
		Datum		values[9];
		bool		nulls[9] = {false};
		bool		may_see = cb_may_see_pod(row->owner);

		values[0] = CStringGetTextDatum(row->application_name);
		values[1] = CStringGetTextDatum(row->pod);
		nulls[1] = row->derived && row->client_addr[0] != '\0' && !may_see;
		values[2] = Int32GetDatum(row->connections);
		values[3] = Int32GetDatum(row->share);
		values[4] = Int32GetDatum(row->demand);
		nulls[4] = row->demand == CB_UNBOUNDED;
		if (may_see)
			values[5] = cb_inet_datum(row->client_addr, &nulls[5]);
		else
			nulls[5] = true;
		values[6] = TimestampTzGetDatum(row->first_seen);
		values[7] = TimestampTzGetDatum(row->last_seen);
		values[8] = TimestampTzGetDatum(row->lease_expires);
		nulls[8] = row->lease_expires == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
connbudget_read_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CbSlotsRow	rows[CB_SLOT_KINDS];

	cb_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	cb_snapshot_slots(rows);
	for (int i = 0; i < CB_SLOT_KINDS; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false};

		values[0] = CStringGetTextDatum(rows[i].kind);
		values[1] = Int32GetDatum(rows[i].used);
		values[2] = Int32GetDatum(rows[i].capacity);
		values[3] = BoolGetDatum(rows[i].consistent);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
