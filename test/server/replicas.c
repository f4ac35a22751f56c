/*
 * replicas.c -- connbudget on hot standbys: each server governs its own
 * budget with the limits replicated from the primary; a change committed
 * on the primary is in force on each standby within two refresh
 * intervals; the views and pool_share() work there; application_limits is
 * read-only there with a clear error; and after a promotion the new
 * primary takes limit changes at once.
 *
 * A primary (this test's cluster) and two streaming standbys made with
 * pg_basebackup -R, on loopback.  The second standby has a larger
 * max_connections, so a budget of its own.
 *
 * cluster: max_connections=40 superuser_reserved_connections=0 connbudget.reserved_connections=10 connbudget.refresh_interval=1000 connbudget.pod_ttl=2000
 */
#include "../lib/pgtest.h"

#define REFRESH_MS 1000

static PGconn *primary;
static char standby_dir[2][1024];
static char standby_port[2][16];

static PGconn *
connect_to(int standby, const char *app, const char *pod, const char *user, char *st,
		   char *msg, size_t msglen)
{
	char		port[32];

	snprintf(port, sizeof(port), "port=%s", standby >= 0 ? standby_port[standby] : getenv("PGPORT"));
	return pg_connect_pod(st, msg, msglen, user, app, pod, port, (const char *) NULL);
}

static PGconn *
admin_of(int standby)
{
	char		st[6],
				msg[1024];
	PGconn	   *c = connect_to(standby, "admin", NULL, "postgres", st, msg, sizeof(msg));

	if (!c)
		bail_out("cannot connect to standby %d: %s", standby + 1, msg);
	return c;
}

static void
make_standbys(void)
{
	for (int i = 0; i < 2; i++)
	{
		snprintf(standby_dir[i], sizeof(standby_dir[i]), "%s/standby%d", cluster_dir(), i + 1);
		if (cluster_sh("cluster_standby '%s' '%s' %s >/dev/null", cluster_dir(), standby_dir[i],
					   i == 1 ? "max_connections=60" : "") != 0)
			bail_out("standby %d did not start", i + 1);
		cluster_port(standby_dir[i], standby_port[i], sizeof(standby_port[i]));
	}
	is_int(pg_wait_for(primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
					   2, 30000), 2, "two standbys stream from the primary (pg_basebackup -R)");
}

/* Wait until every standby has replayed everything the primary wrote. */
static void
catch_up(void)
{
	char		lsn[64];
	char		sql[256];

	snprintf(lsn, sizeof(lsn), "%.60s", pg_value(primary, "SELECT pg_current_wal_lsn()::text"));
	snprintf(sql, sizeof(sql), "SELECT (pg_last_wal_replay_lsn() >= '%s')::int", lsn);
	for (int i = 0; i < 2; i++)
	{
		PGconn	   *s = admin_of(i);

		pg_wait_for(s, sql, 1, 30000);
		PQfinish(s);
	}
}

static void
test_limits_in_force_on_standbys(void)
{
	char		st[6],
				msg[1024];

	for (int i = 0; i < 2; i++)
	{
		PGconn	   *admin = admin_of(i);
		PGconn	   *a,
				   *b,
				   *c;

		is_int(pg_wait_for(admin, "SELECT max_connections FROM connbudget.applications "
						   "WHERE application_name = 'api'", 2, 10000), 2,
			   "standby %d has api's limits from the primary", i + 1);
		is_int(pg_long(admin, "SELECT budget FROM connbudget.budget"), i == 0 ? 30 : 50,
			   "standby %d shares a budget of its own (max_connections %d)", i + 1, i == 0 ? 40 : 60);
		a = connect_to(i, "api", "s-1", "apiuser", st, msg, sizeof(msg));
		b = connect_to(i, "api", "s-2", "apiuser", st, msg, sizeof(msg));
		c = connect_to(i, "api", "s-3", "apiuser", st, msg, sizeof(msg));
		ok(a && b && !c && strcmp(st, "53300") == 0,
		   "standby %d enforces api's cap of 2 on its own connections", i + 1);
		is_int(pg_long(a, "SELECT max_size FROM connbudget.pool_share(NULL)"), 1,
			   "pool_share() works on standby %d: each of api's 2 pods there gets 1 of its cap", i + 1);
		is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE application_name = 'api'"), 3,
			   "the views work on standby %d (two pods, and the refused one's lease)", i + 1);
		PQfinish(a);
		PQfinish(b);
		PQfinish(admin);
	}
	is_int(pg_long(primary, "SELECT connections FROM connbudget.applications WHERE application_name = 'api'"),
		   0, "the primary counts none of them: one budget per server");
}

static void
test_change_reaches_standbys(void)
{
	double		t0,
				took[2] = {-1, -1};
	PGconn	   *admins[2] = {admin_of(0), admin_of(1)};

	t0 = now_seconds();
	pg_exec(primary, "UPDATE connbudget.application_limits SET max_connections = 5 WHERE application_name = 'api'");
	for (;;)
	{
		int			done = 1;

		for (int i = 0; i < 2; i++)
		{
			if (took[i] < 0 &&
				pg_long(admins[i], "SELECT max_connections FROM connbudget.applications "
						"WHERE application_name = 'api'") == 5)
				took[i] = now_seconds() - t0;
			done &= took[i] >= 0;
		}
		if (done || now_seconds() - t0 > 10)
			break;
		sleep_ms(10);
	}
	for (int i = 0; i < 2; i++)
		ok(took[i] >= 0 && took[i] <= 2 * REFRESH_MS / 1000.0,
		   "a cap changed on the primary is in force on standby %d within two refresh intervals (%.2f s)",
		   i + 1, took[i]);
	{
		char		st[6],
					msg[1024];
		PGconn	   *c[5];
		int			in = 0;

		for (int k = 0; k < 5; k++)
			in += (c[k] = connect_to(1, "api", "t-1", "apiuser", st, msg, sizeof(msg))) != NULL;
		is_int(in, 5, "standby 2 now admits api's 5");
		for (int k = 0; k < 5; k++)
			PQfinish(c[k]);
	}
	PQfinish(admins[0]);
	PQfinish(admins[1]);
}

static void
test_read_only_on_standby(void)
{
	PGconn	   *s = admin_of(0);
	char		msg[1024];
	const char *statements[] = {
		"INSERT INTO connbudget.application_limits (application_name) VALUES ('x')",
		"UPDATE connbudget.application_limits SET weight = 2",
		"DELETE FROM connbudget.application_limits",
		"TRUNCATE connbudget.application_limits",
	};

	for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++)
	{
		is_str(pg_exec_error(s, statements[i], msg, sizeof(msg)), "25006",
			   "on a standby: %s -- refused (25006)", statements[i]);
		ok(strstr(msg, "connbudget.application_limits on a standby") != NULL &&
		   strstr(msg, "replicate here") != NULL, "with a clear error: %s", msg);
	}
	is_int(pg_long(s, "SELECT count(*) FROM connbudget.application_limits"), 1, "nothing changed");
	PQfinish(s);
}

static void
test_promotion(void)
{
	PGconn	   *s;
	char		st[6],
				msg[1024];
	PGconn	   *a,
			   *b;

	is_int(shell("'%s/pg_ctl' -D '%s/data' -m immediate stop >/dev/null", getenv("PG_BINDIR"),
				 cluster_dir()), 0, "the primary is stopped (-m immediate)");
	s = pg_connect_ex(st, msg, sizeof(msg), "application_name=admin", (const char *) NULL);
	ok(s == NULL, "and answers no more");
	ok(cluster_sh("cluster_promote '%s'", standby_dir[0]) == 0,
	   "standby 1 is promoted");
	s = admin_of(0);
	is_int(pg_wait_for(s, "SELECT (NOT pg_is_in_recovery())::int", 1, 30000), 1, "it is a primary now");
	is_str(pg_exec_error(s, "UPDATE connbudget.application_limits SET max_connections = 1 "
						 "WHERE application_name = 'api'", msg, sizeof(msg)), "",
		   "the new primary accepts a limit change at once%s%s", msg[0] ? ": " : "", msg);
	a = connect_to(0, "api", "p-1", "apiuser", st, msg, sizeof(msg));
	b = connect_to(0, "api", "p-2", "apiuser", st, msg, sizeof(msg));
	ok(a && !b && strcmp(st, "53300") == 0, "and it is in force there for the next connection");
	PQfinish(a);
	PQfinish(s);
}

int
main(void)
{
	primary = pg_connect_or_bail("application_name=admin");
	pg_exec(primary, "CREATE EXTENSION connbudget");
	pg_exec(primary, "CREATE ROLE apiuser LOGIN");
	pg_exec(primary, "INSERT INTO connbudget.application_limits VALUES ('api', 0, 2, 1, '{apiuser}')");

	make_standbys();
	catch_up();
	test_limits_in_force_on_standbys();
	test_change_reaches_standbys();
	test_read_only_on_standby();
	PQfinish(primary);
	test_promotion();

	for (int i = 0; i < 2; i++)
		cluster_sh("cluster_destroy '%s'", standby_dir[i]);
	return done_testing();
}
