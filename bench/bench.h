/*
 * bench.h -- what the benchmark programs share with the tests: the
 * monotonic clock, now_seconds(), and sleep_ms(), which a signal does not
 * cut short (test/lib/clock.h).
 */
#ifndef CONNBUDGET_BENCH_H
#define CONNBUDGET_BENCH_H

#include "../test/lib/clock.h"

#endif							/* CONNBUDGET_BENCH_H */
