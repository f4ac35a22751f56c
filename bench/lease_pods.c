/*
 * lease_pods.c -- lease many pods the way pools do: a connection with its
 * own pod id calls connbudget.pool_share() and goes away, which leaves the
 * pod live for connbudget.pod_ttl.
 *
 *   lease_pods N PODS_PER_APP [WORKERS [FIRST]]
 *
 * Pods "pod-<FIRST>" ... "pod-<FIRST + N - 1>" of applications
 * "fleet-<pod / PODS_PER_APP>", leased by WORKERS processes at once
 * (default 32).  Prints the
 * seconds it took.  Used by bench/run to build a fleet of 10,000 pods.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bench.h"

static int
lease_range(int first, int last, int per_app)
{
	int			failures = 0;

	for (int i = first; i < last; i++)
	{
		char		app[32],
					options[64];
		const char *keys[] = {"application_name", "options", NULL};
		const char *values[3];
		PGconn	   *conn;
		PGresult   *res;

		snprintf(app, sizeof(app), "fleet-%04d", i / per_app);
		snprintf(options, sizeof(options), "-c connbudget.pod=pod-%05d", i);
		values[0] = app;
		values[1] = options;
		values[2] = NULL;
		conn = PQconnectdbParams(keys, values, 1);
		if (PQstatus(conn) != CONNECTION_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			failures++;
		}
		else
		{
			res = PQexec(conn, "SELECT max_size FROM connbudget.pool_share(2)");
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				failures++;
			PQclear(res);
		}
		PQfinish(conn);
	}
	return failures;
}

int
main(int argc, char **argv)
{
	int			n = argc > 1 ? atoi(argv[1]) : 10000;
	int			per_app = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 10;
	int			workers = argc > 3 ? atoi(argv[3]) : 32;
	int			first = argc > 4 ? atoi(argv[4]) : 0;
	int			failed = 0;
	double		t0 = now_seconds();

	for (int w = 0; w < workers; w++)
		if (fork() == 0)
			_exit(lease_range(first + (int) ((long) w * n / workers),
							  first + (int) ((long) (w + 1) * n / workers), per_app) ? 1 : 0);
	for (int w = 0; w < workers; w++)
	{
		int			status;

		wait(&status);
		failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	printf("%.1f\n", now_seconds() - t0);
	return failed ? 1 : 0;
}
