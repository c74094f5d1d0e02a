"""fibers.net stream sockets: bulk transfer, partial sends, many connections,
resets, half-close, EOF, makefile, context manager, refused connections and
serve()."""
import errno
import hashlib
import logging
import os
import random
import resource
import socket
import struct

import pytest

import fibers
import fibers.net
from capabilities import skip
from iohelp import recv_all, tcp_pair

STREAM_BYTES = 64 << 20


# ---- helpers -----------------------------------------------------------------

def make_pair(kind):
    if kind == "unix":
        return fibers.net.socketpair()
    return tcp_pair()


def chunk_plan(total, seed):
    """Deterministic chunks of varying size (1 byte .. 256 KiB) that add up
    to `total`, as memoryviews into one random block."""
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    view = memoryview(block + block)
    sizes = [1, 7, 4096, 65535, 65536, 65537, 262144]
    sent = 0
    while sent < total:
        size = rng.choice(sizes) if rng.random() < 0.3 else rng.randint(1, 262144)
        size = min(size, total - sent)
        start = rng.randrange(1 << 20)
        yield view[start:start + size]
        sent += size


def stream_through(writer_sock, reader_sock, send_with):
    """Push STREAM_BYTES from writer_sock to reader_sock in two fibers;
    returns ((bytes sent, sha256), (bytes received, sha256))."""

    def writer():
        h = hashlib.sha256()
        n = 0
        for chunk in chunk_plan(STREAM_BYTES, seed=1234):
            send_with(writer_sock, chunk)
            h.update(chunk)
            n += len(chunk)
        writer_sock.shutdown(socket.SHUT_WR)
        return n, h.hexdigest()

    def reader():
        h = hashlib.sha256()
        n = 0
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        for _ in range(STREAM_BYTES):           # bound: >= 1 byte per call
            got = reader_sock.recv_into(buf)
            if got == 0:
                return n, h.hexdigest()
            h.update(view[:got])
            n += got
        raise AssertionError("no EOF after the whole stream")

    w = fibers.spawn(writer)
    r = fibers.spawn(reader)
    return w.join(), r.join()


def send_with_send(sock, chunk):
    """Write a chunk with send(), honouring partial counts."""
    off = 0
    for _ in range(len(chunk) + 1):
        if off == len(chunk):
            return
        n = sock.send(chunk[off:])
        assert 0 < n <= len(chunk) - off
        off += n
    raise AssertionError("send() made no progress")


def send_with_sendall(sock, chunk):
    assert sock.sendall(chunk) is None


# ---- bulk transfer -------------------------------------------------------------

def test_64_mib_through_a_socketpair(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            return stream_through(a, b, send_with_send)
    sent, received = io_sched.run(main)
    assert sent[0] == STREAM_BYTES
    assert received == sent


def test_64_mib_through_tcp(io_sched):
    def main():
        client, server = tcp_pair()
        with client, server:
            return stream_through(client, server, send_with_sendall)
    sent, received = io_sched.run(main)
    assert sent[0] == STREAM_BYTES
    assert received == sent


def test_recv_gets_at_most_n_bytes(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.sendall(b"0123456789")
            first = b.recv(4)
            rest = b.recv(100)
        return first, rest
    assert io_sched.run(main) == (b"0123", b"456789")


# ---- partial sends ---------------------------------------------------------------

def test_send_on_a_small_buffer_returns_a_partial_count(io_sched):
    data = random.Random(7).randbytes(8 << 20)

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            n = a.send(data)
            a.shutdown(socket.SHUT_WR)
            return n, recv_all(b)
    n, got = io_sched.run(main)
    assert 0 < n < len(data)
    assert got == data[:n]


def test_send_blocks_on_a_full_buffer_then_returns_what_fit(io_sched):
    data = b"y" * (8 << 20)

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            first = a.send(data)                  # fills the buffer
            assert 0 < first < len(data)
            drained = []

            def drain_once():
                drained.append(b.recv(1 << 20))
            d = fibers.spawn(drain_once)
            second = a.send(data)                 # must wait for the reader
            drained_before_second_returned = len(drained)
            d.join()
            return second, drained_before_second_returned, len(drained[0])
    second, drained_first, drained = io_sched.run(main)
    assert drained_first == 1                     # send waited for the drain
    assert drained > 0
    assert 0 < second < len(data)


def test_sendall_of_several_mib_completes_while_a_slow_reader_drains(io_sched):
    data = random.Random(3).randbytes(6 << 20)
    progress = {"received": 0, "at_sendall_return": None}

    def reader(sock):
        parts = []
        for _ in range(100_000):
            chunk = sock.recv(16384)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            progress["received"] += len(chunk)
            for _ in range(3):                    # slow: let others run
                fibers.yield_now()
        raise AssertionError("no EOF")

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            r = fibers.spawn(reader, b)
            assert a.sendall(data) is None
            progress["at_sendall_return"] = progress["received"]
            a.shutdown(socket.SHUT_WR)
            return r.join()
    got = io_sched.run(main)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # The buffer is tiny: sendall can only have finished because the reader
    # took almost everything meanwhile.
    assert progress["at_sendall_return"] >= len(data) - (1 << 20)


# ---- many connections ---------------------------------------------------------------

N_CONNECTIONS = 1000


@pytest.fixture
def enough_fds():
    needed = 2 * N_CONNECTIONS + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        skip("fd_limit", f"RLIMIT_NOFILE hard limit {hard} < {needed} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def echo_handler(conn, addr):
    for _ in range(100_000):
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)
    raise AssertionError("echo handler: no EOF")


def test_a_thousand_concurrent_echo_connections(io_sched, enough_fds):
    state = {"open": 0, "peak": 0}

    def client(addr, i):
        msg = f"<client {i}>".encode() * (1 + i % 17)
        with fibers.net.connect(addr) as c:
            state["open"] += 1
            state["peak"] = max(state["peak"], state["open"])
            if state["open"] == N_CONNECTIONS:
                fibers.signal_all("all connected")
            else:
                fibers.wait_signal("all connected", timeout=60)
            c.sendall(msg)
            c.shutdown(socket.SHUT_WR)
            echoed = recv_all(c)
        state["open"] -= 1
        return echoed == msg

    def main():
        server = fibers.net.serve(("127.0.0.1", 0), echo_handler)
        assert server.address[1] != 0
        clients = [fibers.spawn(client, server.address, i)
                   for i in range(N_CONNECTIONS)]
        results = [c.join() for c in clients]
        server.stop()
        return results
    results = io_sched.run(main)
    assert [i for i, ok in enumerate(results) if not ok] == []
    assert state["peak"] == N_CONNECTIONS
    assert state["open"] == 0


# ---- resets, half-close, EOF ---------------------------------------------------------

def reset_from(sock):
    """Close with SO_LINGER 0: the peer gets an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_recv_after_peer_reset_raises_connectionreseterror(io_sched):
    def main():
        client, server = tcp_pair()
        with client:
            reset_from(server)
            with pytest.raises(ConnectionResetError):
                client.recv(10)
    io_sched.run(main)


def test_recv_blocked_when_peer_resets_raises_connectionreseterror(io_sched):
    def main():
        client, server = tcp_pair()
        with client:
            r = fibers.spawn(client.recv, 10)
            fibers.yield_now()
            assert r.state == "suspended"
            reset_from(server)
            with pytest.raises(ConnectionResetError):
                r.join(timeout=10)
    io_sched.run(main)


def test_send_after_peer_reset_raises(io_sched):
    def main():
        client, server = tcp_pair()
        with client:
            reset_from(server)
            fibers.wait_readable(client.fileno(), timeout=10)  # the RST is in
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(3):
                    client.send(b"x" * 1024)
    io_sched.run(main)


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_half_close_peer_sees_eof_and_can_still_answer(io_sched, kind):
    def main():
        a, b = make_pair(kind)
        with a, b:
            a.sendall(b"question")
            a.shutdown(socket.SHUT_WR)
            got = recv_all(b)
            b.sendall(b"answer")
            b.close()
            return got, recv_all(a)
    assert io_sched.run(main) == (b"question", b"answer")


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_recv_returns_empty_bytes_at_eof_every_time(io_sched, kind):
    def main():
        a, b = make_pair(kind)
        with b:
            a.sendall(b"abc")
            a.close()
            return b.recv(10), b.recv(10), b.recv(10)
    assert io_sched.run(main) == (b"abc", b"", b"")


def test_recv_blocks_until_data_arrives(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            r = fibers.spawn(b.recv, 100)
            fibers.yield_now()
            assert r.state == "suspended"
            a.sendall(b"late")
            return r.join(timeout=10)
    assert io_sched.run(main) == b"late"


def test_recv_into_with_nbytes(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.sendall(b"abcdefgh")
            buf = bytearray(8)
            n = b.recv_into(buf, 3)
            return n, bytes(buf)
    assert io_sched.run(main) == (3, b"abc\0\0\0\0\0")


# ---- makefile, context manager, adopting fds -------------------------------------------

def test_makefile_readline(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with b:
            a.sendall(b"line one\nline two\npartial")
            a.close()
            f = b.makefile("rb")
            try:
                return [f.readline() for _ in range(4)]
            finally:
                f.close()
    assert io_sched.run(main) == [b"line one\n", b"line two\n", b"partial", b""]


def test_makefile_readline_waits_for_the_rest_of_the_line(io_sched):
    def writer(sock):
        for piece in (b"hel", b"lo\nwor", b"ld\n"):
            sock.sendall(piece)
            fibers.yield_now()
            fibers.yield_now()
        sock.close()

    def main():
        a, b = fibers.net.socketpair()
        with b:
            w = fibers.spawn(writer, a)
            f = b.makefile("rb")
            try:
                lines = [f.readline() for _ in range(3)]
            finally:
                f.close()
            w.join()
            return lines
    assert io_sched.run(main) == [b"hello\n", b"world\n", b""]


def test_context_manager_closes_the_socket(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with b:
            with a as entered:
                assert entered is a
            assert b.recv(10) == b""              # the peer sees the close
            with pytest.raises(OSError) as info:
                a.send(b"x")
            return info.value.errno
    assert io_sched.run(main) == errno.EBADF


def test_context_manager_closes_on_exception(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with b:
            with pytest.raises(KeyError):
                with a:
                    raise KeyError("inside")
            return b.recv(10)
    assert io_sched.run(main) == b""


def test_using_a_closed_socket_raises_ebadf(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        b.close()
        a.close()
        a.close()                                 # idempotent, as socket.socket
        errs = []
        for op in (lambda: a.recv(1), lambda: a.sendall(b"x"),
                   lambda: a.recv_into(bytearray(1))):
            with pytest.raises(OSError) as info:
                op()
            errs.append(info.value.errno)
        return errs
    assert io_sched.run(main) == [errno.EBADF] * 3


def test_fileno_adopts_an_existing_fd_and_close_closes_it(io_sched):
    def main():
        theirs, mine = socket.socketpair()
        with theirs:
            fd = mine.detach()
            s = fibers.net.Socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
            assert s.fileno() == fd
            assert (s.family, s.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
            theirs.sendall(b"to fibers")
            got = s.recv(100)
            s.sendall(b"to stdlib")
            back = theirs.recv(100)
            s.close()
            with pytest.raises(OSError) as info:
                os.fstat(fd)
            return got, back, info.value.errno
    assert io_sched.run(main) == (b"to fibers", b"to stdlib", errno.EBADF)


def test_detach_hands_the_fd_over(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with b:
            fd = a.detach()
            try:
                os.write(fd, b"raw")              # still open, now ours
                return b.recv(10)
            finally:
                os.close(fd)
    assert io_sched.run(main) == b"raw"


def test_properties_and_names(io_sched):
    def main():
        client, server = tcp_pair()
        with client, server:
            assert client.family == socket.AF_INET
            assert client.type == socket.SOCK_STREAM
            assert client.getpeername() == server.getsockname()
            assert server.getpeername() == client.getsockname()
            assert client.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == \
                socket.SOCK_STREAM
    io_sched.run(main)


# ---- refused connections ---------------------------------------------------------------

@pytest.fixture
def closed_port():
    """A loopback address where nothing listens: bound but not listening,
    so no other process can take the port meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()
    s.close()


def test_connect_ex_returns_econnrefused(io_sched, closed_port):
    def main():
        with fibers.net.Socket() as s:
            return s.connect_ex(closed_port)
    assert io_sched.run(main) == errno.ECONNREFUSED


def test_connect_ex_returns_zero_on_success(io_sched):
    def main():
        with fibers.net.listen(("127.0.0.1", 0)) as lst:
            with fibers.net.Socket() as s:
                return s.connect_ex(lst.getsockname())
    assert io_sched.run(main) == 0


def test_socket_connect_raises_connectionrefusederror(io_sched, closed_port):
    def main():
        with fibers.net.Socket() as s:
            with pytest.raises(ConnectionRefusedError):
                s.connect(closed_port)
    io_sched.run(main)


def test_net_connect_raises_connectionrefusederror(io_sched, closed_port):
    def main():
        with pytest.raises(ConnectionRefusedError):
            fibers.net.connect(closed_port)
    io_sched.run(main)


# ---- serve() ------------------------------------------------------------------------------

def test_serve_closes_the_connection_when_the_handler_returns(io_sched):
    seen = []

    def handler(conn, addr):
        seen.append(addr)
        conn.sendall(b"hi " + conn.recv(100))

    def main():
        server = fibers.net.serve(("127.0.0.1", 0), handler)
        with fibers.net.connect(server.address) as c:
            c.sendall(b"there")
            got = recv_all(c)                     # EOF: the server closed conn
            me = c.getsockname()
        server.stop()
        return got, me
    got, me = io_sched.run(main)
    assert got == b"hi there"
    assert seen == [me]


def test_server_stop_stops_accepting(io_sched):
    def main():
        server = fibers.net.serve(("127.0.0.1", 0), echo_handler)
        addr = server.address
        server.stop()
        with pytest.raises(ConnectionRefusedError):
            fibers.net.connect(addr)
    io_sched.run(main)


def test_server_stop_with_grace_kills_stuck_handlers(io_sched):
    log = []

    def stuck(conn, addr):
        log.append("started")
        try:
            conn.recv(100)                        # the client never sends
        finally:
            log.append("finally")

    def main():
        server = fibers.net.serve(("127.0.0.1", 0), stuck)
        with fibers.net.connect(server.address) as c:
            fibers.wait_for(lambda: "started" in log, timeout=10)
            t0 = fibers.now()
            server.stop(grace=2)
            elapsed = fibers.now() - t0
            return elapsed, recv_all(c)
    elapsed, got = io_sched.run(main)
    assert 2 <= elapsed < 2.5
    assert log == ["started", "finally"]
    assert got == b""                             # conn was closed


def test_makefile_buffering_must_be_an_int():
    s = fibers.net.Socket()
    try:
        for bad in ("8", 1.5, b""):
            with pytest.raises(TypeError, match="buffering"):
                s.makefile("rb", buffering=bad)
        s.makefile("rb", buffering=None).close()
        s.makefile("rb", buffering=-1).close()
    finally:
        s.close()


def test_server_stop_removes_the_unix_socket_file_serve_made(io_sched,
                                                             tmp_path):
    paths = [str(tmp_path / "str.sock"), os.fsencode(tmp_path / "b.sock")]

    def main():
        for path in paths:
            server = fibers.net.serve(path, echo_handler)
            assert os.path.exists(path)
            with fibers.net.connect(path) as c:
                c.sendall(b"x")
                assert c.recv(1) == b"x"
            server.stop()
            assert not os.path.exists(path)
    io_sched.run(main)


def test_server_stop_leaves_a_file_it_did_not_make(io_sched, tmp_path):
    path = str(tmp_path / "s.sock")

    def main():
        server = fibers.net.serve(path, echo_handler)
        # Someone else's file at the path now: not ours to remove.
        os.unlink(path)
        with open(path, "w") as f:
            f.write("not a socket")
        server.stop()
        with open(path) as f:
            return f.read()
    assert io_sched.run(main) == "not a socket"


def test_server_on_an_abstract_unix_address(io_sched):
    addr = f"\0fibers-test-{os.getpid()}"

    def main():
        server = fibers.net.serve(addr, echo_handler)
        with fibers.net.connect(addr) as c:
            c.sendall(b"abstract")
            got = c.recv(100)
        server.stop()
        return got
    assert io_sched.run(main) == b"abstract"


def reset_by_peer(addr):
    """Connect, exchange a byte, then close with an RST (SO_LINGER 0)."""
    c = fibers.net.connect(addr)
    c.sendall(b"x")
    assert c.recv(1) == b"x"
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_serve_ends_a_connection_reset_by_the_client_quietly(io_sched,
                                                             caplog):
    caplog.set_level(logging.DEBUG, logger="fibers")
    errors = []

    def echo_until_reset(conn, addr):
        try:
            echo_handler(conn, addr)
        except OSError as e:
            errors.append(type(e))
            raise

    def flood(conn, addr):
        # Writes to a client that has gone: EPIPE or ECONNRESET.
        try:
            for _ in range(10_000):
                conn.sendall(b"y" * 65536)
        except OSError as e:
            errors.append(type(e))
            raise

    def main():
        s1 = fibers.net.serve(("127.0.0.1", 0), echo_until_reset)
        reset_by_peer(s1.address)
        s2 = fibers.net.serve(("127.0.0.1", 0), flood)
        c = fibers.net.connect(s2.address)
        c.recv(1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        c.close()
        fibers.wait_for(lambda: len(errors) == 2, timeout=10)
        fibers.wait_for(lambda: s1.connections == s2.connections == 0,
                        timeout=10)
        s1.stop()
        s2.stop()
    io_sched.run(main)
    assert set(errors) <= {ConnectionResetError, BrokenPipeError}
    fibers_records = [r for r in caplog.records if r.name == "fibers"]
    assert [r for r in fibers_records if r.levelno >= logging.WARNING] == []
    ended = [r for r in fibers_records if "ended" in r.getMessage()]
    assert len(ended) == 2 and all(r.levelno == logging.DEBUG for r in ended)


def test_serve_still_logs_other_handler_errors(io_sched, errlog):
    def broken(conn, addr):
        raise ValueError("handler bug")

    def main():
        server = fibers.net.serve(("127.0.0.1", 0), broken)
        with fibers.net.connect(server.address) as c:
            assert recv_all(c) == b""
        fibers.wait_for(lambda: server.connections == 0, timeout=10)
        server.stop()
    io_sched.run(main)
    errors = [r for r in errlog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info[0] is ValueError


def test_a_socket_made_without_init_is_closed(io_sched):
    # Socket.__new__ alone used to leave fd 0 (stdin) in the object, and
    # recv() read from it.
    s = fibers.net.Socket.__new__(fibers.net.Socket)
    assert s.closed and s.fileno() == -1
    assert repr(s) == "<fibers.net.Socket [closed]>"

    def main():
        with pytest.raises(OSError) as info:
            s.recv(1)
        return info.value.errno
    assert io_sched.run(main) == errno.EBADF
    s.close()
    t = fibers.net.Socket()
    with pytest.raises(RuntimeError, match="twice"):
        t.__init__()
    t.close()
