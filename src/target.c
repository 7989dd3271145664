/* target.c - the calls every user of a target goes through (see target.h):
 * optional operations and the fallback for zeroes in one place. */
#include "config.h"

#include "target.h"

#include <errno.h>
#include <glib.h>

int target_open_image(struct target *t, const char *name, uint64_t size, bool fresh,
                      struct target_image **out, char **err)
{
    g_autofree char *why = NULL;
    int rc = t->ops->open_image(t, name, size, fresh, out, &why);

    if (rc < 0 && err)
        *err = why ? g_strdup_printf("%s (%s)", g_strerror(-rc), why) : g_strdup(g_strerror(-rc));
    return rc;
}

void target_image_close(struct target_image *ti)
{
    if (ti)
        ti->target->ops->close_image(ti);
}

int target_probe(struct target *t, const char *name, uint64_t *size)
{
    return t->ops->probe ? t->ops->probe(t, name, size) : -EOPNOTSUPP;
}

int target_pwrite(struct target_image *ti, const void *buf, size_t len, uint64_t off)
{
    return ti->target->ops->pwrite(ti, buf, len, off);
}

int target_pread(struct target_image *ti, void *buf, size_t len, uint64_t off)
{
    return ti->target->ops->pread(ti, buf, len, off);
}

#define ZERO_BUF_SIZE (1u << 20)

int target_zero(struct target_image *ti, uint64_t off, uint64_t len)
{
    static const char zeroes[ZERO_BUF_SIZE];
    int rc = ti->target->ops->zero(ti, off, len);

    if (rc != -EOPNOTSUPP)
        return rc;
    /* No way to deallocate or zero in place: write zeroes. */
    while (len > 0) {
        size_t n = len < sizeof(zeroes) ? (size_t)len : sizeof(zeroes);
        if ((rc = target_pwrite(ti, zeroes, n, off)) < 0)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

int target_truncate(struct target_image *ti, uint64_t size)
{
    return ti->target->ops->truncate(ti, size);
}

int target_flush(struct target_image *ti)
{
    return ti->target->ops->flush(ti);
}

int target_image_fd(struct target_image *ti)
{
    return ti->target->ops->fd ? ti->target->ops->fd(ti) : -EOPNOTSUPP;
}

int target_tree_fd(struct target *t)
{
    return t->ops->tree_fd ? t->ops->tree_fd(t) : -EOPNOTSUPP;
}

int target_sync_all(struct target *t)
{
    return t->ops->sync_all(t);
}

int target_sync_names(struct target *t)
{
    return t->ops->sync_names ? t->ops->sync_names(t) : t->ops->sync_all(t);
}

int target_sync_tree(struct target *t)
{
    return t->ops->sync_tree ? t->ops->sync_tree(t) : t->ops->sync_all(t);
}

void target_destroy(struct target *t)
{
    if (t)
        t->ops->destroy(t);
}
