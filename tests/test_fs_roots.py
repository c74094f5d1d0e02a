"""fibers.fs: a root that goes away (deleted, moved away, replaced) and
comes back (made again, or a directory moved to its path).  Each test runs
on both fs backends and both pump backends, on the real kernel.

Every test watches a second root, `sync`, beside the one that goes away:
the markers that quiet() makes there are read in order with the root's
events (one kernel queue), so "nothing more happened" is observed, not
waited for."""
import errno
import os
import shutil

import pytest

import fibers
from fshelp import PAIRS, Env, apply, quiet, settle, small_kernel_queue, tree

# Creation races the watcher's listing of a directory that appears: what
# the listing finds is reported once, as created, whatever else happened to
# it before, so the tests deliver only the kinds that makes exact.
KINDS = {"created", "deleted", "moved"}


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def env(request, tmp_path):
    e = Env(request.param[0], request.param[1], tmp_path)
    os.mkdir(e.p("sync"))
    yield e
    e.close()


def evs(env, events):
    return [(e.kind, env.rel(e.path), e.is_dir, e.errno) for e in events]


def populate(top):
    os.makedirs(os.path.join(top, "d", "e"))
    for rel in ("a", "d/b", "d/e/c"):
        with open(os.path.join(top, rel), "w") as f:
            f.write("x")


def assert_gone(env, events, root, deleted):
    # deleted for each of `deleted` (every one after those below it), then
    # one error naming the root, and nothing else: no path outside the root.
    got = evs(env, events)
    assert got[-1] == ("error", root, True, errno.ENOENT), got
    body = got[:-1]
    assert all(k == "deleted" for k, _, _, _ in body), got
    paths = [p for _, p, _, _ in body]
    assert sorted(paths) == sorted(deleted), got
    for i, p in enumerate(paths):
        assert not any(q.startswith(p + "/") for q in paths[i + 1:]), got


def test_root_deleted(env):
    populate(env.p("r"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            shutil.rmtree(env.p("r"))
            assert_gone(env, quiet(w, env.p("sync")), "r",
                        ["r/a", "r/d", "r/d/b", "r/d/e", "r/d/e/c"])
            # still a root (it is waited for), not lost
            assert sorted(w.roots) == sorted([env.p("r"), env.p("sync")])
            assert w.stats()["missing_roots"] == 1
            assert quiet(w, env.p("sync")) == []
    env.run(main)


def test_root_moved_away_then_written(env):
    populate(env.p("r"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            # Activity first, so the watcher knows these directories (the
            # fanotify backend caches their handles).
            for rel in ("t", "d/t", "d/e/t"):
                open(env.p("r", rel), "w").close()
                os.unlink(env.p("r", rel))
            assert len(quiet(w, env.p("sync"))) == 6
            os.rename(env.p("r"), env.p("away"))
            assert_gone(env, quiet(w, env.p("sync")), "r",
                        ["r/a", "r/d", "r/d/b", "r/d/e", "r/d/e/c"])
            # The moved directory is outside the roots now: nothing in it
            # is reported, under its old path or its new one.
            with open(env.p("away", "new"), "w") as f:
                f.write("y")
            os.mkdir(env.p("away", "d", "sub"))
            open(env.p("away", "d", "sub", "f"), "w").close()
            os.rename(env.p("away", "a"), env.p("away", "d", "e", "a2"))
            os.unlink(env.p("away", "d", "b"))
            assert evs(env, quiet(w, env.p("sync"))) == []
    env.run(main)


def test_root_made_again_is_watched(env):
    populate(env.p("r"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            watches = w.stats()["watches"]
            shutil.rmtree(env.p("r"))
            quiet(w, env.p("sync"))
            os.mkdir(env.p("r"))
            open(env.p("r", "f"), "w").close()
            os.makedirs(env.p("r", "sub", "deeper"))
            open(env.p("r", "sub", "deeper", "g"), "w").close()
            got = quiet(w, env.p("sync"))
            assert {e.kind for e in got} == {"created"}, evs(env, got)
            assert sorted(env.rel(e.path) for e in got) == [
                "r/f", "r/sub", "r/sub/deeper", "r/sub/deeper/g"]
            assert w.stats()["missing_roots"] == 0
            assert w.stats()["watches"] == watches
            # and it is watched, to the bottom
            open(env.p("r", "sub", "deeper", "h"), "w").close()
            os.unlink(env.p("r", "f"))
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("created", "r/sub/deeper/h", False, 0),
                ("deleted", "r/f", False, 0)]
            # and it can go away again
            os.rename(env.p("r"), env.p("away"))
            assert_gone(env, quiet(w, env.p("sync")), "r",
                        ["r/sub", "r/sub/deeper", "r/sub/deeper/g",
                         "r/sub/deeper/h"])
    env.run(main)


def test_directory_moved_onto_root_path(env):
    populate(env.p("r"))
    populate(env.p("src"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            shutil.rmtree(env.p("r"))
            quiet(w, env.p("sync"))
            os.rename(env.p("src"), env.p("r"))
            got = quiet(w, env.p("sync"))
            assert {e.kind for e in got} == {"created"}, evs(env, got)
            assert apply(set(), got) == tree(env.p("r"))
            assert len(got) == len(tree(env.p("r")))
            open(env.p("r", "d", "e", "z"), "w").close()
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("created", "r/d/e/z", False, 0)]
    env.run(main)


def test_root_replaced_by_a_rename(env):
    # A directory renamed over the (empty) root: the old root is gone (an
    # error), the new one's contents are created.
    os.mkdir(env.p("r"))
    populate(env.p("src"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            os.rename(env.p("src"), env.p("r"))
            got = quiet(w, env.p("sync"))
            assert evs(env, got[:1]) == [("error", "r", True, errno.ENOENT)]
            assert apply(set(), got[1:]) == tree(env.p("r"))
            assert len(got) == 1 + len(tree(env.p("r")))
            os.unlink(env.p("r", "a"))
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("deleted", "r/a", False, 0)]
    env.run(main)


def test_root_whose_parent_goes_and_comes_back(env):
    # The root's parent goes too: the watcher waits on the nearest
    # ancestor that is left, and follows the path down as it is made again.
    populate(env.p("p", "q", "r"))

    def main():
        root = env.p("p", "q", "r")
        with env.watch([root, env.p("sync")], events=KINDS) as w:
            shutil.rmtree(env.p("p"))
            assert_gone(env, quiet(w, env.p("sync")), "p/q/r",
                        ["p/q/r/a", "p/q/r/d", "p/q/r/d/b", "p/q/r/d/e",
                         "p/q/r/d/e/c"])
            os.makedirs(env.p("p", "q"))
            assert quiet(w, env.p("sync")) == []      # not the root yet
            os.mkdir(root)
            open(os.path.join(root, "f"), "w").close()
            got = quiet(w, env.p("sync"))
            assert evs(env, got) == [("created", "p/q/r/f", False, 0)]
            assert w.stats()["missing_roots"] == 0
    env.run(main)


def test_missing_root_removed(env):
    os.mkdir(env.p("r"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            one = w.stats()["watches"]
            os.rmdir(env.p("r"))
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("error", "r", True, errno.ENOENT)]
            w.remove(env.p("r"))
            assert w.roots == [env.p("sync")]
            assert w.stats()["missing_roots"] == 0
            if env.fs == "inotify":
                assert w.stats()["watches"] == one - 1
            # no longer waited for: its return is not reported
            os.mkdir(env.p("r"))
            open(env.p("r", "f"), "w").close()
            assert quiet(w, env.p("sync")) == []
    env.run(main)


def test_root_replaced_while_events_were_lost(env):
    # The kernel queue overflows, and meanwhile the root is moved away and
    # made again: the rescan sees its path holds another directory, reports
    # the old one gone and watches the new one, not the one moved away.
    os.mkdir(env.p("r"))

    def main():
        with small_kernel_queue(env.fs, 64):
            w = env.watch([env.p("r"), env.p("sync")], events=KINDS,
                          unlimited_queue=False)
        with w:
            for i in range(300):
                open(env.p("r", f"f{i}"), "w").close()
            os.rename(env.p("r"), env.p("away"))
            os.mkdir(env.p("r"))
            open(env.p("r", "new"), "w").close()
            got = settle(w, env.p("sync"))
            kinds = [e.kind for e in got]
            assert "overflow" in kinds
            assert ("error", env.p("r"), errno.ENOENT) in [
                (e.kind, e.path, e.errno) for e in got]
            assert all(e.path is None or e.path.startswith(env.p("r") + "/")
                       or e.path == env.p("r") for e in got)
            assert apply(set(), got) == {env.p("r", "new")}
            assert w.stats()["missing_roots"] == 0
            # the new directory is the one watched
            open(env.p("away", "x"), "w").close()
            open(env.p("r", "y"), "w").close()
            assert [x for x in evs(env, settle(w, env.p("sync")))
                    if x[0] != "overflow"] == [("created", "r/y", False, 0)]
    env.run(main)


def fanotify_marks(w):
    with open(f"/proc/self/fdinfo/{w.fileno()}") as f:
        # one "fanotify sdev:... mask:..." line per filesystem mark
        return sum(line.startswith("fanotify ") and " mask:" in line
                   for line in f)


def test_set_events_and_remove_with_a_root_gone(env):
    # The kernel's marks are changed through the filesystem, not through a
    # root's path, which may be gone.
    os.mkdir(env.p("r"))

    def main():
        with env.watch([env.p("r"), env.p("sync")], events=KINDS) as w:
            os.rmdir(env.p("r"))
            open(env.p("sync", "f"), "w").close()
            quiet(w, env.p("sync"))
            w.set_events(KINDS | {"attrib"})
            os.chmod(env.p("sync", "f"), 0o600)
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("attrib", "sync/f", False, 0)]
            w.remove(env.p("sync"))
            w.remove(env.p("r"))
            assert w.roots == []
            assert w.stats()["watches"] == 0
            if env.fs == "fanotify":
                assert fanotify_marks(w) == 0
    env.run(main)


def test_directory_waited_on_goes_too(env):
    # The root's parent goes, then the grandparent the watcher waits on
    # goes as well: it waits further up, and still sees the path come back.
    populate(env.p("p", "q", "r"))

    def main():
        root = env.p("p", "q", "r")
        with env.watch([root, env.p("sync")], events=KINDS) as w:
            shutil.rmtree(env.p("p", "q"))
            quiet(w, env.p("sync"))
            shutil.rmtree(env.p("p"))
            assert quiet(w, env.p("sync")) == []
            os.makedirs(root)
            open(os.path.join(root, "f"), "w").close()
            assert evs(env, quiet(w, env.p("sync"))) == [
                ("created", "p/q/r/f", False, 0)]
            assert w.stats()["missing_roots"] == 0
    env.run(main)
