/*
 * attacks_resort.c -- open connections are held to every check again when
 * limits or settings change, and a pod shows only its owner's address.
 *
 * Role mallory attacks alice's and bob's budgets through connections that
 * were admitted before the rules changed:
 *
 *   claim first, bound later   mallory connects as newapp before it has a
 *                              row; newapp is then bound to alice: her
 *                              connection is "other", her pod gone, her
 *                              pool_share() refused with 42501, and alice's
 *                              share what it would be without her
 *   roles changed under her    an application she was let in to is bound
 *                              to bob: the same
 *   membership revoked         she claims an application through a role she
 *                              is a member of; that membership is revoked:
 *                              her next pool_share() is refused and her
 *                              connection is "other"
 *   other, then govern         connections counted "other" under
 *                              unconfigured_applications = other become
 *                              governed with every check when it is set to
 *                              govern: her five pods are two
 *                              (max_pods_per_role), and she and alice do not
 *                              end up in one pod where her report of 0
 *                              would empty alice's share
 *   govern, then refuse        her pod of an application without a row,
 *                              governed under unconfigured_applications =
 *                              govern, is gone once it is set to refuse:
 *                              her connection is "other", her pool_share()
 *                              refused with 42501, connbudget.share says
 *                              status=refused
 *   toggled roles under connects  while newapp's roles flip between alice
 *                              alone and alice with mallory, mallory
 *                              connects in a loop: once it stays alice's,
 *                              none of her connections is governed as it
 *   a superuser's address      a superuser (and, under warn, bob) joins
 *                              mallory's pod over TCP: she still reads her
 *                              own pod's address, not theirs
 *
 * After each: budget.governed equals the governed backends counted from
 * pg_stat_activity and the limits, and the server answers.
 *
 * Budget: 60 - 3 - 7 = 50.  A role may hold 2 live pods.
 *
 * cluster: auth=scram-sha-256 max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=100ms connbudget.pod_ttl=1500 connbudget.max_pods_per_role=2
 */
#include "../lib/pgtest.h"

static PGconn *admin;

static PGconn *
connect_as(const char *role, const char *app, const char *pod, const char *host,
		   char *st, char *msg, size_t len)
{
	char		h[1100];

	snprintf(h, sizeof(h), "host=%s", host ? host : "127.0.0.1");
	return pg_connect_pod(st, msg, len, role, app, pod, h, "password=secret-pw", (const char *) NULL);
}

static PGconn *
must_connect(const char *role, const char *app, const char *pod)
{
	char		st[6],
				msg[2048];
	PGconn	   *c = connect_as(role, app, pod, NULL, st, msg, sizeof(msg));

	if (!c)
		bail_out("%s cannot connect as %s: %s", role, app, msg);
	return c;
}

/* pool_share(demand) on this connection: its max_size, or -1 and the SQLSTATE. */
static long
share_of(PGconn *conn, const char *demand, char *st)
{
	char		sql[128],
				msg[1024];
	PGresult   *res;
	long		v = -1;

	snprintf(sql, sizeof(sql), "SELECT max_size FROM connbudget.pool_share(%s)", demand);
	res = PQexec(conn, sql);
	st[0] = '\0';
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		v = atol(PQgetvalue(res, 0, 0));
	else
		snprintf(st, 6, "%s", PQresultErrorField(res, PG_DIAG_SQLSTATE));
	snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
	PQclear(res);
	return v;
}

/* A share as it settles (the first answers may predate a change). */
static long
settled_share(PGconn *conn, const char *demand, long want)
{
	char		st[6];
	long		got = -1;

	for (int i = 0; i < 30; i++)
	{
		got = share_of(conn, demand, st);
		if (got == want)
			break;
		sleep_ms(100);
	}
	return got;
}

static long
count(const char *sql)
{
	return pg_long(admin, sql);
}

/*
 * What must hold after every attack: the governed count is what the
 * registry's own views add up to, and nothing of mallory's is governed in
 * an application she may not claim.
 */
static void
after(const char *attack)
{
	ok(pg_long(admin, "SELECT 1") == 1, "after %s: the server answers", attack);
	is_int(pg_wait_for(admin, "SELECT (SELECT governed FROM connbudget.budget) - "
					   "(SELECT coalesce(sum(connections), 0) FROM connbudget.applications)", 0, 5000),
		   0, "after %s: budget.governed equals the applications' connections", attack);
}

static void
settle(void)
{
	pg_exec(admin, "SELECT pg_reload_conf()");
	sleep_ms(400);
}

/* ---- claim first, bound later ---- */

static void
test_claim_first(void)
{
	char		st[6];
	PGconn	   *m = must_connect("mallory", "newapp", "m-1");
	PGconn	   *a;

	is_int(share_of(m, "4", st), 4, "mallory's pod of newapp, before newapp has a row, gets a share (4 of what it asked)");
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name = 'newapp'"), 1,
		   "and is a pod of newapp");

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('newapp', 0, 4, 1, '{alice}')");
	is_int(share_of(m, "4", st), -1, "once newapp is bound to alice, mallory's pool_share() is refused");
	is_str(st, "42501", "with 42501");
	{
		PGresult   *res = PQexec(m, "SELECT connbudget.pool_share(4)");

		ok(strstr(PQresultErrorMessage(res), "role \"mallory\" may no longer report for application \"newapp\"") != NULL,
		   "saying why: %s", PQresultErrorMessage(res));
		PQclear(res);
	}
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'newapp'", 0, 3000),
		   0, "her pod of newapp is gone at once (its lease ended), not pod_ttl later");
	is_int(count("SELECT connections FROM connbudget.applications WHERE application_name = 'newapp'"), 0,
		   "newapp counts none of her connections");

	a = must_connect("alice", "newapp", "a-1");
	is_int(settled_share(a, "10", 4), 4, "alice's pod gets all of newapp's cap of 4");
	is_int(count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' AND application_name = 'newapp'"),
		   1, "mallory's connection is still open (it is only \"other\")");
	is_int(share_of(m, "0", st), -1, "her report of 0 is refused too");
	is_int(settled_share(a, "10", 4), 4, "and alice's share stays 4");
	PQfinish(a);
	PQfinish(m);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'newapp'");
	after("claiming an application before it is bound");
}

/* ---- roles changed under her ---- */

static void
test_roles_changed(void)
{
	char		st[6];
	PGconn	   *m;
	PGconn	   *b;

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('team', 0, 6, 1, NULL)");
	m = must_connect("mallory", "team", "m-2");
	b = must_connect("bob", "team", "b-1");
	is_int(share_of(m, "6", st) >= 0, 1, "mallory's pod of team reports a demand of 6");
	is_int(settled_share(b, "6", 3), 3, "team's 6 split between mallory's and bob's pods: 3 each");
	pg_exec(admin, "UPDATE connbudget.application_limits SET roles = '{bob}' WHERE application_name = 'team'");
	is_int(share_of(m, "6", st), -1, "after UPDATE ... SET roles = '{bob}', mallory's pool_share() is refused");
	is_str(st, "42501", "with 42501");
	is_int(settled_share(b, "6", 6), 6, "and bob's pod gets all 6");
	is_int(count("SELECT connections FROM connbudget.applications WHERE application_name = 'team'"), 1,
		   "team counts only bob's connection");
	PQfinish(m);
	PQfinish(b);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'team'");
	after("roles changed under an open connection");
}

/* ---- membership revoked ---- */

static void
test_membership_revoked(void)
{
	char		st[6];
	PGconn	   *m;

	pg_exec(admin, "CREATE ROLE crew NOLOGIN");
	pg_exec(admin, "GRANT crew TO mallory");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('crewapp', 0, 5, 1, '{crew}')");
	m = must_connect("mallory", "crewapp", "m-3");
	is_int(settled_share(m, "2", 2), 2, "a member of crew claims crewapp and gets a share");
	pg_exec(admin, "REVOKE crew FROM mallory");
	is_int(share_of(m, "2", st), -1, "once her membership is revoked, her next pool_share() is refused");
	is_str(st, "42501", "with 42501");
	is_int(count("SELECT connections FROM connbudget.applications WHERE application_name = 'crewapp'"), 0,
		   "and crewapp counts her connection no more");
	PQfinish(m);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'crewapp'");
	after("a revoked membership");
}

/* ---- other, then govern ---- */

static void
test_other_then_govern(void)
{
	char		st[6],
				pod[16];
	PGconn	   *m[5];
	PGconn	   *a;
	PGconn	   *m_shared;
	int			refused = 0;

	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 5000), 0,
		   "no pod is left from before");
	pg_exec(admin, "ALTER SYSTEM SET connbudget.unconfigured_applications = 'other'");
	settle();
	for (int i = 0; i < 5; i++)
	{
		snprintf(pod, sizeof(pod), "mp-%d", i);
		m[i] = must_connect("mallory", "free", pod);
	}
	a = must_connect("alice", "free2", "one-pod");
	m_shared = must_connect("mallory", "free2", "one-pod");
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name IN ('free', 'free2')"), 0,
		   "under unconfigured_applications = other, none of them is a pod");

	pg_exec(admin, "ALTER SYSTEM SET connbudget.unconfigured_applications = 'govern'");
	settle();
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name = 'free'"), 2,
		   "under govern, mallory's five connections make 2 pods (max_pods_per_role = 2)");
	for (int i = 0; i < 5; i++)
		if (share_of(m[i], "1", st) < 0 && strcmp(st, "53400") == 0)
			refused++;
	is_int(refused, 3, "the three beyond her bound are refused at pool_share() with 53400 (configuration_limit_exceeded)");
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name = 'free2'"), 1,
		   "alice's and mallory's connections to pod one-pod of free2 make one pod");
	is_int(count("SELECT connections FROM connbudget.pods WHERE application_name = 'free2'"), 1,
		   "holding the connection of one role only");
	{
		long		alice_share = share_of(a, "5", st);
		char		mst[6];
		long		mallory_share = share_of(m_shared, "0", mst);

		ok((alice_share >= 0) != (mallory_share >= 0),
		   "exactly one of them may report for it (alice: %ld %s, mallory: %ld %s)",
		   alice_share, st, mallory_share, mst);
		ok(strcmp(alice_share >= 0 ? mst : st, "42501") == 0,
		   "the other is refused with 42501");
		if (alice_share >= 0)
			is_int(settled_share(a, "5", 5), 5, "mallory's report of 0 did not empty alice's share");
		else
			ok(1, "mallory's report of 0 is hers alone");
	}
	for (int i = 0; i < 5; i++)
		PQfinish(m[i]);
	PQfinish(a);
	PQfinish(m_shared);
	pg_exec(admin, "ALTER SYSTEM RESET connbudget.unconfigured_applications");
	settle();
	after("other, then govern");
}

/* ---- govern, then refuse ---- */

static void
test_govern_then_refuse(void)
{
	char		st[6];
	PGconn	   *m;
	long		other_before;
	PGresult   *res;

	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 5000), 0,
		   "no pod is left from before");
	pg_exec(admin, "ALTER SYSTEM SET connbudget.unconfigured_applications = 'govern'");
	settle();
	m = must_connect("mallory", "norow", "m-4");
	is_int(settled_share(m, "3", 3), 3,
		   "under unconfigured_applications = govern, mallory's pod of norow (no row) gets a share");
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name = 'norow'"), 1,
		   "and is a pod of norow");
	is_int(count("SELECT connections FROM connbudget.applications WHERE application_name = 'norow'"), 1,
		   "norow counts her connection");
	pg_exec(m, "SET connbudget.demand = 3");
	ok(strstr(pg_value(m, "SHOW connbudget.share"), "status=ok") != NULL,
	   "connbudget.share with a demand set says status=ok");
	other_before = count("SELECT other FROM connbudget.budget");

	pg_exec(admin, "ALTER SYSTEM SET connbudget.unconfigured_applications = 'refuse'");
	settle();
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'norow'", 0, 3000),
		   0, "once it is set to refuse, her pod of norow is gone");
	is_int(count("SELECT coalesce((SELECT connections FROM connbudget.applications "
				 "WHERE application_name = 'norow'), 0)"), 0,
		   "norow counts none of her connections");
	is_int(count("SELECT other FROM connbudget.budget") - other_before, 1,
		   "her connection is counted as other");
	is_int(count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' AND application_name = 'norow'"),
		   1, "and is still open");
	is_int(share_of(m, "3", st), -1, "her pool_share() is refused");
	is_str(st, "42501", "with 42501");
	res = PQexec(m, "SELECT connbudget.pool_share(3)");
	ok(strstr(PQresultErrorMessage(res), "application \"norow\" has no row in connbudget.application_limits") != NULL,
	   "saying why: %s", PQresultErrorMessage(res));
	PQclear(res);
	pg_exec(m, "SET connbudget.demand = 3");
	is_str(pg_value(m, "SHOW connbudget.share"),
		   "protocol=2 status=refused sqlstate=42501 reason=unconfigured_refused refresh_ms=100",
		   "connbudget.share with a demand set says refused, with the SQLSTATE and the reason");
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE application_name = 'norow'"), 0,
		   "and her reports bring no pod back");
	PQfinish(m);
	pg_exec(admin, "ALTER SYSTEM RESET connbudget.unconfigured_applications");
	settle();
	after("govern, then refuse");
}

/* ---- toggled roles under connects ---- */

static void
test_toggled_roles(void)
{
	pid_t		child;
	int			stop[2],
				held_pipe[2];
	int			flips = 0,
				violations = 0;
	char		go;

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('flip', 0, 40, 1, '{alice,mallory}')");
	if (pipe(stop) != 0 || pipe(held_pipe) != 0)
		bail_out("pipe");
	fflush(stdout);
	child = fork();
	if (child == 0)
	{
		PGconn	   *held[12] = {0};
		char		st[6],
					msg[1024];
		struct pollfd pfd = {.fd = stop[0], .events = POLLIN};

		for (int i = 0; poll(&pfd, 1, 0) == 0; i = (i + 1) % 12)
		{
			PQfinish(held[i]);
			held[i] = connect_as("mallory", "flip", i % 2 ? "f-1" : "f-2", NULL, st, msg, sizeof(msg));
		}
		/* hold what got in until the parent has looked */
		if (write(held_pipe[1], "h", 1) < 0 || read(stop[0], &go, 1) < 0 || read(stop[0], &go, 1) < 0)
			_exit(2);
		for (int i = 0; i < 12; i++)
			PQfinish(held[i]);
		_exit(0);
	}
	for (int i = 0; i < 40; i++)
	{
		int			alone = i % 2 == 0;

		pg_exec(admin, alone ? "UPDATE connbudget.application_limits SET roles = '{alice}' WHERE application_name = 'flip'"
				: "UPDATE connbudget.application_limits SET roles = '{alice,mallory}' WHERE application_name = 'flip'");
		flips++;
		sleep_ms(60);
		if (alone && count("SELECT coalesce((SELECT connections FROM connbudget.applications "
						   "WHERE application_name = 'flip'), 0)") != 0)
			violations++;
	}
	if (write(stop[1], "s", 1) < 0 || read(held_pipe[0], &go, 1) < 0)
		bail_out("lost the child");
	pg_exec(admin, "UPDATE connbudget.application_limits SET roles = '{alice,mallory}' WHERE application_name = 'flip'");
	ok(count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory' AND application_name = 'flip'") > 0,
	   "mallory holds connections as flip, made while its roles flipped %d times", flips);
	is_int(violations, 0, "whenever flip was alice's alone, none of mallory's connections was governed as flip");
	pg_exec(admin, "UPDATE connbudget.application_limits SET roles = '{alice}' WHERE application_name = 'flip'");
	is_int(count("SELECT coalesce((SELECT connections FROM connbudget.applications WHERE application_name = 'flip'), 0)"),
		   0, "once it is alice's alone again, none of the connections she holds is governed as flip");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'flip'", 0, 3000), 0,
		   "and no pod of hers is left");
	if (write(stop[1], "x", 1) < 0)
		bail_out("write");
	waitpid(child, NULL, 0);
	pg_wait_for(admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mallory'", 0, 5000);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'flip'");
	after("roles toggled under connects");
}

/* ---- a superuser's address ---- */

static void
test_joined_address(void)
{
	char		st[6],
				msg[2048];
	const char *socket_dir = getenv("CB_SOCKET_DIR");
	PGconn	   *m;

	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 5000), 0,
		   "no pod is left from before");
	m = connect_as("mallory", "mine", "m-pod", socket_dir, st, msg, sizeof(msg));
	PGconn	   *su;
	PGconn	   *b;

	if (!m)
		bail_out("mallory over the Unix socket: %s", msg);
	is_int(count("SELECT count(*) FROM connbudget.pods WHERE pod = 'm-pod' AND client_addr IS NULL"), 1,
		   "mallory's pod over the Unix socket has no address");
	su = pg_connect_or_bail("application_name=mine", "options=-c connbudget.pod=m-pod");
	is_int(count("SELECT connections FROM connbudget.pods WHERE pod = 'm-pod'"), 2,
		   "a superuser joins her pod over TCP");
	is_str(pg_value(m, "SELECT coalesce(host(client_addr), 'none') FROM connbudget.pods WHERE pod = 'm-pod'"),
		   "none", "mallory still reads her own pod's address, not the superuser's");
	is_int(count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'postgres' AND client_addr IS NOT NULL"
				 " AND application_name = 'mine'"), 1,
		   "whose address pg_stat_activity has (and hides from her)");
	is_str(pg_value(m, "SELECT coalesce(host(client_addr), 'hidden') FROM pg_stat_activity "
					"WHERE usename = 'postgres' AND application_name = 'mine'"), "hidden",
		   "pg_stat_activity hides it from her");

	pg_exec(admin, "ALTER SYSTEM SET connbudget.enforce = 'warn'");
	settle();
	b = connect_as("bob", "mine", "m-pod", NULL, st, msg, sizeof(msg));
	ok(b != NULL, "under warn, bob is let into her pod over TCP");
	is_str(pg_value(m, "SELECT coalesce(host(client_addr), 'none') FROM connbudget.pods WHERE pod = 'm-pod'"),
		   "none", "and she does not read his address either");
	PQfinish(b);
	pg_exec(admin, "ALTER SYSTEM RESET connbudget.enforce");
	settle();
	PQfinish(su);
	PQfinish(m);
	after("joining another role's pod");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE alice LOGIN PASSWORD 'secret-pw'");
	pg_exec(admin, "CREATE ROLE bob LOGIN PASSWORD 'secret-pw'");
	pg_exec(admin, "CREATE ROLE mallory LOGIN PASSWORD 'secret-pw'");

	test_claim_first();
	test_roles_changed();
	test_membership_revoked();
	test_other_then_govern();
	test_govern_then_refuse();
	test_toggled_roles();
	test_joined_address();

	PQfinish(admin);
	return done_testing();
}
