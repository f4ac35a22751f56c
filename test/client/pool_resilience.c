/*
 * pool_resilience.c -- the pool through an outage and in a hostile world:
 * the circuit breaker (fail fast while the server is down, grow back
 * gently when it returns, never for 53300), deadlines that reach the
 * server, credentials rotated under a live pool, lifecycle hooks, TLS
 * with verify-full.
 *
 * cluster: max_connections=80 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

#include <signal.h>
#include <sys/stat.h>

static PGconn *admin;

static PGconn *
admin_conn(void)
{
	if (!admin || PQstatus(admin) != CONNECTION_OK)
	{
		if (admin)
			PQfinish(admin);
		admin = pg_connect_or_bail("application_name=admin");
	}
	return admin;
}

static double
ms_since(double t0)
{
	return (now_seconds() - t0) * 1000.0;
}

/* ---- the circuit breaker through an outage ---- */

#define OUTAGE_THREADS 50
#define OUTAGE_TIMEOUT_MS 3000

/* when the circuit opened (cbpool_clock_us()), 0 before */
static int64_t circuit_opened_us;

typedef struct OutageWorker
{
	pthread_t	thread;
	cbpool	   *pool;
	int		   *stop;
	long		served;
	long		unavailable;
	long		timeouts;
	long		other;
	double		slowest_unavailable_ms;	/* the slowest acquire that failed fast */
} OutageWorker;

static void *
outage_worker_main(void *arg)
{
	OutageWorker *w = arg;

	while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE))
	{
		double		t0 = now_seconds();
		int64_t		opened = __atomic_load_n(&circuit_opened_us, __ATOMIC_ACQUIRE);
		int			after_open = opened > 0 && cbpool_clock_us() >= opened;
		PGconn	   *conn = cbpool_acquire(w->pool, OUTAGE_TIMEOUT_MS);
		double		took = ms_since(t0);

		if (conn)
		{
			PGresult   *res = PQexec(conn, "SELECT pg_sleep(0.002)");

			if (PQresultStatus(res) == PGRES_TUPLES_OK)
				__atomic_add_fetch(&w->served, 1, __ATOMIC_RELAXED);
			PQclear(res);
			cbpool_release(w->pool, conn);
		}
		else if (cbpool_last_error() == CBPOOL_EUNAVAILABLE)
		{
			w->unavailable++;
			if (after_open && took > w->slowest_unavailable_ms)
				w->slowest_unavailable_ms = took;	/* read after the join */
			sleep_ms(5);		/* a service would answer 503 here */
		}
		else if (cbpool_last_error() == CBPOOL_ETIMEOUT)
			__atomic_add_fetch(&w->timeouts, 1, __ATOMIC_RELAXED);
		else
			w->other++;
	}
	return NULL;
}

/* connect events seen by the hook: when each started and ended */
typedef struct ConnectEvent
{
	double		start;
	double		end;
	int			ok;
} ConnectEvent;

static pthread_mutex_t connects_lock = PTHREAD_MUTEX_INITIALIZER;
static ConnectEvent connects[4096];
static int	nconnects;

static void
record_connect(void *user, PGconn *conn, uint64_t duration_us, const char *error)
{
	double		end = now_seconds();

	(void) user;
	(void) error;
	pthread_mutex_lock(&connects_lock);
	if (nconnects < 4096)
	{
		connects[nconnects].start = end - duration_us / 1e6;
		connects[nconnects].end = end;
		connects[nconnects].ok = conn != NULL;
		nconnects++;
	}
	pthread_mutex_unlock(&connects_lock);
}

static void
test_outage(void)
{
	cbpool_config cfg = test_config("resilience", "pod-outage");
	cbpool	   *pool;
	OutageWorker workers[OUTAGE_THREADS];
	int			stop = 0;
	cbpool_stats_t s;
	double		stopped_at,
				opened_after,
				restarted_at;
	char		start_cmd[128];
	uint64_t	failures_before;
	long		timeouts_at_open = 0;
	long		served_before,
				served = 0,
				unavailable = 0,
				timeouts = 0,
				other = 0;
	double		slowest = 0;
	int			first_ok = -1,
				waves = 0,
				alone;
	double		wave_end = 0;
	int			okay;

	cfg.hooks.on_connect = record_connect;
	cfg.max_size = 20;
	pool = open_or_bail(&cfg);
	memset(workers, 0, sizeof(workers));
	for (int i = 0; i < OUTAGE_THREADS; i++)
	{
		workers[i].pool = pool;
		workers[i].stop = &stop;
		pthread_create(&workers[i].thread, NULL, outage_worker_main, &workers[i]);
	}
	log_reset();
	okay = wait_stat(pool, s.total >= 10, 15000);
	ok(okay, "50 threads keep the pool busy (%d connections)", s.total);

	/* the server goes away under them */
	failures_before = stats_of(pool).connect_failures;
	stopped_at = now_seconds();
	if (cluster_ctl("stop") != 0)
		bail_out("pg_ctl stop failed");
	okay = wait_stat(pool, s.breaker_state == CBPOOL_BREAKER_OPEN, 15000);
	__atomic_store_n(&circuit_opened_us, cbpool_clock_us(), __ATOMIC_RELEASE);
	ok(okay, "the circuit opens once the server is gone (state %d)", s.breaker_state);
	opened_after = ms_since(stopped_at);
	/* the pool says so once it has let go of its lock, a moment after the
	   state changed */
	wait_until((void) 0, logged_first("breaker-open") > 0, 5000);
	diag("opened %.0f ms after the server stopped", opened_after);
	diag("%llu connects failed before it opened (5 in a row open it; more were under way)",
		 (unsigned long long) (s.connect_failures - failures_before));
	{
		/*
		 * The pool logs the opening as it opens, and its probe comes no
		 * sooner than 800 ms later (1 s less 20% jitter; 50 ms are left for
		 * the log's lag behind the opening).  No connect may start in
		 * between.  The hook records when each connect started; connects
		 * under way at the opening started before it.
		 */
		double		opened_at = logged_first("breaker-open"),
					first = 0;
		int			nstarted = 0;

		okay = wait_until(
			{
				pthread_mutex_lock(&connects_lock);
				first = 0;
				nstarted = 0;
				for (int i = 0; i < nconnects; i++)
					if (connects[i].start > opened_at)
					{
						nstarted++;
						if (first == 0 || connects[i].start < first)
							first = connects[i].start;
					}
				pthread_mutex_unlock(&connects_lock);
			}, nstarted > 0, 5000);
		ok(opened_at > 0 && okay && first - opened_at >= 0.75,
		   "while the circuit is open the pool starts no connect: the first one after "
		   "the opening started %.0f ms after it (the circuit stays open 800 to 1,200 ms)",
		   okay ? (first - opened_at) * 1000 : -1.0);
	}
	s = stats_of(pool);
	is_int((int) s.breaker_openings, 1, "it opened once");
	ok(logged("breaker-open", "unreachable") == 1, "and said so in the log, once (%d)",
	   logged("breaker-open", NULL));

	/* while it is open, acquires fail fast in every thread */
	for (int i = 0; i < OUTAGE_THREADS; i++)
		timeouts_at_open += __atomic_load_n(&workers[i].timeouts, __ATOMIC_RELAXED);
	sleep_ms(1000);
	{
		int			fast = 0;
		double		t0;
		PGconn	   *conn;

		for (int i = 0; i < 20; i++)
		{
			t0 = now_seconds();
			conn = cbpool_acquire(pool, OUTAGE_TIMEOUT_MS);
			if (!conn && cbpool_last_error() == CBPOOL_EUNAVAILABLE &&
				ms_since(t0) < OUTAGE_TIMEOUT_MS / 10.0)
				fast++;
			if (conn)
				cbpool_release(pool, conn);
		}
		is_int(fast, 20, "20 acquires on an open circuit fail with CBPOOL_EUNAVAILABLE, each in "
			   "under a tenth of their 3 s timeout");
	}
	for (int i = 0; i < OUTAGE_THREADS; i++)
		timeouts += __atomic_load_n(&workers[i].timeouts, __ATOMIC_RELAXED);
	is_int(timeouts - timeouts_at_open, 0,
		   "no thread waited out its timeout while the circuit was open");
	s = stats_of(pool);
	ok(s.breaker_fast_failures > 100, "breaker_fast_failures counts them (%llu)",
	   (unsigned long long) s.breaker_fast_failures);
	{
		char		text[16384];

		cbpool_prometheus(pool, text, sizeof(text));
		ok(strstr(text, "cbpool_breaker_state{application=\"resilience\",pod=\"pod-outage\"} 1") &&
		   strstr(text, "cbpool_breaker_openings_total{") &&
		   strstr(text, "cbpool_breaker_fast_failures_total{"),
		   "the Prometheus text has the breaker's state, openings and fast failures");
	}

	/* back: serving again within a few seconds, growing in steps */
	served_before = 0;
	for (int i = 0; i < OUTAGE_THREADS; i++)
		served_before += __atomic_load_n(&workers[i].served, __ATOMIC_RELAXED);
	pthread_mutex_lock(&connects_lock);
	nconnects = 0;
	pthread_mutex_unlock(&connects_lock);
	snprintf(start_cmd, sizeof(start_cmd), "-o '-p %s' start", getenv("PGPORT"));
	if (cluster_ctl(start_cmd) != 0)
		bail_out("pg_ctl start failed");
	restarted_at = now_seconds();
	okay = wait_stat(pool, s.breaker_state == CBPOOL_BREAKER_CLOSED && s.total > 0, 20000);
	ok(okay, "after the restart the circuit closes (state %d, %d connections)", s.breaker_state,
	   s.total);
	diag("closed %.0f ms after the server was back", ms_since(restarted_at));
	okay = wait_stat(pool, s.total >= 15, 20000);
	ok(okay, "and the pool grows back (%d connections)", s.total);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < OUTAGE_THREADS; i++)
	{
		pthread_join(workers[i].thread, NULL);
		served += workers[i].served;
		unavailable += workers[i].unavailable;
		other += workers[i].other;
		if (workers[i].slowest_unavailable_ms > slowest)
			slowest = workers[i].slowest_unavailable_ms;
	}
	ok(unavailable > 0 && slowest < OUTAGE_TIMEOUT_MS / 10.0,
	   "no thread was held while the circuit was open: %ld fast failures, the slowest that "
	   "started on the open circuit took %.1f ms (a tenth of the timeout is %d ms)",
	   unavailable, slowest, OUTAGE_TIMEOUT_MS / 10);
	ok(served > served_before, "the threads are served again (%ld queries after the restart)",
	   served - served_before);
	is_int(other, 0, "no acquire failed with anything but CBPOOL_EUNAVAILABLE");

	/* the steps: the first connect after the restart went alone, then 1, 2, 4... */
	pthread_mutex_lock(&connects_lock);
	for (int i = 0; i < nconnects; i++)
		if (connects[i].ok && (first_ok < 0 || connects[i].start < connects[first_ok].start))
			first_ok = i;
	alone = first_ok >= 0;
	for (int i = 0; first_ok >= 0 && i < nconnects; i++)
		if (i != first_ok && connects[i].start < connects[first_ok].end &&
			connects[i].end > connects[first_ok].start)
			alone = 0;
	/* waves: connects that overlap in time, in order of their start */
	for (int pass = 0; pass < nconnects; pass++)
	{
		int			next = -1;

		for (int i = 0; i < nconnects; i++)
			if (connects[i].ok && connects[i].start >= wave_end &&
				(next < 0 || connects[i].start < connects[next].start))
				next = i;
		if (next < 0)
			break;
		waves++;
		wave_end = connects[next].end;
		for (int i = 0; i < nconnects; i++)
			if (connects[i].ok && connects[i].start < wave_end && connects[i].end > wave_end)
				wave_end = connects[i].end;
	}
	if (waves < 4)
		for (int i = 0; i < nconnects && i < 40; i++)
			diag("connect %d: %s, %.1f to %.1f ms after the restart", i,
				 connects[i].ok ? "ok" : "failed", (connects[i].start - restarted_at) * 1000,
				 (connects[i].end - restarted_at) * 1000);
	pthread_mutex_unlock(&connects_lock);
	ok(alone, "the first connect after the restart (the probe) ran alone");
	ok(waves >= 4, "the pool grew back in steps, not all at once: %d waves of connects to "
	   "reach %d connections", waves, s.total);
	cbpool_close(pool);
}

/* ---- 53300 is backpressure, never an outage ---- */

static void
test_refusals_do_not_open(void)
{
	cbpool_config cfg = test_config("capped-at-0", "pod-refused");
	cbpool	   *pool;
	char		err[256];
	cbpool_stats_t s;
	PGconn	   *conn;

	pg_exec(admin_conn(), "INSERT INTO connbudget.application_limits VALUES ('capped-at-0', 0, 0, 1)");
	pg_wait_for(admin_conn(), "SELECT count(*) FROM connbudget.applications "
				"WHERE application_name = 'capped-at-0'", 1, 10000);
	{							/* a role the limits apply to */
		static char conninfo[512];

		snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=resil dbname=postgres",
				 getenv("PGHOST"), getenv("PGPORT"));
		cfg.conninfo = conninfo;
	}
	cfg.min_idle = 1;
	log_reset();
	pool = cbpool_open(&cfg, err, sizeof(err));
	if (!pool)
		bail_out("cbpool_open: %s", err);
	{
		int			okay = wait_stat(pool, s.connects_refused >= 8, 20000);

		ok(okay, "a pool whose application may hold nothing is refused with 53300 again and "
		   "again (%llu)", (unsigned long long) s.connects_refused);
	}
	is_int(s.breaker_state, CBPOOL_BREAKER_CLOSED, "the circuit stays closed");
	is_int((int) s.breaker_openings, 0, "and never opened");
	conn = cbpool_acquire(pool, 200);
	ok(!conn && cbpool_last_error() == CBPOOL_ETIMEOUT,
	   "an acquire waits its timeout as backpressure (%s)", cbpool_strerror(cbpool_last_error()));
	if (conn)
		cbpool_release(pool, conn);
	cbpool_close(pool);
	pg_exec(admin_conn(), "DELETE FROM connbudget.application_limits WHERE application_name = 'capped-at-0'");
}

/* ---- deadlines ---- */

typedef struct SlowWork
{
	const char *first;
	const char *second;
	int			pause_ms;		/* between the two, on the client */
	int			ignore_errors;	/* return 0 whatever happened */
	int			calls;
	int64_t		started_us[128];
} SlowWork;

static int
slow_work(cbpool_tx *tx, void *arg)
{
	SlowWork   *w = arg;
	PGresult   *res;
	int			okay;

	if (w->calls < 128)
		w->started_us[w->calls] = cbpool_clock_us();
	w->calls++;
	res = cbpool_tx_exec(tx, w->first);
	okay = cbpool_tx_check(tx, res);
	PQclear(res);
	if (w->pause_ms)
		sleep_ms(w->pause_ms);
	if ((okay || w->ignore_errors) && w->second)
	{
		res = cbpool_tx_exec(tx, w->second);
		okay = cbpool_tx_check(tx, res) && okay;
		PQclear(res);
	}
	return okay || w->ignore_errors ? 0 : 1;
}

static int
show_timeout(cbpool_tx *tx, void *arg)
{
	char	   *out = arg;
	PGresult   *res = cbpool_tx_exec(tx, "SHOW statement_timeout");
	int			okay = cbpool_tx_check(tx, res) && PQntuples(res) == 1;

	if (okay)
		snprintf(out, 64, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return okay ? 0 : 1;
}

static void
test_deadlines(void)
{
	cbpool_config cfg = test_config("resilience", "pod-deadline");
	cbpool	   *pool = open_or_bail(&cfg);
	cbpool_run_opts opts;
	SlowWork	w;
	double		t0;
	int			rc;
	PGconn	   *held;
	long		log_from = server_log_size();

	pg_exec(admin_conn(), "CREATE TABLE IF NOT EXISTS deadline_rows (x int)");

	/* a slow query is cancelled by the server at the caller's deadline */
	memset(&opts, 0, sizeof(opts));
	memset(&w, 0, sizeof(w));
	w.first = "SELECT pg_sleep(10)";
	opts.deadline_us = cbpool_clock_us() + 300000;
	t0 = now_seconds();
	rc = cbpool_run(pool, slow_work, &w, &opts);
	ok(rc != 0 && strcmp(opts.sqlstate, "57014") == 0,
	   "a pg_sleep(10) under a 300 ms deadline fails with 57014 (rc %d, sqlstate %s)", rc,
	   opts.sqlstate);
	ok(ms_since(t0) < 5000, "long before the sleep would end (%.0f ms)", ms_since(t0));
	ok(server_log_contains(log_from, "canceling statement due to statement timeout"),
	   "the server cancelled it: statement_timeout came from the deadline");

	/* a later statement gets only what is left, and its work is rolled back */
	memset(&w, 0, sizeof(w));
	w.first = "INSERT INTO deadline_rows SELECT 1 FROM pg_sleep(0.2)";
	w.second = "SELECT pg_sleep(10)";
	opts.deadline_us = cbpool_clock_us() + 400000;
	t0 = now_seconds();
	rc = cbpool_run(pool, slow_work, &w, &opts);
	ok(rc != 0 && strcmp(opts.sqlstate, "57014") == 0 && ms_since(t0) < 5000,
	   "the second statement is cancelled at the deadline too (sqlstate %s, %.0f ms)",
	   opts.sqlstate, ms_since(t0));
	is_int(pg_long(admin_conn(), "SELECT count(*) FROM deadline_rows"), 0,
		   "and the first one's row is rolled back");

	/* a statement that would start after the deadline is not sent, and
	   work that goes on regardless is not committed */
	memset(&w, 0, sizeof(w));
	w.first = "INSERT INTO deadline_rows VALUES (2)";
	w.pause_ms = 300;
	w.second = "SELECT pg_sleep(10)";
	w.ignore_errors = 1;
	log_from = server_log_size();
	opts.deadline_us = cbpool_clock_us() + 150000;
	rc = cbpool_run(pool, slow_work, &w, &opts);
	ok(rc == CBPOOL_EQUERY && strcmp(opts.sqlstate, "57014") == 0,
	   "a statement due after the deadline fails with 57014 at once (rc %d, %s)", rc,
	   opts.sqlstate);
	ok(!server_log_contains(log_from, "canceling statement"),
	   "without being sent: the server cancelled nothing");
	is_int(pg_long(admin_conn(), "SELECT count(*) FROM deadline_rows"), 0,
		   "and although fn returned 0, nothing of it is committed");

	/* past the deadline: not started */
	memset(&w, 0, sizeof(w));
	w.first = "INSERT INTO deadline_rows VALUES (3)";
	opts.deadline_us = cbpool_clock_us() - 1;
	rc = cbpool_run(pool, slow_work, &w, &opts);
	ok(rc == CBPOOL_ETIMEOUT && w.calls == 0 && opts.attempts == 0,
	   "work whose deadline has passed is not started (rc %d, %d calls, %d attempts)", rc,
	   w.calls, opts.attempts);

	/* retries stop at the deadline */
	memset(&w, 0, sizeof(w));
	w.first = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$";
	opts.idempotent = 1;
	opts.max_attempts = 1000;
	opts.deadline_us = cbpool_clock_us() + 200000;
	rc = cbpool_run(pool, slow_work, &w, &opts);
	/* the last attempt ends as a serialization failure, or cancelled by the
	   statement_timeout the deadline set if the deadline came during it */
	ok(rc != 0 && (strcmp(opts.sqlstate, "40001") == 0 || strcmp(opts.sqlstate, "57014") == 0) &&
	   w.calls == opts.attempts && w.calls > 1 && w.calls < 1000,
	   "serialization failures are retried until the deadline and no longer (%d attempts, "
	   "the last %s)", w.calls, opts.sqlstate);
	{
		int			late = 0;

		for (int i = 0; i < w.calls && i < 128; i++)
			if (w.started_us[i] >= opts.deadline_us)
				late++;
		is_int(late, 0, "no attempt started after the deadline");
	}
	opts.idempotent = 0;
	opts.max_attempts = 0;

	/* cbpool_acquire_until */
	held = cbpool_acquire(pool, 5000);
	{
		cbpool_config one = test_config("resilience", "pod-until");
		cbpool	   *small;
		PGconn	   *c1,
				   *c2;
		int64_t		until;

		one.max_size = 1;
		small = open_or_bail(&one);
		c1 = cbpool_acquire(small, 5000);
		c2 = cbpool_acquire_until(small, cbpool_clock_us() - 1000);
		ok(c1 && !c2 && cbpool_last_error() == CBPOOL_ETIMEOUT,
		   "cbpool_acquire_until() with a deadline already passed fails at once");
		until = cbpool_clock_us() + 150000;
		c2 = cbpool_acquire_until(small, until);
		ok(!c2 && cbpool_last_error() == CBPOOL_ETIMEOUT && cbpool_clock_us() >= until,
		   "and with one ahead, on a full pool, waits until it and no longer");
		cbpool_release(small, c1);
		c2 = cbpool_acquire_until(small, cbpool_clock_us() + 2000000);
		ok(c2 && query_works(c2), "an idle connection is handed out before the deadline");
		cbpool_release(small, c2);
		c2 = cbpool_acquire_until(small, INT64_MAX);
		ok(c2 && query_works(c2), "a deadline of INT64_MAX is no deadline");
		cbpool_release(small, c2);
		cbpool_close(small);
	}
	{
		char		timeout[64] = "";

		memset(&opts, 0, sizeof(opts));
		opts.deadline_us = INT64_MAX;
		rc = cbpool_run(pool, show_timeout, timeout, &opts);
		ok(rc == 0 && strcmp(timeout, "2147483647ms") == 0,
		   "cbpool_run() with a deadline of INT64_MAX runs, under the longest statement_timeout "
		   "(rc %d, %s)", rc, timeout);
	}
	cbpool_release(pool, held);
	cbpool_close(pool);
}

/* ---- rotating credentials ---- */

static pthread_mutex_t secret_lock = PTHREAD_MUTEX_INITIALIZER;
static char current_password[64];
static char secret_failure[64];
static int	secret_calls;

static int
rotating_secret(void *user, cbpool_secret *out)
{
	int			rc = 0;

	(void) user;
	pthread_mutex_lock(&secret_lock);
	secret_calls++;
	if (secret_failure[0])
	{
		snprintf(out->error, sizeof(out->error), "%s", secret_failure);
		rc = -1;
	}
	else
		snprintf(out->password, sizeof(out->password), "%s", current_password);
	pthread_mutex_unlock(&secret_lock);
	return rc;
}

static void
set_secret(const char *password, const char *failure)
{
	pthread_mutex_lock(&secret_lock);
	snprintf(current_password, sizeof(current_password), "%s", password);
	snprintf(secret_failure, sizeof(secret_failure), "%s", failure);
	pthread_mutex_unlock(&secret_lock);
}

/* pg_hba.conf: the rotating role with a password, everyone else trusted */
static void
require_passwords(void)
{
	char		path[1024];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/data/pg_hba.conf", cluster_dir());
	f = fopen(path, "w");
	if (!f)
		bail_out("cannot write %s", path);
	fprintf(f, "local all all trust\n"
			"host all rotor 127.0.0.1/32 scram-sha-256\n"
			"host all rotor_md5 127.0.0.1/32 md5\n"
			"host all all 127.0.0.1/32 trust\n");
	fclose(f);
	pg_exec(admin_conn(), "SELECT pg_reload_conf()");
	sleep_ms(300);
}

/*
 * Keep a thread waiting for a connection (so that the pool tries to
 * connect, after whatever backoff) until the log has this message, for up
 * to 20 s; returns how many connections were handed out meanwhile.
 */
static int
waiting_until_logged(cbpool *pool, const char *id, const char *text)
{
	double		until = now_seconds() + 20;
	int			handed_out = 0;

	while (logged(id, text) == 0 && now_seconds() < until)
	{
		PGconn	   *conn = cbpool_acquire(pool, 500);

		if (conn)
		{
			handed_out++;
			cbpool_release(pool, conn);
		}
		else if (cbpool_last_error() == CBPOOL_EUNAVAILABLE)
			sleep_ms(50);
	}
	return handed_out;
}

static void
test_rotating_credentials(const char *role)
{
	/* a pod of each role: a live pod belongs to the role that registered it */
	static char pod[64];
	cbpool_config cfg = test_config("resilience", pod);
	static char conninfo[512];
	char		sql[256];
	cbpool	   *pool;
	PGconn	   *old_conn,
			   *new_conn;
	cbpool_stats_t s;
	int			calls;

	snprintf(pod, sizeof(pod), "pod-%s", role);
	snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=%s dbname=postgres",
			 getenv("PGHOST"), getenv("PGPORT"), role);
	cfg.conninfo = conninfo;
	cfg.credentials.func = rotating_secret;
	cfg.min_idle = 0;
	cfg.max_size = 4;
	set_secret("first-secret", "");
	snprintf(sql, sizeof(sql), "SET password_encryption = '%s'",
			 strstr(role, "md5") ? "md5" : "scram-sha-256");
	pg_exec(admin_conn(), sql);
	snprintf(sql, sizeof(sql), "ALTER ROLE %s PASSWORD 'first-secret'", role);
	pg_exec(admin_conn(), sql);
	log_reset();
	pool = open_or_bail(&cfg);
	old_conn = cbpool_acquire(pool, 20000);
	ok(old_conn && query_works(old_conn), "%s: a pool connects with the password from the callback",
	   role);
	calls = locked_read(&secret_lock, secret_calls);
	ok(calls >= 1, "%s: the callback was asked (%d times)", role, calls);

	/* rotated on the server and in the vault */
	snprintf(sql, sizeof(sql), "ALTER ROLE %s PASSWORD 'second-secret'", role);
	pg_exec(admin_conn(), sql);
	set_secret("second-secret", "");
	calls = locked_read(&secret_lock, secret_calls);
	new_conn = cbpool_acquire(pool, 20000);
	ok(new_conn && new_conn != old_conn && query_works(new_conn),
	   "%s: after the rotation a new connection uses the new password", role);
	ok(locked_read(&secret_lock, secret_calls) > calls, "%s: asked for it before connecting", role);
	ok(old_conn && query_works(old_conn), "%s: the connection opened with the old one keeps working",
	   role);

	/* a secret the server does not take: a failed login, not an outage */
	set_secret("wrong-secret", "");
	ok(waiting_until_logged(pool, "connect-failed", "password authentication failed") == 0,
	   "%s: with a wrong password no connection opens", role);
	s = stats_of(pool);
	ok(logged("connect-failed", "password authentication failed") >= 1,
	   "%s: the failed login is logged as connect-failed", role);
	is_int(s.breaker_state, CBPOOL_BREAKER_CLOSED, "%s: and does not open the circuit", role);

	/* a callback that fails */
	set_secret("", "the vault is sealed");
	ok(waiting_until_logged(pool, "connect-failed", "credentials: the vault is sealed") == 0,
	   "%s: a failing callback opens no connection", role);
	ok(logged("connect-failed", "credentials: the vault is sealed") >= 1,
	   "%s: it counts as a failed connect, with its message in the log", role);
	s = stats_of(pool);
	ok(s.connect_failures >= 2, "%s: connect_failures counts both (%llu)", role,
	   (unsigned long long) s.connect_failures);
	set_secret("second-secret", "");
	ok(wait_stat(pool, s.breaker_state == CBPOOL_BREAKER_CLOSED, 15000),
	   "%s: once the vault answers again, the pool is usable", role);
	{
		PGconn	   *third = cbpool_acquire(pool, 20000);

		ok(third && query_works(third), "%s: and connects again", role);
		if (third)
			cbpool_release(pool, third);
	}
	cbpool_release(pool, old_conn);
	cbpool_release(pool, new_conn);
	cbpool_close(pool);
}

/* ---- lifecycle hooks ---- */

typedef struct HookEvent
{
	char		kind;			/* c(onnect) x(close) a(cquire) r(elease) */
	PGconn	   *conn;
	uint64_t	us;
	int			reason;
	int			stats_ok;		/* cbpool_stats() from inside the hook worked */
} HookEvent;

static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static HookEvent hook_events[4096];
static int	nhook_events;
static cbpool *hooked_pool;

static void
hook_record(char kind, PGconn *conn, uint64_t us, int reason)
{
	cbpool_stats_t s;
	int			stats_ok;

	cbpool	   *pool;

	/* the first connect may finish before cbpool_open() has returned */
	for (int i = 0; i < 5000 && !(pool = __atomic_load_n(&hooked_pool, __ATOMIC_ACQUIRE)); i++)
		sleep_ms(1);
	if (!pool)
		return;
	/* called under the pool's lock, this would deadlock */
	cbpool_stats(pool, &s);
	stats_ok = s.total >= 0;
	pthread_mutex_lock(&hooks_lock);
	if (nhook_events < 4096)
	{
		HookEvent  *e = &hook_events[nhook_events++];

		e->kind = kind;
		e->conn = conn;
		e->us = us;
		e->reason = reason;
		e->stats_ok = stats_ok;
	}
	pthread_mutex_unlock(&hooks_lock);
}

static void
on_connect_hook(void *user, PGconn *conn, uint64_t us, const char *error)
{
	(void) user;
	(void) error;
	hook_record('c', conn, us, 0);
}

static void
on_close_hook(void *user, PGconn *conn, cbpool_close_reason reason, uint64_t us)
{
	(void) user;
	hook_record('x', conn, us, (int) reason);
}

static void
on_acquire_hook(void *user, PGconn *conn, uint64_t us)
{
	(void) user;
	hook_record('a', conn, us, 0);
}

static void
on_release_hook(void *user, PGconn *conn, uint64_t us)
{
	(void) user;
	hook_record('r', conn, us, 0);
}

static void
test_hooks(void)
{
	cbpool_config cfg = test_config("resilience", "pod-hooks");
	char		err[256];
	cbpool	   *pool;
	PGconn	   *conn;
	int			pid,
				connect_at = -1,
				acquire_at = -1,
				release_at = -1,
				close_at = -1,
				all_stats = 1,
				broken = 0,
				closed_at_close = 0;
	uint64_t	held_us = 0;

	cfg.hooks.on_connect = on_connect_hook;
	cfg.hooks.on_close = on_close_hook;
	cfg.hooks.on_acquire = on_acquire_hook;
	cfg.hooks.on_release = on_release_hook;
	cfg.log_debug = 1;
	cfg.min_idle = 1;
	cfg.validate_idle_ms = 0;
	log_reset();
	pool = cbpool_open(&cfg, err, sizeof(err));
	if (!pool)
		bail_out("cbpool_open: %s", err);
	__atomic_store_n(&hooked_pool, pool, __ATOMIC_RELEASE);
	if (cbpool_wait_ready(pool, 15000) != CBPOOL_OK)
		bail_out("the pool did not connect");
	conn = cbpool_acquire(pool, 5000);
	sleep_ms(30);
	cbpool_release(pool, conn);

	/* a connection that breaks is closed as broken */
	conn = cbpool_acquire(pool, 5000);
	pid = PQbackendPID(conn);
	cbpool_release(pool, conn);
	pg_terminate_and_wait(admin_conn(), pid);
	sleep_ms(20);
	ok(pool_serves(pool, 5000), "a fresh connection replaces the terminated one");
	cbpool_close(pool);

	pthread_mutex_lock(&hooks_lock);
	for (int i = 0; i < nhook_events; i++)
	{
		HookEvent  *e = &hook_events[i];

		all_stats = all_stats && e->stats_ok;
		if (e->kind == 'c' && connect_at < 0 && e->conn)
			connect_at = i;
		if (e->kind == 'a' && acquire_at < 0)
			acquire_at = i;
		if (e->kind == 'r' && release_at < 0)
		{
			release_at = i;
			held_us = e->us;
		}
		if (e->kind == 'x' && e->reason == CBPOOL_CLOSE_BROKEN)
			broken++;
		if (e->kind == 'x' && e->reason == CBPOOL_CLOSE_POOL_CLOSED)
			closed_at_close++;
		if (e->kind == 'x')
			close_at = i;
	}
	ok(connect_at >= 0 && hook_events[connect_at].us > 0,
	   "on_connect saw the connect, with its duration (%llu us)",
	   connect_at >= 0 ? (unsigned long long) hook_events[connect_at].us : 0ULL);
	ok(connect_at >= 0 && acquire_at > connect_at && release_at > acquire_at &&
	   close_at > release_at,
	   "events come in order: connect, acquire, release, close");
	ok(acquire_at >= 0 && hook_events[acquire_at].conn == hook_events[connect_at].conn,
	   "the first acquire hands out the connection the connect opened");
	ok(held_us >= 30000 && held_us < 10000000,
	   "on_release saw the 30 ms hold (%llu us)", (unsigned long long) held_us);
	ok(broken >= 1, "on_close saw the terminated connection closed as broken (%d)", broken);
	ok(closed_at_close >= 1, "and the rest closed by cbpool_close() as \"pool closed\" (%d)",
	   closed_at_close);
	ok(all_stats && nhook_events > 0,
	   "every hook could call cbpool_stats(): none ran under the pool's lock (%d events)",
	   nhook_events);
	is_str(cbpool_close_reason_name(CBPOOL_CLOSE_OVER_SHARE), "over share",
		   "cbpool_close_reason_name() names the reasons");
	ok(logged_at("connect", "connected in", CBPOOL_LOG_DEBUG) >= 1 &&
	   logged_at("acquire", "after waiting", CBPOOL_LOG_DEBUG) >= 1 &&
	   logged_at("release", "after holding", CBPOOL_LOG_DEBUG) >= 1 &&
	   logged_at("close", "broken", CBPOOL_LOG_DEBUG) >= 1,
	   "log_debug logs the same events at CBPOOL_LOG_DEBUG");
	pthread_mutex_unlock(&hooks_lock);
	__atomic_store_n(&hooked_pool, NULL, __ATOMIC_RELEASE);
}

/* ---- TLS with verify-full ---- */

static int
run_cmd(const char *cmd)
{
	int			rc = system(cmd);

	return rc == 0 ? 0 : -1;
}

static void
test_tls(void)
{
	char		cmd[4096];
	char		dir[1024];
	static char conninfo[2048];
	static char wrong_host[2048];
	cbpool_config cfg = test_config("resilience", "pod-tls");
	cbpool	   *pool;
	PGconn	   *conn;
	cbpool_stats_t s;
	int			pid;
	char		err[256];

	{
		/* an installation built without OpenSSL has no TLS to test */
		const char *server_lib = pg_value(admin_conn(), "SHOW ssl_library");
		const char *client_lib = PQsslAttribute(NULL, "library");

		if (!server_lib || !*server_lib || !client_lib)
		{
			skip(6, "TLS: this PostgreSQL's server or libpq was built without "
				 "OpenSSL (configure --with-openssl)");
			return;
		}
	}
	snprintf(dir, sizeof(dir), "%s/data", cluster_dir());
	snprintf(cmd, sizeof(cmd),
			 "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
			 "-subj '/CN=127.0.0.1' -addext 'subjectAltName=IP:127.0.0.1' "
			 "-keyout server.key -out server.crt >/dev/null 2>&1 && chmod 600 server.key",
			 dir);
	if (run_cmd(cmd) != 0)
		bail_out("openssl could not make a certificate");
	pg_exec(admin_conn(), "ALTER SYSTEM SET ssl = on");
	pg_exec(admin_conn(), "SELECT pg_reload_conf()");
	sleep_ms(500);

	snprintf(conninfo, sizeof(conninfo),
			 "host=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=verify-full "
			 "sslrootcert=%s/server.crt", getenv("PGPORT"), dir);
	cfg.conninfo = conninfo;
	cfg.validate_idle_ms = 0;	/* every hand-out after a pause is validated */
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	ok(conn && PQsslInUse(conn) && query_works(conn),
	   "a pool with sslmode=verify-full connects over TLS to a server with a self-signed "
	   "certificate for 127.0.0.1");
	{
		const char *proto = conn ? PQsslAttribute(conn, "protocol") : NULL;

		ok(proto && strncmp(proto, "TLSv1.", 6) == 0, "with TLS 1.2 or later (%s)",
		   proto ? proto : "none");
	}
	pid = conn ? PQbackendPID(conn) : 0;
	cbpool_release(pool, conn);
	sleep_ms(5);
	conn = cbpool_acquire(pool, 5000);
	s = stats_of(pool);
	ok(conn && PQbackendPID(conn) == pid && s.validations_failed == 0,
	   "an idle TLS connection passes validation and is handed out again");
	cbpool_release(pool, conn);

	pg_terminate_and_wait(admin_conn(), pid);
	sleep_ms(20);
	conn = cbpool_acquire(pool, 5000);
	s = stats_of(pool);
	ok(conn && PQbackendPID(conn) != pid && PQsslInUse(conn) && query_works(conn) &&
	   s.closed_broken >= 1,
	   "a TLS connection the server ended is found dead and replaced by a live TLS one");
	cbpool_release(pool, conn);
	cbpool_close(pool);

	/* the name checked is the host's: a certificate for 127.0.0.1 is not localhost's */
	snprintf(wrong_host, sizeof(wrong_host),
			 "host=localhost hostaddr=127.0.0.1 port=%s user=postgres dbname=postgres "
			 "sslmode=verify-full sslrootcert=%s/server.crt", getenv("PGPORT"), dir);
	cfg.conninfo = wrong_host;
	log_reset();
	pool = cbpool_open(&cfg, err, sizeof(err));
	if (!pool)
		bail_out("cbpool_open: %s", err);
	conn = cbpool_acquire(pool, 1500);
	ok(!conn, "with verify-full, a server whose certificate does not name the host is refused");
	ok(wait_stat(pool, logged("connect-failed", "localhost") >= 1, 5000),
	   "with a message naming the host");
	if (conn)
		cbpool_release(pool, conn);
	cbpool_close(pool);
	pg_exec(admin_conn(), "ALTER SYSTEM RESET ssl");
	pg_exec(admin_conn(), "SELECT pg_reload_conf()");
}

int
main(void)
{
	alarm(600);					/* a hook called under the lock would hang here */
	pg_exec(admin_conn(), "CREATE EXTENSION connbudget");
	pg_exec(admin_conn(), "CREATE ROLE resil LOGIN");
	pg_exec(admin_conn(), "CREATE ROLE rotor LOGIN");
	pg_exec(admin_conn(), "CREATE ROLE rotor_md5 LOGIN");
	test_hooks();
	test_deadlines();
	test_refusals_do_not_open();
	require_passwords();
	test_rotating_credentials("rotor");
	test_rotating_credentials("rotor_md5");
	test_tls();
	test_outage();
	PQfinish(admin);
	return done_testing();
}
