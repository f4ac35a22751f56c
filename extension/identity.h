/*-------------------------------------------------------------------------
 *
 * identity.h
 *	  The pure rules of a connection's identity and reports: which value a
 *	  startup option ends up with, how an application name is cleaned, what
 *	  a pod id or pool session id may be, and what connbudget.demand may
 *	  say.  No PostgreSQL headers, no allocation, no I/O: the connect hook
 *	  and the settings call them, the unit tests and the fuzzers drive them
 *	  with anything at all.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_IDENTITY_H
#define CONNBUDGET_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Names and ids are at most 63 bytes (NAMEDATALEN - 1). */
#define CB_ID_MAX 63

/* The most a pool may report as its demand (connbudget.demand). */
#define CB_MAX_DEMAND 1000000

/*
 * The value option "name" will have once PostgreSQL applies a startup
 * packet: first its command-line options, split into words as PostgreSQL
 * splits them (argv, argc: "-c name=value", "--name=value", switches
 * grouped the way getopt groups them), then its name/value pairs (pairs,
 * npairs pairs: pairs[2i] a name, pairs[2i+1] its value), the last one
 * winning.  Option names compare as GUC names do (case-insensitively, '-'
 * as '_'); "name" is in lower case.  Returns a pointer into argv or pairs,
 * or NULL if the client did not set it.
 */
extern const char *cb_option_value(char *const *argv, int argc,
								   const char *const *pairs, int npairs,
								   const char *name);

/*
 * An application name as pg_stat_activity shows it: cut to 63 bytes
 * without splitting a UTF-8 character, then every byte that is not
 * printable ASCII replaced as PostgreSQL replaces it (escape_bytes: a
 * \xNN escape, PostgreSQL 16 on; else '?'), cut again at 63 bytes.  NULL
 * is "".  out has room for CB_ID_MAX + 1 bytes.
 */
extern void cb_clean_name(const char *name, bool escape_bytes, char *out);

/*
 * Is this a valid pod id or pool session id: 1 to 63 bytes of printable
 * ASCII?  If not, why says why, in a sentence, within whylen bytes.
 */
extern bool cb_id_is_valid(const char *id, char *why, size_t whylen);

/*
 * What a value of connbudget.demand says: a number of connections from 0
 * to CB_MAX_DEMAND, "unbounded" (*demand -1), or "leave" (*leave); "" and
 * NULL report nothing (*report false).  False if it says none of these.
 */
extern bool cb_parse_demand(const char *value, int32_t *demand, bool *leave,
							bool *report);

#endif							/* CONNBUDGET_IDENTITY_H */
