/*
 * fuzz_pgresult.h -- result tables for the fuzz targets of the clients:
 * a PGresult made from text (PQmakeEmptyPGresult, PQsetResultAttrs,
 * PQsetvalue), and integers read as the protocol writes them.
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

#endif							/* CONNBUDGET_FUZZ_PGRESULT_H */
