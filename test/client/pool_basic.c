/*
 * pool_basic.c -- the pool's everyday behaviour against a real server:
 * acquire and release, resetting state, validation, timeouts and
 * backpressure, FIFO waiters, lifetimes, idle timeouts, leak reports,
 * misuse, invalid configurations, metrics, and cbpool_run() retries.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

static void
test_acquire_release(void)
{
	cbpool_config cfg = test_config("basic", "pod-basic");
	char		err[256];
	double		t0 = now_seconds();
	cbpool	   *pool = cbpool_open(&cfg, err, sizeof(err));
	int			ready = pool ? cbpool_wait_ready(pool, 10000) : -1;
	PGconn	   *conn;
	cbpool_stats_t s;

	ok(pool != NULL && ready == CBPOOL_OK && now_seconds() - t0 < 5,
	   "cbpool_wait_ready() returns once the first connection is there (%.2f s)",
	   now_seconds() - t0);
	if (!pool)
		bail_out("cbpool_open: %s", err);
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "acquire gives a working connection");
	is_str(pg_value(conn, "SELECT current_setting('application_name')"), "basic",
		   "it connected with the pool's application_name");
	is_str(pg_value(conn, "SELECT pod FROM connbudget.pods WHERE application_name = 'basic'"),
		   "pod-basic", "and as the pool's pod (connbudget.pod)");
	s = stats_of(pool);
	ok(s.in_use == 1 && s.acquired == 1, "stats: 1 in use, 1 acquired");
	cbpool_release(pool, conn);
	ok(wait_stat(pool, s.in_use == 0 && s.idle >= 1, 5000),
	   "after release: nothing in use, idle again");
	ok(wait_stat(pool, s.budget_refreshes >= 1 && s.extension == 1, 5000),
	   "the pool read its share from connbudget.pool_share()");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-basic' "
				   "AND lease_expires IS NOT NULL"), 1,
		   "the server sees the pod's lease");
	cbpool_close(pool);
}

static void
test_reset_on_release(void)
{
	cbpool_config cfg = test_config("basic", "pod-reset");
	cbpool	   *pool;
	PGconn	   *conn;
	PGresult   *res;
	cbpool_stats_t s;

	cfg.max_size = 1;
	pool = open_or_bail(&cfg);

	conn = cbpool_acquire(pool, 5000);
	PQclear(PQexec(conn, "BEGIN"));
	PQclear(PQexec(conn, "CREATE TEMP TABLE t_reset (x int)"));
	cbpool_release(pool, conn);
	conn = cbpool_acquire(pool, 5000);
	ok(PQtransactionStatus(conn) == PQTRANS_IDLE,
	   "a transaction left open is rolled back on release");
	is_int(pg_long(conn, "SELECT count(*) FROM pg_class WHERE relname = 't_reset'"), 0,
		   "its work is undone");

	PQclear(PQexec(conn, "BEGIN"));
	res = PQexec(conn, "SELECT 1/0");
	PQclear(res);
	ok(PQtransactionStatus(conn) == PQTRANS_INERROR, "a failed transaction...");
	cbpool_release(pool, conn);
	conn = cbpool_acquire(pool, 5000);
	ok(PQtransactionStatus(conn) == PQTRANS_IDLE && query_works(conn),
	   "...is rolled back on release too, and the connection works");
	s = stats_of(pool);
	is_int(s.rollbacks_on_release, 2, "two rollbacks on release counted");

	/* a query still running when released: the connection cannot be trusted */
	PQsendQuery(conn, "SELECT pg_sleep(0.2)");
	cbpool_release(pool, conn);
	s = stats_of(pool);
	is_int(s.closed_broken, 1, "a connection released with a query in flight is discarded");
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "and replaced by a working one");
	cbpool_release(pool, conn);
	cbpool_close(pool);
}

static void
test_dead_connections(void)
{
	cbpool_config cfg = test_config("basic", "pod-dead");
	cbpool	   *pool;
	PGconn	   *conn;
	long		pid;
	cbpool_stats_t s;

	cfg.max_size = 1;
	cfg.validate_idle_ms = 60000;	/* only the cheap socket check */
	pool = open_or_bail(&cfg);

	/* an idle connection terminated by the server is never handed out */
	conn = cbpool_acquire(pool, 5000);
	pid = pg_long(conn, "SELECT pg_backend_pid()");
	cbpool_release(pool, conn);
	{
		char		sql[128];

		snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%ld)", pid);
		pg_exec(admin, sql);
	}
	sleep_ms(100);
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn),
	   "after pg_terminate_backend of an idle connection, acquire gives a working one");
	ok(pg_long(conn, "SELECT pg_backend_pid()") != pid, "a new backend, not the dead one");
	s = stats_of(pool);
	ok(s.closed_broken >= 1, "the dead connection was discarded (closed_broken %llu)",
	   (unsigned long long) s.closed_broken);

	/* a busy connection terminated under its user: discarded on release */
	pid = pg_long(conn, "SELECT pg_backend_pid()");
	{
		char		sql[128];
		PGresult   *res;

		snprintf(sql, sizeof(sql),
				 "SELECT pg_terminate_backend(%ld) FROM pg_sleep(0.1)", pid);
		PQsendQuery(conn, "SELECT pg_sleep(5)");
		pg_exec(admin, sql);
		while ((res = PQgetResult(conn)) != NULL)
			PQclear(res);
		ok(PQstatus(conn) == CONNECTION_BAD, "terminating a busy connection breaks it");
	}
	cbpool_release(pool, conn);
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "it is discarded on release and replaced");
	cbpool_release(pool, conn);
	cbpool_close(pool);

	/* validation with a round trip after validate_idle_ms */
	cfg.validate_idle_ms = 0;
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	sleep_ms(20);
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "validate_idle_ms = 0: every hand-out is validated");
	cbpool_release(pool, conn);
	cbpool_close(pool);
}

typedef struct Waiter
{
	cbpool	   *pool;
	int			index;
	int			timeout_ms;
	PGconn	   *conn;
	cbpool_error error;
	double		waited;
	int		   *order;
	int		   *order_len;
	pthread_mutex_t *order_lock;
} Waiter;

static void *
waiter_main(void *arg)
{
	Waiter	   *w = arg;
	double		t0 = now_seconds();

	w->conn = cbpool_acquire(w->pool, w->timeout_ms);
	w->error = cbpool_last_error();
	w->waited = now_seconds() - t0;
	if (w->conn)
	{
		pthread_mutex_lock(w->order_lock);
		w->order[(*w->order_len)++] = w->index;
		pthread_mutex_unlock(w->order_lock);
		sleep_ms(5);
		cbpool_release(w->pool, w->conn);
	}
	return NULL;
}

static void
test_waiting(void)
{
	cbpool_config cfg = test_config("basic", "pod-wait");
	cbpool	   *pool;
	PGconn	   *held;
	PGconn	   *conn;
	double		t0;
	pthread_t	threads[6];
	Waiter		waiters[6];
	int			order[6];
	int			order_len = 0;
	pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
	int			fifo = 1;
	cbpool_stats_t s;

	cfg.max_size = 1;
	cfg.max_waiters = 6;
	pool = open_or_bail(&cfg);
	held = cbpool_acquire(pool, 5000);

	/* timeout */
	t0 = now_seconds();
	conn = cbpool_acquire(pool, 300);
	ok(conn == NULL && cbpool_last_error() == CBPOOL_ETIMEOUT,
	   "with the only connection held, acquire(300 ms) times out");
	ok(now_seconds() - t0 >= 0.29, "after its timeout, not before (%.3f s)", now_seconds() - t0);
	is_int(stats_of(pool).acquire_timeouts, 1, "acquire_timeouts counts it");

	/* FIFO: six waiters queued one after another are served in order */
	for (int i = 0; i < 6; i++)
	{
		waiters[i] = (Waiter) {
			.pool = pool, .index = i, .timeout_ms = 10000,
			.order = order, .order_len = &order_len, .order_lock = &order_lock
		};
		pthread_create(&threads[i], NULL, waiter_main, &waiters[i]);
		ok(wait_stat(pool, s.waiters == i + 1, 5000), "waiter %d queued", i + 1);
	}

	/* backpressure: max_waiters = 6 are waiting, the 7th fails at once */
	t0 = now_seconds();
	conn = cbpool_acquire(pool, 5000);
	ok(conn == NULL && cbpool_last_error() == CBPOOL_EBACKPRESSURE,
	   "with max_waiters (6) waiting, acquire fails at once with CBPOOL_EBACKPRESSURE");
	ok(now_seconds() - t0 < 1.0, "without waiting (%.3f s)", now_seconds() - t0);
	is_int(stats_of(pool).acquire_rejected, 1, "acquire_rejected counts it");

	cbpool_release(pool, held);
	for (int i = 0; i < 6; i++)
		pthread_join(threads[i], NULL);
	is_int(order_len, 6, "every waiter was served");
	for (int i = 0; i < order_len; i++)
		if (order[i] != i)
			fifo = 0;
	ok(fifo, "waiters were served first come, first served (%d %d %d %d %d %d)",
	   order[0], order[1], order[2], order[3], order[4], order[5]);
	s = stats_of(pool);
	ok(s.acquire_wait_us_p99 >= s.acquire_wait_us_p50 && s.acquire_wait_us_p99 > 1000,
	   "acquire-wait percentiles reflect the waits (p50 %llu us, p99 %llu us)",
	   (unsigned long long) s.acquire_wait_us_p50,
	   (unsigned long long) s.acquire_wait_us_p99);

	/* a waiter is served when the connection comes back */
	order_len = 0;
	held = cbpool_acquire(pool, 5000);
	waiters[0] = (Waiter) {
		.pool = pool, .index = 0, .timeout_ms = 20000,
		.order = order, .order_len = &order_len, .order_lock = &order_lock
	};
	pthread_create(&threads[0], NULL, waiter_main, &waiters[0]);
	wait_stat(pool, s.waiters == 1, 5000);
	cbpool_release(pool, held);
	pthread_join(threads[0], NULL);
	ok(waiters[0].conn != NULL && order_len == 1, "a single waiter gets the released connection");
	cbpool_close(pool);
}

static void *
close_waiter_main(void *arg)
{
	Waiter	   *w = arg;
	double		t0 = now_seconds();

	w->conn = cbpool_acquire(w->pool, w->timeout_ms);
	w->error = cbpool_last_error();
	w->waited = now_seconds() - t0;
	return NULL;
}

static void
test_close_wakes_waiters(void)
{
	cbpool_config cfg = test_config("basic", "pod-close");
	cbpool	   *pool;
	PGconn	   *held;
	pthread_t	thread;
	Waiter		w = {0};
	cbpool_stats_t s;

	cfg.max_size = 1;
	pool = open_or_bail(&cfg);
	held = cbpool_acquire(pool, 5000);
	w.pool = pool;
	w.timeout_ms = 20000;
	pthread_create(&thread, NULL, close_waiter_main, &w);
	wait_stat(pool, s.waiters == 1, 5000);
	log_reset();
	cbpool_close(pool);
	pthread_join(thread, NULL);
	ok(w.conn == NULL && w.error == CBPOOL_ECLOSED && w.waited < 5,
	   "cbpool_close() wakes a waiter at once with CBPOOL_ECLOSED (%.2f s)", w.waited);
	is_int(logged("close-in-use", "1 connection(s) still in use"), 1,
		   "closing with a connection out says so");
	ok(query_works(held), "the connection still out keeps working");
	cbpool_release(pool, held);
	ok(1, "and releasing it after close frees the pool (checked by the sanitizers)");
}

static void
test_lifetime_and_idle(void)
{
	cbpool_config cfg = test_config("basic", "pod-life");
	cbpool	   *pool;
	PGconn	   *conns[4];
	PGconn	   *conn;
	cbpool_stats_t s;

	/* lifetime: idle connections retire, in-use ones retire on release */
	cfg.max_lifetime_ms = 400;
	cfg.lifetime_jitter_pct = 10;
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	sleep_ms(600);
	cbpool_release(pool, conn);
	s = stats_of(pool);
	ok(s.closed_lifetime >= 1, "a connection past max_lifetime_ms is retired on release");
	ok(wait_stat(pool, s.closed_lifetime >= 2, 5000),
	   "idle connections past their lifetime are retired too (closed_lifetime %llu)",
	   (unsigned long long) s.closed_lifetime);
	ok(wait_stat(pool, s.total >= 1, 5000), "and replaced to keep min_idle");
	cbpool_close(pool);

	/* after a burst, the pool gives connections back: its demand falls, so
	   does its share, and idle connections beyond it close (the idle
	   timeout alone is tested against a server without the extension) */
	cfg = test_config("basic", "pod-idle");
	cfg.max_size = 4;
	pool = open_or_bail(&cfg);
	for (int i = 0; i < 4; i++)
	{
		conns[i] = cbpool_acquire(pool, 10000);
		if (!conns[i])
		{
			s = stats_of(pool);
			diag("acquire %d of 4 failed: %s (share %d, total %d, in use %d, breaker %d)",
				 i + 1, cbpool_strerror(cbpool_last_error()), s.share, s.total,
				 s.in_use, s.breaker_state);
		}
	}
	ok(conns[0] && conns[1] && conns[2] && conns[3],
	   "one thread taking 4 connections at once: the pool grows to 4");
	for (int i = 0; i < 4; i++)
		if (conns[i])
			cbpool_release(pool, conns[i]);
	ok(wait_stat(pool, s.total == 1, 5000),
	   "once they are released, it shrinks back to 1 (total %d, share %d)", s.total, s.share);
	s = stats_of(pool);
	is_int(s.closed_idle + s.closed_over_share, 3, "the 3 idle connections were closed");
	cbpool_close(pool);
}

/* Hold the pool's connection for 100 ms, five times. */
static void *
short_holder_main(void *arg)
{
	cbpool	   *pool = arg;

	for (int i = 0; i < 5; i++)
	{
		PGconn	   *conn = cbpool_acquire(pool, 10000);

		if (!conn)
			continue;
		sleep_ms(100);
		cbpool_release(pool, conn);
	}
	return NULL;
}

static void
test_leaks(void)
{
	cbpool_config cfg = test_config("basic", "pod-leak");
	cbpool	   *pool;
	PGconn	   *conn;
	char		where[64];
	cbpool_stats_t s;

	cfg.leak_threshold_ms = 150;
	pool = open_or_bail(&cfg);
	log_reset();
	conn = CBPOOL_ACQUIRE(pool, 5000);
	snprintf(where, sizeof(where), "pool_basic.c:%d", __LINE__ - 1);
	ok(wait_stat(pool, s.leaks_detected == 1, 5000),
	   "a connection held past leak_threshold_ms is detected");
	sleep_ms(400);
	is_int(logged("leak", where), 1, "reported once, with where it was acquired (%s)", where);
	cbpool_release(pool, conn);
	cbpool_close(pool);

	/* connections passed from one holder to the next are not leaks */
	cfg.max_size = 1;
	cfg.leak_threshold_ms = 300;
	pool = open_or_bail(&cfg);
	log_reset();
	{
		pthread_t	threads[4];

		for (int i = 0; i < 4; i++)
			pthread_create(&threads[i], NULL, short_holder_main, pool);
		for (int i = 0; i < 4; i++)
			pthread_join(threads[i], NULL);
	}
	is_int(logged("leak", NULL), 0,
		   "4 threads passing one connection around (100 ms holds, handed over directly): no leak reported");
	cbpool_close(pool);
}

static void
test_misuse(void)
{
	cbpool_config cfg = test_config("basic", "pod-misuse");
	cbpool	   *pool = open_or_bail(&cfg);
	cbpool	   *other;
	PGconn	   *conn;
	PGconn	   *stranger;
	cbpool_stats_t s;

	log_reset();
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	cbpool_release(pool, conn);
	is_int(logged("misuse", "released twice"), 1,
		   "releasing a connection twice is reported, not a crash");
	stranger = pg_connect_or_bail("application_name=stranger");
	cbpool_release(pool, stranger);
	is_int(logged("misuse", "does not belong to this pool"), 1,
		   "releasing a connection from elsewhere is reported and ignored");
	ok(query_works(stranger), "and the stranger's connection is left alone");
	PQfinish(stranger);

	other = open_or_bail(&cfg);
	conn = cbpool_acquire(other, 5000);
	cbpool_release(pool, conn);
	is_int(logged("misuse", "does not belong to this pool"), 2,
		   "releasing a connection into another pool is reported and ignored");
	cbpool_release(other, conn);
	cbpool_close(other);

	cbpool_release(pool, NULL);
	is_int(logged("misuse", "NULL connection"), 1, "releasing NULL is reported");
	s = stats_of(pool);
	is_int(s.misuse, 4, "the misuse counter counts all four");
	ok(cbpool_acquire(NULL, 10) == NULL && cbpool_last_error() == CBPOOL_EINVAL,
	   "acquire from a NULL pool: NULL and CBPOOL_EINVAL");
	cbpool_release(NULL, NULL);
	cbpool_stats(NULL, &s);
	cbpool_stats(pool, NULL);
	cbpool_close(NULL);
	ok(cbpool_prometheus(NULL, NULL, 0) == CBPOOL_EINVAL &&
	   cbpool_run(NULL, NULL, NULL, NULL) == CBPOOL_EINVAL &&
	   cbpool_run(pool, NULL, NULL, NULL) == CBPOOL_EINVAL &&
	   cbpool_wait_ready(NULL, 10) == CBPOOL_EINVAL,
	   "NULL arguments get CBPOOL_EINVAL, not a crash");
	cbpool_close(pool);
}

/* Each invalid configuration, and the message cbpool_open must give. */
static const char *
invalid_case(int i, cbpool_config *c, const char **message)
{
	switch (i)
	{
		case 0:
			c->min_idle = -1;
			*message = "min_idle must not be negative (got -1)";
			return "negative min_idle";
		case 1:
			c->max_size = -5;
			*message = "max_size must not be negative (got -5)";
			return "negative max_size";
		case 2:
			c->min_idle = 5;
			c->max_size = 2;
			*message = "min_idle (5) must not exceed max_size (2)";
			return "min_idle above max_size";
		case 3:
			c->acquire_timeout_ms = -1;
			*message = "acquire_timeout_ms must not be negative";
			return "a negative acquire timeout";
		case 4:
			c->validate_idle_ms = -2;
			*message = "validate_idle_ms must be -1 (never) or >= 0";
			return "validate_idle_ms below -1";
		case 5:
			c->backoff_initial_ms = 500;
			c->backoff_max_ms = 10;
			*message = "backoff_max_ms (10) must not be below backoff_initial_ms (500)";
			return "a backoff cap below its start";
		case 6:
			c->pod = "0123456789012345678901234567890123456789012345678901234567890123";
			*message = "is not 1 to 63 bytes of printable ASCII";
			return "a pod id of 64 bytes";
		case 7:
			c->pod = "p\xc3\xb6" "d";
			*message = "is not 1 to 63 bytes of printable ASCII";
			return "a multibyte pod id";
		case 8:
			c->application_name = "";
			*message = "application_name must be 1 to 63 bytes";
			return "an empty application_name";
		case 9:
			c->conninfo = "host='unterminated";
			*message = "invalid conninfo";
			return "an invalid conninfo";
		case 10:
			c->conninfo = "nosuchkeyword=1";
			*message = "invalid conninfo";
			return "an unknown conninfo keyword";
		case 11:
			c->lifetime_jitter_pct = 80;
			*message = "lifetime_jitter_pct must be at most 50";
			return "a jitter of 80%";
		case 12:
			c->connect_timeout_ms = 0;
			*message = "connect_timeout_ms and validate_timeout_ms must be positive";
			return "a connect timeout of 0";
		case 13:
			c->barge_limit = -1;
			*message = "barge_limit must not be negative (got -1)";
			return "a negative barge_limit";
		case 14:
			c->breaker_failures = -3;
			*message = "breaker_failures must not be negative (got -3)";
			return "a negative breaker_failures";
		case 15:
			c->breaker_open_ms = 0;
			*message = "breaker_open_ms must be positive while breaker_failures is set";
			return "a breaker that would never probe";
		case 16:
			c->breaker_open_ms = 7200000;
			*message = "breaker_open_ms must be at most 3600000 (got 7200000)";
			return "a breaker open for two hours";
		case 17:
			c->breaker_after_ms = -1;
			*message = "breaker_after_ms must not be negative (got -1)";
			return "a negative breaker_after_ms";
		case 18:
			c->follow_cpu = 2;
			*message = "follow_cpu must be 0 or 1 (got 2)";
			return "a follow_cpu of 2";
	}
	return NULL;
}

static void
test_invalid_config(void)
{
	const char *label;

	for (int i = 0;; i++)
	{
		cbpool_config cfg = test_config("basic", "pod-cfg");
		const char *message = NULL;
		char		err[256] = "";
		cbpool	   *pool;

		label = invalid_case(i, &cfg, &message);
		if (label == NULL)
			break;
		pool = cbpool_open(&cfg, err, sizeof(err));
		ok(pool == NULL && strstr(err, message) != NULL,
		   "cbpool_open refuses %s: \"%s\"", label, err);
		if (pool)
			cbpool_close(pool);
	}
	{
		char		err[256] = "";

		ok(cbpool_open(NULL, err, sizeof(err)) == NULL && strstr(err, "cfg must not be NULL"),
		   "cbpool_open(NULL) refuses: \"%s\"", err);
		ok(cbpool_open(NULL, NULL, 0) == NULL, "and does not need an error buffer");
	}
}

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

/*
 * PGAPPNAME and PGOPTIONS apply as in libpq: the pool passes
 * application_name and options itself, so it reads them.  Set while no
 * pool's thread runs (getenv and setenv must not race).
 */
static void
test_environment(void)
{
	cbpool_config cfg = test_config(NULL, "pod-env");
	cbpool	   *pool;
	PGconn	   *conn;

	setenv("PGAPPNAME", "basic-env", 1);
	setenv("PGOPTIONS", "-c work_mem=7777kB", 1);
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	is_str(pg_value(conn, "SELECT current_setting('application_name')"), "basic-env",
		   "without application_name in cfg or conninfo, PGAPPNAME names the application");
	is_str(pg_value(conn, "SELECT current_setting('work_mem')"), "7777kB",
		   "PGOPTIONS reaches the server");
	is_str(pg_value(conn, "SELECT current_setting('connbudget.pod')"), "pod-env",
		   "next to the pool's own connbudget.pod");
	cbpool_release(pool, conn);
	cbpool_close(pool);

	cfg.application_name = "basic";
	{
		char		conninfo[1024];

		snprintf(conninfo, sizeof(conninfo),
				 "%s application_name=basic-conninfo options='-c work_mem=1234kB'",
				 cluster_conninfo());
		cfg.conninfo = conninfo;
		pool = open_or_bail(&cfg);
		conn = cbpool_acquire(pool, 5000);
		is_str(pg_value(conn, "SELECT current_setting('application_name')"), "basic",
			   "cfg.application_name comes before conninfo and PGAPPNAME");
		is_str(pg_value(conn, "SELECT current_setting('work_mem')"), "1234kB",
			   "options in conninfo come before PGOPTIONS");
		cbpool_release(pool, conn);
		cbpool_close(pool);
	}
	unsetenv("PGAPPNAME");
	unsetenv("PGOPTIONS");
}

/* ---- cbpool_run ---- */

static int
run_serialization(cbpool_tx *tx, void *arg)
{
	PGresult   *res = cbpool_tx_exec(tx, (const char *) arg);
	int			ok_ = cbpool_tx_check(tx, res);

	PQclear(res);
	if (!ok_)
		return 1;
	res = cbpool_tx_exec(tx, "INSERT INTO run_log VALUES (1)");
	ok_ = cbpool_tx_check(tx, res);
	PQclear(res);
	return ok_ ? 0 : 1;
}

static int
run_lose_connection(cbpool_tx *tx, void *arg)
{
	(void) arg;
	if (cbpool_tx_attempt(tx) == 1)
	{
		PGresult   *res = cbpool_tx_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())");

		PQclear(res);
		return 1;
	}
	PQclear(cbpool_tx_exec(tx, "INSERT INTO run_log VALUES (2)"));
	return 0;
}

static void
test_run(void)
{
	cbpool_config cfg = test_config("basic", "pod-run");
	cbpool	   *pool = open_or_bail(&cfg);
	cbpool_run_opts opts;
	int			rc;

	pg_exec(admin, "CREATE TABLE run_log (kind int)");
	pg_exec(admin, "CREATE SEQUENCE run_seq");
	pg_exec(admin,
			"CREATE FUNCTION fail_until(n int, code text) RETURNS void LANGUAGE plpgsql AS $$ "
			"BEGIN IF nextval('run_seq') <= n THEN "
			"RAISE EXCEPTION 'simulated %', code USING ERRCODE = code; END IF; END $$");

	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(2, '40001')", &opts);
	ok(rc == 0 && opts.attempts == 3,
	   "idempotent work failing twice with 40001 commits on the 3rd attempt (rc %d, attempts %d)",
	   rc, opts.attempts);
	is_int(pg_long(admin, "SELECT count(*) FROM run_log WHERE kind = 1"), 1,
		   "its effect is there once");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(1, '40P01')", &opts);
	ok(rc == 0 && opts.attempts == 2, "a deadlock (40P01) is retried too (attempts %d)",
	   opts.attempts);

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(1, '40001')", &opts);
	ok(rc == 1 && opts.attempts == 1 && strcmp(opts.sqlstate, "40001") == 0,
	   "work not marked idempotent is not retried: fn's error is returned with SQLSTATE 40001");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	opts.max_attempts = 3;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(10, '40001')", &opts);
	ok(rc == 1 && opts.attempts == 3, "retries stop after max_attempts (3)");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(5, '23505')", &opts);
	ok(rc == 1 && opts.attempts == 1 && strcmp(opts.sqlstate, "23505") == 0,
	   "other errors (23505) are not retried");

	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_lose_connection, NULL, &opts);
	ok(rc == 0 && opts.attempts == 2,
	   "a connection lost during idempotent work is retried on a new connection (attempts %d)",
	   opts.attempts);
	is_int(pg_long(admin, "SELECT count(*) FROM run_log WHERE kind = 2"), 1,
		   "and its effect is there once");
	cbpool_close(pool);
}

static void
test_without_thread(void)
{
	cbpool_config cfg = test_config("basic", "pod-loop");
	cbpool	   *pool;
	PGconn	   *conn;
	char		err[256];
	cbpool_stats_t s;

	cfg.background = 0;
	pool = cbpool_open(&cfg, err, sizeof(err));
	ok(pool != NULL, "a pool without its background thread opens");
	for (int i = 0; i < 5; i++)
		cbpool_maintain(pool);
	conn = cbpool_acquire(pool, 10000);
	ok(conn != NULL && query_works(conn),
	   "without the thread, acquire drives the maintenance itself and connects");
	cbpool_release(pool, conn);
	ok(wait_stat(pool, (cbpool_maintain(pool), s.budget_refreshes >= 1), 5000),
	   "cbpool_maintain() refreshes the share");
	cbpool_close(pool);
}

/* ---- server notices go to the logger ---- */

static cbpool *notice_pool;
static int	notice_stats_calls;

/* How many acquires went through the lock-free fast path (white box: the
   tests include the implementation). */
static uint64_t
fast_acquires(cbpool *pool)
{
	uint64_t	n = 0;

	pthread_mutex_lock(&pool->lock);
	for (cbpool__conn *c = pool->conns; c; c = c->next)
		n += __atomic_load_n(&c->fast_acquires, __ATOMIC_RELAXED);
	for (cbpool__conn *c = pool->spare; c; c = c->next)
		n += __atomic_load_n(&c->fast_acquires, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&pool->lock);
	return n;
}

typedef struct CycleArgs
{
	cbpool	   *pool;
	int			cycles;
	int			failures;
} CycleArgs;

static void *
cycler_main(void *arg)
{
	CycleArgs  *a = arg;

	for (int i = 0; i < a->cycles; i++)
	{
		PGconn	   *conn = cbpool_acquire(a->pool, 10000);

		if (!conn)
		{
			a->failures++;
			continue;
		}
		if (i % 50 == 0 && !query_works(conn))
			a->failures++;
		cbpool_release(a->pool, conn);
	}
	return NULL;
}

static void
test_fast_path(void)
{
	cbpool_config cfg = test_config("basic", "pod-fast");
	cbpool	   *pool;
	PGconn	   *first,
			   *conn;
	char		where[64];
	uint64_t	fast0;
	cbpool_stats_t s;

	cfg.max_size = 2;
	cfg.min_idle = 2;
	cfg.leak_threshold_ms = 150;
	cfg.validate_idle_ms = -1;
	pool = open_or_bail(&cfg);
	ok(wait_stat(pool, s.total == 2, 5000), "the pool holds 2 connections");

	/* the same thread gets its connection back, without the lock */
	first = cbpool_acquire(pool, 5000);
	cbpool_release(pool, first);
	fast0 = fast_acquires(pool);
	for (int i = 0; i < 200; i++)
	{
		conn = cbpool_acquire(pool, 5000);
		if (conn != first)
			break;
		cbpool_release(pool, conn);
	}
	ok(conn == first, "a thread that acquires again gets the connection it released");
	ok(fast_acquires(pool) > fast0,
	   "and most of the time through the fast path (%llu of 200)",
	   (unsigned long long) (fast_acquires(pool) - fast0));
	s = stats_of(pool);
	ok(s.in_use == 0 && s.idle == 2 && s.acquired >= 201,
	   "stats count parked connections as idle and fast acquires as acquired "
	   "(in use %d, idle %d, acquired %llu)", s.in_use, s.idle,
	   (unsigned long long) s.acquired);

	/* a leak after a fast acquire names the fast acquire's line */
	log_reset();
	conn = CBPOOL_ACQUIRE(pool, 5000);
	cbpool_release(pool, conn);
	conn = CBPOOL_ACQUIRE(pool, 5000);
	snprintf(where, sizeof(where), "pool_basic.c:%d", __LINE__ - 1);
	ok(wait_stat(pool, s.leaks_detected >= 1, 5000), "a connection held too long is a leak");
	sleep_ms(300);
	ok(logged("leak", where) == 1 && logged("leak", NULL) == 1,
	   "reported once, with the line of the last acquire (%s)", where);
	cbpool_release(pool, conn);

	/* a parked connection killed by the server is not handed out */
	conn = cbpool_acquire(pool, 5000);
	{
		char		sql[128];
		int			pid = PQbackendPID(conn);

		snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pid);
		cbpool_release(pool, conn);
		pg_exec(admin, sql);
		/* the backend is gone (its FATAL and EOF are on the socket) */
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
		pg_wait_for(admin, sql, 0, 10000);
	}
	sleep_ms(50);
	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn),
	   "after the server ended a parked connection, acquire gives a working one");
	cbpool_release(pool, conn);

	/* threads handing 2 connections around: parked ones reach waiters */
	{
		CycleArgs	args[4];
		pthread_t	threads[4];
		int			failures = 0;

		fast0 = fast_acquires(pool);
		s = stats_of(pool);
		for (int i = 0; i < 4; i++)
		{
			args[i].pool = pool;
			args[i].cycles = 3000;
			args[i].failures = 0;
			pthread_create(&threads[i], NULL, cycler_main, &args[i]);
		}
		for (int i = 0; i < 4; i++)
		{
			pthread_join(threads[i], NULL);
			failures += args[i].failures;
		}
		{
			uint64_t	before = s.acquired;

			s = stats_of(pool);
			ok(failures == 0 && s.acquired - before == 12000 && s.acquire_timeouts == 0,
			   "4 threads x 3000 cycles on 2 connections: every acquire served "
			   "(%llu counted, %d failures, %llu timeouts)",
			   (unsigned long long) (s.acquired - before), failures,
			   (unsigned long long) s.acquire_timeouts);
		}
		ok(s.in_use == 0 && s.idle == s.total && s.waiters == 0,
		   "and afterwards everything is idle (in use %d, idle %d, total %d)",
		   s.in_use, s.idle, s.total);
	}

	cbpool_close(pool);

	/*
	 * A thread that keeps using its connection never finds it taken for a
	 * share refresh: the refresh (every 100 ms on this cluster) is made by
	 * the thread itself when it releases the connection.  With one
	 * connection and acquires that may not wait at all, a connection taken
	 * away would show as a timeout.
	 */
	cfg.max_size = 1;
	cfg.min_idle = 1;
	cfg.leak_threshold_ms = 0;
	pool = open_or_bail(&cfg);
	ok(wait_stat(pool, s.budget_refreshes >= 1, 5000), "a pool of one connection has its share");
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	{
		uint64_t	refreshes = stats_of(pool).budget_refreshes;
		long		cycles = 0,
					timeouts = 0;
		double		until = now_seconds() + 1.0;

		while (now_seconds() < until)
		{
			conn = cbpool_acquire(pool, 0);
			if (!conn)
			{
				timeouts++;
				continue;
			}
			cycles++;
			cbpool_release(pool, conn);
		}
		s = stats_of(pool);
		ok(s.budget_refreshes >= refreshes + 3,
		   "the share was refreshed while one thread cycled its connection for 1 s "
		   "(%llu times)", (unsigned long long) (s.budget_refreshes - refreshes));
		ok(timeouts == 0 && cycles > 1000,
		   "and no acquire found the connection taken (%ld cycles, %ld without a connection)",
		   cycles, timeouts);
	}

	/* closing with parked connections closes them */
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	cbpool_close(pool);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM pg_stat_activity "
						 "WHERE application_name = 'basic' AND pid <> pg_backend_pid()", 0, 5000), 0,
		   "close() with a parked connection closes every connection");
}

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

	conn = cbpool_acquire(pool, 5000);
	ok(conn != NULL && query_works(conn), "the pool replaced the terminated connection");
	cbpool_release(pool, conn);
	__atomic_store_n(&notice_pool, NULL, __ATOMIC_RELEASE);
	cbpool_close(pool);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");

	test_acquire_release();
	test_reset_on_release();
	test_dead_connections();
	test_waiting();
	test_close_wakes_waiters();
	test_lifetime_and_idle();
	test_leaks();
	test_misuse();
	test_invalid_config();
	test_prometheus();
	test_environment();
	test_run();
	test_without_thread();
	test_notices();
	test_fast_path();

	PQfinish(admin);
	return done_testing();
}
