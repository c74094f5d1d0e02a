"""Timeouts on recv, accept, connect and sendall: settimeout(), the
fibers.timeout() scope and connect(timeout=).  All times are virtual.

The tests are fibers (@pytest.mark.fibers, fibers/pytest_plugin.py) on an
autojumping VirtualClock; taking `backend`, each runs once per pump
backend (the plugin's fibers_backend follows it, tests/conftest.py)."""
import os
import socket
import struct

import pytest

import fibers
import fibers.net
from capabilities import skip
from iohelp import open_fds, warm_up


# ---- helpers -----------------------------------------------------------------

def accept_queue(listener):
    """(connections waiting in the accept queue, its limit) of a listening
    TCP socket, from TCP_INFO (tcpi_unacked and tcpi_sacked are aliased to
    these for listeners)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("II", info, 24)


@pytest.fixture
def silent_address():
    """A loopback address whose SYNs are dropped: a listener with backlog 0
    that never accepts, its accept queue filled by plain connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    fillers = []
    try:
        for _ in range(16):
            waiting, limit = accept_queue(listener)
            if waiting > limit:
                break
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            fillers.append(s)
        else:
            skip("syn_drop", "could not fill the accept queue of a loopback "
                 "listener with 16 connections")
        yield addr
    finally:
        for s in fillers:
            s.close()
        listener.close()


# ---- recv ------------------------------------------------------------------------

@pytest.mark.fibers
def test_settimeout_recv_raises_timeouterror_after_the_timeout(backend):
    a, b = fibers.net.socketpair()
    with a, b:
        b.settimeout(5)
        assert b.gettimeout() == 5.0
        t0 = fibers.now()
        with pytest.raises(TimeoutError, match="timed out"):
            b.recv(10)
        elapsed = fibers.now() - t0
    assert 5 <= elapsed < 5.5


@pytest.mark.fibers
def test_timeout_scope_recv(backend):
    a, b = fibers.net.socketpair()
    with a, b:
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(5):
                b.recv(10)
        elapsed = fibers.now() - t0
    assert 5 <= elapsed < 5.5


@pytest.mark.fibers
def test_recv_timeout_not_reached_returns_the_data(backend):
    def late_sender(sock):
        fibers.sleep(1)
        sock.sendall(b"in time")

    a, b = fibers.net.socketpair()
    with a, b:
        b.settimeout(5)
        t0 = fibers.now()
        sender = fibers.spawn(late_sender, a)
        got = b.recv(100)
        elapsed = fibers.now() - t0
        sender.join()
    assert got == b"in time"
    assert 1 <= elapsed < 1.5


@pytest.mark.fibers
def test_socket_still_works_after_a_recv_timeout(backend):
    a, b = fibers.net.socketpair()
    with a, b:
        with pytest.raises(TimeoutError):
            with fibers.timeout(3):
                b.recv(10)
        a.sendall(b"after")
        with fibers.timeout(3):
            assert b.recv(10) == b"after"


@pytest.mark.fibers
def test_settimeout_none_waits_without_limit(backend):
    def late_sender(sock):
        fibers.sleep(1000)
        sock.sendall(b"eventually")

    a, b = fibers.net.socketpair()
    with a, b:
        b.settimeout(3)
        b.settimeout(None)
        assert b.gettimeout() is None
        sender = fibers.spawn(late_sender, a)
        got, t = b.recv(100), fibers.now()
        sender.join()
    assert got == b"eventually"
    assert 1000 <= t < 1000.5


# ---- accept -------------------------------------------------------------------------

@pytest.mark.fibers
def test_settimeout_accept(backend):
    with fibers.net.listen(("127.0.0.1", 0)) as lst:
        lst.settimeout(3)
        t0 = fibers.now()
        with pytest.raises(TimeoutError):
            lst.accept()
        elapsed = fibers.now() - t0
    assert 3 <= elapsed < 3.5


@pytest.mark.fibers
def test_timeout_scope_accept_and_listener_still_accepts(backend):
    with fibers.net.listen(("127.0.0.1", 0)) as lst:
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(4):
                lst.accept()
        elapsed = fibers.now() - t0
        with fibers.net.connect(lst.getsockname()) as c:
            with fibers.timeout(3):
                conn, addr = lst.accept()
            with conn:
                assert addr == c.getsockname()
    assert 4 <= elapsed < 4.5


# ---- connect ------------------------------------------------------------------------

def test_silent_address_really_hangs_a_plain_connect(silent_address):
    # Guards the fixture itself: a non-blocking connect to it stays pending.
    s = socket.socket()
    try:
        s.setblocking(False)
        s.connect_ex(silent_address)
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        assert info[0] == 2                       # TCP_SYN_SENT
    finally:
        s.close()


@pytest.mark.fibers
def test_settimeout_connect_then_the_socket_can_be_closed(backend,
                                                          silent_address):
    warm_up()
    before = open_fds()
    s = fibers.net.Socket()
    s.settimeout(3)
    t0 = fibers.now()
    with pytest.raises(TimeoutError):
        s.connect(silent_address)
    elapsed = fibers.now() - t0
    assert s.gettimeout() == 3.0
    host, port = s.getsockname()                  # still a usable socket
    assert host == "127.0.0.1" and port != 0
    s.close()
    assert open_fds() ^ before == set()
    assert 3 <= elapsed < 3.5


@pytest.mark.fibers
def test_timeout_scope_connect(backend, silent_address):
    warm_up()
    before = open_fds()
    t0 = fibers.now()
    with fibers.net.Socket() as s:
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(4):
                s.connect(silent_address)
    elapsed = fibers.now() - t0
    assert open_fds() ^ before == set()
    assert 4 <= elapsed < 4.5


@pytest.mark.fibers
def test_net_connect_timeout_argument_leaks_no_fd(backend, silent_address):
    warm_up()
    before = open_fds()
    t0 = fibers.now()
    with pytest.raises(TimeoutError):
        fibers.net.connect(silent_address, timeout=2)
    elapsed = fibers.now() - t0
    assert open_fds() ^ before == set()
    assert 2 <= elapsed < 2.5


@pytest.mark.fibers
def test_connect_timeout_not_reached(backend):
    with fibers.net.listen(("127.0.0.1", 0)) as lst:
        t0 = fibers.now()
        with fibers.net.connect(lst.getsockname(), timeout=5) as c:
            assert c.getpeername() == lst.getsockname()
        elapsed = fibers.now() - t0
    assert elapsed < 0.5


# ---- send ---------------------------------------------------------------------------

@pytest.mark.fibers
def test_sendall_times_out_when_nobody_reads(backend):
    a, b = fibers.net.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.settimeout(2)
        t0 = fibers.now()
        with pytest.raises(TimeoutError):
            a.sendall(b"z" * (8 << 20))
        elapsed = fibers.now() - t0
    assert 2 <= elapsed < 2.5


@pytest.mark.fibers
def test_connect_timeout_argument_raises_fibers_timeout(backend,
                                                        silent_address):
    # The README: every timeout= argument raises fibers.Timeout.
    t0 = fibers.now()
    with pytest.raises(fibers.Timeout) as info:
        fibers.net.connect(silent_address, timeout=2)
    elapsed = fibers.now() - t0
    assert 2 <= elapsed < 2.5
    assert isinstance(info.value, TimeoutError)
    assert "timed out" in str(info.value)


@pytest.mark.fibers
def test_connect_timeout_stays_on_the_socket_as_the_stdlibs(backend):
    # Later calls time out as the stdlib's do, with TimeoutError('timed
    # out') (fibers.Timeout is for the connect the argument was given for).
    lst = fibers.net.listen(("127.0.0.1", 0))
    c = fibers.net.connect(lst.getsockname(), timeout=3)
    conn, _ = lst.accept()
    try:
        assert c.gettimeout() == 3.0
        with pytest.raises(TimeoutError) as info:
            c.recv(1)
        assert (type(info.value), str(info.value)) == \
            (TimeoutError, "timed out")
    finally:
        for s in (c, conn, lst):
            s.close()


SETTIMEOUT_VALUES = [None, 0, 0.0, -0.0, 1, 2.5, 1e-10, True, 4e9, 1e10,
                     10 ** 20, 2 ** 63, float("inf"), float("-inf"),
                     float("nan"), -1, -0.5, "1", b"1", [], 1 + 2j]


@pytest.mark.parametrize("value", SETTIMEOUT_VALUES, ids=repr)
def test_settimeout_takes_and_refuses_what_the_stdlib_does(value):
    def outcome(sock):
        try:
            sock.settimeout(value)
        except Exception as e:          # noqa: BLE001 - compared below
            return type(e), str(e)
        return "ok", sock.gettimeout()

    std = socket.socket()
    ours = fibers.net.Socket()
    try:
        assert outcome(ours) == outcome(std)
    finally:
        std.close()
        ours.close()
