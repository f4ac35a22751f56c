/*
 * pool_load.h -- load on a pool, for the tests and the benchmarks: threads
 * that acquire a connection, run a query on it and release it, again and
 * again until they are told to stop; and pods, processes whose pool is
 * under such load until SIGTERM.  Include client/connbudget_pool.h (its
 * implementation) first.
 */
#ifndef CONNBUDGET_TEST_POOL_LOAD_H
#define CONNBUDGET_TEST_POOL_LOAD_H

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#define POOL_LOAD_MAX_THREADS 64

typedef struct PoolLoad
{
	cbpool	   *pool;
	const char *sql;			/* run on each connection acquired */
	int			timeout_ms;		/* each acquire's */
	int			stop;			/* set: the threads end */
	int			threads;
	pthread_t	thread[POOL_LOAD_MAX_THREADS];
} PoolLoad;

static inline void *
pool_load_main(void *arg)
{
	PoolLoad   *load = arg;

	while (!__atomic_load_n(&load->stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = cbpool_acquire(load->pool, load->timeout_ms);

		if (!conn)
			continue;
		PQclear(PQexec(conn, load->sql));
		cbpool_release(load->pool, conn);
	}
	return NULL;
}

/* Start n threads of load (at most POOL_LOAD_MAX_THREADS). */
static inline void
pool_load_start(PoolLoad *load, int n)
{
	load->threads = n < POOL_LOAD_MAX_THREADS ? n : POOL_LOAD_MAX_THREADS;
	for (int i = 0; i < load->threads; i++)
		pthread_create(&load->thread[i], NULL, pool_load_main, load);
}

/* Wait until the threads have ended (after load->stop is set). */
static inline void
pool_load_join(PoolLoad *load)
{
	for (int i = 0; i < load->threads; i++)
		pthread_join(load->thread[i], NULL);
}

/* Tell the threads to stop, and wait until they have. */
static inline void
pool_load_stop(PoolLoad *load)
{
	__atomic_store_n(&load->stop, 1, __ATOMIC_RELAXED);
	pool_load_join(load);
}

/* ---- pods ---- */

/* the load of this process, when it is a pod */
static PoolLoad pod_load;

static inline void
pod_on_term(int sig)
{
	(void) sig;
	__atomic_store_n(&pod_load.stop, 1, __ATOMIC_RELAXED);
}

/*
 * Start a pod: a process that opens a pool with cfg and keeps threads
 * threads of load on it (sql, acquires of up to timeout_ms) until SIGTERM;
 * then it closes the pool and exits 0 (1, saying why on stderr, if the
 * pool did not open).  Its pid, or -1 if it could not be started.
 */
static inline pid_t
pod_start(const cbpool_config *cfg, int threads, const char *sql, int timeout_ms)
{
	pid_t		pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0)
	{
		char		err[256];

		signal(SIGTERM, pod_on_term);
		pod_load.pool = cbpool_open(cfg, err, sizeof(err));
		if (!pod_load.pool)
		{
			fprintf(stderr, "pod %s: %s\n", cfg->pod, err);
			_exit(1);
		}
		pod_load.sql = sql;
		pod_load.timeout_ms = timeout_ms;
		pool_load_start(&pod_load, threads);
		pool_load_join(&pod_load);
		cbpool_close(pod_load.pool);
		_exit(0);
	}
	return pid;
}

#endif							/* CONNBUDGET_TEST_POOL_LOAD_H */
