/*
 * bench.h -- what the benchmark programs share: with the tests, the
 * monotonic clock, now_seconds(), and sleep_ms(), which a signal does not
 * cut short (test/lib/clock.h); among themselves, compare_double() for
 * qsort().
 */
#ifndef CONNBUDGET_BENCH_H
#define CONNBUDGET_BENCH_H

#include "../test/lib/clock.h"

/* qsort()'s comparison of two doubles, ascending. */
static inline int
compare_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

#endif							/* CONNBUDGET_BENCH_H */
