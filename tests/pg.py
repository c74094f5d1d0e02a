"""The pytest fixtures for a throwaway PostgreSQL server.

The server itself is tools/pgcluster.py's ``PgServer`` (re-exported here,
with ``PgUnavailable``): ``initdb`` into a fresh temporary directory,
``pg_ctl start`` on a free port of 127.0.0.1 and a Unix socket, trust
authentication, fsync off; ``kill()`` SIGKILLs it as a crash would,
``start()`` brings it back on the same port.

The fixtures (``pg_server`` for the session, ``pg`` per test, which
restarts a server some earlier test left down) are made available to every
test module by ``conftest.py``.  When no server can be started here they
skip, with the reason.
"""
import pytest

from capabilities import skip
from tools.pgcluster import (PgServer, PgUnavailable, find_bindir,  # noqa: F401
                             free_port)


# ---- pytest fixtures ---------------------------------------------------------

@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole session, started on first use and
    stopped (its cluster removed) at the end.  Skips, with the reason, when
    none can be started here."""
    try:
        server = PgServer()
        server.start()
    except PgUnavailable as e:
        if "server" in locals():
            server.stop()
        skip("postgresql", f"no PostgreSQL server: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(pg_server):
    """The session's server, started again if an earlier test killed it."""
    if not pg_server.running:
        try:
            pg_server.start()
        except PgUnavailable as e:
            pytest.fail(f"the PostgreSQL server did not come back: {e}")
    return pg_server
