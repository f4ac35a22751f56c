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

#include "bench.h"
#include "../test/lib/pod_lease.h"

int
main(int argc, char **argv)
{
	int			n = argc > 1 ? atoi(argv[1]) : 10000;
	int			per_app = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 10;
	int			workers = argc > 3 ? atoi(argv[3]) : 32;
	int			first = argc > 4 ? atoi(argv[4]) : 0;
	double		t0 = now_seconds();
	int			failed = lease_pods_at_once(n, first, per_app, workers, NULL);

	printf("%.1f\n", now_seconds() - t0);
	return failed ? 1 : 0;
}
