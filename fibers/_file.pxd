# Declarations for files (fibers/_file.pxi).  Included by _core.pxd, so that
# they sit beside their code while _core stays one compilation unit.

cdef class File:
    cdef int _fd
    cdef readonly object name
    cdef readonly str mode
    cdef bint _readable
    cdef bint _writable
    cdef Scheduler _reg
    cdef int _busy              # operations naming _fd that may still run
    cdef int _closing_fd        # closed while busy: the fd to close later
    cdef set _pool_jobs         # epoll: our jobs on the pool, to cancel

    cdef int _check(self, bint write) except -1
    cdef int _do(self, _Op o) except? -1
    cdef int _op_done(self) except -1
