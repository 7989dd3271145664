/* options.h - mirrorfs command-line and mount options.
 *
 * Every option is accepted as `-o name=value` (fstab-friendly) and as
 * `--name=value`.  options_parse() consumes mirrorfs's own options and the
 * SOURCE argument from a struct fuse_args, validates them, and leaves the
 * rest (MOUNTPOINT and the FUSE options) in args for fuse_parse_cmdline()
 * and fuse_session_new().  No file system access: path checks are main.c's and mount.c's.
 */
#ifndef MIRRORFS_OPTIONS_H
#define MIRRORFS_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

struct fuse_args;

enum copy_mode { COPY_MODE_BACKGROUND, COPY_MODE_WRITE_BLOCKING, COPY_MODE_AUTO };
enum sync_mode { SYNC_FULL, SYNC_NONE };
enum error_action { ERROR_ACTION_REPORT, ERROR_ACTION_IGNORE, ERROR_ACTION_STOP };
enum unmount_action { UNMOUNT_COMPLETE, UNMOUNT_CANCEL };
/* A source file held open for writing by a process outside the mount. */
enum open_writers { OPEN_WRITERS_REFUSE, OPEN_WRITERS_VERIFY };

/* granularity=auto (the default): per image, the smallest power of two from
 * OPT_MIN_GRANULARITY to OPT_AUTO_MAX_GRANULARITY that keeps the image within
 * OPT_AUTO_MAX_GRANULES granules. */
#define OPT_AUTO_MAX_GRANULARITY (64u * 1024)
#define OPT_AUTO_MAX_GRANULES (1ull << 24)
#define OPT_DEFAULT_BUF_SIZE (16u * 1024 * 1024)
#define OPT_DEFAULT_WORKERS 4u
#define OPT_MAX_WORKERS 64u
#define OPT_MAX_THREADS 1024u
#define OPT_DEFAULT_AUTO_AFTER 10u
#define OPT_MIN_GRANULARITY (4u * 1024)
#define OPT_MAX_GRANULARITY (64u * 1024 * 1024)
/* Largest single copy operation (as QEMU's mirror: 1 MiB). */
#define OPT_MAX_CHUNK (1u * 1024 * 1024)
/* Largest copy operation of a first pass, which moves whole images: fewer,
 * larger requests keep more of the disk busy (doc/performance.md). */
#define OPT_MAX_BULK_CHUNK (4u * 1024 * 1024)

struct mirror_options {
    char *source;    /* as given (g_free) */
    char *target;    /* as given (g_free); NULL when missing */
    char *state_dir; /* NULL: the mount's, derived from the paths by main.c */
    uint64_t granularity; /* 0: auto, chosen per image */
    uint64_t buf_size;
    uint64_t speed; /* bytes/s, 0 = unlimited */
    uint64_t drain_speed; /* the same once unmounted (the drain); 0 = unlimited */
    unsigned workers;
    unsigned threads;      /* FUSE worker threads; 0: auto (one per CPU, at least 2) */
    unsigned auto_after_s; /* copy_mode=auto: switch after this long without progress */
    enum copy_mode copy_mode;
    enum sync_mode sync;
    enum error_action on_target_error;
    enum error_action on_source_error;
    enum unmount_action on_unmount;
    enum open_writers open_writers;
    bool allow_other;          /* FUSE options seen (left in args) */
    bool default_permissions;
    bool overwrite;
    bool persist;    /* crash-safe state in state_dir (default on) */
    bool show_help;
    bool show_version;
};

/* Parse and validate.  Returns 0, or -EINVAL with *err set to one line
 * (g_free) naming the bad input, e.g. "granularity=3K: not a power of two
 * between 4K and 64M".  A missing SOURCE or target is reported here unless
 * help or version was asked for. */
int options_parse(struct fuse_args *args, struct mirror_options *opts, char **err);
void options_clear(struct mirror_options *opts);

/* The bytes one copy operation moves at most: min(1 MiB, buf_size / workers),
 * rounded down to the granularity (the largest one auto can choose), at
 * least one granule. */
uint64_t options_chunk_size(const struct mirror_options *opts);
/* The same for a copy of the first pass, with OPT_MAX_BULK_CHUNK for 1 MiB;
 * never smaller than options_chunk_size(). */
uint64_t options_bulk_chunk_size(const struct mirror_options *opts);

/* The granularity of an image of size bytes: the one given, or what auto
 * chooses.  An image that is empty when it is added (created through the
 * mount) gets the largest auto granularity: its final size is not known. */
uint64_t options_image_granularity(const struct mirror_options *opts, uint64_t size);

const char *copy_mode_name(enum copy_mode m);
/* 0 and *out set, or -EINVAL for an unknown name. */
int copy_mode_parse(const char *name, enum copy_mode *out);
const char *error_action_name(enum error_action a);

/* Usage text for --help. */
void options_print_usage(const char *progname);

#endif
