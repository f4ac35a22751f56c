/*
 * protocol.c -- the protocol any client can speak (docs/protocol.md): a
 * pool in any database of the server reports its demand by setting
 * connbudget.demand and reads its share from connbudget.share, with no
 * object of the extension in that database; it hands its share back by
 * setting connbudget.demand = 'leave'.
 *
 * Checked: the share in a database without the extension, and the same
 * session's pool_share() where the extension is installed; two pods in two
 * databases split one application's allocation; a demand given at connect
 * time; SET inside a transaction that rolls back; every status a share can
 * have (ok, other, left, refused) with its SQLSTATE and reason; a pool
 * that leaves frees its share for the others within one publish period,
 * against pod_ttl for one that just closes; values of connbudget.demand
 * that are not one, and a read-only connbudget.share; the share read in a
 * parallel worker is its leader's; the pace a 53300 refusal states in its
 * context field; the demand each share answers, which lags a changed
 * report for as long as the allocator does not publish (stopped here).
 *
 * Budget: 50 - 3 - 7 = 40.
 *
 * cluster: max_connections=50 superuser_reserved_connections=3 connbudget.reserved_connections=7 connbudget.refresh_interval=200ms connbudget.pod_ttl=6000
 */
#include "../lib/pgtest.h"

static PGconn *admin;

typedef struct Share
{
	char		status[32];
	long		max_size;
	long		min_size;
	long		allocation;
	long		pods;
	long		budget;
	long		refresh_ms;
	long		protocol;
	char		sqlstate[8];
	char		reason[64];
	char		text[256];
} Share;

/* The value of the word "name" of connbudget.share's text, into out; NULL
   if the text has no such word. */
static const char *
share_word(const char *text, const char *name, char *out, size_t len)
{
	size_t		n = strlen(name);

	for (const char *w = text; w; w = strchr(w, ' '))
	{
		w += strspn(w, " ");
		if (strncmp(w, name, n) == 0 && w[n] == '=')
		{
			snprintf(out, len, "%.*s", (int) strcspn(w + n + 1, " "), w + n + 1);
			return out;
		}
	}
	return NULL;
}

/* The word "name" of connbudget.share's text as a number, or none. */
static long
share_number(const char *text, const char *name, long none)
{
	char		value[32];

	return share_word(text, name, value, sizeof(value)) ? atol(value) : none;
}

/* Parse connbudget.share's words; unknown words are left alone. */
static void
parse_share(const char *text, Share *s)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->text, sizeof(s->text), "%s", text);
	share_word(text, "status", s->status, sizeof(s->status));
	share_word(text, "sqlstate", s->sqlstate, sizeof(s->sqlstate));
	share_word(text, "reason", s->reason, sizeof(s->reason));
	s->max_size = share_number(text, "max_size", -1);
	s->min_size = share_number(text, "min_size", -1);
	s->allocation = share_number(text, "allocation", -1);
	s->pods = share_number(text, "pods", -1);
	s->budget = share_number(text, "budget", -1);
	s->refresh_ms = share_number(text, "refresh_ms", -1);
	s->protocol = share_number(text, "protocol", 0);
}

/* One report and read, as the protocol's query does it. */
static void
report(PGconn *conn, const char *demand, Share *s)
{
	const char *params[1] = {demand};
	PGresult   *res = PQexecParams(conn, "SELECT set_config('connbudget.demand', $1, false), "
									"current_setting('connbudget.share')",
									1, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		bail_out("report: %s", PQerrorMessage(conn));
	parse_share(PQgetvalue(res, 0, 1), s);
	PQclear(res);
}

static void
read_share(PGconn *conn, Share *s)
{
	parse_share(pg_value(conn, "SHOW connbudget.share"), s);
}

/* Report until the share is want (publication follows a period later). */
static long
settle(PGconn *conn, const char *demand, long want, int timeout_ms)
{
	double		end = now_seconds() + timeout_ms / 1000.0;
	Share		s;

	do
	{
		report(conn, demand, &s);
		if (s.max_size == want)
			break;
		sleep_ms(20);
	} while (now_seconds() < end);
	return s.max_size;
}

static PGconn *
pod_in(const char *db, const char *app, const char *pod, const char *extra)
{
	char		d[96],
				a[96],
				o[256];

	snprintf(d, sizeof(d), "dbname=%s", db);
	snprintf(a, sizeof(a), "application_name=%s", app);
	snprintf(o, sizeof(o), "options=-c connbudget.pod=%s%s%s", pod, extra ? " " : "", extra ? extra : "");
	return pg_connect_or_bail(d, a, o);
}

/* ---- every database ---- */

static void
test_every_database(void)
{
	PGconn	   *shop = pod_in("shop", "api", "api-1", NULL);
	PGconn	   *other;
	Share		s;

	is_int(pg_long(shop, "SELECT count(*) FROM pg_namespace WHERE nspname = 'connbudget'"), 0,
		   "database shop has no object of the extension");
	read_share(shop, &s);
	is_int(s.protocol, 2, "SHOW connbudget.share works there: %s", s.text);
	is_str(s.status, "ok", "status ok");
	is_int(s.budget, 40, "the budget is the server's");
	ok(strstr(s.text, " connections=1") != NULL, "and its pod's connections are 1, this one: %s", s.text);
	is_int(settle(shop, "12", 12, 3000), 12, "after SET connbudget.demand = 12, the share is 12");
	report(shop, "12", &s);
	is_int(s.allocation, 12, "and the application's allocation follows the demand");
	ok(s.refresh_ms == 200, "refresh_ms is the server's refresh interval (%ld)", s.refresh_ms);

	other = pod_in("warehouse", "api", "api-2", NULL);
	is_int(settle(other, "40", 28, 3000), 28, "a second pod in a third database gets the rest (40 - 12)");
	is_int(settle(shop, "40", 20, 3000), 20, "both asking 40 split it: 20 each");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'api' AND share = 20"), 2,
		   "the pods view in connbudget.database shows both");

	/* a C pool of version 1.1 in the extension's database: pool_share() still works */
	{
		PGconn	   *old = pod_in("postgres", "api", "api-3", NULL);

		is_int(pg_long(old, "SELECT max_size FROM connbudget.pool_share(40)") >= 0, 1,
			   "pool_share() works where the extension is installed");
		read_share(old, &s);
		is_str(s.status, "ok", "and the same session's connbudget.share reads the same budget");
		is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'api'", 3, 2000), 3,
			   "three pods of api, in three databases, share one budget");
		PQfinish(old);
	}
	PQfinish(other);
	PQfinish(shop);
}

/* ---- demand at connect time, and in a transaction that rolls back ---- */

static void
test_demand_settings(void)
{
	PGconn	   *c = pod_in("shop", "web", "web-1", "-c connbudget.demand=3");
	Share		s;
	char		msg[1024];

	is_int(pg_wait_for(admin, "SELECT coalesce((SELECT demand FROM connbudget.pods WHERE pod = 'web-1'), -1)", 3, 3000),
		   3, "a demand given at connect time (options=-c connbudget.demand=3) is a report");
	pg_exec(c, "BEGIN");
	pg_exec(c, "SET connbudget.demand = 9");
	pg_exec(c, "ROLLBACK");
	is_str(pg_value(c, "SHOW connbudget.demand"), "3", "SET inside a transaction that rolled back is undone");
	is_int(pg_wait_for(admin, "SELECT coalesce((SELECT demand FROM connbudget.pods WHERE pod = 'web-1'), -1)", 3, 3000),
		   3, "and so is its report");

	is_str(pg_exec_error(c, "SET connbudget.demand = -1", msg, sizeof(msg)), "22023", "a demand of -1 is refused");
	ok(strstr(msg, "a number of connections from 0 to 1000000, \"unbounded\" or \"leave\"") != NULL,
	   "saying what it may be: %s", msg);
	is_str(pg_exec_error(c, "SET connbudget.demand = 'abc'", msg, sizeof(msg)), "22023", "'abc' is refused");
	is_str(pg_exec_error(c, "SET connbudget.demand = '99999999999'", msg, sizeof(msg)), "22023",
		   "a demand that overflows is refused");
	is_str(pg_exec_error(c, "SET connbudget.demand = '1000001'", msg, sizeof(msg)), "22023",
		   "one above the most is refused");
	is_str(pg_exec_error(c, "SET connbudget.demand = ' 5'", msg, sizeof(msg)), "22023",
		   "so is one with a space");
	is_str(pg_exec_error(c, "SET connbudget.share = 'max_size=99'", msg, sizeof(msg)), "55P02",
		   "connbudget.share cannot be set");
	report(c, "unbounded", &s);
	is_str(s.status, "ok", "'unbounded' is a demand");
	is_str(pg_value(c, "SHOW connbudget.demand"), "unbounded", "shown as set");
	PQfinish(c);
}

/* ---- statuses ---- */

static void
test_statuses(void)
{
	PGconn	   *plain = pg_connect_or_bail("dbname=shop", "application_name=psql");
	PGconn	   *m;
	Share		s;

	read_share(plain, &s);
	is_str(s.status, "other", "a connection with no pod and no row is \"other\": %s", s.text);
	ok(s.max_size == -1 && s.refresh_ms == 200, "with no size, but the refresh interval");
	report(plain, "5", &s);
	is_str(s.status, "other", "its report changes nothing");
	PQfinish(plain);

	pg_exec(admin, "CREATE ROLE mallory LOGIN");
	m = pg_connect_or_bail("dbname=shop", "user=mallory", "application_name=bound",
						   "options=-c connbudget.pod=m-1");
	report(m, "4", &s);
	is_str(s.status, "ok", "mallory's pod of an application without a row has a share");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('bound', 0, 10, 1, '{nobody}')");
	read_share(m, &s);
	is_str(s.status, "refused", "once the application is bound to other roles: %s", s.text);
	is_str(s.sqlstate, "42501", "with sqlstate 42501");
	is_str(s.reason, "role_may_not_claim", "and reason role_may_not_claim");
	PQfinish(m);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'bound'");
}

/* ---- leaving ---- */

/* How long until b's share reaches want, in ms; -1 if not within timeout. */
static double
ms_until(PGconn *b, long want, int timeout_ms)
{
	double		start = now_seconds();
	Share		s;

	while (now_seconds() - start < timeout_ms / 1000.0)
	{
		report(b, "40", &s);
		if (s.max_size == want)
			return (now_seconds() - start) * 1000;
		sleep_ms(10);
	}
	return -1;
}

static void
test_leave(void)
{
	PGconn	   *a = pod_in("shop", "roll", "old-1", NULL);
	PGconn	   *b = pod_in("warehouse", "roll", "new-1", NULL);
	Share		s;
	double		left_ms,
				closed_ms;

	settle(a, "30", 30, 3000);
	is_int(settle(b, "10", 10, 3000), 10, "an old pod holds 30 of 40 and a new one 10, as they ask");

	report(a, "leave", &s);
	is_str(s.status, "left", "SET connbudget.demand = 'leave': status left");
	is_int(s.max_size, 0, "and a share of 0");
	PQfinish(a);
	left_ms = ms_until(b, 40, 5000);
	ok(left_ms >= 0 && left_ms < 1000,
	   "the new pod has all 40 %.0f ms after the old one left (publish period 20 ms, pod_ttl 6000 ms)",
	   left_ms);
	is_int(pg_wait_for(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'old-1'", 0, 1000), 0,
		   "and the old pod is gone from the pods view");

	/* the same without leaving: the lease holds its share for pod_ttl */
	a = pod_in("shop", "roll", "old-2", NULL);
	settle(b, "10", 10, 3000);
	is_int(settle(a, "30", 30, 3000), 30, "again: an old pod asks 30 and the new one 10");
	PQfinish(a);
	closed_ms = ms_until(b, 40, 10000);
	ok(closed_ms > 4000, "one that closes without leaving holds its share until its lease ends (%.0f ms)",
	   closed_ms);
	diag("leave: %.0f ms; close without leaving: %.0f ms (pod_ttl 6000 ms)", left_ms, closed_ms);
	PQfinish(b);
}

/* ---- parallel workers ---- */

static void
test_parallel(void)
{
	PGconn	   *c = pod_in("shop", "par", "par-1", NULL);
	Share		s,
				w;
	long		version = pg_long(c, "SHOW server_version_num");

	settle(c, "6", 6, 3000);
	read_share(c, &s);
	pg_exec(c, version >= 160000 ? "SET debug_parallel_query = on" : "SET force_parallel_mode = on");
	pg_exec(c, "SET parallel_setup_cost = 0");
	is_str(pg_value(c, "EXPLAIN (COSTS OFF) SELECT current_setting('connbudget.share')"), "Gather",
		   "current_setting('connbudget.share') runs in a parallel worker here");
	parse_share(pg_value(c, "SELECT current_setting('connbudget.share')"), &w);
	is_str(w.status, "ok", "where it reads its leader's share: %s", w.text);
	is_int(w.max_size, s.max_size, "the same share as the leader's");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'par'"), 1,
		   "and registers no pod of its own");
	PQfinish(c);
}

/* ---- the pace of a refusal ---- */

static void
test_refusal_pace(void)
{
	PGconn	   *held[3];
	char		st[6],
				msg[4096];
	PGconn	   *c;

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('capped', 0, 3, 1, NULL)");
	pg_exec(admin, "CREATE ROLE capuser LOGIN");
	for (int i = 0; i < 3; i++)
		held[i] = pg_connect_or_bail("dbname=shop", "user=capuser", "application_name=capped",
									 "options=-c connbudget.pod=cap-1");
	c = pg_connect_ex(st, msg, sizeof(msg), "dbname=shop", "user=capuser", "application_name=capped",
					  "options=-c connbudget.pod=cap-1", (const char *) NULL);
	ok(c == NULL && strcmp(st, "53300") == 0, "the fourth connection is refused with 53300");
	ok(strstr(msg, "CONTEXT:  connbudget: retry_ms=200 lease_ms=6000 protocol=2") != NULL,
	   "its context field states the pace to retry at, machine-readable: %s", msg);
	for (int i = 0; i < 3; i++)
		PQfinish(held[i]);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'capped'");
}

/* ---- which demand a share answers ---- */

/* The share's demand word, or "(none)". */
static const char *
answered(const Share *s, char *out, size_t len)
{
	return share_word(s->text, "demand", out, len) ? out : "(none)";
}

/* Report demand until the share says it answers it, for up to 3 s. */
static void
report_until_answered(PGconn *conn, const char *demand, Share *s)
{
	double		end = now_seconds() + 3;
	char		word[32];

	do
	{
		report(conn, demand, s);
		if (strcmp(answered(s, word, sizeof(word)), demand) == 0)
			break;
		sleep_ms(10);
	} while (now_seconds() < end);
}

static void
test_answered_demand(void)
{
	PGconn	   *c = pod_in("shop", "api", "api-9", NULL);
	Share		s;
	char		word[32];
	long		allocator;

	report(c, "5", &s);
	is_str(answered(&s, word, sizeof(word)), "5",
		   "the share of a first report says it answers that demand: %s", s.text);

	/* the allocator stopped: nothing is published */
	allocator = postmaster_child("postgres: connbudget allocator");
	if (allocator <= 0)
		bail_out("the allocator is not running");
	kill((pid_t) allocator, SIGSTOP);
	report(c, "7", &s);
	is_str(answered(&s, word, sizeof(word)), "5",
		   "while the server has not published a changed demand of 7, the share says it answers 5");
	sleep_ms(200);				/* ten publish periods */
	report(c, "7", &s);
	is_str(answered(&s, word, sizeof(word)), "5",
		   "and goes on saying so for as long as nothing is published: %s", s.text);
	kill((pid_t) allocator, SIGCONT);

	report_until_answered(c, "7", &s);
	is_str(answered(&s, word, sizeof(word)), "7", "once published, it says 7");
	ok(s.max_size >= 0 && s.max_size <= 7, "and its share is within that demand (%ld)", s.max_size);

	report_until_answered(c, "unbounded", &s);
	is_str(answered(&s, word, sizeof(word)), "unbounded", "an unbounded demand is answered as such");
	PQfinish(c);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE DATABASE shop");
	pg_exec(admin, "CREATE DATABASE warehouse");
	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('api', 0, NULL, 1, NULL), "
			"('roll', 0, NULL, 1, NULL)");

	test_every_database();
	test_demand_settings();
	test_answered_demand();
	test_statuses();
	test_leave();
	test_parallel();
	test_refusal_pace();

	PQfinish(admin);
	return done_testing();
}
