/* test_rangelock.c - unit tests for the in-flight granule lock. */
#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "rangelock.h"
#include "unit.h"

START_TEST(test_new_is_free)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert_ptr_nonnull(rl);
    ck_assert_uint_eq(rangelock_held(rl), 0);
    ck_assert(rangelock_is_free(rl, 0, 100));
    ck_assert(rangelock_is_free(rl, 0, UINT64_MAX));
    rangelock_free(rl);
    rangelock_free(NULL);
}
END_TEST

START_TEST(test_empty_lock)
{
    struct rangelock *rl = rangelock_new(0);

    ck_assert_ptr_nonnull(rl);
    ck_assert_uint_eq(rangelock_try_claim(rl, 0, 10), 0);
    ck_assert(!rangelock_claim_all(rl, 0, 1));
    ck_assert(rangelock_is_free(rl, 0, 10));
    ck_assert_uint_eq(rangelock_held(rl), 0);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_try_claim_stops_at_held)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert_uint_eq(rangelock_try_claim(rl, 10, 20), 20);
    ck_assert_uint_eq(rangelock_held(rl), 20);
    ck_assert(!rangelock_is_free(rl, 10, 1));
    ck_assert(!rangelock_is_free(rl, 29, 1));
    ck_assert(rangelock_is_free(rl, 30, 70));
    ck_assert(rangelock_is_free(rl, 0, 10));

    /* A run from 0 stops right before granule 10. */
    ck_assert_uint_eq(rangelock_try_claim(rl, 0, 100), 10);
    ck_assert_uint_eq(rangelock_held(rl), 30);

    /* Nothing when the first granule is held. */
    ck_assert_uint_eq(rangelock_try_claim(rl, 10, 5), 0);
    ck_assert_uint_eq(rangelock_try_claim(rl, 29, 5), 0);
    ck_assert_uint_eq(rangelock_held(rl), 30);

    /* max bounds the run; the end of the lock bounds it too. */
    ck_assert_uint_eq(rangelock_try_claim(rl, 30, 5), 5);
    ck_assert_uint_eq(rangelock_try_claim(rl, 35, 1000), 65);
    ck_assert_uint_eq(rangelock_held(rl), 100);
    ck_assert(!rangelock_is_free(rl, 99, 1));

    /* Out of range or empty claims take nothing. */
    ck_assert_uint_eq(rangelock_try_claim(rl, 100, 5), 0);
    ck_assert_uint_eq(rangelock_try_claim(rl, UINT64_MAX, UINT64_MAX), 0);
    rangelock_release(rl, 50, 10);
    ck_assert_uint_eq(rangelock_try_claim(rl, 50, 0), 0);
    ck_assert(rangelock_is_free(rl, 50, 10));
    ck_assert_uint_eq(rangelock_held(rl), 90);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_try_claim_word_boundaries)
{
    struct rangelock *rl = rangelock_new(300);

    ck_assert(rangelock_claim_all(rl, 64, 1));
    ck_assert_uint_eq(rangelock_try_claim(rl, 0, 300), 64);
    ck_assert_uint_eq(rangelock_try_claim(rl, 65, 300), 235);
    ck_assert_uint_eq(rangelock_held(rl), 300);
    rangelock_release(rl, 63, 3);
    ck_assert_uint_eq(rangelock_held(rl), 297);
    ck_assert(rangelock_is_free(rl, 63, 3));
    ck_assert(!rangelock_is_free(rl, 62, 2));
    ck_assert(!rangelock_is_free(rl, 65, 2));
    ck_assert_uint_eq(rangelock_try_claim(rl, 63, 300), 3);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_claim_all_or_nothing)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert(rangelock_claim_all(rl, 10, 10));
    ck_assert_uint_eq(rangelock_held(rl), 10);

    /* Overlapping the held run at either end fails and claims nothing. */
    ck_assert(!rangelock_claim_all(rl, 5, 10));
    ck_assert(rangelock_is_free(rl, 5, 5));
    ck_assert(!rangelock_claim_all(rl, 19, 10));
    ck_assert(rangelock_is_free(rl, 20, 9));
    ck_assert(!rangelock_claim_all(rl, 0, 100));
    ck_assert_uint_eq(rangelock_held(rl), 10);

    /* Adjacent runs are fine. */
    ck_assert(rangelock_claim_all(rl, 20, 5));
    ck_assert(rangelock_claim_all(rl, 0, 10));
    ck_assert_uint_eq(rangelock_held(rl), 25);

    /* A range running past the end cannot be had whole. */
    ck_assert(!rangelock_claim_all(rl, 90, 20));
    ck_assert(!rangelock_claim_all(rl, 90, UINT64_MAX));
    ck_assert(!rangelock_claim_all(rl, 100, 1));
    ck_assert(rangelock_is_free(rl, 90, 10));
    ck_assert(rangelock_claim_all(rl, 90, 10));
    ck_assert_uint_eq(rangelock_held(rl), 35);

    /* An empty claim succeeds and holds nothing. */
    ck_assert(rangelock_claim_all(rl, 50, 0));
    ck_assert_uint_eq(rangelock_held(rl), 35);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_release_frees)
{
    struct rangelock *rl = rangelock_new(1000);

    ck_assert(rangelock_claim_all(rl, 100, 300));
    rangelock_release(rl, 150, 100);
    ck_assert_uint_eq(rangelock_held(rl), 200);
    ck_assert(rangelock_is_free(rl, 150, 100));
    ck_assert(!rangelock_is_free(rl, 149, 1));
    ck_assert(!rangelock_is_free(rl, 250, 1));

    /* The released hole can be claimed again, and only the hole. */
    ck_assert_uint_eq(rangelock_try_claim(rl, 150, 1000), 100);
    ck_assert(!rangelock_claim_all(rl, 150, 1));
    rangelock_release(rl, 100, 300);
    ck_assert_uint_eq(rangelock_held(rl), 0);
    ck_assert(rangelock_is_free(rl, 0, 1000));
    ck_assert(rangelock_claim_all(rl, 0, 1000));
    rangelock_release(rl, 0, 1000);
    rangelock_release(rl, 500, 0);
    ck_assert_uint_eq(rangelock_held(rl), 0);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_is_free_partial)
{
    struct rangelock *rl = rangelock_new(200);

    ck_assert(rangelock_claim_all(rl, 100, 1));
    ck_assert(rangelock_is_free(rl, 0, 100));
    ck_assert(!rangelock_is_free(rl, 0, 101));
    ck_assert(!rangelock_is_free(rl, 100, 1));
    ck_assert(rangelock_is_free(rl, 101, 99));
    ck_assert(rangelock_is_free(rl, 101, UINT64_MAX));
    ck_assert(rangelock_is_free(rl, 100, 0));
    ck_assert(rangelock_is_free(rl, 500, 10));
    rangelock_free(rl);
}
END_TEST

START_TEST(test_resize)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert(rangelock_claim_all(rl, 90, 10));

    /* Growing adds free granules after the held ones. */
    ck_assert_int_eq(rangelock_resize(rl, 5000), 0);
    ck_assert_uint_eq(rangelock_held(rl), 10);
    ck_assert(rangelock_is_free(rl, 100, 4900));
    ck_assert(!rangelock_is_free(rl, 90, 10));
    ck_assert_uint_eq(rangelock_try_claim(rl, 100, 10000), 4900);
    ck_assert_uint_eq(rangelock_held(rl), 4910);

    /* Shrinking forgets what was held past the new end. */
    ck_assert_int_eq(rangelock_resize(rl, 95), 0);
    ck_assert_uint_eq(rangelock_held(rl), 5);
    ck_assert_int_eq(rangelock_resize(rl, 200), 0);
    ck_assert_uint_eq(rangelock_held(rl), 5);
    ck_assert(rangelock_is_free(rl, 95, 105));
    ck_assert_uint_eq(rangelock_try_claim(rl, 95, 1000), 105);
    rangelock_release(rl, 90, 110);
    ck_assert_uint_eq(rangelock_held(rl), 0);

    ck_assert_int_eq(rangelock_resize(rl, 0), 0);
    ck_assert_uint_eq(rangelock_try_claim(rl, 0, 1), 0);
    rangelock_free(rl);
}
END_TEST

START_TEST(test_large_lock)
{
    uint64_t n = 1ULL << 28;
    struct rangelock *rl = rangelock_new(n);

    ck_assert_ptr_nonnull(rl);
    ck_assert(rangelock_claim_all(rl, n - 1, 1));
    ck_assert_uint_eq(rangelock_try_claim(rl, 0, UINT64_MAX), n - 1);
    ck_assert_uint_eq(rangelock_held(rl), n);
    rangelock_release(rl, 0, n);
    ck_assert_uint_eq(rangelock_held(rl), 0);
    ck_assert(rangelock_is_free(rl, 0, n));
    rangelock_free(rl);
}
END_TEST

#ifndef NDEBUG
/* Releasing something not held must abort rather than corrupt the map. */
START_TEST(test_release_free_asserts)
{
    struct rangelock *rl = rangelock_new(100);

    rangelock_release(rl, 10, 1);
}
END_TEST

START_TEST(test_release_partly_held_asserts)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert(rangelock_claim_all(rl, 10, 10));
    rangelock_release(rl, 10, 11);
}
END_TEST

START_TEST(test_release_past_end_asserts)
{
    struct rangelock *rl = rangelock_new(100);

    ck_assert(rangelock_claim_all(rl, 90, 10));
    rangelock_release(rl, 90, 20);
}
END_TEST
#endif

static Suite *rangelock_suite(bool death_tests)
{
    Suite *s = suite_create("rangelock");
    TCase *tc;

    tc = tcase_create("claims");
    tcase_add_test(tc, test_new_is_free);
    tcase_add_test(tc, test_empty_lock);
    tcase_add_test(tc, test_try_claim_stops_at_held);
    tcase_add_test(tc, test_try_claim_word_boundaries);
    tcase_add_test(tc, test_claim_all_or_nothing);
    tcase_add_test(tc, test_release_frees);
    tcase_add_test(tc, test_is_free_partial);
    tcase_add_test(tc, test_resize);
    suite_add_tcase(s, tc);

    tc = tcase_create("large");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_large_lock);
    suite_add_tcase(s, tc);

#ifndef NDEBUG
    /* An abort can only be expected from a forked test; without fork it
     * would take the whole runner down (CK_FORK=no under valgrind). */
    if (death_tests) {
        tc = tcase_create("asserts");
        tcase_add_test_raise_signal(tc, test_release_free_asserts, SIGABRT);
        tcase_add_test_raise_signal(tc, test_release_partly_held_asserts, SIGABRT);
        tcase_add_test_raise_signal(tc, test_release_past_end_asserts, SIGABRT);
        suite_add_tcase(s, tc);
    }
#endif
    return s;
}

int main(void)
{
    /* Check reads CK_FORK itself; ask it rather than parse the variable. */
    SRunner *probe = srunner_create(NULL);
    bool forking = srunner_fork_status(probe) != CK_NOFORK;

    srunner_free(probe);
    return unit_run(rangelock_suite(forking));
}
