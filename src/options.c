/* options.c - parse and validate mirrorfs options (see options.h). */
#include "config.h"

#include "options.h"
#include "util.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <fuse_opt.h>
#include <glib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Raw strings as fuse_opt hands them over; validated afterwards so that
 * every error names the option the user wrote. */
struct raw_options {
    char *target;
    char *state_dir;
    char *granularity;
    char *buf_size;
    char *speed;
    char *workers;
    char *threads;
    char *auto_after;
    char *copy_mode;
    char *sync;
    char *on_target_error;
    char *on_source_error;
    char *on_unmount;
    char *persist;
    char *drain_speed;
    char *open_writers;
    int overwrite;
    int allow_other;
    int default_permissions;
    int show_help;
    int show_version;
    char *source;
    int nonopts;
    char *extra_nonopt;
};

enum { KEY_ALLOW_OTHER = 100, KEY_DEFAULT_PERMISSIONS };

#define RAW(name, field)                                                                \
    {"--" name "=%s", offsetof(struct raw_options, field), 0},                         \
        {name "=%s", offsetof(struct raw_options, field), 0}

static const struct fuse_opt option_table[] = {
    RAW("target", target),
    RAW("state_dir", state_dir),
    RAW("granularity", granularity),
    RAW("buf_size", buf_size),
    RAW("speed", speed),
    RAW("workers", workers),
    RAW("threads", threads),
    RAW("auto_after", auto_after),
    RAW("copy_mode", copy_mode),
    RAW("sync", sync),
    RAW("on_target_error", on_target_error),
    RAW("on_source_error", on_source_error),
    RAW("on_unmount", on_unmount),
    RAW("persist", persist),
    RAW("drain_speed", drain_speed),
    RAW("open_writers", open_writers),
    FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
    FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
    {"overwrite", offsetof(struct raw_options, overwrite), 1},
    {"--overwrite", offsetof(struct raw_options, overwrite), 1},
    FUSE_OPT_END};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct raw_options *raw = data;

    /* FUSE's own options that change what mirrorfs does: noted, and left
     * for the session. */
    if (key == KEY_ALLOW_OTHER)
        raw->allow_other = 1;
    if (key == KEY_DEFAULT_PERMISSIONS)
        raw->default_permissions = 1;
    if (key != FUSE_OPT_KEY_NONOPT)
        return 1;
    /* First positional argument: SOURCE, ours.  Second: MOUNTPOINT, left
     * for fuse_parse_cmdline().  A third is an error reported later. */
    raw->nonopts++;
    if (raw->nonopts == 1) {
        raw->source = g_strdup(arg);
        return 0;
    }
    if (raw->nonopts > 2) {
        if (!raw->extra_nonopt)
            raw->extra_nonopt = g_strdup(arg);
        return 0;
    }
    return 1;
}

static void raw_clear(struct raw_options *raw)
{
    free(raw->target);
    free(raw->state_dir);
    free(raw->granularity);
    free(raw->buf_size);
    free(raw->speed);
    free(raw->workers);
    free(raw->threads);
    free(raw->auto_after);
    free(raw->copy_mode);
    free(raw->sync);
    free(raw->on_target_error);
    free(raw->on_source_error);
    free(raw->on_unmount);
    free(raw->persist);
    free(raw->drain_speed);
    free(raw->open_writers);
    g_free(raw->source);
    g_free(raw->extra_nonopt);
}

static int pick(const char *value, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

/* NULL-terminated, for g_strjoinv() in the error messages. */
static const char *const copy_mode_names[] = {"background", "write-blocking", "auto", NULL};
static const char *const error_action_names[] = {"report", "ignore", "stop", NULL};
static const char *const sync_names[] = {"full", "none", NULL};
static const char *const unmount_names[] = {"complete", "cancel", NULL};
static const char *const on_off_names[] = {"off", "on", NULL};
static const char *const open_writers_names[] = {"refuse", "verify", NULL};

const char *copy_mode_name(enum copy_mode m)
{
    return copy_mode_names[m];
}

const char *error_action_name(enum error_action a)
{
    return error_action_names[a];
}

#define ENUM_OPT(raw_field, names, dest, what)                                          \
    do {                                                                                \
        if (raw_field) {                                                                \
            int v_ = pick(raw_field, names, G_N_ELEMENTS(names) - 1);                       \
            if (v_ < 0) {                                                               \
                g_autofree char *choices_ = g_strjoinv("|", (char **)names);            \
                *err = g_strdup_printf("%s=%s: expected %s", what, raw_field, choices_); \
                return -EINVAL;                                                         \
            }                                                                           \
            dest = v_;                                                                  \
        }                                                                               \
    } while (0)

/* The largest granularity an image can get. */
static uint64_t max_granularity(const struct mirror_options *opts)
{
    return opts->granularity ? opts->granularity : OPT_AUTO_MAX_GRANULARITY;
}

/* A decimal number from min to max, nothing else.  0 or -EINVAL. */
static int parse_count(const char *text, unsigned long min, unsigned long max, unsigned *out)
{
    char *end = NULL;

    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || n < min || n > max)
        return -EINVAL;
    *out = (unsigned)n;
    return 0;
}

static int validate(const struct raw_options *raw, struct mirror_options *opts, char **err)
{
    uint64_t v;

    if (raw->extra_nonopt) {
        *err = g_strdup_printf("%s: unexpected argument (usage: mirrorfs [options] SOURCE "
                               "MOUNTPOINT)",
                               raw->extra_nonopt);
        return -EINVAL;
    }
    if (raw->granularity && strcmp(raw->granularity, "auto") == 0) {
        opts->granularity = 0;
    } else if (raw->granularity) {
        if (parse_size(raw->granularity, &v) < 0 || v < OPT_MIN_GRANULARITY ||
            v > OPT_MAX_GRANULARITY || (v & (v - 1)) != 0) {
            *err = g_strdup_printf(
                "granularity=%s: expected auto or a power of two between 4K and 64M",
                raw->granularity);
            return -EINVAL;
        }
        opts->granularity = v;
    }
    if (raw->buf_size) {
        if (parse_size(raw->buf_size, &v) < 0 || v < OPT_MIN_GRANULARITY ||
            v > (1ull << 32)) {
            *err = g_strdup_printf("buf_size=%s: expected a size between 4K and 4G",
                                   raw->buf_size);
            return -EINVAL;
        }
        opts->buf_size = v;
    }
    if (raw->speed) {
        if (parse_size(raw->speed, &v) < 0) {
            *err = g_strdup_printf(
                "speed=%s: expected bytes per second, with K, M or G suffix (0 = unlimited)",
                raw->speed);
            return -EINVAL;
        }
        opts->speed = v;
    }
    if (raw->drain_speed) {
        if (parse_size(raw->drain_speed, &v) < 0) {
            *err = g_strdup_printf("drain_speed=%s: expected bytes per second, with K, M or G "
                                   "suffix (0 = unlimited)",
                                   raw->drain_speed);
            return -EINVAL;
        }
        opts->drain_speed = v;
    }
    if (raw->workers && parse_count(raw->workers, 1, OPT_MAX_WORKERS, &opts->workers) < 0) {
        *err = g_strdup_printf("workers=%s: expected a number from 1 to %u", raw->workers,
                               OPT_MAX_WORKERS);
        return -EINVAL;
    }
    if (raw->threads && strcmp(raw->threads, "auto") == 0) {
        opts->threads = 0;
    } else if (raw->threads &&
               parse_count(raw->threads, 1, OPT_MAX_THREADS, &opts->threads) < 0) {
        *err = g_strdup_printf("threads=%s: expected auto or a number from 1 to %u",
                               raw->threads, OPT_MAX_THREADS);
        return -EINVAL;
    }
    if (raw->auto_after &&
        parse_count(raw->auto_after, 1, 86400, &opts->auto_after_s) < 0) {
        *err = g_strdup_printf("auto_after=%s: expected seconds, from 1 to 86400",
                               raw->auto_after);
        return -EINVAL;
    }
    ENUM_OPT(raw->copy_mode, copy_mode_names, opts->copy_mode, "copy_mode");
    ENUM_OPT(raw->sync, sync_names, opts->sync, "sync");
    ENUM_OPT(raw->on_target_error, error_action_names, opts->on_target_error,
             "on_target_error");
    ENUM_OPT(raw->on_source_error, error_action_names, opts->on_source_error,
             "on_source_error");
    ENUM_OPT(raw->on_unmount, unmount_names, opts->on_unmount, "on_unmount");
    ENUM_OPT(raw->persist, on_off_names, opts->persist, "persist");
    ENUM_OPT(raw->open_writers, open_writers_names, opts->open_writers, "open_writers");
    opts->allow_other = raw->allow_other;
    opts->default_permissions = raw->default_permissions;

    /* Like QEMU's mirror: the default buffer grows to hold one granule. */
    uint64_t gmax = max_granularity(opts);
    if (!raw->buf_size && opts->buf_size < gmax)
        opts->buf_size = gmax;
    if (opts->buf_size < gmax) {
        *err = g_strdup_printf("buf_size=%s: smaller than the granularity%s",
                               raw->buf_size ? raw->buf_size : "16M",
                               opts->granularity ? "" : " (auto may choose 64K)");
        return -EINVAL;
    }
    if (raw->target && !raw->target[0]) {
        *err = g_strdup("target=: empty target");
        return -EINVAL;
    }
    if (raw->state_dir && !raw->state_dir[0]) {
        *err = g_strdup("state_dir=: empty directory name");
        return -EINVAL;
    }
    if (opts->show_help || opts->show_version)
        return 0;
    if (!raw->source) {
        *err = g_strdup("missing SOURCE (usage: mirrorfs [options] SOURCE MOUNTPOINT)");
        return -EINVAL;
    }
    if (raw->nonopts < 2) {
        *err = g_strdup("missing MOUNTPOINT (usage: mirrorfs [options] SOURCE MOUNTPOINT)");
        return -EINVAL;
    }
    return 0;
}

int copy_mode_parse(const char *name, enum copy_mode *out)
{
    int v = pick(name, copy_mode_names, G_N_ELEMENTS(copy_mode_names) - 1);

    if (v < 0)
        return -EINVAL;
    *out = v;
    return 0;
}

int options_parse(struct fuse_args *args, struct mirror_options *opts, char **err)
{
    struct raw_options raw = {0};
    int rc;

    memset(opts, 0, sizeof(*opts));
    opts->granularity = 0;
    opts->buf_size = OPT_DEFAULT_BUF_SIZE;
    opts->workers = OPT_DEFAULT_WORKERS;
    opts->auto_after_s = OPT_DEFAULT_AUTO_AFTER;
    opts->persist = true;
    *err = NULL;

    if (fuse_opt_parse(args, &raw, option_table, opt_proc) == -1) {
        *err = g_strdup("cannot parse the options");
        raw_clear(&raw);
        return -EINVAL;
    }
    /* -h/-V stay in args for fuse_parse_cmdline(); note them so that the
     * missing-argument checks do not drown the help text. */
    for (int i = 1; i < args->argc; i++) {
        const char *a = args->argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            opts->show_help = true;
        else if (!strcmp(a, "-V") || !strcmp(a, "--version"))
            opts->show_version = true;
    }
    opts->overwrite = raw.overwrite;
    rc = validate(&raw, opts, err);
    if (rc == 0) {
        opts->source = g_steal_pointer(&raw.source);
        opts->target = raw.target ? g_strdup(raw.target) : NULL;
        opts->state_dir = raw.state_dir ? g_strdup(raw.state_dir) : NULL;
    }
    raw_clear(&raw);
    return rc;
}

void options_clear(struct mirror_options *opts)
{
    g_free(opts->source);
    g_free(opts->target);
    g_free(opts->state_dir);
    memset(opts, 0, sizeof(*opts));
}

static uint64_t chunk_size(const struct mirror_options *opts, uint64_t max)
{
    uint64_t chunk = opts->buf_size / opts->workers;
    uint64_t g = max_granularity(opts);

    if (chunk > max)
        chunk = max;
    chunk -= chunk % g;
    if (chunk < g)
        chunk = g;
    return chunk;
}

uint64_t options_chunk_size(const struct mirror_options *opts)
{
    return chunk_size(opts, OPT_MAX_CHUNK);
}

uint64_t options_bulk_chunk_size(const struct mirror_options *opts)
{
    return chunk_size(opts, OPT_MAX_BULK_CHUNK);
}

uint64_t options_image_granularity(const struct mirror_options *opts, uint64_t size)
{
    uint64_t g = OPT_MIN_GRANULARITY;

    if (opts->granularity)
        return opts->granularity;
    if (size == 0)
        return OPT_AUTO_MAX_GRANULARITY;
    while (g < OPT_AUTO_MAX_GRANULARITY && (size + g - 1) / g > OPT_AUTO_MAX_GRANULES)
        g *= 2;
    return g;
}

void options_print_usage(const char *progname)
{
    printf("usage: %s [options] SOURCE MOUNTPOINT\n"
           "\n"
           "Mirror the disk images in SOURCE to a target directory while programs\n"
           "keep using them through MOUNTPOINT (which may be SOURCE itself).\n"
           "\n"
           "mirrorfs options (each also as --name=value):\n"
           "    -o target=DIR          where the mirror goes (without it the mount is a\n"
           "                           plain passthrough until `mirrorctl mirror`)\n"
           "    -o granularity=SIZE    dirty-map unit: auto, or a power of two 4K..64M;\n"
           "                           auto: 4K per image up to 64G, then up to 64K (auto)\n"
           "    -o buf_size=SIZE       copy data in flight (16M)\n"
           "    -o workers=N           copy threads, 1..%u (%u)\n"
           "    -o threads=N           threads serving FUSE requests, 1..%u, or auto:\n"
           "                           one per CPU, at least 2 (auto)\n"
           "    -o speed=RATE          copy rate limit in bytes/s, K/M/G suffix (0 = none);\n"
           "                           change it live with 'mirrorctl speed MNT RATE'\n"
           "    -o copy_mode=MODE      background | write-blocking | auto (background)\n"
           "    -o auto_after=SECONDS  auto: switch to write-blocking when the dirty\n"
           "                           bytes have not shrunk for this long (10)\n"
           "    -o sync=full|none      none: the target is already a copy (full)\n"
           "    -o on_target_error=report|ignore|stop   (report)\n"
           "    -o on_source_error=report|ignore|stop   (report)\n"
           "    -o on_unmount=complete|cancel            (complete)\n"
           "    -o state_dir=DIR       where the result is recorded\n"
           "                           (/var/lib/mirrorfs/<key of SOURCE and target>)\n"
           "    -o overwrite           allow a non-empty target directory: its images\n"
           "                           are compared and only what differs is copied\n"
           "    -o persist=on|off      crash-safe state in state_dir, so that a restart\n"
           "                           resumes instead of copying again (on)\n"
           "\n",
           progname, OPT_MAX_WORKERS, OPT_DEFAULT_WORKERS, OPT_MAX_THREADS);
}
