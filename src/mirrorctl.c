/* mirrorctl.c - the command-line client of a running mirrorfs daemon.
 *
 * It talks to the daemon only through the files inside the mount:
 * MOUNTPOINT/.mirror/status (read) and MOUNTPOINT/.mirror/ctl (one command
 * line per write), plus STATE_DIR/result once the daemon has exited.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "status.h"
#include "util.h"

enum {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_CANCELLED = 2, /* finish passes on the daemon's own code */
    EXIT_FAILED = 3,
    EXIT_TIMEOUT = 4,
};

#define POLL_INTERVAL_NS (100 * 1000 * 1000ull)
#define POLL_MIN_NS (5 * 1000 * 1000ull)
#define NO_DEADLINE UINT64_MAX

static const char usage_text[] =
    "Usage: mirrorctl COMMAND [OPTION...] MOUNTPOINT [ARG]\n"
    "\n"
    "Commands:\n"
    "  status [-w] [--interval S] MOUNTPOINT\n"
    "      Show the job's progress; -w refreshes until the job ends.\n"
    "  wait --ready|--done [--timeout S] MOUNTPOINT\n"
    "      Block until the job is ready, or completed.\n"
    "  pause|resume|cancel|verify MOUNTPOINT\n"
    "      Send that command to the daemon.\n"
    "  speed MOUNTPOINT RATE\n"
    "      Limit the copy rate (bytes/s with K, M, G or T; 0 = no limit).\n"
    "  copy-mode MOUNTPOINT MODE\n"
    "      Set the copy mode: background, write-blocking or auto.\n"
    "  finish [--timeout S] MOUNTPOINT\n"
    "      Unmount, wait for the daemon, print its result, exit with its code.\n"
    "  mirror MOUNTPOINT TARGET [-o OPTIONS]...\n"
    "      Start a job on a live mount (idle, or pivoted), with mount options.\n"
    "  pivot MOUNTPOINT\n"
    "      Switch the guests of a ready job to its target, without a stop.\n"
    "\n"
    "Options:\n"
    "  -h, --help     show this help and exit\n"
    "  -V, --version  show the version and exit\n"
    "\n"
    "Exit status: 0 ok, 1 usage or setup error, 2 cancelled, 3 failed, 4 timed out.\n";

/* A mistake in the arguments of a known command: its own line and a hint,
 * not the whole usage, so the line is not lost above it. */
static void usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("mirrorctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'mirrorctl --help' for more information.\n", stderr);
}

/* ---- reading the mount ------------------------------------------------ */

/* Read a whole file to EOF.  Not g_file_get_contents(): it reads only
 * st_size bytes of a regular file, and a virtual FUSE file may report a
 * size that is stale or 0 while its content is longer.  0 or -errno. */
static int read_all(const char *path, char **out)
{
    GString *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err = 0;

    if (fd < 0)
        return -errno;
    buf = g_string_sized_new(4096);
    for (;;) {
        char chunk[4096];
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (n == 0)
            break;
        g_string_append_len(buf, chunk, n);
    }
    close(fd);
    if (err) {
        g_string_free(buf, TRUE);
        return err;
    }
    *out = g_string_free(buf, FALSE);
    return 0;
}

/* The status of the mount as text and parsed.  0, -errno when it cannot be
 * read, -EBADMSG when it is not a mirrorfs status. */
static int read_status(const char *mnt, GHashTable **table, char **text)
{
    g_autofree char *path = g_build_filename(mnt, ".mirror", "status", NULL);
    g_autofree char *t = NULL;
    int rc = read_all(path, &t);

    if (rc < 0)
        return rc;
    *table = status_parse_text(t);
    if (!*table)
        return -EBADMSG;
    if (text)
        *text = g_steal_pointer(&t);
    return 0;
}

static void report_status_error(const char *mnt, int err)
{
    /* ENOTCONN (a daemon that died) and EACCES say more than "not a mount". */
    if (err == -ENOENT || err == -ENOTDIR || err == -EBADMSG)
        fprintf(stderr, "mirrorctl: %s: not a mirrorfs mount\n", mnt);
    else
        fprintf(stderr, "mirrorctl: %s: cannot read .mirror/status: %s\n", mnt,
                g_strerror(-err));
}

static const char *get_str(GHashTable *t, const char *key)
{
    const char *v = g_hash_table_lookup(t, key);

    return v ? v : "";
}

static uint64_t get_u64(GHashTable *t, const char *key)
{
    guint64 v = 0;

    if (!g_ascii_string_to_unsigned(get_str(t, key), 10, 0, G_MAXUINT64, &v, NULL))
        return 0;
    return v;
}

/* def when the key is missing or not a number. */
static int64_t get_i64(GHashTable *t, const char *key, int64_t def)
{
    gint64 v;

    if (!g_ascii_string_to_signed(get_str(t, key), 10, G_MININT64, G_MAXINT64, &v, NULL))
        return def;
    return v;
}

/* last_error comes back unescaped; a message on stderr stays one line. */
static char *one_line_error(GHashTable *t)
{
    const char *e = get_str(t, "last_error");

    return *e ? g_strdelimit(g_strconcat(": ", e, NULL), "\n", ' ') : g_strdup("");
}

static bool phase_is(GHashTable *t, const char *phase)
{
    return strcmp(get_str(t, "phase"), phase) == 0;
}

static bool phase_is_final(GHashTable *t)
{
    return phase_is(t, "completed") || phase_is(t, "failed") || phase_is(t, "cancelled");
}

/* The daemon's pid from a status table; 0 when absent or nonsense. */
static pid_t status_pid(GHashTable *t)
{
    int64_t pid = get_i64(t, "pid", 0);

    return pid > 0 && pid <= INT_MAX ? (pid_t)pid : 0;
}

/* ---- the daemon's process and its result ------------------------------ */

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : fd;
#else
    return -ENOSYS;
#endif
}

/* How long `wait` sleeps before it reads the status again: POLL_INTERVAL_NS,
 * shorter when the copy will end sooner (half the time left at the current
 * rate, at least POLL_MIN_NS), or POLL_MIN_NS while no rate is known yet
 * (its first second).  A copy that ends is seen within a few milliseconds,
 * and a long one is not read more often than before. */
static uint64_t poll_step(GHashTable *t)
{
    if (!phase_is(t, "bulk") && !phase_is(t, "draining"))
        return POLL_INTERVAL_NS;
    uint64_t rate = get_u64(t, "rate_bytes_per_s");
    uint64_t left = get_u64(t, "dirty_bytes") + get_u64(t, "in_flight_bytes");
    if (rate == 0)
        return POLL_MIN_NS;
    double half = (double)left / (double)rate * 0.5e9;
    return half >= (double)POLL_INTERVAL_NS ? POLL_INTERVAL_NS
                                            : MAX((uint64_t)half, POLL_MIN_NS);
}

static void sleep_until_next_poll(uint64_t deadline, uint64_t step)
{
    uint64_t now = now_ns();

    if (deadline != NO_DEADLINE && deadline > now && deadline - now < step)
        step = deadline - now;
    g_usleep((gulong)(step / 1000));
}

/* Wait until the daemon has exited.  With a pidfd this cannot confuse the
 * daemon with a later process that reuses its pid; without one (a kernel
 * before 5.3) it polls kill(pid, 0), which can.  0, -ETIMEDOUT or -errno. */
static int wait_for_exit(int pidfd, pid_t pid, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ns();
        int timeout_ms = -1;

        if (deadline != NO_DEADLINE) {
            if (now >= deadline)
                return -ETIMEDOUT;
            timeout_ms = (int)MIN((deadline - now + 999999) / 1000000, (uint64_t)INT_MAX);
        }
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            int n = poll(&p, 1, timeout_ms);

            if (n > 0)
                return 0;
            if (n < 0 && errno != EINTR)
                return -errno;
        } else {
            if (kill(pid, 0) < 0 && errno == ESRCH)
                return 0;
            sleep_until_next_poll(deadline, POLL_INTERVAL_NS);
        }
    }
}

/* The exit code for a failed wait_for_exit(). */
static int report_wait_error(const char *mnt, pid_t pid, int err)
{
    if (err == -ETIMEDOUT) {
        fprintf(stderr, "mirrorctl: %s: timed out waiting for daemon pid %d to finish\n",
                mnt, (int)pid);
        return EXIT_TIMEOUT;
    }
    fprintf(stderr, "mirrorctl: %s: cannot wait for daemon pid %d: %s\n", mnt, (int)pid,
            g_strerror(-err));
    return EXIT_USAGE;
}

/* Read STATE_DIR/result and check that it is the final word of daemon pid.
 * 0 with the text and table; -ENOENT (or another -errno) when unreadable,
 * -EBADMSG when not a finished status, -ESRCH when written by another pid. */
static int read_result(const char *state_dir, pid_t pid, GHashTable **table, char **text)
{
    g_autofree char *path = g_build_filename(state_dir, "result", NULL);
    g_autofree char *t = NULL;
    g_autoptr(GHashTable) tab = NULL;
    int rc = read_all(path, &t);

    if (rc < 0)
        return rc;
    tab = status_parse_text(t);
    if (!tab || get_i64(tab, "exit_code", -1) < 0)
        return -EBADMSG;
    if (status_pid(tab) != pid)
        return -ESRCH;
    *table = g_steal_pointer(&tab);
    if (text)
        *text = g_steal_pointer(&t);
    return 0;
}

static void report_result_error(const char *mnt, const char *state_dir, pid_t pid,
                                int err)
{
    g_autofree char *path = g_build_filename(state_dir, "result", NULL);

    if (err == -ESRCH)
        fprintf(stderr, "mirrorctl: %s: %s is not from daemon pid %d (stale result)\n",
                mnt, path, (int)pid);
    else if (err == -EBADMSG)
        fprintf(stderr, "mirrorctl: %s: %s is not a final mirrorfs result\n", mnt, path);
    else
        fprintf(stderr, "mirrorctl: %s: no result from daemon pid %d: %s: %s\n", mnt,
                (int)pid, path, g_strerror(-err));
}

/* ---- argument parsing ------------------------------------------------- */

enum wait_for { WAIT_NONE, WAIT_READY, WAIT_DONE };

struct cmd_args {
    bool watch;
    double interval; /* seconds */
    double timeout;  /* seconds; < 0: none */
    enum wait_for wait_for;
    const char *pos[3];
    int npos;
    const char *mount_opts[32]; /* -o OPTIONS of mirror, in order */
    int nmount_opts;
};

#define OPT_WATCH (1u << 0)
#define OPT_INTERVAL (1u << 1)
#define OPT_TIMEOUT (1u << 2)
#define OPT_WAIT_FOR (1u << 3)
#define OPT_MOUNT_OPTS (1u << 4)

/* Seconds as a decimal number ("1", "0.5").  Zero is allowed only for a
 * timeout (check once); an interval must be positive. */
static bool parse_seconds(const char *s, bool allow_zero, double *out)
{
    char *end = NULL;
    double v;

    if (!s || !*s)
        return false;
    v = g_ascii_strtod(s, &end);
    if (*end || !isfinite(v) || v < 0 || (v == 0 && !allow_zero) || v > 1e9)
        return false;
    *out = v;
    return true;
}

/* Every option, and the OPT_ bit of the commands that take it. */
enum { OPTV_INTERVAL = 256, OPTV_TIMEOUT, OPTV_READY, OPTV_DONE };

static const struct {
    unsigned allowed;
    struct option opt;
} cmd_options[] = {
    {OPT_WATCH, {"watch", no_argument, NULL, 'w'}},
    {OPT_INTERVAL, {"interval", required_argument, NULL, OPTV_INTERVAL}},
    {OPT_TIMEOUT, {"timeout", required_argument, NULL, OPTV_TIMEOUT}},
    {OPT_WAIT_FOR, {"ready", no_argument, NULL, OPTV_READY}},
    {OPT_WAIT_FOR, {"done", no_argument, NULL, OPTV_DONE}},
    {OPT_MOUNT_OPTS, {"options", required_argument, NULL, 'o'}},
};

/* getopt_long also takes a long option's unique abbreviation ("--int") and
 * short options bundled ("-ww"); here an option is one argument spelt out
 * in full: "-w", "--opt", or "--opt=V" for an option with a value. */
static bool spelt_out(const char *arg, const struct option *o)
{
    size_t len;

    if (!o || o->val == 'o')
        return strcmp(arg, "-w") == 0 || strcmp(arg, "-o") == 0 ||
               (o && g_str_has_prefix(arg, "--options"));
    len = strlen(o->name);
    return g_str_has_prefix(arg, "--") && strncmp(arg + 2, o->name, len) == 0 &&
           (arg[2 + len] == '\0' || (o->has_arg != no_argument && arg[2 + len] == '='));
}

static bool add_operand(const char *cmd, const char *arg, int npos_wanted,
                        struct cmd_args *a)
{
    if (a->npos >= npos_wanted) {
        usage_error("%s: unexpected argument '%s'", cmd, arg);
        return false;
    }
    a->pos[a->npos++] = arg;
    return true;
}

/* Parse a command's arguments, argv[0] being the command word.  Options may
 * come before or after the operands, "--" ends them; a value follows its
 * option as "--opt=V" or "--opt V".  The arguments are taken in order (the
 * "-" that starts the short options: operands are returned as they come,
 * argv is not permuted), so the first mistake is the one reported.  false
 * after a message on stderr.  Once per run: getopt's state is not reset. */
static bool parse_cmd_args(const char *cmd, int argc, char **argv, unsigned allowed,
                           int npos_wanted, struct cmd_args *a)
{
    struct option longopts[G_N_ELEMENTS(cmd_options) + 1];
    size_t n = 0;

    memset(a, 0, sizeof(*a));
    a->interval = 1.0;
    a->timeout = -1.0;
    for (size_t i = 0; i < G_N_ELEMENTS(cmd_options); i++)
        if (allowed & cmd_options[i].allowed)
            longopts[n++] = cmd_options[i].opt;
    longopts[n] = (struct option){0};

    opterr = 0; /* our messages, not getopt's */
    for (;;) {
        /* The argument getopt_long is about to look at: optind moves past
         * an argument only once it is done with it (a bundle of short
         * options takes a call per letter). */
        const char *arg = argv[optind < argc ? optind : argc - 1];
        int idx = -1;
        const char *shortopts = (allowed & OPT_WATCH)        ? "-:w"
                                : (allowed & OPT_MOUNT_OPTS) ? "-:o:"
                                                             : "-:";
        int c = getopt_long(argc, argv, shortopts, longopts, &idx);

        if (c == -1)
            break;
        if (c == 1) {
            /* An operand ("-" is one too). */
            if (!add_operand(cmd, optarg, npos_wanted, a))
                return false;
            continue;
        }
        if (c == ':') {
            /* An option that lacks its value: getopt_long says which in
             * optopt, and only there. */
            c = optopt;
            for (size_t i = 0; i < n; i++)
                if (longopts[i].val == c)
                    idx = (int)i;
        }
        if (c == '?' || !spelt_out(arg, idx >= 0 ? &longopts[idx] : NULL)) {
            usage_error("%s: unknown option '%s'", cmd, arg);
            return false;
        }
        switch (c) {
        case 'w':
            a->watch = true;
            break;
        case OPTV_READY:
            a->wait_for = WAIT_READY;
            break;
        case 'o':
            if (!optarg || a->nmount_opts >= (int)G_N_ELEMENTS(a->mount_opts)) {
                usage_error("%s: -o needs OPTIONS (at most %zu times)", cmd,
                            G_N_ELEMENTS(a->mount_opts));
                return false;
            }
            a->mount_opts[a->nmount_opts++] = optarg;
            break;
        case OPTV_DONE:
            a->wait_for = WAIT_DONE;
            break;
        case OPTV_INTERVAL:
            /* No optarg: the option was the last argument. */
            if (!optarg || !parse_seconds(optarg, false, &a->interval)) {
                usage_error("%s: --interval needs a number of seconds > 0", cmd);
                return false;
            }
            break;
        case OPTV_TIMEOUT:
            if (!optarg || !parse_seconds(optarg, true, &a->timeout)) {
                usage_error("%s: --timeout needs a number of seconds >= 0", cmd);
                return false;
            }
            break;
        }
    }
    /* After "--": operands only. */
    for (int i = optind; i < argc; i++)
        if (!add_operand(cmd, argv[i], npos_wanted, a))
            return false;
    if (a->npos != npos_wanted) {
        usage_error("%s: %s", cmd,
                    a->npos == 0 ? "missing MOUNTPOINT" : "missing argument");
        return false;
    }
    if ((allowed & OPT_WAIT_FOR) && a->wait_for == WAIT_NONE) {
        usage_error("%s: say --ready or --done", cmd);
        return false;
    }
    return true;
}

static uint64_t deadline_after(double seconds)
{
    if (seconds < 0)
        return NO_DEADLINE;
    return now_ns() + (uint64_t)(seconds * 1e9);
}

/* ---- status ----------------------------------------------------------- */

static unsigned percent_of(uint64_t copied, uint64_t total)
{
    struct status_snapshot s = {.copied_bytes = copied, .total_bytes = total};

    return status_progress_percent(&s);
}

static void append_eta(GString *out, int64_t eta)
{
    if (eta < 0)
        g_string_append(out, "eta --");
    else if (eta < 60)
        g_string_append_printf(out, "eta %" PRId64 "s", eta);
    else if (eta < 3600)
        g_string_append_printf(out, "eta %" PRId64 "m%02" PRId64 "s", eta / 60, eta % 60);
    else
        g_string_append_printf(out, "eta %" PRId64 "h%02" PRId64 "m", eta / 3600,
                               eta / 60 % 60);
}

/* Screen rows a line takes on a terminal cols wide. */
static int rows_of(const char *line, int cols)
{
    long w =
        g_utf8_validate(line, -1, NULL) ? g_utf8_strlen(line, -1) : (long)strlen(line);

    return cols > 0 && w > cols ? (int)((w + cols - 1) / cols) : 1;
}

/* The human form: a progress line, then one line per image.  max_images
 * caps the image lines so a refresh fits on the screen (<0: no cap).
 * Returns the screen rows used. */
static int render_human(GHashTable *t, char *text, int cols, int max_images, GString *out)
{
    const int bar_width = 30;
    uint64_t total = get_u64(t, "total_bytes");
    uint64_t copied = get_u64(t, "copied_bytes");
    int64_t pct = get_i64(t, "progress_percent", percent_of(copied, total));
    int filled;
    char a[16], b[16], r[16];
    g_auto(GStrv) lines = NULL;
    g_autoptr(GString) line = g_string_new(NULL);
    int rows = 0, shown = 0, hidden = 0;

    pct = CLAMP(pct, 0, 100);
    filled = (int)(pct * bar_width / 100);
    g_string_append_printf(line, "%-9s [", get_str(t, "phase"));
    for (int i = 0; i < bar_width; i++)
        g_string_append_c(line, i < filled ? '#' : '.');
    g_string_append_printf(line, "] %3d%%  %s / %s  rate %s/s  ", (int)pct,
                           format_size_human(copied, a), format_size_human(total, b),
                           format_size_human(get_u64(t, "rate_bytes_per_s"), r));
    append_eta(line, get_i64(t, "eta_s", -1));
    rows += rows_of(line->str, cols);
    g_string_append_printf(out, "%s\n", line->str);

    if (get_u64(t, "errors") > 0) {
        g_autofree char *err = one_line_error(t);

        g_string_printf(line, "errors %s%s", get_str(t, "errors"), err);
        rows += rows_of(line->str, cols);
        g_string_append_printf(out, "%s\n", line->str);
    }

    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        struct status_image_line im;

        if (!status_parse_image_line(*l, &im))
            continue;
        if (max_images >= 0 && shown >= max_images) {
            hidden++;
            continue;
        }
        shown++;
        /* The name stays escaped: one image, one screen line. */
        g_string_printf(line, "  %-24s %-9s %3u%%  %s / %s", im.name, im.phase,
                        percent_of(im.copied, im.size), format_size_human(im.copied, a),
                        format_size_human(im.size, b));
        if (im.dirty)
            g_string_append_printf(line, "  dirty %s", format_size_human(im.dirty, r));
        rows += rows_of(line->str, cols);
        g_string_append_printf(out, "%s\n", line->str);
    }
    if (hidden) {
        g_string_append_printf(out, "  ... and %d more\n", hidden);
        rows++;
    }
    return rows;
}

static int cmd_status(int argc, char **argv)
{
    struct cmd_args a;
    bool tty = isatty(STDOUT_FILENO);
    int prev_rows = 0;
    bool first = true;

    if (!parse_cmd_args("status", argc, argv, OPT_WATCH | OPT_INTERVAL, 1, &a))
        return EXIT_USAGE;
    for (;;) {
        g_autoptr(GHashTable) t = NULL;
        g_autofree char *text = NULL;
        int rc = read_status(a.pos[0], &t, &text);

        if (rc < 0) {
            if (first) {
                report_status_error(a.pos[0], rc);
                return EXIT_USAGE;
            }
            /* Watching a job to its end: the unmount is the normal end. */
            if (tty)
                fprintf(stderr, "mirrorctl: %s: the mount went away\n", a.pos[0]);
            return EXIT_OK;
        }
        if (tty) {
            g_autoptr(GString) out = g_string_new(NULL);
            struct winsize ws = {0};
            int cols = 0, max_images = -1;

            if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
                cols = ws.ws_col;
                /* Redrawing moves the cursor up; what scrolled off cannot be
                 * redrawn, so the picture must fit. */
                if (a.watch && ws.ws_row > 4)
                    max_images = ws.ws_row - 4;
            }
            if (prev_rows > 0)
                g_string_printf(out, "\033[%dA\033[J", prev_rows);
            prev_rows = render_human(t, text, cols, max_images, out);
            fputs(out->str, stdout);
        } else {
            /* A blank line between snapshots keeps a log readable by
             * scripts: each record is a block of key: value lines. */
            if (!first)
                fputc('\n', stdout);
            fputs(text, stdout);
        }
        fflush(stdout);
        first = false;
        if (!a.watch || phase_is_final(t))
            return EXIT_OK;
        g_usleep((gulong)(a.interval * 1e6));
    }
}

/* ---- wait ------------------------------------------------------------- */

/* The job's end seen through STATE_DIR/result once the mount is gone. */
static int wait_after_unmount(const char *mnt, pid_t pid, const char *state_dir,
                              int pidfd, uint64_t deadline)
{
    g_autoptr(GHashTable) res = NULL;
    g_autofree char *err = NULL;
    int rc;

    if (!*state_dir) {
        fprintf(stderr,
                "mirrorctl: %s: the mount went away and the daemon has no state_dir\n",
                mnt);
        return EXIT_USAGE;
    }
    /* Unmounting starts the drain; the result is final only once the
     * daemon has exited. */
    rc = wait_for_exit(pidfd, pid, deadline);
    if (rc < 0)
        return report_wait_error(mnt, pid, rc);
    rc = read_result(state_dir, pid, &res, NULL);
    if (rc < 0) {
        report_result_error(mnt, state_dir, pid, rc);
        return EXIT_USAGE;
    }
    if (phase_is(res, "completed"))
        return EXIT_OK;
    err = one_line_error(res);
    fprintf(stderr, "mirrorctl: %s: job %s%s\n", mnt, get_str(res, "phase"), err);
    return EXIT_FAILED;
}

static int cmd_wait(int argc, char **argv)
{
    struct cmd_args a;
    g_autoptr(GHashTable) t = NULL;
    g_autofree char *state_dir = NULL;
    const char *mnt;
    uint64_t deadline;
    pid_t pid;
    int pidfd, rc;

    if (!parse_cmd_args("wait", argc, argv, OPT_WAIT_FOR | OPT_TIMEOUT, 1, &a))
        return EXIT_USAGE;
    mnt = a.pos[0];
    deadline = deadline_after(a.timeout);
    rc = read_status(mnt, &t, NULL);
    if (rc < 0) {
        report_status_error(mnt, rc);
        return EXIT_USAGE;
    }
    /* Taken now, while the mount proves the daemon alive, so that after an
     * unmount we wait for this daemon and read its result, not a stale one. */
    pid = status_pid(t);
    state_dir = g_strdup(get_str(t, "state_dir"));
    pidfd = pid > 0 ? open_pidfd(pid) : -ESRCH;

    for (;;) {
        if (phase_is(t, "completed") ||
            (a.wait_for == WAIT_READY && phase_is(t, "ready"))) {
            rc = EXIT_OK;
            break;
        }
        if (phase_is(t, "failed") || phase_is(t, "cancelled")) {
            g_autofree char *err = one_line_error(t);

            fprintf(stderr, "mirrorctl: %s: job %s%s\n", mnt, get_str(t, "phase"), err);
            rc = EXIT_FAILED;
            break;
        }
        if (phase_is(t, "idle") || phase_is(t, "pivoted")) {
            /* No job: nothing would ever change the phase. */
            fprintf(stderr, "mirrorctl: %s: no mirror job runs (phase %s, serving %s)\n", mnt,
                    get_str(t, "phase"), get_str(t, "serving"));
            rc = EXIT_USAGE;
            break;
        }
        if (now_ns() >= deadline) {
            fprintf(stderr, "mirrorctl: %s: timed out waiting for %s (phase: %s)\n", mnt,
                    a.wait_for == WAIT_READY ? "ready" : "completed",
                    get_str(t, "phase"));
            rc = EXIT_TIMEOUT;
            break;
        }
        sleep_until_next_poll(deadline, poll_step(t));
        g_clear_pointer(&t, g_hash_table_unref);
        if (read_status(mnt, &t, NULL) < 0) {
            if (pid <= 0) {
                fprintf(stderr, "mirrorctl: %s: the mount went away\n", mnt);
                rc = EXIT_USAGE;
            } else {
                rc = wait_after_unmount(mnt, pid, state_dir, pidfd, deadline);
            }
            break;
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    return rc;
}

/* ---- commands through .mirror/ctl ------------------------------------- */

/* Send one command line.  explain: when the daemon refuses it, print its
 * own reason (the status's last_error) instead of the errno. */
static int send_command(const char *mnt, const char *line, bool explain)
{
    g_autoptr(GHashTable) t = NULL;
    g_autofree char *path = g_build_filename(mnt, ".mirror", "ctl", NULL);
    size_t len = strlen(line);
    ssize_t n;
    int rc, fd, err = 0;

    rc = read_status(mnt, &t, NULL);
    if (rc < 0) {
        report_status_error(mnt, rc);
        return EXIT_USAGE;
    }
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "mirrorctl: %s: cannot open .mirror/ctl: %s\n", mnt,
                g_strerror(errno));
        return EXIT_USAGE;
    }
    /* One write per command: the daemon reads a write as one command. */
    do {
        n = write(fd, line, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        err = errno;
    else if ((size_t)n != len)
        err = EIO;
    /* A FUSE flush error would surface here. */
    if (close(fd) < 0 && !err && errno != EINTR)
        err = errno;
    if (err) {
        const char *why = NULL;
        g_clear_pointer(&t, g_hash_table_unref);
        if (explain && err == EINVAL && read_status(mnt, &t, NULL) == 0)
            why = get_str(t, "last_error");
        if (why && why[0])
            fprintf(stderr, "mirrorctl: %s: %s\n", mnt, why);
        else
            fprintf(stderr, "mirrorctl: %s: command rejected: %s\n", mnt, g_strerror(err));
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

static int cmd_simple(const char *cmd, int argc, char **argv)
{
    struct cmd_args a;
    g_autofree char *line = NULL;

    if (!parse_cmd_args(cmd, argc, argv, 0, 1, &a))
        return EXIT_USAGE;
    line = g_strconcat(cmd, "\n", NULL);
    return send_command(a.pos[0], line, false);
}

static int cmd_speed(int argc, char **argv)
{
    struct cmd_args a;
    g_autofree char *line = NULL;
    uint64_t rate;

    if (!parse_cmd_args("speed", argc, argv, 0, 2, &a))
        return EXIT_USAGE;
    /* Checked here for a clear message; also keeps a newline in the
     * argument from becoming a second command. */
    if (parse_size(a.pos[1], &rate) < 0) {
        fprintf(stderr, "mirrorctl: speed: invalid rate '%s' (bytes/s, K/M/G/T suffix)\n",
                a.pos[1]);
        return EXIT_USAGE;
    }
    line = g_strdup_printf("speed %s\n", a.pos[1]);
    return send_command(a.pos[0], line, false);
}

static int cmd_copy_mode(int argc, char **argv)
{
    struct cmd_args a;
    g_autofree char *line = NULL;
    const char *mode;

    if (!parse_cmd_args("copy-mode", argc, argv, 0, 2, &a))
        return EXIT_USAGE;
    mode = a.pos[1];
    /* The daemon judges the mode; one word keeps it one command. */
    if (!*mode || strpbrk(mode, " \t\r\n")) {
        fprintf(stderr, "mirrorctl: copy-mode: invalid mode '%s'\n", mode);
        return EXIT_USAGE;
    }
    line = g_strdup_printf("copy-mode %s\n", mode);
    return send_command(a.pos[0], line, false);
}

/* ---- finish ----------------------------------------------------------- */

/* Run fusermount3 -u, its output captured so that a failure makes one
 * line of ours.  0, the exit status (> 0), or -errno when it did not run. */
static int run_fusermount(const char *mnt, GString *msg)
{
    int pfd[2];
    pid_t child;
    int status;

    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL);
    child = fork();
    if (child < 0) {
        int err = errno;

        close(pfd[0]);
        close(pfd[1]);
        return -err;
    }
    if (child == 0) {
        static const char fail[] = "cannot run fusermount3\n";
        char *const args[] = {"fusermount3", "-u", (char *)mnt, NULL};

        dup2(pfd[1], STDOUT_FILENO);
        dup2(pfd[1], STDERR_FILENO);
        execv(FUSERMOUNT_PATH, args);
        execvp("fusermount3", args);
        if (write(STDERR_FILENO, fail, sizeof(fail) - 1) < 0)
            _exit(127);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        char buf[512];
        ssize_t n = read(pfd[0], buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        g_string_append_len(msg, buf, n);
    }
    close(pfd[0]);
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* 0 or 1 after one line on stderr. */
static int unmount(const char *mnt)
{
    g_autoptr(GString) msg = g_string_new(NULL);
    int rc = run_fusermount(mnt, msg);
    const char *why;

    if (rc == 0)
        return 0;
    if (geteuid() == 0) {
        if (umount2(mnt, 0) == 0)
            return 0;
        /* umount2's errno is the precise reason (busy, not a mount point). */
        why = errno == EINVAL ? "not a mount point" : g_strerror(errno);
        fprintf(stderr, "mirrorctl: %s: cannot unmount: %s\n", mnt, why);
        return 1;
    }
    g_strstrip(msg->str);
    /* fusermount3's last line carries the reason. */
    why = strrchr(msg->str, '\n') ? strrchr(msg->str, '\n') + 1 : msg->str;
    if (rc < 0)
        fprintf(stderr, "mirrorctl: %s: cannot run fusermount3: %s\n", mnt,
                g_strerror(-rc));
    else if (*why)
        fprintf(stderr, "mirrorctl: %s: cannot unmount: %s\n", mnt, why);
    else
        fprintf(stderr,
                "mirrorctl: %s: cannot unmount: fusermount3 exited with status %d\n", mnt,
                rc);
    return 1;
}

static int cmd_finish(int argc, char **argv)
{
    struct cmd_args a;
    g_autoptr(GHashTable) t = NULL;
    g_autoptr(GHashTable) res = NULL;
    g_autofree char *state_dir = NULL;
    g_autofree char *text = NULL;
    const char *mnt;
    uint64_t deadline;
    pid_t pid;
    int pidfd, rc;
    int64_t code;

    if (!parse_cmd_args("finish", argc, argv, OPT_TIMEOUT, 1, &a))
        return EXIT_USAGE;
    mnt = a.pos[0];
    rc = read_status(mnt, &t, NULL);
    if (rc < 0) {
        report_status_error(mnt, rc);
        return EXIT_USAGE;
    }
    pid = status_pid(t);
    state_dir = g_strdup(get_str(t, "state_dir"));
    if (pid <= 0 || !*state_dir) {
        fprintf(stderr, "mirrorctl: %s: the status has no %s; not unmounting\n", mnt,
                pid <= 0 ? "pid" : "state_dir");
        return EXIT_USAGE;
    }
    /* The pidfd must be taken before the unmount: afterwards the daemon may
     * exit and its pid be reused, and we would wait for a stranger. */
    pidfd = open_pidfd(pid);
    if (pidfd == -ENOSYS && kill(pid, 0) < 0 && errno == ESRCH)
        pidfd = -ESRCH;
    if (pidfd < 0 && pidfd != -ENOSYS) {
        fprintf(stderr, "mirrorctl: %s: daemon pid %d: %s\n", mnt, (int)pid,
                pidfd == -ESRCH ? "not running" : g_strerror(-pidfd));
        return EXIT_USAGE;
    }
    if (unmount(mnt) != 0) {
        if (pidfd >= 0)
            close(pidfd);
        return EXIT_USAGE;
    }
    /* The timeout counts from the unmount: the drain is what we wait for. */
    deadline = deadline_after(a.timeout);
    rc = wait_for_exit(pidfd, pid, deadline);
    if (pidfd >= 0)
        close(pidfd);
    if (rc < 0)
        return report_wait_error(mnt, pid, rc);
    rc = read_result(state_dir, pid, &res, &text);
    if (rc < 0) {
        report_result_error(mnt, state_dir, pid, rc);
        return EXIT_USAGE;
    }
    fputs(text, stdout);
    fflush(stdout);
    code = get_i64(res, "exit_code", EXIT_USAGE);
    return code >= 0 && code <= 255 ? (int)code : EXIT_USAGE;
}

/* ---- a job on a live mount, and the pivot ------------------------------ */

static int cmd_pivot(int argc, char **argv)
{
    struct cmd_args a;
    g_autoptr(GHashTable) t = NULL;

    if (!parse_cmd_args("pivot", argc, argv, 0, 1, &a))
        return EXIT_USAGE;
    int rc = send_command(a.pos[0], "pivot\n", true);
    if (rc != EXIT_OK)
        return rc;
    if (read_status(a.pos[0], &t, NULL) == 0)
        printf("pivoted: %s now serves %s (guests held %s ms)\n", a.pos[0],
               get_str(t, "serving"), get_str(t, "pivot_pause_ms"));
    return EXIT_OK;
}

/* mirror MOUNTPOINT TARGET [-o OPTIONS]...: the options of a mount's -o,
 * sent as one line: target=TARGET,OPTIONS. */
static int cmd_mirror(int argc, char **argv)
{
    g_autoptr(GString) line = g_string_new("mirror ");
    struct cmd_args a;

    if (!parse_cmd_args("mirror", argc, argv, OPT_MOUNT_OPTS, 2, &a))
        return EXIT_USAGE;
    if (strpbrk(a.pos[1], ",\n") != NULL) {
        usage_error("mirror: a target with a comma or a newline cannot be given as an option");
        return EXIT_USAGE;
    }
    /* A relative target means the caller's directory, not the daemon's. */
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *tgt = strstr(a.pos[1], "://") || g_path_is_absolute(a.pos[1])
                               ? g_strdup(a.pos[1])
                               : g_build_filename(cwd, a.pos[1], NULL);
    g_string_append_printf(line, "target=%s", tgt);
    for (int k = 0; k < a.nmount_opts; k++) {
        const char *o = a.mount_opts[k];
        if (strchr(o, '\n')) {
            usage_error("mirror: an option with a newline");
            return EXIT_USAGE;
        }
        g_string_append_printf(line, ",%s", o);
    }
    g_string_append_c(line, '\n');
    int rc = send_command(a.pos[0], line->str, true);
    if (rc == EXIT_OK)
        printf("mirror started: %s -> %s\n", a.pos[0], tgt);
    return rc;
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *cmd;

    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
    }
    cmd = argv[1];
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("mirrorctl (mirrorfs) %s\n", PACKAGE_VERSION);
        return EXIT_OK;
    }
    /* The command word is the commands' argv[0]. */
    argc -= 1;
    argv += 1;
    if (!strcmp(cmd, "status"))
        return cmd_status(argc, argv);
    if (!strcmp(cmd, "wait"))
        return cmd_wait(argc, argv);
    if (!strcmp(cmd, "finish"))
        return cmd_finish(argc, argv);
    if (!strcmp(cmd, "speed"))
        return cmd_speed(argc, argv);
    if (!strcmp(cmd, "copy-mode"))
        return cmd_copy_mode(argc, argv);
    if (!strcmp(cmd, "pivot"))
        return cmd_pivot(argc, argv);
    if (!strcmp(cmd, "mirror"))
        return cmd_mirror(argc, argv);
    if (!strcmp(cmd, "pause") || !strcmp(cmd, "resume") || !strcmp(cmd, "cancel") ||
        !strcmp(cmd, "verify"))
        return cmd_simple(cmd, argc, argv);
    fprintf(stderr, "mirrorctl: unknown command '%s'\n", cmd);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}
