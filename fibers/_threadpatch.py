"""fibers.patch()'s threading and queue parts.

Design note.  threading.Condition, Event, Semaphore, BoundedSemaphore,
Barrier, Timer and queue.Queue (with LifoQueue and PriorityQueue) are
written in Python over ``threading.Lock``, ``threading.RLock`` and
``threading._allocate_lock`` (Condition's per-waiter lock), each looked up
in the module when an object is made.  So replacing those three names with
the thread-safe, fiber-aware locks of ``_threadlock.pxi`` makes every one
of them cooperative inside fibers, and leaves them the stdlib's own
outside: the locks wrap real ``_thread`` locks.  ``queue.SimpleQueue`` is
C, with a lock of its own: the queue part replaces it.

``_thread`` itself is never patched.  threading's own bookkeeping keeps its
real locks: each thread's ``_tstate_lock`` (3.10-3.12) and ``_ThreadHandle``
(3.13) come from ``_thread`` directly, released by the interpreter when the
thread state dies, which a wrapper could not see.  Locks made at import
(``threading._active_limbo_lock``, logging's module lock) were made before
any patch and stay real.  The ``Event`` that ``Thread.start()`` waits on is
made while patched, so starting a thread from a fiber waits cooperatively.

The replacement classes answer ``isinstance`` as the stdlib's do (the
metaclass of fibers.patching): a real ``_thread.lock`` is an instance of
the patched ``threading.Lock``, a real SimpleQueue of ``queue.SimpleQueue``.
"""

import _queue
import _thread
import queue as _queue_mod
import threading as _threading
import time as _time
import types as _types

from ._core import ThreadLock, ThreadRLock, ThreadSimpleQueue, _in_fiber
from ._core import now as _now
from .patching import _StdLike

__all__ = ["threading_targets", "queue_targets", "Lock", "RLock",
           "SimpleQueue"]


class Lock(ThreadLock, metaclass=_StdLike):
    __std__ = _thread.LockType
    __slots__ = ()
    __doc__ = ThreadLock.__doc__


class RLock(ThreadRLock, metaclass=_StdLike):
    # threading.RLock is a factory function; the C RLock type (or the
    # Python one where there is no C one) is what its objects are.
    __std__ = _threading._CRLock or _threading._PyRLock
    __slots__ = ()
    __doc__ = ThreadRLock.__doc__


class SimpleQueue(ThreadSimpleQueue, metaclass=_StdLike):
    __std__ = _queue.SimpleQueue
    __slots__ = ()
    __doc__ = ThreadSimpleQueue.__doc__
    __class_getitem__ = classmethod(_types.GenericAlias)


for _cls, _mod in ((Lock, "threading"), (RLock, "threading"),
                   (SimpleQueue, "queue")):
    _cls.__module__ = _mod
del _cls, _mod


_std_monotonic = _time.monotonic


def _clock():
    # The clock threading's and queue's timeouts are computed on
    # (Semaphore.acquire, Condition.wait_for, Barrier, Queue.get/put take
    # a deadline, then wait for what is left of it): inside a fiber, the
    # scheduler's, which the waits themselves run on; elsewhere the
    # stdlib's.  Under a VirtualClock the two differ, and the stdlib's
    # loops would wait again and again until real time caught up.
    if _in_fiber():
        return _now()
    return _std_monotonic()


def threading_targets():
    """The threading part's (owner, attr, replacement) triples."""
    return [(_threading, "Lock", Lock),
            (_threading, "_allocate_lock", Lock),
            (_threading, "RLock", RLock),
            (_threading, "_time", _clock)]


def queue_targets():
    """The queue part's (owner, attr, replacement) triples."""
    return [(_queue_mod, "SimpleQueue", SimpleQueue),
            (_queue_mod, "time", _clock)]
