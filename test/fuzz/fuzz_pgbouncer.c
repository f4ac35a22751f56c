/*
 * fuzz_pgbouncer.c -- libFuzzer target for what the PgBouncer controller
 * (client/pgbouncer/connbudget_pgbouncer.c) reads from others: the share
 * (connbudget.share, protocol 2, and pool_share()'s row, protocol 1), the
 * pace a refusal states, and PgBouncer's SHOW POOLS and SHOW CONFIG.
 *
 * The controller is compiled into this target (its main renamed), so its
 * static parsers run as they are.  Its libpq calls that send queries and
 * wait for results are pointed at a fake connection whose next result is
 * a PGresult built from the input (PQmakeEmptyPGresult, PQsetResultAttrs,
 * PQsetvalue), so SHOW POOLS and SHOW CONFIG go through the controller's
 * own admin_run(); its log lines are written to /dev/null (all levels, so
 * that they are formatted).
 *
 * The first byte of the input picks what the rest is:
 *   S  a share: parse_share() agrees with the protocol's rules (written
 *      apart from the code, below); an accepted ok or left share has
 *      0 <= min_size <= max_size <= budget <= 262143 and a refresh_ms from
 *      10 to 3600000; a refused one says why.  Not compared: numbers with
 *      leading zeros or of more than 18 digits, and words with a key of
 *      32 bytes or more or a value of 64 or more (the controller refuses
 *      those, which the protocol would have it ignore when unknown).
 *   P  a refusal's message: refusal_pace_ms() is 0 or from 10 to 3600000,
 *      and the pace the message states (retry_ms=, else 1.1's hint), when
 *      it is plainly written, is read.
 *   R, r  a result table (below) read by read_answer() in protocol 2 or 1:
 *      protocol 2 takes exactly one row of two text columns, the second a
 *      share without NUL bytes, and reads it as parse_share() does;
 *      protocol 1 exactly the four columns in order, integers in range,
 *      none NULL, 0 <= min_size <= max_size <= budget.
 *   O  SHOW POOLS: sample_pools() takes the sample exactly when the eight
 *      columns are there in text and every count of every pool but the
 *      console's is an integer from 0 to 1000000, and then its sums (sums
 *      above 1000000 in all are not compared, but must not overflow: a
 *      line "*N" below makes thousands of pools).
 *   C  SHOW CONFIG: sample_config() takes default_pool_size,
 *      max_user_connections (integers) and server_lifetime (seconds with
 *      up to 12 digits, read to the millisecond) exactly when all three
 *      are there and valid.
 *   Q  quote() and one_line() with output buffers of 16 to 40 and 90 to
 *      100 bytes (the controller's are 96), allocated exactly: what they
 *      write fits, is terminated and is one printable line.
 * Any other first byte runs the rest through all of these.
 *
 * A result table is written as test/fuzz/fuzz_pgresult.h says: lines of
 * values separated by '|', the first line the column names.
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "fuzz.h"
#include "fuzz_pgresult.h"

/* ---- a connection that answers what the input says ---- */

static char fake_connection;
static PGresult *fake_next;		/* the next result it gives, once */
static int	fake_log_fd = -1;

/*
 * A call on the fake connection ignores its arguments and answers at once:
 * a query is sent, nothing is pending, the connection is fine.  Only
 * PQgetResult (below) gives what the input says.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define FAKE_CALL(type, call, params, answer) static type fake_##call params { return answer; }
FAKE_CALL(int, PQsendQuery, (PGconn *conn, const char *query), 1)
FAKE_CALL(int, PQsendQueryParams, (PGconn *conn, const char *command, int nParams,
								   const Oid *paramTypes, const char *const *paramValues,
								   const int *paramLengths, const int *paramFormats,
								   int resultFormat), 1)
FAKE_CALL(int, PQflush, (PGconn *conn), 0)
FAKE_CALL(int, PQisBusy, (PGconn *conn), 0)
FAKE_CALL(int, PQconsumeInput, (PGconn *conn), 1)
FAKE_CALL(int, PQsocket, (const PGconn *conn), -1)
FAKE_CALL(ConnStatusType, PQstatus, (const PGconn *conn), CONNECTION_OK)
FAKE_CALL(void, PQfinish, (PGconn *conn), )
FAKE_CALL(char *, PQerrorMessage, (const PGconn *conn), (char *) "")
#pragma GCC diagnostic pop

static PGresult *
fake_PQgetResult(PGconn *conn)
{
	PGresult   *res = fake_next;

	(void) conn;
	fake_next = NULL;
	return res;
}

#define PQsendQuery fake_PQsendQuery
#define PQsendQueryParams fake_PQsendQueryParams
#define PQflush fake_PQflush
#define PQisBusy fake_PQisBusy
#define PQconsumeInput fake_PQconsumeInput
#define PQsocket fake_PQsocket
#define PQgetResult fake_PQgetResult
#define PQstatus fake_PQstatus
#define PQfinish fake_PQfinish
#define PQerrorMessage fake_PQerrorMessage
#undef STDERR_FILENO
#define STDERR_FILENO fake_log_fd
#define main connbudget_pgbouncer_main
#include "../../client/pgbouncer/connbudget_pgbouncer.c"
#undef main

/* ---- the protocol's rules, written apart from the controller ---- */

static int
only_chars(const char *v, size_t len, int upper)
{
	for (size_t i = 0; i < len; i++)
		if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '_' ||
			  (upper && v[i] >= 'A' && v[i] <= 'Z')))
			return 0;
	return 1;
}

/*
 * docs/protocol.md, sections 4 and 9: words "key=value" separated by
 * single spaces; status always there and known; the known numbers
 * complete integers in their ranges, each given once; ok and left with
 * 0 <= min_size <= max_size <= budget <= 262143 and a refresh_ms; unknown
 * words ignored.  1: valid (in *s), 0: not, -1: not compared.
 */
static int
reference_share(const char *text, Share *s)
{
	/* where each number goes, in fz_numbers' order */
	int		   *numbers[FZ_NUMBERS] = {
		&s->max_size, &s->min_size, &s->budget, &s->refresh_ms, &s->protocol, &s->allocation,
		&s->pods, &s->connections,
	};
	int			compared = 1;
	size_t		status_len = 0;
	const char *status = NULL;

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < FZ_NUMBERS; i++)
		*numbers[i] = -1;
	s->status = -1;
	/* no share is longer than 1024 bytes */
	for (FuzzWord word = fz_first_word(text, 1024); word.key; word = fz_next_word(&word))
	{
		const char *v = word.value;
		size_t		vlen = word.vlen;
		int			k;

		if (v == NULL)
			return 0;			/* too long, or not key=value (an empty word included) */
		/* a value longer than any known word's is wrong; an unknown word is ignored */
		if (vlen >= 64 && (fz_key_is(&word, "status") || fz_key_is(&word, "reason") ||
						   fz_key_is(&word, "sqlstate")))
			return compared ? 0 : -1;
		if ((k = fz_number_word(&word, FZ_NUMBERS)) >= 0)
		{
			long long	n = 0;
			int			r = fz_integer(v, vlen, fz_numbers[k].lo, fz_numbers[k].hi, &n);

			if (r < 0)
				compared = 0;
			else if (r == 0 || *numbers[k] != -1)
				return compared ? 0 : -1;
			*numbers[k] = (int) n;
		}
		else if (fz_key_is(&word, "status"))
		{
			if (status || vlen == 0 || !only_chars(v, vlen, 0))
				return compared ? 0 : -1;
			status = v;
			status_len = vlen;
		}
		else if (fz_key_is(&word, "sqlstate"))
		{
			if (vlen != 5 || !only_chars(v, vlen, 1))
				return compared ? 0 : -1;
			memcpy(s->sqlstate, v, 5);
			s->sqlstate[5] = '\0';
		}
		else if (fz_key_is(&word, "reason"))
		{
			if (vlen == 0 || vlen >= sizeof(s->reason) || !only_chars(v, vlen, 0))
				return compared ? 0 : -1;
			memcpy(s->reason, v, vlen);
			s->reason[vlen] = '\0';
		}
	}
	if (status)
		s->status = fz_status(status, status_len);
	if (s->status < 0)
		return compared ? 0 : -1;
	if ((s->status == ST_OK || s->status == ST_LEFT) &&
		(s->max_size < 0 || s->min_size < 0 || s->budget < 0 || s->refresh_ms < 0 ||
		 s->min_size > s->max_size || s->max_size > s->budget))
		return compared ? 0 : -1;
	return compared ? 1 : -1;
}

/* What an accepted share promises. */
static void
check_accepted(const Share *s)
{
	FZ_CHECK(s->status >= ST_OK && s->status <= ST_REFUSED, "status %d", s->status);
	if (s->status == ST_OK || s->status == ST_LEFT)
		FZ_CHECK(0 <= s->min_size && s->min_size <= s->max_size && s->max_size <= s->budget &&
				 s->budget <= SHARE_MAX && s->refresh_ms >= REFRESH_MIN_MS &&
				 s->refresh_ms <= REFRESH_MAX_MS,
				 "an accepted share with min_size %d, max_size %d, budget %d, refresh_ms %d",
				 s->min_size, s->max_size, s->budget, s->refresh_ms);
	FZ_CHECK(strlen(s->sqlstate) == 0 || strlen(s->sqlstate) == 5, "sqlstate \"%s\"", s->sqlstate);
}

static Controller *
controller(int protocol)
{
	static Controller ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.opt.min_size = 1;
	ctl.opt.max_size = 1000;
	ctl.opt.headroom_pct = 25;
	ctl.protocol = protocol;
	ctl.server = (PGconn *) &fake_connection;
	ctl.admin = (PGconn *) &fake_connection;
	ctl.reported_demand = ctl.target = ctl.applied = -1;
	return &ctl;
}

/* ---- the checks ---- */

static void
fuzz_share(const char *text, size_t len)
{
	Share		s,
				want;
	char		why[512];
	int			r = parse_share(text, &s, why, sizeof(why));
	int			expected = reference_share(text, &want);

	(void) len;
	if (r == 0)
		check_accepted(&s);
	else
		FZ_CHECK(why[0] != '\0' && memchr(why, '\0', sizeof(why)), "a refusal without a reason");
	if (expected < 0)
		return;
	FZ_CHECK((r == 0) == (expected == 1), "the share \"%.200s\" is %s; the protocol says it is %s",
			 text, r == 0 ? "accepted" : "refused", expected ? "valid" : "not");
	if (r == 0)
		FZ_CHECK(s.status == want.status && s.max_size == want.max_size &&
				 s.min_size == want.min_size && s.budget == want.budget &&
				 s.refresh_ms == want.refresh_ms && s.allocation == want.allocation &&
				 s.pods == want.pods && s.protocol == want.protocol &&
				 s.connections == want.connections &&
				 strcmp(s.sqlstate, want.sqlstate) == 0 && strcmp(s.reason, want.reason) == 0,
				 "the share \"%.200s\" is read otherwise than the protocol says", text);
}

/* The number plainly written after the first mark in msg, or -1 (-2: a
   number that does not end its word). */
static long long
stated_after(const char *msg, const char *mark)
{
	const char *p = strstr(msg, mark);
	long long	n = 0;
	size_t		digits = 0;

	if (!p)
		return -1;
	for (p += strlen(mark); *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
		n = n * 10 + (*p - '0');
	if (digits == 0 || digits > 7 || (*p >= '0' && *p <= '9') ||
		(digits > 1 && p[-(long) digits] == '0'))
		return -1;
	/* the number ends its word: "1000abc" states nothing */
	if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_')
		return -2;
	return n;
}

static void
fuzz_pace(const char *msg, size_t len)
{
	int			pace = refusal_pace_ms(msg);
	long long	retry = stated_after(msg, "connbudget: retry_ms=");
	long long	hint = stated_after(msg, "Pools re-read their share every ");

	(void) len;
	FZ_CHECK(pace == 0 || (pace >= REFRESH_MIN_MS && pace <= REFRESH_MAX_MS),
			 "a stated pace of %d ms", pace);
	if (retry >= REFRESH_MIN_MS && retry <= REFRESH_MAX_MS)
		FZ_CHECK(pace == retry, "retry_ms=%lld read as %d", retry, pace);
	else if (retry < 0 && !strstr(msg, "connbudget: retry_ms=") &&
			 hint >= REFRESH_MIN_MS && hint <= REFRESH_MAX_MS)
		FZ_CHECK(pace == hint, "the hint's %lld ms read as %d", hint, pace);
	else if (!strstr(msg, "connbudget: retry_ms=") && !strstr(msg, "Pools re-read their share every "))
		FZ_CHECK(pace == 0, "a pace of %d ms where none is stated", pace);
}

static void
fuzz_answer(const char *table, size_t len, int protocol)
{
	static const char *const cols[] = {"max_size", "min_size", "budget", "refresh_ms"};
	PGresult   *res = make_result(table, len);
	Controller *c = controller(protocol);
	Share		s;
	char		why[512];
	int			r = read_answer(c, res, &s, why, sizeof(why));
	int			want = PQntuples(res) == 1 && PQnfields(res) == (protocol == 2 ? 2 : 4);

	if (want && protocol == 2)
	{
		const char *v = PQgetvalue(res, 0, 1);

		want = !PQgetisnull(res, 0, 1) && PQfformat(res, 1) == 0 &&
			(size_t) PQgetlength(res, 0, 1) == strlen(v);
		if (want)
		{
			/* the share in it, as parse_share reads it */
			Share		direct;
			char		why2[512];

			want = parse_share(v, &direct, why2, sizeof(why2)) == 0;
			FZ_CHECK(!want || r != 0 || memcmp(&direct, &s, sizeof(s)) == 0,
					 "read_answer reads a share otherwise than parse_share");
		}
	}
	else if (want)
	{
		long long	v[4] = {0};

		for (int i = 0; i < 4 && want; i++)
		{
			const char *value = PQgetvalue(res, 0, i);
			int			ok = fz_integer(value, strlen(value), i == 3 ? REFRESH_MIN_MS : 0,
										   i == 3 ? REFRESH_MAX_MS : SHARE_MAX, &v[i]);

			if (ok < 0)
			{
				want = -1;		/* written oddly: not compared */
				break;
			}
			if ((size_t) PQgetlength(res, 0, i) != strlen(value))
			{
				want = -1;		/* a NUL byte, which no server sends in text: not compared */
				break;
			}
			want = strcmp(PQfname(res, i), cols[i]) == 0 && PQfformat(res, i) == 0 &&
				!PQgetisnull(res, 0, i) && ok == 1;
		}
		if (want == 1)
			want = v[1] <= v[0] && v[0] <= v[2];
		if (want == 1 && r == 0)
			FZ_CHECK(s.max_size == v[0] && s.min_size == v[1] && s.budget == v[2] &&
					 s.refresh_ms == v[3], "pool_share()'s row read otherwise");
	}
	if (r == 0)
		check_accepted(&s);
	if (want >= 0)
		FZ_CHECK((r == 0) == (want == 1), "protocol %d's answer %s, expected %s (%s)", protocol,
				 r == 0 ? "accepted" : "refused", want ? "accepted" : "refused",
				 r == 0 ? "" : why);
	PQclear(res);
}

static void
fuzz_answer_2(const char *table, size_t len)
{
	fuzz_answer(table, len, 2);
}

static void
fuzz_answer_1(const char *table, size_t len)
{
	fuzz_answer(table, len, 1);
}

/* PQfnumber's column for a plain lower-case name, by hand. */
static int
column_named(const PGresult *res, const char *name)
{
	for (int i = 0; i < PQnfields(res); i++)
		if (strcmp(PQfname(res, i), name) == 0)
			return i;
	return -1;
}

/*
 * Run the controller's sample (sample_pools, sample_config) on res, which
 * its admin_run() query gets and clears.  It must take the sample exactly
 * when valid is 1 (-1: not compared).  True when it took a sample that is
 * compared, whose values the caller then checks.
 */
static int
sampled(Controller *c, PGresult *res, int (*sample) (Controller *), int valid, const char *what)
{
	int			r;

	fake_next = res;
	r = sample(c);
	fake_next = NULL;
	if (valid < 0)
		return 0;
	FZ_CHECK((r == 0) == (valid == 1), "%s %s, expected %s", what, r == 0 ? "taken" : "refused",
			 valid ? "taken" : "refused");
	return r == 0;
}

static void
fuzz_pools(const char *table, size_t len)
{
	static const char *const names[] = {"database", "user", "cl_waiting", "sv_active", "sv_idle",
	"sv_used", "sv_tested", "sv_login"};
	PGresult   *res = make_result(table, len);
	Controller *c = controller(2);
	int			col[8],
				valid = 1;
	long long	busy = 0,
				servers = 0,
				waiting = 0;

	for (int i = 0; i < 8; i++)
	{
		col[i] = column_named(res, names[i]);
		valid &= col[i] >= 0 && PQfformat(res, col[i]) == 0;
	}
	for (int row = 0; valid == 1 && row < PQntuples(res); row++)
	{
		long long	v[6];

		if (strcmp(PQgetvalue(res, row, col[0]), "pgbouncer") == 0)
			continue;
		for (int i = 0; i < 6 && valid == 1; i++)
		{
			const char *value = PQgetvalue(res, row, col[2 + i]);

			/* -1: written oddly, not compared */
			valid = fz_integer(value, strlen(value), 0, COUNT_MAX, &v[i]);
		}
		if (valid == 1)
		{
			waiting += v[0];
			busy += v[1] + v[0] + v[5];
			servers += v[1] + v[2] + v[3] + v[4] + v[5];
		}
	}
	if (valid == 1 && (busy > COUNT_MAX || servers > COUNT_MAX))
		valid = -1;				/* more than any PgBouncer has: taken or not, no overflow */
	if (sampled(c, res, sample_pools, valid, "SHOW POOLS"))
		FZ_CHECK(c->busy == busy && c->servers == servers && c->waiting == waiting,
				 "SHOW POOLS read as busy %d, servers %d, waiting %d; it says %lld, %lld, %lld",
				 c->busy, c->servers, c->waiting, busy, servers, waiting);
}

/* PgBouncer's seconds ("3600", "0.3") in ms: digits[.digits], at most 12 digits. */
static long long
reference_seconds(const char *v)
{
	long long	ms = 0;
	int			digits = 0,
				decimals = 0,
				point = 0;

	for (const char *p = v; *p; p++)
	{
		if (*p == '.' && !point)
		{
			point = 1;
			continue;
		}
		if (*p < '0' || *p > '9' || ++digits > 12)
			return -1;
		if (!point)
			ms = ms * 10 + (*p - '0');
		else if (decimals < 3)
		{
			decimals++;
			ms = ms * 10 + (*p - '0');
		}
	}
	if (digits == 0)
		return -1;
	for (int i = 0; i < 3 - decimals; i++)
		ms *= 10;
	return ms;
}

static void
fuzz_config(const char *table, size_t len)
{
	PGresult   *res = make_result(table, len);
	Controller *c = controller(2);
	int			key = column_named(res, "key"),
				value = column_named(res, "value");
	long long	pool_size = -1,
				max_user = -1,
				lifetime = -1;
	int			valid = key >= 0 && value >= 0 && PQfformat(res, key) == 0 &&
		PQfformat(res, value) == 0;
	char		lifetime_text[64] = "";

	for (int row = 0; valid == 1 && row < PQntuples(res); row++)
	{
		const char *k = PQgetvalue(res, row, key),
				   *v = PQgetvalue(res, row, value);
		int			ok = 1;

		if (strcmp(k, "default_pool_size") == 0)
			ok = fz_integer(v, strlen(v), 0, INT_MAX, &pool_size);
		else if (strcmp(k, "max_user_connections") == 0)
			ok = fz_integer(v, strlen(v), 0, INT_MAX, &max_user);
		else if (strcmp(k, "server_lifetime") == 0)
		{
			ok = strlen(v) < sizeof(c->lifetime) && (lifetime = reference_seconds(v)) >= 0;
			if (ok)
				snprintf(lifetime_text, sizeof(lifetime_text), "%s", v);
		}
		valid = ok;
	}
	if (valid == 1)
		valid = pool_size >= 0 && max_user >= 0 && lifetime >= 0;
	if (sampled(c, res, sample_config, valid, "SHOW CONFIG"))
		FZ_CHECK(c->pool_size == pool_size && c->max_user == max_user &&
				 c->lifetime_ms == lifetime && strcmp(c->lifetime, lifetime_text) == 0 && c->seen,
				 "SHOW CONFIG read as pool size %d, max_user_connections %d, server_lifetime %s "
				 "(%lld ms); it says %lld, %lld, %s (%lld ms)", c->pool_size, c->max_user,
				 c->lifetime, (long long) c->lifetime_ms, pool_size, max_user, lifetime_text,
				 lifetime);
}

static void
fuzz_text(const char *text, size_t len)
{
	(void) len;
	/* small buffers, and those the controller passes (96) */
	for (size_t outlen = 16; outlen <= 100; outlen = outlen == 40 ? 90 : outlen + 1)
	{
		char	   *out = malloc(outlen);
		const char *q = quote(text, out, outlen);
		size_t		n;

		FZ_CHECK(q == out, "quote() writes elsewhere than the buffer it is given");
		fz_check_quoted("quote()", q, outlen);
		q = one_line(text, out, outlen);
		n = strnlen(q, outlen);
		FZ_CHECK(n < outlen, "one_line() overruns %zu bytes", outlen);
		for (size_t i = 0; i < n; i++)
			FZ_CHECK(((unsigned char) q[i] > ' ' && q[i] != 0x7f) ||
					 (q[i] == ' ' && i > 0 && q[i - 1] != ' '),
					 "one_line() lets byte 0x%02x through", (unsigned char) q[i]);
		free(out);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fake_log_fd = open("/dev/null", O_WRONLY);
	log_threshold = LOG_DEBUG;	/* format every line, write it nowhere */
	return 0;
}

static const FuzzCheck checks[] = {
	{'S', fuzz_share}, {'P', fuzz_pace}, {'R', fuzz_answer_2}, {'r', fuzz_answer_1},
	{'O', fuzz_pools}, {'C', fuzz_config}, {'Q', fuzz_text},
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_run_tagged(data, size, checks, sizeof(checks) / sizeof(checks[0]));
}
