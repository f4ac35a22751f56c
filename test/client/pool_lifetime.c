/*
 * pool_lifetime.c -- how long connections live and are held:
 * max_lifetime_ms with jitter, idle_timeout_ms down to the minimum, and
 * leak reports that name where a connection was acquired.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

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
	snprintf(where, sizeof(where), "pool_lifetime.c:%d", __LINE__ - 1);
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

/* An on_close hook that holds the closing thread until "closing" is reset. */
static int	closing;

static void
hold_close(void *user, PGconn *conn, cbpool_close_reason reason, uint64_t held_us)
{
	(void) user;
	(void) conn;
	(void) held_us;
	if (reason != CBPOOL_CLOSE_LIFETIME)
		return;
	__atomic_store_n(&closing, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 1000 && __atomic_load_n(&closing, __ATOMIC_ACQUIRE); i++)
		sleep_ms(10);
}

static void
test_counts_outlive_connections(void)
{
	cbpool_config cfg = test_config("basic", "pod-counts");
	cbpool	   *pool;
	cbpool_stats_t s;
	uint64_t	before;
	int			served = 0;

	cfg.max_size = 1;
	cfg.max_lifetime_ms = 1000;
	cfg.lifetime_jitter_pct = 0;
	cfg.hooks.on_close = hold_close;
	pool = open_or_bail(&cfg);
	for (int i = 0; i < 200; i++)
		served += pool_serves(pool, 5000);
	is_int(served, 200, "200 acquires on one connection");
	before = stats_of(pool).acquired;
	ok(before >= 200, "the pool counted them (%llu)", (unsigned long long) before);

	/* the connection retires, and its close is held in the hook */
	ok(wait_until((void) 0, __atomic_load_n(&closing, __ATOMIC_ACQUIRE), 5000),
	   "the connection retires (max_lifetime_ms 1000) and its close is held");
	s = stats_of(pool);
	is_int((long) s.acquired, (long) before,
		   "while it closes, the acquires made on it are still counted");
	__atomic_store_n(&closing, 0, __ATOMIC_RELEASE);
	ok(pool_serves(pool, 10000), "then the pool serves again");
	s = stats_of(pool);
	is_int((long) s.acquired, (long) before + 1, "and counts on from there");
	cbpool_close(pool);
}

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_lifetime_and_idle, test_leaks,
										  test_counts_outlive_connections, NULL});
}
