"""fibers.fs: every kind, moves, new-directory races, exact counts,
set_events, exclude, snapshots, bad input.  Each test runs on both fs
backends (fanotify needs root: CI runs as root) and both pump backends."""
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import pytest

import fibers
import fibers.fs
from capabilities import skip
from fshelp import HEAVY, PAIRS, Env, apply, quiet, tree, until


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def env(request, tmp_path):
    e = Env(request.param[0], request.param[1], tmp_path)
    yield e
    e.close()


@pytest.fixture(params=HEAVY, ids=lambda p: f"{p[0]}-{p[1]}")
def heavy(request, tmp_path):
    e = Env(request.param[0], request.param[1], tmp_path)
    yield e
    e.close()


def kinds(env, events):
    return [(e.kind, env.rel(e.path), env.rel(e.src_path), e.is_dir)
            for e in events]


def test_file_kinds(env):
    def main():
        with env.watch() as w:
            assert w.backend == env.fs
            with open(env.p("f"), "w") as f:
                f.write("x")
            assert kinds(env, quiet(w)) == [
                ("created", "f", None, False),
                ("modified", "f", None, False),
                ("closed_write", "f", None, False)]
            os.chmod(env.p("f"), 0o600)
            assert kinds(env, quiet(w)) == [("attrib", "f", None, False)]
            os.rename(env.p("f"), env.p("g"))
            assert kinds(env, quiet(w)) == [("moved", "g", "f", False)]
            os.unlink(env.p("g"))
            assert kinds(env, quiet(w)) == [("deleted", "g", None, False)]
    env.run(main)


def test_directory_kinds(env):
    def main():
        with env.watch() as w:
            os.mkdir(env.p("d"))
            assert kinds(env, quiet(w)) == [("created", "d", None, True)]
            os.chmod(env.p("d"), 0o700)
            assert kinds(env, quiet(w)) == [("attrib", "d", None, True)]
            os.rename(env.p("d"), env.p("e"))
            assert kinds(env, quiet(w)) == [("moved", "e", "d", True)]
            # the moved directory is still watched, under its new name
            open(env.p("e", "x"), "w").close()
            assert kinds(env, quiet(w))[0] == ("created", "e/x", None, False)
            os.unlink(env.p("e", "x"))
            os.rmdir(env.p("e"))
            assert kinds(env, quiet(w)) == [("deleted", "e/x", None, False),
                                            ("deleted", "e", None, True)]
    env.run(main)


def test_root_attrib_and_seq_and_time(env):
    def main():
        with env.watch(events={"created"}) as w:
            t0 = fibers.now()
            for i in range(5):
                open(env.p(f"f{i}"), "w").close()
            evs = until(w, lambda e: len(e) >= 5)
            assert [e.seq for e in evs] == [1, 2, 3, 4, 5]
            assert all(e.time >= t0 for e in evs)
            assert all(e.kind == "created" for e in evs)
            if env.fs == "fanotify":
                assert {e.pid for e in evs} == {os.getpid()}
            else:
                assert {e.pid for e in evs} == {None}
    env.run(main)


def test_moves_in_out_and_within(env, tmp_path_factory):
    outside = os.path.realpath(tmp_path_factory.mktemp("outside"))
    os.mkdir(env.p("in"))

    def main():
        with env.watch(env.p("in")) as w:
            # within
            open(env.p("in", "a"), "w").close()
            quiet(w)
            os.rename(env.p("in", "a"), env.p("in", "b"))
            assert [(e.kind, e.path, e.src_path) for e in quiet(w)] == [
                ("moved", env.p("in", "b"), env.p("in", "a"))]
            # out of the tree: deleted
            os.rename(env.p("in", "b"), os.path.join(outside, "b"))
            assert [(e.kind, e.path) for e in quiet(w)] == [
                ("deleted", env.p("in", "b"))]
            # into the tree: created, and a directory's contents too
            os.makedirs(os.path.join(outside, "d", "sub"))
            open(os.path.join(outside, "d", "sub", "f"), "w").close()
            os.rename(os.path.join(outside, "d"), env.p("in", "d"))
            evs = quiet(w)
            assert sorted((e.kind, e.path) for e in evs) == [
                ("created", env.p("in", "d")),
                ("created", env.p("in", "d", "sub")),
                ("created", env.p("in", "d", "sub", "f"))]
            # and it is watched: a change inside is seen
            open(env.p("in", "d", "sub", "g"), "w").close()
            assert ("created", env.p("in", "d", "sub", "g")) in [
                (e.kind, e.path) for e in quiet(w)]
            # a directory moved out: its contents are gone too
            os.rename(env.p("in", "d"), os.path.join(outside, "d2"))
            assert sorted((e.kind, e.path) for e in quiet(w)) == [
                ("deleted", env.p("in", "d")),
                ("deleted", env.p("in", "d", "sub")),
                ("deleted", env.p("in", "d", "sub", "f")),
                ("deleted", env.p("in", "d", "sub", "g"))]
            # and no longer watched
            open(os.path.join(outside, "d2", "sub", "h"), "w").close()
            assert quiet(w) == []
    env.run(main)


def test_mkdir_p_race_200_times(heavy):
    # `mkdir -p a/b/c && touch a/b/c/f`, at once, 200 times: every level
    # and the file are reported, none twice.
    def main():
        want = set()
        with heavy.watch(events={"created", "deleted"}) as w:
            for i in range(200):
                d = heavy.p(str(i), "a", "b", "c")
                os.makedirs(d)
                open(os.path.join(d, "f"), "w").close()
                for p in (str(i), f"{i}/a", f"{i}/a/b", f"{i}/a/b/c",
                          f"{i}/a/b/c/f"):
                    want.add(heavy.p(p))
                if i % 20 == 19:
                    fibers.sleep(0)
            evs = quiet(w)
            got = [e.path for e in evs]
            assert len(got) == len(set(got)), "a path was reported twice"
            assert set(got) == want
            assert w.stats()["overflows"] == 0
    heavy.run(main)


def test_100k_files_exact_counts(heavy):
    # 100,000 files created and then deleted: exactly that many of each.
    # A consumer fiber counts as they come (the watcher holds at most
    # max_queue events for a consumer that does not read).
    n = 100_000
    dirs = [heavy.p(f"d{i}") for i in range(10)]
    for d in dirs:
        os.mkdir(d)

    def main():
        with heavy.watch(events={"created", "deleted"}) as w:
            seen = {}

            def consume():
                while seen.get("deleted", 0) < n:
                    for e in w.get_batch(8192):
                        seen[e.kind] = seen.get(e.kind, 0) + 1

            c = fibers.spawn(consume)
            # Virtual time passes only when every fiber waits: the writer
            # takes 2 ms (virtual) per 1000 files, so the watcher's reader,
            # which gathers a burst for 1 ms between reads, gets its turns.
            for i in range(n):
                open(f"{dirs[i % 10]}/{i}", "wb").close()
                if i % 1000 == 999:
                    fibers.sleep(0.002)
            for i in range(n):
                os.unlink(f"{dirs[i % 10]}/{i}")
                if i % 1000 == 999:
                    fibers.sleep(0.002)
            c.join()
            st = w.stats()
            assert seen == {"created": n, "deleted": n}
            assert st["overflows"] == 0
            assert st["events"] == 2 * n and st["queued"] == 0
            assert quiet(w) == []
    heavy.run(main)


def test_set_events_changes_kernel_mask(env):
    def fdinfo_masks(w):
        # The kernel's own view: the masks of the watches / marks.
        fd = w.fileno()
        with open(f"/proc/self/fdinfo/{fd}") as f:
            return [int(tok.split(":")[1], 16) for line in f
                    for tok in line.split()
                    if tok.startswith("mask:")]

    MODIFY = 0x2      # IN_MODIFY == FAN_MODIFY

    def main():
        with env.watch() as w:
            assert all(m & MODIFY for m in fdinfo_masks(w))
            w.set_events({"created", "deleted"})
            assert w.events == {"created", "deleted", "overflow", "error"}
            assert not any(m & MODIFY for m in fdinfo_masks(w))
            with open(env.p("f"), "w") as f:
                f.write("x")
            os.chmod(env.p("f"), 0o600)
            os.unlink(env.p("f"))
            assert kinds(env, quiet(w)) == [("created", "f", None, False),
                                            ("deleted", "f", None, False)]
            w.set_events(fibers.fs.ALL)
            assert all(m & MODIFY for m in fdinfo_masks(w))
            with open(env.p("g"), "w") as f:
                f.write("x")
            assert [e.kind for e in quiet(w)] == [
                "created", "modified", "closed_write"]
    env.run(main)


def test_exclude(env):
    os.mkdir(env.p("skip"))
    os.mkdir(env.p("keep"))

    def main():
        with env.watch(exclude=["*.tmp", env.p("skip"), "*/keep/no-*"]) as w:
            if env.fs == "inotify":
                assert w.stats()["watches"] == 2      # root and keep/
            open(env.p("a.tmp"), "w").close()
            open(env.p("skip", "x"), "w").close()
            os.mkdir(env.p("skip", "sub"))
            open(env.p("keep", "no-1"), "w").close()
            open(env.p("keep", "yes"), "w").close()
            open(env.p("b"), "w").close()
            got = {env.rel(e.path) for e in quiet(w)}
            assert got == {"keep/yes", "b"}
            # a move from an excluded name is a creation, to one a deletion
            os.rename(env.p("a.tmp"), env.p("a"))
            os.rename(env.p("b"), env.p("b.tmp"))
            assert kinds(env, quiet(w)) == [("created", "a", None, False),
                                            ("deleted", "b", None, False)]
    env.run(main)


def test_snapshot_reports_what_changed_while_away(env, tmp_path_factory):
    state = os.path.join(tmp_path_factory.mktemp("state"), "snap")
    os.mkdir(env.p("d"))
    for n in ("same", "gone", "grow"):
        with open(env.p("d", n), "w") as f:
            f.write("x")

    def first():
        with env.watch(snapshot=state) as w:
            assert quiet(w) == []           # nothing saved yet: no diff
            open(env.p("d", "live"), "w").close()
            assert ("created", "d/live", None, False) in kinds(env, quiet(w))
        assert os.path.exists(state)

    def second():
        with env.watch(snapshot=state) as w:
            evs = kinds(env, quiet(w))
        return evs

    env.run(first)
    os.unlink(env.p("d", "gone"))
    with open(env.p("d", "grow"), "a") as f:
        f.write("more")
    os.makedirs(env.p("new", "sub"))
    open(env.p("new", "sub", "f"), "w").close()
    evs = env.run(second)
    assert sorted(evs) == sorted([
        ("deleted", "d/gone", None, False),
        ("modified", "d/grow", None, False),
        ("created", "new", None, True),
        ("created", "new/sub", None, True),
        ("created", "new/sub/f", None, False)])
    # the state file is the watcher's own: never an event
    assert not any("snap" in (p or "") for _, p, _, _ in evs)


def test_add_remove_and_stats(env, tmp_path_factory):
    other = os.path.realpath(tmp_path_factory.mktemp("other"))

    def main():
        with env.watch(events={"created"}) as w:
            w.add(other)
            assert sorted(w.roots) == sorted([env.root, other])
            open(os.path.join(other, "x"), "w").close()
            assert [e.path for e in quiet(w)] == [os.path.join(other, "x")]
            w.remove(other)
            open(os.path.join(other, "y"), "w").close()
            open(env.p("z"), "w").close()
            assert [e.path for e in quiet(w)] == [env.p("z")]
            with pytest.raises(KeyError):
                w.remove(other)
            st = w.stats()
            assert st["backend"] == env.fs
            assert st["queued"] == 0
            assert st["watches"] == 1
            with pytest.raises(FileNotFoundError):
                w.add(env.p("missing"))
    env.run(main)


def test_bad_input(env):
    def main():
        with pytest.raises(FileNotFoundError):
            env.watch(env.p("missing"))
        with pytest.raises(ValueError, match="unknown event kind"):
            env.watch(events={"created", "exploded"})
        with pytest.raises(NotADirectoryError):
            open(env.p("file"), "w").close()
            env.watch(env.p("file"))
        with pytest.raises(ValueError, match="unknown fibers.fs backend"):
            fibers.fs.watch(env.root, backend="kqueue")
        with pytest.raises(TypeError):
            env.watch(42)
        w = env.watch()
        with pytest.raises(ValueError, match="unknown event kind"):
            w.set_events({"nope"})
        with pytest.raises(ValueError):
            w.get_batch(0)
        w.close()
        w.close()                            # twice is fine
        for call in (lambda: w.add(env.root), lambda: w.get(),
                     lambda: w.get_batch(), lambda: w.set_events({"created"}),
                     lambda: w.remove(env.root)):
            with pytest.raises(ValueError, match="closed"):
                call()
        assert list(w) == []
    env.run(main)


def test_events_queued_before_close_can_still_be_read(env):
    def main():
        w = env.watch(events={"created"})
        open(env.p("a"), "w").close()
        for _ in range(100):          # until the reader has taken it in
            if w.stats()["queued"]:
                break
            fibers.sleep(0.01)
        w.close()
        assert [env.rel(e.path) for e in w] == ["a"]
    env.run(main)


def test_close_wakes_consumers_parked_for_events(env):
    # Consumers parked on an empty watcher (get, get_batch, with and
    # without a timeout, and iteration) are woken by close() with the
    # documented ends: ValueError, and StopIteration for `for`.
    def main():
        w = env.watch(events={"created"})
        ends = {}

        def consume(name, fn):
            try:
                fn()
            except BaseException as e:
                ends[name] = type(e).__name__
            else:
                ends[name] = "returned"

        fs = [fibers.spawn(consume, name, fn) for name, fn in [
            ("get", w.get), ("get_batch", w.get_batch),
            ("get_timeout", lambda: w.get(timeout=3600)),
            ("for", lambda: list(w))]]
        for _ in range(20):
            fibers.yield_now()
        assert not any(f.dead for f in fs)
        t0 = fibers.now()
        w.close()
        for f in fs:
            f.join(5)
        assert fibers.now() - t0 < 5
        assert ends == {"get": "ValueError", "get_batch": "ValueError",
                        "get_timeout": "ValueError", "for": "returned"}
    env.run(main)


def test_a_full_queue_parks_the_reader_until_a_consumer_takes(env):
    # max_queue events wait: the reader stops reading the kernel, and
    # starts again once a consumer takes some (nothing lost, in order).
    def main():
        w = env.watch(events={"created"}, max_queue=2)

        def queued(k):
            for _ in range(500):
                if w.stats()["queued"] >= k:
                    return True
                fibers.sleep(0.01)
            return False

        for i, name in enumerate("ab"):
            open(env.p(name), "w").close()
            assert queued(i + 1)
        open(env.p("c"), "w").close()
        reads = w.stats()["reads"]
        for _ in range(20):
            fibers.sleep(0.01)
        assert w.stats()["queued"] == 2 and w.stats()["reads"] == reads
        got = [env.rel(w.get(timeout=5).path) for _ in range(3)]
        assert got == ["a", "b", "c"]
        w.close()
    env.run(main)


def test_outside_a_fiber_drives_the_scheduler(tmp_path):
    for be in ("inotify", "fanotify"):
        if fibers.fs.backends()[be] is not None:
            continue
        d = tmp_path / be
        d.mkdir()
        w = fibers.fs.watch(d, backend=be)
        (d / "x").touch()
        ev = w.get(timeout=5)
        assert (ev.kind, ev.path) == ("created", str(d / "x"))
        w.close()


def test_a_fiber_keeps_running_while_the_watcher_works(env):
    # The watcher's listings run on the blocking pool and its reader is a
    # fiber: a busy fiber beside it keeps getting turns throughout.
    for i in range(40):
        os.makedirs(env.p(f"d{i}", "x"))

    def main():
        turns = []
        stop = []

        def busy():
            while not stop:
                turns.append(1)
                fibers.yield_now()

        fibers.spawn(busy)
        fibers.yield_now()
        before = len(turns)
        w = env.watch()                       # 81 directories listed
        during_start = len(turns) - before
        for i in range(40):
            shutil.rmtree(env.p(f"d{i}"))
        before = len(turns)
        evs = quiet(w)
        during_events = len(turns) - before
        stop.append(1)
        w.close()
        assert during_start >= 40
        assert during_events >= 1
        assert len(evs) == 80
    env.run(main)


def test_event_record():
    e = fibers.fs.Event("moved", "/a/b", src_path="/a/c", is_dir=True,
                        pid=7, time=1.5, seq=3)
    assert (e.kind, e.path, e.src_path, e.is_dir, e.pid, e.time, e.seq,
            e.errno) == ("moved", "/a/b", "/a/c", True, 7, 1.5, 3, 0)
    with pytest.raises(AttributeError):
        e.kind = "created"
    assert pickle.loads(pickle.dumps(e)) == e
    assert hash(e) == hash(pickle.loads(pickle.dumps(e)))
    assert "moved" in repr(e) and "/a/c" in repr(e)
    with pytest.raises(ValueError):
        fibers.fs.Event("exploded", "/x")
    assert fibers.fs.KINDS == {"created", "deleted", "modified",
                               "closed_write", "attrib", "moved", "overflow",
                               "error"}


def test_backend_choice(tmp_path, monkeypatch):
    assert fibers.fs.backends()["inotify"] is None
    monkeypatch.setenv("FIBERS_FS_BACKEND", "inotify")
    w = fibers.fs.watch(tmp_path)
    assert w.backend == "inotify"
    w.close()
    monkeypatch.delenv("FIBERS_FS_BACKEND")
    w = fibers.fs.watch(tmp_path)
    want = "fanotify" if fibers.fs.backends()["fanotify"] is None \
        else "inotify"
    assert w.backend == want
    w.close()


def test_fanotify_without_privilege_says_why():
    # A child that drops root: forcing fanotify fails with the reason, and
    # the automatic choice falls back to inotify.
    if os.geteuid() != 0:
        skip("root", "needs root to drop privilege in a child")
    tmp_path = tempfile.mkdtemp()          # under /tmp: others may enter
    os.chmod(tmp_path, 0o777)
    code = (
        "import os, sys, fibers.fs\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    fibers.fs.watch(sys.argv[1], backend='fanotify')\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
        "w = fibers.fs.watch(sys.argv[1])\n"
        "print('auto:', w.backend)\n"
        "w.close()\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "CAP_SYS_ADMIN" in r.stdout
    assert "auto: inotify" in r.stdout
    shutil.rmtree(tmp_path)


def test_not_recursive(env):
    os.makedirs(env.p("sub", "deeper"))

    def main():
        with env.watch(recursive=False, events={"created"}) as w:
            if env.fs == "inotify":
                assert w.stats()["watches"] == 1
            open(env.p("sub", "x"), "w").close()
            open(env.p("sub", "deeper", "y"), "w").close()
            os.mkdir(env.p("d2"))
            open(env.p("d2", "z"), "w").close()
            open(env.p("top"), "w").close()
            assert sorted(env.rel(e.path) for e in quiet(w)) == ["d2", "top"]
    env.run(main)


def test_close_releases_every_fd(env):
    from iohelp import open_fds

    def main():
        w = env.watch()
        w.close()                      # warm: the pool, the pump
        before = open_fds()
        for _ in range(3):
            w = env.watch(snapshot=env.root + ".snap")
            open(env.p("f"), "w").close()
            quiet(w)
            w.close()
            os.unlink(env.p("f"))
        assert open_fds() == before
    env.run(main)


def test_unreadable_snapshot_is_a_clear_error(env, tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "snap"
    bad.write_bytes(b"not a snapshot")

    def main():
        with pytest.raises(ValueError, match="snapshot"):
            env.watch(snapshot=bad)
    env.run(main)


def test_close_without_saving_and_a_failed_save_leaves_no_temp(
        env, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    state = os.path.join(state_dir, "snap")

    def main():
        w = env.watch(snapshot=state)
        open(env.p("seen"), "w").close()
        quiet(w)
        w.close(save=False)
        assert not os.path.exists(state)
        # Regression: saving after close(save=False) was refused, though
        # that is how an application saves once it has stored everything.
        w.save_snapshot()
        assert os.path.exists(state)
        os.unlink(state)
        # Regression: a save that failed left snap.tmp behind.  Here the
        # rename fails: the target is a directory.
        os.mkdir(state)
        w = env.watch()
        with pytest.raises(OSError):
            w.save_snapshot(state)
        w.close()
        assert sorted(os.listdir(state_dir)) == ["snap"]
    env.run(main)


def test_excluded_directory_moved_in_stays_excluded(env, tmp_path_factory):
    # Regression (inotify): a directory whose name is excluded, moved in
    # from outside the roots, was added to the tree and watched, so what
    # was later made inside it was reported.
    outside = os.path.realpath(tmp_path_factory.mktemp("outside"))
    os.makedirs(os.path.join(outside, "cache.skip"))

    def main():
        with env.watch(exclude=["*.skip"]) as w:
            os.rename(os.path.join(outside, "cache.skip"),
                      env.p("cache.skip"))
            open(env.p("cache.skip", "inside"), "w").close()
            open(env.p("kept"), "w").close()
            assert {env.rel(e.path) for e in quiet(w)} == {"kept"}
            if env.fs == "inotify":
                assert w.stats()["watches"] == 1
    env.run(main)


def test_a_snapshot_of_other_roots_or_a_replaced_root_is_refused(
        env, tmp_path_factory):
    state = os.path.join(tmp_path_factory.mktemp("state"), "snap")
    other = os.path.realpath(tmp_path_factory.mktemp("other"))
    open(os.path.join(other, "f"), "w").close()

    def save():
        with fibers.fs.watch(other, snapshot=state):
            pass

    def reuse():
        with pytest.raises(ValueError, match="describes other roots"):
            env.watch(snapshot=state)
    env.run(save)
    env.run(reuse)

    # the same path, but another directory there now
    state2 = state + "2"

    def save_root():
        with env.watch(snapshot=state2):
            pass
    env.run(save_root)
    os.rename(env.root, env.root + ".old")
    os.mkdir(env.root)

    def replaced():
        with pytest.raises(ValueError, match="device and inode differ"):
            env.watch(snapshot=state2)
    env.run(replaced)


def test_baseline_reports_what_differs_from_a_picture(env):
    os.mkdir(env.p("d"))
    for n in ("same", "gone", "grow"):
        with open(env.p("d", n), "w") as f:
            f.write("x")

    def first():
        with env.watch() as w:
            pic = w.picture()
            assert pic == w.picture(env.root)
            assert w.picture(env.p("d")) == {
                k: v for k, v in pic.items()
                if k.startswith(os.fsencode(env.p("d")))}
            return pic
    pic = env.run(first)
    assert pic[os.fsencode(env.p("d", "same"))][0] is False
    assert pic[os.fsencode(env.p("d"))][0] is True
    os.unlink(env.p("d", "gone"))
    with open(env.p("d", "grow"), "a") as f:
        f.write("more")
    os.mkdir(env.p("new"))
    bad = os.path.join(os.fsencode(env.p("new")), b"bad-\xff")
    open(bad, "w").close()

    def second():
        with env.watch(baseline=pic) as w:
            return kinds(env, quiet(w))
    assert sorted(env.run(second)) == sorted([
        ("deleted", "d/gone", None, False),
        ("modified", "d/grow", None, False),
        ("created", "new", None, True),
        ("created", os.fsdecode(b"new/bad-\xff"), None, False)])

    def both():
        with pytest.raises(ValueError, match="not both"):
            env.watch(baseline=pic, snapshot=env.p("x"))
        with pytest.raises(TypeError, match="baseline must be a dict"):
            env.watch(baseline=[1])
    env.run(both)
