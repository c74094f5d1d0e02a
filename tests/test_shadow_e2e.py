"""fibers-shadow end to end: the real program in a subprocess, a temp root,
a SQLite store; the store's rows are checked exactly ((kind, path) sets,
seq without gaps).  Every wait polls a condition under a deadline."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from capabilities import skip
from fshelp import skip_unless_fs_backend_runs
# the instance helper is shared with tools/soak_shadow.py
from tools.shadowproc import DEADLINE, Shadow, poll  # noqa: F401


@pytest.fixture(params=["fanotify", "inotify"])
def sh(request, tmp_path):
    skip_unless_fs_backend_runs(request.param)
    s = Shadow(tmp_path, request.param)
    yield s
    s.close()


def assert_gap_free(rows):
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1))


def test_events_reach_the_store(sh):
    sh.start()
    sh.write("a", "hello")
    sh.write("b")
    os.mkdir(sh.p("d"))
    sh.write("d/c")
    os.rename(sh.p("b"), sh.p("b2"))
    os.unlink(sh.p("a"))
    m = sh.sync()
    # a burst of writes to one file ships once
    with open(sh.p("d/c"), "a") as f:
        for _ in range(50):
            f.write("more")
            f.flush()
    m2 = sh.sync()
    rows = sh.rows()
    assert_gap_free(rows)
    assert sh.kinds(rows) == {
        ("created", "a"), ("created", "b"), ("created", "d"),
        ("created", "d/c"), ("moved", "b2"), ("deleted", "a"),
        ("created", m), ("modified", "d/c"), ("created", m2)}
    assert sum(1 for r in rows if r[1] == "modified") == 1
    moved = [r for r in rows if r[1] == "moved"][0]
    assert moved[3] == sh.p("b")
    assert [r[4] for r in rows if r[2] == sh.p("d")] == [1]
    st = sh.status()
    assert st["journal"]["depth"] == 0
    assert st["journal"]["lag"] == 0
    assert st["store"]["state"] == "connected"
    assert st["watcher"]["backend"] == sh.backend
    assert sh.stop() == 0


def test_sigterm_exits_0_with_a_final_status(sh):
    sh.start()
    sh.write("f")
    sh.sync()
    assert sh.stop(signal.SIGTERM) == 0
    lines = (sh.tmp / "out1").read_text().splitlines()
    final = json.loads(lines[-1])
    assert final["journal"]["depth"] == 0
    assert final["counts"]["shipped"] >= 2
    # SIGINT too, and a restart ships nothing twice
    sh.start()
    sh.write("g")
    sh.sync()
    assert sh.stop(signal.SIGINT) == 0
    rows = sh.rows()
    assert_gap_free(rows)
    assert len(rows) == len({(k, p) for _, k, p, _, _ in rows})


def test_sigkill_mid_stream_loses_nothing(sh):
    sh.start()
    for i in range(50):
        sh.write(f"a{i}")
    sh.sync()
    # phase B: killed while files are being made and shipped
    for i in range(200):
        sh.write(f"b{i}")
        if i == 100:
            sh.kill()
    # phase C: while nobody watches
    for i in range(30):
        sh.write(f"c{i}")
    for i in range(5):
        os.unlink(sh.p(f"a{i}"))
    with open(sh.p("a10"), "a") as f:
        f.write("grown while down")
    sh.start()
    m = sh.sync()
    rows = sh.rows()
    assert_gap_free(rows)
    got = sh.kinds(rows)
    marks = {x for x in got if x[1].startswith("mark-")}
    expected = ({("created", f"a{i}") for i in range(50)}
                | {("created", f"b{i}") for i in range(200)}
                | {("created", f"c{i}") for i in range(30)}
                | {("deleted", f"a{i}") for i in range(5)}
                | {("modified", "a10")})
    assert ("created", m) in marks
    assert got - marks == expected
    # and each once: nothing journaled before the kill is reported again
    assert len(rows) == len({(k, p) for _, k, p, _, _ in rows})
    assert sh.stop() == 0


def test_journal_survives_sigkill_while_paused(sh):
    sh.start()
    sh.write("first")
    sh.sync()
    assert sh.ctl("pause") == {"paused": True}
    for i in range(20):
        sh.write(f"p{i}")
    poll(lambda: sh.status()["journal"]["depth"] >= 20, "the journal")
    assert ("created", "p0") not in sh.kinds()
    sh.kill()
    sh.start()
    m = sh.sync()
    rows = sh.rows()
    assert_gap_free(rows)
    got = sh.kinds(rows)
    assert {("created", f"p{i}") for i in range(20)} <= got
    assert ("created", m) in got
    assert sh.stop() == 0


def test_ctl_pause_resume_set(sh):
    sh.start()
    sh.write("pre")
    m1 = sh.sync()
    assert sh.ctl("set", "kinds=created,deleted")["kinds"] == [
        "created", "deleted"]
    st = sh.status()
    assert st["rules"]["kinds"] == ["created", "deleted"]
    with open(sh.p("pre"), "a") as f:
        f.write("not shipped: modified is off")
    # moved is off too: a rename ships as what a reader of created and
    # deleted must see
    os.rename(sh.p("pre"), sh.p("pre2"))
    sh.write("new")
    os.unlink(sh.p("new"))
    m2 = sh.sync()
    assert sh.kinds() == {("created", "pre"), ("created", m1),
                          ("deleted", "pre"), ("created", "pre2"),
                          ("created", "new"), ("deleted", "new"),
                          ("created", m2)}
    assert not [r for r in sh.rows() if r[1] in ("moved", "modified")]
    # pause: journaled, not shipped; resume: shipped
    assert sh.ctl("pause") == {"paused": True}
    assert sh.status()["paused"] is True
    sh.write("during-pause")
    poll(lambda: sh.status()["journal"]["depth"] >= 1, "the journal")
    assert ("created", "during-pause") not in sh.kinds()
    assert sh.status()["store"]["state"] == "paused"
    assert sh.ctl("resume") == {"paused": False}
    sh.sync()
    assert ("created", "during-pause") in sh.kinds()
    # bad requests are refused with a reason, and change nothing
    r = sh.ctl("set", "kinds=created,bogus", check=False)
    assert r.returncode == 1 and "bogus" in r.stderr
    r = sh.ctl("set", "colour=blue", check=False)
    assert r.returncode == 1 and "colour" in r.stderr
    r = sh.ctl("set", "kinds=", check=False)       # would shadow nothing
    assert r.returncode == 1 and "at least one kind" in r.stderr
    r = sh.ctl("set", "kinds= , ", check=False)
    assert r.returncode == 1 and "at least one kind" in r.stderr
    r = sh.ctl("set", "window_ms", check=False)
    assert r.returncode == 2
    assert sh.status()["rules"]["kinds"] == ["created", "deleted"]
    assert sh.ctl("set", "exclude=*.tmp")["exclude"] == ["*.tmp"]
    sh.write("x.tmp")
    sh.write("y.txt")
    sh.sync()
    got = sh.kinds()
    assert ("created", "y.txt") in got and ("created", "x.tmp") not in got
    assert sh.stop() == 0


def test_live_config_reload(sh, tmp_path):
    cfg = tmp_path / "shadow.toml"
    cfg.write_text('[rules]\nexclude = ["*.log"]\nwindow_ms = 100\n')
    sh.start("--config", str(cfg))
    assert sh.status()["rules"]["exclude"] == ["*.log"]
    sh.write("a.log")
    sh.write("a.txt")
    sh.sync()
    assert ("created", "a.txt") in sh.kinds()
    assert ("created", "a.log") not in sh.kinds()
    # an edit applies without a restart (write-and-rename, as editors do)
    tmp = tmp_path / "shadow.toml.new"
    tmp.write_text('[rules]\nexclude = ["*.txt"]\n')
    os.rename(tmp, cfg)
    poll(lambda: sh.status()["rules"]["exclude"] == ["*.txt"],
         "the new rules")
    sh.write("b.log")
    sh.write("b.txt")
    sh.sync()
    got = sh.kinds()
    assert ("created", "b.log") in got and ("created", "b.txt") not in got
    # a bad edit is reported and the old rules stay
    cfg.write_text('[rules]\nexclude = ["*.txt"\n')
    poll(lambda: sh.status()["config_error"], "the config error")
    st = sh.status()
    assert "not valid TOML" in st["config_error"]
    assert st["rules"]["exclude"] == ["*.txt"]
    cfg.write_text('[rules]\nkinds = ["teleported"]\n')
    poll(lambda: "teleported" in (sh.status()["config_error"] or ""),
         "the second config error")
    assert sh.status()["rules"]["kinds"] == sorted(
        ["created", "deleted", "modified", "moved"])
    assert "old rules stay" in sh.stderr()
    assert sh.stop() == 0


def away_store(tmp_path):
    """A store path whose directory exists but which leads nowhere yet: a
    symbolic link into a directory that is not there (a mount that went
    away).  fibers-shadow starts, and the store is down until the
    directory appears.  Returns (the link, the directory to make)."""
    away = tmp_path / "away"
    link = tmp_path / "store-link.db"
    os.symlink(away / "store.db", link)
    return link, away


def test_unreachable_store_is_not_fatal(sh, tmp_path):
    link, away = away_store(tmp_path)
    sh.start(store="sqlite:///" + str(link))
    sh.write("while-away")
    poll(lambda: sh.status()["store"]["state"] == "down"
         and sh.status()["journal"]["depth"] >= 1, "the store to be down")
    st = sh.status()
    assert "unable to open" in st["store"]["last_error"]
    os.mkdir(away)
    sh.store = str(link)
    sh.sync()
    assert ("created", "while-away") in sh.kinds()
    st = sh.status()
    assert st["store"]["state"] == "connected"
    assert st["store"]["reconnects"] >= 1
    assert sh.stop() == 0


def run_once(sh, *args, cwd=None):
    """fibers-shadow run to its end (for the errors it must stop on)."""
    return subprocess.run([sys.executable, "-m", "fibers.shadow",
                           "--state-dir", sh.state, "--no-ui", *args],
                          capture_output=True, text=True, timeout=30,
                          env=sh.env, cwd=cwd)


def assert_one_line_error(r, words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert words in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, \
        r.stderr


def test_store_directory_missing_exits_2(sh, tmp_path):
    # a typo in the store's directory is said at start, not retried for
    # ever as a store that is down
    missing = tmp_path / "missing"
    r = run_once(sh, "--root", sh.root, "--store",
                 "sqlite:///" + str(missing / "store.db"))
    assert_one_line_error(r, f"{str(missing)!r} of the store")
    assert not os.path.exists(os.path.join(sh.state, "journal.db"))
    # sqlite:///PATH is relative to the working directory (SQLAlchemy's
    # convention): /tmp/... written with three slashes is tmp/... here,
    # and the message says how to write an absolute path
    r = run_once(sh, "--root", sh.root, "--store",
                 "sqlite://" + str(tmp_path / "s.db"), cwd=sh.root)
    assert_one_line_error(r, "four slashes")
    assert os.path.join(sh.root, str(tmp_path).lstrip("/")) in r.stderr
    # the config file's store is checked the same way
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'store = "sqlite:///{missing}/s.db"\n')
    r = run_once(sh, "--root", sh.root, "--config", str(cfg))
    assert_one_line_error(r, "does not exist")
    assert not os.path.exists(os.path.join(sh.state, "journal.db"))


def test_store_url_relative_to_the_working_directory(sh, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sh.start(store="sqlite:///rel.db", cwd=work)
    sh.store = str(work / "rel.db")
    assert sh.status()["store"]["url"] == "sqlite:///rel.db"
    sh.write("f")
    sh.sync()
    assert ("created", "f") in sh.kinds()
    assert sh.stop() == 0


def test_config_file_not_utf8(sh, tmp_path):
    cfg = tmp_path / "shadow.toml"
    # at start: one line, exit 2, nothing started
    cfg.write_bytes(b'[rules]\nexclude = ["*.log"]\n# caf\xe9\n')
    r = run_once(sh, "--root", sh.root, "--config", str(cfg))
    assert_one_line_error(r, "not valid UTF-8")
    assert "line 3" in r.stderr
    assert not os.path.exists(sh.state)
    # live: an edit that is not UTF-8 keeps the old rules, says why in the
    # status and the log, and the daemon runs on
    cfg.write_text('[rules]\nexclude = ["*.log"]\n')
    sh.start("--config", str(cfg))
    cfg.write_bytes(b'[rules]\nexclude = ["*.txt"]\n# caf\xe9\n')
    poll(lambda: sh.status()["config_error"], "the config error")
    st = sh.status()
    assert "not valid UTF-8" in st["config_error"]
    assert st["rules"]["exclude"] == ["*.log"]
    sh.write("b.log")
    sh.write("b.txt")
    sh.sync()
    got = sh.kinds()
    assert ("created", "b.txt") in got and ("created", "b.log") not in got
    err = sh.stderr()
    assert "old rules stay" in err and "not valid UTF-8" in err
    assert "Traceback" not in err
    # mended: applied, and the error is gone
    cfg.write_text('[rules]\nexclude = ["*.txt"]\n# cafe\n')
    poll(lambda: sh.status()["rules"]["exclude"] == ["*.txt"],
         "the mended rules")
    assert sh.status()["config_error"] is None
    assert sh.stop() == 0


def test_a_stalled_store_reads_stalled(sh):
    # A real stall: another connection holds the store's write lock, so
    # the shipper's write waits (SQLite's busy timeout, 5 s, then it fails
    # and is retried).  The status must not say "connected" meanwhile.
    sh.start()
    sh.write("before")
    sh.sync()
    db = sqlite3.connect(sh.store, timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        sh.write("during")
        st = sh.wait_store_state("stalled")
        assert st["store"]["stalled_for"] >= 2
        assert st["journal"]["depth"] >= 1
    finally:
        db.execute("ROLLBACK")
        db.close()
    sh.sync()
    assert ("created", "during") in sh.kinds()
    st = sh.status()
    assert st["store"]["state"] == "connected"
    assert st["store"]["stalled_for"] is None
    assert sh.stop() == 0


def test_bad_input_exits_2(sh, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "fibers.shadow",
                               "--state-dir", sh.state, "--no-ui", *args],
                              capture_output=True, text=True, timeout=30,
                              env=sh.env)
    r = run("--root", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("--config", str(tmp_path / "nope.toml"), "--root", sh.root)
    assert r.returncode == 2 and "cannot read config file" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("roots = [\n")
    r = run("--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    bad.write_text("[rules]\nmin_size = -1\n")
    r = run("--config", str(bad), "--root", sh.root)
    assert r.returncode == 2 and "min_size" in r.stderr
    r = run("--root", sh.root, "--store", "mysql://x")
    assert r.returncode == 2 and "unknown store URL" in r.stderr
    bad.write_text("[rules]\nkinds = []\n")       # would shadow nothing
    r = run("--config", str(bad), "--root", sh.root)
    assert r.returncode == 2 and "at least one kind" in r.stderr
    r = run()
    assert r.returncode == 2 and "nothing to shadow" in r.stderr
    r = run("--bogus-flag")
    assert r.returncode == 2
    # a second instance on the same state directory
    sh.start()
    r = run("--root", sh.root)
    assert r.returncode == 2 and "another fibers-shadow" in r.stderr
    assert sh.stop() == 0
    # ctl without an instance
    r = sh.ctl("status", check=False)
    assert r.returncode == 1 and "no fibers-shadow is running" in r.stderr


def test_sigterm_with_the_store_away_keeps_the_journal(sh, tmp_path):
    link, away = away_store(tmp_path)
    sh.start(store="sqlite:///" + str(link))
    for i in range(10):
        sh.write(f"k{i}")
    poll(lambda: sh.status()["journal"]["depth"] >= 10, "the journal")
    t0 = time.monotonic()
    assert sh.stop() == 0
    assert time.monotonic() - t0 < 10          # the drain is bounded
    final = json.loads((sh.tmp / "out1").read_text().splitlines()[-1])
    assert final["journal"]["depth"] == 10
    assert "left in the journal" in sh.stderr()
    os.mkdir(away)
    sh.store = str(link)
    sh.start(store="sqlite:///" + str(link))
    sh.sync()
    assert {("created", f"k{i}") for i in range(10)} <= sh.kinds()
    assert_gap_free(sh.rows())
    assert sh.stop() == 0


def test_headless_status_lines(sh):
    sh.start()
    out = sh.tmp / "out1"

    def lines():
        text = out.read_text()
        return [json.loads(x) for x in text.splitlines()] \
            if text.count("\n") >= 2 else None
    got = poll(lines, "two status lines")
    assert got[0]["journal"]["depth"] == 0
    assert {"counts", "store", "rules", "watcher", "journal"} <= set(got[0])
    assert got[1]["time"] - got[0]["time"] == pytest.approx(1.0, abs=0.5)
    assert sh.stop() == 0


def test_state_dir_inside_the_root_is_not_shadowed(sh):
    # The default state dir may well sit under a shadowed home directory:
    # the journal's own writes must not feed back into the journal.
    sh.state = os.path.join(sh.root, ".state")
    sh.store = os.path.join(sh.root, ".state", "store.db")
    sh.start()
    sh.write("a")
    sh.sync()
    sh.write("b")
    sh.sync()
    st = sh.status()
    rows = sh.rows()
    assert not [r for r in rows if "/.state" in r[2]]
    c = st["counts"]
    assert c["journaled"] == len(rows)
    assert c["seen"] == c["journaled"] + c["coalesced"]    # nothing else
    assert sh.stop() == 0


def test_full_disk_stops_cleanly_and_loses_nothing(sh, tmp_path):
    # A real full disk: the state directory (journal, snapshot) on a small
    # tmpfs of the test's own, grown again afterwards.
    if os.geteuid() != 0:
        skip("root", "mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs",
                        str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        skip("mount", f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        _full_disk(sh, str(disk))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _full_disk(sh, disk):
    sh.state = os.path.join(disk, "state")
    sh.start()
    sh.write("before")
    sh.sync()
    assert sh.ctl("pause") == {"paused": True}
    names = []
    for i in range(5000):
        if sh.proc.poll() is not None:
            break
        name = f"{i:05d}-" + "n" * 180
        sh.write(name, "")
        names.append(name)
    rc = sh.proc.wait(timeout=30)
    sh.out.close()
    assert rc == 1
    err = sh.stderr()
    assert "cannot write the journal" in err and "rolled back" in err
    db = sqlite3.connect(os.path.join(sh.state, "journal.db"))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
    # with room again, everything arrives: the journal's rows ship and the
    # rest is found by the start-up diff against the snapshot
    sh.start()
    sh.sync()
    got = sh.kinds()
    missing = sorted(n[:5] for n in names if ("created", n) not in got)
    assert not missing, (len(missing), missing[:5])
    assert_gap_free(sh.rows())
    assert sh.stop() == 0


# ---- the state directory must match the journal ----------------------------

def _run_once(sh, *args):
    return subprocess.run(sh.cmd(*args), capture_output=True, text=True,
                          timeout=60, env=sh.env)


def _first_run(sh):
    sh.start()
    sh.write("before")
    sh.sync()
    assert sh.stop() == 0
    return sh.rows()


def test_a_journal_truncated_to_nothing_is_refused(sh):
    before = _first_run(sh)
    journal = os.path.join(sh.state, "journal.db")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(journal + suffix):
            os.unlink(journal + suffix)
    os.truncate(journal, 0)
    r = _run_once(sh)
    assert r.returncode == 2, r.stderr
    assert "missing or empty" in r.stderr and "--reset" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a journal deleted outright: the same
    os.unlink(journal)
    r = _run_once(sh)
    assert r.returncode == 2 and "--reset" in r.stderr
    assert not os.path.exists(journal), "the refusal made a new journal"
    # --reset starts afresh, with a new source; the store keeps its rows
    sh.start("--reset")
    sh.write("after")
    # (a new source counts seq from 1 again: sync() would see a gap)
    poll(lambda: ("created", "after") in sh.kinds(), "after in the store")
    assert sh.stop() == 0
    rows = sh.rows()
    assert set(before) <= set(rows)
    assert ("created", "after") in sh.kinds(rows)


def test_a_journal_replaced_by_another_is_refused(sh, tmp_path):
    _first_run(sh)
    other = Shadow(tmp_path / "other", sh.backend)
    _first_run(other)
    journal = os.path.join(sh.state, "journal.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(journal + suffix):
            os.unlink(journal + suffix)
    shutil.copy(os.path.join(other.state, "journal.db"), journal)
    r = _run_once(sh)
    assert r.returncode == 2 and "was replaced" in r.stderr, r.stderr
    assert "--reset" in r.stderr


def test_a_root_replaced_while_down_is_refused(sh):
    _first_run(sh)
    os.rename(sh.root, sh.root + ".old")
    os.mkdir(sh.root)
    r = _run_once(sh)
    assert r.returncode == 2, r.stderr
    assert "not the directory the journal describes" in r.stderr
    assert "--reset" in r.stderr
    sh.start("--reset")
    sh.write("fresh")
    poll(lambda: ("created", "fresh") in sh.kinds(), "fresh in the store")
    assert sh.stop() == 0


def test_the_state_directory_deleted_while_running_is_fatal(sh):
    sh.start()
    sh.write("x")
    sh.sync()
    shutil.rmtree(sh.state)
    rc = sh.proc.wait(timeout=30)
    sh.out.close()
    assert rc == 1
    assert "deleted or replaced while running" in sh.stderr()


# ---- min_size is judged once the window is over ----------------------------

def test_min_size_keeps_creations_as_creations(sh):
    sh.start()
    sh.ctl("set", "min_size=5")
    sh.ctl("set", "window_ms=3000")
    seen = sh.status()["counts"]["seen"]
    # made empty, written once the pipeline has seen the creation (as cp
    # does): a creation, not a modification
    open(sh.p("copied"), "w").close()
    poll(lambda: sh.status()["counts"]["seen"] > seen, "the creation seen")
    sh.write("copied", "0123456789")
    # too small for its whole window: kept back; grown later: a creation
    sh.write("small", "ab")
    sh.ctl("set", "window_ms=0")
    sh.sync()
    got = sh.kinds()
    assert ("created", "copied") in got
    assert not {k for k, p in got if p == "small"}
    with open(sh.p("small"), "a") as f:
        f.write("cdefgh")
    sh.sync()
    got = sh.kinds()
    assert {k for k, p in got if p == "small"} == {"created"}
    assert {k for k, p in got if p == "copied"} <= {"created",
                                                    "closed_write"}
    assert sh.stop() == 0


def test_a_root_deleted_and_made_again_while_running(sh):
    sh.start()
    os.mkdir(sh.p("d"))
    sh.write("d/f")
    sh.sync()
    shutil.rmtree(sh.root)
    poll(lambda: sh.status()["counts"]["errors"] >= 1, "the root's error")
    os.mkdir(sh.root)
    sh.write("again")
    poll(lambda: ("created", "again") in sh.kinds(), "again in the store")
    assert sh.stop() == 0
    got = sh.kinds()
    assert {("deleted", "d/f"), ("deleted", "d")} <= got
    # the next start takes the new directory (it was reported) and diffs it
    sh.write("while-down")
    sh.start()
    sh.sync()
    got = sh.kinds()
    assert ("created", "while-down") in got
    assert sum(1 for _, k, p, _, _ in sh.rows()
               if (k, p) == ("created", sh.p("again"))) == 1
    assert sh.stop() == 0
