/* Unit tests for the crash-safe state: what is on disk after each step,
 * read back the way a restart reads it, and what a restart makes of files
 * that were cut short, damaged or belong to another file. */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap.h"
#include "persist.h"
#include "unit.h"

#define E PERSIST_EXTENT
/* The map's block size (doc/persistence.md). */
#define BLK 512

static char *dir;

static void setup(void)
{
    dir = g_dir_make_tmp("test-persist-XXXXXX", NULL);
    ck_assert_ptr_nonnull(dir);
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    g_free(dir);
}

static struct persist_key key_of(dev_t dev, ino_t ino)
{
    struct persist_key k = {
        .dev = dev, .ino = ino, .btime_sec = 1700000000, .btime_nsec = 5};
    return k;
}

static struct persist *open_state_in(const char *d, bool *had)
{
    struct persist *p = NULL;
    g_autofree char *err = NULL;

    ck_assert_int_eq(persist_open(d, "/src", "/tgt", &p, had, &err), 0);
    return p;
}

static struct persist *open_state(bool *had)
{
    return open_state_in(dir, had);
}

/* Open an image of the state in dir, checking the contract on *previous. */
static struct persist_image *open_image(struct persist *p, const char *name,
                                        const struct persist_key *key, uint64_t size,
                                        enum persist_marks how, struct bitmap **prev,
                                        enum persist_previous *found)
{
    struct persist_image *pi = NULL;

    ck_assert_int_eq(persist_image_open(p, name, key, size, how, &pi, prev, found), 0);
    ck_assert_ptr_nonnull(pi);
    if (*found == PERSIST_PREV_OK)
        ck_assert_ptr_nonnull(*prev);
    else
        ck_assert_ptr_null(*prev);
    return pi;
}

/* What a restart would find for image (key, name) of size bytes, from a
 * copy of the state as it is on disk now (the image may still be open: a
 * crash at this point).  *marked: what the restart marks with `how`. */
static enum persist_previous restart_how(const struct persist_key *key, const char *name,
                                         uint64_t size, enum persist_marks how,
                                         struct bitmap **prev, uint64_t *marked)
{
    g_autofree char *copy = g_strconcat(dir, ".restart", NULL);
    g_autofree char *cp =
        g_strdup_printf("rm -rf '%s' && cp -a '%s' '%s'", copy, dir, copy);
    g_autofree char *rm = g_strdup_printf("rm -rf '%s'", copy);
    enum persist_previous found;
    bool had;

    ck_assert_int_eq(system(cp), 0);
    struct persist *p = open_state_in(copy, &had);
    ck_assert(had);
    struct persist_image *pi = open_image(p, name, key, size, how, prev, &found);
    if (marked)
        *marked = persist_image_marked(pi);
    persist_image_close(pi);
    persist_close(p);
    ck_assert_int_eq(system(rm), 0);
    return found;
}

static enum persist_previous restart_view(const struct persist_key *key, const char *name,
                                          uint64_t size, struct bitmap **prev)
{
    return restart_how(key, name, size, PERSIST_MARK_PREVIOUS_OR_NONE, prev, NULL);
}

/* A restart must find exactly these extents marked (a -1 ends the list). */
static void assert_resumes(const struct persist_key *key, const char *name, uint64_t size,
                           const int64_t *want)
{
    struct bitmap *seen = NULL;
    uint64_t n = 0;

    ck_assert_int_eq(restart_view(key, name, size, &seen), PERSIST_PREV_OK);
    for (; want[n] >= 0; n++)
        ck_assert_msg(bitmap_test(seen, (uint64_t)want[n]), "extent %lld not marked",
                      (long long)want[n]);
    ck_assert_uint_eq(bitmap_count(seen), n);
    bitmap_free(seen);
}

static void assert_damaged(const struct persist_key *key, const char *name, uint64_t size)
{
    struct bitmap *seen = NULL;
    uint64_t marked;

    ck_assert_int_eq(
        restart_how(key, name, size, PERSIST_MARK_PREVIOUS_OR_NONE, &seen, &marked),
        PERSIST_PREV_DAMAGED);
    ck_assert_uint_eq(marked, 0);
    /* The job compares: with "previous or all" everything is marked too. */
    ck_assert_int_eq(
        restart_how(key, name, size, PERSIST_MARK_PREVIOUS_OR_ALL, &seen, &marked),
        PERSIST_PREV_DAMAGED);
    ck_assert_uint_eq(marked, (size + E - 1) / E);
}

static char *state_file(const struct persist_key *key, const char *suffix)
{
    return g_strdup_printf("%s/images/%llx-%llx%s", dir, (unsigned long long)key->dev,
                           (unsigned long long)key->ino, suffix);
}

static off_t file_size(const char *path)
{
    struct stat st;

    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

static void cut_file(const char *path, off_t by)
{
    ck_assert_int_eq(truncate(path, file_size(path) - by), 0);
}

static void flip_bit(const char *path, off_t off, unsigned bit)
{
    int fd = open(path, O_RDWR);
    uint8_t c;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, &c, 1, off), 1);
    c ^= (uint8_t)(1u << bit);
    ck_assert_int_eq(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

/* One image of 10 extents with extents 2 and 7 marked, closed. */
static void make_state(const struct persist_key *key, const char *name)
{
    bool had;
    struct persist *p = open_state(&had);
    struct bitmap *prev;
    enum persist_previous found;
    struct persist_image *pi =
        open_image(p, name, key, 10 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);

    bitmap_free(prev);
    ck_assert_int_eq(persist_write_begin(pi, 2 * E + 7, 1), 0);
    persist_write_end(pi, 2 * E + 7, 1);
    ck_assert_int_eq(persist_write_begin(pi, 7 * E, E), 0);
    persist_write_end(pi, 7 * E, E);
    persist_image_close(pi);
    persist_close(p);
    static const int64_t want[] = {2, 7, -1};
    assert_resumes(key, name, 10 * E, want);
}

static bool always_clean(void *ctx, uint64_t off, uint64_t len)
{
    return true;
}

static bool never_clean(void *ctx, uint64_t off, uint64_t len)
{
    return false;
}

START_TEST(test_first_pass_marks_everything)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 42);
    struct bitmap *prev;
    enum persist_previous found;

    ck_assert(!had);
    struct persist_image *pi =
        open_image(p, "vm1/disk.img", &k, 10 * E + 1, PERSIST_MARK_ALL, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_NONE);
    ck_assert_uint_eq(persist_image_marked(pi), 11);
    persist_image_close(pi);
    persist_close(p);

    static const int64_t want[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -1};
    assert_resumes(&k, "vm1/disk.img", 10 * E + 1, want);
}
END_TEST

START_TEST(test_no_state_is_none)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 42);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pi =
        open_image(p, "a.img", &k, 3 * E, PERSIST_MARK_PREVIOUS_OR_ALL, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_NONE);
    ck_assert_uint_eq(persist_image_marked(pi), 3);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_write_marks_before_returning)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 7);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pi =
        open_image(p, "a.img", &k, 64 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_NONE);
    ck_assert_uint_eq(persist_image_marked(pi), 0);
    /* A write across the boundary of extents 5 and 6, and one in 40. */
    ck_assert_int_eq(persist_write_begin(pi, 6 * E - 100, 200), 0);
    ck_assert_int_eq(persist_write_begin(pi, 40 * E + 5, 1), 0);
    /* On disk now, before the writes end: a crash here must find them. */
    static const int64_t want[] = {5, 6, 40, -1};
    assert_resumes(&k, "a.img", 64 * E, want);
    persist_write_end(pi, 6 * E - 100, 200);
    persist_write_end(pi, 40 * E + 5, 1);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_sweep_needs_quiet_clean_and_idle)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 9);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pi =
        open_image(p, "a.img", &k, 8 * E, PERSIST_MARK_ALL, &prev, &found);
    /* Not clean: nothing cleared however quiet. */
    for (int n = 0; n < 5; n++)
        ck_assert_int_eq(persist_image_sweep(pi, 2, never_clean, NULL), 0);
    ck_assert_uint_eq(persist_image_marked(pi), 8);
    /* A write in progress in extent 3 keeps it; a recent write in extent 4
     * keeps it until it has been quiet for two sweeps. */
    ck_assert_int_eq(persist_write_begin(pi, 3 * E, 10), 0);
    ck_assert_int_eq(persist_write_begin(pi, 4 * E, 10), 0);
    persist_write_end(pi, 4 * E, 10);
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 6);
    ck_assert_uint_eq(persist_image_marked(pi), 2);
    /* Two sweeps age extent 4; the third clears it. */
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 0);
    ck_assert_int_eq(persist_image_sweep(pi, 2, always_clean, NULL), 1); /* extent 4 */
    ck_assert_uint_eq(persist_image_marked(pi), 1);
    /* The disk says the same. */
    static const int64_t want3[] = {3, -1};
    assert_resumes(&k, "a.img", 8 * E, want3);
    persist_write_end(pi, 3 * E, 10);
    for (int n = 0; n < 3; n++)
        persist_image_sweep(pi, 2, always_clean, NULL);
    ck_assert_uint_eq(persist_image_marked(pi), 0);
    /* A cleared extent written again is marked on disk again. */
    ck_assert_int_eq(persist_write_begin(pi, 2 * E, 1), 0);
    persist_write_end(pi, 2 * E, 1);
    static const int64_t want2[] = {2, -1};
    assert_resumes(&k, "a.img", 8 * E, want2);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_state_follows_renames_and_names)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 11);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pi =
        open_image(p, "old.img", &k, 4 * E, PERSIST_MARK_ALL, &prev, &found);
    ck_assert_int_eq(persist_image_rename(pi, "dir/new name.img"), 0);
    persist_image_close(pi);
    persist_close(p);
    /* Found under the new name; under the old one it is not this image's
     * state, and is not trusted. */
    static const int64_t want[] = {0, 1, 2, 3, -1};
    assert_resumes(&k, "dir/new name.img", 4 * E, want);
    assert_damaged(&k, "old.img", 4 * E);
}
END_TEST

START_TEST(test_other_job_state_is_dropped)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(1, 5);
    struct bitmap *prev;
    enum persist_previous found;
    g_autofree char *err = NULL;

    struct persist_image *pi =
        open_image(p, "a.img", &k, E, PERSIST_MARK_ALL, &prev, &found);
    persist_image_close(pi);
    persist_close(p);
    ck_assert(persist_has_state(dir, "/src", "/tgt"));
    ck_assert(!persist_has_state(dir, "/src", "/elsewhere"));
    /* Another source or target: the old state must not be trusted. */
    ck_assert_int_eq(persist_open(dir, "/src", "/elsewhere", &p, &had, &err), 0);
    ck_assert(!had);
    pi = open_image(p, "a.img", &k, E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_NONE);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_old_format_is_no_state)
{
    g_autofree char *manifest = g_build_filename(dir, "manifest", NULL);
    g_autofree char *images = g_build_filename(dir, "images", NULL);
    g_autofree char *old_map = g_build_filename(images, "2a.map", NULL);
    struct persist_key k = key_of(1, 42);
    struct bitmap *prev;
    enum persist_previous found;
    bool had;

    /* What the first format left: a manifest of two lines, a map named by
     * the inode number. */
    ck_assert(g_file_set_contents(manifest, "source: /src\ntarget: /tgt\n", -1, NULL));
    ck_assert_int_eq(g_mkdir_with_parents(images, 0700), 0);
    ck_assert(g_file_set_contents(old_map, "mirrorfs-state 1\nino: 42\nname: a.img\n", -1,
                                  NULL));
    ck_assert(!persist_has_state(dir, "/src", "/tgt"));
    struct persist *p = open_state(&had);
    ck_assert(!had);
    ck_assert(!g_file_test(old_map, G_FILE_TEST_EXISTS));
    struct persist_image *pi =
        open_image(p, "a.img", &k, E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_NONE);
    persist_image_close(pi);
    persist_close(p);
    ck_assert(persist_has_state(dir, "/src", "/tgt"));
}
END_TEST

START_TEST(test_devices_are_separate)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key a = key_of(0x801, 12), b = key_of(0xfd00, 12);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pa =
        open_image(p, "a.img", &a, 8 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    struct persist_image *pb =
        open_image(p, "b.img", &b, 8 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(persist_write_begin(pa, 1 * E, 1), 0);
    persist_write_end(pa, 1 * E, 1);
    ck_assert_int_eq(persist_write_begin(pb, 6 * E, 1), 0);
    persist_write_end(pb, 6 * E, 1);
    persist_image_close(pa);
    persist_image_close(pb);
    persist_close(p);
    static const int64_t want_a[] = {1, -1}, want_b[] = {6, -1};
    assert_resumes(&a, "a.img", 8 * E, want_a);
    assert_resumes(&b, "b.img", 8 * E, want_b);
}
END_TEST

START_TEST(test_same_inode_on_another_device_is_not_none)
{
    struct persist_key a = key_of(0x801, 12), moved = key_of(0xfd01, 12);

    make_state(&a, "a.img");
    /* The same inode number under another device number, no state of its
     * own: perhaps this file, after a renumbering of devices.  Not "no
     * state", which a sync=none job would trust. */
    assert_damaged(&moved, "a.img", 10 * E);
}
END_TEST

START_TEST(test_map_cut_by_a_byte)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    ck_assert_int_eq(file_size(map), 2 * BLK);
    cut_file(map, 1);
    assert_damaged(&k, "a.img", 10 * E);
    /* Even where the image now needs no block at all. */
    assert_damaged(&k, "a.img", 0);
}
END_TEST

START_TEST(test_map_cut_by_a_block)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    cut_file(map, BLK);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_flipped_bit_in_map_block)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    /* Extent 3's bit: the map would say less than it did. */
    flip_bit(map, BLK, 3);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_flipped_bit_in_checksum)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    flip_bit(map, 2 * BLK - 1, 0);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_flipped_bit_in_header)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    flip_bit(map, 40, 6);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_flipped_bit_in_name_file)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *name = state_file(&k, ".name");

    make_state(&k, "a.img");
    flip_bit(name, 65, 0);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_name_file_lost)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *name = state_file(&k, ".name");

    make_state(&k, "a.img");
    ck_assert_int_eq(unlink(name), 0);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_map_emptied)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");

    make_state(&k, "a.img");
    ck_assert_int_eq(truncate(map, 0), 0);
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_another_name_is_damaged)
{
    struct persist_key k = key_of(3, 77);

    make_state(&k, "a.img");
    assert_damaged(&k, "b.img", 10 * E);
}
END_TEST

START_TEST(test_another_btime_is_damaged)
{
    struct persist_key k = key_of(3, 77), reborn = k;

    make_state(&k, "a.img");
    /* The same device and inode number, born later: another file. */
    reborn.btime_nsec++;
    assert_damaged(&reborn, "a.img", 10 * E);
}
END_TEST

START_TEST(test_map_shorter_than_image)
{
    struct persist_key k = key_of(3, 77);

    /* 10 extents: one block of 3840.  An image that grew past it behind
     * the mount's back (no write marked it) has no trustworthy map. */
    make_state(&k, "a.img");
    assert_damaged(&k, "a.img", 5000 * E);
    /* A shrunk image keeps what it had. */
    static const int64_t want[] = {2, -1};
    assert_resumes(&k, "a.img", 5 * E, want);
}
END_TEST

START_TEST(test_torn_rewrite_is_damaged)
{
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");
    g_autofree char *old = NULL, *now = NULL;
    gsize old_len, now_len;
    bool had;
    struct bitmap *prev;
    enum persist_previous found;

    make_state(&k, "a.img");
    ck_assert(g_file_get_contents(map, &old, &old_len, NULL));
    /* A resume rewrites the map under a new generation ... */
    struct persist *p = open_state(&had);
    struct persist_image *pi =
        open_image(p, "a.img", &k, 10 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_OK);
    bitmap_free(prev);
    persist_image_close(pi);
    persist_close(p);
    /* ... and a crash that left the new header with the old block is no
     * map. */
    ck_assert(g_file_get_contents(map, &now, &now_len, NULL));
    ck_assert_uint_eq(old_len, now_len);
    ck_assert(memcmp(old, now, BLK) != 0);
    memcpy(now + BLK, old + BLK, BLK);
    ck_assert(g_file_set_contents(map, now, (gssize)now_len, NULL));
    assert_damaged(&k, "a.img", 10 * E);
}
END_TEST

START_TEST(test_long_name_with_any_bytes)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(4, 99);
    size_t n = 64 << 10;
    g_autofree char *name = g_malloc(n + 1), *other = g_malloc(n + 1);
    struct bitmap *prev;
    enum persist_previous found;

    for (size_t i = 0; i < n; i++) {
        name[i] = (char)(1 + i % 255);
        other[i] = (char)(1 + (i + 1) % 255);
    }
    name[n] = other[n] = '\0';
    struct persist_image *pi =
        open_image(p, name, &k, 100 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(persist_write_begin(pi, 33 * E, 1), 0);
    persist_write_end(pi, 33 * E, 1);
    ck_assert_int_eq(persist_image_rename(pi, other), 0);
    persist_image_close(pi);
    persist_close(p);
    static const int64_t want[] = {33, -1};
    assert_resumes(&k, other, 100 * E, want);
    assert_damaged(&k, name, 100 * E);
    /* And back, through a reopen. */
    p = open_state(&had);
    pi = open_image(p, other, &k, 100 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(found, PERSIST_PREV_OK);
    bitmap_free(prev);
    ck_assert_int_eq(persist_image_rename(pi, name), 0);
    persist_image_close(pi);
    persist_close(p);
    assert_resumes(&k, name, 100 * E, want);
}
END_TEST

START_TEST(test_growth_is_resumed)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(5, 1234);
    struct bitmap *prev;
    enum persist_previous found;

    struct persist_image *pi = open_image(p, "grow.img", &k, 2 * E,
                                          PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    size_t small = persist_image_memory(pi);
    /* A guest writes far past the end (the sixth block of the map) and
     * just past it. */
    ck_assert_int_eq(persist_write_begin(pi, 20000 * E + 3, 2 * E), 0);
    ck_assert_int_eq(persist_write_begin(pi, 2 * E, 1), 0);
    static const int64_t want[] = {2, 20000, 20001, 20002, -1};
    assert_resumes(&k, "grow.img", 20002 * E + 4, want);
    persist_write_end(pi, 20000 * E + 3, 2 * E);
    persist_write_end(pi, 2 * E, 1);
    ck_assert_uint_gt(persist_image_memory(pi), small);
    /* The sweep works on the grown part too. */
    for (int n = 0; n < 5; n++)
        ck_assert_int_ge(persist_image_sweep(pi, 2, always_clean, NULL), 0);
    ck_assert_uint_eq(persist_image_marked(pi), 0);
    persist_image_close(pi);
    persist_close(p);
    static const int64_t none[] = {-1};
    assert_resumes(&k, "grow.img", 20002 * E + 4, none);
}
END_TEST

/* A change past the largest image a map holds (256 TiB) cannot be marked:
 * the state then says "compare everything", never "nothing there". */
START_TEST(test_past_the_largest_map_is_damaged)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(5, 77), big = key_of(5, 78);
    struct bitmap *prev;
    enum persist_previous found;
    const uint64_t cap = (1ull << 26) * E;

    struct persist_image *pi = open_image(p, "small.img", &k, 2 * E,
                                          PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(persist_write_begin(pi, cap + 5, 4096), 0);
    persist_write_end(pi, cap + 5, 4096);
    ck_assert_int_eq(restart_view(&k, "small.img", 2 * E, &prev), PERSIST_PREV_DAMAGED);
    persist_image_close(pi);

    /* Present at start already. */
    pi = open_image(p, "big.img", &big, cap + E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    ck_assert_int_eq(restart_view(&big, "big.img", cap + E, &prev), PERSIST_PREV_DAMAGED);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_failed_cold_write_is_retried)
{
    bool had;
    struct persist *p = open_state(&had);
    struct persist_key k = key_of(5, 4321);
    struct bitmap *prev;
    enum persist_previous found;
    struct rlimit old, lim;
    /* The first extent of the map's sixth block. */
    uint64_t far = 5 * 3840 * E;

    struct persist_image *pi =
        open_image(p, "a.img", &k, 2 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    /* The map file may not grow past three blocks: the write of the fourth
     * to the sixth fails. */
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4 * BLK;
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    ck_assert_int_lt(persist_write_begin(pi, far, 1), 0);
    persist_write_end(pi, far, 1);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    /* The next write into the extent does not take the failed one's mark
     * for written. */
    ck_assert_int_eq(persist_write_begin(pi, far, 1), 0);
    persist_write_end(pi, far, 1);
    static const int64_t want[] = {5 * 3840, -1};
    assert_resumes(&k, "a.img", far + 1, want);
    persist_image_close(pi);
    persist_close(p);
}
END_TEST

START_TEST(test_memory_follows_the_image)
{
    bool had;
    struct persist *p = open_state(&had);
    struct bitmap *prev;
    enum persist_previous found;
    static const struct {
        uint64_t size;
        enum persist_marks how;
        size_t max;
    } cases[] = {
        {4ull << 20, PERSIST_MARK_ALL, 16 << 10},
        {1ull << 30, PERSIST_MARK_ALL, 16 << 10},
        /* 262144 extents of 6 bytes, and the table of 1024 pages. */
        {1ull << 40, PERSIST_MARK_ALL, (262144 * 6) + (16 << 10)},
        {1ull << 40, PERSIST_MARK_PREVIOUS_OR_NONE, 16 << 10},
    };

    for (unsigned c = 0; c < G_N_ELEMENTS(cases); c++) {
        struct persist_key k = key_of(6, 100 + c);
        struct persist_image *pi =
            open_image(p, "m.img", &k, cases[c].size, cases[c].how, &prev, &found);
        size_t mem = persist_image_memory(pi);
        fprintf(stderr, "persist_image_memory: %llu bytes for %llu MiB, %s\n",
                (unsigned long long)mem, (unsigned long long)(cases[c].size >> 20),
                cases[c].how == PERSIST_MARK_ALL ? "all marked" : "none marked");
        ck_assert_uint_le(mem, cases[c].max);
        if (cases[c].how == PERSIST_MARK_ALL)
            ck_assert_uint_ge(mem, (cases[c].size + E - 1) / E * 6);
        persist_image_close(pi);
    }
    persist_close(p);
}
END_TEST

START_TEST(test_remove_forgets)
{
    bool had;
    struct persist_key k = key_of(3, 77);
    g_autofree char *map = state_file(&k, ".map");
    g_autofree char *name = state_file(&k, ".name");
    struct bitmap *prev;
    enum persist_previous found;

    make_state(&k, "a.img");
    struct persist *p = open_state(&had);
    struct persist_image *pi =
        open_image(p, "a.img", &k, 10 * E, PERSIST_MARK_PREVIOUS_OR_NONE, &prev, &found);
    bitmap_free(prev);
    persist_image_remove(pi);
    /* A rename racing with the removal leaves nothing behind. */
    ck_assert_int_eq(persist_image_rename(pi, "b.img"), 0);
    persist_image_close(pi);
    persist_close(p);
    ck_assert(!g_file_test(map, G_FILE_TEST_EXISTS));
    ck_assert(!g_file_test(name, G_FILE_TEST_EXISTS));
    ck_assert_int_eq(restart_view(&k, "a.img", 10 * E, &prev), PERSIST_PREV_NONE);
}
END_TEST

START_TEST(test_key_of_fd)
{
    g_autofree char *f = g_build_filename(dir, "f", NULL);
    struct persist_key a, b;
    struct stat st;

    ck_assert(g_file_set_contents(f, "x", 1, NULL));
    int fd = open(f, O_PATH | O_NOFOLLOW);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(persist_key_of_fd(fd, &a), 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_uint_eq(a.dev, st.st_dev);
    ck_assert_uint_eq(a.ino, st.st_ino);
    close(fd);
    /* The same file: the same key, birth time included. */
    fd = open(f, O_RDONLY);
    ck_assert_int_eq(persist_key_of_fd(fd, &b), 0);
    close(fd);
    ck_assert(memcmp(&a, &b, sizeof(a)) == 0);
    ck_assert_int_eq(persist_key_of_fd(-1, &b), -EBADF);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("persist");
    TCase *tc = tcase_create("state");
    TCase *dmg = tcase_create("damage");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_first_pass_marks_everything);
    tcase_add_test(tc, test_no_state_is_none);
    tcase_add_test(tc, test_write_marks_before_returning);
    tcase_add_test(tc, test_sweep_needs_quiet_clean_and_idle);
    tcase_add_test(tc, test_state_follows_renames_and_names);
    tcase_add_test(tc, test_other_job_state_is_dropped);
    tcase_add_test(tc, test_old_format_is_no_state);
    tcase_add_test(tc, test_devices_are_separate);
    tcase_add_test(tc, test_long_name_with_any_bytes);
    tcase_add_test(tc, test_growth_is_resumed);
    tcase_add_test(tc, test_failed_cold_write_is_retried);
    tcase_add_test(tc, test_memory_follows_the_image);
    tcase_add_test(tc, test_remove_forgets);
    tcase_add_test(tc, test_key_of_fd);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(dmg, setup, teardown);
    tcase_set_timeout(dmg, 60);
    tcase_add_test(dmg, test_same_inode_on_another_device_is_not_none);
    tcase_add_test(dmg, test_map_cut_by_a_byte);
    tcase_add_test(dmg, test_map_cut_by_a_block);
    tcase_add_test(dmg, test_flipped_bit_in_map_block);
    tcase_add_test(dmg, test_flipped_bit_in_checksum);
    tcase_add_test(dmg, test_flipped_bit_in_header);
    tcase_add_test(dmg, test_flipped_bit_in_name_file);
    tcase_add_test(dmg, test_name_file_lost);
    tcase_add_test(dmg, test_map_emptied);
    tcase_add_test(dmg, test_another_name_is_damaged);
    tcase_add_test(dmg, test_another_btime_is_damaged);
    tcase_add_test(dmg, test_map_shorter_than_image);
    tcase_add_test(dmg, test_torn_rewrite_is_damaged);
    tcase_add_test(dmg, test_past_the_largest_map_is_damaged);
    suite_add_tcase(s, dmg);

    return unit_run(s);
}
