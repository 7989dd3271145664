/* nbd-conn.c - connections to an NBD server: libnbd handles, their
 * dispatcher threads, and the commands of one call waited for together
 * (see nbd-conn.h).
 */
#include "config.h"

#include "nbd-conn.h"
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
/* Requests in flight and no reply for this long: the server is stuck.
 * target-nbd.c lets MIRRORFS_NBD_STALL_TIMEOUT=SECONDS shorten it (tests). */
#define STALL_TIMEOUT_NS (30 * SEC)
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

/* One connection: a libnbd handle and, once I/O starts, its dispatcher. */
struct conn {
    struct nbd_handle *h;
    int refs;                  /* atomic */
    int dead;                  /* atomic: the handle is dead or closed */
    int inflight;              /* atomic: commands issued, not completed */
    uint64_t last_progress_ns; /* atomic: last completion or first issue */
    int kill_errno;            /* atomic: why we shut the socket, or 0 */
    struct conn_info info;     /* what the server told at the handshake */

    pthread_mutex_t lock; /* threaded, thread */
    bool threaded;        /* the dispatcher runs: waiters sleep */
    pthread_t thread;
    int wake_fd;         /* eventfd: a command waits to be sent */
    int stop;            /* atomic: the dispatcher exits */
    int dispatcher_done; /* atomic */
};

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

void conn_set_stall_timeout(uint64_t ns)
{
    stall_timeout_ns = ns;
}

const struct conn_info *conn_info(const struct conn *c)
{
    return &c->info;
}

bool conn_dead(struct conn *c)
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
int conn_start(struct conn *c)
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

struct conn *conn_ref(struct conn *c)
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

void conn_unref(struct conn *c)
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

int conn_open(const char *uri, uint64_t need, uint64_t timeout_ns, struct conn **out,
              char **msg)
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
    c->info.size = (uint64_t)v;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    c->info.min_block = v > 1 ? (uint32_t)v : 1;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    c->info.max_payload =
        v > 0 ? (uint32_t)MIN((uint64_t)v, DEFAULT_MAX_PAYLOAD) : DEFAULT_MAX_PAYLOAD;
    /* A payload that is not a multiple of the minimum could not be split. */
    c->info.max_payload -= c->info.max_payload % c->info.min_block;
    if (c->info.max_payload == 0)
        c->info.max_payload = c->info.min_block;
    c->info.can_zero = nbd_can_zero(h) == 1;
    c->info.can_fast_zero = nbd_can_fast_zero(h) == 1;
    c->info.can_trim = nbd_can_trim(h) == 1;
    c->info.can_flush = nbd_can_flush(h) == 1;
    c->info.can_block_status =
        nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
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

struct waiter *waiter_new(struct conn *c, bool drive)
{
    struct waiter *w = g_new0(struct waiter, 1);

    w->refs = 1;
    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->cond);
    w->drive = drive;
    w->conn = c;
    return w;
}

void waiter_unref(struct waiter *w)
{
    if (g_atomic_int_dec_and_test(&w->refs)) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        g_free(w);
    }
}

/* libnbd's free function of a command: the command's reference. */
static void waiter_free(void *opaque)
{
    waiter_unref(opaque);
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
static int issue_ext(struct waiter *w, enum conn_op op, void *buf, uint64_t len,
                     uint64_t off, struct extents *ext)
{
    struct conn *c = w->conn;
    nbd_completion_callback cb = {
        .callback = waiter_complete, .user_data = w, .free = waiter_free};
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
        cookie = nbd_aio_zero(c->h, len, off, cb, 0);
        break;
    case OP_FAST_ZERO:
        cookie = nbd_aio_zero(c->h, len, off, cb, LIBNBD_CMD_FLAG_FAST_ZERO);
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

int waiter_issue(struct waiter *w, enum conn_op op, void *buf, uint64_t len, uint64_t off)
{
    return issue_ext(w, op, buf, len, off, NULL);
}

/* Never forever: a stuck server is killed by the stall check, which fails
 * the commands in flight. */
int waiter_wait(struct waiter *w)
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
        struct timespec until = cond_deadline(CLOCK_MONOTONIC, (uint64_t)TICK_MS * MS);
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

int conn_run_pieces(struct conn *c, bool drive, enum conn_op op, const char *buf,
                    uint64_t len, uint64_t off, uint64_t piece)
{
    struct waiter *w = waiter_new(c, drive);
    int rc = 0, wrc;

    while (len > 0) {
        uint64_t n = MIN(len, piece);
        rc = waiter_issue(w, op, (void *)buf, n, off);
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

uint64_t conn_zero_piece(const struct conn *c)
{
    return ZERO_PIECE - ZERO_PIECE % c->info.min_block;
}

int conn_rmw_block(struct conn *c, bool drive, const char *buf, uint64_t len,
                   uint64_t off)
{
    uint64_t start = off - off % c->info.min_block;
    g_autofree char *block = g_malloc(c->info.min_block);
    int rc;

    rc = conn_run_pieces(c, drive, OP_READ, block, c->info.min_block, start,
                         c->info.min_block);
    if (rc < 0)
        return rc;
    if (buf)
        memcpy(block + (off - start), buf, len);
    else
        memset(block + (off - start), 0, len);
    return conn_run_pieces(c, drive, OP_WRITE, block, c->info.min_block, start,
                           c->info.min_block);
}

int conn_write_aligned(struct conn *c, bool drive, const char *buf, uint64_t len,
                       uint64_t off)
{
    int rc;

    if (len == 0)
        return 0;
    if (buf)
        return conn_run_pieces(c, drive, OP_WRITE, buf, len, off, c->info.max_payload);
    if (c->info.can_zero) {
        rc = conn_run_pieces(c, drive, OP_ZERO, NULL, len, off, conn_zero_piece(c));
        if (rc != -ENOTSUP && rc != -EOPNOTSUPP)
            return rc;
    }
    /* No zero command, or one the server refuses: write zeroes, a buffer
     * at a time. */
    uint64_t piece = MIN((uint64_t)c->info.max_payload, (uint64_t)ZERO_BUF_SIZE);
    while (len > 0) {
        uint64_t n = MIN(len, piece);
        rc = conn_run_pieces(c, drive, OP_WRITE, zero_buf, n, off, piece);
        if (rc < 0)
            return rc;
        off += n;
        len -= n;
    }
    return 0;
}

/* ---- block status --------------------------------------------------------------- */

int conn_nonzero_parts(struct conn *c, bool drive, uint64_t from, uint64_t to,
                       GArray **out)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    uint64_t pos = from;

    while (c->info.can_block_status && pos < to) {
        struct extents e = {.end = pos,
                            .nonzero = g_array_new(FALSE, FALSE, sizeof(uint64_t))};
        struct waiter *w = waiter_new(c, drive);
        /* The query itself must be aligned to the server's minimum. */
        uint64_t q = pos - pos % c->info.min_block;
        uint64_t qend =
            MIN(to + (c->info.min_block - to % c->info.min_block) % c->info.min_block,
                c->info.size);
        int rc = issue_ext(w, OP_STATUS, NULL, MIN(qend - q, conn_zero_piece(c)), q, &e);
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

/* ---- probing a server -------------------------------------------------------- */

int conn_probe_server(const char *uri, char **msg)
{
    struct nbd_handle *h = nbd_create();
    uint64_t until = now_ns() + CONN_CONNECT_TIMEOUT_NS;
    int rc = 0;

    if (!h) {
        *msg = nbd_message();
        return -ENOMEM;
    }
    nbd_set_opt_mode(h, true);
    rc = connect_until(h, uri, until);
    if (rc == -ETIMEDOUT) {
        *msg = g_strdup_printf("no answer from the server within %" PRIu64 " s",
                               CONN_CONNECT_TIMEOUT_NS / SEC);
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
