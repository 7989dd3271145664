/* watch.h - writers of SOURCE's files that do not go through the mount.
 *
 * mirrorfs copies what it sees written through its mount.  A process that
 * writes a source file some other way (an fd it held before the mount
 * came, a path outside the mount, a bind mount elsewhere) changes the
 * source behind the copy's back.  This module finds such writers; it knows
 * nothing of FUSE or of the job, which decides what to do with them.
 *
 * 1. At start, watch_find_writers() scans /proc for processes holding a
 *    file below SOURCE open for writing or mapped shared and writable.
 *
 *    It keeps no state: any thread may call it, at any time.
 *
 * 2. During the job, watch_start() reports, from a thread of its own,
 *    every modification of a file on SOURCE's file system by a process
 *    other than this one, with fanotify (CAP_SYS_ADMIN and
 *    CAP_DAC_READ_SEARCH: the daemon runs as root).
 *
 *    Watched: write(2) and its kin (pwrite, writev, copy_file_range,
 *    splice, sendfile into the file), truncate(2) and ftruncate(2),
 *    fallocate(2) (punching holes included), through any path or mount of
 *    the file system -- fanotify reports those as FAN_MODIFY -- and the
 *    last close of a file opened for writing (FAN_CLOSE_WRITE), which is
 *    the only trace a write through a shared mapping leaves: such a writer
 *    is reported when it unmaps (or exits) and closes, not when it writes.
 *    A close after opening for writing without writing is reported too.
 *
 *    Not watched: writes through a shared mapping that is still mapped;
 *    writes to the same files through another file system (the block
 *    device underneath, an NFS export's client side, a FUSE mount of the
 *    images, this module only sees SOURCE's own file system); writes by
 *    this process (by its pid: every thread of it); writes through the
 *    private root given to watch_start(), whoever makes them.  A file that
 *    has no name left when its event is read (unlinked, last link gone) is
 *    not reported: it is no longer part of SOURCE.
 *
 *    The mark covers the whole file system, not only SOURCE: fn is called
 *    for every foreign write to any file on it (log files, databases, ...)
 *    and must pick out the files it cares about by (dev, ino).  It must not
 *    cause a write to that file system by another process for every call
 *    (e.g. a syslog line per event): that write would be reported in turn.
 *
 *    Cost.  Every write on the file system goes through fanotify now,
 *    this process's own included.  Measured on 2 noisy vCPUs (Linux 6.18),
 *    4 KiB pwrite()s into the page cache:
 *    - per write, one thread, paired against an unwatched tmpfs (6 runs of
 *      2000 pairs, a one-off program not in the tree): +0.10 to 0.19 us (+5 to 9% of
 * a 1.7 us write) through the private root, whose events the kernel drops before queueing
 *      them; +0.34 to 0.61 us (+19 to 27%) through any other path, whose
 *      events are queued, merged and thrown away here;
 *    - contrib/bench-watch.c, 2 threads, 1 GiB file, medians of the IOPS
 *      ratios of 30 to 60 paired 1 s runs (a run varies by +-8%): 0.99 to
 *      1.03 through the private root, 0.95 to 0.99 otherwise (tmpfs and
 *      ext4).
 *    A guest write through the mount costs tens of microseconds (some 45
 *    us of ext4 time per 4 KiB write, doc/performance.md), so the daemon
 *    should do its own source I/O through the private root, and may write
 *    its other files on the same file system as it likes.  Letting events
 *    gather 10 ms between reads is what keeps the second case cheap: read
 *    as they came, they cost +1.1 us a write and the thread a third of a
 *    CPU (IOPS ratio 0.60).
 */
#ifndef MIRRORFS_WATCH_H
#define MIRRORFS_WATCH_H

#include <glib.h>
#include <sys/types.h>

/* ---- open writers at start ---------------------------------------------- */

/* One process that can write a file below the root.  A kernel holder (a
 * loop device backed by the file) has pid 0 and its device name as comm. */
struct watch_opener {
    pid_t pid;
    char *comm; /* /proc/PID/comm */
    char *path; /* the file as the process's fd or mapping names it; may end
                 * in " (deleted)" when that name was unlinked but the file
                 * lives on under another one (see the _ino variant) */
};
void watch_opener_free(struct watch_opener *o);

/* A file's identity: the key type of the set watch_find_writers_ino()
 * takes.  Make the set with watch_file_set_new(), fill it with
 * watch_file_set_add(). */
struct watch_file {
    dev_t dev;
    ino_t ino;
};
guint watch_file_hash(gconstpointer key);
gboolean watch_file_equal(gconstpointer a, gconstpointer b);
/* A set of struct watch_file (keys owned by the set, no values). */
GHashTable *watch_file_set_new(void);
void watch_file_set_add(GHashTable *set, dev_t dev, ino_t ino);

/* Fill *out (a new array that frees its elements) with one entry per
 * process other than the caller and per file it can write below root: an
 * fd open O_WRONLY or O_RDWR (per /proc/PID/fdinfo) or a shared writable
 * mapping (per /proc/PID/maps), and one per writable loop device backed by
 * such a file.  root is an absolute canonical directory path; "below" is
 * by path components ("/a/bc" is not below "/a/b").  Read-only openers are
 * not reported.  Processes that exit or cannot be read during the scan are
 * skipped.  Not seen: threads with an fd table of their own, and files the
 * kernel holds for other reasons than a loop device (nfsd's and ksmbd's
 * open files, io_uring registered files whose fd was closed, swap files).
 *
 * The _ino variant also reports a file whose path is not below root when
 * its (dev, ino) is in files (a set from watch_file_set_new(); NULL: none):
 * a source file open through a bind mount elsewhere, through a name in
 * another mount namespace, or through a hard link outside root.
 *
 * 0, or -errno with *err set (one line) when /proc cannot be read. */
int watch_find_writers(const char *root, GPtrArray **out, char **err);
int watch_find_writers_ino(const char *root, GHashTable *files, GPtrArray **out,
                           char **err);

/* ---- writes during the job ---------------------------------------------- */

struct watch;

/* Called on the watcher thread for each modification of the file (dev, ino)
 * by process pid (a process id, never a thread id; 0 when the writer is in
 * a pid namespace this process cannot see), normally within 10 ms of it.
 * Events of one process on one file that the kernel still held unread are
 * merged into one call.  When events were lost (the kernel's queue of
 * 16384 filled up; reading it failed, after which no call comes any more;
 * the file of one could not be opened, out of fds or memory), fn is called
 * with dev 0, ino 0 and pid 0: any file may have been modified.  fn must
 * not block for long (the kernel queue fills meanwhile) and must not call
 * watch_stop(). */
typedef void (*watch_fn)(void *ctx, dev_t dev, ino_t ino, pid_t pid);

/* A detached clone of the mount holding path, rooted at path: an O_PATH
 * directory fd in *fd_out.  Files opened below it (openat(fd, ...)) are
 * the same files as below path, but writes through them can be told apart
 * by the kernel, so that watch_start() can leave them out (those through
 * the clones of mounts below path, which it holds too, carry no ignore
 * mark).  Call it before anything is mounted over path (SOURCE may be
 * MOUNTPOINT).  The clone goes away when the fd and every file opened through it are
 * closed.  0, or -errno with *err set
 * (-EPERM without CAP_SYS_ADMIN, -ENOSYS before Linux 5.2). */
int watch_private_root(const char *path, int *fd_out, char **err);

/* Watch the whole file system of root_fd (a directory, O_PATH is fine)
 * and call fn(ctx, ...) as above from a new thread, until watch_stop().
 * The mark is on the file system, not on a path, so it may be set before
 * or after something is mounted over root_fd's directory.
 * private_root_fd, when not -1, is a fd from watch_private_root() on the
 * same file system: writes through it, by any process, are not reported,
 * and cost little (the kernel drops them before queueing).  Truncations
 * through it are reported all the same: fanotify reports those without
 * the mount they came through.  Writes and truncations by this process
 * through other paths are not reported either, but each costs an event
 * queued, merged and thrown away (see the figures above).
 * 0, or -errno with *err set (one line saying what is missing): -EPERM
 * without CAP_SYS_ADMIN, -ENOSYS or -EINVAL when the kernel lacks fanotify
 * or one of the features used, -EOPNOTSUPP or -ENODEV when the file system
 * has no file handles to report files by. */
int watch_start(int root_fd, int private_root_fd, watch_fn fn, void *ctx,
                struct watch **out, char **err);

/* Report now, on the calling thread, whatever the kernel has queued: every
 * modification that returned before this was called has been reported
 * when it returns, and the watch goes on.  fn may run on the calling
 * thread meanwhile (never at the same time as on the watcher's).  0, or
 * -EIO when events were lost for good (fn was told). */
int watch_flush(struct watch *w);

/* Stop the thread (promptly: it is woken, not waited out) and free w.
 * Every modification that returned before this was called has been
 * reported when it returns (the kernel queues the event before the write
 * returns, and the thread reads the queue empty before it ends).  No call
 * of fn is running or will run once this returns.  NULL is a no-op. */
void watch_stop(struct watch *w);

#endif
