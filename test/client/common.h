/*
 * common.h -- shared by the client pool tests: the pool's implementation,
 * TAP, libpq helpers, a logger that remembers what the pool said, threads
 * that wait for a connection, and a TCP relay in front of the server.
 */
#ifndef CONNBUDGET_TEST_CLIENT_COMMON_H
#define CONNBUDGET_TEST_CLIENT_COMMON_H

/* memmem(), pipe2() and the like, whether or not the implementation (which
   asks for them) is compiled in */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/* A test that looks inside the pool (its cbpool__ names) defines
   CBPOOL_TEST_INTERNALS and compiles the implementation in; the others
   link the one object of it test/run builds for each sanitizer, as a
   program of several files would. */
#ifdef CBPOOL_TEST_INTERNALS
#define CBPOOL_IMPLEMENTATION
#endif
#include "../../client/connbudget_pool.h"

#include "../lib/pgtest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* ---- a logger that keeps every message ---- */

typedef struct LogEntry
{
	cbpool_log_level level;
	char		id[32];
	char		text[512];
	double		at;				/* now_seconds() when it was logged */
} LogEntry;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static LogEntry log_entries[1024];
static int	log_count;

static inline void
test_logger(void *user, cbpool_log_level level, const char *id, const char *message)
{
	(void) user;
	pthread_mutex_lock(&log_lock);
	if (log_count < 1024)
	{
		LogEntry   *e = &log_entries[log_count++];

		e->level = level;
		e->at = now_seconds();
		snprintf(e->id, sizeof(e->id), "%s", id);
		snprintf(e->text, sizeof(e->text), "%s", message);
	}
	pthread_mutex_unlock(&log_lock);
	if (getenv("CB_TEST_VERBOSE"))
		diag("pool log [%s] %s", id, message);
}

/* How many messages with this id (containing "text", if given) at this
   level (any level if level is -1). */
static inline int
logged_at(const char *id, const char *text, int level)
{
	int			n = 0;

	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < log_count; i++)
		if (strcmp(log_entries[i].id, id) == 0 &&
			(level < 0 || (int) log_entries[i].level == level) &&
			(text == NULL || strstr(log_entries[i].text, text) != NULL))
			n++;
	pthread_mutex_unlock(&log_lock);
	return n;
}

/* When the first message with this id was logged, or 0 if none was. */
static inline double
logged_first(const char *id)
{
	double		at = 0;

	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < log_count && at == 0; i++)
		if (strcmp(log_entries[i].id, id) == 0)
			at = log_entries[i].at;
	pthread_mutex_unlock(&log_lock);
	return at;
}

/* How many messages with this id (and containing "text", if given). */
static inline int
logged(const char *id, const char *text)
{
	return logged_at(id, text, -1);
}

static inline void
log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	log_count = 0;
	pthread_mutex_unlock(&log_lock);
}

/* ---- pools against the test cluster ---- */

static char test_conninfo[512];

static inline const char *
cluster_conninfo(void)
{
	snprintf(test_conninfo, sizeof(test_conninfo),
			 "host=%s port=%s user=postgres dbname=postgres",
			 getenv("PGHOST") ? getenv("PGHOST") : "127.0.0.1",
			 getenv("PGPORT") ? getenv("PGPORT") : "5432");
	return test_conninfo;
}

/* A configuration for tests: quick refreshes and our logger. */
static inline cbpool_config
test_config(const char *app, const char *pod)
{
	cbpool_config cfg = cbpool_config_default();

	cfg.conninfo = cluster_conninfo();
	cfg.application_name = app;
	cfg.pod = pod;
	cfg.logger.func = test_logger;
	cfg.acquire_timeout_ms = 10000;
	return cfg;
}

static inline cbpool *
open_or_bail(const cbpool_config *cfg)
{
	char		err[256];
	cbpool	   *pool = cbpool_open(cfg, err, sizeof(err));

	if (!pool)
		bail_out("cbpool_open: %s", err);
	if (cbpool_wait_ready(pool, 15000) != CBPOOL_OK)
		bail_out("the pool did not connect within 15 s");
	return pool;
}

static inline cbpool_stats_t
stats_of(cbpool *pool)
{
	cbpool_stats_t s;

	cbpool_stats(pool, &s);
	return s;
}

/*
 * Run "refresh", then test "cond", every 10 ms until it holds or
 * timeout_ms have passed; the value is cond's last.
 */
#define wait_until(refresh, cond, timeout_ms) \
	({ \
		double deadline_ = now_seconds() + (timeout_ms) / 1000.0; \
		for (;;) \
		{ \
			refresh; \
			if ((cond) || now_seconds() > deadline_) \
				break; \
			sleep_ms(10); \
		} \
		(cond); \
	})

/*
 * Wait until a condition on the stats holds, up to timeout_ms.  The
 * condition reads the caller's "cbpool_stats_t s", refreshed each round,
 * so the caller can report what it saw last.
 */
#define wait_stat(pool, cond, timeout_ms) wait_until(cbpool_stats((pool), &s), cond, timeout_ms)

/* Run one query that must work on a pooled connection. */
static inline int
query_works(PGconn *conn)
{
	PGresult   *res = PQexec(conn, "SELECT 1");
	int			ok = PQresultStatus(res) == PGRES_TUPLES_OK;

	PQclear(res);
	return ok;
}

/* Acquire a connection, run a query on it and release it: did it work? */
static inline int
pool_serves(cbpool *pool, int timeout_ms)
{
	PGconn	   *conn = cbpool_acquire(pool, timeout_ms);
	int			works = conn != NULL && query_works(conn);

	if (conn)
		cbpool_release(pool, conn);
	return works;
}

/* The value of an lvalue, read under a mutex. */
#define locked_read(lock, value) \
	({ \
		pthread_mutex_lock(lock); \
		__typeof__(value) value_ = (value); \
		pthread_mutex_unlock(lock); \
		value_; \
	})

typedef void (*test_fn) (void);

/*
 * The main() of a file whose tests share its connection "admin": connect
 * it as the superuser, create the extension, run the tests (a NULL-ended
 * list) in order, and report.
 */
static inline int
run_tests(PGconn **admin, const test_fn *tests)
{
	*admin = pg_connect_or_bail("application_name=admin");
	pg_exec(*admin, "CREATE EXTENSION connbudget");
	for (; *tests; tests++)
		(*tests) ();
	PQfinish(*admin);
	return done_testing();
}

/* ---- threads that wait for a connection ---- */

/* The order in which waiters were served (their indexes). */
typedef struct ServedOrder
{
	pthread_mutex_t lock;
	int			index[64];
	int			n;
} ServedOrder;

#define SERVED_ORDER_INIT {.lock = PTHREAD_MUTEX_INITIALIZER}

/* Were the first n served in the order of their indexes, 0 first? */
static inline int
served_in_order(const ServedOrder *order, int n)
{
	for (int i = 0; i < n; i++)
		if (order->index[i] != i)
			return 0;
	return 1;
}

/*
 * A thread that waits up to timeout_ms for a connection of pool.  With an
 * order, once served it writes its index there, holds the connection
 * hold_ms and releases it; without one, it keeps the connection in conn.
 */
typedef struct Waiter
{
	cbpool	   *pool;
	int			index;
	int			timeout_ms;
	int			hold_ms;
	ServedOrder *order;
	/* out */
	PGconn	   *conn;
	cbpool_error error;
	double		waited;			/* seconds */
	pthread_t	thread;
} Waiter;

static inline void *
waiter_main(void *arg)
{
	Waiter	   *w = arg;
	double		t0 = now_seconds();

	w->conn = cbpool_acquire(w->pool, w->timeout_ms);
	w->error = cbpool_last_error();
	w->waited = now_seconds() - t0;
	if (w->conn && w->order)
	{
		pthread_mutex_lock(&w->order->lock);
		w->order->index[w->order->n++] = w->index;
		pthread_mutex_unlock(&w->order->lock);
		sleep_ms(w->hold_ms);
		cbpool_release(w->pool, w->conn);
	}
	return NULL;
}

static inline void
waiter_start(Waiter *w)
{
	pthread_create(&w->thread, NULL, waiter_main, w);
}

/* ---- a TCP relay in front of the test server ---- */

/*
 * It listens on a port of its own on 127.0.0.1 and, for each client it
 * accepts, connects to the server and calls serve(relay, client, server)
 * on a thread of the pair's own; when serve() returns, both sockets are
 * closed.  serve() relays until relay->stop (it looks at least every 100
 * ms) or either side ends.
 */
typedef struct TcpRelay TcpRelay;

struct TcpRelay
{
	void		(*serve) (TcpRelay *relay, int client, int server);
	int			listen_fd;
	int			port;
	int			stop;
	int			pairs;			/* connections being relayed */
	pthread_t	thread;
};

typedef struct TcpRelayPair
{
	TcpRelay   *relay;
	int			client;
	int			server;
} TcpRelayPair;

static inline void *
tcp_relay_pair_main(void *arg)
{
	TcpRelayPair *p = arg;

	p->relay->serve(p->relay, p->client, p->server);
	close(p->client);
	close(p->server);
	__atomic_fetch_sub(&p->relay->pairs, 1, __ATOMIC_RELEASE);
	free(p);
	return NULL;
}

static inline void *
tcp_relay_main(void *arg)
{
	TcpRelay   *r = arg;

	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
	{
		struct pollfd pfd = {.fd = r->listen_fd, .events = POLLIN};
		struct sockaddr_in to = {.sin_family = AF_INET};
		TcpRelayPair *p;
		pthread_t	t;
		int			one = 1;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		p = malloc(sizeof(TcpRelayPair));
		if (!p)
			bail_out("relay: out of memory");
		p->relay = r;
		p->client = accept(r->listen_fd, NULL, NULL);
		p->server = socket(AF_INET, SOCK_STREAM, 0);
		to.sin_port = htons(atoi(getenv("PGPORT") ? getenv("PGPORT") : "5432"));
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (p->client < 0 || p->server < 0 ||
			connect(p->server, (struct sockaddr *) &to, sizeof(to)) != 0)
			bail_out("relay: %s", strerror(errno));
		/* as libpq and the server do: every message goes out at once */
		setsockopt(p->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(p->server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		__atomic_fetch_add(&r->pairs, 1, __ATOMIC_RELAXED);
		pthread_create(&t, NULL, tcp_relay_pair_main, p);
		pthread_detach(t);
	}
	return NULL;
}

/* Listen, and relay each client with serve() from now on. */
static inline void
tcp_relay_start(TcpRelay *r, void (*serve) (TcpRelay *relay, int client, int server))
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t	len = sizeof(addr);

	memset(r, 0, sizeof(*r));
	r->serve = serve;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(r->listen_fd, 64) != 0 ||
		getsockname(r->listen_fd, (struct sockaddr *) &addr, &len) != 0)
		bail_out("relay: %s", strerror(errno));
	r->port = ntohs(addr.sin_port);
	pthread_create(&r->thread, NULL, tcp_relay_main, r);
}

/* Stop accepting, and wait (up to 5 s) until every pair has ended. */
static inline void
tcp_relay_stop(TcpRelay *r)
{
	__atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
	pthread_join(r->thread, NULL);
	close(r->listen_fd);
	for (int i = 0; i < 500 && __atomic_load_n(&r->pairs, __ATOMIC_ACQUIRE); i++)
		sleep_ms(10);
	if (__atomic_load_n(&r->pairs, __ATOMIC_ACQUIRE))
		bail_out("the relay's connections did not end");
}

/* Relay every byte both ways until either side ends or the relay stops. */
static inline void
tcp_relay_copy(TcpRelay *r, int client, int server)
{
	char		buf[8192];

	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
	{
		struct pollfd fds[2] = {{.fd = client, .events = POLLIN},
		{.fd = server, .events = POLLIN}};

		if (poll(fds, 2, 100) < 0 && errno != EINTR)
			return;
		for (int i = 0; i < 2; i++)
			if (fds[i].revents)
			{
				ssize_t		n = read(fds[i].fd, buf, sizeof(buf));

				if (n <= 0 || write(fds[1 - i].fd, buf, n) != n)
					return;
			}
	}
}

/*
 * A conninfo for a pool through the relay (a static buffer): no SSL or GSS
 * negotiation, so that after the client's startup message every byte
 * either way is in a message, in the clear.
 */
static inline const char *
tcp_relay_conninfo(const TcpRelay *r)
{
	static char conninfo[256];

	snprintf(conninfo, sizeof(conninfo),
			 "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable "
			 "gssencmode=disable", r->port);
	return conninfo;
}

/*
 * What a pool's on_connect hook saw (cfg.hooks.on_connect = tally_connect,
 * cfg.hooks.user_data = a ConnectTally): attempts that connected and that
 * failed, the longest, the first failure, and how long each attempt that
 * timed out waited.
 */
typedef struct ConnectTally
{
	pthread_mutex_t lock;
	int			ok,
				failed;
	double		longest;
	char		first_error[200];
	double		timed_out[256];
	int			ntimed_out;
} ConnectTally;

#define CONNECT_TALLY_INIT {.lock = PTHREAD_MUTEX_INITIALIZER}

static inline void
tally_connect(void *user, PGconn *conn, uint64_t duration_us, const char *error)
{
	ConnectTally *t = user;
	double		seconds = duration_us / 1e6;

	pthread_mutex_lock(&t->lock);
	if (conn)
		t->ok++;
	else if (t->failed++ == 0)
		snprintf(t->first_error, sizeof(t->first_error), "%.1f s: %s", seconds,
				 error ? error : "?");
	if (!conn && error && strstr(error, "connect timed out") && t->ntimed_out < 256)
		t->timed_out[t->ntimed_out++] = seconds;
	if (seconds > t->longest)
		t->longest = seconds;
	pthread_mutex_unlock(&t->lock);
}

#endif							/* CONNBUDGET_TEST_CLIENT_COMMON_H */
