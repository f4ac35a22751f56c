/*
 * lookup_test.c -- the open-addressing lookup table (extension/lookup.c)
 * against a plain array, through a million random inserts, deletes and
 * finds, with the table as full as connbudget lets it get.
 */
#define _POSIX_C_SOURCE 200809L

#include "../../extension/lookup.h"
#include "../lib/tap.h"

#include <stdint.h>
#include <stdlib.h>

#define CAPACITY 10000

static uint32_t keys[CAPACITY];	/* the key held in each slot */
static int	in_use[CAPACITY];

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t) (rng % n);
}

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

int
main(void)
{
	CbLookup   *table = malloc(cb_lookup_size(CAPACITY));
	int			wrong_find = 0,
				wrong_miss = 0,
				wrong_delete = 0,
				n = 0;

	cb_lookup_init(table, CAPACITY);
	ok(table->mask + 1 >= 2 * CAPACITY && ((table->mask + 1) & table->mask) == 0,
	   "the table has at least twice the capacity, a power of two (%u)", table->mask + 1);

	for (int step = 0; step < 1000000; step++)
	{
		int32_t		slot = (int32_t) rnd(CAPACITY);

		if (!in_use[slot])
		{
			/* a key that is not in the table yet */
			uint32_t	key;

			do
			{
				key = rnd(1u << 30);
			} while (cb_lookup_find(table, hash_of(key), matches, &key) >= 0);
			keys[slot] = key;
			in_use[slot] = 1;
			cb_lookup_insert(table, hash_of(key), slot);
			n++;
		}
		else if (rnd(2) == 0)
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
			for (int s = 0; s < CAPACITY; s++)
				if (in_use[s] && cb_lookup_find(table, hash_of(keys[s]), matches, &keys[s]) != s)
					wrong_find++;
	}
	for (int s = 0; s < CAPACITY; s++)
		if (in_use[s] && cb_lookup_find(table, hash_of(keys[s]), matches, &keys[s]) != s)
			wrong_find++;
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
	{
		int			found = 0;

		for (int s = 0; s < CAPACITY; s++)
			found += cb_lookup_find(table, hash_of(keys[s]), matches, &keys[s]) == s;
		is_int(found, CAPACITY, "every key of a full table is found");
	}
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
