/*
 * pool_fleet.c -- pools as good citizens of a crowd.
 *
 * 100 pools started at the same moment against a budget of 200 never
 * exceed it and are each within their share within 3 refresh intervals;
 * a steady load reports the same demand at every refresh; 50 pools do not
 * refresh in lockstep; 30 pools on a budget of 20 hold 20 connections, the
 * others none, and take over as soon as a share frees up; two pools that
 * give one pod id stay within the pod's share together.
 *
 * Budget: 230 - 0 - 30 = 200.  The pools connect as a plain role, so the
 * server's limits apply to them (superusers are never refused).
 *
 * cluster: max_connections=230 superuser_reserved_connections=0 connbudget.reserved_connections=30 connbudget.refresh_interval=1000 connbudget.pod_ttl=3000
 */
#include "common.h"

#include <fcntl.h>
#include <sys/file.h>

#define REFRESH_MS 1000

static PGconn *admin;
static char fleet_conninfo[512];

static cbpool_config
fleet_config(const char *app, const char *pod)
{
	cbpool_config cfg = test_config(app, pod);

	snprintf(fleet_conninfo, sizeof(fleet_conninfo),
			 "host=%s port=%s user=fleet dbname=postgres",
			 getenv("PGHOST") ? getenv("PGHOST") : "127.0.0.1",
			 getenv("PGPORT") ? getenv("PGPORT") : "5432");
	cfg.conninfo = fleet_conninfo;
	cfg.acquire_timeout_ms = 200;
	/* hundreds of threads under a sanitizer on two cores connect slowly */
	cfg.connect_timeout_ms = 30000;
	/* a connect of the crowd that fails now and then on a machine this
	   loaded is retried, as before the breaker: what this test looks at is
	   the shares (pool_resilience tests the breaker) */
	cfg.breaker_failures = 0;
	return cfg;
}

/*
 * ---- governed connections, sampled on the server ----
 *
 * A backend gives its slot back in its last exit callback, microseconds
 * before it leaves pg_stat_activity (docs/enforcement.md), so a sample can
 * list one that a new connection has already replaced.  A count above the
 * highest so far is taken only if a second sample 20 ms later confirms it:
 * an exiting backend is gone by then, a connection over the budget is not.
 */

typedef struct Sampler
{
	pthread_t	thread;
	int			stop;			/* atomic */
	long		max_governed;
	long		samples;
} Sampler;

static void *
sampler_main(void *arg)
{
	Sampler    *s = arg;
	PGconn	   *conn = pg_connect_or_bail("application_name=sampler");

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
	{
		const char *count = "SELECT count(*) FROM pg_stat_activity "
			"WHERE usename = 'fleet' AND backend_type = 'client backend'";
		long		governed = pg_long(conn, count);

		if (governed > s->max_governed)
		{
			long		again;

			sleep_ms(20);
			again = pg_long(conn, count);
			if (again < governed)
				governed = again;
			if (governed > s->max_governed)
				s->max_governed = governed;
		}
		s->samples++;
		sleep_ms(10);
	}
	PQfinish(conn);
	return NULL;
}

static void
sampler_start(Sampler *s)
{
	memset(s, 0, sizeof(*s));
	pthread_create(&s->thread, NULL, sampler_main, s);
}

static void
sampler_stop(Sampler *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->thread, NULL);
}

/* ---- workers that keep a pool busy ---- */

typedef struct Worker
{
	pthread_t	thread;
	cbpool	   *pool;
	int		   *stop;			/* shared by a test's workers, read atomically */
	int			leave;			/* this worker alone, atomic */
	int			hold_ms;
	long		served;
	long		failed;
} Worker;

static void *
worker_main(void *arg)
{
	Worker	   *w = arg;

	while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE) &&
		   !__atomic_load_n(&w->leave, __ATOMIC_ACQUIRE))
	{
		PGconn	   *conn = cbpool_acquire(w->pool, -1);

		if (!conn)
		{
			if (cbpool_last_error() != CBPOOL_ETIMEOUT)
			{
				if (w->failed++ == 0)
					diag("an acquire failed: %s", cbpool_strerror(cbpool_last_error()));
			}
			continue;
		}
		if (w->hold_ms > 0)
		{
			char		sql[64];
			PGresult   *res;

			snprintf(sql, sizeof(sql), "SELECT pg_sleep(%g)", w->hold_ms / 1000.0);
			res = PQexec(conn, sql);
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				w->failed++;
			PQclear(res);
		}
		cbpool_release(w->pool, conn);
		w->served++;
		sleep_ms(1);
	}
	return NULL;
}

/*
 * The shares the server has published for the pods "<prefix>-<i>", read
 * in one query (-1 for a pod that is not live).
 */
static void
server_shares(const char *prefix, int n, long *shares)
{
	char		sql[256];
	PGresult   *res;

	for (int i = 0; i < n; i++)
		shares[i] = -1;
	snprintf(sql, sizeof(sql), "SELECT substr(pod, %d)::int, share FROM connbudget.pods "
			 "WHERE pod LIKE '%s-%%'", (int) strlen(prefix) + 2, prefix);
	res = PQexec(admin, sql);
	for (int r = 0; r < PQntuples(res); r++)
	{
		int			i = atoi(PQgetvalue(res, r, 0));

		if (i >= 0 && i < n)
			shares[i] = atol(PQgetvalue(res, r, 1));
	}
	PQclear(res);
}

/* ---- 100 pools at once on a budget of 200 ---- */

#define CROWD 100

/*
 * The crowd is the heaviest load of the suite: its AddressSanitizer and
 * ThreadSanitizer builds, which prove runs in parallel, take turns at it
 * (a lock file in the test run's directory), so that each measures its
 * pools' pace on the two cores, not the other crowd's.
 */
static int
crowd_lock(void)
{
	char		path[1024];
	int			fd;

	snprintf(path, sizeof(path), "%s/pool_fleet.crowd.lock",
			 getenv("CB_WORK") ? getenv("CB_WORK") : "/tmp");
	fd = open(path, O_RDWR | O_CREAT, 0666);
	if (fd >= 0 && flock(fd, LOCK_EX) != 0)
	{
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The crowd's connect attempts, so that a slow start says why. */
static ConnectTally crowd_connects = CONNECT_TALLY_INIT;

static void
test_hundred_pools(void)
{
	int			lock_fd = crowd_lock();
	static cbpool *pools[CROWD];
	static Worker workers[CROWD][2];
	static char pods[CROWD][32];
	int			stop = 0;
	Sampler		sampler;
	double		t0,
				started_at = -1,
				settled_at = -1;
	int			within = 0;
	char		err[256];

	/* the pods of the tests before have left */
	pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods", 0, 10000);
	sampler_start(&sampler);
	t0 = now_seconds();
	for (int i = 0; i < CROWD; i++)
	{
		cbpool_config cfg = fleet_config("crowd", NULL);

		snprintf(pods[i], sizeof(pods[i]), "crowd-%03d", i);
		cfg.pod = pods[i];
		cfg.hooks.on_connect = tally_connect;
		cfg.hooks.user_data = &crowd_connects;
		pools[i] = cbpool_open(&cfg, err, sizeof(err));
		if (!pools[i])
			bail_out("cbpool_open: %s", err);
		for (int k = 0; k < 2; k++)
		{
			workers[i][k].pool = pools[i];
			workers[i][k].stop = &stop;
			/* every connection busy, without a query every few ms on each
			   of 160 backends: that left two cores too little for the
			   last pools' connects (timed out after 30 s and 60 s) */
			workers[i][k].hold_ms = 50;
			pthread_create(&workers[i][k].thread, NULL, worker_main, &workers[i][k]);
		}
	}

	/*
	 * Every pool holds no more than the share the server publishes for it.
	 * The pools already connected keep their connections busy, so the
	 * last connects may take long under sanitizers next to another
	 * test: the bound below is only when to give up, what is asserted is
	 * the time from the last pool's start to all being within their shares.
	 */
	while (now_seconds() - t0 < 120)
	{
		int			started = 0;
		long		shares[CROWD];

		server_shares("crowd", CROWD, shares);
		within = 0;
		for (int i = 0; i < CROWD; i++)
		{
			cbpool_stats_t s = stats_of(pools[i]);
			long		published = shares[i];

			started += s.connects > 0;
			if (published > 0 && s.total <= published && s.total > 0)
				within++;
		}
		if (started == CROWD && started_at < 0)
			started_at = now_seconds() - t0;
		if (within == CROWD)
		{
			settled_at = now_seconds() - t0;
			break;
		}
		sleep_ms(50);
	}
	if (within < CROWD)
		for (int i = 0; i < CROWD; i++)
		{
			cbpool_stats_t s = stats_of(pools[i]);
			long		published = -1;
			long		shares[CROWD];

			server_shares("crowd", CROWD, shares);
			published = shares[i];

			if (!(published > 0 && s.total <= published && s.total > 0))
				diag("%s: total %d share %d published %ld demand %d waiters %d connects %llu "
					 "failures %llu refused %llu refreshes %llu",
					 pods[i], s.total, s.share, published, s.demand, s.waiters,
					 (unsigned long long) s.connects, (unsigned long long) s.connect_failures,
					 (unsigned long long) s.connects_refused,
					 (unsigned long long) s.budget_refreshes);
		}
	ok(within == CROWD, "100 pools opened at the same moment: each holds a connection and no more than "
	   "the share the server publishes for it (%d of 100)", within);
	pthread_mutex_lock(&crowd_connects.lock);
	ok(settled_at >= 0 && settled_at - started_at <= 3 * REFRESH_MS / 1000.0,
	   "within 3 refresh intervals of their start (all had connected %.2f s after opening, "
	   "and were within their shares %.2f s after that; refresh interval %d ms; %d connects, "
	   "the longest %.1f s; %d failed%s%s)",
	   started_at, settled_at - started_at, REFRESH_MS, crowd_connects.ok,
	   crowd_connects.longest, crowd_connects.failed, crowd_connects.failed ? ", the first after " : "",
	   crowd_connects.first_error);
	pthread_mutex_unlock(&crowd_connects.lock);

	/* run a while longer under load */
	sleep_ms(2 * REFRESH_MS);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < CROWD; i++)
		for (int k = 0; k < 2; k++)
			pthread_join(workers[i][k].thread, NULL);
	sampler_stop(&sampler);
	ok(sampler.max_governed <= 200,
	   "their connections together never exceeded the budget of 200 (at most %ld in %ld samples)",
	   sampler.max_governed, sampler.samples);
	{
		long		served = 0,
					failed = 0;

		for (int i = 0; i < CROWD; i++)
			for (int k = 0; k < 2; k++)
			{
				served += workers[i][k].served;
				failed += workers[i][k].failed;
			}
		ok(served > 0 && failed == 0, "and served their threads (%ld queries, %ld failed)", served, failed);
		if (failed)
		{
			pthread_mutex_lock(&log_lock);
			for (int i = 0, shown = 0; i < log_count && shown < 5; i++)
				if (strcmp(log_entries[i].id, "connect-failed") == 0 ||
					strcmp(log_entries[i].id, "breaker-open") == 0)
				{
					diag("pool log [%s] %s", log_entries[i].id, log_entries[i].text);
					shown++;
				}
			pthread_mutex_unlock(&log_lock);
		}
	}
	for (int i = 0; i < CROWD; i++)
		cbpool_close(pools[i]);
	if (lock_fd >= 0)
		close(lock_fd);
}

/* ---- a steady load reports a steady demand ---- */

static void
test_steady_demand(void)
{
	cbpool_config cfg = fleet_config("steady", "steady-1");
	cbpool	   *pool = open_or_bail(&cfg);
	Worker		workers[4];
	int			stop = 0;
	int			demands[16];
	int			n = 0;
	uint64_t	last_refresh;
	cbpool_stats_t s;
	int			same = 1;

	for (int k = 0; k < 4; k++)
	{
		memset(&workers[k], 0, sizeof(workers[k]));
		workers[k].pool = pool;
		workers[k].stop = &stop;
		workers[k].hold_ms = 10;
		pthread_create(&workers[k].thread, NULL, worker_main, &workers[k]);
	}
	/* warm up for 2 refreshes, then watch 10 */
	s = stats_of(pool);
	last_refresh = s.budget_refreshes;
	wait_stat(pool, s.budget_refreshes >= last_refresh + 2, 10 * REFRESH_MS);
	last_refresh = s.budget_refreshes;
	while (n < 10 && wait_stat(pool, s.budget_refreshes > last_refresh, 3 * REFRESH_MS))
	{
		last_refresh = s.budget_refreshes;
		demands[n++] = s.demand;
	}
	for (int i = 1; i < n; i++)
		same &= demands[i] == demands[0];
	is_int(n, 10, "10 refreshes under a steady load of 4 busy threads");
	ok(same && n > 0, "report the same demand every time (%d, %d, %d, ... %d)",
	   n > 0 ? demands[0] : -1, n > 1 ? demands[1] : -1, n > 2 ? demands[2] : -1,
	   n > 0 ? demands[n - 1] : -1);
	ok(n > 0 && demands[0] >= 4 && demands[0] <= 6,
	   "which is the 4 connections the threads use plus headroom (%d)", n > 0 ? demands[0] : -1);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int k = 0; k < 4; k++)
		pthread_join(workers[k].thread, NULL);
	cbpool_close(pool);
}

/* ---- 50 pools do not refresh in lockstep ---- */

static void
test_refresh_spread(void)
{
	static cbpool *pools[50];
	char		err[256];
	long		in_window_max = 0;
	PGresult   *res;

	for (int i = 0; i < 50; i++)
	{
		char		pod[32];
		cbpool_config cfg = fleet_config("spread", NULL);

		snprintf(pod, sizeof(pod), "spread-%02d", i);
		cfg.pod = pod;
		pools[i] = cbpool_open(&cfg, err, sizeof(err));
		if (!pools[i])
			bail_out("cbpool_open: %s", err);
	}
	sleep_ms(4 * REFRESH_MS);
	/* where in the interval each pod last called pool_share() */
	res = PQexec(admin, "SELECT (extract(epoch FROM last_seen) * 1000)::bigint % 1000 "
				 "FROM connbudget.pods WHERE application_name = 'spread'");
	is_int(PQntuples(res), 50, "50 pools opened at the same moment are live");
	for (int w = 0; w < 1000; w += 25)
	{
		long		in_window = 0;

		/* pods whose phase falls in [w, w + 100) ms, around the circle */
		for (int r = 0; r < PQntuples(res); r++)
		{
			long		phase = atol(PQgetvalue(res, r, 0));

			if ((phase - w + 1000) % 1000 < 100)
				in_window++;
		}
		if (in_window > in_window_max)
			in_window_max = in_window;
	}
	PQclear(res);
	ok(in_window_max <= 25,
	   "their refreshes spread over the interval: at most %ld of 50 fall in any tenth of it", in_window_max);
	for (int i = 0; i < 50; i++)
		cbpool_close(pools[i]);
}

/* ---- 30 pools on a budget of 20 ---- */

static void
test_more_pods_than_budget(void)
{
	static cbpool *pools[30];
	static Worker workers[30];
	int			stop = 0;
	Sampler		sampler;
	int			holding = 0,
				empty = 0,
				i;
	char		err[256];
	double		t0;
	cbpool_stats_t s;

	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name, max_connections) "
			"VALUES ('tight', 20)");
	sampler_start(&sampler);
	for (i = 0; i < 30; i++)
	{
		char		pod[32];
		cbpool_config cfg = fleet_config("tight", NULL);

		snprintf(pod, sizeof(pod), "tight-%02d", i);
		cfg.pod = pod;
		pools[i] = cbpool_open(&cfg, err, sizeof(err));
		if (!pools[i])
			bail_out("cbpool_open: %s", err);
		memset(&workers[i], 0, sizeof(workers[i]));
		workers[i].pool = pools[i];
		workers[i].stop = &stop;
		workers[i].hold_ms = 5;
		pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
	}

	/* settle: the 20 lowest pod ids hold one connection, the rest none */
	t0 = now_seconds();
	while (now_seconds() - t0 < 15)
	{
		holding = empty = 0;
		for (i = 0; i < 30; i++)
		{
			s = stats_of(pools[i]);
			holding += s.total == 1 && s.share == 1 && i < 20;
			empty += s.total == 0 && i >= 20;
		}
		if (holding == 20 && empty == 10)
			break;
		sleep_ms(100);
	}
	is_int(holding, 20, "30 pools on an application capped at 20: the 20 with the lowest pod ids hold 1 each");
	is_int(empty, 10, "the other 10 hold no connection");
	{
		uint64_t	connects_before = 0;
		double		t1 = now_seconds();
		uint64_t	connects_after = 0;

		for (i = 20; i < 30; i++)
			connects_before += stats_of(pools[i]).connects + stats_of(pools[i]).connect_failures;
		sleep_ms(3 * REFRESH_MS);
		for (i = 20; i < 30; i++)
			connects_after += stats_of(pools[i]).connects + stats_of(pools[i]).connect_failures;
		ok(connects_after - connects_before <= 10 * (uint64_t) ((now_seconds() - t1) * 1000 / REFRESH_MS + 1),
		   "pools without a share try to connect no more than once per refresh interval each "
		   "(%llu attempts by 10 pools in %.1f s)",
		   (unsigned long long) (connects_after - connects_before), now_seconds() - t1);
	}

	/* five pools with a share leave: five others are served */
	for (i = 0; i < 5; i++)
	{
		__atomic_store_n(&workers[i].leave, 1, __ATOMIC_RELEASE);
		pthread_join(workers[i].thread, NULL);
		cbpool_close(pools[i]);
		pools[i] = NULL;
	}
	t0 = now_seconds();
	while (now_seconds() - t0 < 15)
	{
		holding = 0;
		for (i = 5; i < 30; i++)
			holding += stats_of(pools[i]).total == 1;
		if (holding == 20)
			break;
		sleep_ms(100);
	}
	is_int(holding, 20, "when 5 leave, the waiting pools with the next pod ids are served: 20 hold 1 again (%.1f s)",
		   now_seconds() - t0);

	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 5; i < 30; i++)
		pthread_join(workers[i].thread, NULL);
	sampler_stop(&sampler);
	ok(sampler.max_governed <= 20, "the application never held more than its 20 (at most %ld)",
	   sampler.max_governed);
	for (i = 5; i < 30; i++)
		cbpool_close(pools[i]);
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

/* ---- two pools, one pod id ---- */

static void
test_two_pools_one_pod(void)
{
	cbpool_config cfg = fleet_config("twins", "twin-pod");
	cbpool	   *a,
			   *b;
	Worker		wa[6],
				wb[6];
	int			stop = 0;
	Sampler		sampler;
	int			within = 0;

	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name, max_connections) "
			"VALUES ('twins', 8)");
	a = open_or_bail(&cfg);
	b = open_or_bail(&cfg);
	sampler_start(&sampler);
	for (int k = 0; k < 6; k++)
	{
		memset(&wa[k], 0, sizeof(wa[k]));
		memset(&wb[k], 0, sizeof(wb[k]));
		wa[k].pool = a;
		wb[k].pool = b;
		wa[k].stop = wb[k].stop = &stop;
		wa[k].hold_ms = wb[k].hold_ms = 20;
		pthread_create(&wa[k].thread, NULL, worker_main, &wa[k]);
		pthread_create(&wb[k].thread, NULL, worker_main, &wb[k]);
	}
	/* once both have joined and refreshed, sample for 3 s */
	sleep_ms(2 * REFRESH_MS + REFRESH_MS / 2);
	for (int round = 0; round < 30; round++)
	{
		cbpool_stats_t sa = stats_of(a),
					sb = stats_of(b);

		within += sa.total + sb.total <= 8 && sa.share + sb.share <= 8;
		sleep_ms(100);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int k = 0; k < 6; k++)
	{
		pthread_join(wa[k].thread, NULL);
		pthread_join(wb[k].thread, NULL);
	}
	sampler_stop(&sampler);
	is_int(within, 30, "two busy pools that give one pod id stay within the pod's 8 together, "
		   "in size and in the shares they were told (30 samples over 3 s)");
	ok(stats_of(a).share + stats_of(b).share == 8 && stats_of(a).share >= 3 && stats_of(b).share >= 3,
	   "the pod's share is split between them (%d + %d)", stats_of(a).share, stats_of(b).share);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'twins'"), 1,
		   "they are one pod");
	cbpool_close(a);
	cbpool_close(b);
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE fleet LOGIN");

	test_two_pools_one_pod();
	test_steady_demand();
	test_refresh_spread();
	test_more_pods_than_budget();
	test_hundred_pools();

	PQfinish(admin);
	return done_testing();
}
