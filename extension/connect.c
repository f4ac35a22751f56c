/*-------------------------------------------------------------------------
 *
 * connect.c
 *	  The connect-time hook: work out which application and pod a new
 *	  connection belongs to, count it, and refuse it if its application is
 *	  over its limit.
 *
 * The hook runs in ClientAuthentication(), after the client proved who it
 * is and before the server answers AuthenticationOk.  At that point
 * PostgreSQL has not applied the client's options yet, so the hook reads
 * application_name and connbudget.pod from the startup packet itself,
 * with the same precedence PostgreSQL will use moments later.
 *
 * Order matters and follows the technique that makes admission exact:
 * register the exit callback first, then count the connection, then check
 * the counts (registry.c does the last two under one exclusive lock).  The
 * exit callback runs as late as an extension's can, so that a backend
 * still exiting is still counted.  A
 * connection that is refused, or that fails for any later reason, is
 * uncounted by the exit callback; no two connections can take the same
 * last slot.
 *
 * Before it is counted, a connection must be allowed to claim its
 * application at all: an application bound to roles
 * (application_limits.roles) takes only those roles and their members, so
 * that a login that may not claim it cannot take even a moment of its
 * budget (claim.c).  The claim is checked against limits of one
 * generation; if they change before the connection is counted, it is
 * checked again.  Inside the count, a live pod belongs to the role that
 * registered it, and a role holds at most connbudget.max_pods_per_role
 * pods; registry.c applies these checks in one place, for connects and for
 * the re-sorts that follow changes of limits and settings.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netdb.h>

#include "catalog/pg_authid.h"
#include "common/hashfn.h"
#include "common/ip.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "replication/walsender.h"
#include "lib/stringinfo.h"
#include "storage/ipc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "compat.h"
#include "connbudget.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/*
 * The value a startup option will have once PostgreSQL applies the
 * startup packet: command-line style options first ("-c name=value",
 * "--name=value", switches grouped the way getopt groups them), then the
 * packet's own name/value pairs, the last one winning.  Returns NULL if
 * the client did not set it.
 */
static const char *
cb_startup_option(Port *port, const char *name)
{
	char	  **av = NULL;
	int			ac = 0;
	const char **pairs;
	int			npairs = 0;
	ListCell   *cell;

	if (port->cmdline_options != NULL)
	{
		/* split as PostgreSQL will split them (it mangles what it splits) */
		char	   *options = pstrdup(port->cmdline_options);

		av = palloc((2 + (strlen(options) + 1) / 2) * sizeof(char *));
		pg_split_opts(av, &ac, options);
	}
	pairs = palloc((list_length(port->guc_options) + 1) * sizeof(char *));
	foreach(cell, port->guc_options)
		pairs[npairs++] = lfirst(cell);
	return cb_option_value(av, ac, pairs, npairs / 2, name);
}

/* A pod id or pool session that is not acceptable refuses the connection. */
static void
cb_check_id(const char *setting, const char *value)
{
	char		why[160];

	if (!cb_id_is_valid(value, why, sizeof(why)))
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for parameter \"%s\"", setting),
				 errdetail_internal("%s", why)));
}

/*
 * Work out the connection's identity (docs/identity-and-arithmetic.md).
 */
static void
cb_identify(Port *port, CbIdentity *id)
{
	const char *pod = cb_startup_option(port, "connbudget.pod");
	const char *pool_session = cb_startup_option(port, "connbudget.pool_session");

	memset(id, 0, sizeof(CbIdentity));
	/* compared the way pg_stat_activity shows them (identity.c) */
	cb_clean_name(cb_startup_option(port, "application_name"), CB_APPNAME_ESCAPES_BYTES,
				  id->application_name);

	if (port->raddr.addr.ss_family != AF_UNIX)
	{
		char		host[NI_MAXHOST];

		if (pg_getnameinfo_all(&port->raddr.addr, port->raddr.salen,
							   host, sizeof(host), NULL, 0,
							   NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			strlcpy(id->client_addr, host, CB_ADDR_LEN);
	}

	if (pool_session != NULL && pool_session[0] != '\0')
	{
		cb_check_id("connbudget.pool_session", pool_session);
		id->session_token = hash_bytes_extended((const unsigned char *) pool_session,
												(int) strlen(pool_session), 0);
		if (id->session_token == 0)
			id->session_token = 1;	/* 0 is the pod's anonymous session */
	}

	if (port->user_name != NULL)
		strlcpy(id->user_name, port->user_name, CB_NAME_LEN);

	if (pod != NULL && pod[0] != '\0')
	{
		cb_check_id("connbudget.pod", pod);
		strlcpy(id->pod, pod, CB_NAME_LEN);
		id->explicit_pod = true;
	}
	else if (id->client_addr[0] != '\0')
		strlcpy(id->pod, id->client_addr, CB_NAME_LEN);
	else
		strlcpy(id->pod, "local", CB_NAME_LEN);
}

/* Superusers are never refused: looked up once per connection, before the lock. */
static bool
cb_is_superuser(const char *user_name)
{
	HeapTuple	tuple;
	bool		result;

	if (user_name == NULL)
		return false;
	tuple = SearchSysCache1(AUTHNAME, PointerGetDatum(user_name));
	if (!HeapTupleIsValid(tuple))
		return false;
	result = ((Form_pg_authid) GETSTRUCT(tuple))->rolsuper;
	ReleaseSysCache(tuple);
	return result;
}

static void
cb_on_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	cb_backend_detach();
}

/* The roles an application is bound to, as a reader would quote them. */
static char *
cb_role_list(const CbBinding *binding)
{
	StringInfoData list;

	initStringInfo(&list);
	for (int i = 0; i < binding->nroles; i++)
		appendStringInfo(&list, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(binding->roles[i]));
	return list.data;
}

static void
cb_report_claim(int elevel, const CbIdentity *id, const CbBinding *binding)
{
	ereport(elevel,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not connect as application \"%s\"",
					id->user_name, id->application_name),
			 errdetail("connbudget.application_limits allows application \"%s\" only to the roles %s and their members.",
					   id->application_name, cb_role_list(binding)),
			 errhint("Connect as one of those roles, or add this role to the application's roles in connbudget.application_limits.")));
}

static void
cb_report_unconfigured(int elevel, const CbIdentity *id)
{
	ereport(elevel,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("application \"%s\" has no row in connbudget.application_limits",
					id->application_name),
			 errdetail("connbudget.unconfigured_applications is \"refuse\": only configured applications may give a connbudget.pod."),
			 errhint("Add the application to connbudget.application_limits, or connect without connbudget.pod.")));
}

/* A pod that is not this role's, or one pod too many for the role. */
static void
cb_report_pod(int elevel, const CbIdentity *id, const CbAdmission *admission)
{
	if (admission->verdict == CB_NOT_OWNER)
		ereport(elevel,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("pod \"%s\" of application \"%s\" belongs to role \"%s\"",
						id->pod, id->application_name, admission->pod_owner),
				 errdetail("A live pod belongs to the role that registered it; role \"%s\" cannot connect to it or report for it.",
						   id->user_name),
				 errhint("Give this connection a pod id of its own with connbudget.pod.")));
	else if (admission->role_sessions)
		ereport(elevel,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" already holds %d live pool sessions", id->user_name,
						admission->role_pods),
				 errdetail("connbudget.max_pods_per_role (%d) bounds a role's pods and their pool sessions together; a new pool session of pod \"%s\" of application \"%s\" would be one more.",
						   admission->role_limit, id->pod, id->application_name),
				 errhint("Let pools of one process share a pool session, or raise connbudget.max_pods_per_role.")));
	else
		ereport(elevel,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" already holds %d live pods", id->user_name,
						admission->role_pods),
				 errdetail("connbudget.max_pods_per_role is %d; pod \"%s\" of application \"%s\" would be one more.",
						   admission->role_limit, id->pod, id->application_name),
				 errhint("End pods this role no longer needs, or raise connbudget.max_pods_per_role.")));
}

/*
 * Report a connection that found the pod table full: FATAL when enforcing,
 * a log line otherwise (the connection is then counted as "other").
 */
static void
cb_report_no_room(int elevel, const CbIdentity *id, const CbAdmission *admission)
{
	ereport(elevel,
			(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("connbudget cannot register pod \"%s\" of application \"%s\": all %d pod slots are taken",
					id->pod, id->application_name, admission->capacity),
			 errdetail("connbudget.max_pods (%d) pods are live, or their pool sessions fill the %d session slots.",
					   admission->capacity, admission->capacity * 2),
			 errhint("Raise connbudget.max_pods (it takes a restart), or give fewer distinct pod ids.")));
}

/*
 * A 53300 refusal says at what pace to retry, so that a pool refused
 * before it ever read its share retries at the server's pace and not at a
 * guess: for a reader, at the end of the hint; for a program, in the
 * error's context field, as "connbudget: retry_ms=N lease_ms=M"
 * (docs/protocol.md: a refused connect keeps its pod's claim for M ms),
 * which every driver hands over as it is (libpq's message, JDBC's
 * getWhere(), node-postgres' where, Go's Where).
 */
static int
cb_refusal_hint(const char *advice)
{
	errcontext("connbudget: retry_ms=%d lease_ms=%d protocol=%d", cb_refresh_interval_ms,
			   cb_pod_ttl_ms, CB_PROTOCOL_VERSION);
	return errhint("%s Pools re-read their share every %d ms (connbudget.refresh_interval).",
				   advice, cb_refresh_interval_ms);
}

/* A connection over a limit: counted, then checked. */
static void
cb_report_over_limit(int elevel, const CbIdentity *id, const CbAdmission *admission)
{
	const CbAdmissionCounts *a = &admission->counts;

	switch (admission->verdict)
	{
		case CB_OVER_CAP:
			ereport(elevel,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("too many connections for application \"%s\"",
							id->application_name),
					 errdetail("Application \"%s\" holds %d connections and its limit is %d (connbudget.application_limits.max_connections); pod \"%s\".",
							   id->application_name, a->connections - 1,
							   a->cap, id->pod),
					 cb_refusal_hint("Shrink the pools of this application, or raise its max_connections in connbudget.application_limits.")));
			break;
		case CB_OVER_UNCONFIGURED_CAP:
			ereport(elevel,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("too many connections for applications without limits: application \"%s\" cannot open another connection",
							id->application_name),
					 errdetail("Applications without a row in connbudget.application_limits hold %d connections together and their limit is %d (connbudget.unconfigured_max_connections); pod \"%s\".",
							   a->unconfigured_connections - 1, a->unconfigured_cap, id->pod),
					 cb_refusal_hint("Add the application to connbudget.application_limits, or raise connbudget.unconfigured_max_connections.")));
			break;
		case CB_OVER_BUDGET:
			ereport(elevel,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("connection budget exhausted: application \"%s\" cannot open another connection",
							id->application_name),
					 errdetail("Governed connections already fill the budget: %d of %d in use; application \"%s\" holds %d; pod \"%s\".",
							   a->governed - 1, a->budget, id->application_name,
							   a->connections - 1, id->pod),
					 cb_refusal_hint("Pools should size themselves with connbudget.pool_share(); see the connbudget.pods view.")));
			break;
		case CB_OVER_MINIMUMS:
			ereport(elevel,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("connection for application \"%s\" would take another application's guaranteed minimum",
							id->application_name),
					 errdetail("Governed connections plus other applications' unused min_connections would be %d, and the budget is %d; application \"%s\" holds %d; pod \"%s\".",
							   a->committed, a->budget, id->application_name,
							   a->connections - 1, id->pod),
					 cb_refusal_hint("Pools should size themselves with connbudget.pool_share(); see the connbudget.applications view.")));
			break;
		default:
			break;
	}
}

/*
 * Report a verdict other than CB_ADMIT: FATAL when enforcing, a log line
 * when only warning.
 */
static void
cb_report(int elevel, const CbIdentity *id, const CbAdmission *admission,
		  const CbBinding *binding)
{
	switch (admission->verdict)
	{
		case CB_OVER_CAP:
		case CB_OVER_UNCONFIGURED_CAP:
		case CB_OVER_BUDGET:
		case CB_OVER_MINIMUMS:
			cb_report_over_limit(elevel, id, admission);
			break;
		case CB_CLAIM_REFUSED:
			cb_report_claim(elevel, id, binding);
			break;
		case CB_UNCONFIGURED_REFUSED:
			cb_report_unconfigured(elevel, id);
			break;
		case CB_NOT_OWNER:
		case CB_ROLE_FULL:
			cb_report_pod(elevel, id, admission);
			break;
		case CB_NO_ROOM:
			cb_report_no_room(elevel, id, admission);
			break;
		case CB_ADMIT:
			break;
	}
}

/* Was the connection refused before it was counted where it asked to be? */
static bool
cb_refused_placing(CbVerdict verdict)
{
	return verdict == CB_NOT_OWNER || verdict == CB_ROLE_FULL ||
		verdict == CB_CLAIM_REFUSED || verdict == CB_UNCONFIGURED_REFUSED;
}

static void
cb_client_auth(Port *port, int status)
{
	CbIdentity	id;
	CbAdmission admission;
	CbBinding	binding;
	CbEnforce	enforce = (CbEnforce) cb_enforce;
	int			elevel = enforce == CB_ENFORCE_ON ? FATAL : WARNING;

	if (prev_client_auth_hook)
		prev_client_auth_hook(port, status);

	/* failed logins and replication connections are not ours to count */
	if (status != STATUS_OK || am_walsender || !cb_shmem_attached())
		return;

	cb_identify(port, &id);
	id.superuser = cb_is_superuser(port->user_name);

	/* right after a restart, limits must be in force before we admit */
	if (enforce != CB_ENFORCE_OFF && !cb_wait_for_limits(CB_LIMITS_WAIT_MS))
		ereport(WARNING,
				(errmsg("connbudget: application limits are not loaded yet; admitting \"%s\" without checking them",
						id.application_name)));

	/*
	 * A backend counts until it is as good as gone: its exit callback runs
	 * among the last ones (on_shmem_exit callbacks run in the reverse order
	 * of registration, and PostgreSQL registered its own before
	 * authentication), after transaction abort and temporary relations are
	 * cleaned up, just before the backend leaves pg_stat_activity and gives
	 * back its PGPROC.  So no new connection takes its slot while it is
	 * still there to be seen.
	 */
	on_shmem_exit(cb_on_exit, (Datum) 0);
	cb_watch_memberships();

	/*
	 * May this role claim the application at all?  Checked before counting,
	 * and again if the limits changed before the connection was counted.
	 * Superusers are counted and never refused.
	 */
	for (;;)
	{
		bool		claim_ok;
		bool		lenient = false;

		cb_application_binding(id.application_name, &binding);
		claim_ok = !binding.configured ||
			cb_role_may_claim(id.user_name, binding.nroles,
							  (const char (*)[CB_NAME_LEN]) binding.roles);
		if (!claim_ok && enforce != CB_ENFORCE_OFF && !id.superuser)
		{
			cb_claim_refused(id.application_name);
			cb_report_claim(elevel, &id, &binding);
			lenient = true;		/* under warn: let in, said once */
		}
		cb_backend_attach(&id, &binding, claim_ok, enforce, lenient, &admission);
		if (admission.stale)
			continue;
		if (cb_refused_placing(admission.verdict))
		{
			/* under warn, let in after all */
			cb_report(elevel, &id, &admission, &binding);
			cb_backend_attach(&id, &binding, claim_ok, enforce, true, &admission);
			if (admission.stale)
				continue;
		}
		break;
	}
	/*
	 * Never silently "other" for want of room; over a limit: recorded, and
	 * under "on" no longer counted.
	 */
	if (admission.verdict != CB_ADMIT && !(admission.verdict == CB_NO_ROOM && id.superuser))
		cb_report(elevel, &id, &admission, &binding);
}

void
cb_install_connect_hook(void)
{
	prev_client_auth_hook = ClientAuthentication_hook;
	ClientAuthentication_hook = cb_client_auth;
}
