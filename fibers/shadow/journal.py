"""The journal: a local SQLite outbox between watching and shipping.

Design: the watcher must never wait for the store, and nothing may be lost
when the store is away or the process dies; so every event is first made
durable locally, and the shipper works only from this file.  While the
store is unreachable the outbox grows on disk and memory stays flat.

- WAL and ``synchronous=NORMAL``: a commit is an append to the WAL with no
  fsync per transaction; a crash of the process loses nothing committed
  (a power cut may lose the last moments, which the watcher's snapshot
  diff then finds again at start-up).
- Commits are batched (every ``batch`` events, or every ``interval``
  seconds), and run on fibers' blocking pool, so a stalled disk parks the
  committing fiber and never the thread.  One connection, serialised by a
  fiber mutex: SQLite connections are not for two threads at once.
- ``seq`` is assigned here, in memory, and the column is ``INTEGER PRIMARY
  KEY AUTOINCREMENT``: SQLite's own sequence table then keeps the highest
  seq ever used, so seq keeps increasing across restarts even after acked
  rows are pruned.
- ``append`` parks its caller while the rows waiting for a commit reach
  ``max_pending``: back-pressure from a slow disk travels upstream to the
  watcher, which stops reading the kernel (an overflow there is repaired
  by a rescan).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid

import fibers

from .sync import Mutex

__all__ = ["Journal", "JournalError"]

log = logging.getLogger("fibers.shadow")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    host     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    path     TEXT,
    src_path TEXT,
    is_dir   INTEGER NOT NULL,
    time     REAL    NOT NULL,
    acked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unacked ON events(acked, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

# Acked rows kept for inspection before pruning.
KEEP_ACKED = 100_000


class JournalError(Exception):
    """The journal cannot be written (disk full, read-only, corrupt).
    Nothing of the failed commit is in the file."""


def _open(path):
    db = sqlite3.connect(path, timeout=10, isolation_level=None,
                         check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='source'"
                         ).fetchone()
        if row is None:
            source = uuid.uuid4().hex[:12]
            db.execute("INSERT INTO meta VALUES ('source', ?)", (source,))
        else:
            source = row[0]
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE "
                         "name='events'").fetchone()
        last = max(seq[0] if seq else 0,
                   db.execute("SELECT COALESCE(MAX(seq), 0) FROM events"
                              ).fetchone()[0])
        depth = db.execute("SELECT COUNT(*) FROM events WHERE acked=0"
                           ).fetchone()[0]
        acked = db.execute("SELECT COALESCE(MIN(seq) - 1, ?) FROM events "
                           "WHERE acked=0", (last,)).fetchone()[0]
        return db, source, last, depth, acked
    except BaseException:
        db.close()
        raise


class Journal:
    """The outbox.  ``append`` rows, ``read_unacked`` them, ``ack`` them.

    Row tuples handed to the shipper are in store.COLUMNS order:
    (host, source, seq, kind, path, src_path, is_dir, time).
    """

    def __init__(self, path: str, host: str, source: str = "",
                 batch: int = 256, interval: float = 0.05,
                 max_pending: int = 8192):
        self.path = path
        self.host = host
        self.batch = batch
        self.interval = interval
        self.max_pending = max_pending
        self._lock = Mutex()
        self._pending = []          # rows not yet committed
        self._key = ("fibers.shadow.journal", id(self))
        self._closed = False
        self.error = None           # JournalError once a commit failed
        try:
            (self._db, own, self.last_seq, self.depth,
             self.acked_seq) = fibers.blocking(_open, path)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open the journal {path!r}: {e}") \
                from None
        self.source = source or own
        self.committed_seq = self.last_seq
        self._committer = fibers.spawn(self._commit_loop)

    # ---- writing -----------------------------------------------------------

    def append(self, kind, path, src_path, is_dir, time) -> int:
        """Queue one event for the next commit; returns its seq.  Parks
        while too many rows wait for the disk."""
        while len(self._pending) >= self.max_pending and not self._closed:
            fibers.wait_signal((self._key, "room"))
        if self._closed:
            raise JournalError(str(self.error) if self.error else
                               "the journal is closed")
        self.last_seq += 1
        self._pending.append((self.last_seq, self.host, self.source, kind,
                              path, src_path, int(bool(is_dir)), time))
        if len(self._pending) >= self.batch:
            fibers.signal_all((self._key, "full"))
        return self.last_seq

    def _commit_loop(self):
        try:
            while True:
                if len(self._pending) < self.batch and not self._closed:
                    try:
                        fibers.wait_signal((self._key, "full"),
                                           self.interval)
                    except fibers.Timeout:
                        pass
                if self._pending:
                    self._commit()
                if self._closed and not self._pending:
                    return
        except JournalError as e:
            self.error = e
            log.error("%s", e)
            self._closed = True
            fibers.signal_all((self._key, "room"))
            fibers.signal_all((self._key, "committed"))

    def _commit(self):
        rows, self._pending = self._pending, []
        fibers.signal_all((self._key, "room"))
        with self._lock:
            try:
                fibers.blocking(_insert, self._db, rows)
            except sqlite3.Error as e:
                raise JournalError(
                    f"cannot write the journal {self.path!r}: {e}; stopping "
                    f"(nothing half-written: the last batch was rolled "
                    f"back)") from None
        self.depth += len(rows)
        self.committed_seq = rows[-1][0]
        fibers.signal_all((self._key, "committed"))

    def flush(self) -> None:
        """Park until every row appended so far is on disk.  Only the
        committer fiber commits, so rows reach the file in seq order (the
        shipper relies on that)."""
        target = self.last_seq
        while self.committed_seq < target and self.error is None \
                and not (self._closed and self._committer.dead):
            fibers.signal_all((self._key, "full"))
            try:
                fibers.wait_signal((self._key, "committed"), 1.0)
            except fibers.Timeout:
                pass
        if self.error is not None:
            raise self.error

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---- reading and acking (the shipper) -----------------------------------

    def wait_committed(self, after: int, timeout=None) -> bool:
        """Park until a row with seq > ``after`` is committed (True), or
        ``timeout`` passes (False)."""
        if self.committed_seq > after:
            return True
        try:
            fibers.wait_signal((self._key, "committed"), timeout)
        except fibers.Timeout:
            return False
        return self.committed_seq > after

    def read_unacked(self, after: int, limit: int) -> list:
        """Up to ``limit`` unacked committed rows with seq > ``after``, in
        seq order, as store rows."""
        with self._lock:
            try:
                return fibers.blocking(_select, self._db, after, limit)
            except sqlite3.Error as e:
                raise JournalError(f"cannot read the journal: {e}") from None

    def ack(self, lo: int, hi: int) -> None:
        """Mark seq lo..hi as confirmed by the store."""
        with self._lock:
            try:
                n = fibers.blocking(_ack, self._db, lo, hi,
                                    self.last_seq - KEEP_ACKED)
            except sqlite3.Error as e:
                raise JournalError(f"cannot write the journal: {e}") \
                    from None
        self.depth -= n

    def first_unacked(self) -> int:
        """The lowest unacked seq, or last committed + 1."""
        with self._lock:
            row = fibers.blocking(lambda: self._db.execute(
                "SELECT MIN(seq) FROM events WHERE acked=0").fetchone())
        return row[0] if row[0] is not None else self.committed_seq + 1

    def close(self) -> None:
        """Commit what is pending and close the file."""
        if self._db is None:
            return
        try:
            if self.error is None:
                self.flush()
        finally:
            self._closed = True
            fibers.signal_all((self._key, "full"))
            fibers.signal_all((self._key, "room"))
            db, self._db = self._db, None
            with self._lock:
                fibers.blocking(db.close)


def _insert(db, rows):
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO events (seq, host, source, kind, path, "
                       "src_path, is_dir, time) VALUES (?,?,?,?,?,?,?,?)",
                       rows)
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


def journal_path(state_dir: str) -> str:
    return os.path.join(state_dir, "journal.db")
