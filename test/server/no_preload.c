/*
 * no_preload.c -- without shared_preload_libraries, the extension can be
 * created, every view and function says what is missing, and nothing else
 * breaks.
 *
 * cluster: shared_preload_libraries=
 */
#include "../lib/pgtest.h"

int
main(void)
{
	PGconn	   *conn = pg_connect_or_bail("application_name=admin");
	const char *queries[] = {
		"SELECT * FROM connbudget.budget",
		"SELECT * FROM connbudget.applications",
		"SELECT * FROM connbudget.pods",
		"SELECT * FROM connbudget.pool_share()",
		"SELECT * FROM connbudget.pool_share(3)",
	};
	PGconn	   *pod;

	is_str(pg_exec_error(conn, "CREATE EXTENSION connbudget", NULL, 0), "",
		   "CREATE EXTENSION works without the preload");
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++)
	{
		char		msg[1024];
		const char *st = pg_exec_error(conn, queries[i], msg, sizeof(msg));

		ok(strcmp(st, "55000") == 0 &&
		   strcmp(msg, "connbudget must be loaded via shared_preload_libraries") == 0,
		   "%s: error 55000 naming shared_preload_libraries (got %s: %s)",
		   queries[i], st, msg);
	}
	is_str(pg_exec_error(conn, "INSERT INTO connbudget.application_limits "
						 "VALUES ('api', 0, 1, 1)", NULL, 0), "",
		   "limits can still be written (they are loaded once preloaded)");
	pod = pg_connect("application_name=api", "options=-c connbudget.pod=p1");
	ok(pod != NULL, "clients that send connbudget.pod still connect");
	PQfinish(pod);
	is_int(pg_long(conn, "SELECT 1"), 1, "the server still answers");
	is_str(pg_exec_error(conn, "DROP EXTENSION connbudget", NULL, 0), "",
		   "DROP EXTENSION works");
	PQfinish(conn);
	return done_testing();
}
