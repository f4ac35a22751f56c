/*-------------------------------------------------------------------------
 *
 * allocation.c
 *	  Weighted max-min fair sharing of the connection budget, in exact
 *	  integers, and the connect-time admission rule.  See allocation.h for
 *	  the rules.
 *
 * Everything here is a pure function of its inputs.  Water-filling is done
 * the classic way: sort the claimants by how soon they saturate (their
 * headroom divided by their weight), fill the ones whose headroom is below
 * the current fair level, and share what is left proportionally among the
 * rest, handing out the units lost to rounding by largest remainder.  Two
 * shortcuts cover most rounds without sorting: when every claimant fits
 * (the budget exceeds the demand) and when none saturates (every claimant
 * wants more than its fair part).
 *
 * Ordering by name (step 0) is the only part that compares strings.  It is
 * separate so that the allocator worker, which shares the same pods again
 * and again as their demands change, sorts only when pods join or leave.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "allocation.h"

#include <stdlib.h>
#include <string.h>

/* Sort key for step 0: group, then name (or token), then input position. */
typedef struct CbSortKey
{
	int32_t		group;
	int32_t		index;
	const char *name;			/* NULL: compare tokens */
	uint64_t	token;
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

/* Scratch space, carved out of the caller's work area. */
typedef struct CbWork
{
	CbSortKey  *keys;			/* step 0 */
	CbFillItem *items;			/* one water-filling round */
	CbFillItem **ptrs;			/* the round's claimants, sorted */
	int32_t    *rank;			/* step 0: an app's position in app_order */
	int32_t    *demand;			/* one group's demands (steps 3 and 4) */
	int32_t    *min_part;		/* one group's parts of its minimum */
	int32_t    *share;			/* one group's shares */
	int32_t    *pod_need;		/* each pod's demand, each of its sessions
								 * counted at least at its floor */
	int64_t    *app_need;		/* each app's demand, each of its pods
								 * counted at least at its floor */
	int32_t    *order;			/* cb_allocate's own CbAllocOrder arrays */
} CbWork;

static size_t
cb_align(size_t n)
{
	return (n + 15) & ~(size_t) 15;
}

static int
cb_max3(int a, int b, int c)
{
	int			m = a > b ? a : b;

	m = m > c ? m : c;
	return m < 1 ? 1 : m;
}

size_t
cb_allocation_work_size_sessions(int napps, int npods, int nsessions)
{
	int			most = cb_max3(napps, npods, nsessions);

	return cb_align(sizeof(CbSortKey) * (size_t) (napps + npods + nsessions + 1)) +
		cb_align(sizeof(CbFillItem) * (size_t) most) +
		cb_align(sizeof(CbFillItem *) * (size_t) most) +
		4 * cb_align(sizeof(int32_t) * (size_t) most) +
		cb_align(sizeof(int32_t) * (size_t) (npods + 1)) +
		cb_align(sizeof(int64_t) * (size_t) (napps + 1)) +
		cb_align(sizeof(int32_t) * (size_t) (napps + npods + nsessions + 1));
}

size_t
cb_allocation_work_size(int napps, int npods)
{
	return cb_allocation_work_size_sessions(napps, npods, 0);
}

static void
cb_carve(void *work, int napps, int npods, int nsessions, CbWork *w)
{
	char	   *cursor = work;
	int			most = cb_max3(napps, npods, nsessions);

	w->keys = (CbSortKey *) cursor;
	cursor += cb_align(sizeof(CbSortKey) * (size_t) (napps + npods + nsessions + 1));
	w->items = (CbFillItem *) cursor;
	cursor += cb_align(sizeof(CbFillItem) * (size_t) most);
	w->ptrs = (CbFillItem **) cursor;
	cursor += cb_align(sizeof(CbFillItem *) * (size_t) most);
	w->rank = (int32_t *) cursor;
	cursor += cb_align(sizeof(int32_t) * (size_t) most);
	w->demand = (int32_t *) cursor;
	cursor += cb_align(sizeof(int32_t) * (size_t) most);
	w->min_part = (int32_t *) cursor;
	cursor += cb_align(sizeof(int32_t) * (size_t) most);
	w->share = (int32_t *) cursor;
	cursor += cb_align(sizeof(int32_t) * (size_t) most);
	w->pod_need = (int32_t *) cursor;
	cursor += cb_align(sizeof(int32_t) * (size_t) (npods + 1));
	w->app_need = (int64_t *) cursor;
	cursor += cb_align(sizeof(int64_t) * (size_t) (napps + 1));
	w->order = (int32_t *) cursor;
}

/* ---------------------------------------------------------------------
 * Water-filling
 * ---------------------------------------------------------------------
 */

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
 * Give "remaining" to the claimants ptrs[k..m) in proportion to their
 * weights, none of which saturates at that level: each gets the floor of
 * its weighted part (strictly below its headroom), and the units lost to
 * rounding go one each by largest remainder.  remaining and weights are
 * below 2^31 each, and so is their product's share, so 64 bits suffice.
 */
static void
cb_share_level(uint64_t remaining, uint64_t total_weight, CbFillItem **ptrs,
			   int k, int m, int in_rank_order)
{
	uint64_t	assigned = 0;
	int			equal = 1;

	for (int j = k; j < m; j++)
	{
		uint64_t	numerator = remaining * ptrs[j]->weight;

		ptrs[j]->given = numerator / total_weight;
		ptrs[j]->remainder = numerator % total_weight;
		assigned += ptrs[j]->given;
		if (ptrs[j]->remainder != ptrs[k]->remainder)
			equal = 0;
	}
	/* equal remainders in rank order need no sort: the first ones win */
	if (assigned < remaining && !(equal && in_rank_order))
		qsort(ptrs + k, m - k, sizeof(CbFillItem *), cb_compare_remainder);
	for (int j = k; assigned < remaining; j++)
	{
		ptrs[j]->given++;
		assigned++;
	}
}

/*
 * Share "amount" among items by weighted max-min fairness: no item gets more
 * than its headroom, and no item could gain without taking from one that
 * has no more (relative to its weight).  Items are in rank order.  Returns
 * what could not be given because every item saturated.
 */
static uint64_t
cb_waterfill(uint64_t amount, CbFillItem *items, int n, CbFillItem **ptrs)
{
	uint64_t	remaining = amount;
	uint64_t	total_weight = 0;
	uint64_t	total_headroom = 0;
	int			saturates = 0;
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
		ptrs[m++] = &items[i];
		total_weight += items[i].weight;
		total_headroom += items[i].headroom;
	}
	if (m == 0 || remaining == 0)
		return remaining;

	/* Everybody fits: the budget exceeds what is wanted. */
	if (total_headroom <= remaining)
	{
		for (int j = 0; j < m; j++)
			ptrs[j]->given = ptrs[j]->headroom;
		return remaining - total_headroom;
	}

	/* Nobody saturates at the first level: share it and be done. */
	for (int j = 0; j < m && !saturates; j++)
		saturates = cb_product_le(ptrs[j]->headroom, total_weight,
								  remaining, ptrs[j]->weight);
	if (!saturates)
	{
		cb_share_level(remaining, total_weight, ptrs, 0, m, 1);
		return 0;
	}

	/* Saturate, in order, every item whose headroom is below its fair part. */
	qsort(ptrs, m, sizeof(CbFillItem *), cb_compare_saturation);
	for (k = 0; k < m && remaining > 0; k++)
	{
		CbFillItem *item = ptrs[k];

		if (!cb_product_le(item->headroom, total_weight,
						   remaining, item->weight))
			break;
		item->given = item->headroom;
		remaining -= item->headroom;
		total_weight -= item->weight;
	}
	if (k == m || remaining == 0)
		return remaining;
	cb_share_level(remaining, total_weight, ptrs, k, m, 0);
	return 0;
}

/* ---------------------------------------------------------------------
 * Step 0: order
 * ---------------------------------------------------------------------
 */

static int
cb_compare_keys(const void *pa, const void *pb)
{
	const CbSortKey *a = pa;
	const CbSortKey *b = pb;

	if (a->group != b->group)
		return a->group < b->group ? -1 : 1;
	if (a->name != NULL && b->name != NULL)
	{
		int			cmp = strcmp(a->name, b->name);

		if (cmp != 0)
			return cmp;
	}
	else if (a->token != b->token)
		return a->token < b->token ? -1 : 1;
	return a->index < b->index ? -1 : (a->index > b->index);
}

static void
cb_order_with(const CbAllocApp *apps, int napps,
			  const CbAllocPod *pods, int npods,
			  const CbAllocSession *sessions, int nsessions,
			  CbAllocOrder *order, CbWork *w)
{
	CbSortKey  *keys = w->keys;
	int32_t    *rank = w->rank;

	for (int a = 0; a < napps; a++)
	{
		keys[a].group = 0;
		keys[a].index = a;
		keys[a].name = apps[a].name;
		keys[a].token = 0;
	}
	qsort(keys, napps, sizeof(CbSortKey), cb_compare_keys);
	for (int r = 0; r < napps; r++)
	{
		order->app_order[r] = keys[r].index;
		rank[keys[r].index] = r;
	}

	for (int p = 0; p < npods; p++)
	{
		keys[p].group = rank[pods[p].app];
		keys[p].index = p;
		keys[p].name = pods[p].id;
		keys[p].token = 0;
	}
	qsort(keys, npods, sizeof(CbSortKey), cb_compare_keys);
	for (int r = 0; r < npods; r++)
	{
		order->pod_order[r] = keys[r].index;
		rank[keys[r].index] = r;	/* now: a pod's position in pod_order */
	}

	for (int s = 0; s < nsessions; s++)
	{
		keys[s].group = rank[sessions[s].pod];
		keys[s].index = s;
		keys[s].name = NULL;
		keys[s].token = sessions[s].token;
	}
	qsort(keys, nsessions, sizeof(CbSortKey), cb_compare_keys);
	for (int r = 0; r < nsessions; r++)
		order->session_order[r] = keys[r].index;
}

void
cb_allocation_order(const CbAllocApp *apps, int napps,
					const CbAllocPod *pods, int npods,
					const CbAllocSession *sessions, int nsessions,
					CbAllocOrder *order, void *work)
{
	CbWork		w;

	cb_carve(work, napps, npods, nsessions, &w);
	cb_order_with(apps, napps, pods, npods, sessions, nsessions, order, &w);
}

/* ---------------------------------------------------------------------
 * Steps 1 to 4
 * ---------------------------------------------------------------------
 */

/* Step 1: every application's minimum, scaled down if the budget is short. */
static void
cb_alloc_minimums(int32_t budget, CbAllocApp *apps, int napps,
				  const CbAllocOrder *order, CbWork *w)
{
	int64_t		total_min = 0;

	for (int a = 0; a < napps; a++)
		total_min += apps[a].min_connections;
	if (total_min <= budget)
	{
		for (int a = 0; a < napps; a++)
			apps[a].guaranteed = apps[a].min_connections;
		return;
	}
	for (int r = 0; r < napps; r++)
	{
		CbAllocApp *app = &apps[order->app_order[r]];

		w->items[r].weight = (uint64_t) app->weight;
		w->items[r].headroom = (uint64_t) app->min_connections;
		w->items[r].rank = r;
	}
	cb_waterfill((uint64_t) budget, w->items, napps, w->ptrs);
	for (int r = 0; r < napps; r++)
		apps[order->app_order[r]].guaranteed = (int32_t) w->items[r].given;
}

/* The claimants of step 2: what each application may still receive. */
static void
cb_application_items(int64_t remaining, CbAllocApp *apps, int napps,
					 const CbAllocOrder *order, CbWork *w)
{
	for (int r = 0; r < napps; r++)
	{
		CbAllocApp *app = &apps[order->app_order[r]];
		int64_t		upper = remaining + app->guaranteed;

		if (app->max_connections >= 0 && app->max_connections < upper)
			upper = app->max_connections;
		if (w->app_need[order->app_order[r]] >= 0 &&
			w->app_need[order->app_order[r]] < upper)
			upper = w->app_need[order->app_order[r]];
		w->items[r].weight = (uint64_t) app->weight;
		w->items[r].headroom = (app->live_pods > 0 && upper > app->guaranteed)
			? (uint64_t) (upper - app->guaranteed) : 0;
		w->items[r].rank = r;
	}
}

/*
 * Step 2: the rest of the budget among applications with live pods,
 * bounded by cap and demand, and the unconfigured ones by unconfigured_cap together.
 * Returns what was allocated in all.
 */
static int64_t
cb_alloc_applications(int32_t budget, int32_t unconfigured_cap, CbAllocApp *apps,
					  int napps, const CbAllocOrder *order, CbWork *w)
{
	int64_t		remaining = budget;
	int64_t		allocated = 0;
	uint64_t	unconfigured_given = 0;

	for (int a = 0; a < napps; a++)
		remaining -= apps[a].guaranteed;
	cb_application_items(remaining, apps, napps, order, w);
	cb_waterfill((uint64_t) remaining, w->items, napps, w->ptrs);

	/*
	 * The unconfigured applications beyond their cap together: they saturate as a
	 * group, sharing the cap among themselves by the same rule, and the
	 * others share what is left.
	 */
	if (unconfigured_cap >= 0)
	{
		uint64_t	unconfigured_guaranteed = 0;

		for (int r = 0; r < napps; r++)
			if (apps[order->app_order[r]].unconfigured)
			{
				unconfigured_given += w->items[r].given;
				unconfigured_guaranteed += (uint64_t) apps[order->app_order[r]].guaranteed;
			}
		if (unconfigured_given + unconfigured_guaranteed > (uint64_t) unconfigured_cap)
		{
			uint64_t	cap = (uint64_t) unconfigured_cap > unconfigured_guaranteed
				? (uint64_t) unconfigured_cap - unconfigured_guaranteed : 0;
			uint64_t	used;

			/* the unconfigured ones share their cap... */
			cb_application_items(remaining, apps, napps, order, w);
			for (int r = 0; r < napps; r++)
				if (!apps[order->app_order[r]].unconfigured)
					w->items[r].headroom = 0;
			used = cap - cb_waterfill(cap, w->items, napps, w->ptrs);
			for (int r = 0; r < napps; r++)
				w->rank[r] = (int32_t) w->items[r].given;

			/* ...and the others what is left */
			cb_application_items(remaining, apps, napps, order, w);
			for (int r = 0; r < napps; r++)
				if (apps[order->app_order[r]].unconfigured)
					w->items[r].headroom = 0;
			cb_waterfill((uint64_t) remaining - used, w->items, napps, w->ptrs);
			for (int r = 0; r < napps; r++)
				if (apps[order->app_order[r]].unconfigured)
					w->items[r].given = (uint64_t) w->rank[r];
		}
	}
	for (int r = 0; r < napps; r++)
	{
		CbAllocApp *app = &apps[order->app_order[r]];

		app->allocation = app->guaranteed + (int32_t) w->items[r].given;
		allocated += app->allocation;
	}
	return allocated;
}

/*
 * Steps 3 and 4 for one group (the pods of an application, the sessions of
 * a pod) in tie-breaking order.  The group's guaranteed part is split
 * evenly into floors, the first members taking the units that do not
 * divide; then the whole total is filled to one water level L: a member
 * holds its floor, or L, or its demand, whichever is in the middle.  The
 * units below the next level go one each to the members still rising at
 * L, first members first.  So min 10 over 3 pods with 80 in all is
 * 27, 27, 26 (floors 4, 3, 3), as without a minimum; a floor only shows
 * when the level is below it.
 */
/* What member i holds at water level "level": its floor, the level or its
   demand, whichever is in the middle. */
static int64_t
cb_held_at(int64_t level, int i, const CbWork *w)
{
	int64_t		held = level > w->min_part[i] ? level : w->min_part[i];

	if (w->demand[i] >= 0 && held > w->demand[i])
		held = w->demand[i] > w->min_part[i] ? w->demand[i] : w->min_part[i];
	return held;
}

static int64_t
cb_level_sum(int64_t level, int n, const CbWork *w)
{
	int64_t		sum = 0;

	for (int i = 0; i < n; i++)
		sum += cb_held_at(level, i, w);
	return sum;
}

/* A group's guaranteed part split evenly into n floors, first ones first. */
static void
cb_floors(int32_t guaranteed, int n, int32_t *floors)
{
	int32_t		each = n > 0 ? guaranteed / n : 0;
	int32_t		left = n > 0 ? guaranteed % n : 0;

	for (int i = 0; i < n; i++)
		floors[i] = each + (i < left ? 1 : 0);
}

static void
cb_split_group(int32_t total, int32_t guaranteed, int n, CbWork *w)
{
	int64_t		low = 0,
				high = total;
	int64_t		rest;

	cb_floors(guaranteed, n, w->min_part);

	/* the highest level whose holdings fit in the total */
	while (low < high)
	{
		int64_t		mid = low + (high - low + 1) / 2;

		if (cb_level_sum(mid, n, w) <= total)
			low = mid;
		else
			high = mid - 1;
	}
	rest = total - cb_level_sum(low, n, w);
	for (int i = 0; i < n; i++)
	{
		int64_t		held = cb_held_at(low, i, w);
		int			rising = w->min_part[i] <= low &&
			(w->demand[i] < 0 || w->demand[i] > low);

		if (rising && rest > 0)
		{
			held++;
			rest--;
		}
		w->share[i] = (int32_t) held;
	}
}

/*
 * What bounds an application (step 2) and a pod (step 3): its demand, with
 * every member that demands less than its floor -- its part of the
 * guaranteed minimum, which it holds whatever it demands -- counted at
 * its floor.  Bounding by the bare sum would let a floor above a member's
 * demand take from another member's demand: min 4 over two pods
 * demanding 5 and 1 would give 6 in all, 4 and 2, leaving the first below
 * its demand while the application is below its cap.  Floors are known
 * after step 1: they depend on the minimums, not on the allocation.
 */
static void
cb_alloc_needs(const CbAllocApp *apps, int napps, CbAllocPod *pods, int npods,
			   const CbAllocSession *sessions, int nsessions,
			   const CbAllocOrder *order, CbWork *w)
{
	/* each pod's floor, app by app (pods stand grouped by app) */
	for (int first = 0; first < npods;)
	{
		int32_t		app_index = pods[order->pod_order[first]].app;
		int			n = 0;

		while (first + n < npods && pods[order->pod_order[first + n]].app == app_index)
			n++;
		cb_floors(apps[app_index].guaranteed, n, w->min_part);
		for (int i = 0; i < n; i++)
			pods[order->pod_order[first + i]].min_share = w->min_part[i];
		first += n;
	}

	/* each pod's need: its sessions', each at least its floor */
	for (int p = 0; p < npods; p++)
		w->pod_need[p] = nsessions > 0 ? 0 : pods[p].demand;
	for (int first = 0; first < nsessions;)
	{
		int32_t		pod_index = sessions[order->session_order[first]].pod;
		int64_t		need = 0;
		int			n = 0;

		while (first + n < nsessions &&
			   sessions[order->session_order[first + n]].pod == pod_index)
			n++;
		cb_floors(pods[pod_index].min_share, n, w->min_part);
		for (int i = 0; i < n && need >= 0; i++)
		{
			int32_t		demand = sessions[order->session_order[first + i]].demand;

			if (demand < 0)
				need = CB_UNBOUNDED;
			else
				need += demand > w->min_part[i] ? demand : w->min_part[i];
		}
		w->pod_need[pod_index] = need > INT32_MAX ? INT32_MAX : (int32_t) need;
		first += n;
	}

	/* each app's need: its pods', each at least its floor */
	for (int a = 0; a < napps; a++)
		w->app_need[a] = 0;
	for (int p = 0; p < npods; p++)
	{
		int64_t    *need = &w->app_need[pods[p].app];

		if (*need < 0 || w->pod_need[p] < 0)
			*need = CB_UNBOUNDED;
		else
			*need += w->pod_need[p] > pods[p].min_share ? w->pod_need[p] : pods[p].min_share;
	}
}

/* Step 3: each application's allocation among its pods. */
static void
cb_alloc_pods(CbAllocApp *apps, CbAllocPod *pods, int npods,
			  const CbAllocOrder *order, CbWork *w)
{
	for (int first = 0; first < npods;)
	{
		int32_t		app_index = pods[order->pod_order[first]].app;
		CbAllocApp *app = &apps[app_index];
		int			n = 0;

		while (first + n < npods && pods[order->pod_order[first + n]].app == app_index)
		{
			w->demand[n] = w->pod_need[order->pod_order[first + n]];
			n++;
		}
		cb_split_group(app->allocation, app->guaranteed, n, w);
		for (int i = 0; i < n; i++)
		{
			CbAllocPod *pod = &pods[order->pod_order[first + i]];

			pod->min_share = w->min_part[i];
			pod->share = w->share[i];
		}
		first += n;
	}
}

/* Step 4: each pod's share among its pool sessions. */
static void
cb_alloc_sessions(const CbAllocPod *pods, CbAllocSession *sessions,
				  int nsessions, const CbAllocOrder *order, CbWork *w)
{
	for (int first = 0; first < nsessions;)
	{
		int32_t		pod_index = sessions[order->session_order[first]].pod;
		const CbAllocPod *pod = &pods[pod_index];
		int			n = 0;

		while (first + n < nsessions &&
			   sessions[order->session_order[first + n]].pod == pod_index)
		{
			w->demand[n] = sessions[order->session_order[first + n]].demand;
			n++;
		}
		cb_split_group(pod->share, pod->min_share, n, w);
		for (int i = 0; i < n; i++)
		{
			CbAllocSession *session = &sessions[order->session_order[first + i]];

			session->min_share = w->min_part[i];
			session->share = w->share[i];
		}
		first += n;
	}
}

int64_t
cb_allocate_ordered(int32_t budget, int32_t unconfigured_cap, CbAllocApp *apps, int napps,
					CbAllocPod *pods, int npods,
					CbAllocSession *sessions, int nsessions,
					const CbAllocOrder *order, void *work)
{
	CbWork		w;
	int64_t		allocated;

	cb_carve(work, napps, npods, nsessions, &w);
	if (budget < 0)
		budget = 0;

	/* demands, summed upwards: sessions into pods, pods into apps */
	if (nsessions > 0)
	{
		for (int p = 0; p < npods; p++)
			pods[p].demand = 0;
		for (int s = 0; s < nsessions; s++)
		{
			CbAllocPod *pod = &pods[sessions[s].pod];

			sessions[s].share = 0;
			sessions[s].min_share = 0;
			if (sessions[s].demand < 0 || pod->demand == CB_UNBOUNDED)
				pod->demand = CB_UNBOUNDED;
			else if ((int64_t) pod->demand + sessions[s].demand > INT32_MAX)
				pod->demand = INT32_MAX;
			else
				pod->demand += sessions[s].demand;
		}
	}
	for (int a = 0; a < napps; a++)
	{
		apps[a].allocation = 0;
		apps[a].guaranteed = 0;
		apps[a].live_pods = 0;
		apps[a].demand = 0;
	}
	for (int p = 0; p < npods; p++)
	{
		CbAllocApp *app = &apps[pods[p].app];

		pods[p].share = 0;
		pods[p].min_share = 0;
		app->live_pods++;
		if (pods[p].demand < 0 || app->demand == CB_UNBOUNDED)
			app->demand = CB_UNBOUNDED;
		else
			app->demand += pods[p].demand;
	}

	cb_alloc_minimums(budget, apps, napps, order, &w);
	cb_alloc_needs(apps, napps, pods, npods, sessions, nsessions, order, &w);
	allocated = cb_alloc_applications(budget, unconfigured_cap, apps, napps, order, &w);
	cb_alloc_pods(apps, pods, npods, order, &w);
	cb_alloc_sessions(pods, sessions, nsessions, order, &w);
	return allocated;
}

int64_t
cb_allocate(int32_t budget, CbAllocApp *apps, int napps,
			CbAllocPod *pods, int npods, void *work)
{
	CbWork		w;
	CbAllocOrder order;

	cb_carve(work, napps, npods, 0, &w);
	order.app_order = w.order;
	order.pod_order = w.order + napps;
	order.session_order = NULL;
	cb_order_with(apps, napps, pods, npods, NULL, 0, &order, &w);
	return cb_allocate_ordered(budget, CB_UNBOUNDED, apps, napps, pods, npods,
							   NULL, 0, &order, work);
}

/* ---------------------------------------------------------------------
 * Admission
 * ---------------------------------------------------------------------
 */

/*
 * The connect-time rule (docs/enforcement.md).  The
 * counts already include the connection being admitted, so the one that
 * takes the last slot is admitted and the one after it is not.
 */
CbVerdict
cb_admission_verdict(const CbAdmissionCounts *c)
{
	if (c->cap >= 0 && c->connections > c->cap)
		return CB_OVER_CAP;
	if (c->unconfigured && c->unconfigured_cap >= 0 && c->unconfigured_connections > c->unconfigured_cap)
		return CB_OVER_UNCONFIGURED_CAP;
	if (c->governed > c->budget)
		return CB_OVER_BUDGET;
	if (c->connections > c->min_connections && c->committed > c->budget)
		return CB_OVER_MINIMUMS;
	return CB_ADMIT;
}
