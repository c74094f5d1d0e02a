"""recv(n, MSG_WAITALL) and recv_into(..., MSG_WAITALL): exactly n bytes
unless the stream ends first, as a blocking socket.socket gives them, on
every path: epoll, io_uring single-shot (a client) and io_uring multishot
(a server's accepted connection)."""
import socket
import struct

import pytest

import fibers
import fibers.net
from iohelp import tcp_pair

WAITALL = socket.MSG_WAITALL


def pair(kind):
    """(peer, reader): the reader is the side under test."""
    if kind == "unix":
        return fibers.net.socketpair()
    client, server = tcp_pair()
    if kind == "accepted":
        return client, server          # read the server's side (multishot)
    return server, client              # read the client's side


def trickle(sock, data, piece=2, gap=0.1, then_close=False):
    """Send data a few bytes at a time, with time passing in between."""
    for i in range(0, len(data), piece):
        sock.sendall(data[i:i + piece])
        fibers.sleep(gap)
    if then_close:
        sock.shutdown(socket.SHUT_WR)


KINDS = ["accepted", "client", "unix"]


@pytest.mark.parametrize("kind", KINDS)
def test_recv_waitall_returns_exactly_n_bytes(io_sched, kind):
    def main():
        peer, r = pair(kind)
        # Arm the reader first (on io_uring, the multishot recv of an
        # accepted connection), so the pieces arrive one by one.
        fibers.spawn(trickle, peer, b"0123456789" * 2, 4)
        first = r.recv(10, WAITALL)
        second = r.recv(10, WAITALL)
        peer.close()
        r.close()
        return first, second
    assert io_sched.run(main) == (b"0123456789", b"0123456789")


@pytest.mark.parametrize("kind", KINDS)
def test_recv_into_waitall_fills_the_buffer(io_sched, kind):
    def main():
        peer, r = pair(kind)
        fibers.spawn(trickle, peer, b"abcdefghijkl", 3)
        whole = bytearray(8)
        n1 = r.recv_into(whole, 0, WAITALL)
        part = bytearray(10)
        n2 = r.recv_into(memoryview(part), 4, WAITALL)
        peer.close()
        r.close()
        return n1, bytes(whole), n2, bytes(part)
    assert io_sched.run(main) == (8, b"abcdefgh", 4,
                                  b"ijkl" + b"\0" * 6)


@pytest.mark.parametrize("kind", KINDS)
def test_recv_waitall_at_eof_returns_what_there_was(io_sched, kind):
    def main():
        peer, r = pair(kind)
        fibers.spawn(trickle, peer, b"xyz", 1, 0.1, True)
        got = r.recv(10, WAITALL)
        at_eof = r.recv(10, WAITALL)
        buf = bytearray(4)
        at_eof_into = r.recv_into(buf, 0, WAITALL)
        peer.close()
        r.close()
        return got, at_eof, at_eof_into
    assert io_sched.run(main) == (b"xyz", b"", 0)


@pytest.mark.parametrize("kind", KINDS)
def test_recv_waitall_timeout_loses_nothing(io_sched, kind):
    # The socket's timeout covers the whole call; what arrived before it
    # expired is kept for the next recv.
    def main():
        peer, r = pair(kind)
        r.settimeout(5)
        fibers.spawn(trickle, peer, b"1234")
        start = fibers.now()
        with pytest.raises(TimeoutError):
            r.recv(10, WAITALL)
        took = fibers.now() - start
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(1):
                r.recv_into(bytearray(10), 0, WAITALL)
        peer.sendall(b"5678")
        rest = r.recv(8, WAITALL)
        peer.close()
        r.close()
        return took, rest
    took, rest = io_sched.run(main)
    assert took == pytest.approx(5)
    assert rest == b"12345678"


def test_waitall_with_peek_is_refused(io_sched):
    def main():
        peer, r = fibers.net.socketpair()
        with fibers.timeout(1):        # fail, not hang, if it waits
            with pytest.raises(ValueError, match="MSG_PEEK"):
                r.recv(4, WAITALL | socket.MSG_PEEK)
            with pytest.raises(ValueError, match="MSG_PEEK"):
                r.recv_into(bytearray(4), 0, WAITALL | socket.MSG_PEEK)
        peer.close()
        r.close()
    io_sched.run(main)


def test_waitall_on_a_non_blocking_socket_returns_what_is_there(io_sched):
    # As socket.socket: a non-blocking socket never waits.
    def main():
        peer, r = fibers.net.socketpair()
        r.setblocking(False)
        peer.sendall(b"ab")
        got = r.recv(10, WAITALL)
        peer.close()
        r.close()
        return got
    assert io_sched.run(main) == b"ab"


@pytest.mark.parametrize("kind", ["accepted", "client"])
def test_recv_waitall_then_reset_gives_the_data_then_the_error(io_sched,
                                                               kind):
    # As socket.socket does: what arrived before the reset first, then
    # ConnectionResetError once, then end of stream.
    def main():
        peer, r = pair(kind)

        def reset_later():
            peer.sendall(b"abc")
            fibers.sleep(0.5)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
            peer.close()

        fibers.spawn(reset_later)
        got = r.recv(10, WAITALL)
        with pytest.raises(ConnectionResetError):
            r.recv(10, WAITALL)
        at_end = r.recv(10)
        r.close()
        return got, at_end
    assert io_sched.run(main) == (b"abc", b"")
