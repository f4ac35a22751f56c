/*
 * no_worker.c -- when the background worker cannot start (here: no
 * background worker slots), limits are never loaded; connections wait for
 * them once, for at most 10 s, and then no more.
 *
 * cluster: max_worker_processes=0
 */
#include "../lib/pgtest.h"

int
main(void)
{
	double		t0 = now_seconds();
	PGconn	   *first = pg_connect("application_name=first");
	double		first_took = now_seconds() - t0;
	PGconn	   *second;
	double		second_took;

	ok(first != NULL, "with no worker, the first connection is still let in");
	ok(first_took < 15, "after waiting at most the 10 s limit-loading timeout (%.1f s)",
	   first_took);
	t0 = now_seconds();
	second = pg_connect("application_name=second");
	second_took = now_seconds() - t0;
	ok(second != NULL && second_took < 2,
	   "later connections do not wait again (%.2f s)", second_took);
	ok(server_log_contains(0, "application limits are not loaded yet"),
	   "the server log says limits were not loaded");
	PQfinish(first);
	PQfinish(second);
	return done_testing();
}
