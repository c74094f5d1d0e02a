"""The small root data-stack chunks lent to worker greenlets
(csrc/fib_stack.h): deep calls overflow into ordinary chunks and come back,
and every chunk returns when its greenlet dies."""
import sys

import pytest

import fibers
from capabilities import requires
from fibers import _core

needs_datastack = requires(
    "datastack", "frames live on a data stack from CPython 3.11"
    if sys.version_info < (3, 11) else None)


def deep(n, park_at):
    if n == park_at:
        fibers.sleep(1)          # park while frames sit in chained chunks
    if n == 0:
        return 0
    return 1 + deep(n - 1, park_at)


def test_deep_calls_that_park_inside_fibers(sched):
    def main():
        fs = [fibers.spawn(deep, 400, k * 37) for k in range(10)]
        return [f.join() for f in fs]
    assert sched.run(main) == [400] * 10


def test_recursion_error_is_an_ordinary_exception(sched):
    def forever(n):
        return forever(n + 1)

    def main():
        f = fibers.spawn(forever, 0)
        with pytest.raises(RecursionError):
            f.join()
        return fibers.spawn(deep, 50, -1).join()   # the worker still works
    assert sched.run(main) == 50


@needs_datastack
def test_chunks_come_back_when_greenlets_die(clock):
    base = _core._stack_chunks_in_use()
    s = fibers.Scheduler(clock=clock, pool_size=8)

    def main():
        fs = [fibers.spawn(deep, 30, 15) for _ in range(500)]
        fibers.yield_now()                  # all 500 start and park
        assert _core._stack_chunks_in_use() >= base + 500
        for f in fs:
            f.join()
    s.run(main)
    # Only the pooled workers (and main's, until it is collected) keep one.
    assert _core._stack_chunks_in_use() <= base + 8 + 2
    s.close()
    assert _core._stack_chunks_in_use() <= base + 2
