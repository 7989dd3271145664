/* test_image.c - one image's bookkeeping (image.c) against a target kept in
 * memory: claims clear before the copy and re-dirty on failure (invariants
 * 1 and 3), no two copies of a granule at once (2), write-blocking claims,
 * flush results, resizes that wait for copies, replaced targets. */
#include "config.h"

#include "bitmap.h"
#include "image.h"
#include "target.h"
#include "unit.h"

#include <check.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define G 4096u /* granularity */

/* ---- a target in memory -------------------------------------------------- */

struct mem_image {
    struct target_image base;
    uint64_t size;
    int flush_rc;  /* what the next flush returns */
    int flushes;
    int truncates;
    int closed;
};

static struct mem_image *mem(struct target_image *ti)
{
    return (struct mem_image *)ti;
}

static int m_pwrite(struct target_image *ti, const void *buf, size_t len, uint64_t off)
{
    if (off + len > mem(ti)->size)
        mem(ti)->size = off + len;
    return 0;
}

static int m_zero(struct target_image *ti, uint64_t off, uint64_t len)
{
    return 0;
}

static int m_truncate(struct target_image *ti, uint64_t size)
{
    mem(ti)->size = size;
    mem(ti)->truncates++;
    return 0;
}

static int m_flush(struct target_image *ti)
{
    mem(ti)->flushes++;
    return mem(ti)->flush_rc;
}

static void m_close(struct target_image *ti)
{
    /* Owned by the test, which looks at it after the image is gone. */
    mem(ti)->closed++;
}

static const struct target_ops mem_ops = {
    .kind = "memory",
    .close_image = m_close,
    .pwrite = m_pwrite,
    .zero = m_zero,
    .truncate = m_truncate,
    .flush = m_flush,
};

static struct target mem_target = {.ops = &mem_ops, .description = "memory"};

static void mem_init(struct mem_image *m, uint64_t size)
{
    memset(m, 0, sizeof(*m));
    m->base.target = &mem_target;
    m->size = size;
}

/* ---- hooks ------------------------------------------------------------------ */

static int work_calls, wait_calls;

static void on_work(void *ctx)
{
    g_atomic_int_inc(&work_calls);
}

static void on_guest_waits(void *ctx)
{
    g_atomic_int_inc(&wait_calls);
}

static const struct image_hooks hooks = {on_work, on_guest_waits, NULL};

static struct mem_image tgt;

static struct image *new_image(uint64_t size, bool all_dirty)
{
    mem_init(&tgt, size);
    work_calls = wait_calls = 0;
    return image_new("vm/disk.img", 1, 2, -1, -1, &tgt.base, NULL, size, G, all_dirty, &hooks);
}

static uint64_t dirty_bytes(struct image *img)
{
    uint64_t size, dirty, inflight;
    image_counts(img, &size, &dirty, &inflight);
    return dirty;
}

static uint64_t inflight_bytes(struct image *img)
{
    uint64_t size, dirty, inflight;
    image_counts(img, &size, &dirty, &inflight);
    return inflight;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(test_claim_clears_and_release_redirties)
{
    struct image *img = new_image(16 * G, true);
    struct claim c;
    bool busy;

    ck_assert_uint_eq(dirty_bytes(img), 16 * G);
    ck_assert(image_claim(img, 4, &c, &busy));
    ck_assert_uint_eq(c.first, 0);
    ck_assert_uint_eq(c.count, 4);
    ck_assert_uint_eq(c.len, 4 * G);
    ck_assert_ptr_eq(c.tgt, &tgt.base);
    ck_assert(c.first_pass);
    /* Cleared at the claim (invariant 1), in flight until released. */
    ck_assert_uint_eq(dirty_bytes(img), 12 * G);
    ck_assert_uint_eq(inflight_bytes(img), 4 * G);
    /* A guest write to the run while it is copied marks it again. */
    image_mark_dirty(img, G, 10);
    ck_assert_uint_eq(dirty_bytes(img), 13 * G);
    /* Invariant 2: the granule in flight is not claimed a second time. */
    struct claim c2;
    ck_assert(!image_claim_at(img, 1, 1, &c2));
    image_release(img, &c, true, true);
    ck_assert_uint_eq(inflight_bytes(img), 0);
    ck_assert_uint_eq(dirty_bytes(img), 13 * G);
    /* A failed copy makes its run dirty again (invariant 3). */
    ck_assert(image_claim_at(img, 4, 4, &c));
    image_release(img, &c, false, false);
    ck_assert_uint_eq(dirty_bytes(img), 13 * G);
    ck_assert(image_has_unflushed(img));
    image_unref(img);
    ck_assert_int_eq(tgt.closed, 1);
}
END_TEST

START_TEST(test_busy_when_all_dirty_granules_are_in_flight)
{
    struct image *img = new_image(2 * G, true);
    struct claim c, c2;
    bool busy;

    ck_assert(image_claim(img, 2, &c, &busy));
    image_mark_dirty(img, 0, 2 * G); /* dirty again, but in flight */
    ck_assert(!image_claim(img, 2, &c2, &busy));
    ck_assert(busy);
    image_release(img, &c, true, true);
    ck_assert(image_claim(img, 2, &c2, &busy));
    image_release(img, &c2, true, true);
    ck_assert(image_is_clean(img));
    image_unref(img);
}
END_TEST

struct writer {
    struct image *img;
    struct claim c;
    int done;
};

static void *write_blocking_thread(void *p)
{
    struct writer *w = p;

    image_claim_for_write(w->img, G / 2, 2 * G, &w->c);
    g_atomic_int_set(&w->done, 1);
    return NULL;
}

/* A write-blocking guest write waits for the copies of its granules, then
 * holds them; whole granules are clean, partial ones dirty again after. */
START_TEST(test_claim_for_write_waits_and_marks_partial)
{
    struct image *img = new_image(8 * G, false);
    struct claim copy;
    struct writer w = {.img = img};
    pthread_t t;

    image_mark_dirty(img, 0, 4 * G);
    ck_assert(image_claim_at(img, 0, 1, &copy));
    ck_assert_int_eq(pthread_create(&t, NULL, write_blocking_thread, &w), 0);
    for (int i = 0; i < 100 && !g_atomic_int_get(&wait_calls); i++)
        usleep(10000);
    ck_assert_int_ge(g_atomic_int_get(&wait_calls), 1);
    ck_assert(image_guest_waiting(img));
    usleep(50000);
    ck_assert_int_eq(g_atomic_int_get(&w.done), 0);
    image_release(img, &copy, true, true);
    pthread_join(t, NULL);
    ck_assert_int_eq(w.done, 1);
    ck_assert(!image_guest_waiting(img));
    /* [G/2, 2.5G): granule 1 is covered whole and is clean now; 0 and 2
     * are partial. */
    ck_assert_uint_eq(w.c.first, 0);
    ck_assert_uint_eq(w.c.count, 3);
    ck_assert_uint_eq(dirty_bytes(img), 2 * G); /* granules 2, 3 */
    image_finish_write(img, &w.c, true, true);
    /* Partial granules 0 and 2 are the copier's again; 3 stayed dirty. */
    ck_assert_uint_eq(dirty_bytes(img), 3 * G);
    /* A failed target write makes every granule of the claim dirty. */
    image_claim_for_write(img, 4 * G, 2 * G, &w.c);
    image_finish_write(img, &w.c, true, false);
    ck_assert_uint_eq(dirty_bytes(img), 5 * G);
    image_unref(img);
}
END_TEST

/* A failed flush: what was written since the last one is dirty again, and
 * suspect (deallocated before it is written again). */
START_TEST(test_flush_result)
{
    struct image *img = new_image(8 * G, true);
    struct claim c;
    bool busy;

    ck_assert(image_claim(img, 8, &c, &busy));
    image_release(img, &c, true, true);
    ck_assert(image_is_clean(img));
    tgt.flush_rc = -EIO;
    ck_assert_int_eq(image_flush(img), -EIO);
    ck_assert_uint_eq(dirty_bytes(img), 8 * G);
    ck_assert(image_claim(img, 8, &c, &busy));
    ck_assert(c.target_suspect);
    ck_assert(c.target_may_hold_data);
    image_release(img, &c, true, true);
    tgt.flush_rc = 0;
    ck_assert_int_eq(image_flush(img), 0);
    ck_assert(!image_has_unflushed(img));
    ck_assert(image_is_clean(img));
    /* Nothing written since: a later claim is not suspect. */
    image_mark_dirty(img, 0, 1);
    ck_assert(image_claim(img, 8, &c, &busy));
    ck_assert(!c.target_suspect);
    image_release(img, &c, true, true);
    ck_assert_int_eq(tgt.flushes, 2);
    image_unref(img);
}
END_TEST

struct resizer {
    struct image *img;
    uint64_t size;
    int done;
};

static void *resize_thread(void *p)
{
    struct resizer *r = p;

    image_resize_begin(r->img);
    image_resize(r->img, r->size);
    image_resize_end(r->img);
    g_atomic_int_set(&r->done, 1);
    return NULL;
}

/* A resize waits for the copies in flight, lets a copy waiting for the rate
 * limit know (guest_waits), then truncates the target. */
START_TEST(test_resize_waits_for_copies)
{
    struct image *img = new_image(8 * G, true);
    struct resizer r = {img, 3 * G + 100, 0};
    struct claim c;
    bool busy;
    pthread_t t;

    ck_assert(image_claim(img, 8, &c, &busy));
    ck_assert_int_eq(pthread_create(&t, NULL, resize_thread, &r), 0);
    for (int i = 0; i < 100 && !g_atomic_int_get(&wait_calls); i++)
        usleep(10000);
    ck_assert(image_guest_waiting(img));
    usleep(50000);
    ck_assert_int_eq(g_atomic_int_get(&r.done), 0);
    ck_assert_int_eq(tgt.truncates, 0);
    /* No new claim while it waits. */
    struct claim c2;
    ck_assert(!image_claim(img, 8, &c2, &busy));
    image_release(img, &c, true, true);
    pthread_join(t, NULL);
    ck_assert_int_eq(tgt.truncates, 1);
    ck_assert_uint_eq(tgt.size, 3 * G + 100);
    uint64_t size, dirty, inflight;
    image_counts(img, &size, &dirty, &inflight);
    ck_assert_uint_eq(size, 3 * G + 100);
    /* The partial last granule is dirty: 100 bytes of it. */
    ck_assert_uint_eq(dirty, 100);
    image_unref(img);
}
END_TEST

/* image_settle: the size follows the source's, the target's follows. */
START_TEST(test_settle)
{
    struct image *img = new_image(4 * G, false);
    int rc;

    ck_assert(image_settle(img, 4 * G, &rc));
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(tgt.truncates, 0);
    /* The source is shorter (a write past the end failed): shrink. */
    ck_assert(image_settle(img, 3 * G, &rc));
    ck_assert_int_eq(tgt.truncates, 1);
    ck_assert_uint_eq(tgt.size, 3 * G);
    /* Longer than anything written through the mount: the tail is copied. */
    ck_assert(!image_settle(img, 5 * G, &rc));
    ck_assert_uint_eq(dirty_bytes(img), 2 * G);
    /* Not clean: nothing settles. */
    ck_assert(!image_settle(img, 5 * G, &rc));
    image_unref(img);
}
END_TEST

START_TEST(test_replace_target)
{
    struct image *img = new_image(4 * G, false);
    struct mem_image other;
    struct claim c;
    bool busy;

    mem_init(&other, 0);
    ck_assert(image_is_clean(img));
    image_replace_target(img, &other.base);
    ck_assert_uint_eq(dirty_bytes(img), 4 * G);
    ck_assert(image_claim(img, 4, &c, &busy));
    ck_assert_ptr_eq(c.tgt, &other.base);
    /* A fresh copy holds no data yet. */
    ck_assert(!c.target_may_hold_data);
    image_release(img, &c, true, true);
    image_unref(img);
    ck_assert_int_eq(tgt.closed, 1);
    ck_assert_int_eq(other.closed, 1);
}
END_TEST

START_TEST(test_drop_and_verify)
{
    struct image *img = new_image(4 * G, false);
    struct claim c;
    bool done;
    bool differ[4] = {false, true, false, false};

    image_start_verify(img);
    ck_assert(image_is_verifying(img));
    ck_assert(image_claim_verify(img, 4, &c, &done));
    ck_assert_uint_eq(c.count, 4);
    image_release_verify(img, &c, differ);
    ck_assert_uint_eq(dirty_bytes(img), G);
    ck_assert(!image_claim_verify(img, 4, &c, &done));
    ck_assert(done);
    ck_assert(!image_is_verifying(img));
    image_drop(img);
    ck_assert(image_is_dropped(img));
    ck_assert_uint_eq(dirty_bytes(img), 0);
    image_mark_dirty(img, 0, G);
    ck_assert_uint_eq(dirty_bytes(img), 0);
    image_unref(img);
}
END_TEST

START_TEST(test_mark_extents)
{
    struct image *img = new_image(64 * G, false);
    struct bitmap *extents = bitmap_new(4);

    bitmap_set_range(extents, 1, 1);
    /* Extents of 16 KiB (4 granules): extent 1 is granules 4-7. */
    ck_assert_uint_eq(image_mark_extents(img, extents, 4 * G), 60 * G);
    ck_assert_uint_eq(dirty_bytes(img), 4 * G);
    struct claim c;
    bool busy;
    ck_assert(image_claim(img, 64, &c, &busy));
    ck_assert_uint_eq(c.first, 4);
    ck_assert_uint_eq(c.count, 4);
    image_release(img, &c, true, true);
    bitmap_free(extents);
    image_unref(img);
}
END_TEST

START_TEST(test_name_phase_status)
{
    struct image *img = new_image(2 * G + 10, true);
    struct image_status is;

    g_autofree char *name = image_name(img);
    ck_assert_str_eq(name, "vm/disk.img");
    ck_assert_int_eq(image_set_name(img, "vm2/disk.img"), 0);
    ck_assert_int_eq(image_phase(img), PHASE_BULK);
    ck_assert(image_become_ready(img));
    ck_assert(!image_become_ready(img));
    image_status(img, &is);
    ck_assert_str_eq(is.name, "vm2/disk.img");
    ck_assert_str_eq(is.phase, "ready");
    ck_assert_uint_eq(is.size, 2 * G + 10);
    ck_assert_uint_eq(is.dirty, 2 * G + 10);
    ck_assert_uint_eq(is.copied, 0);
    ck_assert_uint_eq(is.granularity, G);
    g_free(is.name);
    image_unref(img);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_claim_clears_and_release_redirties);
    tcase_add_test(tc, test_busy_when_all_dirty_granules_are_in_flight);
    tcase_add_test(tc, test_claim_for_write_waits_and_marks_partial);
    tcase_add_test(tc, test_flush_result);
    tcase_add_test(tc, test_resize_waits_for_copies);
    tcase_add_test(tc, test_settle);
    tcase_add_test(tc, test_replace_target);
    tcase_add_test(tc, test_drop_and_verify);
    tcase_add_test(tc, test_mark_extents);
    tcase_add_test(tc, test_name_phase_status);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
