"""suspend, Fiber.resume and current."""
import pytest

import fibers


def test_suspend_returns_the_resume_value(sched):
    def sleeper():
        return fibers.suspend()

    def main():
        f = fibers.spawn(sleeper)
        fibers.yield_now()
        assert f.state == "suspended"
        f.resume("hello")
        assert f.state == "ready"
        return f.join()
    assert sched.run(main) == "hello"


def test_resume_of_a_fiber_that_is_not_suspended(sched):
    def main():
        f = fibers.spawn(lambda: None)
        with pytest.raises(RuntimeError, match="not suspended"):
            f.resume()
        f.join()
        with pytest.raises(RuntimeError, match="dead"):
            f.resume()
        with pytest.raises(RuntimeError, match="running"):
            fibers.current().resume()
    sched.run(main)


def test_resume_twice_is_an_error(sched):
    def main():
        f = fibers.spawn(fibers.suspend)
        fibers.yield_now()
        f.resume(1)
        with pytest.raises(RuntimeError):
            f.resume(2)
        return f.join()
    assert sched.run(main) == 1


def test_resume_a_fiber_parked_in_sleep_cleans_up_its_timer(sched):
    def main():
        f = fibers.spawn(fibers.sleep, 100)
        fibers.yield_now()
        assert sched.pending_timers == 1
        f.resume()
        f.join()
        assert sched.pending_timers == 0
        return fibers.now()
    assert sched.run(main) == 0.0


def test_suspend_outside_a_fiber_names_the_word():
    with pytest.raises(RuntimeError, match=r"suspend\(\)"):
        fibers.suspend()


def test_current(sched):
    def main():
        me = fibers.current()
        child = fibers.spawn(fibers.current)
        assert child.join() is child
        return me
    f = sched.run(main)
    assert isinstance(f, fibers.Fiber) and f.dead


def test_current_outside_a_fiber():
    with pytest.raises(RuntimeError, match=r"current\(\)"):
        fibers.current()
