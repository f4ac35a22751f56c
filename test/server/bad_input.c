/*
 * bad_input.c -- odd and hostile input gets a clear answer and loses
 * nothing: over-long and malformed pod ids, names with quotes,
 * backslashes, multibyte and control characters, SQL injection attempts
 * through application_name and the pod id.  A pod id of 10,000 characters
 * is dropped by PostgreSQL itself and the server still answers.  Every
 * invalid limit (and a negative demand) is refused with its SQLSTATE, and
 * afterwards the limits in force and the pod's share are unchanged.
 *
 * cluster: max_connections=40 superuser_reserved_connections=3
 */
#include "../lib/pgtest.h"

static PGconn *admin;

/* Connect with this pod option; returns the connection or the error. */
static PGconn *
try_pod(const char *options, char *st, char *msg, size_t len)
{
	char		o[16384];

	snprintf(o, sizeof(o), "options=%s", options);
	return pg_connect_ex(st, msg, len, "application_name=odd", o, (const char *) NULL);
}

static void
expect_pod_refused(const char *label, const char *options, const char *detail)
{
	char		st[6],
				msg[4096];
	PGconn	   *conn = try_pod(options, st, msg, sizeof(msg));

	ok(conn == NULL && strcmp(st, "22023") == 0 &&
	   strstr(msg, "invalid value for parameter \"connbudget.pod\"") != NULL,
	   "%s: refused with 22023 invalid value for parameter \"connbudget.pod\"", label);
	ok(strstr(msg, detail) != NULL, "%s: the detail says '%s'", label, detail);
	if (conn == NULL && strstr(msg, detail) == NULL)
		diag("message was: %s", msg);
	PQfinish(conn);
}

static void
expect_pod_accepted(const char *label, const char *options, const char *want_pod)
{
	char		st[6],
				msg[4096];
	PGconn	   *conn = try_pod(options, st, msg, sizeof(msg));

	ok(conn != NULL, "%s: accepted", label);
	if (conn == NULL)
	{
		diag("%s", msg);
		return;
	}
	is_str(pg_value(admin, "SELECT string_agg(pod, ',') FROM connbudget.pods "
					"WHERE application_name = 'odd' AND connections > 0"),
		   want_pod, "%s: the pods view shows it verbatim", label);
	PQfinish(conn);
	pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'odd'",
				0, 10000);
}

static void
test_pod_ids(void)
{
	char	   *big = malloc(12000);
	char		st[6],
				msg[4096];
	PGconn	   *conn;

	/*
	 * 10,000 characters: more than a startup packet may carry, so
	 * PostgreSQL itself drops the connection before any hook runs and logs
	 * why (the client only sees the connection close).
	 */
	strcpy(big, "-c connbudget.pod=");
	memset(big + strlen(big), 'p', 10000);
	big[18 + 10000] = '\0';
	{
		long		log_from = server_log_size();

		conn = try_pod(big, st, msg, sizeof(msg));
		ok(conn == NULL, "a pod id of 10,000 characters: the connection is refused");
		sleep_ms(200);
		ok(server_log_contains(log_from, "invalid length of startup packet"),
		   "the server log says the startup packet was too long");
		PQfinish(conn);
		is_int(pg_long(admin, "SELECT 1"), 1, "the server still answers");
	}

	/* 5,000: fits in the packet, refused by connbudget with the reason */
	big[18 + 5000] = '\0';
	expect_pod_refused("a pod id of 5,000 characters", big,
					   "A pod id is at most 63 bytes; this one is 5000 bytes.");
	big[18 + 64] = '\0';
	expect_pod_refused("a pod id of 64 bytes", big,
					   "A pod id is at most 63 bytes; this one is 64 bytes.");
	big[18 + 63] = '\0';
	expect_pod_accepted("a pod id of 63 bytes", big, big + 18);
	free(big);

	expect_pod_refused("a multibyte pod id", "-c connbudget.pod=p\xc3\xb6" "d",
					   "byte 2 is 0xc3");
	expect_pod_refused("a pod id with a control character", "-c connbudget.pod=a\x01z",
					   "byte 2 is 0x01");

	/* quotes and backslashes are fine (a backslash escapes in options) */
	expect_pod_accepted("a pod id with quotes and a backslash",
						"-c connbudget.pod=o'b\"r\\\\n", "o'b\"r\\n");
	expect_pod_accepted("an SQL injection attempt as pod id",
						"-c connbudget.pod=x');\\ DROP\\ TABLE\\ connbudget.application_limits;--",
						"x'); DROP TABLE connbudget.application_limits;--");
	expect_pod_accepted("a pod id given as --connbudget.pod=", "--connbudget.pod=dash-form",
						"dash-form");
	expect_pod_accepted("the last of several pod settings wins",
						"-c connbudget.pod=first -c connbudget.pod=second", "second");

	expect_pod_accepted("switches grouped the way getopt groups them (-ec name=value)",
						"-ec connbudget.pod=grouped", "grouped");
	expect_pod_accepted("a value glued to its switch (-cname=value)",
						"-cconnbudget.pod=glued", "glued");

	/* an empty setting means "not given": the pod is the address */
	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name) VALUES ('odd')");
	expect_pod_accepted("an empty pod setting", "-c connbudget.pod=", "127.0.0.1");
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

static void
test_application_names(void)
{
	struct
	{
		const char *given;
		const char *shown;
		const char *label;
	}			cases[] = {
		{"o'brien \"q\" \\x", "o'brien \"q\" \\x", "quotes and a backslash"},
		{"x'); DROP TABLE connbudget.application_limits; --",
		"x'); DROP TABLE connbudget.application_limits; --", "an SQL injection attempt"},
		{"caf\xc3\xa9", "caf??", "a multibyte name (cleaned like pg_stat_activity)"},
		{"tab\there", "tab?here", "a control character (cleaned like pg_stat_activity)"},
	};

	/* PostgreSQL 16 shows such bytes as \xNN escapes, 15 as '?' */
	if (pg_long(admin, "SELECT (current_setting('server_version_num')::int >= 160000)::int") == 1)
	{
		cases[2].shown = "caf\\xc3\\xa9";
		cases[3].shown = "tab\\x09here";
	}

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char		app[256];
		PGconn	   *conn;
		const char *params[] = {"host", "port", "user", "dbname", "application_name", NULL};
		const char *values[6];

		values[0] = getenv("PGHOST");
		values[1] = getenv("PGPORT");
		values[2] = "postgres";
		values[3] = "postgres";
		values[4] = cases[i].given;
		values[5] = NULL;
		(void) app;
		conn = PQconnectdbParams(params, values, 0);
		ok(PQstatus(conn) == CONNECTION_OK, "application_name with %s: connects",
		   cases[i].label);
		/* make it governed so that it shows up in the views */
		{
			PGresult   *res = PQexec(conn, "SELECT application_name FROM pg_stat_activity "
									 "WHERE pid = pg_backend_pid()");

			is_str(PQgetvalue(res, 0, 0), cases[i].shown,
				   "application_name with %s: pg_stat_activity shows '%s'",
				   cases[i].label, cases[i].shown);
			PQclear(res);
		}
		{
			const char *ins_params[1] = {cases[i].shown};
			PGresult   *res = PQexecParams(admin,
										   "INSERT INTO connbudget.application_limits "
										   "(application_name, max_connections) VALUES ($1, 5)",
										   1, NULL, ins_params, NULL, NULL, 0);

			ok(PQresultStatus(res) == PGRES_COMMAND_OK,
			   "application_name with %s: can be configured as '%s'",
			   cases[i].label, cases[i].shown);
			PQclear(res);
			res = PQexecParams(admin,
							   "SELECT connections FROM connbudget.applications "
							   "WHERE application_name = $1",
							   1, NULL, ins_params, NULL, NULL, 0);
			is_str(PQntuples(res) ? PQgetvalue(res, 0, 0) : "none", "1",
				   "application_name with %s: its connection is governed under that name",
				   cases[i].label);
			PQclear(res);
		}
		PQfinish(conn);
	}
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.application_limits"), 4,
		   "every odd name is in the limits table, nothing else");

	/* a long name cut inside a multibyte character: cut like PostgreSQL cuts it */
	{
		char		name[80];
		char		opts[] = "-c connbudget.pod=long";
		const char *params[] = {"host", "port", "user", "dbname", "application_name",
		"options", NULL};
		const char *values[7];
		PGconn	   *conn;

		memset(name, 'a', 62);
		strcpy(name + 62, "\xc3\xa9" "b");
		values[0] = getenv("PGHOST");
		values[1] = getenv("PGPORT");
		values[2] = "postgres";
		values[3] = "postgres";
		values[4] = name;
		values[5] = opts;
		values[6] = NULL;
		conn = PQconnectdbParams(params, values, 0);
		ok(PQstatus(conn) == CONNECTION_OK, "a 65-byte name ending in a multibyte character connects");
		{
			char		shown[128];

			snprintf(shown, sizeof(shown), "%s",
					 pg_value(conn, "SELECT application_name FROM pg_stat_activity "
							  "WHERE pid = pg_backend_pid()"));
			is_int((long) strlen(shown), 62, "pg_stat_activity shows it cut before the character (62 bytes)");
			is_str(pg_value(admin, "SELECT application_name FROM connbudget.pods WHERE pod = 'long'"),
				   shown, "its application is named exactly as pg_stat_activity shows it");
		}
		PQfinish(conn);

		/* near the limit, an escaped byte is cut as pg_stat_activity cuts it */
		memset(name, 'b', 60);
		strcpy(name + 60, "\xc3\xa9");
		values[4] = name;
		values[5] = "-c connbudget.pod=near";
		conn = PQconnectdbParams(params, values, 0);
		{
			char		shown[128];

			snprintf(shown, sizeof(shown), "%s",
					 pg_value(conn, "SELECT application_name FROM pg_stat_activity "
							  "WHERE pid = pg_backend_pid()"));
			is_str(pg_value(admin, "SELECT application_name FROM connbudget.pods WHERE pod = 'near'"),
				   shown, "a 62-byte name with a multibyte character is named as pg_stat_activity shows it (%s)",
				   shown + 58);
		}
		PQfinish(conn);
	}
	is_int(pg_long(admin, "SELECT count(*) FROM pg_class WHERE relname = 'application_limits'"), 1,
		   "the limits table is still there");
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

static void
test_bad_limits_lose_nothing(void)
{
	const char *bad[] = {
		"INSERT INTO connbudget.application_limits VALUES ('a', -1, NULL, 1)",
		"INSERT INTO connbudget.application_limits VALUES ('a', 0, -1, 1)",
		"INSERT INTO connbudget.application_limits VALUES ('a', 5, 4, 1)",
		"INSERT INTO connbudget.application_limits VALUES ('a', 0, NULL, 0)",
		"INSERT INTO connbudget.application_limits VALUES ('', 0, NULL, 1)",
		"INSERT INTO connbudget.application_limits VALUES (repeat('n', 64), 0, NULL, 1)",
		"INSERT INTO connbudget.application_limits VALUES (E'a\\x01', 0, NULL, 1)",
		"INSERT INTO connbudget.application_limits VALUES ('\xc3\xa9t\xc3\xa9', 0, NULL, 1)",
		"INSERT INTO connbudget.application_limits VALUES ('big', 38, NULL, 1)",
		"UPDATE connbudget.application_limits SET weight = -3",
		"SELECT * FROM connbudget.pool_share(-1)",
	};
	const char *want[] = {"23514", "23514", "23514", "23514", "23514", "23514",
	"23514", "23514", "23514", "23514", "22023"};
	PGconn	   *pod = pg_connect_or_bail("application_name=keep",
										 "options=-c connbudget.pod=k");

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('keep', 1, 9, 2)");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		char		msg[1024];
		const char *st = pg_exec_error(i == 10 ? pod : admin, bad[i], msg, sizeof(msg));

		is_str(st, want[i], "refused with %s: %s", want[i], bad[i]);
	}
	is_str(pg_value(admin, "SELECT format('%s/%s/%s/%s', application_name, min_connections, "
					"max_connections, weight) FROM connbudget.applications"),
		   "keep/1/9/2", "after every refusal the limits in force are unchanged");
	is_int(pg_long(pod, "SELECT max_size FROM connbudget.pool_share()"), 9,
		   "and the pod still gets its share (capped at 9)");
	PQfinish(pod);
	is_int(pg_long(admin, "SELECT 1"), 1, "the server still answers");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");

	test_pod_ids();
	test_application_names();
	test_bad_limits_lose_nothing();

	PQfinish(admin);
	return done_testing();
}
