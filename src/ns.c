/* ns.c - the namespace and metadata of a directory target (see ns.h). */
#include "config.h"

#include "ns.h"
#include "image.h"
#include "mirror.h"
#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

struct ns {
    struct mirror_job *job;
    int src_root;
    int tgt_root;
};

struct ns *ns_new(struct mirror_job *job, int src_root, int tgt_root)
{
    struct ns *ns = g_new0(struct ns, 1);

    ns->job = job;
    ns->src_root = src_root;
    ns->tgt_root = tgt_root;
    return ns;
}

void ns_free(struct ns *ns)
{
    g_free(ns);
}

/* An inode, as the key of the hard-link tables. */
struct ident {
    dev_t dev;
    ino_t ino;
};

static guint ident_hash(gconstpointer p)
{
    const struct ident *i = p;
    return (guint)(i->ino ^ (i->ino >> 32) ^ i->dev);
}

static gboolean ident_equal(gconstpointer a, gconstpointer b)
{
    const struct ident *x = a, *y = b;
    return x->dev == y->dev && x->ino == y->ino;
}

static struct ident *ident_new(const struct stat *st)
{
    struct ident *i = g_new(struct ident, 1);

    i->dev = st->st_dev;
    i->ino = st->st_ino;
    return i;
}

/* One comparison (and repair) of entries: a whole tree, or one path. */
struct walk {
    struct ns *ns;
    bool repair;
    bool deep;
    bool full;        /* the whole tree: hard-link groups are checked */
    bool final;       /* the job is clean: sizes too */
    int differences;
    int error;        /* the first failure to compare or repair (-errno) */
    char *first;      /* "path: what" of the first difference or failure */
    const char *link; /* ns_sync_symlink(): the new symlink's target */
    /* Full walks: source inode -> target inode and back, for every
     * non-directory with more than one name on either side; and the first
     * target name (an O_PATH fd) of each source inode, to link the others
     * to. */
    GHashTable *s2t, *t2s, *t_fd;
};

static void G_GNUC_PRINTF(3, 4) differ(struct walk *w, const char *path, const char *fmt, ...)
{
    va_list ap;

    w->differences++;
    if (w->first)
        return;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    w->first = g_strdup_printf("%s: %s", path[0] ? path : ".", what);
}

static void failed(struct walk *w, const char *path, const char *what, int rc)
{
    if (w->error == 0)
        w->error = rc;
    g_free(w->first);
    w->first = g_strdup_printf("%s: cannot %s: %s", path[0] ? path : ".", what, g_strerror(-rc));
}

/* ---- entries: (dirfd, name), or the directory dirfd itself when name is
 * NULL (the roots, and the directory holding a synced path) -------------- */

static int e_stat(int dirfd, const char *name, struct stat *st)
{
    if (!name)
        return fstat(dirfd, st) < 0 ? -errno : 0;
    return tree_lstat(dirfd, name, st);
}

/* The symlink's target (any bytes), or NULL with *rc set. */
static char *e_readlink(int dirfd, const char *name, size_t hint, int *rc)
{
    size_t size = hint + 1 > 256 ? hint + 1 : 256;

    for (;;) {
        char *buf = g_malloc(size);
        ssize_t n = readlinkat(dirfd, name, buf, size);
        if (n < 0) {
            *rc = -errno;
            g_free(buf);
            return NULL;
        }
        if ((size_t)n < size) {
            buf[n] = '\0';
            return buf;
        }
        g_free(buf);
        size *= 2;
    }
}

/* The path for the xattr calls: l* with a name, plain without (an O_PATH
 * fd's object is reached through its /proc link, not followed further). */
static char *e_xpath(int dirfd, const char *name)
{
    return tree_proc_path(dirfd, name);
}

static ssize_t e_listxattr(const char *path, bool nofollow, char *buf, size_t size)
{
    return nofollow ? llistxattr(path, buf, size) : listxattr(path, buf, size);
}

static ssize_t e_getxattr(const char *path, bool nofollow, const char *key, void *buf,
                          size_t size)
{
    return nofollow ? lgetxattr(path, key, buf, size) : getxattr(path, key, buf, size);
}

/* name -> GBytes value, every extended attribute this process can see. */
static int read_xattrs(int dirfd, const char *name, GHashTable **out)
{
    g_autofree char *path = e_xpath(dirfd, name);
    bool nf = name != NULL;
    g_autofree char *list = NULL;
    ssize_t n;

    *out = NULL;
    for (;;) {
        n = e_listxattr(path, nf, NULL, 0);
        if (n < 0)
            return errno == ENOTSUP ? 0 : -errno;
        if (n == 0)
            return 0;
        g_free(list);
        list = g_malloc((size_t)n);
        ssize_t got = e_listxattr(path, nf, list, (size_t)n);
        if (got >= 0) {
            n = got;
            break;
        }
        if (errno != ERANGE)
            return -errno;
    }
    GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          (GDestroyNotify)g_bytes_unref);
    for (ssize_t off = 0; off < n; off += (ssize_t)strlen(list + off) + 1) {
        const char *key = list + off;
        for (;;) {
            ssize_t vn = e_getxattr(path, nf, key, NULL, 0);
            if (vn < 0)
                break; /* removed meanwhile */
            g_autofree char *val = g_malloc(vn ? (size_t)vn : 1);
            ssize_t got = e_getxattr(path, nf, key, val, (size_t)vn);
            if (got >= 0) {
                g_hash_table_insert(t, g_strdup(key), g_bytes_new(val, (size_t)got));
                break;
            }
            if (errno != ERANGE)
                break;
        }
    }
    *out = t;
    return 0;
}

static bool xattr_equal(GHashTable *a, GHashTable *b)
{
    guint na = a ? g_hash_table_size(a) : 0, nb = b ? g_hash_table_size(b) : 0;
    GHashTableIter it;
    gpointer k, v;

    if (na != nb)
        return false;
    if (na == 0)
        return true;
    g_hash_table_iter_init(&it, a);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        GBytes *o = g_hash_table_lookup(b, k);
        if (!o || !g_bytes_equal(v, o))
            return false;
    }
    return true;
}

/* Make the target's xattrs those of the source. */
static int write_xattrs(int dirfd, const char *name, GHashTable *want, GHashTable *have)
{
    g_autofree char *path = e_xpath(dirfd, name);
    GHashTableIter it;
    gpointer k, v;

    if (have) {
        g_hash_table_iter_init(&it, have);
        while (g_hash_table_iter_next(&it, &k, &v))
            if (!want || !g_hash_table_contains(want, k)) {
                int r = name ? lremovexattr(path, k) : removexattr(path, k);
                if (r < 0 && errno != ENODATA)
                    return -errno;
            }
    }
    if (want) {
        g_hash_table_iter_init(&it, want);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            GBytes *o = have ? g_hash_table_lookup(have, k) : NULL;
            if (o && g_bytes_equal(o, v))
                continue;
            gsize len;
            const void *data = g_bytes_get_data(v, &len);
            int r = name ? lsetxattr(path, k, data, len, 0) : setxattr(path, k, data, len, 0);
            if (r < 0)
                return -errno;
        }
    }
    return 0;
}

static bool times_equal(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* The metadata of the target entry made that of the source entry, in the
 * order that keeps each step from undoing an earlier one: the owner first
 * (chown clears setuid and setgid bits), then the mode, the xattrs (a
 * chown drops security.capability), and the times last (every other
 * change may touch them).  ss and ts are both entries' stat. */
static void sync_meta(struct walk *w, int sdir, const char *sname, int tdir, const char *tname,
                      const char *path, const struct stat *ss, struct stat *ts)
{
    bool link = S_ISLNK(ss->st_mode);
    int rc;

    if (ss->st_uid != ts->st_uid || ss->st_gid != ts->st_gid) {
        differ(w, path, "owner %u:%u, the target's %u:%u", ss->st_uid, ss->st_gid, ts->st_uid,
               ts->st_gid);
        if (w->repair) {
            rc = tname ? fchownat(tdir, tname, ss->st_uid, ss->st_gid, AT_SYMLINK_NOFOLLOW)
                       : fchownat(tdir, "", ss->st_uid, ss->st_gid, AT_EMPTY_PATH);
            if (rc < 0)
                return failed(w, path, "set the owner on the target", -errno);
            if ((rc = e_stat(tdir, tname, ts)) < 0)
                return failed(w, path, "look at the target", rc);
        }
    }
    if (!link && (ss->st_mode & 07777) != (ts->st_mode & 07777)) {
        differ(w, path, "mode %04o, the target's %04o", ss->st_mode & 07777, ts->st_mode & 07777);
        if (w->repair) {
            mode_t m = ss->st_mode & 07777;
            if (tname) {
                rc = fchmodat(tdir, tname, m, AT_SYMLINK_NOFOLLOW);
            } else {
                g_autofree char *p = tree_proc_path(tdir, NULL);
                rc = chmod(p, m);
            }
            if (rc < 0)
                return failed(w, path, "set the mode on the target", -errno);
        }
    }

    g_autoptr(GHashTable) sx = NULL;
    g_autoptr(GHashTable) tx = NULL;
    if ((rc = read_xattrs(sdir, sname, &sx)) < 0)
        return failed(w, path, "read the extended attributes", rc);
    if ((rc = read_xattrs(tdir, tname, &tx)) < 0)
        return failed(w, path, "read the extended attributes on the target", rc);
    if (!xattr_equal(sx, tx)) {
        differ(w, path, "extended attributes differ");
        if (w->repair && (rc = write_xattrs(tdir, tname, sx, tx)) < 0)
            return failed(w, path, "set the extended attributes on the target", rc);
    }

    if (!times_equal(&ss->st_mtim, &ts->st_mtim) || !times_equal(&ss->st_atim, &ts->st_atim)) {
        differ(w, path, "times differ (mtime %lld.%09ld, the target's %lld.%09ld)",
               (long long)ss->st_mtim.tv_sec, ss->st_mtim.tv_nsec, (long long)ts->st_mtim.tv_sec,
               ts->st_mtim.tv_nsec);
        if (w->repair) {
            struct timespec tv[2] = {ss->st_atim, ss->st_mtim};
            if (tname) {
                rc = utimensat(tdir, tname, tv, AT_SYMLINK_NOFOLLOW);
            } else {
                g_autofree char *p = tree_proc_path(tdir, NULL);
                rc = utimensat(AT_FDCWD, p, tv, 0);
            }
            if (rc < 0)
                return failed(w, path, "set the times on the target", -errno);
        }
    }
}

/* Open a directory to read it, without changing its access time (the
 * times are part of what is mirrored). */
static int open_read_dir(int dirfd, const char *name)
{
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dirfd, name ? name : ".", flags | O_NOATIME);

    if (fd < 0 && errno == EPERM)
        fd = openat(dirfd, name ? name : ".", flags);
    return fd < 0 ? -errno : fd;
}

static int name_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in a directory, sorted. */
static int list_dir(int fd, GPtrArray **out)
{
    int d2 = dup(fd);
    DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
    struct dirent *de;
    int rc = 0;

    if (!d) {
        rc = -errno;
        if (d2 >= 0)
            close(d2);
        return rc;
    }
    rewinddir(d);
    *out = g_ptr_array_new_with_free_func(g_free);
    while ((errno = 0, de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            g_ptr_array_add(*out, g_strdup(de->d_name));
    if (errno != 0)
        rc = -errno;
    closedir(d);
    g_ptr_array_sort(*out, name_cmp);
    return rc;
}

static char *child(const char *path, const char *name)
{
    return path[0] ? g_strconcat(path, "/", name, NULL) : g_strdup(name);
}

static void walk_dir(struct walk *w, int sfd, int tfd, const char *path, bool at_top);

/* Reading a symlink may set its access time (relatime: when it is older
 * than the change time, which setting the times makes "now"): the target's
 * is put back to what was seen before, which is what gets compared. */
static void keep_atime(int tdir, const char *name, const struct stat *before)
{
    struct stat now;

    if (tree_lstat(tdir, name, &now) == 0 && !times_equal(&now.st_atim, &before->st_atim)) {
        struct timespec tv[2] = {before->st_atim, {.tv_nsec = UTIME_OMIT}};
        utimensat(tdir, name, tv, AT_SYMLINK_NOFOLLOW);
    }
}

static bool target_is_link(int tdir, const char *name)
{
    struct stat st;

    return tree_lstat(tdir, name, &st) == 0 && S_ISLNK(st.st_mode);
}

/* Make the entry name of tdir a new one like the source's (ss). */
static int create_entry(struct walk *w, int sdir, const char *name, int tdir,
                        const char *path, const struct stat *ss, const char *slink,
                        struct image *img)
{
    int rc = 0;

    switch (ss->st_mode & S_IFMT) {
    case S_IFDIR:
        rc = mkdirat(tdir, name, 0700) < 0 ? -errno : 0;
        break;
    case S_IFLNK:
        rc = symlinkat(slink, tdir, name) < 0 ? -errno : 0;
        break;
    case S_IFREG: {
        int fd = image_target_dup_fd(img);
        if (fd >= 0) {
            g_autofree char *proc = tree_proc_path(fd, NULL);
            rc = linkat(AT_FDCWD, proc, tdir, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
            close(fd);
        } else {
            rc = fd;
        }
        /* No name left to link to (its last one was removed on the target,
         * or it never had a file there): a fresh copy. */
        if (rc == -ENOENT)
            rc = mirror_retarget_image(w->ns->job, img, path);
        break;
    }
    default: {
        /* A second name of a node made already: a link to it. */
        struct ident key = {ss->st_dev, ss->st_ino};
        int *first = w->t_fd ? g_hash_table_lookup(w->t_fd, &key) : NULL;
        if (first) {
            g_autofree char *proc = tree_proc_path(*first, NULL);
            rc = linkat(AT_FDCWD, proc, tdir, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
        } else {
            rc = mknodat(tdir, name, (ss->st_mode & S_IFMT) | 0600, ss->st_rdev) < 0 ? -errno : 0;
        }
        break;
    }
    }
    return rc;
}

/* Remember the target node of a non-directory with several names. */
static void note_links(struct walk *w, int tdir, const char *name, const struct stat *ss,
                       const struct stat *ts)
{
    if (!w->full || S_ISDIR(ss->st_mode) || (ss->st_nlink < 2 && ts->st_nlink < 2))
        return;
    struct ident s = {ss->st_dev, ss->st_ino}, t = {ts->st_dev, ts->st_ino};
    if (!g_hash_table_contains(w->s2t, &s)) {
        g_hash_table_insert(w->s2t, ident_new(ss), ident_new(ts));
        if (!S_ISREG(ss->st_mode)) {
            int *fd = g_new(int, 1);
            *fd = openat(tdir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (*fd >= 0)
                g_hash_table_insert(w->t_fd, ident_new(ss), fd);
            else
                g_free(fd);
        }
    }
    if (!g_hash_table_contains(w->t2s, &t))
        g_hash_table_insert(w->t2s, ident_new(ts), ident_new(ss));
}

/* Is the target's node (ts) the one that belongs to the source's (ss) in
 * the hard-link groups seen so far? */
static bool links_agree(struct walk *w, const struct stat *ss, const struct stat *ts)
{
    if (!w->full || S_ISDIR(ss->st_mode))
        return true;
    struct ident s = {ss->st_dev, ss->st_ino}, t = {ts->st_dev, ts->st_ino};
    struct ident *ht = g_hash_table_lookup(w->s2t, &s);
    struct ident *hs = g_hash_table_lookup(w->t2s, &t);
    return (!ht || ident_equal(ht, &t)) && (!hs || ident_equal(hs, &s));
}

/* The entry name: make the target's like the source's (see ns_sync). */
static void sync_entry(struct walk *w, int sdir, int tdir, const char *name, const char *path)
{
    struct stat ss, ts;
    g_autofree char *slink = NULL;
    g_autofree char *tlink = NULL;
    struct image *img = NULL;
    int rc = tree_lstat(sdir, name, &ss);

    /* Reading a symlink sets its access time (relatime): during the run
     * only to make one, or with link given by the caller who made it; the
     * completion audit reads every one, before its times are copied. */
    bool need_link = rc == 0 && S_ISLNK(ss.st_mode) && (w->full || !target_is_link(tdir, name));
    if (need_link && w->link) {
        slink = g_strdup(w->link);
    } else if (need_link) {
        slink = e_readlink(sdir, name, (size_t)ss.st_size, &rc);
        if (rc == 0)
            rc = tree_lstat(sdir, name, &ss);
    }
    if (rc == -ENOENT) {
        /* Not in the source (any more): not on the target either. */
        if (tree_lstat(tdir, name, &ts) == 0) {
            differ(w, path, "only on the target");
            if (w->repair && (rc = tree_remove(tdir, name)) < 0)
                failed(w, path, "remove it from the target", rc);
        }
        return;
    }
    if (rc < 0)
        return failed(w, path, "look at it in the source", rc);
    if (S_ISREG(ss.st_mode)) {
        img = mirror_image_for(w->ns->job, path, sdir, name, &ss);
        if (!img)
            return failed(w, path, "mirror it", -EIO);
    }

    bool created = false;
    rc = tree_lstat(tdir, name, &ts);
    bool same = rc == 0 && (ts.st_mode & S_IFMT) == (ss.st_mode & S_IFMT);
    const char *what = rc == 0 ? "of another type on the target" : "missing on the target";
    if (rc < 0 && rc != -ENOENT) {
        image_unref(img);
        return failed(w, path, "look at it on the target", rc);
    }
    if (same) {
        switch (ss.st_mode & S_IFMT) {
        case S_IFREG: {
            struct stat is;
            int fd = image_target_dup_fd(img);
            same = fd >= 0 && fstat(fd, &is) == 0 && is.st_dev == ts.st_dev &&
                   is.st_ino == ts.st_ino;
            if (fd >= 0)
                close(fd);
            what = "not the image's file on the target";
            break;
        }
        case S_IFLNK:
            if (!slink)
                break; /* not read: checked by the completion audit */
            tlink = e_readlink(tdir, name, (size_t)ts.st_size, &rc);
            same = tlink && strcmp(tlink, slink) == 0;
            keep_atime(tdir, name, &ts);
            what = "a symlink to elsewhere on the target";
            break;
        case S_IFCHR:
        case S_IFBLK:
            same = ts.st_rdev == ss.st_rdev;
            what = "another device number on the target";
            break;
        }
        if (same && !links_agree(w, &ss, &ts)) {
            same = false;
            what = "in another hard-link group on the target";
        }
    }
    if (!same) {
        differ(w, path, "%s", what);
        if (!w->repair) {
            image_unref(img);
            return;
        }
        if ((rc = tree_remove(tdir, name)) < 0 ||
            (rc = create_entry(w, sdir, name, tdir, path, &ss, slink, img)) < 0 ||
            (rc = tree_lstat(tdir, name, &ts)) < 0) {
            image_unref(img);
            return failed(w, path, "make it on the target", rc);
        }
        created = true;
    }
    note_links(w, tdir, name, &ss, &ts);

    if (S_ISDIR(ss.st_mode) && (w->deep || created)) {
        int sfd = open_read_dir(sdir, name);
        int tfd = sfd >= 0 ? open_read_dir(tdir, name) : -1;
        if (sfd < 0 || tfd < 0) {
            failed(w, path, sfd < 0 ? "read the directory" : "read the directory on the target",
                   sfd < 0 ? sfd : tfd);
        } else {
            bool deep = w->deep;
            w->deep = true;
            walk_dir(w, sfd, tfd, path, false);
            w->deep = deep;
        }
        if (sfd >= 0)
            close(sfd);
        if (tfd >= 0)
            close(tfd);
        /* What was made inside changed its times. */
        if ((rc = tree_lstat(tdir, name, &ts)) < 0)
            return failed(w, path, "look at it on the target", rc);
    }
    if (w->final && S_ISREG(ss.st_mode) && ss.st_size != ts.st_size) {
        differ(w, path, "size %lld, the target's %lld", (long long)ss.st_size,
               (long long)ts.st_size);
        if (w->repair)
            mirror_resync_image(w->ns->job, img, (uint64_t)ss.st_size);
    }
    image_unref(img);
    sync_meta(w, sdir, name, tdir, name, path, &ss, &ts);
}

/* Every entry of a directory pair; at_top: the roots, where the target's
 * lost+found of a file system's root is left alone. */
static void walk_dir(struct walk *w, int sfd, int tfd, const char *path, bool at_top)
{
    g_autoptr(GPtrArray) sn = NULL;
    g_autoptr(GPtrArray) tn = NULL;
    int rc;

    if ((rc = list_dir(sfd, &sn)) < 0)
        return failed(w, path, "read the directory", rc);
    if ((rc = list_dir(tfd, &tn)) < 0)
        return failed(w, path, "read the directory on the target", rc);
    guint i = 0, j = 0;
    while (i < sn->len || j < tn->len) {
        const char *a = i < sn->len ? g_ptr_array_index(sn, i) : NULL;
        const char *b = j < tn->len ? g_ptr_array_index(tn, j) : NULL;
        int c = !a ? 1 : !b ? -1 : strcmp(a, b);
        const char *name = c <= 0 ? a : b;
        g_autofree char *p = child(path, name);

        if (c > 0 && at_top && strcmp(name, "lost+found") == 0) {
            j++;
            continue;
        }
        /* Missing in the source: sync_entry removes it from the target. */
        sync_entry(w, sfd, tfd, name, p);
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
    }
}

static void walk_init(struct walk *w, struct ns *ns, bool repair, bool deep, bool full)
{
    memset(w, 0, sizeof(*w));
    w->ns = ns;
    w->repair = repair;
    w->deep = deep;
    w->full = full;
    if (full) {
        w->s2t = g_hash_table_new_full(ident_hash, ident_equal, g_free, g_free);
        w->t2s = g_hash_table_new_full(ident_hash, ident_equal, g_free, g_free);
        w->t_fd = g_hash_table_new_full(ident_hash, ident_equal, g_free, g_free);
    }
}

static int walk_done(struct walk *w, char **first)
{
    if (w->t_fd) {
        GHashTableIter it;
        gpointer fd;
        g_hash_table_iter_init(&it, w->t_fd);
        while (g_hash_table_iter_next(&it, NULL, &fd))
            close(*(int *)fd);
        g_hash_table_destroy(w->t_fd);
        g_hash_table_destroy(w->s2t);
        g_hash_table_destroy(w->t2s);
    }
    if (first)
        *first = w->first;
    else
        g_free(w->first);
    return w->error ? w->error : w->differences;
}

int ns_audit(struct ns *ns, unsigned flags, char **first)
{
    struct walk w;
    struct stat ss, ts;
    int sfd = open_read_dir(ns->src_root, NULL);
    int tfd = sfd >= 0 ? open_read_dir(ns->tgt_root, NULL) : -1;

    walk_init(&w, ns, flags & NS_REPAIR, true, true);
    w.final = flags & NS_FINAL;
    if (sfd < 0 || tfd < 0) {
        failed(&w, "", "read the top directory", sfd < 0 ? sfd : tfd);
    } else {
        walk_dir(&w, sfd, tfd, "", true);
        int rc = e_stat(sfd, NULL, &ss);
        if (rc == 0)
            rc = e_stat(tfd, NULL, &ts);
        if (rc < 0)
            failed(&w, "", "look at the top directory", rc);
        else
            sync_meta(&w, sfd, NULL, tfd, NULL, "", &ss, &ts);
    }
    if (sfd >= 0)
        close(sfd);
    if (tfd >= 0)
        close(tfd);
    return walk_done(&w, first);
}

/* The parents of path on both sides; the target's made when missing. */
static int open_parents(struct ns *ns, const char *path, int *sp, int *tp, const char **leaf)
{
    *sp = tree_open_parent(ns->src_root, path, false, leaf);
    if (*sp < 0)
        return *sp;
    *tp = tree_open_parent(ns->tgt_root, path, true, leaf);
    if (*tp < 0) {
        close(*sp);
        return *tp;
    }
    return 0;
}

static int sync_path(struct ns *ns, const char *path, unsigned flags, const char *link)
{
    struct walk w;
    const char *leaf;
    int sp, tp, rc;

    walk_init(&w, ns, true, flags & NS_DEEP, false);
    w.link = link;
    if (path[0] == '\0') {
        /* The top: its metadata. */
        struct stat ss, ts;
        if ((rc = e_stat(ns->src_root, NULL, &ss)) < 0 || (rc = e_stat(ns->tgt_root, NULL, &ts)) < 0)
            failed(&w, path, "look at the top directory", rc);
        else
            sync_meta(&w, ns->src_root, NULL, ns->tgt_root, NULL, path, &ss, &ts);
        goto out;
    }
    rc = open_parents(ns, path, &sp, &tp, &leaf);
    if (rc == -ENOENT || rc == -ENOTDIR) {
        /* Its directory is gone from the source: so is it; whatever holds
         * its place on the target goes when that directory is synced. */
        return 0;
    }
    if (rc < 0) {
        failed(&w, path, "reach its directory", rc);
    } else {
        struct stat ss, ts;
        sync_entry(&w, sp, tp, leaf, path);
        /* Its directory: an entry made or removed changed its times. */
        if (e_stat(sp, NULL, &ss) == 0 && e_stat(tp, NULL, &ts) == 0) {
            g_autofree char *dir = g_path_get_dirname(path);
            sync_meta(&w, sp, NULL, tp, NULL, strcmp(dir, ".") ? dir : "", &ss, &ts);
        }
        close(sp);
        close(tp);
    }
out:;
    g_autofree char *first = NULL;
    rc = walk_done(&w, &first);
    if (rc < 0)
        mirror_report_error(ns->job, "%s", first);
    return rc < 0 ? rc : 0;
}

int ns_sync(struct ns *ns, const char *path, unsigned flags)
{
    return sync_path(ns, path, flags, NULL);
}

int ns_sync_symlink(struct ns *ns, const char *path, const char *link)
{
    return sync_path(ns, path, 0, link);
}

int ns_rename(struct ns *ns, const char *from, const char *to, unsigned flags)
{
    const char *fl, *tl;
    int fp = tree_open_parent(ns->tgt_root, from, false, &fl);
    if (fp < 0)
        return fp;
    int tp = tree_open_parent(ns->tgt_root, to, true, &tl);
    int rc = tp;
    if (tp >= 0) {
        rc = renameat2(fp, fl, tp, tl, flags) < 0 ? -errno : 0;
        close(tp);
    }
    close(fp);
    return rc;
}

int ns_link(struct ns *ns, const char *existing, const char *path)
{
    const char *el, *nl;
    int ep = tree_open_parent(ns->tgt_root, existing, false, &el);
    int rc = ep;

    if (ep >= 0) {
        int np = tree_open_parent(ns->tgt_root, path, true, &nl);
        rc = np;
        if (np >= 0) {
            /* Flags 0: a symlink is linked, not what it points to. */
            rc = linkat(ep, el, np, nl, 0) < 0 ? -errno : 0;
            close(np);
        }
        close(ep);
    }
    /* Linked or not, the entry is then checked (and made, if the link
     * failed) from the source. */
    int src = ns_sync(ns, path, 0);
    return rc < 0 && src < 0 ? src : 0;
}
