/* image.h - one mirrored file: what of it the target lacks, what is being
 * copied, what the target holds unflushed, its phase; its source
 * descriptors, its target copy and its crash-safe state.
 *
 * image.c is the only owner of an image's state: the job, the FUSE
 * operations and the namespace mirror use the functions below.  The
 * invariants these keep are numbered in doc/design.md (1, 2, 3, 6 and 12
 * live here).
 *
 * Locking: each image has a mutex (its maps, phase, target, name) and an
 * rwlock `io` (guest writes shared, resizes exclusive).  Order: the job's
 * lock, then an image's io, then the image's mutex, then its crash-safe
 * state's (doc/design.md, "Locks").  No function here holds the mutex
 * across I/O: target truncates and flushes run with it released, claims
 * and the `resizing` count keeping copies out meanwhile.
 *
 * Lifetime: reference counted.  The job's list holds one reference, every
 * FUSE inode of the file one, a worker one while it copies.
 */
#ifndef MIRRORFS_IMAGE_H
#define MIRRORFS_IMAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

struct image;
struct bitmap;
struct persist_image;
struct target_image;

enum image_phase {
    PHASE_BULK,
    PHASE_READY,
    PHASE_DRAINING,
    PHASE_COMPLETED,
};

const char *image_phase_name(enum image_phase p);

/* What an image tells the job.  Both are called without any image lock
 * held, from any thread, and must be cheap; they may take the job's lock,
 * so the functions that call them (they say "wakes") are not to be called
 * with the job's lock held. */
struct image_hooks {
    void (*work)(void *ctx);        /* there is something to copy */
    void (*guest_waits)(void *ctx); /* a guest waits for copies to get out of its way */
    void *ctx;
};

/* A new image of size bytes: all dirty when all_dirty (a first pass), else
 * all clean with data on the target anywhere (a target that is a copy, or
 * one a verify pass compares).  Takes over the source fds (src_direct_fd:
 * the same file with O_DIRECT for the first pass, or -1), tgt (NULL while
 * the target has no place for it) and pst (NULL without a crash-safe
 * state).  hooks is copied.  One reference. */
struct image *image_new(const char *name, dev_t dev, ino_t ino, int src_fd, int src_direct_fd,
                        struct target_image *tgt, struct persist_image *pst, uint64_t size,
                        uint64_t granularity, bool all_dirty, const struct image_hooks *hooks);
struct image *image_ref(struct image *img);
void image_unref(struct image *img);

/* ---- what does not change -------------------------------------------------- */

void image_identity(const struct image *img, dev_t *dev, ino_t *ino);
uint64_t image_granularity(const struct image *img);
/* The copier's read-only descriptor of the source; direct: the O_DIRECT one
 * where there is one. */
int image_source_fd(const struct image *img, bool direct);

/* ---- name, phase, target ----------------------------------------------------- */

/* A copy of the image's name (its path inside SOURCE); g_free it. */
char *image_name(struct image *img);
/* The image was renamed; its crash-safe state follows.  0 or -errno of the
 * state's update (the name changes in any case). */
int image_set_name(struct image *img, const char *name);

enum image_phase image_phase(struct image *img);
void image_set_phase(struct image *img, enum image_phase p);
/* bulk -> ready; true when this call made the change. */
bool image_become_ready(struct image *img);

/* Whether the target has a copy of it, and whether it needs one (it has
 * none and is still mirrored). */
bool image_has_target(struct image *img);
bool image_needs_target(struct image *img);
/* A new descriptor of its file on a directory target (close it): -ENOENT
 * without a target copy, -EOPNOTSUPP for targets without files. */
int image_target_dup_fd(struct image *img);
/* The target copy is replaced by ti (new and empty): waits for the copies
 * in flight, then everything is dirty and nothing is known to be on the
 * target.  The old copy is closed when the image goes. */
/* wakes */
void image_replace_target(struct image *img, struct target_image *ti);

/* The file has no name left in SOURCE: no longer mirrored.  Its crash-safe
 * state is removed. */
void image_drop(struct image *img);
bool image_is_dropped(struct image *img);

/* ---- guest changes ----------------------------------------------------------- */

/* Around a guest write (shared) and a resize of the source (exclusive, a
 * truncate, an O_TRUNC open, fallocate): no write lands between the
 * source's resize and the image's (invariant 12). */
void image_write_begin(struct image *img);
void image_write_end(struct image *img);
void image_resize_begin(struct image *img);
void image_resize_end(struct image *img);

/* Before a change of the source in [off, off+len): the crash-safe state
 * marks the range first (doc/persistence.md); end after the range was
 * marked dirty.  0 without a state; -errno when it could not be recorded
 * (the guest's change goes on all the same). */
int image_change_begin(struct image *img, uint64_t off, uint64_t len);
void image_change_end(struct image *img, uint64_t off, uint64_t len);

/* A guest wrote (or punched, or zeroed) [off, off+len): mark the granules
 * dirty, growing the image when the range ends past its size.  Call this
 * only AFTER the source operation returned (invariant 1). */
/* wakes */
void image_mark_dirty(struct image *img, uint64_t off, uint64_t len);

/* The source was resized to size (truncate, or fallocate past the end),
 * inside image_resize_begin/end.  Waits for the copies in flight (a copy
 * held up by the rate limit gives way), resizes the target and the maps;
 * the granule that holds the new end is dirty when it is partial.  0 or
 * -errno of the target's truncate (the maps are resized in any case). */
/* wakes */
int image_resize(struct image *img, uint64_t size);

/* ---- copying ------------------------------------------------------------------ */

/* A claimed run of granules [first, first+count), as bytes [off, off+len)
 * clipped to the size at claim time, and the target copy to write it to
 * (it stays open and is not replaced while claimed). */
struct claim {
    uint64_t first, count;
    uint64_t off, len;
    struct target_image *tgt;
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
/* True when a guest operation waits for this image's copies in flight to
 * end: a copy waiting for the rate limit gives its claim back. */
bool image_guest_waiting(struct image *img);

/* copy_mode=write-blocking, before the source write: claim every granule
 * of [off, off+len) (waiting for copies in flight, so overlapping writes
 * and copies are serialised), grow the maps when the range ends past the
 * size, and clear the dirty bits of the granules it covers whole.  Clearing
 * before the source write keeps invariant 1: a change to those granules by
 * anybody else lands after the clear and marks them again.  c->tgt is NULL
 * when the target has no copy of the image. */
/* wakes */
void image_claim_for_write(struct image *img, uint64_t off, uint64_t len, struct claim *c);
/* After the source write and the guest data's write to the target: the
 * partly covered granules are marked dirty (the copier completes them), and
 * every granule of the claim when either write failed (invariant 3). */
/* wakes */
void image_finish_write(struct image *img, const struct claim *c, bool source_ok,
                        bool target_ok);

/* ---- flushing ------------------------------------------------------------------ */

/* Flush the target copy.  The granules changed since the last flush are
 * taken first (the image starts a new, empty set) and given back with the
 * result: a failed flush may have lost any of them, so they are dirty again
 * (invariant 3 for the flush), and suspect: a file system may keep blocks
 * whose write-back failed in a state that rewriting does not repair (ext4
 * leaves such extents "unwritten": they read as zeroes however often the
 * data is written again), so the copier deallocates them first.  0 or the
 * target's -errno (-ENOENT without a target copy). */
/* wakes */
int image_flush(struct image *img);
/* True when something was changed on the target since its last flush. */
bool image_has_unflushed(struct image *img);
/* When nothing is dirty or in flight and no verify pass runs: make the
 * image's size the source's (source_size; a larger source, changed behind
 * the mount, is dirty from the old end on) and the target copy's size the
 * image's.  True when the image was clean (and still is); false, with *rc
 * the target truncate's -errno or 0, otherwise. */
/* wakes */
bool image_settle(struct image *img, uint64_t source_size, int *rc);

/* ---- verify ----------------------------------------------------------------------- */

/* Start a verify pass over the whole image. */
/* wakes */
void image_start_verify(struct image *img);
bool image_is_verifying(struct image *img);
/* Claim the next run of clean, free granules from the verify cursor on (at
 * most max), to compare source and target.  False when there is nothing to
 * verify now; *done is set when the pass reached the end. */
bool image_claim_verify(struct image *img, uint64_t max, struct claim *c, bool *done);
/* End a verify claim; differ[k] says granule c->first+k differs (it is
 * marked dirty, the copier copies it). */
/* wakes */
void image_release_verify(struct image *img, const struct claim *c, const bool *differ);
/* Give a verify claim back uncompared (the copier gave way to a guest):
 * the pass compares it later. */
void image_release_verify_later(struct image *img, const struct claim *c);

/* A process wrote the source file behind the mount: noted (true when it
 * was not noted already), then taken by the job, which compares the whole
 * image again (a verify pass). */
bool image_note_outside_write(struct image *img);
bool image_take_outside_write(struct image *img);

/* ---- the crash-safe state ------------------------------------------------------------ */

/* A resume: the extents of the previous run's state (one bit per
 * extent_size bytes) are dirty; every granule an extent touches.  Returns
 * the bytes the state saves from copying. */
uint64_t image_mark_extents(struct image *img, const struct bitmap *extents,
                            uint64_t extent_size);
/* Clear the state's marks of extents that are clean, flushed, compared
 * and quiet for quiet sweeps (one a second).  0 without a state, or -errno. */
int image_sweep_state(struct image *img, unsigned quiet);

/* ---- looking ---------------------------------------------------------------------- */

/* Bytes of the image, bytes not yet on the target, bytes in flight. */
void image_counts(struct image *img, uint64_t *size, uint64_t *dirty, uint64_t *in_flight);
/* True when nothing is dirty and nothing is in flight. */
bool image_is_clean(struct image *img);
/* True while the image's first pass runs (its claims say first_pass). */
bool image_in_first_pass(struct image *img);
/* Fill a status line: name (g_strdup), phase ("no-target" without a target
 * copy), granularity, size, dirty, in flight, copied. */
void image_status(struct image *img, struct image_status *is);

#endif
