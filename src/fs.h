/* fs.h - the FUSE low-level operations: a passthrough of SOURCE (reached
 * only through fds opened before mounting) that tells the mirror job about
 * every change, plus the virtual .mirror directory (control.c).
 */
#ifndef MIRRORFS_FS_H
#define MIRRORFS_FS_H

#include <fuse_lowlevel.h>

#include <stdint.h>

struct mirror_job;
struct mount;
struct fs;

/* The state behind the operations: the inode table, the mount's job (if
 * any).  root_fd is an O_PATH fd of what the mount serves (taken over). */
struct fs *fs_new(struct mount *m, int root_fd);
/* Start the threads behind the operations that may wait; after
 * fuse_daemonize() (a fork keeps only the calling thread), before the
 * session loop. */
void fs_start(struct fs *fs);
/* Answer what still waits (syncs, locks, reads of .mirror/events) and stop
 * the threads that do it; call once the session loop has ended, before the
 * session is destroyed.  fs_free() calls it too. */
void fs_stop(struct fs *fs);
void fs_free(struct fs *fs);
const struct fuse_lowlevel_ops *fs_ops(void);

/* Hold every new guest request at the mount (requests on .mirror pass) and
 * wait up to timeout_ns for those in flight to be answered.  0, or
 * -ETIMEDOUT (then nothing is held). */
int fs_hold(struct fs *fs, uint64_t timeout_ns);
void fs_unhold(struct fs *fs);
/* With the guests held: the job the requests now report to (NULL: none).
 * Files the kernel knows join a new job; the images of the old one are
 * let go. */
void fs_set_job(struct fs *fs, struct mirror_job *job);
/* With the guests held and no job: serve the tree under new_root from now
 * on.  Every node, open file and open directory is opened on the new tree
 * by its path (never through a symlink); when all are, commit(ctx) is
 * called (the point of no return: it records the decision), then each
 * descriptor is replaced by its twin under the same number.  A node whose
 * name is gone becomes stale (its operations fail); an open file without a
 * twin refuses the switch.  0, or -errno with *err set (nothing changed). */
int fs_switch(struct fs *fs, int new_root, int (*commit)(void *), void *ctx, char **err);

#endif
