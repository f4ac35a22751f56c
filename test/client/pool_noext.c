/*
 * pool_noext.c -- against a server without the connbudget extension the
 * pool works with its configured max_size and says so once.
 *
 * cluster: shared_preload_libraries=
 */
#include "common.h"
#include "../lib/pool_load.h"

int
main(void)
{
	cbpool_config cfg = test_config("plain", "pod-plain");
	PoolLoad	load = {.sql = "SELECT pg_sleep(0.005)", .timeout_ms = 5000};
	cbpool	   *pool;
	cbpool_stats_t s;
	PGconn	   *admin = pg_connect_or_bail("application_name=admin");
	long		max_seen = 0;

	cfg.max_size = 4;
	cfg.refresh_ms = 100;
	log_reset();
	pool = load.pool = open_or_bail(&cfg);
	pool_load_start(&load, 6);
	for (int i = 0; i < 100; i++)
	{
		long		n = pg_long(admin, "SELECT count(*) FROM pg_stat_activity "
								"WHERE application_name = 'plain'");

		if (n > max_seen)
			max_seen = n;
		sleep_ms(20);
	}
	pool_load_stop(&load);
	s = stats_of(pool);
	is_int(s.extension, 0, "the pool found no connbudget extension");
	is_int(s.max_size, 4, "it uses its configured max_size (4)");
	is_int(max_seen, 4, "and grows to it under load, not beyond");
	ok(s.budget_errors >= 5, "it looked for the extension again and again (%llu times)",
	   (unsigned long long) s.budget_errors);
	is_int(logged("no-extension", "using a fixed max_size of 4"), 1, "and said so once");
	ok(s.acquired > 100, "it served %llu acquires", (unsigned long long) s.acquired);
	cbpool_close(pool);

	/* the idle timeout: connections beyond min_idle close after idling */
	cfg.max_size = 4;
	cfg.idle_timeout_ms = 300;
	pool = open_or_bail(&cfg);
	{
		PGconn	   *conns[4];

		for (int i = 0; i < 4; i++)
			conns[i] = cbpool_acquire(pool, 10000);
		ok(conns[0] && conns[1] && conns[2] && conns[3], "the pool grew to 4 connections");
		for (int i = 0; i < 4; i++)
			cbpool_release(pool, conns[i]);
	}
	ok(wait_stat(pool, s.total == 1, 5000),
	   "after idle_timeout_ms (300 ms) it shrinks back to min_idle (total %d)", s.total);
	s = stats_of(pool);
	ok(s.closed_idle >= 3, "closed_idle counts them (%llu)", (unsigned long long) s.closed_idle);
	cbpool_close(pool);

	cfg.max_size = 0;
	cfg.idle_timeout_ms = 600000;
	log_reset();
	pool = open_or_bail(&cfg);
	ok(wait_stat(pool, s.extension == 0, 5000) && s.max_size == 10,
	   "with max_size 0 it falls back to 10 connections");
	is_int(logged("no-extension", "using a fixed max_size of 10"), 1, "and says so");
	cbpool_close(pool);
	PQfinish(admin);
	return done_testing();
}
