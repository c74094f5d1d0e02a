/*
 * fib_pump.c -- opening and closing a pump.  The choice between backends is
 * made once, in the Cython layer (fibers/_pump.pxi), from the probe below
 * and FIBERS_BACKEND; this file only maps the choice to its table.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fib_pump.h"

#ifndef FIB_HAVE_LIBURING
/* Built without liburing, fib_uring.c is not compiled at all (no table of
 * stubs): the probe is here instead, and says why io_uring cannot be
 * chosen; fibers.backends() shows the reason to the user. */
int fib__uring_probe(char *why, size_t whylen)
{
    snprintf(why, whylen, "fibers was built without liburing (install "
             "liburing-dev and pkg-config, then rebuild)");
    return -ENOSYS;
}
#endif

int fib__pump_open(fib__pump *p, int backend, unsigned entries,
                   unsigned flags)
{
    int rc;
    memset(p, 0, sizeof(*p));
    if (backend == FIB__BACKEND_URING)
#ifdef FIB_HAVE_LIBURING
        p->be = &fib__uring_backend;
#else
        return -ENOSYS;     /* no table to open; the probe said why */
#endif
    else if (backend == FIB__BACKEND_EPOLL)
        p->be = &fib__epoll_backend;
    else
        return -EINVAL;
    rc = p->be->open(p, entries, flags);
    if (rc < 0)
        p->be = NULL;
    return rc;
}

void fib__pump_close(fib__pump *p)
{
    if (p->be != NULL)
        p->be->close(p);
    p->be = NULL;
    p->impl = NULL;
}

/* The system call behind an operation, done now.  It never waits on a
 * socket (MSG_DONTWAIT); accept and pipe reads need an O_NONBLOCK fd.  An
 * accepted fd comes back non-blocking. */
int32_t fib__op_try(const fib__op *op, int regular)
{
    ssize_t n;
    switch (op->code) {
    case FIB__OP_RECV:
        n = recv(op->fd, op->buf, op->len, op->msg_flags | MSG_DONTWAIT);
        break;
    case FIB__OP_SEND:
        n = send(op->fd, op->buf, op->len,
                 op->msg_flags | MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
    case FIB__OP_ACCEPT:
        n = accept4(op->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        break;
    case FIB__OP_READ:
        if (op->offset >= 0 && regular)
            n = pread(op->fd, op->buf, op->len, op->offset);
        else
            n = read(op->fd, op->buf, op->len);
        break;
    case FIB__OP_WRITE:
        if (op->offset >= 0 && regular)
            n = pwrite(op->fd, op->buf, op->len, op->offset);
        else
            n = write(op->fd, op->buf, op->len);
        break;
    case FIB__OP_FSYNC:
        n = fsync(op->fd);
        break;
    default:
        return -EINVAL;
    }
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return (int32_t)n;
}

