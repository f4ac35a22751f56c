/*
 * pool_faults.c -- the pool recovers by itself: a server restart under
 * load, a server that stops answering, one slower to answer than
 * connect_timeout_ms, a backend that ends an idle connection before its
 * socket closes, and connects refused with 53300 (backpressure, not an
 * outage).
 *
 * cluster: max_connections=50 superuser_reserved_connections=3 connbudget.refresh_interval=100
 */
#include "common.h"

#include <sys/ioctl.h>

#define THREADS 8

static cbpool *pool;
static int	stop;
static PGconn *admin_c;

/* The admin connection, re-made if a restart killed it. */
static PGconn *
admin_conn(void)
{
	PGresult   *res = admin_c ? PQexec(admin_c, "SELECT 1") : NULL;
	int			alive = res && PQresultStatus(res) == PGRES_TUPLES_OK;

	PQclear(res);
	if (!alive)
	{
		PQfinish(admin_c);
		admin_c = pg_connect_or_bail("application_name=admin");
	}
	return admin_c;
}
static double restarted_at;		/* when pg_ctl restart returned, 0 before */
static pthread_mutex_t tally_lock = PTHREAD_MUTEX_INITIALIZER;
static long ok_before,
			failed_during,
			ok_after,
			dead_after;
static double first_ok_after;

static void *
load_main(void *arg)
{
	(void) arg;
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED))
	{
		double		back = locked_read(&tally_lock, restarted_at);
		double		t0 = now_seconds();
		PGconn	   *conn = cbpool_acquire(pool, 20000);
		int			works;

		if (!conn)
		{
			sleep_ms(1);		/* the circuit may be open for a moment */
			continue;
		}
		works = query_works(conn);
		pthread_mutex_lock(&tally_lock);
		if (back == 0 && works)
			ok_before++;
		else if (back == 0 || t0 < back)
			failed_during += !works;
		else if (works)
		{
			ok_after++;
			if (first_ok_after == 0)
				first_ok_after = now_seconds();
		}
		else
			dead_after++;
		pthread_mutex_unlock(&tally_lock);
		cbpool_release(pool, conn);
		sleep_ms(2);
	}
	return NULL;
}

static void
test_restart_under_load(void)
{
	cbpool_config cfg = test_config("faults", "pod-restart");
	pthread_t	threads[THREADS];
	cbpool_stats_t s;
	double		back;

	cfg.max_size = 6;
	cfg.validate_idle_ms = 60000;	/* rely on the cheap check, the harder case */
	pool = open_or_bail(&cfg);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&threads[i], NULL, load_main, NULL);
	sleep_ms(1000);

	if (cluster_ctl("restart") != 0)
		bail_out("pg_ctl restart failed");
	back = now_seconds();
	pthread_mutex_lock(&tally_lock);
	restarted_at = back;
	pthread_mutex_unlock(&tally_lock);
	sleep_ms(3000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);

	s = stats_of(pool);
	ok(ok_before > 100, "before the restart the pool served (%ld queries)", ok_before);
	ok(ok_after > 100, "after pg_ctl restart -m fast it serves again (%ld queries)", ok_after);
	is_int(dead_after, 0, "no dead connection was handed out after the restart");
	ok(first_ok_after > 0 && first_ok_after - back < 5.0,
	   "it served again %.2f s after the server was back", first_ok_after - back);
	ok(s.closed_broken >= 1, "the connections the restart killed were discarded (%llu)",
	   (unsigned long long) s.closed_broken);
	diag("queries that failed while the server went down: %ld", failed_during);
	ok(wait_stat(pool, s.budget_refreshes > 0 && s.share >= 1, 5000),
	   "the pool re-registered with the restarted server");
	is_int(pg_long(admin_conn(), "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-restart'"),
		   1, "the new server sees the pod");
	cbpool_close(pool);
}

static void
test_unresponsive_server(void)
{
	cbpool_config cfg = test_config("faults", "pod-stopped");
	char		cmd[512];
	PGconn	   *conn;
	double		t0;
	cbpool_stats_t s;

	cfg.validate_idle_ms = 0;
	cfg.validate_timeout_ms = 300;
	cfg.connect_timeout_ms = 300;
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);

	/*
	 * Every server process stops answering, as on a network partition.  The
	 * postmaster stops first: a backend it forked for the pool's growth after
	 * the children were listed would otherwise keep answering.
	 */
	snprintf(cmd, sizeof(cmd), "kill -STOP $(head -1 '%s/data/postmaster.pid') && "
			 "pkill -STOP -P $(head -1 '%s/data/postmaster.pid')", cluster_dir(), cluster_dir());
	if (system(cmd) != 0)
		bail_out("could not stop the server");
	t0 = now_seconds();
	conn = cbpool_acquire(pool, 1500);
	ok(conn == NULL && (cbpool_last_error() == CBPOOL_ETIMEOUT ||
						cbpool_last_error() == CBPOOL_EUNAVAILABLE),
	   "with the server not answering, acquire returns instead of hanging (%.2f s, %s)",
	   now_seconds() - t0, cbpool_strerror(cbpool_last_error()));
	s = stats_of(pool);
	ok(s.validations_failed + s.closed_broken >= 1,
	   "the unanswering idle connection failed validation and was discarded");
	snprintf(cmd, sizeof(cmd), "kill -CONT $(head -1 '%s/data/postmaster.pid'); "
			 "pkill -CONT -P $(head -1 '%s/data/postmaster.pid')", cluster_dir(), cluster_dir());
	if (system(cmd) != 0)
		bail_out("could not resume the server");
	/* as a service would: fail fast while the circuit is open, try again */
	t0 = now_seconds();
	while (!(conn = cbpool_acquire(pool, 15000)) &&
		   cbpool_last_error() == CBPOOL_EUNAVAILABLE && now_seconds() - t0 < 30)
		sleep_ms(50);
	ok(conn != NULL && query_works(conn), "once the server answers again, the pool serves");
	cbpool_release(pool, conn);
	cbpool_close(pool);
}

static void
test_refusal_is_backpressure(void)
{
	PGconn	   *admin = admin_conn();
	PGconn	   *hog[3];
	cbpool_config cfg = test_config("capped", "pod-mine");
	char		conninfo[512];
	PGconn	   *conn;
	cbpool_stats_t s;

	pg_exec(admin, "CREATE ROLE app LOGIN");
	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"(application_name, max_connections) VALUES ('capped', 3)");
	for (int i = 0; i < 3; i++)
		hog[i] = pg_connect_or_bail("application_name=capped", "user=app",
									"options=-c connbudget.pod=hog");

	snprintf(conninfo, sizeof(conninfo), "%s user=app", cluster_conninfo());
	cfg.conninfo = conninfo;
	log_reset();
	{
		char		err[256];

		pool = cbpool_open(&cfg, err, sizeof(err));
		if (!pool)
			bail_out("%s", err);
	}
	ok(wait_stat(pool, s.connects_refused >= 2, 10000),
	   "with the application at its cap, the pool's connects are refused with 53300 (%llu)",
	   (unsigned long long) s.connects_refused);
	ok(logged("connect-refused", "too many connections for application \"capped\"") >= 1 &&
	   logged("connect-failed", NULL) == 0,
	   "a refusal is logged as backpressure (connect-refused), not as a failure");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-mine'"), 1,
		   "the refused pod is registered with the server all the same");

	/* a thread waits; the hog gives two connections back; the waiter gets one */
	PQfinish(hog[0]);
	PQfinish(hog[1]);
	conn = cbpool_acquire(pool, 10000);
	ok(conn != NULL && query_works(conn),
	   "when connections free up, the waiting acquire is served within its timeout");
	s = stats_of(pool);
	is_int(s.acquire_timeouts, 0, "no acquire timed out");
	cbpool_release(pool, conn);
	cbpool_close(pool);
	PQfinish(hog[2]);
	pg_exec(admin, "DELETE FROM connbudget.application_limits");
}

/* ---- a backend's FATAL before its socket closes ---- */

/*
 * A TCP relay in front of the server that, when the server closes a
 * connection, keeps the client's side open until it is told to let go (or
 * LINGER_MS have passed): the client has the terminated backend's FATAL
 * error but not yet the EOF after it, as on a slow network or a backend
 * slow to exit.
 */
#define LINGER_MS 10000

static struct
{
	TcpRelay	tcp;
	int			fatal_relayed;	/* a 57P01 FATAL went to a client */
	int			let_go;			/* close the lingering client sides */
	int			client_closed;	/* the relay closed a client side */
} relay;

static void
relay_serve(TcpRelay *tcp, int client, int server)
{
	char		buf[8192];
	int			quitting = 0;

	for (;;)
	{
		struct pollfd fds[2] = {{.fd = client, .events = POLLIN},
		{.fd = server, .events = POLLIN}};
		ssize_t		n;

		if (poll(fds, 2, 100) < 0 && errno != EINTR)
			break;
		if (__atomic_load_n(&tcp->stop, __ATOMIC_RELAXED))
			break;
		if (fds[0].revents)
		{
			n = read(client, buf, sizeof(buf));
			if (n <= 0 || write(server, buf, n) != n)
				break;
			/* a Terminate message: the client ends it, the server follows */
			if (n >= 5 && buf[n - 5] == 'X')
				quitting = 1;
		}
		if (fds[1].revents)
		{
			n = read(server, buf, sizeof(buf));
			if (n > 0 && write(client, buf, n) == n)
			{
				if (memmem(buf, n, "57P01", 6))
				{
					/* relayed once the client's side holds it: until the
					   client's kernel acks the bytes, they may still be
					   on their way over loopback */
					int			unacked = 1;

					for (int i = 0; i < 1000 && unacked > 0; i++)
						if (ioctl(client, TIOCOUTQ, &unacked) != 0)
							unacked = 0;
						else if (unacked > 0)
							sleep_ms(1);
					__atomic_store_n(&relay.fatal_relayed, 1, __ATOMIC_RELEASE);
				}
				continue;
			}
			if (quitting)
				break;
			/* the server ended it: the client hears of it later */
			for (int i = 0; i < LINGER_MS / 10 &&
				 !__atomic_load_n(&relay.let_go, __ATOMIC_ACQUIRE); i++)
				sleep_ms(10);
			__atomic_store_n(&relay.client_closed, 1, __ATOMIC_RELEASE);
			break;
		}
	}
}

static void
test_fatal_before_eof(void)
{
	cbpool_config cfg = test_config("faults", "pod-linger");
	char		sql[128];
	PGconn	   *conn;
	long		pid;
	int			lingering;
	double		t0;

	tcp_relay_start(&relay.tcp, relay_serve);
	cfg.conninfo = tcp_relay_conninfo(&relay.tcp);
	cfg.max_size = 1;
	cfg.refresh_ms = 60000;		/* no pool_share() on the connection meanwhile */
	cfg.validate_idle_ms = -1;	/* no round trip before handing it out */
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	pid = conn ? pg_long(conn, "SELECT pg_backend_pid()") : 0;
	cbpool_release(pool, conn);

	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%ld)", pid);
	pg_exec(admin_conn(), sql);
	for (int i = 0; i < 500 && !__atomic_load_n(&relay.fatal_relayed, __ATOMIC_ACQUIRE); i++)
		sleep_ms(10);
	t0 = now_seconds();
	conn = cbpool_acquire(pool, 5000);
	lingering = !__atomic_load_n(&relay.client_closed, __ATOMIC_ACQUIRE);
	ok(__atomic_load_n(&relay.fatal_relayed, __ATOMIC_ACQUIRE) && lingering,
	   "an idle connection's backend is terminated; its FATAL has arrived, its EOF not yet "
	   "(the acquire took %.3f s)", now_seconds() - t0);
	{
		int			works = conn != NULL && query_works(conn);
		long		now_pid = works ? pg_long(conn, "SELECT pg_backend_pid()") : 0;

		ok(works && now_pid != pid,
		   "the pool does not hand it out: the next acquire gets a new backend");
		if (!works || now_pid == pid)
			diag("acquire: %s; the query %s; backend %ld, the terminated one %ld",
				 conn ? "a connection" : cbpool_strerror(cbpool_last_error()),
				 works ? "worked" : "failed", now_pid, pid);
	}
	cbpool_release(pool, conn);
	cbpool_close(pool);
	/* a lingering pair sees let_go within 10 ms */
	__atomic_store_n(&relay.let_go, 1, __ATOMIC_RELEASE);
	tcp_relay_stop(&relay.tcp);
}

/* ---- a server slower to answer than connect_timeout_ms ---- */

/*
 * A relay that holds each new connection for slow_ms before relaying it
 * (-1: until the client gives up): the server took the connection but
 * answers late, as one in crash recovery or swamped by a fleet
 * reconnecting.
 */
static int	slow_ms;

static ConnectTally attempts = CONNECT_TALLY_INIT;

static void
slow_serve(TcpRelay *tcp, int client, int server)
{
	char		buf[8192];
	size_t		held = 0;
	int			hold = __atomic_load_n(&slow_ms, __ATOMIC_RELAXED);
	double		until = now_seconds() + hold / 1000.0;

	/* hold: read what the client sends, notice when it gives up */
	while (hold < 0 || now_seconds() < until)
	{
		struct pollfd fd = {.fd = client, .events = POLLIN};
		ssize_t		n;

		if (__atomic_load_n(&tcp->stop, __ATOMIC_RELAXED))
			return;
		if (poll(&fd, 1, 10) <= 0)
			continue;
		n = read(client, buf + held, sizeof(buf) - held);
		if (n <= 0)
			return;
		held += n;
		if (held == sizeof(buf))
			return;
	}
	if (held > 0 && write(server, buf, held) != (ssize_t) held)
		return;
	tcp_relay_copy(tcp, client, server);
}

static int
attempts_timed_out(void)
{
	return locked_read(&attempts.lock, attempts.ntimed_out);
}

static void
test_slow_server(void)
{
	TcpRelay	tcp;
	cbpool_config cfg = test_config("faults", "pod-slow");
	char		err[256];
	PGconn	   *conn[2];
	double		longest = 0,
				shortest = 1e9,
				t0;
	int			n;

	__atomic_store_n(&slow_ms, -1, __ATOMIC_RELAXED);
	tcp_relay_start(&tcp, slow_serve);
	cfg.conninfo = tcp_relay_conninfo(&tcp);
	cfg.connect_timeout_ms = 200;
	cfg.breaker_open_ms = 100;
	cfg.hooks.on_connect = tally_connect;
	cfg.hooks.user_data = &attempts;
	pool = cbpool_open(&cfg, err, sizeof(err));
	if (!pool)
		bail_out("cbpool_open: %s", err);

	/* a server that never answers: 200, 400, 800, 1600, 1600 ms */
	for (int i = 0; i < 3000 && attempts_timed_out() < 6; i++)
		sleep_ms(10);
	pthread_mutex_lock(&attempts.lock);
	n = attempts.ntimed_out;
	for (int i = 0; i < n; i++)
	{
		if (attempts.timed_out[i] > longest)
			longest = attempts.timed_out[i];
		if (attempts.timed_out[i] < shortest)
			shortest = attempts.timed_out[i];
	}
	pthread_mutex_unlock(&attempts.lock);
	ok(n >= 6, "with a server that never answers, connects time out (%d in 30 s)", n);
	ok(n >= 6 && shortest >= 0.2 && attempts.timed_out[0] < 0.4 &&
	   attempts.timed_out[n - 1] >= 1.6,
	   "each attempt after a timeout waits twice as long: %.0f, %.0f, %.0f, %.0f, %.0f ms, ...",
	   attempts.timed_out[0] * 1e3, attempts.timed_out[1] * 1e3,
	   attempts.timed_out[2] * 1e3, attempts.timed_out[3] * 1e3, attempts.timed_out[4] * 1e3);
	ok(longest >= 1.6 && longest < 3.2,
	   "up to 8 times connect_timeout_ms, no more (the longest %.0f ms)", longest * 1e3);

	/* the server answers after 500 ms: a deadline of 200 ms would never
	   get a connection, the grown one does */
	__atomic_store_n(&slow_ms, 500, __ATOMIC_RELAXED);
	t0 = now_seconds();
	/* as a service would: fail fast while the circuit is open, try again */
	while (!(conn[0] = cbpool_acquire(pool, 15000)) &&
		   cbpool_last_error() == CBPOOL_EUNAVAILABLE && now_seconds() - t0 < 30)
		sleep_ms(50);
	ok(conn[0] && query_works(conn[0]),
	   "a server answering after 500 ms, with connect_timeout_ms 200: the pool connects");
	/* its answer set the deadline back: the next connect times out first */
	n = attempts_timed_out();
	conn[1] = cbpool_acquire(pool, 15000);
	ok(conn[1] && query_works(conn[1]) && attempts_timed_out() > n,
	   "after a server answered, the next attempt's deadline is connect_timeout_ms again "
	   "(%d more timed out before the second connection)", attempts_timed_out() - n);
	cbpool_release(pool, conn[0]);
	cbpool_release(pool, conn[1]);
	cbpool_close(pool);
	tcp_relay_stop(&tcp);
}

int
main(void)
{
	PGconn	   *admin = admin_conn();

	pg_exec(admin, "CREATE EXTENSION connbudget");
	test_refusal_is_backpressure();
	test_fatal_before_eof();
	test_slow_server();
	test_unresponsive_server();
	test_restart_under_load();
	PQfinish(admin_conn());
	return done_testing();
}
