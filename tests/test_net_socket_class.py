"""fibers.net.Socket is a socket.socket: type checks accept it, and the
calls it gained (sendmsg/recvmsg with fd passing, recvmsg_into, sendfile,
dup, inheritable, the timeout attribute) work as the stdlib's while
suspending only the calling fiber.  On both pump backends."""
import array
import hashlib
import os
import socket

import pytest

import fibers
import fibers.net


def test_a_socket_is_a_stdlib_socket(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            assert isinstance(a, socket.socket)
            assert isinstance(a, socket.SocketType)
            assert socket.socket.getsockname(a) == a.getsockname()
            assert a.family == socket.AF_UNIX
            assert a.type == socket.SOCK_STREAM
            # The C type's own methods accept it (a non-socket would get
            # "descriptor requires a '_socket.socket' object").
            import _socket
            assert _socket.socket.fileno(a) == a.fileno()
        assert a.fileno() == -1 and a._closed

    io_sched.run(main)


def _send_fds(sock, data, fds):
    return sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  array.array("i", fds))])


def _fds_of(ancdata):
    fds = array.array("i")
    for level, kind, payload in ancdata:
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def test_recvmsg_waits_and_passes_fds(io_sched):
    log = []

    def receiver(b):
        log.append(("waiting", fibers.now()))
        data, anc, flags, addr = b.recvmsg(100, socket.CMSG_LEN(
            2 * array.array("i").itemsize))
        log.append(("got", data, fibers.now()))
        return _fds_of(anc)

    def main():
        a, b = fibers.net.socketpair()
        r, w = os.pipe()
        try:
            f = fibers.spawn(receiver, b)
            fibers.sleep(2)                 # the receiver is parked
            assert _send_fds(a, b"fd!", [r, w]) == 3
            fds = f.join()
            assert len(fds) == 2
            # The passed fds are the pipe: write on one copy, read on the
            # other.
            os.write(fds[1], b"through")
            assert os.read(fds[0], 7) == b"through"
            for fd in fds:
                os.close(fd)
        finally:
            for fd in (r, w):
                os.close(fd)
            a.close()
            b.close()

    io_sched.run(main)
    assert log == [("waiting", 0.0), ("got", b"fd!", 2.0)]


def test_recvmsg_into_and_its_timeout(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            b.settimeout(1.5)
            with pytest.raises(TimeoutError):
                b.recvmsg_into([bytearray(4)])
            assert fibers.now() == 1.5
            a.sendall(b"abcdefgh")
            x, y = bytearray(3), bytearray(10)
            n, anc, flags, _ = b.recvmsg_into([x, y])
            assert (n, anc, bytes(x), bytes(y[:5])) == \
                (8, [], b"abc", b"defgh")

    io_sched.run(main)


def test_sendfile_sends_a_file_while_others_run(io_sched, tmp_path):
    # 4 MiB through a socketpair whose buffers hold far less: sendfile must
    # wait for the reader fiber to drain them, so it can only finish if it
    # suspends only its own fiber (blocking the thread would hang here).
    path = tmp_path / "blob"
    blob = os.urandom(4 << 20)
    path.write_bytes(blob)
    progress = []

    def reader(b):
        h = hashlib.sha256()
        got = 0
        while got < len(blob):
            chunk = b.recv(1 << 16)
            assert chunk
            h.update(chunk)
            got += len(chunk)
            progress.append(got)
        return h.hexdigest()

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            r = fibers.spawn(reader, b)
            with open(path, "rb") as f:
                assert a.sendfile(f) == len(blob)
                assert f.tell() == len(blob)
            read_while_sending = len(progress)
            return r.join(), read_while_sending

    digest, read_while_sending = io_sched.run(main)
    assert digest == hashlib.sha256(blob).hexdigest()
    assert read_while_sending > 1


def test_sendfile_timeout_bounds_each_wait(io_sched, tmp_path):
    # As the stdlib's (select(timeout) before each os.sendfile): a reader
    # that keeps draining, slower in total than the timeout but never
    # leaving the sender stuck that long, lets sendfile finish.
    path = tmp_path / "blob"
    blob = os.urandom(1 << 20)
    path.write_bytes(blob)

    def reader(b):
        got = []
        for _ in range(10_000):
            fibers.sleep(0.6)
            # All that is queued: a Unix stream socket's writer has room
            # again only once most of it is read.
            chunk = b.recv(1 << 20)
            if not chunk:
                return b"".join(got)
            got.append(chunk)
        raise AssertionError("reader never saw EOF")

    def main():
        a, b = fibers.net.socketpair()
        with b:
            r = fibers.spawn(reader, b)
            with a:
                a.settimeout(1.0)
                with open(path, "rb") as f:
                    assert a.sendfile(f) == len(blob)
                took = fibers.now()
            return r.join(), took

    data, took = io_sched.run(main)
    assert data == blob
    assert took > 1.0           # longer than the timeout, in all
    # (A reader that stops makes it time out: test_conformance's
    # test_recvmsg_and_sendfile_timeout.)


def test_sendfile_offset_and_count(io_sched, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    def main():
        a, b = fibers.net.socketpair()
        with a, b, open(path, "rb") as f:
            assert a.sendfile(f, 2, 5) == 5
            assert f.tell() == 7
            return b.recv(100)

    assert io_sched.run(main) == b"23456"


def test_dup_inheritable_and_timeout_attribute(io_sched):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            assert a.timeout is None
            a.settimeout(2.5)
            assert a.timeout == 2.5 and a.gettimeout() == 2.5
            a.setblocking(False)
            assert a.timeout == 0.0
            a.setblocking(True)
            assert a.timeout is None
            assert a.get_inheritable() is False
            a.set_inheritable(True)
            assert a.get_inheritable() is True
            a.settimeout(4)
            c = a.dup()
            with c:
                assert type(c) is fibers.net.Socket
                assert c.fileno() != a.fileno()
                assert c.timeout == 4
                c.sendall(b"via dup")
                assert b.recv(7) == b"via dup"
            a.sendall(b"still open")
            assert b.recv(10) == b"still open"

    io_sched.run(main)
