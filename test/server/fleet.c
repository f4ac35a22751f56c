/*
 * fleet.c -- a fleet of leased pods, many more than max_connections = 600:
 * every one is listed, shares follow demand, connects still work, and a
 * full pod table refuses a new pod with 53400 and the error that names
 * connbudget.max_pods instead of counting it as "other" (a superuser is
 * let in, as "other").
 *
 * The pods are created the way pools create them: a connection with its
 * own pod id calls pool_share() and goes away, leaving a lease of
 * pod_ttl (long here, so that they all stay live).  Each is a backend's
 * start and exit, some 40 ms of CPU on a small virtual machine, so the
 * fleet is 2,000 pods, which fill connbudget.max_pods; CB_FLEET_PODS=10000
 * runs it with 10,000 (up to 20,000; max_pods set to match, and the server
 * restarted).
 * bench/run fleet measures pool_share() and connects among 10,000.
 *
 * cluster: max_connections=600 superuser_reserved_connections=3 connbudget.reserved_connections=20 connbudget.pod_ttl=900s connbudget.refresh_interval=100ms connbudget.max_pods=2000 connbudget.max_pods_per_role=20000
 */
#include "../lib/pgtest.h"
#include "../lib/pod_lease.h"

#define WORKERS 40

static PGconn *admin;
static int	FLEET = 2000;		/* connbudget.max_pods of the cluster line */

static void
test_ten_thousand_pods(void)
{
	double		t0 = now_seconds();
	int			failures = lease_pods_at_once(FLEET, 0, 10, WORKERS, "fleetuser");

	diag("%d pods leased by %d processes in %.1f s", FLEET, WORKERS, now_seconds() - t0);
	is_int(failures, 0, "every pod connected and called pool_share()");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods"), FLEET,
		   "all %d leased pods are listed in connbudget.pods (max_connections is 600)", FLEET);
	is_int(pg_long(admin, "SELECT pods FROM connbudget.budget"), FLEET,
		   "connbudget.budget counts them");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.applications WHERE pods = 10"), FLEET / 10,
		   "each of the %d applications has its 10 pods", FLEET / 10);
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE demand = 2 AND lease_expires > now()"),
		   FLEET, "each pod's reported demand and lease are kept");
	ok(pg_long(admin, "SELECT sum(share) FROM connbudget.pods") <=
	   pg_long(admin, "SELECT budget FROM connbudget.budget"),
	   "their shares add up to no more than the budget (%ld of %ld)",
	   pg_long(admin, "SELECT sum(share) FROM connbudget.pods"),
	   pg_long(admin, "SELECT budget FROM connbudget.budget"));
}

static void
test_connects_and_shares_in_a_fleet(void)
{
	PGconn	   *a;

	/* 577 connections among thousands of pods: most get 0; one
	 * application weighs so much that its pods get what they ask for */
	pg_exec(admin, "INSERT INTO connbudget.application_limits (application_name, weight) "
			"VALUES ('fleet-0000', 1000)");
	a = pg_connect_or_bail("application_name=fleet-0000",
						   "options=-c connbudget.pod=pod-00000", "user=fleetuser");
	is_int(pg_wait_for(a, "SELECT max_size FROM connbudget.pool_share(2)", 2, 5000), 2,
		   "a pod of the heavy application connects again and gets the 2 it asks for");
	pg_long(a, "SELECT max_size FROM connbudget.pool_share(3)");
	is_int(pg_wait_for(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'pod-00000'", 3, 5000),
		   3, "its new demand is recorded among %d pods", FLEET);
	is_int(pg_wait_for(a, "SELECT max_size FROM connbudget.pool_share(3)", 3, 5000), 3,
		   "and its share follows its demand within a publish period");
	PQfinish(a);
}

static void
test_full_table(void)
{
	char		st[6],
				msg[2048],
				full[64];
	PGconn	   *conn;
	PGconn	   *super;

	/* the table is full of live pods: one more is refused, by name */
	conn = pg_connect_ex(st, msg, sizeof(msg), "application_name=fleet-new",
						 "options=-c connbudget.pod=pod-new", "user=fleetuser",
						 (const char *) NULL);
	ok(conn == NULL, "a new pod with the pod table full is refused");
	is_str(st, "53400", "with SQLSTATE 53400 (configuration_limit_exceeded)");
	snprintf(full, sizeof(full), "all %d pod slots are taken", FLEET);
	ok(strstr(msg, full) != NULL &&
	   strstr(msg, "connbudget.max_pods") != NULL,
	   "the message names the capacity and the setting: %.200s", msg);
	/* once its backend has exited (the client may hear the FATAL first) */
	is_int(pg_wait_for(admin, "SELECT other FROM connbudget.budget", 1, 5000), 1,
		   "and it was not counted as an \"other\" connection");
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.pods WHERE pod = 'pod-new'"), 0,
		   "nor listed as a pod");

	/* existing pods still connect */
	conn = pg_connect("application_name=fleet-0001", "options=-c connbudget.pod=pod-00010",
					  "user=fleetuser");
	ok(conn != NULL, "a pod that is already live still connects");
	PQfinish(conn);

	/* superusers are never refused: let in, counted as other */
	super = pg_connect("application_name=fleet-new", "options=-c connbudget.pod=pod-super");
	ok(super != NULL, "a superuser with a new pod is let in even so");
	is_int(pg_long(admin, "SELECT other FROM connbudget.budget"), 2,
		   "and counted as an \"other\" connection");
	PQfinish(super);
	ok(server_log_contains(0, "connbudget cannot register pod \"pod-new\""),
	   "the server log has the refusal");
}

int
main(void)
{
	if (getenv("CB_FLEET_PODS") && atoi(getenv("CB_FLEET_PODS")) != FLEET)
	{
		char		sql[128];

		FLEET = atoi(getenv("CB_FLEET_PODS"));
		if (FLEET < 1000 || FLEET > 20000 || FLEET % 10 != 0)
			bail_out("CB_FLEET_PODS is %s, not a multiple of 10 from 1000 to 20000 (the "
					 "cluster's connbudget.max_pods_per_role)", getenv("CB_FLEET_PODS"));
		admin = pg_connect_or_bail("application_name=admin");
		snprintf(sql, sizeof(sql), "ALTER SYSTEM SET connbudget.max_pods = %d", FLEET);
		pg_exec(admin, sql);
		PQfinish(admin);
		if (cluster_ctl("restart") != 0)
			bail_out("the restart with connbudget.max_pods = %d failed", FLEET);
	}
	admin = pg_connect_or_bail("application_name=admin");
	is_int(pg_long(admin, "SELECT current_setting('connbudget.max_pods')::int"), FLEET,
		   "connbudget.max_pods is the fleet's %d", FLEET);
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE fleetuser LOGIN");

	test_ten_thousand_pods();
	test_connects_and_shares_in_a_fleet();
	test_full_table();

	PQfinish(admin);
	return done_testing();
}
