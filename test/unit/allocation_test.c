/*
 * allocation_test.c -- exhaustive tests of the pure core: the budget
 * arithmetic and the admission rule.
 *
 * The allocation is a pure function (extension/allocation.c), so it is
 * tested here without a server: the examples of the README, edge cases,
 * randomised scenarios checked against the invariants that define
 * weighted max-min fairness, pool sessions splitting a pod's share, the
 * cached order giving the same result as a fresh one, fleets of 10,000
 * and 100,000 pods of 1,000 applications, and every admission verdict.
 */
#define _POSIX_C_SOURCE 200809L

#include "../../extension/allocation.h"
#include "../lib/tap.h"

#include <stdint.h>
#include <time.h>

#define MAX_APPS 256
#define MAX_PODS 20000

typedef struct Scenario
{
	int32_t		budget;
	int			napps;
	int			npods;
	CbAllocApp	apps[MAX_APPS];
	CbAllocPod	pods[MAX_PODS];
	char		app_names[MAX_APPS][16];
	char		pod_ids[MAX_PODS][24];
} Scenario;

static Scenario sc;
static Scenario shuffled;

static void
reset(int32_t budget)
{
	memset(&sc, 0, sizeof(sc));
	sc.budget = budget;
}

static int
add_app(const char *name, int min, int cap, int weight)
{
	int			a = sc.napps++;

	snprintf(sc.app_names[a], sizeof(sc.app_names[a]), "%s", name);
	sc.apps[a].name = sc.app_names[a];
	sc.apps[a].min_connections = min;
	sc.apps[a].max_connections = cap;
	sc.apps[a].weight = weight;
	return a;
}

static int
add_pod(int app, const char *id, int demand)
{
	int			p = sc.npods++;

	snprintf(sc.pod_ids[p], sizeof(sc.pod_ids[p]), "%s", id);
	sc.pods[p].app = app;
	sc.pods[p].id = sc.pod_ids[p];
	sc.pods[p].demand = demand;
	return p;
}

static int64_t
run_on(Scenario *s)
{
	static char *work;
	static size_t work_size;
	size_t		need = cb_allocation_work_size(s->napps, s->npods);

	if (need > work_size)
	{
		free(work);
		work = malloc(need);
		work_size = need;
	}
	return cb_allocate(s->budget, s->apps, s->napps, s->pods, s->npods, work);
}

static int64_t
run(void)
{
	return run_on(&sc);
}

static int
share_of(const char *id)
{
	for (int p = 0; p < sc.npods; p++)
		if (strcmp(sc.pods[p].id, id) == 0)
			return sc.pods[p].share;
	return -999;
}

/* --- the examples every reader of the README can check by hand --- */

static void
test_readme_examples(void)
{
	int			a,
				b;

	/* 120 connections, 40 reserved: budget 80, one app with 4 pods */
	reset(80);
	a = add_app("api", 0, CB_UNBOUNDED, 1);
	add_pod(a, "p1", CB_UNBOUNDED);
	add_pod(a, "p2", CB_UNBOUNDED);
	add_pod(a, "p3", CB_UNBOUNDED);
	add_pod(a, "p4", CB_UNBOUNDED);
	is_int(run(), 80, "budget 80, 4 pods: all 80 allocated");
	ok(share_of("p1") == 20 && share_of("p2") == 20 &&
	   share_of("p3") == 20 && share_of("p4") == 20,
	   "budget 80, 4 pods: 20 each");

	/* 3 pods: 27, 27, 26; the remainder goes by ascending pod id */
	reset(80);
	a = add_app("api", 0, CB_UNBOUNDED, 1);
	add_pod(a, "web-c", CB_UNBOUNDED);
	add_pod(a, "web-a", CB_UNBOUNDED);
	add_pod(a, "web-b", CB_UNBOUNDED);
	run();
	ok(share_of("web-a") == 27 && share_of("web-b") == 27 &&
	   share_of("web-c") == 26, "budget 80, 3 pods: 27, 27, 26 in pod-id order");

	/* two apps of weight 1, 2 pods each: 20 per pod */
	reset(80);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(a, "a2", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	add_pod(b, "b2", CB_UNBOUNDED);
	run();
	ok(share_of("a1") == 20 && share_of("a2") == 20 &&
	   share_of("b1") == 20 && share_of("b2") == 20,
	   "A and B weight 1, 2 pods each: 20 per pod");

	/* A capped at 30 */
	reset(80);
	a = add_app("A", 0, 30, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(a, "a2", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	add_pod(b, "b2", CB_UNBOUNDED);
	run();
	is_int(sc.apps[a].allocation, 30, "A capped at 30: allocation 30");
	is_int(sc.apps[b].allocation, 50, "B takes the rest: 50");
	ok(share_of("a1") == 15 && share_of("a2") == 15 &&
	   share_of("b1") == 25 && share_of("b2") == 25,
	   "A capped at 30: A pods 15, B pods 25");

	/* A's pods demand 5 each */
	reset(80);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", 5);
	add_pod(a, "a2", 5);
	add_pod(b, "b1", CB_UNBOUNDED);
	add_pod(b, "b2", CB_UNBOUNDED);
	run();
	ok(share_of("a1") == 5 && share_of("a2") == 5 &&
	   share_of("b1") == 35 && share_of("b2") == 35,
	   "A pods demand 5: A pods 5, B pods 35");
	is_int(sc.apps[a].demand, 10, "A's demand is the sum of its pods' demands");
	is_int(sc.apps[b].demand, CB_UNBOUNDED, "B's demand is unbounded");
}

static void
test_edges(void)
{
	int			a,
				b,
				c;

	/* zero budget */
	reset(0);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(a, "a2", 3);
	is_int(run(), 0, "zero budget: nothing allocated");
	ok(share_of("a1") == 0 && share_of("a2") == 0, "zero budget: shares 0");

	/* negative budget is treated as zero */
	reset(-5);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	is_int(run(), 0, "negative budget behaves as zero");

	/* no apps, no pods */
	reset(80);
	is_int(run(), 0, "no applications: nothing allocated");

	/* mins summing exactly to the budget */
	reset(80);
	a = add_app("A", 50, CB_UNBOUNDED, 1);
	b = add_app("B", 30, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 50 && sc.apps[b].allocation == 30,
	   "mins summing to the budget: each app gets exactly its minimum");

	/* the minimum is held for an app without pods */
	reset(80);
	a = add_app("A", 10, CB_UNBOUNDED, 1);
	b = add_app("B", 20, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	run();
	is_int(sc.apps[b].allocation, 20, "B has no pod: its minimum 20 is held");
	is_int(sc.apps[a].allocation, 60, "A gets its min plus everything not held");
	is_int(share_of("a1"), 60, "A's only pod gets all of A's allocation");

	/* an app with no pods and no minimum gets nothing */
	reset(80);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	b = add_app("B", 0, 10, 5);
	add_pod(a, "a1", CB_UNBOUNDED);
	run();
	is_int(sc.apps[b].allocation, 0, "configured app without pods or min: 0");
	is_int(sc.apps[a].allocation, 80, "the app with a pod takes the budget");

	/* weights */
	reset(80);
	a = add_app("A", 0, CB_UNBOUNDED, 3);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 60 && sc.apps[b].allocation == 20,
	   "weights 3:1 share 80 as 60:20");

	/* weights with rounding: 10 among 1:1:1 -> 4,3,3 by name */
	reset(10);
	c = add_app("C", 0, CB_UNBOUNDED, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "x", CB_UNBOUNDED);
	add_pod(b, "x", CB_UNBOUNDED);
	add_pod(c, "x", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 4 && sc.apps[b].allocation == 3 &&
	   sc.apps[c].allocation == 3,
	   "10 among three equal apps: 4, 3, 3, remainder to the first name");

	/* largest remainder wins over name order: 5 among weights 1 and 3 */
	reset(5);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 3);
	add_pod(a, "x", CB_UNBOUNDED);
	add_pod(b, "x", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 1 && sc.apps[b].allocation == 4,
	   "5 among weights 1:3 is 1:4 (1.25 vs 3.75, largest remainder)");

	/* the minimum is split among pods; demand below the min part */
	reset(80);
	a = add_app("A", 10, CB_UNBOUNDED, 1);
	add_pod(a, "a1", 2);
	add_pod(a, "a2", 2);
	add_pod(a, "a3", 2);
	run();
	is_int(sc.apps[a].allocation, 10, "demand 6 below min 10: app holds its min");
	ok(sc.pods[0].min_share == 4 && sc.pods[1].min_share == 3 &&
	   sc.pods[2].min_share == 3, "min 10 over 3 pods: 4, 3, 3");
	ok(sc.pods[0].share == 4 && sc.pods[1].share == 3 && sc.pods[2].share == 3,
	   "a pod's share never falls below its part of the minimum");

	/* a minimum does not change how the whole allocation is split */
	reset(80);
	a = add_app("A", 10, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(a, "a2", CB_UNBOUNDED);
	add_pod(a, "a3", CB_UNBOUNDED);
	run();
	ok(sc.pods[0].share == 27 && sc.pods[1].share == 27 && sc.pods[2].share == 26,
	   "80 with min 10 over 3 pods: 27, 27, 26 (got %d, %d, %d)",
	   sc.pods[0].share, sc.pods[1].share, sc.pods[2].share);

	/* the floors show only where the level is below them */
	reset(80);
	a = add_app("A", 10, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(a, "a2", 1);
	add_pod(a, "a3", 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(b, "b1", CB_UNBOUNDED);
	run();
	ok(sc.pods[1].share == 3 && sc.pods[2].share == 3,
	   "pods demanding 1 keep their parts of the minimum (got %d, %d)",
	   sc.pods[1].share, sc.pods[2].share);
	is_int(sc.pods[0].share + sc.pods[1].share + sc.pods[2].share, sc.apps[a].allocation,
		   "the pods' shares add up to the allocation");

	/* cap and min together */
	reset(100);
	a = add_app("A", 10, 12, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 12 && sc.apps[b].allocation == 88,
	   "min 10 cap 12: A 12, B 88");

	/* a cap of zero blocks the app */
	reset(50);
	a = add_app("A", 0, 0, 1);
	b = add_app("B", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	add_pod(b, "b1", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].allocation == 0 && sc.apps[b].allocation == 50,
	   "cap 0: A gets nothing, B everything");

	/* budget below the sum of minimums (overflow of other connections) */
	reset(30);
	a = add_app("A", 40, CB_UNBOUNDED, 1);
	b = add_app("B", 10, CB_UNBOUNDED, 1);
	add_pod(a, "a1", CB_UNBOUNDED);
	run();
	ok(sc.apps[a].guaranteed == 20 && sc.apps[b].guaranteed == 10,
	   "budget 30 below mins 40+10: max-min among minimums gives 20, 10");
	is_int(sc.apps[a].allocation + sc.apps[b].allocation, 30,
		   "budget below mins: the whole budget is used, not exceeded");

	/* all pods report demand 0 */
	reset(40);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", 0);
	add_pod(a, "a2", 0);
	is_int(run(), 0, "demand 0 everywhere: nothing allocated");

	/* budget larger than the demand: not all of it is used */
	reset(100);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", 7);
	add_pod(a, "a2", 8);
	is_int(run(), 15, "bounded demand 15 under budget 100: 15 allocated");

	/* demand split unevenly: water-filling gives slack to the hungry pod */
	reset(30);
	a = add_app("A", 0, CB_UNBOUNDED, 1);
	add_pod(a, "a1", 4);
	add_pod(a, "a2", 100);
	add_pod(a, "a3", CB_UNBOUNDED);
	run();
	ok(share_of("a1") == 4 && share_of("a2") == 13 && share_of("a3") == 13,
	   "pods demanding 4, 100, unbounded share 30 as 4, 13, 13");
}

static void
test_join_and_leave(void)
{
	int			a;

	reset(80);
	a = add_app("api", 0, CB_UNBOUNDED, 1);
	add_pod(a, "p1", CB_UNBOUNDED);
	add_pod(a, "p2", CB_UNBOUNDED);
	run();
	ok(share_of("p1") == 40 && share_of("p2") == 40, "two pods: 40 each");

	add_pod(a, "p3", CB_UNBOUNDED);
	run();
	ok(share_of("p1") == 27 && share_of("p2") == 27 && share_of("p3") == 26,
	   "a third pod joins: 27, 27, 26");

	/* p1 leaves: remove it by swapping in the last pod */
	sc.pods[0] = sc.pods[2];
	sc.npods = 2;
	run();
	ok(share_of("p2") == 40 && share_of("p3") == 40,
	   "p1 leaves: the others grow back to 40");
}

/* --- randomised scenarios checked against the defining invariants --- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t) (rng_state % n);
}

static void
random_scenario(int max_apps, int max_pods_per_app)
{
	int			napps = 1 + rnd(max_apps);
	int64_t		sum_min = 0;

	reset((int32_t) rnd(400));
	for (int a = 0; a < napps; a++)
	{
		char		name[16];
		int			min = rnd(4) == 0 ? (int) rnd(30) : 0;
		int			cap = rnd(3) == 0 ? min + (int) rnd(60) : CB_UNBOUNDED;
		int			weight = 1 + rnd(rnd(2) ? 3 : 1000);
		int			pods = rnd(max_pods_per_app + 1);

		snprintf(name, sizeof(name), "app%03d", (int) rnd(1000) * 1000 + a);
		add_app(name, min, cap, weight);
		sum_min += min;
		for (int p = 0; p < pods; p++)
		{
			char		id[24];

			snprintf(id, sizeof(id), "pod-%d-%d", (int) rnd(100000), p);
			add_pod(a, id, rnd(3) == 0 ? CB_UNBOUNDED : (int) rnd(40));
		}
	}
	(void) sum_min;
}

/* Returns a description of the first violated invariant, or NULL. */
static const char *
check_invariants(int64_t allocated)
{
	static char why[256];
	int64_t		sum_alloc = 0,
				sum_min = 0;
	int			napps = sc.napps;

	for (int a = 0; a < napps; a++)
	{
		CbAllocApp *app = &sc.apps[a];
		int64_t		sum_share = 0,
					sum_min_share = 0;

		sum_alloc += app->allocation;
		sum_min += app->min_connections;
		if (app->allocation < 0)
			return "negative allocation";
		if (app->max_connections >= 0 && app->allocation > app->max_connections)
			return "allocation above cap";
		if (app->guaranteed > app->min_connections)
			return "guaranteed above min";
		if (app->live_pods == 0 && app->allocation != app->guaranteed)
			return "app without pods got more than its minimum";
		if (app->demand >= 0 && app->allocation > app->guaranteed &&
			app->allocation > app->demand)
			return "allocation above demand";
		for (int p = 0; p < sc.npods; p++)
		{
			CbAllocPod *pod = &sc.pods[p];

			if (pod->app != a)
				continue;
			sum_share += pod->share;
			sum_min_share += pod->min_share;
			if (pod->share < pod->min_share)
				return "pod share below its min share";
			if (pod->demand >= 0 && pod->share > pod->min_share &&
				pod->share > pod->demand)
				return "pod share above its demand";
		}
		if (app->live_pods > 0 && sum_share != app->allocation)
		{
			snprintf(why, sizeof(why), "app %s: pods' shares %lld != allocation %d",
					 app->name, (long long) sum_share, app->allocation);
			return why;
		}
		if (app->live_pods > 0 && sum_min_share != app->guaranteed)
			return "pods' min shares do not add up to the app's guarantee";
	}
	if (sum_alloc != allocated)
		return "return value is not the sum of allocations";
	if (sum_alloc > (sc.budget > 0 ? sc.budget : 0))
		return "allocations exceed the budget";
	if (sum_min <= sc.budget)
		for (int a = 0; a < napps; a++)
			if (sc.apps[a].guaranteed != sc.apps[a].min_connections)
				return "a minimum was not honoured although the budget covers all";

	/* work conservation and weighted max-min fairness among apps */
	for (int i = 0; i < napps; i++)
	{
		CbAllocApp *ai = &sc.apps[i];
		int64_t		upper = INT64_MAX;
		int			saturated;

		if (ai->live_pods == 0)
			continue;
		if (ai->max_connections >= 0)
			upper = ai->max_connections;
		if (ai->demand >= 0 && ai->demand < upper)
			upper = ai->demand;
		saturated = ai->allocation >= upper;
		if (!saturated && sum_alloc < sc.budget)
			return "an unsaturated app was left short while budget remained";
		if (saturated)
			continue;
		for (int j = 0; j < napps; j++)
		{
			CbAllocApp *aj = &sc.apps[j];
			int64_t		ei = ai->allocation - ai->guaranteed;
			int64_t		ej = aj->allocation - aj->guaranteed;

			if (j == i || aj->live_pods == 0)
				continue;
			/* (ej - 1) / wj < (ei + 1) / wi, or i would deserve more */
			if ((ej - 1) * ai->weight >= (ei + 1) * aj->weight)
			{
				snprintf(why, sizeof(why),
						 "unfair: %s (w %d) has %lld extra, %s (w %d) has %lld",
						 ai->name, ai->weight, (long long) ei,
						 aj->name, aj->weight, (long long) ej);
				return why;
			}
		}
	}

	/*
	 * among pods of one app: no pod holds more than its part of the
	 * minimum and one unit above an unsaturated pod, and the units lost to
	 * rounding went to the lowest pod ids
	 */
	for (int p = 0; p < sc.npods; p++)
	{
		CbAllocPod *pp = &sc.pods[p];
		int			unsat_p = pp->demand < 0 || pp->share < pp->demand;

		if (!unsat_p)
			continue;
		for (int q = 0; q < sc.npods; q++)
		{
			CbAllocPod *pq = &sc.pods[q];
			int			above_floor = pq->share > pq->min_share;

			if (q == p || pq->app != pp->app)
				continue;
			if (above_floor && pq->share > pp->share + 1)
				return "pod shares not max-min fair";
			if (above_floor && pq->share == pp->share + 1 &&
				strcmp(pq->id, pp->id) > 0)
				return "remainder not given in ascending pod-id order";
		}
	}
	return NULL;
}

static void
random_permutation(int *perm, int n)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--)
	{
		int			k = rnd(i + 1);
		int			t = perm[i];

		perm[i] = perm[k];
		perm[k] = t;
	}
}

/* The same scenario with apps and pods in a random input order. */
static void
shuffle_into(Scenario *dst)
{
	static int	app_perm[MAX_APPS];
	static int	pod_perm[MAX_PODS];

	memcpy(dst, &sc, sizeof(Scenario));
	random_permutation(app_perm, sc.napps);
	random_permutation(pod_perm, sc.npods);
	for (int a = 0; a < sc.napps; a++)
		dst->apps[app_perm[a]] = sc.apps[a];
	for (int p = 0; p < sc.npods; p++)
	{
		dst->pods[pod_perm[p]] = sc.pods[p];
		dst->pods[pod_perm[p]].app = app_perm[sc.pods[p].app];
	}
}

static int
same_result(const Scenario *x, const Scenario *y)
{
	for (int a = 0; a < x->napps; a++)
	{
		int			found = 0;

		for (int b = 0; b < y->napps; b++)
			if (strcmp(x->apps[a].name, y->apps[b].name) == 0)
			{
				found = 1;
				if (x->apps[a].allocation != y->apps[b].allocation)
					return 0;
			}
		if (!found)
			return 0;
	}
	for (int p = 0; p < x->npods; p++)
	{
		int			found = 0;

		for (int q = 0; q < y->npods; q++)
			if (x->pods[p].id == y->pods[q].id)
			{
				found = 1;
				if (x->pods[p].share != y->pods[q].share ||
					x->pods[p].min_share != y->pods[q].min_share)
					return 0;
			}
		if (!found)
			return 0;
	}
	return 1;
}

static void
test_random_invariants(void)
{
	int			scenarios = 20000;
	int			failures = 0;
	int			nondeterministic = 0;
	const char *first = NULL;

	for (int i = 0; i < scenarios; i++)
	{
		const char *why;

		random_scenario(i % 10 == 0 ? 40 : 6, i % 10 == 0 ? 8 : 4);
		why = check_invariants(run());
		if (why)
		{
			if (!first)
				first = why, diag("scenario %d: %s", i, why);
			failures++;
		}
		shuffle_into(&shuffled);
		run_on(&shuffled);
		if (!same_result(&sc, &shuffled))
			nondeterministic++;
	}
	is_int(failures, 0, "%d random scenarios satisfy every invariant", scenarios);
	is_int(nondeterministic, 0,
		   "the result does not depend on the order of the input");
}

/* --- 10,000 pods --- */

static void
test_ten_thousand_pods(void)
{
	struct timespec t0,
				t1;
	const char *why;
	int64_t		allocated;
	double		ms;

	reset(5000);
	for (int a = 0; a < 100; a++)
	{
		char		name[16];

		snprintf(name, sizeof(name), "svc%02d", a);
		add_app(name, a % 10 == 0 ? 5 : 0, a % 7 == 0 ? 40 : CB_UNBOUNDED,
				1 + a % 4);
	}
	for (int p = 0; p < 10000; p++)
	{
		char		id[24];

		snprintf(id, sizeof(id), "pod-%05d", (p * 7919) % 10000);
		add_pod(p % 100, id, p % 5 == 0 ? CB_UNBOUNDED : (int) (p % 3));
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	allocated = run();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	why = check_invariants(allocated);
	ok(why == NULL, "10,000 pods of 100 apps: invariants hold%s%s",
	   why ? ": " : "", why ? why : "");
	is_int(allocated, 5000, "10,000 pods: the whole budget of 5000 is allocated");
	diag("10,000 pods, 100 apps: one allocation took %.2f ms", ms);
}

/* --- admission --- */

static CbVerdict
verdict(int connections, int min, int cap, int governed, int budget, int committed)
{
	CbAdmissionCounts c = {.connections = connections, .min_connections = min, .cap = cap,
	.governed = governed, .budget = budget, .committed = committed};

	return cb_admission_verdict(&c);
}

static void
test_admission(void)
{
	/* counts include the connection being admitted */
	is_int(verdict(10, 0, 10, 50, 80, 50), CB_ADMIT,
		   "the connection that takes an application's last slot is admitted");
	is_int(verdict(11, 0, 10, 51, 80, 51), CB_OVER_CAP,
		   "the one after it is over the cap");
	is_int(verdict(1, 0, 0, 1, 80, 1), CB_OVER_CAP, "a cap of 0 admits nobody");
	is_int(verdict(500, 0, CB_UNBOUNDED, 80, 80, 80), CB_ADMIT,
		   "no cap: admitted while the budget lasts (the last slot)");
	is_int(verdict(500, 0, CB_UNBOUNDED, 81, 80, 81), CB_OVER_BUDGET,
		   "governed connections beyond the budget are refused");
	is_int(verdict(11, 0, 10, 81, 80, 81), CB_OVER_CAP,
		   "over both cap and budget: the cap is named");
	is_int(verdict(4, 0, CB_UNBOUNDED, 60, 80, 81), CB_OVER_MINIMUMS,
		   "admitting it would eat another application's unused minimum");
	is_int(verdict(4, 5, CB_UNBOUNDED, 60, 80, 81), CB_ADMIT,
		   "an application within its own minimum may take it (its minimum is its own)");
	is_int(verdict(5, 5, CB_UNBOUNDED, 60, 80, 80), CB_ADMIT,
		   "the minimums and the governed connections exactly fill the budget: admitted");
	is_int(verdict(1, 0, CB_UNBOUNDED, 1, 0, 1), CB_OVER_BUDGET,
		   "a budget of 0 admits no governed connection");

	/* applications without a row, together */
	{
		CbAdmissionCounts c = {.connections = 3, .min_connections = 0, .cap = CB_UNBOUNDED,
		.governed = 30, .budget = 80, .committed = 30, .unconfigured = 1,
		.unconfigured_connections = 21, .unconfigured_cap = 20};

		is_int(cb_admission_verdict(&c), CB_OVER_UNCONFIGURED_CAP,
			   "applications without a row beyond their cap together are refused");
		c.unconfigured_connections = 20;
		is_int(cb_admission_verdict(&c), CB_ADMIT, "up to the cap they are admitted");
		c.unconfigured = 0;
		c.unconfigured_connections = 500;
		is_int(cb_admission_verdict(&c), CB_ADMIT, "a configured application is not bound by their cap");
	}

	/* a sequence: a crowd of 60 for a cap of 10 gets exactly 10 in */
	{
		int			admitted = 0;
		int			connections = 0;

		for (int i = 0; i < 60; i++)
		{
			connections++;		/* counted first */
			if (verdict(connections, 0, 10, connections, 80, connections) == CB_ADMIT)
				admitted++;
			else
				connections--;	/* refused: uncounted */
		}
		is_int(admitted, 10, "60 connections one after another for a cap of 10: exactly 10 admitted");
	}
}

/* --- pool sessions: a pod's share split among the pools that give it --- */

static void
test_sessions(void)
{
	static CbAllocApp apps[2];
	static CbAllocPod pods[3];
	static CbAllocSession sessions[5];
	static int32_t order_mem[16];
	static char work[65536];
	CbAllocOrder order = {order_mem, order_mem + 2, order_mem + 5};

	memset(apps, 0, sizeof(apps));
	apps[0] = (CbAllocApp) {.name = "api", .min_connections = 6, .max_connections = CB_UNBOUNDED, .weight = 1};
	apps[1] = (CbAllocApp) {.name = "web", .min_connections = 0, .max_connections = CB_UNBOUNDED, .weight = 1};
	pods[0] = (CbAllocPod) {.app = 0, .id = "api-1", .demand = 0};
	pods[1] = (CbAllocPod) {.app = 0, .id = "api-2", .demand = 0};
	pods[2] = (CbAllocPod) {.app = 1, .id = "web-1", .demand = 0};
	/* api-1: two pools, one wanting 3, one unbounded; api-2: one pool;
	 * web-1: two pools of no bound, given in reverse token order */
	sessions[0] = (CbAllocSession) {.pod = 0, .token = 0x20, .demand = 3};
	sessions[1] = (CbAllocSession) {.pod = 0, .token = 0x10, .demand = CB_UNBOUNDED};
	sessions[2] = (CbAllocSession) {.pod = 1, .token = 0x30, .demand = CB_UNBOUNDED};
	sessions[3] = (CbAllocSession) {.pod = 2, .token = 0x99, .demand = CB_UNBOUNDED};
	sessions[4] = (CbAllocSession) {.pod = 2, .token = 0x11, .demand = CB_UNBOUNDED};

	ok(cb_allocation_work_size_sessions(2, 3, 5) <= sizeof(work), "work area fits");
	cb_allocation_order(apps, 2, pods, 3, sessions, 5, &order, work);
	is_int(cb_allocate_ordered(41, CB_UNBOUNDED, apps, 2, pods, 3, sessions, 5, &order, work), 41,
		   "budget 41: all allocated");
	is_int(pods[0].demand, CB_UNBOUNDED, "a pod's demand is its sessions' (unbounded if one is)");
	is_int(apps[0].allocation + apps[1].allocation, 41, "both applications share the budget");
	is_int(sessions[0].share + sessions[1].share, pods[0].share,
		   "the sessions of api-1 together hold exactly the pod's share (%d)", pods[0].share);
	is_int(sessions[0].share, 3, "the session that wants 3 gets 3");
	is_int(sessions[1].share, pods[0].share - 3, "the unbounded one gets the rest of the pod's share");
	is_int(sessions[2].share, pods[1].share, "a pod's only session gets the whole share");
	is_int(sessions[0].min_share + sessions[1].min_share, pods[0].min_share,
		   "the sessions' parts of the minimum add up to the pod's (%d)", pods[0].min_share);
	ok(sessions[3].share + sessions[4].share == pods[2].share &&
	   sessions[4].share - sessions[3].share >= 0 && sessions[4].share - sessions[3].share <= 1,
	   "web-1's two unbounded sessions split its share %d evenly, the lower token first (%d, %d)",
	   pods[2].share, sessions[4].share, sessions[3].share);

	/* a pod whose sessions all report 2 demands 4 */
	sessions[0].demand = 2;
	sessions[1].demand = 2;
	cb_allocate_ordered(41, CB_UNBOUNDED, apps, 2, pods, 3, sessions, 5, &order, work);
	is_int(pods[0].demand, 4, "a pod's demand is the sum of its sessions' demands");
	ok(sessions[0].share <= 2 || sessions[0].share <= sessions[0].min_share,
	   "a session is held to its demand above its part of the minimum");
}

/* --- applications without a row, bounded together --- */

static void
test_unconfigured_cap(void)
{
	static int32_t order_mem[256];
	static char work[1 << 16];
	CbAllocOrder order = {order_mem, order_mem + 64, NULL};
	int			api;
	int64_t		together = 0;

	/* "api" is configured; 20 invented names each with an unbounded pod */
	reset(80);
	api = add_app("api", 0, CB_UNBOUNDED, 1);
	add_pod(api, "api-1", CB_UNBOUNDED);
	for (int i = 0; i < 20; i++)
	{
		char		name[32];
		int			a;

		snprintf(name, sizeof(name), "fake-%02d", i);
		a = add_app(name, 0, CB_UNBOUNDED, 1);
		sc.apps[a].unconfigured = 1;
		add_pod(a, name, CB_UNBOUNDED);
	}
	cb_allocation_order(sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0, &order, work);
	cb_allocate_ordered(80, CB_UNBOUNDED, sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0,
						&order, work);
	ok(sc.apps[api].allocation < 5,
	   "without a cap, 20 invented application names dilute api to %d of 80",
	   sc.apps[api].allocation);
	cb_allocate_ordered(80, 10, sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0, &order, work);
	for (int a = 0; a < sc.napps; a++)
		if (sc.apps[a].unconfigured)
			together += sc.apps[a].allocation;
	is_int(together, 10, "with a cap of 10 for applications without a row, they get 10 together");
	is_int(sc.apps[api].allocation, 70, "and api gets the other 70");
	/* a cap they do not reach changes nothing */
	cb_allocate_ordered(80, 100, sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0, &order, work);
	ok(sc.apps[api].allocation < 5, "a cap above what they would take changes nothing (api %d)",
	   sc.apps[api].allocation);
	/* they demand little: the cap does not bind, api takes the rest */
	for (int p = 1; p < sc.npods; p++)
		sc.pods[p].demand = 1;
	cb_allocate_ordered(80, 10, sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0, &order, work);
	together = 0;
	for (int a = 0; a < sc.napps; a++)
		if (sc.apps[a].unconfigured)
			together += sc.apps[a].allocation;
	ok(together == 10 && sc.apps[api].allocation == 70,
	   "20 wanting 1 each against a cap of 10: 10 together (%lld), api 70 (%d)",
	   (long long) together, sc.apps[api].allocation);
}

/* --- the cached order gives the same result as a fresh one --- */

static void
test_cached_order(void)
{
	static Scenario copy;
	static int32_t order_mem[MAX_APPS + MAX_PODS + 1];
	static char *work;
	int			differ = 0;

	work = malloc(cb_allocation_work_size_sessions(MAX_APPS, MAX_PODS, 0));
	for (int i = 0; i < 2000; i++)
	{
		CbAllocOrder order = {order_mem, order_mem + MAX_APPS, NULL};

		random_scenario(30, 6);
		cb_allocation_order(sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0, &order, work);
		/* the demands change, the members do not: the order still holds */
		for (int round = 0; round < 3; round++)
		{
			for (int p = 0; p < sc.npods; p++)
				sc.pods[p].demand = rnd(3) == 0 ? CB_UNBOUNDED : (int) rnd(40);
			memcpy(&copy, &sc, sizeof(Scenario));
			cb_allocate_ordered(sc.budget, CB_UNBOUNDED, sc.apps, sc.napps, sc.pods, sc.npods,
								NULL, 0, &order, work);
			run_on(&copy);
			for (int p = 0; p < sc.npods; p++)
				if (sc.pods[p].share != copy.pods[p].share ||
					sc.pods[p].min_share != copy.pods[p].min_share)
					differ++;
		}
	}
	is_int(differ, 0, "with the order kept while only demands change, every share equals a fresh allocation's");
	free(work);
}

/* --- fleets: 10,000 and 100,000 pods of 1,000 applications --- */

typedef struct Fleet
{
	int			napps;
	int			npods;
	CbAllocApp *apps;
	CbAllocPod *pods;
	char	  (*names)[16];
	char	  (*ids)[24];
	CbAllocOrder order;
	void	   *work;
} Fleet;

static int
fleet_compare_pods(const void *a, const void *b, void *ctx);

static Fleet *fleet_for_sort;

static int
fleet_pod_order(const void *pa, const void *pb)
{
	return fleet_compare_pods(pa, pb, fleet_for_sort);
}

static int
fleet_compare_pods(const void *pa, const void *pb, void *ctx)
{
	const Fleet *f = ctx;
	int32_t		a = *(const int32_t *) pa;
	int32_t		b = *(const int32_t *) pb;

	if (f->pods[a].app != f->pods[b].app)
		return f->pods[a].app < f->pods[b].app ? -1 : 1;
	return strcmp(f->pods[a].id, f->pods[b].id);
}

static void
fleet_make(Fleet *f, int napps, int npods)
{
	f->napps = napps;
	f->npods = npods;
	f->apps = calloc(napps, sizeof(CbAllocApp));
	f->pods = calloc(npods, sizeof(CbAllocPod));
	f->names = calloc(napps, sizeof(*f->names));
	f->ids = calloc(npods, sizeof(*f->ids));
	f->order.app_order = calloc(napps, sizeof(int32_t));
	f->order.pod_order = calloc(npods, sizeof(int32_t));
	f->order.session_order = NULL;
	f->work = malloc(cb_allocation_work_size_sessions(napps, npods, 0));
	for (int a = 0; a < napps; a++)
	{
		snprintf(f->names[a], sizeof(f->names[a]), "svc-%04d", (a * 7919) % napps);
		f->apps[a].name = f->names[a];
		f->apps[a].min_connections = a % 50 == 0 ? 2 : 0;
		f->apps[a].max_connections = a % 7 == 0 ? 30 : CB_UNBOUNDED;
		f->apps[a].weight = 1 + a % 4;
	}
	for (int p = 0; p < npods; p++)
	{
		snprintf(f->ids[p], sizeof(f->ids[p]), "pod-%06d", (int) ((p * 104729L) % npods));
		f->pods[p].app = (int32_t) (rnd((uint32_t) napps));
		f->pods[p].id = f->ids[p];
	}
}

static void
fleet_demands(Fleet *f)
{
	for (int p = 0; p < f->npods; p++)
		f->pods[p].demand = rnd(10) == 0 ? CB_UNBOUNDED : (int) (1 + rnd(12));
}

static void
fleet_free(Fleet *f)
{
	free(f->apps);
	free(f->pods);
	free(f->names);
	free(f->ids);
	free(f->order.app_order);
	free(f->order.pod_order);
	free(f->work);
}

/*
 * The invariants of weighted max-min fairness, checked in O(n log n) so
 * that 100,000 pods take a moment: shares add up to allocations and
 * allocations to at most the budget; caps, demands and minimums hold; no
 * unsaturated application could gain from another without that one
 * having less (relative to weight); within an application, no pod holds
 * more than its part of the minimum and one unit above an unsaturated
 * pod, the extra units in ascending pod-id order.
 */
static const char *
fleet_check(Fleet *f, int32_t budget, int64_t allocated)
{
	static char why[256];
	int32_t    *idx = malloc(sizeof(int32_t) * f->npods);
	int64_t    *sum_share = calloc(f->napps, sizeof(int64_t));
	int64_t    *sum_min = calloc(f->napps, sizeof(int64_t));
	int64_t		total = 0;
	const char *fail = NULL;

	for (int p = 0; p < f->npods; p++)
	{
		CbAllocPod *pod = &f->pods[p];

		idx[p] = p;
		sum_share[pod->app] += pod->share;
		sum_min[pod->app] += pod->min_share;
		if (pod->share < pod->min_share)
			fail = "a pod's share is below its part of the minimum";
		if (pod->demand >= 0 && pod->share > pod->min_share && pod->share > pod->demand)
			fail = "a pod's share exceeds its demand";
	}
	for (int a = 0; a < f->napps && !fail; a++)
	{
		CbAllocApp *app = &f->apps[a];

		total += app->allocation;
		if (app->max_connections >= 0 && app->allocation > app->max_connections)
			fail = "an allocation exceeds its cap";
		else if (app->live_pods > 0 && sum_share[a] != app->allocation)
		{
			snprintf(why, sizeof(why), "%s: pods hold %lld of its %d", app->name,
					 (long long) sum_share[a], app->allocation);
			fail = why;
		}
		else if (app->live_pods > 0 && sum_min[a] != app->guaranteed)
			fail = "the pods' parts of a minimum do not add up to it";
	}
	if (!fail && total != allocated)
		fail = "the return value is not the sum of allocations";
	if (!fail && total > budget)
		fail = "allocations exceed the budget";

	/* weighted max-min among unsaturated applications: O(apps^2) */
	for (int i = 0; i < f->napps && !fail; i++)
	{
		CbAllocApp *ai = &f->apps[i];
		int64_t		upper = INT64_MAX;
		int64_t		ei = ai->allocation - ai->guaranteed;

		if (ai->live_pods == 0)
			continue;
		if (ai->max_connections >= 0)
			upper = ai->max_connections;
		if (ai->demand >= 0 && ai->demand < upper)
			upper = ai->demand;
		if (ai->allocation >= upper)
			continue;
		if (total < budget)
			fail = "an unsaturated application was left short while budget remained";
		for (int j = 0; j < f->napps && !fail; j++)
		{
			CbAllocApp *aj = &f->apps[j];
			int64_t		ej = aj->allocation - aj->guaranteed;

			if (j != i && aj->live_pods > 0 &&
				(ej - 1) * ai->weight >= (ei + 1) * aj->weight)
				fail = "applications are not weighted max-min fair";
		}
	}

	/* within each application, in pod-id order */
	fleet_for_sort = f;
	qsort(idx, f->npods, sizeof(int32_t), fleet_pod_order);
	for (int first = 0; first < f->npods && !fail;)
	{
		int			last = first;
		int			lowest_unsat = INT32_MAX;
		int			highest = INT32_MIN;
		int			seen_base = 0;

		while (last < f->npods && f->pods[idx[last]].app == f->pods[idx[first]].app)
			last++;
		for (int k = first; k < last; k++)
		{
			CbAllocPod *pod = &f->pods[idx[k]];

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
			CbAllocPod *pod = &f->pods[idx[k]];
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
	free(sum_min);
	return fail;
}

static double
elapsed_ms(struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1e3 + (t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void
test_fleet(int npods, int32_t budget)
{
	Fleet		f;
	struct timespec t0;
	double		order_ms,
				best = 1e9;
	const char *why = NULL;
	int64_t		allocated = 0;

	fleet_make(&f, 1000, npods);
	fleet_demands(&f);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cb_allocation_order(f.apps, f.napps, f.pods, f.npods, NULL, 0, &f.order, f.work);
	order_ms = elapsed_ms(&t0);
	for (int round = 0; round < 5 && !why; round++)
	{
		double		ms;

		fleet_demands(&f);		/* every pod reports a new demand */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		allocated = cb_allocate_ordered(budget, CB_UNBOUNDED, f.apps, f.napps, f.pods, f.npods,
										NULL, 0, &f.order, f.work);
		ms = elapsed_ms(&t0);
		if (ms < best)
			best = ms;
		why = fleet_check(&f, budget, allocated);
	}
	ok(why == NULL, "%d pods of 1,000 applications, 5 rounds of new demands: the invariants hold%s%s",
	   npods, why ? ": " : "", why ? why : "");
	ok(allocated <= budget, "%d pods: %lld of the budget of %d allocated", npods,
	   (long long) allocated, budget);
	diag("%d pods x 1,000 applications: ordering (when pods join or leave) %.2f ms; "
		 "allocation with the order kept, best of 5: %.3f ms", npods, order_ms, best);
	fleet_free(&f);
}

int
main(void)
{
	test_readme_examples();
	test_edges();
	test_join_and_leave();
	test_random_invariants();
	test_ten_thousand_pods();
	test_admission();
	test_sessions();
	test_unconfigured_cap();
	test_cached_order();
	test_fleet(10000, 5000);
	test_fleet(100000, 20000);
	return done_testing();
}
