/*
 * conn_holder.c -- open many governed connections and hold them.
 *
 *   conn_holder N APPS
 *
 * Opens N connections spread over APPS applications ("app00", ...), each
 * connection its own pod ("pod0000", ...), prints "ready" and holds them
 * until its standard input closes.  Used by bench/run to measure the views
 * with hundreds of live connections.
 */
#include <stdio.h>
#include <stdlib.h>

#include <libpq-fe.h>

int
main(int argc, char **argv)
{
	int			n = argc > 1 ? atoi(argv[1]) : 100;
	int			apps = argc > 2 ? atoi(argv[2]) : 10;
	PGconn	  **conns = calloc(n, sizeof(PGconn *));
	char		c;

	for (int i = 0; i < n; i++)
	{
		char		app[32],
					options[64];
		const char *keys[] = {"application_name", "options", NULL};
		const char *values[3];

		snprintf(app, sizeof(app), "app%02d", i % apps);
		snprintf(options, sizeof(options), "-c connbudget.pod=pod%04d", i);
		values[0] = app;
		values[1] = options;
		values[2] = NULL;
		conns[i] = PQconnectdbParams(keys, values, 1);
		if (PQstatus(conns[i]) != CONNECTION_OK)
		{
			fprintf(stderr, "conn_holder: connection %d: %s", i, PQerrorMessage(conns[i]));
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	while (fread(&c, 1, 1, stdin) == 1)
		;
	for (int i = 0; i < n; i++)
		PQfinish(conns[i]);
	free(conns);
	return 0;
}
