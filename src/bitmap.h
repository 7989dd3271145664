/* bitmap.h - a growable, hierarchical bit set.
 *
 * Used for an image's maps, one bit per granule: dirty, written (the target
 * may hold data), unflushed and suspect (image.c); granules in flight are
 * the range lock's (rangelock.c).  A 1 TiB image at 4 KiB
 * granularity has 2^28 bits; bitmap_next_set() must stay fast on it, so each
 * level above the bits keeps one bit per non-zero 64-bit word of the level
 * below, and a search skips empty words 64^k at a time.
 *
 * Not thread-safe: callers hold the lock of the image that owns the map.
 * Ranges are clipped to the bitmap's size.  No I/O, no FUSE.
 */
#ifndef MIRRORFS_BITMAP_H
#define MIRRORFS_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct bitmap;

/* A bitmap of nbits clear bits (nbits may be 0).  NULL when out of memory. */
struct bitmap *bitmap_new(uint64_t nbits);
void bitmap_free(struct bitmap *map);

/* Change the number of bits.  Bits that become part of the map are clear;
 * bits cut off are forgotten (and no longer counted).  0 or -ENOMEM (then
 * the map is unchanged). */
int bitmap_resize(struct bitmap *map, uint64_t nbits);

uint64_t bitmap_size(const struct bitmap *map);
/* Number of set bits, in O(1). */
uint64_t bitmap_count(const struct bitmap *map);

bool bitmap_test(const struct bitmap *map, uint64_t bit);
void bitmap_set_range(struct bitmap *map, uint64_t start, uint64_t count);
void bitmap_clear_range(struct bitmap *map, uint64_t start, uint64_t count);
/* True when any bit of [start, start+count) is set. */
bool bitmap_any(const struct bitmap *map, uint64_t start, uint64_t count);

/* Index of the first set bit >= start, or bitmap_size() when there is none. */
uint64_t bitmap_next_set(const struct bitmap *map, uint64_t start);
/* Index of the first clear bit >= start, or bitmap_size() when there is none. */
uint64_t bitmap_next_clear(const struct bitmap *map, uint64_t start);
/* The same, looking at no more than limit bits: the first clear bit in
 * [start, start+limit), or min(start+limit, bitmap_size()) when all are
 * set.  Its cost is bounded by limit, not by the length of the set run. */
uint64_t bitmap_next_clear_within(const struct bitmap *map, uint64_t start, uint64_t limit);

#endif
