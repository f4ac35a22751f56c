/*
 * pod_lease.h -- lease many pods the way pools do, for the fleet test and
 * the fleet benchmark: a connection with its own pod id calls
 * connbudget.pool_share() and goes away, which leaves the pod live for
 * connbudget.pod_ttl.  Connections use the libpq environment.
 */
#ifndef CONNBUDGET_TEST_POD_LEASE_H
#define CONNBUDGET_TEST_POD_LEASE_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

/*
 * Lease pods "pod-<first>" ... "pod-<last - 1>", pod i of application
 * "fleet-<i / per_app>", as role user (NULL: the environment's); how many
 * leases failed (each one said on stderr).
 */
static inline int
lease_pods(int first, int last, int per_app, const char *user)
{
	int			failures = 0;

	for (int i = first; i < last; i++)
	{
		char		app[32],
					options[64];
		const char *keys[] = {"application_name", "options", "user", NULL};
		const char *values[] = {app, options, user, NULL};
		PGconn	   *conn;
		PGresult   *res;

		snprintf(app, sizeof(app), "fleet-%04d", i / per_app);
		snprintf(options, sizeof(options), "-c connbudget.pod=pod-%05d", i);
		conn = PQconnectdbParams(keys, values, 0);
		if (PQstatus(conn) != CONNECTION_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			failures++;
		}
		else
		{
			res = PQexec(conn, "SELECT max_size FROM connbudget.pool_share(2)");
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
			{
				fprintf(stderr, "%s", PQerrorMessage(conn));
				failures++;
			}
			PQclear(res);
		}
		PQfinish(conn);
	}
	return failures;
}

/*
 * Lease pods first ... first + n - 1 as lease_pods() does, from workers
 * processes at once, each a slice of them; how many of the processes
 * failed (could not start, or failed a lease).
 */
static inline int
lease_pods_at_once(int n, int first, int per_app, int workers, const char *user)
{
	pid_t	   *pids = calloc(workers, sizeof(pid_t));
	int			failed = 0;

	if (!pids)
		return workers;
	fflush(stdout);
	for (int w = 0; w < workers; w++)
	{
		pids[w] = fork();
		if (pids[w] == 0)
			_exit(lease_pods(first + (int) ((long) w * n / workers),
							 first + (int) ((long) (w + 1) * n / workers), per_app, user) ? 1 : 0);
	}
	for (int w = 0; w < workers; w++)
	{
		int			status;

		if (pids[w] < 0 || waitpid(pids[w], &status, 0) != pids[w] ||
			!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	free(pids);
	return failed;
}

#endif							/* CONNBUDGET_TEST_POD_LEASE_H */
