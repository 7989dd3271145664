/* control.c - the virtual .mirror directory (see control.h). */
#include "config.h"

#include "control.h"
#include "linelog.h"
#include "mirror.h"
#include "mount.h"
#include "status.h"
#include "util.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const node_names[CTL_NODES] = {
    [CTL_DIR] = CTL_DIR_NAME,
    [CTL_STATUS] = "status",
    [CTL_STATUS_JSON] = "status.json",
    [CTL_CTL] = "ctl",
    [CTL_EVENTS] = "events",
    [CTL_TRACE] = "trace",
};

enum ctl_node ctl_lookup(const char *name)
{
    for (int n = CTL_STATUS; n < CTL_NODES; n++)
        if (strcmp(name, node_names[n]) == 0)
            return n;
    return CTL_NONE;
}

const char *ctl_name(enum ctl_node node)
{
    return node_names[node];
}

void ctl_getattr(enum ctl_node node, fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_nlink = 1;
    switch (node) {
    case CTL_DIR:
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        break;
    case CTL_CTL:
        st->st_mode = S_IFREG | 0200;
        break;
    case CTL_EVENTS:
    case CTL_TRACE:
        st->st_mode = S_IFREG | 0400;
        break;
    default:
        st->st_mode = S_IFREG | 0444;
        break;
    }
}

/* What an open control file holds.  Reference counted: when a reader
 * blocked in events is killed, the kernel sends RELEASE while our read is
 * still running on another thread. */
struct ctl_handle {
    int refs;
    enum ctl_node node;
    char *text;   /* status snapshots */
    size_t len;
    struct linelog *log; /* events and trace: the log followed */
    uint64_t cursor;
    bool nonblock;
};

void ctl_open(fuse_req_t req, struct mount *m, enum ctl_node node,
              struct fuse_file_info *fi)
{
    int acc = fi->flags & O_ACCMODE;
    struct ctl_handle *h;

    if (node == CTL_DIR) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (node == CTL_CTL ? acc == O_RDONLY : acc != O_RDONLY) {
        fuse_reply_err(req, EACCES);
        return;
    }
    /* Steering the job and watching the guests' writes are for the
     * mount's owner (and root): with allow_other every user reaches the
     * mount.  The modes say so too, for the kernel's own check. */
    uid_t caller = fuse_req_ctx(req)->uid;
    if ((node == CTL_CTL || node == CTL_EVENTS || node == CTL_TRACE) && caller != 0 &&
        caller != getuid()) {
        fuse_reply_err(req, EACCES);
        return;
    }
    h = g_new0(struct ctl_handle, 1);
    h->refs = 1;
    h->node = node;
    if (node == CTL_EVENTS || node == CTL_TRACE) {
        h->nonblock = fi->flags & O_NONBLOCK;
        if (node == CTL_EVENTS) {
            /* From the oldest kept event: a late reader sees what happened. */
            h->log = m->logs.events;
            h->cursor = linelog_oldest(m->logs.events);
        } else {
            /* Writes are traced only while somebody reads, from now on. */
            h->log = m->logs.trace;
            h->cursor = linelog_next(m->logs.trace);
            g_atomic_int_inc(&m->logs.trace_readers);
        }
    } else if (node != CTL_CTL) {
        struct status_snapshot s;
        mount_snapshot(m, &s);
        h->text = node == CTL_STATUS ? status_format_text(&s) : status_format_json(&s);
        h->len = strlen(h->text);
        status_snapshot_clear(&s);
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    fi->nonseekable = node == CTL_CTL || node == CTL_EVENTS || node == CTL_TRACE;
    fuse_reply_open(req, fi);
}

static struct ctl_handle *handle_get(struct fuse_file_info *fi)
{
    struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

    g_atomic_int_inc(&h->refs);
    return h;
}

static void handle_put(struct ctl_handle *h)
{
    if (!g_atomic_int_dec_and_test(&h->refs))
        return;
    g_free(h->text);
    g_free(h);
}

/* ---- reads that wait ------------------------------------------------------ */

struct ctl_waiter {
    fuse_req_t req;
    struct ctl_handle *h; /* a reference */
    size_t size;          /* asked for */
    char *lines;          /* once answerable: the lines (NULL: an error) */
    size_t len;
};

struct ctl_readers {
    pthread_mutex_t lock; /* the queue, and every log cursor */
    pthread_cond_t cond;
    GQueue waiting;       /* struct ctl_waiter, oldest first */
    bool poke;            /* a line came or a read was interrupted */
    bool stopping;
    struct mirror_logs *logs;
    GThread *thread;
};

/* Interrupted reads are also looked for this often, in case the wake-up
 * raced with the queueing. */
#define READERS_TICK_US (200 * 1000)

static void readers_poke(void *data)
{
    struct ctl_readers *r = data;

    pthread_mutex_lock(&r->lock);
    r->poke = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void readers_interrupted(fuse_req_t req, void *data)
{
    (void)req;
    readers_poke(data);
}

/* With r->lock held: the lines a waiting read can have now, or NULL (and
 * *n = 0) when there are none. */
static char *take_lines(struct ctl_waiter *w, size_t *n)
{
    *n = 0;
    if (w->h->cursor >= linelog_next(w->h->log))
        return NULL;

    char *buf = g_malloc(w->size ? w->size : 1);

    *n = linelog_read(w->h->log, &w->h->cursor, buf, w->size, 0);
    if (*n == 0)
        g_clear_pointer(&buf, g_free);
    return buf;
}

static void answer(struct ctl_waiter *w, char *buf, size_t n, int err)
{
    if (buf)
        fuse_reply_buf(w->req, buf, n);
    else
        fuse_reply_err(w->req, err);
    g_free(buf);
    handle_put(w->h);
    g_free(w);
}

static gpointer readers_main(gpointer data)
{
    struct ctl_readers *r = data;
    GQueue done = G_QUEUE_INIT; /* waiters to answer, outside the lock */

    pthread_mutex_lock(&r->lock);
    while (!r->stopping || !g_queue_is_empty(&r->waiting)) {
        if (!r->poke && !r->stopping) {
            struct timespec until = cond_deadline(CLOCK_REALTIME, READERS_TICK_US * 1000ull);
            pthread_cond_timedwait(&r->cond, &r->lock, &until);
        }
        r->poke = false;
        for (GList *l = r->waiting.head, *next; l; l = next) {
            struct ctl_waiter *w = l->data;
            size_t n;
            char *buf = take_lines(w, &n);

            next = l->next;
            if (!buf && !r->stopping && !fuse_req_interrupted(w->req))
                continue;
            g_queue_delete_link(&r->waiting, l);
            w->lines = buf;
            w->len = n;
            g_queue_push_tail(&done, w);
        }
        pthread_mutex_unlock(&r->lock);
        while (!g_queue_is_empty(&done)) {
            struct ctl_waiter *w = g_queue_pop_head(&done);
            answer(w, w->lines, w->len, EINTR);
        }
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

struct ctl_readers *ctl_readers_new(struct mirror_logs *logs)
{
    struct ctl_readers *r = g_new0(struct ctl_readers, 1);

    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    g_queue_init(&r->waiting);
    r->logs = logs;
    linelog_set_notify(logs->events, readers_poke, r);
    linelog_set_notify(logs->trace, readers_poke, r);
    r->thread = g_thread_new("ctl-readers", readers_main, r);
    return r;
}

void ctl_readers_stop(struct ctl_readers *r)
{
    if (!r || !r->thread)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    g_thread_join(r->thread);
    r->thread = NULL;
}

void ctl_readers_free(struct ctl_readers *r)
{
    if (!r)
        return;
    ctl_readers_stop(r);
    linelog_set_notify(r->logs->events, NULL, NULL);
    linelog_set_notify(r->logs->trace, NULL, NULL);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    g_free(r);
}

void ctl_read(fuse_req_t req, struct ctl_readers *readers, size_t size, off_t off,
              struct fuse_file_info *fi)
{
    struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

    if (!h->log) {
        if (!h->text || off < 0 || (size_t)off >= h->len)
            fuse_reply_buf(req, NULL, 0);
        else
            fuse_reply_buf(req, h->text + off, MIN(size, h->len - (size_t)off));
        return;
    }

    struct ctl_waiter *w = g_new0(struct ctl_waiter, 1);
    size_t n;

    w->req = req;
    w->h = handle_get(fi);
    w->size = size;
    /* Registered before the read is queued: once queued, the reader
     * thread may answer it (and free req) at any moment.  If req was
     * interrupted already, this pokes the thread at once. */
    if (!h->nonblock)
        fuse_req_interrupt_func(req, readers_interrupted, readers);
    pthread_mutex_lock(&readers->lock);
    char *buf = take_lines(w, &n);
    if (!buf && !h->nonblock && !readers->stopping) {
        g_queue_push_tail(&readers->waiting, w);
        pthread_mutex_unlock(&readers->lock);
        return;
    }
    bool stopping = readers->stopping;
    pthread_mutex_unlock(&readers->lock);
    answer(w, buf, n, h->nonblock && !stopping ? EAGAIN : EINTR);
}

void ctl_write(fuse_req_t req, struct mount *m, const char *buf, size_t size,
               struct fuse_file_info *fi)
{
    struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

    if (h->node != CTL_CTL) {
        fuse_reply_err(req, EBADF);
        return;
    }
    /* Each write holds whole commands, one a line (a last line without its
     * newline counts too: `printf pause`).  The write fails as soon as one
     * of them is refused; the ones before it have taken effect. */
    g_autofree char *text = g_strndup(buf, size);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        g_autofree char *err = NULL;
        if (mount_control(m, *l, &err) < 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
    }
    fuse_reply_write(req, size);
}

void ctl_release(fuse_req_t req, struct mount *m, struct fuse_file_info *fi)
{
    struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

    if (h->node == CTL_TRACE)
        g_atomic_int_add(&m->logs.trace_readers, -1);
    handle_put(h);
    fuse_reply_err(req, 0);
}
