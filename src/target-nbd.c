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
 * Concurrency.  libnbd's synchronous calls hold the handle's lock for the
 * whole round trip: copy workers sharing a handle would take turns, one
 * request in flight.  So every call here issues asynchronous commands
 * (nbd_aio_*) whose completion callback wakes the caller's own waiter, and
 * one dispatcher thread per connection polls the socket and drives libnbd's
 * state machine (nbd_aio_notify_*), which runs the callbacks.  Any number of
 * workers then have requests in flight on one connection, the way QEMU's
 * mirror drives its one NBD client.  One connection per image keeps a flush
 * simple (it covers every write made on its connection, which multi-conn
 * would only promise for servers that advertise it) and needs nothing of the
 * server (qemu-nbd serves one client unless given --shared).
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
 * Locking.  libnbd runs callbacks with the handle's lock held.  The callbacks
 * here take nothing but their waiter's lock and touch atomics, and nothing
 * calls libnbd while holding a waiter's lock; so any other lock of this file
 * may be held across libnbd calls.  Order: target->lock, image->tail_lock,
 * image->block_lock, image->lock.
 *
 * Failures.  No request waits forever: when requests are in flight and no
 * reply came for STALL_TIMEOUT_NS, the connection is declared dead and its
 * socket shut, which makes libnbd fail every command in flight.  The failed
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

#include "target.h"
#include "util.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS ((uint64_t)1000 * 1000)
#define SEC (1000 * MS)
/* Connecting and the handshake. */
#define CONNECT_TIMEOUT_NS (10 * SEC)
/* Requests in flight and no reply for this long: the server is stuck.
 * Tests shorten it with MIRRORFS_NBD_STALL_TIMEOUT=SECONDS. */
#define STALL_TIMEOUT_NS (30 * SEC)
/* How long one call may spend reconnecting before it fails. */
#define RECONNECT_BUDGET_NS (3 * SEC)
#define BACKOFF_MIN_NS (100 * MS)
#define BACKOFF_MAX_NS (2 * SEC)
/* How often a waiting thread or the dispatcher looks at the clock. */
#define TICK_MS 500
/* The most one zero, trim or block-status request covers: the request's
 * length field has 32 bits. */
#define ZERO_PIECE ((uint64_t)1 << 30)
/* The most one write carries when the server gives no maximum (larger can
 * make servers drop the connection). */
#define DEFAULT_MAX_PAYLOAD (32u << 20)
#define ZERO_BUF_SIZE (1u << 20)

static char zero_buf[ZERO_BUF_SIZE];
static uint64_t stall_timeout_ns = STALL_TIMEOUT_NS; /* set once, before any thread */

struct nbd_image;

struct nbd_target {
    struct target base;
    char *tmpl;
    pthread_mutex_t lock;
    GPtrArray *open; /* struct nbd_image *, for sync_all; lock */
};

/* One connection: a libnbd handle and, once I/O starts, its dispatcher. */
struct conn {
    struct nbd_handle *h;
    int refs;                  /* atomic */
    int dead;                  /* atomic: the handle is dead or closed */
    int inflight;              /* atomic: commands issued, not completed */
    uint64_t last_progress_ns; /* atomic: last completion or first issue */
    int kill_errno;            /* atomic: why we shut the socket, or 0 */
    /* What the server told at the handshake. */
    uint64_t size;
    uint32_t min_block; /* 1 when the server has no constraint */
    uint32_t max_payload;
    bool can_zero, can_fast_zero, can_trim, can_flush, can_block_status;

    pthread_mutex_t lock; /* threaded, thread */
    bool threaded;        /* the dispatcher runs: waiters sleep */
    pthread_t thread;
    int wake_fd;         /* eventfd: a command waits to be sent */
    int stop;            /* atomic: the dispatcher exits */
    int dispatcher_done; /* atomic */
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

/* One call's commands: the caller sleeps until they all completed. */
struct waiter {
    int refs; /* atomic: the caller, and one per command issued */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned pending;
    int err;
    bool drive; /* no dispatcher: the caller drives the handle itself */
    struct conn *conn;
};

enum nbd_op { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_STATUS };

static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

static struct timespec abs_monotonic(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / SEC), .tv_nsec = (long)(ns % SEC)};
}

/* libnbd's last error in this thread, as one line, without the name of
 * the libnbd call it starts with ("nbd_aio_connect_uri: "). */
static char *nbd_message(void)
{
    const char *m = nbd_get_error();
    char *s;

    if (!m || !m[0])
        m = "unknown libnbd error";
    if (g_str_has_prefix(m, "nbd_") && strstr(m, ": "))
        m = strstr(m, ": ") + 2;
    s = g_strdup(m);

    g_strdelimit(s, "\r\n", ' ');
    return s;
}

static int nbd_errno_or(int fallback)
{
    int e = nbd_get_errno();

    return e > 0 ? e : fallback;
}

/* ---- connections ---------------------------------------------------------- */

static bool conn_dead(struct conn *c)
{
    if (g_atomic_int_get(&c->dead))
        return true;
    if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
        g_atomic_int_set(&c->dead, 1);
        return true;
    }
    return false;
}

/* Shut the socket: libnbd then sees the end of the stream, moves the handle
 * to dead and fails every command in flight (with ENOTCONN, which the
 * completion turns into why). */
static void conn_kill(struct conn *c, int why)
{
    int fd = nbd_aio_get_fd(c->h);

    g_atomic_int_compare_and_exchange(&c->kill_errno, 0, why);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

static void conn_check_stall(struct conn *c)
{
    if (g_atomic_int_get(&c->inflight) > 0 &&
        now_ns() - __atomic_load_n(&c->last_progress_ns, __ATOMIC_RELAXED) >
            stall_timeout_ns &&
        g_atomic_int_get(&c->kill_errno) == 0)
        conn_kill(c, ETIMEDOUT);
}

static void conn_poke(struct conn *c)
{
    uint64_t one = 1;

    if (write(c->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so a wake-up is pending anyway. */
    }
}

static void *conn_dispatch(void *opaque)
{
    struct conn *c = opaque;

    while (!g_atomic_int_get(&c->stop)) {
        int fd = nbd_aio_get_fd(c->h);
        unsigned dir = nbd_aio_get_direction(c->h);

        if (fd < 0 || conn_dead(c))
            break;
        struct pollfd p[2] = {
            {.fd = fd,
             .events = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                               ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0))},
            {.fd = c->wake_fd, .events = POLLIN},
        };
        if (poll(p, 2, TICK_MS) < 0 && errno != EINTR) {
            conn_kill(c, errno);
            continue;
        }
        if (p[1].revents & POLLIN) {
            uint64_t n;
            if (read(c->wake_fd, &n, sizeof(n)) < 0) {
                /* EAGAIN: another read emptied it. */
            }
        }
        /* A caller issuing a command may have moved the state machine on
         * since dir was read: libnbd then refuses the event (EINVAL) and
         * nothing is lost, the next round polls for the new direction.
         * Only the handle's own state says whether it died. */
        short ev = p[0].revents;
        if ((dir & LIBNBD_AIO_DIRECTION_READ) && (ev & (POLLIN | POLLHUP | POLLERR)))
            nbd_aio_notify_read(c->h);
        else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
                 (ev & (POLLOUT | POLLHUP | POLLERR)))
            nbd_aio_notify_write(c->h);
        if (conn_dead(c))
            break;
        conn_check_stall(c);
    }
    /* Dead: libnbd has failed every command in flight, so no waiter is left
     * behind.  Stopped: nobody holds a reference, so nobody waits. */
    g_atomic_int_set(&c->dead, 1);
    g_atomic_int_set(&c->dispatcher_done, 1);
    return NULL;
}

/* From here on the dispatcher drives the handle.  0 or -errno. */
static int conn_start(struct conn *c)
{
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (!c->threaded) {
        c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->wake_fd < 0)
            rc = -errno;
        else if ((rc = -pthread_create(&c->thread, NULL, conn_dispatch, c)) < 0) {
            close(c->wake_fd);
            c->wake_fd = -1;
        } else {
            c->threaded = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static struct conn *conn_ref(struct conn *c)
{
    g_atomic_int_inc(&c->refs);
    return c;
}

/* Ask the server politely to end the connection (NBD_CMD_DISC) and give it
 * a moment; the socket is closed by nbd_close in any case. */
static void conn_disconnect(struct conn *c)
{
    uint64_t until = now_ns() + 2 * SEC;

    if (conn_dead(c) || !nbd_aio_is_ready(c->h) || nbd_aio_disconnect(c->h, 0) < 0)
        return;
    if (c->threaded) {
        conn_poke(c);
        while (!g_atomic_int_get(&c->dispatcher_done) && now_ns() < until)
            g_usleep(10 * 1000);
    } else {
        while (!conn_dead(c) && now_ns() < until)
            if (nbd_poll(c->h, 100) < 0)
                break;
    }
}

static void conn_unref(struct conn *c)
{
    if (!c || !g_atomic_int_dec_and_test(&c->refs))
        return;
    conn_disconnect(c);
    if (c->threaded) {
        g_atomic_int_set(&c->stop, 1);
        conn_poke(c);
        pthread_join(c->thread, NULL);
        close(c->wake_fd);
    }
    nbd_close(c->h);
    pthread_mutex_destroy(&c->lock);
    g_free(c);
}

/* Drive a handle from this thread for at most timeout_ms (no dispatcher). */
static void conn_drive(struct conn *c, int timeout_ms)
{
    if (nbd_poll(c->h, timeout_ms) < 0 && !conn_dead(c))
        conn_kill(c, nbd_errno_or(EIO));
    conn_check_stall(c);
}

/* Start connecting h to uri and drive the handshake from this thread until
 * it ends or the monotonic clock reaches until.  0 (the handshake ended:
 * the caller looks at how), -ETIMEDOUT, or -1 for a libnbd error (details
 * in nbd_get_errno / nbd_get_error). */
static int connect_until(struct nbd_handle *h, const char *uri, uint64_t until)
{
    if (nbd_aio_connect_uri(h, uri) < 0)
        return -1;
    while (nbd_aio_is_connecting(h)) {
        uint64_t now = now_ns();
        if (now >= until)
            return -ETIMEDOUT;
        if (nbd_poll(h, (int)MIN((until - now) / MS + 1, (uint64_t)TICK_MS)) < 0)
            return -1;
    }
    return 0;
}

/* Connect to uri and check the export: it answers, is writable and holds
 * at least need bytes.  The calling thread drives the handshake, for at most
 * timeout_ns.  0 with *out (one reference), or -errno with *msg set. */
static int conn_open(const char *uri, uint64_t need, uint64_t timeout_ns,
                     struct conn **out, char **msg)
{
    struct nbd_handle *h = nbd_create();
    uint64_t until = now_ns() + timeout_ns;
    int64_t v;
    int rc;

    *msg = NULL;
    if (!h) {
        *msg = nbd_message();
        return -ENOMEM;
    }
    /* Block status lets zeroing skip what reads as zero already. */
    nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
    rc = connect_until(h, uri, until);
    if (rc == -ETIMEDOUT) {
        *msg = g_strdup_printf("%s: no answer from the server within %" PRIu64 " s", uri,
                               timeout_ns / SEC);
        nbd_close(h);
        return rc;
    }
    if (rc < 0)
        goto nbd_error;
    if (!nbd_aio_is_ready(h)) {
        *msg = g_strdup_printf("%s: the connection failed", uri);
        nbd_close(h);
        return -ECONNRESET;
    }
    if (nbd_is_read_only(h) != 0) {
        *msg = g_strdup_printf("%s: export is read-only", uri);
        nbd_close(h);
        return -EROFS;
    }
    v = nbd_get_size(h);
    if (v < 0)
        goto nbd_error;
    if ((uint64_t)v < need) {
        *msg = g_strdup_printf("%s: export is smaller (%" PRId64
                               ") than the image (%" PRIu64 ")",
                               uri, v, need);
        nbd_close(h);
        return -ENOSPC;
    }

    struct conn *c = g_new0(struct conn, 1);
    c->h = h;
    c->refs = 1;
    c->wake_fd = -1;
    c->size = (uint64_t)v;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    c->min_block = v > 1 ? (uint32_t)v : 1;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    c->max_payload =
        v > 0 ? (uint32_t)MIN((uint64_t)v, DEFAULT_MAX_PAYLOAD) : DEFAULT_MAX_PAYLOAD;
    /* A payload that is not a multiple of the minimum could not be split. */
    c->max_payload -= c->max_payload % c->min_block;
    if (c->max_payload == 0)
        c->max_payload = c->min_block;
    c->can_zero = nbd_can_zero(h) == 1;
    c->can_fast_zero = nbd_can_fast_zero(h) == 1;
    c->can_trim = nbd_can_trim(h) == 1;
    c->can_flush = nbd_can_flush(h) == 1;
    c->can_block_status = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    c->last_progress_ns = now_ns();
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;

nbd_error:
    rc = -nbd_errno_or(ECONNREFUSED);
    {
        g_autofree char *m = nbd_message();
        *msg = g_strdup_printf("%s: %s", uri, m);
    }
    nbd_close(h);
    return rc;
}

/* ---- commands ----------------------------------------------------------------- */

static struct waiter *waiter_new(struct conn *c, bool drive)
{
    struct waiter *w = g_new0(struct waiter, 1);

    w->refs = 1;
    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->cond);
    w->drive = drive;
    w->conn = c;
    return w;
}

static void waiter_unref(void *opaque)
{
    struct waiter *w = opaque;

    if (g_atomic_int_dec_and_test(&w->refs)) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        g_free(w);
    }
}

/* Runs in whichever thread drives the handle, with libnbd's lock held. */
static int waiter_complete(void *opaque, int *error)
{
    struct waiter *w = opaque;
    struct conn *c = w->conn;
    int err = *error;

    if (err == ENOTCONN && g_atomic_int_get(&c->kill_errno))
        err = g_atomic_int_get(&c->kill_errno);
    g_atomic_int_add(&c->inflight, -1);
    __atomic_store_n(&c->last_progress_ns, now_ns(), __ATOMIC_RELAXED);
    pthread_mutex_lock(&w->lock);
    if (err && !w->err)
        w->err = err;
    if (--w->pending == 0)
        pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 1; /* retire the command: nobody asks for it by cookie */
}

struct extents {
    uint64_t end;    /* the status is known up to here */
    GArray *nonzero; /* pairs of uint64_t: offset, length */
};

static int extents_add(void *opaque, const char *context, uint64_t off, uint32_t *entries,
                       size_t n, int *error)
{
    struct extents *e = opaque;

    if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        return 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint64_t len = entries[i];
        if (!(entries[i + 1] & LIBNBD_STATE_ZERO)) {
            guint k = e->nonzero->len;
            /* Coalesce with the previous part when they touch. */
            if (k >= 2 && g_array_index(e->nonzero, uint64_t, k - 2) +
                                  g_array_index(e->nonzero, uint64_t, k - 1) ==
                              off) {
                g_array_index(e->nonzero, uint64_t, k - 1) += len;
            } else {
                uint64_t pair[2] = {off, len};
                g_array_append_vals(e->nonzero, pair, 2);
            }
        }
        off += len;
    }
    e->end = MAX(e->end, off);
    return 0;
}

/* Issue one command for w (ext: where OP_STATUS puts the extents).  0, or
 * -errno when libnbd refused it (then it never completes). */
static int issue_ext(struct waiter *w, enum nbd_op op, void *buf, uint64_t len,
                     uint64_t off, uint32_t flags, struct extents *ext)
{
    struct conn *c = w->conn;
    nbd_completion_callback cb = {
        .callback = waiter_complete, .user_data = w, .free = waiter_unref};
    nbd_extent_callback ecb = {.callback = extents_add, .user_data = ext};
    int64_t cookie = -1;

    g_atomic_int_inc(&w->refs);
    pthread_mutex_lock(&w->lock);
    w->pending++;
    pthread_mutex_unlock(&w->lock);
    /* A stall is counted from the first command in flight. */
    if (g_atomic_int_add(&c->inflight, 1) == 0)
        __atomic_store_n(&c->last_progress_ns, now_ns(), __ATOMIC_RELAXED);
    switch (op) {
    case OP_READ:
        cookie = nbd_aio_pread(c->h, buf, (size_t)len, off, cb, 0);
        break;
    case OP_WRITE:
        cookie = nbd_aio_pwrite(c->h, buf, (size_t)len, off, cb, 0);
        break;
    case OP_ZERO:
        cookie = nbd_aio_zero(c->h, len, off, cb, flags);
        break;
    case OP_TRIM:
        cookie = nbd_aio_trim(c->h, len, off, cb, 0);
        break;
    case OP_FLUSH:
        cookie = nbd_aio_flush(c->h, cb, 0);
        break;
    case OP_STATUS:
        cookie = nbd_aio_block_status(c->h, len, off, ecb, cb, 0);
        break;
    }
    if (cookie < 0) {
        int err = conn_dead(c) ? ENOTCONN : nbd_errno_or(EIO);
        /* libnbd called the free function (our reference) already. */
        pthread_mutex_lock(&w->lock);
        w->pending--;
        pthread_mutex_unlock(&w->lock);
        g_atomic_int_add(&c->inflight, -1);
        return -err;
    }
    /* The command may wait for the socket to drain: the dispatcher must
     * then look for POLLOUT, and it may be asleep in poll() without it. */
    if (!w->drive && (nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_WRITE))
        conn_poke(c);
    return 0;
}

static int issue(struct waiter *w, enum nbd_op op, void *buf, uint64_t len, uint64_t off,
                 uint32_t flags)
{
    return issue_ext(w, op, buf, len, off, flags, NULL);
}

/* Wait for every command of w; 0 or the first error as -errno.  Never
 * forever: a stuck server is killed by the stall check, which fails the
 * commands in flight. */
static int waiter_wait(struct waiter *w)
{
    struct conn *c = w->conn;
    int err;

    pthread_mutex_lock(&w->lock);
    while (w->pending > 0) {
        if (w->drive) {
            pthread_mutex_unlock(&w->lock);
            if (conn_dead(c)) {
                /* A dead handle has failed its commands: not reached. */
                pthread_mutex_lock(&w->lock);
                if (!w->err)
                    w->err = ENOTCONN;
                break;
            }
            conn_drive(c, TICK_MS);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        struct timespec until = abs_monotonic(now_ns() + (uint64_t)TICK_MS * MS);
        pthread_cond_timedwait(&w->cond, &w->lock, &until);
        if (w->pending > 0 && g_atomic_int_get(&c->dispatcher_done)) {
            /* The dispatcher failed everything before it ended: not
             * reached.  The waiter outlives us through its references. */
            if (!w->err)
                w->err = ENOTCONN;
            break;
        }
    }
    err = w->err;
    pthread_mutex_unlock(&w->lock);
    return -err;
}

/* Issue op over [off, off+len) in pieces of at most piece bytes, all in
 * flight at once, and wait for them. */
static int run_pieces(struct conn *c, bool drive, enum nbd_op op, const char *buf,
                      uint64_t len, uint64_t off, uint32_t flags, uint64_t piece)
{
    struct waiter *w = waiter_new(c, drive);
    int rc = 0, wrc;

    while (len > 0) {
        uint64_t n = MIN(len, piece);
        rc = issue(w, op, (void *)buf, n, off, flags);
        if (rc < 0)
            break;
        if (buf)
            buf += n;
        off += n;
        len -= n;
    }
    wrc = waiter_wait(w);
    waiter_unref(w);
    return rc < 0 ? rc : wrc;
}

static uint64_t zero_piece(const struct conn *c)
{
    return ZERO_PIECE - ZERO_PIECE % c->min_block;
}

/* Write buf (NULL: zeroes) to a range inside one minimum block by reading
 * the block, patching it and writing it back. */
static int rmw_block(struct conn *c, bool drive, const char *buf, uint64_t len,
                     uint64_t off)
{
    uint64_t start = off - off % c->min_block;
    g_autofree char *block = g_malloc(c->min_block);
    int rc;

    rc = run_pieces(c, drive, OP_READ, block, c->min_block, start, 0, c->min_block);
    if (rc < 0)
        return rc;
    if (buf)
        memcpy(block + (off - start), buf, len);
    else
        memset(block + (off - start), 0, len);
    return run_pieces(c, drive, OP_WRITE, block, c->min_block, start, 0, c->min_block);
}

/* Write buf, or zeroes when buf is NULL (with the zero command where the
 * server has one, which may deallocate), to a range aligned to the server's
 * minimum block size. */
static int write_aligned(struct conn *c, bool drive, const char *buf, uint64_t len,
                         uint64_t off)
{
    int rc;

    if (len == 0)
        return 0;
    if (buf)
        return run_pieces(c, drive, OP_WRITE, buf, len, off, 0, c->max_payload);
    if (c->can_zero) {
        rc = run_pieces(c, drive, OP_ZERO, NULL, len, off, 0, zero_piece(c));
        if (rc != -ENOTSUP && rc != -EOPNOTSUPP)
            return rc;
    }
    /* No zero command, or one the server refuses: write zeroes, a buffer
     * at a time. */
    uint64_t piece = MIN((uint64_t)c->max_payload, (uint64_t)ZERO_BUF_SIZE);
    while (len > 0) {
        uint64_t n = MIN(len, piece);
        rc = run_pieces(c, drive, OP_WRITE, zero_buf, n, off, 0, piece);
        if (rc < 0)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

/* write_aligned for any range: the partial blocks at either end, if the
 * server has a minimum block size, are read, patched and written back. */
static int write_range(struct nbd_image *ti, struct conn *c, bool drive,
                       const char *buf, uint64_t len, uint64_t off)
{
    uint64_t m = c->min_block;
    uint64_t head = MIN(len, off % m ? m - off % m : 0);
    uint64_t tail = (len - head) % m;
    uint64_t mid = len - head - tail;
    int rc = 0;

    if (m == 1)
        return write_aligned(c, drive, buf, len, off);
    /* A read-modify-write must not interleave with another write to its
     * block (two granules, or a guest's write-blocking write and a copy,
     * can share a block): it holds the image's block lock exclusively,
     * aligned writes share it. */
    if (head || tail)
        pthread_rwlock_wrlock(&ti->block_lock);
    else
        pthread_rwlock_rdlock(&ti->block_lock);
    if (head)
        rc = rmw_block(c, drive, buf, head, off);
    if (rc == 0 && tail)
        rc = rmw_block(c, drive, buf ? buf + head + mid : NULL, tail, off + head + mid);
    if (rc == 0)
        rc = write_aligned(c, drive, buf ? buf + head : NULL, mid, off + head);
    pthread_rwlock_unlock(&ti->block_lock);
    return rc;
}

/* The parts of [from, to) that may not read as zero, as pairs in a new
 * array (the whole range when the server has no block status). */
static int nonzero_parts(struct conn *c, bool drive, uint64_t from, uint64_t to,
                         GArray **out)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    uint64_t pos = from;

    while (c->can_block_status && pos < to) {
        struct extents e = {.end = pos,
                            .nonzero = g_array_new(FALSE, FALSE, sizeof(uint64_t))};
        struct waiter *w = waiter_new(c, drive);
        /* The query itself must be aligned to the server's minimum. */
        uint64_t q = pos - pos % c->min_block;
        uint64_t qend =
            MIN(to + (c->min_block - to % c->min_block) % c->min_block, c->size);
        int rc = issue_ext(w, OP_STATUS, NULL, MIN(qend - q, zero_piece(c)), q, 0, &e);
        int wrc = waiter_wait(w);

        waiter_unref(w);
        if (rc == 0)
            rc = wrc;
        if (rc < 0) {
            g_array_free(e.nonzero, TRUE);
            g_array_free(a, TRUE);
            return rc;
        }
        for (guint i = 0; i + 1 < e.nonzero->len; i += 2) {
            uint64_t s = MAX(g_array_index(e.nonzero, uint64_t, i), pos);
            uint64_t x = MIN(g_array_index(e.nonzero, uint64_t, i) +
                                 g_array_index(e.nonzero, uint64_t, i + 1),
                             to);
            if (x > s) {
                uint64_t pair[2] = {s, x - s};
                g_array_append_vals(a, pair, 2);
            }
        }
        g_array_free(e.nonzero, TRUE);
        if (e.end <= pos)
            break; /* no progress: treat the rest as data */
        pos = e.end;
    }
    if (pos < to) {
        uint64_t pair[2] = {pos, to - pos};
        g_array_append_vals(a, pair, 2);
    }
    *out = a;
    return 0;
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
    g_autoptr(GArray) parts = NULL;
    int rc;

    if (from >= to)
        return 0;
    rc = nonzero_parts(c, drive, from, to, &parts);
    if (rc < 0 || parts->len == 0)
        return rc;
    if (c->can_zero && c->can_fast_zero && c->min_block == 1) {
        struct waiter *w = waiter_new(c, drive);
        for (guint i = 0; rc == 0 && i + 1 < parts->len; i += 2) {
            uint64_t off = g_array_index(parts, uint64_t, i);
            uint64_t len = g_array_index(parts, uint64_t, i + 1);
            while (rc == 0 && len > 0) {
                uint64_t n = MIN(len, zero_piece(c));
                rc = issue(w, OP_ZERO, NULL, n, off, LIBNBD_CMD_FLAG_FAST_ZERO);
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
    if (c->can_trim && c->can_block_status && c->min_block == 1) {
        for (guint i = 0; i + 1 < parts->len; i += 2) {
            rc =
                run_pieces(c, drive, OP_TRIM, NULL, g_array_index(parts, uint64_t, i + 1),
                           g_array_index(parts, uint64_t, i), 0, zero_piece(c));
            if (rc < 0)
                break;
        }
        if (rc == 0) {
            GArray *left = NULL;
            rc = nonzero_parts(c, drive, from, to, &left);
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
            ti->export_size = nc->size;
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
    uint64_t size = c->size;
    uint64_t end = MIN(off + len, size);
    memset(buf, 0, len);
    if (off < end) {
        uint64_t start = off - off % c->min_block;
        uint64_t stop = MIN(end + (c->min_block - end % c->min_block) % c->min_block, size);
        if (start == off && stop == end) {
            rc = run_pieces(c, false, OP_READ, buf, end - off, off, 0, c->max_payload);
        } else {
            g_autofree char *bounce = g_malloc(stop - start);
            rc = run_pieces(c, false, OP_READ, bounce, stop - start, start, 0, c->max_payload);
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
    if (c->can_flush)
        rc = run_pieces(c, false, OP_FLUSH, NULL, 1, 0, 0, 1); /* one command */
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
    rc = conn_open(ti->uri, size, CONNECT_TIMEOUT_NS, &c, &msg);
    if (rc == 0) {
        ti->conn = c;
        ti->export_size = c->size;
        ti->zero_from = c->size;
        /* Fresh: the whole export, past the image's end too, must read as
         * zero, so that the first pass may skip holes.  This thread drives
         * the handle: no dispatcher before the daemon has forked. */
        if (fresh) {
            rc = make_zero(ti, c, true, 0, c->size);
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

/* Reach the server and stop at option negotiation: it answers and speaks
 * NBD.  Exports are checked one by one at open.  0 or -errno with *msg. */
static int probe_server(const char *uri, char **msg)
{
    struct nbd_handle *h = nbd_create();
    uint64_t until = now_ns() + CONNECT_TIMEOUT_NS;
    int rc = 0;

    if (!h) {
        *msg = nbd_message();
        return -ENOMEM;
    }
    nbd_set_opt_mode(h, true);
    rc = connect_until(h, uri, until);
    if (rc == -ETIMEDOUT) {
        *msg = g_strdup_printf("no answer from the server within %" PRIu64 " s",
                               CONNECT_TIMEOUT_NS / SEC);
        nbd_close(h);
        return rc;
    }
    if (rc < 0)
        goto nbd_error;
    if (nbd_aio_is_negotiating(h)) {
        /* End politely, or a server like qemu-nbd logs a broken handshake. */
        until = now_ns() + SEC;
        if (nbd_aio_opt_abort(h) == 0)
            while (!nbd_aio_is_closed(h) && !nbd_aio_is_dead(h) && now_ns() < until)
                if (nbd_poll(h, 100) < 0)
                    break;
    } else if (!nbd_aio_is_ready(h)) {
        *msg = g_strdup("the server ended the handshake");
        rc = -ECONNRESET;
    }
    nbd_close(h);
    return rc;

nbd_error:
    rc = -nbd_errno_or(ECONNREFUSED);
    *msg = nbd_message();
    nbd_close(h);
    return rc;
}

int target_nbd_new(const char *uri_template, struct target **out, char **err)
{
    g_autofree char *msg = NULL;
    const char *stall = g_getenv("MIRRORFS_NBD_STALL_TIMEOUT");
    int rc;

    if (stall && g_ascii_strtoull(stall, NULL, 10) > 0)
        stall_timeout_ns = g_ascii_strtoull(stall, NULL, 10) * SEC;
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
        rc = probe_server(uri, &msg);
        if (rc == -EINVAL) {
            *err = g_strdup_printf("%s: %s", uri_template, msg);
            return rc;
        }
    } else {
        g_autofree char *uri = expand(uri_template, "");
        rc = probe_server(uri, &msg);
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
