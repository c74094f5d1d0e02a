/*
 * fib_epoll.c -- the epoll backend of the completion pump: readiness,
 * turned into completions.
 *
 * Some facts about epoll that shape this file:
 *
 * - epoll tells us an fd *may* not block; the work is still ours.  So an
 *   operation is "try the system call; on EAGAIN, wait on the fd's list;
 *   when the fd reports ready, try again".  submit() tries first, which is
 *   why it can finish an operation on the spot (return 1): a socket that
 *   already has data costs no wait at all.
 *
 * - Each fd is registered once, edge-triggered, for both directions.  No
 *   epoll_ctl per operation: an edge arrives whenever new data or buffer
 *   space appears, and a failed try means the next edge is still to come.
 *   The price is that our per-fd table must never outlive the fd: the
 *   socket and file layers call forget_fd() before close(), and operations
 *   on foreign fds (FIB__F_FOREIGN: wait_readable, the Ring API) re-arm
 *   with EPOLL_CTL_MOD, which also reports readiness that is already there,
 *   and unregister once nothing waits on them.
 *
 * - epoll refuses regular files (EPERM): they are always "ready", and a
 *   read of one blocks in the page cache or the disk, not on readiness.
 *   This backend does file operations synchronously; offloading them to
 *   threads belongs to the blocking-call pool.
 *
 * - Non-socket fds (pipes, ttys) have no MSG_DONTWAIT, so the first time
 *   one is seen it is switched to O_NONBLOCK, as Go's poller does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fib_pump.h"

#define FIB__EPOLL_BATCH 256

typedef struct {
    fib__op *rhead, *rtail;     /* waiting to read (or accept) */
    fib__op *whead, *wtail;     /* waiting to write */
    uint8_t registered;         /* in the epoll set */
    uint8_t regular;            /* epoll said EPERM: a regular file */
    uint8_t foreign;            /* registered on behalf of a foreign op */
} fib__fdent;

typedef struct {
    int epfd;
    fib__fdent *fds;
    size_t nfds;
    fib__op *done_head, *done_tail;
    struct epoll_event events[FIB__EPOLL_BATCH];
} fib__epoll;

static int fib__epoll_open(fib__pump *p, unsigned entries, unsigned flags)
{
    fib__epoll *e = calloc(1, sizeof(*e));
    (void)entries;
    (void)flags;
    if (e == NULL)
        return -ENOMEM;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        int err = errno;
        free(e);
        return -err;
    }
    p->impl = e;
    return 0;
}

/* The table entry for fd, growing the table to cover it.  NULL with errno
 * set: EBADF for a number that is no open fd, ENOMEM.  The table only
 * grows for fds that exist, so its size follows the process's real fds
 * (bounded by RLIMIT_NOFILE, which is doubled up to but not past): a wait
 * on fd 10**8 must not allocate gigabytes before finding it is closed. */
static fib__fdent *fib__epoll_ent(fib__epoll *e, int fd)
{
    size_t n, want, limit;
    struct rlimit rl;
    fib__fdent *grown;
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    if ((size_t)fd >= e->nfds) {
        if (fcntl(fd, F_GETFD) < 0)
            return NULL;            /* errno is EBADF */
        want = (size_t)fd + 1;
        n = e->nfds ? e->nfds : 64;
        while (n < want)
            n *= 2;
        limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
                rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur : n;
        if (n > limit)
            n = limit > want ? limit : want;
        grown = realloc(e->fds, n * sizeof(*grown));
        if (grown == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        memset(grown + e->nfds, 0, (n - e->nfds) * sizeof(*grown));
        e->fds = grown;
        e->nfds = n;
    }
    return &e->fds[fd];
}

static int fib__is_read_side(const fib__op *op)
{
    if (op->code == FIB__OP_POLL)
        return (op->events & POLLIN) != 0;
    return op->code == FIB__OP_RECV || op->code == FIB__OP_ACCEPT ||
           op->code == FIB__OP_READ;
}

/* Puts fd in the epoll set (or re-arms it, for foreign fds).  keep_mode:
 * a readiness wait (POLL) on a foreign fd leaves its blocking mode alone,
 * since the fd belongs to someone else (fibers.patch's select and os.read
 * wait on fds that the stdlib then reads blocking).  A read or write we
 * do ourselves needs O_NONBLOCK, or trying it first would block. */
static int fib__epoll_register(fib__epoll *e, fib__fdent *ent, int fd,
                               int rearm, int keep_mode)
{
    struct epoll_event ev;
    int flags;
    if (ent->registered && !rearm)
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.fd = fd;
    if (ent->registered || rearm) {
        if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
            ent->registered = 1;
            return 0;
        }
        if (errno == EPERM) {
            ent->regular = 1;
            return 0;
        }
        if (errno != ENOENT)
            return -errno;
    }
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno == EPERM) {
            ent->regular = 1;
            return 0;
        }
        return -errno;
    }
    ent->registered = 1;
    flags = keep_mode ? -1 : fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK))
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    return 0;
}

static void fib__epoll_unregister(fib__epoll *e, fib__fdent *ent, int fd)
{
    if (ent->registered)
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    memset(ent, 0, sizeof(*ent));
}

/* Records a finished operation's result.  A new fd from accept is a new
 * file: whatever the table says about its number is about a file closed
 * behind our back (a socket collected in another thread), and epoll has
 * already dropped that registration. */
static void fib__epoll_result(fib__epoll *e, fib__op *op, int32_t res)
{
    if (op->code == FIB__OP_ACCEPT && res >= 0 && (size_t)res < e->nfds)
        memset(&e->fds[res], 0, sizeof(e->fds[res]));
    op->res = res;
}

static void fib__epoll_done(fib__epoll *e, fib__op *op, int32_t res)
{
    fib__epoll_result(e, op, res);
    op->queued = 2;
    op->next = NULL;
    if (e->done_tail != NULL)
        e->done_tail->next = op;
    else
        e->done_head = op;
    e->done_tail = op;
}

/* The wait list an operation belongs on: its fd's read or write side. */
static void fib__epoll_list(fib__fdent *ent, const fib__op *op,
                            fib__op ***head, fib__op ***tail)
{
    if (fib__is_read_side(op)) {
        *head = &ent->rhead;
        *tail = &ent->rtail;
    } else {
        *head = &ent->whead;
        *tail = &ent->wtail;
    }
}

static void fib__epoll_unlink(fib__fdent *ent, fib__op *op)
{
    fib__op **head, **tail;
    fib__epoll_list(ent, op, &head, &tail);
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        *head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        *tail = op->prev;
    op->next = op->prev = NULL;
    op->queued = 0;
}

static void fib__epoll_append(fib__fdent *ent, fib__op *op)
{
    fib__op **head, **tail;
    fib__epoll_list(ent, op, &head, &tail);
    op->next = NULL;
    op->prev = *tail;
    if (*tail != NULL)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
    op->queued = 1;
}

/* Once a foreign fd has nobody waiting, forget it: its owner may close it
 * and the number come back as something else. */
static void fib__epoll_release_foreign(fib__epoll *e, fib__fdent *ent,
                                       int fd)
{
    if (ent->foreign && ent->rhead == NULL && ent->whead == NULL)
        fib__epoll_unregister(e, ent, fd);
}

static int fib__epoll_submit(fib__pump *p, fib__op *op)
{
    fib__epoll *e = p->impl;
    fib__fdent *ent;
    fib__op *first;
    int32_t res;
    int rc, foreign = (op->flags & FIB__F_FOREIGN) != 0;

    if (op->code == FIB__OP_RECV_MULTI || op->code == FIB__OP_ACCEPT_MULTI)
        return -EOPNOTSUPP;     /* readiness has no multishot to offer */
    if (op->code < FIB__OP_POLL || op->code > FIB__OP_FSYNC)
        return -EINVAL;
    if (op->code == FIB__OP_FSYNC) {
        op->res = fib__op_try(op, 1);
        return 1;
    }
    ent = fib__epoll_ent(e, op->fd);
    if (ent == NULL)
        return -errno;
    if (!ent->regular) {
        rc = fib__epoll_register(e, ent, op->fd,
                                 foreign || op->code == FIB__OP_POLL,
                                 foreign && op->code == FIB__OP_POLL);
        if (rc < 0)
            return rc;
        if (foreign && !ent->regular)
            ent->foreign = 1;
    }
    if (ent->regular) {
        /* Always ready; the call itself may block on the disk. */
        op->res = op->code == FIB__OP_POLL ? (int32_t)op->events
                                           : fib__op_try(op, 1);
        if (foreign)
            memset(ent, 0, sizeof(*ent));
        return 1;
    }
    first = fib__is_read_side(op) ? ent->rhead : ent->whead;
    if (first == NULL && op->code != FIB__OP_POLL) {
        res = fib__op_try(op, 0);
        if (res != -EAGAIN) {
            fib__epoll_result(e, op, res);
            fib__epoll_release_foreign(e, ent, op->fd);
            return 1;
        }
    }
    fib__epoll_append(ent, op);
    return 0;
}

static int fib__epoll_cancel(fib__pump *p, fib__op *op)
{
    fib__epoll *e = p->impl;
    fib__fdent *ent;
    if (op->queued != 1)
        return 0;           /* already done; its completion is queued */
    ent = &e->fds[op->fd];
    fib__epoll_unlink(ent, op);
    fib__epoll_done(e, op, -ECANCELED);
    fib__epoll_release_foreign(e, ent, op->fd);
    return 0;
}

static int fib__epoll_forget_fd(fib__pump *p, int fd, int has_inflight)
{
    fib__epoll *e = p->impl;
    fib__fdent *ent;
    fib__op *op;
    (void)has_inflight;
    if (fd < 0 || (size_t)fd >= e->nfds)
        return 0;
    ent = &e->fds[fd];
    while ((op = ent->rhead) != NULL) {
        fib__epoll_unlink(ent, op);
        fib__epoll_done(e, op, -ECANCELED);
    }
    while ((op = ent->whead) != NULL) {
        fib__epoll_unlink(ent, op);
        fib__epoll_done(e, op, -ECANCELED);
    }
    fib__epoll_unregister(e, ent, fd);
    return 0;
}

/* Runs one of an fd's wait lists after it reported `revents`. */
static void fib__epoll_run_list(fib__epoll *e, fib__fdent *ent, int read_side,
                                uint32_t revents)
{
    fib__op *op;
    int32_t res;
    for (;;) {
        op = read_side ? ent->rhead : ent->whead;
        if (op == NULL)
            break;
        if (op->code == FIB__OP_POLL) {
            res = (int32_t)(revents & (op->events | POLLERR | POLLHUP));
        } else {
            res = fib__op_try(op, 0);
            if (res == -EAGAIN)
                break;      /* a spurious or consumed edge: wait again */
        }
        fib__epoll_unlink(ent, op);
        fib__epoll_done(e, op, res);
    }
}

/* A wait for either direction (POLLIN|POLLOUT: fibers.wait_fd) sits on
 * the read list; a write edge completes it too.  Only such polls are
 * taken: a recv on that list has nothing to do with a write edge. */
static void fib__epoll_run_either(fib__epoll *e, fib__fdent *ent,
                                  uint32_t revents)
{
    fib__op *op = ent->rhead, *next;
    while (op != NULL) {
        next = op->next;
        if (op->code == FIB__OP_POLL && (op->events & POLLOUT)) {
            fib__epoll_unlink(ent, op);
            fib__epoll_done(e, op, (int32_t)(revents & (op->events |
                                                        POLLERR | POLLHUP)));
        }
        op = next;
    }
}

static int fib__epoll_wait(fib__pump *p, int64_t timeout_ns, fib__cqe *out,
                           int max)
{
    fib__epoll *e = p->impl;
    fib__fdent *ent;
    fib__op *op;
    uint32_t ev;
    int i, n, timeout_ms, fd;

    if (e->done_head != NULL || timeout_ns == 0)
        timeout_ms = 0;
    else if (timeout_ns < 0)
        timeout_ms = -1;
    else if (timeout_ns > (int64_t)1000000 * 86400000)
        timeout_ms = 86400000;
    else    /* round up: waking early would only spin */
        timeout_ms = (int)((timeout_ns + 999999) / 1000000);

    n = epoll_wait(e->epfd, e->events, FIB__EPOLL_BATCH, timeout_ms);
    if (n < 0) {
        if (errno != EINTR)
            return -errno;
        if (e->done_head == NULL)
            return -EINTR;
        n = 0;
    }
    for (i = 0; i < n; i++) {
        fd = e->events[i].data.fd;
        ev = e->events[i].events;
        if ((size_t)fd >= e->nfds)
            continue;
        ent = &e->fds[fd];
        if (!ent->registered)
            continue;
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            fib__epoll_run_list(e, ent, 1, ev);
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            fib__epoll_run_list(e, ent, 0, ev);
            fib__epoll_run_either(e, ent, ev);
        }
        fib__epoll_release_foreign(e, ent, fd);
    }
    n = 0;
    while (n < max && (op = e->done_head) != NULL) {
        e->done_head = op->next;
        if (e->done_head == NULL)
            e->done_tail = NULL;
        op->next = NULL;
        op->queued = 0;
        out[n].op = op;
        out[n].res = op->res;
        out[n].flags = 0;
        n++;
    }
    return n;
}

static void fib__epoll_close(fib__pump *p)
{
    fib__epoll *e = p->impl;
    if (e == NULL)
        return;
    close(e->epfd);
    free(e->fds);
    free(e);
}

/* Only the required entries (fib_pump.h).  No flush: nothing is queued,
 * since submit() either does the call or parks the record on its fd's
 * list.  No provided or fixed buffers: those are io_uring features; submit()
 * refuses RECV_MULTI and the FIXED codes, and the fib__pump_* wrappers
 * answer provide() and register_buffer() with -EOPNOTSUPP. */
const fib__backend fib__epoll_backend = {
    .name = "epoll",
    .open = fib__epoll_open,
    .submit = fib__epoll_submit,
    .cancel = fib__epoll_cancel,
    .forget_fd = fib__epoll_forget_fd,
    .wait = fib__epoll_wait,
    .close = fib__epoll_close,
};
