/* target.h - the mirror's target as a black box.
 *
 * The job only ever writes, zeroes, resizes and flushes whole images and
 * mirrors namespace changes; how that happens (a local directory today, an
 * NBD server per image later) is the backend's business.  Names are paths
 * relative to the top of the mirror ("vm1/disk.img"), never absolute.
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
     * fresh, its old content is dropped and it is sized to size, all zero
     * (a hole where the backend can); otherwise it is kept as it is. */
    int (*open_image)(struct target *t, const char *name, mode_t mode, uint64_t size,
                      int fresh, struct target_image **out);
    void (*close_image)(struct target_image *ti);
    /* Whether NAME holds data already (0 and *size), -ENOENT when it does
     * not exist; NULL when the backend cannot tell. */
    int (*probe)(struct target *t, const char *name, uint64_t *size);
    int (*pwrite)(struct target_image *ti, const void *buf, size_t len, uint64_t off);
    /* Read back (verify): all of [off, off+len), zeroes past the end. */
    int (*pread)(struct target_image *ti, void *buf, size_t len, uint64_t off);
    /* Make [off, off+len) read as zeroes, deallocating where possible. */
    int (*zero)(struct target_image *ti, uint64_t off, uint64_t len);
    int (*truncate)(struct target_image *ti, uint64_t size);
    int (*flush)(struct target_image *ti);
    /* Namespace.  Missing entries are not errors for unlink and rmdir. */
    int (*mkdir)(struct target *t, const char *name, mode_t mode);
    int (*rmdir)(struct target *t, const char *name);
    int (*unlink)(struct target *t, const char *name);
    int (*rename)(struct target *t, const char *from, const char *to, unsigned flags);
    int (*symlink)(struct target *t, const char *linkname, const char *name);
    /* A second name for an image (hard link); NULL when the backend has no
     * such thing. */
    int (*link)(struct target *t, const char *existing, const char *name);
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
