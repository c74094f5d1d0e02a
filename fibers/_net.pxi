# Cooperative sockets (fibers.net.Socket).  Included by _core.pyx.
#
# A recv, top down: Socket.recv hands out bytes put back first
# (_pushback); on a server's connection (io_uring) it takes from the
# socket's multishot stream (_ms, _stream.pxi); otherwise, or while that
# stream is in bulk mode, it submits a single-shot record to the pump and
# parks (_recv_wait, _wait, then _io_wait in _pump.pxi).  Either way the
# pump's tick hands the completion to the record's owner, which wakes the
# fiber (the pump's design note, _pump.pxi, has the whole path).
#
# A Socket wraps a stdlib socket.socket, which does what it does well:
# address parsing, options, names, lifetime.  The calls that wait go through
# the pump instead: recv, recv_into, send, sendall and accept are pump
# operations on the raw fd; connect, recvfrom and sendto are "try with
# MSG_DONTWAIT, else wait for readiness" through the stdlib object.
#
# The fd's O_NONBLOCK flag follows the backend: io_uring wants blocking fds
# (on an O_NONBLOCK socket it hands back -EAGAIN instead of waiting), epoll
# wants non-blocking ones.  The flag is fixed lazily, the first time a
# scheduler uses the socket, and the direct calls use MSG_DONTWAIT so they
# never block whatever the flag says.
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
cdef object _SocketIO = _socket_mod.SocketIO
cdef object _getaddrinfo = _socket_mod.getaddrinfo
cdef object _inet_pton = _socket_mod.inet_pton

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


cdef Socket _adopt(object sock, bint nonblocking):
    cdef Socket self = Socket.__new__(Socket)
    self._sock = sock
    self._fd = sock.fileno()
    self._timeout_ns = -1
    self._nonblocking = nonblocking
    self._closed = False
    return self


@cython.final
cdef class Socket:
    """A cooperative socket, mirroring :class:`socket.socket`.

    Calls that would block suspend only the calling fiber.  Outside any
    fiber they drive the scheduler until done.  Errors are the stdlib's:
    :class:`TimeoutError`, :class:`ConnectionResetError`,
    :class:`BrokenPipeError`, :class:`OSError` with the right errno.

    ``fileno=`` adopts an existing fd, which the Socket then owns.
    """

    def __cinit__(self):
        # Until __init__ (or _adopt) gives it a socket, a Socket made with
        # Socket.__new__ is a closed one: no call may use fd 0 by default.
        self._fd = -1
        self._closed = True

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if self._sock is not None:
            raise RuntimeError("a Socket cannot be initialised twice")
        if fileno is None:
            sock = _StdSocket(
                _socket_mod.AF_INET if family == -1 else family,
                _socket_mod.SOCK_STREAM if type == -1 else type,
                0 if proto == -1 else proto)
        else:
            sock = _StdSocket(family, type, proto, fileno)
        # The stdlib object stays in non-blocking mode so that its calls
        # (connect_ex, recvfrom, ...) never wait inside CPython.
        sock.settimeout(0)
        self._sock = sock
        self._fd = sock.fileno()
        self._timeout_ns = -1
        self._nonblocking = True
        self._closed = False

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

    # ---- receiving ------------------------------------------------------

    def recv(self, Py_ssize_t bufsize, int flags=0):
        """Receive up to ``bufsize`` bytes; ``b''`` at end of stream.  With
        ``MSG_WAITALL``, exactly ``bufsize`` bytes unless the stream ends
        (or fails) first, as a blocking :class:`socket.socket` does."""
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef _Stream st = self._ms
        cdef _Op o
        cdef int res
        cdef Py_ssize_t n
        if me is None:
            return s._drive("recv", self.recv, (bufsize, flags))
        self._prepare(s)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""          # as the stdlib: no system call at all
        self._settle(s, me, True)
        self._raise_pending()
        if flags & MSG_WAITALL and not _must_not_wait(self, flags):
            buf = bytearray(bufsize)
            n = self._recv_waitall(s, me, buf, bufsize, flags)
            del buf[n:]
            return bytes(buf)
        if self._pushback is not None:
            data = self._pushback
            self._pushback = data[bufsize:] or None
            return data[:bufsize]
        if st is not None and not st.accepting:
            data = st._take(s, me, self, bufsize, flags, True)
            if data is not None:
                return data
        o = _new_op(FIB__OP_RECV, self._fd)
        o.op.msg_flags = flags
        _op_alloc(o, bufsize)
        res = self._recv_wait(s, me, o, True)
        res = _polled_call(self, s, me, o, res, POLLIN, True)
        if res < 0:
            raise _oserror(-res)
        return _op_bytes(o, res)

    def recv_into(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        """Receive into a writable buffer; returns the number of bytes.
        ``MSG_WAITALL`` fills ``nbytes`` (or the whole buffer) unless the
        stream ends first, as for :meth:`recv`."""
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef Py_ssize_t n
        if me is None:
            return s._drive("recv_into", self.recv_into,
                            (buffer, nbytes, flags))
        self._prepare(s)
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        self._settle(s, me, True)
        self._raise_pending()
        if flags & MSG_WAITALL and not _must_not_wait(self, flags):
            view = memoryview(buffer)
            if view.readonly:
                raise TypeError("recv_into() needs a writable buffer")
            view = view.cast("B")
            n = nbytes if nbytes else len(view)
            if n > len(view):
                raise ValueError("buffer too small for requested bytes")
            if n == 0:
                return 0
            return self._recv_waitall(s, me, view, n, flags)
        return self._recv_once(s, me, buffer, nbytes, flags, True)

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
            self._late_waiters = WaitQueue.__new__(WaitQueue)
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
        _op_view(o, buffer, True)
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

    def recvfrom(self, Py_ssize_t bufsize, int flags=0):
        """Receive a datagram (or stream data): ``(bytes, address)``."""
        if _sched()._current is None:
            return _sched()._drive("recvfrom", self.recvfrom,
                                   (bufsize, flags))
        if self._ms is not None and not self._ms.accepting:
            return self.recv(bufsize, flags), None
        if flags & MSG_DONTWAIT and self._timeout_ns < 0:
            return _receive_now(self, self._sock.recvfrom, (bufsize, flags))
        return self._poll_loop("recvfrom", self._sock.recvfrom,
                               (bufsize, flags | MSG_DONTWAIT), POLLIN)

    def recvfrom_into(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        """Like recvfrom(), into a writable buffer: ``(nbytes, address)``."""
        if _sched()._current is None:
            return _sched()._drive("recvfrom_into", self.recvfrom_into,
                                   (buffer, nbytes, flags))
        if flags & MSG_DONTWAIT and self._timeout_ns < 0:
            return _receive_now(self, self._sock.recvfrom_into,
                                (buffer, nbytes, flags))
        return self._poll_loop("recvfrom_into", self._sock.recvfrom_into,
                               (buffer, nbytes, flags | MSG_DONTWAIT), POLLIN)

    # ---- sending --------------------------------------------------------

    def send(self, data, int flags=0):
        """Send some of ``data``; returns how many bytes went."""
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef _Op o
        cdef int res
        if me is None:
            return s._drive("send", self.send, (data, flags))
        self._prepare(s)
        o = _new_op(FIB__OP_SEND, self._fd)
        o.op.msg_flags = flags | MSG_NOSIGNAL
        _op_view(o, data, False)
        res = self._wait(s, me, o, True, True)
        res = _polled_call(self, s, me, o, res, POLLOUT, True)
        if res < 0:
            raise _oserror(-res)
        return res

    def sendall(self, data, int flags=0):
        """Send all of ``data``.  A timeout applies to the whole call."""
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef _Op o
        cdef int res
        cdef Py_ssize_t off = 0
        cdef Timer t
        cdef char *base
        if me is None:
            return s._drive("sendall", self.sendall, (data, flags))
        self._prepare(s)
        o = _new_op(FIB__OP_SEND, self._fd)
        o.op.msg_flags = flags | MSG_NOSIGNAL
        _op_view(o, data, False)
        base = <char *>o.view.buf
        t = self._arm(s, me)
        try:
            while off < o.view.len:
                o.op.buf = base + off
                o.op.len = <unsigned int>min(o.view.len - off, MAX_IO)
                res = self._wait(s, me, o, True, False)
                res = _polled_call(self, s, me, o, res, POLLOUT, False)
                if res < 0:
                    raise _oserror(-res)
                off += res
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return None

    def sendto(self, data, flags_or_address, address=None):
        """Send a datagram: ``sendto(data, address)`` or
        ``sendto(data, flags, address)``."""
        cdef int flags = 0
        if address is None:
            address = flags_or_address
        else:
            flags = flags_or_address
        if _sched()._current is None:
            return _sched()._drive("sendto", self.sendto,
                                   (data, flags, address))
        return self._poll_loop("sendto", self._sock.sendto,
                               (data, flags | MSG_DONTWAIT | MSG_NOSIGNAL,
                                address), POLLOUT)

    # ---- connections ----------------------------------------------------

    def accept(self):
        """Wait for a connection: ``(Socket, address)``."""
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        cdef _Op o
        cdef int res
        cdef Socket conn
        if me is None:
            return s._drive("accept", self.accept, ())
        self._prepare(s)
        fd = None
        if s._io.multishot and self._timeout_ns != 0:
            if self._ms is None:
                self._ms = _Stream.__new__(_Stream)
                self._ms.accepting = True
            fd = self._ms._accept(s, me, self)
            if fd is None:
                self._ms = None
        if fd is not None:
            res = fd
        else:
            o = _new_op(FIB__OP_ACCEPT, self._fd)
            res = self._wait(s, me, o, False, True)
            if res < 0:
                raise _oserror(-res)
        try:
            sock = _StdSocket(self._sock.family, self._sock.type,
                              self._sock.proto, res)
        except BaseException:
            close(res)
            raise
        # The epoll backend (and the direct try) accept non-blocking fds;
        # io_uring's accept makes blocking ones, as io_uring wants.
        conn = _adopt(sock, s._io.backend == FIB__BACKEND_EPOLL or
                      self._timeout_ns == 0)
        conn._timeout_ns = self._timeout_ns if self._timeout_ns > 0 else -1
        conn._reg = s
        if s._io.multishot and conn._sock.type == _socket_mod.SOCK_STREAM:
            # A server's connection: read it with multishot recv.
            conn._ms = _Stream.__new__(_Stream)
        try:
            addr = sock.getpeername()
        except OSError:
            addr = None     # reset before we could ask
        return conn, addr

    cdef int _connect(self, object address) except? -1:
        # Returns 0 or an errno, as connect_ex does.
        cdef Scheduler s = _sched()
        cdef int err, rc
        self._prepare(s)
        address = self._resolve(s, address)
        if not self._nonblocking:
            _set_nonblocking(self._fd, True)
        try:
            err = self._sock.connect_ex(address)
        finally:
            if not self._nonblocking:
                _set_nonblocking(self._fd, False)
        if err == EINPROGRESS or err == EALREADY or \
                (err == EAGAIN and self._sock.family == _socket_mod.AF_UNIX):
            if self._timeout_ns == 0:
                return err
            rc = self._wait_ready(s, s._current, POLLOUT, True)
            if rc < 0:
                return -rc
            err = self._sock.getsockopt(_socket_mod.SOL_SOCKET,
                                        _socket_mod.SO_ERROR)
        elif err == EISCONN:
            err = 0
        return err

    def _resolve(self, Scheduler s, address):
        # A host name is resolved on the blocking-call pool, so that
        # getaddrinfo never stalls the other fibers.
        family = self._sock.family
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
                                self._sock.type), None)
        if not infos:
            raise OSError(f"getaddrinfo returned nothing for {address[0]!r}")
        return infos[0][4]

    def connect(self, address):
        """Connect to ``address``, suspending this fiber until done.  A
        host name is resolved without blocking the other fibers."""
        cdef int err
        if _sched()._current is None:
            return _sched()._drive("connect", self.connect, (address,))
        err = self._connect(address)
        if err:
            raise _oserror(err)

    def connect_ex(self, address):
        """Like connect(), but returns an errno (0 on success) instead of
        raising for connection errors."""
        if _sched()._current is None:
            return _sched()._drive("connect_ex", self.connect_ex, (address,))
        return self._connect(address)

    # ---- the rest mirrors socket.socket ---------------------------------

    def bind(self, address):
        self._sock.bind(address)

    def listen(self, backlog=None):
        if backlog is None:
            self._sock.listen()
        else:
            self._sock.listen(backlog)

    def shutdown(self, int how):
        if self._closed:
            raise _closed_error()
        self._sock.shutdown(how)

    def setsockopt(self, *args):
        self._sock.setsockopt(*args)

    def getsockopt(self, *args):
        return self._sock.getsockopt(*args)

    def getsockname(self):
        return self._sock.getsockname()

    def getpeername(self):
        return self._sock.getpeername()

    def fileno(self):
        """The fd, or -1 once closed."""
        return -1 if self._closed else self._fd

    @property
    def family(self):
        return self._sock.family

    @property
    def type(self):
        return self._sock.type

    @property
    def proto(self):
        return self._sock.proto

    @property
    def closed(self):
        return self._closed

    def settimeout(self, value):
        """None blocks (suspending the fiber) without limit; 0 makes calls
        raise BlockingIOError instead of waiting; a positive number makes
        waiting calls raise TimeoutError('timed out') after that long.
        Values are checked as socket.settimeout() checks them."""
        cdef double d
        if value is None:
            self._timeout_ns = -1
            return
        try:
            _timeout_check.settimeout(value)
        except OSError:
            pass                # EBADF: the value itself was fine
        # Nanoseconds rounded up, as CPython's socket stores them.
        if isinstance(value, float):
            d = value
            self._timeout_ns = <int64_t>ceil(d * 1e9)
        else:
            self._timeout_ns = PyNumber_Index(value) * 1000000000

    def gettimeout(self):
        if self._timeout_ns < 0:
            return None
        return self._timeout_ns / 1e9

    def setblocking(self, flag):
        self.settimeout(None if flag else 0)

    def getblocking(self):
        return self._timeout_ns != 0

    def detach(self):
        """Give up the fd without closing it; returns it."""
        if self._closed:
            return -1
        self._end_stream()
        self._closed = True
        return self._sock.detach()

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

    cdef int _real_close(self) except -1:
        _reset_if_unread(self)
        self._end_stream()
        self._sock.close()
        return 0

    def _unread(self, data):
        # For fibers.ssl's unwrap(): bytes read past the end of the TLS
        # stream go back, ahead of anything received later.
        rest = self._pushback
        data = bytes(data)
        if data:
            self._pushback = data + rest if rest is not None else data

    def _read_mode(self):
        # For tests: how recv() reads this socket now -- 'multishot',
        # 'direct' (a bulk stream on io_uring), or 'single' (plain calls).
        if self._ms is None or self._ms.accepting:
            return "single"
        return "direct" if self._ms.direct else "multishot"

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

    def close(self):
        """Close the socket.  Fibers blocked on it get OSError(EBADF)."""
        if self._closed:
            return
        if self._io_refs > 0:
            # As the stdlib: the fd stays open, and readable through the
            # files, until the last makefile() file closes (http.client
            # and urllib close the socket under their response's file).
            self._close_pending = True
            return
        self._closed = True
        self._real_close()

    def _decref_socketios(self):
        # socket.SocketIO calls this when a makefile() object closes.
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._close_pending and self._io_refs == 0:
            self._close_pending = False
            self._closed = True
            self._real_close()

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

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._closed or self._sock is None:
            return "<fibers.net.Socket [closed]>"
        return (f"<fibers.net.Socket fd={self._fd} "
                f"family={self._sock.family!r} type={self._sock.type!r}>")


def _adopt_socket(sock):
    """Take over a stdlib socket (used by fibers.net)."""
    cdef Socket self
    sock.settimeout(0)
    self = _adopt(sock, True)
    return self


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


cdef inline bint _must_not_wait(Socket sock, int flags):
    # The call may not wait: a non-blocking socket, or MSG_DONTWAIT on a
    # blocking one.  (With a timeout the stdlib waits for readiness first,
    # whatever the flags.)
    return sock._timeout_ns == 0 or \
        (sock._timeout_ns < 0 and (flags & MSG_DONTWAIT) != 0)


cdef inline int _call_flags(Socket sock, int flags):
    # The flags a call that may wait hands to the pump: with a timeout,
    # MSG_DONTWAIT goes (io_uring would give EAGAIN at once, where the
    # stdlib first waits for readiness).
    if sock._timeout_ns > 0:
        return flags & ~MSG_DONTWAIT
    return flags


cdef object _receive_now(Socket sock, object fn, tuple args):
    # recvfrom/recvfrom_into with MSG_DONTWAIT on a blocking socket: the
    # stdlib makes the call once, through our stdlib object (non-blocking:
    # EAGAIN is its own BlockingIOError).  A recv given up on and still
    # being cancelled (_late) may yet bring bytes that come first: until
    # it is done there is nothing to take without waiting.
    sock._prepare(_sched())
    if sock._late is not None:
        raise BlockingIOError(EAGAIN, "Resource temporarily unavailable")
    return fn(*args)


cdef bint _stdlib_polls(Socket sock, int res, int events):
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


cdef int _polled_call(Socket sock, Scheduler s, Fiber me, _Op o, int res,
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


cdef int _reset_if_unread(Socket sock) except -1:
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
    if sock._sock.type != _socket_mod.SOCK_STREAM or sock._sock.family \
            not in (_socket_mod.AF_INET, _socket_mod.AF_INET6):
        return 0
    lg.l_onoff = 1
    lg.l_linger = 0
    setsockopt(sock._fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
    return 0
