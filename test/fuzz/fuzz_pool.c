/*
 * fuzz_pool.c -- libFuzzer target for what the C pool
 * (client/connbudget_pool.h) reads from servers: the share of protocol 2
 * (connbudget.share), pool_share()'s row of protocol 1, the answer of a
 * cluster's host check, and the pace a refused connect states.
 *
 * The header is compiled into this target with CBPOOL_IMPLEMENTATION and
 * CBPOOL_STATIC, so its static parsers run as they are, on PGresults built
 * from the input (test/fuzz/fuzz_pgresult.h).  The first byte of the input
 * picks what the rest is:
 *
 *   s  a share's text, answered as the second of two text columns of one
 *      row; S  a whole result table for the protocol-2 query.
 *      cbpool__check_share_words accepts exactly what the protocol allows
 *      (docs/protocol.md, sections 4 and 9, written apart from the code,
 *      below): one row of two columns, the share text, without NUL bytes,
 *      at most 4096 bytes; words key=value one space apart; a known
 *      status; each known word at most once and its number a complete
 *      integer in range; for "ok" max_size, min_size, budget and
 *      refresh_ms with 0 <= min_size <= max_size <= budget <= 262143 and a
 *      refresh_ms from 10 to 3600000; unknown words ignored, however long.
 *      What is accepted is what the words say.  Not compared: numbers with
 *      a sign or leading zeros or of more than 18 digits, protocol=0 or 1,
 *      malformed sqlstate and reason (the pool ignores them), and known
 *      words with a key of 64 bytes or more or a value of 48 or more (the
 *      pool skips them as a later version's).
 *   r  pool_share()'s answer: cbpool__check_share accepts exactly one row
 *      of four text columns, none NULL, integers in range, in order.
 *   H  the host check's answer: cbpool__member_check_answer accepts
 *      exactly one row of "t" or "f", a lag and a timeline, integers from
 *      0, and reads them.
 *   P  a refusal's message: cbpool__stated_refresh_ms is 0 or from 10 to
 *      3600000, and is the pace the message states when it states one
 *      plainly ("connbudget: retry_ms=N" ending a word, else 1.1's hint
 *      "... re-read their share every N ms (connbudget.refresh_interval)"),
 *      and cbpool__stated_bad never calls one the protocol reads bad.
 *   Q  cbpool__quote with output buffers of 16 to 40 and 150 to 170 bytes
 *      (the pool's are 160), allocated exactly: what it writes fits, is
 *      terminated, quoted and printable.
 *   I  cbpool__parse_int over the whole text against a reference.
 * Any other first byte runs the rest through all of these.
 */
#define CBPOOL_IMPLEMENTATION
#define CBPOOL_STATIC
#include "../../client/connbudget_pool.h"

#include "fuzz.h"
#include "fuzz_pgresult.h"

/* ---- the protocol's rules, written apart from the pool ---- */

typedef struct ShareWords
{
	int			status;			/* 0 ok, 1 other, 2 left, 3 refused */
	long long	v[4];			/* max_size, min_size, budget, refresh_ms; -1: absent */
	long long	demand;			/* the demand it answers; -1 absent, -2 unbounded */
} ShareWords;

/*
 * 1: valid (in *w), 0: not, -1: not compared.  The words the pool knows:
 * the numbers up to protocol (allocation and pods it ignores), then these.
 */
enum
{
	STATUS = FZ_PROTOCOL + 1, SQLSTATE, REASON, DEMAND, KNOWN
};

static int
reference_words(const char *text, ShareWords *w)
{
	int			seen[KNOWN] = {0};
	int			compared = 1;

	w->status = -1;
	w->demand = -1;
	for (int i = 0; i < 4; i++)
		w->v[i] = -1;
	for (FuzzWord word = fz_first_word(text, 4096); word.key; word = fz_next_word(&word))
	{
		const char *v = word.value;
		size_t		vlen = word.vlen;
		int			k = fz_number_word(&word, FZ_PROTOCOL + 1);

		if (v == NULL)
			return 0;			/* too long, or not key=value (an empty word included) */
		if (fz_key_is(&word, "status"))
			k = STATUS;
		else if (fz_key_is(&word, "sqlstate"))
			k = SQLSTATE;
		else if (fz_key_is(&word, "reason"))
			k = REASON;
		else if (fz_key_is(&word, "demand"))
			k = DEMAND;
		if (k >= 0 && vlen >= 48)
			return compared ? 0 : -1;	/* no known word's value is this long */
		else if (k >= 0)
		{
			if (seen[k]++)
				return compared ? 0 : -1;	/* twice */
			if (k <= FZ_PROTOCOL)
			{
				long long	n = 0;
				int			r = fz_integer(v, vlen, fz_numbers[k].lo, fz_numbers[k].hi, &n);

				if (r < 0 || (k == FZ_PROTOCOL && r == 0 && vlen == 1 && (v[0] == '0' || v[0] == '1')))
					compared = 0;
				else if (r == 0)
					return compared ? 0 : -1;
				if (k < FZ_PROTOCOL)
					w->v[k] = n;
			}
			else if (k == DEMAND)
			{
				int			r = vlen == 9 && memcmp(v, "unbounded", 9) == 0 ? 1 :
					fz_integer(v, vlen, 0, 1000000, &w->demand);

				if (r < 0)
					compared = 0;
				else if (r == 0)
					return compared ? 0 : -1;
				else if (vlen == 9 && memcmp(v, "unbounded", 9) == 0)
					w->demand = -2;
			}
			else if (k == STATUS)
			{
				w->status = fz_status(v, vlen);
				if (w->status < 0)
					return compared ? 0 : -1;
			}
			else
				compared = 0;	/* sqlstate, reason: a bad one is ignored */
		}
	}
	if (w->status < 0)
		return compared ? 0 : -1;
	if (w->status == 0 &&
		(w->v[0] < 0 || w->v[1] < 0 || w->v[2] < 0 || w->v[3] < 0 ||
		 w->v[1] > w->v[0] || w->v[0] > w->v[2]))
		return compared ? 0 : -1;
	return compared ? 1 : -1;
}

static void
check_words(PGresult *res)
{
	long long	v[5] = {-1, -1, -1, -1, -7};
	int			status = -7;
	char		detail[64] = "",
				why[512] = "";
	int			bad = cbpool__check_share_words(res, v, &status, detail, sizeof(detail), why,
												sizeof(why));
	int			want = PQntuples(res) == 1 && PQnfields(res) == 2 && !PQgetisnull(res, 0, 1) &&
		PQfformat(res, 1) == 0 && (size_t) PQgetlength(res, 0, 1) == strlen(PQgetvalue(res, 0, 1));
	ShareWords	w = {-1, {-1, -1, -1, -1}, -1};

	if (want)
		want = reference_words(PQgetvalue(res, 0, 1), &w);
	if (!bad)
	{
		FZ_CHECK(status >= CBPOOL__SHARE_OK && status <= CBPOOL__SHARE_REFUSED, "status %d", status);
		if (status == CBPOOL__SHARE_OK)
			FZ_CHECK(0 <= v[1] && v[1] <= v[0] && v[0] <= v[2] && v[2] <= 262143 &&
					 v[3] >= 10 && v[3] <= 3600000,
					 "an accepted share with max_size %lld, min_size %lld, budget %lld, "
					 "refresh_ms %lld", v[0], v[1], v[2], v[3]);
		if (status == CBPOOL__SHARE_REFUSED)
			FZ_CHECK(strlen(detail) > 0 && strlen(detail) < sizeof(detail), "no detail");
	}
	else
		FZ_CHECK(why[0] != '\0', "a refused share without a reason");
	if (want < 0)
		return;
	FZ_CHECK(!bad == (want == 1), "the share %s; the protocol says it is %s (%s)",
			 bad ? "is refused" : "is accepted", want ? "valid" : "not", why);
	if (!bad)
	{
		FZ_CHECK(status == w.status, "status %d read as %d", w.status, status);
		for (int i = 0; i < 4 && status == CBPOOL__SHARE_OK; i++)
			FZ_CHECK(v[i] == w.v[i], "word %d says %lld, read as %lld", i, w.v[i], v[i]);
		FZ_CHECK(v[4] == w.demand, "demand says %lld, read as %lld", w.demand, v[4]);
	}
}

static void
fuzz_share_text(const char *text, size_t len)
{
	/* one row: the demand set, then the share */
	PGresult   *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc attrs[2];

	memset(attrs, 0, sizeof(attrs));
	attrs[0].name = (char *) "set_config";
	attrs[1].name = (char *) "current_setting";
	for (int i = 0; i < 2; i++)
	{
		attrs[i].typid = 25;
		attrs[i].typlen = -1;
		attrs[i].atttypmod = -1;
	}
	if (!res || !PQsetResultAttrs(res, 2, attrs) || !PQsetvalue(res, 0, 0, (char *) "12", 2) ||
		!PQsetvalue(res, 0, 1, (char *) text, (int) len))
		abort();
	check_words(res);
	PQclear(res);
}

static void
fuzz_share_table(const char *table, size_t len)
{
	PGresult   *res = make_result(table, len);

	check_words(res);
	PQclear(res);
}

static void
fuzz_pool_share(const char *table, size_t len)
{
	PGresult   *res = make_result(table, len);
	long long	v[5],
				want[4] = {0};
	char		why[512] = "";
	int			bad = cbpool__check_share(res, v, why, sizeof(why));
	int			valid = PQntuples(res) == 1 && PQnfields(res) == 4;

	for (int i = 0; i < 4 && valid == 1; i++)
	{
		const char *value = PQgetvalue(res, 0, i);

		valid = !PQgetisnull(res, 0, i) && PQfformat(res, i) == 0 &&
			(size_t) PQgetlength(res, 0, i) == strlen(value);
		if (valid)
			valid = fz_integer(value, strlen(value), i == 3 ? 10 : 0, i == 3 ? 3600000 : 262143,
							   &want[i]);
	}
	if (valid == 1)
		valid = want[1] <= want[0] && want[0] <= want[2];
	if (!bad)
		FZ_CHECK(0 <= v[1] && v[1] <= v[0] && v[0] <= v[2] && v[2] <= 262143 && v[3] >= 10 &&
				 v[3] <= 3600000, "an accepted pool_share() row with max_size %lld, min_size "
				 "%lld, budget %lld, refresh_ms %lld", v[0], v[1], v[2], v[3]);
	else
		FZ_CHECK(why[0] != '\0', "a refused row without a reason");
	if (valid >= 0)
	{
		FZ_CHECK((bad == 0) == (valid == 1), "pool_share()'s row is %s, expected %s (%s)",
				 bad ? "refused" : "accepted", valid ? "accepted" : "refused", why);
		for (int i = 0; i < 4 && !bad; i++)
			FZ_CHECK(v[i] == want[i], "column %d says %lld, read as %lld", i, want[i], v[i]);
	}
	PQclear(res);
}

static void
fuzz_host_answer(const char *table, size_t len)
{
	PGresult   *res = make_result(table, len);
	int			standby = -1;
	long long	lag = -1,
				timeline = -1,
				want_lag = 0,
				want_timeline = 0;
	char		why[512] = "";
	int			bad = cbpool__member_check_answer(res, &standby, &lag, &timeline, why, sizeof(why));
	int			valid = PQntuples(res) == 1 && PQnfields(res) == 3;
	const char *ro = valid ? PQgetvalue(res, 0, 0) : "";

	if (valid)
		valid = !PQgetisnull(res, 0, 0) && PQfformat(res, 0) == 0 &&
			PQgetlength(res, 0, 0) == 1 && (ro[0] == 't' || ro[0] == 'f');
	for (int i = 1; i < 3 && valid == 1; i++)
	{
		const char *value = PQgetvalue(res, 0, i);

		valid = !PQgetisnull(res, 0, i) && PQfformat(res, i) == 0 &&
			(size_t) PQgetlength(res, 0, i) == strlen(value);
		if (valid)
			valid = fz_integer(value, strlen(value), 0, i == 1 ? LLONG_MAX : INT_MAX,
							   i == 1 ? &want_lag : &want_timeline);
	}
	if (!bad)
		FZ_CHECK((standby == 0 || standby == 1) && lag >= 0 && timeline >= 0 && timeline <= INT_MAX,
				 "an accepted host check: standby %d, lag %lld, timeline %lld", standby, lag,
				 timeline);
	else
		FZ_CHECK(why[0] != '\0', "a refused host check without a reason");
	if (valid >= 0)
	{
		FZ_CHECK((bad == 0) == (valid == 1), "the host check is %s, expected %s (%s)",
				 bad ? "refused" : "accepted", valid ? "accepted" : "refused", why);
		if (!bad)
			FZ_CHECK(standby == (ro[0] == 't') && lag == want_lag && timeline == want_timeline,
					 "the host check read as standby %d, lag %lld, timeline %lld", standby, lag,
					 timeline);
	}
	PQclear(res);
}

/* The number plainly written after the first lead in msg, ending as end says; -1: none. */
static long long
stated(const char *msg, const char *lead, const char *tail)
{
	const char *p = strstr(msg, lead);
	size_t		digits;
	long long	n = 0;

	if (!p)
		return -1;
	p += strlen(lead);
	digits = strspn(p, "0123456789");
	if (digits == 0 || digits > 7 || (digits > 1 && p[0] == '0'))
		return -1;
	if (tail ? strncmp(p + digits, tail, strlen(tail)) != 0
		: (p[digits] != '\0' && p[digits] != ' ' && p[digits] != '\n'))
		return -1;
	for (size_t i = 0; i < digits; i++)
		n = n * 10 + (p[i] - '0');
	return n >= 10 && n <= 3600000 ? n : -1;
}

static void
fuzz_pace(const char *msg, size_t len)
{
	int			pace = cbpool__stated_refresh_ms(msg);
	long long	retry = stated(msg, "connbudget: retry_ms=", NULL);
	long long	hint = stated(msg, "re-read their share every ", " ms (connbudget.refresh_interval)");

	(void) len;
	FZ_CHECK(pace == 0 || (pace >= 10 && pace <= 3600000), "a stated pace of %d ms", pace);
	if (retry >= 0)
		FZ_CHECK(pace == retry, "retry_ms=%lld read as %d", retry, pace);
	else if (!strstr(msg, "connbudget: retry_ms=") && hint >= 0)
		FZ_CHECK(pace == hint, "the hint's %lld ms read as %d", hint, pace);
	else if (!strstr(msg, "connbudget: retry_ms=") && !strstr(msg, "re-read their share every "))
		FZ_CHECK(pace == 0, "a pace of %d ms where none is stated", pace);
	{
		char		word[48];
		int			bad = cbpool__stated_bad(msg, "connbudget: retry_ms=", NULL, word, sizeof word);

		/* a retry_ms the protocol reads is never said to be bad */
		FZ_CHECK(!bad || retry < 0, "retry_ms=%lld read, and also said to be bad (%s)", retry, word);
		FZ_CHECK(!bad || memchr(word, '\0', sizeof word) != NULL, "the bad word is not terminated");
	}
}

static void
fuzz_quote(const char *text, size_t len)
{
	/* small buffers, and those the pool passes (160) */
	for (size_t outlen = 16; outlen <= 170; outlen = outlen == 40 ? 150 : outlen + 1)
	{
		char	   *out = malloc(outlen);

		cbpool__quote(text, (int) len, out, outlen);
		fz_check_quoted("cbpool__quote", out, outlen);
		free(out);
	}
}

static void
fuzz_int(const char *text, size_t len)
{
	static const long long bounds[][2] = {{0, 262143}, {10, 3600000}, {0, LLONG_MAX},
	{LLONG_MIN, LLONG_MAX}, {-5, 5}};

	(void) len;
	for (size_t b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++)
	{
		long long	got = 0,
					want = 0;
		int			bad = cbpool__parse_int(text, bounds[b][0], bounds[b][1], &got);
		const char *digits = text[0] == '-' ? text + 1 : text;
		size_t		n = strlen(digits);
		int			plain = n > 0 && strspn(digits, "0123456789") == n;

		if (!plain)
		{
			FZ_CHECK(bad == CBPOOL__BAD_TEXT, "\"%s\" read as an integer", text);
			continue;
		}
		/* the value of a plain integer, when it fits 18 digits */
		while (*digits == '0' && digits[1])
			digits++, n--;
		if (n > 18)
		{
			FZ_CHECK(bad != 0 || (got >= bounds[b][0] && got <= bounds[b][1]),
					 "\"%s\" read out of range as %lld", text, got);
			continue;
		}
		for (size_t i = 0; i < n; i++)
			want = want * 10 + (digits[i] - '0');
		if (text[0] == '-')
			want = -want;
		if (want < bounds[b][0] || want > bounds[b][1])
			FZ_CHECK(bad == CBPOOL__BAD_RANGE, "\"%s\" is out of [%lld, %lld], read as %lld",
					 text, bounds[b][0], bounds[b][1], got);
		else
			FZ_CHECK(bad == 0 && got == want, "\"%s\" read as %lld (%d)", text, got, bad);
	}
}

static const FuzzCheck checks[] = {
	{'s', fuzz_share_text}, {'S', fuzz_share_table}, {'r', fuzz_pool_share},
	{'H', fuzz_host_answer}, {'P', fuzz_pace}, {'Q', fuzz_quote}, {'I', fuzz_int},
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fz_run_tagged(data, size, checks, sizeof(checks) / sizeof(checks[0]));
}
