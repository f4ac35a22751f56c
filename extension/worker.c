/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background worker that puts application limits in force at
 *	  server start and keeps them and the sighup settings published.
 *
 * Like pg_cron's launcher it is tied to one database, connbudget.database,
 * because that is where connbudget.application_limits is authoritative.
 * It loads the table as soon as the server accepts connections; the
 * connect hook waits for that (at most CB_LIMITS_WAIT_MS), so limits are
 * in force from the very first connection after a restart.  If it cannot
 * load them (the database does not exist, say), its exit callback says so
 * and connections are admitted unchecked instead of waiting; it is then
 * restarted every bgw_restart_time seconds.
 *
 * Afterwards it re-reads the table when asked and every
 * CB_WORKER_RELOAD_MS, and republishes connbudget.reserved_connections,
 * pod_ttl and refresh_interval after every configuration reload so that
 * all backends share the budget with the same values.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "connbudget.h"

PGDLLEXPORT void connbudget_worker_main(Datum main_arg);

void
cb_register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 10;
	strlcpy(worker.bgw_library_name, "connbudget", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "connbudget_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "connbudget limits loader", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "connbudget", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

static void
cb_worker_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	cb_set_worker_latch(NULL);
	if (cb_limits_state() == CB_LIMITS_LOADING)
		cb_set_limits_state(CB_LIMITS_FAILED);
}

static void
cb_worker_load(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "loading connbudget.application_limits");
	cb_reload_limits();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
connbudget_worker_main(Datum main_arg pg_attribute_unused())
{
	before_shmem_exit(cb_worker_exit, (Datum) 0);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	cb_set_worker_latch(MyLatch);
	cb_publish_settings();

	BackgroundWorkerInitializeConnection(cb_database, NULL, 0);

	for (;;)
	{
		cb_worker_load();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 CB_WORKER_RELOAD_MS,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			cb_publish_settings();
		}
		(void) cb_take_reload_request();
	}
}
