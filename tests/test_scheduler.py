"""run, stop, step, quantum steps, threads, close, and words used outside
fibers."""
import threading

import pytest

import fibers


def test_run_without_main_stops_when_nothing_is_left(sched):
    log = []
    sched.spawn(lambda: (fibers.sleep(3), log.append(fibers.now())))
    fibers.delay  # noqa: B018 - the module word works on sched while it runs
    assert sched.run() is None
    assert log == [3.0]
    assert sched.run() is None   # nothing at all: returns at once


def test_run_with_args(sched):
    assert sched.run(lambda a, b: a * b, 6, 7) == 42


def test_stop_returns_from_run(sched):
    ticks = []

    def ticker():
        for i in range(100):
            ticks.append(i)
            if i == 4:
                fibers.stop()
            fibers.sleep(1)
    sched.spawn(ticker)
    sched.run()
    assert ticks == [0, 1, 2, 3, 4]
    sched.run()                     # a later run() resumes where it stopped
    assert ticks == list(range(100))


def test_step_runs_exactly_one_tick():
    clock = fibers.VirtualClock()
    s = fibers.Scheduler(clock=clock)
    log = []

    def w():
        for i in range(3):
            log.append(i)
            fibers.yield_now()
    s.spawn(w)
    assert s.step() is True and log == [0]
    assert s.step() is True and log == [0, 1]
    assert s.step() is True and log == [0, 1, 2]
    assert s.step() is False
    s.close()


def test_step_drives_timers_from_a_foreign_loop():
    clock = fibers.VirtualClock()
    s = fibers.Scheduler(clock=clock)
    fired = []
    s.spawn(lambda: fibers.delay(fired.append, 5, "x"))
    s.step()
    for _ in range(4):
        clock.advance(1)
        s.step()
    assert fired == []
    clock.advance(1)
    s.step()                         # fires the timer, spawning the call
    s.step()                         # runs the call
    assert fired == ["x"]
    s.close()


def test_run_inside_a_fiber_is_an_error(sched):
    def main():
        with pytest.raises(RuntimeError, match="already running"):
            sched.run()
        with pytest.raises(RuntimeError, match="already running"):
            sched.step()
    sched.run(main)


def test_quantum_step_called_once_per_tick(sched):
    calls = []
    step = lambda: calls.append(sched.stats()["ticks"])  # noqa: E731
    sched.add_quantum_step(step)

    def main():
        for _ in range(5):
            fibers.yield_now()
    sched.run(main)
    assert calls == sorted(set(calls))          # once per tick, in order
    assert len(calls) == sched.stats()["ticks"]
    sched.remove_quantum_step(step)
    with pytest.raises(ValueError):
        sched.remove_quantum_step(step)
    with pytest.raises(TypeError):
        sched.add_quantum_step(3)


def test_builtin_steps_are_listed_and_cannot_be_removed(sched):
    steps = list(sched.quantum_steps())
    assert [repr(s) for s in steps] == ["<quantum step 'conditions'>",
                                        "<quantum step 'io'>",
                                        "<quantum step 'time'>"]
    with pytest.raises(ValueError):
        sched.remove_quantum_step(steps[0])


def test_raising_quantum_step_is_logged_not_fatal(sched, errlog):
    def bad():
        raise ValueError("step")
    sched.add_quantum_step(bad)
    assert sched.run(lambda: (fibers.yield_now(), "done")[1]) == "done"
    assert errlog.records and errlog.records[0].exc_info[0] is ValueError


def test_subclass_can_replace_the_step_iterator(clock):
    seen = []

    class Reversed(fibers.Scheduler):
        def quantum_steps(self):
            seen.append(1)
            return reversed(list(super().quantum_steps()))

    s = Reversed(clock=clock)
    assert s.run(lambda: (fibers.sleep(2), fibers.now())[1]) == 2.0
    assert seen                         # the loop consumed our iterator
    s.close()


def test_blocking_words_outside_fibers_drive_the_scheduler():
    s = fibers.Scheduler.current()
    log = []
    f = s.spawn(lambda: (fibers.sleep(0.01), log.append("bg"), 7)[-1])
    fibers.sleep(0.02)                  # runs the scheduler meanwhile
    assert log == ["bg"]
    assert f.join() == 7
    w = fibers.spawn(fibers.wait_signal, "x")
    fibers.spawn(fibers.signal_one, "x", "late")
    assert w.join() == "late"
    assert fibers.wait_for(lambda: True) is None


def test_deadlock_is_reported_not_hung(sched):
    def main():
        fibers.wait_signal("nobody will send this")
    with pytest.raises(fibers.Deadlock):
        sched.run(main)


def test_added_step_with_pending_work_keeps_run_alive(sched):
    class Poller:
        """A toy I/O step: wakes its waiter after three ticks."""

        def __init__(self):
            self.waiter = None
            self.countdown = 3

        def __call__(self):
            if self.waiter is not None:
                self.countdown -= 1
                if self.countdown == 0:
                    self.waiter.resume("io done")
                    self.waiter = None

        def pending(self):
            return self.waiter is not None

    poller = Poller()
    sched.add_quantum_step(poller)

    def main():
        poller.waiter = fibers.current()
        return fibers.suspend()
    assert sched.run(main) == "io done"


def test_deadlock_outside_a_fiber():
    with pytest.raises(fibers.Deadlock):
        fibers.wait_signal("never sent")


def test_blocking_in_a_quantum_step_is_an_error(sched, errlog):
    def blocking_step():
        fibers.sleep(1)
    sched.add_quantum_step(blocking_step)
    sched.run(lambda: fibers.yield_now())
    assert errlog.records
    assert "cannot block here" in str(errlog.records[0].exc_info[1])


def test_two_schedulers_in_two_threads_at_once():
    barrier = threading.Barrier(2, timeout=30)
    results = {}

    def thread_main(name):
        s = fibers.Scheduler.current()
        assert fibers.Scheduler.current() is s

        def main():
            log = []
            fs = [fibers.spawn(lambda i=i: log.append(i)) for i in range(100)]
            for f in fs:
                f.join()
            # Both threads' schedulers must be inside run() together to pass.
            barrier.wait()
            fibers.sleep(0.01)
            return len(log), fibers.Scheduler.current()
        n, cur = s.run(main)
        results[name] = (n, cur is s, id(s))

    ts = [threading.Thread(target=thread_main, args=(n,)) for n in "ab"]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert results["a"][:2] == (100, True)
    assert results["b"][:2] == (100, True)
    assert results["a"][2] != results["b"][2]


def test_scheduler_is_bound_to_its_thread():
    s = fibers.Scheduler()
    errors = []

    def other():
        try:
            s.run(lambda: None)
        except RuntimeError as e:
            errors.append(str(e))
    t = threading.Thread(target=other)
    t.start()
    t.join(30)
    assert errors and "thread" in errors[0]
    s.close()


def test_close_kills_live_fibers_and_runs_finally(clock):
    s = fibers.Scheduler(clock=clock)
    log = []

    def sleeper():
        try:
            fibers.sleep(1000)
        finally:
            log.append("sleeper finally")

    def waiter():
        try:
            fibers.wait_signal("x")
        finally:
            log.append("waiter finally")

    def main():
        fibers.spawn(sleeper)
        fibers.spawn(waiter)
        fibers.yield_now()
        fibers.stop()
    s.run(main)
    never = s.spawn(log.append, "never ran")
    s.close()
    assert sorted(log) == ["sleeper finally", "waiter finally"]
    assert never.dead
    assert s.pending_timers == 0 and s.stats()["live"] == 0
    with pytest.raises(RuntimeError, match="closed"):
        s.spawn(print)
    s.close()                           # idempotent


def test_keyboard_interrupt_in_a_fiber_reaches_run(sched):
    def bad():
        raise KeyboardInterrupt

    def main():
        fibers.spawn(bad)
        fibers.sleep(10)
    with pytest.raises(KeyboardInterrupt):
        sched.run(main)


def test_custom_clock_object():
    class Clock:
        t = 100.0

        def now(self):
            return self.t

    s = fibers.Scheduler(clock=Clock())
    assert s.now() == 100.0
    with pytest.raises(TypeError):
        fibers.Scheduler(clock=object())
    s.close()


def test_scheduler_current_is_per_thread():
    here = fibers.Scheduler.current()
    there = []
    t = threading.Thread(target=lambda: there.append(fibers.Scheduler.current()))
    t.start()
    t.join(30)
    assert there and there[0] is not here


@pytest.mark.parametrize("value", ["8", 1.5, None])
def test_pool_size_must_be_an_int(value):
    with pytest.raises(TypeError, match="pool_size"):
        fibers.Scheduler(pool_size=value)
    with pytest.raises(ValueError, match="pool_size"):
        fibers.Scheduler(pool_size=-1)
