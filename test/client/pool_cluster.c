/*
 * pool_cluster.c -- a cluster of per-host pools over a primary and two
 * streaming standbys on loopback (pg_basebackup -R): writes go to the
 * primary; reads spread over the two standbys, each within that host's
 * share (sampled on each server); a standby whose replay stops falls
 * behind the lag threshold and gets no reads until it catches up; reads
 * survive one standby being stopped; and when the primary is stopped with
 * -m immediate and the other standby promoted, the cluster writes again
 * within 5 s, never on a read-only host, and no server holds more governed
 * connections than its budget.
 *
 * Budgets: primary and standby A 40 - 10 = 30, standby B 50 - 10 = 40.
 * The application "reads" is limited to 4 connections per server (a row
 * replicated from the primary), so each host's share of the one pod is 4.
 *
 * cluster: max_connections=40 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.refresh_interval=200 connbudget.pod_ttl=1000
 */
#include "common.h"

#define READERS 12
#define WRITERS 4
#define LIMIT 4
#define MAX_LAG_MS 1000

enum
{
	A, P, B					/* host order in conninfo: standby A first */
};

static const char *names[] = {"standby A", "the primary", "standby B"};
static char dirs[3][1024];
static char ports[3][16];
static cbpool_cluster *cl;

static PGconn *
admin_on(int host)
{
	return pg_connect_port(ports[host]);
}

static int
host_of_port(const char *port)
{
	for (int i = 0; i < 3; i++)
		if (strcmp(port, ports[i]) == 0)
			return i;
	return -1;
}

static cbpool_host_stats
host_stats(int host)
{
	cbpool_host_stats h;

	cbpool_cluster_host_stats(cl, host, &h);
	return h;
}

/* Wait until a condition on host "host"'s stats ("h") holds, up to timeout_ms. */
#define wait_host(host, cond, timeout_ms) wait_until(h = host_stats(host), cond, timeout_ms)

/* ---- load: readers and writers through the cluster ---- */

static int	stop_load;
static long served_by[3];		/* reads served, per host */
static double last_read_failure;
static long read_failures;
static double first_write_after;	/* first write after promoted_at */
static double promoted_at;
static long writes_done;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Run sql on a connection of the cluster for this access, waiting up to
   2 s for one; its result, or NULL if there was none. */
static PGresult *
through_cluster(int access, const char *sql)
{
	PGconn	   *conn = cbpool_cluster_acquire(cl, access, 2000);
	PGresult   *res;

	if (!conn)
		return NULL;
	res = PQexec(conn, sql);
	cbpool_cluster_release(cl, conn);
	return res;
}

/*
 * Run sql through the cluster for this access again and again until
 * stop_load, handing each result (NULL: there was no connection) to
 * tally(), which says how long to pause before the next, in ms.
 */
static void
load_loop(int access, const char *sql, int (*tally) (const PGresult *res))
{
	while (!__atomic_load_n(&stop_load, __ATOMIC_ACQUIRE))
	{
		PGresult   *res = through_cluster(access, sql);
		int			pause = tally(res);

		PQclear(res);
		if (pause > 0)
			sleep_ms(pause);
	}
}

/* A read: which host served it, or a failure. */
static int
tally_read(const PGresult *res)
{
	int			host = res && PQresultStatus(res) == PGRES_TUPLES_OK ?
		host_of_port(PQgetvalue(res, 0, 0)) : -1;

	pthread_mutex_lock(&lock);
	if (host >= 0)
		served_by[host]++;
	else
	{
		read_failures++;
		last_read_failure = now_seconds();
	}
	pthread_mutex_unlock(&lock);
	return host < 0 ? 5 : 0;
}

/* A write: one more row, and the first after the promotion. */
static int
tally_write(const PGresult *res)
{
	int			done = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!res)
		return 5;
	pthread_mutex_lock(&lock);
	if (done)
	{
		writes_done++;
		if (promoted_at > 0 && first_write_after == 0)
			first_write_after = now_seconds();
	}
	pthread_mutex_unlock(&lock);
	return done ? 20 : 5;
}

static void *
reader_main(void *arg)
{
	(void) arg;
	load_loop(CBPOOL_READ, "SELECT inet_server_port(), pg_sleep(0.002)", tally_read);
	return NULL;
}

static void *
writer_main(void *arg)
{
	(void) arg;
	load_loop(CBPOOL_WRITE, "INSERT INTO t VALUES (1)", tally_write);
	return NULL;
}

/* The reads each host served so far, into reads[3]. */
static void
reads_so_far(long reads[3])
{
	pthread_mutex_lock(&lock);
	memcpy(reads, served_by, sizeof(served_by));
	pthread_mutex_unlock(&lock);
}

/* The reads each host serves in the next ms milliseconds, into reads[3]. */
static void
reads_during(int ms, long reads[3])
{
	long		before[3];

	reads_so_far(before);
	sleep_ms(ms);
	reads_so_far(reads);
	for (int i = 0; i < 3; i++)
		reads[i] -= before[i];
}

/* ---- samplers: on each server, the pod's connections against its share,
   and governed connections against the budget ---- */

typedef struct Sampler
{
	pthread_t	thread;
	int			host;
	int			stop;
	long		samples;
	long		over_share;
	long		over_budget;
	long		most;			/* the pod's connections, at most */
} Sampler;

#define SAMPLED(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

static void *
sampler_main(void *arg)
{
	Sampler    *s = arg;
	PGconn	   *conn = NULL;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
	{
		PGresult   *res;

		if (!conn || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			if (!(conn = admin_on(s->host)))
			{
				sleep_ms(50);
				continue;
			}
		}
		res = PQexec(conn,
					 "SELECT coalesce((SELECT sum(connections) FROM connbudget.pods "
					 "                  WHERE pod = 'pod-cluster'), 0), "
					 "       coalesce((SELECT max(share) FROM connbudget.pods "
					 "                  WHERE pod = 'pod-cluster'), 0), governed, budget "
					 "FROM connbudget.budget");
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		{
			long		held = atol(PQgetvalue(res, 0, 0));
			long		share = atol(PQgetvalue(res, 0, 1));

			/* read by the main thread while this one runs */
			__atomic_add_fetch(&s->samples, 1, __ATOMIC_RELAXED);
			if (held > share && held > LIMIT)
				__atomic_add_fetch(&s->over_share, 1, __ATOMIC_RELAXED);
			if (atol(PQgetvalue(res, 0, 2)) > atol(PQgetvalue(res, 0, 3)))
				__atomic_add_fetch(&s->over_budget, 1, __ATOMIC_RELAXED);
			if (held > s->most)
				__atomic_store_n(&s->most, held, __ATOMIC_RELAXED);
		}
		PQclear(res);
		sleep_ms(20);
	}
	if (conn)
		PQfinish(conn);
	return NULL;
}

static void
start_sampler(Sampler *s, int host)
{
	memset(s, 0, sizeof(*s));
	s->host = host;
	pthread_create(&s->thread, NULL, sampler_main, s);
}

static void
stop_sampler(Sampler *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->thread, NULL);
}

static void
stop_server(int host)
{
	cluster_ctl_in(dirs[host], "-m immediate stop");
}

/* ---- units of work through cbpool_cluster_run() ---- */

/* Insert a row (arg: the value); a write. */
static int
insert_row(cbpool_tx *tx, void *arg)
{
	char		sql[64];
	PGresult   *res;

	snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d)", *(int *) arg);
	res = cbpool_tx_exec(tx, sql);
	return cbpool_tx_check(tx, res) ? (PQclear(res), 0) : (PQclear(res), 1);
}

/* Is the session on a standby?  (arg: int out, 1 if so) */
static int
on_standby(cbpool_tx *tx, void *arg)
{
	PGresult   *res = cbpool_tx_exec(tx, "SELECT pg_is_in_recovery()");
	int			ok = cbpool_tx_check(tx, res);

	if (ok)
		*(int *) arg = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ok ? 0 : 1;
}

typedef struct Failover_run
{
	pthread_t	thread;
	int			rc;
	int			attempts;
	double		done_at;
} Failover_run;

/* One write that starts while no host can write, idempotent, waiting up
   to 20 s for a primary. */
static void *
failover_run_main(void *arg)
{
	Failover_run *r = arg;
	cbpool_run_opts opts = {0};
	int			value = 7;

	opts.idempotent = 1;
	opts.acquire_timeout_ms = 20000;
	r->rc = cbpool_cluster_run(cl, CBPOOL_WRITE, insert_row, &value, &opts);
	r->attempts = opts.attempts;
	r->done_at = now_seconds();
	return NULL;
}

/* ---- invalid configurations ---- */

static void
test_invalid(void)
{
	cbpool_cluster_config cc = cbpool_cluster_config_default();
	char		err[256];

	cc.pool.conninfo = "host=a,b,c port=1,2";
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "3 hosts but 2 ports"),
	   "a cluster with 3 hosts and 2 ports is refused: %s", err);
	cc.pool.conninfo = "host=a,b hostaddr=127.0.0.1";
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "2 hosts but 1 host addresses"),
	   "so is one with more hosts than addresses: %s", err);
	cc.pool.conninfo = "host='a";
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "invalid conninfo"),
	   "and an invalid conninfo: %s", err);
	cc = cbpool_cluster_config_default();
	cc.max_lag_ms = -2;
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "max_lag_ms"),
	   "and max_lag_ms below -1: %s", err);
	cc = cbpool_cluster_config_default();
	cc.check_ms = 5;
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "check_ms"),
	   "and check_ms below 10: %s", err);
	cc = cbpool_cluster_config_default();
	cc.pool.background = 0;
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "background"),
	   "and pools without maintenance threads: %s", err);
	cc = cbpool_cluster_config_default();
	cc.pool.pod = "a-pod-id-longer-than-the-63-bytes-that-postgresql-keeps-of-a-name";
	ok(!cbpool_cluster_open(&cc, err, sizeof(err)) && strstr(err, "pod"),
	   "and the pools' own invalid settings: %s", err);
	ok(cbpool_cluster_acquire(NULL, CBPOOL_READ, 0) == NULL &&
	   cbpool_last_error() == CBPOOL_EINVAL, "acquiring from no cluster is CBPOOL_EINVAL");
}

int
main(void)
{
	PGconn	   *primary = pg_connect_or_bail("application_name=admin");
	static char conninfo[512];
	cbpool_cluster_config cc = cbpool_cluster_config_default();
	cbpool_host_stats h;
	pthread_t	readers[READERS],
				writers[WRITERS];
	Sampler		samplers[3];
	long		before[3],
				after[3],
				reads[3],
				written;
	int			okay;
	PGconn	   *conn;

	test_invalid();

	pg_exec(primary, "CREATE EXTENSION connbudget");
	pg_exec(primary, "CREATE ROLE app LOGIN");
	pg_exec(primary, "CREATE TABLE t (x int)");
	pg_exec(primary, "GRANT INSERT ON t TO app");
	pg_exec(primary, "INSERT INTO connbudget.application_limits (application_name, max_connections) "
			"VALUES ('reads', 4)");	/* LIMIT */

	snprintf(dirs[P], sizeof(dirs[P]), "%s", cluster_dir());
	snprintf(ports[P], sizeof(ports[P]), "%s", getenv("PGPORT"));
	for (int i = A; i <= B; i += 2)
	{
		snprintf(dirs[i], sizeof(dirs[i]), "%s/standby-%c", cluster_dir(), i == A ? 'a' : 'b');
		if (cluster_sh("cluster_standby '%s' '%s' max_connections=%d >/dev/null", dirs[P], dirs[i],
					   i == A ? 40 : 50) != 0)
			bail_out("%s did not start", names[i]);
		cluster_port(dirs[i], ports[i], sizeof(ports[i]));
	}
	is_int(pg_wait_for(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
					   2, 30000), 2, "two standbys stream from the primary");
	for (int i = A; i <= B; i += 2)
	{
		PGconn	   *s = admin_on(i);

		if (!s)
			bail_out("cannot connect to %s", names[i]);
		is_int(pg_wait_for(s, "SELECT max_connections FROM connbudget.applications "
						   "WHERE application_name = 'reads'", LIMIT, 30000), LIMIT,
			   "%s has the replicated limit of reads", names[i]);
		PQfinish(s);
	}

	/* the cluster: standby A, the primary, standby B */
	snprintf(conninfo, sizeof(conninfo),
			 "host=127.0.0.1,127.0.0.1,127.0.0.1 port=%s,%s,%s user=app dbname=postgres "
			 "target_session_attrs=read-write", ports[A], ports[P], ports[B]);
	cc.pool = test_config("reads", "pod-cluster");
	cc.pool.conninfo = conninfo;
	cc.pool.connect_timeout_ms = 2000;
	cc.max_lag_ms = MAX_LAG_MS;
	cc.check_ms = 200;
	{
		char		err[256];

		cl = cbpool_cluster_open(&cc, err, sizeof(err));
		if (!cl)
			bail_out("cbpool_cluster_open: %s", err);
	}
	is_int(cbpool_cluster_hosts(cl), 3, "the cluster has a pool for each of the 3 hosts");
	for (int i = 0; i < 3; i++)
	{
		int			role = i == P ? CBPOOL_HOST_PRIMARY : CBPOOL_HOST_STANDBY;

		okay = wait_host(i, h.role == role && (i == P ? h.writable : h.readable), 10000);
		ok(okay, "%s is known as %s (role %d, lag %d ms, port %s)", names[i],
		   i == P ? "the primary, for writes" : "a standby, for reads", h.role, h.lag_ms,
		   h.port);
	}
	ok(strcmp(host_stats(B).port, ports[B]) == 0 && strcmp(host_stats(B).host, "127.0.0.1") == 0,
	   "each host's stats name it as conninfo does");

	{
		static char text[65536];
		char		want[256];
		int			need = cbpool_cluster_prometheus(cl, NULL, 0);
		int			got = cbpool_cluster_prometheus(cl, text, sizeof(text));
		int			each = 1;
		const char *p = text;
		int			types = 0;

		/* gauges and counters may change length between the two calls */
		ok(need > 0 && got > need - 64 && got < need + 64 && (int) strlen(text) == got,
		   "the cluster's Prometheus text is sized as snprintf is (%d bytes, %d asked)", got,
		   need);
		while ((p = strstr(p, "# TYPE cbpool_connections gauge\n")))
			types++, p++;
		is_int(types, 1, "each metric family is declared once");
		for (int i = 0; i < 3; i++)
		{
			snprintf(want, sizeof(want), "cbpool_acquired_total{application=\"reads\","
					 "pod=\"pod-cluster\",host=\"127.0.0.1:%s\"} ", ports[i]);
			each = each && strstr(text, want) != NULL;
			snprintf(want, sizeof(want), "cbpool_host_role{application=\"reads\","
					 "pod=\"pod-cluster\",host=\"127.0.0.1:%s\"} %d\n", ports[i],
					 i == P ? CBPOOL_HOST_PRIMARY : CBPOOL_HOST_STANDBY);
			each = each && strstr(text, want) != NULL;
		}
		ok(each, "with every host's pool metrics and role, labelled by host");
		ok(strstr(text, "# TYPE cbpool_host_lag_seconds gauge\n") &&
		   strstr(text, "# TYPE cbpool_host_down gauge\n"), "and its lag and down state");
		need = cbpool_cluster_prometheus(cl, text, 10);
		ok(need > got - 64 && strcmp(text, "# HELP cb") == 0,
		   "a short buffer gets a terminated prefix and the length needed (%d)", need);
	}

	conn = cbpool_cluster_acquire(cl, CBPOOL_WRITE, 5000);
	ok(conn && host_of_port(pg_value(conn, "SELECT inet_server_port()")) == P,
	   "CBPOOL_WRITE hands out a connection to the primary");
	ok(conn && strcmp(pg_exec_error(conn, "INSERT INTO t VALUES (0)", NULL, 0), "") == 0,
	   "which writes");
	cbpool_cluster_release(cl, conn);
	conn = cbpool_cluster_acquire(cl, CBPOOL_READ, 5000);
	ok(conn && host_of_port(pg_value(conn, "SELECT inet_server_port()")) != P &&
	   strcmp(pg_value(conn, "SELECT pg_is_in_recovery()"), "t") == 0,
	   "CBPOOL_READ hands out a connection to a standby");
	cbpool_cluster_release(cl, conn);
	ok(cbpool_cluster_acquire(cl, 3, 100) == NULL && cbpool_last_error() == CBPOOL_EINVAL,
	   "an access that is neither CBPOOL_READ nor CBPOOL_WRITE is CBPOOL_EINVAL");
	{
		int			value = 5,
					standby = -1;

		is_int(cbpool_cluster_run(cl, CBPOOL_WRITE, insert_row, &value, NULL), 0,
			   "cbpool_cluster_run(CBPOOL_WRITE) commits a write on the primary");
		is_int(cbpool_cluster_run(cl, CBPOOL_READ, on_standby, &standby, NULL), 0,
			   "cbpool_cluster_run(CBPOOL_READ) runs a read");
		is_int(standby, 1, "on a standby");
		ok(cbpool_cluster_run(cl, 0, on_standby, &standby, NULL) == CBPOOL_EINVAL &&
		   cbpool_cluster_run(NULL, CBPOOL_READ, on_standby, &standby, NULL) == CBPOOL_EINVAL &&
		   cbpool_cluster_run(cl, CBPOOL_READ, NULL, NULL, NULL) == CBPOOL_EINVAL,
		   "and refuses no cluster, no function or an invalid access (CBPOOL_EINVAL)");
	}
	{
		cbpool_stats_t s0 = stats_of(cbpool_cluster_pool(cl, A));

		log_reset();
		cbpool_cluster_release(cl, (PGconn *) &s0);
		ok(logged("misuse", "does not belong"), "releasing a stranger into the cluster is "
		   "reported and ignored");
	}

	/* ---- reads spread over both standbys, each within its share ---- */
	for (int i = 0; i < 3; i++)
		start_sampler(&samplers[i], i);
	for (int i = 0; i < READERS; i++)
		pthread_create(&readers[i], NULL, reader_main, NULL);
	for (int i = 0; i < WRITERS; i++)
		pthread_create(&writers[i], NULL, writer_main, NULL);
	sleep_ms(3000);
	reads_so_far(before);
	written = locked_read(&lock, writes_done);
	diag("reads in 3 s: %ld on standby A, %ld on the primary, %ld on standby B; %ld writes",
		 before[A], before[P], before[B], written);
	ok(before[A] > 50 && before[B] > 50,
	   "%d threads read from both standbys (%ld and %ld reads)", READERS, before[A], before[B]);
	is_int(before[P], 0, "and none from the primary while the standbys are usable");
	ok(written > 20, "while %d threads write on the primary (%ld rows)", WRITERS, written);
	for (int i = A; i <= B; i += 2)
	{
		h = host_stats(i);
		ok(SAMPLED(samplers[i].samples) > 10 && SAMPLED(samplers[i].over_share) == 0 &&
		   SAMPLED(samplers[i].most) <= LIMIT,
		   "%s: the pod never held more than its share of %d there (at most %ld in %ld "
		   "samples); its pool: share %d, total %d", names[i], LIMIT, SAMPLED(samplers[i].most),
		   SAMPLED(samplers[i].samples), h.pool.share, h.pool.total);
	}

	/* ---- a standby that stops replaying falls behind, and gets no reads ---- */
	{
		PGconn	   *b = admin_on(B);
		double		t0;

		pg_exec(b, "SELECT pg_wal_replay_pause()");
		t0 = now_seconds();
		okay = wait_host(B, h.lag_ms > MAX_LAG_MS && !h.readable, 15000);
		ok(okay, "standby B, paused, is seen lagging beyond %d ms (%d ms after %.1f s) and "
		   "gets no reads", MAX_LAG_MS, h.lag_ms, now_seconds() - t0);
		sleep_ms(1000);	/* reads begun on B before finish */
		reads_during(1000, reads);
		ok(reads[B] == 0 && reads[A] > 50,
		   "reads go to standby A alone meanwhile (%ld there, %ld on B)", reads[A], reads[B]);
		pg_exec(b, "SELECT pg_wal_replay_resume()");
		okay = wait_host(B, h.readable, 10000);
		ok(okay, "resumed, it catches up and is readable again (lag %d ms)", h.lag_ms);
		PQfinish(b);
		reads_during(1000, reads);
		ok(reads[B] > 0, "and serves reads again (%ld in 1 s)", reads[B]);
	}

	/* ---- standby A is lost: reads go on, on standby B ---- */
	{
		double		stopped,
					whole;

		stopped = now_seconds();
		reads_so_far(before);
		stop_server(A);
		sleep_ms(3000);
		reads_so_far(after);
		whole = locked_read(&lock, last_read_failure);
		whole = whole > stopped ? whole - stopped : 0;
		diag("standby A stopped: %ld reads failed in all, the last %.3f s after the stop",
			 locked_read(&lock, read_failures), whole);
		ok(after[B] - before[B] > 100, "reads go on on standby B (%ld in 3 s)",
		   after[B] - before[B]);
		ok(whole < 2.0, "every read succeeds again within 2 s of the loss (%.3f s)", whole);
		h = host_stats(A);
		ok(h.down && !h.readable, "standby A is down and gets no reads (down %d, role %d)",
		   h.down, h.role);
		ok(SAMPLED(samplers[B].over_share) == 0 && SAMPLED(samplers[B].most) <= LIMIT,
		   "standby B still holds the pod within its share (at most %ld)",
		   SAMPLED(samplers[B].most));
	}

	/* ---- failover: the primary dies, standby B is promoted ---- */
	{
		PGconn	   *b;
		double		first;
		Failover_run frun = {0};

		stop_server(P);
		sleep_ms(200);
		/* a unit of work that starts while no host can write */
		pthread_create(&frun.thread, NULL, failover_run_main, &frun);
		sleep_ms(300);
		if (cluster_sh("cluster_promote '%s'", dirs[B]) != 0)
			bail_out("pg_ctl promote failed");
		pthread_mutex_lock(&lock);
		promoted_at = now_seconds();
		pthread_mutex_unlock(&lock);
		wait_until(first = locked_read(&lock, first_write_after), first > 0, 30000);
		diag("first write %.2f s after the promotion", first - promoted_at);
		pthread_join(frun.thread, NULL);
		is_int(frun.rc, 0, "a cbpool_cluster_run() write begun while no host could write "
			   "commits on the new primary (%d attempts, %.2f s after the promotion)",
			   frun.attempts, frun.done_at - promoted_at);
		ok(first > 0 && first - promoted_at < 5.0,
		   "the cluster writes again within 5 s of the promotion (%.2f s)", first - promoted_at);
		h = host_stats(B);
		ok(h.role == CBPOOL_HOST_PRIMARY && h.writable,
		   "standby B is the primary now, for writes");
		okay = wait_host(B, h.pool.budget == 40, 10000);
		ok(okay, "its pool follows its budget of 40 (%d)", h.pool.budget);
		reads_during(1000, reads);
		ok(reads[B] > 0, "with no standby left, reads go to the primary (%ld in 1 s)", reads[B]);
		__atomic_store_n(&stop_load, 1, __ATOMIC_RELEASE);
		for (int i = 0; i < READERS; i++)
			pthread_join(readers[i], NULL);
		for (int i = 0; i < WRITERS; i++)
			pthread_join(writers[i], NULL);
		for (int i = 0; i < 3; i++)
			stop_sampler(&samplers[i]);
		for (int i = 0; i < 3; i++)
			ok(SAMPLED(samplers[i].over_budget) == 0,
			   "governed connections never exceeded the budget of %s (%ld samples)",
			   names[i], SAMPLED(samplers[i].samples));
		{
			char		log[1100];

			snprintf(log, sizeof(log), "%s/server.log", dirs[B]);
			ok(file_lines_containing(log, 0, "read-only transaction") == 0,
			   "no write was attempted on standby B while it was read-only");
			snprintf(log, sizeof(log), "%s/server.log", dirs[A]);
			ok(file_lines_containing(log, 0, "read-only transaction") == 0, "nor on standby A");
		}
		b = admin_on(B);
		ok(b && pg_long(b, "SELECT count(*) FROM t") > 20, "the rows written are on the new "
		   "primary");
		ok(b && pg_long(b, "SELECT count(*) FROM t WHERE x = 7") == 1,
		   "the failover unit of work's row among them, once");

		/* ---- the primary fenced read-only: no writes go there ---- */
		if (!b)
			bail_out("cannot connect to the new primary");
		pg_exec(b, "ALTER SYSTEM SET default_transaction_read_only = on");
		pg_exec(b, "SELECT pg_reload_conf()");
		okay = wait_host(B, h.role == CBPOOL_HOST_STANDBY && !h.writable, 5000);
		ok(okay, "a primary fenced with default_transaction_read_only counts as read-only "
		   "within a check (role %d)", h.role);
		ok(cbpool_cluster_acquire(cl, CBPOOL_WRITE, 300) == NULL &&
		   cbpool_last_error() == CBPOOL_EUNAVAILABLE,
		   "writes find no host then: CBPOOL_EUNAVAILABLE after the timeout");
		conn = cbpool_cluster_acquire(cl, CBPOOL_READ, 2000);
		ok(conn != NULL, "reads still go there");
		if (conn)
			cbpool_cluster_release(cl, conn);
		pg_exec(b, "ALTER SYSTEM RESET default_transaction_read_only");
		pg_exec(b, "SELECT pg_reload_conf()");
		okay = wait_host(B, h.writable, 5000);
		ok(okay, "unfenced, it takes writes again");
		PQfinish(b);
	}

	/* ---- reads_on_primary = 0: reads wait for a standby ---- */
	{
		cbpool_cluster *only_b;
		char		err[256];
		cbpool_host_stats hb;

		snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%s user=app dbname=postgres",
				 ports[B]);
		cc.pool.pod = "pod-no-primary-reads";
		cc.reads_on_primary = 0;
		only_b = cbpool_cluster_open(&cc, err, sizeof(err));
		if (!only_b)
			bail_out("cbpool_cluster_open: %s", err);
		for (double deadline = now_seconds() + 10; now_seconds() < deadline; sleep_ms(10))
		{
			cbpool_cluster_host_stats(only_b, 0, &hb);
			if (hb.writable)
				break;
		}
		conn = cbpool_cluster_acquire(only_b, CBPOOL_WRITE, 2000);
		ok(conn != NULL, "a cluster of the primary alone takes writes");
		if (conn)
			cbpool_cluster_release(only_b, conn);
		ok(cbpool_cluster_acquire(only_b, CBPOOL_READ, 300) == NULL &&
		   cbpool_last_error() == CBPOOL_EUNAVAILABLE,
		   "with reads_on_primary = 0 its reads find no host: CBPOOL_EUNAVAILABLE");
		cbpool_cluster_close(only_b);
	}

	cbpool_cluster_close(cl);
	PQfinish(primary);
	stop_server(B);
	return done_testing();
}
