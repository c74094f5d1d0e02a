# The completion pump, seen from Python: choosing a backend, the operation
# record (_Op), the _Pump the scheduler holds -- its tick, its dispatch
# table, its waker and its shutdown -- a fiber's wait on a record, and
# waiting on foreign fds.  Included by _core.pyx.
#
# csrc/fib_pump.h is the contract between the pump and a backend; this is
# the contract between the scheduler and the pump.  The scheduler holds one
# _Pump (Scheduler._io), whose C pump opens on first I/O (_get_pump), and
# asks it for one thing: the completions of one tick, from its io step
# (Scheduler._step_io calls tick()).  The _Pump keeps five promises:
#
#   1. tick(s, t) makes one kernel call (a virtual clock's grace may take
#      a few): it sends what this tick's fibers queued and waits up to t,
#      the budget the scheduler computed (Scheduler._wait_budget, which
#      knows the timers, the ready fibers and the caller of run()).  It
#      runs the signal handlers only after dispatching every completion,
#      so a KeyboardInterrupt never loses one.
#   2. Each completion goes to its record's owner, never to the scheduler:
#      the record's kind (_Op.kind) picks the owner's handler from one
#      table (_op_handlers, below): a fiber's record wakes its fiber
#      (_op_finished), a multishot stream queues what came
#      (_stream_complete), a file op, the blocking pool's sink and the
#      waker have theirs beside their code.  The handler drops the pump's
#      reference to the record.
#   3. A record in flight stays alive, with every buffer the kernel may
#      touch, until its final completion (fib_pump.h, promise 2): whoever
#      submits it takes a reference for the pump (_io_wait, _arm_poll,
#      _Stream._arm).  A fiber that gives up (killed, timed out) only
#      cancels; the record lives until the kernel's final word on it.
#   4. The waker is the pump's: a pipe whose read end it keeps a wait on,
#      so that another thread (call_threadsafe) or an OS signal
#      (set_wakeup_fd) ends the tick's wait.  waiting() leaves it out: it
#      is nobody's work.  Before the pump opens, a tick waits on the
#      waker's fd alone.
#   5. shutdown() (Scheduler.close) cancels and reaps everything in
#      flight, waking no fiber (they are gone), closes the pump once it is
#      empty, then the waker.  A record the kernel never gives back keeps
#      its buffers: the pump is then never closed.
#
# A recv, top down: Socket.recv (_net.pxi) takes from the socket's
# multishot stream (_stream.pxi), which arms its record in the pump, or
# submits a single-shot record and parks (_io_wait, below); the tick's
# wait sends it to the backend (fib_uring.c or fib_epoll.c), whose
# completion tick() hands to the record's owner (_stream_complete or
# _op_finished), which wakes the fiber; recv returns the bytes.

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


# --------------------------------------------------------------------------
# The pump: one tick's completions, to their owners
# --------------------------------------------------------------------------

cdef int _pump_wait(fib__pump *p, int64_t timeout_ns, fib__cqe *out) \
        except -1:
    # One pump wait for the scheduler or a Ring: the GIL is released only
    # when it may block.  Returns the completions stored in out (0 when a
    # signal cut the wait short).  The caller runs the signal handlers
    # (Scheduler._check_signals) once it has dispatched what came back.
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


# The dispatch table: for each kind of record (_Op.kind, OP_* in
# _pump.pxd), its owner's completion handler.  A handler gets every
# completion of the record (a multishot one gets several; the last comes
# without FIB__C_MORE) and drops the pump's reference with the last.
ctypedef int (*_op_handler)(Scheduler s, _Op o, fib__cqe *c) except -1

cdef _op_handler _op_handlers[OP_KINDS]
_op_handlers[OP_FIBER] = _op_finished           # below
_op_handlers[OP_STREAM] = _stream_complete      # _stream.pxi
_op_handlers[OP_FILE] = _file_op_finished       # _file.pxi
_op_handlers[OP_SINK] = _sink_complete          # _blocking.pxi
_op_handlers[OP_WAKER] = _waker_complete        # below


cdef inline int _dispatch(Scheduler s, fib__cqe *c) except -1:
    cdef _Op o = <_Op>c.op.owner
    return _op_handlers[o.kind](s, o, c)


cdef int _reaped(object s, fib__cqe *c) except -1:
    # shutdown(): a reaped record goes to its owner like any other.
    return _dispatch(<Scheduler>s, c)


cdef _Pump _new_pump(object backend):
    # The scheduler's pump, not opened yet: the backend is chosen now (see
    # _choose_backend), the ring is set up on first I/O.
    cdef _Pump p = _Pump.__new__(_Pump)
    p.backend = _choose_backend(backend)
    p.open_flags = _pump_open_flags()
    p.fixed = {}
    p.multishot = (p.backend == FIB__BACKEND_URING and
                   _os.environ.get("FIBERS_MULTISHOT", "1") != "0")
    return p


@cython.final
cdef class _Pump:
    def __cinit__(self):
        self.wake_r = -1
        self.wake_w = -1

    def __dealloc__(self):
        if self.is_open:
            # Records still in flight keep their references: the kernel may
            # still write into their buffers, so they are never freed.
            fib__pump_close(&self.c)
            self.is_open = False
        if self.wake_r >= 0:
            close(self.wake_r)
            close(self.wake_w)
            self.wake_r = self.wake_w = -1

    cdef fib__pump *open(self) except NULL:
        cdef int rc
        if not self.is_open:
            rc = fib__pump_open(&self.c, self.backend, 1024,
                                self.open_flags)
            if rc < 0:
                raise _oserror(-rc, f"cannot open the "
                               f"{_BACKEND_NAMES[self.backend]} pump")
            self.is_open = True
            # From now on the tick waits in the pump: the waker goes there.
            self.arm_waker()
        return &self.c

    cdef inline Py_ssize_t waiting(self) noexcept:
        # Records in flight that someone waits for; the waker's own wait is
        # not one of them.  (A record not yet flushed to the kernel is in
        # flight too; the waker's re-arm must not count.)
        if not self.is_open:
            return 0
        return <Py_ssize_t>self.c.inflight - (self.wake_op is not None)

    # ---- the tick -------------------------------------------------------

    cdef int tick(self, Scheduler s, int64_t t, bint grace) except -1:
        # The scheduler's one question: this tick's completions, each
        # handed to its owner, waiting up to t (ns; -1 without limit, 0
        # not at all).  Returns how many came (0: none, or a signal).
        # With `grace`, t is a virtual clock's real grace for I/O before it
        # jumps, spent whole even if the pump returns early with nothing
        # (epoll reports a fresh registration's EPOLLOUT edge, which no
        # record wants), or the clock would jump while a completion is a
        # moment away.
        cdef int64_t end
        cdef int rc
        if not self.is_open:
            return self.wait_waker(s, t)
        if not grace or t <= 0:
            return self.step(s, t)
        end = fib__monotonic_ns() + t
        rc = self.step(s, t)
        while rc == 0 and s._ready.count == 0:
            t = end - fib__monotonic_ns()
            if t <= 0:
                break
            rc = self.step(s, t)
        return rc

    cdef int step(self, Scheduler s, int64_t t) except -1:
        # One kernel call: submit what this tick's fibers queued and wait
        # up to t for completions, then hand each to its owner.  Signal
        # handlers run after the completions are dispatched, never before
        # (a KeyboardInterrupt must not lose them): io_uring_enter cut
        # short by a signal returns the count it submitted, not EINTR, so
        # the check cannot depend on the return code.
        cdef int i, rc
        if t != 0:
            # A wait that may block: the tick's time there is not busy time
            # (fib_monitor.h).
            fib__tick_wait_begin(&s._tstats, &s._mon)
            rc = _pump_wait(&self.c, t, self.done)
            fib__tick_wait_end(&s._tstats, &s._mon)
        else:
            rc = _pump_wait(&self.c, t, self.done)
        for i in range(rc):
            _dispatch(s, &self.done[i])
        s._check_signals()
        return rc

    cdef int deliver(self, Scheduler s) except -1:
        # From a running fiber, between ticks: hand out the completions the
        # kernel has already made, without waiting and without running any
        # fiber (handlers only queue and wake).  A call that must not wait
        # (a non-blocking recv, MSG_DONTWAIT) uses it before it reports
        # EAGAIN: data a socket already received may sit in a completion
        # not yet harvested or, with DEFER_TASKRUN, in a multishot recv's
        # task work that only a kernel call runs -- select() says readable,
        # and the stdlib's recv would return it.  Signal handlers wait for
        # the next tick.
        cdef int i, rc
        cdef int total = 0
        if not self.is_open or self.reaping:
            return 0
        for _ in range(64):         # a bound: completions keep coming
            rc = _pump_wait(&self.c, 0, self.done)
            for i in range(rc):
                _dispatch(s, &self.done[i])
            total += rc
            if rc < PUMP_BATCH:
                break
        return total

    # ---- the waker: other threads and OS signals ------------------------

    cdef int wait_waker(self, Scheduler s, int64_t t) except -1:
        # No pump yet (no I/O so far): the tick waits on the waker alone.
        cdef int rc = 0
        if t != 0:
            fib__tick_wait_begin(&s._tstats, &s._mon)
            with nogil:
                rc = fib__wait_fd(self.wake_r, t)
            fib__tick_wait_end(&s._tstats, &s._mon)
            if rc > 0:
                fib__waker_drain(self.wake_r)
            else:
                rc = 0
            s._check_signals()
        return rc

    cdef int open_waker(self) except -1:
        # For run(): the pipe, and the pump's wait on it if the pump is
        # open (else open() arms it).
        cdef int rc
        if self.wake_r < 0:
            rc = fib__waker_open(&self.wake_r, &self.wake_w)
            if rc < 0:
                raise _oserror(-rc, "cannot create the scheduler's waker")
        if self.is_open:
            self.arm_waker()
        return 0

    cdef int arm_waker(self) except -1:
        # The pump's wait on the waker's read end, kept armed while the
        # scheduler lives.
        if self.wake_op is not None or self.wake_r < 0 or self.reaping:
            return 0
        self.wake_op = _arm_poll(self, self.wake_r, OP_WAKER,
                                 "cannot wait on the scheduler's waker")
        if self.wake_op is None:
            # Already readable: drain it; the next tick arms it again.
            fib__waker_drain(self.wake_r)
        return 0

    cdef void poke(self) noexcept:
        # From any thread (call_threadsafe): end the tick's wait.
        if self.wake_w >= 0:
            fib__waker_poke(self.wake_w)

    # ---- sockets and files ----------------------------------------------

    cdef void forget_fd(self, int fd, bint busy) noexcept:
        if self.is_open:
            fib__pump_forget_fd(&self.c, fd, busy)

    # ---- shutdown -------------------------------------------------------

    cdef int end_streams(self) except -1:
        # close(), before it kills the fibers: a multishot record (a
        # listener's accept, a connection's recv) belongs to its socket,
        # not to a fiber, so killing the fiber parked on it leaves it
        # armed, and close() would wait for it forever.  Cancel them (each
        # still ends with its own completion, which its stream takes as
        # the end of the arming), and arm no new one (see _Stream._arm).
        cdef fib__op *op
        self.no_streams = True
        if not self.is_open:
            return 0
        op = self.c.live
        while op != NULL:
            if op.code >= FIB__OP_RECV_MULTI:
                fib__pump_cancel(&self.c, op)
            op = op.live_next
        return 0

    cdef int shutdown(self, Scheduler s) except -1:
        # close(), last: cancel whatever is still in flight and reap it, so
        # no record outlives the scheduler (see _pump_reap).  Fibers are
        # not woken: they are gone.  The waker closes only once nothing
        # can write to it: the pump's wait on it is reaped, and the signal
        # wakeup fd is ours no longer (see Scheduler._leave).
        cdef fib__op *op
        self.reaping = True
        if self.is_open:
            op = self.c.live
            while op != NULL:
                (<_Op>op.owner).fiber = None
                op = op.live_next
            if _pump_reap(&self.c, self.done, s, _reaped):
                fib__pump_close(&self.c)
                self.is_open = False
        if self.wake_r >= 0 and self.wake_op is None:
            close(self.wake_r)
            close(self.wake_w)
            self.wake_r = self.wake_w = -1
        return 0


# --------------------------------------------------------------------------
# A fiber's record, and the pump's own waits
# --------------------------------------------------------------------------

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


cdef int _op_finished(Scheduler s, _Op o, fib__cqe *c) except -1:
    # OP_FIBER: the final completion of a fiber's record: wake the fiber.
    # If it gave up on the record (killed, timed out), the record cleans up
    # after it: a connection accepted after its acceptor left is closed,
    # since nobody owns it, and a recv's data goes back to its socket (a
    # Socket in o.keep: see Socket._wait).  The pump's reference to the
    # record goes here.
    cdef Fiber f = o.fiber
    Py_DECREF(o)
    if o.op.code == FIB__OP_RECV and type(o.keep) is _Sock:
        (<_Sock>o.keep)._late_done(s, o)
    if f is not None:
        o.fiber = None
        if f._state == ST_SUSPENDED:
            s._wake(f, None)
    elif o.op.code == FIB__OP_ACCEPT and o.op.res >= 0:
        close(o.op.res)
    return 0


cdef _Op _arm_poll(_Pump p, int fd, int kind, str what):
    # A POLLIN record on one of the scheduler's own fds (the waker, the
    # pool's sink), handled by its owner (kind).  Returns it in flight, with
    # the pump's reference taken; None when the fd was readable already, so
    # the caller drains it now and arms again later.
    cdef _Op o = _new_op(FIB__OP_POLL, fd)
    cdef int rc
    o.op.events = POLLIN
    o.kind = <unsigned char>kind
    rc = fib__pump_submit(&p.c, &o.op)
    if rc < 0:
        raise _oserror(-rc, what)
    if rc == 1:
        return None
    Py_INCREF(o)
    return o


cdef int _waker_complete(Scheduler s, _Op o, fib__cqe *c) except -1:
    # OP_WAKER: another thread or a signal wrote to the waker, and the
    # tick's wait ended.  Drain it and wait on it again.
    cdef _Pump p = s._io
    p.wake_op = None
    Py_DECREF(o)
    fib__waker_drain(p.wake_r)
    return p.arm_waker()


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
