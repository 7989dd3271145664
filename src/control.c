/* control.c - the virtual .mirror directory (see control.h). */
#include "config.h"

#include "control.h"
#include "linelog.h"
#include "mirror.h"
#include "status.h"

#include <errno.h>
#include <glib.h>
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

/* What an open control file holds. */
/* Reference counted: when a reader blocked in events is killed, the kernel
 * sends RELEASE while our read is still running on another thread. */
struct ctl_handle {
    int refs;
    enum ctl_node node;
    char *text;   /* status snapshots */
    size_t len;
    struct linelog *log; /* events and trace: the log followed */
    uint64_t cursor;
    bool nonblock;
};

void ctl_open(fuse_req_t req, struct mirror_job *job, enum ctl_node node,
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
    h = g_new0(struct ctl_handle, 1);
    h->refs = 1;
    h->node = node;
    if (node == CTL_EVENTS || node == CTL_TRACE) {
        h->nonblock = fi->flags & O_NONBLOCK;
        if (node == CTL_EVENTS) {
            /* From the oldest kept event: a late reader sees what happened. */
            h->log = job->events;
            h->cursor = linelog_oldest(job->events);
        } else {
            /* Writes are traced only while somebody reads, from now on. */
            h->log = job->trace;
            h->cursor = linelog_next(job->trace);
            g_atomic_int_inc(&job->trace_readers);
        }
    } else if (node != CTL_CTL) {
        struct status_snapshot s;
        mirror_snapshot(job, &s);
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

static void read_handle(fuse_req_t req, struct ctl_handle *h, size_t size, off_t off,
                        ctl_cancelled_fn cancelled);

void ctl_read(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
              ctl_cancelled_fn cancelled)
{
    struct ctl_handle *h = handle_get(fi);

    read_handle(req, h, size, off, cancelled);
    handle_put(h);
}

static void read_handle(fuse_req_t req, struct ctl_handle *h, size_t size, off_t off,
                        ctl_cancelled_fn cancelled)
{
    if (h->log) {
        g_autofree char *buf = g_malloc(size);
        size_t n;
        /* Wait in short slices: a blocked read holds a FUSE thread, which
         * must come back when the reader is killed or the daemon stops. */
        while ((n = linelog_read(h->log, &h->cursor, buf, size,
                                 h->nonblock ? 0 : 200 * 1000 * 1000ull)) == 0) {
            if (h->nonblock) {
                fuse_reply_err(req, EAGAIN);
                return;
            }
            if (cancelled(req)) {
                fuse_reply_err(req, EINTR);
                return;
            }
        }
        fuse_reply_buf(req, buf, n);
        return;
    }

    if (!h->text || off < 0 || (size_t)off >= h->len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    fuse_reply_buf(req, h->text + off, MIN(size, h->len - (size_t)off));
}

void ctl_write(fuse_req_t req, struct mirror_job *job, const char *buf, size_t size,
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
        if (mirror_control(job, *l, &err) < 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
    }
    fuse_reply_write(req, size);
}

void ctl_release(fuse_req_t req, struct mirror_job *job, struct fuse_file_info *fi)
{
    struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

    if (h->node == CTL_TRACE)
        g_atomic_int_add(&job->trace_readers, -1);
    handle_put(h);
    fuse_reply_err(req, 0);
}
