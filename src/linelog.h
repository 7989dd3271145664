/* linelog.h - a bounded log of text lines that readers follow, for
 * `.mirror/events` and `.mirror/trace`.
 *
 * Each line gets a sequence number.  A reader keeps a cursor (the next
 * sequence number it wants) and reads whole lines from there; when it falls
 * so far behind that its lines were dropped from the ring, it is told how
 * many it missed.  A read may wait for the next line.
 *
 * Thread-safe: its own mutex and condition variable.
 */
#ifndef MIRRORFS_LINELOG_H
#define MIRRORFS_LINELOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct linelog;

/* A log keeping at most capacity lines (>= 1). */
struct linelog *linelog_new(size_t capacity);
void linelog_free(struct linelog *log);

/* Append one line (without its newline; a newline inside is replaced by a
 * space so that one entry stays one line).  Wakes waiting readers. */
void linelog_append(struct linelog *log, const char *line);
void linelog_appendf(struct linelog *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sequence number of the oldest line still kept. */
uint64_t linelog_oldest(struct linelog *log);
/* Sequence number the next appended line will get. */
uint64_t linelog_next(struct linelog *log);

/* Copy the lines from *cursor on into buf (each ending in '\n'), as many
 * whole lines as fit in size bytes (a single line longer than size is cut
 * to size); advance *cursor past them.  When lines before the oldest kept
 * one were asked for, a line "dropped N" comes first.  When no line is
 * there, wait at most wait_ns for one (0: do not wait).  Returns the number
 * of bytes written, 0 when nothing came. */
size_t linelog_read(struct linelog *log, uint64_t *cursor, char *buf, size_t size,
                    uint64_t wait_ns);

/* Call fn(data) after each append, outside the log's lock (NULL: none).
 * For readers that wait elsewhere than in linelog_read(). */
typedef void (*linelog_notify_fn)(void *data);
void linelog_set_notify(struct linelog *log, linelog_notify_fn fn, void *data);

#endif
