# Declarations for the blocking-call pool (fibers/_blocking.pxi).  Included
# by _core.pxd, so that they sit beside their code while _core stays one
# compilation unit.

cdef extern from "fib_pool.h":
    ctypedef int (*fib__job_fn)(void *arg) noexcept nogil
    ctypedef struct fib__sink:
        int efd
    ctypedef struct fib__job:
        fib__job_fn fn
        void *arg
        void *owner
        fib__sink *sink
        int result
        fib__job *next
    int fib__pool_submit(fib__job *job)
    int fib__pool_cancel(fib__job *job)
    int fib__on_thread_stack(const void *p)
    void fib__pool_set_limit(unsigned n)
    unsigned fib__pool_limit()
    void fib__pool_set_idle_ns(int64_t ns)
    void fib__pool_stats(unsigned *threads, unsigned *idle, unsigned *queued)
    fib__sink *fib__sink_new()
    void fib__sink_release(fib__sink *s)
    fib__job *fib__sink_drain(fib__sink *s)


cdef class _Job:
    # One call on a pool thread: the C job, the fiber waiting for it, and
    # the Python call and its outcome (or the file operation it does).
    cdef fib__job job
    cdef Fiber fiber            # None once the fiber gave up on it
    cdef bint done
    cdef object fn
    cdef tuple args
    cdef dict kwargs
    cdef object result
    cdef object exc
    cdef _Op op                 # a file operation done on the pool
    cdef bint submitted         # the pool took it: a completion will come
