/*
 * pool_hostile.c -- the pool believes no answer.  A relay in front of the
 * server rewrites the answers of connbudget.pool_share() and of a cluster
 * host's role and lag check into nonsense (one column, five, no row, two
 * rows, NULL, "abc", "", " 5", "5x", "99999999999", -1, min_size above
 * max_size, max_size above budget, a budget beyond MAX_BACKENDS, refresh_ms
 * 0, 5 and 99999999, a binary value, a NUL or a newline inside); and in a
 * database without the extension, someone else's SQL function
 * connbudget.pool_share() answers nonsense.  Each time the pool neither
 * crashes nor takes a size from the answer (its stats and the server's
 * backends of its application stay within its last good share), counts
 * it in budget_errors (host_check_errors), says what was wrong once as a
 * warning, keeps its connections, and takes a good answer again after
 * bad ones.  The parser itself and the refusal hint's stated pace are
 * checked with hostile text too.
 *
 * cluster: connbudget.refresh_interval=100
 */
#include "common.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

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

typedef struct Relay
{
	int			listen_fd;
	int			port;
	int			stop;
	int			pairs;
	const Answer *share;		/* pool_share() answers become this; NULL: as is */
	const Answer *host;			/* host check answers become this */
	int			share_rewrites;
	int			host_rewrites;
	int			host_passed;	/* host check answers passed on as they were */
	pthread_t	thread;
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
		buf_put(out, name, strlen(name) + 1);
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

/* Which answer a RowDescription starts: 1 pool_share(), 2 the host check
   (three columns, the first unnamed: "?column?"; the others are named
   after what the server finds in their CASE), 0 another. */
static int
answer_kind(const char *body, size_t len)
{
	static const char *const share[] = {"max_size", "min_size", "budget", "refresh_ms"};
	const char *names[8];
	int			n;
	size_t		at = 2;

	if (len < 2)
		return 0;
	n = ((unsigned char) body[0] << 8) | (unsigned char) body[1];
	if (n > 8)
		return 0;
	for (int i = 0; i < n; i++)
	{
		const char *end = memchr(body + at, '\0', len - at);

		if (!end)
			return 0;
		names[i] = body + at;
		at = end - body + 1 + 18;
		if (at > len)
			return 0;
	}
	if (n == 4)
	{
		for (int i = 0; i < 4; i++)
			if (strcmp(names[i], share[i]) != 0)
				return 0;
		return 1;
	}
	return n == 3 && strcmp(names[0], "?column?") == 0 ? 2 : 0;
}

typedef struct RelayPair
{
	int			client;
	int			server;
	Buf			in;				/* from the server, not yet whole messages */
	Buf			out;			/* to the client */
	int			dropping;		/* the server's rows of a rewritten answer */
	int			rows;			/* rows of the answer sent instead */
} RelayPair;

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

		memcpy(&len, m + 1, 4);
		len = ntohl(len);
		whole = 1 + (size_t) len;
		if (p->in.len - at < whole)
			break;
		at += whole;
		if (type == 'T')
		{
			int			kind = answer_kind(m + 5, len - 4);
			const Answer *a = NULL;

			if (kind == 1)
				a = __atomic_load_n(&relay.share, __ATOMIC_ACQUIRE);
			else if (kind == 2)
				a = __atomic_load_n(&relay.host, __ATOMIC_ACQUIRE);
			if (a)
			{
				put_answer(&p->out, a);
				p->dropping = 1;
				p->rows = a->nrows;
				__atomic_fetch_add(kind == 1 ? &relay.share_rewrites : &relay.host_rewrites,
								   1, __ATOMIC_RELEASE);
				continue;
			}
			if (kind == 2)
				__atomic_fetch_add(&relay.host_passed, 1, __ATOMIC_RELEASE);
		}
		else if (p->dropping && type == 'D')
			continue;
		else if (p->dropping && type == 'C')
		{
			char		tag[32];
			size_t		c;

			snprintf(tag, sizeof(tag), "SELECT %d", p->rows);
			c = msg_begin(&p->out, 'C');
			buf_put(&p->out, tag, strlen(tag) + 1);
			msg_end(&p->out, c);
			p->dropping = 0;
			continue;
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

static void *
relay_pair_main(void *arg)
{
	RelayPair  *p = arg;
	char		buf[8192];

	while (!__atomic_load_n(&relay.stop, __ATOMIC_RELAXED))
	{
		struct pollfd fds[2] = {{.fd = p->client, .events = POLLIN},
		{.fd = p->server, .events = POLLIN}};
		ssize_t		n;

		if (poll(fds, 2, 100) < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
		{
			n = read(p->client, buf, sizeof(buf));
			if (n <= 0 || !write_all(p->server, buf, (size_t) n))
				break;
		}
		if (fds[1].revents)
		{
			n = read(p->server, buf, sizeof(buf));
			if (n <= 0)
				break;
			buf_put(&p->in, buf, (size_t) n);
			relay_messages(p);
			if (!write_all(p->client, p->out.data, p->out.len))
				break;
			p->out.len = 0;
		}
	}
	close(p->client);
	close(p->server);
	free(p->in.data);
	free(p->out.data);
	free(p);
	__atomic_fetch_sub(&relay.pairs, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *
relay_main(void *arg)
{
	(void) arg;
	while (!__atomic_load_n(&relay.stop, __ATOMIC_RELAXED))
	{
		struct pollfd pfd = {.fd = relay.listen_fd, .events = POLLIN};
		struct sockaddr_in to = {.sin_family = AF_INET};
		RelayPair  *p;
		pthread_t	t;
		int			one = 1;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		p = calloc(1, sizeof(RelayPair));
		if (!p)
			bail_out("relay: out of memory");
		p->client = accept(relay.listen_fd, NULL, NULL);
		p->server = socket(AF_INET, SOCK_STREAM, 0);
		to.sin_port = htons(atoi(getenv("PGPORT") ? getenv("PGPORT") : "5432"));
		to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (p->client < 0 || p->server < 0 ||
			connect(p->server, (struct sockaddr *) &to, sizeof(to)) != 0)
			bail_out("relay: %s", strerror(errno));
		setsockopt(p->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(p->server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		__atomic_fetch_add(&relay.pairs, 1, __ATOMIC_RELAXED);
		pthread_create(&t, NULL, relay_pair_main, p);
		pthread_detach(t);
	}
	return NULL;
}

static void
relay_start(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t	len = sizeof(addr);

	memset(&relay, 0, sizeof(relay));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	relay.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (relay.listen_fd < 0 ||
		bind(relay.listen_fd, (struct sockaddr *) &addr, sizeof(addr)) != 0 ||
		listen(relay.listen_fd, 64) != 0 ||
		getsockname(relay.listen_fd, (struct sockaddr *) &addr, &len) != 0)
		bail_out("relay: %s", strerror(errno));
	relay.port = ntohs(addr.sin_port);
	pthread_create(&relay.thread, NULL, relay_main, NULL);
}

static void
relay_stop(void)
{
	__atomic_store_n(&relay.stop, 1, __ATOMIC_RELAXED);
	pthread_join(relay.thread, NULL);
	close(relay.listen_fd);
	for (int i = 0; i < 500 && __atomic_load_n(&relay.pairs, __ATOMIC_ACQUIRE); i++)
		sleep_ms(10);
	if (__atomic_load_n(&relay.pairs, __ATOMIC_ACQUIRE))
		bail_out("the relay's connections did not end");
}

static void
relay_set_share(const Answer *a)
{
	__atomic_store_n(&relay.share, a, __ATOMIC_RELEASE);
}

static void
relay_set_host(const Answer *a)
{
	__atomic_store_n(&relay.host, a, __ATOMIC_RELEASE);
}

static const char *
relay_conninfo(void)
{
	static char conninfo[256];

	/* no SSL or GSS negotiation: every byte from the server is a message */
	snprintf(conninfo, sizeof(conninfo),
			 "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable "
			 "gssencmode=disable", relay.port);
	return conninfo;
}

/* ---- watching a pool ---- */

typedef struct Watch
{
	int			reached;		/* budget_errors (or host_check_errors) got there */
	int			share_lo,
				share_hi;
	int			size_lo,
				size_hi;
	int			total_hi;
	int			extension_lo,
				extension_hi;
	long		backends_hi;	/* the server's backends of the application */
} Watch;

/*
 * Sample the pool's stats and the server's backends of its application
 * every 10 ms until it has counted "errors" budget errors, or timeout_ms.
 */
static Watch
watch_pool(cbpool *p, PGconn *admin, const char *app, uint64_t errors, int timeout_ms)
{
	Watch		w = {0, INT_MAX, INT_MIN, INT_MAX, INT_MIN, INT_MIN, INT_MAX, INT_MIN, 0};
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
		if (s.budget_errors >= errors)
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
		static const struct
		{
			const char *text;
			int			want;
		}			hints[] = {
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

		wrong = 0;
		for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
		{
			char	   *text = exact(hints[i].text);
			int			got = cbpool__stated_refresh_ms(text);

			if (got != hints[i].want)
			{
				diag("cbpool__stated_refresh_ms(\"%s\") = %d, expected %d", hints[i].text, got,
					 hints[i].want);
				wrong++;
			}
			free(text);
		}
		is_int(wrong, 0, "a refusal's stated pace is read only when it is a number of ms within "
			   "connbudget.refresh_interval's range, in the exact text (%d hostile and good hints, "
			   "each at the very end of its buffer)", (int) (sizeof(hints) / sizeof(hints[0])));
		is_int(cbpool__stated_refresh_ms(NULL), 0, "and no text states no pace");
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

/* ---- pool_share() answers rewritten by the relay ---- */

static void
test_hostile_shares(PGconn *admin)
{
	cbpool_config cfg = test_config("hostile", "pod-hostile");
	cbpool	   *pool;
	cbpool_stats_t s;
	uint64_t	connects,
				closed;
	int			n = (int) (sizeof(hostile_shares) / sizeof(hostile_shares[0]));
	int			ignored = 0,
				logged_once = 0,
				taken_again = 0,
				okay;

	cfg.conninfo = relay_conninfo();
	cfg.min_idle = 20;			/* grows to whatever share it believes */
	log_reset();
	pool = open_or_bail(&cfg);
	okay = wait_stat(pool, s.extension == 1 && s.share > GOOD && s.budget > 0, 10000);
	ok(okay, "through the relay, the pool learns the server's share (%d of a budget of %d)",
	   s.share, s.budget);

	/* from here on the relay answers for the server: a share of GOOD, which
	   the server would let the pool exceed */
	relay_set_share(&good3);
	okay = wait_stat(pool, s.share == 3 && s.max_size == 3 && s.total == 3, 10000);
	ok(okay, "an answer the relay rewrites reaches the pool (share %d, max_size %d, total %d)",
	   s.share, s.max_size, s.total);
	relay_set_share(&good4);
	okay = wait_stat(pool, s.share == GOOD && s.max_size == GOOD && s.total == GOOD, 10000);
	ok(okay, "with a good answer of %d the pool holds %d connections (share %d, total %d)",
	   GOOD, GOOD, s.share, s.total);
	s = stats_of(pool);
	connects = s.connects;
	closed = s.closed_broken + s.closed_idle + s.closed_lifetime + s.closed_over_share;

	for (int i = 0; i < n; i++)
	{
		const Answer *a = &hostile_shares[i];
		int			warnings = logged("budget-invalid", NULL);
		int			rewrites = __atomic_load_n(&relay.share_rewrites, __ATOMIC_ACQUIRE);
		uint64_t	refreshes;
		Watch		w;

		s = stats_of(pool);
		relay_set_share(a);
		w = watch_pool(pool, admin, "hostile", s.budget_errors + 3, 10000);
		relay_set_share(&good4);
		s = stats_of(pool);
		refreshes = s.budget_refreshes;
		if (ok(w.reached && w.share_lo == GOOD && w.share_hi == GOOD && w.size_lo == GOOD &&
			   w.size_hi == GOOD && w.total_hi <= GOOD && w.backends_hi <= GOOD &&
			   w.extension_lo == 1 && w.extension_hi == 1,
			   "%s: three such answers (%d rewritten) are errors, not a size: the share stays "
			   "%d, max_size %d, connections at most %d, the server's backends at most %ld",
			   a->name, __atomic_load_n(&relay.share_rewrites, __ATOMIC_ACQUIRE) - rewrites,
			   w.share_hi, w.size_hi, w.total_hi, w.backends_hi))
			ignored++;
		else
			diag("  reached %d, share %d..%d, max_size %d..%d, extension %d..%d", w.reached,
				 w.share_lo, w.share_hi, w.size_lo, w.size_hi, w.extension_lo, w.extension_hi);
		if (ok(logged_at("budget-invalid", a->logged, CBPOOL_LOG_WARN) == 1 &&
			   logged("budget-invalid", NULL) == warnings + 1,
			   "%s: said once, as a warning, what was wrong: %s", a->name, a->logged))
			logged_once++;
		else
			diag("  %d warnings with that text, %d in all (was %d)",
				 logged("budget-invalid", a->logged), logged("budget-invalid", NULL), warnings);
		okay = wait_stat(pool, s.budget_refreshes > refreshes && s.share == GOOD, 5000);
		if (ok(okay, "%s: then a good answer is taken again (%llu refreshes)", a->name,
			   (unsigned long long) s.budget_refreshes))
			taken_again++;
	}
	diag("of %d hostile answers: %d ignored, %d logged once, %d followed by a good answer taken",
		 n, ignored, logged_once, taken_again);

	s = stats_of(pool);
	ok(s.connects == connects &&
	   s.closed_broken + s.closed_idle + s.closed_lifetime + s.closed_over_share == closed,
	   "the connections the answers came on stayed: no connect, no close meanwhile "
	   "(%llu connects, %llu closed broken)", (unsigned long long) (s.connects - connects),
	   (unsigned long long) s.closed_broken);
	ok(s.budget_errors >= (uint64_t) n * 3, "budget_errors counts every one (%llu)",
	   (unsigned long long) s.budget_errors);
	{
		char		text[16384];
		char		want[256];

		cbpool_prometheus(pool, text, sizeof(text));
		snprintf(want, sizeof(want),
				 "cbpool_budget_errors_total{application=\"hostile\",pod=\"pod-hostile\"} %llu\n",
				 (unsigned long long) stats_of(pool).budget_errors);
		ok(strstr(text, want) != NULL, "and so does budget_errors_total");
	}
	{
		PGconn	   *conn = cbpool_acquire(pool, 5000);

		ok(conn && query_works(conn), "the pool serves as before");
		cbpool_release(pool, conn);
	}
	cbpool_close(pool);
	relay_set_share(NULL);
}

/* ---- someone else's connbudget.pool_share() ---- */

/* Replace the squatter's function at once (in one transaction, so that the
   pool never finds none, which would make it think there is no extension). */
static void
squat(PGconn *conn, const char *columns, const char *body)
{
	char		sql[1024];

	snprintf(sql, sizeof(sql),
			 "BEGIN; DROP FUNCTION IF EXISTS connbudget.pool_share(integer); "
			 "CREATE FUNCTION connbudget.pool_share(demand integer) RETURNS TABLE (%s) "
			 "LANGUAGE sql AS $f$ %s $f$; COMMIT", columns, body);
	pg_exec(conn, sql);
}

static void
test_squatter(PGconn *admin)
{
	static const char ints[] = "max_size integer, min_size integer, budget integer, refresh_ms integer";
	static const struct
	{
		const char *name;
		const char *columns;	/* NULL: ints */
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
	PGconn	   *other;
	cbpool_config cfg = test_config("squatter", "pod-squatter");
	char		conninfo[512];
	cbpool	   *pool;
	cbpool_stats_t s;
	int			ignored = 0,
				logged_once = 0,
				okay;

	pg_exec(admin, "CREATE DATABASE squat");
	other = pg_connect_or_bail("dbname=squat", "application_name=admin");
	pg_exec(other, "SET client_min_messages = warning");
	pg_exec(other, "CREATE SCHEMA connbudget");
	is_str(pg_value(other, "SELECT count(*)::text FROM pg_extension WHERE extname = 'connbudget'"),
		   "0", "a database without the extension, where someone else creates a schema "
		   "connbudget and a function pool_share()");
	squat(other, cases[0].columns, cases[0].body);

	snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=postgres dbname=squat",
			 getenv("PGHOST") ? getenv("PGHOST") : "127.0.0.1",
			 getenv("PGPORT") ? getenv("PGPORT") : "5432");
	cfg.conninfo = conninfo;
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
			squat(other, cases[i].columns ? cases[i].columns : ints, cases[i].body);
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

	/* a plausible answer is all it takes: the pool cannot tell, and it sizes
	   itself by it (and so the function was what the pool called) */
	squat(other, ints, "SELECT 3, 1, 40, 100");
	okay = wait_stat(pool, s.extension == 1 && s.share == 3 && s.total == 3, 10000);
	ok(okay, "a well-formed answer after them is taken (share %d, total %d)", s.share, s.total);
	cbpool_close(pool);
	PQfinish(other);
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
	cc.pool.conninfo = relay_conninfo();
	cc.check_ms = 50;
	log_reset();
	cl = cbpool_cluster_open(&cc, err, sizeof(err));
	if (!cl)
		bail_out("cbpool_cluster_open: %s", err);
	okay = wait_until(h = host0(cl), h.role == CBPOOL_HOST_PRIMARY && h.writable && h.lag_ms == 0,
				  10000);
	ok(okay, "a one-host cluster through the relay: its host is the primary (role %d, lag %d)",
	   h.role, h.lag_ms);
	relay_set_host(&standby250);
	okay = wait_until(h = host0(cl), h.role == CBPOOL_HOST_STANDBY && h.lag_ms == 250, 10000);
	ok(okay, "a valid check the relay rewrites reaches the pool: a standby 250 ms behind (role %d, "
	   "lag %d)", h.role, h.lag_ms);
	relay_set_host(NULL);
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
		relay_set_host(a);
		for (;;)
		{
			h = host0(cl);
			changed += h.role != CBPOOL_HOST_PRIMARY || !h.writable || h.lag_ms != 0;
			reached = h.pool.host_check_errors >= target;
			if (reached || now_seconds() > deadline)
				break;
			sleep_ms(5);
		}
		relay_set_host(NULL);
		{
			/* the second answer passed on as it was comes after the pool has
			   taken the first: the host check was valid again, and a failure
			   of the same kind would be said again */
			int			passed = __atomic_load_n(&relay.host_passed, __ATOMIC_ACQUIRE);

			wait_until((void) 0, __atomic_load_n(&relay.host_passed, __ATOMIC_ACQUIRE) >= passed + 2,
					   5000);
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
				 "pod=\"pod-checked\",host=\"127.0.0.1:%d\"} ", relay.port);
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

	test_parser();
	pg_exec(admin, "CREATE EXTENSION connbudget");
	relay_start();
	test_hostile_shares(admin);
	test_hostile_host_checks();
	relay_stop();
	test_squatter(admin);
	PQfinish(admin);
	return done_testing();
}
