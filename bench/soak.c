/*
 * soak.c -- hundreds of pods of several applications churn against one
 * server for an hour (or any time), and nothing may be lost.
 *
 *   soak SECONDS REPORT
 *
 * Run by `bash bench/run soak [SECONDS]` against a throwaway cluster it
 * created (password logins, connbudget preloaded and created): PGHOST and
 * PGPORT name it, CB_CLUSTER_DIR is its directory (data/, server.log) and
 * PG_BINDIR holds pg_ctl.  REPORT is the markdown file the results go to.
 * CB_TEST_SEED repeats a run's schedule (the seed is printed).
 *
 * The fleet.  Four applications: soak-api and soak-web with a minimum, a
 * cap and a weight; soak-secure bound to its role (application_limits.roles);
 * soak-free without a row (its pods give pod ids, so it is governed with the
 * default limits).  Each application's pods log in as its own role, none a
 * superuser, with a password (scram-sha-256).  Pods live in pod processes
 * forked from this one, several pods per process, so that killing a process
 * kills them all, as a node dying does; most pods are C pools
 * (connbudget_pool.h) whose worker threads run short queries and sometimes
 * hold a connection for a while, the rest speak the protocol themselves over
 * plain libpq (docs/protocol.md: version 2 with SET connbudget.demand / SHOW
 * connbudget.share or set_config() and current_setting(), version 1 with
 * connbudget.pool_share()) and hold about their share.  One more process,
 * the pool process, hosts pools for the whole run; its memory is measured.
 *
 * Events, on a schedule drawn from the seed: pods join and leave cleanly (a
 * C pool closes, a protocol pod sets its demand to 'leave'); the population
 * wanders between two bounds; pod processes are killed with SIGKILL;
 * backends are ended with pg_terminate_backend(); limits change (caps up and
 * down, minimums, weights, a row deleted and put back, a binding changed:
 * always to roles the pods' role is, or is a member of); now and then an
 * invalid change must be refused with the error that names its rule and
 * change nothing; settings change with ALTER SYSTEM and pg_reload_conf()
 * (refresh_interval, pod_ttl, reserved_connections); the server restarts
 * with pg_ctl restart -m fast, sometimes -m immediate, and the pools must
 * come back by themselves.
 *
 * The monitor (a superuser connection of its own application) checks every
 * second, from the views and from pg_stat_activity, that no capped
 * application holds more than its cap and the governed connections no more
 * than the budget; after a cap or the budget was lowered the bound is, for a
 * grace window G, the highest one in force during the last G seconds (open
 * connections stay until the pools shrink: docs/enforcement.md), outside
 * such windows it is strict; and that every row of connbudget.slots is
 * consistent.  Every two seconds it checks that no pod that left or died is
 * still listed after its lease, and after a restart that every pod came back.
 * At the end the fleet quiets down, the counters must equal the backends,
 * every pool closes or its process is killed, the leases end, and every
 * table, slot, limit and setting must be as it was at the start.  Memory:
 * the pool process, and the allocator, the limits loader, the monitor's
 * backend and long-lived pool backends, each against a stated bound.
 *
 * Exits non-zero if any check failed.
 */
#define _GNU_SOURCE
#define CBPOOL_IMPLEMENTATION
#include "../client/connbudget_pool.h"
#include "bench.h"
#include "../test/lib/rnd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define lengthof(a) (sizeof(a) / sizeof((a)[0]))
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif
#ifndef SOAK_ASAN
#define SOAK_ASAN 0
#endif

/* ---- the fleet ---- */

enum
{
	APP_API, APP_WEB, APP_SECURE, APP_FREE, NAPPS
};

typedef struct AppDef
{
	const char *name;			/* application_name */
	const char *role;			/* its pods log in as this role */
	const char *tag;			/* pod id prefix */
	int			pick;			/* percent of new pods */
	bool		configured;		/* has a row (at the start) */
	int			min0,
				max0,
				weight0;
	const char *roles0;			/* the binding at the start, NULL: any role */
	int			cap_lo,
				cap_hi;			/* caps the churn picks from */
	int			min_hi;			/* minimums the churn picks from: 0..min_hi */
} AppDef;

static const AppDef apps[NAPPS] = {
	{"soak-api", "soak_api", "api", 30, true, 20, 90, 2, NULL, 40, 130, 30},
	{"soak-web", "soak_web", "web", 25, true, 10, 70, 1, NULL, 30, 110, 20},
	{"soak-secure", "soak_secure", "sec", 20, true, 5, 50, 1, "{soak_secure}", 20, 80, 15},
	{"soak-free", "soak_free", "free", 25, false, 0, -1, 1, NULL, 0, 0, 0},
};

/* bindings the churn moves between: each lets the application's own role in */
static const char *const secure_bindings[] = {
	"{soak_secure}", "{soak_secure_group}", "{soak_secure,soak_extra}",
	"{soak_extra,soak_secure_group}"
};
static const char *const api_bindings[] = {"", "{soak_api}"};

enum
{
	KIND_POOL, KIND_P2, KIND_P1, NKINDS
};
static const char *const kind_names[NKINDS] = {
	"C pool", "protocol 2", "protocol 1"
};

#define MONITOR_APP "soak-monitor"
#define CONTROL_APP "soak-control"

#define MAX_WORKERS 3
#define PROTO_MAX_CONNS 6
#define HOLD_MAX_MS 3000		/* longest a worker holds a connection */
#define POOL_PROCESS_PERMANENT 20	/* pools the pool process keeps all along */
#define POOL_PROCESS_CHURN 4	/* and pools it replaces now and then */
#define POP_LO 220				/* the live pods wander between these */
#define POP_HI 320
#define SERVER_WARMUP_S 60		/* a server process's first minute */
#define MEM_SAMPLE_S 5
#define RIDE_THROUGH_S 45		/* every pod is back this soon after a restart */

/*
 * How long a pod waits for one connect.  After a restart the whole fleet
 * connects at once, and the postmaster accepts and forks one backend at a
 * time: on a busy machine a dozen or two a second, so the last of some 300
 * connects waits its turn for many seconds.  A connect given up in the
 * queue still costs a fork when its turn comes, and its retry queues
 * again at the back; with a deadline shorter than the queue, most connects
 * are given up before they are served and the server forks for clients
 * that are gone.  So a pod waits as long as it may take to be back.  (The
 * C pool doubles the deadline after each attempt that timed out, but from
 * its default of 5 s that is 5 + 10 + 20 s of places lost in the queue: a
 * run with the default had 86 of 288 pods not back within 45 s.)
 */
#define POD_CONNECT_S RIDE_THROUGH_S

/* memory bounds (KiB) */
#define POOL_PROCESS_BOUND_KB 2048
#define SERVER_PROCESS_BOUND_KB 1024
#define LIKE_FOR_LIKE_BOUND_KB 1024

/* ---- counters shared by every process of the fleet ---- */

enum
{
	C_QUERIES, C_QUERY_ERRORS, C_ACQUIRES, C_ACQ_TIMEOUT, C_ACQ_UNAVAILABLE,
	C_ACQ_REFUSED, C_ACQ_OTHER, C_RUN_OK, C_RUN_NO_CONNECTION, C_RUN_FAILED, C_HOLDS,
	C_POOLS_OPENED, C_POOLS_CLOSED, C_POOL_OPEN_FAILED,
	C_P_CONNECTS, C_P_REFUSED, C_P_PERMANENT, C_P_CONNECT_ERRORS,
	C_P_REFRESHES, C_P_REFRESH_ERRORS, C_P_BAD_STATUS, C_P_BAD_ANSWER,
	C_P_LEAVES, C_P_ZERO,
	/* from cbpool_stats() of pools closed cleanly */
	C_S_CONNECTS, C_S_CONNECT_FAILURES, C_S_REFUSED, C_S_PERMANENT,
	C_S_CLOSED_BROKEN, C_S_CLOSED_OVER_SHARE, C_S_CLOSED_LIFETIME,
	C_S_BREAKER_OPENINGS, C_S_BUDGET_REFRESHES, C_S_BUDGET_ERRORS,
	C_S_MISUSE, C_S_LEAKS, C_S_ROLLBACKS,
	NCOUNTERS
};

/*
 * The pool's log messages are counted by id (the ids are the pool's; new
 * ones are learnt as they come).  These must never happen in this soak, and
 * neither may any message at the error level.
 */
static const char *const bad_log_ids[] = {
	"close-in-use", "misuse", "leak", "share-refused", "refused-permanently",
	"budget-invalid", "not-governed", "no-extension", "no-pool-session",
};
#define MAX_LOG_IDS 40

typedef struct Shared
{
	uint64_t	c[NCOUNTERS];
	char		log_id[MAX_LOG_IDS][32];
	uint64_t	log[MAX_LOG_IDS][4];	/* by level */
	int			nlog_ids;
	int			log_lock;
	int			printed;		/* lines of concern printed so far */
} Shared;

static Shared *sh;

#define COUNT(i) __atomic_add_fetch(&sh->c[(i)], 1, __ATOMIC_RELAXED)
#define ADD(i, n) __atomic_add_fetch(&sh->c[(i)], (n), __ATOMIC_RELAXED)

/* ---- small things ---- */

static double t_base;

/* seconds since the start */
static double
T(void)
{
	return now_seconds() - t_base;
}

typedef struct Rng
{
	uint64_t	s;
} Rng;

static uint64_t
rng_next(Rng *r)
{
	uint64_t	z = r->s += 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int
rng_below(Rng *r, int n)
{
	return n <= 1 ? 0 : (int) (rng_next(r) % (uint64_t) n);
}

/* uniform in [lo, hi] */
static double
rng_uniform(Rng *r, double lo, double hi)
{
	return lo + (hi - lo) * (double) (rng_next(r) >> 11) / (double) (1ull << 53);
}

/* the schedule's generator (rnd.h, seeded from CB_TEST_SEED) */
static int
pick(int n)
{
	return n <= 1 ? 0 : (int) rnd_below((uint32_t) n);
}

static double
uniform(double lo, double hi)
{
	return lo + (hi - lo) * (double) (rnd_u64() >> 11) / (double) (1ull << 53);
}

/* next time of an event with this mean interval: 0.2 to 1.8 times it */
static double
after(double mean)
{
	return T() + uniform(0.2 * mean, 1.8 * mean);
}

static bool
starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ======================================================================
 * The pod processes: each runs the pods it is told to, until told to exit
 * ====================================================================== */

typedef struct Pod Pod;
struct Pod
{
	int			index;			/* in the orchestrator's table: the pod id */
	char		id[48];
	int			app;
	int			kind;
	int			workers;
	int			max_size;
	int			lifetime_ms;
	int			db;				/* 0: soakdb, 1: postgres */
	uint64_t	seed;
	int			stop;
	cbpool	   *pool;
	pthread_t	threads[MAX_WORKERS];
	int			nthreads;
	Pod		   *next;
};

static int	quiet;				/* in a pod process: workers pause */
static const char *proc_label = "";

static const char *
db_name(int db)
{
	return db == 0 ? "soakdb" : "postgres";
}

static bool
log_id_bad(const char *id, int level)
{
	if (level == CBPOOL_LOG_ERROR)
		return true;
	for (size_t i = 0; i < sizeof(bad_log_ids) / sizeof(bad_log_ids[0]); i++)
		if (strcmp(bad_log_ids[i], id) == 0)
			return true;
	return false;
}

static void
soak_log(void *user, cbpool_log_level level, const char *id, const char *message)
{
	Pod		   *p = user;
	int			n = __atomic_load_n(&sh->nlog_ids, __ATOMIC_ACQUIRE),
				k;

	for (k = 0; k < n; k++)
		if (strcmp(sh->log_id[k], id) == 0)
			break;
	if (k == n)
	{
		/* a new id: add it under the lock shared by every process */
		while (__atomic_exchange_n(&sh->log_lock, 1, __ATOMIC_ACQUIRE))
			sched_yield();
		n = sh->nlog_ids;
		for (k = 0; k < n; k++)
			if (strcmp(sh->log_id[k], id) == 0)
				break;
		if (k == n && n < MAX_LOG_IDS)
		{
			snprintf(sh->log_id[n], sizeof(sh->log_id[n]), "%s", id);
			__atomic_store_n(&sh->nlog_ids, n + 1, __ATOMIC_RELEASE);
		}
		__atomic_store_n(&sh->log_lock, 0, __ATOMIC_RELEASE);
		if (k >= MAX_LOG_IDS)
			k = MAX_LOG_IDS - 1;
	}
	__atomic_add_fetch(&sh->log[k][level & 3], 1, __ATOMIC_RELAXED);
	if (log_id_bad(id, level) && __atomic_add_fetch(&sh->printed, 1, __ATOMIC_RELAXED) <= 40)
		fprintf(stderr, "soak: pod %s: pool log %s [%s]: %s\n", p->id,
				level == CBPOOL_LOG_ERROR ? "error" : level == CBPOOL_LOG_WARN ? "warning" : "info",
				id, message);
}

static void
count_acquire_failure(void)
{
	switch (cbpool_last_error())
	{
		case CBPOOL_ETIMEOUT:
			COUNT(C_ACQ_TIMEOUT);
			break;
		case CBPOOL_EUNAVAILABLE:
			COUNT(C_ACQ_UNAVAILABLE);
			break;
		case CBPOOL_EREFUSED:
			COUNT(C_ACQ_REFUSED);
			break;
		default:
			COUNT(C_ACQ_OTHER);
			break;
	}
}

/* sleep up to ms, in slices, returning early once the pod stops */
static void
nap(Pod *p, int ms)
{
	while (ms > 0 && !__atomic_load_n(&p->stop, __ATOMIC_RELAXED))
	{
		int			slice = ms < 100 ? ms : 100;

		sleep_ms(slice);
		ms -= slice;
	}
}

static bool
result_ok(PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

typedef struct RunArg
{
	int			row;
	int			value;
} RunArg;

static int
run_update(cbpool_tx *tx, void *arg)
{
	RunArg	   *a = arg;
	char		row[16],
				value[16];
	const char *params[2] = {row, value};
	PGresult   *res;
	int			rc;

	snprintf(row, sizeof(row), "%d", a->row);
	snprintf(value, sizeof(value), "%d", a->value);
	res = cbpool_tx_exec_params(tx, "UPDATE soak_counters SET n = $2 WHERE id = $1", 2, params);
	rc = cbpool_tx_check(tx, res) ? 0 : 1;
	PQclear(res);
	return rc;
}

/* one worker thread of a C pool pod */
static void *
pool_worker(void *arg)
{
	Pod		   *p = arg;
	Rng			rng = {p->seed ^ (uint64_t) (uintptr_t) pthread_self()};

	while (!__atomic_load_n(&p->stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn;
		PGresult   *res = NULL;
		int			r;
		char		param[32];
		const char *params[1] = {param};

		if (__atomic_load_n(&quiet, __ATOMIC_RELAXED))
		{
			nap(p, 100);
			continue;
		}
		r = rng_below(&rng, 100);
		if (r < 6)
		{
			/* an idempotent transaction with retry */
			RunArg		a = {rng_below(&rng, 64), rng_below(&rng, 1000000)};
			cbpool_run_opts opts;

			memset(&opts, 0, sizeof(opts));
			opts.idempotent = 1;
			opts.max_attempts = 3;
			opts.acquire_timeout_ms = 2000;
			r = cbpool_run(p->pool, run_update, &a, &opts);
			if (r == 0)
				COUNT(C_RUN_OK);
			else if (r < 0)
				COUNT(C_RUN_NO_CONNECTION);
			else
				COUNT(C_RUN_FAILED);
			nap(p, 100 + rng_below(&rng, 1400));
			continue;
		}
		conn = cbpool_acquire(p->pool, 2000);
		if (conn == NULL)
		{
			count_acquire_failure();
			nap(p, 50 + rng_below(&rng, 200));
			continue;
		}
		COUNT(C_ACQUIRES);
		if (r < 14)
		{
			/* hold the connection a while, busy on the server */
			snprintf(param, sizeof(param), "%.3f", rng_uniform(&rng, 0.3, (HOLD_MAX_MS - 500) / 1000.0));
			res = PQexecParams(conn, "SELECT pg_sleep($1::float8)", 1, NULL, params, NULL, NULL, 0);
			COUNT(C_HOLDS);
		}
		else if (r < 50)
			res = PQexec(conn, "SELECT 1");
		else if (r < 80)
		{
			snprintf(param, sizeof(param), "%d", 1 + rng_below(&rng, 1000));
			res = PQexecParams(conn, "SELECT v FROM soak_items WHERE id = $1", 1, NULL, params, NULL, NULL, 0);
		}
		else
		{
			snprintf(param, sizeof(param), "%d", 1 + rng_below(&rng, 1000));
			res = PQexecParams(conn, "SELECT count(*) FROM soak_items WHERE id <= $1", 1, NULL, params, NULL, NULL, 0);
		}
		if (result_ok(res))
			COUNT(C_QUERIES);
		else
			COUNT(C_QUERY_ERRORS);
		PQclear(res);
		cbpool_release(p->pool, conn);
		nap(p, 100 + rng_below(&rng, 1400));
	}
	return NULL;
}

/* ---- protocol pods: the protocol spoken over plain libpq ---- */

/* a server's notices (a FATAL before a terminated backend goes) are expected */
static void
ignore_notice(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

/*
 * Connect as the pod; on failure *sqlstate is the refusal's SQLSTATE ("" if
 * the server gave none) and *retry_ms the pace a 53300 states (or 0).
 */
static PGconn *
proto_connect(Pod *p, char *sqlstate, int *retry_ms)
{
	char		options[96],
				password[64];
	const char *keys[] = {"dbname", "user", "password", "application_name", "options",
	"connect_timeout", NULL};
	const char *values[7];
	PGconn	   *conn;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	double		deadline = now_seconds() + POD_CONNECT_S;

	snprintf(options, sizeof(options), "-c connbudget.pod=%s", p->id);
	snprintf(password, sizeof(password), "pw-%s", apps[p->app].role);
	values[0] = p->kind == KIND_P1 ? "postgres" : db_name(p->db);
	values[1] = apps[p->app].role;
	values[2] = password;
	values[3] = apps[p->app].name;
	values[4] = options;
	values[5] = "10";
	values[6] = NULL;
	sqlstate[0] = '\0';
	*retry_ms = 0;
	conn = PQconnectStartParams(keys, values, 0);
	if (conn == NULL)
		return NULL;
	/* verbose, so that a refusal's SQLSTATE and context are in the message */
	PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
	while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
		   st != PGRES_POLLING_FAILED && now_seconds() < deadline)
	{
		struct pollfd pfd = {.fd = PQsocket(conn)};

		pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		if (pfd.fd >= 0 && poll(&pfd, 1, 1000) < 0 && errno != EINTR)
			break;
		st = PQconnectPoll(conn);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		const char *msg = PQerrorMessage(conn);
		const char *f = strstr(msg, "FATAL:  ");
		const char *r = strstr(msg, "retry_ms=");

		if (f && strlen(f) > 13 && f[13] == ':')
			snprintf(sqlstate, 6, "%.5s", f + 8);
		if (r)
			*retry_ms = atoi(r + 9);
		PQfinish(conn);
		return NULL;
	}
	PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	return conn;
}

/* value of key=... in a share text, or -1 */
static long
share_word(const char *share, const char *key)
{
	size_t		klen = strlen(key);
	const char *s = share;

	while (s && *s)
	{
		if (strncmp(s, key, klen) == 0 && s[klen] == '=')
		{
			char	   *end;
			long		v = strtol(s + klen + 1, &end, 10);

			return (end == s + klen + 1 || (*end != ' ' && *end != '\0')) ? -1 : v;
		}
		s = strchr(s, ' ');
		if (s)
			s++;
	}
	return -1;
}

/*
 * One report and read on conn.  Returns 1 and fills the share, 0 if the
 * connection broke (or the server said something a pod cannot use), -1 if
 * the server refuses this pod for good (42501, 53400).
 */
static int
proto_refresh(Pod *p, PGconn *conn, int demand, Rng *rng, int *max_size, int *refresh_ms)
{
	char		d[16];
	PGresult   *res;
	const char *sqlstate;
	int			ok = 0;

	snprintf(d, sizeof(d), "%d", demand);
	if (p->kind == KIND_P1)
	{
		const char *params[1] = {d};

		res = PQexecParams(conn, "SELECT max_size, min_size, budget, refresh_ms FROM connbudget.pool_share($1::int)",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 4)
		{
			int			ms = atoi(PQgetvalue(res, 0, 0));
			int			rf = atoi(PQgetvalue(res, 0, 3));

			if (ms >= 0 && rf >= 10)
			{
				*max_size = ms;
				*refresh_ms = rf;
				ok = 1;
			}
			else
				COUNT(C_P_BAD_ANSWER);
		}
	}
	else
	{
		const char *share = NULL;

		if (rng_below(rng, 2) == 0)
		{
			const char *params[1] = {d};

			res = PQexecParams(conn, "SELECT set_config('connbudget.demand', $1, false), current_setting('connbudget.share')",
							   1, NULL, params, NULL, NULL, 0);
			if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 2)
				share = PQgetvalue(res, 0, 1);
		}
		else
		{
			char		sql[64];

			snprintf(sql, sizeof(sql), "SET connbudget.demand = %d", demand);
			res = PQexec(conn, sql);
			if (PQresultStatus(res) == PGRES_COMMAND_OK)
			{
				PQclear(res);
				res = PQexec(conn, "SHOW connbudget.share");
				if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
					share = PQgetvalue(res, 0, 0);
			}
		}
		if (share)
		{
			const char *status = strstr(share, "status=");
			long		ms = share_word(share, "max_size");
			long		rf = share_word(share, "refresh_ms");

			if (status == NULL || strncmp(status, "status=ok", 9) != 0 ||
				(status[9] != ' ' && status[9] != '\0'))
			{
				COUNT(C_P_BAD_STATUS);
				if (__atomic_add_fetch(&sh->printed, 1, __ATOMIC_RELAXED) <= 40)
					fprintf(stderr, "soak: pod %s: unexpected share: %s\n", p->id, share);
				if (status && strncmp(status, "status=refused", 14) == 0)
					ok = -1;
			}
			else if (ms < 0 || rf < 10)
				COUNT(C_P_BAD_ANSWER);
			else
			{
				*max_size = (int) ms;
				*refresh_ms = (int) rf;
				ok = 1;
			}
		}
	}
	sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (ok == 0 && sqlstate && (strcmp(sqlstate, "42501") == 0 || strcmp(sqlstate, "53400") == 0))
	{
		ok = -1;
		if (__atomic_add_fetch(&sh->printed, 1, __ATOMIC_RELAXED) <= 40)
			fprintf(stderr, "soak: pod %s: report refused for good: %s", p->id, PQerrorMessage(conn));
	}
	if (ok == 1)
		COUNT(C_P_REFRESHES);
	else
		COUNT(C_P_REFRESH_ERRORS);
	PQclear(res);
	return ok;
}

static void *
proto_pod(void *arg)
{
	Pod		   *p = arg;
	Rng			rng = {p->seed};
	PGconn	   *conns[PROTO_MAX_CONNS];
	int			n = 0;
	int			share = -1,
				refresh_ms = 1000,
				refreshes = 0;
	int			demand = 1 + rng_below(&rng, 4);
	int			failures = 0;
	double		now = now_seconds();
	double		next_refresh = now,
				next_connect = now,
				next_query = now + rng_uniform(&rng, 0.2, 2),
				next_demand = now + rng_uniform(&rng, 5, 30);

	while (!__atomic_load_n(&p->stop, __ATOMIC_RELAXED))
	{
		int			target;

		now = now_seconds();
		if (now >= next_demand)
		{
			int			d = 1 + rng_below(&rng, 5);

			if (d != demand && n > 0)
			{
				/* a changed demand is asked again a publish period later */
				double		period = refresh_ms / 10 / 1000.0;

				if (next_refresh > now + period)
					next_refresh = now + period;
			}
			demand = d;
			next_demand = now + rng_uniform(&rng, 5, 30);
		}
		if (n == 0)
		{
			char		st[6];
			int			retry_ms;
			PGconn	   *c;

			if (now < next_connect)
			{
				sleep_ms(50);
				continue;
			}
			c = proto_connect(p, st, &retry_ms);
			if (c == NULL)
			{
				double		delay_ms;
				int			shift = failures < 7 ? failures : 7;

				failures++;
				if (strcmp(st, "53300") == 0)
				{
					/* backpressure: from the stated pace, doubling, full jitter */
					int			base = retry_ms >= 10 ? retry_ms : 1000;

					COUNT(C_P_REFUSED);
					delay_ms = rng_uniform(&rng, base / 2.0, (double) base * (1 << (shift < 3 ? shift : 3)));
				}
				else if (strcmp(st, "42501") == 0 || strcmp(st, "53400") == 0)
				{
					/* for good: no sooner than 10 refresh intervals */
					COUNT(C_P_PERMANENT);
					if (__atomic_add_fetch(&sh->printed, 1, __ATOMIC_RELAXED) <= 40)
						fprintf(stderr, "soak: pod %s: connect refused for good (%s)\n", p->id, st);
					delay_ms = 10.0 * refresh_ms;
				}
				else
				{
					/* the server is away (a restart): 100 ms doubling to 5 s, full jitter */
					COUNT(C_P_CONNECT_ERRORS);
					delay_ms = rng_uniform(&rng, 0, (100 << shift) < 5000 ? (100 << shift) : 5000);
				}
				next_connect = now + delay_ms / 1000.0;
				continue;
			}
			COUNT(C_P_CONNECTS);
			failures = 0;
			conns[n++] = c;
			next_refresh = now;
		}
		if (now >= next_refresh)
		{
			int			r = proto_refresh(p, conns[0], demand, &rng, &share, &refresh_ms);
			double		base = refresh_ms / 1000.0;

			if (r <= 0)
			{
				/* broken or refused: drop the connection the report was on */
				PQfinish(conns[0]);
				memmove(conns, conns + 1, sizeof(conns[0]) * (size_t) (n - 1));
				n--;
				next_connect = now + (r < 0 ? 10 * base : rng_uniform(&rng, 0.1, 1.0));
				next_refresh = now;
				continue;
			}
			refreshes++;
			if (share == 0)
				next_refresh = now + rng_uniform(&rng, 1.0, 1.2) * base;
			else if (refreshes == 1)
				next_refresh = now + rng_uniform(&rng, 0.1, 1.0) * base;
			else
				next_refresh = now + rng_uniform(&rng, 0.9, 1.1) * base;
			if (share == 0)
			{
				/* a share of 0: hold nothing, ask again in an interval */
				COUNT(C_P_ZERO);
				while (n > 0)
					PQfinish(conns[--n]);
				next_connect = next_refresh;
				continue;
			}
		}
		target = share < 0 ? 1 : (demand < share ? demand : share);
		if (target > PROTO_MAX_CONNS)
			target = PROTO_MAX_CONNS;
		while (n > target && n > 1)
			PQfinish(conns[--n]);
		if (n < target && now >= next_connect)
		{
			char		st[6];
			int			retry_ms;
			PGconn	   *c = proto_connect(p, st, &retry_ms);

			if (c)
			{
				COUNT(C_P_CONNECTS);
				conns[n++] = c;
			}
			else
			{
				if (strcmp(st, "53300") == 0)
					COUNT(C_P_REFUSED);
				else if (strcmp(st, "42501") == 0 || strcmp(st, "53400") == 0)
					COUNT(C_P_PERMANENT);
				else
					COUNT(C_P_CONNECT_ERRORS);
				next_connect = now + rng_uniform(&rng, 0.5, 1.5) * (retry_ms >= 10 ? retry_ms : 1000) / 1000.0;
			}
		}
		if (now >= next_query && n > 0 && !__atomic_load_n(&quiet, __ATOMIC_RELAXED))
		{
			int			i = rng_below(&rng, n);
			PGresult   *res = PQexec(conns[i], "SELECT 1");

			if (result_ok(res))
				COUNT(C_QUERIES);
			else
			{
				COUNT(C_QUERY_ERRORS);
				if (PQstatus(conns[i]) == CONNECTION_BAD)
				{
					PQfinish(conns[i]);
					conns[i] = conns[--n];
					if (i == 0 && n > 0)
						next_refresh = now;
				}
			}
			PQclear(res);
			next_query = now + rng_uniform(&rng, 0.2, 2);
		}
		sleep_ms(20 + rng_below(&rng, 30));
	}

	/* leave: hand the share back, then close */
	if (n > 0)
	{
		PGresult   *res = PQexec(conns[0], p->kind == KIND_P1 ?
								 "SELECT connbudget.pool_share(0)" :
								 "SET connbudget.demand = 'leave'");

		if (result_ok(res))
			COUNT(C_P_LEAVES);
		PQclear(res);
	}
	while (n > 0)
		PQfinish(conns[--n]);
	return NULL;
}

static bool
pod_start(Pod *p)
{
	if (p->kind == KIND_POOL)
	{
		cbpool_config cfg = cbpool_config_default();
		char		conninfo[256],
					err[256];

		snprintf(conninfo, sizeof(conninfo), "dbname=%s user=%s password=pw-%s connect_timeout=10",
				 db_name(p->db), apps[p->app].role, apps[p->app].role);
		cfg.conninfo = conninfo;
		cfg.application_name = apps[p->app].name;
		cfg.pod = p->id;
		cfg.max_size = p->max_size;
		cfg.acquire_timeout_ms = 2000;
		cfg.connect_timeout_ms = POD_CONNECT_S * 1000;
		if (p->lifetime_ms > 0)
			cfg.max_lifetime_ms = p->lifetime_ms;
		cfg.logger.func = soak_log;
		cfg.logger.user_data = p;
		p->pool = cbpool_open(&cfg, err, sizeof(err));
		if (p->pool == NULL)
		{
			COUNT(C_POOL_OPEN_FAILED);
			fprintf(stderr, "soak: pod %s: cbpool_open: %s\n", p->id, err);
			return false;
		}
		COUNT(C_POOLS_OPENED);
		for (int i = 0; i < p->workers; i++)
			if (pthread_create(&p->threads[p->nthreads], NULL, pool_worker, p) == 0)
				p->nthreads++;
	}
	else if (pthread_create(&p->threads[0], NULL, proto_pod, p) == 0)
		p->nthreads = 1;
	return true;
}

static void
pod_stop(Pod *p)
{
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	if (p->pool)
	{
		cbpool_stats_t s;

		cbpool_stats(p->pool, &s);
		ADD(C_S_CONNECTS, s.connects);
		ADD(C_S_CONNECT_FAILURES, s.connect_failures);
		ADD(C_S_REFUSED, s.connects_refused);
		ADD(C_S_PERMANENT, s.refusals_permanent);
		ADD(C_S_CLOSED_BROKEN, s.closed_broken);
		ADD(C_S_CLOSED_OVER_SHARE, s.closed_over_share);
		ADD(C_S_CLOSED_LIFETIME, s.closed_lifetime);
		ADD(C_S_BREAKER_OPENINGS, s.breaker_openings);
		ADD(C_S_BUDGET_REFRESHES, s.budget_refreshes);
		ADD(C_S_BUDGET_ERRORS, s.budget_errors);
		ADD(C_S_MISUSE, s.misuse);
		ADD(C_S_LEAKS, s.leaks_detected);
		ADD(C_S_ROLLBACKS, s.rollbacks_on_release);
		cbpool_close(p->pool);
		COUNT(C_POOLS_CLOSED);
		p->pool = NULL;
	}
}

/* read one line from fd (blocking); false at end of file */
static bool
read_line(int fd, char *buf, size_t len, char *pending, size_t *npending)
{
	for (;;)
	{
		char	   *nl = memchr(pending, '\n', *npending);
		ssize_t		r;

		if (nl)
		{
			size_t		l = (size_t) (nl - pending);

			if (l >= len)
				l = len - 1;
			memcpy(buf, pending, l);
			buf[l] = '\0';
			*npending -= (size_t) (nl - pending) + 1;
			memmove(pending, nl + 1, *npending);
			return true;
		}
		if (*npending >= 4096)
			*npending = 0;
		r = read(fd, pending + *npending, 4096 - *npending);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		*npending += (size_t) r;
	}
}

static void
write_all(int fd, const char *s)
{
	size_t		len = strlen(s);

	while (len > 0)
	{
		ssize_t		w = write(fd, s, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		len -= (size_t) w;
	}
}

/*
 * The life of a pod process: commands, one a line, from the orchestrator
 *   join INDEX APP KIND WORKERS MAX_SIZE LIFETIME_MS DB SEED
 *   leave INDEX       (answered "left INDEX")
 *   quiet / busy      workers pause / go on
 *   exit              close every pool and exit (answered "exited")
 * The end of the command pipe is an exit without an answer.
 */
static void
pod_process(int cmd, int ack)
{
	char		line[256],
				pending[4096],
				reply[128];
	size_t		npending = 0;
	Pod		   *pods = NULL;

	while (read_line(cmd, line, sizeof(line), pending, &npending))
	{
		if (starts_with(line, "join "))
		{
			Pod		   *p = calloc(1, sizeof(Pod));
			unsigned long long seed;

			if (p == NULL)
				continue;
			if (sscanf(line + 5, "%d %d %d %d %d %d %d %llu", &p->index, &p->app, &p->kind,
					   &p->workers, &p->max_size, &p->lifetime_ms, &p->db, &seed) != 8 ||
				p->app < 0 || p->app >= NAPPS || p->kind < 0 || p->kind >= NKINDS ||
				p->workers < 0 || p->workers > MAX_WORKERS)
			{
				fprintf(stderr, "soak: %s: bad command: %s\n", proc_label, line);
				free(p);
				continue;
			}
			p->seed = seed;
			snprintf(p->id, sizeof(p->id), "%s-%06d", apps[p->app].tag, p->index);
			if (!pod_start(p))
			{
				free(p);
				continue;
			}
			p->next = pods;
			pods = p;
		}
		else if (starts_with(line, "leave "))
		{
			int			index = atoi(line + 6);
			Pod		  **pp;

			for (pp = &pods; *pp; pp = &(*pp)->next)
				if ((*pp)->index == index)
				{
					Pod		   *p = *pp;

					*pp = p->next;
					pod_stop(p);
					free(p);
					break;
				}
			snprintf(reply, sizeof(reply), "left %d\n", index);
			write_all(ack, reply);
		}
		else if (strcmp(line, "quiet") == 0)
			__atomic_store_n(&quiet, 1, __ATOMIC_RELAXED);
		else if (strcmp(line, "busy") == 0)
			__atomic_store_n(&quiet, 0, __ATOMIC_RELAXED);
		else if (strcmp(line, "mem") == 0 || strcmp(line, "trim") == 0)
		{
			bool		trim = strcmp(line, "trim") == 0;
			/* what the allocator holds for the program, and what it has */
			int			conns = 0;

			for (Pod *p = pods; p; p = p->next)
				if (p->pool)
				{
					cbpool_stats_t st;

					cbpool_stats(p->pool, &st);
					conns += st.total;
				}
#if SOAK_ASAN
			snprintf(reply, sizeof(reply), "mem -1 -1 %d %d\n", conns, trim);
#else
			{
				struct mallinfo2 mi;

				/* give back what malloc holds free, then count */
				if (trim)
					malloc_trim(0);
				mi = mallinfo2();
				snprintf(reply, sizeof(reply), "mem %zu %zu %d %d\n", mi.uordblks + mi.hblkhd,
						 mi.arena + mi.hblkhd, conns, trim);
			}
#endif
			write_all(ack, reply);
		}
		else if (strcmp(line, "exit") == 0)
			break;
	}
	/* stop every pod at once, then wait for them */
	for (Pod *p = pods; p; p = p->next)
		__atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
	while (pods)
	{
		Pod		   *p = pods;

		pods = p->next;
		pod_stop(p);
		free(p);
	}
	write_all(ack, "exited\n");
}

/* ======================================================================
 * The orchestrator
 * ====================================================================== */

typedef struct Proc
{
	pid_t		pid;
	int			cmd;			/* write end of its command pipe */
	int			ack;			/* read end of its answers, non-blocking */
	bool		pool_process;
	bool		alive;			/* not reaped yet */
	bool		killed;			/* SIGKILL from us */
	bool		told_exit;
	int			npods;			/* live or leaving */
	char		buf[4096];
	size_t		len;
} Proc;

enum
{
	POD_LIVE, POD_LEAVING, POD_GONE
};

typedef struct PodRec
{
	char		id[48];
	int			app;
	int			kind;
	int			proc;
	int			state;
	bool		permanent;		/* the pool process's pools kept all along */
	bool		churn;			/* the pool process's replaced pools */
	double		gone_t;			/* left or killed */
	bool		gone_killed;
	bool		flagged;		/* reported as still listed */
	double		seen_t;			/* last seen in connbudget.pods */
	double		live_t;			/* joined */
} PodRec;

static Proc *procs;
static int	nprocs,
			procs_cap;
static PodRec *pods;
static int	npods,
			pods_cap;
static int	pool_proc = -1;
static long long pool_heap_used = -1,	/* malloc's in-use bytes (mallinfo2) */
			pool_heap_held = -1,
			heap_warm = -1,
			heap_end = -1;
static double pool_heap_t;
static long pool_trimmed_rss = -1,	/* RssAnon right after malloc_trim(0) */
			trimmed_warm = -1,
			trimmed_end = -1;
static double pool_trimmed_t;
static long rss_anon_kb(pid_t pid);
static int	pool_conns = -1,		/* connections its pools hold */
			conns_warm = -1,
			conns_end = -1;

static PGconn *mon,
		   *ctl;
static double duration;
static int	target_pods = 260;
static bool in_end_phase;

/* ---- event log, counters, violations ---- */

enum
{
	E_JOIN, E_SPAWN, E_LEAVE, E_KILL, E_KILLED_PODS, E_TERMINATE, E_TERMINATED,
	E_CAP_UP, E_CAP_DOWN, E_MIN, E_WEIGHT, E_ROLES, E_DELETE, E_RESTORE,
	E_INVALID, E_SET_REFRESH, E_SET_TTL, E_SET_RESERVED, E_RESTART_FAST,
	E_RESTART_IMMEDIATE, E_POOL_REPLACE, NEVENTS
};
static const char *const event_names[NEVENTS] = {
	"pods joined", "pod processes started", "pods left cleanly",
	"pod processes killed (SIGKILL)", "pods killed with their process",
	"pg_terminate_backend() calls", "backends terminated",
	"caps raised", "caps lowered", "minimums changed", "weights changed",
	"bindings changed (roles)", "rows deleted", "rows put back",
	"invalid changes refused", "refresh_interval changed", "pod_ttl changed",
	"reserved_connections changed", "restarts -m fast", "restarts -m immediate",
	"pool process: pools replaced",
};
static long events[NEVENTS];

#define RING 14
static struct
{
	double		t;
	char		text[200];
}			ring[RING];
static int	ring_n;
static FILE *event_log;

static long checks,
			samples,
			violations;
static char violation_lines[30][600];
static int	nviolation_lines;
static long monitor_losses;
static char failures[40][400];
static int	nfailures;
static long nfailures_total;

static void
note(const char *fmt,...)
{
	va_list		ap;
	int			k = ring_n++ % RING;

	ring[k].t = T();
	va_start(ap, fmt);
	vsnprintf(ring[k].text, sizeof(ring[k].text), fmt, ap);
	va_end(ap);
	if (event_log)
	{
		fprintf(event_log, "%8.1f %s\n", ring[k].t, ring[k].text);
		fflush(event_log);
	}
}

static void
print_recent_events(FILE *f)
{
	int			first = ring_n > RING ? ring_n - RING : 0;

	fprintf(f, "    last events:\n");
	for (int i = first; i < ring_n; i++)
		fprintf(f, "      t=%7.1f s  %s\n", ring[i % RING].t, ring[i % RING].text);
}

/* A bound exceeded (a violation, said with the events before it) or
   something else that fails the run: said at once and kept for the
   report. */
static void
report_failure(bool is_violation, const char *fmt, va_list ap)
{
	const char *what = is_violation ? "VIOLATION" : "FAILED";
	char		text[600];

	vsnprintf(text, sizeof(text), fmt, ap);
	printf("t=%7.1f s %s: %s\n", T(), what, text);
	if (is_violation)
		print_recent_events(stdout);
	fflush(stdout);
	note("%s: %.150s", what, text);
	if (is_violation && nviolation_lines < 30)
		snprintf(violation_lines[nviolation_lines++], sizeof(violation_lines[0]),
				 "t=%.1f s: %.560s", T(), text);
	else if (!is_violation && nfailures < 40)
		snprintf(failures[nfailures++], sizeof(failures[0]), "%.*s",
				 (int) sizeof(failures[0]) - 1, text);
	if (is_violation)
		violations++;
	else
		nfailures_total++;
}

static void
violation(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	report_failure(true, fmt, ap);
	va_end(ap);
}

static void
failure(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	report_failure(false, fmt, ap);
	va_end(ap);
}

/* ---- bounds in force over time ---- */

#define HIST_MAX 256
typedef struct Hist
{
	double		t[HIST_MAX];
	int			v[HIST_MAX];
	int			n;
} Hist;

static Hist budget_h,
			cap_h[NAPPS],
			refresh_h,
			ttl_h;

static int
hist_now(const Hist *h)
{
	return h->v[h->n - 1];
}

static void
hist_set(Hist *h, double t, int v)
{
	if (h->n == HIST_MAX)
	{
		/* keep the newest half: older steps are far outside any window */
		memmove(h->t, h->t + HIST_MAX / 2, sizeof(h->t[0]) * HIST_MAX / 2);
		memmove(h->v, h->v + HIST_MAX / 2, sizeof(h->v[0]) * HIST_MAX / 2);
		h->n = HIST_MAX / 2;
	}
	h->t[h->n] = t;
	h->v[h->n] = v;
	h->n++;
}

static void
hist_reset(Hist *h, double t, int v)
{
	h->n = 0;
	hist_set(h, t, v);
}

/*
 * A change from old to new, made between t_start and t_end (the statement
 * and its confirmation): both values count as in force in between, so a
 * raise counts from t_start and a lowering only from t_end.
 */
static void
hist_change(Hist *h, double t_start, double t_end, int old, int new)
{
	hist_set(h, t_start, old > new ? old : new);
	hist_set(h, t_end, new);
}

/* the highest value in force at any time in [from, to] */
static int
hist_max(const Hist *h, double from, double to)
{
	int			best = h->v[0];
	int			i;

	for (i = 0; i < h->n && h->t[i] <= from; i++)
		best = h->v[i];
	for (; i < h->n && h->t[i] <= to; i++)
		if (h->v[i] > best)
			best = h->v[i];
	return best;
}

/* when the bound was last lowered (or -1), for the message */
static double
hist_last_lowering(const Hist *h)
{
	for (int i = h->n - 1; i > 0; i--)
		if (h->v[i] < h->v[i - 1])
			return h->t[i];
	return -1;
}

/*
 * The grace window after a lowering, in seconds: 3 refresh intervals (the
 * publication, the pool's next refresh at up to 1.2 intervals, and the
 * backends' exits on a loaded machine) + pod_ttl (slack of one lease) + the
 * longest a worker holds a connection (an over-share connection retires when
 * it is released), each the largest in force in the last 2 minutes.
 */
static double
grace(double t)
{
	return (3.0 * hist_max(&refresh_h, t - 120, t) + hist_max(&ttl_h, t - 120, t) + HOLD_MAX_MS) / 1000.0;
}

static double grace_min = 1e9,
			grace_max;

/* how long counts took to come under a lowered bound (for the report) */
static double pending_lower[NAPPS + 1];	/* NAPPS: the budget */
static double settle_max;
static long settle_n;
static double settle_sum;
static long grace_samples;		/* samples with some bound in grace */

/* ---- the limits: the model the table must match ---- */

typedef struct Limits
{
	bool		exists;
	int			min,
				max,			/* -1: NULL */
				weight;
	char		roles[64];		/* "": NULL */
} Limits;

static Limits model[NAPPS],
			saved_row[NAPPS];
static double restore_at[NAPPS];	/* a deleted row comes back then */
static int	max_connections,
			superuser_reserved,
			reserved_now,
			reserved_initial,
			refresh_now = 1000,
			ttl_now = 3000;
static char initial_limits[2048],
			initial_settings[2048],
			initial_auto_conf[1024];
static long shmem_start;

static int
budget_for(int reserved)
{
	int			b = max_connections - superuser_reserved - reserved;

	return b > 0 ? b : 0;
}

static int
cap_of(const Limits *l)
{
	return l->exists && l->max >= 0 ? l->max : INT_MAX;
}

/* ---- connections of the orchestrator ---- */

/*
 * The monitor and the control connection come in over the Unix socket, as
 * an administrator on the server's host does: its queue is not the one the
 * fleet crowds on TCP after a restart, so they are not stuck behind the
 * pods' connects.
 */
static PGconn *
admin_connect(const char *appname)
{
	const char *keys[] = {"host", "dbname", "user", "application_name", "connect_timeout", NULL};
	const char *values[] = {getenv("CB_CLUSTER_DIR"), "postgres", "postgres", appname, "30", NULL};
	double		deadline = now_seconds() + 180;

	for (;;)
	{
		PGconn	   *c = PQconnectdbParams(keys, values, 0);

		if (PQstatus(c) == CONNECTION_OK)
			return c;
		if (now_seconds() > deadline)
		{
			fprintf(stderr, "soak: cannot connect: %s", PQerrorMessage(c));
			exit(2);
		}
		PQfinish(c);
		sleep_ms(200);
	}
}

/* run a query; NULL (and the connection made again) if it failed */
static PGresult *
query(PGconn **c, const char *appname, const char *sql)
{
	PGresult   *res = PQexec(*c, sql);

	if (result_ok(res))
		return res;
	if (PQstatus(*c) == CONNECTION_BAD)
	{
		monitor_losses++;
		failure("the %s connection was lost outside a restart: %s", appname, PQerrorMessage(*c));
		PQfinish(*c);
		*c = admin_connect(appname);
	}
	else
		failure("query failed: %.200s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
	return NULL;
}

static void
must(PGconn *c, const char *sql)
{
	PGresult   *res = PQexec(c, sql);

	if (!result_ok(res))
	{
		fprintf(stderr, "soak: setup failed: %s\n%s", sql, PQerrorMessage(c));
		exit(2);
	}
	PQclear(res);
}

static long
value_long(PGconn **c, const char *appname, const char *sql)
{
	PGresult   *res = query(c, appname, sql);
	long		v = -1;

	if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		v = atol(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

static void
value_text(PGconn **c, const char *appname, const char *sql, char *out, size_t len)
{
	PGresult   *res = query(c, appname, sql);

	snprintf(out, len, "%s", res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ?
			 PQgetvalue(res, 0, 0) : "(none)");
	PQclear(res);
}

#define LIMITS_TEXT_SQL \
	"SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s', application_name, min_connections, " \
	"max_connections, weight, roles), ';' ORDER BY application_name), '') " \
	"FROM connbudget.application_limits"
#define SETTINGS_TEXT_SQL \
	"SELECT string_agg(name || '=' || setting || ' (' || source || ')', ', ' ORDER BY name) " \
	"FROM pg_settings WHERE name LIKE 'connbudget.%' AND name NOT IN " \
	"('connbudget.share', 'connbudget.demand', 'connbudget.pod', 'connbudget.pool_session')"
#define AUTO_CONF_SQL \
	"SELECT coalesce(string_agg(name || '=' || setting, ', ' ORDER BY seqno), '') " \
	"FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"

/* the applications in the order of their names (the table's order) */
static int	by_name[NAPPS];

static void
sort_by_name(void)
{
	for (int i = 0; i < NAPPS; i++)
	{
		int			j = i;

		while (j > 0 && strcmp(apps[by_name[j - 1]].name, apps[i].name) > 0)
		{
			by_name[j] = by_name[j - 1];
			j--;
		}
		by_name[j] = i;
	}
}

/* the table's rows as the model says they must be */
static void
model_text(char *out, size_t len)
{
	size_t		off = 0;

	out[0] = '\0';
	for (int i = 0; i < NAPPS; i++)
	{
		int			a = by_name[i];
		const Limits *l = &model[a];
		char		max[16] = "";

		if (!l->exists)
			continue;
		if (l->max >= 0)
			snprintf(max, sizeof(max), "%d", l->max);
		off += (size_t) snprintf(out + off, len - off, "%s%s|%d|%s|%d|%s", off ? ";" : "",
								 apps[a].name, l->min, max, l->weight, l->roles);
		if (off >= len)
			break;
	}
}

/* the table and the limits in force agree with the model */
static void
check_limits_in_force(const char *when)
{
	char		want[2048],
				got[2048];
	PGresult   *res;

	model_text(want, sizeof(want));
	value_text(&ctl, CONTROL_APP, LIMITS_TEXT_SQL, got, sizeof(got));
	checks++;
	if (strcmp(want, got) != 0)
		violation("%s: application_limits is \"%s\", expected \"%s\"", when, got, want);
	res = query(&ctl, CONTROL_APP,
				"SELECT application_name, min_connections, coalesce(max_connections, -1), weight "
				"FROM connbudget.applications");
	if (res == NULL)
		return;
	for (int a = 0; a < NAPPS; a++)
	{
		const Limits *l = &model[a];
		int			i;

		for (i = 0; i < PQntuples(res); i++)
			if (strcmp(PQgetvalue(res, i, 0), apps[a].name) == 0)
				break;
		checks++;
		if (i == PQntuples(res))
		{
			if (l->exists)
				violation("%s: configured application %s is not listed in connbudget.applications",
						  when, apps[a].name);
			continue;
		}
		if (atoi(PQgetvalue(res, i, 1)) != (l->exists ? l->min : 0) ||
			atoi(PQgetvalue(res, i, 2)) != (l->exists ? l->max : -1) ||
			atoi(PQgetvalue(res, i, 3)) != (l->exists ? l->weight : 1))
			violation("%s: connbudget.applications shows %s with min %s, max %s, weight %s; in force should be %d, %d, %d",
					  when, apps[a].name, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
					  PQgetvalue(res, i, 3), l->exists ? l->min : 0, l->exists ? l->max : -1,
					  l->exists ? l->weight : 1);
	}
	PQclear(res);
}

/* ---- processes and pods ---- */

static void
close_inherited(int keep_cmd, int keep_ack)
{
	for (int i = 0; i < nprocs; i++)
	{
		if (procs[i].cmd >= 0 && procs[i].cmd != keep_cmd)
			close(procs[i].cmd);
		if (procs[i].ack >= 0 && procs[i].ack != keep_ack)
			close(procs[i].ack);
	}
	/* the orchestrator's sessions: close the sockets, say nothing on them */
	if (mon)
		close(PQsocket(mon));
	if (ctl)
		close(PQsocket(ctl));
	if (event_log)
		close(fileno(event_log));
}

static int
spawn_process(bool pool_process)
{
	int			cmd[2],
				ack[2];
	pid_t		pid;
	Proc	   *p;

	if (pipe(cmd) != 0 || pipe(ack) != 0)
	{
		failure("pipe: %s", strerror(errno));
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	if (event_log)
		fflush(event_log);
	pid = fork();
	if (pid < 0)
	{
		failure("fork: %s", strerror(errno));
		close(cmd[0]);
		close(cmd[1]);
		close(ack[0]);
		close(ack[1]);
		return -1;
	}
	if (pid == 0)
	{
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(cmd[1]);
		close(ack[0]);
		close_inherited(-1, -1);
		proc_label = pool_process ? "pool process" : "pod process";
		pod_process(cmd[0], ack[1]);
		exit(0);
	}
	close(cmd[0]);
	close(ack[1]);
	fcntl(ack[0], F_SETFL, O_NONBLOCK);
	if (nprocs == procs_cap)
	{
		procs_cap = procs_cap ? procs_cap * 2 : 64;
		procs = realloc(procs, sizeof(Proc) * (size_t) procs_cap);
	}
	p = &procs[nprocs];
	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->cmd = cmd[1];
	p->ack = ack[0];
	p->pool_process = pool_process;
	p->alive = true;
	if (!pool_process)
		events[E_SPAWN]++;
	return nprocs++;
}

static void
send_cmd(int proc, const char *line)
{
	if (procs[proc].alive && procs[proc].cmd >= 0 && !procs[proc].killed)
		write_all(procs[proc].cmd, line);
}

static int
pick_kind(void)
{
	int			r = pick(100);

	return r < 70 ? KIND_POOL : r < 88 ? KIND_P2 : KIND_P1;
}

static int
pick_app(void)
{
	int			r = pick(100),
				a;

	for (a = 0; a < NAPPS - 1; a++)
	{
		if (r < apps[a].pick)
			break;
		r -= apps[a].pick;
	}
	return a;
}

/* a new pod in process proc */
static int
join_pod(int proc, int app, int kind, bool permanent, bool churn)
{
	char		line[200];
	PodRec	   *r;
	int			workers = kind == KIND_POOL ? (permanent || churn ? 2 : 1 + pick(MAX_WORKERS)) : 0;
	int			max_size = kind == KIND_POOL && pick(4) == 0 ? 3 : 0;
	int			lifetime = pick(3) == 0 ? 120000 : 0;

	if (npods == pods_cap)
	{
		pods_cap = pods_cap ? pods_cap * 2 : 1024;
		pods = realloc(pods, sizeof(PodRec) * (size_t) pods_cap);
	}
	r = &pods[npods];
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "%s-%06d", apps[app].tag, npods);
	r->app = app;
	r->kind = kind;
	r->proc = proc;
	r->state = POD_LIVE;
	r->permanent = permanent;
	r->churn = churn;
	r->live_t = T();
	r->seen_t = -1;
	snprintf(line, sizeof(line), "join %d %d %d %d %d %d %d %llu\n", npods, app, kind, workers,
			 max_size, lifetime, kind == KIND_P1 ? 1 : pick(5) == 0 ? 1 : 0,
			 (unsigned long long) rnd_u64());
	send_cmd(proc, line);
	procs[proc].npods++;
	events[E_JOIN]++;
	return npods++;
}

static void
pod_gone(int i, double t, bool killed)
{
	if (pods[i].state == POD_GONE)
		return;
	pods[i].state = POD_GONE;
	pods[i].gone_t = t;
	pods[i].gone_killed = killed;
	procs[pods[i].proc].npods--;
}

static void
leave_pod(int i)
{
	char		line[64];

	snprintf(line, sizeof(line), "leave %d\n", i);
	send_cmd(pods[i].proc, line);
	pods[i].state = POD_LEAVING;
	events[E_LEAVE]++;
}

static int
live_pods(void)
{
	int			n = 0;

	for (int i = 0; i < npods; i++)
		n += pods[i].state == POD_LIVE;
	return n;
}

static int
alive_procs(void)
{
	int			n = 0;

	for (int i = 0; i < nprocs; i++)
		n += procs[i].alive && !procs[i].killed && !procs[i].pool_process;
	return n;
}

/* answers of the processes */
static void
read_acks(void)
{
	for (int i = 0; i < nprocs; i++)
	{
		Proc	   *p = &procs[i];
		char	   *nl;

		if (p->ack < 0)
			continue;
		for (;;)
		{
			ssize_t		r = read(p->ack, p->buf + p->len, sizeof(p->buf) - 1 - p->len);

			if (r <= 0)
			{
				if (r == 0 || (errno != EAGAIN && errno != EINTR))
				{
					close(p->ack);
					p->ack = -1;
				}
				break;
			}
			p->len += (size_t) r;
		}
		while ((nl = memchr(p->buf, '\n', p->len)) != NULL)
		{
			*nl = '\0';
			if (starts_with(p->buf, "mem ") && p->pool_process)
			{
				long long	used = -1,
							held = -1;
				int			conns = -1,
							trimmed = 0;

				if (sscanf(p->buf + 4, "%lld %lld %d %d", &used, &held, &conns, &trimmed) == 4)
				{
					pool_heap_used = used;
					pool_heap_held = held;
					pool_conns = conns;
					pool_heap_t = T();
					if (trimmed)
					{
						/* right after malloc_trim(0) */
						pool_trimmed_rss = rss_anon_kb(p->pid);
						pool_trimmed_t = pool_heap_t;
					}
				}
			}
			else if (starts_with(p->buf, "left "))
			{
				int			k = atoi(p->buf + 5);

				if (k >= 0 && k < npods && pods[k].proc == i)
					pod_gone(k, T(), false);
			}
			p->len -= (size_t) (nl - p->buf) + 1;
			memmove(p->buf, nl + 1, p->len);
		}
		if (p->len >= sizeof(p->buf) - 1)
			p->len = 0;
	}
}

static void
reap(void)
{
	int			status;
	pid_t		pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
	{
		for (int i = 0; i < nprocs; i++)
		{
			Proc	   *p = &procs[i];

			if (p->pid != pid || !p->alive)
				continue;
			p->alive = false;
			if (p->cmd >= 0)
				close(p->cmd);
			p->cmd = -1;
			if (!p->killed)
			{
				if (!p->told_exit)
					failure("%s %d ended by itself (%s %d)", p->pool_process ? "the pool process" : "pod process",
							(int) pid, WIFSIGNALED(status) ? "signal" : "exit status",
							WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
				else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
					failure("%s %d did not exit cleanly when told to (%s %d)",
							p->pool_process ? "the pool process" : "pod process", (int) pid,
							WIFSIGNALED(status) ? "signal" : "exit status",
							WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			}
			for (int k = 0; k < npods; k++)
				if (pods[k].proc == i)
					pod_gone(k, T(), p->killed);
			break;
		}
	}
}

/* ---- memory ---- */

enum
{
	M_ALLOCATOR, M_LOADER, M_MONITOR, M_POOL_BACKEND, NMKINDS
};
static const char *const mkind_names[NMKINDS] = {
	"connbudget allocator", "connbudget limits loader", "the monitor's backend",
	"pool backends (soak_* roles)"
};

typedef struct Tracked
{
	int			pid;
	unsigned long long start;	/* /proc/PID/stat starttime */
	int			kind;
	int			period;
	double		warm_age;		/* age at the warm sample */
	long		warm_kb;
	double		warm_t;
	long		last_kb;
	double		last_t;
	long		at_minute_kb;	/* first sample at an age of a minute or more */
	double		at_minute_age;
} Tracked;

static Tracked *tracked;
static int	ntracked,
			tracked_cap;
static int	period;				/* restart periods: 0 until the first */
static long pool_rss_warm = -1,
			pool_rss_end = -1,
			pool_rss_max = -1,
			pool_rss_first = -1;
static double pool_warm_t;

static long
rss_anon_kb(pid_t pid)
{
	char		path[64],
				line[256];
	FILE	   *f;
	long		kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static double
uptime_seconds(void)
{
	FILE	   *f = fopen("/proc/uptime", "r");
	double		up = 0;

	if (f)
	{
		if (fscanf(f, "%lf", &up) != 1)
			up = 0;
		fclose(f);
	}
	return up;
}

static long
postmaster_pid(void)
{
	char		path[1100],
				line[64];
	FILE	   *f;
	long		pid = -1;

	snprintf(path, sizeof(path), "%s/data/postmaster.pid", getenv("CB_CLUSTER_DIR"));
	if ((f = fopen(path, "r")) != NULL)
	{
		if (fgets(line, sizeof(line), f))
			pid = atol(line);
		fclose(f);
	}
	return pid;
}

static void
memory_sample(void)
{
	long		pm = postmaster_pid();
	double		up = uptime_seconds(),
				now = T();
	long		hz = sysconf(_SC_CLK_TCK);
	int			monitor_pid = mon ? PQbackendPID(mon) : -1;
	char		path[64];
	FILE	   *f;
	DIR		   *dir;
	struct dirent *e;

	if (pool_proc >= 0 && procs[pool_proc].alive)
	{
		long		kb = rss_anon_kb(procs[pool_proc].pid);

		if (kb > 0)
		{
			if (pool_rss_first < 0)
				pool_rss_first = kb;
			if (kb > pool_rss_max)
				pool_rss_max = kb;
			if (pool_rss_warm < 0 && now >= pool_warm_t)
			{
				pool_rss_warm = kb;
				send_cmd(pool_proc, "trim\n");
			}
			else if (pool_rss_warm >= 0 && heap_warm < 0 && pool_trimmed_t > pool_warm_t)
			{
				heap_warm = pool_heap_used;
				conns_warm = pool_conns;
				trimmed_warm = pool_trimmed_rss;
			}
		}
	}
	if (pm <= 0)
		return;

	/* every child of the postmaster: /proc/PID/stat names its parent */
	if ((dir = opendir("/proc")) == NULL)
		return;
	while ((e = readdir(dir)) != NULL)
	{
		int			pid = atoi(e->d_name);
		char		stat[1024],
					cmdline[256];
		char	   *rp;
		long		ppid = 0;
		unsigned long long start = 0;
		int			kind = -1;
		size_t		n;
		double		age;
		Tracked    *t = NULL;
		long		kb;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		n = fread(stat, 1, sizeof(stat) - 1, f);
		fclose(f);
		stat[n] = '\0';
		rp = strrchr(stat, ')');
		if (rp == NULL)
			continue;
		/* after the command: state, ppid, ..., starttime (field 22) */
		if (sscanf(rp + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
				   &ppid, &start) != 2 || ppid != pm)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
		fclose(f);
		cmdline[n] = '\0';
		if (starts_with(cmdline, "postgres: connbudget allocator"))
			kind = M_ALLOCATOR;
		else if (starts_with(cmdline, "postgres: connbudget limits loader"))
			kind = M_LOADER;
		else if (pid == monitor_pid)
			kind = M_MONITOR;
		else if (starts_with(cmdline, "postgres: soak_"))
			kind = M_POOL_BACKEND;
		if (kind < 0)
			continue;
		kb = rss_anon_kb(pid);
		if (kb < 0)
			continue;
		age = up - (double) start / (double) hz;
		for (int i = ntracked - 1; i >= 0; i--)
			if (tracked[i].pid == pid && tracked[i].start == start)
			{
				t = &tracked[i];
				break;
			}
		if (t == NULL)
		{
			if (ntracked == tracked_cap)
			{
				tracked_cap = tracked_cap ? tracked_cap * 2 : 1024;
				tracked = realloc(tracked, sizeof(Tracked) * (size_t) tracked_cap);
			}
			t = &tracked[ntracked++];
			memset(t, 0, sizeof(*t));
			t->pid = pid;
			t->start = start;
			t->kind = kind;
			t->period = period;
			t->warm_kb = -1;
			t->at_minute_kb = -1;
		}
		if (age >= SERVER_WARMUP_S)
		{
			if (t->warm_kb < 0)
			{
				t->warm_kb = kb;
				t->warm_t = now;
				t->warm_age = age;
			}
			if (t->at_minute_kb < 0)
			{
				t->at_minute_kb = kb;
				t->at_minute_age = age;
			}
			t->last_kb = kb;
			t->last_t = now;
		}
	}
	closedir(dir);
}

/* ---- the monitor ---- */

static int
app_index(const char *name)
{
	for (int a = 0; a < NAPPS; a++)
		if (strcmp(apps[a].name, name) == 0)
			return a;
	return -1;
}

static void
bound_note(char *out, size_t len, const Hist *h, int bound, double g)
{
	double		low = hist_last_lowering(h);

	if (bound == hist_now(h))
		snprintf(out, len, "strict: no lowering in the last %.1f s", g);
	else
		snprintf(out, len, "grace: lowered from %d to %d at t=%.1f s, window %.1f s",
				 bound, hist_now(h), low, g);
}

static void
settle(int k, int count, int strict)
{
	if (pending_lower[k] > 0 && count > strict)
		note("settling: %s %d, lowered to %d %.1f s ago", k == NAPPS ? "governed backends" : apps[k].name,
			 count, strict, T() - pending_lower[k]);
	if (pending_lower[k] > 0 && count <= strict)
	{
		double		s = T() - pending_lower[k];

		note("settled: %s %d <= %d after %.1f s", k == NAPPS ? "governed backends" : apps[k].name,
			 count, strict, s);

		if (s > settle_max)
			settle_max = s;
		settle_sum += s;
		settle_n++;
		pending_lower[k] = 0;
	}
}

/*
 * Which pods of application app hold more than their share now, for a
 * violation past its grace period: "; above their share: POD (CONNECTIONS
 * of SHARE, demand DEMAND, lease LEASE_MS ms left), ..." in out, or "".
 */
static void
over_share(const char *app, char *out, size_t len)
{
	char		sql[512];
	PGresult   *res;
	size_t		used = 0;

	out[0] = '\0';
	snprintf(sql, sizeof(sql),
			 "SELECT pod, connections, share, coalesce(demand::text, 'none'), "
			 "coalesce((extract(epoch FROM lease_expires - clock_timestamp()) * 1000)::bigint::text, 'no') "
			 "FROM connbudget.pods WHERE application_name = '%s' AND connections > share "
			 "ORDER BY connections - share DESC LIMIT 5", app);
	res = query(&mon, MONITOR_APP, sql);
	if (res == NULL)
		return;
	for (int r = 0; r < PQntuples(res) && used < len; r++)
	{
		int			n = snprintf(out + used, len - used, "%s%s (%s of %s, demand %s, lease %s ms left)",
								 r == 0 ? "; above their share: " : ", ", PQgetvalue(res, r, 0),
								 PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), PQgetvalue(res, r, 3),
								 PQgetvalue(res, r, 4));

		if (n < 0)
			break;
		used += (size_t) n;
	}
	if (PQntuples(res) == 0)
		snprintf(out, len, "; no pod above its share");
	PQclear(res);
}

static void
monitor_sample(void)
{
	double		t0 = T(),
				t1,
				g;
	PGresult   *rb,
			   *ra,
			   *rp,
			   *rs;
	int			budget,
				governed,
				other,
				b_hi,
				psa[NAPPS] = {0},
				psa_governed = 0;
	char		why[200];
	bool		in_grace = false;

	rb = query(&mon, MONITOR_APP, "SELECT budget, governed, other FROM connbudget.budget");
	ra = rb ? query(&mon, MONITOR_APP,
					"SELECT application_name, max_connections, connections FROM connbudget.applications") : NULL;
	rp = ra ? query(&mon, MONITOR_APP,
					"SELECT application_name, count(*) FROM pg_stat_activity "
					"WHERE backend_type = 'client backend' GROUP BY 1") : NULL;
	rs = rp ? query(&mon, MONITOR_APP, "SELECT kind, used, capacity, consistent FROM connbudget.slots") : NULL;
	if (rs == NULL)
	{
		PQclear(rb);
		PQclear(ra);
		PQclear(rp);
		return;
	}
	t1 = T();
	samples++;
	g = grace(t1);
	if (g < grace_min)
		grace_min = g;
	if (g > grace_max)
		grace_max = g;

	budget = atoi(PQgetvalue(rb, 0, 0));
	governed = atoi(PQgetvalue(rb, 0, 1));
	other = atoi(PQgetvalue(rb, 0, 2));
	b_hi = hist_max(&budget_h, t0 - g, t1);
	in_grace |= b_hi != hist_now(&budget_h);
	bound_note(why, sizeof(why), &budget_h, b_hi, g);

	/* the views */
	checks += 2;
	if (governed > b_hi)
		violation("connbudget.budget: governed %d > budget %d (%s); budget view says %d, other %d",
				  governed, b_hi, why, budget, other);
	if (budget > b_hi)
		violation("connbudget.budget: budget %d is above the configured budget %d (%s)", budget, b_hi, why);
	for (int i = 0; i < PQntuples(ra); i++)
	{
		int			a = app_index(PQgetvalue(ra, i, 0));
		int			conns = atoi(PQgetvalue(ra, i, 2));
		int			cap_hi;

		if (a < 0)
			continue;
		cap_hi = hist_max(&cap_h[a], t0 - g, t1);
		if (cap_hi == INT_MAX)
			continue;
		in_grace |= cap_hi != hist_now(&cap_h[a]);
		checks++;
		if (conns > cap_hi)
		{
			char		holders[512] = "";

			bound_note(why, sizeof(why), &cap_h[a], cap_hi, g);
			if (strncmp(why, "strict", 6) == 0)
				over_share(apps[a].name, holders, sizeof(holders));
			violation("connbudget.applications: %s has %d connections, cap %d (%s); the view's max_connections is %s%s",
					  apps[a].name, conns, cap_hi, why,
					  PQgetisnull(ra, i, 1) ? "NULL" : PQgetvalue(ra, i, 1), holders);
		}
	}

	/* pg_stat_activity, which also shows backends still exiting */
	for (int i = 0; i < PQntuples(rp); i++)
	{
		int			a = app_index(PQgetvalue(rp, i, 0));

		if (a >= 0)
		{
			psa[a] = atoi(PQgetvalue(rp, i, 1));
			psa_governed += psa[a];
		}
	}
	checks++;
	if (psa_governed > b_hi)
	{
		bound_note(why, sizeof(why), &budget_h, b_hi, g);
		violation("pg_stat_activity: the governed applications have %d client backends, budget %d (%s); "
				  "api %d, web %d, secure %d, free %d; the view says governed %d",
				  psa_governed, b_hi, why, psa[APP_API], psa[APP_WEB], psa[APP_SECURE], psa[APP_FREE], governed);
	}
	settle(NAPPS, psa_governed, hist_now(&budget_h));
	for (int a = 0; a < NAPPS; a++)
	{
		int			cap_hi = hist_max(&cap_h[a], t0 - g, t1);

		if (hist_now(&cap_h[a]) != INT_MAX)
			settle(a, psa[a], hist_now(&cap_h[a]));
		if (cap_hi == INT_MAX)
			continue;
		checks++;
		if (psa[a] > cap_hi)
		{
			bound_note(why, sizeof(why), &cap_h[a], cap_hi, g);
			violation("pg_stat_activity: %s has %d client backends, cap %d (%s)",
					  apps[a].name, psa[a], cap_hi, why);
		}
	}

	/* connbudget.slots */
	for (int i = 0; i < PQntuples(rs); i++)
	{
		checks++;
		if (strcmp(PQgetvalue(rs, i, 3), "t") != 0 ||
			atoi(PQgetvalue(rs, i, 1)) > atoi(PQgetvalue(rs, i, 2)) ||
			atoi(PQgetvalue(rs, i, 1)) < 0)
			violation("connbudget.slots: %s used %s of %s, consistent %s", PQgetvalue(rs, i, 0),
					  PQgetvalue(rs, i, 1), PQgetvalue(rs, i, 2), PQgetvalue(rs, i, 3));
	}
	if (in_grace)
		grace_samples++;
	PQclear(rb);
	PQclear(ra);
	PQclear(rp);
	PQclear(rs);
}

/* the deadline by which a pod that left or died must no longer be listed */
static double
gone_deadline(const PodRec *r, double now)
{
	return r->gone_t + (HOLD_MAX_MS + hist_max(&ttl_h, r->gone_t - 120, now) +
						2.0 * hist_max(&refresh_h, r->gone_t - 120, now)) / 1000.0 + 5.0;
}

static long lingering_checked;

/* connbudget.pods: who is listed, and who must not be any more */
static void
pods_check(void)
{
	PGresult   *res = query(&mon, MONITOR_APP, "SELECT pod FROM connbudget.pods");
	double		now = T();

	if (res == NULL)
		return;
	for (int i = 0; i < PQntuples(res); i++)
	{
		const char *id = PQgetvalue(res, i, 0);
		const char *dash = strrchr(id, '-');
		int			k = dash ? atoi(dash + 1) : -1;
		PodRec	   *r;

		if (k < 0 || k >= npods || strcmp(pods[k].id, id) != 0)
		{
			checks++;
			violation("connbudget.pods lists a pod nobody runs: \"%s\"", id);
			continue;
		}
		r = &pods[k];
		r->seen_t = now;
		if (r->state == POD_GONE && !r->flagged && now > gone_deadline(r, now))
		{
			r->flagged = true;
			violation("pod %s %s at t=%.1f s and is still listed %.1f s later (lease and reclaim deadline %.1f s)",
					  r->id, r->gone_killed ? "was killed" : "left", r->gone_t, now - r->gone_t,
					  gone_deadline(r, now) - r->gone_t);
		}
	}
	/* every departed pod past its deadline counts as one check, once */
	for (int k = 0; k < npods; k++)
	{
		PodRec	   *r = &pods[k];

		if (r->state == POD_GONE && !r->flagged && r->gone_t > 0 && now > gone_deadline(r, now))
		{
			checks++;
			lingering_checked++;
			r->flagged = true;	/* checked: not listed */
		}
	}
	PQclear(res);
}

/* ---- restarts: pods must come back ---- */

static double ride_check_at = -1,
			restart_done_t;
static int *ride_pods,
			nride_pods;
static long ride_checked,
			ride_missing;
static double restart_seconds[64];
static int	nrestarts;

static void
ride_through_check(void)
{
	int			missing = 0,
				checked = 0;
	char		examples[300] = "";
	size_t		off = 0;

	pods_check();
	for (int i = 0; i < nride_pods; i++)
	{
		PodRec	   *r = &pods[ride_pods[i]];

		if (r->state != POD_LIVE)
			continue;
		checked++;
		if (r->seen_t < restart_done_t)
		{
			missing++;
			if (off < sizeof(examples) - 40)
				off += (size_t) snprintf(examples + off, sizeof(examples) - off, " %s (%s)", r->id,
										 kind_names[r->kind]);
		}
	}
	checks++;
	ride_checked += checked;
	ride_missing += missing;
	if (missing > 0)
		violation("after the restart at t=%.1f s, %d of %d pods did not come back within %d s:%s",
				  restart_done_t, missing, checked, RIDE_THROUGH_S, examples);
	ride_check_at = -1;
}

static void
reset_bounds_after_restart(double t)
{
	hist_reset(&budget_h, t, budget_for(reserved_now));
	for (int a = 0; a < NAPPS; a++)
		hist_reset(&cap_h[a], t, cap_of(&model[a]));
	for (int k = 0; k <= NAPPS; k++)
		pending_lower[k] = 0;
}

static void
ev_restart(bool immediate)
{
	char		cmd[4096];
	const char *dir = getenv("CB_CLUSTER_DIR");
	const char *bindir = getenv("PG_BINDIR");
	double		t_a;
	int			rc;

	if (ride_check_at > 0)
		ride_through_check();
	note("restart -m %s", immediate ? "immediate" : "fast");
	PQfinish(mon);
	PQfinish(ctl);
	mon = ctl = NULL;
	snprintf(cmd, sizeof(cmd),
			 "'%s/pg_ctl' -D '%s/data' -l '%s/server.log' -w -t 300 -m %s restart >'%s/pg_ctl.log' 2>&1",
			 bindir ? bindir : "", dir, dir, immediate ? "immediate" : "fast", dir);
	t_a = T();
	rc = system(cmd);
	if (rc != 0)
		failure("pg_ctl restart -m %s failed (status %d): see %s/pg_ctl.log", immediate ? "immediate" : "fast", rc, dir);
	mon = admin_connect(MONITOR_APP);
	ctl = admin_connect(CONTROL_APP);
	restart_done_t = T();
	if (nrestarts < 64)
		restart_seconds[nrestarts] = restart_done_t - t_a;
	nrestarts++;
	period++;
	events[immediate ? E_RESTART_IMMEDIATE : E_RESTART_FAST]++;
	reset_bounds_after_restart(restart_done_t);
	note("restart -m %s done: %.1f s until the monitor was back", immediate ? "immediate" : "fast",
		 restart_done_t - t_a);

	/* the limits survived and are in force from the first connection */
	check_limits_in_force("after the restart");

	/* every live pod must show up again */
	free(ride_pods);
	ride_pods = malloc(sizeof(int) * (size_t) (npods + 1));
	nride_pods = 0;
	for (int k = 0; k < npods; k++)
		if (pods[k].state == POD_LIVE)
			ride_pods[nride_pods++] = k;
	ride_check_at = restart_done_t + RIDE_THROUGH_S;
}

/* ---- limits and settings ---- */

static void
row_values(int a, const Limits *l, char *out, size_t len)
{
	char		max[16] = "NULL",
				roles[80] = "NULL";

	if (l->max >= 0)
		snprintf(max, sizeof(max), "%d", l->max);
	if (l->roles[0])
		snprintf(roles, sizeof(roles), "'%s'", l->roles);
	snprintf(out, len, "('%s', %d, %s, %d, %s)", apps[a].name, l->min, max, l->weight, roles);
}

/* run a change of the limits; false (and a failure) if it did not commit */
static bool
change(const char *sql, double *t_start, double *t_end)
{
	PGresult   *res;

	*t_start = T();
	res = PQexec(ctl, sql);
	*t_end = T();
	if (!result_ok(res))
	{
		failure("a valid change was refused: %s: %s", sql, PQresultErrorMessage(res));
		PQclear(res);
		if (PQstatus(ctl) == CONNECTION_BAD)
		{
			PQfinish(ctl);
			ctl = admin_connect(CONTROL_APP);
		}
		return false;
	}
	PQclear(res);
	return true;
}

static void
apply_cap_change(int a, const Limits *old, double ts, double te)
{
	int			o = cap_of(old),
				n = cap_of(&model[a]);

	if (n == o)
		return;
	hist_change(&cap_h[a], ts, te, o, n);
	if (n < o && n != INT_MAX)
		pending_lower[a] = te;
	else
		pending_lower[a] = 0;
}

static int
sum_mins(int except)
{
	int			s = 0;

	for (int a = 0; a < NAPPS; a++)
		if (a != except && model[a].exists)
			s += model[a].min;
	return s;
}

/* a valid change of one application's limits */
static void
ev_limits(void)
{
	int			a = pick(NAPPS - 1);	/* soak-free stays without a row */
	Limits		old = model[a];
	char		sql[512],
				row[256];
	double		ts,
				te;
	int			r = pick(100);
	int			kind;

	if (!model[a].exists)
		return;
	if (r < 40)
	{
		int			cap;

		do
			cap = apps[a].cap_lo + pick(apps[a].cap_hi - apps[a].cap_lo + 1);
		while (cap == model[a].max || cap < model[a].min);
		model[a].max = cap;
		kind = cap > old.max ? E_CAP_UP : E_CAP_DOWN;
		snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET max_connections = %d "
				 "WHERE application_name = '%s'", cap, apps[a].name);
	}
	else if (r < 60)
	{
		int			min;

		do
			min = pick(apps[a].min_hi + 1);
		while (min == model[a].min);
		if (min > model[a].max || sum_mins(a) + min > budget_for(30))
			return;
		model[a].min = min;
		kind = E_MIN;
		snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET min_connections = %d "
				 "WHERE application_name = '%s'", min, apps[a].name);
	}
	else if (r < 75)
	{
		int			w;

		do
			w = 1 + pick(4);
		while (w == model[a].weight);
		model[a].weight = w;
		kind = E_WEIGHT;
		snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET weight = %d "
				 "WHERE application_name = '%s'", w, apps[a].name);
	}
	else if (r < 88 && (a == APP_SECURE || a == APP_API))
	{
		const char *const *choices = a == APP_SECURE ? secure_bindings : api_bindings;
		int			n = a == APP_SECURE ? 4 : 2;
		const char *roles;

		do
			roles = choices[pick(n)];
		while (strcmp(roles, model[a].roles) == 0);
		snprintf(model[a].roles, sizeof(model[a].roles), "%s", roles);
		kind = E_ROLES;
		if (roles[0])
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET roles = '%s' "
					 "WHERE application_name = '%s'", roles, apps[a].name);
		else
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET roles = NULL "
					 "WHERE application_name = '%s'", apps[a].name);
	}
	else if (r >= 88)
	{
		/* the row goes, and comes back in 10 to 40 s */
		saved_row[a] = model[a];
		model[a].exists = false;
		restore_at[a] = T() + uniform(10, 40);
		kind = E_DELETE;
		snprintf(sql, sizeof(sql), "DELETE FROM connbudget.application_limits WHERE application_name = '%s'",
				 apps[a].name);
	}
	else
		return;
	if (!change(sql, &ts, &te))
	{
		model[a] = old;
		return;
	}
	events[kind]++;
	row_values(a, &model[a], row, sizeof(row));
	note("%s: %s %s", event_names[kind], apps[a].name, model[a].exists ? row : "(no row)");
	apply_cap_change(a, &old, ts, te);
	check_limits_in_force("right after a change of the limits");
}

static void
ev_restore_row(int a)
{
	Limits		old = model[a];
	char		sql[512],
				row[256];
	double		ts,
				te;

	model[a] = saved_row[a];
	restore_at[a] = 0;
	row_values(a, &model[a], row, sizeof(row));
	snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits "
			 "(application_name, min_connections, max_connections, weight, roles) VALUES %s", row);
	if (!change(sql, &ts, &te))
	{
		model[a] = old;
		return;
	}
	events[E_RESTORE]++;
	note("row put back: %s", row);
	apply_cap_change(a, &old, ts, te);
	check_limits_in_force("right after a row was put back");
}

/* an invalid change: refused with the error that names the rule, nothing changed */
static void
ev_invalid(void)
{
	char		sql[512];
	const char *want_state,
			   *want_text;
	char		before_limits[2048],
				after_limits[2048],
				before_settings[2048],
				after_settings[2048],
				before_auto[1024],
				after_auto[1024];
	PGresult   *res;
	int			a = APP_API;
	const char *state,
			   *msg;

	for (int tries = 0; tries < 4 && !model[a].exists; tries++)
		a = pick(NAPPS - 1);
	if (!model[a].exists)
		return;
	switch (pick(11))
	{
		case 0:
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET weight = 0 WHERE application_name = '%s'", apps[a].name);
			want_state = "23514", want_text = "weight_at_least_1";
			break;
		case 1:
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET min_connections = max_connections + 1 WHERE application_name = '%s'", apps[a].name);
			want_state = "23514", want_text = "min_connections_not_above_max_connections";
			break;
		case 2:
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET max_connections = -1 WHERE application_name = '%s'", apps[a].name);
			want_state = "23514", want_text = "max_connections_not_negative";
			break;
		case 3:
			snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits (application_name) VALUES ('')");
			want_state = "23514", want_text = "application_name_not_empty";
			break;
		case 4:
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET roles = '{}' WHERE application_name = '%s'", apps[a].name);
			want_state = "23514", want_text = "roles_not_empty_list";
			break;
		case 5:
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits SET min_connections = %d, max_connections = NULL WHERE application_name = '%s'",
					 budget_for(reserved_now) + 1, apps[a].name);
			want_state = "23514", want_text = "min_connections add up to";
			break;
		case 6:
			snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits (application_name) VALUES ('%s')", apps[a].name);
			want_state = "23505", want_text = "application_limits_pkey";
			break;
		case 7:
			snprintf(sql, sizeof(sql), "ALTER SYSTEM SET connbudget.refresh_interval = 5");
			want_state = "22023", want_text = "outside the valid range";
			break;
		case 8:
			snprintf(sql, sizeof(sql), "ALTER SYSTEM SET connbudget.pod_ttl = 50");
			want_state = "22023", want_text = "outside the valid range";
			break;
		case 9:
			snprintf(sql, sizeof(sql), "ALTER SYSTEM SET connbudget.reserved_connections = -1");
			want_state = "22023", want_text = "outside the valid range";
			break;
		default:
			snprintf(sql, sizeof(sql), "ALTER SYSTEM SET connbudget.pod_ttl = 'soon'");
			want_state = "22023", want_text = "invalid value for parameter";
			break;
	}
	value_text(&ctl, CONTROL_APP, LIMITS_TEXT_SQL, before_limits, sizeof(before_limits));
	value_text(&ctl, CONTROL_APP, SETTINGS_TEXT_SQL, before_settings, sizeof(before_settings));
	value_text(&ctl, CONTROL_APP, AUTO_CONF_SQL, before_auto, sizeof(before_auto));
	res = PQexec(ctl, sql);
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	checks++;
	if (result_ok(res))
		violation("an invalid change was accepted: %s", sql);
	else if (state == NULL || strcmp(state, want_state) != 0 || msg == NULL || strstr(msg, want_text) == NULL)
		violation("an invalid change was refused with an unexpected error: %s: %s %s (expected %s naming \"%s\")",
				  sql, state ? state : "-", msg ? msg : "-", want_state, want_text);
	else
	{
		events[E_INVALID]++;
		note("invalid change refused: %.80s: %s %.80s", sql, state, msg);
	}
	PQclear(res);
	value_text(&ctl, CONTROL_APP, LIMITS_TEXT_SQL, after_limits, sizeof(after_limits));
	value_text(&ctl, CONTROL_APP, SETTINGS_TEXT_SQL, after_settings, sizeof(after_settings));
	value_text(&ctl, CONTROL_APP, AUTO_CONF_SQL, after_auto, sizeof(after_auto));
	checks++;
	if (strcmp(before_limits, after_limits) != 0 || strcmp(before_settings, after_settings) != 0 ||
		strcmp(before_auto, after_auto) != 0)
		violation("a refused change changed something: %s (limits \"%s\" -> \"%s\", settings \"%s\" -> \"%s\", "
				  "postgresql.auto.conf \"%s\" -> \"%s\")", sql, before_limits, after_limits,
				  before_settings, after_settings, before_auto, after_auto);
}

/* ALTER SYSTEM + pg_reload_conf(), then wait until the server uses it */
static bool
set_setting(const char *name, int value, const char *confirm_sql, long want)
{
	char		sql[256];
	double		deadline;
	long		got = -1;

	if (value < 0)
		snprintf(sql, sizeof(sql), "ALTER SYSTEM RESET %s", name);
	else
		snprintf(sql, sizeof(sql), "ALTER SYSTEM SET %s = %d", name, value);
	{
		PGresult   *res = query(&ctl, CONTROL_APP, sql);

		if (res == NULL)
			return false;
		PQclear(res);
	}
	if (value_long(&ctl, CONTROL_APP, "SELECT pg_reload_conf()::int") != 1)
		return false;
	deadline = T() + 10;
	while (T() < deadline)
	{
		got = value_long(&ctl, CONTROL_APP, confirm_sql);
		if (got == want)
			return true;
		sleep_ms(20);
	}
	failure("%s was not in force 10 s after pg_reload_conf() (%ld, expected %ld)", sql, got, want);
	return false;				/* the bounds keep what is in force */
}

static void
change_reserved(int value, int effective)
{
	char		confirm[128];
	int			old = budget_for(reserved_now);
	double		ts = T(),
				te;

	snprintf(confirm, sizeof(confirm), "SELECT extension_reserved FROM connbudget.budget");
	if (!set_setting("connbudget.reserved_connections", value, confirm, effective))
		return;
	te = T();
	reserved_now = effective;
	hist_change(&budget_h, ts, te, old, budget_for(effective));
	pending_lower[NAPPS] = budget_for(effective) < old ? te : 0;
}

#define SETTING_SQL(name) "SELECT setting::int FROM pg_settings WHERE name = '" name "'"

/*
 * Set an integer setting of connbudget (value -1: back to its default),
 * whose value in force becomes effective; its history h and current value
 * *now follow.
 */
static void
change_setting(const char *name, Hist *h, int *now, int value, int effective)
{
	char		confirm[160];
	double		ts = T(),
				te;

	snprintf(confirm, sizeof(confirm), SETTING_SQL("%s"), name);
	if (!set_setting(name, value, confirm, effective))
		return;
	te = T();
	hist_change(h, ts, te, *now, effective);
	*now = effective;
}

#define change_refresh(v, e) change_setting("connbudget.refresh_interval", &refresh_h, &refresh_now, v, e)
#define change_ttl(v, e) change_setting("connbudget.pod_ttl", &ttl_h, &ttl_now, v, e)

static void
ev_settings(void)
{
	static const int refreshes[] = {500, 750, 1000, 1500};
	static const int ttls[] = {2000, 3000, 4000, 6000};
	int			r = pick(3);

	if (r == 0)
	{
		int			v = refreshes[pick(4)];

		/* keep pod_ttl at least two refresh intervals */
		if (v == refresh_now || ttl_now < 2 * v)
			return;
		change_refresh(v, v);
		events[E_SET_REFRESH]++;
		note("connbudget.refresh_interval = %d ms", v);
	}
	else if (r == 1)
	{
		int			v = ttls[pick(4)];

		if (v == ttl_now || v < 2 * refresh_now)
			return;
		change_ttl(v, v);
		events[E_SET_TTL]++;
		note("connbudget.pod_ttl = %d ms", v);
	}
	else
	{
		int			v = 5 + pick(26);

		if (v == reserved_now)
			return;
		change_reserved(v, v);
		events[E_SET_RESERVED]++;
		note("connbudget.reserved_connections = %d (budget %d)", v, budget_for(v));
	}
}

/* ---- the fleet's events ---- */

static int
random_pod(bool (*ok) (const PodRec *))
{
	int			candidates = 0,
				chosen = -1;

	/* reservoir sampling over the pods that qualify */
	for (int k = 0; k < npods; k++)
		if (ok(&pods[k]) && pick(++candidates) == 0)
			chosen = k;
	return chosen;
}

static bool
leavable(const PodRec *r)
{
	return r->state == POD_LIVE && !r->permanent && !r->churn && procs[r->proc].alive &&
		!procs[r->proc].killed && !procs[r->proc].told_exit;
}

static bool
churnable(const PodRec *r)
{
	return r->state == POD_LIVE && r->churn;
}

static int
process_with_room(void)
{
	int			candidates = 0,
				chosen = -1;

	for (int i = 0; i < nprocs; i++)
	{
		Proc	   *p = &procs[i];

		if (p->alive && !p->killed && !p->told_exit && !p->pool_process && p->npods > 0 &&
			p->npods < 10 && pick(++candidates) == 0)
			chosen = i;
	}
	return chosen;
}

static void
ev_join(int n)
{
	for (int i = 0; i < n; i++)
	{
		int			proc = process_with_room();
		int			k;

		if (proc < 0)
			return;
		k = join_pod(proc, pick_app(), pick_kind(), false, false);
		note("pod %s (%s) joined process %d", pods[k].id, kind_names[pods[k].kind], (int) procs[proc].pid);
	}
}

static void
ev_spawn(void)
{
	int			proc = spawn_process(false);
	int			n = 4 + pick(5);

	if (proc < 0)
		return;
	for (int i = 0; i < n; i++)
		join_pod(proc, pick_app(), pick_kind(), false, false);
	note("pod process %d started with %d pods", (int) procs[proc].pid, n);
}

static void
ev_leave(void)
{
	int			k = random_pod(leavable);

	if (k < 0)
		return;
	leave_pod(k);
	note("pod %s (%s) leaves", pods[k].id, kind_names[pods[k].kind]);
}

static void
ev_kill(void)
{
	int			candidates = 0,
				chosen = -1,
				n;

	for (int i = 0; i < nprocs; i++)
		if (procs[i].alive && !procs[i].killed && !procs[i].told_exit && !procs[i].pool_process &&
			procs[i].npods > 0 && pick(++candidates) == 0)
			chosen = i;
	if (chosen < 0)
		return;
	n = procs[chosen].npods;
	kill(procs[chosen].pid, SIGKILL);
	procs[chosen].killed = true;
	for (int k = 0; k < npods; k++)
		if (pods[k].proc == chosen)
			pod_gone(k, T(), true);
	events[E_KILL]++;
	events[E_KILLED_PODS] += n;
	note("pod process %d killed with SIGKILL (%d pods)", (int) procs[chosen].pid, n);
}

static void
ev_pool_replace(void)
{
	int			k = random_pod(churnable);
	int			n;

	if (k < 0 || pool_proc < 0)
		return;
	leave_pod(k);
	events[E_LEAVE]--;
	n = join_pod(pool_proc, pods[k].app, KIND_POOL, false, true);
	events[E_JOIN]--;
	events[E_POOL_REPLACE]++;
	note("pool process: pool %s closed, %s opened", pods[k].id, pods[n].id);
}

static void
ev_terminate(void)
{
	char		sql[512];
	long		n;
	int			want = 1 + pick(6);

	snprintf(sql, sizeof(sql),
			 "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
			 "(SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
			 "AND application_name IN ('soak-api', 'soak-web', 'soak-secure', 'soak-free') "
			 "ORDER BY random() LIMIT %d) s", want);
	n = value_long(&ctl, CONTROL_APP, sql);
	if (n < 0)
		return;
	events[E_TERMINATE]++;
	events[E_TERMINATED] += n;
	note("pg_terminate_backend: %ld backends", n);
}

/* keep the live pods near the target */
static void
ev_adjust(void)
{
	int			live = live_pods();

	if (live < target_pods - 12)
		ev_spawn();
	else if (live < target_pods - 3)
		ev_join(1 + pick(2));
	else if (live > target_pods + 6)
	{
		ev_leave();
		if (live > target_pods + 15)
			ev_leave();
	}
	/* empty pod processes end */
	for (int i = 0; i < nprocs; i++)
	{
		Proc	   *p = &procs[i];

		if (p->alive && !p->killed && !p->told_exit && !p->pool_process && p->npods == 0)
		{
			bool		leaving = false;

			for (int k = 0; k < npods && !leaving; k++)
				leaving = pods[k].proc == i && pods[k].state == POD_LEAVING;
			if (!leaving)
			{
				send_cmd(i, "exit\n");
				p->told_exit = true;
			}
		}
	}
}

/* ---- progress and the end ---- */

static long
events_total(void)
{
	long		n = 0;

	for (int e = 0; e < NEVENTS; e++)
		if (e != E_KILLED_PODS && e != E_TERMINATED)
			n += events[e];
	return n;
}

static void
progress(void)
{
	printf("t=%5.0f s  pods %d live (target %d) in %d pod processes + the pool process; events %ld "
		   "(join %ld, leave %ld, kill %ld, terminate %ld, limits %ld, invalid %ld, settings %ld, restarts %ld); "
		   "checks %ld; violations %ld; failures %ld; pool process RssAnon %ld KiB\n",
		   T(), live_pods(), target_pods, alive_procs(), events_total(), events[E_JOIN] + events[E_POOL_REPLACE],
		   events[E_LEAVE] + events[E_POOL_REPLACE], events[E_KILL], events[E_TERMINATE],
		   events[E_CAP_UP] + events[E_CAP_DOWN] + events[E_MIN] + events[E_WEIGHT] + events[E_ROLES] +
		   events[E_DELETE] + events[E_RESTORE], events[E_INVALID],
		   events[E_SET_REFRESH] + events[E_SET_TTL] + events[E_SET_RESERVED],
		   events[E_RESTART_FAST] + events[E_RESTART_IMMEDIATE], checks, violations, nfailures_total,
		   pool_proc >= 0 && procs[pool_proc].alive ? rss_anon_kb(procs[pool_proc].pid) : -1L);
	if (pool_heap_used >= 0)
		note("pool process: malloc in use %lld bytes, held %lld, %d connections (at t=%.0f s)", pool_heap_used,
			 pool_heap_held, pool_conns, pool_heap_t);
	if (pool_proc >= 0)
		send_cmd(pool_proc, "mem\n");
	fflush(stdout);
}

/* waits while the monitor goes on sampling */
static void
wait_monitoring(double seconds)
{
	double		until = T() + seconds,
				next = T();

	while (T() < until)
	{
		reap();
		read_acks();
		if (T() >= next)
		{
			monitor_sample();
			next = T() + 1;
		}
		sleep_ms(20);
	}
}

/* the end checks, each a line of the report */
typedef struct EndCheck
{
	char		what[200];
	char		result[600];
	bool		ok;
} EndCheck;
static EndCheck end_checks[24];
static int	nend_checks;

static void
end_check(bool ok, const char *what, const char *fmt,...)
{
	EndCheck   *e = &end_checks[nend_checks < 24 ? nend_checks++ : 23];
	va_list		ap;

	snprintf(e->what, sizeof(e->what), "%s", what);
	va_start(ap, fmt);
	vsnprintf(e->result, sizeof(e->result), fmt, ap);
	va_end(ap);
	e->ok = ok;
	checks++;
	printf("end check %s: %s: %s\n", ok ? "ok" : "FAILED", what, e->result);
	fflush(stdout);
	if (!ok)
		failure("end check: %s: %s", what, e->result);
}

/* counters equal the backends, with the fleet connected and quiet */
static void
check_counters_equal_backends(void)
{
	double		deadline = T() + 60;
	char		last[600] = "no stable sample";
	bool		ok = false;
	int			stable = 0,
				tries = 0;

	while (T() < deadline && !ok)
	{
		PGresult   *r1,
				   *r2,
				   *rv,
				   *ra;
		bool		same;

		tries++;
		r1 = query(&mon, MONITOR_APP, "SELECT string_agg(pid::text, ',' ORDER BY pid), count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
		rv = query(&mon, MONITOR_APP, "SELECT governed, other FROM connbudget.budget");
		ra = query(&mon, MONITOR_APP,
				   "SELECT a.application_name, a.connections, "
				   "(SELECT count(*) FROM pg_stat_activity p WHERE p.backend_type = 'client backend' "
				   " AND p.application_name = a.application_name) FROM connbudget.applications a");
		r2 = query(&mon, MONITOR_APP, "SELECT string_agg(pid::text, ',' ORDER BY pid), count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
		if (!r1 || !rv || !ra || !r2)
		{
			PQclear(r1);
			PQclear(rv);
			PQclear(ra);
			PQclear(r2);
			sleep_ms(500);
			continue;
		}
		same = strcmp(PQgetvalue(r1, 0, 0), PQgetvalue(r2, 0, 0)) == 0;
		if (same)
		{
			int			backends = atoi(PQgetvalue(r1, 0, 1));
			int			governed = atoi(PQgetvalue(rv, 0, 0));
			int			other = atoi(PQgetvalue(rv, 0, 1));
			size_t		off;
			bool		apps_ok = true;

			stable++;
			off = (size_t) snprintf(last, sizeof(last), "governed %d + other %d = %d, client backends %d;",
									governed, other, governed + other, backends);
			for (int i = 0; i < PQntuples(ra); i++)
			{
				bool		eq = strcmp(PQgetvalue(ra, i, 1), PQgetvalue(ra, i, 2)) == 0;

				apps_ok &= eq;
				if (off < sizeof(last) - 60)
					off += (size_t) snprintf(last + off, sizeof(last) - off, " %s %s/%s%s",
											 PQgetvalue(ra, i, 0), PQgetvalue(ra, i, 1),
											 PQgetvalue(ra, i, 2), eq ? "" : " (differ)");
			}
			ok = governed + other == backends && apps_ok;
		}
		PQclear(r1);
		PQclear(rv);
		PQclear(ra);
		PQclear(r2);
		if (!ok)
			wait_monitoring(0.5);
	}
	end_check(ok, "fleet connected and quiet: budget.governed + budget.other = client backends in pg_stat_activity, "
			  "and each application's connections = its backends (connections/backends)",
			  "%s (%d samples, %d with pg_stat_activity unchanged around the read)", last, tries, stable);
}

static void
restore_limits_and_settings(void)
{
	char		now_auto[1024];

	/* rows first: put back what the churn changed */
	for (int a = 0; a < NAPPS; a++)
	{
		Limits		want;
		Limits		old = model[a];
		char		sql[512],
					row[256];
		double		ts,
					te;

		memset(&want, 0, sizeof(want));
		want.exists = apps[a].configured;
		want.min = apps[a].min0;
		want.max = apps[a].max0;
		want.weight = apps[a].weight0;
		snprintf(want.roles, sizeof(want.roles), "%s", apps[a].roles0 ? apps[a].roles0 : "");
		restore_at[a] = 0;
		if (!want.exists)
			continue;
		row_values(a, &want, row, sizeof(row));
		if (!model[a].exists)
			snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits "
					 "(application_name, min_connections, max_connections, weight, roles) VALUES %s", row);
		else if (memcmp(&want, &model[a], sizeof(want)) != 0)
			snprintf(sql, sizeof(sql), "UPDATE connbudget.application_limits "
					 "SET (application_name, min_connections, max_connections, weight, roles) = %s "
					 "WHERE application_name = '%s'", row, apps[a].name);
		else
			continue;
		model[a] = want;
		if (!change(sql, &ts, &te))
			continue;
		note("put back: %s", row);
		apply_cap_change(a, &old, ts, te);
	}
	check_limits_in_force("after the limits were put back");

	/* then the settings: nothing of connbudget's in postgresql.auto.conf */
	value_text(&ctl, CONTROL_APP, AUTO_CONF_SQL, now_auto, sizeof(now_auto));
	if (strstr(now_auto, "connbudget.refresh_interval"))
		change_refresh(-1, 1000);
	if (strstr(now_auto, "connbudget.pod_ttl"))
		change_ttl(-1, 3000);
	if (strstr(now_auto, "connbudget.reserved_connections"))
		change_reserved(-1, reserved_initial);
	note("limits and settings put back");
}

/* ---- the report ---- */

static bool
pool_memory_ok(void)
{
	return trimmed_warm >= 0 && trimmed_end >= 0 && trimmed_end - trimmed_warm <= POOL_PROCESS_BOUND_KB;
}

static const char *
mib(long kb, char *buf, size_t len)
{
	snprintf(buf, len, "%.2f MiB", kb / 1024.0);
	return buf;
}

static const char *
signed_kib(long kb, char *buf, size_t len)
{
	snprintf(buf, len, "%+ld KiB", kb);
	return buf;
}

typedef struct MemSummary
{
	int			n;				/* processes with growth measured */
	long		max_growth;
	int			max_pid;
	double		max_span;
	double		span_sum;
	long		growth_sum;
} MemSummary;

static int	processes_seen[NMKINDS];

static void
memory_summaries(MemSummary out[NMKINDS])
{
	memset(out, 0, sizeof(MemSummary) * NMKINDS);
	memset(processes_seen, 0, sizeof(processes_seen));
	for (int i = 0; i < ntracked; i++)
	{
		Tracked    *t = &tracked[i];
		MemSummary *m = &out[t->kind];

		processes_seen[t->kind]++;
		/* growth after its own first minute, over at least half a minute more */
		if (t->warm_kb < 0 || t->last_t - t->warm_t < 30)
			continue;
		if (m->n == 0 || t->last_kb - t->warm_kb > m->max_growth)
		{
			m->max_growth = t->last_kb - t->warm_kb;
			m->max_pid = t->pid;
			m->max_span = t->last_t - t->warm_t;
		}
		m->n++;
		m->span_sum += t->last_t - t->warm_t;
		m->growth_sum += t->last_kb - t->warm_kb;
	}
}

/* at-one-minute size of a kind in a restart period, -1 if none */
static long
at_minute(int kind, int p)
{
	for (int i = 0; i < ntracked; i++)
		if (tracked[i].kind == kind && tracked[i].period == p && tracked[i].at_minute_kb >= 0)
			return tracked[i].at_minute_kb;
	return -1;
}

static int	end_closed,
			end_killed;
static int	min_live = INT_MAX,
			max_live;
static double live_sum;
static long live_samples;
static int	max_procs;

static void
write_report(const char *path, const char *seed_text, double churn_seconds, double total_seconds,
			 long shmem_end, const char *log_summary, bool log_ok)
{
	FILE	   *f = fopen(path, "w");
	char		b1[32],
				b2[32],
				b3[32],
				b4[32];
	MemSummary ms[NMKINDS];
	bool		pass = violations == 0 && nfailures_total == 0;
	long		pods_by_kind[NKINDS] = {0},
				pods_by_app[NAPPS] = {0};

	if (f == NULL)
	{
		fprintf(stderr, "soak: cannot write %s\n", path);
		return;
	}
	for (int k = 0; k < npods; k++)
	{
		pods_by_kind[pods[k].kind]++;
		pods_by_app[pods[k].app]++;
	}
	fprintf(f, "**Result: %s.** %.0f s of churn (%.0f s in all with the start and the end checks), "
			"seed %s (`CB_TEST_SEED=%s bash bench/run soak %.0f` repeats the schedule); "
			"%ld checks, %ld violations, %ld other failures.\n\n",
			pass ? "passed" : "FAILED", churn_seconds, total_seconds, seed_text, seed_text, duration,
			checks, violations, nfailures_total);

	fprintf(f, "One throwaway server: max_connections %d, superuser_reserved_connections %d, "
			"connbudget.reserved_connections 10 at the start (budget %d), password logins "
			"(scram-sha-256) for every role but the superuser.  The fleet:\n\n",
			max_connections, superuser_reserved, budget_for(10));
	fprintf(f, "| application | role | limits at the start (min, max, weight, roles) | caps the churn picks | pods run |\n"
			"|---|---|---|---|---:|\n");
	for (int a = 0; a < NAPPS; a++)
	{
		if (apps[a].configured)
			fprintf(f, "| %s | %s | %d, %d, %d, %s | %d to %d | %ld |\n", apps[a].name, apps[a].role,
					apps[a].min0, apps[a].max0, apps[a].weight0, apps[a].roles0 ? apps[a].roles0 : "any",
					apps[a].cap_lo, apps[a].cap_hi, pods_by_app[a]);
		else
			fprintf(f, "| %s | %s | no row: governed with the defaults (its pods give pod ids) | none | %ld |\n",
					apps[a].name, apps[a].role, pods_by_app[a]);
	}
	fprintf(f, "\nPods: %d to %d live at a time (%.0f on average; the target wanders between %d and %d), "
			"%d pods in all: %ld C pools (connbudget_pool.h, 1 to %d worker threads each running short "
			"queries, 8%% of them holding a connection 0.3 to %.1f s in pg_sleep(), 6%% transactions through "
			"cbpool_run()), %ld protocol 2 pods (SET connbudget.demand / SHOW connbudget.share, or set_config() "
			"and current_setting(), in the database soakdb or postgres) and %ld protocol 1 pods "
			"(connbudget.pool_share(n) in postgres), each protocol pod holding min(its demand of 1 to 5, its share).  "
			"Pods live in pod processes (4 to 10 pods each, up to %d at once); the pool process "
			"hosts %d pools for the whole run and %d more that are replaced now and then.\n\n",
			min_live == INT_MAX ? 0 : min_live, max_live, live_samples ? live_sum / live_samples : 0.0,
			POP_LO, POP_HI, npods, pods_by_kind[KIND_POOL], MAX_WORKERS, (HOLD_MAX_MS - 500) / 1000.0,
			pods_by_kind[KIND_P2], pods_by_kind[KIND_P1], max_procs,
			POOL_PROCESS_PERMANENT, POOL_PROCESS_CHURN);

	fprintf(f, "Events (a random schedule from the seed):\n\n| event | count |\n|---|---:|\n");
	for (int e = 0; e < NEVENTS; e++)
		fprintf(f, "| %s | %ld |\n", event_names[e], events[e]);
	fprintf(f, "\nFrom pg_ctl restart to the monitor connected again:");
	for (int i = 0; i < nrestarts && i < 64; i++)
		fprintf(f, "%s %.1f s", i ? "," : "", restart_seconds[i]);
	fprintf(f, "%s\n\n", nrestarts ? "." : " no restart.");

	fprintf(f, "Checks: %ld monitor samples (one a second: connbudget.budget, connbudget.applications, "
			"client backends per application in pg_stat_activity, connbudget.slots), %ld checks in all, "
			"including %ld pods that left or died checked to be gone from connbudget.pods by their deadline, "
			"%ld pods checked to come back within %d s of a restart, and the limits checked against the "
			"table after every change and every restart.  **Violations: %ld.**\n\n",
			samples, checks, lingering_checked, ride_checked, RIDE_THROUGH_S, violations);
	for (int i = 0; i < nviolation_lines; i++)
		fprintf(f, "- %s\n", violation_lines[i]);
	if (nviolation_lines)
		fprintf(f, "\n");
	if (nfailures)
	{
		fprintf(f, "Other failures (%ld):\n\n", nfailures_total);
		for (int i = 0; i < nfailures; i++)
			fprintf(f, "- %s\n", failures[i]);
		fprintf(f, "\n");
	}
	fprintf(f, "The bounds: each capped application's connections (the view) and client backends "
			"(pg_stat_activity) <= its cap; governed connections (the view) and the governed applications' "
			"backends (pg_stat_activity) <= the budget.  After a cap or the budget was lowered, open "
			"connections stay until the pools shrink (docs/enforcement.md), so for G seconds the bound is the "
			"highest value in force during the last G seconds, where G = 3 refresh intervals + pod_ttl + %.1f s "
			"(the longest a worker holds a connection), each the largest in force in the last two minutes: the "
			"allocator publishes within a tenth of an interval, every pool refreshes within 1.2 intervals and then "
			"closes idle connections at once and retires the others as they are released, and one more interval "
			"and a lease are slack for a loaded machine.  G was %.1f to %.1f s; %ld samples fell in such a window.  "
			"After a restart the counts start from zero and the bounds are strict at once.  Lowered bounds were "
			"reached again %ld times, after %.1f s on average and %.1f s at most.\n\n",
			HOLD_MAX_MS / 1000.0, grace_min > grace_max ? 0 : grace_min, grace_max, grace_samples, settle_n,
			settle_n ? settle_sum / settle_n : 0, settle_max);

	memory_summaries(ms);
	fprintf(f, "Memory (RssAnon, /proc/PID/status: private memory, without the shared buffers a "
			"backend touched), sampled every %d s:\n\n", MEM_SAMPLE_S);
	fprintf(f, "| process | first | after warm-up | at the end | growth | bound | |\n|---|---:|---:|---:|---:|---:|---|\n");
	if (SOAK_ASAN)
		fprintf(f, "| the pool process (%d pools, %d worker threads) | %s | %s | %s | %s | not checked | AddressSanitizer keeps freed memory in quarantine |\n",
				POOL_PROCESS_PERMANENT + POOL_PROCESS_CHURN, 2 * (POOL_PROCESS_PERMANENT + POOL_PROCESS_CHURN),
				mib(pool_rss_first, b1, sizeof(b1)), mib(pool_rss_warm, b2, sizeof(b2)),
				mib(pool_rss_end, b3, sizeof(b3)), "-");
	else
	{
		fprintf(f, "| the pool process (%d pools, %d worker threads), warm-up %.0f s | %s | %s | %s | %s | | |\n",
				POOL_PROCESS_PERMANENT + POOL_PROCESS_CHURN, 2 * (POOL_PROCESS_PERMANENT + POOL_PROCESS_CHURN),
				pool_warm_t, mib(pool_rss_first, b1, sizeof(b1)), mib(pool_rss_warm, b2, sizeof(b2)),
				mib(pool_rss_end, b3, sizeof(b3)),
				pool_rss_warm >= 0 && pool_rss_end >= 0 ? signed_kib(pool_rss_end - pool_rss_warm, b4, sizeof(b4)) : "-");
		fprintf(f, "| the same right after malloc_trim(0) (what malloc holds free given back) | | %s | %s | %s | %d KiB | %s |\n",
				mib(trimmed_warm, b1, sizeof(b1)), mib(trimmed_end, b2, sizeof(b2)),
				trimmed_warm >= 0 && trimmed_end >= 0 ? signed_kib(trimmed_end - trimmed_warm, b3, sizeof(b3)) : "-",
				POOL_PROCESS_BOUND_KB, pool_memory_ok() ? "ok" : "FAILED");
		fprintf(f, "| the pool process: bytes malloc has handed out (mallinfo2: uordblks + hblkhd) | | %s | %s | %s | | |\n",
				mib(heap_warm >= 0 ? heap_warm / 1024 : -1, b1, sizeof(b1)), mib(heap_end >= 0 ? heap_end / 1024 : -1, b2, sizeof(b2)),
				heap_warm >= 0 && heap_end >= 0 ? signed_kib((heap_end - heap_warm) / 1024, b3, sizeof(b3)) : "-");
	}
	fprintf(f, "\nServer processes, each from its own first minute to its last sample (processes "
			"that lived at least %d s more; restarts replace them all):\n\n"
			"| kind | processes seen | measured | largest growth | over | mean growth | bound | |\n"
			"|---|---:|---:|---:|---:|---:|---:|---|\n", 30);
	for (int k = 0; k < NMKINDS; k++)
		fprintf(f, "| %s | %d | %d | %s | %.0f s | %s | %d KiB | %s |\n", mkind_names[k], processes_seen[k],
				ms[k].n, ms[k].n ? signed_kib(ms[k].max_growth, b1, sizeof(b1)) : "-", ms[k].max_span,
				ms[k].n ? signed_kib(ms[k].growth_sum / ms[k].n, b2, sizeof(b2)) : "-",
				SERVER_PROCESS_BOUND_KB, ms[k].n == 0 ? "-" : ms[k].max_growth <= SERVER_PROCESS_BOUND_KB ? "ok" : "FAILED");
	fprintf(f, "\nLike with like: the same kind at the age of one minute in the first and the last restart period:\n\n"
			"| kind | first period | last period | difference | bound | |\n|---|---:|---:|---:|---:|---|\n");
	for (int k = 0; k < M_POOL_BACKEND; k++)
	{
		long		first = -1,
					last = -1;

		for (int p = 0; p <= period && first < 0; p++)
			first = at_minute(k, p);
		for (int p = period; p >= 0 && last < 0; p--)
			last = at_minute(k, p);
		if (first < 0 || last < 0)
			fprintf(f, "| %s | - | - | - | %d KiB | not measured |\n", mkind_names[k], LIKE_FOR_LIKE_BOUND_KB);
		else
			fprintf(f, "| %s | %s | %s | %s | %d KiB | %s |\n", mkind_names[k], mib(first, b1, sizeof(b1)),
					mib(last, b2, sizeof(b2)), signed_kib(last - first, b3, sizeof(b3)), LIKE_FOR_LIKE_BOUND_KB,
					last - first <= LIKE_FOR_LIKE_BOUND_KB ? "ok" : "FAILED");
	}
	fprintf(f, "\nThe connbudget segment in pg_shmem_allocations: %ld bytes at the start, %ld at the end.\n\n",
			shmem_start, shmem_end);
	fprintf(f, "Why these bounds.  The pool process is measured after a warm-up of a tenth of the run (at "
			"least a minute), when every pool, thread and arena of its allocator is in use, and again when the "
			"churn stops, each time right after malloc_trim(0): glibc keeps memory that was freed in its "
			"per-thread arenas, and with some 75 threads those grow slowly for a long time without anything "
			"being lost (the raw figure and malloc's count of bytes in use are shown beside it).  Its pools "
			"held %d and %d connections then, and each connection's libpq buffers are some tens of KiB, so "
			"%d KiB is a few dozen connections' worth of difference: a leak of a hundred bytes per connect, "
			"or of ten per acquire, over the run's hundreds of thousands would cross it.  "
			"A server process has, after its first minute, every catalog and plan cache entry the soak's few "
			"statements need, so its private memory should stay flat: %d KiB after that is a leak of about 100 "
			"bytes per statement of a pool backend that lives a restart period, or of 30 bytes per publication "
			"of the allocator over an hour.  Processes of the same kind at the same age in the first and the "
			"last restart period hold the same things, so they differ by no more than %d KiB.\n\n",
			conns_warm, conns_end, POOL_PROCESS_BOUND_KB, SERVER_PROCESS_BOUND_KB, LIKE_FOR_LIKE_BOUND_KB);

	fprintf(f, "End checks (churn stopped, limits and settings put back, the fleet quiet; then the pool "
			"process and %d pod processes closed their pools, and %d pod processes were killed with "
			"SIGKILL):\n\n| check | result | |\n|---|---|---|\n", end_closed > 0 ? end_closed - 1 : 0, end_killed);
	for (int i = 0; i < nend_checks; i++)
		fprintf(f, "| %s | %s | %s |\n", end_checks[i].what, end_checks[i].result, end_checks[i].ok ? "ok" : "FAILED");
	fprintf(f, "| server log: crashes, PANIC, assertion failures, workers that exited | %s | %s |\n\n",
			log_summary, log_ok ? "ok" : "FAILED");

	fprintf(f, "What the fleet saw (pools that were killed take their own counts with them; the C pools' "
			"counters are those of pools closed cleanly):\n\n| | |\n|---|---:|\n");
	{
		static const struct
		{
			int			c;
			const char *label;
		}			rows[] = {
			{C_QUERIES, "queries that succeeded"},
			{C_QUERY_ERRORS, "queries that failed (terminated backends, restarts)"},
			{C_ACQUIRES, "C pools: connections acquired"},
			{C_HOLDS, "C pools: connections held a while"},
			{C_ACQ_TIMEOUT, "C pools: acquires timed out (2 s; a share of 0 or a full pool)"},
			{C_ACQ_UNAVAILABLE, "C pools: acquires failed fast (circuit breaker open during a restart)"},
			{C_ACQ_REFUSED, "C pools: acquires failed as refused for good (CBPOOL_EREFUSED)"},
			{C_ACQ_OTHER, "C pools: acquires failed otherwise"},
			{C_RUN_OK, "C pools: cbpool_run() transactions committed"},
			{C_RUN_NO_CONNECTION, "C pools: cbpool_run() transactions without a connection in time (2 s)"},
			{C_RUN_FAILED, "C pools: cbpool_run() transactions that failed after 3 attempts"},
			{C_POOLS_OPENED, "C pools opened"},
			{C_POOLS_CLOSED, "C pools closed cleanly"},
			{C_POOL_OPEN_FAILED, "C pools that failed to open"},
			{C_S_CONNECTS, "closed pools: connects"},
			{C_S_REFUSED, "closed pools: connects refused with 53300 (backpressure)"},
			{C_S_PERMANENT, "closed pools: connects refused for good (42501, 53400)"},
			{C_S_CONNECT_FAILURES, "closed pools: connect failures in all"},
			{C_S_CLOSED_OVER_SHARE, "closed pools: connections closed over the share"},
			{C_S_CLOSED_BROKEN, "closed pools: broken connections discarded"},
			{C_S_CLOSED_LIFETIME, "closed pools: connections retired at max_lifetime"},
			{C_S_BREAKER_OPENINGS, "closed pools: circuit breaker openings"},
			{C_S_BUDGET_REFRESHES, "closed pools: share refreshes"},
			{C_S_BUDGET_ERRORS, "closed pools: share refreshes that failed"},
			{C_S_ROLLBACKS, "closed pools: rollbacks on release"},
			{C_S_MISUSE, "closed pools: misuse reported"},
			{C_S_LEAKS, "closed pools: leaks reported"},
			{C_P_CONNECTS, "protocol pods: connects"},
			{C_P_REFUSED, "protocol pods: connects refused with 53300"},
			{C_P_PERMANENT, "protocol pods: connects refused for good (42501, 53400)"},
			{C_P_CONNECT_ERRORS, "protocol pods: connects that failed otherwise (restarts)"},
			{C_P_REFRESHES, "protocol pods: reports and reads"},
			{C_P_REFRESH_ERRORS, "protocol pods: reports that failed (lost connections)"},
			{C_P_ZERO, "protocol pods: shares of 0 (closed everything, asked again an interval later)"},
			{C_P_BAD_STATUS, "protocol pods: shares with a status other than ok"},
			{C_P_BAD_ANSWER, "protocol pods: answers a pod could not use"},
			{C_P_LEAVES, "protocol pods: left with 'leave' / pool_share(0)"},
		};

		for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
			fprintf(f, "| %s | %llu |\n", rows[i].label, (unsigned long long) sh->c[rows[i].c]);
	}
	fprintf(f, "\nThe C pools' log messages by id (error / warning / info / debug):\n\n| id | count | |\n|---|---:|---|\n");
	for (int k = 0; k < sh->nlog_ids; k++)
	{
		bool		bad = log_id_bad(sh->log_id[k], -1) || sh->log[k][CBPOOL_LOG_ERROR] > 0;

		fprintf(f, "| %s | %llu / %llu / %llu / %llu | %s |\n", sh->log_id[k],
				(unsigned long long) sh->log[k][0], (unsigned long long) sh->log[k][1],
				(unsigned long long) sh->log[k][2], (unsigned long long) sh->log[k][3],
				bad ? "FAILED: must not happen" : "expected under churn");
	}
	fprintf(f, "\nMust not happen, and did not: any message at the error level,");
	for (size_t i = 0; i < sizeof(bad_log_ids) / sizeof(bad_log_ids[0]); i++)
	{
		bool		seen = false;

		for (int k = 0; k < sh->nlog_ids; k++)
			seen |= strcmp(sh->log_id[k], bad_log_ids[i]) == 0;
		if (!seen)
			fprintf(f, " %s", bad_log_ids[i]);
	}
	fprintf(f, ".\n");
	fprintf(f, "\nBuilt %s.\n", SOAK_ASAN ? "with -fsanitize=address (the pool process's memory bound is not checked)" :
			"at -O2 without sanitizers");
	fclose(f);
}

/* ---- setup ---- */

static void
setup_server(void)
{
	PGconn	   *db;
	char		sql[512],
				row[256];

	for (int a = 0; a < NAPPS; a++)
	{
		snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN PASSWORD 'pw-%s'", apps[a].role, apps[a].role);
		must(ctl, sql);
	}
	must(ctl, "CREATE ROLE soak_secure_group NOLOGIN");
	must(ctl, "GRANT soak_secure_group TO soak_secure");
	must(ctl, "CREATE ROLE soak_extra NOLOGIN");
	must(ctl, "CREATE DATABASE soakdb");
	for (int d = 0; d < 2; d++)
	{
		const char *keys[] = {"dbname", "user", "application_name", NULL};
		const char *values[] = {d == 0 ? "soakdb" : "postgres", "postgres", CONTROL_APP, NULL};

		db = PQconnectdbParams(keys, values, 0);
		if (PQstatus(db) != CONNECTION_OK)
		{
			fprintf(stderr, "soak: %s", PQerrorMessage(db));
			exit(2);
		}
		must(db, "CREATE TABLE soak_items (id int PRIMARY KEY, v text)");
		must(db, "INSERT INTO soak_items SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
		must(db, "CREATE TABLE soak_counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)");
		must(db, "INSERT INTO soak_counters SELECT g, 0 FROM generate_series(0, 63) g");
		must(db, "GRANT SELECT ON soak_items TO PUBLIC");
		must(db, "GRANT SELECT, UPDATE ON soak_counters TO PUBLIC");
		must(db, "ANALYZE");
		PQfinish(db);
	}
	for (int a = 0; a < NAPPS; a++)
	{
		Limits	   *l = &model[a];

		l->exists = apps[a].configured;
		l->min = apps[a].min0;
		l->max = apps[a].max0;
		l->weight = apps[a].weight0;
		snprintf(l->roles, sizeof(l->roles), "%s", apps[a].roles0 ? apps[a].roles0 : "");
		if (!l->exists)
			continue;
		row_values(a, l, row, sizeof(row));
		snprintf(sql, sizeof(sql), "INSERT INTO connbudget.application_limits "
				 "(application_name, min_connections, max_connections, weight, roles) VALUES %s", row);
		must(ctl, sql);
	}
	max_connections = (int) value_long(&ctl, CONTROL_APP, "SELECT max_connections FROM connbudget.budget");
	superuser_reserved = (int) value_long(&ctl, CONTROL_APP,
										  "SELECT superuser_reserved + reserved_connections FROM connbudget.budget");
	reserved_now = (int) value_long(&ctl, CONTROL_APP, "SELECT extension_reserved FROM connbudget.budget");
	refresh_now = (int) value_long(&ctl, CONTROL_APP, SETTING_SQL("connbudget.refresh_interval"));
	ttl_now = (int) value_long(&ctl, CONTROL_APP, SETTING_SQL("connbudget.pod_ttl"));
	reserved_initial = reserved_now;
	value_text(&ctl, CONTROL_APP, LIMITS_TEXT_SQL, initial_limits, sizeof(initial_limits));
	value_text(&ctl, CONTROL_APP, SETTINGS_TEXT_SQL, initial_settings, sizeof(initial_settings));
	value_text(&ctl, CONTROL_APP, AUTO_CONF_SQL, initial_auto_conf, sizeof(initial_auto_conf));
	shmem_start = value_long(&ctl, CONTROL_APP, "SELECT size FROM pg_shmem_allocations WHERE name = 'connbudget'");
	hist_reset(&budget_h, 0, budget_for(reserved_now));
	for (int a = 0; a < NAPPS; a++)
		hist_reset(&cap_h[a], 0, cap_of(&model[a]));
	hist_reset(&refresh_h, 0, refresh_now);
	hist_reset(&ttl_h, 0, ttl_now);
	check_limits_in_force("at the start");
}

/* crashes and the like in the server log */
static bool
scan_server_log(char *summary, size_t len)
{
	char		path[1100],
				line[4096];
	FILE	   *f;
	static const char *const bad[] = {
		"terminated by signal", "PANIC:", "TRAP:", "terminating any other active server processes",
		"was terminated by exception", "out of memory",
	};
	long		counts[sizeof(bad) / sizeof(bad[0])] = {0};
	long		not_loaded = 0,
				worker_exits = 0,
				shutdown_exits = 0,
				lines = 0;
	bool		ok = true,
				stopping = false;
	size_t		off = 0;
	char		first[300] = "";

	snprintf(path, sizeof(path), "%s/server.log", getenv("CB_CLUSTER_DIR"));
	if ((f = fopen(path, "r")) == NULL)
	{
		snprintf(summary, len, "cannot read %s", path);
		return false;
	}
	while (fgets(line, sizeof(line), f))
	{
		lines++;
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			if (strstr(line, bad[i]))
			{
				counts[i]++;
				ok = false;
				if (!first[0])
					snprintf(first, sizeof(first), "%.250s", line);
			}
		/*
		 * From a shutdown request until the server is up again: the limits
		 * loader, told to stop while it loads, ends with the FATAL of an
		 * interrupted worker (loader.c), and that is no fault.
		 */
		if (strstr(line, "shutdown request"))
			stopping = true;
		else if (strstr(line, "database system is ready to accept connections"))
			stopping = false;
		if (stopping && strstr(line, "background worker \"connbudget") && strstr(line, "exited with exit code 1"))
			shutdown_exits++;
		else if (strstr(line, "background worker \"connbudget") && strstr(line, "exited"))
		{
			worker_exits++;
			ok = false;
			if (!first[0])
				snprintf(first, sizeof(first), "%.250s", line);
		}
		if (strstr(line, "application limits are not loaded yet"))
			not_loaded++;
	}
	fclose(f);
	off = (size_t) snprintf(summary, len, "%ld lines", lines);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (counts[i] && off < len)
			off += (size_t) snprintf(summary + off, len - off, "; \"%s\": %ld", bad[i], counts[i]);
	if (off < len)
		off += (size_t) snprintf(summary + off, len - off, "; connbudget workers that exited: %ld "
								 "(and %ld stopped in a shutdown); \"limits are not loaded yet\" warnings: %ld",
								 worker_exits, shutdown_exits, not_loaded);
	if (first[0] && off < len)
	{
		for (char *c = first; *c; c++)
			if (*c == '|' || *c == '\n')
				*c = ' ';
		snprintf(summary + off, len - off, "; first: %s", first);
	}
	if (ok && lines > 0)
		return true;
	return ok;
}


static void
ev_join_one(void)
{
	ev_join(1);
}

/* The churn that comes at random: each event, the delay before its first
   time and then its mean interval (see after()), in seconds. */
static struct
{
	void		(*run) (void);
	double		first,
				mean,
				next;
}			churn_events[] = {
	{ev_leave, 0, 4, 0},
	{ev_join_one, 0, 4, 0},
	{ev_kill, 30, 45, 0},
	{ev_terminate, 0, 15, 0},
	{ev_limits, 10, 15, 0},
	{ev_invalid, 20, 60, 0},
	{ev_settings, 15, 45, 0},
	{ev_pool_replace, 0, 30, 0},
};

int
main(int argc, char **argv)
{
	const char *report;
	char		seed_text[32];
	double		next_sample,
				next_mem,
				next_progress,
				next_pods,
				next_adjust,
				next_target,
				next_restart;
	double		restart_lo,
				restart_hi,
				churn_end,
				t_end_start;
	long		shmem_end;
	char		log_summary[1200],
				buf[2048];
	bool		log_ok;
	uint64_t	seed;

	if (argc < 3 || atof(argv[1]) < 60)
	{
		fprintf(stderr, "usage: soak SECONDS REPORT (SECONDS >= 60)\n");
		return 2;
	}
	if (getenv("CB_CLUSTER_DIR") == NULL)
	{
		fprintf(stderr, "soak: CB_CLUSTER_DIR is not set\n");
		return 2;
	}
	duration = atof(argv[1]);
	report = argv[2];
	t_base = now_seconds();
	seed = rnd_fresh_seed();
	rnd_init("soak", seed);
	{
		const char *env = getenv("CB_TEST_SEED");

		snprintf(seed_text, sizeof(seed_text), "%llu",
				 (unsigned long long) (env && *env ? strtoull(env, NULL, 0) : seed));
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	sh = mmap(NULL, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
	{
		perror("mmap");
		return 2;
	}
	memset(sh, 0, sizeof(Shared));
	snprintf(buf, sizeof(buf), "%s/soak-events.log", getenv("CB_CLUSTER_DIR"));
	event_log = fopen(buf, "w");

	sort_by_name();
	ctl = admin_connect(CONTROL_APP);
	setup_server();
	mon = admin_connect(MONITOR_APP);
	printf("soak: %.0f s of churn, seed %s; budget %d (max_connections %d); the event log is %s\n",
		   duration, seed_text, budget_for(reserved_now), max_connections, buf);

	/* the pool process: pools for the whole run, its memory measured */
	pool_warm_t = duration / 10 > 60 ? duration / 10 : 60;
	pool_proc = spawn_process(true);
	if (pool_proc < 0)
		return 2;
	for (int i = 0; i < POOL_PROCESS_PERMANENT; i++)
		join_pod(pool_proc, i % NAPPS, KIND_POOL, true, false);
	for (int i = 0; i < POOL_PROCESS_CHURN; i++)
		join_pod(pool_proc, i % NAPPS, KIND_POOL, false, true);
	events[E_JOIN] -= POOL_PROCESS_PERMANENT + POOL_PROCESS_CHURN;

	/* restarts every 3 to 5 minutes in an hour, scaled down for shorter runs */
	restart_lo = duration / 5 < 180 ? duration / 5 : 180;
	restart_hi = duration / 3 < 300 ? duration / 3 : 300;
	next_sample = next_mem = next_pods = next_adjust = T();
	next_progress = 60;
	next_target = after(60);
	for (size_t i = 0; i < lengthof(churn_events); i++)
		churn_events[i].next = churn_events[i].first + after(churn_events[i].mean);
	next_restart = T() + uniform(restart_lo, restart_hi);
	churn_end = duration;

	while (T() < churn_end)
	{
		double		now = T();
		int			live;

		reap();
		read_acks();
		if (now >= next_sample)
		{
			monitor_sample();
			next_sample = (next_sample + 1 > T()) ? next_sample + 1 : T() + 1;
			live = live_pods();
			if (now > 30)
			{
				if (live < min_live)
					min_live = live;
				if (live > max_live)
					max_live = live;
				live_sum += live;
				live_samples++;
			}
			if (alive_procs() > max_procs)
				max_procs = alive_procs();
		}
		if (now >= next_pods)
		{
			pods_check();
			next_pods = now + 2;
		}
		if (ride_check_at > 0 && now >= ride_check_at)
			ride_through_check();
		if (now >= next_mem)
		{
			memory_sample();
			next_mem = now + MEM_SAMPLE_S;
		}
		if (now >= next_progress)
		{
			progress();
			next_progress += 60;
		}
		if (now >= next_restart)
		{
			/* no restart in the last 90 s: the last period must reach its first minute */
			if (now < churn_end - 90)
				ev_restart(nrestarts % 3 == 1);
			next_restart = T() + uniform(restart_lo, restart_hi);
			continue;
		}
		if (now >= next_adjust)
		{
			ev_adjust();
			next_adjust = now + (live_pods() < target_pods - 12 ? 0.3 : 1.0);
		}
		if (now >= next_target)
		{
			target_pods = POP_LO + pick(POP_HI - POP_LO + 1);
			note("the target is now %d live pods", target_pods);
			next_target = after(60);
		}
		for (size_t i = 0; i < lengthof(churn_events); i++)
			if (now >= churn_events[i].next)
			{
				churn_events[i].run();
				churn_events[i].next = after(churn_events[i].mean);
			}
		for (int a = 0; a < NAPPS; a++)
			if (restore_at[a] > 0 && now >= restore_at[a])
				ev_restore_row(a);
		sleep_ms(20);
	}

	/* ---- the end ---- */
	in_end_phase = true;
	t_end_start = T();
	printf("t=%5.0f s  churn over; the end checks\n", T());
	note("churn over");
	progress();
	if (ride_check_at > 0)
		ride_through_check();
	if (pool_proc >= 0 && procs[pool_proc].alive)
	{
		double		asked = T(),
					deadline = asked + 5;

		pool_rss_end = rss_anon_kb(procs[pool_proc].pid);
		send_cmd(pool_proc, "trim\n");
		while (pool_trimmed_t < asked && T() < deadline)
		{
			sleep_ms(20);
			read_acks();
		}
		if (pool_trimmed_t >= asked)
		{
			heap_end = pool_heap_used;
			conns_end = pool_conns;
			trimmed_end = pool_trimmed_rss;
		}
	}
	memory_sample();

	/* put back what the churn changed, and quiet the fleet */
	restore_limits_and_settings();
	for (int i = 0; i < nprocs; i++)
		send_cmd(i, "quiet\n");
	note("fleet quiet");
	wait_monitoring(8.0 * refresh_now / 1000.0 + 4);
	check_counters_equal_backends();

	/* every pool closes, or its process is killed */
	{
		int			n = 0;

		for (int i = 0; i < nprocs; i++)
		{
			Proc	   *p = &procs[i];

			if (!p->alive || p->killed)
				continue;
			if (p->pool_process || n++ % 2 == 0)
			{
				if (!p->told_exit)
					send_cmd(i, "exit\n");
				p->told_exit = true;
				end_closed++;
			}
			else
			{
				kill(p->pid, SIGKILL);
				p->killed = true;
				end_killed++;
				for (int k = 0; k < npods; k++)
					if (pods[k].proc == i && pods[k].state != POD_GONE)
						pod_gone(k, T(), true);
			}
		}
		note("every pool closed or its process killed");
	}
	{
		double		deadline = T() + 60;

		for (;;)
		{
			bool		any = false;

			for (int i = 0; i < nprocs; i++)
				any |= procs[i].alive;
			if (!any)
				break;
			if (T() > deadline)
			{
				failure("pod processes did not exit within 60 s of being told to");
				for (int i = 0; i < nprocs; i++)
					if (procs[i].alive)
					{
						kill(procs[i].pid, SIGKILL);
						procs[i].killed = true;
					}
				deadline = T() + 10;
			}
			wait_monitoring(0.2);
		}
	}

	/* the leases end: pod_ttl and a refresh, with room */
	{
		double		deadline = T() + (ttl_now + 2 * refresh_now + HOLD_MAX_MS) / 1000.0 + 10;
		long		left = -1;

		while (T() < deadline)
		{
			left = value_long(&mon, MONITOR_APP, "SELECT count(*) FROM connbudget.pods");
			if (left == 0)
				break;
			wait_monitoring(0.5);
		}
		pods_check();
		end_check(left == 0, "every lease ended: connbudget.pods is empty",
				  "%ld pods listed %.1f s after the last pool closed or died", left,
				  T() - t_end_start);
	}

	/* only the monitor is left */
	PQfinish(ctl);
	ctl = NULL;
	{
		double		deadline = T() + 10;

		while (T() < deadline &&
			   value_long(&mon, MONITOR_APP, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'") != 1)
			sleep_ms(100);
	}
	monitor_sample();
	{
		PGresult   *res = query(&mon, MONITOR_APP, "SELECT kind, used, capacity, consistent FROM connbudget.slots ORDER BY kind");
		char		text[600] = "";
		size_t		off = 0;
		bool		ok = res != NULL;

		for (int i = 0; res && i < PQntuples(res); i++)
		{
			const char *kind = PQgetvalue(res, i, 0);
			int			used = atoi(PQgetvalue(res, i, 1));
			bool		cons = strcmp(PQgetvalue(res, i, 3), "t") == 0;

			if (!cons)
				ok = false;
			if ((strcmp(kind, "pods") == 0 || strcmp(kind, "pool sessions") == 0 || strcmp(kind, "roles") == 0) && used != 0)
				ok = false;
			if (strcmp(kind, "backends") == 0 && used != 1)
				ok = false;
			off += (size_t) snprintf(text + off, sizeof(text) - off, "%s%s %d of %s%s", off ? ", " : "",
									 kind, used, PQgetvalue(res, i, 2), cons ? "" : " (INCONSISTENT)");
		}
		PQclear(res);
		end_check(ok, "connbudget.slots: pods, pool sessions and roles 0, backends 1 (the monitor), all consistent",
				  "%s", text);
	}
	{
		char		text[300];

		value_text(&mon, MONITOR_APP, "SELECT format('budget %s, governed %s, other %s, pods %s', budget, governed, other, pods) "
				   "FROM connbudget.budget", text, sizeof(text));
		end_check(value_long(&mon, MONITOR_APP, "SELECT governed FROM connbudget.budget") == 0 &&
				  value_long(&mon, MONITOR_APP, "SELECT other FROM connbudget.budget") == 1 &&
				  value_long(&mon, MONITOR_APP, "SELECT pods FROM connbudget.budget") == 0 &&
				  value_long(&mon, MONITOR_APP, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'") == 1,
				  "connbudget.budget: governed 0, other 1 (the monitor), pods 0; one client backend in pg_stat_activity",
				  "%s", text);
	}
	{
		PGresult   *res = query(&mon, MONITOR_APP,
								"SELECT a.application_name, a.connections, a.pods, a.refused, "
								"l.application_name IS NOT NULL FROM connbudget.applications a "
								"LEFT JOIN connbudget.application_limits l USING (application_name) ORDER BY 1");
		char		text[600] = "";
		size_t		off = 0;
		bool		ok = res != NULL;
		int			configured = 0;

		for (int i = 0; res && i < PQntuples(res); i++)
		{
			bool		conf = strcmp(PQgetvalue(res, i, 4), "t") == 0;
			int			conns = atoi(PQgetvalue(res, i, 1));
			int			npods_ = atoi(PQgetvalue(res, i, 2));
			long		refused = atol(PQgetvalue(res, i, 3));

			configured += conf;
			/* an unconfigured application stays listed only for its refusal counter */
			if (conns != 0 || npods_ != 0 || (!conf && refused == 0))
				ok = false;
			off += (size_t) snprintf(text + off, sizeof(text) - off, "%s%s (%s): %d connections, %d pods, refused %ld",
									 off ? "; " : "", PQgetvalue(res, i, 0), conf ? "configured" : "no row",
									 conns, npods_, refused);
		}
		if (configured != 3)
			ok = false;
		PQclear(res);
		end_check(ok, "connbudget.applications: the configured applications with 0 connections and 0 pods "
				  "(an application without a row stays listed only for its refusal counter since the last restart)",
				  "%s", text);
	}
	{
		char		now_limits[2048],
					now_settings[2048],
					now_auto[1024];
		double		deadline = T() + 10;

		value_text(&mon, MONITOR_APP, LIMITS_TEXT_SQL, now_limits, sizeof(now_limits));
		end_check(strcmp(now_limits, initial_limits) == 0, "application_limits is as at the start",
				  "%s", strcmp(now_limits, initial_limits) == 0 ? now_limits : "differs");
		if (strcmp(now_limits, initial_limits) != 0)
			printf("  start: %s\n  end:   %s\n", initial_limits, now_limits);
		do
		{
			value_text(&mon, MONITOR_APP, SETTINGS_TEXT_SQL, now_settings, sizeof(now_settings));
			if (strcmp(now_settings, initial_settings) == 0)
				break;
			sleep_ms(100);
		} while (T() < deadline);
		value_text(&mon, MONITOR_APP, AUTO_CONF_SQL, now_auto, sizeof(now_auto));
		end_check(strcmp(now_settings, initial_settings) == 0 && strcmp(now_auto, initial_auto_conf) == 0,
				  "the connbudget settings and postgresql.auto.conf are as at the start",
				  "%s; postgresql.auto.conf: \"%s\"", now_settings, now_auto);
		if (strcmp(now_settings, initial_settings) != 0)
			printf("  start: %s\n  end:   %s\n", initial_settings, now_settings);
	}
	shmem_end = value_long(&mon, MONITOR_APP, "SELECT size FROM pg_shmem_allocations WHERE name = 'connbudget'");
	end_check(shmem_end == shmem_start, "the connbudget segment in pg_shmem_allocations has the size it had at the start",
			  "%ld bytes, %ld at the start", shmem_end, shmem_start);

	/* memory bounds */
	{
		MemSummary ms[NMKINDS];

		if (!SOAK_ASAN)
		{
			end_check(pool_memory_ok(), "the pool process grew less than the bound after its warm-up "
					  "(RssAnon right after malloc_trim(0))",
					  "%ld KiB after %.0f s, %ld KiB at the end: %+ld KiB (bound %d KiB); without the trim "
					  "%ld and %ld KiB; malloc in use %lld and %lld bytes", trimmed_warm, pool_warm_t,
					  trimmed_end, trimmed_end - trimmed_warm, POOL_PROCESS_BOUND_KB, pool_rss_warm,
					  pool_rss_end, heap_warm, heap_end);
		}
		memory_summaries(ms);
		for (int k = 0; k < NMKINDS; k++)
			if (ms[k].n > 0 && ms[k].max_growth > SERVER_PROCESS_BOUND_KB)
				failure("%s: process %d grew %ld KiB in %.0f s after its first minute (bound %d KiB)",
						mkind_names[k], ms[k].max_pid, ms[k].max_growth, ms[k].max_span, SERVER_PROCESS_BOUND_KB);
		for (int k = 0; k < M_POOL_BACKEND; k++)
		{
			long		first = -1,
						last = -1;

			for (int p = 0; p <= period && first < 0; p++)
				first = at_minute(k, p);
			for (int p = period; p >= 0 && last < 0; p--)
				last = at_minute(k, p);
			if (first >= 0 && last >= 0 && last - first > LIKE_FOR_LIKE_BOUND_KB)
				failure("%s: %ld KiB at one minute in the last restart period, %ld in the first (bound +%d KiB)",
						mkind_names[k], last, first, LIKE_FOR_LIKE_BOUND_KB);
		}
	}
	log_ok = scan_server_log(log_summary, sizeof(log_summary));
	if (!log_ok)
		failure("the server log: %s", log_summary);

	/* the pool log ids that must not happen */
	for (int k = 0; k < sh->nlog_ids; k++)
		if (log_id_bad(sh->log_id[k], -1) || sh->log[k][CBPOOL_LOG_ERROR] > 0)
			failure("the C pools logged \"%s\" %llu times", sh->log_id[k],
					(unsigned long long) (sh->log[k][0] + sh->log[k][1] + sh->log[k][2] + sh->log[k][3]));
	if (sh->c[C_P_PERMANENT] + sh->c[C_P_BAD_STATUS] + sh->c[C_S_PERMANENT] + sh->c[C_ACQ_REFUSED] > 0)
		failure("pods were refused for good or told a status other than ok (%llu protocol connects, %llu shares, "
				"%llu C pool connects, %llu acquires)",
				(unsigned long long) sh->c[C_P_PERMANENT], (unsigned long long) sh->c[C_P_BAD_STATUS],
				(unsigned long long) sh->c[C_S_PERMANENT], (unsigned long long) sh->c[C_ACQ_REFUSED]);
	if (sh->c[C_POOL_OPEN_FAILED] > 0)
		failure("%llu C pools failed to open", (unsigned long long) sh->c[C_POOL_OPEN_FAILED]);

	write_report(report, seed_text, churn_end, T(), shmem_end, log_summary, log_ok);
	PQfinish(mon);
	printf("soak: %s: %ld checks, %ld violations, %ld other failures; report in %s\n",
		   violations == 0 && nfailures_total == 0 ? "passed" : "FAILED", checks, violations,
		   nfailures_total, report);
	if (event_log)
		fclose(event_log);
	free(ride_pods);
	free(tracked);
	free(pods);
	free(procs);
	return violations == 0 && nfailures_total == 0 ? 0 : 1;
}
