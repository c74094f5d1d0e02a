# Cooperative files (fibers.io).  Included by _core.pyx.
#
# Every open, read, write and fsync is one operation (open always on the
# blocking-call pool: see _run_open_job).  On io_uring the kernel
# does it while other fibers run; on epoll, which cannot wait on regular
# files, a pool thread does it (fibers.blocking's pool) while they run.
# read() and write() use the file position (offset -1, which io_uring
# honours), so they interleave correctly with pread/pwrite at offsets.

from libc.errno cimport EISDIR, errno
from posix.fcntl cimport open as _c_open
from posix.stat cimport struct_stat, fstat, S_ISDIR

from posix.fcntl cimport (O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC,
                          O_APPEND, O_EXCL)

cdef extern from "<fcntl.h>":
    enum:
        O_CLOEXEC


cdef int _fixed_slot(Scheduler s, object heap) except -2:
    # The fixed-buffer index of a registered heap in this ring,
    # registering it on first use; -1 if the kernel refuses.  Entries
    # of heaps that died are dropped first, so a new heap at a reused
    # address never meets a stale registration.
    cdef int rc
    entry = s._io.fixed.get(id(heap))
    if entry is not None and entry[0]() is heap:
        return entry[1]
    for key, (ref, slot) in list(s._io.fixed.items()):
        if ref() is None or key == id(heap):
            fib__pump_unregister_buffer(&s._io.c, slot)
            del s._io.fixed[key]
    rc = fib__pump_register_buffer(s._get_pump(), (<Heap>heap).base,
                                   <size_t>(<Heap>heap).length)
    if rc < 0:
        return -1
    s._io.fixed[id(heap)] = (_weakref.ref(heap), rc)
    return rc


cdef int _file_op_finished(Scheduler s, _Op o, fib__cqe *c) except -1:
    # OP_FILE, in the pump's dispatch table: the completion of a file
    # operation whose fiber gave up.  Only now may the File release the fd
    # it names (see File.close).  The pump's reference to the record goes
    # here.
    fl = o.keep
    o.keep = None
    Py_DECREF(o)
    (<File>fl)._op_done()
    return 0


cdef int _use_fixed(Scheduler s, _Op o, object buffer) except -1:
    # A blob of a registered heap, on io_uring: use the fixed-buffer
    # operation, which skips pinning the pages on every call.
    cdef Heap h
    cdef int slot
    if s._io.backend != FIB__BACKEND_URING or type(buffer) is not Blob:
        return 0
    h = (<Blob>buffer).heap
    if h is None or not h.registered:
        return 0
    slot = _fixed_slot(s, h)
    if slot < 0:
        return 0        # could not register (RLIMIT_MEMLOCK?): plain op
    o.op.code = FIB__OP_READ_FIXED if o.op.code == FIB__OP_READ \
        else FIB__OP_WRITE_FIXED
    o.op.buf_index = <unsigned short>slot
    s._io.fixed_ops += 1
    return 0


cdef int _mode_flags(str mode) except -1:
    cdef int flags
    if not isinstance(mode, str) or len(set(mode)) != len(mode) or \
            not set(mode) <= set("rwaxb+"):
        raise ValueError(f"invalid mode: {mode!r}")
    if "b" not in mode:
        raise ValueError(f"fibers.io.open() is binary only; use {mode!r} "
                         f"with 'b' (got {mode!r})")
    kinds = [c for c in mode if c in "rwax"]
    if len(kinds) != 1:
        raise ValueError(f"mode must have exactly one of r, w, a, x: "
                         f"{mode!r}")
    k = kinds[0]
    plus = "+" in mode
    if k == "r":
        flags = O_RDWR if plus else O_RDONLY
    elif k == "w":
        flags = (O_RDWR if plus else O_WRONLY) | O_CREAT | O_TRUNC
    elif k == "a":
        flags = (O_RDWR if plus else O_WRONLY) | O_CREAT | O_APPEND
    else:
        flags = (O_RDWR if plus else O_WRONLY) | O_CREAT | O_EXCL
    return flags | O_CLOEXEC


@cython.final
cdef class File:
    """A binary file whose reads and writes go through the completion pump.
    Returned by :func:`fibers.io.open`."""

    # Closing with operations in flight.  An operation names the file by
    # its fd number, and it may start well after the fiber issued it: on
    # io_uring the SQE goes to the kernel at the tick's io_uring_enter, on
    # epoll a pool thread calls pwrite() whenever it reaches the job.  If
    # close() freed the number at once, the next open() anywhere in the
    # process could get it, and the pending write would land in that file.
    # So the number is never released while an operation naming it may
    # still start: close() marks the File closed (no new operation), asks
    # the pump to cancel what has not started (io_uring; a started one
    # finishes on the file it began on; on epoll, pool jobs no thread has
    # started are taken back), and leaves the close(2) to the last
    # operation's completion (_op_done), which the pump's dispatch table
    # and _sink_drain call for operations whose fiber has given up.  close()
    # does not wait, so it stays usable outside fibers and in finally
    # blocks of fibers being killed.

    def __cinit__(self):
        self._fd = -1
        self._closing_fd = -1

    def __init__(self, *args, **kwargs):
        raise TypeError("use fibers.io.open() to open a File")

    def __dealloc__(self):
        # Nothing can be in flight here: an operation in flight keeps its
        # File alive (the waiting fiber's frame, or _Op.keep).
        cdef int fd = self._fd if self._fd >= 0 else self._closing_fd
        if fd >= 0:
            if self._reg is not None:
                self._reg._forget_fd(fd, False)
            close(fd)

    cdef int _op_done(self) except -1:
        # An operation naming the fd is over; the last one after close()
        # closes it.
        cdef int fd
        self._busy -= 1
        if self._busy == 0 and self._closing_fd >= 0:
            fd = self._closing_fd
            self._closing_fd = -1
            if self._reg is not None:
                self._reg._forget_fd(fd, False)
            close(fd)
        return 0

    cdef int _check(self, bint write) except -1:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        if write and not self._writable:
            raise _io_mod.UnsupportedOperation("File not open for writing")
        if not write and not self._readable:
            raise _io_mod.UnsupportedOperation("File not open for reading")
        return 0

    cdef int _do(self, _Op o) except? -1:
        # One operation for the calling fiber; returns >= 0 or raises.
        cdef Scheduler s = _sched()
        cdef int res
        cdef _Job j = None
        cdef bint pending
        if self._fd < 0:
            # Closed by another fiber, say between two chunks of a write().
            raise ValueError("I/O operation on closed file")
        o.op.fd = self._fd
        if self._reg is not s:
            if self._reg is not None:
                self._reg._forget_fd(self._fd, False)
            self._reg = s
        self._busy += 1
        try:
            if s._io.backend == FIB__BACKEND_EPOLL:
                # epoll cannot wait on a file: the pool does the call.
                j = _Job.__new__(_Job)
                j.op = o
                j.job.fn = _run_file_job
                j.job.arg = <void *>&o.op
                if self._pool_jobs is None:
                    self._pool_jobs = set()
                self._pool_jobs.add(j)
                _offload(s, s._current, j, False)
                res = j.job.result
            else:
                res = _io_wait(s, s._current, o)
        finally:
            # Interrupted (killed, timed out) with the operation still in
            # flight: its completion, not this fiber, ends it.
            if j is not None:
                pending = j.submitted and not j.done
                if not pending:
                    self._pool_jobs.discard(j)
            else:
                pending = o.op.state != FIB__S_IDLE
                if pending:
                    # In the pump: its completion goes to the File now.
                    o.kind = OP_FILE
            if pending:
                o.keep = self
            else:
                self._op_done()
        if res < 0:
            if res == -ECANCELED and self._fd < 0:
                res = -EBADF        # cancelled by close(), as for sockets
            raise _oserror(-res, f"{self.name!r}")
        return res

    def read(self, size=-1):
        """Read up to ``size`` bytes from the file position (all of the
        rest when ``size`` is negative or None); ``b''`` at end of file."""
        cdef _Op o
        cdef int res
        if _sched()._current is None:
            return _sched()._drive("read", self.read, (size,))
        size = -1 if size is None else _int_arg(size, "read", "size")
        self._check(False)
        if size < 0:
            chunks = []
            while True:
                piece = self.read(1 << 20)
                if not piece:
                    return b"".join(chunks)
                chunks.append(piece)
        o = _new_op(FIB__OP_READ, self._fd)
        _op_alloc(o, size)
        res = self._do(o)
        return _op_bytes(o, res)

    def readinto(self, buffer):
        """Read into a writable buffer; returns the number of bytes."""
        cdef _Op o
        if _sched()._current is None:
            return _sched()._drive("readinto", self.readinto, (buffer,))
        self._check(False)
        o = _new_op(FIB__OP_READ, self._fd)
        _op_view(o, buffer, True)
        _use_fixed(_sched(), o, buffer)
        return self._do(o)

    def write(self, data):
        """Write all of ``data`` at the file position (at the end, in
        append mode); returns its length."""
        cdef _Op o
        cdef Py_ssize_t off = 0
        cdef char *base
        if _sched()._current is None:
            return _sched()._drive("write", self.write, (data,))
        self._check(True)
        o = _new_op(FIB__OP_WRITE, self._fd)
        _op_view(o, data, False)
        _use_fixed(_sched(), o, data)
        base = <char *>o.view.buf
        while off < o.view.len:
            o.op.buf = base + off
            o.op.len = <unsigned int>min(o.view.len - off, MAX_IO)
            off += self._do(o)
        return off

    def pread(self, size, offset):
        """Read up to ``size`` bytes at ``offset``; the file position does
        not move."""
        cdef _Op o
        cdef int res
        if _sched()._current is None:
            return _sched()._drive("pread", self.pread, (size, offset))
        size = _int_arg(size, "pread", "size")
        offset = _int_arg(offset, "pread", "offset")
        self._check(False)
        if size < 0:
            raise ValueError("pread() needs size >= 0")
        if offset < 0:
            raise ValueError("pread() needs offset >= 0")
        o = _new_op(FIB__OP_READ, self._fd)
        o.op.offset = offset
        _op_alloc(o, size)
        res = self._do(o)
        return _op_bytes(o, res)

    def preadinto(self, buffer, offset):
        """Read into a writable buffer at ``offset`` (the file position
        does not move); returns the number of bytes.  With a blob of a
        registered :class:`fibers.Heap` on io_uring, this is a fixed-buffer
        read."""
        cdef _Op o
        if _sched()._current is None:
            return _sched()._drive("preadinto", self.preadinto,
                                   (buffer, offset))
        offset = _int_arg(offset, "preadinto", "offset")
        self._check(False)
        if offset < 0:
            raise ValueError("preadinto() needs offset >= 0")
        o = _new_op(FIB__OP_READ, self._fd)
        o.op.offset = offset
        _op_view(o, buffer, True)
        _use_fixed(_sched(), o, buffer)
        return self._do(o)

    def pwrite(self, data, offset):
        """Write ``data`` at ``offset`` (the file position does not move);
        returns the number of bytes written."""
        cdef _Op o
        if _sched()._current is None:
            return _sched()._drive("pwrite", self.pwrite, (data, offset))
        offset = _int_arg(offset, "pwrite", "offset")
        self._check(True)
        if offset < 0:
            raise ValueError("pwrite() needs offset >= 0")
        o = _new_op(FIB__OP_WRITE, self._fd)
        o.op.offset = offset
        _op_view(o, data, False)
        _use_fixed(_sched(), o, data)
        return self._do(o)

    def fsync(self):
        """Flush the file's data and metadata to the device."""
        cdef _Op o
        if _sched()._current is None:
            return _sched()._drive("fsync", self.fsync, ())
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        o = _new_op(FIB__OP_FSYNC, self._fd)
        self._do(o)

    def seek(self, offset, whence=0):
        """Move the file position, as os.lseek(); returns the new one."""
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return _os_lseek(self._fd, offset, whence)

    def tell(self):
        """The file position."""
        return self.seek(0, 1)

    def fileno(self):
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def close(self):
        """Close the file.  Idempotent.  Operations other fibers have in
        flight on it are cancelled if they have not started (they raise
        OSError(EBADF)) or finish on this file; the fd is released only
        after the last of them."""
        cdef int fd = self._fd
        if fd < 0:
            return
        self._fd = -1
        if self._busy:
            # See the comment at the top of the class.
            self._closing_fd = fd
            if self._reg is not None:
                self._reg._forget_fd(fd, True)
            if self._pool_jobs:
                # epoll: jobs no pool thread has started come back at once
                # as cancelled; a started one finishes on this file.
                for j in list(self._pool_jobs):
                    fib__pool_cancel(&(<_Job>j).job)
            return
        if self._reg is not None:
            self._reg._forget_fd(fd, False)
        _os_close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"<fibers.io.File {self.name!r} mode={self.mode!r} {state}>"


# An open whose fiber gave up (timeout, kill) while a pool thread was still
# in open(2): _sink_drain closes the fd it gets, if any.
_OPEN_ABANDONED = object()


cdef int _run_open_job(void *arg) noexcept nogil:
    # open(2) on a pool thread: a FIFO without a peer, a slow network file
    # system or an automount can block in it for as long as they like, and
    # must not take every fiber with them.  (io_uring's OPENAT would not be
    # better: the kernel hands a blocking open to its own worker thread
    # anyway, and such an open is not reliably cancellable there.)  The
    # record only carries the arguments: buf is the path, msg_flags the
    # flags.
    cdef fib__op *op = <fib__op *>arg
    cdef int fd = _c_open(<const char *>op.buf, op.msg_flags, 0o666)
    cdef struct_stat st
    if fd < 0:
        return -errno
    # open(2) lets O_RDONLY open a directory; the error would only come at
    # the first read.  The stdlib's open() refuses at once.
    if fstat(fd, &st) == 0 and S_ISDIR(st.st_mode):
        close(fd)
        return -EISDIR
    return fd


def _open_file(path, mode="rb"):
    cdef int flags = _mode_flags(mode)
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef File f
    cdef _Op o
    cdef _Job j
    cdef int fd
    if me is None:
        return s._drive("open", _open_file, (path, mode))
    bpath = _os.fsencode(path)
    if b"\0" in bpath:
        raise ValueError("embedded null byte")
    o = _new_op(FIB__OP_READ, -1)
    o.op.buf = <char *>bpath
    o.op.msg_flags = flags
    j = _Job.__new__(_Job)
    j.op = o
    j.args = (bpath,)           # the path stays alive while the job runs
    j.job.fn = _run_open_job
    j.job.arg = <void *>&o.op
    try:
        _offload(s, me, j, False)
    except BaseException:
        if j.done:
            if j.job.result >= 0:
                close(j.job.result)     # opened, but we were interrupted
        elif j.submitted:
            o.keep = _OPEN_ABANDONED
        raise
    fd = j.job.result
    if fd < 0:
        raise OSError(-fd, _os_strerror(-fd), path)
    f = File.__new__(File)
    f._fd = fd
    f.name = path
    f.mode = mode
    f._readable = "r" in mode or "+" in mode
    f._writable = "r" not in mode or "+" in mode
    return f
