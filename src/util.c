/* util.c - small helpers shared by the daemon, mirrorctl and the tests. */
#include "config.h"

#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Binary suffixes in increasing order; index i means 1024^(i+1). */
static const char size_suffixes[] = "KMGT";

/* Shift for a multiplier letter, or -1 when c is not one. */
static int suffix_shift(char c)
{
    switch (c) {
    case 'k':
    case 'K':
        return 10;
    case 'm':
    case 'M':
        return 20;
    case 'g':
    case 'G':
        return 30;
    case 't':
    case 'T':
        return 40;
    default:
        return -1;
    }
}

int parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    int shift = 0;

    if (!s || !out)
        return -EINVAL;
    /* Digits only: strtoull would take a sign, leading blanks and "0x". */
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');

        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (*p) {
        int sh = suffix_shift(*p);

        if (sh > 0) {
            shift = sh;
            p++;
            /* "iB" only makes sense after a multiplier ("64KiB", not "64iB"). */
            if (*p == 'i' || *p == 'I')
                p++;
            if (*p == 'b' || *p == 'B')
                p++;
            else if (p[-1] == 'i' || p[-1] == 'I')
                return -EINVAL;
        } else if (*p == 'b' || *p == 'B') {
            p++;
        }
        if (*p)
            return -EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = v << shift;
    return 0;
}

char *format_size(uint64_t n, char *buf)
{
    int i = 0;

    /* Stop at T so the result always parses back with parse_size(). */
    while (n != 0 && i < (int)sizeof(size_suffixes) - 1 && (n & 1023) == 0) {
        n >>= 10;
        i++;
    }
    if (i == 0)
        snprintf(buf, 24, "%llu", (unsigned long long)n);
    else
        snprintf(buf, 24, "%llu%c", (unsigned long long)n, size_suffixes[i - 1]);
    return buf;
}

char *format_size_human(uint64_t n, char *buf)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;

    if (n < 1024) {
        snprintf(buf, 16, "%u B", (unsigned)n);
        return buf;
    }
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    /* Three significant digits at most; a value that rounds up to 1024 is
     * shown in the next unit so "1024 MiB" never appears. */
    if (v < 99.95) {
        snprintf(buf, 16, "%.1f %s", v, units[u]);
    } else if (v < 1023.5 || u + 1 == sizeof(units) / sizeof(units[0])) {
        snprintf(buf, 16, "%.0f %s", v, units[u]);
    } else {
        snprintf(buf, 16, "%.1f %s", v / 1024.0, units[u + 1]);
    }
    return buf;
}

uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec cond_deadline(clockid_t clk, uint64_t ns)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    ns += (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

bool path_is_within(const char *a, const char *b)
{
    size_t len = strlen(a);

    /* Ignore trailing slashes of a, so that "/" has length 0 and then any
     * absolute b matches, while "/a/b" does not match "/a/bc". */
    while (len > 0 && a[len - 1] == '/')
        len--;
    if (strncmp(a, b, len) != 0)
        return false;
    return b[len] == '\0' || b[len] == '/';
}

void log_line(bool foreground, int prio, const char *fmt, va_list ap)
{
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);

    if (foreground)
        fprintf(stderr, "mirrorfs: %s\n", msg);
    else
        syslog(prio, "%s", msg);
}

char *path_canonical_maybe_missing(const char *path, bool *exists)
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

/* cachestat(2), which Debian 12's headers do not declare yet. */
#ifndef __NR_cachestat
#define __NR_cachestat 451 /* the same on every architecture */
#endif

struct cachestat_range {
    uint64_t off;
    uint64_t len;
};

struct cachestat_counts {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};

int page_cache_pages(int fd, uint64_t off, uint64_t len, uint64_t *pages)
{
    static gint missing; /* ENOSYS once: not asked again */
    struct cachestat_range range = {off, len};
    struct cachestat_counts cs;

    if (g_atomic_int_get(&missing))
        return -ENOSYS;
    if (syscall(__NR_cachestat, fd, &range, &cs, 0) < 0) {
        if (errno == ENOSYS)
            g_atomic_int_set(&missing, 1);
        return -errno;
    }
    *pages = cs.nr_cache;
    return 0;
}
