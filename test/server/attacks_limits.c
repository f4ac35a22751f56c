/*
 * attacks_limits.c -- no login can freeze, replace or crash the limits.
 *
 * Role mallory, an ordinary login that has CREATE on connbudget.database
 * (as every login has where a non-superuser owns that database), attacks
 * the limits that protect alice's application:
 *
 *   the limits lock     she holds every advisory lock SQL can take on the
 *                       keys of the extension's lock: changes still commit
 *                       and the loader still reloads
 *   squatting           she creates schema connbudget before the extension:
 *                       CREATE EXTENSION refuses to install into it, and a
 *                       table of hers named connbudget.application_limits
 *                       is never read
 *   a given-away schema a schema or table that a non-superuser came to own
 *                       is not trusted; ALTER EXTENSION UPDATE refuses it
 *   not a member        a superuser's table connbudget.application_limits
 *                       that is not a member of the extension (ALTER
 *                       EXTENSION ... DROP TABLE): not read, and the loader
 *                       says why; read again once it is a member again
 *   wrong column types  the extension's table altered to a wrong type (only
 *                       a superuser can), one column at a time, so that the
 *                       check of each is reached (roles text[], not name[],
 *                       too): no crash, one clear log line naming the column
 *                       and its type, connections behave as for a missing
 *                       table, and a change to the table is an error that
 *                       says why
 *   values the table's constraints forbid (constraints dropped): those rows
 *                       are left out, with one log line
 *
 * After each, the postmaster is the one that started (nothing crashed).
 *
 * cluster: auth=scram-sha-256 max_connections=40 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=1000
 */
#include "../lib/pgtest.h"

static PGconn *admin;
static char postmaster_pid[32];

static PGconn *
connect_as(const char *role, const char *app, const char *pod, char *st, char *msg, size_t len)
{
	return pg_connect_pod(st, msg, len, role, app, pod, "password=secret-pw", (const char *) NULL);
}

/* mallory's connection to her own application; the test stops without it. */
static PGconn *
mallory_conn(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *m = connect_as("mallory", "mallory_app", NULL, st, msg, sizeof(msg));

	if (!m)
		bail_out("mallory cannot connect: %s", msg);
	return m;
}

static const char *
read_postmaster_pid(void)
{
	static char pid[32];
	char		path[1024];

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", cluster_dir());
	read_first_line(path, pid, sizeof(pid));
	return pid;
}

/* The server is the one that started, answers, and logged no crash. */
static void
no_crash(const char *after, long log_from)
{
	is_str(read_postmaster_pid(), postmaster_pid, "after %s: the postmaster is the one that started", after);
	ok(!server_log_contains(log_from, "terminated by signal") &&
	   !server_log_contains(log_from, "was terminated by"),
	   "after %s: no server process died", after);
	ok(pg_long(admin, "SELECT 1") == 1, "after %s: the server answers", after);
}

/* Ask the limits loader to read the table again, and give it time. */
static void
reload_limits(void)
{
	pg_exec(admin, "SELECT pg_reload_conf()");
	sleep_ms(700);
}

/* How many connections of this role and application get in, up to n. */
static int
admitted(const char *role, const char *app, int n, char *st)
{
	PGconn	   *conns[16];
	char		msg[2048];
	int			got = 0;

	st[0] = '\0';
	for (int i = 0; i < n && i < 16; i++)
	{
		conns[i] = connect_as(role, app, "p-1", st, msg, sizeof(msg));
		if (conns[i])
			got++;
	}
	for (int i = 0; i < n && i < 16; i++)
		PQfinish(conns[i]);
	{
		char		sql[256];

		snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' "
				 "AND application_name = '%s'", role, app);
		pg_wait_for(admin, sql, 0, 10000);
	}
	return got;
}

/* ---- the limits lock ---- */

static void
test_limits_lock(void)
{
	char		st[6],
				msg[2048];
	long		log_from = server_log_size();
	PGconn	   *m = mallory_conn();
	PGresult   *res;
	const char *locks[] = {
		"SELECT pg_advisory_lock(1668247150, 1651860583)",
		"SELECT pg_advisory_lock(1651860583, 1668247150)",
		"SELECT pg_advisory_lock((1668247150::bigint << 32) | 1651860583)",
		"SELECT pg_advisory_lock((1651860583::bigint << 32) | 1668247150)",
		"SELECT pg_advisory_lock(25442, 1668247150)",
		"SELECT pg_advisory_lock(1668247150)",
		"SELECT pg_advisory_lock(1651860583)",
	};

	if (!m)
		bail_out("mallory cannot connect: %s", msg);
	pg_exec(m, "BEGIN");
	for (size_t i = 0; i < sizeof(locks) / sizeof(locks[0]); i++)
		pg_exec(m, locks[i]);
	pg_exec(m, "SELECT pg_advisory_xact_lock(1668247150, 1651860583)");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
				   "WHERE a.usename = 'mallory' AND l.locktype = 'advisory' AND l.granted"),
		   7, "mallory holds every advisory lock SQL can take on the keys of the limits lock");

	pg_exec(admin, "SET lock_timeout = '3s'");
	res = PQexec(admin, "INSERT INTO connbudget.application_limits VALUES ('locked', 0, 2, 1, '{alice}')");
	ok(PQresultStatus(res) == PGRES_COMMAND_OK,
	   "a superuser's change of the limits commits meanwhile, within lock_timeout: %s",
	   PQresultErrorMessage(res));
	PQclear(res);
	is_int(admitted("alice", "locked", 3, st), 2, "and is in force at once: alice gets 2 connections of 'locked'");
	is_str(st, "53300", "the third is refused by its cap");

	is_str(pg_exec_error(admin, "UPDATE connbudget.application_limits SET max_connections = 3 "
						 "WHERE application_name = 'locked'", msg, sizeof(msg)), "",
		   "so does a second change%s%s", msg[0] ? ": " : "", msg);
	pg_exec(admin, "RESET lock_timeout");
	reload_limits();
	is_int(pg_long(admin, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'connbudget limits loader' "
				   "AND wait_event_type = 'Lock'"), 0,
		   "the limits loader, asked to reload, waits on no lock of hers");
	is_int(admitted("alice", "locked", 4, st), 3, "a second change is in force too: 3 connections");
	pg_exec(m, "ROLLBACK");
	pg_exec(m, "SELECT pg_advisory_unlock_all()");
	PQfinish(m);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'locked'");
	no_crash("holding the limits lock's keys", log_from);
}

/* ---- squatting the extension's schema ---- */

static void
test_schema_squatting(void)
{
	char		st[6],
				msg[2048];
	long		log_from = server_log_size();
	PGconn	   *m = mallory_conn();

	pg_exec(admin, "DROP EXTENSION connbudget");
	pg_exec(admin, "DROP SCHEMA connbudget");
	pg_exec(m, "CREATE SCHEMA connbudget");
	is_str(pg_exec_error(admin, "CREATE EXTENSION connbudget", msg, sizeof(msg)), "42501",
		   "CREATE EXTENSION refuses a schema connbudget that mallory created first");
	ok(strstr(msg, "schema \"connbudget\" is owned by role \"mallory\", which is not a superuser") != NULL,
	   "and says whose it is: %s", msg);
	is_int(pg_long(admin, "SELECT count(*) FROM pg_extension WHERE extname = 'connbudget'"), 0,
		   "the extension is not installed");

	/* her own limits table, by the right name, in her schema */
	pg_exec(m, "CREATE TABLE connbudget.application_limits (application_name text PRIMARY KEY, "
			"min_connections int NOT NULL DEFAULT 0, max_connections int, weight int NOT NULL DEFAULT 1, "
			"roles name[])");
	pg_exec(m, "INSERT INTO connbudget.application_limits VALUES ('alice_app', 0, 0, 1, '{mallory}'), "
			"('api', 30, 30, 1, '{mallory}')");
	reload_limits();
	is_int(admitted("alice", "alice_app", 2, st), 2,
		   "her table is not read: alice connects as alice_app, which her row caps at 0 for mallory only");

	/* renaming it away and back changes nothing either */
	pg_exec(m, "ALTER SCHEMA connbudget RENAME TO mallorys");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(m, "ALTER SCHEMA mallorys RENAME TO connbudget2");
	is_str(pg_exec_error(m, "ALTER SCHEMA connbudget RENAME TO connbudget3", msg, sizeof(msg)), "42501",
		   "she cannot rename the schema the extension created");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('alice_app', 0, 2, 1, '{alice}')");
	is_int(admitted("alice", "alice_app", 3, st), 2, "the extension's own limits are in force");
	pg_exec(admin, "DROP SCHEMA connbudget2 CASCADE");
	PQfinish(m);
	no_crash("squatting the extension's schema", log_from);
}

/* ---- a schema or table that a non-superuser came to own ---- */

static void
test_given_away(void)
{
	char		st[6],
				msg[2048];
	long		log_from = server_log_size();

	pg_exec(admin, "ALTER SCHEMA connbudget OWNER TO mallory");
	reload_limits();
	ok(server_log_contains(log_from, "schema \"connbudget\" belongs to a role that is not a superuser"),
	   "a schema given to mallory is not trusted, and the loader says so");
	is_int(admitted("alice", "alice_app", 3, st), 3,
		   "its limits are not in force: alice_app is uncapped, as without a table");
	is_str(pg_exec_error(admin, "ALTER EXTENSION connbudget UPDATE", msg, sizeof(msg)), "42501",
		   "ALTER EXTENSION connbudget UPDATE refuses it too");
	pg_exec(admin, "ALTER SCHEMA connbudget OWNER TO postgres");
	log_from = server_log_size();
	reload_limits();
	ok(server_log_contains(log_from, "is read as it is again"), "given back, the loader says the table is read again");
	is_int(admitted("alice", "alice_app", 3, st), 2, "and alice_app is capped at 2 again");

	pg_exec(admin, "ALTER TABLE connbudget.application_limits OWNER TO mallory");
	reload_limits();
	is_int(admitted("alice", "alice_app", 3, st), 3, "a table given to mallory is not trusted either");
	pg_exec(admin, "ALTER TABLE connbudget.application_limits OWNER TO postgres");
	reload_limits();
	is_int(admitted("alice", "alice_app", 3, st), 2, "given back, it is");
	no_crash("giving the schema and the table away", log_from);
}

/* ---- a table of the right name that is not the extension's ---- */

/* The extension as it creates itself, with alice_app capped at 2, read. */
static void
fresh_limits(void)
{
	pg_exec(admin, "DROP EXTENSION connbudget");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('alice_app', 0, 2, 1, '{alice}')");
	reload_limits();
}

static void
test_not_a_member(void)
{
	char		st[6];
	long		log_from;

	fresh_limits();
	is_int(admitted("alice", "alice_app", 3, st), 2, "before: alice_app is capped at 2");
	log_from = server_log_size();
	pg_exec(admin, "ALTER EXTENSION connbudget DROP TABLE connbudget.application_limits");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
				   "JOIN pg_roles r ON r.oid = c.relowner WHERE n.nspname = 'connbudget' "
				   "AND c.relname = 'application_limits' AND r.rolsuper"), 1,
		   "a table connbudget.application_limits that a superuser owns, in the extension's schema, "
		   "no longer a member of the extension");
	reload_limits();
	ok(server_log_contains(log_from, "the table application_limits in the extension's schema is not the "
						   "extension's own"),
	   "the loader says it is not the extension's own");
	is_int(admitted("alice", "alice_app", 3, st), 3,
		   "its rows are not in force: alice_app is uncapped, as without a table");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.applications WHERE application_name = 'alice_app' "
				   "AND max_connections IS NOT NULL"), 0,
		   "and connbudget.applications shows no limit of alice_app");

	log_from = server_log_size();
	pg_exec(admin, "ALTER EXTENSION connbudget ADD TABLE connbudget.application_limits");
	reload_limits();
	ok(server_log_contains(log_from, "is read as it is again"),
	   "a member again (ALTER EXTENSION ... ADD TABLE), the loader reads it again");
	is_int(admitted("alice", "alice_app", 3, st), 2, "and alice_app is capped at 2 again");
	no_crash("a table of the right name that is not the extension's", log_from);
}

/* ---- wrong column types and values the constraints forbid ---- */

static void
test_wrong_types(void)
{
	char		st[6],
				msg[2048];
	long		log_from;
	static const struct
	{
		const char *alter;
		const char *logged;
	}			columns[] = {
		{"ALTER COLUMN application_name TYPE int USING length(application_name)",
		"column application_name is of type integer, not text"},
		{"ALTER COLUMN min_connections TYPE text", "column min_connections is of type text, not integer"},
		{"ALTER COLUMN max_connections TYPE bigint", "column max_connections is of type bigint, not integer"},
		{"ALTER COLUMN weight TYPE numeric", "column weight is of type numeric, not integer"},
		{"ALTER COLUMN roles TYPE text[]", "column roles is of type text[], not name[]"},
	};

	/* each column alone, so that the check of every one is reached */
	for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++)
	{
		char		sql[512];
		const char *logged = columns[i].logged;

		fresh_limits();
		log_from = server_log_size();
		pg_exec(admin, "DO $$ DECLARE c record; BEGIN FOR c IN SELECT conname FROM pg_constraint "
				"WHERE conrelid = 'connbudget.application_limits'::regclass AND contype = 'c' LOOP "
				"EXECUTE format('ALTER TABLE connbudget.application_limits DROP CONSTRAINT %I', c.conname); "
				"END LOOP; END $$");
		snprintf(sql, sizeof(sql), "ALTER TABLE connbudget.application_limits %s", columns[i].alter);
		pg_exec(admin, sql);
		for (int round = 0; round < 3; round++)
			reload_limits();
		is_int(server_log_count(log_from, logged), 1,
			   "%s: the loader says so in the log, once over three reloads", logged);
		is_int(admitted("alice", "alice_app", 3, st), 3,
			   "%s: connections behave as without a table: alice_app is uncapped", logged);
		is_str(pg_exec_error(admin, "UPDATE connbudget.application_limits SET min_connections = min_connections",
							 msg, sizeof(msg)), "55000",
			   "%s: a change to the table is an error", logged);
		ok(strstr(msg, logged) != NULL, "that says why: %s", msg);
		{
			PGconn	   *a = connect_as("alice", "alice_app", NULL, st, msg, sizeof(msg));

			ok(a != NULL, "%s: logins still work%s%s", logged, a ? "" : ": ", a ? "" : msg);
			PQfinish(a);
		}
		no_crash(logged, log_from);
	}

	/* back as the extension made it, then values its constraints forbid */
	pg_exec(admin, "DROP EXTENSION connbudget");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('alice_app', 0, 2, 1, '{alice}')");
	log_from = server_log_size();
	pg_exec(admin, "ALTER TABLE connbudget.application_limits DROP CONSTRAINT weight_at_least_1, "
			"DROP CONSTRAINT min_connections_not_negative, DROP CONSTRAINT min_connections_not_above_max_connections");
	is_str(pg_exec_error(admin, "INSERT INTO connbudget.application_limits VALUES ('zero', 0, 5, 0, NULL)",
						 msg, sizeof(msg)), "55000",
		   "a row of weight 0 is refused by the extension itself once its constraint is gone");
	pg_exec(admin, "ALTER TABLE connbudget.application_limits DISABLE TRIGGER application_limits_changed");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('zero', 0, 5, 0, NULL), "
			"('negative', -5, 5, 1, NULL), ('upside', 9, 3, 1, NULL)");
	pg_exec(admin, "ALTER TABLE connbudget.application_limits ENABLE TRIGGER application_limits_changed");
	reload_limits();
	ok(server_log_contains(log_from, "weight is below 1") || server_log_contains(log_from, "min_connections is"),
	   "the loader says which row it left out");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.applications WHERE application_name IN ('zero', 'negative', 'upside')"),
		   0, "those rows are not in force");
	is_int(admitted("alice", "alice_app", 3, st), 2, "the good row is");
	no_crash("values the constraints forbid", log_from);
	pg_exec(admin, "DROP EXTENSION connbudget");
	pg_exec(admin, "CREATE EXTENSION connbudget");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	snprintf(postmaster_pid, sizeof(postmaster_pid), "%s", read_postmaster_pid());
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE alice LOGIN PASSWORD 'secret-pw'");
	pg_exec(admin, "CREATE ROLE mallory LOGIN PASSWORD 'secret-pw'");
	pg_exec(admin, "GRANT CREATE ON DATABASE postgres TO mallory");

	test_limits_lock();
	test_schema_squatting();
	test_given_away();
	test_not_a_member();
	test_wrong_types();

	PQfinish(admin);
	return done_testing();
}
