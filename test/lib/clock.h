/*
 * clock.h -- the monotonic clock and a sleep that signals do not cut
 * short, for the tests and the benchmarks.
 *
 * Needs POSIX: compile with _POSIX_C_SOURCE >= 199309L defined (or the
 * compiler's default GNU dialect).
 */
#ifndef CONNBUDGET_TEST_CLOCK_H
#define CONNBUDGET_TEST_CLOCK_H

#include <errno.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sleep for ms milliseconds, all of them even if a signal arrives. */
static inline void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

#endif							/* CONNBUDGET_TEST_CLOCK_H */
