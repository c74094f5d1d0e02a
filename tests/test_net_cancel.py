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


# ---- a cancelled recv that completes with data ------------------------------
#
# A cancel can lose the race: the recv completes with its data anyway
# (fib_pump.h, promise 2).  On io_uring without DEFER_TASKRUN (kernels
# before 6.1, or FIBERS_URING_NO_DEFER_TASKRUN=1) the kernel completes a
# recv as soon as data comes, not at the scheduler's next wait, so this is
# common there.  That data must go to the next recv, in order.

@pytest.fixture
def late_sched(backend, monkeypatch):
    """A scheduler on the real clock (the races below are in real time),
    its io_uring ring set up without DEFER_TASKRUN."""
    monkeypatch.setenv("FIBERS_URING_NO_DEFER_TASKRUN", "1")
    s = fibers.Scheduler(backend=backend)
    assert not s._defers_taskrun()
    yield s
    s.close()


@pytest.mark.parametrize("into", [False, True])
def test_data_that_beats_the_cancel_of_a_killed_recv_is_kept(late_sched,
                                                             into):
    # The data arrives after the tick's wait and before the killed reader
    # cancels its recv: from a quantum step, which runs after the io step.
    # The kernel completes the recv with it (its cancel, next tick, comes
    # too late), and that completion comes after the reader has left.
    def read(sock):
        if into:
            buf = bytearray(100)
            return bytes(buf[:sock.recv_into(buf)])
        return sock.recv(100)

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            reader = park(read, b)
            fibers.yield_now()          # an io step: the recv is submitted
            sent = []

            def send_first():
                if not sent:
                    sent.append(os.write(a.fileno(), b"first"))

            reader.kill(block=False)    # it leaves at the next tick
            late_sched.add_quantum_step(send_first)
            fibers.yield_now()
            late_sched.remove_quantum_step(send_first)
            assert sent == [5] and reader.dead
            a.sendall(b"second")
            got = b""
            with fibers.timeout(5):
                for _ in range(11):
                    if len(got) >= 11:
                        break
                    got += read(b)
            return got
    assert late_sched.run(main) == b"firstsecond"
    assert settle(late_sched)


@pytest.mark.parametrize("pair", ["socketpair", "tcp"])
def test_recv_timeouts_racing_a_sender_lose_and_reorder_nothing(late_sched,
                                                                pair):
    # A thread sends 2 MB in uneven pieces while a fiber reads it with a
    # 10 us timeout, so that recvs time out just as data arrives.  Every
    # 64 KiB the thread waits until the reader has timed out once more, so
    # the race is run at least that often on any machine.  On TCP the
    # reader is the accepted side: multishot on io_uring, and its bulk
    # (direct) reads.
    import hashlib
    import random
    import socket
    import threading

    payload = random.Random(1).randbytes(2_000_000)
    pauses = len(payload) // 65536
    timed_out = threading.Event()

    def send_all(sock):
        rng = random.Random(2)
        off = 0
        pause = 65536
        try:
            while off < len(payload):
                if off >= pause:
                    pause += 65536
                    timed_out.clear()
                    if not timed_out.wait(30):
                        return          # the reader is gone
                n = rng.randint(1, 3000)
                sock.sendall(payload[off:off + n])
                off += n
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                        # the reader gave up: it says why

    def main():
        if pair == "socketpair":
            tx, rx = socket.socketpair()
            rx = fibers.net.Socket(fileno=rx.detach())
        else:
            lst = fibers.net.listen(("127.0.0.1", 0))
            with lst:
                tx = socket.create_connection(lst.getsockname())
                rx, _ = lst.accept()
        tx.settimeout(60)               # a bound for the thread
        rx.settimeout(1e-5)
        sender = threading.Thread(target=send_all, args=(tx,))
        sender.start()
        digest = hashlib.sha256()
        got = timeouts = 0
        try:
            for _ in range(10_000_000):
                try:
                    chunk = rx.recv(65536)
                except TimeoutError:
                    timeouts += 1
                    timed_out.set()
                    continue
                if not chunk:
                    break
                digest.update(chunk)
                got += len(chunk)
        finally:
            rx.close()                  # the thread cannot block for good
            timed_out.set()
            sender.join()
            tx.close()
        return got, timeouts, digest.hexdigest()

    got, timeouts, digest = late_sched.run(main)
    assert timeouts >= pauses           # the race was run
    assert got == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()
