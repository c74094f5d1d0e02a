"""fibers-shadow's parts in process: settings, rules, the journal, the
SQLite store, and the whole pipeline shipping through a faulty link."""
import errno
import os
import random
import sqlite3
import types

import pytest

import fibers
import fibers.fs
from fibers.shadow import config
from fibers.shadow.journal import Journal, JournalError
from fibers.shadow.pipeline import Rules, Shadow
from fibers.shadow.store import (SqliteStore, StoreError, open_store,
                                 parse_url)


def test_settings_file_and_flags(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    other = tmp_path / "o"
    other.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'roots = ["{root}"]\nstore = "sqlite:///{tmp_path}/s.db"'
                   f'\n[rules]\nkinds = ["created"]\nexclude = ["*.o"]\n'
                   f'[ship]\nbatch = 7\nwindow = 2\n')
    s, over = config.load(str(cfg), state_dir=str(tmp_path / "st"))
    assert s.roots == [str(root)] and s.kinds == {"created"}
    assert s.exclude == ("*.o",) and s.batch == 7 and s.ship_window == 2
    assert s.state_dir == str(tmp_path / "st")
    # flags win, also over a reload
    s, over = config.load(str(cfg), roots=[str(other)])
    assert s.roots == [str(other)]
    cfg.write_text('[rules]\nwindow_ms = 5\n')
    new = config.reload(s, over)
    assert new.roots == [str(other)] and new.window_ms == 5
    assert new.kinds == frozenset(config.DEFAULT_KINDS)


@pytest.mark.parametrize("text, words", [
    ("roots = 3", "roots"),
    ("colour = 1", "unknown key"),
    ("[rules]\nkinds = ['nope']", "unknown event kind"),
    ("[rules]\nwindow_ms = 'soon'", "window_ms"),
    ("[ship]\nspeed = 1", "[ship]"),
    ("store = 'ftp://x'", "unknown store URL"),
    ("[rules]\nkinds = []", "at least one kind"),
    ("[rules]\nkinds = ' , '", "at least one kind"),
    ("store = 'sqlite:////'", "sqlite:////ABSOLUTE/PATH"),
    ("store = 'sqlite:///dir/'", "(a file)"),
])
def test_settings_errors(tmp_path, text, words):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(cfg), roots=[str(tmp_path)])
    assert words in str(e.value)


def test_empty_kinds_refused():
    # `ctl set kinds=` goes through apply_rule: nothing is changed
    s = config.Settings()
    key, value = config.parse_set("kinds=")
    with pytest.raises(config.ConfigError) as e:
        config.apply_rule(s, key, value)
    assert "at least one kind" in str(e.value)
    assert s.kinds == frozenset(config.DEFAULT_KINDS)


def test_config_file_not_utf8(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"[rules]\nexclude = ['*.o']\n# caf\xe9 \xff\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(cfg), roots=[str(tmp_path)])
    assert "not valid UTF-8" in str(e.value)
    assert "byte 0xe9 at line 3" in str(e.value)
    # a reload of such a file is a ConfigError too (the caller keeps the
    # old settings), not a crash
    cfg.write_text("[rules]\nexclude = ['*.o']\n")
    s, over = config.load(str(cfg), roots=[str(tmp_path)])
    cfg.write_bytes(b"\xff\xfe[rules]\n")
    with pytest.raises(config.ConfigError) as e:
        config.reload(s, over)
    assert "byte 0xff at line 1" in str(e.value)


def test_sqlite_url_convention(tmp_path, monkeypatch):
    # SQLAlchemy's: three slashes then a relative path, four for an
    # absolute one
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_url("sqlite:///rel.db") == ("sqlite",
                                             str(tmp_path / "rel.db"))
    assert parse_url("sqlite:///a/b.db") == ("sqlite",
                                             str(tmp_path / "a" / "b.db"))
    assert parse_url("sqlite:////abs/b.db") == ("sqlite", "/abs/b.db")
    assert parse_url("sqlite:///" + str(tmp_path / "x.db")) == (
        "sqlite", str(tmp_path / "x.db"))
    assert parse_url("sqlite:///~/x.db") == (
        "sqlite", str(tmp_path / "home" / "x.db"))
    # the default store is an absolute path in the state directory
    s = config.Settings(state_dir="/st")
    assert s.store_url() == "sqlite:////st/store.db"
    assert parse_url(s.store_url()) == ("sqlite", "/st/store.db")
    for bad in ("sqlite://", "sqlite:///", "sqlite:////", "sqlite://h/x.db",
                "sqlite:///d/"):
        with pytest.raises(config.ConfigError):
            parse_url(bad)


def test_store_directory_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = config.Settings(roots=[str(tmp_path)], state_dir=str(tmp_path))
    config.check_store(s)                       # the default store
    s.store = "sqlite:///" + str(tmp_path / "s.db")
    config.check_store(s)
    s.store = "sqlite:///rel.db"
    config.check_store(s)
    s.store = "sqlite:///" + str(tmp_path / "nodir" / "s.db")
    with pytest.raises(config.ConfigError) as e:
        config.check_store(s)
    assert f"{str(tmp_path / 'nodir')!r} of the store" in str(e.value)
    assert "four slashes" not in str(e.value)
    # the old docs' absolute path with three slashes: relative, and said
    s.store = "sqlite://" + str(tmp_path / "s.db")
    with pytest.raises(config.ConfigError) as e:
        config.check_store(s)
    assert "four slashes" in str(e.value)
    s.store = "sqlite:///" + str(tmp_path)      # a directory
    with pytest.raises(config.ConfigError) as e:
        config.check_store(s)
    assert "is a directory" in str(e.value)


def test_help_names_every_store_form():
    from fibers.shadow.__main__ import _parser
    text = " ".join(_parser().format_help().split())
    assert "sqlite:///RELATIVE/PATH" in text
    assert "sqlite:////ABSOLUTE/PATH (four slashes)" in text
    assert "postgresql://[USER@]HOST[:PORT]/DB" in text


def test_default_state_dir(monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "/x/state")
    assert config.default_state_dir() == "/x/state/fibers-shadow"


def test_rules():
    s = config.Settings(roots=["/r"], exclude=(".git", "build/*", "*.swp"))
    r = Rules(s)
    assert r.path_ok("/r/a.py")
    assert not r.path_ok("/r/.git/objects/x")
    assert not r.path_ok("/r/build/x/y")
    assert r.path_ok("/r/src/build")
    assert not r.path_ok("/r/src/.a.swp")
    s.include = ("*.py",)
    r = Rules(s)
    assert r.path_ok("/r/src/a.py") and not r.path_ok("/r/src/a.c")
    # a move with one side outside the rules: what a reader should see
    ev = fibers.fs.Event("moved", "/r/a.c", "/r/a.py")
    assert [(e.kind, e.path) for e in r.apply(ev)] == [("deleted", "/r/a.py")]
    ev = fibers.fs.Event("moved", "/r/b.py", "/r/b.c")
    assert [(e.kind, e.path) for e in r.apply(ev)] == [("created", "/r/b.py")]
    ev = fibers.fs.Event("moved", "/r/c.py", "/r/b.py")
    assert r.apply(ev) == [ev]
    s.kinds = frozenset({"created", "deleted"})
    r = Rules(s)
    assert r.kernel_kinds() == {"created", "deleted", "moved"}
    assert [(e.kind, e.path, e.src_path) for e in r.apply(ev)] == [
        ("deleted", "/r/b.py", None), ("created", "/r/c.py", None)]
    s.kinds = frozenset({"modified"})
    assert Rules(s).kernel_kinds() == {"modified"}
    assert Rules(s).apply(ev) == []


def test_journal_seq_survives_restart_and_pruning(tmp_path, monkeypatch):
    import fibers.shadow.journal as jm
    monkeypatch.setattr(jm, "KEEP_ACKED", 3)
    path = str(tmp_path / "j.db")

    def main():
        j = Journal(path, "h", batch=4)
        seqs = [j.append("created", f"/p{i}", None, False, 1.0)
                for i in range(10)]
        assert seqs == list(range(1, 11))
        j.flush()
        rows = j.read_unacked(0, 100)
        assert [r[2] for r in rows] == seqs
        assert rows[0][:2] == ("h", j.source)
        j.ack(1, 10)
        assert j.depth == 0 and j.read_unacked(0, 100) == []
        source = j.source
        j.close()
        j = Journal(path, "h")
        assert j.source == source
        assert j.append("deleted", "/p0", None, False, 2.0) == 11
        j.flush()
        assert j.first_unacked() == 11 and j.depth == 1
        j.close()
        db = sqlite3.connect(path)
        assert db.execute("SELECT MIN(seq) FROM events").fetchone()[0] > 1
    fibers.run(main)


def test_store_is_idempotent(tmp_path):
    def main():
        st = open_store("sqlite:///" + str(tmp_path / "s.db"))
        st.connect()
        rows = [("h", "s", i, "created", f"/p{i}", None, 0, 1.0)
                for i in range(1, 6)]
        st.write(rows)
        st.write(rows[2:])
        st.close()
        with pytest.raises(StoreError):
            st.write(rows)
        bad = SqliteStore(str(tmp_path / "nodir" / "s.db"))
        with pytest.raises(StoreError):
            bad.connect()
    fibers.run(main)
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT seq FROM events ORDER BY seq").fetchall() == [
        (i,) for i in range(1, 6)]


class FaultyLink(SqliteStore):
    """The real SQLite store behind a link that fails: before the write
    (nothing stored) or after it (stored, but the confirmation is lost, so
    the shipper must resend what the store already has)."""

    def __init__(self, path, seed):
        super().__init__(path)
        self.rng = random.Random(seed)
        self.faults = 0

    def write(self, rows):
        r = self.rng.random()
        if r < 0.25:
            self.faults += 1
            raise StoreError("link down before the write")
        super().write(rows)
        if r < 0.45:
            self.faults += 1
            raise StoreError("link down before the confirmation")


def test_pipeline_through_a_faulty_link(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    s = config.Settings(roots=[str(root)], state_dir=str(state), batch=10,
                        window_ms=20, ship_window=3)
    link = FaultyLink(str(tmp_path / "store.db"), seed=7)
    names = [f"f{i}" for i in range(300)]

    def main():
        app = Shadow(s, store=link)
        app.start()
        for n in names:
            open(root / n, "w").close()
        fibers.wait_for(lambda: app.journal.committed_seq >= len(names)
                        and app.journal.depth == 0, timeout=60)
        st = app.status()
        ok = app.stop(2.0)
        assert ok
        return st

    st = fibers.run(main)
    assert 0 < st["store"]["reconnects"] <= link.faults
    db = sqlite3.connect(tmp_path / "store.db")
    rows = db.execute("SELECT seq, kind, path FROM events ORDER BY seq"
                      ).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert sorted((k, os.fsdecode(os.path.basename(p))) for _, k, p in rows
                  ) == sorted(
        ("created", n) for n in names)


def test_journal_picture_follows_the_events_in_one_transaction(tmp_path):
    root = tmp_path / "r"
    (root / "d" / "sub").mkdir(parents=True)
    for name in (b"a", b"bad-\xff", b"d/sub/f"):
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(b"12345")
    R = os.fsencode(root)
    path = str(tmp_path / "j.db")

    def main():
        j = Journal(path, "h", batch=1000, interval=60)
        assert not j.has_picture
        pic = {R + b"/a": (False, None), R + b"/d": (True, None)}
        j.record([], ("import", R, pic))
        j.record([], ("picture",))
        # a name that is not UTF-8 is kept byte for byte, as str or bytes
        j.append("created", os.fsdecode(R + b"/bad-\xff"), None, False, 1.0)
        j.append("created", R + b"/d/sub", None, True, 1.0)
        j.append("created", R + b"/d/sub/f", None, False, 1.0)
        # a directory moved carries its subtree; a deletion takes its own
        os.rename(root / "d", root / "e")
        j.append("moved", R + b"/e", R + b"/d", True, 2.0)
        os.unlink(root / "a")
        j.append("deleted", R + b"/a", None, False, 3.0)
        j.record([("created", R + b"/hidden", None, False, 4.0)][:0],
                 ("put", R + b"/e/sub/f", False, True))
        assert j.flush(10.0)
        assert j.has_picture
        rows = j.read_unacked(0, 100)
        assert [r[4] for r in rows] == [R + b"/bad-\xff", R + b"/d/sub",
                                        R + b"/d/sub/f", R + b"/e",
                                        R + b"/a"]
        assert rows[3][5] == R + b"/d"
        pic, hidden = j.load_picture()
        j.close()
        return pic, hidden
    pic, hidden = fibers.run(main)
    assert sorted(pic) == [R + b"/bad-\xff", R + b"/e", R + b"/e/sub",
                           R + b"/e/sub/f"]
    st = os.lstat(os.path.join(R, b"bad-\xff"))
    assert pic[R + b"/bad-\xff"] == (False, (st.st_ino, st.st_size,
                                             st.st_mtime_ns))
    assert pic[R + b"/e"][0] and pic[R + b"/e/sub"][0]
    assert hidden == {R + b"/e/sub/f"}
    # the picture and the events are one transaction: both are on disk
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5


class BrokenStore(SqliteStore):
    """A store with a bug: write raises something no one expects."""

    def write(self, rows):
        raise TypeError("a bug in the store")


def test_a_stage_that_fails_is_fatal_and_stop_is_bounded(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    s = config.Settings(roots=[str(root)], state_dir=str(state))

    def main():
        app = Shadow(s, store=BrokenStore(str(tmp_path / "store.db")))
        app.start()
        open(root / "x", "w").close()
        e = app.wait_fatal(timeout=30)
        assert isinstance(e, TypeError)
        assert "a bug in the store" in app.status()["fatal"]
        t0 = fibers.now()
        assert app.stop(1.0) is False
        assert fibers.now() - t0 < 10
        # the event is journaled, for the next start to ship
        return app.journal.depth
    assert fibers.run(main) == 1


def test_journal_picture_file_runs(tmp_path):
    # Runs of file puts, deletions and renames (the batched statements)
    # keep their order with the other changes around them.
    R = os.fsencode(tmp_path)
    for n in (b"a", b"b", b"c"):
        with open(os.path.join(R, n), "wb") as f:
            f.write(n)

    def main():
        j = Journal(str(tmp_path / "j.db"), "h", batch=1000, interval=60)
        j.append("created", R + b"/a", None, False, 1.0)
        j.append("created", R + b"/b", None, False, 1.0)
        j.append("deleted", R + b"/a", None, False, 1.0)
        j.append("created", R + b"/a", None, False, 1.0)
        j.append("created", R + b"/c", None, False, 1.0)
        j.append("moved", R + b"/b", R + b"/c", False, 2.0)   # c over b
        j.append("moved", R + b"/x", R + b"/nowhere", False, 2.0)
        j.append("created", R + b"/d", None, True, 3.0)
        j.append("moved", R + b"/e", R + b"/d", True, 3.0)
        j.append("deleted", R + b"/b", None, False, 4.0)
        assert j.flush(10.0)
        pic, _ = j.load_picture()
        j.close()
        return pic
    os.rename(tmp_path / "c", tmp_path / "b")
    pic = fibers.run(main)
    assert sorted(pic) == [R + b"/a", R + b"/e"]
    assert pic[R + b"/e"][0] is True and pic[R + b"/a"][0] is False


def _parked(f, spins=50):
    # f has parked (and stays so) after this many turns of the scheduler.
    for _ in range(spins):
        fibers.yield_now()
    return not f.dead


def test_journal_record_waits_for_room_and_the_committer(tmp_path):
    # record() parks while max_pending rows and changes wait for the disk;
    # a commit makes room for it, and a committer that fails ends its wait
    # with the journal's error (never a fiber parked for good).
    errors = []

    def main():
        j = Journal(str(tmp_path / "j.db"), "h", batch=1000, interval=60,
                    max_pending=2, on_error=errors.append)
        j.record([("created", "/a", None, False, 1.0)],
                 ("put", b"/a", False, False))
        assert j.pending == 2
        late = fibers.spawn(j.record, [("created", "/b", None, False, 1.0)],
                            ("put", b"/b", False, False))
        assert _parked(late)
        assert j.flush(10.0)            # commits /a: room for /b
        late.join(5.0)
        assert j.last_seq == 2
        assert j.flush(10.0) and j.committed_seq == 2
        # An unknown picture change makes the commit fail.  The commit
        # makes room first (for `late`, whose rows the failure then takes
        # with it); `later` finds it full again, and is woken by the
        # failure, with the error.
        j.record([("created", "/c", None, False, 1.0)], ("bogus",))
        late, later = (fibers.spawn(j.record,
                                    [("created", p, None, False, 1.0)],
                                    ("put", p.encode(), False, False))
                       for p in ("/d", "/e"))
        assert _parked(late) and _parked(later)
        with pytest.raises(JournalError):
            j.flush(10.0)
        late.join(5.0)
        with pytest.raises(JournalError):
            later.join(5.0)
        assert errors and errors[0] is j.error
        assert [r[2] for r in j.read_unacked(0, 10)] == [1, 2]
        j.close()
    fibers.run(main)


def test_journal_close_wakes_a_parked_committer(tmp_path):
    # The committer parks up to `interval` between commits; close() wakes
    # it to commit the rest and end, instead of waiting out its timeout (or
    # the interval) and killing it.
    def main():
        j = Journal(str(tmp_path / "j.db"), "h", batch=1000, interval=600)
        j.append("created", "/a", None, False, 1.0)
        assert _parked(j._committer) and j.pending == 2
        t0 = fibers.now()
        j.close(timeout=20.0)
        assert fibers.now() - t0 < 10.0
        assert j._committer.dead and j._committer.exception is None
        j = Journal(str(tmp_path / "j.db"), "h")
        assert [r[2] for r in j.read_unacked(0, 10)] == [1]
        t0 = fibers.now()
        assert not j.wait_committed(1, 0.05)
        assert fibers.now() - t0 >= 0.05
        j.close()
    fibers.run(main)



# ---- the stages' counts ------------------------------------------------------

def test_stages_count_what_they_drop_by_rule(tmp_path):
    # Filter and Coalesce on a made-up event stream (no kernel): each
    # counts what it took in, passed on and ended by rule; an event the
    # rules keep from the store is not dropped (it changes the picture).
    from fibers.shadow.stages import Coalesce, Filter, handled
    from fibers.sync import Queue
    R = str(tmp_path / "r")
    os.mkdir(R)
    for name in ("a.tmp", "b"):
        open(os.path.join(R, name), "w").close()
    s = config.Settings(roots=[R], exclude=("*.tmp",), window_ms=20,
                        kinds=frozenset({"created", "modified",
                                         "closed_write"}))
    live = types.SimpleNamespace(settings=s, rules=Rules(s), paused=False)
    Ev = fibers.fs.Event
    root_errors = []

    def main():
        j = Journal(str(tmp_path / "j.db"), "h")
        raw, filtered = Queue(2), Queue(2)
        f = Filter(raw, filtered, live, root_errors.append)
        c = Coalesce(filtered, j, live, set())
        running = [fibers.spawn(f.run), fibers.spawn(c.run)]
        t = fibers.now()
        raw.put([Ev("overflow", None, time=t),
                 Ev("error", R + "/x", errno=errno.EACCES, time=t),
                 Ev("created", R + "/a.tmp", time=t),   # kept from the store
                 Ev("created", R + "/b", time=t),
                 Ev("modified", R + "/b", time=t),      # rides on created
                 Ev("closed_write", R + "/b", time=t),
                 Ev("closed_write", R + "/b", time=t),  # rides on the first
                 Ev("modified", R + "/a.tmp", time=t)])  # rides, ships nothing
        raw.shutdown()
        for x in running:
            x.join(10.0)
        assert j.flush(10.0)
        rows = j.read_unacked(0, 100)
        j.close()
        return f, c, rows
    f, c, rows = fibers.run(main)
    assert (f.n_in, f.n_out, f.n_dropped, f.held) == (8, 6, 2, 0)
    assert (f.overflows, f.errors, f.filtered) == (1, 1, 2)
    assert [e.kind for e in root_errors] == ["error"]
    assert f.counts() == {"in": 8, "out": 6, "dropped": 2}
    assert (c.n_in, c.n_out, c.n_dropped, c.held) == (6, 3, 3, 0)
    assert c.coalesced == 2             # the two that would have shipped
    assert c.rows == 2 and c.kinds == {"created": 1, "closed_write": 1}
    assert [(r[3], os.path.basename(r[4])) for r in rows] == [
        ("created", b"b"), ("closed_write", b"b")]
    # every event is accounted for: ended by a stage, or journaled
    assert handled([f, c]) == f.n_in


@pytest.mark.parametrize("fs_backend", ["inotify", "fanotify"])
def test_stage_counts_add_up_after_a_busy_run(tmp_path, backend, fs_backend,
                                              monkeypatch):
    # The whole pipeline on a real watcher, through a busy tree (bursts of
    # writes, excluded files, renames, deletions): once stopped, every
    # stage has passed on or dropped all it took in, what one passed on
    # the next took in, and every event the watcher delivered is journaled
    # or ended by a stage's rule; every row journaled was shipped.
    from fibers.shadow.stages import handled
    from fshelp import skip_unless_fs_backend_runs
    skip_unless_fs_backend_runs(fs_backend)
    monkeypatch.setenv("FIBERS_FS_BACKEND", fs_backend)
    root = tmp_path / "root"
    root.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    db = str(tmp_path / "store.db")
    s = config.Settings(roots=[str(root)], state_dir=str(state),
                        exclude=("*.tmp",), window_ms=20, batch=50)
    end = os.fsencode(root / "end")

    def stored(path):
        con = sqlite3.connect(db)
        try:
            return con.execute("SELECT COUNT(*) FROM events WHERE path = ?",
                               (path,)).fetchone()[0]
        except sqlite3.OperationalError:    # no table yet
            return 0
        finally:
            con.close()

    def main():
        app = Shadow(s, store=SqliteStore(db))
        app.start()
        for i in range(1000):
            p = root / (f"f{i}.tmp" if i % 5 == 0 else f"f{i}")
            with open(p, "w") as fh:
                for _ in range(3):
                    fh.write("x")
                    fh.flush()
            if i % 4 == 1:
                os.rename(p, root / f"g{i}")
            elif i % 6 == 2:
                os.unlink(p)
            if i % 50 == 49:
                fibers.sleep(0)
        open(end, "w").close()
        with fibers.timeout(60):
            while not stored(end):
                fibers.sleep(0.05)
        assert app.stop(5.0)
        return app

    sched = fibers.Scheduler(backend=backend)
    try:
        app = sched.run(main)
    finally:
        sched.close()
    chain = (app.watch, app.filter, app.coalesce)
    for st in chain:
        assert st.held == 0, st.name
        assert st.n_in == st.n_out + st.n_dropped, st.name
    assert app.watch.n_out == app.filter.n_in
    assert app.filter.n_out == app.coalesce.n_in
    assert handled(chain) == app.watch.n_in >= 1000
    assert app.filter.n_dropped == app.filter.overflows + app.filter.errors
    assert app.filter.filtered > 0 and app.coalesce.coalesced > 0
    assert app.coalesce.n_dropped >= app.coalesce.coalesced
    sh = app.ship
    assert sh.held == 0 and sh.n_in == sh.n_out + sh.n_dropped
    con = sqlite3.connect(db)
    n = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert sh.n_out == app.coalesce.rows == n
    assert app.status()["counts"]["shipped"] == n
