/* mirror.c - the mirror job (see mirror.h). */
#include "config.h"

#include "mirror.h"
#include "bitmap.h"
#include "linelog.h"
#include "ns.h"
#include "persist.h"
#include "rangelock.h"
#include "target.h"
#include "tree.h"
#include "util.h"
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

/* A run that starts in a hole may be extended over the rest of the hole by
 * this much at a time: no data moves, so it needs no buffer. */
#define HOLE_RUN_MAX (64ull << 30)
#define MANAGER_TICK_NS (50 * 1000 * 1000ull)
/* While draining, the manager looks more often: the drain is short, and a
 * pivot holds the guests until it ends. */
#define MANAGER_DRAIN_TICK_NS (2 * 1000 * 1000ull)
/* While running, what was copied is flushed at least this often: the
 * target's durable copy lags by about this much, and a target that loses
 * writes says so while the job can still copy them again. */
#define PERIODIC_FLUSH_NS (1000 * 1000 * 1000ull)
/* How often an image the target had no place for is tried again. */
#define TARGET_RETRY_NS (2 * 1000 * 1000 * 1000ull)
/* An extent's crash-safe bit is cleared only after this many sweeps (one a
 * second, after the periodic flush) without a write into it: a hot extent
 * stays marked instead of costing a synchronous state write again and
 * again (DRBD's activity log keeps hot extents the same way). */
#define STATE_QUIET_SWEEPS 3
#define IDLE_WAIT_US (100 * 1000) /* image_mark_dirty() relies on it once ready */
#define IGNORE_BACKOFF_MIN_US (100 * 1000)
#define IGNORE_BACKOFF_MAX_US (5 * 1000 * 1000)
/* Under on_*_error=ignore a drain gives up after this many failures in a
 * row: nobody is left to free space or repair the target. */
#define DRAIN_MAX_CONSECUTIVE_ERRORS 20

static void job_log(struct mirror_job *job, int prio, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void job_log(struct mirror_job *job, int prio, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_line(job->foreground, prio, fmt, ap);
    va_end(ap);
}

static void set_last_error_locked(struct mirror_job *job, const char *msg)
{
    g_free(job->last_error);
    job->last_error = g_strdup(msg);
}

/* Seconds since the epoch with milliseconds: comparable across programs. */
static void wall_clock(char buf[32])
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, 32, "%lld.%03ld", (long long)ts.tv_sec, ts.tv_nsec / 1000000);
}

void mirror_logs_event(struct mirror_logs *logs, const char *kind, const char *fmt, va_list ap)
{
    g_autofree char *details = g_strdup_vprintf(fmt, ap);
    char now[32];

    wall_clock(now);
    linelog_appendf(logs->events, "%s %s %s", now, kind, details);
}

void mirror_event(struct mirror_job *job, const char *kind, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    mirror_logs_event(job->logs, kind, fmt, ap);
    va_end(ap);
}

void mirror_trace_write(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len)
{
    char now[32];

    if (g_atomic_int_get(&job->logs->trace_readers) <= 0)
        return;
    wall_clock(now);
    /* The name goes last: it may hold spaces. */
    g_autofree char *name = image_name(img);
    linelog_appendf(job->logs->trace, "%s %" PRIu64 " %" PRIu64 " %s", now, off, len, name);
}


void mirror_report_error(struct mirror_job *job, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    mirror_event(job, "error", "%s", msg);
    g_atomic_pointer_add(&job->errors, 1);
    pthread_mutex_lock(&job->lock);
    set_last_error_locked(job, msg);
    pthread_mutex_unlock(&job->lock);
    job_log(job, LOG_ERR, "%s", msg);
}

void mirror_kick(struct mirror_job *job)
{
    /* Writers check for sleepers without the lock: a wake-up lost to the
     * race costs at most one IDLE_WAIT_US, never data. */
    if (g_atomic_int_get(&job->idle_workers) > 0) {
        pthread_mutex_lock(&job->lock);
        pthread_cond_broadcast(&job->wake);
        pthread_mutex_unlock(&job->lock);
    }
}

static void hook_work(void *ctx)
{
    mirror_kick(ctx);
}

static void hook_guest_waits(void *ctx)
{
    mirror_wake(ctx);
}

void mirror_change_begin(struct mirror_job *job, struct image *img, uint64_t off,
                         uint64_t len)
{
    int rc = image_change_begin(img, off, len);
    if (rc < 0) {
        /* The guest's write goes on (the mirror must not fail it); a crash
         * from now on may need a verify pass to find this range. */
        g_autofree char *name = image_name(img);
        mirror_report_error(job, "%s: cannot record the change in the state: %s", name,
                            g_strerror(-rc));
    }
}

void mirror_change_end(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len)
{
    image_change_end(img, off, len);
}

void mirror_count_guest_write(struct mirror_job *job, uint64_t bytes)
{
    g_atomic_pointer_add(&job->guest_write_bytes, bytes);
}

/* ---- the guests' writes ------------------------------------------------------ */

void mirror_write_begin(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len)
{
    image_write_begin(img);
    mirror_change_begin(job, img, off, len);
}

void mirror_write_end(struct mirror_job *job, struct image *img, uint64_t off, uint64_t len,
                      ssize_t res)
{
    /* Mark only now that the source write has returned (invariant 1): a
     * copy that clears the bits before this point and read the old data is
     * followed by another.  Even a failed write may have changed some
     * bytes, so its whole range is marked. */
    image_mark_dirty(img, off, res > 0 ? (uint64_t)res : len);
    mirror_change_end(job, img, off, len);
    image_write_end(img);
    if (res > 0) {
        mirror_trace_write(job, img, off, (uint64_t)res);
        mirror_count_guest_write(job, (uint64_t)res);
    }
}

ssize_t mirror_write_through(struct mirror_job *job, struct image *img, int fd,
                             const void *data, size_t size, off_t off)
{
    struct claim c;
    int trc = 0;

    image_write_begin(img);
    image_claim_for_write(img, (uint64_t)off, size, &c);
    mirror_change_begin(job, img, (uint64_t)off, size);
    ssize_t res = pwrite(fd, data, size, off);
    int saved = errno;
    /* Granules whose flush failed are rewritten by the copier, which
     * deallocates them first; this write leaves them dirty. */
    if (c.target_suspect || !c.tgt)
        trc = -EAGAIN;
    else if (res > 0) {
        trc = target_pwrite(c.tgt, data, (size_t)res, (uint64_t)off);
        if (trc == 0)
            g_atomic_pointer_add(&job->transferred_bytes, res);
    }
    image_finish_write(img, &c, res == (ssize_t)size, res > 0 && trc == 0);
    mirror_change_end(job, img, (uint64_t)off, size);
    image_write_end(img);
    if (trc < 0 && trc != -EAGAIN) {
        /* Invariant 4: the guest is not told; the copier copies it. */
        g_autofree char *name = image_name(img);
        mirror_report_error(job, "%s: write-blocking write to the target failed (left to the "
                            "copier): %s", name, g_strerror(-trc));
    }
    if (res < 0)
        return -saved;
    mirror_trace_write(job, img, (uint64_t)off, (uint64_t)res);
    mirror_count_guest_write(job, (uint64_t)res);
    return res;
}

/* ---- images --------------------------------------------------------------- */

/* Images by source identity: key and hash. */
struct image_key {
    dev_t dev;
    ino_t ino;
};

static guint image_key_hash(gconstpointer p)
{
    const struct image_key *k = p;
    return (guint)(k->ino ^ (k->ino >> 32) ^ k->dev);
}

static gboolean image_key_equal(gconstpointer a, gconstpointer b)
{
    const struct image_key *x = a, *y = b;
    return x->dev == y->dev && x->ino == y->ino;
}

struct image *mirror_find_image(struct mirror_job *job, dev_t dev, ino_t ino)
{
    struct image_key key = {dev, ino};

    pthread_mutex_lock(&job->lock);
    struct image *found = g_hash_table_lookup(job->by_ident, &key);
    if (found)
        image_ref(found);
    pthread_mutex_unlock(&job->lock);
    return found;
}

/* With job->lock held: the job's list and index. */
static void insert_image_locked(struct mirror_job *job, struct image *img)
{
    struct image_key *key = g_new(struct image_key, 1);

    image_identity(img, &key->dev, &key->ino);
    g_ptr_array_add(job->images, image_ref(img));
    g_hash_table_insert(job->by_ident, key, img);
}

/* How an image's mirror starts. */
enum image_start {
    START_FULL,   /* the target's copy is made afresh: everything is copied */
    START_TRUST,  /* sync=none: the target is a copy already */
    START_RESUME, /* the previous run's state says what may differ */
    START_VERIFY, /* the target holds data we know nothing of: compare */
};

/* Open the image on the target and add it to the job.  at_start: found by
 * the start-up scan (it may resume or be verified); later ones are new and
 * copied whole.  With keep_without_target,
 * an image the target refuses is added all the same, without a target copy
 * (the manager tries again); *target_rc and *target_err then say why
 * (g_free *target_err). */
static int add_image(struct mirror_job *job, const char *name, int fd,
                     const struct stat *st, bool at_start, bool keep_without_target,
                     int *target_rc, char **target_err, struct image **out)
{
    struct target_image *ti = NULL;
    struct persist_image *pst = NULL;
    struct bitmap *previous = NULL;
    enum persist_previous found = PERSIST_PREV_NONE;
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", fd);
    uint64_t size = (uint64_t)st->st_size, tsize = 0;
    enum image_start start = START_FULL;
    int src_fd, rc;

    /* The copier's own read-only fds: they stay valid across renames.
     * O_NOATIME: copying must not change the source's times, which are
     * mirrored too. */
    src_fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (src_fd < 0 && errno == EPERM)
        src_fd = open(proc, O_RDONLY | O_CLOEXEC);
    if (src_fd < 0)
        return -errno;
    /* The first pass reads what is not in the page cache with O_DIRECT
     * where the file system has it (source_read()): it then costs no page
     * cache (its profile was three quarters memcpy in and out of page
     * caches).  Not later: a direct read first writes back
     * the guest's buffered data of its range, which a guest writing at full
     * speed then waits for (seq write 1M fell to 0.4x when it did). */
    int direct_fd = open(proc, O_RDONLY | O_CLOEXEC | O_DIRECT | O_NOATIME);
    if (direct_fd < 0 && errno == EPERM)
        direct_fd = open(proc, O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (job->persist) {
        enum persist_marks how = !at_start                   ? PERSIST_MARK_ALL
                                 : job->opts->sync == SYNC_NONE ? PERSIST_MARK_PREVIOUS_OR_NONE
                                                                : PERSIST_MARK_PREVIOUS_OR_ALL;
        struct persist_key key;
        rc = persist_key_of_fd(fd, &key);
        if (rc == 0)
            rc = persist_image_open(job->persist, name, &key, size, how, &pst, &previous,
                                    &found);
        if (rc < 0) {
            close(src_fd);
            if (direct_fd >= 0)
                close(direct_fd);
            return rc;
        }
    }
    if (at_start) {
        /* Whatever the state says, a target without the file holds
         * nothing of it (a backend that cannot tell is trusted). */
        int probe = target_probe(job->target, name, &tsize);
        if (probe == -EOPNOTSUPP)
            probe = 0;
        if (probe == 0 && found == PERSIST_PREV_OK)
            start = START_RESUME;
        else if (probe == 0 && found == PERSIST_PREV_DAMAGED)
            start = START_VERIFY; /* a state that cannot be trusted, whatever sync says */
        else if (probe == 0 && job->opts->sync == SYNC_NONE)
            start = START_TRUST;
        else if (probe == 0 && tsize > 0)
            start = START_VERIFY; /* -o overwrite, or a restart without state */
    }
    /* A copy from scratch or a comparison may find differences anywhere:
     * until they are done, a crash must find everything marked. */
    if (pst && size > 0 && (start == START_FULL || start == START_VERIFY)) {
        rc = persist_write_begin(pst, 0, size);
        persist_write_end(pst, 0, size);
        if (rc < 0) {
            bitmap_free(previous);
            persist_image_close(pst);
            close(src_fd);
            if (direct_fd >= 0)
                close(direct_fd);
            return rc;
        }
    }
    rc = target_open_image(job->target, name, size, start == START_FULL, &ti, target_err);
    *target_rc = rc;
    if (rc < 0 && !keep_without_target) {
        bitmap_free(previous);
        persist_image_close(pst);
        close(src_fd);
        if (direct_fd >= 0)
            close(direct_fd);
        return rc;
    }
    uint64_t gran = options_image_granularity(job->opts, size);
    struct image *img = image_new(name, st->st_dev, st->st_ino, src_fd, direct_fd, ti, pst, size,
                                  gran, start == START_FULL, &job->image_hooks);
    if (start == START_RESUME) {
        /* Only the extents the crash-safe state marked may differ. */
        job->resume_saved_bytes += image_mark_extents(img, previous, PERSIST_EXTENT);
        job->resumed = "state";
    } else if (start == START_VERIFY) {
        image_start_verify(img);
        if (strcmp(job->resumed, "state") != 0)
            job->resumed = "verify";
    }
    bitmap_free(previous);
    pthread_mutex_lock(&job->lock);
    if (job->state == JOB_DRAINING)
        image_set_phase(img, PHASE_DRAINING);
    insert_image_locked(job, img);
    pthread_cond_broadcast(&job->wake);
    pthread_mutex_unlock(&job->lock);
    *out = img;
    return 0;
}

static void fail_job(struct mirror_job *job, const char *why);

struct image *mirror_add_image(struct mirror_job *job, const char *name, int fd,
                               const struct stat *st)
{
    struct image *img = NULL;
    g_autofree char *why = NULL;
    int trc = 0;
    int rc = add_image(job, name, fd, st, false, true, &trc, &why, &img);

    if (rc < 0) {
        mirror_report_error(job, "%s: cannot read it to mirror it: %s", name, g_strerror(-rc));
        fail_job(job, "a file could not be mirrored");
        return NULL;
    }
    if (trc < 0) {
        /* Served all the same; the mirror of it waits for the target (an
         * NBD server without an export of that name, say), and the job
         * cannot complete without it. */
        mirror_report_error(job, "%s: the target has no place for it (%s); not mirrored "
                            "until it has",
                            name, why);
        mirror_event(job, "no-target", "%s: %s", name, g_strerror(-trc));
    }
    return img;
}

/* Images without a target copy: try again (manager, every few seconds). */
static void retry_missing_targets(struct mirror_job *job, GPtrArray *imgs)
{
    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        struct target_image *ti = NULL;
        uint64_t size, d, f;

        if (!image_needs_target(img))
            continue;
        g_autofree char *name = image_name(img);
        image_counts(img, &size, &d, &f);
        if (target_open_image(job->target, name, size, true, &ti, NULL) < 0)
            continue;
        /* A fresh copy: everything again. */
        image_replace_target(img, ti);
        mirror_event(job, "target-found", "%s", name);
        job_log(job, LOG_INFO, "%s: the target has a place for it now", name);
        mirror_kick(job);
    }
}

struct image *mirror_image_for(struct mirror_job *job, const char *path, int dirfd,
                               const char *name, const struct stat *st)
{
    struct image *img = mirror_find_image(job, st->st_dev, st->st_ino);

    if (img)
        return img;
    /* A file the job has not seen come in: made in SOURCE behind the
     * mount's back, or lost on the way.  Mirrored now, from its first
     * byte. */
    int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        mirror_report_error(job, "%s: cannot open it to mirror it: %s", path, g_strerror(errno));
        return NULL;
    }
    img = mirror_add_image(job, path, fd, st);
    close(fd);
    if (img)
        mirror_event(job, "found", "%s: mirrored from now on", path);
    return img;
}

int mirror_retarget_image(struct mirror_job *job, struct image *img, const char *path)
{
    struct target_image *ti = NULL;
    uint64_t size, d, f;

    image_counts(img, &size, &d, &f);
    int rc = target_open_image(job->target, path, size, true, &ti, NULL);
    if (rc < 0)
        return rc;
    image_replace_target(img, ti);
    mirror_event(job, "recopy", "%s: its file on the target was lost; copying it again", path);
    return 0;
}

void mirror_resync_image(struct mirror_job *job, struct image *img, uint64_t size)
{
    uint64_t known, d, f;
    g_autofree char *name = image_name(img);

    image_counts(img, &known, &d, &f);
    int rc = image_resize(img, size);
    if (rc < 0)
        mirror_report_error(job, "%s: cannot resize on the target: %s", name, g_strerror(-rc));
    if (size > known)
        image_mark_dirty(img, known, size - known);
    image_start_verify(img);
    mirror_event(job, "verify", "%s: its size on the target did not match; comparing it all",
                 name);
}

void mirror_drop_image(struct mirror_job *job, struct image *img)
{
    struct image_key key;

    image_drop(img);
    image_identity(img, &key.dev, &key.ino);
    pthread_mutex_lock(&job->lock);
    bool removed = g_ptr_array_remove(job->images, img);
    if (removed && g_hash_table_lookup(job->by_ident, &key) == img)
        g_hash_table_remove(job->by_ident, &key);
    pthread_mutex_unlock(&job->lock);
    if (removed)
        image_unref(img);
}

/* from renamed to to: is name from itself or below it?  Returns the new name. */
static char *renamed(const char *name, const char *from, const char *to)
{
    size_t n = strlen(from);

    if (strcmp(name, from) == 0)
        return g_strdup(to);
    if (strncmp(name, from, n) == 0 && name[n] == '/')
        return g_strconcat(to, name + n, NULL);
    return NULL;
}

static GPtrArray *images_snapshot(struct mirror_job *job);

/* Give every image at or below a renamed path its new name (both ways for
 * an exchange).  Renames come one at a time (the namespace lock), so a
 * snapshot of the images will do, and the crash-safe state's updates (which
 * flush) run without the job's lock. */
static void rename_images(struct mirror_job *job, const char *a, const char *b, bool exchange)
{
    pthread_mutex_lock(&job->lock);
    g_autoptr(GPtrArray) imgs = images_snapshot(job);
    pthread_mutex_unlock(&job->lock);
    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        g_autofree char *name = image_name(img);
        g_autofree char *nn = renamed(name, a, b);
        if (!nn && exchange)
            nn = renamed(name, b, a);
        if (nn && image_set_name(img, nn) < 0)
            job_log(job, LOG_ERR, "%s: cannot record the new name in the state", nn);
    }
}

void mirror_rename_paths(struct mirror_job *job, const char *from, const char *to)
{
    rename_images(job, from, to, false);
}

void mirror_exchange_paths(struct mirror_job *job, const char *a, const char *b)
{
    rename_images(job, a, b, true);
}

/* ---- start-up scan ---------------------------------------------------------- */

static void found_file_free(gpointer p)
{
    struct found_file *f = p;

    g_free(f->path);
    g_free(f);
}

static int name_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Phase one of the start: find every regular file below dirfd (names in
 * sorted order, so that the first name of a file with several is always
 * the same one) without writing anything anywhere. */
static int scan_tree(struct mirror_job *job, int dirfd, const char *rel, GPtrArray *files,
                     GHashTable *seen, char **err)
{
    int fd = dup(dirfd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *de;
    int rc = 0;

    if (!dir) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        *err = g_strdup_printf("%s: cannot read the directory: %s", rel[0] ? rel : ".",
                               g_strerror(-rc));
        return rc;
    }
    while ((errno = 0, de = readdir(dir)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            g_ptr_array_add(names, g_strdup(de->d_name));
    if (errno != 0) {
        rc = -errno;
        *err = g_strdup_printf("%s: cannot read the directory: %s", rel[0] ? rel : ".",
                               g_strerror(errno));
    }
    closedir(dir);
    g_ptr_array_sort(names, name_cmp);

    for (guint i = 0; rc == 0 && i < names->len; i++) {
        const char *n = g_ptr_array_index(names, i);
        g_autofree char *path = rel[0] ? g_strconcat(rel, "/", n, NULL) : g_strdup(n);
        struct stat st;

        if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = -errno;
            *err = g_strdup_printf("%s: %s", path, g_strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
            if (sub < 0 && errno == EPERM)
                sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = -errno;
                *err = g_strdup_printf("%s: %s", path, g_strerror(errno));
            } else {
                rc = scan_tree(job, sub, path, files, seen, err);
                close(sub);
            }
        } else if (S_ISREG(st.st_mode)) {
            struct image_key key = {st.st_dev, st.st_ino};
            const char *first = g_hash_table_lookup(seen, &key);
            if (first) {
                /* A second name: the data is copied once, and the target
                 * gets the same second name (ns.c).  An NBD export has
                 * one name only. */
                if (target_nbd_is_uri(job->opts->target)) {
                    rc = -EOPNOTSUPP;
                    *err = g_strdup_printf("%s: a hard link of %s: an NBD target cannot have "
                                           "two names for one image",
                                           path, first);
                }
                continue;
            }
            struct found_file *f = g_new0(struct found_file, 1);
            f->path = g_strdup(path);
            f->dev = st.st_dev;
            f->ino = st.st_ino;
            g_ptr_array_add(files, f);
            struct image_key *k = g_new(struct image_key, 1);
            *k = key;
            g_hash_table_insert(seen, k, f->path);
        }
        /* Directories, symlinks, FIFOs, sockets and devices are made on
         * the target with the rest of the namespace (ns.c). */
    }
    return rc;
}

int mirror_job_new(struct mirror_options *opts, int source_dirfd, const char *source_path,
                   struct target *target, const char *state_dir, bool foreground,
                   struct mirror_logs *logs, struct mirror_job **out, char **err)
{
    struct mirror_job *job = g_new0(struct mirror_job, 1);
    int rc;

    job->opts = opts;
    job->target = target;
    job->source_path = g_strdup(source_path);
    job->state_dir = g_strdup(state_dir);
    job->source_dirfd = source_dirfd;
    job->foreground = foreground;
    job->chunk = options_chunk_size(opts);
    job->bulk_chunk = options_bulk_chunk_size(opts);
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->wake, NULL);
    pthread_cond_init(&job->manager_wake, NULL);
    job->images = g_ptr_array_new();
    job->image_hooks = (struct image_hooks){hook_work, hook_guest_waits, job};
    job->by_ident = g_hash_table_new_full(image_key_hash, image_key_equal, g_free, NULL);
    job->found = g_ptr_array_new_with_free_func(found_file_free);
    job->state = JOB_RUNNING;
    job->last_error = g_strdup("");
    job->logs = logs;
    job->rate_last_ns = now_ns();
    ratelimit_init(&job->limiter, opts->speed, job->bulk_chunk, job->rate_last_ns);
    job->copy_mode = opts->copy_mode;
    job->blocking = opts->copy_mode == COPY_MODE_WRITE_BLOCKING;
    job->auto_min_dirty = UINT64_MAX;
    job->auto_min_ns = job->rate_last_ns;
    job->resumed = "no";
    job->private_root_fd = -1;
    struct stat rst;
    if (fstat(source_dirfd, &rst) == 0)
        job->source_dev = rst.st_dev;

    g_autoptr(GHashTable) seen =
        g_hash_table_new_full(image_key_hash, image_key_equal, g_free, NULL);
    rc = scan_tree(job, source_dirfd, "", job->found, seen, err);
    if (rc < 0) {
        mirror_job_free(job);
        return rc;
    }
    *out = job;
    return 0;
}

/* Two images must never share a file on the target (a stale hard link of
 * an earlier run, opened by two names): the later one gets a new file. */
static void separate_target_files(struct mirror_job *job)
{
    g_autoptr(GHashTable) owners =
        g_hash_table_new_full(image_key_hash, image_key_equal, g_free, NULL);

    for (guint i = 0; i < job->images->len; i++) {
        struct image *img = g_ptr_array_index(job->images, i);
        struct stat st;
        int fd = image_target_dup_fd(img);
        if (fd < 0)
            continue;
        int rc = fstat(fd, &st);
        close(fd);
        if (rc < 0)
            continue;
        struct image_key key = {st.st_dev, st.st_ino};
        if (!g_hash_table_contains(owners, &key)) {
            struct image_key *k = g_new(struct image_key, 1);
            *k = key;
            g_hash_table_insert(owners, k, img);
        } else {
            g_autofree char *name = image_name(img);
            mirror_retarget_image(job, img, name);
        }
    }
}

int mirror_job_start_target(struct mirror_job *job, char **err)
{
    struct target *target = job->target;
    int rc = 0;

    if (job->opts->persist) {
        rc = persist_open(job->state_dir, job->source_path, target->description, &job->persist,
                          &job->had_state, err);
        if (rc < 0)
            return rc;
    }
    for (guint i = 0; rc == 0 && i < job->found->len; i++) {
        struct found_file *f = g_ptr_array_index(job->found, i);
        const char *leaf;
        struct stat st;
        struct image *img;
        g_autofree char *why = NULL;
        int trc;
        int dir = tree_open_parent(job->source_dirfd, f->path, false, &leaf);
        int fd = dir;

        if (dir >= 0) {
            fd = openat(dir, leaf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                fd = -errno;
            close(dir);
        }
        rc = fd < 0 ? fd : fstat(fd, &st) < 0 ? -errno : 0;
        if (rc == 0 && (st.st_dev != f->dev || st.st_ino != f->ino || !S_ISREG(st.st_mode)))
            rc = -ESTALE;
        if (rc < 0) {
            *err = g_strdup_printf("%s: %s", f->path,
                                   rc == -ESTALE ? "changed while starting" : g_strerror(-rc));
        } else {
            rc = add_image(job, f->path, fd, &st, true, false, &trc, &why, &img);
            if (rc < 0)
                *err = g_strdup_printf("target: cannot open %s there: %s", f->path,
                                       why ? why : g_strerror(-rc));
            else
                image_unref(img);
        }
        if (fd >= 0)
            close(fd);
    }
    g_ptr_array_set_size(job->found, 0);
    if (rc < 0)
        return rc;
    int tree = target_tree_fd(target);
    if (tree >= 0) {
        separate_target_files(job);
        job->ns = ns_new(job, job->source_dirfd, tree);
        g_autofree char *first = NULL;
        rc = ns_audit(job->ns, NS_REPAIR, &first);
        if (rc < 0) {
            *err = g_strdup_printf("target: %s", first);
            return rc;
        }
    }
    /* The names made on the target are durable before any guest runs: a
     * target that cannot even do that is refused at start.  Only the names:
     * the image data that is there already is flushed before its image is
     * ready, and the completion ends with a sync of everything. */
    rc = target_sync_names(target);
    if (rc < 0)
        *err = g_strdup_printf("target: cannot sync: %s", g_strerror(-rc));
    return rc;
}

void mirror_job_free(struct mirror_job *job)
{
    if (!job)
        return;
    ns_free(job->ns);
    for (guint i = 0; i < job->images->len; i++)
        image_unref(g_ptr_array_index(job->images, i));
    g_ptr_array_free(job->images, TRUE);
    g_hash_table_destroy(job->by_ident);
    g_ptr_array_free(job->found, TRUE);
    pthread_cond_destroy(&job->wake);
    pthread_cond_destroy(&job->manager_wake);
    pthread_mutex_destroy(&job->lock);
    g_free(job->worker_threads);
    g_free(job->source_path);
    g_free(job->state_dir);
    g_free(job->pause_reason);
    g_free(job->last_error);
    persist_close(job->persist);
    g_free(job);
}

/* ---- copying ----------------------------------------------------------------- */

enum copy_error_side { SIDE_SOURCE, SIDE_TARGET };

struct copy_result {
    int rc;                  /* 0 or -errno */
    enum copy_error_side side;
    bool data_written;
    bool yielded;            /* stopped for a waiting guest: not an error */
    uint64_t hole_end;       /* the run ended in a hole that goes on to here */
};

/* Wait until the speed limit lets n more bytes be copied.  The wait is cut
 * short when the limit changes (a speed-up must not wait out a debt run up
 * at 1K/s) or the job stops. */
static bool throttle(struct mirror_job *job, struct image *img, uint64_t n)
{
    bool go_on = true;

    pthread_mutex_lock(&job->lock);
    uint64_t now = now_ns();
    uint64_t until = now + ratelimit_charge(&job->limiter, n, now);
    unsigned gen = job->speed_gen;
    while (now < until && gen == job->speed_gen && !job->stopping &&
           (job->state == JOB_RUNNING || job->state == JOB_DRAINING)) {
        /* A guest operation waits for this image's copies to get out of
         * the way (a truncate, a write-blocking write): the copy gives its
         * claim back rather than make the guest wait out the limit. */
        if (image_guest_waiting(img)) {
            go_on = false;
            break;
        }
        struct timespec ts =
            cond_deadline(CLOCK_REALTIME, MIN(until - now, 100 * 1000 * 1000ull));
        pthread_cond_timedwait(&job->wake, &job->lock, &ts);
        now = now_ns();
    }
    pthread_mutex_unlock(&job->lock);
    return go_on;
}

void mirror_wake(struct mirror_job *job)
{
    pthread_mutex_lock(&job->lock);
    pthread_cond_broadcast(&job->wake);
    pthread_mutex_unlock(&job->lock);
}

#define DIRECT_ALIGN 4096

static ssize_t pread_retry(int fd, char *buf, size_t len, uint64_t off)
{
    ssize_t n;

    do {
        n = pread(fd, buf, len, (off_t)off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* Read up to len bytes of the source at off.  Returns the bytes read (0 at
 * the end) or -errno.
 *
 * With direct (the first pass), what the page cache holds is taken from it
 * without waiting (RWF_NOWAIT on the buffered fd: a source that a guest has
 * just written, dirty or not, is a memory copy away), and the rest is read
 * with O_DIRECT where the file system has it, which costs no page cache
 * and no second copy.  A direct read of cached pages would first write back
 * the dirty ones of its range and then read the disk: 0.35x of
 * `qemu-img convert` on a source still in the page cache.  For O_DIRECT,
 * off and buf are aligned to DIRECT_ALIGN and buf holds len rounded up to
 * it (a direct read takes whole blocks; what comes back beyond len is
 * cut). */
static ssize_t source_read(struct image *img, bool direct, char *buf, size_t len,
                           uint64_t off)
{
    int fd = image_source_fd(img, false);
    int direct_fd = image_source_fd(img, direct);

    if (direct_fd == fd)
        return pread_retry(fd, buf, len, off);

    struct iovec v = {.iov_base = buf, .iov_len = len};
    ssize_t n = -1;
    uint64_t pages;
    /* RWF_NOWAIT starts readahead of what is not cached, which the direct
     * read then reads a second time: a range the page cache holds nothing
     * of goes straight to O_DIRECT (with 4 MiB reads, a cold source was
     * read twice over).  Where the kernel cannot tell, the cache is tried. */
    if (page_cache_pages(fd, off, len, &pages) < 0 || pages > 0) {
        do {
            n = preadv2(fd, &v, 1, (off_t)off, RWF_NOWAIT);
        } while (n < 0 && errno == EINTR);
        if (n == (ssize_t)len)
            return n;
    }
    /* Nothing cached, EAGAIN (not cached), EOPNOTSUPP (no RWF_NOWAIT
     * here), or the cached part ended early: the rest from the first whole
     * block not read. */
    size_t got = n > 0 ? (size_t)n : 0;
    size_t from = got / DIRECT_ALIGN * DIRECT_ALIGN;
    size_t want = (len - from + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
    n = pread_retry(direct_fd, buf + from, want, off + from);
    if (n < 0)
        return n;
    size_t total = MAX(from + (size_t)n, got);
    return (ssize_t)MIN(total, len);
}

static bool all_zero(const char *buf, size_t len)
{
    return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/* The bytes one copy moves at most: more while an image's first pass runs
 * (options_bulk_chunk_size()). */
static uint64_t copy_limit(const struct mirror_job *job, bool first_pass)
{
    return first_pass ? job->bulk_chunk : job->chunk;
}

/* Copy [c->off, c->off + c->len) from source to target.  Holes and all-zero
 * blocks are not written: where the target may hold data they are zeroed
 * (a punched hole), elsewhere the target reads zero already. */
static void copy_run(struct mirror_job *job, struct image *img, const struct claim *c,
                     char *buf, struct copy_result *r)
{
    uint64_t pos = c->off, end = c->off + c->len;

    memset(r, 0, sizeof(*r));
    bool may_hold_data = c->target_may_hold_data;
    if (c->target_suspect) {
        int rc = target_zero(c->tgt, c->off, c->len);
        if (rc < 0) {
            r->rc = rc;
            r->side = SIDE_TARGET;
            return;
        }
        may_hold_data = false;
    }
    while (pos < end) {
        uint64_t seg_end = end;

        /* The first pass looks for holes; later a range is there because a
         * guest wrote it, so it is read as it is (a hole punched since
         * reads as zeroes, which are not written either). */
        if (c->first_pass) {
            off_t data = lseek(image_source_fd(img, false), (off_t)pos, SEEK_DATA);

            if (data < 0 && errno != ENXIO) {
                r->rc = -errno;
                r->side = SIDE_SOURCE;
                return;
            }
            /* ENXIO: no data from pos to the end of the file. */
            uint64_t data_at = data < 0 ? UINT64_MAX : (uint64_t)data;
            if (data_at > pos) {
                seg_end = MIN(data_at, end);
                if (may_hold_data) {
                    int rc = target_zero(c->tgt, pos, seg_end - pos);
                    if (rc < 0) {
                        r->rc = rc;
                        r->side = SIDE_TARGET;
                        return;
                    }
                }
                if (data_at > end)
                    r->hole_end = data_at;
                pos = seg_end;
                continue;
            }
            off_t hole = lseek(image_source_fd(img, false), (off_t)pos, SEEK_HOLE);
            seg_end = hole < 0 ? end : MIN((uint64_t)hole, end);
        }
        while (pos < seg_end) {
            size_t want = (size_t)MIN(seg_end - pos, copy_limit(job, c->first_pass));
            /* Charged before the read: what the limit counts is data
             * moved, so holes are free. */
            if (!throttle(job, img, want)) {
                r->rc = -EAGAIN;
                r->yielded = true;
                return;
            }
            ssize_t n = source_read(img, c->first_pass, buf, want, pos);
            int rc;

            if (n < 0) {
                r->rc = (int)n;
                r->side = SIDE_SOURCE;
                return;
            }
            if (n == 0) {
                /* The file shrank under us; the resize marks what is left. */
                return;
            }
            if (all_zero(buf, (size_t)n)) {
                rc = may_hold_data ? target_zero(c->tgt, pos, (uint64_t)n) : 0;
            } else {
                rc = target_pwrite(c->tgt, buf, (size_t)n, pos);
                if (rc == 0) {
                    r->data_written = true;
                    g_atomic_pointer_add(&job->transferred_bytes, n);
                }
            }
            if (rc < 0) {
                r->rc = rc;
                r->side = SIDE_TARGET;
                return;
            }
            pos += (uint64_t)n;
        }
    }
}

/* ---- the job's states ----------------------------------------------------------
 *
 * running -> draining -> completed, and from running or draining to failed
 * or cancelled (doc/design.md, "The job").  job_set_state() is the only
 * place the state changes: it checks the transition, does what entering
 * the state means, wakes every waiter and announces it. */

static const char *const state_names[] = {
    [JOB_RUNNING] = "running",
    [JOB_DRAINING] = "draining",
    [JOB_COMPLETED] = "completed",
    [JOB_FAILED] = "failed",
    [JOB_CANCELLED] = "cancelled",
};

static bool transition_allowed(enum job_state from, enum job_state to)
{
    switch (to) {
    case JOB_DRAINING:
        return from == JOB_RUNNING;
    case JOB_COMPLETED:
        return from == JOB_DRAINING;
    case JOB_FAILED:
    case JOB_CANCELLED:
        return from == JOB_RUNNING || from == JOB_DRAINING;
    case JOB_RUNNING:
        break;
    }
    return false;
}

static const char *job_phase(struct mirror_job *job);

/* With job->lock held: enter state `to` if the transition is allowed.
 * why: for failed, the reason.  True when the state changed. */
static bool set_state_locked(struct mirror_job *job, enum job_state to, const char *why)
{
    if (!transition_allowed(job->state, to))
        return false;
    job->state = to;
    if (to == JOB_DRAINING) {
        /* Nobody can resume a paused job once the mount is gone, nor lift
         * a speed limit: the drain runs at drain_speed. */
        job->paused = false;
        ratelimit_set_rate(&job->limiter, job->opts->drain_speed, job->bulk_chunk, now_ns());
        job->speed_gen++;
        if (job->verify_at_drain)
            g_atomic_int_set(&job->outside_lost, 1);
        /* The watch covers SOURCE's own file system: an image on another
         * one mounted below it is compared in full before completing. */
        for (guint i = 0; i < job->images->len; i++) {
            struct image *img = g_ptr_array_index(job->images, i);
            dev_t dev;
            ino_t ino;
            image_identity(img, &dev, &ino);
            if (dev != job->source_dev)
                image_note_outside_write(img);
        }
    }
    if (to == JOB_DRAINING || to == JOB_COMPLETED)
        for (guint i = 0; i < job->images->len; i++)
            image_set_phase(g_ptr_array_index(job->images, i),
                            to == JOB_DRAINING ? PHASE_DRAINING : PHASE_COMPLETED);
    pthread_cond_broadcast(&job->wake);
    pthread_cond_broadcast(&job->manager_wake);
    job->last_phase = job_phase(job);
    mirror_event(job, "phase", "%s", job->last_phase);
    if (to == JOB_FAILED)
        mirror_event(job, "failed", "%s", why);
    return true;
}

static bool job_set_state(struct mirror_job *job, enum job_state to, const char *why)
{
    pthread_mutex_lock(&job->lock);
    bool changed = set_state_locked(job, to, why);
    pthread_mutex_unlock(&job->lock);
    if (changed && to == JOB_FAILED)
        job_log(job, LOG_ERR, "job failed: %s", why);
    else if (changed && to != JOB_COMPLETED)
        job_log(job, to == JOB_CANCELLED ? LOG_WARNING : LOG_INFO, "%s%s%s", state_names[to],
                why ? ": " : "", why ? why : "");
    return changed;
}

static void fail_job(struct mirror_job *job, const char *why)
{
    job_set_state(job, JOB_FAILED, why);
}

/* Apply an error policy to msg (already reported).  Returns the time the
 * caller should back off, in microseconds (ignore), or 0. */
static uint64_t apply_policy(struct mirror_job *job, enum error_action action,
                             const char *msg, unsigned consecutive)
{
    pthread_mutex_lock(&job->lock);
    bool draining = job->state == JOB_DRAINING;
    pthread_mutex_unlock(&job->lock);
    /* Once unmounted nobody can resume or free space: stop, and endless
     * retries, become failure. */
    if (action == ERROR_ACTION_REPORT ||
        (draining && (action == ERROR_ACTION_STOP ||
                      consecutive >= DRAIN_MAX_CONSECUTIVE_ERRORS))) {
        fail_job(job, msg);
        return 0;
    }
    if (action == ERROR_ACTION_STOP) {
        pthread_mutex_lock(&job->lock);
        bool was_paused = job->paused;
        job->paused = true;
        g_free(job->pause_reason);
        job->pause_reason = g_strdup(msg);
        pthread_mutex_unlock(&job->lock);
        if (!was_paused) {
            job_log(job, LOG_WARNING, "paused after an error; resume with 'mirrorctl resume'");
            mirror_event(job, "policy", "stop: paused until resume");
        }
        return 0;
    }
    uint64_t backoff = IGNORE_BACKOFF_MIN_US << MIN(consecutive, 10u);
    backoff = MIN(backoff, (uint64_t)IGNORE_BACKOFF_MAX_US);
    mirror_event(job, "policy", "ignore: retry in %" PRIu64 " ms (failure %u in a row)",
                 backoff / 1000, consecutive);
    return backoff;
}

/* The target failed to flush (or sync): report it and apply
 * on_target_error.  What it may have lost is dirty again already. */
static void flush_failed(struct mirror_job *job, const char *msg)
{
    mirror_report_error(job, "%s", msg);
    apply_policy(job, job->opts->on_target_error, msg, ++job->flush_failures);
}

/* A failed copy; the run is dirty again already. */
static uint64_t handle_copy_error(struct mirror_job *job, struct image *img,
                                  const struct copy_result *r, uint64_t off,
                                  unsigned consecutive)
{
    enum error_action action =
        r->side == SIDE_SOURCE ? job->opts->on_source_error : job->opts->on_target_error;
    g_autofree char *name = image_name(img);
    g_autofree char *msg = g_strdup_printf(
        "%s: %s error at offset %" PRIu64 ": %s", name,
        r->side == SIDE_SOURCE ? "source read" : "target write", off, g_strerror(-r->rc));
    mirror_report_error(job, "%s", msg);
    return apply_policy(job, action, msg, consecutive);
}

static bool job_copying(const struct mirror_job *job)
{
    return !job->paused && (job->state == JOB_RUNNING || job->state == JOB_DRAINING);
}

/* With job->lock held: claim a run from some image, round-robin: dirty
 * data first, then what a verify pass has still to compare (*verify). */
static struct image *pick_work(struct mirror_job *job, struct claim *c, bool *verify,
                               bool *busy)
{
    guint n = job->images->len;
    bool done;

    *verify = false;
    *busy = false;
    for (guint k = 0; k < n; k++) {
        guint i = (job->next_image + k) % n;
        struct image *img = g_ptr_array_index(job->images, i);
        bool img_busy = false;
        uint64_t max = copy_limit(job, image_in_first_pass(img));
        if (image_claim(img, max / image_granularity(img), c, &img_busy)) {
            job->next_image = i + 1;
            return image_ref(img);
        }
        *busy |= img_busy;
    }
    for (guint k = 0; k < n; k++) {
        guint i = (job->next_image + k) % n;
        struct image *img = g_ptr_array_index(job->images, i);
        if (image_claim_verify(img, job->chunk / image_granularity(img), c, &done)) {
            job->next_image = i + 1;
            *verify = true;
            return image_ref(img);
        }
        if (done) {
            g_autofree char *name = image_name(img);
            mirror_event(job, "verify-done", "%s", name);
        }
    }
    return NULL;
}

/* Compare a verify claim's granules on source and target; the ones that
 * differ are marked dirty.  The comparison is a memcmp of what both sides
 * read: for a local target cheaper than hashing both. */
static void verify_run(struct mirror_job *job, struct image *img, const struct claim *c,
                       char *buf, char *tbuf)
{
    uint64_t g = image_granularity(img);
    g_autofree bool *differ = g_new0(bool, c->count);
    uint64_t differing = 0;

    if (!throttle(job, img, c->len)) {
        /* Compared later: nothing differs for now. */
        image_release_verify_later(img, c);
        return;
    }
    ssize_t n = c->len ? source_read(img, false, buf, c->len, c->off) : 0;
    int trc = target_pread(c->tgt, tbuf, c->len, c->off);
    for (uint64_t k = 0; k < c->count; k++) {
        uint64_t off = k * g, len = MIN(g, c->len - MIN(c->len, off));
        /* A side that cannot be read counts as different: the copier then
         * copies it and reports what fails. */
        if (n != (ssize_t)c->len || trc < 0 || memcmp(buf + off, tbuf + off, len) != 0) {
            differ[k] = true;
            differing += len;
        }
    }
    image_release_verify(img, c, differ);
    g_atomic_pointer_add(&job->verify_checked_bytes, c->len);
    if (differing)
        g_atomic_pointer_add(&job->verify_differing_bytes, differing);
}

/* A worker's copy buffer.  In 2 MiB pages where the kernel gives them: a
 * direct read or write takes one segment per physically contiguous piece
 * of its buffer, and a disk takes a bounded number of segments in one
 * request (virtio-blk here: 254), so a buffer of 4 KiB pages splits a 4 MiB
 * copy into 1 MiB requests. */
#define HUGE_PAGE (2u * 1024 * 1024)
static char *copy_buffer(size_t len)
{
    void *p = NULL;
    size_t align = len >= HUGE_PAGE ? HUGE_PAGE : 4096;
    size_t size = (len + align - 1) / align * align;

    if (posix_memalign(&p, align, size) != 0)
        g_error("out of memory for a copy buffer");
    if (align == HUGE_PAGE)
        (void)madvise(p, size, MADV_HUGEPAGE); /* advice; 4 KiB pages otherwise */
    return p;
}

static gpointer worker_main(gpointer data)
{
    struct mirror_job *job = data;
    char *buf = copy_buffer(job->bulk_chunk); /* copies */
    char *tbuf = copy_buffer(job->chunk);     /* the target's side of a verify */
    unsigned consecutive_errors = 0;

    /* This worker copied first-pass data since it last found nothing to
     * do: an image's first pass may have ended. */
    bool first_pass_work = false;

    pthread_mutex_lock(&job->lock);
    for (;;) {
        struct claim c;
        struct image *img = NULL;

        if (job->stopping)
            break;
        bool verify = false, busy = false;
        if (job_copying(job))
            img = pick_work(job, &c, &verify, &busy);
        if (!img) {
            /* Dirty granules that another worker is copying: whoever
             * releases them wakes us (they may be dirty again). */
            if (busy)
                job->busy_waiters = true;
            /* The manager makes an image ready once its first pass is
             * done: told now, not at its next tick. */
            if (first_pass_work && !busy)
                pthread_cond_broadcast(&job->manager_wake);
            first_pass_work = false;
            struct timespec until = cond_deadline(CLOCK_REALTIME, IDLE_WAIT_US * 1000ull);
            g_atomic_int_inc(&job->idle_workers);
            pthread_cond_timedwait(&job->wake, &job->lock, &until);
            g_atomic_int_dec_and_test(&job->idle_workers);
            continue;
        }
        pthread_mutex_unlock(&job->lock);

        if (verify) {
            verify_run(job, img, &c, buf, tbuf);
            image_unref(img);
            pthread_mutex_lock(&job->lock);
            continue;
        }
        struct copy_result r;
        uint64_t backoff = 0;
        first_pass_work |= c.first_pass;
        for (;;) {
            copy_run(job, img, &c, buf, &r);
            image_release(img, &c, r.rc == 0, r.data_written);
            if (r.yielded)
                break; /* gave way to a guest; the run is dirty again */
            if (r.rc < 0) {
                consecutive_errors++;
                backoff = handle_copy_error(job, img, &r, c.off, consecutive_errors);
                break;
            }
            consecutive_errors = 0;
            /* The run ended inside a hole that goes on: take the rest of the
             * hole in one claim (no data moves, so no buffer limit). */
            if (r.hole_end <= c.off + c.len)
                break;
            uint64_t next = c.first + c.count;
            uint64_t hole_granules = (MIN(r.hole_end, (uint64_t)INT64_MAX) -
                                      next * image_granularity(img)) /
                                     image_granularity(img);
            uint64_t max = MIN(hole_granules, HOLE_RUN_MAX / image_granularity(img));
            if (max == 0 || !image_claim_at(img, next, max, &c))
                break;
        }
        image_unref(img);
        if (backoff)
            g_usleep(backoff);
        pthread_mutex_lock(&job->lock);
        /* Released granules may be what another worker waits for.  Only
         * then: a wake-up after every copy costs the guest's CPUs. */
        if (job->busy_waiters) {
            job->busy_waiters = false;
            pthread_cond_broadcast(&job->wake);
        }
    }
    pthread_mutex_unlock(&job->lock);
    free(buf);
    free(tbuf);
    return NULL;
}

/* ---- phases -------------------------------------------------------------------- */

/* Make the target's copy of a clean image exact in size and durable.
 * Returns true when the image was clean before and after the flush. */
static bool flush_clean_image(struct mirror_job *job, struct image *img)
{
    struct stat st;
    int rc;

    /* The source's own size is the truth: a failed write past the end may
     * have grown what the image believed. */
    if (fstat(image_source_fd(img, false), &st) < 0 || image_is_dropped(img))
        return false;
    bool clean = image_settle(img, (uint64_t)st.st_size, &rc);
    if (clean)
        rc = mirror_flush_image(job, img);
    if (rc < 0) {
        g_autofree char *name = image_name(img);
        g_autofree char *msg =
            g_strdup_printf("%s: cannot flush the target: %s", name, g_strerror(-rc));
        /* The manager tries the next flush on a later tick, which is its
         * back-off. */
        flush_failed(job, msg);
        return false;
    }
    if (!clean)
        return false;
    job->flush_failures = 0;
    return image_is_clean(img);
}

int mirror_flush_image(struct mirror_job *job, struct image *img)
{
    int rc = image_flush(img);

    if (rc == -ESTALE) {
        /* The target reconnected since the last good flush: what was
         * written before may be gone with the old connection.  Nothing
         * failed now, and it is being copied again; not an error. */
        g_autofree char *name = image_name(img);
        mirror_event(job, "resync", "%s: the target reconnected; copying again what was "
                     "written since its last flush", name);
        return 0;
    }
    /* A file system reports a failed write-back to the file's fsync and
     * once more to the next syncfs.  This one is being handled (its data
     * is dirty again): consume the syncfs report now, so that the sync at
     * completion fails only for a new error. */
    if (rc < 0)
        (void)target_sync_all(job->target);
    return rc;
}

void mirror_preflush(struct mirror_job *job)
{
    pthread_mutex_lock(&job->lock);
    g_autoptr(GPtrArray) imgs = images_snapshot(job);
    pthread_mutex_unlock(&job->lock);
    /* A failure here is the drain's to handle: it flushes again. */
    for (guint i = 0; i < imgs->len; i++)
        if (image_has_target(g_ptr_array_index(imgs, i)))
            (void)mirror_flush_image(job, g_ptr_array_index(imgs, i));
}

/* Clear the crash-safe state of extents that have been clean and quiet for
 * quiet sweeps (one a second). */
static void sweep_state(struct mirror_job *job, GPtrArray *imgs, unsigned quiet)
{
    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        if (image_sweep_state(img, quiet) < 0)
            job_log(job, LOG_ERR, "cannot update the state in %s", job->state_dir);
    }
}

static GPtrArray *images_snapshot(struct mirror_job *job)
{
    GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)image_unref);

    for (guint i = 0; i < job->images->len; i++)
        g_ptr_array_add(a, image_ref(g_ptr_array_index(job->images, i)));
    return a;
}

/* copy_mode=auto: when the dirty bytes have not shrunk for auto_after
 * seconds, the copier is not keeping up with the guests: make their writes
 * go to the target too (the dirty bytes then only shrink).  Back to
 * background once the target is in sync. */
static void auto_copy_mode(struct mirror_job *job)
{
    uint64_t dirty = 0, size, d, f, now = now_ns();

    pthread_mutex_lock(&job->lock);
    if (job->copy_mode != COPY_MODE_AUTO || job->state != JOB_RUNNING) {
        pthread_mutex_unlock(&job->lock);
        return;
    }
    for (guint i = 0; i < job->images->len; i++) {
        image_counts(g_ptr_array_index(job->images, i), &size, &d, &f);
        dirty += d + f;
    }
    bool blocking = mirror_write_blocking(job);
    if (!blocking) {
        if (dirty < job->auto_min_dirty || dirty == 0) {
            job->auto_min_dirty = dirty;
            job->auto_min_ns = now;
        } else if (now - job->auto_min_ns >= job->opts->auto_after_s * 1000000000ull) {
            g_atomic_int_set(&job->blocking, 1);
            mirror_event(job, "copy-mode",
                         "write-blocking (auto: %" PRIu64 " dirty bytes, not shrinking for %u s)",
                         dirty, job->opts->auto_after_s);
            job_log(job, LOG_INFO, "auto: switching to write-blocking");
        }
    } else if (dirty == 0) {
        g_atomic_int_set(&job->blocking, 0);
        job->auto_min_dirty = UINT64_MAX;
        job->auto_min_ns = now;
        mirror_event(job, "copy-mode", "background (auto: in sync)");
        job_log(job, LOG_INFO, "auto: in sync, back to background");
    }
    pthread_mutex_unlock(&job->lock);
}

/* Rounds of the completion audit that may still find differences after
 * repairing them, before the job fails: a difference that comes back is
 * something the daemon cannot fix (or somebody else changing the target). */
#define AUDIT_MAX_ROUNDS 5

/* The drain's audit of the namespace and metadata: true when the trees
 * are equal, false when the manager must look again (repairs made data
 * dirty) or the job failed. */
static bool audit_tree(struct mirror_job *job)
{
    g_autofree char *first = NULL;
    uint64_t start = now_ns();
    int found = ns_audit(job->ns, NS_REPAIR | NS_FINAL, &first);

    if (found > 0)
        mirror_event(job, "audit", "repaired %d differences (the first: %s)", found, first);
    pthread_mutex_lock(&job->lock);
    bool clean = true;
    for (guint i = 0; i < job->images->len && clean; i++)
        clean = image_is_clean(g_ptr_array_index(job->images, i));
    pthread_mutex_unlock(&job->lock);
    if (found >= 0 && !clean)
        return false;
    if (found >= 0) {
        g_clear_pointer(&first, g_free);
        found = ns_audit(job->ns, NS_FINAL, &first);
    }
    if (found == 0) {
        job_log(job, LOG_INFO, "audit: source and target trees are equal (%.3f s)",
                (double)(now_ns() - start) / 1e9);
        return true;
    }
    g_autofree char *msg = found < 0 ? g_strdup_printf("audit: %s", first)
                                     : g_strdup_printf("audit: the target differs: %s", first);
    mirror_report_error(job, "%s", msg);
    if (++job->audit_rounds >= AUDIT_MAX_ROUNDS)
        fail_job(job, msg);
    return false;
}

void mirror_request_cancel(struct mirror_job *job)
{
    if (job)
        job->cancel_requested = 1;
}

static void verify_outside_writes(struct mirror_job *job, GPtrArray *imgs);

/* Running: retry images the target had no place for, flush what was
 * copied every second (and sweep the crash-safe state), and declare each
 * image ready once it is clean, flushed and still clean. */
static void manager_running(struct mirror_job *job, GPtrArray *imgs, uint64_t now)
{
    if (now - job->last_target_retry_ns >= TARGET_RETRY_NS) {
        job->last_target_retry_ns = now;
        retry_missing_targets(job, imgs);
    }
    if (now - job->last_periodic_flush_ns >= PERIODIC_FLUSH_NS) {
        job->last_periodic_flush_ns = now;
        for (guint i = 0; i < imgs->len; i++) {
            struct image *img = g_ptr_array_index(imgs, i);
            if (!image_has_unflushed(img))
                continue;
            int rc = mirror_flush_image(job, img);
            if (rc < 0) {
                g_autofree char *name = image_name(img);
                g_autofree char *msg = g_strdup_printf("%s: cannot flush the target: %s",
                                                       name, g_strerror(-rc));
                flush_failed(job, msg);
            } else {
                job->flush_failures = 0;
            }
        }
        sweep_state(job, imgs, STATE_QUIET_SWEEPS);
    }
    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        if (image_phase(img) == PHASE_BULK && flush_clean_image(job, img) &&
            image_become_ready(img)) {
            g_autofree char *name = image_name(img);
            mirror_event(job, "image-ready", "%s", name);
        }
    }
    bool all_ready = true;
    for (guint i = 0; i < imgs->len && all_ready; i++)
        all_ready = image_phase(g_ptr_array_index(imgs, i)) == PHASE_READY;
    bool report = all_ready && !job->all_ready_reported;
    job->all_ready_reported = all_ready;
    if (report)
        job_log(job, LOG_INFO, "ready: the target has caught up");
}

/* Draining (no guest can write any more): once everything is clean, flush
 * every image, audit the namespace, make it all durable, make sure no write
 * behind the mount is still unaccounted for, and complete. */
static void manager_draining(struct mirror_job *job, GPtrArray *imgs)
{
    /* An image still without a place on the target gets one last try. */
    retry_missing_targets(job, imgs);
    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        if (image_needs_target(img)) {
            g_autofree char *name = image_name(img);
            g_autofree char *msg =
                g_strdup_printf("%s: never mirrored: the target has no place for it", name);
            mirror_report_error(job, "%s", msg);
            fail_job(job, msg);
            return;
        }
    }
    for (guint i = 0; i < imgs->len; i++)
        if (!image_is_clean(g_ptr_array_index(imgs, i)))
            return;
    for (guint i = 0; i < imgs->len; i++)
        if (!flush_clean_image(job, g_ptr_array_index(imgs, i)))
            return;
    /* Every image is a flushed copy: now the namespace and metadata (ns.c),
     * compared, repaired, and compared again.  A repair may make data dirty
     * (a target file that was lost, a size that does not match), which is
     * copied before the next look. */
    if (job->ns && !audit_tree(job))
        return;
    /* Every image was flushed without error just now; this makes the names
     * and the metadata the audit set durable: for a directory target an
     * fsync of every directory and file of the tree (not syncfs, whose
     * cost is the whole file system's dirty data, other programs' too).
     * Its error may also be an old one of data that was flushed again
     * since, so it gets the policy and another try. */
    int rc = target_sync_tree(job->target);
    if (rc < 0) {
        g_autofree char *msg = g_strdup_printf("cannot sync the target: %s", g_strerror(-rc));
        flush_failed(job, msg);
        return;
    }
    /* Every write behind the mount that returned by now has been reported:
     * if one was, it is compared before completing. */
    if (job->watch && watch_flush(job->watch) < 0)
        g_atomic_int_set(&job->outside_lost, 1);
    for (guint i = 0; i < imgs->len; i++)
        if (image_take_outside_write(g_ptr_array_index(imgs, i))) {
            image_start_verify(g_ptr_array_index(imgs, i));
            return;
        }
    if (g_atomic_int_get(&job->outside_lost))
        return;
    /* Everything is a flushed copy: the state says so for a restart. */
    sweep_state(job, imgs, 0);
    job_set_state(job, JOB_COMPLETED, NULL);
}

static void manager_tick(struct mirror_job *job)
{
    if (job->cancel_requested) {
        job->cancel_requested = 0;
        if (job_set_state(job, JOB_CANCELLED, "signal"))
            mirror_event(job, "ctl", "cancel (signal)");
    }
    pthread_mutex_lock(&job->lock);
    enum job_state state = job->state;
    bool copying = job_copying(job);
    g_autoptr(GPtrArray) imgs = images_snapshot(job);

    uint64_t now = now_ns();
    if (now - job->rate_last_ns >= 1000000000ull) {
        uint64_t t = g_atomic_pointer_get(&job->transferred_bytes);
        job->rate_bytes_per_s =
            (uint64_t)((double)(t - job->rate_last_bytes) * 1e9 / (double)(now - job->rate_last_ns));
        job->rate_last_bytes = t;
        job->rate_last_ns = now;
    }
    pthread_mutex_unlock(&job->lock);
    if (!copying)
        return;
    verify_outside_writes(job, imgs);
    if (state == JOB_RUNNING)
        manager_running(job, imgs, now);
    else if (state == JOB_DRAINING)
        manager_draining(job, imgs);
}

/* An event for each change of the job's phase. */
static void announce_phase(struct mirror_job *job)
{
    pthread_mutex_lock(&job->lock);
    const char *phase = job_phase(job);
    if (!job->last_phase || strcmp(phase, job->last_phase) != 0) {
        job->last_phase = phase;
        mirror_event(job, "phase", "%s", phase);
    }
    pthread_mutex_unlock(&job->lock);
}

static gpointer manager_main(gpointer data)
{
    struct mirror_job *job = data;

    for (;;) {
        pthread_mutex_lock(&job->lock);
        bool stop = job->stopping;
        pthread_mutex_unlock(&job->lock);
        if (stop)
            break;
        announce_phase(job);
        manager_tick(job);
        auto_copy_mode(job);
        announce_phase(job);
        /* A change of the job's state (a drain that starts) wakes it. */
        pthread_mutex_lock(&job->lock);
        struct timespec until = cond_deadline(
            CLOCK_REALTIME, job->state == JOB_DRAINING ? MANAGER_DRAIN_TICK_NS : MANAGER_TICK_NS);
        if (!job->stopping)
            pthread_cond_timedwait(&job->manager_wake, &job->lock, &until);
        pthread_mutex_unlock(&job->lock);
    }
    return NULL;
}

/* The watcher's report of a write behind the mount (its thread, or the
 * manager's in watch_flush()): the image is compared again in full.  Any
 * file of SOURCE's file system comes here; only images count. */
static void on_outside_write(void *ctx, dev_t dev, ino_t ino, pid_t pid)
{
    struct mirror_job *job = ctx;

    if (dev == 0 && ino == 0) {
        if (g_atomic_int_compare_and_exchange(&job->outside_lost, 0, 1))
            mirror_event(job, "outside-write", "events lost: every image is compared again");
        return;
    }
    struct image *img = mirror_find_image(job, dev, ino);
    if (!img)
        return;
    g_atomic_pointer_add(&job->outside_writes, 1);
    if (image_note_outside_write(img)) {
        g_autofree char *name = image_name(img);
        g_autofree char *commf = g_strdup_printf("/proc/%d/comm", (int)pid);
        g_autofree char *comm = NULL;
        if (!g_file_get_contents(commf, &comm, NULL, NULL))
            comm = g_strdup("?");
        g_strchomp(comm);
        mirror_event(job, "outside-write",
                     "%s: written behind the mount by pid %d (%s); compared again in full",
                     name, (int)pid, comm);
    }
    image_unref(img);
}

/* Images written behind the mount get a verify pass (manager). */
static void verify_outside_writes(struct mirror_job *job, GPtrArray *imgs)
{
    bool all = g_atomic_int_compare_and_exchange(&job->outside_lost, 1, 0);

    for (guint i = 0; i < imgs->len; i++) {
        struct image *img = g_ptr_array_index(imgs, i);
        if (image_take_outside_write(img) || all)
            image_start_verify(img);
    }
}

void mirror_start(struct mirror_job *job)
{
    unsigned n = job->opts->workers;
    g_autofree char *werr = NULL;

    if (watch_start(job->source_dirfd, job->private_root_fd, on_outside_write, job, &job->watch,
                    &werr) < 0) {
        /* Then nobody can tell whether the images were written behind the
         * mount: every one is compared before the job completes. */
        job->verify_at_drain = true;
        job_log(job, LOG_WARNING, "writes behind the mount are not watched (%s): every image "
                "is compared in full before the job completes", werr);
        mirror_event(job, "unwatched", "%s", werr);
    }

    job->worker_threads = g_new0(GThread *, n);
    for (unsigned i = 0; i < n; i++)
        job->worker_threads[i] = g_thread_new("mirror-copy", worker_main, job);
    job->manager_thread = g_thread_new("mirror-manager", manager_main, job);
}

static const char *job_phase(struct mirror_job *job)
{
    switch (job->state) {
    case JOB_COMPLETED:
        return "completed";
    case JOB_FAILED:
        return "failed";
    case JOB_CANCELLED:
        return "cancelled";
    case JOB_DRAINING:
        return "draining";
    case JOB_RUNNING:
        break;
    }
    if (job->paused)
        return "paused";
    enum image_phase least = PHASE_READY;
    for (guint i = 0; i < job->images->len; i++) {
        struct image *img = g_ptr_array_index(job->images, i);
        enum image_phase p = image_phase(img);
        if (p < least)
            least = p;
    }
    return image_phase_name(least);
}

static int job_exit_code(const struct mirror_job *job)
{
    switch (job->state) {
    case JOB_COMPLETED:
        return 0;
    case JOB_CANCELLED:
        return 2;
    default:
        return 3;
    }
}

void mirror_snapshot(struct mirror_job *job, struct status_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&job->lock);
    s->phase = job_phase(job);
    s->pid = getpid();
    s->source = g_strdup(job->source_path);
    s->target = g_strdup(job->target->description);
    s->copy_mode = copy_mode_name(job->copy_mode);
    s->active_copy_mode = mirror_write_blocking(job) ? "write-blocking" : "background";
    s->n_images = job->images->len;
    s->images = job->images->len;
    s->image = g_new0(struct image_status, s->n_images);
    for (guint i = 0; i < job->images->len; i++) {
        struct image *img = g_ptr_array_index(job->images, i);
        struct image_status *is = &s->image[i];
        image_status(img, is);
        s->total_bytes += is->size;
        s->dirty_bytes += is->dirty;
        s->in_flight_bytes += is->in_flight;
        s->copied_bytes += is->copied;
    }
    s->transferred_bytes = g_atomic_pointer_get(&job->transferred_bytes);
    s->rate_bytes_per_s = job->rate_bytes_per_s;
    uint64_t left = s->dirty_bytes + s->in_flight_bytes;
    s->eta_s = left == 0 ? 0 : job->rate_bytes_per_s ? (int64_t)(left / job->rate_bytes_per_s) : -1;
    s->guest_write_bytes = g_atomic_pointer_get(&job->guest_write_bytes);
    s->errors = g_atomic_pointer_get(&job->errors);
    s->last_error = g_strdup(job->pause_reason && job->paused ? job->pause_reason
                                                               : job->last_error);
    s->state_dir = g_strdup(job->state_dir);
    s->speed_bytes_per_s = job->limiter.rate;
    s->resumed = job->resumed;
    s->resume_saved_bytes = job->resume_saved_bytes;
    s->verify_checked_bytes = g_atomic_pointer_get(&job->verify_checked_bytes);
    s->verify_differing_bytes = g_atomic_pointer_get(&job->verify_differing_bytes);
    s->mirrored = job->ns || !job->target ? "data, namespace, metadata" : "data";
    s->outside_writes = g_atomic_pointer_get(&job->outside_writes);
    s->serving = g_strdup(job->source_path);
    s->pivot_pause_ms = -1;
    s->verifying = false;
    for (guint i = 0; i < job->images->len; i++)
        s->verifying |= image_is_verifying(g_ptr_array_index(job->images, i));
    bool done = job->state == JOB_COMPLETED || job->state == JOB_CANCELLED ||
                job->state == JOB_FAILED;
    s->exit_code = done && job->stopping ? job_exit_code(job) : -1;
    pthread_mutex_unlock(&job->lock);
}

/* With job->lock held.  auto starts in background and restarts its clock. */
static void set_copy_mode_locked(struct mirror_job *job, enum copy_mode m)
{
    job->copy_mode = m;
    g_atomic_int_set(&job->blocking, m == COPY_MODE_WRITE_BLOCKING);
    job->auto_min_dirty = UINT64_MAX;
    job->auto_min_ns = now_ns();
}

int mirror_control(struct mirror_job *job, const char *line, char **err)
{
    g_autofree char *cmd = g_strstrip(g_strdup(line));
    g_autoptr(GPtrArray) verify = NULL;
    int rc = 0;

    *err = NULL;
    if (cmd[0] == '\0')
        return 0;
    pthread_mutex_lock(&job->lock);
    if (strcmp(cmd, "pause") == 0) {
        job->paused = true;
        g_free(job->pause_reason);
        job->pause_reason = NULL;
    } else if (strcmp(cmd, "resume") == 0) {
        job->paused = false;
        g_free(job->pause_reason);
        job->pause_reason = NULL;
    } else if (g_str_has_prefix(cmd, "speed ") || g_str_has_prefix(cmd, "speed\t")) {
        const char *arg = cmd + 6;
        while (g_ascii_isspace(*arg))
            arg++;
        uint64_t rate;
        if (parse_size(arg, &rate) < 0) {
            *err = g_strdup_printf("ctl: speed %s: expected bytes per second with K, M or G "
                                   "suffix (0 = unlimited)",
                                   arg);
            set_last_error_locked(job, *err);
            rc = -EINVAL;
        } else {
            ratelimit_set_rate(&job->limiter, rate, job->bulk_chunk, now_ns());
            job->speed_gen++;
        }
    } else if (g_str_has_prefix(cmd, "copy-mode ") || g_str_has_prefix(cmd, "copy-mode\t")) {
        const char *arg = cmd + 10;
        while (g_ascii_isspace(*arg))
            arg++;
        enum copy_mode m;
        if (copy_mode_parse(arg, &m) < 0) {
            *err = g_strdup_printf("ctl: copy-mode %s: expected background, write-blocking "
                                   "or auto",
                                   arg);
            set_last_error_locked(job, *err);
            rc = -EINVAL;
        } else {
            set_copy_mode_locked(job, m);
        }
    } else if (strcmp(cmd, "verify") == 0) {
        /* Compare the whole target with the source while the job runs;
         * what differs is copied again (and counted in status).  Started
         * below, without the job's lock: an image wakes the workers. */
        verify = images_snapshot(job);
    } else if (strcmp(cmd, "cancel") == 0) {
        set_state_locked(job, JOB_CANCELLED, NULL);
    } else {
        *err = g_strdup_printf("ctl: unknown or unsupported command '%s'", cmd);
        set_last_error_locked(job, *err);
        rc = -EINVAL;
    }
    pthread_cond_broadcast(&job->wake);
    pthread_mutex_unlock(&job->lock);
    for (guint i = 0; verify && i < verify->len; i++)
        image_start_verify(g_ptr_array_index(verify, i));
    if (rc == 0) {
        job_log(job, LOG_INFO, "ctl: %s", cmd);
        mirror_event(job, "ctl", "%s", cmd);
    }
    return rc;
}

static void write_result(struct mirror_job *job)
{
    struct status_snapshot s;
    g_autofree char *text = NULL;
    g_autofree char *path = g_build_filename(job->state_dir, "result", NULL);
    g_autoptr(GError) gerr = NULL;

    mirror_snapshot(job, &s);
    text = status_format_text(&s);
    status_snapshot_clear(&s);
    /* g_file_set_contents writes a temporary file, fsyncs it and renames it
     * over the old one: a reader never sees half a result. */
    if (!g_file_set_contents(path, text, -1, &gerr))
        job_log(job, LOG_ERR, "cannot record the result: %s", gerr->message);
}

int mirror_pivot_check(struct mirror_job *job, char **err)
{
    const char *phase;

    *err = NULL;
    pthread_mutex_lock(&job->lock);
    phase = job_phase(job);
    if (!job->ns)
        *err = g_strdup_printf("pivot: the target %s is an NBD export, not a directory: the "
                               "guests cannot be served from it",
                               job->target->description);
    else if (job->state != JOB_RUNNING || job->paused || strcmp(phase, "ready") != 0)
        *err = g_strdup_printf("pivot: the job is %s, not ready%s", phase,
                               job->paused ? " (resume it first)" : "");
    if (*err)
        set_last_error_locked(job, *err);
    pthread_mutex_unlock(&job->lock);
    return *err ? -EINVAL : 0;
}

void mirror_set_last_error(struct mirror_job *job, const char *msg)
{
    pthread_mutex_lock(&job->lock);
    set_last_error_locked(job, msg);
    pthread_mutex_unlock(&job->lock);
}

bool mirror_is_over(struct mirror_job *job)
{
    pthread_mutex_lock(&job->lock);
    bool over = job->state == JOB_FAILED || job->state == JOB_CANCELLED ||
                job->state == JOB_COMPLETED;
    pthread_mutex_unlock(&job->lock);
    return over;
}

int mirror_finish(struct mirror_job *job, enum mirror_end how)
{
    bool cancel = how == MIRROR_END_UNMOUNT && job->opts->on_unmount == UNMOUNT_CANCEL;

    job_set_state(job, cancel ? JOB_CANCELLED : JOB_DRAINING,
                  how == MIRROR_END_PIVOT ? "pivot"
                  : how == MIRROR_END_REPLACED ? "replaced by a new job"
                  : cancel ? "unmounted (on_unmount=cancel)" : "unmounted");
    pthread_mutex_lock(&job->lock);
    while (job->state == JOB_DRAINING)
        pthread_cond_wait(&job->wake, &job->lock);
    job->stopping = true;
    pthread_cond_broadcast(&job->wake);
    pthread_cond_broadcast(&job->manager_wake);
    pthread_mutex_unlock(&job->lock);

    for (unsigned i = 0; i < job->opts->workers; i++)
        if (job->worker_threads && job->worker_threads[i])
            g_thread_join(job->worker_threads[i]);
    if (job->manager_thread)
        g_thread_join(job->manager_thread);
    watch_stop(job->watch);
    job->watch = NULL;

    int code = job_exit_code(job);
    write_result(job);
    job_log(job, code == 0 ? LOG_INFO : LOG_ERR, "%s (exit code %d)",
            code == 0 ? "completed: the target is an exact copy"
                      : job->state == JOB_CANCELLED ? "cancelled: the target may be inconsistent"
                                                    : "failed",
            code);
    return code;
}
