"""fibers-shadow with the PostgreSQL store, against a real server
(tests/pg.py): the store is idempotent; the program, run as a subprocess, ships every event
exactly once through a server crash and through a link that drops
connections; a kernel queue overflow is reported and repaired.

Each test gets a database of its own on the session's server.  Every wait
polls a condition under a deadline; the writers' short sleeps only pace the
activity, nothing is asserted from them."""
import itertools
import os
import random
import select
import socket
import threading
import time
import types

import psycopg
import pytest

import fibers
from fibers.shadow.store import PgStore, StoreError, open_store
from fshelp import apply, skip_unless_fs_backend_runs, small_kernel_queue, tree
from tools.shadowproc import Shadow, poll

DEADLINE = 30.0
_dbs = itertools.count()


def fresh_db(pg):
    """A new, empty database on the server; its postgresql:// URL."""
    name = f"shadow_{os.getpid()}_{next(_dbs)}"
    with psycopg.connect(pg.conninfo, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{pg.port}/{name}"


def url_via(url, port):
    """``url`` with its port replaced (to go through a proxy)."""
    head, db = url.rsplit("/", 1)
    return f"{head.rsplit(':', 1)[0]}:{port}/{db}"


class PgShadow(Shadow):
    """tests/test_shadow_e2e.py's instance, reading the PostgreSQL table."""

    def __init__(self, tmp_path, backend, url, ship_url=None):
        super().__init__(tmp_path, backend)
        self.url = url                  # where the test reads
        self.ship_url = ship_url or url  # where fibers-shadow writes

    def start(self, *extra, wait=True, env=None):
        if env:
            self.env.update(env)
        return super().start(*extra, store=self.ship_url, wait=wait)

    def store_target(self):
        return self.url                 # read directly, not via a proxy


@pytest.fixture(params=["fanotify", "inotify"])
def fs_backend(request):
    skip_unless_fs_backend_runs(request.param)
    return request.param


def check_exactly_once(sh, expected):
    """The table holds exactly ``expected`` (a set of (kind, path below the
    root)) plus the sync markers, each once, with seq 1..N."""
    rows = sh.rows()
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has gaps"
    pairs = [(k, os.path.relpath(p, sh.root)) for _, k, p, _, _ in rows]
    assert len(pairs) == len(set(pairs)), "duplicates in the store"
    got = {x for x in pairs if not x[1].startswith("mark-")}
    assert got == expected


class Writer:
    """Makes files in the root, paced, and remembers the events that must
    reach the store: creates, some renamed, some deleted."""

    def __init__(self, sh):
        self.sh = sh
        self.expected = set()
        self.n = 0

    def step(self):
        i, self.n = self.n, self.n + 1
        name = f"f{i}"
        with open(self.sh.p(name), "w") as f:
            f.write("x" * (i % 50))
        self.expected.add(("created", name))
        if i % 10 == 5 and i >= 2:
            os.rename(self.sh.p(f"f{i - 1}"), self.sh.p(f"r{i - 1}"))
            self.expected.add(("moved", f"r{i - 1}"))
        if i % 10 == 9:
            os.unlink(self.sh.p(f"f{i - 2}"))
            self.expected.add(("deleted", f"f{i - 2}"))

    def run(self, n, pace=0.002):
        for _ in range(n):
            self.step()
            time.sleep(pace)


# ---- d. unit level ----------------------------------------------------------

def test_pg_store_is_idempotent(pg):
    url = fresh_db(pg)
    rows = [("h", "s", i, "created", f"/r/f{i}", None, i % 2, 1.5 + i)
            for i in range(1, 301)]
    moved = [("h", "s", 301, "moved", "/r/g", "/r/f1", 0, 9.0),
             ("h", "s2", 1, "deleted", "/r/\udcff-bad-utf8", None, 0, 9.5)]

    def main():
        s = open_store(url)
        assert isinstance(s, PgStore)
        assert "postgres@127.0.0.1" in s.describe()
        s.connect()
        try:
            s.write(rows)
            s.write(rows)                   # the same batch again
            s.write(rows[100:200] + moved)  # overlapping, plus new rows
            s.write(moved)
        finally:
            s.close()
        # a closed store refuses, as the shipper expects
        with pytest.raises(StoreError):
            s.write(rows[:1])
    fibers.run(main)
    with psycopg.connect(url) as c:
        got = c.execute("SELECT host, source, seq, kind, path, src_path, "
                        "is_dir, time FROM events ORDER BY source, seq"
                        ).fetchall()
    assert len(got) == 302
    assert got[:300] == [(h, s, q, k, os.fsencode(p), sp, bool(d), t)
                         for h, s, q, k, p, sp, d, t in rows]
    assert got[300] == ("h", "s", 301, "moved", b"/r/g", b"/r/f1", False,
                        9.0)
    # a name that is not UTF-8 comes back byte for byte
    assert got[301][4] == b"/r/\xff-bad-utf8"


def test_pg_store_down_is_a_store_error(pg):
    url = fresh_db(pg)

    def main():
        s = open_store(url)
        s.connect()
        s.write([("h", "s", 1, "created", "/a", None, 0, 1.0)])
        pg.kill()
        try:
            with pytest.raises(StoreError):
                s.write([("h", "s", 2, "created", "/b", None, 0, 2.0)])
            s.close()
            with pytest.raises(StoreError):
                s.connect()
        finally:
            pg.start()
        s.connect()
        s.write([("h", "s", 2, "created", "/b", None, 0, 2.0)])
        s.close()
    fibers.run(main)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 2


# ---- a. the server dies mid-stream ----------------------------------------

def test_server_killed_mid_stream(pg, fs_backend, tmp_path):
    url = fresh_db(pg)
    sh = PgShadow(tmp_path, fs_backend, url)
    try:
        sh.start()
        w = Writer(sh)
        w.run(150)
        poll(lambda: len(sh.rows()) >= 20, "rows in PostgreSQL")
        try:
            pg.kill()
            w.run(100)
            poll(lambda: sh.status()["store"]["state"] != "connected",
                 "the shipper noticing the dead server", DEADLINE)
            w.run(100)
            st = sh.status()
            assert st["store"]["last_error"]
            assert st["journal"]["depth"] > 0
        finally:
            pg.start()
        w.run(100)
        sh.sync()
        check_exactly_once(sh, w.expected)
        st = sh.status()
        assert st["store"]["reconnects"] >= 1
        assert st["journal"]["lag"] == 0
        assert sh.stop() == 0
    finally:
        sh.close()


# ---- b. the network is cut --------------------------------------------------

class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in a thread of its own, which cuts every
    connection it carries at random moments, ``cuts`` times in all.  Every
    other cut waits for the server's answer to an INSERT and cuts instead of
    passing it on: the batch is committed, but the shipper never hears it,
    and must resend it without making duplicates.  While ``held`` is true
    it passes nothing on and cuts nothing: the link has gone silent."""

    def __init__(self, target_port, cuts, seed=11):
        self.target = ("127.0.0.1", target_port)
        self.left = cuts
        self.done_cuts = 0
        self.rnd = random.Random(seed)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.peer = {}                  # socket -> its other end
        self.accepted = 0
        self.upstream = set()           # the sockets to the server
        self.swallowed = 0              # INSERT answers never passed on
        self._armed = False
        self.held = False
        self._stop = False
        self._next_cut = time.monotonic() + self._gap()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _gap(self):
        return self.rnd.uniform(0.1, 0.6)

    def _drop(self, s):
        o = self.peer.pop(s, None)
        for x in (s, o):
            if x is not None:
                self.peer.pop(x, None)
                self.upstream.discard(x)
                try:
                    x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\1\0\0\0\0\0\0\0")   # RST, not FIN
                except OSError:
                    pass
                x.close()

    def _loop(self):
        while not self._stop:
            r, _, _ = select.select(
                [self.lsock, *(() if self.held else self.peer)], [], [], 0.05)
            for s in r:
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    self.accepted += 1
                    u = socket.socket()
                    try:
                        u.connect(self.target)
                    except OSError:
                        c.close()
                        u.close()
                        continue
                    self.peer[c], self.peer[u] = u, c
                    self.upstream.add(u)
                    continue
                if s not in self.peer:
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(s)
                    continue
                if self._armed and s in self.upstream and b"INSERT 0" in data:
                    self._armed = False
                    self.swallowed += 1
                    self._cut_all()
                    continue
                try:
                    self.peer[s].sendall(data)
                except OSError:
                    self._drop(s)
            now = time.monotonic()
            if (self.left and not self._armed and now >= self._next_cut
                    and self.peer):
                if self.left % 2:
                    self._armed = True      # cut at the next INSERT answer
                else:
                    self._cut_all()

    def _cut_all(self):
        for s in list(self.peer):
            if s in self.peer:
                self._drop(s)
        self.left -= 1
        self.done_cuts += 1
        self._next_cut = time.monotonic() + self._gap()

    def close(self):
        self._stop = True
        self.thread.join(10)
        for s in list(self.peer):
            self._drop(s)
        self.lsock.close()


def test_network_cut_at_random(pg, fs_backend, tmp_path):
    url = fresh_db(pg)
    proxy = CuttingProxy(pg.port, cuts=6)
    sh = PgShadow(tmp_path, fs_backend, url, url_via(url, proxy.port))
    try:
        sh.start()
        w = Writer(sh)
        end = time.monotonic() + DEADLINE
        while proxy.left and time.monotonic() < end:
            w.run(20)
        assert proxy.left == 0, "the proxy did not get to cut every time"
        w.run(50)
        sh.sync()
        check_exactly_once(sh, w.expected)
        st = sh.status()
        assert st["store"]["reconnects"] >= 1
        assert proxy.accepted >= 2
        assert proxy.swallowed == 3     # batches committed but unconfirmed
        assert sh.stop() == 0
    finally:
        sh.close()
        proxy.close()


def test_silent_link_reads_stalled(pg, tmp_path):
    # A link that stops carrying anything, neither answer nor reset: the
    # write waits for PgStore.write_timeout (30 s), and all that time the
    # status must say "stalled", not "connected".
    skip_unless_fs_backend_runs("inotify")
    url = fresh_db(pg)
    proxy = CuttingProxy(pg.port, cuts=0)
    sh = PgShadow(tmp_path, "inotify", url, url_via(url, proxy.port))
    try:
        sh.start()
        sh.write("before")
        sh.sync()
        assert sh.status()["store"]["state"] == "connected"
        proxy.held = True
        sh.write("during")
        st = sh.wait_store_state("stalled")
        assert st["store"]["stalled_for"] >= 2
        assert st["journal"]["depth"] >= 1
        assert ("created", "during") not in sh.kinds()
        proxy.held = False          # the answer arrives, late
        sh.sync()
        st = sh.status()
        assert st["store"]["state"] == "connected"
        assert st["store"]["stalled_for"] is None
        assert st["store"]["reconnects"] == 0
        assert ("created", "during") in sh.kinds()
        assert sh.stop() == 0
    finally:
        sh.close()
        proxy.close()


# ---- c. the kernel queue overflows ------------------------------------------

def notify_fds(pid):
    """How many inotify/fanotify fds process ``pid`` holds."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if t in ("anon_inode:inotify", "anon_inode:[fanotify]"):
                n += 1
    except FileNotFoundError:
        pass
    return n


def burst(sh, round_):
    base = sh.p(f"b{round_}")
    os.mkdir(base)
    for i in range(300):
        with open(os.path.join(base, f"f{i}"), "w") as f:
            f.write("x")
    for i in range(0, 300, 3):
        os.unlink(os.path.join(base, f"f{i}"))
    for i in range(1, 300, 9):
        os.rename(os.path.join(base, f"f{i}"), os.path.join(base, f"g{i}"))
    for j in range(3):
        os.makedirs(os.path.join(base, f"d{j}", "deep"))
        for i in range(10):
            open(os.path.join(base, f"d{j}", "deep", f"x{i}"), "w").close()
    os.rename(os.path.join(base, "d0"), os.path.join(base, "d0-moved"))


def test_kernel_queue_overflow(pg, fs_backend, tmp_path):
    url = fresh_db(pg)
    sh = PgShadow(tmp_path, fs_backend, url)
    os.makedirs(sh.p("old", "inner"))
    open(sh.p("old", "inner", "o"), "w").close()
    model = tree(sh.root)
    try:
        # The limit is read when the watcher's kernel fd is made: shrink it
        # until fibers-shadow holds that fd, then restore it at once.
        with small_kernel_queue(fs_backend, 64):
            sh.start(wait=False, env={"FIBERS_SHADOW_BOUNDED_QUEUE": "1"})
            poll(lambda: sh.proc.poll() is not None
                 or notify_fds(sh.proc.pid) >= 1, "the watcher's fd")
        poll(lambda: sh.try_status(), "the control socket")
        for r in range(20):
            burst(sh, r)
            if sh.status()["watcher"]["overflows"]:
                break
        os.rename(sh.p("old"), sh.p("old-moved"))
        poll(lambda: (lambda st: st["watcher"]["overflows"] >= 1
                      and st["watcher"]["rescans"] >= 1
                      and not st["journal"]["depth"])(sh.status()),
             "an overflow and its rescan", DEADLINE)
        sh.sync()
        st = sh.status()
        assert st["counts"]["overflows"] >= 1
        rows = sh.rows()
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        events = [types.SimpleNamespace(kind=k, path=p, src_path=s,
                                        is_dir=d) for _, k, p, s, d in rows]
        assert apply(model, events) == tree(sh.root)
        assert sh.stop() == 0
    finally:
        sh.close()


def test_pg_table_with_text_paths_becomes_bytea(pg):
    # a table made by a fibers-shadow that kept paths as text
    url = fresh_db(pg)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE events (host TEXT NOT NULL, source TEXT NOT "
                  "NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, path TEXT, "
                  "src_path TEXT, is_dir BOOLEAN NOT NULL, time DOUBLE "
                  "PRECISION NOT NULL, PRIMARY KEY (host, source, seq))")
        c.execute("INSERT INTO events VALUES ('h', 's', 1, 'created', "
                  "'/r/é', NULL, false, 1.0)")

    def main():
        s = open_store(url)
        s.connect()
        s.write([("h", "s", 2, "created", b"/r/\xff", None, 0, 2.0)])
        s.close()
    fibers.run(main)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT seq, path FROM events ORDER BY seq"
                         ).fetchall() == [(1, "/r/é".encode()),
                                          (2, b"/r/\xff")]
