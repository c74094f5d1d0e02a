"""Helpers shared by the I/O tests."""
import gc
import os
import platform
import socket
import threading
import time

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


# ---- a thread blocked in the pump's wait ---------------------------------------

# What the pumps block in (csrc/fib_uring.c, csrc/fib_epoll.c), by machine:
# io_uring_enter's number, and epoll_wait's (glibc's epoll_wait is
# epoll_pwait where the machine has no epoll_wait).
_PUMP_SYSCALLS = {"x86_64": (426, (232, 281)), "aarch64": (426, (22,))}
_GETEVENTS, _EXT_ARG = 1, 8         # io_uring_enter's flags


def pump_wait(tid, pid="self"):
    """How thread `tid` of process `pid` (this one by default) is blocked in
    a pump's wait, as the kernel shows it (/proc/<pid>/task/<tid>/syscall):
    "forever" (no time
    limit), "timed", or None (running, in another call, or in a wait that
    does not block).  A test then knows the thread is asleep in the kernel,
    not merely about to be."""
    uring, epolls = _PUMP_SYSCALLS[platform.machine()]
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        fields = f.read().split()
    if len(fields) < 7:                 # "running", or "-1 sp pc"
        return None
    nr, args = int(fields[0]), [int(a, 16) for a in fields[1:7]]
    if nr == uring:                     # (fd, submit, min_complete, flags..)
        if args[2] < 1 or not args[3] & _GETEVENTS:
            return None                 # a submission or a peek
        # liburing passes a timeout as an extended argument.
        return "timed" if args[3] & _EXT_ARG else "forever"
    if nr in epolls:                    # (epfd, events, max, timeout ms)
        timeout = args[3] & 0xFFFFFFFF
        if timeout == 0:
            return None
        return "forever" if timeout == 0xFFFFFFFF else "timed"
    return None


def skip_unless_pump_wait_seen():
    """Skip the calling test when pump_wait() cannot see threads here."""
    if platform.machine() not in _PUMP_SYSCALLS:
        skip("x86_64", f"the pumps' system call numbers are not known for "
             f"{platform.machine()}")
    try:
        pump_wait(threading.get_native_id())
    except OSError as e:
        skip("proc_syscall", f"cannot read a thread's system call: {e}")


def wait_until_blocked_in_pump(tid, kinds=("forever", "timed"), limit=30.0,
                               pid="self"):
    """Return once thread `tid` (of process `pid`) is blocked in a pump's
    wait of one of `kinds` (see pump_wait); AssertionError if it is not
    within `limit` seconds (a hang guard).  Polls the kernel's view every
    0.5 ms, sleeping, so the thread watched has the GIL to get there."""
    deadline = time.monotonic() + limit
    while pump_wait(tid, pid) not in kinds:
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {tid} was not blocked in the "
                                 f"pump's wait ({' or '.join(kinds)}) "
                                 f"within {limit} s")
        time.sleep(0.0005)
