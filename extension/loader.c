/*-------------------------------------------------------------------------
 *
 * loader.c
 *	  The limits loader: the background worker that puts
 *	  connbudget.application_limits in force (limits.c) at server start,
 *	  when asked, and as replay changes it on a standby.
 *
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
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
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

#include "compat.h"
#include "state.h"

PGDLLEXPORT void connbudget_loader_main(Datum main_arg);

/* ---------------------------------------------------------------------
 * Asking the loader to read the table again
 * ---------------------------------------------------------------------
 */

void
cb_set_loader_latch(Latch *latch)
{
	pg_atomic_write_u64(&cb_shared->loader_latch, (uint64) (uintptr_t) latch);
}

/* Ask the loader to re-read the limits table soon. */
void
cb_request_reload(void)
{
	Latch	   *latch;

	pg_atomic_write_u32(&cb_shared->reload_requested, 1);
	latch = (Latch *) (uintptr_t) pg_atomic_read_u64(&cb_shared->loader_latch);
	if (latch)
		SetLatch(latch);
}

bool
cb_take_reload_request(void)
{
	return pg_atomic_exchange_u32(&cb_shared->reload_requested, 0) != 0;
}

/* Where replay has got to on a standby: the worker re-reads when it moves. */
uint64
cb_replay_position(void)
{
	return RecoveryInProgress() ? (uint64) GetXLogReplayRecPtr(NULL) : 0;
}

/* ---------------------------------------------------------------------
 * The loader
 * ---------------------------------------------------------------------
 */

static void
cb_loader_exit(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
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
cb_loader_load(void)
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
connbudget_loader_main(Datum main_arg pg_attribute_unused())
{
	before_shmem_exit(cb_loader_exit, (Datum) 0);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);		/* while loading; see below */
	BackgroundWorkerUnblockSignals();

	/*
	 * A worker ignores SIGHUP from its fork until the handler above is set,
	 * so a reload signalled in between would be lost until the next one:
	 * read the configuration files once now.
	 */
	ProcessConfigFile(PGC_SIGHUP);

	cb_set_loader_latch(MyLatch);

	BackgroundWorkerInitializeConnection(cb_database, NULL, 0);
	cb_watch_memberships();

	for (;;)
	{
		uint64		replayed = cb_replay_position();
		TimestampTz loaded_at = GetCurrentTimestamp();

		/*
		 * Loading may wait for a lock: a shutdown then ends it at once (with
		 * the FATAL of an interrupted worker).  Waiting between loads, it
		 * ends the loop: exit 0, and nothing in the log.
		 */
		pqsignal(SIGTERM, die);
		if (ShutdownRequestPending)
			proc_exit(0);
		cb_loader_load();
		pqsignal(SIGTERM, SignalHandlerForShutdownRequest);

		for (;;)
		{
			bool		standby = replayed != 0;
			long		wait_ms = standby ? Max(10, cb_refresh_interval_ms / 4)
				: CB_WORKER_RELOAD_MS;

			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(wait_ms, CB_WORKER_RELOAD_MS), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			if (cb_worker_interrupts())
			{
				/* pg_reload_conf() re-reads the limits too, as it always has */
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
