/*
 * common.h -- shared by the client pool tests: the pool's implementation,
 * TAP, libpq helpers and a logger that remembers what the pool said.
 */
#ifndef CONNBUDGET_TEST_CLIENT_COMMON_H
#define CONNBUDGET_TEST_CLIENT_COMMON_H

#define CBPOOL_IMPLEMENTATION
#include "../../client/connbudget_pool.h"

#include "../lib/pgtest.h"

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

#endif							/* CONNBUDGET_TEST_CLIENT_COMMON_H */
