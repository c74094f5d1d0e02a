"""fibers-shadow as a black box: the program in a subprocess, and its store
read back.  Shared by the tests (tests/test_shadow_*.py) and the crash
harness (tools/soak_shadow.py), so both drive the program and read the
store the same way.  Standard library only (psycopg only to read a
PostgreSQL store).

- ``Shadow``: one instance (root, state directory, store) under a temp
  directory: start, ``ctl status``, SIGTERM/SIGKILL, and ``sync()``: make a
  marker file and wait until its ``created`` row is in the store.
- ``store_rows(target)``: every row of the store's ``events`` table, for a
  SQLite file path or a ``postgresql://`` URL, with the path columns as
  bytes whatever their column type (TEXT today; BLOB / bytea once paths
  are stored as the bytes they are).

The store URL of the SQLite store is relative (``sqlite:///store.db``) and
the program runs with the temp directory as its working directory: that
names the same file whether ``sqlite:///`` is followed by an absolute path
(the URL's own convention) or by a relative one (SQLAlchemy's).

Every wait is bounded.
"""
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

DEADLINE = 20.0


def poll(pred, what, timeout=DEADLINE, interval=0.05):
    """pred() until truthy (returned), or raise AssertionError after
    `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def as_bytes(v):
    """A path column as bytes: TEXT comes back as str (a name that is not
    UTF-8 then as surrogate escapes), BLOB/bytea as bytes or memoryview."""
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return os.fsencode(v)
    return bytes(v)


def is_pg(target) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def store_rows(target):
    """Every row of the ``events`` table as (host, source, seq, kind, path,
    src_path, is_dir) in (host, source, seq) order, paths as bytes, is_dir
    as bool; [] while there is no store or no table yet.  ``target``: the
    SQLite file's path, or a postgresql:// URL."""
    q = ("SELECT host, source, seq, kind, path, src_path, is_dir FROM events "
         "ORDER BY host, source, seq")
    if is_pg(target):
        import psycopg
        try:
            with psycopg.connect(target, connect_timeout=5) as c:
                raw = c.execute(q).fetchall()
        except psycopg.Error:           # down, or no table yet
            return []
    else:
        if not os.path.exists(target):
            return []
        db = sqlite3.connect(target, timeout=10)
        try:
            raw = db.execute(q).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()
    return [(h, s, q_, k, as_bytes(p), as_bytes(sp), bool(d))
            for h, s, q_, k, p, sp, d in raw]


class Shadow:
    """One fibers-shadow instance (and its files) under `tmp_path`: root/,
    state/, store.db (unless `store_url` names another store), and out<N>
    / err<N> for the Nth run's stdout and stderr."""

    def __init__(self, tmp_path, backend, store_url=None):
        self.backend = backend
        self.env = dict(os.environ, FIBERS_FS_BACKEND=backend)
        self.tmp = pathlib.Path(tmp_path)
        self.root = os.path.realpath(self.tmp / "root")
        os.makedirs(self.root, exist_ok=True)
        self.state = str(self.tmp / "state")
        self.store = str(self.tmp / "store.db")
        self.store_url = store_url      # None: SQLite at self.store
        self.proc = None
        self.out = None
        self.runs = 0
        self._mark = 0

    def url_arg(self):
        """The store URL given to the program (see the module's note on
        the relative SQLite URL)."""
        if self.store_url:
            return self.store_url
        return "sqlite:///" + os.path.relpath(self.store, self.tmp)

    def cmd(self, *extra, store=None):
        return [sys.executable, "-m", "fibers.shadow", "--root", self.root,
                "--state-dir", self.state, "--store", store or self.url_arg(),
                "--no-ui", *extra]

    def start(self, *extra, store=None, wait=True, cwd=None):
        self.runs += 1
        self.out = open(self.tmp / f"out{self.runs}", "wb")
        self.err_path = self.tmp / f"err{self.runs}"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd(*extra, store=store),
                                         stdout=self.out, stderr=err,
                                         env=self.env,
                                         cwd=self.tmp if cwd is None else cwd)
        if wait:
            poll(lambda: self.try_status(), "the control socket")
        return self.proc

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def ctl(self, *args, check=True):
        r = subprocess.run([sys.executable, "-m", "fibers.shadow", "ctl",
                            "--state-dir", self.state, *args],
                           capture_output=True, text=True, timeout=30,
                           env=self.env)
        if check:
            if r.returncode != 0:
                raise AssertionError(f"ctl {' '.join(args)}: {r.stderr}")
            return json.loads(r.stdout)
        return r

    def try_status(self):
        """The status, None if the control socket does not answer yet;
        AssertionError if the program has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"fibers-shadow exited "
                                 f"{self.proc.returncode}: {self.stderr()}")
        r = self.ctl("status", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def status(self):
        return self.ctl("status")

    def wait_store_state(self, state, timeout=DEADLINE):
        """Poll ``ctl status`` until the store's state is ``state``;
        returns that status."""
        def reached():
            st = self.status()
            return st if st["store"]["state"] == state else None
        return poll(reached, f"the store shown {state}", timeout)

    def _reap(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.out is not None:
                self.out.close()

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self._reap(30)

    def terminate(self, timeout=30.0):
        """SIGTERM and wait up to `timeout` s: the exit status, or None if
        the program hung (it is then SIGKILLed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self._reap(30)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    # ---- files and the store -------------------------------------------

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def write(self, name, data="x"):
        with open(self.p(name), "w") as f:
            f.write(data)

    def store_target(self):
        return self.store_url or self.store

    def all_rows(self):
        """store_rows() of this instance's store (paths as bytes)."""
        return store_rows(self.store_target())

    def rows(self):
        """(seq, kind, path, src_path, is_dir) in seq order, paths as str
        (os.fsdecode: a name that is not UTF-8 as surrogate escapes, which
        os.fsencode turns back into its bytes)."""
        dec = (lambda b: None if b is None else os.fsdecode(b))
        return sorted((q, k, dec(p), dec(sp), d)
                      for _, _, q, k, p, sp, d in self.all_rows())

    def kinds(self, rows=None):
        """The set of (kind, path below root) in the store."""
        return {(k, os.path.relpath(p, self.root))
                for _, k, p, _, _ in (self.rows() if rows is None else rows)}

    def sync(self, timeout=DEADLINE):
        """Make a marker file and wait until it is in the store with no
        gap in seq before it: everything caused earlier has shipped (the
        stages keep order).  Returns the marker's name."""
        self._mark += 1
        name = f"mark-{self.runs}-{self._mark}"
        with open(self.p(name), "w") as f:
            f.write("marker")       # not empty: past a min_size under test

        def shipped():
            rows = self.rows()
            seqs = [r[0] for r in rows]
            return (("created", name) in self.kinds(rows)
                    and seqs == list(range(1, len(seqs) + 1)))
        poll(shipped, f"{name} in the store", timeout)
        return name
