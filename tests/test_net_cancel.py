"""Cancelling socket operations: killing a blocked fiber, closing a socket
under a waiting fiber.  Nothing may leak (fds, in-flight operations, data)."""
import errno
import os

import pytest

import fibers
import fibers.net
from iohelp import open_fds, warm_up


# ---- helpers -----------------------------------------------------------------

def park(fn, *args):
    """Spawn fn(*args) and let it block; returns the fiber."""
    f = fibers.spawn(fn, *args)
    fibers.yield_now()
    assert f.state == "suspended", f"{fn} did not block"
    return f


def settle(sched):
    """Drive a scheduler that is not running until it has nothing left in
    flight; bounded.  True when it went idle."""
    for _ in range(5):
        for _ in range(20):
            if not sched.step():
                return True
        # A short virtual sleep: with I/O in flight the scheduler polls the
        # kernel for its grace period before jumping.
        sched.run(fibers.sleep, 0.05)
    return not sched.step()


# ---- kill ----------------------------------------------------------------------------

def test_kill_fiber_blocked_in_recv(io_sched):
    def main():
        warm_up()
        before = open_fds()
        a, b = fibers.net.socketpair()
        reader = park(b.recv, 100)
        reader.kill()
        assert reader.dead
        assert isinstance(reader.exception, fibers.FiberExit)
        b.close()                                  # still closable
        a.close()
        return open_fds() ^ before
    assert io_sched.run(main) == set()
    assert settle(io_sched), "a cancelled recv is still in flight"


def test_data_sent_after_a_cancelled_recv_is_not_lost(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            park(b.recv, 100).kill()
            a.sendall(b"payload")
            with fibers.timeout(5):
                return b.recv(100)
    assert io_sched.run(main) == b"payload"
    assert settle(io_sched)


def test_data_sent_after_a_timed_out_recv_is_not_lost(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            with pytest.raises(TimeoutError):
                with fibers.timeout(1):
                    b.recv(100)
            a.sendall(b"payload")
            with fibers.timeout(5):
                return b.recv(100)
    assert io_sched.run(main) == b"payload"


def test_many_cancelled_recvs_leave_nothing_behind(io_sched):
    def main():
        warm_up()
        before = open_fds()
        pairs = [fibers.net.socketpair() for _ in range(50)]
        readers = [fibers.spawn(b.recv, 10) for _, b in pairs]
        fibers.yield_now()
        for r in readers:
            r.kill()
        assert all(r.dead for r in readers)
        for a, b in pairs:                         # each pair still works
            a.sendall(b"ok")
            with fibers.timeout(5):
                assert b.recv(10) == b"ok"
            a.close()
            b.close()
        return open_fds() ^ before
    assert io_sched.run(main) == set()
    assert settle(io_sched)


def test_kill_in_accept_then_a_client_connects_leaks_nothing(io_sched):
    def main():
        warm_up()
        before = open_fds()
        lst = fibers.net.listen(("127.0.0.1", 0))
        park(lst.accept).kill()
        client = fibers.net.connect(lst.getsockname())
        # A stale accept would have taken this connection (and its fd):
        # a new accept must get it.
        lst.settimeout(5)
        conn, addr = lst.accept()
        assert addr == client.getsockname()
        conn.close()
        client.close()
        lst.close()
        return open_fds() ^ before
    assert io_sched.run(main) == set()
    assert settle(io_sched)


def test_kill_in_accept_then_client_connects_and_listener_closes(io_sched):
    def main():
        warm_up()
        before = open_fds()
        lst = fibers.net.listen(("127.0.0.1", 0))
        park(lst.accept).kill()
        client = fibers.net.connect(lst.getsockname())
        for _ in range(3):                         # room for a stale completion
            fibers.sleep(0.01)
        lst.close()
        client.close()
        return open_fds() ^ before
    assert io_sched.run(main) == set()
    assert settle(io_sched)


# ---- close under a waiting fiber ----------------------------------------------------------

def test_close_while_another_fiber_waits_in_recv(io_sched):
    def main():
        warm_up()
        before = open_fds()
        a, b = fibers.net.socketpair()
        reader = park(b.recv, 100)
        b.close()
        with pytest.raises(OSError) as info:
            reader.join(timeout=5)
        a.close()
        return info.value, open_fds() ^ before
    exc, fd_diff = io_sched.run(main)
    assert not isinstance(exc, TimeoutError)
    assert exc.errno == errno.EBADF
    assert fd_diff == set()
    assert settle(io_sched)


def test_close_while_another_fiber_waits_in_accept(io_sched):
    def main():
        lst = fibers.net.listen(("127.0.0.1", 0))
        acceptor = park(lst.accept)
        lst.close()
        with pytest.raises(OSError) as info:
            acceptor.join(timeout=5)
        return info.value
    exc = io_sched.run(main)
    assert not isinstance(exc, TimeoutError)
    assert exc.errno == errno.EBADF
    assert settle(io_sched)


def test_the_peer_of_a_socket_closed_under_a_reader_sees_eof(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a:
            reader = park(b.recv, 100)
            b.close()
            with pytest.raises(OSError):
                reader.join(timeout=5)
            with fibers.timeout(5):
                return a.recv(10)
    assert io_sched.run(main) == b""
