"""fibers.fs: a kernel queue overflow is reported and repaired, and running
out of inotify watches is reported, never swallowed."""
import os
import shutil
import subprocess
import sys

import pytest

import fibers
from capabilities import skip
from fshelp import (PAIRS, Env, apply, is_sync, quiet, settle,
                    small_kernel_queue, tree)



@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def env(request, tmp_path):
    e = Env(request.param[0], request.param[1], tmp_path)
    yield e
    e.close()


def small_queue_watch(env, n=64, **kw):
    """A watcher whose kernel queue holds n events: the limit is read when
    the notification fd is made, so it is shrunk for that moment only and
    restored at once."""
    with small_kernel_queue(env.fs, n):
        return env.watch(unlimited_queue=False, **kw)


def burst(env):
    # Far more than 64 events, with no chance for the reader to run.
    for i in range(300):
        with open(env.p("keep", f"f{i}"), "w") as f:
            f.write("x")
    for i in range(0, 300, 3):
        os.unlink(env.p("keep", f"f{i}"))
    for i in range(1, 300, 9):
        os.rename(env.p("keep", f"f{i}"), env.p("keep", f"g{i}"))
    for j in range(5):
        os.makedirs(env.p("new", f"d{j}", "deep"))
        for i in range(10):
            open(env.p("new", f"d{j}", "deep", f"x{i}"), "w").close()
    os.rename(env.p("old"), env.p("moved-old"))
    shutil.rmtree(env.p("doomed"))
    with open(env.p("grow"), "a") as f:
        f.write("more")


def test_overflow_is_reported_and_the_rescan_repairs(env):
    os.mkdir(env.p("keep"))
    os.makedirs(env.p("old", "inner"))
    open(env.p("old", "inner", "o"), "w").close()
    os.makedirs(env.p("doomed", "x"))
    open(env.p("doomed", "x", "y"), "w").close()
    with open(env.p("grow"), "w") as f:
        f.write("x")

    def main():
        model = tree(env.root)
        w = small_queue_watch(env)
        try:
            burst(env)
            events = quiet(w)
            # the overflow has been read (it came before the marker); now
            # let its rescan finish, and any later overflow's, then take
            # what came meanwhile
            assert w.stats()["overflows"] >= 1
            events += settle(w)
            st = w.stats()
            kinds = [e.kind for e in events]
            assert "overflow" in kinds
            assert st["rescans"] >= 1
            seqs = [e.seq for e in events]
            assert seqs == sorted(seqs)
            apply(model, events)
            real = {p for p in tree(env.root) if not is_sync(p)}
            assert model == real
            # the file that grew is reported modified after the overflow
            after = events[kinds.index("overflow"):]
            assert ("modified", env.p("grow")) in [(e.kind, e.path)
                                                   for e in after]
            # and watching goes on: new directories are watched again (a
            # fanotify mark covers the whole filesystem, so other activity
            # may overflow the 64-event queue again: then the rescan that
            # follows reports the file)
            open(env.p("new", "d0", "deep", "late"), "w").close()
            assert ("created", env.p("new", "d0", "deep", "late")) in [
                (e.kind, e.path) for e in settle(w)]
        finally:
            w.close()
    env.run(main)


CHILD = r"""
import os, sys, fibers, fibers.fs
root = sys.argv[1]
with open("/proc/sys/user/max_inotify_watches", "w") as f:
    f.write("3")
def main():
    w = fibers.fs.watch(root, backend="inotify", events={"created"})
    errs = []
    for _ in range(20):
        ev = w.get(timeout=5)
        if ev.kind == "error":
            errs.append((os.path.relpath(ev.path, root), ev.errno))
        if len(errs) == 2:
            break
    print("errors", sorted(errs))
    print("watches", w.stats()["watches"], "errors", w.stats()["errors"])
    # the rest is still watched
    ok = [n for n in "abcd" if n not in {e[0] for e in errs}]
    open(os.path.join(root, ok[0], "f"), "w").close()
    ev = w.get(timeout=5)
    print("after", ev.kind, os.path.relpath(ev.path, root))
    w.close()
fibers.run(main)
"""


def test_out_of_inotify_watches_is_an_error_event(tmp_path):
    # In a user namespace of its own, a child lowers its inotify watch
    # limit (a per-namespace limit) to 3: root, a and b get watches; c and
    # d are reported, and the rest keeps working.
    if shutil.which("unshare") is None:
        skip("userns", "needs unshare(1) from util-linux")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        skip("userns", f"user namespaces refused here: {probe.stderr!r}")
    for n in "abcd":
        os.mkdir(tmp_path / n)
    r = subprocess.run(["unshare", "--user", "--map-root-user",
                        sys.executable, "-c", CHILD, str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    errs = eval(lines[0][len("errors "):])
    assert len(errs) == 2 and {e[1] for e in errs} == {28}      # ENOSPC
    assert {e[0] for e in errs} <= {"a", "b", "c", "d"}
    assert lines[1] == "watches 3 errors 2"
    watched = sorted({"a", "b", "c", "d"} - {e[0] for e in errs})
    assert lines[2] == f"after created {watched[0]}/f"


def test_a_directory_renamed_while_the_rescan_lists_it(env, monkeypatch):
    # Regression: the rescan's listing of a directory failed (ENOENT)
    # because it had just been renamed; the listing was skipped, and when
    # the rename was read the node just moved, so nothing below it was
    # ever reported.  Here the listing itself does the rename first.
    import fibers._fs as _fs
    os.makedirs(env.p("a", "d0"))
    ino0 = os.stat(env.p("a", "d0")).st_ino
    real_list = _fs._list_dir
    real_fan_list = _fs._fan_list
    renamed = []

    def race():
        renamed.append(1)
        os.makedirs(env.p("a", "d0", "deep"))
        for i in range(5):
            open(env.p("a", "d0", "deep", f"x{i}"), "w").close()
        os.rename(env.p("a", "d0"), env.p("a", "d0-moved"))

    def racing_list(path):
        if path.endswith(b"/a/d0") and not renamed:
            race()
        return real_list(path)

    def racing_fan_list(mfd, key):
        # fanotify lists a directory by its handle: a/d0 is the one whose
        # inode it is
        if not renamed and real_fan_list(mfd, key)[0] == ino0:
            race()
        return real_fan_list(mfd, key)

    def main():
        model = tree(env.root)
        w = small_queue_watch(env)
        try:
            monkeypatch.setattr(_fs, "_list_dir", racing_list)
            monkeypatch.setattr(_fs, "_fan_list", racing_fan_list)
            for i in range(200):                  # overflow: a rescan
                open(env.p(f"f{i}"), "w").close()
            events = settle(w)
            assert renamed, "the rescan never listed a/d0"
            assert "overflow" in [e.kind for e in events]
            apply(model, events)
            assert model == {p for p in tree(env.root) if not is_sync(p)}
        finally:
            monkeypatch.undo()
            w.close()
    env.run(main)
