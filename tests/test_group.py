"""fibers.group() and fibers.first(): children bound to a block, races.

Every test runs on both pump backends (io_sched) and on a VirtualClock, so
times are exact virtual seconds."""
import random

import pytest

import fibers

EG = fibers.ExceptionGroup


class Boom(Exception):
    pass


def test_block_waits_for_every_child(io_sched):
    done = []

    def child(n):
        fibers.sleep(n)
        done.append(n)
        return n * 10

    def main():
        with fibers.group() as g:
            a = g.spawn(child, 3)
            b = g.spawn(child, n=1)
        assert done == [1, 3] and len(g) == 0
        return a.join(), b.join(), fibers.now()
    assert io_sched.run(main) == (30, 10, 3.0)


def test_first_failure_kills_the_others_and_ends_the_body(io_sched, errlog):
    cleaned = []

    def sleeper(n):
        try:
            fibers.sleep(n)
        finally:
            cleaned.append((n, fibers.now()))

    def failer():
        fibers.sleep(2)
        raise Boom("x")

    def main():
        with pytest.raises(EG) as info:
            with fibers.group() as g:
                g.spawn(sleeper, 10)
                g.spawn(sleeper, 20)
                g.spawn(failer)
                fibers.sleep(100)           # ended by the failure
                raise AssertionError("not reached")
        return info.value, fibers.now()
    eg, t = io_sched.run(main)
    assert t == 2.0
    assert [type(e) for e in eg.exceptions] == [Boom]
    assert sorted(cleaned) == [(10, 2.0), (20, 2.0)]
    assert errlog.records == []             # the group owns the failure


def test_every_failure_is_collected_in_order(io_sched):
    def fail_at(n, msg):
        fibers.sleep(n)
        raise Boom(msg)

    def fail_on_the_way_out():
        try:
            fibers.sleep(50)
        finally:
            raise KeyError("cleanup")

    def main():
        with pytest.raises(EG) as info:
            with fibers.group() as g:
                g.spawn(fail_at, 1, "a")
                g.spawn(fail_at, 1, "b")     # same tick: before any kill
                g.spawn(fail_on_the_way_out)
        return info.value
    eg = io_sched.run(main)
    assert [str(e) for e in eg.exceptions] == ["a", "b", "'cleanup'"]


def test_body_exception_kills_children_and_joins_the_group(io_sched):
    cleaned = []

    def child():
        try:
            fibers.sleep(10)
        finally:
            cleaned.append(fibers.now())

    def main():
        with pytest.raises(EG) as info:
            with fibers.group() as g:
                g.spawn(child)
                fibers.sleep(1)
                raise Boom("body")
        return info.value, fibers.now()
    eg, t = io_sched.run(main)
    assert [str(e) for e in eg.exceptions] == ["body"] and t == 1.0
    assert cleaned == [1.0]


def test_cancel_kills_children_and_the_block_exits_normally(io_sched):
    cleaned = []
    ran = []

    def child():
        try:
            fibers.sleep(10)
        finally:
            cleaned.append(fibers.now())

    def canceller(g):
        fibers.sleep(2)
        g.cancel()

    def main():
        with fibers.group() as g:
            g.spawn(child)
            g.spawn(canceller, g)
            fibers.sleep(100)
            raise AssertionError("not reached")
        assert g.cancel_called
        return fibers.now()
    assert io_sched.run(main) == 2.0
    assert cleaned == [2.0]

    def main2():
        # Spawned after cancel(): killed before it ever runs.
        with fibers.group() as g:
            g.cancel()
            f = g.spawn(ran.append, 1)
            assert f.dead
        fibers.sleep(1)     # the body's pending cancel must not go off here
        return fibers.now()
    assert io_sched.run(main2) == 3.0
    assert ran == []


def test_killed_child_is_not_a_failure(io_sched):
    def main():
        with fibers.group() as g:
            f = g.spawn(fibers.sleep, 10)
            k = g.spawn(fibers.sleep, 20)
            fibers.sleep(1)
            f.kill()
        return k.join(), fibers.now()
    assert io_sched.run(main) == (None, 20.0)


def test_timeout_kills_children_and_raises_timeout(io_sched):
    cleaned = []

    def child(n):
        try:
            fibers.sleep(n)
        finally:
            cleaned.append(n)

    def main():
        # Expiring in the body...
        with pytest.raises(fibers.Timeout):
            with fibers.group(timeout=5) as g:
                g.spawn(child, 10)
                fibers.sleep(100)
        t1 = fibers.now()
        # ...and while waiting at the end of the block.
        with pytest.raises(fibers.Timeout):
            with fibers.group(timeout=3) as g:
                g.spawn(child, 20)
        t2 = fibers.now()
        # Not reached: nothing fires later.
        with fibers.group(timeout=3) as g:
            g.spawn(child, 1)
        fibers.sleep(10)
        return t1, t2, fibers.now()
    assert io_sched.run(main) == (5.0, 8.0, 19.0)
    assert cleaned == [10, 20, 1]


def test_an_enclosing_timeout_scope_works_through_a_group(io_sched):
    cleaned = []

    def child():
        try:
            fibers.sleep(10)
        finally:
            cleaned.append(fibers.now())

    def main():
        with fibers.move_on_after(2) as scope:
            with fibers.group() as g:
                g.spawn(child)
        assert scope.expired
        return fibers.now()
    assert io_sched.run(main) == 2.0
    assert cleaned == [2.0]


def test_a_child_may_spawn_into_the_group_while_it_closes(io_sched):
    order = []

    def grandchild():
        fibers.sleep(5)
        order.append("grandchild")

    def child(g):
        fibers.sleep(1)
        g.spawn(grandchild)             # the parent is at the block's end
        order.append("child")

    def main():
        with fibers.group() as g:
            g.spawn(child, g)
        order.append("after")
        with pytest.raises(RuntimeError, match="ended"):
            g.spawn(grandchild)
        return fibers.now()
    assert io_sched.run(main) == 6.0
    assert order == ["child", "grandchild", "after"]


def test_parent_killed_at_the_end_of_the_block_outlives_no_child(io_sched):
    events = []

    def stubborn():
        # Catches the first kill and cleans up slowly; the parent must
        # still wait for it.
        try:
            fibers.sleep(100)
        except fibers.FiberExit:
            fibers.sleep(3)
            events.append(("child dead", fibers.now()))
            raise

    def parent():
        try:
            with fibers.group() as g:
                g.spawn(stubborn)
        finally:
            events.append(("parent out", fibers.now()))

    def main():
        p = fibers.spawn(parent)
        fibers.sleep(1)
        p.kill()                            # waits until p is dead
        events.append(("kill returned", fibers.now()))
        return p.exception
    exc = io_sched.run(main)
    assert isinstance(exc, fibers.FiberExit)
    assert events == [("child dead", 4.0), ("parent out", 4.0),
                      ("kill returned", 4.0)]


def test_a_second_kill_of_the_parent_kills_children_again(io_sched):
    events = []

    def very_stubborn():
        for _ in range(2):
            try:
                fibers.sleep(100)
            except fibers.FiberExit:
                events.append(fibers.now())
        # ends only after the second kill

    def parent():
        with fibers.group() as g:
            g.spawn(very_stubborn)

    def main():
        p = fibers.spawn(parent)
        fibers.sleep(1)
        p.kill(block=False)
        fibers.sleep(1)
        assert not p.dead
        p.kill()
        return fibers.now(), p.dead
    assert io_sched.run(main) == (2.0, True)
    assert events == [1.0, 2.0]


def test_keyboard_interrupt_in_a_child_is_raised_as_it_is(io_sched):
    def child():
        fibers.sleep(1)
        raise KeyboardInterrupt

    def main():
        try:
            with fibers.group() as g:
                g.spawn(child)
                other = g.spawn(fibers.sleep, 50)
        except KeyboardInterrupt:
            return "ki", other.dead, fibers.now()
    assert io_sched.run(main) == ("ki", True, 1.0)


def test_nested_groups_an_outer_failure_cancels_the_inner(io_sched):
    cleaned = []

    def inner_child():
        try:
            fibers.sleep(100)
        finally:
            cleaned.append("inner child")

    def inner_body():
        with fibers.group() as g:
            g.spawn(inner_child)
            fibers.sleep(100)

    def failer():
        fibers.sleep(1)
        raise Boom("outer")

    def main():
        with pytest.raises(EG) as info:
            with fibers.group() as g:
                g.spawn(failer)
                inner_body()            # the outer body runs an inner group
        return [str(e) for e in info.value.exceptions], fibers.now()
    assert io_sched.run(main) == (["outer"], 1.0)
    assert cleaned == ["inner child"]


def test_group_bad_arguments(io_sched):
    def main():
        with fibers.group() as g:
            with pytest.raises(TypeError, match="'fn'"):
                g.spawn(42)
        with pytest.raises(TypeError, match="'timeout'"):
            fibers.group(timeout="1")
        with pytest.raises(ValueError):
            fibers.group(timeout=-1)
        g2 = fibers.group()
        with pytest.raises(RuntimeError, match="not entered"):
            g2.spawn(print)
        return True
    assert io_sched.run(main)
    with pytest.raises(RuntimeError, match="inside a fiber"):
        with fibers.group():
            pass


def test_random_kills_and_failures_leave_no_child_behind(io_sched, errlog):
    # Many groups, each with random children (some fail, some catch the
    # kill and block again once), random cancels, random parent kills and
    # timeouts.  After each: every child that started has finished its
    # finally, none is alive, and the outcome is one the rules allow.
    rng = random.Random(1606)
    alive = set()
    stats = {"eg": 0, "timeout": 0, "killed": 0, "ok": 0}

    def child(key, delay, fail, stubborn):
        alive.add(key)
        try:
            try:
                fibers.sleep(delay)
            except fibers.FiberExit:
                if not stubborn:
                    raise
                fibers.sleep(0.5)
                raise
            if fail:
                raise Boom(key)
        finally:
            alive.discard(key)

    def parent(i, plan):
        n, timeout, cancel_at = plan["n"], plan["timeout"], plan["cancel"]
        with fibers.group(timeout=timeout) as g:
            for k in range(n):
                g.spawn(child, (i, k), rng.choice([0, 0.1, 0.3, 1, 2]),
                        rng.random() < 0.2, rng.random() < 0.2)
                if rng.random() < 0.3:
                    fibers.sleep(0.1)
            if cancel_at is not None:
                fibers.sleep(cancel_at)
                g.cancel()

    def run_parent(i, plan, outcome):
        try:
            parent(i, plan)
            outcome.append("ok")
        except EG as e:
            assert all(isinstance(x, Boom) for x in e.exceptions)
            outcome.append("eg")
        except fibers.Timeout:
            assert plan["timeout"] is not None
            outcome.append("timeout")
        except fibers.FiberExit:
            outcome.append("killed")
            raise

    def main():
        for i in range(150):
            plan = {"n": rng.randrange(0, 6),
                    "timeout": rng.choice([None, None, 0.2, 1.5]),
                    "cancel": rng.choice([None, None, 0, 0.3])}
            outcome = []
            p = fibers.spawn(run_parent, i, plan, outcome)
            kill_at = rng.choice([None, None, 0, 0.05, 0.5])
            if kill_at is not None:
                fibers.sleep(kill_at)
                p.kill()
            p.join()
            assert p.dead and len(outcome) == 1
            stats[outcome[0]] += 1
            assert not alive, (i, plan, alive)
        return stats
    stats = io_sched.run(main)
    # The loop went through every kind of ending.
    assert all(v > 0 for v in stats.values()), stats
    # Only failures that a kill of the parent outranked are logged.
    assert {r.msg for r in errlog.records} <= {
        "group: a child failure lost to %r"}


# --------------------------------------------------------------------------
# first()
# --------------------------------------------------------------------------

def test_first_returns_the_winner_and_kills_the_rest_before_returning(
        io_sched):
    cleaned = []

    def racer(name, n):
        try:
            fibers.sleep(n)
            return name
        finally:
            cleaned.append((name, fibers.now()))

    def main():
        r = fibers.first(lambda: racer("slow", 5), lambda: racer("fast", 2),
                         lambda: racer("slower", 9))
        assert len(cleaned) == 3            # before first() returned
        return r, fibers.now()
    assert io_sched.run(main) == ("fast", 2.0)
    assert sorted(cleaned) == [("fast", 2.0), ("slow", 2.0), ("slower", 2.0)]


def test_first_to_finish_raising_wins(io_sched, errlog):
    def main():
        def bad():
            fibers.sleep(1)
            raise Boom("first")

        def good():
            fibers.sleep(2)
            return "late"
        with pytest.raises(Boom, match="first"):
            fibers.first(good, bad)
        return fibers.now()
    assert io_sched.run(main) == 1.0
    assert errlog.records == []


def test_first_caller_killed_kills_every_contender(io_sched):
    cleaned = []

    def racer(n):
        try:
            fibers.sleep(n)
        finally:
            cleaned.append(fibers.now())

    def caller():
        fibers.first(lambda: racer(10), lambda: racer(20))

    def main():
        c = fibers.spawn(caller)
        fibers.sleep(3)
        c.kill()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(1):
                fibers.first(lambda: racer(10))
        return fibers.now()
    assert io_sched.run(main) == 4.0
    assert cleaned == [3.0, 3.0, 4.0]


def test_first_bad_arguments(io_sched):
    with pytest.raises(TypeError, match="at least one"):
        fibers.first()
    with pytest.raises(TypeError, match="argument 2"):
        fibers.first(print, 42)


def test_first_outside_a_fiber_drives_the_scheduler():
    # The thread's default scheduler, real clock: no sleeps, only yields.
    def a():
        for _ in range(3):
            fibers.yield_now()
        return "a"

    def b():
        return "b"
    assert fibers.first(a, b) == "b"


def test_scheduler_close_ends_a_group_and_its_children(backend):
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    events = []

    def child(n):
        try:
            fibers.sleep(1000)
        finally:
            events.append(f"child {n}")

    def parent():
        try:
            with fibers.group() as g:
                g.spawn(child, 1)
                g.spawn(child, 2)
        finally:
            events.append("parent")

    def main():
        fibers.spawn(parent)
        fibers.sleep(1)             # parent waits at the end of its block
    s.run(main)
    assert events == []
    s.close()
    assert sorted(events) == ["child 1", "child 2", "parent"]
    assert events[-1] == "parent"
