/* rangelock.h - in-flight exclusion of granule ranges (doc/design.md,
 * invariant 2).
 *
 * No two copies of the same granule may be in flight at once, or an older
 * copy could land on the target after a newer one and leave it stale while
 * its dirty bit is clear.  A copy claims its granules here before it clears
 * their dirty bits and releases them once its write to the target is done.
 *
 * Like QEMU's in-flight bitmap, a claim never waits: it takes the longest
 * free run that starts at the first granule and stops at the first granule
 * somebody else holds.  Waiting (on a condition variable) is the caller's
 * business.
 *
 * Not thread-safe: callers hold the owning image's lock.
 */
#ifndef MIRRORFS_RANGELOCK_H
#define MIRRORFS_RANGELOCK_H

#include <stdbool.h>
#include <stdint.h>

struct rangelock;

struct rangelock *rangelock_new(uint64_t ngranules);
void rangelock_free(struct rangelock *rl);
/* 0 or -ENOMEM.  Growing adds free granules. */
int rangelock_resize(struct rangelock *rl, uint64_t ngranules);

/* Claim up to max granules from start on, stopping before the first one
 * already held (or the end).  Returns how many were claimed: 0 when start
 * itself is held or out of range. */
uint64_t rangelock_try_claim(struct rangelock *rl, uint64_t start, uint64_t max);
/* Claim all of [start, start+count) or nothing; true on success. */
bool rangelock_claim_all(struct rangelock *rl, uint64_t start, uint64_t count);
/* True when no granule of [start, start+count) is held. */
bool rangelock_is_free(const struct rangelock *rl, uint64_t start, uint64_t count);
/* Release granules claimed earlier; releasing a free granule is a bug
 * (asserted). */
void rangelock_release(struct rangelock *rl, uint64_t start, uint64_t count);
/* Number of granules held. */
uint64_t rangelock_held(const struct rangelock *rl);

#endif
