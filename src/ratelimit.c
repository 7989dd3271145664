/* ratelimit.c - token bucket (see ratelimit.h). */
#include "config.h"

#include "ratelimit.h"

static uint64_t bucket_size(uint64_t rate, uint64_t min_burst)
{
    uint64_t b = rate / 10;

    return b > min_burst ? b : min_burst;
}

static void refill(struct ratelimit *rl, uint64_t now_ns)
{
    if (now_ns > rl->last_ns) {
        rl->tokens += (double)rl->rate * (double)(now_ns - rl->last_ns) / 1e9;
        if (rl->tokens > (double)rl->burst)
            rl->tokens = (double)rl->burst;
    }
    rl->last_ns = now_ns;
}

void ratelimit_init(struct ratelimit *rl, uint64_t rate, uint64_t min_burst, uint64_t now_ns)
{
    rl->rate = rate;
    rl->burst = bucket_size(rate, min_burst);
    rl->tokens = (double)rl->burst;
    rl->last_ns = now_ns;
}

void ratelimit_set_rate(struct ratelimit *rl, uint64_t rate, uint64_t min_burst,
                        uint64_t now_ns)
{
    refill(rl, now_ns);
    rl->rate = rate;
    rl->burst = bucket_size(rate, min_burst);
    if (rl->tokens > (double)rl->burst)
        rl->tokens = (double)rl->burst;
    /* A debt run up at a lower rate is forgiven: paying it at the old rate
     * would make a speed-up take effect late. */
    if (rl->tokens < 0)
        rl->tokens = 0;
}

uint64_t ratelimit_charge(struct ratelimit *rl, uint64_t bytes, uint64_t now_ns)
{
    if (rl->rate == 0)
        return 0;
    refill(rl, now_ns);
    rl->tokens -= (double)bytes;
    if (rl->tokens >= 0)
        return 0;
    return (uint64_t)(-rl->tokens * 1e9 / (double)rl->rate);
}
