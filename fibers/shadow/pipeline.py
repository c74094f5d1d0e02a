"""The pipeline: watch -> filter -> coalesce -> journal -> ship, and its life
cycle.

Design: one fiber per stage, each a plain loop in its own class
(stages.py), joined by bounded fibers.Queues, all on one thread.  A slow
stage parks the stage before it, and so on up to the watcher, which stops
reading the kernel; nothing grows without bound in memory.  The one
unbounded buffer is the journal on disk, which is where a long outage of
the store should accumulate.  :class:`Shadow` here opens and checks what
the stages work on (the state directory, the journal, the watcher, the
store), starts them, applies new rules while they run, reports their
status and stops them.

What is guaranteed, and why:

- **Every change reaches the store once.**  The journal holds, beside the
  outbox of events to ship, the picture of the tree as the pipeline has
  handled it, and each commit changes both together.  Every event the
  watcher delivers travels down the stages to the journal, including the
  ones the rules keep from the store (those change the picture only), and
  the stages' counts say when all have arrived (``stages.handled``: what
  ``stop()`` waits for).  So whenever the process dies (SIGKILL mid-run, during the start-up scan,
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
every batch, and a change of kinds also reaches the kernel's mask through
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
import logging
import os
import socket
import time

import fibers
import fibers.fs
from fibers.sync import Queue

from . import config, state
from .errors import JournalError
from .rules import Rules
from .stages import Coalesce, Filter, Ship, Watch, handled
from .state import real, root_id
from .store import open_store

__all__ = ["Shadow", "Rules"]

log = logging.getLogger("fibers.shadow")

# How many batches (each up to 4096 events) wait between two stages before
# the producing stage parks: about the 4096 events the hand-rolled channel
# held, give or take a partly full batch.
QUEUE_BATCHES = 2


class Shadow:
    """The application's core: owns the watcher, the stages, the journal
    and the store.  ``start()`` in a fiber, then ``stop()`` to drain.

    ``store``: a Store to ship to instead of the one the settings' URL
    names (to embed the pipeline, or to put a faulty link in a test).

    Once started, ``watch``, ``filter``, ``coalesce`` and ``ship`` are the
    stages (stages.py), each with its counts."""

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
        self._stopping = False
        self._fibers = []
        # Set once a fatal error is in self.fatal (wait_fatal).
        self._fatal_set = fibers.Event()
        self.watcher = None
        self.journal = None
        self.store = None
        self.watch = self.filter = self.coalesce = self.ship = None
        self._root_ids = {}             # as the journal will have them

    # ---- life cycle --------------------------------------------------------

    def start(self):
        """Check the state directory, open the journal and the watcher
        (which reports what changed since the journal's picture) and start
        every stage.  Raises StateError (the state directory does not
        match: refused), JournalError or OSError (a root that cannot be
        watched)."""
        s = self.settings
        self.journal = j = state.open_journal(s.state_dir, self.host,
                                              s.source, on_error=self._fail)
        try:
            self._start()
        except BaseException:
            j.close(1.0)
            raise

    def _start(self):
        s = self.settings
        j = self.journal
        self.store = self._store_override or open_store(s.store_url())
        roots = [real(r) for r in s.roots]
        ids, known = state.root_ids(j, roots)
        kw = dict(events=self.rules.kernel_kinds(), exclude=[s.state_dir],
                  unlimited_queue=os.environ.get(
                      "FIBERS_SHADOW_BOUNDED_QUEUE", "") in ("", "0"))
        fresh = [r for r in roots if r not in known]
        hidden = set()                  # paths kept back by min_size
        if known:
            picture, hidden = j.load_picture()
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
        # Batches between the stages; a full queue parks its producer,
        # which stops reading its own input.
        raw, filtered = Queue(QUEUE_BATCHES), Queue(QUEUE_BATCHES)
        self.watch = Watch(w, raw)
        self.filter = Filter(raw, filtered, self, self._root_gone)
        self.coalesce = Coalesce(filtered, j, self, hidden)
        self.ship = Ship(j, self.store, self, self._fail)
        for stage in (self.watch, self.filter, self.coalesce, self.ship):
            self._spawn(f"the {stage.name} stage", stage.run)
        self._spawn("the journal's watch", state.watch_journal, j,
                    s.state_dir)
        if s.config_file:
            self._spawn("the config file's watch", self._config_loop)

    def _spawn(self, what, fn, *args):
        self._fibers.append(fibers.spawn(self._guard, what, fn, *args))

    def _guard(self, what, fn, *args):
        try:
            fn(*args)
        except fibers.FiberExit:
            raise
        except JournalError as e:
            self._fail(e)
        except Exception as e:
            log.exception("%s failed", what)
            self._fail(e)
        else:
            if not self._stopping:
                self._fail(RuntimeError(f"{what} ended"))

    def _fail(self, e):
        if self.fatal is None:
            self.fatal = e
            self._fatal_set.set()

    def wait_fatal(self, timeout=None):
        """Park until a fatal error (returned) or timeout (None)."""
        if self.fatal is None:
            self._fatal_set.wait(timeout)
        return self.fatal

    def _drained(self) -> bool:
        # Every event the watcher delivered is handled (ended by a stage's
        # rule, or handed to the journal) and the journal committed it.
        chain = (self.watch, self.filter, self.coalesce)
        return (handled(chain) >= self.watch.n_in
                and self.journal.pending == 0)

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
                fibers.wait_for(lambda: self.fatal is not None
                                or self._drained(), None)
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

    def _root_gone(self, ev):
        # A watcher error (Filter's on_error).  A root deleted or moved away
        # while watched: the watcher reported its contents deleted and will
        # watch a directory made there again.  Whatever is at that path at
        # the next start is another directory, to be diffed against the
        # picture, not refused as a replacement.
        r = real(ev.path) if ev.path else None
        if ev.errno == errno.ENOENT and r in self._root_ids:
            self._root_ids[r] = None
            self.journal.record([], ("roots", dict(self._root_ids)))

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
                or new.state_dir != old.state_dir \
                or new.metrics != old.metrics:
            log.warning("store, source, state_dir and metrics changes take "
                        "effect at the next start")
            new.store, new.source, new.state_dir, new.metrics = (
                old.store, old.source, old.state_dir, old.metrics)
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
            j.record([], ("forget", real(r)))
            changed = True
        for r in new.roots:
            if r not in old.roots:
                self.watcher.add(r)
                j.record([], ("import", real(r), self.watcher.picture(r)))
                changed = True
        if changed:
            self._root_ids = {real(r): self._root_ids.get(real(r))
                              or root_id(real(r)) for r in new.roots}
            j.record([], ("roots", dict(self._root_ids)))
        rules = Rules(new)
        if rules.kernel_kinds() != self.rules.kernel_kinds():
            self.watcher.set_events(rules.kernel_kinds())
        self.settings = new
        self.rules = rules

    def pause(self):
        """Stop shipping (``ctl pause``); the journal keeps growing."""
        self.paused = True
        if self.ship is not None:
            self.ship.changed()

    def resume(self):
        """Ship again (``ctl resume``), from the first unacked event."""
        self.paused = False
        if self.ship is not None:
            self.ship.changed()

    # ---- status ------------------------------------------------------------

    @property
    def counts(self) -> dict:
        """The stages' counts, as the status shows them: ``seen`` (events
        the watcher delivered), ``filtered`` (kept from the store by the
        rules), ``coalesced`` (merged into an earlier event of their
        path), ``journaled`` and ``shipped`` (rows), ``overflows`` and
        ``errors`` (the watcher's reports)."""
        f = self.filter
        return {"seen": self.watch.n_in, "filtered": f.filtered,
                "coalesced": self.coalesce.coalesced,
                "journaled": self.coalesce.rows, "shipped": self.ship.n_out,
                "overflows": f.overflows, "errors": f.errors}

    def status(self) -> dict:
        """Everything the UI and ``ctl status`` show, JSON-able:

        - ``time``, ``uptime`` (seconds), ``paused``, ``roots``, ``rules``
          (the settings ``ctl set`` can change, as in force);
        - ``counts``: see :attr:`counts`; ``kinds``: rows journaled per
          kind;
        - ``watcher``: its backend, events read, overflows, rescans, events
          queued and errors;
        - ``journal``: its path and source; ``last_seq`` (the last row
          journaled), ``committed_seq`` (the last on disk), ``acked_seq``
          (everything up to it confirmed by the store), ``depth`` (rows
          on disk not yet confirmed) and ``lag`` (committed_seq -
          acked_seq);
        - ``store``: its URL (no password), ``state`` (connecting,
          connected, stalled, down or paused), ``stalled_for`` (seconds
          without an answer, when stalled), ``last_error``, ``batches``
          confirmed and ``reconnects``;
        - ``config_error``: why the config file's last edit was not
          applied (None once one is); ``fatal``: the error that stops the
          program, if any."""
        j, sh = self.journal, self.ship
        ws = self.watcher.stats() if not self.watcher.closed else {}
        store_state, stalled_for = sh.state_now()
        return {
            "time": round(time.time(), 3),
            "uptime": round(time.time() - self.started, 1),
            "paused": self.paused,
            "roots": list(self.settings.roots),
            "rules": self.settings.rules(),
            "counts": self.counts,
            "kinds": dict(self.coalesce.kinds),
            "watcher": {k: ws.get(k) for k in
                        ("backend", "events", "overflows", "rescans",
                         "queued", "errors")},
            "journal": {"path": j.path, "source": j.source,
                        "last_seq": j.last_seq,
                        "committed_seq": j.committed_seq,
                        "acked_seq": sh.acked_mark,
                        "depth": j.depth,
                        "lag": j.committed_seq - sh.acked_mark},
            "store": {"url": self.store.describe(),
                      "state": store_state,
                      "stalled_for": stalled_for,
                      "last_error": sh.error,
                      "batches": sh.batches,
                      "reconnects": sh.reconnects},
            "config_error": self.config_error,
            "fatal": str(self.fatal) if self.fatal else None,
        }
