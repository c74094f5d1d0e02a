"""The end of time: a clock's range is finite (VirtualClock.MAX_TIME,
2**62 ns).  Past it, starts are refused, advances and deadlines saturate,
and time never wraps round and runs backwards."""
import math

import pytest

import fibers
from iohelp import warm_up

MAX = fibers.VirtualClock.MAX_TIME


def near(x):
    # Times up there are floats of int64 nanoseconds: equal to well within
    # a microsecond.
    return pytest.approx(x, abs=1e-3, rel=0)


def test_time_ends_at_2_to_the_62_ns_where_max_time_says():
    # Where a clock really stops, found by running into it: 2**62 ns
    # (about 146 years), as documented, and MAX_TIME reports that instant.
    c = fibers.VirtualClock()
    c.advance(1e12)
    end = c.now()
    assert end == 2 ** 62 / 1e9
    assert end / (365.25 * 86400) == pytest.approx(146.1, abs=0.1)
    assert MAX == end
    # The last start allowed is the float just below the end; the end
    # itself is refused.
    last = math.nextafter(end, 0)
    assert fibers.VirtualClock(start=last).now() == last
    with pytest.raises(OverflowError, match="range"):
        fibers.VirtualClock(start=end)


def test_advance_saturates_and_never_runs_backwards():
    c = fibers.VirtualClock()
    c.advance(1e10)
    assert c.now() == MAX
    c.advance(1e10)
    assert c.now() == MAX
    c.advance(math.inf)
    assert c.now() == MAX
    c = fibers.VirtualClock()
    c.advance(4.2e9)                    # exact below the end, not "forever"
    assert c.now() == 4.2e9


def test_start_past_the_end_is_refused_not_clamped():
    with pytest.raises(OverflowError, match="range"):
        fibers.VirtualClock(start=5e9)
    with pytest.raises(OverflowError):
        fibers.VirtualClock(start=math.inf)
    assert fibers.VirtualClock(start=4.2e9).now() == 4.2e9
    with pytest.raises(ValueError):
        fibers.VirtualClock(start=math.nan)


def sched_near_the_end(before_end, backend=None):
    c = fibers.VirtualClock(start=MAX - before_end, autojump=True)
    return fibers.Scheduler(clock=c, backend=backend)


@pytest.mark.parametrize("forever", [math.inf, 1e12])
def test_sleep_forever_outlives_the_end_of_time(forever, backend):
    # Regression: sleep(math.inf) was a timer at the end of the clock's
    # range, so an autojumping clock jumped there and the sleep returned.
    s = sched_near_the_end(100, backend)
    woke = []

    def sleeper():
        fibers.sleep(forever)
        woke.append(fibers.now())

    def main():
        warm_up()                       # the pump is open: its waker too
        f = fibers.spawn(sleeper)
        fibers.sleep(200)               # saturates: wakes at the end
        assert fibers.now() == MAX
        state = f.state
        f.kill()
        return state, f.exception
    try:
        state, exc = s.run(main)
        assert state == "suspended"
        assert isinstance(exc, fibers.FiberExit)
        assert woke == []
    finally:
        s.close()


def test_sleep_forever_alone_is_a_deadlock_not_the_end_of_time(backend):
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)

    def main():
        warm_up()                       # the pump is open: its waker too
        fibers.sleep(math.inf)
    try:
        with pytest.raises(fibers.Deadlock):
            s.run(main)
        assert s.now() == 0.0           # no jump to the end of time
    finally:
        s.close()


def test_sleep_forever_ends_when_resumed():
    s = sched_near_the_end(100)

    def main():
        me = fibers.current()
        fibers.delay(me.resume, 5)
        fibers.sleep(math.inf)
        return fibers.now()
    try:
        assert s.run(main) == near(MAX - 95)
    finally:
        s.close()


def test_a_timeout_scope_near_the_end_does_not_fire_at_once():
    s = sched_near_the_end(100)

    def main():
        with fibers.timeout(1e12):
            fibers.sleep(10)
        return fibers.now()
    try:
        assert s.run(main) == near(MAX - 90)
    finally:
        s.close()


def test_delay_near_the_end_fires_at_the_end():
    s = sched_near_the_end(100)
    fired = []

    def main():
        t = fibers.delay(lambda: fired.append(fibers.now()), math.inf)
        assert t.deadline == MAX
        fibers.sleep(50)
        assert fired == []
        fibers.wait_for(lambda: fired)
    try:
        s.run(main)
        assert fired == [MAX]
    finally:
        s.close()


def test_periodic_ends_when_its_next_tick_is_past_the_end():
    s = sched_near_the_end(100)
    fired = []

    def main():
        t = fibers.periodic(lambda: fired.append(fibers.now()), 40)
        fibers.sleep(200)               # saturates: wakes at the end
        return t, fibers.now()
    try:
        t, end = s.run(main)
        assert end == MAX
        assert fired == [near(MAX - 60), near(MAX - 20)]
        assert not t.active
        assert s.pending_timers == 0
    finally:
        s.close()


def test_a_custom_clock_out_of_range_is_refused():
    class Far:
        def __init__(self, t):
            self.t = t

        def now(self):
            return self.t

    for t in (1e300, math.inf, -math.inf, math.nan):
        with pytest.raises(OverflowError, match="now()"):
            fibers.Scheduler(clock=Far(t))
    s = fibers.Scheduler(clock=Far(4e9))
    assert s.now() == 4e9
    s.close()
