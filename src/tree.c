/* tree.c - symlink-free operations beneath a directory fd (see tree.h). */
#include "config.h"

#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdint.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

bool tree_path_ok(const char *rel)
{
    if (rel[0] == '\0')
        return true;
    for (const char *p = rel;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!slash)
            return true;
        p = slash + 1;
    }
}

/* One resolution beneath dirfd with no symlink in any component and no
 * escape: the kernel checks every component (Linux 5.6). */
static int open_beneath(int dirfd, const char *rel, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd;

    do {
        fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
    } while (fd < 0 && errno == EAGAIN);
    return fd < 0 ? -errno : (int)fd;
}

/* Walk the directories of rel[0, len) one component at a time from root,
 * making missing ones and replacing entries of another type when create.
 * Returns an fd (flags) of the last one. */
static int walk_dirs(int root, const char *rel, size_t len, bool create, int flags)
{
    int cur = -1; /* -1: root itself */
    size_t pos = 0;

    while (pos < len) {
        const char *comp = rel + pos;
        const char *slash = memchr(comp, '/', len - pos);
        size_t n = slash ? (size_t)(slash - comp) : len - pos;
        g_autofree char *name = g_strndup(comp, n);
        int at = cur >= 0 ? cur : root;
        bool last = pos + n >= len;
        int fd = openat(at, name, (last ? flags : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0 && create && (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)) {
            /* Something else where a directory belongs, a symlink above
             * all: removed, never followed. */
            int rc = errno != ENOENT ? tree_remove(at, name) : 0;
            if (rc == 0 && mkdirat(at, name, 0700) < 0 && errno != EEXIST)
                rc = -errno;
            if (rc < 0) {
                if (cur >= 0)
                    close(cur);
                return rc;
            }
            fd = openat(at, name, (last ? flags : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        int saved = errno;
        if (cur >= 0)
            close(cur);
        if (fd < 0)
            return -saved;
        cur = fd;
        pos += n + 1;
    }
    if (cur < 0)
        cur = openat(root, ".", flags | O_DIRECTORY | O_CLOEXEC);
    return cur < 0 ? -errno : cur;
}

/* The directory rel[0, len) beneath root: one openat2 when it is short
 * enough and all there, else the walk. */
static int open_dirs(int root, const char *rel, size_t len, bool create, int flags)
{
    if (len == 0)
        return walk_dirs(root, rel, 0, create, flags);
    if (len < PATH_MAX) {
        g_autofree char *dir = g_strndup(rel, len);
        int fd = open_beneath(root, dir, flags | O_DIRECTORY);
        /* A symlink in the way makes openat2 fail with ELOOP; the walk
         * replaces it when asked to create, and fails otherwise. */
        if (fd >= 0 || (!create && fd != -ENAMETOOLONG))
            return fd;
    }
    return walk_dirs(root, rel, len, create, flags);
}

int tree_open_dir(int root, const char *rel, int flags)
{
    if (!tree_path_ok(rel))
        return -EINVAL;
    return open_dirs(root, rel, strlen(rel), false, flags ? flags : O_PATH);
}

int tree_open_parent(int root, const char *rel, bool create, const char **leaf)
{
    if (rel[0] == '\0' || !tree_path_ok(rel))
        return -EINVAL;
    const char *slash = strrchr(rel, '/');
    *leaf = slash ? slash + 1 : rel;
    return open_dirs(root, rel, slash ? (size_t)(slash - rel) : 0, create, O_PATH);
}

int tree_lstat(int dirfd, const char *name, struct stat *st)
{
    return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* The names in the directory fd (O_RDONLY) but "." and "..", read in full
 * before anything changes (removing while reading may skip entries), or
 * only those that may be directories (and regular files).  0 or -errno. */
enum which_names { ALL_NAMES, DIR_NAMES, DIR_AND_FILE_NAMES };

static int read_names(int fd, enum which_names which, GPtrArray *names)
{
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    struct dirent *de;
    int rc = 0;

    if (!d) {
        rc = -errno;
        if (dup_fd >= 0)
            close(dup_fd);
        return rc;
    }
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (which == ALL_NAMES || de->d_type == DT_DIR || de->d_type == DT_UNKNOWN ||
            (which == DIR_AND_FILE_NAMES && de->d_type == DT_REG))
            g_ptr_array_add(names, g_strdup(de->d_name));
    }
    if (errno != 0)
        rc = -errno;
    closedir(d);
    return rc;
}

/* Everything inside the directory fd (O_RDONLY), recursively. */
static int empty_dir(int fd)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    int rc = read_names(fd, ALL_NAMES, names);
    for (guint i = 0; rc == 0 && i < names->len; i++)
        rc = tree_remove(fd, g_ptr_array_index(names, i));
    return rc;
}

int tree_remove(int dirfd, const char *name)
{
    struct stat st;

    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int rc = empty_dir(fd);
    close(fd);
    if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}

/* fsync the regular file name in dir (not waiting for a FIFO, never
 * opening a device); 0 when it is not a regular file or gone. */
static int sync_file(int dir, const char *name)
{
    struct stat st;
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOATIME | O_CLOEXEC | O_PATH);

    if (fd < 0)
        return errno == ENOENT || errno == ELOOP ? 0 : -errno;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc == 0 && S_ISREG(st.st_mode)) {
        g_autofree char *proc = tree_proc_path(fd, NULL);
        int rfd = open(proc, O_RDONLY | O_NOATIME | O_CLOEXEC);
        if (rfd < 0 && errno == EPERM)
            rfd = open(proc, O_RDONLY | O_CLOEXEC);
        rc = rfd < 0 ? -errno : fsync(rfd) < 0 ? -errno : 0;
        if (rfd >= 0)
            close(rfd);
    }
    close(fd);
    return rc;
}

/* fd: a directory opened O_RDONLY.  Its subdirectories first (and with
 * files its regular files), then itself; one fd per level (the names are
 * read before descending). */
static int sync_dir_fd(int fd, bool files)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    int rc = read_names(fd, files ? DIR_AND_FILE_NAMES : DIR_NAMES, names);
    for (guint i = 0; rc == 0 && i < names->len; i++) {
        /* O_NOATIME: reading a directory must not move the access time
         * the audit set (root may; anyone else on their own files). */
        int sub = openat(fd, g_ptr_array_index(names, i),
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
        if (sub < 0 && errno == EPERM)
            sub = openat(fd, g_ptr_array_index(names, i),
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            /* Not a directory (a file, DT_UNKNOWN), a symlink, or gone. */
            if (errno == ENOTDIR && files)
                rc = sync_file(fd, g_ptr_array_index(names, i));
            else if (errno != ENOTDIR && errno != ELOOP && errno != ENOENT)
                rc = -errno;
            continue;
        }
        rc = sync_dir_fd(sub, files);
        close(sub);
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    return rc;
}

static int sync_tree(int root, const char *rel, bool files)
{
    int fd = tree_open_dir(root, rel, O_RDONLY | O_DIRECTORY | O_NOATIME);

    if (fd == -EPERM)
        fd = tree_open_dir(root, rel, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fd;
    int rc = sync_dir_fd(fd, files);
    close(fd);
    return rc;
}

int tree_sync_dirs(int root, const char *rel)
{
    return sync_tree(root, rel, false);
}

int tree_sync_all(int root, const char *rel)
{
    return sync_tree(root, rel, true);
}

char *tree_proc_path(int fd, const char *name)
{
    return name ? g_strdup_printf("/proc/self/fd/%d/%s", fd, name)
                : g_strdup_printf("/proc/self/fd/%d", fd);
}
