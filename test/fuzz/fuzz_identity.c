/*
 * fuzz_identity.c -- libFuzzer target for the rules of a connection's
 * identity and reports (extension/identity.c).
 *
 * The input is a startup packet of sorts: two flag bytes, then pieces
 * separated by NUL bytes -- the "options" string, then name/value pairs.
 * The options are split into words as PostgreSQL's pg_split_opts splits
 * them (whitespace, a backslash escaping the next byte).
 *
 * cb_option_value, for application_name, connbudget.pod,
 * connbudget.pool_session, connbudget.demand and "x": whenever PostgreSQL
 * would accept the words and pairs (a model of process_postgres_switches
 * with glibc's getopt and of SetConfigOption, written apart from the
 * code), the value is the one PostgreSQL ends up with; the last pair that
 * names the option always wins; the result points into the words or is a
 * pair's value; and "-c name=zz" put in front changes nothing that was set
 * and gives "zz" where nothing was.
 *
 * cb_clean_name, in both modes, on every piece: equal to what
 * pg_stat_activity shows in a UTF-8 database (a name of 64 bytes or more
 * cut to 63 as PostgreSQL's pg_mbcliplen cuts it, then each byte that is
 * not printable ASCII replaced by '?', or by \xNN from PostgreSQL 16 on,
 * then cut at 63 bytes); at most 63 bytes, all printable; valid UTF-8 is
 * never cut inside a character.
 *
 * cb_id_is_valid on every piece: valid exactly when 1 to 63 bytes of
 * printable ASCII; otherwise the reason fits the buffer given (of any
 * size, allocated exactly) and names the empty id, the length or the
 * first bad byte.
 *
 * cb_parse_demand on every piece: agrees with digits only from 0 to
 * 1000000 (leading zeros allowed), "unbounded" and "leave" in any case,
 * and "" reporting nothing.
 */
#include "../../extension/identity.h"
#include "fuzz.h"

#include <ctype.h>

#define MAX_PIECES 17			/* the options and 8 pairs */
#define MAX_WORDS 256

static const char *const option_names[] = {
	"application_name", "connbudget.pod", "connbudget.pool_session", "connbudget.demand", "x"
};

/* ---------------------------------------------------------------------
 * PostgreSQL, as a model
 * ---------------------------------------------------------------------
 */

/* pg_split_opts: words at whitespace, a backslash escaping the next byte. */
static int
split_options(const char *options, char **argv, char *storage)
{
	int			argc = 0;
	const char *p = options;
	char	   *out = storage;

	while (*p && argc < MAX_WORDS)
	{
		int			escaped = 0;

		while (isspace((unsigned char) *p))
			p++;
		if (*p == '\0')
			break;
		argv[argc++] = out;
		while (*p)
		{
			if (isspace((unsigned char) *p) && !escaped)
				break;
			if (!escaped && *p == '\\')
				escaped = 1;
			else
			{
				escaped = 0;
				*out++ = *p;
			}
			p++;
		}
		*out++ = '\0';
	}
	return argc;
}

/* GUC names compare case-insensitively (ASCII letters only). */
static int
guc_equal(const char *a, size_t alen, const char *b)
{
	if (strlen(b) != alen)
		return 0;
	for (size_t i = 0; i < alen; i++)
		if (tolower((unsigned char) a[i]) != tolower((unsigned char) b[i]))
			return 0;
	return 1;
}

/*
 * What PostgreSQL makes of the words (process_postgres_switches, getopt
 * string "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:", glibc's getopt)
 * and then the pairs (SetConfigOption each): 0 if it refuses the
 * connection, else 1 and the option's value in *value (NULL: not set).
 */
static int
postgres_value(char **argv, int argc, char **pairs, int npairs, const char *name,
			   const char **value)
{
	static const char with_arg[] = "BcCDdfhkNprStvW-";
	static const char without_arg[] = "bEeFijlnOPsT";

	*value = NULL;
	for (int i = 0; i < argc; i++)
	{
		const char *word = argv[i];

		if (strcmp(word, "--") == 0)
		{
			if (i < argc - 1)
				return 0;		/* anything after it is an argument: refused */
			break;
		}
		if (word[0] != '-' || word[1] == '\0')
			return 0;			/* an argument: refused */
		for (const char *p = word + 1; *p; p++)
		{
			const char *arg;
			char		normal[1024];
			size_t		n = 0;
			const char *eq;

			if (*p != ':' && strchr(without_arg, *p))
				continue;
			if (*p == ':' || !strchr(with_arg, *p))
				return 0;		/* unknown switch */
			if (p[1])
				arg = p + 1;
			else if (i + 1 < argc)
				arg = argv[++i];
			else
				return 0;		/* no argument */
			if (*p == 'c' || *p == '-')
			{
				/* ParseLongOption: name=value, '-' in the name read as '_' */
				if (!(eq = strchr(arg, '=')))
					return 0;	/* "requires a value" */
				for (const char *q = arg; q < eq && n < sizeof(normal) - 1; q++)
					normal[n++] = *q == '-' ? '_' : *q;
				if (guc_equal(normal, n, name))
					*value = eq + 1;
			}
			break;
		}
	}
	for (int i = 0; i < npairs; i++)
	{
		const char *pname = pairs[2 * i];

		if (strchr(pname, '-'))
			return 0;			/* no such parameter, or an invalid name */
		if (guc_equal(pname, strlen(pname), name))
			*value = pairs[2 * i + 1];
	}
	return 1;
}

/* The length of a UTF-8 character from its first byte, as PostgreSQL reads it. */
static int
utf8_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0)
		return 2;
	if ((c & 0xF0) == 0xE0)
		return 3;
	if ((c & 0xF8) == 0xF0)
		return 4;
	return 1;
}

/* pg_mbcliplen in UTF-8: the longest prefix of whole characters within limit. */
static size_t
clip_utf8(const char *s, size_t size, size_t limit)
{
	int64_t		len = (int64_t) size;
	size_t		clen = 0;

	while (len > 0 && *s)
	{
		int			l = utf8_len((unsigned char) *s);

		if (clen + l > limit)
			break;
		clen += l;
		if (clen == limit)
			break;
		len -= l;
		s += l;
	}
	return clen;
}

/*
 * pg_stat_activity's application_name for a client's: a name of
 * NAMEDATALEN bytes or more cut as an identifier (truncate_identifier),
 * then cleaned (check_application_name), then cut to NAMEDATALEN - 1 bytes
 * (pgstat_report_appname, on what is plain ASCII by now).
 */
static void
postgres_appname(const char *name, int escape_bytes, char *out)
{
	size_t		len = strlen(name);
	size_t		o = 0;

	if (len >= 64)
		len = clip_utf8(name, len, 63);
	for (size_t i = 0; i < len && o < 63; i++)
	{
		unsigned char c = (unsigned char) name[i];
		char		escape[8];

		if (c >= 32 && c <= 126)
			out[o++] = (char) c;
		else if (!escape_bytes)
			out[o++] = '?';
		else
		{
			snprintf(escape, sizeof(escape), "\\x%02x", c);
			for (int k = 0; k < 4 && o < 63; k++)
				out[o++] = escape[k];
		}
	}
	out[o] = '\0';
}

/* Is s valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF)? */
static int
valid_utf8(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;)
	{
		unsigned char c = s[i];
		int			n;
		uint32_t	cp;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 2, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 3, cp = c & 0x07;
		else
			return 0;
		for (int k = 1; k <= n; k++)
		{
			if (i + k >= len || (s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
			(cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* ---------------------------------------------------------------------
 * The checks
 * ---------------------------------------------------------------------
 */

static void
check_options(char **argv, int argc, char **pairs, int npairs)
{
	for (size_t k = 0; k < sizeof(option_names) / sizeof(option_names[0]); k++)
	{
		const char *name = option_names[k];
		const char *got = cb_option_value(argv, argc, (const char *const *) pairs, npairs, name);
		const char *want;
		const char *last_pair = NULL;
		char	   *more[MAX_WORDS + 2];
		char		setting[64];
		const char *got_more;

		/* where it points */
		if (got != NULL)
		{
			int			inside = 0;

			for (int i = 0; i < argc && !inside; i++)
				inside = got > argv[i] && got <= argv[i] + strlen(argv[i]) && got[-1] == '=';
			for (int i = 0; i < npairs && !inside; i++)
				inside = got == pairs[2 * i + 1];
			FZ_CHECK(inside, "%s: the value is neither in a word nor a pair's", name);
		}

		/* the pairs come last, the last one winning */
		for (int i = 0; i < npairs; i++)
		{
			int			same = strlen(pairs[2 * i]) == strlen(name);

			for (size_t c = 0; same && name[c]; c++)
			{
				char		x = pairs[2 * i][c];

				x = x == '-' ? '_' : (char) tolower((unsigned char) x);
				same = x == name[c];
			}
			if (same)
				last_pair = pairs[2 * i + 1];
		}
		FZ_CHECK(last_pair == NULL || got == last_pair,
				 "%s: a pair names it, yet the value is not the last such pair's", name);

		/* as PostgreSQL, whenever it accepts the packet */
		if (postgres_value(argv, argc, pairs, npairs, name, &want))
			FZ_CHECK((got == NULL && want == NULL) ||
					 (got != NULL && want != NULL && strcmp(got, want) == 0),
					 "%s: connbudget reads \"%s\", PostgreSQL would set \"%s\"", name,
					 got ? got : "(nothing)", want ? want : "(nothing)");

		/* "-c name=zz" in front changes what was set, and sets what was not */
		snprintf(setting, sizeof(setting), "%s=zz", name);
		more[0] = (char *) "-c";
		more[1] = setting;
		for (int i = 0; i < argc; i++)
			more[i + 2] = argv[i];
		got_more = cb_option_value(more, argc + 2, (const char *const *) pairs, npairs, name);
		FZ_CHECK(got ? got_more == got : got_more == setting + strlen(name) + 1,
				 "%s: \"-c %s\" in front of the options changes the value from \"%s\" to \"%s\"",
				 name, setting, got ? got : "(nothing)", got_more ? got_more : "(nothing)");
	}
}

static void
check_clean_name(const char *name)
{
	for (int escape = 0; escape <= 1; escape++)
	{
		char		out[CB_ID_MAX + 1];
		char		want[CB_ID_MAX + 1];
		size_t		len;

		memset(out, 0x55, sizeof(out));
		cb_clean_name(name, escape, out);
		len = strnlen(out, sizeof(out));
		FZ_CHECK(len <= CB_ID_MAX, "a cleaned name of more than 63 bytes");
		for (size_t i = 0; i < len; i++)
			FZ_CHECK(out[i] >= 32 && out[i] <= 126, "byte %zu of a cleaned name is 0x%02x", i,
					 (unsigned char) out[i]);
		if (!escape && valid_utf8((const unsigned char *) name, strlen(name)))
		{
			/* one byte out for each byte in: len bytes of the name were kept */
			FZ_CHECK(len == strlen(name) ||
					 ((name[len] & 0xC0) != 0x80 && len + 4 > CB_ID_MAX),
					 "valid UTF-8 cut at byte %zu, inside a character", len);
		}
		postgres_appname(name, escape, want);
		FZ_CHECK(strcmp(out, want) == 0,
				 "application name of %zu bytes cleaned to \"%s\" (%zu bytes), pg_stat_activity "
				 "shows \"%s\" (%zu bytes) (%s)", strlen(name), out, len, want, strlen(want),
				 escape ? "\\xNN escapes" : "'?'");
	}
}

static void
check_id(const char *id, size_t whylen)
{
	char	   *why = malloc(whylen);
	size_t		len = strlen(id);
	size_t		bad = len;
	int			valid;
	char		expected[64];

	for (size_t i = 0; i < len && bad == len; i++)
		if ((unsigned char) id[i] < 32 || (unsigned char) id[i] > 126)
			bad = i;
	valid = cb_id_is_valid(id, why, whylen);
	FZ_CHECK(valid == (len >= 1 && len <= CB_ID_MAX && bad == len),
			 "an id of %zu bytes (first bad byte at %zu) is %s", len, bad,
			 valid ? "accepted" : "refused");
	if (!valid)
	{
		FZ_CHECK(memchr(why, '\0', whylen) != NULL, "the reason overruns its %zu bytes", whylen);
		if (len == 0)
			snprintf(expected, sizeof(expected), "empty");
		else if (len > CB_ID_MAX)
			snprintf(expected, sizeof(expected), "is %zu bytes", len);
		else
			snprintf(expected, sizeof(expected), "byte %zu is 0x%02x", bad + 1,
					 (unsigned char) id[bad]);
		FZ_CHECK(whylen < 128 || strstr(why, expected) != NULL,
				 "the reason \"%s\" does not say \"%s\"", why, expected);
	}
	free(why);
}

static int
word_is(const char *value, const char *word)
{
	return guc_equal(value, strlen(value), word);
}

static void
check_demand(const char *value)
{
	int32_t		demand = 7,
				want_demand = -1;
	bool		leave = false,
				report = false;
	int			valid = cb_parse_demand(value, &demand, &leave, &report);
	int			want_valid = 1,
				want_leave = 0,
				want_report = 1;

	if (value == NULL || value[0] == '\0')
		want_report = 0;
	else if (word_is(value, "unbounded"))
		;
	else if (word_is(value, "leave"))
		want_leave = 1;
	else
	{
		int64_t		n = 0;

		for (const char *p = value; *p && want_valid; p++)
		{
			if (*p < '0' || *p > '9')
				want_valid = 0;
			else if ((n = n * 10 + (*p - '0')) > CB_MAX_DEMAND)
				n = CB_MAX_DEMAND + 1;
		}
		if (n > CB_MAX_DEMAND)
			want_valid = 0;
		want_demand = (int32_t) n;
	}
	FZ_CHECK(valid == want_valid, "connbudget.demand = '%s' is %s", value ? value : "(NULL)",
			 valid ? "accepted" : "refused");
	if (valid)
		FZ_CHECK(demand == want_demand && leave == want_leave && report == want_report,
				 "connbudget.demand = '%s' reads as demand %d, leave %d, report %d",
				 value ? value : "(NULL)", demand, leave, report);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FuzzInput	in = fz_input(data, size);
	size_t		whylen = 1 + fz_byte(&in) % 200;
	static char pieces[MAX_PIECES][1024];
	static char storage[1024 + MAX_WORDS];
	char	   *argv[MAX_WORDS];
	char	   *pairs[2 * 8];
	int			npieces = 0,
				argc,
				npairs;

	(void) fz_byte(&in);		/* reserved */
	while (npieces < MAX_PIECES && (npieces == 0 || fz_left(&in) > 0))
	{
		fz_piece(&in, '\0', pieces[npieces], sizeof(pieces[npieces]));
		npieces++;
	}
	argc = split_options(pieces[0], argv, storage);
	npairs = (npieces - 1 + 1) / 2;
	for (int i = 0; i < npairs; i++)
	{
		pairs[2 * i] = pieces[1 + 2 * i];
		pairs[2 * i + 1] = 2 + 2 * i < npieces ? pieces[2 + 2 * i] : (char *) "";
	}
	check_options(argv, argc, pairs, npairs);
	check_options(argv, argc, NULL, 0);

	for (int i = 0; i < npieces; i++)
	{
		check_clean_name(pieces[i]);
		check_id(pieces[i], whylen);
		check_demand(pieces[i]);
	}
	for (int i = 0; i < argc; i++)
		check_demand(argv[i]);
	{
		char		out[CB_ID_MAX + 1];

		cb_clean_name(NULL, false, out);
		FZ_CHECK(out[0] == '\0', "no name is not \"\"");
		check_demand(NULL);
	}
	return 0;
}
