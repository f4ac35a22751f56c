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

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_lifetime_and_idle, test_leaks, NULL});
}
