/*
 * pool_basic.c -- the pool's everyday path against a real server:
 * acquire and release, state reset on release, dead connections never
 * handed out, a pool without its maintenance thread, and the lock-free
 * fast path (a thread gets back the connection it released).
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#define CBPOOL_TEST_INTERNALS	/* white box: the implementation compiled in */
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
	ok(pool_serves(pool, 5000), "and replaced by a working one");
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
	ok(pool_serves(pool, 5000), "it is discarded on release and replaced");
	cbpool_close(pool);

	/* validation with a round trip after validate_idle_ms */
	cfg.validate_idle_ms = 0;
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	sleep_ms(20);
	ok(pool_serves(pool, 5000), "validate_idle_ms = 0: every hand-out is validated");
	cbpool_close(pool);
}

static void
test_without_thread(void)
{
	cbpool_config cfg = test_config("basic", "pod-loop");
	cbpool	   *pool;
	char		err[256];
	cbpool_stats_t s;

	cfg.background = 0;
	pool = cbpool_open(&cfg, err, sizeof(err));
	ok(pool != NULL, "a pool without its background thread opens");
	for (int i = 0; i < 5; i++)
		cbpool_maintain(pool);
	ok(pool_serves(pool, 10000),
	   "without the thread, acquire drives the maintenance itself and connects");
	ok(wait_stat(pool, (cbpool_maintain(pool), s.budget_refreshes >= 1), 5000),
	   "cbpool_maintain() refreshes the share");
	cbpool_close(pool);
}

/* How many acquires went through the lock-free fast path (white box: this
   test compiles the implementation in). */
static uint64_t
fast_acquires(cbpool *pool)
{
	uint64_t	n = 0;

	pthread_mutex_lock(&pool->lock);
	for (cbpool__conn *c = pool->slots.conns; c; c = c->next)
		n += __atomic_load_n(&c->fast_acquires, __ATOMIC_RELAXED);
	for (cbpool__conn *c = pool->slots.spare; c; c = c->next)
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
	/* a refresh may hold one of them a moment (CHECKING): wait it out */
	(void) wait_stat(pool, s.in_use == 0 && s.idle == 2, 5000);
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
	ok(pool_serves(pool, 5000),
	   "after the server ended a parked connection, acquire gives a working one");

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

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_acquire_release, test_reset_on_release,
										  test_dead_connections, test_without_thread,
										  test_fast_path, NULL});
}
