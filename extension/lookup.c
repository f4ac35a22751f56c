/*-------------------------------------------------------------------------
 *
 * lookup.c
 *	  Open addressing with linear probing and backward-shift deletion.
 *	  See lookup.h.
 *
 * Portions Copyright (c) connbudget authors.  Licensed under the
 * PostgreSQL licence.
 *
 *-------------------------------------------------------------------------
 */
#include "lookup.h"

/* Entries for a capacity: at least twice it, a power of two. */
static uint32_t
cb_lookup_entries(int capacity)
{
	uint32_t	n = 16;

	while (n < (uint32_t) capacity * 2u)
		n <<= 1;
	return n;
}

size_t
cb_lookup_size(int capacity)
{
	return sizeof(CbLookup) + sizeof(CbLookupEntry) * cb_lookup_entries(capacity);
}

void
cb_lookup_init(CbLookup *table, int capacity)
{
	uint32_t	n = cb_lookup_entries(capacity);

	table->mask = n - 1;
	table->count = 0;
	for (uint32_t i = 0; i < n; i++)
	{
		table->entries[i].hash = 0;
		table->entries[i].slot = -1;
	}
}

int32_t
cb_lookup_find(const CbLookup *table, uint32_t hash, CbLookupMatch match,
			   const void *key)
{
	uint32_t	i = hash & table->mask;

	for (;;)
	{
		const CbLookupEntry *e = &table->entries[i];

		if (e->slot < 0)
			return -1;
		if (e->hash == hash && match(e->slot, key))
			return e->slot;
		i = (i + 1) & table->mask;
	}
}

void
cb_lookup_insert(CbLookup *table, uint32_t hash, int32_t slot)
{
	uint32_t	i = hash & table->mask;

	while (table->entries[i].slot >= 0)
		i = (i + 1) & table->mask;
	table->entries[i].hash = hash;
	table->entries[i].slot = slot;
	table->count++;
}

bool
cb_lookup_delete(CbLookup *table, uint32_t hash, int32_t slot)
{
	uint32_t	mask = table->mask;
	uint32_t	i = hash & mask;
	uint32_t	j;

	for (;;)
	{
		if (table->entries[i].slot < 0)
			return false;
		if (table->entries[i].slot == slot)
			break;
		i = (i + 1) & mask;
	}

	/*
	 * Close the hole at i: move back every entry after it, up to the next
	 * empty one, whose home position does not lie in (i, j] -- it would not
	 * be found past the hole otherwise.
	 */
	j = i;
	for (;;)
	{
		uint32_t	home;

		j = (j + 1) & mask;
		if (table->entries[j].slot < 0)
			break;
		home = table->entries[j].hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask))
		{
			table->entries[i] = table->entries[j];
			i = j;
		}
	}
	table->entries[i].hash = 0;
	table->entries[i].slot = -1;
	table->count--;
	return true;
}
