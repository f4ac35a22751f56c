/*
 * leaves.c -- a pod whose pool sessions all left is gone once its last
 * connection closes, whether the sessions leave one after another or at
 * the same moment.
 *
 * Checked: three pool sessions of one pod that each report a demand on one
 * connection and leave on another, one after another while all their
 * connections are open, leave the pod with no demand and no lease; once
 * the connections close the pod is not in connbudget.pods, and its pod and
 * session slots are reclaimed.  Then, 30 times over, three threads do the
 * same at once: each reports, all leave at the same moment (a barrier),
 * each closes both its connections; every round the pod is gone from
 * connbudget.pods as soon as the server counts no connection of it, its
 * slots are reclaimed, and the slot tables stay consistent.
 *
 * Nothing here waits for a lease: pod_ttl is 60 s, so a pod that is still
 * shown, or a slot still held, is one that waits for pod_ttl.
 *
 * cluster: connbudget.pod_ttl=60000 connbudget.refresh_interval=100ms
 */
#include <pthread.h>

#include "../lib/pgtest.h"

#define POOLS	3
#define ROUNDS	30

static PGconn *admin;

static PGconn *
connect_pool(const char *pod, int pool)
{
	char		o[256];

	snprintf(o, sizeof(o),
			 "options=-c connbudget.pod=%s -c connbudget.pool_session=s%d", pod, pool);
	return pg_connect_or_bail("application_name=leaves", o, "user=pooluser");
}

/* One pool session: it reports on one connection and leaves on another. */
typedef struct Pool
{
	PGconn	   *report;
	PGconn	   *leave;
	pthread_barrier_t *reported;	/* everyone reported, the pod was looked at */
	pthread_barrier_t *go;		/* leave now */
	char		error[512];
} Pool;

/* Run sql on conn from a pool's thread; the first failure is kept. */
static void
pool_exec(Pool *pool, PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && pool->error[0] == '\0')
		snprintf(pool->error, sizeof(pool->error), "%s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
}

static void
pool_report(Pool *pool)
{
	for (int i = 0; i < 3; i++)
		pool_exec(pool, pool->report, "SELECT set_config('connbudget.demand', '8', false)");
}

static void *
pool_thread(void *arg)
{
	Pool	   *pool = arg;

	pool_report(pool);
	pthread_barrier_wait(pool->reported);
	pthread_barrier_wait(pool->go);
	pool_exec(pool, pool->leave, "SET connbudget.demand = 'leave'");
	PQfinish(pool->leave);
	PQfinish(pool->report);
	return NULL;
}

/* No governed connection is counted any more: every backend has exited. */
static void
wait_for_no_connections(void)
{
	long		governed = pg_wait_for(admin, "SELECT governed FROM connbudget.budget", 0, 10000);

	if (governed != 0)
		bail_out("the closed connections are still counted: %ld governed", governed);
}

/* The pod's row of connbudget.pods as text, for a diagnostic; "" if none. */
static const char *
pod_row(const char *pod)
{
	char		sql[512];
	const char *row;

	snprintf(sql, sizeof(sql),
			 "SELECT format('connections %%s, share %%s, demand %%s, lease_expires %%s', "
			 "connections, share, demand, coalesce(lease_expires::text, 'NULL')) "
			 "FROM connbudget.pods WHERE pod = '%s'", pod);
	row = pg_value(admin, sql);
	return row ? row : "";
}

#define SLOTS_IN_USE \
	"SELECT sum(used) FROM connbudget.slots WHERE kind IN ('pods', 'pool sessions')"

/* The slots of pods and pool sessions in use, waited for to reach want. */
static long
slots_in_use_settled(long want)
{
	return pg_wait_for(admin, SLOTS_IN_USE, want, 5000);
}

static void
test_one_after_another(void)
{
	Pool		pools[POOLS];
	const char *row;

	for (int i = 0; i < POOLS; i++)
	{
		memset(&pools[i], 0, sizeof(Pool));
		pools[i].report = connect_pool("leave-seq", i);
		pools[i].leave = connect_pool("leave-seq", i);
		pool_report(&pools[i]);
	}
	is_int(pg_long(admin, "SELECT demand FROM connbudget.pods WHERE pod = 'leave-seq'"), 3 * 8,
		   "three pool sessions of one pod report 8 each: the pod demands 24");

	for (int i = 0; i < POOLS; i++)
	{
		char		sql[256];

		snprintf(sql, sizeof(sql), "SELECT count(*) FROM connbudget.pods "
				 "WHERE pod = 'leave-seq' AND lease_expires IS %sNULL",
				 i < POOLS - 1 ? "NOT " : "");
		pool_exec(&pools[i], pools[i].leave, "SET connbudget.demand = 'leave'");
		is_int(pg_long(admin, sql), 1,
			   i < POOLS - 1 ?
			   "a pool session leaves, the others still hold their leases: the pod's lease goes on" :
			   "the last pool session leaves: the pod's lease has ended, its connections keep it shown");
	}
	row = pod_row("leave-seq");
	is_str(row, "connections 6, share 0, demand 0, lease_expires NULL",
		   "all three left, one after another, their connections open: no share, no demand, no lease");

	for (int i = 0; i < POOLS; i++)
	{
		is_str(pools[i].error, "", "pool session s%d reported and left", i);
		PQfinish(pools[i].leave);
		PQfinish(pools[i].report);
	}
	wait_for_no_connections();
	row = pod_row("leave-seq");
	is_str(row, "", "once the connections closed, the pod is gone from connbudget.pods%s%s",
		   row[0] ? ": " : "", row);
	is_int(slots_in_use_settled(0), 0, "and its pod and session slots are reclaimed");
}

static void
test_at_once(void)
{
	int			rows_left = 0;
	int			slots_left = 0;

	for (int round = 0; round < ROUNDS; round++)
	{
		char		pod[64];
		char		sql[256];
		Pool		pools[POOLS];
		pthread_t	threads[POOLS];
		pthread_barrier_t reported;
		pthread_barrier_t go;
		long		demand;
		const char *row;
		long		slots_before = pg_long(admin, SLOTS_IN_USE);
		long		slots;
		int			errors = 0;

		snprintf(pod, sizeof(pod), "leave-%02d", round);
		pthread_barrier_init(&reported, NULL, POOLS + 1);
		pthread_barrier_init(&go, NULL, POOLS + 1);
		for (int i = 0; i < POOLS; i++)
		{
			memset(&pools[i], 0, sizeof(Pool));
			pools[i].report = connect_pool(pod, i);
			pools[i].leave = connect_pool(pod, i);
			pools[i].reported = &reported;
			pools[i].go = &go;
		}
		for (int i = 0; i < POOLS; i++)
			if (pthread_create(&threads[i], NULL, pool_thread, &pools[i]) != 0)
				bail_out("pthread_create failed");

		pthread_barrier_wait(&reported);
		snprintf(sql, sizeof(sql), "SELECT demand FROM connbudget.pods WHERE pod = '%s'", pod);
		demand = pg_long(admin, sql);
		pthread_barrier_wait(&go);

		for (int i = 0; i < POOLS; i++)
		{
			pthread_join(threads[i], NULL);
			if (pools[i].error[0])
			{
				diag("round %d, pool session s%d: %s", round, i, pools[i].error);
				errors++;
			}
		}
		pthread_barrier_destroy(&reported);
		pthread_barrier_destroy(&go);
		if (errors > 0 || demand != 3 * 8)
			bail_out("round %d: the pools did not report as they should (the pod demanded %ld)",
					 round, demand);

		wait_for_no_connections();
		row = pod_row(pod);
		ok(row[0] == '\0',
		   "round %d: three pool sessions left at once and closed: the pod is gone from connbudget.pods%s%s",
		   round, row[0] ? ": " : "", row);
		if (row[0])
			rows_left++;
		slots = slots_in_use_settled(slots_before);
		is_int(slots - slots_before, 0, "round %d: its pod and session slots are reclaimed", round);
		if (slots != slots_before)
			slots_left++;
	}
	is_int(pg_long(admin, "SELECT count(*) FROM connbudget.slots WHERE NOT consistent"), 0,
		   "the slot tables are consistent after %d rounds", ROUNDS);
	diag("%d of %d rounds left the pod shown, %d left slots held", rows_left, ROUNDS, slots_left);
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");
	pg_exec(admin, "CREATE ROLE pooluser LOGIN");

	test_one_after_another();
	test_at_once();

	PQfinish(admin);
	return done_testing();
}
