# Declarations for the callback ring (fibers/_ring.pxi).  Included by
# _core.pxd, so that they sit beside their code while _core stays one
# compilation unit.

cdef class Ring:
    cdef fib__pump _pump
    cdef bint _open
    cdef int _entries
    cdef int _unsubmitted
    cdef list _finished         # completed records whose callback is due
    cdef long _owner_thread
    cdef fib__cqe _done[PUMP_BATCH]

    cdef int _check(self) except -1
    cdef int _queue(self, _Op o, object callback) except -1
    cdef int _harvest(self, int64_t timeout_ns) except -1
