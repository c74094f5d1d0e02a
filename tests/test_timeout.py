"""timeout(), move_on_after() and every timeout= argument."""
import pytest

import fibers


def test_timeout_raises_timeout_which_is_a_timeouterror(sched):
    def main():
        with pytest.raises(TimeoutError) as info:
            with fibers.timeout(2):
                fibers.sleep(10)
        assert isinstance(info.value, fibers.Timeout)
        return fibers.now()
    assert sched.run(main) == 2.0
    assert sched.pending_timers == 0


def test_timeout_not_reached_raises_nothing(sched):
    def main():
        with fibers.timeout(5) as scope:
            fibers.sleep(1)
        assert not scope.expired
        fibers.sleep(10)        # the cancelled deadline must not fire later
        return fibers.now()
    assert sched.run(main) == 11.0


def test_move_on_after_swallows(sched):
    def main():
        with fibers.move_on_after(1) as scope:
            fibers.sleep(5)
            raise AssertionError("not reached")
        return scope.expired, fibers.now()
    assert sched.run(main) == (True, 1.0)


def test_nested_timeouts_the_outer_one_wins(sched):
    def main():
        with fibers.move_on_after(1) as outer:
            with fibers.timeout(5):
                fibers.sleep(10)
        return outer.expired, fibers.now()
    assert sched.run(main) == (True, 1.0)


def test_inner_timeout_does_not_trigger_outer(sched):
    def main():
        with fibers.move_on_after(10) as outer:
            with fibers.move_on_after(1) as inner:
                fibers.sleep(5)
            fibers.sleep(1)
        return inner.expired, outer.expired, fibers.now()
    assert sched.run(main) == (True, False, 2.0)


def test_timeout_none_means_no_limit(sched):
    def main():
        with fibers.timeout(None):
            fibers.sleep(100)
        return fibers.now()
    assert sched.run(main) == 100.0


def test_timeout_outside_a_fiber_is_an_error():
    with pytest.raises(RuntimeError, match="inside a fiber"):
        with fibers.timeout(1):
            pass


def test_timeout_bad_values(sched):
    with pytest.raises(ValueError):
        fibers.timeout(-1)


def test_deadline_after_the_wait_completed_is_not_raised_later(sched, clock):
    # The signal wakes the waiter, then the deadline passes in the same tick,
    # before the waiter runs: it keeps the signal's value, and the stale
    # Timeout is dropped when its scope ends instead of leaking out later.
    def waiter():
        with fibers.timeout(1) as scope:
            v = fibers.wait_signal("s")
        for _ in range(3):
            fibers.yield_now()      # checkpoints: nothing pending may fire
        return v, scope.expired

    def signaller():
        clock.advance(1)            # the waiter's deadline is now due
        assert fibers.signal_one("s", "value")

    def main():
        w = fibers.spawn(waiter)
        fibers.yield_now()
        fibers.spawn(signaller)
        return w.join()
    assert sched.run(main) == ("value", False)


def test_timed_out_waiter_is_no_longer_signalled(sched):
    def waiter():
        with pytest.raises(fibers.Timeout):
            fibers.wait_signal("s", timeout=1)
        return fibers.wait_signal("t")

    def main():
        w = fibers.spawn(waiter)
        fibers.sleep(1)
        fibers.yield_now()
        # The timed-out fiber left the queue: nobody waits on "s".
        assert fibers.signal_one("s") is False
        assert fibers.signal_one("t", 5) is True
        return w.join()
    assert sched.run(main) == 5


def test_timeout_argument_of_wait_for(sched):
    def main():
        with pytest.raises(fibers.Timeout):
            fibers.wait_for(lambda: False, timeout=3)
        return fibers.now(), sched.stats()["conditions"]
    t, conds = sched.run(main)
    assert t == 3.0


# Regression: two scopes of one fiber expiring in the same tick.  The
# fiber holds one pending exception, so the inner scope's replaced the
# outer's: with an inner move_on_after, the outer timeout was lost.

def test_same_deadline_outer_timeout_inner_move_on(sched):
    def main():
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(1) as outer:
                with fibers.move_on_after(1):
                    fibers.sleep(5)
                return "lost"
        return outer.expired
    assert sched.run(main) is True


def test_same_deadline_outer_move_on_inner_timeout(sched):
    def main():
        with fibers.move_on_after(1) as outer:
            with fibers.timeout(1):
                fibers.sleep(5)
            return "lost"
        return outer.expired, fibers.now()
    assert sched.run(main) == (True, 1.0)


def test_same_deadline_both_move_on(sched):
    def main():
        with fibers.move_on_after(1) as outer:
            with fibers.move_on_after(1) as inner:
                fibers.sleep(5)
            fibers.sleep(0)
            after = "ran on"
        return outer.expired, inner.expired, after
    r = sched.run(main)
    assert r[0] is True and r[1] is True
