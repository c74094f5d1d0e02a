"""Shared fixtures.

Every test that involves time runs on a VirtualClock with autojump, so
sleeps of minutes finish at once and assertions are about exact virtual
times, never wall-clock margins.
"""
import logging
import os
import sys

import pytest

# tools/ holds helpers shared with the tools themselves (pgcluster.py,
# shadowproc.py): importable by every test module.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools"))

import fibers
from iohelp import skip_unless_backend_runs
from pg import pg, pg_server  # noqa: F401  (fixtures: a PostgreSQL server)


@pytest.fixture
def clock():
    return fibers.VirtualClock(autojump=True)


@pytest.fixture
def sched(clock):
    s = fibers.Scheduler(clock=clock)
    yield s
    s.close()


class ErrorLog(logging.Handler):
    """Collects records from the 'fibers' logger."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def errlog():
    h = ErrorLog()
    log = logging.getLogger("fibers")
    log.addHandler(h)
    yield h
    log.removeHandler(h)


# ---- I/O layer ---------------------------------------------------------------

# Last-resort guard for the I/O suite: a test wedged in a kernel wait would
# otherwise hang the whole run.  Far above any test's real duration (< 2 s);
# on expiry faulthandler prints every thread's stack and exits.
IO_HANG_LIMIT = 60.0


@pytest.fixture(scope="session")
def _real_stderr_fd(request):
    """A dup of the real stderr: pytest captures fd 2 during tests, and a
    hang report written there would vanish with the process."""
    import os

    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        fd = os.dup(2)
    else:
        with capman.global_and_fixture_disabled():
            fd = os.dup(2)
    yield fd
    os.close(fd)


@pytest.fixture(params=["io_uring", "epoll"])
def backend(request, _real_stderr_fd):
    """Each I/O test runs once per completion backend."""
    import faulthandler

    name = request.param
    skip_unless_backend_runs(name)
    faulthandler.dump_traceback_later(IO_HANG_LIMIT, exit=True,
                                      file=_real_stderr_fd)
    yield name
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def io_sched(backend):
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    yield s
    s.close()
