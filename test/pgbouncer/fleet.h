/*
 * fleet.h -- helpers for the programs that drive a fleet of PgBouncers and
 * their connbudget-pgbouncer controllers through fleet.sh: the pgbouncer
 * test (pgbouncer_test.c) and the convergence benchmark (converge.c).
 *
 * Pod I is namespace I: its PgBouncer listens on NET.I.2:6432 and has its
 * admin console in $CB_FLEET_DIR/bI; its controller logs to
 * $CB_FLEET_DIR/cI.log.  The fleet serves application "api" (role app,
 * database appdb).  fleet_init() reads the environment that
 * test/pgbouncer/run or bench/pgbouncer.sh exports.
 */
#ifndef CONNBUDGET_TEST_FLEET_H
#define CONNBUDGET_TEST_FLEET_H

#include "pgtest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define NPODS 3

static const char *fleet_dir;
static const char *net;			/* "10.S" */
static PGconn *db;				/* the superuser, in the database of the limits */

/* Read the fleet's environment, connect, write the pgbench script. */
static inline void
fleet_init(void)
{
	char		path[512];
	FILE	   *f;

	fleet_dir = getenv("CB_FLEET_DIR");
	net = getenv("CB_FLEET_NET");
	if (!fleet_dir || !net || !getenv("CB_FLEET_SH") || !getenv("CB_FLEET_CONTROLLER"))
		bail_out("run through test/pgbouncer/run or bench/pgbouncer.sh");
	db = pg_connect_or_bail("application_name=fleet");
	snprintf(path, sizeof(path), "%s/sleep.sql", fleet_dir);
	f = fopen(path, "w");
	if (!f)
		bail_out("cannot write %s", path);
	fputs("SELECT pg_sleep(0.01);\n", f);
	fclose(f);
	chmod(path, 0644);
}

/* ---- the fleet ---- */

/* Run a command of fleet.sh, made like printf; its status (0 on success). */
#define fleet(fmt, ...) shell("bash '%s' " fmt, getenv("CB_FLEET_SH"), ##__VA_ARGS__)

/* Stop controller i with a signal; its exit status (-1: still running). */
static inline int
controller_stop(int i, const char *sig)
{
	char		cmd[512],
				out[64] = "";
	FILE	   *p;

	snprintf(cmd, sizeof(cmd), "bash '%s' controller-stop %d %s", getenv("CB_FLEET_SH"), i, sig);
	p = popen(cmd, "r");
	if (p == NULL || fgets(out, sizeof(out), p) == NULL)
		out[0] = '\0';
	if (p)
		pclose(p);
	return out[0] >= '0' && out[0] <= '9' ? atoi(out) : -1;
}

static inline pid_t
read_pid(const char *fmt, int i)
{
	char		path[512];
	FILE	   *f;
	long		pid = 0;

	snprintf(path, sizeof(path), fmt, fleet_dir, i);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t) pid;
}

static inline int
controller_alive(int i)
{
	pid_t		pid = read_pid("%s/c%d.pid", i);

	return pid > 0 && kill(pid, 0) == 0;
}

/* Lines of the log $CB_FLEET_DIR/name containing text (0 if none). */
static inline int
log_file_count(const char *name, const char *text)
{
	char		path[512],
				line[4096];
	FILE	   *f;
	int			n = 0;

	snprintf(path, sizeof(path), "%s/%s", fleet_dir, name);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

/* Lines of controller i's log containing text. */
static inline int
log_count(int i, const char *text)
{
	char		name[32];

	snprintf(name, sizeof(name), "c%d.log", i);
	return log_file_count(name, text);
}

/* Wait until controller i's log has at least n lines with text. */
static inline int
wait_log(int i, const char *text, int n, int timeout_ms)
{
	double		deadline = now_seconds() + timeout_ms / 1000.0;

	while (log_count(i, text) < n && now_seconds() < deadline)
		sleep_ms(20);
	return log_count(i, text) >= n;
}

/* Wait until the log $CB_FLEET_DIR/name has a line with text. */
static inline int
wait_log_file(const char *name, const char *text, int timeout_ms)
{
	double		deadline = now_seconds() + timeout_ms / 1000.0;

	while (log_file_count(name, text) < 1 && now_seconds() < deadline)
		sleep_ms(20);
	return log_file_count(name, text) >= 1;
}

/* ---- PgBouncer ---- */

/* A setting of PgBouncer i (SHOW CONFIG), "" if unreachable. */
static inline const char *
bouncer_setting(int i, const char *key)
{
	static char value[64];
	char		conninfo[512];
	PGconn	   *conn;
	PGresult   *res;

	value[0] = '\0';
	snprintf(conninfo, sizeof(conninfo),
			 "host=%s/b%d port=6432 dbname=pgbouncer user=pgbouncer connect_timeout=5",
			 fleet_dir, i);
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) == CONNECTION_OK)
	{
		res = PQexec(conn, "SHOW CONFIG");
		for (int r = 0; PQresultStatus(res) == PGRES_TUPLES_OK && r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), key) == 0)
				snprintf(value, sizeof(value), "%s", PQgetvalue(res, r, 1));
		PQclear(res);
	}
	PQfinish(conn);
	return value;
}

/* PgBouncer i's default_pool_size, -1 if unreachable. */
static inline int
pool_size(int i)
{
	const char *v = bouncer_setting(i, "default_pool_size");

	return v[0] ? atoi(v) : -1;
}

static inline const char *
lifetime(int i)
{
	static char value[2][64];

	snprintf(value[i % 2], sizeof(value[0]), "%s", bouncer_setting(i, "server_lifetime"));
	return value[i % 2];
}

static inline int
admin_command(int i, const char *sql)
{
	char		conninfo[512];
	PGconn	   *conn;
	PGresult   *res;
	int			done = 0;

	snprintf(conninfo, sizeof(conninfo),
			 "host=%s/b%d port=6432 dbname=pgbouncer user=pgbouncer connect_timeout=5",
			 fleet_dir, i);
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) == CONNECTION_OK)
	{
		res = PQexec(conn, sql);
		done = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
	}
	PQfinish(conn);
	return done;
}

/* A query through PgBouncer i answers (tries for up to timeout_ms). */
static inline int
query_through(int i, int timeout_ms)
{
	char		conninfo[512];
	double		deadline = now_seconds() + timeout_ms / 1000.0;

	snprintf(conninfo, sizeof(conninfo),
			 "host=%s.%d.2 port=6432 dbname=appdb user=app application_name=api connect_timeout=5",
			 net, i);
	do
	{
		PGconn	   *conn = PQconnectdb(conninfo);
		int			answered = 0;

		if (PQstatus(conn) == CONNECTION_OK)
		{
			PGresult   *res = PQexec(conn, "SELECT 42");

			answered = PQresultStatus(res) == PGRES_TUPLES_OK &&
				strcmp(PQgetvalue(res, 0, 0), "42") == 0;
			PQclear(res);
		}
		PQfinish(conn);
		if (answered)
			return 1;
		sleep_ms(100);
	} while (now_seconds() < deadline);
	return 0;
}

/* ---- the server's view ---- */

typedef struct Pod
{
	int			live;
	int			share;
	int			demand;
	int			connections;	/* connbudget.pods */
	int			backends;		/* pg_stat_activity, by address */
} Pod;

/*
 * Every pod of api (indexed by namespace, 1..NPODS) with its backends in
 * pg_stat_activity (client backends of role app from its address: its
 * PgBouncer's server connections and its controller's); returns the
 * backends of role app from the fleet's addresses in all.
 */
static inline int
read_pods(Pod pods[NPODS + 1])
{
	char		sql[1024];
	PGresult   *res;
	int			total;

	memset(pods, 0, sizeof(Pod) * (NPODS + 1));
	snprintf(sql, sizeof(sql),
			 "SELECT p.pod, p.share, p.demand, p.connections, "
			 "  (SELECT count(*) FROM pg_stat_activity a WHERE a.backend_type = 'client backend' "
			 "   AND a.usename = 'app' AND host(a.client_addr) = p.pod), "
			 "  (SELECT count(*) FROM pg_stat_activity a WHERE a.backend_type = 'client backend' "
			 "   AND a.usename = 'app' AND a.client_addr << '%s.0.0/16') "
			 "FROM connbudget.pods p WHERE p.application_name = 'api' "
			 "UNION ALL SELECT '', 0, 0, 0, 0, "
			 "  (SELECT count(*) FROM pg_stat_activity a WHERE a.backend_type = 'client backend' "
			 "   AND a.usename = 'app' AND a.client_addr << '%s.0.0/16')", net, net);
	res = PQexec(db, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		bail_out("reading the pods failed: %s", PQerrorMessage(db));
	total = atoi(PQgetvalue(res, PQntuples(res) - 1, 5));
	for (int r = 0; r < PQntuples(res) - 1; r++)
	{
		int			i;
		char		prefix[32];

		snprintf(prefix, sizeof(prefix), "%s.", net);
		if (strncmp(PQgetvalue(res, r, 0), prefix, strlen(prefix)) != 0)
			continue;
		i = atoi(PQgetvalue(res, r, 0) + strlen(prefix));
		if (i < 1 || i > NPODS)
			continue;
		pods[i].live = 1;
		pods[i].share = atoi(PQgetvalue(res, r, 1));
		pods[i].demand = atoi(PQgetvalue(res, r, 2));
		pods[i].connections = atoi(PQgetvalue(res, r, 3));
		pods[i].backends = atoi(PQgetvalue(res, r, 4));
	}
	PQclear(res);
	return total;
}

/* Wait until the live pods' shares are want[1..NPODS] (0: not live). */
static inline double
wait_shares(const int want[NPODS + 1], int timeout_ms)
{
	double		start = now_seconds();
	Pod			pods[NPODS + 1];

	for (;;)
	{
		int			same = 1;

		read_pods(pods);
		for (int i = 1; i <= NPODS; i++)
			same &= want[i] == 0 ? !pods[i].live : pods[i].live && pods[i].share == want[i];
		if (same)
			return (now_seconds() - start) * 1000;
		if (now_seconds() - start > timeout_ms / 1000.0)
		{
			diag("  shares now: %d/%d/%d (live %d%d%d)", pods[1].share, pods[2].share,
				 pods[3].share, pods[1].live, pods[2].live, pods[3].live);
			return -1;
		}
		sleep_ms(20);
	}
}

/* ---- metrics ---- */

/* GET path from the metrics listener at ip:9127 into out: 0, else -1. */
static inline int
http_get_from(const char *ip, const char *path, char *out, size_t outlen)
{
	struct sockaddr_in addr;
	char		req[256];
	size_t		got = 0;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(9127);
	inet_pton(AF_INET, ip, &addr.sin_addr);
	out[0] = '\0';
	if (fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0)
	{
		if (fd >= 0)
			close(fd);
		return -1;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, ip);
	if (write(fd, req, strlen(req)) < 0)
	{
		close(fd);
		return -1;
	}
	for (;;)
	{
		ssize_t		r = read(fd, out + got, outlen - 1 - got);

		if (r <= 0 || got + (size_t) r >= outlen - 1)
			break;
		got += (size_t) r;
	}
	out[got] = '\0';
	close(fd);
	return 0;
}

/* GET path from controller i's metrics listener (NET.I.2:9127). */
static inline int
http_get(int i, const char *path, char *out, size_t outlen)
{
	char		ip[32];

	snprintf(ip, sizeof(ip), "%s.%d.2", net, i);
	return http_get_from(ip, path, out, outlen);
}

/* ---- pgbench through a PgBouncer ---- */

typedef struct Bench
{
	pid_t		pid;
	int			status;
	char		out[512];
} Bench;

static int	bench_seq = 0;

/* pgbench through PgBouncer i's [databases] entry dbname. */
static inline void
bench_start_db(Bench *b, int i, const char *dbname, int clients, int seconds)
{
	char		cmd[2048];

	snprintf(b->out, sizeof(b->out), "%s/pgbench.%d.%d.out", fleet_dir, i, ++bench_seq);
	snprintf(cmd, sizeof(cmd),
			 "PGAPPNAME=api exec pgbench -n -M extended -c %d -j 2 -T %d -f '%s/sleep.sql' "
			 "-h %s.%d.2 -p 6432 -U app %s >'%s' 2>&1",
			 clients, seconds, fleet_dir, net, i, dbname, b->out);
	fflush(stdout);
	b->pid = fork();
	if (b->pid < 0)
		bail_out("fork: %s", strerror(errno));
	if (b->pid == 0)
	{
		execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
		_exit(127);
	}
	b->status = -1;
}

static inline void
bench_start(Bench *b, int i, int clients, int seconds)
{
	bench_start_db(b, i, "appdb", clients, seconds);
}

static inline int
bench_done(Bench *b)
{
	int			st;

	if (b->status >= 0)
		return 1;
	if (waitpid(b->pid, &st, WNOHANG) == b->pid)
	{
		b->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		return 1;
	}
	return 0;
}

/*
 * Wait for pgbench; the transactions it processed, or -1 if it failed:
 * its exit status, a failed transaction or an aborted client.  why says
 * what pgbench said.
 */
static inline long
bench_wait(Bench *b, char *why, size_t whylen)
{
	FILE	   *f;
	char		line[1024];
	long		processed = -1,
				failed = -1;
	int			aborted = 0;

	while (!bench_done(b))
		sleep_ms(50);
	why[0] = '\0';
	f = fopen(b->out, "r");
	while (f && fgets(line, sizeof(line), f))
	{
		sscanf(line, "number of transactions actually processed: %ld", &processed);
		sscanf(line, "number of failed transactions: %ld", &failed);
		if (strstr(line, "aborted") || strstr(line, "error"))
		{
			aborted++;
			if (!why[0])
				snprintf(why, whylen, "%s", line);
		}
	}
	if (f)
		fclose(f);
	if (b->status != 0 || failed != 0 || aborted > 0)
	{
		if (!why[0])
			snprintf(why, whylen, "exit status %d, %ld failed", b->status, failed);
		return -1;
	}
	return processed;
}

#endif							/* CONNBUDGET_TEST_FLEET_H */
