# Fiber groups, pools and races: fibers.group(), fibers.Pool, fibers.first().
# Included from _core.pyx; declarations in _group.pxd.
#
# Design notes
# ============
#
# Why compiled, in _core: all three need to hear about *every* way a fiber
# ends, and a wrapper around the fiber's function cannot: a fiber killed
# before it ever ran (Fiber.kill, close(), a group's own cancel) never runs
# any code of its own.  So a fiber has an owner (Fiber._owner, an _Owner)
# that Scheduler._finish tells, after the fiber is dead and its joiners
# are woken, and before the "uncaught exception" log.  The owner only does
# bookkeeping there and wakes the one fiber waiting on it (a WaitQueue);
# it never switches.  Being in _core also lets a pool hand a slot straight
# to the oldest waiting spawn() (no thundering herd, FIFO, O(1)), lets a
# group interrupt its parent's body with a private exception and clear it
# if it was never delivered, and lets owners decide whether a child's
# failure is logged (Fiber._joined) instead of going through a wrapper.
#
# Killing a child is "throw FiberExit at its next checkpoint" (what
# Fiber.kill(block=False) does); a group or race then waits until the
# owner's set of live children is empty.  That wait is shielded: if the
# waiting fiber is itself killed or times out meanwhile, the children are
# killed again and the wait goes on; the interrupt is re-raised once they
# are all dead.  So no child outlives its block, its pool's kill() or its
# first() call.
#
# A group's semantics follow asyncio.TaskGroup (see the Group docstring).

import builtins as _builtins
import collections as _collections_g

_ExceptionGroup = getattr(_builtins, "ExceptionGroup", None)
if _ExceptionGroup is None:     # CPython 3.10: the backport, a dependency
    from exceptiongroup import ExceptionGroup as _ExceptionGroup

ExceptionGroup = _ExceptionGroup

cdef enum:
    GP_NEW = 0
    GP_BODY = 1
    GP_CLOSING = 2
    GP_DONE = 3


class _GroupCancelled(FiberExit):
    """Internal: thrown into a group's parent to end the body of its with
    block early (a child failed, or cancel() was called); the group's
    __exit__ absorbs it."""


cdef object _callable_arg(object fn, str word, str name):
    if not PyCallable_Check(fn):
        raise TypeError(f"{word}() argument '{name}' must be callable, "
                        f"not {type(fn).__name__}")
    return fn


cdef object _iter_arg(object iterable, str word):
    try:
        return iter(iterable)
    except TypeError:
        raise TypeError(f"{word}() argument 'iterable' must be iterable, "
                        f"not {type(iterable).__name__}") from None


cdef object _timeout_arg(object seconds, str word):
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        try:
            seconds = float(seconds) if hasattr(seconds, "__float__") \
                else None
        except (TypeError, ValueError):
            seconds = None
        if seconds is None:
            raise TypeError(f"{word}() argument 'timeout' must be a number "
                            f"of seconds or None")
    _to_ns(seconds, word)       # ValueError for NaN or < 0
    return seconds


cdef int _kill_nowait(Scheduler s, Fiber f, object exc) except -1:
    # Fiber.kill(exc, block=False), without the checks: the fiber dies at
    # its next checkpoint (the running fiber itself: at its next one too),
    # or at once if it never ran.
    if f._state == ST_DEAD:
        return 0
    f._kill_exc = exc
    if f._glet is None:
        s._finish(f, None, exc)
    else:
        s._throw(f, exc)
    return 0


cdef object _park(Scheduler s, WaitQueue q, str word):
    # Park until woken through q.  Outside any fiber, a helper fiber waits
    # and the scheduler is driven meanwhile (as for Fiber.join).
    cdef Fiber me = s._current
    if me is not None:
        return s._wait_in(me, q)
    return s._drive(word, _park_body, (q,))


def _park_body(WaitQueue q):
    cdef Scheduler s = _sched()
    return s._wait_in(s._current, q)


cdef int _wake_first(Scheduler s, WaitQueue q, object value) except -1:
    cdef Fiber w
    if q._count:
        w = q.popleft()
        s._wake(w, value)
    return 0


# Not @cython.internal (nor _Batch, _Race): a module that cimports
# fibers._core (fibers._fs) imports every class _core.pxd declares by
# name at its start.
cdef class _Owner:
    cdef int _child_done(self, Fiber f, object exc) except -1:
        return 0


# --------------------------------------------------------------------------
# group()
# --------------------------------------------------------------------------

@cython.final
cdef class Group(_Owner):
    """A set of child fibers bound to a ``with`` block; see :func:`group`.

    Rules (those of asyncio.TaskGroup, with fibers' own words):

    - The block ends only when every child is dead.
    - A child that raises (anything but :class:`FiberExit`) is a failure.
      The first failure kills the other children (their ``finally`` blocks
      run) and ends the body of the block at its next blocking call; then
      all failures, in the order they happened, are raised together as an
      :class:`ExceptionGroup` -- always a group, even for one failure.
    - If the body raises an exception, the children are killed and the
      exception is one of the failures in the group.
    - A :class:`FiberExit` (the parent was killed), ``KeyboardInterrupt``,
      ``SystemExit`` or :class:`Timeout` (the group's own ``timeout=`` or
      an enclosing :func:`timeout` scope) that reaches the parent, in the
      body or while it waits at the end of the block, kills the children,
      waits for them, and is re-raised as it is -- so kills and timeout
      scopes work through a group.  If children had failed too, a
      Timeout gives way to the ExceptionGroup; a kill, Ctrl-C or exit does
      not (the failures are then logged on the ``fibers`` logger).
    - A child that raises ``KeyboardInterrupt`` or ``SystemExit``: the rest
      are killed, and that exception is re-raised as it is.
    - :meth:`cancel` kills the children and ends the body at its next
      blocking call; the block then exits normally (unless a child failed
      while dying).
    - A child killed by anyone ends quietly: not a failure.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("Group objects are created by fibers.group()")

    def __repr__(self):
        phase = ("new", "open", "closing", "done")[self._phase]
        return (f"<fibers.Group {phase} children={len(self._children)}"
                f"{' cancelled' if self._cancelling else ''}>")

    def __len__(self):
        """The number of children still alive."""
        return len(self._children)

    @property
    def children(self):
        """The children still alive, as a list of :class:`Fiber`."""
        return list(self._children)

    def __enter__(self):
        cdef Scheduler s = _sched()
        cdef Fiber me = s._current
        if me is None:
            raise RuntimeError("group() must be used inside a fiber")
        if self._phase != GP_NEW:
            raise RuntimeError("a group cannot be entered twice")
        self._sched = s
        self._parent = me
        self._phase = GP_BODY
        if self._timeout is not None:
            self._scope = _scope(self._timeout, False)
            self._scope.__enter__()
        return self

    def spawn(self, fn, *args, **kwargs):
        """Start ``fn(*args, **kwargs)`` as a child fiber and return its
        :class:`Fiber`.

        Allowed from any fiber of the group's scheduler (the body, a child)
        until the block has ended, including while the parent waits at its
        end.  Once the group is cancelled (a failure, :meth:`cancel`, a
        timeout) the child is killed before it ever runs: the Fiber
        returned is already dead.  After the block: RuntimeError.
        """
        cdef Scheduler s = self._sched
        cdef Fiber f
        _callable_arg(fn, "spawn", "fn")
        if self._phase == GP_NEW:
            raise RuntimeError("spawn(): the group was not entered; use "
                               "'with fibers.group() as g:'")
        if self._phase == GP_DONE:
            raise RuntimeError("spawn(): the group's with block has ended")
        _check_thread(s, "spawn")
        f = s._spawn(fn, args, kwargs)
        # The group owns the outcome: a failure is raised by the block,
        # not logged.
        f._joined = True
        f._owner = self
        self._children.add(f)
        if self._cancelling:
            _kill_nowait(s, f, FiberExit())
        return f

    cdef int _child_done(self, Fiber f, object exc) except -1:
        if f not in self._children:
            return 0
        self._children.discard(f)
        if exc is not None and not isinstance(exc, FiberExit):
            self._errors.append(exc)
            if not self._cancelling:
                self._cancel()
        if not self._children:
            _wake_first(self._sched, self._waiter, None)
        return 0

    cdef int _cancel(self) except -1:
        # Kill every live child, and end the body if the parent is still
        # in it.  Idempotent but not a no-op: called again (the parent was
        # interrupted once more while waiting) it kills again the children
        # that are still alive, say ones that caught FiberExit.
        cdef Scheduler s = self._sched
        cdef Fiber f
        cdef Fiber p = self._parent
        self._cancelling = True
        for f in list(self._children):
            _kill_nowait(s, f, FiberExit())
        if self._phase == GP_BODY and p._state != ST_DEAD and p._exc is None:
            # Not over a pending exception: a kill or a timeout on its way
            # ends the body as well, and must not be lost.
            if self._cancel_exc is None:
                self._cancel_exc = _GroupCancelled()
            s._throw(p, self._cancel_exc)
        return 0

    def cancel(self):
        """Kill every child (their ``finally`` blocks run) and end the body
        of the block at its next blocking call; the block then exits
        normally.  Children spawned afterwards are killed before they run.
        Callable from any fiber; after the block, does nothing."""
        if self._phase == GP_NEW:
            raise RuntimeError("cancel(): the group was not entered")
        if self._phase == GP_DONE:
            return
        _check_thread(self._sched, "cancel")
        self.cancel_called = True
        self._cancel()

    def __exit__(self, exc_type, exc, tb):
        cdef Scheduler s = self._sched
        cdef Fiber me = self._parent
        cdef object interrupt = None
        cdef object body_error = None
        cdef object final = None
        cdef Py_ssize_t i
        if self._phase != GP_BODY:
            raise RuntimeError("a group's block was not entered")
        if s._current is not me:
            raise RuntimeError("a group's block must end in the fiber that "
                               "entered it")
        self._phase = GP_CLOSING
        if exc is not None and exc is not self._cancel_exc:
            if isinstance(exc, Exception) and not isinstance(exc, Timeout):
                body_error = exc
            else:
                interrupt = exc
            self._cancel()
        while self._children:
            try:
                s._wait_in(me, self._waiter)
            except BaseException as e:
                # The parent was killed, timed out or got Ctrl-C while
                # waiting: kill the children (again), and keep waiting; no
                # child outlives the block.  A kill or Ctrl-C outranks a
                # Timeout.
                if e is not self._cancel_exc and (
                        interrupt is None or
                        (isinstance(interrupt, Exception) and
                         not isinstance(e, Exception))):
                    interrupt = e
                self._cancel()
        self._phase = GP_DONE
        # Our cancel exception, thrown into the body but never delivered
        # (the body ended first), must not go off after the block.
        if self._cancel_exc is not None:
            if me._exc is self._cancel_exc:
                me._exc = None
            if me._dropped is not None:
                for i in range(len(me._dropped)):
                    if me._dropped[i] is self._cancel_exc:
                        del me._dropped[i]
                        break
        if body_error is not None:
            self._errors.append(body_error)
        for e in self._errors:
            if not isinstance(e, Exception):
                final = e           # a child's KeyboardInterrupt, say
                break
        if final is None:
            if interrupt is not None and not isinstance(interrupt, Exception):
                final = interrupt
                for e in self._errors:
                    _log.error("group: a child failure lost to %r",
                               interrupt,
                               exc_info=(type(e), e, e.__traceback__))
            elif self._errors:
                n = len(self._errors)
                final = _ExceptionGroup(
                    f"{n} failure{'s' if n > 1 else ''} in a fibers group",
                    self._errors)
            else:
                final = interrupt
        self._errors = []
        if self._scope is not None:
            scope = self._scope
            self._scope = None
            # May raise its Timeout (expired, but the exception was replaced
            # before delivery: see TimeoutScope.__exit__).
            scope.__exit__(None if final is None else type(final), final,
                           None)
        if final is None:
            return True             # nothing, or our own cancel exception
        if final is exc:
            return False
        raise final


def group(timeout=None):
    """A group of child fibers bound to a ``with`` block::

        with fibers.group() as g:
            g.spawn(fetch, url1)
            g.spawn(fetch, url2)
        # here both are done

    The block exits only when every child is dead; no child outlives it.
    The first child to fail kills the others and the failures are raised
    as an :class:`ExceptionGroup`.  With ``timeout`` seconds, the children
    still alive then are killed and :class:`Timeout` is raised.  Must be
    used inside a fiber.  See :class:`Group` for the exact rules.
    """
    cdef Group g = Group.__new__(Group)
    g._timeout = _timeout_arg(timeout, "group")
    g._children = set()
    g._errors = []
    g._waiter = _new_wq("Group.wait", g)
    return g


# --------------------------------------------------------------------------
# Pool
# --------------------------------------------------------------------------

@cython.final
cdef class _Batch:
    cdef int _task_done(self, Fiber f, object exc) except -1:
        cdef Py_ssize_t pos
        cdef object p = self._index.pop(f, None)
        if p is None:
            return 0
        if exc is not None and isinstance(exc, FiberExit):
            # Killed (by Pool.kill(), say): as Fiber.join, a result of None.
            exc = None
        if exc is not None and self._failed:
            # After the first failure nobody will see this one: log it.
            f._joined = False
            return 0
        if self._done is not None:
            self._done.append((exc, f._result))
        elif exc is None:
            pos = p
            self._results[pos] = f._result
        if exc is not None:
            self._failed = True
            self._failure = exc
        if self._wake_each or exc is not None or not self._index:
            _wake_first(f._sched, self._waiter, None)
        return 0


cdef _Batch _new_batch(Pool p, bint unordered):
    cdef _Batch b = _Batch.__new__(_Batch)
    b._index = {}
    b._waiter = _new_wq("Pool.imap_unordered" if unordered else "Pool.map",
                        p)
    if unordered:
        b._done = _collections_g.deque()
        b._wake_each = True
    else:
        b._results = []
    return b


@cython.final
cdef class Pool(_Owner):
    """At most ``size`` fibers at a time, as gevent.pool.Pool.

    :meth:`spawn` blocks the caller while ``size`` tasks are running, and
    slots go to blocked callers in the order they came.  :meth:`map` and
    :meth:`imap_unordered` run a function over an iterable within the
    same bound.  A task killed or failed frees its slot; none is ever lost.

    A task started by :meth:`spawn` is an ordinary fiber: join it for its
    result; a failure nobody joins is logged, as for :func:`spawn`.
    Calling map() from inside a task of the same pool can deadlock when
    the pool is full, as with any bounded pool.
    """

    def __init__(self, size):
        if isinstance(size, bool) or not hasattr(size, "__index__"):
            raise TypeError(f"Pool() argument 'size' must be an integer, "
                            f"not {type(size).__name__}")
        size = PyNumber_Index(size)
        if size < 1:
            raise ValueError(f"Pool() argument 'size' must be >= 1, "
                             f"got {size}")
        if self._running is not None:
            raise RuntimeError("Pool.__init__ called twice")
        self._size = size
        self._running = {}
        self._slotq = _new_wq("Pool.spawn", self)
        self._idleq = _new_wq("Pool.join", self)

    def __repr__(self):
        return f"<fibers.Pool size={self._size} running={len(self._running)}>"

    @property
    def size(self):
        """The most tasks that run at once."""
        return self._size

    def __len__(self):
        """The number of tasks running."""
        return len(self._running)

    def __iter__(self):
        """The tasks running now (a snapshot), as :class:`Fiber` objects."""
        return iter(list(self._running))

    def free_count(self):
        """How many more tasks could start now without waiting."""
        return max(0, self._size - self._used)

    def full(self):
        """True when a spawn() would wait."""
        return self._used >= self._size

    cdef Scheduler _bind(self, str word):
        cdef Scheduler s = _sched()
        _check_thread(s, word)
        if self._sched is not s:
            if self._running:
                raise RuntimeError(f"{word}(): this pool's tasks run in "
                                   f"another scheduler")
            self._sched = s
        return s

    cdef int _acquire(self, Scheduler s, str word) except -1:
        # Take a slot; wait (FIFO) while none is free.  A waiter woken with
        # True was handed the slot of a task that ended (see _release): it
        # keeps it even if a kill arrives now (that is raised at its next
        # checkpoint, after the task is started), so no slot is lost.
        if self._used < self._size and self._slotq._count == 0:
            self._used += 1
            return 0
        _park(s, self._slotq, word)
        return 0

    cdef int _release(self) except -1:
        if self._slotq._count:
            _wake_first(self._sched, self._slotq, True)    # slot handed on
            return 0
        self._used -= 1
        if self._used == 0:
            while self._idleq._count:
                _wake_first(self._sched, self._idleq, None)
        return 0

    cdef Fiber _start(self, Scheduler s, object fn, tuple args, _Batch b):
        # With a slot already taken.
        cdef Fiber f
        try:
            f = s._spawn(fn, args, None)
        except BaseException:
            self._release()
            raise
        f._owner = self
        self._running[f] = b
        if b is not None:
            f._joined = True
            b._index[f] = len(b._index) if b._results is None \
                else len(b._results)
            if b._results is not None:
                b._results.append(None)
        return f

    cdef int _child_done(self, Fiber f, object exc) except -1:
        cdef object b = self._running.pop(f, False)
        if b is False:
            return 0
        self._release()
        if b is not None:
            (<_Batch>b)._task_done(f, exc)
        return 0

    def spawn(self, fn, *args, **kwargs):
        """Start ``fn(*args, **kwargs)`` as a fiber of the pool and return
        its :class:`Fiber`, first waiting while ``size`` tasks are running
        (outside any fiber, the scheduler runs meanwhile)."""
        cdef Scheduler s
        cdef Fiber f
        _callable_arg(fn, "spawn", "fn")
        s = self._bind("spawn")
        self._acquire(s, "spawn")
        try:
            f = s._spawn(fn, args, kwargs)
        except BaseException:
            self._release()
            raise
        f._owner = self
        self._running[f] = None
        return f

    cdef int _cleanup(self, Scheduler s, _Batch b) except -1:
        # Kill a batch's tasks still running and wait until they are dead,
        # shielded as a group's end is.  Outside any fiber, or where the
        # caller cannot block (a generator closed by the garbage
        # collector), they are only killed.
        cdef Fiber f
        cdef Fiber me = s._current
        cdef object interrupt = None
        if not b._index:
            return 0
        b._failed = True            # from now on, failures are logged
        b._wake_each = True
        for f in list(b._index):
            _kill_nowait(s, f, FiberExit())
        if me is None or PyGreenlet_GetCurrent() is not me._glet:
            if not s._running:
                while b._index:
                    try:
                        _park(s, b._waiter, "map")
                    except BaseException as e:
                        if interrupt is None:
                            interrupt = e
                        for f in list(b._index):
                            _kill_nowait(s, f, FiberExit())
            if interrupt is not None:
                raise interrupt
            return 0
        while b._index:
            try:
                s._wait_in(me, b._waiter)
            except BaseException as e:
                if interrupt is None:
                    interrupt = e
                for f in list(b._index):
                    _kill_nowait(s, f, FiberExit())
        if interrupt is not None:
            raise interrupt
        return 0

    def map(self, fn, iterable):
        """``[fn(x) for x in iterable]``, at most ``size`` at a time (with
        the pool's other tasks), results in the order of ``iterable``.

        Items are taken from ``iterable`` as slots free up.  The first task
        to fail stops it: no further item is started, the batch's other
        tasks are killed (their ``finally`` blocks run) and that exception
        is raised.  A task killed by someone else gives None.  If the
        caller is killed or times out, its tasks are killed before the
        exception goes on."""
        _callable_arg(fn, "map", "fn")
        it = _iter_arg(iterable, "map")
        cdef Scheduler s = self._bind("map")
        if s._current is None:
            return s._drive("map", _pool_map_body, (self, fn, it))
        return _pool_map_body(self, fn, it)

    def imap_unordered(self, fn, iterable):
        """A generator of ``fn(x)`` for each ``x`` in ``iterable``, in the
        order the tasks finish, at most ``size`` at a time.

        Memory is bounded: tasks running plus results not yet taken never
        exceed ``size``; items are taken from ``iterable`` only as the
        consumer makes room.  A task's exception is raised at its place in
        that order, and the other tasks are then killed.  Closing the
        generator early (``break``) kills the tasks still running and waits
        for them."""
        _callable_arg(fn, "imap_unordered", "fn")
        it = _iter_arg(iterable, "imap_unordered")
        return _pool_imap_unordered(self, fn, it)

    def join(self, timeout=None):
        """Wait until no task is running.  With ``timeout`` seconds, raise
        :class:`Timeout` if some still are by then (they go on running)."""
        cdef Scheduler s
        cdef Fiber me
        cdef Timer t = None
        timeout = _timeout_arg(timeout, "join")
        if self._used == 0:
            return None
        s = self._bind("join")
        me = s._current
        if me is None:
            return s._drive("join", _pool_join_body, (self, timeout))
        if timeout is not None:
            t = s._arm_timeout(me, timeout)
        try:
            if self._used:
                s._wait_in(me, self._idleq)
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return None

    def kill(self, exc=FiberExit, block=True):
        """Kill every running task with ``exc`` (default :class:`FiberExit`;
        their ``finally`` blocks run) and, with ``block``, wait until they
        are dead.  Callers blocked in :meth:`spawn` are not affected: they
        get the freed slots.  Called from one of the pool's own tasks, that
        task is killed last, when the others are dead."""
        cdef Scheduler s
        cdef Fiber me
        cdef Fiber f
        cdef list victims
        cdef bint self_too = False
        _exc_instance(exc, "kill")
        if not self._running:
            return None
        s = self._bind("kill")
        me = s._current
        victims = list(self._running)
        for f in victims:
            if f is me:
                self_too = True
            else:
                _kill_nowait(s, f, _exc_instance(exc, "kill"))
        if block:
            if me is None:
                s._drive("kill", _pool_kill_wait_body, (victims,))
            else:
                for f in victims:
                    if f is not me:
                        s._wait_dead(me, f)
        if self_too:
            raise _exc_instance(exc, "kill")
        return None


def _pool_join_body(Pool p, timeout):
    return p.join(timeout)


def _pool_kill_wait_body(list victims):
    cdef Scheduler s = _sched()
    cdef Fiber f
    for f in victims:
        s._wait_dead(s._current, f)


def _pool_map_body(Pool p, fn, it):
    cdef Scheduler s = p._sched
    cdef _Batch b = _new_batch(p, False)
    try:
        # A slot first, then the item: none is taken that would not run.
        while not b._failed:
            p._acquire(s, "map")
            if b._failed:
                p._release()
                break
            try:
                item = next(it)
            except StopIteration:
                p._release()
                break
            except BaseException:
                p._release()
                raise
            p._start(s, fn, (item,), b)
        while b._index and not b._failed:
            s._wait_in(s._current, b._waiter)
        if b._failed:
            raise b._failure
        return b._results
    finally:
        p._cleanup(s, b)


def _pool_imap_unordered(Pool p, fn, it):
    cdef Scheduler s = p._bind("imap_unordered")
    cdef _Batch b = _new_batch(p, True)
    cdef bint more = True
    try:
        while True:
            while more and not b._failed and \
                    len(b._index) + len(b._done) < p._size:
                p._acquire(s, "imap_unordered")
                try:
                    item = next(it)
                except StopIteration:
                    p._release()
                    more = False
                    break
                except BaseException:
                    p._release()
                    raise
                p._start(s, fn, (item,), b)
            if b._done:
                exc, result = b._done.popleft()
                if exc is not None:
                    raise exc
                yield result
                continue
            if not b._index:
                return
            _park(s, b._waiter, "imap_unordered")
    finally:
        p._cleanup(s, b)


# --------------------------------------------------------------------------
# first()
# --------------------------------------------------------------------------

@cython.final
cdef class _Race(_Owner):
    cdef int _child_done(self, Fiber f, object exc) except -1:
        if f not in self._live:
            return 0
        self._live.discard(f)
        if self._winner is None:
            self._winner = f
            self._win_exc = exc
            self._win_result = f._result
            _wake_first(self._sched, self._waiter, None)
        else:
            if exc is not None and not isinstance(exc, FiberExit):
                # A loser that failed on its way out: nobody sees it, so
                # it is logged as for any unjoined fiber.
                f._joined = False
            if not self._live:
                _wake_first(self._sched, self._waiter, None)
        return 0


def first(*fns):
    """Run each of ``fns`` (callables taking no arguments) in a fiber of
    its own, return the outcome of the first to finish, and kill the rest
    (their ``finally`` blocks run) before returning.

    The first to finish wins whether it returned or raised: if it raised,
    that exception is raised here (as trio's and anyio's race helpers
    do); a later success does not count.  One that was killed (by anyone
    else) finishes with None, as :meth:`Fiber.join` gives.  If the caller
    is killed or times out while waiting, every contender is killed before
    that exception goes on.  Outside any fiber, the scheduler runs
    meanwhile.
    """
    cdef Py_ssize_t i
    cdef Scheduler s
    if not fns:
        raise TypeError("first() needs at least one callable")
    for i in range(len(fns)):
        if not PyCallable_Check(fns[i]):
            raise TypeError(f"first() argument {i + 1} must be callable, "
                            f"not {type(fns[i]).__name__}")
    s = _sched()
    _check_thread(s, "first")
    if s._current is None:
        return s._drive("first", _first_body, fns)
    return _first_body(*fns)


def _first_body(*fns):
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef Fiber f
    cdef _Race r = _Race.__new__(_Race)
    cdef object interrupt = None
    r._sched = s
    r._live = set()
    r._waiter = _new_wq("first", r)
    try:
        for fn in fns:
            f = s._spawn(fn, (), None)
            f._joined = True
            f._owner = r
            r._live.add(f)
        while r._winner is None:
            s._wait_in(me, r._waiter)
    except BaseException as e:
        interrupt = e
    # Kill the rest and wait for them, shielded.
    for f in list(r._live):
        _kill_nowait(s, f, FiberExit())
    while r._live:
        try:
            s._wait_in(me, r._waiter)
        except BaseException as e:
            if interrupt is None:
                interrupt = e
            for f in list(r._live):
                _kill_nowait(s, f, FiberExit())
    if interrupt is not None:
        raise interrupt
    if r._win_exc is not None:
        if isinstance(r._win_exc, FiberExit):
            return None
        raise r._win_exc
    return r._win_result
