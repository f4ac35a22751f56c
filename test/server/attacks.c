/*
 * attacks.c -- every attack a hostile login tried, kept as a test that
 * fails if the hole reopens.
 *
 * alice and bob own the applications alice_app and bob_app (bound to them
 * by application_limits.roles); open_app may be claimed by any role.
 * mallory, an ordinary login, attacks them, one test function per attack:
 *
 *  a  startup-option tricks to become alice_app or join alice's pod; guessing alice's password
 *  b  SET application_name / connbudget.pod / pool_session after connecting; ALTER ROLE ... SET
 *  c  pool_share() with -1, INT_MIN, NULL, 0, INT_MAX (from three pods), 'abc', bigint, numeric, 10,000 calls
 *  d  calling pool_share() and reading the views while the superuser drops and creates the extension 20 times
 *  e  functions and operators of hers in public shadowing pg_catalog during DROP/CREATE/ALTER EXTENSION UPDATE
 *  f  CREATE, ALTER, DROP, GRANT, LOCK, FOR UPDATE/SHARE, COMMENT... on the schema's objects; ACCESS SHARE held open
 *  f2 a CREATE RULE of hers queued behind her own ACCESS SHARE lock, holding up changes of the limits
 *  g  a SECURITY DEFINER function of the extension without SET search_path
 *  h  parallel workers (force_parallel_mode / debug_parallel_query) posing as connections or pods
 *  i  1,001 rows in application_limits
 *  j  hostile application names: case, spaces, control characters, SQL, cut at 63 bytes onto a bound name
 *  k  bad pod ids and pool session ids: 64 bytes, control characters, DEL, non-ASCII, empty
 *  l  reading alice's client_addr and address-named pod id, compared with pg_stat_activity for six viewers
 *  m  filling the budget with pods and invented applications, then every slot with "other" connections
 *
 * Covered elsewhere, not repeated here: claiming a bound application under
 * load, joining and reporting for another role's pod, floods of pod ids,
 * pool sessions and application names, the limits DML mallory may not do
 * (INSERT, UPDATE, DELETE, TRUNCATE, limits_changed(), ALTER TABLE ... DROP
 * CONSTRAINT) and odd role names: trust.c; pool_share(-1), over-long pod
 * ids and names with quotes, SQL and multibyte characters from a
 * superuser: bad_input.c; holding the limits lock's advisory lock keys and
 * squatting the schema: attacks_limits.c.
 *
 * After each attack the server answers, the limits table is what it was,
 * connbudget.budget.governed equals the governed backends in
 * pg_stat_activity, and no server process was terminated by a signal.
 * Every role but the superuser postgres logs in with a password.
 *
 * Budget: 50 - 3 - 5 = 42.
 *
 * cluster: auth=scram-sha-256 max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=5 connbudget.database=postgres connbudget.pod_ttl=1000 connbudget.refresh_interval=200ms
 */
#include "attack.h"

#define BUDGET 42

/* a bound application whose name is 63 bytes, and one of 62 */
#define LONG_APP "alice_long_app_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define APP62 "alice_62_app_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

#define LIMIT_ROWS \
	"INSERT INTO connbudget.application_limits VALUES " \
	"('alice_app', 0, 10, 1, '{alice}'), ('bob_app', 0, 10, 1, '{bob}'), " \
	"('open_app', 0, NULL, 1, NULL), ('" LONG_APP "', 0, 5, 1, '{alice}'), " \
	"('" APP62 "', 0, 5, 1, '{alice}')"

static long log_start;

/* the outcome of the last connect of this thread */
static __thread char last_state[6];
static __thread char last_error[4096];

/* the last notice (warning) a connection got */
static __thread char notice_state[6];
static __thread char notice_text[1024];

/* ---- connections ---- */

/*
 * Connect as a role (password "pw-" and its name; the superuser is trusted)
 * with an application_name in the startup packet (NULL: none) and startup
 * options (NULL: none).  On failure returns NULL, with the SQLSTATE and
 * message in last_state and last_error.
 */
static PGconn *
connect_opts(const char *role, const char *app, const char *options)
{
	char		p[128],
				o[1024];

	snprintf(p, sizeof(p), "password=pw-%s", role);
	snprintf(o, sizeof(o), "options=%s", options ? options : "");
	return pg_connect_pod(last_state, last_error, sizeof(last_error), role, app, NULL, p,
						  options ? o : NULL, (const char *) NULL);
}

/* Connect as a role, with a pod id if pod is not NULL. */
static PGconn *
connect_as(const char *role, const char *app, const char *pod)
{
	char		p[128];

	snprintf(p, sizeof(p), "password=pw-%s", role);
	return pg_connect_pod(last_state, last_error, sizeof(last_error), role, app, pod, p,
						  (const char *) NULL);
}

static PGconn *
must_connect(const char *role, const char *app, const char *pod)
{
	PGconn	   *conn = connect_as(role, app, pod);

	if (conn == NULL)
		bail_out("%s could not connect as %s/%s: %s", role, app, pod ? pod : "-", last_error);
	return conn;
}

/* The first line of a message (a copy), for a test's name. */
static const char *
first_line(const char *message)
{
	static __thread char line[512];

	snprintf(line, sizeof(line), "%.*s", (int) strcspn(message, "\n"), message);
	return line;
}

static void
notice_receiver(void *arg, const PGresult *res)
{
	const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	(void) arg;
	snprintf(notice_state, sizeof(notice_state), "%s", s ? s : "");
	snprintf(notice_text, sizeof(notice_text), "%s", m ? m : "");
}

/* Run a query in the background; the caller collects it with finish_async(). */
static void
send_async(PGconn *conn, const char *sql)
{
	if (!PQsendQuery(conn, sql))
		bail_out("could not send %s: %s", sql, PQerrorMessage(conn));
}

/* The SQLSTATE of a query sent with send_async() ("" if it succeeded). */
static const char *
finish_async(PGconn *conn, char *message, size_t len)
{
	static char state[6];
	PGresult   *res;

	state[0] = '\0';
	if (message && len)
		message[0] = '\0';
	while ((res = PQgetResult(conn)) != NULL)
	{
		ExecStatusType st = PQresultStatus(res);

		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !state[0])
		{
			const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			snprintf(state, sizeof(state), "%s", s ? s : "?????");
			if (message && len)
				snprintf(message, len, "%s", m ? m : "");
		}
		else if (st == PGRES_TUPLES_OK && message && len && !message[0] && PQntuples(res) > 0)
		{
			/* the result's text, one row a line */
			size_t		used = 0;

			for (int r = 0; r < PQntuples(res) && used + 1 < len; r++)
				used += snprintf(message + used, len - used, "%s\n", PQgetvalue(res, r, 0));
		}
		PQclear(res);
	}
	return state;
}

/* ---- what must hold after every attack ---- */

/* attack.h's checks, and no server process was terminated by a signal. */
static void
after(const char *attack)
{
	after_attack(attack);
	ok(!server_log_contains(log_start, "terminated by signal") &&
	   !server_log_contains(log_start, "was terminated"),
	   "after %s: no server process was terminated by a signal", attack);
}

static long
app_long(const char *column, const char *app)
{
	char		sql[512];

	snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT %s FROM connbudget.applications "
			 "WHERE application_name = '%s'), 0)", column, app);
	return pg_long(admin, sql);
}

static long
pod_connections(const char *app, const char *pod)
{
	char		sql[512];

	snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT connections FROM connbudget.pods "
			 "WHERE application_name = '%s' AND pod = '%s'), 0)", app, pod);
	return pg_long(admin, sql);
}

/* Wait until every pod of the tests before has ended (pod_ttl after its last report). */
static void
settle(void)
{
	pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 20000);
}

/* ---- a: startup-option tricks ---- */

static void
test_startup_option_tricks(void)
{
	/* want: NULL if PostgreSQL would name her alice_app (refused), else the name it gives */
	const struct
	{
		const char *app;
		const char *options;
		const char *want;
		const char *label;
	}			apps[] = {
		{"x1", "-c application_name=alice_app -c connbudget.pod=m-a1", "x1",
		"-c application_name=alice_app under a packet's application_name=x1 (the packet wins)"},
		{NULL, "-c application_name=alice_app -c connbudget.pod=m-a2", NULL,
		"-c application_name=alice_app"},
		{"", "-c application_name=alice_app -c connbudget.pod=m-a3", NULL,
		"-c application_name=alice_app with an empty application_name (not sent)"},
		{NULL, "--application-name=alice_app -c connbudget.pod=m-a4", NULL,
		"--application-name=alice_app"},
		{"x5", "--application-name=alice_app -c connbudget.pod=m-a5", "x5",
		"--application-name=alice_app under a packet's x5"},
		{NULL, "-capplication_name=alice_app -c connbudget.pod=m-a6", NULL,
		"-capplication_name=alice_app (glued)"},
		{NULL, "-Ec application_name=alice_app -c connbudget.pod=m-a7", NULL,
		"-Ec application_name=alice_app (grouped switches)"},
		{NULL, "-c Application_Name=alice_app -c connbudget.pod=m-a8", NULL,
		"-c Application_Name=alice_app (mixed case)"},
		{NULL, "-c connbudget.pod=m-a9 --Application-Name=alice_app", NULL,
		"--Application-Name=alice_app"},
		{NULL, "-c application_name=x10 -c application_name=alice_app -c connbudget.pod=m-a10", NULL,
		"x10 then alice_app (the last wins)"},
		{NULL, "-c application_name=alice_app -c application_name=x11 -c connbudget.pod=m-a11", "x11",
		"alice_app then x11 (the last wins)"},
		{NULL, "-c application_name=alice\\_app -c connbudget.pod=m-a12", NULL,
		"-c application_name=alice\\_app (a backslash escape)"},
		{NULL, "-c\tapplication_name=alice_app -c connbudget.pod=m-a13", NULL,
		"-c<TAB>application_name=alice_app"},
		{NULL, "-f s -c application_name=alice_app -c connbudget.pod=m-a14", NULL,
		"after a switch that takes an argument (-f s)"},
		{NULL, "-c application_name=Alice_App -c connbudget.pod=m-a15", "Alice_App",
		"-c application_name=Alice_App (another name)"},
	};
	const struct
	{
		const char *options;
		const char *want;
	}			pods[] = {
		{"-c connbudget.pod=alice-1", NULL},
		{"--connbudget.pod=alice-1", NULL},
		{"-cconnbudget.pod=alice-1", NULL},
		{"-Ec connbudget.pod=alice-1", NULL},
		{"-c Connbudget.Pod=alice-1", NULL},
		{"--Connbudget.Pod=alice-1", NULL},
		{"-c connbudget.pod=m-p1 -c connbudget.pod=alice-1", NULL},
		{"-c connbudget.pod=alice\\-1", NULL},
		{"-c connbudget.pod=alice-1 -c connbudget.pod=m-p2", "m-p2"},
		{"-c connbudget.pod=Alice-1", "Alice-1"},
	};
	PGconn	   *alice_pod = must_connect("alice", "open_app", "alice-1");
	PGconn	   *alice_own = must_connect("alice", "alice_app", "alice-a");
	PGconn	   *conn;
	long		refused,
				claims = 0;

	pg_long(alice_pod, "SELECT max_size FROM connbudget.pool_share(2)");
	refused = app_long("refused", "alice_app");

	/* guessing alice's password with her application: nothing is counted */
	conn = pg_connect_ex(last_state, last_error, sizeof(last_error), "user=alice", "password=guess",
						 "application_name=alice_app", "options=-c connbudget.pod=alice-a",
						 (const char *) NULL);
	ok(conn == NULL && strcmp(last_state, "28P01") == 0,
	   "a wrong password for alice is refused with 28P01 (%s)", last_state);
	is_int(app_long("refused", "alice_app") * 100 + app_long("connections", "alice_app"), refused * 100 + 1,
		   "and counts neither as a connection nor as a refusal of alice_app");

	for (size_t i = 0; i < sizeof(apps) / sizeof(apps[0]); i++)
	{
		conn = connect_opts("mallory", apps[i].app, apps[i].options);
		if (apps[i].want == NULL)
		{
			claims++;
			ok(conn == NULL && strcmp(last_state, "42501") == 0 &&
			   strstr(last_error, "role \"mallory\" may not connect as application \"alice_app\""),
			   "%s: refused with 42501 naming mallory and alice_app (%s)", apps[i].label,
			   conn ? "admitted" : last_state);
		}
		else if (ok(conn != NULL, "%s: admitted", apps[i].label))
		{
			char		shown[128];

			snprintf(shown, sizeof(shown), "%.127s", pg_value(conn, "SHOW application_name"));
			is_str(shown, apps[i].want, "%s: SHOW application_name says %s", apps[i].label, apps[i].want);
			is_str(pg_value(conn, "SELECT application_name FROM connbudget.pods "
							"WHERE pod = current_setting('connbudget.pod')"), shown,
				   "%s: connbudget counts her under the name PostgreSQL gives her", apps[i].label);
		}
		else
			diag("%s", first_line(last_error));
		PQfinish(conn);
	}
	{
		conn = pg_connect_ex(last_state, last_error, sizeof(last_error), "user=mallory",
							 "password=pw-mallory", "fallback_application_name=alice_app",
							 (const char *) NULL);
		claims++;
		ok(conn == NULL && strcmp(last_state, "42501") == 0,
		   "fallback_application_name=alice_app: refused with 42501 (%s)", conn ? "admitted" : last_state);
		PQfinish(conn);
		conn = pg_connect_ex(last_state, last_error, sizeof(last_error), "user=mallory",
							 "password=pw-mallory", "fallback_application_name=alice_app",
							 "application_name=x16", "options=-c connbudget.pod=m-a16", (const char *) NULL);
		ok(conn != NULL && strcmp(pg_value(conn, "SHOW application_name"), "x16") == 0,
		   "fallback_application_name=alice_app under application_name=x16: admitted as x16");
		PQfinish(conn);
	}
	for (size_t i = 0; i < sizeof(pods) / sizeof(pods[0]); i++)
	{
		conn = connect_opts("mallory", "open_app", pods[i].options);
		if (pods[i].want == NULL)
			ok(conn == NULL && strcmp(last_state, "42501") == 0 &&
			   strstr(last_error, "pod \"alice-1\" of application \"open_app\" belongs to role \"alice\""),
			   "pod option '%s': refused with 42501, alice's pod (%s)", pods[i].options,
			   conn ? "admitted" : last_state);
		else if (ok(conn != NULL, "pod option '%s': admitted", pods[i].options))
		{
			is_str(pg_value(conn, "SHOW connbudget.pod"), pods[i].want,
				   "pod option '%s': SHOW connbudget.pod says %s", pods[i].options, pods[i].want);
			is_int(pg_long(conn, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'open_app' "
						   "AND pod = current_setting('connbudget.pod') AND connections = 1"), 1,
				   "pod option '%s': connbudget counts her in that pod", pods[i].options);
		}
		else
			diag("%s", first_line(last_error));
		PQfinish(conn);
	}
	is_int(app_long("connections", "alice_app"), 1, "alice_app holds only alice's connection");
	is_int(pod_connections("open_app", "alice-1"), 1, "alice's pod alice-1 holds only hers");
	is_int(app_long("refused", "alice_app"), refused + claims,
		   "each of mallory's %ld claims is counted in alice_app's refused", claims);
	PQfinish(alice_pod);
	PQfinish(alice_own);
	after("startup-option tricks");
}

/* ---- b: changing identity after connecting ---- */

static void
test_identity_after_connect(void)
{
	PGconn	   *alice = must_connect("alice", "alice_app", "alice-b");
	PGconn	   *m = must_connect("mallory", "open_app", "m-b");
	PGconn	   *m2,
			   *m3;
	char		msg[1024],
				alice_demand[32];
	const char *tries[] = {
		"SET connbudget.pod = 'alice-b'",
		"SELECT set_config('connbudget.pod', 'alice-b', false)",
		"SET LOCAL connbudget.pod = 'alice-b'",
		"RESET connbudget.pod",
		"SET connbudget.pool_session = 'alice-session'",
		"ALTER ROLE mallory SET connbudget.pod = 'alice-b'",
	};

	pg_long(alice, "SELECT max_size FROM connbudget.pool_share(3)");
	snprintf(alice_demand, sizeof(alice_demand), "%s",
			 pg_value(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'alice-b'"));

	pg_exec(m, "SET application_name = 'alice_app'");
	is_str(pg_value(m, "SHOW application_name"), "alice_app",
		   "SET application_name = 'alice_app' is allowed, and PostgreSQL shows her so");
	pg_long(m, "SELECT max_size FROM connbudget.pool_share(500)");
	is_int(app_long("connections", "alice_app"), 1, "but alice_app still holds only alice's connection");
	is_int(pod_connections("open_app", "m-b"), 1, "she is still counted in her pod of open_app");
	is_str(pg_value(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'm-b'"), "500",
		   "her pool_share(500) went to her own pod");
	is_str(pg_value(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'alice-b'"), alice_demand,
		   "alice's pod's demand is still %s", alice_demand);

	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++)
	{
		const char *st;

		pg_exec(m, "BEGIN");
		st = pg_exec_error(m, tries[i], msg, sizeof(msg));
		pg_exec(m, "ROLLBACK");
		ok(strcmp(st, "55P02") == 0 && strstr(msg, "cannot be set after connection start"),
		   "%s: refused with 55P02 cannot be set after connection start (%s)", tries[i], st);
	}
	is_str(pg_value(m, "SHOW connbudget.pod"), "m-b", "her pod is still m-b");

	/* a role default: PostgreSQL names her next connections alice_app */
	is_str(pg_exec_error(m, "ALTER ROLE mallory SET application_name = 'alice_app'", msg, sizeof(msg)), "",
		   "ALTER ROLE mallory SET application_name = 'alice_app' is allowed");
	m2 = connect_opts("mallory", NULL, "-c connbudget.pod=m-b2");
	ok(m2 != NULL, "her next connection, which gives no application_name, is let in%s", m2 ? "" : last_state);
	if (m2 == NULL)
		bail_out("mallory cannot connect without an application_name");
	is_str(pg_value(m2, "SHOW application_name"), "alice_app",
		   "PostgreSQL names it alice_app (her role's default, applied after login, like a SET)");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-b2' AND application_name = ''"), 1,
		   "connbudget counts it under the name she gave at connect time, \"\", not alice_app");
	is_int(app_long("connections", "alice_app"), 1, "alice_app still holds only alice's connection");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-b2' "
				   "AND application_name = 'alice_app'"), 0, "and no pod of hers is alice_app's");
	is_int(pod_connections("alice_app", "alice-b"), 1, "alice's pod holds only hers");
	m3 = connect_opts("mallory", "x-b3", "-c connbudget.pod=m-b3");
	ok(m3 != NULL && strcmp(pg_value(m3, "SHOW application_name"), "x-b3") == 0 &&
	   pg_long(m3, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-b3' AND application_name = 'x-b3'") == 1,
	   "an application_name she gives beats her role's default, for PostgreSQL and connbudget alike");
	pg_exec(admin, "ALTER ROLE mallory RESET ALL");
	PQfinish(m2);
	PQfinish(m3);
	PQfinish(m);
	PQfinish(alice);
	after("changing identity after connecting");
}

/* ---- c: pool_share() with odd demands ---- */

static void
test_pool_share_demands(void)
{
	const struct
	{
		const char *sql;
		const char *state;
		const char *text;
	}			calls[] = {
		{"SELECT max_size FROM connbudget.pool_share(-1)", "22023", "demand must not be negative: -1"},
		{"SELECT max_size FROM connbudget.pool_share(-2147483648)", "22023",
		"demand must not be negative: -2147483648"},
		{"SELECT max_size FROM connbudget.pool_share(NULL)", "", NULL},
		{"SELECT max_size FROM connbudget.pool_share(0)", "", NULL},
		{"SELECT max_size FROM connbudget.pool_share(2147483647)", "", NULL},
		{"SELECT max_size FROM connbudget.pool_share('abc'::int)", "22P02",
		"invalid input syntax for type integer: \"abc\""},
		{"SELECT max_size FROM connbudget.pool_share('abc')", "22P02",
		"invalid input syntax for type integer: \"abc\""},
		{"SELECT max_size FROM connbudget.pool_share(2147483648)", "42883",
		"function connbudget.pool_share(bigint) does not exist"},
		{"SELECT max_size FROM connbudget.pool_share(1.5)", "42883",
		"function connbudget.pool_share(numeric) does not exist"},
	};
	PGconn	   *alice;
	PGconn	   *m[3];
	char		share[256],
				msg[1024];

	settle();
	alice = must_connect("alice", "alice_app", "alice-c");
	m[0] = must_connect("mallory", "mallory_app", "m-c0");
	m[1] = must_connect("mallory", "mallory_app", "m-c1");
	m[2] = must_connect("mallory", "mallory_app", "m-c2");
	snprintf(share, sizeof(share), "%s", pg_value(alice, "SELECT row(s.*)::text FROM connbudget.pool_share() s"));
	ok(strncmp(share, "(10,", 4) == 0, "alice's share is her cap of 10: %s", share);

	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
	{
		const char *st = pg_exec_error(m[0], calls[i].sql, msg, sizeof(msg));

		if (calls[i].state[0])
			ok(strcmp(st, calls[i].state) == 0 && strstr(msg, calls[i].text),
			   "%s: %s %s (%s %s)", calls[i].sql, calls[i].state, calls[i].text, st, msg);
		else
			is_str(st, "", "%s: answered", calls[i].sql);
		ok(pg_long(admin, "SELECT 1") == 1, "then the server answers");
		is_str(pg_value(alice, "SELECT row(s.*)::text FROM connbudget.pool_share() s"), share,
			   "and alice's share is still %s", share);
	}

	/* three pods demanding INT_MAX each: their sum does not wrap */
	for (int i = 0; i < 3; i++)
		pg_long(m[i], "SELECT max_size FROM connbudget.pool_share(2147483647)");
	is_str(pg_value(admin, "SELECT demand FROM connbudget.applications WHERE application_name = 'mallory_app'"),
		   "6442450941", "three pods demanding 2147483647 make mallory_app's demand 6442450941, not a wrapped number");
	is_str(pg_value(alice, "SELECT row(s.*)::text FROM connbudget.pool_share() s"), share,
		   "alice's share is still %s", share);
	is_int(pg_long(admin, "SELECT sum(share) FROM connbudget.pods"), BUDGET,
		   "and the pods' shares add up to the budget of %d", BUDGET);

	is_int(pg_long(m[0], "SELECT count(*) FROM generate_series(1, 10000) g, "
				   "LATERAL connbudget.pool_share(g % 5) s WHERE s.max_size >= 0"), 10000,
		   "10,000 calls of pool_share() in one statement all answer");
	ok(pg_long(admin, "SELECT 1") == 1, "then the server answers");
	is_str(pg_value(alice, "SELECT row(s.*)::text FROM connbudget.pool_share() s"), share,
		   "and alice's share is still %s", share);
	pg_finish_all(m, 3);
	PQfinish(alice);
	after("pool_share() with odd demands");
}

/* ---- d: DROP/CREATE EXTENSION races ---- */

typedef struct Racer
{
	int			id;
	volatile int *stop;
	long		answered;
	long		errors;
	long		unexpected;
	char		states[128];	/* the SQLSTATEs seen, comma separated */
	char		sample[512];	/* the first unexpected error */
	int			alive;
} Racer;

static void *
racer_main(void *arg)
{
	Racer	   *r = arg;
	const char *sqls[] = {
		"SELECT max_size FROM connbudget.pool_share(1)",
		"SELECT count(*) FROM connbudget.budget",
		"SELECT count(*) FROM connbudget.applications",
		"SELECT count(*) FROM connbudget.pods",
	};
	const char *expected[] = {"3F000", "42883", "42P01", "42704"};
	char		pod[32];
	char		msg[512];
	PGconn	   *conn;

	snprintf(pod, sizeof(pod), "m-d%d", r->id);
	conn = connect_as("mallory", "mallory_app", pod);
	if (conn == NULL)
	{
		snprintf(r->sample, sizeof(r->sample), "connect: %.400s", last_error);
		return NULL;
	}
	for (long i = 0; !*r->stop; i++)
	{
		const char *st = pg_exec_error(conn, sqls[i % 4], msg, sizeof(msg));
		int			known = 0;

		if (!st[0])
		{
			r->answered++;
			continue;
		}
		r->errors++;
		for (int k = 0; k < 4; k++)
			known |= strcmp(st, expected[k]) == 0;
		if (!known || PQstatus(conn) != CONNECTION_OK)
		{
			if (!r->unexpected++)
				snprintf(r->sample, sizeof(r->sample), "%s: %.300s (%.100s)", st, msg, sqls[i % 4]);
		}
		if (!strstr(r->states, st) && strlen(r->states) < sizeof(r->states) - 8)
			snprintf(r->states + strlen(r->states), 7, "%s%s", r->states[0] ? "," : "", st);
		if (PQstatus(conn) != CONNECTION_OK)
			break;
	}
	r->alive = PQstatus(conn) == CONNECTION_OK && pg_exec_error(conn, "SELECT 1", NULL, 0)[0] == '\0';
	PQfinish(conn);
	return NULL;
}

static const char *
postmaster_pid(void)
{
	static char pid[32];
	char		path[1024];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", cluster_dir());
	pid[0] = '\0';
	if ((f = fopen(path, "r")) != NULL)
	{
		if (!fgets(pid, sizeof(pid), f))
			pid[0] = '\0';
		fclose(f);
	}
	pid[strcspn(pid, "\n")] = '\0';
	return pid;
}

static void
test_extension_race(void)
{
	Racer		racers[3];
	pthread_t	threads[3];
	volatile int stop = 0;
	char		pm_pid[32],
				admin_pid[32],
				msg[1024];
	long		log_from = server_log_size();
	long		answered = 0,
				errors = 0,
				unexpected = 0;
	int			alive = 0,
				cycles = 0;

	snprintf(pm_pid, sizeof(pm_pid), "%s", postmaster_pid());
	snprintf(admin_pid, sizeof(admin_pid), "%s", pg_value(admin, "SELECT pg_backend_pid()"));
	for (int i = 0; i < 3; i++)
	{
		memset(&racers[i], 0, sizeof(Racer));
		racers[i].id = i;
		racers[i].stop = &stop;
		pthread_create(&threads[i], NULL, racer_main, &racers[i]);
	}
	sleep_ms(200);
	for (int i = 0; i < 20; i++)
	{
		if (pg_exec_error(admin, "DROP EXTENSION connbudget", msg, sizeof(msg))[0] ||
			pg_exec_error(admin, "CREATE EXTENSION connbudget", msg, sizeof(msg))[0])
		{
			diag("cycle %d: %s", i, msg);
			pg_exec_error(admin, "CREATE EXTENSION IF NOT EXISTS connbudget", NULL, 0);
			continue;
		}
		cycles++;
		sleep_ms(10);
	}
	stop = 1;
	for (int i = 0; i < 3; i++)
	{
		pthread_join(threads[i], NULL);
		answered += racers[i].answered;
		errors += racers[i].errors;
		unexpected += racers[i].unexpected;
		alive += racers[i].alive;
		if (racers[i].sample[0])
			diag("racer %d: %s", i, racers[i].sample);
		diag("racer %d: %ld answers, %ld errors (%s)", i, racers[i].answered, racers[i].errors,
			 racers[i].states[0] ? racers[i].states : "none");
	}
	pg_exec(admin, LIMIT_ROWS);

	is_int(cycles, 20, "the superuser dropped and re-created the extension 20 times");
	ok(answered > 0 && errors > 0, "mallory's calls meanwhile were answered (%ld) and failed (%ld)",
	   answered, errors);
	is_int(unexpected, 0, "every failure was a clean \"does not exist\" error (3F000, 42883, 42P01, 42704)");
	is_int(alive, 3, "and each of her three connections survived");
	is_str(postmaster_pid(), pm_pid, "the postmaster is the one that started (pid %s)", pm_pid);
	is_str(pg_value(admin, "SELECT pg_backend_pid()::text"), admin_pid,
		   "the superuser's connection survived: nothing crashed and restarted the backends");
	ok(!server_log_contains(log_from, "terminated by signal") &&
	   !server_log_contains(log_from, "was terminated") &&
	   !server_log_contains(log_from, "server process"),
	   "the server log tells of no server process terminated");
	after("DROP/CREATE EXTENSION races");
}

/* ---- e: ALTER EXTENSION UPDATE under a hostile search_path ---- */

static void
test_hostile_search_path(void)
{
	PGconn	   *m;
	const char *traps[] = {
		"CREATE TABLE public.cb_ran (what text, by_whom name DEFAULT current_user)",
		"GRANT INSERT ON public.cb_ran TO PUBLIC",
		"CREATE FUNCTION public.cardinality(anyarray) RETURNS integer LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('cardinality'); SELECT pg_catalog.cardinality($1) $$",
		"CREATE FUNCTION public.array_ndims(anyarray) RETURNS integer LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('array_ndims'); SELECT pg_catalog.array_ndims($1) $$",
		"CREATE FUNCTION public.octet_length(text) RETURNS integer LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('octet_length'); SELECT pg_catalog.octet_length($1) $$",
		"CREATE FUNCTION public.array_position(anycompatiblearray, anycompatible) RETURNS integer "
		"LANGUAGE sql AS $$ INSERT INTO public.cb_ran VALUES ('array_position'); "
		"SELECT pg_catalog.array_position($1, $2) $$",
		"CREATE FUNCTION public.pg_extension_config_dump(regclass, text) RETURNS void LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('pg_extension_config_dump') $$",
		"CREATE FUNCTION public.cb_ne(text, text) RETURNS boolean LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('<>'); SELECT $1 OPERATOR(pg_catalog.<>) $2 $$",
		"CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.cb_ne)",
		"CREATE FUNCTION public.cb_match(text, text) RETURNS boolean LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('~'); SELECT $1 OPERATOR(pg_catalog.~) $2 $$",
		"CREATE OPERATOR public.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.cb_match)",
		"CREATE FUNCTION public.cb_ge(integer, integer) RETURNS boolean LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('>='); SELECT $1 OPERATOR(pg_catalog.>=) $2 $$",
		"CREATE OPERATOR public.>= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.cb_ge)",
		"CREATE FUNCTION public.cb_le(integer, integer) RETURNS boolean LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('<='); SELECT $1 OPERATOR(pg_catalog.<=) $2 $$",
		"CREATE OPERATOR public.<= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.cb_le)",
		"CREATE FUNCTION public.cb_eq(integer, integer) RETURNS boolean LANGUAGE sql AS "
		"$$ INSERT INTO public.cb_ran VALUES ('='); SELECT $1 OPERATOR(pg_catalog.=) $2 $$",
		"CREATE OPERATOR public.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.cb_eq)",
	};
	const char *bad_rows[] = {
		"INSERT INTO connbudget.application_limits VALUES ('', 0, NULL, 1, NULL)",
		"INSERT INTO connbudget.application_limits VALUES (repeat('n', 64), 0, NULL, 1, NULL)",
		"INSERT INTO connbudget.application_limits VALUES (E'a\\x01', 0, NULL, 1, NULL)",
		"INSERT INTO connbudget.application_limits VALUES ('e1', 0, NULL, 0, NULL)",
		"INSERT INTO connbudget.application_limits VALUES ('e2', 2, 1, 1, NULL)",
		"INSERT INTO connbudget.application_limits VALUES ('e3', 0, NULL, 1, '{}')",
		"INSERT INTO connbudget.application_limits VALUES ('e4', 0, NULL, 1, '{{a},{b}}')",
		"INSERT INTO connbudget.application_limits VALUES ('e5', 0, NULL, 1, '{a,NULL}')",
		"INSERT INTO connbudget.application_limits VALUES ('e6', 0, NULL, 1, '{a,\"\"}')",
	};
	char		msg[1024];
	const char *st;

	pg_exec(admin, "GRANT CREATE ON SCHEMA public TO mallory");
	m = must_connect("mallory", "open_app", "m-e");
	for (size_t i = 0; i < sizeof(traps) / sizeof(traps[0]); i++)
		if (pg_exec_error(m, traps[i], msg, sizeof(msg))[0])
			bail_out("mallory could not set her trap %s: %s", traps[i], msg);
	PQfinish(m);

	/* the traps work: with public first, the superuser's own unqualified calls run hers */
	pg_exec(admin, "SET search_path = public, pg_catalog");
	pg_exec(admin, "SELECT cardinality(ARRAY[1]), octet_length('x'::text), 'a'::text <> 'b'::text, 1 >= 0");
	is_int(pg_long(admin, "SELECT count(DISTINCT what) FROM public.cb_ran"), 4,
		   "her traps are live: the superuser's own unqualified calls under search_path = public, "
		   "pg_catalog run 4 of them");
	pg_exec(admin, "TRUNCATE public.cb_ran");

	st = pg_exec_error(admin, "DROP EXTENSION connbudget", msg, sizeof(msg));
	if (!st[0])
		st = pg_exec_error(admin, "CREATE EXTENSION connbudget VERSION '1.0'", msg, sizeof(msg));
	if (!st[0])
		st = pg_exec_error(admin, "ALTER EXTENSION connbudget UPDATE", msg, sizeof(msg));
	if (!st[0])
		st = pg_exec_error(admin, LIMIT_ROWS, msg, sizeof(msg));
	is_str(st, "", "with search_path = public, pg_catalog the superuser drops, creates 1.0, updates, "
		   "and inserts the limits%s%s", st[0] ? ": " : "", msg);
	for (size_t i = 0; i < sizeof(bad_rows) / sizeof(bad_rows[0]); i++)
		is_str(pg_exec_error(admin, bad_rows[i], msg, sizeof(msg)), "23514",
			   "and the constraints still refuse %s (23514)", bad_rows[i]);
	pg_exec(admin, "RESET search_path");
	if (st[0])
	{
		pg_exec_error(admin, "CREATE EXTENSION IF NOT EXISTS connbudget", NULL, 0);
		pg_exec_error(admin, LIMIT_ROWS, NULL, 0);
	}
	is_str(pg_value(admin, "SELECT string_agg(what, ', ') FROM public.cb_ran"), NULL,
		   "none of her functions or operators ran");
	is_str(pg_value(admin, "SELECT e.extversion = a.default_version FROM pg_extension e "
					"JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'connbudget'"),
		   "t", "the extension is at its default version");

	pg_exec(admin, "DROP OWNED BY mallory");
	after("ALTER EXTENSION UPDATE under a hostile search_path");
}

/* ---- f: every privilege on the schema and table ---- */

static void
test_privileges(void)
{
	/* want: the SQLSTATE and text of the error, or of the warning (01...) of a statement that runs */
	const struct
	{
		const char *sql;
		const char *state;
		const char *text;
	}			tries[] = {
		{"CREATE TABLE connbudget.evil (x int)", "42501", "permission denied for schema connbudget"},
		{"CREATE FUNCTION connbudget.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'", "42501",
		"permission denied for schema connbudget"},
		{"CREATE VIEW connbudget.evil AS SELECT 1", "42501", "permission denied for schema connbudget"},
		{"CREATE TYPE connbudget.evil AS (x int)", "42501", "permission denied for schema connbudget"},
		{"CREATE OR REPLACE FUNCTION connbudget.pool_share(demand integer DEFAULT NULL, "
			"OUT max_size integer, OUT min_size integer, OUT allocation integer, OUT pods integer, "
			"OUT budget integer, OUT refresh_ms integer) RETURNS record LANGUAGE sql AS "
			"'SELECT 1000, 1000, 1000, 1, 1000, 1000'", "42501", "permission denied for schema connbudget"},
		{"CREATE OR REPLACE VIEW connbudget.pods AS SELECT 1", "42501", "permission denied for schema connbudget"},
		{"DROP TABLE connbudget.application_limits", "42501", "must be owner of table application_limits"},
		{"ALTER TABLE connbudget.application_limits DISABLE TRIGGER ALL", "42501",
		"must be owner of table application_limits"},
		{"ALTER TABLE connbudget.application_limits OWNER TO mallory", "42501",
		"must be owner of table application_limits"},
		{"ALTER TABLE connbudget.application_limits RENAME TO evil", "42501",
		"must be owner of table application_limits"},
		{"ALTER TABLE connbudget.application_limits ENABLE ROW LEVEL SECURITY", "42501",
		"must be owner of table application_limits"},
		{"CREATE POLICY evil ON connbudget.application_limits USING (false)", "42501",
		"must be owner of table application_limits"},
		{"CREATE INDEX evil ON connbudget.application_limits (weight)", "42501",
		"must be owner of table application_limits"},
		{"CREATE TRIGGER evil BEFORE UPDATE ON connbudget.application_limits FOR EACH ROW "
			"EXECUTE FUNCTION suppress_redundant_updates_trigger()", "42501",
		"permission denied for table application_limits"},
		{"CREATE RULE evil AS ON INSERT TO connbudget.application_limits DO INSTEAD NOTHING", "42501",
		"must be owner of table application_limits"},
		{"GRANT INSERT, UPDATE, DELETE, TRUNCATE ON connbudget.application_limits TO mallory", "01007",
		"no privileges were granted for \"application_limits\""},
		{"GRANT ALL ON connbudget.application_limits TO PUBLIC", "01007",
		"no privileges were granted for \"application_limits\""},
		{"GRANT SELECT ON connbudget.pods TO mallory WITH GRANT OPTION", "01007",
		"no privileges were granted for \"pods\""},
		{"GRANT EXECUTE ON FUNCTION connbudget.limits_changed() TO mallory", "42501",
		"permission denied for function limits_changed"},
		{"GRANT CREATE ON SCHEMA connbudget TO mallory", "01007", "no privileges were granted for \"connbudget\""},
		{"REVOKE SELECT ON connbudget.application_limits FROM PUBLIC", "01006",
		"no privileges could be revoked for"},
		{"SELECT * FROM connbudget.application_limits FOR UPDATE", "42501",
		"permission denied for table application_limits"},
		{"SELECT * FROM connbudget.application_limits FOR NO KEY UPDATE", "42501",
		"permission denied for table application_limits"},
		{"SELECT * FROM connbudget.application_limits FOR SHARE", "42501",
		"permission denied for table application_limits"},
		{"SELECT * FROM connbudget.application_limits FOR KEY SHARE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN ROW SHARE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN ROW EXCLUSIVE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN SHARE UPDATE EXCLUSIVE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN SHARE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN SHARE ROW EXCLUSIVE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN EXCLUSIVE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.application_limits IN ACCESS EXCLUSIVE MODE", "42501",
		"permission denied for table application_limits"},
		{"LOCK TABLE connbudget.pods IN ACCESS EXCLUSIVE MODE", "42501", "permission denied for view pods"},
		{"ALTER VIEW connbudget.pods RENAME TO evil", "42501", "must be owner of view pods"},
		{"ALTER VIEW connbudget.budget OWNER TO mallory", "42501", "must be owner of view budget"},
		{"ALTER VIEW connbudget.applications SET (security_barrier = false)", "42501",
		"must be owner of view applications"},
		{"DROP VIEW connbudget.pods", "42501", "must be owner of view pods"},
		{"DROP VIEW connbudget.budget, connbudget.applications", "42501", "must be owner of view"},
		{"ALTER FUNCTION connbudget.pool_share(integer) OWNER TO mallory", "42501",
		"must be owner of function pool_share"},
		{"ALTER FUNCTION connbudget.pool_share(integer) SECURITY DEFINER", "42501",
		"must be owner of function connbudget.pool_share"},
		{"ALTER FUNCTION connbudget.read_pods() RENAME TO evil", "42501", "must be owner of function read_pods"},
		{"DROP FUNCTION connbudget.pool_share(integer)", "42501",
		"must be owner of function connbudget.pool_share"},
		{"ALTER FUNCTION connbudget.pool_share(integer) SET search_path = public", "42501",
		"must be owner of function connbudget.pool_share"},
		{"COMMENT ON TABLE connbudget.application_limits IS 'evil'", "42501",
		"must be owner of table application_limits"},
		{"COMMENT ON VIEW connbudget.pods IS 'evil'", "42501", "must be owner of view pods"},
		{"COMMENT ON FUNCTION connbudget.pool_share(integer) IS 'evil'", "42501",
		"must be owner of function connbudget.pool_share"},
		{"COMMENT ON SCHEMA connbudget IS 'evil'", "42501", "must be owner of schema connbudget"},
		{"COMMENT ON EXTENSION connbudget IS 'evil'", "42501", "must be owner of extension connbudget"},
		{"ALTER SCHEMA connbudget RENAME TO evil", "42501", "must be owner of schema connbudget"},
		{"ALTER SCHEMA connbudget OWNER TO mallory", "42501", "must be owner of schema connbudget"},
		{"DROP SCHEMA connbudget CASCADE", "42501", "must be owner of schema connbudget"},
		{"ALTER EXTENSION connbudget UPDATE", "42501", "must be owner of extension connbudget"},
		{"DROP EXTENSION connbudget", "42501", "must be owner of extension connbudget"},
		/* PostgreSQL 17 checks its MAINTAIN privilege here, not ownership */
		{"CLUSTER connbudget.application_limits USING application_limits_pkey", "42501",
		"application_limits"},
		{"REINDEX TABLE connbudget.application_limits", "42501", "application_limits"},
	};
	PGconn	   *m = must_connect("mallory", "open_app", "m-f");
	char		msg[1024];

	PQsetNoticeReceiver(m, notice_receiver, NULL);
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++)
	{
		const char *st;

		notice_state[0] = notice_text[0] = '\0';
		pg_exec(m, "BEGIN");
		st = pg_exec_error(m, tries[i].sql, msg, sizeof(msg));
		pg_exec(m, "ROLLBACK");
		if (strncmp(tries[i].state, "01", 2) == 0)
			ok(!st[0] && strcmp(notice_state, tries[i].state) == 0 && strstr(notice_text, tries[i].text),
			   "%s: runs with only WARNING %s %s (%s%s %s)", tries[i].sql, tries[i].state, tries[i].text,
			   st, notice_state, notice_text);
		else
			ok(strcmp(st, tries[i].state) == 0 && strstr(msg, tries[i].text),
			   "%s: refused with %s %s (%s %s)", tries[i].sql, tries[i].state, tries[i].text, st, msg);
	}
	/* the VACUUM outside a transaction block, where it really runs */
	notice_state[0] = '\0';
	is_str(pg_exec_error(m, "VACUUM FULL connbudget.application_limits", msg, sizeof(msg)), "",
		   "VACUUM FULL outside a transaction: runs");
	ok(strcmp(notice_state, "01000") == 0 &&
	   (strstr(notice_text, "only table or database owner can vacuum it") ||
		strstr(notice_text, "permission denied to vacuum \"application_limits\", skipping it")),
	   "and skips the table with WARNING 01000 (only its owner, or from PostgreSQL 17 a role with MAINTAIN, "
	   "can vacuum it): %s", notice_text);
	is_str(pg_value(admin, "SELECT string_agg(privilege_type, ',') FROM information_schema.role_table_grants "
					"WHERE grantee IN ('mallory', 'PUBLIC') AND table_schema = 'connbudget' "
					"AND privilege_type <> 'SELECT'"), NULL,
		   "neither mallory nor PUBLIC holds a privilege beyond SELECT on the tables and views");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'connbudget.application_limits'::regclass"
				   " AND NOT tgisinternal AND tgenabled <> 'D'"), 1,
		   "application_limits has its one trigger, enabled");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_rewrite WHERE ev_class = 'connbudget.application_limits'::regclass"),
		   0, "and no rule");
	PQfinish(m);
	after("every privilege on the schema and the table");
}

/* What she may do: read and hold ACCESS SHARE in an open transaction. */
static void
test_readers_block_nothing(void)
{
	PGconn	   *m = must_connect("mallory", "open_app", "m-f2");
	PGconn	   *su = must_connect("postgres", "admin", NULL);
	char		msg[1024];
	const char *st;

	pg_exec(m, "BEGIN ISOLATION LEVEL REPEATABLE READ");
	pg_exec(m, "SELECT count(*) FROM connbudget.application_limits");
	pg_exec(m, "SELECT count(*) FROM connbudget.budget, connbudget.applications, connbudget.pods");
	is_str(pg_exec_error(m, "LOCK TABLE connbudget.application_limits IN ACCESS SHARE MODE", msg, sizeof(msg)),
		   "", "mallory may LOCK application_limits IN ACCESS SHARE MODE");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
				   "WHERE a.usename = 'mallory' AND l.relation = 'connbudget.application_limits'::regclass "
				   "AND l.mode = 'AccessShareLock' AND l.granted"), 1,
		   "and holds it in an open transaction");
	pg_exec(su, "SET lock_timeout = '3s'");
	st = pg_exec_error(su, "INSERT INTO connbudget.application_limits VALUES ('f_probe', 0, 1, 1, '{alice}')",
					   msg, sizeof(msg));
	is_str(st, "", "meanwhile the superuser's INSERT into application_limits commits within lock_timeout%s%s",
		   st[0] ? ": " : "", msg);
	is_int(app_long("max_connections", "f_probe"), 1, "and is in force");
	st = pg_exec_error(su, "DELETE FROM connbudget.application_limits WHERE application_name = 'f_probe'",
					   msg, sizeof(msg));
	is_str(st, "", "so does the DELETE of it%s%s", st[0] ? ": " : "", msg);
	pg_exec(m, "COMMIT");
	PQfinish(su);
	PQfinish(m);
	after("reading and ACCESS SHARE locks held open");
}

/*
 * CREATE RULE takes its ACCESS EXCLUSIVE lock before it checks that she
 * owns the table: queued behind her own ACCESS SHARE lock, it would make
 * every change of the limits (and the loader's reload) wait behind it.
 */
static void
test_lock_queue(void)
{
	PGconn	   *holder = must_connect("mallory", "open_app", "m-f3");
	PGconn	   *queuer = must_connect("mallory", "open_app", "m-f4");
	PGconn	   *su = must_connect("postgres", "admin", NULL);
	char		msg[1024];
	const char *st;
	long		waiting;

	pg_exec(holder, "BEGIN");
	pg_exec(holder, "LOCK TABLE connbudget.application_limits IN ACCESS SHARE MODE");
	send_async(queuer, "CREATE RULE evil AS ON INSERT TO connbudget.application_limits DO INSTEAD NOTHING");
	waiting = pg_wait_for(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' "
						  "AND wait_event_type = 'Lock'", 1, 1000);
	diag("her CREATE RULE %s for a lock", waiting == 1 ? "waits" : "does not wait");
	pg_exec(su, "SET lock_timeout = '3s'");
	st = pg_exec_error(su, "INSERT INTO connbudget.application_limits VALUES ('f_probe', 0, 1, 1, '{alice}')",
					   msg, sizeof(msg));
	is_str(st, "", "with her CREATE RULE queued behind her ACCESS SHARE lock, the superuser's INSERT "
		   "commits within lock_timeout%s%s", st[0] ? ": " : "", msg);
	pg_exec(holder, "ROLLBACK");
	st = finish_async(queuer, msg, sizeof(msg));
	ok(strcmp(st, "42501") == 0, "her CREATE RULE is refused with 42501 (%s %s)", st, msg);
	pg_exec(su, "DELETE FROM connbudget.application_limits WHERE application_name = 'f_probe'");
	PQfinish(su);
	PQfinish(queuer);
	PQfinish(holder);
	after("a CREATE RULE queued behind her own lock");
}

/* ---- g: SECURITY DEFINER ---- */

static void
test_security_definer(void)
{
	const char *ext_functions =
		"FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid "
		"AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' "
		"JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'connbudget' ";
	char		sql[1024];

	snprintf(sql, sizeof(sql), "SELECT count(*) %s", ext_functions);
	ok(pg_long(admin, sql) >= 5, "the extension's functions are found through pg_depend (%ld)", pg_long(admin, sql));
	snprintf(sql, sizeof(sql), "SELECT string_agg(p.oid::regprocedure::text, ', ') %s WHERE p.prosecdef "
			 "AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)", ext_functions);
	is_str(pg_value(admin, sql), NULL,
		   "none of them is SECURITY DEFINER without SET search_path = pg_catalog, pg_temp");
	snprintf(sql, sizeof(sql), "SELECT string_agg(p.oid::regprocedure::text, ', ') %s "
			 "WHERE NOT (SELECT rolsuper FROM pg_roles WHERE oid = p.proowner)", ext_functions);
	is_str(pg_value(admin, sql), NULL, "and every one is owned by a superuser");
	after("looking for SECURITY DEFINER functions");
}

/* ---- h: parallel workers ---- */

static void
test_parallel_workers(void)
{
	PGconn	   *m;
	const char *force = pg_long(admin, "SHOW server_version_num") >= 160000 ?
		"SET debug_parallel_query = on" : "SET force_parallel_mode = on";
	char		before[128],
				during[128] = "",
				plan[4096],
				pid[16];
	const char *counts =
		"SELECT format('governed %s, other %s, pods %s, m-h connections %s', "
		"b.governed, b.other, b.pods, (SELECT connections FROM connbudget.pods WHERE pod = 'm-h')) "
		"FROM connbudget.budget b";
	long		workers = 0;

	settle();
	m = must_connect("mallory", "open_app", "m-h");
	pg_exec(admin, "CREATE TABLE public.big AS SELECT g FROM generate_series(1, 2000) g");
	pg_exec(admin, "ANALYZE public.big");
	pg_exec(admin, "GRANT SELECT ON public.big TO mallory");
	pg_exec(m, force);
	pg_exec(m, "SET parallel_setup_cost = 0");
	pg_exec(m, "SET parallel_tuple_cost = 0");
	pg_exec(m, "SET min_parallel_table_scan_size = 0");
	pg_exec(m, "SET max_parallel_workers_per_gather = 4");
	snprintf(pid, sizeof(pid), "%s", pg_value(m, "SELECT pg_backend_pid()"));
	snprintf(before, sizeof(before), "%s", pg_value(admin, counts));

	send_async(m, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
			   "SELECT count(*) FROM public.big WHERE pg_sleep(0.001) IS NOT NULL");
	{
		char		sql[256];
		double		deadline = now_seconds() + 5;

		snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity "
				 "WHERE backend_type = 'parallel worker' AND leader_pid = %s", pid);
		while (now_seconds() < deadline && (workers = pg_long(admin, sql)) == 0)
			sleep_ms(5);
		if (workers > 0)
			snprintf(during, sizeof(during), "%s", pg_value(admin, counts));
	}
	ok(workers > 0, "her query runs with parallel workers (%ld seen in pg_stat_activity)", workers);
	is_str(during, before, "while they run, governed, other and the pods are as before: %s", before);
	is_str(finish_async(m, plan, sizeof(plan)), "", "her parallel query completes");
	ok(strstr(plan, "Workers Launched: ") && !strstr(plan, "Workers Launched: 0"),
	   "with workers launched: %.*s", (int) strcspn(strstr(plan, "Workers Launched") ?
													strstr(plan, "Workers Launched") : "", "\n"),
	   strstr(plan, "Workers Launched") ? strstr(plan, "Workers Launched") : "");
	is_str(pg_value(admin, counts), before, "and after they end");
	ok(pg_long(m, "SELECT max_size FROM connbudget.pool_share(3)") >= 1,
	   "pool_share() still works in her session");
	is_int(pg_long(m, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-h' AND demand = 3 AND connections = 1"), 1,
		   "and the views, read under her parallel settings, show her one pod as it is");
	is_int(pg_long(m, "SELECT count(*) FROM connbudget.budget WHERE governed >= 1"), 1,
		   "the budget view reads under them too");
	PQfinish(m);
	pg_exec(admin, "DROP TABLE public.big");
	after("parallel workers");
}

/* ---- i: 1,001 limits rows ---- */

static void
test_thousand_applications(void)
{
	char		msg[1024];
	const char *st;
	long		rows = pg_long(admin, "SELECT count(*) FROM connbudget.application_limits");
	char		sql[256];
	PGconn	   *alice;

	st = pg_exec_error(admin, "INSERT INTO connbudget.application_limits (application_name) "
					   "SELECT 'bulk-' || g FROM generate_series(1, 1001) g", msg, sizeof(msg));
	ok(strcmp(st, "54000") == 0 && strstr(msg, "may hold at most 1000 applications"),
	   "inserting 1,001 rows: refused with 54000, at most 1000 applications (%s %s)", st, msg);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.application_limits"), rows,
		   "the table keeps its %ld rows", rows);
	snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits (application_name) "
			 "SELECT 'bulk-' || g FROM generate_series(1, %ld) g", 1000 - rows);
	st = pg_exec_error(admin, sql, msg, sizeof(msg));
	is_str(st, "", "%ld rows more, 1,000 in all, are accepted%s%s", 1000 - rows, st[0] ? ": " : "", msg);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.applications WHERE application_name LIKE 'bulk-%'"),
		   1000 - rows, "and in force: the applications view shows them");
	alice = connect_as("alice", "alice_app", "alice-i");
	ok(alice != NULL && pg_long(alice, "SELECT max_size FROM connbudget.pool_share()") == 10,
	   "alice connects and gets her share of 10 among 1,000 applications");
	PQfinish(alice);
	st = pg_exec_error(admin, "INSERT INTO connbudget.application_limits (application_name) VALUES ('bulk-one-more')",
					   msg, sizeof(msg));
	ok(strcmp(st, "54000") == 0 && strstr(msg, "It holds 1001"),
	   "the 1,001st row is refused with 54000 (%s %s)", st, msg);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name LIKE 'bulk-%'");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.applications WHERE application_name LIKE 'bulk-%'"), 0,
		   "removed, they are gone from the view");
	after("1,001 limits rows");
}

/* ---- j: hostile application names ---- */

static void
test_hostile_application_names(void)
{
	char		cut[80],
				long_tail[80];
	const char *names[] = {
		"alice_app ", " alice_app", "Alice_App", "ALICE_APP", "alice_app\t", "alice_app\n",
		"alice_app\x7f", "alice_app\xc2\xa0", "alice\\_app", "alice_app;",
		"x'); DROP TABLE connbudget.application_limits; --", "o'brien \"q\" \\x",
		"\x01\x02\x03", cut, long_tail,
	};
	const char *bound[] = {"alice_app", LONG_APP, APP62};
	long		refused = app_long("refused", "alice_app");

	/* 62 bytes of a bound name and a 2-byte character: cut, it is that name */
	snprintf(cut, sizeof(cut), "%s\xc3\xa9", APP62);
	/* a bound name of 63 bytes and more: cut at 63, it is that name */
	snprintf(long_tail, sizeof(long_tail), "%stail", LONG_APP);

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
	{
		char		pod[32],
					shown[256],
					sql[512];
		int			is_bound = 0;
		PGconn	   *oracle,
				   *conn;

		/* what pg_stat_activity calls a connection of this name (a superuser is let in) */
		snprintf(pod, sizeof(pod), "m-j%zu", i);
		oracle = connect_opts("postgres", names[i], "-c connbudget.pod=su-j");
		if (!oracle)
			bail_out("superuser: %s", last_error);
		snprintf(shown, sizeof(shown), "%.255s", pg_value(oracle, "SELECT application_name FROM pg_stat_activity "
													  "WHERE pid = pg_backend_pid()"));
		PQfinish(oracle);
		for (size_t b = 0; b < sizeof(bound) / sizeof(bound[0]); b++)
			is_bound |= strcmp(shown, bound[b]) == 0;

		conn = connect_as("mallory", names[i], pod);
		if (is_bound)
		{
			ok(conn == NULL && strcmp(last_state, "42501") == 0,
			   "name %zu, which pg_stat_activity shows as the bound '%.20s...': refused with 42501 (%s)",
			   i, shown, conn ? "admitted" : last_state);
			PQfinish(conn);
			conn = connect_as("alice", names[i], "alice-j");
			ok(conn != NULL && pod_connections(shown, "alice-j") == 1,
			   "alice, to whom it is bound, is let in and counted under it");
			PQfinish(conn);
			continue;
		}
		if (!ok(conn != NULL, "name %zu ('%s' in pg_stat_activity): let in, it is no bound name", i, shown))
		{
			diag("%s", first_line(last_error));
			continue;
		}
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM connbudget.pods p, pg_stat_activity a "
				 "WHERE p.pod = '%s' AND a.pid = %d AND p.application_name = a.application_name "
				 "AND p.connections = 1", pod, PQbackendPID(conn));
		is_int(pg_long(admin, sql), 1, "name %zu: the pods view names it as pg_stat_activity does", i);
		PQfinish(conn);
	}
	is_int(app_long("connections", "alice_app"), 0, "alice_app holds no connection of hers");
	is_int(app_long("refused", "alice_app"), refused, "and refused none: no name was alice_app");
	after("hostile application names");
}

/* ---- k: bad pod ids and pool session ids ---- */

static void
test_bad_ids(void)
{
	char		p64[80];
	const struct
	{
		const char *value;
		const char *detail;
		const char *label;
	}			bad[] = {
		{p64, "at most 63 bytes; this one is 64 bytes", "64 bytes"},
		{"a\x01z", "byte 2 is 0x01", "a control character"},
		{"a\\\tz", "byte 2 is 0x09", "an escaped tab"},
		{"a\x7fz", "byte 2 is 0x7f", "DEL"},
		{"p\xc3\xb6" "d", "byte 2 is 0xc3", "a non-ASCII character"},
	};
	const char *settings[] = {"connbudget.pod", "connbudget.pool_session"};
	char		options[256];
	PGconn	   *conn;

	memset(p64, 'p', 64);
	p64[64] = '\0';
	for (int s = 0; s < 2; s++)
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		{
			char		want[128];

			snprintf(options, sizeof(options), "%s-c %s=%s", s ? "-c connbudget.pod=m-k " : "",
					 settings[s], bad[i].value);
			snprintf(want, sizeof(want), "invalid value for parameter \"%s\"", settings[s]);
			conn = connect_opts("mallory", "open_app", options);
			ok(conn == NULL && strcmp(last_state, "22023") == 0 && strstr(last_error, want) &&
			   strstr(last_error, bad[i].detail),
			   "%s with %s: FATAL 22023 %s, saying %s (%s)", settings[s], bad[i].label, want,
			   bad[i].detail, conn ? "admitted" : last_state);
			PQfinish(conn);
		}

	is_int(pod_connections("open_app", "m-k"), 0, "none of her refused connections is counted");

	/* a wrong password goes first: nothing of the bad id is looked at */
	conn = pg_connect_ex(last_state, last_error, sizeof(last_error), "user=mallory", "password=guess",
						 "options=-c connbudget.pod=a\x01z", (const char *) NULL);
	ok(conn == NULL && strcmp(last_state, "28P01") == 0,
	   "with a wrong password, a bad pod id gets 28P01 like any other (%s)", last_state);

	/* empty means "not given" */
	conn = connect_opts("mallory", "open_app", "-c connbudget.pod=");
	ok(conn != NULL && pg_long(conn, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'open_app' "
							   "AND pod = '127.0.0.1' AND connections = 1") == 1,
	   "an empty connbudget.pod means none: her pod is her address, 127.0.0.1");
	PQfinish(conn);
	conn = connect_opts("mallory", "open_app", "-c connbudget.pod=m-k -c connbudget.pool_session=");
	ok(conn != NULL, "an empty connbudget.pool_session means none: let in");
	PQfinish(conn);
	after("bad pod ids and pool session ids");
}

/* ---- l: client_addr as private as in pg_stat_activity ---- */

static void
test_client_addr_privacy(void)
{
	PGconn	   *alice_named,
			   *alice_derived;
	const struct
	{
		const char *role;
		const char *pod;
		long		sees;		/* alice's addresses pg_stat_activity shows this viewer */
	}			viewers[] = {
		{"mallory", "m-l", 0},
		{"alicenoinherit", "noinherit-l", 0},
		{"alice", "alice-l2", 2},
		{"alicemate", "mate-l", 2},
		{"statsreader", "stats-l", 2},
		{"postgres", "su-l", 2},
	};
	const char *compare =
		"SELECT format('%s/%s/%s/%s', "
		"(SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice' AND application_name = 'alice_app' "
		" AND client_addr IS NOT NULL), "
		"(SELECT count(*) FROM connbudget.pods WHERE application_name = 'alice_app' AND client_addr IS NOT NULL), "
		"(SELECT count(*) FROM connbudget.pods WHERE application_name = 'alice_app' AND pod IS NOT NULL), "
		"(SELECT count(*) FROM connbudget.pods WHERE application_name = 'alice_app'))";

	settle();
	alice_named = must_connect("alice", "alice_app", "alice-l");
	alice_derived = must_connect("alice", "alice_app", NULL);
	for (size_t i = 0; i < sizeof(viewers) / sizeof(viewers[0]); i++)
	{
		PGconn	   *v = connect_as(viewers[i].role, "open_app", viewers[i].pod);
		char		want[64];

		if (!v)
			bail_out("%s: %s", viewers[i].role, last_error);
		/* same connection, same moment: pg_stat_activity, addresses, ids, rows */
		snprintf(want, sizeof(want), "%ld/%ld/%d/2", viewers[i].sees, viewers[i].sees,
				 viewers[i].sees ? 2 : 1);
		is_str(pg_value(v, compare), want,
			   "%s: pg_stat_activity shows %ld of alice's addresses, and so does connbudget.pods, "
			   "with %s address-named pod id (pg_stat_activity/pods/ids/rows)",
			   viewers[i].role, viewers[i].sees, viewers[i].sees ? "her" : "no");
		PQfinish(v);
	}
	PQfinish(alice_named);
	PQfinish(alice_derived);
	after("reading other roles' client_addr");
}

/* ---- m: filling the budget ---- */

static void
test_filling(void)
{
	PGconn	   *held[100],
			   *alice[20],
			   *su[3];
	int			nheld = 0,
				nalice = 0,
				governed_flood,
				other_flood = 0,
				in_row = 0,
				wrong = 0;
	long		share;
	char		sample[1024] = "",
				other_sample[1024] = "";

	settle();
	pg_exec(admin, "UPDATE connbudget.application_limits SET min_connections = 4 WHERE application_name = 'alice_app'");

	/* pods of open_app and of invented applications, until she is refused ten times in a row */
	for (int i = 0; i < 100 && in_row < 10 && nheld < 100; i++)
	{
		char		name[32];
		PGconn	   *c;

		snprintf(name, sizeof(name), "fill-%d", i);
		c = connect_as("mallory", i % 2 ? name : "open_app", name);
		if (c)
		{
			held[nheld++] = c;
			in_row = 0;
			continue;
		}
		in_row++;
		if (strcmp(last_state, "53300") != 0)
			wrong++;
		if (!sample[0])
			snprintf(sample, sizeof(sample), "%.1000s", last_error);
	}
	governed_flood = nheld;
	is_int(governed_flood, BUDGET - 4, "mallory's pods fill the budget of %d but for alice's unused "
		   "minimum of 4", BUDGET);
	ok(wrong == 0 && strstr(sample, "would take another application's guaranteed minimum"),
	   "every further connection of hers is refused with 53300: %s", first_line(sample));

	alice[nalice] = connect_as("alice", "alice_app", "alice-m");
	if (!alice[nalice])
		bail_out("alice: %s", last_error);
	nalice++;
	share = pg_long(alice[0], "SELECT max_size FROM connbudget.pool_share()");
	ok(share >= 4, "alice's share is at least her minimum of 4 (%ld)", share);
	while (nalice < 20 && (alice[nalice] = connect_as("alice", "alice_app", "alice-m")) != NULL)
		nalice++;
	is_int(nalice, 4, "alice opens the 4 connections guaranteed to her, and no more: mallory's "
		   "connections were admitted first and are not taken back");
	ok(strcmp(last_state, "53300") == 0 && strstr(last_error, "connection budget exhausted"),
	   "her fifth is refused because the budget is full (53300)");
	if (share > nalice)
		diag("alice's pool_share() said %ld while %d connections were possible", share, nalice);

	su[0] = connect_as("postgres", "alice_app", "su-m");
	ok(su[0] != NULL, "a superuser still gets in, even as alice_app with a pod, over the full budget");

	/* then every slot PostgreSQL has, with "other" connections */
	while (nheld < 100)
	{
		char		name[32];

		snprintf(name, sizeof(name), "other-%d", other_flood);
		if ((held[nheld] = connect_as("mallory", name, NULL)) == NULL)
		{
			snprintf(other_sample, sizeof(other_sample), "%s: %.1000s", last_state, last_error);
			break;
		}
		nheld++;
		other_flood++;
	}
	ok(strstr(other_sample, "53300") && strstr(other_sample, "reserved for"),
	   "mallory's %d \"other\" connections fill PostgreSQL's slots until it refuses: %s",
	   other_flood, first_line(other_sample));
	su[1] = connect_as("postgres", "admin", NULL);
	su[2] = connect_as("postgres", "admin", NULL);
	ok(su[1] != NULL && su[2] != NULL, "two superusers still get in (superuser_reserved_connections)");
	diag("with every slot taken, alice's share reads %s",
		 pg_value(alice[0], "SELECT row(s.*)::text FROM connbudget.pool_share() s"));
	is_int(pod_connections("alice_app", "alice-m"), nalice, "alice still holds her %d connections", nalice);

	pg_finish_all(held, nheld);
	pg_finish_all(alice, nalice);
	pg_finish_all(su, 3);
	pg_exec(admin, "UPDATE connbudget.application_limits SET min_connections = 0 WHERE application_name = 'alice_app'");
	after("filling the budget and every slot");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	log_start = server_log_size();
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE alice LOGIN PASSWORD 'pw-alice'");
	pg_exec(admin, "CREATE ROLE bob LOGIN PASSWORD 'pw-bob'");
	pg_exec(admin, "CREATE ROLE mallory LOGIN PASSWORD 'pw-mallory'");
	pg_exec(admin, "CREATE ROLE alicemate LOGIN PASSWORD 'pw-alicemate' IN ROLE alice");
	pg_exec(admin, "CREATE ROLE alicenoinherit LOGIN NOINHERIT PASSWORD 'pw-alicenoinherit' IN ROLE alice");
	pg_exec(admin, "CREATE ROLE statsreader LOGIN PASSWORD 'pw-statsreader' IN ROLE pg_read_all_stats");
	pg_exec(admin, LIMIT_ROWS);
	remember_limits();

	test_startup_option_tricks();
	test_identity_after_connect();
	test_pool_share_demands();
	test_hostile_application_names();
	test_bad_ids();
	test_client_addr_privacy();
	test_security_definer();
	test_parallel_workers();
	test_privileges();
	test_readers_block_nothing();
	test_lock_queue();
	test_thousand_applications();
	test_filling();
	test_hostile_search_path();
	test_extension_race();

	PQfinish(admin);
	return done_testing();
}
