/*
 * pgbouncer_test.c -- connbudget-pgbouncer sizing real PgBouncers.
 *
 * Three PgBouncers, each with its controller in a network namespace of its
 * own, so each is a pod of its own to connbudget (the pod is its address,
 * NET.I.2).  Application "api" (role app) is capped at 12 connections; the
 * server refreshes every 500 ms and keeps a pod 3000 ms after its last
 * report.  test/pgbouncer/run sets this up and runs the test as root;
 * processes are started and stopped through fleet.sh.
 *
 * What is checked, in order:
 *   1. three loaded PgBouncers never hold more than the cap together, and
 *      once settled each stays within its share; no pgbench transaction
 *      fails; the metrics say the same;
 *   2. a loaded and two idle PgBouncers split the cap by demand (8, 2, 2);
 *   3. a PgBouncer and its controller killed with SIGKILL: their share
 *      goes to the others within pod_ttl; one started again gets its share
 *      and every pod is within its share soon after its first report;
 *   4. one stopped with SIGTERM leaves: the others' pools grow within a
 *      publish period and a refresh interval, far sooner than pod_ttl;
 *   5. PgBouncer restarted and reloaded under the controller, an admin
 *      console that refuses SET or is down, a share of 0, bad arguments:
 *      clear log lines, no crash, PgBouncer keeps serving;
 *   6. a PgBouncer with two pools (two [databases] entries, one role),
 *      loaded through both: together they stay within the pod's share;
 *   7. a controller run from the wrong address (the host's namespace, not
 *      its PgBouncer's): the server counts PgBouncer's connections in
 *      another pod, and the controller says so (log, metrics) until they
 *      are gone; the controllers of 1 to 6, rightly placed, never said it.
 */
#include "fleet.h"

#define CAP 12
#define REFRESH_MS 500
#define POD_TTL_MS 3000
#define PUBLISH_MS 50			/* refresh_ms / 10 */

/* the identity check's warning, and its line once right again */
#define MISMATCH_SAID "connections in this pod, fewer than PgBouncer's"
#define MISMATCH_GONE "the server counts PgBouncer's server connections in this pod again"

/* ---- the checks ---- */

static void
start_fleet(void)
{
	for (int i = 1; i <= NPODS; i++)
	{
		if (fleet("bouncer-start %d", i) != 0)
			bail_out("PgBouncer %d did not start", i);
		/* pod 2 runs the ThreadSanitizer build */
		if (shell("%sbash '%s' controller-start %d",
				  i == 2 ? "CB_FLEET_CONTROLLER_BIN=\"$CB_FLEET_CONTROLLER_TSAN\" " : "",
				  getenv("CB_FLEET_SH"), i) != 0)
			bail_out("controller %d did not start", i);
	}
	for (int i = 1; i <= NPODS; i++)
		ok(wait_log(i, "joined the budget", 1, 10000), "controller %d joined the budget", i);
	for (int i = 1; i <= NPODS; i++)
		ok(query_through(i, 10000), "PgBouncer %d answers a query (its pool has its first server connection)", i);
}

/* 1. The cap holds at every sample; each pod within its share once settled. */
static void
test_cap_and_shares(void)
{
	Bench		b[NPODS + 1];
	Pod			pods[NPODS + 1];
	double		start = now_seconds();
	int			samples = 0,
				settled_samples = 0,
				max_total = 0,
				over_share = 0,
				max_pod = 0;
	char		metrics[16384] = "",
				why[1024],
				first_over[256] = "";
	int			want[NPODS + 1] = {0, 4, 4, 4};

	for (int i = 1; i <= NPODS; i++)
		bench_start(&b[i], i, 6, 7);
	for (;;)
	{
		int			running = 0,
					total = read_pods(pods);
		double		t = now_seconds() - start;

		samples++;
		if (total > max_total)
			max_total = total;
		/* settled: 3 s (6 refresh intervals) after the load began */
		if (t > 3.0 && t < 6.5)
		{
			settled_samples++;
			for (int i = 1; i <= NPODS; i++)
			{
				if (pods[i].backends > max_pod)
					max_pod = pods[i].backends;
				if (pods[i].backends > pods[i].share)
				{
					if (!over_share++)
						snprintf(first_over, sizeof(first_over),
								 "pod %d held %d with a share of %d at %.1f s", i,
								 pods[i].backends, pods[i].share, t);
				}
			}
		}
		if (t > 4.0 && !metrics[0])
		{
			is_int(wait_shares(want, 0) >= 0, 1, "under load the three pods' shares are 4, 4 and 4 (12 / 3)");
			for (int i = 1; i <= NPODS; i++)
				is_int(pool_size(i), 3, "PgBouncer %d's pool size is its share minus its controller's connection: 3", i);
			http_get(1, "/metrics", metrics, sizeof(metrics));
		}
		for (int i = 1; i <= NPODS; i++)
			running += !bench_done(&b[i]);
		if (!running)
			break;
		sleep_ms(100);
	}
	diag("%d samples; at most %d server connections of api's pods together, %d of one pod",
		 samples, max_total, max_pod);
	ok(max_total <= CAP && max_total >= CAP - 1,
	   "the PgBouncers and controllers together held at most api's cap of %d at every one of %d samples (at most %d)",
	   CAP, samples, max_total);
	ok(over_share == 0 && settled_samples > 20,
	   "once settled, each PgBouncer plus its controller held no more than its share (%d samples%s%s)",
	   settled_samples, first_over[0] ? "; " : "", first_over);
	for (int i = 1; i <= NPODS; i++)
	{
		long		n = bench_wait(&b[i], why, sizeof(why));

		ok(n > 0, "pgbench through PgBouncer %d: no failed transaction, no aborted client (%ld transactions) %s",
		   i, n, why);
	}
	ok(strstr(metrics, "HTTP/1.1 200 OK") && strstr(metrics, "\nconnbudget_pgbouncer_share 4\n") &&
	   strstr(metrics, "\nconnbudget_pgbouncer_pool_size 3\n") &&
	   strstr(metrics, "\nconnbudget_pgbouncer_up{connection=\"server\"} 1\n") &&
	   strstr(metrics, "\nconnbudget_pgbouncer_up{connection=\"admin\"} 1\n") &&
	   strstr(metrics, "connbudget_pgbouncer_errors_total{kind=\"share_invalid\"} 0"),
	   "GET /metrics says share 4, pool size 3, both connections up, no invalid share");
	ok(strstr(metrics, "\nconnbudget_pgbouncer_identity_mismatch 0\n") &&
	   strstr(metrics, "connbudget_pgbouncer_errors_total{kind=\"identity_mismatch\"} 0") &&
	   strstr(metrics, "\nconnbudget_pgbouncer_pod_connections ") &&
	   !strstr(metrics, "\nconnbudget_pgbouncer_pod_connections NaN"),
	   "and the pod's connections as the server counts them, with no identity mismatch");
	if (!strstr(metrics, "connbudget_pgbouncer_share 4"))
		diag("%.600s", metrics);
	http_get(1, "/", metrics, sizeof(metrics));
	ok(strncmp(metrics, "HTTP/1.1 404", 12) == 0, "anything but GET /metrics is 404");
}

/* 2. One loaded, two idle: split by demand. */
static void
test_split_by_demand(void)
{
	Bench		b;
	Pod			pods[NPODS + 1];
	int			idle[NPODS + 1] = {0, 2, 2, 2};
	int			split[NPODS + 1] = {0, 8, 2, 2};
	double		ms;
	char		why[1024];

	/* the load of test 1 leaves the demand window after 6 intervals */
	ms = wait_shares(idle, 8000);
	ok(ms >= 0, "idle again, each pod demands 2 (PgBouncer 1 with headroom, plus the controller): shares 2, 2, 2");
	bench_start(&b, 1, 8, 5);
	ms = wait_shares(split, 4000);
	read_pods(pods);
	ok(ms >= 0, "PgBouncer 1 loaded by 8 clients, 2 and 3 idle: shares %d, %d, %d (want 8, 2, 2) after %.0f ms",
	   pods[1].share, pods[2].share, pods[3].share, ms);
	ok(pods[1].share >= 3 * pods[2].share && pods[1].share >= 3 * pods[3].share,
	   "the loaded pod's share is at least 3 times an idle one's (%d vs %d)", pods[1].share, pods[2].share);
	sleep_ms(600);
	is_int(pool_size(1), 7, "the loaded PgBouncer's pool size is 7");
	is_int(pool_size(2), 1, "an idle PgBouncer's pool size is 1");
	ok(bench_wait(&b, why, sizeof(why)) > 0, "no pgbench transaction failed %s", why);
}

/* 3 and 4: killed, started again, stopped with SIGTERM. */
static void
test_kill_join_leave(void)
{
	Bench		b[NPODS + 1],
				b3;
	Pod			pods[NPODS + 1];
	int			loaded[NPODS + 1] = {0, 4, 4, 4};
	int			two[NPODS + 1] = {0, 6, 6, 0};
	double		t0,
				ms,
				first = -1,
				joined = -1,
				settled = -1,
				loaded_at = -1;
	char		why[1024];
	pid_t		bouncer3,
				controller3;
	int			status;

	for (int i = 1; i <= NPODS; i++)
		bench_start(&b[i], i, 6, i == 3 ? 4 : 20);
	ms = wait_shares(loaded, 6000);
	ok(ms >= 0, "three loaded pods: shares 4, 4, 4 (%.0f ms)", ms);

	/* 3a. SIGKILL: the pod cannot leave; its lease runs out after pod_ttl */
	bouncer3 = read_pid("%s/b%d/pgbouncer.pid", 3);
	controller3 = read_pid("%s/c%d.pid", 3);
	t0 = now_seconds();
	kill(controller3, SIGKILL);
	kill(bouncer3, SIGKILL);
	ms = wait_shares(two, POD_TTL_MS + 3000);
	diag("killed with SIGKILL: its share went to the others after %.0f ms (pod_ttl %d ms)",
		 ms, POD_TTL_MS);
	ok(ms >= POD_TTL_MS - 1.1 * REFRESH_MS - PUBLISH_MS - 200 && ms <= POD_TTL_MS + REFRESH_MS,
	   "a killed pod's share goes to the others within pod_ttl of its last report (%.0f ms; pod_ttl %d)",
	   ms, POD_TTL_MS);
	sleep_ms(1200);
	is_int(pool_size(1), 5, "PgBouncer 1 grew to the share of 6, less its controller: 5");
	is_int(pool_size(2), 5, "PgBouncer 2 too: 5");
	bench_wait(&b[3], why, sizeof(why));	/* its PgBouncer died under it */
	fleet("bouncer-stop 3 KILL");
	ok(controller_stop(3, "KILL") == 137, "controller 3 was killed (exit status 137)");

	/* 3b. Started again, idle, into a full budget: it gets its share */
	t0 = now_seconds();
	if (fleet("bouncer-start 3") != 0 || fleet("controller-start 3") != 0)
		bail_out("pod 3 did not start again");
	while (now_seconds() - t0 < 8 && settled < 0)
	{
		int			within = 1;
		double		t = (now_seconds() - t0) * 1000;

		read_pods(pods);
		if (first < 0 && pods[3].live && pods[3].demand >= 2 && log_count(3, "joined the budget") > 0)
			first = t;
		for (int i = 1; i <= NPODS; i++)
			within &= pods[i].live && pods[i].backends <= pods[i].share;
		if (first >= 0 && joined < 0 && pods[3].share >= 2 && pool_size(3) == pods[3].share - 1)
			joined = t;
		if (joined >= 0 && within)
			settled = t;
		sleep_ms(20);
	}
	diag("started again into a full budget: first report after %.0f ms; its share in force in "
		 "its PgBouncer %.0f ms after that (%.1f refresh intervals); every pod within its share "
		 "%.0f ms after it (%.1f intervals)", first, joined - first, (joined - first) / REFRESH_MS,
		 settled - first, (settled - first) / REFRESH_MS);
	ok(first >= 0 && joined >= 0 && joined - first <= 2 * REFRESH_MS,
	   "a started pod has its share in force within 2 refresh intervals of its first report (%.0f ms)",
	   joined - first);
	ok(settled >= 0 && settled - first <= 4 * REFRESH_MS,
	   "and every pod is within its share within 4 refresh intervals of it (%.0f ms)", settled - first);

	/* 3c. Its clients come: its demand rises and the others make room */
	ok(query_through(3, 5000), "the started PgBouncer answers once it has a server connection");
	t0 = now_seconds();
	bench_start(&b3, 3, 6, 5);
	while (now_seconds() - t0 < 8 && loaded_at < 0)
	{
		int			within = 1;

		read_pods(pods);
		for (int i = 1; i <= NPODS; i++)
			within &= pods[i].live && pods[i].backends <= pods[i].share;
		if (pods[3].share == 4 && pods[1].share == 4 && pods[2].share == 4 && within &&
			pool_size(3) == 3)
			loaded_at = (now_seconds() - t0) * 1000;
		sleep_ms(20);
	}
	diag("its load began: shares 4, 4, 4 and every pod within its share after %.0f ms (%.1f intervals)",
		 loaded_at, loaded_at / REFRESH_MS);
	ok(loaded_at >= 0 && loaded_at <= 4 * REFRESH_MS,
	   "with its clients, its share grows to 4 and the others shrink to theirs within 4 refresh intervals (%.0f ms)",
	   loaded_at);
	ok(bench_wait(&b3, why, sizeof(why)) > 0, "no pgbench transaction through the started PgBouncer failed %s", why);
	{
		char		m[16384] = "";
		const char *at;
		long		rises = -1;

		http_get(3, "/metrics", m, sizeof(m));
		if ((at = strstr(m, "\nconnbudget_pgbouncer_rises_reported_total ")) != NULL)
			rises = atol(at + strlen("\nconnbudget_pgbouncer_rises_reported_total "));
		ok(rises >= 1, "with clients waiting, its controller reported the risen demand at once, not at its "
		   "next refresh (rises_reported_total %ld)", rises);
	}

	/* 4. SIGTERM: the controller leaves, its PgBouncer stops with it */
	ms = wait_shares(loaded, 3000);
	controller3 = read_pid("%s/c%d.pid", 3);
	bouncer3 = read_pid("%s/b%d/pgbouncer.pid", 3);
	t0 = now_seconds();
	kill(controller3, SIGTERM);
	kill(bouncer3, SIGTERM);
	ms = -1;
	while (now_seconds() - t0 < 5)
	{
		if (pool_size(1) == 5 && pool_size(2) == 5)
		{
			ms = (now_seconds() - t0) * 1000;
			break;
		}
		sleep_ms(10);
	}
	diag("stopped with SIGTERM: the others' pools grew to 5 after %.0f ms (publish period %d + refresh "
		 "interval %d; pod_ttl %d)", ms, PUBLISH_MS, REFRESH_MS, POD_TTL_MS);
	ok(ms >= 0 && ms <= PUBLISH_MS + 1.1 * REFRESH_MS + 300,
	   "a pod that leaves frees its share within a publish period and a refresh interval (%.0f ms), not pod_ttl",
	   ms);
	status = controller_stop(3, "TERM");
	is_int(status, 0, "the controller exits 0 on SIGTERM");
	ok(log_count(3, "left the budget") == 1, "and says it left the budget");
	fleet("bouncer-stop 3");
	for (int i = 1; i <= 2; i++)
	{
		long		n = bench_wait(&b[i], why, sizeof(why));

		ok(n > 0, "pgbench through PgBouncer %d ran through the kill, the join and the leave of pod 3 "
		   "without a failed transaction (%ld transactions) %s", i, n, why);
	}
	is_int(log_count(1, "server_lifetime back to") + log_count(2, "server_lifetime back to") > 0, 1,
		   "shrinking under load lowered server_lifetime for a while and set it back (logged)");
	ok(strcmp(lifetime(1), "3600") == 0 && strcmp(lifetime(2), "3600") == 0,
	   "PgBouncer 1 and 2's server_lifetime is the file's 3600 again (%s, %s)", lifetime(1), lifetime(2));
}

/* 5. Restart, RELOAD, an admin console that refuses or is down, share 0. */
static void
test_bad_input(void)
{
	int			size,
				n;
	Pod			pods[NPODS + 1];
	char		sql[256];
	long		budget;

	/* PgBouncer restarted under its controller, then reloaded */
	if (fleet("bouncer-start 3 default_pool_size=20") != 0 || fleet("controller-start 3") != 0)
		bail_out("pod 3 did not start again");
	ok(wait_log(3, "pool size 20 ->", 1, 5000), "the controller set PgBouncer 3's size from the file's 20");
	size = pool_size(3);
	fleet("bouncer-stop 3");
	ok(wait_log(3, "admin console", 1, 3000), "PgBouncer stopped under the controller: logged (%s)",
	   log_count(3, "cannot connect to PgBouncer's admin console") ? "cannot connect" : "lost");
	sleep_ms(300);
	ok(controller_alive(3), "the controller is still running without its PgBouncer");
	fleet("bouncer-start 3 default_pool_size=20");
	ok(wait_log(3, "setting them again", 1, 8000), "PgBouncer restarted: the controller saw the file's size and set its own again");
	sleep_ms(200);
	n = pool_size(3);
	ok(n != 20 && n >= 1, "PgBouncer 3's pool size is the controller's (%d, before the restart %d), not the file's 20", n, size);
	admin_command(3, "RELOAD");
	ok(wait_log(3, "setting them again", 2, 3000), "RELOAD reset it: logged and set again");
	sleep_ms(200);
	n = pool_size(3);
	ok(n != 20 && n >= 1, "after RELOAD the pool size is the controller's again (%d)", n);
	ok(query_through(3, 3000), "PgBouncer 3 serves after the restart and the RELOAD");
	is_int(controller_stop(3, "TERM"), 0, "the controller exits 0");
	n = pool_size(3);			/* the last size it set, which may be newer */

	/* an admin console that may SHOW but not SET (--min-size 2: a size to set) */
	fleet("controller-start 3 --min-size 2 --admin 'host=%s/b3 port=6432 dbname=pgbouncer user=stats'",
		  fleet_dir);
	ok(wait_log(3, "PgBouncer refused SET default_pool_size = 2", 1, 5000) &&
	   log_count(3, "admin access needed") >= 1,
	   "a stats-only admin user: \"PgBouncer refused SET default_pool_size = 2: admin access needed\" logged");
	sleep_ms(1500);
	is_int(log_count(3, "PgBouncer refused SET"), 1, "logged once, not at every retry");
	ok(controller_alive(3), "the controller keeps running");
	is_int(pool_size(3), n, "PgBouncer keeps the last good size (%d)", n);
	ok(query_through(3, 3000), "and keeps serving");
	is_int(controller_stop(3, "TERM"), 0, "the controller exits 0");

	/* an admin console that is down */
	fleet("controller-start 3 --admin 'host=%s/b3 port=6999 dbname=pgbouncer user=pgbouncer'", fleet_dir);
	ok(wait_log(3, "cannot connect to PgBouncer's admin console", 1, 5000),
	   "the admin console down: \"cannot connect to PgBouncer's admin console\" logged");
	sleep_ms(1500);
	is_int(log_count(3, "cannot connect to PgBouncer's admin console"), 1, "once, however often it retries");
	read_pods(pods);
	ok(controller_alive(3) && pods[3].live && pods[3].demand >= 2,
	   "the controller keeps running and reporting (pod 3 live, demand %d)", pods[3].demand);
	ok(query_through(3, 3000), "PgBouncer 3 keeps serving");
	is_int(controller_stop(3, "TERM"), 0, "the controller exits 0");
	fleet("bouncer-stop 3");

	/* a share of 0: another application's guaranteed minimum takes the budget */
	budget = pg_long(db, "SELECT budget FROM connbudget.budget");
	snprintf(sql, sizeof(sql),
			 "INSERT INTO connbudget.application_limits VALUES ('batch', %ld, NULL, 1, NULL)", budget);
	pg_exec(db, sql);
	ok(wait_log(1, "the pod's share is 0", 1, 4000) && wait_log(2, "the pod's share is 0", 1, 2000),
	   "batch's min_connections takes the whole budget (%ld): both controllers log that the pod's share is 0", budget);
	read_pods(pods);
	ok(pods[1].share == 0 && pods[2].share == 0, "api's pods have shares %d and %d", pods[1].share, pods[2].share);
	sleep_ms(300);
	is_int(pool_size(1), 1, "PgBouncer 1's pool size is 1, never 0");
	ok(query_through(1, 3000), "PgBouncer 1 still answers on the server connection it keeps");
	ok(controller_alive(1) && controller_alive(2), "both controllers keep running");
	pg_exec(db, "DELETE FROM connbudget.application_limits WHERE application_name = 'batch'");
	ok(wait_log(1, "again, enough for PgBouncer", 1, 4000), "batch removed: controller 1 logs that its share is enough again");
	read_pods(pods);
	ok(pods[1].share >= 2, "pod 1's share is %d again", pods[1].share);
}

/* 6. Two pools in one PgBouncer (appdb and appdb2, one role): within the share together. */
static void
test_two_pools(void)
{
	Bench		b[2];
	Pod			pods[NPODS + 1];
	double		start = now_seconds();
	int			settled_samples = 0,
				over_share = 0,
				max_held = 0,
				max_total = 0;
	char		why[1024],
				first_over[256] = "";

	/* 6 + 6 clients: each pool alone fits the pool size, both together do not */
	bench_start_db(&b[0], 1, "appdb", 6, 6);
	bench_start_db(&b[1], 1, "appdb2", 6, 6);
	while (!bench_done(&b[0]) || !bench_done(&b[1]))
	{
		int			total = read_pods(pods);
		double		t = now_seconds() - start;

		if (total > max_total)
			max_total = total;
		/* settled: 2 s (4 refresh intervals) after the load began */
		if (t > 2.0 && pods[1].live)
		{
			settled_samples++;
			if (pods[1].backends > max_held)
				max_held = pods[1].backends;
			if (pods[1].backends > pods[1].share && !over_share++)
				snprintf(first_over, sizeof(first_over), "; %d with a share of %d at %.1f s",
						 pods[1].backends, pods[1].share, t);
		}
		sleep_ms(100);
	}
	read_pods(pods);
	diag("two pools: at most %d server connections of pod 1 (its controller's included), %d of api's pods",
		 max_held, max_total);
	ok(over_share == 0 && settled_samples > 20,
	   "PgBouncer 1 loaded through two [databases] entries: its server connections together, with its "
	   "controller's, stayed within the pod's share at every one of %d samples (at most %d%s)",
	   settled_samples, max_held, first_over);
	ok(max_held - 1 > 6, "both pools held server connections at once: %d, more than one pool's 6 clients use",
	   max_held - 1);
	ok(max_total <= CAP, "api's cap of %d held (at most %d)", CAP, max_total);
	for (int k = 0; k < 2; k++)
		ok(bench_wait(&b[k], why, sizeof(why)) > 0, "pgbench through %s: no failed transaction %s",
		   k == 0 ? "appdb" : "appdb2", why);
}

/* How many server connections the warning said PgBouncer held, and the server counted. */
static int
mismatch_numbers(const char *log, int *counted, int *held)
{
	char		path[512],
				line[4096];
	FILE	   *f;
	int			found = 0;

	snprintf(path, sizeof(path), "%s/%s", fleet_dir, log);
	f = fopen(path, "r");
	while (f && !found && fgets(line, sizeof(line), f))
	{
		const char *p = strstr(line, "the server counts ");

		found = p && strstr(line, MISMATCH_SAID) &&
			sscanf(p, "the server counts %d connections in this pod, fewer than PgBouncer's %d",
				   counted, held) == 2;
	}
	if (f)
		fclose(f);
	return found;
}

/* 7. A controller from the wrong address: said, counted, and said again when gone. */
static void
test_wrong_address(void)
{
	Bench		b;
	char		metrics[16384] = "",
				ip[32],
				why[1024];
	int			counted = -1,
				held = -1,
				found;
	long		n;

	snprintf(ip, sizeof(ip), "%s.3.1", net);
	if (fleet("bouncer-start 3") != 0 ||
		shell("CB_FLEET_FROM=host bash '%s' controller-start 3", getenv("CB_FLEET_SH")) != 0)
		bail_out("pod 3 did not start with a controller from the host");
	ok(wait_log_file("h3.log", "joined the budget", 10000),
	   "a controller of PgBouncer 3 run from the host's namespace (its pod %s, not PgBouncer's %s.3.2) joined the budget",
	   ip, net);
	ok(query_through(3, 10000), "PgBouncer 3 answers: it holds a server connection, in the pod of its own address");
	bench_start(&b, 3, 4, 5);
	ok(wait_log_file("h3.log", MISMATCH_SAID, 6000),
	   "under load the controller warns that the server counts fewer connections in its pod than PgBouncer holds");
	found = mismatch_numbers("h3.log", &counted, &held);
	ok(found && held >= 1 && counted < held + 1,
	   "the warning names both numbers: the server counts %d, PgBouncer holds %d (plus the controller)",
	   counted, held);
	is_int(log_file_count("h3.log", "run the controller from PgBouncer's address"), 1,
		   "and says what to check, once");
	http_get_from(ip, "/metrics", metrics, sizeof(metrics));
	ok(strstr(metrics, "\nconnbudget_pgbouncer_identity_mismatch 1\n") &&
	   !strstr(metrics, "connbudget_pgbouncer_errors_total{kind=\"identity_mismatch\"} 0\n") &&
	   strstr(metrics, "connbudget_pgbouncer_errors_total{kind=\"identity_mismatch\"} "),
	   "GET /metrics: connbudget_pgbouncer_identity_mismatch 1 and errors_total{kind=\"identity_mismatch\"} counting");
	if (!strstr(metrics, "identity_mismatch 1"))
		diag("%.1200s", metrics);
	n = bench_wait(&b, why, sizeof(why));
	diag("pgbench through PgBouncer 3 meanwhile: %ld transactions %s", n, why);

	/* PgBouncer's server connections gone: nothing is miscounted any more */
	ok(admin_command(3, "KILL appdb") && admin_command(3, "RESUME appdb"),
	   "PgBouncer 3's server connections closed (KILL appdb, RESUME appdb)");
	ok(wait_log_file("h3.log", MISMATCH_GONE, 4000),
	   "the controller logs that the count is right again");
	http_get_from(ip, "/metrics", metrics, sizeof(metrics));
	ok(strstr(metrics, "\nconnbudget_pgbouncer_identity_mismatch 0\n") != NULL,
	   "and connbudget_pgbouncer_identity_mismatch is 0 again");
	is_int(shell("CB_FLEET_FROM=host bash '%s' controller-stop 3 | grep -qx 0", getenv("CB_FLEET_SH")), 0,
		   "the controller from the host exits 0");
	fleet("bouncer-stop 3");
}

/* 5. Bad arguments: exit 2 and say why. */
static void
test_bad_arguments(void)
{
	static const struct
	{
		const char *args;
		const char *says;
	}			cases[] = {
		{"--bogus", "unknown option"},
		{"--server 'host=x application_name=api'", "--admin (or CONNBUDGET_ADMIN) is required"},
		{"--server 'host=x' --admin 'dbname=pgbouncer'", "must set application_name"},
		{"--server 'host=x application_name=api options=-cconnbudget.pod=p1' --admin 'dbname=pgbouncer'",
		"must not give connbudget.pod"},
		{"--server 'host=x application_name=api' --admin 'dbname=postgres'", "must name dbname=pgbouncer"},
		{"--server 'host=x application_name=api' --admin 'dbname=pgbouncer' --min-size abc",
		"--min-size must be an integer"},
		{"--server 'host=x application_name=api' --admin 'dbname=pgbouncer' --min-size 9 --max-size 3",
		"is larger than --max-size"},
		{"--server 'host=x application_name=api' --admin 'dbname=pgbouncer' --refresh-ms 5",
		"--refresh-ms must be an integer from 10"},
		{"--server 'host=x application_name=api' --admin 'dbname=pgbouncer' --log-level loud",
		"--log-level must be debug, info, warning or error"},
		{"--server \"host='x application_name=api\" --admin 'dbname=pgbouncer'", "not a libpq connection string"},
	};
	char		cmd[2048],
				out[4096];

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
	{
		FILE	   *p;
		size_t		got;
		int			st;

		snprintf(cmd, sizeof(cmd), "'%s' %s 2>&1", getenv("CB_FLEET_CONTROLLER"), cases[k].args);
		p = popen(cmd, "r");
		got = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
		out[got] = '\0';
		st = p ? pclose(p) : -1;
		ok(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(out, cases[k].says),
		   "bad arguments (%s): exit 2 and \"%s\"", cases[k].args, cases[k].says);
		if (!strstr(out, cases[k].says))
			diag("  it said: %s", out);
	}
	snprintf(cmd, sizeof(cmd), "'%s' --help", getenv("CB_FLEET_CONTROLLER"));
	is_int(shell("%s | grep -q CONNBUDGET_SERVER", cmd), 0, "--help lists the options and their environment variables");
}

/* Identity warnings in the logs of the controllers run from their PgBouncer's address. */
static int
rightly_placed_mismatches(void)
{
	char		name[32];
	int			n = 0,
				logs = 0;

	for (int i = 1; i <= NPODS; i++)
		for (int run = 0; run < 100; run++)
		{
			struct stat st;
			char		path[600];

			if (run == 0)
				snprintf(name, sizeof(name), "c%d.log", i);
			else
				snprintf(name, sizeof(name), "c%d.log.%d", i, run);
			snprintf(path, sizeof(path), "%s/%s", fleet_dir, name);
			if (stat(path, &st) != 0)
				continue;
			logs++;
			n += log_file_count(name, MISMATCH_SAID) + log_file_count(name, MISMATCH_GONE);
		}
	diag("%d logs of rightly placed controllers read", logs);
	return logs >= NPODS + 2 ? n : -1;
}

/* Run one part of the test, and say how long it took. */
static void
timed(const char *part, void (*run) (void))
{
	double		t = now_seconds();

	run();
	diag("%s: %.1f s", part, now_seconds() - t);
}

int
main(void)
{
	fleet_init();
	timed("starting the fleet", start_fleet);
	timed("1. cap and shares", test_cap_and_shares);
	timed("2. split by demand", test_split_by_demand);
	timed("3-4. kill, join, leave", test_kill_join_leave);
	timed("5. bad input", test_bad_input);
	timed("6. two pools", test_two_pools);
	timed("7. wrong address", test_wrong_address);
	test_bad_arguments();

	/* the controllers end cleanly: no leak (LeakSanitizer), no race (ThreadSanitizer) */
	is_int(controller_stop(1, "TERM"), 0, "controller 1 (AddressSanitizer) exits 0 on SIGTERM: no leak, no error");
	is_int(controller_stop(2, "TERM"), 0, "controller 2 (ThreadSanitizer) exits 0 on SIGTERM: no race reported");
	is_int(rightly_placed_mismatches(), 0,
		   "no controller run from its PgBouncer's address ever warned of an identity mismatch (c1, c2, every c3 run)");
	PQfinish(db);
	return done_testing();
}
