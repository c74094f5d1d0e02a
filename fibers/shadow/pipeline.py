"""The pipeline: watch -> filter -> coalesce -> journal -> ship.

Design: one fiber per stage, each written as a plain loop, joined by
bounded channels, all on one thread.  A slow stage parks the stage before
it, and so on up to the watcher, which stops reading the kernel; nothing
grows without bound in memory.  The one unbounded buffer is the journal on
disk, which is where a long outage of the store should accumulate.

Nothing is lost, by construction rather than by care:

- an event is acked in the journal only after the store confirmed the
  batch holding it; on any store error the shipper reconnects (capped
  exponential backoff with jitter) and resends from the first unacked
  seq, and the store ignores rows it already has;
- the watcher's snapshot (its picture of the tree, used at start-up to
  report what changed while we were down) is saved only at a quiescent
  point: every event the watcher delivered has been filtered, coalesced
  and committed to the journal.  A snapshot never runs ahead of the
  journal, so a SIGKILL at any moment loses nothing: what was journaled
  ships after the restart, and what was not is found again by the diff.
  (It may be reported twice; the store then holds both reports.)

Rules (kinds, globs, minimum size, window) can change at any moment, from
the config file or the control socket; each stage reads them afresh for
every event, and a change of kinds also reaches the kernel's mask through
Watcher.set_events.  ``min_size`` costs one lstat per event, made inline:
the entry was just touched, so the kernel answers from its caches.

One environment variable, for tests of overflow handling:
``FIBERS_SHADOW_BOUNDED_QUEUE=1`` makes the watcher keep the kernel's
bounded event queue (``unlimited_queue=False``; fanotify only, inotify's
queue is always bounded by /proc/sys/fs/inotify/max_queued_events), so a
burst can overflow it and the rescan that repairs it can be seen.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import random
import socket
import time
from collections import deque

import fibers
import fibers.fs

from . import config
from .journal import Journal, JournalError, journal_path
from .store import StoreError, open_store
from .sync import Channel, Closed

__all__ = ["Shadow", "Rules"]

log = logging.getLogger("fibers.shadow")

MERGEABLE = ("modified", "closed_write", "attrib")
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

    def _size_ok(self, ev) -> bool:
        if self.min_size and not ev.is_dir and ev.kind != "deleted":
            try:
                return os.lstat(ev.path).st_size >= self.min_size
            except OSError:
                pass            # gone already: let the event through
        return True

    def apply(self, ev) -> list:
        """The events to ship for ``ev``: none, ``[ev]``, or, for a move
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
        if k in self.kinds and self.path_ok(ev.path) and self._size_ok(ev):
            return [ev]
        return []

    def kernel_kinds(self) -> frozenset:
        """The kinds to ask the watcher for: a move must still be seen
        when only ``created`` or ``deleted`` is wanted."""
        if self.kinds & {"created", "deleted"}:
            return self.kinds | {"moved"}
        return self.kinds


class _Entry:
    __slots__ = ("due", "kind", "path", "src_path", "is_dir", "time")

    def __init__(self, due, kind, path, src_path, is_dir, t):
        self.due = due
        self.kind = kind
        self.path = path
        self.src_path = src_path
        self.is_dir = is_dir
        self.time = t


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
        self.snapshots = 0              # checkpoints saved
        self._done = 0                  # events fully handled by the stages
        self._dirty = True              # save a first snapshot soon
        self._stopping = False
        self._fibers = []
        self._ship_key = ("fibers.shadow.ship", id(self))
        self.raw = Channel(4096)
        self.filtered = Channel(4096)
        self._coalescing = 0
        self._wall = time.time() - fibers.now()
        sd = settings.state_dir
        self.snapshot_path = os.path.join(sd, "snapshot")

    # ---- life cycle --------------------------------------------------------

    def start(self):
        """Open the journal and the watcher and start every stage.  Raises
        JournalError or OSError (a root that cannot be watched)."""
        s = self.settings
        self.journal = Journal(journal_path(s.state_dir), self.host,
                               s.source)
        self.acked_mark = self.journal.acked_seq
        self.store = self._store_override or open_store(s.store_url())
        first = not os.path.exists(self.snapshot_path)
        self.watcher = fibers.fs.watch(
            s.roots, events=self.rules.kernel_kinds(),
            exclude=[s.state_dir],
            snapshot=self.snapshot_path,
            unlimited_queue=os.environ.get("FIBERS_SHADOW_BOUNDED_QUEUE",
                                           "") in ("", "0"))
        if first:
            # Without a snapshot, a crash before the first checkpoint
            # would leave nothing to compare the tree with at the next
            # start.  With none, the watcher reported no differences, so
            # its picture is not ahead of the (empty) queue.
            self.watcher.save_snapshot()
            self.snapshots += 1
        log.info("watching %s (%s), journal %s, store %s",
                 ", ".join(s.roots), self.watcher.backend,
                 self.journal.path, self.store.describe())
        for fn in (self._watch_loop, self._filter_loop, self._coalesce_loop,
                   self._ship_loop, self._checkpoint_loop):
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

    def _fail(self, e):
        if self.fatal is None:
            self.fatal = e
            fibers.signal_all(("fibers.shadow.fatal", id(self)))

    def wait_fatal(self, timeout=None):
        """Park until a fatal error (returned) or timeout (None)."""
        if self.fatal is None:
            try:
                fibers.wait_signal(("fibers.shadow.fatal", id(self)),
                                   timeout)
            except fibers.Timeout:
                pass
        return self.fatal

    def stop(self, grace: float = 2.0) -> bool:
        """Stop watching, push everything seen into the journal, ship what
        can be shipped within ``grace`` seconds, close.  True if the
        journal was fully shipped."""
        self._stopping = True
        deadline = fibers.now() + grace
        w = self.watcher
        # The snapshot must not run ahead of the journal: close without
        # saving, and save the picture taken at the close only once
        # everything the watcher delivered is journaled.
        try:
            w.close(save=False)     # the queue stays readable
        except Exception as e:
            log.error("closing the watcher: %s", e)
        ok_journal = False
        try:
            with fibers.move_on_after(max(0.2, deadline - fibers.now())):
                fibers.wait_for(lambda: self._done >= self.counts["seen"]
                                and self.fatal is None
                                and self._stages_drained(), None)
                self.journal.flush()
                ok_journal = self._done >= self.counts["seen"]
        except JournalError as e:
            self._fail(e)
        if ok_journal:
            try:
                w.save_snapshot()
                self.snapshots += 1
            except Exception as e:
                log.error("cannot save the snapshot: %s", e)
        shipped = False
        if self.fatal is None and not self.paused:
            with fibers.move_on_after(max(0.0, deadline - fibers.now())):
                fibers.wait_for(lambda: self.journal.depth == 0)
                shipped = True
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
                self._dirty = True
                self.raw.put_many(batch)
        finally:
            self.raw.close()

    # ---- stage 2: filter ---------------------------------------------------

    def _filter_loop(self):
        try:
            while True:
                try:
                    batch = self.raw.get_batch()
                except Closed:
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
                        log.warning("watcher error on %s: %s", ev.path,
                                    os.strerror(ev.errno or 0))
                        self._done += 1
                    else:
                        keep = rules.apply(ev)
                        if keep:
                            out += keep
                        else:
                            self.counts["filtered"] += 1
                        # each event passed on is counted done downstream
                        self._done += 1 - len(keep)
                if out:
                    self.filtered.put_many(out)
        finally:
            self.filtered.close()

    # ---- stage 3: coalesce -------------------------------------------------

    def _coalesce_loop(self):
        pending = deque()
        merge = {}              # path -> {kind: entry} still mergeable
        closed = False
        journal = self.journal
        while True:
            now = fibers.now()
            while pending and (closed or pending[0].due <= now):
                e = pending.popleft()
                m = merge.get(e.path)
                if m is not None and m.get(e.kind) is e:
                    del m[e.kind]
                    if not m:
                        del merge[e.path]
                journal.append(e.kind, e.path, e.src_path, e.is_dir, e.time)
                self.counts["journaled"] += 1
                self.kinds_seen[e.kind] = self.kinds_seen.get(e.kind, 0) + 1
                self._done += 1
                self._coalescing -= 1
            if closed and not pending:
                return
            if pending:
                wait = max(0.0, pending[0].due - fibers.now())
            else:
                wait = None
            try:
                batch = self.filtered.get_batch(4096, wait)
            except Closed:
                closed = True
                continue
            window = self.settings.window
            for ev in batch:
                self._add(ev, pending, merge, window)

    def _add(self, ev, pending, merge, window):
        k, p = ev.kind, ev.path
        m = merge.get(p)
        if k in MERGEABLE and m is not None and (
                k in m or (k == "modified" and "created" in m)):
            # a burst on one path ships once (a new file's writes ride
            # on its "created")
            self.counts["coalesced"] += 1
            self._done += 1
            return
        e = _Entry(ev.time + window, k, p, ev.src_path, ev.is_dir,
                   self._wall + ev.time)
        pending.append(e)
        self._coalescing += 1
        if k in MERGEABLE:
            merge.setdefault(p, {})[k] = e
        elif k == "created":
            merge[p] = {"created": e}
        else:                   # deleted, moved: a fresh start on both names
            merge.pop(p, None)
            if ev.src_path is not None:
                merge.pop(ev.src_path, None)

    # ---- stage 4 is the journal (its own committer fiber) -------------------

    # ---- stage 5: ship -----------------------------------------------------

    def _ship_loop(self):
        backoff = BACKOFF_MIN
        store = self.store
        while True:
            if self.paused:
                self.store_state = "paused"
                fibers.wait_signal(self._ship_key)
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
                try:
                    fibers.wait_signal(self._ship_key,
                                       backoff * random.uniform(0.5, 1.0))
                except fibers.Timeout:
                    pass
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
            finally:
                del inflight[lo]
                del since[lo]
                self._ship_answer = fibers.now()
                self.acked_mark = (min(inflight) - 1 if inflight
                                   else state["after"])
                fibers.signal_all(self._ship_key)

        try:
            while not failure and not self.paused:
                s = self.settings
                if len(inflight) >= s.ship_window:
                    fibers.wait_signal(self._ship_key)
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
            while inflight:
                fibers.wait_signal(self._ship_key)
        if failure:
            raise failure[0]

    # ---- the snapshot checkpoint -------------------------------------------

    def _checkpoint_loop(self):
        w = self.watcher
        while True:
            fibers.sleep(1.0)
            if (self._dirty and not self._stopping
                    and w.stats()["queued"] == 0
                    and self._done == self.counts["seen"]
                    and self._stages_drained()
                    and self.journal.committed_seq == self.journal.last_seq):
                self._dirty = False
                try:
                    w.save_snapshot()
                    self.snapshots += 1
                except Exception as e:
                    log.warning("cannot save the snapshot: %s", e)

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
        for r in set(old.roots) - set(new.roots):
            try:
                self.watcher.remove(r)
            except KeyError:
                pass
        for r in new.roots:
            if r not in old.roots:
                self.watcher.add(r)
        rules = Rules(new)
        if rules.kernel_kinds() != self.rules.kernel_kinds():
            self.watcher.set_events(rules.kernel_kinds())
        self.settings = new
        self.rules = rules

    def pause(self):
        """Stop shipping; the journal keeps growing."""
        self.paused = True
        fibers.signal_all(self._ship_key)

    def resume(self):
        self.paused = False
        fibers.signal_all(self._ship_key)

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
            "snapshots": self.snapshots,
            "config_error": self.config_error,
            "fatal": str(self.fatal) if self.fatal else None,
        }
