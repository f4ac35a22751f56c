/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The two background workers of connbudget: the allocator, which
 *	  computes and publishes every pod's share, and the limits loader,
 *	  which puts connbudget.application_limits in force at server start.
 *
 * The allocator needs only shared memory, so it runs from postmaster start
 * on every server, whatever the state of any database.  It is the one
 * process that recomputes the allocation (share.c, "The publication
 * model"): woken by a latch when an input changes, at most once per publish
 * period, and when a lease ends.  It also publishes the sighup settings
 * after every configuration reload, so that every backend shares the
 * budget with the same values.
 *
 * The loader is, like pg_cron's launcher, tied to one database,
 * connbudget.database, because that is where the limits table is
 * authoritative.  It loads the table as soon as the server accepts
 * connections; the connect hook waits for that (at most CB_LIMITS_WAIT_MS),
 * so limits are in force from the very first connection after a restart.
 * If it cannot load them (the database does not exist, say), its exit
 * callback says so and connections are admitted unchecked instead of
 * waiting; it is then restarted every bgw_restart_time seconds.  Afterwards
 * it re-reads the table when asked and every CB_WORKER_RELOAD_MS.  On a hot
 * standby, where the table changes by replay and no trigger fires, it
 * follows replay: four times per refresh interval it looks whether replay
 * has moved on, and re-reads the table if it has, so that a change
 * committed on the primary is in force here within two refresh intervals.
 * After a promotion it goes back to the primary's way at once.
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
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "connbudget.h"

PGDLLEXPORT void connbudget_allocator_main(Datum main_arg);
PGDLLEXPORT void connbudget_worker_main(Datum main_arg);

static void
cb_register(const char *function, const char *name, BgWorkerStartTime start,
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
	strlcpy(worker.bgw_type, "connbudget", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

void
cb_register_workers(void)
{
	cb_register("connbudget_allocator_main", "connbudget allocator",
				BgWorkerStart_PostmasterStart, BGWORKER_SHMEM_ACCESS, 1);
	cb_register("connbudget_worker_main", "connbudget limits loader",
				BgWorkerStart_ConsistentState,
				BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION, 10);
}

/* ---------------------------------------------------------------------
 * The allocator
 * ---------------------------------------------------------------------
 */

static void
cb_allocator_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	cb_allocator_detach();
}

void
connbudget_allocator_main(Datum main_arg pg_attribute_unused())
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(cb_allocator_exit, (Datum) 0);
	cb_publish_settings();
	cb_allocator_attach(MyLatch);

	for (;;)
	{
		long		wait_ms;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			cb_publish_settings();
		}

		wait_ms = cb_allocator_cycle();
		if (wait_ms < 0)
			/* the rest of the publish period: latches set meanwhile stay set */
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 -wait_ms, PG_WAIT_EXTENSION);
		else if (wait_ms > 0)
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
	}
}

/* ---------------------------------------------------------------------
 * The limits loader
 * ---------------------------------------------------------------------
 */

static void
cb_worker_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	cb_set_loader_latch(NULL);
	if (cb_limits_state() == CB_LIMITS_LOADING)
		cb_set_limits_state(CB_LIMITS_FAILED);
}

/*
 * Load the limits once.  A table that cannot be trusted or read, or rows
 * that cannot be put in force, are said in the log once, when that first
 * happens, and once more when it is mended; the limits in force are then
 * those of a missing table (or without those rows).
 */
static void
cb_worker_load(void)
{
	static char *said = NULL;
	const char *why = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "loading connbudget.application_limits");
	/* memberships changed: invalidations arrived as the transaction started */
	cb_reload_limits(cb_take_memberships_changed(), &why);
	if (why != NULL && (said == NULL || strcmp(said, why) != 0))
	{
		ereport(WARNING,
				(errmsg("connbudget limits loader: connbudget.application_limits of database \"%s\" is not put in force as it is: %s",
						cb_database, why),
				 errdetail("Applications without a row in force are unconfigured until this is mended."),
				 errhint("Reinstall the extension, or restore the table as the extension created it.")));
		if (said)
			pfree(said);
		said = MemoryContextStrdup(TopMemoryContext, why);
	}
	else if (why == NULL && said != NULL)
	{
		ereport(LOG,
				(errmsg("connbudget limits loader: connbudget.application_limits of database \"%s\" is read as it is again",
						cb_database)));
		pfree(said);
		said = NULL;
	}
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

	cb_set_loader_latch(MyLatch);

	BackgroundWorkerInitializeConnection(cb_database, NULL, 0);
	cb_watch_memberships();

	for (;;)
	{
		uint64		replayed = cb_replay_position();
		TimestampTz loaded_at = GetCurrentTimestamp();

		cb_worker_load();

		for (;;)
		{
			bool		standby = replayed != 0;
			long		wait_ms = standby ? Max(10, cb_refresh_interval_ms / 4)
				: CB_WORKER_RELOAD_MS;

			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(wait_ms, CB_WORKER_RELOAD_MS), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();

			if (ConfigReloadPending)
			{
				/* pg_reload_conf() re-reads the limits too, as it always has */
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
				(void) cb_take_reload_request();
				break;
			}
			/* asked, replay moved on, promoted, or it is time anyway */
			if (cb_take_reload_request() || cb_replay_position() != replayed ||
				TimestampDifferenceExceeds(loaded_at, GetCurrentTimestamp(),
										   CB_WORKER_RELOAD_MS))
				break;
		}
	}
}
