"""fibers.sync: locks, semaphores, events, conditions, queues, the channel,
and fibers.wait_fd; on both pump backends, on a VirtualClock (autojump), so
times are exact."""
import os
import queue
import random
import select
import socket
import threading

import pytest

import fibers
from fibers import sync
from fibers.sync import (BoundedSemaphore, Channel, ChannelClosed, Condition,
                         Event, LifoQueue, Lock, PriorityQueue, Queue, RLock,
                         Semaphore, ShutDown)


@pytest.fixture
def s(io_sched):
    return io_sched


def settle(n=3):
    for _ in range(n):
        fibers.yield_now()


# ---- names --------------------------------------------------------------------

def test_exported_from_fibers_and_condition_is_the_threading_one():
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event",
                 "Condition", "Queue", "LifoQueue", "PriorityQueue",
                 "Channel", "ChannelClosed", "wait_fd"):
        assert getattr(fibers, name) is getattr(sync, name)
        assert name in fibers.__all__
    assert sync.Empty is queue.Empty and sync.Full is queue.Full
    # the when()/whenever() object is now a Trigger
    assert fibers.Trigger is not fibers.Condition
    assert "Trigger" in fibers.__all__


# ---- Lock -------------------------------------------------------------------------

def test_lock_basics_follow_threading(s):
    def main():
        lock = Lock()
        assert lock.acquire() is True
        assert lock.locked()
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0) is False
        with pytest.raises(ValueError):
            lock.acquire(False, 1)
        lock.release()
        assert not lock.locked()
        with pytest.raises(RuntimeError):
            lock.release()
        with lock as got:
            assert got is True and lock.locked()
        assert not lock.locked()
    s.run(main)


def test_lock_timeout_returns_false_at_the_deadline(s):
    def main():
        lock = Lock()
        lock.acquire()
        t0 = fibers.now()
        assert lock.acquire(timeout=2.5) is False
        assert fibers.now() - t0 == 2.5
        assert lock.waiters == 0
        assert s.pending_timers == 0
    s.run(main)


def test_lock_fifo_and_no_barging(s):
    """The lock goes to the waiters in arrival order, and the releaser,
    asking again at once, queues behind them."""
    order = []

    def main():
        lock = Lock()
        lock.acquire()

        def w(i):
            with lock:
                order.append(i)
        fs = [fibers.spawn(w, i) for i in range(5)]
        settle()
        assert lock.waiters == 5
        lock.release()
        # handed to waiter 0 already: not free for us
        assert lock.locked()
        assert lock.acquire(False) is False
        with lock:
            order.append("me")
        for f in fs:
            f.join()
        assert not lock.locked()
    s.run(main)
    assert order == [0, 1, 2, 3, 4, "me"]


def test_lock_outside_a_fiber_runs_the_scheduler():
    """Outside any fiber, a blocking acquire drives the thread's own
    scheduler until it has the lock, as Fiber.join does."""
    lock = Lock()
    log = []

    def holder():
        with lock:
            for i in range(3):
                fibers.yield_now()
                log.append(i)
    fibers.spawn(holder)
    fibers.step()
    assert lock.locked() and log == []
    assert lock.acquire() is True
    assert log == [0, 1, 2]
    lock.release()
    q = Queue()
    fibers.spawn(q.put, "x")
    assert q.get() == "x"


@pytest.mark.parametrize("kill_first", [False, True])
def test_lock_handed_to_a_fiber_killed_at_that_moment_passes_on(s, kill_first):
    """A releases (the lock goes to B) and kills B in the same breath, or
    the other way round: either way C gets the lock and it ends free."""
    log = []

    def main():
        lock = Lock()
        lock.acquire()

        def waiter(name):
            try:
                with lock:
                    log.append(name)
                    fibers.sleep(1)
            except fibers.FiberExit:
                log.append(name + " killed")
                raise
        b = fibers.spawn(waiter, "B")
        c = fibers.spawn(waiter, "C")
        settle()
        if kill_first:
            b.kill(block=False)
            lock.release()
        else:
            lock.release()
            b.kill(block=False)
        c.join()
        b.join()
        assert not lock.locked() and lock.waiters == 0
    s.run(main)
    if kill_first:
        assert log == ["B killed", "C"]
    else:
        # B was handed the lock: it holds it, the kill lands at its sleep,
        # and its `with` gives the lock to C
        assert log == ["B", "B killed", "C"]


# ---- RLock ------------------------------------------------------------------------

def test_rlock_reentrant_and_owned(s):
    def main():
        r = RLock()
        with r:
            with r:
                assert r.acquire(False)
                r.release()
        assert not r.locked()
        with pytest.raises(RuntimeError):
            r.release()
        r.acquire()
        got = []

        def other():
            with pytest.raises(RuntimeError):
                r.release()
            got.append(r.acquire(timeout=1))
        fibers.spawn(other).join()
        assert got == [False]
        r.acquire()             # twice now
        f = fibers.spawn(lambda: (r.acquire(), got.append("it"),
                                  r.release()))
        settle()
        r.release()
        settle()
        assert got == [False]   # still held once
        r.release()
        f.join()
        assert got == [False, "it"] and not r.locked()
    s.run(main)


# ---- Semaphores ---------------------------------------------------------------------

def test_semaphore_permits_fifo_and_release_n(s):
    order = []

    def main():
        sem = Semaphore(2)
        assert sem.acquire() and sem.acquire()
        assert sem.acquire(False) is False
        t0 = fibers.now()
        assert sem.acquire(timeout=3) is False
        assert fibers.now() - t0 == 3

        def w(i):
            with sem:
                order.append(i)
                fibers.sleep(1)
        fs = [fibers.spawn(w, i) for i in range(4)]
        settle()
        sem.release(2)
        assert sem.value == 0        # handed straight to two waiters
        for f in fs:
            f.join()
        assert sem.value == 2
        with pytest.raises(ValueError):
            Semaphore(-1)
        with pytest.raises(ValueError):
            sem.release(0)
        with pytest.raises(TypeError, match="value"):
            Semaphore("3")
    s.run(main)
    assert order == [0, 1, 2, 3]


def test_bounded_semaphore_refuses_too_many_releases(s):
    def main():
        b = BoundedSemaphore(2)
        with pytest.raises(ValueError):
            b.release()
        b.acquire()
        b.release()
        with pytest.raises(ValueError):
            b.release()
        assert b.value == 2
        assert isinstance(b, Semaphore)
    s.run(main)


# ---- Event ---------------------------------------------------------------------------

def test_event(s):
    def main():
        ev = Event()
        assert ev.wait(timeout=0) is False
        t0 = fibers.now()
        assert ev.wait(timeout=2) is False
        assert fibers.now() - t0 == 2
        got = []
        fs = [fibers.spawn(lambda: got.append(ev.wait())) for _ in range(3)]
        settle()
        ev.set()
        for f in fs:
            f.join()
        assert got == [True] * 3 and ev.is_set()
        assert ev.wait() is True
        ev.clear()
        assert not ev.is_set()
    s.run(main)


# ---- Condition ---------------------------------------------------------------------

def test_condition_wait_notify(s):
    def main():
        c = Condition(Lock())
        with pytest.raises(RuntimeError):
            c.wait()
        with pytest.raises(RuntimeError):
            c.notify()
        items = []
        woke = []

        def consumer(i):
            with c:
                assert c.wait_for(lambda: items) is not None
                woke.append((i, items.pop()))
        fs = [fibers.spawn(consumer, i) for i in range(3)]
        settle()
        for k in range(3):
            with c:
                items.append(k)
                c.notify()
            settle(5)
        for f in fs:
            f.join()
        assert woke == [(0, 0), (1, 1), (2, 2)]
        with c:
            t0 = fibers.now()
            assert c.wait(timeout=1.5) is False
            assert fibers.now() - t0 == 1.5
        with c:
            assert c.wait_for(lambda: False, timeout=2) is False
        with pytest.raises(TypeError, match="lock"):
            Condition(threading.Lock())
    s.run(main)


def test_condition_wait_takes_the_lock_back_on_kill_and_timeout(s):
    def main():
        c = Condition()         # an RLock
        seen = []

        def waiter():
            try:
                with c:
                    with c:     # held twice: wait releases both
                        c.wait()
            except fibers.FiberExit:
                seen.append("killed")
                raise
        f = fibers.spawn(waiter)
        settle()
        assert c.acquire(False)     # wait released it fully
        f.kill(block=False)
        settle()
        assert not f.dead           # it needs the lock back first
        c.release()
        f.join()
        assert seen == ["killed"]
        assert c.acquire(False)
        c.release()

        def scoped():
            with c:
                with fibers.move_on_after(1):
                    c.wait()
                c.notify()      # raises unless the lock is ours again
        fibers.spawn(scoped).join()
        assert c.acquire(False)
        c.release()
    s.run(main)


def test_condition_notification_of_a_killed_waiter_goes_to_the_next(s):
    def main():
        c = Condition(Lock())
        got = []

        def waiter(name):
            with c:
                c.wait()
                got.append(name)
        a = fibers.spawn(waiter, "A")
        b = fibers.spawn(waiter, "B")
        settle()
        with c:
            c.notify()          # A is handed the notification ...
            a.kill(block=False)  # ... and killed before it has the lock
            settle()            # A meets the kill waiting for the lock
            assert not a.dead
        a.join()
        b.join()                # B got A's notification: no hang
        assert got == ["B"]
    s.run(main)


# ---- Queue ----------------------------------------------------------------------

def test_queue_follows_the_stdlib(s):
    def main():
        q = Queue(2)
        assert q.empty() and not q.full() and q.maxsize == 2
        q.put(1)
        q.put_nowait(2)
        assert q.full() and q.qsize() == 2
        with pytest.raises(queue.Full):
            q.put_nowait(3)
        with pytest.raises(queue.Full):
            q.put(3, timeout=0)
        t0 = fibers.now()
        with pytest.raises(queue.Full):
            q.put(3, timeout=2)
        assert fibers.now() - t0 == 2
        assert q.get() == 1 and q.get_nowait() == 2
        with pytest.raises(queue.Empty):
            q.get_nowait()
        with pytest.raises(queue.Empty):
            q.get(block=False)
        t0 = fibers.now()
        with pytest.raises(queue.Empty):
            q.get(timeout=1)
        assert fibers.now() - t0 == 1
        assert s.pending_timers == 0
        lq = LifoQueue()
        pq = PriorityQueue()
        for x in (3, 1, 2):
            lq.put(x)
            pq.put(x)
        assert [lq.get() for _ in range(3)] == [2, 1, 3]
        assert [pq.get() for _ in range(3)] == [1, 2, 3]
        with pytest.raises(TypeError, match="maxsize"):
            Queue("2")
    s.run(main)


def test_queue_blocking_put_get_in_order(s):
    def main():
        q = Queue(3)
        out = []

        def producer(base):
            for i in range(20):
                q.put((base, i))
        ps = [fibers.spawn(producer, b) for b in range(3)]

        def consumer(mine):
            for _ in range(30):
                mine.append(q.get())
        outs = [[], []]
        cs = [fibers.spawn(consumer, o) for o in outs]
        for f in ps + cs:
            f.join()
        assert q.empty()
        # each consumer sees each producer's items in order (which of two
        # woken consumers runs first is the ring's business), and together
        # they got every item once
        for o in outs:
            for b in range(3):
                mine = [i for bb, i in o if bb == b]
                assert mine == sorted(mine)
        assert sorted(outs[0] + outs[1]) == sorted(
            (b, i) for b in range(3) for i in range(20))
    s.run(main)


def test_queue_getters_served_in_arrival_order(s):
    def main():
        q = Queue()
        got = []
        fs = [fibers.spawn(lambda i=i: got.append((i, q.get())))
              for i in range(3)]
        settle()
        for x in "abc":
            q.put(x)
        # handed over at put: a late getter cannot take them
        assert q.empty()
        for f in fs:
            f.join()
        assert got == [(0, "a"), (1, "b"), (2, "c")]
    s.run(main)


def test_queue_task_done_and_join(s):
    def main():
        q = Queue()
        with pytest.raises(ValueError):
            q.task_done()
        q.join()                # nothing unfinished
        for i in range(3):
            q.put(i)

        def worker():
            while True:
                q.get()
                fibers.sleep(1)
                q.task_done()
        w = fibers.spawn(worker)
        with pytest.raises(fibers.Timeout):
            q.join(timeout=1.5)
        q.join()
        assert fibers.now() == 3
        w.kill()
    s.run(main)


def test_queue_shutdown(s):
    def main():
        q = Queue(1)
        q.put("left")
        parked = []

        def putter():
            try:
                q.put("never")
            except ShutDown:
                parked.append("put refused")
        p = fibers.spawn(putter)
        settle()
        q.shutdown()
        p.join()
        assert parked == ["put refused"] and q.is_shutdown
        with pytest.raises(ShutDown):
            q.put(1)
        assert q.get() == "left"
        with pytest.raises(ShutDown):
            q.get()
        q2 = Queue()
        g = fibers.spawn(lambda: pytest.raises(ShutDown, q2.get))
        settle()
        q2.shutdown()
        g.join()
        q3 = Queue()
        q3.put(1)
        q3.shutdown(immediate=True)
        assert q3.empty()
        q3.join()               # the dropped item counts as done
    s.run(main)


# ---- Channel -------------------------------------------------------------------------

def test_channel_is_a_rendezvous(s):
    def main():
        ch = Channel()
        log = []

        def sender():
            for i in range(3):
                ch.send(i)
                log.append(("sent", i))
            ch.close()
        f = fibers.spawn(sender)
        settle()
        assert log == []        # nobody received: send has not returned
        for x in ch:
            log.append(("got", x))
            settle()
        f.join()
        # each send returned only once its item was taken
        assert log == [("got", 0), ("sent", 0), ("got", 1), ("sent", 1),
                       ("got", 2), ("sent", 2)]
        assert ch.closed
        with pytest.raises(ChannelClosed):
            ch.send(1)
        with pytest.raises(ChannelClosed):
            ch.recv()
        ch.close()              # twice: nothing
    s.run(main)


def test_channel_close_wakes_parked_and_timeouts_raise(s):
    def main():
        ch = Channel()
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            ch.recv(timeout=1)
        with pytest.raises(fibers.Timeout):
            ch.send("x", timeout=2)
        assert fibers.now() - t0 == 3
        out = []

        def sender():
            try:
                ch.send("lost?")
                out.append("sent")
            except ChannelClosed:
                out.append("not sent")
        f = fibers.spawn(sender)
        settle()
        ch.close()
        f.join()
        ch2 = Channel()
        r = fibers.spawn(lambda: pytest.raises(ChannelClosed, ch2.recv))
        settle()
        ch2.close()
        r.join()
        assert out == ["not sent"]
        # a receiver waiting gets the item at once
        ch3 = Channel()
        r = fibers.spawn(ch3.recv)
        settle()
        ch3.send(42)
        assert r.join() == 42
    s.run(main)


# ---- killed and timed-out waiters lose nothing (thousands, at random) -----------

ROUNDS = 3000


def test_lock_and_semaphore_survive_random_kills_and_timeouts(s):
    rnd = random.Random(1616)

    def main():
        lock = Lock()
        sem = Semaphore(3)
        state = {"holder": None, "sem": 0, "max_sem": 0, "entries": 0}
        workers = []

        def use_lock(i):
            how = rnd.randrange(3)
            if how == 0:
                if not lock.acquire(timeout=rnd.choice([0, 0.001, 0.01])):
                    return
                ctx = None
            elif how == 1:
                ctx = fibers.move_on_after(rnd.choice([0.001, 0.01]))
                ctx.__enter__()
                try:
                    lock.acquire()
                except fibers.Timeout:
                    ctx.__exit__(*__import__("sys").exc_info())
                    return
                ctx.__exit__(None, None, None)
            else:
                lock.acquire()
            try:
                assert state["holder"] is None
                state["holder"] = i
                state["entries"] += 1
                fibers.sleep(rnd.choice([0, 0.001]))
                assert state["holder"] == i
            finally:
                state["holder"] = None
                lock.release()

        def use_sem(i):
            if not sem.acquire(timeout=rnd.choice([None, 0.002])):
                return
            try:
                state["sem"] += 1
                state["max_sem"] = max(state["max_sem"], state["sem"])
                fibers.sleep(rnd.choice([0, 0.001]))
            finally:
                state["sem"] -= 1
                sem.release()

        for i in range(ROUNDS):
            workers.append(fibers.spawn(rnd.choice([use_lock, use_sem]), i))
            if rnd.random() < 0.5:
                settle(rnd.randrange(3))
            if rnd.random() < 0.3:
                victim = rnd.choice(workers[-20:])
                victim.kill(block=False)
            if rnd.random() < 0.1:
                # release-and-kill in one breath, from outside
                fibers.sleep(0.0005)
        for f in workers:
            f.join()
        assert not lock.locked() and lock.waiters == 0
        assert sem.value == 3 and state["sem"] == 0
        assert state["max_sem"] <= 3
        assert state["entries"] > ROUNDS // 10
    s.run(main)


def test_queue_and_channel_lose_no_item_under_random_kills(s):
    rnd = random.Random(16)

    def main():
        q = Queue(4)
        ch = Channel()
        delivered_q, received_q = [], []
        delivered_c, received_c = [], []
        fs = []

        def put(i):
            try:
                if rnd.random() < 0.5:
                    q.put(i, timeout=rnd.choice([0.001, 0.01]))
                else:
                    q.put(i)
            except queue.Full:
                return
            delivered_q.append(i)

        def get():
            try:
                x = q.get(timeout=rnd.choice([None, 0.001, 0.01]))
            except queue.Empty:
                return
            received_q.append(x)

        def send(i):
            try:
                ch.send(i, timeout=rnd.choice([None, 0.001]))
            except fibers.Timeout:
                return
            delivered_c.append(i)

        def recv():
            try:
                x = ch.recv(timeout=rnd.choice([None, 0.001, 0.005]))
            except fibers.Timeout:
                return
            received_c.append(x)

        for i in range(ROUNDS):
            k = rnd.randrange(4)
            fn = (put, get, send, recv)[k]
            fs.append(fibers.spawn(fn, i) if k in (0, 2)
                      else fibers.spawn(fn))
            if rnd.random() < 0.5:
                settle(rnd.randrange(3))
            if rnd.random() < 0.3:
                rnd.choice(fs[-10:]).kill(block=False)
        # let the stragglers finish: feed the getters and receivers,
        # drain the putters and senders, bounded
        for _ in range(ROUNDS):
            if all(f.dead for f in fs):
                break
            while not q.empty():
                received_q.append(q.get())
            for f in fs:
                if not f.dead:
                    f.kill(block=False)
            settle()
        assert all(f.dead for f in fs)
        while not q.empty():
            received_q.append(q.get())
        assert sorted(received_q) == sorted(delivered_q)
        assert len(set(received_q)) == len(received_q)
        assert sorted(received_c) == sorted(delivered_c)
        assert len(delivered_q) > ROUNDS // 20
        assert len(delivered_c) > ROUNDS // 50
    s.run(main)


# ---- wait_fd ----------------------------------------------------------------------

def test_wait_fd(s):
    def main():
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            b.setblocking(False)
            rv = fibers.wait_fd(a, select.POLLOUT)
            assert rv & select.POLLOUT
            with pytest.raises(fibers.Timeout):
                fibers.wait_fd(a.fileno(), select.POLLIN, timeout=1)
            # read or write: one wait, whichever comes
            rv = fibers.wait_fd(a, select.POLLIN | select.POLLOUT)
            assert rv & select.POLLOUT and not rv & select.POLLIN
            # fill a's send buffer so it is not writable; then data from b
            # makes it readable
            try:
                while True:
                    a.send(b"x" * 65536)
            except BlockingIOError:
                pass
            fibers.spawn(lambda: (fibers.sleep(1), b.send(b"hi")))
            t0 = fibers.now()
            rv = fibers.wait_fd(a, select.POLLIN | select.POLLOUT)
            assert rv & select.POLLIN and not rv & select.POLLOUT
            assert fibers.now() - t0 == 1
            with pytest.raises(ValueError, match="events"):
                fibers.wait_fd(a, 0)
            with pytest.raises(ValueError, match="events"):
                fibers.wait_fd(a, select.POLLPRI)
            with pytest.raises(TypeError, match="events"):
                fibers.wait_fd(a, "in")
            with pytest.raises(TypeError):
                fibers.wait_fd("a", select.POLLIN)
            b.close()
            rv = fibers.wait_fd(a, select.POLLIN)
            assert rv & (select.POLLIN | select.POLLHUP)
        finally:
            a.close()
            if b.fileno() >= 0:
                b.close()
    s.run(main)


def test_wait_fd_pipe_readable(s):
    r, w = os.pipe()

    def main():
        fibers.spawn(lambda: (fibers.sleep(2), os.write(w, b"1")))
        rv = fibers.wait_fd(r, select.POLLIN, timeout=5)
        assert rv & select.POLLIN and fibers.now() == 2
    try:
        s.run(main)
    finally:
        os.close(r)
        os.close(w)
