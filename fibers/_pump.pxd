# Declarations for the completion pump (fibers/_pump.pxi): its C contract
# (csrc/fib_pump.h), the operation record and the _Pump.  Included by
# _core.pxd, so that they sit beside their code while _core stays one
# compilation unit.

cdef extern from "fib_pump.h":
    ctypedef struct fib__op:
        unsigned char code
        unsigned char flags
        unsigned short events
        unsigned short buf_index
        int fd
        int msg_flags
        unsigned int len
        void *buf
        int64_t offset
        void *owner
        int res
        unsigned char state
        fib__op *live_next
    ctypedef struct fib__cqe:
        fib__op *op
        int res
        unsigned int flags
    ctypedef struct fib__backend:
        const char *name
    ctypedef struct fib__pump:
        const fib__backend *be
        size_t inflight
        size_t unflushed
        fib__op *live
        int defer_taskrun
    enum:
        FIB__OP_POLL
        FIB__OP_RECV
        FIB__OP_SEND
        FIB__OP_ACCEPT
        FIB__OP_READ
        FIB__OP_WRITE
        FIB__OP_FSYNC
        FIB__OP_READ_FIXED
        FIB__OP_WRITE_FIXED
        FIB__OP_RECV_MULTI
        FIB__OP_ACCEPT_MULTI
        FIB__C_MORE
        FIB__C_BUFFER
        FIB__F_FOREIGN
        FIB__S_IDLE
        FIB__S_INFLIGHT
        FIB__S_CANCELLING
        FIB__BACKEND_URING
        FIB__BACKEND_EPOLL
        FIB__PUMP_NO_DEFER_TASKRUN
    int fib__uring_probe(char *why, size_t whylen)
    int fib__pump_open(fib__pump *p, int backend, unsigned entries,
                       unsigned flags)
    int fib__op_try(const fib__op *op, int regular) nogil
    void fib__pump_close(fib__pump *p)
    int fib__pump_submit(fib__pump *p, fib__op *op)
    int fib__pump_cancel(fib__pump *p, fib__op *op)
    int fib__pump_forget_fd(fib__pump *p, int fd, int has_inflight)
    int fib__pump_flush(fib__pump *p)
    int fib__pump_wait(fib__pump *p, int64_t timeout_ns, fib__cqe *out,
                       int max) nogil
    int fib__pump_provide(fib__pump *p, unsigned count, unsigned size)
    void *fib__pump_buffer(fib__pump *p, unsigned bid)
    void fib__pump_recycle(fib__pump *p, unsigned bid)
    int fib__pump_register_buffer(fib__pump *p, void *base, size_t len)
    void fib__pump_unregister_buffer(fib__pump *p, unsigned index)
    unsigned FIB__CQE_BID(unsigned flags)


# Who handles a record's completion (_Op.kind): each kind's owner has its
# handler in the pump's dispatch table (_op_handlers in _pump.pxi).
cdef enum:
    OP_FIBER = 0        # a fiber waits for it, or gave up on it (_pump.pxi)
    OP_STREAM = 1       # a multishot stream's record (_stream.pxi)
    OP_FILE = 2         # a file operation whose fiber gave up (_file.pxi)
    OP_SINK = 3         # the wait on the blocking pool's sink (_blocking.pxi)
    OP_WAKER = 4        # the wait on the waker (_pump.pxi)
    OP_KINDS = 5


# How many completions one pump wait hands back at most.
cdef enum:
    PUMP_BATCH = 256


ctypedef int (*_reaped_fn)(object owner, fib__cqe *c) except -1


# Defined in _core.pxd: the scheduler whose pump this is, passed to every
# handler.
cdef class Scheduler


cdef class _Op:
    # One I/O operation: the C record the pump fills in, and the Python
    # objects the kernel may touch until its completion.  While in flight
    # the pump owns a reference (see _io_wait in _pump.pxi).
    cdef fib__op op
    cdef Fiber fiber            # who waits for it; None once abandoned
    cdef PyObject *raw          # a bytes object the kernel fills (owned)
    cdef Py_buffer view         # a caller's buffer, while has_view
    cdef bint has_view
    cdef object keep            # anything else to keep alive (Ring data)
    cdef object callback        # Ring operations
    cdef unsigned char kind     # OP_*: who handles its completion

    cdef int _release(self) except -1


cdef class _Pump:
    # The completion pump as the scheduler holds it (Scheduler._io): the C
    # pump, the resources that live with its ring, and the waker.  The
    # scheduler's io step is the only caller of tick(); submit and cancel
    # go through the C wrappers on &c.
    cdef fib__pump c
    cdef bint is_open
    cdef int backend            # FIB__BACKEND_*
    cdef unsigned open_flags    # FIB__PUMP_* (see _pump_open_flags)
    cdef fib__cqe done[PUMP_BATCH]
    cdef int provided           # buffers for multishot recv: 0 not yet,
                                # 1 ready, -1 refused
    cdef dict fixed             # registered heaps: id -> (weakref, index)
    cdef uint64_t fixed_ops
    cdef bint multishot         # servers use multishot accept/recv
    cdef bint no_streams        # close() ended the streams: arm no more
    # the waker: a non-blocking pipe whose read end the tick waits on, so
    # that other threads (call_threadsafe) and OS signals (set_wakeup_fd)
    # can end the wait; wake_op is the pump's wait on it
    cdef int wake_r
    cdef int wake_w
    cdef _Op wake_op
    cdef bint reaping           # shutdown() began: the waker stays unarmed

    cdef fib__pump *open(self) except NULL
    cdef inline Py_ssize_t waiting(self) noexcept
    cdef int tick(self, Scheduler s, int64_t t, bint grace) except -1
    cdef int step(self, Scheduler s, int64_t t) except -1
    cdef int deliver(self, Scheduler s) except -1
    cdef int wait_waker(self, Scheduler s, int64_t t) except -1
    cdef int open_waker(self) except -1
    cdef int arm_waker(self) except -1
    cdef void poke(self) noexcept
    cdef void forget_fd(self, int fd, bint busy) noexcept
    cdef int end_streams(self) except -1
    cdef int shutdown(self, Scheduler s) except -1
