/*
 * pgtest.h -- helpers for the C tests that talk to a real PostgreSQL server.
 *
 * The test runner (test/run) starts a throwaway cluster and exports PGHOST,
 * PGPORT, PGUSER, PGDATABASE, CB_SOCKET_DIR (its Unix socket directory),
 * CB_CLUSTER_DIR (its directory, with data/ and server.log) and PG_BINDIR.
 * Connections made here use those, plus per-call keyword/value pairs.
 */
#ifndef CONNBUDGET_TEST_PGTEST_H
#define CONNBUDGET_TEST_PGTEST_H

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "clock.h"
#include "tap.h"

/* ---- connections ---- */

/*
 * Connect with the environment's defaults plus the "key=value" pairs of a
 * NULL-terminated array.  On failure, returns NULL and copies the server's
 * SQLSTATE (or "" if none, e.g. a network error) and message into the
 * outputs.
 */
static inline PGconn *
pg_connect_pairs(char *sqlstate, char *message, size_t message_len, const char *const *pairs)
{
	const char *keys[32];
	const char *values[32];
	int			n = 0;
	char		buffers[32][1024];
	PGconn	   *conn;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;

	for (; pairs[n] != NULL && n < 30; n++)
	{
		const char *eq = strchr(pairs[n], '=');
		size_t		klen = eq ? (size_t) (eq - pairs[n]) : strlen(pairs[n]);

		snprintf(buffers[n], sizeof(buffers[n]), "%.*s", (int) klen, pairs[n]);
		keys[n] = buffers[n];
		values[n] = eq ? eq + 1 : "";
	}
	keys[n] = "connect_timeout";
	values[n++] = "30";
	keys[n] = NULL;
	values[n] = NULL;

	if (sqlstate)
		sqlstate[0] = '\0';
	if (message && message_len)
		message[0] = '\0';

	/*
	 * Connect asynchronously so that verbose error messages can be asked
	 * for before the server answers: a refused connection's SQLSTATE is
	 * only available in the message text.
	 */
	conn = PQconnectStartParams(keys, values, 1);
	if (conn == NULL)
		return NULL;
	PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
	while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
		   st != PGRES_POLLING_FAILED)
	{
		struct pollfd pfd = {.fd = PQsocket(conn)};

		pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		if (pfd.fd >= 0 && poll(&pfd, 1, 30000) < 0 && errno != EINTR)
			break;
		st = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		const char *msg = PQerrorMessage(conn);
		const char *p = strstr(msg, "FATAL:  ");

		if (p && sqlstate && strlen(p) > 13 && p[13] == ':')
			snprintf(sqlstate, 6, "%.5s", p + 8);
		if (message && message_len)
			snprintf(message, message_len, "%s", msg);
		PQfinish(conn);
		return NULL;
	}
	PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
	return conn;
}

/* Add the pairs of a NULL-terminated argument list to pairs[n...]. */
static inline void
pg_pairs_add(const char **pairs, int n, va_list ap)
{
	while ((pairs[n] = va_arg(ap, const char *)) != NULL && n < 30)
		n++;
	pairs[n] = NULL;
}

/* As pg_connect_pairs(), with the pairs as arguments (NULL terminated). */
static inline PGconn *
pg_connect_ex(char *sqlstate, char *message, size_t message_len, ...)
{
	const char *pairs[32];
	va_list		ap;

	va_start(ap, message_len);
	pg_pairs_add(pairs, 0, ap);
	va_end(ap);
	return pg_connect_pairs(sqlstate, message, message_len, pairs);
}

/*
 * Connect as a pool's connection does: as role (NULL: the environment's
 * user), of application app (NULL: none), in pod (connbudget.pod; NULL:
 * none), plus further "key=value" pairs (NULL terminated); otherwise as
 * pg_connect_ex().
 */
static inline PGconn *
pg_connect_pod(char *sqlstate, char *message, size_t message_len,
			   const char *role, const char *app, const char *pod, ...)
{
	char		u[1024],
				a[1024],
				o[1024];
	const char *pairs[32];
	int			n = 0;
	va_list		ap;

	if (role)
	{
		snprintf(u, sizeof(u), "user=%s", role);
		pairs[n++] = u;
	}
	if (app)
	{
		snprintf(a, sizeof(a), "application_name=%s", app);
		pairs[n++] = a;
	}
	if (pod)
	{
		snprintf(o, sizeof(o), "options=-c connbudget.pod=%s", pod);
		pairs[n++] = o;
	}
	va_start(ap, pod);
	pg_pairs_add(pairs, n, ap);
	va_end(ap);
	return pg_connect_pairs(sqlstate, message, message_len, pairs);
}

#define pg_connect(...) pg_connect_ex(NULL, NULL, 0, __VA_ARGS__, (const char *) NULL)

/* Connect or stop the test: for setup connections. */
#define pg_connect_or_bail(...) \
	({ \
		char st_[6], msg_[2048]; \
		PGconn *c_ = pg_connect_ex(st_, msg_, sizeof(msg_), __VA_ARGS__, (const char *) NULL); \
		if (c_ == NULL) \
			bail_out("cannot connect: %s", msg_); \
		c_; \
	})

/* Close each connection of conns[0..n-1] that is open (not NULL). */
static inline void
pg_finish_all(PGconn **conns, int n)
{
	for (int i = 0; i < n; i++)
		if (conns[i])
			PQfinish(conns[i]);
}

/* The superuser's connection ("admin") to the server on this port of the
   test's host, or NULL. */
static inline PGconn *
pg_connect_port(const char *port)
{
	char		p[32];

	snprintf(p, sizeof(p), "port=%s", port);
	return pg_connect_ex(NULL, NULL, 0, p, "application_name=admin", (const char *) NULL);
}

/* Run a statement that must succeed. */
static inline void
pg_exec(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		bail_out("statement failed: %s\n# %s", sql, PQerrorMessage(conn));
	PQclear(res);
}

/*
 * Run a statement expected to fail; returns its SQLSTATE ("" if it
 * succeeded) and copies the primary message.
 */
static inline const char *
pg_exec_error(PGconn *conn, const char *sql, char *message, size_t len)
{
	static __thread char sqlstate[6];
	PGresult   *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	sqlstate[0] = '\0';
	if (message && len)
		message[0] = '\0';
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
	{
		const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		snprintf(sqlstate, sizeof(sqlstate), "%s", s ? s : "?????");
		if (message && len)
		{
			const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
			const char *d = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);

			snprintf(message, len, "%s%s%s", m ? m : "", d ? " DETAIL: " : "",
					 d ? d : "");
		}
	}
	PQclear(res);
	return sqlstate;
}

/* First column of the first row as text (static buffer), or NULL. */
static inline const char *
pg_value(PGconn *conn, const char *sql)
{
	static __thread char value[4096];
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		bail_out("query failed: %s\n# %s", sql, PQerrorMessage(conn));
	if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		return NULL;
	}
	snprintf(value, sizeof(value), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

static inline long
pg_long(PGconn *conn, const char *sql)
{
	const char *v = pg_value(conn, sql);

	return v ? atol(v) : -1;
}

/*
 * Poll a query until it returns "want" or the timeout passes; returns the
 * last value seen (so a test can report it).
 */
static inline long
pg_wait_for(PGconn *conn, const char *sql, long want, int timeout_ms)
{
	double		deadline = now_seconds() + timeout_ms / 1000.0;
	long		got;

	for (;;)
	{
		got = pg_long(conn, sql);
		if (got == want || now_seconds() > deadline)
			return got;
		sleep_ms(20);
	}
}

/* max_size of pool_share(demand) on conn; demand is SQL ("NULL", "3"). */
static inline long
pod_share(PGconn *conn, const char *demand)
{
	char		sql[128];

	snprintf(sql, sizeof(sql), "SELECT max_size FROM connbudget.pool_share(%s)", demand);
	return pg_long(conn, sql);
}

/*
 * The share a pod is told once the allocator has published the others'
 * latest changes: pool_share() answers from the latest publication, which
 * follows a change within one publish period, so poll for it (up to 5 s);
 * the last answer.
 */
static inline long
pod_share_settled(PGconn *conn, const char *demand, long want)
{
	char		sql[128];

	snprintf(sql, sizeof(sql), "SELECT max_size FROM connbudget.pool_share(%s)", demand);
	return pg_wait_for(conn, sql, want, 5000);
}

/* ---- the cluster ---- */

static inline const char *
cluster_dir(void)
{
	const char *dir = getenv("CB_CLUSTER_DIR");

	if (dir == NULL)
		bail_out("CB_CLUSTER_DIR is not set: run this test through test/run");
	return dir;
}

/*
 * The pid of the test cluster's postmaster child whose process title
 * starts with title ("postgres: connbudget allocator"), or 0.
 */
static inline long
postmaster_child(const char *title)
{
	char		path[1100],
				line[512];
	long		postmaster,
				found = 0;
	FILE	   *f;
	DIR		   *proc;
	struct dirent *e;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", cluster_dir());
	if ((f = fopen(path, "r")) == NULL || fgets(line, sizeof(line), f) == NULL)
		bail_out("cannot read %s", path);
	fclose(f);
	postmaster = atol(line);
	if ((proc = opendir("/proc")) == NULL)
		bail_out("cannot read /proc");
	while (!found && (e = readdir(proc)) != NULL)
	{
		long		ppid = 0;
		size_t		n;

		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(line, sizeof(line), f) && strrchr(line, ')'))
			sscanf(strrchr(line, ')') + 2, "%*c %ld", &ppid);
		fclose(f);
		if (ppid != postmaster)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		n = fread(line, 1, sizeof(line) - 1, f);
		line[n] = '\0';
		fclose(f);
		if (strncmp(line, title, strlen(title)) == 0)
			found = atol(e->d_name);
	}
	closedir(proc);
	return found;
}

/*
 * Run a pg_ctl action (restart, reload, stop...) on the cluster in dir;
 * "-W restart" returns without waiting for the server to accept
 * connections, "-m immediate stop" stops it at once.
 */
static inline int
cluster_ctl_in(const char *dir, const char *action)
{
	char		cmd[4096];
	const char *bindir = getenv("PG_BINDIR");

	snprintf(cmd, sizeof(cmd),
			 "'%s/pg_ctl' -D '%s/data' -l '%s/server.log' -w -t 60 -m fast %s >/dev/null 2>&1",
			 bindir ? bindir : "", dir, dir, action);
	return system(cmd);
}

/* cluster_ctl_in() on the test cluster. */
static inline int
cluster_ctl(const char *action)
{
	return cluster_ctl_in(cluster_dir(), action);
}

/* Run a shell command made like printf; system()'s status (0 on success). */
static inline int
shell(const char *fmt, ...)
{
	char		cmd[4096];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

/*
 * Run a function of test/lib/cluster.sh (cluster_create, cluster_start,
 * cluster_standby, cluster_promote, cluster_destroy...), its call a
 * format string and arguments as for shell(); its status (0 on success).
 */
#define cluster_sh(fmt, ...) \
	shell("bash -c \"source test/lib/cluster.sh && " fmt "\"", ##__VA_ARGS__)

/* The first line of a file, without its newline, into out; 0 if it has none. */
static inline int
read_first_line(const char *path, char *out, size_t len)
{
	FILE	   *f = fopen(path, "r");
	int			found = f != NULL && fgets(out, (int) len, f) != NULL;

	if (f)
		fclose(f);
	if (!found)
		out[0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return found;
}

/* The port of the cluster test/lib/cluster.sh started in dir, into port. */
static inline void
cluster_port(const char *dir, char *port, size_t len)
{
	char		path[1100];

	snprintf(path, sizeof(path), "%.1000s/port", dir);
	if (!read_first_line(path, port, len))
		bail_out("no port for the cluster in %s", dir);
}

/* End a backend with pg_terminate_backend() and wait until it is gone. */
static inline void
pg_terminate_and_wait(PGconn *conn, int pid)
{
	char		sql[128];

	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pid);
	pg_exec(conn, sql);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
	pg_wait_for(conn, sql, 0, 10000);
}

/* How many lines of the file at path contain this text (after byte offset "from")? */
static inline int
file_lines_containing(const char *path, long from, const char *text)
{
	FILE	   *f = fopen(path, "r");
	char		line[8192];
	int			n = 0;

	if (f == NULL)
		return 0;
	fseek(f, from, SEEK_SET);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, text) != NULL)
			n++;
	fclose(f);
	return n;
}

/* How many lines of the server log contain this text (after byte offset "from")? */
static inline int
server_log_count(long from, const char *text)
{
	char		path[1024];

	snprintf(path, sizeof(path), "%s/server.log", cluster_dir());
	return file_lines_containing(path, from, text);
}

/* Does the server log contain this text (after byte offset "from")? */
static inline int
server_log_contains(long from, const char *text)
{
	return server_log_count(from, text) > 0;
}

static inline long
server_log_size(void)
{
	char		path[1024];
	FILE	   *f;
	long		size;

	snprintf(path, sizeof(path), "%s/server.log", cluster_dir());
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fclose(f);
	return size;
}

/* ---- many connections from separate processes ---- */

/*
 * A crowd of child processes, each holding one connection.  All children
 * wait on a start pipe so that their connects happen at once; each reports
 * its outcome (SQLSTATE, "00000" for success) on a result pipe and then
 * holds its connection until the crowd is released.
 */
typedef struct Crowd
{
	int			n;
	pid_t	   *pids;
	int			start_pipe[2];
	int			result_pipe[2];
	int			release_pipe[2];
	char	  (*outcome)[6];
	int			admitted;
	int			refused;		/* 53300 */
	int			failed_other;
	char		sample_message[4096];
} Crowd;

static inline void
crowd_start(Crowd *crowd, int n, const char *application_name,
			const char *options, const char *user)
{
	memset(crowd, 0, sizeof(*crowd));
	crowd->n = n;
	crowd->pids = calloc(n, sizeof(pid_t));
	crowd->outcome = calloc(n, sizeof(*crowd->outcome));
	if (pipe(crowd->start_pipe) || pipe(crowd->result_pipe) ||
		pipe(crowd->release_pipe))
		bail_out("pipe: %s", strerror(errno));
	fflush(stdout);
	for (int i = 0; i < n; i++)
	{
		pid_t		pid = fork();

		if (pid < 0)
			bail_out("fork: %s", strerror(errno));
		if (pid == 0)
		{
			char		go;
			char		app[256],
						opt[256],
						usr[256],
						st[6],
						msg[2048];
			char		report[6 + 2048];
			PGconn	   *conn;

			close(crowd->start_pipe[1]);
			close(crowd->release_pipe[1]);
			close(crowd->result_pipe[0]);
			if (read(crowd->start_pipe[0], &go, 1) < 0)
				_exit(2);
			snprintf(app, sizeof(app), "application_name=%s", application_name);
			snprintf(opt, sizeof(opt), "options=%s", options ? options : "");
			snprintf(usr, sizeof(usr), "user=%s", user ? user : "postgres");
			conn = pg_connect_ex(st, msg, sizeof(msg), app, opt, usr,
								 (const char *) NULL);
			memset(report, 0, sizeof(report));
			memcpy(report, conn ? "00000" : (st[0] ? st : "XXXXX"), 5);
			if (!conn)
				snprintf(report + 6, 2048, "%s", msg);
			if (write(crowd->result_pipe[1], report, sizeof(report)) < 0)
				_exit(2);
			/* hold the connection until released (or the parent dies) */
			if (read(crowd->release_pipe[0], &go, 1) < 0)
				_exit(2);
			if (conn)
				PQfinish(conn);
			_exit(0);
		}
		crowd->pids[i] = pid;
	}
	close(crowd->start_pipe[0]);
	close(crowd->release_pipe[0]);
	close(crowd->result_pipe[1]);

	/* go: closing the start pipe wakes every child at the same moment */
	close(crowd->start_pipe[1]);
	for (int i = 0; i < n; i++)
	{
		char		report[6 + 2048];
		size_t		got = 0;

		while (got < sizeof(report))
		{
			ssize_t		r = read(crowd->result_pipe[0], report + got,
								 sizeof(report) - got);

			if (r <= 0)
				bail_out("crowd: lost a child");
			got += r;
		}
		memcpy(crowd->outcome[i], report, 5);
		crowd->outcome[i][5] = '\0';
		if (strcmp(crowd->outcome[i], "00000") == 0)
			crowd->admitted++;
		else if (strcmp(crowd->outcome[i], "53300") == 0)
		{
			crowd->refused++;
			if (!crowd->sample_message[0])
				snprintf(crowd->sample_message, sizeof(crowd->sample_message),
						 "%s", report + 6);
		}
		else
		{
			crowd->failed_other++;
			if (!crowd->sample_message[0])
				snprintf(crowd->sample_message, sizeof(crowd->sample_message),
						 "%s: %s", crowd->outcome[i], report + 6);
		}
	}
}

/* Let every child close its connection and exit. */
static inline void
crowd_release(Crowd *crowd)
{
	close(crowd->release_pipe[1]);
	for (int i = 0; i < crowd->n; i++)
		waitpid(crowd->pids[i], NULL, 0);
	close(crowd->result_pipe[0]);
	free(crowd->pids);
	free(crowd->outcome);
}

#endif							/* CONNBUDGET_TEST_PGTEST_H */
