/*
 * limits.c -- changes to connbudget.application_limits: concurrent
 * transactions are validated in commit order, changes in another database
 * are not in force, and pg_dump keeps the rows.
 *
 * cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7
 */
#include "../lib/pgtest.h"

static void
test_concurrent_minimums(PGconn *a, PGconn *b)
{
	char		msg[1024];
	const char *st;

	/* budget 40: each transaction alone fits, both together do not */
	pg_exec(a, "BEGIN");
	pg_exec(b, "BEGIN");
	is_str(pg_exec_error(a, "INSERT INTO connbudget.application_limits VALUES ('x', 25, NULL, 1)",
						 NULL, 0), "", "transaction A inserts a minimum of 25: fits alone");
	is_str(pg_exec_error(b, "INSERT INTO connbudget.application_limits VALUES ('y', 25, NULL, 1)",
						 NULL, 0), "", "transaction B inserts a minimum of 25: fits alone");
	pg_exec(a, "COMMIT");
	st = pg_exec_error(b, "COMMIT", msg, sizeof(msg));
	is_str(st, "23514", "B's COMMIT fails: together the minimums (50) exceed the budget (40)");
	ok(strstr(msg, "min_connections add up to 50, more than the connection budget of 40") != NULL,
	   "the error says so: %s", msg);
	ok(strstr(msg, "DETAIL: The budget is max_connections (50) minus superuser_reserved_connections (3), "
			  "reserved_connections (0) and connbudget.reserved_connections (7).") != NULL,
	   "and its detail gives the arithmetic with the server's own settings");
	is_str(pg_value(a, "SELECT string_agg(application_name || ':' || min_connections, ',') "
					"FROM connbudget.applications"), "x:25",
		   "only A's row is in force");
	is_str(pg_value(a, "SELECT string_agg(application_name, ',') "
					"FROM connbudget.application_limits"), "x", "and only A's row is stored");
}

static void
test_repeatable_read_writers(PGconn *a, PGconn *b)
{
	/* two REPEATABLE READ writers on different rows: the later commit must
	 * publish both rows, not its own stale snapshot */
	pg_exec(a, "BEGIN ISOLATION LEVEL REPEATABLE READ");
	pg_exec(b, "BEGIN ISOLATION LEVEL REPEATABLE READ");
	pg_exec(a, "SELECT count(*) FROM connbudget.application_limits");
	pg_exec(b, "SELECT count(*) FROM connbudget.application_limits");
	pg_exec(a, "INSERT INTO connbudget.application_limits VALUES ('ra', 0, 5, 1)");
	pg_exec(b, "INSERT INTO connbudget.application_limits VALUES ('rb', 0, 6, 1)");
	pg_exec(a, "COMMIT");
	pg_exec(b, "COMMIT");
	is_str(pg_value(a, "SELECT string_agg(application_name || ':' || max_connections, ',' "
					"ORDER BY application_name) FROM connbudget.applications "
					"WHERE application_name LIKE 'r_'"),
		   "ra:5,rb:6", "two REPEATABLE READ writers: both rows are in force after both commit");
}

static void
remember_notice(void *arg, const char *message)
{
	snprintf((char *) arg, 1024, "%s", message);
}

static void
test_other_database(PGconn *a)
{
	PGconn	   *other;
	char		msg[1024];
	PGresult   *res;
	const char *warning;

	pg_exec(a, "CREATE DATABASE elsewhere");
	other = pg_connect_or_bail("dbname=elsewhere", "application_name=admin");
	PQsetNoticeProcessor(other, remember_notice, msg);
	pg_exec(other, "CREATE EXTENSION connbudget");
	msg[0] = '\0';
	res = PQexec(other, "INSERT INTO connbudget.application_limits VALUES ('z', 0, 1, 1)");
	ok(PQresultStatus(res) == PGRES_COMMAND_OK,
	   "limits written in another database are stored");
	PQclear(res);
	warning = "WARNING:  connbudget.application_limits of database \"elsewhere\" is not in force";
	ok(strncmp(msg, warning, strlen(warning)) == 0, "with a warning that they are not in force");
	is_int(pg_long(other, "SELECT count(*) FROM connbudget.applications WHERE application_name = 'z'"),
		   0, "but not in force: connbudget.database is postgres");
	PQfinish(other);
}

/*
 * A TRUNCATE holds the table while the worker wakes up to reload the limits:
 * the worker must wait for the table, not deadlock with the commit.
 */
static void
test_truncate_while_worker_reloads(PGconn *a, PGconn *b)
{
	char		msg[1024];

	pg_exec(a, "INSERT INTO connbudget.application_limits VALUES ('t1', 0, 1, 1)");
	pg_exec(a, "BEGIN");
	pg_exec(a, "TRUNCATE connbudget.application_limits");
	pg_exec(b, "SELECT pg_reload_conf()");	/* wakes the worker, which reloads */
	is_int(pg_wait_for(b, "SELECT count(*) FROM pg_stat_activity "
						   "WHERE backend_type = 'connbudget limits loader' AND wait_event_type = 'Lock'",
						   1, 10000), 1,
			   "the worker waits for the table the TRUNCATE holds");
	is_str(pg_exec_error(a, "COMMIT", msg, sizeof(msg)), "",
		   "the TRUNCATE commits without a deadlock%s%s", msg[0] ? ": " : "", msg);
	is_int(pg_wait_for(b, "SELECT count(*) FROM connbudget.applications "
					   "WHERE application_name = 't1'", 0, 10000), 0,
		   "and the emptied table is in force");
}

static void
test_dump(PGconn *a)
{
	char		cmd[1024];
	char		line[4096];
	FILE	   *dump;
	int			found = 0;

	snprintf(cmd, sizeof(cmd), "'%s/pg_dump' --data-only --table=connbudget.application_limits postgres 2>&1",
			 getenv("PG_BINDIR"));
	dump = popen(cmd, "r");
	while (dump && fgets(line, sizeof(line), dump))
		if (strncmp(line, "x\t25\t\\N\t1", 9) == 0)
			found = 1;
	ok(dump != NULL && pclose(dump) == 0 && found,
	   "pg_dump includes the limits rows (pg_extension_config_dump)");
	(void) a;
}

int
main(void)
{
	PGconn	   *a = pg_connect_or_bail("application_name=admin-a");
	PGconn	   *b = pg_connect_or_bail("application_name=admin-b");

	pg_exec(a, "CREATE EXTENSION connbudget");
	test_concurrent_minimums(a, b);
	test_repeatable_read_writers(a, b);
	test_other_database(a);
	test_dump(a);
	test_truncate_while_worker_reloads(a, b);
	PQfinish(a);
	PQfinish(b);
	return done_testing();
}
