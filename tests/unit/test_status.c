/* test_status.c - status rendering (text, JSON), parsing (keys, image lines),
 * and util.c. */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "util.h"
#include "unit.h"

/* A snapshot that owns its strings the way the daemon's does. */
static void fill_two_images(struct status_snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->phase = "bulk";
    s->pid = 4242;
    s->source = g_strdup("/var/lib/images");
    s->target = g_strdup("/mnt/new images");
    s->copy_mode = "background";
    s->images = 2;
    s->total_bytes = 3145728;
    s->copied_bytes = 1048576;
    s->dirty_bytes = 2031616;
    s->in_flight_bytes = 65536;
    s->transferred_bytes = 1114112;
    s->rate_bytes_per_s = 524288;
    s->eta_s = -1;
    s->guest_write_bytes = 4096;
    s->errors = 0;
    s->last_error = g_strdup("");
    s->state_dir = g_strdup("/var/lib/mirrorfs");
    s->exit_code = -1;
    s->speed_bytes_per_s = 20971520;
    s->active_copy_mode = "background";
    s->resumed = "state";
    s->resume_saved_bytes = 1048576;
    s->verifying = true;
    s->verify_checked_bytes = 2097152;
    s->verify_differing_bytes = 65536;
    s->mirrored = "data, namespace, metadata";
    s->outside_writes = 3;
    s->serving = g_strdup("/var/lib/images");
    s->pivot_pause_ms = -1;
    s->n_images = 2;
    s->image = g_new0(struct image_status, 2);
    s->image[0] =
        (struct image_status){g_strdup("vm1/disk.img"), "ready", 1048576, 1048576, 0, 0, 4096};
    s->image[1] =
        (struct image_status){g_strdup("vm 2.raw"), "bulk", 2097152, 0, 2031616, 65536, 65536};
}

static const char expected_text[] = "phase: bulk\n"
                                    "pid: 4242\n"
                                    "source: /var/lib/images\n"
                                    "target: /mnt/new images\n"
                                    "copy_mode: background\n"
                                    "images: 2\n"
                                    "total_bytes: 3145728\n"
                                    "copied_bytes: 1048576\n"
                                    "dirty_bytes: 2031616\n"
                                    "in_flight_bytes: 65536\n"
                                    "transferred_bytes: 1114112\n"
                                    "progress_percent: 33\n"
                                    "rate_bytes_per_s: 524288\n"
                                    "eta_s: -1\n"
                                    "guest_write_bytes: 4096\n"
                                    "errors: 0\n"
                                    "last_error: \n"
                                    "state_dir: /var/lib/mirrorfs\n"
                                    "exit_code: -1\n"
                                    "speed_bytes_per_s: 20971520\n"
                                    "active_copy_mode: background\n"
                                    "resumed: state\n"
                                    "resume_saved_bytes: 1048576\n"
                                    "verifying: yes\n"
                                    "verify_checked_bytes: 2097152\n"
                                    "verify_differing_bytes: 65536\n"
                                    "mirrored: data, namespace, metadata\n"
                                    "outside_writes: 3\n"
                                    "serving: /var/lib/images\n"
                                    "pivot_pause_ms: -1\n"
                                    "image: vm1/disk.img phase=ready size=1048576 "
                                    "copied=1048576 dirty=0 in_flight=0 granularity=4096\n"
                                    "image: vm 2.raw phase=bulk size=2097152 "
                                    "copied=0 dirty=2031616 in_flight=65536 "
                                    "granularity=65536\n";

START_TEST(test_text_exact)
{
    struct status_snapshot s;
    g_autofree char *text = NULL;

    fill_two_images(&s);
    text = status_format_text(&s);
    ck_assert_str_eq(text, expected_text);
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_text_finished)
{
    struct status_snapshot s;
    g_autofree char *text = NULL;

    fill_two_images(&s);
    s.phase = "completed";
    s.eta_s = 0;
    s.exit_code = 0;
    s.copied_bytes = s.total_bytes;
    text = status_format_text(&s);
    ck_assert_ptr_nonnull(strstr(text, "\neta_s: 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nexit_code: 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nprogress_percent: 100\n"));
    ck_assert(g_str_has_prefix(text, "phase: completed\n"));
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_key_order)
{
    static const char *const keys[] = {
        "phase",
        "pid",
        "source",
        "target",
        "copy_mode",
        "images",
        "total_bytes",
        "copied_bytes",
        "dirty_bytes",
        "in_flight_bytes",
        "transferred_bytes",
        "progress_percent",
        "rate_bytes_per_s",
        "eta_s",
        "guest_write_bytes",
        "errors",
        "last_error",
        "state_dir",
        "exit_code",
        "speed_bytes_per_s",
        "active_copy_mode",
        "resumed",
        "resume_saved_bytes",
        "verifying",
        "verify_checked_bytes",
        "verify_differing_bytes",
        "mirrored",
        "outside_writes",
        "serving",
        "pivot_pause_ms",
        "image",
        "image",
    };
    struct status_snapshot s;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    size_t n = G_N_ELEMENTS(keys);

    fill_two_images(&s);
    text = status_format_text(&s);
    lines = g_strsplit(text, "\n", -1);
    /* n lines, then the empty string after the final newline. */
    ck_assert_uint_eq(g_strv_length(lines), n + 1);
    for (size_t i = 0; i < n; i++) {
        g_autofree char *prefix = g_strconcat(keys[i], ": ", NULL);

        ck_assert_msg(g_str_has_prefix(lines[i], prefix),
                      "line %zu is \"%s\", want key %s", i, lines[i], keys[i]);
    }
    ck_assert_str_eq(lines[n], "");
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_text_escaping)
{
    struct status_snapshot s;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;

    fill_two_images(&s);
    g_free(s.image[1].name);
    s.image[1].name = g_strdup("evil\nphase: failed \"q\" 'x'\\");
    g_free(s.last_error);
    s.last_error = g_strdup("write: No space\nleft \\ on device");
    text = status_format_text(&s);
    lines = g_strsplit(text, "\n", -1);

    /* 30 keys + 2 images: an embedded newline must not add a line. */
    ck_assert_uint_eq(g_strv_length(lines), 33);
    ck_assert_str_eq(lines[16], "last_error: write: No space\\nleft \\\\ on device");
    ck_assert_str_eq(lines[31], "image: evil\\nphase: failed \"q\" 'x'\\\\ phase=bulk "
                                "size=2097152 copied=0 dirty=2031616 in_flight=65536 "
                                "granularity=65536");
    /* The forged "phase: failed" must not reach the start of a line. */
    for (guint i = 1; lines[i]; i++)
        ck_assert(!g_str_has_prefix(lines[i], "phase:"));
    status_snapshot_clear(&s);
}
END_TEST

static const char *obj_str(JsonObject *o, const char *key)
{
    ck_assert_msg(json_object_has_member(o, key), "missing key %s", key);
    return json_object_get_string_member(o, key);
}

static gint64 obj_int(JsonObject *o, const char *key)
{
    JsonNode *n = json_object_get_member(o, key);

    ck_assert_msg(n != NULL, "missing key %s", key);
    ck_assert_msg(JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64,
                  "key %s is not an integer", key);
    return json_node_get_int(n);
}

START_TEST(test_json_roundtrip)
{
    /* A quote, a backslash, a newline, and non-ASCII UTF-8. */
    static const char tricky[] = "dir/\"quoted\" back\\slash\nnewline caf\xc3\xa9 "
                                 "\xe6\x97\xa5\xe6\x9c\xac.img";
    struct status_snapshot s;
    g_autofree char *json = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    JsonObject *o;
    JsonArray *imgs;
    JsonObject *im;

    fill_two_images(&s);
    g_free(s.image[1].name);
    s.image[1].name = g_strdup(tricky);
    g_free(s.last_error);
    s.last_error = g_strdup("target: \"EIO\" \\ x");
    s.eta_s = 12;
    s.total_bytes = UINT64_C(1) << 62;
    s.copied_bytes = UINT64_C(1) << 61;
    json = status_format_json(&s);

    ck_assert_msg(json_parser_load_from_data(parser, json, -1, &err), "parse: %s",
                  err ? err->message : "?");
    ck_assert(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)));
    o = json_node_get_object(json_parser_get_root(parser));

    ck_assert_str_eq(obj_str(o, "phase"), "bulk");
    ck_assert_int_eq(obj_int(o, "pid"), 4242);
    ck_assert_str_eq(obj_str(o, "source"), "/var/lib/images");
    ck_assert_str_eq(obj_str(o, "target"), "/mnt/new images");
    ck_assert_str_eq(obj_str(o, "copy_mode"), "background");
    ck_assert_int_eq(obj_int(o, "total_bytes"), INT64_C(1) << 62);
    ck_assert_int_eq(obj_int(o, "copied_bytes"), INT64_C(1) << 61);
    ck_assert_int_eq(obj_int(o, "dirty_bytes"), 2031616);
    ck_assert_int_eq(obj_int(o, "in_flight_bytes"), 65536);
    ck_assert_int_eq(obj_int(o, "transferred_bytes"), 1114112);
    ck_assert_int_eq(obj_int(o, "progress_percent"), 50);
    ck_assert_int_eq(obj_int(o, "rate_bytes_per_s"), 524288);
    ck_assert_int_eq(obj_int(o, "eta_s"), 12);
    ck_assert_int_eq(obj_int(o, "guest_write_bytes"), 4096);
    ck_assert_int_eq(obj_int(o, "errors"), 0);
    ck_assert_str_eq(obj_str(o, "last_error"), "target: \"EIO\" \\ x");
    ck_assert_str_eq(obj_str(o, "state_dir"), "/var/lib/mirrorfs");
    ck_assert_int_eq(obj_int(o, "exit_code"), -1);
    ck_assert_int_eq(obj_int(o, "speed_bytes_per_s"), 20971520);
    ck_assert_str_eq(json_object_get_string_member(o, "active_copy_mode"), "background");
    ck_assert_str_eq(json_object_get_string_member(o, "resumed"), "state");
    ck_assert(json_object_get_boolean_member(o, "verifying"));
    ck_assert_int_eq(obj_int(o, "verify_differing_bytes"), 65536);
    ck_assert_str_eq(json_object_get_string_member(o, "mirrored"), "data, namespace, metadata");
    ck_assert_int_eq(obj_int(o, "outside_writes"), 3);

    ck_assert(JSON_NODE_HOLDS_ARRAY(json_object_get_member(o, "images")));
    imgs = json_object_get_array_member(o, "images");
    ck_assert_uint_eq(json_array_get_length(imgs), 2);
    im = json_array_get_object_element(imgs, 0);
    ck_assert_str_eq(obj_str(im, "name"), "vm1/disk.img");
    ck_assert_str_eq(obj_str(im, "phase"), "ready");
    ck_assert_int_eq(obj_int(im, "size"), 1048576);
    ck_assert_int_eq(obj_int(im, "copied"), 1048576);
    ck_assert_int_eq(obj_int(im, "dirty"), 0);
    ck_assert_int_eq(obj_int(im, "in_flight"), 0);
    ck_assert_int_eq(obj_int(im, "granularity"), 4096);
    im = json_array_get_object_element(imgs, 1);
    ck_assert_str_eq(obj_str(im, "name"), tricky);
    ck_assert_str_eq(obj_str(im, "phase"), "bulk");
    ck_assert_int_eq(obj_int(im, "size"), 2097152);
    ck_assert_int_eq(obj_int(im, "copied"), 0);
    ck_assert_int_eq(obj_int(im, "dirty"), 2031616);
    ck_assert_int_eq(obj_int(im, "in_flight"), 65536);
    ck_assert_int_eq(obj_int(im, "granularity"), 65536);

    /* Pretty printed: more than one line. */
    ck_assert_ptr_nonnull(strchr(json, '\n'));
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_json_invalid_utf8)
{
    struct status_snapshot s;
    g_autofree char *json = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    JsonArray *imgs;
    const char *name;

    fill_two_images(&s);
    g_free(s.image[0].name);
    s.image[0].name = g_strdup("bad\xff\xfename.img");
    json = status_format_json(&s);
    ck_assert(g_utf8_validate(json, -1, NULL));
    ck_assert(json_parser_load_from_data(parser, json, -1, NULL));
    imgs = json_object_get_array_member(
        json_node_get_object(json_parser_get_root(parser)), "images");
    name = json_object_get_string_member(json_array_get_object_element(imgs, 0), "name");
    ck_assert(g_str_has_prefix(name, "bad"));
    ck_assert(g_str_has_suffix(name, "name.img"));
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_parse_roundtrip)
{
    struct status_snapshot s;
    g_autofree char *text = NULL;
    GHashTable *t;

    fill_two_images(&s);
    g_free(s.last_error);
    s.last_error = g_strdup("line one\nline two \\n not a newline\\");
    g_free(s.source);
    s.source = g_strdup("/src: with colon");
    text = status_format_text(&s);
    t = status_parse_text(text);
    ck_assert_ptr_nonnull(t);

    /* 30 keys; the image lines are not in the table. */
    ck_assert_uint_eq(g_hash_table_size(t), 30);
    ck_assert(!g_hash_table_contains(t, "image"));
    ck_assert_str_eq(g_hash_table_lookup(t, "phase"), "bulk");
    ck_assert_str_eq(g_hash_table_lookup(t, "pid"), "4242");
    ck_assert_str_eq(g_hash_table_lookup(t, "source"), "/src: with colon");
    ck_assert_str_eq(g_hash_table_lookup(t, "target"), "/mnt/new images");
    ck_assert_str_eq(g_hash_table_lookup(t, "images"), "2");
    ck_assert_str_eq(g_hash_table_lookup(t, "progress_percent"), "33");
    ck_assert_str_eq(g_hash_table_lookup(t, "eta_s"), "-1");
    ck_assert_str_eq(g_hash_table_lookup(t, "last_error"),
                     "line one\nline two \\n not a newline\\");
    ck_assert_str_eq(g_hash_table_lookup(t, "state_dir"), "/var/lib/mirrorfs");
    ck_assert_str_eq(g_hash_table_lookup(t, "exit_code"), "-1");
    g_hash_table_unref(t);
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_parse_not_status)
{
    GHashTable *t;

    ck_assert_ptr_null(status_parse_text(NULL));
    ck_assert_ptr_null(status_parse_text(""));
    ck_assert_ptr_null(status_parse_text("hello world\n"));
    ck_assert_ptr_null(status_parse_text("pid: 1\nsource: /x\n"));
    /* A name that looks like a key, on an image line, does not count. */
    ck_assert_ptr_null(status_parse_text("image: phase: bulk\n"));

    /* No trailing newline, an empty value, an unknown future key. */
    t = status_parse_text("phase: ready\nfuture_key: 7\nlast_error:");
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(g_hash_table_lookup(t, "phase"), "ready");
    ck_assert_str_eq(g_hash_table_lookup(t, "future_key"), "7");
    ck_assert_str_eq(g_hash_table_lookup(t, "last_error"), "");
    g_hash_table_unref(t);
}
END_TEST

START_TEST(test_percent)
{
    struct status_snapshot s = {0};
    const uint64_t big = UINT64_C(1) << 63;

    ck_assert_uint_eq(status_progress_percent(&s), 100);
    s.copied_bytes = 5;
    ck_assert_uint_eq(status_progress_percent(&s), 100);

    s.total_bytes = 3;
    s.copied_bytes = 0;
    ck_assert_uint_eq(status_progress_percent(&s), 0);
    s.copied_bytes = 1;
    ck_assert_uint_eq(status_progress_percent(&s), 33);
    s.copied_bytes = 2;
    ck_assert_uint_eq(status_progress_percent(&s), 66);
    s.copied_bytes = 3;
    ck_assert_uint_eq(status_progress_percent(&s), 100);
    s.copied_bytes = 4;
    ck_assert_uint_eq(status_progress_percent(&s), 100);

    /* copied * 100 would overflow 64 bits here. */
    s.total_bytes = big - 1;
    s.copied_bytes = big - 2;
    ck_assert_uint_eq(status_progress_percent(&s), 99);
    s.total_bytes = big;
    s.copied_bytes = big / 2;
    ck_assert_uint_eq(status_progress_percent(&s), 50);
    s.copied_bytes = big / 100 * 37;
    ck_assert_uint_eq(status_progress_percent(&s), 36);
    s.total_bytes = UINT64_MAX;
    s.copied_bytes = UINT64_MAX - 1;
    ck_assert_uint_eq(status_progress_percent(&s), 99);
    s.copied_bytes = UINT64_MAX;
    ck_assert_uint_eq(status_progress_percent(&s), 100);
    s.copied_bytes = 1;
    ck_assert_uint_eq(status_progress_percent(&s), 0);
}
END_TEST

START_TEST(test_snapshot_clear)
{
    struct status_snapshot s;

    fill_two_images(&s);
    status_snapshot_clear(&s);
    ck_assert_ptr_null(s.image);
    ck_assert_ptr_null(s.source);
    ck_assert_ptr_null(s.last_error);
    ck_assert_uint_eq(s.n_images, 0);
    /* Clearing twice is harmless. */
    status_snapshot_clear(&s);
}
END_TEST

/* The image lines of a text form, parsed, in order; the lines themselves
 * are kept in *lines, which the parsed fields point into. */
static GArray *parse_image_lines(const char *text, char ***lines)
{
    GArray *out = g_array_new(FALSE, FALSE, sizeof(struct status_image_line));

    *lines = g_strsplit(text, "\n", -1);
    for (char **l = *lines; *l; l++) {
        bool is_image = g_str_has_prefix(*l, "image: ");
        struct status_image_line im;

        ck_assert_msg(status_parse_image_line(*l, &im) == is_image, "%s: \"%s\"",
                      is_image ? "not parsed" : "parsed", *l);
        if (is_image)
            g_array_append_val(out, im);
    }
    return out;
}

START_TEST(test_image_line_roundtrip)
{
    /* Spaces, a forged field, escapes, quotes, UTF-8, bytes that are not
     * UTF-8, an empty name and a trailing backslash. */
    static const char *const names[] = {
        "vm1/disk.img",
        "vm 2.raw",
        "a phase=failed size=1 copied=2 dirty=3.img",
        "line\nbreak \\n and \\\\ \"q\" 'x'",
        "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.img",
        "bad\xff\xfe name",
        "",
        "ends in \\",
    };
    static const char *const phases[] = {"bulk", "ready", "draining", "completed"};
    const size_t n = G_N_ELEMENTS(names);
    struct status_snapshot s;
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    g_autoptr(GArray) parsed = NULL;

    fill_two_images(&s);
    for (uint64_t i = 0; i < s.n_images; i++)
        g_free(s.image[i].name);
    g_free(s.image);
    s.n_images = n;
    s.image = g_new0(struct image_status, n);
    for (size_t i = 0; i < n; i++)
        s.image[i] = (struct image_status){
            .name = g_strdup(names[i]),
            .phase = phases[i % G_N_ELEMENTS(phases)],
            .size = (UINT64_C(1) << 40) + i,
            .copied = i * 4096,
            .dirty = i == 0 ? UINT64_MAX : i,
            .in_flight = 65536 * i,
            .granularity = UINT64_C(1) << (12 + i),
        };
    text = status_format_text(&s);
    parsed = parse_image_lines(text, &lines);

    ck_assert_uint_eq(parsed->len, n);
    for (size_t i = 0; i < n; i++) {
        const struct status_image_line *im =
            &g_array_index(parsed, struct status_image_line, i);
        g_autofree char *name = status_unescape(im->name);

        ck_assert_str_eq(name, names[i]);
        /* Escaped, the name has no newline: one image, one line. */
        ck_assert_ptr_null(strchr(im->name, '\n'));
        ck_assert_str_eq(im->phase, s.image[i].phase);
        ck_assert_uint_eq(im->size, s.image[i].size);
        ck_assert_uint_eq(im->copied, s.image[i].copied);
        ck_assert_uint_eq(im->dirty, s.image[i].dirty);
        ck_assert_uint_eq(im->in_flight, s.image[i].in_flight);
        ck_assert_uint_eq(im->granularity, s.image[i].granularity);
    }
    status_snapshot_clear(&s);
}
END_TEST

START_TEST(test_image_line_malformed)
{
    static const char *const bad[] = {
        "",
        "phase: bulk",
        "images: 2",
        "image:",
        "image: ",
        "image: vm.img",
        "image: vm.img size=1 copied=0 dirty=1",
        "image:vm.img phase=bulk size=1",
        " image: vm.img phase=bulk size=1",
        "Image: vm.img phase=bulk size=1",
        "image: vm.img phase:bulk size=1",
        "image: phase=bulk size=1",
    };
    struct status_image_line im;

    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *line = g_strdup(bad[i]);

        ck_assert_msg(!status_parse_image_line(line, &im), "accepted: \"%s\"", bad[i]);
    }
}
END_TEST

START_TEST(test_image_line_lenient)
{
    /* A newer daemon's extra field is skipped, a missing one reads 0, and
     * the last " phase=" is the field, not the name's. */
    char line[] = "image: x phase=y phase=ready future=7 size=10 copied=4 flag";
    struct status_image_line im;

    ck_assert(status_parse_image_line(line, &im));
    ck_assert_str_eq(im.name, "x phase=y");
    ck_assert_str_eq(im.phase, "ready");
    ck_assert_uint_eq(im.size, 10);
    ck_assert_uint_eq(im.copied, 4);
    ck_assert_uint_eq(im.dirty, 0);
    ck_assert_uint_eq(im.in_flight, 0);
    ck_assert_uint_eq(im.granularity, 0);
}
END_TEST

/* ---- util.c ----------------------------------------------------------- */

static const struct {
    const char *in;
    int rc;
    uint64_t val;
} size_cases[] = {
    {"0", 0, 0},
    {"65536", 0, 65536},
    {"64K", 0, 65536},
    {"64k", 0, 65536},
    {"64KiB", 0, 65536},
    {"64kib", 0, 65536},
    {"64KB", 0, 65536},
    {"64B", 0, 64},
    {"16M", 0, 16u << 20},
    {"1G", 0, UINT64_C(1) << 30},
    {"2T", 0, UINT64_C(2) << 40},
    {"007", 0, 7},
    {"18446744073709551615", 0, UINT64_MAX},
    {"16777215T", 0, UINT64_C(16777215) << 40},
    {"", -EINVAL, 0},
    {"K", -EINVAL, 0},
    {"-1", -EINVAL, 0},
    {"+1", -EINVAL, 0},
    {" 1", -EINVAL, 0},
    {"1 ", -EINVAL, 0},
    {"1.5M", -EINVAL, 0},
    {"12Q", -EINVAL, 0},
    {"64iB", -EINVAL, 0},
    {"64Ki", -EINVAL, 0},
    {"64KK", -EINVAL, 0},
    {"64KiBx", -EINVAL, 0},
    {"0x10", -EINVAL, 0},
    {"18446744073709551616", -ERANGE, 0},
    {"99999999999999999999999", -ERANGE, 0},
    {"16777216T", -ERANGE, 0},
    {"17179869184G", -ERANGE, 0},
};

START_TEST(test_parse_size)
{
    uint64_t v = 12345;
    int rc = parse_size(size_cases[_i].in, &v);

    ck_assert_msg(rc == size_cases[_i].rc, "parse_size(\"%s\") = %d, want %d",
                  size_cases[_i].in, rc, size_cases[_i].rc);
    if (rc == 0)
        ck_assert_uint_eq(v, size_cases[_i].val);
    else
        ck_assert_uint_eq(v, 12345); /* untouched on error */
}
END_TEST

START_TEST(test_format_size)
{
    static const struct {
        uint64_t n;
        const char *out;
    } cases[] = {
        {0, "0"},
        {100, "100"},
        {1023, "1023"},
        {1024, "1K"},
        {65536, "64K"},
        {1 << 20, "1M"},
        {1536 << 10, "1536K"},
        {(UINT64_C(3) << 30) + 1, "3221225473"},
        {UINT64_C(1) << 30, "1G"},
        {UINT64_C(5) << 40, "5T"},
        {UINT64_C(1) << 60, "1048576T"},
        {UINT64_MAX, "18446744073709551615"},
    };
    char buf[24];

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        uint64_t back = 0;

        ck_assert_str_eq(format_size(cases[i].n, buf), cases[i].out);
        /* The exact form always parses back to the same number. */
        ck_assert_int_eq(parse_size(buf, &back), 0);
        ck_assert_uint_eq(back, cases[i].n);
    }
}
END_TEST

START_TEST(test_format_size_human)
{
    static const struct {
        uint64_t n;
        const char *out;
    } cases[] = {
        {0, "0 B"},
        {1023, "1023 B"},
        {1024, "1.0 KiB"},
        {1536, "1.5 KiB"},
        {UINT64_C(1288490189), "1.2 GiB"},
        {UINT64_C(310) << 20, "310 MiB"},
        {(UINT64_C(1) << 30) - 1, "1.0 GiB"},
        {UINT64_MAX, "16.0 EiB"},
    };
    char buf[16];

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
        ck_assert_str_eq(format_size_human(cases[i].n, buf), cases[i].out);
}
END_TEST

START_TEST(test_path_is_within)
{
    /* clang-format off */
    static const struct {
        const char *a, *b;
        bool within;
    } cases[] = {
        {"/a/b", "/a/b", true},
        {"/a/b", "/a/b/c", true},
        {"/a/b", "/a/b/c/d", true},
        {"/a/b", "/a/bc", false},
        {"/a/b", "/a", false},
        {"/a/b", "/a/", false},
        {"/a/b", "/x/a/b", false},
        {"/a/bc", "/a/b", false},
        {"/", "/", true},
        {"/", "/anything", true},
        {"/", "/a/b", true},
        {"/a/b/", "/a/b/c", true},
        {"/a/b/", "/a/bc", false},
    };
    /* clang-format on */

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
        ck_assert_msg(path_is_within(cases[i].a, cases[i].b) == cases[i].within,
                      "path_is_within(\"%s\", \"%s\") != %d", cases[i].a, cases[i].b,
                      cases[i].within);
}
END_TEST

START_TEST(test_now_ns)
{
    uint64_t a = now_ns();
    uint64_t b = now_ns();

    ck_assert_uint_gt(a, 0);
    ck_assert_uint_ge(b, a);
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("status");
    TCase *tu = tcase_create("util");

    tcase_add_test(tc, test_text_exact);
    tcase_add_test(tc, test_text_finished);
    tcase_add_test(tc, test_key_order);
    tcase_add_test(tc, test_text_escaping);
    tcase_add_test(tc, test_json_roundtrip);
    tcase_add_test(tc, test_json_invalid_utf8);
    tcase_add_test(tc, test_parse_roundtrip);
    tcase_add_test(tc, test_parse_not_status);
    tcase_add_test(tc, test_percent);
    tcase_add_test(tc, test_snapshot_clear);
    tcase_add_test(tc, test_image_line_roundtrip);
    tcase_add_test(tc, test_image_line_malformed);
    tcase_add_test(tc, test_image_line_lenient);
    suite_add_tcase(s, tc);

    tcase_add_loop_test(tu, test_parse_size, 0, (int)G_N_ELEMENTS(size_cases));
    tcase_add_test(tu, test_format_size);
    tcase_add_test(tu, test_format_size_human);
    tcase_add_test(tu, test_path_is_within);
    tcase_add_test(tu, test_now_ns);
    suite_add_tcase(s, tu);
    return s;
}

int main(void)
{
    return unit_run(status_suite());
}
