/*
 * sessions.c -- pools that share a pod id split its share; a pod that
 * never reports demands what it holds; pods whose lease ended are
 * reclaimed, keeping their application's counters, so that a small pod
 * table fills, refuses, and takes new pods again.
 *
 * Checked: two pool sessions of one pod split its share (and with a
 * third, session-less connection, three ways); psql sessions of a
 * configured application demand the connections they hold; a pod refused
 * at connect time is leased, then reclaimed with its application's
 * refused counter kept; a table of 16 pods fills, refuses a 17th with
 * 53400 naming connbudget.max_pods, lets a pod that holds a lease connect,
 * and takes new pods once leases end; 32 pool sessions of one pod fill the
 * session table and a 33rd is refused with 53400.
 *
 * Budget: 60 - 0 - 10 = 50.  connbudget.max_pods = 16 (32 pool sessions).
 *
 * cluster: max_connections=60 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.pod_ttl=1000 connbudget.refresh_interval=100ms connbudget.max_pods=16
 */
#include "../lib/pgtest.h"

static PGconn *admin;

static PGconn *
connect_session(const char *app, const char *pod, const char *session)
{
	char		a[128],
				o[256];

	snprintf(a, sizeof(a), "application_name=%s", app);
	if (session)
		snprintf(o, sizeof(o), "options=-c connbudget.pod=%s -c connbudget.pool_session=%s",
				 pod, session);
	else
		snprintf(o, sizeof(o), "options=-c connbudget.pod=%s", pod);
	return pg_connect_or_bail(a, o, "user=pooluser");
}

/*
 * Pools report every refresh interval, and a report older than pod_ttl
 * (1 s here) no longer counts.  So the pools of a test report together,
 * again and again, until each is told what it expects (or 5 s pass);
 * got[] holds the last answers.
 */
static int
settle(int n, PGconn **conns, const char **demands, const long *want, long *got)
{
	double		deadline = now_seconds() + 5;

	for (;;)
	{
		int			all = 1;

		for (int i = 0; i < n; i++)
		{
			got[i] = pod_share(conns[i], demands[i]);
			all &= got[i] == want[i];
		}
		if (all || now_seconds() > deadline)
			return all;
		sleep_ms(20);
	}
}

static void
test_two_pools_one_pod(void)
{
	PGconn	   *c[4];
	const char *unbounded[4] = {"NULL", "NULL", "NULL", "NULL"};
	const char *five[4] = {"5", "NULL", "NULL", "NULL"};
	long		got[4] = {0};
	int			done;

	c[0] = connect_session("web", "shared", "pool-a");
	c[1] = connect_session("web", "shared", "pool-b");
	c[2] = connect_session("web", "other", "pool-o");

	done = settle(3, c, unbounded, (long[]) {12, 13, 25}, got);
	ok(done,
	   "two pods of one application, one with two pools: the pods get 25 each, "
	   "and the two pools split theirs 12 + 13, the odd unit by session token (%ld, %ld, %ld)", got[0], got[1], got[2]);
	is_int(pg_long(admin, "SELECT share FROM connbudget.pods WHERE pod = 'shared'"), 25,
		   "the pod with two pools is one row with the pod's share");
	is_int(pg_long(admin, "SELECT connections FROM connbudget.pods WHERE pod = 'shared'"), 2,
		   "and both connections");

	/* one pool of the shared pod is content with 5: the other gets the rest */
	done = settle(3, c, five, (long[]) {5, 20, 25}, got);
	ok(done,
	   "a pool that reports 5 gets 5, the other pool of its pod the rest: 20 (%ld, %ld, %ld)",
	   got[0], got[1], got[2]);

	/*
	 * A connection of that pod without a pool session (psql, a pool of
	 * another kind) is a session of its own, demanding the one connection
	 * it holds until it reports.
	 */
	c[3] = connect_session("web", "shared", NULL);
	done = settle(3, c, five, (long[]) {5, 19, 25}, got);
	ok(done,
	   "a connection of the pod that gives no pool session takes its one connection's part "
	   "(%ld, %ld, %ld)", got[0], got[1], got[2]);
	done = settle(4, c, five, (long[]) {5, 10, 25, 10}, got);
	ok(done,
	   "once it reports no bound, the pod's share is split three ways: 5, 10, 10 "
	   "(%ld, %ld, %ld)", got[0], got[1], got[3]);
	is_int(got[0] + got[1] + got[3], 25,
		   "the pod's three sessions never hold more than its 25 together");
	pg_finish_all(c, 4);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "the pods end with their leases");
}

static void
test_demand_of_plain_connections(void)
{
	PGconn	   *psql1;
	PGconn	   *psql2;

	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name) VALUES ('billing')");
	psql1 = pg_connect_or_bail("application_name=billing", "user=pooluser");
	psql2 = pg_connect_or_bail("application_name=billing", "user=pooluser");
	is_int(pg_long(admin, "SELECT connections FROM connbudget.applications "
				   "WHERE application_name = 'billing'"), 2,
		   "two psql sessions of a configured application are governed");
	is_str(pg_value(admin, "SELECT coalesce(demand::text, 'unbounded') FROM connbudget.applications "
					"WHERE application_name = 'billing'"), "2",
		   "its demand is the 2 connections they hold, not unbounded");
	is_int(pg_long(admin, "SELECT allocation FROM connbudget.applications "
				   "WHERE application_name = 'billing'"), 2,
		   "so it is allocated 2 and leaves the rest of the budget to others");
	PQfinish(psql1);
	PQfinish(psql2);
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "a pod that never reported ends with its connections");
}

static void
test_reclaim_and_capacity(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;
	int			leased = 0;

	/* refusals keep a counter; the refused pod holds a lease of pod_ttl */
	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name, max_connections) "
			"VALUES ('capped', 0)");
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=capped",
						 "options=-c connbudget.pod=capped-1", "user=pooluser",
						 (const char *) NULL);
	ok(conn == NULL && strcmp(st, "53300") == 0, "an application capped at 0 is refused (53300)");
	is_int(pg_long(admin, "SELECT refused FROM connbudget.applications WHERE application_name = 'capped'"),
		   1, "its refusal is counted");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'capped-1'"), 1,
		   "the refused pod is leased for pod_ttl");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "and reclaimed once its lease ended");
	is_int(pg_long(admin, "SELECT refused FROM connbudget.applications WHERE application_name = 'capped'"),
		   1, "the application keeps its refused counter after its pod was reclaimed");
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
	is_int(pg_long(admin, "SELECT refused FROM connbudget.applications WHERE application_name = 'capped'"),
		   1, "and after its limits row is gone (an unconfigured application refused since start)");

	/* fill the table of 16 pods with leases, long enough that the first
	   still holds its lease when the 17th comes, however slow the connects */
	pg_exec(admin, "ALTER SYSTEM SET connbudget.pod_ttl = '60s'");
	pg_exec(admin, "SELECT pg_reload_conf()");
	pg_wait_for(admin, "SELECT setting::int FROM pg_settings WHERE name = 'connbudget.pod_ttl'",
				60000, 10000);
	for (int i = 0; i < 16; i++)
	{
		char		opt[64];
		PGconn	   *p;

		snprintf(opt, sizeof(opt), "options=-c connbudget.pod=lease-%02d", i);
		p = pg_connect_or_bail("application_name=leases", opt, "user=pooluser");
		if (pg_long(p, "SELECT max_size FROM connbudget.pool_share(1)") >= 0)
			leased++;
		PQfinish(p);
	}
	is_int(leased, 16, "16 pods leased");
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=leases",
						 "options=-c connbudget.pod=lease-16", "user=pooluser",
						 (const char *) NULL);
	ok(conn == NULL && strcmp(st, "53400") == 0 && strstr(msg, "connbudget.max_pods"),
	   "the 17th is refused with 53400, naming connbudget.max_pods: %.160s", msg);
	if (conn)
		PQfinish(conn);			/* let in after all: not left to hold a lease */
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=leases",
						 "options=-c connbudget.pod=lease-03", "user=pooluser",
						 (const char *) NULL);
	ok(conn != NULL, "a pod that holds a lease still connects");
	PQfinish(conn);

	/* the leases end: the allocator reclaims them and there is room again */
	pg_exec(admin, "ALTER SYSTEM RESET connbudget.pod_ttl");
	pg_exec(admin, "SELECT pg_reload_conf()");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "the leases end");
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=leases",
						 "options=-c connbudget.pod=lease-16", "user=pooluser",
						 (const char *) NULL);
	ok(conn != NULL, "once they are reclaimed, a new pod finds room%s%.160s",
	   conn ? "" : ": ", conn ? "" : msg);
	PQfinish(conn);
}

static void
test_session_capacity(void)
{
	PGconn	   *conns[33];
	char		st[6],
				msg[2048];
	int			opened = 0;
	PGconn	   *extra;

	/* 32 session slots: 32 pools of one pod fit, the 33rd does not */
	for (int i = 0; i < 32; i++)
	{
		char		session[32];

		snprintf(session, sizeof(session), "s%02d", i);
		conns[i] = connect_session("crowd", "one-pod", session);
		opened++;
	}
	is_int(opened, 32, "32 pool sessions of one pod connect");
	extra = pg_connect_ex(st, msg, sizeof(msg), "application_name=crowd",
						  "options=-c connbudget.pod=one-pod -c connbudget.pool_session=s32",
						  "user=pooluser", (const char *) NULL);
	ok(extra == NULL && strcmp(st, "53400") == 0,
	   "the 33rd is refused with 53400: the session slots are full");
	is_int(pg_long(admin, "SELECT governed FROM connbudget.budget"), 32,
		   "the 32 are governed, the refused one counts nowhere");
	pg_finish_all(conns, 32);
	is_int(pg_wait_for(admin, "SELECT governed FROM connbudget.budget", 0, 10000), 0,
		   "all gone");
}

static void
test_bad_pool_session(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=web",
									 "options=-c connbudget.pod=x -c connbudget.pool_session=\x01",
									 "user=pooluser", (const char *) NULL);

	ok(conn == NULL && strcmp(st, "22023") == 0 &&
	   strstr(msg, "invalid value for parameter \"connbudget.pool_session\""),
	   "a pool session with a control character is refused (22023): %.120s", msg);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE pooluser LOGIN");

	test_two_pools_one_pod();
	test_demand_of_plain_connections();
	test_reclaim_and_capacity();
	test_session_capacity();
	test_bad_pool_session();

	PQfinish(admin);
	return done_testing();
}
