/*
 * pool_observe.c -- what a pool tells: its metrics in the
 * Prometheus text format, and the server's notices on its connections
 * through the logger (which may call back into the pool).
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

static void
test_prometheus(void)
{
	cbpool_config cfg = test_config("basic", "pod\"quote");
	cbpool	   *pool;
	char		buf[16384];
	int			n;
	cbpool_stats_t s;

	cfg.refresh_ms = 3600 * 1000;	/* one refresh at start, so numbers hold still */
	pool = open_or_bail(&cfg);
	ok(wait_stat(pool, s.budget_refreshes == 1, 5000), "the pool read its share once");
	n = cbpool_prometheus(pool, buf, sizeof(buf));
	int			lines = 0,
				bad = 0;
	char	   *save = NULL;

	ok(n > 0 && n < (int) sizeof(buf), "metrics written (%d bytes)", n);
	is_int(cbpool_prometheus(pool, NULL, 0), n, "a NULL buffer returns the size needed");
	{
		char		small[64];
		int			m = cbpool_prometheus(pool, small, sizeof(small));

		ok(m == n && strlen(small) == sizeof(small) - 1,
		   "a small buffer is filled and terminated, and the full size returned");
	}
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char		name[128];
		char		rest[1024];
		double		value;

		lines++;
		if (line[0] == '#')
		{
			if (strncmp(line, "# HELP cbpool_", 14) != 0 && strncmp(line, "# TYPE cbpool_", 14) != 0)
				bad++;
			continue;
		}
		if (sscanf(line, "%127[a-z_]{%1023[^}]} %lf", name, rest, &value) != 3 ||
			strncmp(name, "cbpool_", 7) != 0 ||
			strstr(rest, "application=\"basic\",pod=\"pod\\\"quote\"") != rest)
		{
			diag("bad line: %s", line);
			bad++;
		}
	}
	ok(lines > 40 && bad == 0,
	   "every line is Prometheus text format with escaped labels (%d lines, %d bad)",
	   lines, bad);

	/* every statistic is there: the gauges and counters of cbpool_stats_t */
	cbpool_release(pool, NULL);	/* one misuse */
	n = cbpool_prometheus(pool, buf, sizeof(buf));
	s = stats_of(pool);
	{
		static const char *const series[] = {
			"cbpool_connections{", "cbpool_waiters{", "cbpool_max_size{", "cbpool_min_size{",
			"cbpool_share{", "cbpool_budget{", "cbpool_demand{", "cbpool_extension{",
			"cbpool_breaker_state{", "cbpool_acquired_total{", "cbpool_acquire_timeouts_total{",
			"cbpool_acquire_rejected_total{", "cbpool_handoffs_total{",
			"cbpool_barged_acquires_total{", "cbpool_barges_expired_total{",
			"cbpool_handoffs_moved_total{", "cbpool_acquire_wait_seconds{",
			"cbpool_acquire_wait_max_seconds{", "cbpool_connects_total{",
			"cbpool_connect_failures_total{", "cbpool_connects_refused_total{",
			"cbpool_closed_total{", "cbpool_rollbacks_on_release_total{",
			"cbpool_validations_failed_total{", "cbpool_budget_refreshes_total{",
			"cbpool_budget_errors_total{", "cbpool_leaks_detected_total{", "cbpool_misuse_total{",
			"cbpool_breaker_openings_total{", "cbpool_breaker_fast_failures_total{"};
		int			missing = 0;

		for (size_t i = 0; i < sizeof(series) / sizeof(series[0]); i++)
			if (!strstr(buf, series[i]))
			{
				diag("missing: %s", series[i]);
				missing++;
			}
		is_int(missing, 0, "the text has a series for every statistic (%zu looked for)",
			   sizeof(series) / sizeof(series[0]));
	}
	ok(strstr(buf, "cbpool_extension{application=\"basic\",pod=\"pod\\\"quote\"} 1\n") != NULL &&
	   s.extension == 1, "cbpool_extension is 1 against a server with connbudget");
	ok(s.misuse == 1 &&
	   strstr(buf, "cbpool_misuse_total{application=\"basic\",pod=\"pod\\\"quote\"} 1\n") != NULL,
	   "a release of NULL counts in cbpool_misuse_total");
	cbpool_close(pool);
}

/* ---- server notices go to the logger ---- */

static cbpool *notice_pool;
static int	notice_stats_calls;

/* For a notice, reads the pool's stats first, then logs like test_logger:
   a logger called under the pool's lock would block here, and the message
   never arrive. */
static void
notice_logger(void *user, cbpool_log_level level, const char *id, const char *message)
{
	cbpool	   *pool = __atomic_load_n(&notice_pool, __ATOMIC_ACQUIRE);

	if (pool && strcmp(id, "notice") == 0)
	{
		cbpool_stats_t s;

		cbpool_stats(pool, &s);
		__atomic_fetch_add(&notice_stats_calls, 1, __ATOMIC_RELAXED);
	}
	test_logger(user, level, id, message);
}

static void
test_notices(void)
{
	cbpool_config cfg = test_config("basic", "pod-notice");
	cbpool	   *pool;
	PGconn	   *conn;
	long		pid;
	int			seen = 0;
	char		sql[128];

	cfg.max_size = 1;
	cfg.logger.func = notice_logger;
	/* no refresh during the test: a pool_share() call on the connection
	   when it is terminated would read the FATAL as its own error, not as
	   a notice of an idle connection */
	cfg.refresh_ms = 60000;
	log_reset();
	pool = open_or_bail(&cfg);
	__atomic_store_n(&notice_pool, pool, __ATOMIC_RELEASE);

	conn = cbpool_acquire(pool, 5000);
	pg_exec(conn, "DO $$BEGIN RAISE WARNING 'cbpool-warning %', 42; "
			"RAISE NOTICE 'cbpool-notice'; END$$");
	is_int(logged_at("notice", "server WARNING 01000: cbpool-warning 42", CBPOOL_LOG_WARN), 1,
		   "a WARNING on a pooled connection reaches the logger as a warning");
	is_int(logged_at("notice", "server NOTICE 00000: cbpool-notice", CBPOOL_LOG_INFO), 1,
		   "a NOTICE reaches it as info");
	pid = pg_long(conn, "SELECT pg_backend_pid()");
	cbpool_release(pool, conn);

	/* an idle connection terminated: the maintenance thread reads the
	   FATAL while it checks idle connections under the pool's lock */
	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%ld)", pid);
	pg_exec(admin, sql);
	for (int i = 0; i < 300 && !seen; i++)
	{
		seen = logged_at("notice", "server FATAL 57P01: terminating connection",
						 CBPOOL_LOG_WARN);
		if (!seen)
			sleep_ms(10);
	}
	ok(seen, "the FATAL of a terminated idle connection reaches the logger");
	if (!seen)
		bail_out("no notice after 3 s: is the logger blocked under the pool's lock?");
	ok(__atomic_load_n(&notice_stats_calls, __ATOMIC_RELAXED) >= 3,
	   "and the logger could call back into the pool each time");

	ok(pool_serves(pool, 5000), "the pool replaced the terminated connection");
	__atomic_store_n(&notice_pool, NULL, __ATOMIC_RELEASE);
	cbpool_close(pool);
}

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_prometheus, test_notices, NULL});
}
