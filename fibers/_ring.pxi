# The low-level ring with callbacks (fibers.ring.Ring).  Included by
# _core.pyx.
#
# The luring idea, with the sharp edges filed off: a Ring is a private pump
# (io_uring or epoll, behind the same contract the scheduler uses) driven by
# hand.  Operations are queued with a callback; submit() sends them;
# process_completions() calls the callbacks.  The ring keeps each
# operation's buffer and callback alive until its completion, so there is
# no "cqe seen" step to forget, and close() cancels and reaps whatever is
# still in flight.  A Ring needs no scheduler and no fiber.


@cython.final
cdef class Ring:
    """A completion ring with callbacks, for code that wants to drive I/O
    by hand.

    Each operation takes a ``callback(result, data)``: ``result`` is a
    byte count or a new fd, or ``-errno`` on failure (see :func:`strerror`);
    ``data`` is the bytes read, the object written, or None for accept.
    Nothing reaches the kernel until :meth:`submit`; callbacks run only in
    :meth:`process_completions`.  A Ring belongs to the thread that made it.

    On the epoll backend, operations on sockets, pipes and ttys are done
    when the fd becomes ready, and the fd is switched to O_NONBLOCK the
    first time it is seen; on io_uring an O_NONBLOCK socket completes with
    ``-EAGAIN`` rather than waiting, as the kernel does."""

    def __init__(self, int entries=256, backend=None):
        cdef int rc
        if entries < 1 or entries > 32768:
            raise ValueError("entries must be between 1 and 32768")
        rc = fib__pump_open(&self._pump, _choose_backend(backend),
                            <unsigned>entries, _pump_open_flags())
        if rc < 0:
            raise _oserror(-rc, "cannot open the ring")
        self._open = True
        self._entries = entries
        self._finished = []
        self._owner_thread = <long>PyThread_get_thread_ident()

    def __dealloc__(self):
        if self._open and self._pump.inflight == 0:
            fib__pump_close(&self._pump)
        # Otherwise records are in flight and the kernel may still write
        # into their buffers: leak the ring rather than free them.

    cdef int _check(self) except -1:
        if not self._open:
            raise ValueError("the ring is closed")
        if self._owner_thread != <long>PyThread_get_thread_ident():
            raise RuntimeError("a Ring can only be used by the thread that "
                               "created it")
        return 0

    cdef int _queue(self, _Op o, object callback) except -1:
        cdef int rc
        if not callable(callback):
            raise TypeError(f"callback must be callable, got "
                            f"{type(callback).__name__}")
        if self._unsubmitted >= self._entries:
            raise OSError(EBUSY, f"the submission queue is full ("
                          f"{self._entries} entries); call submit() first")
        o.callback = callback
        o.op.flags = FIB__F_FOREIGN
        rc = fib__pump_submit(&self._pump, &o.op)
        if rc == -EBUSY:
            raise _oserror(EBUSY, "the submission queue is full")
        if rc < 0:
            # Refused before reaching the kernel (epoll: a bad fd): report
            # it the way io_uring would, through the callback.
            o.op.res = rc
            rc = 1
        if rc == 1:
            # Done on the spot (epoll): its callback is due all the same.
            self._finished.append(o)
        else:
            Py_INCREF(o)        # the pump's, until the completion
        self._unsubmitted += 1
        return 0

    def read(self, int fd, Py_ssize_t size, offset, callback):
        """Read up to ``size`` bytes at ``offset`` (-1: the file position);
        the callback gets the bytes read."""
        cdef _Op o
        self._check()
        if size < 0:
            raise ValueError("size must be >= 0")
        o = _new_op(FIB__OP_READ, fd)
        o.op.offset = offset
        _op_alloc(o, size)
        self._queue(o, callback)

    def write(self, int fd, data, offset, callback):
        """Write ``data`` at ``offset`` (-1: the file position)."""
        cdef _Op o
        self._check()
        o = _new_op(FIB__OP_WRITE, fd)
        o.op.offset = offset
        _op_view(o, data, False)
        o.keep = data
        self._queue(o, callback)

    def recv(self, int fd, Py_ssize_t size, int flags, callback):
        """Receive up to ``size`` bytes from a socket."""
        cdef _Op o
        self._check()
        if size < 0:
            raise ValueError("size must be >= 0")
        o = _new_op(FIB__OP_RECV, fd)
        o.op.msg_flags = flags
        _op_alloc(o, size)
        self._queue(o, callback)

    def send(self, int fd, data, int flags, callback):
        """Send ``data`` on a socket (MSG_NOSIGNAL is always added)."""
        cdef _Op o
        self._check()
        o = _new_op(FIB__OP_SEND, fd)
        o.op.msg_flags = flags | MSG_NOSIGNAL
        _op_view(o, data, False)
        o.keep = data
        self._queue(o, callback)

    def accept(self, int fd, callback):
        """Accept a connection; the callback's result is the new fd (close-
        on-exec), which the callback then owns."""
        cdef _Op o
        self._check()
        o = _new_op(FIB__OP_ACCEPT, fd)
        self._queue(o, callback)

    def submit(self):
        """Send every queued operation to the kernel; returns how many."""
        cdef int n = self._unsubmitted
        cdef int rc
        self._check()
        rc = fib__pump_flush(&self._pump)
        if rc < 0:
            raise _oserror(-rc, "submit")
        self._unsubmitted = 0
        return n

    cdef int _harvest(self, int64_t timeout_ns) except -1:
        cdef int i, rc
        cdef _Op o
        rc = _pump_wait(&self._pump, timeout_ns, self._done)
        self._unsubmitted = 0
        for i in range(rc):
            o = <_Op>self._done[i].op.owner
            self._finished.append(o)
            Py_DECREF(o)        # the pump's; _finished holds one now
        if timeout_ns != 0:
            # After the records are safe in _finished: a handler that
            # raises must not lose them.
            PyErr_CheckSignals()
        return rc

    def submit_and_wait(self, int n=1):
        """Submit, then wait until at least ``n`` completions are ready
        (or nothing is left in flight).  Returns how many were submitted."""
        cdef int submitted = self._unsubmitted
        self._check()
        self._harvest(0)
        while len(self._finished) < n and self._pump.inflight:
            self._harvest(-1)
        return submitted

    def process_completions(self):
        """Call the callbacks of every completed operation, without
        waiting.  Returns how many ran.  If callbacks raise, the others
        still run and the first exception is raised at the end."""
        cdef list done
        cdef _Op o
        cdef Py_ssize_t i
        self._check()
        self._harvest(0)
        done = self._finished
        self._finished = []
        first = None
        for i in range(len(done)):
            o = <_Op>done[i]
            res = o.op.res
            if o.op.code == FIB__OP_READ or o.op.code == FIB__OP_RECV:
                data = _op_bytes(o, res) if res >= 0 else b""
            else:
                data = o.keep
            cb = o.callback
            o.callback = None
            o.keep = None
            o._release()
            try:
                cb(res, data)
            except BaseException as e:
                if first is None:
                    first = e
                else:
                    _log.error("Ring callback %r raised", cb,
                               exc_info=(type(e), e, e.__traceback__))
        if first is not None:
            raise first
        return len(done)

    @property
    def pending(self):
        """Operations in flight (queued or submitted, not yet completed)."""
        return self._pump.inflight

    @property
    def entries(self):
        return self._entries

    @property
    def backend(self):
        return self._pump.be.name.decode() if self._open else None

    def close(self):
        """Cancel everything in flight, reap it (its callbacks are not
        called; accepted fds are closed) and release the ring."""
        cdef _Op o
        cdef bint reaped
        if not self._open:
            return
        self._check()
        reaped = _pump_reap(&self._pump, self._done, self, _ring_reaped)
        self._unsubmitted = 0
        for o in self._finished:
            if o.op.code == FIB__OP_ACCEPT and o.op.res >= 0:
                close(o.op.res)
            o.callback = None
        self._finished = []
        if reaped:
            fib__pump_close(&self._pump)
            self._open = False
        else:
            raise RuntimeError("the ring could not reap every operation "
                               "in flight")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return (f"<fibers.ring.Ring backend={self.backend!r} "
                f"pending={self.pending}>")


cdef int _ring_reaped(object ring, fib__cqe *c) except -1:
    # close(): a reaped record joins the finished ones; its callback is
    # not called.
    cdef _Op o = <_Op>c.op.owner
    (<Ring>ring)._finished.append(o)
    Py_DECREF(o)            # the pump's; _finished holds one now
    return 0


def strerror(int err):
    """The message for an errno, given as a positive number or as the
    negative result a callback receives."""
    return _os_strerror(-err if err < 0 else err)
