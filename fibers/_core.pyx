# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, always_allow_keywords=False
"""The fibers scheduler core (compiled).

Design notes
============

A fiber is a greenlet running one Python function.  The scheduler runs them
cooperatively on one OS thread, in *ticks*:

1. **Run the ready fibers.**  At the start of a tick we snapshot the length of
   the ready ring (`_remaining`) and run exactly that many.  A fiber woken or
   re-queued during the tick lands behind the snapshot and runs next tick, so
   a fiber that yields in a loop cannot starve timers, I/O or its peers.

2. **Direct hand-off.**  Within a tick a fiber that blocks or yields switches
   straight to the next ready fiber's greenlet (`_switch_away`).  Only when
   the snapshot is used up does control go back to the scheduler's own
   greenlet (the *hub*), which is the greenlet that called run()/step().  A
   greenlet switch is the unit cost here; going through the hub for every
   yield would double it.

3. **Quantum steps.**  The hub then runs the quantum steps: the conditions
   step (poll predicates, only when some are pending), the I/O step (it
   asks the completion pump, _pump.pxi, for this tick's completions: the
   pump submits the I/O this tick's fibers queued, waits until the next
   deadline, and hands each completion to its owner; with nothing in
   flight, just the idle wait) and the time step (fire due timers from a C
   min-heap).  They are the seed runtime's add-ons; users
   can add their own or replace the iterator.

Fibers are bound to worker greenlets lazily, when first run.  A worker whose
fiber finished takes the next fiber from the ready ring *in place* when that
fiber has never run, so a burst of spawned fibers that never block runs on a
single greenlet with no switch at all; otherwise the worker parks itself in
a bounded LIFO pool.

Blocking is one primitive, `_park`: mark the fiber suspended and switch away.
Every waiter (sleep, signals, join, conditions, suspend) is "register where
the waker can find me, park, unregister in a finally".  A waker calls `_wake`
(value) or `_throw` (exception); both only push onto the ready ring, so a
waker never loses control to the woken fiber.

Exceptions thrown into a fiber (kill, timeouts) are delivered at
*checkpoints*: if the fiber is parked it is woken with the exception; if it
is already queued with a value it keeps that value (a signal is never lost)
and the exception waits for its next checkpoint.  A timeout scope clears its
own pending exception when it exits, so a deadline that passed after the
work finished raises nothing.
"""

cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from cpython.object cimport PyCallable_Check
from cpython.number cimport PyNumber_Index
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int64_t
from libc.errno cimport EINTR

cdef extern from "<errno.h>":
    enum:
        ECANCELED
        ENOBUFS
        EINVAL
from posix.unistd cimport close, usleep
from fibers._heap cimport Heap, Blob
from libc.math cimport isnan, llround

import atexit as _atexit
import collections as _collections
import logging
import signal as _signal
import threading
from _thread import _count as _thread_count
import weakref as _weakref

PyGreenlet_Import()
fib__stack_install()

from greenlet import GreenletExit as _GreenletExit

_log = logging.getLogger("fibers")

# Deadlines beyond this are "never"; it keeps now + delay far from overflow.
cdef int64_t NS_FOREVER = (<int64_t>1) << 62
# The clock's range, ~146 years: times and deadlines are int64 nanoseconds
# no later than this.  A deadline past it saturates here (see _deadline),
# and a VirtualClock stops here, so that no sum or difference of two times
# can overflow and time never runs backwards.
cdef int64_t TIME_MAX_NS = NS_FOREVER
# How often pending conditions are polled when nothing else wakes us.
cdef int64_t COND_POLL_NS = 1000000
# How often a scheduler that waits only for other threads (see _quiet)
# checks that some are still alive.
cdef int64_t THREAD_POLL_NS = 100000000
# How long close() waits, in real time, for calls still running on the
# blocking-call pool before it abandons them.  A call stuck in the kernel
# (open() of a FIFO nobody writes) may never return, and a signal cannot
# make it give up: CPython retries a system call that fails with EINTR on
# any thread but the main one (PEP 475).
cdef int64_t POOL_CLOSE_GRACE_NS = 1000000000
# The first steps in Scheduler._steps are the built-in ones.
cdef Py_ssize_t N_BUILTIN_STEPS = 3

_STATE_NAMES = ("ready", "running", "suspended", "dead")


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------

class Timeout(TimeoutError):
    """Raised in a fiber when a ``timeout=`` argument or a :func:`timeout`
    scope expires.  A subclass of the builtin :class:`TimeoutError`."""


class FiberExit(BaseException):
    """Thrown into a fiber by :meth:`Fiber.kill` by default.

    Like :class:`GeneratorExit`, it derives from :class:`BaseException` so
    that ``except Exception`` blocks do not swallow it.  A fiber that ends
    with it is considered killed, not failed: it is not logged and
    :meth:`Fiber.join` returns ``None``."""


class Deadlock(RuntimeError):
    """Raised in the fiber that :func:`run` (or a blocking call made outside
    any fiber) is waiting for, when nothing left in the scheduler can ever
    wake it: no ready fiber, no timer, no condition and no pending I/O."""


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

import os as _os

# Bound at import, like the socket module's names in _net.pxi: a program
# may replace os.open and friends with cooperative versions, which must not
# end up calling themselves through us.
cdef object _os_open = _os.open
cdef object _os_close = _os.close
cdef object _os_lseek = _os.lseek
cdef object _os_strerror = _os.strerror


cdef extern from *:
    """
    #include <errno.h>
    static int fib__errno(void) { return errno; }
    """
    int errno_get "fib__errno"()


cdef object _oserror(int err, str context=None):
    # OSError(errno, msg) picks the stdlib subclass itself:
    # ConnectionResetError, BrokenPipeError, TimeoutError, ...
    msg = _os_strerror(err)
    if context:
        msg = f"{context}: {msg}"
    return OSError(err, msg)


cdef object _int_arg(object value, str word, str name):
    # An integer argument, checked up front with a message naming it: a str
    # would otherwise fail later in a comparison, with a message about '<'
    # that names nothing.  Anything with __index__ is an int, as for
    # os.pread.
    try:
        return PyNumber_Index(value)
    except TypeError:
        raise TypeError(f"{word}() argument '{name}' must be an integer, "
                        f"not {type(value).__name__}") from None


cdef double _seconds(object seconds, str word) except -1.0:
    """Validates a number of seconds (>= 0, not NaN) for the word named."""
    cdef double s
    try:
        s = seconds
    except TypeError:
        raise TypeError(f"{word}() needs a number of seconds, "
                        f"got {type(seconds).__name__}") from None
    if isnan(s):
        raise ValueError(f"{word}() got NaN seconds")
    if s < 0:
        raise ValueError(f"{word}() needs seconds >= 0, got {seconds!r}")
    return s


cdef int64_t _to_ns(object seconds, str word) except -1:
    """Validates a duration in seconds and converts it to nanoseconds."""
    cdef double s = _seconds(seconds, word)
    if s >= 4e9:            # ~126 years: treat as forever
        return NS_FOREVER
    return <int64_t>llround(s * 1e9)


cdef int64_t _time_ns(object seconds, str word, bint saturate) except -1:
    """Converts a point or stretch of clock time to nanoseconds, exactly
    (no "forever" rounding as in _to_ns).  Past TIME_MAX_NS it saturates,
    or raises OverflowError."""
    cdef double s = _seconds(seconds, word)
    if s * 1e9 >= <double>TIME_MAX_NS:
        if saturate:
            return TIME_MAX_NS
        raise OverflowError(f"{word}(): {seconds!r} s is past the clock's "
                            f"range (at most {TIME_MAX_NS / 1e9} s)")
    return <int64_t>llround(s * 1e9)


cdef inline int64_t _deadline(int64_t now, int64_t ns) noexcept:
    # now + ns (ns >= 0), saturating at the end of the clock's range.
    if ns >= TIME_MAX_NS - now:
        return TIME_MAX_NS
    return now + ns


cdef inline int64_t _cap_wait(int64_t t, int64_t left) noexcept:
    # A wait budget t (-1: forever) cut to at most left ns (never below 0).
    if left < 0:
        left = 0
    return left if t < 0 or t > left else t


cdef int64_t _custom_ns(object now) except? -1:
    # A custom clock's now(), in nanoseconds.  Kept well inside the int64
    # range, so that deadline - now cannot overflow.
    cdef double t = now
    if isnan(t) or not (-<double>TIME_MAX_NS < t * 1e9 < <double>TIME_MAX_NS):
        raise OverflowError(f"the clock's now() returned {now!r}, past "
                            f"the range fibers can represent (+-"
                            f"{TIME_MAX_NS / 1e9} s)")
    return <int64_t>llround(t * 1e9)


cdef inline Scheduler _sched():
    cdef void *p = fib__tls_get()
    if p != NULL:
        return <Scheduler>p
    return _make_default()


_tls = threading.local()


class _ThreadEnd:
    # Lives only in the thread's threading.local, so CPython drops it when
    # the thread ends, in that thread.  Dropping the scheduler is not
    # enough: a fiber parked on I/O is referenced by its operation, which
    # the pump holds, and the fiber holds the scheduler -- a cycle through
    # C that the collector cannot see.  Closing the scheduler breaks it:
    # the parked fibers are killed (their finally blocks run) and the pump
    # lets go of every operation.
    __slots__ = ("sched",)

    def __init__(self, sched):
        self.sched = sched

    def __del__(self):
        s = self.sched
        self.sched = None
        try:
            _close_left_behind(s)
        except BaseException as e:
            _log.error("closing the scheduler of an ending thread failed",
                       exc_info=(type(e), e, e.__traceback__))


cdef int _close_left_behind(object s) except -1:
    # A thread's default scheduler whose thread (or interpreter) ends:
    # close it, so that the fibers left parked in it are killed and their
    # finally blocks run -- unless it is closed already, or running (then
    # it is not left behind).
    if s is not None and not (<Scheduler>s)._closed and \
            not (<Scheduler>s)._running:
        s.close()
    return 0


cdef Scheduler _make_default():
    # The threading.local owns the thread's default scheduler, so it dies
    # with the thread (see _ThreadEnd); the C thread-local slot is the fast,
    # borrowed copy.
    s = Scheduler()
    _tls.scheduler = s
    _tls.end = _ThreadEnd(s)
    fib__tls_set(<void *>s)
    return s


def _close_at_exit():
    # Interpreter exit: fibers left parked by the main thread's default
    # scheduler are killed, so their finally blocks run, as close() does.
    _close_left_behind(getattr(_tls, "scheduler", None))


_atexit.register(_close_at_exit)


_main_ident = threading.main_thread().ident


cdef bint _other_threads():
    # Could another Python thread still call in?  Dummy threads are C
    # threads that once ran Python (the blocking pool's, say); they do not
    # hold a scheduler.
    cdef object me = threading.current_thread()
    cdef Py_ssize_t started
    for t in threading.enumerate():
        if t is not me and not isinstance(t, threading._DummyThread):
            return True
    # Threads started with _thread.start_new_thread are not in threading's
    # list (CPython's own test_socket starts its clients so), yet may
    # release a patched lock a fiber waits on: _thread counts every thread
    # it started, this one included when _thread started it.
    # A thread just started counts only once it has run: give it the GIL
    # a few times (this is the path that would end in Deadlock, so the
    # few milliseconds are paid only then).
    for _ in range(10):
        started = _thread_count()
        if me is not threading.main_thread() and \
                not isinstance(me, threading._DummyThread):
            started -= 1
        if started > 0:
            return True
        with nogil:
            usleep(1000)
    return False


cdef object _exc_instance(object exc, str word):
    if isinstance(exc, type) and issubclass(exc, BaseException):
        return exc()
    if isinstance(exc, BaseException):
        return exc
    raise TypeError(f"{word}() needs an exception class or instance, "
                    f"got {type(exc).__name__}")


# --------------------------------------------------------------------------
# WaitQueue
# --------------------------------------------------------------------------

@cython.final
cdef class WaitQueue:
    """Internal: a FIFO of parked fibers with O(1) append, pop and remove."""

    cdef inline void append(self, Fiber f):
        f._wq = self
        f._wq_next = None
        f._wq_prev = self._tail
        if self._tail is None:
            self._head = f
        else:
            self._tail._wq_next = f
        self._tail = f
        self._count += 1

    cdef inline Fiber popleft(self):
        cdef Fiber f = self._head
        if f is not None:
            self.remove(f)
        return f

    cdef inline void remove(self, Fiber f):
        if f._wq is not self:
            return
        if f._wq_prev is None:
            self._head = f._wq_next
        else:
            f._wq_prev._wq_next = f._wq_next
        if f._wq_next is None:
            self._tail = f._wq_prev
        else:
            f._wq_next._wq_prev = f._wq_prev
        f._wq = None
        f._wq_prev = None
        f._wq_next = None
        self._count -= 1

    def __len__(self):
        return self._count


cdef WaitQueue _new_wq(str what, object owner):
    # A WaitQueue labelled for the fiber view: `what` its fibers wait on
    # ("Lock", "Queue.get"), made once with the queue, so that no wait
    # pays for the label.
    cdef WaitQueue q = WaitQueue.__new__(WaitQueue)
    q._what = what
    q._owner = <size_t><PyObject *>owner
    return q


cdef inline str _kind_name(object obj, type base, str name):
    # The class name a primitive's queues are labelled with: a subclass's
    # own (LifoQueue.get), at no cost for the class itself.
    return name if type(obj) is base else type(obj).__name__


# --------------------------------------------------------------------------
# Fiber
# --------------------------------------------------------------------------

@cython.final
@cython.freelist(1024)
cdef class Fiber:
    """A function running cooperatively in the scheduler.

    Created by :func:`spawn`; do not instantiate directly.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("Fiber objects are created by fibers.spawn()")

    @property
    def name(self):
        """The fiber's name; settable.  Defaults to ``Fiber-<n>``."""
        if self._name is None:
            return f"Fiber-{self._id}"
        return self._name

    @name.setter
    def name(self, value):
        self._name = str(value)

    @property
    def state(self):
        """One of ``'ready'``, ``'running'``, ``'suspended'`` or ``'dead'``."""
        return _STATE_NAMES[self._state]

    @property
    def dead(self):
        """True once the fiber's function has returned or raised."""
        return self._state == ST_DEAD

    @property
    def exception(self):
        """The exception the fiber ended with, or None."""
        return self._exception

    @property
    def scheduler(self):
        """The :class:`Scheduler` this fiber belongs to."""
        return self._sched

    def __repr__(self):
        return f"<Fiber {self.name!r} {_STATE_NAMES[self._state]}>"

    cdef object _outcome(self):
        if self._exception is not None:
            if isinstance(self._exception, FiberExit):
                return None
            raise self._exception
        return self._result

    def join(self, timeout=None):
        """Wait for the fiber to finish and return its result.

        Re-raises the exception the fiber ended with (a fiber ended by
        :class:`FiberExit` returns ``None``).  With ``timeout`` seconds,
        raises :class:`Timeout` if the fiber is still running by then.
        Called outside any fiber, it runs the scheduler until done.
        """
        cdef Scheduler s = self._sched
        cdef Fiber me
        cdef Timer t = None
        if self._state == ST_DEAD:
            self._joined = True
            return self._outcome()
        _check_thread(s, "join")
        self._joined = True
        me = s._current
        if me is None:
            return s._drive("join", _join_body, (self, timeout))
        if me is self:
            raise RuntimeError("join(): a fiber cannot join itself")
        if timeout is not None:
            t = s._arm_timeout(me, timeout)
        try:
            s._wait_dead(me, self)
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return self._outcome()

    def kill(self, exc=FiberExit, block=True):
        """Throw ``exc`` (default :class:`FiberExit`) into the fiber.

        The fiber's ``finally`` blocks and context managers run.  A fiber
        that has not started yet is simply never run.  With ``block`` the
        caller waits until the fiber is dead; the exception is not
        re-raised to the caller.  Killing a dead fiber does nothing.
        """
        cdef Scheduler s = self._sched
        cdef Fiber me
        exc = _exc_instance(exc, "kill")
        if self._state == ST_DEAD:
            return
        _check_thread(s, "kill")
        me = s._current
        if me is self:
            raise exc
        self._kill_exc = exc
        if self._glet is None:
            # Never ran: it stays in the ready ring and is skipped there.
            s._finish(self, None, exc)
            return
        s._throw(self, exc)
        if block:
            if me is None:
                s._drive("kill", _kill_wait_body, (self,))
            else:
                s._wait_dead(me, self)

    def resume(self, value=None):
        """Make a suspended fiber ready; its :func:`suspend` returns ``value``.

        Raises RuntimeError if the fiber is not suspended.
        """
        _check_thread(self._sched, "resume")
        if self._state != ST_SUSPENDED:
            raise RuntimeError(f"cannot resume {self!r}: it is "
                               f"{_STATE_NAMES[self._state]}, not suspended")
        self._sched._wake(self, value)


def _join_body(Fiber f, timeout):
    return f.join(timeout)


def _kill_wait_body(Fiber f):
    cdef Scheduler s = f._sched
    s._wait_dead(s._current, f)


cdef inline int _check_thread(Scheduler s, str word) except -1:
    # Everything but call_threadsafe (and what goes through it) belongs to
    # the scheduler's own thread; the check comes before any state changes.
    if s._owner_thread != <long>PyThread_get_thread_ident():
        raise RuntimeError(f"{word}(): this object belongs to a scheduler "
                           f"in another thread; use "
                           f"Scheduler.call_threadsafe() from there")
    return 0


cdef int _check_greenlet(Fiber me) except -1:
    # A blocking word must run on the fiber's own greenlet.  A plain
    # greenlet that a fiber started (as greenlet-based libraries do) is
    # not that greenlet: parking "the fiber" there would later resume the
    # fiber's worker instead, abandoning the inner greenlet mid-call.
    cdef object g = PyGreenlet_GetCurrent()
    if g is not me._glet:
        raise RuntimeError(
            "a blocking fibers call was made from a greenlet that is not a "
            "fiber (one started inside a fiber?); only fibers, or code "
            "outside any fiber, may block")
    return 0


# --------------------------------------------------------------------------
# Timer
# --------------------------------------------------------------------------

@cython.final
@cython.freelist(256)
cdef class Timer:
    """A pending :func:`delay` or :func:`periodic` call.  Cancel it with
    :meth:`cancel`."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Timer objects are created by fibers.delay() "
                        "and fibers.periodic()")

    cdef int _fire(self, int64_t now) except -1:
        cdef Scheduler s = self._sched
        cdef int64_t k
        if self._node.kind == TK_THROW:
            f = self._fiber
            self._fiber = None
            if f is not None:
                s._throw(f, self._exc)
            return 0
        self.fired += 1
        if self._interval > 0:
            # Deadlines stay on the start + k*interval grid, so the schedule
            # never drifts; ticks missed while we were late are skipped.  A
            # next tick past the end of time never comes: the timer ends
            # (saturated there, it would fire at every tick).
            k = (now - self._start) // self._interval + 1
            if k <= (TIME_MAX_NS - self._start) // self._interval:
                s._arm(&self._node, self, self._start + k * self._interval)
        s._spawn(self._fn, self._args, None)
        return 0

    cdef bint _disarm(self):
        if fib__heap_remove(&self._sched._timers, &self._node):
            Py_DECREF(self)
            return True
        return False

    def cancel(self):
        """Stop the timer.  Returns True if it was still pending.

        A cancelled timer never runs again, and it leaves the scheduler's
        timer heap at once.
        """
        _check_thread(self._sched, "cancel")
        self._fiber = None
        return self._disarm()

    @property
    def active(self):
        """True while the timer is armed."""
        return fib__timer_armed(&self._node)

    @property
    def deadline(self):
        """When the timer fires next, in seconds on the scheduler's clock,
        or None when it is not armed."""
        if not fib__timer_armed(&self._node):
            return None
        return self._node.deadline / 1e9

    @property
    def interval(self):
        """The period in seconds for :func:`periodic`, else None."""
        return self._interval / 1e9 if self._interval else None

    def __repr__(self):
        state = "active" if fib__timer_armed(&self._node) else "inactive"
        return f"<Timer {self._fn!r} {state} fired={self.fired}>"


cdef Timer _new_timer(Scheduler s, int kind):
    cdef Timer t = Timer.__new__(Timer)
    t._sched = s
    fib__timer_node_init(&t._node, kind, <void *>t)
    return t


# --------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------

@cython.final
cdef class Trigger:
    """A pending :func:`when`, :func:`whenever` or :func:`wait_for`.

    (Named ``Condition`` before :mod:`fibers.sync` brought the
    threading-style :class:`fibers.Condition`.)

    Its predicate is checked once per tick until it is cancelled (or, for
    ``when``, until it fires)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Trigger objects are created by fibers.when() "
                        "and fibers.whenever()")

    def cancel(self):
        """Stop checking the predicate.  Returns True if it was active."""
        _check_thread(self._sched, "cancel")
        was = self._active
        self._active = False
        return was

    @property
    def active(self):
        return self._active

    def __repr__(self):
        kind = ("wait_for", "when", "whenever")[self._kind]
        return f"<Trigger {kind} {self._pred!r} active={self._active}>"


cdef Trigger _new_condition(Scheduler s, int kind, pred, fn, Fiber fiber):
    if not PyCallable_Check(pred):
        raise TypeError(f"the predicate must be callable, got "
                        f"{type(pred).__name__}")
    # when() and whenever() spawn fn from the conditions step: a bad one
    # must be refused here, at the caller, not there.
    if kind != CK_WAIT_FOR and not PyCallable_Check(fn):
        raise TypeError(f"the function must be callable, got "
                        f"{type(fn).__name__}")
    cdef Trigger c = Trigger.__new__(Trigger)
    c._sched = s
    c._kind = kind
    c._pred = pred
    c._fn = fn
    c._fiber = fiber
    c._active = True
    s._conds.append(c)
    return c


# --------------------------------------------------------------------------
# Clocks
# --------------------------------------------------------------------------

@cython.final
cdef class VirtualClock:
    """A clock for tests: time moves only when told to.

    ``advance(seconds)`` moves it forward.  With ``autojump=True`` the
    scheduler also jumps it straight to the next timer deadline whenever no
    fiber is ready, so a test that sleeps for an hour finishes at once and
    the order of events is exactly what the deadlines say.

    Real I/O does not run on virtual time.  When fibers wait for I/O and
    nothing is ready, an autojumping clock first waits up to ``io_grace``
    seconds of *real* time for a completion, and only then jumps.  On
    loopback, data written by another fiber is already in the kernel, so
    the grace is only paid when nothing is going to arrive (a timeout test).

    Time ends at :attr:`MAX_TIME` (2**62 ns, about 146 years): a ``start``
    past it raises OverflowError, ``advance()`` stops there, and deadlines
    past it (a long timeout, say) fall on it.  ``sleep(math.inf)`` is not
    a deadline: it sleeps for good (see :func:`sleep`).
    """

    MAX_TIME = TIME_MAX_NS / 1e9

    def __init__(self, start=0.0, autojump=False, io_grace=0.05):
        self._ns = _time_ns(start, "VirtualClock", False)
        self.autojump = autojump
        self._io_grace_ns = _to_ns(io_grace, "VirtualClock")

    @property
    def io_grace(self):
        """Real seconds to wait for I/O before an autojump."""
        return self._io_grace_ns / 1e9

    def now(self):
        """The current virtual time, in seconds."""
        return self._ns / 1e9

    def advance(self, seconds):
        """Move the clock forward by ``seconds`` (>= 0), but no further
        than :attr:`MAX_TIME`, where it stops."""
        self._ns = _deadline(self._ns, _time_ns(seconds, "advance", True))

    def __repr__(self):
        return f"<VirtualClock now={self._ns / 1e9!r} autojump={self.autojump}>"


# --------------------------------------------------------------------------
# Quantum steps
# --------------------------------------------------------------------------

@cython.final
cdef class _BuiltinStep:
    cdef Scheduler _sched
    cdef int _which

    def __call__(self):
        self._sched._run_builtin(self._which)

    def __repr__(self):
        return f"<quantum step {('io', 'time', 'conditions')[self._which]!r}>"


cdef _BuiltinStep _builtin(Scheduler s, int which):
    cdef _BuiltinStep b = _BuiltinStep.__new__(_BuiltinStep)
    b._sched = s
    b._which = which
    return b


# --------------------------------------------------------------------------
# Scheduler
# --------------------------------------------------------------------------

@cython.no_gc_clear
cdef class Scheduler:
    """A cooperative scheduler for fibers, owned by one OS thread.

    Each thread has a default scheduler (:meth:`current`); the module-level
    words (:func:`spawn`, :func:`sleep`, ...) act on it.  Create one
    explicitly to choose its clock::

        sched = Scheduler(clock=VirtualClock(autojump=True))
        sched.run(main)

    ``pool_size`` bounds how many idle worker greenlets are kept for reuse.

    ``backend`` picks the completion pump: ``'io_uring'``, ``'epoll'``, or
    None for the ``FIBERS_BACKEND`` environment variable, else io_uring
    when this kernel can run it, else epoll (see :func:`backends`).
    Asking for io_uring where it cannot run raises RuntimeError.
    """

    def __cinit__(self):
        if fib__ring_init(&self._ready, 256) < 0:
            raise MemoryError()
        fib__heap_init(&self._timers)
        fib__mon_register(&self._mon, PyThread_get_thread_ident(),
                          <void *>self)

    def __init__(self, clock=None, *, pool_size=1024, backend=None):
        pool_size = _int_arg(pool_size, "Scheduler", "pool_size")
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self._io = _new_pump(backend)
        self._pool_max = pool_size
        self._pool = []
        self._ts_calls = _collections.deque()
        self._live = set()
        self._signals = {}
        self._conds = []
        # Conditions come before the wait: a predicate made true by this
        # tick's fibers must be seen before any time passes (and before a
        # virtual clock jumps to the next deadline).
        self._steps = [_builtin(self, STEP_CONDITIONS), _builtin(self, STEP_IO),
                       _builtin(self, STEP_TIME)]
        self._custom_steps = (type(self).quantum_steps
                              is not Scheduler.quantum_steps)
        self._owner_thread = <long>PyThread_get_thread_ident()
        if clock is None:
            self._clock_kind = CLOCK_MONOTONIC
        elif isinstance(clock, VirtualClock):
            self._clock_kind = CLOCK_VIRTUAL
            self._vclock = clock
        elif callable(getattr(clock, "now", None)):
            self._clock_kind = CLOCK_CUSTOM
        else:
            raise TypeError("clock must be None, a VirtualClock, or an "
                            "object with a now() method returning seconds")
        self._clock = clock
        # Read once now, so that a clock out of range is refused here.
        self._now_ns()
        if _debug_on:
            _debug_state(self)

    def __dealloc__(self):
        cdef void *p
        cdef fib__timer_node *n
        fib__mon_unregister(&self._mon)
        if fib__tls_get() == <void *>self:
            fib__tls_set(NULL)
        while self._ready.count:
            p = fib__ring_pop(&self._ready)
            Py_DECREF(<object>p)
        fib__ring_destroy(&self._ready)
        while self._timers.len:
            n = fib__heap_pop(&self._timers)
            Py_DECREF(<object>n.owner)
        fib__heap_destroy(&self._timers)
        if self._sink != NULL:
            # Jobs still running hold their own references to the sink.
            fib__sink_release(self._sink)
            self._sink = NULL

    # ---- clock ----------------------------------------------------------

    cdef int64_t _now_ns(self) except? -1:
        if self._clock_kind == CLOCK_MONOTONIC:
            return fib__monotonic_ns()
        if self._clock_kind == CLOCK_VIRTUAL:
            return self._vclock._ns
        return _custom_ns(self._clock.now())

    def now(self):
        """The scheduler's clock, in seconds (monotonic unless a clock was
        given)."""
        return self._now_ns() / 1e9

    @property
    def clock(self):
        """The clock given to the constructor, or None for the monotonic
        clock."""
        return self._clock

    cdef int _arm(self, fib__timer_node *n, object owner,
                  int64_t deadline) except -1:
        # The heap holds a reference to the node's owner while it is armed;
        # whoever disarms it (pop or remove) gives that reference back.
        if fib__heap_push(&self._timers, n, deadline) < 0:
            raise MemoryError()
        Py_INCREF(owner)
        return 0

    # ---- the ready ring --------------------------------------------------

    cdef inline int _push(self, Fiber f) except -1:
        if fib__ring_push(&self._ready, <void *>f) < 0:
            raise MemoryError()
        Py_INCREF(f)
        return 0

    cdef inline Fiber _pop_runnable(self):
        # Pops within this tick's snapshot, skipping fibers killed before
        # they ever ran (they stay in the ring until their turn comes).
        cdef void *p
        cdef Fiber f
        while self._remaining > 0:
            self._remaining -= 1
            p = fib__ring_pop(&self._ready)
            f = <Fiber>p
            Py_DECREF(f)
            if f._state != ST_DEAD:
                return f
        return None

    # ---- switching -------------------------------------------------------

    cdef int _bind(self, Fiber f) except -1:
        if self._pool:
            f._glet = self._pool.pop()
            self._workers_reused += 1
        else:
            f._glet = PyGreenlet_New(self._worker_main, self._hub)
            self._workers_created += 1
        return 0

    cdef inline int _enter_fiber(self, Fiber f) except -1:
        # f is bound to a worker greenlet: make it the running fiber.
        if _debug_on:
            _debug_switch(self, f)
        self._current = f
        f._state = ST_RUNNING
        return fib__switch_to(<PyObject *>f._glet)

    cdef inline int _to_hub(self) except -1:
        if _debug_on:
            _debug_switch(self, None)
        self._current = None
        return fib__switch_to(<PyObject *>self._hub)

    cdef int _switch_away(self, Fiber me) except -1:
        cdef Fiber nxt
        if me is not None and not me._registered:
            # Only fibers that leave their greenlet need to be findable by
            # close(); the ones that run straight through never register.
            self._live.add(me)
            me._registered = True
        nxt = self._pop_runnable()
        if nxt is None:
            return self._to_hub()
        if nxt._glet is None:
            if not self._pool:
                # A brand-new greenlet inherits the Python recursion depth
                # of whoever starts it, so starting one here would nest it
                # inside this fiber; a chain of such starts ends in
                # RecursionError.  The hub sits at a fixed depth: it starts
                # the fiber instead.
                self._start_next = nxt
                return self._to_hub()
            self._bind(nxt)
        return self._enter_fiber(nxt)

    cdef object _park(self, Fiber me):
        cdef object exc = me._exc
        _check_greenlet(me)
        if exc is not None:
            # A checkpoint with an exception already pending never parks.
            me._exc = None
            raise exc
        me._state = ST_SUSPENDED
        self._switch_away(me)
        # Whoever switched to us set _current and _state already.
        exc = me._exc
        if exc is not None and me._wake != WAKE_VALUE:
            me._exc = None
            me._value = None
            raise exc
        value = me._value
        me._value = None
        return value

    cdef int _yield(self, Fiber me) except -1:
        cdef object exc = me._exc
        _check_greenlet(me)
        if exc is None:
            me._state = ST_READY
            me._wake = WAKE_YIELD
            self._push(me)
            self._switch_away(me)
            exc = me._exc
            if exc is None:
                return 0
        me._exc = None
        raise exc

    cdef inline int _unpark(self, Fiber f, object value, int why) except -1:
        # A fiber leaves whatever queue it waited in the moment it is made
        # ready, so queues only ever hold parked fibers and no waker can
        # push the same fiber twice.
        if f._wq is not None:
            f._wq.remove(f)
        f._value = value
        f._wake = why
        f._state = ST_READY
        return self._push(f)

    cdef int _wake(self, Fiber f, object value) except -1:
        if f._state != ST_SUSPENDED:
            return 0
        return self._unpark(f, value, WAKE_VALUE)

    cdef int _throw(self, Fiber f, object exc) except -1:
        if f._state == ST_DEAD:
            return 0
        if f._exc is not None and f._exc is not exc:
            # A fiber holds one pending exception; the one replaced is
            # remembered, for its timeout scope (TimeoutScope.__exit__).
            if f._dropped is None:
                f._dropped = [f._exc]
            elif len(f._dropped) < 8:
                f._dropped.append(f._exc)
        f._exc = exc
        if f._state == ST_SUSPENDED:
            self._unpark(f, None, WAKE_EXC)
        return 0

    # ---- fibers ----------------------------------------------------------

    cdef Fiber _spawn(self, object fn, tuple args, dict kwargs):
        if not PyCallable_Check(fn):
            raise TypeError(f"spawn() needs a callable, got "
                            f"{type(fn).__name__}")
        if self._closed:
            raise RuntimeError("spawn(): the scheduler is closed")
        cdef Fiber f = Fiber.__new__(Fiber)
        f._sched = self
        f._func = fn
        f._args = args
        if kwargs:
            f._kwargs = kwargs
        self._spawned += 1
        f._id = self._spawned
        f._born_ns = _birth_ns(self)
        if _debug_on:
            _debug_spawned(self, f)
        self._push(f)
        return f

    def spawn(self, fn, *args, **kwargs):
        """Start ``fn(*args, **kwargs)`` as a new fiber of this scheduler.

        The fiber is queued and runs at the scheduler's next tick.
        Raises TypeError at once if ``fn`` is not callable."""
        _check_thread(self, "spawn")
        return self._spawn(fn, args, kwargs)

    def _worker_main(self):
        # The body of every worker greenlet: run fibers until the pool is
        # full when we come back to it (we then return, and the greenlet
        # ends), or until close() drops the pool (GreenletExit arrives at
        # the idle switch below).
        cdef Fiber f
        cdef Fiber nxt
        # Borrowed on purpose: a strong reference held on our own stack
        # would keep this greenlet alive forever, so a worker dropped from
        # the pool could never be collected.  The pool list and the bound
        # fiber's _glet are the owners.
        cdef PyObject *me
        g = PyGreenlet_GetCurrent()
        me = <PyObject *>g
        g = None
        # Before any Python frame runs here: a small root chunk for this
        # greenlet's frames instead of a fresh 16 KiB mmap (fib_stack.h).
        fib__stack_seed()
        while True:
            f = self._current
            self._run_body(f)
            f = None
            nxt = self._pop_runnable()
            if nxt is not None and nxt._glet is None:
                # Never-run fiber next in line: run it on this greenlet.
                nxt._glet = <greenlet>me
                self._workers_reused += 1
                if _debug_on:
                    _debug_switch(self, nxt)
                self._current = nxt
                nxt._state = ST_RUNNING
                continue
            if len(self._pool) >= self._pool_max:
                # Pool full: this worker ends by returning, the cheap way
                # for a greenlet to die (no GreenletExit thrown in).  Its
                # parent must be the hub of this run; the hub then starts
                # `nxt`, if any, from its _start_next slot.
                self._start_next = nxt
                if _debug_on:
                    _debug_switch(self, None)
                self._current = None
                if PyGreenlet_SetParent(<greenlet>me, self._hub) < 0:
                    raise RuntimeError("cannot re-parent a worker greenlet")
                return None
            self._pool.append(<object>me)
            if nxt is None:
                self._to_hub()
            else:
                self._enter_fiber(nxt)
            nxt = None
            # Resumed: someone bound us to the fiber now in _current.

    cdef int _run_body(self, Fiber f) except -1:
        try:
            if f._kwargs is None:
                result = f._func(*f._args)
            else:
                result = f._func(*f._args, **f._kwargs)
        except BaseException as e:
            self._finish(f, None, e)
            if isinstance(e, _GreenletExit):
                # Our greenlet is being collected: let it end.
                raise
            return 0
        self._finish(f, result, None)
        return 0

    cdef int _finish(self, Fiber f, object result, object exc) except -1:
        cdef WaitQueue q = f._joiners
        cdef Fiber w
        f._state = ST_DEAD
        f._result = result
        f._exception = exc
        f._func = None
        f._args = None
        f._kwargs = None
        f._exc = None
        f._dropped = None
        f._value = None
        f._wq_item = None
        f._glet = None
        if f._registered and self._live is not None:
            self._live.discard(f)
            f._registered = False
        if q is not None:
            f._joiners = None
            while q._count:
                w = q.popleft()
                if w._state == ST_SUSPENDED:
                    self._wake(w, None)
        if f._owner is not None:
            f._owner._child_done(f, exc)
            f._owner = None
        if exc is not None and not f._joined:
            if isinstance(exc, FiberExit) or exc is f._kill_exc:
                pass
            elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
                # Not ours to swallow: the loop re-raises it to run()'s caller.
                self._system_error = exc
            elif not isinstance(exc, _GreenletExit):
                if self._on_fiber_error is None:
                    _log_uncaught(self, f, exc)
                else:
                    self._report_fiber_error(f, exc)
        if self._debug is not None:
            _debug_ended(self, f)
        return 0

    cdef int _report_fiber_error(self, Fiber f, object exc) except -1:
        # We are on the dead fiber's worker greenlet (or in close()), in
        # the middle of its bookkeeping: whatever the handler raises is
        # logged, never let out into the worker loop.
        try:
            self._on_fiber_error(f, exc)
        except BaseException as e:
            _log.error("on_fiber_error handler %r raised while reporting "
                       "%r", self._on_fiber_error, f,
                       exc_info=(type(e), e, e.__traceback__))
            _log_uncaught(self, f, exc)
        return 0

    # ---- waiting ---------------------------------------------------------

    cdef int _sleep(self, Fiber me, int64_t ns) except -1:
        if ns == 0:
            return self._yield(me)
        if ns == NS_FOREVER:
            # No timer: one at the end of the clock's range would fire
            # there (a VirtualClock jumps to it), and would keep _quiet from
            # seeing a deadlock.  The fiber waits as in suspend(): until it
            # is killed, or resumed.
            me._wq_item = _FOREVER
            try:
                self._park(me)
            finally:
                me._wq_item = None
            return 0
        fib__timer_node_init(&me._sleep_node, TK_SLEEP, <void *>me)
        self._arm(&me._sleep_node, me, _deadline(self._now_ns(), ns))
        try:
            self._park(me)
        finally:
            if fib__heap_remove(&self._timers, &me._sleep_node):
                Py_DECREF(me)
        return 0

    cdef Timer _arm_timeout(self, Fiber me, object seconds):
        cdef int64_t ns = _to_ns(seconds, "timeout")
        return self._arm_exc(me, ns, Timeout(f"timed out after {seconds} s"))

    cdef Timer _arm_exc(self, Fiber me, int64_t ns, object exc):
        # A timeout that throws `exc` (say, the socket layer's "timed out").
        cdef Timer t = _new_timer(self, TK_THROW)
        t._fiber = me
        t._exc = exc
        self._arm(&t._node, t, _deadline(self._now_ns(), ns))
        return t

    cdef int _disarm_timeout(self, Fiber me, Timer t) except -1:
        t._disarm()
        t._fiber = None
        if me._exc is t._exc:
            # Fired after the wait had already been satisfied: not ours to
            # raise any more.
            me._exc = None
        return 0

    cdef object _wait_in(self, Fiber me, WaitQueue q):
        q.append(me)
        try:
            return self._park(me)
        finally:
            q.remove(me)

    cdef object _wait_signal(self, Fiber me, object name):
        cdef WaitQueue q = self._signals.get(name)
        if q is None:
            q = _new_wq("signal", None)
            self._signals[name] = q
        try:
            return self._wait_in(me, q)
        finally:
            if q._count == 0 and self._signals.get(name) is q:
                del self._signals[name]

    cdef int _wait_dead(self, Fiber me, Fiber target) except -1:
        while target._state != ST_DEAD:
            if target._joiners is None:
                target._joiners = _new_wq("join", target)
            self._wait_in(me, target._joiners)
        return 0

    cdef int _wait_for(self, Fiber me, object pred) except -1:
        cdef Trigger c
        if pred():
            return 0
        c = _new_condition(self, CK_WAIT_FOR, pred, None, me)
        try:
            while c._active:
                self._park(me)
        finally:
            c._active = False
        return 0

    def signal_all(self, name, value=None):
        """Wake every fiber waiting on signal ``name``; see
        :func:`signal_all`.

        From another thread the call goes through :meth:`call_threadsafe`
        and returns None: how many fibers it wakes is known only when the
        scheduler runs it."""
        cdef WaitQueue q
        cdef Fiber f
        cdef Py_ssize_t n = 0
        if self._owner_thread != <long>PyThread_get_thread_ident():
            hash(name)
            self.call_threadsafe(self.signal_all, name, value)
            return None
        q = self._signals.pop(name, None)
        if q is None:
            return 0
        while q._count:
            f = q.popleft()
            self._wake(f, value)
            n += 1
        return n

    def signal_one(self, name, value=None):
        """Wake the oldest fiber waiting on signal ``name``; see
        :func:`signal_one`.

        From another thread the call goes through :meth:`call_threadsafe`
        and returns None."""
        cdef WaitQueue q
        if self._owner_thread != <long>PyThread_get_thread_ident():
            hash(name)
            self.call_threadsafe(self.signal_one, name, value)
            return None
        q = self._signals.get(name)
        if q is None or q._count == 0:
            return False
        self._wake(q.popleft(), value)
        if q._count == 0:
            del self._signals[name]
        return True

    # ---- the tick --------------------------------------------------------

    cdef int _run_ready(self) except -1:
        cdef Fiber f
        self._remaining = self._ready.count
        while True:
            f = self._start_next
            if f is not None:
                self._start_next = None
            else:
                f = self._pop_runnable()
                if f is None:
                    break
            if f._glet is None:
                self._bind(f)
            self._enter_fiber(f)
        self._current = None
        return 0

    cdef Py_ssize_t _io_inflight(self):
        # Operations in flight that someone waits for: the pump's count,
        # which leaves out its waker's wait.  Past close()'s bound for the
        # pool, the calls still out are abandoned, and their wait is no
        # longer work either.
        cdef Py_ssize_t n = self._io.waiting()
        if self._pool_deadline and self._sink_op is not None and \
                fib__monotonic_ns() >= self._pool_deadline:
            n -= 1
        return n

    cdef inline bint _io_pending(self):
        return self._io_inflight() > 0

    cdef int64_t _wait_budget(self, bint *jump) except? -2:
        # The one place that decides how long this tick's io step may wait:
        # -1 without limit, 0 not at all, else nanoseconds.  *jump is set
        # when an autojumping VirtualClock should move to the next deadline
        # if the wait brings nothing.
        cdef fib__timer_node *n
        cdef int64_t t
        cdef bint io
        jump[0] = False
        if self._ready.count or not self._may_block or self._stopping or \
                self._ts_pending or self._system_error is not None or \
                (self._target is not None and
                 self._target._state == ST_DEAD):
            # Work to do, a Ctrl-C to deliver, or the caller of run() (or
            # of a blocking word) has what it came for: it must not wait
            # on anyone else's.
            return 0
        n = fib__heap_peek(&self._timers)
        io = self._io_pending()
        if self._clock_kind == CLOCK_VIRTUAL:
            # Virtual time never passes by waiting.  Real I/O does not run
            # on it: give I/O a real grace period, then let the clock jump
            # (see VirtualClock).
            if n != NULL:
                jump[0] = self._vclock.autojump
                return self._vclock._io_grace_ns if io else 0
            if self._conds:
                return self._vclock._io_grace_ns if io else COND_POLL_NS
            if io or self._os_waits:
                return -1
            return THREAD_POLL_NS if self._idle_wait else 0
        if n != NULL:
            t = n.deadline - self._now_ns()
            if t < 0:
                t = 0
        else:
            t = -1
        if self._conds and (t < 0 or t > COND_POLL_NS):
            t = COND_POLL_NS
        if t < 0 and not io and not self._os_waits:
            # Nothing to wait for: added steps with pending() work poll;
            # waiting for other threads looks again now and then, in case
            # they ended without calling in (then it is a Deadlock).
            t = THREAD_POLL_NS if self._idle_wait else 0
        return t

    cdef int _step_io(self) except -1:
        # The tick's wait: for I/O completions, the next timer, or a wake
        # from another thread or an OS signal (the pump's waker), however
        # long the budget allows; the pump hands each completion to its
        # owner.  Then the calls other threads queued.
        cdef fib__timer_node *n
        cdef bint jump
        cdef int64_t t = self._wait_budget(&jump)
        cdef int rc = 0
        if self._pool_deadline and self._sink_op is not None:
            # close(): no wait for the pool goes past its bound.
            t = _cap_wait(t, self._pool_deadline - fib__monotonic_ns())
        # With fibers ready (t == 0) the pump is called only for real work:
        # the waker's own wait needs no poll, since calls from other
        # threads are seen through _ts_pending.
        if t != 0 or self._io_pending() or self._io.c.unflushed:
            rc = self._io.tick(self, t, jump)
        if self._ts_pending:
            self._run_threadsafe()
        if jump and rc == 0:
            n = fib__heap_peek(&self._timers)
            if n != NULL and n.deadline > self._vclock._ns:
                self._vclock._ns = n.deadline
        return 0

    # ---- other threads ---------------------------------------------------

    cdef int _run_threadsafe(self) except -1:
        # Each call queued by another thread runs in a fiber of its own.
        # Only those queued before now: one queued meanwhile waits a tick.
        cdef Py_ssize_t i
        cdef object q = self._ts_calls
        self._ts_pending = False
        for i in range(len(q)):
            fn, args = q.popleft()
            self._spawn(fn, args, None)
        return 0

    def call_threadsafe(self, fn, *args):
        """Run ``fn(*args)`` in a new fiber of this scheduler, from any
        thread.

        The one entry point that other OS threads may use.  The call is
        queued and the scheduler's wait is woken at once; ``fn`` runs in
        the scheduler's own thread at its next tick, as a fiber (so it may
        block).  Its exceptions are logged like any fiber's.  If the
        scheduler is not running, the call runs when it next runs.
        Raises RuntimeError if the scheduler is closed.
        """
        if not PyCallable_Check(fn):
            raise TypeError(f"call_threadsafe() needs a callable, got "
                            f"{type(fn).__name__}")
        # No GIL release from here to the poke: close() (which runs in the
        # owner thread, also holding the GIL) cannot slip in between the
        # check and the write to the pipe.
        if self._closed:
            raise RuntimeError("call_threadsafe(): the scheduler is closed")
        self._ts_calls.append((fn, args))
        self._ts_pending = True
        self._io.poke()

    # ---- the completion pump --------------------------------------------

    cdef fib__pump *_get_pump(self) except NULL:
        # The C pump, opened on first I/O (with the pump's wait on the
        # waker: from then on the tick waits there).
        if self._io.is_open:
            return &self._io.c
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        return self._io.open()

    cdef void _forget_fd(self, int fd, bint busy) noexcept:
        # Before fd is closed (or handed on): cancel what waits on it and
        # drop the pump's state for it.  Only from the owning thread: the
        # pump is not thread-safe, and a socket may be collected anywhere.
        # (The owner thread then starts a new socket on that number clean.)
        if self._owner_thread == <long>PyThread_get_thread_ident():
            self._io.forget_fd(fd, busy)

    @property
    def backend(self):
        """The name of this scheduler's completion pump: ``'io_uring'`` or
        ``'epoll'``."""
        return _BACKEND_NAMES[self._io.backend]

    @property
    def on_fiber_error(self):
        """Called as ``handler(fiber, exc)`` when a fiber of this
        scheduler ends with an exception that nobody had joined it for: the
        failures that are otherwise logged as "uncaught exception in
        <Fiber>" on the ``fibers`` logger.  None (the default) logs them.

        It is not called for a fiber that was killed (:class:`FiberExit`,
        or the exception given to :meth:`Fiber.kill`), nor for
        KeyboardInterrupt and SystemExit, which go to the caller of
        :meth:`run`.  The handler runs inside the scheduler as the fiber
        ends, so it must not block; what it raises is logged, with the
        fiber's own exception.  Set it from the scheduler's own thread.
        The pytest plugin (``fibers.pytest_plugin``) uses it to fail the
        test."""
        return self._on_fiber_error

    @on_fiber_error.setter
    def on_fiber_error(self, handler):
        _check_thread(self, "on_fiber_error")
        if handler is not None and not callable(handler):
            raise TypeError(f"on_fiber_error must be callable or None, got "
                            f"{type(handler).__name__}")
        self._on_fiber_error = handler

    def _defers_taskrun(self):
        # For tests: is the pump an io_uring ring set up with DEFER_TASKRUN
        # (see FIBERS_URING_NO_DEFER_TASKRUN)?  Opens the pump.
        return bool(self._get_pump().defer_taskrun)

    cdef int _step_time(self) except -1:
        cdef fib__timer_node *n
        cdef int64_t now
        cdef object owner
        cdef Fiber f
        if self._timers.len == 0:
            return 0
        now = self._now_ns()
        while True:
            n = fib__heap_peek(&self._timers)
            if n == NULL or n.deadline > now:
                break
            fib__heap_pop(&self._timers)
            owner = <object>n.owner
            Py_DECREF(owner)        # the heap's reference; `owner` holds one
            if n.kind == TK_SLEEP:
                f = <Fiber>owner
                if f._state == ST_SUSPENDED:
                    self._wake(f, None)
            else:
                (<Timer>owner)._fire(now)
        return 0

    cdef int _step_conditions(self) except -1:
        cdef list conds = self._conds
        cdef Py_ssize_t n = len(conds)
        cdef Py_ssize_t i
        cdef list keep
        cdef Trigger c
        if n == 0:
            return 0
        keep = []
        for i in range(n):
            c = <Trigger>conds[i]
            if not c._active:
                continue
            # What goes wrong here is the condition's own business: its
            # waiter's (wait_for) or the log's, never the whole run()'s.
            # Its truth value is taken inside the try, since __bool__ can
            # raise too (a numpy array, say).  Only KeyboardInterrupt and
            # SystemExit are for run()'s caller.
            try:
                ok = bool(c._pred())
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                c._active = False
                if c._kind == CK_WAIT_FOR:
                    self._throw(c._fiber, e)
                else:
                    _log.error("predicate %r raised; its condition is "
                               "cancelled", c._pred,
                               exc_info=(type(e), e, e.__traceback__))
                continue
            if not ok:
                keep.append(c)
            elif c._kind == CK_WAIT_FOR:
                c._active = False
                if c._fiber._state == ST_SUSPENDED:
                    self._wake(c._fiber, None)
            elif c._kind == CK_WHEN:
                c._active = False
                self._spawn(c._fn, (), None)
            else:
                self._spawn(c._fn, (), None)
                keep.append(c)
        # Conditions added by predicates during this step come after.
        if len(conds) > n:
            keep.extend(conds[n:])
        self._conds = keep
        return 0

    cdef int _run_builtin(self, int which) except -1:
        if which == STEP_IO:
            return self._step_io()
        if which == STEP_TIME:
            return self._step_time()
        return self._step_conditions()

    cdef int _tick(self) except -1:
        cdef object step
        self._ticks += 1
        fib__tick_begin(&self._tstats, &self._mon)
        self._run_ready()
        if self._custom_steps:
            steps = self.quantum_steps()
        else:
            steps = self._steps
        for step in steps:
            if type(step) is _BuiltinStep and \
                    (<_BuiltinStep>step)._sched is self:
                self._run_builtin((<_BuiltinStep>step)._which)
            else:
                try:
                    step()
                except Exception as e:
                    _log.error("quantum step %r raised", step,
                               exc_info=(type(e), e, e.__traceback__))
        fib__tick_end(&self._tstats)
        return 0

    cdef int _reraise_system_error(self) except -1:
        # A fiber ended with KeyboardInterrupt or SystemExit and nobody
        # joined it: it is the caller of run()/step() who must see it.
        cdef object err = self._system_error
        if err is not None:
            self._system_error = None
            raise err
        return 0

    cdef bint _idle(self) except -1:
        # Nothing can happen any more: no ready fiber, no timer, no active
        # condition, and no added step that says it has work in flight
        # (TINN's add-ons answer tasksArePending(); ours answer pending()).
        cdef Py_ssize_t i
        if self._ready.count or self._timers.len or self._ts_pending:
            return False
        if self._io_pending() or self._os_waits:
            return False
        for c in self._conds:
            if (<Trigger>c)._active:
                return False
        for i in range(N_BUILTIN_STEPS, len(self._steps)):
            pending = getattr(self._steps[i], "pending", None)
            if pending is not None and pending():
                return False
        return True

    cdef int _check_enter(self) except -1:
        if self._owner_thread != <long>PyThread_get_thread_ident():
            raise RuntimeError("a Scheduler can only run in the thread that "
                               "created it; use call_threadsafe() from "
                               "other threads")
        if self._running:
            raise RuntimeError("the scheduler is already running (run() or "
                               "step() called from inside a fiber?)")
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        return 0

    cdef int _enter(self, bint may_block) except -1:
        self._check_enter()
        if not _mon_env_read:
            _monitor_from_env()
        if may_block:
            self._io.open_waker()
        self._hub = PyGreenlet_GetCurrent()
        self._running = True
        self._may_block = may_block
        fib__tls_set(<void *>self)
        if may_block and <long>PyThread_get_thread_ident() == _main_ident:
            # Python runs signal handlers only between bytecodes; a signal
            # that lands just before the tick's wait would wait with it.
            # CPython writes a byte to the wakeup fd from its C handler, so
            # with ours there the wait ends at once.  If someone else (an
            # asyncio loop) owns the wakeup fd, it is left alone.
            try:
                old = _signal.set_wakeup_fd(self._io.wake_w,
                                            warn_on_full_buffer=False)
            except (ValueError, OSError):
                old = None
            if old is not None:
                if old == -1 or old == self._io.wake_w:
                    self._wakeup_fd_set = True
                else:
                    _signal.set_wakeup_fd(old)
        return 0

    cdef void _leave(self, void *prev):
        fib__tick_leave(&self._tstats, &self._mon)
        self._running = False
        self._stopping = False
        self._idle_wait = False
        self._current = None
        self._hub = None
        fib__tls_set(prev)
        if self._wakeup_fd_set:
            self._wakeup_fd_set = False
            try:
                _signal.set_wakeup_fd(-1)
            except (ValueError, OSError):
                pass

    cdef bint _quiet(self, Fiber target) except -1:
        # Before each tick: is there nothing left that could happen?  True
        # ends run() without a main fiber.  With one, a target left waiting
        # for nothing gets Deadlock -- unless another thread may still call
        # in, in which case the tick waits for it (_idle_wait).
        self._idle_wait = False
        if self._ready.count:
            return False            # the common case, kept cheap
        if not self._idle():
            if (not self._conds and self._clock_kind == CLOCK_VIRTUAL
                    and not self._vclock.autojump):
                raise RuntimeError(
                    "every fiber is waiting for a timer, but the "
                    "VirtualClock only moves when advanced; advance it "
                    "or create it with autojump=True")
            return False
        # A signal may have landed since the last wait: its handler may
        # wake someone.
        self._check_signals()
        if not self._idle():
            return False
        if target is None:
            return True
        if target._state == ST_SUSPENDED:
            if _other_threads() or self._ts_pending:
                # Another thread may still call in (call_threadsafe), or
                # did while _other_threads gave it the GIL: wait for it,
                # as asyncio would, rather than call it a deadlock.
                self._idle_wait = True
            else:
                self._throw(target, Deadlock(
                    f"{target!r} is waiting for something that can never "
                    f"happen: no fiber is ready, no timer or condition is "
                    f"pending, and no other thread could call in"))
        return False

    cdef int _deliver(self, Fiber target, object exc) except -1:
        # KeyboardInterrupt or SystemExit raised outside the fiber that
        # run() waits for (in the hub's wait, or in another fiber): it goes
        # into that fiber at its current wait, so its finally and with
        # blocks run, and run() re-raises it once the fiber is done.
        self._delivered = exc
        return self._throw(target, exc)

    cdef int _check_signals(self) except -1:
        # The hub's PyErr_CheckSignals, after a wait (the pump's step, the
        # waker's wait) and before deciding the run is over (_quiet).
        # Python runs a signal's handler in the main thread, and what it
        # raises comes out of whatever that thread was blocked in (a
        # select(), a recv()).  Here the thread was blocked in the hub's
        # wait on behalf of the fiber run() waits for, so that is where
        # the exception goes: thrown into that fiber at its current wait,
        # as a timeout is, not out of run() past it (a handler's
        # ZeroDivisionError would otherwise end run() with main still
        # parked, and signal.alarm-based tests, the stdlib's included,
        # could never catch it).  KeyboardInterrupt and SystemExit go the
        # same way but are re-raised by run() once the fiber has unwound
        # (_deliver).  With no such fiber (run() without main, step()) the
        # caller of run() is the one blocked, and it gets the exception.
        # (Handlers see the hub's frame: the caller of run().)
        cdef Fiber target
        try:
            PyErr_CheckSignals()
        except BaseException as e:
            target = self._target
            if target is None or target._state == ST_DEAD or \
                    not self._running:
                raise
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                self._deliver(target, e)
            else:
                self._throw(target, e)
        return 0

    cdef object _loop(self, Fiber target):
        cdef void *prev = fib__tls_get()
        self._enter(True)
        self._target = target
        self._delivered = None
        try:
            while True:
                try:
                    self._ticks_until_done(target)
                    break
                except (KeyboardInterrupt, SystemExit) as e:
                    # Raised in the hub: by a signal handler run after the
                    # wait, or by an added step.  (The try is out here, not
                    # around each tick, because setting one up costs.)
                    if target is None or target._state == ST_DEAD:
                        raise
                    self._deliver(target, e)
        finally:
            self._target = None
            self._leave(prev)
        err = self._delivered
        if err is not None:
            # Never lost, even if the fiber caught it or stop() came first.
            self._delivered = None
            raise err
        return None

    cdef int _ticks_until_done(self, Fiber target) except -1:
        cdef object err
        while not self._stopping:
            if target is not None and target._state == ST_DEAD:
                break
            if self._quiet(target):
                break
            self._tick()
            err = self._system_error
            if err is not None:
                self._system_error = None
                if target is None or target._state == ST_DEAD:
                    raise err
                self._deliver(target, err)
        return 0

    cdef object _drive(self, str word, object fn, tuple args):
        # A blocking word called outside any fiber: run it in a helper fiber
        # and drive the scheduler until it is done, as gevent does.
        cdef Fiber f
        if self._running:
            raise RuntimeError(
                f"{word}() cannot block here: it was called from the "
                f"scheduler's own greenlet (a quantum step or a predicate), "
                f"not from a fiber")
        self._check_enter()
        f = self._spawn(fn, args, None)
        f._joined = True
        self._loop(f)
        if f._state != ST_DEAD:
            raise RuntimeError(f"{word}(): the scheduler was stopped before "
                               f"the call completed")
        return f._outcome()

    # ---- public control --------------------------------------------------

    def run(self, main=None, *args):
        """Run the scheduler.

        With ``main``, run ``main(*args)`` as a fiber until it returns, and
        return its result (re-raising what it raised).  Without, run until
        no fiber is ready and no timer or condition is pending.  Returns
        early (None) if :meth:`stop` is called.

        run() returns as soon as ``main`` is done, even if other fibers are
        still waiting (a server, a sleeper): they stay parked and go on at
        the next run(), step() or blocking call, and :meth:`close` (or
        interpreter exit, for a thread's default scheduler) kills them so
        their ``finally`` blocks run.

        Ctrl-C (KeyboardInterrupt) and SystemExit that arrive while
        ``main`` waits are raised inside ``main`` at its current wait, so
        its ``finally`` and ``with`` blocks run; run() re-raises them once
        ``main`` has unwound.
        """
        cdef Fiber f
        if main is None:
            return self._loop(None)
        self._check_enter()
        f = self._spawn(main, args, None)
        f._joined = True
        self._loop(f)
        if f._state != ST_DEAD:
            return None
        return f._outcome()

    def step(self):
        """Run exactly one tick without blocking, then return.

        For driving the scheduler from a foreign loop (a GUI's idle
        callback, say).  Returns True while there is still work pending.
        """
        cdef void *prev = fib__tls_get()
        self._enter(False)
        try:
            self._tick()
            self._reraise_system_error()
        finally:
            self._leave(prev)
        return not self._idle()

    def stop(self):
        """Make :meth:`run` return at the end of the current tick.  Fibers
        that have not finished stay where they are; a later run() resumes
        them.  From another thread, the stop goes through
        :meth:`call_threadsafe` (a scheduler that is not running is left
        alone)."""
        if self._owner_thread != <long>PyThread_get_thread_ident():
            if self._running and not self._closed:
                self.call_threadsafe(self.stop)
            return
        if self._running:
            self._stopping = True

    def close(self):
        """Kill every fiber still alive (their ``finally`` blocks run),
        cancel all timers and conditions, and release the worker pool.
        The scheduler cannot be used afterwards.  Idempotent.

        Calls on the blocking-call pool (:func:`blocking`) are waited for
        at most about a second: one still running then (stuck in the
        kernel, say ``open()`` of a FIFO with no writer) is abandoned, with
        a warning on the ``fibers`` logger; its thread finishes it if it
        ever returns, and the result is dropped."""
        cdef Fiber f
        cdef list queued = []
        cdef void *p
        cdef fib__timer_node *n
        _check_thread(self, "close")
        if self._closed:
            return
        if self._running:
            raise RuntimeError("close() cannot be called while the scheduler "
                               "is running")
        if _debug_on:
            _debug_close(self)
        # Timers and conditions first, so nothing new is spawned.
        while self._timers.len:
            n = fib__heap_pop(&self._timers)
            owner = <object>n.owner
            Py_DECREF(owner)
            # (A TK_SLEEP owner is a sleeping fiber: it is in _live and is
            # killed below.)
            if n.kind != TK_SLEEP:
                (<Timer>owner)._fiber = None
        for c in self._conds:
            (<Trigger>c)._active = False
        self._conds = []
        while self._ready.count:
            p = fib__ring_pop(&self._ready)
            f = <Fiber>p
            Py_DECREF(f)
            queued.append(f)
        for f in queued:
            if f._glet is None and f._state != ST_DEAD:
                f._kill_exc = FiberExit()
                self._finish(f, None, f._kill_exc)
            elif f._state != ST_DEAD:
                self._push(f)
        # Multishot records belong to sockets, not fibers: the loops below
        # would wait for them forever (see _Pump.end_streams).
        self._io.end_streams()
        # A fiber may catch FiberExit and block again; try a few rounds,
        # then leave the stubborn ones to the garbage collector.  Calls
        # still running on the blocking-call pool are waited for up to
        # POOL_CLOSE_GRACE_NS (a killed fiber leaves its call at once, but
        # the call's clean-up -- closing an fd it opened -- comes with its
        # completion), then abandoned (see _io_inflight).
        self._pool_deadline = fib__monotonic_ns() + POOL_CLOSE_GRACE_NS
        for _ in range(3):
            if not self._live:
                break
            for f in list(self._live):
                if f._kill_exc is None:
                    f._kill_exc = FiberExit()
                self._throw(f, f._kill_exc)
            self._loop(None)
        self._closed = True
        if self._jobs:
            _log.warning("close(): abandoned %d call(s) still running on "
                         "the blocking pool (close() waits at most %.1f s "
                         "for them); their threads finish them if they ever "
                         "return, and the results are dropped",
                         self._jobs, POOL_CLOSE_GRACE_NS / 1e9)
        if self._ts_calls:
            _log.warning("close(): %d call(s) queued by other threads were "
                         "dropped", len(self._ts_calls))
            self._ts_calls.clear()
            self._ts_pending = False
        self._io.shutdown(self)
        if self._sink != NULL and self._sink_op is None:
            # The pool's eventfd goes now, not whenever the garbage
            # collector gets to the scheduler (a Scheduler is a reference
            # cycle: its steps point back at it); jobs still running hold
            # their own references to the sink.
            fib__sink_release(self._sink)
            self._sink = NULL
        del self._pool[:]
        self._signals.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @staticmethod
    def current():
        """The calling thread's scheduler: the one running now, or the
        thread's default scheduler."""
        return _sched()

    # ---- quantum steps ---------------------------------------------------

    def add_quantum_step(self, fn):
        """Call ``fn()`` once per tick, after the ready fibers have run and
        after the built-in steps.  Exceptions it raises are logged.

        If ``fn`` has a ``pending()`` method, the scheduler asks it whether
        the step still has work in flight (say, fibers it will wake): while
        it answers true, run() keeps going and reports no Deadlock."""
        _check_thread(self, "add_quantum_step")
        if not callable(fn):
            raise TypeError(f"add_quantum_step() needs a callable, got "
                            f"{type(fn).__name__}")
        self._steps.append(fn)

    def remove_quantum_step(self, fn):
        """Remove a step added by :meth:`add_quantum_step`.  Raises
        ValueError if it is not there; built-in steps cannot be removed."""
        _check_thread(self, "remove_quantum_step")
        for i, step in enumerate(self._steps):
            if step is fn or (type(step) is not _BuiltinStep and step == fn):
                if type(step) is _BuiltinStep:
                    raise ValueError("built-in quantum steps cannot be removed")
                del self._steps[i]
                return
        raise ValueError(f"{fn!r} is not a quantum step of this scheduler")

    def quantum_steps(self):
        """The iterator of steps the run loop calls once per tick.

        The built-in steps come first: ``conditions`` (check predicates),
        ``io`` (wait for the next event: I/O completion or the next timer
        deadline), ``time`` (fire due timers); then the added ones.  A
        subclass may override this to return its own iterator (for
        instance to skip or reorder steps)."""
        return iter(self._steps)

    # ---- introspection ---------------------------------------------------

    @property
    def running(self):
        """True while run() or step() is executing."""
        return self._running

    def fibers(self):
        """Every live fiber (ready, running or suspended), oldest first,
        as :class:`FiberInfo` records: name, state, age, what it waits on
        and its Python stack, taken now.  See docs/debugging.md."""
        return _fibers_of(self)

    @property
    def pending_timers(self):
        """How many timers (sleeps, delays, periodics, timeouts) are armed."""
        return self._timers.len

    def stats(self):
        """Counters, for tests and monitoring.

        ``workers_created`` counts greenlets ever made; ``workers_reused``
        counts fibers that ran on a recycled worker instead.
        ``blocking_jobs`` counts calls this scheduler has on the
        blocking-call pool whose completion has not come back yet
        (including ones whose fiber gave up on them).

        Tick times (a tick's real time, less its wait in the pump, in
        seconds): ``tick_p50``, ``tick_p99`` and ``tick_max`` over the last
        1024 ticks; ``tick_sum`` and ``tick_buckets`` (``(upper bound,
        cumulative count)`` pairs, the last bound ``inf``) over every
        tick.  ``states`` counts live fibers by state (``ready``,
        ``running``, ``suspended``); ``io_pending`` counts I/O operations in
        flight; ``pump_waits`` counts the ticks that waited in the pump;
        ``blocking_threads`` and ``blocking_queue`` are the blocking-call
        pool's threads and queued calls (the process's, shared)."""
        return {
            "ticks": self._ticks,
            "spawned": self._spawned,
            "workers_created": self._workers_created,
            "workers_reused": self._workers_reused,
            "workers_idle": len(self._pool),
            "ready": self._ready.count,
            "timers": self._timers.len,
            "conditions": len(self._conds),
            "signals": len(self._signals),
            "live": len(self._live),
            "fixed_ops": self._io.fixed_ops,
            # operations in the pump that someone waits for
            "io_pending": self._io_inflight(),
            "blocking_jobs": self._jobs,
            # tick times, fibers by state, pump waits, the pool (_monitor.pxi)
            **_tick_stats(self),
        }

    def __repr__(self):
        return (f"<Scheduler ready={self._ready.count} "
                f"timers={self._timers.len} running={self._running}>")


# --------------------------------------------------------------------------
# Timeout scopes
# --------------------------------------------------------------------------

@cython.final
cdef class TimeoutScope:
    """Returned by :func:`timeout` and :func:`move_on_after`."""
    cdef Scheduler _sched
    cdef Fiber _fiber
    cdef Timer _timer
    cdef object _seconds
    cdef bint _swallow
    cdef readonly bint expired

    def __init__(self, *args, **kwargs):
        raise TypeError("use fibers.timeout() or fibers.move_on_after()")

    def __enter__(self):
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        if me is None:
            raise RuntimeError("timeout() must be used inside a fiber")
        if self._fiber is not None:
            raise RuntimeError("a timeout scope cannot be entered twice")
        self._sched = s
        self._fiber = me
        if self._seconds is not None:
            self._timer = s._arm_timeout(me, self._seconds)
        return self

    def __exit__(self, exc_type, exc, tb):
        cdef Timer t = self._timer
        cdef Fiber f = self._fiber
        cdef Py_ssize_t i
        if t is None:
            return False
        self._timer = None
        lost = False
        if f._dropped is not None:
            for i in range(len(f._dropped)):
                if f._dropped[i] is t._exc:
                    del f._dropped[i]
                    lost = True
                    break
        self._sched._disarm_timeout(f, t)
        if exc is not None and exc is t._exc:
            self.expired = True
            return self._swallow
        if lost:
            # Our deadline passed, but a fiber holds one pending exception
            # and another (a scope nested in this one, expiring in the same
            # tick) replaced ours before it was delivered.  The outermost
            # expired scope is the one that acts: an inner scope's Timeout
            # is ours to swallow or pass on, and if the inner scope
            # swallowed it, ours is raised now.
            self.expired = True
            if exc is None:
                if self._swallow:
                    return False
                raise t._exc
            if isinstance(exc, Timeout):
                return self._swallow
        return False


cdef TimeoutScope _scope(object seconds, bint swallow):
    cdef TimeoutScope sc = TimeoutScope.__new__(TimeoutScope)
    if seconds is not None:
        _to_ns(seconds, "timeout")
    sc._seconds = seconds
    sc._swallow = swallow
    return sc


def timeout(seconds):
    """A context manager that raises :class:`Timeout` in this fiber if its
    body takes longer than ``seconds``.  ``None`` means no limit."""
    return _scope(seconds, False)


def move_on_after(seconds):
    """Like :func:`timeout`, but the expiry is swallowed: the body is simply
    abandoned and execution continues after the ``with`` block.  Check the
    scope's ``expired`` attribute to know whether it happened."""
    return _scope(seconds, True)


# --------------------------------------------------------------------------
# The words
# --------------------------------------------------------------------------

def _stack_chunks_in_use():
    """Internal, for tests: small root data-stack chunks now lent to worker
    greenlets (see csrc/fib_stack.h)."""
    return fib__stack_in_use()


def spawn(fn, *args, **kwargs):
    """Start ``fn(*args, **kwargs)`` as a new fiber and return its
    :class:`Fiber`.  It runs at the scheduler's next tick."""
    return _sched()._spawn(fn, args, kwargs)


def yield_now():
    """Let every other ready fiber run, then continue.

    Outside any fiber, runs one tick of the scheduler."""
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    if me is not None:
        s._yield(me)
    elif s._running:
        raise RuntimeError("yield_now() cannot be called from the "
                           "scheduler's own greenlet")
    else:
        s.step()


def in_fiber():
    """True when called from a fiber; False outside any (where blocking
    words drive the scheduler themselves)."""
    return _sched()._current is not None


def _in_fiber():
    """True when a fiber of this thread's scheduler is running; never makes
    a scheduler (fibers.patch asks this on every patched call, in any
    thread, and a thread without fibers must stay without one)."""
    cdef void *p = fib__tls_get()
    return p != NULL and (<Scheduler>p)._current is not None


def current():
    """The :class:`Fiber` that is running.  RuntimeError outside fibers."""
    cdef Fiber me = _sched()._current
    if me is None:
        raise RuntimeError("current() was called outside any fiber")
    return me


def suspend():
    """Park this fiber until someone calls its :meth:`Fiber.resume`, and
    return the value given to resume()."""
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    if me is None:
        raise RuntimeError("suspend() needs a fiber: it was called outside "
                           "any fiber, where nothing could resume it")
    return s._park(me)


def sleep(seconds):
    """Suspend this fiber for ``seconds`` (>= 0).  ``sleep(0)`` is
    :func:`yield_now`.  Outside any fiber, runs the scheduler meanwhile.

    ``sleep(math.inf)`` (or any stretch from about 126 years up) sleeps
    for good: until the fiber is killed or resumed.  No timer is armed,
    so if nothing else can happen the scheduler reports
    :class:`Deadlock`, as for any wait that can never end."""
    cdef Scheduler s = _sched()
    cdef int64_t ns = _to_ns(seconds, "sleep")
    cdef Fiber me = s._current
    if me is None:
        s._drive("sleep", sleep, (seconds,))
        return
    s._sleep(me, ns)


def delay(fn, seconds, *args):
    """Call ``fn(*args)`` in a new fiber after ``seconds``.  Returns a
    :class:`Timer` that can be cancelled."""
    cdef Scheduler s = _sched()
    cdef int64_t ns = _to_ns(seconds, "delay")
    cdef Timer t
    if not PyCallable_Check(fn):
        raise TypeError(f"delay() needs a callable, got {type(fn).__name__}")
    t = _new_timer(s, TK_CALL)
    t._fn = fn
    t._args = args
    s._arm(&t._node, t, _deadline(s._now_ns(), ns))
    return t


def periodic(fn, interval, *args):
    """Call ``fn(*args)`` in a new fiber every ``interval`` seconds (> 0).

    Deadlines are start + k * interval, so the schedule does not drift; if
    the scheduler falls behind, missed ticks are skipped, not bunched.  It
    stops by itself when its next tick would fall past the end of the
    clock's range (:attr:`VirtualClock.MAX_TIME`).
    Returns a :class:`Timer`; cancel it to stop."""
    cdef Scheduler s = _sched()
    cdef int64_t ns = _to_ns(interval, "periodic")
    cdef Timer t
    if ns <= 0:
        raise ValueError("periodic() needs an interval > 0")
    if not PyCallable_Check(fn):
        raise TypeError(f"periodic() needs a callable, got "
                        f"{type(fn).__name__}")
    t = _new_timer(s, TK_CALL)
    t._fn = fn
    t._args = args
    t._interval = ns
    t._start = s._now_ns()
    s._arm(&t._node, t, _deadline(t._start, ns))
    return t


def wait_for(predicate, timeout=None):
    """Block this fiber until ``predicate()`` is true (checked now, then
    once per tick).  Raises :class:`Timeout` after ``timeout`` seconds; if
    the predicate raises, that exception is raised here."""
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef Timer t = None
    if not PyCallable_Check(predicate):
        raise TypeError(f"wait_for() needs a callable predicate, got "
                        f"{type(predicate).__name__}")
    if me is None:
        return s._drive("wait_for", wait_for, (predicate, timeout))
    if timeout is not None:
        t = s._arm_timeout(me, timeout)
    try:
        s._wait_for(me, predicate)
    finally:
        if t is not None:
            s._disarm_timeout(me, t)


def when(predicate, fn):
    """Spawn ``fn()`` once, at the first tick where ``predicate()`` is true.
    Returns a :class:`Trigger`; cancel it to give up."""
    return _new_condition(_sched(), CK_WHEN, predicate, fn, None)


def whenever(predicate, fn):
    """Spawn ``fn()`` at every tick where ``predicate()`` is true, until the
    returned :class:`Trigger` is cancelled."""
    return _new_condition(_sched(), CK_WHENEVER, predicate, fn, None)


def wait_signal(name, timeout=None):
    """Park this fiber until ``name`` is signalled; return the signal's
    value.  Raises :class:`Timeout` after ``timeout`` seconds (the fiber is
    then no longer a waiter).  Signals are not latched: only fibers already
    waiting see a signal."""
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef Timer t = None
    if me is None:
        return s._drive("wait_signal", wait_signal, (name, timeout))
    if timeout is not None:
        t = s._arm_timeout(me, timeout)
    try:
        return s._wait_signal(me, name)
    finally:
        if t is not None:
            s._disarm_timeout(me, t)


def signal_one(name, value=None):
    """Wake the oldest fiber waiting on ``name`` with ``value``.  Returns
    False if nobody was waiting (the signal is then dropped)."""
    return _sched().signal_one(name, value)


def signal_all(name, value=None):
    """Wake every fiber waiting on ``name`` with ``value``; return how
    many.  The woken fibers run at the next tick; the caller keeps
    running."""
    return _sched().signal_all(name, value)


def _on_signal_body(fn, name):
    fn(wait_signal(name))


def on_signal(fn, name):
    """Spawn a fiber that waits for signal ``name`` and then calls
    ``fn(value)`` once.  Returns that fiber."""
    if not PyCallable_Check(fn):
        raise TypeError(f"on_signal() needs a callable, got "
                        f"{type(fn).__name__}")
    try:
        hash(name)
    except TypeError:
        raise TypeError(f"on_signal() needs a hashable signal name, got "
                        f"{type(name).__name__}") from None
    return _sched()._spawn(_on_signal_body, (fn, name), None)


def run(main=None, *args):
    """Run the calling thread's scheduler; see :meth:`Scheduler.run`."""
    return _sched().run(main, *args)


def step():
    """Run one tick of the calling thread's scheduler; see
    :meth:`Scheduler.step`."""
    return _sched().step()


def stop():
    """Stop the calling thread's scheduler; see :meth:`Scheduler.stop`."""
    _sched().stop()


def now():
    """The calling thread's scheduler clock, in seconds."""
    return _sched().now()


# --------------------------------------------------------------------------
# I/O: the pump's Python side, sockets, files, the callback ring
# --------------------------------------------------------------------------

include "_pump.pxi"
include "_stream.pxi"
include "_net.pxi"
include "_file.pxi"
include "_ring.pxi"
include "_blocking.pxi"
include "_ossignal.pxi"
include "_capi.pxi"
include "_sync.pxi"
include "_threadlock.pxi"
include "_group.pxi"
include "_inspect.pxi"
include "_monitor.pxi"
