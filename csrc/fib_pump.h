/*
 * fib_pump.h -- the completion pump: the one contract between the scheduler
 * and an I/O backend.
 *
 * The scheduler speaks completions, whatever the kernel speaks.  A caller
 * fills an operation record (fib__op) and submits it; later, wait() hands
 * back the record with its result.  Every backend keeps four promises:
 *
 *   1. submit() returns 1 when the operation finished on the spot (res is
 *      set and no completion will follow), 0 when it is in flight (exactly
 *      one completion will follow, from wait()), or -errno when it was
 *      refused (nothing follows).
 *   2. A record in flight belongs to the pump: the caller keeps it, and the
 *      memory it points at, alive until wait() hands it back.  cancel()
 *      does not change that: a cancelled operation still completes (with
 *      -ECANCELED, or with its real result if it won the race).
 *   3. wait(timeout) makes at most one blocking kernel call.  It first
 *      sends everything queued since the last call, so a tick costs one
 *      system call however many fibers asked for I/O (the io_uring
 *      backend's whole point; the epoll backend has nothing to send).
 *   4. Nothing in a backend touches Python: wait() runs without the GIL.
 *
 * Two backends implement it, one file each: fib_uring.c (io_uring, real
 * completions) and fib_epoll.c (readiness, turned into completions by doing
 * the system call when the fd becomes ready).  fib_pump.c chooses.
 *
 * The contract is narrow on purpose: a backend must provide six entries,
 * and may leave the rest NULL.
 *
 *   required   open, submit, cancel, forget_fd, wait, close: what every
 *              pump needs to run operations to completion and shut down.
 *   optional   flush (a backend with no queue has nothing to send early);
 *              provide/buffer/recycle (provided buffers, only for
 *              multishot recv); register_buffer/unregister_buffer (fixed
 *              buffers).  These are io_uring features; a backend without
 *              them should not have to spell out no-ops to say so.
 *
 * Callers never test for NULL themselves: they go through the static
 * inline fib__pump_* wrappers below, which answer for a missing entry the
 * way a backend without the feature would (provide and register_buffer
 * -EOPNOTSUPP, buffer NULL, recycle and unregister_buffer nothing, flush
 * 0).  So the Cython layer treats every backend alike, and a new backend
 * (kqueue, say) starts from six functions.
 *
 * fib_uring.c is compiled only when liburing is found (setup.py and the
 * Makefile define FIB_HAVE_LIBURING then).  Without it there is no
 * fib__uring_backend at all, not a table of stubs: fib_pump.c supplies a
 * fib__uring_probe that says why, and fib__pump_open refuses
 * FIB__BACKEND_URING with -ENOSYS.
 */
#ifndef FIB_PUMP_H
#define FIB_PUMP_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

/* Operation codes (fib__op.code). */
enum {
    FIB__OP_POLL = 1,   /* wait until fd is ready for `events`; res = revents */
    FIB__OP_RECV,       /* recv(fd, buf, len, msg_flags) */
    FIB__OP_SEND,       /* send(fd, buf, len, msg_flags) */
    FIB__OP_ACCEPT,     /* accept4(fd, NULL, NULL, SOCK_CLOEXEC); res = new fd */
    FIB__OP_READ,       /* pread(fd, buf, len, offset); offset -1 = file position */
    FIB__OP_WRITE,      /* pwrite(fd, buf, len, offset); offset -1 = file position */
    FIB__OP_FSYNC,      /* fsync(fd) */
    /* io_uring only: READ/WRITE into memory registered with
     * register_buffer(); buf_index names the registration. */
    FIB__OP_READ_FIXED,
    FIB__OP_WRITE_FIXED,
    /* Multishot (io_uring only; other backends refuse with -EOPNOTSUPP):
     * one submission, a completion per result until one comes without
     * FIB__C_MORE. */
    FIB__OP_RECV_MULTI, /* recv into provided buffers; FIB__C_BUFFER set */
    FIB__OP_ACCEPT_MULTI,
};

/* A completion as wait() hands it back.  A multishot record can appear
 * several times in one batch, so the result travels here, not in the
 * record; for the final completion it is also stored in op->res. */
typedef struct fib__cqe {
    struct fib__op *op;
    int32_t res;
    uint32_t flags;         /* FIB__C_*; the buffer id in the top 16 bits */
} fib__cqe;

enum {
    FIB__C_MORE = 1,        /* the record stays in flight: more will come */
    FIB__C_BUFFER = 2,      /* res bytes are in provided buffer BID */
};
#define FIB__CQE_BID(flags) ((unsigned)(flags) >> 16)

/* Caller flags (fib__op.flags). */
enum {
    /* The fd may have been closed and reused behind the pump's back (a
     * foreign fd): do not trust cached per-fd state. */
    FIB__F_FOREIGN = 1,
};

/* Open flags (fib__pump_open). */
enum {
    /* io_uring: set the ring up without IORING_SETUP_DEFER_TASKRUN, as on
     * kernels before 6.1.  The kernel then runs completion work when it
     * likes, not only inside wait(), so a request cancelled after its data
     * arrived often completes with that data (promise 2) rather than
     * -ECANCELED: the callers' late-completion paths run, which tests
     * need on new kernels too.  Other backends ignore it. */
    FIB__PUMP_NO_DEFER_TASKRUN = 1,
};

/* Record states (fib__op.state), private to the pump. */
enum {
    FIB__S_IDLE = 0,
    FIB__S_INFLIGHT,
    FIB__S_CANCELLING,
};

typedef struct fib__op fib__op;
struct fib__op {
    /* public, set by the caller before submit() */
    uint8_t code;
    uint8_t flags;
    uint16_t events;        /* POLL: POLLIN or POLLOUT */
    uint16_t buf_index;     /* READ_FIXED/WRITE_FIXED */
    int32_t fd;
    int32_t msg_flags;      /* RECV/SEND */
    uint32_t len;
    void *buf;
    int64_t offset;         /* READ/WRITE */
    void *owner;            /* the caller's cookie; the pump never looks */
    /* public, read-only: the result, >= 0 or -errno */
    int32_t res;
    /* private */
    uint8_t state;
    uint8_t queued;         /* epoll: 1 on a wait list, 2 on the done list */
    fib__op *next;          /* epoll: the fd's wait list, or its done list */
    fib__op *prev;
    fib__op *live_next;     /* the pump's list of records in flight */
    fib__op *live_prev;
};

typedef struct fib__pump fib__pump;

/* What a backend provides.  All return -errno on failure.  Entries marked
 * optional may be NULL; call them through the fib__pump_* wrappers, never
 * directly. */
typedef struct fib__backend {
    const char *name;
    /* required; flags are FIB__PUMP_*, which a backend may ignore */
    int (*open)(fib__pump *p, unsigned entries, unsigned flags);
    int (*submit)(fib__pump *p, fib__op *op);
    int (*cancel)(fib__pump *p, fib__op *op);
    /* required: cancel everything in flight on fd, before the caller
     * closes it. */
    int (*forget_fd)(fib__pump *p, int fd, int has_inflight);
    /* optional: send queued work without waiting; returns how many were
     * sent.  NULL: nothing is ever queued (wait() has nothing to send
     * either). */
    int (*flush)(fib__pump *p);
    /* required: timeout_ns < 0 waits forever, 0 only polls.  Returns how
     * many completed records were stored in out[] (at most max), or
     * -errno; -EINTR means a signal arrived. */
    int (*wait)(fib__pump *p, int64_t timeout_ns, fib__cqe *out, int max);
    /* required */
    void (*close)(fib__pump *p);
    /* optional, all three or none: provided buffers for RECV_MULTI:
     * `count` (a power of two) buffers of `size` bytes.  A completion with
     * FIB__C_BUFFER lends one out; recycle() gives it back once its bytes
     * are copied.  A backend without them must refuse RECV_MULTI. */
    int (*provide)(fib__pump *p, unsigned count, unsigned size);
    void *(*buffer)(fib__pump *p, unsigned bid);
    void (*recycle)(fib__pump *p, unsigned bid);
    /* optional, both or neither: registers [base, base+len) for the FIXED
     * operations; returns its buf_index, or -errno.  A backend without
     * them must refuse READ_FIXED/WRITE_FIXED. */
    int (*register_buffer)(fib__pump *p, void *base, size_t len);
    void (*unregister_buffer)(fib__pump *p, unsigned index);
} fib__backend;

struct fib__pump {
    /* public, read-only */
    const fib__backend *be;
    size_t inflight;        /* submitted, completion not yet handed back */
    size_t unflushed;       /* queued since the last flush()/wait() */
    fib__op *live;          /* every record in flight, for shutdown */
    int defer_taskrun;      /* io_uring set up with DEFER_TASKRUN (else 0) */
    /* private */
    void *impl;
};

/* Backend names, and the index used by fib__pump_open(). */
enum { FIB__BACKEND_URING = 0, FIB__BACKEND_EPOLL = 1 };

#ifdef FIB_HAVE_LIBURING
/* Declared only when it exists, so a stray use in a build without liburing
 * fails to compile rather than to link. */
extern const fib__backend fib__uring_backend;
#endif
extern const fib__backend fib__epoll_backend;

/* Can io_uring run here?  0 if yes; otherwise -errno and a reason in why
 * (fib_uring.c, or fib_pump.c's fallback in a build without liburing). */
int fib__uring_probe(char *why, size_t whylen);

int fib__pump_open(fib__pump *p, int backend, unsigned entries,
                   unsigned flags);

/* Does op's system call right now, without the pump: >= 0, or -errno
 * (-EAGAIN when it would wait).  `regular` uses the offset for READ/WRITE;
 * otherwise they use the file position. */
int32_t fib__op_try(const fib__op *op, int regular);
void fib__pump_close(fib__pump *p);

static inline int fib__pump_submit(fib__pump *p, fib__op *op)
{
    int rc = p->be->submit(p, op);
    if (rc == 0) {
        op->state = FIB__S_INFLIGHT;
        op->live_prev = NULL;
        op->live_next = p->live;
        if (p->live != NULL)
            p->live->live_prev = op;
        p->live = op;
        p->inflight++;
        p->unflushed++;
    }
    return rc;
}

static inline int fib__pump_cancel(fib__pump *p, fib__op *op)
{
    if (op->state != FIB__S_INFLIGHT)
        return 0;
    op->state = FIB__S_CANCELLING;
    return p->be->cancel(p, op);
}

static inline int fib__pump_forget_fd(fib__pump *p, int fd, int has_inflight)
{
    return p->be->forget_fd(p, fd, has_inflight);
}

/* The optional entries' wrappers: a NULL entry answers as a backend
 * without the feature would. */

static inline int fib__pump_flush(fib__pump *p)
{
    p->unflushed = 0;
    if (p->be->flush == NULL)
        return 0;       /* nothing queued: wait() sends nothing either */
    return p->be->flush(p);
}

static inline int fib__pump_wait(fib__pump *p, int64_t timeout_ns,
                                 fib__cqe *out, int max)
{
    int i, n = p->be->wait(p, timeout_ns, out, max);
    fib__op *op;
    size_t finished = 0;
    p->unflushed = 0;
    for (i = 0; i < n; i++) {
        if (out[i].flags & FIB__C_MORE)
            continue;
        op = out[i].op;
        op->res = out[i].res;
        op->state = FIB__S_IDLE;
        finished++;
        if (op->live_prev != NULL)
            op->live_prev->live_next = op->live_next;
        else
            p->live = op->live_next;
        if (op->live_next != NULL)
            op->live_next->live_prev = op->live_prev;
        op->live_next = op->live_prev = NULL;
    }
    p->inflight -= finished;
    return n;
}

static inline int fib__pump_provide(fib__pump *p, unsigned count,
                                    unsigned size)
{
    if (p->be->provide == NULL)
        return -EOPNOTSUPP;
    return p->be->provide(p, count, size);
}

/* NULL: no buffer by that id (without provided buffers, none has one). */
static inline void *fib__pump_buffer(fib__pump *p, unsigned bid)
{
    if (p->be->buffer == NULL)
        return NULL;
    return p->be->buffer(p, bid);
}

static inline void fib__pump_recycle(fib__pump *p, unsigned bid)
{
    if (p->be->recycle != NULL)
        p->be->recycle(p, bid);
}

static inline int fib__pump_register_buffer(fib__pump *p, void *base,
                                            size_t len)
{
    if (p->be->register_buffer == NULL)
        return -EOPNOTSUPP;
    return p->be->register_buffer(p, base, len);
}

static inline void fib__pump_unregister_buffer(fib__pump *p, unsigned index)
{
    if (p->be->unregister_buffer != NULL)
        p->be->unregister_buffer(p, index);
}

#endif /* FIB_PUMP_H */
