# Declarations for the multishot stream (fibers/_stream.pxi).  Included by
# _core.pxd, so that they sit beside their code while _core stays one
# compilation unit.

cdef class _Stream:
    # What a multishot operation delivered that nobody has taken yet: bytes
    # chunks (recv) or fds (accept), and how it ended.
    cdef list items
    cdef Py_ssize_t buffered    # bytes queued (recv)
    cdef _Op op                 # the armed record, or None
    cdef Fiber waiter           # the fiber parked until something arrives
    cdef int err                # -errno to raise once (0: none)
    cdef bint ended             # EOF, error or close: nothing more comes
    cdef bint accepting         # items are fds: close leftovers
    cdef bint unsupported       # the kernel refused multishot
    cdef bint direct            # bulk: multishot off, recv reads directly
    cdef int waits              # small direct reads in a row

    cdef int _drop(self) except -1
    cdef int _end(self, Scheduler reg) except -1
    cdef int _arm(self, Scheduler s, int code, int fd) except -1
    cdef int _wait(self, Scheduler s, Fiber me, _Sock sock,
                   bint timed) except -1
    cdef object _take(self, Scheduler s, Fiber me, _Sock sock,
                      Py_ssize_t n, int flags, bint timed)
    cdef object _pop(self, Py_ssize_t n, bint peek)
    cdef int _direct_done(self, int res) except -1
    cdef object _accept(self, Scheduler s, Fiber me, _Sock sock)
