/* Unit tests for the line log behind .mirror/events and .mirror/trace. */
#include "config.h"

#include <check.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "linelog.h"
#include "unit.h"

START_TEST(test_read_in_order)
{
    struct linelog *log = linelog_new(8);
    char buf[256];
    uint64_t cur = linelog_oldest(log);

    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 0);
    linelog_append(log, "one");
    linelog_appendf(log, "two %d", 2);
    size_t n = linelog_read(log, &cur, buf, sizeof(buf), 0);
    ck_assert_uint_eq(n, 10);
    ck_assert(memcmp(buf, "one\ntwo 2\n", 10) == 0);
    ck_assert_uint_eq(cur, 2);
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 0);
    linelog_free(log);
}
END_TEST

START_TEST(test_whole_lines_only)
{
    struct linelog *log = linelog_new(8);
    char buf[8];
    uint64_t cur = 0;

    linelog_append(log, "abc");   /* 4 bytes with newline */
    linelog_append(log, "defgh"); /* 6 bytes */
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 4);
    ck_assert(memcmp(buf, "abc\n", 4) == 0);
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 6);
    ck_assert(memcmp(buf, "defgh\n", 6) == 0);
    /* A line longer than the buffer is cut, not lost, and not repeated. */
    linelog_append(log, "0123456789");
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 8);
    ck_assert(memcmp(buf, "0123456\n", 8) == 0);
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 0);
    linelog_free(log);
}
END_TEST

START_TEST(test_newline_in_line)
{
    struct linelog *log = linelog_new(4);
    char buf[64];
    uint64_t cur = 0;

    linelog_append(log, "a\nb");
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 0), 4);
    ck_assert(memcmp(buf, "a b\n", 4) == 0);
    linelog_free(log);
}
END_TEST

START_TEST(test_dropped_lines_are_counted)
{
    struct linelog *log = linelog_new(3);
    char buf[256];
    uint64_t cur = 0;

    for (int i = 0; i < 10; i++)
        linelog_appendf(log, "l%d", i);
    ck_assert_uint_eq(linelog_oldest(log), 7);
    ck_assert_uint_eq(linelog_next(log), 10);
    size_t n = linelog_read(log, &cur, buf, sizeof(buf), 0);
    buf[n] = '\0';
    ck_assert_str_eq(buf, "dropped 7\nl7\nl8\nl9\n");
    ck_assert_uint_eq(cur, 10);
    linelog_free(log);
}
END_TEST

struct writer_arg {
    struct linelog *log;
    useconds_t delay;
};

static void *late_writer(void *p)
{
    struct writer_arg *a = p;
    usleep(a->delay);
    linelog_append(a->log, "late");
    return NULL;
}

START_TEST(test_read_waits_for_next)
{
    struct linelog *log = linelog_new(4);
    struct writer_arg a = {log, 100000};
    pthread_t t;
    char buf[64];
    uint64_t cur = linelog_next(log);

    pthread_create(&t, NULL, late_writer, &a);
    /* Waits (up to 5 s) and returns as soon as the line arrives. */
    gint64 t0 = g_get_monotonic_time();
    size_t n = linelog_read(log, &cur, buf, sizeof(buf), 5000000000ull);
    gint64 waited = g_get_monotonic_time() - t0;
    pthread_join(t, NULL);
    ck_assert_uint_eq(n, 5);
    ck_assert(memcmp(buf, "late\n", 5) == 0);
    ck_assert_int_lt(waited, 4000000);
    /* With nothing coming, a bounded wait returns empty. */
    ck_assert_uint_eq(linelog_read(log, &cur, buf, sizeof(buf), 50000000ull), 0);
    linelog_free(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("linelog");
    TCase *tc = tcase_create("log");

    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_read_in_order);
    tcase_add_test(tc, test_whole_lines_only);
    tcase_add_test(tc, test_newline_in_line);
    tcase_add_test(tc, test_dropped_lines_are_counted);
    tcase_add_test(tc, test_read_waits_for_next);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
