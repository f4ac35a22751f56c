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
 * The random scenarios are new every run; the seed is printed, and
 * CB_TEST_SEED=<seed> repeats them.
 */
#define _POSIX_C_SOURCE 200809L

#include "../../extension/allocation.h"
#include "../lib/allocation_check.h"
#include "../lib/clock.h"
#include "../lib/rnd.h"
#include "../lib/tap.h"

#include <stdint.h>

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

/* --- the invariants: check_allocation(), in test/lib/allocation_check.h --- */

static const char *
check_invariants(int64_t allocated)
{
	return check_allocation(sc.apps, sc.napps, sc.pods, sc.npods, sc.budget, allocated);
}

/*
 * --- scenarios with known answers: the examples every reader of the README
 * can check by hand, edge cases, pods joining and leaving ---
 */

#define UNB CB_UNBOUNDED

typedef enum Measure
{
	END,						/* ends a list of expectations */
	RETURNED,					/* cb_allocate()'s result */
	ALLOCATION,					/* of an application */
	GUARANTEED,					/* of an application */
	APP_DEMAND,					/* of an application */
	SHARE,						/* of a pod */
	MIN_SHARE					/* of a pod */
} Measure;

static const char *const measure_names[] = {
	"", "allocated", "allocation of", "guaranteed of", "demand of", "share of",
	"min_share of"
};

typedef struct Case
{
	const char *shows;			/* what the case shows: its test's name */
	int32_t		budget;
	struct
	{
		const char *name;
		int32_t		min,
					cap,
					weight;
	}			apps[4];		/* in input order; up to a NULL name */
	struct
	{
		const char *app;
		const char *id;
		int32_t		demand;
	}			pods[5];		/* in input order; up to a NULL app */
	struct
	{
		Measure		what;
		const char *of;			/* the application or pod id */
		int64_t		want;
	}			expect[8];		/* up to END */
} Case;

static const Case cases[] = {
	/* the README */
	{"budget 80 (120 connections, 40 reserved), one application with 4 pods: all 80 allocated, 20 each",
		80, {{"api", 0, UNB, 1}},
		{{"api", "p1", UNB}, {"api", "p2", UNB}, {"api", "p3", UNB}, {"api", "p4", UNB}},
		{{RETURNED, NULL, 80}, {SHARE, "p1", 20}, {SHARE, "p2", 20}, {SHARE, "p3", 20}, {SHARE, "p4", 20}}},
	{"budget 80, 3 pods: 27, 27, 26, the remainder going by ascending pod id",
		80, {{"api", 0, UNB, 1}},
		{{"api", "web-c", UNB}, {"api", "web-a", UNB}, {"api", "web-b", UNB}},
		{{SHARE, "web-a", 27}, {SHARE, "web-b", 27}, {SHARE, "web-c", 26}}},
	{"A and B of weight 1, 2 pods each: 20 per pod",
		80, {{"A", 0, UNB, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"A", "a2", UNB}, {"B", "b1", UNB}, {"B", "b2", UNB}},
		{{SHARE, "a1", 20}, {SHARE, "a2", 20}, {SHARE, "b1", 20}, {SHARE, "b2", 20}}},
	{"A capped at 30: A 30, its pods 15 each; B takes the rest, 50, its pods 25 each",
		80, {{"A", 0, 30, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"A", "a2", UNB}, {"B", "b1", UNB}, {"B", "b2", UNB}},
		{{ALLOCATION, "A", 30}, {ALLOCATION, "B", 50},
		 {SHARE, "a1", 15}, {SHARE, "a2", 15}, {SHARE, "b1", 25}, {SHARE, "b2", 25}}},
	{"A's pods demand 5: A's pods get 5, B's 35; A's demand is the sum of its pods', B's is unbounded",
		80, {{"A", 0, UNB, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", 5}, {"A", "a2", 5}, {"B", "b1", UNB}, {"B", "b2", UNB}},
		{{SHARE, "a1", 5}, {SHARE, "a2", 5}, {SHARE, "b1", 35}, {SHARE, "b2", 35},
		 {APP_DEMAND, "A", 10}, {APP_DEMAND, "B", UNB}}},

	/* a minimum's part above a pod's demand takes nothing from its neighbour */
	{"min 4, cap 20, pods demanding 5 and 1 of a budget of 42: 5 and 2 (the second holds its part of the minimum), 7 in all",
		42, {{"web", 4, 20, 1}},
		{{"web", "web-1", 5}, {"web", "web-2", 1}},
		{{ALLOCATION, "web", 7}, {SHARE, "web-1", 5}, {SHARE, "web-2", 2},
		 {MIN_SHARE, "web-1", 2}, {MIN_SHARE, "web-2", 2}}},

	/* edges */
	{"zero budget: nothing allocated, every share 0",
		0, {{"A", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"A", "a2", 3}},
		{{RETURNED, NULL, 0}, {SHARE, "a1", 0}, {SHARE, "a2", 0}}},
	{"a negative budget behaves as zero",
		-5, {{"A", 0, UNB, 1}},
		{{"A", "a1", UNB}},
		{{RETURNED, NULL, 0}}},
	{"no applications: nothing allocated",
		80, {{NULL}}, {{NULL}},
		{{RETURNED, NULL, 0}}},
	{"minimums adding up to the budget: each application gets exactly its minimum",
		80, {{"A", 50, UNB, 1}, {"B", 30, UNB, 1}},
		{{"A", "a1", UNB}, {"B", "b1", UNB}},
		{{ALLOCATION, "A", 50}, {ALLOCATION, "B", 30}}},
	{"B has no pod: its minimum 20 is held; A gets its own minimum and all that is not held (60), all to its only pod",
		80, {{"A", 10, UNB, 1}, {"B", 20, UNB, 1}},
		{{"A", "a1", UNB}},
		{{ALLOCATION, "B", 20}, {ALLOCATION, "A", 60}, {SHARE, "a1", 60}}},
	{"a configured application without pods or minimum gets 0; the one with a pod takes the budget",
		80, {{"A", 0, UNB, 1}, {"B", 0, 10, 5}},
		{{"A", "a1", UNB}},
		{{ALLOCATION, "B", 0}, {ALLOCATION, "A", 80}}},
	{"weights 3:1 share 80 as 60:20",
		80, {{"A", 0, UNB, 3}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"B", "b1", UNB}},
		{{ALLOCATION, "A", 60}, {ALLOCATION, "B", 20}}},
	{"10 among three equal applications: 4, 3, 3, the remainder to the first name",
		10, {{"C", 0, UNB, 1}, {"B", 0, UNB, 1}, {"A", 0, UNB, 1}},
		{{"A", "x", UNB}, {"B", "x", UNB}, {"C", "x", UNB}},
		{{ALLOCATION, "A", 4}, {ALLOCATION, "B", 3}, {ALLOCATION, "C", 3}}},
	{"5 among weights 1:3 is 1:4 (1.25 vs 3.75: the largest remainder wins over name order)",
		5, {{"A", 0, UNB, 1}, {"B", 0, UNB, 3}},
		{{"A", "x", UNB}, {"B", "x", UNB}},
		{{ALLOCATION, "A", 1}, {ALLOCATION, "B", 4}}},
	{"demand 6 below min 10: the application holds its minimum, split 4, 3, 3 over its pods, and no pod's share falls below its part",
		80, {{"A", 10, UNB, 1}},
		{{"A", "a1", 2}, {"A", "a2", 2}, {"A", "a3", 2}},
		{{ALLOCATION, "A", 10}, {MIN_SHARE, "a1", 4}, {MIN_SHARE, "a2", 3}, {MIN_SHARE, "a3", 3},
		 {SHARE, "a1", 4}, {SHARE, "a2", 3}, {SHARE, "a3", 3}}},
	{"80 with min 10 over 3 pods: 27, 27, 26 (a minimum does not change how the whole allocation is split)",
		80, {{"A", 10, UNB, 1}},
		{{"A", "a1", UNB}, {"A", "a2", UNB}, {"A", "a3", UNB}},
		{{SHARE, "a1", 27}, {SHARE, "a2", 27}, {SHARE, "a3", 26}}},
	{"pods demanding 1 keep their parts of the minimum (3 each), and the pods' shares add up to the allocation",
		80, {{"A", 10, UNB, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"A", "a2", 1}, {"A", "a3", 1}, {"B", "b1", UNB}},
		{{SHARE, "a2", 3}, {SHARE, "a3", 3}}},
	{"min 10 and cap 12: A 12, B the other 88",
		100, {{"A", 10, 12, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"B", "b1", UNB}},
		{{ALLOCATION, "A", 12}, {ALLOCATION, "B", 88}}},
	{"cap 0: A gets nothing, B everything",
		50, {{"A", 0, 0, 1}, {"B", 0, UNB, 1}},
		{{"A", "a1", UNB}, {"B", "b1", UNB}},
		{{ALLOCATION, "A", 0}, {ALLOCATION, "B", 50}}},
	{"budget 30 below minimums 40 + 10: max-min among the minimums guarantees 20 and 10; the whole budget is used, not exceeded",
		30, {{"A", 40, UNB, 1}, {"B", 10, UNB, 1}},
		{{"A", "a1", UNB}},
		{{GUARANTEED, "A", 20}, {GUARANTEED, "B", 10}, {RETURNED, NULL, 30}}},
	{"demand 0 everywhere: nothing allocated",
		40, {{"A", 0, UNB, 1}},
		{{"A", "a1", 0}, {"A", "a2", 0}},
		{{RETURNED, NULL, 0}}},
	{"bounded demand 15 under budget 100: 15 allocated",
		100, {{"A", 0, UNB, 1}},
		{{"A", "a1", 7}, {"A", "a2", 8}},
		{{RETURNED, NULL, 15}}},
	{"pods demanding 4, 100 and no bound share 30 as 4, 13, 13 (water-filling gives the slack to the hungry pods)",
		30, {{"A", 0, UNB, 1}},
		{{"A", "a1", 4}, {"A", "a2", 100}, {"A", "a3", UNB}},
		{{SHARE, "a1", 4}, {SHARE, "a2", 13}, {SHARE, "a3", 13}}},

	/* pods joining and leaving */
	{"two pods: 40 each",
		80, {{"api", 0, UNB, 1}},
		{{"api", "p1", UNB}, {"api", "p2", UNB}},
		{{SHARE, "p1", 40}, {SHARE, "p2", 40}}},
	{"a third pod joins: 27, 27, 26",
		80, {{"api", 0, UNB, 1}},
		{{"api", "p1", UNB}, {"api", "p2", UNB}, {"api", "p3", UNB}},
		{{SHARE, "p1", 27}, {SHARE, "p2", 27}, {SHARE, "p3", 26}}},
	{"p1 leaves (the last pod takes its place): the others grow back to 40",
		80, {{"api", 0, UNB, 1}},
		{{"api", "p3", UNB}, {"api", "p2", UNB}},
		{{SHARE, "p2", 40}, {SHARE, "p3", 40}}},
};

static int
app_named(const char *name)
{
	for (int a = 0; a < sc.napps; a++)
		if (strcmp(sc.apps[a].name, name) == 0)
			return a;
	bail_out("no application %s in the scenario", name);
}

static int
pod_with_id(const char *id)
{
	for (int p = 0; p < sc.npods; p++)
		if (strcmp(sc.pods[p].id, id) == 0)
			return p;
	bail_out("no pod %s in the scenario", id);
}

/* What a case's expectation looks at, after run() returned "allocated". */
static int64_t
measured(Measure what, const char *of, int64_t allocated)
{
	switch (what)
	{
		case RETURNED:
			return allocated;
		case ALLOCATION:
			return sc.apps[app_named(of)].allocation;
		case GUARANTEED:
			return sc.apps[app_named(of)].guaranteed;
		case APP_DEMAND:
			return sc.apps[app_named(of)].demand;
		case SHARE:
			return sc.pods[pod_with_id(of)].share;
		default:
			return sc.pods[pod_with_id(of)].min_share;
	}
}

/* One test a case: every expectation is met and every invariant holds. */
static void
test_cases(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		const Case *c = &cases[i];
		int64_t		allocated;
		const char *why;
		int			wrong = 0;

		reset(c->budget);
		for (int a = 0; a < 4 && c->apps[a].name; a++)
			add_app(c->apps[a].name, c->apps[a].min, c->apps[a].cap, c->apps[a].weight);
		for (int p = 0; p < 5 && c->pods[p].app; p++)
			add_pod(app_named(c->pods[p].app), c->pods[p].id, c->pods[p].demand);
		allocated = run();
		for (int e = 0; e < 8 && c->expect[e].what != END; e++)
			wrong += measured(c->expect[e].what, c->expect[e].of, allocated) != c->expect[e].want;
		why = check_invariants(allocated);
		if (ok(!wrong && !why, "%s", c->shows))
			continue;
		for (int e = 0; e < 8 && c->expect[e].what != END; e++)
		{
			int64_t		got = measured(c->expect[e].what, c->expect[e].of, allocated);

			if (got != c->expect[e].want)
				diag("  %s %s: got %lld, expected %lld", measure_names[c->expect[e].what],
					 c->expect[e].of ? c->expect[e].of : "in all", (long long) got,
					 (long long) c->expect[e].want);
		}
		if (why)
			diag("  an invariant does not hold: %s", why);
	}
}

/* --- randomised scenarios checked against the defining invariants --- */

/* A pod's demand: no bound one time in three, otherwise 0 to 39. */
static int
random_demand(void)
{
	return rnd_below(3) == 0 ? CB_UNBOUNDED : (int) rnd_below(40);
}

static void
random_scenario(int max_apps, int max_pods_per_app)
{
	int			napps = 1 + rnd_below(max_apps);

	reset((int32_t) rnd_below(400));
	for (int a = 0; a < napps; a++)
	{
		char		name[16];
		int			min = rnd_below(4) == 0 ? (int) rnd_below(30) : 0;
		int			cap = rnd_below(3) == 0 ? min + (int) rnd_below(60) : CB_UNBOUNDED;
		int			weight = 1 + rnd_below(rnd_below(2) ? 3 : 1000);
		int			pods = rnd_below(max_pods_per_app + 1);

		snprintf(name, sizeof(name), "app%03d", (int) rnd_below(1000) * 1000 + a);
		add_app(name, min, cap, weight);
		for (int p = 0; p < pods; p++)
		{
			char		id[24];

			snprintf(id, sizeof(id), "pod-%d-%d", (int) rnd_below(100000), p);
			add_pod(a, id, random_demand());
		}
	}
}

static void
random_permutation(int *perm, int n)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--)
	{
		int			k = rnd_below(i + 1);
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
	const char *why;
	int64_t		allocated;
	double		t0;

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
	t0 = now_seconds();
	allocated = run();
	diag("10,000 pods, 100 apps: one allocation took %.2f ms", (now_seconds() - t0) * 1e3);
	why = check_invariants(allocated);
	ok(why == NULL, "10,000 pods of 100 apps: invariants hold%s%s",
	   why ? ": " : "", why ? why : "");
	is_int(allocated, 5000, "10,000 pods: the whole budget of 5000 is allocated");
}

/* --- admission --- */

/* An application's counts, each including the connection being admitted. */
#define COUNTS(connections_, min_, cap_, governed_, budget_, committed_) \
	.connections = (connections_), .min_connections = (min_), .cap = (cap_), \
	.governed = (governed_), .budget = (budget_), .committed = (committed_)

static const struct
{
	CbAdmissionCounts counts;
	CbVerdict	want;
	const char *shows;
}			verdicts[] = {
	{{COUNTS(10, 0, 10, 50, 80, 50)}, CB_ADMIT,
	 "the connection that takes an application's last slot is admitted"},
	{{COUNTS(11, 0, 10, 51, 80, 51)}, CB_OVER_CAP,
	 "the one after it is over the cap"},
	{{COUNTS(1, 0, 0, 1, 80, 1)}, CB_OVER_CAP,
	 "a cap of 0 admits nobody"},
	{{COUNTS(500, 0, UNB, 80, 80, 80)}, CB_ADMIT,
	 "no cap: admitted while the budget lasts (the last slot)"},
	{{COUNTS(500, 0, UNB, 81, 80, 81)}, CB_OVER_BUDGET,
	 "governed connections beyond the budget are refused"},
	{{COUNTS(11, 0, 10, 81, 80, 81)}, CB_OVER_CAP,
	 "over both cap and budget: the cap is named"},
	{{COUNTS(4, 0, UNB, 60, 80, 81)}, CB_OVER_MINIMUMS,
	 "admitting it would eat another application's unused minimum"},
	{{COUNTS(4, 5, UNB, 60, 80, 81)}, CB_ADMIT,
	 "an application within its own minimum may take it (its minimum is its own)"},
	{{COUNTS(5, 5, UNB, 60, 80, 80)}, CB_ADMIT,
	 "the minimums and the governed connections exactly fill the budget: admitted"},
	{{COUNTS(1, 0, UNB, 1, 0, 1)}, CB_OVER_BUDGET,
	 "a budget of 0 admits no governed connection"},
	/* applications without a row, together */
	{{COUNTS(3, 0, UNB, 30, 80, 30), .unconfigured = 1,
	  .unconfigured_connections = 21, .unconfigured_cap = 20}, CB_OVER_UNCONFIGURED_CAP,
	 "applications without a row beyond their cap together are refused"},
	{{COUNTS(3, 0, UNB, 30, 80, 30), .unconfigured = 1,
	  .unconfigured_connections = 20, .unconfigured_cap = 20}, CB_ADMIT,
	 "applications without a row up to their cap together are admitted"},
	{{COUNTS(3, 0, UNB, 30, 80, 30), .unconfigured = 0,
	  .unconfigured_connections = 500, .unconfigured_cap = 20}, CB_ADMIT,
	 "a configured application is not bound by the cap of those without a row"},
};

static void
test_admission(void)
{
	int			admitted = 0;
	int			connections = 0;

	for (size_t i = 0; i < sizeof(verdicts) / sizeof(verdicts[0]); i++)
		is_int(cb_admission_verdict(&verdicts[i].counts), verdicts[i].want, "%s", verdicts[i].shows);

	/* a sequence: a crowd of 60 for a cap of 10 gets exactly 10 in */
	for (int i = 0; i < 60; i++)
	{
		CbAdmissionCounts c = {COUNTS(connections + 1, 0, 10, connections + 1, 80, connections + 1)};

		/* counted first; a refused one is uncounted again */
		if (cb_admission_verdict(&c) == CB_ADMIT)
		{
			admitted++;
			connections++;
		}
	}
	is_int(admitted, 10, "60 connections one after another for a cap of 10: exactly 10 admitted");
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

	/*
	 * api-1's part of api's minimum of 6 is 3, split 2 and 1 over its two
	 * sessions; the first demands 1, the second 5: the pod holds 2 + 5,
	 * neither session below its demand (the first holds its part of the
	 * minimum), while api is far below the budget.
	 */
	sessions[0].demand = 1;
	sessions[1].demand = 5;
	sessions[2].demand = 0;
	sessions[3].demand = 0;
	sessions[4].demand = 0;
	cb_allocate_ordered(41, CB_UNBOUNDED, apps, 2, pods, 3, sessions, 5, &order, work);
	ok(sessions[1].share == 5 && sessions[0].share == sessions[0].min_share &&
	   sessions[0].min_share >= 1 && pods[0].share == sessions[0].share + 5,
	   "a session's part of the minimum above its demand takes nothing from its pod's other session: "
	   "shares %d (part %d, demand 1) and %d (demand 5), pod %d", sessions[0].share,
	   sessions[0].min_share, sessions[1].share, pods[0].share);
}

/* --- applications without a row, bounded together --- */

/*
 * Share sc's budget with "cap" for the applications without a row (in the
 * order given); returns what they get together.
 */
static int64_t
allocate_unconfigured_capped(int32_t cap, const CbAllocOrder *order, void *work)
{
	int64_t		together = 0;

	cb_allocate_ordered(sc.budget, cap, sc.apps, sc.napps, sc.pods, sc.npods, NULL, 0,
						order, work);
	for (int a = 0; a < sc.napps; a++)
		if (sc.apps[a].unconfigured)
			together += sc.apps[a].allocation;
	return together;
}

static void
test_unconfigured_cap(void)
{
	static int32_t order_mem[256];
	static char work[1 << 16];
	CbAllocOrder order = {order_mem, order_mem + 64, NULL};
	int			api;
	int64_t		together;

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
	allocate_unconfigured_capped(CB_UNBOUNDED, &order, work);
	ok(sc.apps[api].allocation < 5,
	   "without a cap, 20 invented application names dilute api to %d of 80",
	   sc.apps[api].allocation);
	is_int(allocate_unconfigured_capped(10, &order, work), 10,
		   "with a cap of 10 for applications without a row, they get 10 together");
	is_int(sc.apps[api].allocation, 70, "and api gets the other 70");
	/* a cap they do not reach changes nothing */
	allocate_unconfigured_capped(100, &order, work);
	ok(sc.apps[api].allocation < 5, "a cap above what they would take changes nothing (api %d)",
	   sc.apps[api].allocation);
	/* they demand little: the cap does not bind, api takes the rest */
	for (int p = 1; p < sc.npods; p++)
		sc.pods[p].demand = 1;
	together = allocate_unconfigured_capped(10, &order, work);
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
				sc.pods[p].demand = random_demand();
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
		f->pods[p].app = (int32_t) (rnd_below((uint32_t) napps));
		f->pods[p].id = f->ids[p];
	}
}

static void
fleet_demands(Fleet *f)
{
	for (int p = 0; p < f->npods; p++)
		f->pods[p].demand = rnd_below(10) == 0 ? CB_UNBOUNDED : (int) (1 + rnd_below(12));
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

static void
test_fleet(int npods, int32_t budget)
{
	Fleet		f;
	double		t0,
				order_ms,
				best = 1e9;
	const char *why = NULL;
	int64_t		allocated = 0;

	fleet_make(&f, 1000, npods);
	fleet_demands(&f);
	t0 = now_seconds();
	cb_allocation_order(f.apps, f.napps, f.pods, f.npods, NULL, 0, &f.order, f.work);
	order_ms = (now_seconds() - t0) * 1e3;
	for (int round = 0; round < 5 && !why; round++)
	{
		double		ms;

		fleet_demands(&f);		/* every pod reports a new demand */
		t0 = now_seconds();
		allocated = cb_allocate_ordered(budget, CB_UNBOUNDED, f.apps, f.napps, f.pods, f.npods,
										NULL, 0, &f.order, f.work);
		ms = (now_seconds() - t0) * 1e3;
		if (ms < best)
			best = ms;
		why = check_allocation(f.apps, f.napps, f.pods, f.npods, budget, allocated);
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
	rnd_init("allocation_test", rnd_fresh_seed());
	test_cases();
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
