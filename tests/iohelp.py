"""Helpers shared by the I/O tests."""
import os

import fibers
import fibers.net


def open_fds():
    """The fds open in this process (without the one listdir itself uses)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:           # listdir's own, closed by now
            continue
        fds.add(int(name))
    return fds


def warm_up():
    """One round trip, so fds the backend creates lazily (the ring, the
    epoll set, the blocking-call pool's eventfd) exist before a test takes
    its baseline.  Call in a fiber."""
    fibers.blocking(int)
    a, b = fibers.net.socketpair()
    a.sendall(b".")
    assert b.recv(1) == b"."
    a.close()
    b.close()


def recv_all(sock, bound=100_000):
    """Read until EOF; at most `bound` recv calls."""
    parts = []
    for _ in range(bound):
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
    raise AssertionError("peer never reached EOF")


def fill_holes_below(fd):
    """Occupy every free fd number below `fd` (with /dev/null), so that the
    next fd the process opens is `fd` itself if it is free: the kernel
    always hands out the lowest free number.  Returns the fillers, for the
    caller to close."""
    taken = open_fds()
    return [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            for n in range(fd) if n not in taken]
