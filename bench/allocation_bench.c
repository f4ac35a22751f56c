/*
 * allocation_bench.c -- the allocation alone (extension/allocation.c), as
 * the allocator worker runs it: N pods of 1,000 applications whose demands
 * all change between recomputes.
 *
 *   allocation_bench PODS ROUNDS
 *
 * Prints, in ms: the median recompute with the tie-breaking order kept
 * (nobody joined or left, the allocator's common case), the median
 * recompute with the order sorted again (pods joined or left), and the
 * ratio of the first to the goal's baseline is left to bench/run.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../extension/allocation.h"
#include "../test/lib/rnd.h"
#include "bench.h"

/* Every pool reports a new demand, as between two recomputes. */
static void
new_demands(CbAllocSession *sessions, int n)
{
	for (int s = 0; s < n; s++)
		sessions[s].demand = rnd_below(10) == 0 ? CB_UNBOUNDED : (int) (1 + rnd_below(12));
}

int
main(int argc, char **argv)
{
	int			npods = argc > 1 ? atoi(argv[1]) : 10000;
	int			rounds = argc > 2 ? atoi(argv[2]) : 50;
	int			napps = 1000;
	int32_t		budget = npods / 2;
	CbAllocApp *apps = calloc(napps, sizeof(CbAllocApp));
	CbAllocPod *pods = calloc(npods, sizeof(CbAllocPod));
	CbAllocSession *sessions = calloc(npods, sizeof(CbAllocSession));
	char	  (*names)[16] = calloc(napps, 16);
	char	  (*ids)[24] = calloc(npods, 24);
	CbAllocOrder order;
	void	   *work = malloc(cb_allocation_work_size_sessions(napps, npods, npods));
	double	   *kept = calloc(rounds, sizeof(double));
	double	   *sorted = calloc(rounds, sizeof(double));
	volatile int64_t sink = 0;

	rnd_init("allocation_bench", 0x9e3779b97f4a7c15ull);
	order.app_order = calloc(napps, sizeof(int32_t));
	order.pod_order = calloc(npods, sizeof(int32_t));
	order.session_order = calloc(npods, sizeof(int32_t));
	for (int a = 0; a < napps; a++)
	{
		snprintf(names[a], 16, "svc-%04d", (a * 7919) % napps);
		apps[a].name = names[a];
		apps[a].min_connections = a % 50 == 0 ? 2 : 0;
		apps[a].max_connections = a % 7 == 0 ? 30 : CB_UNBOUNDED;
		apps[a].weight = 1 + a % 4;
	}
	/* one pool session per pod, as pools of connbudget_pool.h give */
	for (int p = 0; p < npods; p++)
	{
		snprintf(ids[p], 24, "pod-%06d", (int) ((p * 104729L) % npods));
		pods[p].app = (int32_t) rnd_below((uint32_t) napps);
		pods[p].id = ids[p];
		sessions[p].pod = p;
		sessions[p].token = rnd_u64();
	}
	/*
	 * Sort the inputs once by the tie-breaking order, as the allocator
	 * does when pods join or leave, so that later recomputes walk them in
	 * memory order.
	 */
	cb_allocation_order(apps, napps, pods, npods, sessions, npods, &order, work);
	{
		CbAllocPod *sorted_pods = calloc(npods, sizeof(CbAllocPod));
		CbAllocSession *sorted_sessions = calloc(npods, sizeof(CbAllocSession));
		int32_t    *position = calloc(npods, sizeof(int32_t));

		for (int i = 0; i < npods; i++)
		{
			sorted_pods[i] = pods[order.pod_order[i]];
			position[order.pod_order[i]] = i;
		}
		for (int i = 0; i < npods; i++)
		{
			sorted_sessions[i] = sessions[order.session_order[i]];
			sorted_sessions[i].pod = position[sorted_sessions[i].pod];
		}
		memcpy(pods, sorted_pods, sizeof(CbAllocPod) * npods);
		memcpy(sessions, sorted_sessions, sizeof(CbAllocSession) * npods);
		free(sorted_pods);
		free(sorted_sessions);
		free(position);
	}
	for (int r = 0; r < rounds; r++)
	{
		double		t0;

		/* pods joined or left: the order is sorted again first */
		new_demands(sessions, npods);
		t0 = now_seconds();
		cb_allocation_order(apps, napps, pods, npods, sessions, npods, &order, work);
		sink += cb_allocate_ordered(budget, CB_UNBOUNDED, apps, napps, pods, npods, sessions, npods,
									&order, work);
		sorted[r] = (now_seconds() - t0) * 1e3;
		/* nobody joined or left: the order is kept (the sort left every input where it is) */
		new_demands(sessions, npods);
		t0 = now_seconds();
		sink += cb_allocate_ordered(budget, CB_UNBOUNDED, apps, napps, pods, npods, sessions, npods,
									&order, work);
		kept[r] = (now_seconds() - t0) * 1e3;
	}
	qsort(kept, rounds, sizeof(double), compare_double);
	qsort(sorted, rounds, sizeof(double), compare_double);
	printf("%.3f %.3f\n", kept[rounds / 2], sorted[rounds / 2]);
	return sink < 0;
}
