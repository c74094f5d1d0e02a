"""Server connections: on io_uring they are read with multishot recv and
accepted with multishot accept; on epoll with the plain calls.  The same
guarantees must hold either way: flow control, nothing lost, no fd leaked."""
import hashlib
import os

import pytest

import fibers
import fibers.net
from iohelp import open_fds, warm_up


def accepted_pair():
    """A listening socket, a client, and the server side of the connection
    (accepted, so on io_uring it is read with multishot recv)."""
    lst = fibers.net.listen(("127.0.0.1", 0))
    cli = fibers.net.connect(lst.getsockname())
    conn, _ = lst.accept()
    return lst, cli, conn


def test_a_slow_reader_pushes_back_on_the_sender(io_sched):
    # The reader starts 10 s late.  If the server side kept reading into
    # memory without bound, the sender would finish at once; with flow
    # control it can only finish after the reader starts.
    payload = os.urandom(1 << 20) * 32            # 32 MiB

    def main():
        lst, cli, conn = accepted_pair()
        sent_at = []

        def sender():
            cli.sendall(payload)
            sent_at.append(fibers.now())
            cli.shutdown(2 - 1)                     # SHUT_WR

        fibers.spawn(sender)
        # One read first: on io_uring it arms the connection's multishot
        # recv, which must then stop at its high-water mark.
        first = conn.recv(1)
        fibers.sleep(10)
        h = hashlib.sha256(first)
        total = len(first)
        for _ in range(100_000):
            data = conn.recv(65536)
            if not data:
                break
            h.update(data)
            total += len(data)
        for s in (lst, cli, conn):
            s.close()
        return sent_at, total, h.hexdigest()

    sent_at, total, digest = io_sched.run(main)
    assert total == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()
    assert sent_at and sent_at[0] >= 10


def test_killing_a_reader_loses_no_data(io_sched):
    def main():
        lst, cli, conn = accepted_pair()
        reader = fibers.spawn(conn.recv, 100)
        fibers.yield_now()
        assert reader.state == "suspended"
        reader.kill()
        cli.sendall(b"first")
        fibers.sleep(0.1)
        cli.sendall(b"second")
        got = b""
        for _ in range(10):
            got += conn.recv(100)
            if got == b"firstsecond":
                break
        for s in (lst, cli, conn):
            s.close()
        return got

    assert io_sched.run(main) == b"firstsecond"


def test_recv_returns_what_has_arrived_up_to_the_limit(io_sched):
    def main():
        lst, cli, conn = accepted_pair()
        cli.sendall(b"a" * 100)
        fibers.sleep(0.1)
        cli.sendall(b"b" * 100)
        fibers.sleep(0.1)
        first = conn.recv(150)
        rest = conn.recv(1000)
        for s in (lst, cli, conn):
            s.close()
        return first, rest

    first, rest = io_sched.run(main)
    assert first + rest == b"a" * 100 + b"b" * 100
    assert len(first) <= 150


def test_connections_nobody_accepted_are_closed_with_the_listener(io_sched):
    def main():
        warm_up()
        lst = fibers.net.listen(("127.0.0.1", 0))
        addr = lst.getsockname()
        before = open_fds()
        c0 = fibers.net.connect(addr)
        conn, _ = lst.accept()
        acceptor = fibers.spawn(lst.accept)
        fibers.yield_now()
        acceptor.kill()
        clients = [fibers.net.connect(addr) for _ in range(3)]
        fibers.sleep(0.1)            # (io_uring: accepted into the queue)
        lst.close()
        for s in clients + [c0, conn]:
            s.close()
        fibers.sleep(0.1)
        return open_fds() - before

    # Only fds that existed before may remain (the listener is closed too).
    assert io_sched.run(main) == set()


def test_single_shot_mode_still_serves(monkeypatch, backend):
    monkeypatch.setenv("FIBERS_MULTISHOT", "0")
    sched = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                             backend=backend)

    def handler(conn, addr):
        while True:
            data = conn.recv(1024)
            if not data:
                return
            conn.sendall(data.upper())

    def main():
        srv = fibers.net.serve(("127.0.0.1", 0), handler)
        with fibers.net.connect(srv.address) as c:
            replies = []
            for word in (b"one", b"two", b"three"):
                c.sendall(word)
                replies.append(c.recv(1024))
        srv.stop(grace=1)
        return replies

    try:
        assert sched.run(main) == [b"ONE", b"TWO", b"THREE"]
    finally:
        sched.close()


@pytest.mark.parametrize("size", [1, 4096, 100_000])
def test_recv_into_on_a_server_connection(io_sched, size):
    payload = os.urandom(size)

    def main():
        lst, cli, conn = accepted_pair()
        fibers.spawn(cli.sendall, payload)
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        for _ in range(10_000):
            if got == size:
                break
            got += conn.recv_into(view[got:])
        for s in (lst, cli, conn):
            s.close()
        return bytes(buf)

    assert io_sched.run(main) == payload


def test_bulk_then_small_messages_switch_read_modes_losing_nothing(io_sched):
    # A bulk upload turns an io_uring connection's multishot recv off (the
    # reader then reads straight into its own buffers); small request /
    # reply traffic afterwards turns it back on.  Whatever the mode, the
    # bytes arrive whole and in order, through recv and recv_into alike.
    bulk = os.urandom(1 << 20) * 8                 # 8 MiB
    modes = []

    def main():
        lst, cli, conn = accepted_pair()

        def sender():
            cli.sendall(bulk)
            for i in range(20):
                assert cli.recv(1) == b"k"            # wait for the reply
                cli.sendall(b"msg%02d" % i)
            cli.shutdown(1)                           # SHUT_WR

        fibers.spawn(sender)
        got = bytearray()
        buf = bytearray(65536)
        for i in range(10_000):
            if len(got) >= len(bulk):
                break
            if i % 2:
                n = conn.recv_into(buf)
                got += buf[:n]
            else:
                got += conn.recv(65536)
        modes.append(conn._read_mode())
        small = []
        for _ in range(20):
            conn.sendall(b"k")
            small.append(conn.recv(100))
        modes.append(conn._read_mode())
        assert conn.recv(100) == b""
        for s in (lst, cli, conn):
            s.close()
        return bytes(got), small

    got, small = io_sched.run(main)
    assert got == bulk
    assert small == [b"msg%02d" % i for i in range(20)]
    if io_sched.backend == "io_uring":
        assert modes == ["direct", "multishot"]
    else:
        assert modes == ["single", "single"]
