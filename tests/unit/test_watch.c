/* Unit tests for the writers outside the mount: the /proc scan at start
 * and the fanotify watcher.  They run as root (make check does): without
 * it the watcher and loop device tests fail, they do not skip. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <linux/loop.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "watch.h"
#include "unit.h"

static char *dir; /* canonical */

static void setup(void)
{
    g_autofree char *tmp = g_dir_make_tmp("test-watch-XXXXXX", NULL);
    ck_assert_ptr_nonnull(tmp);
    dir = realpath(tmp, NULL);
    ck_assert_ptr_nonnull(dir);
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(dir);
}

/* Valgrind does not know open_tree(2) (it returns ENOSYS): under it, the
 * private root tests check what they can without one. */
static bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload");
}

static char *path_in(const char *rel)
{
    return g_strdup_printf("%s/%s", dir, rel);
}

static void make_file(const char *rel, size_t size)
{
    g_autofree char *p = path_in(rel);
    g_autofree char *parent = g_path_get_dirname(p);
    ck_assert_int_eq(g_mkdir_with_parents(parent, 0755), 0);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
}

static void stat_file(const char *rel, struct stat *st)
{
    g_autofree char *p = path_in(rel);
    ck_assert_int_eq(stat(p, st), 0);
}

/* ---- open writers ------------------------------------------------------- */

enum hold {
    HOLD_RDWR,
    HOLD_WRONLY,
    HOLD_RDONLY,
    HOLD_MAP_SHARED_WRITE, /* mapped, then the fd closed */
    HOLD_MAP_PRIVATE_WRITE,
};

struct child {
    pid_t pid;
    int release; /* write end: a byte on it ends the child */
    /* Until the child is ready: its pipes (ready: child -> parent). */
    int ready[2];
    int release_r;
};

/* Fork a child that dies with this process.  Returns in both: in the
 * child (pid 0), which acts and then calls child_ready(); in the parent,
 * which calls child_started(). */
static struct child child_fork(void)
{
    struct child c;
    int release[2];

    ck_assert_int_eq(pipe2(c.ready, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(release, O_CLOEXEC), 0);
    c.release = release[1];
    c.release_r = release[0];
    c.pid = fork();
    ck_assert_int_ge(c.pid, 0);
    if (c.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(c.ready[0]);
        close(c.release);
    }
    return c;
}

/* In the child: say it is ready, wait to be released, exit. */
static void G_GNUC_NORETURN child_ready(struct child c)
{
    char b;

    if (write(c.ready[1], "r", 1) != 1)
        _exit(1);
    /* A byte, or our death (the other children hold copies of the write
     * end, so no EOF comes before they end). */
    if (read(c.release_r, &b, 1) < 0)
        _exit(1);
    _exit(0);
}

/* In the parent: wait until the child is ready. */
static struct child child_started(struct child c)
{
    char b;

    close(c.ready[1]);
    close(c.release_r);
    ck_assert_int_eq(read(c.ready[0], &b, 1), 1);
    close(c.ready[0]);
    return c;
}

/* A child named name holding file path as told, until released.  It is
 * ready (holding) when this returns. */
static struct child hold_file(const char *path, enum hold how, const char *name)
{
    struct child c = child_fork();

    if (c.pid == 0) {
        prctl(PR_SET_NAME, name);
        int flags = how == HOLD_RDONLY   ? O_RDONLY
                    : how == HOLD_WRONLY ? O_WRONLY
                                         : O_RDWR;
        int fd = open(path, flags);
        if (fd < 0)
            _exit(1);
        if (how == HOLD_MAP_SHARED_WRITE || how == HOLD_MAP_PRIVATE_WRITE) {
            int share = how == HOLD_MAP_SHARED_WRITE ? MAP_SHARED : MAP_PRIVATE;
            if (mmap(NULL, 4096, PROT_READ | PROT_WRITE, share, fd, 0) == MAP_FAILED)
                _exit(1);
            close(fd);
        }
        child_ready(c);
    }
    return child_started(c);
}

static void release(struct child c)
{
    int status;
    ck_assert_int_eq(write(c.release, "q", 1), 1);
    close(c.release);
    ck_assert_int_eq(waitpid(c.pid, &status, 0), c.pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static GPtrArray *writers_of(const char *root, GHashTable *files)
{
    GPtrArray *out = NULL;
    g_autofree char *err = NULL;

    ck_assert_int_eq(watch_find_writers_ino(root, files, &out, &err), 0);
    ck_assert_ptr_null(err);
    return out;
}

/* The entry of pid in out, or NULL. */
static struct watch_opener *find_pid(GPtrArray *out, pid_t pid)
{
    for (guint i = 0; i < out->len; i++) {
        struct watch_opener *o = out->pdata[i];
        if (o->pid == pid)
            return o;
    }
    return NULL;
}

START_TEST(test_rdwr_opener_is_reported)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src/img");
    make_file("src/img", 4096);
    struct child c = hold_file(f, HOLD_RDWR, "w-rdwr");
    struct child c2 = hold_file(f, HOLD_WRONLY, "w-wronly");

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    struct watch_opener *o = find_pid(out, c.pid);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->comm, "w-rdwr");
    ck_assert_str_eq(o->path, f);
    o = find_pid(out, c2.pid);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->comm, "w-wronly");
    release(c);
    release(c2);
}
END_TEST

START_TEST(test_readers_and_self_are_not_reported)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src/img");
    make_file("src/img", 4096);
    struct child c = hold_file(f, HOLD_RDONLY, "w-rdonly");
    struct child c2 = hold_file(f, HOLD_MAP_PRIVATE_WRITE, "w-private");
    int mine = open(f, O_RDWR);
    ck_assert_int_ge(mine, 0);

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    ck_assert_ptr_null(find_pid(out, c.pid));
    ck_assert_ptr_null(find_pid(out, c2.pid));
    ck_assert_ptr_null(find_pid(out, getpid()));
    close(mine);
    release(c);
    release(c2);
}
END_TEST

START_TEST(test_shared_writable_mapping_is_reported)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src/img");
    make_file("src/img", 4096);
    struct child c = hold_file(f, HOLD_MAP_SHARED_WRITE, "w-mapped");

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    struct watch_opener *o = find_pid(out, c.pid);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->comm, "w-mapped");
    ck_assert_str_eq(o->path, f);
    release(c);
}
END_TEST

START_TEST(test_sibling_with_shared_prefix_is_not_reported)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src2/img");
    make_file("src/img", 4096);
    make_file("src2/img", 4096);
    struct child c = hold_file(f, HOLD_RDWR, "w-sibling");

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    ck_assert_ptr_null(find_pid(out, c.pid));
    /* ... and with a trailing slash on the root, the same. */
    g_autofree char *slash = g_strdup_printf("%s/", src);
    g_autoptr(GPtrArray) out2 = writers_of(slash, NULL);
    ck_assert_ptr_null(find_pid(out2, c.pid));
    release(c);
}
END_TEST

/* A source file open through a name outside root (here a hard link; a bind
 * mount is the same to the scan) is found by its identity only. */
START_TEST(test_other_name_found_by_identity)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src/img");
    g_autofree char *other = path_in("elsewhere");
    struct stat st;
    make_file("src/img", 4096);
    ck_assert_int_eq(link(f, other), 0);
    stat_file("src/img", &st);
    struct child c = hold_file(other, HOLD_RDWR, "w-other");

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    ck_assert_ptr_null(find_pid(out, c.pid));
    g_autoptr(GHashTable) files = watch_file_set_new();
    watch_file_set_add(files, st.st_dev, st.st_ino);
    g_autoptr(GPtrArray) out2 = writers_of(src, files);
    struct watch_opener *o = find_pid(out2, c.pid);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->path, other);
    release(c);
}
END_TEST

START_TEST(test_deleted_names)
{
    g_autofree char *src = path_in("src");
    g_autofree char *gone = path_in("src/gone");
    g_autofree char *linked = path_in("src/linked");
    g_autofree char *link2 = path_in("src/linked2");
    g_autofree char *odd = path_in("src/odd (deleted)");
    g_autofree char *beside = path_in("src (deleted)");
    make_file("src/gone", 4096);
    make_file("src (deleted)", 4096);
    make_file("src/linked", 4096);
    make_file("src/odd (deleted)", 4096);
    ck_assert_int_eq(link(linked, link2), 0);
    struct child c_gone = hold_file(gone, HOLD_RDWR, "w-gone");
    struct child c_linked = hold_file(linked, HOLD_RDWR, "w-linked");
    struct child c_odd = hold_file(odd, HOLD_RDWR, "w-odd");
    struct child c_beside = hold_file(beside, HOLD_RDWR, "w-beside");
    ck_assert_int_eq(unlink(gone), 0);
    ck_assert_int_eq(unlink(linked), 0);

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    /* No name left: not a source file any more. */
    ck_assert_ptr_null(find_pid(out, c_gone.pid));
    /* Its name went, but the file lives on as src/linked2. */
    struct watch_opener *o = find_pid(out, c_linked.pid);
    ck_assert_ptr_nonnull(o);
    g_autofree char *shown = g_strdup_printf("%s (deleted)", linked);
    ck_assert_str_eq(o->path, shown);
    /* A name that really ends in " (deleted)". */
    o = find_pid(out, c_odd.pid);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->path, odd);
    /* ... and one beside root, which is not root unlinked. */
    ck_assert_ptr_null(find_pid(out, c_beside.pid));
    release(c_beside);
    release(c_gone);
    release(c_linked);
    release(c_odd);
}
END_TEST

/* A loop device writes its backing file with no process holding it. */
START_TEST(test_loop_device_is_reported)
{
    g_autofree char *src = path_in("src");
    g_autofree char *f = path_in("src/img");
    make_file("src/img", 1 << 20);
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    ck_assert_msg(ctl >= 0, "/dev/loop-control: %s (the unit tests must run as root)",
                  g_strerror(errno));
    int ffd = open(f, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(ffd, 0);
    /* Autoclear: the device lets go of the file when lfd closes, even if
     * this test dies first. */
    struct loop_config cfg = {.fd = (unsigned)ffd, .info.lo_flags = LO_FLAGS_AUTOCLEAR};
    g_autofree char *name = NULL;
    int lfd = -1;
    /* Another process may take the free device first (EBUSY): as losetup
     * does, ask for the next one. */
    for (int tries = 0; lfd < 0 && tries < 20; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        ck_assert_int_ge(n, 0);
        g_autofree char *node = g_strdup_printf("/dev/loop%d", n);
        lfd = open(node, O_RDWR | O_CLOEXEC);
        ck_assert_int_ge(lfd, 0);
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
            name = g_strdup_printf("loop%d", n);
        } else {
            ck_assert_int_eq(errno, EBUSY);
            close(lfd);
            lfd = -1;
        }
    }
    ck_assert_int_ge(lfd, 0);
    close(ctl);
    close(ffd);

    g_autoptr(GPtrArray) out = writers_of(src, NULL);
    struct watch_opener *o = find_pid(out, 0);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(o->comm, name);
    ck_assert_str_eq(o->path, f);
    close(lfd);
}
END_TEST

/* ---- the watcher -------------------------------------------------------- */

struct seen_event {
    dev_t dev;
    ino_t ino;
    pid_t pid;
};

struct recorder {
    pthread_mutex_t lock;
    pthread_cond_t more;
    GArray *events; /* struct seen_event */
};

static void record(void *ctx, dev_t dev, ino_t ino, pid_t pid)
{
    struct recorder *r = ctx;
    struct seen_event e = {dev, ino, pid};

    pthread_mutex_lock(&r->lock);
    g_array_append_val(r->events, e);
    pthread_cond_broadcast(&r->more);
    pthread_mutex_unlock(&r->lock);
}

static void recorder_init(struct recorder *r)
{
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->more, NULL);
    r->events = g_array_new(FALSE, FALSE, sizeof(struct seen_event));
}

static void recorder_clear(struct recorder *r)
{
    g_array_free(r->events, TRUE);
    pthread_cond_destroy(&r->more);
    pthread_mutex_destroy(&r->lock);
}

/* How many events of the file st by pid (-1: by anyone) were seen. */
static unsigned count_locked(struct recorder *r, const struct stat *st, pid_t pid)
{
    unsigned n = 0;
    for (guint i = 0; i < r->events->len; i++) {
        struct seen_event *e = &g_array_index(r->events, struct seen_event, i);
        if (e->dev == st->st_dev && e->ino == st->st_ino && (pid < 0 || e->pid == pid))
            n++;
    }
    return n;
}

static unsigned count(struct recorder *r, const struct stat *st, pid_t pid)
{
    pthread_mutex_lock(&r->lock);
    unsigned n = count_locked(r, st, pid);
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* Wait up to 5 s for an event of st by pid. */
static bool wait_for(struct recorder *r, const struct stat *st, pid_t pid)
{
    struct timespec until;
    bool found;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&r->lock);
    while (!(found = count_locked(r, st, pid) > 0))
        if (pthread_cond_timedwait(&r->more, &r->lock, &until) != 0)
            break;
    found = count_locked(r, st, pid) > 0;
    pthread_mutex_unlock(&r->lock);
    return found;
}

static struct watch *start(struct recorder *r, int private_fd)
{
    struct watch *w = NULL;
    g_autofree char *err = NULL;
    g_autofree char *src = path_in("src");
    int root = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);

    ck_assert_int_ge(root, 0);
    int rc = watch_start(root, private_fd, record, r, &w, &err);
    ck_assert_msg(rc == 0, "watch_start: %s (the unit tests must run as root)",
                  err ? err : "?");
    close(root);
    return w;
}

enum act {
    ACT_WRITE,    /* pwrite, keeping the fd open until released */
    ACT_TRUNCATE, /* truncate(2) by path, no fd */
    ACT_MMAP,     /* map shared, close, write the page, unmap */
};

/* A child that acted on file rel, through dir_fd (AT_FDCWD: below dir).
 * It has acted when this returns, and exits when released.  Holding a
 * written fd open shows the write's own event: its close would give
 * another. */
static struct child child_act(int dir_fd, const char *rel, enum act act)
{
    char p[PATH_MAX]; /* not on the heap: the child leaves by _exit() */

    if (dir_fd == AT_FDCWD)
        snprintf(p, sizeof(p), "%s/%s", dir, rel);
    else
        snprintf(p, sizeof(p), "%s", rel);
    struct child c = child_fork();
    if (c.pid == 0) {
        if (act == ACT_TRUNCATE) {
            if (truncate(p, 8192) < 0)
                _exit(1);
        } else {
            int fd = openat(dir_fd, p, O_RDWR);
            if (fd < 0)
                _exit(1);
            if (act == ACT_WRITE && pwrite(fd, "x", 1, 100) != 1)
                _exit(1);
            if (act == ACT_MMAP) {
                char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (m == MAP_FAILED)
                    _exit(1);
                close(fd);
                m[10] = 'y';
                munmap(m, 4096);
            }
        }
        child_ready(c);
    }
    return child_started(c);
}

START_TEST(test_watch_reports_outside_writes)
{
    struct recorder r;
    struct stat a, b, c, mine;
    recorder_init(&r);
    make_file("src/a", 4096);
    make_file("src/b", 4096);
    make_file("src/c", 4096);
    make_file("src/mine", 4096);
    stat_file("src/a", &a);
    stat_file("src/b", &b);
    stat_file("src/c", &c);
    stat_file("src/mine", &mine);
    struct watch *w = start(&r, -1);

    /* This process's own writes come first: when the children's are seen,
     * so would these have been. */
    g_autofree char *mp = path_in("src/mine");
    int fd = open(mp, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "m", 1, 0), 1);
    ck_assert_int_eq(ftruncate(fd, 100), 0);
    close(fd);

    struct child ca = child_act(AT_FDCWD, "src/a", ACT_WRITE);
    struct child cb = child_act(AT_FDCWD, "src/b", ACT_TRUNCATE);
    struct child cc = child_act(AT_FDCWD, "src/c", ACT_MMAP);
    ck_assert_msg(wait_for(&r, &a, ca.pid), "the child's write was not reported");
    ck_assert_msg(wait_for(&r, &b, cb.pid), "the child's truncate was not reported");
    ck_assert_msg(wait_for(&r, &c, cc.pid),
                  "the child's mmap write was not reported at unmap");
    ck_assert_uint_eq(count(&r, &mine, -1), 0);
    release(ca);
    release(cb);
    release(cc);

    gint64 t0 = g_get_monotonic_time();
    watch_stop(w);
    ck_assert_int_lt(g_get_monotonic_time() - t0, 1000000);
    recorder_clear(&r);
}
END_TEST

START_TEST(test_watch_private_root)
{
    struct recorder r;
    struct stat a, b, mine, st;
    g_autofree char *src = path_in("src");
    g_autofree char *err = NULL;
    int priv = -1;
    recorder_init(&r);
    make_file("src/a", 4096);
    make_file("src/b", 4096);
    make_file("src/mine", 4096);
    stat_file("src/a", &a);
    stat_file("src/b", &b);
    stat_file("src/mine", &mine);
    int rc = watch_private_root(src, &priv, &err);
    if (rc == -ENOSYS && under_valgrind()) {
        recorder_clear(&r);
        return;
    }
    ck_assert_msg(rc == 0, "watch_private_root: %s (the unit tests must run as root)",
                  err ? err : "?");
    /* The clone is rooted at src. */
    stat_file("src", &st);
    struct stat pst;
    ck_assert_int_eq(fstat(priv, &pst), 0);
    ck_assert(pst.st_dev == st.st_dev && pst.st_ino == st.st_ino);
    struct watch *w = start(&r, priv);

    /* Through the clone, by anyone: not reported.  Through the path, by
     * us: not reported; by another process: reported. */
    int fd = openat(priv, "mine", O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "m", 1, 0), 1);
    close(fd);
    g_autofree char *mp = path_in("src/mine");
    fd = open(mp, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "m", 1, 1), 1);
    close(fd);
    release(child_act(priv, "a", ACT_WRITE)); /* its close too */
    struct child cb = child_act(AT_FDCWD, "src/b", ACT_WRITE);
    ck_assert_msg(wait_for(&r, &b, cb.pid), "the child's write was not reported");
    ck_assert_uint_eq(count(&r, &a, -1), 0);
    ck_assert_uint_eq(count(&r, &mine, -1), 0);
    release(cb);

    /* The file written through the clone is the one below the path. */
    g_autofree char *ap = path_in("src/a");
    g_autofree char *text = NULL;
    ck_assert(g_file_get_contents(ap, &text, NULL, NULL));
    ck_assert_int_eq(text[100], 'x');

    watch_stop(w);
    close(priv);
    recorder_clear(&r);
}
END_TEST

/* The job stops the watcher once the guests are gone and then trusts that
 * it heard of every outside write: a write that returned before
 * watch_stop() must have been reported when it returns. */
START_TEST(test_watch_stop_reports_what_was_written)
{
    for (int i = 0; i < 5; i++) {
        struct recorder r;
        struct stat a;
        g_autofree char *rel = g_strdup_printf("src/f%d", i);
        recorder_init(&r);
        make_file(rel, 4096);
        stat_file(rel, &a);
        struct watch *w = start(&r, -1);
        struct child c = child_act(AT_FDCWD, rel, ACT_WRITE);
        watch_stop(w);
        ck_assert_msg(count(&r, &a, c.pid) > 0,
                      "round %d: a write before the stop was lost", i);
        release(c);
        recorder_clear(&r);
    }
}
END_TEST

/* The job asks, before it declares the copy exact, whether any outside
 * write has not been reported yet: a write that returned before
 * watch_flush() has been reported when it returns, and the watch goes on. */
START_TEST(test_watch_flush_reports_what_was_written)
{
    struct recorder r;
    recorder_init(&r);
    for (int i = 0; i < 5; i++) {
        g_autofree char *rel = g_strdup_printf("src/g%d", i);
        make_file(rel, 4096);
    }
    struct watch *w = start(&r, -1);
    for (int i = 0; i < 5; i++) {
        struct stat a;
        g_autofree char *rel = g_strdup_printf("src/g%d", i);
        stat_file(rel, &a);
        struct child c = child_act(AT_FDCWD, rel, ACT_WRITE);
        ck_assert_int_eq(watch_flush(w), 0);
        ck_assert_msg(count(&r, &a, c.pid) > 0, "round %d: a write before the flush was lost", i);
        release(c);
    }
    watch_stop(w);
    recorder_clear(&r);
}
END_TEST

/* A recorder whose first call blocks until the test lets it go, so that
 * the kernel's queue fills up meanwhile. */
struct blocked {
    struct recorder r;
    bool held, go; /* r.lock */
};

static void record_blocked(void *ctx, dev_t dev, ino_t ino, pid_t pid)
{
    struct blocked *b = ctx;

    pthread_mutex_lock(&b->r.lock);
    b->held = true;
    pthread_cond_broadcast(&b->r.more);
    while (!b->go)
        pthread_cond_wait(&b->r.more, &b->r.lock);
    pthread_mutex_unlock(&b->r.lock);
    record(&b->r, dev, ino, pid);
}

/* Start a watcher whose fn blocks until unblock(). */
static struct watch *start_blocked(struct blocked *b)
{
    struct watch *w = NULL;
    g_autofree char *err = NULL;
    g_autofree char *src = path_in("src");

    recorder_init(&b->r);
    b->held = b->go = false;
    make_file("src/first", 0);
    int root = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(root, 0);
    int rc = watch_start(root, -1, record_blocked, b, &w, &err);
    ck_assert_msg(rc == 0, "watch_start: %s (the unit tests must run as root)",
                  err ? err : "?");
    close(root);
    /* An event to hold the thread in fn with. */
    release(child_act(AT_FDCWD, "src/first", ACT_WRITE));
    pthread_mutex_lock(&b->r.lock);
    while (!b->held)
        pthread_cond_wait(&b->r.more, &b->r.lock);
    pthread_mutex_unlock(&b->r.lock);
    return w;
}

static void unblock(struct blocked *b)
{
    pthread_mutex_lock(&b->r.lock);
    b->go = true;
    pthread_cond_broadcast(&b->r.more);
    pthread_mutex_unlock(&b->r.lock);
}

/* In a child, write one byte to each of files new files src/PREFIXn.
 * Distinct files: their events cannot merge.  Returns its pid. */
static pid_t write_files(const char *prefix, int files)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char p[PATH_MAX]; /* not on the heap: the child leaves by _exit() */
        for (int i = 0; i < files; i++) {
            snprintf(p, sizeof(p), "%s/src/%s%d", dir, prefix, i);
            int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, "x", 1) != 1)
                _exit(1);
            close(fd);
        }
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return pid;
}

/* The same with more events queued than one read of the queue takes. */
START_TEST(test_watch_stop_reports_many)
{
    enum { FILES = 3000 };
    struct blocked b;
    struct watch *w = start_blocked(&b);
    pid_t pid = write_files("m", FILES);
    unblock(&b);
    watch_stop(w);
    /* Others writing many files meanwhile (this test run in parallel with
     * itself) may overflow the queue: then the loss must be reported. */
    struct stat none = {.st_dev = 0, .st_ino = 0};
    if (count(&b.r, &none, 0) > 0) {
        recorder_clear(&b.r);
        return;
    }
    for (int i = 0; i < FILES; i++) {
        g_autofree char *rel = g_strdup_printf("src/m%d", i);
        struct stat st;
        stat_file(rel, &st);
        ck_assert_msg(count(&b.r, &st, pid) > 0, "the write to %s was lost", rel);
    }
    recorder_clear(&b.r);
}
END_TEST

START_TEST(test_watch_reports_lost_events)
{
    struct blocked b;
    g_autofree char *text = NULL;
    struct stat none = {.st_dev = 0, .st_ino = 0};

    ck_assert(g_file_get_contents("/proc/sys/fs/fanotify/max_queued_events", &text, NULL,
                                  NULL));
    struct watch *w = start_blocked(&b);
    write_files("n", atoi(text) + 64);
    unblock(&b);
    watch_stop(w);
    ck_assert_msg(count(&b.r, &none, 0) > 0, "the overflow was not reported");
    recorder_clear(&b.r);
}
END_TEST

START_TEST(test_watch_rejects_foreign_private_root)
{
    struct watch *w = NULL;
    g_autofree char *err = NULL;
    g_autofree char *src = path_in("src");
    int priv = -1;
    ck_assert_int_eq(g_mkdir_with_parents(src, 0755), 0);
    /* /proc is never on the same file system as a temporary directory. */
    int rc = watch_private_root("/proc", &priv, &err);
    if (rc == -ENOSYS && under_valgrind())
        return;
    ck_assert_msg(rc == 0, "watch_private_root: %s", err ? err : "?");
    int root = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_eq(watch_start(root, priv, record, NULL, &w, &err), -EXDEV);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_null(w);
    close(root);
    close(priv);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("writers");
    TCase *tw = tcase_create("watcher");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_rdwr_opener_is_reported);
    tcase_add_test(tc, test_readers_and_self_are_not_reported);
    tcase_add_test(tc, test_shared_writable_mapping_is_reported);
    tcase_add_test(tc, test_sibling_with_shared_prefix_is_not_reported);
    tcase_add_test(tc, test_other_name_found_by_identity);
    tcase_add_test(tc, test_deleted_names);
    tcase_add_test(tc, test_loop_device_is_reported);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(tw, setup, teardown);
    tcase_set_timeout(tw, 20);
    tcase_add_test(tw, test_watch_reports_outside_writes);
    tcase_add_test(tw, test_watch_private_root);
    tcase_add_test(tw, test_watch_stop_reports_what_was_written);
    tcase_add_test(tw, test_watch_flush_reports_what_was_written);
    tcase_add_test(tw, test_watch_stop_reports_many);
    tcase_add_test(tw, test_watch_reports_lost_events);
    tcase_add_test(tw, test_watch_rejects_foreign_private_root);
    suite_add_tcase(s, tw);

    return unit_run(s);
}
