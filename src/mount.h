/* mount.h - what a mount serves and the jobs it runs in its life.
 *
 * A mount serves one directory: SOURCE at first, the target of a job after
 * a pivot.  It runs at most one mirror job at a time, started with the
 * mount (-o target=) or later through `.mirror/ctl` (`mirror OPTIONS`), and
 * ends a ready job by a pivot: guests held, the job drained and audited,
 * the decision recorded in state_dir, every descriptor switched to the
 * target, guests released (doc/design.md, "The pivot").  Without a job the
 * mount is a plain passthrough: phase idle, or pivoted once it serves a
 * target.
 *
 * Threads: the command of one ctl write at a time (cmd_lock); readers of
 * .mirror/status at any moment (lock).  Lock order: cmd_lock, then the
 * gate of fs.c held for a pivot or a job's start, then lock, then the
 * job's locks.
 */
#ifndef MIRRORFS_MOUNT_H
#define MIRRORFS_MOUNT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mirror.h"
#include "options.h"

struct fs;
struct status_snapshot;

struct mount {
    pthread_mutex_t cmd_lock;   /* one mirror or pivot command at a time */
    pthread_mutex_t lock;       /* job, serving, pivoted, last_error: readers outside the gate */
    struct mirror_job *job;     /* NULL: idle, or pivoted; changed with every guest held */
    struct mirror_options *job_opts; /* the job's options (owned, except the mount's own) */
    bool job_opts_owned;
    struct target *target;      /* the job's target (owned) */
    int job_src_fd;             /* the job's O_RDONLY fd of what is served, or -1 */
    char *origin;               /* SOURCE as mounted (canonical) */
    char *serving;              /* the directory served now (canonical) */
    char *mountpoint;           /* canonical */
    char *state_dir;            /* the mount's: its pivot record and result */
    int private_root;           /* a private clone of serving's mount, or -1 (watch.h) */
    bool pivoted;               /* serving is a former target */
    int64_t pivot_pause_ms;     /* how long guests were held by the last pivot; -1: none */
    char *last_error;           /* of mount-level commands, "" when none */
    bool foreground;
    struct fs *fs;
    struct mirror_logs logs;    /* .mirror/events and .mirror/trace, for every job */
};

/* What the mount serves at start: SOURCE, or the target recorded by a
 * pivot of an earlier run with the same state_dir (then *pivoted).  A
 * record of another origin is ignored; one whose target is gone is an
 * error (NULL, *err set to one line).  g_free() the result. */
char *mount_recorded_serving(const char *state_dir, const char *origin, bool *pivoted,
                             char **err);

struct mount *mount_new(const char *origin, const char *serving, bool pivoted,
                        const char *mountpoint, const char *state_dir, bool foreground);
void mount_free(struct mount *m);

/* Open what is served for fs.c: an O_PATH fd of its top directory, through
 * a private clone of its mount when the kernel allows (watch.h).  -errno. */
int mount_open_root(struct mount *m, char **err);

/* Make state_dir ready for a job: created, writable, no stale result.
 * Its canonical path, or NULL with *err set to one line. */
char *mount_prepare_state_dir(const char *dir, char **err);

/* The checks a job's paths need (target type, nesting, emptiness); 0, or
 * -EINVAL with *err set to one line.  *tgt_out: the canonical target (a
 * URI for NBD), *tgt_exists: it exists already. */
int mount_check_target(struct mount *m, const struct mirror_options *o, const char *state_dir,
                       char **tgt_out, bool *tgt_exists, char **err);

/* Start a job mirroring what is served to o->target: scan, start-up
 * checks, target created, state opened.  live: the mount is up (guests
 * are held while the open files join the job, and its threads start);
 * otherwise mount_start_threads() starts them.  o is the caller's, or
 * taken over with owned.  0, or -errno with *err set to one line. */
int mount_start_job(struct mount *m, struct mirror_options *o, bool owned, bool live,
                    char **err);
void mount_start_threads(struct mount *m);

/* `.mirror/ctl` commands: mirror OPTIONS, pivot, and the job's own. */
int mount_control(struct mount *m, const char *line, char **err);

/* Status of the mount: the job's, or idle/pivoted. */
void mount_snapshot(struct mount *m, struct status_snapshot *s);

/* The mount is gone: finish the job (if any) and record the result.
 * Returns the exit code. */
int mount_finish(struct mount *m);

/* Cancel the job at its manager's next look; safe in a signal handler. */
void mount_request_cancel(struct mount *m);

#endif
