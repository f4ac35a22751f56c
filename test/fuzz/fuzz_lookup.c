/*
 * fuzz_lookup.c -- libFuzzer target for the open-addressing lookup table
 * (extension/lookup.c), against a plain array.
 *
 * The input picks a capacity (1 to 64 slots), a hash function and a
 * sequence of operations: insert a key into a free slot, delete the key of
 * a slot, delete an entry that is not there, find a key.  The hash
 * functions make keys collide on purpose: the full key, a few hash values
 * for many keys (the match callback decides), many hash values on one home
 * position, homes at the very end of the table (probes wrap around), and
 * the multiplicative hash of the unit test.  After every operation the
 * table agrees with the array: every key in use is found in its slot and
 * every other key is not, delete finds what it should and only that, the
 * count is right, each slot in use is indexed exactly once under its
 * key's hash, and every entry is reachable from its home position without
 * crossing an empty entry.  The table is allocated at exactly
 * cb_lookup_size(), so AddressSanitizer sees any overrun.
 */
#include "../../extension/lookup.h"
#include "fuzz.h"

#define MAX_CAPACITY 64

static uint32_t keys[MAX_CAPACITY];	/* the key held in each slot */
static int	in_use[MAX_CAPACITY];
static int	hash_kind;

static bool
matches(int32_t slot, const void *key)
{
	FZ_CHECK(slot >= 0 && slot < MAX_CAPACITY && in_use[slot],
			 "the table asks about slot %d, which holds no key", slot);
	return keys[slot] == *(const uint32_t *) key;
}

static uint32_t
hash_of(uint32_t key)
{
	switch (hash_kind)
	{
		case 0:
			return key;
		case 1:
			return key & 3;		/* many keys, four hashes */
		case 2:
			return (key & 0xFF) << 16;	/* many hashes, one home */
		case 3:
			return 0xFFFFFFFFu - (key & 7);	/* homes at the end: probes wrap */
		default:
			return (key * 2654435761u) >> 20;
	}
}

/* The slot the array says holds key, or -1. */
static int32_t
model_find(uint32_t key, int capacity)
{
	for (int s = 0; s < capacity; s++)
		if (in_use[s] && keys[s] == key)
			return s;
	return -1;
}

static void
check_table(const CbLookup *t, int capacity, int count)
{
	uint32_t	n = t->mask + 1;
	int			indexed[MAX_CAPACITY] = {0};

	FZ_CHECK((n & t->mask) == 0 && n >= 2u * (uint32_t) capacity,
			 "a table of %u entries for %d slots", n, capacity);
	FZ_CHECK(t->count == count, "the table counts %d entries, the array %d", t->count, count);
	for (uint32_t i = 0; i < n; i++)
	{
		const CbLookupEntry *e = &t->entries[i];

		if (e->slot < 0)
		{
			FZ_CHECK(e->slot == -1, "entry %u holds slot %d", i, e->slot);
			continue;
		}
		FZ_CHECK(e->slot < capacity && in_use[e->slot],
				 "entry %u indexes slot %d, which holds no key", i, e->slot);
		FZ_CHECK(e->hash == hash_of(keys[e->slot]),
				 "entry %u indexes slot %d under hash %u, not its key's %u", i, e->slot,
				 e->hash, hash_of(keys[e->slot]));
		indexed[e->slot]++;
		/* reachable: no empty entry between its home and it */
		for (uint32_t j = e->hash & t->mask; j != i; j = (j + 1) & t->mask)
			FZ_CHECK(t->entries[j].slot >= 0,
					 "entry %u (home %u) lies beyond the empty entry %u", i,
					 e->hash & t->mask, j);
	}
	for (int s = 0; s < capacity; s++)
	{
		FZ_CHECK(indexed[s] == in_use[s], "slot %d is indexed %d times", s, indexed[s]);
		if (in_use[s])
			FZ_CHECK(cb_lookup_find(t, hash_of(keys[s]), matches, &keys[s]) == s,
					 "key %u of slot %d is not found there", keys[s], s);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FuzzInput	in = fz_input(data, size);
	int			capacity = 1 + fz_byte(&in) % MAX_CAPACITY;
	CbLookup   *t;
	int			count = 0;

	hash_kind = fz_byte(&in) % 5;
	memset(in_use, 0, sizeof(in_use));
	t = malloc(cb_lookup_size(capacity));
	cb_lookup_init(t, capacity);
	check_table(t, capacity, 0);

	while (fz_left(&in) > 0)
	{
		uint8_t		op = fz_byte(&in);
		int			slot = fz_byte(&in) % capacity;
		uint32_t	key = (op & 4) ? fz_u32(&in) : fz_byte(&in);	/* small keys repeat */

		switch (op & 3)
		{
			case 0:				/* insert a key that is not there yet */
				if (in_use[slot] || model_find(key, capacity) >= 0)
					break;
				keys[slot] = key;
				in_use[slot] = 1;
				cb_lookup_insert(t, hash_of(key), slot);
				count++;
				break;
			case 1:				/* delete the key of a slot */
				if (!in_use[slot])
				{
					/* an entry that is not there: nothing happens */
					FZ_CHECK(!cb_lookup_delete(t, hash_of(key), slot),
							 "deleting slot %d, which holds nothing, succeeded", slot);
					break;
				}
				FZ_CHECK(cb_lookup_delete(t, hash_of(keys[slot]), slot),
						 "deleting key %u of slot %d found nothing", keys[slot], slot);
				in_use[slot] = 0;
				count--;
				FZ_CHECK(cb_lookup_find(t, hash_of(keys[slot]), matches, &keys[slot]) == -1,
						 "deleted key %u is still found", keys[slot]);
				break;
			default:			/* find any key */
				{
					int32_t		want = model_find(key, capacity);
					int32_t		got = cb_lookup_find(t, hash_of(key), matches, &key);

					FZ_CHECK(got == want, "key %u found in slot %d, held by %d", key, got, want);
				}
				break;
		}
		check_table(t, capacity, count);
	}
	free(t);
	return 0;
}
