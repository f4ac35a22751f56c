/*
 * fuzz_allocation.c -- libFuzzer target for the budget arithmetic and the
 * admission rule (extension/allocation.c).
 *
 * An input whose first byte is below 0xE0 is a scenario: up to 8
 * applications (minimum, cap, weight, with or without a row), up to 24
 * pods with demands, up to 32 pool sessions with demands, a budget and a
 * cap for the applications without a row.  It is shared
 *
 *   A. by cb_allocation_order + cb_allocate_ordered without sessions, with
 *      the cap for the applications without a row;
 *   B. by cb_allocate, and C. by cb_allocate_ordered without that cap,
 *      which must agree exactly;
 *   D. by cb_allocate_ordered with the sessions, and again with the same
 *      order and work area (nothing may linger in it);
 *   E. with one session per pod demanding what the pod demands in A, which
 *      must give A's allocation exactly;
 *   F. with apps, pods and sessions shuffled, which must give the same
 *      result item for item.
 *
 * Every result satisfies check_allocation (test/lib/allocation_check.h):
 * with sessions, each pod's demand counted as its sessions' need (each
 * session at least at its part of the pod's minimum); with the cap of the
 * applications without a row binding, each of them counted as capped at
 * what it got.  That cap: the run without it is unchanged if they took no
 * more than it, else they hold exactly the cap (or their minimums, if
 * those exceed it) and are max-min fair among themselves.  Sessions: a
 * pod's demand is the sum of its sessions'; their shares add up to the
 * pod's share and their parts of the minimum to the pod's, split evenly
 * and the larger parts first in token order; each holds at least its part
 * and no more than its demand unless at its part; no session is below its
 * demand while another of its pod holds more than its part and one unit
 * above it, the extra units going in ascending token order; when the pod's
 * share covers its need every session holds exactly its demand (or its
 * part); and no session is below its demand while its application is
 * below its cap and the budget has room.  Work areas and order arrays are
 * allocated at exactly the size the functions ask for, so AddressSanitizer
 * sees any overrun.
 *
 * An input whose first byte is 0xE0 or above drives cb_admission_verdict:
 * up to 4 applications connect and disconnect one at a time, each connect
 * counted first and judged; every verdict equals the rule written the
 * other way round (what the connection would join, before it is counted),
 * a refusal stays a refusal with one connection more everywhere, an
 * application within its minimum is refused only by the budget or the cap
 * of the applications without a row, and after every step the governed
 * connections fit the budget, each application its cap, those without a
 * row their cap, and the committed minimums the budget whenever they
 * could.
 */
#include "../../extension/allocation.h"
#include "../lib/allocation_check.h"
#include "fuzz.h"

#define UNB CB_UNBOUNDED
#define MAX_APPS 8
#define MAX_PODS 24
#define MAX_SESSIONS 32
#define MAX_SESSION_DEMAND 1000000	/* CB_MAX_DEMAND: what a pool may report */

typedef struct Scenario
{
	int32_t		budget;
	int32_t		unconfigured_cap;
	int			napps,
				npods,
				nsessions;
	CbAllocApp	apps[MAX_APPS];
	CbAllocPod	pods[MAX_PODS];
	CbAllocSession sessions[MAX_SESSIONS];
} Scenario;

static char app_names[MAX_APPS][8];
static char pod_ids[MAX_PODS][8];

static int64_t
max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* ---------------------------------------------------------------------
 * Decoding
 * ---------------------------------------------------------------------
 */

static void
decode(FuzzInput *in, uint8_t mode, Scenario *s)
{
	memset(s, 0, sizeof(*s));
	switch (mode & 3)
	{
		case 0:
			s->budget = (int32_t) fz_number(in, 63);
			break;
		case 1:
			s->budget = (int32_t) fz_number(in, 1000);
			break;
		case 2:
			s->budget = (int32_t) fz_number(in, INT32_MAX);
			break;
		default:
			s->budget = -(int32_t) fz_number(in, 10);
			break;
	}
	s->unconfigured_cap = (mode & 4) ? (int32_t) fz_number(in, INT32_MAX) : UNB;

	s->napps = fz_byte(in) % (MAX_APPS + 1);
	for (int a = 0; a < s->napps; a++)
	{
		CbAllocApp *app = &s->apps[a];
		uint8_t		flags = fz_byte(in);
		int64_t		min = (flags & 4) ? fz_number(in, INT32_MAX) : 0;

		/* unique names whose order is not the input order */
		snprintf(app_names[a], sizeof(app_names[a]), "%c%d", 'a' + (flags >> 5), a);
		app->name = app_names[a];
		app->min_connections = (int32_t) min;
		app->max_connections = (flags & 1) ? UNB
			: (int32_t) (min + fz_number(in, INT32_MAX - min));
		app->weight = (int32_t) (1 + fz_number(in, INT32_MAX - 1));
		app->unconfigured = (flags & 2) ? 1 : 0;
	}

	s->npods = s->napps > 0 ? fz_byte(in) % (MAX_PODS + 1) : 0;
	for (int p = 0; p < s->npods; p++)
	{
		CbAllocPod *pod = &s->pods[p];
		uint8_t		b = fz_byte(in);

		snprintf(pod_ids[p], sizeof(pod_ids[p]), "%c%d", 'a' + (fz_byte(in) % 8), p);
		pod->app = (b & 0x7F) % s->napps;
		pod->id = pod_ids[p];
		pod->demand = (b & 0x80) ? UNB : (int32_t) fz_number(in, INT32_MAX);
	}

	s->nsessions = s->npods > 0 ? fz_byte(in) % (MAX_SESSIONS + 1) : 0;
	for (int i = 0; i < s->nsessions; i++)
	{
		CbAllocSession *session = &s->sessions[i];
		uint8_t		b = fz_byte(in);

		session->pod = (b & 0x7F) % s->npods;
		/* unique within the pod, in any order */
		session->token = (uint64_t) fz_byte(in) << 56 | (uint64_t) i;
		session->demand = (b & 0x80) ? UNB : (int32_t) fz_number(in, MAX_SESSION_DEMAND);
	}
}

/* ---------------------------------------------------------------------
 * Running
 * ---------------------------------------------------------------------
 */

/* Arrays of exactly n elements (at least one), so that ASan sees overruns. */
static int32_t *
ints(int n)
{
	return malloc(sizeof(int32_t) * (size_t) (n > 0 ? n : 1));
}

/* Order and allocate s in place; nsessions 0 shares without sessions. */
static int64_t
allocate(Scenario *s, int32_t unconfigured_cap, int nsessions)
{
	CbAllocOrder order = {ints(s->napps), ints(s->npods), ints(nsessions)};
	void	   *work = malloc(cb_allocation_work_size_sessions(s->napps, s->npods, nsessions));
	int64_t		allocated;

	cb_allocation_order(s->apps, s->napps, s->pods, s->npods, s->sessions, nsessions,
						&order, work);
	allocated = cb_allocate_ordered(s->budget, unconfigured_cap, s->apps, s->napps,
									s->pods, s->npods, s->sessions, nsessions, &order, work);
	if (nsessions > 0)
	{
		/* the same order and work area again: the same result */
		Scenario	again = *s;
		int64_t		allocated_again;

		allocated_again = cb_allocate_ordered(again.budget, unconfigured_cap, again.apps,
											  again.napps, again.pods, again.npods,
											  again.sessions, nsessions, &order, work);
		FZ_CHECK(allocated_again == allocated && memcmp(&again, s, sizeof(again)) == 0,
				 "allocating again with the same order and work area differs");
	}
	free(work);
	free(order.app_order);
	free(order.pod_order);
	free(order.session_order);
	return allocated;
}

/* ---------------------------------------------------------------------
 * Checking
 * ---------------------------------------------------------------------
 */

/* The sessions of pod p in token order; returns how many. */
static int
sessions_of(const Scenario *s, int p, int *idx)
{
	int			n = 0;

	for (int i = 0; i < s->nsessions; i++)
		if (s->sessions[i].pod == p)
		{
			int			k = n++;

			while (k > 0 && s->sessions[idx[k - 1]].token > s->sessions[i].token)
			{
				idx[k] = idx[k - 1];
				k--;
			}
			idx[k] = i;
		}
	return n;
}

/* An application's demand as check_allocation counts it ("need"). */
static int64_t
app_need(const CbAllocPod *pods, int npods, int a)
{
	int64_t		need = 0;

	for (int p = 0; p < npods; p++)
		if (pods[p].app == a)
		{
			if (pods[p].demand < 0)
				return UNB;
			need += max64(pods[p].demand, pods[p].min_share);
		}
	return need;
}

/* Is application a below its cap (as given in apps) with budget to spare? */
static int
has_room(const CbAllocApp *apps, int a, int64_t total, int32_t budget)
{
	return (apps[a].max_connections < 0 || apps[a].allocation < apps[a].max_connections) &&
		total < budget;
}

static void
check_sessions(const Scenario *s, const CbAllocApp *apps, int64_t total)
{
	for (int p = 0; p < s->npods; p++)
	{
		const CbAllocPod *pod = &s->pods[p];
		int			idx[MAX_SESSIONS];
		int			n = sessions_of(s, p, idx);
		int64_t		sum_share = 0,
					sum_min = 0,
					need = 0;
		int32_t		lowest_unsat = INT32_MAX,
					highest = INT32_MIN;
		int			seen_base = 0;

		if (n == 0)
			continue;
		for (int k = 0; k < n; k++)
		{
			const CbAllocSession *x = &s->sessions[idx[k]];
			int			unsat = x->demand < 0 || x->share < x->demand;

			sum_share += x->share;
			sum_min += x->min_share;
			if (need >= 0)
				need = x->demand < 0 ? UNB : need + max64(x->demand, x->min_share);
			FZ_CHECK(x->share >= x->min_share,
					 "session %d of pod %s holds %d, below its part of the minimum %d",
					 idx[k], pod->id, x->share, x->min_share);
			FZ_CHECK(x->demand < 0 || x->share <= x->min_share || x->share <= x->demand,
					 "session %d of pod %s holds %d, above its demand %d and its part %d",
					 idx[k], pod->id, x->share, x->demand, x->min_share);
			/* the parts: even, the larger ones first in token order */
			FZ_CHECK(x->min_share == pod->min_share / n + (k < pod->min_share % n ? 1 : 0),
					 "session %d of pod %s has part %d of the pod's %d over %d sessions "
					 "(position %d in token order)", idx[k], pod->id, x->min_share,
					 pod->min_share, n, k);
			if (x->share > x->min_share && x->share > highest)
				highest = x->share;
			if (unsat && x->share < lowest_unsat)
				lowest_unsat = x->share;
			/* the key one: below its demand while its app and the budget have room */
			FZ_CHECK(!unsat || !has_room(apps, pod->app, total, s->budget),
					 "session %d of pod %s of %s holds %d below its demand %d while %s is below "
					 "its cap (%d, holding %d) and %lld of the budget of %d is free",
					 idx[k], pod->id, apps[pod->app].name, x->share, x->demand,
					 apps[pod->app].name, apps[pod->app].max_connections,
					 apps[pod->app].allocation, (long long) (s->budget - total), s->budget);
		}
		FZ_CHECK(sum_share == pod->share, "the sessions of pod %s hold %lld of its share %d",
				 pod->id, (long long) sum_share, pod->share);
		FZ_CHECK(sum_min == pod->min_share,
				 "the sessions' parts of pod %s's minimum add up to %lld, not %d",
				 pod->id, (long long) sum_min, pod->min_share);
		FZ_CHECK(lowest_unsat == INT32_MAX || highest <= lowest_unsat + 1,
				 "the sessions of pod %s are not max-min fair: one holds %d while another "
				 "wants more at %d", pod->id, highest, lowest_unsat);
		for (int k = 0; k < n && lowest_unsat != INT32_MAX; k++)
		{
			const CbAllocSession *x = &s->sessions[idx[k]];
			int			unsat = x->demand < 0 || x->share < x->demand;

			if (unsat && x->share == lowest_unsat)
				seen_base = 1;
			else
				FZ_CHECK(!(seen_base && x->share == lowest_unsat + 1 && x->share > x->min_share),
						 "the units lost to rounding in pod %s did not go in ascending token order",
						 pod->id);
		}
		/* the pod has room for every session's demand: each holds it */
		for (int k = 0; k < n && need >= 0 && pod->share >= need; k++)
		{
			const CbAllocSession *x = &s->sessions[idx[k]];

			FZ_CHECK(x->share == max64(x->demand, x->min_share),
					 "pod %s's share %d covers its sessions' need %lld, yet session %d holds %d "
					 "of its demand %d (part %d)", pod->id, pod->share, (long long) need,
					 idx[k], x->share, x->demand, x->min_share);
		}
	}
}

/*
 * Check an allocation of s (with its sessions or without) that returned
 * "allocated", under the cap "unconfigured_cap" for the applications
 * without a row.
 */
static void
check_result(const Scenario *s, int32_t unconfigured_cap, int with_sessions, int64_t allocated)
{
	CbAllocApp	apps[MAX_APPS];
	CbAllocPod	pods[MAX_PODS];
	int64_t		total = 0,
				unconfigured = 0,
				unconfigured_guaranteed = 0;
	int			binds = 0;
	const char *why;

	memcpy(apps, s->apps, sizeof(apps));
	memcpy(pods, s->pods, sizeof(pods));
	for (int a = 0; a < s->napps; a++)
	{
		total += apps[a].allocation;
		if (apps[a].unconfigured)
		{
			unconfigured += apps[a].allocation;
			unconfigured_guaranteed += apps[a].guaranteed;
		}
	}

	if (with_sessions)
		for (int p = 0; p < s->npods; p++)
		{
			int			idx[MAX_SESSIONS];
			int			n = sessions_of(s, p, idx);
			int64_t		demand = 0,
						need = 0;

			for (int k = 0; k < n; k++)
			{
				const CbAllocSession *x = &s->sessions[idx[k]];

				if (x->demand < 0 || demand < 0)
					demand = need = UNB;
				else
				{
					demand += x->demand;
					need += max64(x->demand, x->min_share);
				}
			}
			FZ_CHECK(s->pods[p].demand == (demand > INT32_MAX ? INT32_MAX : demand),
					 "pod %s demands %d, its sessions %lld", s->pods[p].id, s->pods[p].demand,
					 (long long) demand);
			/* what bounds the pod: each session at least at its part */
			pods[p].demand = (int32_t) (need > INT32_MAX ? INT32_MAX : need);
		}

	if (unconfigured_cap >= 0)
	{
		FZ_CHECK(unconfigured <= max64(unconfigured_cap, unconfigured_guaranteed),
				 "the applications without a row hold %lld together, above their cap %d "
				 "(their minimums %lld)", (long long) unconfigured, unconfigured_cap,
				 (long long) unconfigured_guaranteed);
		binds = unconfigured >= unconfigured_cap;
	}
	if (binds)
	{
		for (int a = 0; a < s->napps; a++)
			if (apps[a].unconfigured)
			{
				FZ_CHECK(apps[a].max_connections < 0 ||
						 apps[a].allocation <= apps[a].max_connections,
						 "%s holds %d above its cap %d", apps[a].name, apps[a].allocation,
						 apps[a].max_connections);
				/* at the cap together: each is saturated where it is */
				apps[a].max_connections = apps[a].allocation;
			}
		/* ...and max-min fair among themselves */
		for (int i = 0; i < s->napps; i++)
		{
			const CbAllocApp *ai = &s->apps[i];
			int64_t		upper = ai->max_connections >= 0 ? ai->max_connections : INT64_MAX;
			int64_t		need = app_need(pods, s->npods, i);
			int64_t		ei = ai->allocation - ai->guaranteed;

			if (!ai->unconfigured || ai->live_pods == 0)
				continue;
			if (need >= 0 && need < upper)
				upper = need;
			if (ai->allocation >= upper)
				continue;
			for (int j = 0; j < s->napps; j++)
			{
				const CbAllocApp *aj = &s->apps[j];
				int64_t		ej = aj->allocation - aj->guaranteed;

				FZ_CHECK(j == i || !aj->unconfigured || aj->live_pods == 0 ||
						 (ej - 1) * ai->weight < (ei + 1) * aj->weight,
						 "unfair among the applications without a row: %s (w %d) has %lld "
						 "extra, %s (w %d) has %lld", ai->name, ai->weight, (long long) ei,
						 aj->name, aj->weight, (long long) ej);
			}
		}
	}

	why = check_allocation(apps, s->napps, pods, s->npods, s->budget, allocated);
	FZ_CHECK(why == NULL, "%s (budget %d, cap of the applications without a row %d, %s)",
			 why, s->budget, unconfigured_cap, with_sessions ? "with sessions" : "without sessions");
	if (with_sessions)
		check_sessions(s, apps, total);
}

/* Where s has the application (pods: the pod) of that name, or -1. */
static int
named(const Scenario *s, int pods, const char *name)
{
	for (int i = 0; i < (pods ? s->npods : s->napps); i++)
		if (strcmp(pods ? s->pods[i].id : s->apps[i].name, name) == 0)
			return i;
	return -1;
}

/* x and y (the same items, perhaps in another order) got the same result. */
static void
check_same(const Scenario *x, const Scenario *y, const char *what)
{
	for (int a = 0; a < x->napps; a++)
	{
		int			b = named(y, 0, x->apps[a].name);

		FZ_CHECK(b >= 0, "%s: application %s is missing", what, x->apps[a].name);
		FZ_CHECK(x->apps[a].allocation == y->apps[b].allocation &&
				 x->apps[a].guaranteed == y->apps[b].guaranteed &&
				 x->apps[a].live_pods == y->apps[b].live_pods &&
				 x->apps[a].demand == y->apps[b].demand,
				 "%s: application %s gets %d (guaranteed %d, demand %lld), and %d "
				 "(guaranteed %d, demand %lld)", what, x->apps[a].name, x->apps[a].allocation,
				 x->apps[a].guaranteed, (long long) x->apps[a].demand, y->apps[b].allocation,
				 y->apps[b].guaranteed, (long long) y->apps[b].demand);
	}
	for (int p = 0; p < x->npods; p++)
	{
		int			q = named(y, 1, x->pods[p].id);

		FZ_CHECK(q >= 0, "%s: pod %s is missing", what, x->pods[p].id);
		FZ_CHECK(x->pods[p].share == y->pods[q].share &&
				 x->pods[p].min_share == y->pods[q].min_share &&
				 x->pods[p].demand == y->pods[q].demand,
				 "%s: pod %s gets %d (part %d), and %d (part %d)", what, x->pods[p].id,
				 x->pods[p].share, x->pods[p].min_share, y->pods[q].share, y->pods[q].min_share);
	}
	for (int i = 0; i < x->nsessions; i++)
	{
		int			k = 0;

		while (k < y->nsessions &&
			   !(x->sessions[i].token == y->sessions[k].token &&
				 strcmp(x->pods[x->sessions[i].pod].id, y->pods[y->sessions[k].pod].id) == 0))
			k++;
		FZ_CHECK(k < y->nsessions, "%s: session %d is missing", what, i);
		FZ_CHECK(x->sessions[i].share == y->sessions[k].share &&
				 x->sessions[i].min_share == y->sessions[k].min_share,
				 "%s: session %d of pod %s gets %d (part %d), and %d (part %d)", what, i,
				 x->pods[x->sessions[i].pod].id, x->sessions[i].share,
				 x->sessions[i].min_share, y->sessions[k].share, y->sessions[k].min_share);
	}
}

/* s with its apps, pods and sessions in another order. */
static void
shuffle(const Scenario *s, Scenario *out, uint64_t *seed)
{
	int			app_perm[MAX_APPS],
				pod_perm[MAX_PODS],
				session_perm[MAX_SESSIONS];

	*out = *s;
	fz_permutation(app_perm, s->napps, seed);
	fz_permutation(pod_perm, s->npods, seed);
	fz_permutation(session_perm, s->nsessions, seed);
	for (int a = 0; a < s->napps; a++)
		out->apps[app_perm[a]] = s->apps[a];
	for (int p = 0; p < s->npods; p++)
	{
		out->pods[pod_perm[p]] = s->pods[p];
		out->pods[pod_perm[p]].app = app_perm[s->pods[p].app];
	}
	for (int i = 0; i < s->nsessions; i++)
	{
		out->sessions[session_perm[i]] = s->sessions[i];
		out->sessions[session_perm[i]].pod = pod_perm[s->sessions[i].pod];
	}
}

static void
fuzz_allocation(FuzzInput *in, uint8_t mode, uint64_t seed)
{
	static Scenario input,
				a,
				b,
				c,
				d,
				e,
				f;
	int64_t		allocated;
	int64_t		unconfigured_uncapped = 0,
				unconfigured_capped = 0,
				unconfigured_guaranteed = 0;
	void	   *work;

	decode(in, mode, &input);

	/* A: without sessions, with the cap of the applications without a row */
	a = input;
	a.nsessions = 0;
	allocated = allocate(&a, a.unconfigured_cap, 0);
	check_result(&a, a.unconfigured_cap, 0, allocated);

	/* B and C: cb_allocate is cb_allocate_ordered without that cap */
	b = input;
	b.nsessions = 0;
	work = malloc(cb_allocation_work_size(b.napps, b.npods));
	allocated = cb_allocate(b.budget, b.apps, b.napps, b.pods, b.npods, work);
	free(work);
	check_result(&b, UNB, 0, allocated);
	c = input;
	c.nsessions = 0;
	FZ_CHECK(allocate(&c, UNB, 0) == allocated, "cb_allocate and cb_allocate_ordered return "
			 "different totals");
	check_same(&b, &c, "cb_allocate vs cb_allocate_ordered");

	/* the cap changes nothing unless they took more than it; else they hold it */
	if (input.unconfigured_cap >= 0)
	{
		for (int i = 0; i < input.napps; i++)
			if (input.apps[i].unconfigured)
			{
				unconfigured_uncapped += c.apps[i].allocation;
				unconfigured_capped += a.apps[i].allocation;
				unconfigured_guaranteed += a.apps[i].guaranteed;
			}
		if (unconfigured_uncapped <= input.unconfigured_cap)
			check_same(&a, &c, "a cap above what the applications without a row take");
		else
			FZ_CHECK(unconfigured_capped == max64(input.unconfigured_cap, unconfigured_guaranteed),
					 "the applications without a row would take %lld, above their cap %d, "
					 "and hold %lld under it (minimums %lld)", (long long) unconfigured_uncapped,
					 input.unconfigured_cap, (long long) unconfigured_capped,
					 (long long) unconfigured_guaranteed);
	}

	/* D: with the sessions */
	d = input;
	allocated = allocate(&d, d.unconfigured_cap, d.nsessions);
	check_result(&d, d.unconfigured_cap, d.nsessions > 0, allocated);

	/* E: one session per pod, demanding what the pod does, is the pod */
	e = input;
	e.nsessions = e.npods;
	for (int p = 0; p < e.npods; p++)
	{
		e.sessions[p].pod = p;
		e.sessions[p].token = (uint64_t) (e.npods - p);
		e.sessions[p].demand = input.pods[p].demand;
	}
	allocated = allocate(&e, e.unconfigured_cap, e.nsessions);
	check_result(&e, e.unconfigured_cap, e.nsessions > 0, allocated);
	for (int p = 0; p < e.npods; p++)
		e.pods[p].demand = input.pods[p].demand;
	e.nsessions = 0;
	check_same(&a, &e, "a pod vs a pod with one session of its demand");
	for (int p = 0; p < a.npods; p++)
		FZ_CHECK(e.sessions[p].share == e.pods[p].share &&
				 e.sessions[p].min_share == e.pods[p].min_share,
				 "a pod's only session holds %d (part %d) of the pod's %d (part %d)",
				 e.sessions[p].share, e.sessions[p].min_share, e.pods[p].share,
				 e.pods[p].min_share);

	/* F: the input order does not matter */
	shuffle(&input, &f, &seed);
	allocated = allocate(&f, f.unconfigured_cap, f.nsessions);
	check_same(&d, &f, "shuffled input");
}

/* ---------------------------------------------------------------------
 * Admission
 * ---------------------------------------------------------------------
 */

/*
 * The rule in other words: what the connection would join, before it is
 * counted.  Refused when its application already holds its cap, the
 * applications without a row (if it is one) already hold theirs, the
 * governed connections already fill the budget, or it is beyond its own
 * application's minimum while the minimums committed elsewhere, counting
 * it, no longer fit the budget.  In that order.
 */
static CbVerdict
reference_verdict(const CbAdmissionCounts *c)
{
	int64_t		mine_before = (int64_t) c->connections - 1;
	int64_t		governed_before = (int64_t) c->governed - 1;
	int64_t		unconfigured_before = (int64_t) c->unconfigured_connections - 1;

	if (c->cap != UNB && mine_before >= c->cap)
		return CB_OVER_CAP;
	if (c->unconfigured && c->unconfigured_cap != UNB &&
		unconfigured_before >= c->unconfigured_cap)
		return CB_OVER_UNCONFIGURED_CAP;
	if (governed_before >= c->budget)
		return CB_OVER_BUDGET;
	if (mine_before >= c->min_connections && c->committed > c->budget)
		return CB_OVER_MINIMUMS;
	return CB_ADMIT;
}

static void
check_verdict(const CbAdmissionCounts *c, CbVerdict *out)
{
	CbVerdict	v = cb_admission_verdict(c);
	CbVerdict	want = reference_verdict(c);
	CbAdmissionCounts more = *c;

	FZ_CHECK(v == want, "verdict %d, expected %d for connections %d (min %d, cap %d), "
			 "governed %d of budget %d, committed %d, unconfigured %d (%d of cap %d)",
			 v, want, c->connections, c->min_connections, c->cap, c->governed, c->budget,
			 c->committed, c->unconfigured, c->unconfigured_connections, c->unconfigured_cap);
	/* one more connection everywhere: a refusal stays one */
	more.connections++;
	more.governed++;
	more.committed++;
	more.unconfigured_connections++;
	FZ_CHECK(v == CB_ADMIT || cb_admission_verdict(&more) != CB_ADMIT,
			 "refused with %d connections, admitted with one more", c->connections);
	*out = v;
}

#define ADMISSION_APPS 4
#define ADMISSION_STEPS 256

static void
fuzz_admission(FuzzInput *in)
{
	int32_t		budget = (int32_t) fz_number(in, 300);
	int32_t		unconfigured_cap = (fz_byte(in) & 1) ? (int32_t) fz_number(in, 300) : UNB;
	int			napps = 1 + fz_byte(in) % ADMISSION_APPS;
	int32_t		min[ADMISSION_APPS],
				cap[ADMISSION_APPS],
				unconfigured[ADMISSION_APPS],
				conns[ADMISSION_APPS] = {0};
	int64_t		sum_min = 0;

	for (int a = 0; a < napps; a++)
	{
		uint8_t		flags = fz_byte(in);

		min[a] = (flags & 4) ? (int32_t) fz_number(in, 100) : 0;
		cap[a] = (flags & 1) ? UNB : min[a] + (int32_t) fz_number(in, 100);
		unconfigured[a] = (flags & 2) ? 1 : 0;
		sum_min += min[a];
	}
	for (int step = 0; step < ADMISSION_STEPS && fz_left(in) > 0; step++)
	{
		uint8_t		op = fz_byte(in);
		int			a = (op & 0x7F) % napps;
		int64_t		governed = 0,
					committed = 0,
					unconf = 0;
		CbAdmissionCounts c;
		CbVerdict	v;

		if (op & 0x80)
		{
			/* a connection of a closes */
			if (conns[a] > 0)
				conns[a]--;
			continue;
		}
		conns[a]++;				/* counted first */
		for (int i = 0; i < napps; i++)
		{
			governed += conns[i];
			committed += conns[i] > min[i] ? conns[i] : min[i];
			if (unconfigured[i])
				unconf += conns[i];
		}
		c.connections = conns[a];
		c.min_connections = min[a];
		c.cap = cap[a];
		c.governed = (int32_t) governed;
		c.budget = budget;
		c.committed = (int32_t) committed;
		c.unconfigured = unconfigured[a];
		c.unconfigured_connections = (int32_t) unconf;
		c.unconfigured_cap = unconfigured_cap;
		check_verdict(&c, &v);
		/* within its minimum: only the budget or the cap of those without a row */
		FZ_CHECK(v == CB_ADMIT || conns[a] > min[a] || sum_min > budget ||
				 v == CB_OVER_UNCONFIGURED_CAP,
				 "an application within its minimum (%d of %d) is refused (%d) although the "
				 "minimums (%lld) fit the budget %d", conns[a], min[a], v, (long long) sum_min,
				 budget);
		if (v != CB_ADMIT)
			conns[a]--;			/* uncounted */

		governed = committed = unconf = 0;
		for (int i = 0; i < napps; i++)
		{
			governed += conns[i];
			committed += conns[i] > min[i] ? conns[i] : min[i];
			if (unconfigured[i])
				unconf += conns[i];
			FZ_CHECK(cap[i] < 0 || conns[i] <= cap[i], "application %d holds %d above its cap %d",
					 i, conns[i], cap[i]);
		}
		FZ_CHECK(governed <= max64(budget, 0), "%lld governed connections in a budget of %d",
				 (long long) governed, budget);
		FZ_CHECK(unconfigured_cap < 0 || unconf <= unconfigured_cap,
				 "the applications without a row hold %lld above their cap %d",
				 (long long) unconf, unconfigured_cap);
		FZ_CHECK(sum_min > budget || committed <= budget,
				 "the committed minimums (%lld) exceed the budget %d", (long long) committed, budget);
	}

	/* and any counts at all */
	while (fz_left(in) >= 6)
	{
		CbAdmissionCounts c;
		CbVerdict	v;

		c.connections = 1 + (int32_t) fz_number(in, 1000);
		c.min_connections = (int32_t) fz_number(in, 1000);
		c.cap = (fz_byte(in) & 1) ? UNB : (int32_t) fz_number(in, 1000);
		c.governed = c.connections + (int32_t) fz_number(in, 1000);
		c.budget = (int32_t) fz_number(in, 1000);
		c.committed = (int32_t) fz_number(in, 3000);
		c.unconfigured = fz_byte(in) & 1;
		c.unconfigured_connections = (int32_t) fz_number(in, 1000);
		c.unconfigured_cap = (fz_byte(in) & 1) ? UNB : (int32_t) fz_number(in, 1000);
		check_verdict(&c, &v);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FuzzInput	in = fz_input(data, size);
	uint8_t		mode = fz_byte(&in);
	uint64_t	seed = 1469598103934665603ull;

	/* the shuffles are seeded by the whole input */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ull;
	if (mode >= 0xE0)
		fuzz_admission(&in);
	else
		fuzz_allocation(&in, mode, seed);
	return 0;
}
