"""An fd number far beyond any open fd is refused with EBADF, on both
backends, without the pump sizing anything by the number first (the epoll
backend once grew its per-fd table to 10**8 entries, ~5 GiB, before
finding out the fd was not open)."""
import errno

import pytest

import fibers
from fibers.ring import Ring

HUGE = 10 ** 8

# How much the resident set may grow: far below the gigabytes a table
# sized by the number takes, far above anything the check itself costs.
RSS_BOUND = 50 << 20


def vm_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("word", ["wait_readable", "wait_writable"])
def test_wait_on_a_huge_fd_number(io_sched, word):
    def main():
        with pytest.raises(OSError) as ei:
            getattr(fibers, word)(HUGE)
        return ei.value.errno

    before = vm_rss()
    assert io_sched.run(main) == errno.EBADF
    # Measured before the fixture closes the scheduler and frees its pump.
    assert vm_rss() - before < RSS_BOUND


@pytest.mark.parametrize("op", ["read", "recv", "accept"])
def test_ring_op_on_a_huge_fd_number(backend, op):
    got = []

    def cb(result, data):
        got.append(result)

    before = vm_rss()
    with Ring(backend=backend) as ring:
        if op == "read":
            ring.read(HUGE, 16, 0, cb)
        elif op == "recv":
            ring.recv(HUGE, 16, 0, cb)
        else:
            ring.accept(HUGE, cb)
        ring.submit_and_wait(1)
        assert ring.process_completions() == 1
        # Measured while the ring is open: closing it frees its tables.
        grown = vm_rss() - before
    assert got == [-errno.EBADF]
    assert grown < RSS_BOUND
