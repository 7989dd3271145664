/* control.h - the virtual `.mirror` directory at the top of the mount:
 * `status`, `status.json` and `ctl`.  Nothing in it exists in SOURCE and
 * nothing in it is copied.
 *
 * The files' content is made when a file is opened (a consistent snapshot
 * for each reader, like /proc), and they are served with direct_io so that
 * their size of 0 does not cut reads short.
 */
#ifndef MIRRORFS_CONTROL_H
#define MIRRORFS_CONTROL_H

#include <fuse_lowlevel.h>
#include <stdbool.h>

struct mirror_job;

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

/* Tells a blocked reader of events/trace to give up: the request was
 * interrupted or the session is ending. */
typedef bool (*ctl_cancelled_fn)(fuse_req_t req);

/* Node named name inside .mirror, or CTL_NONE. */
enum ctl_node ctl_lookup(const char *name);
const char *ctl_name(enum ctl_node node);
/* Attributes of a node (ino is the FUSE node id to report). */
void ctl_getattr(enum ctl_node node, fuse_ino_t ino, struct stat *st);
/* FUSE operations on a node; each replies exactly once. */
void ctl_open(fuse_req_t req, struct mirror_job *job, enum ctl_node node,
              struct fuse_file_info *fi);
/* events and trace: a read returns whole lines and waits for the next one
 * when there is none (EAGAIN at once with O_NONBLOCK). */
void ctl_read(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
              ctl_cancelled_fn cancelled);
void ctl_write(fuse_req_t req, struct mirror_job *job, const char *buf, size_t size,
               struct fuse_file_info *fi);
void ctl_release(fuse_req_t req, struct mirror_job *job, struct fuse_file_info *fi);

#endif
