/* fs.c - FUSE low-level operations: passthrough of SOURCE with write
 * interception, namespace mirroring and the .mirror directory.  FUSE glue
 * only: what a write or a change means for the mirror is mirror.c's,
 * image.c's and ns.c's (doc/design.md, whose invariants are cited here by
 * number).
 *
 * Every callback ends in exactly one fuse_reply_*.  SOURCE is reached only
 * through fds opened before the mount (the root's O_PATH fd and fds derived
 * from it), so MOUNTPOINT may be SOURCE itself and the daemon never touches
 * its own mount.
 */
#include "config.h"

#include "fs.h"
#include "control.h"
#include "image.h"
#include "mirror.h"
#include "mount.h"
#include "ns.h"
#include "tree.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The kernel may cache names and attributes this long: only this daemon
 * changes SOURCE while it is mounted. */
#define ENTRY_TIMEOUT 1.0
#define ATTR_TIMEOUT 1.0

struct fs_inode {
    int fd; /* O_PATH, -1 for virtual nodes */
    dev_t dev;
    ino_t ino;
    uint64_t nlookup;     /* fs->lock */
    enum ctl_node ctl;    /* CTL_NONE for real files */
    bool is_dir;
    /* Path inside SOURCE ("" = top) under which it was last looked up, for
     * mirroring its metadata; NULL once that name is gone (another name of
     * a hard-linked file is not known: the completion audit covers it).
     * fs->ns_lock. */
    char *path;
    struct image *img;    /* regular files; set once, fs->lock */
};

struct fs {
    struct mount *m;
    /* The job, NULL when the mount has none: changed only with every guest
     * request held (fs_hold()), so a request reads it freely. */
    struct mirror_job *job;
    /* Serialises namespace changes, so that the source operation and its
     * twin on the target happen as one. */
    pthread_mutex_t ns_lock;
    /* The gate every guest request passes (not those of .mirror): a count
     * of requests in flight and a flag that holds new ones (fs_hold()). */
    int inflight;             /* atomic */
    int held;                 /* atomic */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_open; /* held went back to 0 */
    pthread_cond_t gate_idle; /* inflight reached 0 while held */
    /* Open files and directories, for a pivot: fd -> struct open_file;
     * struct dir_handle * (a set).  fs->lock. */
    GHashTable *files;
    GHashTable *dirs;
    struct ctl_readers *readers; /* waiting reads of events and trace */
    GThreadPool *slow;           /* operations that may block: struct slow_op */
    int stopping;                /* atomic: fs_stop() was called */
    pthread_mutex_t lock;
    GHashTable *inodes; /* (dev, ino) -> struct fs_inode */
    struct fs_inode root;
    struct fs_inode ctl[CTL_NODES];
};

static guint inode_hash(gconstpointer p)
{
    const struct fs_inode *i = p;
    return g_int64_hash(&(gint64){(gint64)i->ino}) ^ (guint)i->dev;
}

static gboolean inode_equal(gconstpointer a, gconstpointer b)
{
    const struct fs_inode *x = a, *y = b;
    return x->ino == y->ino && x->dev == y->dev;
}

static struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static struct fs_inode *get_inode(fuse_req_t req, fuse_ino_t ino)
{
    if (ino == FUSE_ROOT_ID)
        return &fs_of(req)->root;
    return (struct fs_inode *)(uintptr_t)ino;
}

static fuse_ino_t node_id(struct fs *fs, struct fs_inode *i)
{
    return i == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)i;
}

static bool is_root(struct fs *fs, struct fs_inode *i)
{
    return i == &fs->root;
}

static char *child_path(struct fs_inode *parent, const char *name)
{
    return parent->path[0] ? g_strconcat(parent->path, "/", name, NULL) : g_strdup(name);
}

/* ---- the gate ------------------------------------------------------------ */

/* A guest request enters before it touches anything and leaves when it is
 * answered (a request handed to the pool stays in until the pool answers
 * it).  fs_hold() sets held and waits for the count to reach 0; a request
 * that finds held set leaves again and waits for it to clear.  Sequentially
 * consistent atomics: either the request sees held, or the holder sees the
 * request counted. */
static void gate_leave(struct fs *fs)
{
    if (__atomic_sub_fetch(&fs->inflight, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&fs->held, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&fs->gate_lock);
        pthread_cond_broadcast(&fs->gate_idle);
        pthread_mutex_unlock(&fs->gate_lock);
    }
}

static void gate_enter(struct fs *fs)
{
    for (;;) {
        __atomic_add_fetch(&fs->inflight, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&fs->held, __ATOMIC_SEQ_CST))
            return;
        gate_leave(fs);
        pthread_mutex_lock(&fs->gate_lock);
        while (__atomic_load_n(&fs->held, __ATOMIC_SEQ_CST))
            pthread_cond_wait(&fs->gate_open, &fs->gate_lock);
        pthread_mutex_unlock(&fs->gate_lock);
    }
}

/* One more count for a request that is inside already and hands its
 * answer to another thread (which calls gate_leave()). */
static void gate_enter_nested(struct fs *fs)
{
    __atomic_add_fetch(&fs->inflight, 1, __ATOMIC_SEQ_CST);
}

int fs_hold(struct fs *fs, uint64_t timeout_ns)
{
    struct timespec deadline = cond_deadline(CLOCK_REALTIME, timeout_ns);
    int rc = 0;

    pthread_mutex_lock(&fs->gate_lock);
    __atomic_store_n(&fs->held, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&fs->inflight, __ATOMIC_SEQ_CST) > 0 && rc == 0)
        rc = pthread_cond_timedwait(&fs->gate_idle, &fs->gate_lock, &deadline);
    if (__atomic_load_n(&fs->inflight, __ATOMIC_SEQ_CST) > 0) {
        __atomic_store_n(&fs->held, 0, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&fs->gate_open);
        pthread_mutex_unlock(&fs->gate_lock);
        return -ETIMEDOUT;
    }
    pthread_mutex_unlock(&fs->gate_lock);
    return 0;
}

void fs_unhold(struct fs *fs)
{
    pthread_mutex_lock(&fs->gate_lock);
    __atomic_store_n(&fs->held, 0, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&fs->gate_open);
    pthread_mutex_unlock(&fs->gate_lock);
}

static struct ns *job_ns(struct fs *fs)
{
    return fs->job ? fs->job->ns : NULL;
}

static char *proc_path(int fd)
{
    return g_strdup_printf("/proc/self/fd/%d", fd);
}

/* ---- the caller's identity ----------------------------------------------- */

/* Changes of the namespace and of attributes are made in SOURCE with the
 * caller's file system identity (fsuid, fsgid, supplementary groups), as
 * bindfs and fuse-overlayfs do: the source's file system then gives a new
 * entry the caller as owner and the group its rules choose (a setgid
 * directory's), clears S_ISGID where a local chmod would, and checks
 * permissions once more, as it would for a local program.  The identity is
 * per thread: raw system calls, since glibc's setgroups() changes every
 * thread of the process. */
struct caller {
    bool active;
};

static uid_t daemon_uid;
static gid_t daemon_gid;
static gid_t *daemon_groups;
static int daemon_ngroups;

static void caller_init(void)
{
    daemon_uid = geteuid();
    daemon_gid = getegid();
    daemon_ngroups = getgroups(0, NULL);
    if (daemon_ngroups > 0) {
        daemon_groups = g_new(gid_t, daemon_ngroups);
        daemon_ngroups = getgroups(daemon_ngroups, daemon_groups);
    }
    if (daemon_ngroups < 0)
        daemon_ngroups = 0;
}

static void caller_begin(fuse_req_t req, struct caller *c)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    gid_t small[32];
    g_autofree gid_t *big = NULL;
    gid_t *groups = small;

    c->active = false;
    /* Only root can take another identity, and root's own requests need
     * none. */
    if (daemon_uid != 0 || (ctx->uid == daemon_uid && ctx->gid == daemon_gid))
        return;
    int n = fuse_req_getgroups(req, G_N_ELEMENTS(small), small);
    if (n > (int)G_N_ELEMENTS(small)) {
        groups = big = g_new(gid_t, n);
        n = fuse_req_getgroups(req, n, big);
    }
    if (n < 0)
        n = 0;
    syscall(SYS_setgroups, (size_t)n, groups);
    syscall(SYS_setfsgid, ctx->gid);
    syscall(SYS_setfsuid, ctx->uid);
    c->active = true;
}

static void caller_end(struct caller *c)
{
    if (!c->active)
        return;
    int saved = errno;
    syscall(SYS_setfsuid, daemon_uid);
    syscall(SYS_setfsgid, daemon_gid);
    syscall(SYS_setgroups, (size_t)daemon_ngroups, daemon_groups);
    errno = saved;
}

static void slow_main(gpointer data, gpointer user_data);

/* Most threads the slow operations can occupy at once. */
#define SLOW_THREADS_MAX 64

struct fs *fs_new(struct mount *m, int root_fd)
{
    struct fs *fs = g_new0(struct fs, 1);
    struct stat st;

    fs->m = m;
    fs->job = m->job;
    caller_init();
    pthread_mutex_init(&fs->lock, NULL);
    pthread_mutex_init(&fs->ns_lock, NULL);
    pthread_mutex_init(&fs->gate_lock, NULL);
    pthread_cond_init(&fs->gate_open, NULL);
    pthread_cond_init(&fs->gate_idle, NULL);
    fs->files = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
    fs->dirs = g_hash_table_new(g_direct_hash, g_direct_equal);
    fs->inodes = g_hash_table_new(inode_hash, inode_equal);
    fs->root.fd = root_fd;
    fs->root.is_dir = true;
    fs->root.path = g_strdup("");
    fs->root.nlookup = 2;
    if (fstat(root_fd, &st) == 0) {
        fs->root.dev = st.st_dev;
        fs->root.ino = st.st_ino;
    }
    for (int n = CTL_DIR; n < CTL_NODES; n++) {
        fs->ctl[n].fd = -1;
        fs->ctl[n].ctl = n;
        fs->ctl[n].is_dir = n == CTL_DIR;
    }
    return fs;
}

static void inode_free(struct fs_inode *i)
{
    if (i->fd >= 0)
        close(i->fd);
    image_unref(i->img);
    g_free(i->path);
    g_free(i);
}

void fs_start(struct fs *fs)
{
    fs->readers = ctl_readers_new(&fs->m->logs);
    fs->slow = g_thread_pool_new(slow_main, fs, SLOW_THREADS_MAX, FALSE, NULL);
    if (!fs->slow)
        g_error("cannot create the thread pool");
}

void fs_stop(struct fs *fs)
{
    if (!fs || g_atomic_int_get(&fs->stopping))
        return;
    g_atomic_int_set(&fs->stopping, 1);
    /* Every queued operation is answered before the pool is gone. */
    if (fs->slow)
        g_thread_pool_free(fs->slow, FALSE, TRUE);
    fs->slow = NULL;
    ctl_readers_stop(fs->readers);
}

void fs_free(struct fs *fs)
{
    GHashTableIter it;
    gpointer key;

    if (!fs)
        return;
    fs_stop(fs);
    ctl_readers_free(fs->readers);
    g_hash_table_iter_init(&it, fs->inodes);
    while (g_hash_table_iter_next(&it, &key, NULL))
        inode_free(key);
    g_hash_table_destroy(fs->inodes);
    g_hash_table_destroy(fs->files);
    g_hash_table_destroy(fs->dirs);
    close(fs->root.fd);
    g_free(fs->root.path);
    pthread_mutex_destroy(&fs->lock);
    pthread_mutex_destroy(&fs->ns_lock);
    pthread_mutex_destroy(&fs->gate_lock);
    pthread_cond_destroy(&fs->gate_open);
    pthread_cond_destroy(&fs->gate_idle);
    g_free(fs);
}

/* A target failure met on the guest's behalf: the job reports it (the guest
 * is not told, invariant 4). */
static void report_image(struct fs *fs, struct image *img, const char *what, int rc)
{
    g_autofree char *name = image_name(img);

    mirror_report_error(fs->job, "%s: %s: %s", name, what, g_strerror(-rc));
}

/* ---- attributes and lookup ---------------------------------------------- */

static void virtual_entry(struct fs *fs, enum ctl_node n, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = node_id(fs, &fs->ctl[n]);
    ctl_getattr(n, e->ino, &e->attr);
    /* Zero timeouts: the kernel asks again, so sizes and content stay live. */
}

/* Find or make the inode for name in parent and fill e.  ns_locked: the
 * caller holds the job's namespace lock already.  0 or -errno. */
static int do_lookup(struct fs *fs, struct fs_inode *parent, const char *name,
                     struct fuse_entry_param *e, bool ns_locked)
{
    struct fs_inode key, *inode;
    struct stat st;
    int fd, saved;

    memset(e, 0, sizeof(*e));
    fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        saved = errno;
        close(fd);
        return -saved;
    }
    if (!ns_locked)
        pthread_mutex_lock(&fs->ns_lock);
    key.dev = st.st_dev;
    key.ino = st.st_ino;
    pthread_mutex_lock(&fs->lock);
    inode = g_hash_table_lookup(fs->inodes, &key);
    if (inode) {
        inode->nlookup++;
        close(fd);
    } else {
        inode = g_new0(struct fs_inode, 1);
        inode->fd = fd;
        inode->dev = st.st_dev;
        inode->ino = st.st_ino;
        inode->nlookup = 1;
        inode->is_dir = S_ISDIR(st.st_mode);
        inode->path = child_path(parent, name);
        g_hash_table_add(fs->inodes, inode);
    }
    if (!inode->is_dir) {
        /* A file with several names: the one used last. */
        g_free(inode->path);
        inode->path = child_path(parent, name);
    }
    bool need_image = S_ISREG(st.st_mode) && !inode->img && fs->job;
    pthread_mutex_unlock(&fs->lock);

    if (need_image) {
        /* Under the namespace lock, so that two lookups of a file the job
         * did not know yet cannot both start mirroring it. */
        struct image *img = mirror_find_image(fs->job, st.st_dev, st.st_ino);
        if (!img) {
            g_autofree char *path = child_path(parent, name);
            img = mirror_add_image(fs->job, path, inode->fd, &st);
        }
        pthread_mutex_lock(&fs->lock);
        if (!inode->img)
            inode->img = g_steal_pointer(&img);
        pthread_mutex_unlock(&fs->lock);
        image_unref(img);
    }
    if (!ns_locked)
        pthread_mutex_unlock(&fs->ns_lock);

    e->ino = node_id(fs, inode);
    e->attr = st;
    e->attr_timeout = ATTR_TIMEOUT;
    e->entry_timeout = ENTRY_TIMEOUT;
    return 0;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent);
    struct fuse_entry_param e;
    int rc;

    if (is_root(fs, p) && strcmp(name, CTL_DIR_NAME) == 0) {
        virtual_entry(fs, CTL_DIR, &e);
        fuse_reply_entry(req, &e);
        return;
    }
    if (p->ctl == CTL_DIR) {
        enum ctl_node n = ctl_lookup(name);
        if (n == CTL_NONE) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        virtual_entry(fs, n, &e);
        fuse_reply_entry(req, &e);
        return;
    }
    rc = do_lookup(fs, p, name, &e, false);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_entry(req, &e);
}

static void forget_one(struct fs *fs, struct fs_inode *i, uint64_t n)
{
    if (i->ctl != CTL_NONE || is_root(fs, i))
        return;
    pthread_mutex_lock(&fs->lock);
    g_assert(i->nlookup >= n);
    i->nlookup -= n;
    bool gone = i->nlookup == 0;
    if (gone)
        g_hash_table_remove(fs->inodes, i);
    pthread_mutex_unlock(&fs->lock);
    if (gone)
        inode_free(i);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    forget_one(fs_of(req), get_inode(req, ino), nlookup);
    fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
    for (size_t k = 0; k < count; k++)
        forget_one(fs_of(req), get_inode(req, f[k].ino), f[k].nlookup);
    fuse_reply_none(req);
}

static int fstat_inode(struct fs_inode *i, struct stat *st)
{
    return fstatat(i->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);
    struct stat st;

    if (i->ctl != CTL_NONE) {
        ctl_getattr(i->ctl, ino, &st);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    if (fstatat(i->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void mirror_path(struct fs *fs, const char *path, unsigned flags);

/* A truncate through the mount: the source's size, the maps and the
 * target's size change as one step with respect to guest writes (the
 * image's io lock), so that no write lands between the source's truncate
 * and the image's (doc/design.md). */
static int truncate_image(struct fs *fs, struct fs_inode *i, struct fuse_file_info *fi,
                          const char *proc, off_t size)
{
    uint64_t old = 0, d, f, lo = 0, span = 0;
    int rc;

    if (!i->img)
        return (fi ? ftruncate((int)fi->fh, size) : truncate(proc, size)) < 0 ? -errno : 0;
    image_resize_begin(i->img);
    /* Between the old and the new end the content changes. */
    image_counts(i->img, &old, &d, &f);
    lo = MIN(old, (uint64_t)size);
    span = MAX(old, (uint64_t)size) - lo;
    if (span)
        mirror_change_begin(fs->job, i->img, lo, span);
    rc = (fi ? ftruncate((int)fi->fh, size) : truncate(proc, size)) < 0 ? -errno : 0;
    if (rc == 0) {
        /* After the source changed: the target follows (invariant 4: its
         * failure is reported by the job, not to the guest). */
        int trc = image_resize(i->img, (uint64_t)size);
        if (trc < 0)
            report_image(fs, i->img, "cannot truncate on the target", trc);
        /* A grown tail reads as zeroes: dirty for the copier, whatever the
         * target's truncate did.  (A cut leaves nothing to copy.) */
        if (span && (uint64_t)size > old)
            image_mark_dirty(i->img, lo, span);
    }
    if (span)
        mirror_change_end(fs->job, i->img, lo, span);
    image_resize_end(i->img);
    return rc;
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    g_autofree char *proc = NULL;
    struct caller c;
    int rc = 0;

    if (i->ctl != CTL_NONE) {
        /* `echo pause > ctl` truncates first: accept and ignore. */
        struct stat st;
        ctl_getattr(i->ctl, ino, &st);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    proc = proc_path(i->fd);
    /* The kernel clears setuid and setgid bits after a write, a truncate
     * or a chown by sending the mode without them, in the name of whoever
     * wrote, who need not own the file: clearing them is made as the
     * daemon. */
    struct stat cur;
    bool kill_priv = valid == FUSE_SET_ATTR_MODE && fstat_inode(i, &cur) == 0 &&
                     (cur.st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) ==
                         (attr->st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) &&
                     !(attr->st_mode & ~cur.st_mode & (S_ISUID | S_ISGID));
    if (!kill_priv)
        caller_begin(req, &c);
    else
        c.active = false;
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
        gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
        rc = fchownat(i->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    }
    /* After the owner: a chown clears setuid and setgid bits, which a mode
     * given with it sets again. */
    if (rc == 0 && (valid & FUSE_SET_ATTR_MODE))
        rc = (fi ? fchmod((int)fi->fh, attr->st_mode) : chmod(proc, attr->st_mode)) < 0 ? -errno
                                                                                        : 0;
    if (rc == 0 && (valid & FUSE_SET_ATTR_SIZE))
        rc = truncate_image(fs, i, fi, proc, attr->st_size);
    if (rc == 0 && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
        if (valid & FUSE_SET_ATTR_ATIME_NOW)
            tv[0].tv_nsec = UTIME_NOW;
        else if (valid & FUSE_SET_ATTR_ATIME)
            tv[0] = attr->st_atim;
        if (valid & FUSE_SET_ATTR_MTIME_NOW)
            tv[1].tv_nsec = UTIME_NOW;
        else if (valid & FUSE_SET_ATTR_MTIME)
            tv[1] = attr->st_mtim;
        rc = (fi ? futimens((int)fi->fh, tv) : utimensat(AT_FDCWD, proc, tv, 0)) < 0 ? -errno : 0;
    }
    caller_end(&c);
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_SIZE |
                 FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
        /* Even after a failure: a step before it may have changed something. */
        pthread_mutex_lock(&fs->ns_lock);
        mirror_path(fs, i->path, 0);
        pthread_mutex_unlock(&fs->ns_lock);
    }
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fs_getattr(req, ino, fi);
}

static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs_inode *i = get_inode(req, ino);
    char buf[PATH_MAX + 1];
    ssize_t n = i->fd >= 0 ? readlinkat(i->fd, "", buf, sizeof(buf)) : -1;

    if (i->fd < 0)
        errno = EINVAL;
    if (n < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    if ((size_t)n == sizeof(buf)) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs sv;

    if (fstatvfs(fs_of(req)->root.fd, &sv) < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_statfs(req, &sv);
}

/* ---- namespace ---------------------------------------------------------- */

/* Names a guest may not create or remove: the control directory. */
static bool reserved(struct fs *fs, struct fs_inode *parent, const char *name)
{
    return parent->ctl != CTL_NONE || (is_root(fs, parent) && strcmp(name, CTL_DIR_NAME) == 0);
}

/* The target's entry at path made like the source's (ns.c): after every
 * change of the namespace or of metadata through the mount.  ns_lock held.
 * Nothing to do for an NBD target, which keeps image data only. */
static void mirror_path(struct fs *fs, const char *path, unsigned flags)
{
    if (job_ns(fs) && path)
        ns_sync(job_ns(fs), path, flags);
}

/* The inode known by (dev, ino), if the kernel holds it.  fs->lock. */
static struct fs_inode *find_inode_locked(struct fs *fs, dev_t dev, ino_t ino)
{
    struct fs_inode key = {.dev = dev, .ino = ino};

    return g_hash_table_lookup(fs->inodes, &key);
}

/* A name that is gone: the inode it belonged to no longer has it. */
static void forget_path(struct fs *fs, const struct stat *st, const char *path)
{
    pthread_mutex_lock(&fs->lock);
    struct fs_inode *i = find_inode_locked(fs, st->st_dev, st->st_ino);
    if (i && i->path && strcmp(i->path, path) == 0)
        g_clear_pointer(&i->path, g_free);
    pthread_mutex_unlock(&fs->lock);
}

enum node_kind { NODE_DIR, NODE_MKNOD, NODE_SYMLINK };

/* mkdir, mknod and symlink: made in the source as the caller, then on the
 * target (a regular file made by mknod becomes an image in do_lookup()). */
static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
                      enum node_kind kind, mode_t mode, dev_t rdev, const char *link)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent);
    struct fuse_entry_param e;
    struct caller c;
    int rc;

    if (reserved(fs, p, name)) {
        fuse_reply_err(req, EEXIST);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    caller_begin(req, &c);
    if (kind == NODE_DIR)
        rc = mkdirat(p->fd, name, mode);
    else if (kind == NODE_MKNOD)
        rc = mknodat(p->fd, name, mode, rdev);
    else
        rc = symlinkat(link, p->fd, name);
    rc = rc < 0 ? -errno : 0;
    caller_end(&c);
    if (rc == 0) {
        g_autofree char *path = child_path(p, name);
        rc = do_lookup(fs, p, name, &e, true);
        if (kind == NODE_SYMLINK && job_ns(fs))
            ns_sync_symlink(job_ns(fs), path, link);
        else
            mirror_path(fs, path, 0);
    }
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_entry(req, &e);
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make_node(req, parent, name, NODE_DIR, mode, 0, NULL);
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    make_node(req, parent, name, NODE_MKNOD, mode, rdev, NULL);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    make_node(req, parent, name, NODE_SYMLINK, 0, 0, link);
}

static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino), *np = get_inode(req, newparent);
    struct fuse_entry_param e;
    struct caller c;
    int rc;

    if (i->ctl != CTL_NONE || reserved(fs, np, newname)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    g_autofree char *existing = g_strdup(i->path);
    g_autofree char *proc = proc_path(i->fd);
    caller_begin(req, &c);
    /* Through the inode's /proc link: linkat(AT_EMPTY_PATH) would need a
     * capability the caller's identity does not have. */
    rc = linkat(AT_FDCWD, proc, np->fd, newname, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
    caller_end(&c);
    if (rc == 0) {
        g_autofree char *path = child_path(np, newname);
        rc = do_lookup(fs, np, newname, &e, true);
        if (job_ns(fs))
            existing ? ns_link(job_ns(fs), existing, path) : ns_sync(job_ns(fs), path, 0);
    }
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_entry(req, &e);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent);
    struct caller c;
    struct stat st;
    int rc;

    if (reserved(fs, p, name)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    rc = fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == 0) {
        caller_begin(req, &c);
        rc = unlinkat(p->fd, name, 0) < 0 ? -errno : 0;
        caller_end(&c);
    }
    if (rc == 0) {
        g_autofree char *path = child_path(p, name);
        struct image *img =
            S_ISREG(st.st_mode) && fs->job ? mirror_find_image(fs->job, st.st_dev, st.st_ino)
                                           : NULL;
        /* Last name gone: a guest that still has it open writes into a
         * file nobody can reach; stop mirroring it. */
        if (img && st.st_nlink <= 1)
            mirror_drop_image(fs->job, img);
        image_unref(img);
        forget_path(fs, &st, path);
        mirror_path(fs, path, 0);
    }
    pthread_mutex_unlock(&fs->ns_lock);
    fuse_reply_err(req, -rc);
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent);
    struct caller c;
    struct stat st;
    int rc;

    if (reserved(fs, p, name)) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    pthread_mutex_lock(&fs->ns_lock);
    rc = fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == 0) {
        caller_begin(req, &c);
        rc = unlinkat(p->fd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
        caller_end(&c);
    }
    if (rc == 0) {
        g_autofree char *path = child_path(p, name);
        forget_path(fs, &st, path);
        mirror_path(fs, path, 0);
    }
    pthread_mutex_unlock(&fs->ns_lock);
    fuse_reply_err(req, -rc);
}

/* Inodes at or below a renamed path get their new path (both ways for an
 * exchange); a replaced entry's inode loses its name.  ns_lock held. */
static void rename_inode_paths(struct fs *fs, const char *from, const char *to,
                               const struct stat *victim, bool exchange)
{
    GHashTableIter it;
    gpointer key;
    size_t nf = strlen(from), nt = strlen(to);

    pthread_mutex_lock(&fs->lock);
    if (victim) {
        struct fs_inode *v = find_inode_locked(fs, victim->st_dev, victim->st_ino);
        if (v && v->path && strcmp(v->path, to) == 0)
            g_clear_pointer(&v->path, g_free);
    }
    g_hash_table_iter_init(&it, fs->inodes);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        struct fs_inode *i = key;
        char *nn = NULL;
        if (!i->path)
            continue;
        if (!strncmp(i->path, from, nf) && (i->path[nf] == '\0' || i->path[nf] == '/'))
            nn = g_strconcat(to, i->path + nf, NULL);
        else if (exchange && !strncmp(i->path, to, nt) &&
                 (i->path[nt] == '\0' || i->path[nt] == '/'))
            nn = g_strconcat(from, i->path + nt, NULL);
        if (nn) {
            g_free(i->path);
            i->path = nn;
        }
    }
    pthread_mutex_unlock(&fs->lock);
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent), *np = get_inode(req, newparent);
    struct stat st, vst;
    struct image *victim = NULL;
    bool replaced = false;
    struct caller c;
    int rc;

    if (reserved(fs, p, name) || reserved(fs, np, newname)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    bool exchange = flags & RENAME_EXCHANGE;
    pthread_mutex_lock(&fs->ns_lock);
    rc = fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == 0 && !exchange && fstatat(np->fd, newname, &vst, AT_SYMLINK_NOFOLLOW) == 0 &&
        !(vst.st_dev == st.st_dev && vst.st_ino == st.st_ino)) {
        replaced = true;
        if (S_ISREG(vst.st_mode) && vst.st_nlink <= 1 && fs->job)
            victim = mirror_find_image(fs->job, vst.st_dev, vst.st_ino);
    }
    if (rc == 0) {
        caller_begin(req, &c);
        rc = renameat2(p->fd, name, np->fd, newname, flags) < 0 ? -errno : 0;
        caller_end(&c);
    }
    if (rc == 0) {
        g_autofree char *from = child_path(p, name);
        g_autofree char *to = child_path(np, newname);

        /* The replaced file's last name is gone: it is no longer mirrored. */
        if (victim)
            mirror_drop_image(fs->job, victim);
        if (fs->job && exchange)
            mirror_exchange_paths(fs->job, from, to);
        else if (fs->job)
            mirror_rename_paths(fs->job, from, to);
        rename_inode_paths(fs, from, to, replaced ? &vst : NULL, exchange);
        if (job_ns(fs)) {
            /* The same rename on the target moves whatever is below in one
             * step; then both names are checked against the source.  When
             * the target refuses, both are made again from the source. */
            int trc = ns_rename(job_ns(fs), from, to, flags);
            if (trc < 0)
                mirror_event(fs->job, "repair", "%s: the rename failed on the target (%s); "
                             "made again from the source", from, g_strerror(-trc));
            unsigned how = trc < 0 ? NS_DEEP : 0;
            ns_sync(job_ns(fs), to, how);
            ns_sync(job_ns(fs), from, how);
        }
    }
    image_unref(victim);
    pthread_mutex_unlock(&fs->ns_lock);
    fuse_reply_err(req, -rc);
}

/* ---- directories ---------------------------------------------------------- */

struct dir_entry {
    char *name;
    ino_t ino;
    unsigned char type;
};

/* A snapshot of the directory taken at opendir: offsets are indexes, so
 * the injected .mirror entry cannot collide with the file system's own
 * telldir cookies. */
struct dir_handle {
    GArray *entries; /* struct dir_entry */
    int fd;
    struct fs_inode *inode;
};

/* An open regular file (or other non-directory): what a pivot needs to
 * open its twin on the target. */
struct open_file {
    struct fs_inode *inode;
    int flags; /* the guest's open flags */
    int flock; /* LOCK_SH, LOCK_EX or 0: held through this file */
};

static void track_file(struct fs *fs, int fd, struct fs_inode *i, int flags)
{
    struct open_file *of = g_new0(struct open_file, 1);

    of->inode = i;
    of->flags = flags;
    pthread_mutex_lock(&fs->lock);
    g_hash_table_insert(fs->files, GINT_TO_POINTER(fd), of);
    pthread_mutex_unlock(&fs->lock);
}

static void untrack_file(struct fs *fs, int fd)
{
    pthread_mutex_lock(&fs->lock);
    g_hash_table_remove(fs->files, GINT_TO_POINTER(fd));
    pthread_mutex_unlock(&fs->lock);
}

static void note_flock(struct fs *fs, int fd, int op)
{
    pthread_mutex_lock(&fs->lock);
    struct open_file *of = g_hash_table_lookup(fs->files, GINT_TO_POINTER(fd));
    if (of)
        of->flock = op & (LOCK_SH | LOCK_EX);
    pthread_mutex_unlock(&fs->lock);
}

static void dir_entry_clear(gpointer p)
{
    g_free(((struct dir_entry *)p)->name);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    struct dir_handle *d = g_new0(struct dir_handle, 1);
    struct dir_entry de;

    d->entries = g_array_new(FALSE, FALSE, sizeof(struct dir_entry));
    g_array_set_clear_func(d->entries, dir_entry_clear);
    d->fd = -1;
    if (i->ctl == CTL_DIR) {
        for (int n = CTL_STATUS; n < CTL_NODES; n++) {
            de = (struct dir_entry){g_strdup(ctl_name(n)), (ino_t)node_id(fs, &fs->ctl[n]),
                                    DT_REG};
            g_array_append_val(d->entries, de);
        }
    } else {
        int fd = openat(i->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *dp = fd >= 0 ? fdopendir(dup(fd)) : NULL;
        struct dirent *ent;

        if (!dp) {
            int saved = errno;
            if (fd >= 0)
                close(fd);
            g_array_free(d->entries, TRUE);
            g_free(d);
            fuse_reply_err(req, saved);
            return;
        }
        while ((ent = readdir(dp)) != NULL) {
            de = (struct dir_entry){g_strdup(ent->d_name), ent->d_ino, ent->d_type};
            g_array_append_val(d->entries, de);
        }
        closedir(dp);
        d->fd = fd; /* kept for fsyncdir */
        d->inode = i;
        pthread_mutex_lock(&fs->lock);
        g_hash_table_add(fs->dirs, d);
        pthread_mutex_unlock(&fs->lock);
        if (is_root(fs, i)) {
            de = (struct dir_entry){g_strdup(CTL_DIR_NAME), (ino_t)node_id(fs, &fs->ctl[CTL_DIR]),
                                    DT_DIR};
            g_array_append_val(d->entries, de);
        }
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    fuse_reply_open(req, fi);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    g_autofree char *buf = g_malloc(size);
    size_t used = 0;

    for (guint k = (guint)MAX(off, 0); k < d->entries->len; k++) {
        struct dir_entry *de = &g_array_index(d->entries, struct dir_entry, k);
        struct stat st = {.st_ino = de->ino, .st_mode = (mode_t)de->type << 12};
        size_t n = fuse_add_direntry(req, buf + used, size - used, de->name, &st, k + 1);
        if (n > size - used)
            break;
        used += n;
    }
    fuse_reply_buf(req, buf, used);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    struct fs *fs = fs_of(req);

    pthread_mutex_lock(&fs->lock);
    g_hash_table_remove(fs->dirs, d);
    pthread_mutex_unlock(&fs->lock);
    if (d->fd >= 0)
        close(d->fd);
    g_array_free(d->entries, TRUE);
    g_free(d);
    fuse_reply_err(req, 0);
}

/* ---- operations that may block ------------------------------------------------ */

/* A sync waits for the disk (and, in write-blocking mode, the target), a
 * write-blocking write for the target, and a flock without LOCK_NB for
 * another process: they run in the pool, so that the few FUSE worker
 * threads keep serving guest I/O meanwhile. */
enum slow_kind { SLOW_FSYNC, SLOW_FLOCK, SLOW_WRITE };

struct slow_op {
    enum slow_kind kind;
    fuse_req_t req;
    int fd;
    int arg;            /* datasync, or the flock operation */
    struct image *img;  /* SLOW_FSYNC of an image, SLOW_WRITE: a reference */
    char *data;         /* SLOW_WRITE: the guest's bytes (g_free) */
    size_t size;
    off_t off;
};

static struct slow_op *slow_op_new(enum slow_kind kind, fuse_req_t req, int fd, int arg,
                                   struct image *img)
{
    struct slow_op *op = g_new0(struct slow_op, 1);

    op->kind = kind;
    op->req = req;
    op->fd = fd;
    op->arg = arg;
    op->img = img ? image_ref(img) : NULL;
    return op;
}

static void slow_submit(struct fs *fs, enum slow_kind kind, fuse_req_t req, int fd, int arg,
                        struct image *img)
{
    gate_enter_nested(fs);
    g_thread_pool_push(fs->slow, slow_op_new(kind, req, fd, arg, img), NULL);
}

static void write_blocking_run(fuse_req_t req, struct fs *fs, struct image *img, int fd,
                               const char *data, size_t size, off_t off);

/* flock(2) cannot be interrupted from here, so the wait is a retry that
 * backs off to FLOCK_RETRY_MAX_US and gives up (EINTR) when the request is
 * interrupted or the file system stops. */
#define FLOCK_RETRY_MAX_US (50 * 1000)

static int slow_flock(struct fs *fs, fuse_req_t req, int fd, int op)
{
    unsigned long delay = 1000;

    for (;;) {
        if (flock(fd, op | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return errno;
        if (fuse_req_interrupted(req) || g_atomic_int_get(&fs->stopping))
            return EINTR;
        /* Out of the gate while it waits for another process: a pivot
         * does not wait for it, and its next try takes the file's new
         * descriptor (the same number). */
        gate_leave(fs);
        g_usleep(delay);
        gate_enter(fs);
        delay = MIN(delay * 2, FLOCK_RETRY_MAX_US);
    }
}

static void slow_main(gpointer data, gpointer user_data)
{
    struct slow_op *op = data;
    struct fs *fs = user_data;
    int rc = 0;

    switch (op->kind) {
    case SLOW_FSYNC: /* of a file or a directory */
        rc = (op->arg ? fdatasync(op->fd) : fsync(op->fd)) < 0 ? errno : 0;
        /* Invariant 8: in write-blocking mode the guest's flush makes its
         * writes durable on the target too.  A target failure is the job's
         * to report, not the guest's. */
        if (rc == 0 && op->img && image_has_target(op->img) && mirror_write_blocking(fs->job)) {
            int trc = mirror_flush_image(fs->job, op->img);
            if (trc < 0)
                report_image(fs, op->img, "flushing the target", trc);
        }
        break;
    case SLOW_FLOCK:
        rc = slow_flock(fs, op->req, op->fd, op->arg);
        if (rc == 0)
            note_flock(fs, op->fd, op->arg);
        break;
    case SLOW_WRITE:
        write_blocking_run(op->req, fs, op->img, op->fd, op->data, op->size, op->off);
        break;
    }
    if (op->kind != SLOW_WRITE)
        fuse_reply_err(op->req, rc);
    if (op->img)
        image_unref(op->img);
    g_free(op->data);
    g_free(op);
    gate_leave(fs);
}

static void fs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
                        struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

    if (d->fd < 0) {
        fuse_reply_err(req, 0);
        return;
    }
    slow_submit(fs_of(req), SLOW_FSYNC, req, d->fd, datasync, NULL);
}

/* ---- files -------------------------------------------------------------------- */

/* The backing open: O_DIRECT is dropped because libfuse 3.14's buffers are
 * not aligned (every O_DIRECT write would fail with EINVAL); durability is
 * unchanged, since a cache=none guest still sends its flushes (fsync) and
 * O_SYNC/O_DSYNC are kept.  O_APPEND is dropped because the kernel gives
 * every write its offset (the end of the file for an appending guest): a
 * backing fd with O_APPEND would put a shared mapping's write-back at the
 * end instead.  O_NOFOLLOW would refuse the /proc link. */
static int backing_flags(int flags)
{
    return (flags & ~(O_DIRECT | O_APPEND | O_NOFOLLOW | O_CREAT | O_EXCL)) | O_CLOEXEC;
}

static void after_truncating_open(struct fs *fs, struct fs_inode *i, int fd)
{
    struct stat st;

    if (i->img && fstat(fd, &st) == 0) {
        int rc = image_resize(i->img, (uint64_t)st.st_size);
        if (rc < 0)
            report_image(fs, i->img, "cannot truncate on the target", rc);
    }
}

/* Reply to an open.  A guest that opens with O_DIRECT (QEMU cache=none)
 * gets FOPEN_DIRECT_IO and FOPEN_PARALLEL_DIRECT_WRITES: without the latter
 * the kernel holds the inode lock across every direct write, one write at
 * a time per image, whatever the guest's queue depth.  libfuse 3.14 has no
 * field for that flag, and its fuse_reply_open() only fills a struct
 * fuse_open_out and sends it, so the reply is built here the same way. */
static void reply_open(fuse_req_t req, struct fuse_file_info *fi, int guest_flags)
{
    if (!(guest_flags & O_DIRECT)) {
        fuse_reply_open(req, fi);
        return;
    }
    struct fuse_open_out out = {
        .fh = fi->fh,
        .open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES,
    };
    fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    g_autofree char *proc = NULL;
    int fd;

    if (i->ctl != CTL_NONE) {
        ctl_open(req, fs->m, i->ctl, fi);
        return;
    }
    proc = proc_path(i->fd);
    /* A truncating open is a resize: no guest write between the source's
     * truncate and the image's. */
    bool trunc = (fi->flags & O_TRUNC) && i->img;
    if (trunc)
        image_resize_begin(i->img);
    fd = open(proc, backing_flags(fi->flags));
    int saved = errno;
    if (fd >= 0 && trunc)
        after_truncating_open(fs, i, fd);
    if (trunc)
        image_resize_end(i->img);
    if (fd < 0) {
        fuse_reply_err(req, saved);
        return;
    }
    track_file(fs, fd, i, fi->flags);
    fi->fh = (uint64_t)fd;
    reply_open(req, fi, fi->flags);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *p = get_inode(req, parent);
    struct fuse_entry_param e;
    int fd, rc;

    if (reserved(fs, p, name)) {
        fuse_reply_err(req, p->ctl != CTL_NONE ? EACCES : EEXIST);
        return;
    }
    struct caller c;
    pthread_mutex_lock(&fs->ns_lock);
    caller_begin(req, &c);
    fd = openat(p->fd, name, backing_flags(fi->flags) | (fi->flags & O_EXCL) | O_CREAT | O_NOFOLLOW,
                mode);
    rc = fd < 0 ? -errno : 0;
    caller_end(&c);
    if (rc == 0)
        rc = do_lookup(fs, p, name, &e, true);
    if (rc == 0) {
        g_autofree char *path = child_path(p, name);
        mirror_path(fs, path, 0);
    }
    pthread_mutex_unlock(&fs->ns_lock);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        fuse_reply_err(req, -rc);
        return;
    }
    if (fi->flags & O_TRUNC)
        after_truncating_open(fs, get_inode(req, e.ino), fd);
    track_file(fs, fd, get_inode(req, e.ino), fi->flags & ~(O_CREAT | O_EXCL | O_TRUNC));
    fi->fh = (uint64_t)fd;
    fuse_reply_create(req, &e, fi);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

    if (i->ctl != CTL_NONE) {
        ctl_read(req, fs_of(req)->readers, size, off, fi);
        return;
    }
    /* An fd-backed reply: libfuse splices from the file to the kernel. */
    buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    buf.buf[0].fd = (int)fi->fh;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* copy_mode=write-blocking: the write is acknowledged once it is on the
 * source and on the target.  The guest's bytes go to the target as they
 * are; granules the write covers only in part are left to the copier.
 * Runs in the pool (write_blocking() hands it over): it waits for the
 * target, which may be a server on the network. */
static void write_blocking_run(fuse_req_t req, struct fs *fs, struct image *img, int fd,
                               const char *data, size_t size, off_t off)
{
    ssize_t res = mirror_write_through(fs->job, img, fd, data, size, off);

    if (res < 0)
        fuse_reply_err(req, (int)-res);
    else
        fuse_reply_write(req, (size_t)res);
}

/* The guest's bytes are copied out of the request buffer (the FUSE thread
 * reuses it) and the rest runs in the pool. */
static void write_blocking(fuse_req_t req, struct fs *fs, struct image *img,
                           struct fuse_bufvec *in_buf, off_t off, int fd)
{
    size_t size = fuse_buf_size(in_buf);
    char *data = g_malloc(size ? size : 1);
    struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);

    mem.buf[0].mem = data;
    ssize_t res = fuse_buf_copy(&mem, in_buf, 0);
    if (res < 0) {
        g_free(data);
        fuse_reply_err(req, (int)-res);
        return;
    }
    struct slow_op *op = slow_op_new(SLOW_WRITE, req, fd, 0, img);
    op->data = data;
    op->size = (size_t)res;
    op->off = off;
    gate_enter_nested(fs);
    g_thread_pool_push(fs->slow, op, NULL);
}

static void fs_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf,
                         off_t off, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    size_t size = fuse_buf_size(in_buf);
    struct fuse_bufvec out = FUSE_BUFVEC_INIT(size);
    ssize_t res;

    if (i->ctl != CTL_NONE) {
        g_autofree char *tmp = g_malloc(size + 1);
        struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
        mem.buf[0].mem = tmp;
        res = fuse_buf_copy(&mem, in_buf, 0);
        if (res < 0)
            fuse_reply_err(req, (int)-res);
        else
            ctl_write(req, fs->m, tmp, (size_t)res, fi);
        return;
    }
    if (i->img && mirror_write_blocking(fs->job) && image_has_target(i->img)) {
        write_blocking(req, fs, i->img, in_buf, off, (int)fi->fh);
        return;
    }
    out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    out.buf[0].fd = (int)fi->fh;
    out.buf[0].pos = off;
    if (i->img)
        mirror_write_begin(fs->job, i->img, (uint64_t)off, size);
    res = fuse_buf_copy(&out, in_buf, 0);
    if (i->img)
        mirror_write_end(fs->job, i->img, (uint64_t)off, size, res);
    if (res < 0)
        fuse_reply_err(req, (int)-res);
    else
        fuse_reply_write(req, (size_t)res);
}

static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);
    int rc = 0;

    if (i->ctl == CTL_NONE) {
        /* close() of a dup reports delayed write errors, as the guest's own
         * close() would have. */
        int fd = dup((int)fi->fh);
        rc = fd < 0 || close(fd) < 0 ? errno : 0;
    }
    fuse_reply_err(req, rc);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);

    if (i->ctl != CTL_NONE) {
        ctl_release(req, fs_of(req)->m, fi);
        return;
    }
    untrack_file(fs_of(req), (int)fi->fh);
    close((int)fi->fh);
    fuse_reply_err(req, 0);
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);

    if (i->ctl != CTL_NONE) {
        fuse_reply_err(req, 0);
        return;
    }
    slow_submit(fs_of(req), SLOW_FSYNC, req, (int)fi->fh, datasync, i->img);
}

static void fs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    uint64_t known = 0, dirty, in_flight;
    struct stat st;
    int rc = 0;

    if (i->ctl != CTL_NONE) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    if (!i->img) {
        fuse_reply_err(req, fallocate((int)fi->fh, mode, off, len) < 0 ? errno : 0);
        return;
    }
    /* It may resize the file: exclusive of guest writes, like a truncate. */
    image_resize_begin(i->img);
    image_counts(i->img, &known, &dirty, &in_flight);
    /* What may change: the range, and with collapse and insert everything
     * after it, up to the end the file may then have. */
    uint64_t lo = (uint64_t)off, hi = (uint64_t)off + (uint64_t)len;
    if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
        hi = MAX(hi, known + (uint64_t)len);
    mirror_change_begin(fs->job, i->img, lo, hi - lo);
    if (fallocate((int)fi->fh, mode, off, len) < 0)
        rc = errno;
    if (rc == 0 && fstat((int)fi->fh, &st) == 0) {
        uint64_t size = (uint64_t)st.st_size;
        if (size != known) {
            int trc = image_resize(i->img, size);
            if (trc < 0)
                report_image(fs, i->img, "cannot resize on the target", trc);
        }
        /* Plain allocation leaves the content as it was; these change it. */
        if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
            image_mark_dirty(i->img, lo, size > lo ? size - lo : 0);
        else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
            uint64_t end = MIN(hi, size);
            if (end > lo)
                image_mark_dirty(i->img, lo, end - lo);
        }
    }
    mirror_change_end(fs->job, i->img, lo, hi - lo);
    image_resize_end(i->img);
    fuse_reply_err(req, rc);
}

/* ---- extended attributes --------------------------------------------------- */

/* Read through the inode's /proc link, which reaches the object itself
 * (a symlink too, not what it points to).  The kernel has checked the
 * caller's right to read them. */
static void reply_xattr_read(fuse_req_t req, size_t size, ssize_t n, const char *buf)
{
    if (n < 0)
        fuse_reply_err(req, errno);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)n);
    else
        fuse_reply_buf(req, buf, (size_t)n);
}

static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs_inode *i = get_inode(req, ino);

    if (i->ctl != CTL_NONE) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    g_autofree char *proc = proc_path(i->fd);
    g_autofree char *buf = size ? g_malloc(size) : NULL;
    ssize_t n = getxattr(proc, name, buf, size);
    reply_xattr_read(req, size, n, buf);
}

static void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs_inode *i = get_inode(req, ino);

    if (i->ctl != CTL_NONE) {
        reply_xattr_read(req, size, 0, NULL);
        return;
    }
    g_autofree char *proc = proc_path(i->fd);
    g_autofree char *buf = size ? g_malloc(size) : NULL;
    ssize_t n = listxattr(proc, buf, size);
    reply_xattr_read(req, size, n, buf);
}

/* Set or remove (value NULL): in the source as the caller, then mirrored. */
static void change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags)
{
    struct fs *fs = fs_of(req);
    struct fs_inode *i = get_inode(req, ino);
    struct caller c;

    if (i->ctl != CTL_NONE) {
        fuse_reply_err(req, ENOTSUP);
        return;
    }
    g_autofree char *proc = proc_path(i->fd);
    caller_begin(req, &c);
    int rc = (value ? setxattr(proc, name, value, size, flags) : removexattr(proc, name)) < 0
                 ? errno
                 : 0;
    caller_end(&c);
    if (rc == 0) {
        pthread_mutex_lock(&fs->ns_lock);
        mirror_path(fs, i->path, 0);
        pthread_mutex_unlock(&fs->ns_lock);
    }
    fuse_reply_err(req, rc);
}

static void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    change_xattr(req, ino, name, value ? value : "", size, flags);
}

static void fs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    change_xattr(req, ino, name, NULL, 0, 0);
}

static void fs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct fs_inode *i = get_inode(req, ino);
    off_t res;

    if (i->ctl != CTL_NONE) {
        fuse_reply_err(req, ESPIPE);
        return;
    }
    res = lseek((int)fi->fh, off, whence);
    if (res < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_lseek(req, res);
}

static void fs_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    struct fs_inode *i = get_inode(req, ino);
    int rc = 0;

    if (i->ctl == CTL_NONE) {
        rc = flock((int)fi->fh, op | LOCK_NB) < 0 ? errno : 0;
        if (rc == 0)
            note_flock(fs_of(req), (int)fi->fh, op);
        /* Only a lock that has to wait goes to the pool. */
        if (rc == EWOULDBLOCK && !(op & LOCK_NB)) {
            slow_submit(fs_of(req), SLOW_FLOCK, req, (int)fi->fh, op, NULL);
            return;
        }
    }
    fuse_reply_err(req, rc);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
    /* Guest data moves kernel -> pipe -> source file without a copy in user
     * space, and reads are answered from the file the same way. */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE)
        conn->want |= FUSE_CAP_SPLICE_MOVE;
    if (conn->capable & FUSE_CAP_SPLICE_READ)
        conn->want |= FUSE_CAP_SPLICE_READ;
    if (conn->capable & FUSE_CAP_FLOCK_LOCKS)
        conn->want |= FUSE_CAP_FLOCK_LOCKS;
    /* The kernel clears setuid and setgid bits on a write, a truncate and
     * a chown by sending the new mode: the daemon's own writes to the
     * source, made as root, would not clear them. */
    conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
    /* The default of 12 background requests starves async guests (qd16). */
    conn->max_background = 64;
    conn->congestion_threshold = 48;
}

/* ---- a job's start and end, the pivot (mount.c holds the guests) -------- */

void fs_set_job(struct fs *fs, struct mirror_job *job)
{
    GHashTableIter it;
    gpointer key;
    g_autoptr(GPtrArray) regular = g_ptr_array_new();

    pthread_mutex_lock(&fs->lock);
    fs->job = job;
    g_hash_table_iter_init(&it, fs->inodes);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        struct fs_inode *i = key;
        g_clear_pointer(&i->img, image_unref);
        if (job && !i->is_dir)
            g_ptr_array_add(regular, i);
    }
    pthread_mutex_unlock(&fs->lock);
    /* Files the kernel knows already (open ones among them) join the job:
     * the guests are held, so the table does not change meanwhile. */
    for (guint k = 0; k < regular->len; k++) {
        struct fs_inode *i = g_ptr_array_index(regular, k);
        struct stat st;
        if (!i->path || fstat_inode(i, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        pthread_mutex_lock(&fs->ns_lock);
        struct image *img = mirror_find_image(job, st.st_dev, st.st_ino);
        if (!img)
            img = mirror_add_image(job, i->path, i->fd, &st);
        pthread_mutex_unlock(&fs->ns_lock);
        i->img = img;
    }
}

/* The O_PATH fd of path beneath root, never through a symlink; -errno. */
static int open_beneath(int root, const char *path)
{
    const char *leaf;
    int fd;

    if (!path[0])
        return tree_open_dir(root, "", O_PATH);
    int dir = tree_open_parent(root, path, false, &leaf);
    if (dir < 0)
        return dir;
    fd = openat(dir, leaf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    int saved = errno;
    close(dir);
    return fd < 0 ? -saved : fd;
}

struct switch_fd {
    int old_fd;
    int new_fd;
};

static void switch_fds_free(GArray *a)
{
    for (guint k = 0; k < a->len; k++) {
        struct switch_fd *f = &g_array_index(a, struct switch_fd, k);
        if (f->new_fd >= 0)
            close(f->new_fd);
    }
    g_array_free(a, TRUE);
}

/* A descriptor for a node that has no twin on the new tree (its name went
 * away while the kernel still knew it): it answers every operation with an
 * error, and holds nothing of the old tree. */
static int stale_fd(void)
{
    return open("/dev/null", O_PATH | O_CLOEXEC);
}

/* A node's twin on the new tree: its O_PATH descriptor there (or a stale
 * one) and its identity there, which keys the inode table afterwards. */
struct twin {
    struct fs_inode *inode;
    struct fs_inode id; /* dev and ino only; dev (dev_t)-1: stale */
    int fd;
};

static bool twin_live(const struct twin *t)
{
    return t && t->id.dev != (dev_t)-1;
}

/* The twin of node i, opened beneath new_root by its path, of the same
 * type, and no other node's twin already (two nodes, one file on the
 * target: the later is stale); otherwise a stale one. */
static void open_twin(struct twin *t, struct fs_inode *i, int new_root, GHashTable *ids)
{
    struct stat st, ost;
    int fd = i->path ? open_beneath(new_root, i->path) : -ENOENT;
    bool ok = fd >= 0 && fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 &&
              fstat_inode(i, &ost) == 0 && (st.st_mode & S_IFMT) == (ost.st_mode & S_IFMT);

    t->inode = i;
    t->id.dev = ok ? st.st_dev : (dev_t)-1;
    t->id.ino = ok ? st.st_ino : (ino_t)(uintptr_t)i;
    if (ok && g_hash_table_contains(ids, &t->id)) {
        t->id.dev = (dev_t)-1;
        t->id.ino = (ino_t)(uintptr_t)i;
        ok = false;
    }
    if (!ok) {
        if (fd >= 0)
            close(fd);
        fd = stale_fd();
    }
    t->fd = fd;
    g_hash_table_add(ids, &t->id);
}

int fs_switch(struct fs *fs, int new_root, int (*commit)(void *), void *ctx, char **err)
{
    /* Open files and directories: their descriptors and their twins'. */
    GArray *fds = g_array_new(FALSE, FALSE, sizeof(struct switch_fd));
    g_autoptr(GHashTable) ids = g_hash_table_new(inode_hash, inode_equal);
    g_autoptr(GHashTable) by_inode = g_hash_table_new(g_direct_hash, g_direct_equal);
    GHashTableIter it;
    gpointer key, value;
    guint n = 0;
    int rc = 0;

    *err = NULL;
    /* Everything is opened first; nothing changes unless all of it opened.
     * The guests are held: the tables do not change meanwhile. */
    pthread_mutex_lock(&fs->lock);
    g_autofree struct twin *twins = g_new0(struct twin, g_hash_table_size(fs->inodes) + 1);
    open_twin(&twins[n], &fs->root, new_root, ids);
    if (!twin_live(&twins[n])) {
        *err = g_strdup("cannot open the new top directory");
        close(twins[n].fd);
        pthread_mutex_unlock(&fs->lock);
        g_array_free(fds, TRUE);
        return -EIO;
    }
    g_hash_table_insert(by_inode, &fs->root, &twins[n++]);
    g_hash_table_iter_init(&it, fs->inodes);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        open_twin(&twins[n], key, new_root, ids);
        g_hash_table_insert(by_inode, key, &twins[n++]);
    }
    /* Open files: the same access on the target's file. */
    g_hash_table_iter_init(&it, fs->files);
    while (rc == 0 && g_hash_table_iter_next(&it, &key, &value)) {
        struct open_file *of = value;
        struct twin *t = g_hash_table_lookup(by_inode, of->inode);
        g_autofree char *proc = twin_live(t) ? proc_path(t->fd) : NULL;
        int fd = proc ? open(proc, backing_flags(of->flags) & ~O_TRUNC) : -1;
        if (fd < 0) {
            *err = g_strdup_printf("%s: an open file has no twin on the target%s%s",
                                   of->inode->path ? of->inode->path : "(a file without a name)",
                                   proc ? ": " : "", proc ? g_strerror(errno) : "");
            rc = -ENOENT;
            break;
        }
        g_array_append_val(fds, ((struct switch_fd){GPOINTER_TO_INT(key), fd}));
    }
    g_hash_table_iter_init(&it, fs->dirs);
    while (rc == 0 && g_hash_table_iter_next(&it, &key, NULL)) {
        struct dir_handle *d = key;
        struct twin *t = g_hash_table_lookup(by_inode, d->inode);
        int fd = twin_live(t) ? openat(t->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                              : stale_fd();
        if (fd < 0) {
            *err = g_strdup_printf("%s: an open directory cannot be opened on the target: %s",
                                   d->inode->path ? d->inode->path : "?", g_strerror(errno));
            rc = -EIO;
            break;
        }
        g_array_append_val(fds, ((struct switch_fd){d->fd, fd}));
    }
    if (rc == 0 && commit)
        rc = commit(ctx);
    if (rc < 0) {
        if (!*err)
            *err = g_strdup_printf("cannot record the pivot: %s", g_strerror(-rc));
        pthread_mutex_unlock(&fs->lock);
        for (guint k = 0; k < n; k++)
            close(twins[k].fd);
        switch_fds_free(fds);
        return rc;
    }
    /* The decision is durable: every descriptor now takes its twin, under
     * the same number, so whatever holds the number (a guest's open file,
     * a directory handle) goes on with the target. */
    for (guint k = 0; k < n; k++)
        g_array_append_val(fds, ((struct switch_fd){twins[k].inode->fd, twins[k].fd}));
    for (guint k = 0; k < fds->len; k++) {
        struct switch_fd *f = &g_array_index(fds, struct switch_fd, k);
        if (dup3(f->new_fd, f->old_fd, O_CLOEXEC) < 0)
            g_error("dup3: %s", g_strerror(errno)); /* cannot fail: both are open */
    }
    /* flock locks belong to the old open files: taken again on the new. */
    g_hash_table_iter_init(&it, fs->files);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        struct open_file *of = value;
        if (of->flock && flock(GPOINTER_TO_INT(key), of->flock | LOCK_NB) < 0)
            of->flock = 0;
    }
    /* New identities: the table is keyed by them. */
    g_hash_table_steal_all(fs->inodes);
    for (guint k = 0; k < n; k++) {
        struct fs_inode *i = twins[k].inode;
        i->dev = twins[k].id.dev;
        i->ino = twins[k].id.ino;
        if (i == &fs->root)
            continue;
        if (!twin_live(&twins[k]))
            g_clear_pointer(&i->path, g_free);
        g_hash_table_add(fs->inodes, i);
    }
    pthread_mutex_unlock(&fs->lock);
    switch_fds_free(fds);
    return 0;
}

/* ---- the operations, behind the gate -------------------------------------- */

/* Requests on .mirror pass without the gate: steering and status stay
 * available while the guests are held (the pivot itself is a write to
 * .mirror/ctl). */
static bool gated(fuse_req_t req, fuse_ino_t ino)
{
    return ino == FUSE_ROOT_ID || get_inode(req, ino)->ctl == CTL_NONE;
}

#define GATED(op, ino, params, args)                                                         \
    static void gated_##op params                                                            \
    {                                                                                        \
        struct fs *fs_ = fs_of(req);                                                         \
        bool g_ = gated(req, ino);                                                           \
        if (g_)                                                                              \
            gate_enter(fs_);                                                                 \
        fs_##op args;                                                                        \
        if (g_)                                                                              \
            gate_leave(fs_);                                                                 \
    }

static void gated_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    bool g = gated(req, parent) && !(parent == FUSE_ROOT_ID && strcmp(name, CTL_DIR_NAME) == 0);

    if (g)
        gate_enter(fs);
    fs_lookup(req, parent, name);
    if (g)
        gate_leave(fs);
}

static void gated_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
    struct fs *fs = fs_of(req);

    gate_enter(fs);
    fs_forget_multi(req, count, f);
    gate_leave(fs);
}

GATED(forget, ino, (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup), (req, ino, nlookup))
GATED(getattr, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
GATED(setattr, ino,
      (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid, struct fuse_file_info *fi),
      (req, ino, attr, valid, fi))
GATED(readlink, ino, (fuse_req_t req, fuse_ino_t ino), (req, ino))
GATED(mknod, parent,
      (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev),
      (req, parent, name, mode, rdev))
GATED(mkdir, parent, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode),
      (req, parent, name, mode))
GATED(unlink, parent, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
GATED(rmdir, parent, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
GATED(symlink, parent, (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name),
      (req, link, parent, name))
GATED(rename, parent,
      (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
       const char *newname, unsigned int flags),
      (req, parent, name, newparent, newname, flags))
GATED(link, ino, (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname),
      (req, ino, newparent, newname))
GATED(open, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
GATED(read, ino,
      (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
      (req, ino, size, off, fi))
GATED(write_buf, ino,
      (fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
       struct fuse_file_info *fi),
      (req, ino, in_buf, off, fi))
GATED(flush, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
GATED(release, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
GATED(fsync, ino, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
      (req, ino, datasync, fi))
GATED(opendir, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
GATED(readdir, ino,
      (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
      (req, ino, size, off, fi))
GATED(releasedir, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
      (req, ino, fi))
GATED(fsyncdir, ino, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
      (req, ino, datasync, fi))
GATED(statfs, ino, (fuse_req_t req, fuse_ino_t ino), (req, ino))
GATED(create, parent,
      (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
       struct fuse_file_info *fi),
      (req, parent, name, mode, fi))
GATED(flock, ino, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op),
      (req, ino, fi, op))
GATED(fallocate, ino,
      (fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, struct fuse_file_info *fi),
      (req, ino, mode, off, len, fi))
GATED(setxattr, ino,
      (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
       int flags),
      (req, ino, name, value, size, flags))
GATED(getxattr, ino, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size),
      (req, ino, name, size))
GATED(listxattr, ino, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))
GATED(removexattr, ino, (fuse_req_t req, fuse_ino_t ino, const char *name), (req, ino, name))
GATED(lseek, ino,
      (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi),
      (req, ino, off, whence, fi))

static const struct fuse_lowlevel_ops ops = {
    .init = fs_init,
    .lookup = gated_lookup,
    .forget = gated_forget,
    .forget_multi = gated_forget_multi,
    .getattr = gated_getattr,
    .setattr = gated_setattr,
    .readlink = gated_readlink,
    .mknod = gated_mknod,
    .mkdir = gated_mkdir,
    .unlink = gated_unlink,
    .rmdir = gated_rmdir,
    .symlink = gated_symlink,
    .rename = gated_rename,
    .link = gated_link,
    .open = gated_open,
    .read = gated_read,
    .write_buf = gated_write_buf,
    .flush = gated_flush,
    .release = gated_release,
    .fsync = gated_fsync,
    .opendir = gated_opendir,
    .readdir = gated_readdir,
    .releasedir = gated_releasedir,
    .fsyncdir = gated_fsyncdir,
    .statfs = gated_statfs,
    .create = gated_create,
    .flock = gated_flock,
    .fallocate = gated_fallocate,
    .setxattr = gated_setxattr,
    .getxattr = gated_getxattr,
    .listxattr = gated_listxattr,
    .removexattr = gated_removexattr,
    .lseek = gated_lseek,
};

const struct fuse_lowlevel_ops *fs_ops(void)
{
    return &ops;
}
