"""Scheduler.stats(): tick durations, fibers by state, pump waits, the
blocking-call pool.

Tick durations are wall time (the monotonic clock, never the scheduler's
own): a tick made long on purpose by a real blocking call must show up in
tick_max and in the right histogram bucket; the pump's wait must not.
"""
import collections
import math
import socket
import threading
import time

import pytest

import fibers
from poolhelp import fresh_pool, limit, wait_until  # noqa: F401 (fixtures)

BOUNDS = (2.5e-06, 5e-06, 1e-05, 2.5e-05, 5e-05, 0.0001, 0.00025, 0.0005,
          0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
          5.0, 10.0, math.inf)


def check_shape(st):
    """What holds for every stats(): the histogram's form, its total, the
    percentiles' order."""
    buckets = st["tick_buckets"]
    assert tuple(b for b, _ in buckets) == BOUNDS
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)             # cumulative
    assert counts[-1] == st["ticks"]            # every finished tick timed
    assert 0.0 <= st["tick_p50"] <= st["tick_p99"] <= st["tick_max"]
    assert st["tick_max"] <= st["tick_sum"] or st["ticks"] == 0
    for key in ("tick_p50", "tick_p99", "tick_max", "tick_sum"):
        assert type(st[key]) is float
    for key in ("pump_waits", "blocking_threads", "blocking_queue"):
        assert type(st[key]) is int and st[key] >= 0


def count_at(st, bound):
    return dict(st["tick_buckets"])[bound]


def test_a_fresh_scheduler_has_zeros():
    s = fibers.Scheduler()
    try:
        st = s.stats()
    finally:
        s.close()
    check_shape(st)
    assert st["ticks"] == 0
    assert (st["tick_p50"], st["tick_p99"], st["tick_max"],
            st["tick_sum"]) == (0.0, 0.0, 0.0, 0.0)
    assert all(c == 0 for _, c in st["tick_buckets"])
    assert st["states"] == {"ready": 0, "running": 0, "suspended": 0}
    assert st["pump_waits"] == 0
    # the keys that were there before stay
    for key in ("spawned", "live", "io_pending", "blocking_jobs", "timers"):
        assert key in st


def test_ticks_are_timed_and_counted(sched):
    def main():
        for _ in range(50):
            fibers.yield_now()
    sched.run(main)
    st = sched.stats()
    check_shape(st)
    assert st["ticks"] >= 50
    assert st["tick_sum"] > 0.0
    assert st["pump_waits"] == 0        # a virtual clock and no I/O


def test_a_tick_made_long_by_a_blocking_call_shows_in_max_and_bucket(sched):
    def main():
        for _ in range(20):
            fibers.yield_now()
        time.sleep(0.06)            # the one long tick
        for _ in range(20):
            fibers.yield_now()
    sched.run(main)
    st = sched.stats()
    check_shape(st)
    n = st["ticks"]
    assert n < 100                  # so p99 is the window's maximum
    assert st["tick_max"] >= 0.06
    assert st["tick_p99"] == st["tick_max"]
    assert st["tick_p50"] < 0.06
    assert st["tick_sum"] >= 0.06
    # Exactly one tick sits in the bucket whose bound first covers it.
    i = next(k for k, b in enumerate(BOUNDS) if b >= st["tick_max"])
    assert count_at(st, BOUNDS[i]) == n
    assert count_at(st, BOUNDS[i - 1]) == n - 1
    assert BOUNDS[i - 1] >= 0.05      # 60 ms falls past the 50 ms bound


def test_the_window_keeps_the_last_1024_ticks(sched):
    def long_tick():
        time.sleep(0.06)

    def many_ticks():
        for _ in range(1100):
            fibers.yield_now()

    sched.run(long_tick)
    before = sched.stats()
    assert before["tick_max"] >= 0.06
    sched.run(many_ticks)
    after = sched.stats()
    check_shape(after)
    # The long tick has left the window, not the histogram or the sum.
    assert after["tick_max"] < 0.06
    assert after["tick_sum"] >= 0.06
    assert after["ticks"] - before["ticks"] >= 1100
    long_bound = next(b for b in BOUNDS if b >= before["tick_max"])
    below = BOUNDS[BOUNDS.index(long_bound) - 1]
    assert count_at(after, long_bound) - count_at(after, below) >= 1


def test_the_pump_wait_is_counted_and_not_tick_time(io_sched):
    # A fiber waits for a byte another thread sends 0.2 s later: the run
    # takes that long, in the pump's wait, while the ticks stay short.
    a, b = socket.socketpair()
    sender = threading.Timer(0.2, a.send, (b"x",))

    def main():
        sender.start()
        fibers.wait_readable(b.fileno())
        return b.recv(1)

    try:
        before = io_sched.stats()["pump_waits"]
        t0 = time.monotonic()
        assert io_sched.run(main) == b"x"
        elapsed = time.monotonic() - t0
    finally:
        sender.join()
        a.close()
        b.close()
    st = io_sched.stats()
    check_shape(st)
    assert elapsed >= 0.2
    assert st["pump_waits"] > before
    assert st["tick_sum"] < elapsed - 0.15
    assert st["tick_max"] < 0.05


def test_states_count_the_fibers(sched):
    def main():
        waiters = [fibers.spawn(fibers.wait_signal, "go") for _ in range(3)]
        fibers.yield_now()                  # they run and park
        fresh = [fibers.spawn(fibers.yield_now) for _ in range(2)]
        mine = [*waiters, *fresh]
        st = fibers.Scheduler.current().stats()["states"]
        by_state = collections.Counter(f.state for f in mine)
        assert st == {"ready": 2, "running": 1, "suspended": 3}
        assert (st["ready"], st["suspended"]) == (by_state["ready"],
                                                  by_state["suspended"])
        # Killed before it ever ran: dead at once, though still queued.
        fresh[0].kill()
        assert fresh[0].state == "dead"
        st = fibers.Scheduler.current().stats()["states"]
        assert st == {"ready": 1, "running": 1, "suspended": 3}
        # A parked fiber woken is ready until it runs.
        fibers.signal_one("go")
        st = fibers.Scheduler.current().stats()["states"]
        assert st == {"ready": 2, "running": 1, "suspended": 2}
        return waiters

    waiters = sched.run(main)
    # run() returns once main is done: the woken waiter and the fresh
    # fiber are still queued, and nothing runs.
    assert sched.stats()["states"] == {"ready": 2, "running": 0,
                                       "suspended": 2}
    sched.run()
    assert sched.stats()["states"] == {"ready": 0, "running": 0,
                                       "suspended": 2}
    assert sum(f.state == "suspended" for f in waiters) == 2


def test_the_blocking_pool_threads_and_queue(io_sched, limit, fresh_pool):
    limit(1)
    gate = threading.Event()

    def main():
        jobs = [fibers.spawn(fibers.blocking, gate.wait, 5) for _ in range(3)]
        fibers.yield_now()
        # One thread takes a job; two wait in the queue.
        assert wait_until(lambda: fibers.blocking_stats()["queued"] == 2)
        st = fibers.Scheduler.current().stats()
        pool = fibers.blocking_stats()
        gate.set()
        for j in jobs:
            j.join()
        return st, pool

    st, pool = io_sched.run(main)
    assert st["blocking_queue"] == 2
    assert st["blocking_threads"] == pool["threads"] >= 1
    assert st["blocking_jobs"] == 3
    after = io_sched.stats()
    assert after["blocking_queue"] == 0
