/* persist.h - what survives a crash: per image, a coarse map of the extents
 * (PERSIST_EXTENT bytes each) where the target may differ from the source.
 *
 * The guarantee, and why it holds, is in doc/persistence.md.  In short: a
 * bit is on disk before any source write into its extent starts (the cold
 * path, once per extent), and is cleared only when no guest write into the
 * extent is in progress, none came for a while, and every granule of it is
 * clean and flushed on the target.  So after a kill at any moment the bits
 * on disk cover every range whose target copy may differ.
 *
 * Threads: persist_write_begin/end are called by every guest write, with no
 * lock on the hot path (atomics); the cold path and everything else take
 * the image's persist lock.  The state files live in STATE_DIR/images/, one
 * per image, named by the source inode number.
 */
#ifndef MIRRORFS_PERSIST_H
#define MIRRORFS_PERSIST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define PERSIST_EXTENT (4ull << 20)

struct persist;
struct persist_image;
struct bitmap;

/* Open STATE_DIR's persistent state for this source and target.  *had_state
 * says whether a state of the same source and target was there already (a
 * restart).  0 or -errno with *err set. */
int persist_open(const char *state_dir, const char *source, const char *target,
                 struct persist **out, bool *had_state, char **err);
void persist_close(struct persist *p);
/* Whether STATE_DIR holds a state of this source and target (read only). */
bool persist_has_state(const char *state_dir, const char *source, const char *target);

/* What an image's state starts from. */
enum persist_marks {
    PERSIST_MARK_ALL,              /* everything may differ (a first pass) */
    PERSIST_MARK_PREVIOUS_OR_ALL,  /* what a previous run left, else all */
    PERSIST_MARK_PREVIOUS_OR_NONE, /* what a previous run left, else nothing */
};

/* The state of one image (by source inode and name).  *previous receives
 * the bits a previous run left for it, as a bitmap of extents, or NULL when
 * there were none (always NULL with PERSIST_MARK_ALL).  Durable on return.
 * 0 or -errno. */
int persist_image_open(struct persist *p, const char *name, ino_t ino, uint64_t size,
                       enum persist_marks how, struct persist_image **out,
                       struct bitmap **previous);
void persist_image_close(struct persist_image *pi);
/* The image was renamed, or removed. */
int persist_image_rename(struct persist_image *pi, const char *name);
void persist_image_remove(struct persist_image *pi);

/* Around a guest write (or any change of the source) of [off, off+len):
 * begin makes sure the extents' bits are on disk before the change starts;
 * end is called after the change was marked dirty.  begin returns 0 or
 * -errno (the state could not be written: the caller reports it; the write
 * goes on, since guest I/O must not fail because of the mirror). */
int persist_write_begin(struct persist_image *pi, uint64_t off, uint64_t len);
void persist_write_end(struct persist_image *pi, uint64_t off, uint64_t len);

/* Clear the bits of extents that are eligible: no write in progress, none
 * for `quiet_ticks` calls of this function, and is_clean(ctx, off, len)
 * says the extent is clean and flushed on the target.  Called by one thread
 * (the manager).  Returns how many extents were cleared, or -errno. */
typedef bool (*persist_clean_fn)(void *ctx, uint64_t off, uint64_t len);
int persist_image_sweep(struct persist_image *pi, unsigned quiet_ticks,
                        persist_clean_fn is_clean, void *ctx);

/* Extents marked in memory (tests and status). */
uint64_t persist_image_marked(struct persist_image *pi);

#endif
