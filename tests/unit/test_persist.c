/* Unit tests for the crash-safe state: what is on disk after each step,
 * read back the way a restart reads it. */
#include "config.h"

#include <check.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "persist.h"

#define E PERSIST_EXTENT

static char *dir;

static void setup(void)
{
    dir = g_dir_make_tmp("test-persist-XXXXXX", NULL);
    ck_assert_ptr_nonnull(dir);
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    g_free(dir);
}

static struct persist *open_state(bool *had)
{
    struct persist *p = NULL;
    g_autofree char *err = NULL;

    ck_assert_int_eq(persist_open(dir, "/src", "/tgt", &p, had, &err), 0);
    return p;
}

/* What a restart would find for image (ino, name) of size bytes. */
static struct bitmap *restart_view(ino_t ino, const char *name, uint64_t size)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi = NULL;
    struct bitmap *prev = NULL;

    ck_assert(had);
    ck_assert_int_eq(persist_image_open(p, name, ino, size, PERSIST_MARK_PREVIOUS_OR_NONE, &pi,
                                        &prev),
                     0);
    persist_image_close(pi);
    persist_close(p);
    return prev;
}

static bool always_clean(void *ctx, uint64_t off, uint64_t len)
{
    return true;
}

static bool never_clean(void *ctx, uint64_t off, uint64_t len)
{
    return false;
}

START_TEST(test_first_pass_marks_everything)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi;
    struct bitmap *prev;

    ck_assert(!had);
    ck_assert_int_eq(persist_image_open(p, "vm1/disk.img", 42, 10 * E + 1, PERSIST_MARK_ALL, &pi,
                                        &prev),
                     0);
    ck_assert_ptr_null(prev);
    ck_assert_uint_eq(persist_image_marked(pi), 11);
    persist_image_close(pi);
    persist_close(p);

    struct bitmap *seen = restart_view(42, "vm1/disk.img", 10 * E + 1);
    ck_assert_ptr_nonnull(seen);
    ck_assert_uint_eq(bitmap_count(seen), 11);
    bitmap_free(seen);
}
END_TEST

START_TEST(test_write_marks_before_returning)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi;
    struct bitmap *prev;

    ck_assert_int_eq(persist_image_open(p, "a.img", 7, 64 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &pi,
                                        &prev),
                     0);
    ck_assert_ptr_null(prev);
    ck_assert_uint_eq(persist_image_marked(pi), 0);
    /* A write across the boundary of extents 5 and 6, and one in 40. */
    ck_assert_int_eq(persist_write_begin(pi, 6 * E - 100, 200), 0);
    ck_assert_int_eq(persist_write_begin(pi, 40 * E + 5, 1), 0);
    /* On disk now, before the writes end: a crash here must find them. */
    struct bitmap *seen = restart_view(7, "a.img", 64 * E);
    ck_assert_uint_eq(bitmap_count(seen), 3);
    ck_assert(bitmap_test(seen, 5) && bitmap_test(seen, 6) && bitmap_test(seen, 40));
    bitmap_free(seen);
    persist_write_end(pi, 6 * E - 100, 200);
    persist_write_end(pi, 40 * E + 5, 1);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_sweep_needs_quiet_clean_and_idle)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi;
    struct bitmap *prev;

    ck_assert_int_eq(persist_image_open(p, "a.img", 9, 8 * E, PERSIST_MARK_ALL, &pi, &prev), 0);
    /* Not clean: nothing cleared however quiet. */
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(persist_image_sweep(pi, 2, never_clean, NULL), 0);
    ck_assert_uint_eq(persist_image_marked(pi), 8);
    /* A write in progress in extent 3 keeps it; a recent write in extent 4
     * keeps it until it has been quiet for two sweeps. */
    ck_assert_int_eq(persist_write_begin(pi, 3 * E, 10), 0);
    ck_assert_int_eq(persist_write_begin(pi, 4 * E, 10), 0);
    persist_write_end(pi, 4 * E, 10);
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 6);
    ck_assert_uint_eq(persist_image_marked(pi), 2);
    /* Two sweeps age extent 4; the third clears it. */
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 0);
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 1); /* extent 4 */
    ck_assert_uint_eq(persist_image_marked(pi), 1);
    /* The disk says the same. */
    struct bitmap *seen = restart_view(9, "a.img", 8 * E);
    ck_assert_uint_eq(bitmap_count(seen), 1);
    ck_assert(bitmap_test(seen, 3));
    bitmap_free(seen);
    persist_write_end(pi, 3 * E, 10);
    for (int k = 0; k < 3; k++)
        persist_image_sweep(pi, 2, always_clean, NULL);
    ck_assert_uint_eq(persist_image_marked(pi), 0);
    /* A cleared extent written again is marked on disk again. */
    ck_assert_int_eq(persist_write_begin(pi, 2 * E, 1), 0);
    persist_write_end(pi, 2 * E, 1);
    seen = restart_view(9, "a.img", 8 * E);
    ck_assert_uint_eq(bitmap_count(seen), 1);
    ck_assert(bitmap_test(seen, 2));
    bitmap_free(seen);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_state_follows_renames_and_names)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi;
    struct bitmap *prev;

    ck_assert_int_eq(persist_image_open(p, "old.img", 11, 4 * E, PERSIST_MARK_ALL, &pi, &prev), 0);
    ck_assert_int_eq(persist_image_rename(pi, "dir/new name.img"), 0);
    persist_image_close(pi);
    persist_close(p);
    /* Found under the new name only: another file that got the same inode
     * number is not taken for it. */
    struct bitmap *seen = restart_view(11, "dir/new name.img", 4 * E);
    ck_assert_ptr_nonnull(seen);
    ck_assert_uint_eq(bitmap_count(seen), 4);
    bitmap_free(seen);
    ck_assert_ptr_null(restart_view(11, "old.img", 4 * E));
}
END_TEST

START_TEST(test_other_job_state_is_dropped)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_image *pi;
    struct bitmap *prev;
    g_autofree char *err = NULL;

    ck_assert_int_eq(persist_image_open(p, "a.img", 5, E, PERSIST_MARK_ALL, &pi, &prev), 0);
    persist_image_close(pi);
    persist_close(p);
    ck_assert(persist_has_state(dir, "/src", "/tgt"));
    ck_assert(!persist_has_state(dir, "/src", "/elsewhere"));
    /* Another source or target: the old state must not be trusted. */
    ck_assert_int_eq(persist_open(dir, "/src", "/elsewhere", &p, &had, &err), 0);
    ck_assert(!had);
    ck_assert_int_eq(persist_image_open(p, "a.img", 5, E, PERSIST_MARK_PREVIOUS_OR_NONE, &pi,
                                        &prev),
                     0);
    ck_assert_ptr_null(prev);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("persist");
    TCase *tc = tcase_create("state");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_first_pass_marks_everything);
    tcase_add_test(tc, test_write_marks_before_returning);
    tcase_add_test(tc, test_sweep_needs_quiet_clean_and_idle);
    tcase_add_test(tc, test_state_follows_renames_and_names);
    tcase_add_test(tc, test_other_job_state_is_dropped);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
