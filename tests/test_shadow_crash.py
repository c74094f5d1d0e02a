"""fibers-shadow's promise under crashes: every file-system event reaches
the store once, whatever happens to the process.  The real program in a
subprocess (tools/shadowproc.py's Shadow), SIGKILLed at chosen moments,
and the store's rows checked exactly; plus a bounded run of the crash
harness (tools/soak_shadow.py, whose full run is `make soak-shadow`), and
file names that are not valid UTF-8, which must travel as their bytes.

Every wait polls a condition under a deadline; the pacing sleeps only
pace activity, nothing is asserted from them."""
import collections
import os
import threading

import pytest

from fshelp import skip_unless_fs_backend_runs
from tools.shadowproc import Shadow, poll
from tools.soak_shadow import CLEAN, soak


@pytest.fixture(params=["fanotify", "inotify"])
def fs_backend(request):
    skip_unless_fs_backend_runs(request.param)
    return request.param


@pytest.fixture
def sh(fs_backend, tmp_path):
    s = Shadow(tmp_path, fs_backend)
    yield s
    s.close()


class Busy:
    """A thread appending to one file every 20 ms (at most 60 s): the
    program always has something in hand, as on a busy machine, so a kill
    never meets a quiet moment."""

    def __init__(self, path):
        self.path = path
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        with open(self.path, "a") as f:
            for _ in range(3000):
                if self.done.wait(0.02):
                    return
                f.write("busy\n")
                f.flush()

    def stop(self):
        self.done.set()
        self.t.join(10)


def assert_gap_free(rows):
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has gaps"


def test_sigkill_after_shipping_then_deletions_while_down(sh):
    # The field report: 200 files created and shipped, kill -9 within a
    # second, 20 of them deleted while the program is down, restart.  Every
    # deletion must reach the store, and nothing shipped before the kill
    # may be stored again.
    sh.start()
    busy = Busy(sh.p("busy.log"))
    names = [f"f{i:03d}" for i in range(200)]
    try:
        for n in names:
            sh.write(n)
        want = {("created", n) for n in names}
        poll(lambda: want <= sh.kinds(), "the 200 creations in the store")
        sh.kill()
    finally:
        busy.stop()
    gone = names[::10]
    for n in gone:
        os.unlink(sh.p(n))
    sh.start()
    sh.sync()
    rows = sh.rows()
    assert_gap_free(rows)
    rel = [(k, os.path.relpath(p, sh.root)) for _, k, p, _, _ in rows]
    deleted = sorted(p for k, p in rel if k == "deleted")
    created = collections.Counter(p for k, p in rel if k == "created")
    twice = sorted(p for p, c in created.items() if c > 1)
    assert (len(deleted), len(twice)) == (len(gone), 0), (deleted, twice)
    assert deleted == sorted(gone)
    assert set(names) <= set(created)
    assert sh.stop() == 0


def test_soak_a_few_kills(fs_backend, tmp_path):
    # The crash harness, bounded: one kill of each sort (mid-run, during
    # the start-up scan, during the shutdown drain) and one more mid-run,
    # a writer busy throughout (file names not valid UTF-8 among its
    # creations), a SQLite store.
    r = soak(tmp_path / "soak", fs_backend, kills=4, seed=7, rate=150,
             files=1000, bad_names=0.05,
             sorts=("mid", "startup", "drain", "mid"))
    # (a drain that ends before its SIGKILL counts as a clean stop)
    assert sum(n for k, n in r.kills.items() if k != CLEAN) == 4, r
    assert r.figures["events"] > 1000, r
    assert (r.failed(), r.problems) == ({}, []), r


BAD = b"bad-\xff\xfe-1"             # not valid UTF-8 (nor any text)


def _bytes_paths(sh):
    """(kind, path below the root, src_path below the root) with the paths
    as the bytes the store gives back."""
    root = os.fsencode(sh.root)
    rel = (lambda p: None if p is None else os.path.relpath(p, root))
    return [(k, rel(p), rel(sp)) for _, _, _, k, p, sp, _ in sh.all_rows()]


def check_names_travel_as_bytes(sh):
    sh.start()
    root = os.fsencode(sh.root)
    with open(os.path.join(root, BAD), "wb") as f:
        f.write(b"x")
    os.mkdir(os.path.join(root, b"dir-\xe9"))          # latin-1 e-acute
    sh.sync()           # (the new directory is watched from here)
    os.rename(os.path.join(root, BAD),
              os.path.join(root, b"dir-\xe9", b"moved-\xfe"))
    sh.write("after")
    # everything before the marker has shipped: journaling went on
    sh.sync()
    got = _bytes_paths(sh)
    assert ("created", BAD, None) in got
    assert ("created", b"dir-\xe9", None) in got
    assert ("moved", b"dir-\xe9/moved-\xfe", BAD) in got
    assert ("created", b"after", None) in got
    # and later events still flow
    sh.write("later")
    sh.sync()
    assert ("created", b"later", None) in _bytes_paths(sh)
    assert sh.stop() == 0


def test_names_not_utf8_travel_as_bytes_sqlite(sh):
    check_names_travel_as_bytes(sh)


def test_names_not_utf8_travel_as_bytes_postgresql(pg, fs_backend,
                                                   tmp_path):
    from test_shadow_pg import fresh_db
    sh = Shadow(tmp_path, fs_backend, store_url=fresh_db(pg))
    try:
        check_names_travel_as_bytes(sh)
    finally:
        sh.close()
