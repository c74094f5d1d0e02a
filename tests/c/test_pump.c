/*
 * test_pump.c -- the completion pump's contract, checked on each backend
 * under AddressSanitizer and UBSan (run by `make ctest`).
 *
 * For every backend that can run here: a recv completes with its data;
 * a cancelled recv still completes, exactly once, with -ECANCELED;
 * forget_fd cancels what waits on an fd; a foreign poll sees readiness; a
 * file read at an offset returns the right bytes; an fd number far past
 * any open fd is refused with EBADF at no cost in memory; and on io_uring a
 * multishot recv lends provided buffers and ends without FIB__C_MORE.
 * After each case nothing is in flight.
 *
 * The contract's shape too: every table has the six required entries; the
 * epoll table leaves the optional ones NULL, and the fib__pump_* wrappers
 * answer for them as documented in fib_pump.h.  `make ctest` builds this
 * file twice, with and without FIB_HAVE_LIBURING; without it there is no
 * io_uring table, the probe says why, and opening io_uring gives -ENOSYS.
 * Exits 0 on success, 1 on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fib_pump.h"

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__,    \
                    __LINE__, backend_name, #cond);                       \
            exit(1);                                                      \
        }                                                                 \
    } while (0)

static const char *backend_name = "?";

/* Waits (bounded) until n completions arrived; returns how many. */
static int collect(fib__pump *p, fib__cqe *out, int n)
{
    int got = 0, rc, rounds;
    for (rounds = 0; rounds < 100 && got < n; rounds++) {
        rc = fib__pump_wait(p, 10000000, out + got, n - got);
        CHECK(rc >= 0 || rc == -EINTR);
        if (rc > 0)
            got += rc;
    }
    return got;
}

static void init_op(fib__op *op, int code, int fd, void *buf, unsigned len)
{
    memset(op, 0, sizeof(*op));
    op->code = (uint8_t)code;
    op->fd = fd;
    op->buf = buf;
    op->len = len;
    op->offset = -1;
}

static void test_recv(fib__pump *p)
{
    int sv[2];
    char buf[16];
    fib__op op;
    fib__cqe c;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    init_op(&op, FIB__OP_RECV, sv[1], buf, sizeof(buf));
    CHECK(fib__pump_submit(p, &op) == 0);
    CHECK(p->inflight == 1);
    CHECK(write(sv[0], "hello", 5) == 5);
    CHECK(collect(p, &c, 1) == 1);
    CHECK(c.op == &op && c.res == 5 && !(c.flags & FIB__C_MORE));
    CHECK(op.res == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(p->inflight == 0 && p->live == NULL);
    close(sv[0]);
    close(sv[1]);
}

static void test_cancel(fib__pump *p)
{
    int sv[2], rc = 0, i;
    char buf[16];
    fib__op op;
    fib__cqe c[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    init_op(&op, FIB__OP_RECV, sv[1], buf, sizeof(buf));
    CHECK(fib__pump_submit(p, &op) == 0);
    CHECK(fib__pump_wait(p, 0, c, 2) == 0);     /* reaches the kernel */
    CHECK(fib__pump_cancel(p, &op) == 0);
    CHECK(collect(p, c, 1) == 1);
    CHECK(c[0].op == &op && c[0].res == -ECANCELED);
    /* exactly once: nothing else comes */
    for (i = 0; i < 10; i++) {      /* a signal may interrupt the wait */
        rc = fib__pump_wait(p, 20000000, c, 2);
        if (rc != -EINTR)
            break;
    }
    CHECK(rc == 0);
    CHECK(p->inflight == 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_forget_fd(fib__pump *p)
{
    int sv[2];
    char b1[8], b2[8];
    fib__op r, w;
    fib__cqe c[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    init_op(&r, FIB__OP_RECV, sv[1], b1, sizeof(b1));
    init_op(&w, FIB__OP_RECV, sv[1], b2, sizeof(b2));
    CHECK(fib__pump_submit(p, &r) == 0);
    CHECK(fib__pump_submit(p, &w) == 0);
    CHECK(fib__pump_wait(p, 0, c, 2) == 0);
    CHECK(fib__pump_forget_fd(p, sv[1], 1) == 0);
    close(sv[1]);
    CHECK(collect(p, c, 2) == 2);
    CHECK(c[0].res == -ECANCELED && c[1].res == -ECANCELED);
    CHECK(p->inflight == 0);
    close(sv[0]);
}

static void test_foreign_poll(fib__pump *p)
{
    int fds[2];
    fib__op op;
    fib__cqe c;
    CHECK(pipe2(fds, O_CLOEXEC) == 0);
    init_op(&op, FIB__OP_POLL, fds[0], NULL, 0);
    op.events = POLLIN;
    op.flags = FIB__F_FOREIGN;
    CHECK(fib__pump_submit(p, &op) == 0);
    CHECK(fib__pump_wait(p, 0, &c, 1) == 0);     /* not readable yet */
    CHECK(write(fds[1], "x", 1) == 1);
    CHECK(collect(p, &c, 1) == 1);
    CHECK(c.op == &op && (c.res & POLLIN));
    CHECK(p->inflight == 0);
    close(fds[0]);
    close(fds[1]);
}

/* Peak RSS of this process, in KiB. */
static long max_rss_kib(void)
{
    struct rusage ru;
    CHECK(getrusage(RUSAGE_SELF, &ru) == 0);
    return ru.ru_maxrss;
}

/* An fd number far past any open fd is refused with EBADF, without the
 * backend sizing anything by the number first (epoll's per-fd table once
 * grew to 10**8 entries, gigabytes, before finding out). */
static void test_huge_fd(fib__pump *p)
{
    static const int codes[] = {FIB__OP_POLL, FIB__OP_READ, FIB__OP_RECV};
    char buf[8];
    long before = max_rss_kib();
    fib__op op;
    fib__cqe c;
    int i, rc;
    for (i = 0; i < 3; i++) {
        init_op(&op, codes[i], 100000000, buf, sizeof(buf));
        op.events = POLLIN;
        op.flags = FIB__F_FOREIGN;
        rc = fib__pump_submit(p, &op);
        if (rc == 0) {                  /* io_uring: the kernel says so */
            CHECK(collect(p, &c, 1) == 1);
            CHECK(c.op == &op);
            rc = c.res;
        } else if (rc == 1) {
            rc = op.res;
        }
        CHECK(rc == -EBADF);
        CHECK(p->inflight == 0);
    }
    CHECK(max_rss_kib() - before < 50 * 1024);
}

static void test_file_read(fib__pump *p)
{
    char path[] = "/tmp/fib_pump_testXXXXXX";
    char buf[4];
    int fd = mkstemp(path), rc;
    fib__op op;
    fib__cqe c;
    CHECK(fd >= 0);
    unlink(path);
    CHECK(write(fd, "0123456789", 10) == 10);
    init_op(&op, FIB__OP_READ, fd, buf, sizeof(buf));
    op.offset = 3;
    rc = fib__pump_submit(p, &op);
    CHECK(rc == 0 || rc == 1);                   /* epoll: done on the spot */
    if (rc == 0) {
        CHECK(collect(p, &c, 1) == 1);
        CHECK(c.op == &op);
    }
    CHECK(op.res == 4 && memcmp(buf, "3456", 4) == 0);
    CHECK(p->inflight == 0);
    CHECK(fib__pump_forget_fd(p, fd, 0) == 0);
    close(fd);
}

static void test_multishot(fib__pump *p)
{
    int sv[2], i, got = 0, total = 0, finals = 0;
    fib__op op;
    fib__cqe c[8];
    char seen[64];
    init_op(&op, FIB__OP_RECV_MULTI, -1, NULL, 0);
    if (fib__pump_provide(p, 8, 64) < 0) {
        CHECK(fib__pump_submit(p, &op) < 0);     /* refused, not queued */
        return;
    }
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    op.fd = sv[1];
    CHECK(fib__pump_submit(p, &op) == 0);
    CHECK(fib__pump_wait(p, 0, c, 8) == 0);
    for (i = 0; i < 3; i++) {
        CHECK(write(sv[0], "abc", 3) == 3);
        got = collect(p, c, 1);
        CHECK(got == 1 && (c[0].flags & FIB__C_MORE) &&
              (c[0].flags & FIB__C_BUFFER) && c[0].res == 3);
        memcpy(seen + total, fib__pump_buffer(p, FIB__CQE_BID(c[0].flags)),
               (size_t)c[0].res);
        total += c[0].res;
        fib__pump_recycle(p, FIB__CQE_BID(c[0].flags));
    }
    CHECK(total == 9 && memcmp(seen, "abcabcabc", 9) == 0);
    CHECK(p->inflight == 1);                     /* still armed */
    CHECK(fib__pump_forget_fd(p, sv[1], 1) == 0);
    close(sv[1]);
    for (i = 0; i < 100 && p->inflight; i++) {
        got = collect(p, c, 1);
        if (got == 1 && !(c[0].flags & FIB__C_MORE))
            finals++;
    }
    CHECK(finals == 1 && p->inflight == 0 && p->live == NULL);
    close(sv[0]);
}

/* The six required entries, on any table. */
static void check_required(const fib__backend *be)
{
    CHECK(be->name != NULL);
    CHECK(be->open != NULL && be->submit != NULL && be->cancel != NULL);
    CHECK(be->forget_fd != NULL && be->wait != NULL && be->close != NULL);
}

/* Checked whether or not the backend can run here: the tables are data. */
static void test_tables(void)
{
    const fib__backend *be = &fib__epoll_backend;
    backend_name = "epoll table";
    check_required(be);
    /* epoll has none of the optional entries: they are io_uring features,
     * and flush has nothing queued to send. */
    CHECK(be->flush == NULL);
    CHECK(be->provide == NULL && be->buffer == NULL && be->recycle == NULL);
    CHECK(be->register_buffer == NULL && be->unregister_buffer == NULL);
#ifdef FIB_HAVE_LIBURING
    be = &fib__uring_backend;
    backend_name = "io_uring table";
    check_required(be);
    CHECK(be->flush != NULL);
    CHECK(be->provide != NULL && be->buffer != NULL && be->recycle != NULL);
    CHECK(be->register_buffer != NULL && be->unregister_buffer != NULL);
#endif
    printf("backend tables ok (%s)\n",
#ifdef FIB_HAVE_LIBURING
           "epoll, io_uring"
#else
           "epoll; built without liburing"
#endif
           );
}

/* The wrappers on a pump whose optional entries are NULL answer as a
 * backend without the feature would. */
static void test_optional_wrappers(fib__pump *p)
{
    char mem[64];
    if (p->be->flush == NULL) {
        p->unflushed = 3;
        CHECK(fib__pump_flush(p) == 0);
        CHECK(p->unflushed == 0);
    }
    if (p->be->provide == NULL) {
        CHECK(fib__pump_provide(p, 8, 64) == -EOPNOTSUPP);
        CHECK(p->be->buffer == NULL && p->be->recycle == NULL);
        CHECK(fib__pump_buffer(p, 0) == NULL);
        fib__pump_recycle(p, 0);                /* a no-op, not a crash */
    }
    if (p->be->register_buffer == NULL) {
        CHECK(fib__pump_register_buffer(p, mem, sizeof(mem)) == -EOPNOTSUPP);
        CHECK(p->be->unregister_buffer == NULL);
        fib__pump_unregister_buffer(p, 0);      /* a no-op, not a crash */
    }
    CHECK(p->inflight == 0 && p->live == NULL);
}

static void run_backend(int which, unsigned flags)
{
    fib__pump p;
    int rc = fib__pump_open(&p, which, 64, flags);
    if (rc < 0) {
        printf("%s: cannot open (%s), skipped\n", backend_name,
               strerror(-rc));
        return;
    }
    /* Without DEFER_TASKRUN when told so; with it only on io_uring. */
    if (which != FIB__BACKEND_URING || (flags & FIB__PUMP_NO_DEFER_TASKRUN))
        CHECK(p.defer_taskrun == 0);
    check_required(p.be);
    test_optional_wrappers(&p);
    test_recv(&p);
    test_cancel(&p);
    test_forget_fd(&p);
    test_foreign_poll(&p);
    test_file_read(&p);
    test_huge_fd(&p);
    test_multishot(&p);
    fib__pump_close(&p);
    printf("%s: pump contract ok\n", backend_name);
}

int main(void)
{
    char why[256];
    test_tables();
#ifndef FIB_HAVE_LIBURING
    {
        fib__pump p;
        backend_name = "io_uring (no liburing)";
        why[0] = '\0';
        CHECK(fib__uring_probe(why, sizeof(why)) == -ENOSYS);
        CHECK(strstr(why, "built without liburing") != NULL);
        CHECK(fib__pump_open(&p, FIB__BACKEND_URING, 64, 0) == -ENOSYS);
        CHECK(p.be == NULL);
        fib__pump_close(&p);                    /* harmless after a refusal */
    }
#endif
    if (fib__uring_probe(why, sizeof(why)) == 0) {
        backend_name = "io_uring";
        run_backend(FIB__BACKEND_URING, 0);
        backend_name = "io_uring without DEFER_TASKRUN";
        run_backend(FIB__BACKEND_URING, FIB__PUMP_NO_DEFER_TASKRUN);
    } else {
        printf("io_uring: skipped (%s)\n", why);
    }
    backend_name = "epoll";
    run_backend(FIB__BACKEND_EPOLL, FIB__PUMP_NO_DEFER_TASKRUN);
    return 0;
}
