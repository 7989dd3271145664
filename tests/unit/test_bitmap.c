/* test_bitmap.c - unit tests for the hierarchical bitmap. */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "bitmap.h"
#include "unit.h"

/* Sizes at which a new summary level appears: 64 bits fill one word, 64^2
 * bits one word of level 1, 64^3 one word of level 2. */
#define L1 64ULL
#define L2 (64ULL * 64)
#define L3 (64ULL * 64 * 64)
#define HUGE_BITS (1ULL << 28)

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- basics ------------------------------------------------------------ */

START_TEST(test_empty_map)
{
    struct bitmap *m = bitmap_new(0);

    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(bitmap_size(m), 0);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert(!bitmap_test(m, 0));
    ck_assert_uint_eq(bitmap_next_set(m, 0), 0);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 12345), 0);
    ck_assert(!bitmap_any(m, 0, 100));
    bitmap_set_range(m, 0, 100);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert(!bitmap_test(m, 0));
    bitmap_clear_range(m, 0, 100);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_int_eq(bitmap_resize(m, 0), 0);
    ck_assert_uint_eq(bitmap_size(m), 0);
    bitmap_free(m);
    bitmap_free(NULL);
}
END_TEST

START_TEST(test_new_is_clear)
{
    struct bitmap *m = bitmap_new(1000);

    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(bitmap_size(m), 1000);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 1000);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 0);
    ck_assert_uint_eq(bitmap_next_clear(m, 999), 999);
    ck_assert(!bitmap_any(m, 0, 1000));
    for (uint64_t i = 0; i < 1000; i++)
        ck_assert(!bitmap_test(m, i));
    bitmap_free(m);
}
END_TEST

/* Single bits on either side of the first word boundary. */
static const uint64_t boundary_bits[] = {0, 1, 62, 63, 64, 65, 127, 128, 129, 199};

START_TEST(test_word_boundaries)
{
    uint64_t b = boundary_bits[_i];
    struct bitmap *m = bitmap_new(200);

    bitmap_set_range(m, b, 1);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert(bitmap_test(m, b));
    if (b > 0)
        ck_assert(!bitmap_test(m, b - 1));
    ck_assert(!bitmap_test(m, b + 1));
    ck_assert_uint_eq(bitmap_next_set(m, 0), b);
    ck_assert_uint_eq(bitmap_next_set(m, b), b);
    ck_assert_uint_eq(bitmap_next_set(m, b + 1), 200);
    ck_assert_uint_eq(bitmap_next_clear(m, b), b + 1 < 200 ? b + 1 : 200);
    ck_assert(bitmap_any(m, b, 1));
    ck_assert(bitmap_any(m, 0, b + 1));
    ck_assert(!bitmap_any(m, 0, b));
    ck_assert(!bitmap_any(m, b + 1, 1000));

    bitmap_clear_range(m, b, 1);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert(!bitmap_test(m, b));
    ck_assert_uint_eq(bitmap_next_set(m, 0), 200);
    bitmap_free(m);
}
END_TEST

START_TEST(test_range_across_word)
{
    struct bitmap *m = bitmap_new(300);

    bitmap_set_range(m, 60, 10);
    ck_assert_uint_eq(bitmap_count(m), 10);
    ck_assert(!bitmap_test(m, 59));
    ck_assert(bitmap_test(m, 60));
    ck_assert(bitmap_test(m, 63));
    ck_assert(bitmap_test(m, 64));
    ck_assert(bitmap_test(m, 69));
    ck_assert(!bitmap_test(m, 70));
    ck_assert_uint_eq(bitmap_next_set(m, 0), 60);
    ck_assert_uint_eq(bitmap_next_set(m, 64), 64);
    ck_assert_uint_eq(bitmap_next_clear(m, 60), 70);

    /* Exactly one aligned word. */
    bitmap_set_range(m, 128, 64);
    ck_assert_uint_eq(bitmap_count(m), 74);
    ck_assert(!bitmap_test(m, 127));
    ck_assert(!bitmap_test(m, 192));
    ck_assert_uint_eq(bitmap_next_set(m, 70), 128);
    ck_assert_uint_eq(bitmap_next_clear(m, 128), 192);

    /* Several whole words plus partial ends. */
    bitmap_set_range(m, 1, 298);
    ck_assert_uint_eq(bitmap_count(m), 298);
    ck_assert(!bitmap_test(m, 0));
    ck_assert(!bitmap_test(m, 299));
    ck_assert_uint_eq(bitmap_next_clear(m, 1), 299);
    bitmap_free(m);
}
END_TEST

START_TEST(test_clear_within_run)
{
    struct bitmap *m = bitmap_new(1000);

    bitmap_set_range(m, 0, 1000);
    ck_assert_uint_eq(bitmap_count(m), 1000);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 1000);

    bitmap_clear_range(m, 100, 200);
    ck_assert_uint_eq(bitmap_count(m), 800);
    ck_assert(bitmap_test(m, 99));
    ck_assert(!bitmap_test(m, 100));
    ck_assert(!bitmap_test(m, 299));
    ck_assert(bitmap_test(m, 300));
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 100);
    ck_assert_uint_eq(bitmap_next_set(m, 100), 300);
    ck_assert(!bitmap_any(m, 100, 200));
    ck_assert(bitmap_any(m, 100, 201));
    ck_assert(bitmap_any(m, 99, 2));

    bitmap_clear_range(m, 500, 1);
    ck_assert_uint_eq(bitmap_count(m), 799);
    ck_assert_uint_eq(bitmap_next_clear(m, 300), 500);
    ck_assert_uint_eq(bitmap_next_set(m, 500), 501);

    /* A clear inside one word leaves both neighbours. */
    bitmap_clear_range(m, 700, 3);
    ck_assert_uint_eq(bitmap_count(m), 796);
    ck_assert(bitmap_test(m, 699));
    ck_assert(bitmap_test(m, 703));
    bitmap_free(m);
}
END_TEST

START_TEST(test_idempotent_counts)
{
    struct bitmap *m = bitmap_new(500);

    bitmap_set_range(m, 10, 100);
    bitmap_set_range(m, 10, 100);
    ck_assert_uint_eq(bitmap_count(m), 100);
    /* Overlapping set counts only new bits. */
    bitmap_set_range(m, 50, 100);
    ck_assert_uint_eq(bitmap_count(m), 140);
    /* Clearing clear bits changes nothing. */
    bitmap_clear_range(m, 200, 100);
    ck_assert_uint_eq(bitmap_count(m), 140);
    /* Overlapping clear removes only set bits. */
    bitmap_clear_range(m, 0, 20);
    ck_assert_uint_eq(bitmap_count(m), 130);
    bitmap_clear_range(m, 0, 20);
    ck_assert_uint_eq(bitmap_count(m), 130);
    bitmap_free(m);
}
END_TEST

START_TEST(test_clipping)
{
    struct bitmap *m = bitmap_new(100);

    bitmap_set_range(m, 90, 50);
    ck_assert_uint_eq(bitmap_count(m), 10);
    ck_assert(!bitmap_test(m, 100));
    ck_assert(!bitmap_test(m, 130));
    ck_assert_uint_eq(bitmap_next_clear(m, 90), 100);
    ck_assert(bitmap_any(m, 95, 1000));
    ck_assert(!bitmap_any(m, 100, 5));
    ck_assert(!bitmap_any(m, 50, 0));

    bitmap_set_range(m, 200, 5);
    ck_assert_uint_eq(bitmap_count(m), 10);
    /* start + count would overflow. */
    bitmap_set_range(m, 5, UINT64_MAX);
    ck_assert_uint_eq(bitmap_count(m), 95);
    ck_assert(bitmap_any(m, 5, UINT64_MAX));
    bitmap_clear_range(m, 6, UINT64_MAX);
    ck_assert_uint_eq(bitmap_count(m), 1);
    bitmap_set_range(m, UINT64_MAX, UINT64_MAX);
    bitmap_clear_range(m, UINT64_MAX, 1);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert_uint_eq(bitmap_next_set(m, UINT64_MAX), 100);
    ck_assert_uint_eq(bitmap_next_clear(m, UINT64_MAX), 100);
    /* Zero-length ranges do nothing. */
    bitmap_set_range(m, 50, 0);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert(!bitmap_test(m, 50));
    bitmap_free(m);
}
END_TEST

START_TEST(test_search_at_end)
{
    struct bitmap *m = bitmap_new(130);

    bitmap_set_range(m, 129, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 129), 129);
    ck_assert_uint_eq(bitmap_next_set(m, 130), 130);
    ck_assert_uint_eq(bitmap_next_set(m, 1000), 130);
    ck_assert_uint_eq(bitmap_next_clear(m, 129), 130);
    ck_assert_uint_eq(bitmap_next_clear(m, 130), 130);
    ck_assert_uint_eq(bitmap_next_clear(m, 128), 128);

    /* All set but bit 0: the clear bits past the end of the last, partial
     * word must not be reported. */
    bitmap_set_range(m, 1, 129);
    ck_assert_uint_eq(bitmap_next_clear(m, 1), 130);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 0);
    bitmap_free(m);

    /* An exact multiple of the word size. */
    m = bitmap_new(128);
    bitmap_set_range(m, 64, 64);
    ck_assert_uint_eq(bitmap_next_clear(m, 64), 128);
    ck_assert_uint_eq(bitmap_next_set(m, 127), 127);
    bitmap_clear_range(m, 127, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 127), 128);
    ck_assert_uint_eq(bitmap_next_clear(m, 64), 127);
    bitmap_free(m);
}
END_TEST

/* ---- summary levels ---------------------------------------------------- */

START_TEST(test_next_clear_within)
{
    struct bitmap *m = bitmap_new(1000);

    bitmap_set_range(m, 10, 500); /* [10, 510) set */
    /* The limit stops the search inside the run. */
    ck_assert_uint_eq(bitmap_next_clear_within(m, 10, 16), 26);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 60, 64), 124);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 63, 1), 64);
    /* The run ends before the limit. */
    ck_assert_uint_eq(bitmap_next_clear_within(m, 500, 64), 510);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 10, 10000), 510);
    /* A clear start is found at once; a zero limit finds nothing. */
    ck_assert_uint_eq(bitmap_next_clear_within(m, 5, 100), 5);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 20, 0), 20);
    /* Clipped at the end of the map. */
    bitmap_set_range(m, 900, 100);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 950, 1000), 1000);
    ck_assert_uint_eq(bitmap_next_clear_within(m, 1000, 5), 1000);
    /* Same answers as next_clear whenever the clear bit is within reach. */
    for (uint64_t st = 0; st < 1000; st += 7) {
        uint64_t full = bitmap_next_clear(m, st);
        uint64_t lim = bitmap_next_clear_within(m, st, 128);
        ck_assert_uint_eq(lim, full < st + 128 ? full : (st + 128 < 1000 ? st + 128 : 1000));
    }
    bitmap_free(m);
}
END_TEST

START_TEST(test_level1_boundary)
{
    uint64_t size = L3 + 100;
    struct bitmap *m = bitmap_new(size);

    /* Bits 4090..4099 straddle the boundary between level-1 words. */
    bitmap_set_range(m, L2 - 6, 10);
    ck_assert_uint_eq(bitmap_count(m), 10);
    ck_assert_uint_eq(bitmap_next_set(m, 0), L2 - 6);
    ck_assert_uint_eq(bitmap_next_set(m, L2 - 1), L2 - 1);
    ck_assert_uint_eq(bitmap_next_set(m, L2), L2);
    ck_assert_uint_eq(bitmap_next_set(m, L2 + 4), size);

    bitmap_clear_range(m, L2 - 6, 6);
    ck_assert_uint_eq(bitmap_next_set(m, 0), L2);
    bitmap_clear_range(m, L2, 4);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 0), size);
    ck_assert(!bitmap_any(m, 0, size));
    bitmap_free(m);
}
END_TEST

START_TEST(test_range_across_levels)
{
    uint64_t size = 2 * L3 + 12345;
    struct bitmap *m = bitmap_new(size);

    /* One range covering a whole level-2 word and parts of its neighbours. */
    bitmap_set_range(m, 1000, L3 + 5000);
    ck_assert_uint_eq(bitmap_count(m), L3 + 5000);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 1000);
    ck_assert_uint_eq(bitmap_next_clear(m, 1000), L3 + 6000);
    ck_assert_uint_eq(bitmap_next_set(m, L3 + 6000), size);

    /* Punch a hole that empties whole summary words on every level. */
    bitmap_clear_range(m, 2000, L3);
    ck_assert_uint_eq(bitmap_count(m), 5000);
    ck_assert_uint_eq(bitmap_next_set(m, 1500), 1500);
    ck_assert_uint_eq(bitmap_next_set(m, 2000), L3 + 2000);
    ck_assert_uint_eq(bitmap_next_clear(m, 1000), 2000);
    ck_assert(!bitmap_any(m, 2000, L3));
    ck_assert(bitmap_any(m, 2000, L3 + 1));

    /* Empty it from both ends; the summaries must let go of everything. */
    bitmap_clear_range(m, 0, 2000);
    ck_assert_uint_eq(bitmap_next_set(m, 0), L3 + 2000);
    bitmap_clear_range(m, L3, L3);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 0), size);

    /* A bit in the very last, partial word at each level. */
    bitmap_set_range(m, size - 1, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 0), size - 1);
    bitmap_free(m);
}
END_TEST

START_TEST(test_clear_keeps_edge_words)
{
    struct bitmap *m = bitmap_new(L3);

    /* Clearing a span whose end words keep other bits must keep them
     * findable, while the emptied words in between are skipped. */
    bitmap_set_range(m, 10, 1);
    bitmap_set_range(m, 130, 1);
    bitmap_set_range(m, 5000, 1);
    bitmap_set_range(m, L2 * 3 + 1, 1);
    bitmap_clear_range(m, 11, L2 * 3 - 10);
    ck_assert_uint_eq(bitmap_count(m), 2);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 10);
    ck_assert_uint_eq(bitmap_next_set(m, 11), L2 * 3 + 1);
    bitmap_clear_range(m, 10, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 0), L2 * 3 + 1);
    bitmap_free(m);
}
END_TEST

/* ---- resize ------------------------------------------------------------ */

START_TEST(test_resize_shrink_drops_bits)
{
    struct bitmap *m = bitmap_new(1000);

    bitmap_set_range(m, 5, 1);
    bitmap_set_range(m, 900, 100);
    ck_assert_uint_eq(bitmap_count(m), 101);
    ck_assert_int_eq(bitmap_resize(m, 950), 0);
    ck_assert_uint_eq(bitmap_size(m), 950);
    ck_assert_uint_eq(bitmap_count(m), 51);
    ck_assert_uint_eq(bitmap_next_set(m, 6), 900);
    ck_assert_uint_eq(bitmap_next_clear(m, 900), 950);
    ck_assert(!bitmap_test(m, 960));

    /* Growing back must not resurrect the dropped bits. */
    ck_assert_int_eq(bitmap_resize(m, 1000), 0);
    ck_assert_uint_eq(bitmap_count(m), 51);
    ck_assert(!bitmap_test(m, 960));
    ck_assert_uint_eq(bitmap_next_set(m, 950), 1000);
    ck_assert_uint_eq(bitmap_next_clear(m, 900), 950);

    /* Cut inside a word, then grow: the rest of that word stays clear. */
    bitmap_set_range(m, 0, 1000);
    ck_assert_int_eq(bitmap_resize(m, 70), 0);
    ck_assert_uint_eq(bitmap_count(m), 70);
    ck_assert_int_eq(bitmap_resize(m, 1000), 0);
    ck_assert_uint_eq(bitmap_count(m), 70);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 70);
    ck_assert_uint_eq(bitmap_next_set(m, 70), 1000);

    ck_assert_int_eq(bitmap_resize(m, 0), 0);
    ck_assert_uint_eq(bitmap_size(m), 0);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 0);
    ck_assert_int_eq(bitmap_resize(m, 200), 0);
    ck_assert_uint_eq(bitmap_count(m), 0);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 200);
    bitmap_free(m);
}
END_TEST

START_TEST(test_resize_grow_adds_levels)
{
    struct bitmap *m = bitmap_new(100000);

    bitmap_set_range(m, 5, 1);
    bitmap_set_range(m, 99999, 1);
    ck_assert_int_eq(bitmap_resize(m, 1ULL << 24), 0);
    ck_assert_uint_eq(bitmap_size(m), 1ULL << 24);
    ck_assert_uint_eq(bitmap_count(m), 2);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 5);
    ck_assert_uint_eq(bitmap_next_set(m, 6), 99999);
    ck_assert_uint_eq(bitmap_next_set(m, 100000), 1ULL << 24);
    ck_assert(!bitmap_any(m, 100000, 1ULL << 24));

    bitmap_set_range(m, (1ULL << 24) - 1, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 100000), (1ULL << 24) - 1);
    bitmap_clear_range(m, 99999, 1);
    ck_assert_uint_eq(bitmap_next_set(m, 6), (1ULL << 24) - 1);

    /* And down to a single word again. */
    ck_assert_int_eq(bitmap_resize(m, 50), 0);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert_uint_eq(bitmap_next_set(m, 0), 5);
    ck_assert_uint_eq(bitmap_next_set(m, 6), 50);
    bitmap_set_range(m, 0, 50);
    ck_assert_uint_eq(bitmap_count(m), 50);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 50);
    bitmap_free(m);
}
END_TEST

/* ---- randomized, against a plain bool array ---------------------------- */

static uint64_t rng_state;

/* xorshift64*: deterministic for a given seed, good enough for tests. */
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static uint64_t rng_below(uint64_t n)
{
    return n ? rng() % n : 0;
}

static uint64_t ref_next(const bool *ref, uint64_t size, uint64_t start, bool val)
{
    for (uint64_t i = start; i < size; i++)
        if (ref[i] == val)
            return i;
    return size;
}

/* A start that is usually inside the map, sometimes just past it. */
static uint64_t random_start(uint64_t size)
{
    return rng_below(size + 70);
}

/* A length that is short, word-sized or long. */
static uint64_t random_count(uint64_t size)
{
    switch (rng_below(4)) {
    case 0:
        return rng_below(4);
    case 1:
        return rng_below(130);
    case 2:
        return rng_below(size / 4 + 1);
    default:
        return rng_below(size + 100);
    }
}

/* Check records every passing assertion, which would dominate these loops;
 * compare in plain C and only call into Check on a mismatch. */
#define EXPECT_EQ(op, what, got, want)                                                   \
    do {                                                                                 \
        uint64_t got_ = (got), want_ = (want);                                           \
        if (got_ != want_)                                                               \
            ck_abort_msg("op %u: %s: got %llu, want %llu", (op), (what),                 \
                         (unsigned long long)got_, (unsigned long long)want_);           \
    } while (0)

static void check_whole(unsigned op, const struct bitmap *m, const bool *ref,
                        uint64_t size)
{
    uint64_t count = 0;
    uint64_t pos = bitmap_next_set(m, 0);

    for (uint64_t i = 0; i < size; i++) {
        if (bitmap_test(m, i) != ref[i])
            ck_abort_msg("op %u: bit %llu is %d", op, (unsigned long long)i, !ref[i]);
        if (!ref[i])
            continue;
        count++;
        EXPECT_EQ(op, "next_set walk", pos, i);
        pos = bitmap_next_set(m, i + 1);
    }
    EXPECT_EQ(op, "next_set walk end", pos, size);
    EXPECT_EQ(op, "count", bitmap_count(m), count);
}

static void run_random(uint64_t seed, uint64_t maxsize, unsigned nops)
{
    uint64_t size = maxsize / 2;
    bool *ref = calloc(maxsize, sizeof(*ref));
    struct bitmap *m = bitmap_new(size);
    uint64_t count = 0;

    ck_assert_ptr_nonnull(ref);
    ck_assert_ptr_nonnull(m);
    rng_state = seed;
    for (unsigned op = 0; op < nops; op++) {
        uint64_t r = rng_below(100);
        uint64_t start = random_start(size);
        uint64_t n = random_count(size);
        uint64_t end =
            start < size ? start + (n < size - start ? n : size - start) : start;

        if (r < 40) {
            bitmap_set_range(m, start, n);
            for (uint64_t i = start; i < end; i++) {
                count += !ref[i];
                ref[i] = true;
            }
        } else if (r < 80) {
            bitmap_clear_range(m, start, n);
            for (uint64_t i = start; i < end; i++) {
                count -= ref[i];
                ref[i] = false;
            }
        } else if (r < 83) {
            uint64_t nsize = rng_below(maxsize + 1);

            EXPECT_EQ(op, "resize", bitmap_resize(m, nsize), 0);
            for (uint64_t i = nsize; i < size; i++) {
                count -= ref[i];
                ref[i] = false;
            }
            size = nsize;
            start = random_start(size);
        } else {
            bool any = false;

            for (uint64_t i = start; i < end && !any; i++)
                any = ref[i];
            EXPECT_EQ(op, "any", bitmap_any(m, start, n), any);
        }
        EXPECT_EQ(op, "size", bitmap_size(m), size);
        EXPECT_EQ(op, "count", bitmap_count(m), count);
        EXPECT_EQ(op, "next_set", bitmap_next_set(m, start),
                  ref_next(ref, size, start, true));
        EXPECT_EQ(op, "next_clear", bitmap_next_clear(m, start),
                  ref_next(ref, size, start, false));
        EXPECT_EQ(op, "test", bitmap_test(m, start), start < size && ref[start]);
        if (op % 256 == 0)
            check_whole(op, m, ref, size);
    }
    check_whole(nops, m, ref, size);
    bitmap_free(m);
    free(ref);
}

START_TEST(test_random_small)
{
    /* Sizes up to a few words and two levels: many boundary cases. */
    run_random(0x5eed0001, 300, 20000);
}
END_TEST

START_TEST(test_random_medium)
{
    /* Three levels; resizes cross the 4096-bit level boundary. */
    run_random(0x5eed0002, 20000, 20000);
}
END_TEST

START_TEST(test_random_large)
{
    /* Four levels; resizes add and drop the top level. */
    run_random(0x5eed0003, L3 + 3000, 3000);
}
END_TEST

/* ---- a 1 TiB image at 4 KiB granules ----------------------------------- */

/* In ascending order, as next_set() iteration must find them. */
static const uint64_t scattered[] = {
    0,  63,       64,         4095,       4096,          L3 - 1,
    L3, 12345678, 1ULL << 24, 1ULL << 27, HUGE_BITS - 2, HUGE_BITS - 1,
};
#define NSCATTERED (sizeof(scattered) / sizeof(scattered[0]))

START_TEST(test_large_sparse)
{
    struct bitmap *m = bitmap_new(HUGE_BITS);
    struct timespec t0;
    uint64_t found[NSCATTERED + 1];
    unsigned n = 0, wrong = 0;
    double secs;

    ck_assert_ptr_nonnull(m);
    for (unsigned i = 0; i < NSCATTERED; i++)
        bitmap_set_range(m, scattered[i], 1);
    ck_assert_uint_eq(bitmap_count(m), NSCATTERED);

    for (uint64_t pos = bitmap_next_set(m, 0); pos < HUGE_BITS;
         pos = bitmap_next_set(m, pos + 1)) {
        ck_assert_uint_lt(n, NSCATTERED);
        found[n++] = pos;
    }
    ck_assert_uint_eq(n, NSCATTERED);
    for (unsigned i = 0; i < NSCATTERED; i++)
        ck_assert_uint_eq(found[i], scattered[i]);

    /* Searches over the long empty stretch must not be linear scans: a scan
     * reads 2^22 words per call, 10^4 calls would take minutes.  The bound
     * is loose enough for valgrind. */
    bitmap_clear_range(m, HUGE_BITS - 2, 2);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < 10000; i++)
        wrong += bitmap_next_set(m, (1ULL << 27) + 1 + i * 997ULL) != HUGE_BITS;
    secs = seconds_since(&t0);
    ck_assert_uint_eq(wrong, 0);
    ck_assert_msg(secs < 2.0, "10000 next_set took %.3f s", secs);
    ck_assert(!bitmap_any(m, (1ULL << 27) + 1, HUGE_BITS));
    bitmap_free(m);
}
END_TEST

START_TEST(test_large_fill)
{
    struct bitmap *m = bitmap_new(HUGE_BITS);
    struct timespec t0;
    double secs;

    ck_assert_ptr_nonnull(m);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bitmap_set_range(m, 0, HUGE_BITS);
    secs = seconds_since(&t0);
    ck_assert_msg(secs < 10.0, "set_range of 2^28 bits took %.3f s", secs);
    ck_assert_uint_eq(bitmap_count(m), HUGE_BITS);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), HUGE_BITS);
    ck_assert(bitmap_test(m, HUGE_BITS - 1));

    bitmap_clear_range(m, 1, HUGE_BITS - 2);
    ck_assert_uint_eq(bitmap_count(m), 2);
    ck_assert_uint_eq(bitmap_next_set(m, 1), HUGE_BITS - 1);
    ck_assert_uint_eq(bitmap_next_clear(m, 0), 1);

    /* Shrinking a huge map drops its top levels but keeps low bits. */
    ck_assert_int_eq(bitmap_resize(m, 100), 0);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert_uint_eq(bitmap_next_set(m, 1), 100);
    ck_assert_int_eq(bitmap_resize(m, HUGE_BITS), 0);
    ck_assert_uint_eq(bitmap_count(m), 1);
    ck_assert_uint_eq(bitmap_next_set(m, 1), HUGE_BITS);
    bitmap_free(m);
}
END_TEST

static Suite *bitmap_suite(void)
{
    Suite *s = suite_create("bitmap");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_add_test(tc, test_empty_map);
    tcase_add_test(tc, test_new_is_clear);
    tcase_add_loop_test(tc, test_word_boundaries, 0,
                        sizeof(boundary_bits) / sizeof(boundary_bits[0]));
    tcase_add_test(tc, test_range_across_word);
    tcase_add_test(tc, test_clear_within_run);
    tcase_add_test(tc, test_idempotent_counts);
    tcase_add_test(tc, test_clipping);
    tcase_add_test(tc, test_search_at_end);
    suite_add_tcase(s, tc);

    tc = tcase_create("levels");
    tcase_add_test(tc, test_next_clear_within);
    tcase_add_test(tc, test_level1_boundary);
    tcase_add_test(tc, test_range_across_levels);
    tcase_add_test(tc, test_clear_keeps_edge_words);
    suite_add_tcase(s, tc);

    tc = tcase_create("resize");
    tcase_add_test(tc, test_resize_shrink_drops_bits);
    tcase_add_test(tc, test_resize_grow_adds_levels);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_random_small);
    tcase_add_test(tc, test_random_medium);
    tcase_add_test(tc, test_random_large);
    suite_add_tcase(s, tc);

    tc = tcase_create("large");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_large_sparse);
    tcase_add_test(tc, test_large_fill);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(bitmap_suite());
}
