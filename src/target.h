/* target.h - the mirror's target as a black box for data.
 *
 * The job writes, zeroes, resizes and flushes whole images; how that
 * happens (a local directory, or an NBD export per image) is the backend's
 * business.  Names are paths relative to the top of the mirror
 * ("vm1/disk.img"), never absolute.  The namespace and metadata around the
 * images (directories, symlinks, special files, modes, owners, times,
 * xattrs, hard links) exist only on a directory target, which hands its
 * tree to ns.c (tree_fd); an NBD target keeps image data only.
 *
 * All functions return 0 or -errno and are safe to call from several
 * threads at once, on the same image too (positional I/O only).
 */
#ifndef MIRRORFS_TARGET_H
#define MIRRORFS_TARGET_H

#include <stdint.h>
#include <sys/types.h>

struct target;
struct target_image;

struct target_ops {
    const char *kind;
    /* Open (creating missing parent directories) the image NAME.  With
     * fresh, it is a new file sized to size, all zero (a hole where the
     * backend can), whatever was there before; otherwise the file there is
     * kept as it is (anything but a regular file there is replaced by a
     * new one: probe tells the caller beforehand). */
    int (*open_image)(struct target *t, const char *name, mode_t mode, uint64_t size,
                      int fresh, struct target_image **out);
    void (*close_image)(struct target_image *ti);
    /* Whether NAME holds data already (0 and *size), -ENOENT when there is
     * no regular file of that name; NULL when the backend cannot tell. */
    int (*probe)(struct target *t, const char *name, uint64_t *size);
    int (*pwrite)(struct target_image *ti, const void *buf, size_t len, uint64_t off);
    /* Read back (verify): all of [off, off+len), zeroes past the end. */
    int (*pread)(struct target_image *ti, void *buf, size_t len, uint64_t off);
    /* Make [off, off+len) read as zeroes, deallocating where possible. */
    int (*zero)(struct target_image *ti, uint64_t off, uint64_t len);
    int (*truncate)(struct target_image *ti, uint64_t size);
    int (*flush)(struct target_image *ti);
    /* The image's file, for the namespace (an fd the caller must not
     * close); NULL when the backend has no files. */
    int (*fd)(struct target_image *ti);
    /* The root of the target's tree (a directory fd the caller must not
     * close); NULL when the backend has no tree. */
    int (*tree_fd)(struct target *t);
    /* Make everything done so far durable (files and directory entries). */
    int (*sync_all)(struct target *t);
    void (*destroy)(struct target *t);
};

struct target {
    const struct target_ops *ops;
    char *description; /* as shown in status: the directory or URI */
};

/* A directory target reached through dirfd (taken over: closed by destroy). */
int target_file_new(int dirfd, const char *path, struct target **out);

/* NBD targets (target-nbd.c): true when spec is an NBD URI template
 * ("nbd://host:port/{name}", "nbd+unix:///{name}?socket=PATH", ...). */
int target_nbd_is_uri(const char *spec);
/* Connect to the server(s) named by the URI template; `{name}` stands for an
 * image's path inside SOURCE.  0, or -errno with *err set to one line. */
int target_nbd_new(const char *uri_template, struct target **out, char **err);

#endif
