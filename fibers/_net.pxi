# Cooperative sockets (fibers.net.Socket).  Included by _core.pyx.
#
# A Socket is a socket.socket: a Python subclass of the stdlib's class, so
# that isinstance() checks, and the stdlib's own methods called on it
# (socket.socket.getsockname(s), ssl's wrap_socket), accept it.  The C
# socket object underneath owns the fd and does what it does well:
# address parsing, options, names, fileno/detach, repr and the fd's
# lifetime.  Our state and waiting live in a typed core, _Sock, in the
# Socket's only slot (_c); the Socket's hot methods (recv, recv_into,
# send, sendall) are compiled functions that fetch the core and call its
# cdef methods, so a call costs one slot read more than a cdef class's.
# The core has no reference back to the Socket: the pump's records and the
# multishot stream hold only the core.
#
# A recv, top down: Socket.recv hands out bytes put back first
# (_pushback); on a server's TCP connection (io_uring) it takes from the
# socket's multishot stream (_ms, _stream.pxi); otherwise, or while that
# stream is in bulk mode, it submits a single-shot record to the pump and
# parks (_recv_wait, _wait, then _io_wait in _pump.pxi).  Either way the
# pump's tick hands the completion to the record's owner, which wakes the
# fiber (the pump's design note, _pump.pxi, has the whole path).
#
# recv, recv_into, send, sendall and accept are pump operations on the raw
# fd; connect, recvfrom, sendto, sendmsg, recvmsg and sendfile are "try
# without waiting, else wait for readiness": the stdlib's C method with
# MSG_DONTWAIT (sendfile and connect have no flags: they set O_NONBLOCK
# around the call).  The C object's own timeout is never positive (None,
# or 0 under socket.setdefaulttimeout()), so none of its methods waits in
# CPython; the Socket's timeout is ours (the core's _timeout_ns).  A
# caller's own MSG_DONTWAIT on a blocking socket means one call and
# EAGAIN at once, as in the stdlib, so those calls skip the wait loop.
#
# The fd's O_NONBLOCK flag follows the backend: io_uring wants blocking fds
# (on an O_NONBLOCK socket it hands back -EAGAIN instead of waiting), epoll
# wants non-blocking ones.  The flag is fixed lazily, the first time a
# scheduler uses the socket, and the direct calls use MSG_DONTWAIT so they
# never block whatever the flag says.  A dup() shares the flag (it belongs
# to the open file, not the fd), so its core starts from the flag's state.
#
# A closed socket's calls go to the stdlib's C methods, whose fd is then
# -1: they check their arguments, then fail with EBADF, in the stdlib's
# order (recv(0) returns b'', connect_ex returns EBADF).
#
# send and sendall try the system call first on io_uring too: a socket with
# room in its buffer takes the data at once, with no park and no extra
# tick, which is what a server writing replies sees almost always.
#
# A receive is never lost to an interruption (timeout, kill).  A recv the
# pump has completed but whose fiber was interrupted in the same tick puts
# its bytes back (_pushback).  A recv still in flight is cancelled, but a
# cancel can lose the race (fib_pump.h, promise 2; on io_uring without
# DEFER_TASKRUN, before Linux 6.1, it often does): the record stays with
# the socket (_late) and its data, if any, goes to _pushback when it
# completes.  Until then no other receive starts on the socket (_settle),
# so nothing received later can overtake those bytes.

import io as _io_mod
import socket as _socket_mod
import _socket as _csocket_mod
from libc.errno cimport EISCONN, EALREADY, ENOTCONN, EPIPE
from posix.fcntl cimport fcntl, F_GETFL, F_SETFL, O_NONBLOCK

from libc.string cimport memcpy
from libc.math cimport ceil

# The stdlib's classes and functions, bound once at import.  A program may
# monkey-patch ``socket.socket = fibers.net.Socket`` (the first thing a
# gevent user tries); looked up at call time, socket.socket would then be
# Socket itself, and Socket() calling it would recurse in C until the stack
# overflowed.
cdef object _StdSocket = _socket_mod.socket
cdef object _CSocket = _csocket_mod.socket
cdef object _SocketIO = _socket_mod.SocketIO
cdef object _getaddrinfo = _socket_mod.getaddrinfo
cdef object _getdefaulttimeout = _socket_mod.getdefaulttimeout
cdef object _inet_pton = _socket_mod.inet_pton
cdef object _GiveupOnSendfile = _socket_mod._GiveupOnSendfile
cdef object _os_sendfile = getattr(_os, "sendfile", None)
cdef object _os_dup = _os.dup
cdef object _os_fstat = _os.fstat
# The C methods, for the calls that try first and for closed sockets.
cdef object _c_recv = _CSocket.recv
cdef object _c_recv_into = _CSocket.recv_into
cdef object _c_recvfrom = _CSocket.recvfrom
cdef object _c_recvfrom_into = _CSocket.recvfrom_into
cdef object _c_send = _CSocket.send
cdef object _c_sendall = _CSocket.sendall
cdef object _c_sendto = _CSocket.sendto
cdef object _c_sendmsg = getattr(_CSocket, "sendmsg", None)
cdef object _c_recvmsg = getattr(_CSocket, "recvmsg", None)
cdef object _c_recvmsg_into = getattr(_CSocket, "recvmsg_into", None)
cdef object _c_accept = _CSocket._accept
cdef object _c_connect = _CSocket.connect
cdef object _c_connect_ex = _CSocket.connect_ex
cdef object _c_settimeout = _CSocket.settimeout
cdef object _c_gettimeout = _CSocket.gettimeout
cdef object _c_fileno = _CSocket.fileno
cdef object _c_close = _CSocket.close
cdef object _c_detach = _CSocket.detach
cdef object _c_getsockopt = _CSocket.getsockopt
cdef object _std_repr = _StdSocket.__repr__

# settimeout() checks its value the way the stdlib does, by asking it: a
# socket object with no fd (-1, never opened) parses the value (raising
# TypeError, ValueError or OverflowError, with the messages of this
# CPython) and only then fails with EBADF.
cdef object _timeout_check = _socket_mod.SocketType.__new__(
    _socket_mod.SocketType)

cdef extern from "<sys/socket.h>":
    enum:
        MSG_NOSIGNAL
        MSG_DONTWAIT
        MSG_PEEK
        MSG_WAITALL


cdef object _closed_error():
    return OSError(EBADF, "Bad file descriptor")


cdef int _set_nonblocking(int fd, bint on) except -1:
    cdef int flags = fcntl(fd, F_GETFL)
    if flags < 0:
        raise _oserror(errno_get())
    if on:
        flags |= O_NONBLOCK
    else:
        flags &= ~O_NONBLOCK
    if fcntl(fd, F_SETFL, flags) < 0:
        raise _oserror(errno_get())
    return 0


cdef int64_t _timeout_ns_of(object value) except? -2:
    # A checked timeout value (see settimeout) in nanoseconds, rounded up
    # as CPython's socket stores them; -1 for None.
    cdef double d
    if value is None:
        return -1
    if isinstance(value, float):
        d = value
        return <int64_t>ceil(d * 1e9)
    return PyNumber_Index(value) * 1000000000


cdef int _init_socket(object self, object family, object type,
                      object proto, object fileno, int nonblocking) except -1:
    # Makes self (a Socket, its core still _closed_core) a socket over
    # fileno (None: a new socket).  nonblocking is the fd's O_NONBLOCK flag
    # when the caller knows it, or -1.  The C object gets no positive
    # timeout of its own (see the design note).
    cdef _Sock c = _Sock.__new__(_Sock)
    cdef int flags
    _StdSocket.__init__(self, family, type, proto, fileno)
    # The C object took its timeout as the stdlib decides it (0 for a
    # SOCK_NONBLOCK type, else socket.getdefaulttimeout()) and made the fd
    # non-blocking unless that is None; the timeout becomes ours.
    timeout = _c_gettimeout(self)
    if timeout is not None:
        if timeout > 0:
            _c_settimeout(self, 0)
        nonblocking = 1
        c._timeout_ns = _timeout_ns_of(timeout)
    c._fd = _c_fileno(self)
    if nonblocking < 0:
        flags = fcntl(c._fd, F_GETFL)
        if flags < 0:
            raise _oserror(errno_get())
        nonblocking = (flags & O_NONBLOCK) != 0
    c._nonblocking = nonblocking != 0
    c._closed = False
    self._c = c
    return 0


cdef object _new_socket(object cls, object family, object type,
                        object proto, int fd, int nonblocking):
    # A Socket of class cls owning fd (the caller closes fd on failure).
    self = _CSocket.__new__(cls)
    self._c = _closed_core
    _init_socket(self, family, type, proto, fd, nonblocking)
    return self


def _adopt_socket(sock):
    """Take over a stdlib socket (used by fibers.net): a Socket on its fd,
    which the stdlib object gives up (detach)."""
    cdef object family = sock.family, type = sock.type, proto = sock.proto
    timeout = sock.gettimeout()
    self = _new_socket(Socket, family, type, proto, sock.detach(), -1)
    # A socket.socket with a timeout is non-blocking underneath; its
    # timeout carries over, as dup() carries it.
    (<_Sock>self._c)._timeout_ns = _timeout_ns_of(timeout)
    return self

@cython.final
cdef class _Sock:
    # A Socket's state and waiting (see the design note): its fd, timeout,
    # scheduler, pushed-back bytes and multishot stream.

    def __cinit__(self):
        # Until a Socket is made over a real fd, its core is a closed one:
        # no call may use fd 0 by default.
        self._fd = -1
        self._closed = True
        self._timeout_ns = -1

    def __dealloc__(self):
        if not self._closed and self._reg is not None:
            self._reg._forget_fd(self._fd, self._busy())

    cdef inline bint _busy(self):
        # Anything of ours in the pump: a waiting call, a recv given up on
        # and not yet completed, or an armed stream.
        return self._inflight > 0 or self._late is not None or \
            (self._ms is not None and self._ms.op is not None)

    # ---- plumbing -------------------------------------------------------

    cdef int _prepare(self, Scheduler s) except -1:
        cdef bint want
        if self._closed:
            raise _closed_error()
        if self._reg is not s:
            if self._reg is not None:
                self._reg._forget_fd(self._fd, self._busy())
            # A socket collected in another thread could not clear its
            # number's state here: start clean.
            s._forget_fd(self._fd, False)
            self._reg = s
        want = s._io.backend == FIB__BACKEND_EPOLL or self._timeout_ns == 0
        if want != self._nonblocking:
            _set_nonblocking(self._fd, want)
            self._nonblocking = want
        return 0

    cdef Timer _arm(self, Scheduler s, Fiber me):
        if self._timeout_ns <= 0:
            return None
        return s._arm_exc(me, self._timeout_ns, TimeoutError("timed out"))

    cdef int _wait(self, Scheduler s, Fiber me, _Op o, bint try_first,
                   bint timed) except? -1:
        # Runs o to completion for this fiber; returns >= 0 or -errno.
        cdef Timer t = None
        cdef int res
        cdef bint nowait = self._timeout_ns == 0
        if o.op.code == FIB__OP_RECV or o.op.code == FIB__OP_SEND:
            nowait = _must_not_wait(self, o.op.msg_flags)
            o.op.msg_flags = _call_flags(self, o.op.msg_flags)
        if nowait or (try_first and s._io.backend == FIB__BACKEND_URING):
            res = fib__op_try(&o.op, 0)
            if res != -EAGAIN:
                return res
            if nowait:
                raise BlockingIOError(EAGAIN, "Resource temporarily "
                                      "unavailable")
        if timed:
            t = self._arm(s, me)
        self._inflight += 1
        try:
            res = _io_wait(s, me, o)
        except BaseException:
            if o.op.code != FIB__OP_RECV:
                pass
            elif o.op.state != FIB__S_IDLE:
                # Cancelled, but it may still complete with data: the
                # socket keeps the record until then (see _late_done).
                o.keep = self
                self._late = o
            elif o.op.res > 0:
                # It completed in the tick the interruption came: keep the
                # data for the next recv rather than lose it.
                if o.raw != NULL:
                    self._pushback = _op_bytes(o, o.op.res)
                else:
                    self._pushback = (<char *>o.op.buf)[:o.op.res]
            raise
        finally:
            self._inflight -= 1
            if t is not None:
                s._disarm_timeout(me, t)
        if res == -ECANCELED and self._closed:
            res = -EBADF
        return res

    cdef int _wait_ready(self, Scheduler s, Fiber me, int events,
                         bint timed) except? -1:
        # Wait for readiness on our own fd; returns the events or -errno.
        cdef _Op o = _new_op(FIB__OP_POLL, self._fd)
        o.op.events = <unsigned short>events
        return self._wait(s, me, o, False, timed)

    cdef object _poll_loop(self, str word, object fn, tuple args,
                           int events):
        # For the calls the pump has no operation for (recvfrom, sendto):
        # try through the stdlib object, wait for readiness, try again.
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef Timer t
        cdef int rc
        self._prepare(s)
        t = self._arm(s, me)
        try:
            if events == POLLIN:
                self._settle(s, me, False)
            while True:
                try:
                    return fn(*args)
                except BlockingIOError:
                    if self._timeout_ns == 0:
                        raise
                rc = self._wait_ready(s, me, events, False)
                if rc < 0:
                    raise _oserror(-rc, word)
        finally:
            if t is not None:
                s._disarm_timeout(me, t)

    cdef int _raise_pending(self) except -1:
        # Bytes put back come first: the error came after them.
        cdef int err = self._pending_err
        if err and self._pushback is None:
            self._pending_err = 0
            raise _oserror(err)
        return 0

    cdef int _settle(self, Scheduler s, Fiber me, bint timed) except -1:
        # Before a receive: wait until a recv this socket gave up on has
        # completed (its cancel normally ends it within a tick), so that
        # bytes it may have received come first.  Under the socket's
        # timeout, unless the caller keeps its own deadline.
        cdef Timer t
        if self._late is None:
            return 0
        if self._timeout_ns == 0:
            raise BlockingIOError(EAGAIN, "Resource temporarily "
                                  "unavailable")
        if self._late_waiters is None:
            self._late_waiters = _new_wq("socket.recv", self)
        t = self._arm(s, me) if timed else None
        try:
            while self._late is not None:
                s._wait_in(me, self._late_waiters)
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        if self._closed:
            raise _closed_error()
        return 0

    cdef int _late_done(self, Scheduler s, _Op o) except -1:
        # The final completion of a recv whose fiber gave up on it (see
        # _wait): its bytes go after whatever was put back before, for the
        # next receive; an error is owed to the next call, as for
        # MSG_WAITALL.  Then the receivers waiting in _settle go on.
        cdef int res = o.op.res
        cdef WaitQueue q = self._late_waiters
        o.keep = None
        if self._late is o:
            self._late = None
        if not self._closed:
            if res > 0:
                if o.raw != NULL:
                    data = _op_bytes(o, res)
                else:
                    data = (<char *>o.op.buf)[:res]
                rest = self._pushback
                self._pushback = data if rest is None else rest + data
            elif res < 0 and res != -ECANCELED and not self._pending_err:
                self._pending_err = -res
        if q is not None:
            while q._count:
                s._wake(q.popleft(), None)
        return 0

    cdef Py_ssize_t _recv_waitall(self, Scheduler s, Fiber me,
                                  object buffer, Py_ssize_t n,
                                  int flags) except -1:
        # MSG_WAITALL, honoured here rather than by the kernel: epoll's
        # recv never waits (MSG_DONTWAIT), and a multishot stream hands out
        # what has arrived.  So: receive until n bytes, end of stream or an
        # error, under one deadline for the whole call (as sendall).  An
        # interruption (timeout, kill) puts what was received back for the
        # next recv, so nothing is lost.  An error after some data returns
        # the data, as the kernel does.
        cdef Timer t
        cdef Py_ssize_t got = 0, k
        if flags & MSG_PEEK:
            raise ValueError("recv(): MSG_WAITALL with MSG_PEEK is not "
                             "supported")
        flags &= ~MSG_WAITALL
        view = memoryview(buffer)
        t = self._arm(s, me)
        try:
            while got < n:
                k = self._recv_once(s, me, view[got:n], 0, flags, False)
                if k == 0:
                    break
                got += k
        except BaseException as e:
            if not got:
                raise
            if isinstance(e, OSError) and not isinstance(e, TimeoutError):
                # A broken connection: the data now, the error at the next
                # call, as the kernel does it.
                self._pending_err = e.errno or EBADF
                return got
            # Interrupted: keep the data for the next recv.
            rest = self._pushback
            self._pushback = bytes(view[:got]) + (rest or b"")
            raise
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return got

    cdef Py_ssize_t _recv_once(self, Scheduler s, Fiber me, object buffer,
                               Py_ssize_t nbytes, int flags,
                               bint timed) except -1:
        # One receive into buffer: pushed-back bytes, the multishot stream
        # or a single-shot (or, for a bulk stream, direct) recv.
        cdef _Op o
        cdef int res
        cdef Py_ssize_t n
        cdef _Stream st = self._ms
        self._settle(s, me, timed)
        o = _new_op(FIB__OP_RECV, self._fd)
        o.op.msg_flags = flags
        try:
            _op_view(o, buffer, True)
        except BufferError:
            # As the stdlib: a read-only buffer is the wrong type.
            raise TypeError(f"recv_into() argument 'buffer' must be "
                            f"read-write bytes-like object, not "
                            f"{type(buffer).__name__}") from None
        if nbytes:
            if nbytes > o.view.len:
                raise ValueError("buffer too small for requested bytes")
            o.op.len = <unsigned int>nbytes
        if o.op.len == 0:
            return 0            # as the stdlib: no system call at all
        if self._pushback is not None:
            data = self._pushback
            n = min(len(data), o.op.len)
            memoryview(buffer)[:n] = data[:n]
            self._pushback = data[n:] or None
            return n
        if st is not None and not st.accepting:
            data = st._take(s, me, self, o.op.len, flags, timed)
            if data is not None:
                n = len(data)
                memcpy(o.op.buf, <char *>data, n)
                return n
        res = self._recv_wait(s, me, o, timed)
        res = _polled_call(self, s, me, o, res, POLLIN, timed)
        if res < 0:
            raise _oserror(-res)
        return res

    cdef int _connect(self, object sock, object address) except? -1:
        # Returns 0 or an errno, as connect_ex does.
        cdef Scheduler s = _sched()
        cdef int err, rc
        self._prepare(s)
        address = self._resolve(s, sock, address)
        if not self._nonblocking:
            _set_nonblocking(self._fd, True)
        try:
            err = _c_connect_ex(sock, address)
        finally:
            if not self._nonblocking:
                _set_nonblocking(self._fd, False)
        if err == EINPROGRESS or err == EALREADY or \
                (err == EAGAIN and sock.family == _socket_mod.AF_UNIX):
            if self._timeout_ns == 0:
                return err
            rc = self._wait_ready(s, s._current, POLLOUT, True)
            if rc < 0:
                return -rc
            err = _c_getsockopt(sock, _socket_mod.SOL_SOCKET,
                                _socket_mod.SO_ERROR)
            if err == 0:
                # The kernel marks the socket connected only when a
                # connect() call sees the handshake done (a poll does
                # not): without this one, the next connect() would return
                # 0 again where a blocking socket's raises EISCONN.
                _c_connect_ex(sock, address)
        return err

    cdef object _resolve(self, Scheduler s, object sock, object address):
        # A host name is resolved on the blocking-call pool, so that
        # getaddrinfo never stalls the other fibers.
        family = sock.family
        if family not in (_socket_mod.AF_INET, _socket_mod.AF_INET6) or \
                not isinstance(address, tuple) or len(address) < 2 or \
                not isinstance(address[0], str) or not address[0]:
            return address
        try:
            _inet_pton(family, address[0])
            return address              # already numeric
        except OSError:
            pass
        infos = _blocking_call(s, s._current, _getaddrinfo,
                               (address[0], address[1], family,
                                sock.type), None)
        if not infos:
            raise OSError(f"getaddrinfo returned nothing for {address[0]!r}")
        return infos[0][4]

    cdef int _nonblock_call(self) except -1:
        # Before a system call with no MSG_DONTWAIT (sendfile): make the fd
        # non-blocking for the call; the caller restores the flag with
        # _prepare's rule right after (no other fiber runs in between, and
        # the io_uring records already submitted keep the mode they were
        # submitted with).
        if not self._nonblocking:
            _set_nonblocking(self._fd, True)
            self._nonblocking = True
        return 0

    cdef int _close(self) except -1:
        # Before the C object closes (or detaches) the fd.
        if self._closed:
            return 0
        self._closed = True
        self._end_stream()
        return 0

    cdef int _end_stream(self) except -1:
        # Before the fd number is freed: cancel everything of ours in the
        # pump (waiters see EBADF), drop its pump state, and end the
        # multishot stream (fds it accepted and nobody took are closed).
        cdef _Stream st = self._ms
        if self._reg is not None:
            self._reg._forget_fd(self._fd, self._busy())
        if st is not None:
            st._end(self._reg)
        return 0

    cdef int _recv_wait(self, Scheduler s, Fiber me, _Op o,
                        bint timed) except? -1:
        # A receive the multishot stream (if any) did not serve: for good
        # when the kernel has no multishot recv, then a plain one; for now
        # when the stream is in bulk mode, then a direct one: straight into
        # the caller's buffer, trying the system call first (the data is
        # usually there already), and the stream judges from its size
        # whether the bulk is over.
        cdef _Stream st = self._ms
        cdef int res
        if st is not None and st.unsupported:
            self._ms = st = None
        if st is not None and st.accepting:
            st = None           # a listener's stream holds connections
        if st is None:
            return self._wait(s, me, o, False, timed)
        res = fib__op_try(&o.op, 0)
        if res == -EAGAIN:
            res = self._wait(s, me, o, False, timed)
        st._direct_done(res)
        return res

    cdef int _plain_reads(self, Scheduler s, Fiber me) except -1:
        # Before a call that reads the fd itself (recvmsg): a multishot
        # stream not armed and holding nothing is dropped for good, so
        # that nothing reads ahead of the call; returns 1 if data read
        # ahead (pushed back, or in an armed stream) must be served first.
        cdef _Stream st = self._ms
        self._settle(s, me, True)
        if st is not None and not st.accepting:
            if st.op is None and not st.items:
                self._ms = st = None
        return self._pushback is not None or \
            (st is not None and not st.accepting)


# The core of a Socket never initialised (made with Socket.__new__).
cdef _Sock _closed_core = _Sock.__new__(_Sock)



class Socket(_StdSocket):
    """A cooperative socket: a :class:`socket.socket` whose calls that
    would block suspend only the calling fiber.

    Outside any fiber they drive the scheduler until done.  Errors are the
    stdlib's: :class:`TimeoutError`, :class:`ConnectionResetError`,
    :class:`BrokenPipeError`, :class:`OSError` with the right errno.  The
    stdlib's own methods (bind, listen, setsockopt, fileno, detach, ...)
    are inherited and behave as theirs.

    ``fileno=`` adopts an existing fd, which the Socket then owns.
    """

    __slots__ = ("_c",)

    def __new__(cls, *args, **kwargs):
        self = _CSocket.__new__(cls)
        self._c = _closed_core
        # What socket.socket.__init__ sets, so that close() works on a
        # Socket never initialised.
        self._io_refs = 0
        self._closed = False
        return self

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if self._c is not _closed_core:
            raise RuntimeError("a Socket cannot be initialised twice")
        # A new socket is blocking; an adopted fd's flag is asked.
        _init_socket(self, family, type, proto, fileno,
                     0 if fileno is None else -1)

    # ---- receiving ------------------------------------------------------

    def recv(self, Py_ssize_t bufsize, int flags=0):
        """Receive up to ``bufsize`` bytes; ``b''`` at end of stream.  With
        ``MSG_WAITALL``, exactly ``bufsize`` bytes unless the stream ends
        (or fails) first, as a blocking :class:`socket.socket` does."""
        cdef _Sock c = self._c
        cdef Scheduler s
        cdef Fiber me
        cdef _Stream st = c._ms
        cdef _Op o
        cdef int res
        cdef Py_ssize_t n
        if c._closed:
            return _c_recv(self, bufsize, flags)
        s = _sched()
        me = s._current
        if me is None:
            return s._drive("recv", self.recv, (bufsize, flags))
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""          # as the stdlib: no system call at all
        c._prepare(s)
        c._settle(s, me, True)
        c._raise_pending()
        if flags & MSG_WAITALL and not _must_not_wait(c, flags):
            buf = bytearray(bufsize)
            n = c._recv_waitall(s, me, buf, bufsize, flags)
            del buf[n:]
            return bytes(buf)
        if c._pushback is not None:
            data = c._pushback
            c._pushback = data[bufsize:] or None
            return data[:bufsize]
        if st is not None and not st.accepting:
            data = st._take(s, me, c, bufsize, flags, True)
            if data is not None:
                return data
        o = _new_op(FIB__OP_RECV, c._fd)
        o.op.msg_flags = flags
        _op_alloc(o, bufsize)
        res = c._recv_wait(s, me, o, True)
        res = _polled_call(c, s, me, o, res, POLLIN, True)
        if res < 0:
            raise _oserror(-res)
        return _op_bytes(o, res)

    def recv_into(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        """Receive into a writable buffer; returns the number of bytes.
        ``MSG_WAITALL`` fills ``nbytes`` (or the whole buffer) unless the
        stream ends first, as for :meth:`recv`."""
        cdef _Sock c = self._c
        cdef Scheduler s
        cdef Fiber me
        cdef Py_ssize_t n
        if c._closed:
            return _c_recv_into(self, buffer, nbytes, flags)
        s = _sched()
        me = s._current
        if me is None:
            return s._drive("recv_into", self.recv_into,
                            (buffer, nbytes, flags))
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        c._prepare(s)
        c._settle(s, me, True)
        c._raise_pending()
        if flags & MSG_WAITALL and not _must_not_wait(c, flags):
            view = memoryview(buffer)
            if view.readonly:
                raise TypeError("recv_into() needs a writable buffer")
            view = view.cast("B")
            n = nbytes if nbytes else len(view)
            if n > len(view):
                raise ValueError("buffer too small for requested bytes")
            if n == 0:
                return 0
            return c._recv_waitall(s, me, view, n, flags)
        return c._recv_once(s, me, buffer, nbytes, flags, True)

    def recvfrom(self, Py_ssize_t bufsize, int flags=0):
        """Receive a datagram (or stream data): ``(bytes, address)``."""
        cdef _Sock c = self._c
        if c._closed:
            return _c_recvfrom(self, bufsize, flags)
        if _sched()._current is None:
            return _sched()._drive("recvfrom", self.recvfrom,
                                   (bufsize, flags))
        if c._ms is not None and not c._ms.accepting:
            return self.recv(bufsize, flags), None
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            return _receive_now(c, _c_recvfrom, (self, bufsize, flags))
        return c._poll_loop("recvfrom", _c_recvfrom,
                            (self, bufsize, flags | MSG_DONTWAIT), POLLIN)

    def recvfrom_into(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        """Like recvfrom(), into a writable buffer: ``(nbytes, address)``."""
        cdef _Sock c = self._c
        if c._closed:
            return _c_recvfrom_into(self, buffer, nbytes, flags)
        if _sched()._current is None:
            return _sched()._drive("recvfrom_into", self.recvfrom_into,
                                   (buffer, nbytes, flags))
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            return _receive_now(c, _c_recvfrom_into,
                                (self, buffer, nbytes, flags))
        return c._poll_loop("recvfrom_into", _c_recvfrom_into,
                            (self, buffer, nbytes, flags | MSG_DONTWAIT),
                            POLLIN)

    def recvmsg(self, Py_ssize_t bufsize, Py_ssize_t ancbufsize=0,
                int flags=0):
        """As :meth:`socket.socket.recvmsg`: ``(data, ancdata, msg_flags,
        address)``, ancillary data (SCM_RIGHTS fds, ...) included.  On a
        stream socket whose bytes were already read ahead (a server's
        connection on io_uring, read with recv before), those come first,
        with no ancillary data."""
        cdef _Sock c = self._c
        cdef Scheduler s
        if c._closed:
            return _c_recvmsg(self, bufsize, ancbufsize, flags)
        s = _sched()
        if s._current is None:
            return s._drive("recvmsg", self.recvmsg,
                            (bufsize, ancbufsize, flags))
        c._prepare(s)
        if c._plain_reads(s, s._current):
            return self.recv(bufsize, flags), [], 0, _peer_name(self)
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            return _receive_now(c, _c_recvmsg,
                                (self, bufsize, ancbufsize, flags))
        return c._poll_loop("recvmsg", _c_recvmsg,
                            (self, bufsize, ancbufsize,
                             flags | MSG_DONTWAIT), POLLIN)

    def recvmsg_into(self, buffers, Py_ssize_t ancbufsize=0, int flags=0):
        """As :meth:`socket.socket.recvmsg_into`: ``(nbytes, ancdata,
        msg_flags, address)``; bytes read ahead come first, as for
        :meth:`recvmsg`."""
        cdef _Sock c = self._c
        cdef Scheduler s
        if c._closed:
            return _c_recvmsg_into(self, buffers, ancbufsize, flags)
        s = _sched()
        if s._current is None:
            return s._drive("recvmsg_into", self.recvmsg_into,
                            (buffers, ancbufsize, flags))
        buffers = list(buffers)
        c._prepare(s)
        if c._plain_reads(s, s._current):
            for b in buffers:
                if len(memoryview(b)):
                    return (self.recv_into(b, 0, flags), [], 0,
                            _peer_name(self))
            return 0, [], 0, _peer_name(self)
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            return _receive_now(c, _c_recvmsg_into,
                                (self, buffers, ancbufsize, flags))
        return c._poll_loop("recvmsg_into", _c_recvmsg_into,
                            (self, buffers, ancbufsize,
                             flags | MSG_DONTWAIT), POLLIN)

    # ---- sending --------------------------------------------------------

    def send(self, data, int flags=0):
        """Send some of ``data``; returns how many bytes went."""
        cdef _Sock c = self._c
        cdef Scheduler s
        cdef Fiber me
        cdef _Op o
        cdef int res
        if c._closed:
            return _c_send(self, data, flags)
        s = _sched()
        me = s._current
        if me is None:
            return s._drive("send", self.send, (data, flags))
        o = _new_op(FIB__OP_SEND, c._fd)
        o.op.msg_flags = flags | MSG_NOSIGNAL
        _op_view(o, data, False)
        c._prepare(s)
        res = c._wait(s, me, o, True, True)
        res = _polled_call(c, s, me, o, res, POLLOUT, True)
        if res < 0:
            raise _oserror(-res)
        return res

    def sendall(self, data, int flags=0):
        """Send all of ``data``.  A timeout applies to the whole call."""
        cdef _Sock c = self._c
        cdef Scheduler s
        cdef Fiber me
        cdef _Op o
        cdef int res
        cdef Py_ssize_t off = 0
        cdef Timer t
        cdef char *base
        if c._closed:
            return _c_sendall(self, data, flags)
        s = _sched()
        me = s._current
        if me is None:
            return s._drive("sendall", self.sendall, (data, flags))
        o = _new_op(FIB__OP_SEND, c._fd)
        o.op.msg_flags = flags | MSG_NOSIGNAL
        _op_view(o, data, False)
        c._prepare(s)
        base = <char *>o.view.buf
        t = c._arm(s, me)
        try:
            while off < o.view.len:
                o.op.buf = base + off
                o.op.len = <unsigned int>min(o.view.len - off, MAX_IO)
                res = c._wait(s, me, o, True, False)
                res = _polled_call(c, s, me, o, res, POLLOUT, False)
                if res < 0:
                    raise _oserror(-res)
                off += res
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return None

    def sendto(self, data, *args):
        """Send a datagram: ``sendto(data, address)`` or
        ``sendto(data, flags, address)``."""
        cdef _Sock c = self._c
        cdef int flags = 0
        if c._closed or not 1 <= len(args) <= 2:
            # The stdlib's checks and errors (EBADF, the argument count).
            return _c_sendto(self, data, *args)
        if len(args) == 1:
            address = args[0]
        else:
            flags, address = args
        if _sched()._current is None:
            return _sched()._drive("sendto", self.sendto,
                                   (data, flags, address))
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            c._prepare(_sched())        # one call, as the stdlib's
            return _c_sendto(self, data, flags | MSG_NOSIGNAL, address)
        return c._poll_loop("sendto", _c_sendto,
                            (self, data, flags | MSG_DONTWAIT | MSG_NOSIGNAL,
                             address), POLLOUT)

    def sendmsg(self, buffers, ancdata=(), int flags=0, address=None):
        """As :meth:`socket.socket.sendmsg`: send the buffers (and
        ancillary data: SCM_RIGHTS fds, ...) as one message; returns the
        number of bytes sent."""
        cdef _Sock c = self._c
        if c._closed:
            return _c_sendmsg(self, buffers, ancdata, flags, address)
        if _sched()._current is None:
            return _sched()._drive("sendmsg", self.sendmsg,
                                   (buffers, ancdata, flags, address))
        if flags & MSG_DONTWAIT and c._timeout_ns < 0:
            c._prepare(_sched())        # one call, as the stdlib's
            return _c_sendmsg(self, buffers, ancdata, flags | MSG_NOSIGNAL,
                              address)
        return c._poll_loop("sendmsg", _c_sendmsg,
                            (self, buffers, ancdata,
                             flags | MSG_DONTWAIT | MSG_NOSIGNAL, address),
                            POLLOUT)

    def sendfile(self, file, offset=0, count=None):
        """As :meth:`socket.socket.sendfile`: send a file (opened in binary
        mode) until EOF or ``count`` bytes, with ``os.sendfile`` for a
        regular file (else read and send); returns the bytes sent.  Waits
        suspend only this fiber; as in the stdlib, the socket's timeout
        bounds each wait for room, not the whole call."""
        cdef _Sock c = self._c
        if not c._closed and _sched()._current is None:
            return _sched()._drive("sendfile", self.sendfile,
                                   (file, offset, count))
        try:
            return self._sendfile_zerocopy(file, offset, count)
        except _GiveupOnSendfile:
            return self._sendfile_use_send(file, offset, count)

    def _sendfile_zerocopy(self, file, offset, count):
        # The stdlib's _sendfile_use_sendfile, with our waits: os.sendfile
        # on the fd made non-blocking for the call, and POLLOUT through
        # the pump when the socket's buffer is full -- each wait under the
        # socket's timeout, as the stdlib's select(timeout) is (a sendall
        # has one deadline; a sendfile that keeps moving never times out).
        cdef _Sock c = self._c
        cdef Scheduler s
        cdef Fiber me
        cdef int rc
        if _os_sendfile is None:
            raise _GiveupOnSendfile("os.sendfile() not available")
        self._check_sendfile_params(file, offset, count)
        if c._closed:
            raise _closed_error()
        try:
            fileno = file.fileno()
        except (AttributeError, _io_mod.UnsupportedOperation) as err:
            raise _GiveupOnSendfile(err)
        try:
            fsize = _os_fstat(fileno).st_size
        except OSError as err:
            raise _GiveupOnSendfile(err)
        if not fsize:
            return 0
        if c._timeout_ns == 0:
            raise ValueError("non-blocking sockets are not supported")
        blocksize = min(count or fsize, 2 ** 30)
        s = _sched()
        me = s._current
        c._prepare(s)
        total = 0
        try:
            while True:
                if count:
                    blocksize = count - total
                    if blocksize <= 0:
                        break
                c._nonblock_call()
                try:
                    sent = _os_sendfile(c._fd, fileno, offset, blocksize)
                except BlockingIOError:
                    sent = None
                except OSError as err:
                    if total == 0:
                        raise _GiveupOnSendfile(err)
                    raise err from None
                finally:
                    c._prepare(s)       # the backend's flag again
                if sent is None:
                    rc = c._wait_ready(s, me, POLLOUT, True)
                    if rc < 0:
                        raise _oserror(-rc)
                    continue
                if sent == 0:
                    break
                offset += sent
                total += sent
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    # ---- connections ----------------------------------------------------

    def accept(self):
        """Wait for a connection: ``(Socket, address)``.  The new socket's
        timeout is socket.getdefaulttimeout(), as the stdlib's."""
        cdef _Sock c = self._c
        cdef _Sock cc
        cdef Scheduler s
        cdef Fiber me
        cdef _Op o
        cdef int res
        if c._closed:
            _c_accept(self)             # raises EBADF
            raise _closed_error()
        s = _sched()
        me = s._current
        if me is None:
            return s._drive("accept", self.accept, ())
        c._prepare(s)
        fd = None
        if s._io.multishot and c._timeout_ns != 0:
            if c._ms is None:
                c._ms = _Stream.__new__(_Stream)
                c._ms.accepting = True
            fd = c._ms._accept(s, me, c)
            if fd is None:
                c._ms = None
        if fd is not None:
            res = fd
        else:
            o = _new_op(FIB__OP_ACCEPT, c._fd)
            res = c._wait(s, me, o, False, True)
            if res < 0:
                raise _oserror(-res)
        try:
            # The epoll backend (and the direct try) accept non-blocking
            # fds; io_uring's accept makes blocking ones, as io_uring wants.
            conn = _new_socket(Socket, _CSocket.family.__get__(self),
                               _CSocket.type.__get__(self),
                               _CSocket.proto.__get__(self), res,
                               s._io.backend == FIB__BACKEND_EPOLL or
                               c._timeout_ns == 0)
        except BaseException:
            close(res)
            raise
        cc = conn._c
        cc._reg = s
        if s._io.multishot and cc._timeout_ns != 0 and \
                _CSocket.type.__get__(self) == _socket_mod.SOCK_STREAM and \
                _CSocket.family.__get__(self) != _socket_mod.AF_UNIX:
            # A server's TCP connection: read it with multishot recv.  Not
            # a Unix one: a read ahead of a recvmsg would take the bytes
            # that carry ancillary data (SCM_RIGHTS fds) without it, and
            # the kernel drops the fds.
            cc._ms = _Stream.__new__(_Stream)
        try:
            addr = conn.getpeername()
        except OSError:
            addr = None     # reset before we could ask
        return conn, addr

    def connect(self, address):
        """Connect to ``address``, suspending this fiber until done.  A
        host name is resolved without blocking the other fibers."""
        cdef _Sock c = self._c
        cdef int err
        if c._closed:
            return _c_connect(self, address)
        if _sched()._current is None:
            return _sched()._drive("connect", self.connect, (address,))
        err = c._connect(self, address)
        if err:
            raise _oserror(err)

    def connect_ex(self, address):
        """Like connect(), but returns an errno (0 on success) instead of
        raising for connection errors."""
        cdef _Sock c = self._c
        if c._closed:
            return _c_connect_ex(self, address)
        if _sched()._current is None:
            return _sched()._drive("connect_ex", self.connect_ex, (address,))
        return c._connect(self, address)

    # ---- timeouts -------------------------------------------------------

    def settimeout(self, value):
        """None blocks (suspending the fiber) without limit; 0 makes calls
        raise BlockingIOError instead of waiting; a positive number makes
        waiting calls raise TimeoutError('timed out') after that long.
        Values are checked as socket.settimeout() checks them."""
        cdef _Sock c = self._c
        if value is not None:
            try:
                _timeout_check.settimeout(value)
            except OSError:
                pass                # EBADF: the value itself was fine
        if c._closed:
            raise _closed_error()
        c._timeout_ns = _timeout_ns_of(value)
        # The fd's flag as the stdlib leaves it (non-blocking unless the
        # timeout is None), checked at once as the stdlib's is (EBADF on a
        # closed fd); the next operation sets the backend's (_prepare).
        if c._nonblocking != (value is not None):
            _set_nonblocking(c._fd, value is not None)
            c._nonblocking = value is not None

    def gettimeout(self):
        """The timeout in seconds, or None (see :meth:`settimeout`)."""
        cdef _Sock c = self._c
        if c._timeout_ns < 0:
            return None
        return c._timeout_ns / 1e9

    def setblocking(self, flag):
        """``setblocking(True)`` is settimeout(None), False settimeout(0)."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self):
        """False for a non-blocking socket (timeout 0), else True."""
        cdef _Sock c = self._c
        return c._timeout_ns != 0

    @property
    def timeout(self):
        """The timeout in seconds, or None, as :meth:`gettimeout`."""
        return self.gettimeout()

    # ---- lifetime -------------------------------------------------------

    @property
    def closed(self):
        """True once the fd is closed (or detached)."""
        cdef _Sock c = self._c
        return c._closed

    def _real_close(self):
        # socket.socket.close() calls this when no makefile() file is open
        # (or when the last one closes): cancel our operations on the fd
        # (waiting fibers get OSError(EBADF)), then close it.
        cdef _Sock c = self._c
        if not c._closed:
            _reset_if_unread(c, self)
        c._close()
        _c_close(self)

    def detach(self):
        """Give up the fd without closing it; returns it (-1 if closed)."""
        cdef _Sock c = self._c
        c._close()
        self._closed = True
        return _c_detach(self)

    def dup(self):
        """A new Socket on a duplicate of the fd, with the same timeout."""
        cdef _Sock c = self._c
        if c._closed:
            raise _closed_error()
        fd = _os_dup(c._fd)
        try:
            sock = _new_socket(self.__class__, _CSocket.family.__get__(self),
                               _CSocket.type.__get__(self),
                               _CSocket.proto.__get__(self), fd,
                               c._nonblocking)
        except BaseException:
            close(fd)
            raise
        (<_Sock>sock._c)._timeout_ns = c._timeout_ns
        return sock

    def makefile(self, mode="r", buffering=None, *, encoding=None,
                 errors=None, newline=None):
        """A file object over the socket, as socket.makefile() returns;
        its reads and writes suspend only this fiber."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        # Arguments first, before a SocketIO takes a reference.
        if buffering is None:
            buffering = -1
        else:
            buffering = _int_arg(buffering, "makefile", "buffering")
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = _SocketIO(self, ("r" if reading else "") +
                        ("w" if writing else ""))
        self._io_refs += 1
        if buffering < 0:
            buffering = _io_mod.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buf = _io_mod.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buf = _io_mod.BufferedReader(raw, buffering)
        else:
            buf = _io_mod.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buf
        text = _io_mod.TextIOWrapper(buf, _io_mod.text_encoding(encoding),
                                     errors, newline)
        text.mode = mode
        return text

    def __repr__(self):
        if self._c is _closed_core:
            return "<fibers.net.Socket [closed]>"     # never initialised
        return _std_repr(self)

    # ---- for fibers.ssl and tests ---------------------------------------

    def _unread(self, data):
        # For fibers.ssl's unwrap(): bytes read past the end of the TLS
        # stream go back, ahead of anything received later.
        cdef _Sock c = self._c
        rest = c._pushback
        data = bytes(data)
        if data:
            c._pushback = data + rest if rest is not None else data

    def _read_mode(self):
        # For tests: how recv() reads this socket now -- 'multishot',
        # 'direct' (a bulk stream on io_uring), or 'single' (plain calls).
        cdef _Sock c = self._c
        if c._ms is None or c._ms.accepting:
            return "single"
        return "direct" if c._ms.direct else "multishot"

# ---- the stdlib's call semantics ------------------------------------------
#
# CPython's sock_call (Modules/socketmodule.c) decides when a socket call
# waits, and these helpers hold Socket to it:
#   - a socket with a timeout polls for readiness first (the timeout is
#     the poll's), then makes the call; EAGAIN after readiness (a false
#     positive) polls again.  MSG_DONTWAIT changes nothing but the call;
#   - a blocking socket just makes the call, so MSG_DONTWAIT makes it
#     raise EAGAIN at once; a non-blocking one never waits.
# Socket makes the call first and waits only on EAGAIN (a recv with data
# waiting costs no poll), which gives the same results except where the
# call fails on a socket that is not ready: there the stdlib would still be
# in its poll (_stdlib_polls).  And recv(0) returns b'' without a system
# call.  Closing with bytes received but unread resets the connection, as
# the kernel does when they were never read from it (_reset_if_unread).

cdef extern from "<sys/socket.h>":
    enum:
        SO_LINGER
        SOL_SOCKET
    struct linger:
        int l_onoff
        int l_linger
    int setsockopt(int fd, int level, int name, const void *val,
                   unsigned len)

cdef extern from "<poll.h>":
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long n, int timeout)


cdef inline bint _must_not_wait(_Sock sock, int flags):
    # The call may not wait: a non-blocking socket, or MSG_DONTWAIT on a
    # blocking one.  (With a timeout the stdlib waits for readiness first,
    # whatever the flags.)
    return sock._timeout_ns == 0 or \
        (sock._timeout_ns < 0 and (flags & MSG_DONTWAIT) != 0)


cdef inline int _call_flags(_Sock sock, int flags):
    # The flags a call that may wait hands to the pump: with a timeout,
    # MSG_DONTWAIT goes (io_uring would give EAGAIN at once, where the
    # stdlib first waits for readiness).
    if sock._timeout_ns > 0:
        return flags & ~MSG_DONTWAIT
    return flags


cdef object _peer_name(object owner):
    # The address recvmsg gives for bytes read ahead of it: what the
    # kernel's would have -- on a Unix stream socket the peer's name when
    # the peer is bound, else none.
    if _CSocket.family.__get__(owner) != _socket_mod.AF_UNIX:
        return None
    try:
        return _CSocket.getpeername(owner) or None
    except OSError:
        return None


cdef object _receive_now(_Sock sock, object fn, tuple args):
    # recvfrom/recvfrom_into with MSG_DONTWAIT on a blocking socket: the
    # stdlib makes the call once, through our stdlib object (non-blocking:
    # EAGAIN is its own BlockingIOError).  A recv given up on and still
    # being cancelled (_late) may yet bring bytes that come first: until
    # it is done there is nothing to take without waiting.
    sock._prepare(_sched())
    if sock._late is not None:
        raise BlockingIOError(EAGAIN, "Resource temporarily unavailable")
    return fn(*args)


cdef bint _stdlib_polls(_Sock sock, int res, int events):
    # A call failed with -res at once: would the stdlib not have made it
    # yet, still polling for readiness under the socket's timeout?  Only a
    # socket with a timeout polls first, and only a socket that is not
    # ready keeps it polling -- a listener, whose recv (ENOTCONN) and send
    # (EPIPE) fail without waiting.  Asked only on those two errors, which
    # come from the socket's state: an error the call takes from the
    # socket (a reset, an ICMP refusal: sk_err) is gone after it, and a
    # poll then would not see what the stdlib's poll saw.  So the calls
    # that succeed pay no poll.
    cdef pollfd p
    if (res != -ENOTCONN and res != -EPIPE) or sock._timeout_ns <= 0 or \
            sock._closed:
        return False
    p.fd = sock._fd
    p.events = <short>events
    p.revents = 0
    return poll(&p, 1, 0) == 0


cdef int _polled_call(_Sock sock, Scheduler s, Fiber me, _Op o, int res,
                      int events, bint timed) except? -1:
    # A call that failed (res < 0) where the stdlib would still be polling
    # (_stdlib_polls): poll as it does, then call again.  Returns the
    # call's result or -errno; the timeout raises TimeoutError.
    cdef int rc
    while _stdlib_polls(sock, res, events):
        rc = sock._wait_ready(s, me, events, timed)
        if rc < 0:
            return rc
        res = sock._wait(s, me, o, True, timed)
    return res


cdef int _reset_if_unread(_Sock sock, object owner) except -1:
    # Before the fd closes: TCP closed with unread received data resets
    # the connection (RST; the peer's recv raises ConnectionResetError),
    # where a clean close sends FIN.  Bytes we received and nobody read --
    # in the multishot stream, or put back (_pushback) -- are unread for
    # the stdlib, which would have left them in the kernel; but the kernel
    # no longer has them, so it would send FIN.  SO_LINGER {1, 0} makes
    # the close the abortive one the kernel does for unread data (unsent
    # data is dropped in both).
    cdef _Stream st = sock._ms
    cdef linger lg
    if sock._pushback is None and (st is None or st.accepting or
                                   st.buffered == 0):
        return 0
    if owner.type != _socket_mod.SOCK_STREAM or owner.family \
            not in (_socket_mod.AF_INET, _socket_mod.AF_INET6):
        return 0
    lg.l_onoff = 1
    lg.l_linger = 0
    setsockopt(sock._fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
    return 0


Socket.__module__ = "fibers.net"
