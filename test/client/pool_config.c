/*
 * pool_config.c -- what the pool refuses or reads from outside:
 * misuse (releasing NULL, twice, into the wrong pool) reported and
 * ignored, every invalid configuration refused with its message, and
 * PGAPPNAME and PGOPTIONS read as libpq reads them.
 *
 * cluster: max_connections=60 superuser_reserved_connections=3 connbudget.reserved_connections=10 connbudget.refresh_interval=100
 */
#include "common.h"

static PGconn *admin;

static void
test_misuse(void)
{
	cbpool_config cfg = test_config("basic", "pod-misuse");
	cbpool	   *pool = open_or_bail(&cfg);
	cbpool	   *other;
	PGconn	   *conn;
	PGconn	   *stranger;
	cbpool_stats_t s;

	log_reset();
	conn = cbpool_acquire(pool, 5000);
	cbpool_release(pool, conn);
	cbpool_release(pool, conn);
	is_int(logged("misuse", "released twice"), 1,
		   "releasing a connection twice is reported, not a crash");
	stranger = pg_connect_or_bail("application_name=stranger");
	cbpool_release(pool, stranger);
	is_int(logged("misuse", "does not belong to this pool"), 1,
		   "releasing a connection from elsewhere is reported and ignored");
	ok(query_works(stranger), "and the stranger's connection is left alone");
	PQfinish(stranger);

	other = open_or_bail(&cfg);
	conn = cbpool_acquire(other, 5000);
	cbpool_release(pool, conn);
	is_int(logged("misuse", "does not belong to this pool"), 2,
		   "releasing a connection into another pool is reported and ignored");
	cbpool_release(other, conn);
	cbpool_close(other);

	cbpool_release(pool, NULL);
	is_int(logged("misuse", "NULL connection"), 1, "releasing NULL is reported");
	s = stats_of(pool);
	is_int(s.misuse, 4, "the misuse counter counts all four");
	ok(cbpool_acquire(NULL, 10) == NULL && cbpool_last_error() == CBPOOL_EINVAL,
	   "acquire from a NULL pool: NULL and CBPOOL_EINVAL");
	cbpool_release(NULL, NULL);
	cbpool_stats(NULL, &s);
	cbpool_stats(pool, NULL);
	cbpool_close(NULL);
	ok(cbpool_prometheus(NULL, NULL, 0) == CBPOOL_EINVAL &&
	   cbpool_run(NULL, NULL, NULL, NULL) == CBPOOL_EINVAL &&
	   cbpool_run(pool, NULL, NULL, NULL) == CBPOOL_EINVAL &&
	   cbpool_wait_ready(NULL, 10) == CBPOOL_EINVAL,
	   "NULL arguments get CBPOOL_EINVAL, not a crash");
	cbpool_close(pool);
}

/* Each invalid configuration, and the message cbpool_open must give. */
static const char *
invalid_case(int i, cbpool_config *c, const char **message)
{
	switch (i)
	{
		case 0:
			c->min_idle = -1;
			*message = "min_idle must not be negative (got -1)";
			return "negative min_idle";
		case 1:
			c->max_size = -5;
			*message = "max_size must not be negative (got -5)";
			return "negative max_size";
		case 2:
			c->min_idle = 5;
			c->max_size = 2;
			*message = "min_idle (5) must not exceed max_size (2)";
			return "min_idle above max_size";
		case 3:
			c->acquire_timeout_ms = -1;
			*message = "acquire_timeout_ms must not be negative";
			return "a negative acquire timeout";
		case 4:
			c->validate_idle_ms = -2;
			*message = "validate_idle_ms must be -1 (never) or >= 0";
			return "validate_idle_ms below -1";
		case 5:
			c->backoff_initial_ms = 500;
			c->backoff_max_ms = 10;
			*message = "backoff_max_ms (10) must not be below backoff_initial_ms (500)";
			return "a backoff cap below its start";
		case 6:
			c->pod = "0123456789012345678901234567890123456789012345678901234567890123";
			*message = "is not 1 to 63 bytes of printable ASCII";
			return "a pod id of 64 bytes";
		case 7:
			c->pod = "p\xc3\xb6" "d";
			*message = "is not 1 to 63 bytes of printable ASCII";
			return "a multibyte pod id";
		case 8:
			c->application_name = "";
			*message = "application_name must be 1 to 63 bytes";
			return "an empty application_name";
		case 9:
			c->conninfo = "host='unterminated";
			*message = "invalid conninfo";
			return "an invalid conninfo";
		case 10:
			c->conninfo = "nosuchkeyword=1";
			*message = "invalid conninfo";
			return "an unknown conninfo keyword";
		case 11:
			c->lifetime_jitter_pct = 80;
			*message = "lifetime_jitter_pct must be at most 50";
			return "a jitter of 80%";
		case 12:
			c->connect_timeout_ms = 0;
			*message = "connect_timeout_ms and validate_timeout_ms must be positive";
			return "a connect timeout of 0";
		case 13:
			c->barge_limit = -1;
			*message = "barge_limit must not be negative (got -1)";
			return "a negative barge_limit";
		case 14:
			c->breaker_failures = -3;
			*message = "breaker_failures must not be negative (got -3)";
			return "a negative breaker_failures";
		case 15:
			c->breaker_open_ms = 0;
			*message = "breaker_open_ms must be positive while breaker_failures is set";
			return "a breaker that would never probe";
		case 16:
			c->breaker_open_ms = 7200000;
			*message = "breaker_open_ms must be at most 3600000 (got 7200000)";
			return "a breaker open for two hours";
		case 17:
			c->breaker_after_ms = -1;
			*message = "breaker_after_ms must not be negative (got -1)";
			return "a negative breaker_after_ms";
		case 18:
			c->follow_cpu = 2;
			*message = "follow_cpu must be 0 or 1 (got 2)";
			return "a follow_cpu of 2";
	}
	return NULL;
}

static void
test_invalid_config(void)
{
	const char *label;

	for (int i = 0;; i++)
	{
		cbpool_config cfg = test_config("basic", "pod-cfg");
		const char *message = NULL;
		char		err[256] = "";
		cbpool	   *pool;

		label = invalid_case(i, &cfg, &message);
		if (label == NULL)
			break;
		pool = cbpool_open(&cfg, err, sizeof(err));
		ok(pool == NULL && strstr(err, message) != NULL,
		   "cbpool_open refuses %s: \"%s\"", label, err);
		if (pool)
			cbpool_close(pool);
	}
	{
		char		err[256] = "";

		ok(cbpool_open(NULL, err, sizeof(err)) == NULL && strstr(err, "cfg must not be NULL"),
		   "cbpool_open(NULL) refuses: \"%s\"", err);
		ok(cbpool_open(NULL, NULL, 0) == NULL, "and does not need an error buffer");
	}
}

/*
 * PGAPPNAME and PGOPTIONS apply as in libpq: the pool passes
 * application_name and options itself, so it reads them.  Set while no
 * pool's thread runs (getenv and setenv must not race).
 */
static void
test_environment(void)
{
	cbpool_config cfg = test_config(NULL, "pod-env");
	cbpool	   *pool;
	PGconn	   *conn;

	setenv("PGAPPNAME", "basic-env", 1);
	setenv("PGOPTIONS", "-c work_mem=7777kB", 1);
	pool = open_or_bail(&cfg);
	conn = cbpool_acquire(pool, 5000);
	is_str(pg_value(conn, "SELECT current_setting('application_name')"), "basic-env",
		   "without application_name in cfg or conninfo, PGAPPNAME names the application");
	is_str(pg_value(conn, "SELECT current_setting('work_mem')"), "7777kB",
		   "PGOPTIONS reaches the server");
	is_str(pg_value(conn, "SELECT current_setting('connbudget.pod')"), "pod-env",
		   "next to the pool's own connbudget.pod");
	cbpool_release(pool, conn);
	cbpool_close(pool);

	cfg.application_name = "basic";
	{
		char		conninfo[1024];

		snprintf(conninfo, sizeof(conninfo),
				 "%s application_name=basic-conninfo options='-c work_mem=1234kB'",
				 cluster_conninfo());
		cfg.conninfo = conninfo;
		pool = open_or_bail(&cfg);
		conn = cbpool_acquire(pool, 5000);
		is_str(pg_value(conn, "SELECT current_setting('application_name')"), "basic",
			   "cfg.application_name comes before conninfo and PGAPPNAME");
		is_str(pg_value(conn, "SELECT current_setting('work_mem')"), "1234kB",
			   "options in conninfo come before PGOPTIONS");
		cbpool_release(pool, conn);
		cbpool_close(pool);
	}
	unsetenv("PGAPPNAME");
	unsetenv("PGOPTIONS");
}

int
main(void)
{
	admin = pg_connect_or_bail("application_name=admin");
	pg_exec(admin, "CREATE EXTENSION connbudget");

	test_misuse();
	test_invalid_config();
	test_environment();

	PQfinish(admin);
	return done_testing();
}
