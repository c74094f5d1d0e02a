# Declarations for sockets (fibers/_net.pxi).  Included by _core.pxd, so that
# they sit beside their code while _core stays one compilation unit.

# Defined in _stream.pxd: a socket's multishot stream.
cdef class _Stream


# The state and the waiting of a fibers.net.Socket (a Python subclass of
# socket.socket, which holds it in its _c slot).  It has no reference back
# to that object: the pump and the multishot stream keep only this.
cdef class _Sock:
    cdef int _fd
    cdef int64_t _timeout_ns    # -1: blocking; 0: non-blocking mode
    cdef Scheduler _reg         # the scheduler whose pump has seen the fd
    cdef bint _nonblocking      # O_NONBLOCK is set on the fd
    cdef int _inflight          # our operations in the pump now
    cdef bint _closed
    cdef object _pushback       # bytes an interrupted recv had received
    cdef int _pending_err       # errno a MSG_WAITALL recv owes the next call
    cdef _Stream _ms            # multishot results (io_uring servers)
    # a recv its fiber gave up on (timeout, kill), still being cancelled:
    # it may yet complete with data, which then goes to _pushback; no new
    # recv starts before it is done (fibers wait in _late_waiters)
    cdef _Op _late
    cdef WaitQueue _late_waiters

    cdef int _prepare(self, Scheduler s) except -1
    cdef int _wait(self, Scheduler s, Fiber me, _Op o, bint try_first,
                   bint timed) except? -1
    cdef Timer _arm(self, Scheduler s, Fiber me)
    cdef int _connect(self, object sock, object address) except? -1
    cdef object _resolve(self, Scheduler s, object sock, object address)
    cdef int _nonblock_call(self) except -1
    cdef int _wait_ready(self, Scheduler s, Fiber me, int events,
                         bint timed) except? -1
    cdef object _poll_loop(self, str word, object fn, tuple args,
                           int events)
    cdef int _close(self) except -1
    cdef int _plain_reads(self, Scheduler s, Fiber me) except -1
    cdef int _end_stream(self) except -1
    cdef inline bint _busy(self)
    cdef Py_ssize_t _recv_once(self, Scheduler s, Fiber me, object buffer,
                               Py_ssize_t nbytes, int flags,
                               bint timed) except -1
    cdef int _raise_pending(self) except -1
    cdef int _settle(self, Scheduler s, Fiber me, bint timed) except -1
    cdef int _late_done(self, Scheduler s, _Op o) except -1
    cdef Py_ssize_t _recv_waitall(self, Scheduler s, Fiber me,
                                  object buffer, Py_ssize_t n,
                                  int flags) except -1
    cdef int _recv_wait(self, Scheduler s, Fiber me, _Op o,
                        bint timed) except? -1
