/* util.h - small helpers shared by the daemon, mirrorctl and the tests. */
#ifndef MIRRORFS_UTIL_H
#define MIRRORFS_UTIL_H

#include <glib.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdarg.h>
#include <time.h>

/* Parse a size: digits with an optional K, M, G or T suffix (binary
 * multiples; a trailing "B" or "iB" is accepted, case-insensitive).
 * 0 on success, -EINVAL when malformed, -ERANGE when it does not fit. */
int parse_size(const char *s, uint64_t *out);

/* "64K", "1.5M"-free exact form: the largest suffix that divides n exactly.
 * Writes into buf (at least 24 bytes); returns buf. */
char *format_size(uint64_t n, char *buf);

/* Human-friendly, rounded: "1.2 GiB".  buf at least 16 bytes. */
char *format_size_human(uint64_t n, char *buf);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* The time ns nanoseconds from now on clock clk, as pthread_cond_timedwait()
 * wants it (CLOCK_REALTIME for a condition variable with default
 * attributes). */
struct timespec cond_deadline(clockid_t clk, uint64_t ns);

/* Initialise c with default attributes but for its timed waits, which
 * measure CLOCK_MONOTONIC: deadlines from cond_deadline(CLOCK_MONOTONIC, ...)
 * or now_ns() times. */
void cond_init_monotonic(pthread_cond_t *c);

/* True when path b is a or below a (both absolute and canonical). */
bool path_is_within(const char *a, const char *b);
/* Canonical absolute path of a directory that may not exist yet (its
 * parent must); *exists says which.  NULL with errno set. */
char *path_canonical_maybe_missing(const char *path, bool *exists);

/* How many pages of [off, off+len) of fd's file the page cache holds, in
 * *pages: 0, or -ENOSYS where the kernel cannot tell (cachestat(2) came in
 * Linux 6.5), or another -errno. */
int page_cache_pages(int fd, uint64_t off, uint64_t len, uint64_t *pages);

/* The daemon's log: "mirrorfs: MSG" on stderr in the foreground, syslog
 * otherwise. */
void log_line(bool foreground, int prio, const char *fmt, va_list ap) G_GNUC_PRINTF(3, 0);

#endif
