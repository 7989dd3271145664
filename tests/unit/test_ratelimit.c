/* Unit tests for the token bucket, on a fake clock. */
#include "config.h"

#include <check.h>
#include <stdlib.h>

#include "ratelimit.h"
#include "unit.h"

#define MiB (1024ull * 1024)
#define SEC 1000000000ull

/* Drive the bucket like a worker: charge a chunk, "sleep" the answer,
 * repeat; returns the fake time at which total bytes were charged. */
static uint64_t simulate(struct ratelimit *rl, uint64_t total, uint64_t chunk, uint64_t t)
{
    for (uint64_t done = 0; done < total; done += chunk)
        t += ratelimit_charge(rl, chunk, t);
    return t;
}

START_TEST(test_unlimited_never_waits)
{
    struct ratelimit rl;

    ratelimit_init(&rl, 0, MiB, 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(ratelimit_charge(&rl, 64 * MiB, 0), 0);
}
END_TEST

START_TEST(test_average_rate_holds)
{
    struct ratelimit rl;

    /* 100 MiB at 20 MiB/s in 1 MiB chunks: about 5 s minus the initial
     * bucket (2 MiB), never less than 4 s (the integration test's bound). */
    ratelimit_init(&rl, 20 * MiB, MiB, 0);
    uint64_t t = simulate(&rl, 100 * MiB, MiB, 0);
    ck_assert_uint_ge(t, 4 * SEC);
    ck_assert_uint_le(t, 5 * SEC);
    ck_assert_uint_ge(t, (uint64_t)(4.85 * SEC));
}
END_TEST

START_TEST(test_smooth_not_bursty)
{
    struct ratelimit rl;

    /* After the initial bucket is spent, every chunk waits about
     * chunk/rate: no 100 ms slices with a burst at the start of each. */
    ratelimit_init(&rl, 10 * MiB, 64 * 1024, 0);
    uint64_t t = simulate(&rl, rl.burst, 64 * 1024, 0);
    uint64_t prev = t;
    for (int i = 0; i < 50; i++) {
        t += ratelimit_charge(&rl, 64 * 1024, t);
        uint64_t step = t - prev;
        /* 64 KiB at 10 MiB/s = 6.25 ms */
        ck_assert_uint_ge(step, 6200000);
        ck_assert_uint_le(step, 6300000);
        prev = t;
    }
}
END_TEST

START_TEST(test_idle_credit_is_capped)
{
    struct ratelimit rl;

    /* An hour idle earns at most 100 ms worth, not an hour's worth. */
    ratelimit_init(&rl, 10 * MiB, MiB, 0);
    uint64_t t = 3600 * SEC;
    ck_assert_uint_eq(ratelimit_charge(&rl, MiB, t), 0);
    ck_assert_uint_gt(ratelimit_charge(&rl, MiB, t), 0);
}
END_TEST

START_TEST(test_set_rate_live)
{
    struct ratelimit rl;

    ratelimit_init(&rl, MiB, MiB, 0);
    uint64_t w = ratelimit_charge(&rl, 10 * MiB, 0);
    ck_assert_uint_ge(w, 8 * SEC); /* 9 MiB of debt at 1 MiB/s */
    /* Raising the rate takes effect now: the old debt is not paid at the
     * old rate. */
    ratelimit_set_rate(&rl, 100 * MiB, MiB, SEC / 100);
    ck_assert_uint_le(ratelimit_charge(&rl, MiB, SEC / 100), SEC / 50);
    /* And 0 switches the limit off. */
    ratelimit_set_rate(&rl, 0, MiB, SEC / 50);
    ck_assert_uint_eq(ratelimit_charge(&rl, 1000 * MiB, SEC / 50), 0);
}
END_TEST

START_TEST(test_large_chunk_small_rate)
{
    struct ratelimit rl;

    /* A chunk larger than 100 ms of the rate still goes, then waits. */
    ratelimit_init(&rl, 1024 * 1024, 4 * MiB, 0);
    ck_assert_uint_eq(ratelimit_charge(&rl, 4 * MiB, 0), 0);
    uint64_t w = ratelimit_charge(&rl, 4 * MiB, 0);
    ck_assert_uint_ge(w, 4 * SEC - 1000);
    ck_assert_uint_le(w, 4 * SEC + 1000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("bucket");

    tcase_add_test(tc, test_unlimited_never_waits);
    tcase_add_test(tc, test_average_rate_holds);
    tcase_add_test(tc, test_smooth_not_bursty);
    tcase_add_test(tc, test_idle_credit_is_capped);
    tcase_add_test(tc, test_set_rate_live);
    tcase_add_test(tc, test_large_chunk_small_rate);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
