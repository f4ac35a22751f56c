/*-------------------------------------------------------------------------
 *
 * allocation.c
 *	  Weighted max-min fair sharing of the connection budget, in exact
 *	  integers.  See allocation.h for the rules.
 *
 * Everything here is a pure function of its inputs.  Water-filling is done
 * the classic way: sort the claimants by how soon they saturate (their
 * headroom divided by their weight), fill the ones whose headroom is below
 * the current fair level, and share what is left proportionally among the
 * rest, handing out the units lost to rounding by largest remainder.
 * That is O(n log n) per level, so 10,000 pods cost a few milliseconds.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "allocation.h"

#include <stdlib.h>
#include <string.h>

/* Sort key for applications (by name) and pods (by app, then id). */
typedef struct CbSortKey
{
	int32_t		group;
	int32_t		index;
	const char *name;
} CbSortKey;

/* One claimant in a water-filling round. */
typedef struct CbFillItem
{
	uint64_t	weight;			/* >= 1 */
	uint64_t	headroom;		/* most it may receive, <= the amount */
	uint64_t	given;			/* output */
	uint64_t	remainder;		/* fractional part, numerator over the level */
	int32_t		rank;			/* tie-breaker: lower rank wins */
} CbFillItem;

/* Is a * b <= c * d?  Operands fit in 64 bits; products need 128. */
static int
cb_product_le(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
#ifdef __SIZEOF_INT128__
	return (unsigned __int128) a * b <= (unsigned __int128) c * d;
#else
	/* portable 64x64->128 multiply, compared high word first */
	uint64_t	hi1,
				lo1,
				hi2,
				lo2;

#define CB_MUL128(x, y, hi, lo) \
	do { \
		uint64_t xl = (x) & 0xffffffffu, xh = (x) >> 32; \
		uint64_t yl = (y) & 0xffffffffu, yh = (y) >> 32; \
		uint64_t ll = xl * yl, lh = xl * yh, hl = xh * yl, hh = xh * yh; \
		uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu); \
		(lo) = (mid << 32) | (ll & 0xffffffffu); \
		(hi) = hh + (lh >> 32) + (hl >> 32) + (mid >> 32); \
	} while (0)

	CB_MUL128(a, b, hi1, lo1);
	CB_MUL128(c, d, hi2, lo2);
#undef CB_MUL128
	return hi1 < hi2 || (hi1 == hi2 && lo1 <= lo2);
#endif
}

static int
cb_compare_keys(const void *pa, const void *pb)
{
	const CbSortKey *a = pa;
	const CbSortKey *b = pb;
	int			cmp;

	if (a->group != b->group)
		return a->group < b->group ? -1 : 1;
	cmp = strcmp(a->name, b->name);
	if (cmp != 0)
		return cmp;
	return a->index < b->index ? -1 : (a->index > b->index);
}

/* Order claimants by headroom / weight, the point where each saturates. */
static int
cb_compare_saturation(const void *pa, const void *pb)
{
	const CbFillItem *a = *(CbFillItem *const *) pa;
	const CbFillItem *b = *(CbFillItem *const *) pb;

	/* a->headroom / a->weight vs b->headroom / b->weight, cross-multiplied */
	if (!cb_product_le(a->headroom, b->weight, b->headroom, a->weight))
		return 1;
	if (!cb_product_le(b->headroom, a->weight, a->headroom, b->weight))
		return -1;
	return a->rank < b->rank ? -1 : (a->rank > b->rank);
}

/* Order by largest fractional remainder, then lowest rank. */
static int
cb_compare_remainder(const void *pa, const void *pb)
{
	const CbFillItem *a = *(CbFillItem *const *) pa;
	const CbFillItem *b = *(CbFillItem *const *) pb;

	if (a->remainder != b->remainder)
		return a->remainder > b->remainder ? -1 : 1;
	return a->rank < b->rank ? -1 : (a->rank > b->rank);
}

/*
 * Share "amount" among items by weighted max-min fairness: no item gets more
 * than its headroom, and no item could gain without taking from one that
 * has no more (relative to its weight).  "order" is scratch space for n
 * pointers.  Returns what could not be given because every item saturated.
 */
static uint64_t
cb_waterfill(uint64_t amount, CbFillItem *items, int n, CbFillItem **order)
{
	uint64_t	remaining = amount;
	uint64_t	total_weight = 0;
	uint64_t	assigned;
	int			m = 0;
	int			k;

	for (int i = 0; i < n; i++)
	{
		items[i].given = 0;
		items[i].remainder = 0;
		if (items[i].headroom > amount)
			items[i].headroom = amount;
		if (items[i].headroom == 0)
			continue;
		order[m++] = &items[i];
		total_weight += items[i].weight;
	}
	if (m == 0 || remaining == 0)
		return remaining;

	/* Saturate, in order, every item whose headroom is below its fair part. */
	qsort(order, m, sizeof(CbFillItem *), cb_compare_saturation);
	for (k = 0; k < m && remaining > 0; k++)
	{
		CbFillItem *item = order[k];

		if (!cb_product_le(item->headroom, total_weight,
						   remaining, item->weight))
			break;
		item->given = item->headroom;
		remaining -= item->headroom;
		total_weight -= item->weight;
	}
	if (k == m || remaining == 0)
		return remaining;

	/*
	 * No remaining item saturates at the fair level: each gets the floor of
	 * its weighted part (strictly below its headroom), and the units lost to
	 * rounding go one each by largest remainder.  remaining and weights are
	 * below 2^31, so the products fit in 64 bits.
	 */
	assigned = 0;
	for (int j = k; j < m; j++)
	{
		uint64_t	numerator = remaining * order[j]->weight;

		order[j]->given = numerator / total_weight;
		order[j]->remainder = numerator % total_weight;
		assigned += order[j]->given;
	}
	qsort(order + k, m - k, sizeof(CbFillItem *), cb_compare_remainder);
	for (int j = k; assigned < remaining; j++)
	{
		order[j]->given++;
		assigned++;
	}
	return 0;
}

static size_t
cb_align(size_t n)
{
	return (n + 15) & ~(size_t) 15;
}

size_t
cb_allocation_work_size(int napps, int npods)
{
	int			most = napps > npods ? napps : npods;

	if (most < 1)
		most = 1;
	return cb_align(sizeof(CbSortKey) * (size_t) (napps + npods + 1)) +
		cb_align(sizeof(CbFillItem) * (size_t) most) +
		cb_align(sizeof(CbFillItem *) * (size_t) most);
}

int64_t
cb_allocate(int32_t budget, CbAllocApp *apps, int napps,
			CbAllocPod *pods, int npods, void *work)
{
	char	   *cursor = work;
	CbSortKey  *app_keys;
	CbSortKey  *pod_keys;
	CbFillItem *items;
	CbFillItem **order;
	int32_t    *app_rank;
	int64_t		total_min = 0;
	int64_t		remaining;
	int64_t		allocated = 0;
	int			most = napps > npods ? napps : npods;

	if (most < 1)
		most = 1;
	app_keys = (CbSortKey *) cursor;
	pod_keys = app_keys + napps;
	cursor += cb_align(sizeof(CbSortKey) * (size_t) (napps + npods + 1));
	items = (CbFillItem *) cursor;
	cursor += cb_align(sizeof(CbFillItem) * (size_t) most);
	order = (CbFillItem **) cursor;

	if (budget < 0)
		budget = 0;

	/* Rank applications by name; ranks break ties deterministically. */
	for (int a = 0; a < napps; a++)
	{
		app_keys[a].group = 0;
		app_keys[a].index = a;
		app_keys[a].name = apps[a].name;
		apps[a].allocation = 0;
		apps[a].guaranteed = 0;
		apps[a].live_pods = 0;
		apps[a].demand = 0;
		total_min += apps[a].min_connections;
	}
	qsort(app_keys, napps, sizeof(CbSortKey), cb_compare_keys);

	/*
	 * Pods are grouped by their app's rank.  The rank table borrows the
	 * "order" scratch space, which is not needed until the first fill.
	 */
	app_rank = (int32_t *) order;
	for (int r = 0; r < napps; r++)
		app_rank[app_keys[r].index] = r;

	for (int p = 0; p < npods; p++)
	{
		CbAllocApp *app = &apps[pods[p].app];

		pod_keys[p].group = app_rank[pods[p].app];
		pod_keys[p].index = p;
		pod_keys[p].name = pods[p].id;
		pods[p].share = 0;
		pods[p].min_share = 0;
		app->live_pods++;
		if (pods[p].demand < 0 || app->demand == CB_UNBOUNDED)
			app->demand = CB_UNBOUNDED;
		else
			app->demand += pods[p].demand;
	}
	qsort(pod_keys, npods, sizeof(CbSortKey), cb_compare_keys);

	/* 1. Minimums first, held even for applications without pods. */
	if (total_min <= budget)
	{
		for (int a = 0; a < napps; a++)
			apps[a].guaranteed = apps[a].min_connections;
	}
	else
	{
		for (int r = 0; r < napps; r++)
		{
			CbAllocApp *app = &apps[app_keys[r].index];

			items[r].weight = (uint64_t) app->weight;
			items[r].headroom = (uint64_t) app->min_connections;
			items[r].rank = r;
		}
		cb_waterfill((uint64_t) budget, items, napps, order);
		for (int r = 0; r < napps; r++)
			apps[app_keys[r].index].guaranteed = (int32_t) items[r].given;
	}
	remaining = budget;
	for (int a = 0; a < napps; a++)
		remaining -= apps[a].guaranteed;

	/* 2. The rest among applications with live pods, bounded by cap and demand. */
	for (int r = 0; r < napps; r++)
	{
		CbAllocApp *app = &apps[app_keys[r].index];
		int64_t		upper = remaining + app->guaranteed;

		if (app->max_connections >= 0 && app->max_connections < upper)
			upper = app->max_connections;
		if (app->demand >= 0 && app->demand < upper)
			upper = app->demand;
		items[r].weight = (uint64_t) app->weight;
		items[r].headroom = (app->live_pods > 0 && upper > app->guaranteed)
			? (uint64_t) (upper - app->guaranteed) : 0;
		items[r].rank = r;
	}
	cb_waterfill((uint64_t) remaining, items, napps, order);
	for (int r = 0; r < napps; r++)
	{
		CbAllocApp *app = &apps[app_keys[r].index];

		app->allocation = app->guaranteed + (int32_t) items[r].given;
		allocated += app->allocation;
	}

	/* 3. Each application's allocation among its pods, in pod-id order. */
	for (int first = 0; first < npods;)
	{
		int			last = first;
		CbAllocApp *app = &apps[pods[pod_keys[first].index].app];
		int			n;
		uint64_t	extra;

		while (last < npods && pod_keys[last].group == pod_keys[first].group)
			last++;
		n = last - first;

		/* the guaranteed part, split evenly */
		for (int i = 0; i < n; i++)
		{
			items[i].weight = 1;
			items[i].headroom = (uint64_t) app->guaranteed;
			items[i].rank = i;
		}
		cb_waterfill((uint64_t) app->guaranteed, items, n, order);
		for (int i = 0; i < n; i++)
		{
			CbAllocPod *pod = &pods[pod_keys[first + i].index];

			pod->min_share = (int32_t) items[i].given;
		}

		/* the rest, bounded by each pod's demand */
		extra = (uint64_t) (app->allocation - app->guaranteed);
		for (int i = 0; i < n; i++)
		{
			CbAllocPod *pod = &pods[pod_keys[first + i].index];

			items[i].weight = 1;
			if (pod->demand < 0)
				items[i].headroom = extra;
			else if (pod->demand > pod->min_share)
				items[i].headroom = (uint64_t) (pod->demand - pod->min_share);
			else
				items[i].headroom = 0;
			items[i].rank = i;
		}
		cb_waterfill(extra, items, n, order);
		for (int i = 0; i < n; i++)
		{
			CbAllocPod *pod = &pods[pod_keys[first + i].index];

			pod->share = pod->min_share + (int32_t) items[i].given;
		}
		first = last;
	}

	return allocated;
}
