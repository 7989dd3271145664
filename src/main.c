/* main.c - mirrorfs: options, start-up checks, mount, loop, drain, exit. */
#include "config.h"

#include "fs.h"
#include "mirror.h"
#include "options.h"
#include "persist.h"
#include "target.h"
#include "util.h"
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define DEFAULT_STATE_ROOT "/var/lib/mirrorfs"
#define EXIT_SETUP 1

static void G_GNUC_PRINTF(1, 2) die(const char *fmt, ...)
{
    va_list ap;

    fputs("mirrorfs: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_SETUP);
}

/* Canonical absolute path of a directory that may not exist yet (its
 * parent must). */
static char *canonical_maybe_missing(const char *path, bool *exists)
{
    char buf[PATH_MAX];

    if (realpath(path, buf)) {
        *exists = true;
        return g_strdup(buf);
    }
    if (errno != ENOENT)
        return NULL;
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    if (!realpath(dir, buf))
        return NULL;
    *exists = false;
    return g_build_filename(buf, base, NULL);
}

static bool dir_is_empty(const char *path)
{
    g_autoptr(GDir) d = g_dir_open(path, 0, NULL);

    return d && g_dir_read_name(d) == NULL;
}

static char *default_state_dir(const char *src, const char *tgt)
{
    g_autofree char *key = g_strconcat(src, "\n", tgt, NULL);
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);

    sum[16] = '\0';
    return g_build_filename(DEFAULT_STATE_ROOT, sum, NULL);
}

/* The checks that need the file system, in the order a user fixes them. */
static void check_paths(const struct mirror_options *o, const char *mountpoint,
                        bool target_is_uri, char **src_out, char **tgt_out, bool *tgt_exists)
{
    struct stat st;
    char buf[PATH_MAX];

    if (stat(o->source, &st) < 0)
        die("%s: %s", o->source, g_strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die("%s: source is not a directory", o->source);
    if (!realpath(o->source, buf))
        die("%s: %s", o->source, g_strerror(errno));
    *src_out = g_strdup(buf);

    if (stat(mountpoint, &st) < 0)
        die("%s: %s", mountpoint, g_strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die("%s: mountpoint is not a directory", mountpoint);
    g_autofree char *mnt = realpath(mountpoint, buf) ? g_strdup(buf) : NULL;
    if (!mnt)
        die("%s: %s", mountpoint, g_strerror(errno));

    g_autofree char *ctl = g_build_filename(*src_out, ".mirror", NULL);
    if (lstat(ctl, &st) == 0)
        die("%s: the source holds a .mirror entry, which mirrorfs needs for itself",
            o->source);
    if (target_is_uri) {
        /* The NBD backend checks the server and its exports itself. */
        *tgt_out = g_strdup(o->target);
        *tgt_exists = true;
        return;
    }

    char *tgt = canonical_maybe_missing(o->target, tgt_exists);
    if (!tgt)
        die("%s: target: %s", o->target, g_strerror(errno));
    *tgt_out = tgt;
    if (*tgt_exists) {
        if (stat(tgt, &st) < 0)
            die("%s: %s", o->target, g_strerror(errno));
        if (!S_ISDIR(st.st_mode))
            die("%s: target is not a directory", o->target);
    }
    if (path_is_within(*src_out, tgt))
        die("%s: the target is inside the source %s", o->target, o->source);
    if (path_is_within(tgt, *src_out))
        die("%s: the source is inside the target %s", o->source, o->target);
    /* Below the mount the target would be reached through the daemon itself. */
    if (path_is_within(mnt, tgt))
        die("%s: the target is inside the mountpoint %s", o->target, mountpoint);
    if (path_is_within(tgt, mnt))
        die("%s: the mountpoint is inside the target %s", mountpoint, o->target);
    /* A non-empty target is what a restart finds: fine when this state_dir
     * holds the crash-safe state of the same source and target. */
    g_autofree char *state_dir =
        o->state_dir ? g_strdup(o->state_dir) : default_state_dir(*src_out, tgt);
    if (*tgt_exists && o->sync == SYNC_FULL && !o->overwrite && !dir_is_empty(tgt) &&
        !(o->persist && persist_has_state(state_dir, *src_out, tgt)))
        die("%s: the target is not empty and there is no state of a previous run in %s "
            "(give -o overwrite to compare it with the source and copy only what "
            "differs, or -o sync=none if it is a copy already)",
            o->target, state_dir);
    if (*tgt_exists && access(tgt, W_OK) < 0)
        die("%s: target: %s", o->target, g_strerror(errno));
}

/* Writes behind the mount: a process that holds a source file open for
 * writing (or mapped shared) outside the mount would change it unseen.
 * Refused, unless open_writers=verify, which compares every image before
 * the job completes. */
static void check_open_writers(const struct mirror_options *o, const char *src,
                               struct mirror_job *job)
{
    g_autoptr(GHashTable) files = watch_file_set_new();
    g_autoptr(GPtrArray) writers = NULL;
    g_autofree char *err = NULL;

    for (guint i = 0; i < job->found->len; i++) {
        const struct found_file *f = g_ptr_array_index(job->found, i);
        watch_file_set_add(files, f->dev, f->ino);
    }
    if (watch_find_writers_ino(src, files, &writers, &err) < 0) {
        fprintf(stderr, "mirrorfs: warning: cannot look for writers of %s (%s): every image "
                "is compared in full before the job completes\n", src, err);
        job->verify_at_drain = true;
        return;
    }
    if (writers->len == 0)
        return;
    const struct watch_opener *w = g_ptr_array_index(writers, 0);
    g_autofree char *more = writers->len > 1
                                ? g_strdup_printf(" (and %u more)", writers->len - 1)
                                : g_strdup("");
    if (o->open_writers == OPEN_WRITERS_REFUSE)
        die("%s: open for writing by pid %d (%s) outside the mount%s: stop it first, or give "
            "-o open_writers=verify to compare every image before the job completes",
            w->path, (int)w->pid, w->comm, more);
    fprintf(stderr, "mirrorfs: warning: %s: open for writing by pid %d (%s) outside the "
            "mount%s: every image is compared in full before the job completes\n",
            w->path, (int)w->pid, w->comm, more);
    job->verify_at_drain = true;
}

/* Prepare state_dir: created, writable, no stale result. */
static char *prepare_state_dir(const struct mirror_options *o, const char *src,
                               const char *tgt)
{
    char *dir = o->state_dir ? g_strdup(o->state_dir) : default_state_dir(src, tgt);
    g_autofree char *result = g_build_filename(dir, "result", NULL);

    if (g_mkdir_with_parents(dir, 0700) < 0)
        die("%s: cannot create the state directory: %s", dir, g_strerror(errno));
    if (access(dir, W_OK) < 0)
        die("%s: state directory: %s", dir, g_strerror(errno));
    if (unlink(result) < 0 && errno != ENOENT)
        die("%s: %s", result, g_strerror(errno));
    char buf[PATH_MAX];
    if (realpath(dir, buf)) {
        g_free(dir);
        dir = g_strdup(buf);
    }
    return dir;
}

/* Every image holds a few descriptors (source, target, state): a soft
 * limit of 1024 would cap a job at a few hundred images. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* A signal while the job drains (the mount is gone, libfuse's handlers
 * with it): cancel, which still writes the result and exits 2. */
static struct mirror_job *drain_job;

static void on_drain_signal(int sig)
{
    mirror_request_cancel(drain_job);
}

/* fuse_session_new() consumes the options it knows: a copy for the check. */
static void copy_args(const struct fuse_args *from, struct fuse_args *to)
{
    *to = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
    for (int i = 0; i < from->argc; i++)
        if (fuse_opt_add_arg(to, from->argv[i]) != 0)
            die("out of memory");
}

/* libfuse reports a bad option with its own "fuse: " line: catch it so that
 * the user gets mirrorfs's one-line format. */
static struct fuse_session *new_session(struct fuse_args *args, void *userdata)
{
    FILE *capture = tmpfile();
    int saved = dup(STDERR_FILENO);
    struct fuse_session *se;

    fflush(stderr);
    if (capture)
        dup2(fileno(capture), STDERR_FILENO);
    se = fuse_session_new(args, fs_ops(), sizeof(struct fuse_lowlevel_ops), userdata);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    if (capture) {
        char line[1024];
        rewind(capture);
        while (fgets(line, sizeof(line), capture)) {
            g_strchomp(line);
            const char *msg = g_str_has_prefix(line, "fuse: ") ? line + 6 : line;
            if (se)
                fprintf(stderr, "%s\n", line);
            else if (msg[0])
                die("%s", msg);
        }
        fclose(capture);
    }
    if (!se)
        die("cannot create the FUSE session");
    return se;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts cmd;
    struct mirror_options opts;
    g_autofree char *err = NULL;
    g_autofree char *src = NULL, *tgt = NULL, *state_dir = NULL;
    bool tgt_exists = false;
    struct fuse_session *se;
    struct target *target = NULL;
    struct mirror_job *job = NULL;
    struct fs *fs;
    int src_fd, root_fd, tgt_fd, code;

    /* Modes arrive with the guest's umask applied already. */
    umask(0);
    if (options_parse(&args, &opts, &err) < 0)
        die("%s", err);
    if (fuse_parse_cmdline(&args, &cmd) != 0)
        die("cannot parse the command line");
    if (cmd.show_help) {
        options_print_usage(argv[0]);
        printf("FUSE options:\n");
        fuse_cmdline_help();
        fuse_lowlevel_help();
        return 0;
    }
    if (cmd.show_version) {
        printf("mirrorfs %s\n", PACKAGE_VERSION);
        fuse_lowlevel_version();
        return 0;
    }
    if (!cmd.mountpoint)
        die("missing MOUNTPOINT (usage: mirrorfs [options] SOURCE MOUNTPOINT)");

    /* With allow_other, every user of the machine reaches the mount: the
     * kernel checks their permissions against the source's modes and
     * owners (default_permissions), as on a local file system.  Without
     * it, the daemon's own rights (root) would apply to everybody. */
    if (opts.allow_other && !opts.default_permissions)
        fuse_opt_add_arg(&args, "-odefault_permissions");
    raise_fd_limit();

    bool target_is_uri = target_nbd_is_uri(opts.target);
    check_paths(&opts, cmd.mountpoint, target_is_uri, &src, &tgt, &tgt_exists);
    /* `mount` and /proc/mounts then show "SOURCE on MNT type fuse.mirrorfs",
     * and umount -t fuse.mirrorfs finds it.  Commas would split the option. */
    if (!strstr(src, ",")) {
        g_autofree char *fsname = g_strdup_printf("-ofsname=%s,subtype=mirrorfs", src);
        fuse_opt_add_arg(&args, fsname);
    } else {
        fuse_opt_add_arg(&args, "-osubtype=mirrorfs");
    }
    /* Check the FUSE options now, before anything is written; the real
     * session is made once the job exists. */
    struct fuse_args check_args;
    copy_args(&args, &check_args);
    fuse_session_destroy(new_session(&check_args, NULL));
    fuse_opt_free_args(&check_args);
    state_dir = prepare_state_dir(&opts, src, tgt);

    /* SOURCE through a private clone of its mount: the watch over writes
     * behind the mount then leaves the daemon's own out at no cost (it
     * works without one, at some: watch.h). */
    int private_root = -1;
    g_autofree char *perr = NULL;
    if (watch_private_root(src, &private_root, &perr) < 0)
        private_root = -1;
    src_fd = private_root >= 0 ? openat(private_root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                               : open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    root_fd = private_root >= 0 ? openat(private_root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC)
                                : open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0 || root_fd < 0)
        die("%s: %s", src, g_strerror(errno));
    if (target_is_uri) {
        /* Connecting writes nothing. */
        g_clear_pointer(&err, g_free);
        if (target_nbd_new(tgt, &target, &err) < 0)
            die("%s", err);
    }
    g_clear_pointer(&err, g_free);
    if (mirror_job_new(&opts, src_fd, src, target, state_dir, cmd.foreground, &job, &err) < 0)
        die("%s", err);
    job->private_root_fd = private_root;
    check_open_writers(&opts, src, job);

    /* Everything checked: from here on the target may be written. */
    if (!target_is_uri) {
        if (!tgt_exists && mkdir(tgt, 0700) < 0)
            die("%s: cannot create the target: %s", tgt, g_strerror(errno));
        tgt_fd = open(tgt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tgt_fd < 0)
            die("%s: %s", tgt, g_strerror(errno));
        target_file_new(tgt_fd, tgt, &target);
        job->target = target;
    }
    g_clear_pointer(&err, g_free);
    if (mirror_job_start_target(job, &err) < 0)
        die("%s", err);

    fs = fs_new(job, root_fd);
    se = new_session(&args, fs);

    if (fuse_set_signal_handlers(se) != 0)
        die("cannot set signal handlers");
    if (fuse_session_mount(se, cmd.mountpoint) != 0)
        die("%s: cannot mount", cmd.mountpoint);
    if (!cmd.foreground)
        openlog("mirrorfs", LOG_PID, LOG_DAEMON);
    if (fuse_daemonize(cmd.foreground) != 0) {
        fuse_session_unmount(se);
        die("cannot run in the background");
    }
    mirror_start(job);
    fs_start(fs);

    /* Few threads: one per CPU.  Writes to one image serialise on its inode
     * lock in the kernel anyway, and more threads than CPUs only spin on it
     * (doc/performance.md); nothing that waits long runs in them (fs.c). */
    unsigned threads = opts.threads;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus < 2 ? 2 : (unsigned)MIN(cpus, (long)OPT_MAX_THREADS);
    }
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 1);
    fuse_loop_cfg_set_max_threads(cfg, threads);
    fuse_loop_cfg_set_idle_threads(cfg, threads);
    if (cmd.singlethread)
        fuse_session_loop(se);
    else
        fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    fs_stop(fs);

    /* The loop ends when the mount is gone (the kernel sends no DESTROY for
     * a plain fuse mount) or on a signal: either way no guest can write any
     * more, and the drain runs here. */
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    drain_job = job;
    struct sigaction sa = {.sa_handler = on_drain_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    code = mirror_finish(job);
    fuse_session_destroy(se);
    fs_free(fs);
    mirror_job_free(job);
    target_destroy(target);
    if (private_root >= 0)
        close(private_root);
    close(src_fd);
    free(cmd.mountpoint);
    fuse_opt_free_args(&args);
    options_clear(&opts);
    return code;
}
