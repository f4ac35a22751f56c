/*
 * pool_contention.c -- more threads than connections: 32 threads on 4
 * connections with random holds, the bound on barging (a thread taking
 * back the connection it released while others wait), FIFO order among
 * the threads that really wait, a thread that does not come back for its
 * kept connection, a thread handed a connection moving to the CPU it was
 * released on (follow_cpu) without its affinity mask changing, and acquire
 * timeouts and max_waiters under contention.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#define CBPOOL_TEST_INTERNALS	/* white box: the implementation compiled in */
#include "common.h"

#define THREADS 32
#define CONNS 4
#define SECONDS 4

static PGconn *admin;

static int	two_cpus(int *a, int *b);

/* ---- who holds which connection ---- */

/*
 * Every connection the pool hands out is claimed here by the thread that
 * got it and given up just before it is released: a claim that finds the
 * connection claimed means two threads held it at once.
 */
typedef struct Claim
{
	PGconn	   *conn;
	long		owner;
} Claim;

static Claim claims[64];
static int	nclaims;
static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static long double_holds;

static Claim *
claim_of(PGconn *conn)
{
	Claim	   *c = NULL;

	pthread_mutex_lock(&claims_lock);
	for (int i = 0; i < nclaims; i++)
		if (claims[i].conn == conn)
			c = &claims[i];
	if (!c && nclaims < 64)
	{
		c = &claims[nclaims++];
		c->conn = conn;
		c->owner = 0;
	}
	pthread_mutex_unlock(&claims_lock);
	return c;
}

static void
claim(PGconn *conn, long me)
{
	Claim	   *c = claim_of(conn);
	long		free_ = 0;

	if (!c || !__atomic_compare_exchange_n(&c->owner, &free_, me, 0,
										   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		__atomic_fetch_add(&double_holds, 1, __ATOMIC_RELAXED);
}

static void
unclaim(PGconn *conn)
{
	Claim	   *c = claim_of(conn);

	if (c)
		__atomic_store_n(&c->owner, 0, __ATOMIC_RELEASE);
}

/* ---- 32 threads on 4 connections ---- */

typedef struct Worker
{
	pthread_t	thread;
	long		id;
	cbpool	   *pool;
	int			timeout_ms;
	int			max_hold_ms;	/* holds are 0 .. max_hold_ms */
	int		   *stop;
	/* out */
	long		served;
	long		timeouts;
	long		rejected;
	long		other_errors;
	long		failed_queries;
	double		max_wait;		/* seconds, of any acquire */
	double		max_timeout_wait;	/* seconds, of an acquire that timed out */
	double		min_timeout_wait;
	double		max_rejected_wait;
	int			mask_changed;	/* its CPU affinity mask differed at the end */
} Worker;

static void *
worker_main(void *arg)
{
	Worker	   *w = arg;
	unsigned	seed = (unsigned) w->id * 2654435761u;
	cpu_set_t	mask_before,
				mask_after;

	sched_getaffinity(0, sizeof(mask_before), &mask_before);
	w->min_timeout_wait = 1e9;
	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED))
	{
		double		t0 = now_seconds();
		PGconn	   *conn = CBPOOL_ACQUIRE(w->pool, w->timeout_ms);
		double		waited = now_seconds() - t0;
		unsigned	r = rand_r(&seed);

		if (waited > w->max_wait)
			w->max_wait = waited;
		if (!conn)
		{
			cbpool_error e = cbpool_last_error();

			if (e == CBPOOL_ETIMEOUT)
			{
				w->timeouts++;
				if (waited > w->max_timeout_wait)
					w->max_timeout_wait = waited;
				if (waited < w->min_timeout_wait)
					w->min_timeout_wait = waited;
			}
			else if (e == CBPOOL_EBACKPRESSURE)
			{
				w->rejected++;
				if (waited > w->max_rejected_wait)
					w->max_rejected_wait = waited;
				sleep_ms(1);
			}
			else
				w->other_errors++;
			continue;
		}
		claim(conn, w->id);
		w->served++;
		switch (r % 4)
		{
			case 0:
				if (!query_works(conn))
					w->failed_queries++;
				break;
			case 1:
				/* an open transaction: the release rolls it back */
				PQclear(PQexec(conn, "BEGIN"));
				if (!query_works(conn))
					w->failed_queries++;
				break;
			case 2:
				if (w->max_hold_ms > 0)
					sleep_ms((int) (r / 4 % (unsigned) (w->max_hold_ms + 1)));
				break;
			default:
				break;			/* straight back */
		}
		unclaim(conn);
		cbpool_release(w->pool, conn);
	}
	sched_getaffinity(0, sizeof(mask_after), &mask_after);
	w->mask_changed = !CPU_EQUAL(&mask_before, &mask_after);
	return NULL;
}

/* What the workers of run_workers() did, in all. */
typedef struct Totals
{
	long		served;
	long		timeouts;
	long		rejected;
	long		other_errors;
	long		failed_queries;
	long		masks_changed;
	long		least_served;	/* by one worker */
	long		most_served;
	double		max_wait;		/* seconds, of any acquire */
	double		min_timeout_wait;	/* of an acquire that timed out (1e9: none) */
	double		max_timeout_wait;
	double		max_rejected_wait;
	int			max_waiters_seen;	/* in the pool's stats, sampled */
	cbpool_stats_t stats;		/* the pool's, at the end */
} Totals;

/*
 * Run THREADS workers for SECONDS, each acquire waiting up to timeout_ms
 * and each hold up to max_hold_ms, from no claims and no double holds;
 * what they did, in all.
 */
static Totals
run_workers(cbpool *pool, int timeout_ms, int max_hold_ms)
{
	Worker		workers[THREADS];
	Totals		t = {.least_served = -1, .min_timeout_wait = 1e9};
	int			stop = 0;
	double		end;
	cbpool_stats_t s;

	nclaims = 0;
	double_holds = 0;
	for (long i = 0; i < THREADS; i++)
	{
		memset(&workers[i], 0, sizeof(Worker));
		workers[i].id = i + 1;
		workers[i].pool = pool;
		workers[i].timeout_ms = timeout_ms;
		workers[i].max_hold_ms = max_hold_ms;
		workers[i].stop = &stop;
		pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
	}
	end = now_seconds() + SECONDS;
	while (now_seconds() < end)
	{
		cbpool_stats(pool, &s);
		if (s.waiters > t.max_waiters_seen)
			t.max_waiters_seen = s.waiters;
		sleep_ms(5);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < THREADS; i++)
	{
		Worker	   *w = &workers[i];

		pthread_join(w->thread, NULL);
		t.served += w->served;
		t.timeouts += w->timeouts;
		t.rejected += w->rejected;
		t.other_errors += w->other_errors;
		t.failed_queries += w->failed_queries;
		t.masks_changed += w->mask_changed;
		if (t.least_served < 0 || w->served < t.least_served)
			t.least_served = w->served;
		if (w->served > t.most_served)
			t.most_served = w->served;
		if (w->max_wait > t.max_wait)
			t.max_wait = w->max_wait;
		if (w->min_timeout_wait < t.min_timeout_wait)
			t.min_timeout_wait = w->min_timeout_wait;
		if (w->max_timeout_wait > t.max_timeout_wait)
			t.max_timeout_wait = w->max_timeout_wait;
		if (w->max_rejected_wait > t.max_rejected_wait)
			t.max_rejected_wait = w->max_rejected_wait;
	}
	cbpool_stats(pool, &t.stats);
	return t;
}

/* A pool that keeps CONNS connections open, once they are (up to 5 s);
   whether they were into *filled, if not NULL. */
static cbpool *
open_full(cbpool_config *cfg, int *filled)
{
	cbpool	   *pool;
	cbpool_stats_t s;
	int			full;

	cfg->max_size = CONNS;
	cfg->min_idle = CONNS;
	pool = open_or_bail(cfg);
	full = wait_stat(pool, s.total == CONNS, 5000);
	if (filled)
		*filled = full;
	return pool;
}

static void
test_many_threads(void)
{
	cbpool_config cfg = test_config("contention", "pod-many");
	cbpool	   *pool;
	Totals		t;
	int			filled;
	cbpool_stats_t s;

	cfg.leak_threshold_ms = 3000;
	pool = open_full(&cfg, &filled);
	ok(filled, "the pool holds %d connections", CONNS);

	t = run_workers(pool, 5000, 2);
	s = t.stats;
	diag("%d threads on %d connections for %d s: %ld acquires, per thread %ld to %ld "
		 "(fairness %.2f), longest wait %.0f ms, %llu hand-offs, %llu taken back, "
		 "%llu expired, %llu moved to their connection's CPU, p50 %llu us, p99 %llu us",
		 THREADS, CONNS, SECONDS, t.served, t.least_served, t.most_served,
		 t.most_served ? (double) t.least_served / t.most_served : 0.0, t.max_wait * 1000,
		 (unsigned long long) s.handoffs, (unsigned long long) s.barged_acquires,
		 (unsigned long long) s.barges_expired, (unsigned long long) s.handoffs_moved,
		 (unsigned long long) s.acquire_wait_us_p50,
		 (unsigned long long) s.acquire_wait_us_p99);
	ok(t.least_served > 0, "every one of the %d threads was served (the least served got %ld)",
	   THREADS, t.least_served);
	ok(t.least_served * 10 >= t.most_served,
	   "no thread got more than 10 times the connections of another (%ld to %ld)",
	   t.least_served, t.most_served);
	is_int(t.timeouts + t.other_errors + t.rejected, 0,
		   "no acquire timed out or failed: every wait stayed within the bound, far "
		   "below the 5 s acquire timeout");
	ok(t.max_wait < 5.0 + 1.0, "no acquire waited longer than its timeout (longest %.3f s)",
	   t.max_wait);
	is_int(double_holds, 0, "no connection was held by two threads at once");
	is_int(t.failed_queries, 0, "every query on a handed-out connection worked");
	is_int(s.acquired, t.served, "the pool counted exactly the acquires the threads made");
	ok(s.total <= CONNS && t.max_waiters_seen > 0,
	   "threads waited (up to %d at once) on at most %d connections", t.max_waiters_seen,
	   CONNS);
	ok(s.handoffs > 0 && s.barged_acquires > 0,
	   "connections went both ways: handed to waiters (%llu) and taken straight back (%llu)",
	   (unsigned long long) s.handoffs, (unsigned long long) s.barged_acquires);
	is_int(s.leaks_detected, 0, "no connection was held long enough to look leaked");
	ok(s.handoffs_moved <= s.handoffs,
	   "threads moved to their connection's CPU only after hand-offs (%llu of %llu)",
	   (unsigned long long) s.handoffs_moved, (unsigned long long) s.handoffs);
	is_int(t.masks_changed, 0, "no thread's CPU affinity mask changed");
	{
		int			a,
					b;

		if (two_cpus(&a, &b))
			ok(s.handoffs_moved > 0,
			   "with two CPUs, some hand-offs moved their thread to the CPU its "
			   "connection was released on");
		else
			skip(1, "one CPU: no thread to move");
	}
	ok(wait_stat(pool, s.in_use == 0 && s.waiters == 0 && s.idle == s.total, 5000),
	   "afterwards nothing is in use and nobody waits (in use %d, idle %d, total %d)",
	   s.in_use, s.idle, s.total);
	{
		char		buf[16384];

		cbpool_prometheus(pool, buf, sizeof(buf));
		ok(strstr(buf, "# TYPE cbpool_handoffs_total counter\n") &&
		   strstr(buf, "# TYPE cbpool_barged_acquires_total counter\n") &&
		   strstr(buf, "# TYPE cbpool_barges_expired_total counter\n") &&
		   strstr(buf, "# TYPE cbpool_handoffs_moved_total counter\n") &&
		   strstr(buf, "cbpool_acquire_wait_seconds{application=\"contention\","
				  "pod=\"pod-many\",quantile=\"0.99\"}"),
		   "the Prometheus text has the hand-off and take-back counters and the wait quantiles");
	}
	cbpool_close(pool);
}

/* ---- the bound, white box: one connection, one cycling thread ---- */

typedef struct Cycler
{
	cbpool	   *pool;
	int			stop;
	long		cycles;
	long		failures;
} Cycler;

/* Acquire, run a query, release, again at once: a thread that comes
   straight back, so it may take its connection back while others wait (and
   holds it most of the time, so that others do wait). */
static void *
cycler_main(void *arg)
{
	Cycler	   *c = arg;

	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED))
	{
		PGconn	   *conn = cbpool_acquire(c->pool, 10000);

		if (!conn)
		{
			c->failures++;
			continue;
		}
		__atomic_fetch_add(&c->cycles, 1, __ATOMIC_RELAXED);
		if (!query_works(conn))
			c->failures++;
		/* white box: it does come straight back, even when a sanitizer on a
		   loaded machine makes it miss the 100 us */
		cbpool__came_back = 1;
		cbpool_release(c->pool, conn);
	}
	return NULL;
}

static void
test_bound(int barge_limit)
{
	cbpool_config cfg = test_config("contention", "pod-bound");
	cbpool	   *pool;
	Cycler		cycler = {0};
	pthread_t	thread;
	int			rounds = 20,
				served = 0,
				most = 0,
				least = -1;
	uint64_t	handoffs0;
	cbpool_stats_t s;

	cfg.max_size = 1;
	cfg.barge_limit = barge_limit;
	cfg.validate_idle_ms = -1;
	pool = open_or_bail(&cfg);
	cycler.pool = pool;
	pthread_create(&thread, NULL, cycler_main, &cycler);
	handoffs0 = stats_of(pool).handoffs;

	/*
	 * Each round this thread waits for the only connection while the
	 * cycler keeps taking it back.  Take-backs happen only while someone
	 * waits, and nobody else waits before this thread's acquire or while
	 * it holds the connection, so the take-backs counted between its
	 * acquire call and its return are exactly those that overtook it.
	 */
	for (int i = 0; i < rounds; i++)
	{
		uint64_t	before;
		uint64_t	overtaken;
		PGconn	   *conn;

		/*
		 * A loaded machine can deschedule the cycler for whole rounds; go
		 * on (up to 25 times as long) until it has overtaken this thread
		 * at least once, so that the bound is tested against something.
		 */
		if (i == rounds - 1 && barge_limit > 0 && most == 0 && rounds < 500)
			rounds++;
		before = stats_of(pool).barged_acquires;
		conn = cbpool_acquire(pool, 10000);

		if (!conn)
			continue;
		overtaken = stats_of(pool).barged_acquires - before;
		served++;
		if ((int) overtaken > most)
			most = (int) overtaken;
		if (least < 0 || (int) overtaken < least)
			least = (int) overtaken;
		sleep_ms(2);
		cbpool_release(pool, conn);
		sleep_ms(1);
	}
	__atomic_store_n(&cycler.stop, 1, __ATOMIC_RELAXED);
	pthread_join(thread, NULL);
	s = stats_of(pool);
	is_int(served, rounds, "barge_limit %d: a thread waiting for the only connection of a "
		   "thread that keeps taking it back is served, %d rounds of %d", barge_limit,
		   served, rounds);
	ok(most <= barge_limit,
	   "barge_limit %d: it was overtaken at most %d times (%d to %d times)", barge_limit,
	   barge_limit, least, most);
	if (barge_limit > 0)
		ok(most > 0, "barge_limit %d: and the cycler did take its connection back while "
		   "it waited", barge_limit);
	ok(s.handoffs - handoffs0 >= (uint64_t) rounds,
	   "barge_limit %d: each round ended with a hand-off to the waiting thread (%llu)",
	   barge_limit, (unsigned long long) (s.handoffs - handoffs0));
	is_int(cycler.failures, 0, "barge_limit %d: the cycler was never refused", barge_limit);
	cbpool_close(pool);
}

/* The bound with take-backs allowed (3), and with none (strict FIFO). */
static void
test_bounds(void)
{
	test_bound(3);
	test_bound(0);
}

/* ---- FIFO among threads that really wait, while another barges ---- */

static void
test_fifo_while_barging(void)
{
	cbpool_config cfg = test_config("contention", "pod-fifo");
	cbpool	   *pool;
	Cycler		cycler = {0};
	pthread_t	cycler_thread;
	Waiter		waiters[6];
	ServedOrder order = SERVED_ORDER_INIT;
	PGconn	   *held;
	cbpool_stats_t s;

	cfg.max_size = 1;
	cfg.barge_limit = 4;
	pool = open_or_bail(&cfg);
	cycler.pool = pool;
	pthread_create(&cycler_thread, NULL, cycler_main, &cycler);
	while (__atomic_load_n(&cycler.cycles, __ATOMIC_RELAXED) < 100)
		sleep_ms(1);
	held = cbpool_acquire(pool, 5000);
	ok(held && wait_stat(pool, s.waiters == 1, 5000),
	   "a cycling thread waits for the only connection");
	for (int i = 0; i < 6; i++)
	{
		waiters[i] = (Waiter) {
			.pool = pool, .index = i, .timeout_ms = 20000, .hold_ms = 2, .order = &order
		};
		waiter_start(&waiters[i]);
		ok(wait_stat(pool, s.waiters == i + 2, 5000), "waiter %d queued behind it", i + 1);
	}
	cbpool_release(pool, held);
	for (int i = 0; i < 6; i++)
		pthread_join(waiters[i].thread, NULL);
	__atomic_store_n(&cycler.stop, 1, __ATOMIC_RELAXED);
	pthread_join(cycler_thread, NULL);
	s = stats_of(pool);
	is_int(order.n, 6, "every waiter was served while the cycler took its connection back");
	ok(served_in_order(&order, order.n),
	   "the waiters were served first come, first served (%d %d %d %d %d %d)",
	   order.index[0], order.index[1], order.index[2], order.index[3], order.index[4],
	   order.index[5]);
	ok(s.barged_acquires > 0, "the cycler did take its connection back in between (%llu times)",
	   (unsigned long long) s.barged_acquires);
	cbpool_close(pool);
}

/* ---- a thread that does not come back for its kept connection ---- */

static void
test_keeper_gone(void)
{
	cbpool_config cfg = test_config("contention", "pod-gone");
	cbpool	   *pool;
	PGconn	   *conn;
	Waiter		w = {0};
	cbpool_stats_t s;
	uint64_t	expired0;

	cfg.max_size = 1;
	/* no share refresh: one that wants the only connection turns keeping off */
	cfg.refresh_ms = 60000;
	pool = open_or_bail(&cfg);
	/* come straight back once, so that the next release may keep it */
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	conn = cbpool_acquire(pool, 5000);
	expired0 = stats_of(pool).barges_expired;
	w.pool = pool;
	w.timeout_ms = 10000;
	waiter_start(&w);
	ok(wait_stat(pool, s.waiters == 1, 5000), "another thread waits for the only connection");
	/* white box: this thread came straight back (so this release keeps the
	   connection for it) even if a slow sanitizer made it miss 100 us */
	cbpool__came_back = 1;
	cbpool_release(pool, conn);
	/* ... and this thread never acquires again */
	pthread_join(w.thread, NULL);
	s = stats_of(pool);
	ok(w.conn != NULL && query_works(w.conn),
	   "the waiter got the connection although its releaser kept it and never came back");
	ok(s.barges_expired == expired0 + 1,
	   "barges_expired counts the kept connection handed on (%llu)",
	   (unsigned long long) (s.barges_expired - expired0));
	if (w.conn)
		cbpool_release(pool, w.conn);
	ok(pool_serves(pool, 5000), "and the first thread gets it afterwards");
	cbpool_close(pool);
}

/* ---- follow_cpu: a thread handed a connection moves to its CPU ---- */

/* The first two CPUs this thread may run on; 0 if it may run on only one. */
static int
two_cpus(int *a, int *b)
{
	cpu_set_t	mine;
	int			n = 0;

	if (sched_getaffinity(0, sizeof(mine), &mine) != 0)
		return 0;
	for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &mine))
			*(n++ == 0 ? a : b) = i;
	return n == 2;
}

static void
pin(int cpu)
{
	cpu_set_t	one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	sched_setaffinity(0, sizeof(one), &one);
}

static int
mask_is(const cpu_set_t *want)
{
	cpu_set_t	now;

	return sched_getaffinity(0, sizeof(now), &now) == 0 && CPU_EQUAL(&now, want);
}

typedef struct Follower
{
	cbpool	   *pool;
	int			start_cpu;		/* where it waits from */
	int			stay_pinned;	/* 1: its mask is that CPU alone */
	/* out */
	int			cpu;			/* where it was right after the acquire */
	int			mask_kept;		/* its mask was unchanged by the acquire */
	int			got;
} Follower;

static void *
follower_main(void *arg)
{
	Follower   *f = arg;
	cpu_set_t	before;
	PGconn	   *conn;

	sched_getaffinity(0, sizeof(before), &before);
	pin(f->start_cpu);
	if (!f->stay_pinned)
		sched_setaffinity(0, sizeof(before), &before);	/* there, but free */
	sched_getaffinity(0, sizeof(before), &before);
	conn = cbpool_acquire(f->pool, 10000);
	f->cpu = sched_getcpu();
	f->mask_kept = mask_is(&before);
	f->got = conn != NULL;
	if (conn)
		cbpool_release(f->pool, conn);
	return NULL;
}

/* Hand the only connection from this thread, on CPU from, to a thread
   waiting on CPU to, rounds times; how often the waiter ran on from right
   after its acquire, and whether it always got the connection and kept its
   mask.  (Where the scheduler wakes the waiter is its own choice: often
   next to the releasing thread already, else follow_cpu moves it.) */
static int
hand_offs(cbpool *pool, int from, int to, int stay_pinned, int rounds, int *all_kept)
{
	int			on_from = 0;
	cbpool_stats_t s;

	*all_kept = 1;
	for (int r = 0; r < rounds; r++)
	{
		Follower	f = {.pool = pool, .start_cpu = to, .stay_pinned = stay_pinned};
		pthread_t	thread;
		PGconn	   *conn = cbpool_acquire(pool, 5000);

		pthread_create(&thread, NULL, follower_main, &f);
		if (!conn || !wait_stat(pool, s.waiters == 1, 5000))
			*all_kept = 0;
		pin(from);				/* release on from */
		cbpool_release(pool, conn);
		pthread_join(thread, NULL);
		if (!f.got || !f.mask_kept)
			*all_kept = 0;
		if (f.cpu == from)
			on_from++;
	}
	return on_from;
}

static void
test_follow_cpu(void)
{
	cbpool_config cfg = test_config("contention", "pod-follow");
	cbpool	   *pool;
	cpu_set_t	mine;
	int			a = 0,
				b = 0,
				kept,
				on_b;
	uint64_t	moved0;

	sched_getaffinity(0, sizeof(mine), &mine);
	if (!two_cpus(&a, &b))
	{
		skip(10, "this thread may run on one CPU only");
		return;
	}

	/* white box: the move itself (the scheduler may move a thread at any
	   moment, before or after the move: a few tries) */
	{
		int			moved = 0,
					now = -1;

		for (int try = 0; try < 20 && !(moved == 1 && now == b); try++)
		{
			pin(a);
			sched_setaffinity(0, sizeof(mine), &mine);
			moved = cbpool__follow(b + 1);
			now = sched_getcpu();
		}
		ok(moved == 1 && now == b,
		   "a thread on CPU %d follows a connection released on CPU %d (now on %d)", a, b,
		   now);
	}
	ok(mask_is(&mine), "and its affinity mask is what it was");
	ok(cbpool__follow(sched_getcpu() + 1) == 0 && cbpool__follow(0) == 0,
	   "a thread already there, or a connection whose CPU is unknown, does not move");
	pin(a);
	{
		cpu_set_t	only_a;

		CPU_ZERO(&only_a);
		CPU_SET(a, &only_a);
		ok(cbpool__follow(b + 1) == 0 && sched_getcpu() == a && mask_is(&only_a),
		   "a thread that may run only on CPU %d stays there, with its mask", a);
	}
	sched_setaffinity(0, sizeof(mine), &mine);

	/* through the pool: strict FIFO, so every release is a hand-off */
	cfg.max_size = 1;
	cfg.barge_limit = 0;
	pool = open_or_bail(&cfg);
	moved0 = stats_of(pool).handoffs_moved;
	on_b = hand_offs(pool, b, a, 0, 20, &kept);
	moved0 = stats_of(pool).handoffs_moved - moved0;
	diag("follow_cpu = 1: right after 20 hand-offs from CPU %d to a thread waiting "
		 "on CPU %d it ran on CPU %d %d times; %llu moves", b, a, b, on_b,
		 (unsigned long long) moved0);
	ok(kept, "every waiter got the connection and kept its affinity mask");
	ok(on_b >= 10, "and it ran where the connection was released (%d of 20)", on_b);
	ok(moved0 <= 20, "at most one move per hand-off (%llu)", (unsigned long long) moved0);
	moved0 = stats_of(pool).handoffs_moved;
	hand_offs(pool, b, a, 1, 5, &kept);
	ok(kept && stats_of(pool).handoffs_moved == moved0,
	   "a waiter pinned to CPU %d is handed the connection and stays pinned, unmoved", a);
	sched_setaffinity(0, sizeof(mine), &mine);
	cbpool_close(pool);

	cfg.follow_cpu = 0;
	pool = open_or_bail(&cfg);
	on_b = hand_offs(pool, b, a, 0, 20, &kept);
	diag("follow_cpu = 0: the waiter ran on CPU %d right after %d of 20 hand-offs", b, on_b);
	ok(kept && stats_of(pool).handoffs_moved == 0 && stats_of(pool).handoffs >= 20,
	   "with follow_cpu = 0 no hand-off moves a thread (%llu hand-offs)",
	   (unsigned long long) stats_of(pool).handoffs);
	sched_setaffinity(0, sizeof(mine), &mine);
	cbpool_close(pool);
	ok(mask_is(&mine), "this thread's mask is back to what it was");
}

/* ---- timeouts and max_waiters under contention ---- */

static void
test_timeouts(void)
{
	cbpool_config cfg = test_config("contention", "pod-timeouts");
	cbpool	   *pool;
	Totals		t;

	pool = open_full(&cfg, NULL);
	/* holds of up to 40 ms, 32 threads on 4 connections, 20 ms timeouts */
	t = run_workers(pool, 20, 40);
	diag("20 ms timeouts: %ld served, %ld timed out, waits that timed out %.1f to %.1f ms",
		 t.served, t.timeouts, t.min_timeout_wait * 1000, t.max_timeout_wait * 1000);
	ok(t.served > 0 && t.timeouts > 0, "with holds of up to 40 ms, some acquires time out");
	is_int(t.other_errors + t.rejected, 0, "every failed acquire failed with CBPOOL_ETIMEOUT");
	is_int(t.stats.acquire_timeouts, t.timeouts, "acquire_timeouts counts them all");
	ok(t.min_timeout_wait >= 0.0195, "none timed out before 20 ms (shortest %.1f ms)",
	   t.min_timeout_wait * 1000);
	ok(t.max_timeout_wait < 1.0, "and each returned soon after (longest %.1f ms)",
	   t.max_timeout_wait * 1000);
	is_int(double_holds, 0, "no connection was held by two threads at once");
	is_int(t.stats.acquired, t.served, "acquired counts only the successful acquires");
	cbpool_close(pool);

	/* max_waiters: beyond it, acquire fails at once */
	cfg = test_config("contention", "pod-waiters");
	cfg.max_waiters = 8;
	pool = open_full(&cfg, NULL);
	t = run_workers(pool, 5000, 2);
	diag("max_waiters 8: %ld served, %ld rejected, at most %d waiting", t.served, t.rejected,
		 t.max_waiters_seen);
	ok(t.rejected > 0, "with 32 threads on 4 connections, max_waiters (8) rejects some");
	is_int(t.stats.acquire_rejected, t.rejected, "acquire_rejected counts them");
	ok(t.max_waiters_seen <= 8, "never more than 8 threads waited at once (%d)",
	   t.max_waiters_seen);
	ok(t.max_rejected_wait < 1.0, "a rejected acquire returned at once (slowest %.1f ms)",
	   t.max_rejected_wait * 1000);
	is_int(t.timeouts + t.other_errors, 0, "the threads that did wait were served");
	ok(t.least_served > 0, "and every thread was served sometimes (least %ld)", t.least_served);
	is_int(double_holds, 0, "no connection was held by two threads at once");
	cbpool_close(pool);
}

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_many_threads, test_bounds, test_fifo_while_barging,
										  test_keeper_gone, test_follow_cpu, test_timeouts, NULL});
}
