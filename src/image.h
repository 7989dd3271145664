/* image.h - one mirrored file: its source fd, its target handle, its dirty
 * map, in-flight map and phase.
 *
 * Locking: every field below `lock` is protected by it, except where noted.
 * An image's lock is taken after the job's lock, never before it.  No
 * function here does I/O while holding the lock, except image_resize(),
 * which must exclude copies while it resizes the target.
 *
 * Lifetime: reference counted.  The job's list holds one reference, every
 * FUSE inode of the file one, a worker one while it copies.
 */
#ifndef MIRRORFS_IMAGE_H
#define MIRRORFS_IMAGE_H

#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

struct mirror_job;
struct target_image;
struct bitmap;
struct rangelock;

enum image_phase {
    PHASE_BULK,
    PHASE_READY,
    PHASE_DRAINING,
    PHASE_COMPLETED,
};

const char *image_phase_name(enum image_phase p);

struct image {
    struct mirror_job *job;
    dev_t dev; /* source identity */
    ino_t ino;
    int src_fd;                 /* read-only, for the copier */
    int src_direct_fd;          /* the same with O_DIRECT (first pass), or -1 */
    struct target_image *tgt;   /* NULL while the target has no place for it;
                                 * set and replaced under lock; a replaced one
                                 * stays open (retired) until the image goes,
                                 * so a pointer read without the lock stays
                                 * valid */
    mode_t mode;                /* the source's, for opening it on the target */
    int refs;                   /* atomic */
    char *name;                 /* path inside SOURCE; job->lock */

    /* Guest writes hold it shared from the source write until the range is
     * marked dirty; a resize (truncate, O_TRUNC, fallocate) holds it
     * exclusive from the source's change until the maps follow, so that no
     * write lands between the two (doc/design.md). */
    pthread_rwlock_t io;

    pthread_mutex_t lock;
    pthread_cond_t idle;
    GPtrArray *retired;         /* target images replaced, closed at the end */        /* signalled when in-flight copies end */
    uint64_t granularity;
    uint64_t size;              /* the source's size as the mount knows it */
    struct bitmap *dirty;       /* granules the target lacks */
    struct rangelock *inflight; /* granules being copied */
    struct bitmap *written;     /* granules the target may hold data in */
    struct bitmap *unflushed;   /* granules changed on the target since its last flush */
    struct bitmap *suspect;     /* a flush of them failed: deallocate before rewriting */
    uint64_t cursor;            /* next granule the workers look at */
    unsigned resizing;          /* >0: no new claims (a resize waits) */
    int guest_waiting;          /* atomic: guest operations waiting for copies */
    enum image_phase phase;
    bool deleted;               /* unlinked: no longer mirrored */
    bool verifying;             /* a verify pass is comparing it */
    uint64_t verify_cursor;     /* next granule the verify pass looks at */
    struct persist_image *pst;  /* its crash-safe state; NULL without */
};

/* A new image of size bytes, all dirty when all_dirty (the first pass),
 * else all clean.  Takes over src_fd and tgt.  One reference. */
struct image *image_new(struct mirror_job *job, const char *name, dev_t dev, ino_t ino,
                        int src_fd, struct target_image *tgt, uint64_t size,
                        uint64_t granularity, bool all_dirty);
struct image *image_ref(struct image *img);
void image_unref(struct image *img);

/* A guest wrote (or punched, or zeroed) [off, off+len): mark the granules
 * dirty, growing the image when the range ends past its size.  Call this
 * only AFTER the source operation returned (invariant 1). */
void image_mark_dirty(struct image *img, uint64_t off, uint64_t len);

/* The source was resized to size (truncate, or fallocate past the end).
 * Waits for in-flight copies, resizes the target and the maps; the granule
 * that holds the new end is marked dirty when it is partial.  0 or -errno of
 * the target's truncate (the maps are resized in any case). */
int image_resize(struct image *img, uint64_t size);

/* Around a guest write (shared) and a resize of the source (exclusive):
 * see `io` above. */
void image_write_begin(struct image *img);
void image_write_end(struct image *img);
void image_resize_begin(struct image *img);
void image_resize_end(struct image *img);

/* The image's target copy is replaced by ti (a new, empty file): waits for
 * the copies in flight, then everything is dirty and nothing is known to
 * be on the target.  The old one is closed when the image goes. */
void image_replace_target(struct image *img, struct target_image *ti);

/* Bytes not yet on the target and bytes in flight, under the lock. */
void image_counts(struct image *img, uint64_t *size, uint64_t *dirty, uint64_t *in_flight);

/* A claimed run of granules [first, first+count), as bytes [off, off+len)
 * clipped to the size at claim time. */
struct claim {
    uint64_t first, count;
    uint64_t off, len;
    bool target_may_hold_data; /* some granule of the run was written before */
    bool target_suspect;       /* some granule of the run failed a flush */
    bool first_pass;           /* claimed while the image is in its first pass */
};

/* Claim the next dirty, not-in-flight run of at most max granules, at the
 * cursor or after it (wrapping once), and clear its dirty bits: from here on
 * a guest write to the run marks it dirty again (invariant 1), and no other
 * copy of it can start (invariant 2).  Returns true with *c filled, false
 * when nothing is claimable now.  *busy is set when dirty granules exist but
 * are all in flight. */
bool image_claim(struct image *img, uint64_t max, struct claim *c, bool *busy);
/* Claim exactly from granule first on (for extending a run over a hole). */
bool image_claim_at(struct image *img, uint64_t first, uint64_t max, struct claim *c);

/* End a claim.  ok: data_written says whether the target received data in
 * the run.  Not ok: the run is marked dirty again (invariant 3). */
void image_release(struct image *img, const struct claim *c, bool ok, bool data_written);

/* copy_mode=write-blocking, before the source write: claim every granule
 * of [off, off+len) (waiting for copies in flight, so overlapping writes
 * and copies are serialised), grow the maps when the range ends past the
 * size, and clear the dirty bits of the granules it covers whole.  Clearing
 * before the source write keeps invariant 1: a change to those granules by
 * anybody else lands after the clear and marks them again. */
void image_claim_for_write(struct image *img, uint64_t off, uint64_t len, struct claim *c);
/* After the source write and the guest data's write to the target: the
 * partly covered granules are marked dirty (the copier completes them), and
 * every granule of the claim when either write failed (invariant 3). */
void image_finish_write(struct image *img, const struct claim *c, bool source_ok,
                        bool target_ok);

/* With the lock held and nothing in flight: the source is only size bytes
 * long (less than img->size). */
void image_shrink_locked(struct image *img, uint64_t size);

/* Flushing the target: take the granules changed since the last flush
 * (the image starts a new, empty set), flush, then give them back with the
 * result.  A failed flush may have lost any of them, so they are dirty
 * again (invariant 3 for the flush), and suspect: a file system may keep
 * blocks whose write-back failed in a state that rewriting does not repair
 * (ext4 leaves such extents "unwritten": they read as zeroes however often
 * the data is written again), so the copier deallocates them first. */
struct bitmap *image_take_unflushed(struct image *img);
void image_flush_result(struct image *img, struct bitmap *taken, bool ok);
/* True when something was changed on the target since its last flush. */
bool image_has_unflushed(struct image *img);

/* Verify: claim the next run of clean, free granules from the verify
 * cursor on (at most max), to compare source and target.  False when there
 * is nothing to verify now; *done is set when the pass reached the end. */
bool image_claim_verify(struct image *img, uint64_t max, struct claim *c, bool *done);
/* End a verify claim; differ[k] says granule c->first+k differs (it is
 * marked dirty, the copier copies it). */
void image_release_verify(struct image *img, const struct claim *c, const bool *differ);
/* Give a verify claim back uncompared (the copier gave way to a guest):
 * the pass compares it later. */
void image_release_verify_later(struct image *img, const struct claim *c);
/* True when a guest operation waits for this image's copies in flight to
 * end: a copy waiting for the rate limit gives its claim back. */
bool image_guest_waiting(struct image *img);
/* Start a verify pass over the whole image. */
void image_start_verify(struct image *img);

/* True when nothing is dirty and nothing is in flight. */
bool image_is_clean(struct image *img);

#endif
