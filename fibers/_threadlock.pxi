# Thread-safe locks and a SimpleQueue that suspend only the calling fiber:
# what fibers.patch()'s threading and queue parts put in place of
# threading.Lock, threading.RLock and queue.SimpleQueue
# (fibers/_threadpatch.py).  Included by _core.pyx.
#
# Design note
# ===========
#
# Unlike fibers.sync, these objects are shared by threads: a threading.Lock
# made by a library may be taken by a fiber here and a real thread there.
# So each one wraps the stdlib's own object (a real _thread.lock, a real
# _queue.SimpleQueue), which stays the one truth about who holds the lock
# or what is queued:
#
# - Outside a fiber (another thread, before fibers.run, the scheduler's own
#   code, a plain greenlet started inside a fiber) every call is the
#   stdlib's own call on that object: its blocking, its timeouts, its
#   errors, its interruption by signals.
# - Inside a fiber, a try that does not wait (acquire(False), get(False))
#   is the fast path.  Only when it fails does the fiber register a
#   _ThreadWait in the object's _ThreadWaiters and park.
# - Whoever makes progress possible (release, put), from any thread, does
#   the real release or put first and then wakes the first registered
#   fiber: directly when that fiber's scheduler lives on this thread, else
#   through the scheduler's call_threadsafe (its waker ends the pump's
#   wait at once).  A woken fiber *tries again*; it is not handed the lock.
#   A real thread blocked in the stdlib's acquire may take the lock first
#   (the stdlib's locks are not fair either); the fiber then registers
#   anew and parks.
#
# No wake-up is lost, because a fiber registers *before* its last try:
# a release that comes after the registration finds it, and a release that
# came before lets the try succeed.  A fiber that leaves its wait for any
# other reason (kill, timeout, scheduler closed) takes its _ThreadWait out
# if it is still registered, or, if a waker had already taken it out for
# it, passes that wake-up on to the next waiter, so that no waiter is left
# parked while the lock is free.
#
# Thread safety rests on the GIL: each _ThreadWaiters method and each
# "register, try, park" step runs start to end without a call that could
# release the GIL or run Python code (no allocation-triggered finaliser can
# see a half-linked list: links are set before counts change, and the
# objects unlinked stay referenced).  A free-threaded build would need a
# mutex around _ThreadWaiters; fibers builds for the GIL only.

import _thread
import _queue as _stdqueue
import operator as _operator

cdef object _real_allocate_lock = _thread.allocate_lock
cdef object _RealSimpleQueue = _stdqueue.SimpleQueue
cdef object _QEmpty = _stdqueue.Empty
cdef double _TIMEOUT_MAX = _thread.TIMEOUT_MAX

# What _ThreadWaitable._try returns when it could not take what it waits
# for, and what _wait_for returns when its timeout expired.
cdef object _TW_NOT_YET = object()
cdef object _TW_TIMED_OUT = object()


cdef inline Fiber _waiting_fiber():
    # The fiber that may park here: the running fiber of this thread's
    # running scheduler, on its own greenlet.  None means "be the stdlib":
    # no fiber, or a plain greenlet a fiber started (parking "the fiber"
    # there would abandon that greenlet mid-call; see _check_greenlet).
    cdef void *p = fib__tls_get()
    cdef Fiber f
    if p == NULL:
        return None
    f = (<Scheduler>p)._current
    if f is None or f._glet is not PyGreenlet_GetCurrent():
        return None
    return f


cdef inline object _running_fiber():
    # Half of an RLock owner: the fiber running on this thread, or None.
    cdef void *p = fib__tls_get()
    if p == NULL:
        return None
    return (<Scheduler>p)._current


cdef object _acquire_seconds(object blocking, object timeout):
    # threading's acquire(blocking, timeout) as the stdlib reads it: None
    # for no limit, else seconds (0: one try, no wait).  The usual values
    # are checked here; any other is tried on a fresh real lock, whose
    # acquire raises the stdlib's own error for this Python version (the
    # messages differ between 3.10 and 3.13), or accepts it.
    cdef double t
    if (type(blocking) is bool or type(blocking) is int) and \
            (type(timeout) is int or type(timeout) is float):
        t = timeout
        if t == -1:
            return None if blocking else 0
        if blocking and 0 <= t <= _TIMEOUT_MAX:
            return timeout
    probe = _real_allocate_lock()
    probe.acquire(blocking, timeout)        # raises, or takes the probe
    if not blocking:
        return 0
    t = timeout if isinstance(timeout, float) else \
        _operator.index(timeout)
    return None if t == -1 else t


def _wake_from_thread(_ThreadWait w):
    # Run by call_threadsafe in the waiter's own thread: wake the fiber if
    # it is still parked in this very registration.  If it left meanwhile
    # (killed, timed out) it saw `woken` and passed the wake-up on.
    if w.parked:
        w.sched._wake(w.fiber, None)


@cython.final
@cython.freelist(64)
cdef class _ThreadWait:
    """Internal: one fiber's registration on a thread-safe lock or queue."""


@cython.final
cdef class _ThreadWaiters:
    """Internal: the fibers waiting on a thread-safe lock or queue."""

    cdef void add(self, _ThreadWait w):
        w.next = None
        w.prev = self.tail
        if self.tail is None:
            self.head = w
        else:
            self.tail.next = w
        self.tail = w
        w.linked = True
        self.count += 1

    cdef void remove(self, _ThreadWait w):
        if not w.linked:
            return
        if w.prev is None:
            self.head = w.next
        else:
            w.prev.next = w.next
        if w.next is None:
            self.tail = w.prev
        else:
            w.next.prev = w.prev
        w.linked = False
        w.prev = None
        w.next = None
        self.count -= 1

    cdef int wake_one(self) except -1:
        # Any thread: take the first registration out and wake its fiber.
        cdef _ThreadWait w
        cdef Scheduler s
        while self.head is not None:
            w = self.head
            self.remove(w)
            w.woken = True
            s = w.sched
            if s._owner_thread == <long>PyThread_get_thread_ident():
                # Its scheduler lives here: the ready ring is ours to push
                # on.  A fiber not parked any more is on its way out of the
                # wait (killed, timed out) and passes `woken` on itself.
                if w.parked:
                    s._wake(w.fiber, None)
                return 0
            try:
                s.call_threadsafe(_wake_from_thread, w)
            except RuntimeError:
                # Its scheduler is closed: close() killed its fibers, so
                # this one is gone from the wait; wake the next.
                continue
            return 0
        return 0

    cdef void clear(self):
        while self.head is not None:
            self.remove(self.head)


cdef class _ThreadWaitable:
    """Internal: what a fiber waits on here (a lock, a queue)."""

    def __cinit__(self):
        self._waiters = _ThreadWaiters.__new__(_ThreadWaiters)

    cdef object _try(self):
        # Take what we wait for without waiting: the result, or _TW_NOT_YET.
        return _TW_NOT_YET

    cdef object _wait_for(self, Fiber me, object timeout):
        # Park `me` until _try succeeds: returns its result, or
        # _TW_TIMED_OUT when `timeout` seconds (None: no limit) pass first.
        # A kill (or an enclosing fibers.timeout) leaves with its exception.
        cdef Scheduler s = me._sched
        cdef Timer t = None
        cdef _ThreadWait w = None
        cdef _ThreadWaiters q = self._waiters
        if timeout is not None:
            t = s._arm_timeout(me, timeout)
        try:
            while True:
                if w is None or w.woken:
                    # A fresh registration: a late wake-up meant for the old
                    # one (see _wake_from_thread) cannot wake this one.
                    w = _ThreadWait.__new__(_ThreadWait)
                    w.sched = s
                    w.fiber = me
                    q.add(w)
                v = self._try()
                if v is not _TW_NOT_YET:
                    # If a waker took w out meanwhile, its wake-up was for
                    # us, and we used it.
                    q.remove(w)
                    return v
                if w.woken:
                    continue        # released between add and try: again
                w.parked = True
                me._wq_item = self      # for the fiber view (_inspect.pxi)
                try:
                    s._park(me)
                finally:
                    w.parked = False
                    me._wq_item = None
                # Woken (w.woken) or resumed by someone: try again.
        except BaseException as e:
            if w is not None:
                if w.woken:
                    # We were owed a wake-up and leave without using it.
                    q.wake_one()
                else:
                    q.remove(w)
            if t is not None and e is t._exc:
                return _TW_TIMED_OUT
            raise
        finally:
            if t is not None:
                s._disarm_timeout(me, t)

    @property
    def _fiber_waiters(self):
        # For tests and debugging: how many fibers are registered.
        return self._waiters.count


# --------------------------------------------------------------------------
# ThreadLock
# --------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class ThreadLock(_ThreadWaitable):
    """A :class:`threading.Lock` that suspends only the calling fiber.

    What ``fibers.patch()`` puts in ``threading.Lock`` (and
    ``threading._allocate_lock``).  It wraps a real ``_thread.lock``:
    outside a fiber every call is that lock's own.  Inside a fiber a
    contended :meth:`acquire` parks the fiber (other fibers of the thread
    run) until whoever holds it, a fiber or a thread, releases it.
    """

    def __cinit__(self):
        self._lock = _real_allocate_lock()
        self._acquire = self._lock.acquire
        self._release = self._lock.release

    cdef object _try(self):
        return True if self._acquire(False) else _TW_NOT_YET

    cdef object _acquire_in(self, Fiber me, object blocking, object timeout):
        secs = _acquire_seconds(blocking, timeout)
        if self._acquire(False):
            return True
        if secs is not None and secs == 0:
            return False
        return self._wait_for(me, secs) is not _TW_TIMED_OUT

    def acquire(self, blocking=True, timeout=-1):
        """Take the lock; True if taken.  ``blocking`` and ``timeout`` (in
        seconds, -1: no limit) as :meth:`threading.Lock.acquire`, errors
        included.  Inside a fiber the wait suspends only that fiber, and
        its timeout runs on the scheduler's clock."""
        cdef Fiber me = _waiting_fiber()
        if me is None:
            return self._acquire(blocking, timeout)
        return self._acquire_in(me, blocking, timeout)

    cdef int _release_and_wake(self) except -1:
        # The real release first (the stdlib's RuntimeError if unlocked),
        # then the first waiting fiber, if any, tries again.
        self._release()
        if self._waiters.head is not None:
            self._waiters.wake_one()
        return 0

    def release(self):
        """Release the lock; any thread or fiber may.  RuntimeError if it
        is not held."""
        self._release_and_wake()

    def locked(self):
        """True if the lock is held."""
        return self._lock.locked()

    def __enter__(self):
        cdef Fiber me = _waiting_fiber()
        if me is None:
            return self._acquire()
        return self._acquire_in(me, True, -1)

    def __exit__(self, *exc_info):
        self._release_and_wake()

    def _at_fork_reinit(self):
        # In a forked child only the forking thread survives: the fibers
        # registered by others are gone.
        self._lock._at_fork_reinit()
        self._waiters.clear()

    def __repr__(self):
        return (f"<{'locked' if self._lock.locked() else 'unlocked'} "
                f"fibers ThreadLock object at {id(self):#x}>")


# --------------------------------------------------------------------------
# ThreadRLock
# --------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class ThreadRLock:
    """A :class:`threading.RLock` that suspends only the calling fiber.

    What ``fibers.patch()`` puts in ``threading.RLock``.  Its owner is a
    (thread, fiber) pair: two fibers of one thread are two owners (the
    second waits for the first), and code outside any fiber owns it as
    its thread, as the stdlib's does.  The wait is a :class:`ThreadLock`'s.
    """

    def __cinit__(self):
        self._block = ThreadLock.__new__(ThreadLock)

    cdef bint _mine(self):
        return self._count > 0 and \
            self._owner_tid == PyThread_get_thread_ident() and \
            self._owner_fiber is _running_fiber()

    def acquire(self, blocking=True, timeout=-1):
        """Take the lock, again if this (thread, fiber) holds it; True if
        taken.  As :meth:`threading.RLock.acquire`."""
        cdef Fiber me
        _acquire_seconds(blocking, timeout)     # the stdlib checks first
        if self._mine():
            if self._count == <unsigned long>-1:
                raise OverflowError("Internal lock count overflowed")
            self._count += 1
            return True
        me = _waiting_fiber()
        if me is None:
            if not self._block._acquire(blocking, timeout):
                return False
        elif not self._block._acquire_in(me, blocking, timeout):
            return False
        self._owner_tid = PyThread_get_thread_ident()
        self._owner_fiber = _running_fiber()
        self._count = 1
        return True

    def release(self):
        """Release once; the last release frees the lock.  RuntimeError
        unless this (thread, fiber) holds it."""
        if not self._mine():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner_tid = 0
            self._owner_fiber = None
            self._block._release_and_wake()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

    def locked(self):
        """True if some thread or fiber holds the lock."""
        return self._count > 0

    # threading.Condition uses these three when its lock has them.
    def _is_owned(self):
        return self._mine()

    def _release_save(self):
        if self._count == 0:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner_tid, self._owner_fiber)
        self._count = 0
        self._owner_tid = 0
        self._owner_fiber = None
        self._block._release_and_wake()
        return state

    def _acquire_restore(self, state):
        cdef Fiber me = _waiting_fiber()
        if me is None:
            self._block._acquire()
        else:
            self._block._acquire_in(me, True, -1)
        self._count, self._owner_tid, self._owner_fiber = state

    def _recursion_count(self):
        return self._count if self._mine() else 0

    def _at_fork_reinit(self):
        self._block._at_fork_reinit()
        self._count = 0
        self._owner_tid = 0
        self._owner_fiber = None

    def __repr__(self):
        owner = self._owner_tid
        if self._owner_fiber is not None:
            owner = f"{owner}/{self._owner_fiber!r}"
        return (f"<{'locked' if self._count else 'unlocked'} fibers "
                f"ThreadRLock object owner={owner} count={self._count} at "
                f"{id(self):#x}>")


# --------------------------------------------------------------------------
# ThreadSimpleQueue
# --------------------------------------------------------------------------

cdef object _get_seconds(object timeout):
    # SimpleQueue.get(True, timeout)'s timeout in seconds (None: no
    # limit); an unusual value is tried on a real queue holding an item,
    # which raises the stdlib's error or accepts it.
    if timeout is None:
        return None
    # Past TIMEOUT_MAX the stdlib may refuse the value (OverflowError):
    # the probe says.
    if (type(timeout) is int or type(timeout) is float) and \
            0 <= timeout <= _TIMEOUT_MAX:
        return timeout
    probe = _RealSimpleQueue()
    probe.put(None)
    probe.get(True, timeout)
    return timeout if isinstance(timeout, float) else \
        _operator.index(timeout)


@cython.auto_pickle(False)
cdef class ThreadSimpleQueue(_ThreadWaitable):
    """A :class:`queue.SimpleQueue` whose :meth:`get` suspends only the
    calling fiber.

    What ``fibers.patch(queue=True)`` puts in ``queue.SimpleQueue``.  It
    wraps a real ``_queue.SimpleQueue``: outside a fiber every call is
    that queue's own; :meth:`put` never blocks and, as the stdlib's, may
    be called from a finaliser or a signal handler.
    """

    def __cinit__(self):
        self._q = _RealSimpleQueue()

    cdef object _try(self):
        try:
            return self._q.get(False)
        except _QEmpty:
            return _TW_NOT_YET

    def put(self, item, block=True, timeout=None):
        """Put ``item``; never blocks (``block`` and ``timeout`` are
        ignored, as the stdlib's)."""
        self._q.put(item, block, timeout)
        if self._waiters.head is not None:
            self._waiters.wake_one()

    def put_nowait(self, item):
        """Put ``item``; as :meth:`put`."""
        self.put(item)

    def get(self, block=True, timeout=None):
        """Remove and return an item.  As :meth:`queue.SimpleQueue.get`
        (``queue.Empty`` when none comes within ``timeout`` seconds, or at
        once when not ``block``); inside a fiber the wait suspends only
        that fiber, on the scheduler's clock."""
        cdef Fiber me = _waiting_fiber()
        if me is None:
            return self._q.get(block, timeout)
        if not block:
            return self._q.get(False)
        secs = _get_seconds(timeout)
        v = self._try()
        if v is not _TW_NOT_YET:
            return v
        if secs is not None and secs == 0:
            raise _QEmpty
        v = self._wait_for(me, secs)
        if v is _TW_TIMED_OUT:
            raise _QEmpty
        return v

    def get_nowait(self):
        """Remove and return an item if one is there, else raise
        ``queue.Empty``."""
        return self._q.get(False)

    def empty(self):
        """True if the queue is empty (not reliable, as the stdlib's)."""
        return self._q.empty()

    def qsize(self):
        """The number of items queued (not reliable, as the stdlib's)."""
        return self._q.qsize()

    def __repr__(self):
        return (f"<fibers ThreadSimpleQueue object qsize={self._q.qsize()} "
                f"at {id(self):#x}>")
