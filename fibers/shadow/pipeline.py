"""The pipeline: watch -> filter -> coalesce -> journal -> ship.

Design: one fiber per stage, each written as a plain loop, joined by
bounded channels, all on one thread.  A slow stage parks the stage before
it, and so on up to the watcher, which stops reading the kernel; nothing
grows without bound in memory.  The one unbounded buffer is the journal on
disk, which is where a long outage of the store should accumulate.

What is guaranteed, and why:

- **Every change reaches the store once.**  The journal holds, beside the
  outbox of events to ship, the picture of the tree as the pipeline has
  handled it, and each commit changes both together.  Every event the
  watcher delivers travels down the stages to the journal, including the
  ones the rules keep from the store (those change the picture only).  So
  whenever the process dies (SIGKILL mid-run, during the start-up scan,
  during the drain, a full disk), the picture on disk is exactly as far
  as the outbox.  At start-up the watcher compares the disk with that
  picture (``fibers.fs.watch(baseline=)``) and reports precisely what the
  journal has not seen: a file deleted while we were down is reported
  deleted, and nothing journaled is reported again.
- **An event is acked in the journal only after the store confirmed the
  batch holding it**; on any store error the shipper reconnects (capped
  exponential backoff with jitter) and resends from the first unacked
  seq, and the store ignores rows it already has.
- **Paths are bytes** from the kernel to the store (names need not be
  UTF-8).
- **No stage dies silently**: a stage that fails makes the whole program
  fail visibly (``fatal`` in the status, the log, exit status 1), and
  every wait in ``stop()`` is bounded.
- The state directory is checked against the journal at start (a journal
  that vanished or was replaced, a root that is another directory now)
  and while running (the journal deleted under us): either is refused
  rather than guessed around.

Rules (kinds, globs, minimum size, window) can change at any moment, from
the config file or the control socket; each stage reads them afresh for
every event, and a change of kinds also reaches the kernel's mask through
Watcher.set_events.  ``min_size`` is judged when a path's coalescing
window ends (one lstat), so a file created empty and written a moment
later (as ``cp`` does) ships as ``created``; a file kept back as too small
that grows later ships as ``created`` then.

One environment variable, for tests of overflow handling:
``FIBERS_SHADOW_BOUNDED_QUEUE=1`` makes the watcher keep the kernel's
bounded event queue (``unlimited_queue=False``; fanotify only, inotify's
queue is always bounded by /proc/sys/fs/inotify/max_queued_events), so a
burst can overflow it and the rescan that repairs it can be seen.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import logging
import os
import random
import socket
import time
from collections import deque

import fibers
import fibers.fs
from fibers.sync import Empty, Queue, ShutDown

from . import config
from .journal import (Journal, JournalError, StateError, journal_path,
                      marker_path)
from .store import StoreError, open_store, shown

__all__ = ["Shadow", "Rules"]

log = logging.getLogger("fibers.shadow")

MERGEABLE = ("modified", "closed_write", "attrib")
# How many batches (each up to 4096 events) wait between two stages before
# the producing stage parks: about the 4096 events the hand-rolled channel
# held, give or take a partly full batch.
QUEUE_BATCHES = 2
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0
# Seconds the store may leave a batch unanswered before the status says
# "stalled" rather than "connected" (a silent link is only given up after
# the store's own write timeout, PgStore.write_timeout).
STALL_AFTER = 2.0


class Rules:
    """The filter, compiled from the settings.  A glob without ``/``
    matches any component of the path below its root (so ``.git`` or
    ``*.swp`` work anywhere); a glob with ``/`` matches the whole path
    below the root (``build/*``).  ``include`` empty means everything."""

    def __init__(self, s: config.Settings):
        self.kinds = frozenset(s.kinds)
        self.include = tuple(s.include)
        self.exclude = tuple(s.exclude)
        self.min_size = s.min_size
        self.roots = sorted((r.rstrip("/") + "/" for r in s.roots),
                            key=len, reverse=True)

    def _rel(self, path):
        for r in self.roots:
            if path.startswith(r):
                return path[len(r):]
        return path.lstrip("/")

    @staticmethod
    def _match(rel, globs):
        parts = rel.split("/")
        for g in globs:
            if "/" in g:
                if fnmatch.fnmatchcase(rel, g.strip("/")):
                    return True
            elif any(fnmatch.fnmatchcase(p, g) for p in parts):
                return True
        return False

    def path_ok(self, path) -> bool:
        if path is None:
            return False
        rel = self._rel(path)
        if self.include and not self._match(rel, self.include):
            return False
        return not (self.exclude and self._match(rel, self.exclude))

    def too_small(self, path) -> bool:
        """Whether the file at ``path`` is below ``min_size`` now (a file
        already gone is not: its event goes through)."""
        if self.min_size:
            try:
                return os.lstat(path).st_size < self.min_size
            except OSError:
                pass
        return False

    def apply(self, ev) -> list:
        """The events to ship for ``ev`` by kind and path (``min_size`` is
        judged later, see the coalescer): none, ``[ev]``, or, for a move
        the rules see only one side of (a path excluded, or the kind
        ``moved`` off), what a reader of the store should see instead: a
        ``deleted`` of the old path and/or a ``created`` of the new one.
        (A directory moved that way is reported for the directory only.)"""
        k = ev.kind
        if k == "moved":
            src_ok = self.path_ok(ev.src_path)
            dst_ok = self.path_ok(ev.path)
            if "moved" in self.kinds and src_ok and dst_ok:
                return [ev]
            out = []
            if src_ok and "deleted" in self.kinds:
                out.append(fibers.fs.Event(
                    "deleted", ev.src_path, None, ev.is_dir, ev.pid,
                    ev.time, ev.seq))
            if dst_ok and "created" in self.kinds:
                out.append(fibers.fs.Event(
                    "created", ev.path, None, ev.is_dir, ev.pid, ev.time,
                    ev.seq))
            return out
        if k in self.kinds and self.path_ok(ev.path):
            return [ev]
        return []

    def kernel_kinds(self) -> frozenset:
        """The kinds to ask the watcher for: a move must still be seen
        when only ``created`` or ``deleted`` is wanted."""
        if self.kinds & {"created", "deleted"}:
            return self.kinds | {"moved"}
        return self.kinds


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


class Shadow:
    """The application's core: owns the watcher, the stages, the journal
    and the store.  ``start()`` in a fiber, then ``stop()`` to drain.

    ``store``: a Store to ship to instead of the one the settings' URL
    names (to embed the pipeline, or to put a faulty link in a test)."""

    def __init__(self, settings: config.Settings, overrides=None,
                 store=None):
        self.settings = settings
        self._store_override = store
        self.overrides = overrides or {}
        self.rules = Rules(settings)
        self.host = socket.gethostname()
        self.paused = False
        self.config_error = None
        self.fatal = None               # an error that stops the app
        self.started = time.time()
        self.counts = {"seen": 0, "filtered": 0, "coalesced": 0,
                       "journaled": 0, "shipped": 0, "overflows": 0,
                       "errors": 0}
        self.kinds_seen = {}
        self.store_state = "connecting"
        self.store_error = None
        self._ship_since = {}           # batch in flight -> when it was sent
        self._ship_answer = 0.0         # when the store last answered
        self.acked_mark = 0
        self.batches = 0
        self.reconnects = 0
        self._done = 0                  # watcher events fully handled
        self._hidden = set()            # paths kept back by min_size
        self._stopping = False
        self._fibers = []
        # Set once a fatal error is in self.fatal (wait_fatal).
        self._fatal_set = fibers.Event()
        # Notified whenever the shipper's state changes (a batch answered,
        # pause, resume): its waits look again at what they wait for.
        self._ship_cv = fibers.Condition(fibers.Lock())
        # Batches (of up to 4096 events) between the stages; a full queue
        # parks its producer, which stops reading its own input.
        self.raw = Queue(QUEUE_BATCHES)
        self.filtered = Queue(QUEUE_BATCHES)
        self._coalescing = 0
        self._wall = time.time() - fibers.now()
        self.watcher = None
        self.journal = None
        self._root_ids = {}             # as the journal will have them

    # ---- life cycle --------------------------------------------------------

    def start(self):
        """Check the state directory, open the journal and the watcher
        (which reports what changed since the journal's picture) and start
        every stage.  Raises StateError (the state directory does not
        match: refused), JournalError or OSError (a root that cannot be
        watched)."""
        s = self.settings
        sd = s.state_dir
        jpath = journal_path(sd)
        marker = _read_marker(sd)
        if marker is not None and not _nonempty(jpath):
            raise StateError(
                f"the journal {jpath} is missing or empty, but the state "
                f"directory shows one existed (source {marker}); its "
                f"unshipped events are gone; to start afresh, run with "
                f"--reset")
        self.journal = j = Journal(jpath, self.host, s.source,
                                   on_error=self._fail)
        try:
            self._start(marker)
        except BaseException:
            j.close(1.0)
            raise

    def _start(self, marker):
        s = self.settings
        j = self.journal
        if marker is not None and marker != j.own_source:
            raise StateError(
                f"the journal {j.path} was replaced (source "
                f"{j.own_source}, the state directory says {marker}); to "
                f"start afresh, run with --reset")
        if marker is None:
            _write_marker(s.state_dir, j.own_source)
        self.acked_mark = j.acked_seq
        self.store = self._store_override or open_store(s.store_url())
        roots = [_real(r) for r in s.roots]
        ids = {r: _root_id(r) for r in roots}
        known = [r for r in roots if j.has_picture and r in j.roots]
        for r in known:
            if j.roots[r] is not None and ids[r] != j.roots[r]:
                raise StateError(
                    f"the root {os.fsdecode(r)} is not the directory the "
                    f"journal describes (device and inode differ: it was "
                    f"replaced or moved); to start afresh, run with "
                    f"--reset")
        kw = dict(events=self.rules.kernel_kinds(), exclude=[s.state_dir],
                  unlimited_queue=os.environ.get(
                      "FIBERS_SHADOW_BOUNDED_QUEUE", "") in ("", "0"))
        fresh = [r for r in roots if r not in known]
        if known:
            picture, self._hidden = j.load_picture()
            self.watcher = w = fibers.fs.watch(known, baseline=picture,
                                               **kw)
            del picture
        else:
            # A root the journal has no picture of starts silently, as a
            # root added while running does: its picture is what is there.
            self.watcher = w = fibers.fs.watch(fresh, **kw)
        for r in fresh:
            if known:
                w.add(r)
            j.record([], ("import", r, w.picture(r)))
        for r in set(j.roots) - set(roots):
            j.record([], ("forget", r))
        self._root_ids = ids
        j.record([], ("roots", dict(ids)))
        if not j.has_picture:
            j.record([], ("picture",))
        log.info("watching %s (%s), journal %s, store %s",
                 ", ".join(s.roots), w.backend, j.path,
                 self.store.describe())
        for fn in (self._watch_loop, self._filter_loop, self._coalesce_loop,
                   self._ship_loop, self._state_loop):
            self._fibers.append(fibers.spawn(self._guard, fn))
        if s.config_file:
            self._fibers.append(fibers.spawn(self._guard, self._config_loop))

    def _guard(self, fn):
        try:
            fn()
        except fibers.FiberExit:
            raise
        except JournalError as e:
            self._fail(e)
        except Exception as e:
            log.exception("%s failed", fn.__name__)
            self._fail(e)
        else:
            if not self._stopping:
                self._fail(RuntimeError(f"{fn.__name__} ended"))

    def _fail(self, e):
        if self.fatal is None:
            self.fatal = e
            self._fatal_set.set()

    def wait_fatal(self, timeout=None):
        """Park until a fatal error (returned) or timeout (None)."""
        if self.fatal is None:
            self._fatal_set.wait(timeout)
        return self.fatal

    def stop(self, grace: float = 2.0) -> bool:
        """Stop watching, push everything seen into the journal, ship what
        can be shipped within ``grace`` seconds, close.  True if the
        journal was fully shipped.  Every wait here is bounded: a stage
        that cannot finish leaves its events out of the journal, and the
        next start's diff finds them again."""
        self._stopping = True
        deadline = fibers.now() + grace
        w = self.watcher
        try:
            w.close()               # the queue stays readable
        except Exception as e:
            log.error("closing the watcher: %s", e)
        try:
            with fibers.move_on_after(max(0.2, deadline - fibers.now())):
                fibers.wait_for(lambda: self.fatal is not None or (
                    self._done >= self.counts["seen"]
                    and self._stages_drained()), None)
            if self.fatal is None:
                self.journal.flush(max(0.2, deadline - fibers.now()))
        except JournalError as e:
            self._fail(e)
        shipped = False
        if self.fatal is None and not self.paused:
            with fibers.move_on_after(max(0.0, deadline - fibers.now())):
                fibers.wait_for(lambda: self.journal.depth == 0
                                or self.fatal is not None)
                shipped = self.fatal is None
        for f in self._fibers:
            if not f.dead:
                f.kill()
        self.store.close()
        try:
            self.journal.close()
        except JournalError as e:
            self._fail(e)
        return shipped

    def _stages_drained(self):
        return (len(self.raw) == 0 and len(self.filtered) == 0
                and self._coalescing == 0 and self.journal.pending == 0)

    # ---- stage 1: watch ----------------------------------------------------

    def _watch_loop(self):
        w = self.watcher
        try:
            while True:
                try:
                    batch = w.get_batch(4096)
                except ValueError:          # closed and drained
                    return
                self.counts["seen"] += len(batch)
                self.raw.put(batch)
        finally:
            self.raw.shutdown()

    # ---- stage 2: filter ---------------------------------------------------

    def _filter_loop(self):
        # Every event goes on, with what of it ships: the ones shipping
        # nothing still change the journal's picture.
        try:
            while True:
                try:
                    batch = self.raw.get()
                except ShutDown:
                    return
                out = []
                rules = self.rules
                for ev in batch:
                    k = ev.kind
                    if k == "overflow":
                        self.counts["overflows"] += 1
                        log.warning("the kernel's event queue overflowed; "
                                    "the watcher rescans")
                        self._done += 1
                    elif k == "error":
                        self.counts["errors"] += 1
                        log.warning("watcher error on %s: %s",
                                    shown(ev.path),
                                    os.strerror(ev.errno or 0))
                        self._root_error(ev)
                        self._done += 1
                    else:
                        keep = rules.apply(ev)
                        if not keep:
                            self.counts["filtered"] += 1
                        out.append((ev, keep))
                if out:
                    self.filtered.put(out)
        finally:
            self.filtered.shutdown()

    def _root_error(self, ev):
        # A root deleted or moved away while watched: the watcher reported
        # its contents deleted and will watch a directory made there again.
        # Whatever is at that path at the next start is another directory,
        # to be diffed against the picture, not refused as a replacement.
        r = _real(ev.path) if ev.path else None
        if ev.errno == errno.ENOENT and r in self._root_ids:
            self._root_ids[r] = None
            self.journal.record([], ("roots", dict(self._root_ids)))

    # ---- stage 3: coalesce, then the journal ----------------------------

    def _coalesce_loop(self):
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
                self._journal(e)
                self._done += 1
                self._coalescing -= 1
            if closed and not pending:
                return
            if pending:
                wait = max(0.0, pending[0].due - fibers.now())
            else:
                wait = None
            try:
                batch = self.filtered.get(timeout=wait)
            except Empty:
                batch = ()
            except ShutDown:
                closed = True
                continue
            window = self.settings.window
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
                    self.counts["coalesced"] += 1
                self._done += 1
                return
        e = _Entry(ev.time + window, ev, keep, self._wall + ev.time)
        pending.append(e)
        self._coalescing += 1
        tag = k if keep else "tree"
        if k in MERGEABLE:
            merge.setdefault(p, {})[tag] = e
        elif k == "created":
            merge[p] = {tag: e}
        else:                   # deleted, moved: a fresh start on both names
            merge.pop(p, None)
            if ev.src_path is not None:
                merge.pop(ev.src_path, None)

    def _journal(self, e):
        # The entry's window is over: decide what ships (min_size is judged
        # now, so a file written just after its creation is seen grown),
        # and hand the rows and the picture change to the journal together.
        k, p, ship = e.kind, os.fsencode(e.path), e.ship
        hidden = self._hidden
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
            small = (not e.is_dir and ship
                     and self.rules.too_small(e.path))
            if small:
                if k == "created" or p in hidden:
                    hidden.add(p)
                ship = ()
            elif ship and p in hidden:
                # Grown past min_size: for the store, it appears now.
                hidden.discard(p)
                if "created" in self.rules.kinds:
                    ship = [fibers.fs.Event("created", e.path, None, False)]
            op = ("put", p, e.is_dir, p in hidden)
        rows = [(x.kind, x.path, x.src_path, x.is_dir, e.time)
                for x in ship]
        self.journal.record(rows, op)
        self.counts["journaled"] += len(rows)
        for x in ship:
            self.kinds_seen[x.kind] = self.kinds_seen.get(x.kind, 0) + 1

    # ---- stage 4 is the journal (its own committer fiber) -------------------

    # ---- stage 5: ship -----------------------------------------------------

    def _ship_loop(self):
        backoff = BACKOFF_MIN
        store = self.store
        while True:
            if self.paused:
                self.store_state = "paused"
                with self._ship_cv:
                    self._ship_cv.wait_for(lambda: not self.paused)
                continue
            try:
                self.store_state = "connecting"
                store.connect()
                self.store_state = "connected"
                self.store_error = None
                backoff = BACKOFF_MIN
                self._ship_connected()
            except StoreError as e:
                self.store_state = "down"
                self.store_error = str(e)
                self.reconnects += 1
                log.warning("store %s: %s; retrying in %.1f s",
                            store.describe(), e, backoff)
                store.close()
                # A pause or resume cuts the back-off short.
                with self._ship_cv:
                    self._ship_cv.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _ship_connected(self):
        journal = self.journal
        after = journal.first_unacked() - 1
        self.acked_mark = max(self.acked_mark, after)
        inflight = {}               # lo -> hi
        self._ship_since = since = {}   # lo -> fibers.now() when sent
        self._ship_answer = fibers.now()
        failure = []
        state = {"after": after}

        def send(rows, lo, hi):
            try:
                self.store.write(rows)
                journal.ack(lo, hi)
                self.counts["shipped"] += len(rows)
                self.batches += 1
            except StoreError as e:
                failure.append(e)
            except JournalError as e:
                self._fail(e)
                failure.append(StoreError(str(e)))
            except Exception as e:
                # A store that fails in an unexpected way is a bug to see,
                # not a batch to drop quietly.
                log.exception("shipping a batch failed")
                self._fail(e)
                failure.append(StoreError(str(e)))
            finally:
                del inflight[lo]
                del since[lo]
                self._ship_answer = fibers.now()
                self.acked_mark = (min(inflight) - 1 if inflight
                                   else state["after"])
                self._ship_changed()

        try:
            while not failure and not self.paused:
                s = self.settings
                if len(inflight) >= s.ship_window:
                    with self._ship_cv:
                        self._ship_cv.wait()
                    continue
                rows = journal.read_unacked(state["after"], s.batch)
                if not rows:
                    journal.wait_committed(state["after"], 0.5)
                    continue
                lo, hi = rows[0][2], rows[-1][2]
                state["after"] = hi
                inflight[lo] = hi
                since[lo] = fibers.now()
                fibers.spawn(send, rows, lo, hi)
        finally:
            with self._ship_cv:
                self._ship_cv.wait_for(lambda: not inflight)
        if failure:
            raise failure[0]

    # ---- the state directory, watched ------------------------------------

    def _state_loop(self):
        # The journal deleted or replaced under a running daemon would
        # take every later event with it, silently (SQLite writes on to the
        # unlinked file): stop, and say why.
        path = self.journal.path
        first = os.stat(path)
        while True:
            fibers.sleep(1.0)
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != (first.st_dev,
                                                       first.st_ino):
                raise StateError(
                    f"the journal {path} was deleted or replaced while "
                    f"running (the state directory "
                    f"{self.settings.state_dir} removed?); stopping, since "
                    f"events could no longer be kept")

    # ---- live configuration ------------------------------------------------

    def _config_loop(self):
        path = self.settings.config_file
        d, name = os.path.split(path)
        with fibers.fs.watch(d, events={"created", "closed_write", "moved"},
                             recursive=False) as cw:
            while True:
                batch = cw.get_batch()
                if not any(path in (ev.path, ev.src_path) for ev in batch):
                    continue
                # editors write in several steps: let them finish
                fibers.sleep(0.1)
                while True:
                    try:
                        cw.get_batch(timeout=0)
                    except fibers.Timeout:
                        break
                self.reload_config()

    def reload_config(self) -> bool:
        """Read the config file again and apply it; a bad file is logged
        and the old settings stay."""
        try:
            new = config.reload(self.settings, self.overrides)
        except config.ConfigError as e:
            self.config_error = str(e)
            log.error("config not applied, the old rules stay: %s", e)
            return False
        old = self.settings
        if new.store_url() != old.store_url() or new.source != old.source \
                or new.state_dir != old.state_dir:
            log.warning("store, source and state_dir changes take effect "
                        "at the next start")
            new.store, new.source, new.state_dir = (old.store, old.source,
                                                    old.state_dir)
        self._apply(new)
        self.config_error = None
        log.info("config reloaded: %s", new.rules())
        return True

    def set(self, key: str, value) -> dict:
        """Change one rule now (``ctl set KEY=VALUE``); ConfigError if the
        key or value is bad.  Returns the rules in force."""
        new = dataclasses.replace(self.settings)
        config.apply_rule(new, key, value)
        self._apply(new)
        return new.rules()

    def _apply(self, new):
        old = self.settings
        j = self.journal
        changed = False
        for r in set(old.roots) - set(new.roots):
            try:
                self.watcher.remove(r)
            except KeyError:
                pass
            j.record([], ("forget", _real(r)))
            changed = True
        for r in new.roots:
            if r not in old.roots:
                self.watcher.add(r)
                j.record([], ("import", _real(r), self.watcher.picture(r)))
                changed = True
        if changed:
            self._root_ids = {_real(r): self._root_ids.get(_real(r))
                              or _root_id(_real(r)) for r in new.roots}
            j.record([], ("roots", dict(self._root_ids)))
        rules = Rules(new)
        if rules.kernel_kinds() != self.rules.kernel_kinds():
            self.watcher.set_events(rules.kernel_kinds())
        self.settings = new
        self.rules = rules

    def pause(self):
        """Stop shipping; the journal keeps growing."""
        self.paused = True
        self._ship_changed()

    def resume(self):
        self.paused = False
        self._ship_changed()

    def _ship_changed(self):
        with self._ship_cv:
            self._ship_cv.notify_all()

    # ---- status ------------------------------------------------------------

    def status(self) -> dict:
        """Everything the UI and `ctl status` show, JSON-able."""
        j = self.journal
        ws = self.watcher.stats() if not self.watcher.closed else {}
        # "connected" is only honest while the store answers: a batch
        # unanswered for STALL_AFTER s (counted from when it was sent, or
        # from the store's last answer if that came later, so a slow but
        # moving store is not stalled) reads "stalled" until the store
        # answers or the write times out (then "down").
        store_state, stalled_for = self.store_state, None
        if store_state == "connected" and self._ship_since:
            waited = fibers.now() - max(min(self._ship_since.values()),
                                        self._ship_answer)
            if waited >= STALL_AFTER:
                store_state, stalled_for = "stalled", round(waited, 1)
        return {
            "time": round(time.time(), 3),
            "uptime": round(time.time() - self.started, 1),
            "paused": self.paused,
            "roots": list(self.settings.roots),
            "rules": self.settings.rules(),
            "counts": dict(self.counts),
            "kinds": dict(self.kinds_seen),
            "watcher": {k: ws.get(k) for k in
                        ("backend", "events", "overflows", "rescans",
                         "queued", "errors")},
            "journal": {"path": j.path, "source": j.source,
                        "last_seq": j.last_seq,
                        "committed_seq": j.committed_seq,
                        "acked_seq": self.acked_mark,
                        "depth": j.depth,
                        "lag": j.committed_seq - self.acked_mark},
            "store": {"url": self.store.describe(),
                      "state": store_state,
                      "stalled_for": stalled_for,
                      "last_error": self.store_error,
                      "batches": self.batches,
                      "reconnects": self.reconnects},
            "config_error": self.config_error,
            "fatal": str(self.fatal) if self.fatal else None,
        }


# ---- helpers ----------------------------------------------------------------

def _real(root) -> bytes:
    r = os.path.realpath(os.fsencode(root))
    return r.rstrip(b"/") if len(r) > 1 else r


def _root_id(r: bytes):
    st = os.stat(r)
    return (st.st_dev, st.st_ino)


def _nonempty(path) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _read_marker(state_dir):
    try:
        with open(marker_path(state_dir)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _write_marker(state_dir, source):
    path = marker_path(state_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(source + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
