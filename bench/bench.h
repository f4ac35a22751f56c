/*
 * bench.h -- the clock and the sleep that the benchmark programs share.
 */
#ifndef CONNBUDGET_BENCH_H
#define CONNBUDGET_BENCH_H

#include <time.h>

/* seconds on the monotonic clock */
static inline double
bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void
bench_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

#endif							/* CONNBUDGET_BENCH_H */
