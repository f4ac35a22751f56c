/*
 * pool_budget.c -- pools in separate processes (different pods of one
 * application) share the budget through the server: each stays within its
 * share, shrinks when a pod joins, grows back when a pod is killed, and
 * together they never exceed the budget.
 *
 * Budget: max_connections 40 - reserved 10 = 30.
 *
 * cluster: max_connections=40 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.pod_ttl=1500 connbudget.refresh_interval=200
 */
#include "common.h"
#include "../lib/pool_load.h"

#define BUDGET 30
#define REFRESH_MS 200
#define POD_TTL_MS 1500
#define LOAD_THREADS 20

/* ---- a pod: a process with a pool under more load than it can get ---- */

/* A pod of application "shop": a process with a pool under more load than
   it can get, as a plain role, so that the server's limits apply
   (superusers are never refused). */
static pid_t
start_pod(const char *pod)
{
	cbpool_config cfg = test_config("shop", pod);
	char		conninfo[512];
	pid_t		pid;

	snprintf(conninfo, sizeof(conninfo), "%s user=shop_user", cluster_conninfo());
	cfg.conninfo = conninfo;
	cfg.logger.func = NULL;		/* default: warnings to stderr */
	pid = pod_start(&cfg, LOAD_THREADS, "SELECT pg_sleep(0.01)", 2000);
	if (pid < 0)
		bail_out("fork: %s", strerror(errno));
	return pid;
}

/* ---- the observer ---- */

static PGconn *admin;
static long samples;
static long over_budget;
static long max_governed;

typedef struct PodView
{
	int			connections;
	int			share;
} PodView;

/* Read the pods view; also check the budget on every sample. */
static void
observe(PodView *a, PodView *b, PodView *c)
{
	PGresult   *res = PQexec(admin,
							 "SELECT pod, connections, share FROM connbudget.pods "
							 "WHERE application_name = 'shop'");
	long		governed = pg_long(admin, "SELECT governed FROM connbudget.budget");
	PodView    *views[3] = {a, b, c};

	for (int k = 0; k < 3; k++)
		views[k]->connections = views[k]->share = -1;
	for (int i = 0; i < PQntuples(res); i++)
	{
		const char *pod = PQgetvalue(res, i, 0);
		int			k = pod[4] - 'a';

		if (k >= 0 && k < 3)
		{
			views[k]->connections = atoi(PQgetvalue(res, i, 1));
			views[k]->share = atoi(PQgetvalue(res, i, 2));
		}
	}
	PQclear(res);
	samples++;
	if (governed > BUDGET)
		over_budget++;
	if (governed > max_governed)
		max_governed = governed;
}

/* Sample until cond holds (or the timeout); returns the seconds it took, or -1. */
#define wait_pods(cond, timeout_s) \
	({ \
		double start_ = now_seconds(), took_ = -1; \
		for (;;) \
		{ \
			observe(&a, &b, &c); \
			if (cond) { took_ = now_seconds() - start_; break; } \
			if (now_seconds() - start_ > (timeout_s)) break; \
			sleep_ms(20); \
		} \
		took_; \
	})

/* The connects a pool tried, from its on_connect hook: when each began and ended. */
typedef struct connect_log
{
	pthread_mutex_t lock;
	int			n;
	double		start[256];
	double		end[256];
} connect_log;

static void
log_connect(void *user_data, PGconn *conn, uint64_t duration_us, const char *error)
{
	connect_log *log = user_data;
	double		end = now_seconds();

	(void) conn;
	(void) error;
	pthread_mutex_lock(&log->lock);
	if (log->n < 256)
	{
		log->start[log->n] = end - duration_us / 1e6;
		log->end[log->n++] = end;
	}
	pthread_mutex_unlock(&log->lock);
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

int
main(void)
{
	PodView		a,
				b,
				c;
	pid_t		pid_a,
				pid_b,
				pid_c;
	double		took;
	long		over_share = 0,
				window = 0;

	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE shop_user LOGIN");
	is_int(pg_long(admin, "SELECT budget FROM connbudget.budget"), BUDGET, "the budget is 30");

	/* two pods: 15 each */
	pid_a = start_pod("pod-a");
	pid_b = start_pod("pod-b");
	took = wait_pods(a.connections == 15 && b.connections == 15 &&
					 a.share == 15 && b.share == 15, 30);
	ok(took >= 0, "two pods under load each get a share of 15 and fill it (%.1f s)", took);
	if (took < 0)
		diag("pod-a %d/%d, pod-b %d/%d", a.connections, a.share, b.connections, b.share);

	/* each stays within its share while the shares hold still */
	for (double end = now_seconds() + 2; now_seconds() < end; sleep_ms(20))
	{
		observe(&a, &b, &c);
		window++;
		if (a.connections > a.share || b.connections > b.share)
			over_share++;
	}
	is_int(over_share, 0, "over 2 s (%ld samples), neither pod held more than its share", window);

	/* a third pod joins: 10 each, the first two shrink as they release
	   (its first connect, a backend's start on a busy machine, may run
	   out its 5 s and be tried again: how soon it joins is not what is
	   measured here, how soon the others shrink after it is) */
	pid_c = start_pod("pod-c");
	took = wait_pods(c.share == 10, 30);
	ok(took >= 0, "pod-c joins: the shares become 10 (%.1f s)", took);
	if (took < 0)
		diag("pod-a %d/%d, pod-b %d/%d, pod-c %d/%d (connections/share; -1: not in the pods view)",
			 a.connections, a.share, b.connections, b.share, c.connections, c.share);
	took = wait_pods(a.connections <= 10 && b.connections <= 10, 10);
	ok(took >= 0 && took <= 2.0 * REFRESH_MS / 1000 + 1.0,
	   "pod-a and pod-b shrink to 10 within two refresh intervals (+1 s slack) "
	   "(took %.2f s)", took);
	took = wait_pods(a.connections == 10 && b.connections == 10 && c.connections == 10, 10);
	ok(took >= 0, "all three pods settle at 10 connections");

	/* pod-c is killed: after its lease, the others grow back to 15 */
	kill(pid_c, SIGKILL);
	waitpid(pid_c, NULL, 0);
	took = wait_pods(a.connections == 15 && b.connections == 15, 15);
	/* the slack: five new connections each, under a sanitizer, on two cores
	   that a whole test run keeps busy (5.1 s seen there) */
	ok(took >= 0 && took <= (POD_TTL_MS + 2.0 * REFRESH_MS) / 1000 + 4.0,
	   "pod-c killed with SIGKILL: the others grow back to 15 within pod_ttl + two refresh "
	   "intervals (+4 s slack) (took %.2f s)", took);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-c'"), 0,
		   "pod-c is gone from the pods view");

	kill(pid_a, SIGTERM);
	kill(pid_b, SIGTERM);
	{
		int			status_a,
					status_b;

		waitpid(pid_a, &status_a, 0);
		waitpid(pid_b, &status_b, 0);
		ok(WIFEXITED(status_a) && WEXITSTATUS(status_a) == 0 &&
		   WIFEXITED(status_b) && WEXITSTATUS(status_b) == 0,
		   "the pods shut their pools down cleanly");
	}
	is_int(over_budget, 0,
		   "the sum of all pools' connections never exceeded the budget of 30 "
		   "(%ld samples, at most %ld)", samples, max_governed);
	is_int(pg_wait_for(admin, "SELECT governed FROM connbudget.budget", 0, 10000), 0,
		   "every connection was closed");
	/*
	 * A pool refused before it ever read a share retries at the pace the
	 * server states in the refusal (200 ms here), not at a guess of 1 s.
	 */
	{
		char		conninfo[512];
		cbpool_config cfg = test_config("full", "late");
		cbpool	   *late;
		PGconn	   *holder;
		char		err[256];
		cbpool_stats_t s;
		connect_log log = {.lock = PTHREAD_MUTEX_INITIALIZER};
		double		gaps[256];
		int			ngaps = 0;

		pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name, max_connections) "
				"VALUES ('full', 1)");
		snprintf(conninfo, sizeof(conninfo),
				 "%s user=shop_user application_name=full options='-c connbudget.pod=holder'",
				 cluster_conninfo());
		holder = PQconnectdb(conninfo);
		if (PQstatus(holder) != CONNECTION_OK)
			bail_out("holder: %s", PQerrorMessage(holder));
		snprintf(conninfo, sizeof(conninfo), "%s user=shop_user", cluster_conninfo());
		cfg.conninfo = conninfo;
		cfg.hooks.on_connect = log_connect;
		cfg.hooks.user_data = &log;
		late = cbpool_open(&cfg, err, sizeof(err));
		if (!late)
			bail_out("cbpool_open: %s", err);
		sleep_ms(2000);
		s = stats_of(late);
		/*
		 * Between the end of one refused connect and the start of the next,
		 * the pool waits the stated pace (200 to 240 ms with its jitter), not
		 * 1 s; how long each connect takes (long under a sanitizer on a busy
		 * machine) is the server's, so the wait is measured without it.
		 */
		pthread_mutex_lock(&log.lock);
		for (int i = 1; i < log.n; i++)
			gaps[ngaps++] = log.start[i] - log.end[i - 1];
		pthread_mutex_unlock(&log.lock);
		qsort(gaps, ngaps, sizeof(double), cmp_double);
		ok(s.connects == 0 && s.connects_refused >= 3 && ngaps >= 2 &&
		   gaps[0] >= 0.9 * REFRESH_MS / 1000 && gaps[ngaps / 2] < 2.5 * REFRESH_MS / 1000,
		   "a pool refused from the start retries at the server's refresh interval of %d ms "
		   "(%llu refusals in 2 s; waits between them %.0f ms at least, median %.0f ms)",
		   REFRESH_MS, (unsigned long long) s.connects_refused,
		   ngaps ? gaps[0] * 1000 : -1, ngaps ? gaps[ngaps / 2] * 1000 : -1);
		PQfinish(holder);
		ok(cbpool_wait_ready(late, 5000) == CBPOOL_OK,
		   "and it connects once the application has room");
		cbpool_close(late);
	}

	PQfinish(admin);
	return done_testing();
}
