/*
 * converge.c -- how fast PgBouncer replicas sized by connbudget-pgbouncer
 * follow a replica that joins, a demand that changes and a replica that
 * leaves, in refresh intervals.  Run by bench/pgbouncer.sh (as root, like
 * test/pgbouncer/run), which sets up three namespaces and the cluster;
 * application "api" is capped at 12.
 *
 *   converge ROUNDS
 *
 * Each round: replicas 1 and 2 loaded (pgbench, 6 clients each), then
 *   join    replica 3 starts, idle: from its first report until every
 *           replica is within its share and its PgBouncer has its size;
 *   demand  replica 3's clients come: from their start until the shares
 *           are 4, 4, 4, every replica within its share and every pool 3;
 *   leave   replica 3 stops (SIGTERM to both): until replicas 1 and 2's
 *           pools are 5 (a share of 6 less the controller).
 * Prints one line per round and the medians, and a markdown table on the
 * lines that start with "|".
 */
#include "fleet.h"

#define ROUNDS_MAX 20

static int	refresh_ms;

static double
median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--)
		{
			double		t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double
maximum(const double *v, int n)
{
	double		m = v[0];

	for (int i = 1; i < n; i++)
		if (v[i] > m)
			m = v[i];
	return m;
}

/* every live pod within its share (its backends no more than its share) */
static int
all_within(const Pod pods[NPODS + 1], int npods)
{
	int			within = 1;

	for (int i = 1; i <= npods; i++)
		within &= pods[i].live && pods[i].backends <= pods[i].share;
	return within;
}

int
main(int argc, char **argv)
{
	int			rounds = argc > 1 ? atoi(argv[1]) : 3;
	double		join[ROUNDS_MAX] = {0},
				demand[ROUNDS_MAX] = {0},
				leave[ROUNDS_MAX] = {0};
	int			failed = 0;
	char		why[1024];

	fleet_init();
	refresh_ms = getenv("CB_FLEET_REFRESH_MS") ? atoi(getenv("CB_FLEET_REFRESH_MS")) : 1000;
	if (rounds < 1 || rounds > ROUNDS_MAX || refresh_ms < 10)
		bail_out("usage: converge ROUNDS (1 to %d), CB_FLEET_REFRESH_MS", ROUNDS_MAX);
	for (int i = 1; i <= 2; i++)
		if (fleet("bouncer-start %d", i) != 0 || fleet("controller-start %d", i) != 0)
			bail_out("replica %d did not start", i);
	for (int i = 1; i <= 2; i++)
		if (!wait_log(i, "joined the budget", 1, 10000) || !query_through(i, 10000))
			bail_out("replica %d did not join", i);

	for (int r = 0; r < rounds; r++)
	{
		Bench		b[NPODS + 1];
		Pod			pods[NPODS + 1];
		int			six[NPODS + 1] = {0, 6, 6, 0};
		double		t0,
					first = -1,
					done = -1;

		for (int i = 1; i <= 2; i++)
			bench_start(&b[i], i, 6, 16 * refresh_ms / 1000 + 4);
		if (wait_shares(six, 10 * refresh_ms) < 0)
			bail_out("round %d: replicas 1 and 2 did not reach shares of 6", r + 1);
		sleep_ms(2 * refresh_ms);	/* and shrank or grew to them */

		/* join */
		t0 = now_seconds();
		if (fleet("bouncer-start 3") != 0 || fleet("controller-start 3") != 0)
			bail_out("replica 3 did not start");
		while (now_seconds() - t0 < 20 && done < 0)
		{
			read_pods(pods);
			if (first < 0 && pods[3].live && pods[3].demand >= 2 && log_count(3, "joined the budget") > 0)
				first = now_seconds();
			if (first >= 0 && all_within(pods, 3) && pods[3].share >= 2 &&
				pool_size(3) == pods[3].share - 1)
				done = now_seconds();
			sleep_ms(10);
		}
		if (done < 0)
			bail_out("round %d: the join did not converge", r + 1);
		join[r] = (done - first) * 1000 / refresh_ms;

		/* demand: replica 3's clients come */
		if (!query_through(3, 20 * refresh_ms))
			bail_out("round %d: replica 3 does not answer", r + 1);
		bench_start(&b[3], 3, 6, 6 * refresh_ms / 1000 + 2);
		t0 = now_seconds();
		done = -1;
		while (now_seconds() - t0 < 20 && done < 0)
		{
			read_pods(pods);
			if (pods[1].share == 4 && pods[2].share == 4 && pods[3].share == 4 && all_within(pods, 3) &&
				pool_size(1) == 3 && pool_size(2) == 3 && pool_size(3) == 3)
				done = now_seconds();
			sleep_ms(10);
		}
		if (done < 0)
			bail_out("round %d: the demand change did not converge", r + 1);
		demand[r] = (done - t0) * 1000 / refresh_ms;
		failed += bench_wait(&b[3], why, sizeof(why)) < 0;

		/* leave */
		{
			pid_t		controller = read_pid("%s/c%d.pid", 3),
						bouncer = read_pid("%s/b%d/pgbouncer.pid", 3);

			t0 = now_seconds();
			kill(controller, SIGTERM);
			kill(bouncer, SIGTERM);
		}
		done = -1;
		while (now_seconds() - t0 < 20 && done < 0)
		{
			if (pool_size(1) == 5 && pool_size(2) == 5)
				done = now_seconds();
			sleep_ms(10);
		}
		if (done < 0)
			bail_out("round %d: the leave did not converge", r + 1);
		leave[r] = (done - t0) * 1000 / refresh_ms;
		controller_stop(3, "TERM");
		fleet("bouncer-stop 3");

		for (int i = 1; i <= 2; i++)
			failed += bench_wait(&b[i], why, sizeof(why)) < 0;
		printf("round %d: join %.2f, demand change %.2f, leave %.2f refresh intervals\n",
			   r + 1, join[r], demand[r], leave[r]);
		fflush(stdout);
		/* the demand window (6 intervals) empties before the next round */
		sleep_ms(7 * refresh_ms);
	}

	printf("| event | median (refresh intervals) | max | goal |\n");
	printf("|---|---|---|---|\n");
	printf("| a replica joins a full budget (from its first report) | %.2f | %.2f | 2 |\n",
		   median(join, rounds), maximum(join, rounds));
	printf("| its clients come (shares 6, 6, 0 -> 4, 4, 4, pools shrunk under load) | %.2f | %.2f | 2 |\n",
		   median(demand, rounds), maximum(demand, rounds));
	printf("| a replica leaves (SIGTERM) | %.2f | %.2f | 2 |\n",
		   median(leave, rounds), maximum(leave, rounds));
	printf("pgbench runs with a failed transaction: %d\n", failed);
	for (int i = 1; i <= 2; i++)
		controller_stop(i, "TERM");
	return failed ? 1 : 0;
}
