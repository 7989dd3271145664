/* status.c - the job's status as text and JSON, and the text form parsed back
 * (its keys, and its image lines). */
#include "config.h"

#include "status.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <string.h>

unsigned status_progress_percent(const struct status_snapshot *s)
{
    if (s->total_bytes == 0 || s->copied_bytes >= s->total_bytes)
        return 100;
    /* copied * 100 overflows 64 bits above 2^57 bytes; 128 bits cannot. */
    return (unsigned)(((unsigned __int128)s->copied_bytes * 100) / s->total_bytes);
}

/* Append v so that it stays on one line and status_parse_text() can undo it:
 * only the newline and the backslash are escaped, everything else (spaces,
 * quotes, UTF-8) is written as is, for people and for `cut`/`sed`. */
static void append_escaped(GString *out, const char *v)
{
    if (!v)
        return;
    for (; *v; v++) {
        if (*v == '\n')
            g_string_append(out, "\\n");
        else if (*v == '\\')
            g_string_append(out, "\\\\");
        else
            g_string_append_c(out, *v);
    }
}

static void append_str(void *out, const char *key, const char *v)
{
    g_string_append(out, key);
    g_string_append(out, ": ");
    append_escaped(out, v);
    g_string_append_c(out, '\n');
}

static void append_u64(void *out, const char *key, uint64_t v)
{
    g_string_append_printf(out, "%s: %" G_GUINT64_FORMAT "\n", key, (guint64)v);
}

static void append_i64(void *out, const char *key, int64_t v)
{
    g_string_append_printf(out, "%s: %" G_GINT64_FORMAT "\n", key, (gint64)v);
}

/* One rendering's way of writing a key: text or JSON. */
struct emitter {
    void (*str)(void *ctx, const char *key, const char *v);
    void (*u64)(void *ctx, const char *key, uint64_t v);
    void (*i64)(void *ctx, const char *key, int64_t v);
    void (*flag)(void *ctx, const char *key, bool v);
    bool with_image_count; /* JSON: "images" is the array instead */
};

/* Every key, in the order that is part of the interface (mirrorfs(1), "THE
 * .mirror DIRECTORY"): keys added later go at the end, never in between. */
static void emit_keys(const struct status_snapshot *s, const struct emitter *e, void *ctx)
{
    e->str(ctx, "phase", s->phase);
    e->i64(ctx, "pid", s->pid);
    e->str(ctx, "source", s->source);
    e->str(ctx, "target", s->target);
    e->str(ctx, "copy_mode", s->copy_mode);
    if (e->with_image_count)
        e->u64(ctx, "images", s->images);
    e->u64(ctx, "total_bytes", s->total_bytes);
    e->u64(ctx, "copied_bytes", s->copied_bytes);
    e->u64(ctx, "dirty_bytes", s->dirty_bytes);
    e->u64(ctx, "in_flight_bytes", s->in_flight_bytes);
    e->u64(ctx, "transferred_bytes", s->transferred_bytes);
    e->u64(ctx, "progress_percent", status_progress_percent(s));
    e->u64(ctx, "rate_bytes_per_s", s->rate_bytes_per_s);
    e->i64(ctx, "eta_s", s->eta_s < 0 ? -1 : s->eta_s);
    e->u64(ctx, "guest_write_bytes", s->guest_write_bytes);
    e->u64(ctx, "errors", s->errors);
    e->str(ctx, "last_error", s->last_error);
    e->str(ctx, "state_dir", s->state_dir);
    e->i64(ctx, "exit_code", s->exit_code);
    e->u64(ctx, "speed_bytes_per_s", s->speed_bytes_per_s);
    e->str(ctx, "active_copy_mode", s->active_copy_mode);
    e->str(ctx, "resumed", s->resumed);
    e->u64(ctx, "resume_saved_bytes", s->resume_saved_bytes);
    e->flag(ctx, "verifying", s->verifying);
    e->u64(ctx, "verify_checked_bytes", s->verify_checked_bytes);
    e->u64(ctx, "verify_differing_bytes", s->verify_differing_bytes);
    e->str(ctx, "mirrored", s->mirrored);
    e->u64(ctx, "outside_writes", s->outside_writes);
    e->str(ctx, "serving", s->serving ? s->serving : "");
    e->i64(ctx, "pivot_pause_ms", s->pivot_pause_ms);
}

static void text_flag(void *ctx, const char *key, bool v)
{
    append_str(ctx, key, v ? "yes" : "no");
}

static const struct emitter text_emitter = {
    .str = append_str,
    .u64 = append_u64,
    .i64 = append_i64,
    .flag = text_flag,
    .with_image_count = true,
};

char *status_format_text(const struct status_snapshot *s)
{
    GString *out = g_string_sized_new(1024);

    emit_keys(s, &text_emitter, out);
    for (uint64_t i = 0; i < s->n_images; i++) {
        const struct image_status *im = &s->image[i];

        g_string_append(out, "image: ");
        append_escaped(out, im->name);
        g_string_append(out, " phase=");
        append_escaped(out, im->phase);
        g_string_append_printf(out,
                               " size=%" G_GUINT64_FORMAT " copied=%" G_GUINT64_FORMAT
                               " dirty=%" G_GUINT64_FORMAT " in_flight=%" G_GUINT64_FORMAT
                               " granularity=%" G_GUINT64_FORMAT "\n",
                               (guint64)im->size, (guint64)im->copied, (guint64)im->dirty,
                               (guint64)im->in_flight, (guint64)im->granularity);
    }
    return g_string_free(out, FALSE);
}

/* JSON numbers go through gint64 in json-glib; a byte count above 2^63 cannot
 * happen on Linux (off_t is signed), so clamping only guards against a
 * counter gone wrong turning into a negative number. */
static void json_u64(void *b, const char *key, uint64_t v)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, v > (uint64_t)G_MAXINT64 ? G_MAXINT64 : (gint64)v);
}

static void json_i64(void *b, const char *key, int64_t v)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, v);
}

/* File names are bytes; JSON strings are UTF-8.  An invalid sequence becomes
 * U+FFFD rather than producing a document no parser accepts. */
static void json_str(void *b, const char *key, const char *v)
{
    json_builder_set_member_name(b, key);
    if (!v) {
        json_builder_add_string_value(b, "");
    } else if (g_utf8_validate(v, -1, NULL)) {
        json_builder_add_string_value(b, v);
    } else {
        g_autofree char *valid = g_utf8_make_valid(v, -1);

        json_builder_add_string_value(b, valid);
    }
}

static void jflag(void *ctx, const char *key, bool v)
{
    json_builder_set_member_name(ctx, key);
    json_builder_add_boolean_value(ctx, v);
}

static const struct emitter json_emitter = {
    .str = json_str,
    .u64 = json_u64,
    .i64 = json_i64,
    .flag = jflag,
    .with_image_count = false,
};

char *status_format_json(const struct status_snapshot *s)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;

    /* Same keys and order as the text form, except that "images" is the
     * array of per-image objects (its length is the count); one JSON key
     * cannot hold both. */
    json_builder_begin_object(b);
    emit_keys(s, &json_emitter, b);

    json_builder_set_member_name(b, "images");
    json_builder_begin_array(b);
    for (uint64_t i = 0; i < s->n_images; i++) {
        const struct image_status *im = &s->image[i];

        json_builder_begin_object(b);
        json_str(b, "name", im->name);
        json_str(b, "phase", im->phase);
        json_u64(b, "size", im->size);
        json_u64(b, "copied", im->copied);
        json_u64(b, "dirty", im->dirty);
        json_u64(b, "in_flight", im->in_flight);
        json_u64(b, "granularity", im->granularity);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);

    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 2);
    return json_generator_to_data(gen, NULL);
}

void status_snapshot_clear(struct status_snapshot *s)
{
    for (uint64_t i = 0; i < s->n_images; i++)
        g_free(s->image[i].name);
    g_free(s->image);
    g_free(s->source);
    g_free(s->target);
    g_free(s->last_error);
    g_free(s->state_dir);
    g_free(s->serving);
    memset(s, 0, sizeof(*s));
}

/* Undo append_escaped(); an unknown escape is kept as written so a value
 * from a newer daemon is not silently mangled. */
char *status_unescape(const char *v)
{
    GString *out = g_string_sized_new(strlen(v));

    for (; *v; v++) {
        if (v[0] == '\\' && v[1] == 'n') {
            g_string_append_c(out, '\n');
            v++;
        } else if (v[0] == '\\' && v[1] == '\\') {
            g_string_append_c(out, '\\');
            v++;
        } else {
            g_string_append_c(out, *v);
        }
    }
    return g_string_free(out, FALSE);
}

GHashTable *status_parse_text(const char *text)
{
    g_autoptr(GHashTable) table = NULL;
    g_auto(GStrv) lines = NULL;

    if (!text)
        return NULL;
    table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        const char *colon = strchr(*l, ':');
        const char *val;

        /* A key is one word; anything else is not a status line. */
        if (!colon || colon == *l || memchr(*l, ' ', (size_t)(colon - *l)))
            continue;
        if ((size_t)(colon - *l) == strlen("image") && g_str_has_prefix(*l, "image"))
            continue;
        val = colon[1] == ' ' ? colon + 2 : colon + 1;
        g_hash_table_insert(table, g_strndup(*l, (size_t)(colon - *l)),
                            status_unescape(val));
    }
    if (!g_hash_table_contains(table, "phase"))
        return NULL;
    return g_steal_pointer(&table);
}

bool status_parse_image_line(char *line, struct status_image_line *im)
{
    char *p, *save = NULL;

    if (!g_str_has_prefix(line, "image: "))
        return false;
    p = g_strrstr(line, " phase=");
    /* "image: phase=..." has no name field: the formatter writes two
     * spaces before " phase=" for an empty name. */
    if (!p || p < line + strlen("image: "))
        return false;
    memset(im, 0, sizeof(*im));
    *p = '\0';
    im->name = line + strlen("image: ");
    for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        guint64 v = 0;

        if (!eq)
            continue;
        *eq++ = '\0';
        if (!strcmp(tok, "phase")) {
            im->phase = eq;
            continue;
        }
        g_ascii_string_to_unsigned(eq, 10, 0, G_MAXUINT64, &v, NULL);
        if (!strcmp(tok, "size"))
            im->size = v;
        else if (!strcmp(tok, "copied"))
            im->copied = v;
        else if (!strcmp(tok, "dirty"))
            im->dirty = v;
        else if (!strcmp(tok, "in_flight"))
            im->in_flight = v;
        else if (!strcmp(tok, "granularity"))
            im->granularity = v;
    }
    return im->phase != NULL;
}
