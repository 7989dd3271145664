/* bitmap.c - a growable, hierarchical bit set.
 *
 * levels[0] holds the bits.  Bit j of levels[k + 1] is set exactly when word
 * j of levels[k] is non-zero.  The top level is a single word.  Every level
 * has at least one word, so nbits == 0 needs no special case in the walks.
 *
 * Invariant: bits past the end of a level (past nbits in level 0, past
 * nwords[k - 1] in level k) are always clear.  The searches rely on it to
 * never report a bit beyond the size, and resize relies on it so that grown
 * bits start clear.
 */
#include "bitmap.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define WORD_BITS 64
/* 2^64 bits are 2^58 words; ten levels of 64:1 summaries bring that to one
 * word, so eleven levels always suffice. */
#define MAX_LEVELS 11

struct bitmap {
    uint64_t nbits;
    uint64_t count;
    unsigned nlevels;
    uint64_t nwords[MAX_LEVELS];
    uint64_t *levels[MAX_LEVELS];
};

/* Words needed per level for nbits bits.  -ENOMEM when a level would not
 * fit in size_t, so callers can pass the sizes straight to the allocator. */
static int layout(uint64_t nbits, uint64_t nwords[MAX_LEVELS], unsigned *nlevels)
{
    uint64_t w = nbits / WORD_BITS + (nbits % WORD_BITS != 0);
    unsigned k = 0;

    if (w == 0)
        w = 1;
    if (w > SIZE_MAX / sizeof(uint64_t))
        return -ENOMEM;
    nwords[k++] = w;
    while (w > 1) {
        w = w / WORD_BITS + (w % WORD_BITS != 0);
        nwords[k++] = w;
    }
    *nlevels = k;
    return 0;
}

/* Masks of the bits from bit's position up to 63, and from 0 up to bit's
 * position, within bit's word. */
static inline uint64_t mask_from(uint64_t bit)
{
    return ~0ULL << (bit % WORD_BITS);
}

static inline uint64_t mask_upto(uint64_t bit)
{
    return ~0ULL >> (WORD_BITS - 1 - bit % WORD_BITS);
}

/* Set bits lo..hi (inclusive) of one level; returns how many were clear. */
static uint64_t level_set(uint64_t *w, uint64_t lo, uint64_t hi)
{
    uint64_t wlo = lo / WORD_BITS, whi = hi / WORD_BITS;
    uint64_t added = 0;
    uint64_t m;

    if (wlo == whi) {
        m = mask_from(lo) & mask_upto(hi);
        added = __builtin_popcountll(m & ~w[wlo]);
        w[wlo] |= m;
        return added;
    }
    m = mask_from(lo);
    added += __builtin_popcountll(m & ~w[wlo]);
    w[wlo] |= m;
    for (uint64_t i = wlo + 1; i < whi; i++) {
        added += WORD_BITS - __builtin_popcountll(w[i]);
        w[i] = ~0ULL;
    }
    m = mask_upto(hi);
    added += __builtin_popcountll(m & ~w[whi]);
    w[whi] |= m;
    return added;
}

/* Clear bits lo..hi (inclusive) of one level; returns how many were set. */
static uint64_t level_clear(uint64_t *w, uint64_t lo, uint64_t hi)
{
    uint64_t wlo = lo / WORD_BITS, whi = hi / WORD_BITS;
    uint64_t removed = 0;
    uint64_t m;

    if (wlo == whi) {
        m = mask_from(lo) & mask_upto(hi);
        removed = __builtin_popcountll(m & w[wlo]);
        w[wlo] &= ~m;
        return removed;
    }
    m = mask_from(lo);
    removed += __builtin_popcountll(m & w[wlo]);
    w[wlo] &= ~m;
    for (uint64_t i = wlo + 1; i < whi; i++) {
        removed += __builtin_popcountll(w[i]);
        w[i] = 0;
    }
    m = mask_upto(hi);
    removed += __builtin_popcountll(m & w[whi]);
    w[whi] &= ~m;
    return removed;
}

/* Clip [start, start+count) to the map; false when nothing is left.  On
 * true, *last is the inclusive end. */
static bool clip(const struct bitmap *map, uint64_t start, uint64_t count, uint64_t *last)
{
    if (start >= map->nbits || count == 0)
        return false;
    if (count > map->nbits - start)
        count = map->nbits - start;
    *last = start + count - 1;
    return true;
}

struct bitmap *bitmap_new(uint64_t nbits)
{
    struct bitmap *map = calloc(1, sizeof(*map));

    if (!map)
        return NULL;
    if (layout(nbits, map->nwords, &map->nlevels) < 0) {
        free(map);
        return NULL;
    }
    for (unsigned k = 0; k < map->nlevels; k++) {
        map->levels[k] = calloc(map->nwords[k], sizeof(uint64_t));
        if (!map->levels[k]) {
            bitmap_free(map);
            return NULL;
        }
    }
    map->nbits = nbits;
    return map;
}

void bitmap_free(struct bitmap *map)
{
    if (!map)
        return;
    for (unsigned k = 0; k < MAX_LEVELS; k++)
        free(map->levels[k]);
    free(map);
}

uint64_t bitmap_size(const struct bitmap *map)
{
    return map->nbits;
}

uint64_t bitmap_count(const struct bitmap *map)
{
    return map->count;
}

bool bitmap_test(const struct bitmap *map, uint64_t bit)
{
    if (bit >= map->nbits)
        return false;
    return (map->levels[0][bit / WORD_BITS] >> (bit % WORD_BITS)) & 1;
}

void bitmap_set_range(struct bitmap *map, uint64_t start, uint64_t count)
{
    uint64_t lo = start, hi;

    if (!clip(map, start, count, &hi))
        return;
    map->count += level_set(map->levels[0], lo, hi);
    /* Every word touched below now holds at least one set bit, so the
     * summary bits of the whole word span are set, level after level. */
    for (unsigned k = 1; k < map->nlevels; k++) {
        lo /= WORD_BITS;
        hi /= WORD_BITS;
        level_set(map->levels[k], lo, hi);
    }
}

void bitmap_clear_range(struct bitmap *map, uint64_t start, uint64_t count)
{
    uint64_t lo = start, hi;

    if (!clip(map, start, count, &hi))
        return;
    map->count -= level_clear(map->levels[0], lo, hi);
    /* The words strictly inside the span are now zero; only the two end
     * words may still hold bits from outside the range.  The summary bits
     * to clear one level up are those of the words that became zero, which
     * form one contiguous span.  Once no word became zero, nothing above
     * changes. */
    for (unsigned k = 0; k + 1 < map->nlevels; k++) {
        const uint64_t *w = map->levels[k];
        uint64_t wlo = lo / WORD_BITS, whi = hi / WORD_BITS;

        if (w[wlo] != 0)
            wlo++;
        if (w[whi] != 0) {
            if (whi == 0)
                return;
            whi--;
        }
        if (wlo > whi)
            return;
        lo = wlo;
        hi = whi;
        level_clear(map->levels[k + 1], lo, hi);
    }
}

uint64_t bitmap_next_set(const struct bitmap *map, uint64_t start)
{
    uint64_t pos = start;
    unsigned k = 0;

    if (start >= map->nbits)
        return map->nbits;
    /* Climb while the rest of the current word is empty: moving to the next
     * bit one level up skips the remaining 64^(k+1) bits at once. */
    for (;;) {
        uint64_t word = pos / WORD_BITS;
        uint64_t bits = map->levels[k][word] & mask_from(pos);

        if (bits) {
            pos = word * WORD_BITS + __builtin_ctzll(bits);
            break;
        }
        if (k + 1 == map->nlevels || word + 1 >= map->nwords[k])
            return map->nbits;
        pos = word + 1;
        k++;
    }
    /* Descend: a summary bit found above start's own word stands for a word
     * that lies wholly after start, so its lowest bit is the answer. */
    while (k > 0) {
        k--;
        assert(map->levels[k][pos] != 0);
        pos = pos * WORD_BITS + __builtin_ctzll(map->levels[k][pos]);
    }
    return pos;
}

uint64_t bitmap_next_clear(const struct bitmap *map, uint64_t start)
{
    const uint64_t *w = map->levels[0];
    uint64_t word, bits;

    if (start >= map->nbits)
        return map->nbits;
    /* The summary levels only tell empty words apart, not full ones, so this
     * is a word scan; the count answers the common all-set case at once. */
    if (map->count == map->nbits)
        return map->nbits;
    word = start / WORD_BITS;
    bits = ~w[word] & mask_from(start);
    while (!bits) {
        if (++word >= map->nwords[0])
            return map->nbits;
        bits = ~w[word];
    }
    /* Past nbits the last word reads as clear, so a run of set bits that
     * reaches the end stops exactly at nbits: the result never exceeds it. */
    return word * WORD_BITS + __builtin_ctzll(bits);
}

uint64_t bitmap_next_clear_within(const struct bitmap *map, uint64_t start, uint64_t limit)
{
    const uint64_t *w = map->levels[0];
    uint64_t end, word, last_word, bits;

    if (start >= map->nbits)
        return map->nbits;
    end = limit > map->nbits - start ? map->nbits : start + limit;
    if (end == start)
        return start;
    word = start / WORD_BITS;
    last_word = (end - 1) / WORD_BITS;
    bits = ~w[word] & mask_from(start);
    while (!bits) {
        if (++word > last_word)
            return end;
        bits = ~w[word];
    }
    uint64_t found = word * WORD_BITS + __builtin_ctzll(bits);
    return found < end ? found : end;
}

bool bitmap_any(const struct bitmap *map, uint64_t start, uint64_t count)
{
    uint64_t last;

    if (!clip(map, start, count, &last))
        return false;
    return bitmap_next_set(map, start) <= last;
}

int bitmap_resize(struct bitmap *map, uint64_t nbits)
{
    uint64_t nwords[MAX_LEVELS] = {0};
    unsigned nlevels;
    uint64_t *fresh[MAX_LEVELS] = {0};

    if (nbits == map->nbits)
        return 0;
    if (layout(nbits, nwords, &nlevels) < 0)
        return -ENOMEM;

    if (nbits < map->nbits) {
        /* Clearing the tail first keeps the count and every summary level
         * right; what lies past the new ends is then all zero, so the
         * arrays can simply be cut and surplus top levels dropped. */
        bitmap_clear_range(map, nbits, map->nbits - nbits);
        for (unsigned k = 0; k < map->nlevels; k++) {
            if (k >= nlevels) {
                free(map->levels[k]);
                map->levels[k] = NULL;
                continue;
            }
            /* A failed shrink leaves the larger block, which is harmless. */
            uint64_t *p = realloc(map->levels[k], nwords[k] * sizeof(uint64_t));
            if (p)
                map->levels[k] = p;
        }
    } else {
        /* Allocate everything before changing what the map means, so that a
         * failure leaves it as it was: an existing level that realloc moved
         * or enlarged still holds the same words. */
        for (unsigned k = 0; k < nlevels; k++) {
            if (k < map->nlevels) {
                if (nwords[k] == map->nwords[k])
                    continue;
                uint64_t *p = realloc(map->levels[k], nwords[k] * sizeof(uint64_t));
                if (!p)
                    goto nomem;
                map->levels[k] = p;
            } else {
                fresh[k] = calloc(nwords[k], sizeof(uint64_t));
                if (!fresh[k])
                    goto nomem;
            }
        }
        for (unsigned k = 0; k < map->nlevels; k++)
            memset(map->levels[k] + map->nwords[k], 0,
                   (nwords[k] - map->nwords[k]) * sizeof(uint64_t));
        /* Levels below the old top stay valid: the words added under them
         * are zero.  The new levels above summarize from scratch. */
        for (unsigned k = map->nlevels; k < nlevels; k++) {
            const uint64_t *below = map->levels[k - 1];
            map->levels[k] = fresh[k];
            for (uint64_t j = 0; j < nwords[k - 1]; j++)
                if (below[j])
                    fresh[k][j / WORD_BITS] |= 1ULL << (j % WORD_BITS);
        }
    }
    map->nbits = nbits;
    map->nlevels = nlevels;
    memcpy(map->nwords, nwords, sizeof(nwords));
    return 0;

nomem:
    for (unsigned k = 0; k < MAX_LEVELS; k++)
        free(fresh[k]);
    return -ENOMEM;
}
