"""An fd number outlives its socket: the pump's state for it must not."""
import threading

import pytest

import fibers
import fibers.net
from iohelp import NextFd


def test_socket_collected_in_another_thread_leaves_no_stale_state(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        fibers.spawn(a.sendall, b"x")
        assert b.recv(1) == b"x"             # b's fd is now known to the pump
        old_fd = b.fileno()
        holder = [b]
        del b
        # The last reference goes in another thread, where the socket can
        # not touch the scheduler's pump (it is not thread-safe).
        t = threading.Thread(target=holder.clear)
        t.start()
        t.join(10)
        # The new pair gets the old number, whatever else is free.
        nxt = NextFd(old_fd)
        nxt.free()
        try:
            c, d = fibers.net.socketpair()
        finally:
            nxt.close()
        reused = [s for s in (c, d) if s.fileno() == old_fd]
        assert reused, "the fd number was not reused; the test proves nothing"
        r = reused[0]
        w = d if r is c else c

        def later():
            fibers.sleep(1)
            w.sendall(b"after")
        fibers.spawn(later)
        with fibers.timeout(5):
            got = r.recv(10)
        for s in (a, c, d):
            s.close()
        return got

    assert io_sched.run(main) == b"after"


def test_accepted_connection_on_a_reused_number(io_sched):
    def main():
        lst = fibers.net.listen(("127.0.0.1", 0))
        cli = fibers.net.connect(lst.getsockname())
        conn, _ = lst.accept()
        cli.sendall(b"1")
        assert conn.recv(1) == b"1"
        old_fd = conn.fileno()
        holder = [conn]
        del conn
        t = threading.Thread(target=holder.clear)
        t.start()
        t.join(10)
        cli.close()
        # The accepted fd gets the old number: the client's socket is made
        # while the number is held, and freed before the connection exists
        # (io_uring's multishot accept takes it the moment it arrives).
        nxt = NextFd(old_fd)
        try:
            cli2 = fibers.net.Socket()
            nxt.free()
            cli2.connect(lst.getsockname())
            conn2, _ = lst.accept()
        finally:
            nxt.close()

        def later():
            fibers.sleep(1)
            cli2.sendall(b"2")
        fibers.spawn(later)
        with fibers.timeout(5):
            got = conn2.recv(1)
        reused = conn2.fileno() == old_fd
        for s in (lst, cli2, conn2):
            s.close()
        return got, reused

    got, reused = io_sched.run(main)
    assert reused, "the fd number was not reused; the test proves nothing"
    assert got == b"2"
