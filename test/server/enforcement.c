/*
 * enforcement.c -- connect-time limits under concurrency.
 *
 * Many processes connect at the same moment; the extension must admit
 * exactly as many as the limit allows and refuse the rest with SQLSTATE
 * 53300, and every way a backend can go away must free its slot.
 *
 * Checked: 60 processes connecting at once to an application capped at 10
 * get exactly 10 in and 50 refused with FATAL 53300, whose message names
 * the application and whose DETAIL gives the numbers; the applications
 * view and pg_stat_activity agree; while three threads connect over the
 * cap for 3 s, readers of the applications view never count more than the
 * cap (a refused connection is never counted, even for a moment); after
 * they close, 10 connect again; pg_terminate_backend and a failure during
 * startup free their slots; a superuser connects although the application
 * or the budget is full, and is counted; the budget and other
 * applications' unused minimums hold under concurrency, with their own
 * messages; enforce = warn lets a connection over the cap in, counts it in
 * refused and logs the same message as a WARNING; off lets it in; and a
 * backend counts until it is as good as gone: while connections of an
 * application capped at 8 come and go, each exit aborting a transaction
 * that made a temporary table, no sample of pg_stat_activity sees more than
 * 8 of them.
 *
 * cluster: max_connections=120 superuser_reserved_connections=3 connbudget.reserved_connections=20
 */
#include <pthread.h>

#include "../lib/pgtest.h"

static PGconn *admin;

static long
app_value(const char *column, const char *app)
{
	char		sql[512];

	snprintf(sql, sizeof(sql),
			 "SELECT %s FROM connbudget.applications WHERE application_name = '%s'",
			 column, app);
	return pg_long(admin, sql);
}

static long
wait_app_connections(const char *app, long want)
{
	char		sql[512];

	snprintf(sql, sizeof(sql),
			 "SELECT coalesce((SELECT connections FROM connbudget.applications "
			 "WHERE application_name = '%s'), 0)", app);
	return pg_wait_for(admin, sql, want, 15000);
}

/* Reload the configuration and wait until new connections see "value". */
static void
set_and_reload(const char *setting, const char *value)
{
	char		sql[512];
	double		deadline = now_seconds() + 15;

	snprintf(sql, sizeof(sql), "ALTER SYSTEM SET %s = '%s'", setting, value);
	pg_exec(admin, sql);
	pg_exec(admin, "SELECT pg_reload_conf()");
	snprintf(sql, sizeof(sql), "SHOW %s", setting);
	for (;;)
	{
		PGconn	   *probe = pg_connect_or_bail("application_name=probe");
		const char *got = pg_value(probe, sql);
		int			done = got && strcmp(got, value) == 0;

		PQfinish(probe);
		if (done)
			return;
		if (now_seconds() > deadline)
			bail_out("%s did not become %s", setting, value);
		sleep_ms(50);
	}
}

/* ---- connects that are refused, over and over, while others look ---- */

typedef struct Refuser
{
	pthread_t	thread;
	int		   *stop;
	long		refused;
	long		other;
} Refuser;

static void *
refuser_main(void *arg)
{
	Refuser    *r = arg;

	while (!__atomic_load_n(r->stop, __ATOMIC_RELAXED))
	{
		char		st[6],
					msg[1024];
		PGconn	   *conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=capped",
										 "user=app", "options=-c connbudget.pod=storm",
										 (const char *) NULL);

		if (conn)
		{
			PQfinish(conn);
			r->other++;
		}
		else if (strcmp(st, "53300") == 0)
			__atomic_add_fetch(&r->refused, 1, __ATOMIC_RELAXED);
		else
			r->other++;
	}
	return NULL;
}

/* A reader of the applications view, as fast as it answers. */
typedef struct Looker
{
	pthread_t	thread;
	int		   *stop;
	long		reads;
	long		over;			/* reads that counted more than the cap */
} Looker;

#define STORM_CAP 10

static void *
looker_main(void *arg)
{
	Looker	   *l = arg;
	PGconn	   *conn = pg_connect_or_bail("application_name=looker");

	while (!__atomic_load_n(l->stop, __ATOMIC_RELAXED))
	{
		if (pg_long(conn, "SELECT connections FROM connbudget.applications "
					"WHERE application_name = 'capped'") > STORM_CAP)
			l->over++;
		__atomic_add_fetch(&l->reads, 1, __ATOMIC_RELAXED);
	}
	PQfinish(conn);
	return NULL;
}

/*
 * With the application at its cap, connect over and over (each connect
 * refused) for "seconds" while others read the applications view; returns
 * how many reads counted more connections than the cap.
 */
static long
refusals_seen_counted(int seconds, long *reads, long *refused)
{
	Refuser		refusers[3];
	Looker		lookers[3];
	int			stop = 0;
	long		over = 0;

	for (int i = 0; i < 3; i++)
	{
		refusers[i] = (Refuser) {.stop = &stop};
		lookers[i] = (Looker) {.stop = &stop};
		pthread_create(&refusers[i].thread, NULL, refuser_main, &refusers[i]);
		pthread_create(&lookers[i].thread, NULL, looker_main, &lookers[i]);
	}
	/* until there were enough of both to mean something (at least
	   "seconds", at most ten times that on a slow machine) */
	for (int waited = 0; waited < seconds * 10000; waited += 100)
	{
		long		r = 0,
					n = 0;

		for (int i = 0; i < 3; i++)
		{
			r += __atomic_load_n(&refusers[i].refused, __ATOMIC_RELAXED);
			n += __atomic_load_n(&lookers[i].reads, __ATOMIC_RELAXED);
		}
		if (waited >= seconds * 1000 && r > 100 && n > 30)
			break;
		sleep_ms(100);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	*reads = *refused = 0;
	for (int i = 0; i < 3; i++)
	{
		pthread_join(refusers[i].thread, NULL);
		pthread_join(lookers[i].thread, NULL);
		*refused += refusers[i].refused;
		*reads += lookers[i].reads;
		over += lookers[i].over;
		if (refusers[i].other)
			bail_out("a connect over the cap was not refused with 53300");
	}
	return over;
}

static void
test_cap_storm(void)
{
	Crowd		crowd;
	Crowd		crowd2;

	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"(application_name, max_connections) VALUES ('capped', 10)");

	crowd_start(&crowd, 60, "capped", "-c connbudget.pod=storm", "app");
	is_int(crowd.admitted, 10,
		   "60 simultaneous connects of an application capped at 10: exactly 10 admitted");
	is_int(crowd.refused, 50, "the other 50 are refused with SQLSTATE 53300");
	is_int(crowd.failed_other, 0, "no connect failed for another reason");
	ok(strstr(crowd.sample_message,
			  "FATAL:  53300: too many connections for application \"capped\"") != NULL,
	   "the refusal is FATAL 53300 and names the application");
	ok(strstr(crowd.sample_message,
			  "DETAIL:  Application \"capped\" holds 10 connections and its limit is 10") != NULL,
	   "its DETAIL gives the numbers");
	is_int(app_value("connections", "capped"), 10, "the applications view counts 10 connections");
	is_int(app_value("refused", "capped"), 50, "and 50 refusals");
	is_int(pg_long(admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'capped'"),
		   10, "pg_stat_activity agrees: 10 backends");
	{
		long		reads,
					refused,
					over = refusals_seen_counted(3, &reads, &refused);

		ok(over == 0 && refused > 100 && reads > 30,
		   "a refused connection is never counted: %ld reads of the applications view "
		   "during %ld refusals, %ld of them over the cap", reads, refused, over);
	}

	crowd_release(&crowd);
	is_int(wait_app_connections("capped", 0), 0, "closing them frees every slot");

	crowd_start(&crowd, 11, "capped", "-c connbudget.pod=storm", "app");
	ok(crowd.admitted == 10 && crowd.refused == 1,
	   "after they closed, 10 connect again and the 11th is refused (got %d/%d)",
	   crowd.admitted, crowd.refused);

	/* pg_terminate_backend frees slots too */
	is_int(pg_long(admin,
				   "SELECT count(pg_terminate_backend(pid)) FROM "
				   "(SELECT pid FROM pg_stat_activity WHERE application_name = 'capped' "
				   " ORDER BY pid LIMIT 4) t"),
		   4, "terminated 4 of the 10 with pg_terminate_backend");
	is_int(wait_app_connections("capped", 6), 6, "the 4 terminated backends released their slots");
	crowd_start(&crowd2, 5, "capped", "-c connbudget.pod=storm2", "app");
	ok(crowd2.admitted == 4 && crowd2.refused == 1,
	   "5 new connects after the terminations: 4 admitted, 1 refused (got %d/%d)",
	   crowd2.admitted, crowd2.refused);

	/* a superuser of the same application is never refused */
	{
		PGconn	   *su = pg_connect("application_name=capped",
									"options=-c connbudget.pod=storm");

		ok(su != NULL, "a superuser connects although the application is at its cap");
		is_int(app_value("connections", "capped"), 11,
			   "the superuser's connection is counted (11 of cap 10)");
		PQfinish(su);
	}
	crowd_release(&crowd2);
	crowd_release(&crowd);
	is_int(wait_app_connections("capped", 0), 0, "all slots free again");
}

static void
test_failed_startup_releases(void)
{
	char		st[6],
				msg[2048];
	PGconn	   *conn;

	pg_exec(admin, "UPDATE connbudget.application_limits SET max_connections = 1 "
			"WHERE application_name = 'capped'");
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=capped",
						 "user=app", "dbname=no_such_database", (const char *) NULL);
	ok(conn == NULL && strcmp(st, "3D000") == 0,
	   "a connection counted by the hook then failing at startup (no such database) fails");
	is_int(wait_app_connections("capped", 0), 0, "its slot is released");
	conn = pg_connect("application_name=capped", "user=app");
	ok(conn != NULL, "so the one slot of the application is free for the next connection");
	PQfinish(conn);
	is_int(wait_app_connections("capped", 0), 0, "and released again on a normal exit");
}

static void
test_budget_and_minimums(void)
{
	Crowd		crowd;
	Crowd		guarded;
	char		st[6],
				msg[2048];
	PGconn	   *conn;

	/* budget = 120 - 3 superuser reserved - 105 = 12 */
	set_and_reload("connbudget.reserved_connections", "105");
	is_int(pg_wait_for(admin, "SELECT budget FROM connbudget.budget", 12, 15000), 12,
		   "connbudget.reserved_connections = 105 on reload: budget 12");

	crowd_start(&crowd, 40, "free", "-c connbudget.pod=crowd", "app");
	is_int(crowd.admitted, 12,
		   "40 simultaneous connects of an uncapped application: exactly the budget of 12 admitted");
	is_int(crowd.refused, 28, "28 refused with 53300");
	ok(strstr(crowd.sample_message, "connection budget exhausted: application \"free\"") != NULL &&
	   strstr(crowd.sample_message, "12 of 12 in use") != NULL,
	   "the refusal says the budget is exhausted, with the numbers");
	is_int(pg_long(admin, "SELECT governed FROM connbudget.budget"), 12,
		   "the budget view counts 12 governed connections");
	crowd_release(&crowd);
	is_int(wait_app_connections("free", 0), 0, "all released");

	/* a guaranteed minimum is held for its application */
	pg_exec(admin, "INSERT INTO connbudget.application_limits "
			"(application_name, min_connections) VALUES ('guarded', 5)");
	crowd_start(&crowd, 20, "free", "-c connbudget.pod=crowd", "app");
	is_int(crowd.admitted, 7,
		   "with 5 of the 12 guaranteed to another application, 7 of 20 are admitted");
	ok(strstr(crowd.sample_message, "would take another application's guaranteed minimum") != NULL,
	   "the refusal says it would take another application's minimum");
	crowd_start(&guarded, 6, "guarded", "-c connbudget.pod=g", "app");
	ok(guarded.admitted == 5 && guarded.refused == 1,
	   "the guarded application still gets its 5, the 6th is refused (got %d/%d)",
	   guarded.admitted, guarded.refused);

	/* superusers are not refused by the budget either */
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=free",
						 "options=-c connbudget.pod=crowd", (const char *) NULL);
	ok(conn != NULL, "a superuser connects although the budget is exhausted");
	PQfinish(conn);

	crowd_release(&guarded);
	crowd_release(&crowd);
	is_int(pg_wait_for(admin, "SELECT governed FROM connbudget.budget", 0, 15000), 0,
		   "every governed slot released");
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'guarded'");
	set_and_reload("connbudget.reserved_connections", "20");
}

static void
test_warn_and_off(void)
{
	Crowd		crowd;
	long		log_from;
	PGconn	   *extra;

	pg_exec(admin, "UPDATE connbudget.application_limits SET max_connections = 2 "
			"WHERE application_name = 'capped'");
	crowd_start(&crowd, 2, "capped", "-c connbudget.pod=w", "app");
	is_int(crowd.admitted, 2, "2 connections fill the cap of 2");

	set_and_reload("connbudget.enforce", "warn");
	log_from = server_log_size();
	{
		long		refused_before = app_value("refused", "capped");

		extra = pg_connect("application_name=capped", "user=app",
						   "options=-c connbudget.pod=w");
		ok(extra != NULL, "enforce = warn: a connection over the cap is let in");
		is_int(app_value("refused", "capped"), refused_before + 1,
			   "enforce = warn: it is counted in refused");
	}
	sleep_ms(200);
	ok(server_log_contains(log_from, "WARNING:  too many connections for application \"capped\""),
	   "enforce = warn: the server log has the same message as a WARNING");
	PQfinish(extra);

	set_and_reload("connbudget.enforce", "off");
	{
		long		refused_before = app_value("refused", "capped");

		extra = pg_connect("application_name=capped", "user=app",
						   "options=-c connbudget.pod=w");
		ok(extra != NULL, "enforce = off: a connection over the cap is let in");
		is_int(app_value("refused", "capped"), refused_before,
			   "enforce = off: nothing is counted as refused");
		is_int(app_value("connections", "capped"), 3,
			   "enforce = off: connections are still counted");
		PQfinish(extra);
	}
	set_and_reload("connbudget.enforce", "on");
	crowd_release(&crowd);
}

/*
 * A backend counts until it is as good as gone.  Connections of an
 * application capped at 8 come and go as fast as they can, each leaving
 * behind a temporary table to drop on its way out (which makes an exit
 * slow); meanwhile samplers count the application's client backends in
 * pg_stat_activity.  No sample may see more than the cap: a new
 * connection is only admitted once an exiting one is no longer there.
 * Each connection leaves a transaction open that created a temporary table
 * and an index: its exit aborts the transaction and drops their files.
 */
static volatile int churn_stop;

static void *
churn_main(void *arg)
{
	long	   *admitted = arg;

	while (!churn_stop)
	{
		PGconn	   *c = pg_connect("application_name=churn", "user=app");

		if (c == NULL)
			continue;
		__atomic_fetch_add(admitted, 1, __ATOMIC_RELAXED);
		/* left open: the exit aborts it, and drops the table's files */
		PQclear(PQexec(c, "BEGIN; CREATE TEMP TABLE t AS SELECT g FROM generate_series(1, 20000) g; "
					   "CREATE INDEX ON t (g)"));
		PQfinish(c);
	}
	return NULL;
}

static void *
sample_main(void *arg)
{
	long	   *most = arg;
	PGconn	   *s = pg_connect_or_bail("application_name=sampler");

	while (!churn_stop)
	{
		long		n = pg_long(s, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'churn'");

		if (n > most[0])
			most[0] = n;
		most[1]++;
	}
	PQfinish(s);
	return NULL;
}

static void
test_counted_until_gone(void)
{
	pthread_t	churners[6],
				samplers[2];
	long		admitted[6] = {0},
				most[2][2] = {{0, 0}, {0, 0}},
				total = 0;
	double		start;

	pg_exec(admin, "INSERT INTO connbudget.application_limits VALUES ('churn', 0, 8, 1, NULL)");
	churn_stop = 0;
	for (int i = 0; i < 2; i++)
		pthread_create(&samplers[i], NULL, sample_main, most[i]);
	for (int i = 0; i < 6; i++)
		pthread_create(&churners[i], NULL, churn_main, &admitted[i]);
	/* at least 4 s, and until more than 20 connects (a sanitizer build is slow), at most 60 s */
	start = now_seconds();
	do
	{
		sleep_ms(100);
		total = 0;
		for (int i = 0; i < 6; i++)
			total += __atomic_load_n(&admitted[i], __ATOMIC_RELAXED);
	} while (now_seconds() - start < 60 && (now_seconds() - start < 4 || total <= 20));
	churn_stop = 1;
	total = 0;
	for (int i = 0; i < 6; i++)
	{
		pthread_join(churners[i], NULL);
		total += admitted[i];
	}
	for (int i = 0; i < 2; i++)
		pthread_join(samplers[i], NULL);
	ok(total > 20, "6 threads over a cap of 8 connected %ld times in %.1f s, each exit dropping a temporary table",
	   total, now_seconds() - start);
	ok(most[0][0] <= 8 && most[1][0] <= 8,
	   "no sample of pg_stat_activity (%ld) saw more of its backends than the cap: at most %ld",
	   most[0][1] + most[1][1], most[0][0] > most[1][0] ? most[0][0] : most[1][0]);
	pg_exec(admin, "DELETE FROM connbudget.application_limits WHERE application_name = 'churn'");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE app LOGIN");

	test_cap_storm();
	test_failed_startup_releases();
	test_budget_and_minimums();
	test_warn_and_off();
	test_counted_until_gone();

	PQfinish(admin);
	return done_testing();
}
