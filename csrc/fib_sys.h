/*
 * fib_sys.h -- the few OS services the scheduler core needs: the monotonic
 * clock, an interruptible sleep, and the thread-local "current scheduler".
 *
 * The thread-local slot is a borrowed pointer.  The owning reference lives in
 * a Python threading.local, so the scheduler dies with its thread; the slot
 * only makes the lookup on every spawn/yield a single TLS load instead of a
 * dict lookup.
 */
#ifndef FIB_SYS_H
#define FIB_SYS_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static __thread void *fib__tls_scheduler = NULL;

static inline void *fib__tls_get(void) { return fib__tls_scheduler; }
static inline void fib__tls_set(void *s) { fib__tls_scheduler = s; }

static inline int64_t fib__monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps up to ns nanoseconds.  Returns 0, or -EINTR when a signal arrived
 * (the caller then runs Python's signal handlers). */
static inline int fib__sleep_ns(int64_t ns)
{
    struct timespec ts;
    if (ns <= 0)
        return 0;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    if (nanosleep(&ts, NULL) < 0)
        return -errno;
    return 0;
}

#endif /* FIB_SYS_H */
