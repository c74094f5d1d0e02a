"""sleep, delay, periodic and Timer.cancel on the virtual clock.

Most tests are fibers (@pytest.mark.fibers, fibers/pytest_plugin.py) on a
fresh scheduler with an autojumping VirtualClock."""
import math

import pytest

import fibers


@pytest.mark.fibers
def test_sleep_advances_virtual_time_exactly():
    fibers.sleep(1.5)
    assert fibers.now() == 1.5
    fibers.sleep(0.25)
    assert fibers.now() == 1.75


@pytest.mark.fibers
def test_sleepers_wake_in_deadline_order():
    woke = []

    def sleeper(t):
        fibers.sleep(t)
        woke.append((t, fibers.now()))

    fs = [fibers.spawn(sleeper, t) for t in (3, 1, 2, 0.5)]
    for f in fs:
        f.join()
    assert woke == [(0.5, 0.5), (1, 1.0), (2, 2.0), (3, 3.0)]


@pytest.mark.fibers
@pytest.mark.parametrize("bad", [-1, -0.001, math.nan])
def test_sleep_rejects_negative_and_nan(bad):
    with pytest.raises(ValueError):
        fibers.sleep(bad)


@pytest.mark.fibers
def test_sleep_rejects_non_numbers():
    with pytest.raises(TypeError):
        fibers.sleep("1")


@pytest.mark.fibers
def test_sleep_zero_yields():
    log = []
    fibers.spawn(log.append, "other")
    fibers.sleep(0)
    log.append("main")
    assert log == ["other", "main"]


@pytest.mark.fibers
def test_delay_fires_once_at_its_time():
    calls = []
    t = fibers.delay(lambda x: calls.append((x, fibers.now())), 2, "a")
    assert t.active and t.deadline == 2.0
    fibers.sleep(5)
    assert not t.active
    assert t.fired == 1
    assert calls == [("a", 2.0)]


@pytest.mark.fibers
def test_equal_deadlines_fire_fifo():
    calls = []
    for i in range(20):
        fibers.delay(calls.append, 1, i)
    fibers.sleep(2)
    assert calls == list(range(20))


@pytest.mark.fibers
def test_cancelled_timer_never_runs_and_heap_shrinks(fibers_scheduler):
    calls = []
    timers = [fibers.delay(calls.append, 1 + i, i) for i in range(100)]
    assert fibers_scheduler.pending_timers == 100
    for t in timers[::2]:
        assert t.cancel() is True
    assert fibers_scheduler.pending_timers == 50
    assert timers[0].cancel() is False      # already cancelled
    fibers.sleep(200)
    assert fibers_scheduler.pending_timers == 0
    assert calls == list(range(1, 100, 2))


@pytest.mark.fibers
def test_cancel_from_the_middle_keeps_heap_order():
    calls = []
    timers = {i: fibers.delay(calls.append, (i * 7919) % 101, i)
              for i in range(101)}
    for i in range(0, 101, 3):
        timers[i].cancel()
    fibers.sleep(200)
    expected = sorted((i for i in range(101) if i % 3),
                      key=lambda i: (i * 7919) % 101)
    assert calls == expected


@pytest.mark.fibers
def test_periodic_does_not_drift_over_1000_ticks():
    stamps = []
    t = fibers.periodic(lambda: stamps.append(fibers.now()), 0.01)
    fibers.wait_for(lambda: len(stamps) >= 1000)
    t.cancel()
    # main wakes the tick after the 1000th call; one more may land first.
    assert 1000 <= len(stamps) <= 1001
    # Each call lands exactly on the start + k*interval grid, in nanoseconds.
    n = len(stamps)
    assert [round(s * 1e9) for s in stamps] == [10_000_000 * k for k in range(1, n + 1)]


def test_periodic_skips_missed_ticks_instead_of_bunching(clock):
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=False))
    vclock = s.clock
    stamps = []
    try:
        def setup():
            return fibers.periodic(lambda: stamps.append(fibers.now()), 1.0)
        t = s.run(setup)
        vclock.advance(1.0)
        s.step(); s.step()
        assert stamps == [1.0]
        vclock.advance(3.5)                      # now 4.5: ticks 2, 3, 4 missed
        s.step(); s.step()
        assert stamps == [1.0, 4.5]              # one call, not three
        assert t.deadline == 5.0                 # back on the grid
        vclock.advance(0.5)
        s.step(); s.step()
        assert stamps == [1.0, 4.5, 5.0]
        t.cancel()
    finally:
        s.close()


def test_periodic_rejects_zero_interval(sched):
    with pytest.raises(ValueError):
        fibers.periodic(lambda: None, 0)


def test_delay_rejects_non_callable(sched):
    with pytest.raises(TypeError):
        fibers.delay(None, 1)


@pytest.mark.fibers
def test_timer_callback_may_block():
    log = []

    def cb():
        fibers.sleep(1)
        log.append(fibers.now())

    fibers.delay(cb, 1)
    fibers.sleep(3)
    assert log == [2.0]


@pytest.mark.fibers(errors="log")
def test_a_raising_timer_function_is_its_own_fibers_business(errlog):
    # delay() and periodic() functions run in fibers of their own: what
    # they raise is logged, the periodic keeps its schedule, and nothing
    # escapes the time step into run().  (errors="log": the plugin would
    # otherwise fail the test with those fibers' exceptions.)
    ticks = []
    calls = []

    def bad():
        calls.append(fibers.now())
        raise RuntimeError("timer fn broke")

    p = fibers.periodic(bad, 1)
    fibers.delay(bad, 2.5)
    for _ in range(4):
        fibers.sleep(1)
        ticks.append(fibers.now())
    p.cancel()
    assert ticks == [1.0, 2.0, 3.0, 4.0]
    assert calls == [1.0, 2.0, 2.5, 3.0, 4.0]
    assert len([r for r in errlog.records
                if r.exc_info and r.exc_info[0] is RuntimeError]) == 5
