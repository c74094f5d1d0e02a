/*
 * fib_sys.h -- the few OS services the scheduler core needs: the monotonic
 * clock, the waker and the idle wait, and the thread-local "current scheduler".
 *
 * The thread-local slot is a borrowed pointer.  The owning reference lives in
 * a Python threading.local, so the scheduler dies with its thread; the slot
 * only makes the lookup on every spawn/yield a single TLS load instead of a
 * dict lookup.
 */
#ifndef FIB_SYS_H
#define FIB_SYS_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static __thread void *fib__tls_scheduler = NULL;

static inline void *fib__tls_get(void) { return fib__tls_scheduler; }
static inline void fib__tls_set(void *s) { fib__tls_scheduler = s; }

static inline int64_t fib__monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The monotonic clock at the kernel's last timer tick (a few ms coarse),
 * read without the time-stamp counter: a fraction of the cost of the exact
 * clock.  Never ahead of fib__monotonic_ns().  A fiber's birth time for the
 * fiber view (Scheduler.fibers), taken on every spawn, where a few ms do not
 * matter and the exact clock's cost would. */
static inline int64_t fib__monotonic_coarse_ns(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Waits up to ns nanoseconds (ns < 0: without limit) for fd to become
 * readable.  Returns 1 when it is, 0 on timeout, or -errno; -EINTR means a
 * signal arrived (the caller then runs Python's signal handlers).  The
 * scheduler's idle wait when no pump is open: fd is its waker. */
static inline int fib__wait_fd(int fd, int64_t ns)
{
    struct pollfd pfd;
    struct timespec ts;
    int rc;
    pfd.fd = fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (ns >= 0) {
        ts.tv_sec = (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
    }
    rc = ppoll(&pfd, fd >= 0 ? 1 : 0, ns >= 0 ? &ts : NULL, NULL);
    if (rc < 0)
        return -errno;
    return rc > 0;
}

/* The waker: a pipe, non-blocking at both ends (signal.set_wakeup_fd
 * insists on that), close-on-exec.  A pipe and not an eventfd because
 * CPython's signal handler writes single bytes to the wakeup fd. */
static inline int fib__waker_open(int *rfd, int *wfd)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    *rfd = fds[0];
    *wfd = fds[1];
    return 0;
}

/* One byte is enough: a full pipe already means "wake up". */
static inline void fib__waker_poke(int wfd)
{
    static const char b = 1;
    ssize_t n;
    do
        n = write(wfd, &b, 1);
    while (n < 0 && errno == EINTR);
}

static inline void fib__waker_drain(int rfd)
{
    char buf[256];
    ssize_t n;
    do
        n = read(rfd, buf, sizeof(buf));
    while (n == (ssize_t)sizeof(buf) || (n < 0 && errno == EINTR));
}

#endif /* FIB_SYS_H */
