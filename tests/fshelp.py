"""Helpers for the fibers.fs tests: a scheduler per (fs backend, pump
backend) pair, draining a watcher, and a model that applies events."""
import contextlib
import faulthandler
import os

import fibers
import fibers.fs
from capabilities import skip
from iohelp import skip_unless_backend_runs

# Each fs backend runs on each pump backend in the small tests; the heavy
# ones take one pairing per fs backend.
PAIRS = [("inotify", "io_uring"), ("fanotify", "epoll"),
         ("inotify", "epoll"), ("fanotify", "io_uring")]
HEAVY = PAIRS[:2]


def skip_unless_fs_backend_runs(name):
    why = fibers.fs.backends()[name]
    if why is not None:
        skip(name, f"fibers.fs backend {name} cannot run here: {why}")


# A test wedged in a kernel wait would hang the run: far above any test's
# duration, faulthandler prints every stack and exits.
HANG_LIMIT = 120.0


# The kernel's queue limit per fs backend, read when a notification fd is made.
QUEUE_LIMITS = {"inotify": "/proc/sys/fs/inotify/max_queued_events",
                "fanotify": "/proc/sys/fs/fanotify/max_queued_events"}


@contextlib.contextmanager
def small_kernel_queue(fs_backend, n=64):
    """Within the block, new `fs_backend` fds get a kernel queue of n
    events; the limit is restored on leaving (make the fd inside, and leave
    at once).  Skips without the privilege to change it."""
    path = QUEUE_LIMITS[fs_backend]
    if os.geteuid() != 0 or not os.access(path, os.W_OK):
        skip("root", f"shrinking {path} needs root")
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write(str(n))
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


class Env:
    def __init__(self, fs_backend, pump, root):
        skip_unless_fs_backend_runs(fs_backend)
        skip_unless_backend_runs(pump)
        faulthandler.dump_traceback_later(HANG_LIMIT, exit=True)
        self.fs = fs_backend
        self.sched = fibers.Scheduler(
            clock=fibers.VirtualClock(autojump=True), backend=pump)
        self.root = os.path.realpath(root)

    def run(self, fn, *args):
        return self.sched.run(fn, *args)

    def watch(self, paths=None, **kw):
        kw.setdefault("backend", self.fs)
        return fibers.fs.watch(self.root if paths is None else paths, **kw)

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def rel(self, path):
        return None if path is None else os.path.relpath(path, self.root)

    def close(self):
        faulthandler.cancel_dump_traceback_later()
        self.sched.close()


_sync = [0]


def is_sync(path):
    return path is not None and os.path.basename(path).startswith(".sync-")


def quiet(w, where=None, limit=1_000_000):
    """Every event caused so far, without guessing at timing: make a marker
    file in `where` (default: the first root) and read until its creation
    arrives; the kernel queues events in order and the watcher handles them
    in order, so everything before the marker has been delivered.  The
    markers' own events are left out."""
    _sync[0] += 1
    mark = os.path.join(where or w.roots[0], f".sync-{_sync[0]}")
    open(mark, "w").close()
    out = []
    while len(out) < limit:
        batch = w.get_batch(4096)
        done = any(e.kind == "created" and e.path == mark for e in batch)
        out += [e for e in batch if not is_sync(e.path)
                and not is_sync(e.src_path)]
        if done:
            os.unlink(mark)
            return out
    raise AssertionError("the marker never arrived")


def settle(w, where=None):
    """Events until a marker arrives with no overflow before it and no
    rescan running.  A fanotify mark covers the whole filesystem, so with a
    64-event kernel queue any other activity on it can overflow the queue
    again: each overflow's rescan is let finish, and read to the end."""
    got = []
    for _ in range(20):
        batch = quiet(w, where)
        got += batch
        if w.stats()["rescanning"]:
            fibers.wait_for(lambda: not w.stats()["rescanning"], timeout=60)
        elif not any(e.kind == "overflow" for e in batch):
            return got
    raise AssertionError("the kernel queue kept overflowing")


def until(w, pred, limit=1_000_000):
    """Events until pred(events) holds; bounded by `limit` events."""
    out = []
    while len(out) < limit:
        out += w.get_batch(4096)
        if pred(out):
            return out
    raise AssertionError("the condition never held")


def tree(root):
    """The set of paths under root (not root itself), as a model holds it."""
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.join(dirpath, n))
    return out


def apply(model, events, anomalies=None):
    """Apply events to a set of paths: created adds, deleted removes, moved
    renames (with the subtree of a directory).  With a list `anomalies`,
    append each event that does not fit the model (a creation of a path it
    holds, a deletion or a move of one it lacks)."""
    for ev in events:
        if ev.kind == "created":
            if anomalies is not None and ev.path in model:
                anomalies.append(ev)
            model.add(ev.path)
        elif ev.kind == "deleted":
            if anomalies is not None and ev.path not in model:
                anomalies.append(ev)
            model.discard(ev.path)
        elif ev.kind == "moved":
            src = ev.src_path
            if anomalies is not None and src not in model:
                anomalies.append(ev)
            model.discard(src)
            model.add(ev.path)
            if ev.is_dir:
                pre = src + "/"
                for p in [p for p in model if p.startswith(pre)]:
                    model.discard(p)
                    model.add(ev.path + p[len(src):])
    return model
