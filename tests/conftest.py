"""Shared fixtures, and the plugin that keeps skips from hiding.

Every test that involves time runs on a VirtualClock with autojump, so
sleeps of minutes finish at once and assertions are about exact virtual
times, never wall-clock margins.

A test that cannot run here skips for a named capability
(tests/capabilities.py, registered below as a plugin): the run's summary
names what was not tested, and with FIBERS_REQUIRE set (as on CI) such a
skip fails the run.
"""
import logging

import pytest

import capabilities
import fibers
from iohelp import skip_unless_backend_runs
from pg import pg, pg_server  # noqa: F401  (fixtures: a PostgreSQL server)


def pytest_configure(config):
    # Registered here rather than with pytest_plugins (which only a
    # rootdir conftest may use); `pytest -p capabilities` loads it too.
    if not config.pluginmanager.is_registered(capabilities):
        config.pluginmanager.register(capabilities, "fibers-capabilities")
    config.addinivalue_line(
        "markers", "hang_limit(seconds): the I/O hang guard's limit for a "
        "test that is long by design (IO_HANG_LIMIT otherwise)")


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
# on expiry faulthandler prints every thread's stack and exits.  A test that
# is long by design says its own limit with @pytest.mark.hang_limit(s).
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
    mark = request.node.get_closest_marker("hang_limit")
    limit = mark.args[0] if mark else IO_HANG_LIMIT
    faulthandler.dump_traceback_later(limit, exit=True,
                                      file=_real_stderr_fd)
    yield name
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def fibers_backend(request):
    """For the fibers pytest plugin (fibers/pytest_plugin.py): a test marked
    @pytest.mark.fibers that also takes `backend` runs on the backend that
    fixture selected; one that does not, on the default."""
    if "backend" in request.fixturenames:
        return request.getfixturevalue("backend")
    return None


@pytest.fixture
def io_sched(backend):
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    yield s
    s.close()
