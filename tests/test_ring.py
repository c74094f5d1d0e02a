"""fibers.ring: the callback API, used without fibers."""
import errno
import os
import socket

import pytest

import fibers.ring
from fibers.ring import Ring
from iohelp import open_fds


@pytest.fixture
def ring(backend):
    r = Ring(backend=backend)
    yield r
    r.close()


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def file_fd(tmp_path):
    p = tmp_path / "ring.bin"
    p.write_bytes(bytes(range(256)) * 16)
    fd = os.open(p, os.O_RDWR)
    yield fd
    os.close(fd)


def recorder():
    got = []
    return got, lambda result, data: got.append((result, data))


def complete(ring, n):
    """Submit, wait for n completions and run their callbacks."""
    ring.submit_and_wait(n)
    ran = ring.process_completions()
    assert ran == n
    return ran


# ---- files --------------------------------------------------------------------------

def test_read_at_offset(ring, file_fd):
    got, cb = recorder()
    ring.read(file_fd, 10, 100, cb)
    complete(ring, 1)
    assert got == [(10, bytes(range(100, 110)))]
    assert ring.pending == 0


def test_read_short_at_eof(ring, file_fd):
    got, cb = recorder()
    ring.read(file_fd, 100, 4096 - 3, cb)
    ring.read(file_fd, 100, 10_000, cb)
    complete(ring, 2)
    assert sorted(got) == [(0, b""), (3, bytes([253, 254, 255]))]


def test_write_at_offset(ring, file_fd):
    got, cb = recorder()
    payload = b"hello"
    ring.write(file_fd, payload, 7, cb)
    complete(ring, 1)
    (result, data), = got
    assert result == 5
    assert data is payload
    assert os.pread(file_fd, 5, 7) == b"hello"
    assert os.pread(file_fd, 2, 5) == bytes([5, 6])          # untouched


def test_write_past_eof_extends_the_file(ring, file_fd):
    got, cb = recorder()
    ring.write(file_fd, b"tail", 5000, cb)
    complete(ring, 1)
    assert got[0][0] == 4
    assert os.fstat(file_fd).st_size == 5004
    assert os.pread(file_fd, 4, 5000) == b"tail"


def test_submit_returns_the_number_submitted(ring, sockpair):
    a, b = sockpair
    got, cb = recorder()
    for msg in (b"1", b"22", b"333"):
        ring.send(a.fileno(), msg, 0, cb)
    assert ring.submit() == 3
    assert ring.submit() == 0
    ring.submit_and_wait(3)
    assert ring.process_completions() == 3
    assert sorted(r for r, _ in got) == [1, 2, 3]
    assert ring.process_completions() == 0
    b.setblocking(False)
    assert sorted(b.recv(100)) == sorted(b"122333")


# ---- pipes ---------------------------------------------------------------------------

def test_pipe_read_waits_for_the_writer(ring):
    r, w = os.pipe()
    try:
        got, cb = recorder()
        ring.read(r, 100, -1, cb)
        ring.submit()
        assert ring.process_completions() == 0     # nothing written yet
        assert got == []
        os.write(w, b"through a pipe")
        complete(ring, 1)
        assert got == [(14, b"through a pipe")]
    finally:
        os.close(r)
        os.close(w)


def test_pipe_write_then_os_read(ring):
    r, w = os.pipe()
    try:
        got, cb = recorder()
        ring.write(w, b"to the pipe", -1, cb)
        complete(ring, 1)
        assert got[0][0] == 11
        assert os.read(r, 100) == b"to the pipe"
    finally:
        os.close(r)
        os.close(w)


# ---- sockets ------------------------------------------------------------------------

def test_send_and_recv(ring, sockpair):
    a, b = sockpair
    sent, send_cb = recorder()
    received, recv_cb = recorder()
    payload = bytearray(b"over the ring")
    ring.send(a.fileno(), payload, 0, send_cb)
    complete(ring, 1)
    ring.recv(b.fileno(), 100, 0, recv_cb)
    complete(ring, 1)
    assert sent[0][0] == len(payload) and sent[0][1] is payload
    assert received == [(len(payload), b"over the ring")]


def test_recv_completes_when_data_arrives(ring, sockpair):
    a, b = sockpair
    got, cb = recorder()
    ring.recv(b.fileno(), 100, 0, cb)
    ring.submit()
    assert ring.pending == 1
    assert ring.process_completions() == 0
    a.sendall(b"late")
    complete(ring, 1)
    assert got == [(4, b"late")]
    assert ring.pending == 0


def test_recv_at_eof_gives_zero(ring, sockpair):
    a, b = sockpair
    got, cb = recorder()
    a.shutdown(socket.SHUT_WR)
    ring.recv(b.fileno(), 100, 0, cb)
    complete(ring, 1)
    assert got == [(0, b"")]


def test_recv_with_msg_peek_flag(ring, sockpair):
    a, b = sockpair
    got, cb = recorder()
    a.sendall(b"peek")
    ring.recv(b.fileno(), 100, socket.MSG_PEEK, cb)
    complete(ring, 1)
    assert got == [(4, b"peek")]
    b.setblocking(False)
    assert b.recv(100) == b"peek"                  # still there


def test_accept(ring):
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        got, cb = recorder()
        ring.accept(lst.fileno(), cb)
        ring.submit()
        with socket.create_connection(lst.getsockname()) as client:
            complete(ring, 1)
            (fd, data), = got
            assert data is None
            assert fd >= 0
            with socket.socket(fileno=fd) as conn:
                assert conn.getpeername() == client.getsockname()
                client.sendall(b"hi")
                conn.settimeout(5)
                assert conn.recv(10) == b"hi"


# ---- errors -------------------------------------------------------------------------

def test_bad_fd_gives_negative_errno(ring, tmp_path):
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    got, cb = recorder()
    ring.read(fd, 10, 0, cb)
    complete(ring, 1)
    assert got[0][0] == -errno.EBADF


@pytest.mark.parametrize("code", [errno.EBADF, -errno.EBADF])
def test_strerror(code):
    assert fibers.ring.strerror(code) == os.strerror(errno.EBADF)


def test_strerror_of_other_errnos():
    assert fibers.ring.strerror(-errno.ECONNRESET) == os.strerror(errno.ECONNRESET)
    assert fibers.ring.strerror(errno.EAGAIN) == os.strerror(errno.EAGAIN)


def test_a_raising_callback_does_not_wedge_the_ring(ring, sockpair):
    a, b = sockpair
    got = []

    def cb(tag):
        def callback(result, data):
            got.append(tag)
            if tag == "bad":
                raise ValueError("from a callback")
        return callback

    for tag in ("x", "bad", "y", "z"):
        ring.send(a.fileno(), tag.encode(), 0, cb(tag))
    ring.submit_and_wait(4)
    with pytest.raises(ValueError, match="from a callback"):
        ring.process_completions()
    assert sorted(got) == ["bad", "x", "y", "z"]   # every completion consumed
    assert ring.process_completions() == 0         # raised once, nothing rerun
    assert ring.pending == 0
    after, after_cb = recorder()
    ring.recv(b.fileno(), 100, 0, after_cb)
    complete(ring, 1)
    assert after[0][0] > 0                         # the ring still works


def test_only_the_first_exception_propagates(ring, sockpair):
    a, b = sockpair
    calls = []

    def bad(result, data):
        calls.append(result)
        raise KeyError(len(calls))

    for msg in (b"1", b"2"):
        ring.send(a.fileno(), msg, 0, bad)
    ring.submit_and_wait(2)
    with pytest.raises(KeyError) as info:
        ring.process_completions()
    assert info.value.args == (1,)
    assert len(calls) == 2
    assert ring.process_completions() == 0


def test_more_than_entries_unsubmitted_ops_raise_ebusy(backend, sockpair):
    a, b = sockpair
    with Ring(entries=8, backend=backend) as ring:
        got, cb = recorder()
        for i in range(8):
            ring.send(a.fileno(), bytes([i]), 0, cb)
        with pytest.raises(OSError) as info:
            ring.send(a.fileno(), b"!", 0, cb)
        assert info.value.errno == errno.EBUSY
        assert ring.submit() == 8
        ring.submit_and_wait(8)
        assert ring.process_completions() == 8
        assert [r for r, _ in got] == [1] * 8
        ring.send(a.fileno(), b"+", 0, cb)         # room again
        complete(ring, 1)
        assert got[-1][0] == 1


# ---- close ---------------------------------------------------------------------------

def test_close_cancels_a_recv_in_flight(backend, sockpair):
    a, b = sockpair
    got, cb = recorder()
    ring = Ring(backend=backend)
    ring.recv(b.fileno(), 100, 0, cb)
    ring.submit()
    assert ring.pending == 1
    ring.close()
    assert ring.pending == 0
    assert got == []
    # The cancelled recv did not take data sent afterwards.
    a.sendall(b"after close")
    b.setblocking(False)
    assert b.recv(100) == b"after close"
    assert got == []


def test_context_manager_closes(backend, sockpair):
    a, b = sockpair
    got, cb = recorder()
    with Ring(backend=backend) as ring:
        ring.recv(b.fileno(), 100, 0, cb)
        ring.submit()
        assert ring.pending == 1
    assert ring.pending == 0
    assert got == []


def test_close_reaps_an_accepted_fd(backend):
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        before = open_fds()
        got, cb = recorder()
        ring = Ring(backend=backend)
        ring.accept(lst.fileno(), cb)
        ring.submit()
        with socket.create_connection(lst.getsockname()) as client:
            ring.close()
            left = open_fds() - before
            assert got == []
            # Only the client is new: no accepted fd, no ring fd is left.
            assert left == {client.fileno()}


def test_ring_works_without_fibers(backend, sockpair):
    # No scheduler is running: the ring is usable from plain code.
    a, b = sockpair
    got, cb = recorder()
    with Ring(entries=4, backend=backend) as ring:
        a.sendall(b"plain")
        ring.recv(b.fileno(), 10, 0, cb)
        complete(ring, 1)
    assert got == [(5, b"plain")]
