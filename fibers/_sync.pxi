# fibers.sync: locks, events, conditions, queues and a channel for fibers.
# Included into _core.pyx, so that waiting is the scheduler's own _park on an
# intrusive WaitQueue (no signal dict, no allocation per wait).
#
# Design note
# ===========
#
# Every primitive keeps its waiters in WaitQueues (FIFO, O(1) append, pop
# and remove).  A waker never makes a waiter "try again": it *hands over*
# what the waiter waits for (the lock, a permit, an item, a notification)
# and then makes it ready with the value _HANDOFF.  So:
#
# - Fairness is FIFO: a released lock belongs to the first waiter at once;
#   the releaser, or a fiber that comes along before the waiter runs,
#   cannot take it back.
# - Nothing is lost when a waiter is killed or times out.  _unpark takes a
#   fiber out of its WaitQueue the moment it is made ready, whatever the
#   reason, and a ready fiber cannot be woken again.  So a waiter is either
#   still queued (a waker skips it: it is gone from the queue when the kill
#   or timeout made it ready), or it was handed its due first; then
#   _park returns the value (an exception thrown at a fiber that is
#   already ready with a value waits for its next checkpoint, see
#   _core.pyx), the acquire/get returns normally and the kill lands at the
#   caller's next wait, inside its ``with`` block or after it got the item.
# - Data travels in Fiber._wq_item: a putter or sender parks with its item
#   there and the getter takes it out; a getter is handed its item there.
#
# Timeouts follow the stdlib where it has a contract, and raise
# fibers.Timeout where it has none (see fibers/sync.py for the table).
#
# These objects belong to the fibers of one thread (one scheduler), as an
# asyncio primitive belongs to one loop: they are not thread-safe.  A
# blocking call made outside any fiber runs the scheduler until it is
# done, as Fiber.join does.

import queue as _queue
import heapq as _heapq

# What a waker hands a waiter (as its _park value): "you have it".
cdef object _HANDOFF = object()
# What _block returns when its own timeout expired.
cdef object _TIMED_OUT = object()
# Put in a waiter's _wq_item: the channel was closed, or the queue shut
# down, while it waited.
cdef object _SYNC_CLOSED = object()

Empty = _queue.Empty
Full = _queue.Full
try:
    ShutDown = _queue.ShutDown          # 3.13+
except AttributeError:
    class ShutDown(Exception):
        """Raised by :meth:`Queue.put` and :meth:`Queue.get` on a queue
        that was shut down (``queue.ShutDown`` on Python 3.13+)."""
    ShutDown.__module__ = "fibers.sync"


class ChannelClosed(Exception):
    """Raised by :meth:`Channel.send` and :meth:`Channel.recv` on a
    closed :class:`Channel`."""

ChannelClosed.__module__ = "fibers.sync"


cdef inline bint _outside():
    # No fiber is running: a call that must wait drives the scheduler
    # (Scheduler._drive) with the *whole* call in a helper fiber, so that
    # it looks at the primitive again once it runs.
    return _sched()._current is None


cdef inline object _drive(str word, object fn, tuple args):
    return _sched()._drive(word, fn, args)


cdef object _block(WaitQueue q, object timeout, object item, bint catch,
                   str word):
    # Parks the calling fiber at the back of q, carrying `item`, until a
    # waker hands over: returns what the waker left in _wq_item (None for a
    # lock or a permit).  `timeout` (None: none) is in seconds; when it
    # expires, returns _TIMED_OUT if `catch`, else raises the Timeout.
    # The caller made sure a fiber is running (see _outside).
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef Timer t = None
    cdef object v
    if timeout is not None:
        t = s._arm_timeout(me, timeout)
    try:
        while True:
            me._wq_item = item
            q.append(me)
            try:
                v = s._park(me)
            except BaseException as e:
                # Thrown in (kill, timeout) or pending before we parked: we
                # were handed nothing, and are out of the queue.
                q.remove(me)
                me._wq_item = None
                if catch and t is not None and e is t._exc:
                    return _TIMED_OUT
                raise
            if v is _HANDOFF:
                v = me._wq_item
                me._wq_item = None
                return v
            # Fiber.resume() from someone else: not a hand-over.  Queue
            # again (at the back: the resumer broke our turn).
    finally:
        if t is not None:
            s._disarm_timeout(me, t)


cdef inline int _hand(Fiber f, object item) except -1:
    # Hand `item` to f (taken from a WaitQueue, so parked) and make it ready.
    f._wq_item = item
    return f._sched._unpark(f, _HANDOFF, WAKE_VALUE)


cdef object _lock_timeout(bint blocking, object timeout):
    # threading's acquire(blocking, timeout) as a number of seconds: None
    # for no limit, 0 for "do not wait".
    if not blocking:
        if timeout is not None and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0
    if timeout is None or timeout == -1:
        return None
    if _seconds(timeout, "acquire") == 0:
        return 0
    return timeout


cdef object _wait_timeout(object timeout, str word):
    # A wait's timeout= in seconds (None: no limit), validated.
    if timeout is None:
        return None
    if _seconds(timeout, word) == 0:
        return 0
    return timeout


# --------------------------------------------------------------------------
# Lock, RLock
# --------------------------------------------------------------------------

@cython.final
cdef class Lock:
    """A mutual-exclusion lock for fibers, with the interface of
    :class:`threading.Lock`.

    A fiber that finds it held parks (other fibers run) until it is
    released.  Waiters get it in FIFO order: :meth:`release` hands it to the
    first waiter directly.  Any fiber may release it.  A context manager.
    """
    cdef bint _locked
    cdef WaitQueue _waiters

    def __cinit__(self):
        self._waiters = _new_wq("Lock", self)

    def acquire(self, blocking=True, timeout=-1):
        """Take the lock; return True.  With ``blocking`` false, or when
        ``timeout`` seconds (-1 or None: no limit) pass first, return False
        instead of waiting longer.  A kill or an enclosing
        :func:`fibers.timeout` ends the wait with its exception, the lock
        not taken."""
        if not self._locked:
            self._locked = True
            return True
        t = _lock_timeout(blocking, timeout)
        if t == 0:
            return False
        if _outside():
            return _drive("acquire", self.acquire, (blocking, timeout))
        return _block(self._waiters, t, None, True, "acquire") \
            is not _TIMED_OUT

    def release(self):
        """Release the lock, handing it to the longest waiter if any.
        Raises RuntimeError if it is not held."""
        self._release()

    cdef int _release(self) except -1:
        cdef Fiber f
        if not self._locked:
            raise RuntimeError("release unlocked lock")
        f = self._waiters.popleft()
        if f is None:
            self._locked = False
        else:
            _hand(f, None)      # still locked: it is f's now
        return 0

    def locked(self):
        """True if the lock is held."""
        return self._locked

    def __enter__(self):
        if not self._locked:
            self._locked = True
        elif _outside():
            _drive("acquire", self.acquire, ())
        else:
            _block(self._waiters, None, None, True, "acquire")
        return True

    def __exit__(self, exc_type, exc, tb):
        self._release()

    @property
    def waiters(self):
        """How many fibers wait for the lock."""
        return self._waiters._count

    def __repr__(self):
        return (f"<fibers.Lock {'locked' if self._locked else 'unlocked'} "
                f"waiters={self._waiters._count}>")


cdef inline object _owner_key():
    # Who holds an RLock: the running fiber, or the scheduler for code
    # outside any fiber.
    cdef Scheduler s = _sched()
    if s._current is None:
        return s
    return s._current


@cython.final
cdef class RLock:
    """A re-entrant lock (:class:`threading.RLock`): the fiber holding it
    may take it again, and must release it as many times.  FIFO, with
    direct hand-off, as :class:`Lock`.  A context manager."""
    cdef object _owner
    cdef Py_ssize_t _count
    cdef WaitQueue _waiters

    def __cinit__(self):
        self._waiters = _new_wq("RLock", self)

    def acquire(self, blocking=True, timeout=-1):
        """Take the lock (again, if this fiber holds it); see
        :meth:`Lock.acquire`."""
        return self._acquire_for(_owner_key(), blocking, timeout)

    def _acquire_for(self, me, blocking, timeout):
        if self._owner is None:
            self._owner = me
            self._count = 1
            return True
        if self._owner is me:
            self._count += 1
            return True
        t = _lock_timeout(blocking, timeout)
        if t == 0:
            return False
        if _outside():
            # the helper fiber acquires for us, the scheduler
            return _drive("acquire", self._acquire_for,
                          (me, blocking, timeout))
        # The waker sets _owner and _count from the item we carry.
        return _block(self._waiters, t, me, True, "acquire") \
            is not _TIMED_OUT

    def release(self):
        """Release once; the last release hands the lock to the longest
        waiter.  Raises RuntimeError unless this fiber holds it."""
        if self._owner is None or self._owner is not _owner_key():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._pass_on()

    cdef int _pass_on(self) except -1:
        cdef Fiber f = self._waiters.popleft()
        if f is None:
            self._owner = None
        else:
            self._owner = f._wq_item
            self._count = 1
            _hand(f, None)
        return 0

    cdef bint _is_owned(self):
        return self._owner is not None and self._owner is _owner_key()

    def __enter__(self):
        self.acquire()
        return True

    def __exit__(self, *exc_info):
        self.release()

    def locked(self):
        """True if some fiber holds the lock."""
        return self._owner is not None

    def __repr__(self):
        return (f"<fibers.RLock owner={self._owner!r} count={self._count} "
                f"waiters={self._waiters._count}>")


# --------------------------------------------------------------------------
# Semaphore, BoundedSemaphore
# --------------------------------------------------------------------------

cdef class Semaphore:
    """A counter of permits (:class:`threading.Semaphore`): :meth:`acquire`
    takes one, parking while there is none; :meth:`release` gives them
    back, straight to the longest waiters first (FIFO).  A context
    manager."""
    cdef Py_ssize_t _value
    cdef Py_ssize_t _initial
    cdef bint _bounded
    cdef WaitQueue _waiters

    def __cinit__(self, *args, **kwargs):
        self._waiters = _new_wq(_kind_name(self, Semaphore, "Semaphore"), self)

    def __init__(self, value=1):
        value = _int_arg(value, type(self).__name__, "value")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._value = value
        self._initial = value

    def acquire(self, blocking=True, timeout=None):
        """Take a permit; return True.  With ``blocking`` false, or once
        ``timeout`` seconds pass (None: no limit), return False instead of
        waiting longer."""
        if self._value > 0:
            self._value -= 1
            return True
        if not blocking:
            if timeout is not None:
                raise ValueError(
                    "can't specify timeout for non-blocking acquire")
            return False
        t = _wait_timeout(timeout, "acquire")
        if t == 0:
            return False
        if _outside():
            return _drive("acquire", self.acquire, (blocking, timeout))
        return _block(self._waiters, t, None, True, "acquire") \
            is not _TIMED_OUT

    def release(self, n=1):
        """Give back ``n`` permits, waking as many waiters.  A
        :class:`BoundedSemaphore` raises ValueError if that would exceed
        its initial value."""
        cdef Py_ssize_t k = _int_arg(n, "release", "n")
        cdef Fiber f
        if k < 1:
            raise ValueError("n must be one or more")
        if self._bounded and self._value + k > self._initial:
            raise ValueError("Semaphore released too many times")
        while k > 0:
            f = self._waiters.popleft()
            if f is None:
                self._value += k
                break
            _hand(f, None)
            k -= 1

    def __enter__(self):
        if self._value > 0:
            self._value -= 1
        elif _outside():
            _drive("acquire", self.acquire, ())
        else:
            _block(self._waiters, None, None, True, "acquire")
        return True

    def __exit__(self, *exc_info):
        self.release()

    @property
    def value(self):
        """Permits free now."""
        return self._value

    def __repr__(self):
        return (f"<fibers.{type(self).__name__} value={self._value} "
                f"waiters={self._waiters._count}>")


cdef class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` that refuses (ValueError) to be released above
    its initial value, as :class:`threading.BoundedSemaphore`."""

    def __init__(self, value=1):
        Semaphore.__init__(self, value)
        self._bounded = True


# --------------------------------------------------------------------------
# Event
# --------------------------------------------------------------------------

@cython.final
cdef class Event:
    """A flag fibers can wait for (:class:`threading.Event`)."""
    cdef bint _flag
    cdef WaitQueue _waiters

    def __cinit__(self):
        self._waiters = _new_wq("Event.wait", self)

    def is_set(self):
        """True once :meth:`set`, until :meth:`clear`."""
        return self._flag

    def set(self):
        """Set the flag and wake every waiter."""
        cdef Fiber f
        self._flag = True
        while True:
            f = self._waiters.popleft()
            if f is None:
                break
            _hand(f, None)

    def clear(self):
        """Reset the flag."""
        self._flag = False

    def wait(self, timeout=None):
        """Park until the flag is set; return True.  Return False if
        ``timeout`` seconds (None: no limit) pass first."""
        if self._flag:
            return True
        t = _wait_timeout(timeout, "wait")
        if t == 0:
            return False
        if _outside():
            return _drive("wait", self.wait, (timeout,))
        return _block(self._waiters, t, None, True, "wait") \
            is not _TIMED_OUT

    def __repr__(self):
        return (f"<fibers.Event {'set' if self._flag else 'unset'} "
                f"waiters={self._waiters._count}>")


# --------------------------------------------------------------------------
# Condition
# --------------------------------------------------------------------------

@cython.final
cdef class Condition:
    """A condition variable (:class:`threading.Condition`) over a
    :class:`Lock` or :class:`RLock` (a new RLock by default).

    :meth:`wait` releases the lock, parks until notified, and takes the
    lock back, always: also when the wait ends with a timeout or a kill.
    A notification given to a waiter that is killed before it returns is
    passed on to the next waiter, so none is lost.  A context manager
    (on the lock).
    """
    cdef object _lock
    cdef WaitQueue _waiters

    def __cinit__(self, *args, **kwargs):
        self._waiters = _new_wq("Condition.wait", self)

    def __init__(self, lock=None):
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError(f"Condition() argument 'lock' must be a "
                            f"fibers.Lock or fibers.RLock, not "
                            f"{type(lock).__name__}")
        self._lock = lock

    def acquire(self, *args, **kwargs):
        """The lock's acquire()."""
        return self._lock.acquire(*args, **kwargs)

    def release(self):
        """The lock's release()."""
        return self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc_info):
        return self._lock.__exit__(*exc_info)

    cdef bint _owned(self):
        if type(self._lock) is RLock:
            return (<RLock>self._lock)._is_owned()
        # A Lock has no owner: held is as good as it gets (threading does
        # the same for a lock without _is_owned).
        return (<Lock>self._lock)._locked

    cdef object _release_save(self):
        cdef RLock r
        if type(self._lock) is RLock:
            r = <RLock>self._lock
            saved = r._count
            r._count = 0
            r._pass_on()
            return saved
        self._lock.release()
        return None

    cdef object _acquire_restore(self, object saved):
        # Take the lock back whatever is thrown at us meanwhile (a second
        # kill, a timeout scope): the caller's `with` block must find it
        # held.  The first such exception is returned, to be raised once
        # the lock is ours.  GreenletExit (the scheduler closing) is not
        # waited out.
        cdef object first = None
        while True:
            try:
                self._lock.acquire()
                break
            except _GreenletExit:
                raise
            except BaseException as e:
                if first is None:
                    first = e
        if saved is not None:
            (<RLock>self._lock)._count = saved
        return first

    def wait(self, timeout=None):
        """Release the lock, park until :meth:`notify` (True) or until
        ``timeout`` seconds pass (False), then take the lock back.  Raises
        RuntimeError if the lock is not held."""
        if not self._owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        if _outside():
            # The lock is held by code outside any fiber: a helper fiber
            # could not hand it back and forth as ours.
            raise RuntimeError("Condition.wait() must be called in a fiber")
        t = _wait_timeout(timeout, "wait")
        saved = self._release_save()
        notified = False
        err = None
        try:
            if t == 0:
                # Give the lock's waiters their turn before we come back.
                yield_now()
            else:
                notified = _block(self._waiters, t, None, True, "wait") \
                    is not _TIMED_OUT
        except BaseException as e:
            err = e
        late = self._acquire_restore(saved)
        if err is None:
            err = late
        if err is not None:
            if notified:
                self._notify(1)
            raise err
        return notified

    def wait_for(self, predicate, timeout=None):
        """Wait until ``predicate()`` is true, re-checking after each
        notification; return its last value (false if ``timeout`` seconds
        passed first)."""
        cdef Scheduler s
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                s = _sched()
                if endtime is None:
                    endtime = s.now() + waittime
                else:
                    waittime = endtime - s.now()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    cdef int _notify(self, Py_ssize_t n) except -1:
        cdef Fiber f
        while n > 0:
            f = self._waiters.popleft()
            if f is None:
                break
            _hand(f, None)
            n -= 1
        return 0

    def notify(self, n=1):
        """Wake up to ``n`` waiters, longest-waiting first.  Raises
        RuntimeError if the lock is not held."""
        cdef Py_ssize_t k = _int_arg(n, "notify", "n")
        if not self._owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._notify(k)

    def notify_all(self):
        """Wake every waiter."""
        if not self._owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._notify(self._waiters._count)

    def __repr__(self):
        return (f"<fibers.Condition {self._lock!r} "
                f"waiters={self._waiters._count}>")


# --------------------------------------------------------------------------
# Queues
# --------------------------------------------------------------------------

cdef enum:
    QK_FIFO = 0
    QK_LIFO = 1
    QK_PRIORITY = 2


cdef class Queue:
    """A FIFO queue between fibers, with the interface of
    :class:`queue.Queue`.

    ``maxsize`` <= 0 means unbounded.  A :meth:`get` on an empty queue
    parks; a :meth:`put` on a full one parks.  Waiters are served in FIFO
    order and items go straight from a putter to a waiting getter.
    :meth:`shutdown` is Python 3.13's, on every Python.
    """
    cdef object _items
    cdef Py_ssize_t _maxsize
    cdef int _kind
    cdef Py_ssize_t _unfinished
    cdef bint _shutdown
    cdef WaitQueue _getters
    cdef WaitQueue _putters
    cdef WaitQueue _joiners

    def __cinit__(self, *args, **kwargs):
        cdef str kind = _kind_name(self, Queue, "Queue")
        self._getters = _new_wq(kind + ".get", self)
        self._putters = _new_wq(kind + ".put", self)
        self._joiners = _new_wq(kind + ".join", self)
        self._items = _collections.deque()

    def __init__(self, maxsize=0):
        self._maxsize = _int_arg(maxsize, type(self).__name__, "maxsize")

    cdef inline Py_ssize_t _len(self):
        return len(self._items)

    cdef inline int _add(self, object item) except -1:
        if self._kind == QK_FIFO:
            (<object>self._items).append(item)
        elif self._kind == QK_LIFO:
            (<list>self._items).append(item)
        else:
            _heapq.heappush(self._items, item)
        return 0

    cdef inline object _take(self):
        if self._kind == QK_FIFO:
            return (<object>self._items).popleft()
        if self._kind == QK_LIFO:
            return (<list>self._items).pop()
        return _heapq.heappop(self._items)

    cdef inline bint _is_full(self):
        return self._maxsize > 0 and self._len() >= self._maxsize

    cdef int _put_now(self, object item) except -1:
        # There is room (or a getter): deliver.
        cdef Fiber f = self._getters.popleft()
        self._unfinished += 1
        if f is not None:
            # A getter waits, so the queue is empty: hand it the item.
            _hand(f, item)
        else:
            self._add(item)
        return 0

    cdef object _get_now(self):
        # There is an item: take it, and let the first putter's item in.
        cdef Fiber f
        item = self._take()
        f = self._putters.popleft()
        if f is not None:
            self._add(f._wq_item)
            self._unfinished += 1
            _hand(f, None)
        return item

    def put(self, item, block=True, timeout=None):
        """Put ``item`` in, parking while the queue is full.  Raises
        :class:`queue.Full` if ``block`` is false or ``timeout`` seconds
        pass first, and :class:`ShutDown` once the queue is shut down (a
        put that raised delivered nothing)."""
        if self._shutdown:
            raise ShutDown
        if not self._is_full():
            self._put_now(item)
            return
        if not block:
            raise Full
        t = _wait_timeout(timeout, "put")
        if t == 0:
            raise Full
        if _outside():
            return _drive("put", self.put, (item, block, timeout))
        r = _block(self._putters, t, item, True, "put")
        if r is _TIMED_OUT:
            raise Full
        if r is _SYNC_CLOSED:
            raise ShutDown
        # The getter that made room moved our item in and counted it.

    def put_nowait(self, item):
        """``put(item, block=False)``."""
        self.put(item, False)

    def get(self, block=True, timeout=None):
        """Take the next item, parking while the queue is empty.  Raises
        :class:`queue.Empty` if ``block`` is false or ``timeout`` seconds
        pass first, and :class:`ShutDown` once the queue is shut down and
        empty."""
        if self._len():
            return self._get_now()
        if self._shutdown:
            raise ShutDown
        if not block:
            raise Empty
        t = _wait_timeout(timeout, "get")
        if t == 0:
            raise Empty
        if _outside():
            return _drive("get", self.get, (block, timeout))
        r = _block(self._getters, t, None, True, "get")
        if r is _TIMED_OUT:
            raise Empty
        if r is _SYNC_CLOSED:
            raise ShutDown
        return r

    def get_nowait(self):
        """``get(block=False)``."""
        return self.get(False)

    def task_done(self):
        """Tell the queue one item taken by :meth:`get` is dealt with; when
        all are, :meth:`join` returns.  ValueError if called more times
        than items were put."""
        cdef Fiber f
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            while True:
                f = self._joiners.popleft()
                if f is None:
                    break
                _hand(f, None)

    def join(self, timeout=None):
        """Park until every item put has been marked done by
        :meth:`task_done`.  Raises :class:`fibers.Timeout` after
        ``timeout`` seconds (``queue.Queue.join`` has no timeout)."""
        if self._unfinished == 0:
            return
        if _outside():
            return _drive("join", self.join, (timeout,))
        _block(self._joiners, _wait_timeout(timeout, "join"), None, False,
               "join")

    def qsize(self):
        """Items in the queue now (not counting parked putters')."""
        return self._len()

    def empty(self):
        """True if the queue holds no item now."""
        return self._len() == 0

    def full(self):
        """True if the queue is bounded and holds ``maxsize`` items."""
        return self._is_full()

    @property
    def maxsize(self):
        return self._maxsize

    @property
    def is_shutdown(self):
        """True once :meth:`shutdown` was called."""
        return self._shutdown

    def shutdown(self, immediate=False):
        """No more puts (they raise :class:`ShutDown`, as do parked
        putters, whose items are not delivered).  Gets take what is left
        and then raise ShutDown; with ``immediate``, what is left is
        dropped (and counted done for :meth:`join`) first."""
        cdef Fiber f
        self._shutdown = True
        if immediate:
            while self._len():
                self._take()
                if self._unfinished > 0:
                    self._unfinished -= 1
            if self._unfinished == 0:
                while True:
                    f = self._joiners.popleft()
                    if f is None:
                        break
                    _hand(f, None)
        while True:
            f = self._putters.popleft()
            if f is None:
                break
            _hand(f, _SYNC_CLOSED)
        if not self._len():
            while True:
                f = self._getters.popleft()
                if f is None:
                    break
                _hand(f, _SYNC_CLOSED)

    def __len__(self):
        return self._len()

    def __repr__(self):
        return (f"<fibers.{type(self).__name__} qsize={self._len()} "
                f"maxsize={self._maxsize} getters={self._getters._count} "
                f"putters={self._putters._count}>")


cdef class LifoQueue(Queue):
    """A :class:`Queue` whose :meth:`get` takes the newest item
    (:class:`queue.LifoQueue`)."""

    def __init__(self, maxsize=0):
        Queue.__init__(self, maxsize)
        self._kind = QK_LIFO
        self._items = []


cdef class PriorityQueue(Queue):
    """A :class:`Queue` whose :meth:`get` takes the smallest item
    (:class:`queue.PriorityQueue`; items are often ``(priority, data)``)."""

    def __init__(self, maxsize=0):
        Queue.__init__(self, maxsize)
        self._kind = QK_PRIORITY
        self._items = []


# --------------------------------------------------------------------------
# Channel
# --------------------------------------------------------------------------

@cython.final
cdef class Channel:
    """An unbuffered channel: a rendezvous between a sender and a receiver.

    :meth:`send` parks until a receiver takes the item; :meth:`recv` parks
    until a sender offers one.  Senders and receivers are each served in
    FIFO order.  When :meth:`send` returns, the item was received; when it
    raises, it was not.

    :meth:`close` ends the channel: later and parked sends raise
    :class:`ChannelClosed` (their items are not delivered), and so do
    later and parked receives.  Iterating receives until the channel is
    closed.  Timeouts raise :class:`fibers.Timeout`.
    """
    cdef WaitQueue _senders
    cdef WaitQueue _receivers
    cdef bint _closed

    def __cinit__(self):
        self._senders = _new_wq("Channel.send", self)
        self._receivers = _new_wq("Channel.recv", self)

    def send(self, item, timeout=None):
        """Hand ``item`` to a receiver, parking until one takes it.  Raises
        ChannelClosed if the channel is or gets closed, and
        :class:`fibers.Timeout` after ``timeout`` seconds."""
        cdef Fiber f
        if self._closed:
            raise ChannelClosed("send on a closed channel")
        f = self._receivers.popleft()
        if f is not None:
            _hand(f, item)
            return
        if _outside():
            return _drive("send", self.send, (item, timeout))
        if _block(self._senders, _wait_timeout(timeout, "send"), item,
                  False, "send") is _SYNC_CLOSED:
            raise ChannelClosed("channel closed while sending")

    def recv(self, timeout=None):
        """Take an item from a sender, parking until one offers it.
        Raises ChannelClosed if the channel is or gets closed, and
        :class:`fibers.Timeout` after ``timeout`` seconds."""
        cdef Fiber f = self._senders.popleft()
        if f is not None:
            item = f._wq_item
            _hand(f, None)
            return item
        if self._closed:
            raise ChannelClosed("recv on a closed channel")
        if _outside():
            return _drive("recv", self.recv, (timeout,))
        r = _block(self._receivers, _wait_timeout(timeout, "recv"),
                   None, False, "recv")
        if r is _SYNC_CLOSED:
            raise ChannelClosed("channel closed while receiving")
        return r

    def close(self):
        """Close the channel; parked senders and receivers raise
        ChannelClosed.  Closing twice does nothing."""
        cdef Fiber f
        self._closed = True
        while True:
            f = self._senders.popleft()
            if f is None:
                break
            _hand(f, _SYNC_CLOSED)
        while True:
            f = self._receivers.popleft()
            if f is None:
                break
            _hand(f, _SYNC_CLOSED)

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self._closed

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.recv()
        except ChannelClosed:
            raise StopIteration from None

    def __repr__(self):
        return (f"<fibers.Channel {'closed' if self._closed else 'open'} "
                f"senders={self._senders._count} "
                f"receivers={self._receivers._count}>")
