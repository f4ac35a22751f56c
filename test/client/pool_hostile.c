/*
 * pool_hostile.c -- the pool believes no answer.  A relay in front of the
 * server rewrites answers into nonsense, for both protocols
 * (docs/protocol.md):
 *
 * - protocol 2: the row of "SELECT set_config('connbudget.demand', $1,
 *   false), current_setting('connbudget.share')" becomes one column,
 *   three, no row, two rows, a NULL share, "", "abc", a share without a
 *   status or without numbers, numbers that are not integers or out of
 *   range or out of order, a word twice, a trailing space, two spaces, a
 *   word without '=', an unknown status, a demand word that is no demand
 *   or comes twice, control characters, 5,000 bytes.
 *   The valid answers that are no share to take: "status=other" (a fixed
 *   size as without the extension, said once), "status=left" (no size,
 *   asked again at its usual pace, no faster), "status=refused" (said once as an error,
 *   counted, the last share kept, asked again after 10 intervals); and
 *   words this pool does not know around a valid share, which it takes;
 * - protocol 1: the relay answers the protocol-2 query as connbudget 1.1
 *   does (42704, unrecognized configuration parameter), the pool falls
 *   back to connbudget.pool_share() and sizes itself from it, and then the
 *   answers of pool_share() become one column, five, no row, two rows,
 *   NULL, "abc", "", " 5", "5x", "99999999999", -1, min_size above
 *   max_size, max_size above budget, a budget beyond MAX_BACKENDS,
 *   refresh_ms 0, 5 and 99999999, a binary value, a NUL or a newline
 *   inside;
 * - a huge share, well formed (max_size, min_size and budget 2000), for
 *   both protocols: believed, and the pool's own max_size of 4 is all that
 *   bounds it: never more than 4 connections;
 * - connects the relay refuses with 53300, stating their pace as
 *   retry_ms=abc, 99999999999 or -250: not taken, each counted in
 *   budget_errors, said once as a warning ("pace-invalid") over a run of
 *   refusals; a 53300 that states no pace (PostgreSQL's own) is no error;
 * - a cluster host's role and lag check.
 *
 * Each time the pool neither crashes nor takes a size from the answer (its
 * stats and the server's backends of its application stay within its last
 * good share), counts it in budget_errors (host_check_errors), says what
 * was wrong once as a warning, keeps its connections, and takes a good
 * answer again after bad ones.
 *
 * Someone else's SQL function connbudget.pool_share() in a database
 * without the extension: on this server (connbudget 1.2) the pool reads
 * connbudget.share there and never calls it; on a second cluster started
 * here without the connbudget library, the pool falls back to protocol 1,
 * calls it, and takes nothing from its nonsense.  The parser itself and a
 * refusal's stated pace (its context field, then its hint) are checked
 * with hostile text too.
 *
 * cluster: connbudget.refresh_interval=100
 */
#define CBPOOL_TEST_INTERNALS	/* white box: the implementation compiled in */
#include "common.h"

#include <limits.h>

/* ---- answers ---- */

typedef struct Answer
{
	const char *name;			/* for the test's messages */
	int			ncols;
	int			nrows;
	const char *v[2][5];		/* NULL: SQL NULL */
	int			len[2][5];		/* 0: strlen(v); else this many bytes */
	int			binary;			/* columns sent in binary format */
	const char *logged;			/* what the pool's warning must say */
} Answer;

/* an error instead of an answer */
typedef struct Failure
{
	const char *sqlstate;
	const char *message;
} Failure;

/* the share the relay gives the pool between hostile answers, and a
   smaller one to see that a rewritten answer reaches the pool */
#define GOOD 4
static const Answer good4 = {.name = "good", .ncols = 4, .nrows = 1, .v = {{"4", "1", "100", "100"}}};
static const Answer good3 = {.name = "good", .ncols = 4, .nrows = 1, .v = {{"3", "1", "100", "100"}}};

/*
 * Each would size the pool (or crash it) if believed: the other fields are
 * plausible, and a max_size believed would let the pool grow to its
 * min_idle of 20.
 */
static const Answer hostile_shares[] = {
	{"one column", 1, 1, {{"30"}}, {{0}}, 0, "answered 1 column, not 4"},
	{"five columns", 5, 1, {{"30", "1", "100", "100", "7"}}, {{0}}, 0,
	"answered 5 columns, not 4"},
	{"zero rows", 4, 0, {{NULL}}, {{0}}, 0, "answered 0 rows, not 1"},
	{"two rows", 4, 2, {{"30", "1", "100", "100"}, {"30", "1", "100", "100"}}, {{0}}, 0,
	"answered 2 rows, not 1"},
	{"NULL max_size", 4, 1, {{NULL, "1", "100", "100"}}, {{0}}, 0,
	"answered NULL for max_size"},
	{"max_size 'abc'", 4, 1, {{"abc", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"abc\", not an integer"},
	{"max_size ''", 4, 1, {{"", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"\", not an integer"},
	{"max_size ' 5'", 4, 1, {{" 5", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \" 5\", not an integer"},
	{"max_size '5x'", 4, 1, {{"5x", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"5x\", not an integer"},
	{"max_size '+30'", 4, 1, {{"+30", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"+30\", not an integer"},
	{"max_size '99999999999'", 4, 1, {{"99999999999", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"99999999999\", out of range [0, 262143]"},
	{"max_size '-1'", 4, 1, {{"-1", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"-1\", out of range"},
	{"min_size above max_size", 4, 1, {{"3", "5", "100", "100"}}, {{0}}, 0,
	"answered min_size 5 above max_size 3"},
	{"max_size above budget", 4, 1, {{"30", "1", "20", "100"}}, {{0}}, 0,
	"answered max_size 30 above budget 20"},
	{"budget 1000000", 4, 1, {{"30", "1", "1000000", "100"}}, {{0}}, 0,
	"answered budget \"1000000\", out of range [0, 262143]"},
	{"refresh_ms 0", 4, 1, {{"30", "1", "100", "0"}}, {{0}}, 0,
	"answered refresh_ms \"0\", out of range [10, 3600000]"},
	{"refresh_ms 5", 4, 1, {{"30", "1", "100", "5"}}, {{0}}, 0,
	"answered refresh_ms \"5\", out of range"},
	{"refresh_ms 99999999", 4, 1, {{"30", "1", "100", "99999999"}}, {{0}}, 0,
	"answered refresh_ms \"99999999\", out of range"},
	{"a NUL inside max_size", 4, 1, {{"30\0002", "1", "100", "100"}}, {{4}}, 0,
	"answered max_size \"30\\x002\", not text"},
	{"binary columns", 4, 1, {{"3000", "1111", "5000", "1000"}}, {{0}}, 1,
	"answered max_size \"3000\", not text"},
	{"a newline and a forged log line", 4, 1,
		{{"30\ncbpool WARN [budget]: all is well", "1", "100", "100"}}, {{0}}, 0,
	"answered max_size \"30\\x0acbpool WARN [budget]: all is ...\", not an integer"},
};

/*
 * Protocol 2: the answer is one row of two columns, what set_config()
 * returned (the demand) and connbudget.share.  GOOD2 is a share of GOOD as
 * a connbudget 1.2 server says it; S30 a share of 30, which the hostile
 * answers around it would make the pool take if it believed them.
 */
#define GOOD2 \
	"protocol=2 status=ok max_size=4 min_size=1 allocation=8 pods=2 budget=100 refresh_ms=100"
#define S30 \
	"protocol=2 status=ok max_size=30 min_size=1 allocation=60 pods=2 budget=100 refresh_ms=100"
#define P2(text) .ncols = 2, .nrows = 1, .v = {{"20", text}}

static const Answer good2_4 = {.name = "good", P2(GOOD2)};
static const Answer good2_3 = {.name = "good",
P2("protocol=2 status=ok max_size=3 min_size=1 allocation=6 pods=2 budget=100 refresh_ms=100")};

#define NUL_SHARE "status=ok max_size=3\0000 min_size=1 budget=100 refresh_ms=100"

/* what the pool's warnings about connbudget.share start with */
#define IS "connbudget.share is "
#define ANSWERED "connbudget.share answered "

/* 5,000 bytes: a plausible share followed by words, filled in by main() */
static char long_share[5001];

static const Answer hostile_words[] = {
	{.name = "one column", .ncols = 1, .nrows = 1, .v = {{S30}},
	.logged = ANSWERED "1 column, not 2"},
	{.name = "three columns", .ncols = 3, .nrows = 1, .v = {{"20", S30, S30}},
	.logged = ANSWERED "3 columns, not 2"},
	{.name = "zero rows", .ncols = 2, .nrows = 0,
	.logged = ANSWERED "0 rows, not 1"},
	{.name = "two rows", .ncols = 2, .nrows = 2, .v = {{"20", S30}, {"20", S30}},
	.logged = ANSWERED "2 rows, not 1"},
	{.name = "a NULL share", .ncols = 2, .nrows = 1, .v = {{"20", NULL}},
	.logged = "connbudget.share is NULL"},
	{.name = "share ''", P2(""), .logged = IS "\"\": no status this pool knows"},
	{.name = "share 'abc'", P2("abc"), .logged = IS "\"abc\", not words key=value"},
	{.name = "'max_size=5' only", P2("max_size=5"),
	.logged = IS "\"max_size=5\": no status this pool knows"},
	{.name = "'status=ok' without numbers", P2("status=ok"),
		.logged = IS "\"status=ok\": a share without max_size, min_size, budget "
	"and refresh_ms"},
	{.name = "max_size 'abc'", P2("status=ok max_size=abc min_size=0 budget=40 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=abc min_size=...\": max_size is not an integer"},
	{.name = "max_size '+30'", P2("status=ok max_size=+30 min_size=0 budget=40 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=+30 min_size=...\": max_size is not an integer"},
	{.name = "max_size 99999999999",
		P2("status=ok max_size=99999999999 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=99999999999 m...\": max_size is out of range"},
	{.name = "max_size -1", P2("status=ok max_size=-1 min_size=0 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=-1 min_size=0...\": max_size is out of range"},
	{.name = "min_size above max_size",
		P2("status=ok max_size=3 min_size=5 budget=100 refresh_ms=100"),
	.logged = ANSWERED "min_size 5 above max_size 3"},
	{.name = "max_size above budget",
		P2("status=ok max_size=30 min_size=1 budget=20 refresh_ms=100"),
	.logged = ANSWERED "max_size 30 above budget 20"},
	{.name = "budget 1000000", P2("status=ok max_size=30 min_size=1 budget=1000000 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": budget is out of range"},
	{.name = "refresh_ms 0", P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=0"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": refresh_ms is out of range"},
	{.name = "refresh_ms 5", P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=5"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": refresh_ms is out of range"},
	{.name = "refresh_ms 99999999",
		P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=99999999"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": refresh_ms is out of range"},
	{.name = "a word twice",
		P2("status=ok max_size=3 max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=3 max_size=30...\": max_size twice"},
	{.name = "a status twice", P2("status=refused status=ok max_size=30 min_size=1 budget=100 "
								  "refresh_ms=100"),
	.logged = IS "\"status=refused status=ok max_siz...\": status twice"},
	{.name = "a trailing space", P2(S30 " "),
	.logged = IS "\"protocol=2 status=ok max_size=30...\", not words key=value"},
	{.name = "a leading space", P2(" " S30),
	.logged = IS "\" protocol=2 status=ok max_size=3...\", not words key=value"},
	{.name = "two spaces between words",
		P2("status=ok  max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok  max_size=30 min_size=...\", not words key=value"},
	{.name = "a word without '='", P2(S30 " future"),
	.logged = IS "\"protocol=2 status=ok max_size=30...\", not words key=value"},
	{.name = "a word '=30'", P2("status=ok =30 max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok =30 max_size=30 min_si...\", not words key=value"},
	{.name = "status=wat",
		P2("protocol=2 status=wat max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"protocol=2 status=wat max_size=3...\": no status this pool knows"},
	{.name = "protocol=abc",
		P2("protocol=abc status=ok max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"protocol=abc status=ok max_size=...\": protocol is not a version"},
	{.name = "demand 'abc'",
		P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=100 demand=abc"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": demand is neither an integer nor "
	"unbounded"},
	{.name = "demand 1000001",
		P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=100 demand=1000001"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": demand is out of range"},
	{.name = "a demand twice",
		P2("status=ok demand=3 demand=4 max_size=30 min_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok demand=3 demand=4 max_...\": demand twice"},
	{.name = "a newline and a forged log line",
		P2("status=ok max_size=30\ncbpool WARN [budget]: all is well min_size=1 budget=100 "
		   "refresh_ms=100"),
	.logged = IS "\"status=ok max_size=30\\x0acbpool WAR...\": max_size is not "
	"an integer"},
	{.name = "a tab between words",
		P2("status=ok max_size=30\tmin_size=1 budget=100 refresh_ms=100"),
	.logged = IS "\"status=ok max_size=30\\x09min_size=1...\": max_size is not "
	"an integer"},
	{.name = "a control character in a number",
		P2("status=ok max_size=30 min_size=1 budget=100 refresh_ms=1\x01" "00"),
	.logged = IS "\"status=ok max_size=30 min_size=1...\": refresh_ms is not an integer"},
	{.name = "a NUL inside", .ncols = 2, .nrows = 1, .v = {{"20", NUL_SHARE}},
		.len = {{0, (int) sizeof(NUL_SHARE) - 1}},
	.logged = IS "\"status=ok max_size=3\\x000 min_size=...\", not text"},
	{.name = "binary columns", P2(S30), .binary = 1,
	.logged = IS "\"protocol=2 status=ok max_size=30...\", not text"},
	{.name = "a 5,000-byte share", P2(long_share),
	.logged = IS "\"protocol=2 status=ok max_size=30...\", not text"},
};

/* valid answers of protocol 2 that are not a share to take, and one with
   words this pool does not know */
static const Answer words_other = {.name = "status=other",
P2("protocol=2 status=other refresh_ms=100")};
static const Answer words_left = {.name = "status=left",
P2("protocol=2 status=left max_size=0 min_size=0 allocation=8 pods=2 budget=100 refresh_ms=100")};
static const Answer words_refused = {.name = "status=refused",
P2("protocol=2 status=refused sqlstate=42501 reason=role_may_not_claim refresh_ms=100")};
static const Answer words_future = {.name = "unknown words",
P2("protocol=3 status=ok max_size=3 min_size=1 allocation=6 pods=2 budget=100 refresh_ms=100 "
   "future=1 weight=0.5 zone=eu-west-1a")};

/* what connbudget 1.1 (or a server without the library) answers */
static const Failure unknown_share = {
	"42704", "unrecognized configuration parameter \"connbudget.share\""
};

static const Answer hostile_hosts[] = {
	{"one column", 1, 1, {{"t"}}, {{0}}, 0, "answered 1 column, not 3"},
	{"zero rows", 3, 0, {{NULL}}, {{0}}, 0, "answered 0 rows, not 1"},
	{"two rows", 3, 2, {{"t", "0", "1"}, {"t", "0", "1"}}, {{0}}, 0, "answered 2 rows, not 1"},
	{"'x' for read_only", 3, 1, {{"x", "0", "1"}}, {{0}}, 0,
	"answered read_only \"x\", not t or f"},
	{"'true' for read_only", 3, 1, {{"true", "0", "1"}}, {{0}}, 0,
	"answered read_only \"true\", not t or f"},
	{"NULL read_only", 3, 1, {{NULL, "0", "1"}}, {{0}}, 0, "answered NULL for read_only"},
	{"lag -5", 3, 1, {{"t", "-5", "1"}}, {{0}}, 0, "answered lag_ms \"-5\", out of range"},
	{"lag beyond bigint", 3, 1, {{"t", "99999999999999999999", "1"}}, {{0}}, 0,
	"answered lag_ms \"99999999999999999999\", out of range"},
	{"timeline 'abc'", 3, 1, {{"t", "0", "abc"}}, {{0}}, 0,
	"answered timeline \"abc\", not an integer"},
	{"timeline -1", 3, 1, {{"t", "0", "-1"}}, {{0}}, 0, "answered timeline \"-1\", out of range"},
};

/* a standby 250 ms behind: valid, to see that a rewritten check reaches
   the pool */
static const Answer standby250 = {.name = "standby", .ncols = 3, .nrows = 1, .v = {{"t", "250", "0"}}};

/* ---- a relay that rewrites answers ---- */

/* What a query is, from its text in the client's Parse or Query message. */
enum
{
	Q_OTHER,
	Q_SHARE1,					/* connbudget.pool_share(), protocol 1 */
	Q_SHARE2,					/* connbudget.share, protocol 2 */
	Q_HOST,						/* a cluster host's role and lag check */
	Q_KINDS
};

static const char *const kind_name[Q_KINDS] = {"other", "pool_share()", "connbudget.share",
"the host check"};

typedef struct Relay
{
	TcpRelay	tcp;
	const Answer *answer[Q_KINDS];	/* the answers of a kind become this;
									   NULL: as the server gave them */
	const Failure *failure[Q_KINDS];	/* or this error, before answer */
	int			rewritten[Q_KINDS];
	int			passed[Q_KINDS];	/* answers passed on as they were */
	const Failure *refusal;		/* connects refused with this FATAL
								   instead of relayed; NULL: relayed */
	int			refused;		/* connects refused so */
} Relay;

static Relay relay;

typedef struct Buf
{
	char	   *data;
	size_t		len,
				cap;
} Buf;

static void
buf_put(Buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap)
	{
		b->cap = (b->len + n) * 2 + 256;
		b->data = realloc(b->data, b->cap);
		if (!b->data)
			bail_out("relay: out of memory");
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void
buf_i16(Buf *b, int v)
{
	uint16_t	n = htons((uint16_t) v);

	buf_put(b, &n, 2);
}

static void
buf_i32(Buf *b, int v)
{
	uint32_t	n = htonl((uint32_t) v);

	buf_put(b, &n, 4);
}

static void
buf_str(Buf *b, const char *s)
{
	buf_put(b, s, strlen(s) + 1);
}

/* Start a message; msg_end() fills in its length. */
static size_t
msg_begin(Buf *b, char type)
{
	size_t		at = b->len;

	buf_put(b, &type, 1);
	buf_i32(b, 0);
	return at;
}

static void
msg_end(Buf *b, size_t at)
{
	uint32_t	n = htonl((uint32_t) (b->len - at - 1));

	memcpy(b->data + at + 1, &n, 4);
}

/* Write an answer as a server would: RowDescription and DataRows (the
   CommandComplete follows when the server's own arrives). */
static void
put_answer(Buf *out, const Answer *a)
{
	size_t		at = msg_begin(out, 'T');

	buf_i16(out, a->ncols);
	for (int c = 0; c < a->ncols; c++)
	{
		char		name[16];

		snprintf(name, sizeof(name), "c%d", c);
		buf_str(out, name);
		buf_i32(out, 0);		/* table */
		buf_i16(out, 0);		/* column */
		buf_i32(out, 25);		/* text */
		buf_i16(out, -1);
		buf_i32(out, -1);
		buf_i16(out, a->binary);
	}
	msg_end(out, at);
	for (int r = 0; r < a->nrows; r++)
	{
		at = msg_begin(out, 'D');
		buf_i16(out, a->ncols);
		for (int c = 0; c < a->ncols; c++)
		{
			const char *v = a->v[r][c];
			int			n = a->len[r][c] ? a->len[r][c] : v ? (int) strlen(v) : -1;

			buf_i32(out, n);
			if (n > 0)
				buf_put(out, v, n);
		}
		msg_end(out, at);
	}
}

/* An ErrorResponse, as the server sends when a statement fails. */
static void
put_error(Buf *out, const char *sqlstate, const char *message)
{
	size_t		at = msg_begin(out, 'E');

	buf_put(out, "S", 1);
	buf_str(out, "ERROR");
	buf_put(out, "V", 1);
	buf_str(out, "ERROR");
	buf_put(out, "C", 1);
	buf_str(out, sqlstate);
	buf_put(out, "M", 1);
	buf_str(out, message);
	buf_put(out, "", 1);
	msg_end(out, at);
}

/* The kind of a query: its text, up to len bytes (it need not end there). */
static int
query_kind(const char *text, size_t len)
{
	size_t		n = strnlen(text, len);
	char	   *q = malloc(n + 1);
	int			kind = Q_OTHER;

	if (!q)
		bail_out("relay: out of memory");
	memcpy(q, text, n);
	q[n] = '\0';
	if (strstr(q, "current_setting('connbudget.share')"))
		kind = Q_SHARE2;
	else if (strstr(q, "FROM connbudget.pool_share("))
		kind = Q_SHARE1;
	else if (strstr(q, "pg_is_in_recovery()"))
		kind = Q_HOST;
	free(q);
	return kind;
}

#define RELAY_QUEUE 64

typedef struct RelayPair
{
	Buf			cin;			/* from the client, not yet whole messages */
	Buf			in;				/* from the server, not yet whole messages */
	Buf			out;			/* to the client, or to the server */
	int			started;		/* the startup message has passed */
	int			batch;			/* the kind of what the client sends until
								   its Sync */
	int			queue[RELAY_QUEUE]; /* kinds of what the client sent, each
									   answered up to a ReadyForQuery */
	int			qhead,
				qlen;
	const Answer *sent;			/* the answer sent instead of the server's */
	const Failure *failed;		/* or the error */
	int			dropping;		/* the server's rows of a rewritten answer */
} RelayPair;

static void
queue_push(RelayPair *p, int kind)
{
	if (p->qlen == RELAY_QUEUE)
		bail_out("relay: %d queries without an answer", RELAY_QUEUE);
	p->queue[(p->qhead + p->qlen++) % RELAY_QUEUE] = kind;
}

/* The kind of query the server's messages now answer. */
static int
answering(const RelayPair *p)
{
	return p->qlen > 0 ? p->queue[p->qhead] : p->batch;
}

/*
 * The client's whole messages in p->cin: noted (the kind of each query,
 * in the order the server answers them) and passed on as they are.
 */
static void
client_messages(RelayPair *p)
{
	size_t		at = 0;

	for (;;)
	{
		const char *m = p->cin.data + at;
		size_t		left = p->cin.len - at,
					head = p->started ? 5 : 4,
					whole;
		uint32_t	len;

		if (left < head)
			break;
		memcpy(&len, m + head - 4, 4);
		len = ntohl(len);
		whole = head - 4 + (size_t) len;
		if (len < 4)
			bail_out("relay: a client message of length %u", len);
		if (left < whole)
			break;
		at += whole;
		if (!p->started)
		{
			/* the startup message: answered up to the first ReadyForQuery */
			p->started = 1;
			queue_push(p, Q_OTHER);
		}
		else if (m[0] == 'Q')
			queue_push(p, query_kind(m + 5, whole - 5));
		else if (m[0] == 'P')
		{
			/* Parse: the statement's name, then its text */
			const char *name_end = memchr(m + 5, '\0', whole - 5);

			if (name_end)
			{
				int			kind = query_kind(name_end + 1, m + whole - (name_end + 1));

				if (kind != Q_OTHER)
					p->batch = kind;
			}
		}
		else if (m[0] == 'S')
		{
			queue_push(p, p->batch);
			p->batch = Q_OTHER;
		}
		buf_put(&p->out, m, whole);
	}
	memmove(p->cin.data, p->cin.data + at, p->cin.len - at);
	p->cin.len -= at;
}

/* The server's whole messages in p->in, as the client is to get them. */
static void
relay_messages(RelayPair *p)
{
	size_t		at = 0;

	while (p->in.len - at >= 5)
	{
		const char *m = p->in.data + at;
		char		type = m[0];
		uint32_t	len;
		size_t		whole;
		int			kind = answering(p);

		memcpy(&len, m + 1, 4);
		len = ntohl(len);
		whole = 1 + (size_t) len;
		if (p->in.len - at < whole)
			break;
		at += whole;
		if (type == 'T' && kind != Q_OTHER)
		{
			const Failure *f = __atomic_load_n(&relay.failure[kind], __ATOMIC_ACQUIRE);
			const Answer *a = f ? NULL : __atomic_load_n(&relay.answer[kind], __ATOMIC_ACQUIRE);

			if (f || a)
			{
				/* an error comes instead of the whole answer (after the
				   statement's ParseComplete and BindComplete, as an error
				   in its execution would); rows come instead of the
				   server's */
				if (a)
					put_answer(&p->out, a);
				p->sent = a;
				p->failed = f;
				p->dropping = 1;
				__atomic_fetch_add(&relay.rewritten[kind], 1, __ATOMIC_RELEASE);
				continue;
			}
			__atomic_fetch_add(&relay.passed[kind], 1, __ATOMIC_RELEASE);
		}
		else if (p->dropping && type == 'D')
			continue;
		else if (p->dropping && type == 'C')
		{
			if (p->failed)
				put_error(&p->out, p->failed->sqlstate, p->failed->message);
			else
			{
				char		tag[32];
				size_t		c;

				snprintf(tag, sizeof(tag), "SELECT %d", p->sent->nrows);
				c = msg_begin(&p->out, 'C');
				buf_str(&p->out, tag);
				msg_end(&p->out, c);
			}
			p->dropping = 0;
			continue;
		}
		else if (type == 'E')
			p->dropping = 0;
		else if (type == 'Z' && p->qlen > 0)
		{
			p->qhead = (p->qhead + 1) % RELAY_QUEUE;
			p->qlen--;
			p->dropping = 0;
		}
		buf_put(&p->out, m, whole);
	}
	memmove(p->in.data, p->in.data + at, p->in.len - at);
	p->in.len -= at;
}

static int
write_all(int fd, const char *data, size_t n)
{
	while (n > 0)
	{
		ssize_t		w = write(fd, data, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return 0;
		data += w;
		n -= (size_t) w;
	}
	return 1;
}

/*
 * Read what fd "from" has into in, turn its whole messages into p->out
 * with messages(), and write that to fd "to"; 0 once a side has ended.
 */
static int
relay_from(RelayPair *p, int from, Buf *in, void (*messages) (RelayPair *), int to)
{
	char		buf[8192];
	ssize_t		n = read(from, buf, sizeof(buf));

	if (n <= 0)
		return 0;
	buf_put(in, buf, (size_t) n);
	messages(p);
	if (!write_all(to, p->out.data, p->out.len))
		return 0;
	p->out.len = 0;
	return 1;
}

/*
 * Refuse a connect as a server does: read the client's startup message,
 * then answer a FATAL ErrorResponse with f's SQLSTATE, a message and, if
 * f->message is set, it as the context field (where connbudget states the
 * pace to retry at).
 */
static void
relay_refuse(int client, const Failure *f)
{
	Buf			in = {0},
				out = {0};
	size_t		at;

	for (;;)
	{
		char		buf[1024];
		uint32_t	len = 0;
		ssize_t		n;

		if (in.len >= 4)
		{
			memcpy(&len, in.data, 4);
			if (in.len >= ntohl(len))
				break;
		}
		n = read(client, buf, sizeof(buf));
		if (n <= 0)
		{
			free(in.data);
			return;
		}
		buf_put(&in, buf, (size_t) n);
	}
	at = msg_begin(&out, 'E');
	buf_put(&out, "S", 1);
	buf_str(&out, "FATAL");
	buf_put(&out, "V", 1);
	buf_str(&out, "FATAL");
	buf_put(&out, "C", 1);
	buf_str(&out, f->sqlstate);
	buf_put(&out, "M", 1);
	buf_str(&out, "too many connections for application \"paced\"");
	if (f->message)
	{
		buf_put(&out, "W", 1);
		buf_str(&out, f->message);
	}
	buf_put(&out, "", 1);
	msg_end(&out, at);
	if (write_all(client, out.data, out.len))
		__atomic_fetch_add(&relay.refused, 1, __ATOMIC_RELEASE);
	free(in.data);
	free(out.data);
}

static void
relay_serve(TcpRelay *tcp, int client, int server)
{
	const Failure *refusal = __atomic_load_n(&relay.refusal, __ATOMIC_ACQUIRE);
	RelayPair  *p;

	if (refusal)
	{
		relay_refuse(client, refusal);
		return;
	}
	p = calloc(1, sizeof(RelayPair));
	if (!p)
		bail_out("relay: out of memory");
	while (!__atomic_load_n(&tcp->stop, __ATOMIC_RELAXED))
	{
		struct pollfd fds[2] = {{.fd = client, .events = POLLIN},
		{.fd = server, .events = POLLIN}};

		if (poll(fds, 2, 100) < 0 && errno != EINTR)
			break;
		if (fds[0].revents && !relay_from(p, client, &p->cin, client_messages, server))
			break;
		if (fds[1].revents && !relay_from(p, server, &p->in, relay_messages, client))
			break;
	}
	free(p->cin.data);
	free(p->in.data);
	free(p->out.data);
	free(p);
}

static void
relay_start(void)
{
	memset(&relay, 0, sizeof(relay));
	tcp_relay_start(&relay.tcp, relay_serve);
}

/* From now on, the relay answers queries of this kind with a (NULL: as
   the server does). */
static void
relay_set(int kind, const Answer *a)
{
	__atomic_store_n(&relay.answer[kind], a, __ATOMIC_RELEASE);
}

/* From now on, the relay answers queries of this kind with the error f
   (NULL: as relay_set() says). */
static void
relay_fail(int kind, const Failure *f)
{
	__atomic_store_n(&relay.failure[kind], f, __ATOMIC_RELEASE);
}

/* From now on, the relay refuses every connect with f (NULL: relays
   them). */
static void
relay_refuse_connects(const Failure *f)
{
	__atomic_store_n(&relay.refusal, f, __ATOMIC_RELEASE);
}

static int
relay_refused(void)
{
	return __atomic_load_n(&relay.refused, __ATOMIC_ACQUIRE);
}

/* How many answers of this kind the relay rewrote, or passed on. */
static int
rewritten(int kind)
{
	return __atomic_load_n(&relay.rewritten[kind], __ATOMIC_ACQUIRE);
}

static int
passed(int kind)
{
	return __atomic_load_n(&relay.passed[kind], __ATOMIC_ACQUIRE);
}



/* ---- watching a pool ---- */

typedef struct Watch
{
	int			reached;		/* what was waited for happened */
	int			share_lo,
				share_hi;
	int			size_lo,
				size_hi;
	int			total_hi;
	int			extension_lo,
				extension_hi;
	long		backends_hi;	/* the server's backends of the application */
	uint64_t	errors;			/* budget_errors at the end */
} Watch;

/*
 * Sample the pool's stats and the server's backends of its application
 * every 10 ms until it has counted "errors" budget errors (if errors > 0),
 * or the relay has rewritten "answers" answers of "kind" (if answers > 0),
 * or timeout_ms.
 */
static Watch
watch_until(cbpool *p, PGconn *admin, const char *app, uint64_t errors, int kind, int answers,
			int timeout_ms)
{
	Watch		w = {0, INT_MAX, INT_MIN, INT_MAX, INT_MIN, INT_MIN, INT_MAX, INT_MIN, 0, 0};
	char		sql[256];
	double		deadline = now_seconds() + timeout_ms / 1000.0;

	snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
	for (;;)
	{
		cbpool_stats_t s = stats_of(p);
		long		n = pg_long(admin, sql);

#define LO(f, v) if ((v) < w.f) w.f = (v)
#define HI(f, v) if ((v) > w.f) w.f = (v)
		LO(share_lo, s.share);
		HI(share_hi, s.share);
		LO(size_lo, s.max_size);
		HI(size_hi, s.max_size);
		HI(total_hi, s.total);
		LO(extension_lo, s.extension);
		HI(extension_hi, s.extension);
		HI(backends_hi, n);
		w.errors = s.budget_errors;
		if ((errors > 0 && s.budget_errors >= errors) ||
			(answers > 0 && rewritten(kind) >= answers))
		{
			w.reached = 1;
			break;
		}
		if (now_seconds() > deadline)
			break;
		sleep_ms(10);
	}
	return w;
}

static Watch
watch_pool(cbpool *p, PGconn *admin, const char *app, uint64_t errors, int timeout_ms)
{
	return watch_until(p, admin, app, errors, Q_OTHER, 0, timeout_ms);
}

/* ---- the parser, without a server ---- */

/* text in a buffer of exactly its size, so that reading past it is caught */
static char *
exact(const char *text)
{
	size_t		n = strlen(text) + 1;
	char	   *copy = malloc(n);

	if (!copy)
		bail_out("out of memory");
	memcpy(copy, text, n);
	return copy;
}

typedef struct Stated
{
	const char *text;
	int			want;
} Stated;

/* How many of the texts cbpool__stated_refresh_ms() reads otherwise. */
static int
stated_wrong(const Stated *cases, size_t n)
{
	int			wrong = 0;

	for (size_t i = 0; i < n; i++)
	{
		char	   *text = exact(cases[i].text);
		int			got = cbpool__stated_refresh_ms(text);

		if (got != cases[i].want)
		{
			diag("cbpool__stated_refresh_ms(\"%s\") = %d, expected %d", cases[i].text, got,
				 cases[i].want);
			wrong++;
		}
		free(text);
	}
	return wrong;
}

static void
test_parser(void)
{
	static const struct
	{
		const char *text;
		long long	lo,
					hi;
		int			want;		/* 0, CBPOOL__BAD_TEXT or CBPOOL__BAD_RANGE */
		long long	value;
	}			cases[] = {
		{"0", 0, 10, 0, 0},
		{"10", 0, 10, 0, 10},
		{"-7", -10, 10, 0, -7},
		{"007", 0, 10, 0, 7},
		{"9223372036854775807", 0, LLONG_MAX, 0, LLONG_MAX},
		{"-9223372036854775808", LLONG_MIN, 0, 0, LLONG_MIN},
		{"11", 0, 10, CBPOOL__BAD_RANGE, 0},
		{"-1", 0, 10, CBPOOL__BAD_RANGE, 0},
		{"9223372036854775808", 0, LLONG_MAX, CBPOOL__BAD_RANGE, 0},
		{"99999999999999999999999999", 0, LLONG_MAX, CBPOOL__BAD_RANGE, 0},
		{"-99999999999999999999999999", LLONG_MIN, 0, CBPOOL__BAD_RANGE, 0},
		{"", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"abc", 0, 10, CBPOOL__BAD_TEXT, 0},
		{" 5", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"5 ", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"\t5", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"5\n", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"5x", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"+5", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"-", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"--5", -10, 10, CBPOOL__BAD_TEXT, 0},
		{"- 5", -10, 10, CBPOOL__BAD_TEXT, 0},
		{"0x10", 0, 100, CBPOOL__BAD_TEXT, 0},
		{"1e3", 0, 10000, CBPOOL__BAD_TEXT, 0},
		{"5.0", 0, 10, CBPOOL__BAD_TEXT, 0},
		{"99999999999999999999999999x", 0, LLONG_MAX, CBPOOL__BAD_TEXT, 0},
	};
	int			wrong = 0;
	long long	v = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char	   *text = exact(cases[i].text);
		int			got;

		v = -42;
		errno = 1234;
		got = cbpool__parse_int(text, cases[i].lo, cases[i].hi, &v);
		if (got != cases[i].want || (got == 0 && v != cases[i].value) ||
			(got != 0 && v != -42) || errno != 1234)
		{
			diag("cbpool__parse_int(\"%s\", %lld, %lld) = %d, %lld (errno %d); expected %d, %lld",
				 cases[i].text, cases[i].lo, cases[i].hi, got, v, errno, cases[i].want,
				 cases[i].value);
			wrong++;
		}
		free(text);
	}
	is_int(wrong, 0, "cbpool__parse_int reads whole base-10 integers in range, and nothing "
		   "else (%d cases), leaving errno as it was", (int) (sizeof(cases) / sizeof(cases[0])));
	ok(cbpool__parse_int(NULL, 0, 10, &v) == CBPOOL__BAD_TEXT, "and NULL is no integer");

	{
		/* connbudget 1.1: the pace at the end of the hint */
		static const Stated hints[] = {
			{"FATAL:  53300: too many connections\nHINT:  Pools re-read their share every 250 ms "
			"(connbudget.refresh_interval).", 250},
			{"re-read their share every 10 ms (connbudget.refresh_interval)", 10},
			{"re-read their share every 3600000 ms (connbudget.refresh_interval)", 3600000},
			{"re-read their share every 0000000100 ms (connbudget.refresh_interval)", 100},
			{"re-read their share every 9 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every 3600001 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every 99999999999999999999999 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every 4294967396 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every -100 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every +100 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every  100 ms (connbudget.refresh_interval)", 0},
			{"re-read their share every 100ms (connbudget.refresh_interval)", 0},
			{"re-read their share every 100 ms (connbudget.refresh_interva", 0},
			{"re-read their share every 100 ms", 0},
			{"re-read their share every 100", 0},
			{"re-read their share every ", 0},
			{"re-read their share every", 0},
			{"re-read their share every abc ms (connbudget.refresh_interval)", 0},
			{"", 0},
		};

		/* connbudget 1.2: "connbudget: retry_ms=N" in the context field,
		   read before the hint */
		static const Stated contexts[] = {
			{"CONTEXT:  connbudget: retry_ms=250 protocol=2", 250},
			{"FATAL:  53300: too many connections for application \"shop\"\n"
			"DETAIL:  The budget is full.\nCONTEXT:  connbudget: retry_ms=1000 protocol=2\n", 1000},
			{"CONTEXT:  connbudget: retry_ms=10 protocol=2", 10},
			{"CONTEXT:  connbudget: retry_ms=3600000 protocol=2", 3600000},
			{"CONTEXT:  connbudget: retry_ms=0000000250 protocol=2", 250},
			{"CONTEXT:  connbudget: retry_ms=250\n", 250},
			{"CONTEXT:  connbudget: retry_ms=5 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=9 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=0 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=3600001 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=99999999999 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=4294967546 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=250x protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=250.0 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=250,protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms= protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=-250 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=+250 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms= 250 protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=abc protocol=2", 0},
			{"CONTEXT:  connbudget: retry_ms=", 0},
			{"CONTEXT:  connbudget: retry_m", 0},
			/* cut right after the first digit, at the end of its buffer */
			{"CONTEXT:  connbudget: retry_ms=2", 0},
			/* both: the context's */
			{"FATAL:  53300: too many connections\nHINT:  Pools re-read their share every 500 ms "
			"(connbudget.refresh_interval).\nCONTEXT:  connbudget: retry_ms=250 protocol=2\n", 250},
			{"FATAL:  53300: too many connections\nCONTEXT:  connbudget: retry_ms=250 protocol=2\n"
			"HINT:  Pools re-read their share every 500 ms (connbudget.refresh_interval).", 250},
		};
		int			nhints = (int) (sizeof(hints) / sizeof(hints[0]));
		int			ncontexts = (int) (sizeof(contexts) / sizeof(contexts[0]));

		is_int(stated_wrong(hints, (size_t) nhints), 0,
			   "a refusal's stated pace is read only when it is a number of ms within "
			   "connbudget.refresh_interval's range, in the exact text (%d hostile and good hints, "
			   "each at the very end of its buffer)", nhints);
		is_int(stated_wrong(contexts, (size_t) ncontexts), 0,
			   "and so is \"connbudget: retry_ms=N\" from the context field, before the hint: "
			   "a whole number of ms from 10 to 3600000 ending its word, or none (%d texts, each "
			   "at the very end of its buffer, one cut right after \"retry_ms=2\")", ncontexts);
		is_int(cbpool__stated_refresh_ms(NULL), 0, "and no text states no pace");
	}

	{
		/* a pace stated but not read is a bad answer; none stated is not */
		static const struct
		{
			const char *text;
			const char *bad;	/* the word quoted, or NULL: not bad */
		}			paces[] = {
			{"FATAL:  53300: sorry, too many clients already", NULL},
			{"FATAL:  53300: too many connections for role \"mallory\"", NULL},
			{"CONTEXT:  connbudget: retry_ms=250 protocol=2", NULL},
			{"HINT:  Pools re-read their share every 250 ms (connbudget.refresh_interval).", NULL},
			{"CONTEXT:  connbudget: retry_ms=abc protocol=2", "\"abc\""},
			{"CONTEXT:  connbudget: retry_ms=99999999999 protocol=2", "\"99999999999\""},
			{"CONTEXT:  connbudget: retry_ms=-250 protocol=2", "\"-250\""},
			{"CONTEXT:  connbudget: retry_ms=5\n", "\"5\""},
			{"CONTEXT:  connbudget: retry_ms=", "\"\""},
			{"HINT:  Pools re-read their share every abc ms (connbudget.refresh_interval).",
			"\"abc\""},
		};
		int			wrong = 0;

		for (size_t i = 0; i < sizeof(paces) / sizeof(paces[0]); i++)
		{
			char	   *text = exact(paces[i].text);
			char		word[48] = "";
			int			bad = cbpool__stated_bad(text, "connbudget: retry_ms=", NULL, word,
												 sizeof(word)) ||
				cbpool__stated_bad(text, "re-read their share every ",
								   " ms (connbudget.refresh_interval)", word, sizeof(word));

			if (bad != (paces[i].bad != NULL) || (bad && strcmp(word, paces[i].bad) != 0))
			{
				diag("cbpool__stated_bad(\"%s\") = %d, %s; expected %s", paces[i].text, bad, word,
					 paces[i].bad ? paces[i].bad : "none");
				wrong++;
			}
			free(text);
		}
		is_int(wrong, 0, "a pace stated in a form that does not read (\"abc\", out of range, a "
			   "sign) is told apart from none stated, as in PostgreSQL's own 53300 (%d texts)",
			   (int) (sizeof(paces) / sizeof(paces[0])));
	}

	{
		char		out[160];
		char		lng[100];

		cbpool__quote("a\"b\\\n\x7f", 6, out, sizeof(out));
		is_str(out, "\"a\\\"b\\\\\\x0a\\x7f\"", "a server's value is logged quoted, escaped");
		memset(lng, 'x', sizeof(lng));
		cbpool__quote(lng, (int) sizeof(lng), out, sizeof(out));
		ok(strlen(out) == 32 + 5 && strcmp(out + 33, "...\"") == 0,
		   "and cut at 32 bytes: %s", out);
		cbpool__quote(lng, (int) sizeof(lng), out, 16);
		ok(strlen(out) < 16, "and never beyond its buffer: %s", out);
	}
}


/* ---- answers of the share rewritten by the relay ---- */

/*
 * Each answer of the list, three times in a row, then a good one: no size
 * is taken from them, each is said once as a warning, and the good answer
 * after them is taken.  The pool holds a share of GOOD when it starts.
 */
static void
hostile_loop(cbpool *pool, PGconn *admin, const char *app, int kind, const Answer *list,
			 int n, const Answer *good)
{
	cbpool_stats_t s;
	int			ignored = 0,
				logged_once = 0,
				taken_again = 0,
				okay;

	for (int i = 0; i < n; i++)
	{
		const Answer *a = &list[i];
		int			warnings = logged("budget-invalid", NULL);
		int			said = logged_at("budget-invalid", a->logged, CBPOOL_LOG_WARN);
		int			rewrites = rewritten(kind);
		uint64_t	refreshes;
		Watch		w;

		s = stats_of(pool);
		relay_set(kind, a);
		w = watch_pool(pool, admin, app, s.budget_errors + 3, 10000);
		relay_set(kind, good);
		s = stats_of(pool);
		refreshes = s.budget_refreshes;
		if (ok(w.reached && w.share_lo == GOOD && w.share_hi == GOOD && w.size_lo == GOOD &&
			   w.size_hi == GOOD && w.total_hi <= GOOD && w.backends_hi <= GOOD &&
			   w.extension_lo == 1 && w.extension_hi == 1,
			   "%s, %s: three such answers (%d rewritten) are errors, not a size: the share "
			   "stays %d, max_size %d, connections at most %d, the server's backends at most %ld",
			   kind_name[kind], a->name, rewritten(kind) - rewrites, w.share_hi, w.size_hi,
			   w.total_hi, w.backends_hi))
			ignored++;
		else
			diag("  reached %d, share %d..%d, max_size %d..%d, extension %d..%d", w.reached,
				 w.share_lo, w.share_hi, w.size_lo, w.size_hi, w.extension_lo, w.extension_hi);
		if (ok(logged_at("budget-invalid", a->logged, CBPOOL_LOG_WARN) == said + 1 &&
			   logged("budget-invalid", NULL) == warnings + 1,
			   "%s, %s: said once, as a warning, what was wrong: %s", kind_name[kind], a->name,
			   a->logged))
			logged_once++;
		else
		{
			diag("  %d warnings with that text (was %d), %d in all (was %d)",
				 logged("budget-invalid", a->logged), said, logged("budget-invalid", NULL),
				 warnings);
			pthread_mutex_lock(&log_lock);
			if (log_count > 0)
				diag("  the last: %s", log_entries[log_count - 1].text);
			pthread_mutex_unlock(&log_lock);
		}
		okay = wait_stat(pool, s.budget_refreshes > refreshes && s.share == GOOD, 5000);
		if (ok(okay, "%s, %s: then a good answer is taken again (%llu refreshes)",
			   kind_name[kind], a->name, (unsigned long long) s.budget_refreshes))
			taken_again++;
	}
	diag("of %d hostile answers of %s: %d ignored, %d logged once, %d followed by a good "
		 "answer taken", n, kind_name[kind], ignored, logged_once, taken_again);
}

/* Connections a pool closed, for whatever reason. */
static uint64_t
closed_of(const cbpool_stats_t *s)
{
	return s->closed_broken + s->closed_idle + s->closed_lifetime + s->closed_over_share;
}

/* The connections the answers came on stayed, and budget_errors counted
   every answer; the pool serves as before. */
static void
after_hostile(cbpool *pool, const char *app, const char *pod, uint64_t connects,
			  uint64_t closed, int answers)
{
	cbpool_stats_t s = stats_of(pool);

	ok(s.connects == connects && closed_of(&s) == closed,
	   "the connections the answers came on stayed: no connect, no close meanwhile "
	   "(%llu connects, %llu closed broken)", (unsigned long long) (s.connects - connects),
	   (unsigned long long) s.closed_broken);
	ok(s.budget_errors >= (uint64_t) answers * 3, "budget_errors counts every one (%llu)",
	   (unsigned long long) s.budget_errors);
	{
		char		text[16384];
		char		want[256];

		cbpool_prometheus(pool, text, sizeof(text));
		snprintf(want, sizeof(want),
				 "cbpool_budget_errors_total{application=\"%s\",pod=\"%s\"} %llu\n", app, pod,
				 (unsigned long long) stats_of(pool).budget_errors);
		ok(strstr(text, want) != NULL, "and so does budget_errors_total");
	}
	ok(pool_serves(pool, 5000), "the pool serves as before");
}

/* How many backends the server has for the application app. */
static const char *
backends_sql(const char *app)
{
	static char sql[256];

	snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
	return sql;
}

/*
 * Wait (up to 10 s) until the server has the pool's n connections of the
 * application and no more, and they stay so for 300 ms; the count last
 * seen.  A connect the pool abandoned when its share fell (it started it
 * toward a larger size) may still reach the server: the relay has passed
 * its startup message on, and the server logs it in and lets it go once
 * it finds the other end closed.  So first the relay's pairs come down to
 * n, then the server's backends.
 */
static long
settle_backends(PGconn *admin, const char *app, long n)
{
	double		deadline = now_seconds() + 10;
	double		since = 0;
	long		got = -1;

	while (__atomic_load_n(&relay.tcp.pairs, __ATOMIC_ACQUIRE) > n && now_seconds() < deadline)
		sleep_ms(10);
	while (now_seconds() < deadline)
	{
		got = pg_long(admin, backends_sql(app));
		if (got != n)
			since = 0;
		else if (since == 0)
			since = now_seconds();
		else if (now_seconds() - since >= 0.3)
			break;
		sleep_ms(10);
	}
	return got;
}

/*
 * From here on the relay answers the queries of this kind for the server:
 * first good3, a share of 3, to see that a rewritten answer (what, in the
 * test's words) reaches the pool, then good, a share of GOOD, which the
 * server would let the pool exceed; then the n hostile answers of list,
 * and what must hold after them.  Before them the pool has settled: GOOD
 * connections, no connect under way, and the server's backends of the
 * application are those GOOD (the ones closed when the share dropped to 3
 * are gone).
 */
static void
hostile_answers(cbpool *pool, PGconn *admin, const char *app, const char *pod, int kind,
				const char *what, const Answer *good3, const Answer *good,
				const Answer *list, int n)
{
	cbpool_stats_t s;
	uint64_t	connects,
				closed;
	long		backends;
	int			okay;

	relay_set(kind, good3);
	okay = wait_stat(pool, s.share == 3 && s.max_size == 3 && s.total == 3, 10000);
	ok(okay, "%s the relay rewrites reaches the pool (share %d, max_size %d, total %d)", what,
	   s.share, s.max_size, s.total);
	relay_set(kind, good);
	okay = wait_stat(pool, s.share == GOOD && s.max_size == GOOD && s.total == GOOD &&
					 s.connecting == 0, 10000);
	backends = settle_backends(admin, app, GOOD);
	ok(okay && backends == GOOD,
	   "with a good answer of %d the pool holds %d connections (share %d, total %d, "
	   "%d connecting; the server's backends %ld)", GOOD, GOOD, s.share, s.total,
	   s.connecting, backends);
	s = stats_of(pool);
	ok(s.connects == (uint64_t) s.total + closed_of(&s),
	   "every connection it made it holds or closed for a reason it counts (%llu connects, "
	   "%d held, %llu closed): none was opened beyond the share and dropped when the share "
	   "fell", (unsigned long long) s.connects, s.total, (unsigned long long) closed_of(&s));
	connects = s.connects;
	closed = closed_of(&s);
	hostile_loop(pool, admin, app, kind, list, n, good);
	after_hostile(pool, app, pod, connects, closed, n);
}

/* Wait (up to 5 s) until the pool's share is the one connbudget.pods shows
   for its pod; the pool's stats and that share, the last seen, into *s and
   *listed. */
static int
share_as_listed(cbpool *pool, PGconn *admin, const char *pod, cbpool_stats_t *s, long *listed)
{
	char		sql[256];

	snprintf(sql, sizeof(sql), "SELECT coalesce((SELECT share FROM connbudget.pods "
			 "WHERE pod = '%s'), -1)", pod);
	return wait_until((*s = stats_of(pool), *listed = pg_long(admin, sql)), s->share == *listed,
					  5000);
}

/* ---- protocol 2: connbudget.share rewritten by the relay ---- */

/* the pool's own max_size: its size when the server does not govern it */
#define FIXED 8

static void
test_protocol2(PGconn *admin)
{
	cbpool_config cfg = test_config("hostile", "pod-hostile");
	cbpool	   *pool;
	cbpool_stats_t s;
	int			n = (int) (sizeof(hostile_words) / sizeof(hostile_words[0]));
	int			share1 = passed(Q_SHARE1) + rewritten(Q_SHARE1),
				okay;

	cfg.conninfo = tcp_relay_conninfo(&relay.tcp);
	cfg.min_idle = FIXED;		/* grows to whatever share it believes, up to FIXED */
	cfg.max_size = FIXED;
	log_reset();
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.extension == 1 && s.share > GOOD && s.budget > 0, 10000);
	ok(okay && passed(Q_SHARE2) > 0 && passed(Q_SHARE1) + rewritten(Q_SHARE1) == share1,
	   "through the relay, the pool learns the server's share from connbudget.share (%d of a "
	   "budget of %d; connbudget.share answered %d times, pool_share() %d)", s.share, s.budget,
	   passed(Q_SHARE2), passed(Q_SHARE1) + rewritten(Q_SHARE1) - share1);

	hostile_answers(pool, admin, "hostile", "pod-hostile", Q_SHARE2, "a connbudget.share",
					&good2_3, &good2_4, hostile_words, n);

	/* words this pool does not know, around a valid share: taken */
	{
		int			warnings = logged("budget-invalid", NULL);

		relay_set(Q_SHARE2, &words_future);
		okay = wait_stat(pool, s.share == 3 && s.max_size == 3 && s.total == 3, 5000);
		ok(okay && logged("budget-invalid", NULL) == warnings,
		   "a share with words this pool does not know (protocol=3, future=1, weight=0.5, "
		   "zone=eu-west-1a) is taken: share %d, max_size %d, total %d", s.share, s.max_size,
		   s.total);
		relay_set(Q_SHARE2, &good2_4);
		okay = wait_stat(pool, s.share == GOOD && s.max_size == GOOD && s.total == GOOD, 5000);
		ok(okay, "and a share of %d after it (share %d, total %d)", GOOD, s.share, s.total);
	}

	/* status=left: another connection of the pool's session handed its
	   share back; the pool takes no size from it and reports again at its
	   usual pace -- not faster, whatever a server keeps answering */
	{
		int			warnings = logged("budget-invalid", NULL),
					from = rewritten(Q_SHARE2);
		uint64_t	errors,
					refreshes;
		double		first,
					elapsed;
		Watch		w;

		s = stats_of(pool);
		errors = s.budget_errors;
		relay_set(Q_SHARE2, &words_left);
		w = watch_until(pool, admin, "hostile", 0, Q_SHARE2, from + 1, 5000);
		first = now_seconds();
		if (w.reached)
			w = watch_until(pool, admin, "hostile", 0, Q_SHARE2, from + 5, 5000);
		elapsed = now_seconds() - first;
		relay_set(Q_SHARE2, &good2_4);
		s = stats_of(pool);
		refreshes = s.budget_refreshes;
		ok(w.reached && w.share_lo == GOOD && w.share_hi == GOOD && w.size_lo == GOOD &&
		   w.size_hi == GOOD && w.total_hi <= GOOD && w.backends_hi <= GOOD &&
		   w.extension_lo == 1 && w.errors == errors && logged("budget-invalid", NULL) == warnings,
		   "status=left: no size taken and no error: the share stays %d, max_size %d, "
		   "connections at most %d, the server's backends at most %ld, budget_errors +%llu",
		   w.share_hi, w.size_hi, w.total_hi, w.backends_hi,
		   (unsigned long long) (w.errors - errors));
		ok(w.reached && elapsed >= 0.3 && elapsed < 2.0,
		   "and the pool reports again at its refresh interval, no faster: 4 more answers in "
		   "%.0f ms (at 100 ms, 360 ms or more)", elapsed * 1000);
		okay = wait_stat(pool, s.budget_refreshes > refreshes && s.share == GOOD, 5000);
		ok(okay, "then a share is taken again (%llu refreshes)",
		   (unsigned long long) s.budget_refreshes);
	}

	/* status=other: not governed; a fixed size as without the extension */
	{
		int			from = rewritten(Q_SHARE2),
					warnings = logged("budget-invalid", NULL);
		Watch		w;

		relay_set(Q_SHARE2, &words_other);
		okay = wait_stat(pool, s.extension == 0 && s.max_size == FIXED, 5000);
		ok(okay, "status=other: the pool is not governed and uses its fixed size, as without the "
		   "extension (extension %d, max_size %d)", s.extension, s.max_size);
		w = watch_until(pool, admin, "hostile", 0, Q_SHARE2, from + 3, 5000);
		relay_set(Q_SHARE2, &good2_4);
		ok(w.reached && w.extension_hi == 0 && w.size_lo == FIXED && w.size_hi == FIXED &&
		   w.total_hi <= FIXED && w.backends_hi <= FIXED,
		   "while the server says so (%d answers): max_size %d, connections at most %d, the "
		   "server's backends at most %ld", rewritten(Q_SHARE2) - from, w.size_hi, w.total_hi,
		   w.backends_hi);
		ok(logged_at("not-governed", "using a fixed max_size of 8", CBPOOL_LOG_WARN) == 1 &&
		   logged("not-governed", NULL) == 1 && logged("budget-invalid", NULL) == warnings,
		   "said once, as a warning: not governed, a fixed max_size of %d", FIXED);
		okay = wait_stat(pool, s.extension == 1 && s.share == GOOD && s.max_size == GOOD &&
						 s.total == GOOD && s.connecting == 0, 5000);
		ok(okay, "a share after it governs the pool again (extension %d, share %d, max_size %d, "
		   "total %d, %d connecting)", s.extension, s.share, s.max_size, s.total, s.connecting);
		is_int(settle_backends(admin, "hostile", GOOD), GOOD,
			   "and the server's backends of the application are %d again", GOOD);
		s = stats_of(pool);
		ok(s.connects == (uint64_t) s.total + closed_of(&s),
		   "every connection it made it holds or closed for a reason it counts (%llu "
		   "connects, %d held, %llu closed): none beyond the share of %d",
		   (unsigned long long) s.connects, s.total, (unsigned long long) closed_of(&s), GOOD);
	}

	/* status=refused: governed no more; the last share stands, asked again
	   seldom */
	{
		int			from = rewritten(Q_SHARE2);
		uint64_t	errors,
					refreshes;
		double		first,
					gap;
		Watch		w1,
					w2;

		s = stats_of(pool);
		errors = s.budget_errors;
		relay_set(Q_SHARE2, &words_refused);
		w1 = watch_until(pool, admin, "hostile", 0, Q_SHARE2, from + 1, 5000);
		first = now_seconds();
		w2 = watch_until(pool, admin, "hostile", 0, Q_SHARE2, from + 2, 5000);
		gap = now_seconds() - first;
		relay_set(Q_SHARE2, &good2_4);
		/* the relay has sent the second refusal; the pool counts it once it
		   has taken it */
		if (w2.reached)
			(void) wait_stat(pool, s.budget_errors >= errors + 2, 5000);
		s = stats_of(pool);
		refreshes = s.budget_refreshes;
		ok(w1.reached && w2.reached && w1.share_lo == GOOD && w2.share_hi == GOOD &&
		   w1.size_lo == GOOD && w2.size_hi == GOOD && w1.size_hi == GOOD &&
		   w2.size_lo == GOOD && w1.total_hi <= GOOD && w2.total_hi <= GOOD &&
		   w1.backends_hi <= GOOD && w2.backends_hi <= GOOD && w2.extension_lo == 1,
		   "status=refused sqlstate=42501 reason=role_may_not_claim: no size taken, the pool "
		   "keeps its share of %d (max_size %d, connections at most %d, backends at most %ld)",
		   w2.share_hi, w2.size_hi, w2.total_hi, w2.backends_hi);
		if (!w1.reached || !w2.reached || w1.backends_hi > GOOD || w1.total_hi > GOOD ||
			w1.share_hi != GOOD)
			diag("  before the first refusal: reached %d, share %d..%d, max_size %d..%d, "
				 "connections at most %d, backends at most %ld", w1.reached, w1.share_lo,
				 w1.share_hi, w1.size_lo, w1.size_hi, w1.total_hi, w1.backends_hi);
		if (w1.backends_hi > GOOD || w2.backends_hi > GOOD)
			diag("  the pool meanwhile: %llu connects, %llu closed (%llu broken)",
				 (unsigned long long) s.connects, (unsigned long long) closed_of(&s),
				 (unsigned long long) s.closed_broken);
		ok(logged_at("share-refused", "(42501 role_may_not_claim)", CBPOOL_LOG_ERROR) == 1 &&
		   logged("share-refused", NULL) == 1,
		   "said once, as an error, with its sqlstate and reason");
		ok(s.budget_errors >= errors + 2, "counted in budget_errors (+%llu)",
		   (unsigned long long) (s.budget_errors - errors));
		ok(w2.reached && gap >= 0.9,
		   "and asked again no sooner than 10 refresh intervals later (%.0f ms)", gap * 1000);
		okay = wait_stat(pool, s.budget_refreshes > refreshes && s.share == GOOD, 5000);
		ok(okay, "then a share is taken again (%llu refreshes)",
		   (unsigned long long) s.budget_refreshes);
	}
	ok(pool_serves(pool, 5000), "the pool serves");
	cbpool_close(pool);
	relay_set(Q_SHARE2, NULL);
}

/* ---- protocol 1: connbudget 1.1, and pool_share() rewritten ---- */

static void
test_protocol1(PGconn *admin)
{
	cbpool_config cfg = test_config("hostile1", "pod-hostile1");
	cbpool	   *pool;
	cbpool_stats_t s;
	int			n = (int) (sizeof(hostile_shares) / sizeof(hostile_shares[0]));
	int			tried2 = rewritten(Q_SHARE2),
				asked1 = passed(Q_SHARE1),
				okay;

	/* the relay answers the protocol-2 query as connbudget 1.1 does */
	relay_fail(Q_SHARE2, &unknown_share);
	cfg.conninfo = tcp_relay_conninfo(&relay.tcp);
	cfg.min_idle = 20;
	log_reset();
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.extension == 1 && s.share > GOOD && s.budget > 0, 10000);
	ok(okay && rewritten(Q_SHARE2) > tried2 && passed(Q_SHARE1) > asked1,
	   "answered 42704 for connbudget.share, as by connbudget 1.1, the pool reads its share "
	   "with pool_share() (%d of a budget of %d)", s.share, s.budget);
	{
		long		listed;

		okay = share_as_listed(pool, admin, "pod-hostile1", &s, &listed);
		ok(okay, "and sizes itself from it: its share is the one connbudget.pods shows (%d, %ld)",
		   s.share, listed);
	}
	ok(logged("no-extension", NULL) == 0 && logged("budget-error", NULL) == 0 &&
	   logged("budget-invalid", NULL) == 0 && s.budget_errors == 0,
	   "it keeps working against servers with connbudget 1.1: no error, no fixed size "
	   "(%llu budget errors)", (unsigned long long) s.budget_errors);
	asked1 = passed(Q_SHARE1);
	wait_until((void) 0, passed(Q_SHARE1) >= asked1 + 5, 5000);
	ok(passed(Q_SHARE1) >= asked1 + 5 && rewritten(Q_SHARE2) == tried2 + 1,
	   "from then on it asks with pool_share() (%d more answers); the protocol-2 query was "
	   "tried once (%d)", passed(Q_SHARE1) - asked1, rewritten(Q_SHARE2) - tried2);

	/* from here on the relay answers pool_share() for the server too */
	hostile_answers(pool, admin, "hostile1", "pod-hostile1", Q_SHARE1, "a pool_share() answer",
					&good3, &good4, hostile_shares, n);
	cbpool_close(pool);
	relay_set(Q_SHARE1, NULL);
	relay_fail(Q_SHARE2, NULL);
}

/* ---- a huge share, well formed ---- */

/* the pool's own max_size against it */
#define CAP 4

static const Answer huge1 = {.name = "huge", .ncols = 4, .nrows = 1,
.v = {{"2000", "2000", "2000", "100"}}};
static const Answer huge2 = {.name = "huge",
P2("protocol=2 status=ok max_size=2000 min_size=2000 allocation=2000 pods=1 budget=2000 "
   "refresh_ms=100")};

/*
 * A share of 2000 with a min_size of 2000 (within MAX_BACKENDS, in order):
 * well formed, so the pool believes it, and only its own max_size stands
 * between it and 2000 connections.  With max_size 4 it never opens more
 * than 4, over 20 such answers.
 */
static void
huge_share(PGconn *admin, int protocol)
{
	const char *app = protocol == 2 ? "huge2" : "huge1";
	cbpool_config cfg = test_config(app, protocol == 2 ? "pod-huge2" : "pod-huge1");
	int			kind = protocol == 2 ? Q_SHARE2 : Q_SHARE1;
	cbpool	   *pool;
	cbpool_stats_t s;
	Watch		w;
	int			from,
				okay;

	if (protocol == 1)
		relay_fail(Q_SHARE2, &unknown_share);
	relay_set(kind, protocol == 2 ? &huge2 : &huge1);
	cfg.conninfo = tcp_relay_conninfo(&relay.tcp);
	cfg.max_size = CAP;
	cfg.min_idle = 1;
	log_reset();
	from = rewritten(kind);
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.share == 2000 && s.total == CAP, 10000);
	ok(okay, "protocol %d, a share of max_size 2000, min_size 2000, budget 2000: well formed, "
	   "believed (share %d), and the pool fills its max_size of %d (total %d)", protocol,
	   s.share, CAP, s.total);
	w = watch_until(pool, admin, app, 0, kind, from + 20, 10000);
	s = stats_of(pool);
	ok(w.reached && w.total_hi <= CAP && w.size_hi <= CAP && w.backends_hi <= CAP &&
	   s.connects <= CAP,
	   "over 20 such answers it never holds more than its max_size of %d: connections at most "
	   "%d, max_size at most %d, the server's backends at most %ld, %llu connects in all",
	   CAP, w.total_hi, w.size_hi, w.backends_hi, (unsigned long long) s.connects);
	ok(logged("budget-invalid", NULL) == 0 && s.budget_errors == 0,
	   "and counts no error: the answer is well formed (%llu budget errors)",
	   (unsigned long long) s.budget_errors);
	cbpool_close(pool);
	relay_set(kind, NULL);
	relay_fail(Q_SHARE2, NULL);
	pg_wait_for(admin, backends_sql(app), 0, 10000);
}

static void
test_huge_share(PGconn *admin)
{
	huge_share(admin, 2);
	huge_share(admin, 1);
}

/* ---- a refusal's stated pace ---- */

static const Failure pace_abc = {"53300", "connbudget: retry_ms=abc lease_ms=3000 protocol=2"};
static const Failure pace_huge = {"53300", "connbudget: retry_ms=99999999999 lease_ms=3000 protocol=2"};
static const Failure pace_negative = {"53300", "connbudget: retry_ms=-250 lease_ms=3000 protocol=2"};
static const Failure pace_none = {"53300", NULL};

/*
 * The pool holds 3 connections (a share of 3); the relay then refuses
 * every connect with 53300 and the share becomes 4, so the pool tries to
 * open a fourth, again and again.  A refusal whose context states its
 * pace as something that is not a number of ms in range: not taken,
 * counted in budget_errors at every refusal, said once as a warning
 * ("pace-invalid") over the run of refusals.  A refusal that states no
 * pace (PostgreSQL's own) is no error.
 */
static int
refused_run(cbpool *pool, PGconn *admin, const Failure *f, const char *what, const char *word)
{
	cbpool_stats_t s;
	uint64_t	errors,
				refusals;
	int			warnings = logged("pace-invalid", NULL),
				from,
				okay;
	char		text[16384],
				want[256];

	relay_set(Q_SHARE2, &good2_3);
	okay = wait_stat(pool, s.share == 3 && s.total == 3 && s.connecting == 0, 10000);
	pg_wait_for(admin, backends_sql("paced"), 3, 10000);
	s = stats_of(pool);
	errors = s.budget_errors;
	refusals = s.connects_refused;
	from = relay_refused();
	relay_refuse_connects(f);
	relay_set(Q_SHARE2, &good2_4);
	wait_until((void) 0, relay_refused() >= from + 4, 10000);
	okay = okay && wait_stat(pool, s.connects_refused >= refusals + 4, 5000);
	relay_refuse_connects(NULL);
	s = stats_of(pool);
	ok(okay, "%s: the relay refuses the pool's connects with 53300 (%llu refused)", what,
	   (unsigned long long) (s.connects_refused - refusals));
	if (word)
	{
		char		said[128];

		snprintf(said, sizeof(said), "a refusal (53300) states its pace as %s, not a number of ms "
				 "from 10 to 3600000; not taken", word);
		ok(logged_at("pace-invalid", said, CBPOOL_LOG_WARN) == 1 &&
		   logged("pace-invalid", NULL) == warnings + 1,
		   "%s: said once, as a warning (pace-invalid), over %llu refusals: %s", what,
		   (unsigned long long) (s.connects_refused - refusals), said);
		ok(s.budget_errors - errors == s.connects_refused - refusals,
		   "%s: every one counted in budget_errors (+%llu for %llu refusals)", what,
		   (unsigned long long) (s.budget_errors - errors),
		   (unsigned long long) (s.connects_refused - refusals));
		cbpool_prometheus(pool, text, sizeof(text));
		snprintf(want, sizeof(want),
				 "cbpool_budget_errors_total{application=\"paced\",pod=\"pod-paced\"} %llu\n",
				 (unsigned long long) s.budget_errors);
		ok(strstr(text, want) != NULL, "%s: and in budget_errors_total", what);
	}
	else
		ok(logged("pace-invalid", NULL) == warnings && s.budget_errors == errors,
		   "%s: no error (budget_errors +%llu)", what,
		   (unsigned long long) (s.budget_errors - errors));
	okay = wait_stat(pool, s.total == GOOD && s.share == GOOD, 10000);
	ok(okay, "%s: once the relay lets connects through, the pool grows to its share of %d "
	   "(total %d)", what, GOOD, s.total);
	return okay;
}

static void
test_stated_pace(PGconn *admin)
{
	cbpool_config cfg = test_config("paced", "pod-paced");
	cbpool	   *pool;

	relay_set(Q_SHARE2, &good2_3);
	cfg.conninfo = tcp_relay_conninfo(&relay.tcp);
	cfg.max_size = FIXED;
	cfg.min_idle = FIXED;
	log_reset();
	pool = open_or_bail(&cfg);
	refused_run(pool, admin, &pace_none, "a 53300 that states no pace", NULL);
	refused_run(pool, admin, &pace_abc, "retry_ms=abc", "\"abc\"");
	refused_run(pool, admin, &pace_huge, "retry_ms=99999999999", "\"99999999999\"");
	refused_run(pool, admin, &pace_negative, "retry_ms=-250", "\"-250\"");
	ok(pool_serves(pool, 5000), "the pool serves");
	cbpool_close(pool);
	relay_set(Q_SHARE2, NULL);
	pg_wait_for(admin, backends_sql("paced"), 0, 10000);
}

/* ---- someone else's connbudget.pool_share() ---- */

/* Replace the squatter's function at once (in one transaction, so that the
   pool never finds none, which would make it think there is no extension);
   every call is recorded in squat_calls. */
static void
squat(PGconn *conn, const char *columns, const char *body)
{
	char		sql[1024];

	snprintf(sql, sizeof(sql),
			 "BEGIN; DROP FUNCTION IF EXISTS connbudget.pool_share(integer); "
			 "CREATE FUNCTION connbudget.pool_share(demand integer) RETURNS TABLE (%s) "
			 "LANGUAGE sql AS $f$ INSERT INTO public.squat_calls DEFAULT VALUES; %s $f$; COMMIT",
			 columns, body);
	pg_exec(conn, sql);
}

static const char squat_ints[] =
"max_size integer, min_size integer, budget integer, refresh_ms integer";

/* A database squat without the extension, where someone else creates a
   schema connbudget and a table of the calls of its function. */
static PGconn *
squat_database(PGconn *admin, const char *port)
{
	char		p[32];
	PGconn	   *other;

	snprintf(p, sizeof(p), "port=%s", port);
	pg_exec(admin, "CREATE DATABASE squat");
	other = pg_connect_or_bail(p, "dbname=squat", "application_name=admin");
	pg_exec(other, "SET client_min_messages = warning");
	pg_exec(other, "CREATE SCHEMA connbudget");
	pg_exec(other, "CREATE TABLE public.squat_calls "
			"(called_at timestamptz DEFAULT clock_timestamp())");
	is_str(pg_value(other, "SELECT count(*)::text FROM pg_extension WHERE extname = 'connbudget'"),
		   "0", "a database without the extension, where someone else creates a schema "
		   "connbudget and a function pool_share()");
	return other;
}

static const char *
squat_conninfo(const char *port)
{
	static char conninfo[512];

	snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=postgres dbname=squat",
			 getenv("PGHOST") ? getenv("PGHOST") : "127.0.0.1", port);
	return conninfo;
}

/* On this server (connbudget 1.2) the pool reads connbudget.share in the
   squat database too, and never calls the squatter's function. */
static void
test_squat_ignored(PGconn *admin)
{
	const char *port = getenv("PGPORT") ? getenv("PGPORT") : "5432";
	PGconn	   *other = squat_database(admin, port);
	cbpool_config cfg = test_config("squatted", "pod-squatted");
	cbpool	   *pool;
	cbpool_stats_t s;
	long		listed;
	int			okay;

	squat(other, squat_ints, "SELECT 2, 1, 40, 100");
	is_str(pg_value(other, "SELECT max_size || ' ' || budget FROM connbudget.pool_share(5)"),
		   "2 40", "its function answers like pool_share() when it is called");
	pg_exec(other, "TRUNCATE public.squat_calls");

	cfg.conninfo = squat_conninfo(port);
	cfg.min_idle = 3;
	cfg.refresh_ms = 100;
	log_reset();
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.extension == 1 && s.budget_refreshes >= 5, 10000);
	ok(okay && s.share >= 1 && s.budget > 0,
	   "on this server, a pool in that database reads its share with connbudget.share "
	   "(share %d of a budget of %d, %llu refreshes)", s.share, s.budget,
	   (unsigned long long) s.budget_refreshes);
	okay = share_as_listed(pool, admin, "pod-squatted", &s, &listed);
	ok(okay, "and sizes itself from the server's share: the one connbudget.pods shows (%d, %ld)",
	   s.share, listed);
	is_int(pg_long(other, "SELECT count(*) FROM public.squat_calls"), 0,
		   "it never called the squatter's function");
	ok(logged("budget-invalid", NULL) == 0 && logged("no-extension", NULL) == 0 &&
	   s.budget_errors == 0, "nor found anything wrong (%llu budget errors)",
	   (unsigned long long) s.budget_errors);
	cbpool_close(pool);
	PQfinish(other);
}

/* a second cluster, without the connbudget library */
static char nolib_dir[1100];
static char nolib_port[16];
static int	nolib_up;

static void
nolib_destroy(void)
{
	if (!nolib_up)
		return;
	nolib_up = 0;
	cluster_sh("cluster_destroy '%s' >/dev/null 2>&1", nolib_dir);
}

static void
nolib_start(void)
{
	snprintf(nolib_dir, sizeof(nolib_dir), "%s/nolib", cluster_dir());
	nolib_up = 1;
	if (cluster_sh("cluster_create '%s' shared_preload_libraries= >/dev/null && "
				   "cluster_start '%s' >/dev/null", nolib_dir, nolib_dir) != 0)
		bail_out("the cluster without the connbudget library did not start");
	cluster_port(nolib_dir, nolib_port, sizeof(nolib_port));
}

/* On a server without the connbudget library the pool speaks protocol 1
   there, and the squatter's function answers it. */
static void
test_squatter(void)
{
	static const struct
	{
		const char *name;
		const char *columns;	/* NULL: squat_ints */
		const char *body;
		const char *logged;
	}			cases[] = {
		{"text 'abc'", "max_size text, min_size text, budget text, refresh_ms text",
		"SELECT 'abc', '1', '40', '100'", "answered max_size \"abc\", not an integer"},
		{"a bigint 99999999999",
			"max_size bigint, min_size integer, budget integer, refresh_ms integer",
		"SELECT 99999999999, 1, 40, 100", "answered max_size \"99999999999\", out of range"},
		{"text ' 30'", "max_size text, min_size text, budget text, refresh_ms text",
		"SELECT ' 30', '1', '40', '100'", "answered max_size \" 30\", not an integer"},
		{"NULL", NULL, "SELECT NULL::integer, 1, 40, 100", "answered NULL for max_size"},
		{"a max_size of -1", NULL, "SELECT -1, 0, 40, 100", "answered max_size \"-1\", out of range"},
		{"no row", NULL, "SELECT 30, 1, 40, 100 WHERE false", "answered 0 rows, not 1"},
		{"max_size above budget", NULL, "SELECT 30, 1, 20, 100", "answered max_size 30 above budget 20"},
		{"two rows", NULL, "SELECT 30, 1, 40, 100 UNION ALL SELECT 30, 1, 40, 100",
		"answered 2 rows, not 1"},
		{"min_size above max_size", NULL, "SELECT 3, 5, 40, 100", "answered min_size 5 above max_size 3"},
		{"refresh_ms 0", NULL, "SELECT 30, 1, 40, 0", "answered refresh_ms \"0\", out of range"},
		{"a budget of 1000000", NULL, "SELECT 30, 1, 1000000, 100",
		"answered budget \"1000000\", out of range"},
		{"refresh_ms 99999999", NULL, "SELECT 30, 1, 40, 99999999",
		"answered refresh_ms \"99999999\", out of range"},
	};
	int			n = (int) (sizeof(cases) / sizeof(cases[0]));
	PGconn	   *admin,
			   *other;
	cbpool_config cfg = test_config("squatter", "pod-squatter");
	cbpool	   *pool;
	cbpool_stats_t s;
	int			ignored = 0,
				logged_once = 0,
				okay;

	nolib_start();
	{
		char		p[32];

		snprintf(p, sizeof(p), "port=%s", nolib_port);
		admin = pg_connect_or_bail(p, "application_name=admin");
	}
	is_str(pg_value(admin, "SELECT coalesce(current_setting('connbudget.share', true), 'none') "
					"|| ' [' || current_setting('shared_preload_libraries') || ']'"),
		   "none []", "a second server, without the connbudget library: no connbudget.share");
	other = squat_database(admin, nolib_port);
	squat(other, cases[0].columns, cases[0].body);

	cfg.conninfo = squat_conninfo(nolib_port);
	cfg.min_idle = 20;
	cfg.refresh_ms = 100;
	log_reset();
	pool = open_or_bail(&cfg);

	for (int i = 0; i < n; i++)
	{
		/* each case says something else than the one before (no good answer
		   comes between them, and one kind of failure is said once) */
		int			warnings = i == 0 ? 0 : logged("budget-invalid", NULL);
		Watch		w;

		if (i > 0)
			squat(other, cases[i].columns ? cases[i].columns : squat_ints, cases[i].body);
		s = stats_of(pool);
		/* the first case counts from the pool's start */
		w = watch_pool(pool, admin, "squatter", i == 0 ? 3 : s.budget_errors + 3, 10000);
		if (ok(w.reached && w.share_lo == -1 && w.share_hi == -1 && w.size_hi == 1 &&
			   w.total_hi <= 1 && w.backends_hi <= 1 && w.extension_lo == -1 &&
			   w.extension_hi == -1,
			   "%s: no size taken; the pool stays as before its first answer: share %d, "
			   "extension %d, max_size %d, connections at most %d, backends at most %ld",
			   cases[i].name, w.share_hi, w.extension_hi, w.size_hi, w.total_hi, w.backends_hi))
			ignored++;
		if (ok(logged_at("budget-invalid", cases[i].logged, CBPOOL_LOG_WARN) == 1 &&
			   logged("budget-invalid", NULL) == warnings + 1,
			   "%s: said once, as a warning: %s", cases[i].name, cases[i].logged))
			logged_once++;
		else
			diag("  %d warnings with that text, %d in all (was %d)",
				 logged("budget-invalid", cases[i].logged), logged("budget-invalid", NULL),
				 warnings);
	}
	diag("of %d answers of someone else's function: %d ignored, %d logged once", n, ignored,
		 logged_once);
	s = stats_of(pool);
	is_int(s.budget_refreshes, 0, "none of them counted as a refresh");
	is_int(logged("no-extension", NULL), 0, "nor as a server without the extension");
	{
		long		calls = pg_long(other, "SELECT count(*) FROM public.squat_calls");
		char		log[1200];

		snprintf(log, sizeof(log), "%s/server.log", nolib_dir);
		ok(0 < file_lines_containing(log, 0, "unrecognized configuration parameter \"connbudget.share\""),
		   "there the protocol-2 query failed: unrecognized configuration parameter "
		   "\"connbudget.share\" (42704)");
		ok(calls >= 3L * n, "so the pool asked with pool_share() (protocol 1): the squatter's "
		   "function was called %ld times", calls);
	}

	/* a plausible answer is all it takes: the pool cannot tell, and it sizes
	   itself by it (and so the function was what the pool called) */
	squat(other, squat_ints, "SELECT 3, 1, 40, 100");
	okay = wait_stat(pool, s.extension == 1 && s.share == 3 && s.total == 3, 10000);
	ok(okay, "a well-formed answer after them is taken (share %d, total %d)", s.share, s.total);
	cbpool_close(pool);
	PQfinish(other);
	PQfinish(admin);
	nolib_destroy();
}

/* ---- the host check's answers rewritten by the relay ---- */

static cbpool_host_stats
host0(cbpool_cluster *cl)
{
	cbpool_host_stats h;

	cbpool_cluster_host_stats(cl, 0, &h);
	return h;
}

static void
test_hostile_host_checks(void)
{
	cbpool_cluster_config cc = cbpool_cluster_config_default();
	cbpool_cluster *cl;
	cbpool_host_stats h = {0};
	char		err[256];
	int			n = (int) (sizeof(hostile_hosts) / sizeof(hostile_hosts[0]));
	int			kept = 0,
				okay;

	cc.pool = test_config("checked", "pod-checked");
	cc.pool.conninfo = tcp_relay_conninfo(&relay.tcp);
	cc.check_ms = 50;
	log_reset();
	cl = cbpool_cluster_open(&cc, err, sizeof(err));
	if (!cl)
		bail_out("cbpool_cluster_open: %s", err);
	okay = wait_until(h = host0(cl), h.role == CBPOOL_HOST_PRIMARY && h.writable && h.lag_ms == 0,
				  10000);
	ok(okay, "a one-host cluster through the relay: its host is the primary (role %d, lag %d)",
	   h.role, h.lag_ms);
	relay_set(Q_HOST, &standby250);
	okay = wait_until(h = host0(cl), h.role == CBPOOL_HOST_STANDBY && h.lag_ms == 250, 10000);
	ok(okay, "a valid check the relay rewrites reaches the pool: a standby 250 ms behind (role %d, "
	   "lag %d)", h.role, h.lag_ms);
	relay_set(Q_HOST, NULL);
	okay = wait_until(h = host0(cl), h.role == CBPOOL_HOST_PRIMARY && h.writable && h.lag_ms == 0,
				  10000);
	ok(okay, "and the server's own answer makes it the primary again");

	for (int i = 0; i < n; i++)
	{
		const Answer *a = &hostile_hosts[i];
		int			warnings = logged("host-invalid", NULL);
		uint64_t	target;
		int			changed = 0,
					reached;
		double		deadline = now_seconds() + 10;

		h = host0(cl);
		target = h.pool.host_check_errors + 3;
		relay_set(Q_HOST, a);
		for (;;)
		{
			h = host0(cl);
			changed += h.role != CBPOOL_HOST_PRIMARY || !h.writable || h.lag_ms != 0;
			reached = h.pool.host_check_errors >= target;
			if (reached || now_seconds() > deadline)
				break;
			sleep_ms(5);
		}
		relay_set(Q_HOST, NULL);
		{
			/* the second answer passed on as it was comes after the pool has
			   taken the first: the host check was valid again, and a failure
			   of the same kind would be said again */
			int			was = passed(Q_HOST);

			wait_until((void) 0, passed(Q_HOST) >= was + 2, 5000);
		}
		if (ok(reached && changed == 0,
			   "%s: three such checks are errors; the host stays the primary, lag 0, "
			   "writable (%d samples otherwise)", a->name, changed))
			kept++;
		ok(logged_at("host-invalid", a->logged, CBPOOL_LOG_WARN) == 1 &&
		   logged("host-invalid", NULL) == warnings + 1,
		   "%s: said once, as a warning: %s", a->name, a->logged);
	}
	diag("of %d hostile host checks, %d changed nothing", n, kept);
	{
		PGconn	   *conn = cbpool_cluster_acquire(cl, CBPOOL_WRITE, 5000);

		ok(conn && query_works(conn), "writes still go to the host");
		cbpool_cluster_release(cl, conn);
	}
	{
		static char text[65536];
		char		want[256];

		h = host0(cl);
		cbpool_cluster_prometheus(cl, text, sizeof(text));
		snprintf(want, sizeof(want), "cbpool_host_check_errors_total{application=\"checked\","
				 "pod=\"pod-checked\",host=\"127.0.0.1:%d\"} ", relay.tcp.port);
		ok(h.pool.host_check_errors >= (uint64_t) n * 3 && strstr(text, want) != NULL,
		   "host_check_errors counts them (%llu), exported as host_check_errors_total",
		   (unsigned long long) h.pool.host_check_errors);
		if (!strstr(text, want))
			diag("no %s in:\n%s", want, text);
		ok(h.pool.closed_broken == 0, "no connection was closed as broken for them");
	}
	cbpool_cluster_close(cl);
}


int
main(void)
{
	PGconn	   *admin = pg_connect_or_bail("application_name=admin");

	/* a plausible share, then words up to 5,000 bytes */
	snprintf(long_share, sizeof(long_share), "%s", S30);
	while (strlen(long_share) + 9 < sizeof(long_share))
		strcat(long_share, " future=1");
	memset(long_share + strlen(long_share), 'x', sizeof(long_share) - 1 - strlen(long_share));
	long_share[sizeof(long_share) - 1] = '\0';

	atexit(nolib_destroy);
	test_parser();
	pg_exec(admin, "CREATE EXTENSION connbudget");
	relay_start();
	test_protocol2(admin);
	test_protocol1(admin);
	test_huge_share(admin);
	test_stated_pace(admin);
	test_hostile_host_checks();
	tcp_relay_stop(&relay.tcp);
	test_squat_ignored(admin);
	test_squatter();
	PQfinish(admin);
	return done_testing();
}
