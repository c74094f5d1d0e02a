"""timeout(), move_on_after() and every timeout= argument.

The tests are fibers themselves (@pytest.mark.fibers, the plugin in
fibers/pytest_plugin.py): each runs on a fresh scheduler with an
autojumping VirtualClock, so fibers.now() reads exact virtual times."""
import pytest

import fibers


@pytest.mark.fibers
def test_timeout_raises_timeout_which_is_a_timeouterror(fibers_scheduler):
    with pytest.raises(TimeoutError) as info:
        with fibers.timeout(2):
            fibers.sleep(10)
    assert isinstance(info.value, fibers.Timeout)
    assert fibers.now() == 2.0
    assert fibers_scheduler.pending_timers == 0


@pytest.mark.fibers
def test_timeout_not_reached_raises_nothing():
    with fibers.timeout(5) as scope:
        fibers.sleep(1)
    assert not scope.expired
    fibers.sleep(10)        # the cancelled deadline must not fire later
    assert fibers.now() == 11.0


@pytest.mark.fibers
def test_move_on_after_swallows():
    with fibers.move_on_after(1) as scope:
        fibers.sleep(5)
        raise AssertionError("not reached")
    assert (scope.expired, fibers.now()) == (True, 1.0)


@pytest.mark.fibers
def test_nested_timeouts_the_outer_one_wins():
    with fibers.move_on_after(1) as outer:
        with fibers.timeout(5):
            fibers.sleep(10)
    assert (outer.expired, fibers.now()) == (True, 1.0)


@pytest.mark.fibers
def test_inner_timeout_does_not_trigger_outer():
    with fibers.move_on_after(10) as outer:
        with fibers.move_on_after(1) as inner:
            fibers.sleep(5)
        fibers.sleep(1)
    assert (inner.expired, outer.expired, fibers.now()) == (True, False, 2.0)


@pytest.mark.fibers
def test_timeout_none_means_no_limit():
    with fibers.timeout(None):
        fibers.sleep(100)
    assert fibers.now() == 100.0


def test_timeout_outside_a_fiber_is_an_error():
    with pytest.raises(RuntimeError, match="inside a fiber"):
        with fibers.timeout(1):
            pass


def test_timeout_bad_values(sched):
    with pytest.raises(ValueError):
        fibers.timeout(-1)


@pytest.mark.fibers
def test_deadline_after_the_wait_completed_is_not_raised_later(fibers_clock):
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
        fibers_clock.advance(1)     # the waiter's deadline is now due
        assert fibers.signal_one("s", "value")

    w = fibers.spawn(waiter)
    fibers.yield_now()
    s = fibers.spawn(signaller)
    assert w.join() == ("value", False)
    s.join()


@pytest.mark.fibers
def test_timed_out_waiter_is_no_longer_signalled():
    def waiter():
        with pytest.raises(fibers.Timeout):
            fibers.wait_signal("s", timeout=1)
        return fibers.wait_signal("t")

    w = fibers.spawn(waiter)
    fibers.sleep(1)
    fibers.yield_now()
    # The timed-out fiber left the queue: nobody waits on "s".
    assert fibers.signal_one("s") is False
    assert fibers.signal_one("t", 5) is True
    assert w.join() == 5


@pytest.mark.fibers
def test_timeout_argument_of_wait_for():
    with pytest.raises(fibers.Timeout):
        fibers.wait_for(lambda: False, timeout=3)
    assert fibers.now() == 3.0


# Regression: two scopes of one fiber expiring in the same tick.  The
# fiber holds one pending exception, so the inner scope's replaced the
# outer's: with an inner move_on_after, the outer timeout was lost.

@pytest.mark.fibers
def test_same_deadline_outer_timeout_inner_move_on():
    with pytest.raises(fibers.Timeout):
        with fibers.timeout(1) as outer:
            with fibers.move_on_after(1):
                fibers.sleep(5)
            # leaving the scope raises the outer Timeout (the bug lost it)
    assert outer.expired is True


@pytest.mark.fibers
def test_same_deadline_outer_move_on_inner_timeout():
    with fibers.move_on_after(1) as outer:
        with fibers.timeout(1):
            fibers.sleep(5)
        raise AssertionError("lost")
    assert (outer.expired, fibers.now()) == (True, 1.0)


@pytest.mark.fibers
def test_same_deadline_both_move_on():
    with fibers.move_on_after(1) as outer:
        with fibers.move_on_after(1) as inner:
            fibers.sleep(5)
        fibers.sleep(0)
    assert outer.expired is True and inner.expired is True
