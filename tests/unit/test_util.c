/* test_util.c - helpers of util.c that ask the kernel: what the page cache
 * holds of a file (page_cache_pages(), which the first pass uses to choose
 * between a buffered and a direct read). */
#include "config.h"

#include "util.h"
#include "unit.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_page_cache_pages)
{
    /* In the working directory: a tmpfs /tmp would do too, but the build
     * tree is where the project's file systems are. */
    char path[] = "test_util.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(unlink(path), 0);
    long page = sysconf(_SC_PAGESIZE);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);

    uint64_t pages = 99;
    int rc = page_cache_pages(fd, 0, 1 << 20, &pages);
    if (rc == -ENOSYS) {
        /* A kernel before 6.5: said once, and then without asking. */
        ck_assert_int_eq(page_cache_pages(fd, 0, 1 << 20, &pages), -ENOSYS);
        ck_assert_uint_eq(pages, 99);
        close(fd);
        return;
    }
    /* Never written nor read: nothing cached. */
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(pages, 0);

    /* 64 KiB written at the start: those pages, and nothing past them. */
    g_autofree char *buf = g_malloc(64 * 1024);
    memset(buf, 0x5a, 64 * 1024);
    ck_assert_int_eq(pwrite(fd, buf, 64 * 1024, 0), 64 * 1024);
    ck_assert_int_eq(page_cache_pages(fd, 0, 64 * 1024, &pages), 0);
    ck_assert_uint_eq(pages, (uint64_t)(64 * 1024 / page));
    ck_assert_int_eq(page_cache_pages(fd, 0, 1 << 20, &pages), 0);
    ck_assert_uint_eq(pages, (uint64_t)(64 * 1024 / page));
    ck_assert_int_eq(page_cache_pages(fd, 512 * 1024, 512 * 1024, &pages), 0);
    ck_assert_uint_eq(pages, 0);

    /* Not a file descriptor. */
    ck_assert_int_eq(page_cache_pages(-1, 0, 4096, &pages), -EBADF);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("kernel");

    tcase_add_test(tc, test_page_cache_pages);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
