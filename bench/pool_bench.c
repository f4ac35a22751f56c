/*
 * pool_bench.c -- throughput of connbudget_pool.h against its peers.
 *
 *   pool_bench cycle    THREADS SECONDS           acquire+release, no queries
 *   pool_bench baseline THREADS SECONDS           the same on a minimal pool
 *   pool_bench pool      THREADS CONNS SECONDS    SELECT 1 through a pool of
 *                                                 CONNS connections
 *   pool_bench dedicated THREADS SECONDS          SELECT 1, one persistent
 *                                                 connection per thread
 *   pool_bench newconn   THREADS SECONDS          a new connection per query
 *   pool_bench cluster   THREADS SECONDS          SELECT 1 through a cluster of
 *                                                 per-host pools (CBPOOL_READ)
 *                                                 over the hosts of
 *                                                 CB_BENCH_PORTS
 *
 * Connection settings come from the libpq environment (PGHOST, PGPORT,
 * ...); for PgBouncer, run "dedicated" with PGPORT pointing at it.  Prints
 * one number: operations per second.  bench/run runs the comparisons and
 * computes the ratios.
 *
 * Environment:
 *   CB_BENCH_QUERY=pk        instead of SELECT 1, a primary-key lookup on
 *                            a table set up by "pgbench -i" (a random aid
 *                            of CB_BENCH_ACCOUNTS, default 100000: scale 1)
 *   CB_BENCH_DETAIL=FILE     append one line to FILE: the fewest and the
 *                            most operations of one thread, and for the
 *                            pool the acquire-wait p50 and p99 (us), its
 *                            hand-offs, barged acquires and hand-offs
 *                            that moved their thread (follow_cpu)
 *   CB_BARGE_LIMIT=K         the pool's barge_limit (default: the pool's)
 *   CB_FOLLOW_CPU=0|1        the pool's follow_cpu (default: the pool's)
 *   CB_BENCH_BURST=N:US      pool: after every N queries a thread sleeps
 *                            for US microseconds without a connection
 *   CB_BENCH_VERBOSE=1       the pool's stats on stderr
 *   CB_BENCH_PORTS=P1,P2,... servers on 127.0.0.1: "dedicated" connects
 *                            thread i to the (i mod n)-th, "cluster" opens
 *                            its pools over all of them
 */
#define CBPOOL_IMPLEMENTATION
#include "../client/connbudget_pool.h"
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int	stop;
static cbpool *pool;
static cbpool_cluster *cluster;

/* one cache line each: counters of different threads must not share one */
typedef struct Worker
{
	_Alignas(64) pthread_t thread;
	long		ops;
	int			failed;
	unsigned	seed;
} Worker;

static int	pk_lookup;			/* CB_BENCH_QUERY=pk */
static long accounts = 100000;

/* one query: SELECT 1, or a primary-key lookup of a random account */
static int
query(PGconn *conn, unsigned *seed)
{
	PGresult   *res;
	int			ok;

	if (pk_lookup)
	{
		char		aid[24];
		const char *values[1] = {aid};

		snprintf(aid, sizeof(aid), "%ld", 1 + (long) (rand_r(seed) % (unsigned) accounts));
		res = PQexecParams(conn, "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
						   1, NULL, values, NULL, NULL, 0);
		ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	}
	else
	{
		res = PQexec(conn, "SELECT 1");
		ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	}
	PQclear(res);
	return ok;
}

/* ---- a minimal pool: a mutex, a condition variable, a stack ---- */

static pthread_mutex_t mini_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mini_cond = PTHREAD_COND_INITIALIZER;
static void *mini_stack[64];
static int	mini_top;

static void *
mini_acquire(void)
{
	void	   *item;

	pthread_mutex_lock(&mini_lock);
	while (mini_top == 0)
		pthread_cond_wait(&mini_cond, &mini_lock);
	item = mini_stack[--mini_top];
	pthread_mutex_unlock(&mini_lock);
	return item;
}

static void
mini_release(void *item)
{
	pthread_mutex_lock(&mini_lock);
	mini_stack[mini_top++] = item;
	pthread_cond_signal(&mini_cond);
	pthread_mutex_unlock(&mini_lock);
}

/* ---- workers ---- */

/* acquire and release in a loop, with a SELECT 1 in between unless cycling */
static int	with_query;

/* CB_BENCH_HOOKS=1: every lifecycle hook set, doing nothing but counting */
static uint64_t hook_events;

static void
noop_connect(void *u, PGconn *c, uint64_t us, const char *e)
{
	(void) u, (void) c, (void) us, (void) e;
	__atomic_add_fetch(&hook_events, 1, __ATOMIC_RELAXED);
}

static void
noop_close(void *u, PGconn *c, cbpool_close_reason r, uint64_t us)
{
	(void) u, (void) c, (void) r, (void) us;
	__atomic_add_fetch(&hook_events, 1, __ATOMIC_RELAXED);
}

static void
noop_use(void *u, PGconn *c, uint64_t us)
{
	(void) u, (void) c, (void) us;
	__atomic_add_fetch(&hook_events, 1, __ATOMIC_RELAXED);
}

/* CB_BENCH_BURST=N:US -- after every N queries a thread sleeps for US
   microseconds without a connection (a request that runs N queries, then
   waits for something else) */
static long burst;
static long think_us;

static void
think(long us)
{
	struct timespec ts = {us / 1000000, us % 1000000 * 1000};

	nanosleep(&ts, NULL);
}

static Worker *workers_base;	/* for a worker's index */

static void *
cluster_main(void *arg)
{
	Worker	   *w = arg;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = cbpool_cluster_acquire(cluster, CBPOOL_READ, 10000);

		if (!conn)
		{
			w->failed = 1;
			break;
		}
		if (!query(conn, &w->seed))
			w->failed = 1;
		cbpool_cluster_release(cluster, conn);
		w->ops++;
	}
	return NULL;
}

static void *
pool_main(void *arg)
{
	Worker	   *w = arg;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = cbpool_acquire(pool, 10000);

		if (!conn)
		{
			w->failed = 1;
			break;
		}
		if (with_query && !query(conn, &w->seed))
			w->failed = 1;
		cbpool_release(pool, conn);
		w->ops++;
		if (burst > 0 && w->ops % burst == 0)
			think(think_us);
	}
	return NULL;
}

static void *
baseline_main(void *arg)
{
	Worker	   *w = arg;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		mini_release(mini_acquire());
		w->ops++;
	}
	return NULL;
}

/* The i-th port of CB_BENCH_PORTS into out, or "" (the environment's). */
static void
nth_port(int i, char *out, size_t len)
{
	const char *p = getenv("CB_BENCH_PORTS");
	int			n = 1;

	out[0] = '\0';
	if (!p || !*p)
		return;
	for (const char *c = p; *c; c++)
		n += *c == ',';
	for (i %= n; i > 0; p++)
		if (*p == ',')
			i--;
	snprintf(out, len, "%.*s", (int) strcspn(p, ","), p);
}

static void *
dedicated_main(void *arg)
{
	Worker	   *w = arg;
	char		port[16];
	const char *keys[] = {"host", "port", NULL};
	const char *values[] = {"127.0.0.1", port, NULL};
	PGconn	   *conn;

	nth_port((int) (w - workers_base), port, sizeof(port));
	conn = port[0] ? PQconnectdbParams(keys, values, 1) : PQconnectdb("");

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connect: %s", PQerrorMessage(conn));
		w->failed = 1;
		PQfinish(conn);
		return NULL;
	}
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		if (!query(conn, &w->seed))
			w->failed = 1;
		w->ops++;
	}
	PQfinish(conn);
	return NULL;
}

static void *
newconn_main(void *arg)
{
	Worker	   *w = arg;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = PQconnectdb("");

		if (PQstatus(conn) != CONNECTION_OK || !query(conn, &w->seed))
			w->failed = 1;
		PQfinish(conn);
		w->ops++;
	}
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: pool_bench cycle|baseline THREADS SECONDS\n"
			"       pool_bench pool THREADS CONNS SECONDS\n"
			"       pool_bench dedicated|newconn|cluster THREADS SECONDS\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *mode;
	int			threads,
				conns = 0;
	double		seconds,
				t0,
				elapsed;
	void	   *(*fn) (void *);
	Worker	   *workers;
	long		total = 0,
				fewest = 0,
				most = 0;
	int			failed = 0;
	cbpool_stats_t before,
				after;

	if (argc < 4)
		usage();
	mode = argv[1];
	threads = atoi(argv[2]);
	if (strcmp(mode, "pool") == 0)
	{
		if (argc < 5)
			usage();
		conns = atoi(argv[3]);
		seconds = atof(argv[4]);
	}
	else
		seconds = atof(argv[3]);
	if (threads < 1 || threads > 256 || seconds <= 0)
		usage();
	pk_lookup = getenv("CB_BENCH_QUERY") && strcmp(getenv("CB_BENCH_QUERY"), "pk") == 0;
	if (getenv("CB_BENCH_BURST") &&
		sscanf(getenv("CB_BENCH_BURST"), "%ld:%ld", &burst, &think_us) != 2)
		usage();
	if (getenv("CB_BENCH_ACCOUNTS"))
		accounts = atol(getenv("CB_BENCH_ACCOUNTS"));
	if (accounts < 1)
		accounts = 1;

	if (strcmp(mode, "cycle") == 0 || strcmp(mode, "pool") == 0)
	{
		cbpool_config cfg = cbpool_config_default();
		char		err[256];
		PGconn	   *held[256];
		int			size = strcmp(mode, "cycle") == 0 ? threads : conns;
		cbpool_stats_t s;

		cfg.application_name = "bench";
		cfg.pod = "bench-pod";
		cfg.max_size = size;
		cfg.min_idle = size;
		cfg.validate_idle_ms = -1;	/* no round trips in the hot path */
		if (getenv("CB_BARGE_LIMIT"))
			cfg.barge_limit = atoi(getenv("CB_BARGE_LIMIT"));
		if (getenv("CB_FOLLOW_CPU"))
			cfg.follow_cpu = atoi(getenv("CB_FOLLOW_CPU"));
		if (getenv("CB_BENCH_HOOKS") && atoi(getenv("CB_BENCH_HOOKS")))
		{
			cfg.hooks.on_connect = noop_connect;
			cfg.hooks.on_close = noop_close;
			cfg.hooks.on_acquire = noop_use;
			cfg.hooks.on_release = noop_use;
		}
		pool = cbpool_open(&cfg, err, sizeof(err));
		if (!pool)
		{
			fprintf(stderr, "cbpool_open: %s\n", err);
			return 1;
		}
		/* warm up: hold every connection once so the pool has them all */
		for (int i = 0; i < size; i++)
			if (!(held[i] = cbpool_acquire(pool, 30000)))
			{
				fprintf(stderr, "warm-up: %s\n", cbpool_strerror(cbpool_last_error()));
				return 1;
			}
		for (int i = 0; i < size; i++)
			cbpool_release(pool, held[i]);
		cbpool_stats(pool, &s);
		if (s.total < size)
			fprintf(stderr, "warning: pool holds %d of %d connections\n", s.total, size);
		with_query = strcmp(mode, "pool") == 0;
		fn = pool_main;
	}
	else if (strcmp(mode, "baseline") == 0)
	{
		for (int i = 0; i < threads && i < 64; i++)
			mini_stack[mini_top++] = &mini_stack[i];
		fn = baseline_main;
	}
	else if (strcmp(mode, "cluster") == 0)
	{
		cbpool_cluster_config cc = cbpool_cluster_config_default();
		char		conninfo[512],
					err[256];
		const char *ports = getenv("CB_BENCH_PORTS");
		int			hosts = 1;
		double		deadline = now_seconds() + 15;
		int			ready = 0;

		if (!ports || !*ports)
			usage();
		for (const char *c = ports; *c; c++)
			hosts += *c == ',';
		/* host=127.0.0.1,127.0.0.1,... as many as there are ports */
		{
			char		list[400] = "";

			for (int i = 0; i < hosts; i++)
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s127.0.0.1",
						 i ? "," : "");
			snprintf(conninfo, sizeof(conninfo), "host=%s port=%s", list, ports);
		}
		cc.pool.conninfo = conninfo;
		cc.pool.application_name = "bench";
		cc.pool.pod = "bench-pod";
		cc.pool.max_size = threads;
		cc.pool.min_idle = (threads + hosts - 1) / hosts;	/* warm before counting */
		cc.pool.validate_idle_ms = -1;
		cluster = cbpool_cluster_open(&cc, err, sizeof(err));
		if (!cluster)
		{
			fprintf(stderr, "cbpool_cluster_open: %s\n", err);
			return 1;
		}
		while (!ready && now_seconds() < deadline)
		{
			ready = 1;
			for (int i = 0; i < hosts; i++)
			{
				cbpool_host_stats h;

				cbpool_cluster_host_stats(cluster, i, &h);
				ready = ready && (h.readable || h.writable) && h.pool.total >= cc.pool.min_idle;
			}
			if (!ready)
				think(10000);
		}
		fn = cluster_main;
	}
	else if (strcmp(mode, "dedicated") == 0)
		fn = dedicated_main;
	else if (strcmp(mode, "newconn") == 0)
		fn = newconn_main;
	else
		usage();

	workers = aligned_alloc(_Alignof(Worker), (size_t) threads * sizeof(Worker));
	memset(workers, 0, (size_t) threads * sizeof(Worker));
	workers_base = workers;
	for (int i = 0; i < threads; i++)
	{
		workers[i].seed = 2654435761u * (unsigned) (i + 1);
		pthread_create(&workers[i].thread, NULL, fn, &workers[i]);
	}
	/* let every thread start (and connect) before counting */
	{
		struct timespec ts = {0, 300000000};

		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < threads; i++)
		__atomic_store_n(&workers[i].ops, 0, __ATOMIC_RELAXED);
	if (pool)
		cbpool_stats(pool, &before);
	t0 = now_seconds();
	{
		struct timespec ts = {(time_t) seconds, (long) ((seconds - (time_t) seconds) * 1e9)};

		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < threads; i++)
	{
		long		ops = __atomic_load_n(&workers[i].ops, __ATOMIC_RELAXED);

		total += ops;
		if (i == 0 || ops < fewest)
			fewest = ops;
		if (ops > most)
			most = ops;
	}
	elapsed = now_seconds() - t0;
	if (pool)
		cbpool_stats(pool, &after);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < threads; i++)
	{
		pthread_join(workers[i].thread, NULL);
		failed |= workers[i].failed;
	}
	if (pool)
	{
		if (getenv("CB_BENCH_VERBOSE"))
		{
			cbpool_stats_t s;

			cbpool_stats(pool, &s);
			fprintf(stderr, "pool: total %d max %d share %d acquired %llu hand-offs %llu "
					"barged %llu expired %llu moved %llu p50 %llu us p99 %llu us "
					"refreshes %llu connects %llu closed broken %llu over share %llu\n",
					s.total, s.max_size, s.share, (unsigned long long) s.acquired,
					(unsigned long long) s.handoffs, (unsigned long long) s.barged_acquires,
					(unsigned long long) s.barges_expired,
					(unsigned long long) s.handoffs_moved,
					(unsigned long long) s.acquire_wait_us_p50,
					(unsigned long long) s.acquire_wait_us_p99,
					(unsigned long long) s.budget_refreshes, (unsigned long long) s.connects,
					(unsigned long long) s.closed_broken, (unsigned long long) s.closed_over_share);
		}
		cbpool_close(pool);
	}
	if (cluster)
	{
		if (getenv("CB_BENCH_VERBOSE"))
			for (int i = 0; i < cbpool_cluster_hosts(cluster); i++)
			{
				cbpool_host_stats h;

				cbpool_cluster_host_stats(cluster, i, &h);
				fprintf(stderr, "host %s:%s: role %d total %d share %d acquired %llu\n",
						h.host, h.port, h.role, h.pool.total, h.pool.share,
						(unsigned long long) h.pool.acquired);
			}
		cbpool_cluster_close(cluster);
	}
	free(workers);
	if (failed)
	{
		fprintf(stderr, "some operations failed\n");
		return 1;
	}
	if (getenv("CB_BENCH_DETAIL"))
	{
		FILE	   *f = fopen(getenv("CB_BENCH_DETAIL"), "a");

		if (!f)
		{
			perror(getenv("CB_BENCH_DETAIL"));
			return 1;
		}
		/* the wait percentiles are the pool's since it opened: the warm-up's
		   few acquires do not move them */
		if (pool)
			fprintf(f, "%ld %ld %llu %llu %llu %llu %llu\n", fewest, most,
					(unsigned long long) after.acquire_wait_us_p50,
					(unsigned long long) after.acquire_wait_us_p99,
					(unsigned long long) (after.handoffs - before.handoffs),
					(unsigned long long) (after.barged_acquires - before.barged_acquires),
					(unsigned long long) (after.handoffs_moved - before.handoffs_moved));
		else
			fprintf(f, "%ld %ld - - - - -\n", fewest, most);
		fclose(f);
	}
	printf("%.0f\n", total / elapsed);
	return 0;
}
