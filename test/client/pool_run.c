/*
 * pool_run.c -- cbpool_run(): a unit of work in a transaction,
 * retried on serialization failures and lost connections only when it is
 * marked idempotent, and not retried otherwise.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

/* ---- cbpool_run ---- */

static int
run_serialization(cbpool_tx *tx, void *arg)
{
	PGresult   *res = cbpool_tx_exec(tx, (const char *) arg);
	int			ok_ = cbpool_tx_check(tx, res);

	PQclear(res);
	if (!ok_)
		return 1;
	res = cbpool_tx_exec(tx, "INSERT INTO run_log VALUES (1)");
	ok_ = cbpool_tx_check(tx, res);
	PQclear(res);
	return ok_ ? 0 : 1;
}

static int
run_lose_connection(cbpool_tx *tx, void *arg)
{
	(void) arg;
	if (cbpool_tx_attempt(tx) == 1)
	{
		PGresult   *res = cbpool_tx_exec(tx, "SELECT pg_terminate_backend(pg_backend_pid())");

		PQclear(res);
		return 1;
	}
	PQclear(cbpool_tx_exec(tx, "INSERT INTO run_log VALUES (2)"));
	return 0;
}

static void
test_run(void)
{
	cbpool_config cfg = test_config("basic", "pod-run");
	cbpool	   *pool = open_or_bail(&cfg);
	cbpool_run_opts opts;
	int			rc;

	pg_exec(admin, "CREATE TABLE run_log (kind int)");
	pg_exec(admin, "CREATE SEQUENCE run_seq");
	pg_exec(admin,
			"CREATE FUNCTION fail_until(n int, code text) RETURNS void LANGUAGE plpgsql AS $$ "
			"BEGIN IF nextval('run_seq') <= n THEN "
			"RAISE EXCEPTION 'simulated %', code USING ERRCODE = code; END IF; END $$");

	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(2, '40001')", &opts);
	ok(rc == 0 && opts.attempts == 3,
	   "idempotent work failing twice with 40001 commits on the 3rd attempt (rc %d, attempts %d)",
	   rc, opts.attempts);
	is_int(pg_long(admin, "SELECT count(*) FROM run_log WHERE kind = 1"), 1,
		   "its effect is there once");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(1, '40P01')", &opts);
	ok(rc == 0 && opts.attempts == 2, "a deadlock (40P01) is retried too (attempts %d)",
	   opts.attempts);

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(1, '40001')", &opts);
	ok(rc == 1 && opts.attempts == 1 && strcmp(opts.sqlstate, "40001") == 0,
	   "work not marked idempotent is not retried: fn's error is returned with SQLSTATE 40001");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	opts.max_attempts = 3;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(10, '40001')", &opts);
	ok(rc == 1 && opts.attempts == 3, "retries stop after max_attempts (3)");

	pg_exec(admin, "ALTER SEQUENCE run_seq RESTART");
	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_serialization, "SELECT fail_until(5, '23505')", &opts);
	ok(rc == 1 && opts.attempts == 1 && strcmp(opts.sqlstate, "23505") == 0,
	   "other errors (23505) are not retried");

	memset(&opts, 0, sizeof(opts));
	opts.idempotent = 1;
	rc = cbpool_run(pool, run_lose_connection, NULL, &opts);
	ok(rc == 0 && opts.attempts == 2,
	   "a connection lost during idempotent work is retried on a new connection (attempts %d)",
	   opts.attempts);
	is_int(pg_long(admin, "SELECT count(*) FROM run_log WHERE kind = 2"), 1,
		   "and its effect is there once");
	cbpool_close(pool);
}

int
main(void)
{
	return run_tests(&admin, (test_fn[]) {test_run, NULL});
}
