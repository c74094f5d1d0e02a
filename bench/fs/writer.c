/* The file-system workload of `make bench-fs`.
 *
 *     writer ROOT NOPS RATE LOG [MAX_SECONDS]
 *
 * Makes NOPS operations under ROOT (an empty directory that the watcher
 * under test already watches), then creates ROOT/DONE, then writes LOG.
 * RATE is operations per second (paced on CLOCK_MONOTONIC, open loop: a
 * late operation does not push the later ones back), or 0 for as fast as
 * it can.
 *
 * The operations, each one canonical event for the watcher:
 *   mkdir   the tree: NDIRS directories, d0, d0/s, d1, d1/s, ...  They are
 *           made during the run, not before, so the watchers' recursive
 *           handling of new directories is part of what is measured.
 *   create  open(O_CREAT|O_EXCL) d<a>/f<i>, write 64 bytes, close
 *   rename  d<a>/f<i> -> d<b>/m<i>, into another directory
 *   delete  unlink d<b>/m<i>
 * Files are pipelined with a window of WINDOW (64; the environment variable
 * FS_WRITER_WINDOW sets another): step k creates file k,
 * renames file k - WINDOW and deletes file k - 2*WINDOW, so files live
 * for a while and the three operations on one path are not back to back.
 * Every path is used once, so the harness can match events to operations
 * by path alone.
 *
 * For every operation the writer keeps, in memory, the CLOCK_MONOTONIC time
 * taken just BEFORE its system call (the kernel queues the event during the
 * call, so a timestamp taken after it could be later than the watcher's
 * receipt on the other CPU), and writes them all to LOG at the end, one line
 * per operation:  "<ns> <op> <path> [<new path>]"  with paths relative to
 * ROOT.  Nothing is written to disk during the run but the workload.
 *
 * The last line on stdout is a JSON summary: operations done, elapsed ns,
 * and how late the worst operation was against its schedule (a writer
 * that cannot keep RATE shows it there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NDIRS 8          /* d0, d0/s, d1, d1/s, d2, d2/s, d3, d3/s */
/* 64 by default; FS_WRITER_WINDOW sets it (bench-shadow spaces a path's
 * operations beyond fibers-shadow's coalescing window). */
static uint32_t WINDOW = 64;
#define PAYLOAD 64

enum op { OP_MKDIR, OP_CREATE, OP_RENAME, OP_DELETE };
static const char *const OP_NAMES[] = {"mkdir", "create", "rename", "delete"};

struct rec {
    uint64_t ns;
    uint32_t arg;        /* directory index (mkdir) or file index */
    uint8_t op;
};

static char root[4096];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "writer: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

/* Relative paths; the directory of file i's first and second name differ. */
static void dir_rel(char *buf, size_t n, unsigned d)
{
    if (d % 2 == 0)
        snprintf(buf, n, "d%u", d / 2);
    else
        snprintf(buf, n, "d%u/s", d / 2);
}

static void file_rel(char *buf, size_t n, unsigned i, int renamed)
{
    char dir[32];
    unsigned d = renamed ? (i + 3) % NDIRS : i % NDIRS;
    dir_rel(dir, sizeof dir, d);
    snprintf(buf, n, "%s/%c%u", dir, renamed ? 'm' : 'f', i);
}

static void abs_path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", root, rel);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: writer ROOT NOPS RATE LOG [MAX_SECONDS]\n");
        return 2;
    }
    snprintf(root, sizeof root, "%s", argv[1]);
    if (getenv("FS_WRITER_WINDOW") != NULL && atoi(getenv("FS_WRITER_WINDOW")) > 0)
        WINDOW = (uint32_t)atoi(getenv("FS_WRITER_WINDOW"));
    long nops = atol(argv[2]);
    double rate = atof(argv[3]);
    const char *log_path = argv[4];
    unsigned max_s = argc > 5 ? (unsigned)atoi(argv[5]) : 600;
    if (nops < NDIRS + 3 || rate < 0) {
        fprintf(stderr, "writer: need NOPS >= %d and RATE >= 0\n", NDIRS + 3);
        return 2;
    }
    alarm(max_s);                       /* bounded even if the harness dies */
    prctl(PR_SET_TIMERSLACK, 1UL);      /* 100 us steps need a precise sleep */

    uint32_t nfiles = (uint32_t)((nops - NDIRS) / 3);
    size_t total = NDIRS + 3 * (size_t)nfiles;
    struct rec *log = calloc(total, sizeof *log);
    if (log == NULL)
        die("calloc", "");

    /* The schedule as a list of (op, arg), in order. */
    size_t k = 0;
    for (unsigned d = 0; d < NDIRS; d++)
        log[k++] = (struct rec){0, d, OP_MKDIR};
    for (uint32_t step = 0; step < nfiles + 2 * WINDOW; step++) {
        if (step < nfiles)
            log[k++] = (struct rec){0, step, OP_CREATE};
        if (step >= WINDOW && step - WINDOW < nfiles)
            log[k++] = (struct rec){0, step - WINDOW, OP_RENAME};
        if (step >= 2 * WINDOW && step - 2 * WINDOW < nfiles)
            log[k++] = (struct rec){0, step - 2 * WINDOW, OP_DELETE};
    }
    if (k != total) {
        fprintf(stderr, "writer: schedule has %zu ops, expected %zu\n", k, total);
        return 1;
    }

    static const char payload[PAYLOAD] = "fibers bench-fs payload, 64 bytes long .......................";
    char rel[256], rel2[256], p[4352], p2[4352];
    uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
    uint64_t start = now_ns() + 1000000;  /* 1 ms to settle */
    uint64_t worst_late = 0;
    sleep_until(start);
    for (size_t j = 0; j < total; j++) {
        struct rec *r = &log[j];
        if (interval) {
            uint64_t due = start + j * interval;
            uint64_t t = now_ns();
            if (t < due)
                sleep_until(due);
            else if (t - due > worst_late)
                worst_late = t - due;
        }
        switch (r->op) {
        case OP_MKDIR:
            dir_rel(rel, sizeof rel, r->arg);
            abs_path(p, sizeof p, rel);
            r->ns = now_ns();
            if (mkdir(p, 0755) < 0)
                die("mkdir", p);
            break;
        case OP_CREATE: {
            file_rel(rel, sizeof rel, r->arg, 0);
            abs_path(p, sizeof p, rel);
            r->ns = now_ns();
            int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0)
                die("open", p);
            if (write(fd, payload, PAYLOAD) != PAYLOAD)
                die("write", p);
            close(fd);
            break;
        }
        case OP_RENAME:
            file_rel(rel, sizeof rel, r->arg, 0);
            file_rel(rel2, sizeof rel2, r->arg, 1);
            abs_path(p, sizeof p, rel);
            abs_path(p2, sizeof p2, rel2);
            r->ns = now_ns();
            if (rename(p, p2) < 0)
                die("rename", p);
            break;
        case OP_DELETE:
            file_rel(rel, sizeof rel, r->arg, 1);
            abs_path(p, sizeof p, rel);
            r->ns = now_ns();
            if (unlink(p) < 0)
                die("unlink", p);
            break;
        }
    }
    uint64_t end = now_ns();

    /* The sentinel: every watcher stops once it has seen this. */
    abs_path(p, sizeof p, "DONE");
    uint64_t done_ns = now_ns();
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open", p);
    close(fd);

    FILE *out = fopen(log_path, "w");
    if (out == NULL)
        die("fopen", log_path);
    for (size_t j = 0; j < total; j++) {
        const struct rec *r = &log[j];
        if (r->op == OP_MKDIR)
            dir_rel(rel, sizeof rel, r->arg);
        else
            file_rel(rel, sizeof rel, r->arg, r->op == OP_DELETE);
        fprintf(out, "%llu %s %s", (unsigned long long)r->ns, OP_NAMES[r->op], rel);
        if (r->op == OP_RENAME) {
            file_rel(rel2, sizeof rel2, r->arg, 1);
            fprintf(out, " %s", rel2);
        }
        fputc('\n', out);
    }
    fprintf(out, "%llu done DONE\n", (unsigned long long)done_ns);
    if (fclose(out) != 0)
        die("fclose", log_path);

    printf("{\"ops\": %zu, \"files\": %u, \"dirs\": %d, \"rate\": %.0f, "
           "\"start_ns\": %llu, \"end_ns\": %llu, \"elapsed_ns\": %llu, "
           "\"worst_late_ns\": %llu}\n",
           total, nfiles, NDIRS, rate, (unsigned long long)start,
           (unsigned long long)end, (unsigned long long)(end - start),
           (unsigned long long)worst_late);
    free(log);
    return 0;
}
