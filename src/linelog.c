/* linelog.c - bounded line log with cursors (see linelog.h). */
#include "config.h"

#include "linelog.h"
#include "util.h"

#include <glib.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct linelog {
    pthread_mutex_t lock;
    pthread_cond_t more;
    size_t capacity;
    char **ring;      /* line of seq s is at ring[s % capacity] */
    uint64_t oldest;  /* seq of the oldest line kept */
    uint64_t next;    /* seq of the next line */
    linelog_notify_fn notify;
    void *notify_data;
};

struct linelog *linelog_new(size_t capacity)
{
    struct linelog *log = g_new0(struct linelog, 1);
    pthread_condattr_t attr;

    pthread_mutex_init(&log->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&log->more, &attr);
    pthread_condattr_destroy(&attr);
    log->capacity = capacity ? capacity : 1;
    log->ring = g_new0(char *, log->capacity);
    return log;
}

void linelog_free(struct linelog *log)
{
    if (!log)
        return;
    for (size_t i = 0; i < log->capacity; i++)
        g_free(log->ring[i]);
    g_free(log->ring);
    pthread_cond_destroy(&log->more);
    pthread_mutex_destroy(&log->lock);
    g_free(log);
}

void linelog_append(struct linelog *log, const char *line)
{
    char *copy = g_strdup(line);

    for (char *p = copy; *p; p++)
        if (*p == '\n')
            *p = ' ';
    pthread_mutex_lock(&log->lock);
    size_t slot = log->next % log->capacity;
    g_free(log->ring[slot]);
    log->ring[slot] = copy;
    log->next++;
    if (log->next - log->oldest > log->capacity)
        log->oldest = log->next - log->capacity;
    pthread_cond_broadcast(&log->more);
    linelog_notify_fn notify = log->notify;
    void *data = log->notify_data;
    pthread_mutex_unlock(&log->lock);
    if (notify)
        notify(data);
}

void linelog_set_notify(struct linelog *log, linelog_notify_fn fn, void *data)
{
    pthread_mutex_lock(&log->lock);
    log->notify = fn;
    log->notify_data = data;
    pthread_mutex_unlock(&log->lock);
}

void linelog_appendf(struct linelog *log, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *line = NULL;

    va_start(ap, fmt);
    line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    linelog_append(log, line);
}

uint64_t linelog_oldest(struct linelog *log)
{
    pthread_mutex_lock(&log->lock);
    uint64_t v = log->oldest;
    pthread_mutex_unlock(&log->lock);
    return v;
}

uint64_t linelog_next(struct linelog *log)
{
    pthread_mutex_lock(&log->lock);
    uint64_t v = log->next;
    pthread_mutex_unlock(&log->lock);
    return v;
}

/* Copy text and a newline if it fits whole (or, as the first thing in an
 * empty buffer, cut to fit).  Returns the bytes used, 0 if it does not fit. */
static size_t put_line(char *buf, size_t size, size_t used, const char *text)
{
    size_t len = strlen(text);

    if (used + len + 1 <= size) {
        memcpy(buf + used, text, len);
        buf[used + len] = '\n';
        return len + 1;
    }
    if (used == 0 && size > 0) {
        memcpy(buf, text, size - 1);
        buf[size - 1] = '\n';
        return size;
    }
    return 0;
}

size_t linelog_read(struct linelog *log, uint64_t *cursor, char *buf, size_t size,
                    uint64_t wait_ns)
{
    size_t used = 0;

    pthread_mutex_lock(&log->lock);
    if (wait_ns > 0 && *cursor >= log->next) {
        struct timespec until = cond_deadline(CLOCK_MONOTONIC, wait_ns);
        pthread_cond_timedwait(&log->more, &log->lock, &until);
    }
    if (*cursor < log->oldest) {
        char note[64];
        snprintf(note, sizeof(note), "dropped %" G_GUINT64_FORMAT, log->oldest - *cursor);
        size_t n = put_line(buf, size, used, note);
        if (n == 0)
            goto out;
        used += n;
        *cursor = log->oldest;
    }
    while (*cursor < log->next) {
        size_t n = put_line(buf, size, used, log->ring[*cursor % log->capacity]);
        if (n == 0)
            break;
        used += n;
        (*cursor)++;
    }
out:
    pthread_mutex_unlock(&log->lock);
    return used;
}
