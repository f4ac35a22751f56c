/*
 * pool_waiters.c -- threads that wait for a connection: served first
 * come, first served within their timeout, max_waiters backpressure, and
 * waiters woken by cbpool_close().
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

static void
test_waiting(void)
{
	cbpool_config cfg = test_config("basic", "pod-wait");
	cbpool	   *pool;
	PGconn	   *held;
	PGconn	   *conn;
	double		t0;
	Waiter		waiters[6];
	ServedOrder order = SERVED_ORDER_INIT;
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
			.pool = pool, .index = i, .timeout_ms = 10000, .hold_ms = 5, .order = &order
		};
		waiter_start(&waiters[i]);
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
		pthread_join(waiters[i].thread, NULL);
	is_int(order.n, 6, "every waiter was served");
	ok(served_in_order(&order, order.n),
	   "waiters were served first come, first served (%d %d %d %d %d %d)",
	   order.index[0], order.index[1], order.index[2], order.index[3], order.index[4],
	   order.index[5]);
	s = stats_of(pool);
	ok(s.acquire_wait_us_p99 >= s.acquire_wait_us_p50 && s.acquire_wait_us_p99 > 1000,
	   "acquire-wait percentiles reflect the waits (p50 %llu us, p99 %llu us)",
	   (unsigned long long) s.acquire_wait_us_p50,
	   (unsigned long long) s.acquire_wait_us_p99);

	/* a waiter is served when the connection comes back */
	order.n = 0;
	held = cbpool_acquire(pool, 5000);
	waiters[0] = (Waiter) {
		.pool = pool, .index = 0, .timeout_ms = 20000, .hold_ms = 5, .order = &order
	};
	waiter_start(&waiters[0]);
	wait_stat(pool, s.waiters == 1, 5000);
	cbpool_release(pool, held);
	pthread_join(waiters[0].thread, NULL);
	ok(waiters[0].conn != NULL && order.n == 1, "a single waiter gets the released connection");
	cbpool_close(pool);
}

static void
test_close_wakes_waiters(void)
{
	cbpool_config cfg = test_config("basic", "pod-close");
	cbpool	   *pool;
	PGconn	   *held;
	Waiter		w = {0};
	cbpool_stats_t s;

	cfg.max_size = 1;
	pool = open_or_bail(&cfg);
	held = cbpool_acquire(pool, 5000);
	w.pool = pool;
	w.timeout_ms = 20000;
	waiter_start(&w);
	wait_stat(pool, s.waiters == 1, 5000);
	log_reset();
	cbpool_close(pool);
	pthread_join(w.thread, NULL);
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
	return run_tests(&admin, (test_fn[]) {test_waiting, test_close_wakes_waiters, NULL});
}
