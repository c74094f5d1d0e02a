# Blocking calls off the scheduler's thread (fibers.blocking).  Included by
# _core.pyx.
#
# The pool itself is C (csrc/fib_pool.c): elastic OS threads, a queue past
# the cap, idle threads exiting.  This file makes Python calls into pool
# jobs.  A Python job takes the GIL on its thread, so it runs in parallel
# with the scheduler exactly as much as the call releases the GIL (every
# blocking system call in CPython does).  Its outcome -- a value or an
# exception with its traceback -- goes back to the waiting fiber.

import fcntl as _fcntl_mod

# Bound at import (see _net.pxi): fcntl.ioctl = fibers.io.ioctl must not
# make ioctl() call itself.
cdef object _std_ioctl = _fcntl_mod.ioctl


cdef int _run_py_job(void *arg) noexcept nogil:
    with gil:
        _call_job(<_Job>arg)
    return 0


cdef void _call_job(_Job j) noexcept:
    try:
        if j.kwargs:
            j.result = j.fn(*j.args, **j.kwargs)
        else:
            j.result = j.fn(*j.args)
    except BaseException as e:
        j.exc = e


cdef int _run_file_job(void *arg) noexcept nogil:
    # A file operation for the epoll backend, which cannot wait on files.
    return fib__op_try(<fib__op *>arg, 1)


@cython.freelist(64)
@cython.final
cdef class _Job:
    pass


cdef object _blocking_call(Scheduler s, Fiber me, object fn, tuple args,
                           dict kwargs):
    cdef _Job j = _Job.__new__(_Job)
    j.fn = fn
    j.args = args
    j.kwargs = kwargs
    j.job.fn = _run_py_job
    j.job.arg = <void *>j
    s._offload(me, j, False)
    exc = j.exc
    if exc is not None:
        j.exc = None
        raise exc
    return j.result


def _blocking_body(fn, args, kwargs):
    cdef Scheduler s = _sched()
    return _blocking_call(s, s._current, fn, args, kwargs)


def blocking(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` on a pool thread; suspend only this
    fiber until it returns, then return its result or raise its exception.

    Use it for calls that block in C: a library without fibers support,
    compression, ``getaddrinfo``, an ``ioctl``.  Other fibers keep running
    meanwhile.  The pool starts threads on demand up to
    :func:`set_blocking_limit`, and threads idle for 10 s exit.

    If the waiting fiber is killed (or times out), it gets its exception at
    once; the thread still finishes the call, and its result is dropped.
    """
    cdef Scheduler s
    cdef Fiber me
    if not callable(fn):
        raise TypeError(f"blocking() needs a callable, got "
                        f"{type(fn).__name__}")
    s = _sched()
    me = s._current
    if me is None:
        return s._drive("blocking", _blocking_body, (fn, args, kwargs))
    return _blocking_call(s, me, fn, args, kwargs)


def set_blocking_limit(n):
    """Cap the pool's threads at ``n`` (>= 1); calls past the cap queue.
    The default is min(32, 4 x CPUs)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_blocking_limit() needs an int, got "
                        f"{type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_blocking_limit() needs n >= 1, got {n}")
    fib__pool_set_limit(<unsigned>min(n, 1 << 20))


def blocking_limit():
    """The pool's cap on threads."""
    return fib__pool_limit()


def blocking_stats():
    """The pool's threads now, how many are idle, and calls queued."""
    cdef unsigned threads, idle, queued
    fib__pool_stats(&threads, &idle, &queued)
    return {"threads": threads, "idle": idle, "queued": queued,
            "limit": fib__pool_limit()}


def _set_blocking_idle(seconds):
    # For tests: how long an idle pool thread waits before it exits.
    fib__pool_set_idle_ns(_to_ns(seconds, "_set_blocking_idle"))


def ioctl(fd, request, arg=0, mutate_flag=True):
    """Cooperative ``fcntl.ioctl``: the device call runs on a pool thread
    while other fibers run (the seed's asynchronous DeviceIoControl)."""
    return blocking(_std_ioctl, _fileno(fd), request, arg, mutate_flag)
