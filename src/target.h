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

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct target;

/* What every backend's image begins with. */
struct target_image {
    struct target *target;
};

/* What a backend implements.  The callers never use these directly: they
 * call the functions below (target.c), which fill in what a backend leaves
 * out. */
struct target_ops {
    const char *kind;
    /* Open (creating missing parent directories) the image NAME.  With
     * fresh, it is a new file sized to size, all zero (a hole where the
     * backend can), whatever was there before; otherwise the file there is
     * kept as it is (anything but a regular file there is replaced by a
     * new one: probe tells the caller beforehand).  The backend fills in
     * (*out)->target.  On failure *err may say why in one line. */
    int (*open_image)(struct target *t, const char *name, uint64_t size, int fresh,
                      struct target_image **out, char **err);
    void (*close_image)(struct target_image *ti);
    /* Optional: whether NAME holds data already (0 and *size), -ENOENT
     * when there is no regular file of that name. */
    int (*probe)(struct target *t, const char *name, uint64_t *size);
    int (*pwrite)(struct target_image *ti, const void *buf, size_t len, uint64_t off);
    /* Read back (verify): all of [off, off+len), zeroes past the end. */
    int (*pread)(struct target_image *ti, void *buf, size_t len, uint64_t off);
    /* Make [off, off+len) read as zeroes, deallocating where possible;
     * -EOPNOTSUPP when the backend has no way but writing zeroes. */
    int (*zero)(struct target_image *ti, uint64_t off, uint64_t len);
    int (*truncate)(struct target_image *ti, uint64_t size);
    int (*flush)(struct target_image *ti);
    /* Optional: the image's file (the caller must not close it). */
    int (*fd)(struct target_image *ti);
    /* Optional: the root of the target's tree (a directory fd the caller
     * must not close): the namespace and metadata are mirrored (ns.c). */
    int (*tree_fd)(struct target *t);
    /* Make everything done so far durable (files and directory entries). */
    int (*sync_all)(struct target *t);
    /* Optional: make the names made so far durable (directory entries);
     * without it, sync_all. */
    int (*sync_names)(struct target *t);
    /* Optional: make everything of the mirror durable (its files, their
     * metadata, the names) without the rest of the file system; without
     * it, sync_all. */
    int (*sync_tree)(struct target *t);
    void (*destroy)(struct target *t);
};

struct target {
    const struct target_ops *ops;
    char *description; /* as shown in status: the directory or URI */
};

/* ---- the calls (target.c) ---------------------------------------------- */

/* Open the image NAME (see open_image above).  0, or -errno with *err (when
 * err is not NULL) set to the reason: the errno's text, and the backend's
 * details in parentheses where it has some. */
int target_open_image(struct target *t, const char *name, uint64_t size, bool fresh,
                      struct target_image **out, char **err);
/* NULL is accepted. */
void target_image_close(struct target_image *ti);
/* Whether NAME holds data already (0 and *size), -ENOENT when there is no
 * regular file of that name, -EOPNOTSUPP when the backend cannot tell. */
int target_probe(struct target *t, const char *name, uint64_t *size);
int target_pwrite(struct target_image *ti, const void *buf, size_t len, uint64_t off);
int target_pread(struct target_image *ti, void *buf, size_t len, uint64_t off);
/* [off, off+len) reads as zeroes: deallocated where the backend can,
 * written with zeroes where it cannot. */
int target_zero(struct target_image *ti, uint64_t off, uint64_t len);
int target_truncate(struct target_image *ti, uint64_t size);
int target_flush(struct target_image *ti);
/* The image's file, or -EOPNOTSUPP (the caller must not close it). */
int target_image_fd(struct target_image *ti);
/* The root of the target's tree, or -EOPNOTSUPP (no namespace). */
int target_tree_fd(struct target *t);
int target_sync_all(struct target *t);
/* The names made so far are durable (the backend's sync_names, or
 * sync_all). */
int target_sync_names(struct target *t);
/* Everything the mirror wrote is durable (the backend's sync_tree, or
 * sync_all): the completion's last step. */
int target_sync_tree(struct target *t);
/* NULL is accepted. */
void target_destroy(struct target *t);

/* A directory target reached through dirfd (taken over: closed by destroy). */
int target_file_new(int dirfd, const char *path, struct target **out);

/* NBD targets (target-nbd.c): true when spec is an NBD URI template
 * ("nbd://host:port/{name}", "nbd+unix:///{name}?socket=PATH", ...). */
int target_nbd_is_uri(const char *spec);
/* Connect to the server(s) named by the URI template; `{name}` stands for an
 * image's path inside SOURCE.  0, or -errno with *err set to one line. */
int target_nbd_new(const char *uri_template, struct target **out, char **err);

#endif
