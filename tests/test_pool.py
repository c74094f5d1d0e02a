"""fibers.Pool: bounded concurrency, on both pump backends and a
VirtualClock."""
import random

import pytest

import fibers


class Boom(Exception):
    pass


class Meter:
    """Counts tasks running at once."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def task(self, n, result=None, fail=False):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            fibers.sleep(n)
            if fail:
                raise Boom(result)
            return result
        finally:
            self.now -= 1


def test_spawn_blocks_while_the_pool_is_full(io_sched):
    m = Meter()

    def main():
        p = fibers.Pool(2)
        times = []
        for n in (3, 5, 1, 1):
            p.spawn(m.task, n)
            times.append(fibers.now())
        assert len(p) == 2 and p.full() and p.free_count() == 0
        p.join()
        return times, fibers.now(), m.peak, p.free_count()
    # The third spawn waits for the 3 s task, the fourth for the third.
    assert io_sched.run(main) == ([0.0, 0.0, 3.0, 4.0], 5.0, 2, 2)


def test_slots_go_to_waiting_spawners_in_order(io_sched):
    order = []

    def spawner(p, name):
        p.spawn(fibers.sleep, 1)
        order.append((name, fibers.now()))

    def main():
        p = fibers.Pool(1)
        p.spawn(fibers.sleep, 1)
        for name in "abcd":
            fibers.spawn(spawner, p, name)
        fibers.sleep(0.5)
        p.spawn(fibers.sleep, 1)        # comes last although it came late
        order.append(("main", fibers.now()))
        p.join()
        return fibers.now()
    assert io_sched.run(main) == 6.0
    assert order == [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0),
                     ("main", 5.0)]


def test_a_waiting_spawner_killed_or_timed_out_loses_no_slot(io_sched):
    def main():
        p = fibers.Pool(1)
        p.spawn(fibers.sleep, 2)
        w = fibers.spawn(p.spawn, fibers.sleep, 1)
        fibers.yield_now()
        w.kill()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(1):
                p.spawn(fibers.sleep, 1)
        p.join()
        assert len(p) == 0 and p.free_count() == 1
        f = p.spawn(fibers.sleep, 1)        # the slot is there, at once
        return fibers.now(), f.dead
    assert io_sched.run(main) == (2.0, False)


def test_map_keeps_order_and_the_bound(io_sched):
    m = Meter()

    def main():
        p = fibers.Pool(3)
        r = p.map(lambda n: m.task(n, result=n * 10), [5, 1, 4, 2, 3, 1])
        return r, fibers.now(), m.peak, len(p)
    # slots: 5 | 1,4 | 4,2,3,1 -> 0..5, 0..1, 0..4, 1..3, 3..6, 4..5
    assert io_sched.run(main) == ([50, 10, 40, 20, 30, 10], 6.0, 3, 0)


def test_map_stops_at_the_first_failure(io_sched, errlog):
    cleaned = []
    taken = []

    def items():
        for i in range(100):
            taken.append(i)
            yield i

    def task(i):
        try:
            fibers.sleep(1 if i == 2 else 10)
            if i == 2:
                raise Boom(i)
        finally:
            cleaned.append(i)

    def main():
        p = fibers.Pool(3)
        with pytest.raises(Boom):
            p.map(task, items())
        return fibers.now(), len(p), p.free_count()
    assert io_sched.run(main) == (1.0, 0, 3)
    assert sorted(cleaned) == [0, 1, 2] and taken == [0, 1, 2]
    assert errlog.records == []


def test_map_caller_killed_kills_its_tasks(io_sched):
    cleaned = []

    def task(i):
        try:
            fibers.sleep(10)
        finally:
            cleaned.append(fibers.now())

    def main():
        p = fibers.Pool(2)
        c = fibers.spawn(p.map, task, range(5))
        fibers.sleep(1)
        c.kill()
        return fibers.now(), len(p), p.free_count()
    assert io_sched.run(main) == (1.0, 0, 2)
    assert cleaned == [1.0, 1.0]


def test_imap_unordered_yields_as_tasks_finish_with_bounded_memory(io_sched):
    taken = []
    m = Meter()

    def items():
        for n in [4, 1, 3, 2, 1, 1]:
            taken.append(n)
            yield n

    def main():
        p = fibers.Pool(2)
        got = []
        for r in p.imap_unordered(lambda n: m.task(n, result=n), items()):
            got.append((r, fibers.now(), len(taken)))
            fibers.sleep(10)            # a slow consumer: nothing piles up
        return got, m.peak
    got, peak = io_sched.run(main)
    assert peak == 2
    # At most 2 tasks running or waiting to be taken: while the consumer
    # sleeps, no item beyond that is taken from the iterable.
    assert got[0] == (1, 1.0, 2)
    assert [g[0] for g in got] == [1, 4, 3, 2, 1, 1]
    assert all(taken_n <= i + 2 for i, (_, _, taken_n) in enumerate(got))


def test_imap_unordered_break_kills_the_rest(io_sched):
    cleaned = []

    def task(n):
        try:
            fibers.sleep(n)
            return n
        finally:
            cleaned.append(n)

    def main():
        p = fibers.Pool(3)
        gen = p.imap_unordered(task, [5, 1, 7, 9])
        for r in gen:
            assert r == 1
            break
        gen.close()
        return fibers.now(), len(p), p.free_count()
    assert io_sched.run(main) == (1.0, 0, 3)
    assert sorted(cleaned) == [1, 5, 7]


def test_imap_unordered_raises_a_failure_in_its_place(io_sched):
    def task(n):
        fibers.sleep(n)
        if n == 2:
            raise Boom(n)
        return n

    def main():
        p = fibers.Pool(4)
        got = []
        with pytest.raises(Boom):
            for r in p.imap_unordered(task, [3, 1, 2, 9]):
                got.append(r)
        return got, fibers.now(), len(p)
    assert io_sched.run(main) == ([1], 2.0, 0)


def test_join_timeout_and_kill(io_sched):
    cleaned = []

    def task(n):
        try:
            fibers.sleep(n)
        finally:
            cleaned.append(n)

    def main():
        p = fibers.Pool(3)
        p.join()                        # empty: at once
        for n in (10, 20, 30):
            p.spawn(task, n)
        with pytest.raises(fibers.Timeout):
            p.join(timeout=5)
        assert len(p) == 3              # still running
        p.kill()
        assert sorted(cleaned) == [10, 20, 30]
        return fibers.now(), len(p), p.free_count()
    assert io_sched.run(main) == (5.0, 0, 3)


def test_spawn_failures_are_logged_map_failures_are_raised(io_sched, errlog):
    def bad():
        raise Boom("spawned")

    def main():
        p = fibers.Pool(2)
        p.spawn(bad)
        p.join()
        return True
    io_sched.run(main)
    assert [r.msg for r in errlog.records] == ["uncaught exception in %r"]


def test_pool_bad_arguments(io_sched):
    with pytest.raises(TypeError, match="'size'"):
        fibers.Pool("3")
    with pytest.raises(TypeError, match="'size'"):
        fibers.Pool(True)
    with pytest.raises(TypeError, match="'size'"):
        fibers.Pool(2.0)
    with pytest.raises(ValueError, match="'size'"):
        fibers.Pool(0)
    p = fibers.Pool(2)
    with pytest.raises(TypeError, match="'fn'"):
        p.spawn(42)
    with pytest.raises(TypeError, match="'fn'"):
        p.map(None, [1])
    with pytest.raises(TypeError, match="'iterable'"):
        p.map(str, 42)
    with pytest.raises(TypeError, match="'iterable'"):
        p.imap_unordered(str, 42)
    with pytest.raises(TypeError, match="'timeout'"):
        p.join(timeout="soon")


def test_map_outside_a_fiber_drives_the_scheduler():
    # The thread's default scheduler on the real clock: tasks only yield.
    def task(n):
        fibers.yield_now()
        return n * 2
    p = fibers.Pool(2)
    assert p.map(task, range(5)) == [0, 2, 4, 6, 8]
    assert sorted(p.imap_unordered(task, range(4))) == [0, 2, 4, 6]
    assert len(p) == 0


def test_random_kills_and_failures_lose_no_slot(io_sched, errlog):
    # Spawners, map()s and imap_unordered()s share a pool while tasks,
    # waiting spawners and consumers are killed at random and some tasks
    # fail.  The bound always holds, and at the end every slot is free.
    rng = random.Random(4242)
    m = Meter()
    size = 4

    def task(n, fail):
        return m.task(n, fail=fail)

    def spawner(p):
        for _ in range(rng.randrange(1, 6)):
            p.spawn(task, rng.choice([0, 0.1, 0.5, 1]), False)

    def mapper(p):
        try:
            p.map(lambda n: task(n, rng.random() < 0.1),
                  [rng.choice([0, 0.2, 1]) for _ in range(rng.randrange(8))])
        except Boom:
            pass

    def consumer(p):
        try:
            for _ in p.imap_unordered(lambda n: task(n, rng.random() < 0.1),
                                      [rng.choice([0, 0.3, 1])
                                       for _ in range(rng.randrange(8))]):
                if rng.random() < 0.2:
                    break
                fibers.sleep(rng.choice([0, 0.2]))
        except Boom:
            pass

    def main():
        p = fibers.Pool(size)
        users = []
        for step in range(400):
            kind = rng.choice([spawner, mapper, consumer])
            users.append(fibers.spawn(kind, p))
            fibers.sleep(rng.choice([0, 0, 0.05, 0.3]))
            roll = rng.random()
            if roll < 0.15 and users:
                rng.choice(users).kill(block=rng.random() < 0.5)
            elif roll < 0.25 and len(p):
                rng.choice(list(p)).kill(block=False)
            elif roll < 0.27:
                p.kill(block=rng.random() < 0.5)
            assert len(p) <= size and m.now <= size
            users = [u for u in users if not u.dead]
        for u in users:
            u.join()
        p.join()
        return len(p), p.free_count(), m.now, m.peak
    assert io_sched.run(main) == (0, size, 0, size)
    assert {r.msg for r in errlog.records} <= {"uncaught exception in %r"}
