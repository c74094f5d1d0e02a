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


cdef int _offload(Scheduler s, Fiber me, _Job j, bint shield) except -1:
    # Run j on a pool thread and park `me` until it is done.  The
    # completion comes back through the sink's eventfd, which the pump
    # waits on like any fd.  Interrupted, the fiber leaves at once and
    # the call's outcome is dropped -- unless `shield` (the C API, whose
    # caller frees `arg` as soon as we return): then it still waits,
    # and the interruption is raised once the call is over.
    cdef int rc
    _check_greenlet(me)         # before a pool thread starts on it
    if s._sink == NULL:
        s._get_pump()
        s._sink = fib__sink_new()
        if s._sink == NULL:
            raise _oserror(errno_get(), "cannot create the pool's sink")
    j.job.sink = s._sink
    j.job.owner = <void *>j
    rc = fib__pool_submit(&j.job)
    if rc < 0:
        raise _oserror(-rc, "cannot start a pool thread")
    j.submitted = True
    Py_INCREF(j)                # the pool's, until drained
    s._jobs += 1
    _sink_arm(s)
    j.fiber = me
    me._wq_item = j             # for the fiber view (_inspect.pxi)
    pending = None
    try:
        while not j.done:
            try:
                s._park(me)
            except BaseException as e:
                if not shield:
                    raise
                if pending is None:
                    pending = e
    finally:
        j.fiber = None
        me._wq_item = None
    if pending is not None:
        raise pending
    return 0


cdef int _sink_arm(Scheduler s) except -1:
    # The pump's wait on the sink's eventfd, while jobs are out.
    if s._sink_op is not None:
        return 0
    s._sink_op = _arm_poll(s._io, s._sink.efd, OP_SINK,
                           "cannot wait for the pool")
    if s._sink_op is None:
        _sink_drain(s)
    return 0


cdef int _sink_complete(Scheduler s, _Op o, fib__cqe *c) except -1:
    # OP_SINK, in the pump's dispatch table: the pump's wait on the sink
    # ended, so the pool has finished jobs.
    s._sink_op = None
    Py_DECREF(o)
    return _sink_drain(s)


cdef int _sink_drain(Scheduler s) except -1:
    # Every job the pool finished: its fiber wakes, or (abandoned) the job
    # cleans up after it.
    cdef fib__job *job = fib__sink_drain(s._sink)
    cdef fib__job *nxt
    cdef _Job j
    cdef Fiber f
    while job != NULL:
        nxt = job.next
        j = <_Job>job.owner
        Py_DECREF(j)            # the pool's; `j` holds one
        s._jobs -= 1
        j.done = True
        f = j.fiber
        if f is not None and f._state == ST_SUSPENDED:
            s._wake(f, None)
        elif j.op is not None and type(j.op.keep) is File:
            # A file job whose fiber gave up (see File.close).
            fl = j.op.keep
            j.op.keep = None
            (<File>fl)._pool_jobs.discard(j)
            (<File>fl)._op_done()
        elif j.op is not None and j.op.keep is _OPEN_ABANDONED:
            j.op.keep = None
            if j.job.result >= 0:
                close(j.job.result)     # nobody will take this File
        job = nxt
    if s._jobs > 0 and not s._closed:
        _sink_arm(s)
    return 0


cdef object _blocking_call(Scheduler s, Fiber me, object fn, tuple args,
                           dict kwargs):
    cdef _Job j = _Job.__new__(_Job)
    j.fn = fn
    j.args = args
    j.kwargs = kwargs
    j.job.fn = _run_py_job
    j.job.arg = <void *>j
    _offload(s, me, j, False)
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
