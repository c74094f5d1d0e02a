"""fibers.ssl: TLS over fibers sockets, against real peers -- `openssl
s_server` / `s_client` processes and the stdlib's ssl in a thread -- on both
pump backends.  Certificates are made per test module by trustme.

Tests with a peer outside the scheduler (a process, a thread) run on the
real clock: a virtual clock would jump while the peer is merely slow.
Tests whose peers are all fibers run on a VirtualClock."""
import hashlib
import logging
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

import capabilities
import fibers
import fibers.net
import fibers.ssl
from iohelp import open_fds, warm_up

trustme = capabilities.importorskip(
    "trustme", "trustme", "trustme (a test dependency, make build's "
    "TEST_DEPS) makes the certificates")

OPENSSL = shutil.which("openssl")
needs_openssl = capabilities.requires(
    "openssl", "the openssl command (Debian package openssl; sh "
    "tools/sysdeps.sh --test installs it) is not installed"
    if OPENSSL is None else None)

BIG = 64 << 20
PEER_WAIT = 40          # seconds a thread or process peer may take at most


# ---- certificates and contexts -------------------------------------------------

class Certs:
    def __init__(self, d):
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.client = self.ca.issue_cert("client.example.org")
        self.dir = d
        self.ca_pem = str(d / "ca.pem")
        self.server_pem = str(d / "server.pem")
        self.client_pem = str(d / "client.pem")
        self.ca.cert_pem.write_to_path(self.ca_pem)
        self.server.private_key_and_cert_chain_pem.write_to_path(
            self.server_pem)
        self.client.private_key_and_cert_chain_pem.write_to_path(
            self.client_pem)

    def server_ctx(self, alpn=None, client_cert=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.configure_cert(ctx)
        if client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_ctx(self, alpn=None, cert=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(ctx)
        if cert:
            self.client.configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def rsched(backend):
    """A scheduler on the real clock, for tests with outside peers."""
    s = fibers.Scheduler(backend=backend)
    yield s
    s.close()


# ---- peers ------------------------------------------------------------------------

class ThreadPeer:
    """Runs fn() in a thread; result() joins it (bounded) and returns its
    value or raises its exception."""

    def __init__(self, fn, *args):
        self._out = None
        self._err = None
        self._t = threading.Thread(target=self._run, args=(fn, args),
                                   daemon=True)
        self._t.start()

    def _run(self, fn, args):
        try:
            self._out = fn(*args)
        except BaseException as e:      # handed to result()
            self._err = e

    def result(self):
        self._t.join(PEER_WAIT)
        assert not self._t.is_alive(), "the thread peer did not finish"
        if self._err is not None:
            raise self._err
        return self._out


def std_listener():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(PEER_WAIT)
    return ls


def std_accept(ls):
    conn, _ = ls.accept()
    conn.settimeout(PEER_WAIT)
    return conn


class Process:
    """An external process, stopped (terminate, then kill) at the end."""

    def __init__(self, argv, **kw):
        self.p = subprocess.Popen(argv, **kw)

    def wait(self):
        return self.p.wait(PEER_WAIT)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def procs():
    started = []

    def start(argv, **kw):
        pr = Process(argv, **kw)
        started.append(pr)
        return pr
    yield start
    for pr in started:
        pr.stop()


def s_server(procs, certs, *args):
    """`openssl s_server` on a free loopback port: (process, port)."""
    pr = procs([OPENSSL, "s_server", "-accept", "127.0.0.1:0",
                "-cert", certs.server_pem, "-naccept", "1", *args],
               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
               stderr=subprocess.STDOUT)
    fd = pr.p.stdout.fileno()
    seen = b""
    for _ in range(200):            # bounded: each wait is up to 0.2 s
        if b"\n" in seen and b"ACCEPT" in seen:
            break
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    line = [ln for ln in seen.splitlines() if ln.startswith(b"ACCEPT")]
    assert line, f"s_server did not start: {seen!r}"
    port = int(line[0].rsplit(b":", 1)[1])
    # Keep its output flowing so it never blocks on a full pipe.
    threading.Thread(target=_drain, args=(pr.p.stdout,), daemon=True).start()
    return pr, port


def _drain(f):
    try:
        while f.read(65536):
            pass
    except (OSError, ValueError):
        pass


def s_client(procs, certs, port, *args, stdin, stdout):
    return procs([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
                  "-CAfile", certs.ca_pem, "-servername", "localhost",
                  "-verify_return_error", "-quiet", "-nocommands", *args],
                 stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)


TICK = 0.25


def ticker(counter):
    """A fiber body that counts ticks of TICK s until killed.  (Not
    shorter: on a VirtualClock, each jump while I/O waits costs real
    time, the clock's io_grace.)"""
    while True:
        fibers.sleep(TICK)
        counter[0] += 1


def echo_exact(n):
    """A serve() handler that echoes n bytes, then returns (closing)."""
    def handler(conn, addr):
        got = 0
        while got < n:
            d = conn.recv(65536)
            if not d:
                break
            conn.sendall(d)
            got += len(d)
    return handler


# ---- against openssl s_server / s_client ----------------------------------------

@needs_openssl
def test_client_to_openssl_s_server_with_alpn(rsched, procs, certs):
    pr, port = s_server(procs, certs, "-rev", "-alpn", "x-other,x-fibers")

    def main():
        ctx = certs.client_ctx(alpn=["x-fibers"])
        with fibers.net.connect(("127.0.0.1", port), ssl=ctx,
                                server_hostname="localhost") as c:
            assert isinstance(c, fibers.ssl.TLSSocket)
            assert c.selected_alpn_protocol() == "x-fibers"
            assert c.version() in ("TLSv1.2", "TLSv1.3")
            assert c.cipher()[0]
            assert c.getpeercert()["subjectAltName"][0] == ("DNS",
                                                            "localhost")
            c.sendall(b"hello fibers\n")
            f = c.makefile("rb")
            line = f.readline()
            f.close()
            return line
    assert rsched.run(main) == b"srebif olleh\n"


@needs_openssl
def test_client_certificate_given_to_openssl_s_server(rsched, procs, certs):
    pr, port = s_server(procs, certs, "-rev", "-Verify", "1",
                        "-CAfile", certs.ca_pem)

    def main():
        with fibers.net.connect(("127.0.0.1", port),
                                ssl=certs.client_ctx(cert=True),
                                server_hostname="localhost") as c:
            c.sendall(b"abc\n")
            data = b""
            while not data.endswith(b"\n"):
                d = c.recv(100)
                assert d, "s_server closed without answering"
                data += d
            return data
    assert rsched.run(main) == b"cba\n"


@needs_openssl
def test_server_to_openssl_s_client_with_alpn(rsched, procs, certs,
                                              tmp_path):
    seen = {}
    message = b"ping from s_client\n"

    def handler(conn, addr):
        seen["alpn"] = conn.selected_alpn_protocol()
        seen["server_side"] = conn.server_side
        echo_exact(len(message))(conn, addr)

    out = tmp_path / "out"

    def main():
        srv = fibers.net.serve(("127.0.0.1", 0), handler,
                               ssl=certs.server_ctx(alpn=["x-fibers", "h2"]))
        with open(out, "wb") as fout:
            pr = s_client(procs, certs, srv.address[1], "-alpn", "x-fibers",
                          stdin=subprocess.PIPE, stdout=fout)
            pr.p.stdin.write(message)
            pr.p.stdin.close()
            rc = fibers.blocking(pr.wait)
        srv.stop(grace=5)
        return rc
    assert rsched.run(main) == 0
    assert out.read_bytes() == message
    assert seen == {"alpn": "x-fibers", "server_side": True}


@needs_openssl
def test_server_requires_client_certificate_s_client_has_none(
        rsched, procs, certs):
    def main():
        ls = fibers.net.listen(("127.0.0.1", 0),
                               ssl=certs.server_ctx(client_cert=True))
        with ls:
            pr = s_client(procs, certs, ls.getsockname()[1],
                          stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL)
            conn, _ = ls.accept()
            with conn:
                with pytest.raises(ssl.SSLError) as info:
                    conn.recv(10)
                # Broken for good: the next call says so rather than wait.
                with pytest.raises(ssl.SSLError, match="broken"):
                    conn.recv(10)
            rc = fibers.blocking(pr.wait)
        return info.value, rc
    err, rc = rsched.run(main)
    assert "certificate" in str(err).lower()
    assert not isinstance(err, ssl.SSLEOFError)
    assert rc != 0


@needs_openssl
def test_64_mib_each_way_through_openssl_s_client(rsched, procs, certs,
                                                  tmp_path):
    src = tmp_path / "in"
    out = tmp_path / "out"
    with open(src, "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))

    def main():
        srv = fibers.net.serve(("127.0.0.1", 0), echo_exact(BIG),
                               ssl=certs.server_ctx())
        with open(src, "rb") as fin, open(out, "wb") as fout:
            pr = s_client(procs, certs, srv.address[1], stdin=fin,
                          stdout=fout)
            rc = fibers.blocking(pr.wait)
        srv.stop(grace=5)
        return rc
    assert rsched.run(main) == 0
    assert out.stat().st_size == BIG
    assert _sha(out) == _sha(src)


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- against the stdlib's ssl in a thread ----------------------------------------

def test_64_mib_both_ways_full_duplex_with_stdlib_echo_peer(rsched, certs):
    # The peer echoes as it reads, so both directions flow at once: the
    # fibers side must read (one fiber) while it writes (another).
    ls = std_listener()
    sctx = certs.server_ctx()

    def peer():
        with std_accept(ls) as raw, sctx.wrap_socket(raw,
                                                     server_side=True) as s:
            h = hashlib.sha256()
            n = 0
            while True:
                d = s.recv(65536)
                if not d:
                    break
                h.update(d)
                n += len(d)
                s.sendall(d)
            return n, h.hexdigest()
    t = ThreadPeer(peer)

    def main():
        c = fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="localhost")
        sent = hashlib.sha256()
        block = os.urandom(1 << 20)

        def writer():
            for i in range(BIG >> 20):
                piece = bytes([i & 255]) + block[1:]
                sent.update(piece)
                c.sendall(piece)
            c.shutdown(socket.SHUT_WR)      # close_notify: the peer's EOF

        w = fibers.spawn(writer)
        got = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 18)
        while n < BIG:
            k = c.recv_into(buf)
            assert k, f"the stream ended after {n} bytes"
            got.update(memoryview(buf)[:k])
            n += k
        w.join()
        c.close()
        return sent.hexdigest(), got.hexdigest()
    sent, got = rsched.run(main)
    n, peer_got = t.result()
    ls.close()
    assert n == BIG
    assert peer_got == sent
    assert got == sent


def test_client_certificate_required_and_given(rsched, certs):
    cctx = certs.client_ctx(cert=True)

    def main():
        lsn = fibers.net.listen(("127.0.0.1", 0),
                                ssl=certs.server_ctx(client_cert=True))
        addr = lsn.getsockname()

        def client():
            raw = socket.create_connection(addr, timeout=PEER_WAIT)
            with cctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"hi")
                return s.recv(10)
        t = ThreadPeer(client)
        conn, _ = lsn.accept()
        with conn, lsn:
            assert conn.recv(10) == b"hi"
            cert = conn.getpeercert()
            conn.sendall(b"ok")
            reply = fibers.blocking(t.result)
        return cert, reply
    cert, reply = rsched.run(main)
    assert reply == b"ok"
    assert ("DNS", "client.example.org") in cert["subjectAltName"]


def test_hostname_verification_failure(rsched, certs):
    ls = std_listener()
    sctx = certs.server_ctx()

    def peer():
        with std_accept(ls) as raw:
            try:
                sctx.wrap_socket(raw, server_side=True).close()
            except (ssl.SSLError, OSError):
                pass            # the client's alert: expected
    t = ThreadPeer(peer)

    def main():
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="wrong.example.org")
        return info.value
    err = rsched.run(main)
    t.result()
    ls.close()
    assert "wrong.example.org" in str(err) or "match" in str(err).lower()


def test_untrusted_server_certificate(rsched, certs):
    ls = std_listener()
    other = trustme.CA().issue_cert("localhost")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    other.configure_cert(sctx)

    def peer():
        with std_accept(ls) as raw:
            try:
                sctx.wrap_socket(raw, server_side=True).close()
            except (ssl.SSLError, OSError):
                pass
    t = ThreadPeer(peer)

    def main():
        with pytest.raises(ssl.SSLCertVerificationError):
            fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="localhost")
    rsched.run(main)
    t.result()
    ls.close()


def test_unwrap_hands_back_the_socket_with_bytes_after_close_notify(
        rsched, certs):
    # The peer answers our close_notify with its own and plain text in ONE
    # send, so they usually arrive in one read: the plain text must not be
    # lost in the TLS layer's buffer.
    ls = std_listener()
    sctx = certs.server_ctx()

    def peer():
        with std_accept(ls) as raw:
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = sctx.wrap_bio(inc, out, server_side=True)
            plain = b""
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(out.read())
                    inc.write(raw.recv(65536))
            raw.sendall(out.read())
            while True:     # read 'bye', then the client's close_notify
                try:
                    d = obj.read(100)
                except ssl.SSLWantReadError:
                    inc.write(raw.recv(65536))
                    continue
                except ssl.SSLZeroReturnError:
                    d = b""
                if not d:
                    break
                plain += d
            obj.unwrap()    # its close_notify: ours was already read
            raw.sendall(out.read() + b"plain text after TLS")
            rest = raw.recv(100)
            return plain, rest
    t = ThreadPeer(peer)

    def main():
        c = fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="localhost")
        c.sendall(b"bye")
        raw = c.unwrap()
        assert isinstance(raw, fibers.net.Socket)
        assert c.fileno() == -1
        got = b""
        while len(got) < len(b"plain text after TLS"):
            d = raw.recv(100)
            assert d
            got += d
        raw.sendall(b"plain reply")
        raw.close()
        return got
    assert rsched.run(main) == b"plain text after TLS"
    assert t.result() == (b"bye", b"plain reply")
    ls.close()


@pytest.mark.parametrize("suppress", [True, False])
def test_ragged_eof(rsched, certs, suppress):
    ls = std_listener()
    sctx = certs.server_ctx()

    def peer():
        with std_accept(ls) as raw:
            s = sctx.wrap_socket(raw, server_side=True)
            s.sendall(b"last words")
            # Close the TCP connection without a close_notify.
            socket.socket(fileno=s.detach()).close()
    t = ThreadPeer(peer)

    def main():
        raw = fibers.net.connect(ls.getsockname())
        c = fibers.ssl.wrap(raw, certs.client_ctx(),
                            server_hostname="localhost",
                            suppress_ragged_eofs=suppress)
        with c:
            got = b""
            while len(got) < 10:
                got += c.recv(100)
            assert got == b"last words"
            if suppress:
                return c.recv(100)
            with pytest.raises(ssl.SSLEOFError):
                c.recv(100)
    assert rsched.run(main) in (b"", None)
    t.result()
    ls.close()


def test_close_notify_reads_as_end_and_stays_so(rsched, certs):
    ls = std_listener()
    sctx = certs.server_ctx()
    done = threading.Event()

    def peer():
        with std_accept(ls) as raw:
            s = sctx.wrap_socket(raw, server_side=True)
            s.sendall(b"x")
            s.unwrap()          # close_notify, and waits for ours
            done.wait(PEER_WAIT)    # the TCP connection stays open
    t = ThreadPeer(peer)

    def main():
        with fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                                server_hostname="localhost") as c:
            assert c.recv(10) == b"x"
            assert c.recv(10) == b""
            c.settimeout(5)
            # Again: at once, not a wait on the still-open transport.
            assert c.recv(10) == b""
            assert c.recv_into(bytearray(4)) == 0
            c.shutdown(socket.SHUT_WR)      # answers with ours
        done.set()
    rsched.run(main)
    t.result()
    ls.close()


# ---- bad peers: mid-handshake close, silence, plain TCP ---------------------------

def client_hello(certs):
    """The first flight of a real TLS client."""
    out = ssl.MemoryBIO()
    obj = certs.client_ctx().wrap_bio(ssl.MemoryBIO(), out,
                                      server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_client_peer_closes_mid_handshake(io_sched, certs):
    hello = client_hello(certs)

    def main():
        warm_up()
        before = open_fds()
        ls = fibers.net.listen(("127.0.0.1", 0))
        with ls:
            def bad_client():
                s = fibers.net.connect(ls.getsockname())
                s.sendall(hello[:len(hello) // 2])
                s.close()
            fibers.spawn(bad_client)
            conn, _ = ls.accept()
            with pytest.raises(ssl.SSLEOFError):
                fibers.ssl.wrap(conn, certs.server_ctx(), server_side=True)
        assert open_fds() == before
    io_sched.run(main)


def test_server_peer_closes_mid_handshake(io_sched, certs):
    def main():
        ls = fibers.net.listen(("127.0.0.1", 0))

        def bad_server():
            conn, _ = ls.accept()
            # Read the whole client hello (a close with unread data would
            # be a reset, not an EOF), then go without a word.
            head = conn.recv(5, socket.MSG_WAITALL)
            assert head[0] == 22            # a handshake record
            conn.recv(int.from_bytes(head[3:5], "big"), socket.MSG_WAITALL)
            conn.close()
        f = fibers.spawn(bad_server)
        with pytest.raises(ssl.SSLEOFError):
            fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="localhost")
        f.join()
        ls.close()
    io_sched.run(main)


def test_silent_client_times_out_and_costs_only_its_fiber(io_sched, certs):
    ticks = [0]

    def main():
        warm_up()
        before = open_fds()
        tk = fibers.spawn(ticker, ticks)
        ls = fibers.net.listen(("127.0.0.1", 0))
        silent = fibers.net.connect(ls.getsockname())
        conn, _ = ls.accept()
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout, match="TLS handshake"):
            fibers.ssl.wrap(conn, certs.server_ctx(), server_side=True,
                            handshake_timeout=5)
        elapsed = fibers.now() - t0
        assert conn.closed         # wrap closed it, as the stdlib does
        silent.close()
        ls.close()
        tk.kill()
        assert open_fds() == before
        return elapsed
    elapsed = io_sched.run(main)
    assert 5 <= elapsed < 5.5
    # The ticker ran all along: 20 ticks in 5 s.
    assert ticks[0] >= 19


def test_silent_server_socket_timeout_raises_timeouterror(io_sched, certs):
    def main():
        ls = fibers.net.listen(("127.0.0.1", 0))
        raw = fibers.net.connect(ls.getsockname())
        raw.settimeout(3)
        t0 = fibers.now()
        with pytest.raises(TimeoutError, match="timed out") as info:
            fibers.ssl.wrap(raw, certs.client_ctx(),
                            server_hostname="localhost")
        # The socket's own timeout: socket.timeout, as fibers' Socket
        # raises, not the fibers.Timeout of handshake_timeout=.
        assert not isinstance(info.value, fibers.Timeout)
        ls.close()
        return fibers.now() - t0
    elapsed = io_sched.run(main)
    assert 3 <= elapsed < 3.5


def test_connect_timeout_covers_the_handshake(io_sched, certs):
    def main():
        ls = fibers.net.listen(("127.0.0.1", 0))
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout, match="TLS handshake"):
            fibers.net.connect(ls.getsockname(), timeout=2,
                               ssl=certs.client_ctx(),
                               server_hostname="localhost")
        ls.close()
        return fibers.now() - t0
    elapsed = io_sched.run(main)
    assert 2 <= elapsed < 2.5


def test_serve_silent_and_plain_clients_do_not_stall_others(io_sched,
                                                             certs, errlog):
    # One client never speaks, one speaks plain HTTP; a real TLS client
    # meanwhile gets served, and a ticker keeps ticking.
    ticks = [0]
    served = []

    def handler(conn, addr):
        served.append(conn.recv(100))
        conn.sendall(b"ok")

    def main():
        tk = fibers.spawn(ticker, ticks)
        srv = fibers.net.serve(("127.0.0.1", 0), handler,
                               ssl=certs.server_ctx(), handshake_timeout=10)
        silent = fibers.net.connect(srv.address)
        plain = fibers.net.connect(srv.address)
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        t0 = fibers.now()
        with fibers.net.connect(srv.address, ssl=certs.client_ctx(),
                                server_hostname="localhost") as c:
            c.sendall(b"hello")
            assert c.recv(10) == b"ok"
        good = fibers.now() - t0
        # The plain client's handshake failed and its connection closed
        # (an alert, then EOF), while the silent one still waits.
        junk = b""
        for _ in range(10):
            d = plain.recv(1000)
            if not d:
                break
            junk += d
        plain.close()
        assert srv.connections == 1
        fibers.sleep(11)        # past the handshake timeout
        assert srv.connections == 0
        assert silent.recv(10) == b""       # closed by the server
        silent.close()
        srv.stop()
        tk.kill()
        return good
    good = io_sched.run(main)
    assert good < 1
    assert served == [b"hello"]
    assert ticks[0] >= 11 / TICK
    assert not [r for r in errlog.records if r.levelno >= logging.ERROR]


def test_plain_tcp_server_raises_sslerror(io_sched, certs):
    ticks = [0]

    def main():
        tk = fibers.spawn(ticker, ticks)
        ls = fibers.net.listen(("127.0.0.1", 0))

        def plain_server():
            conn, _ = ls.accept()
            with conn:
                conn.recv(1000)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS")
                fibers.sleep(60)
        f = fibers.spawn(plain_server)
        with pytest.raises(ssl.SSLError) as info:
            fibers.net.connect(ls.getsockname(), ssl=certs.client_ctx(),
                               server_hostname="localhost")
        f.kill()
        ls.close()
        tk.kill()
        return info.value
    err = io_sched.run(main)
    assert not isinstance(err, ssl.SSLEOFError)
    assert "wrong version number" in str(err).lower() or \
        "record" in str(err).lower()


def test_killed_during_handshake_leaks_nothing(io_sched, certs):
    def main():
        warm_up()
        before = open_fds()
        ls = fibers.net.listen(("127.0.0.1", 0),
                               ssl=certs.server_ctx(), handshake_timeout=None)
        silent = fibers.net.connect(ls.getsockname())
        conn, _ = ls.accept()

        def handshaker():
            with conn:
                conn.do_handshake()
        f = fibers.spawn(handshaker)
        fibers.sleep(1)
        assert f.state == "suspended"
        f.kill()
        assert f.dead
        assert conn.closed
        with pytest.raises(OSError):
            conn.recv(1)
        silent.close()
        ls.close()
        assert open_fds() == before
    io_sched.run(main)


# ---- between fibers (both ends fibers.ssl) ----------------------------------------

def tls_pair(certs, **kw):
    """(client, server) TLSSockets over a loopback TCP pair, handshaken."""
    ls = fibers.net.listen(("127.0.0.1", 0))
    c_raw = fibers.net.connect(ls.getsockname())
    s_raw, _ = ls.accept()
    ls.close()
    srv = fibers.ssl.wrap(s_raw, certs.server_ctx(), server_side=True,
                          do_handshake_on_connect=False)
    f = fibers.spawn(srv.do_handshake)
    cli = fibers.ssl.wrap(c_raw, certs.client_ctx(),
                          server_hostname="localhost", **kw)
    f.join()
    return cli, srv


def test_recv_timeout_loses_nothing_and_can_be_retried(io_sched, certs):
    def main():
        cli, srv = tls_pair(certs)
        with cli, srv:
            cli.settimeout(2)
            assert cli.gettimeout() == 2
            with pytest.raises(TimeoutError, match="timed out"):
                cli.recv(10)
            srv.sendall(b"after the timeout")
            assert cli.recv(100) == b"after the timeout"
    io_sched.run(main)


def test_two_readers_and_a_lazy_handshake_from_two_fibers(io_sched, certs):
    def main():
        ls = fibers.net.listen(("127.0.0.1", 0), ssl=certs.server_ctx())
        box = []
        fc = fibers.spawn(lambda: box.append(fibers.net.connect(
            ls.getsockname(), ssl=certs.client_ctx(),
            server_hostname="localhost")))
        conn, _ = ls.accept()
        got = []

        def reader():
            got.append(conn.recv(100))
        # Both fibers need the (lazy) handshake; one does it, the other
        # waits for it; then one transport receive serves them in turn.
        r1 = fibers.spawn(reader)
        r2 = fibers.spawn(reader)
        fc.join()
        cli = box[0]
        fibers.sleep(0.5)
        cli.sendall(b"one")
        fibers.sleep(0.5)
        cli.sendall(b"two")
        r1.join()
        r2.join()
        cli.close()
        conn.close()
        ls.close()
        return sorted(got)
    assert io_sched.run(main) == [b"one", b"two"]


def test_concurrent_senders_keep_their_data_whole(io_sched, certs):
    def main():
        cli, srv = tls_pair(certs)
        pieces = {bytes([65 + i]) * (300000 + i) for i in range(4)}

        def send(p):
            cli.sendall(p)
        fs = [fibers.spawn(send, p) for p in pieces]
        total = sum(len(p) for p in pieces)
        data = b""
        while len(data) < total:
            d = srv.recv(1 << 20)
            assert d
            data += d
        for f in fs:
            f.join()
        cli.close()
        srv.close()
        return data, pieces
    data, pieces = io_sched.run(main)
    # Each sendall's bytes arrive in order, but each slice of 256 KiB is
    # one unit: check every byte value's count and that runs are ordered.
    for p in pieces:
        assert data.count(p[:1]) == len(p)


def test_makefile_and_shutdown_half_close(io_sched, certs):
    def main():
        cli, srv = tls_pair(certs)
        with cli, srv:
            w = cli.makefile("w")
            w.write("line one\nline two\n")
            w.flush()
            w.close()
            cli.shutdown(socket.SHUT_WR)
            r = srv.makefile("r")
            lines = r.readlines()
            r.close()
            # Half-closed: the other direction still works.
            srv.sendall(b"back")
            return lines, cli.recv(10)
    lines, back = io_sched.run(main)
    assert lines == ["line one\n", "line two\n"]
    assert back == b"back"


def test_bad_arguments_raise_typeerror_naming_them(io_sched, certs):
    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            with pytest.raises(TypeError, match="sock"):
                fibers.ssl.wrap(object(), certs.client_ctx())
            with pytest.raises(TypeError, match="context"):
                fibers.ssl.wrap(a, "not a context")
            with pytest.raises(TypeError, match="handshake_timeout"):
                fibers.ssl.wrap(a, certs.server_ctx(), server_side=True,
                                handshake_timeout="5")
            with pytest.raises(TypeError, match="ssl"):
                fibers.net.connect(("127.0.0.1", 1), ssl=True)
            with pytest.raises(TypeError, match="ssl"):
                fibers.net.serve(("127.0.0.1", 0), print, ssl="x")
            with pytest.raises(ValueError, match="server_hostname"):
                # check_hostname needs a name: the stdlib's ValueError.
                fibers.ssl.wrap(a, certs.client_ctx())
    io_sched.run(main)
