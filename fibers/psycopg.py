"""psycopg 3, cooperative: every wait suspends only the calling fiber.

    import fibers
    import fibers.psycopg

    def main():
        with fibers.psycopg.connect("host=127.0.0.1 dbname=app") as conn:
            return conn.execute("SELECT now()").fetchone()

    fibers.run(main)

Design
------
psycopg 3 does no I/O waiting of its own inside the protocol: each operation
(connect, execute, fetch, commit, COPY, notifies, cancel) is a generator
that drives libpq in non-blocking mode and *yields* when it would block,
saying which fd and which direction (read, write, either) it needs.  The
connection class then hands the generator to a wait function:
``Connection.wait()`` for everything on an open connection, and
``psycopg.waiting.wait_conn()`` inside the ``connect()`` and
``cancel_safe()`` class/instance methods, for generators whose fd changes
as they go.  The blocking class waits in ``select``/``poll``, which would
stop every fiber on the thread.

This module plugs fibers in through those hooks, not by patching psycopg's
globals: :class:`Connection` subclasses ``psycopg.Connection`` and overrides

* ``wait()``: the generator's waits become :func:`fibers.wait_readable` /
  :func:`fibers.wait_writable` (or :func:`fibers.wait_fd` for "readable or
  writable", and for a wait with a time limit) on ``pgconn.socket``, so a
  query parks only its fiber while the pump (io_uring or epoll) watches
  the socket;
* ``connect()``: psycopg's own attempt loop (one attempt per host, and per
  address of a host), with the same waits; host names are resolved on
  fibers' blocking-call pool;
* ``cancel_safe()`` and ``cancel()``: the cancel request goes through the
  same waits (libpq >= 17) or runs on the blocking-call pool (older libpq);
* ``lock``: psycopg serialises a connection's users with a
  ``threading.Lock``, which would freeze the whole thread if a second fiber
  found it taken; here it is a :class:`fibers.Lock`: a fiber that finds it
  taken parks until it is handed the lock.

Everything else (cursors, transactions, pipelines, COPY, server-side
cursors, notifies, adaptation) is psycopg's unchanged code on top of these.

Semantics kept from psycopg: ``connect_timeout`` (per attempt, at least
2 s) raises :class:`psycopg.errors.ConnectionTimeout`, an
``OperationalError``; after the attempts all fail, the last error is raised,
listing each failure; ``notifies(timeout=)`` works.  Unlike psycopg's
own waits, these have no 0.1 s polling interval (psycopg's is for noticing
Ctrl-C, which here reaches the fiber at its wait anyway): a query waiting
for its result is one wait in the pump and no timer.  An ``interval``
that a caller passes explicitly (psycopg 3.2's ``notifies(timeout=)``) is
honoured.

Interruption.  A fiber can be interrupted in the middle of a wait: a
:func:`fibers.timeout` scope expiring, :meth:`fibers.Fiber.kill`, Ctrl-C
delivered to the main fiber.  The exception is raised from the wait, so the
operation is abandoned half-way through the protocol.  If a command was in
flight (the transaction status is ACTIVE), the connection then, before the
exception goes on:

1. sends the server a cancel request and reads the abandoned command's
   outcome (normally ``QueryCanceled``, discarded), for at most
   :attr:`Connection.cancel_timeout` seconds (5 s by default); the
   connection is then usable again: IDLE in autocommit mode, or INERROR
   inside a transaction (``rollback()`` it, as after any failed command);
2. if the cancel fails, or the command does not end in time, or the fiber
   is interrupted again meanwhile, **closes** the connection
   (``conn.closed`` is true; using it raises ``OperationalError``), so a
   connection is never left broken-but-looks-fine.  A second interruption
   is the exception that goes on (chained to the first), at once: a last
   cancel request for the server's sake is then sent by a fiber of its
   own (bounded by ``cancel_timeout`` too).

psycopg itself does the same on Ctrl-C; here it applies to any exception
thrown into the waiting fiber.  Without a command in flight (waiting for
notifications, say) nothing needs undoing.

Outside a fiber, each call runs the thread's scheduler until it completes,
as fibers' own blocking words do (the call runs in a helper fiber).

A connection belongs to the thread whose scheduler it waits on; share it
between fibers freely, not between threads.  ``psycopg_pool`` (it uses
threads) and ``AsyncConnection`` (asyncio) are not covered; use a
connection per fiber, or a pool of these connections.
"""
from __future__ import annotations

import inspect
import logging
import os
import select
from typing import Any

import psycopg
from psycopg import errors as e
from psycopg import pq
from psycopg.conninfo import (conninfo_attempts, make_conninfo,
                              timeout_from_conninfo)
from psycopg.waiting import Ready, Wait

import fibers

__all__ = ["Connection", "connect"]

_log = logging.getLogger("fibers.psycopg")

_WAIT_R = Wait.R
_WAIT_W = Wait.W
_WAIT_RW = Wait.RW
# psycopg 3.1 has no Ready.NONE: its generators are only ever resumed
# with a ready state.
_HAS_READY_NONE = hasattr(Ready, "NONE")
_READY_NONE = Ready(0) if _HAS_READY_NONE else 0
_READY_R = Ready.R
_READY_W = Ready.W

_ACTIVE = pq.TransactionStatus.ACTIVE

# How long the socket fast path (a socket that is ready at once, as one
# asked for writing nearly always is) may keep the CPU before other fibers
# get a turn: a long executemany() or COPY must not starve them.
_MAX_BUSY = 0.005

_POLL_EVENTS = {
    _WAIT_R: select.POLLIN,
    _WAIT_W: select.POLLOUT,
    _WAIT_RW: select.POLLIN | select.POLLOUT,
}
_POLL_BAD = select.POLLERR | select.POLLHUP | select.POLLNVAL

# psycopg >= 3.3 raises (and its notifies() catches) errors._WaitTimeout
# when a wait's timeout= expires; before, nothing passes timeout=.
_WaitTimeout = getattr(e, "_WaitTimeout", None)
if _WaitTimeout is None:
    class _WaitTimeout(e.OperationalError):
        pass

_ConnectionTimeout = getattr(e, "ConnectionTimeout", e.OperationalError)
_CancellationTimeout = getattr(e, "CancellationTimeout", e.OperationalError)

try:                                    # psycopg >= 3.2
    from psycopg._capabilities import capabilities as _capabilities
except ImportError:                     # pragma: no cover
    _capabilities = None


def _has_cancel_safe():
    try:
        return _capabilities is not None and _capabilities.has_cancel_safe()
    except Exception:                   # pragma: no cover
        return False


# ---- waiting -----------------------------------------------------------------

def _outside(fn, *args, **kwargs):
    """Run fn in a fiber and drive the scheduler until it is done: the way
    a call made outside any fiber waits.  If the driving is interrupted
    (Ctrl-C), the fiber is killed, so its wait cleans up, before the
    exception goes on."""
    f = fibers.spawn(fn, *args, **kwargs)
    try:
        return f.join()
    except BaseException:
        if not f.dead:
            f.kill()
        raise


def _poll_now(fd, s):
    """The Ready state of fd for the wait `s`, right now."""
    p = select.poll()
    p.register(fd, _POLL_EVENTS[s])
    ready = _READY_NONE
    for _, ev in p.poll(0):
        if ev & _POLL_BAD:
            # Let the generator try in the direction it asked for and find
            # the error itself.
            return Ready(s)
        if ev & select.POLLIN:
            ready |= _READY_R
        if ev & select.POLLOUT:
            ready |= _READY_W
    return ready


_last_switch = 0.0


def _ready_of(ev, s):
    """The Ready state for the wait `s`, from poll events `ev`."""
    if ev & _POLL_BAD:
        # Let the generator try in the direction it asked for and find
        # the error itself.
        return Ready(s)
    ready = _READY_NONE
    if ev & select.POLLIN:
        ready |= _READY_R
    if ev & select.POLLOUT:
        ready |= _READY_W
    return ready


def _wait_limited(fd, s, limit):
    """Wait until fd is ready for `s`, or `limit` seconds pass (None: no
    limit); return the Ready state, NONE on expiry.

    One fibers.wait_fd in the pump, for either direction at once.  The
    limit is a move_on_after scope, not a timeout of the wait's own: a
    timer throwing into this fiber could expire in the same tick as a
    timeout scope of the caller's, and only scopes sort that out (the
    outermost expired one acts, see fibers.TimeoutScope); a Timeout
    caught here might be the caller's."""
    global _last_switch
    ev = 0
    if limit is None:
        ev = fibers.wait_fd(fd, _POLL_EVENTS[s])
    else:
        with fibers.move_on_after(limit):
            ev = fibers.wait_fd(fd, _POLL_EVENTS[s])
    _last_switch = fibers.now()
    return _ready_of(ev, s) if ev else _poll_now(fd, s)


def _wait_ready(fd, s, limit):
    """Suspend this fiber until fd is ready for `s` (a psycopg Wait), or
    `limit` seconds pass (None: no limit); return the Ready state, NONE on
    expiry."""
    global _last_switch
    if s not in _POLL_EVENTS:
        raise e.InternalError(f"bad poll status: {s}")
    if s & _WAIT_W or limit == 0:
        # A socket asked for writing is nearly always writable: a poll of
        # no time is much cheaper than a trip through the pump.
        ready = _poll_now(fd, s)
        if ready:
            now = fibers.now()
            if now - _last_switch > _MAX_BUSY:
                _last_switch = now
                fibers.yield_now()
            return ready
        if limit == 0:
            return _READY_NONE
    if limit is None:
        # The common case, a query waiting for its result: one wait in the
        # pump, no timer.
        if s == _WAIT_R:
            fibers.wait_readable(fd)
            _last_switch = fibers.now()
            return _READY_R
        if s == _WAIT_W:
            fibers.wait_writable(fd)
            _last_switch = fibers.now()
            return _READY_W
    return _wait_limited(fd, s, limit)


def _check_fd_closed(fd):
    try:
        os.fstat(fd)
    except OSError as ex:
        raise e.OperationalError("connection socket closed") from ex


def _consume(gen, fd, interval, timeout, on_interrupt=None, first=None):
    """Run a psycopg generator to completion in this fiber, and return its
    value.

    fd is the socket to wait on, or None for generators that yield
    (fd, wait) pairs (connect, cancel).  `first` is what a generator that
    has already started last yielded (None: start it).  With an `interval`,
    the generator is resumed with READY_NONE when that long passes without
    readiness, as psycopg's own wait functions do (psycopg 3.1 has no
    READY_NONE: it is only waited on again).  `timeout` bounds the whole:
    _WaitTimeout.

    The generator's own exceptions (query errors, a lost connection) go
    through untouched.  An exception raised from the *wait* (a timeout
    scope, a kill, Ctrl-C) first calls on_interrupt(y), if given, with what
    the generator last yielded; it may raise instead."""
    if interval is not None and interval <= 0:
        interval = None
    deadline = None if timeout is None else fibers.now() + timeout
    try:
        y = next(gen) if first is None else first
        while True:
            if fd is None:
                fileno, s = y
            else:
                fileno, s = fd, y
            limit = interval
            if deadline is not None:
                left = max(0.0, deadline - fibers.now())
                limit = left if limit is None else min(limit, left)
            try:
                ready = _wait_ready(fileno, s, limit)
            except BaseException:
                if on_interrupt is not None:
                    on_interrupt(y)
                raise
            if ready or _HAS_READY_NONE:
                if not ready:
                    _check_fd_closed(fileno)
                y = gen.send(ready)
            # After resuming the generator, so that data already there is
            # processed and a timeout of 0 polls once.
            if deadline is not None and fibers.now() >= deadline:
                raise _WaitTimeout("wait timeout expired")
    except StopIteration as ex:
        return ex.value


# ---- the lock ----------------------------------------------------------------

# Connection.lock is a fibers.Lock: the interface of threading.Lock, but a
# fiber that finds it taken parks (FIFO) until it is handed the lock; a
# thread lock would freeze every fiber of the thread, the holder included.
_FiberLock = fibers.Lock


# ---- the connection ----------------------------------------------------------

_CANCEL_GEN_TAKES_TIMEOUT = (
    "timeout" in inspect.signature(psycopg.Connection._cancel_gen).parameters
    if hasattr(psycopg.Connection, "_cancel_gen") else False)


class Connection(psycopg.Connection):
    """A ``psycopg.Connection`` whose every wait suspends only the calling
    fiber.  Make one with :meth:`connect` (or the module's
    :func:`connect`); everything else is psycopg's API.

    See the module's docstring for what happens when a fiber is
    interrupted (timed out, killed) in the middle of a command."""

    #: Seconds an interrupted command may take to be cancelled (the cancel
    #: request, then the command's end) before the connection is closed.
    cancel_timeout = 5.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = _FiberLock()

    @classmethod
    def connect(cls, conninfo: str = "", *, autocommit: bool = False,
                prepare_threshold: int | None = 5, context=None,
                row_factory=None, cursor_factory=None, **kwargs: Any):
        """Connect to a database server and return a new Connection; only
        the calling fiber waits.  The arguments are
        ``psycopg.Connection.connect()``'s.  Raises
        ``psycopg.OperationalError`` when no attempt succeeds
        (``psycopg.errors.ConnectionTimeout`` when one took longer than
        ``connect_timeout``)."""
        if not fibers.in_fiber():
            return _outside(cls.connect, conninfo, autocommit=autocommit,
                            prepare_threshold=prepare_threshold,
                            context=context, row_factory=row_factory,
                            cursor_factory=cursor_factory, **kwargs)
        params = cls._get_connection_params(conninfo, **kwargs)
        timeout = timeout_from_conninfo(params)
        # Splitting the attempts resolves host names (getaddrinfo): on the
        # pool, so that a slow DNS stalls only this fiber.
        attempts = fibers.blocking(conninfo_attempts, params)
        conn_errors = []
        rv = None
        for attempt in attempts:
            descr = "host: %r, port: %r, hostaddr: %r" % (
                attempt.get("host"), attempt.get("port"),
                attempt.get("hostaddr"))
            _log.debug("connection attempt: %s", descr)
            gen = cls._connect_gen(make_conninfo("", **attempt))
            try:
                rv = _consume(gen, None, None, timeout,
                              on_interrupt=lambda y: gen.close())
            except _WaitTimeout:
                gen.close()
                ex = _ConnectionTimeout("connection timeout expired")
                _log.debug("connection failed: %s: %s", descr, ex)
                conn_errors.append((ex, descr))
            except e.Error as ex:
                _log.debug("connection failed: %s: %s", descr, ex)
                conn_errors.append((ex, descr))
            else:
                _log.debug("connection succeeded: %s", descr)
                break
        if rv is None:
            last_ex = conn_errors[-1][0]
            if len(conn_errors) == 1:
                raise last_ex.with_traceback(None)
            lines = [str(last_ex),
                     "Multiple connection attempts failed. All failures were:"]
            lines.extend(f"- {descr}: {error}" for error, descr in conn_errors)
            try:
                new_ex = type(last_ex)("\n".join(lines), pgconn=last_ex.pgconn)
            except TypeError:           # pragma: no cover (psycopg < 3.3)
                new_ex = type(last_ex)("\n".join(lines))
            raise new_ex.with_traceback(None)

        rv._autocommit = bool(autocommit)
        if row_factory:
            rv.row_factory = row_factory
        if cursor_factory:
            rv.cursor_factory = cursor_factory
        if context:
            from psycopg.adapt import AdaptersMap
            rv._adapters = AdaptersMap(context.adapters)
        rv.prepare_threshold = prepare_threshold
        return rv

    def wait(self, gen, interval: float | None = None,
             timeout: float | None = None):
        """Consume a generator operating on the connection, suspending only
        this fiber whenever it would block (psycopg's hook; not usually
        called directly).  Raises ``psycopg.errors._WaitTimeout`` after
        ``timeout`` seconds, as psycopg does.  If this fiber is interrupted
        meanwhile with a command in flight, the command is cancelled (or
        the connection closed) first: see the module's docstring."""
        if not fibers.in_fiber():
            return _outside(self.wait, gen, interval, timeout)
        return _consume(gen, self.pgconn.socket, interval, timeout,
                        on_interrupt=lambda y: self._interrupted(gen, y,
                                                                 interval))

    def _interrupted(self, gen, last, interval):
        # Called from an except clause: the interruption goes on after us.
        pgconn = self.pgconn
        if pgconn.transaction_status != _ACTIVE:
            gen.close()             # nothing in flight: nothing to undo
            return
        try:
            self.cancel_safe(timeout=self.cancel_timeout)
            # The abandoned command's generator goes on where it stopped.
            _consume(gen, pgconn.socket, interval, self.cancel_timeout,
                     first=last)
        except e.Error as ex:
            # QueryCanceled is the expected outcome; another error of the
            # command's own is as good.  A failed cancel, or a command still
            # running (_WaitTimeout), is decided on below.
            if not isinstance(ex, e.QueryCanceled):
                _log.debug("interrupted command ended with %r", ex)
        except BaseException:
            # Interrupted again: no time to finish cleanly.
            self._close_interrupted("interrupted again while cancelling")
            raise
        finally:
            gen.close()
        if pgconn.transaction_status == _ACTIVE:
            self._close_interrupted(
                f"not ended within {self.cancel_timeout} s of its cancel")

    def _close_interrupted(self, why):
        if self.closed:
            return
        _log.warning("fibers.psycopg: interrupted command %s: closing the "
                     "connection", why)
        if self.pgconn.transaction_status == _ACTIVE:
            # The server would run the command to its end (a backend notices
            # its client gone only when it writes to it): one more cancel
            # request, sent by a fiber of its own, so that this fiber's
            # exception is not held up.  It needs the connection's cancel
            # key, so it is made ready before the connection goes.
            try:
                fibers.spawn(self._cancel_sender())
            except Exception as ex:     # no cancel key; a closed scheduler
                _log.warning("fibers.psycopg: no cancel request sent: %s", ex)
        self.pgconn.finish()

    def _cancel_sender(self):
        timeout = self.cancel_timeout
        if _has_cancel_safe():
            gen = (self._cancel_gen(timeout=0.0) if _CANCEL_GEN_TAKES_TIMEOUT
                   else self._cancel_gen())
            first = next(gen)   # makes and starts the cancel connection, now

            def send():
                try:
                    _consume(gen, None, None, timeout, first=first,
                             on_interrupt=lambda y: gen.close())
                except Exception as ex:
                    gen.close()
                    _log.warning("fibers.psycopg: cancel request failed: %s",
                                 ex)
        else:
            c = self.pgconn.get_cancel()

            def send():
                try:
                    fibers.blocking(c.cancel)
                except Exception as ex:
                    _log.warning("fibers.psycopg: cancel request failed: %s",
                                 ex)
        return send

    def cancel_safe(self, *, timeout: float = 30.0) -> None:
        """Cancel the current operation on the connection; only this fiber
        waits.  Raises ``psycopg.errors.CancellationTimeout`` after
        ``timeout`` seconds.  With libpq older than 17, falls back to
        :meth:`cancel`."""
        if not fibers.in_fiber():
            return _outside(self.cancel_safe, timeout=timeout)
        if not self._should_cancel():
            return
        if not _has_cancel_safe():
            self.cancel()
            return
        gen = (self._cancel_gen(timeout=0.0) if _CANCEL_GEN_TAKES_TIMEOUT
               else self._cancel_gen())
        try:
            _consume(gen, None, None, timeout or None,
                     on_interrupt=lambda y: gen.close())
        except _WaitTimeout:
            gen.close()
            raise _CancellationTimeout("cancellation timeout expired") from None

    def cancel(self) -> None:
        """Cancel the current operation on the connection (libpq's
        PQcancel, which blocks: it runs on fibers' blocking-call pool)."""
        if not self._should_cancel():
            return
        c = self.pgconn.get_cancel()
        fibers.blocking(c.cancel)

    def _should_cancel(self) -> bool:
        should = getattr(super(), "_should_cancel", None)
        if should is not None:
            return should()
        return not self.closed          # pragma: no cover (psycopg 3.1)


def connect(conninfo: str = "", **kwargs: Any) -> Connection:
    """Connect to a PostgreSQL server: ``psycopg.connect()``'s arguments,
    and a :class:`Connection` whose every wait (connect, execute, fetch,
    commit, COPY, notifies...) suspends only the calling fiber."""
    return Connection.connect(conninfo, **kwargs)
