/* rangelock.c - in-flight exclusion of granule ranges, one bit per granule. */
#include "rangelock.h"

#include <assert.h>
#include <stdlib.h>

#include "bitmap.h"

struct rangelock {
    struct bitmap *held;
};

struct rangelock *rangelock_new(uint64_t ngranules)
{
    struct rangelock *rl = calloc(1, sizeof(*rl));

    if (!rl)
        return NULL;
    rl->held = bitmap_new(ngranules);
    if (!rl->held) {
        free(rl);
        return NULL;
    }
    return rl;
}

void rangelock_free(struct rangelock *rl)
{
    if (!rl)
        return;
    bitmap_free(rl->held);
    free(rl);
}

int rangelock_resize(struct rangelock *rl, uint64_t ngranules)
{
    return bitmap_resize(rl->held, ngranules);
}

uint64_t rangelock_try_claim(struct rangelock *rl, uint64_t start, uint64_t max)
{
    uint64_t size = bitmap_size(rl->held);
    uint64_t n;

    if (start >= size || max == 0)
        return 0;
    /* next_set() returns the size when nothing is held, so the run also
     * stops at the end of the map. */
    n = bitmap_next_set(rl->held, start) - start;
    if (n > max)
        n = max;
    bitmap_set_range(rl->held, start, n);
    return n;
}

bool rangelock_claim_all(struct rangelock *rl, uint64_t start, uint64_t count)
{
    uint64_t size = bitmap_size(rl->held);

    /* Granules past the end cannot be claimed, so such a range cannot be
     * claimed whole; bitmap clipping would otherwise claim only a part. */
    if (start > size || count > size - start)
        return false;
    if (bitmap_any(rl->held, start, count))
        return false;
    bitmap_set_range(rl->held, start, count);
    return true;
}

bool rangelock_is_free(const struct rangelock *rl, uint64_t start, uint64_t count)
{
    return !bitmap_any(rl->held, start, count);
}

#ifndef NDEBUG
static bool all_held(const struct rangelock *rl, uint64_t start, uint64_t count)
{
    uint64_t size = bitmap_size(rl->held);

    if (start > size || count > size - start)
        return false;
    return count == 0 || bitmap_next_clear(rl->held, start) >= start + count;
}
#endif

void rangelock_release(struct rangelock *rl, uint64_t start, uint64_t count)
{
    /* Releasing a granule nobody holds means two owners thought they held
     * it, which is exactly the overlap this lock exists to prevent. */
    assert(all_held(rl, start, count));
    bitmap_clear_range(rl->held, start, count);
}

uint64_t rangelock_held(const struct rangelock *rl)
{
    return bitmap_count(rl->held);
}
