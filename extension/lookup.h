/*-------------------------------------------------------------------------
 *
 * lookup.h
 *	  Hashed lookup of applications, pods and pool sessions: an open
 *	  addressing table from a key's hash to the slot that holds the key.
 *
 * The table lives in shared memory next to the slot arrays it indexes and
 * is sized once, at twice the slot capacity rounded up to a power of two,
 * so it is never more than half full and a probe sequence is short.  It
 * stores only (hash, slot) pairs; the caller compares the key itself with
 * a match callback, so one implementation serves every kind of key.
 * Deletion shifts the entries that follow back into place (no
 * tombstones), so lookups stay as fast after a million joins and leaves
 * as on the first day.
 *
 * Pure C, no PostgreSQL headers: unit-tested in test/unit.  The caller
 * provides the locking.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CONNBUDGET_LOOKUP_H
#define CONNBUDGET_LOOKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct CbLookupEntry
{
	uint32_t	hash;
	int32_t		slot;			/* -1: empty */
} CbLookupEntry;

typedef struct CbLookup
{
	uint32_t	mask;			/* number of entries - 1 */
	int32_t		count;
	CbLookupEntry entries[];
} CbLookup;

/* Does the key in "slot" equal "key"? */
typedef bool (*CbLookupMatch) (int32_t slot, const void *key);

/* Bytes of a table that indexes up to capacity slots. */
extern size_t cb_lookup_size(int capacity);
extern void cb_lookup_init(CbLookup *table, int capacity);

/* The slot holding key, or -1. */
extern int32_t cb_lookup_find(const CbLookup *table, uint32_t hash,
							  CbLookupMatch match, const void *key);

/* Index slot under hash; the key must not be in the table yet. */
extern void cb_lookup_insert(CbLookup *table, uint32_t hash, int32_t slot);

/* Remove slot, indexed under hash; returns false if it was not there. */
extern bool cb_lookup_delete(CbLookup *table, uint32_t hash, int32_t slot);

#endif							/* CONNBUDGET_LOOKUP_H */
