/*
 * upgrade.c -- versions 1.0 and 1.1 stay installable and work with the current
 * library; ALTER EXTENSION connbudget UPDATE keeps every row; an upgraded
 * schema is the same as a fresh one (pg_dump --schema-only of both); and
 * pg_dump / restore carries limits with roles into a fresh cluster.
 *
 * cluster: max_connections=50 superuser_reserved_connections=3
 */
#include "../lib/pgtest.h"

static PGconn *admin;

static char *
slurp(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char	   *buf;
	long		n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, n + 1);
	if (fread(buf, 1, n, f) != (size_t) n)
		n = 0;
	fclose(f);
	return buf;
}

static void
test_one_oh_in_force_and_upgraded(void)
{
	char		st[6],
				msg[1024];
	PGconn	   *a,
			   *b;

	pg_exec(admin, "CREATE ROLE capuser LOGIN");
	pg_exec(admin, "CREATE ROLE other LOGIN");
	pg_exec(admin, "CREATE EXTENSION connbudget VERSION '1.0'");
	is_str(pg_value(admin, "SELECT extversion FROM pg_extension WHERE extname = 'connbudget'"),
		   "1.0", "version 1.0 is still installable");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('capped', 0, 1, 1), ('big', 5, NULL, 3)");
	a = pg_connect("application_name=capped", "user=capuser");
	b = pg_connect_ex(st, msg, sizeof(msg), "application_name=capped", "user=capuser",
					  (const char *) NULL);
	ok(a != NULL && b == NULL && strcmp(st, "53300") == 0,
	   "the limits of a 1.0 table are in force with the current library");
	PQfinish(a);

	pg_exec(admin, "ALTER EXTENSION connbudget UPDATE TO '1.1'");
	is_str(pg_value(admin, "SELECT extversion FROM pg_extension WHERE extname = 'connbudget'"),
		   "1.1", "ALTER EXTENSION connbudget UPDATE TO '1.1' brings it to 1.1");
	is_str(pg_value(admin, "SELECT string_agg(format('%s/%s/%s/%s/%s', application_name, "
					"min_connections, max_connections, weight, roles), ' ' ORDER BY application_name) "
					"FROM connbudget.application_limits"),
		   "big/5//3/ capped/0/1/1/", "every row is kept, with no roles (any role)");
	pg_wait_for(admin, "SELECT count(*) FROM connbudget.applications WHERE connections > 0", 0, 5000);
	pg_exec(admin, "UPDATE connbudget.application_limits SET roles = '{capuser}' WHERE application_name = 'capped'");
	b = pg_connect_ex(st, msg, sizeof(msg), "application_name=capped", "user=other",
					  (const char *) NULL);
	ok(b == NULL && strcmp(st, "42501") == 0, "and the new roles column is in force at once");
	a = pg_connect("application_name=capped", "user=capuser");
	ok(a != NULL, "for the role it names too");
	PQfinish(a);

	pg_exec(admin, "ALTER EXTENSION connbudget UPDATE");
	is_str(pg_value(admin, "SELECT extversion FROM pg_extension WHERE extname = 'connbudget'"),
		   "1.2", "ALTER EXTENSION connbudget UPDATE brings it on to 1.2");
	ok(strstr(pg_value(admin, "SELECT col_description('connbudget.pods'::regclass, "
					   "(SELECT attnum FROM pg_attribute WHERE attrelid = 'connbudget.pods'::regclass "
					   "AND attname = 'share'))"), "never reported a demand") != NULL,
	   "whose views say what a share of a pod that never reported means");
	is_str(pg_value(admin, "SELECT string_agg(format('%s/%s/%s/%s/%s', application_name, "
					"min_connections, max_connections, weight, roles), ' ' ORDER BY application_name) "
					"FROM connbudget.application_limits"),
		   "big/5//3/ capped/0/1/1/{capuser}", "and every row is kept");
}

static void
test_schema_equal(void)
{
	const char *bindir = getenv("PG_BINDIR");
	const char *port = getenv("PGPORT");
	char		up[1024],
				fresh[1024];
	char	   *dump_up,
			   *dump_fresh;

	pg_exec(admin, "CREATE DATABASE upgraded");
	pg_exec(admin, "CREATE DATABASE fresh");
	{
		PGconn	   *u = pg_connect_or_bail("dbname=upgraded", "application_name=admin");
		PGconn	   *f = pg_connect_or_bail("dbname=fresh", "application_name=admin");

		pg_exec(u, "CREATE EXTENSION connbudget VERSION '1.0'");
		pg_exec(u, "ALTER EXTENSION connbudget UPDATE TO '1.1'");
		pg_exec(u, "ALTER EXTENSION connbudget UPDATE TO '1.2'");
		pg_exec(f, "CREATE EXTENSION connbudget");
		PQfinish(u);
		PQfinish(f);
	}
	snprintf(up, sizeof(up), "%s/upgraded.sql", cluster_dir());
	snprintf(fresh, sizeof(fresh), "%s/fresh.sql", cluster_dir());
	/* pg_dump's \restrict lines carry a random key of each run: left out */
	ok(shell("'%s/pg_dump' --schema-only -h 127.0.0.1 -p %s -U postgres upgraded | "
			 "grep -v '^.\\(un\\)\\?restrict ' > '%s'", bindir, port, up) == 0 &&
	   shell("'%s/pg_dump' --schema-only -h 127.0.0.1 -p %s -U postgres fresh | "
			 "grep -v '^.\\(un\\)\\?restrict ' > '%s'", bindir, port, fresh) == 0,
	   "pg_dump --schema-only of both databases");
	dump_up = slurp(up);
	dump_fresh = slurp(fresh);
	ok(dump_up && dump_fresh && strstr(dump_up, "CREATE EXTENSION IF NOT EXISTS connbudget"),
	   "the dumps hold the extension");
	ok(dump_up && dump_fresh && strcmp(dump_up, dump_fresh) == 0,
	   "the schema of a database upgraded from 1.0 through 1.1 equals that of a fresh 1.2 install");
	if (dump_up && dump_fresh && strcmp(dump_up, dump_fresh) != 0)
		shell("diff '%s' '%s' | head -40 | sed 's/^/# /'", up, fresh);
	free(dump_up);
	free(dump_fresh);
}

static void
test_dump_restore_into_fresh_cluster(void)
{
	const char *bindir = getenv("PG_BINDIR");
	const char *port = getenv("PGPORT");
	char		dir[1024],
				dump[1024],
				newport[32] = "";
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	const char *params[1];
	PGresult   *res;

	params[0] = "{apiuser,\"quoted \\\"role\\\"\"}";
	res = PQexecParams(admin, "INSERT INTO connbudget.application_limits VALUES ('api', 2, 10, 2, $1::name[])",
					   1, NULL, params, NULL, NULL, 0);
	ok(PQresultStatus(res) == PGRES_COMMAND_OK, "limits with roles, one of them quoted%s%s",
	   PQresultStatus(res) == PGRES_COMMAND_OK ? "" : ": ", PQresultErrorMessage(res));
	PQclear(res);

	snprintf(dir, sizeof(dir), "%s/restored", cluster_dir());
	snprintf(dump, sizeof(dump), "%s/limits.dump", cluster_dir());
	ok(shell("'%s/pg_dump' -Fc -h 127.0.0.1 -p %s -U postgres -f '%s' postgres", bindir, port, dump) == 0,
	   "pg_dump of the database with the limits");
	ok(cluster_sh("cluster_create '%s' max_connections=50 superuser_reserved_connections=3 "
				  ">/dev/null && cluster_start '%s' >/dev/null", dir, dir) == 0,
	   "a fresh cluster with connbudget preloaded");
	cluster_port(dir, newport, sizeof(newport));
	ok(shell("'%s/pg_restore' -h 127.0.0.1 -p %s -U postgres -d postgres '%s' 2>/dev/null; "
			 "'%s/psql' -X -q -h 127.0.0.1 -p %s -U postgres -c 'SELECT 1' postgres >/dev/null",
			 bindir, newport, dump, bindir, newport) == 0, "restored into it");
	{
		char		conninfo[256];
		PGconn	   *r;

		snprintf(conninfo, sizeof(conninfo), "port=%s", newport);
		r = pg_connect_or_bail(conninfo, "application_name=admin");
		is_str(pg_value(r, "SELECT roles::text FROM connbudget.application_limits WHERE application_name = 'api'"),
			   "{apiuser,\"quoted \\\"role\\\"\"}", "the roles came along, quoted name and all");
		is_int(pg_long(r, "SELECT max_connections FROM connbudget.applications WHERE application_name = 'api'"),
			   10, "and the limits are in force on the fresh cluster");
		pg_exec(r, "CREATE ROLE mallory LOGIN");
		snprintf(conninfo, sizeof(conninfo), "port=%s", newport);
		conn = pg_connect_ex(st, msg, sizeof(msg), conninfo, "application_name=api", "user=mallory",
							 (const char *) NULL);
		ok(conn == NULL && strcmp(st, "42501") == 0,
		   "a role they do not name is refused there (the roles need not exist yet)");
		PQfinish(r);
	}
	cluster_sh("cluster_destroy '%s'", dir);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");

	test_one_oh_in_force_and_upgraded();
	test_schema_equal();
	test_dump_restore_into_fresh_cluster();

	PQfinish(admin);
	return done_testing();
}
