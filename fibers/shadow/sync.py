"""Small fiber-level coordination: a mutex and a bounded channel.

Design: fibers gives signals (wait_signal / signal_all) rather than locks
and queues; these two are the only shapes the application needs, built on
signals.  Both are for fibers of one scheduler (one thread): checking a
condition and parking on it cannot race, because nothing else runs in
between.  A bounded channel is how back-pressure travels upstream: a full
channel parks its producer, which stops reading its own input.
"""

from __future__ import annotations

from collections import deque

import fibers

__all__ = ["Mutex", "Channel", "Closed"]


class Closed(Exception):
    """The channel is closed and drained."""


class Mutex:
    """Serialises fibers around a resource that must not be used twice at
    once (a SQLite connection used from the blocking pool)."""

    def __init__(self):
        self._held = False
        self._key = ("fibers.shadow.mutex", id(self))
        self._waiters = 0

    def __enter__(self):
        while self._held:
            self._waiters += 1
            try:
                fibers.wait_signal(self._key)
            finally:
                self._waiters -= 1
        self._held = True
        return self

    def __exit__(self, *exc):
        self._held = False
        if self._waiters:
            fibers.signal_one(self._key)


class Channel:
    """A bounded FIFO between two stages.  ``put_many`` parks while the
    channel holds ``capacity`` items or more; ``get_batch`` parks until
    there is something (or ``timeout`` passes: then it returns [])."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._q = deque()
        self._key = ("fibers.shadow.channel", id(self))
        self._closed = False

    def __len__(self):
        return len(self._q)

    def put_many(self, items) -> None:
        while len(self._q) >= self.capacity and not self._closed:
            fibers.wait_signal((self._key, "room"))
        if self._closed:
            raise Closed("put on a closed channel")
        self._q.extend(items)
        fibers.signal_all((self._key, "data"))

    def get_batch(self, max_items: int = 4096, timeout=None) -> list:
        if not self._q:
            if self._closed:
                raise Closed("channel closed")
            if timeout is not None and timeout <= 0:
                return []
            try:
                fibers.wait_signal((self._key, "data"), timeout)
            except fibers.Timeout:
                return []
            if not self._q:
                if self._closed:
                    raise Closed("channel closed")
                return []
        q = self._q
        n = min(max_items, len(q))
        out = [q.popleft() for _ in range(n)]
        fibers.signal_all((self._key, "room"))
        return out

    def close(self) -> None:
        """No more puts; readers get what is left, then Closed."""
        self._closed = True
        fibers.signal_all((self._key, "data"))
        fibers.signal_all((self._key, "room"))
