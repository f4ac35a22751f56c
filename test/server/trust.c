/*
 * trust.c -- a login that is not trusted with another application's
 * budget cannot take, dilute or distort it.
 *
 * Role mallory attacks the applications of roles apiuser and webuser,
 * each attack a test of its own: claiming a bound application, joining
 * another role's pod, reporting demand for it, inventing 2,000 pod ids,
 * inventing 200 application names, reading where other roles connect from,
 * changing the limits, and role names full of SQL and control characters.
 * After each, the server answers, the limits table is intact, and
 * connbudget.budget.governed equals the governed backends in
 * pg_stat_activity.
 *
 * In detail: claiming a bound application is refused with 42501 before
 * it is counted, and counted in refused, while apiuser takes all 5 slots
 * of its cap as mallory retries in a loop; members of a bound role and
 * superusers get in.  Joining webuser's pod is refused with 42501, and so
 * is reporting demand for it.  Inventing 2,000 pod ids: she holds 50
 * (connbudget.max_pods_per_role), every further one is refused with 53400
 * naming the setting, and other roles still register pods; likewise for
 * pool sessions.  Inventing 200 application names with pods: 10 get in
 * (connbudget.unconfigured_max_connections = 10), the other 190 are
 * refused, and apiuser still gets its 5; under unconfigured_applications
 * = refuse such a name is refused with 42501 (without a pod it is
 * "other"), under other it is no pod.  client_addr of other roles' pods
 * is hidden from her, as in pg_stat_activity.  Changing
 * application_limits without the privilege fails.  Under enforce = warn
 * her claim is let in and logged as a warning; under off, let in without
 * a word.
 *
 * Every role but the superuser logs in with a password (scram-sha-256), as
 * on a production server: the connect hook runs after the password is
 * checked.
 *
 * Budget: 100 - 3 - 10 = 87.  A role may hold 50 live pods.  While mallory
 * floods, pod_ttl is raised so that her leases outlast the flood, however
 * long her password handshakes take.
 *
 * cluster: max_connections=100 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.max_pods_per_role=50 connbudget.pod_ttl=2000 connbudget.refresh_interval=200ms auth=scram-sha-256
 */
#include "attack.h"

/* ---- connections ---- */

/*
 * Every login role's password is "pw-" and its name; the roles named with
 * SQL and control characters share ODD_PASSWORD.  The superuser postgres
 * is trusted, and ignores a password it is given.
 */
#define ODD_PASSWORD "pw-odd-role"

static const char *
password_for(const char *role)
{
	static char pair[128];

	snprintf(pair, sizeof(pair), "password=pw-%s", role);
	return pair;
}

static PGconn *
connect_as(const char *role, const char *app, const char *pod, char *st,
		   char *msg, size_t msglen)
{
	return pg_connect_pod(st, msg, msglen, role, app, pod, password_for(role), (const char *) NULL);
}

/*
 * A flood of mallory's: up to 2,000 connects of application "shared", the
 * startup options of the i-th made with options_fmt and i, each that gets
 * in calling pool_share() once; she stops once 100 are refused with 53400.
 */
typedef struct Flood
{
	int			leased;			/* got in */
	int			limited;		/* refused with 53400 */
	int			other;			/* refused otherwise */
	char		sample[2048];	/* the message of the first 53400 */
} Flood;

static Flood
flood(const char *options_fmt)
{
	Flood		f = {0};

	for (int i = 0; i < 2000 && f.limited < 100; i++)
	{
		char		options[128],
					st[6],
					msg[2048];
		PGconn	   *conn;

		snprintf(options, sizeof(options), options_fmt, i);
		conn = pg_connect_pod(st, msg, sizeof(msg), "mallory", "shared", NULL,
							  password_for("mallory"), options, (const char *) NULL);
		if (conn)
		{
			pg_long(conn, "SELECT max_size FROM connbudget.pool_share(1)");
			PQfinish(conn);
			f.leased++;
		}
		else if (strcmp(st, "53400") == 0)
		{
			if (!f.sample[0])
				snprintf(f.sample, sizeof(f.sample), "%s", msg);
			f.limited++;
		}
		else
			f.other++;
	}
	return f;
}

static long
connections_of(const char *app)
{
	char		sql[256];

	snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT connections FROM connbudget.applications "
			 "WHERE application_name = '%s'), 0)", app);
	return pg_long(admin, sql);
}

/* Change a setting with ALTER SYSTEM and let the server reload it. */
static void
reload(const char *sql)
{
	pg_exec(admin, sql);
	pg_exec(admin, "SELECT pg_reload_conf()");
	sleep_ms(300);
}

/*
 * A flood of pods lasts longer than pod_ttl once every connection proves
 * its password; the leases are kept for the flood and end after it.
 */
static void
long_leases(int on)
{
	reload(on ? "ALTER SYSTEM SET connbudget.pod_ttl = '60s'" : "ALTER SYSTEM RESET connbudget.pod_ttl");
}

/* ---- 1: claiming a bound application ---- */

static void
test_claim_bound_application(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	PGconn	   *api[6];
	pid_t		child;
	int			pipefd[2];
	long		tries[2] = {0, 0};	/* mallory's attempts, and those not 42501 */
	int			admitted = 0;

	conn = connect_as("mallory", "api", NULL, st, msg, sizeof(msg));
	ok(conn == NULL, "mallory cannot connect as application api, which is bound to apiuser");
	is_str(st, "42501", "refused with SQLSTATE 42501 (insufficient_privilege)");
	ok(strstr(msg, "role \"mallory\" may not connect as application \"api\"") != NULL,
	   "the message names the role and the application");
	ok(strstr(msg, "only to the roles apiuser and their members") != NULL,
	   "the detail names the roles allowed: %.300s", msg);
	conn = connect_as("mallory", "api", "api-9", st, msg, sizeof(msg));
	ok(conn == NULL && strcmp(st, "42501") == 0, "with a pod id of her own, too");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'api'"), 0,
		   "her refused attempts left no pod and no lease");

	/* mallory hammers while apiuser takes every slot of api's cap of 5 */
	if (pipe(pipefd) != 0)
		bail_out("pipe");
	fflush(stdout);
	child = fork();
	if (child == 0)
	{
		double		end = now_seconds() + 3;

		close(pipefd[0]);
		/* 3 s, and at least 20 attempts however slow a busy machine connects */
		while (now_seconds() < end || tries[0] < 20)
		{
			char		cst[6],
						cmsg[1024];
			PGconn	   *c = connect_as("mallory", "api", "api-1", cst, cmsg, sizeof(cmsg));

			tries[0]++;
			if (c != NULL || strcmp(cst, "42501") != 0)
				tries[1]++;
			if (c)
				PQfinish(c);
		}
		if (write(pipefd[1], tries, sizeof(tries)) < 0)
			_exit(2);
		_exit(0);
	}
	close(pipefd[1]);
	sleep_ms(200);
	for (int i = 0; i < 6; i++)
	{
		api[i] = connect_as("apiuser", "api", "api-1", st, msg, sizeof(msg));
		if (api[i])
			admitted++;
		if (i == 5)
			ok(api[i] == NULL && strcmp(st, "53300") == 0,
			   "apiuser's sixth connection is refused by api's own cap (53300), not by mallory's");
		sleep_ms(100);
	}
	is_int(admitted, 5, "apiuser gets all 5 slots of api while mallory retries in a loop");
	is_int(connections_of("api"), 5, "api holds exactly apiuser's 5 connections");
	if (read(pipefd[0], tries, sizeof(tries)) != sizeof(tries))
		bail_out("lost the child");
	waitpid(child, NULL, 0);
	ok(tries[0] > 10 && tries[1] == 0,
	   "each of mallory's %ld attempts meanwhile was refused with 42501", tries[0]);
	ok(pg_long(admin, "SELECT refused FROM connbudget.applications WHERE application_name = 'api'") >= tries[0],
	   "and counted in api's refused");
	for (int i = 0; i < 5; i++)
		PQfinish(api[i]);

	/* members of a bound role may claim it; superusers always */
	conn = connect_as("apimember", "team", NULL, st, msg, sizeof(msg));
	ok(conn != NULL, "a member of a role the application is bound to may claim it%s%.200s",
	   conn ? "" : ": ", conn ? "" : msg);
	PQfinish(conn);
	conn = connect_as("postgres", "api", NULL, st, msg, sizeof(msg));
	ok(conn != NULL, "a superuser may claim any application");
	PQfinish(conn);
	after_attack("claiming a bound application");
}

/* ---- 2 and 3: joining another role's pod, reporting for it ---- */

static void
test_foreign_pod(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *web = connect_as("webuser", "shared", "shared-1", st, msg, sizeof(msg));
	PGconn	   *mine;
	PGconn	   *conn;

	if (!web)
		bail_out("webuser: %s", msg);
	/*
	 * webuser's report of 4 must outlast the connections below, each of
	 * which proves a password: a report older than pod_ttl counts as the
	 * pod's connections, not as its demand
	 */
	long_leases(1);
	pg_long(web, "SELECT max_size FROM connbudget.pool_share(4)");
	/* the views show what the allocator published: its 4 first */
	pg_wait_for(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'shared-1'", 4, 10000);
	conn = connect_as("mallory", "shared", "shared-1", st, msg, sizeof(msg));
	ok(conn == NULL, "mallory cannot join webuser's pod shared-1 of an application any role may claim");
	is_str(st, "42501", "refused with 42501");
	ok(strstr(msg, "pod \"shared-1\" of application \"shared\" belongs to role \"webuser\"") != NULL,
	   "naming the pod and its role: %.200s", msg);

	/* two roles bound to one application still cannot share a pod */
	conn = connect_as("apiuser", "both", "both-1", st, msg, sizeof(msg));
	if (!conn)
		bail_out("apiuser: %s", msg);
	PQfinish(connect_as("webuser", "both", "both-1", st, msg, sizeof(msg)));
	is_str(st, "42501", "webuser cannot join apiuser's pod of an application bound to both");
	PQfinish(conn);

	/* her own pod: her reports move her pod only */
	mine = connect_as("mallory", "shared", "m-1", st, msg, sizeof(msg));
	if (!mine)
		bail_out("mallory: %s", msg);
	pg_long(mine, "SELECT max_size FROM connbudget.pool_share(1000000)");
	pg_long(mine, "SELECT max_size FROM connbudget.pool_share(0)");
	/* once her last report is published, webuser's pod is as it was */
	is_int(pg_wait_for(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'm-1'", 0, 10000), 0,
		   "her reports move her own pod");
	is_int(pg_long(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'shared-1'"), 4,
		   "her reports of 1000000 and 0 leave webuser's pod's demand at its 4");
	is_int(pg_wait_for(mine, "SELECT (current_setting('connbudget.share') LIKE '% demand=0')::int", 1, 5000),
		   1, "and the demand her share says it answers is her own 0, not webuser's: %s",
		   pg_value(mine, "SHOW connbudget.share"));
	PQfinish(mine);
	PQfinish(web);
	long_leases(0);
	after_attack("joining another role's pod and reporting demand");
}

/*
 * Wait until her pods whose id is like pattern are gone from the views,
 * then until the allocator has freed their slots, which the role's bound
 * counts: it frees them at its next turn after their leases end, and it
 * turns at least once a second.  The count left in the views.
 */
static long
her_pods_freed(const char *pattern)
{
	char		sql[256];
	long		left;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM connbudget.pods WHERE pod LIKE '%s'", pattern);
	left = pg_wait_for(admin, sql, 0, 20000);
	sleep_ms(1500);
	return left;
}

/* ---- 4: inventing 2,000 pod ids ---- */

static void
test_pod_flood(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	long		before;
	Flood		f;

	/* her pods of the tests before end first, so that she starts from none */
	before = her_pods_freed("m-%");
	long_leases(1);
	f = flood("options=-c connbudget.pod=flood-%04d");
	is_int(f.leased + before, 50, "mallory leases %d pods, with the %ld she had 50 "
		   "(connbudget.max_pods_per_role)", f.leased, before);
	ok(f.limited >= 100 && f.other == 0, "every further pod id is refused with 53400");
	ok(strstr(f.sample, "role \"mallory\" already holds 50 live pods") != NULL &&
	   strstr(f.sample, "connbudget.max_pods_per_role") != NULL,
	   "naming the role and the setting: %.200s", f.sample);
	conn = connect_as("webuser", "shared", "web-new", st, msg, sizeof(msg));
	ok(conn != NULL, "other roles still register new pods");
	PQfinish(conn);
	conn = connect_as("mallory", "shared", "flood-0007", st, msg, sizeof(msg));
	ok(conn != NULL, "and mallory's existing pods still connect");
	PQfinish(conn);
	long_leases(0);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE pod LIKE 'flood-%'", 0, 20000),
		   0, "her leases end after pod_ttl");
	after_attack("inventing 2,000 pod ids");
}

/* ---- 4b: inventing 2,000 pool sessions in one pod ---- */

static void
test_session_flood(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	Flood		f;

	/* her pods of the tests before end first, so that she starts from none */
	is_int(her_pods_freed("flood-%"), 0, "her pods of the flood before are gone");
	long_leases(1);
	f = flood("options=-c connbudget.pod=m-sessions -c connbudget.pool_session=s%04d");
	is_int(f.leased, 50, "mallory leases 50 pool sessions in one pod, and no more "
		   "(connbudget.max_pods_per_role bounds them too)");
	ok(f.limited >= 100 && f.other == 0, "every further pool session is refused with 53400");
	ok(strstr(f.sample, "role \"mallory\" already holds 50 live pool sessions") != NULL &&
	   strstr(f.sample, "connbudget.max_pods_per_role") != NULL,
	   "naming the role and the setting: %.200s", f.sample);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-sessions'"), 1,
		   "they are one pod");
	conn = connect_as("webuser", "shared", "web-sessions", st, msg, sizeof(msg));
	ok(conn != NULL, "other roles still register new pods");
	PQfinish(conn);
	conn = connect_as("mallory", "shared", "m-other", st, msg, sizeof(msg));
	ok(conn == NULL && strcmp(st, "53400") == 0,
	   "nor can she start a new pod while her sessions fill her bound (%s)", st);
	PQfinish(conn);
	long_leases(0);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'm-sessions'", 0, 20000),
		   0, "her leases end after pod_ttl");
	after_attack("inventing 2,000 pool sessions");
}

/* ---- 5: inventing 200 application names ---- */

static void
test_invented_applications(void)
{
	PGconn	   *held[200];
	PGconn	   *api[5];
	char		st[6],
				msg[2048];
	int			admitted = 0,
				refused = 0,
				api_ok = 0;

	reload("ALTER SYSTEM SET connbudget.unconfigured_max_connections = 10");
	for (int i = 0; i < 200; i++)
	{
		char		app[32];

		snprintf(app, sizeof(app), "fake-%03d", i);
		held[i] = connect_as("mallory", app, app, st, msg, sizeof(msg));
		if (held[i])
			admitted++;
		else if (strcmp(st, "53300") == 0 || strcmp(st, "53400") == 0)
			refused++;
	}
	is_int(admitted, 10, "200 invented application names with pods: 10 connections in, "
		   "connbudget.unconfigured_max_connections for all of them together");
	is_int(refused, 190, "the other 190 refused: with 53300 by that limit, and once her refused "
		   "attempts' leases make 50 pods, with 53400 by max_pods_per_role");
	ok(pg_long(admin, "SELECT coalesce(sum(allocation), 0) FROM connbudget.applications "
			   "WHERE application_name LIKE 'fake-%'") <= 10,
	   "their allocations together are at most 10");
	for (int i = 0; i < 5; i++)
		if ((api[i] = connect_as("apiuser", "api", "api-1", st, msg, sizeof(msg))) != NULL)
			api_ok++;
	is_int(api_ok, 5, "api still gets its 5");
	for (int i = 0; i < 5; i++)
		PQfinish(api[i]);
	for (int i = 0; i < 200; i++)
		if (held[i])
			PQfinish(held[i]);

	/* or refuse them outright, or govern them not at all */
	reload("ALTER SYSTEM SET connbudget.unconfigured_applications = 'refuse'");
	held[0] = connect_as("mallory", "fake-new", "fake-new", st, msg, sizeof(msg));
	ok(held[0] == NULL && strcmp(st, "42501") == 0 &&
	   strstr(msg, "application \"fake-new\" has no row in connbudget.application_limits"),
	   "under unconfigured_applications = refuse an invented name with a pod is refused (42501)");
	held[0] = connect_as("mallory", "fake-new", NULL, st, msg, sizeof(msg));
	ok(held[0] != NULL, "without a pod it is an \"other\" connection, as psql is");
	PQfinish(held[0]);
	reload("ALTER SYSTEM SET connbudget.unconfigured_applications = 'other'");
	held[0] = connect_as("mallory", "fake-new", "fake-new", st, msg, sizeof(msg));
	ok(held[0] != NULL, "under unconfigured_applications = other it gets in");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'fake-new'"), 0,
		   "and is no pod: it is counted as \"other\"");
	PQfinish(held[0]);
	reload("ALTER SYSTEM RESET connbudget.unconfigured_applications");
	reload("ALTER SYSTEM RESET connbudget.unconfigured_max_connections");
	after_attack("inventing 200 application names");
}

/* ---- 6: reading where other roles connect from ---- */

static void
test_client_addr_privacy(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *api = connect_as("apiuser", "api", "api-1", st, msg, sizeof(msg));
	PGconn	   *mine = connect_as("mallory", "shared", "m-2", st, msg, sizeof(msg));
	PGconn	   *stats = connect_as("statsreader", "admin", NULL, st, msg, sizeof(msg));

	if (!api || !mine || !stats)
		bail_out("connect: %s", msg);
	is_str(pg_value(mine, "SELECT coalesce(host(client_addr), 'hidden') FROM connbudget.pods "
					"WHERE pod = 'api-1'"), "hidden",
		   "mallory does not see where apiuser's pod connects from");
	is_str(pg_value(mine, "SELECT host(client_addr) FROM connbudget.pods WHERE pod = 'm-2'"),
		   "127.0.0.1", "she sees her own pod's address");
	is_int(pg_long(mine, "SELECT count(*) FROM connbudget.pods WHERE pod = 'api-1' "
				   "AND connections = 1 AND share >= 0"), 1,
		   "everything else about apiuser's pod stays readable by her");
	is_str(pg_value(api, "SELECT host(client_addr) FROM connbudget.pods WHERE pod = 'api-1'"),
		   "127.0.0.1", "apiuser sees her own pod's address");
	is_str(pg_value(stats, "SELECT host(client_addr) FROM connbudget.pods WHERE pod = 'api-1'"),
		   "127.0.0.1", "a member of pg_read_all_stats sees every pod's address");
	is_str(pg_value(admin, "SELECT host(client_addr) FROM connbudget.pods WHERE pod = 'm-2'"),
		   "127.0.0.1", "and so does a superuser");
	{
		/* a pod that gave no id is named by its address: as private */
		PGconn	   *api_derived = connect_as("apiuser", "api", NULL, st, msg, sizeof(msg));

		if (!api_derived)
			bail_out("connect: %s", msg);
		is_int(pg_long(mine, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'api' "
					   "AND pod IS NULL AND client_addr IS NULL AND connections = 1"), 1,
			   "mallory sees apiuser's pod without an id of its own, but not its id, which is its address");
		is_int(pg_long(mine, "SELECT count(*) FROM connbudget.pods WHERE pod = '127.0.0.1'"), 0,
			   "the address is nowhere in what she reads");
		is_str(pg_value(api, "SELECT pod FROM connbudget.pods WHERE application_name = 'api' "
						"AND pod = '127.0.0.1'"), "127.0.0.1",
			   "apiuser sees her pod's id");
		is_str(pg_value(stats, "SELECT pod FROM connbudget.pods WHERE application_name = 'api' "
						"AND pod = '127.0.0.1'"), "127.0.0.1",
			   "and so does a member of pg_read_all_stats");
		PQfinish(api_derived);
	}
	PQfinish(api);
	PQfinish(mine);
	PQfinish(stats);
	after_attack("reading other roles' client_addr");
}

/* ---- 7: changing the limits without the privilege ---- */

static void
test_limits_privilege(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *m = connect_as("mallory", "admin", NULL, st, msg, sizeof(msg));
	const char *attempts[] = {
		"INSERT INTO connbudget.application_limits VALUES ('evil', 80, NULL, 1, NULL)",
		"UPDATE connbudget.application_limits SET roles = ARRAY['mallory']::name[]",
		"UPDATE connbudget.application_limits SET max_connections = 0",
		"DELETE FROM connbudget.application_limits",
		"TRUNCATE connbudget.application_limits",
		"SELECT connbudget.limits_changed()",
		"ALTER TABLE connbudget.application_limits DROP CONSTRAINT weight_at_least_1",
	};

	for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++)
		is_str(pg_exec_error(m, attempts[i], msg, sizeof(msg)), "42501",
			   "mallory: %s -- permission denied", attempts[i]);
	PQfinish(m);
	after_attack("changing application_limits without the privilege");
}

/* ---- 8: SQL and control characters in role names ---- */

static void
test_odd_role_names(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	PGresult   *res;
	const char *params[1];

	/* roles whose names are SQL and control characters */
	pg_exec(admin, "CREATE ROLE \"x'); DROP TABLE connbudget.application_limits; --\" LOGIN "
			"PASSWORD '" ODD_PASSWORD "'");
	pg_exec(admin, "CREATE ROLE \"tab\tand\nnewline\" LOGIN PASSWORD '" ODD_PASSWORD "'");
	params[0] = "{\"x'); DROP TABLE connbudget.application_limits; --\",\"tab\tand\nnewline\"}";
	res = PQexecParams(admin, "INSERT INTO connbudget.application_limits (application_name, roles) "
					   "VALUES ('odd', $1::name[])", 1, NULL, params, NULL, NULL, 0);
	ok(PQresultStatus(res) == PGRES_COMMAND_OK, "role names with SQL and control characters are stored");
	PQclear(res);
	remember_limits();
	is_int(pg_long(admin, "SELECT cardinality(roles) FROM connbudget.application_limits "
				   "WHERE application_name = 'odd'"), 2, "as two names, exactly");

	{
		const char *keys[] = {"user", "application_name", "password", NULL};
		const char *values[] = {"x'); DROP TABLE connbudget.application_limits; --", "odd",
		"wrong-password", NULL};

		conn = PQconnectdbParams(keys, values, 1);
		ok(PQstatus(conn) != CONNECTION_OK && strstr(PQerrorMessage(conn), "password authentication failed"),
		   "the role named with SQL logs in only with its password");
		PQfinish(conn);
		values[2] = ODD_PASSWORD;
		conn = PQconnectdbParams(keys, values, 1);
		if (!ok(PQstatus(conn) == CONNECTION_OK, "the role named with SQL claims its application"))
			diag("%s", PQerrorMessage(conn));
		PQfinish(conn);
		values[0] = "tab\tand\nnewline";
		conn = PQconnectdbParams(keys, values, 1);
		if (!ok(PQstatus(conn) == CONNECTION_OK, "so does the role named with a tab and a newline"))
			diag("%s", PQerrorMessage(conn));
		PQfinish(conn);
	}
	conn = connect_as("mallory", "odd", NULL, st, msg, sizeof(msg));
	ok(conn == NULL && strcmp(st, "42501") == 0, "mallory is refused");
	ok(strstr(msg, "\"x'); DROP TABLE connbudget.application_limits; --\"") != NULL,
	   "and the detail quotes the odd names as identifiers: %.300s", msg);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.application_limits"), 6,
		   "nothing was dropped");
	after_attack("SQL and control characters in role names");
}

/* ---- under warn: logged and let in ---- */

static void
test_warn(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	long		log_from = server_log_size();

	reload("ALTER SYSTEM SET connbudget.enforce = 'warn'");
	conn = connect_as("mallory", "api", "warn-1", st, msg, sizeof(msg));
	ok(conn != NULL, "under enforce = warn, mallory's claim of api is let in");
	ok(server_log_contains(log_from, "role \"mallory\" may not connect as application \"api\""),
	   "and logged as a warning");
	PQfinish(conn);
	reload("ALTER SYSTEM SET connbudget.enforce = 'off'");
	log_from = server_log_size();
	conn = connect_as("mallory", "api", "warn-2", st, msg, sizeof(msg));
	ok(conn != NULL, "under enforce = off it is let in");
	PQfinish(conn);
	ok(!server_log_contains(log_from, "may not connect as application"), "without a word");
	reload("ALTER SYSTEM RESET connbudget.enforce");
	after_attack("claims under warn and off");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE mallory LOGIN PASSWORD 'pw-mallory'");
	pg_exec(admin, "CREATE ROLE apiuser LOGIN PASSWORD 'pw-apiuser'");
	pg_exec(admin, "CREATE ROLE webuser LOGIN PASSWORD 'pw-webuser'");
	pg_exec(admin, "CREATE ROLE apiteam NOLOGIN");
	pg_exec(admin, "CREATE ROLE apimember LOGIN PASSWORD 'pw-apimember' IN ROLE apiteam");
	pg_exec(admin, "CREATE ROLE statsreader LOGIN PASSWORD 'pw-statsreader' IN ROLE pg_read_all_stats");
	{
		char		st[6],
					msg[2048];
		PGconn	   *conn = pg_connect_ex(st, msg, sizeof(msg), "user=mallory", "password=guess",
										 "application_name=shared", (const char *) NULL);

		ok(conn == NULL && strcmp(st, "28P01") == 0,
		   "roles log in with a password: a wrong one is refused with 28P01 (%s)", st);
		PQfinish(conn);
	}
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES "
			"('api', 0, 5, 1, '{apiuser}'), ('web', 0, 5, 1, '{webuser}'), "
			"('team', 0, 5, 1, '{apiteam}'), ('both', 0, 5, 1, '{apiuser,webuser}'), "
			"('shared', 0, NULL, 1, NULL)");
	remember_limits();

	test_claim_bound_application();
	test_foreign_pod();
	test_pod_flood();
	test_session_flood();
	test_invented_applications();
	test_client_addr_privacy();
	test_limits_privilege();
	test_odd_role_names();
	test_warn();

	PQfinish(admin);
	return done_testing();
}
