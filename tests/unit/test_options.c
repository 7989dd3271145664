/* Unit tests for options.c: parsing, validation and the chunk size. */
#include "config.h"

#include <check.h>
#include <fuse_lowlevel.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "unit.h"

/* Parse a NULL-terminated argv; returns the rc, fills opts and *err, and
 * leaves what libfuse gets in *left (space separated). */
static int parse(struct mirror_options *o, char **err, char **left, ...)
{
    GPtrArray *v = g_ptr_array_new();
    va_list ap;
    const char *a;

    g_ptr_array_add(v, "mirrorfs");
    va_start(ap, left);
    while ((a = va_arg(ap, const char *)) != NULL)
        g_ptr_array_add(v, (gpointer)a);
    va_end(ap);
    struct fuse_args args = FUSE_ARGS_INIT((int)v->len, (char **)v->pdata);
    int rc = options_parse(&args, o, err);
    if (left) {
        GString *s = g_string_new(NULL);
        for (int i = 1; i < args.argc; i++)
            g_string_append_printf(s, "%s%s", i > 1 ? " " : "", args.argv[i]);
        *left = g_string_free(s, FALSE);
    }
    fuse_opt_free_args(&args);
    g_ptr_array_free(v, TRUE);
    return rc;
}

START_TEST(test_defaults)
{
    struct mirror_options o;
    g_autofree char *err = NULL, *left = NULL;

    ck_assert_int_eq(parse(&o, &err, &left, "-o", "target=/t", "/src", "/mnt", NULL), 0);
    ck_assert_ptr_null(err);
    ck_assert_str_eq(o.source, "/src");
    ck_assert_str_eq(o.target, "/t");
    ck_assert_ptr_null(o.state_dir);
    ck_assert_uint_eq(o.granularity, 0); /* auto */
    ck_assert_uint_eq(o.buf_size, 16 * 1024 * 1024);
    ck_assert_uint_eq(o.workers, 4);
    ck_assert_uint_eq(o.threads, 0); /* auto */
    ck_assert_uint_eq(o.speed, 0);
    ck_assert_int_eq(o.copy_mode, COPY_MODE_BACKGROUND);
    ck_assert_int_eq(o.sync, SYNC_FULL);
    ck_assert_int_eq(o.on_target_error, ERROR_ACTION_REPORT);
    ck_assert_int_eq(o.on_unmount, UNMOUNT_COMPLETE);
    ck_assert(!o.overwrite);
    /* SOURCE is consumed; MOUNTPOINT is left for fuse_parse_cmdline. */
    ck_assert_str_eq(left, "/mnt");
    options_clear(&o);
}
END_TEST

START_TEST(test_long_and_short_forms)
{
    struct mirror_options o;
    g_autofree char *err = NULL, *left = NULL;

    ck_assert_int_eq(parse(&o, &err, &left, "--target=/t", "--granularity=4K",
                           "-o", "workers=7,threads=3,buf_size=1M,sync=none,on_unmount=cancel",
                           "-o", "on_target_error=stop,on_source_error=ignore,overwrite",
                           "--state_dir=/s", "-f", "-o", "allow_other", "/src", "/mnt", NULL),
                     0);
    ck_assert_str_eq(o.target, "/t");
    ck_assert_str_eq(o.state_dir, "/s");
    ck_assert_uint_eq(o.granularity, 4096);
    ck_assert_uint_eq(o.workers, 7);
    ck_assert_uint_eq(o.threads, 3);
    ck_assert_uint_eq(o.buf_size, 1024 * 1024);
    ck_assert_int_eq(o.sync, SYNC_NONE);
    ck_assert_int_eq(o.on_unmount, UNMOUNT_CANCEL);
    ck_assert_int_eq(o.on_target_error, ERROR_ACTION_STOP);
    ck_assert_int_eq(o.on_source_error, ERROR_ACTION_IGNORE);
    ck_assert(o.overwrite);
    /* FUSE's own options pass through untouched. */
    ck_assert_ptr_nonnull(strstr(left, "-f"));
    ck_assert_ptr_nonnull(strstr(left, "allow_other"));
    ck_assert_ptr_null(strstr(left, "workers"));
    options_clear(&o);
}
END_TEST

struct bad_case {
    const char *opt;
    const char *expect; /* substring of the error */
};

static const struct bad_case bad_cases[] = {
    {"granularity=3K", "granularity=3K"},
    {"granularity=2K", "power of two"},
    {"granularity=128M", "power of two"},
    {"granularity=abc", "granularity=abc"},
    {"workers=0", "workers=0"},
    {"workers=65", "workers=65"},
    {"workers=-1", "workers=-1"},
    {"workers=2x", "workers=2x"},
    {"threads=0", "threads=0"},
    {"threads=1025", "expected auto or a number from 1 to 1024"},
    {"threads=many", "threads=many"},
    {"granularity=automatic", "granularity=automatic"},
    {"buf_size=abc", "buf_size=abc"},
    {"buf_size=1K", "buf_size=1K"},
    {"sync=partial", "expected full|none"},
    {"on_unmount=later", "expected complete|cancel"},
    {"copy_mode=sometimes", "copy_mode=sometimes"},
    {"on_target_error=panic", "report|ignore|stop"},
    {"on_unmount=later", "complete|cancel"},
    {"speed=fast", "speed=fast"},
    {"target=", "empty"},
};

START_TEST(test_bad_values)
{
    const struct bad_case *c = &bad_cases[_i];
    struct mirror_options o;
    g_autofree char *err = NULL;
    g_autofree char *opt = g_strconcat(c->opt, g_str_has_prefix(c->opt, "target=") ? "" : ",target=/t", NULL);

    ck_assert_int_eq(parse(&o, &err, NULL, "-o", opt, "/src", "/mnt", NULL), -EINVAL);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, c->expect), "error for %s was '%s'", c->opt, err);
    ck_assert_ptr_null(strchr(err, '\n'));
    /* The choices listed are the option's own, nothing more. */
    if (strstr(c->expect, "expected "))
        ck_assert_msg(g_str_has_suffix(err, c->expect), "error for %s was '%s'", c->opt, err);
}
END_TEST

START_TEST(test_missing_arguments)
{
    struct mirror_options o;
    g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;

    /* No target: an idle mount (a plain passthrough until a job starts). */
    ck_assert_int_eq(parse(&o, &e1, NULL, "/src", "/mnt", NULL), 0);
    ck_assert_ptr_null(o.target);
    options_clear(&o);
    ck_assert_int_eq(parse(&o, &e2, NULL, "-o", "target=/t", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e2, "missing SOURCE"));
    ck_assert_int_eq(parse(&o, &e3, NULL, "-o", "target=/t", "/src", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e3, "missing MOUNTPOINT"));
    ck_assert_int_eq(parse(&o, &e4, NULL, "-o", "target=/t", "/a", "/b", "/c", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e4, "/c: unexpected argument"));
}
END_TEST

START_TEST(test_help_needs_no_arguments)
{
    struct mirror_options o;
    g_autofree char *err = NULL;

    ck_assert_int_eq(parse(&o, &err, NULL, "--help", NULL), 0);
    ck_assert(o.show_help);
    options_clear(&o);
}
END_TEST

START_TEST(test_copy_modes)
{
    struct mirror_options o;
    g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL;
    enum copy_mode m;

    ck_assert_int_eq(parse(&o, &e1, NULL, "-o", "target=/t,copy_mode=write-blocking", "/s",
                           "/m", NULL),
                     0);
    ck_assert_int_eq(o.copy_mode, COPY_MODE_WRITE_BLOCKING);
    ck_assert_uint_eq(o.auto_after_s, 10);
    options_clear(&o);
    ck_assert_int_eq(parse(&o, &e2, NULL, "-o", "target=/t,copy_mode=auto,auto_after=3", "/s",
                           "/m", NULL),
                     0);
    ck_assert_int_eq(o.copy_mode, COPY_MODE_AUTO);
    ck_assert_uint_eq(o.auto_after_s, 3);
    options_clear(&o);
    ck_assert_int_eq(parse(&o, &e3, NULL, "-o", "target=/t,auto_after=0", "/s", "/m", NULL),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(e3, "auto_after=0"));
    ck_assert_int_eq(copy_mode_parse("auto", &m), 0);
    ck_assert_int_eq(m, COPY_MODE_AUTO);
    ck_assert_int_eq(copy_mode_parse("background", &m), 0);
    ck_assert_int_eq(m, COPY_MODE_BACKGROUND);
    ck_assert_int_eq(copy_mode_parse("blocking", &m), -EINVAL);
}
END_TEST

START_TEST(test_speed)
{
    struct mirror_options o;
    g_autofree char *err = NULL;

    ck_assert_int_eq(parse(&o, &err, NULL, "-o", "target=/t,speed=20M", "/s", "/m", NULL), 0);
    ck_assert_uint_eq(o.speed, 20u << 20);
    options_clear(&o);
    ck_assert_int_eq(parse(&o, &err, NULL, "--speed=0", "--target=/t", "/s", "/m", NULL), 0);
    ck_assert_uint_eq(o.speed, 0);
    options_clear(&o);
}
END_TEST

START_TEST(test_big_granularity_grows_default_buffer)
{
    struct mirror_options o;
    g_autofree char *e1 = NULL, *e2 = NULL;

    ck_assert_int_eq(parse(&o, &e1, NULL, "-o", "target=/t,granularity=64M", "/s", "/m", NULL),
                     0);
    ck_assert_uint_eq(o.buf_size, 64u << 20);
    options_clear(&o);
    /* An explicit buffer smaller than a granule is still an error. */
    ck_assert_int_eq(parse(&o, &e2, NULL, "-o", "target=/t,granularity=64M,buf_size=16M",
                           "/s", "/m", NULL),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(e2, "smaller than the granularity"));
}
END_TEST

START_TEST(test_chunk_size)
{
    struct mirror_options o = {.granularity = 64 * 1024, .buf_size = 16 << 20, .workers = 4};

    ck_assert_uint_eq(options_chunk_size(&o), 1 << 20); /* capped at 1 MiB */
    o.buf_size = 1 << 20;
    ck_assert_uint_eq(options_chunk_size(&o), 256 * 1024);
    o.buf_size = 200 * 1024;
    ck_assert_uint_eq(options_chunk_size(&o), 64 * 1024); /* 50K rounds up to a granule */
    o.granularity = 4 << 20;
    o.buf_size = 16 << 20;
    ck_assert_uint_eq(options_chunk_size(&o), 4 << 20); /* a granule is never split */

    /* A first pass moves up to 4 MiB at a time, within the same budget. */
    o.granularity = 64 * 1024;
    ck_assert_uint_eq(options_bulk_chunk_size(&o), 4 << 20);
    o.buf_size = 64 << 20;
    ck_assert_uint_eq(options_bulk_chunk_size(&o), 4 << 20); /* capped at 4 MiB */
    ck_assert_uint_eq(options_chunk_size(&o), 1 << 20);
    o.buf_size = 1 << 20;
    ck_assert_uint_eq(options_bulk_chunk_size(&o), 256 * 1024); /* as the other one */
    o.granularity = 8 << 20;
    o.buf_size = 16 << 20;
    ck_assert_uint_eq(options_bulk_chunk_size(&o), 8 << 20); /* a granule is never split */
}
END_TEST

START_TEST(test_auto_granularity)
{
    struct mirror_options o;
    g_autofree char *err = NULL, *e2 = NULL;

    ck_assert_int_eq(parse(&o, &err, NULL, "-o", "target=/t,granularity=auto", "/s", "/m", NULL),
                     0);
    ck_assert_uint_eq(o.granularity, 0);
    /* 4K while the image has at most 2^24 granules (64 GiB)... */
    ck_assert_uint_eq(options_image_granularity(&o, 1), 4096);
    ck_assert_uint_eq(options_image_granularity(&o, 1ull << 30), 4096);
    ck_assert_uint_eq(options_image_granularity(&o, 64ull << 30), 4096);
    /* ...then doubling, so that the maps stay at 2^24 bits... */
    ck_assert_uint_eq(options_image_granularity(&o, (64ull << 30) + 1), 8192);
    ck_assert_uint_eq(options_image_granularity(&o, 100ull << 30), 8192);
    ck_assert_uint_eq(options_image_granularity(&o, 1ull << 40), 64 * 1024);
    /* ...up to 64K; beyond 1 TiB the maps grow instead. */
    ck_assert_uint_eq(options_image_granularity(&o, 16ull << 40), 64 * 1024);
    /* An image added empty: its size to come is unknown. */
    ck_assert_uint_eq(options_image_granularity(&o, 0), 64 * 1024);
    /* A chunk always holds the largest granule auto may choose. */
    o.buf_size = 64 * 1024;
    o.workers = 4;
    ck_assert_uint_eq(options_chunk_size(&o), 64 * 1024);
    options_clear(&o);

    /* A granularity that is given applies to every image. */
    ck_assert_int_eq(parse(&o, &err, NULL, "-o", "target=/t,granularity=16K", "/s", "/m", NULL),
                     0);
    ck_assert_uint_eq(options_image_granularity(&o, 1ull << 30), 16384);
    ck_assert_uint_eq(options_image_granularity(&o, 0), 16384);
    options_clear(&o);

    /* A buffer that cannot hold what auto may choose is refused. */
    ck_assert_int_eq(parse(&o, &e2, NULL, "-o", "target=/t,buf_size=32K", "/s", "/m", NULL),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(e2, "smaller than the granularity"));
}
END_TEST

static Suite *options_suite(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_long_and_short_forms);
    tcase_add_loop_test(tc, test_bad_values, 0, G_N_ELEMENTS(bad_cases));
    tcase_add_test(tc, test_missing_arguments);
    tcase_add_test(tc, test_help_needs_no_arguments);
    tcase_add_test(tc, test_copy_modes);
    tcase_add_test(tc, test_chunk_size);
    tcase_add_test(tc, test_auto_granularity);
    tcase_add_test(tc, test_big_granularity_grows_default_buffer);
    tcase_add_test(tc, test_speed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return unit_run(options_suite());
}
