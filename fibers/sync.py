"""Synchronisation between fibers: locks, events, conditions, queues and an
unbuffered channel, with the names, signatures and exceptions of
:mod:`threading` and :mod:`queue`.

    import fibers
    from fibers.sync import Lock, Queue

    lock = Lock()
    q = Queue(maxsize=100)

    def producer():
        for i in range(1000):
            q.put(i)             # parks while the queue is full
        q.shutdown()

    def consumer():
        while True:
            try:
                item = q.get()   # parks while it is empty
            except fibers.sync.ShutDown:
                return
            with lock:           # parks while another fiber holds it
                ...

Everything here is also exported from :mod:`fibers` itself (``fibers.Lock``,
``fibers.Queue`` ...), except the exceptions ``Empty``, ``Full`` and
``ShutDown``, which are :mod:`queue`'s own.

Design note
===========

The primitives are compiled into the scheduler core (fibers/_sync.pxi) and
park fibers on the scheduler's own intrusive wait queues: a wait allocates
nothing and a wake is O(1).  Waiters are served first come, first served:
a release *hands* the lock (a permit, an item, a notification) to the
first waiter directly, so a releaser that comes straight back, or any
fiber that comes along before the waiter runs, cannot barge in ahead.

A waiter that is killed (:meth:`fibers.Fiber.kill`) or times out while it
waits loses nothing and leaks nothing: it is taken off the wait queue the
moment it is made ready, so either it was handed its due first (then its
call returns normally, and the kill lands at its next wait, inside its
``with`` block), or a later release passes over it to the next waiter.
:meth:`Condition.wait` takes the lock back even when it ends with an
exception, and passes a notification it got but could not use on to the
next waiter.

Timeouts.  Where the stdlib has a contract for running out of time, it is
kept; ``fibers.Timeout`` is raised only by waits that have none:

=================================================  =========================
``Lock/RLock/Semaphore.acquire(timeout=)``          returns False
``Event.wait(timeout=)``, ``Condition.wait()``      returns False
``Condition.wait_for(pred, timeout=)``              returns pred's last value
``Queue.get(timeout=)`` / ``put(timeout=)``         raises queue.Empty / Full
``Queue.join(timeout=)`` (no timeout in stdlib)     raises fibers.Timeout
``Channel.send/recv(timeout=)`` (no stdlib peer)    raises fibers.Timeout
``fibers.wait_fd(timeout=)``                        raises fibers.Timeout
=================================================  =========================

An enclosing :func:`fibers.timeout` scope (or a kill) always ends any of
these waits with its exception, with nothing taken.

``timeout=0`` (and ``blocking=False``) never parks.  ``Queue.shutdown``
is Python 3.13's, on every Python; ``ShutDown`` is ``queue.ShutDown``
there, and this module's own class before.

Channel.  A rendezvous: ``send`` returns once a receiver has taken the
item, so a ``send`` that returned was received and one that raised was not.
``close()`` makes later and parked sends and receives raise
:class:`ChannelClosed`; ``for item in channel`` receives until it is
closed.

The objects belong to the fibers of one thread, as an asyncio primitive
belongs to its loop; they are not for threads (use :mod:`threading` there).
A blocking call made outside any fiber runs the thread's scheduler until it
completes, as :meth:`fibers.Fiber.join` does.
"""

from ._core import (
    BoundedSemaphore,
    Channel,
    ChannelClosed,
    Condition,
    Empty,
    Event,
    Full,
    LifoQueue,
    Lock,
    PriorityQueue,
    Queue,
    RLock,
    Semaphore,
    ShutDown,
    wait_fd,
)

__all__ = [
    "BoundedSemaphore", "Channel", "ChannelClosed", "Condition", "Empty",
    "Event", "Full", "LifoQueue", "Lock", "PriorityQueue", "Queue", "RLock",
    "Semaphore", "ShutDown", "wait_fd",
]

