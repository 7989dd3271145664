/* image.c - one mirrored file (see image.h). */
#include "config.h"

#include "image.h"
#include "bitmap.h"
#include "mirror.h"
#include "persist.h"
#include "rangelock.h"
#include "target.h"

#include <assert.h>
#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <unistd.h>

static const char *const phase_names[] = {
    [PHASE_BULK] = "bulk",
    [PHASE_READY] = "ready",
    [PHASE_DRAINING] = "draining",
    [PHASE_COMPLETED] = "completed",
};

const char *image_phase_name(enum image_phase p)
{
    return phase_names[p];
}

static uint64_t granules_for(uint64_t bytes, uint64_t gran)
{
    return (bytes + gran - 1) / gran;
}

struct image *image_new(struct mirror_job *job, const char *name, dev_t dev, ino_t ino,
                        int src_fd, struct target_image *tgt, uint64_t size,
                        uint64_t granularity, bool all_dirty)
{
    struct image *img = g_new0(struct image, 1);
    uint64_t n = granules_for(size, granularity);

    img->job = job;
    img->name = g_strdup(name);
    img->dev = dev;
    img->ino = ino;
    img->src_fd = src_fd;
    img->src_direct_fd = -1;
    img->tgt = tgt;
    img->refs = 1;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* A truncate must not starve behind a stream of guest writes. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&img->io, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&img->lock, NULL);
    pthread_cond_init(&img->idle, NULL);
    img->retired = g_ptr_array_new();
    img->granularity = granularity;
    img->size = size;
    img->dirty = bitmap_new(n);
    img->inflight = rangelock_new(n);
    img->written = bitmap_new(n);
    img->unflushed = bitmap_new(n);
    img->suspect = bitmap_new(n);
    if (!img->dirty || !img->inflight || !img->written || !img->unflushed || !img->suspect)
        g_error("out of memory for the maps of %s", name);
    if (all_dirty) {
        bitmap_set_range(img->dirty, 0, n);
    } else {
        /* sync=none: the target is a copy already and may hold data anywhere. */
        bitmap_set_range(img->written, 0, n);
    }
    img->phase = PHASE_BULK;
    return img;
}

struct image *image_ref(struct image *img)
{
    g_atomic_int_inc(&img->refs);
    return img;
}

void image_unref(struct image *img)
{
    if (!img || !g_atomic_int_dec_and_test(&img->refs))
        return;
    if (img->tgt)
        target_image_close(img->tgt);
    for (guint i = 0; i < img->retired->len; i++)
        target_image_close(g_ptr_array_index(img->retired, i));
    g_ptr_array_free(img->retired, TRUE);
    pthread_rwlock_destroy(&img->io);
    if (img->src_fd >= 0)
        close(img->src_fd);
    if (img->src_direct_fd >= 0)
        close(img->src_direct_fd);
    bitmap_free(img->dirty);
    rangelock_free(img->inflight);
    bitmap_free(img->written);
    bitmap_free(img->unflushed);
    bitmap_free(img->suspect);
    persist_image_close(img->pst);
    pthread_cond_destroy(&img->idle);
    pthread_mutex_destroy(&img->lock);
    g_free(img->name);
    g_free(img);
}

/* Resize the three maps; called with the lock held. */
static void resize_maps(struct image *img, uint64_t size)
{
    uint64_t n = granules_for(size, img->granularity);

    if (bitmap_resize(img->dirty, n) < 0 || rangelock_resize(img->inflight, n) < 0 ||
        bitmap_resize(img->written, n) < 0 || bitmap_resize(img->unflushed, n) < 0 ||
        bitmap_resize(img->suspect, n) < 0)
        g_error("out of memory growing the maps of %s", img->name);
    if (img->cursor > n)
        img->cursor = 0;
}

/* With the lock held: the file now reaches end at least. */
static void grow_locked(struct image *img, uint64_t end)
{
    if (end > img->size) {
        img->size = end;
        resize_maps(img, end);
    }
}

void image_shrink_locked(struct image *img, uint64_t size)
{
    img->size = size;
    resize_maps(img, size);
}

void image_mark_dirty(struct image *img, uint64_t off, uint64_t len)
{
    uint64_t g = img->granularity;
    uint64_t end = off + len;

    if (len == 0)
        return;
    pthread_mutex_lock(&img->lock);
    grow_locked(img, end);
    if (!img->deleted)
        bitmap_set_range(img->dirty, off / g, granules_for(end, g) - off / g);
    /* Once ready, guest writes are copied in batches: the idle workers look
     * for them every IDLE_WAIT_US (100 ms; QEMU's mirror job also polls
     * its bitmap every 100 ms in READY).  A wake-up per write costs the
     * guest a context switch, and a hot granule is copied again and again. */
    bool kick = img->phase != PHASE_READY;
    pthread_mutex_unlock(&img->lock);
    if (kick)
        mirror_kick(img->job);
}

int image_resize(struct image *img, uint64_t size)
{
    uint64_t g = img->granularity;
    int rc = 0;

    pthread_mutex_lock(&img->lock);
    /* Stop new claims, then wait for the copies in flight: one of them could
     * otherwise write past the new end after the target was truncated.  A
     * copy held up by the rate limit gives way (guest_waiting). */
    img->resizing++;
    if (rangelock_held(img->inflight) > 0) {
        g_atomic_int_inc(&img->guest_waiting);
        pthread_mutex_unlock(&img->lock);
        mirror_wake(img->job);
        pthread_mutex_lock(&img->lock);
        while (rangelock_held(img->inflight) > 0)
            pthread_cond_wait(&img->idle, &img->lock);
        g_atomic_int_dec_and_test(&img->guest_waiting);
    }
    if (img->tgt && !img->deleted)
        rc = target_truncate(img->tgt, size);
    img->size = size;
    resize_maps(img, size);
    if (size % g != 0 && !img->deleted)
        bitmap_set_range(img->dirty, size / g, 1);
    /* A failed truncate leaves stale bytes past the end on the target: the
     * size is set again whenever the image is flushed clean. */
    img->resizing--;
    pthread_mutex_unlock(&img->lock);
    mirror_kick(img->job);
    return rc;
}

void image_write_begin(struct image *img)
{
    pthread_rwlock_rdlock(&img->io);
}

void image_write_end(struct image *img)
{
    pthread_rwlock_unlock(&img->io);
}

void image_resize_begin(struct image *img)
{
    pthread_rwlock_wrlock(&img->io);
}

void image_resize_end(struct image *img)
{
    pthread_rwlock_unlock(&img->io);
}

void image_replace_target(struct image *img, struct target_image *ti)
{
    pthread_mutex_lock(&img->lock);
    img->resizing++;
    while (rangelock_held(img->inflight) > 0)
        pthread_cond_wait(&img->idle, &img->lock);
    if (img->tgt)
        g_ptr_array_add(img->retired, img->tgt);
    img->tgt = ti;
    uint64_t n = bitmap_size(img->dirty);
    if (!img->deleted)
        bitmap_set_range(img->dirty, 0, n);
    bitmap_clear_range(img->written, 0, n);
    bitmap_clear_range(img->unflushed, 0, n);
    bitmap_clear_range(img->suspect, 0, n);
    img->resizing--;
    pthread_mutex_unlock(&img->lock);
    mirror_kick(img->job);
}

/* Bytes covered by count granules from first on, clipped to size. */
static uint64_t run_bytes(const struct image *img, uint64_t first, uint64_t count)
{
    uint64_t off = first * img->granularity;
    uint64_t end = (first + count) * img->granularity;

    if (end > img->size)
        end = img->size;
    return end > off ? end - off : 0;
}

/* Bytes of the granules set in map, clipped to size. */
static uint64_t map_bytes(const struct image *img, uint64_t set_bits, bool last_set)
{
    uint64_t bytes = set_bits * img->granularity;
    uint64_t n = granules_for(img->size, img->granularity);
    uint64_t overshoot = n * img->granularity - img->size;

    if (last_set && bytes >= overshoot)
        bytes -= overshoot;
    return bytes;
}

void image_counts(struct image *img, uint64_t *size, uint64_t *dirty, uint64_t *in_flight)
{
    pthread_mutex_lock(&img->lock);
    uint64_t n = bitmap_size(img->dirty);
    bool last_dirty = n > 0 && bitmap_test(img->dirty, n - 1);
    bool last_busy = n > 0 && !rangelock_is_free(img->inflight, n - 1, 1);

    *size = img->size;
    *dirty = map_bytes(img, bitmap_count(img->dirty), last_dirty);
    *in_flight = map_bytes(img, rangelock_held(img->inflight), last_busy);
    pthread_mutex_unlock(&img->lock);
}

/* With the lock held: claim and clear [first, first + up to max) where the
 * granules are dirty and free.  Returns the number claimed. */
static uint64_t claim_locked(struct image *img, uint64_t first, uint64_t max,
                             struct claim *c)
{
    uint64_t want = bitmap_next_clear_within(img->dirty, first, max) - first;

    if (want == 0)
        return 0;
    uint64_t got = rangelock_try_claim(img->inflight, first, want);
    if (got == 0)
        return 0;
    /* Clear before the copier reads the source (invariant 1): a guest write
     * that lands after this point sets the bits again. */
    bitmap_clear_range(img->dirty, first, got);
    c->first = first;
    c->count = got;
    c->off = first * img->granularity;
    c->len = run_bytes(img, first, got);
    c->target_may_hold_data = bitmap_any(img->written, first, got);
    c->target_suspect = bitmap_any(img->suspect, first, got);
    c->first_pass = img->phase == PHASE_BULK;
    img->cursor = first + got;
    return got;
}

bool image_claim(struct image *img, uint64_t max, struct claim *c, bool *busy)
{
    bool found = false;

    *busy = false;
    pthread_mutex_lock(&img->lock);
    if (img->resizing || img->deleted || !img->tgt || bitmap_count(img->dirty) == 0)
        goto out;
    uint64_t n = bitmap_size(img->dirty);
    uint64_t pos = img->cursor < n ? img->cursor : 0;
    bool wrapped = pos == 0;
    /* Bounded scan: a hot region whose granules are all in flight must not
     * keep this lock for long; the caller waits and comes back. */
    for (int steps = 0; steps < 256; steps++) {
        uint64_t g = bitmap_next_set(img->dirty, pos);
        if (g >= n) {
            if (wrapped)
                break;
            wrapped = true;
            pos = 0;
            continue;
        }
        if (claim_locked(img, g, max, c) > 0) {
            found = true;
            break;
        }
        *busy = true;
        pos = g + 1;
    }
    if (!found && bitmap_count(img->dirty) > 0)
        *busy = true;
out:
    pthread_mutex_unlock(&img->lock);
    return found;
}

bool image_claim_at(struct image *img, uint64_t first, uint64_t max, struct claim *c)
{
    bool found = false;

    pthread_mutex_lock(&img->lock);
    if (!img->resizing && !img->deleted && img->tgt && first < bitmap_size(img->dirty) &&
        bitmap_test(img->dirty, first))
        found = claim_locked(img, first, max, c) > 0;
    pthread_mutex_unlock(&img->lock);
    return found;
}

void image_release(struct image *img, const struct claim *c, bool ok, bool data_written)
{
    pthread_mutex_lock(&img->lock);
    /* Maps only shrink with nothing in flight (image_resize waits for
     * that, a clean image has none), so the claim is still inside them. */
    g_assert(c->first + c->count <= bitmap_size(img->dirty));
    uint64_t count = c->count;
    if (count > 0) {
        if (!ok)
            bitmap_set_range(img->dirty, c->first, count);
        else if (data_written)
            bitmap_set_range(img->written, c->first, count);
        /* Written or zeroed: not durable until the next flush. */
        if (ok) {
            bitmap_set_range(img->unflushed, c->first, count);
            bitmap_clear_range(img->suspect, c->first, count);
        }
    }
    rangelock_release(img->inflight, c->first, count);
    /* Wakes a resize waiting for no copy in flight, and a write-blocking
     * guest write waiting for its granules. */
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
}

void image_claim_for_write(struct image *img, uint64_t off, uint64_t len, struct claim *c)
{
    uint64_t g = img->granularity;
    uint64_t first = off / g;
    uint64_t count = granules_for(off + len, g) - first;

    pthread_mutex_lock(&img->lock);
    grow_locked(img, off + len);
    if (img->resizing || !rangelock_is_free(img->inflight, first, count)) {
        g_atomic_int_inc(&img->guest_waiting);
        pthread_mutex_unlock(&img->lock);
        mirror_wake(img->job);
        pthread_mutex_lock(&img->lock);
        while (img->resizing || !rangelock_is_free(img->inflight, first, count))
            pthread_cond_wait(&img->idle, &img->lock);
        g_atomic_int_dec_and_test(&img->guest_waiting);
    }
    bool claimed = rangelock_claim_all(img->inflight, first, count);
    g_assert(claimed);
    /* Whole granules only: the rest of a partial one may be dirty from an
     * earlier write that this one does not cover. */
    uint64_t whole_first = granules_for(off, g);
    uint64_t whole_end = (off + len) / g;
    if (whole_end > whole_first && !img->deleted)
        bitmap_clear_range(img->dirty, whole_first, whole_end - whole_first);
    c->first = first;
    c->count = count;
    c->off = off;
    c->len = len;
    c->target_may_hold_data = true;
    c->target_suspect = bitmap_any(img->suspect, first, count);
    pthread_mutex_unlock(&img->lock);
}

void image_finish_write(struct image *img, const struct claim *c, bool source_ok,
                        bool target_ok)
{
    uint64_t g = img->granularity;

    pthread_mutex_lock(&img->lock);
    if (!img->deleted) {
        if (!source_ok || !target_ok) {
            bitmap_set_range(img->dirty, c->first, c->count);
        } else {
            if (c->off % g)
                bitmap_set_range(img->dirty, c->first, 1);
            if ((c->off + c->len) % g)
                bitmap_set_range(img->dirty, (c->off + c->len) / g, 1);
        }
        if (target_ok) {
            bitmap_set_range(img->written, c->first, c->count);
            bitmap_set_range(img->unflushed, c->first, c->count);
        }
    }
    rangelock_release(img->inflight, c->first, c->count);
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
    mirror_kick(img->job);
}

struct bitmap *image_take_unflushed(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    struct bitmap *taken = img->unflushed;
    img->unflushed = bitmap_new(bitmap_size(taken));
    if (!img->unflushed)
        g_error("out of memory for the maps of %s", img->name);
    pthread_mutex_unlock(&img->lock);
    return taken;
}

void image_flush_result(struct image *img, struct bitmap *taken, bool ok)
{
    if (!ok) {
        pthread_mutex_lock(&img->lock);
        uint64_t n = MIN(bitmap_size(taken), bitmap_size(img->dirty));
        for (uint64_t b = bitmap_next_set(taken, 0); b < n;) {
            uint64_t e = MIN(bitmap_next_clear(taken, b), n);
            if (!img->deleted)
                bitmap_set_range(img->dirty, b, e - b);
            bitmap_set_range(img->unflushed, b, e - b);
            bitmap_set_range(img->suspect, b, e - b);
            b = e < n ? bitmap_next_set(taken, e) : n;
        }
        pthread_mutex_unlock(&img->lock);
        mirror_kick(img->job);
    }
    bitmap_free(taken);
}

bool image_has_unflushed(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool any = bitmap_count(img->unflushed) > 0;
    pthread_mutex_unlock(&img->lock);
    return any;
}

void image_release_verify_later(struct image *img, const struct claim *c)
{
    pthread_mutex_lock(&img->lock);
    rangelock_release(img->inflight, c->first, c->count);
    if (img->verifying && img->verify_cursor > c->first)
        img->verify_cursor = c->first;
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
}

bool image_guest_waiting(struct image *img)
{
    return g_atomic_int_get(&img->guest_waiting) > 0;
}

void image_start_verify(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    img->verifying = true;
    img->verify_cursor = 0;
    pthread_mutex_unlock(&img->lock);
}

bool image_claim_verify(struct image *img, uint64_t max, struct claim *c, bool *done)
{
    bool found = false;

    *done = false;
    pthread_mutex_lock(&img->lock);
    if (!img->verifying || img->resizing || img->deleted || !img->tgt)
        goto out;
    uint64_t n = bitmap_size(img->dirty);
    uint64_t pos = img->verify_cursor;
    /* Dirty granules are skipped: they are copied anyway.  Bounded, like
     * image_claim(): granules in flight are passed over. */
    for (int steps = 0; steps < 256 && pos < n; steps++) {
        uint64_t g = bitmap_next_clear_within(img->dirty, pos, n - pos);
        if (g >= n) {
            pos = n;
            break;
        }
        uint64_t run = MIN(bitmap_next_set(img->dirty, g), n) - g;
        uint64_t got = rangelock_try_claim(img->inflight, g, MIN(run, max));
        if (got == 0) {
            pos = g + 1;
            continue;
        }
        c->first = g;
        c->count = got;
        c->off = g * img->granularity;
        c->len = run_bytes(img, g, got);
        c->target_may_hold_data = true;
        c->target_suspect = false;
        pos = g + got;
        found = true;
        break;
    }
    img->verify_cursor = pos;
    if (!found && pos >= n) {
        img->verifying = false;
        *done = true;
    }
out:
    pthread_mutex_unlock(&img->lock);
    return found;
}

void image_release_verify(struct image *img, const struct claim *c, const bool *differ)
{
    pthread_mutex_lock(&img->lock);
    for (uint64_t k = 0; k < c->count; k++)
        if (differ[k] && !img->deleted)
            bitmap_set_range(img->dirty, c->first + k, 1);
    rangelock_release(img->inflight, c->first, c->count);
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
    mirror_kick(img->job);
}

bool image_is_clean(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool clean = bitmap_count(img->dirty) == 0 && rangelock_held(img->inflight) == 0;
    pthread_mutex_unlock(&img->lock);
    return clean;
}
