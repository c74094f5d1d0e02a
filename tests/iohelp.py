"""Helpers shared by the I/O tests."""
import gc
import os
import socket

import fibers
import fibers.net
from capabilities import requires, skip


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
    its baseline; then a collection, so that no garbage of an earlier test
    (a scheduler nobody closed holds its ring's fd) is closed by the
    collector in the middle of this one.  Call in a fiber."""
    fibers.blocking(int)
    a, b = fibers.net.socketpair()
    a.sendall(b".")
    assert b.recv(1) == b"."
    a.close()
    b.close()
    gc.collect()


class NextFd:
    """Makes the closed fd number `fd` the next one the kernel hands out.

    The kernel always gives the lowest free number, so every free number
    below `fd` is filled (with /dev/null) and `fd` itself held until
    free(); close() gives the fillers back.  Tests about a number being
    reused then do not depend on chance (say, an fd some garbage
    collection freed lower down)."""

    def __init__(self, fd):
        self.fillers = []
        self.hold = None
        for _ in range(fd + 1):
            n = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            if n >= fd:
                break
            self.fillers.append(n)
        if n != fd:
            os.close(n)
            self.close()
            raise AssertionError(f"fd {fd} is still open")
        self.hold = n

    def free(self):
        """Free the number: the next fd made gets it."""
        os.close(self.hold)
        self.hold = None

    def close(self):
        if self.hold is not None:
            self.free()
        for n in self.fillers:
            os.close(n)
        self.fillers = []


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


def tcp_pair():
    """A connected loopback TCP pair (client, server side).  Call in a
    fiber; on io_uring the server side is read with multishot recv."""
    lst = fibers.net.listen(("127.0.0.1", 0))
    try:
        client = fibers.net.connect(lst.getsockname())
        server, _ = lst.accept()
    finally:
        lst.close()
    return client, server


def can_bind_ipv6_loopback():
    """Whether ::1 can be bound here (containers often lack IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = requires("ipv6", None if can_bind_ipv6_loopback()
                      else "cannot bind ::1 here")


def skip_unless_backend_runs(name):
    """Skip the calling test, with the reason, when backend `name` cannot
    run here (io_uring refused by a seccomp filter, say)."""
    if name == "io_uring":
        why = fibers.backends()["io_uring"]
        if why is not None:
            skip("io_uring", f"io_uring unavailable here: {why}")
