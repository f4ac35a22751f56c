/*-------------------------------------------------------------------------
 *
 * connbudget.c
 *	  Entry point of the connbudget extension: connection budgets, fair
 *	  per-pod pool sizes and per-application connection limits.
 *
 * connbudget must be loaded with shared_preload_libraries: it needs shared
 * memory, a connect-time hook and two background workers.  When it is loaded
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
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "connbudget.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Register a background worker of this library.  Its name and type are
 * what it is, as the log, pg_stat_activity.backend_type and ps show it.
 */
static void
cb_register_worker(const char *function, const char *name, BgWorkerStartTime start,
				   int flags, int restart_s)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = flags;
	worker.bgw_start_time = start;
	worker.bgw_restart_time = restart_s;
	strlcpy(worker.bgw_library_name, "connbudget", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, name, BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * What a worker of this library does whenever its latch wakes it: serve
 * interrupts, exit cleanly on shutdown (exit 0, no FATAL in the log), and
 * re-read the configuration on SIGHUP.  Returns whether it did that.
 */
bool
cb_worker_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ShutdownRequestPending)
		proc_exit(0);
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	cb_define_gucs();
	cb_define_protocol_settings();
	MarkGUCPrefixReserved("connbudget");

	/* pg_upgrade's server must not wait for limits or refuse anybody */
	if (IsBinaryUpgrade)
		return;

	cb_shmem_request();
	cb_install_connect_hook();
	cb_install_guards();

	/* the allocator needs only shared memory: from postmaster start */
	cb_register_worker("connbudget_allocator_main", "connbudget allocator",
					   BgWorkerStart_PostmasterStart, BGWORKER_SHMEM_ACCESS, 1);
	/* the loader reads a table of connbudget.database */
	cb_register_worker("connbudget_loader_main", "connbudget limits loader",
					   BgWorkerStart_ConsistentState,
					   BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION, 10);
}
