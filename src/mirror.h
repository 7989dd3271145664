/* mirror.h - the mirror job: its images, states, copy workers, manager,
 * error policies, drain, audit and result.
 *
 * The invariants (numbered), the job's states and the order of every lock
 * are in doc/design.md.  Threads: `workers` copy threads, one manager
 * (flushes, ready and completion, rate sampling), and the watcher of
 * writes behind the mount; FUSE threads call the mirror_* entry points.
 * Lock order: fs.c's ns_lock, an image's io, job->lock, an image's lock.
 */
#ifndef MIRRORFS_MIRROR_H
#define MIRRORFS_MIRROR_H

#include <glib.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "image.h"
#include "options.h"
#include "ratelimit.h"
#include "status.h"

struct target;

/* A regular file of SOURCE found by the start-up scan. */
struct found_file {
    char *path;
    dev_t dev;
    ino_t ino;
};

/* What a job writes to that outlives it: the mount's .mirror/events and
 * .mirror/trace (mount.c owns them). */
struct mirror_logs {
    struct linelog *events;
    struct linelog *trace;
    int trace_readers; /* atomic: open trace files */
};

enum job_state {
    JOB_RUNNING,   /* bulk or ready, per the images */
    JOB_DRAINING,  /* unmounted: copying what is left */
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELLED,
};

struct mirror_job {
    struct mirror_options *opts;
    struct target *target;
    char *source_path;   /* canonical */
    char *state_dir;
    int source_dirfd;    /* O_RDONLY|O_DIRECTORY, opened before mounting */
    bool foreground;
    uint64_t chunk;      /* bytes one copy moves at most */
    uint64_t bulk_chunk; /* the same in a first pass (>= chunk) */

    pthread_mutex_t lock;
    pthread_cond_t wake;   /* work may be there, or the state changed */
    pthread_cond_t manager_wake; /* the state changed: the manager looks at once */
    GPtrArray *images;     /* struct image *, one reference each */
    GHashTable *by_ident;  /* (dev, ino) -> struct image *, the same images */
    struct image_hooks image_hooks; /* what images call: new work, a guest waits */
    GPtrArray *found;      /* the start-up scan's regular files (struct found_file),
                            * until mirror_job_start_target() */
    struct ns *ns;         /* the namespace of a directory target; NULL for NBD */
    guint next_image;      /* round-robin start for the workers */
    enum job_state state;
    bool paused;
    bool stopping;         /* workers and manager exit */
    char *pause_reason;
    char *last_error;
    GThread **worker_threads;
    GThread *manager_thread;
    int idle_workers;      /* atomic: workers waiting on wake */
    bool busy_waiters;     /* a worker waits for granules in flight */
    bool all_ready_reported;

    /* Counters, atomic. */
    guint64 transferred_bytes;
    guint64 guest_write_bytes;
    guint64 errors;
    struct ratelimit limiter; /* job->lock */
    unsigned speed_gen;       /* job->lock: bumped when the limit changes */
    enum copy_mode copy_mode; /* as configured or set through ctl; job->lock */
    int blocking;             /* atomic: guest writes go to the target too */
    uint64_t auto_min_dirty;  /* auto: least dirty bytes seen, and when */
    uint64_t auto_min_ns;
    struct mirror_logs *logs; /* the mount's: .mirror/events and trace */
    const char *last_phase;   /* manager: the phase last announced */
    unsigned flush_failures;  /* manager: failed target flushes in a row */
    unsigned audit_rounds;    /* manager: completion audits that found differences */
    volatile sig_atomic_t cancel_requested; /* mirror_request_cancel() */

    /* Writes to SOURCE that do not come through the mount (watch.c). */
    int private_root_fd;   /* a private clone of SOURCE's mount, or -1 (mount.c's) */
    struct watch *watch;   /* NULL when not watched */
    int outside_lost;      /* atomic: events were lost: compare every image */
    dev_t source_dev;      /* the file system the watch covers */
    bool verify_at_drain;  /* compare every image before completing (not
                            * watched, or open writers were let be) */
    uint64_t last_periodic_flush_ns; /* manager */
    uint64_t last_target_retry_ns;   /* manager */

    /* Crash safety (persist.c); NULL with persist=off. */
    struct persist *persist;
    bool had_state;                /* a previous run's state was found */
    const char *resumed;           /* "no", "state" or "verify": how this run started */
    uint64_t resume_saved_bytes;   /* not copied again thanks to the state */
    guint64 verify_checked_bytes;  /* atomic */
    guint64 verify_differing_bytes;/* atomic */
    guint64 outside_writes;        /* atomic: writes to SOURCE not through the mount */
    /* Rate, sampled by the manager; job->lock. */
    uint64_t rate_bytes_per_s;
    uint64_t rate_last_bytes;
    uint64_t rate_last_ns;
};

/* Create the job and scan SOURCE (through source_dirfd) for its regular
 * files, writing nothing anywhere: every start-up check can still refuse.
 * target may not exist yet (set job->target before the next step).
 * 0 or -errno with *err set. */
int mirror_job_new(struct mirror_options *opts, int source_dirfd, const char *source_path,
                   struct target *target, const char *state_dir, bool foreground,
                   struct mirror_logs *logs, struct mirror_job **out, char **err);
/* The first writes: open the crash-safe state, each image's file on the
 * target (fresh unless the state, sync=none or -o overwrite say it holds
 * data), then the rest of the namespace (ns.c), durable.  0 or -errno with
 * *err set. */
int mirror_job_start_target(struct mirror_job *job, char **err);
/* Start the workers, the manager and the watch over writes behind the
 * mount (after fuse_daemonize()). */
void mirror_start(struct mirror_job *job);
/* No guest can write any more: the mount is gone, or every guest request
 * is held (a pivot).  Drain (on_unmount=complete, always for a pivot) or
 * cancel, audit, flush, record the result in state_dir, stop the threads.
 * Returns the exit code: 0 completed, 2 cancelled, 3 failed. */
enum mirror_end {
    MIRROR_END_UNMOUNT,  /* the mount is gone */
    MIRROR_END_PIVOT,    /* the guests are held for a pivot (mount.c) */
    MIRROR_END_REPLACED, /* a job that is over makes way for a new one */
};
int mirror_finish(struct mirror_job *job, enum mirror_end how);
/* May the guests be switched to the target now?  Only a ready, running,
 * unpaused job with a directory target.  0, or -EINVAL with *err set to
 * one line (also shown as the job's last error). */
int mirror_pivot_check(struct mirror_job *job, char **err);
/* Flush every image's target copy while the guests still run, so that
 * the flush of a pivot (with the guests held) has little left to write. */
void mirror_preflush(struct mirror_job *job);
/* Completed, failed or cancelled: nothing more will be copied. */
bool mirror_is_over(struct mirror_job *job);
void mirror_set_last_error(struct mirror_job *job, const char *msg);
void mirror_job_free(struct mirror_job *job);
/* Cancel the job (as `cancel` in ctl) at the manager's next look.  Safe to
 * call from a signal handler. */
void mirror_request_cancel(struct mirror_job *job);

/* Around every change of a source image through the mount: begin before
 * the source changes (the crash-safe state marks the range first), end
 * after the range was marked dirty. */
void mirror_change_begin(struct mirror_job *job, struct image *img, uint64_t off,
                         uint64_t len);
void mirror_change_end(struct mirror_job *job, struct image *img, uint64_t off,
                       uint64_t len);

/* Wake a worker: new dirty data. Cheap when nobody sleeps. */
void mirror_kick(struct mirror_job *job);
/* Wake every thread waiting on the job (a copy waiting for the rate limit
 * included).  Call without an image's lock. */
void mirror_wake(struct mirror_job *job);

/* The image of a source file, by identity; NULL if none.  New reference. */
struct image *mirror_find_image(struct mirror_job *job, dev_t dev, ino_t ino);
/* Start mirroring a source file that the job does not know yet (created
 * through the mount, or found on lookup).  fd is any fd of the file (it is
 * reopened read-only for the copier); fresh: it is new and empty.
 * New reference; NULL with an error recorded when the target refuses. */
struct image *mirror_add_image(struct mirror_job *job, const char *name, int fd,
                               const struct stat *st);
/* The image of the regular file name in dirfd (stat st), at path: the one
 * the job has, or a new one (mirrored from its first byte).  New reference;
 * NULL with an error recorded. */
struct image *mirror_image_for(struct mirror_job *job, const char *path, int dirfd,
                               const char *name, const struct stat *st);
/* The image's file on the target is lost (no name left to link): a new one
 * at path, copied from scratch.  0 or -errno. */
int mirror_retarget_image(struct mirror_job *job, struct image *img, const char *path);
/* The target's size of a clean image differs from the source's (size):
 * resize it and compare everything. */
void mirror_resync_image(struct mirror_job *job, struct image *img, uint64_t size);

/* The file was unlinked (last link) or replaced: stop mirroring it.  Its
 * name on the target is the caller's business. */
void mirror_drop_image(struct mirror_job *job, struct image *img);
/* A rename through the mount: rename every image at or below from. */
void mirror_rename_paths(struct mirror_job *job, const char *from, const char *to);
/* Exchange (RENAME_EXCHANGE): swap the names a and b. */
void mirror_exchange_paths(struct mirror_job *job, const char *a, const char *b);

void mirror_count_guest_write(struct mirror_job *job, uint64_t bytes);

/* A guest's write of [off, off+len) to the source, in copy_mode=background:
 * begin before the write (guest writes shared against resizes, the
 * crash-safe state marked first), end after it with its result (res bytes
 * written, or -errno): the range is marked dirty, traced and counted. */
void mirror_write_begin(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len);
void mirror_write_end(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len,
                      ssize_t res);
/* copy_mode=write-blocking: write data to the source (fd) at off and the
 * same bytes to the target, as one with respect to copies (the granules are
 * claimed meanwhile).  A failure of the target is the job's to report, not
 * the guest's (invariant 4).  Bytes written to the source, or -errno.  May
 * wait for the target: call it where a FUSE thread is not held. */
ssize_t mirror_write_through(struct mirror_job *job, struct image *img, int fd,
                             const void *data, size_t size, off_t off);

/* copy_mode=write-blocking now (configured, or chosen by auto)?  One
 * atomic read: called for every guest write. */
static inline bool mirror_write_blocking(struct mirror_job *job)
{
    return g_atomic_int_get(&job->blocking) != 0;
}

/* Append a line to .mirror/events: "<unix time> <kind> <details>" (the
 * time with milliseconds); the job's, or the mount's own (mount.c). */
void mirror_logs_event(struct mirror_logs *logs, const char *kind, const char *fmt, va_list ap)
    G_GNUC_PRINTF(3, 0);
void mirror_event(struct mirror_job *job, const char *kind, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
/* A guest write of len bytes at off: a line in .mirror/trace, only while a
 * trace reader is there (one atomic read otherwise). */
void mirror_trace_write(struct mirror_job *job, struct image *img, uint64_t off,
                        uint64_t len);

/* Flush an image's target copy; what a failed flush may have lost is dirty
 * again.  0 or -errno.  A target that only reports that it reconnected
 * since its last flush (ESTALE) gets its recent writes copied again, and 0
 * is returned: that is no failure. */
int mirror_flush_image(struct mirror_job *job, struct image *img);


/* Record a runtime error: counted, logged, shown in status. */
void mirror_report_error(struct mirror_job *job, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/* ctl commands; 0 or -EINVAL with *err set. */
int mirror_control(struct mirror_job *job, const char *line, char **err);

/* Fill a status snapshot (status_snapshot_clear() it after). */
void mirror_snapshot(struct mirror_job *job, struct status_snapshot *s);

#endif
