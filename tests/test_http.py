"""fibers.http's protocol: requests in, responses out, byte for byte.

Server and clients are fibers of one scheduler on each pump backend, on an
autojumping VirtualClock: the limits' timeouts fire at exact virtual times
and cost no wall-clock time.  Clients write raw HTTP with sendall and read
with recv (`Client` below parses one response at a time), so every test
sees exactly what went over the wire.  Ordering between an app and a
client is shown with events; a wait for something that must *not* happen
is a bounded virtual-time wait."""
import io
import logging
import math
import os
import re

import pytest

import fibers
import fibers.net
from fibers import http     # needs httptools (make's TEST_DEPS)

READ_LIMIT = 100.0      # virtual seconds a client waits for the server at most
DATE = re.compile(rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} "
                  rb"\d\d:\d\d:\d\d GMT\r\n")
GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


# ---- helpers ---------------------------------------------------------------------

class Response:
    def __init__(self, version, status, reason, headers, body, raw_body,
                 head, complete):
        self.version, self.status, self.reason = version, status, reason
        self.headers = headers          # [(name, value)] as sent, str
        self.body = body                # de-chunked
        self.raw_body = raw_body        # as sent (chunk framing included)
        self.head = head                # the raw header block, bytes
        self.complete = complete        # False: EOF before the body's end

    def get(self, name):
        """All values of header `name`, in order."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def one(self, name):
        values = self.get(name)
        assert len(values) == 1, (name, self.headers)
        return values[0]


class Client:
    """A raw HTTP/1.1 client on a fibers socket."""

    def __init__(self, address, **kw):
        self.sock = fibers.net.connect(address, **kw)
        self.buf = bytearray()
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def _more(self):
        with fibers.timeout(READ_LIMIT):
            chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _until(self, sep):
        for _ in range(100_000):
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if not self._more():
                return None
        raise AssertionError("no end in sight")

    def _exact(self, n):
        for _ in range(100_000):
            if len(self.buf) >= n:
                out = bytes(self.buf[:n])
                del self.buf[:n]
                return out
            if not self._more():
                out = bytes(self.buf)
                del self.buf[:]
                return out
        raise AssertionError("no end in sight")

    def _rest(self):
        for _ in range(100_000):
            if not self._more():
                out = bytes(self.buf)
                del self.buf[:]
                return out
        raise AssertionError("peer never reached EOF")

    def head_block(self):
        """The next status line and header block, raw (None at EOF)."""
        return self._until(b"\r\n\r\n")

    def response(self, method="GET"):
        """The next response, its body framed as the headers say."""
        head = self.head_block()
        assert head is not None, "EOF before a response"
        lines = head[:-4].split(b"\r\n")
        version, status, reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        status = int(status)
        names = {n.lower(): v for n, v in headers}
        complete = True
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = raw = b""
        elif names.get("transfer-encoding") == "chunked":
            raw, parts = bytearray(), []
            while True:
                size_line = self._until(b"\r\n")
                if size_line is None:
                    complete = False
                    break
                raw += size_line
                size = int(size_line[:-2], 16)
                data = self._exact(size + 2)
                raw += data
                if len(data) < size + 2:
                    complete = False
                    break
                if size == 0:
                    break
                parts.append(data[:-2])
            body, raw = b"".join(parts), bytes(raw)
        elif "content-length" in names:
            n = int(names["content-length"])
            body = raw = self._exact(n)
            complete = len(body) == n
        else:
            body = raw = self._rest()
        return Response(version, status, reason, headers, body, raw, head,
                        complete)

    def at_eof(self):
        """True when the server closed the connection (and sent nothing
        more); bounded by READ_LIMIT."""
        return not self.buf and not self._more()

    def nothing_for(self, seconds):
        """True when no byte arrives for `seconds` of virtual time."""
        if self.buf:
            return False
        with fibers.move_on_after(seconds):
            self._more()
            return False
        return True


def serving(io_sched, app, body, **kw):
    """Run body(server) in a fiber with `app` served on a loopback port,
    then stop the server; body's result."""
    def main():
        server = http.serve(app, ("127.0.0.1", 0), **kw)
        try:
            return body(server)
        finally:
            server.stop(grace=0)
    return io_sched.run(main)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def echo_path(environ, start_response):
    body = environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def echo_body(environ, start_response):
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [data]


def wait_connections(server, n, limit=READ_LIMIT):
    fibers.wait_for(lambda: server.connections == n, timeout=limit)


# ---- 1-2: keep-alive, pipelining ---------------------------------------------------

def test_get_hello_exact_bytes_and_keep_alive(io_sched):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return hello(environ, start_response)

    def body(server):
        c = Client(server.address)
        heads = []
        for path in (b"/one", b"/two"):
            c.send(GET % path)
            r = c.response()
            heads.append(r.head)
            assert (r.status, r.reason, r.body) == (200, "OK",
                                                    b"Hello, world!")
            assert server.connections == 1
        c.close()
        return heads

    heads = serving(io_sched, app, body)
    assert calls == ["/one", "/two"]
    for head in heads:
        assert DATE.search(head), head
        assert DATE.sub(b"", head) == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 13\r\n\r\n")


def test_pipelined_requests_are_answered_in_order(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"".join(GET % p for p in (b"/a", b"/bb", b"/ccc")))
        bodies = [c.response().body for _ in range(3)]
        c.send(GET % b"/after")
        bodies.append(c.response().body)
        return bodies

    assert serving(io_sched, echo_path, body) == \
        [b"/a", b"/bb", b"/ccc", b"/after"]


# ---- 3: environ ----------------------------------------------------------------------

def test_environ(io_sched):
    seen = []

    def app(environ, start_response):
        seen.append(dict(environ))
        return hello(environ, start_response)

    def body(server):
        c = Client(server.address)
        c.send(b"POST /caf%E9/a%20b/%2F HTTP/1.1\r\nHost: example\r\n"
               b"X-Dup: a\r\nx-dup: b\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 3\r\nX-Under-Score: u\r\n\r\nabc")
        assert c.response().status == 200
        c.send(b"GET /?q=%20x&y HTTP/1.0\r\n\r\n")
        assert c.response().status == 200
        return server.address, c.sock.getsockname()

    (host, port), (chost, cport) = serving(io_sched, app, body)
    e = seen[0]
    assert e["REQUEST_METHOD"] == "POST"
    assert e["PATH_INFO"] == "/caf\xe9/a b//"
    assert e["QUERY_STRING"] == ""
    assert e["SCRIPT_NAME"] == ""
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["SERVER_NAME"] == host and e["SERVER_PORT"] == str(port)
    assert e["HTTP_HOST"] == "example"
    assert e["HTTP_X_DUP"] == "a,b"
    assert e["HTTP_X_UNDER_SCORE"] == "u"
    assert e["CONTENT_TYPE"] == "text/plain"
    assert e["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in e and "HTTP_CONTENT_LENGTH" not in e
    assert e["REMOTE_ADDR"] == chost and e["REMOTE_PORT"] == str(cport)
    assert e["wsgi.url_scheme"] == "http"
    assert e["wsgi.version"] == (1, 0)
    assert e["wsgi.input_terminated"] is True
    assert e["wsgi.multithread"] is False and e["wsgi.run_once"] is False
    assert all(type(v) is str for k, v in e.items()
               if k.isupper()), "CGI keys must be native strings"
    e = seen[1]
    assert e["REQUEST_METHOD"] == "GET"
    assert e["PATH_INFO"] == "/"
    assert e["QUERY_STRING"] == "q=%20x&y"
    assert e["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "CONTENT_LENGTH" not in e and "HTTP_HOST" not in e


# ---- 4: request bodies -----------------------------------------------------------

def test_chunked_request_body(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        r1 = c.response()
        c.send(GET % b"/next")
        return r1, c.response()

    r1, r2 = serving(io_sched, echo_body, body)
    assert (r1.status, r1.body, r1.one("Content-Length")) == \
        (200, b"hello world", "11")
    assert (r2.status, r2.body) == (200, b"")


def test_content_length_request_body(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
               b"0123456789" + GET % b"/next")
        return c.response().body, c.response().body

    assert serving(io_sched, echo_body, body) == (b"0123456789", b"")


def test_request_body_streams_to_the_app(io_sched):
    first_read = fibers.Event()
    reads = []

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        reads.append(inp.read(5))
        first_read.set()
        reads.append(inp.readline())
        reads.append(list(inp))
        reads.append(inp.read())
        start_response("200 OK", [])
        return [b"ok"]

    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 21\r\n\r\n"
               b"hello")
        # The app has the first part while the rest is not yet sent.
        assert first_read.wait(READ_LIMIT)
        assert reads == [b"hello"]
        c.send(b" line\nsecond\nend")
        return c.response().body

    assert serving(io_sched, app, body) == b"ok"
    assert reads == [b"hello", b" line\n", [b"second\n", b"end"], b""]


def test_input_readline_with_a_size(io_sched):
    lines = []

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        lines.extend([inp.readline(3), inp.readline(), inp.readline(100),
                      inp.readline(), inp.read(10)])
        start_response("200 OK", [])
        return [b"ok"]

    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
               b"abcdef\nxyz")
        return c.response().body

    assert serving(io_sched, app, body) == b"ok"
    assert lines == [b"abc", b"def\n", b"xyz", b"", b""]


# ---- 5: Expect: 100-continue --------------------------------------------------------

def test_100_continue_is_sent_when_the_app_reads(io_sched):
    in_app, go = fibers.Event(), fibers.Event()

    def app(environ, start_response):
        in_app.set()
        go.wait()
        data = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [data]

    def body(server):
        c = Client(server.address)
        c.send(b"PUT /f HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               b"Content-Length: 4\r\n\r\n")
        assert in_app.wait(READ_LIMIT)
        # The app has not read yet: no 100 Continue.
        assert c.nothing_for(1.0)
        go.set()
        assert c.head_block() == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"data")
        return c.response()

    r = serving(io_sched, app, body)
    assert (r.status, r.body) == (200, b"data")


def test_no_100_continue_when_the_app_does_not_read(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"PUT /f HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               b"Content-Length: 4\r\n\r\n")
        r = c.response()
        # The response did not say close: the client may send the body
        # and go on using the connection.
        c.send(b"data" + GET % b"/next")
        return r, c.response()

    r, r2 = serving(io_sched, hello, body)
    assert r.status == 200 and r.body == b"Hello, world!"
    assert b"100" not in r.head.split(b"\r\n")[0]
    assert r.get("Connection") == []
    assert r2.status == 200


# ---- 6: an unread body is skipped ---------------------------------------------------

def test_unread_body_is_skipped_before_the_next_request(io_sched):
    big = os.urandom(100 * 1024)

    def body(server):
        c = Client(server.address)
        sender = fibers.spawn(c.send, b"POST /ignore HTTP/1.1\r\nHost: t\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(big) +
                              big + GET % b"/next")
        r1, r2 = c.response(), c.response()
        sender.join()
        return r1, r2

    r1, r2 = serving(io_sched, echo_path, body)
    assert (r1.status, r1.body) == (200, b"/ignore")
    assert (r2.status, r2.body) == (200, b"/next")


# ---- 7: HEAD, 204, 304 ---------------------------------------------------------------

def test_head_has_headers_and_no_body(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/")
        return c.response("HEAD"), c.response()

    h, g = serving(io_sched, hello, body)
    assert h.status == 200 and h.one("Content-Length") == "13"
    assert DATE.sub(b"", h.head) == DATE.sub(b"", g.head)
    # No body bytes went out after the HEAD's headers: the next response
    # starts right after them.
    assert g.body == b"Hello, world!"


def test_head_of_a_streamed_response_is_not_chunked(io_sched):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"never "
        yield b"sent"

    def body(server):
        c = Client(server.address)
        c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/")
        return c.response("HEAD"), c.response()

    h, g = serving(io_sched, app, body)
    assert DATE.sub(b"", h.head) == \
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    assert g.raw_body == b"6\r\nnever \r\n4\r\nsent\r\n0\r\n\r\n"


@pytest.mark.parametrize("status,result", [("204 No Content", []),
                                           ("304 Not Modified", [b""])])
def test_no_body_statuses(io_sched, status, result):
    def app(environ, start_response):
        start_response(status, [("X-A", "1")])
        return result

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert DATE.sub(b"", r.head) == \
            b"HTTP/1.1 " + status.encode() + b"\r\nX-A: 1\r\n\r\n"


# ---- 8: connection persistence ------------------------------------------------------

def gen_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"part1 "
    yield b"part2"


def test_http10_closes_and_body_runs_to_eof(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.response()
        return r, c.at_eof()

    r, eof = serving(io_sched, gen_app, body)
    assert r.body == b"part1 part2" and r.get("Content-Length") == []
    assert r.get("Transfer-Encoding") == []
    assert r.one("Connection") == "close"
    assert r.version == "HTTP/1.1"
    assert eof


def test_http10_with_length_closes(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        return c.response(), c.at_eof()

    r, eof = serving(io_sched, hello, body)
    assert r.one("Content-Length") == "13" and r.one("Connection") == "close"
    assert eof


def test_http10_keep_alive_stays_open(io_sched):
    def body(server):
        c = Client(server.address)
        req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        c.send(req)
        r1 = c.response()
        c.send(req)
        r2 = c.response()
        return r1, r2, server.connections

    r1, r2, conns = serving(io_sched, hello, body)
    for r in (r1, r2):
        assert r.body == b"Hello, world!"
        assert r.one("Connection") == "keep-alive"
    assert conns == 1


def test_http11_connection_close(io_sched):
    def body(server):
        c = Client(server.address)
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" +
               GET % b"/never")
        return c.response(), c.at_eof()

    r, eof = serving(io_sched, hello, body)
    assert r.body == b"Hello, world!" and r.one("Connection") == "close"
    assert eof      # the pipelined second request was not answered


def test_app_connection_close_header_closes(io_sched):
    def app(environ, start_response):
        start_response("200 OK", [("Connection", "close")])
        return [b"bye"]

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/never")
        return c.response(), c.at_eof()

    r, eof = serving(io_sched, app, body)
    assert r.body == b"bye"
    assert r.get("Connection") == ["close"]     # once, not repeated
    assert eof


# ---- 9: chunked responses, write() ---------------------------------------------------

def test_generator_response_is_chunked(io_sched):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"ab"
        yield b""               # an empty chunk would end the body: skipped
        yield b"c" * 20

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert r.one("Transfer-Encoding") == "chunked"
        assert r.get("Content-Length") == []
        assert r.raw_body == b"2\r\nab\r\n14\r\n" + b"c" * 20 + \
            b"\r\n0\r\n\r\n"


def test_write_callable(io_sched):
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"xy")
        write(b"")
        if environ["PATH_INFO"] == "/list":
            return [b"z"]
        return iter([b"z"])

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/list" + GET % b"/iter")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert r.status == 200
        assert r.raw_body == b"2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n"


def test_write_callable_with_content_length(io_sched):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "5")])
        write(b"abc")
        return [b"de"]

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert r.one("Content-Length") == "5" and r.body == b"abcde"
        assert r.get("Transfer-Encoding") == []


# ---- 10: wsgi.file_wrapper --------------------------------------------------------------

def test_file_wrapper_real_file_uses_its_position(io_sched, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    closed = []

    def app(environ, start_response):
        f = open(path, "rb")
        f.seek(int(environ["QUERY_STRING"] or 0))
        orig = f.close

        def close():
            closed.append(True)
            orig()
        f.close = close
        start_response("200 OK", [("Content-Type", "application/x-blob")])
        return environ["wsgi.file_wrapper"](f)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/?1000")
        return c.response(), c.response()

    r1, r2 = serving(io_sched, app, body)
    assert r1.one("Content-Length") == str(len(data)) and r1.body == data
    assert r2.one("Content-Length") == str(len(data) - 1000)
    assert r2.body == data[1000:]
    assert closed == [True, True]


def test_file_wrapper_on_bytesio_is_sent_in_blocks(io_sched):
    data = os.urandom(100_000)

    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(data))

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert r.body == data
        assert r.raw_body == (b"10000\r\n" + data[:65536] + b"\r\n" +
                              b"86a0\r\n" + data[65536:] + b"\r\n0\r\n\r\n")


def test_file_wrapper_on_a_pipe_is_sent_in_blocks(io_sched):
    data = os.urandom(50_000)           # fits in the pipe's buffer

    def app(environ, start_response):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](os.fdopen(r, "rb"), 20_000)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/")
        return c.response()

    r = serving(io_sched, app, body)
    assert r.body == data
    assert r.raw_body == (b"4e20\r\n" + data[:20_000] + b"\r\n" +
                          b"4e20\r\n" + data[20_000:40_000] + b"\r\n" +
                          b"2710\r\n" + data[40_000:] + b"\r\n0\r\n\r\n")


# ---- 11: limits -----------------------------------------------------------------------------

def error_response(status, reason):
    body = b"%d %s\n" % (status, reason)
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, reason, len(body), body))


def answered_with(c, status, reason):
    """The next response is the server's own `status` (Date aside), and
    the connection then closes."""
    r = c.response()
    assert DATE.sub(b"", r.head) + r.body == error_response(status, reason)
    assert c.at_eof()
    return r


def never_called(environ, start_response):
    raise AssertionError("the app must not be called")


def test_431_header_block_too_large(io_sched):
    limits = http.Limits(max_header_size=1024)

    def body(server):
        c = Client(server.address)
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2000 +
               b"\r\n\r\n")
        answered_with(c, 431, b"Request Header Fields Too Large")

    serving(io_sched, never_called, body, limits=limits)


def test_431_request_line_too_large(io_sched):
    limits = http.Limits(max_header_size=1024)

    def body(server):
        c = Client(server.address)
        c.send(b"GET /" + b"a" * 2000 + b" HTTP/1.0\r\n\r\n")
        answered_with(c, 431, b"Request Header Fields Too Large")

    serving(io_sched, never_called, body, limits=limits)


def test_header_block_within_the_limit_sent_in_pieces(io_sched):
    # Each header block is ~900 bytes, under max_header_size, however
    # many reads it arrives in.
    limits = http.Limits(max_header_size=1024)
    req = (b"GET / HTTP/1.1\r\nHost: t\r\n" +
           b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 80) for i in range(10)) +
           b"\r\n")
    assert 800 < len(req) < 1024

    def body(server):
        c = Client(server.address)
        out = []
        for step in (len(req), 100, 7):
            for i in range(0, len(req), step):
                c.send(req[i:i + step])
                if i + step < len(req):
                    fibers.sleep(0.001)     # a read per piece
            out.append(c.response().status)
        return out

    assert serving(io_sched, hello, body, limits=limits) == [200, 200, 200]


def test_431_too_many_headers(io_sched):
    limits = http.Limits(max_headers=5)

    def req(n):
        return (b"GET / HTTP/1.1\r\n" +
                b"".join(b"X-H%d: v\r\n" % i for i in range(n)) + b"\r\n")

    def body(server):
        c = Client(server.address)
        c.send(req(5))
        assert c.response().status == 200
        c.send(req(6))
        answered_with(c, 431, b"Request Header Fields Too Large")

    serving(io_sched, hello, body, limits=limits)


def test_413_content_length_over_the_limit(io_sched):
    limits = http.Limits(max_body_size=1000)

    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" +
               b"x" * 1000)
        assert c.response().body == b"x" * 1000
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
        answered_with(c, 413, b"Content Too Large")

    serving(io_sched, echo_body, body, limits=limits)


def test_413_chunked_body_growing_past_the_limit(io_sched):
    limits = http.Limits(max_body_size=1000)

    def body(server):
        c = Client(server.address)
        t0 = fibers.now()
        # Past the limit, and not finished: the answer must not wait for
        # the body's end (nor for a timeout).
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n" +
               b"258\r\n" + b"y" * 600 + b"\r\n")
        answered_with(c, 413, b"Content Too Large")
        return fibers.now() - t0

    assert serving(io_sched, echo_body, body, limits=limits) < 1.0


def test_413_chunked_body_growing_past_the_limit_while_read(io_sched):
    # The app is already reading when the body passes the limit: its
    # read() raises, the client gets a 413 at once, not at the body's end
    # (which never comes) or a timeout.
    limits = http.Limits(max_body_size=1000)
    first = fibers.Event()
    raised = []

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        assert inp.read(600) == b"y" * 600
        first.set()
        try:
            inp.read()
        except Exception as e:
            raised.append(e)
            raise
        raise AssertionError("read past the limit")

    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n")
        assert first.wait(READ_LIMIT)
        t0 = fibers.now()
        c.send(b"258\r\n" + b"y" * 600 + b"\r\n")
        answered_with(c, 413, b"Content Too Large")
        return fibers.now() - t0

    assert serving(io_sched, app, body, limits=limits) < 1.0
    assert [(type(e), e.status) for e in raised] == [(http.HTTPLimitError,
                                                      413)]


def test_unread_body_past_the_limit_closes_at_once(io_sched):
    # The app answered without reading; the body it left goes past
    # max_body_size: the connection closes there, the rest unread.
    limits = http.Limits(max_body_size=1000)

    def body(server):
        c = Client(server.address)
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n")
        r = c.response()
        t0 = fibers.now()
        c.send(b"258\r\n" + b"y" * 600 + b"\r\n")
        return r, c.at_eof(), fibers.now() - t0

    r, eof, elapsed = serving(io_sched, hello, body, limits=limits)
    assert r.body == b"Hello, world!"
    assert eof and elapsed < 1.0


def test_408_headers_not_complete_in_time(io_sched):
    limits = http.Limits(header_timeout=10)

    def body(server):
        c = Client(server.address)
        t0 = fibers.now()
        c.send(b"GET / HTTP/1.1\r\nHo")
        answered_with(c, 408, b"Request Timeout")
        return fibers.now() - t0

    elapsed = serving(io_sched, never_called, body, limits=limits)
    assert 10 <= elapsed < 10.5


def test_408_counts_from_the_first_byte_not_per_read(io_sched):
    # A client trickling its headers a byte a second keeps every read
    # short; the header timeout still bounds the whole header block.
    # (9.5: the answer does not coincide with a byte sent.)
    limits = http.Limits(header_timeout=9.5)
    req = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 30 + b"\r\n\r\n"

    def body(server):
        c = Client(server.address)
        t0 = fibers.now()

        def trickle():
            for i in range(len(req)):
                try:
                    c.send(req[i:i + 1])
                except OSError:
                    return
                fibers.sleep(1)
        sender = fibers.spawn(trickle)
        answered_with(c, 408, b"Request Timeout")
        t = fibers.now() - t0
        sender.kill()
        return t

    elapsed = serving(io_sched, never_called, body, limits=limits)
    assert 9.5 <= elapsed < 10


def test_header_timeout_of_a_pipelined_request_starts_after_the_one_before(
        io_sched):
    # Half of a second request arrives with the first, whose app takes
    # longer than header_timeout: the second's clock starts when the
    # server turns to it, not while the app was busy.
    limits = http.Limits(header_timeout=10)

    def slow(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            fibers.sleep(30)
        return echo_path(environ, start_response)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/slow" + b"GET /next HTTP/1.1\r\nHo")
        first = c.response()
        c.send(b"st: t\r\n\r\n")
        second = c.response()
        return first.body, second.status, second.body

    assert serving(io_sched, slow, body, limits=limits) == \
        (b"/slow", 200, b"/next")


def test_idle_keep_alive_connection_is_closed(io_sched):
    limits = http.Limits(keepalive_timeout=5)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/")
        assert c.response().status == 200
        t0 = fibers.now()
        eof = c.at_eof()
        elapsed = fibers.now() - t0
        wait_connections(server, 0)
        # A connection that never sends a request closes the same way.
        c2 = Client(server.address)
        t0 = fibers.now()
        return eof, elapsed, c2.at_eof(), fibers.now() - t0

    eof, elapsed, eof2, elapsed2 = serving(io_sched, hello, body,
                                           limits=limits)
    assert eof and eof2
    assert 5 <= elapsed < 5.5 and 5 <= elapsed2 < 5.5


def test_max_connections_makes_accept_wait(io_sched):
    limits = http.Limits(max_connections=2)

    def body(server):
        a, b = Client(server.address), Client(server.address)
        for c in (a, b):
            c.send(GET % b"/")
            assert c.response().status == 200
        assert server.connections == 2
        answered = fibers.Event()
        c = Client(server.address)     # the kernel's backlog takes it

        def third():
            c.send(GET % b"/third")
            r = c.response()
            answered.set()
            return r
        f = fibers.spawn(third)
        assert not answered.wait(2.0)       # waits while two are open
        assert server.connections == 2
        a.close()
        assert answered.wait(READ_LIMIT)
        assert server.connections == 2      # b and the third
        return f.join()

    r = serving(io_sched, echo_path, body, limits=limits)
    assert r.body == b"/third"


# ---- 12: errors ----------------------------------------------------------------------------

def test_app_exception_is_a_500_and_logged(io_sched, errlog):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise ValueError("boom")
        return hello(environ, start_response)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/boom" + GET % b"/never")
        answered_with(c, 500, b"Internal Server Error")
        c2 = Client(server.address)
        c2.send(GET % b"/")
        return c2.response()

    r = serving(io_sched, app, body)
    assert r.body == b"Hello, world!"
    errors = [rec for rec in errlog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "fibers.http"
    assert "/boom" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], ValueError)


def test_app_exception_after_headers_closes(io_sched, errlog):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        raise RuntimeError("mid-way")

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/never")
        r = c.response()
        return r, c.at_eof()

    r, eof = serving(io_sched, app, body)
    assert r.status == 200 and not r.complete
    assert r.raw_body == b"5\r\nfirst\r\n"      # no last chunk
    assert eof
    errors = [rec for rec in errlog.records if rec.levelno >= logging.ERROR]
    assert [type(e.exc_info[1]) for e in errors] == [RuntimeError]


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
], ids=["request-line", "content-length", "header", "cl-and-te",
        "two-lengths"])
def test_malformed_request_is_a_400(io_sched, request_bytes):
    def body(server):
        c = Client(server.address)
        c.send(request_bytes)
        answered_with(c, 400, b"Bad Request")
        wait_connections(server, 0)

    serving(io_sched, never_called, body)


def test_start_response_with_exc_info_replaces_the_status(io_sched,
                                                          errlog):
    import sys

    def app(environ, start_response):
        start_response("200 OK", [("X-Partial", "1")])
        try:
            raise KeyError("missing")
        except KeyError:
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/")
        return c.response(), c.response()

    for r in serving(io_sched, app, body):
        assert DATE.sub(b"", r.head) == (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
        assert r.body == b"sorry"
    assert errlog.records == []


def test_access_log(io_sched, caplog):
    caplog.set_level(logging.INFO, logger="fibers.http.access")

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/x?y=1" + b"GET /gen HTTP/1.0\r\n\r\n")
        c.response(), c.response()
        return c.sock.getsockname()[0]

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/gen":
            return gen_app(environ, start_response)
        return hello(environ, start_response)

    host = serving(io_sched, app, body, access_log=True)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "fibers.http.access"]
    stamp = r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"
    assert len(lines) == 2, lines
    assert re.fullmatch(re.escape(host) + " - - " + stamp +
                        r' "GET /x\?y=1 HTTP/1.1" 200 13', lines[0]), lines
    assert re.fullmatch(re.escape(host) + " - - " + stamp +
                        r' "GET /gen HTTP/1.0" 200 11', lines[1]), lines
    assert all(r.levelno == logging.INFO for r in caplog.records
               if r.name == "fibers.http.access")
    # Off by default.
    caplog.clear()
    serving(io_sched, app, body)
    assert [r for r in caplog.records if r.name == "fibers.http.access"] \
        == []


def test_client_gone_mid_response_costs_nothing(io_sched, errlog):
    produced, closed = [], []

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/big":
            return hello(environ, start_response)
        start_response("200 OK", [])
        return big()

    def big():
        try:
            for i in range(10_000):
                produced.append(i)
                yield b"z" * 65536
        finally:
            closed.append(True)

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/big")
        assert c.sock.recv(65536)
        c.close()
        wait_connections(server, 0)
        c2 = Client(server.address)
        c2.send(GET % b"/")
        r = c2.response()
        c2.close()
        wait_connections(server, 0)
        return r

    assert serving(io_sched, app, body).body == b"Hello, world!"
    assert closed == [True]
    assert len(produced) < 1000
    assert [r for r in errlog.records if r.levelno >= logging.WARNING] == []


# ---- 13: graceful stop -----------------------------------------------------------------------

def test_stop_closes_idle_and_finishes_in_flight(io_sched):
    in_app, release = fibers.Event(), fibers.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            in_app.set()
            release.wait()
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    def main():
        server = http.serve(app, ("127.0.0.1", 0))
        idle, busy = Client(server.address), Client(server.address)
        idle.send(GET % b"/fast")
        assert idle.response().body == b"/fast"
        busy.send(GET % b"/slow")
        assert in_app.wait(READ_LIMIT)
        t0 = fibers.now()
        stopper = fibers.spawn(server.stop, 5)
        assert idle.at_eof()
        assert fibers.now() == t0            # at once
        with pytest.raises(ConnectionRefusedError):
            Client(server.address)
        assert not stopper.dead
        release.set()
        r = busy.response()
        assert busy.at_eof()
        stopper.join()
        return r, fibers.now() - t0, server.connections

    r, elapsed, conns = io_sched.run(main)
    assert r.body == b"/slow" and r.one("Connection") == "close"
    assert elapsed < 5 and conns == 0


def test_stop_kills_what_outlives_the_grace(io_sched):
    in_app = fibers.Event()
    ended = []

    def app(environ, start_response):
        in_app.set()
        try:
            fibers.Event().wait()       # never set
        finally:
            ended.append(fibers.now())

    def main():
        server = http.serve(app, ("127.0.0.1", 0))
        c = Client(server.address)
        c.send(GET % b"/stuck")
        assert in_app.wait(READ_LIMIT)
        t0 = fibers.now()
        server.stop(grace=2)
        t1 = fibers.now()
        # The connection ends with no response at all.
        return t1 - t0, c.at_eof(), ended[0] - t0, server.connections

    elapsed, eof, ended_at, conns = io_sched.run(main)
    assert elapsed == 2 and ended_at == 2
    assert eof and conns == 0


# ---- 14: slow clients ----------------------------------------------------------------------

@pytest.mark.hang_limit(120)
def test_slow_clients_do_not_stop_a_normal_one(io_sched):
    n = 1000
    limits = http.Limits(header_timeout=9.5)
    req = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 20 + \
        b"\r\n\r\n"
    started, finished = [0], [0]
    all_started = fibers.Event()

    def slow(address):
        c = Client(address)
        got = []

        def reader():
            got.append(c.response())
            got.append(c.at_eof())
        rf = fibers.spawn(reader)
        t0 = fibers.now()
        for i in range(len(req)):
            if got:
                break
            c.send(req[i:i + 1])
            if i == 0:
                started[0] += 1
                if started[0] == n:
                    all_started.set()
            fibers.sleep(1)
        rf.join()
        finished[0] += 1
        c.close()
        return got[0], got[1], fibers.now() - t0

    def body(server):
        slows = [fibers.spawn(slow, server.address) for _ in range(n)]
        assert all_started.wait(READ_LIMIT)
        t0 = fibers.now()
        c = Client(server.address)
        c.send(GET % b"/normal")
        r = c.response()
        t = fibers.now() - t0
        assert finished[0] == 0             # all 1,000 still sending
        c.close()
        results = [f.join() for f in slows]
        wait_connections(server, 0)
        return r, t, results

    r, t, results = serving(io_sched, echo_path, body, limits=limits)
    assert r.body == b"/normal" and t < 1.0
    statuses = {(res.status, eof) for res, eof, _ in results}
    assert statuses == {(408, True)}
    assert all(9.5 <= took < 10.5 for _, _, took in results)


# ---- TLS ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls():
    """(server context, client context) from a trustme CA."""
    import ssl
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


def test_tls_keep_alive_and_file_wrapper(io_sched, tls, tmp_path):
    server_ctx, client_ctx = tls
    data = os.urandom(200_000)
    (tmp_path / "f").write_bytes(data)
    schemes = []

    def app(environ, start_response):
        schemes.append(environ["wsgi.url_scheme"])
        if environ["PATH_INFO"] == "/file":
            start_response("200 OK", [])
            return environ["wsgi.file_wrapper"](open(tmp_path / "f", "rb"))
        return hello(environ, start_response)

    def body(server):
        c = Client(server.address, ssl=client_ctx,
                   server_hostname="localhost")
        c.send(GET % b"/" + GET % b"/file")
        r1, r2 = c.response(), c.response()
        c.send(GET % b"/")
        return r1, r2, c.response()

    r1, r2, r3 = serving(io_sched, app, body, ssl=server_ctx)
    assert r1.body == r3.body == b"Hello, world!"
    assert r2.one("Content-Length") == str(len(data)) and r2.body == data
    assert schemes == ["https"] * 3


def test_tls_handshake_timeout(io_sched, tls):
    server_ctx, _ = tls

    def body(server):
        c = Client(server.address)      # never starts the handshake
        wait_connections(server, 1)
        t0 = fibers.now()
        eof = c.at_eof()
        t = fibers.now() - t0
        wait_connections(server, 0)
        return eof, t

    eof, t = serving(io_sched, hello, body, ssl=server_ctx,
                     handshake_timeout=3)
    assert eof and 3 <= t < 3.5


# ---- 15: bad arguments ----------------------------------------------------------------------

def test_serve_rejects_bad_arguments(io_sched):
    def main():
        with pytest.raises(TypeError, match="WSGI app"):
            http.serve("not an app", ("127.0.0.1", 0))
        with pytest.raises(TypeError, match="limits must be a "
                           "fibers.http.Limits, not dict"):
            http.serve(hello, ("127.0.0.1", 0), limits={"max_headers": 1})
        with pytest.raises(TypeError, match="ssl must be an "
                           "ssl.SSLContext, not bool"):
            http.serve(hello, ("127.0.0.1", 0), ssl=True)
        with pytest.raises(TypeError, match="backlog must be an int"):
            http.serve(hello, ("127.0.0.1", 0), backlog="10")
        server = http.serve(hello, ("127.0.0.1", 0))
        try:
            for grace in (-1, math.nan):
                with pytest.raises(ValueError, match="grace must be >= 0"):
                    server.stop(grace)
        finally:
            server.stop(0)
    io_sched.run(main)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(max_header_size=0), ValueError, "max_header_size must be positive"),
    (dict(max_headers=-1), ValueError, "max_headers must be positive"),
    (dict(max_body_size=0), ValueError, "max_body_size must be positive"),
    (dict(max_connections=-5), ValueError,
     "max_connections must be positive"),
    (dict(header_timeout=0), ValueError, "header_timeout must be positive"),
    (dict(keepalive_timeout=-1.5), ValueError,
     "keepalive_timeout must be positive"),
    (dict(header_timeout=math.nan), ValueError,
     "header_timeout must be positive"),
    (dict(keepalive_timeout=math.nan), ValueError,
     "keepalive_timeout must be positive"),
    (dict(max_headers=1.5), TypeError, "max_headers must be an int, not "
     "float"),
    (dict(max_body_size="10"), TypeError, "max_body_size must be an int"),
    (dict(max_connections=True), TypeError,
     "max_connections must be an int, not bool"),
    (dict(header_timeout="1"), TypeError,
     "header_timeout must be a number, not str"),
    (dict(keepalive_timeout=None), TypeError,
     "keepalive_timeout must be a number"),
])
def test_limits_reject_bad_values(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        http.Limits(**kw)


def test_limits_accept_good_values():
    lim = http.Limits(max_header_size=10, max_headers=1, max_body_size=1,
                      header_timeout=0.5, keepalive_timeout=2,
                      max_connections=1)
    assert (lim.max_header_size, lim.max_headers, lim.max_body_size,
            lim.header_timeout, lim.keepalive_timeout,
            lim.max_connections) == (10, 1, 1, 0.5, 2.0, 1)


# ---- the response's bytes: header strings, big bodies over a full socket ---------

@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("X-A", "1\r\nSet-Cookie: evil=1")]),
    ("200 OK", [("X-A\nSet-Cookie", "evil=1")]),
    ("200 OK\r\nSet-Cookie: evil=1", []),
])
def test_header_strings_with_line_breaks_are_refused(io_sched, errlog,
                                                     status, headers):
    # A CR or LF would let an app's (attacker-fed) string split the
    # response: start_response raises, the client gets a 500 and no
    # smuggled field reaches the wire.
    def app(environ, start_response):
        start_response(status, headers)
        return [b"never"]

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/")
        r = c.response()
        raw = r.head + r.body
        assert c.at_eof()
        return r, raw

    r, raw = serving(io_sched, app, body)
    assert r.status == 500
    assert b"evil" not in raw and b"never" not in raw
    errors = [rec for rec in errlog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert isinstance(errors[0].exc_info[1], ValueError)
    assert "line break" in str(errors[0].exc_info[1])


def test_latin1_header_values_go_out_as_latin1(io_sched, errlog):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/bad":
            start_response("200 OK", [("X-Name", "\u20ac")])   # not latin-1
        else:
            start_response("200 Ok\xe9", [("X-Name", "caf\xe9")])
        return [b"ok"]

    def body(server):
        c = Client(server.address)
        c.send(GET % b"/" + GET % b"/bad")
        return c.response(), c.response()

    good, bad = serving(io_sched, app, body)
    assert good.head.startswith(b"HTTP/1.1 200 Ok\xe9\r\n")
    assert b"\r\nX-Name: caf\xe9\r\n" in good.head and good.body == b"ok"
    assert bad.status == 500
    errors = [rec for rec in errlog.records if rec.levelno >= logging.ERROR]
    assert [type(e.exc_info[1]) for e in errors] == [UnicodeEncodeError]


def test_big_pipelined_responses_over_a_full_socket_buffer(io_sched):
    # 40 pipelined requests for 200 KB bodies, read only once all are
    # sent: the server's sends fill the socket buffer, a send goes through
    # in part, and the rest must follow in order, byte for byte.
    size, count = 200_000, 40

    def app(environ, start_response):
        n = int(environ["PATH_INFO"][1:])
        start_response("200 OK", [("Content-Type", "application/x")])
        return [bytes([n % 251]) * (size - n) + b"%06d" % n]

    def body(server):
        c = Client(server.address)
        c.send(b"".join(GET % b"/%d" % i for i in range(count)))
        return [c.response() for _ in range(count)]

    rs = serving(io_sched, app, body)
    for i, r in enumerate(rs):
        assert r.status == 200 and r.complete
        assert r.body == bytes([i % 251]) * (size - i) + b"%06d" % i
