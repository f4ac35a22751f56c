/*
 * pool_failover.c -- a write pool over a primary and its standby
 * (host=primary,standby target_session_attrs=read-write) through a
 * failover under load: the primary is stopped with -m immediate and the
 * standby promoted; the pool serves again within 5 s of the promotion,
 * never writes on the read-only host, follows the new primary's budget,
 * and no server ever holds more governed connections than its budget.
 *
 * The standby has a larger max_connections than the primary, so its budget
 * (and so the pool's share after the failover) differs: 30 on the primary,
 * 50 on the standby.
 *
 * cluster: max_connections=40 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.refresh_interval=200 connbudget.pod_ttl=1000
 */
#include "common.h"

#define THREADS 8

static char standby_dir[1024];
static char standby_port[16];

/* ---- load: inserts through the write pool ---- */

typedef struct Writer
{
	pthread_t	thread;
	cbpool	   *pool;
	long		written;
	long		failed;
	long		unavailable;
} Writer;

static int	stop;
static double first_write_after;	/* first write after the promotion */
static double promoted_at;
static pthread_mutex_t times_lock = PTHREAD_MUTEX_INITIALIZER;

static void *
writer_main(void *arg)
{
	Writer	   *w = arg;

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
	{
		PGconn	   *conn = cbpool_acquire(w->pool, 2000);
		PGresult   *res;

		if (!conn)
		{
			if (cbpool_last_error() == CBPOOL_EUNAVAILABLE)
				__atomic_add_fetch(&w->unavailable, 1, __ATOMIC_RELAXED);
			sleep_ms(5);
			continue;
		}
		res = PQexec(conn, "INSERT INTO writes VALUES (1)");
		if (PQresultStatus(res) == PGRES_COMMAND_OK)
		{
			__atomic_add_fetch(&w->written, 1, __ATOMIC_RELAXED);
			pthread_mutex_lock(&times_lock);
			if (promoted_at > 0 && first_write_after == 0)
				first_write_after = now_seconds();
			pthread_mutex_unlock(&times_lock);
		}
		else
			__atomic_add_fetch(&w->failed, 1, __ATOMIC_RELAXED);
		PQclear(res);
		cbpool_release(w->pool, conn);
		sleep_ms(2);
	}
	return NULL;
}

/* ---- governed connections against each server's budget, sampled ---- */

typedef struct Sampler
{
	pthread_t	thread;
	const char *port;
	long		samples;
	long		over;			/* samples with governed > budget */
	long		max_governed;
} Sampler;

static void *
sampler_main(void *arg)
{
	Sampler    *s = arg;
	PGconn	   *conn = NULL;

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
	{
		PGresult   *res;

		if (!conn || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			conn = pg_connect_port(s->port);
			if (!conn)
			{
				sleep_ms(50);
				continue;
			}
		}
		res = PQexec(conn, "SELECT governed, budget FROM connbudget.budget");
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		{
			long		governed = atol(PQgetvalue(res, 0, 0));
			long		budget = atol(PQgetvalue(res, 0, 1));

			__atomic_add_fetch(&s->samples, 1, __ATOMIC_RELAXED);
			if (governed > budget)
				s->over++;
			if (governed > s->max_governed)
				s->max_governed = governed;
		}
		PQclear(res);
		sleep_ms(20);
	}
	if (conn)
		PQfinish(conn);
	return NULL;
}

int
main(void)
{
	PGconn	   *primary = pg_connect_or_bail("application_name=admin");
	PGconn	   *standby;
	static char conninfo[512];
	cbpool_config cfg = test_config("writes", "pod-writer");
	cbpool	   *pool;
	Writer		writers[THREADS];
	Sampler		samplers[2];
	cbpool_stats_t s;
	long		written_before = 0,
				written = 0,
				failed = 0;
	char		standby_log[1100];
	int			okay;

	pg_exec(primary, "CREATE EXTENSION connbudget");
	pg_exec(primary, "CREATE ROLE writer LOGIN");
	pg_exec(primary, "CREATE TABLE writes (x int)");
	pg_exec(primary, "GRANT INSERT ON writes TO writer");

	snprintf(standby_dir, sizeof(standby_dir), "%s/standby", cluster_dir());
	if (cluster_sh("cluster_standby '%s' '%s' max_connections=60 >/dev/null", cluster_dir(),
				   standby_dir) != 0)
		bail_out("the standby did not start");
	cluster_port(standby_dir, standby_port, sizeof(standby_port));
	snprintf(standby_log, sizeof(standby_log), "%s/server.log", standby_dir);
	is_int(pg_wait_for(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
					   1, 30000), 1, "a standby streams from the primary");
	standby = pg_connect_port(standby_port);
	if (!standby)
		bail_out("cannot connect to the standby");
	is_int(pg_wait_for(standby, "SELECT count(*) FROM pg_class WHERE relname = 'writes'", 1, 30000),
		   1, "the standby has replayed the table");
	is_int(pg_long(standby, "SELECT budget FROM connbudget.budget"), 50,
		   "the standby's budget is its own: 60 - 10");
	PQfinish(standby);

	/* the standby is listed first: libpq must skip it for a writable session */
	snprintf(conninfo, sizeof(conninfo),
			 "host=127.0.0.1,127.0.0.1 port=%s,%s user=writer dbname=postgres "
			 "target_session_attrs=read-write", standby_port, getenv("PGPORT"));
	cfg.conninfo = conninfo;
	cfg.max_size = 12;
	cfg.connect_timeout_ms = 2000;
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.budget == 30, 10000);
	ok(okay,
	   "the write pool is on the primary: its budget is the primary's 30 (%d)", s.budget);

	samplers[0] = (Sampler) {.port = getenv("PGPORT")};
	samplers[1] = (Sampler) {.port = standby_port};
	for (int i = 0; i < 2; i++)
		pthread_create(&samplers[i].thread, NULL, sampler_main, &samplers[i]);
	memset(writers, 0, sizeof(writers));
	for (int i = 0; i < THREADS; i++)
	{
		writers[i].pool = pool;
		pthread_create(&writers[i].thread, NULL, writer_main, &writers[i]);
	}
	sleep_ms(1500);
	/* both servers sampled under the load before the failover (a loaded
	   machine may take longer to connect the samplers) */
	wait_until(, __atomic_load_n(&samplers[0].samples, __ATOMIC_RELAXED) > 20 &&
			   __atomic_load_n(&samplers[1].samples, __ATOMIC_RELAXED) > 20, 20000);
	for (int i = 0; i < THREADS; i++)
		written_before += __atomic_load_n(&writers[i].written, __ATOMIC_RELAXED);
	ok(written_before > 100, "8 threads write through the pool (%ld rows)", written_before);

	/* failover: the primary dies, the standby is promoted */
	if (cluster_ctl("-m immediate stop") != 0)
		bail_out("pg_ctl stop -m immediate failed");
	sleep_ms(500);
	if (cluster_sh("cluster_promote '%s'", standby_dir) != 0)
		bail_out("pg_ctl promote failed");
	pthread_mutex_lock(&times_lock);
	promoted_at = now_seconds();
	pthread_mutex_unlock(&times_lock);

	/* served again on the new primary */
	{
		double		first;

		wait_until(first = locked_read(&times_lock, first_write_after), first > 0, 30000);
		ok(first > 0, "the pool writes again after the promotion");
		diag("first write %.2f s after the promotion", first - promoted_at);
		ok(first > 0 && first - promoted_at < 5.0,
		   "within 5 s of it (%.2f s)", first - promoted_at);
	}
	okay = wait_stat(pool, s.budget == 50, 10000);
	ok(okay,
	   "the pool's budget follows the new primary's: 50 (%d)", s.budget);
	sleep_ms(1000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < THREADS; i++)
	{
		pthread_join(writers[i].thread, NULL);
		written += writers[i].written;
		failed += writers[i].failed;
	}
	for (int i = 0; i < 2; i++)
		pthread_join(samplers[i].thread, NULL);
	ok(written > written_before, "and keeps writing (%ld rows in all)", written);
	diag("inserts that failed as the primary died: %ld", failed);

	ok(file_lines_containing(standby_log, 0, "read-only transaction") == 0,
	   "no write was attempted on the standby while it was read-only (its log has no "
	   "\"read-only transaction\" error)");
	ok(samplers[0].samples > 10 && samplers[1].samples > 10 && samplers[0].over == 0 &&
	   samplers[1].over == 0,
	   "governed connections never exceeded either server's budget (at most %ld on the old "
	   "primary in %ld samples, %ld on the standby in %ld)",
	   samplers[0].max_governed, samplers[0].samples, samplers[1].max_governed,
	   samplers[1].samples);
	standby = pg_connect_port(standby_port);
	ok(standby && pg_long(standby, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-writer'") == 1,
	   "the new primary knows the pod");
	if (standby)
		PQfinish(standby);
	cbpool_close(pool);
	PQfinish(primary);
	cluster_ctl_in(standby_dir, "-m immediate stop");
	return done_testing();
}
