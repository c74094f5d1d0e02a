"""Other OS threads and a scheduler: call_threadsafe is the one way in;
stop, signal_one and signal_all go through it; everything else refuses
before it touches anything."""
import threading

import pytest

import fibers
from fibers import net
from iohelp import skip_unless_pump_wait_seen, wait_until_blocked_in_pump

# Hang guard for helper threads, not a timing margin.
LIMIT = 30


def _blocked_in_the_pump(io_sched, body, extra=None):
    """Runs body(sched) in a thread once main is parked with only I/O that
    never completes (a recv on a silent socket) and no timer: the pump then
    waits without limit.  The thread calls only when the kernel shows the
    scheduler's thread asleep in that wait (not merely about to enter it,
    when any wake-up would do), and the test fails if it never is.  If
    nothing wakes the pump by LIMIT seconds, the helper unblocks it by
    sending data, and the test sees that as a failure too."""
    skip_unless_pump_wait_seen()
    woke = threading.Event()
    unseen = []
    fallback = []

    def main():
        a, b = net.socketpair()
        reader = fibers.spawn(b.recv, 1)
        if extra is not None:
            extra()
        tid = threading.get_native_id()

        def thread():
            try:
                wait_until_blocked_in_pump(tid, ("forever",), LIMIT)
            except AssertionError as e:
                unseen.append(str(e))
            body(io_sched)
            if not woke.wait(LIMIT):
                fallback.append(True)
                a.sendall(b"!")             # unblock the pump

        t = threading.Thread(target=thread)
        fibers.yield_now()                  # the reader is parked
        t.start()
        try:
            return fibers.wait_signal("go")
        finally:
            woke.set()
            reader.kill()
            t.join(LIMIT)
            a.close()
            b.close()

    result = io_sched.run(main)
    assert unseen == []
    assert fallback == []
    return result


def test_signal_one_from_a_thread_wakes_the_pump(io_sched):
    returned = []

    def body(s):
        returned.append(s.signal_one("go", 42))

    assert _blocked_in_the_pump(io_sched, body) == 42
    assert returned == [None]       # the count is not known over there


def test_signal_all_from_a_thread_wakes_every_waiter(io_sched):
    got = []

    def body(s):
        assert s.signal_all("go", "v") is None

    def extra():
        fibers.spawn(lambda: got.append(fibers.wait_signal("go")))

    got.append(_blocked_in_the_pump(io_sched, body, extra))
    io_sched.run()              # the other waiter's turn, if main was first
    assert got == ["v", "v"]


def test_call_threadsafe_runs_in_the_scheduler_thread_and_may_block(io_sched):
    seen = []

    def fn(x):
        seen.append(threading.get_ident())
        fibers.sleep(5)                     # a fiber: it may block
        fibers.signal_one("go", x * 2)

    def body(s):
        s.call_threadsafe(fn, 21)

    assert _blocked_in_the_pump(io_sched, body) == 42
    assert seen == [threading.get_ident()]


def test_stop_from_a_thread_ends_a_run_waiting_on_io(io_sched):
    skip_unless_pump_wait_seen()
    done = threading.Event()
    unseen = []
    fallback = []

    def main():
        a, b = net.socketpair()
        tid = threading.get_native_id()

        def thread():
            # main parked in recv, the pump asleep without a limit
            try:
                wait_until_blocked_in_pump(tid, ("forever",), LIMIT)
            except AssertionError as e:
                unseen.append(str(e))
            io_sched.stop()
            if not done.wait(LIMIT):
                fallback.append(True)
                a.sendall(b"!")

        t = threading.Thread(target=thread)
        t.start()
        b.recv(1)
        return "recv returned"

    try:
        assert io_sched.run(main) is None       # stopped, main left parked
    finally:
        done.set()
    assert unseen == []
    assert fallback == []


def test_stop_from_a_thread_leaves_an_idle_scheduler_alone(sched, clock):
    t = threading.Thread(target=sched.stop)
    t.start()
    t.join()
    assert sched.run(lambda: fibers.sleep(1) or "ran") == "ran"


def test_calls_queued_while_not_running_run_at_the_next_run(sched):
    seen = []
    t = threading.Thread(target=sched.call_threadsafe,
                         args=(seen.append, "queued"))
    t.start()
    t.join()
    assert seen == []
    sched.run()
    assert seen == ["queued"]


def test_call_threadsafe_errors(sched):
    with pytest.raises(TypeError):
        sched.call_threadsafe(None)
    s = fibers.Scheduler()
    s.close()
    with pytest.raises(RuntimeError):
        s.call_threadsafe(print)


def test_a_fiber_waiting_for_a_thread_is_no_deadlock(sched):
    # Nothing is pending in the scheduler itself, but another thread holds
    # it and will call in: wait (as asyncio would) instead of Deadlock.
    def main():
        go = threading.Event()

        def thread():
            go.wait(LIMIT)
            sched.signal_one("from thread", "hello")

        t = threading.Thread(target=thread)
        t.start()
        fibers.spawn(go.set)
        try:
            return fibers.wait_signal("from thread")
        finally:
            t.join(LIMIT)

    assert sched.run(main) == "hello"


def test_without_other_threads_it_is_still_a_deadlock(sched):
    def main():
        fibers.wait_signal("nobody")

    with pytest.raises(fibers.Deadlock):
        sched.run(main)


# ---- everything else refuses, before touching any state -------------------

def _state(s, fiber):
    st = s.stats()
    del st["ticks"]
    return (st, fiber.state, fiber.dead, s.pending_timers, s.running,
            len(list(s.quantum_steps())))


def test_every_public_method_from_a_foreign_thread(sched):
    log = []
    fiber = sched.spawn(lambda: log.append(fibers.wait_signal("s")))
    sched.step()                        # the fiber is parked, and live
    sleeper = sched.spawn(fibers.sleep, 10)
    sched.step()
    timer_holder = []

    def make():
        timer_holder.append(fibers.delay(print, 100))
        timer_holder.append(fibers.when(lambda: False, print))
    sched.run(make)
    timer, cond = timer_holder
    before = _state(sched, fiber)

    refused = {
        "Scheduler.run": lambda: sched.run(print),
        "Scheduler.run()": lambda: sched.run(),
        "Scheduler.step": sched.step,
        "Scheduler.spawn": lambda: sched.spawn(print),
        "Scheduler.close": sched.close,
        "Scheduler.fibers": sched.fibers,
        "Scheduler.add_quantum_step": lambda: sched.add_quantum_step(print),
        "Scheduler.on_fiber_error":
            lambda: setattr(sched, "on_fiber_error", print),
        "Scheduler.remove_quantum_step":
            lambda: sched.remove_quantum_step(print),
        "Fiber.join": lambda: fiber.join(),
        "Fiber.kill": lambda: fiber.kill(),
        "Fiber.resume": lambda: fiber.resume(1),
        "Timer.cancel": timer.cancel,
        "Trigger.cancel": cond.cancel,
    }
    # Read-only, answered from anywhere.
    readonly = {
        "Scheduler.now": sched.now,
        "Scheduler.stats": sched.stats,
        "Scheduler.quantum_steps": lambda: list(sched.quantum_steps()),
        "Scheduler.backend": lambda: sched.backend,
        "Scheduler.running": lambda: sched.running,
        "Scheduler.pending_timers": lambda: sched.pending_timers,
        "Scheduler.clock": lambda: sched.clock,
        "Scheduler.on_fiber_error()": lambda: sched.on_fiber_error,
        "Fiber.state": lambda: fiber.state,
        "Fiber.name": lambda: fiber.name,
        "Timer.active": lambda: timer.active,
    }
    outcome = {}

    def foreign():
        for name, call in refused.items():
            try:
                call()
                outcome[name] = "accepted"
            except RuntimeError as e:
                outcome[name] = "refused" if "thread" in str(e) else str(e)
        for name, call in readonly.items():
            try:
                call()
                outcome[name] = "answered"
            except Exception as e:          # noqa: BLE001 - reported below
                outcome[name] = repr(e)

    t = threading.Thread(target=foreign)
    t.start()
    t.join()
    assert {k: v for k, v in outcome.items() if k in refused} == \
        {k: "refused" for k in refused}
    assert {k: v for k, v in outcome.items() if k in readonly} == \
        {k: "answered" for k in readonly}
    # Nothing was touched: same fibers, timers, conditions, steps.
    assert _state(sched, fiber) == before
    assert timer.active and cond.active and not sleeper.dead
    assert sched.on_fiber_error is None     # the foreign set was refused
    # And the scheduler still works: close() from the thread dropped
    # nothing, so the parked fiber is still reachable by its signal.
    def wake():
        assert fibers.signal_one("s", "after") is True
        fibers.yield_now()
    sched.run(wake)
    assert log == ["after"]
    # Every public name of Scheduler and Fiber is in one of the tables
    # (or is thread-safe by design, tested above).
    threadsafe = {"call_threadsafe", "stop", "signal_one", "signal_all",
                  "current"}
    covered = {k.split(".")[1].rstrip("()") for k in {**refused, **readonly}}
    for cls in (fibers.Scheduler, fibers.Fiber):
        names = {n for n in dir(cls) if not n.startswith("_")}
        missing = {n for n in names if n not in covered and
                   n not in threadsafe and
                   not (cls is fibers.Fiber and n in
                        {"dead", "exception", "scheduler"})}
        assert missing == set(), (cls.__name__, missing)


def test_deadlock_once_the_other_threads_are_gone(sched):
    # Waiting for other threads is checked again while it lasts: when the
    # only other thread ends without calling in, it is a Deadlock after
    # all, not a hang.
    def main():
        go = threading.Event()
        t = threading.Thread(target=go.wait, args=(LIMIT,))
        t.start()
        fibers.spawn(go.set)
        try:
            fibers.wait_signal("nobody will")
        finally:
            t.join(LIMIT)

    with pytest.raises(fibers.Deadlock):
        sched.run(main)
