/* watch.c - writers of SOURCE's files outside the mount (see watch.h). */
#include "config.h"

#include "watch.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* What d_path() appends to the name of a dentry that was unlinked. */
#define DELETED_SUFFIX " (deleted)"

/* ---- open writers at start ---------------------------------------------- */

void watch_opener_free(struct watch_opener *o)
{
    if (!o)
        return;
    g_free(o->comm);
    g_free(o->path);
    g_free(o);
}

guint watch_file_hash(gconstpointer key)
{
    const struct watch_file *f = key;
    guint64 ino = f->ino;
    return g_int64_hash(&ino) ^ (guint)f->dev;
}

gboolean watch_file_equal(gconstpointer a, gconstpointer b)
{
    const struct watch_file *x = a, *y = b;
    return x->dev == y->dev && x->ino == y->ino;
}

GHashTable *watch_file_set_new(void)
{
    return g_hash_table_new_full(watch_file_hash, watch_file_equal, g_free, NULL);
}

void watch_file_set_add(GHashTable *set, dev_t dev, ino_t ino)
{
    struct watch_file *f = g_new(struct watch_file, 1);
    f->dev = dev;
    f->ino = ino;
    g_hash_table_add(set, f);
}

struct scan {
    const char *root;
    GHashTable *files; /* may be NULL */
    GPtrArray *out;
};

/* The identity and link count of the file a /proc magic link (or any
 * path) leads to, in *st.  From the attributes the kernel has cached: the
 * server of a network file system is not asked, so that a hung one does
 * not hang the scan.  false when it is gone. */
static bool file_id(const char *path, struct stat *st)
{
    struct statx stx;

    if (statx(AT_FDCWD, path, AT_STATX_DONT_SYNC, STATX_INO | STATX_NLINK, &stx) < 0)
        return false;
    memset(st, 0, sizeof(*st));
    st->st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    st->st_ino = stx.stx_ino;
    st->st_nlink = stx.stx_nlink;
    return true;
}

/* Whether the file that name (a /proc link text, a maps path or a loop
 * device's backing_file) stands for is one the caller mirrors.  st is the
 * file's identity, or NULL when it could not be had.
 *
 * d_path() appends " (deleted)" to a name that was unlinked.  A name that
 * really ends so is told apart by looking it up.  An unlinked name that
 * was below root still counts while the file has a link left: that link
 * is most likely below root too (hard links between images), and a false
 * report costs a verify where a missed one costs a wrong copy. */
static bool is_source_file(const struct scan *s, const char *name, const struct stat *st)
{
    if (name[0] != '/')
        return false; /* socket:[..], pipe:[..], anon_inode:.. */
    if (st && s->files &&
        g_hash_table_contains(s->files, &(struct watch_file){st->st_dev, st->st_ino}))
        return true;
    if (!g_str_has_suffix(name, DELETED_SUFFIX))
        return path_is_within(s->root, name);

    struct stat now;
    if (st && file_id(name, &now) && now.st_dev == st->st_dev && now.st_ino == st->st_ino)
        return path_is_within(s->root, name);
    if (st && st->st_nlink == 0)
        return false;
    g_autofree char *was = g_strndup(name, strlen(name) - strlen(DELETED_SUFFIX));
    return path_is_within(s->root, was);
}

/* Whether to stat the file before is_source_file(): only when it can tell. */
static bool want_stat(const struct scan *s, const char *name)
{
    return name[0] == '/' && (s->files || g_str_has_suffix(name, DELETED_SUFFIX));
}

/* seen: the paths already reported for this process (NULL: none kept). */
static void add_opener(const struct scan *s, GHashTable *seen, pid_t pid,
                       const char *comm, const char *path)
{
    if (seen) {
        if (g_hash_table_contains(seen, path))
            return;
        g_hash_table_add(seen, g_strdup(path));
    }
    struct watch_opener *o = g_new0(struct watch_opener, 1);
    o->pid = pid;
    o->comm = g_strdup(comm);
    o->path = g_strdup(path);
    g_ptr_array_add(s->out, o);
}

/* Whether fd n of pid is open for writing, per its fdinfo "flags:" line. */
static bool fd_is_writable(const char *pid, const char *n)
{
    g_autofree char *fdinfo = g_strdup_printf("/proc/%s/fdinfo/%s", pid, n);
    g_autofree char *text = NULL;
    unsigned flags;

    if (!g_file_get_contents(fdinfo, &text, NULL, NULL))
        return false; /* closed meanwhile */
    const char *line = strstr(text, "flags:");
    if (!line || sscanf(line, "flags: %o", &flags) != 1)
        return false;
    return (flags & O_ACCMODE) == O_WRONLY || (flags & O_ACCMODE) == O_RDWR;
}

static void scan_fds(const struct scan *s, const char *pid, const char *comm,
                     GHashTable *seen)
{
    g_autofree char *dirpath = g_strdup_printf("/proc/%s/fd", pid);
    DIR *d = opendir(dirpath);
    struct dirent *e;

    if (!d)
        return; /* gone, or not ours to read */
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        g_autofree char *link = g_strdup_printf("%s/%s", dirpath, e->d_name);
        char name[PATH_MAX];
        ssize_t len = readlink(link, name, sizeof(name) - 1);
        if (len <= 0)
            continue;
        name[len] = '\0';
        struct stat st, *stp = NULL;
        if (want_stat(s, name)) {
            if (!file_id(link, &st))
                continue; /* closed meanwhile */
            stp = &st;
        }
        if (is_source_file(s, name, stp) && fd_is_writable(pid, e->d_name))
            add_opener(s, seen, (pid_t)atoi(pid), comm, name);
    }
    closedir(d);
}

static void scan_maps(const struct scan *s, const char *pid, const char *comm,
                      GHashTable *seen)
{
    g_autofree char *maps = g_strdup_printf("/proc/%s/maps", pid);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(maps, &text, NULL, NULL))
        return;
    for (char *line = text, *next; line && *line; line = next) {
        unsigned long start, end, ino;
        unsigned major, minor;
        char perms[5];
        int at = 0;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (sscanf(line, "%lx-%lx %4s %*x %x:%x %lu %n", &start, &end, perms, &major,
                   &minor, &ino, &at) < 6 ||
            at == 0)
            continue;
        /* Only a shared writable mapping writes to the file; a private one
         * ("rw-p") writes to copies of its pages. */
        if (perms[1] != 'w' || perms[3] != 's')
            continue;
        const char *name = line + at;
        if (name[0] != '/')
            continue; /* [anon:..], anonymous shared memory */
        struct stat st, *stp = NULL;
        if (want_stat(s, name)) {
            g_autofree char *mf =
                g_strdup_printf("/proc/%s/map_files/%lx-%lx", pid, start, end);
            if (file_id(mf, &st)) {
                stp = &st;
            } else {
                /* map_files wants CAP_SYS_ADMIN; maps has the identity, if
                 * not the link count. */
                memset(&st, 0, sizeof(st));
                st.st_dev = makedev(major, minor);
                st.st_ino = ino;
                st.st_nlink = 1;
                stp = &st;
            }
        }
        if (is_source_file(s, name, stp))
            add_opener(s, seen, (pid_t)atoi(pid), comm, name);
    }
}

/* Loop devices hold their backing file open in the kernel, with no fd in
 * any process: a guest's image attached with losetup is written by no
 * process the scan above would see. */
static void scan_loops(const struct scan *s)
{
    DIR *d = opendir("/sys/block");
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!g_str_has_prefix(e->d_name, "loop"))
            continue;
        g_autofree char *bf =
            g_strdup_printf("/sys/block/%s/loop/backing_file", e->d_name);
        g_autofree char *ro = g_strdup_printf("/sys/block/%s/ro", e->d_name);
        g_autofree char *name = NULL, *rotext = NULL;
        if (!g_file_get_contents(bf, &name, NULL, NULL))
            continue; /* not attached */
        g_strchomp(name);
        if (g_file_get_contents(ro, &rotext, NULL, NULL) && rotext[0] == '1')
            continue;

        struct stat st, *stp = NULL;
        g_autofree char *node = g_strdup_printf("/dev/%s", e->d_name);
        int fd = open(node, O_RDONLY | O_CLOEXEC);
        struct loop_info64 info;
        if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
            memset(&st, 0, sizeof(st));
            st.st_dev = (dev_t)info.lo_device;
            st.st_ino = (ino_t)info.lo_inode;
            st.st_nlink = 1; /* unknown: assume it still has a name */
            stp = &st;
        }
        if (fd >= 0)
            close(fd);
        if (is_source_file(s, name, stp))
            add_opener(s, NULL, 0, e->d_name, name);
    }
    closedir(d);
}

int watch_find_writers_ino(const char *root, GHashTable *files, GPtrArray **out,
                           char **err)
{
    struct scan s = {root, files, NULL};
    g_autofree char *self = g_strdup_printf("%d", (int)getpid());
    DIR *proc = opendir("/proc");
    struct dirent *e;

    if (!proc) {
        int rc = -errno;
        *err = g_strdup_printf("/proc: %s", g_strerror(-rc));
        return rc;
    }
    s.out = g_ptr_array_new_with_free_func((GDestroyNotify)watch_opener_free);
    while ((e = readdir(proc))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' || strcmp(e->d_name, self) == 0)
            continue;
        g_autofree char *commpath = g_strdup_printf("/proc/%s/comm", e->d_name);
        g_autofree char *comm = NULL;
        if (!g_file_get_contents(commpath, &comm, NULL, NULL))
            continue; /* exited */
        g_strchomp(comm);
        g_autoptr(GHashTable) seen =
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        scan_fds(&s, e->d_name, comm, seen);
        scan_maps(&s, e->d_name, comm, seen);
    }
    closedir(proc);
    scan_loops(&s);
    *out = s.out;
    return 0;
}

int watch_find_writers(const char *root, GPtrArray **out, char **err)
{
    return watch_find_writers_ino(root, NULL, out, err);
}

/* ---- writes during the job ---------------------------------------------- */

/* What is watched.  FAN_MODIFY comes with every write, truncate and
 * fallocate; FAN_CLOSE_WRITE with the last close of a file opened for
 * writing, the only event a write through a shared mapping leads to. */
#define WATCH_MASK (FAN_MODIFY | FAN_CLOSE_WRITE)

/* How long the thread lets events gather after reading some. */
#define WATCH_BATCH_MS 10

struct watch {
    int fan;      /* the fanotify group */
    int mount_fd; /* a directory fd on the file system, to open handles */
    int wake;     /* eventfd: watch_stop() wants the thread to end */
    pid_t self;
    watch_fn fn;
    void *ctx;
    pthread_t thread;
    int failed;              /* the group failed: no events any more (read_lock) */
    pthread_mutex_t read_lock; /* reading the queue: the thread, or watch_flush() */
    uint64_t buf[4096]; /* events, read under read_lock (8-byte aligned) */
};

int watch_private_root(const char *path, int *fd_out, char **err)
{
    /* glibc 2.36 has no wrapper.  AT_RECURSIVE: the clone holds what is
     * mounted below path too, or the daemon would see the directories
     * under those mounts instead of them.  Writes through such a submount's
     * clone carry no ignore mark: on SOURCE's file system (a bind mount)
     * they cost an event each, on another file system none (it is not
     * watched). */
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);

    if (fd < 0) {
        int rc = -errno;
        *err = g_strdup_printf("%s: cannot clone the mount: %s", path, g_strerror(-rc));
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/* The file an event's handle names, in *st.  0, or -errno: -ESTALE when the
 * file is gone. */
static int handle_stat(struct watch *w, struct file_handle *fh, struct stat *st)
{
    int fd = open_by_handle_at(w->mount_fd, fh, O_PATH | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, st) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* The file handle in an event's info records, or NULL. */
static struct file_handle *event_handle(const struct fanotify_event_metadata *m)
{
    const char *p = (const char *)m + m->metadata_len;
    const char *end = (const char *)m + m->event_len;

    while (p + sizeof(struct fanotify_event_info_header) <= end) {
        const struct fanotify_event_info_header *h = (const void *)p;
        if (h->len < sizeof(*h) || p + h->len > end)
            return NULL;
        if (h->info_type == FAN_EVENT_INFO_TYPE_FID &&
            h->len >= sizeof(struct fanotify_event_info_fid) + sizeof(struct file_handle))
            return (struct file_handle *)((struct fanotify_event_info_fid *)p)->handle;
        p += h->len;
    }
    return NULL;
}

static void handle_event(struct watch *w, const struct fanotify_event_metadata *m)
{
    if (m->mask & FAN_Q_OVERFLOW) {
        w->fn(w->ctx, 0, 0, 0);
        return;
    }
    /* This process's own writes (the daemon's, to its state files or a
     * target on the same file system) are the bulk: drop them before the
     * handle costs an open. */
    if (m->pid == w->self)
        return;
    struct file_handle *fh = event_handle(m);
    struct stat st;
    int rc = fh ? handle_stat(w, fh, &st) : -EINVAL;
    if (rc == -ESTALE || rc == -ENOENT)
        return; /* unlinked since: no longer a source file */
    if (rc < 0)
        w->fn(w->ctx, 0, 0, 0); /* a write to a file we cannot tell */
    else
        w->fn(w->ctx, st.st_dev, st.st_ino, m->pid);
}

/* Read and report what is queued: 1 when something was, 0 when nothing
 * was, -1 when the group failed. */
static int read_events(struct watch *w)
{
    ssize_t n = read(w->fan, w->buf, sizeof(w->buf));

    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    /* FAN_EVENT_NEXT() counts its length argument down: give it a copy. */
    ssize_t left = n;
    const struct fanotify_event_metadata *m = (const void *)w->buf;
    for (; FAN_EVENT_OK(m, left); m = FAN_EVENT_NEXT(m, left)) {
        if (m->vers != FANOTIFY_METADATA_VERSION)
            continue;
        /* FAN_REPORT_FID events carry no fd; close any all the same, so
         * that no event can leak one. */
        if (m->fd >= 0)
            close(m->fd);
        handle_event(w, m);
    }
    return n > 0;
}

/* Read the queue empty, under read_lock.  -1 when the group failed (fn
 * was told, once). */
static int drain_events(struct watch *w)
{
    int rc = 0;

    pthread_mutex_lock(&w->read_lock);
    if (!w->failed) {
        while ((rc = read_events(w)) > 0)
            ;
        if (rc < 0) {
            w->failed = 1;
            w->fn(w->ctx, 0, 0, 0); /* what the queue still held is lost */
        }
    }
    rc = w->failed ? -1 : 0;
    pthread_mutex_unlock(&w->read_lock);
    return rc;
}

int watch_flush(struct watch *w)
{
    return drain_events(w) < 0 ? -EIO : 0;
}

static void *watch_thread(void *arg)
{
    struct watch *w = arg;
    int rc = 0;

    while (rc >= 0) {
        struct pollfd p[2] = {{w->fan, POLLIN, 0}, {w->wake, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        rc = drain_events(w);
        /* Let the next events gather: the kernel merges those of one
         * process on one file while they are unread, so that a stream of
         * writes (this process's own, to files outside the private root)
         * costs one read per pause, not one wakeup per write. */
        if (poll(&p[1], 1, WATCH_BATCH_MS) != 0)
            break;
    }
    /* The kernel queues a write's event before the write returns: what was
     * written before watch_stop() was called is in the queue now. */
    drain_events(w);
    return NULL;
}

static void watch_free(struct watch *w)
{
    if (w->fan >= 0)
        close(w->fan);
    if (w->mount_fd >= 0)
        close(w->mount_fd);
    if (w->wake >= 0)
        close(w->wake);
    pthread_mutex_destroy(&w->read_lock);
    g_free(w);
}

/* Say which of the things watch_start() needs is missing, by the errno of
 * the step that failed. */
static int start_failed(struct watch *w, int rc, const char *what, char **err)
{
    const char *why;

    switch (-rc) {
    case EPERM:
        why = "not permitted (needs CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH)";
        break;
    case ENOSYS:
        why = "the kernel has no fanotify";
        break;
    default:
        why = g_strerror(-rc);
        break;
    }
    *err = g_strdup_printf("fanotify: %s: %s", what, why);
    watch_free(w);
    return rc;
}

int watch_start(int root_fd, int private_root_fd, watch_fn fn, void *ctx,
                struct watch **out, char **err)
{
    struct watch *w = g_new0(struct watch, 1);
    struct stat root_st, st;
    int rc;

    w->fan = w->mount_fd = w->wake = -1;
    pthread_mutex_init(&w->read_lock, NULL);
    w->self = getpid();
    w->fn = fn;
    w->ctx = ctx;
    if (fstat(root_fd, &root_st) < 0)
        return start_failed(w, -errno, "the source", err);

    /* Report files by handle (FAN_REPORT_FID), not by an fd per event:
     * truncate(2) and ftruncate(2) only come to groups that do, and no
     * event costs an open unless it is someone else's. */
    w->fan = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_CLOEXEC | FAN_NONBLOCK,
                           O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (w->fan < 0 && errno == EINVAL)
        return start_failed(w, -EINVAL,
                            "the kernel cannot report files by handle (Linux 5.1)", err);
    if (w->fan < 0)
        return start_failed(w, -errno, "cannot start", err);

    /* open_by_handle_at() refuses an O_PATH fd as its mount fd. */
    w->mount_fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->mount_fd < 0)
        return start_failed(w, -errno, "the source", err);

    /* A file system may encode handles it cannot decode (Linux 6.5 lets
     * fanotify report those): refuse it now rather than drop every event. */
    struct {
        struct file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } h = {.fh.handle_bytes = MAX_HANDLE_SZ};
    int mnt_id;
    if (name_to_handle_at(w->mount_fd, "", &h.fh, &mnt_id, AT_EMPTY_PATH) < 0)
        return start_failed(w, -errno, "the source's file system has no file handles",
                            err);
    if ((rc = handle_stat(w, &h.fh, &st)) < 0)
        return start_failed(w, rc, "cannot open the source by its file handle", err);

    /* "." rather than a NULL path: fanotify_mark() does not take an O_PATH
     * fd as the object itself, but does as a directory to look up in. */
    if (fanotify_mark(w->fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, WATCH_MASK, root_fd,
                      ".") < 0)
        return start_failed(w, -errno, "cannot watch the source's file system", err);

    if (private_root_fd >= 0) {
        if (fstat(private_root_fd, &st) < 0)
            return start_failed(w, -errno, "the private root", err);
        if (st.st_dev != root_st.st_dev)
            return start_failed(w, -EXDEV, "the private root", err);
        /* An ignore mask on the clone's mount: the kernel drops the events
         * of writes through it before it allocates them, which is what
         * makes the daemon's own writes cheap.  SURV_MODIFY, or the first
         * write would clear it (and FAN_MARK_IGNORE insists on it).
         * FAN_MARK_IGNORE came in Linux 6.0; the older IGNORED_MASK means
         * the same for these events. */
        unsigned flags = FAN_MARK_ADD | FAN_MARK_MOUNT | FAN_MARK_IGNORED_SURV_MODIFY;
        int ok = fanotify_mark(w->fan, flags | FAN_MARK_IGNORE, WATCH_MASK,
                               private_root_fd, ".");
        if (ok < 0 && errno == EINVAL)
            ok = fanotify_mark(w->fan, flags | FAN_MARK_IGNORED_MASK, WATCH_MASK,
                               private_root_fd, ".");
        if (ok < 0)
            return start_failed(w, -errno, "cannot leave out the private root", err);
    }

    w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake < 0)
        return start_failed(w, -errno, "eventfd", err);

    /* The daemon's signals belong to the FUSE loop, not to this thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = -pthread_create(&w->thread, NULL, watch_thread, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        return start_failed(w, rc, "cannot start its thread", err);
    *out = w;
    return 0;
}

void watch_stop(struct watch *w)
{
    if (!w)
        return;
    eventfd_write(w->wake, 1);
    pthread_join(w->thread, NULL);
    watch_free(w);
}
