"""Shared fixtures.

Every test that involves time runs on a VirtualClock with autojump, so
sleeps of minutes finish at once and assertions are about exact virtual
times, never wall-clock margins.
"""
import logging

import pytest

import fibers


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
