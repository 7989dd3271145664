/* test_tree.c - symlink-free resolution beneath a root (tree.c): nothing
 * outside the root is ever reached, whatever the tree holds. */
#include "config.h"

#include "tree.h"
#include "unit.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *top;     /* scratch */
static char *outside; /* top/outside: must stay empty */
static int root;      /* top/root */

static void setup(void)
{
    top = g_dir_make_tmp("test_tree.XXXXXX", NULL);
    ck_assert_ptr_nonnull(top);
    outside = g_build_filename(top, "outside", NULL);
    g_autofree char *r = g_build_filename(top, "root", NULL);
    ck_assert_int_eq(mkdir(outside, 0755), 0);
    ck_assert_int_eq(mkdir(r, 0755), 0);
    root = open(r, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(root, 0);
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", top);
    close(root);
    ck_assert_int_eq(system(cmd), 0);
    g_free(outside);
    g_free(top);
}

/* A symlink met where a directory is needed: ELOOP or ENOTDIR (O_PATH
 * with O_NOFOLLOW opens the link itself, which is not a directory). */
static bool refused(int rc)
{
    return rc == -ELOOP || rc == -ENOTDIR;
}

static bool outside_is_empty(void)
{
    g_autoptr(GDir) d = g_dir_open(outside, 0, NULL);
    return d && g_dir_read_name(d) == NULL;
}

START_TEST(test_paths_accepted)
{
    ck_assert(tree_path_ok(""));
    ck_assert(tree_path_ok("a"));
    ck_assert(tree_path_ok("a/b/c"));
    ck_assert(tree_path_ok("..a/b.."));
    ck_assert(!tree_path_ok("/a"));
    ck_assert(!tree_path_ok("a/"));
    ck_assert(!tree_path_ok("a//b"));
    ck_assert(!tree_path_ok("a/../b"));
    ck_assert(!tree_path_ok(".."));
    ck_assert(!tree_path_ok("./a"));
    const char *leaf;
    ck_assert_int_eq(tree_open_parent(root, "../outside/x", true, &leaf), -EINVAL);
    ck_assert_int_eq(tree_open_dir(root, "a/../..", 0), -EINVAL);
}
END_TEST

/* A symlink in the middle of a path is never followed: without create the
 * open fails, with create the symlink is replaced by a directory. */
START_TEST(test_symlink_in_the_middle)
{
    const char *leaf;

    ck_assert_int_eq(symlinkat(outside, root, "L"), 0);
    ck_assert(refused(tree_open_parent(root, "L/victim", false, &leaf)));
    ck_assert_int_lt(tree_open_dir(root, "L", 0), 0);

    int dir = tree_open_parent(root, "L/victim", true, &leaf);
    ck_assert_int_ge(dir, 0);
    ck_assert_str_eq(leaf, "victim");
    int fd = openat(dir, leaf, O_WRONLY | O_CREAT | O_NOFOLLOW, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    close(dir);
    struct stat st;
    ck_assert_int_eq(fstatat(root, "L", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert(outside_is_empty());
}
END_TEST

/* A symlink deeper down, and one that points back up with "..". */
START_TEST(test_deep_and_relative_symlinks)
{
    const char *leaf;

    ck_assert_int_eq(mkdirat(root, "a", 0755), 0);
    ck_assert_int_eq(mkdirat(root, "a/b", 0755), 0);
    ck_assert_int_eq(symlinkat("../../../outside", root, "a/b/up"), 0);
    ck_assert(refused(tree_open_parent(root, "a/b/up/x", false, &leaf)));
    int dir = tree_open_parent(root, "a/b/up/x", true, &leaf);
    ck_assert_int_ge(dir, 0);
    ck_assert_int_eq(mknodat(dir, leaf, S_IFIFO | 0600, 0), 0);
    close(dir);
    ck_assert(outside_is_empty());
}
END_TEST

/* A regular file or a FIFO where a directory belongs is replaced. */
START_TEST(test_wrong_type_replaced)
{
    const char *leaf;
    struct stat st;

    int fd = openat(root, "f", O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(mknodat(root, "p", S_IFIFO | 0600, 0), 0);
    ck_assert_int_eq(tree_open_parent(root, "f/x", false, &leaf), -ENOTDIR);
    int dir = tree_open_parent(root, "f/x", true, &leaf);
    ck_assert_int_ge(dir, 0);
    close(dir);
    dir = tree_open_parent(root, "p/q/x", true, &leaf);
    ck_assert_int_ge(dir, 0);
    close(dir);
    ck_assert_int_eq(fstatat(root, "f", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(fstatat(root, "p/q", &st, AT_SYMLINK_NOFOLLOW), 0);
    ck_assert(S_ISDIR(st.st_mode));
}
END_TEST

/* Paths longer than PATH_MAX are walked a piece at a time. */
START_TEST(test_longer_than_path_max)
{
    GString *path = g_string_new(NULL);
    char comp[201];
    const char *leaf;

    memset(comp, 'd', 200);
    comp[200] = '\0';
    for (int n = 0; n < 30; n++) {
        comp[0] = (char)('a' + n % 26);
        g_string_append_printf(path, "%s/", comp);
    }
    g_string_append(path, "leaf");
    ck_assert_uint_gt(path->len, PATH_MAX);
    int dir = tree_open_parent(root, path->str, true, &leaf);
    ck_assert_int_ge(dir, 0);
    ck_assert_str_eq(leaf, "leaf");
    int fd = openat(dir, leaf, O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    close(dir);
    /* Found again without creating. */
    dir = tree_open_parent(root, path->str, false, &leaf);
    ck_assert_int_ge(dir, 0);
    ck_assert_int_eq(faccessat(dir, leaf, F_OK, AT_SYMLINK_NOFOLLOW), 0);
    close(dir);
    /* And removed, all of it. */
    ck_assert_int_eq(tree_remove(root, "a" /* not there */), 0);
    comp[0] = 'a';
    ck_assert_int_eq(tree_remove(root, comp), 0);
    ck_assert_int_eq(faccessat(root, comp, F_OK, AT_SYMLINK_NOFOLLOW), -1);
    g_string_free(path, TRUE);
}
END_TEST

/* Removing a directory never follows a symlink inside it. */
START_TEST(test_remove_does_not_follow)
{
    g_autofree char *kept = g_build_filename(outside, "kept", NULL);
    ck_assert(g_file_set_contents(kept, "x", 1, NULL));
    ck_assert_int_eq(mkdirat(root, "d", 0755), 0);
    ck_assert_int_eq(symlinkat(outside, root, "d/link"), 0);
    ck_assert_int_eq(tree_remove(root, "d"), 0);
    ck_assert(g_file_test(kept, G_FILE_TEST_EXISTS));
    ck_assert_int_eq(faccessat(root, "d", F_OK, AT_SYMLINK_NOFOLLOW), -1);
    /* A symlink to a directory is removed as a symlink. */
    ck_assert_int_eq(symlinkat(outside, root, "s"), 0);
    ck_assert_int_eq(tree_remove(root, "s"), 0);
    ck_assert(g_file_test(kept, G_FILE_TEST_EXISTS));
}
END_TEST

/* Syncing the directories of a tree: every type of entry is passed over
 * but directories, a symlink to a directory is not entered, and a symlink
 * where the starting directory should be is refused. */
START_TEST(test_sync_dirs)
{
    ck_assert_int_eq(mkdirat(root, "a", 0755), 0);
    ck_assert_int_eq(mkdirat(root, "a/b", 0755), 0);
    ck_assert_int_eq(mkdirat(root, "a/b/c", 0755), 0);
    ck_assert_int_eq(mknodat(root, "a/b/fifo", S_IFIFO | 0600, 0), 0);
    int fd = openat(root, "a/f", O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(symlinkat(outside, root, "a/b/out"), 0);
    ck_assert_int_eq(symlinkat(outside, root, "L"), 0);
    ck_assert_int_eq(tree_sync_dirs(root, ""), 0);
    ck_assert_int_eq(tree_sync_dirs(root, "a/b"), 0);
    ck_assert(refused(tree_sync_dirs(root, "L")));
    ck_assert(refused(tree_sync_dirs(root, "a/b/out")));
    ck_assert_int_eq(tree_sync_dirs(root, "missing"), -ENOENT);
    ck_assert(outside_is_empty());
}
END_TEST

/* Syncing all of a tree: files, FIFOs (never waited for) and symlinks
 * pass, nothing outside is touched, and no access time moves (the audit
 * set them before this last step). */
START_TEST(test_sync_all)
{
    struct stat before, after;
    struct timespec old[2] = {{1000000, 0}, {1000000, 0}};

    ck_assert_int_eq(mkdirat(root, "a", 0755), 0);
    ck_assert_int_eq(mkdirat(root, "a/b", 0755), 0);
    ck_assert_int_eq(mknodat(root, "a/b/fifo", S_IFIFO | 0600, 0), 0);
    int fd = openat(root, "a/b/f", O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "data", 4), 4);
    close(fd);
    ck_assert_int_eq(symlinkat(outside, root, "a/out"), 0);
    /* Old access times: relatime would move them on any read. */
    ck_assert_int_eq(utimensat(root, "a/b", old, 0), 0);
    ck_assert_int_eq(utimensat(root, "a/b/f", old, 0), 0);
    ck_assert_int_eq(fstatat(root, "a/b", &before, 0), 0);
    ck_assert_int_eq(tree_sync_all(root, ""), 0);
    ck_assert_int_eq(fstatat(root, "a/b", &after, 0), 0);
    ck_assert_int_eq(after.st_atim.tv_sec, before.st_atim.tv_sec);
    ck_assert_int_eq(fstatat(root, "a/b/f", &after, 0), 0);
    ck_assert_int_eq(after.st_atim.tv_sec, 1000000);
    ck_assert(refused(tree_sync_all(root, "a/out")));
    ck_assert(outside_is_empty());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tree");
    TCase *tc = tcase_create("beneath");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_paths_accepted);
    tcase_add_test(tc, test_symlink_in_the_middle);
    tcase_add_test(tc, test_deep_and_relative_symlinks);
    tcase_add_test(tc, test_wrong_type_replaced);
    tcase_add_test(tc, test_longer_than_path_max);
    tcase_add_test(tc, test_remove_does_not_follow);
    tcase_add_test(tc, test_sync_dirs);
    tcase_add_test(tc, test_sync_all);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
