/*
 * pool_stress.c -- 32 threads hammering acquire and release with random
 * hold times, queries and metrics readers, while the pool resizes itself.
 * Run under ThreadSanitizer and AddressSanitizer by test/client/run.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.refresh_interval=50
 */
#include "common.h"

#define THREADS 32
#define SECONDS 4

static cbpool *pool;
static int stop;				/* set once, read with __atomic_load_n */
static pthread_mutex_t tally_lock = PTHREAD_MUTEX_INITIALIZER;
static long acquired_by_threads;
static long failed_queries;
static long null_acquires;
static long dirty_handouts;

static void *
worker_main(void *arg)
{
	unsigned	seed = (unsigned) (uintptr_t) arg * 2654435761u;
	long		mine = 0,
				failed = 0,
				nulls = 0,
				dirty = 0;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = CBPOOL_ACQUIRE(pool, 5000);
		unsigned	r = rand_r(&seed);

		if (!conn)
		{
			nulls++;
			continue;
		}
		mine++;
		if (PQtransactionStatus(conn) != PQTRANS_IDLE)
			dirty++;
		switch (r % 4)
		{
			case 0:
				if (!query_works(conn))
					failed++;
				break;
			case 1:
				/* leave a transaction open: release must roll it back */
				PQclear(PQexec(conn, "BEGIN"));
				PQclear(PQexec(conn, "SELECT 1"));
				break;
			case 2:
				sleep_ms((int) (r % 3));
				break;
			default:
				break;
		}
		cbpool_release(pool, conn);
	}
	pthread_mutex_lock(&tally_lock);
	acquired_by_threads += mine;
	failed_queries += failed;
	null_acquires += nulls;
	dirty_handouts += dirty;
	pthread_mutex_unlock(&tally_lock);
	return NULL;
}

static void *
reader_main(void *arg)
{
	char		buf[16384];

	(void) arg;
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		cbpool_stats_t s;

		cbpool_stats(pool, &s);
		cbpool_prometheus(pool, buf, sizeof(buf));
		sleep_ms(3);
	}
	return NULL;
}

int
main(void)
{
	PGconn	   *admin = pg_connect_or_bail("application_name=admin");
	cbpool_config cfg;
	pthread_t	threads[THREADS + 1];
	cbpool_stats_t s;
	long		max_seen = 0;
	double		end;

	pg_exec(admin, "CREATE EXTENSION connbudget");
	cfg = test_config("stress", "pod-stress");
	cfg.max_size = 12;
	cfg.max_lifetime_ms = 700;		/* connections also retire under load */
	cfg.validate_idle_ms = 5;
	pool = open_or_bail(&cfg);

	for (long i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, worker_main, (void *) (i + 1));
	pthread_create(&threads[THREADS], NULL, reader_main, NULL);
	end = now_seconds() + SECONDS;
	while (now_seconds() < end)
	{
		cbpool_stats_t now;

		/* the pool's own count: the server's lags while closed backends exit */
		cbpool_stats(pool, &now);
		if (now.total > max_seen)
			max_seen = now.total;
		sleep_ms(5);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i <= THREADS; i++)
		pthread_join(threads[i], NULL);

	cbpool_stats(pool, &s);
	ok(acquired_by_threads > 1000, "%d threads completed %ld acquire/release cycles",
	   THREADS, acquired_by_threads);
	is_int(s.acquired, acquired_by_threads, "the pool counted exactly the acquires the threads made");
	is_int(null_acquires, 0, "no acquire failed (5 s timeout)");
	is_int(failed_queries, 0, "every query on a handed-out connection worked");
	is_int(dirty_handouts, 0, "no connection was handed out inside a transaction");
	ok(s.in_use == 0 && s.waiters == 0, "afterwards nothing is in use and nobody waits");
	ok(s.rollbacks_on_release > 0, "transactions left open were rolled back (%llu)",
	   (unsigned long long) s.rollbacks_on_release);
	ok(s.closed_lifetime > 0, "connections retired by lifetime under load (%llu)",
	   (unsigned long long) s.closed_lifetime);
	ok(max_seen <= 12, "the pool never held more than max_size (12) connections (max %ld)",
	   max_seen);
	ok(s.acquire_wait_us_p99 >= s.acquire_wait_us_p50, "wait percentiles are ordered");
	diag("acquired %llu, p50 %llu us, p99 %llu us, connects %llu, share %d",
		 (unsigned long long) s.acquired, (unsigned long long) s.acquire_wait_us_p50,
		 (unsigned long long) s.acquire_wait_us_p99, (unsigned long long) s.connects, s.share);
	cbpool_close(pool);
	PQfinish(admin);
	return done_testing();
}
