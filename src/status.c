/* status.c - the job's status as text and JSON, and the text form parsed back. */
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

static void append_str(GString *out, const char *key, const char *v)
{
    g_string_append(out, key);
    g_string_append(out, ": ");
    append_escaped(out, v);
    g_string_append_c(out, '\n');
}

static void append_u64(GString *out, const char *key, uint64_t v)
{
    g_string_append_printf(out, "%s: %" G_GUINT64_FORMAT "\n", key, (guint64)v);
}

static void append_i64(GString *out, const char *key, int64_t v)
{
    g_string_append_printf(out, "%s: %" G_GINT64_FORMAT "\n", key, (gint64)v);
}

char *status_format_text(const struct status_snapshot *s)
{
    GString *out = g_string_sized_new(1024);

    /* The order is part of the interface (DESIGN.md, "Inside the mount"):
     * keys added later go after last_error, never in between. */
    append_str(out, "phase", s->phase);
    append_i64(out, "pid", s->pid);
    append_str(out, "source", s->source);
    append_str(out, "target", s->target);
    append_str(out, "copy_mode", s->copy_mode);
    append_u64(out, "images", s->images);
    append_u64(out, "total_bytes", s->total_bytes);
    append_u64(out, "copied_bytes", s->copied_bytes);
    append_u64(out, "dirty_bytes", s->dirty_bytes);
    append_u64(out, "in_flight_bytes", s->in_flight_bytes);
    append_u64(out, "transferred_bytes", s->transferred_bytes);
    append_u64(out, "progress_percent", status_progress_percent(s));
    append_u64(out, "rate_bytes_per_s", s->rate_bytes_per_s);
    append_i64(out, "eta_s", s->eta_s < 0 ? -1 : s->eta_s);
    append_u64(out, "guest_write_bytes", s->guest_write_bytes);
    append_u64(out, "errors", s->errors);
    append_str(out, "last_error", s->last_error);
    append_str(out, "state_dir", s->state_dir);
    append_i64(out, "exit_code", s->exit_code);
    append_u64(out, "speed_bytes_per_s", s->speed_bytes_per_s);
    append_str(out, "active_copy_mode", s->active_copy_mode);
    append_str(out, "resumed", s->resumed);
    append_u64(out, "resume_saved_bytes", s->resume_saved_bytes);
    append_str(out, "verifying", s->verifying ? "yes" : "no");
    append_u64(out, "verify_checked_bytes", s->verify_checked_bytes);
    append_u64(out, "verify_differing_bytes", s->verify_differing_bytes);

    for (uint64_t i = 0; i < s->n_images; i++) {
        const struct image_status *im = &s->image[i];

        g_string_append(out, "image: ");
        append_escaped(out, im->name);
        g_string_append(out, " phase=");
        append_escaped(out, im->phase);
        g_string_append_printf(out,
                               " size=%" G_GUINT64_FORMAT " copied=%" G_GUINT64_FORMAT
                               " dirty=%" G_GUINT64_FORMAT " in_flight=%" G_GUINT64_FORMAT
                               "\n",
                               (guint64)im->size, (guint64)im->copied, (guint64)im->dirty,
                               (guint64)im->in_flight);
    }
    return g_string_free(out, FALSE);
}

/* JSON numbers go through gint64 in json-glib; a byte count above 2^63 cannot
 * happen on Linux (off_t is signed), so clamping only guards against a
 * counter gone wrong turning into a negative number. */
static void json_u64(JsonBuilder *b, const char *key, uint64_t v)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, v > (uint64_t)G_MAXINT64 ? G_MAXINT64 : (gint64)v);
}

static void json_i64(JsonBuilder *b, const char *key, int64_t v)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, v);
}

/* File names are bytes; JSON strings are UTF-8.  An invalid sequence becomes
 * U+FFFD rather than producing a document no parser accepts. */
static void json_str(JsonBuilder *b, const char *key, const char *v)
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

char *status_format_json(const struct status_snapshot *s)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;

    /* Same keys and order as the text form, except that "images" is the
     * array of per-image objects (its length is the count); one JSON key
     * cannot hold both. */
    json_builder_begin_object(b);
    json_str(b, "phase", s->phase);
    json_i64(b, "pid", s->pid);
    json_str(b, "source", s->source);
    json_str(b, "target", s->target);
    json_str(b, "copy_mode", s->copy_mode);
    json_u64(b, "total_bytes", s->total_bytes);
    json_u64(b, "copied_bytes", s->copied_bytes);
    json_u64(b, "dirty_bytes", s->dirty_bytes);
    json_u64(b, "in_flight_bytes", s->in_flight_bytes);
    json_u64(b, "transferred_bytes", s->transferred_bytes);
    json_u64(b, "progress_percent", status_progress_percent(s));
    json_u64(b, "rate_bytes_per_s", s->rate_bytes_per_s);
    json_i64(b, "eta_s", s->eta_s < 0 ? -1 : s->eta_s);
    json_u64(b, "guest_write_bytes", s->guest_write_bytes);
    json_u64(b, "errors", s->errors);
    json_str(b, "last_error", s->last_error);
    json_str(b, "state_dir", s->state_dir);
    json_i64(b, "exit_code", s->exit_code);
    json_u64(b, "speed_bytes_per_s", s->speed_bytes_per_s);
    json_str(b, "active_copy_mode", s->active_copy_mode);
    json_str(b, "resumed", s->resumed);
    json_u64(b, "resume_saved_bytes", s->resume_saved_bytes);
    json_builder_set_member_name(b, "verifying");
    json_builder_add_boolean_value(b, s->verifying);
    json_u64(b, "verify_checked_bytes", s->verify_checked_bytes);
    json_u64(b, "verify_differing_bytes", s->verify_differing_bytes);

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
    memset(s, 0, sizeof(*s));
}

/* Undo append_escaped(); an unknown escape is kept as written so a value
 * from a newer daemon is not silently mangled. */
static char *unescape(const char *v)
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
        g_hash_table_insert(table, g_strndup(*l, (size_t)(colon - *l)), unescape(val));
    }
    if (!g_hash_table_contains(table, "phase"))
        return NULL;
    return g_steal_pointer(&table);
}
