/*
 * pgbouncer_overhead.c -- what connbudget-pgbouncer costs the clients of
 * the PgBouncer it sizes, paired finely enough to see 2%.  Run by
 * bench/pgbouncer.sh.
 *
 *   pgbouncer_overhead CONNINFO CONTROLLER_PID SECONDS BLOCK_MS CLIENTS ROWS
 *
 * CLIENTS threads, each with a connection of its own through the
 * PgBouncer, run pgbench -S's query (one row of pgbench_accounts by a
 * random aid in 1..ROWS, extended protocol, autocommit) as fast as they
 * can.  Meanwhile the main thread cuts the run into blocks of BLOCK_MS
 * and, before each block, either lets the controller run (SIGCONT) or
 * stops it (SIGSTOP), in the order with, without, without, with, ... (each
 * four blocks one quad, ABBA), so that a slow drift of the machine falls
 * on both alike.  A stopped controller does nothing: it neither samples
 * the PgBouncer nor reports to the server, while the PgBouncer keeps the
 * pool size it set and its connections.  The rate of a block is its
 * queries (counted as they complete) over its length; a quad's ratio is
 * its two "with" blocks' queries over its two "without" blocks', and the
 * result is the median of the quads' ratios.  A controller that falls
 * behind while stopped catches up as it runs again, in a "with" block.
 *
 * Prints one line per quad and, last, "result" lines: the median and
 * quartiles of the quads' ratios, the ratio of the totals, the queries
 * per second either way, and the controller's CPU time (from
 * /proc/PID/stat) over the time it ran, the "with" blocks'.  Exits 1 if a query failed or
 * the controller could not be signalled; the controller is left running.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bench.h"

#define CLIENTS_MAX 64
#define QUADS_MAX 100000

typedef struct Client
{
	PGconn	   *conn;
	pthread_t	thread;
	unsigned int seed;
	_Atomic long done;
} Client;

static const char *conninfo;
static long rows;
static atomic_int stop;
static atomic_int failed;
static char failure[512];
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t controller;

static void
fail(const char *what, const char *detail)
{
	pthread_mutex_lock(&failure_lock);
	if (!atomic_exchange(&failed, 1))
		snprintf(failure, sizeof(failure), "%s: %s", what, detail);
	pthread_mutex_unlock(&failure_lock);
	atomic_store(&stop, 1);
}

static void *
client_main(void *arg)
{
	Client	   *c = arg;
	char		aid[24];
	const char *params[1] = {aid};

	while (!atomic_load(&stop))
	{
		PGresult   *res;

		snprintf(aid, sizeof(aid), "%ld", 1 + (long) (rand_r(&c->seed) % rows));
		res = PQexecParams(c->conn, "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		{
			fail("a query failed", PQerrorMessage(c->conn));
			PQclear(res);
			break;
		}
		PQclear(res);
		atomic_fetch_add_explicit(&c->done, 1, memory_order_relaxed);
	}
	return NULL;
}

/* The controller's user and system CPU time so far, seconds; -1 if unknown. */
static double
controller_cpu(void)
{
	char		path[64],
				buf[1024],
			   *p;
	FILE	   *f;
	unsigned long utime,
				stime;
	size_t		n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int) controller);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* after the command's closing parenthesis: state is field 3, utime 14 */
	if ((p = strrchr(buf, ')')) == NULL ||
		sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
		return -1;
	return (double) (utime + stime) / sysconf(_SC_CLK_TCK);
}

static long
total(Client *clients, int n)
{
	long		sum = 0;

	for (int i = 0; i < n; i++)
		sum += atomic_load_explicit(&clients[i].done, memory_order_relaxed);
	return sum;
}

/* The q-quantile of the sorted v[0..n-1], interpolated. */
static double
quantile(const double *v, int n, double q)
{
	double		pos = q * (n - 1);
	int			lo = (int) pos;

	return lo + 1 < n ? v[lo] + (pos - lo) * (v[lo + 1] - v[lo]) : v[lo];
}

int
main(int argc, char **argv)
{
	static Client clients[CLIENTS_MAX];
	static double ratios[QUADS_MAX];
	double		seconds,
				cpu_start,
				cpu_end,
				run_start,
				time_with = 0,
				time_without = 0;
	long		queries_with = 0,
				queries_without = 0;
	int			block_ms,
				nclients,
				quads = 0;

	if (argc != 7)
	{
		fprintf(stderr, "usage: %s CONNINFO CONTROLLER_PID SECONDS BLOCK_MS CLIENTS ROWS\n", argv[0]);
		return 2;
	}
	conninfo = argv[1];
	controller = (pid_t) atoi(argv[2]);
	seconds = atof(argv[3]);
	block_ms = atoi(argv[4]);
	nclients = atoi(argv[5]);
	rows = atol(argv[6]);
	if (controller <= 0 || seconds <= 0 || block_ms < 10 || nclients < 1 || nclients > CLIENTS_MAX || rows < 1)
	{
		fprintf(stderr, "%s: bad arguments\n", argv[0]);
		return 2;
	}
	if (kill(controller, 0) != 0)
	{
		fprintf(stderr, "%s: controller %d: %s\n", argv[0], (int) controller, strerror(errno));
		return 1;
	}

	for (int i = 0; i < nclients; i++)
	{
		clients[i].conn = PQconnectdb(conninfo);
		clients[i].seed = 7919u * (i + 1);
		if (PQstatus(clients[i].conn) != CONNECTION_OK)
		{
			fprintf(stderr, "%s: connect: %s", argv[0], PQerrorMessage(clients[i].conn));
			return 1;
		}
	}
	for (int i = 0; i < nclients; i++)
		if (pthread_create(&clients[i].thread, NULL, client_main, &clients[i]) != 0)
		{
			fprintf(stderr, "%s: pthread_create failed\n", argv[0]);
			return 1;
		}
	sleep_ms(1000);				/* warm-up: every server connection open */

	cpu_start = controller_cpu();
	run_start = now_seconds();
	for (int quad = 0; quad < QUADS_MAX && !atomic_load(&stop) &&
		 now_seconds() - run_start + 4 * block_ms / 1000.0 <= seconds; quad++)
	{
		long		q[4];
		double		t[4];

		for (int b = 0; b < 4 && !atomic_load(&stop); b++)
		{
			int			with = b == 0 || b == 3;
			long		before;
			double		start;

			if (kill(controller, with ? SIGCONT : SIGSTOP) != 0)
			{
				fail("the controller could not be signalled", strerror(errno));
				break;
			}
			before = total(clients, nclients);
			start = now_seconds();
			sleep_ms(block_ms);
			q[b] = total(clients, nclients) - before;
			t[b] = now_seconds() - start;
		}
		if (atomic_load(&stop))
			break;
		queries_with += q[0] + q[3];
		queries_without += q[1] + q[2];
		time_with += t[0] + t[3];
		time_without += t[1] + t[2];
		ratios[quads] = ((q[0] + q[3]) / (t[0] + t[3])) / ((q[1] + q[2]) / (t[1] + t[2]));
		printf("quad %d: with %ld and %ld, without %ld and %ld queries: ratio %.3f\n",
			   quads + 1, q[0], q[3], q[1], q[2], ratios[quads]);
		quads++;
	}
	kill(controller, SIGCONT);
	cpu_end = controller_cpu();
	seconds = now_seconds() - run_start;
	atomic_store(&stop, 1);
	for (int i = 0; i < nclients; i++)
	{
		pthread_join(clients[i].thread, NULL);
		PQfinish(clients[i].conn);
	}
	if (atomic_load(&failed))
	{
		fprintf(stderr, "%s: %s", argv[0], failure);
		return 1;
	}
	if (quads == 0)
	{
		fprintf(stderr, "%s: not one quad of blocks in %.0f s\n", argv[0], seconds);
		return 1;
	}

	qsort(ratios, quads, sizeof(double), compare_double);
	printf("result quads %d\n", quads);
	printf("result median %.4f\n", quantile(ratios, quads, 0.5));
	printf("result q1 %.4f\n", quantile(ratios, quads, 0.25));
	printf("result q3 %.4f\n", quantile(ratios, quads, 0.75));
	printf("result totals %.4f\n", (queries_with / time_with) / (queries_without / time_without));
	printf("result with_qps %.0f\n", queries_with / time_with);
	printf("result without_qps %.0f\n", queries_without / time_without);
	if (cpu_start >= 0 && cpu_end >= 0)
		printf("result controller_cpu %.4f\n", (cpu_end - cpu_start) / time_with);
	return 0;
}
