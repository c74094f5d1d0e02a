"""Real servers on loopback for tests/test_libs_*.py: unmodified client
libraries, run in fibers under ``fibers.patch()``, talk to these.

- :class:`RedisServer`: a ``redis-server`` process on a free port of
  127.0.0.1, persistence off, its files in a temporary directory.
- :class:`CountingHTTPServer`: ``http.server``'s ThreadingHTTPServer in a
  thread, plain or TLS.  Each request waits (bounded) until ``want``
  requests are in flight at once, so a test shows that its clients
  overlap by what the server saw, never by timing.
- :class:`SMTPServer`: aiosmtpd's ``Controller`` in a thread; it keeps
  every message, and each DATA waits (bounded) until ``want`` sessions
  are sending at once.
- :class:`DNSServer`: a UDP and TCP responder written with dnspython's
  message API, in threads; it answers A queries for ``*.test.`` with an
  address made from the name, and holds each answer (bounded) until
  ``want`` queries are waiting at once.

PostgreSQL comes from tests/pg.py's fixtures.  The fixtures ``rsched``
(a real-clock scheduler on each pump backend) and ``patched``
(``fibers.patched()`` for one test) are shared by the test_libs_* modules.

Every server here runs outside any fiber (its own threads or process),
so under the patch it gets the stdlib's own blocking calls.  Every wait
is bounded by PEER_WAIT; a server whose clients never all arrive gives up
(``gave_up``), answers everyone, and the test sees it.
"""
import http.server
import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import pytest

import fibers
from fibers import patching
from tools.pgcluster import free_port

PEER_WAIT = 30          # seconds any server-side wait lasts at most
START_WAIT = 20         # seconds a server may take to come up


class _InFlight:
    """Counts what is in flight at once; `arrive()` waits (bounded) until
    `want` have been in flight together (or someone gave up)."""

    def __init__(self, want):
        self.want = want
        self.cond = threading.Condition()
        self.inflight = 0
        self.most = 0
        self.gave_up = False

    def arrive(self):
        with self.cond:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.most >= self.want
                                      or self.gave_up, PEER_WAIT):
                self.gave_up = True     # fail fast, not want x PEER_WAIT
                self.cond.notify_all()

    def leave(self):
        with self.cond:
            self.inflight -= 1


# ---- redis-server -----------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")


class RedisUnavailable(Exception):
    pass


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1; ``stop()`` ends it and
    removes its directory.  Readiness is its "Ready to accept connections"
    log line, then a PING answered."""

    def __init__(self):
        if REDIS_SERVER is None:
            raise RedisUnavailable("the redis-server command (Debian package "
                                   "redis-server; sh tools/sysdeps.sh --test "
                                   "installs it) is not installed")
        self.dir = tempfile.mkdtemp(prefix="fibers-redis-")
        self.proc = None
        self.port = None

    def start(self):
        # A free port may be taken between the probe and the bind: retry.
        log = []
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind",
                 "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                 self.dir, "--daemonize", "no", "--protected-mode", "no",
                 "--maxclients", "1000"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir)
            if self._wait_ready(log):
                self._ping()
                return self
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
        raise RedisUnavailable("redis-server did not start: "
                               + "".join(log[-10:]))

    def _wait_ready(self, log):
        out = self.proc.stdout
        deadline = time.monotonic() + START_WAIT
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([out], [], [], deadline - time.monotonic())
            if not r:
                break
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                break               # it exited (port taken, bad option)
            buf += chunk
            if b"Ready to accept connections" in buf:
                # Keep draining its log so it never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return True
        log.append(buf.decode(errors="replace"))
        return False

    def _drain(self):
        out = self.proc.stdout
        try:
            while os.read(out.fileno(), 65536):
                pass
        except (OSError, ValueError):
            pass

    def _ping(self):
        with socket.create_connection(("127.0.0.1", self.port),
                                      timeout=START_WAIT) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64) != b"+PONG\r\n":
                raise RedisUnavailable("redis-server did not answer PING")

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(START_WAIT)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- HTTP and HTTPS ---------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        srv.flight.arrive()
        try:
            body = f"{self.path} {self.headers.get('X-Who', '')}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            srv.flight.leave()

    def log_message(self, *args):
        pass


class CountingHTTPServer(http.server.ThreadingHTTPServer):
    """Answers GET /path with ``b"/path <X-Who header>"``, each request
    waiting until ``want`` are in flight at once.  With ``ssl_context``
    it speaks TLS; the handshake runs in the request's own thread, so
    handshakes overlap too."""

    request_queue_size = 256
    daemon_threads = True

    def __init__(self, want, ssl_context=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.flight = _InFlight(want)
        self.ssl_context = ssl_context
        self._thread = threading.Thread(target=self.serve_forever,
                                        daemon=True)
        self._thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def url(self, path="/"):
        scheme = "https" if self.ssl_context else "http"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}{path}"

    def finish_request(self, request, client_address):
        if self.ssl_context is not None:
            request.settimeout(PEER_WAIT)
            try:
                request = self.ssl_context.wrap_socket(request,
                                                       server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def stop(self):
        self.shutdown()
        self.server_close()
        self._thread.join(PEER_WAIT)


# ---- SMTP -------------------------------------------------------------------

class _Mailbox:
    """aiosmtpd handler: keeps (mail_from, rcpt_tos, content) of each
    message; each DATA waits (bounded) until `want` are in DATA at once."""

    def __init__(self, want):
        import asyncio
        self._asyncio = asyncio
        self.want = want
        self.messages = []
        self.inflight = 0
        self.most = 0
        self.gave_up = False
        self._cond = None

    async def handle_DATA(self, server, session, envelope):
        asyncio = self._asyncio
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
            self._cond.notify_all()
            try:
                await asyncio.wait_for(self._cond.wait_for(
                    lambda: self.most >= self.want or self.gave_up),
                    PEER_WAIT)
            except asyncio.TimeoutError:
                self.gave_up = True
                self._cond.notify_all()
            self.inflight -= 1
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.content))
        return "250 Message accepted for delivery"


class SMTPServer:
    """aiosmtpd's Controller (an asyncio loop in a thread) on a free port
    of 127.0.0.1, with a :class:`_Mailbox` handler."""

    def __init__(self, want):
        from aiosmtpd.controller import Controller
        self.mailbox = _Mailbox(want)
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1",
                                     port=self.port,
                                     ready_timeout=START_WAIT)
        self.controller.start()

    def stop(self):
        self.controller.stop()


# ---- DNS --------------------------------------------------------------------

def address_for(name):
    """The A record DNSServer answers for `name` (a str ending in
    ``.test.``): 10.x.y.z from the name's first label's number."""
    n = int(str(name).split(".")[0].lstrip("h"))
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class DNSServer:
    """Answers ``h<N>.test. A`` with :func:`address_for`, over UDP and TCP
    on one free port of 127.0.0.1; other names get NXDOMAIN.  Each answer
    waits (bounded) until `want` queries (UDP and TCP together) are
    waiting at once."""

    def __init__(self, want):
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset
        self._dns = dns
        self.flight = _InFlight(want)
        self.queries = 0
        self._lock = threading.Lock()
        for _ in range(5):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket()
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise OSError("no port free for both UDP and TCP")
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.tcp.listen(256)
        self._stopping = False
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    def _answer(self, wire):
        dns = self._dns
        q = dns.message.from_wire(wire)
        with self._lock:
            self.queries += 1
        r = dns.message.make_response(q)
        question = q.question[0]
        name = question.name.to_text()
        if name.endswith(".test.") and name.startswith("h") and \
                question.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(
                question.name, 60, "IN", "A", address_for(name)))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve_udp(self):
        while not self._stopping:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if self._stopping:
                return
            # One thread per query: each waits for the others in flight.
            threading.Thread(target=self._udp_one, args=(wire, peer),
                             daemon=True).start()

    def _udp_one(self, wire, peer):
        self.flight.arrive()
        try:
            self.udp.sendto(self._answer(wire), peer)
        except OSError:
            pass
        finally:
            self.flight.leave()

    def _serve_tcp(self):
        while not self._stopping:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            if self._stopping:
                conn.close()
                return
            threading.Thread(target=self._tcp_one, args=(conn,),
                             daemon=True).start()

    def _tcp_one(self, conn):
        conn.settimeout(PEER_WAIT)
        with conn:
            try:
                f = conn.makefile("rb")
                while True:
                    head = f.read(2)
                    if len(head) < 2:
                        return
                    wire = f.read(int.from_bytes(head, "big"))
                    self.flight.arrive()
                    try:
                        out = self._answer(wire)
                        conn.sendall(len(out).to_bytes(2, "big") + out)
                    finally:
                        self.flight.leave()
            except OSError:
                return

    def stop(self):
        self._stopping = True
        # Wake the accept and the recvfrom with a connection and a datagram.
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            try:
                with socket.socket(socket.AF_INET, kind) as s:
                    s.settimeout(START_WAIT)
                    s.connect(("127.0.0.1", self.port))
                    if kind == socket.SOCK_DGRAM:
                        s.send(b"\0")
            except OSError:
                pass
        for t in self._threads:
            t.join(PEER_WAIT)
        self.udp.close()
        self.tcp.close()


# ---- fixtures the test_libs_* modules share ---------------------------------

@pytest.fixture
def rsched(backend):
    """A scheduler on the real clock, on each pump backend: the servers
    are outside the scheduler, and a virtual clock would jump while one
    is merely slow."""
    s = fibers.Scheduler(backend=backend)
    yield s
    s.close()


@pytest.fixture
def patched():
    """``fibers.patch()`` for the test alone (servers start before it)."""
    with fibers.patched():
        yield
    assert not patching.is_patched()
