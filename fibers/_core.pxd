# Declarations for the compiled scheduler core (fibers/_core.pyx).
#
# Every cdef class field lives here so that the hot paths in _core.pyx are
# typed C attribute accesses, and so that later compiled modules (the I/O
# pump, the C API) can reach the scheduler's internals with cimport.

from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t


cdef extern from "greenlet/greenlet.h":
    ctypedef class greenlet.greenlet [object PyGreenlet]:
        pass

    # These are macros over a per-translation-unit API table, filled in by
    # PyGreenlet_Import() when the module initialises.
    void PyGreenlet_Import()
    greenlet PyGreenlet_New(object run, greenlet parent)
    greenlet PyGreenlet_GetCurrent()
    int PyGreenlet_SetParent(greenlet g, greenlet parent)


cdef extern from "fib_greenlet.h":
    int fib__switch_to(PyObject *g) except -1


cdef extern from "fib_ring.h":
    ctypedef struct fib__ring:
        size_t count
    int fib__ring_init(fib__ring *r, size_t capacity)
    void fib__ring_destroy(fib__ring *r)
    int fib__ring_push(fib__ring *r, void *item)
    void *fib__ring_pop(fib__ring *r)
    void *fib__ring_peek(const fib__ring *r)
    void *fib__ring_at(const fib__ring *r, size_t i)


cdef extern from "fib_heap.h":
    ctypedef struct fib__timer_node:
        int64_t deadline
        int kind
        void *owner
    ctypedef struct fib__heap:
        size_t len
    void fib__timer_node_init(fib__timer_node *n, int kind, void *owner)
    bint fib__timer_armed(const fib__timer_node *n)
    fib__timer_node *fib__heap_peek(const fib__heap *h)
    void fib__heap_init(fib__heap *h)
    void fib__heap_destroy(fib__heap *h)
    int fib__heap_push(fib__heap *h, fib__timer_node *n, int64_t deadline)
    fib__timer_node *fib__heap_pop(fib__heap *h)
    int fib__heap_remove(fib__heap *h, fib__timer_node *n)


cdef extern from "fib_stack.h":
    int fib__stack_install() except -1
    void fib__stack_seed()
    Py_ssize_t fib__stack_in_use()


include "_pump.pxd"
include "_blocking.pxd"
include "_monitor.pxd"


cdef extern from "fib_sys.h":
    void *fib__tls_get()
    void fib__tls_set(void *s)
    int64_t fib__monotonic_ns()
    int64_t fib__monotonic_coarse_ns()
    int fib__wait_fd(int fd, int64_t ns) nogil
    int fib__waker_open(int *rfd, int *wfd)
    void fib__waker_poke(int wfd)
    void fib__waker_drain(int rfd)


# Fiber states (Fiber._state)
cdef enum:
    ST_READY = 0        # queued to run, or never started
    ST_RUNNING = 1
    ST_SUSPENDED = 2    # parked: waiting for a wake-up
    ST_DEAD = 3

# Why a parked fiber was made ready again (Fiber._wake)
cdef enum:
    WAKE_VALUE = 0      # a waker handed it a value (signal, resume, timer)
    WAKE_EXC = 1        # an exception was thrown in (kill, timeout)
    WAKE_YIELD = 2      # it yielded and is simply next in line

# Timer node kinds (fib__timer_node.kind)
cdef enum:
    TK_SLEEP = 1        # owner is a Fiber parked in sleep()
    TK_CALL = 2         # owner is a Timer that spawns its callback
    TK_THROW = 3        # owner is a Timer that throws a Timeout into a fiber

# Condition kinds
cdef enum:
    CK_WAIT_FOR = 0
    CK_WHEN = 1
    CK_WHENEVER = 2

# Built-in quantum steps
cdef enum:
    STEP_IO = 0
    STEP_TIME = 1
    STEP_CONDITIONS = 2

# Clock kinds (Scheduler._clock_kind)
cdef enum:
    CLOCK_MONOTONIC = 0
    CLOCK_VIRTUAL = 1
    CLOCK_CUSTOM = 2


cdef class WaitQueue:
    # An intrusive FIFO of parked fibers: the links live in the Fiber, so
    # waiting allocates nothing, and removing a fiber that timed out is O(1).
    cdef Fiber _head
    cdef Fiber _tail
    cdef Py_ssize_t _count
    # What a fiber parked here waits on, for the fiber view (_inspect.pxi):
    # a word set once, where the queue is made ("Lock", "Queue.get"), and
    # the address of the object that owns the queue (printed, never
    # dereferenced).  A fiber's _wq tells the view where it waits, so the
    # waits themselves record nothing.
    cdef object _what
    cdef size_t _owner

    cdef inline void append(self, Fiber f)
    cdef inline Fiber popleft(self)
    cdef inline void remove(self, Fiber f)


# Defined in _group.pxd: a group, pool or race that a fiber reports its end
# to (Fiber._owner).
cdef class _Owner


cdef class Fiber:
    cdef Scheduler _sched
    cdef object _func
    cdef tuple _args
    cdef dict _kwargs
    cdef object _result
    cdef object _exception      # what the function raised, once dead
    cdef object _name
    cdef uint64_t _id
    cdef greenlet _glet         # worker greenlet, bound when first run
    cdef int _state
    cdef int _wake
    cdef object _value          # value handed over by the waker
    cdef object _exc            # exception to raise at the next checkpoint
    cdef list _dropped          # pending exceptions replaced (see _throw)
    cdef object _kill_exc       # what kill() threw, to keep it out of the log
    cdef bint _joined           # someone called join(): do not log errors
    cdef bint _registered       # in Scheduler._live
    cdef WaitQueue _joiners
    # intrusive wait-queue links; a fiber waits in at most one queue
    cdef WaitQueue _wq
    cdef Fiber _wq_prev
    cdef Fiber _wq_next
    # the node sleep() arms, so that sleeping allocates nothing
    cdef fib__timer_node _sleep_node
    # what a fiber parked in a fibers.sync primitive carries (a put's or a
    # send's item) or is handed (a get's item; _SYNC_CLOSED); in the few
    # waits outside any WaitQueue that nothing else can find (a blocking
    # call, a multishot stream, a thread lock, sleep forever), what it
    # waits on, for the fiber view (_inspect.pxi) -- a field of its own
    # would cost every spawn (the collector visits it)
    cdef object _wq_item
    # the group, pool or race this fiber belongs to: told in _finish, on
    # every way a fiber can end (even killed before it ever ran)
    cdef _Owner _owner
    # for the fiber view (_inspect.pxi): when it was spawned (the
    # scheduler's clock, ms-coarse on the monotonic one)
    cdef int64_t _born_ns

    cdef object _outcome(self)


cdef class Timer:
    cdef fib__timer_node _node
    cdef Scheduler _sched
    cdef object _fn
    cdef tuple _args
    cdef int64_t _interval      # ns; 0 for one-shot
    cdef int64_t _start         # ns; periodic deadlines are start + k*interval
    cdef Fiber _fiber           # TK_THROW: the fiber to interrupt
    cdef object _exc            # TK_THROW: the Timeout instance
    cdef readonly uint64_t fired

    cdef int _fire(self, int64_t now) except -1
    cdef bint _disarm(self)


cdef class Trigger:
    cdef Scheduler _sched
    cdef object _pred
    cdef object _fn
    cdef int _kind
    cdef Fiber _fiber
    cdef bint _active


cdef class VirtualClock:
    cdef int64_t _ns
    cdef public bint autojump
    cdef int64_t _io_grace_ns   # real time to wait for I/O before a jump


cdef class Scheduler:
    cdef fib__ring _ready
    cdef fib__heap _timers
    cdef size_t _remaining      # fibers left to run in this tick
    cdef Fiber _current
    cdef Fiber _start_next      # a fresh fiber handed to the hub to start
    cdef greenlet _hub          # the greenlet running the loop
    cdef list _pool             # idle worker greenlets (LIFO)
    cdef Py_ssize_t _pool_max
    cdef set _live              # fibers that have parked and are not dead
    cdef dict _signals          # name -> WaitQueue
    cdef list _conds
    cdef list _steps
    cdef bint _custom_steps
    cdef bint _running
    cdef bint _may_block
    cdef bint _stopping
    cdef bint _closed
    cdef object _system_error
    cdef long _owner_thread
    cdef int _clock_kind
    cdef VirtualClock _vclock
    cdef object _clock
    # the fiber run()/a blocking word drives; the tick stops waiting once
    # it is dead
    cdef Fiber _target
    # what run() must re-raise once the target has unwound: a Ctrl-C (or
    # SystemExit) that was delivered into it
    cdef object _delivered
    # nothing can happen but other threads may still call in: wait for them
    cdef bint _idle_wait
    cdef int _os_waits           # fibers in wait_os_signal
    # calls queued from other threads (the pump's waker ends the wait)
    cdef object _ts_calls
    cdef bint _ts_pending       # _ts_calls is not empty (a cheap test)
    cdef bint _wakeup_fd_set
    # counters
    cdef uint64_t _ticks
    cdef uint64_t _spawned
    cdef uint64_t _workers_created
    cdef uint64_t _workers_reused
    # the completion pump and the waker (the C pump opens on first I/O)
    cdef _Pump _io
    # the blocking-call pool's completions come back through this sink
    cdef fib__sink *_sink
    cdef Py_ssize_t _jobs       # submitted, not yet drained
    cdef _Op _sink_op           # the pump's wait on the sink's eventfd
    # close(): the real time (monotonic ns) after which calls still on the
    # pool are abandoned; 0 before close()
    cdef int64_t _pool_deadline
    # on_fiber_error: called with (fiber, exc) instead of logging a
    # failure nobody joined (the pytest plugin fails the test with it)
    cdef object _on_fiber_error
    # FIBERS_DEBUG (_inspect.pxi): when the running fiber's run began (real
    # monotonic ns; 0 while the hub runs), and the debug report's state
    cdef int64_t _run_ns
    cdef object _debug
    cdef object __weakref__
    # what the blocking-call detector sees, and the wall time of each tick
    # (fib_monitor.h, _monitor.pxi)
    cdef fib__mon_slot _mon
    cdef fib__tick_stats _tstats

    cdef int64_t _now_ns(self) except? -1
    cdef int _arm(self, fib__timer_node *n, object owner,
                  int64_t deadline) except -1
    cdef inline int _push(self, Fiber f) except -1
    cdef inline Fiber _pop_runnable(self)
    cdef int _bind(self, Fiber f) except -1
    cdef inline int _enter_fiber(self, Fiber f) except -1
    cdef inline int _to_hub(self) except -1
    cdef int _switch_away(self, Fiber me) except -1
    cdef object _park(self, Fiber me)
    cdef int _yield(self, Fiber me) except -1
    cdef inline int _unpark(self, Fiber f, object value, int why) except -1
    cdef int _wake(self, Fiber f, object value) except -1
    cdef int _throw(self, Fiber f, object exc) except -1
    cdef Fiber _spawn(self, object fn, tuple args, dict kwargs)
    cdef int _run_body(self, Fiber f) except -1
    cdef int _finish(self, Fiber f, object result, object exc) except -1
    cdef int _report_fiber_error(self, Fiber f, object exc) except -1
    cdef int _sleep(self, Fiber me, int64_t ns) except -1
    cdef Timer _arm_timeout(self, Fiber me, object seconds)
    cdef int _disarm_timeout(self, Fiber me, Timer t) except -1
    cdef object _wait_in(self, Fiber me, WaitQueue q)
    cdef object _wait_signal(self, Fiber me, object name)
    cdef int _wait_dead(self, Fiber me, Fiber target) except -1
    cdef int _wait_for(self, Fiber me, object pred) except -1
    cdef int _run_ready(self) except -1
    cdef int64_t _wait_budget(self, bint *jump) except? -2
    cdef Py_ssize_t _io_inflight(self)
    cdef inline bint _io_pending(self)
    cdef int _step_io(self) except -1
    cdef int _run_threadsafe(self) except -1
    cdef fib__pump *_get_pump(self) except NULL
    cdef void _forget_fd(self, int fd, bint busy) noexcept
    cdef Timer _arm_exc(self, Fiber me, int64_t ns, object exc)
    cdef int _step_time(self) except -1
    cdef int _step_conditions(self) except -1
    cdef int _run_builtin(self, int which) except -1
    cdef int _tick(self) except -1
    cdef int _reraise_system_error(self) except -1
    cdef bint _idle(self) except -1
    cdef int _check_enter(self) except -1
    cdef int _enter(self, bint may_block) except -1
    cdef bint _quiet(self, Fiber target) except -1
    cdef int _deliver(self, Fiber target, object exc) except -1
    cdef int _check_signals(self) except -1
    cdef void _leave(self, void *prev)
    cdef object _loop(self, Fiber target)
    cdef int _ticks_until_done(self, Fiber target) except -1
    cdef object _drive(self, str word, object fn, tuple args)


include "_net.pxd"
include "_stream.pxd"
include "_file.pxd"
include "_ring.pxd"
include "_group.pxd"
include "_threadlock.pxd"
