/* ratelimit.h - a token bucket for the copy rate (`speed`).
 *
 * Refilled continuously (not in QEMU's bursty 100 ms slices): a copy charges
 * its bytes before it starts and is told how long to wait so that the
 * average rate stays at the limit.  The bucket may go into debt, so a 1 MiB
 * copy is never starved by a low rate; the debt is paid by waiting.  At most
 * 100 ms worth of bytes (and at least one chunk) may accumulate while idle.
 *
 * Pure: the caller passes the time, in nanoseconds of a monotonic clock.
 * Not thread-safe: callers hold the job's lock.
 */
#ifndef MIRRORFS_RATELIMIT_H
#define MIRRORFS_RATELIMIT_H

#include <stdint.h>

struct ratelimit {
    uint64_t rate;     /* bytes per second; 0 = unlimited */
    uint64_t burst;    /* the bucket's size in bytes */
    double tokens;     /* may be negative: debt */
    uint64_t last_ns;  /* last refill */
};

/* min_burst: the largest single charge expected (a copy chunk). */
void ratelimit_init(struct ratelimit *rl, uint64_t rate, uint64_t min_burst, uint64_t now_ns);
/* Change the rate; what was accumulated is kept (capped by the new size). */
void ratelimit_set_rate(struct ratelimit *rl, uint64_t rate, uint64_t min_burst,
                        uint64_t now_ns);
/* Take bytes; returns how many nanoseconds to wait before using them
 * (0 when unlimited or covered by the bucket). */
uint64_t ratelimit_charge(struct ratelimit *rl, uint64_t bytes, uint64_t now_ns);

#endif
