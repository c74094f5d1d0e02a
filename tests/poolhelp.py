"""The blocking-call pool in tests: it is the process's, shared by every
test, and its threads live in real time."""
import time

import pytest

import fibers
from fibers import _core


def wait_until(pred, seconds=5.0):
    """Bounded real-time wait, for pool threads (which live in real time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


@pytest.fixture
def limit():
    """fibers.set_blocking_limit, with the cap restored after the test."""
    old = fibers.blocking_limit()
    yield fibers.set_blocking_limit
    fibers.set_blocking_limit(old)


@pytest.fixture
def fresh_pool():
    """A pool with no thread: threads left idle by earlier tests would take
    the jobs a lowered cap should queue, so they exit first (idle time
    50 ms during the test, 10 s after)."""
    _core._set_blocking_idle(0.05)
    try:
        assert wait_until(lambda: fibers.blocking_stats()["threads"] == 0)
        yield
    finally:
        _core._set_blocking_idle(10)
