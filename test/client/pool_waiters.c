/*
 * pool_waiters.c -- threads that wait for a connection: served first
 * come, first served within their timeout, max_waiters backpressure, and
 * waiters woken by cbpool_close().
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

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

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");

	test_waiting();
	test_close_wakes_waiters();

	PQfinish(admin);
	return done_testing();
}
