"""Blocking words refuse to run on a plain greenlet that a fiber started:
parking "the fiber" from there would abandon that greenlet mid-call."""
import greenlet
import pytest

import fibers
from fibers import net


@pytest.mark.parametrize("word", ["sleep", "yield_now", "wait_signal",
                                  "join", "suspend"])
def test_blocking_words_refuse_a_foreign_greenlet(sched, word):
    calls = {
        "sleep": lambda: fibers.sleep(1),
        "yield_now": fibers.yield_now,
        "wait_signal": lambda: fibers.wait_signal("x", timeout=1),
        "join": lambda: fibers.spawn(fibers.sleep, 1).join(),
        "suspend": fibers.suspend,
    }

    def main():
        inner = greenlet.greenlet(calls[word])
        with pytest.raises(RuntimeError, match="not a fiber"):
            inner.switch()
        # The fiber itself is unharmed and still blocks normally.
        fibers.sleep(2)
        return fibers.now()

    assert sched.run(main) == 2.0


def test_socket_calls_refuse_a_foreign_greenlet(io_sched):
    def main():
        a, b = net.socketpair()
        inner = greenlet.greenlet(lambda: b.recv(1))
        with pytest.raises(RuntimeError, match="not a fiber"):
            inner.switch()
        a.sendall(b"x")
        assert b.recv(1) == b"x"
        a.close()
        b.close()
        return "ok"

    assert io_sched.run(main) == "ok"


def test_a_greenlet_that_does_not_block_is_fine(sched):
    def main():
        return greenlet.greenlet(lambda: 6 * 7).switch()

    assert sched.run(main) == 42
