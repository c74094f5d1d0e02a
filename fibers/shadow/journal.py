"""The journal: a local SQLite outbox between watching and shipping, and
the picture of the tree that start-up compares the disk with.

Design: the watcher must never wait for the store, and nothing may be lost
when the store is away or the process dies; so every event is first made
durable locally, and the shipper works only from this file.  While the
store is unreachable the outbox grows on disk and memory stays flat.

The journal also holds the *picture*: the tree (path -> type and stat) as
the pipeline has handled it, one row per path in the table ``tree``.  Each
commit carries the events to ship AND the picture's changes for the same
watcher events, in one transaction.  So after any crash the picture is
exactly as far as the journal: every change reflected in it is in the
outbox (or was deliberately not shipped by the rules), and every change
not reflected in it was not journaled, and the start-up diff (the
watcher's ``baseline=``) reports it.  A deletion made while the daemon was
down is found (the picture still has the path), and nothing journaled is
reported again (the picture has it already).

- Paths are bytes (BLOB) from the kernel to the store: Linux names are
  bytes, and a name that is not UTF-8 must neither be refused nor be
  changed on the way.
- WAL and ``synchronous=NORMAL``: a commit is an append to the WAL with no
  fsync per transaction; a crash of the process loses nothing committed.
  (A power cut may lose the last moments; events and picture go back
  together, so the start-up diff finds those changes again.)
- The picture's stat figures are taken (lstat) when the commit runs, on
  the blocking pool.  A write made after the event but before the commit
  is then covered by that event: the store has a creation or modification
  of the path at least that recent, never a missing one.
- Commits are batched (every ``batch`` rows, or every ``interval``
  seconds), and run on fibers' blocking pool, so a stalled disk parks the
  committing fiber and never the thread.  One connection, serialised by a
  fiber lock: SQLite connections are not for two threads at once.
- ``seq`` is assigned here, in memory, and the column is ``INTEGER PRIMARY
  KEY AUTOINCREMENT``: SQLite's own sequence table then keeps the highest
  seq ever used, so seq keeps increasing across restarts even after acked
  rows are pruned.
- ``record`` parks its caller while the rows waiting for a commit reach
  ``max_pending``: back-pressure from a slow disk travels upstream to the
  watcher, which stops reading the kernel (an overflow there is repaired
  by a rescan).
- The committer never dies silently: any failure closes the journal with
  ``error`` set and calls ``on_error``, and every wait on it is bounded.
- The fibers meet on fibers.sync primitives, never on named signals:
  ``record`` waits for room on a Condition (``_room``), the committer
  for work on an Event (``_kick``: a batch is full, or a flush or close
  asks; being latched, a kick given while the committer is busy
  committing is not lost), and ``flush`` and the shipper
  (``wait_committed``) for commits on a Condition (``_committed``).  The
  conditions share a lock of their own, which is never held across a
  park (the connection's lock is held across commits, so record() must
  not wait on it).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat as _stat
import uuid

import fibers

from .errors import JournalError, StateError
from .store import fsbytes

__all__ = ["Journal", "JournalError", "StateError", "journal_path",
           "marker_path"]

log = logging.getLogger("fibers.shadow")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    host     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    path     BLOB,
    src_path BLOB,
    is_dir   INTEGER NOT NULL,
    time     REAL    NOT NULL,
    acked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unacked ON events(acked, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS tree (
    path     BLOB    PRIMARY KEY,
    is_dir   INTEGER NOT NULL,
    ino      INTEGER,
    size     INTEGER,
    mtime_ns INTEGER,
    hidden   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

# Acked rows kept for inspection before pruning.
KEEP_ACKED = 100_000


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, "journal.db")


def marker_path(state_dir: str) -> str:
    """A small file naming the journal's source id: proof, if the journal
    vanishes, that one existed."""
    return os.path.join(state_dir, "source")


def _open(path):
    db = sqlite3.connect(path, timeout=10, isolation_level=None,
                         check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        source = meta.get("source")
        fresh = source is None
        if fresh:
            source = uuid.uuid4().hex[:12]
            db.execute("INSERT INTO meta VALUES ('source', ?)", (source,))
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE "
                         "name='events'").fetchone()
        last = max(seq[0] if seq else 0,
                   db.execute("SELECT COALESCE(MAX(seq), 0) FROM events"
                              ).fetchone()[0])
        depth = db.execute("SELECT COUNT(*) FROM events WHERE acked=0"
                           ).fetchone()[0]
        acked = db.execute("SELECT COALESCE(MIN(seq) - 1, ?) FROM events "
                           "WHERE acked=0", (last,)).fetchone()[0]
        return db, source, fresh, meta, last, depth, acked
    except BaseException:
        db.close()
        raise


def _load_picture(db):
    picture, hidden = {}, set()
    for p, isd, ino, size, mt, hid in db.execute(
            "SELECT path, is_dir, ino, size, mtime_ns, hidden FROM tree"):
        picture[p] = (bool(isd), None if ino is None else (ino, size, mt))
        if hid:
            hidden.add(p)
    return picture, hidden


class Journal:
    """The outbox and the picture.  ``record`` rows and picture changes,
    ``read_unacked`` rows, ``ack`` them.

    Row tuples handed to the shipper are in store.COLUMNS order:
    (host, source, seq, kind, path, src_path, is_dir, time), paths bytes.

    Picture changes (``record``'s ``tree``), applied in order:
    ``("put", path, is_dir, hidden)`` (lstat now), ``("del", path[,
    is_dir])`` (and everything under it, unless is_dir is false),
    ``("move", src, dst[, is_dir])`` (with the subtree),
    ``("import", root, picture)`` (a root's picture, replacing what was
    under it), ``("forget", root)``, ``("roots", {root: (dev, ino) or
    None})`` (None: the root went away while watched).
    """

    def __init__(self, path: str, host: str, source: str = "",
                 batch: int = 256, interval: float = 0.05,
                 max_pending: int = 8192, on_error=None):
        self.path = path
        self.host = host
        self.batch = batch
        self.interval = interval
        self.max_pending = max_pending
        self.on_error = on_error
        self._lock = fibers.Lock()
        self._rows = []             # rows not yet committed
        self._ops = []              # picture changes not yet committed
        # See the design note: the hand-offs between record(), the
        # committer, flush() and the shipper.
        cv = fibers.Lock()
        self._room = fibers.Condition(cv)       # pending < max_pending
        self._committed = fibers.Condition(cv)  # a commit is done
        self._kick = fibers.Event()             # commit now
        self._closed = False
        self.error = None           # JournalError once a commit failed
        try:
            (self._db, own, self.fresh, meta, self.last_seq, self.depth,
             self.acked_seq) = fibers.blocking(_open, path)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open the journal {path!r}: {e}") \
                from None
        self.own_source = own
        self.source = source or own
        self.has_picture = meta.get("picture") == "1"
        # root -> (st_dev, st_ino), or None for a root that went away while
        # watched (whatever directory is there now is diffed, unchecked)
        self.roots = {bytes.fromhex(h): None if dev is None else (dev, ino)
                      for h, dev, ino in json.loads(meta.get("roots")
                                                    or "[]")}
        self.committed_seq = self.last_seq
        self._committer = fibers.spawn(self._commit_loop)

    # ---- the connection, one user at a time ---------------------------------

    def _run(self, fn, *args):
        # Serialise the connection between fibers: its calls run on the
        # blocking pool, and SQLite connections are not for two threads.
        with self._lock:
            if self._db is None:
                raise JournalError("the journal is closed")
            return fibers.blocking(fn, self._db, *args)

    # ---- writing -----------------------------------------------------------

    def record(self, ship, tree=None) -> None:
        """Queue, for the next commit, the rows ``ship`` (tuples ``(kind,
        path, src_path, is_dir, time)``, paths str or bytes) and the
        picture change ``tree`` (see the class doc), which commit together.
        Parks while too much waits for the disk."""
        if self.pending >= self.max_pending and not self._closed:
            with self._room:
                self._room.wait_for(lambda: self.pending < self.max_pending
                                    or self._closed)
        if self._closed:
            raise JournalError(str(self.error) if self.error else
                               "the journal is closed")
        for kind, path, src, is_dir, t in ship:
            self.last_seq += 1
            self._rows.append((self.last_seq, self.host, self.source, kind,
                               fsbytes(path), fsbytes(src), int(bool(is_dir)), t))
        if tree is not None:
            self._ops.append(tree)
        if len(self._rows) + len(self._ops) >= self.batch:
            self._kick.set()

    def append(self, kind, path, src_path, is_dir, time) -> int:
        """Queue one event for the next commit, with its picture change;
        returns its seq."""
        p = fsbytes(path)
        if kind == "deleted":
            op = ("del", p, bool(is_dir))
        elif kind == "moved":
            op = ("move", fsbytes(src_path), p, bool(is_dir))
        else:
            op = ("put", p, bool(is_dir), False)
        self.record([(kind, p, src_path, is_dir, time)], op)
        return self.last_seq

    def _commit_loop(self):
        try:
            while True:
                if (len(self._rows) + len(self._ops) < self.batch
                        and not self._closed):
                    self._kick.wait(self.interval)
                # Cleared before the commit: a kick given during it stands.
                self._kick.clear()
                if self._rows or self._ops:
                    self._commit()
                if self._closed and not (self._rows or self._ops):
                    return
        except fibers.FiberExit:
            raise
        except Exception as e:
            # Whatever it is, say so and stop: a journal that silently
            # stopped committing would hang everything behind it.
            if not isinstance(e, JournalError):
                log.exception("the journal's committer failed")
                e = JournalError(f"the journal's committer failed: "
                                 f"{type(e).__name__}: {e}")
            self.error = e
            log.error("%s", e)
            self._closed = True
            _notify_all(self._room)
            _notify_all(self._committed)
            if self.on_error is not None:
                self.on_error(e)

    def _commit(self):
        rows, self._rows = self._rows, []
        ops, self._ops = self._ops, []
        _notify_all(self._room)
        try:
            self._run(_commit, rows, ops)
        except (sqlite3.Error, OSError) as e:
            raise JournalError(
                f"cannot write the journal {self.path!r}: {e}; stopping "
                f"(nothing half-written: the last batch was rolled "
                f"back)") from None
        for op in ops:
            if op[0] == "picture":
                self.has_picture = True
            elif op[0] == "roots":
                self.roots = dict(op[1])
        if rows:
            self.depth += len(rows)
            self.committed_seq = rows[-1][0]
        _notify_all(self._committed)

    def flush(self, timeout=None) -> bool:
        """Park until every row and picture change queued so far is on
        disk (True), or ``timeout`` seconds pass (False).  Only the
        committer fiber commits, so rows reach the file in seq order (the
        shipper relies on that).  Raises the journal's error if it has
        one."""
        deadline = None if timeout is None else fibers.now() + timeout
        target = self.last_seq

        def settled():
            return (not (self.committed_seq < target or self._ops)
                    or self.error is not None or self._committer.dead)

        while not settled():
            self._kick.set()
            # A slice of at most 1 s: a committer killed (not failed) says
            # nothing, and is seen dead at the next look.
            wait = 1.0 if deadline is None else min(1.0, deadline -
                                                    fibers.now())
            if wait <= 0:
                break
            # Woken by every commit, to kick again for what came since.
            with self._committed:
                self._committed.wait(wait)
        if self.error is not None:
            raise self.error
        return self.committed_seq >= target and not self._ops

    @property
    def pending(self) -> int:
        return len(self._rows) + len(self._ops)

    # ---- the picture -------------------------------------------------------

    def load_picture(self):
        """``(picture, hidden)``: the tree as the journal has it (a dict
        for ``fibers.fs.watch(baseline=)``) and the set of paths the rules
        kept from the store (too small when created)."""
        return self._run(_load_picture)

    # ---- reading and acking (the shipper) -----------------------------------

    def wait_committed(self, after: int, timeout=None) -> bool:
        """Park until a row with seq > ``after`` is committed (True), or
        ``timeout`` passes (False)."""
        if self.committed_seq > after:
            return True
        # Any commit (or the committer's failure) ends the wait, as the
        # caller reads the journal again anyway.
        with self._committed:
            self._committed.wait(timeout)
        return self.committed_seq > after

    def read_unacked(self, after: int, limit: int) -> list:
        """Up to ``limit`` unacked committed rows with seq > ``after``, in
        seq order, as store rows."""
        try:
            return self._run(_select, after, limit)
        except sqlite3.Error as e:
            raise JournalError(f"cannot read the journal: {e}") from None

    def ack(self, lo: int, hi: int) -> None:
        """Mark seq lo..hi as confirmed by the store."""
        try:
            n = self._run(_ack, lo, hi, self.last_seq - KEEP_ACKED)
        except sqlite3.Error as e:
            raise JournalError(f"cannot write the journal: {e}") from None
        self.depth -= n

    def first_unacked(self) -> int:
        """The lowest unacked seq, or last committed + 1."""
        row = self._run(lambda db: db.execute(
            "SELECT MIN(seq) FROM events WHERE acked=0").fetchone())
        return row[0] if row[0] is not None else self.committed_seq + 1

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending (waiting at most ``timeout`` seconds) and
        close the file."""
        if self._db is None:
            return
        try:
            if self.error is None:
                self.flush(timeout)
        finally:
            self._closed = True
            self._kick.set()
            _notify_all(self._room)
            if not self._committer.dead:
                try:
                    self._committer.join(timeout)
                except fibers.Timeout:
                    self._committer.kill()
            with self._lock:
                db, self._db = self._db, None
                fibers.blocking(db.close)


def _notify_all(cond):
    with cond:
        cond.notify_all()


# ---- on the blocking pool ---------------------------------------------------

def _stat_of(p, is_dir):
    try:
        st = os.lstat(p)
    except OSError:
        return None
    if _stat.S_ISDIR(st.st_mode) != bool(is_dir):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _under(p):
    # The key range of everything below directory p ("/" + 1 is "0").
    return (p + b"/", p + b"0") if p != b"/" else (b"/", b"0")


def _del_tree(db, p):
    lo, hi = _under(p)
    db.execute("DELETE FROM tree WHERE path = ?", (p,))
    db.execute("DELETE FROM tree WHERE path >= ? AND path < ?", (lo, hi))


def _put(db, p, is_dir, st, hidden):
    db.execute("INSERT OR REPLACE INTO tree VALUES (?, ?, ?, ?, ?, ?)",
               (p, int(bool(is_dir)), *(st or (None, None, None)),
                int(bool(hidden))))


def _apply(db, op):
    what = op[0]
    # (a file's put, deletion and rename are _commit's runs)
    if what == "del":
        _del_tree(db, op[1])
    elif what == "move":
        src, dst = op[1], op[2]
        lo, hi = _under(src)
        moved = db.execute(
            "SELECT path, is_dir, ino, size, mtime_ns, hidden FROM tree "
            "WHERE path = ? OR (path >= ? AND path < ?)",
            (src, lo, hi)).fetchall()
        _del_tree(db, src)
        _del_tree(db, dst)
        if not moved:
            # Not in the picture (it was never seen): take it as it is.
            try:
                is_dir = _stat.S_ISDIR(os.lstat(dst).st_mode)
            except OSError:
                return
            _put(db, dst, is_dir, _stat_of(dst, is_dir), False)
            return
        n = len(src)
        db.executemany("INSERT OR REPLACE INTO tree VALUES (?, ?, ?, ?, ?, "
                       "?)", [(dst + r[0][n:],) + tuple(r[1:])
                              for r in moved])
    elif what == "import":
        _, root, picture = op
        _del_tree(db, root)
        rows = []
        for p, (is_dir, st) in picture.items():
            if st is None:
                st = _stat_of(p, is_dir)
            rows.append((p, int(is_dir), *(st or (None, None, None)), 0))
        db.executemany("INSERT OR REPLACE INTO tree VALUES (?, ?, ?, ?, ?, "
                       "?)", rows)
    elif what == "forget":
        _del_tree(db, op[1])
    elif what == "roots":
        db.execute("INSERT OR REPLACE INTO meta VALUES ('roots', ?)",
                   (json.dumps([[r.hex(), *(i or (None, None))]
                                for r, i in sorted(op[1].items())]),))
    elif what == "picture":
        db.execute("INSERT OR REPLACE INTO meta VALUES ('picture', '1')")
    else:
        raise ValueError(f"unknown picture change {what!r}")


_PUT = "INSERT OR REPLACE INTO tree VALUES (?, ?, ?, ?, ?, ?)"
_DEL = "DELETE FROM tree WHERE path = ?"
# Replaces what dst held; a source the picture lacks leaves it untouched
# (its put comes with the watcher's created event).
_MOVE_FILE = "UPDATE OR REPLACE tree SET path = ? WHERE path = ?"


def _commit(db, rows, ops):
    try:
        db.execute("BEGIN IMMEDIATE")
        if rows:
            db.executemany("INSERT INTO events (seq, host, source, kind, "
                           "path, src_path, is_dir, time) VALUES "
                           "(?,?,?,?,?,?,?,?)", rows)
        # The common changes (a file's put, deletion or rename) go in runs,
        # one executemany per run and kind, in order.
        run_sql, run = None, []
        for op in ops:
            what = op[0]
            if what == "put":
                _, p, is_dir, hidden = op
                st = _stat_of(p, is_dir)
                sql, args = _PUT, [(p, int(bool(is_dir)),
                                    *(st or (None, None, None)),
                                    int(bool(hidden)))]
            elif what == "del" and len(op) > 2 and not op[2]:
                sql, args = _DEL, [(op[1],)]
            elif what == "move" and len(op) > 3 and not op[3]:
                # a file renamed (over another file, maybe): a new key
                sql, args = _MOVE_FILE, [(op[2], op[1])]
            else:
                sql, args = None, None
            if sql is not run_sql and run:
                db.executemany(run_sql, run)
                run = []
            run_sql = sql
            if sql is None:
                _apply(db, op)
            else:
                run += args
        if run:
            db.executemany(run_sql, run)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _select(db, after, limit):
    return db.execute(
        "SELECT host, source, seq, kind, path, src_path, is_dir, time "
        "FROM events WHERE acked=0 AND seq > ? ORDER BY seq LIMIT ?",
        (after, limit)).fetchall()


def _ack(db, lo, hi, prune_below):
    try:
        db.execute("BEGIN IMMEDIATE")
        n = db.execute("UPDATE events SET acked=1 WHERE seq BETWEEN ? AND ? "
                       "AND acked=0", (lo, hi)).rowcount
        if prune_below > 0:
            db.execute("DELETE FROM events WHERE acked=1 AND seq < ?",
                       (prune_below,))
        db.execute("COMMIT")
        return n
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
