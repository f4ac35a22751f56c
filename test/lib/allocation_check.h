/*
 * allocation_check.h -- the invariants that define the allocation
 * (extension/allocation.c): weighted max-min fairness among applications,
 * among the pods of each, and what caps, demands, minimums and the budget
 * allow.  check_allocation() names the first one an allocation breaks.
 * Used by test/unit/allocation_test.c and by the allocation fuzzer
 * (test/fuzz/fuzz_allocation.c).
 */
#ifndef CONNBUDGET_TEST_ALLOCATION_CHECK_H
#define CONNBUDGET_TEST_ALLOCATION_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../extension/allocation.h"

static const CbAllocPod *pods_to_sort;

/* pod indexes by application, then pod id */
static int
pod_order(const void *pa, const void *pb)
{
	const CbAllocPod *a = &pods_to_sort[*(const int32_t *) pa];
	const CbAllocPod *b = &pods_to_sort[*(const int32_t *) pb];

	if (a->app != b->app)
		return a->app < b->app ? -1 : 1;
	return strcmp(a->id, b->id);
}

/*
 * Returns the first violated invariant of an allocation that returned
 * "allocated", or NULL: shares add up to allocations and allocations to at
 * most the budget; caps, demands and minimums hold (an application's
 * demand counting each pod at least at its part of the minimum, its
 * "need"); no unsaturated application could gain from another without
 * that one having less (relative to weight); no pod is below its demand
 * while its application is below its cap and the budget has room; within
 * an application, no pod holds more than its part of the minimum and one
 * unit above an unsaturated pod, the extra units in ascending pod-id
 * order.  O(apps^2 + pods log pods), so that
 * 100,000 pods take a moment.
 */
static const char *
check_allocation(const CbAllocApp *apps, int napps, const CbAllocPod *pods, int npods,
				 int32_t budget, int64_t allocated)
{
	static char why[256];
	int32_t    *idx = malloc(sizeof(int32_t) * (npods + 1));
	int64_t    *sum_share = calloc(napps + 1, sizeof(int64_t));
	int64_t    *sum_min_share = calloc(napps + 1, sizeof(int64_t));
	int64_t    *need = calloc(napps + 1, sizeof(int64_t));
	int64_t		total = 0,
				sum_min = 0;
	const char *fail = NULL;

	for (int p = 0; p < npods; p++)
	{
		const CbAllocPod *pod = &pods[p];

		idx[p] = p;
		sum_share[pod->app] += pod->share;
		sum_min_share[pod->app] += pod->min_share;
		if (need[pod->app] < 0 || pod->demand < 0)
			need[pod->app] = CB_UNBOUNDED;
		else
			need[pod->app] += pod->demand > pod->min_share ? pod->demand : pod->min_share;
		if (pod->share < pod->min_share)
			fail = "a pod's share is below its part of the minimum";
		if (pod->demand >= 0 && pod->share > pod->min_share && pod->share > pod->demand)
			fail = "a pod's share exceeds its demand";
	}
	for (int a = 0; a < napps && !fail; a++)
	{
		const CbAllocApp *app = &apps[a];

		total += app->allocation;
		sum_min += app->min_connections;
		if (app->allocation < 0)
			fail = "a negative allocation";
		else if (app->max_connections >= 0 && app->allocation > app->max_connections)
			fail = "an allocation exceeds its cap";
		else if (app->guaranteed > app->min_connections)
			fail = "a guarantee exceeds its minimum";
		else if (app->live_pods == 0 && app->allocation != app->guaranteed)
			fail = "an application without pods got more than its minimum";
		else if (need[a] >= 0 && app->allocation > app->guaranteed &&
				 app->allocation > need[a])
			fail = "an allocation exceeds its demand (each pod at least at its part of the minimum)";
		else if (app->live_pods > 0 && sum_share[a] != app->allocation)
		{
			snprintf(why, sizeof(why), "%s: pods hold %lld of its %d", app->name,
					 (long long) sum_share[a], app->allocation);
			fail = why;
		}
		else if (app->live_pods > 0 && sum_min_share[a] != app->guaranteed)
			fail = "the pods' parts of a minimum do not add up to it";
	}
	if (!fail && total != allocated)
		fail = "the return value is not the sum of allocations";
	if (!fail && total > (budget > 0 ? budget : 0))
		fail = "allocations exceed the budget";
	for (int a = 0; a < napps && !fail && sum_min <= budget; a++)
		if (apps[a].guaranteed != apps[a].min_connections)
			fail = "a minimum was not honoured although the budget covers all";

	/* work conservation and weighted max-min fairness among applications */
	for (int i = 0; i < napps && !fail; i++)
	{
		const CbAllocApp *ai = &apps[i];
		int64_t		upper = INT64_MAX;
		int64_t		ei = ai->allocation - ai->guaranteed;

		if (ai->live_pods == 0)
			continue;
		if (ai->max_connections >= 0)
			upper = ai->max_connections;
		if (need[i] >= 0 && need[i] < upper)
			upper = need[i];
		if (ai->allocation >= upper)
			continue;
		if (total < budget)
			fail = "an unsaturated application was left short while budget remained";
		for (int j = 0; j < napps && !fail; j++)
		{
			const CbAllocApp *aj = &apps[j];
			int64_t		ej = aj->allocation - aj->guaranteed;

			/* (ej - 1) / wj < (ei + 1) / wi, or i would deserve more */
			if (j != i && aj->live_pods > 0 &&
				(ej - 1) * ai->weight >= (ei + 1) * aj->weight)
			{
				snprintf(why, sizeof(why),
						 "unfair: %s (w %d) has %lld extra, %s (w %d) has %lld",
						 ai->name, ai->weight, (long long) ei,
						 aj->name, aj->weight, (long long) ej);
				fail = why;
			}
		}
	}

	/* no pod below its demand while its application and the budget have room */
	for (int p = 0; p < npods && !fail; p++)
	{
		const CbAllocPod *pod = &pods[p];
		const CbAllocApp *app = &apps[pod->app];

		if ((pod->demand < 0 || pod->share < pod->demand) &&
			(app->max_connections < 0 || app->allocation < app->max_connections) &&
			total < budget)
		{
			snprintf(why, sizeof(why),
					 "pod %s of %s holds %d below its demand %d while %s is below its cap (%d) "
					 "and %lld of the budget of %d is free",
					 pod->id, app->name, pod->share, pod->demand, app->name,
					 app->max_connections, (long long) (budget - total), budget);
			fail = why;
		}
	}

	/* within each application, in pod-id order */
	pods_to_sort = pods;
	qsort(idx, npods, sizeof(int32_t), pod_order);
	for (int first = 0; first < npods && !fail;)
	{
		int			last = first;
		int			lowest_unsat = INT32_MAX;
		int			highest = INT32_MIN;
		int			seen_base = 0;

		while (last < npods && pods[idx[last]].app == pods[idx[first]].app)
			last++;
		for (int k = first; k < last; k++)
		{
			const CbAllocPod *pod = &pods[idx[k]];

			if (pod->share > pod->min_share && pod->share > highest)
				highest = pod->share;
			if ((pod->demand < 0 || pod->share < pod->demand) && pod->share < lowest_unsat)
				lowest_unsat = pod->share;
		}
		if (lowest_unsat != INT32_MAX && highest > lowest_unsat + 1)
			fail = "pods of an application are not max-min fair";
		/* the pods with one unit more come first in pod-id order */
		for (int k = first; k < last && !fail && lowest_unsat != INT32_MAX; k++)
		{
			const CbAllocPod *pod = &pods[idx[k]];
			int			unsat = pod->demand < 0 || pod->share < pod->demand;

			if (unsat && pod->share == lowest_unsat)
				seen_base = 1;
			else if (pod->share == lowest_unsat + 1 && pod->share > pod->min_share &&
					 seen_base)
				fail = "the units lost to rounding did not go in ascending pod-id order";
		}
		first = last;
	}
	free(idx);
	free(sum_share);
	free(sum_min_share);
	free(need);
	return fail;
}

#endif							/* CONNBUDGET_TEST_ALLOCATION_CHECK_H */
