/*-------------------------------------------------------------------------
 *
 * identity.c
 *	  The pure rules of a connection's identity and reports (identity.h).
 *
 * The connect hook runs before PostgreSQL applies the client's options, so
 * it reads application_name and connbudget.pod from the startup packet
 * itself, with the precedence PostgreSQL will use moments later: whatever
 * a client sends, connbudget and pg_stat_activity must agree on the name,
 * or a login could claim one application for connbudget and show another.
 * These rules are plain C so that they can be fuzzed.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GUC names compare case-insensitively, and "--a-b=x" means "a_b". */
static bool
cb_option_name_matches(const char *given, size_t len, const char *name)
{
	if (strlen(name) != len)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = given[i];

		if (c == '-')
			c = '_';
		else if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (c != name[i])
			return false;
	}
	return true;
}

/*
 * The switches process_postgres_switches() accepts (its getopt string is
 * "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:"): those that take an
 * argument, and those that do not.
 */
#define CB_SWITCHES_WITH_ARG	"BcCDdfhkNprStvW-"
#define CB_SWITCHES_WITHOUT_ARG "bEeFijlnOPsT"

const char *
cb_option_value(char *const *argv, int argc, const char *const *pairs, int npairs,
				const char *name)
{
	const char *value = NULL;

	for (int i = 0; i < argc; i++)
	{
		const char *arg = argv[i];

		if (arg[0] != '-' || arg[1] == '\0')
			continue;			/* not an option (PostgreSQL refuses it) */
		if (strcmp(arg, "--") == 0)
			break;				/* end of options */
		for (const char *p = arg + 1; *p != '\0'; p++)
		{
			const char *optarg;
			const char *eq;

			if (strchr(CB_SWITCHES_WITHOUT_ARG, *p) != NULL)
				continue;
			if (strchr(CB_SWITCHES_WITH_ARG, *p) == NULL)
				break;			/* unknown switch: PostgreSQL refuses it */
			/* the argument is the rest of this word, or the next one */
			optarg = p[1] != '\0' ? p + 1 : (i + 1 < argc ? argv[++i] : NULL);
			if (optarg != NULL && (*p == 'c' || *p == '-') &&
				(eq = strchr(optarg, '=')) != NULL &&
				cb_option_name_matches(optarg, (size_t) (eq - optarg), name))
				value = eq + 1;
			break;
		}
	}
	for (int i = 0; i < npairs; i++)
		if (cb_option_name_matches(pairs[2 * i], strlen(pairs[2 * i]), name))
			value = pairs[2 * i + 1];
	return value;
}

void
cb_clean_name(const char *name, bool escape_bytes, char *out)
{
	size_t		len = name != NULL ? strlen(name) : 0;
	size_t		o = 0;

	if (len > CB_ID_MAX)
	{
		/*
		 * Whole characters, each as long as its first byte says, as
		 * pg_mbcliplen() cuts UTF-8 (also when the bytes that follow are
		 * not what that first byte promises).
		 */
		size_t		cut = 0;

		for (;;)
		{
			unsigned char c = (unsigned char) name[cut];
			size_t		l = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 :
				(c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;

			if (cut + l > CB_ID_MAX)
				break;
			cut += l;
		}
		len = cut;
	}
	for (size_t i = 0; i < len && o < CB_ID_MAX; i++)
	{
		unsigned char c = (unsigned char) name[i];

		if (c >= 32 && c <= 126)
			out[o++] = (char) c;
		else if (escape_bytes)
		{
			char		escape[5];

			snprintf(escape, sizeof(escape), "\\x%02x", c);
			for (int k = 0; k < 4 && o < CB_ID_MAX; k++)
				out[o++] = escape[k];
		}
		else
			out[o++] = '?';
	}
	out[o] = '\0';
}

/*
 * Pod ids are shown in views and logs and compared byte for byte, so
 * anything that could be mangled on the way (control characters, bytes
 * that are not valid in every server encoding) is refused rather than
 * silently rewritten.
 */
bool
cb_id_is_valid(const char *id, char *why, size_t whylen)
{
	size_t		len = strlen(id);

	if (len == 0)
	{
		snprintf(why, whylen, "A pod id must not be empty.");
		return false;
	}
	if (len > CB_ID_MAX)
	{
		snprintf(why, whylen, "A pod id is at most %d bytes; this one is %zu bytes.",
				 CB_ID_MAX, len);
		return false;
	}
	for (const char *p = id; *p; p++)
	{
		if (*p < 32 || *p > 126)
		{
			snprintf(why, whylen,
					 "A pod id may only contain printable ASCII characters; byte %d is 0x%02x.",
					 (int) (p - id) + 1, (unsigned char) *p);
			return false;
		}
	}
	return true;
}

static bool
cb_word_is(const char *value, const char *word)
{
	for (; *value && *word; value++, word++)
	{
		char		c = *value >= 'A' && *value <= 'Z' ? (char) (*value - 'A' + 'a') : *value;

		if (c != *word)
			return false;
	}
	return *value == '\0' && *word == '\0';
}

bool
cb_parse_demand(const char *value, int32_t *demand, bool *leave, bool *report)
{
	char	   *end;
	long		n;

	*demand = -1;
	*leave = false;
	*report = true;
	if (value == NULL || value[0] == '\0')
	{
		*report = false;
		return true;
	}
	if (cb_word_is(value, "unbounded"))
		return true;
	if (cb_word_is(value, "leave"))
	{
		*leave = true;
		return true;
	}
	if (value[0] < '0' || value[0] > '9')
		return false;
	errno = 0;
	n = strtol(value, &end, 10);
	if (errno != 0 || *end != '\0' || n < 0 || n > CB_MAX_DEMAND)
		return false;
	*demand = (int32_t) n;
	return true;
}
