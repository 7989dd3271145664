/* target-nbd.c - a target that is an NBD server per image (libnbd). */
#include "config.h"

#include "target.h"

#include <errno.h>
#include <glib.h>
#include <string.h>

int target_nbd_is_uri(const char *spec)
{
    return g_str_has_prefix(spec, "nbd://") || g_str_has_prefix(spec, "nbd+unix://") ||
           g_str_has_prefix(spec, "nbds://") || g_str_has_prefix(spec, "nbds+unix://");
}

int target_nbd_new(const char *uri_template, struct target **out, char **err)
{
    *err = g_strdup_printf("%s: NBD targets are not built yet", uri_template);
    return -ENOTSUP;
}
