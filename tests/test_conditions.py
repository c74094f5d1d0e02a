"""wait_for, when and whenever."""
import pytest

import fibers


def test_wait_for_returns_at_once_when_true(sched):
    def main():
        t = sched.stats()["ticks"]
        fibers.wait_for(lambda: True)
        return sched.stats()["ticks"] - t
    assert sched.run(main) == 0


def test_wait_for_blocks_until_true(sched):
    state = {"n": 0}

    def counter():
        for _ in range(5):
            fibers.sleep(1)
            state["n"] += 1

    def main():
        fibers.spawn(counter)
        fibers.wait_for(lambda: state["n"] >= 3)
        return state["n"], fibers.now()
    assert sched.run(main) == (3, 3.0)


def test_wait_for_predicate_error_is_raised_in_the_waiter(sched):
    calls = [0]

    def pred():
        calls[0] += 1
        if calls[0] > 1:
            raise ZeroDivisionError("pred")
        return False

    def main():
        with pytest.raises(ZeroDivisionError):
            fibers.wait_for(pred)
        return sched.stats()["conditions"]
    assert sched.run(main) == 0


def test_wait_for_rejects_non_callable(sched):
    def main():
        with pytest.raises(TypeError):
            fibers.wait_for(True)
    sched.run(main)


def test_when_fires_once(sched):
    state = {"n": 0}
    fired = []

    def main():
        c = fibers.when(lambda: state["n"] >= 2, lambda: fired.append(fibers.now()))
        for _ in range(5):
            fibers.sleep(1)
            state["n"] += 1
        assert not c.active
    sched.run(main)
    assert fired == [2.0]


def test_whenever_fires_every_tick_the_predicate_holds(sched):
    window = {"open": False}
    count = [0]

    def main():
        c = fibers.whenever(lambda: window["open"], lambda: count.__setitem__(0, count[0] + 1))
        fibers.yield_now()
        fibers.yield_now()
        assert count[0] == 0
        window["open"] = True
        for _ in range(10):
            fibers.yield_now()
        window["open"] = False
        seen = count[0]
        for _ in range(5):
            fibers.yield_now()
        assert count[0] - seen <= 1     # at most the call already spawned
        assert c.cancel() is True
        assert c.cancel() is False
        return seen
    seen = sched.run(main)
    assert 9 <= seen <= 11


def test_cancelled_when_never_fires(sched):
    fired = []

    def main():
        c = fibers.when(lambda: True, lambda: fired.append(1))
        c.cancel()
        fibers.sleep(1)
    sched.run(main)
    assert fired == []


def test_no_conditions_no_polling(sched):
    calls = [0]

    def pred():
        calls[0] += 1
        return calls[0] >= 3

    def main():
        fibers.wait_for(pred)
        before = calls[0]
        for _ in range(10):
            fibers.yield_now()
        return before, calls[0]
    before, after = sched.run(main)
    assert before == after == 3
    assert sched.stats()["conditions"] == 0


def test_when_predicate_error_is_logged_and_cancels(sched, errlog):
    def bad():
        raise RuntimeError("pred broke")

    def main():
        c = fibers.when(bad, lambda: None)
        fibers.yield_now()
        fibers.yield_now()
        return c.active
    assert sched.run(main) is False
    assert len(errlog.records) == 1


@pytest.mark.parametrize("word", ["when", "whenever"])
@pytest.mark.parametrize("fn", [None, 5, "f"])
def test_when_and_whenever_refuse_a_non_callable_at_the_call(sched, word, fn):
    # Accepted, it was spawned when the predicate came true, and the
    # TypeError escaped the conditions step and ended run() for everyone.
    def main():
        with pytest.raises(TypeError, match="callable"):
            getattr(fibers, word)(lambda: True, fn)
        fibers.yield_now()
        return sched.stats()["conditions"]
    assert sched.run(main) == 0


class BadBool:
    def __bool__(self):
        raise ValueError("truth value is ambiguous")


class NotAnError(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


@pytest.mark.parametrize("pred", [lambda: BadBool(),
                                  lambda: (_ for _ in ()).throw(NotAnError)],
                         ids=["bad-bool", "base-exception"])
def test_a_failing_predicate_is_its_conditions_business_only(sched, errlog,
                                                             pred):
    # A predicate whose result has no truth value, or that raises a
    # BaseException, must not end run() for the other fibers: when() and
    # whenever() log it, wait_for() raises it in its waiter.
    ticks = []

    def ticker():
        for _ in range(5):
            fibers.sleep(1)
            ticks.append(fibers.now())

    def waiter():
        try:
            fibers.wait_for(pred)
        except BaseException as e:     # noqa: B036 - what we check for
            return type(e)

    def main():
        t = fibers.spawn(ticker)
        w = fibers.spawn(waiter)
        c1 = fibers.when(pred, lambda: None)
        c2 = fibers.whenever(pred, lambda: None)
        t.join()
        return w.join(), c1.active, c2.active
    got, a1, a2 = sched.run(main)
    assert ticks == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert got in (ValueError, NotAnError)
    assert (a1, a2) == (False, False)
    assert len([r for r in errlog.records if "predicate" in r.getMessage()]) == 2
