/*
 * fib_uring.c -- the io_uring backend of the completion pump.
 *
 * Some facts about io_uring that shape this file:
 *
 * - Submission is free until io_uring_enter.  Records are turned into SQEs
 *   the moment a fiber asks, but nothing reaches the kernel until the tick's
 *   single wait(), which submits the whole batch and reaps completions in
 *   the same system call.
 *
 * - Set-up flags are a ladder.  SINGLE_ISSUER | DEFER_TASKRUN (6.1+) lets
 *   the kernel run completion work only when we ask for events, in our own
 *   thread, with no interrupts of the running fiber; COOP_TASKRUN (5.19+)
 *   is the next best; plain set-up works everywhere io_uring does.  The
 *   scheduler is single-threaded, which is exactly what SINGLE_ISSUER asks.
 *   FIB__PUMP_NO_DEFER_TASKRUN starts below the first rung, to run as on
 *   kernels before 6.1 (see fib_pump.h).
 *
 * - A socket with O_NONBLOCK set makes io_uring hand back -EAGAIN instead
 *   of waiting for data.  The socket layer therefore keeps its fds blocking
 *   on this backend and uses MSG_DONTWAIT where it tries a call directly.
 *
 * - An in-flight request holds its own reference to the file, so closing
 *   an fd does not end a recv waiting on it.  forget_fd() cancels by fd and
 *   submits at once, before the caller's close() can free the number.
 *
 * - Cancel requests complete too.  Their user_data is NULL, which wait()
 *   skips; the cancelled request's own completion arrives separately.
 *
 * - Multishot recv needs provided buffers: the kernel picks one per
 *   completion from a ring we share with it.  liburing 2.3 has no
 *   io_uring_setup_buf_ring, so provide() maps and registers the ring by
 *   hand.  The socket layer copies each buffer's bytes out and recycles it
 *   at once, so a buffer is never lent for longer than one harvest.
 */
#include <sys/mman.h>
#include <sys/uio.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fib_pump.h"

/* This file is compiled only when pkg-config finds liburing (setup.py, the
 * Makefile's ctest), and then with FIB_HAVE_LIBURING, which tells
 * fib_pump.c to use this file's probe and table instead of its fallback.
 * Compiled without it, both files would define fib__uring_probe. */
#ifndef FIB_HAVE_LIBURING
#error "fib_uring.c needs liburing: compile it with -DFIB_HAVE_LIBURING, or leave it out"
#endif

#include <liburing.h>

typedef struct {
    struct io_uring ring;
    unsigned setup_flags;
    /* provided buffers (group 0), set up by provide() */
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    char *bufs;
    unsigned nbufs;
    unsigned bufsize;
    /* registered (fixed) buffers: a sparse table, filled slot by slot */
    int fixed_ready;
    uint64_t fixed_used;        /* bit i: slot i holds a registration */
} fib__uring;

#define FIB__FIXED_SLOTS 64

/* The set-up ladder, best first. */
static const unsigned fib__uring_ladder[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_COOP_TASKRUN,
    0,
};

static const int fib__uring_needed_ops[] = {
    IORING_OP_POLL_ADD, IORING_OP_RECV, IORING_OP_SEND, IORING_OP_ACCEPT,
    IORING_OP_READ, IORING_OP_WRITE, IORING_OP_FSYNC, IORING_OP_ASYNC_CANCEL,
};
static const char *const fib__uring_needed_names[] = {
    "POLL_ADD", "RECV", "SEND", "ACCEPT", "READ", "WRITE", "FSYNC",
    "ASYNC_CANCEL",
};

static int fib__uring_setup(struct io_uring *ring, unsigned entries,
                            unsigned open_flags, unsigned *flags_used)
{
    struct io_uring_params params;
    size_t i = open_flags & FIB__PUMP_NO_DEFER_TASKRUN ? 1 : 0;
    int rc = -ENOSYS;

    for (; i < sizeof(fib__uring_ladder) / sizeof(unsigned); i++) {
        memset(&params, 0, sizeof(params));
        /* A roomy completion queue: a burst of completions larger than
         * the submission queue is normal for a server. */
        params.flags = fib__uring_ladder[i] | IORING_SETUP_CQSIZE;
        params.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, ring, &params);
        if (rc == 0) {
            *flags_used = fib__uring_ladder[i];
            return 0;
        }
        if (rc != -EINVAL)      /* EINVAL: this kernel lacks the flags */
            return rc;
    }
    return rc;
}

static int fib__uring_missing_op(struct io_uring *ring)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    size_t i;
    if (probe == NULL)
        return 0;   /* pre-5.6 kernels cannot probe; set-up succeeded */
    for (i = 0; i < sizeof(fib__uring_needed_ops) / sizeof(int); i++) {
        if (!io_uring_opcode_supported(probe, fib__uring_needed_ops[i])) {
            io_uring_free_probe(probe);
            return (int)i + 1;
        }
    }
    io_uring_free_probe(probe);
    return 0;
}

int fib__uring_probe(char *why, size_t whylen)
{
    struct io_uring ring;
    unsigned flags;
    int rc, missing;
    FILE *f;
    int disabled = 0;

    rc = fib__uring_setup(&ring, 8, 0, &flags);
    if (rc < 0) {
        f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
        if (f != NULL) {
            if (fscanf(f, "%d", &disabled) != 1)
                disabled = 0;
            fclose(f);
        }
        if (rc == -ENOSYS)
            snprintf(why, whylen, "io_uring_setup failed with ENOSYS: this "
                     "kernel has no io_uring");
        else if (rc == -EPERM && disabled)
            snprintf(why, whylen, "io_uring_setup failed with EPERM: "
                     "kernel.io_uring_disabled=%d", disabled);
        else if (rc == -EPERM)
            snprintf(why, whylen, "io_uring_setup failed with EPERM: "
                     "blocked by a seccomp filter (containers often do "
                     "this)");
        else
            snprintf(why, whylen, "io_uring_setup failed: %s",
                     strerror(-rc));
        return rc;
    }
    missing = fib__uring_missing_op(&ring);
    io_uring_queue_exit(&ring);
    if (missing) {
        snprintf(why, whylen, "the kernel's io_uring lacks opcode %s",
                 fib__uring_needed_names[missing - 1]);
        return -EOPNOTSUPP;
    }
    why[0] = '\0';
    return 0;
}

static int fib__uring_open(fib__pump *p, unsigned entries, unsigned flags)
{
    fib__uring *u = calloc(1, sizeof(*u));
    int rc;
    if (u == NULL)
        return -ENOMEM;
    rc = fib__uring_setup(&u->ring, entries, flags, &u->setup_flags);
    if (rc < 0) {
        free(u);
        return rc;
    }
    p->impl = u;
    p->defer_taskrun = !!(u->setup_flags & IORING_SETUP_DEFER_TASKRUN);
    return 0;
}

/* An SQE, flushing the queue to the kernel once if it is full. */
static struct io_uring_sqe *fib__uring_sqe(fib__uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe == NULL) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static int fib__uring_submit(fib__pump *p, fib__op *op)
{
    fib__uring *u = p->impl;
    struct io_uring_sqe *sqe;
    /* Refuse before taking an SQE, so a refusal leaves the queue as is. */
    if (op->code < FIB__OP_POLL || op->code > FIB__OP_ACCEPT_MULTI)
        return -EINVAL;
    if (op->code == FIB__OP_RECV_MULTI && u->br == NULL)
        return -ENOBUFS;
    sqe = fib__uring_sqe(u);
    if (sqe == NULL)
        return -EBUSY;
    switch (op->code) {
    case FIB__OP_POLL:
        io_uring_prep_poll_add(sqe, op->fd, op->events);
        break;
    case FIB__OP_RECV:
        io_uring_prep_recv(sqe, op->fd, op->buf, op->len, op->msg_flags);
        break;
    case FIB__OP_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, op->len, op->msg_flags);
        break;
    case FIB__OP_ACCEPT:
        io_uring_prep_accept(sqe, op->fd, NULL, NULL, SOCK_CLOEXEC);
        break;
    case FIB__OP_READ:
        io_uring_prep_read(sqe, op->fd, op->buf, op->len,
                           (__u64)op->offset);
        break;
    case FIB__OP_WRITE:
        io_uring_prep_write(sqe, op->fd, op->buf, op->len,
                            (__u64)op->offset);
        break;
    case FIB__OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, 0);
        break;
    case FIB__OP_READ_FIXED:
        io_uring_prep_read_fixed(sqe, op->fd, op->buf, op->len,
                                 (__u64)op->offset, op->buf_index);
        break;
    case FIB__OP_WRITE_FIXED:
        io_uring_prep_write_fixed(sqe, op->fd, op->buf, op->len,
                                  (__u64)op->offset, op->buf_index);
        break;
    case FIB__OP_RECV_MULTI:
        io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, op->msg_flags);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        break;
    case FIB__OP_ACCEPT_MULTI:
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, SOCK_CLOEXEC);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

static int fib__uring_cancel(fib__pump *p, fib__op *op)
{
    fib__uring *u = p->impl;
    struct io_uring_sqe *sqe = fib__uring_sqe(u);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)op, 0);
    io_uring_sqe_set_data(sqe, NULL);
    return 0;
}

static int fib__uring_forget_fd(fib__pump *p, int fd, int has_inflight)
{
    fib__uring *u = p->impl;
    struct io_uring_sqe *sqe;
    int rc;
    if (!has_inflight)
        return 0;
    sqe = fib__uring_sqe(u);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(sqe, NULL);
    /* Now, while fd still names the file the requests hold. */
    rc = io_uring_submit(&u->ring);
    return rc < 0 ? rc : 0;
}

static int fib__uring_flush(fib__pump *p)
{
    fib__uring *u = p->impl;
    return io_uring_submit(&u->ring);
}

static int fib__uring_harvest(fib__uring *u, fib__cqe *out, int max)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    fib__op *op;
    int n = 0;

    io_uring_for_each_cqe(&u->ring, head, cqe) {
        if (n == max)
            break;
        seen++;
        op = io_uring_cqe_get_data(cqe);
        if (op == NULL)
            continue;       /* a cancel request's own completion */
        out[n].op = op;
        out[n].res = cqe->res;
        out[n].flags = (cqe->flags & IORING_CQE_F_MORE ? FIB__C_MORE : 0) |
                       (cqe->flags & IORING_CQE_F_BUFFER ? FIB__C_BUFFER : 0) |
                       (cqe->flags >> IORING_CQE_BUFFER_SHIFT << 16);
        n++;
    }
    io_uring_cq_advance(&u->ring, seen);
    return n;
}

static int fib__uring_wait(fib__pump *p, int64_t timeout_ns, fib__cqe *out,
                           int max)
{
    fib__uring *u = p->impl;
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts;
    int rc, n;

    /* Completions already posted need no system call to wait for. */
    if (timeout_ns != 0 && io_uring_cq_ready(&u->ring) > 0)
        timeout_ns = 0;
    if (timeout_ns == 0) {
        rc = io_uring_submit_and_get_events(&u->ring);
    } else if (timeout_ns < 0) {
        rc = io_uring_submit_and_wait(&u->ring, 1);
    } else {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    n = fib__uring_harvest(u, out, max);
    if (n == 0 && rc == -EINTR)
        return -EINTR;
    /* ETIME is a timeout; EBUSY/EAGAIN mean the CQ is full and the harvest
     * above made room.  Neither is an error for the caller. */
    return n;
}

static int fib__uring_provide(fib__pump *p, unsigned count, unsigned size)
{
    fib__uring *u = p->impl;
    struct io_uring_buf_reg reg;
    unsigned i;
    int rc;

    if (u->br != NULL)
        return 0;
    if (count == 0 || (count & (count - 1)) || count > 32768)
        return -EINVAL;
    u->br_bytes = count * sizeof(struct io_uring_buf);
    u->br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (u->br == MAP_FAILED) {
        u->br = NULL;
        return -errno;
    }
    u->bufs = NULL;
    if (posix_memalign((void **)&u->bufs, 4096, (size_t)count * size) != 0) {
        munmap(u->br, u->br_bytes);
        u->br = NULL;
        return -ENOMEM;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (__u64)(uintptr_t)u->br;
    reg.ring_entries = count;
    reg.bgid = 0;
    rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc < 0) {
        free(u->bufs);
        munmap(u->br, u->br_bytes);
        u->br = NULL;
        u->bufs = NULL;
        return rc;
    }
    io_uring_buf_ring_init(u->br);
    for (i = 0; i < count; i++)
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * size, size,
                              (unsigned short)i,
                              io_uring_buf_ring_mask(count), (int)i);
    io_uring_buf_ring_advance(u->br, (int)count);
    u->nbufs = count;
    u->bufsize = size;
    return 0;
}

static void *fib__uring_buffer(fib__pump *p, unsigned bid)
{
    fib__uring *u = p->impl;
    if (u->br == NULL || bid >= u->nbufs)
        return NULL;
    return u->bufs + (size_t)bid * u->bufsize;
}

static void fib__uring_recycle(fib__pump *p, unsigned bid)
{
    fib__uring *u = p->impl;
    if (u->br == NULL || bid >= u->nbufs)
        return;
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->bufsize,
                          u->bufsize, (unsigned short)bid,
                          io_uring_buf_ring_mask(u->nbufs), 0);
    io_uring_buf_ring_advance(u->br, 1);
}

static int fib__uring_register_buffer(fib__pump *p, void *base, size_t len)
{
    fib__uring *u = p->impl;
    struct iovec iov;
    unsigned slot;
    int rc;
    if (!u->fixed_ready) {
        rc = io_uring_register_buffers_sparse(&u->ring, FIB__FIXED_SLOTS);
        if (rc < 0)
            return rc;
        u->fixed_ready = 1;
    }
    for (slot = 0; slot < FIB__FIXED_SLOTS; slot++)
        if (!(u->fixed_used & ((uint64_t)1 << slot)))
            break;
    if (slot == FIB__FIXED_SLOTS)
        return -ENOSPC;
    iov.iov_base = base;
    iov.iov_len = len;
    rc = io_uring_register_buffers_update_tag(&u->ring, slot, &iov, NULL, 1);
    if (rc < 0)
        return rc;
    u->fixed_used |= (uint64_t)1 << slot;
    return (int)slot;
}

static void fib__uring_unregister_buffer(fib__pump *p, unsigned index)
{
    fib__uring *u = p->impl;
    struct iovec iov = {NULL, 0};
    if (index >= FIB__FIXED_SLOTS || !(u->fixed_used & ((uint64_t)1 << index)))
        return;
    /* An empty entry frees the slot; the kernel drops its page pins once
     * no request in flight uses them. */
    io_uring_register_buffers_update_tag(&u->ring, index, &iov, NULL, 1);
    u->fixed_used &= ~((uint64_t)1 << index);
}

static void fib__uring_close(fib__pump *p)
{
    fib__uring *u = p->impl;
    if (u == NULL)
        return;
    /* Exiting the ring drops the buffer registration with it. */
    io_uring_queue_exit(&u->ring);
    if (u->br != NULL) {
        munmap(u->br, u->br_bytes);
        free(u->bufs);
    }
    free(u);
}

const fib__backend fib__uring_backend = {
    .name = "io_uring",
    .open = fib__uring_open,
    .submit = fib__uring_submit,
    .cancel = fib__uring_cancel,
    .forget_fd = fib__uring_forget_fd,
    .flush = fib__uring_flush,
    .wait = fib__uring_wait,
    .close = fib__uring_close,
    .provide = fib__uring_provide,
    .buffer = fib__uring_buffer,
    .recycle = fib__uring_recycle,
    .register_buffer = fib__uring_register_buffer,
    .unregister_buffer = fib__uring_unregister_buffer,
};
