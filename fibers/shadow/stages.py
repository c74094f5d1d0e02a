"""The stages of fibers-shadow's pipeline, one class each:

    Watch -> Queue -> Filter -> Queue -> Coalesce -> Journal -> Ship

Design: each stage is one fiber running a plain loop (``run``), and the
stages meet on bounded :class:`fibers.Queue`s of batches: a slow stage
parks the one before it, and so on up to the watcher, which stops reading
the kernel.  Coalesce hands its events straight to the journal
(journal.py), whose committer fiber is the fourth stage; Ship works only
from the journal's file, so a store that is away never holds up watching.

Counting: every stage counts what it took in (``n_in``), what it passed
on (``n_out``) and what ended in it by rule (``n_dropped``): the watcher's
overflow and error reports end in Filter, an event merged into an earlier
one of its path ends in Coalesce.  What a stage holds now is
``n_in - n_out - n_dropped`` (``held``).  Watch, Filter and Coalesce
count watcher events, one each, so "every event the watcher delivered is
journaled" is a sum (:func:`handled`): Watch's ``n_in`` equals the three
stages' drops plus Coalesce's ``n_out`` once nothing is on its way, and
``Shadow.stop()`` waits for that and for the journal's commit.  An event the rules keep from
the store is not dropped: it still changes the journal's picture of the
tree (Filter's ``filtered`` counts it).  Ship counts rows, not events:
rows sent (``n_in``, resends included), confirmed by the store
(``n_out``), and in batches the store did not confirm (``n_dropped``:
they stay unacked in the journal and are sent again).

The stages read what may change while running from ``live`` (the Shadow:
``.rules``, ``.settings`` and ``.paused``) afresh for every batch, since a
reload or ``ctl set`` replaces them at any moment.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import deque

import fibers
import fibers.fs
from fibers.sync import Empty, ShutDown

from .errors import JournalError, StoreError
from .store import shown

__all__ = ["Stage", "Watch", "Filter", "Coalesce", "Ship", "handled"]

log = logging.getLogger("fibers.shadow")

# Events Watch takes from the watcher at a time: one batch down the queues.
BATCH = 4096
MERGEABLE = ("modified", "closed_write", "attrib")
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0
# Seconds the store may leave a batch unanswered before the status says
# "stalled" rather than "connected" (a silent link is only given up after
# the store's own write timeout, PgStore.write_timeout).
STALL_AFTER = 2.0


class Stage:
    """One stage of the pipeline: ``run()`` in a fiber until its input
    ends, and its counts."""

    #: The stage's name, in logs and errors.
    name = "stage"

    def __init__(self):
        self.n_in = 0           # taken in
        self.n_out = 0          # passed on
        self.n_dropped = 0      # ended here, by rule

    @property
    def held(self) -> int:
        """What the stage holds now: taken in, not yet passed on or
        dropped."""
        return self.n_in - self.n_out - self.n_dropped

    def counts(self) -> dict:
        """``{"in": ..., "out": ..., "dropped": ...}``."""
        return {"in": self.n_in, "out": self.n_out,
                "dropped": self.n_dropped}

    def run(self):
        raise NotImplementedError


def handled(chain) -> int:
    """Of the events the first stage of ``chain`` took in (stages in
    order, counting the same events), how many are handled: dropped by a
    stage, or passed on by the last."""
    return sum(s.n_dropped for s in chain) + chain[-1].n_out


# ---- stage 1: watch --------------------------------------------------------

class Watch(Stage):
    """The watcher's events, in batches, onto ``out``.  Ends, shutting
    ``out`` down, once the watcher is closed and drained."""

    name = "watch"

    def __init__(self, watcher, out):
        super().__init__()
        self.watcher = watcher
        self.out = out

    def run(self):
        w = self.watcher
        try:
            while True:
                try:
                    batch = w.get_batch(BATCH)
                except ValueError:          # closed and drained
                    return
                self.n_in += len(batch)
                self.out.put(batch)
                self.n_out += len(batch)
        finally:
            self.out.shutdown()


# ---- stage 2: filter -------------------------------------------------------

class Filter(Stage):
    """Each event, with what of it ships (``Rules.apply``), onto ``out`` as
    ``(event, to_ship)`` pairs.  Every event goes on, the ones shipping
    nothing too (``filtered`` counts them): they still change the
    journal's picture.  The watcher's overflow and error reports end here
    (``overflows``, ``errors``), logged; ``on_error(event)`` is called for
    an error.  Ends, shutting ``out`` down, when ``inq`` is shut down."""

    name = "filter"

    def __init__(self, inq, out, live, on_error):
        super().__init__()
        self.inq = inq
        self.out = out
        self.live = live
        self.on_error = on_error
        self.filtered = 0
        self.overflows = 0
        self.errors = 0

    def run(self):
        try:
            while True:
                try:
                    batch = self.inq.get()
                except ShutDown:
                    return
                self.n_in += len(batch)
                out = []
                rules = self.live.rules
                for ev in batch:
                    k = ev.kind
                    if k == "overflow":
                        self.overflows += 1
                        log.warning("the kernel's event queue overflowed; "
                                    "the watcher rescans")
                        self.n_dropped += 1
                    elif k == "error":
                        self.errors += 1
                        log.warning("watcher error on %s: %s",
                                    shown(ev.path),
                                    os.strerror(ev.errno or 0))
                        self.on_error(ev)
                        self.n_dropped += 1
                    else:
                        keep = rules.apply(ev)
                        if not keep:
                            self.filtered += 1
                        out.append((ev, keep))
                if out:
                    self.out.put(out)
                    self.n_out += len(out)
        finally:
            self.out.shutdown()


# ---- stage 3: coalesce, then the journal -----------------------------------

class _Entry:
    # One watcher event waiting out its coalescing window: what it changes
    # in the picture (kind, path, src_path, is_dir) and what it ships.
    __slots__ = ("due", "kind", "path", "src_path", "is_dir", "time",
                 "ship")

    def __init__(self, due, ev, ship, t):
        self.due = due
        self.kind = ev.kind
        self.path = ev.path
        self.src_path = ev.src_path
        self.is_dir = ev.is_dir
        self.time = t
        self.ship = ship


class Coalesce(Stage):
    """Holds each event for its path's window (``window_ms``), merging a
    burst on one path into one event (``coalesced`` counts the merged
    events that would have shipped), then hands it to ``journal``: the
    rows to ship and the change to the picture, together (``rows`` counts
    the rows, ``kinds`` them per kind).  ``min_size`` is judged when the
    window ends, so a file written just after its creation is seen grown;
    ``hidden`` is the set of paths (bytes) kept from the store as too
    small.  Ends when ``inq`` is shut down and every window is over."""

    name = "coalesce"

    def __init__(self, inq, journal, live, hidden):
        super().__init__()
        self.inq = inq
        self.journal = journal
        self.live = live
        self.hidden = hidden
        self.coalesced = 0
        self.rows = 0
        self.kinds = {}
        # An event's time is on fibers' clock; rows carry wall time.
        self._wall = time.time() - fibers.now()

    def run(self):
        pending = deque()
        merge = {}              # path -> {kind | "tree": entry} mergeable
        closed = False
        while True:
            now = fibers.now()
            while pending and (closed or pending[0].due <= now):
                e = pending.popleft()
                m = merge.get(e.path)
                if m is not None:
                    for k in [k for k, x in m.items() if x is e]:
                        del m[k]
                    if not m:
                        del merge[e.path]
                self._record(e)
                self.n_out += 1
            if closed and not pending:
                return
            if pending:
                wait = max(0.0, pending[0].due - fibers.now())
            else:
                wait = None
            try:
                batch = self.inq.get(timeout=wait)
            except Empty:
                batch = ()
            except ShutDown:
                closed = True
                continue
            self.n_in += len(batch)
            window = self.live.settings.window
            for ev, keep in batch:
                self._add(ev, keep, pending, merge, window)

    def _add(self, ev, keep, pending, merge, window):
        k, p = ev.kind, ev.path
        m = merge.get(p)
        if k in MERGEABLE and m is not None:
            # A burst on one path ships once (a new file's writes ride on
            # its "created"); an event that ships nothing rides on any
            # entry of its path, whose picture change (an lstat when it
            # commits, later than this event) covers it.
            if not keep or k in m or (k == "modified" and "created" in m):
                if keep:
                    self.coalesced += 1
                self.n_dropped += 1
                return
        e = _Entry(ev.time + window, ev, keep, self._wall + ev.time)
        pending.append(e)
        tag = k if keep else "tree"
        if k in MERGEABLE:
            merge.setdefault(p, {})[tag] = e
        elif k == "created":
            merge[p] = {tag: e}
        else:                   # deleted, moved: a fresh start on both names
            merge.pop(p, None)
            if ev.src_path is not None:
                merge.pop(ev.src_path, None)

    def _record(self, e):
        # The entry's window is over: decide what ships (min_size is judged
        # now, so a file written just after its creation is seen grown),
        # and hand the rows and the picture change to the journal together.
        k, p, ship = e.kind, os.fsencode(e.path), e.ship
        hidden = self.hidden
        rules = self.live.rules
        if k == "deleted":
            if p in hidden:         # the store never saw it
                hidden.discard(p)
                ship = ()
            if e.is_dir:
                _drop_under(hidden, p)
            op = ("del", p, e.is_dir)
        elif k == "moved":
            src = os.fsencode(e.src_path)
            if src in hidden or _any_under(hidden, src):
                _move_under(hidden, src, p)
                if p in hidden:     # a file kept back: still too small
                    ship = ()
            op = ("move", src, p, e.is_dir)
        else:
            small = (not e.is_dir and ship and rules.too_small(e.path))
            if small:
                if k == "created" or p in hidden:
                    hidden.add(p)
                ship = ()
            elif ship and p in hidden:
                # Grown past min_size: for the store, it appears now.
                hidden.discard(p)
                if "created" in rules.kinds:
                    ship = [fibers.fs.Event("created", e.path, None, False)]
            op = ("put", p, e.is_dir, p in hidden)
        rows = [(x.kind, x.path, x.src_path, x.is_dir, e.time)
                for x in ship]
        self.journal.record(rows, op)
        self.rows += len(rows)
        for x in ship:
            self.kinds[x.kind] = self.kinds.get(x.kind, 0) + 1


def _drop_under(paths: set, d: bytes):
    if paths:
        pre = d + b"/"
        for p in [p for p in paths if p.startswith(pre)]:
            paths.discard(p)


def _any_under(paths: set, d: bytes) -> bool:
    pre = d + b"/"
    return any(p.startswith(pre) for p in paths)


def _move_under(paths: set, src: bytes, dst: bytes):
    pre = src + b"/"
    moved = [p for p in paths if p == src or p.startswith(pre)]
    for p in moved:
        paths.discard(p)
    for p in moved:
        paths.add(dst + p[len(src):])


# ---- stage 4 is the journal's committer (journal.py) -----------------------

# ---- stage 5: ship ---------------------------------------------------------

class Ship(Stage):
    """The journal's unacked rows, in batches of ``batch``, to ``store``,
    with up to ``ship_window`` batches unanswered; a batch is acked in the
    journal once the store confirmed it.  On any store error it
    reconnects (capped exponential backoff with jitter) and resends from
    the first unacked row; the store ignores rows it already has.  While
    ``live.paused`` it sends nothing.  A failure that is not the store's
    (the journal, a bug) goes to ``on_fatal``.  Runs until killed.

    ``state`` is connecting, connected, down or paused (:meth:`state_now`
    adds stalled); ``error`` the store's last error, ``batches`` and
    ``reconnects`` counts, ``acked_mark`` the highest seq below which
    everything is acked."""

    name = "ship"

    def __init__(self, journal, store, live, on_fatal):
        super().__init__()
        self.journal = journal
        self.store = store
        self.live = live
        self.on_fatal = on_fatal
        self.state = "connecting"
        self.error = None
        self.batches = 0
        self.reconnects = 0
        self.acked_mark = journal.acked_seq
        self._since = {}            # batch in flight -> when it was sent
        self._answer = 0.0          # when the store last answered
        # Notified whenever the shipper's state changes (a batch answered,
        # pause, resume): its waits look again at what they wait for.
        self._cv = fibers.Condition(fibers.Lock())

    def changed(self):
        """Wake the shipper's waits (after a pause or resume)."""
        with self._cv:
            self._cv.notify_all()

    def state_now(self):
        """``(state, stalled_for)``: "connected" is only honest while the
        store answers, so a batch unanswered for STALL_AFTER s reads
        ("stalled", seconds) until the store answers or the write times out
        (then "down")."""
        # Counted from when the batch was sent, or from the store's last
        # answer if that came later, so a slow but moving store is not
        # stalled.
        if self.state == "connected" and self._since:
            waited = fibers.now() - max(min(self._since.values()),
                                        self._answer)
            if waited >= STALL_AFTER:
                return "stalled", round(waited, 1)
        return self.state, None

    def run(self):
        backoff = BACKOFF_MIN
        store = self.store
        live = self.live
        while True:
            if live.paused:
                self.state = "paused"
                with self._cv:
                    self._cv.wait_for(lambda: not live.paused)
                continue
            try:
                self.state = "connecting"
                store.connect()
                self.state = "connected"
                self.error = None
                backoff = BACKOFF_MIN
                self._connected()
            except StoreError as e:
                self.state = "down"
                self.error = str(e)
                self.reconnects += 1
                log.warning("store %s: %s; retrying in %.1f s",
                            store.describe(), e, backoff)
                store.close()
                # A pause or resume cuts the back-off short.
                with self._cv:
                    self._cv.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _connected(self):
        journal = self.journal
        live = self.live
        after = journal.first_unacked() - 1
        self.acked_mark = max(self.acked_mark, after)
        inflight = {}               # lo -> hi
        self._since = since = {}    # lo -> fibers.now() when sent
        self._answer = fibers.now()
        failure = []
        state = {"after": after}

        def send(rows, lo, hi):
            confirmed = False
            try:
                self.store.write(rows)
                journal.ack(lo, hi)
                confirmed = True
                self.n_out += len(rows)
                self.batches += 1
            except StoreError as e:
                failure.append(e)
            except JournalError as e:
                self.on_fatal(e)
                failure.append(StoreError(str(e)))
            except Exception as e:
                # A store that fails in an unexpected way is a bug to see,
                # not a batch to drop quietly.
                log.exception("shipping a batch failed")
                self.on_fatal(e)
                failure.append(StoreError(str(e)))
            finally:
                if not confirmed:
                    self.n_dropped += len(rows)
                del inflight[lo]
                del since[lo]
                self._answer = fibers.now()
                self.acked_mark = (min(inflight) - 1 if inflight
                                   else state["after"])
                self.changed()

        try:
            while not failure and not live.paused:
                s = live.settings
                if len(inflight) >= s.ship_window:
                    with self._cv:
                        self._cv.wait()
                    continue
                rows = journal.read_unacked(state["after"], s.batch)
                if not rows:
                    journal.wait_committed(state["after"], 0.5)
                    continue
                lo, hi = rows[0][2], rows[-1][2]
                state["after"] = hi
                inflight[lo] = hi
                since[lo] = fibers.now()
                self.n_in += len(rows)
                fibers.spawn(send, rows, lo, hi)
        finally:
            with self._cv:
                self._cv.wait_for(lambda: not inflight)
        if failure:
            raise failure[0]
