/*
 * fuzz_pgresult.h -- result tables for the fuzz targets of the clients:
 * a PGresult made from text (PQmakeEmptyPGresult, PQsetResultAttrs,
 * PQsetvalue), and integers and a share's words read as the protocol
 * writes them (docs/protocol.md), apart from the clients' code.
 *
 * A table is lines: the first the column names, separated by '|' (a name
 * starting with '#' is a binary column), each next line a row of values
 * separated by '|' ("\N" is NULL, a missing value too; other bytes, NUL
 * included, are the value); a line "*N" repeats the row before it N times
 * (up to 3000).
 */
#ifndef CONNBUDGET_FUZZ_PGRESULT_H
#define CONNBUDGET_FUZZ_PGRESULT_H

#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define MAX_COLUMNS 16
#define MAX_REPEAT 3000

/* Split line [p, end) at '|' into cells; returns how many (at most max). */
static int
cells(const char *p, const char *end, const char **starts, size_t *lens, int max)
{
	int			n = 0;

	for (;;)
	{
		const char *bar = memchr(p, '|', (size_t) (end - p));
		const char *stop = bar ? bar : end;

		if (n < max)
		{
			starts[n] = p;
			lens[n] = (size_t) (stop - p);
			n++;
		}
		if (!bar)
			return n;
		p = bar + 1;
	}
}

/* A PGresult (tuples) from the table in [text, text + len). */
static PGresult *
make_result(const char *text, size_t len)
{
	PGresult   *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	const char *p = text,
			   *end = text + len;
	const char *starts[MAX_COLUMNS];
	size_t		lens[MAX_COLUMNS];
	char		names[MAX_COLUMNS][64];
	PGresAttDesc attrs[MAX_COLUMNS];
	int			nfields = 0,
				row = 0,
				last_row = -1;

	if (!res)
		abort();
	while (p <= end)
	{
		const char *nl = memchr(p, '\n', (size_t) (end - p));
		const char *stop = nl ? nl : end;

		if (p == text)
		{
			/* the column names */
			nfields = cells(p, stop, starts, lens, MAX_COLUMNS);
			for (int i = 0; i < nfields; i++)
			{
				int			binary = lens[i] > 0 && starts[i][0] == '#';
				size_t		n = lens[i] - (size_t) binary;

				if (n >= sizeof(names[i]))
					n = sizeof(names[i]) - 1;
				memcpy(names[i], starts[i] + binary, n);
				names[i][n] = '\0';
				memset(&attrs[i], 0, sizeof(attrs[i]));
				attrs[i].name = names[i];
				attrs[i].format = binary;
				attrs[i].typid = 25;	/* text */
				attrs[i].typlen = -1;
				attrs[i].atttypmod = -1;
			}
			if (!PQsetResultAttrs(res, nfields, attrs))
				abort();
		}
		else if (stop - p >= 2 && p[0] == '*' && last_row >= 0)
		{
			/* the row before, again */
			int			times = 0;

			for (const char *q = p + 1; q < stop && *q >= '0' && *q <= '9' && times < MAX_REPEAT; q++)
				times = times * 10 + (*q - '0');
			if (times > MAX_REPEAT)
				times = MAX_REPEAT;
			for (int t = 0; t < times; t++, row++)
				for (int f = 0; f < nfields; f++)
				{
					int			null = PQgetisnull(res, last_row, f);

					if (!PQsetvalue(res, row, f, null ? NULL : PQgetvalue(res, last_row, f),
									null ? -1 : PQgetlength(res, last_row, f)))
						abort();
				}
		}
		else if (nfields > 0)
		{
			int			n = cells(p, stop, starts, lens, MAX_COLUMNS);

			for (int f = 0; f < nfields; f++)
			{
				int			null = f >= n || (lens[f] == 2 && memcmp(starts[f], "\\N", 2) == 0);

				if (!PQsetvalue(res, row, f, null ? NULL : (char *) starts[f],
								null ? -1 : (int) lens[f]))
					abort();
			}
			last_row = row++;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	return res;
}

/*
 * Is v (len bytes) a base-10 integer in [lo, hi]?  1 (and *out), 0 if not,
 * -1 if it is one written oddly -- a sign, leading zeros, more than 18
 * digits -- which a reader may take or not.
 */
static int
fz_integer(const char *v, size_t len, long long lo, long long hi, long long *out)
{
	long long	n = 0;

	if (len == 0)
		return 0;
	if (v[0] == '-' && len > 1 && strspn(v + 1, "0123456789") >= len - 1)
		return -1;
	for (size_t i = 0; i < len; i++)
		if (v[i] < '0' || v[i] > '9')
			return 0;
	if ((len > 1 && v[0] == '0') || len > 18)
		return -1;				/* leading zeros, or too long: not compared */
	for (size_t i = 0; i < len; i++)
		n = n * 10 + (v[i] - '0');
	if (n < lo || n > hi)
		return 0;
	*out = n;
	return 1;
}

/*
 * A share's words (docs/protocol.md, section 4) are "key=value", one space
 * apart:
 *
 *	for (FuzzWord w = fz_first_word(text, maxlen); w.key; w = fz_next_word(&w))
 *
 * reads them in turn.  w.value is NULL when the word is not key=value (an
 * empty word included), and for the first word of a text longer than
 * maxlen bytes, which is no share.
 */
typedef struct FuzzWord
{
	const char *key;			/* NULL: no more words */
	size_t		klen;
	const char *value;
	size_t		vlen;
	const char *next;			/* where the next word starts; NULL: none */
} FuzzWord;

static inline FuzzWord
fz_word_at(const char *p)
{
	FuzzWord	w = {p, 0, NULL, 0, NULL};
	const char *space = strchr(p, ' ');
	size_t		len = space ? (size_t) (space - p) : strlen(p);
	const char *eq = memchr(p, '=', len);

	if (eq && eq > p)
	{
		w.klen = (size_t) (eq - p);
		w.value = eq + 1;
		w.vlen = len - w.klen - 1;
	}
	w.next = space ? space + 1 : NULL;
	return w;
}

static inline FuzzWord
fz_first_word(const char *text, size_t maxlen)
{
	FuzzWord	too_long = {text, 0, NULL, 0, NULL};

	return strlen(text) > maxlen ? too_long : fz_word_at(text);
}

static inline FuzzWord
fz_next_word(const FuzzWord *w)
{
	FuzzWord	none = {NULL, 0, NULL, 0, NULL};

	return w->next ? fz_word_at(w->next) : none;
}

static inline int
fz_key_is(const FuzzWord *w, const char *key)
{
	return w->klen == strlen(key) && memcmp(w->key, key, w->klen) == 0;
}

/*
 * The numbers a share gives and their ranges (docs/protocol.md, sections 4
 * and 9), in this order.
 */
enum
{
	FZ_MAX_SIZE, FZ_MIN_SIZE, FZ_BUDGET, FZ_REFRESH_MS, FZ_PROTOCOL, FZ_ALLOCATION, FZ_PODS,
	FZ_CONNECTIONS, FZ_NUMBERS
};

static const struct
{
	const char *key;
	long long	lo,
				hi;
}			fz_numbers[FZ_NUMBERS] = {
	{"max_size", 0, 262143}, {"min_size", 0, 262143}, {"budget", 0, 262143},
	{"refresh_ms", 10, 3600000}, {"protocol", 2, 1000}, {"allocation", 0, 262143},
	{"pods", 0, 262143}, {"connections", 0, 262143},
};

/* Which of the first n numbers the word gives (FZ_MAX_SIZE...), or -1. */
static inline int
fz_number_word(const FuzzWord *w, int n)
{
	for (int i = 0; i < n; i++)
		if (fz_key_is(w, fz_numbers[i].key))
			return i;
	return -1;
}

/* A status word's value: 0 ok, 1 other, 2 left, 3 refused, -1 none of these. */
static inline int
fz_status(const char *v, size_t vlen)
{
	static const char *const statuses[] = {"ok", "other", "left", "refused"};

	for (int i = 0; i < 4; i++)
		if (vlen == strlen(statuses[i]) && memcmp(v, statuses[i], vlen) == 0)
			return i;
	return -1;
}

#endif							/* CONNBUDGET_FUZZ_PGRESULT_H */
