/* contrib/bench-watch.c - what the fanotify watcher (src/watch.c) costs the
 * daemon's own writes to SOURCE.
 *
 *   make contrib/bench-watch
 *   sudo contrib/bench-watch [-d DIR] [-s SECONDS] [-r RUNS] [-t THREADS]
 *                            [-b BLOCK] [-f FILE_SIZE]
 *
 * THREADS threads pwrite() BLOCK bytes at random BLOCK-aligned offsets into
 * one FILE_SIZE file in a new directory below DIR (default /tmp, 10 s, 5
 * runs, 2 threads, 4K, 1G; the file is written in full first, so the runs
 * measure page-cache writes, where a per-write cost shows most), in four
 * modes:
 *
 *   plain    no watcher; the file opened by its path
 *   watch    watch_start() on DIR's file system; the file opened by its
 *            path: every write makes an event the watcher reads and drops
 *   private  the same, with the file opened below watch_private_root() and
 *            that clone given to watch_start()
 *   clone    no watcher; the file opened below the clone (the clone alone)
 *
 * Each run measures every mode once, in a random order, and the ratio of each mode's IOPS
 * to plain's in the same run.  The output gives per-run figures, then the medians of the
 * IOPS and of the per-run ratios, so that slow drift of a noisy machine cancels out.
 * "ns/write" is the writer threads' CPU time (user and system) per write,
 * which other load on the machine disturbs less than the IOPS.  "watcher
 * cpu" is the CPU time of the process outside the writer threads (the
 * watcher thread, mostly) as a share of one CPU.
 */
#include "config.h"

#include "util.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

enum mode { PLAIN, WATCH, PRIVATE, CLONE, MODES };
static const char *mode_name[MODES] = {"plain", "watch", "private", "clone"};

static struct {
    const char *dir;
    unsigned seconds, runs, threads;
    uint64_t block, size;
} cfg = {"/tmp", 10, 5, 2, 4096, 1ull << 30};

struct writer {
    pthread_t thread;
    int fd;
    uint64_t seed;
    uint64_t ops;
    double cpu; /* seconds of this thread */
    atomic_bool *stop;
};

static atomic_ulong calls; /* fn calls: must stay 0, all writes are ours */

static void on_write(void *ctx, dev_t dev, ino_t ino, pid_t pid)
{
    (void)ctx;
    (void)dev;
    (void)ino;
    if (pid == getpid())
        atomic_fetch_add(&calls, 1);
}

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    char *buf = g_malloc(cfg.block);
    uint64_t x = w->seed, blocks = cfg.size / cfg.block;
    struct rusage ru;

    memset(buf, 0xa5, cfg.block);
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        if (pwrite(w->fd, buf, cfg.block, (off_t)((x % blocks) * cfg.block)) !=
            (ssize_t)cfg.block) {
            perror("pwrite");
            exit(1);
        }
        w->ops++;
    }
    getrusage(RUSAGE_THREAD, &ru);
    w->cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
             (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    g_free(buf);
    return NULL;
}

static double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* One measurement: IOPS; the writers' CPU time per write in *per_op (ns),
 * which other load on the machine disturbs less than the IOPS; the CPU
 * share outside the writers in *other. */
static double measure(enum mode m, int root_fd, int priv_fd, const char *name,
                      double *per_op, double *other)
{
    struct watch *watch = NULL;
    g_autofree char *err = NULL;
    struct writer *w = g_new0(struct writer, cfg.threads);
    atomic_bool stop = false;
    int fd;

    if ((m == WATCH || m == PRIVATE) && watch_start(root_fd, m == PRIVATE ? priv_fd : -1,
                                                    on_write, NULL, &watch, &err) < 0) {
        fprintf(stderr, "bench-watch: %s\n", err);
        exit(1);
    }
    fd = (m == PRIVATE || m == CLONE) ? openat(priv_fd, name, O_RDWR | O_CLOEXEC)
                                      : openat(root_fd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        perror("open");
        exit(1);
    }
    double cpu0 = process_cpu();
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < cfg.threads; i++) {
        w[i].fd = fd;
        w[i].seed = 0x9e3779b97f4a7c15ull * (i + 1) ^ t0;
        w[i].stop = &stop;
        pthread_create(&w[i].thread, NULL, write_loop, &w[i]);
    }
    sleep(cfg.seconds);
    atomic_store(&stop, true);
    uint64_t ops = 0;
    double writers = 0;
    for (unsigned i = 0; i < cfg.threads; i++) {
        pthread_join(w[i].thread, NULL);
        ops += w[i].ops;
        writers += w[i].cpu;
    }
    double secs = (now_ns() - t0) / 1e9;
    /* Stop the watcher before closing: its last events are part of it. */
    watch_stop(watch);
    *other = (process_cpu() - cpu0 - writers) / secs;
    *per_op = writers * 1e9 / (double)ops;
    close(fd);
    g_free(w);
    return ops / secs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    double *c = g_memdup2(v, n * sizeof(*v));
    qsort(c, n, sizeof(*c), cmp_double);
    double m = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
    g_free(c);
    return m;
}

static uint64_t size_arg(const char *s)
{
    uint64_t v;
    if (parse_size(s, &v) < 0 || v == 0) {
        fprintf(stderr, "bench-watch: bad size %s\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    int opt;

    while ((opt = getopt(argc, argv, "d:s:r:t:b:f:")) != -1) {
        switch (opt) {
        case 'd':
            cfg.dir = optarg;
            break;
        case 's':
            cfg.seconds = (unsigned)atoi(optarg);
            break;
        case 'r':
            cfg.runs = (unsigned)atoi(optarg);
            break;
        case 't':
            cfg.threads = (unsigned)atoi(optarg);
            break;
        case 'b':
            cfg.block = size_arg(optarg);
            break;
        case 'f':
            cfg.size = size_arg(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench-watch [-d DIR] [-s SECONDS] [-r RUNS] "
                            "[-t THREADS] [-b BLOCK] [-f FILE_SIZE]\n");
            return 2;
        }
    }
    if (cfg.runs == 0 || cfg.threads == 0 || cfg.seconds == 0 || cfg.block > cfg.size) {
        fprintf(stderr, "bench-watch: bad arguments\n");
        return 2;
    }

    g_autofree char *tmpl = g_strdup_printf("%s/bench-watch.XXXXXX", cfg.dir);
    if (!g_mkdtemp(tmpl)) {
        fprintf(stderr, "bench-watch: %s: %s\n", tmpl, g_strerror(errno));
        return 1;
    }
    g_autofree char *file = g_strdup_printf("%s/img", tmpl);
    g_autofree char *err = NULL;
    int root_fd = open(tmpl, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int priv_fd = -1, fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (root_fd < 0 || fd < 0 || watch_private_root(tmpl, &priv_fd, &err) < 0) {
        fprintf(stderr, "bench-watch: %s\n", err ? err : g_strerror(errno));
        return 1;
    }
    char *chunk = g_malloc0(1 << 20);
    for (uint64_t off = 0; off < cfg.size; off += 1 << 20)
        if (pwrite(fd, chunk, MIN(1 << 20, cfg.size - off), (off_t)off) < 0) {
            perror("fill");
            return 1;
        }
    g_free(chunk);
    close(fd);

    printf("bench-watch: %s, %u x %u s, %u threads, %" G_GUINT64_FORMAT
           " B writes into %" G_GUINT64_FORMAT " B\n",
           tmpl, cfg.runs, cfg.seconds, cfg.threads, cfg.block, cfg.size);
    double iops[MODES][cfg.runs], ratio[MODES][cfg.runs], other[MODES][cfg.runs];
    double per_op[MODES][cfg.runs];
    GRand *rng = g_rand_new_with_seed(1);
    for (unsigned r = 0; r < cfg.runs; r++) {
        /* A new order each run, so that no mode always follows the same
         * other one (the watch mode leaves the kernel a group to tear
         * down); and a pause, for that teardown to be over. */
        enum mode order[MODES] = {PLAIN, WATCH, PRIVATE, CLONE};
        for (unsigned k = MODES - 1; k > 0; k--) {
            unsigned j = (unsigned)g_rand_int_range(rng, 0, (gint32)k + 1);
            enum mode t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        for (unsigned k = 0; k < MODES; k++) {
            enum mode m = order[k];
            usleep(200000);
            iops[m][r] = measure(m, root_fd, priv_fd, "img", &per_op[m][r], &other[m][r]);
        }
        printf("run %u:", r + 1);
        for (unsigned m = 0; m < MODES; m++) {
            ratio[m][r] = iops[m][r] / iops[PLAIN][r];
            printf("  %s %.0f (%.3f, %.0f ns/write, watcher cpu %.0f%%)", mode_name[m],
                   iops[m][r], ratio[m][r], per_op[m][r], 100 * other[m][r]);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("median:");
    for (unsigned m = 0; m < MODES; m++)
        printf("\n  %-8s %8.0f IOPS  ratio %.3f  %5.0f ns/write", mode_name[m],
               median(iops[m], cfg.runs), median(ratio[m], cfg.runs),
               median(per_op[m], cfg.runs));
    printf("\ncallbacks for our own writes: %lu (must be 0)\n", atomic_load(&calls));

    g_rand_free(rng);
    close(priv_fd);
    close(root_fd);
    unlink(file);
    rmdir(tmpl);
    return atomic_load(&calls) ? 1 : 0;
}
