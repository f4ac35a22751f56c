/*
 * restart.c -- limits are in force from the first connection after a
 * restart, a crash restart starts counting afresh, a worker that cannot
 * load limits does not hold connections up, and the workers, named as what
 * they are, end a clean shutdown without a FATAL.
 *
 * cluster: max_connections=50 superuser_reserved_connections=3
 */
#include <stdbool.h>

#include "../lib/pgtest.h"

static PGconn *
connect_as_app(const char *app, char *sqlstate)
{
	char		name[128];
	char		msg[2048];

	snprintf(name, sizeof(name), "application_name=%s", app);
	return pg_connect_ex(sqlstate, msg, sizeof(msg), name, "user=app",
						 (const char *) NULL);
}

static void
test_first_connection_after_restart(void)
{
	for (int round = 1; round <= 3; round++)
	{
		char		st[6];
		PGconn	   *conn;
		PGconn	   *second;

		double		deadline;

		/*
		 * Restart without waiting, and knock until the server answers: the
		 * first connection it accepts arrives while the worker may still
		 * be loading the limits.
		 */
		if (cluster_ctl("-W restart") != 0)
			bail_out("pg_ctl restart failed");
		deadline = now_seconds() + 60;
		for (;;)
		{
			conn = connect_as_app("blocked", st);
			/* no answer yet: not listening, or "starting up" (57P03) */
			if (conn != NULL || (st[0] != '\0' && strcmp(st, "57P03") != 0))
				break;
			if (now_seconds() > deadline)
				bail_out("the server did not come back");
			sleep_ms(2);
		}
		ok(conn == NULL && strcmp(st, "53300") == 0,
		   "restart %d: the first connection after the restart is governed (cap 0 refuses it, got '%s')",
		   round, st);
		PQfinish(conn);

		conn = connect_as_app("single", st);
		second = connect_as_app("single", st);
		ok(conn != NULL && second == NULL && strcmp(st, "53300") == 0,
		   "restart %d: cap 1 admits one connection and refuses the second", round);
		PQfinish(second);
		PQfinish(conn);
	}
}

static void
test_counters_after_restart(PGconn **admin)
{
	long		log_from;

	is_str(pg_value(*admin, "SELECT string_agg(backend_type, ', ') FROM pg_stat_activity "
					"WHERE backend_type LIKE 'connbudget%'"),
		   "connbudget limits loader", "the limits loader is named as what it is");
	/* the allocator has no database, so pg_stat_activity does not list it */
	ok(postmaster_child("postgres: connbudget allocator") > 0,
	   "and so is the allocator, in the process list");
	PQfinish(*admin);
	log_from = server_log_size();
	if (cluster_ctl("restart") != 0)
		bail_out("pg_ctl restart failed");
	ok(!server_log_contains(log_from, "FATAL:  terminating background worker \"connbudget"),
	   "a clean shutdown ends them without a FATAL in the log");
	*admin = pg_connect_or_bail("application_name=admin");
	is_int(pg_long(*admin, "SELECT coalesce(sum(refused), 0) FROM connbudget.applications"), 0,
		   "refusal counters start from zero after a restart");
	is_int(pg_long(*admin, "SELECT count(*) FROM connbudget.application_limits"), 2,
		   "the limits survive the restart");
	is_int(pg_long(*admin, "SELECT count(*) FROM connbudget.applications "
				   "WHERE max_connections IS NOT NULL"), 2,
		   "and are in force");
}

static void
test_crash_restart(PGconn **admin)
{
	char		st[6];
	PGconn	   *victim = connect_as_app("single", st);
	pid_t		pid;
	double		deadline;
	PGconn	   *conn = NULL;

	if (victim == NULL)
		bail_out("cannot connect the victim");
	pid = (pid_t) atol(pg_value(victim, "SELECT pg_backend_pid()"));
	is_int(pg_long(*admin, "SELECT connections FROM connbudget.applications "
				   "WHERE application_name = 'single'"), 1,
		   "before the crash: one connection of 'single'");

	/* SIGKILL of a backend makes the postmaster reinitialise shared memory */
	ok(kill(pid, SIGKILL) == 0, "killed a backend with SIGKILL");
	PQfinish(victim);

	/* the crash restart terminates every other backend, ours included */
	deadline = now_seconds() + 60;
	while (now_seconds() < deadline)
	{
		PGresult   *res = PQexec(*admin, "SELECT 1");
		int			alive = PQresultStatus(res) == PGRES_TUPLES_OK;

		PQclear(res);
		if (!alive)
			break;
		sleep_ms(50);
	}
	PQfinish(*admin);
	*admin = NULL;
	while (now_seconds() < deadline)
	{
		char		msg[512];

		*admin = pg_connect_ex(st, msg, sizeof(msg), "application_name=admin",
							   (const char *) NULL);
		if (*admin != NULL)
			break;
		sleep_ms(100);
	}
	if (*admin == NULL)
		bail_out("the server did not come back after the crash");

	conn = connect_as_app("blocked", st);
	ok(conn == NULL && strcmp(st, "53300") == 0,
	   "after the crash restart, limits are in force again (cap 0 refuses)");
	is_int(pg_long(*admin, "SELECT coalesce((SELECT connections FROM connbudget.applications "
				   "WHERE application_name = 'single'), 0)"), 0,
		   "the killed backend's slot is not counted after the crash restart");
	conn = connect_as_app("single", st);
	ok(conn != NULL, "so 'single' (cap 1) can connect again");
	PQfinish(conn);
}

static void
test_worker_cannot_load(PGconn **admin)
{
	char		st[6];
	double		started;
	PGconn	   *conn;
	long		log_from = server_log_size();

	pg_exec(*admin, "ALTER SYSTEM SET connbudget.database = 'no_such_database'");
	PQfinish(*admin);
	if (cluster_ctl("restart") != 0)
		bail_out("pg_ctl restart failed");

	started = now_seconds();
	conn = connect_as_app("blocked", st);
	ok(conn != NULL,
	   "connbudget.database names a missing database: connections are admitted, not stuck");
	ok(now_seconds() - started < 8,
	   "and without waiting out the %d s limit-loading timeout (took %.1f s)",
	   10, now_seconds() - started);
	PQfinish(conn);
	sleep_ms(300);
	ok(server_log_contains(log_from, "database \"no_such_database\" does not exist"),
	   "the server log says why limits could not be loaded");

	*admin = pg_connect_or_bail("application_name=admin");
	pg_exec(*admin, "ALTER SYSTEM RESET connbudget.database");
	PQfinish(*admin);
	if (cluster_ctl("restart") != 0)
		bail_out("pg_ctl restart failed");
	*admin = pg_connect_or_bail("application_name=admin");
	conn = connect_as_app("blocked", st);
	ok(conn == NULL && strcmp(st, "53300") == 0,
	   "with connbudget.database fixed, limits are in force again after the restart");
}

int
main(void)
{
	PGconn	   *admin = pg_connect_or_bail("application_name=admin");

	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE app LOGIN");
	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"(application_name, max_connections) VALUES ('blocked', 0), ('single', 1)");
	PQfinish(admin);

	test_first_connection_after_restart();
	admin = pg_connect_or_bail("application_name=admin");
	test_counters_after_restart(&admin);
	test_crash_restart(&admin);
	test_worker_cannot_load(&admin);

	PQfinish(admin);
	return done_testing();
}
