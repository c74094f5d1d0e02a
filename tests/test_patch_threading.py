"""fibers.patch()'s threading and queue parts: threading.Lock, RLock and
queue.SimpleQueue (and so Condition, Event, Semaphore, queue.Queue, which
the stdlib builds on them) suspend only the calling fiber inside one, and
stay real thread locks everywhere else.  On both pump backends.

Fibers-only waits run on the virtual clock (exact times).  Where a real
thread takes part, the scheduler runs on the real clock and the tests
synchronise on events; a real-clock timeout is only asserted to happen."""
import _thread
import queue
import threading
import time

import pytest

import fibers
from fibers import patching

PEER_WAIT = 30          # seconds a real thread waits for its peer at most


@pytest.fixture
def patched():
    with fibers.patched(threading=True, queue=True):
        yield
    assert not patching.is_patched()


def _until(pred, what, limit=1000):
    # Yield until pred() holds; bounded in count.
    for _ in range(limit):
        if pred():
            return
        fibers.yield_now()
    raise AssertionError(f"never happened: {what}")


def _held_real():
    lk = _thread.allocate_lock()
    lk.acquire()
    return lk


def _real_wait(lock):
    # Blocks the thread until the peer signals, bounded in time.
    assert lock.acquire(True, PEER_WAIT), "the peer never signalled"


@pytest.fixture
def real_sched(backend):
    # Real clock: a real thread's release must not race an autojump.
    s = fibers.Scheduler(backend=backend)
    yield s
    s.close()


def test_the_names_are_replaced_and_restored():
    def names():
        return (threading.Lock, threading._allocate_lock, threading.RLock,
                threading._time, queue.SimpleQueue, queue.time)

    before = names()
    with fibers.patched(threading=True, queue=True):
        now = names()
        assert not any(a is b for a, b in zip(now, before))
        assert threading._allocate_lock is threading.Lock
        # A real lock made before the patch is still "a threading.Lock".
        assert isinstance(_thread.allocate_lock(), threading.Lock)
    after = names()
    assert all(a is b for a, b in zip(after, before))


def test_contended_lock_parks_only_the_fiber(io_sched, patched):
    log = []
    lk = threading.Lock()

    def holder():
        with lk:
            log.append(("a in", fibers.now()))
            fibers.sleep(2)
            log.append(("a out", fibers.now()))

    def waiter():
        with lk:
            log.append(("b in", fibers.now()))

    def other():
        log.append(("c ran", fibers.now()))

    def main():
        fs = [fibers.spawn(f) for f in (holder, waiter, other)]
        for f in fs:
            f.join()

    io_sched.run(main)
    assert log == [("a in", 0.0), ("c ran", 0.0), ("a out", 2.0),
                   ("b in", 2.0)]


def test_acquire_timeouts_and_nonblocking_on_the_virtual_clock(
        io_sched, patched):
    lk = threading.Lock()
    got = []

    def main():
        lk.acquire()
        got.append(lk.acquire(False))
        got.append(lk.acquire(timeout=0))
        got.append((lk.acquire(timeout=1.5), fibers.now()))
        f = fibers.spawn(lambda: got.append((lk.acquire(timeout=10),
                                             fibers.now())))
        fibers.sleep(3)
        lk.release()
        f.join()
        lk.release()
        with pytest.raises(RuntimeError):
            lk.release()
        with pytest.raises(ValueError):
            lk.acquire(False, 1)
        with pytest.raises(ValueError):
            lk.acquire(timeout=-2)

    io_sched.run(main)
    assert got == [False, False, (False, 1.5), (True, 4.5)]


def test_a_real_thread_holds_the_lock_while_fibers_run(real_sched, patched):
    lk = threading.Lock()
    held = threading.Event()
    release = threading.Event()
    log = []

    def thread_body():
        with lk:
            held.set()
            release.wait(PEER_WAIT)

    def waiter():
        with lk:
            log.append("fiber has it")

    def ticker():
        # Runs while the waiter is parked on the thread's lock, then lets
        # the thread go: only possible if the waiter froze nothing.
        for i in range(3):
            fibers.sleep(0.001)
            log.append(f"tick {i}")
        release.set()

    def main():
        t = threading.Thread(target=thread_body)
        t.start()
        assert held.wait(PEER_WAIT)         # outside: the stdlib's Event
        w = fibers.spawn(waiter)
        k = fibers.spawn(ticker)
        w.join()
        k.join()
        t.join(PEER_WAIT)
        assert not t.is_alive()

    real_sched.run(main)
    assert log == ["tick 0", "tick 1", "tick 2", "fiber has it"]


def test_a_fiber_holds_the_lock_a_real_thread_waits(real_sched, patched):
    lk = threading.Lock()
    got = []

    def thread_body():
        # Outside any fiber: the real lock's blocking acquire.
        got.append(lk.acquire(timeout=PEER_WAIT))
        lk.release()

    def main():
        lk.acquire()
        t = threading.Thread(target=thread_body)
        t.start()
        fibers.sleep(0.01)
        assert got == []
        lk.release()
        t.join(PEER_WAIT)
        # With a real thread holding it, a fiber's timed acquire times out.
        lk2 = threading.Lock()
        hold = threading.Event()
        done = threading.Event()
        h = threading.Thread(target=lambda: (lk2.acquire(), hold.set(),
                                             done.wait(PEER_WAIT),
                                             lk2.release()))
        h.start()
        assert hold.wait(PEER_WAIT)
        got.append(lk2.acquire(timeout=0.01))
        done.set()
        h.join(PEER_WAIT)

    real_sched.run(main)
    assert got == [True, False]


def test_rlock_recursion_and_one_owner_per_fiber(io_sched, patched):
    rl = threading.RLock()
    log = []

    def first():
        with rl:
            with rl:                    # recursion: no wait
                log.append(("first in twice", fibers.now()))
                fibers.sleep(1)
        log.append(("first out", fibers.now()))

    def second():
        # Same thread, another fiber: another owner, so it waits.
        with pytest.raises(RuntimeError):
            rl.release()
        with rl:
            log.append(("second in", fibers.now()))

    def main():
        a = fibers.spawn(first)
        b = fibers.spawn(second)
        a.join()
        b.join()
        assert not rl.locked()

    io_sched.run(main)
    assert log == [("first in twice", 0.0), ("first out", 1.0),
                   ("second in", 1.0)]


def test_condition_event_and_semaphore_in_fibers(io_sched, patched):
    cond = threading.Condition()
    ev = threading.Event()
    sem = threading.Semaphore(1)
    log = []

    def waiter():
        with cond:
            log.append(("cond", cond.wait(timeout=5), fibers.now()))
        log.append(("event", ev.wait(), fibers.now()))

    def main():
        w = fibers.spawn(waiter)
        fibers.sleep(1)
        with cond:
            cond.notify()
        fibers.sleep(1)
        ev.set()
        w.join()
        with cond:
            log.append(("cond timeout", cond.wait(timeout=2), fibers.now()))
        # Semaphore's timeout loop reads threading._time: the patch makes
        # it the scheduler's clock inside a fiber.
        sem.acquire()
        log.append(("sem timeout", sem.acquire(timeout=1), fibers.now()))
        s = fibers.spawn(lambda: (sem.acquire(),
                                  log.append(("sem", fibers.now()))))
        fibers.sleep(1)
        sem.release()
        s.join()

    io_sched.run(main)
    assert log == [("cond", True, 1.0), ("event", True, 2.0),
                   ("cond timeout", False, 4.0), ("sem timeout", False, 5.0),
                   ("sem", 6.0)]


def test_queue_between_fibers_and_from_a_thread(real_sched, patched):
    q = queue.Queue(maxsize=2)
    got = []

    def consumer():
        for _ in range(10):
            got.append(q.get())
            q.task_done()

    def producer():
        for i in range(5):
            q.put(i)                    # waits when full: a fiber wait

    def thread_body():
        for i in range(5, 10):
            q.put(i)

    def main():
        c = fibers.spawn(consumer)
        p = fibers.spawn(producer)
        p.join()
        t = threading.Thread(target=thread_body)
        t.start()
        c.join()
        t.join(PEER_WAIT)
        q.join()

    real_sched.run(main)
    assert got == list(range(10))


def test_simple_queue_in_fibers(io_sched, patched):
    sq = queue.SimpleQueue()
    log = []

    def getter():
        log.append((sq.get(), fibers.now()))
        with pytest.raises(queue.Empty):
            sq.get(timeout=1)
        log.append(("empty", fibers.now()))

    def main():
        g = fibers.spawn(getter)
        fibers.sleep(2)
        sq.put("x")
        g.join()
        with pytest.raises(queue.Empty):
            sq.get(False)

    io_sched.run(main)
    assert log == [("x", 2.0), ("empty", 3.0)]


def test_simple_queue_put_from_a_thread_wakes_the_fiber(real_sched,
                                                        patched):
    sq = queue.SimpleQueue()

    def main():
        t = threading.Thread(target=lambda: [sq.put(i) for i in range(100)])
        t.start()
        out = [sq.get(timeout=PEER_WAIT) for _ in range(100)]
        t.join(PEER_WAIT)
        return out

    assert real_sched.run(main) == list(range(100))


def test_a_killed_waiter_does_not_keep_the_others_waiting(io_sched,
                                                          patched):
    lk = threading.Lock()
    log = []

    def waiter(name):
        with lk:
            log.append((name, fibers.now()))

    def main():
        lk.acquire()
        a = fibers.spawn(waiter, "a")
        b = fibers.spawn(waiter, "b")
        fibers.sleep(1)
        a.kill()
        fibers.sleep(1)
        lk.release()
        b.join()
        assert lk._fiber_waiters == 0

    io_sched.run(main)
    assert log == [("b", 2.0)]


def test_threads_start_and_join_while_patched(real_sched, patched):
    out = []

    def body(i):
        out.append(i)

    # From outside a fiber...
    t = threading.Thread(target=body, args=(0,))
    t.start()
    t.join(PEER_WAIT)

    # ...and from inside one (Thread.start waits on an Event made while
    # patched: the fiber waits cooperatively for the thread to start).
    def main():
        ts = [threading.Thread(target=body, args=(i,)) for i in (1, 2, 3)]
        for x in ts:
            x.start()
        for x in ts:
            x.join(PEER_WAIT)
        return [x.is_alive() for x in ts]

    assert real_sched.run(main) == [False] * 3
    assert sorted(out) == [0, 1, 2, 3]


def test_outside_a_fiber_the_lock_is_a_real_thread_lock(patched):
    lk = threading.Lock()
    lk.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(lk.acquire(timeout=0.01)))
    t.start()
    t.join(PEER_WAIT)
    assert got == [False]
    lk.release()
    assert lk.acquire(False)
    lk.release()


# ---- leaving a wait: kills, timeouts, the wake-up passed on ----------------

def test_a_waiter_killed_as_it_is_woken_passes_the_wakeup_on(io_sched,
                                                             patched):
    # a's kill is pending when the release wakes it: a leaves without the
    # lock, and must hand the wake-up to b, or b waits on a free lock.
    lk = threading.Lock()
    log = []

    def waiter(name):
        try:
            with lk:
                log.append((name, "in", fibers.now()))
        except fibers.FiberExit:
            log.append((name, "killed", fibers.now()))
            raise

    def main():
        lk.acquire()
        a = fibers.spawn(waiter, "a")
        b = fibers.spawn(waiter, "b")
        fibers.sleep(1)
        assert lk._fiber_waiters == 2
        a.kill(block=False)
        lk.release()
        b.join(timeout=10)
        assert lk._fiber_waiters == 0 and not lk.locked()

    io_sched.run(main)
    assert log == [("a", "killed", 1.0), ("b", "in", 1.0)]


def test_a_timeout_scope_ends_a_lock_wait_and_the_next_waiter_gets_it(
        io_sched, patched):
    lk = threading.Lock()
    log = []

    def impatient():
        with fibers.move_on_after(1):
            lk.acquire()
            log.append("impatient got it")      # never: the scope ends
        log.append(("impatient gave up", fibers.now()))

    def patient():
        with lk:
            log.append(("patient in", fibers.now()))

    def main():
        lk.acquire()
        i = fibers.spawn(impatient)
        p = fibers.spawn(patient)
        fibers.sleep(2)
        assert lk._fiber_waiters == 1           # only the patient one
        lk.release()
        i.join()
        p.join(timeout=10)
        assert lk._fiber_waiters == 0

    io_sched.run(main)
    assert log == [("impatient gave up", 1.0), ("patient in", 2.0)]


def test_outside_a_fiber_the_stdlibs_errors_and_timeouts(patched):
    lk, real = threading.Lock(), _thread.allocate_lock()
    for args in [(False, 1), (True, -2), (True, float("nan")),
                 (True, 1e300), (True, None), ("yes", 0.0)]:
        try:
            real.acquire(*args)
            want = None
        except Exception as e:
            want = (type(e), str(e))
        if real.locked():
            real.release()
        try:
            lk.acquire(*args)
            got = None
        except Exception as e:
            got = (type(e), str(e))
        if lk.locked():
            lk.release()
        assert got == want, args
    rl = threading.RLock()
    with pytest.raises(RuntimeError, match="cannot release un-acquired"):
        rl.release()
    sq = queue.SimpleQueue()
    with pytest.raises(queue.Empty):
        sq.get(True, 0.01)
    with pytest.raises(ValueError, match="non-negative"):
        sq.get(True, -1)


def test_a_woken_fiber_killed_before_it_runs_passes_the_wake_on(
        real_sched, patched):
    # A real thread releases the lock: the first waiting fiber (B) is owed
    # a wake-up, queued through call_threadsafe.  B is killed before that
    # call runs; the wake-up must reach C, or C would wait forever.
    lock = threading.Lock()
    took, release_now, released = _held_real(), _held_real(), _held_real()
    got = []

    def thread_body():
        lock.acquire()
        got.append("T has")
        took.release()
        _real_wait(release_now)
        lock.release()
        released.release()

    def waiter(name):
        with lock:
            got.append(name)

    def main():
        th = threading.Thread(target=thread_body)
        th.start()
        _real_wait(took)
        b, c = fibers.spawn(waiter, "B"), fibers.spawn(waiter, "C")
        _until(lambda: lock._fiber_waiters == 2, "both waiting")
        release_now.release()
        # Block this whole thread (no fiber runs) until the release is
        # done: B's wake-up is in flight, B still parked.
        _real_wait(released)
        assert lock._fiber_waiters == 1 and b.state == "suspended"
        b.kill()
        c.join()
        th.join(PEER_WAIT)

    real_sched.run(main)
    assert got == ["T has", "C"]
    assert not lock.locked() and lock._fiber_waiters == 0


def test_event_semaphore_and_barrier_among_fibers(io_sched, patched):
    ev = threading.Event()
    sem = threading.Semaphore(2)
    bar = threading.Barrier(3)
    cond = threading.Condition()
    log = []
    inside = [0, 0]                     # now, most at once

    def worker(i):
        with sem:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
            time.sleep(1)
            inside[0] -= 1
        bar.wait()
        with cond:
            log.append(("past barrier", i))
            cond.notify_all()
        ev.wait()
        log.append(("event", i))

    def main():
        ws = [fibers.spawn(worker, i) for i in range(3)]
        with cond:
            assert cond.wait_for(lambda: len(log) == 3, 10)
        assert fibers.now() == 2.0      # two rounds of the semaphore
        assert not ev.wait(1)
        ev.set()
        for w in ws:
            w.join()

    io_sched.run(main)
    assert inside == [0, 2]
    assert sorted(log) == [("event", i) for i in range(3)] + \
        [("past barrier", i) for i in range(3)]


def test_queue_get_timeout_on_the_virtual_clock(io_sched, patched):
    # Queue.get computes its deadline with queue.time: the patch makes it
    # the scheduler's clock inside a fiber, so the timeout is exact.
    q = queue.Queue()

    def main():
        with pytest.raises(queue.Empty):
            q.get(timeout=4)
        return fibers.now()

    assert io_sched.run(main) == 4.0


def test_simple_queue_killed_getter_loses_nothing(io_sched, patched):
    sq = queue.SimpleQueue()
    got = []

    def getter(name):
        got.append((name, sq.get()))

    def main():
        b, c = fibers.spawn(getter, "B"), fibers.spawn(getter, "C")
        _until(lambda: sq._fiber_waiters == 2, "both waiting")
        b.kill()
        assert sq._fiber_waiters == 1
        sq.put("x")
        c.join()

    io_sched.run(main)
    assert got == [("C", "x")]


# ---- errors, as the stdlib's ----------------------------------------------

def _error(call):
    try:
        call()
    except Exception as e:
        return type(e), str(e)
    return None


def test_bad_arguments_raise_the_stdlibs_errors_inside_a_fiber(io_sched,
                                                               patched):
    import _queue
    lock_args = [(False, 1), (True, -2), (True, float("nan")),
                 (True, 1e12), (True, 10 ** 20), (True, "x")]
    get_args = [-1, float("nan"), 1e12, 10 ** 20, "x"]
    out = []

    def main():
        lk = threading.Lock()
        lk.acquire()                    # contended: the fiber's own path
        rl = threading.RLock()
        sq = queue.SimpleQueue()        # empty: the fiber's own path
        for args in lock_args:
            want = _error(lambda: _thread.allocate_lock().acquire(*args))
            assert want is not None, args
            out.append((_error(lambda: lk.acquire(*args)) == want,
                        _error(lambda: rl.acquire(*args)) == want))
        for t in get_args:
            real = _queue.SimpleQueue()
            real.put(None)
            want = _error(lambda: real.get(True, t))
            assert want is not None, t
            out.append(_error(lambda: sq.get(True, t)) == want)
        lk.release()
        out.append(_error(lk.release) ==
                   _error(_thread.allocate_lock().release))
        out.append(_error(rl.release) ==
                   _error(threading._CRLock().release))

    io_sched.run(main)
    assert out == [(True, True)] * len(lock_args) + \
        [True] * (len(get_args) + 2)


# ---- RLock: more owners ----------------------------------------------------

def test_rlock_nonblocking_and_timed_from_another_fiber(io_sched, patched):
    rl = threading.RLock()
    log = []

    def other():
        log.append(("try", rl.acquire(False)))
        log.append(("timed", rl.acquire(timeout=1.5), fibers.now()))
        log.append(("mine?", rl._is_owned(), rl._recursion_count()))
        log.append(("waited", rl.acquire(), fibers.now()))
        log.append(("mine?", rl._is_owned(), rl._recursion_count()))
        rl.release()

    def main():
        assert rl.acquire() and rl.acquire(False)   # recursion, no wait
        assert rl._recursion_count() == 2
        o = fibers.spawn(other)
        fibers.sleep(3)
        rl.release()
        assert rl.locked()                  # still held once
        rl.release()
        o.join()
        assert not rl.locked()

    io_sched.run(main)
    assert log == [("try", False), ("timed", False, 1.5), ("mine?", False, 0),
                   ("waited", True, 3.0), ("mine?", True, 1)]


def test_rlock_held_by_a_fiber_is_not_the_threads_outside_it(io_sched,
                                                             patched):
    # The owner is the (thread, fiber) pair: after the fiber that took it
    # ends, code of the same thread outside any fiber is another owner.
    rl = threading.RLock()

    def take():
        rl.acquire()

    io_sched.run(take)
    assert rl.locked()
    assert rl.acquire(False) is False
    with pytest.raises(RuntimeError):
        rl.release()


def test_a_real_thread_holds_an_rlock_a_fiber_waits(real_sched, patched):
    rl = threading.RLock()
    held = threading.Event()
    release = threading.Event()
    log = []

    def thread_body():
        with rl:
            with rl:
                held.set()
                release.wait(PEER_WAIT)

    def waiter():
        with rl:
            log.append("fiber has it")

    def ticker():
        for i in range(3):
            fibers.yield_now()
            log.append(f"tick {i}")
        release.set()

    def main():
        t = threading.Thread(target=thread_body)
        t.start()
        assert held.wait(PEER_WAIT)
        w = fibers.spawn(waiter)
        k = fibers.spawn(ticker)
        w.join()
        k.join()
        t.join(PEER_WAIT)

    real_sched.run(main)
    assert log == ["tick 0", "tick 1", "tick 2", "fiber has it"]


# ---- fibers of two threads' schedulers on one lock -------------------------

def test_fibers_of_two_schedulers_hand_a_lock_back_and_forth(backend,
                                                             patched):
    # Each side's release wakes a fiber parked on the other thread's
    # scheduler (through its call_threadsafe).
    lk = threading.Lock()
    log = []

    def other_thread():
        def tmain():
            fibers.wait_for(lambda: lk._fiber_waiters == 0 and lk.locked(),
                            timeout=PEER_WAIT)
            lk.acquire()                    # held by the main fiber: parks
            log.append("thread fiber has it")
            fibers.wait_for(lambda: lk._fiber_waiters == 1,
                            timeout=PEER_WAIT)
            lk.release()                    # wakes the main fiber

        s = fibers.Scheduler(backend=backend)
        try:
            s.run(tmain)
        finally:
            s.close()

    def main():
        lk.acquire()
        t = threading.Thread(target=other_thread)
        t.start()
        fibers.wait_for(lambda: lk._fiber_waiters == 1, timeout=PEER_WAIT)
        log.append("main releases")
        lk.release()                        # wakes the thread's fiber
        fibers.wait_for(lambda: log[-1] == "thread fiber has it",
                        timeout=PEER_WAIT)
        assert lk.acquire(timeout=PEER_WAIT)     # parks until it releases
        log.append("main fiber has it again")
        lk.release()
        t.join(PEER_WAIT)
        assert not t.is_alive()

    s = fibers.Scheduler(backend=backend)
    try:
        s.run(main)
    finally:
        s.close()
    assert log == ["main releases", "thread fiber has it",
                   "main fiber has it again"]


# ---- Condition, Event and Queue with a real thread -------------------------

def test_condition_and_event_woken_by_a_real_thread(real_sched, patched):
    cond = threading.Condition()
    ev = threading.Event()
    log = []

    def thread_body():
        with cond:
            cond.notify()
        ev.set()

    def waiter():
        with cond:
            t = threading.Thread(target=thread_body)
            t.start()       # it cannot notify before this wait releases
            log.append(("cond", cond.wait(timeout=PEER_WAIT)))
        log.append(("event", ev.wait(timeout=PEER_WAIT)))
        t.join(PEER_WAIT)

    def ticker():
        for i in range(3):
            fibers.yield_now()
            log.append(f"tick {i}")

    def main():
        w = fibers.spawn(waiter)
        k = fibers.spawn(ticker)
        k.join()
        w.join()

    real_sched.run(main)
    assert ("cond", True) in log and ("event", True) in log
    assert log.index(("cond", True)) < log.index(("event", True))
    assert [x for x in log if isinstance(x, str)] == \
        ["tick 0", "tick 1", "tick 2"]


def test_timed_waits_time_out_on_the_real_clock(real_sched, patched):
    # The deadline clock (threading._time, queue.time) is the scheduler's
    # inside a fiber: on a real clock too, these timeouts happen.  Only
    # that they happen is asserted.
    q = queue.Queue()
    cond = threading.Condition()

    def main():
        with pytest.raises(queue.Empty):
            q.get(timeout=0.01)
        with cond:
            assert cond.wait_for(lambda: False, timeout=0.01) is False
        q2 = queue.Queue(maxsize=1)
        q2.put(1)
        with pytest.raises(queue.Full):
            q2.put(2, timeout=0.01)

    real_sched.run(main)


# ---- outside a fiber: the stdlib's ---------------------------------------

def test_outside_a_fiber_rlock_and_simple_queue_are_the_stdlibs(patched):
    rl = threading.RLock()
    sq = queue.SimpleQueue()
    got = []
    rl.acquire()
    rl.acquire()

    def thread_body():
        got.append(rl.acquire(timeout=0.01))    # another thread: no
        with pytest.raises(RuntimeError):
            rl.release()
        got.append(sq.get(timeout=PEER_WAIT))   # a real blocking get
        try:
            sq.get(timeout=0.01)
        except queue.Empty:
            got.append("empty")

    t = threading.Thread(target=thread_body)
    t.start()
    sq.put("x")
    t.join(PEER_WAIT)
    assert got == [False, "x", "empty"]
    rl.release()
    rl.release()
    with pytest.raises(RuntimeError):
        rl.release()


def test_a_future_of_a_thread_pool_waits_cooperatively(real_sched, patched):
    # concurrent.futures builds on threading's names and queue.SimpleQueue
    # when it makes its objects: made while patched, Future.result() in a
    # fiber parks only the fiber while the worker thread runs.
    import concurrent.futures
    go = threading.Event()
    log = []

    def job():
        assert go.wait(PEER_WAIT)           # a real thread: the real wait
        return 42

    def ticker():
        for i in range(3):
            fibers.yield_now()
            log.append(i)
        go.set()

    def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(job)
            k = fibers.spawn(ticker)
            log.append(fut.result(timeout=PEER_WAIT))
            k.join()

    real_sched.run(main)
    assert log == [0, 1, 2, 42]


def test_a_lock_released_by_a_bare_thread_is_no_deadlock(real_sched,
                                                         patched):
    # Regression: a thread started with _thread.start_new_thread (as
    # CPython's test_socket starts its clients) is not in threading's
    # list, and the scheduler called the fiber waiting for its release a
    # Deadlock.
    lock = threading.Lock()
    took, go = _held_real(), _held_real()
    done = []

    def bare():
        lock.acquire()
        took.release()
        _real_wait(go)
        lock.release()

    def main():
        _thread.start_new_thread(bare, ())
        _real_wait(took)
        go.release()
        with lock:                      # parks until the bare thread lets go
            done.append(True)

    real_sched.run(main)
    assert done == [True]


def test_an_event_set_by_a_just_started_bare_thread_is_no_deadlock(
        real_sched, patched):
    # Regression: the fiber parks before the new thread has ever run (this
    # thread kept the GIL), so _thread did not count it yet either; the
    # scheduler must let it run before calling the wait a Deadlock.
    ready = threading.Event()

    def client():
        ready.set()

    def main():
        _thread.start_new_thread(client, ())
        return ready.wait()

    assert real_sched.run(main) is True
