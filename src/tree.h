/* tree.h - operations on a directory tree reached through a directory fd
 * (its root) that never follow a symlink in any component and never reach
 * anything above the root (doc/design.md, invariant 9).
 *
 * Paths are relative to the root: components separated by '/', none of
 * them empty, "." or ".." ("" is the root itself).  They may be of any
 * length: longer than PATH_MAX is walked a piece at a time.
 *
 * No FUSE, no job, no locks: callers serialise changes to one tree.  All
 * functions return 0 (or an fd) or -errno, and keep errno's value to
 * themselves.
 */
#ifndef MIRRORFS_TREE_H
#define MIRRORFS_TREE_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

/* True when rel is a path this module accepts. */
bool tree_path_ok(const char *rel);

/* Open the directory rel beneath root (O_PATH unless flags say otherwise;
 * O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC are added).  -ELOOP or -ENOTDIR when
 * a component is a symlink or not a directory. */
int tree_open_dir(int root, const char *rel, int flags);

/* Open the directory that holds the last component of rel and point *leaf
 * at that component (inside rel).  With create, missing directories on the
 * way are made (mode 0700: whoever mirrors the tree sets their metadata)
 * and an entry of any other type in the way, a symlink included, is
 * removed first, never followed.  rel must not be "".  An O_PATH fd. */
int tree_open_parent(int root, const char *rel, bool create, const char **leaf);

/* Remove the entry name of dirfd, whatever it is: a directory with
 * everything below it.  Missing is not an error. */
int tree_remove(int dirfd, const char *name);

/* fsync the directory rel beneath root and every directory below it (never
 * through a symlink): the names they hold are then durable, without the
 * write-back of every other file on the file system that syncfs does. */
int tree_sync_dirs(int root, const char *rel);
/* The same, and every regular file too: what the tree holds is durable,
 * data, names and the metadata of its files and directories (of a
 * symlink, FIFO or device node only as far as its directory's fsync
 * carries it: on ext4 and XFS, with the journal). */
int tree_sync_all(int root, const char *rel);

/* The entry name of dirfd, not followed (fstatat AT_SYMLINK_NOFOLLOW). */
int tree_lstat(int dirfd, const char *name, struct stat *st);

/* A path that reaches the entry name of dirfd through /proc without
 * following name itself when used with the l* calls (lgetxattr ...), or
 * the object of an O_PATH fd when name is NULL (chmod, getxattr ...):
 * "/proc/self/fd/N/name" or "/proc/self/fd/N".  g_free it. */
char *tree_proc_path(int fd, const char *name);

#endif
