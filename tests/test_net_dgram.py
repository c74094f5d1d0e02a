"""UDP over IPv4 and IPv6, Unix stream and datagram sockets, IPv6 TCP."""
import socket

import pytest

import fibers
import fibers.net
from iohelp import needs_ipv6, recv_all


FAMILIES = [
    pytest.param((socket.AF_INET, "127.0.0.1"), id="ipv4"),
    pytest.param((socket.AF_INET6, "::1"), id="ipv6", marks=needs_ipv6),
]


def udp_socket(family, host):
    s = fibers.net.Socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


# ---- UDP ------------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMILIES)
def test_udp_sendto_recvfrom_with_addresses(io_sched, fam):
    def main():
        with udp_socket(*fam) as a, udp_socket(*fam) as b:
            assert a.family == fam[0] and a.type == socket.SOCK_DGRAM
            assert a.sendto(b"ping", b.getsockname()) == 4
            data, src = b.recvfrom(100)
            assert (data, src) == (b"ping", a.getsockname())
            assert b.sendto(b"pong", src) == 4
            return a.recvfrom(100), b.getsockname()
    (data, src), b_name = io_sched.run(main)
    assert (data, src) == (b"pong", b_name)


@pytest.mark.parametrize("fam", FAMILIES)
def test_udp_recvfrom_blocks_until_a_datagram_arrives(io_sched, fam):
    def main():
        with udp_socket(*fam) as a, udp_socket(*fam) as b:
            r = fibers.spawn(b.recvfrom, 100)
            fibers.yield_now()
            assert r.state == "suspended"
            a.sendto(b"late", b.getsockname())
            return r.join(timeout=5), a.getsockname()
    (data, src), a_name = io_sched.run(main)
    assert (data, src) == (b"late", a_name)


@pytest.mark.parametrize("fam", FAMILIES)
def test_udp_keeps_datagram_boundaries(io_sched, fam):
    sizes = [1, 1000, 60000, 0, 17]

    def main():
        with udp_socket(*fam) as a, udp_socket(*fam) as b:
            for i, n in enumerate(sizes):
                a.sendto(bytes([i]) * n, b.getsockname())
            return [b.recvfrom(65536)[0] for _ in sizes]
    got = io_sched.run(main)
    assert got == [bytes([i]) * n for i, n in enumerate(sizes)]


def test_udp_connected_send_and_recv(io_sched):
    def main():
        with udp_socket(socket.AF_INET, "127.0.0.1") as a, \
                udp_socket(socket.AF_INET, "127.0.0.1") as b:
            a.connect(b.getsockname())
            assert a.send(b"hello") == 5
            return b.recv(100)
    assert io_sched.run(main) == b"hello"


# ---- Unix stream ------------------------------------------------------------------

def test_unix_stream_listen_and_connect_by_path(io_sched, tmp_path):
    path = str(tmp_path / "stream.sock")

    def server(lst):
        conn, _ = lst.accept()
        with conn:
            conn.sendall(b"echo:" + recv_all(conn))

    def main():
        with fibers.net.listen(path) as lst:
            assert lst.family == socket.AF_UNIX
            assert lst.getsockname() == path
            s = fibers.spawn(server, lst)
            with fibers.net.connect(path) as c:
                assert c.family == socket.AF_UNIX
                assert c.getpeername() == path
                c.sendall(b"over unix")
                c.shutdown(socket.SHUT_WR)
                got = recv_all(c)
            s.join()
            return got
    assert io_sched.run(main) == b"echo:over unix"


def test_unix_connect_to_missing_path(io_sched, tmp_path):
    def main():
        with pytest.raises(FileNotFoundError):
            fibers.net.connect(str(tmp_path / "nobody-here.sock"))
    io_sched.run(main)


# ---- Unix datagram -----------------------------------------------------------------

def test_unix_datagram_sendto_recvfrom(io_sched, tmp_path):
    pa, pb = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")

    def main():
        with fibers.net.Socket(socket.AF_UNIX, socket.SOCK_DGRAM) as a, \
                fibers.net.Socket(socket.AF_UNIX, socket.SOCK_DGRAM) as b:
            a.bind(pa)
            b.bind(pb)
            r = fibers.spawn(b.recvfrom, 100)
            fibers.yield_now()
            assert a.sendto(b"dgram", pb) == 5
            first = r.join(timeout=5)
            a.sendto(b"x" * 3000, pb)
            a.sendto(b"y", pb)
            return first, b.recvfrom(10000), b.recvfrom(10000)
    assert io_sched.run(main) == ((b"dgram", pa), (b"x" * 3000, pa), (b"y", pa))


def test_unix_datagram_socketpair_keeps_boundaries(io_sched):
    def main():
        a, b = fibers.net.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            assert a.type == socket.SOCK_DGRAM
            a.send(b"one")
            a.send(b"two!")
            return b.recv(100), b.recv(100)
    assert io_sched.run(main) == (b"one", b"two!")


# ---- IPv6 TCP ------------------------------------------------------------------------

@needs_ipv6
def test_ipv6_tcp_echo(io_sched):
    def handler(conn, addr):
        conn.sendall(recv_all(conn))

    def main():
        server = fibers.net.serve(("::1", 0), handler)
        host, port = server.address[:2]
        assert host == "::1" and port != 0
        with fibers.net.connect(("::1", port)) as c:
            assert c.family == socket.AF_INET6
            c.sendall(b"six" * 1000)
            c.shutdown(socket.SHUT_WR)
            got = recv_all(c)
        server.stop()
        return got
    assert io_sched.run(main) == b"six" * 1000


@needs_ipv6
def test_listen_picks_ipv6_for_a_host_with_colons(io_sched):
    def main():
        with fibers.net.listen(("::1", 0)) as lst:
            assert lst.family == socket.AF_INET6
            with fibers.net.connect(lst.getsockname()[:2]) as c:
                conn, addr = lst.accept()
                with conn:
                    assert addr == c.getsockname()
                    c.sendall(b"v6")
                    return conn.recv(10)
    assert io_sched.run(main) == b"v6"
