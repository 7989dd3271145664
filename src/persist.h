/* persist.h - what survives a crash: per image, a coarse map of the extents
 * (PERSIST_EXTENT bytes each) where the target may differ from the source.
 *
 * The guarantee, the on-disk format and why both hold are in
 * doc/persistence.md.  In short: a bit is on disk before any source write
 * into its extent starts (the cold path, once per extent), and is cleared
 * only when no guest write into the extent is in progress, none came for a
 * while, and every granule of it is clean and flushed on the target.  So
 * after a kill at any moment the bits on disk cover every range whose
 * target copy may differ.  Everything on disk carries a checksum: a state
 * that was damaged, cut short, or belongs to another file or name is
 * reported as such, never read as "nothing differs".
 *
 * Threads: persist_write_begin/end are called by every guest write, with no
 * lock on the hot path (atomics); the cold path and everything else take
 * the image's persist lock.  The state files live in STATE_DIR/images/, two
 * per image (its map and its name), named by the source file's device and
 * inode number.
 */
#ifndef MIRRORFS_PERSIST_H
#define MIRRORFS_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PERSIST_EXTENT (4ull << 20)

struct persist;
struct persist_image;
struct bitmap;

/* Which file a state belongs to.  The birth time tells a file from a later
 * one that got the same inode number; 0, 0 where the file system has none. */
struct persist_key {
    dev_t dev;
    ino_t ino;
    int64_t btime_sec;
    uint32_t btime_nsec;
};

/* The key of the file open as fd (any fd, O_PATH included).  0 or -errno. */
int persist_key_of_fd(int fd, struct persist_key *key);

/* Open STATE_DIR's persistent state for this source and target.  *had_state
 * says whether a state of the same source and target, in this format, was
 * there already (a restart); otherwise whatever STATE_DIR held is deleted
 * and the new manifest is durable on return.  0 or -errno with *err set. */
int persist_open(const char *state_dir, const char *source, const char *target,
                 struct persist **out, bool *had_state, char **err);
void persist_close(struct persist *p);
/* Whether STATE_DIR holds a state of this source and target in this format
 * (read only). */
bool persist_has_state(const char *state_dir, const char *source, const char *target);

/* What an image's state starts from. */
enum persist_marks {
    PERSIST_MARK_ALL,              /* everything may differ (a first pass) */
    PERSIST_MARK_PREVIOUS_OR_ALL,  /* what a previous run left, else all */
    PERSIST_MARK_PREVIOUS_OR_NONE, /* what a previous run left, else nothing */
};

/* What persist_image_open found of a previous run. */
enum persist_previous {
    PERSIST_PREV_NONE,    /* no state for this file (or not looked at) */
    PERSIST_PREV_OK,      /* a complete state of this file under this name */
    PERSIST_PREV_DAMAGED, /* a state that cannot be trusted: a checksum that
                           * fails, a map shorter than the image needs,
                           * another file's key, another name, a state of
                           * the same inode number on another device */
};

/* The state of one image: the file `key` (from persist_key_of_fd) of `size`
 * bytes, called `name` in the source (any bytes but NUL, any length).
 * *found says what a previous run left; with PERSIST_MARK_ALL nothing is
 * read and it is PERSIST_PREV_NONE.  *previous receives the previous bits,
 * as a bitmap of extents, only with PERSIST_PREV_OK (else NULL).  The
 * marks start as the previous bits (PREV_OK), else as `how` says: all with
 * PERSIST_MARK_ALL and PERSIST_MARK_PREVIOUS_OR_ALL, none with
 * PERSIST_MARK_PREVIOUS_OR_NONE; a caller that gets PREV_DAMAGED decides
 * whether to compare source and target.  The state on disk is rewritten
 * from those marks and is durable on return.  0 or -errno (then *out and
 * *previous are NULL).  Not thread-safe for the same key. */
int persist_image_open(struct persist *p, const char *name, const struct persist_key *key,
                       uint64_t size, enum persist_marks how, struct persist_image **out,
                       struct bitmap **previous, enum persist_previous *found);
void persist_image_close(struct persist_image *pi);
/* The image was renamed: the new name is durable on return (a crash during
 * the call leaves the old name or the new one).  0 or -errno. */
int persist_image_rename(struct persist_image *pi, const char *name);
/* The image was removed: its map and name files go.  The state may still be
 * used (writes go to the unlinked files) until persist_image_close. */
void persist_image_remove(struct persist_image *pi);

/* Around a guest write (or any change of the source) of [off, off+len):
 * begin makes sure the extents' bits are on disk before the change starts
 * (past the end of the map too: the map grows with the image); end is
 * called after the change was marked dirty.  begin returns 0 or -errno (the
 * state could not be written: the caller reports it; the write goes on,
 * since guest I/O must not fail because of the mirror). */
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
/* Bytes of memory this image's state holds (tests and status); it grows
 * with the extents that were ever marked or written, not with the
 * largest image there could be. */
size_t persist_image_memory(const struct persist_image *pi);

#endif
