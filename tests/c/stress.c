/* Mixed I/O from many threads, every byte checked, with forks while requests are in
 * flight.
 *
 *   stress DIR THREADS SECONDS FORKS
 *
 * Each thread owns one file at a time under DIR and keeps a copy of what it should
 * hold: random writes (1 B to 256 KiB, anywhere in the first 2 MiB), reads of random
 * ranges (through the same descriptor and through a second one), fstat, truncates,
 * and every few hundred operations a close, unlink and a fresh file. Every read is
 * compared with the copy. Meanwhile the main thread forks FORKS times, spread over
 * the run: each child writes, reads back and removes a file of its own and exits 0 only
 * if every byte matched. Prints "ok ..." and exits 0, or prints what differed and
 * exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SPAN (2 << 20)
#define MAXIO (256 << 10)

static const char *dir;
static double until;
static volatile int failed;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fail(const char *what, const char *path, long a, long b) {
    fprintf(stderr, "FAIL %s %s: %ld vs %ld (errno %d %s)\n", what, path, a, b, errno,
            strerror(errno));
    failed = 1;
}

struct worker {
    int id;
    long ops;
};

static void fill(unsigned char *b, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)next(s);
}

static void *work(void *arg) {
    struct worker *w = arg;
    uint64_t seed = 0x9e3779b97f4a7c15ull * (w->id + 1) ^ (uint64_t)getpid();
    unsigned char *shadow = calloc(1, SPAN), *buf = malloc(MAXIO), *got = malloc(MAXIO);
    char path[4096];
    int gen = 0, fd = -1;
    long size = 0;
    while (!failed && now() < until) {
        if (fd < 0) {
            snprintf(path, sizeof path, "%s/p%d-t%d-%d", dir, (int)getpid(), w->id, gen++);
            fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
            if (fd < 0) { fail("create", path, fd, 0); break; }
            memset(shadow, 0, SPAN);
            size = 0;
        }
        uint64_t r = next(&seed);
        long len = (r % 10 < 6) ? (long)(next(&seed) % 4096) + 1 : (long)(next(&seed) % MAXIO) + 1;
        long off = (long)(next(&seed) % (SPAN - len));
        switch (r % 16) {
        case 0: case 1: case 2: case 3: case 4: case 5: { /* write */
            fill(buf, len, &seed);
            ssize_t n = pwrite(fd, buf, len, off);
            if (n != len) { fail("pwrite", path, n, len); break; }
            memcpy(shadow + off, buf, len);
            if (off + len > size) size = off + len;
            break;
        }
        case 6: case 7: case 8: case 9: case 10: { /* read, this fd or a second one */
            int rfd = fd;
            if (r % 16 == 10) {
                rfd = open(path, O_RDONLY);
                if (rfd < 0) { fail("open", path, rfd, 0); break; }
            }
            ssize_t n = pread(rfd, got, len, off);
            long want = off >= size ? 0 : (off + len > size ? size - off : len);
            if (n != want) fail("pread length", path, n, want);
            else if (memcmp(got, shadow + off, n) != 0) {
                long i = 0;
                while (got[i] == shadow[off + i]) i++;
                fail("pread bytes at", path, off + i, off);
            }
            if (rfd != fd) close(rfd);
            break;
        }
        case 11: case 12: { /* fstat */
            struct stat st = {0};
            if (fstat(fd, &st) != 0 || st.st_size != size) fail("fstat size", path, st.st_size, size);
            break;
        }
        case 13: { /* truncate shorter */
            long to = size ? (long)(next(&seed) % size) : 0;
            if (ftruncate(fd, to) != 0) { fail("ftruncate", path, to, size); break; }
            memset(shadow + to, 0, size - to);
            size = to;
            break;
        }
        case 14: { /* stat by path */
            struct stat st = {0};
            if (stat(path, &st) != 0 || st.st_size != size) fail("stat size", path, st.st_size, size);
            break;
        }
        default: /* now and then a fresh file */
            if (next(&seed) % 32 == 0) {
                close(fd);
                if (unlink(path) != 0) fail("unlink", path, -1, 0);
                fd = -1;
            }
        }
        w->ops++;
    }
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    free(shadow);
    free(buf);
    free(got);
    return NULL;
}

/* A forked child's own work: write, read back, remove. */
static int child(int k) {
    char path[4096];
    snprintf(path, sizeof path, "%s/child-%d-%d", dir, (int)getppid(), k);
    unsigned char *a = malloc(300000), *b = malloc(300000);
    uint64_t s = 77 + k;
    fill(a, 300000, &s);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, a, 300000) != 300000) return 2;
    if (pread(fd, b, 300000, 0) != 300000 || memcmp(a, b, 300000) != 0) return 3;
    close(fd);
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size != 300000) return 4;
    if (unlink(path) != 0) return 5;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: stress DIR THREADS SECONDS FORKS\n");
        return 2;
    }
    dir = argv[1];
    int threads = atoi(argv[2]), forks = atoi(argv[4]);
    double secs = atof(argv[3]), start = now();
    until = start + secs;
    pthread_t t[64];
    struct worker w[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.id = i, .ops = 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    int forked = 0;
    for (int k = 0; k < forks && !failed; k++) {
        double at = start + secs * (k + 1) / (forks + 1);
        while (now() < at) usleep(1000);
        pid_t p = fork();
        if (p == 0) _exit(child(k));
        int st = 0;
        if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "FAIL child %d: status %d\n", k, st);
            failed = 1;
        }
        forked++;
    }
    long ops = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        ops += w[i].ops;
    }
    if (failed) return 1;
    printf("ok ops=%ld forks=%d\n", ops, forked);
    return 0;
}
