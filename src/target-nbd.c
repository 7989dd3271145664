/* target-nbd.c - a target that is one NBD export per image (libnbd).
 *
 * -o target=URI_TEMPLATE, where `{name}` stands for the image's path inside
 * SOURCE (URI-escaped): nbd+unix:///{name}?socket=/run/dst.sock,
 * nbd://host:10809/{name}.  target_nbd_new checks that the server answers
 * (when {name} only picks the export); open_image connects to the image's
 * export and checks that it exists (else ENOENT), is writable (EROFS) and is
 * at least as large as the image (ENOSPC).  The server must outlive its
 * clients (qemu-nbd -t): we disconnect after the check and on reconnects.
 *
 * Connections (nbd-conn.c).  Every command is asynchronous and one
 * dispatcher thread per connection drives libnbd, so any number of copy
 * workers have requests in flight on one connection, the way QEMU's mirror
 * drives its one NBD client.  One connection per image keeps a flush
 * simple (it covers every write made on its connection, which multi-conn
 * would only promise for servers that advertise it) and needs nothing of
 * the server (qemu-nbd serves one client unless given --shared).
 *
 * The dispatcher starts with an image's first I/O, not at open: open_image
 * runs before fuse_daemonize() forks and threads do not survive a fork.
 * What open does (connect, check, zero a fresh export) drives the handle from
 * the calling thread, with deadlines.
 *
 * Zeroes.  zero() sends write-zeroes without NO_HOLE, so the server may
 * deallocate.  A fresh export is made to read as zero all through (past the
 * image's end too, so that a compare against the source passes): block
 * status skips what reads as zero already, fast zero does the rest, or trim
 * then a second look, or plain write-zeroes as the last resort.  Exports
 * cannot be resized: truncate past the export's size is ENOSPC, and a
 * shrink only records that the tail must be zeroed, which happens before the
 * next write reaching into it or the next flush.  truncate does no I/O
 * because the job calls it from a guest's truncate, under the image's lock.
 * Unaligned I/O on a server with a minimum block size is read-modify-write,
 * exclusive of any other write to the image.
 *
 * Locking.  Order: target->lock, image->tail_lock, image->block_lock,
 * image->lock.  Any of them may be held across calls into nbd-conn.c, whose
 * own locks (a connection's, a waiter's) come after them all and are never
 * held across libnbd calls (nbd-conn.h).
 *
 * Failures.  No request waits forever: when requests are in flight and no
 * reply came for the stall timeout (nbd-conn.c; MIRRORFS_NBD_STALL_TIMEOUT
 * shortens it for tests), the connection is declared dead and its socket
 * shut, which makes libnbd fail every command in flight.  The failed
 * call returns the error (the job re-dirties the range and applies its
 * policy); the next call on the image reconnects, with back-off shared by
 * the image's callers and a budget per call (RECONNECT_BUDGET_NS), so a
 * worker never hangs on a server that is gone.  A reconnect keeps writing
 * to the export the image was opened on, even when the image was renamed
 * since.  An NBD target has no namespace (no tree_fd): exports are made by
 * the server's administrator, and only image data is mirrored; a source
 * with hard links is refused (an export cannot have two names).
 *
 * Limits of what a client can know, documented rather than hidden:
 * - Writes acknowledged but not yet flushed when a server dies may be lost
 *   with it (nbdkit memory, a crashed host).  The first flush after a
 *   reconnect returns ESTALE, and the job copies everything written since
 *   the last good flush again.
 * - A write on a connection we shut because it stalled may still be applied
 *   by the server after the newer copy of the same range was written on the
 *   new connection.  The stall timeout is long so that this only happens to
 *   servers that are truly stuck.
 */
#include "config.h"

#include "nbd-conn.h"
#include "target.h"
#include "util.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define MS ((uint64_t)1000 * 1000)
#define SEC (1000 * MS)
/* How long one call may spend reconnecting before it fails. */
#define RECONNECT_BUDGET_NS (3 * SEC)
#define BACKOFF_MIN_NS (100 * MS)
#define BACKOFF_MAX_NS (2 * SEC)

struct nbd_target {
    struct target base;
    char *tmpl;
    pthread_mutex_t lock;
    GPtrArray *open; /* struct nbd_image *, for sync_all; lock */
};

struct nbd_image {
    struct target_image base;
    struct nbd_target *t;
    char *uri;
    /* Serialises zeroing a pending tail. */
    pthread_mutex_t tail_lock;
    /* Servers with a minimum block size: read-modify-write exclusive,
     * other writes shared. */
    pthread_rwlock_t block_lock;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* a connect attempt ended */
    struct conn *conn;   /* one reference; NULL when none */
    bool connecting;
    uint64_t next_attempt_ns;
    uint64_t backoff_ns;
    int last_errno;
    uint64_t export_size;
    uint64_t image_size; /* what the export must hold */
    /* Everything from zero_from to the end of the export reads as zero. */
    uint64_t zero_from;
    /* The image shrank: [tail_from, end) must read as zero before a write
     * reaches into it and before a flush returns.  UINT64_MAX: nothing. */
    uint64_t tail_from;
    /* Connections made after the first, and that count at the last good
     * flush: a flush after a reconnect cannot vouch for writes sent on the
     * dead connection. */
    unsigned reconnects;
    unsigned reconnects_flushed;
};

static struct nbd_image *nbd_image(struct target_image *ti)
{
    return (struct nbd_image *)ti;
}

/* A now_ns() time as pthread_cond_timedwait() wants it for a condition
 * variable on CLOCK_MONOTONIC (cond_init_monotonic). */
static struct timespec abs_monotonic(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / SEC), .tv_nsec = (long)(ns % SEC)};
}

/* ---- writing and zeroing -------------------------------------------------------- */

/* conn_write_aligned for any range: the partial blocks at either end, if the
 * server has a minimum block size, are read, patched and written back. */
static int write_range(struct nbd_image *ti, struct conn *c, bool drive, const char *buf,
                       uint64_t len, uint64_t off)
{
    uint64_t m = conn_info(c)->min_block;
    uint64_t head = MIN(len, off % m ? m - off % m : 0);
    uint64_t tail = (len - head) % m;
    uint64_t mid = len - head - tail;
    int rc = 0;

    if (m == 1)
        return conn_write_aligned(c, drive, buf, len, off);
    /* A read-modify-write must not interleave with another write to its
     * block (two granules, or a guest's write-blocking write and a copy,
     * can share a block): it holds the image's block lock exclusively,
     * aligned writes share it. */
    if (head || tail)
        pthread_rwlock_wrlock(&ti->block_lock);
    else
        pthread_rwlock_rdlock(&ti->block_lock);
    if (head)
        rc = conn_rmw_block(c, drive, buf, head, off);
    if (rc == 0 && tail)
        rc = conn_rmw_block(c, drive, buf ? buf + head + mid : NULL, tail,
                            off + head + mid);
    if (rc == 0)
        rc = conn_write_aligned(c, drive, buf ? buf + head : NULL, mid, off + head);
    pthread_rwlock_unlock(&ti->block_lock);
    return rc;
}

static uint64_t parts_bytes(const GArray *a)
{
    uint64_t n = 0;

    for (guint i = 0; i + 1 < a->len; i += 2)
        n += g_array_index(a, uint64_t, i + 1);
    return n;
}

/* Make [from, to) read as zero, cheaply: skip what reads as zero already
 * (block status); zero the rest with fast zero (a server that cannot do it
 * quickly says so instead of writing zeroes); else trim and look again
 * (trimmed blocks usually read as zero); what is left gets plain write
 * zeroes (which may still deallocate) or, without a zero command, written
 * zeroes. */
static int make_zero(struct nbd_image *ti, struct conn *c, bool drive, uint64_t from,
                     uint64_t to)
{
    const struct conn_info *ci = conn_info(c);
    g_autoptr(GArray) parts = NULL;
    int rc;

    if (from >= to)
        return 0;
    rc = conn_nonzero_parts(c, drive, from, to, &parts);
    if (rc < 0 || parts->len == 0)
        return rc;
    if (ci->can_zero && ci->can_fast_zero && ci->min_block == 1) {
        struct waiter *w = waiter_new(c, drive);
        for (guint i = 0; rc == 0 && i + 1 < parts->len; i += 2) {
            uint64_t off = g_array_index(parts, uint64_t, i);
            uint64_t len = g_array_index(parts, uint64_t, i + 1);
            while (rc == 0 && len > 0) {
                uint64_t n = MIN(len, conn_zero_piece(c));
                rc = waiter_issue(w, OP_FAST_ZERO, NULL, n, off);
                off += n;
                len -= n;
            }
        }
        int wrc = waiter_wait(w);
        waiter_unref(w);
        if (rc == 0)
            rc = wrc;
        if (rc == 0)
            return 0;
        if (rc != -ENOTSUP && rc != -EOPNOTSUPP)
            return rc;
    }
    if (ci->can_trim && ci->can_block_status && ci->min_block == 1) {
        for (guint i = 0; i + 1 < parts->len; i += 2) {
            rc = conn_run_pieces(c, drive, OP_TRIM, NULL,
                                 g_array_index(parts, uint64_t, i + 1),
                                 g_array_index(parts, uint64_t, i), conn_zero_piece(c));
            if (rc < 0)
                break;
        }
        if (rc == 0) {
            GArray *left = NULL;
            rc = conn_nonzero_parts(c, drive, from, to, &left);
            if (rc < 0)
                return rc;
            if (parts_bytes(left) < parts_bytes(parts)) {
                g_array_free(parts, TRUE);
                parts = left;
            } else {
                g_array_free(left, TRUE);
            }
        }
    }
    for (guint i = 0; i + 1 < parts->len; i += 2) {
        rc = write_range(ti, c, drive, NULL, g_array_index(parts, uint64_t, i + 1),
                         g_array_index(parts, uint64_t, i));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- the image's connection ---------------------------------------------------- */

/* The image's live connection, with a reference, its dispatcher running.
 * When the connection is gone, reconnect: one caller at a time, the others
 * wait for its outcome; after a failure the next attempt waits out a
 * back-off.  A call gives up after RECONNECT_BUDGET_NS, or at once when the
 * back-off runs past its budget, with the last connect error. */
static int image_conn(struct nbd_image *ti, struct conn **out)
{
    uint64_t deadline = now_ns() + RECONNECT_BUDGET_NS;
    struct conn *c;
    int rc;

    pthread_mutex_lock(&ti->lock);
    for (;;) {
        c = ti->conn;
        if (c && !conn_dead(c))
            break;
        if (c) {
            /* Dead: drop it (the last reference may wait for its thread). */
            ti->conn = NULL;
            pthread_mutex_unlock(&ti->lock);
            conn_unref(c);
            pthread_mutex_lock(&ti->lock);
            continue;
        }
        uint64_t now = now_ns();
        uint64_t wait_until = ti->connecting ? deadline : ti->next_attempt_ns;
        if (ti->connecting || now < ti->next_attempt_ns) {
            if (wait_until > deadline || now >= deadline) {
                rc = -(ti->last_errno ? ti->last_errno : ENOTCONN);
                pthread_mutex_unlock(&ti->lock);
                return rc;
            }
            struct timespec until = abs_monotonic(wait_until);
            pthread_cond_timedwait(&ti->cond, &ti->lock, &until);
            continue;
        }
        ti->connecting = true;
        uint64_t need = ti->image_size;
        pthread_mutex_unlock(&ti->lock);

        struct conn *nc = NULL;
        g_autofree char *msg = NULL;
        rc = conn_open(ti->uri, need, MAX(deadline - MIN(now, deadline), 1 * SEC), &nc,
                       &msg);

        pthread_mutex_lock(&ti->lock);
        ti->connecting = false;
        if (rc == 0) {
            ti->conn = nc;
            ti->reconnects++;
            ti->export_size = conn_info(nc)->size;
            ti->backoff_ns = 0;
            ti->next_attempt_ns = 0;
            ti->last_errno = 0;
        } else {
            ti->last_errno = -rc;
            ti->backoff_ns =
                ti->backoff_ns ? MIN(ti->backoff_ns * 2, BACKOFF_MAX_NS) : BACKOFF_MIN_NS;
            ti->next_attempt_ns = now_ns() + ti->backoff_ns;
        }
        pthread_cond_broadcast(&ti->cond);
    }
    conn_ref(c);
    pthread_mutex_unlock(&ti->lock);
    rc = conn_start(c);
    if (rc < 0) {
        conn_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Before a write that reaches offset end (UINT64_MAX: a flush), zero the
 * tail that a shrink left pending. */
static int settle_tail(struct nbd_image *ti, uint64_t end)
{
    uint64_t from, to;
    struct conn *c;
    int rc;

    pthread_mutex_lock(&ti->lock);
    from = ti->tail_from;
    pthread_mutex_unlock(&ti->lock);
    if (end <= from)
        return 0;

    pthread_mutex_lock(&ti->tail_lock);
    pthread_mutex_lock(&ti->lock);
    from = ti->tail_from;
    to = ti->export_size;
    pthread_mutex_unlock(&ti->lock);
    rc = end > from ? image_conn(ti, &c) : 0;
    if (rc == 0 && end > from) {
        rc = make_zero(ti, c, false, from, to);
        conn_unref(c);
        pthread_mutex_lock(&ti->lock);
        if (rc == 0) {
            /* No write reached past from meanwhile: those wait for us. */
            ti->zero_from = MIN(ti->zero_from, from);
            if (ti->tail_from == from)
                ti->tail_from = UINT64_MAX;
        }
        pthread_mutex_unlock(&ti->lock);
    }
    pthread_mutex_unlock(&ti->tail_lock);
    return rc;
}

/* Past the export's end: the image outgrew it. */
static int check_bounds(struct nbd_image *ti, uint64_t off, uint64_t len)
{
    int rc = 0;

    pthread_mutex_lock(&ti->lock);
    if (off > ti->export_size || len > ti->export_size - off)
        rc = -ENOSPC;
    pthread_mutex_unlock(&ti->lock);
    return rc;
}

/* ---- target operations ------------------------------------------------------- */

static int nt_pwrite(struct target_image *base, const void *buf, size_t len, uint64_t off)
{
    struct nbd_image *ti = nbd_image(base);
    struct conn *c;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = check_bounds(ti, off, len)) < 0 || (rc = settle_tail(ti, off + len)) < 0)
        return rc;
    /* Before the write, so that a write that fails half-way is covered. */
    pthread_mutex_lock(&ti->lock);
    ti->zero_from = MAX(ti->zero_from, off + len);
    pthread_mutex_unlock(&ti->lock);
    if ((rc = image_conn(ti, &c)) < 0)
        return rc;
    rc = write_range(ti, c, false, buf, len, off);
    conn_unref(c);
    return rc;
}

/* Read back for verify.  The export may be larger than the image: what is
 * asked past the export's end reads as zeroes; a minimum block size is
 * met by reading whole blocks into a bounce buffer. */
static int nt_pread(struct target_image *base, void *buf, size_t len, uint64_t off)
{
    struct nbd_image *ti = nbd_image(base);
    struct conn *c;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = settle_tail(ti, off + len)) < 0)
        return rc;
    if ((rc = image_conn(ti, &c)) < 0)
        return rc;
    const struct conn_info *ci = conn_info(c);
    uint64_t size = ci->size;
    uint64_t end = MIN(off + len, size);
    memset(buf, 0, len);
    if (off < end) {
        uint64_t start = off - off % ci->min_block;
        uint64_t stop =
            MIN(end + (ci->min_block - end % ci->min_block) % ci->min_block, size);
        if (start == off && stop == end) {
            rc = conn_run_pieces(c, false, OP_READ, buf, end - off, off, ci->max_payload);
        } else {
            g_autofree char *bounce = g_malloc(stop - start);
            rc = conn_run_pieces(c, false, OP_READ, bounce, stop - start, start,
                                 ci->max_payload);
            if (rc == 0)
                memcpy(buf, bounce + (off - start), end - off);
        }
    }
    conn_unref(c);
    return rc;
}

static int nt_zero(struct target_image *base, uint64_t off, uint64_t len)
{
    struct nbd_image *ti = nbd_image(base);
    struct conn *c;
    bool known_zero;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = check_bounds(ti, off, len)) < 0 || (rc = settle_tail(ti, off + len)) < 0)
        return rc;
    pthread_mutex_lock(&ti->lock);
    known_zero = off >= ti->zero_from;
    pthread_mutex_unlock(&ti->lock);
    if (known_zero)
        return 0;
    if ((rc = image_conn(ti, &c)) < 0)
        return rc;
    /* Without NO_HOLE: the server may deallocate, so sparse stays sparse. */
    rc = write_range(ti, c, false, NULL, len, off);
    conn_unref(c);
    if (rc == 0) {
        pthread_mutex_lock(&ti->lock);
        /* Nothing past off+len was written since (a write raises
         * zero_from before it starts), so all from off on reads zero. */
        if (off < ti->zero_from && off + len >= ti->zero_from)
            ti->zero_from = off;
        pthread_mutex_unlock(&ti->lock);
    }
    return rc;
}

/* NBD exports have a fixed size.  Growing past it is ENOSPC; shrinking
 * leaves the bytes past the new size to be zeroed (so that the target
 * compares equal to the source, its tail reading as zeroes) before the next
 * write that reaches them or the next flush.  No I/O here: the job calls
 * this from a guest's truncate with the image locked, and a guest must not
 * wait for the network (invariant 4). */
static int nt_truncate(struct target_image *base, uint64_t size)
{
    struct nbd_image *ti = nbd_image(base);
    int rc = 0;

    pthread_mutex_lock(&ti->lock);
    if (size > ti->export_size) {
        rc = -ENOSPC;
    } else {
        ti->image_size = size;
        if (size < ti->zero_from && size < ti->tail_from)
            ti->tail_from = size;
    }
    pthread_mutex_unlock(&ti->lock);
    return rc;
}

static int nt_flush(struct target_image *base)
{
    struct nbd_image *ti = nbd_image(base);
    struct conn *c;
    int rc;

    if ((rc = settle_tail(ti, UINT64_MAX)) < 0)
        return rc;
    if ((rc = image_conn(ti, &c)) < 0)
        return rc;
    /* A server without flush has no volatile cache to flush, by the NBD
     * protocol's reckoning. */
    pthread_mutex_lock(&ti->lock);
    unsigned reconnects = ti->reconnects;
    pthread_mutex_unlock(&ti->lock);
    if (conn_info(c)->can_flush)
        rc = conn_run_pieces(c, false, OP_FLUSH, NULL, 1, 0, 1); /* one command */
    conn_unref(c);
    if (rc < 0)
        return rc;
    /* Writes acknowledged on a connection that died since the last good
     * flush may be gone with a server whose storage died too (nbdkit
     * memory, a crashed host).  Say so: the job copies them again. */
    pthread_mutex_lock(&ti->lock);
    bool stale = reconnects != ti->reconnects_flushed;
    ti->reconnects_flushed = reconnects;
    pthread_mutex_unlock(&ti->lock);
    return stale ? -ESTALE : 0;
}

static char *expand(const char *tmpl, const char *name)
{
    g_autofree char *escaped = g_uri_escape_string(name, "/", FALSE);
    g_auto(GStrv) parts = g_strsplit(tmpl, "{name}", -1);

    return g_strjoinv(escaped, parts);
}

static int nt_open_image(struct target *t, const char *name, uint64_t size, int fresh,
                         struct target_image **out, char **err)
{
    struct nbd_target *nt = (struct nbd_target *)t;
    g_autofree char *msg = NULL;
    struct nbd_image *ti;
    struct conn *c;
    int rc;

    ti = g_new0(struct nbd_image, 1);
    ti->base.target = t;
    ti->t = nt;
    ti->uri = expand(nt->tmpl, name);
    pthread_mutex_init(&ti->tail_lock, NULL);
    /* Writer-preferring: a read-modify-write must not starve behind a
     * stream of aligned writes. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ti->block_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&ti->lock, NULL);
    cond_init_monotonic(&ti->cond);
    ti->tail_from = UINT64_MAX;
    ti->image_size = size;

    /* ENOENT no such export, EROFS read-only, ENOSPC smaller than the
     * image, ECONNREFUSED/ETIMEDOUT no server; msg says which. */
    rc = conn_open(ti->uri, size, CONN_CONNECT_TIMEOUT_NS, &c, &msg);
    if (rc == 0) {
        ti->conn = c;
        ti->export_size = conn_info(c)->size;
        ti->zero_from = ti->export_size;
        /* Fresh: the whole export, past the image's end too, must read as
         * zero, so that the first pass may skip holes.  This thread drives
         * the handle: no dispatcher before the daemon has forked. */
        if (fresh) {
            rc = make_zero(ti, c, true, 0, ti->export_size);
            if (rc == 0)
                ti->zero_from = 0;
        }
    }
    if (rc < 0) {
        conn_unref(ti->conn);
        pthread_cond_destroy(&ti->cond);
        pthread_mutex_destroy(&ti->lock);
        pthread_rwlock_destroy(&ti->block_lock);
        pthread_mutex_destroy(&ti->tail_lock);
        g_free(ti->uri);
        g_free(ti);
        *err = g_steal_pointer(&msg);
        return rc;
    }
    pthread_mutex_lock(&nt->lock);
    g_ptr_array_add(nt->open, ti);
    pthread_mutex_unlock(&nt->lock);
    *out = &ti->base;
    return 0;
}

static void nt_close_image(struct target_image *base)
{
    struct nbd_image *ti = nbd_image(base);
    if (!ti)
        return;
    pthread_mutex_lock(&ti->t->lock);
    g_ptr_array_remove(ti->t->open, ti);
    pthread_mutex_unlock(&ti->t->lock);
    conn_unref(ti->conn);
    pthread_cond_destroy(&ti->cond);
    pthread_mutex_destroy(&ti->lock);
    pthread_rwlock_destroy(&ti->block_lock);
    pthread_mutex_destroy(&ti->tail_lock);
    g_free(ti->uri);
    g_free(ti);
}

static int nt_sync_all(struct target *t)
{
    struct nbd_target *nt = (struct nbd_target *)t;
    int rc = 0;

    /* Holding the lock keeps the images open while they are flushed. */
    pthread_mutex_lock(&nt->lock);
    for (guint i = 0; i < nt->open->len; i++) {
        int r = nt_flush(g_ptr_array_index(nt->open, i));
        if (r < 0 && rc == 0)
            rc = r;
    }
    pthread_mutex_unlock(&nt->lock);
    return rc;
}

static void nt_destroy(struct target *t)
{
    struct nbd_target *nt = (struct nbd_target *)t;

    if (!nt)
        return;
    g_ptr_array_free(nt->open, TRUE);
    pthread_mutex_destroy(&nt->lock);
    g_free(nt->tmpl);
    g_free(nt->base.description);
    g_free(nt);
}

static const struct target_ops nbd_target_ops = {
    .kind = "nbd",
    .open_image = nt_open_image,
    .close_image = nt_close_image,
    .pwrite = nt_pwrite,
    .pread = nt_pread,
    .zero = nt_zero,
    .truncate = nt_truncate,
    .flush = nt_flush,
    .sync_all = nt_sync_all,
    .destroy = nt_destroy,
};

int target_nbd_is_uri(const char *spec)
{
    return g_str_has_prefix(spec, "nbd://") || g_str_has_prefix(spec, "nbd+unix://") ||
           g_str_has_prefix(spec, "nbds://") || g_str_has_prefix(spec, "nbds+unix://");
}

/* Does {name} choose the server (in the authority or the query) rather than
 * only the export (the path)? */
static bool name_picks_server(const char *tmpl)
{
    const char *p = strstr(tmpl, "://");
    const char *path, *query;

    p = p ? p + 3 : tmpl;
    path = p + strcspn(p, "/?#");
    query = path + strcspn(path, "?#");
    for (const char *n = strstr(tmpl, "{name}"); n; n = strstr(n + 1, "{name}"))
        if (n < path || n >= query)
            return true;
    return false;
}

int target_nbd_new(const char *uri_template, struct target **out, char **err)
{
    g_autofree char *msg = NULL;
    const char *stall = g_getenv("MIRRORFS_NBD_STALL_TIMEOUT");
    int rc;

    if (stall && g_ascii_strtoull(stall, NULL, 10) > 0)
        conn_set_stall_timeout(g_ascii_strtoull(stall, NULL, 10) * SEC);
    if (!strstr(uri_template, "{name}")) {
        *err = g_strdup_printf("%s: the NBD URI needs {name}, which stands for each "
                               "image's path inside SOURCE",
                               uri_template);
        return -EINVAL;
    }
    if (name_picks_server(uri_template)) {
        /* One server per image: nothing to reach yet.  Still catch a URI
         * that libnbd cannot parse (EINVAL before any connection). */
        g_autofree char *uri = expand(uri_template, "probe");
        rc = conn_probe_server(uri, &msg);
        if (rc == -EINVAL) {
            *err = g_strdup_printf("%s: %s", uri_template, msg);
            return rc;
        }
    } else {
        g_autofree char *uri = expand(uri_template, "");
        rc = conn_probe_server(uri, &msg);
        if (rc < 0) {
            *err = g_strdup_printf("%s: %s", uri_template, msg);
            return rc;
        }
    }

    struct nbd_target *nt = g_new0(struct nbd_target, 1);
    nt->base.ops = &nbd_target_ops;
    nt->base.description = g_strdup(uri_template);
    nt->tmpl = g_strdup(uri_template);
    nt->open = g_ptr_array_new();
    pthread_mutex_init(&nt->lock, NULL);
    *out = &nt->base;
    return 0;
}
