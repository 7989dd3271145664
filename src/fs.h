/* fs.h - the FUSE low-level operations: a passthrough of SOURCE (reached
 * only through fds opened before mounting) that tells the mirror job about
 * every change, plus the virtual .mirror directory (control.c).
 */
#ifndef MIRRORFS_FS_H
#define MIRRORFS_FS_H

#include <fuse_lowlevel.h>

struct mirror_job;
struct fs;

/* The state behind the operations: the inode table, the job.  root_fd is an
 * O_PATH fd of SOURCE (taken over). */
struct fs *fs_new(struct mirror_job *job, int root_fd);
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

#endif
