/* image.c - one mirrored file (see image.h). */
#include "config.h"

#include "image.h"
#include "bitmap.h"
#include "persist.h"
#include "rangelock.h"
#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct image {
    /* Set at creation, never changed. */
    dev_t dev; /* source identity */
    ino_t ino;
    int src_fd;        /* read-only, for the copier */
    int src_direct_fd; /* the same with O_DIRECT (first pass), or -1 */
    uint64_t granularity;
    struct image_hooks hooks;
    struct persist_image *pst; /* its crash-safe state; NULL without (it has its own locks) */
    int refs;                  /* atomic */
    int guest_waiting;         /* atomic: guest operations waiting for copies */
    int outside_write;         /* atomic: written behind the mount, not yet compared */

    pthread_rwlock_t io; /* guest writes shared, resizes exclusive (invariant 12) */

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t idle;  /* copies in flight ended, or a target truncate did */
    char *name;           /* path inside SOURCE */
    struct target_image *tgt; /* NULL while the target has no place for it; a
                               * replaced one stays open in retired */
    GPtrArray *retired;
    uint64_t size;              /* the source's size as the mount knows it */
    uint64_t tgt_size;          /* what the target copy was last truncated to */
    struct bitmap *dirty;       /* granules the target lacks */
    struct rangelock *inflight; /* granules being copied */
    struct bitmap *written;     /* granules the target may hold data in */
    struct bitmap *unflushed;   /* granules changed on the target since its last flush */
    struct bitmap *suspect;     /* a flush of them failed: deallocate before rewriting */
    uint64_t cursor;            /* next granule the workers look at */
    unsigned resizing;          /* >0: no new claims (a resize or replace waits) */
    bool truncating;            /* a target truncate runs (with the lock released) */
    enum image_phase phase;
    bool first_pass;          /* every granule dirty since the image (or its target copy)
                               * was made, until it is first ready: holes are looked for */
    bool dropped;               /* no name left in SOURCE: no longer mirrored */
    bool verifying;             /* a verify pass is comparing it */
    uint64_t verify_cursor;     /* next granule the verify pass looks at */
};

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

static void hook_work(struct image *img)
{
    if (img->hooks.work)
        img->hooks.work(img->hooks.ctx);
}

static void hook_guest_waits(struct image *img)
{
    if (img->hooks.guest_waits)
        img->hooks.guest_waits(img->hooks.ctx);
}

struct image *image_new(const char *name, dev_t dev, ino_t ino, int src_fd, int src_direct_fd,
                        struct target_image *tgt, struct persist_image *pst, uint64_t size,
                        uint64_t granularity, bool all_dirty, const struct image_hooks *hooks)
{
    struct image *img = g_new0(struct image, 1);
    uint64_t n = granules_for(size, granularity);
    pthread_rwlockattr_t ra;

    img->dev = dev;
    img->ino = ino;
    img->src_fd = src_fd;
    img->src_direct_fd = src_direct_fd;
    img->granularity = granularity;
    if (hooks)
        img->hooks = *hooks;
    img->pst = pst;
    img->refs = 1;
    pthread_rwlockattr_init(&ra);
    /* A truncate must not starve behind a stream of guest writes. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&img->io, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&img->lock, NULL);
    pthread_cond_init(&img->idle, NULL);
    img->name = g_strdup(name);
    img->tgt = tgt;
    img->retired = g_ptr_array_new();
    img->size = size;
    img->tgt_size = size;
    img->dirty = bitmap_new(n);
    img->inflight = rangelock_new(n);
    img->written = bitmap_new(n);
    img->unflushed = bitmap_new(n);
    img->suspect = bitmap_new(n);
    if (!img->dirty || !img->inflight || !img->written || !img->unflushed || !img->suspect)
        g_error("out of memory for the maps of %s", name);
    if (all_dirty)
        bitmap_set_range(img->dirty, 0, n);
    else
        bitmap_set_range(img->written, 0, n);
    img->phase = PHASE_BULK;
    img->first_pass = true;
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
    target_image_close(img->tgt);
    for (guint i = 0; i < img->retired->len; i++)
        target_image_close(g_ptr_array_index(img->retired, i));
    g_ptr_array_free(img->retired, TRUE);
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
    pthread_rwlock_destroy(&img->io);
    pthread_cond_destroy(&img->idle);
    pthread_mutex_destroy(&img->lock);
    g_free(img->name);
    g_free(img);
}

/* ---- what does not change -------------------------------------------------- */

void image_identity(const struct image *img, dev_t *dev, ino_t *ino)
{
    *dev = img->dev;
    *ino = img->ino;
}

uint64_t image_granularity(const struct image *img)
{
    return img->granularity;
}

int image_source_fd(const struct image *img, bool direct)
{
    return direct && img->src_direct_fd >= 0 ? img->src_direct_fd : img->src_fd;
}

/* ---- name, phase, target ----------------------------------------------------- */

char *image_name(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    char *name = g_strdup(img->name);
    pthread_mutex_unlock(&img->lock);
    return name;
}

int image_set_name(struct image *img, const char *name)
{
    pthread_mutex_lock(&img->lock);
    g_free(img->name);
    img->name = g_strdup(name);
    pthread_mutex_unlock(&img->lock);
    /* The state names the image, so that a restart finds it again. */
    return img->pst ? persist_image_rename(img->pst, name) : 0;
}

enum image_phase image_phase(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    enum image_phase p = img->phase;
    pthread_mutex_unlock(&img->lock);
    return p;
}

void image_set_phase(struct image *img, enum image_phase p)
{
    pthread_mutex_lock(&img->lock);
    img->phase = p;
    pthread_mutex_unlock(&img->lock);
}

bool image_become_ready(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool changed = img->phase == PHASE_BULK;
    if (changed)
        img->phase = PHASE_READY;
    img->first_pass = false;
    pthread_mutex_unlock(&img->lock);
    return changed;
}

bool image_has_target(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool has = img->tgt != NULL;
    pthread_mutex_unlock(&img->lock);
    return has;
}

bool image_needs_target(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool needs = !img->tgt && !img->dropped;
    pthread_mutex_unlock(&img->lock);
    return needs;
}

int image_target_dup_fd(struct image *img)
{
    int fd = -ENOENT;

    pthread_mutex_lock(&img->lock);
    if (img->tgt) {
        fd = target_image_fd(img->tgt);
        if (fd >= 0) {
            fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
            if (fd < 0)
                fd = -errno;
        }
    }
    pthread_mutex_unlock(&img->lock);
    return fd;
}

/* With the lock held: stop new claims and wait for the copies in flight.
 * for_guest: a guest waits, so a copy held up by the rate limit gives way
 * (the lock is released meanwhile).  Undo with resizing--. */
static void quiesce_locked(struct image *img, bool for_guest)
{
    img->resizing++;
    if (rangelock_held(img->inflight) == 0)
        return;
    if (for_guest) {
        g_atomic_int_inc(&img->guest_waiting);
        pthread_mutex_unlock(&img->lock);
        hook_guest_waits(img);
        pthread_mutex_lock(&img->lock);
    }
    while (rangelock_held(img->inflight) > 0)
        pthread_cond_wait(&img->idle, &img->lock);
    if (for_guest)
        g_atomic_int_dec_and_test(&img->guest_waiting);
}

void image_replace_target(struct image *img, struct target_image *ti)
{
    pthread_mutex_lock(&img->lock);
    quiesce_locked(img, false);
    /* A truncate of the old copy may still run (image_settle): it keeps it
     * open, retired, until the image goes. */
    if (img->tgt)
        g_ptr_array_add(img->retired, img->tgt);
    img->tgt = ti;
    img->tgt_size = img->size;
    uint64_t n = bitmap_size(img->dirty);
    if (!img->dropped)
        bitmap_set_range(img->dirty, 0, n);
    bitmap_clear_range(img->written, 0, n);
    bitmap_clear_range(img->unflushed, 0, n);
    bitmap_clear_range(img->suspect, 0, n);
    img->first_pass = true;
    img->resizing--;
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
    hook_work(img);
}

void image_drop(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    img->dropped = true;
    bitmap_clear_range(img->dirty, 0, bitmap_size(img->dirty));
    pthread_mutex_unlock(&img->lock);
    if (img->pst)
        persist_image_remove(img->pst);
}

bool image_is_dropped(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool dropped = img->dropped;
    pthread_mutex_unlock(&img->lock);
    return dropped;
}

/* ---- maps and sizes ------------------------------------------------------------- */

/* Resize the maps; called with the lock held. */
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

/* With the lock held and new claims stopped (resizing): truncate the target
 * copy to size with the lock released, one truncate at a time.  0 or the
 * target's -errno; 0 without a target copy. */
static int truncate_target_locked(struct image *img, uint64_t size)
{
    while (img->truncating)
        pthread_cond_wait(&img->idle, &img->lock);
    if (!img->tgt || img->dropped)
        return 0;
    struct target_image *ti = img->tgt;
    img->truncating = true;
    pthread_mutex_unlock(&img->lock);
    int rc = target_truncate(ti, size);
    pthread_mutex_lock(&img->lock);
    img->truncating = false;
    if (rc == 0 && img->tgt == ti)
        img->tgt_size = size;
    pthread_cond_broadcast(&img->idle);
    return rc;
}

/* ---- guest changes ----------------------------------------------------------- */

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

int image_change_begin(struct image *img, uint64_t off, uint64_t len)
{
    return img->pst ? persist_write_begin(img->pst, off, len) : 0;
}

void image_change_end(struct image *img, uint64_t off, uint64_t len)
{
    if (img->pst)
        persist_write_end(img->pst, off, len);
}

void image_mark_dirty(struct image *img, uint64_t off, uint64_t len)
{
    uint64_t g = img->granularity;
    uint64_t end = off + len;

    if (len == 0)
        return;
    pthread_mutex_lock(&img->lock);
    grow_locked(img, end);
    if (!img->dropped)
        bitmap_set_range(img->dirty, off / g, granules_for(end, g) - off / g);
    /* Once ready, guest writes are copied in batches: the idle workers look
     * for them every 100 ms (QEMU's mirror job also polls its bitmap every
     * 100 ms in READY).  A wake-up per write costs the guest a context
     * switch, and a hot granule is copied again and again. */
    bool wake = img->phase != PHASE_READY;
    pthread_mutex_unlock(&img->lock);
    if (wake)
        hook_work(img);
}

int image_resize(struct image *img, uint64_t size)
{
    uint64_t g = img->granularity;

    pthread_mutex_lock(&img->lock);
    /* Stop new claims, then wait for the copies in flight: one of them could
     * otherwise write past the new end after the target was truncated. */
    quiesce_locked(img, true);
    int rc = truncate_target_locked(img, size);
    img->size = size;
    resize_maps(img, size);
    if (size % g != 0 && !img->dropped)
        bitmap_set_range(img->dirty, size / g, 1);
    /* A failed truncate leaves stale bytes past the end on the target: the
     * size is set again when the image settles clean. */
    img->resizing--;
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
    hook_work(img);
    return rc;
}

/* ---- copying ------------------------------------------------------------------ */

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
    c->tgt = img->tgt;
    c->target_may_hold_data = bitmap_any(img->written, first, got);
    c->target_suspect = bitmap_any(img->suspect, first, got);
    /* Not the phase: an image drained before its first pass ended (an
     * unmount right after the start) still has holes to skip, not to read
     * in full (a 2 TiB sparse image read 1.4 TB of zeroes in 10 minutes). */
    c->first_pass = img->first_pass;
    img->cursor = first + got;
    return got;
}

/* With the lock held: may copies start? */
static bool claimable_locked(struct image *img)
{
    return !img->resizing && !img->dropped && img->tgt;
}

bool image_claim(struct image *img, uint64_t max, struct claim *c, bool *busy)
{
    bool found = false;

    *busy = false;
    pthread_mutex_lock(&img->lock);
    if (!claimable_locked(img) || bitmap_count(img->dirty) == 0)
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
    if (claimable_locked(img) && first < bitmap_size(img->dirty) &&
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
        if (!ok && !img->dropped)
            bitmap_set_range(img->dirty, c->first, count);
        else if (ok && data_written)
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

bool image_guest_waiting(struct image *img)
{
    return g_atomic_int_get(&img->guest_waiting) > 0;
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
        hook_guest_waits(img);
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
    if (whole_end > whole_first && !img->dropped && img->tgt)
        bitmap_clear_range(img->dirty, whole_first, whole_end - whole_first);
    c->first = first;
    c->count = count;
    c->off = off;
    c->len = len;
    c->tgt = img->tgt;
    c->target_may_hold_data = true;
    c->target_suspect = bitmap_any(img->suspect, first, count);
    c->first_pass = false;
    pthread_mutex_unlock(&img->lock);
}

void image_finish_write(struct image *img, const struct claim *c, bool source_ok,
                        bool target_ok)
{
    uint64_t g = img->granularity;

    pthread_mutex_lock(&img->lock);
    if (!img->dropped) {
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
    hook_work(img);
}

/* ---- flushing ------------------------------------------------------------------ */

int image_flush(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    struct target_image *ti = img->tgt;
    struct bitmap *taken = img->unflushed;
    if (ti) {
        img->unflushed = bitmap_new(bitmap_size(taken));
        if (!img->unflushed)
            g_error("out of memory for the maps of %s", img->name);
    }
    pthread_mutex_unlock(&img->lock);
    if (!ti)
        return -ENOENT;

    int rc = target_flush(ti);
    if (rc < 0) {
        pthread_mutex_lock(&img->lock);
        uint64_t n = MIN(bitmap_size(taken), bitmap_size(img->dirty));
        /* A copy replaced since (image_replace_target) is all dirty already
         * and knows nothing of what the old one lost. */
        for (uint64_t b = bitmap_next_set(taken, 0); img->tgt == ti && b < n;) {
            uint64_t e = MIN(bitmap_next_clear(taken, b), n);
            if (!img->dropped)
                bitmap_set_range(img->dirty, b, e - b);
            bitmap_set_range(img->unflushed, b, e - b);
            bitmap_set_range(img->suspect, b, e - b);
            b = e < n ? bitmap_next_set(taken, e) : n;
        }
        pthread_mutex_unlock(&img->lock);
        hook_work(img);
    }
    bitmap_free(taken);
    return rc;
}

bool image_has_unflushed(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool any = img->tgt && bitmap_count(img->unflushed) > 0;
    pthread_mutex_unlock(&img->lock);
    return any;
}

/* With the lock held: nothing to copy, nothing copying, nothing to compare. */
static bool clean_locked(struct image *img)
{
    return img->tgt && !img->dropped && !img->verifying && bitmap_count(img->dirty) == 0 &&
           rangelock_held(img->inflight) == 0;
}

bool image_settle(struct image *img, uint64_t source_size, int *rc)
{
    *rc = 0;
    pthread_mutex_lock(&img->lock);
    bool clean = clean_locked(img);
    if (clean && source_size < img->size) {
        img->size = source_size;
        resize_maps(img, source_size);
    } else if (clean && source_size > img->size) {
        /* Longer than anything written through the mount: changed behind
         * its back (the job hears of it separately).  The tail is copied. */
        uint64_t old = img->size, g = img->granularity;
        grow_locked(img, source_size);
        bitmap_set_range(img->dirty, old / g, granules_for(source_size, g) - old / g);
        clean = false;
    }
    if (clean && img->tgt_size != img->size) {
        img->resizing++;
        *rc = truncate_target_locked(img, img->size);
        img->resizing--;
        pthread_cond_broadcast(&img->idle);
        clean = *rc == 0 && clean_locked(img);
    }
    pthread_mutex_unlock(&img->lock);
    if (!clean)
        hook_work(img);
    return clean;
}

/* ---- verify ----------------------------------------------------------------------- */

void image_start_verify(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    img->verifying = true;
    img->verify_cursor = 0;
    pthread_mutex_unlock(&img->lock);
    hook_work(img);
}

bool image_is_verifying(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool v = img->verifying;
    pthread_mutex_unlock(&img->lock);
    return v;
}

bool image_claim_verify(struct image *img, uint64_t max, struct claim *c, bool *done)
{
    bool found = false;

    *done = false;
    pthread_mutex_lock(&img->lock);
    if (!img->verifying || !claimable_locked(img))
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
        c->tgt = img->tgt;
        c->target_may_hold_data = true;
        c->target_suspect = false;
        c->first_pass = false;
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
        if (differ[k] && !img->dropped)
            bitmap_set_range(img->dirty, c->first + k, 1);
    rangelock_release(img->inflight, c->first, c->count);
    pthread_cond_broadcast(&img->idle);
    pthread_mutex_unlock(&img->lock);
    hook_work(img);
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

bool image_note_outside_write(struct image *img)
{
    return g_atomic_int_compare_and_exchange(&img->outside_write, 0, 1);
}

bool image_take_outside_write(struct image *img)
{
    return g_atomic_int_compare_and_exchange(&img->outside_write, 1, 0);
}

/* ---- the crash-safe state ------------------------------------------------------------ */

uint64_t image_mark_extents(struct image *img, const struct bitmap *extents,
                            uint64_t extent_size)
{
    uint64_t g = img->granularity, marked = 0;

    pthread_mutex_lock(&img->lock);
    /* A granule may be larger than an extent: each marked extent marks
     * every granule it touches. */
    for (uint64_t e = bitmap_next_set(extents, 0); e < bitmap_size(extents);
         e = bitmap_next_set(extents, e + 1)) {
        uint64_t first = e * extent_size / g;
        uint64_t end = ((e + 1) * extent_size + g - 1) / g;
        bitmap_set_range(img->dirty, first, end - first);
        marked++;
    }
    uint64_t size = img->size;
    pthread_mutex_unlock(&img->lock);
    uint64_t marked_bytes = MIN(marked * extent_size, size);
    return size - marked_bytes;
}

/* persist_image_sweep's question: is [off, off+len) of the image clean,
 * compared if a verify pass runs, and flushed on the target? */
static bool extent_is_clean(void *ctx, uint64_t off, uint64_t len)
{
    struct image *img = ctx;
    uint64_t g = img->granularity;

    pthread_mutex_lock(&img->lock);
    uint64_t n = bitmap_size(img->dirty);
    uint64_t first = MIN(off / g, n), end = MIN((off + len + g - 1) / g, n);
    bool clean = img->tgt && !img->dropped && !bitmap_any(img->dirty, first, end - first) &&
                 rangelock_is_free(img->inflight, first, end - first) &&
                 !bitmap_any(img->unflushed, first, end - first) &&
                 (!img->verifying || img->verify_cursor >= end);
    pthread_mutex_unlock(&img->lock);
    return clean;
}

int image_sweep_state(struct image *img, unsigned quiet)
{
    if (!img->pst)
        return 0;
    int rc = persist_image_sweep(img->pst, quiet, extent_is_clean, img);
    return rc < 0 ? rc : 0;
}

/* ---- looking ---------------------------------------------------------------------- */

static void counts_locked(struct image *img, uint64_t *size, uint64_t *dirty,
                          uint64_t *in_flight)
{
    uint64_t n = bitmap_size(img->dirty);
    bool last_dirty = n > 0 && bitmap_test(img->dirty, n - 1);
    bool last_busy = n > 0 && !rangelock_is_free(img->inflight, n - 1, 1);

    *size = img->size;
    *dirty = map_bytes(img, bitmap_count(img->dirty), last_dirty);
    *in_flight = map_bytes(img, rangelock_held(img->inflight), last_busy);
}

void image_counts(struct image *img, uint64_t *size, uint64_t *dirty, uint64_t *in_flight)
{
    pthread_mutex_lock(&img->lock);
    counts_locked(img, size, dirty, in_flight);
    pthread_mutex_unlock(&img->lock);
}

bool image_is_clean(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool clean = bitmap_count(img->dirty) == 0 && rangelock_held(img->inflight) == 0;
    pthread_mutex_unlock(&img->lock);
    return clean;
}

bool image_in_first_pass(struct image *img)
{
    pthread_mutex_lock(&img->lock);
    bool first = img->first_pass;
    pthread_mutex_unlock(&img->lock);
    return first;
}

void image_status(struct image *img, struct image_status *is)
{
    pthread_mutex_lock(&img->lock);
    is->name = g_strdup(img->name);
    is->granularity = img->granularity;
    counts_locked(img, &is->size, &is->dirty, &is->in_flight);
    is->copied = is->size - MIN(is->size, is->dirty + is->in_flight);
    is->phase = img->tgt ? image_phase_name(img->phase) : "no-target";
    pthread_mutex_unlock(&img->lock);
}
