/*-------------------------------------------------------------------------
 *
 * guards.c
 *	  Statements connbudget looks at before PostgreSQL runs them: changes
 *	  of the limits on a hot standby, CREATE and ALTER EXTENSION into a
 *	  schema a non-superuser owns, and statements that lock the extension's
 *	  relations before they check privileges.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "compat.h"
#include "connbudget.h"

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

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

/* ---------------------------------------------------------------------
 * The extension's schema and relations
 * ---------------------------------------------------------------------
 */

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

/* ---------------------------------------------------------------------
 * The hooks
 * ---------------------------------------------------------------------
 */

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
cb_install_guards(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = cb_executor_start;
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = cb_process_utility;
}
