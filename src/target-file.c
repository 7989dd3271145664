/* target-file.c - a target that is a local directory. */
#include "config.h"

#include "target.h"
#include "tree.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <glib.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_target {
    struct target base;
    int dirfd;
};

struct file_image {
    struct target_image base;
    int fd;
    int direct_fd; /* O_DIRECT, for aligned writes; -1 where unsupported */
};

static struct file_image *file_image(struct target_image *ti)
{
    return (struct file_image *)ti;
}

static int ft_dirfd(struct target *t)
{
    return ((struct file_target *)t)->dirfd;
}

static int ft_open_image(struct target *t, const char *name, uint64_t size, int fresh,
                         struct target_image **out, char **err)
{
    const char *leaf;
    struct stat st;
    int fd = -1, rc;
    int dir = tree_open_parent(ft_dirfd(t), name, true, &leaf);

    if (dir < 0)
        return dir;
    /* O_NONBLOCK: whatever is there is never waited for (a FIFO).
     * O_NOATIME: the daemon's own reads (a verify) leave the target's
     * access time as the audit set it (invariant 10). */
    if (!fresh) {
        fd = openat(dir, leaf, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME);
        if (fd < 0 && errno == EPERM)
            fd = openat(dir, leaf, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    }
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        /* A new file: a stale one may have other names (hard links) that
         * must not see this image's data, and anything else in its place
         * goes (never followed). */
        rc = tree_remove(dir, leaf);
        if (rc == 0) {
            fd = openat(dir, leaf,
                        O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOATIME, 0600);
            rc = fd < 0 ? -errno : 0;
        }
        if (rc == 0 && ftruncate(fd, (off_t)size) < 0)
            rc = -errno;
        if (rc < 0) {
            if (fd >= 0)
                close(fd);
            close(dir);
            return rc;
        }
        /* Its mode and owner come with the namespace (ns.c); until then
         * nobody but root reads it. */
    } else {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }
    close(dir);
    struct file_image *fi = g_new0(struct file_image, 1);
    fi->base.target = t;
    fi->fd = fd;
    /* Whole-block copies bypass the target's page cache (they are not read
     * back); tails and guest-sized writes go through the page cache.  The
     * kernel keeps the two coherent: a direct write writes back and drops
     * the cached pages of its range. */
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", fd);
    fi->direct_fd = open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
    *out = &fi->base;
    return 0;
}

static int ft_probe(struct target *t, const char *name, uint64_t *size)
{
    struct stat st;
    const char *leaf;
    int dir = tree_open_parent(ft_dirfd(t), name, false, &leaf);

    if (dir < 0)
        return dir == -ENOTDIR || dir == -ELOOP ? -ENOENT : dir;
    int rc = tree_lstat(dir, leaf, &st);
    close(dir);
    if (rc < 0)
        return rc;
    if (!S_ISREG(st.st_mode))
        return -ENOENT;
    *size = (uint64_t)st.st_size;
    return 0;
}

static void ft_close_image(struct target_image *base)
{
    struct file_image *ti = file_image(base);

    if (ti) {
        if (ti->direct_fd >= 0)
            close(ti->direct_fd);
        close(ti->fd);
        g_free(ti);
    }
}

#define DIRECT_ALIGN 4096

static int ft_pwrite(struct target_image *base, const void *buf, size_t len, uint64_t off)
{
    struct file_image *ti = file_image(base);
    const char *p = buf;
    bool aligned = ((uintptr_t)buf | len | off) % DIRECT_ALIGN == 0;
    int fd = aligned && ti->direct_fd >= 0 ? ti->direct_fd : ti->fd;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINVAL && fd == ti->direct_fd) {
            /* A file system that opens O_DIRECT but refuses this write. */
            fd = ti->fd;
            continue;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int ft_pread(struct target_image *base, void *buf, size_t len, uint64_t off)
{
    struct file_image *ti = file_image(base);
    char *p = buf;

    while (len > 0) {
        ssize_t n = pread(ti->fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int ft_zero(struct target_image *base, uint64_t off, uint64_t len)
{
    struct file_image *ti = file_image(base);
    struct stat st;

    if (fallocate(ti->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    /* No hole punching here: zeroes beyond the end are implied by the
     * size, the rest is written (target.c). */
    if (fstat(ti->fd, &st) < 0)
        return -errno;
    return off >= (uint64_t)st.st_size ? 0 : -EOPNOTSUPP;
}

static int ft_truncate(struct target_image *ti, uint64_t size)
{
    return ftruncate(file_image(ti)->fd, (off_t)size) < 0 ? -errno : 0;
}

static int ft_flush(struct target_image *ti)
{
    return fsync(file_image(ti)->fd) < 0 ? -errno : 0;
}

static int ft_fd(struct target_image *ti)
{
    return file_image(ti)->fd;
}

static int ft_tree_fd(struct target *t)
{
    return ft_dirfd(t);
}

static int ft_sync_all(struct target *t)
{
    /* syncfs covers the directory entries of every subdirectory as well. */
    return syncfs(ft_dirfd(t)) < 0 ? -errno : 0;
}

/* fsync of every directory of the tree: syncfs would also write back
 * everything else dirty on the file system, a source on it included (a
 * source that a guest has just written: 1.3 s per 2 GiB before the first
 * pass could start). */
static int ft_sync_names(struct target *t)
{
    return tree_sync_dirs(ft_dirfd(t), "");
}

/* fsync of every directory and regular file of the tree: what syncfs
 * would make durable of it, without writing back every other dirty file of
 * the file system (a busy neighbour's made a pivot's pause 0.3-1.4 s
 * instead of tens of ms). */
static int ft_sync_tree(struct target *t)
{
    return tree_sync_all(ft_dirfd(t), "");
}

static void ft_destroy(struct target *t)
{
    struct file_target *ft = (struct file_target *)t;

    if (!ft)
        return;
    close(ft->dirfd);
    g_free(ft->base.description);
    g_free(ft);
}

static const struct target_ops file_target_ops = {
    .kind = "directory",
    .open_image = ft_open_image,
    .close_image = ft_close_image,
    .probe = ft_probe,
    .pwrite = ft_pwrite,
    .pread = ft_pread,
    .zero = ft_zero,
    .truncate = ft_truncate,
    .flush = ft_flush,
    .fd = ft_fd,
    .tree_fd = ft_tree_fd,
    .sync_all = ft_sync_all,
    .sync_names = ft_sync_names,
    .sync_tree = ft_sync_tree,
    .destroy = ft_destroy,
};

int target_file_new(int dirfd, const char *path, struct target **out)
{
    struct file_target *ft = g_new0(struct file_target, 1);

    ft->base.ops = &file_target_ops;
    ft->base.description = g_strdup(path);
    ft->dirfd = dirfd;
    *out = &ft->base;
    return 0;
}
