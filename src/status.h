/* status.h - the job's status as data, and its two renderings.
 *
 * The daemon fills a struct status_snapshot under its locks, then renders
 * it without any lock held.  The text form is the `.mirror/status` file: one
 * `key: value` per line, keys in a fixed order that scripts depend on (new
 * keys are appended, never renamed), then one `image:` line per image.  The
 * JSON form is `.mirror/status.json`, built with json-glib so any file name
 * is escaped right.  mirrorctl parses the text form back with
 * status_parse_text() and status_parse_image_line().
 */
#ifndef MIRRORFS_STATUS_H
#define MIRRORFS_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct image_status {
    char *name;      /* path inside SOURCE, e.g. "vm1/disk.img" */
    const char *phase;
    uint64_t size;
    uint64_t copied; /* size - dirty - in_flight */
    uint64_t dirty;
    uint64_t in_flight;
    uint64_t granularity; /* bytes per bit of its dirty map */
};

struct status_snapshot {
    const char *phase;       /* bulk, ready, draining, completed, paused, failed, cancelled,
                              * idle (no job), pivoted (no job, a former target served) */
    pid_t pid;
    char *source;
    char *target;
    const char *copy_mode;
    uint64_t images;
    uint64_t total_bytes;
    uint64_t copied_bytes;
    uint64_t dirty_bytes;
    uint64_t in_flight_bytes;
    uint64_t transferred_bytes;
    uint64_t rate_bytes_per_s;
    int64_t eta_s;            /* -1: unknown */
    uint64_t guest_write_bytes;
    uint64_t errors;
    char *last_error;         /* "" when none */
    /* keys added after the first release go below, and after last_error */
    char *state_dir;
    int exit_code;            /* -1 while running; the daemon's exit code once finished */
    uint64_t speed_bytes_per_s; /* the copy rate limit, 0 = none */
    const char *active_copy_mode; /* what copy_mode does now: background or write-blocking */
    const char *resumed;          /* no, state (crash-safe state), verify (compared) */
    uint64_t resume_saved_bytes;  /* not copied again thanks to the state */
    bool verifying;               /* a verify pass runs */
    uint64_t verify_checked_bytes;
    uint64_t verify_differing_bytes;
    const char *mirrored;         /* what the target gets: "data, namespace, metadata" or "data" */
    uint64_t outside_writes;      /* writes to SOURCE seen that did not come through the mount */
    char *serving;                /* the directory the mount serves: SOURCE, or a former target */
    int64_t pivot_pause_ms;       /* how long the last pivot held the guests; -1: none */
    uint64_t n_images;
    struct image_status *image; /* n_images entries */
};

/* 0..100, rounded down; 100 when total is 0. */
unsigned status_progress_percent(const struct status_snapshot *s);

/* Renderings; g_free() the result. */
char *status_format_text(const struct status_snapshot *s);
char *status_format_json(const struct status_snapshot *s);

/* Free the strings a snapshot owns (name, source, target, last_error,
 * state_dir, serving, the image array) and zero it.  phase/copy_mode are static. */
void status_snapshot_clear(struct status_snapshot *s);

/* Parse the text form into a GHashTable of key -> value (both g_free'd by the
 * table); `image:` lines are not included.  NULL when the text has no
 * `phase:` line (not a mirrorfs status). */
struct _GHashTable *status_parse_text(const char *text);

/* One `image:` line of the text form, split. */
struct status_image_line {
    const char *name; /* as written, still escaped (status_unescape) */
    const char *phase;
    uint64_t size, copied, dirty, in_flight, granularity; /* 0 when missing */
};

/* Split an `image: NAME phase=P size=N ...` line in place: line is cut up
 * and im's strings point into it.  The name may hold spaces, even
 * " phase=", so the fields are found from the right; unknown fields are
 * skipped.  false when line is not an image line. */
bool status_parse_image_line(char *line, struct status_image_line *im);

/* Undo the text form's escaping of a value or an image's name (\n, \\);
 * g_free the result. */
char *status_unescape(const char *v);

#endif
