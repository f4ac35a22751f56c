/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The connbudget.* settings.
 *
 * All but connbudget.pod and connbudget.pool_session, the connection's
 * identity, are server-wide.  The two settings of the protocol,
 * connbudget.demand and connbudget.share, are defined with what they do
 * (share.c).  connbudget.pod is set by a
 * client in its startup packet (options='-c connbudget.pod=...') and is
 * fixed for the life of the connection; the connect hook reads it from the
 * startup packet itself, because the hook runs before PostgreSQL applies
 * client options, and both apply the same validity rule.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "postmaster/postmaster.h"
#include "utils/guc.h"

#include "connbudget.h"

int			cb_reserved_connections = 0;
int			cb_enforce = CB_ENFORCE_ON;
char	   *cb_database = NULL;
int			cb_pod_ttl_ms = 3000;
int			cb_refresh_interval_ms = 1000;
int			cb_max_pods = CB_DEFAULT_MAX_PODS;
int			cb_max_pods_per_role = 1000;
int			cb_unconfigured_applications = CB_UNCONFIGURED_GOVERN;
int			cb_unconfigured_max_connections = -1;
char	   *cb_pod = NULL;
char	   *cb_pool_session = NULL;

static const struct config_enum_entry cb_enforce_options[] = {
	{"off", CB_ENFORCE_OFF, false},
	{"warn", CB_ENFORCE_WARN, false},
	{"on", CB_ENFORCE_ON, false},
	{"false", CB_ENFORCE_OFF, true},
	{"true", CB_ENFORCE_ON, true},
	{"no", CB_ENFORCE_OFF, true},
	{"yes", CB_ENFORCE_ON, true},
	{NULL, 0, false}
};

static const struct config_enum_entry cb_unconfigured_options[] = {
	{"govern", CB_UNCONFIGURED_GOVERN, false},
	{"refuse", CB_UNCONFIGURED_REFUSE, false},
	{"other", CB_UNCONFIGURED_OTHER, false},
	{NULL, 0, false}
};

static bool
cb_check_pod(char **newval, void **extra pg_attribute_unused(),
			 GucSource source pg_attribute_unused())
{
	char		why[160];

	/* empty means "not given": the pod is the client's address */
	if (*newval == NULL || **newval == '\0')
		return true;
	if (!cb_id_is_valid(*newval, why, sizeof(why)))
	{
		GUC_check_errdetail("%s", why);
		return false;
	}
	return true;
}

/*
 * Define the settings.  Called from _PG_init when the library is being
 * preloaded, which then reserves the prefix so that a misspelt
 * connbudget.* setting is reported rather than silently ignored.
 */
void
cb_define_gucs(void)
{
	DefineCustomIntVariable("connbudget.reserved_connections",
							"Connection slots held back from the budget for administration and batch work.",
							"They come on top of superuser_reserved_connections (and, from PostgreSQL 16, "
							"reserved_connections). Connections that are not governed by connbudget use them first.",
							&cb_reserved_connections,
							0, 0, MAX_BACKENDS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("connbudget.enforce",
							 "Whether connections beyond an application's limit are refused at connect time.",
							 "on refuses them, warn only logs them, off does neither.",
							 &cb_enforce,
							 CB_ENFORCE_ON, cb_enforce_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("connbudget.database",
							   "Database whose connbudget.application_limits table is authoritative.",
							   "The background worker loads the limits from this database at startup.",
							   &cb_database,
							   "postgres",
							   PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("connbudget.pod_ttl",
							"How long a pod without connections stays live after its last pool_share() call.",
							NULL,
							&cb_pod_ttl_ms,
							3000, 100, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("connbudget.refresh_interval",
							"How often pools are told to re-read their share with pool_share().",
							NULL,
							&cb_refresh_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("connbudget.max_pods",
							"Most pods connbudget keeps track of at once.",
							"Sizes the pod table in shared memory (about 740 bytes per pod, and twice as many pool "
							"sessions); it does not depend on max_connections. A new pod beyond it is refused.",
							&cb_max_pods,
							CB_DEFAULT_MAX_PODS, 16, CB_MAX_MAX_PODS,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("connbudget.max_pods_per_role",
							"Most live pods one role may hold.",
							"A connection that would register one more pod of the role is refused, so that no "
							"login can fill the pod table. Superusers are not bound by it.",
							&cb_max_pods_per_role,
							1000, 1, CB_MAX_MAX_PODS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("connbudget.unconfigured_applications",
							 "What connections of applications without a row in connbudget.application_limits are.",
							 "govern counts those that give a pod against default limits, and all such applications "
							 "together within connbudget.unconfigured_max_connections; refuse refuses those that "
							 "give a pod; other counts them all as \"other\" connections.",
							 &cb_unconfigured_applications,
							 CB_UNCONFIGURED_GOVERN, cb_unconfigured_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("connbudget.unconfigured_max_connections",
							"Most connections all applications without a row in connbudget.application_limits may hold together.",
							"Their allocations together are bounded the same way. -1 means no limit beyond the budget.",
							&cb_unconfigured_max_connections,
							-1, -1, MAX_BACKENDS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("connbudget.pod",
							   "The pod (application instance) this connection belongs to.",
							   "Set at connect time, e.g. options='-c connbudget.pod=web-7f9c'. "
							   "Without it, the pod is the client's IP address, or \"local\" for a Unix socket.",
							   &cb_pod,
							   "",
							   PGC_BACKEND, GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   cb_check_pod, NULL, NULL);

	DefineCustomStringVariable("connbudget.pool_session",
							   "The client pool this connection belongs to, within its pod.",
							   "Set at connect time by a pool, e.g. options='-c connbudget.pool_session=4f2a9c01'. "
							   "Pools of one pod with different pool sessions split the pod's share.",
							   &cb_pool_session,
							   "",
							   PGC_BACKEND, GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   cb_check_pod, NULL, NULL);

}
