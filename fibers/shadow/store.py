"""The distant store: where shadowed events end up, chosen by a URL.

Design: the shipper only needs three cooperative calls (connect, write a
batch and return once it is durable, close), so that is the whole Store
interface.  "Cooperative" means each call parks only the calling fiber:
the SQLite store gets that by running its calls on fibers' blocking pool;
a server store (PostgreSQL, later) would get it from a cooperative driver.
Every store keys rows by (host, source, seq) and ignores a row it already
has, so the shipper can resend anything it is unsure of and never
duplicate: at-least-once delivery becomes exactly-once storage.

URLs:

- ``sqlite:///absolute/path.db`` (or ``sqlite:///~/x.db``, or a relative
  ``sqlite:///rel.db``): a SQLite database with one table ``events``;
  query it with ``sqlite3 path.db 'select * from events'``.
"""

from __future__ import annotations

import os
import sqlite3

import fibers

from .sync import Mutex

__all__ = ["Store", "SqliteStore", "StoreError", "open_store", "parse_url",
           "COLUMNS"]

# The columns of a stored event, in the order the shipper hands them over.
COLUMNS = ("host", "source", "seq", "kind", "path", "src_path", "is_dir",
           "time")


class StoreError(Exception):
    """The store cannot be reached or refused a write; the shipper
    reconnects and resends."""


class Store:
    """What the shipper needs from a store.  Each method may park the
    calling fiber, never the thread."""

    url: str

    def connect(self) -> None:
        """Open the connection (and create the table if needed).  Raises
        StoreError if the store cannot be reached."""
        raise NotImplementedError

    def write(self, rows: list) -> None:
        """Store ``rows`` (tuples in COLUMNS order) and return once they
        are durable.  Rows already stored are ignored.  Raises
        StoreError; then nothing of the batch is known to be stored."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection; connect() may be called again later."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.url


def parse_url(url: str):
    """(scheme, target) for a store URL; ValueError-free: raises
    config.ConfigError with the reason, for the command line."""
    from .config import ConfigError
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(f"a sqlite store URL is sqlite:///PATH, got "
                              f"{url!r}")
        path = rest[1:]
        path = os.path.abspath(os.path.expanduser(
            path if path.startswith(("/", "~")) else path))
        return "sqlite", path
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("the PostgreSQL store is not available in this "
                          "version; use sqlite:///PATH")
    raise ConfigError(f"unknown store URL {url!r}; use sqlite:///PATH")


def open_store(url: str) -> Store:
    """The Store for ``url`` (not yet connected)."""
    scheme, target = parse_url(url)
    return SqliteStore(target, url)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    host     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    path     TEXT,
    src_path TEXT,
    is_dir   INTEGER NOT NULL,
    time     REAL    NOT NULL,
    PRIMARY KEY (host, source, seq)
)"""


class SqliteStore(Store):
    """A second SQLite database standing in for a distant store: it needs
    no server, and it fails like one (a missing directory, a locked or
    read-only file) so reconnecting can be seen at work."""

    def __init__(self, path: str, url: str | None = None):
        self.path = path
        self.url = url or "sqlite:///" + path
        self._db = None
        self._lock = Mutex()   # one transaction at a time

    def _connect(self):
        if not os.path.isdir(os.path.dirname(self.path) or "."):
            raise StoreError(f"directory of {self.path!r} does not exist")
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def connect(self) -> None:
        if self._db is not None:
            return
        try:
            self._db = fibers.blocking(self._connect)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path!r}: {e}") from None

    def _write(self, db, rows):
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR IGNORE INTO events VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def write(self, rows: list) -> None:
        db = self._db
        if db is None:
            raise StoreError("not connected")
        try:
            with self._lock:
                fibers.blocking(self._write, db, rows)
        except sqlite3.Error as e:
            raise StoreError(f"write to {self.path!r} failed: {e}") from None

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                with self._lock:
                    fibers.blocking(db.close)
            except sqlite3.Error:
                pass
