"""Functor: a callable with a target, attributes and equality."""
import pytest

from fibers import Functor
import fibers


class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


def test_calls_plain_function():
    f = Functor(lambda a, b: a - b)
    assert f(5, 3) == 2


def test_calls_with_target():
    c = Counter()
    f = Functor(Counter.add, c)
    assert f(2) == 2 and f(3) == 5 and c.n == 5


def test_attributes_repr_and_equality():
    c = Counter()
    f = Functor(Counter.add, c)
    f.version = "1.2"
    assert f.version == "1.2"
    assert "Counter.add" in repr(f) and "target=" in repr(f)
    assert f == Functor(Counter.add, c)
    assert hash(f) == hash(Functor(Counter.add, c))
    assert f != Functor(Counter.add, Counter())
    assert f != Functor(Counter.add)
    assert len({f, Functor(Counter.add, c)}) == 1


def test_rejects_non_callable():
    with pytest.raises(TypeError):
        Functor(5)


def test_works_as_a_fiber_body_and_predicate(sched):
    c = Counter()

    def main():
        fibers.spawn(Functor(Counter.add, c), 4).join()
        fibers.wait_for(Functor(lambda obj: obj.n == 4, c))
        return c.n
    assert sched.run(main) == 4
