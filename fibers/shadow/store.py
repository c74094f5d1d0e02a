"""The distant store: where shadowed events end up, chosen by a URL.

Design: the shipper only needs three cooperative calls (connect, write a
batch and return once it is durable, close), so that is the whole Store
interface.  "Cooperative" means each call parks only the calling fiber:
the SQLite store gets that by running its calls on fibers' blocking pool;
the PostgreSQL store gets it from fibers.psycopg, a cooperative driver.
Paths are stored as bytes (SQLite BLOB, PostgreSQL bytea): Linux names
are bytes, and one that is not UTF-8 must arrive unchanged.  (Query them as
text with ``CAST(path AS TEXT)`` in SQLite, ``convert_from(path, 'UTF8')``
in PostgreSQL.)  Every store keys rows by (host, source, seq) and ignores a
row it already has, so the shipper can resend anything it is unsure of and never
duplicate: at-least-once delivery becomes exactly-once storage.

The PostgreSQL store sends a whole batch as ONE statement: eight arrays
(one per column) unnested into an ``INSERT ... ON CONFLICT DO NOTHING``, on
an autocommit connection.  One round trip and one commit per batch, and a
statement whose text never changes (psycopg prepares it after a few uses);
executemany would cost a round trip per row (or a pipeline per batch),
and COPY cannot skip conflicting rows without a temp table and a second
statement.  The statement returning is the confirmation: autocommit means
it has committed (with synchronous_commit forced on for the session, so a
server crash cannot take back a confirmed batch).  Batches are written one
at a time on one connection (the shipper keeps several in flight; they
queue at a fiber mutex), since one connection cannot hold two
transactions.  Every psycopg error becomes
a StoreError, so a dead server or a cut link runs the shipper's
reconnect-and-resend path; a write that takes longer than
``PgStore.write_timeout`` (a link that went silent) is abandoned the same
way (fibers.psycopg then cancels or closes the connection).

URLs (SQLite's follow SQLAlchemy's convention: what follows the third
slash is the path, so a fourth slash makes it absolute):

- ``sqlite:///relative/path.db``: a SQLite database relative to the
  working directory; ``sqlite:////absolute/path.db`` (four slashes): an
  absolute one; ``sqlite:///~/x.db``: one in the home directory.  It has
  one table ``events``; query it with ``sqlite3 path.db 'select * from
  events'``.  The database's directory must exist (checked at start).
- ``postgresql://[user@]host[:port]/dbname[?param=value...]`` (or
  ``postgres://``): a libpq URI; the table ``events`` is created if absent.
  Query it with ``psql URL -c 'select * from events'``.
"""

from __future__ import annotations

import os
import sqlite3

import fibers

from .errors import ConfigError, StoreError

__all__ = ["Store", "SqliteStore", "PgStore", "StoreError", "open_store",
           "parse_url", "COLUMNS"]

# The columns of a stored event, in the order the shipper hands them over.
COLUMNS = ("host", "source", "seq", "kind", "path", "src_path", "is_dir",
           "time")


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
    ConfigError with the reason, for the command line."""
    if url.startswith("sqlite://"):
        # sqlite:///rel.db and sqlite:////abs.db, as in SQLAlchemy: the
        # empty host between the second and third slash, then the path.
        rest = url[len("sqlite://"):]
        path = rest[1:]
        if not rest.startswith("/") or path in ("", "/") \
                or path.endswith("/"):
            raise ConfigError(f"a sqlite store URL is sqlite:///RELATIVE/"
                              f"PATH or sqlite:////ABSOLUTE/PATH (a file), "
                              f"got {url!r}")
        return "sqlite", os.path.abspath(os.path.expanduser(path))
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from psycopg.conninfo import conninfo_to_dict
            conninfo_to_dict(url)
        except ImportError:
            raise ConfigError("the PostgreSQL store needs psycopg 3: pip "
                              "install 'fibers[shadow]'") from None
        except Exception as e:
            raise ConfigError(f"bad PostgreSQL URL {url!r}: {e}") from None
        return "postgresql", url
    raise ConfigError(f"unknown store URL {url!r}; use sqlite:///RELATIVE/"
                      f"PATH, sqlite:////ABSOLUTE/PATH or postgresql://...")


def open_store(url: str) -> Store:
    """The Store for ``url`` (not yet connected)."""
    scheme, target = parse_url(url)
    if scheme == "postgresql":
        return PgStore(target)
    return SqliteStore(target, url)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    host     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    path     BLOB,
    src_path BLOB,
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
        self._lock = fibers.Lock()   # one transaction at a time

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
                fibers.blocking(self._write, db, _rows_as_bytes(rows))
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


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    host     TEXT             NOT NULL,
    source   TEXT             NOT NULL,
    seq      BIGINT           NOT NULL,
    kind     TEXT             NOT NULL,
    path     BYTEA,
    src_path BYTEA,
    is_dir   BOOLEAN          NOT NULL,
    time     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, source, seq)
)"""

_PG_INSERT = """
INSERT INTO events (host, source, seq, kind, path, src_path, is_dir, time)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[],
                     %s::bytea[], %s::bytea[], %s::boolean[],
                     %s::float8[])
ON CONFLICT (host, source, seq) DO NOTHING"""


# A table made by a fibers-shadow that kept paths as text: its paths
# become bytes (their UTF-8), in place, once.
_PG_PATHS_AS_TEXT = """
SELECT count(*) FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'events'
  AND column_name IN ('path', 'src_path') AND data_type = 'text'"""
_PG_PATHS_TO_BYTEA = """
ALTER TABLE events
  ALTER COLUMN path TYPE bytea USING convert_to(path, 'UTF8'),
  ALTER COLUMN src_path TYPE bytea USING convert_to(src_path, 'UTF8')"""


def fsbytes(p):
    """A path as bytes (str is os.fsencode'd: the events' paths, and rows
    journaled by older versions); None stays None."""
    return p if p is None or type(p) is bytes else os.fsencode(p)


def shown(path) -> str:
    """A path for people: bytes that are not UTF-8 shown as \\xNN (a
    terminal or a log cannot take them raw)."""
    if path is None:
        return ""
    return fsbytes(path).decode("utf-8", "backslashreplace")


def _rows_as_bytes(rows):
    return [r if (r[4] is None or type(r[4]) is bytes) and
            (r[5] is None or type(r[5]) is bytes)
            else r[:4] + (fsbytes(r[4]), fsbytes(r[5])) + r[6:] for r in rows]


class PgStore(Store):
    """Events in a PostgreSQL table, through fibers.psycopg: connecting,
    writing and closing park only the calling fiber."""

    #: Seconds a batch may take before the link is taken for dead.
    write_timeout = 30.0
    #: Seconds a connection attempt may take (libpq's connect_timeout, if
    #: the URL does not say).
    connect_timeout = 10

    def __init__(self, url: str):
        self.url = url
        self._conn = None
        self._lock = fibers.Lock()    # one statement at a time on the connection

    def describe(self) -> str:
        # never show a password
        try:
            from psycopg.conninfo import conninfo_to_dict
            d = conninfo_to_dict(self.url)
        except Exception:
            return "postgresql://?"
        host = d.get("host") or "localhost"
        port = f":{d['port']}" if d.get("port") else ""
        user = f"{d['user']}@" if d.get("user") else ""
        return f"postgresql://{user}{host}{port}/{d.get('dbname', '')}"

    def connect(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        import psycopg
        import fibers.psycopg
        kw = {}
        if "connect_timeout" not in self.url:
            kw["connect_timeout"] = self.connect_timeout
        try:
            conn = fibers.psycopg.connect(self.url, autocommit=True, **kw)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect: {_pg_msg(e)}") from None
        try:
            with fibers.timeout(self.write_timeout):
                # A commit is a confirmation only once it is durable: a
                # server configured with synchronous_commit=off would
                # answer before its WAL is written, and a crash then loses
                # rows the journal has already acked.
                conn.execute("SET synchronous_commit TO on")
                conn.execute(_PG_SCHEMA)
                if conn.execute(_PG_PATHS_AS_TEXT).fetchone()[0]:
                    conn.execute(_PG_PATHS_TO_BYTEA)
        except (psycopg.Error, fibers.Timeout) as e:
            conn.close()
            raise StoreError(f"cannot create the table: {_pg_msg(e)}") \
                from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def write(self, rows: list) -> None:
        import psycopg
        if not rows:
            return
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed:
                raise StoreError("not connected")
            cols = [list(c) for c in zip(*_rows_as_bytes(rows))]
            cols[6] = [bool(v) for v in cols[6]]
            try:
                with fibers.timeout(self.write_timeout):
                    conn.execute(_PG_INSERT, cols)
            except psycopg.Error as e:
                raise StoreError(f"write failed: {_pg_msg(e)}") from None
            except fibers.Timeout:
                raise StoreError(f"no answer within {self.write_timeout} "
                                 f"s") from None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def _pg_msg(e):
    """psycopg's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__
