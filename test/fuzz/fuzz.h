/*
 * fuzz.h -- what every fuzz target of test/fuzz shares: reading numbers
 * and strings out of libFuzzer's bytes, picking a check by the input's
 * first byte, and failing loudly.
 *
 * A broken invariant prints what broke and aborts, so that libFuzzer saves
 * the input as a crash like any sanitizer report.  Reading past the end of
 * the input yields zeros: every input decodes to something.
 */
#ifndef CONNBUDGET_FUZZ_H
#define CONNBUDGET_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct FuzzInput
{
	const uint8_t *data;
	size_t		size;
	size_t		pos;
} FuzzInput;

static inline FuzzInput
fz_input(const uint8_t *data, size_t size)
{
	FuzzInput	in = {data, size, 0};

	return in;
}

static inline size_t
fz_left(const FuzzInput *in)
{
	return in->size - in->pos;
}

static inline uint8_t
fz_byte(FuzzInput *in)
{
	return in->pos < in->size ? in->data[in->pos++] : 0;
}

static inline uint32_t
fz_u16(FuzzInput *in)
{
	uint32_t	v = fz_byte(in);

	return v | (uint32_t) fz_byte(in) << 8;
}

static inline uint32_t
fz_u32(FuzzInput *in)
{
	uint32_t	v = fz_u16(in);

	return v | fz_u16(in) << 16;
}

/*
 * A number from 0 to max, one byte mostly: 0..0xEF stand for themselves
 * (modulo max + 1), 0xF0..0xFF read four more bytes for anything up to max.
 */
static inline int64_t
fz_number(FuzzInput *in, int64_t max)
{
	uint8_t		tag = fz_byte(in);

	if (max <= 0)
		return 0;
	if (tag < 0xF0)
		return tag % (max + 1);
	return (int64_t) (fz_u32(in) % ((uint64_t) max + 1));
}

/*
 * The next piece of the input up to a separator byte (not included) or
 * its end, as a NUL-terminated copy in buf (cut to buflen - 1 bytes).
 * Returns its length.
 */
static inline size_t
fz_piece(FuzzInput *in, uint8_t separator, char *buf, size_t buflen)
{
	size_t		n = 0;

	while (in->pos < in->size)
	{
		uint8_t		c = in->data[in->pos++];

		if (c == separator)
			break;
		if (n + 1 < buflen)
			buf[n++] = (char) c;
	}
	buf[n] = '\0';
	return n;
}

/* A small deterministic generator, seeded from the input, for shuffles. */
static inline uint32_t
fz_rand(uint64_t *state)
{
	uint64_t	x = *state ? *state : 0x9E3779B97F4A7C15ull;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return (uint32_t) (x >> 32);
}

static inline void
fz_permutation(int *perm, int n, uint64_t *state)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--)
	{
		int			k = (int) (fz_rand(state) % (uint32_t) (i + 1));
		int			t = perm[i];

		perm[i] = perm[k];
		perm[k] = t;
	}
}

/* A broken invariant: say which, and crash so that libFuzzer keeps it. */
static inline void
fz_fail(const char *file, int line, const char *fmt, ...)
{
	va_list		ap;

	fprintf(stderr, "\n%s:%d: invariant broken: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	fflush(stderr);
	abort();
}

#define FZ_CHECK(cond, ...) \
	do { if (!(cond)) fz_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/*
 * The input as a tag and a text: the first byte says what the rest is, the
 * rest becomes a NUL-terminated copy (malloc'd, len bytes before the NUL).
 * NULL for inputs longer than 64 kB, which no parser is sent.
 */
static inline char *
fz_tagged_text(const uint8_t *data, size_t size, char *tag, size_t *len)
{
	char	   *text;

	if (size > 65536)
		return NULL;
	*tag = size > 0 ? (char) data[0] : 'x';
	*len = size > 0 ? size - 1 : 0;
	text = malloc(*len + 1);
	if (text == NULL)
		abort();
	memcpy(text, data + (size > 0), *len);
	text[*len] = '\0';
	return text;
}

/*
 * One check of a target whose input is a tag and a text (fz_tagged_text):
 * the first byte picks the check of that tag, any other runs every check
 * in turn, in the order given.
 */
typedef struct FuzzCheck
{
	char		tag;
	void		(*run) (const char *text, size_t len);
} FuzzCheck;

static inline int
fz_run_tagged(const uint8_t *data, size_t size, const FuzzCheck *checks, size_t nchecks)
{
	size_t		len;
	char		tag;
	char	   *text = fz_tagged_text(data, size, &tag, &len);
	int			ran = 0;

	if (text == NULL)
		return 0;
	for (size_t i = 0; i < nchecks; i++)
		if (checks[i].tag == tag)
		{
			checks[i].run(text, len);
			ran = 1;
		}
	for (size_t i = 0; i < nchecks && !ran; i++)
		checks[i].run(text, len);
	free(text);
	return 0;
}

/*
 * What a quoting function wrote into out, a buffer of exactly outlen
 * bytes: it fits, is terminated, is in double quotes and is printable.
 */
static inline void
fz_check_quoted(const char *who, const char *out, size_t outlen)
{
	size_t		n = strnlen(out, outlen);

	FZ_CHECK(n < outlen, "%s overruns %zu bytes", who, outlen);
	FZ_CHECK(n >= 2 && out[0] == '"' && out[n - 1] == '"', "%s gives %s", who, out);
	for (size_t i = 0; i < n; i++)
		FZ_CHECK(out[i] >= 0x20 && out[i] < 0x7f, "%s lets byte 0x%02x through", who,
				 (unsigned char) out[i]);
}

#endif							/* CONNBUDGET_FUZZ_H */
