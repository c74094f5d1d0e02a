# The multishot stream: what one io_uring record keeps delivering for a
# socket -- received bytes (a server's connection) or accepted fds (a
# listener) -- queued until a fiber takes it.  Included by _core.pyx.
#
# Its place in a recv: Socket.recv (_net.pxi) asks the socket's stream for
# up to n bytes (_take).  With nothing queued, the stream arms its record
# in the pump (_arm) if it is not armed already, and parks the reader
# (_wait).  Each completion of the record comes back from the pump's
# dispatch table (_pump.pxi) to _stream_complete, which queues the result
# and wakes the reader.  The record belongs to the stream, not to a fiber:
# a reader that gives up loses nothing, since what arrives stays queued.
#
# The stream, not the scheduler or the pump, decides its flow control:
#   - behind: a reader STREAM_HIGH_WATER bytes (ACCEPT_HIGH_WATER fds)
#     behind stops the record (it is cancelled) until it catches up; TCP's
#     own flow control then pushes back on the peer, as with plain recv.
#   - bulk: STREAM_BULK_MARK bytes queued mean a bulk transfer: multishot
#     goes off and recv reads straight into the caller's buffer
#     (Socket._recv_wait) until STREAM_DIRECT_WAITS reads in a row come
#     back smaller than a provided buffer (_direct_done).
#   - no waiting: a call that must not wait (non-blocking, MSG_DONTWAIT)
#     first has the pump deliver what the kernel already received for the
#     armed record (_Pump.deliver), or reads the socket directly when no
#     record is armed -- never EAGAIN while select() says readable.
#   - the end: end of stream, an error (raised once, then the stream is
#     over), the socket's close (_end), or the kernel's refusal of
#     multishot (EINVAL before any data: the socket falls back to plain
#     recv for good, and the scheduler arms no more streams).

# Provided buffers for multishot recv, per scheduler (allocated on first
# use): each completion borrows one and we copy it out at once, so the
# count bounds a burst, not the number of connections.
cdef unsigned STREAM_BUFFERS = 256
cdef unsigned STREAM_BUFFER_SIZE = 16384
# A connection whose reader falls this far behind stops being read (its
# multishot recv is cancelled) until the reader catches up: TCP's own flow
# control then pushes back on the peer, as it does with single-shot recv.
cdef Py_ssize_t STREAM_HIGH_WATER = 262144
# A connection with this much received and not yet taken is a bulk
# transfer: its multishot recv is turned off and recv() reads directly
# (fewer completions, one copy less) until STREAM_DIRECT_WAITS reads in a
# row come back smaller than a provided buffer -- small messages again.
cdef Py_ssize_t STREAM_BULK_MARK = 65536
cdef int STREAM_DIRECT_WAITS = 4
# The same for accepted connections nobody has taken with accept() yet.
cdef Py_ssize_t ACCEPT_HIGH_WATER = 256


@cython.final
cdef class _Stream:
    def __cinit__(self):
        self.items = []

    def __dealloc__(self):
        self._drop()

    cdef int _drop(self) except -1:
        # Nothing more will be taken: close fds nobody accepted.
        cdef object fd
        self.ended = True
        if self.accepting:
            for fd in self.items:
                close(<int>fd)
        self.items = []
        self.buffered = 0
        return 0

    cdef int _end(self, Scheduler reg) except -1:
        # The socket is closing: what is queued goes, and a reader parked
        # here wakes to EBADF.  (The socket's forget_fd has cancelled the
        # record, with its other operations.)
        self._drop()
        self.err = -EBADF
        if self.waiter is not None and reg is not None:
            reg._wake(self.waiter, None)
        return 0

    cdef int _arm(self, Scheduler s, int code, int fd) except -1:
        # Starts (or restarts) the multishot record that feeds this stream.
        cdef _Op o
        cdef int rc
        if s._io.no_streams:
            # close() cancels the streams and waits for the pump to empty:
            # a fiber that reads again from its finally block gets an error
            # rather than a record nobody would ever cancel.
            if not self.err and not self.ended:
                self.err = -ECANCELED
            return 0
        if code == FIB__OP_RECV_MULTI and s._io.provided <= 0:
            if s._io.provided == 0:
                s._io.provided = 1 if fib__pump_provide(
                    s._get_pump(), STREAM_BUFFERS, STREAM_BUFFER_SIZE) \
                    == 0 else -1
            if s._io.provided < 0:
                self.unsupported = True
                return 0
        o = _new_op(code, fd)
        o.keep = self
        o.kind = OP_STREAM
        rc = fib__pump_submit(s._get_pump(), &o.op)
        if rc < 0:
            self.unsupported = True
            return 0
        Py_INCREF(o)
        self.op = o
        return 0

    cdef int _wait(self, Scheduler s, Fiber me, _Sock sock,
                   bint timed) except -1:
        # Park until the stream has news, under the socket's timeout (unless
        # the caller keeps its own deadline).  An interruption loses
        # nothing: what arrives stays queued.
        cdef Timer t = sock._arm(s, me) if timed else None
        self.waiter = me
        me._wq_item = self          # for the fiber view (_inspect.pxi)
        try:
            s._park(me)
        finally:
            self.waiter = None
            me._wq_item = None
            if t is not None:
                s._disarm_timeout(me, t)
        return 0

    # ---- receiving ------------------------------------------------------

    cdef object _take(self, Scheduler s, Fiber me, _Sock sock,
                      Py_ssize_t n, int flags, bint timed):
        # recv() from the stream: up to n bytes of what has arrived,
        # waiting if nothing has.  None: read directly instead -- for good
        # if the kernel has no multishot recv (unsupported), for now if the
        # stream is in bulk mode (direct), or once if the call must not
        # wait and no record of ours can hold bytes the kernel received.
        cdef list items
        cdef bint nowait = _must_not_wait(sock, flags)
        cdef bint delivered = False
        while True:
            if self.unsupported:
                return None
            items = self.items
            if items:
                data = self._pop(n, flags & MSG_PEEK)
                if not (flags & MSG_PEEK) and self.op is None and \
                        not self.ended and not self.direct and \
                        self.buffered < STREAM_HIGH_WATER:
                    self._arm(s, FIB__OP_RECV_MULTI, sock._fd)
                return data
            if self.err:
                err = self.err
                self.err = 0
                self.ended = True
                raise _oserror(-err)
            if self.ended:
                return b""
            if nowait:
                # A non-blocking recv, or MSG_DONTWAIT on a blocking socket:
                # the stdlib returns what the kernel has or raises EAGAIN.
                # What our armed record received may not be queued here
                # yet (a completion not harvested, or with DEFER_TASKRUN a
                # multishot recv the kernel runs only when we enter it):
                # have the pump deliver it first.  With no record armed,
                # the socket's own queue is the whole truth: read it
                # directly (no arming: a reader that never waits is better
                # served by plain calls, and select() keeps seeing the
                # kernel's queue).
                if self.op is not None and not delivered:
                    delivered = True
                    s._io.deliver(s)
                    continue
                if self.op is None:
                    return None
                raise BlockingIOError(EAGAIN, "Resource temporarily "
                                      "unavailable")
            if self.direct:
                if self.op is None:
                    return None
                # Bulk mode, but the multishot record is still being
                # cancelled: its last data must come first.
            elif self.op is None:
                self._arm(s, FIB__OP_RECV_MULTI, sock._fd)
                continue
            self._wait(s, me, sock, timed)

    cdef object _pop(self, Py_ssize_t n, bint peek):
        # Up to n bytes from the front of the queued chunks.  Only what is
        # returned is copied: whole chunks while they fit, then a slice of
        # the next.  (Joining everything queued and slicing the rest off
        # again copied the whole backlog -- up to the high-water mark --
        # per call.)
        cdef list items = self.items
        cdef Py_ssize_t i = 0, total = 0, k, count = len(items)
        cdef bytes chunk = <bytes>items[0]
        if len(chunk) >= n:
            if len(chunk) == n:
                data = chunk
                if not peek:
                    del items[0]
            else:
                data = chunk[:n]
                if not peek:
                    items[0] = chunk[n:]
            if not peek:
                self.buffered -= n
            return data
        while i < count:
            k = len(<bytes>items[i])
            if total + k > n:
                break
            total += k
            i += 1
        parts = items[:i]
        if i < count and total < n:
            chunk = <bytes>items[i]
            parts.append(chunk[:n - total])
            if not peek:
                items[i] = chunk[n - total:]
            total = n
        if not peek:
            del items[:i]
            self.buffered -= total
        return b"".join(parts)

    cdef int _direct_done(self, int res) except -1:
        # A bulk stream's direct read returned res (see Socket._recv_wait).
        # Reads that come back smaller than a provided buffer mean the bulk
        # is over; after a few in a row the stream goes back to multishot.
        if res >= <int>STREAM_BUFFER_SIZE:
            self.waits = 0
        else:
            self.waits += 1
            if self.waits >= STREAM_DIRECT_WAITS:
                self.direct = False
                self.waits = 0
        return 0

    # ---- accepting ------------------------------------------------------

    cdef object _accept(self, Scheduler s, Fiber me, _Sock sock):
        # accept() from the stream: an fd, or None to fall back.
        while True:
            if self.unsupported:
                return None
            if self.items:
                fd = self.items.pop(0)
                self.buffered -= 1
                if self.op is None and not self.ended:
                    self._arm(s, FIB__OP_ACCEPT_MULTI, sock._fd)
                return fd
            if self.err:
                err = self.err
                self.err = 0
                raise _oserror(-err)
            if self.ended:
                raise _closed_error()
            if self.op is None:
                self._arm(s, FIB__OP_ACCEPT_MULTI, sock._fd)
                continue
            if sock._timeout_ns == 0:
                raise BlockingIOError(EAGAIN, "Resource temporarily "
                                      "unavailable")
            self._wait(s, me, sock, True)


cdef int _stream_complete(Scheduler s, _Op o, fib__cqe *c) except -1:
    # The stream's entry in the pump's dispatch table (OP_STREAM): one
    # result of its multishot record.  Queue it, wake the reader, and
    # decide here -- not in the scheduler or the pump -- flow control (the
    # high-water mark), bulk mode, end of stream and the kernel's refusal
    # of multishot.
    cdef _Stream st = <_Stream>o.keep
    cdef unsigned bid
    cdef Fiber w
    cdef int res = c.res
    if c.flags & FIB__C_BUFFER:
        bid = FIB__CQE_BID(c.flags)
        if res > 0 and not st.ended:
            st.items.append((<char *>fib__pump_buffer(&s._io.c,
                                                      bid))[:res])
            st.buffered += res
        fib__pump_recycle(&s._io.c, bid)
    elif o.op.code == FIB__OP_ACCEPT_MULTI and res >= 0:
        if st.ended:
            close(res)
        else:
            st.items.append(res)
            st.buffered += 1
    if (c.flags & FIB__C_MORE) and st.op is o:
        if o.op.code == FIB__OP_RECV_MULTI and \
                st.buffered >= STREAM_BULK_MARK:
            # Data comes faster than the reader takes it: a bulk
            # transfer.  Chunking it through provided buffers costs a
            # completion and a copy per 16 KiB; the reader does better
            # reading straight into its own buffer (see _take).
            st.direct = True
            fib__pump_cancel(&s._io.c, &o.op)
        elif st.buffered >= (STREAM_HIGH_WATER if o.op.code ==
                             FIB__OP_RECV_MULTI else ACCEPT_HIGH_WATER):
            # The reader is behind: stop until it catches up.
            fib__pump_cancel(&s._io.c, &o.op)
    if res == 0 and o.op.code == FIB__OP_RECV_MULTI:
        st.ended = True                 # end of stream
    elif res < 0 and res != -ECANCELED and res != -ENOBUFS and \
            not st.ended:
        # ENOBUFS (the buffers ran dry) and our own cancels only end
        # this arming; the next read arms again.  EINVAL before any
        # data means the kernel has no multishot for this: fall back.
        if res == -EINVAL and not st.items:
            st.unsupported = True
            s._io.multishot = False
        else:
            st.err = res
    if not (c.flags & FIB__C_MORE):
        if st.op is o:
            st.op = None
        o.keep = None
        Py_DECREF(o)
    w = st.waiter
    if w is not None and w._state == ST_SUSPENDED:
        s._wake(w, None)
    return 0
