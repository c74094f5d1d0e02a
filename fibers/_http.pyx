# cython: language_level=3
"""fibers.http's connection loop: HTTP/1.1 in, a WSGI app, HTTP/1.1 out.

Design
------
One fiber per connection runs :meth:`_Conn.serve`.  Bytes are parsed by
httptools (llhttp); its callbacks land on the _Conn, which turns them into
_Request records in a FIFO (``_pending``).  The loop takes the oldest
request, runs the app on it and writes the response, so pipelined requests
are answered in order.  It reads from the socket only when it has nothing
else to do: no complete request header queued, or the app reading a body
that has not arrived.  So at most one read's worth of later requests sits
parsed ahead, and a client that floods pipelined requests is read no faster
than it is answered.

The body streams: ``wsgi.input`` (_Input) hands out what the parser has
delivered to its request and reads more from the socket on demand, sending
``100 Continue`` first when the client asked for it.  Whatever the app left
unread is read and dropped before the next request (bounded by the body
limit), so the stream stays in step.

Limits answer with a status and close: a request line plus headers over
``max_header_size`` bytes or ``max_headers`` fields (431), a body over
``max_body_size`` (413), headers not complete within ``header_timeout``
seconds of the request's first byte (408), a malformed request (400).  An
idle keep-alive connection closes quietly after ``keepalive_timeout``.
Timeouts are the scheduler's timers (fibers.timeout), so they cost no
system call and run on a VirtualClock in tests.

The response: start_response stores the status and headers; the header
block is sent with the first non-empty body chunk (or at the end), joined
with it in one send.  Content-Length comes from the app, or is computed
when the app returns a one-item list or tuple; otherwise HTTP/1.1 responses
are chunked and HTTP/1.0 ones end with the connection.  HEAD sends the
headers alone.  An app's exception before the headers went out becomes a
500 (traceback logged); after, the connection is closed mid-response, the
only signal HTTP/1.1 has.
"""
import os as _os
import stat as _stat
import sys as _sys
import time as _time
import logging as _logging
from urllib.parse import unquote_to_bytes as _unquote_to_bytes
from email.utils import formatdate as _formatdate

import httptools as _httptools
import fibers as _fibers

cimport cython

_log = _logging.getLogger("fibers.http")
_access_log = _logging.getLogger("fibers.http.access")

cdef object _ParserError = _httptools.HttpParserError
cdef object _ParserUpgrade = _httptools.HttpParserUpgrade
cdef object _Parser = _httptools.HttpRequestParser
cdef object _FTimeout = _fibers.Timeout

cdef bytes _CRLF = b"\r\n"
# The methods' names as str, made once.
cdef dict _METHODS = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
    "CONNECT")}
cdef bytes _CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Reason phrases for the responses the server makes itself.
cdef dict _REASONS = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}

# The Date header, remade once a second (RFC 9110: an origin server with a
# clock sends one).
cdef double _date_second = 0.0
cdef bytes _date_line = b""


cdef inline bytes _date():
    global _date_second, _date_line
    cdef double now = _time.time()
    if now - _date_second >= 1.0 or now < _date_second:
        _date_second = <double>(<long>now)
        _date_line = b"Date: " + \
            _formatdate(_date_second, usegmt=True).encode("ascii") + _CRLF
    return _date_line


class HTTPLimitError(Exception):
    """A request broke one of the server's limits (status is the answer)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@cython.final
cdef class Limits:
    """The server's limits (see :func:`fibers.http.serve`)."""
    cdef public Py_ssize_t max_header_size
    cdef public Py_ssize_t max_headers
    cdef public long long max_body_size
    cdef public double header_timeout
    cdef public double keepalive_timeout
    cdef public Py_ssize_t max_connections

    def __init__(self, *, max_header_size=65536, max_headers=100,
                 max_body_size=1 << 30, header_timeout=10.0,
                 keepalive_timeout=5.0, max_connections=10000):
        for name, v in (("max_header_size", max_header_size),
                        ("max_headers", max_headers),
                        ("max_body_size", max_body_size),
                        ("max_connections", max_connections)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, not "
                                f"{type(v).__name__}")
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        for name, v in (("header_timeout", header_timeout),
                        ("keepalive_timeout", keepalive_timeout)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"{name} must be a number, not "
                                f"{type(v).__name__}")
            if not v > 0:
                raise ValueError(f"{name} must be positive, got {v}")
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.max_body_size = max_body_size
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections

    def __repr__(self):
        return (f"Limits(max_header_size={self.max_header_size}, "
                f"max_headers={self.max_headers}, "
                f"max_body_size={self.max_body_size}, "
                f"header_timeout={self.header_timeout}, "
                f"keepalive_timeout={self.keepalive_timeout}, "
                f"max_connections={self.max_connections})")


@cython.final
cdef class _Request:
    # One request as the parser delivered it.
    cdef bytes url
    cdef list headers           # [(name bytes, value bytes)], in order
    cdef bytearray body         # delivered, not yet read by the app
    cdef bint headers_done
    cdef bint complete          # the parser saw the message's end
    cdef bint keep_alive
    cdef bint expect_continue
    cdef bint continue_sent
    cdef long long body_seen        # body bytes delivered so far
    cdef object method          # str
    cdef object version         # str: "1.1", "1.0"
    cdef object error           # an HTTPLimitError found while parsing

    def __cinit__(self):
        self.url = b""
        self.headers = []
        self.body = bytearray()


@cython.final
cdef class _Input:
    """``wsgi.input``: the request body, read from the socket as the app
    reads it."""
    cdef _Conn _conn
    cdef _Request _req

    def __cinit__(self, _Conn conn, _Request req):
        self._conn = conn
        self._req = req

    cdef int _want(self, Py_ssize_t n) except -1:
        # Until n body bytes are buffered (n < 0: all) or the body ended.
        cdef _Request r = self._req
        while not r.complete and r.error is None and \
                (n < 0 or len(r.body) < n):
            if r.expect_continue and not r.continue_sent:
                r.continue_sent = True
                self._conn._send(_CONTINUE)
            if not self._conn._fill(True):
                if r.error is None and self._conn._bad is not None:
                    raise self._conn._bad   # 408: the body stopped coming
                if r.error is None:
                    raise ConnectionResetError(
                        "the client closed the connection mid-body")
                break
        if r.error is not None:
            raise r.error
        return 0

    def read(self, size=-1):
        cdef Py_ssize_t n = -1 if size is None else size
        cdef bytearray body
        self._want(n)
        body = self._req.body
        if n < 0 or n >= len(body):
            data = bytes(body)
            del body[:]
        else:
            data = bytes(body[:n])
            del body[:n]
        return data

    def readline(self, size=-1):
        cdef Py_ssize_t n = -1 if size is None else size
        cdef Py_ssize_t i, start = 0
        cdef _Request r = self._req
        while True:
            i = r.body.find(b"\n", start)
            if i >= 0:
                i += 1
                break
            if r.complete or (0 <= n <= len(r.body)):
                i = len(r.body)
                break
            start = len(r.body)
            self._want(len(r.body) + 1)
            if r.complete and len(r.body) == start:
                i = start
                break
        if 0 <= n < i:
            i = n
        data = bytes(r.body[:i])
        del r.body[:i]
        return data

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class FileWrapper:
    """``wsgi.file_wrapper``: a regular file is sent from its current
    position with ``sendfile()`` (by blocks over TLS), with a
    Content-Length; anything else is read in blocks of ``blksize``."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data


cdef class _Conn:
    # One connection: the parser's callbacks, the request FIFO, the loop.
    cdef object _sock
    cdef object _parser
    # Bound methods, looked up once per connection (the hot path's calls).
    cdef object _send, _recv_into, _feed, _get_method, _get_version
    cdef object _keep_alive_of
    cdef object _app
    cdef object _server             # fibers.http.Server
    cdef Limits _limits
    cdef dict _base_env
    cdef object _pending            # deque of _Request with headers done
    cdef _Request _parsing          # the request the parser is inside
    cdef Py_ssize_t _header_bytes   # request line + fields, as parsed
    cdef Py_ssize_t _raw_header_bytes   # bytes read while in the headers
    cdef double _header_deadline    # header_timeout after the first byte
    cdef bytearray _rbuf
    cdef object _rview
    cdef bint _eof
    cdef object _bad                # an HTTPLimitError: answer it, close
    cdef public bint idle           # waiting for a request (stop() may close)
    cdef public bint closing        # answer the current request, then close
    cdef object _access             # the access logger, or None
    cdef object _peer

    def __cinit__(self, sock, app, server, Limits limits, dict base_env,
                  peer, access):
        from collections import deque
        self._sock = sock
        self._app = app
        self._server = server
        self._limits = limits
        self._base_env = base_env
        self._pending = deque()
        self._parser = _Parser(self)
        self._send = sock.sendall
        self._recv_into = sock.recv_into
        self._feed = self._parser.feed_data
        self._get_method = self._parser.get_method
        self._get_version = self._parser.get_http_version
        self._keep_alive_of = self._parser.should_keep_alive
        self._rbuf = bytearray(65536)
        self._rview = memoryview(self._rbuf)
        self._peer = peer
        self._access = access

    # ---- the parser's callbacks ----------------------------------------

    def on_message_begin(self):
        self._parsing = _Request()
        self._header_bytes = 0
        self._raw_header_bytes = 0
        # The whole header block must arrive within header_timeout of its
        # first byte: a per-read timeout would let a client trickling a
        # byte at a time hold the connection for ever.
        self._header_deadline = _fibers.now() + self._limits.header_timeout

    def on_url(self, bytes url):
        cdef _Request r = self._parsing
        r.url += url
        self._header_bytes += len(url)
        if r.error is None and \
                self._header_bytes > self._limits.max_header_size:
            r.error = HTTPLimitError(431, "request line too large")

    def on_header(self, bytes name, bytes value):
        cdef _Request r = self._parsing
        cdef bytes lname
        r.headers.append((name, value))
        self._header_bytes += len(name) + len(value) + 4
        if r.error is not None:
            return
        if len(r.headers) > self._limits.max_headers:
            r.error = HTTPLimitError(431, "too many header fields")
        elif self._header_bytes > self._limits.max_header_size:
            r.error = HTTPLimitError(431, "header block too large")
        lname = name.lower()
        if lname == b"expect":
            if value.lower() == b"100-continue":
                r.expect_continue = True
        elif lname == b"content-length":
            try:
                if int(value) > self._limits.max_body_size:
                    r.error = HTTPLimitError(413, "body too large")
            except ValueError:
                pass            # llhttp rejects it before we get here

    def on_headers_complete(self):
        cdef _Request r = self._parsing
        r.headers_done = True
        m = self._get_method()
        r.method = _METHODS.get(m)
        if r.method is None:
            r.method = m.decode("ascii")
        r.version = self._get_version()
        r.keep_alive = self._keep_alive_of()
        self._pending.append(r)

    def on_body(self, bytes body):
        cdef _Request r = self._parsing
        r.body_seen += len(body)
        if r.body_seen > self._limits.max_body_size:
            if r.error is None:
                r.error = HTTPLimitError(413, "body too large")
            return              # not kept: the connection will close
        r.body += body

    def on_message_complete(self):
        self._parsing.complete = True

    # ---- reading --------------------------------------------------------

    cdef bint _in_headers(self):
        return self._parsing is not None and not self._parsing.headers_done

    cdef bint _fill(self, bint in_body) except -1:
        # One read, fed to the parser.  False at the end of the stream (or
        # after a parse error).  Waits are bounded: keepalive_timeout when
        # idle, header_timeout within a request's headers; a body read is
        # bounded by header_timeout too (a client that stops sending).
        cdef Py_ssize_t n
        cdef double limit
        if self._eof or self._bad is not None:
            return False
        if self._in_headers():
            limit = self._header_deadline - _fibers.now()
            if limit <= 0:
                self._bad = HTTPLimitError(408, "request header timeout")
                self._eof = True
                return False
        elif in_body:
            limit = self._limits.header_timeout
        else:
            limit = self._limits.keepalive_timeout
        try:
            with _fibers.timeout(limit):
                n = self._recv_into(self._rbuf)
        except _FTimeout:
            if self._in_headers():
                self._bad = HTTPLimitError(408, "request header timeout")
            elif in_body:
                self._bad = HTTPLimitError(408, "request body timeout")
            self._eof = True
            return False
        except (ConnectionResetError, BrokenPipeError):
            self._eof = True
            return False
        if n == 0:
            self._eof = True
            return False
        try:
            self._feed(self._rview[:n])
        except _ParserUpgrade:
            pass                # no upgrades: the request is answered as is
        except _ParserError as e:
            self._bad = HTTPLimitError(400, f"malformed request: {e}")
            return False
        if self._in_headers():
            # A field still being parsed is not in _header_bytes yet (the
            # parser holds it until it ends): bound the raw bytes too.
            self._raw_header_bytes += n
            if self._raw_header_bytes > self._limits.max_header_size + 65536:
                self._bad = HTTPLimitError(431, "header block too large")
                return False
        return True

    # ---- the loop ---------------------------------------------------------

    def serve(self):
        """Answer requests until the connection ends."""
        cdef _Request r
        try:
            while True:
                self.idle = len(self._pending) == 0 and \
                    not self._in_headers()
                while not self._pending:
                    if self.closing and self.idle:
                        return
                    if not self._fill(False):
                        break
                self.idle = False
                if not self._pending:
                    if self._bad is not None:
                        self._answer_error(self._bad)
                    return
                r = self._pending.popleft()
                if r.error is not None:
                    self._answer_error(r.error)
                    return
                if not self._respond(r):
                    return
                # What the app left of the body, dropped; then the next.
                # Past the body limit, the connection closes instead.
                while not r.complete and r.error is None:
                    del r.body[:]
                    if not self._fill(True):
                        return
                if r.error is not None:
                    return
                if not r.keep_alive or self.closing:
                    return
                if self._in_headers():
                    # A pipelined request begun while this one was served:
                    # the time the app took is not the client's, so its
                    # header timeout starts now.
                    self._header_deadline = _fibers.now() + \
                        self._limits.header_timeout
        except (ConnectionResetError, BrokenPipeError):
            return              # the client went away: nothing to answer

    cdef int _answer_error(self, err) except -1:
        cdef int status = getattr(err, "status", 400)
        body = ("%d %s\n" % (status, _REASONS[status])).encode("ascii")
        head = ("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                "Content-Length: %d\r\nConnection: close\r\n"
                % (status, _REASONS[status], len(body))).encode("ascii")
        try:
            self._send(head + _date() + _CRLF + body)
        except OSError:
            pass
        self._log_access(None, status, len(body))
        return 0

    cdef dict _environ(self, _Request r):
        cdef dict env = self._base_env.copy()
        cdef bytes url = r.url, path, query
        cdef bytes name, value
        cdef Py_ssize_t q
        if url[:1] != b"/":
            # absolute-form (a proxy request) or "*"
            if url == b"*":
                path, query = b"*", b""
            else:
                u = _httptools.parse_url(url)
                path = u.path or b"/"
                query = u.query or b""
        else:
            q = url.find(b"?")
            if q < 0:
                path, query = url, b""
            else:
                path, query = url[:q], url[q + 1:]
        if b"%" in path:
            path = _unquote_to_bytes(path)
        env["REQUEST_METHOD"] = r.method
        env["PATH_INFO"] = path.decode("latin-1")
        env["QUERY_STRING"] = query.decode("latin-1")
        env["RAW_URI"] = url.decode("latin-1")
        env["SERVER_PROTOCOL"] = "HTTP/" + r.version
        for name, value in r.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
                env[key] = value.decode("latin-1")
                continue
            key = "HTTP_" + key
            if key in env:
                env[key] += "," + value.decode("latin-1")
            else:
                env[key] = value.decode("latin-1")
        env["wsgi.input"] = _Input(self, r)
        return env

    cdef bint _respond(self, _Request r) except -1:
        # Runs the app on r and writes its response.  False when the
        # connection must close after it.
        cdef _Response resp = _Response(self, r)
        env = self._environ(r)
        result = None
        try:
            result = self._app(env, resp.start_response)
            if isinstance(result, FileWrapper) and not r.method == "HEAD":
                resp.send_file(result)
            else:
                if type(result) is list or type(result) is tuple:
                    if len(result) == 1 and resp.length < 0 and \
                            resp.status_line is not None and \
                            not resp.headers_sent:
                        resp.length = len(result[0])
                for chunk in result:
                    resp.write(chunk)
            resp.finish()
        except HTTPLimitError as e:
            # The body broke a limit while the app read it.
            if not resp.headers_sent:
                self._answer_error(e)
            return False
        except (ConnectionResetError, BrokenPipeError):
            raise
        except Exception:
            _log.exception("fibers.http: the app raised on %s %s",
                           r.method, r.url.decode("latin-1"))
            if not resp.headers_sent:
                self._answer_error(HTTPLimitError(500, "app error"))
            return False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.exception("fibers.http: the app's iterable's "
                                   "close() raised")
        self._log_access(r, resp.status, resp.sent_body)
        return not resp.must_close

    cdef int _log_access(self, _Request r, status, long long size) except -1:
        if self._access is None:
            return 0
        host = self._peer[0] if isinstance(self._peer, tuple) else "-"
        line = ("-" if r is None else
                "%s %s HTTP/%s" % (r.method, r.url.decode("latin-1"),
                                   r.version))
        self._access.info('%s - - [%s] "%s" %s %s', host,
                          _time.strftime("%d/%b/%Y:%H:%M:%S %z"), line,
                          str(status).split(" ")[0], size if size else "-")
        return 0


@cython.final
cdef class _Response:
    # start_response and the response's bytes on the wire.
    cdef _Conn conn
    cdef _Request req
    cdef public object status_line  # bytes: b"200 OK"
    cdef public object status
    cdef list headers
    cdef public bint headers_sent
    cdef public long long length    # Content-Length, -1: none
    cdef bint length_given          # the app's own header says it
    cdef bint close_given           # the app's own header says close
    cdef public long long sent_body
    cdef bint chunked
    cdef public bint must_close
    cdef bint head

    def __cinit__(self, _Conn conn, _Request req):
        self.conn = conn
        self.req = req
        self.length = -1
        self.head = req.method == "HEAD"

    def start_response(self, status, headers, exc_info=None):
        cdef bytes name
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status_line is not None:
            raise RuntimeError("start_response() called twice without "
                               "exc_info")
        if not isinstance(status, str):
            raise TypeError(f"status must be a str, not "
                            f"{type(status).__name__}")
        if not isinstance(headers, list):
            raise TypeError(f"headers must be a list, not "
                            f"{type(headers).__name__}")
        self.status = status
        self.status_line = status.encode("latin-1")
        self.headers = headers
        self.length = -1
        self.length_given = False
        self.close_given = False
        for h in headers:
            if not (type(h) is tuple and len(h) == 2 and
                    isinstance(h[0], str) and isinstance(h[1], str)):
                raise TypeError(f"each header must be a (str, str) "
                                f"tuple, got {h!r}")
            lname = h[0].lower()
            if lname == "content-length":
                self.length = int(h[1])
                self.length_given = True
            elif lname == "connection" and h[1].lower() == "close":
                self.must_close = True
                self.close_given = True
        return self.write

    cdef bint _no_body_status(self):
        status = self.status_line[:3]
        return status == b"204" or status == b"304" or status[:1] == b"1"

    cdef bytes _head(self):
        # The status line and header block, deciding the framing.
        cdef _Request r = self.req
        cdef list out
        if self.status_line is None:
            raise RuntimeError("the app returned without calling "
                               "start_response()")
        keep = r.keep_alive and not self.must_close and \
            not self.conn.closing
        out = [b"HTTP/1.1 ", self.status_line, _CRLF]
        for name, value in self.headers:
            out.append(name.encode("latin-1"))
            out.append(b": ")
            out.append(value.encode("latin-1"))
            out.append(_CRLF)
        out.append(_date())
        no_body = self.head or self._no_body_status()
        if self.length >= 0 and not self.length_given and \
                not self._no_body_status():
            out.append(b"Content-Length: %d\r\n" % self.length)
        if self.length < 0 and not no_body:
            if r.version == "1.1":
                self.chunked = True
                out.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep = False    # the end of the body is the close
        if not keep:
            self.must_close = True
            if not self.close_given:
                out.append(b"Connection: close\r\n")
        elif r.version == "1.0":
            out.append(b"Connection: keep-alive\r\n")
        out.append(_CRLF)
        self.headers_sent = True
        return b"".join(out)

    def write(self, data):
        """The WSGI ``write()`` callable, and each chunk of the result."""
        cdef Py_ssize_t n
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a WSGI app must give bytes, not "
                            f"{type(data).__name__}")
        n = len(data)
        if n == 0:
            return
        if self.head:
            if not self.headers_sent:
                self.conn._send(self._head())
            return
        if self.length >= 0 and self.sent_body + n > self.length:
            raise RuntimeError("the app sent more than its Content-Length")
        if not self.headers_sent:
            head = self._head()
            if self.chunked:
                self.conn._send(b"".join(
                    (head, b"%x\r\n" % n, data, _CRLF)))
            else:
                self.conn._send(head + data)
        elif self.chunked:
            self.conn._send(b"".join((b"%x\r\n" % n, data, _CRLF)))
        else:
            self.conn._send(data)
        self.sent_body += n

    def send_file(self, wrapper):
        # A regular file goes out with sendfile() from where it stands
        # (PEP 3333: as iter(filelike.read, b"")), its length known; a
        # TLS socket (no sendfile: its bytes go through TLS records) gets
        # the same bytes by blocks.
        f = wrapper.filelike
        sendfile = getattr(self.conn._sock, "sendfile", None)
        try:
            fd = f.fileno()
            pos = f.tell()
            st = _os.fstat(fd)
            regular = _stat.S_ISREG(st.st_mode)
        except (AttributeError, OSError, ValueError):
            regular = False     # io.BytesIO, a pipe, a socket: blocks
        if not regular or self.headers_sent:
            for chunk in wrapper:
                self.write(chunk)
            return
        if self.length < 0:
            self.length = max(st.st_size - pos, 0)
        left = self.length
        if sendfile is None:
            while left > 0:
                data = f.read(min(wrapper.blksize, left))
                if not data:
                    break
                self.write(data)
                left -= len(data)
            return
        self.conn._send(self._head())
        if left > 0:            # (a count of 0 would mean "to the end")
            self.sent_body += sendfile(f, pos, left)

    def finish(self):
        if not self.headers_sent:
            if self.length < 0 and not self.head and \
                    self.status_line is not None and \
                    not self._no_body_status():
                self.length = 0     # an empty body, said so
            self.conn._send(self._head())
        elif self.chunked:
            self.conn._send(b"0\r\n\r\n")
        if self.length >= 0 and self.sent_body < self.length and \
                not self.head:
            # Fewer bytes than promised: the client would wait for the
            # rest.  Closing is the only way to say it went wrong.
            self.must_close = True
