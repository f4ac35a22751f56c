/*
 * lookup_test.c -- the open-addressing lookup table (extension/lookup.c)
 * against a plain array, through a million random inserts, deletes and
 * finds, with the table as full as connbudget lets it get.  The steps are
 * new every run; the seed is printed, and CB_TEST_SEED=<seed> repeats them.
 */
#define _POSIX_C_SOURCE 200809L

#include "../../extension/lookup.h"
#include "../lib/rnd.h"
#include "../lib/tap.h"

#include <stdint.h>
#include <stdlib.h>

#define CAPACITY 10000

static uint32_t keys[CAPACITY];	/* the key held in each slot */
static int	in_use[CAPACITY];

static bool
matches(int32_t slot, const void *key)
{
	return keys[slot] == *(const uint32_t *) key;
}

/* A poor hash on purpose: many keys share it, so probes collide. */
static uint32_t
hash_of(uint32_t key)
{
	return (key * 2654435761u) >> 20;
}

/* How many of the keys in use the table does not find in their slots. */
static int
keys_not_found(const CbLookup *table)
{
	int			wrong = 0;

	for (int s = 0; s < CAPACITY; s++)
		if (in_use[s] && cb_lookup_find(table, hash_of(keys[s]), matches, &keys[s]) != s)
			wrong++;
	return wrong;
}

int
main(void)
{
	CbLookup   *table = malloc(cb_lookup_size(CAPACITY));
	int			wrong_find = 0,
				wrong_miss = 0,
				wrong_delete = 0,
				n = 0;

	rnd_init("lookup_test", rnd_fresh_seed());
	cb_lookup_init(table, CAPACITY);
	ok(table->mask + 1 >= 2 * CAPACITY && ((table->mask + 1) & table->mask) == 0,
	   "the table has at least twice the capacity, a power of two (%u)", table->mask + 1);

	for (int step = 0; step < 1000000; step++)
	{
		int32_t		slot = (int32_t) rnd_below(CAPACITY);

		if (!in_use[slot])
		{
			/* a key that is not in the table yet */
			uint32_t	key;

			do
			{
				key = rnd_below(1u << 30);
			} while (cb_lookup_find(table, hash_of(key), matches, &key) >= 0);
			keys[slot] = key;
			in_use[slot] = 1;
			cb_lookup_insert(table, hash_of(key), slot);
			n++;
		}
		else if (rnd_below(2) == 0)
		{
			uint32_t	key = keys[slot];

			if (!cb_lookup_delete(table, hash_of(key), slot))
				wrong_delete++;
			in_use[slot] = 0;
			n--;
			if (cb_lookup_find(table, hash_of(key), matches, &key) >= 0)
				wrong_miss++;
		}
		/* every so often, every key is found where it is */
		if (step % 100000 == 0)
			wrong_find += keys_not_found(table);
	}
	wrong_find += keys_not_found(table);
	is_int(wrong_find, 0, "after a million random inserts and deletes, every key is found in its slot");
	is_int(wrong_miss, 0, "and no deleted key is found");
	is_int(wrong_delete, 0, "every delete finds its entry");
	is_int(table->count, n, "the table counts %d entries", n);

	/* full: every slot in use, then emptied */
	for (int s = 0; s < CAPACITY; s++)
		if (!in_use[s])
		{
			keys[s] = (1u << 30) + (uint32_t) s;
			in_use[s] = 1;
			cb_lookup_insert(table, hash_of(keys[s]), s);
		}
	is_int(table->count, CAPACITY, "the table holds its whole capacity");
	is_int(keys_not_found(table), 0, "every key of a full table is found");
	for (int s = 0; s < CAPACITY; s++)
		cb_lookup_delete(table, hash_of(keys[s]), s);
	is_int(table->count, 0, "and it empties completely");
	{
		int			clean = 1;

		for (uint32_t i = 0; i <= table->mask; i++)
			clean &= table->entries[i].slot == -1;
		ok(clean, "with no entry left behind (no tombstones)");
	}
	free(table);
	return done_testing();
}
