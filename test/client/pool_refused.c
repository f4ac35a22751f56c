/*
 * pool_refused.c -- a connect the server refuses for good: SQLSTATE 42501
 * (the role may not claim the application) and 53400 (the role holds
 * connbudget.max_pods_per_role pods).  The callers get CBPOOL_EREFUSED at
 * once instead of waiting out their timeout, the refusal is counted
 * (refusals_permanent, also in the Prometheus text) and logged once as an
 * error, the pool tries again no sooner than ten refresh intervals (10 s
 * before it knows the interval), unlike a 53300, and it connects by itself
 * once the rule that refused it is fixed.
 *
 * cluster: max_connections=40 superuser_reserved_connections=3 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

/* A pool of application app, pod pod, connecting as role; not waited for. */
static cbpool *
open_as(const char *role, const char *app, const char *pod, int refresh_ms)
{
	static char conninfo[600];
	cbpool_config cfg = test_config(app, pod);
	char		err[256];
	cbpool	   *pool;

	snprintf(conninfo, sizeof(conninfo), "%s user=%s", cluster_conninfo(), role);
	cfg.conninfo = conninfo;
	cfg.refresh_ms = refresh_ms;
	pool = cbpool_open(&cfg, err, sizeof(err));
	if (!pool)
		bail_out("cbpool_open: %s", err);
	return pool;
}

static void
test_role_may_not_claim(void)
{
	cbpool	   *pool;
	PGconn	   *conn;
	cbpool_stats_t s;
	double		t0;
	char		text[16384];
	int			len;

	pg_exec(admin, "CREATE ROLE bound_app LOGIN");
	pg_exec(admin, "CREATE ROLE someone_else");
	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"VALUES ('bound', 0, NULL, 1, '{someone_else}')");
	log_reset();
	pool = open_as("bound_app", "bound", "pod-bound", 100);

	t0 = now_seconds();
	conn = cbpool_acquire(pool, 10000);
	ok(conn == NULL && cbpool_last_error() == CBPOOL_EREFUSED,
	   "an acquire on a pool whose role may not claim its application fails with "
	   "CBPOOL_EREFUSED (%d: %s)", (int) cbpool_last_error(),
	   cbpool_strerror(cbpool_last_error()));
	ok(now_seconds() - t0 < 3,
	   "at the first refusal, not at its 10 s timeout (%.2f s)", now_seconds() - t0);
	ok(strstr(cbpool_strerror(CBPOOL_EREFUSED), "refuses this pool's identity") != NULL &&
	   strstr(cbpool_strerror(CBPOOL_EREFUSED), "will not change by itself") != NULL,
	   "cbpool_strerror() says the server refuses the pool's identity for good");
	s = stats_of(pool);
	ok(s.refusals_permanent >= 1 && s.connects_refused == 0 && s.total == 0,
	   "the refusal is counted as permanent, not as 53300 backpressure (%llu, %llu)",
	   (unsigned long long) s.refusals_permanent, (unsigned long long) s.connects_refused);

	t0 = now_seconds();
	conn = cbpool_acquire(pool, 10000);
	ok(conn == NULL && cbpool_last_error() == CBPOOL_EREFUSED && now_seconds() - t0 < 0.5,
	   "the next acquire fails at once (%.3f s)", now_seconds() - t0);
	is_int(cbpool_wait_ready(pool, 10000), CBPOOL_EREFUSED,
		   "and cbpool_wait_ready() says so too");

	/* ten refresh intervals of 100 ms: at most one retry a second */
	sleep_ms(2500);
	s = stats_of(pool);
	ok(s.refusals_permanent >= 2 && s.refusals_permanent <= 4,
	   "it tries again, but no sooner than ten refresh intervals (%llu refusals in about "
	   "3 s)", (unsigned long long) s.refusals_permanent);
	ok(logged_at("refused-permanently", "may not connect as application \"bound\"",
				 CBPOOL_LOG_ERROR) == 1 && logged("connect-failed", NULL) == 0,
	   "it is logged once, as an error (%d)", logged("refused-permanently", NULL));

	len = cbpool_prometheus(pool, text, sizeof(text));
	ok(len > 0 && len < (int) sizeof(text) &&
	   strstr(text, "# TYPE cbpool_refusals_permanent_total counter") != NULL &&
	   strstr(text, "cbpool_refusals_permanent_total{application=\"bound\"") != NULL,
	   "the Prometheus text counts it (cbpool_refusals_permanent_total)");

	/* the rule is fixed: the pool connects by itself */
	pg_exec(admin, "UPDATE connbudget.application_limits SET roles = '{bound_app}' "
			"WHERE application_name = 'bound'");
	ok(wait_stat(pool, s.total >= 1, 5000),
	   "once the role may claim the application, the pool connects by itself");
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "and hands out working connections");
	if (conn)
		cbpool_release(pool, conn);
	cbpool_close(pool);
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

static void
test_too_many_pods(void)
{
	PGconn	   *other_pod;
	cbpool	   *pool;
	PGconn	   *conn;
	cbpool_stats_t s;
	double		t0;

	pg_exec(admin, "CREATE ROLE one_pod LOGIN");
	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"(application_name) VALUES ('pods')");
	pg_exec(admin, "ALTER SYSTEM SET connbudget.max_pods_per_role = 1");
	pg_exec(admin, "SELECT pg_reload_conf()");
	sleep_ms(200);
	other_pod = pg_connect_or_bail("application_name=pods", "user=one_pod",
								   "options=-c connbudget.pod=pod-first");
	log_reset();

	/* no refresh_ms: the pool does not know the interval yet */
	pool = open_as("one_pod", "pods", "pod-second", 0);
	t0 = now_seconds();
	conn = cbpool_acquire(pool, 10000);
	ok(conn == NULL && cbpool_last_error() == CBPOOL_EREFUSED && now_seconds() - t0 < 3,
	   "a role at connbudget.max_pods_per_role: its new pod's pool fails with "
	   "CBPOOL_EREFUSED at once (%.2f s)", now_seconds() - t0);
	/* the message is logged after the lock, maybe after the acquire saw it */
	ok(wait_until((void) 0, logged_at("refused-permanently", "53400", CBPOOL_LOG_ERROR) == 1,
				  2000),
	   "53400 is logged as a permanent refusal");
	sleep_ms(3000);
	s = stats_of(pool);
	is_int((long) s.refusals_permanent, 1,
		   "before it knows the refresh interval, the pool waits 10 s before it asks "
		   "again");
	cbpool_close(pool);
	PQfinish(other_pod);
	pg_exec(admin, "ALTER SYSTEM RESET connbudget.max_pods_per_role");
	pg_exec(admin, "SELECT pg_reload_conf()");
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_role_may_not_claim, test_too_many_pods, NULL});
}
