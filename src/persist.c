/* persist.c - crash-safe map of the extents that may differ (see persist.h
 * and doc/persistence.md). */
#include "config.h"

#include "persist.h"
#include "bitmap.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_SIZE 4096
#define MAGIC "mirrorfs-state 1\n"
/* Extents are kept in pages allocated on first use, so that the lock-free
 * write path never sees memory move: 4096 extents (16 GiB) a page, up to
 * 256 TiB an image. */
#define PAGE_EXTENTS 4096u
#define MAX_PAGES 16384u

/* marked[]: CLEAR; SETTING: being made durable (the cold path holds the
 * lock); DURABLE: on disk, writes into the extent may go ahead; TENTATIVE:
 * still on disk, but the sweep is deciding whether to clear it, so a write
 * must take the cold path (where the lock settles it). */
enum { CLEAR = 0, SETTING = 1, DURABLE = 2, TENTATIVE = 3 };

struct page {
    uint8_t marked[PAGE_EXTENTS];
    uint8_t age[PAGE_EXTENTS];       /* sweeps since the last write began */
    uint32_t active[PAGE_EXTENTS];   /* writes in progress */
};

struct persist {
    int dirfd; /* STATE_DIR/images */
};

struct persist_image {
    struct persist *p;
    ino_t ino;
    int fd;
    pthread_mutex_t lock; /* the cold path, the sweep's disk writes, paging */
    struct page *pages[MAX_PAGES]; /* published with atomic stores */
};

static char *file_name(ino_t ino)
{
    return g_strdup_printf("%llx.map", (unsigned long long)ino);
}

static char *manifest_text(const char *source, const char *target)
{
    return g_strdup_printf("source: %s\ntarget: %s\n", source, target);
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

    *had_state = persist_has_state(state_dir, source, target);
    if (!*had_state) {
        /* Another job's state, or none: start afresh. */
        g_autoptr(GDir) d = g_dir_open(images, 0, NULL);
        const char *n;
        while (d && (n = g_dir_read_name(d)) != NULL) {
            g_autofree char *f = g_build_filename(images, n, NULL);
            g_unlink(f);
        }
        if (!g_file_set_contents(manifest, want, -1, &gerr)) {
            *err = g_strdup_printf("%s: %s", manifest, gerr->message);
            return -EIO;
        }
    }
    if (g_mkdir_with_parents(images, 0700) < 0) {
        *err = g_strdup_printf("%s: %s", images, g_strerror(errno));
        return -errno;
    }
    int fd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *err = g_strdup_printf("%s: %s", images, g_strerror(errno));
        return -errno;
    }
    *out = g_new0(struct persist, 1);
    (*out)->dirfd = fd;
    return 0;
}

void persist_close(struct persist *p)
{
    if (!p)
        return;
    close(p->dirfd);
    g_free(p);
}

static struct page *page_of(struct persist_image *pi, uint64_t e)
{
    uint64_t n = e / PAGE_EXTENTS;

    if (n >= MAX_PAGES)
        return NULL;
    struct page *pg = __atomic_load_n(&pi->pages[n], __ATOMIC_ACQUIRE);
    if (pg)
        return pg;
    pthread_mutex_lock(&pi->lock);
    pg = pi->pages[n];
    if (!pg) {
        pg = g_new0(struct page, 1);
        __atomic_store_n(&pi->pages[n], pg, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pi->lock);
    return pg;
}

/* The page of extent e if it exists (no allocation). */
static struct page *page_peek(struct persist_image *pi, uint64_t e)
{
    uint64_t n = e / PAGE_EXTENTS;

    return n < MAX_PAGES ? __atomic_load_n(&pi->pages[n], __ATOMIC_ACQUIRE) : NULL;
}

/* With the lock held: write the on-disk byte that holds extent e's bit,
 * computed from the marks in memory (set or being set count as 1). */
static int write_byte(struct persist_image *pi, uint64_t e)
{
    uint64_t first = e & ~7ull;
    uint8_t byte = 0;

    for (unsigned k = 0; k < 8; k++) {
        struct page *pg = page_peek(pi, first + k);
        if (pg && __atomic_load_n(&pg->marked[(first + k) % PAGE_EXTENTS], __ATOMIC_SEQ_CST))
            byte |= (uint8_t)(1u << k);
    }
    if (pwrite(pi->fd, &byte, 1, (off_t)(HEADER_SIZE + first / 8)) != 1)
        return errno ? -errno : -EIO;
    return 0;
}

static int write_header(struct persist_image *pi, const char *name)
{
    char header[HEADER_SIZE];
    g_autofree char *escaped = g_strescape(name, NULL);
    int n = snprintf(header, sizeof(header), MAGIC "ino: %llu\nname: %s\n",
                     (unsigned long long)pi->ino, escaped);

    if (n < 0 || n >= HEADER_SIZE)
        return -ENAMETOOLONG;
    memset(header + n, 0, sizeof(header) - (size_t)n);
    if (pwrite(pi->fd, header, sizeof(header), 0) != (ssize_t)sizeof(header))
        return errno ? -errno : -EIO;
    return fdatasync(pi->fd) < 0 ? -errno : 0;
}

/* The previous run's bits, if its header names this image. */
static struct bitmap *load_previous(int fd, ino_t ino, const char *name, uint64_t nextents)
{
    char header[HEADER_SIZE + 1] = {0};
    g_autofree char *escaped = g_strescape(name, NULL);
    g_autofree char *want = g_strdup_printf(MAGIC "ino: %llu\nname: %s\n",
                                            (unsigned long long)ino, escaped);

    if (pread(fd, header, HEADER_SIZE, 0) != HEADER_SIZE || strcmp(header, want) != 0)
        return NULL;
    struct bitmap *prev = bitmap_new(nextents);
    uint64_t nbytes = (nextents + 7) / 8;
    g_autofree uint8_t *bits = g_malloc0(nbytes ? nbytes : 1);
    ssize_t got = pread(fd, bits, nbytes, HEADER_SIZE);
    /* Bytes past what was written read as zero: nothing was marked there,
     * because nothing was ever written there. */
    for (uint64_t e = 0; got > 0 && e < nextents && e / 8 < (uint64_t)got; e++)
        if (bits[e / 8] & (1u << (e % 8)))
            bitmap_set_range(prev, e, 1);
    return prev;
}

int persist_image_open(struct persist *p, const char *name, ino_t ino, uint64_t size,
                       enum persist_marks how, struct persist_image **out,
                       struct bitmap **previous)
{
    g_autofree char *fname = file_name(ino);
    uint64_t nextents = (size + PERSIST_EXTENT - 1) / PERSIST_EXTENT;
    int fd = openat(p->dirfd, fname, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int rc;

    if (fd < 0)
        return -errno;
    *previous = how == PERSIST_MARK_ALL ? NULL : load_previous(fd, ino, name, nextents);
    bool all_dirty = how == PERSIST_MARK_ALL ||
                     (how == PERSIST_MARK_PREVIOUS_OR_ALL && *previous == NULL);
    struct persist_image *pi = g_new0(struct persist_image, 1);
    pi->p = p;
    pi->ino = ino;
    pi->fd = fd;
    pthread_mutex_init(&pi->lock, NULL);

    /* The file is rewritten from what the job will trust: everything (a
     * first pass), or the previous bits (a resume), or nothing. */
    if (ftruncate(fd, HEADER_SIZE) < 0) {
        rc = -errno;
        goto fail;
    }
    for (uint64_t e = 0; e < nextents; e++) {
        bool mark = all_dirty || (*previous && bitmap_test(*previous, e));
        if (!mark)
            continue;
        struct page *pg = page_of(pi, e);
        if (!pg) {
            rc = -EFBIG;
            goto fail;
        }
        pg->marked[e % PAGE_EXTENTS] = DURABLE;
    }
    pthread_mutex_lock(&pi->lock);
    rc = 0;
    for (uint64_t e = 0; rc == 0 && e < nextents; e += 8)
        rc = write_byte(pi, e);
    pthread_mutex_unlock(&pi->lock);
    if (rc == 0)
        rc = write_header(pi, name);
    if (rc < 0)
        goto fail;
    *out = pi;
    return 0;
fail:
    persist_image_close(pi);
    if (*previous) {
        bitmap_free(*previous);
        *previous = NULL;
    }
    return rc;
}

void persist_image_close(struct persist_image *pi)
{
    if (!pi)
        return;
    for (unsigned n = 0; n < MAX_PAGES; n++)
        g_free(pi->pages[n]);
    if (pi->fd >= 0)
        close(pi->fd);
    pthread_mutex_destroy(&pi->lock);
    g_free(pi);
}

int persist_image_rename(struct persist_image *pi, const char *name)
{
    pthread_mutex_lock(&pi->lock);
    int rc = write_header(pi, name);
    pthread_mutex_unlock(&pi->lock);
    return rc;
}

void persist_image_remove(struct persist_image *pi)
{
    g_autofree char *fname = file_name(pi->ino);

    unlinkat(pi->p->dirfd, fname, 0);
}

int persist_write_begin(struct persist_image *pi, uint64_t off, uint64_t len)
{
    uint64_t first = off / PERSIST_EXTENT;
    uint64_t last = (off + (len ? len : 1) - 1) / PERSIST_EXTENT;
    bool cold = false;
    int rc = 0;

    for (uint64_t e = first; e <= last; e++) {
        struct page *pg = page_of(pi, e);
        if (!pg)
            return -EFBIG;
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
     * covers marking and writing the bytes (into the page cache); the
     * fdatasync runs outside it, so that writers into other cold extents
     * (a guest starting random writes after the first pass) share the
     * disk's flushes instead of queueing behind each other's. */
    pthread_mutex_lock(&pi->lock);
    for (uint64_t e = first; rc == 0 && e <= last; e++) {
        struct page *pg = page_of(pi, e);
        unsigned i = e % PAGE_EXTENTS;
        uint8_t m = __atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST);
        if (m == DURABLE || m == SETTING)
            continue; /* SETTING: its byte is written; our fdatasync covers it */
        if (m == TENTATIVE) {
            /* The sweep has not cleared it on disk (it does that under this
             * lock): keep it. */
            __atomic_store_n(&pg->marked[i], DURABLE, __ATOMIC_SEQ_CST);
            continue;
        }
        __atomic_store_n(&pg->marked[i], SETTING, __ATOMIC_SEQ_CST);
        rc = write_byte(pi, e);
    }
    pthread_mutex_unlock(&pi->lock);
    if (rc == 0 && fdatasync(pi->fd) < 0)
        rc = -errno;
    for (uint64_t e = first; rc == 0 && e <= last; e++) {
        uint8_t expect = SETTING;
        __atomic_compare_exchange_n(&page_of(pi, e)->marked[e % PAGE_EXTENTS], &expect, DURABLE,
                                    false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    return rc;
}

void persist_write_end(struct persist_image *pi, uint64_t off, uint64_t len)
{
    uint64_t first = off / PERSIST_EXTENT;
    uint64_t last = (off + (len ? len : 1) - 1) / PERSIST_EXTENT;

    for (uint64_t e = first; e <= last; e++) {
        struct page *pg = page_peek(pi, e);
        if (pg)
            __atomic_sub_fetch(&pg->active[e % PAGE_EXTENTS], 1, __ATOMIC_SEQ_CST);
    }
}

int persist_image_sweep(struct persist_image *pi, unsigned quiet_ticks,
                        persist_clean_fn is_clean, void *ctx)
{
    int cleared = 0;

    for (unsigned n = 0; n < MAX_PAGES; n++) {
        struct page *pg = page_peek(pi, (uint64_t)n * PAGE_EXTENTS);
        if (!pg)
            continue;
        for (unsigned i = 0; i < PAGE_EXTENTS; i++) {
            if (__atomic_load_n(&pg->marked[i], __ATOMIC_SEQ_CST) != DURABLE)
                continue;
            uint8_t age = __atomic_load_n(&pg->age[i], __ATOMIC_RELAXED);
            if (age < quiet_ticks) {
                __atomic_store_n(&pg->age[i], (uint8_t)(age + 1), __ATOMIC_RELAXED);
                continue;
            }
            if (__atomic_load_n(&pg->active[i], __ATOMIC_SEQ_CST) != 0)
                continue;
            uint64_t e = (uint64_t)n * PAGE_EXTENTS + i;
            /* Mark first, then look: a write that begins from here on finds
             * the extent not durable and takes the cold path. */
            uint8_t expect = DURABLE;
            if (!__atomic_compare_exchange_n(&pg->marked[i], &expect, TENTATIVE, false,
                                             __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                continue;
            bool ok = __atomic_load_n(&pg->active[i], __ATOMIC_SEQ_CST) == 0 &&
                      is_clean(ctx, e * PERSIST_EXTENT, PERSIST_EXTENT);
            pthread_mutex_lock(&pi->lock);
            expect = TENTATIVE;
            /* A cold-path write may have taken it back already. */
            if (__atomic_compare_exchange_n(&pg->marked[i], &expect, ok ? CLEAR : DURABLE,
                                            false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST) &&
                ok) {
                /* No fsync: a clear that does not reach the disk only costs
                 * a copy after a crash. */
                int rc = write_byte(pi, e);
                if (rc < 0) {
                    pthread_mutex_unlock(&pi->lock);
                    return rc;
                }
                cleared++;
            }
            pthread_mutex_unlock(&pi->lock);
        }
    }
    return cleared;
}

uint64_t persist_image_marked(struct persist_image *pi)
{
    uint64_t count = 0;

    for (unsigned n = 0; n < MAX_PAGES; n++) {
        struct page *pg = page_peek(pi, (uint64_t)n * PAGE_EXTENTS);
        for (unsigned i = 0; pg && i < PAGE_EXTENTS; i++)
            count += __atomic_load_n(&pg->marked[i], __ATOMIC_RELAXED) != CLEAR;
    }
    return count;
}
