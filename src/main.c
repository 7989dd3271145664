/* main.c - mirrorfs: options, start-up checks, mount, loop, drain, exit. */
#include "config.h"

#include "fs.h"
#include "mirror.h"
#include "mount.h"
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

static char *default_state_dir(const char *src, const char *tgt)
{
    g_autofree char *key = g_strconcat(src, "\n", tgt, NULL);
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, key, -1);

    sum[16] = '\0';
    return g_build_filename(DEFAULT_STATE_ROOT, sum, NULL);
}

/* The checks of SOURCE and MOUNTPOINT, in the order a user fixes them
 * (the target's are mount_check_target()'s). */
static void check_paths(const struct mirror_options *o, const char *mountpoint, char **src_out,
                        char **mnt_out)
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
    if (!realpath(mountpoint, buf))
        die("%s: %s", mountpoint, g_strerror(errno));
    *mnt_out = g_strdup(buf);

    g_autofree char *ctl = g_build_filename(*src_out, ".mirror", NULL);
    if (lstat(ctl, &st) == 0)
        die("%s: the source holds a .mirror entry, which mirrorfs needs for itself",
            o->source);
}

/* The key of the default state_dir: the target as it will be named. */
static char *target_key(const struct mirror_options *o)
{
    bool exists;

    if (!o->target)
        return g_strdup("");
    if (target_nbd_is_uri(o->target))
        return g_strdup(o->target);
    /* Unresolvable: the target's own check says why, after. */
    char *key = path_canonical_maybe_missing(o->target, &exists);
    return key ? key : g_strdup(o->target);
}

/* Prepare state_dir: created, writable, no stale result. */
static char *prepare_state_dir(const struct mirror_options *o, const char *src,
                               const char *tgt)
{
    g_autofree char *dir = o->state_dir ? g_strdup(o->state_dir) : default_state_dir(src, tgt);
    g_autofree char *err = NULL;
    char *canon = mount_prepare_state_dir(dir, &err);

    if (!canon)
        die("%s", err);
    return canon;
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
static struct mount *drain_mount;

static void on_drain_signal(int sig)
{
    mount_request_cancel(drain_mount);
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
    g_autofree char *src = NULL, *mnt = NULL, *tkey = NULL, *state_dir = NULL;
    g_autofree char *serving = NULL;
    bool pivoted = false;
    struct fuse_session *se;
    struct mount *m;
    struct fs *fs;
    int root_fd, code;

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

    check_paths(&opts, cmd.mountpoint, &src, &mnt);
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
    tkey = target_key(&opts);
    state_dir = prepare_state_dir(&opts, src, tkey);

    /* A pivot of an earlier run with this state_dir: its target is what
     * the guests use now, whatever the options say (doc/design.md, "The
     * pivot"). */
    g_clear_pointer(&err, g_free);
    serving = mount_recorded_serving(state_dir, src, &pivoted, &err);
    if (!serving)
        die("%s", err);
    if (pivoted)
        fprintf(stderr, "mirrorfs: %s was pivoted to %s (recorded in %s/pivot): serving it%s\n",
                src, serving, state_dir, opts.target ? ", no job started" : "");
    m = mount_new(src, serving, pivoted, mnt, state_dir, cmd.foreground);

    /* What is served, through a private clone of its mount: the watch over
     * writes behind the mount then leaves the daemon's own out at no cost
     * (it works without one, at some: watch.h). */
    g_clear_pointer(&err, g_free);
    root_fd = mount_open_root(m, &err);
    if (root_fd < 0)
        die("%s", err);
    if (opts.target && !pivoted) {
        g_clear_pointer(&err, g_free);
        if (mount_start_job(m, &opts, false, false, &err) < 0)
            die("%s", err);
    }

    fs = fs_new(m, root_fd);
    m->fs = fs;
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
    mount_start_threads(m);
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
    drain_mount = m;
    struct sigaction sa = {.sa_handler = on_drain_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    code = mount_finish(m);
    fuse_session_destroy(se);
    fs_free(fs);
    mount_free(m);
    free(cmd.mountpoint);
    fuse_opt_free_args(&args);
    options_clear(&opts);
    return code;
}
