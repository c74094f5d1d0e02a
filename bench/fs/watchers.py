"""The watcher processes of `make bench-fs`, one contender per process.

    python -m bench.fs.watchers NAME ROOT --out FILE [--timeout S]

Each contender watches ROOT recursively for what the workload's canonical
events need (created, deleted, moved), prints READY once its watch is in
place, and consumes events as a user's program would, doing as little as
possible per event: it keeps the event (or batch) and the
time.monotonic_ns() at which it got it.  CLOCK_MONOTONIC is shared by
every process, so the harness can subtract the writer's timestamps.

It stops when ROOT/DONE (the writer's last act) has been seen and then no
event came for QUIET_S (events queued before DONE but delivered after it,
e.g. by a library that holds some back, still count), at most GRACE_S after
DONE; or when no event came for IDLE_S and DONE exists on disk (its event
was lost, e.g. in a kernel queue overflow: the sample still counts, with
its losses); or at --timeout.  The CPU it used from READY to then (user + sys,
all threads, getrusage) is measured by itself; only then does it turn what
it kept into plain [kind, path, src_path, t_ns] rows and write the JSON
FILE, so that conversion is not charged to the library.

Settings per contender: the narrowest each API offers that still covers
created / deleted / moved, so the writer's write and close stay out of the
kernel mask of fibers.fs, watchdog and inotify_simple (watchfiles has no
such option; what it reports beyond the canonical events counts in "raw"):
  fibers-fanotify, fibers-inotify
      fibers.fs.watch(events=created, deleted, moved, overflow, error),
      read with get_batch(max_events=4096) inside fibers.run().
  watchdog
      InotifyObserver, event_filter = the created / deleted / moved event
      classes (watchdog narrows its inotify mask to match), a handler whose
      dispatch() just keeps the event.
  inotify_simple
      one INotify, a watch per directory (IN_CREATE, IN_DELETE, IN_MOVED_*),
      recursion in Python: a new directory is watched, then listed, and what
      is already in it is reported as created (files made before the watch
      existed would otherwise be lost).  MOVED_FROM / MOVED_TO are paired by
      cookie; an unpaired half becomes deleted / created.
  watchfiles
      watchfiles.watch(watch_filter=None, debounce=WATCHFILES_DEBOUNCE_MS,
      step=WATCHFILES_STEP_MS).  Its defaults (1600 ms / 50 ms) would
      hold a batch up to 1.6 s under steady load; these short settings give
      it its best latency, at the cost of more wake-ups.  It yields sets of (Change, path),
      so a rename is deleted + added, and repeats within a batch merge.
"""
import argparse
import json
import os
import resource
import sys
import time

QUIET_S = 0.25          # after DONE: stop once no event came for this long
IDLE_S = 2.0            # DONE on disk but not seen: stop after this long idle
GRACE_S = 2.0           # after DONE: stop at the latest after this long
POLL_S = 0.1            # every wait is at most this, to check the clocks

WATCHFILES_DEBOUNCE_MS = 10
WATCHFILES_STEP_MS = 1

# The kinds asked of fibers.fs: the canonical three, plus the two that say
# something went wrong (so the report can show overflows).
FIBERS_KINDS = ("created", "deleted", "moved", "overflow", "error")


class Clock:
    """When to stop: the DONE / quiet / grace / idle / timeout rules above."""

    def __init__(self, root, timeout_s):
        self.done_path = os.path.join(root, "DONE")
        now = time.monotonic()
        self.deadline = now + timeout_s
        self.last_event = now
        self.done_at = None
        self.reason = None

    def stop(self, got_events, saw_done):
        now = time.monotonic()
        if got_events:
            self.last_event = now
        if saw_done and self.done_at is None:
            self.done_at = now
        if self.done_at is not None and (now - self.last_event >= QUIET_S
                                         or now - self.done_at >= GRACE_S):
            self.reason = "done"
        elif now - self.last_event >= IDLE_S and os.path.exists(self.done_path):
            self.reason = "idle"
        elif now >= self.deadline:
            self.reason = "timeout"
        return self.reason is not None


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def run_queue_wait_ns():
    """Time this process's threads were runnable but waiting for a CPU
    (schedstat): another process on the watcher's CPU shows up here."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total


class Meter:
    """CPU, wall time and run-queue wait from READY to the stop."""

    def ready(self):
        self.cpu0 = cpu_seconds()
        self.wait0 = run_queue_wait_ns()
        self.t0 = time.monotonic_ns()
        print("READY", flush=True)

    def stop(self):
        self.t1 = time.monotonic_ns()
        self.cpu1 = cpu_seconds()
        self.wait1 = run_queue_wait_ns()

    def as_dict(self):
        wait = (None if self.wait0 is None or self.wait1 is None
                else (self.wait1 - self.wait0) / 1e9)
        return {"cpu_user_s": self.cpu1[0] - self.cpu0[0],
                "cpu_sys_s": self.cpu1[1] - self.cpu0[1],
                "wall_s": (self.t1 - self.t0) / 1e9,
                "runq_wait_s": wait,
                "ready_ns": self.t0, "stop_ns": self.t1,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


# ------------------------------------------------------------ contenders
#
# Each returns (rows, extra): rows of [kind, path, src_path, t_ns], extra a
# dict of library statistics.  The loops keep raw objects and convert after
# meter.stop().

def watch_fibers(root, backend, timeout_s, meter):
    import fibers
    import fibers.fs

    done = os.path.join(root, "DONE")
    batches = []
    result = {}

    def main():
        w = fibers.fs.watch(root, events=FIBERS_KINDS, recursive=True, backend=backend)
        try:
            if w.backend != backend:
                raise RuntimeError(f"asked for backend {backend}, got {w.backend}")
            clock = Clock(root, timeout_s)
            meter.ready()
            while True:
                try:
                    batch = w.get_batch(max_events=4096, timeout=POLL_S)
                except fibers.Timeout:
                    batch = ()
                if batch:
                    batches.append((batch, time.monotonic_ns()))
                saw = any(ev.path == done for ev in batch)
                if clock.stop(bool(batch), saw):
                    break
            meter.stop()
            result["stop"] = clock.reason
            result["stats"] = dict(w.stats())
        finally:
            w.close()

    fibers.run(main)
    rows = [[ev.kind, ev.path, ev.src_path, t] for batch, t in batches for ev in batch]
    return rows, {"stop": result.get("stop"), "stats": result.get("stats"),
                  "backend": backend}


def watch_watchdog(root, timeout_s, meter):
    import threading
    from watchdog import events as we
    from watchdog.observers.inotify import InotifyObserver

    done = os.path.join(root, "DONE")
    kept = []
    seen = threading.Event()
    # Kept per event, in the observer's thread: (event, time).  A list's
    # append is atomic under the GIL; the main thread only reads its length.
    append = kept.append
    now = time.monotonic_ns

    class Keep(we.FileSystemEventHandler):
        def dispatch(self, event):
            append((event, now()))
            if event.src_path == done:
                seen.set()

    wanted = [we.FileCreatedEvent, we.DirCreatedEvent, we.FileDeletedEvent,
              we.DirDeletedEvent, we.FileMovedEvent, we.DirMovedEvent]
    observer = InotifyObserver()
    observer.schedule(Keep(), root, recursive=True, event_filter=wanted)
    observer.start()
    try:
        clock = Clock(root, timeout_s)
        meter.ready()
        n = 0
        while True:
            # Event.wait returns at once once DONE is seen: then poll.
            if seen.is_set():
                time.sleep(QUIET_S / 5)
            else:
                seen.wait(POLL_S)
            got = len(kept) != n
            n = len(kept)
            if clock.stop(got, seen.is_set()):
                break
        meter.stop()
    finally:
        observer.stop()
        observer.join(timeout=5)
    rows = []
    for ev, t in kept:
        if ev.event_type == "moved":
            rows.append(["moved", ev.dest_path, ev.src_path, t])
        else:
            rows.append([ev.event_type, ev.src_path, None, t])
    return rows, {"stop": clock.reason, "observer_alive": observer.is_alive()}


def watch_inotify_simple(root, timeout_s, meter):
    from inotify_simple import INotify, flags

    # Plain ints: testing IntFlag members per event costs more than the
    # library itself.
    CREATE, DELETE = int(flags.CREATE), int(flags.DELETE)
    MOVED_FROM, MOVED_TO = int(flags.MOVED_FROM), int(flags.MOVED_TO)
    ISDIR, IGNORED, Q_OVERFLOW = int(flags.ISDIR), int(flags.IGNORED), int(flags.Q_OVERFLOW)
    MASK = CREATE | DELETE | MOVED_FROM | MOVED_TO | int(flags.ONLYDIR)

    done = os.path.join(root, "DONE")
    ino = INotify()
    dirs = {}           # wd -> directory path
    rows = []
    counts = {"overflows": 0, "scanned": 0}

    def watch_tree(path, t):
        """Watch path and the directories below it; report what is already
        there as created, since the watch missed its creation."""
        try:
            dirs[ino.add_watch(path, MASK)] = path
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return      # gone again: its deleted event follows
        for e in entries:
            rows.append(["created", e.path, None, t])
            counts["scanned"] += 1
            if e.is_dir(follow_symlinks=False):
                watch_tree(e.path, t)

    dirs[ino.add_watch(root, MASK)] = root
    # MOVED_FROM / MOVED_TO of one rename are adjacent in the queue, so in
    # one read or two consecutive ones: a MOVED_FROM left unpaired for a
    # whole further read was a move out of the tree.
    pending, older = {}, {}
    clock = Clock(root, timeout_s)
    meter.ready()
    while True:
        events = ino.read(timeout=int(POLL_S * 1000))
        t = time.monotonic_ns()
        saw = False
        for cookie, src in older.items():
            rows.append(["deleted", src, None, t])
        older, pending = pending, {}
        for wd, mask, cookie, name in events:
            if mask & Q_OVERFLOW:
                counts["overflows"] += 1
                rows.append(["overflow", None, None, t])
                continue
            base = dirs.get(wd)
            if base is None:
                continue
            if mask & IGNORED:
                del dirs[wd]
                continue
            path = base + "/" + name
            if mask & CREATE:
                rows.append(["created", path, None, t])
                if mask & ISDIR:
                    watch_tree(path, t)
                saw = saw or path == done
            elif mask & DELETE:
                rows.append(["deleted", path, None, t])
            elif mask & MOVED_FROM:
                pending[cookie] = path
            elif mask & MOVED_TO:
                src = pending.pop(cookie, None) or older.pop(cookie, None)
                # (A moved directory's subtree keeps its old paths in
                # `dirs`; the workload never moves directories.)
                rows.append(["moved", path, src, t] if src else ["created", path, None, t])
                if mask & ISDIR and src is None:
                    watch_tree(path, t)
        if clock.stop(bool(events), saw):
            break
    meter.stop()
    t = time.monotonic_ns()
    for src in list(older.values()) + list(pending.values()):
        rows.append(["deleted", src, None, t])
    ino.close()
    return rows, {"stop": clock.reason, **counts}


def watch_watchfiles(root, timeout_s, meter):
    from watchfiles import Change, watch

    done = (Change.added, os.path.join(root, "DONE"))
    batches = []
    clock = Clock(root, timeout_s)
    meter.ready()
    # rust_timeout + yield_on_timeout: an empty set every POLL_S when idle,
    # so the stop rules are checked.
    for changes in watch(root, watch_filter=None, debounce=WATCHFILES_DEBOUNCE_MS,
                         step=WATCHFILES_STEP_MS, rust_timeout=int(POLL_S * 1000),
                         yield_on_timeout=True, raise_interrupt=False, recursive=True):
        if changes:
            batches.append((changes, time.monotonic_ns()))
        if clock.stop(bool(changes), done in changes):
            break
    meter.stop()
    kinds = {Change.added: "created", Change.deleted: "deleted",
             Change.modified: "modified"}
    rows = [[kinds[c], path, None, t] for changes, t in batches for c, path in changes]
    return rows, {"stop": clock.reason, "batches": len(batches),
                  "debounce_ms": WATCHFILES_DEBOUNCE_MS, "step_ms": WATCHFILES_STEP_MS}


CONTENDERS = {
    "fibers-fanotify": lambda root, t, m: watch_fibers(root, "fanotify", t, m),
    "fibers-inotify": lambda root, t, m: watch_fibers(root, "inotify", t, m),
    "watchdog": watch_watchdog,
    "inotify_simple": watch_inotify_simple,
    "watchfiles": watch_watchfiles,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(CONTENDERS))
    ap.add_argument("root")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="stop after this many seconds even without DONE")
    args = ap.parse_args(argv)

    root = os.path.realpath(args.root)
    meter = Meter()
    rows, extra = CONTENDERS[args.name](root, args.timeout, meter)
    out = {"name": args.name, "root": root, **meter.as_dict(), "extra": extra,
           "events": rows}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.out)      # the harness never reads half a file


if __name__ == "__main__":
    sys.exit(main())
