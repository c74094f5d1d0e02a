"""fibers.patch(): the stdlib's blocking calls suspend only the calling
fiber inside one, and are the stdlib's own everywhere else.  On both pump
backends, with real sockets, pipes, children, threads and an HTTP server
the test starts.  Overlap is shown by events (a server counting requests
in flight at once, children waiting for each other), never by wall-clock
margins."""
import http.client
import http.server
import os
import select
import selectors
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import capabilities
import fibers
import fibers.net
import fibers.ssl
from fibers import patching

PEER_WAIT = 30          # seconds a real thread waits for its peer at most


def _targets():
    """Every (owner, attr) any part replaces, read as plain attributes."""
    out = []
    for name, part in patching._PARTS.items():
        out += [(owner, attr) for owner, attr, _ in part()]
    return out


def _snapshot(targets):
    return {(id(o), a): (o.__dict__.get(a) if isinstance(o, type)
                         else getattr(o, a)) for o, a in targets}


@pytest.fixture
def patched():
    with fibers.patched():
        yield
    assert not patching.is_patched()


# ---- the patch itself -------------------------------------------------------------

def test_unpatch_restores_every_attribute_by_identity():
    targets = _targets()
    before = _snapshot(targets)
    fibers.patch()
    try:
        during = _snapshot(targets)
        changed = [k for k in before if before[k] is not during[k]]
        assert len(changed) == len(targets)
        fibers.patch()                          # idempotent
        assert all(during[k] is v for k, v in _snapshot(targets).items())
    finally:
        fibers.unpatch()
    after = _snapshot(targets)
    assert all(before[k] is after[k] for k in before)
    fibers.unpatch()                            # twice is harmless
    assert all(before[k] is v for k, v in _snapshot(targets).items())


def test_options_leave_parts_out():
    with fibers.patched(select=False, time=False):
        assert select.select is patching._std_select
        assert time.sleep is patching._std_sleep
        assert socket.socket is not patching._std_socket
    assert socket.socket is patching._std_socket


def test_outside_a_fiber_everything_is_the_stdlibs(patched):
    s = socket.socket()
    a, b = socket.socketpair()
    try:
        assert type(s) is patching._std_socket
        assert type(a) is patching._std_socket
        assert isinstance(s, socket.socket)
        time.sleep(0)
        a.sendall(b"x")
        assert select.select([b], [], [], 5)[0] == [b]
        assert b.recv(1) == b"x"
    finally:
        for x in (s, a, b):
            x.close()


def test_subclasses_and_isinstance_keep_working(patched):
    class Mine(socket.socket):
        pass

    m = Mine()
    m.close()
    assert type(m) is Mine and isinstance(m, patching._std_socket)
    assert issubclass(Mine, socket.socket)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    assert isinstance(p, subprocess.Popen)
    assert p.wait() == 0


def test_bad_input():
    with pytest.raises(TypeError, match="'socket' must be bool"):
        fibers.patch(socket="yes")
    with pytest.raises(TypeError):
        fibers.patch(nonsense=True)
    with pytest.raises(TypeError):
        fibers.patch(True)
    errors = []

    def other():
        try:
            fibers.patch()
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join(PEER_WAIT)
    assert errors == ["fibers.patch() must be called from the main thread"]
    assert not patching.is_patched()


_UNDER_GEVENT = """
from gevent import monkey
monkey.patch_all()
import select
assert not hasattr(select, "epoll")     # gevent removes it
import fibers                           # importing still works
try:
    fibers.patch()
except RuntimeError as e:
    print(e)
print(fibers.patching.is_patched())
"""


def test_patch_refuses_under_gevents_monkey_patching():
    # Regression: `import fibers` after gevent's patch_all() raised
    # AttributeError (select.epoll is gone); patch() must then refuse.
    capabilities.importorskip("gevent", "gevent")
    r = subprocess.run([sys.executable, "-c", _UNDER_GEVENT],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "fibers.patch() cannot work while gevent's monkey patching is "
        "active ('socket' is patched by gevent)", "False"]




# ---- sockets, time, select, os --------------------------------------------------

def test_sockets_made_in_a_fiber_are_cooperative(io_sched, patched):
    log = []

    def reader(b):
        log.append(("reading", fibers.now()))
        log.append(("got", b.recv(10), fibers.now()))

    def main():
        a, b = socket.socketpair()
        assert type(a) is fibers.net.Socket
        assert isinstance(a, socket.socket)
        assert isinstance(a, patching._std_socket)
        r = fibers.spawn(reader, b)
        time.sleep(3)                   # suspends this fiber only
        a.sendall(b"hi")
        r.join()
        a.close()
        b.close()

    io_sched.run(main)
    assert log == [("reading", 0.0), ("got", b"hi", 3.0)]


def test_real_thread_blocks_while_fibers_run(io_sched, patched):
    r, w = os.pipe()
    seen = {}

    def thread_body():
        # Outside any fiber: the stdlib's blocking calls, truly blocking.
        a, b = socket.socketpair()
        seen["types"] = (type(a), type(b))
        time.sleep(0.01)
        a.sendall(b"ping")
        seen["got"] = b.recv(4)
        a.close()
        b.close()
        os.write(w, b"done")

    ticks = []

    def ticker():
        for _ in range(5):
            time.sleep(1)
            ticks.append(fibers.now())

    def main():
        t = fibers.spawn(ticker)
        th = threading.Thread(target=thread_body)
        th.start()
        got = os.read(r, 4)             # cooperative: the ticker runs
        t.join()
        fibers.blocking(th.join, PEER_WAIT)
        return got

    assert io_sched.run(main) == b"done"
    assert seen["types"] == (patching._std_socket,) * 2
    assert seen["got"] == b"ping"
    assert ticks == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert os.get_blocking(r)           # never flipped
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("how", ["select", "poll", "epoll", "selectors"])
def test_select_family_waits_cooperatively(io_sched, patched, how):
    r, w = os.pipe()

    def wait_readable(timeout):
        if how == "select":
            return bool(select.select([r], [], [], timeout)[0])
        if how == "poll":
            p = select.poll()
            p.register(r, select.POLLIN)
            return bool(p.poll(None if timeout is None else timeout * 1000))
        if how == "epoll":
            with select.epoll() as ep:
                ep.register(r, select.EPOLLIN)
                return bool(ep.poll(timeout))
        with selectors.DefaultSelector() as sel:
            sel.register(r, selectors.EVENT_READ)
            return bool(sel.select(timeout))

    def writer():
        time.sleep(2)
        os.write(w, b"x")

    def main():
        t0 = fibers.now()
        assert wait_readable(5) is False
        assert fibers.now() - t0 == 5.0
        fibers.spawn(writer)
        assert wait_readable(None) is True
        assert fibers.now() - t0 == 7.0

    io_sched.run(main)
    assert os.get_blocking(r) and os.get_blocking(w)
    os.close(r)
    os.close(w)


def test_os_read_and_write_on_a_pipe(io_sched, patched):
    r, w = os.pipe()
    big = bytes(range(256)) * 4096          # 1 MiB: more than a pipe holds
    got = bytearray()

    def reader():
        while len(got) < len(big):
            chunk = os.read(r, 65536)
            assert chunk
            got.extend(chunk)

    def main():
        f = fibers.spawn(reader)
        view = memoryview(big)
        while view:
            view = view[os.write(w, view):]
        f.join()

    io_sched.run(main)
    assert bytes(got) == big
    assert os.get_blocking(r) and os.get_blocking(w)
    os.close(r)
    os.close(w)


# ---- real libraries: http.client, urllib.request, ssl --------------------------

class _CountingServer(http.server.ThreadingHTTPServer):
    """Each request waits (bounded) until `want` are in flight at once."""
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, want):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.want = want
        self.cond = threading.Condition()
        self.inflight = 0
        self.most = 0
        self.gave_up = False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        with srv.cond:
            srv.inflight += 1
            srv.most = max(srv.most, srv.inflight)
            srv.cond.notify_all()
            if not srv.cond.wait_for(lambda: srv.most >= srv.want
                                     or srv.gave_up, PEER_WAIT):
                srv.gave_up = True          # fail fast, not 50 x PEER_WAIT
                srv.cond.notify_all()
            srv.inflight -= 1
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(want):
        srv = _CountingServer(want)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_http_client_from_50_fibers_overlaps(io_sched, patched, http_server):
    srv = http_server(40)
    port = srv.server_address[1]

    def fetch(i):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        try:
            conn.request("GET", f"/{i}")
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def main():
        jobs = [fibers.spawn(fetch, i) for i in range(50)]
        return [j.join() for j in jobs]

    assert io_sched.run(main) == [(200, f"/{i}".encode()) for i in range(50)]
    assert srv.most >= 40 and not srv.gave_up


def test_urllib_request_fetches(io_sched, patched, http_server):
    srv = http_server(3)
    url = f"http://127.0.0.1:{srv.server_address[1]}/page"

    def fetch():
        with urllib.request.urlopen(url, timeout=PEER_WAIT) as resp:
            return resp.read()

    def main():
        jobs = [fibers.spawn(fetch) for _ in range(3)]
        return [j.join() for j in jobs]

    assert io_sched.run(main) == [b"/page"] * 3
    assert srv.most == 3


def test_ssl_wrap_socket_in_a_fiber_is_fibers_tls(io_sched, patched):
    trustme = capabilities.importorskip(
        "trustme", "trustme", "trustme (a test dependency) makes the "
        "certificates")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(cctx)

    def server(sock):
        with sctx.wrap_socket(sock, server_side=True) as t:
            t.sendall(t.recv(100).upper())

    def main():
        a, b = socket.socketpair()
        f = fibers.spawn(server, b)
        with cctx.wrap_socket(a, server_hostname="localhost") as t:
            assert isinstance(t, fibers.ssl.TLSSocket)
            t.sendall(b"hello")
            got = t.recv(100)
        f.join()
        return got

    assert io_sched.run(main) == b"HELLO"


# ---- subprocess -----------------------------------------------------------------

def test_subprocess_run_in_fibers_overlaps(io_sched, patched, tmp_path):
    n = 5
    roll = tmp_path / "roll"
    roll.write_text("")
    # Each child signs the roll, then waits (bounded) until all n have:
    # they can only all finish if all n run at once.
    script = (f'echo x >> {roll}; for i in $(seq 1000); do '
              f'[ "$(wc -l < {roll})" -ge {n} ] && exit 0; sleep 0.01; '
              f'done; exit 1')

    def child():
        return subprocess.run(["sh", "-c", script], capture_output=True,
                              timeout=PEER_WAIT).returncode

    def main():
        jobs = [fibers.spawn(child) for _ in range(n)]
        return [j.join() for j in jobs]

    assert io_sched.run(main) == [0] * n


def test_subprocess_timeout_in_a_fiber(io_sched, patched):
    ticks = []

    def ticker():
        for _ in range(3):
            time.sleep(0.1)
            ticks.append(fibers.now())

    def main():
        t = fibers.spawn(ticker)
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["sleep", "60"], timeout=1)
        t.join()
        out = subprocess.check_output(["echo", "hi"], timeout=PEER_WAIT)
        return out

    assert io_sched.run(main) == b"hi\n"
    assert len(ticks) == 3
