/* mount.c - what a mount serves, its jobs and the pivot (mount.h,
 * doc/design.md "The pivot"). */
#include "config.h"

#include "mount.h"
#include "fs.h"
#include "linelog.h"
#include "persist.h"
#include "status.h"
#include "target.h"
#include "util.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_opt.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* How long a pivot or a job's start waits for guest requests in flight. */
#define HOLD_TIMEOUT_NS (30ull * 1000 * 1000 * 1000)
#define PIVOT_RECORD "pivot"

static void mount_log(struct mount *m, int prio, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void mount_log(struct mount *m, int prio, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line(m->foreground, prio, fmt, ap);
    va_end(ap);
}

static void mount_event(struct mount *m, const char *kind, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void mount_event(struct mount *m, const char *kind, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mirror_logs_event(&m->logs, kind, fmt, ap);
    va_end(ap);
}

/* A refusal of a mount-level command: one line, shown as last_error. */
static int refuse(struct mount *m, char **err, char *msg)
{
    *err = msg;
    pthread_mutex_lock(&m->lock);
    g_free(m->last_error);
    m->last_error = g_strdup(msg);
    struct mirror_job *job = m->job;
    if (job)
        mirror_set_last_error(job, msg);
    pthread_mutex_unlock(&m->lock);
    mount_log(m, LOG_WARNING, "%s", msg);
    return -EINVAL;
}

/* For the tests of a crash in the middle of a pivot (t-pivot.sh): with
 * MIRRORFS_TEST_PIVOT_STOP=record (the job drained, nothing recorded) or
 * =switch (recorded, no descriptor switched), the pivot stops there for a
 * minute after saying so on stderr, for the test to kill the daemon. */
static void test_stop(const char *where)
{
    const char *v = getenv("MIRRORFS_TEST_PIVOT_STOP");

    if (v && strcmp(v, where) == 0) {
        fprintf(stderr, "mirrorfs: test: pivot stopped before the %s\n", where);
        fflush(stderr);
        g_usleep(60 * G_USEC_PER_SEC);
    }
}

/* ---- the pivot record ------------------------------------------------------ */

char *mount_recorded_serving(const char *state_dir, const char *origin, bool *pivoted,
                             char **err)
{
    g_autofree char *path = g_build_filename(state_dir, PIVOT_RECORD, NULL);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *rec_origin = NULL, *serving = NULL;
    struct stat st;

    *pivoted = false;
    *err = NULL;
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, NULL))
        return g_strdup(origin);
    rec_origin = g_key_file_get_string(kf, "pivot", "origin", NULL);
    serving = g_key_file_get_string(kf, "pivot", "serving", NULL);
    if (!rec_origin || strcmp(rec_origin, origin) != 0)
        return g_strdup(origin);
    /* The guests' newest data is where the record points: never fall back
     * to the old source in silence. */
    const char *why = !serving                   ? "missing"
                      : stat(serving, &st) < 0     ? g_strerror(errno)
                      : !S_ISDIR(st.st_mode)       ? "not a directory"
                                                   : NULL;
    if (why) {
        *err = g_strdup_printf("%s says %s was pivoted to %s (%s): bring it back, or "
                               "remove the record to serve %s again",
                               path, origin, serving ? serving : "(nothing)", why, origin);
        return NULL;
    }
    *pivoted = true;
    return g_steal_pointer(&serving);
}

/* Durable before the first descriptor switches: a daemon started again
 * with the same arguments serves what this says (fs_switch()'s commit). */
static int write_pivot_record(void *ctx)
{
    struct mount *m = ctx;
    const char *to = m->job ? m->job->target->description : m->serving;
    g_autofree char *path = g_build_filename(m->state_dir, PIVOT_RECORD, NULL);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GError) gerr = NULL;

    g_key_file_set_string(kf, "pivot", "origin", m->origin);
    g_key_file_set_string(kf, "pivot", "serving", to);
    g_key_file_set_string(kf, "pivot", "from", m->serving);
    g_key_file_set_int64(kf, "pivot", "time", g_get_real_time() / G_USEC_PER_SEC);
    g_autofree char *text = g_key_file_to_data(kf, NULL, NULL);
    if (!g_file_set_contents_full(path, text, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &gerr)) {
        mount_log(m, LOG_ERR, "%s: %s", path, gerr->message);
        return -EIO;
    }
    int dfd = open(m->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : -errno;
    if (dfd >= 0)
        close(dfd);
    if (rc == 0)
        test_stop("switch");
    return rc;
}

/* ---- life of a mount -------------------------------------------------------- */

struct mount *mount_new(const char *origin, const char *serving, bool pivoted,
                        const char *mountpoint, const char *state_dir, bool foreground)
{
    struct mount *m = g_new0(struct mount, 1);

    pthread_mutex_init(&m->cmd_lock, NULL);
    pthread_mutex_init(&m->lock, NULL);
    m->origin = g_strdup(origin);
    m->serving = g_strdup(serving);
    m->pivoted = pivoted;
    m->mountpoint = g_strdup(mountpoint);
    m->state_dir = g_strdup(state_dir);
    m->foreground = foreground;
    m->private_root = -1;
    m->job_src_fd = -1;
    m->pivot_pause_ms = -1;
    m->last_error = g_strdup("");
    m->logs.events = linelog_new(4096);
    m->logs.trace = linelog_new(65536);
    return m;
}

/* A job and what goes with it; any may be NULL (-1). */
static void free_job(struct mirror_job *job, struct target *target, int src_fd,
                     struct mirror_options *opts)
{
    mirror_job_free(job);
    target_destroy(target);
    if (src_fd >= 0)
        close(src_fd);
    if (opts) {
        options_clear(opts);
        g_free(opts);
    }
}

/* Let the job go, with what it owns (its descriptors of the source among
 * them), once it is over and no guest request can reach it: taken out of
 * the mount under its lock (a status reader sees it or nothing), freed
 * after. */
static void drop_job(struct mount *m)
{
    pthread_mutex_lock(&m->lock);
    struct mirror_job *job = m->job;
    struct target *target = m->target;
    struct mirror_options *opts = m->job_opts_owned ? m->job_opts : NULL;
    int src_fd = m->job_src_fd;
    m->job = NULL;
    m->target = NULL;
    m->job_src_fd = -1;
    m->job_opts = NULL;
    m->job_opts_owned = false;
    pthread_mutex_unlock(&m->lock);
    free_job(job, target, src_fd, opts);
}

void mount_free(struct mount *m)
{
    if (!m)
        return;
    drop_job(m);
    if (m->private_root >= 0)
        close(m->private_root);
    linelog_free(m->logs.events);
    linelog_free(m->logs.trace);
    g_free(m->origin);
    g_free(m->serving);
    g_free(m->mountpoint);
    g_free(m->state_dir);
    g_free(m->last_error);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->cmd_lock);
    g_free(m);
}

/* An O_PATH fd of dir, through a private clone of its mount when the
 * kernel allows (then *private is the clone's fd). */
static int open_served(const char *dir, int *private, char **err)
{
    g_autofree char *perr = NULL;
    int fd;

    *private = -1;
    if (watch_private_root(dir, private, &perr) < 0)
        *private = -1;
    fd = *private >= 0 ? openat(*private, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)
                       : open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *err = g_strdup_printf("%s: %s", dir, g_strerror(errno));
        if (*private >= 0)
            close(*private);
        *private = -1;
        return -EIO;
    }
    return fd;
}

int mount_open_root(struct mount *m, char **err)
{
    return open_served(m->serving, &m->private_root, err);
}

static bool dir_is_empty(const char *path)
{
    g_autoptr(GDir) d = g_dir_open(path, 0, NULL);

    return d && g_dir_read_name(d) == NULL;
}

char *mount_prepare_state_dir(const char *dir, char **err)
{
    g_autofree char *result = g_build_filename(dir, "result", NULL);
    char buf[PATH_MAX];

    if (g_mkdir_with_parents(dir, 0700) < 0) {
        *err = g_strdup_printf("%s: cannot create the state directory: %s", dir,
                               g_strerror(errno));
        return NULL;
    }
    if (access(dir, W_OK) < 0) {
        *err = g_strdup_printf("%s: state directory: %s", dir, g_strerror(errno));
        return NULL;
    }
    if (unlink(result) < 0 && errno != ENOENT) {
        *err = g_strdup_printf("%s: %s", result, g_strerror(errno));
        return NULL;
    }
    return g_strdup(realpath(dir, buf) ? buf : dir);
}

int mount_check_target(struct mount *m, const struct mirror_options *o, const char *state_dir,
                       char **tgt_out, bool *tgt_exists, char **err)
{
    const char *src = m->serving;
    struct stat st;

    *tgt_out = NULL;
    if (target_nbd_is_uri(o->target)) {
        /* The NBD backend checks the server and its exports itself. */
        *tgt_out = g_strdup(o->target);
        *tgt_exists = true;
        return 0;
    }
    char *tgt = path_canonical_maybe_missing(o->target, tgt_exists);
    if (!tgt) {
        *err = g_strdup_printf("%s: target: %s", o->target, g_strerror(errno));
        return -EINVAL;
    }
    *tgt_out = tgt;
    if (*tgt_exists) {
        if (stat(tgt, &st) < 0) {
            *err = g_strdup_printf("%s: %s", o->target, g_strerror(errno));
            return -EINVAL;
        }
        if (!S_ISDIR(st.st_mode)) {
            *err = g_strdup_printf("%s: target is not a directory", o->target);
            return -EINVAL;
        }
    }
    if (path_is_within(src, tgt)) {
        *err = g_strdup_printf("%s: the target is inside the source %s", o->target, src);
        return -EINVAL;
    }
    if (path_is_within(tgt, src)) {
        *err = g_strdup_printf("%s: the source is inside the target %s", src, o->target);
        return -EINVAL;
    }
    /* Below the mount the target would be reached through the daemon itself. */
    if (path_is_within(m->mountpoint, tgt)) {
        *err = g_strdup_printf("%s: the target is inside the mountpoint %s", o->target,
                               m->mountpoint);
        return -EINVAL;
    }
    if (path_is_within(tgt, m->mountpoint)) {
        *err = g_strdup_printf("%s: the mountpoint is inside the target %s", m->mountpoint,
                               o->target);
        return -EINVAL;
    }
    /* A non-empty target is what a restart finds: fine when this state_dir
     * holds the crash-safe state of the same source and target. */
    if (*tgt_exists && o->sync == SYNC_FULL && !o->overwrite && !dir_is_empty(tgt) &&
        !(o->persist && persist_has_state(state_dir, src, tgt))) {
        *err = g_strdup_printf("%s: the target is not empty and there is no state of a previous "
                               "run in %s (give -o overwrite to compare it with the source and "
                               "copy only what differs, or -o sync=none if it is a copy already)",
                               o->target, state_dir);
        return -EINVAL;
    }
    if (*tgt_exists && access(tgt, W_OK) < 0) {
        *err = g_strdup_printf("%s: target: %s", o->target, g_strerror(errno));
        return -EINVAL;
    }
    return 0;
}

/* Writes behind the mount: a process that holds a source file open for
 * writing (or mapped shared) outside the mount would change it unseen.
 * Refused, unless open_writers=verify, which compares every image before
 * the job completes. */
static int check_open_writers(struct mount *m, const struct mirror_options *o,
                              struct mirror_job *job, char **err)
{
    g_autoptr(GHashTable) files = watch_file_set_new();
    g_autoptr(GPtrArray) writers = NULL;
    g_autofree char *werr = NULL;

    for (guint i = 0; i < job->found->len; i++) {
        const struct found_file *f = g_ptr_array_index(job->found, i);
        watch_file_set_add(files, f->dev, f->ino);
    }
    if (watch_find_writers_ino(m->serving, files, &writers, &werr) < 0) {
        mount_log(m, LOG_WARNING, "warning: cannot look for writers of %s (%s): every image is "
                  "compared in full before the job completes", m->serving, werr);
        job->verify_at_drain = true;
        return 0;
    }
    if (writers->len == 0)
        return 0;
    const struct watch_opener *w = g_ptr_array_index(writers, 0);
    g_autofree char *more = writers->len > 1
                                ? g_strdup_printf(" (and %u more)", writers->len - 1)
                                : g_strdup("");
    if (o->open_writers == OPEN_WRITERS_REFUSE) {
        *err = g_strdup_printf("%s: open for writing by pid %d (%s) outside the mount%s: stop it "
                               "first, or give -o open_writers=verify to compare every image "
                               "before the job completes",
                               w->path, (int)w->pid, w->comm, more);
        return -EBUSY;
    }
    mount_log(m, LOG_WARNING, "warning: %s: open for writing by pid %d (%s) outside the mount%s: "
              "every image is compared in full before the job completes",
              w->path, (int)w->pid, w->comm, more);
    job->verify_at_drain = true;
    return 0;
}

int mount_start_job(struct mount *m, struct mirror_options *o, bool owned, bool live,
                    char **err)
{
    g_autofree char *tgt = NULL, *state_dir = NULL;
    struct target *target = NULL;
    struct mirror_job *job = NULL;
    bool tgt_exists = false, held = false, uri;
    int src_fd = -1, rc;

    *err = NULL;
    if (!o->target) {
        *err = g_strdup("missing target: give -o target=DIR");
        rc = -EINVAL;
        goto fail;
    }
    uri = target_nbd_is_uri(o->target);
    /* A job started with the mount uses the state_dir main.c prepared. */
    state_dir = live ? mount_prepare_state_dir(o->state_dir ? o->state_dir : m->state_dir, err)
                     : g_strdup(m->state_dir);
    if (!state_dir) {
        rc = -EINVAL;
        goto fail;
    }
    rc = mount_check_target(m, o, state_dir, &tgt, &tgt_exists, err);
    if (rc < 0)
        goto fail;
    if (uri) {
        /* Connecting writes nothing. */
        rc = target_nbd_new(tgt, &target, err);
        if (rc < 0)
            goto fail;
    }
    if (live) {
        /* From the scan to the open files joining the job, no guest
         * changes what is served: nothing slips between. */
        rc = fs_hold(m->fs, HOLD_TIMEOUT_NS);
        if (rc < 0) {
            *err = g_strdup("guest requests still in flight after 30 s: no job started");
            goto fail;
        }
        held = true;
    }
    src_fd = m->private_root >= 0 ? openat(m->private_root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                                  : open(m->serving, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0) {
        *err = g_strdup_printf("%s: %s", m->serving, g_strerror(errno));
        rc = -EIO;
        goto fail;
    }
    rc = mirror_job_new(o, src_fd, m->serving, target, state_dir, m->foreground, &m->logs, &job,
                        err);
    if (rc < 0)
        goto fail;
    job->private_root_fd = m->private_root;
    rc = check_open_writers(m, o, job, err);
    if (rc < 0)
        goto fail;

    /* Everything checked: from here on the target may be written. */
    if (!uri) {
        if (!tgt_exists && mkdir(tgt, 0700) < 0) {
            *err = g_strdup_printf("%s: cannot create the target: %s", tgt, g_strerror(errno));
            rc = -EIO;
            goto fail;
        }
        int tgt_fd = open(tgt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tgt_fd < 0) {
            *err = g_strdup_printf("%s: %s", tgt, g_strerror(errno));
            rc = -EIO;
            goto fail;
        }
        target_file_new(tgt_fd, tgt, &target);
        job->target = target;
    }
    rc = mirror_job_start_target(job, err);
    if (rc < 0)
        goto fail;

    if (live)
        fs_set_job(m->fs, job);
    pthread_mutex_lock(&m->lock);
    m->job = job;
    m->target = target;
    m->job_src_fd = src_fd;
    m->job_opts = o;
    m->job_opts_owned = owned;
    g_free(m->last_error);
    m->last_error = g_strdup("");
    pthread_mutex_unlock(&m->lock);
    if (live) {
        fs_unhold(m->fs);
        mirror_start(job);
        mount_event(m, "mirror", "%s -> %s", m->serving, job->target->description);
        mount_log(m, LOG_INFO, "mirror: %s -> %s", m->serving, job->target->description);
    }
    return 0;

fail:
    if (held)
        fs_unhold(m->fs);
    free_job(job, target, src_fd, owned ? o : NULL);
    return rc < 0 ? rc : -EINVAL;
}

void mount_start_threads(struct mount *m)
{
    if (m->job)
        mirror_start(m->job);
}

/* ---- commands ------------------------------------------------------------------ */

static int pivot(struct mount *m, char **err)
{
    struct mirror_job *job = m->job;
    g_autofree char *perr = NULL, *to = NULL;
    int new_private = -1, new_root, rc;

    if (!job)
        return refuse(m, err, g_strdup_printf("pivot: no mirror job runs (phase %s): start one "
                                              "with `mirrorctl mirror`",
                                              m->pivoted ? "pivoted" : "idle"));
    if (mirror_pivot_check(job, &perr) < 0)
        return refuse(m, err, g_steal_pointer(&perr));
    to = g_strdup(job->target->description);
    /* What the target holds already is made durable before the guests
     * are held: the flush under the hold then writes only what came
     * since. */
    mirror_preflush(job);
    uint64_t t0 = now_ns();
    if (fs_hold(m->fs, HOLD_TIMEOUT_NS) < 0)
        return refuse(m, err, g_strdup("pivot: guest requests still in flight after 30 s; "
                                       "nothing changed"));
    uint64_t held = now_ns();
    /* Checked again with the guests held: a pause or a failure may have
     * come meanwhile. */
    if (mirror_pivot_check(job, &perr) < 0) {
        fs_unhold(m->fs);
        return refuse(m, err, g_steal_pointer(&perr));
    }
    /* The last copy, the audit and the flush, as at an unmount. */
    int code = mirror_finish(job, MIRROR_END_PIVOT);
    if (code != 0) {
        fs_unhold(m->fs);
        return refuse(m, err, g_strdup_printf("pivot: the final copy did not complete (exit "
                                              "code %d): the guests stay on %s",
                                              code, m->serving));
    }
    uint64_t drained = now_ns();
    test_stop("record");
    fs_set_job(m->fs, NULL);
    new_root = open_served(to, &new_private, &perr);
    rc = new_root < 0 ? new_root : fs_switch(m->fs, new_root, write_pivot_record, m, &perr);
    if (new_root >= 0)
        close(new_root);
    pthread_mutex_lock(&m->lock);
    if (rc == 0) {
        g_free(m->serving);
        m->serving = g_strdup(to);
        m->pivoted = true;
        m->pivot_pause_ms = (int64_t)((now_ns() - t0) / 1000000);
    }
    pthread_mutex_unlock(&m->lock);
    fs_unhold(m->fs);
    /* The guests go on; what remains of the source is let go. */
    drop_job(m);
    int old_private = m->private_root;
    if (rc < 0) {
        if (new_private >= 0)
            close(new_private);
        return refuse(m, err, g_strdup_printf("pivot: %s; the guests stay on %s (the target was "
                                              "complete, it is no longer mirrored)",
                                              perr, m->serving));
    }
    m->private_root = new_private;
    if (old_private >= 0)
        close(old_private);
    /* Where the pause went: waiting for requests in flight, the drain
     * (copy, audit, flush, sync), the switch (opens, record, dup3). */
    mount_event(m, "pivoted",
                "%s pause_ms=%" G_GINT64_FORMAT " inflight_ms=%" G_GUINT64_FORMAT
                " drain_ms=%" G_GUINT64_FORMAT " switch_ms=%" G_GINT64_FORMAT,
                to, m->pivot_pause_ms, (held - t0) / 1000000, (drained - held) / 1000000,
                m->pivot_pause_ms - (int64_t)((drained - t0) / 1000000));
    mount_log(m, LOG_INFO, "pivoted to %s: guests held %" G_GINT64_FORMAT " ms", to,
              m->pivot_pause_ms);
    return 0;
}

static int mirror_command(struct mount *m, const char *optstr, char **err)
{
    struct mirror_job *job = m->job;
    g_autofree char *perr = NULL;

    if (job && !mirror_is_over(job))
        return refuse(m, err, g_strdup("mirror: a job runs already: pivot, cancel or unmount "
                                       "first"));
    if (job) {
        /* A failed or cancelled job makes way. */
        mirror_finish(job, MIRROR_END_REPLACED);
        if (fs_hold(m->fs, HOLD_TIMEOUT_NS) < 0)
            return refuse(m, err, g_strdup("mirror: guest requests still in flight after 30 s"));
        fs_set_job(m->fs, NULL);
        fs_unhold(m->fs);
        drop_job(m);
    }
    /* The same options as at mount time, parsed by the same code. */
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    fuse_opt_add_arg(&args, "mirrorfs");
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, optstr);
    fuse_opt_add_arg(&args, m->serving);
    fuse_opt_add_arg(&args, m->mountpoint);
    struct mirror_options *o = g_new0(struct mirror_options, 1);
    int rc = options_parse(&args, o, &perr);
    if (rc == 0 && args.argc > 2)
        perr = g_strdup_printf("%s: not an option of a job (FUSE options are given when "
                               "mounting)",
                               args.argv[2]);
    fuse_opt_free_args(&args);
    if (rc < 0 || perr) {
        options_clear(o);
        g_free(o);
        return refuse(m, err, g_strdup_printf("mirror: %s", perr));
    }
    if (mount_start_job(m, o, true, true, &perr) < 0)
        return refuse(m, err, g_strdup_printf("mirror: %s", perr));
    return 0;
}

int mount_control(struct mount *m, const char *line, char **err)
{
    g_autofree char *cmd = g_strstrip(g_strdup(line));
    int rc;

    *err = NULL;
    if (strcmp(cmd, "pivot") == 0) {
        pthread_mutex_lock(&m->cmd_lock);
        rc = pivot(m, err);
        pthread_mutex_unlock(&m->cmd_lock);
        return rc;
    }
    if (g_str_has_prefix(cmd, "mirror ") || g_str_has_prefix(cmd, "mirror\t")) {
        pthread_mutex_lock(&m->cmd_lock);
        rc = mirror_command(m, g_strchug(cmd + 7), err);
        pthread_mutex_unlock(&m->cmd_lock);
        return rc;
    }
    pthread_mutex_lock(&m->lock);
    if (m->job)
        rc = mirror_control(m->job, line, err);
    else if (!cmd[0])
        rc = 0;
    else
        rc = -1;
    pthread_mutex_unlock(&m->lock);
    if (rc == -1)
        return refuse(m, err, g_strdup_printf("ctl: %s: no mirror job runs (phase %s)", cmd,
                                              m->pivoted ? "pivoted" : "idle"));
    return rc;
}

void mount_snapshot(struct mount *m, struct status_snapshot *s)
{
    pthread_mutex_lock(&m->lock);
    if (m->job) {
        mirror_snapshot(m->job, s);
    } else {
        memset(s, 0, sizeof(*s));
        s->phase = m->pivoted ? "pivoted" : "idle";
        s->pid = getpid();
        s->source = g_strdup(m->origin);
        s->target = g_strdup("");
        s->copy_mode = "";
        s->active_copy_mode = "";
        s->resumed = "no";
        s->mirrored = "";
        s->last_error = g_strdup(m->last_error);
        s->state_dir = g_strdup(m->state_dir);
        s->exit_code = -1;
    }
    g_free(s->serving);
    s->serving = g_strdup(m->serving);
    s->pivot_pause_ms = m->pivot_pause_ms;
    pthread_mutex_unlock(&m->lock);
}

int mount_finish(struct mount *m)
{
    if (m->job)
        return mirror_finish(m->job, MIRROR_END_UNMOUNT);
    /* Nothing to drain: the result says what was served. */
    struct status_snapshot s;
    g_autofree char *path = g_build_filename(m->state_dir, "result", NULL);
    g_autoptr(GError) gerr = NULL;

    mount_snapshot(m, &s);
    s.exit_code = 0;
    g_autofree char *text = status_format_text(&s);
    status_snapshot_clear(&s);
    if (!g_file_set_contents(path, text, -1, &gerr))
        mount_log(m, LOG_ERR, "cannot record the result: %s", gerr->message);
    mount_log(m, LOG_INFO, "unmounted (%s %s): nothing to drain",
              m->pivoted ? "pivoted, serving" : "idle, serving", m->serving);
    return 0;
}

void mount_request_cancel(struct mount *m)
{
    if (m->job)
        mirror_request_cancel(m->job);
}
