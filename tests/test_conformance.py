"""Conformance: fibers.net.Socket against the stdlib's socket.socket.

As uvloop runs its suite against both uvloop and asyncio, every test here
is written once, in blocking style, against a small `env` (a runner), and
runs three ways:

* ``io_uring`` and ``epoll``: fibers.net sockets in a Scheduler on a
  VirtualClock(autojump=True) -- timeouts are exact virtual seconds;
  ``env.spawn`` makes a fiber.
* ``stdlib``: socket.socket, with ``env.spawn`` making a thread -- the
  reference.  Its timeouts are small real ones (``env.T``), used only where
  a test asserts that a timeout happens, never how long it took.

The stdlib run is the oracle: a test asserts exactly what socket.socket
gives.  Where fibers gives something else, the case is marked with
``fibers_differs`` -- an xfail(strict=True) for the fibers runners only --
so that the difference is recorded and the suite stays green; the fix
belongs in fibers, not in the test.

env offers: socket(family, type), socketpair(family, type), listen(addr),
connect(addr, timeout=None), spawn(fn, *args) -> .join(), sleep(s),
path(name) (a Unix socket path in a fresh directory), T (a timeout that
elapses), run(main).
"""
import array
import errno
import faulthandler
import fcntl
import os
import shutil
import socket
from socket import AF_INET, AF_UNIX, SO_REUSEADDR, SOCK_STREAM, SOL_SOCKET
import tempfile
import threading
import time

import pytest

import fibers
import fibers.net
from iohelp import needs_ipv6, recv_all, skip_unless_backend_runs


# (The class's methods are named socket and socketpair too.)
_StdSocket = socket.socket
_std_socketpair = socket.socketpair


# ---- runners -------------------------------------------------------------------

def _family_of(address):
    # As fibers.net._family_of: a str path is Unix, a host with ':' IPv6.
    if isinstance(address, (str, bytes)):
        return socket.AF_UNIX
    if ":" in address[0]:
        return socket.AF_INET6
    return socket.AF_INET


class _Env:
    def __init__(self, name, tmpdir):
        self.name = name
        self._tmpdir = tmpdir
        self._n = 0

    def path(self, name="s"):
        self._n += 1
        return os.path.join(self._tmpdir, f"{name}{self._n}")


class FibersEnv(_Env):
    """fibers.net on one backend, in a scheduler on a virtual clock."""
    T = 2.5             # virtual seconds: exact, and costs nothing

    def __init__(self, name, tmpdir):
        super().__init__(name, tmpdir)
        self.sched = fibers.Scheduler(
            clock=fibers.VirtualClock(autojump=True), backend=name)

    def socket(self, family=AF_INET, type=SOCK_STREAM):
        return fibers.net.Socket(family, type)

    def socketpair(self, family=AF_UNIX, type=SOCK_STREAM):
        return fibers.net.socketpair(family, type)

    def listen(self, address):
        return fibers.net.listen(address)

    def connect(self, address, timeout=None):
        return fibers.net.connect(address, timeout)

    def spawn(self, fn, *args):
        return fibers.spawn(fn, *args)

    def sleep(self, seconds):
        fibers.sleep(seconds)

    def run(self, main):
        return self.sched.run(main)

    def close(self):
        self.sched.close()


class _Thread:
    """A thread whose join() returns the result or re-raises, as a
    fiber's does."""

    def __init__(self, fn, args):
        self._result = self._exc = None
        self._t = threading.Thread(target=self._body, args=(fn, args),
                                   daemon=True)
        self._t.start()

    def _body(self, fn, args):
        try:
            self._result = fn(*args)
        except BaseException as e:          # handed to join()
            self._exc = e

    def join(self, timeout=30):
        self._t.join(timeout)
        if self._t.is_alive():
            raise AssertionError("thread did not finish")
        if self._exc is not None:
            raise self._exc
        return self._result


class StdlibEnv(_Env):
    """The reference: socket.socket, peers in threads."""
    T = 0.05            # real seconds; only ever asserted to elapse

    def socket(self, family=AF_INET, type=SOCK_STREAM):
        return _StdSocket(family, type)

    def socketpair(self, family=AF_UNIX, type=SOCK_STREAM):
        return _std_socketpair(family, type)

    def listen(self, address):
        # What fibers.net.listen does, with socket.socket.
        sock = _StdSocket(_family_of(address), SOCK_STREAM)
        try:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self, address, timeout=None):
        # What fibers.net.connect does, with socket.socket.
        sock = _StdSocket(_family_of(address), SOCK_STREAM)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def spawn(self, fn, *args):
        return _Thread(fn, args)

    def sleep(self, seconds):
        time.sleep(seconds)

    def run(self, main):
        return main()

    def close(self):
        pass


def fibers_differs(reason, backends=("io_uring", "epoll"), when=None):
    """Record a difference from socket.socket: the test is an
    xfail(strict=True) on the fibers runners in `backends` (and, with
    `when`, only for the parameter sets for which when(**params) is true).
    The stdlib run still checks the expectation."""
    def deco(fn):
        fn.__dict__.setdefault("_fibers_differs", []).append(
            (reason, tuple(backends), when))
        return fn
    return deco


@pytest.fixture(params=["io_uring", "epoll", "stdlib"])
def env(request, _real_stderr_fd):
    name = request.param
    skip_unless_backend_runs(name)
    if name != "stdlib":
        callspec = getattr(request.node, "callspec", None)
        params = dict(callspec.params) if callspec is not None else {}
        params.pop("env", None)
        for reason, backends, when in getattr(request.function,
                                              "_fibers_differs", ()):
            if name in backends and (when is None or when(**params)):
                request.applymarker(pytest.mark.xfail(
                    strict=True,
                    reason=f"fibers differs from socket.socket: {reason}"))
    tmpdir = tempfile.mkdtemp(prefix="fconf")
    e = StdlibEnv(name, tmpdir) if name == "stdlib" else \
        FibersEnv(name, tmpdir)
    faulthandler.dump_traceback_later(60.0, exit=True, file=_real_stderr_fd)
    try:
        yield e
    finally:
        faulthandler.cancel_dump_traceback_later()
        e.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


_needs_ipv6 = needs_ipv6

FAMS = [
    pytest.param("unix", id="unix"),
    pytest.param("ipv4", id="ipv4"),
    pytest.param("ipv6", id="ipv6", marks=_needs_ipv6),
]
IP_FAMS = FAMS[1:]


def bind_addr(env, fam):
    if fam == "unix":
        return env.path()
    return ("127.0.0.1", 0) if fam == "ipv4" else ("::1", 0)


def sock_family(fam):
    return {"unix": socket.AF_UNIX, "ipv4": socket.AF_INET,
            "ipv6": socket.AF_INET6}[fam]


def connect_addr(sock):
    """A listener's address as connect() takes it ((host, port) for IP)."""
    name = sock.getsockname()
    return name if isinstance(name, str) else name[:2]


def stream_pair(env, fam):
    """A connected (client, server side) stream pair of family `fam`."""
    lst = env.listen(bind_addr(env, fam))
    try:
        c = env.connect(connect_addr(lst))
        s, addr = lst.accept()
    finally:
        lst.close()
    return c, s


def dgram_pair(env, fam):
    """Two bound datagram sockets of family `fam`."""
    a = env.socket(sock_family(fam), socket.SOCK_DGRAM)
    b = env.socket(sock_family(fam), socket.SOCK_DGRAM)
    a.bind(bind_addr(env, fam))
    b.bind(bind_addr(env, fam))
    return a, b


def raises(exc_type, fn, *args):
    """Call fn(*args); it must raise exactly exc_type.  Returns it."""
    try:
        fn(*args)
    except BaseException as e:
        assert type(e) is exc_type, f"{fn.__name__}: {e!r}"
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise "
                         f"{exc_type.__name__}")


def assert_timed_out(fn, *args):
    e = raises(TimeoutError, fn, *args)
    assert e.args == ("timed out",)
    assert e.errno is None


def assert_would_block(fn, *args):
    e = raises(BlockingIOError, fn, *args)
    assert e.errno == errno.EAGAIN
    assert e.args == (errno.EAGAIN, os.strerror(errno.EAGAIN))


def assert_oserror(err, fn, *args):
    exc_type = {errno.EPIPE: BrokenPipeError,
                errno.ECONNRESET: ConnectionResetError,
                errno.ECONNREFUSED: ConnectionRefusedError,
                errno.ENOENT: FileNotFoundError}.get(err, OSError)
    e = raises(exc_type, fn, *args)
    assert e.errno == err, repr(e)
    return e


# ---- stream ----------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMS)
def test_stream_send_recv_sendall_recv_into(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            assert c.send(b"hello") == 5
            assert s.recv(100) == b"hello"
            assert s.sendall(bytearray(b"world")) is None
            buf = bytearray(100)
            assert c.recv_into(buf) == 5
            assert buf[:5] == b"world"
            c.sendall(memoryview(b"0123456789"))
            buf = bytearray(10)
            assert s.recv_into(buf, 4) == 4
            assert buf == b"0123" + bytes(6)
            view = memoryview(buf)[4:]
            assert s.recv_into(view) == 6
            assert buf == b"0123456789"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_partial_reads(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            c.sendall(b"abcdefghij")
            assert s.recv(3) == b"abc"
            assert s.recv(4) == b"defg"
            assert s.recv(100) == b"hij"
            s.sendall(b"ABCDEFGHIJ")
            assert c.recv(3) == b"ABC"
            assert c.recv(100) == b"DEFGHIJ"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_msg_peek(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            for a, b in ((c, s), (s, c)):
                a.sendall(b"peekaboo")
                assert b.recv(4, socket.MSG_PEEK) == b"peek"
                assert b.recv(100, socket.MSG_PEEK) == b"peekaboo"
                assert b.recv(3) == b"pee"
                assert b.recv(100, socket.MSG_PEEK) == b"kaboo"
                assert b.recv(100) == b"kaboo"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_eof_after_shutdown_wr(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            c.sendall(b"last")
            c.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b"last"
            assert s.recv(100) == b""
            assert s.recv(100) == b""
            buf = bytearray(10)
            assert s.recv_into(buf) == 0
            # The other direction still works.
            s.sendall(b"back")
            assert c.recv(100) == b"back"
            s.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b""
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_stream_recv_zero_with_nothing_to_read(env, fam, side):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock = c if side == "client" else s
            sock.settimeout(env.T)      # a bound, should recv(0) ever wait
            assert sock.recv(0) == b""
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_stream_recv_into_empty_buffer_with_nothing_to_read(env, fam, side):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock = c if side == "client" else s
            sock.settimeout(env.T)      # a bound, should it ever wait
            assert sock.recv_into(bytearray(0)) == 0
            assert sock.recv_into(memoryview(bytearray(8))[:0]) == 0
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_recv_zero_with_data_pending(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            c.settimeout(env.T)         # a bound, should recv(0) ever wait
            s.settimeout(env.T)
            c.sendall(b"data")
            assert s.recv(4, socket.MSG_PEEK) == b"data"    # it is there
            assert s.recv(0) == b""
            assert s.recv_into(bytearray(10), 0) == 4   # 0: the buffer's size
            s.sendall(b"back")
            assert c.recv(4, socket.MSG_PEEK) == b"back"
            assert c.recv(0) == b""
            assert c.recv(100) == b"back"
    env.run(main)


def _recv_with(call, sock, n, flags=0):
    # recv, recvmsg or recvmsg_into, each giving the bytes it read.
    if call == "recv":
        return sock.recv(n, flags)
    if call == "recvmsg":
        return sock.recvmsg(n, 0, flags)[0]
    buf = bytearray(n)
    got = sock.recvmsg_into([buf], 0, flags)[0]
    return bytes(buf[:got])


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("call", ["recv", "recvmsg", "recvmsg_into"])
def test_stream_recv_msg_dontwait_blocking_socket(env, fam, side, call):
    def late(peer):
        env.sleep(env.T)
        peer.sendall(b"!")

    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock, peer = (c, s) if side == "client" else (s, c)
            # Should the call wait after all, the late byte ends the wait
            # (and the assertion fails) rather than the test hanging.
            w = env.spawn(late, peer)
            assert_would_block(_recv_with, call, sock, 10,
                               socket.MSG_DONTWAIT)
            w.join()
            assert _recv_with(call, sock, 10) == b"!"
            peer.sendall(b"now")
            assert sock.recv(10, socket.MSG_PEEK) == b"now"
            assert _recv_with(call, sock, 10, socket.MSG_DONTWAIT) == b"now"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_stream_recv_msg_dontwait_timed_socket(env, fam, side):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock = c if side == "client" else s
            sock.settimeout(env.T)
            assert_timed_out(sock.recv, 10, socket.MSG_DONTWAIT)
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_stream_shutdown_rd(env, fam, side):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock, peer = (c, s) if side == "client" else (s, c)
            sock.settimeout(env.T)      # a bound, should it wait
            sock.shutdown(socket.SHUT_RD)
            assert sock.recv(10) == b""
            sock.sendall(b"still writes")
            assert peer.recv(100) == b"still writes"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_recvfrom_on_a_stream(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            c.sendall(b"up")
            up = s.recvfrom(100)
            s.sendall(b"down")
            down = c.recvfrom(100)
            buf = bytearray(10)
            c.sendall(b"into")
            into = s.recvfrom_into(buf)
            return up, down, into, s.getsockname()
    up, down, into, server_name = env.run(main)
    assert up == (b"up", None)
    # From the accepted side of a Unix listener, the sender has the
    # listener's path for a name (TCP gives no address).
    assert down == (b"down", server_name if fam == "unix" else None)
    assert into == (4, None)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_makefile_lines(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            w = c.makefile("w", encoding="utf-8", newline="\n")
            r = s.makefile("r", encoding="utf-8", newline="\n")
            w.write("line one\nline two\n")
            w.write("no newline")
            w.flush()
            c.shutdown(socket.SHUT_WR)
            lines = [r.readline(), r.readline(), r.readline(), r.readline()]
            w.close()
            r.close()
            # Binary, both ways on one file.
            f = s.makefile("rwb")
            f.write(b"bin\n")
            f.flush()
            got = c.recv(100)
            f.close()
            return lines, got
    lines, got = env.run(main)
    assert lines == ["line one\n", "line two\n", "no newline", ""]
    assert got == b"bin\n"


@pytest.mark.parametrize("fam", FAMS)
def test_stream_close_with_makefile_open(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c:
            fd = s.fileno()
            f = s.makefile("rb")
            s.close()
            after_close = s.fileno()
            c.sendall(b"still\n")
            line = f.readline()
            f.close()
            return fd, after_close, line, s.fileno()
    fd, after_close, line, final = env.run(main)
    assert line == b"still\n"
    assert final == -1
    assert after_close == fd


@pytest.mark.parametrize("fam", FAMS)
def test_stream_large_transfer_intact(env, fam):
    size = 4 << 20
    data = bytes(range(256)) * (size // 256)
    data = data[7:] + data[:7]          # not aligned to any buffer size

    def send_and_close(sock):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    def recv_into_all(sock):
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        for _ in range(1_000_000):
            n = sock.recv_into(view[got:], min(65536 + 13, size - got))
            if n == 0:
                break
            got += n
        assert sock.recv(1) == b""
        return bytes(buf[:got])

    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            up = env.spawn(send_and_close, c)
            got = recv_all(s)
            up.join()
            down = env.spawn(send_and_close, s)
            got2 = recv_into_all(c)
            down.join()
            return got, got2
    got, got2 = env.run(main)
    assert len(got) == size and got == data
    assert len(got2) == size and got2 == data


@pytest.mark.parametrize("fam", FAMS)
def test_stream_accept_address_and_names(env, fam):
    def main():
        lst = env.listen(bind_addr(env, fam))
        with lst:
            c = env.connect(connect_addr(lst))
            s, addr = lst.accept()
            with c, s:
                return (addr, c.getsockname(), s.getpeername(),
                        s.getsockname(), c.getpeername(), lst.getsockname(),
                        s.family, s.type, c.gettimeout(), s.gettimeout())
    (addr, c_name, s_peer, s_name, c_peer, lst_name, family, type_,
     ct, st) = env.run(main)
    assert addr == c_name == s_peer
    assert s_name == c_peer == lst_name
    assert family == sock_family(fam)
    assert type_ == socket.SOCK_STREAM
    assert ct is None and st is None


def test_stream_socketpair(env):
    def main():
        a, b = env.socketpair()
        with a, b:
            assert (a.family, a.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
            a.sendall(b"ab")
            assert b.recv(10) == b"ab"
            b.sendall(b"ba")
            assert a.recv(10) == b"ba"
            a.close()
            assert b.recv(10) == b""
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_msg_waitall(env, fam):
    def trickle(sock):
        for piece in (b"abc", b"defg", b"hij"):
            sock.sendall(piece)
            env.sleep(0.01)

    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            t = env.spawn(trickle, c)
            got = s.recv(10, socket.MSG_WAITALL)
            t.join()
            c.sendall(b"xy")
            c.shutdown(socket.SHUT_WR)
            short = s.recv(10, socket.MSG_WAITALL)   # the stream ends first
            return got, short
    assert env.run(main) == (b"abcdefghij", b"xy")


# ---- datagram ----------------------------------------------------------------------

@pytest.mark.parametrize("fam", FAMS)
def test_dgram_sendto_recvfrom(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            assert (a.family, a.type) == (sock_family(fam), socket.SOCK_DGRAM)
            assert a.sendto(b"ping", b.getsockname()) == 4
            data, src = b.recvfrom(100)
            assert (data, src) == (b"ping", a.getsockname())
            assert b.sendto(b"pong", 0, src) == 4
            buf = bytearray(100)
            n, src2 = a.recvfrom_into(buf)
            assert (n, bytes(buf[:n]), src2) == (4, b"pong", b.getsockname())
            a.sendto(b"nbytes", b.getsockname())
            buf = bytearray(100)
            assert b.recvfrom_into(buf, 3) == (3, a.getsockname())
            assert buf[:4] == b"nby\0"
    env.run(main)


def test_dgram_sendto_argument_errors(env):
    # CPython's test_socket testSendtoErrors: an address of None is named
    # in the error, and a wrong argument count is a TypeError.
    def main():
        with env.socket(AF_INET, socket.SOCK_DGRAM) as s:
            to = ("127.0.0.1", 9)
            for args in ((b"x", None), (b"x", 0, None)):
                e = raises(TypeError, s.sendto, *args)
                assert "not NoneType" in str(e), str(e)
            raises(TypeError, s.sendto, "\u2620", to)
            raises(TypeError, s.sendto, b"x", "bar", to)
            raises(TypeError, s.sendto, b"x", 0, to, 4)
            raises(TypeError, s.sendto, b"x")
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_message_boundaries(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            to = b.getsockname()
            for m in (b"one", b"two", b"three", b"", b"four"):
                a.sendto(m, to)
            got = [b.recv(100) for _ in range(5)]
            assert got == [b"one", b"two", b"three", b"", b"four"]
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_truncation(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            to = b.getsockname()
            for _ in range(4):
                a.sendto(b"0123456789", to)
            a.sendto(b"end", to)
            assert b.recv(4) == b"0123"
            assert b.recvfrom(5) == (b"01234", a.getsockname())
            buf = bytearray(3)
            assert b.recv_into(buf) == 3 and buf == b"012"
            buf = bytearray(6)
            assert b.recvfrom_into(buf) == (6, a.getsockname())
            assert buf == b"012345"
            assert b.recv(100) == b"end"
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_recv_zero_leaves_the_datagram(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            a.sendto(b"kept", b.getsockname())
            a.sendto(b"next", b.getsockname())
            b.settimeout(env.T * 20)        # a bound for the stdlib run
            assert b.recv(0) == b""
            assert b.recv(100) == b"kept"
            assert b.recv(100) == b"next"
    env.run(main)


def test_closed_socket_recv_zero(env):
    def main():
        s = env.socket()
        s.close()
        assert s.recv(0) == b""
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_connected_send_recv(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            a.connect(b.getsockname())
            b.connect(a.getsockname())
            assert a.send(b"hi") == 2
            assert b.recv(10) == b"hi"
            b.sendall(b"there")
            assert a.recvfrom(10) == (b"there", b.getsockname())
            assert a.getpeername() == b.getsockname()
    env.run(main)


@pytest.mark.parametrize("fam", ["ipv4", pytest.param("ipv6",
                                                      marks=_needs_ipv6)])
def test_dgram_connected_to_closed_port_refused(env, fam):
    def main():
        a, gone = dgram_pair(env, fam)
        to = gone.getsockname()
        gone.close()
        with a:
            a.settimeout(env.T * 20)        # a bound for the stdlib run
            a.connect(to)
            assert a.send(b"x") == 1
            assert_oserror(errno.ECONNREFUSED, a.recv, 10)
    env.run(main)


def test_dgram_unix_sendto_missing_or_closed_path(env):
    def main():
        with env.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as a:
            assert_oserror(errno.ENOENT, a.sendto, b"x", env.path("none"))
            gone = env.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = env.path()
            gone.bind(path)
            gone.close()        # the file stays; nobody is bound to it
            assert_oserror(errno.ECONNREFUSED, a.sendto, b"x", path)
    env.run(main)


def test_dgram_unbound_sender_address(env):
    def main():
        a = env.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = env.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            b.bind(env.path())
            a.sendto(b"anon", b.getsockname())
            return b.recvfrom(10)
    assert env.run(main) == (b"anon", None)


def test_dgram_socketpair(env):
    def main():
        a, b = env.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            a.send(b"one")
            a.send(b"two")
            assert b.recv(2) == b"on"
            assert b.recv(10) == b"two"
    env.run(main)


# ---- timeouts ----------------------------------------------------------------------

def test_gettimeout_getblocking_values(env):
    def main():
        with env.socket() as s:
            seen = [(s.gettimeout(), s.getblocking())]
            for v in (2.5, 3, 0, 0.0, None, 1e-9):
                s.settimeout(v)
                seen.append((s.gettimeout(), s.getblocking()))
            s.setblocking(False)
            seen.append((s.gettimeout(), s.getblocking()))
            s.setblocking(True)
            seen.append((s.gettimeout(), s.getblocking()))
            s.settimeout(2.5)
            s.setblocking(True)
            seen.append((s.gettimeout(), s.getblocking()))
            s.settimeout(2.5)
            s.setblocking(False)
            seen.append((s.gettimeout(), s.getblocking()))
            return seen
    assert env.run(main) == [
        (None, True), (2.5, True), (3.0, True), (0.0, False), (0.0, False),
        (None, True), (1e-9, True), (0.0, False), (None, True),
        (None, True), (0.0, False)]


def test_settimeout_bad_values(env):
    def main():
        with env.socket() as s:
            e = raises(ValueError, s.settimeout, -1)
            assert str(e) == "Timeout value out of range"
            raises(ValueError, s.settimeout, -0.5)
            raises(TypeError, s.settimeout, "1")
            raises(ValueError, s.settimeout, float("nan"))
            assert s.gettimeout() is None
    env.run(main)


def _fd_nonblocking(s):
    return bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def test_settimeout_sets_the_fd_flag_as_the_stdlib(env):
    # Right after the call the fd is O_NONBLOCK unless the timeout is None,
    # as the stdlib leaves it (CPython's test_socket testSetBlocking);
    # an operation may then set the backend's flag.
    def main():
        with env.socket() as s:
            seen = [_fd_nonblocking(s)]
            for v in (False, True):
                s.setblocking(v)
                seen.append(_fd_nonblocking(s))
            for v in (2.5, None, 0, None):
                s.settimeout(v)
                seen.append(_fd_nonblocking(s))
            return seen
    assert env.run(main) == [False, True, False, True, False, True, False]


def test_sock_nonblock_type_means_timeout_zero(env):
    def main():
        old = socket.getdefaulttimeout()
        try:
            socket.setdefaulttimeout(2.5)   # SOCK_NONBLOCK wins over it
            s = env.socket(AF_INET, SOCK_STREAM | socket.SOCK_NONBLOCK)
        finally:
            socket.setdefaulttimeout(old)
        with s:
            assert s.type == SOCK_STREAM
            assert (s.gettimeout(), s.getblocking()) == (0.0, False)
            assert _fd_nonblocking(s)
            s.bind(("127.0.0.1", 0))
            s.listen()
            assert_would_block(s.accept)
            s.setblocking(True)
            assert s.gettimeout() is None and not _fd_nonblocking(s)
    env.run(main)


def test_setblocking_on_an_fd_closed_underneath(env):
    # CPython's test_socket test_setblocking_invalidfd (issue #28471).
    def main():
        s0 = env.socket()
        s = type(s0)(AF_INET, SOCK_STREAM, 0, s0.fileno())
        s0.close()
        try:
            assert_oserror(errno.EBADF, s.setblocking, False)
        finally:
            s.detach()
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_recv_timeout(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            for sock, peer in ((s, c), (c, s)):
                sock.settimeout(env.T)
                assert_timed_out(sock.recv, 10)
                assert_timed_out(sock.recv_into, bytearray(10))
                assert_timed_out(sock.recvfrom, 10)
                # Nothing is lost, and the socket still works.
                peer.sendall(b"late")
                assert sock.recv(10) == b"late"
                assert sock.gettimeout() == env.T
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_accept_timeout(env, fam):
    def main():
        with env.listen(bind_addr(env, fam)) as lst:
            lst.settimeout(env.T)
            assert_timed_out(lst.accept)
            with env.connect(connect_addr(lst)):
                conn, _ = lst.accept()
                conn.close()
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_accepted_socket_timeout_from_timed_listener(env, fam):
    def main():
        with env.listen(bind_addr(env, fam)) as lst:
            lst.settimeout(env.T)
            with env.connect(connect_addr(lst)):
                conn, _ = lst.accept()
                with conn:
                    return conn.gettimeout(), conn.getblocking()
    assert env.run(main) == (None, True)


@pytest.mark.parametrize("fam", FAMS)
def test_accepted_socket_from_nonblocking_listener_blocks(env, fam):
    def main():
        with env.listen(bind_addr(env, fam)) as lst:
            lst.setblocking(False)
            assert_would_block(lst.accept)
            with env.connect(connect_addr(lst)) as c:
                conn = None
                for _ in range(1000):       # the connection may lag
                    try:
                        conn, _ = lst.accept()
                        break
                    except BlockingIOError:
                        env.sleep(0.001)
                assert conn is not None
                with conn:
                    blocking = conn.gettimeout(), conn.getblocking()
                    c.sendall(b"x")
                    return blocking, conn.recv(10)
    assert env.run(main) == ((None, True), b"x")


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_recvfrom_timeout(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            b.settimeout(env.T)
            assert_timed_out(b.recvfrom, 10)
            assert_timed_out(b.recvfrom_into, bytearray(10))
            assert_timed_out(b.recv, 10)
            a.sendto(b"late", b.getsockname())
            assert b.recvfrom(10) == (b"late", a.getsockname())
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_sendall_timeout(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            c.settimeout(env.T)
            assert_timed_out(c.sendall, bytes(64 << 20))   # nobody reads
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("how", ["setblocking", "settimeout0"])
def test_nonblocking_would_block(env, fam, how):
    def nonblocking(sock):
        if how == "setblocking":
            sock.setblocking(False)
        else:
            sock.settimeout(0)

    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            for sock in (s, c):
                nonblocking(sock)
                assert_would_block(sock.recv, 10)
                assert_would_block(sock.recv_into, bytearray(10))
                assert_would_block(sock.recvfrom, 10)
            # Data that is there is returned.
            s.sendall(b"now")
            for _ in range(1000):
                try:
                    got = c.recv(10)
                    break
                except BlockingIOError:
                    env.sleep(0.001)
            assert got == b"now"
            # send fills the buffer, then would block.
            chunk = bytes(65536)
            for _ in range(10_000):
                try:
                    c.send(chunk)
                except BlockingIOError as e:
                    assert e.errno == errno.EAGAIN
                    break
            else:
                raise AssertionError("send never filled the buffer")
            assert_would_block(c.sendall, chunk)
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_send_msg_dontwait_blocking_socket(env, fam, side):
    def late_close(peer):
        env.sleep(env.T)
        peer.close()

    def main():
        c, s = stream_pair(env, fam)
        sock, peer = (c, s) if side == "client" else (s, c)
        with sock:
            # Should send wait after all, the peer's close ends the wait
            # (with an error, failing the assertion) instead of a hang.
            w = env.spawn(late_close, peer)
            chunk = bytes(65536)
            err = None
            for _ in range(10_000):
                try:
                    sock.send(chunk, socket.MSG_DONTWAIT)
                except OSError as e:
                    err = e
                    break
            w.join()
            assert type(err) is BlockingIOError, repr(err)
            assert err.errno == errno.EAGAIN
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_recvfrom_msg_dontwait_blocking_socket(env, fam):
    def late(a, to):
        env.sleep(env.T)
        a.sendto(b"!", to)

    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            # Should recvfrom wait after all, the late datagram ends the
            # wait (and the assertion fails) rather than the test hanging.
            w = env.spawn(late, a, b.getsockname())
            assert_would_block(b.recvfrom, 10, socket.MSG_DONTWAIT)
            assert_would_block(b.recvfrom_into, bytearray(10), 0,
                               socket.MSG_DONTWAIT)
            w.join()
            assert b.recvfrom(10) == (b"!", a.getsockname())
            a.sendto(b"now", b.getsockname())
            b.settimeout(env.T * 20)        # a bound for the stdlib run
            assert b.recv(10, socket.MSG_PEEK) == b"now"
            b.settimeout(None)
            assert b.recvfrom(10, socket.MSG_DONTWAIT) == \
                (b"now", a.getsockname())
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_dgram_nonblocking_would_block(env, fam):
    def main():
        a, b = dgram_pair(env, fam)
        with a, b:
            b.setblocking(False)
            assert_would_block(b.recvfrom, 10)
            assert_would_block(b.recvfrom_into, bytearray(10))
            assert_would_block(b.recv, 10)
    env.run(main)


# ---- errors --------------------------------------------------------------------------

CLOSED_CALLS = {
    "recv": lambda s: s.recv(1),
    "recv_into": lambda s: s.recv_into(bytearray(1)),
    "recvfrom": lambda s: s.recvfrom(1),
    "recvfrom_into": lambda s: s.recvfrom_into(bytearray(1)),
    "send": lambda s: s.send(b"x"),
    "sendall": lambda s: s.sendall(b"x"),
    "sendto": lambda s: s.sendto(b"x", ("127.0.0.1", 9)),
    "accept": lambda s: s.accept(),
    "connect": lambda s: s.connect(("127.0.0.1", 9)),
    "connect_ex": lambda s: s.connect_ex(("127.0.0.1", 9)),
    "bind": lambda s: s.bind(("127.0.0.1", 0)),
    "listen": lambda s: s.listen(),
    "shutdown": lambda s: s.shutdown(socket.SHUT_RDWR),
    "getsockname": lambda s: s.getsockname(),
    "getpeername": lambda s: s.getpeername(),
    "setsockopt": lambda s: s.setsockopt(socket.SOL_SOCKET,
                                         socket.SO_REUSEADDR, 1),
    "getsockopt": lambda s: s.getsockopt(socket.SOL_SOCKET,
                                         socket.SO_REUSEADDR),
    "settimeout": lambda s: s.settimeout(1.0),
    "setblocking": lambda s: s.setblocking(True),
    "recvmsg": lambda s: s.recvmsg(1),
    "recvmsg_into": lambda s: s.recvmsg_into([bytearray(1)]),
    "sendmsg": lambda s: s.sendmsg([b"x"]),
}


@pytest.mark.parametrize("call", list(CLOSED_CALLS))
def test_closed_socket_raises_ebadf(env, call):
    def main():
        s = env.socket()
        s.close()
        if call == "connect_ex":        # returns the errno
            assert CLOSED_CALLS[call](s) == errno.EBADF
            return
        e = assert_oserror(errno.EBADF, CLOSED_CALLS[call], s)
        assert e.args == (errno.EBADF, "Bad file descriptor")
    env.run(main)


def test_closed_stream_socket_of_a_pair_raises_ebadf(env):
    def main():
        c, s = stream_pair(env, "ipv4")
        c.close()
        s.close()
        for sock in (c, s):         # s was read with multishot on io_uring
            assert_oserror(errno.EBADF, sock.recv, 1)
            assert_oserror(errno.EBADF, sock.send, b"x")
    env.run(main)


def test_fileno_after_close_and_double_close(env):
    def main():
        s = env.socket()
        assert s.fileno() >= 0
        s.close()
        assert s.fileno() == -1
        s.close()                   # a second close is fine
        assert s.fileno() == -1
        assert s.gettimeout() is None
        with env.socket() as t:
            pass
        assert t.fileno() == -1
        u = env.socket()
        fd = u.fileno()
        assert u.detach() == fd
        assert u.fileno() == -1
        assert u.detach() == -1
        u.close()
        os.close(fd)
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_send_to_closed_peer(env, fam):
    def main():
        c, s = stream_pair(env, fam)
        with c:
            s.close()
            assert c.recv(10) == b""        # the FIN
            errs = []
            for _ in range(100):
                try:
                    c.send(b"x")
                except OSError as e:
                    errs.append((type(e), e.errno))
                    if len(errs) == 3:
                        break
                env.sleep(0.001)            # let the RST come back
            return errs
    assert env.run(main) == [(BrokenPipeError, errno.EPIPE)] * 3


@pytest.mark.parametrize("fam", IP_FAMS)
@pytest.mark.parametrize("reader", ["client", "server"])
def test_recv_after_reset(env, fam, reader):
    # A socket closed with unread data sends a reset.
    def main():
        c, s = stream_pair(env, fam)
        r, w = (c, s) if reader == "client" else (s, c)
        with r:
            r.sendall(b"unread")
            assert w.recv(1, socket.MSG_PEEK) == b"u"
            w.close()
            r.settimeout(env.T * 20)        # a bound for the stdlib run
            first = raises(ConnectionResetError, r.recv, 10)
            return first.errno, r.recv(10)
    assert env.run(main) == (errno.ECONNRESET, b"")


@pytest.mark.parametrize("fam", IP_FAMS)
def test_connect_to_closed_port_refused(env, fam):
    def main():
        with env.socket(sock_family(fam), socket.SOCK_STREAM) as p:
            p.bind(bind_addr(env, fam))
            to = connect_addr(p)
            # Bound, never listening: nobody accepts on that port.
            assert_oserror(errno.ECONNREFUSED, env.connect, to)
            with env.socket(sock_family(fam), socket.SOCK_STREAM) as s:
                assert_oserror(errno.ECONNREFUSED, s.connect, to)
            with env.socket(sock_family(fam), socket.SOCK_STREAM) as s:
                assert s.connect_ex(to) == errno.ECONNREFUSED
    env.run(main)


def test_connect_unix_refused_and_missing(env):
    def main():
        with env.socket(socket.AF_UNIX, socket.SOCK_STREAM) as p:
            path = env.path()
            p.bind(path)
            assert_oserror(errno.ECONNREFUSED, env.connect, path)
            assert_oserror(errno.ENOENT, env.connect, env.path("missing"))
            with env.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                assert s.connect_ex(path) == errno.ECONNREFUSED
    env.run(main)


@pytest.mark.parametrize("fam", IP_FAMS)
def test_connect_twice(env, fam):
    def main():
        with env.listen(bind_addr(env, fam)) as lst:
            with env.socket(sock_family(fam), socket.SOCK_STREAM) as c:
                c.connect(connect_addr(lst))
                conn, _ = lst.accept()
                with conn:
                    assert_oserror(errno.EISCONN, c.connect,
                                   connect_addr(lst))
    env.run(main)


@pytest.mark.parametrize("fam", IP_FAMS)
def test_connect_ex_twice(env, fam):
    def main():
        with env.listen(bind_addr(env, fam)) as lst:
            with env.socket(sock_family(fam), socket.SOCK_STREAM) as c:
                assert c.connect_ex(connect_addr(lst)) == 0
                conn, _ = lst.accept()
                with conn:
                    return c.connect_ex(connect_addr(lst))
    assert env.run(main) == errno.EISCONN


def test_unconnected_stream_socket_errors(env):
    def main():
        with env.socket() as s:
            assert_oserror(errno.ENOTCONN, s.recv, 10)
            assert_oserror(errno.EPIPE, s.send, b"x")
            assert_oserror(errno.EINVAL, s.accept)      # not listening
            assert_oserror(errno.ENOTCONN, s.getpeername)
            s.settimeout(env.T * 20)
            assert_oserror(errno.ENOTCONN, s.recv, 10)
            assert_oserror(errno.EPIPE, s.send, b"x")
            assert_oserror(errno.EINVAL, s.accept)
            # (shutdown fails, but marks the socket shut down all the same:
            # recv returns b'' after it.)
            assert_oserror(errno.ENOTCONN, s.shutdown, socket.SHUT_RDWR)
            assert s.recv(10) == b""
        with env.listen(("127.0.0.1", 0)) as lst:
            assert_oserror(errno.ENOTCONN, lst.recv, 10)
            assert_oserror(errno.EPIPE, lst.send, b"x")
    env.run(main)


@pytest.mark.parametrize("call", ["recv", "send"])
def test_listening_socket_with_timeout(env, call):
    def main():
        with env.listen(("127.0.0.1", 0)) as lst:
            lst.settimeout(env.T)
            if call == "recv":
                assert_timed_out(lst.recv, 10)
            else:
                assert_timed_out(lst.send, b"x")
    env.run(main)


@pytest.mark.parametrize("timeout", ["nonblocking", "blocking"])
def test_listener_that_accepted_recv_send(env, timeout):
    # A listener that has accepted (on io_uring it then holds a multishot
    # accept stream) is still no connection: its recv and send fail at
    # once, whatever mode the socket is in.
    def main():
        with env.listen(("127.0.0.1", 0)) as lst:
            with env.connect(connect_addr(lst)) as c:
                s, _ = lst.accept()
                with s:
                    if timeout == "nonblocking":
                        lst.setblocking(False)
                    assert_oserror(errno.ENOTCONN, lst.recv, 10)
                    assert_oserror(errno.ENOTCONN, lst.recv_into,
                                   bytearray(10))
                    assert_oserror(errno.EPIPE, lst.send, b"x")
                    c.sendall(b"still")
                    assert s.recv(10) == b"still"
    env.run(main)


def test_shutdown_bad_how(env):
    def main():
        c, s = stream_pair(env, "ipv4")
        with c, s:
            assert_oserror(errno.EINVAL, c.shutdown, 99)
    env.run(main)


BAD_ARGS = {
    "recv_negative": (ValueError, "negative buffersize in recv",
                      lambda s: s.recv(-1)),
    "recv_into_negative": (ValueError, "negative buffersize in recv_into",
                           lambda s: s.recv_into(bytearray(4), -1)),
    "recv_into_too_small": (ValueError, "buffer too small for requested "
                            "bytes", lambda s: s.recv_into(bytearray(4), 5)),
    "recvfrom_negative": (ValueError, "negative buffersize in recvfrom",
                          lambda s: s.recvfrom(-1)),
    "recvfrom_into_negative": (ValueError, "negative buffersize in "
                               "recvfrom_into",
                               lambda s: s.recvfrom_into(bytearray(4), -1)),
    "recvfrom_into_too_small": (ValueError, "nbytes is greater than the "
                                "length of the buffer",
                                lambda s: s.recvfrom_into(bytearray(4), 5)),
    "makefile_mode": (ValueError, "invalid mode 'x' (only r, w, b allowed)",
                      lambda s: s.makefile("x")),
    "recv_into_readonly": (TypeError, None, lambda s: s.recv_into(b"abcd")),
    "recv_str": (TypeError, None, lambda s: s.recv("10")),
    "recv_float": (TypeError, None, lambda s: s.recv(1.5)),
    "send_str": (TypeError, None, lambda s: s.send("text")),
    "sendall_str": (TypeError, None, lambda s: s.sendall("text")),
    "sendto_no_address": (TypeError, None, lambda s: s.sendto(b"x")),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_bad_arguments(env, case, closed):
    exc_type, message, call = BAD_ARGS[case]

    def main():
        c, s = stream_pair(env, "ipv4")
        with c, s:
            if closed:
                c.close()
            e = raises(exc_type, call, c)
            if message is not None:
                assert str(e) == message
    env.run(main)


# ---- recvmsg / sendmsg / sendfile / dup ------------------------------------

def recv_n(sock, n):
    """Read exactly n bytes (at most n recv calls)."""
    got = b""
    for _ in range(n):
        chunk = sock.recv(n - len(got))
        assert chunk, f"EOF after {got!r}"
        got += chunk
        if len(got) == n:
            return got
    raise AssertionError("short reads")


@pytest.mark.parametrize("fam", FAMS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_stream_recvmsg_sendmsg(env, fam, side):
    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            sock, peer = (c, s) if side == "client" else (s, c)
            assert peer.sendmsg([b"he", b"llo"]) == 5
            assert recv_n(sock, 2) == b"he"
            # The kernel gives a Unix stream socket its peer's address,
            # when the peer has one (the client's peer, the listener).
            addr = (sock.getpeername() or None) if fam == "unix" else None
            # What a recv already read ahead (io_uring's multishot) comes
            # first, as the kernel would have given it.
            assert sock.recvmsg(100) == (b"llo", [], 0, addr)
            assert peer.sendmsg([memoryview(b"abcdef")]) == 6
            x, y = bytearray(2), bytearray(10)
            n, anc, flags, addr = sock.recvmsg_into([x, y])
            assert (anc, flags) == ([], 0)
            assert addr == ((sock.getpeername() or None)
                            if fam == "unix" else None)
            got = bytes(x) + bytes(y[:n - 2])
            while len(got) < 6:     # bounded: 6 bytes were sent
                more = sock.recvmsg(6 - len(got))[0]
                assert more
                got += more
            assert got == b"abcdef"
    env.run(main)


def test_unix_stream_recvmsg_address_of_a_bound_peer(env):
    def main():
        lst = env.listen(env.path())
        with lst:
            c = env.socket(socket.AF_UNIX)
            c.bind(env.path())
            c.connect(lst.getsockname())
            s, _ = lst.accept()
        with c, s:
            c.sendall(b"hello")
            assert recv_n(s, 2) == b"he"
            # Read ahead or not, the bytes come with the peer's name.
            assert s.recvmsg(100) == (b"llo", [], 0, c.getsockname())
            c.sendall(b"abc")
            assert recv_n(s, 1) == b"a"
            buf = bytearray(10)
            assert s.recvmsg_into([buf]) == (2, [], 0, c.getsockname())
            assert buf[:2] == b"bc"
    env.run(main)


@pytest.mark.parametrize("side", ["client", "server"])
def test_unix_stream_fds_after_recv(env, side):
    def main():
        c, s = stream_pair(env, "unix")
        sock, peer = (c, s) if side == "client" else (s, c)
        r, w = os.pipe()
        try:
            with c, s:
                peer.sendall(b"a")
                assert sock.recv(1) == b"a"
                # Nothing may read the next bytes ahead of recvmsg: their
                # fds would be lost.
                assert peer.sendmsg([b"fd"], [(
                    socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    array.array("i", [r]))]) == 2
                data, anc, flags, _ = sock.recvmsg(10, socket.CMSG_LEN(4))
                assert (data, flags, len(anc)) == (b"fd", 0, 1)
                level, kind, payload = anc[0]
                assert (level, kind) == (socket.SOL_SOCKET,
                                         socket.SCM_RIGHTS)
                got = array.array("i", payload[:4])[0]
                os.close(got)
                assert got not in (r, w)
        finally:
            os.close(r)
            os.close(w)
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_stream_sendmsg_msg_dontwait_blocking_socket(env, fam):
    def late_close(peer):
        env.sleep(env.T)
        peer.close()

    def main():
        c, s = stream_pair(env, fam)
        with c:
            w = env.spawn(late_close, s)
            chunk = bytes(65536)
            err = None
            for _ in range(10_000):
                try:
                    c.sendmsg([chunk], [], socket.MSG_DONTWAIT)
                except OSError as e:
                    err = e
                    break
            w.join()
            assert type(err) is BlockingIOError, repr(err)
            assert err.errno == errno.EAGAIN
    env.run(main)


def test_dgram_sendto_sendmsg_msg_dontwait_blocking_socket(env):
    def late_close(peer):
        env.sleep(env.T)
        peer.close()

    def main():
        a, b = dgram_pair(env, "unix")
        to = b.getsockname()
        a.connect(to)
        with a, b:
            # A connected Unix datagram send blocks while the peer's queue
            # is full.  Should a send wait after all, the peer's close ends
            # the wait (with an error, failing the assertion) rather than
            # the test hanging.
            w = env.spawn(late_close, b)
            errs = []
            for send in (lambda: a.sendto(b"x", socket.MSG_DONTWAIT, to),
                         lambda: a.sendmsg([b"x"], [], socket.MSG_DONTWAIT)):
                for _ in range(100_000):
                    try:
                        send()
                    except OSError as e:
                        errs.append(e)
                        break
            w.join()
            assert [type(e) for e in errs] == [BlockingIOError] * 2, errs
            assert [e.errno for e in errs] == [errno.EAGAIN] * 2
    env.run(main)


@pytest.mark.parametrize("fam", FAMS)
def test_recvmsg_and_sendfile_timeout(env, fam, tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 20)            # more than any socket buffer holds

    def main():
        c, s = stream_pair(env, fam)
        with c, s:
            s.settimeout(env.T)
            assert_timed_out(s.recvmsg, 10)
            assert_timed_out(s.recvmsg_into, [bytearray(10)])
            c.settimeout(env.T)
            with open(path, "rb") as f:
                assert_timed_out(c.sendfile, f)   # nobody reads
                # The file is left where the sending stopped.
                assert 0 < f.tell() < 64 << 20
    env.run(main)


def test_sendfile_arguments(env, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")

    def main():
        c, s = stream_pair(env, "unix")
        with c, s:
            with open(path, "r") as f:
                e = raises(ValueError, c.sendfile, f)
                assert "binary mode" in str(e)
            with open(path, "rb") as f:
                raises(TypeError, c.sendfile, f, 0, "3")
                raises(ValueError, c.sendfile, f, 0, 0)
                c.setblocking(False)
                e = raises(ValueError, c.sendfile, f)
                assert "non-blocking" in str(e)
                c.setblocking(True)
                assert c.sendfile(f, 8) == 2
                assert f.tell() == 10
                assert recv_n(s, 2) == b"89"
            with open(empty, "rb") as f:
                assert c.sendfile(f) == 0
        d = env.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with d, open(path, "rb") as f:
            e = raises(ValueError, d.sendfile, f)
            assert "SOCK_STREAM" in str(e)
    env.run(main)


def test_dup_of_open_and_closed_socket(env):
    def main():
        c, s = stream_pair(env, "ipv4")
        with c, s:
            c.settimeout(env.T)
            d = c.dup()
            with d:
                assert type(d) is type(c)
                assert d.fileno() != c.fileno()
                assert d.gettimeout() == env.T
                assert (d.family, d.type) == (c.family, c.type)
                d.sendall(b"dup")
            assert recv_n(s, 3) == b"dup"
            c.sendall(b"orig")          # closing the dup left c open
            assert recv_n(s, 4) == b"orig"
        e = assert_oserror(errno.EBADF, c.dup)
        assert e.args == (errno.EBADF, "Bad file descriptor")
    env.run(main)
