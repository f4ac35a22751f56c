/*
 * rnd.h -- the random numbers of the unit tests and the benchmarks: one
 * seedable 64-bit generator (splitmix64) per program.
 *
 * rnd_init() takes the seed from CB_TEST_SEED when it is set and prints
 * the seed in use on standard error, so that a failing run can be
 * repeated exactly:
 *
 *   CB_TEST_SEED=12345 bash test/run unit allocation
 */
#ifndef CONNBUDGET_TEST_RND_H
#define CONNBUDGET_TEST_RND_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t rnd_state;

static inline uint64_t
rnd_u64(void)
{
	uint64_t	z = rnd_state += 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n) for n >= 1: draws past the last whole multiple of n
 * are drawn again, so that small values are not favoured. */
static inline uint32_t
rnd_below(uint32_t n)
{
	uint64_t	limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t	x;

	do
		x = rnd_u64();
	while (x >= limit);
	return (uint32_t) (x % n);
}

/* A seed that differs from run to run. */
static inline uint64_t
rnd_fresh_seed(void)
{
	return (uint64_t) time(NULL) * 1000003u ^ (uint64_t) getpid() << 32;
}

/*
 * Seed the generator: CB_TEST_SEED when set, otherwise the seed given;
 * "program" names the run on standard error.
 */
static inline void
rnd_init(const char *program, uint64_t seed)
{
	const char *env = getenv("CB_TEST_SEED");

	if (env != NULL && *env != '\0')
		seed = strtoull(env, NULL, 0);
	rnd_state = seed;
	fprintf(stderr, "# %s: random seed %llu (CB_TEST_SEED=%llu repeats this run)\n",
			program, (unsigned long long) seed, (unsigned long long) seed);
}

#endif							/* CONNBUDGET_TEST_RND_H */
