"""The live terminal UI of fibers-shadow.

Design: the UI is a few more fibers on the application's one thread, and
none of them may ever hold the pipeline up:

- **drawing**: a ``fibers.periodic`` timer at 10 Hz renders the screen
  with rich into a string (``Console(file=StringIO(), force_terminal=True)``;
  no ``rich.live.Live`` and never rich's auto-refresh, which starts a
  thread) and writes it to the terminal itself.  The tty is switched to
  O_NONBLOCK and a write that meets EAGAIN parks the drawing fiber on
  ``fibers.wait_writable``; a tick that finds the previous frame still
  being written is skipped.  A slow terminal costs frames, never events.
- **keys**: the tty is put in cbreak mode and fd 0 is read through the
  pump (``fibers.wait_readable``) in a fiber of its own.  Every key that
  changes a rule goes through ``control.handle``, the very path the
  control socket uses, so a kind toggled here reaches ``Watcher.set_events``
  exactly as ``fibers-shadow ctl set kinds=...`` does.
- **SIGWINCH**: a fiber parks on ``fibers.wait_os_signal(SIGWINCH)``,
  re-reads the size and redraws at once.
- **the scheduler's own figures** come from
  ``fibers.Scheduler.current().stats()``, read once per frame and shown
  by :func:`scheduler_line`: the very function (and keys) that
  ``fibers.metrics`` exports to Prometheus, so the screen and a scrape
  cannot disagree.  Ticks per second are the difference of the ``ticks``
  counter over the sampler's second, as Prometheus's ``rate()`` is.
- **the last events** are read from the journal file (its own read-only
  SQLite connection, on fibers' blocking pool, 4 times a second): they
  are exactly what was journaled for shipping, after rules and coalescing.
- **logging** would scribble over the screen, so while the UI runs the
  log goes to a small ring shown at the bottom; warnings and errors are
  written out again to stderr once the terminal is restored.

The terminal (cbreak, alternate screen, hidden cursor, O_NONBLOCK) is put
back in a ``finally``, whatever ends the UI.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import sys
import termios
import time
import tty
from collections import deque

import fibers

from . import control
from .config import USER_KINDS
from .store import shown

__all__ = ["UI", "KIND_KEYS", "WINDOW_STEPS", "scheduler_line"]

# One key per event kind (listed on screen).
KIND_KEYS = {"c": "created", "d": "deleted", "m": "modified",
             "w": "closed_write", "a": "attrib", "r": "moved"}
assert set(KIND_KEYS.values()) == set(USER_KINDS), USER_KINDS
KIND_ORDER = ("created", "deleted", "modified", "closed_write", "attrib",
              "moved")
# `+` and `-` walk the coalescing window along these steps (ms).
WINDOW_STEPS = (0, 25, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

FPS = 10
HISTORY = 40            # seconds of per-kind rates kept for the sparklines
RECENT = 10             # last events shown
BLOCKS = "▁▂▃▄▅▆▇█"

ENTER = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"
LEAVE = "\x1b[?25h\x1b[?1049l"


def sparkline(values, width):
    vals = list(values)[-width:]
    top = max(vals) if vals else 0
    if top <= 0:
        return " " * (width - len(vals)) + "▁" * len(vals)
    out = [BLOCKS[0 if v <= 0 else min(7, max(1, round(v / top * 7)))]
           for v in vals]
    return " " * (width - len(vals)) + "".join(out)


def _age(seconds):
    if seconds < 0:
        seconds = 0
    if seconds < 10:
        return f"{seconds:4.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def scheduler_line(st, ticks_rate):
    """The UI's scheduler row from one ``Scheduler.stats()`` ``st``.  Each
    figure is a key fibers.metrics exports: fibers by state
    (``fibers_fibers``), the tick's p99 and longest over the last 1024
    ticks (``fibers_tick_recent_seconds``), I/O in flight
    (``fibers_io_inflight``), the blocking pool (``fibers_blocking_*``);
    ``ticks_rate`` is the rate of ``ticks`` (``fibers_ticks_total``)."""
    # At most about 105 columns, so the row fits a 120-column terminal.
    states = st["states"]
    return (f"fibers {sum(states.values())} ({states['ready']} ready)  "
            f"ticks/s {ticks_rate:.0f}  tick p99 {st['tick_p99'] * 1000:.1f}"
            f" ms, max {st['tick_max'] * 1000:.1f} ms  io "
            f"{st['io_pending']}  blocking {st['blocking_jobs']} "
            f"({st['blocking_threads']} threads, {st['blocking_queue']} "
            f"queued)")


class _Ring(logging.Handler):
    """The log while the screen is ours: the last lines, kept."""

    def __init__(self):
        super().__init__()
        self.lines = deque(maxlen=4)
        self.keep = deque(maxlen=50)        # warnings, replayed at exit
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record):
        try:
            msg = self.format(record)
        except Exception:
            return
        self.lines.append((time.time(), record.levelno, msg))
        if record.levelno >= logging.WARNING:
            self.keep.append(msg)


class UI:
    """The live UI for one Shadow ``app``; ``run()`` in a fiber, returns
    after ``q`` (having called ``on_quit``) or when killed; the terminal is
    restored either way."""

    def __init__(self, app, on_quit, fd_in=0, fd_out=1):
        self.app = app
        self.on_quit = on_quit
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.cols, self.rows = 120, 40
        self.rates = {k: deque([0] * HISTORY, maxlen=HISTORY)
                      for k in KIND_ORDER}
        self.seen_rate = deque([0] * HISTORY, maxlen=HISTORY)
        self.last_kinds = {}
        self.last_seen = 0
        self.last_sample = None
        self.ticks_rate = 0.0
        self.last_ticks = None
        self.max_gap = 0.0              # longest time between two frames
        self._last_frame = None
        self.recent = []
        self.message = ""
        self.frames = 0
        self.skipped = 0
        self._drawing = False
        self._stop = False
        self._db = None
        self._reading = False
        self._console = None
        self._draw_fiber = None

    # ---- the terminal ------------------------------------------------------

    def _write(self, data: bytes, timeout=None):
        fd = self.fd_out
        view = memoryview(data)
        end = None if timeout is None else fibers.now() + timeout
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                fibers.wait_writable(fd, None if end is None
                                     else max(0.0, end - fibers.now()))
                continue
            except InterruptedError:
                continue
            view = view[n:]

    def _size(self):
        try:
            sz = os.get_terminal_size(self.fd_out)
            self.cols, self.rows = max(40, sz.columns), max(10, sz.lines)
        except OSError:
            pass

    # ---- the fibers --------------------------------------------------------

    def run(self):
        ring = _Ring()
        root = logging.getLogger()
        old_handlers = root.handlers[:]
        root.handlers[:] = [ring]
        saved = None
        if os.isatty(self.fd_in):
            saved = termios.tcgetattr(self.fd_in)
        blk_in = os.get_blocking(self.fd_in)
        blk_out = os.get_blocking(self.fd_out)
        helpers = []
        timer = None
        try:
            if saved is not None:
                tty.setcbreak(self.fd_in, termios.TCSANOW)
            os.set_blocking(self.fd_out, False)
            os.set_blocking(self.fd_in, False)
            self._size()
            self._write(ENTER.encode())
            helpers.append(fibers.spawn(self._sampler))
            helpers.append(fibers.spawn(self._winch))
            helpers.append(fibers.spawn(self._recent_loop))
            timer = fibers.periodic(self.draw, 1.0 / FPS)
            self.draw()
            self._keys()
        finally:
            # Nothing here waits on another fiber (a kill of this fiber
            # could cut the finally short); the one park is the bounded
            # write of the closing sequence.
            self._stop = True
            if timer is not None:
                timer.cancel()
            if self._draw_fiber is not None and not self._draw_fiber.dead:
                self._draw_fiber.kill(block=False)   # a half-written frame
            for f in helpers:
                if not f.dead:
                    f.kill(block=False)
            if saved is not None:
                try:
                    termios.tcsetattr(self.fd_in, termios.TCSADRAIN, saved)
                except termios.error:
                    pass
            root.handlers[:] = old_handlers
            try:
                self._write(LEAVE.encode(), timeout=1.0)
            except (OSError, fibers.Timeout):
                pass            # a terminal that takes nothing: give up
            finally:
                try:
                    os.set_blocking(self.fd_in, blk_in)
                    os.set_blocking(self.fd_out, blk_out)
                except OSError:
                    pass
                for msg in ring.keep:
                    print(f"fibers-shadow: {msg}", file=sys.stderr)
                self._save_stats()
                if self._db is not None and not self._reading:
                    self._db.close()

    def _save_stats(self):
        # For `make bench-shadow`: the frames drawn and the longest gap
        # between two, written where FIBERS_SHADOW_UI_STATS says.
        path = os.environ.get("FIBERS_SHADOW_UI_STATS")
        if path:
            # whole or not at all: the benchmark reads it once it exists
            with open(path + ".tmp", "w") as f:
                json.dump({"frames": self.frames, "skipped": self.skipped,
                           "max_frame_gap_ms": self.max_gap * 1000}, f)
            os.replace(path + ".tmp", path)

    def stop(self):
        """Ask ``run()`` to restore the terminal and return (within
        0.2 s)."""
        self._stop = True

    def _keys(self):
        fd = self.fd_in
        while not self._stop:
            try:
                fibers.wait_readable(fd, 0.2)
            except fibers.Timeout:
                continue
            try:
                data = os.read(fd, 64)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:                # the terminal went away
                self.on_quit()
                return
            for ch in data.decode("utf-8", "replace"):
                if self.key(ch):
                    self.on_quit()
                    return
            self.draw()

    def key(self, ch) -> bool:
        """Act on one key; True for quit."""
        app = self.app
        if ch in ("q", "Q"):
            return True
        if ch in KIND_KEYS:
            kind = KIND_KEYS[ch]
            kinds = set(app.settings.kinds)
            kinds ^= {kind}
            self._rule("kinds", ",".join(sorted(kinds)),
                       f"{kind} {'on' if kind in kinds else 'off'}")
        elif ch in ("p", "P"):
            r = control.handle(app, {"cmd": "resume" if app.paused
                                     else "pause"})
            self.message = ("shipping paused" if r.get("paused")
                            else "shipping resumed")
        elif ch in ("+", "=", "-", "_"):
            w = app.settings.window_ms
            if ch in ("+", "="):
                nxt = next((s for s in WINDOW_STEPS if s > w),
                           WINDOW_STEPS[-1])
            else:
                nxt = next((s for s in reversed(WINDOW_STEPS) if s < w), 0)
            self._rule("window_ms", str(nxt), f"window {nxt} ms")
        return False

    def _rule(self, key, value, what):
        # the control socket's own path: same validation, same effects
        r = control.handle(self.app, {"cmd": "set", "key": key,
                                      "value": value})
        self.message = what if r.get("ok") else f"refused: {r.get('error')}"

    def _winch(self):
        while True:
            fibers.wait_os_signal(signal.SIGWINCH)
            self._size()
            # no clear first: each frame erases what it does not cover
            # (\x1b[K per line, \x1b[J below), so nothing ever flickers
            self.draw()

    def _sampler(self):
        sched = fibers.Scheduler.current()
        while True:
            now = fibers.now()
            st = self.app.status()
            ticks = sched.stats()["ticks"]
            kinds = st["kinds"]
            seen = st["counts"]["seen"]
            if self.last_sample is not None:
                dt = max(1e-3, now - self.last_sample)
                for k in KIND_ORDER:
                    d = kinds.get(k, 0) - self.last_kinds.get(k, 0)
                    self.rates[k].append(d / dt)
                self.seen_rate.append((seen - self.last_seen) / dt)
                self.ticks_rate = (ticks - self.last_ticks) / dt
            self.last_sample, self.last_ticks = now, ticks
            self.last_kinds, self.last_seen = dict(kinds), seen
            fibers.sleep(1.0)

    def _recent_loop(self):
        path = self.app.status()["journal"]["path"]
        while True:
            self._read_recent(path)
            fibers.sleep(0.25)

    def _read_recent(self, path):
        def q():
            if self._db is None:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                           check_same_thread=False,
                                           timeout=1.0)
            return self._db.execute(
                "SELECT seq, kind, path, src_path, time FROM events "
                "ORDER BY seq DESC LIMIT ?", (RECENT,)).fetchall()
        self._reading = True
        try:
            self.recent = fibers.blocking(q)
        except sqlite3.Error as e:
            self.message = f"journal: {e}"
        finally:
            self._reading = False

    # ---- drawing -----------------------------------------------------------

    def draw(self):
        if self._drawing or self._stop:
            self.skipped += 1
            return
        self._drawing = True
        self._draw_fiber = fibers.current()
        try:
            self._write(self.frame().encode())
            self.frames += 1
            # The gap between frames as a person sees it (real time):
            # what a stalled pipeline, or a slow terminal, would stretch.
            done = time.monotonic()
            if self._last_frame is not None:
                self.max_gap = max(self.max_gap, done - self._last_frame)
            self._last_frame = done
        finally:
            self._drawing = False
            self._draw_fiber = None

    def frame(self) -> str:
        """The whole screen, as text for a terminal of the current size."""
        from rich.console import Console
        con = self._console
        if con is None or con.width != self.cols:
            con = self._console = Console(
                file=io.StringIO(), force_terminal=True, width=self.cols,
                color_system="256", legacy_windows=False, _environ={})
        con.file = buf = io.StringIO()
        con.print(self.renderable(), end="", crop=True, soft_wrap=False)
        lines = buf.getvalue().split("\n")[:self.rows]
        return "\x1b[H" + "\x1b[K\r\n".join(lines) + "\x1b[K\x1b[J"

    def renderable(self):
        """One rich Text, laid out by hand in fixed columns: rich's Table
        measures every cell each frame, which cost ~20 ms a frame here;
        this costs a few."""
        from rich.text import Text

        app = self.app
        st = app.status()
        rules = st["rules"]
        on = set(rules["kinds"])
        j, s, c, w = st["journal"], st["store"], st["counts"], st["watcher"]
        cols = self.cols
        spark_w = max(10, min(HISTORY, cols - 60))
        t = Text(no_wrap=True, overflow="crop")
        nl = "\n"

        t.append(" fibers-shadow ", "bold white on blue")
        t.append(f"  {', '.join(st['roots'])}  ", "bold")
        t.append(f"up {_age(st['uptime'])}")
        if st["paused"]:
            t.append("  PAUSED ", "bold black on yellow")
        if st.get("fatal"):
            t.append(f"  FATAL: {st['fatal']}", "bold white on red")
        t.append(nl + nl)
        t.append("events per second, per kind (journaled)", "bold")
        t.append(nl)
        t.append(f" {'key':<5} {'kind':<13} {'state':<5} {'total':>8} "
                 f"{'/s':>6}   last {spark_w} s" + nl, "bold")
        for key, kind in KIND_KEYS.items():
            style = "green" if kind in on else "dim"
            t.append(f" [{key}]   ", "bold cyan")
            t.append(f"{kind:<13} ")
            t.append(f"{'on' if kind in on else 'off':<5}", style)
            t.append(f" {st['kinds'].get(kind, 0):>8} "
                     f"{self.rates[kind][-1]:>6.0f}   ")
            t.append(sparkline(self.rates[kind], spark_w), style)
            t.append(nl)
        t.append(f" {'':<5} {'all seen':<13} {'':<5} {c['seen']:>8} "
                 f"{self.seen_rate[-1]:>6.0f}   ")
        t.append(sparkline(self.seen_rate, spark_w), "cyan")
        t.append(nl + nl)

        def row(label, *parts):
            t.append(f" {label:<11}", "bold")
            for p in parts:
                if isinstance(p, tuple):
                    t.append(*p)
                else:
                    t.append(p)
            t.append(nl)

        state_style = {"connected": "green", "paused": "yellow",
                       "stalled": "bold yellow",
                       "down": "bold red"}.get(s["state"], "yellow")
        row("journal", f"depth {j['depth']}  last seq {j['last_seq']}  "
            f"acked {j['acked_seq']}  lag {j['lag']}")
        state = s["state"]
        if s.get("stalled_for") is not None:    # how long without answer
            state += f" {s['stalled_for']:.0f} s"
        row("store", (state, state_style),
            f"  {s['url']}  batches {s['batches']}  reconnects "
            f"{s['reconnects']}")
        row("last error", (s["last_error"] or "-",
                           "red" if s["last_error"] else "dim"))
        row("counts", f"shipped {c['shipped']}  filtered {c['filtered']}  "
            f"coalesced {c['coalesced']}  errors {c['errors']}")
        row("watcher", f"{w.get('backend')}  overflows {c['overflows']}  "
            f"rescans {w.get('rescans')}  queued {w.get('queued')}")
        row("scheduler", scheduler_line(
            fibers.Scheduler.current().stats(), self.ticks_rate))
        row("rules", f"kinds {','.join(rules['kinds']) or '-'}  window "
            f"{rules['window_ms']} ms  min_size {rules['min_size']}")
        row("", f"include {','.join(rules['include']) or '*'}  exclude "
            f"{','.join(rules['exclude']) or '-'}  batch {rules['batch']}  "
            f"ship_window {rules['ship_window']}")
        if st.get("config_error"):
            row("config", (st["config_error"], "red"))
        t.append(nl)
        t.append("last events journaled", "bold")
        t.append(nl)
        t.append(f" {'seq':>8}  {'kind':<12} {'age':>6}  path (below the root)" + nl, "bold")
        now = time.time()
        room = max(20, cols - 32)
        roots = sorted((r.rstrip("/") + "/" for r in st["roots"]), key=len,
                       reverse=True)

        def rel(path):
            path = shown(path)          # bytes in the journal
            for r in roots:
                if path and path.startswith(r):
                    return path[len(r):]
            return path or ""
        for seq, kind, path, src, when in self.recent:
            p = f"{rel(src)} -> {rel(path)}" if src else rel(path)
            if len(p) > room:
                p = "…" + p[-(room - 1):]
            t.append(f" {seq:>8}  {kind:<12} {_age(now - when):>6}  {p}"
                     + nl)
        for _ in range(RECENT - len(self.recent)):
            t.append(nl)
        t.append(nl)
        t.append("keys  ", "bold")
        for key, kind in KIND_KEYS.items():
            t.append(key, "bold cyan")
            t.append(f" {kind}  ")
        for key, what in (("p", "pause/resume"), ("+/-", "window"),
                          ("q", "quit")):
            t.append(key, "bold cyan")
            t.append(f" {what}  ")
        if self.message:
            t.append(nl + f"> {self.message}", "bold yellow")
        for _t, lvl, msg in self.ring_lines():
            t.append(nl + msg, "red" if lvl >= logging.WARNING else "dim")
        return t

    def ring_lines(self):
        for h in logging.getLogger().handlers:
            if isinstance(h, _Ring):
                return list(h.lines)[-2:]
        return []
