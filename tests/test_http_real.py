"""fibers.http with real clients, a real framework and real processes.

tests/test_http.py checks the protocol with fiber clients in-process; this
module checks that the outside world gets along with the server:

- a Flask app (routing, a 404, a form, a multipart upload) answered to the
  stdlib's ``http.client`` and ``urllib.request``, and to Debian's ``curl``;
- pipelined requests written raw on a plain socket;
- TLS with trustme certificates, to ``curl --cacert`` and a verifying
  ``http.client.HTTPSConnection``;
- ``wrk`` and ``ab`` (bounded runs) with no errors;
- the command line (``python -m fibers.http``) as a subprocess: serving,
  SIGTERM and SIGINT, ``--workers 2`` (both serve, all stop, a killed
  worker is replaced), bad arguments;
- graceful stop: a request in flight when SIGTERM arrives completes, then
  the process exits.

In-process servers run in a fiber of a real-clock scheduler on its own
thread (one per pump backend); the clients are this thread or processes.
Subprocess servers get ``--backend``.  Every wait is bounded; every process
is killed (its whole process group) at teardown.
"""
import hashlib
import http.client
import io
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.request

import pytest

import capabilities
import fibers
from tools.pgcluster import free_port

capabilities.importorskip("httptools", "http_deps")
flask = capabilities.importorskip("flask", "http_deps")
trustme = capabilities.importorskip("trustme", "trustme")

from fibers import http as fhttp  # noqa: E402  (needs httptools)

WAIT = 20           # seconds any single wait may last at most
CURL = shutil.which("curl")
WRK = shutil.which("wrk")
AB = shutil.which("ab")


def _needs(capability, command, package):
    return capabilities.requires(
        capability, None if command is not None else
        f"the {capability} command (Debian package {package}; sh "
        f"tools/sysdeps.sh --test installs it) is not installed")


needs_curl = _needs("curl", CURL, "curl")
needs_wrk = _needs("wrk", WRK, "wrk")
needs_ab = _needs("ab", AB, "apache2-utils")

# The upload: a few hundred KB that are not all one byte.
UPLOAD = random.Random(19).randbytes(300_000)
UPLOAD_SHA = hashlib.sha256(UPLOAD).hexdigest()


# ---- the Flask app ---------------------------------------------------------------

def make_flask_app(files=None):
    """The test app; ``files`` is a directory /download/<name> sends from
    (Flask's send_file, through ``wsgi.file_wrapper``)."""
    app = flask.Flask("fibers_http_real")

    @app.route("/")
    def index():
        return "index page"

    @app.route("/hello/<name>")
    def hello(name):
        return f"hello {name}"

    @app.route("/form", methods=["POST"])
    def form():
        f = flask.request.form
        return f"form a={f['a']} b={f['b']}"

    @app.route("/upload", methods=["POST"])
    def upload():
        up = flask.request.files["file"]
        data = up.read()
        note = flask.request.form.get("note", "")
        return (f"upload {up.filename} {len(data)} "
                f"{hashlib.sha256(data).hexdigest()} note={note}")

    @app.route("/echo", methods=["POST", "PUT"])
    def echo():
        data = flask.request.get_data()
        return f"echo {len(data)} {hashlib.sha256(data).hexdigest()}"

    @app.route("/stream/<int:n>")
    def stream(n):
        # A generator: no Content-Length, so HTTP/1.1 gets it chunked.
        def parts():
            for i in range(n):
                yield f"part {i}\n"
        return flask.Response(parts(), mimetype="text/plain")

    @app.route("/download/<name>")
    def download(name):
        return flask.send_from_directory(files, name)

    @app.errorhandler(404)
    def not_found(e):
        return f"no route {flask.request.path}", 404

    return app


def echo_answer(data):
    return f"echo {len(data)} {hashlib.sha256(data).hexdigest()}".encode()


def stream_answer(n):
    return "".join(f"part {i}\n" for i in range(n)).encode()


# What /download/big.bin sends: a MB and a bit, more than a socket buffer.
BIG = random.Random(1919).randbytes((1 << 20) + 12345)


def upload_answer(filename, note=""):
    return (f"upload {filename} {len(UPLOAD)} {UPLOAD_SHA} "
            f"note={note}").encode()


def multipart(fields, files, boundary="fibers-http-real-boundary"):
    """(body, content type) of a multipart/form-data form."""
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; "
                  f"name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; "
                  f"name=\"{name}\"; filename=\"{filename}\"\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# ---- an in-process server: a fiber of a scheduler on its own thread -------------

class ThreadServer:
    """``fibers.http.serve(app)`` in a real-clock scheduler on ``backend``,
    run by a thread of its own; ``close()`` stops the server (grace 5 s)
    and the scheduler."""

    def __init__(self, backend, app, **kw):
        self.address = None
        self.error = None
        self.sched = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(backend, app, kw), daemon=True,
            name=f"fibers.http {backend}")
        self._thread.start()
        if not self._ready.wait(WAIT):
            raise AssertionError("the server thread did not start")
        if self.error is not None:
            raise self.error

    def _run(self, backend, app, kw):
        def main():
            server = fhttp.serve(app, ("127.0.0.1", 0), **kw)
            self.address = server.address
            self._ready.set()
            try:
                fibers.wait_signal("stop")
            finally:
                server.stop(grace=5)

        try:
            self.sched = fibers.Scheduler(backend=backend)
            try:
                self.sched.run(main)
            finally:
                self.sched.close()
        except BaseException as e:
            self.error = e
        finally:
            self._ready.set()

    @property
    def port(self):
        return self.address[1]

    def url(self, path="/", scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self):
        if self._thread.is_alive():
            # From another thread, signal_all goes through call_threadsafe.
            self.sched.signal_all("stop")
            self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the server thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve_thread(backend):
    started = []

    def start(app, **kw):
        s = ThreadServer(backend, app, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    (d / "big.bin").write_bytes(BIG)
    return d


@pytest.fixture
def flask_server(serve_thread, files):
    return serve_thread(make_flask_app(files))


def curl(*args, check=True):
    r = subprocess.run([CURL, "-sS", "--max-time", str(WAIT), *args],
                       capture_output=True, timeout=WAIT + 5)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


# ---- 1. Flask with the stdlib's clients and curl ---------------------------------

def test_flask_http_client_keep_alive(flask_server):
    # One connection for all: routing, a 404, a form and an upload.
    conn = http.client.HTTPConnection("127.0.0.1", flask_server.port,
                                      timeout=WAIT)
    try:
        def ask(method, path, body=None, headers={}):
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read()

        assert ask("GET", "/") == (200, b"index page")
        assert ask("GET", "/hello/fibers") == (200, b"hello fibers")
        assert ask("GET", "/nowhere") == (404, b"no route /nowhere")
        form = urllib.parse.urlencode({"a": "1 2", "b": "\u00e9"})
        assert ask("POST", "/form", form, {
            "Content-Type": "application/x-www-form-urlencoded"}) == \
            (200, "form a=1 2 b=\u00e9".encode())
        body, ctype = multipart({"note": "big"},
                                {"file": ("data.bin", UPLOAD)})
        assert ask("POST", "/upload", body, {"Content-Type": ctype}) == \
            (200, upload_answer("data.bin", "big"))
        assert ask("GET", "/hello/again") == (200, b"hello again")
    finally:
        conn.close()


def test_flask_urllib(flask_server):
    with urllib.request.urlopen(flask_server.url("/hello/urllib"),
                                timeout=WAIT) as r:
        assert (r.status, r.read()) == (200, b"hello urllib")
    data = urllib.parse.urlencode({"a": "x&y", "b": "z"}).encode()
    with urllib.request.urlopen(flask_server.url("/form"), data=data,
                                timeout=WAIT) as r:
        assert (r.status, r.read()) == (200, b"form a=x&y b=z")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(flask_server.url("/missing"), timeout=WAIT)
    assert e.value.code == 404
    assert e.value.read() == b"no route /missing"
    e.value.close()


@needs_curl
def test_flask_curl(flask_server, tmp_path):
    assert curl(flask_server.url("/")).stdout == b"index page"
    # Two URLs: curl reuses the connection for the second.
    r = curl(flask_server.url("/hello/a"), flask_server.url("/hello/b"))
    assert r.stdout == b"hello ahello b"
    r = curl("-o", "/dev/null", "-w", "%{http_code}",
             flask_server.url("/nope"))
    assert r.stdout == b"404"
    assert curl("-d", "a=1", "-d", "b=2",
                flask_server.url("/form")).stdout == b"form a=1 b=2"
    up = tmp_path / "payload.bin"
    up.write_bytes(UPLOAD)
    r = curl("-F", f"file=@{up}", "-F", "note=curl",
             flask_server.url("/upload"))
    assert r.stdout == upload_answer("payload.bin", "curl")


@needs_curl
def test_curl_http10(flask_server):
    r = curl("--http1.0", "-i", flask_server.url("/hello/old"))
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert body == b"hello old"
    lines = head.split(b"\r\n")
    assert re.fullmatch(rb"HTTP/1\.[01] 200 OK", lines[0]), lines[0]
    headers = {k.lower(): v for k, _, v in
               (ln.partition(b": ") for ln in lines[1:])}
    # HTTP/1.0 without keep-alive: the connection ends with the response.
    assert headers.get(b"connection", b"close").lower() == b"close"


@needs_curl
def test_curl_head(flask_server):
    r = curl("-I", flask_server.url("/hello/head"))
    lines = r.stdout.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK", lines[0]
    headers = {k.lower(): v for k, _, v in
               (ln.partition(b": ") for ln in lines[1:] if ln)}
    assert headers[b"content-length"] == str(len(b"hello head")).encode()
    assert r.stdout.endswith(b"\r\n\r\n")       # nothing after the headers
    # And the connection still works for a GET after a HEAD (curl reuses
    # it): the HEAD sent no body to confuse it.
    conn = http.client.HTTPConnection("127.0.0.1", flask_server.port,
                                      timeout=WAIT)
    try:
        conn.request("HEAD", "/hello/x")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        assert r.getheader("Content-Length") == "7"
        conn.request("GET", "/hello/x")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello x")
    finally:
        conn.close()


def test_flask_send_file_and_streamed_response(flask_server):
    conn = http.client.HTTPConnection("127.0.0.1", flask_server.port,
                                      timeout=WAIT)
    try:
        conn.request("GET", "/download/big.bin")
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Length") == str(len(BIG))
        assert r.read() == BIG
        conn.request("GET", "/stream/50")
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert r.read() == stream_answer(50)
        # The connection is still in step after both.
        conn.request("GET", "/hello/after")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello after")
    finally:
        conn.close()


@needs_curl
def test_curl_download_range_and_stream(flask_server):
    assert curl(flask_server.url("/download/big.bin")).stdout == BIG
    r = curl("-r", "1000-1999", "-w", "%{http_code}",
             flask_server.url("/download/big.bin"))
    assert r.stdout == BIG[1000:2000] + b"206"
    assert curl(flask_server.url("/stream/20")).stdout == stream_answer(20)
    # HTTP/1.0 has no chunks: the body ends with the connection.
    assert curl("--http1.0", flask_server.url("/stream/20")).stdout == \
        stream_answer(20)


@needs_curl
def test_curl_chunked_and_100_continue_uploads(flask_server, tmp_path):
    up = tmp_path / "up.bin"
    up.write_bytes(UPLOAD)
    r = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{up}",
             flask_server.url("/echo"))
    assert r.stdout == echo_answer(UPLOAD)
    # curl waits (1 s by default) for "100 Continue" before the body; the
    # server sends it when the app starts reading.
    r = curl("-v", "-H", "Expect: 100-continue", "--expect100-timeout",
             str(WAIT), "-T", str(up), flask_server.url("/echo"))
    assert r.stdout == echo_answer(UPLOAD)
    assert b"< HTTP/1.1 100 Continue" in r.stderr, r.stderr


# ---- 2. pipelining, written raw ---------------------------------------------------

class _KeepOpen(io.BufferedReader):
    # http.client.HTTPResponse closes its file when a body is done; the
    # next pipelined response comes from the same buffer.
    def close(self):
        pass


class _FileSock:
    def __init__(self, f):
        self.f = f

    def makefile(self, *args, **kwargs):
        return self.f


def test_pipelined_answers_in_order(flask_server):
    form = b"a=p&b=q"
    reqs = [
        b"GET /hello/one HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /form HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form),
        b"GET /hello/two HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    want = [(200, b"hello one"), (404, b"no route /nothing-here"),
            (200, b"form a=p b=q"), (200, b"hello two"),
            (200, b"index page")]
    with socket.create_connection(("127.0.0.1", flask_server.port),
                                  timeout=WAIT) as s:
        s.sendall(b"".join(reqs))       # all at once, before any answer
        f = _KeepOpen(socket.SocketIO(s, "rb"))
        got = []
        for _ in reqs:
            r = http.client.HTTPResponse(_FileSock(f))
            r.begin()
            got.append((r.status, r.read()))
        assert got == want
        assert f.read() == b""          # then the server closed


# ---- 3. TLS -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(d / "cert.pem"), append=True)

    class Certs:
        ca_pem = str(d / "ca.pem")
        cert_pem = str(d / "cert.pem")
        key_pem = str(d / "key.pem")

        @staticmethod
        def server_ctx():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(ctx)
            return ctx

        @staticmethod
        def client_ctx():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca.configure_trust(ctx)
            return ctx
    return Certs


@pytest.fixture
def tls_server(serve_thread, certs, files):
    return serve_thread(make_flask_app(files), ssl=certs.server_ctx())


def test_tls_http_client_verifying(tls_server, certs):
    conn = http.client.HTTPSConnection("127.0.0.1", tls_server.port,
                                       timeout=WAIT,
                                       context=certs.client_ctx())
    try:
        conn.request("GET", "/hello/tls")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello tls")
        # The upload streams through TLS records, on the same connection.
        body, ctype = multipart({}, {"file": ("secret.bin", UPLOAD)})
        conn.request("POST", "/upload", body=body,
                     headers={"Content-Type": ctype})
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, upload_answer("secret.bin"))
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.close()


def test_tls_send_file_and_stream(tls_server, certs):
    # No sendfile() into TLS: the file goes through the TLS records.
    conn = http.client.HTTPSConnection("127.0.0.1", tls_server.port,
                                       timeout=WAIT,
                                       context=certs.client_ctx())
    try:
        conn.request("GET", "/download/big.bin")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, BIG)
        conn.request("GET", "/stream/30")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, stream_answer(30))
        conn.request("GET", "/hello/after")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello after")
    finally:
        conn.close()


def test_tls_refuses_a_client_that_does_not_trust_it(tls_server):
    # The server's certificate is not from a CA this client knows: the
    # client refuses, and the server keeps serving others.
    ctx = ssl.create_default_context()
    conn = http.client.HTTPSConnection("127.0.0.1", tls_server.port,
                                       timeout=WAIT, context=ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/")
    conn.close()


@needs_curl
def test_tls_curl(tls_server, certs, tmp_path):
    url = tls_server.url("/hello/curl", scheme="https")
    assert curl("--cacert", certs.ca_pem, url).stdout == b"hello curl"
    up = tmp_path / "up.bin"
    up.write_bytes(UPLOAD)
    r = curl("--cacert", certs.ca_pem, "-F", f"file=@{up}",
             tls_server.url("/upload", scheme="https"))
    assert r.stdout == upload_answer("up.bin")
    # Without the CA, curl refuses the certificate (exit 60).
    r = curl(url, check=False)
    assert r.returncode == 60, r.stderr


# ---- 4. load generators -------------------------------------------------------------

def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "13")])
    return [b"Hello, world!"]


@needs_wrk
def test_wrk_no_errors(serve_thread):
    srv = serve_thread(hello_app)
    r = subprocess.run(
        [WRK, "-t1", "-c20", "-d1s", "--timeout", "5s", srv.url("/")],
        capture_output=True, text=True, timeout=WAIT + 10)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^\s*(\d+) requests in ", r.stdout, re.M)
    assert m and int(m.group(1)) > 0, r.stdout
    # wrk prints these lines only when there were any.
    assert "Socket errors" not in r.stdout, r.stdout
    assert "Non-2xx" not in r.stdout, r.stdout


@needs_wrk
def test_wrk_tls_no_errors(serve_thread, certs):
    srv = serve_thread(hello_app, ssl=certs.server_ctx())
    r = subprocess.run(
        [WRK, "-t1", "-c20", "-d1s", "--timeout", "5s",
         srv.url("/", scheme="https")],
        capture_output=True, text=True, timeout=WAIT + 10)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^\s*(\d+) requests in ", r.stdout, re.M)
    assert m and int(m.group(1)) > 0, r.stdout
    assert "Socket errors" not in r.stdout, r.stdout
    assert "Non-2xx" not in r.stdout, r.stdout


@needs_ab
def test_ab_keep_alive_no_failures(flask_server):
    r = subprocess.run(
        [AB, "-q", "-n", "200", "-c", "10", "-k", "-s", str(WAIT),
         flask_server.url("/hello/ab")],
        capture_output=True, text=True, timeout=WAIT + 10)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout

    def field(name):
        m = re.search(rf"^{name}:\s+(\d+)", out, re.M)
        assert m, out
        return int(m.group(1))
    assert field("Complete requests") == 200
    assert field("Failed requests") == 0
    assert "Non-2xx" not in out, out
    assert field("Keep-Alive requests") == 200
    assert field("Document Length") == len(b"hello ab")


# ---- 5. the command line, as a subprocess ----------------------------------------

APP_MODULE = """
import os
import socket
import fibers
import fibers.net


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        # Held until the test says go, on a socket it listens on.
        s = fibers.net.connect(("127.0.0.1", int(os.environ["GATE_PORT"])),
                               timeout=60)
        with s:
            s.sendall(b"in")
            word = b""
            while len(word) < 2:
                chunk = s.recv(2 - len(word))
                if not chunk:
                    break
                word += chunk
        body = b"slow " + word
    elif path == "/block":
        # Blocks the whole worker (a stdlib socket, not a fiber's), and
        # tells the test which worker it is.
        s = socket.create_connection(
            ("127.0.0.1", int(os.environ["GATE_PORT"])), timeout=60)
        with s:
            s.sendall(str(os.getpid()).encode() + b"\\n")
            s.recv(1)
        body = b"unblocked"
    elif path == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = b"cli " + path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return set()


def _alive(pid):
    # Running or sleeping; not a zombie and not gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _until(what, predicate, limit=WAIT):
    """Polls predicate (bounded in time) until it is true."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        time.sleep(0.01)


def _listeners(port):
    """The inodes of the sockets listening on 127.0.0.1:port."""
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
                found.add(int(fields[9]))
    return found


def _socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def _get(port, path, timeout=WAIT):
    """(status, body) of GET path over a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


class Cli:
    """``python -m fibers.http appmod:app --bind 127.0.0.1:PORT --backend
    B [args]`` in ``tmp_path``, in a process group of its own (killed
    whole at teardown); stdout and stderr go to a file."""

    def __init__(self, tmp_path, backend):
        self.dir = tmp_path
        self.backend = backend
        (tmp_path / "appmod.py").write_text(textwrap.dedent(APP_MODULE))
        self.procs = []
        self.env = dict(os.environ)

    def run(self, *args, timeout=WAIT):
        """A command line that is expected to exit by itself."""
        return subprocess.run(
            [sys.executable, "-m", "fibers.http", *args], cwd=self.dir,
            env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args, spec="appmod:app", wait=True):
        # A free port may be taken between the probe and the bind: retry.
        for attempt in range(3):
            self.port = free_port()
            self.log = self.dir / f"server-{len(self.procs)}.log"
            with open(self.log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "fibers.http", spec, "--bind",
                     f"127.0.0.1:{self.port}", "--backend", self.backend,
                     *args],
                    cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self.procs.append(proc)
            self.proc = proc
            if not wait or self._wait_listening():
                return self
            proc.wait(WAIT)
            if "Address already in use" not in self.output():
                break
        raise AssertionError(f"the server did not start:\n{self.output()}")

    def _wait_listening(self):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         timeout=WAIT).close()
                return True
            except ConnectionRefusedError:
                time.sleep(0.01)
        raise AssertionError(f"not listening within {WAIT} s:\n"
                             f"{self.output()}")

    def output(self):
        return self.log.read_text(errors="replace")

    def wait(self, timeout=WAIT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s:\n"
                                 f"{self.output()}") from None

    def group_gone(self):
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def kill_all(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def cli(tmp_path, backend):
    c = Cli(tmp_path, backend)
    yield c
    c.kill_all()


@needs_curl
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_cli_serves_curl_and_stops_on_signal(cli, signum):
    cli.start()
    r = curl(f"http://127.0.0.1:{cli.port}/a/b")
    assert r.stdout == b"cli /a/b"
    cli.proc.send_signal(signum)
    assert cli.wait() == 0, cli.output()
    assert cli.group_gone()
    assert "Traceback" not in cli.output(), cli.output()


@needs_curl
def test_cli_tls(cli, certs):
    cli.start("--certfile", certs.cert_pem, "--keyfile", certs.key_pem)
    r = curl("--cacert", certs.ca_pem,
             f"https://127.0.0.1:{cli.port}/secure")
    assert r.stdout == b"cli /secure"
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.wait() == 0, cli.output()


def _pids_serving(port, want, limit=500):
    """The worker pids seen answering GET /pid over new connections, until
    `want` of them (at most `limit` requests, each must succeed)."""
    seen = set()
    deadline = time.monotonic() + WAIT
    for _ in range(limit):
        status, body = _get(port, "/pid")
        assert status == 200, body
        seen.add(int(body))
        if want(seen) or time.monotonic() > deadline:
            break
    return seen


def test_cli_two_workers_serve_and_stop(cli):
    cli.start("--workers", "2")
    parent = cli.proc.pid
    workers = _until("two workers", lambda: len(_children(parent)) == 2
                     and _children(parent))
    seen = _pids_serving(cli.port, lambda s: len(s) == 2)
    assert seen == workers, (seen, workers)
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.wait() == 0, cli.output()
    # Nothing of the group is left: no worker running, none a zombie.
    assert cli.group_gone(), [p for p in workers if os.path.exists(
        f"/proc/{p}")]
    assert "Traceback" not in cli.output(), cli.output()


def test_cli_a_killed_worker_is_replaced(cli):
    cli.start("--workers", "2")
    parent = cli.proc.pid
    workers = _until("two workers", lambda: len(_children(parent)) == 2
                     and _children(parent))
    _until("both listening", lambda: len(_listeners(cli.port)) == 2)
    victim = min(workers)
    (listener,) = _socket_inodes(victim) & _listeners(cli.port)
    os.kill(victim, signal.SIGKILL)
    # Once its listening socket is closed, the other serves every
    # request.  That can be after the process is gone: on io_uring the
    # kernel tears the ring down asynchronously, and a pending accept
    # holds the socket until then (connections the kernel queued on it
    # meanwhile are reset: a SIGKILL cannot drain).
    _until("the killed worker gone", lambda: not _alive(victim))
    _until("its listener closed", lambda: listener not in _listeners(
        cli.port))
    for _ in range(5):
        assert _get(cli.port, "/pid")[0] == 200
    # ...and the parent starts a replacement, which serves too.
    now = _until("a replacement worker",
                 lambda: len(_children(parent) - workers) == 1
                 and _children(parent))
    assert victim not in now and len(now) == 2, (now, workers)
    new = (now - workers).pop()
    seen = _pids_serving(cli.port, lambda s: new in s)
    assert new in seen, (seen, now)
    assert seen <= now
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.wait() == 0, cli.output()
    assert cli.group_gone()


@pytest.mark.parametrize("spec, error", [
    ("nosuchmodule_xyz:app", "cannot import 'nosuchmodule_xyz'"),
    ("appmod:nosuchapp", "'appmod' has no 'nosuchapp'"),
    ("appmod:os", "is not callable"),
])
def test_cli_bad_app_is_one_line_error(cli, spec, error):
    r = cli.run(spec, "--bind", "127.0.0.1:0", "--backend", cli.backend)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fibers-http: ") and error in lines[0], \
        lines


def test_cli_certfile_needs_keyfile(cli, certs):
    r = cli.run("appmod:app", "--certfile", certs.cert_pem,
                "--backend", cli.backend)
    assert r.returncode == 2, r.stderr
    assert "--certfile and --keyfile go together" in r.stderr
    r = cli.run("appmod:app", "--keyfile", certs.key_pem,
                "--backend", cli.backend)
    assert r.returncode == 2, r.stderr
    assert "--certfile and --keyfile go together" in r.stderr


# ---- 6. graceful stop -----------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_the_request_in_flight_finish(cli, workers):
    gate = socket.create_server(("127.0.0.1", 0))
    gate.settimeout(WAIT)
    cli.env["GATE_PORT"] = str(gate.getsockname()[1])
    cli.start("--workers", workers, "--graceful-timeout", "30")
    answer = []

    def client():
        try:
            answer.append(_get(cli.port, "/slow", timeout=WAIT * 2))
        except Exception as e:      # reported by the assertion below
            answer.append(e)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        held, _ = gate.accept()     # the app is in the request now
    finally:
        gate.close()
    with held:
        held.settimeout(WAIT)
        assert held.recv(2) == b"in"
        cli.proc.send_signal(signal.SIGTERM)
        # The listener closes at once (new connections are refused), but
        # the process waits for the request.
        _until("the listener closed", lambda: _refused(cli.port))
        assert cli.proc.poll() is None, cli.output()
        held.sendall(b"go")
        t.join(WAIT)
    assert not t.is_alive()
    assert answer == [(200, b"slow go")], cli.output()
    assert cli.wait() == 0, cli.output()
    assert cli.group_gone()


def _catches(pid, signum):
    """Whether process pid has a handler for signum (SigCgt)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except FileNotFoundError:
        pass
    return False


def test_workers_stop_on_a_signal_sent_as_they_start(cli):
    # Regression: SIGTERM sent as soon as the parent handles it reaches
    # workers that are being forked.  A worker forked after the signal
    # was never told; one forked just before ran the parent's inherited
    # handler (or none) and lost it: it served on until the parent killed
    # it, grace + 5 s later.  With a 30 s grace, that is past the wait.
    for _ in range(5):
        cli.start("--workers", "2", "--graceful-timeout", "30", wait=False)
        _until("the parent handles SIGTERM",
               lambda: _catches(cli.proc.pid, signal.SIGTERM)
               or cli.proc.poll() is not None)
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.wait() == 0, cli.output()
        assert cli.group_gone()
        assert "did not stop" not in cli.output(), cli.output()


@pytest.mark.hang_limit(120)
def test_workers_that_do_not_stop_are_killed_after_grace(cli):
    # Regression: the parent waited for a worker to exit in a blocking
    # wait(), which Python resumes after the signal handler: with no
    # worker exiting by itself, it never saw the stop, and never killed.
    # Here both workers are stuck in a blocking call (the app's, on a
    # stdlib socket): after SIGTERM, the parent kills them once grace
    # (1 s) + 5 s are over, and exits.
    gate = socket.create_server(("127.0.0.1", 0), backlog=64)
    gate.settimeout(WAIT)
    cli.env["GATE_PORT"] = str(gate.getsockname()[1])
    cli.start("--workers", "2", "--graceful-timeout", "1")
    _until("both listening", lambda: len(_listeners(cli.port)) == 2)
    held = {}                   # worker pid -> its app's gate connection
    clients = []

    def client():
        try:
            _get(cli.port, "/block", timeout=WAIT * 2)
        except OSError:
            pass                # the worker is killed: expected

    try:
        deadline = time.monotonic() + WAIT
        for _ in range(50):
            if len(held) == 2 or time.monotonic() > deadline:
                break
            t = threading.Thread(target=client, daemon=True)
            t.start()
            clients.append(t)
            # Either a worker not yet blocked takes it (its app calls in),
            # or it waits in a blocked worker's queue: then no call comes.
            try:
                conn, _ = gate.accept() if not held else _accept_within(
                    gate, 0.5)
            except TimeoutError:
                continue
            f = conn.makefile("rb")
            held[int(f.readline())] = (conn, f)
        assert len(held) == 2, held
        assert set(held) == _children(cli.proc.pid)
        start = time.monotonic()
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.wait(WAIT) == 0, cli.output()
        took = time.monotonic() - start
        assert 6 <= took, took
        assert cli.output().count("did not stop in 6 s: killed") == 2, \
            cli.output()
        assert cli.group_gone()
    finally:
        for conn, f in held.values():
            f.close()
            conn.close()
        gate.close()
        for t in clients:
            t.join(WAIT)


def _accept_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        return sock.accept()
    finally:
        sock.settimeout(WAIT)
