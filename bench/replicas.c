/*
 * replicas.c -- one failover, measured for a cluster of per-host pools and
 * for single pools over the same hosts, side by side under the same load:
 *
 *   standby loss: standby A is stopped with -m immediate while readers
 *   run; the time from the stop until reads are whole again (the last
 *   failed read; 0 if none failed);
 *
 *   promotion: the primary is stopped with -m immediate, standby B is
 *   promoted (pg_ctl promote -w); the time from the promote command to
 *   the first successful write (pg_ctl itself returns once it has seen
 *   the server out of recovery, which it looks for every 100 ms).
 *
 * The cluster (cbpool_cluster over A, the primary and B) against a read
 * pool "host=A,B target_session_attrs=prefer-standby" and a write pool
 * "host=A,P,B target_session_attrs=read-write", each with its own
 * application name.  Prints five figures in ms: cluster loss, single-pool
 * loss, cluster promotion, single-pool promotion, and how long pg_ctl
 * promote -w took.
 *
 *   replicas PRIMARY_PORT A_PORT B_PORT PRIMARY_DIR A_DIR B_DIR
 *
 * Needs PG_BINDIR (pg_ctl) in the environment; connects as PGUSER.
 */
#define CBPOOL_IMPLEMENTATION
#include "../client/connbudget_pool.h"
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READERS 4
#define WRITERS 2

static void
quiet(void *user, cbpool_log_level level, const char *id, const char *message)
{
	(void) user;
	(void) level;
	(void) id;
	(void) message;
}

/* One client under test: the cluster, or a single pool. */
typedef struct Client
{
	cbpool_cluster *cluster;
	cbpool	   *pool;
	int			access;
	pthread_mutex_t lock;
	double		last_failure;
	double		first_success_after;	/* first success after "mark" */
	double		mark;
	long		done;
} Client;

static int	stop;

static PGconn *
client_acquire(Client *c)
{
	return c->cluster ? cbpool_cluster_acquire(c->cluster, c->access, 1000)
		: cbpool_acquire(c->pool, 1000);
}

static void
client_release(Client *c, PGconn *conn)
{
	if (c->cluster)
		cbpool_cluster_release(c->cluster, conn);
	else
		cbpool_release(c->pool, conn);
}

static void *
worker_main(void *arg)
{
	Client	   *c = arg;
	const char *sql = c->access == CBPOOL_WRITE ? "INSERT INTO bench_writes VALUES (1)"
		: "SELECT pg_sleep(0.001)";

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
	{
		PGconn	   *conn = client_acquire(c);
		int			ok = 0;

		if (conn)
		{
			PGresult   *res = PQexec(conn, sql);

			ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
				PQresultStatus(res) == PGRES_TUPLES_OK;
			PQclear(res);
			client_release(c, conn);
		}
		pthread_mutex_lock(&c->lock);
		if (ok)
		{
			c->done++;
			if (c->mark > 0 && c->first_success_after == 0)
				c->first_success_after = now_seconds();
		}
		else
			c->last_failure = now_seconds();
		pthread_mutex_unlock(&c->lock);
		if (!ok)
			sleep_ms(2);
	}
	return NULL;
}

static void
mark(Client *c, double t)
{
	pthread_mutex_lock(&c->lock);
	c->mark = t;
	c->first_success_after = 0;
	pthread_mutex_unlock(&c->lock);
}

static double
whole_after(Client *c, double t)
{
	double		v;

	pthread_mutex_lock(&c->lock);
	v = c->last_failure > t ? c->last_failure - t : 0;
	pthread_mutex_unlock(&c->lock);
	return v;
}

static double
first_after(Client *c, double t)
{
	double		v;

	pthread_mutex_lock(&c->lock);
	v = c->first_success_after > 0 ? c->first_success_after - t : -1;
	pthread_mutex_unlock(&c->lock);
	return v;
}

/* pg_ctl ACTION on the server in DIR */
static int
pg_ctl(const char *dir, const char *action)
{
	char		cmd[2048];

	snprintf(cmd, sizeof(cmd), "'%s/pg_ctl' -D '%s/data' -w -t 60 %s >/dev/null 2>&1",
			 getenv("PG_BINDIR"), dir, action);
	return system(cmd);
}

int
main(int argc, char **argv)
{
	const char *pp,
			   *ap,
			   *bp;
	char		err[256],
				ci_cluster[512],
				ci_read[512],
				ci_write[512];
	cbpool_cluster_config cc = cbpool_cluster_config_default();
	cbpool_config rc = cbpool_config_default(),
				wc;
	Client		clients[4];		/* cluster reads, cluster writes, pool reads, pool writes */
	pthread_t	threads[2 * (READERS + WRITERS)];
	int			nthreads = 0;
	double		t,
				deadline,
				loss_cluster,
				loss_pool;

	if (argc != 7 || !getenv("PG_BINDIR"))
	{
		fprintf(stderr, "usage: PG_BINDIR=... replicas PRIMARY_PORT A_PORT B_PORT "
				"PRIMARY_DIR A_DIR B_DIR\n");
		return 2;
	}
	pp = argv[1];
	ap = argv[2];
	bp = argv[3];
	snprintf(ci_cluster, sizeof(ci_cluster),
			 "host=127.0.0.1,127.0.0.1,127.0.0.1 port=%s,%s,%s dbname=postgres", ap, pp, bp);
	snprintf(ci_read, sizeof(ci_read), "host=127.0.0.1,127.0.0.1 port=%s,%s dbname=postgres "
			 "target_session_attrs=prefer-standby", ap, bp);
	snprintf(ci_write, sizeof(ci_write), "host=127.0.0.1,127.0.0.1,127.0.0.1 port=%s,%s,%s "
			 "dbname=postgres target_session_attrs=read-write", ap, pp, bp);

	cc.pool.conninfo = ci_cluster;
	cc.pool.application_name = "bench-cluster";
	cc.pool.pod = "bench-cluster";
	cc.pool.logger.func = quiet;
	cc.pool.connect_timeout_ms = 2000;
	rc.application_name = "bench-reads";
	rc.pod = "bench-reads";
	rc.logger.func = quiet;
	rc.connect_timeout_ms = 2000;
	wc = rc;
	rc.conninfo = ci_read;
	wc.conninfo = ci_write;
	wc.application_name = "bench-writes";
	wc.pod = "bench-writes";

	memset(clients, 0, sizeof(clients));
	for (int i = 0; i < 4; i++)
		pthread_mutex_init(&clients[i].lock, NULL);
	clients[0].cluster = clients[1].cluster = cbpool_cluster_open(&cc, err, sizeof(err));
	if (!clients[0].cluster)
	{
		fprintf(stderr, "cbpool_cluster_open: %s\n", err);
		return 1;
	}
	clients[2].pool = cbpool_open(&rc, err, sizeof(err));
	clients[3].pool = cbpool_open(&wc, err, sizeof(err));
	if (!clients[2].pool || !clients[3].pool)
	{
		fprintf(stderr, "cbpool_open: %s\n", err);
		return 1;
	}
	clients[0].access = clients[2].access = CBPOOL_READ;
	clients[1].access = clients[3].access = CBPOOL_WRITE;
	/* the cluster knows its hosts' roles before the load starts */
	for (deadline = now_seconds() + 15; now_seconds() < deadline; sleep_ms(10))
	{
		cbpool_host_stats a,
					p,
					b;

		cbpool_cluster_host_stats(clients[0].cluster, 0, &a);
		cbpool_cluster_host_stats(clients[0].cluster, 1, &p);
		cbpool_cluster_host_stats(clients[0].cluster, 2, &b);
		if (a.readable && p.writable && b.readable)
			break;
	}
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < (clients[i].access == CBPOOL_READ ? READERS : WRITERS); j++)
			pthread_create(&threads[nthreads++], NULL, worker_main, &clients[i]);
	sleep_ms(1500);

	/* standby A is lost */
	t = now_seconds();
	pg_ctl(argv[5], "-m immediate stop");
	sleep_ms(2000);
	loss_cluster = whole_after(&clients[0], t);
	loss_pool = whole_after(&clients[2], t);

	/* the primary dies; standby B is promoted */
	pg_ctl(argv[4], "-m immediate stop");
	sleep_ms(500);
	{
		double		promoted = now_seconds(),
					promote_took;

		mark(&clients[1], promoted);
		mark(&clients[3], promoted);
		if (pg_ctl(argv[6], "promote") != 0)
		{
			fprintf(stderr, "pg_ctl promote failed\n");
			return 1;
		}
		promote_took = now_seconds() - promoted;
		for (deadline = promoted + 30; now_seconds() < deadline; sleep_ms(5))
			if (first_after(&clients[1], promoted) >= 0 &&
				first_after(&clients[3], promoted) >= 0)
				break;
		__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
		for (int i = 0; i < nthreads; i++)
			pthread_join(threads[i], NULL);
		printf("%.1f %.1f %.1f %.1f %.1f\n", loss_cluster * 1000, loss_pool * 1000,
			   first_after(&clients[1], promoted) * 1000,
			   first_after(&clients[3], promoted) * 1000, promote_took * 1000);
	}
	cbpool_cluster_close(clients[0].cluster);
	cbpool_close(clients[2].pool);
	cbpool_close(clients[3].pool);
	return 0;
}
