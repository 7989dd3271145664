/* persist.c - crash-safe map of the extents that may differ (see persist.h
 * and doc/persistence.md, which describes the files this writes). */
#include "config.h"

#include "persist.h"
#include "bitmap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define FORMAT_VERSION 2u
#define MANIFEST_HEAD "mirrorfs-state 2\n"
#define MAP_MAGIC "mirrorfs-map\n"
#define NAME_MAGIC "mirrorfs-name\n"
#define MAGIC_SIZE 16

/* The map file is a header block and map blocks of BLOCK bytes, each ending
 * in a SHA-256 of its contents.  512 bytes: a sector, which most devices
 * write whole, so that a torn write of a 4 KiB page leaves each block
 * either old or new (both true, see doc/persistence.md) rather than
 * damaged; and a block's checksum costs a few microseconds under the lock
 * of the cold path. */
#define BLOCK 512u
#define DIGEST 32u
#define BITS_BYTES (BLOCK - DIGEST)
#define BLOCK_EXTENTS (BITS_BYTES * 8u) /* 3840 extents: 15 GiB of image */
#define KEY_SIZE 32u                    /* a struct persist_key, encoded */
#define GEN_SIZE 16u
#define ID_SIZE (KEY_SIZE + GEN_SIZE)
#define NAME_HEAD 64u

/* Extents are kept in pages allocated on first use, so that the lock-free
 * write path never sees memory move: 256 extents (1 GiB) a page, up to
 * 256 TiB an image.  The table of pages is sized to the image and grows
 * with it (see page_get). */
#define PAGE_EXTENTS 256u
#define PAGES_PER_BLOCK (BLOCK_EXTENTS / PAGE_EXTENTS)
#define MAX_EXTENTS (1ull << 26)
#define MAX_PAGES (MAX_EXTENTS / PAGE_EXTENTS)
G_STATIC_ASSERT(BLOCK_EXTENTS % PAGE_EXTENTS == 0);
G_STATIC_ASSERT(NAME_HEAD >= MAGIC_SIZE + 8 + KEY_SIZE + 8);

/* marked[]: CLEAR; SETTING: being made durable (the cold path holds the
 * lock); DURABLE: on disk, writes into the extent may go ahead; TENTATIVE:
 * still on disk, but the sweep is deciding whether to clear it, so a write
 * must take the cold path (where the lock settles it). */
enum { CLEAR = 0, SETTING = 1, DURABLE = 2, TENTATIVE = 3 };

struct page {
    uint8_t marked[PAGE_EXTENTS];
    uint8_t age[PAGE_EXTENTS];     /* sweeps since the last write began */
    uint32_t active[PAGE_EXTENTS]; /* writes in progress */
};

/* A table of pages.  A grown table replaces the current one, which is kept
 * (on `older`) until the image is closed: a lock-free reader may still be
 * looking at it. */
struct table {
    struct table *older;
    uint64_t npages;
    struct page *slots[]; /* published with atomic stores */
};

struct persist {
    int dirfd; /* STATE_DIR/images */
};

struct persist_image {
    struct persist *p;
    struct persist_key key;
    /* The encoded key and this open's generation: every map block's
     * checksum covers them. */
    uint8_t id[ID_SIZE];
    int fd;
    pthread_mutex_t lock;      /* the cold path, the sweep's disk writes, paging */
    pthread_mutex_t name_lock; /* the name file, removed */
    bool removed;
    struct table *table; /* published with atomic stores */
    uint64_t nblocks;    /* map blocks in the file (lock) */
    size_t memory;       /* written under the lock, read atomically */
    /* A change past the largest image the map can hold: the header is
     * spoiled on disk, so that a restart compares the whole image instead
     * of trusting a map that does not cover it.  Atomic. */
    int overflow;
};

static int pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* Spoil the header durably (see overflow).  Under the lock. */
static int overflow_locked(struct persist_image *pi)
{
    static const uint8_t zero[BLOCK];

    if (__atomic_load_n(&pi->overflow, __ATOMIC_SEQ_CST))
        return 0;
    int rc = pwrite_all(pi->fd, zero, BLOCK, 0);
    if (rc == 0 && fdatasync(pi->fd) < 0)
        rc = -errno;
    if (rc == 0)
        __atomic_store_n(&pi->overflow, 1, __ATOMIC_SEQ_CST);
    return rc;
}

/* ---- encoding --------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (unsigned k = 0; k < 4; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (unsigned k = 0; k < 8; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static void encode_key(uint8_t out[KEY_SIZE], const struct persist_key *key)
{
    put_u64(out, (uint64_t)key->dev);
    put_u64(out + 8, (uint64_t)key->ino);
    put_u64(out + 16, (uint64_t)key->btime_sec);
    put_u32(out + 24, key->btime_nsec);
    put_u32(out + 28, 0);
}

static void sha256(uint8_t out[DIGEST], const void *data, size_t len)
{
    g_autoptr(GChecksum) c = g_checksum_new(G_CHECKSUM_SHA256);
    gsize n = DIGEST;

    g_checksum_update(c, data, (gssize)len);
    g_checksum_get_digest(c, out, &n);
}

/* The digest of map block b: over its index and the image's id too, so
 * that a block of another position, another file or another generation
 * (a rewrite that a crash cut short) does not pass for this one. */
static void block_digest(const uint8_t id[ID_SIZE], uint64_t b, const uint8_t *bits,
                         uint8_t out[DIGEST])
{
    uint8_t buf[8 + ID_SIZE + BITS_BYTES];

    put_u64(buf, b);
    memcpy(buf + 8, id, ID_SIZE);
    memcpy(buf + 8 + ID_SIZE, bits, BITS_BYTES);
    sha256(out, buf, sizeof(buf));
}

static bool block_ok(const uint8_t id[ID_SIZE], uint64_t b, const uint8_t *blk)
{
    uint8_t d[DIGEST];

    block_digest(id, b, blk, d);
    return memcmp(d, blk + BITS_BYTES, DIGEST) == 0;
}

/* The header block: magic, format, sizes, key, generation, digest. */
static void header_encode(uint8_t blk[BLOCK], const uint8_t id[ID_SIZE])
{
    memset(blk, 0, BLOCK);
    memcpy(blk, MAP_MAGIC, sizeof(MAP_MAGIC) - 1);
    put_u32(blk + 16, FORMAT_VERSION);
    put_u32(blk + 20, BLOCK);
    put_u64(blk + 24, PERSIST_EXTENT);
    memcpy(blk + 32, id, ID_SIZE);
    sha256(blk + BITS_BYTES, blk, BITS_BYTES);
}

/* Whether blk is a header of this key (then id receives key and
 * generation). */
static bool header_decode(const uint8_t blk[BLOCK], const uint8_t key[KEY_SIZE],
                          uint8_t id[ID_SIZE])
{
    uint8_t d[DIGEST];
    uint8_t want[BLOCK];

    sha256(d, blk, BITS_BYTES);
    if (memcmp(d, blk + BITS_BYTES, DIGEST) != 0)
        return false;
    memcpy(id, key, KEY_SIZE);
    memcpy(id + KEY_SIZE, blk + 32 + KEY_SIZE, GEN_SIZE);
    /* Everything else must be what this version writes. */
    header_encode(want, id);
    return memcmp(want, blk, BLOCK) == 0;
}

/* ---- I/O helpers ---------------------------------------------------------- */

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* 0, or -errno; a short read (the file ends) is -ENODATA. */
static int pread_all(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -ENODATA;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static off_t block_offset(uint64_t b)
{
    return (off_t)((b + 1) * BLOCK);
}

static uint64_t blocks_for(uint64_t nextents)
{
    return (nextents + BLOCK_EXTENTS - 1) / BLOCK_EXTENTS;
}

static char *file_base(const struct persist_key *key)
{
    return g_strdup_printf("%llx-%llx", (unsigned long long)key->dev,
                           (unsigned long long)key->ino);
}

/* ---- the manifest ----------------------------------------------------------- */

static char *manifest_text(const char *source, const char *target)
{
    return g_strdup_printf(MANIFEST_HEAD "source: %s\ntarget: %s\n", source, target);
}

static int fsync_path(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -errno;
    rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

bool persist_has_state(const char *state_dir, const char *source, const char *target)
{
    g_autofree char *manifest = g_build_filename(state_dir, "manifest", NULL);
    g_autofree char *want = manifest_text(source, target);
    g_autofree char *have = NULL;

    return g_file_get_contents(manifest, &have, NULL, NULL) && strcmp(have, want) == 0;
}

int persist_open(const char *state_dir, const char *source, const char *target,
                 struct persist **out, bool *had_state, char **err)
{
    g_autofree char *images = g_build_filename(state_dir, "images", NULL);
    g_autofree char *manifest = g_build_filename(state_dir, "manifest", NULL);
    g_autofree char *want = manifest_text(source, target);
    g_autoptr(GError) gerr = NULL;
    int rc;

    *had_state = persist_has_state(state_dir, source, target);
    if (g_mkdir_with_parents(images, 0700) < 0) {
        rc = -errno;
        *err = g_strdup_printf("%s: %s", images, g_strerror(-rc));
        return rc;
    }
    int fd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        *err = g_strdup_printf("%s: %s", images, g_strerror(-rc));
        return rc;
    }
    if (!*had_state) {
        /* Another job's state, an older format's, or none: start afresh.
         * In this order, each step durable before the next: with the old
         * manifest gone first, a crash before the end leaves no state
         * (never the old maps under either manifest); with the maps gone
         * before the new manifest, none of them can be taken for this
         * job's. */
        if (g_unlink(manifest) < 0 && errno != ENOENT) {
            rc = -errno;
            *err = g_strdup_printf("%s: %s", manifest, g_strerror(-rc));
            goto fail;
        }
        rc = fsync_path(state_dir);
        g_autoptr(GDir) d = rc == 0 ? g_dir_open(images, 0, NULL) : NULL;
        const char *n;
        while (d && (n = g_dir_read_name(d)) != NULL) {
            g_autofree char *f = g_build_filename(images, n, NULL);
            g_unlink(f);
        }
        if (rc == 0 && fsync(fd) < 0)
            rc = -errno;
        if (rc < 0) {
            *err = g_strdup_printf("%s: %s", state_dir, g_strerror(-rc));
            goto fail;
        }
        if (!g_file_set_contents_full(manifest, want, -1,
                                      G_FILE_SET_CONTENTS_CONSISTENT |
                                          G_FILE_SET_CONTENTS_DURABLE,
                                      0600, &gerr)) {
            *err = g_strdup_printf("%s: %s", manifest, gerr->message);
            rc = -EIO;
            goto fail;
        }
        rc = fsync_path(state_dir);
        if (rc < 0) {
            *err = g_strdup_printf("%s: %s", state_dir, g_strerror(-rc));
            goto fail;
        }
    }
    *out = g_new0(struct persist, 1);
    (*out)->dirfd = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

void persist_close(struct persist *p)
{
    if (!p)
        return;
    close(p->dirfd);
    g_free(p);
}

int persist_key_of_fd(int fd, struct persist_key *key)
{
    struct statx stx;

    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME,
              &stx) < 0)
        return -errno;
    memset(key, 0, sizeof(*key));
    key->dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    key->ino = (ino_t)stx.stx_ino;
    if (stx.stx_mask & STATX_BTIME) {
        key->btime_sec = stx.stx_btime.tv_sec;
        key->btime_nsec = stx.stx_btime.tv_nsec;
    }
    return 0;
}

/* ---- pages ------------------------------------------------------------------ */

static struct table *table_new(uint64_t npages)
{
    struct table *t = g_malloc0(sizeof(*t) + npages * sizeof(t->slots[0]));

    t->npages = npages;
    return t;
}

static void add_memory(struct persist_image *pi, size_t bytes)
{
    __atomic_store_n(&pi->memory, pi->memory + bytes, __ATOMIC_RELAXED);
}

/* Page n if it exists (no allocation, no lock). */
static struct page *page_peek(struct persist_image *pi, uint64_t n)
{
    struct table *t = __atomic_load_n(&pi->table, __ATOMIC_ACQUIRE);

    return n < t->npages ? __atomic_load_n(&t->slots[n], __ATOMIC_ACQUIRE) : NULL;
}

/* With the lock held: page n, allocated if need be.  A table too small is
 * replaced by one twice as large (or large enough), with the same pages;
 * the old one stays valid for readers that loaded it. */
static struct page *page_get_locked(struct persist_image *pi, uint64_t n)
{
    struct table *t = pi->table;

    if (n >= t->npages) {
        uint64_t want = MAX(n + 1, MIN(2 * t->npages, MAX_PAGES));
        struct table *nt = table_new(want);
        memcpy(nt->slots, t->slots, t->npages * sizeof(t->slots[0]));
        nt->older = t;
        __atomic_store_n(&pi->table, nt, __ATOMIC_RELEASE);
        add_memory(pi, sizeof(*nt) + want * sizeof(nt->slots[0]));
        t = nt;
    }
    if (!t->slots[n]) {
        __atomic_store_n(&t->slots[n], g_new0(struct page, 1), __ATOMIC_RELEASE);
        add_memory(pi, sizeof(struct page));
    }
    return t->slots[n];
}

/* Page n, allocated if need be; NULL past the largest image. */
static struct page *page_get(struct persist_image *pi, uint64_t n)
{
    struct page *pg = page_peek(pi, n);

    if (pg || n >= MAX_PAGES)
        return pg;
    pthread_mutex_lock(&pi->lock);
    pg = page_get_locked(pi, n);
    pthread_mutex_unlock(&pi->lock);
    return pg;
}

/* ---- the map on disk -------------------------------------------------------- */

/* With the lock held: map block b computed from the marks in memory (set,
 * being set or being considered for clearing count as 1), sealed. */
static void build_block(struct persist_image *pi, uint64_t b, uint8_t blk[BLOCK])
{
    memset(blk, 0, BLOCK);
    for (unsigned k = 0; k < PAGES_PER_BLOCK; k++) {
        struct page *pg = page_peek(pi, b * PAGES_PER_BLOCK + k);
        for (unsigned i = 0; pg && i < PAGE_EXTENTS; i++) {
            if (__atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST) != CLEAR) {
                unsigned bit = k * PAGE_EXTENTS + i;
                blk[bit / 8] |= (uint8_t)(1u << (bit % 8));
            }
        }
    }
    block_digest(pi->id, b, blk, blk + BITS_BYTES);
}

/* With the lock held: write map blocks first..last from the marks in
 * memory.  Blocks between the end of the file and `first` are written too:
 * a hole would read as zeroes, which is no valid block, and a restart would
 * take the whole map for damaged.  Not flushed. */
static int write_blocks_locked(struct persist_image *pi, uint64_t first, uint64_t last)
{
    uint8_t buf[16 * BLOCK];

    first = MIN(first, pi->nblocks);
    for (uint64_t b = first; b <= last;) {
        unsigned n = 0;
        for (; n < 16 && b + n <= last; n++)
            build_block(pi, b + n, buf + n * BLOCK);
        int rc = pwrite_all(pi->fd, buf, n * BLOCK, block_offset(b));
        if (rc < 0)
            return rc;
        b += n;
        pi->nblocks = MAX(pi->nblocks, b);
    }
    return 0;
}

/* Rewrite the whole map from the marks in memory, under a new generation,
 * and flush it.  A crash before the flush completes leaves blocks of the
 * old generation, of the new one, or torn: any mix of generations fails
 * the checksums, so a restart sees the old map whole, the new map whole,
 * or damage. */
static int rewrite_map(struct persist_image *pi, uint64_t nblocks)
{
    uint8_t header[BLOCK];
    int rc;

    for (unsigned k = 0; k < GEN_SIZE; k += 4)
        put_u32(pi->id + KEY_SIZE + k, g_random_int());
    header_encode(header, pi->id);
    rc = pwrite_all(pi->fd, header, BLOCK, 0);
    pthread_mutex_lock(&pi->lock);
    pi->nblocks = 0;
    if (rc == 0 && nblocks > 0)
        rc = write_blocks_locked(pi, 0, nblocks - 1);
    pthread_mutex_unlock(&pi->lock);
    /* Blocks past what the image needs now would be of the old generation. */
    if (rc == 0 && ftruncate(pi->fd, block_offset(nblocks)) < 0)
        rc = -errno;
    if (rc == 0 && fdatasync(pi->fd) < 0)
        rc = -errno;
    return rc;
}

/* ---- the name file ---------------------------------------------------------- */

enum name_state { NAME_ABSENT, NAME_SAME, NAME_OTHER };

static uint8_t *name_encode(const uint8_t key[KEY_SIZE], const char *name, size_t *len)
{
    size_t n = strlen(name);
    uint8_t *buf = g_malloc0(NAME_HEAD + n + DIGEST);

    memcpy(buf, NAME_MAGIC, sizeof(NAME_MAGIC) - 1);
    put_u32(buf + 16, FORMAT_VERSION);
    memcpy(buf + 24, key, KEY_SIZE);
    put_u64(buf + 56, n);
    memcpy(buf + NAME_HEAD, name, n);
    sha256(buf + NAME_HEAD + n, buf, NAME_HEAD + n);
    *len = NAME_HEAD + n + DIGEST;
    return buf;
}

/* Whether the name file says this key is called `name`.  A name file that
 * is damaged or of another key counts as another name. */
static enum name_state name_read(struct persist *p, const char *fname,
                                 const uint8_t key[KEY_SIZE], const char *name)
{
    size_t len;
    g_autofree uint8_t *want = name_encode(key, name, &len);
    int fd = openat(p->dirfd, fname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;

    if (fd < 0)
        return errno == ENOENT ? NAME_ABSENT : NAME_OTHER;
    /* The file holds its own length: one of another length is another name
     * (or damaged), and is not read. */
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != len) {
        close(fd);
        return NAME_OTHER;
    }
    g_autofree uint8_t *have = g_malloc(len);
    int rc = pread_all(fd, have, len, 0);
    close(fd);
    return rc == 0 && memcmp(have, want, len) == 0 ? NAME_SAME : NAME_OTHER;
}

/* Replace the name file: a crash leaves the old one or the new one, and the
 * new one is durable on return. */
static int name_write(struct persist *p, const char *fname, const uint8_t key[KEY_SIZE],
                      const char *name)
{
    size_t len;
    g_autofree uint8_t *buf = name_encode(key, name, &len);
    g_autofree char *tmp = g_strconcat(fname, ".tmp", NULL);
    int fd = openat(p->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    int rc;

    if (fd < 0)
        return -errno;
    rc = pwrite_all(fd, buf, len, 0);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && renameat(p->dirfd, tmp, p->dirfd, fname) < 0)
        rc = -errno;
    /* The rename, and the map file's own entry when it is new. */
    if (rc == 0 && fsync(p->dirfd) < 0)
        rc = -errno;
    if (rc < 0)
        unlinkat(p->dirfd, tmp, 0);
    return rc;
}

/* ---- opening ---------------------------------------------------------------- */

/* Whether a map of this inode number on another device is there.  Device
 * numbers are not always stable (device-mapper numbers can change at a
 * reboot): such a map may well be this file's, under its old number, and
 * then the absence of a map under the new one proves nothing. */
static bool other_device_has(struct persist *p, const struct persist_key *key)
{
    g_autofree char *base = file_base(key);
    g_autofree char *mine = g_strconcat(base, ".map", NULL);
    g_autofree char *suffix = g_strdup_printf("-%llx.map", (unsigned long long)key->ino);
    /* A descriptor of its own: readdir moves the offset, which a dup would
     * share with other threads' scans. */
    int fd = openat(p->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    bool found = false;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return true; /* cannot tell: assume the worst */
    }
    while (!found && (de = readdir(d)) != NULL)
        found = g_str_has_suffix(de->d_name, suffix) && strcmp(de->d_name, mine) != 0;
    closedir(d);
    return found;
}

/* What the map in fd (of size bytes) and the name file say of a previous
 * run, for an image of nextents extents; *bits receives its marks with
 * PERSIST_PREV_OK. */
static enum persist_previous read_previous(struct persist *p, int fd, uint64_t size,
                                           const char *nname,
                                           const struct persist_key *key,
                                           const char *name, uint64_t nextents,
                                           struct bitmap **bits, bool *name_same)
{
    uint8_t k[KEY_SIZE], id[ID_SIZE];
    uint8_t blk[16 * BLOCK];
    uint64_t need = blocks_for(nextents);

    encode_key(k, key);
    enum name_state ns = name_read(p, nname, k, name);

    *bits = NULL;
    *name_same = ns == NAME_SAME;
    if (size == 0 && ns == NAME_ABSENT)
        return other_device_has(p, key) ? PERSIST_PREV_DAMAGED : PERSIST_PREV_NONE;
    /* Every check below is a reason not to trust the map (see
     * doc/persistence.md for why each exists). */
    if (ns != NAME_SAME || size % BLOCK != 0 || size < BLOCK ||
        pread_all(fd, blk, BLOCK, 0) < 0 || !header_decode(blk, k, id))
        return PERSIST_PREV_DAMAGED;
    uint64_t have = size / BLOCK - 1;
    if (have < need)
        return PERSIST_PREV_DAMAGED;
    struct bitmap *prev = bitmap_new(nextents);
    /* Every block, those past the image's end too: any damage is a sign
     * that the file is not what was written. */
    for (uint64_t b = 0; b < have;) {
        unsigned n = (unsigned)MIN(16, have - b);
        if (pread_all(fd, blk, n * BLOCK, block_offset(b)) < 0)
            goto damaged;
        for (unsigned j = 0; j < n; j++, b++) {
            const uint8_t *bb = blk + j * BLOCK;
            if (!block_ok(id, b, bb))
                goto damaged;
            for (unsigned bit = 0; bit < BLOCK_EXTENTS; bit++) {
                uint64_t e = b * BLOCK_EXTENTS + bit;
                if (e < nextents && (bb[bit / 8] & (1u << (bit % 8))))
                    bitmap_set_range(prev, e, 1);
            }
        }
    }
    *bits = prev;
    return PERSIST_PREV_OK;
damaged:
    bitmap_free(prev);
    return PERSIST_PREV_DAMAGED;
}

int persist_image_open(struct persist *p, const char *name, const struct persist_key *key,
                       uint64_t size, enum persist_marks how, struct persist_image **out,
                       struct bitmap **previous, enum persist_previous *found)
{
    uint64_t nextents = size / PERSIST_EXTENT + (size % PERSIST_EXTENT != 0);
    g_autofree char *base = file_base(key);
    g_autofree char *mname = g_strconcat(base, ".map", NULL);
    g_autofree char *nname = g_strconcat(base, ".name", NULL);
    struct bitmap *prev = NULL;
    bool name_same = false, fresh;
    struct stat st;
    int rc;

    *out = NULL;
    *previous = NULL;
    *found = PERSIST_PREV_NONE;
    /* Larger than a map can hold: the first MAX_EXTENTS are kept, and the
     * state says "compare everything" (overflow) after a crash. */
    bool too_big = nextents > MAX_EXTENTS;
    nextents = MIN(nextents, MAX_EXTENTS);
    int fd = openat(p->dirfd, mname, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    /* New or empty: its directory entry may not be durable yet. */
    fresh = st.st_size == 0;
    if (how != PERSIST_MARK_ALL)
        *found = read_previous(p, fd, (uint64_t)st.st_size, nname, key, name, nextents,
                               &prev, &name_same);
    bool all_dirty = how == PERSIST_MARK_ALL ||
                     (how == PERSIST_MARK_PREVIOUS_OR_ALL && *found != PERSIST_PREV_OK);

    struct persist_image *pi = g_new0(struct persist_image, 1);
    uint64_t npages = MAX(1, (nextents + PAGE_EXTENTS - 1) / PAGE_EXTENTS);
    pi->p = p;
    pi->key = *key;
    encode_key(pi->id, key);
    pi->fd = fd;
    pthread_mutex_init(&pi->lock, NULL);
    pthread_mutex_init(&pi->name_lock, NULL);
    pi->table = table_new(npages);
    pi->memory = sizeof(*pi) + sizeof(struct table) + npages * sizeof(struct page *);

    /* The file is rewritten from what the job will trust: everything (a
     * first pass, or a state that cannot be trusted), or the previous bits
     * (a resume), or nothing. */
    for (uint64_t e = 0; e < nextents; e++) {
        bool mark = all_dirty || (prev && bitmap_test(prev, e));
        if (mark)
            page_get(pi, e / PAGE_EXTENTS)->marked[e % PAGE_EXTENTS] = DURABLE;
    }
    rc = rewrite_map(pi, blocks_for(nextents));
    if (rc == 0 && too_big) {
        pthread_mutex_lock(&pi->lock);
        rc = overflow_locked(pi);
        pthread_mutex_unlock(&pi->lock);
    }
    /* After the map: a crash in between leaves a name file that does not
     * match (damage, so a compare) or none.  A new map file's directory
     * entry is made durable by name_write's fsync of the directory. */
    if (rc == 0 && (!name_same || fresh))
        rc = name_write(p, nname, pi->id /* the encoded key */, name);
    if (rc < 0) {
        persist_image_close(pi);
        bitmap_free(prev);
        *found = PERSIST_PREV_NONE;
        return rc;
    }
    *out = pi;
    *previous = prev;
    return 0;
}

void persist_image_close(struct persist_image *pi)
{
    if (!pi)
        return;
    /* The current table holds every page; older ones hold some of them. */
    for (uint64_t n = 0; n < pi->table->npages; n++)
        g_free(pi->table->slots[n]);
    for (struct table *t = pi->table, *older; t; t = older) {
        older = t->older;
        g_free(t);
    }
    if (pi->fd >= 0)
        close(pi->fd);
    pthread_mutex_destroy(&pi->lock);
    pthread_mutex_destroy(&pi->name_lock);
    g_free(pi);
}

int persist_image_rename(struct persist_image *pi, const char *name)
{
    g_autofree char *base = file_base(&pi->key);
    g_autofree char *nname = g_strconcat(base, ".name", NULL);

    /* Its own lock: the cold path of guest writes does not wait for these
     * flushes. */
    pthread_mutex_lock(&pi->name_lock);
    /* Removed: a name file now would outlive the map. */
    int rc = pi->removed ? 0 : name_write(pi->p, nname, pi->id, name);
    pthread_mutex_unlock(&pi->name_lock);
    return rc;
}

void persist_image_remove(struct persist_image *pi)
{
    g_autofree char *base = file_base(&pi->key);
    g_autofree char *mname = g_strconcat(base, ".map", NULL);
    g_autofree char *nname = g_strconcat(base, ".name", NULL);

    pthread_mutex_lock(&pi->name_lock);
    pi->removed = true;
    unlinkat(pi->p->dirfd, mname, 0);
    unlinkat(pi->p->dirfd, nname, 0);
    pthread_mutex_unlock(&pi->name_lock);
}

/* ---- the write path ------------------------------------------------------- */

int persist_write_begin(struct persist_image *pi, uint64_t off, uint64_t len)
{
    uint64_t first = off / PERSIST_EXTENT;
    uint64_t last = (off + (len ? len : 1) - 1) / PERSIST_EXTENT;
    /* Past the largest image a map holds: after a crash the whole image
     * is compared (overflow), so nothing past it needs a bit. */
    bool too_big = last >= MAX_EXTENTS;
    bool cold = false;
    int rc = 0;

    if (__atomic_load_n(&pi->overflow, __ATOMIC_SEQ_CST))
        return 0;
    if (too_big) {
        pthread_mutex_lock(&pi->lock);
        rc = overflow_locked(pi);
        pthread_mutex_unlock(&pi->lock);
        return rc;
    }
    for (uint64_t e = first; e <= last; e++) {
        struct page *pg = page_get(pi, e / PAGE_EXTENTS);
        unsigned i = e % PAGE_EXTENTS;
        /* Count ourselves in before looking at the mark: the sweep clears
         * the mark before it looks at the count (both sequentially
         * consistent), so one of the two sees the other. */
        __atomic_add_fetch(&pg->active[i], 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&pg->age[i], 0, __ATOMIC_RELAXED);
        if (__atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST) != DURABLE)
            cold = true;
    }
    if (!cold)
        return 0;
    /* Cold: the bits must be on disk before the source changes.  The lock
     * covers marking and writing the blocks (into the page cache); the
     * fdatasync runs outside it, so that writers into other cold extents
     * (a guest starting random writes after the first pass) share the
     * disk's flushes instead of queueing behind each other's.  Blocks past
     * the end of the file (the image grew) are written here, so a restart
     * finds a map as long as the image. */
    pthread_mutex_lock(&pi->lock);
    uint64_t bfirst = UINT64_MAX, blast = 0;
    for (uint64_t e = first; e <= last; e++) {
        struct page *pg = page_peek(pi, e / PAGE_EXTENTS);
        unsigned i = e % PAGE_EXTENTS;
        uint8_t m = __atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST);
        if (m == DURABLE)
            continue;
        if (m == TENTATIVE) {
            /* The sweep has not cleared it (it does that under this lock),
             * so no block written since says it is clear: keep it. */
            __atomic_store_n(&pg->marked[i], DURABLE, __ATOMIC_SEQ_CST);
            continue;
        }
        if (m == CLEAR)
            __atomic_store_n(&pg->marked[i], SETTING, __ATOMIC_SEQ_CST);
        /* SETTING by another writer too: its block is written again.  A
         * block costs little next to the flush, and it is right even if
         * that writer's write or flush failed (a failed fdatasync may have
         * dropped the dirty page: writing it again dirties it again). */
        bfirst = MIN(bfirst, e / BLOCK_EXTENTS);
        blast = MAX(blast, e / BLOCK_EXTENTS);
    }
    if (bfirst <= blast)
        rc = write_blocks_locked(pi, bfirst, blast);
    pthread_mutex_unlock(&pi->lock);
    if (rc == 0 && fdatasync(pi->fd) < 0)
        rc = -errno;
    for (uint64_t e = first; rc == 0 && e <= last; e++) {
        uint8_t expect = SETTING;
        __atomic_compare_exchange_n(
            &page_peek(pi, e / PAGE_EXTENTS)->marked[e % PAGE_EXTENTS], &expect, DURABLE,
            false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    return rc;
}

void persist_write_end(struct persist_image *pi, uint64_t off, uint64_t len)
{
    uint64_t first = off / PERSIST_EXTENT;
    uint64_t last = (off + (len ? len : 1) - 1) / PERSIST_EXTENT;

    /* After an overflow the counts no longer matter (and a begin that
     * came after it counted nothing). */
    if (__atomic_load_n(&pi->overflow, __ATOMIC_SEQ_CST))
        return;
    for (uint64_t e = first; e <= last && e < MAX_EXTENTS; e++) {
        struct page *pg = page_peek(pi, e / PAGE_EXTENTS);
        if (pg)
            __atomic_sub_fetch(&pg->active[e % PAGE_EXTENTS], 1, __ATOMIC_SEQ_CST);
    }
}

int persist_image_sweep(struct persist_image *pi, unsigned quiet_ticks,
                        persist_clean_fn is_clean, void *ctx)
{
    struct table *t = __atomic_load_n(&pi->table, __ATOMIC_ACQUIRE);
    int cleared = 0;

    /* Block by block: the clears of a block are written once, after its
     * extents were decided.  Until then the disk says more is marked than
     * memory does, which is safe; and every block write, the cold path's
     * included, is computed from the marks of the moment under the lock, so
     * the last one written reflects the last decision. */
    for (uint64_t b = 0; b * PAGES_PER_BLOCK < t->npages; b++) {
        bool changed = false;
        for (unsigned k = 0; k < PAGES_PER_BLOCK; k++) {
            uint64_t n = b * PAGES_PER_BLOCK + k;
            struct page *pg =
                n < t->npages ? __atomic_load_n(&t->slots[n], __ATOMIC_ACQUIRE) : NULL;
            for (unsigned i = 0; pg && i < PAGE_EXTENTS; i++) {
                if (__atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST) != DURABLE)
                    continue;
                uint8_t age = __atomic_load_n(&pg->age[i], __ATOMIC_RELAXED);
                if (age < quiet_ticks) {
                    __atomic_store_n(&pg->age[i], (uint8_t)(age + 1), __ATOMIC_RELAXED);
                    continue;
                }
                if (__atomic_load_n(&pg->active[i], __ATOMIC_SEQ_CST) != 0)
                    continue;
                uint64_t e = n * PAGE_EXTENTS + i;
                /* Mark first, then look: a write that begins from here on
                 * finds the extent not durable and takes the cold path. */
                uint8_t expect = DURABLE;
                if (!__atomic_compare_exchange_n(&pg->marked[i], &expect, TENTATIVE,
                                                 false, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_SEQ_CST))
                    continue;
                bool ok = __atomic_load_n(&pg->active[i], __ATOMIC_SEQ_CST) == 0 &&
                          is_clean(ctx, e * PERSIST_EXTENT, PERSIST_EXTENT);
                pthread_mutex_lock(&pi->lock);
                expect = TENTATIVE;
                /* A cold-path write may have taken it back already. */
                if (__atomic_compare_exchange_n(&pg->marked[i], &expect,
                                                ok ? CLEAR : DURABLE, false,
                                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
                    ok) {
                    changed = true;
                    cleared++;
                }
                pthread_mutex_unlock(&pi->lock);
            }
        }
        if (changed) {
            /* No fsync: a clear that does not reach the disk only costs a
             * copy after a crash. */
            pthread_mutex_lock(&pi->lock);
            int rc = write_blocks_locked(pi, b, b);
            pthread_mutex_unlock(&pi->lock);
            if (rc < 0)
                return rc;
        }
    }
    return cleared;
}

uint64_t persist_image_marked(struct persist_image *pi)
{
    struct table *t = __atomic_load_n(&pi->table, __ATOMIC_ACQUIRE);
    uint64_t count = 0;

    for (uint64_t n = 0; n < t->npages; n++) {
        struct page *pg = __atomic_load_n(&t->slots[n], __ATOMIC_ACQUIRE);
        for (unsigned i = 0; pg && i < PAGE_EXTENTS; i++)
            count += __atomic_load_n(&pg->marked[i], __ATOMIC_RELAXED) != CLEAR;
    }
    return count;
}

size_t persist_image_memory(const struct persist_image *pi)
{
    return __atomic_load_n(&pi->memory, __ATOMIC_RELAXED);
}
