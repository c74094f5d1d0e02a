"""spawn, join, kill, exceptions, nested spawn and the worker pool."""
import gc

import pytest

import fibers


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_spawn_returns_fiber_and_join_gets_result(sched):
    def main():
        f = fibers.spawn(lambda a, b=0: a + b, 2, b=3)
        assert isinstance(f, fibers.Fiber)
        assert f.state == "ready"
        return f.join()
    assert sched.run(main) == 5


def test_spawn_non_callable_raises_at_the_call(sched):
    with pytest.raises(TypeError, match="callable"):
        fibers.spawn(42)
    with pytest.raises(TypeError):
        sched.spawn("nope")


def test_fibers_run_in_spawn_order(sched):
    order = []

    def main():
        fs = [fibers.spawn(order.append, i) for i in range(10)]
        for f in fs:
            f.join()
    sched.run(main)
    assert order == list(range(10))


def test_nested_spawn(sched):
    def leaf(n):
        return n

    def mid(n):
        return sum(fibers.spawn(leaf, n * 10 + i).join() for i in range(3))

    def main():
        return sum(f.join() for f in [fibers.spawn(mid, i) for i in range(3)])
    # sum over i of (30i + 0+1+2) = 30*(0+1+2) + 3*3
    assert sched.run(main) == 99


def test_join_reraises_the_fibers_exception(sched, errlog):
    def boom():
        raise ValueError("bad")

    def main():
        f = fibers.spawn(boom)
        with pytest.raises(ValueError, match="bad"):
            f.join()
        assert f.dead
        assert isinstance(f.exception, ValueError)
        return "ok"
    assert sched.run(main) == "ok"
    assert errlog.records == []  # joined: not logged


def test_unjoined_exception_is_logged_once_and_scheduler_goes_on(sched, errlog):
    after = []

    def boom():
        raise KeyError("lost")

    def main():
        fibers.spawn(boom)
        fibers.sleep(1)
        after.append(True)
    sched.run(main)
    assert after == [True]
    assert len(errlog.records) == 1
    rec = errlog.records[0]
    assert rec.name == "fibers" and rec.exc_info[0] is KeyError


def test_on_fiber_error_gets_what_would_be_logged(sched, errlog):
    seen = []
    sched.on_fiber_error = lambda f, e: seen.append((f.name, e))

    def boom():
        raise KeyError("lost")

    def joined():
        raise ValueError("seen by join")

    def victim():
        fibers.sleep(100)

    def main():
        f = fibers.spawn(boom)
        f.name = "boom"
        j = fibers.spawn(joined)
        with pytest.raises(ValueError):
            j.join()
        v = fibers.spawn(victim)
        fibers.yield_now()
        v.kill()                              # killed: no failure
        k = fibers.spawn(victim)
        fibers.yield_now()
        k.kill(OSError("told to"), block=False)
        fibers.sleep(1)
    sched.run(main)
    assert [(n, type(e), str(e)) for n, e in seen] == \
        [("boom", KeyError, "'lost'")]
    assert errlog.records == []               # the handler, not the log
    assert sched.on_fiber_error is not None
    sched.on_fiber_error = None
    assert sched.on_fiber_error is None


def test_on_fiber_error_that_raises_is_logged_with_the_failure(sched, errlog):
    def handler(f, e):
        raise RuntimeError("handler broke")
    sched.on_fiber_error = handler

    def boom():
        raise KeyError("lost")

    def main():
        fibers.spawn(boom)
        fibers.sleep(1)
        return "went on"
    assert sched.run(main) == "went on"
    assert [r.exc_info[0] for r in errlog.records] == [RuntimeError, KeyError]


def test_on_fiber_error_must_be_callable(sched):
    with pytest.raises(TypeError, match="on_fiber_error must be callable"):
        sched.on_fiber_error = 42


def test_run_reraises_mains_exception(sched):
    def main():
        raise OSError(5, "io")
    with pytest.raises(OSError):
        sched.run(main)


def test_fiber_states(sched):
    seen = {}

    def sleeper():
        seen["inside"] = fibers.current().state
        fibers.sleep(1)

    def main():
        f = fibers.spawn(sleeper)
        seen["before"] = f.state
        fibers.yield_now()
        seen["parked"] = f.state
        f.join()
        seen["after"] = f.state
        assert f.dead
    sched.run(main)
    assert seen == {"before": "ready", "inside": "running",
                    "parked": "suspended", "after": "dead"}


def test_fiber_name(sched):
    def main():
        f = fibers.spawn(lambda: None)
        assert f.name.startswith("Fiber-")
        f.name = "worker"
        assert f.name == "worker" and "worker" in repr(f)
        f.join()
    sched.run(main)


def test_kill_runs_finally_and_join_returns_none(sched):
    events = []

    def victim():
        try:
            fibers.sleep(100)
        finally:
            events.append("finally")

    def main():
        f = fibers.spawn(victim)
        fibers.yield_now()
        f.kill()
        assert f.dead and isinstance(f.exception, fibers.FiberExit)
        assert f.join() is None
        return fibers.now()
    t = sched.run(main)
    assert events == ["finally"]
    assert t == 0.0  # the 100 s sleep was cut short
    assert sched.pending_timers == 0


def test_kill_with_custom_exception_and_nonblocking(sched, errlog):
    def victim():
        fibers.wait_signal("never")

    def main():
        f = fibers.spawn(victim)
        fibers.yield_now()
        f.kill(ValueError("stop"), block=False)
        assert not f.dead
        with pytest.raises(ValueError, match="stop"):
            f.join()
    sched.run(main)
    assert errlog.records == []


def test_kill_before_start_never_runs(sched):
    ran = []

    def main():
        f = fibers.spawn(ran.append, 1)
        f.kill()
        assert f.dead
        fibers.yield_now()
        assert f.join() is None
    sched.run(main)
    assert ran == []


def test_kill_rejects_non_exceptions(sched):
    def main():
        f = fibers.spawn(lambda: None)
        with pytest.raises(TypeError):
            f.kill(42)
    sched.run(main)


def test_kill_self_raises_in_place(sched):
    def me():
        fibers.current().kill()

    def main():
        f = fibers.spawn(me)
        assert f.join() is None
        assert isinstance(f.exception, fibers.FiberExit)
    sched.run(main)


def test_killing_a_dead_fiber_does_nothing(sched):
    def main():
        f = fibers.spawn(lambda: 7)
        assert f.join() == 7
        f.kill()
        assert f.join() == 7
    sched.run(main)


def test_join_self_is_an_error(sched):
    def main():
        with pytest.raises(RuntimeError, match="itself"):
            fibers.current().join()
    sched.run(main)


def test_join_timeout(sched):
    def main():
        f = fibers.spawn(fibers.sleep, 10)
        with pytest.raises(fibers.Timeout):
            f.join(timeout=2)
        assert fibers.now() == 2.0
        assert not f.dead
        f.join()
        assert fibers.now() == 10.0
    sched.run(main)


def test_many_joiners_all_wake(sched):
    def main():
        target = fibers.spawn(fibers.sleep, 1)
        joiners = [fibers.spawn(target.join) for _ in range(5)]
        return [j.join() for j in joiners]
    assert sched.run(main) == [None] * 5


def test_pooled_workers_are_reused(sched):
    def blocker():
        fibers.sleep(1)

    def main():
        for _ in range(5):
            batch = [fibers.spawn(blocker) for _ in range(10)]
            for f in batch:
                f.join()
    sched.run(main)
    st = sched.stats()
    # 50 blocking fibers, at most 10 alive at once: the pool serves the rest.
    assert st["workers_created"] <= 12
    assert st["workers_reused"] >= 38


def test_non_blocking_fibers_share_one_greenlet(sched):
    def main():
        fs = [fibers.spawn(int) for _ in range(200_000)]
        for f in fs:
            f.join()
    sched.run(main)
    st = sched.stats()
    assert st["spawned"] == 200_001
    assert st["workers_created"] <= 2  # main's, and one for all the others


def test_million_spawns_complete_with_bounded_memory(sched):
    done = [0]

    def tick():
        done[0] += 1

    def main():
        for _ in range(100):
            fs = [fibers.spawn(tick) for _ in range(10_000)]
            fs[-1].join()
    gc.collect()
    before = rss_bytes()
    sched.run(main)
    gc.collect()
    grown = rss_bytes() - before
    assert done[0] == 1_000_000
    # A leak of even 100 bytes per fiber would be 100 MB; one batch of 10k
    # fibers alive at a time needs a few MB.
    assert grown < 40 * 1024 * 1024
    assert sched.stats()["workers_created"] <= 2


def test_in_fiber(sched):
    assert fibers.in_fiber() is False
    assert sched.run(fibers.in_fiber) is True
    seen = []
    sched.add_quantum_step(lambda: seen.append(fibers.in_fiber()))
    sched.step()
    assert seen and not any(seen)      # the scheduler's own greenlet
