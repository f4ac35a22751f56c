/*-------------------------------------------------------------------------
 *
 * budget.c
 *	  The budget arithmetic on the server's side: what is shared, from the
 *	  server's settings and the connections that are open.
 *
 *	  budget = max(0, max_connections - superuser_reserved_connections
 *					  - reserved_connections (PostgreSQL 16+)
 *					  - connbudget.reserved_connections)
 *
 * and "other" connections beyond the reserve they may use are taken off
 * it, so that pools shrink rather than connects fail.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "compat.h"
#include "state.h"

/* connbudget.reserved_connections as all backends use it. */
int32
cb_extension_reserved(void)
{
	return cb_shared ? cb_shared->extension_reserved : cb_reserved_connections;
}

/*
 * The budget as configured: max_connections minus every reserve.
 */
int32
cb_configured_budget(void)
{
	int32		reserve = CB_SUPERUSER_RESERVED() + CB_SERVER_RESERVED();

	return Max(0, MaxConnections - reserve - cb_extension_reserved());
}

/*
 * The budget that is shared right now: the configured budget minus what
 * "other" connections use beyond the reserve they may use (reserved
 * connections of the server and of connbudget; superuser_reserved_connections
 * stays for superusers).  Pools shrink rather than connects failing.
 */
int32
cb_effective_budget_locked(void)
{
	int32		reserve = CB_SERVER_RESERVED() + cb_shared->extension_reserved;
	int32		overflow = Max(0, cb_shared->other - reserve);

	return Max(0, cb_configured_budget() - overflow);
}
