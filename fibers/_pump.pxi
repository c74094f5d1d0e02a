# The completion pump, seen from Python: choosing a backend, the _Pump the
# scheduler holds, the operation record (_Op) and a fiber's wait on one,
# and waiting on foreign fds.  Included by _core.pyx.
#
# The C side (csrc/fib_pump.h) speaks completions only.  The scheduler owns
# one _Pump, whose C pump opens on first I/O, and drives it from the `io`
# quantum step (Scheduler._step_io): one kernel call per tick that submits
# what the tick's fibers queued and waits as long as the scheduler's wait
# budget allows (Scheduler._wait_budget, which knows the timers, the ready
# fibers and the caller of run()).  A fiber doing I/O fills an _Op,
# submits it and parks (_io_wait); the completion wakes it.
#
# Ownership: while an _Op is in flight the pump holds a reference to it
# (taken in _io_wait, or by whoever armed it), and the _Op holds every
# buffer the kernel may touch.  Scheduler._complete only dispatches: the
# record's owner (by _Op.kind) handles the completion and drops that
# reference -- _op_finished here for a fiber's record, _Stream._complete in
# _net.pxi, _file_op_finished in _file.pxi, the sink in _blocking.pxi.  A
# fiber that gives up (killed, timed out) only cancels; the record and its
# buffers live until the kernel's final word on it.

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release,
                             PyBUF_SIMPLE, PyBUF_WRITABLE)
from libc.errno cimport EBADF, EAGAIN, EINPROGRESS, EBUSY

cdef extern from "Python.h":
    PyObject *_fib_bytes_new "PyBytes_FromStringAndSize"(
        const char *s, Py_ssize_t n) except NULL
    int _PyBytes_Resize(PyObject **obj, Py_ssize_t n) except -1
    char *PyBytes_AS_STRING(PyObject *obj)
    Py_ssize_t PyBytes_GET_SIZE(PyObject *obj)

cdef extern from "<poll.h>":
    enum:
        POLLIN
        POLLOUT

_BACKEND_NAMES = ("io_uring", "epoll")

# One kernel call moves at most this much: Linux caps a single read or
# write just below 2 GiB anyway.
cdef Py_ssize_t MAX_IO = 0x7ffff000


# --------------------------------------------------------------------------
# Choosing a backend
# --------------------------------------------------------------------------

cdef bint _uring_probed = False
cdef object _uring_why = None       # None: io_uring can run here
cdef bint _fallback_logged = False


cdef object _probe_uring():
    # Once per process: set up a small ring and probe its opcodes.
    global _uring_probed, _uring_why
    cdef char why[256]
    if not _uring_probed:
        if fib__uring_probe(why, sizeof(why)) == 0:
            _uring_why = None
        else:
            _uring_why = why.decode("utf-8", "replace")
        _uring_probed = True
    return _uring_why


cdef int _choose_backend(object name) except -1:
    global _fallback_logged
    cdef str source = "backend="
    if name is None:
        name = _os.environ.get("FIBERS_BACKEND") or None
        source = "FIBERS_BACKEND="
    if name is None:
        why = _probe_uring()
        if why is None:
            return FIB__BACKEND_URING
        if not _fallback_logged:
            _fallback_logged = True
            _log.warning("io_uring is unavailable (%s); using epoll", why)
        return FIB__BACKEND_EPOLL
    if name == "io_uring":
        why = _probe_uring()
        if why is not None:
            raise RuntimeError(f"{source}'io_uring' was asked for, but "
                               f"io_uring cannot run here: {why}")
        return FIB__BACKEND_URING
    if name == "epoll":
        return FIB__BACKEND_EPOLL
    raise ValueError(f"unknown backend {name!r} (from {source}); choose "
                     f"'io_uring' or 'epoll'")


cdef unsigned _pump_open_flags():
    # How to open a pump, from the environment: FIBERS_URING_NO_DEFER_TASKRUN=1
    # sets io_uring up as on kernels before 6.1, where a cancelled recv
    # often completes with its data (the late-completion paths then run;
    # the tests use it).
    if _os.environ.get("FIBERS_URING_NO_DEFER_TASKRUN", "0") not in ("", "0"):
        return FIB__PUMP_NO_DEFER_TASKRUN
    return 0


def backends():
    """Which completion pumps can run here.

    Returns ``{'io_uring': why, 'epoll': None}`` where ``why`` is None when
    io_uring is usable, and otherwise says why not (for example EPERM from
    a container's seccomp filter, or a build without liburing)."""
    return {"io_uring": _probe_uring(), "epoll": None}


def backend():
    """The name of the calling thread's scheduler's completion pump:
    exactly ``'io_uring'`` or ``'epoll'``."""
    return _BACKEND_NAMES[_sched()._io.backend]


cdef int _pump_wait(fib__pump *p, int64_t timeout_ns, fib__cqe *out) \
        except -1:
    # One pump wait for the scheduler or a Ring: the GIL is released only
    # when it may block.  Returns the completions stored in out (0 when a
    # signal cut the wait short).  The caller runs the signal handlers
    # (PyErr_CheckSignals) once it has dispatched what came back.
    cdef int rc
    if timeout_ns == 0:
        rc = fib__pump_wait(p, 0, out, PUMP_BATCH)
    else:
        with nogil:
            rc = fib__pump_wait(p, timeout_ns, out, PUMP_BATCH)
    if rc == -EINTR:
        return 0
    if rc < 0:
        raise _oserror(-rc, "the I/O pump failed")
    return rc


# --------------------------------------------------------------------------
# Operation records
# --------------------------------------------------------------------------

@cython.freelist(256)
@cython.final
cdef class _Op:
    def __dealloc__(self):
        self._release()

    cdef int _release(self) except -1:
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        if self.raw != NULL:
            Py_DECREF(<object>self.raw)
            self.raw = NULL
        return 0


cdef bint _pump_reap(fib__pump *p, fib__cqe *done, object owner,
                     _reaped_fn handle) except -1:
    # Shutdown, for the scheduler and a Ring alike: cancel every record in
    # flight and wait for their completions, handing each to `handle`
    # (which lets the pump's reference go).  Bounded: a cancel completes at
    # once for sockets, and a disk read finishes on its own; True when
    # nothing is left in flight, so the pump may be closed.  Records left
    # over keep their buffers: the kernel may still write into them.
    cdef fib__op *op = p.live
    cdef int i, rc, rounds
    while op != NULL:
        fib__pump_cancel(p, op)
        op = op.live_next
    for rounds in range(100):
        if p.inflight == 0:
            break
        rc = _pump_wait(p, 10000000, done)
        for i in range(rc):
            handle(owner, &done[i])
    return p.inflight == 0


@cython.final
cdef class _Pump:
    def __dealloc__(self):
        if self.is_open:
            # Records still in flight keep their references: the kernel may
            # still write into their buffers, so they are never freed.
            fib__pump_close(&self.c)
            self.is_open = False

    cdef fib__pump *open(self) except NULL:
        cdef int rc
        if not self.is_open:
            rc = fib__pump_open(&self.c, self.backend, 1024,
                                self.open_flags)
            if rc < 0:
                raise _oserror(-rc, f"cannot open the "
                               f"{_BACKEND_NAMES[self.backend]} pump")
            self.is_open = True
        return &self.c

    cdef int wait(self, int64_t timeout_ns) except -1:
        # Submits what was queued and waits up to timeout_ns (the budget
        # the scheduler computed); the completions are in done[].
        return _pump_wait(&self.c, timeout_ns, self.done)

    cdef void forget_fd(self, int fd, bint busy) noexcept:
        if self.is_open:
            fib__pump_forget_fd(&self.c, fd, busy)

    cdef int cancel_streams(self) except -1:
        cdef fib__op *op
        if not self.is_open:
            return 0
        op = self.c.live
        while op != NULL:
            if op.code >= FIB__OP_RECV_MULTI:
                fib__pump_cancel(&self.c, op)
            op = op.live_next
        return 0

    cdef bint reap(self, object owner, _reaped_fn handle) except -1:
        # Shutdown: cancel and reap everything (see _pump_reap); the pump
        # closes once nothing is left in flight.
        if not self.is_open:
            return True
        if _pump_reap(&self.c, self.done, owner, handle):
            fib__pump_close(&self.c)
            self.is_open = False
            return True
        return False


cdef int _scheduler_reaped(object s, fib__cqe *c) except -1:
    return (<Scheduler>s)._complete(c)


cdef int _io_wait(Scheduler s, Fiber me, _Op o) except? -1:
    # Submit o and park `me` until it completes.  Returns the result
    # (>= 0 or -errno).  If the fiber is interrupted instead (kill,
    # timeout), the operation is cancelled and the exception goes on;
    # the record lives on, with its buffers, until its completion.
    cdef int rc
    _check_greenlet(me)         # before the kernel hears of it
    rc = fib__pump_submit(s._get_pump(), &o.op)
    if rc != 0:
        return o.op.res if rc == 1 else rc
    Py_INCREF(o)
    o.fiber = me
    try:
        s._park(me)
    except BaseException:
        if o.op.state != FIB__S_IDLE:
            o.fiber = None
            fib__pump_cancel(&s._io.c, &o.op)
        elif o.op.code == FIB__OP_ACCEPT and o.op.res >= 0:
            # It completed in the same tick the exception arrived.
            close(o.op.res)
            o.op.res = -ECANCELED
        raise
    return o.op.res


cdef _Op _arm_poll(Scheduler s, int fd, int kind, str what):
    # A POLLIN record on one of the scheduler's own fds (the waker, the
    # pool's sink), handled by its owner (kind).  Returns it in flight, with
    # the pump's reference taken; None when the fd was readable already, so
    # the caller drains it now and arms again later.
    cdef _Op o = _new_op(FIB__OP_POLL, fd)
    cdef int rc
    o.op.events = POLLIN
    o.kind = <unsigned char>kind
    rc = fib__pump_submit(&s._io.c, &o.op)
    if rc < 0:
        raise _oserror(-rc, what)
    if rc == 1:
        return None
    Py_INCREF(o)
    return o


cdef int _op_finished(Scheduler s, _Op o) except -1:
    # The final completion of a fiber's record: wake the fiber.  If it gave
    # up on the record (killed, timed out), the record cleans up after it:
    # a connection accepted after its acceptor left is closed, since nobody
    # owns it, and a recv's data goes back to its socket (a Socket in
    # o.keep: see Socket._wait).  The pump's reference to the record goes
    # here.
    cdef Fiber f = o.fiber
    Py_DECREF(o)
    if o.op.code == FIB__OP_RECV and type(o.keep) is Socket:
        (<Socket>o.keep)._late_done(s, o)
    if f is not None:
        o.fiber = None
        if f._state == ST_SUSPENDED:
            s._wake(f, None)
    elif o.op.code == FIB__OP_ACCEPT and o.op.res >= 0:
        close(o.op.res)
    return 0


cdef inline _Op _new_op(int code, int fd):
    cdef _Op o = _Op.__new__(_Op)
    o.op.code = <unsigned char>code
    o.op.fd = fd
    o.op.offset = -1
    o.op.owner = <void *>o
    return o


cdef inline int _op_alloc(_Op o, Py_ssize_t n) except -1:
    # A fresh bytes object for the kernel to fill; _op_bytes hands it out.
    if n > MAX_IO:
        n = MAX_IO
    o.raw = _fib_bytes_new(NULL, n)
    o.op.buf = PyBytes_AS_STRING(o.raw)
    o.op.len = <unsigned int>n
    return 0


cdef object _op_bytes(_Op o, Py_ssize_t n):
    # The filled bytes, shrunk to n.  We hold the only reference, so the
    # resize is in place.
    cdef PyObject *raw = o.raw
    o.raw = NULL
    if n != PyBytes_GET_SIZE(raw):
        _PyBytes_Resize(&raw, n)
    result = <object>raw
    Py_DECREF(result)       # the reference that `raw` carried
    return result


cdef inline int _op_view(_Op o, object obj, bint writable) except -1:
    PyObject_GetBuffer(obj, &o.view, PyBUF_WRITABLE if writable
                       else PyBUF_SIMPLE)
    o.has_view = True
    o.op.buf = o.view.buf
    o.op.len = <unsigned int>(o.view.len if o.view.len < MAX_IO else MAX_IO)
    return 0


cdef int _fileno(object fd) except -1:
    cdef int n
    if not isinstance(fd, int):
        fileno = getattr(fd, "fileno", None)
        if fileno is None:
            raise TypeError(f"expected an fd or an object with fileno(), "
                            f"got {type(fd).__name__}")
        fd = fileno()
    n = fd
    if n < 0:
        raise ValueError(f"file descriptor cannot be negative: {n}")
    return n


# --------------------------------------------------------------------------
# Waiting on foreign fds
# --------------------------------------------------------------------------

cdef int _poll_foreign(Scheduler s, Fiber me, int fd, int events, Timer t,
                       str word) except -1:
    # Wait until a foreign fd is ready; returns its ready events.  `t`, if
    # any, is an armed timeout, disarmed here whatever happens.
    cdef _Op o = _new_op(FIB__OP_POLL, fd)
    cdef int rc
    o.op.events = <unsigned short>events
    o.op.flags = FIB__F_FOREIGN
    try:
        rc = _io_wait(s, me, o)
    finally:
        if t is not None:
            s._disarm_timeout(me, t)
    if rc < 0:
        raise _oserror(-rc, word)
    return rc


def _wait_fd(fd, int events, timeout, str word):
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef int n
    if me is None:
        return s._drive(word, _wait_fd, (fd, events, timeout, word))
    n = _fileno(fd)
    return _poll_foreign(s, me, n, events,
                  None if timeout is None else s._arm_timeout(me, timeout),
                  word)


def wait_readable(fd, timeout=None):
    """Suspend this fiber until ``fd`` (an int, or anything with
    ``fileno()``) is readable.  Raises :class:`Timeout` after ``timeout``
    seconds.  For fds owned by other libraries; fibers' own sockets and
    files wait by themselves."""
    _wait_fd(fd, POLLIN, timeout, "wait_readable")


def wait_writable(fd, timeout=None):
    """Suspend this fiber until ``fd`` is writable; see
    :func:`wait_readable`."""
    _wait_fd(fd, POLLOUT, timeout, "wait_writable")


def wait_fd(fd, events, timeout=None):
    """Suspend this fiber until ``fd`` (an int, or anything with
    ``fileno()``) is ready for any of ``events`` (``select.POLLIN``,
    ``select.POLLOUT`` or both, or'd), and return the ready
    events as :func:`select.poll` reports them (``POLLERR`` and
    ``POLLHUP`` may be among them).  One wait in the pump, however many
    events are asked for: "readable or writable" needs no helper fiber.
    Raises :class:`Timeout` after ``timeout`` seconds (None: no limit).
    For fds owned by other libraries, as :func:`wait_readable`."""
    cdef int ev = _int_arg(events, "wait_fd", "events")
    if ev & ~(POLLIN | POLLOUT) or ev == 0:
        # (No POLLPRI: the epoll backend registers fds for in and out.)
        raise ValueError(f"wait_fd() argument 'events' must be POLLIN, "
                         f"POLLOUT or both, got {events!r}")
    return _wait_fd(fd, ev, timeout, "wait_fd")
