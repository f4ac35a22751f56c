/*
 * convergence.c -- how fast pools follow the budget when a pod joins or
 * leaves.
 *
 *   convergence BUDGET
 *
 * Starts two pods (processes with a pool of application "conv" under more
 * load than the budget allows), waits until they settle at half the budget
 * each, starts a third, and measures the time until every pod holds no
 * more than its new share (a third).  Then stops the third pod (SIGTERM:
 * its pool closes) and measures the time until the other two are told
 * their larger share.  Prints "join_ms leave_ms".  The server's
 * connbudget.refresh_interval and pod_ttl are set by the caller.
 * Connection settings come from the libpq environment.
 */
#define CBPOOL_IMPLEMENTATION
#include "../client/connbudget_pool.h"
#include "../test/lib/pool_load.h"
#include "bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define LOAD_THREADS 16

/* A pod of application "conv", under more load than the budget allows. */
static pid_t
start_pod(const char *pod)
{
	cbpool_config cfg = cbpool_config_default();

	cfg.application_name = "conv";
	cfg.pod = pod;
	cfg.conninfo = "user=conv_user";
	return pod_start(&cfg, LOAD_THREADS, "SELECT pg_sleep(0.005)", 1000);
}

/* connections and share of pods p0..p2 (-1 if absent) */
static void
observe(PGconn *admin, int conns[3], int shares[3])
{
	PGresult   *res = PQexec(admin, "SELECT pod, connections, share FROM connbudget.pods "
							 "WHERE application_name = 'conv'");

	for (int k = 0; k < 3; k++)
		conns[k] = shares[k] = -1;
	for (int i = 0; i < PQntuples(res); i++)
	{
		int			k = PQgetvalue(res, i, 0)[1] - '0';

		if (k >= 0 && k < 3)
		{
			conns[k] = atoi(PQgetvalue(res, i, 1));
			shares[k] = atoi(PQgetvalue(res, i, 2));
		}
	}
	PQclear(res);
}

int
main(int argc, char **argv)
{
	int			budget = argc > 1 ? atoi(argv[1]) : 30;
	int			half = budget / 2,
				third = budget / 3;
	PGconn	   *admin = PQconnectdb("");
	int			conns[3],
				shares[3];
	pid_t		a,
				b,
				c;
	double		t0,
				join_s = -1,
				leave_s = -1,
				deadline;

	if (PQstatus(admin) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(admin));
		return 1;
	}
	a = start_pod("p0");
	b = start_pod("p1");
	deadline = now_seconds() + 30;
	do
	{
		sleep_ms(20);
		observe(admin, conns, shares);
	} while (!(conns[0] == half && conns[1] == half) && now_seconds() < deadline);

	/* join */
	t0 = now_seconds();
	c = start_pod("p2");
	deadline = t0 + 30;
	while (now_seconds() < deadline)
	{
		observe(admin, conns, shares);
		if (shares[2] == third && conns[0] >= 0 && conns[0] <= third &&
			conns[1] >= 0 && conns[1] <= third && conns[2] <= third)
		{
			join_s = now_seconds() - t0;
			break;
		}
		sleep_ms(10);
	}

	/* leave */
	sleep_ms(500);
	t0 = now_seconds();
	kill(c, SIGTERM);
	deadline = t0 + 30;
	while (now_seconds() < deadline)
	{
		observe(admin, conns, shares);
		if (shares[2] < 0 && shares[0] == half && shares[1] == half)
		{
			leave_s = now_seconds() - t0;
			break;
		}
		sleep_ms(10);
	}

	kill(a, SIGTERM);
	kill(b, SIGTERM);
	waitpid(a, NULL, 0);
	waitpid(b, NULL, 0);
	waitpid(c, NULL, 0);
	PQfinish(admin);
	if (join_s < 0 || leave_s < 0)
	{
		fprintf(stderr, "did not converge (join %.3f, leave %.3f)\n", join_s, leave_s);
		return 1;
	}
	printf("%.0f %.0f\n", join_s * 1000, leave_s * 1000);
	return 0;
}
