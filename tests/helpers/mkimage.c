/* mkimage - make test disk images for the mirrorfs integration tests.
 *
 *   mkimage PATH SIZE [--data-extents N --extent-size S] [--seed X]
 *           [--print-extents]
 *
 * Creates (or truncates) PATH as a sparse file of SIZE bytes.  Without
 * --data-extents the whole file is filled with pseudo-random data.  With
 * --data-extents N, N extents of S bytes of pseudo-random data are written at
 * pseudo-random offsets aligned to 64 KiB; the rest stays a hole
 * (--data-extents 0 gives a fully sparse file).  Extents never overlap: the
 * file is cut into N equal slots and each extent lies inside its own slot.
 * The same --seed (default 1) always gives the same file.
 * --print-extents writes one "OFFSET LENGTH" line per extent on stdout.
 *
 * Sizes take a K, M, G or T suffix (powers of 1024; "KiB"/"KB" also accepted).
 * Exit: 0 on success, 1 on bad arguments or an I/O error.
 *
 * Only libc: this is built by automake as tests/helpers/mkimage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define ALIGN ((uint64_t)64 * 1024)
#define BUFSZ ((size_t)1024 * 1024)

static const char *prog = "mkimage";

static void usage(void)
{
    fprintf(stderr,
            "usage: %s PATH SIZE [--data-extents N --extent-size S] [--seed X] "
            "[--print-extents]\n",
            prog);
    exit(1);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, why);
    exit(1);
}

/* splitmix64: small, fast, good enough, fully deterministic. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) for n > 0 (rejection sampling, no modulo bias). */
static uint64_t rng_below(uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do
        r = rng_next();
    while (r >= limit);
    return r % n;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    uint64_t mult = 1, v;

    if (*s == '\0' || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1ULL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1ULL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1ULL << 30;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1ULL << 40;
        end++;
        break;
    default:
        return -1;
    }
    if (mult != 1 && *end != '\0' && strcasecmp(end, "iB") != 0 &&
        strcasecmp(end, "B") != 0)
        return -1;
    if (mult == 1 && *end != '\0')
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (*s == '\0' || *s == '-')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 0);
    return (errno != 0 || *end != '\0') ? -1 : 0;
}

static void fill_random(unsigned char *buf, size_t len)
{
    size_t i = 0;
    while (i + 8 <= len) {
        uint64_t r = rng_next();
        memcpy(buf + i, &r, 8);
        i += 8;
    }
    if (i < len) {
        uint64_t r = rng_next();
        memcpy(buf + i, &r, len - i);
    }
}

static void write_random(int fd, const char *path, unsigned char *buf, uint64_t off,
                         uint64_t len)
{
    while (len > 0) {
        size_t n = len < BUFSZ ? (size_t)len : BUFSZ;
        size_t done = 0;
        fill_random(buf, n);
        while (done < n) {
            ssize_t w = pwrite(fd, buf + done, n - done, (off_t)(off + done));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                die(path, strerror(errno));
            }
            done += (size_t)w;
        }
        off += n;
        len -= n;
    }
}

int main(int argc, char **argv)
{
    const char *path = NULL, *size_arg = NULL;
    uint64_t size = 0, n_ext = 0, ext_size = 0, seed = 1;
    int have_ext = 0, have_ext_size = 0, print_ext = 0;
    int i, fd;
    unsigned char *buf;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = NULL;
        size_t nlen = strlen(a);

        if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            eq = strchr(a, '=');
            if (eq)
                nlen = (size_t)(eq - a);
        }
#define OPT(name) (strlen(name) == nlen && strncmp(a, name, nlen) == 0)
#define NEED_VAL()                                                                       \
    do {                                                                                 \
        if (eq)                                                                          \
            val = eq + 1;                                                                \
        else if (i + 1 < argc)                                                           \
            val = argv[++i];                                                             \
        else                                                                             \
            die(a, "missing value");                                                     \
    } while (0)
        if (OPT("--data-extents")) {
            NEED_VAL();
            if (parse_u64(val, &n_ext) != 0)
                die("--data-extents", "not a number");
            have_ext = 1;
        } else if (OPT("--extent-size")) {
            NEED_VAL();
            if (parse_size(val, &ext_size) != 0 || ext_size == 0)
                die("--extent-size", "bad size");
            have_ext_size = 1;
        } else if (OPT("--seed")) {
            NEED_VAL();
            if (parse_u64(val, &seed) != 0)
                die("--seed", "not a number");
        } else if (OPT("--print-extents") && !eq) {
            print_ext = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
        } else if (a[0] == '-' && a[1] != '\0') {
            die(a, "unknown option");
        } else if (!path) {
            path = a;
        } else if (!size_arg) {
            size_arg = a;
        } else {
            usage();
        }
#undef OPT
#undef NEED_VAL
    }
    if (!path || !size_arg)
        usage();
    if (parse_size(size_arg, &size) != 0)
        die(size_arg, "bad size");
    if (size > (uint64_t)INT64_MAX)
        die(size_arg, "too large");
    if (have_ext && n_ext > 0 && !have_ext_size)
        die("--data-extents", "needs --extent-size");
    if (have_ext_size && !have_ext)
        die("--extent-size", "needs --data-extents");

    rng_state = seed;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die(path, strerror(errno));
    if (ftruncate(fd, (off_t)size) != 0)
        die(path, strerror(errno));

    buf = malloc(BUFSZ);
    if (!buf)
        die("malloc", strerror(errno));

    if (!have_ext) {
        write_random(fd, path, buf, 0, size);
        if (print_ext && size > 0)
            printf("%" PRIu64 " %" PRIu64 "\n", (uint64_t)0, size);
    } else if (n_ext > 0) {
        /* Each extent lives in its own slot of `slot` bytes (a multiple of
         * 64K); its start is a random 64K-aligned offset that keeps the whole
         * extent inside the slot and inside the file. */
        uint64_t slot = (size / n_ext) / ALIGN * ALIGN;
        uint64_t span = (ext_size + ALIGN - 1) / ALIGN * ALIGN; /* aligned footprint */
        uint64_t k;

        if (slot == 0 || span > slot)
            die("--data-extents",
                "extents do not fit in the file (need N * ceil64K(S) <= SIZE)");
        for (k = 0; k < n_ext; k++) {
            uint64_t choices = (slot - span) / ALIGN + 1;
            uint64_t off = k * slot + rng_below(choices) * ALIGN;
            write_random(fd, path, buf, off, ext_size);
            if (print_ext)
                printf("%" PRIu64 " %" PRIu64 "\n", off, ext_size);
        }
    }

    free(buf);
    if (close(fd) != 0)
        die(path, strerror(errno));
    if (fflush(stdout) != 0)
        die("stdout", strerror(errno));
    return 0;
}
