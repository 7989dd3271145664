/* control.h - the virtual `.mirror` directory at the top of the mount:
 * `status`, `status.json` (for everyone), `ctl`, `events` and `trace` (for
 * the mount's owner and root: doc/design.md, invariant 13).  Nothing in it
 * exists in SOURCE and nothing in it is copied.
 *
 * A status file's content is made when it is opened (a consistent snapshot
 * for each reader, like /proc); events and trace are logs followed from
 * the open on.  They are served with direct_io so that their size of 0 does
 * not cut reads short.
 */
#ifndef MIRRORFS_CONTROL_H
#define MIRRORFS_CONTROL_H

#include <fuse_lowlevel.h>
#include <stdbool.h>

struct mirror_logs;
struct mount;

#define CTL_DIR_NAME ".mirror"

enum ctl_node {
    CTL_NONE = 0,
    CTL_DIR,
    CTL_STATUS,
    CTL_STATUS_JSON,
    CTL_CTL,
    CTL_EVENTS,
    CTL_TRACE,
    CTL_NODES
};

/* Reads of events and trace that have to wait for a line.  They are queued
 * and answered by one thread of their own when a line comes, when the read
 * is interrupted, or at ctl_readers_stop(): a FUSE worker thread never
 * blocks in them, so a few workers serve the mount whatever the number of
 * readers that follow the logs. */
struct ctl_readers;
struct ctl_readers *ctl_readers_new(struct mirror_logs *logs);
/* Answer every queued read with EINTR and end the thread; later reads that
 * would wait get EINTR at once.  Call before the session is destroyed. */
void ctl_readers_stop(struct ctl_readers *r);
void ctl_readers_free(struct ctl_readers *r);

/* Node named name inside .mirror, or CTL_NONE. */
enum ctl_node ctl_lookup(const char *name);
const char *ctl_name(enum ctl_node node);
/* Attributes of a node (ino is the FUSE node id to report). */
void ctl_getattr(enum ctl_node node, fuse_ino_t ino, struct stat *st);
/* FUSE operations on a node; each replies exactly once. */
void ctl_open(fuse_req_t req, struct mount *m, enum ctl_node node,
              struct fuse_file_info *fi);
/* events and trace: a read returns whole lines and waits for the next one
 * when there is none (EAGAIN at once with O_NONBLOCK); the wait is queued
 * on readers, and the reply comes from its thread. */
void ctl_read(fuse_req_t req, struct ctl_readers *readers, size_t size, off_t off,
              struct fuse_file_info *fi);
void ctl_write(fuse_req_t req, struct mount *m, const char *buf, size_t size,
               struct fuse_file_info *fi);
void ctl_release(fuse_req_t req, struct mount *m, struct fuse_file_info *fi);

#endif
