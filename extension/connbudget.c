/*-------------------------------------------------------------------------
 *
 * connbudget.c
 *	  Entry point of the connbudget extension: connection budgets, fair
 *	  per-pod pool sizes and per-application connection limits.
 *
 * connbudget must be loaded with shared_preload_libraries: it needs shared
 * memory, a connect-time hook and a background worker.  When it is loaded
 * any other way (CREATE EXTENSION on a server without the preload), the
 * SQL objects can still be created, and every view and function raises an
 * error naming shared_preload_libraries.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "connbudget.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	cb_define_gucs();

	/* pg_upgrade's server must not wait for limits or refuse anybody */
	if (IsBinaryUpgrade)
		return;

	cb_shmem_request();
	cb_install_connect_hook();
	cb_install_standby_hooks();
	cb_register_workers();
}
