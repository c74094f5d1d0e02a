"""wait_signal, signal_one, signal_all and on_signal."""
import pytest

import fibers


def park_waiters(names):
    """Spawn one waiter per name and let them all park; returns the fibers."""
    fs = [fibers.spawn(fibers.wait_signal, n) for n in names]
    fibers.yield_now()
    return fs


def test_signal_one_wakes_exactly_the_oldest(sched):
    woke = []

    def waiter(i):
        woke.append((i, fibers.wait_signal("go")))

    def main():
        fs = [fibers.spawn(waiter, i) for i in range(4)]
        fibers.yield_now()
        assert fibers.signal_one("go", "first") is True
        fibers.yield_now()
        assert woke == [(0, "first")]
        assert fibers.signal_one("go", "second") is True
        fibers.yield_now()
        assert woke == [(0, "first"), (1, "second")]
        assert fibers.signal_all("go", "rest") == 2
        for f in fs:
            f.join()
    sched.run(main)
    assert woke[2:] == [(2, "rest"), (3, "rest")]


def test_signal_all_counts_and_empties(sched):
    def main():
        fs = park_waiters(["x"] * 7)
        assert fibers.signal_all("x", 1) == 7
        assert fibers.signal_all("x", 1) == 0
        return [f.join() for f in fs]
    assert sched.run(main) == [1] * 7
    assert sched.stats()["signals"] == 0     # no empty queues left behind


def test_signals_are_not_latched(sched):
    def main():
        assert fibers.signal_one("nobody") is False
        assert fibers.signal_all("nobody") == 0
        w = fibers.spawn(fibers.wait_signal, "nobody", timeout=1)
        with pytest.raises(fibers.Timeout):
            w.join()
    sched.run(main)


def test_signalling_never_switches_away(sched):
    log = []

    def waiter():
        fibers.wait_signal("s")
        log.append("waiter")

    def main():
        park_waiters([])
        w = fibers.spawn(waiter)
        fibers.yield_now()
        fibers.signal_all("s")
        log.append("signaller continues")
        w.join()
    sched.run(main)
    assert log == ["signaller continues", "waiter"]


def test_wait_signal_timeout_removes_the_waiter(sched):
    def main():
        fs = park_waiters(["s"] * 3)
        t = fibers.spawn(fibers.wait_signal, "s", timeout=2)
        fibers.sleep(5)
        assert t.dead and isinstance(t.exception, fibers.Timeout)
        # Only the three untimed waiters are left.
        assert fibers.signal_all("s") == 3
        for f in fs:
            f.join()
    sched.run(main)


def test_killed_waiter_leaves_the_queue(sched):
    def main():
        a, b = park_waiters(["s", "s"])
        a.kill()
        assert fibers.signal_one("s", "for b") is True
        assert fibers.signal_one("s") is False
        return b.join()
    assert sched.run(main) == "for b"


def test_on_signal_calls_once(sched):
    got = []

    def main():
        f = fibers.on_signal(got.append, "evt")
        assert isinstance(f, fibers.Fiber)
        fibers.yield_now()
        assert fibers.signal_one("evt", 41) is True
        f.join()
        assert fibers.signal_one("evt", 42) is False
    sched.run(main)
    assert got == [41]


def test_any_hashable_name(sched):
    key = ("conn", 7)

    def main():
        w = fibers.spawn(fibers.wait_signal, key)
        fibers.yield_now()
        assert fibers.signal_one(key, "v")
        return w.join()
    assert sched.run(main) == "v"


def test_on_signal_refuses_an_unhashable_name_at_the_call(sched):
    def main():
        with pytest.raises(TypeError, match="hashable"):
            fibers.on_signal(lambda v: None, [])
        return sched.stats()["spawned"]
    assert sched.run(main) == 1         # main alone: nothing was spawned
