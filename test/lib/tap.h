/*
 * tap.h -- a minimal Test Anything Protocol emitter for the C tests.
 *
 * Output is read by prove(1).  Every check prints "ok N - name" or
 * "not ok N - name" plus diagnostics on stderr, which prove shows;
 * done_testing() prints the plan and returns the exit status.
 * Thread-safe: checks may run on any thread.
 */
#ifndef CONNBUDGET_TEST_TAP_H
#define CONNBUDGET_TEST_TAP_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;
static int	tap_run = 0;
static int	tap_failed = 0;
static int	tap_last_passed = 1;

static inline int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list		ap;

	pthread_mutex_lock(&tap_lock);
	tap_run++;
	if (!pass)
		tap_failed++;
	tap_last_passed = pass;
	printf("%sok %d - ", pass ? "" : "not ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	/* a failure's diagnostics go to stderr, which prove shows */
	if (!pass)
		fprintf(stderr, "#   Failed at %s line %d\n", file, line);
	pthread_mutex_unlock(&tap_lock);
	return pass;
}

/*
 * A diagnostic line: after a failed check on stderr, which prove shows
 * beside its "not ok"; otherwise on stdout, which prove -v shows.
 */
static inline void
tap_diag(const char *fmt, ...)
{
	va_list		ap;
	FILE	   *out;

	pthread_mutex_lock(&tap_lock);
	out = tap_last_passed ? stdout : stderr;
	fprintf(out, "# ");
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fprintf(out, "\n");
	fflush(out);
	pthread_mutex_unlock(&tap_lock);
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define diag(...) tap_diag(__VA_ARGS__)

/* Compare two integers and show both on failure. */
#define is_int(got, want, ...) \
	do { \
		long long got_ = (long long) (got), want_ = (long long) (want); \
		if (!tap_ok(got_ == want_, __FILE__, __LINE__, __VA_ARGS__)) \
			tap_diag("  got: %lld, expected: %lld", got_, want_); \
	} while (0)

/* Compare two strings (NULL-safe) and show both on failure. */
#define is_str(got, want, ...) \
	do { \
		const char *got_ = (got), *want_ = (want); \
		int same_ = (got_ == NULL && want_ == NULL) || \
			(got_ != NULL && want_ != NULL && strcmp(got_, want_) == 0); \
		if (!tap_ok(same_, __FILE__, __LINE__, __VA_ARGS__)) \
			tap_diag("  got: '%s', expected: '%s'", got_ ? got_ : "(null)", \
					 want_ ? want_ : "(null)"); \
	} while (0)

/* Count n checks that cannot run here as passed, with the reason. */
static inline void
tap_skip(int n, const char *why)
{
	pthread_mutex_lock(&tap_lock);
	for (int i = 0; i < n; i++)
		printf("ok %d # skip %s\n", ++tap_run, why);
	fflush(stdout);
	pthread_mutex_unlock(&tap_lock);
}

#define skip(n, why) tap_skip((n), (why))

/* Stop the test at once (setup failed, nothing else can be checked). */
#define bail_out(...) \
	do { \
		printf("Bail out! "); \
		printf(__VA_ARGS__); \
		printf("\n"); \
		fflush(stdout); \
		exit(255); \
	} while (0)

static inline int
done_testing(void)
{
	printf("1..%d\n", tap_run);
	if (tap_failed)
		printf("# failed %d of %d\n", tap_failed, tap_run);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

#endif							/* CONNBUDGET_TEST_TAP_H */
