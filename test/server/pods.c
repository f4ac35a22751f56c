/*
 * pods.c -- pod leases, shares that move as pods come and go, settings
 * that change on reload, and the budget shrinking when "other"
 * connections overflow the reserve.
 *
 * cluster: max_connections=60 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.pod_ttl=1500
 */
#include "../lib/pgtest.h"

static PGconn *admin;

static PGconn *
pod_connect(const char *app, const char *pod)
{
	char		msg[2048];
	PGconn	   *conn = pg_connect_pod(NULL, msg, sizeof(msg), NULL, app, pod, (const char *) NULL);

	if (conn == NULL)
		bail_out("cannot connect: %s", msg);
	return conn;
}

static long
pod_count(void)
{
	return pg_long(admin, "SELECT count(*) FROM connbudget.pods");
}

static void
test_leases(void)
{
	PGconn	   *a = pod_connect("web", "pod-a");
	PGconn	   *b = pod_connect("web", "pod-b");
	PGconn	   *c;
	double		closed_at;
	long		seen;

	/*
	 * budget 50: two pods of one application.  A pod's first report waits
	 * for the publication that includes it; until pod-b reports, it demands
	 * the one connection it holds.
	 */
	is_int(pod_share(a, "NULL"), 49, "the first pod to report no bound gets all but the other's one connection: 49");
	is_int(pod_share(b, "NULL"), 25, "once the other reports no bound too, they share the budget of 50: 25");
	is_int(pod_share(a, "NULL"), 25, "and the first pod is told 25 at its next call");

	/* a pod that called pool_share() outlives its connection by pod_ttl */
	PQfinish(a);
	closed_at = now_seconds();
	is_int(pg_wait_for(admin, "SELECT connections FROM connbudget.pods WHERE pod = 'pod-a'", 0, 5000),
		   0, "pod-a's connection is gone");
	if (now_seconds() - closed_at < 1.0)
		is_int(pod_count(), 2, "pod-a is still live within pod_ttl (1.5 s) of its last pool_share()");
	else
		diag("skipped the within-ttl check: the machine took %.1f s to notice the exit",
			 now_seconds() - closed_at);
	is_int(pod_share(b, "NULL"), 25, "while pod-a is live, pod-b's share stays 25");
	seen = pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 1, 10000);
	is_int(seen, 1, "pod-a's lease expires after pod_ttl");
	ok(now_seconds() - closed_at >= 1.4,
	   "and not before (expired %.2f s after its last call)", now_seconds() - closed_at);
	is_int(pod_share_settled(b, "NULL", 50), 50, "pod-b then gets the whole budget");

	/*
	 * A pod that never called pool_share() demands the connections it holds
	 * (a psql session, a pool of another kind), and ends with its last one.
	 */
	c = pod_connect("web", "pod-c");
	is_int(pod_share_settled(b, "NULL", 49), 49,
		   "pod-c joins with one connection and no report: it demands that one, pod-b drops to 49");
	is_int(pg_long(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'pod-c'"), 1,
		   "pods shows pod-c's demand: the connection it holds");
	PQfinish(c);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 1, 5000), 1,
		   "pod-c never called pool_share(): it ends with its connection");

	/* pg_terminate_backend: the pod lives on until its lease ends */
	a = pod_connect("web", "pod-a");
	is_int(pod_share(a, "3"), 3, "pod-a rejoins and asks for 3: it gets 3");
	is_int(pod_share(b, "NULL"), 47, "and pod-b gets the remaining 47 (demand-bounded water-filling)");
	is_int(pg_long(admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
				   "WHERE application_name = 'web' AND pid <> pg_backend_pid() "
				   "AND backend_type = 'client backend' "
				   "AND pid = (SELECT pid FROM pg_stat_activity WHERE application_name = 'web' "
				   "           ORDER BY backend_start DESC LIMIT 1)"),
		   1, "terminated pod-a's backend");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 1, 10000), 1,
		   "the terminated pod expires after its lease");
	PQfinish(a);
	is_int(pod_share_settled(b, "NULL", 50), 50, "pod-b grows back to 50");
	PQfinish(b);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "no pods left");
}

static void
test_own_pod_only(void)
{
	PGconn	   *a = pod_connect("api", "api-1");
	PGconn	   *b = pod_connect("api", "api-2");

	pod_share(b, "NULL");
	pod_share(a, "4");
	is_int(pg_long(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'api-1'"), 4,
		   "pool_share(4) records the demand of the caller's own pod");
	ok(pg_value(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'api-2'") == NULL,
	   "and leaves the other pod's demand (no bound) alone");
	is_int(pod_share(b, "NULL"), 50 - 4,
		   "the other pod's share follows: the budget minus the 4 its sibling asked for");
	PQfinish(a);
	PQfinish(b);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000), 0,
		   "both pods end");
}

static void
reload_and_wait(const char *sql, PGconn *conn, const char *check, long want)
{
	pg_exec(admin, sql);
	pg_exec(admin, "SELECT pg_reload_conf()");
	is_int(pg_wait_for(conn, check, want, 15000), want, "after reload: %s = %ld", check, want);
}

static void
test_settings_and_overflow(void)
{
	PGconn	   *p = pod_connect("svc", "svc-1");
	PGconn	   *others[8];

	is_int(pod_share(p, "NULL"), 50, "one pod alone gets the budget of 50");
	reload_and_wait("ALTER SYSTEM SET connbudget.reserved_connections = 20",
					admin, "SELECT budget FROM connbudget.budget", 40);
	is_int(pod_share(p, "NULL"), 40, "pool_share() follows the new budget of 40");
	reload_and_wait("ALTER SYSTEM SET connbudget.refresh_interval = '250ms'",
					p, "SELECT refresh_ms FROM connbudget.pool_share()", 250);

	/* "other" connections beyond the reserve shrink the budget */
	reload_and_wait("ALTER SYSTEM SET connbudget.reserved_connections = 2",
					admin, "SELECT budget FROM connbudget.budget", 58);
	for (int i = 0; i < 8; i++)
		others[i] = pg_connect_or_bail("application_name=psql");
	/* others: admin + 8 = 9, reserve 2: overflow 7 */
	is_int(pg_long(admin, "SELECT other FROM connbudget.budget"), 9,
		   "9 connections are not governed ('other')");
	is_int(pg_long(admin, "SELECT budget FROM connbudget.budget"), 58 - 7,
		   "they overflow the reserve of 2 by 7: the budget shrinks from 58 to 51");
	is_int(pod_share(p, "NULL"), 51, "and the pod's share shrinks with it");
	pg_finish_all(others, 8);
	is_int(pg_wait_for(admin, "SELECT budget FROM connbudget.budget", 58, 10000), 58,
		   "when they leave, the budget grows back");
	PQfinish(p);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");

	test_leases();
	test_own_pod_only();
	test_settings_and_overflow();

	PQfinish(admin);
	return done_testing();
}
