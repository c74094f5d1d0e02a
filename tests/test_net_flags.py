"""Calls that must not wait (a non-blocking socket, MSG_DONTWAIT) see
every byte the kernel has received.

On io_uring a server's connection is read by a multishot recv: the kernel
moves received bytes out of the socket into our buffers, and hands them
over as completions.  Those completions may not have reached the socket's
queue when a call that must not wait comes: one not yet harvested from the
ring, or, with DEFER_TASKRUN, a multishot recv the kernel runs only when we
next enter it.  select() (which asks the kernel) then says readable, and
the stdlib's recv would return the bytes; a fibers recv must not raise
BlockingIOError instead.  The same calls run on epoll, where they are
plain system calls.  (What the stdlib does in each case is held in
tests/test_conformance.py; this file covers the io_uring delivery.)
"""
import faulthandler
import os
import select
import shutil
import socket
import tempfile

import pytest

import fibers
import fibers.net
from iohelp import skip_unless_backend_runs


@pytest.fixture(params=["io_uring", "io_uring-no-defer", "epoll"])
def flag_sched(request, monkeypatch, _real_stderr_fd):
    """A scheduler on each backend, and on io_uring also with its ring set
    up without DEFER_TASKRUN (as before Linux 6.1): the multishot recv then
    runs as the data comes, and its completion waits in the ring, rather
    than running only when we next enter the kernel."""
    name = request.param
    backend = name.split("-")[0]
    skip_unless_backend_runs(backend)
    if name.endswith("-no-defer"):
        monkeypatch.setenv("FIBERS_URING_NO_DEFER_TASKRUN", "1")
    faulthandler.dump_traceback_later(60.0, exit=True, file=_real_stderr_fd)
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    if name.endswith("-no-defer"):
        assert not s._defers_taskrun()
    yield s
    s.close()
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def unix_path():
    d = tempfile.mkdtemp(prefix="fflags")
    yield os.path.join(d, "s")
    shutil.rmtree(d, ignore_errors=True)


def accepted_pair(path):
    """(client, server side) over a Unix stream socket: the server side is
    an accepted connection (multishot on io_uring), and a Unix send puts
    the bytes in the peer's socket before it returns (no network stack in
    between), so nothing here depends on timing."""
    lst = fibers.net.listen(path)
    try:
        client = fibers.net.connect(path)
        server, _ = lst.accept()
    finally:
        lst.close()
    return client, server


def nonblocking_recv(sock):
    sock.setblocking(False)
    return sock.recv(100)


def nonblocking_recv_into(sock):
    sock.setblocking(False)
    buf = bytearray(100)
    return bytes(buf[:sock.recv_into(buf)])


def nonblocking_peek(sock):
    sock.setblocking(False)
    peeked = sock.recv(100, socket.MSG_PEEK)
    assert sock.recv(100) == peeked
    return peeked


def dontwait_recv(sock):
    return sock.recv(100, socket.MSG_DONTWAIT)


def nonblocking_recvfrom(sock):
    sock.setblocking(False)
    data, _ = sock.recvfrom(100)
    return data


CALLS = [nonblocking_recv, nonblocking_recv_into, nonblocking_peek,
         dontwait_recv, nonblocking_recvfrom]


@pytest.mark.parametrize("call", CALLS, ids=lambda f: f.__name__)
def test_received_bytes_are_there_for_a_call_that_must_not_wait(
        flag_sched, unix_path, call):
    def main():
        c, s = accepted_pair(unix_path)
        with c, s:
            c.sendall(b"first")
            assert s.recv(100) == b"first"  # on io_uring: multishot armed
            c.sendall(b"second")
            if flag_sched.backend == "epoll" or flag_sched._defers_taskrun():
                # The bug's situation: the kernel says readable...
                assert select.select([s.fileno()], [], [], 0)[0] == \
                    [s.fileno()]
            # ...and the call that must not wait returns the bytes.
            assert call(s) == b"second"
            # Then nothing: EAGAIN at once, in order afterwards.
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(100)
            c.sendall(b"third")
            c.sendall(b"fourth")
            assert s.recv(5) == b"third"
            assert s.recv(100) == b"fourth"
    flag_sched.run(main)


def test_order_is_kept_across_blocking_and_nonblocking_reads(flag_sched,
                                                             unix_path):
    # Bytes a blocking read left queued in the stream come before bytes a
    # non-blocking read finds in the socket.
    def main():
        c, s = accepted_pair(unix_path)
        with c, s:
            c.sendall(b"abcdef")
            assert s.recv(2) == b"ab"
            c.sendall(b"ghij")
            s.setblocking(False)
            got = b""
            for _ in range(10):
                try:
                    got += s.recv(3)
                except BlockingIOError:
                    break
            assert got == b"cdefghij"
    flag_sched.run(main)
