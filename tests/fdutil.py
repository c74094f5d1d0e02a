"""Helpers for tests that check no fd leaks."""
import os

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
    epoll set) exist before a test takes its baseline.  Call in a fiber."""
    a, b = fibers.net.socketpair()
    a.sendall(b".")
    assert b.recv(1) == b"."
    a.close()
    b.close()
