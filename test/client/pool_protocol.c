/*
 * pool_protocol.c -- the pool speaks the protocol of every database
 * (docs/protocol.md): connected to a database that has no object of the
 * extension, it sizes itself from its share, and when it closes it hands
 * the share back, so that the pods that stay grow within a publish period
 * instead of pod_ttl.
 *
 * Checked: a pool in database "shop" (no extension there) reads its share
 * with connbudget.share, the share connbudget.pods of the extension's
 * database shows for it, and its demand shows there; two pools of one
 * application in two databases split its cap; one closes and the other has
 * the whole cap within a publish period and a refresh interval (pod_ttl
 * is 5 s); the pool never logs that there is no extension; a pool whose
 * one caller holds every connection still grows when the server publishes
 * its demand late (the allocator stopped for a second).
 *
 * Budget: 60 - 3 - 7 = 50.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=5000
 */
#include "common.h"

static PGconn *admin;

static cbpool *
open_pool(const char *db, const char *pod, int min_idle, char *err, size_t errlen)
{
	cbpool_config cfg = cbpool_config_default();
	char		conninfo[512];

	snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=%s dbname=%s",
			 getenv("PGHOST"), getenv("PGPORT"), getenv("PGUSER"), db);
	cfg.conninfo = conninfo;
	cfg.application_name = "shopapp";
	cfg.pod = pod;
	cfg.min_idle = min_idle;
	cfg.logger.func = test_logger;
	return cbpool_open(&cfg, err, errlen);
}

/* The pool's share as it settles, within timeout_ms. */
static int
pool_share_settled(cbpool *pool, int want, int timeout_ms)
{
	double		end = now_seconds() + timeout_ms / 1000.0;
	cbpool_stats_t s;

	do
	{
		cbpool_stats(pool, &s);
		if (s.share == want)
			break;
		sleep_ms(20);
	} while (now_seconds() < end);
	return s.share;
}

/*
 * The share of a busy pool as it settles: the pool refreshes on an idle
 * connection or on a release, so one of its connections is given back and
 * taken again meanwhile, as a busy application does.
 */
static int
busy_share_settled(cbpool *pool, PGconn **conn, int want, int timeout_ms)
{
	double		end = now_seconds() + timeout_ms / 1000.0;
	cbpool_stats_t s;

	do
	{
		cbpool_release(pool, *conn);
		*conn = cbpool_acquire(pool, 2000);
		cbpool_stats(pool, &s);
		if (s.share >= want)
			break;
		sleep_ms(20);
	} while (now_seconds() < end);
	return s.share;
}

/* Hold n connections of the pool, so that it demands them, each acquire waiting
   up to timeout_ms (a pool grows to them as its share does). */
static int
hold(cbpool *pool, PGconn **conns, int n, int timeout_ms)
{
	int			got = 0;

	for (int i = 0; i < n; i++)
		if ((conns[i] = cbpool_acquire(pool, timeout_ms)) != NULL)
			got++;
	return got;
}

/* Let a stopped process go on after ms, from a thread of its own. */
typedef struct Resume
{
	long		pid;
	int			ms;
} Resume;

static void *
resume_main(void *arg)
{
	Resume	   *r = arg;

	sleep_ms(r->ms);
	kill((pid_t) r->pid, SIGCONT);
	return NULL;
}

/*
 * A changed demand is in the shares the server publishes a publish period
 * later, or later still on a busy server; an answer read before that is
 * the share of the demand reported before.  A pool whose callers hold
 * every connection has none given back to ask again on: it must not take
 * that older share for the server's word on the demand it just reported,
 * or it never opens the connection it would ask again with, and its
 * callers wait for ever.  The allocator is stopped for a second (SIGSTOP)
 * to hold publication back as a loaded server does.
 */
static void
test_stale_answer(void)
{
	cbpool_config cfg = test_config("stale", "pod-stale");
	cbpool	   *pool;
	PGconn	   *conns[8] = {0};
	Resume		resume = {0, 1000};
	pthread_t	thread;
	cbpool_stats_t s;
	double		t0;
	int			held = 0,
				got = 0;

	cfg.max_size = 8;
	pool = open_or_bail(&cfg);
	conns[held++] = cbpool_acquire(pool, 5000);
	sleep_ms(600);				/* three refresh intervals: the share settles */
	cbpool_stats(pool, &s);
	while (held < 6 && s.in_use < s.share && (conns[held] = cbpool_acquire(pool, 1000)) != NULL)
	{
		held++;
		cbpool_stats(pool, &s);
	}
	ok(conns[0] && s.share >= 1 && s.share <= 4 && s.total == s.share && s.in_use == s.total,
	   "its one caller takes every connection of its share (share %d, total %d, in use %d)",
	   s.share, s.total, s.in_use);

	resume.pid = postmaster_child("postgres: connbudget allocator");
	if (resume.pid <= 0)
		bail_out("the allocator is not running");
	kill((pid_t) resume.pid, SIGSTOP);
	pthread_create(&thread, NULL, resume_main, &resume);
	t0 = now_seconds();
	for (int i = 0; i < 2; i++)
		if ((conns[held + i] = cbpool_acquire(pool, 8000)) != NULL)
			got++;
	pthread_join(thread, NULL);
	cbpool_stats(pool, &s);
	is_int(got, 2, "with publication held back for a second, the caller still gets 2 more "
		   "connections (after %.1f s; share %d, total %d)", now_seconds() - t0, s.share, s.total);
	for (int i = 0; i < 8; i++)
		if (conns[i])
			cbpool_release(pool, conns[i]);
	cbpool_close(pool);
}

int
main(void)
{
	char		err[256];
	cbpool	   *a;
	cbpool	   *b;
	PGconn	   *held_a[20];
	PGconn	   *held_b[20] = {0};
	cbpool_stats_t s;
	double		t0,
				grew_ms;

	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE DATABASE shop");
	pg_exec(admin, "CREATE DATABASE warehouse");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('shopapp', 0, 20, 1, NULL)");

	a = open_pool("shop", "pod-a", 1, err, sizeof(err));
	if (!a)
		bail_out("cbpool_open: %s", err);
	ok(cbpool_wait_ready(a, 10000) == 0, "a pool in database shop, which has no object of the extension, connects");
	ok(pool_share_settled(a, 1, 5000) >= 1, "it reads its share there");
	cbpool_stats(a, &s);
	is_int(pg_wait_for(admin, "SELECT coalesce((SELECT share FROM connbudget.pods WHERE pod = 'pod-a'), -1)",
					   s.share, 3000), s.share,
		   "the share connbudget.pods shows for it in the extension's database (%d)", s.share);
	is_int(s.extension, 1, "its statistics say it follows a budget");
	is_int(logged_at("no-extension", NULL, -1), 0, "and it never logged that there is no extension");
	is_int(hold(a, held_a, 6, 10000), 6, "it hands out 6 connections");
	is_int(pg_wait_for(admin, "SELECT CASE WHEN (SELECT demand FROM connbudget.pods WHERE pod = 'pod-a') >= 6 "
					   "THEN 1 ELSE 0 END", 1, 5000), 1,
		   "its demand (at least the 6 in use) shows in connbudget.pods of the extension's database");

	b = open_pool("warehouse", "pod-b", 1, err, sizeof(err));
	if (!b)
		bail_out("cbpool_open: %s", err);
	ok(cbpool_wait_ready(b, 10000) == 0, "a second pool in database warehouse connects");
	/* b wants more than the cap leaves it: its waiters count in its demand */
	ok(hold(b, held_b, 14, 3000) >= 10, "and hands out what the cap leaves it while the first holds 6");
	ok(cbpool_acquire(b, 300) == NULL, "a caller beyond waits in vain: the cap is full");
	cbpool_stats(b, &s);
	is_int(s.share + pool_share_settled(a, 8, 0) <= 20, 1,
		   "they split the cap of 20 (shares %d and %d)", pool_share_settled(a, 8, 0), s.share);
	is_int(pg_long(admin, "SELECT sum(share) FROM connbudget.pods WHERE application_name = 'shopapp'") <= 20, 1,
		   "their shares together are within the cap");

	for (int i = 0; i < 6; i++)
		cbpool_release(a, held_a[i]);
	/* the second pool's demand stays above what it has: its callers wait */
	ok(cbpool_acquire(b, 300) == NULL, "the second pool's callers still wait");
	cbpool_stats(b, &s);
	t0 = now_seconds();
	cbpool_close(a);
	ok(busy_share_settled(b, &held_b[0], s.share + 3, 4000) >= s.share + 3,
	   "once the first pool closes, the second grows into its share (from %d)", s.share);
	grew_ms = (now_seconds() - t0) * 1000;
	ok(grew_ms < 1500, "within %.0f ms: a publish period (20 ms) and a refresh interval (200 ms), "
	   "not pod_ttl (5000 ms)", grew_ms);
	is_int(logged_at("leave", "handed back", -1), 1, "the closing pool said it handed its share back");
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-a'", 0, 2000), 0,
		   "and its pod is gone from connbudget.pods");
	diag("a closed pool's share reached the other pool after %.0f ms (pod_ttl 5000 ms)", grew_ms);

	for (int i = 0; i < 14; i++)
		if (held_b[i])
			cbpool_release(b, held_b[i]);
	cbpool_close(b);

	test_stale_answer();
	PQfinish(admin);
	return done_testing();
}
