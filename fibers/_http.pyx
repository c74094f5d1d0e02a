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
A read's limit is one scheduler timer armed around it (cimported, not the
fibers.timeout context manager), so it costs no system call and runs on a
VirtualClock in tests; a plain socket's read goes straight to the core's
socket state (_Sock), a TLS socket's through its recv_into.

The response: the _Response object is the app's start_response; it stores
the status and headers (refusing CR/LF in them).  The header block is
assembled in the connection's C buffer with the first non-empty body chunk
(a bytes chunk up to 256 KiB is copied beside it) or at the end, and goes
out in one send: straight to a plain socket with a non-blocking send(2),
whatever the kernel does not take at once through the socket's sendall.  Content-Length comes from the app, or is computed
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
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.string cimport memcpy, memchr
from libc.stdlib cimport realloc, free
from libc.stdint cimport int64_t
from libc.errno cimport errno, EINTR

# The hot path reaches the scheduler and a plain socket's receive directly
# (as fibers._fs does), instead of through fibers.timeout and the socket's
# Python methods: a read's deadline is one timer, armed and disarmed.
from fibers._core cimport Scheduler, Fiber, Timer, _Sock
from fibers._core import Socket as _PlainSocket

cdef extern from "<sys/socket.h>":
    ssize_t send(int fd, const void *buf, size_t n, int flags) nogil
    enum:
        MSG_NOSIGNAL
        MSG_DONTWAIT

cdef extern from "Python.h":
    int PyOS_snprintf(char *buf, size_t n, const char *fmt, ...)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef extern from "<time.h>":
    ctypedef long time_t
    time_t time(time_t *t)

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
cdef time_t _date_second = 0
cdef bytes _date_line = b""


cdef inline bytes _date():
    global _date_second, _date_line
    cdef time_t now = time(NULL)
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: " + \
            _formatdate(<double>now, usegmt=True).encode("ascii") + _CRLF
    return _date_line


# A limit at or past this many seconds arms no timer (as good as never).
cdef double _NO_LIMIT = 1e9

# A body chunk up to this size goes out in the same send as the head.
cdef Py_ssize_t _JOIN_MAX = 262144


cdef inline int64_t _after(int64_t now, double seconds) noexcept:
    # now + seconds in ns, saturating (a limit may be float("inf")).
    if seconds >= _NO_LIMIT:
        return 0x7FFFFFFFFFFFFFFF
    return now + <int64_t>(seconds * 1e9)


# The environ's key for each header name seen, made once per spelling
# (bounded: names a client invents past that are made per request).
cdef str _K_CONTENT_TYPE = "CONTENT_TYPE"
cdef str _K_CONTENT_LENGTH = "CONTENT_LENGTH"
cdef dict _ENV_KEYS = {}


cdef str _env_key(bytes name):
    cdef str key = _ENV_KEYS.get(name)
    if key is not None:
        return key
    key = name.decode("latin-1").upper().replace("-", "_")
    if key == _K_CONTENT_TYPE:
        key = _K_CONTENT_TYPE
    elif key == _K_CONTENT_LENGTH:
        key = _K_CONTENT_LENGTH
    else:
        key = "HTTP_" + key
    if len(_ENV_KEYS) < 512:
        _ENV_KEYS[name] = key
    return key


cdef dict _roomy(dict base):
    # A copy of base to copy per request, holding every key the request
    # sets (placeholders until then) and with its hash table one size up:
    # dict.copy() clones the table, so the request's keys then go in
    # without growing it.  (Only speed depends on this: the copy is right
    # whatever the dict's layout.)
    cdef dict d = dict(base)
    cdef Py_ssize_t i, pad
    for k in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI",
              "SERVER_PROTOCOL", "wsgi.input"):
        d.setdefault(k, None)
    # Entries added then deleted enlarge the table; few enough of them
    # (at most half the live ones) that copy() still clones it.
    pad = len(d) // 2
    for i in range(pad):
        d[-1 - i] = None
    for i in range(pad):
        del d[-1 - i]
    return d


cdef inline bint _ascii_ieq(str s, const char *lower, Py_ssize_t n):
    # s equals the lower-case ASCII `lower` (n bytes), ignoring case.
    cdef const char *p
    cdef Py_ssize_t i
    cdef char ch
    if not PyUnicode_IS_COMPACT_ASCII(s) or PyUnicode_GET_LENGTH(s) != n:
        return False
    p = <const char *>PyUnicode_DATA(s)
    for i in range(n):
        ch = p[i]
        if ch >= 65 and ch <= 90:
            ch += 32
        if ch != lower[i]:
            return False
    return True


cdef long long _parse_length(str v) except? -1:
    # A Content-Length of plain digits, read in C; anything else as int()
    # reads it (and raises as it does).
    cdef const char *p
    cdef Py_ssize_t i, n
    cdef long long x = 0
    if PyUnicode_IS_COMPACT_ASCII(v):
        n = PyUnicode_GET_LENGTH(v)
        p = <const char *>PyUnicode_DATA(v)
        if 0 < n <= 18:
            for i in range(n):
                if p[i] < 48 or p[i] > 57:
                    break
                x = x * 10 + (p[i] - 48)
            else:
                return x
    return int(v)


cdef inline bint _has_newline(str s):
    # A header string with CR or LF would split the response (or smuggle
    # another): refused, as gunicorn and wsgiref do.
    cdef const char *p
    if PyUnicode_IS_COMPACT_ASCII(s):
        p = <const char *>PyUnicode_DATA(s)
        return memchr(p, 13, PyUnicode_GET_LENGTH(s)) != NULL or \
            memchr(p, 10, PyUnicode_GET_LENGTH(s)) != NULL
    return "\r" in s or "\n" in s


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
@cython.freelist(16)
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
@cython.freelist(16)
cdef class _Input:
    """``wsgi.input``: the request body, read from the socket as the app
    reads it."""
    cdef _Conn _conn
    cdef _Request _req

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
    cdef int64_t _header_deadline   # ns: header_timeout after the first byte
    cdef bytearray _rbuf
    cdef object _rview
    cdef bint _eof
    cdef object _bad                # an HTTPLimitError: answer it, close
    cdef public bint idle           # waiting for a request (stop() may close)
    cdef public bint closing        # answer the current request, then close
    cdef object _access             # the access logger, or None
    cdef object _peer
    cdef Scheduler _s
    # A plain (not TLS) socket: its state, for receives without the
    # Python method, and its fd, for sends tried straight away.
    cdef _Sock _c
    cdef int _fd
    cdef object _texc               # what a read's timer throws
    cdef list _last_names, _last_keys   # the last request's header names
    # The response being assembled: head and small body in one buffer.
    cdef char *_wbuf
    cdef Py_ssize_t _wlen, _wcap

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
        self._s = _fibers.Scheduler.current()
        self._fd = -1
        if isinstance(sock, _PlainSocket):
            self._c = sock._c
            self._fd = sock.fileno()
        self._texc = _FTimeout("fibers.http: read timed out")
        self._last_names = []
        self._last_keys = []
        self._base_env = _roomy(base_env)

    def __dealloc__(self):
        free(self._wbuf)

    # ---- the parser's callbacks ----------------------------------------

    def on_message_begin(self):
        self._parsing = _Request.__new__(_Request)
        self._header_bytes = 0
        self._raw_header_bytes = 0
        # The whole header block must arrive within header_timeout of its
        # first byte: a per-read timeout would let a client trickling a
        # byte at a time hold the connection for ever.
        self._header_deadline = _after(self._s._now_ns(),
                                       self._limits.header_timeout)

    def on_url(self, bytes url):
        cdef _Request r = self._parsing
        r.url += url
        self._header_bytes += len(url)
        if r.error is None and \
                self._header_bytes > self._limits.max_header_size:
            r.error = HTTPLimitError(431, "request line too large")

    def on_header(self, bytes name, bytes value):
        cdef _Request r = self._parsing
        cdef Py_ssize_t n = len(name)
        r.headers.append((name, value))
        self._header_bytes += n + len(value) + 4
        if r.error is not None:
            return
        if len(r.headers) > self._limits.max_headers:
            r.error = HTTPLimitError(431, "too many header fields")
        elif self._header_bytes > self._limits.max_header_size:
            r.error = HTTPLimitError(431, "header block too large")
        # Only two names matter here; their lengths rule out the rest
        # without lowering every name.
        if n == 6 and name.lower() == b"expect":
            if value.lower() == b"100-continue":
                r.expect_continue = True
        elif n == 14 and name.lower() == b"content-length":
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

    cdef Py_ssize_t _recv(self, double limit) except -2:
        # One read within limit seconds; -1 when the limit passed.
        cdef Scheduler s = self._s
        cdef Fiber me = s._current
        cdef Timer t = None
        cdef _Sock c = self._c
        if me is None:
            return self._recv_into(self._rbuf)     # (not from a fiber)
        if limit < _NO_LIMIT:
            t = s._arm_exc(me, <int64_t>(limit * 1e9), self._texc)
        try:
            if c is not None and not c._closed:
                # Socket.recv_into's steps, minus the Python call and the
                # socket's own timeout (ours is the timer above).
                c._prepare(s)
                c._raise_pending()
                return c._recv_once(s, me, self._rbuf, 0, 0, False)
            return self._recv_into(self._rbuf)
        except _FTimeout as e:
            if e is not self._texc:
                raise
            return -1
        finally:
            if t is not None:
                s._disarm_timeout(me, t)

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
            limit = (self._header_deadline - self._s._now_ns()) / 1e9
            if limit <= 0:
                self._bad = HTTPLimitError(408, "request header timeout")
                self._eof = True
                return False
        elif in_body:
            limit = self._limits.header_timeout
        else:
            limit = self._limits.keepalive_timeout
        try:
            n = self._recv(limit)
        except (ConnectionResetError, BrokenPipeError):
            self._eof = True
            return False
        if n < 0:
            if self._in_headers():
                self._bad = HTTPLimitError(408, "request header timeout")
            elif in_body:
                self._bad = HTTPLimitError(408, "request body timeout")
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
                    self._header_deadline = _after(
                        self._s._now_ns(), self._limits.header_timeout)
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
        cdef Py_ssize_t q, i, nlast
        cdef list last
        cdef _Input inp
        if len(url) == 0 or PyBytes_AS_STRING(url)[0] != b"/":
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
        if r.version == "1.1":
            env["SERVER_PROTOCOL"] = "HTTP/1.1"
        else:
            env["SERVER_PROTOCOL"] = "HTTP/" + r.version
        last = self._last_names
        nlast = len(last)
        i = 0
        for name, value in r.headers:
            # A keep-alive client sends the same names in the same order:
            # the last request's keys, matched by comparing bytes, spare
            # hashing each name into _ENV_KEYS.
            if i < nlast and <bytes>last[i] == name:
                key = self._last_keys[i]
            else:
                key = _env_key(name)
                if i < nlast:
                    last[i] = name
                    self._last_keys[i] = key
                elif i < 32:
                    last.append(name)
                    self._last_keys.append(key)
                    nlast += 1
            i += 1
            v = value.decode("latin-1")
            if key is _K_CONTENT_TYPE or key is _K_CONTENT_LENGTH:
                env[key] = v
                continue
            old = env.get(key)
            env[key] = v if old is None else old + "," + v
        inp = _Input.__new__(_Input)
        inp._conn = self
        inp._req = r
        env["wsgi.input"] = inp
        return env

    cdef bint _respond(self, _Request r) except -1:
        # Runs the app on r and writes its response.  False when the
        # connection must close after it.  The _Response is the app's
        # start_response (it is callable), so no bound method is made.
        cdef _Response resp = _Response.__new__(_Response)
        resp.conn = self
        resp.req = r
        resp.length = -1
        resp.head = r.method == "HEAD"
        env = self._environ(r)
        result = None
        try:
            result = self._app(env, resp)
            if type(result) is list or type(result) is tuple:
                if len(result) == 1 and resp.length < 0 and \
                        resp.status is not None and \
                        not resp.headers_sent:
                    resp.length = len(result[0])
                for chunk in result:
                    resp._write(chunk)
            elif isinstance(result, FileWrapper) and not resp.head:
                resp.send_file(result)
            else:
                for chunk in result:
                    resp._write(chunk)
            resp._finish()
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
            if type(result) is not list and type(result) is not tuple:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        _log.exception("fibers.http: the app's iterable's "
                                       "close() raised")
        self._log_access(r, resp.status, resp.sent_body)
        return not resp.must_close

    # ---- writing ----------------------------------------------------------

    cdef int _reserve(self, Py_ssize_t n) except -1:
        # Room for n more bytes in the response buffer.
        cdef Py_ssize_t cap = self._wcap
        cdef char *p
        if self._wlen + n <= cap:
            return 0
        if cap == 0:
            cap = 4096
        while cap < self._wlen + n:
            cap *= 2
        p = <char *>realloc(self._wbuf, cap)
        if p == NULL:
            raise MemoryError()
        self._wbuf = p
        self._wcap = cap
        return 0

    cdef inline int _put(self, const char *p, Py_ssize_t n) except -1:
        if self._wlen + n > self._wcap:
            self._reserve(n)
        memcpy(self._wbuf + self._wlen, p, n)
        self._wlen += n
        return 0

    cdef inline int _put_bytes(self, bytes b) except -1:
        return self._put(PyBytes_AS_STRING(b), len(b))

    cdef int _put_str(self, str s) except -1:
        # Latin-1, as PEP 3333 has header strings; an ASCII string (nearly
        # every one) is copied as it is.
        if PyUnicode_IS_COMPACT_ASCII(s):
            return self._put(<const char *>PyUnicode_DATA(s),
                             PyUnicode_GET_LENGTH(s))
        return self._put_bytes(s.encode("latin-1"))

    cdef int _flush(self) except -1:
        # Sends the buffer: straight to a plain socket first (the kernel
        # nearly always takes it all at once), the rest -- a full socket
        # buffer, an error to report, TLS -- through the socket's sendall,
        # which waits and raises as the stdlib does.
        cdef Py_ssize_t off = 0, n = self._wlen
        cdef ssize_t k
        self._wlen = 0
        if self._fd >= 0 and not self._c._closed:
            while off < n:
                k = send(self._fd, self._wbuf + off, n - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT)
                if k < 0:
                    if errno == EINTR:
                        continue
                    break
                off += k
        if off < n:
            self._send(PyBytes_FromStringAndSize(self._wbuf + off, n - off))
        return 0

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
@cython.freelist(16)
cdef class _Response:
    # The app's start_response (it is called as one) and the response's
    # bytes on the wire, assembled in the connection's buffer.
    cdef _Conn conn
    cdef _Request req
    cdef public object status       # str: "200 OK"; None until set
    cdef list headers
    cdef public bint headers_sent
    cdef public long long length    # Content-Length, -1: none
    cdef bint length_given          # the app's own header says it
    cdef bint close_given           # the app's own header says close
    cdef public long long sent_body
    cdef bint chunked
    cdef public bint must_close
    cdef bint head

    def __call__(self, status, headers, exc_info=None):
        """start_response(status, response_headers, exc_info=None)."""
        cdef str name, value
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called twice without "
                               "exc_info")
        if not isinstance(status, str):
            raise TypeError(f"status must be a str, not "
                            f"{type(status).__name__}")
        if _has_newline(status):
            raise ValueError(f"status {status!r} contains a line break")
        if not isinstance(headers, list):
            raise TypeError(f"headers must be a list, not "
                            f"{type(headers).__name__}")
        if not PyUnicode_IS_COMPACT_ASCII(status):
            status.encode("latin-1")    # (what PEP 3333 allows: or raise)
        self.status = status
        self.headers = headers
        self.length = -1
        self.length_given = False
        self.close_given = False
        for h in headers:
            if not (type(h) is tuple and len(h) == 2 and
                    isinstance(h[0], str) and isinstance(h[1], str)):
                raise TypeError(f"each header must be a (str, str) "
                                f"tuple, got {h!r}")
            name = h[0]
            value = h[1]
            if _has_newline(name) or _has_newline(value):
                raise ValueError(f"header {h!r} contains a line break")
            if _ascii_ieq(name, b"content-length", 14):
                self.length = _parse_length(value)
                self.length_given = True
            elif _ascii_ieq(name, b"connection", 10) and \
                    value.lower() == "close":
                self.must_close = True
                self.close_given = True
        return self.write

    cdef bint _no_body_status(self):
        cdef str status = self.status
        return status.startswith(("204", "304", "1"))

    cdef int _head(self) except -1:
        # The status line and header block into the connection's buffer,
        # deciding the framing.
        cdef _Request r = self.req
        cdef _Conn c = self.conn
        cdef str name, value
        cdef char num[32]
        cdef int k
        if self.status is None:
            raise RuntimeError("the app returned without calling "
                               "start_response()")
        keep = r.keep_alive and not self.must_close and not c.closing
        c._wlen = 0     # (a head that failed half-way is not sent later)
        c._put(b"HTTP/1.1 ", 9)
        c._put_str(self.status)
        c._put(b"\r\n", 2)
        for name, value in self.headers:
            c._put_str(name)
            c._put(b": ", 2)
            c._put_str(value)
            c._put(b"\r\n", 2)
        c._put_bytes(_date())
        no_body = self.head or self._no_body_status()
        if self.length >= 0 and not self.length_given and \
                not self._no_body_status():
            k = PyOS_snprintf(num, sizeof(num), "Content-Length: %lld\r\n",
                              self.length)
            c._put(num, k)
        if self.length < 0 and not no_body:
            if r.version == "1.1":
                self.chunked = True
                c._put(b"Transfer-Encoding: chunked\r\n", 28)
            else:
                keep = False    # the end of the body is the close
        if not keep:
            self.must_close = True
            if not self.close_given:
                c._put(b"Connection: close\r\n", 19)
        elif r.version == "1.0":
            c._put(b"Connection: keep-alive\r\n", 24)
        c._put(b"\r\n", 2)
        self.headers_sent = True
        return 0

    def write(self, data):
        """The WSGI ``write()`` callable."""
        self._write(data)

    cdef int _write(self, data) except -1:
        # Each chunk of the result.  The first non-empty one goes out in
        # one send with the header block (a bytes chunk is copied beside
        # it; anything larger than _JOIN_MAX is sent after it).
        cdef Py_ssize_t n
        cdef _Conn c = self.conn
        cdef char num[24]
        cdef int k
        if type(data) is not bytes and \
                not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a WSGI app must give bytes, not "
                            f"{type(data).__name__}")
        n = len(data)
        if n == 0:
            return 0
        if self.head:
            if not self.headers_sent:
                self._head()
                c._flush()
            return 0
        if self.length >= 0 and self.sent_body + n > self.length:
            raise RuntimeError("the app sent more than its Content-Length")
        if not self.headers_sent:
            self._head()
        if self.chunked:
            k = PyOS_snprintf(num, sizeof(num), "%zx\r\n", n)
            c._put(num, k)
        if (type(data) is bytes or type(data) is bytearray) and \
                c._wlen + n <= _JOIN_MAX:
            if type(data) is bytes:
                c._put_bytes(data)
            else:
                c._put(PyByteArray_AS_STRING(data), n)
            if self.chunked:
                c._put(b"\r\n", 2)
            c._flush()
        else:
            if c._wlen:
                c._flush()
            c._send(data)
            if self.chunked:
                c._send(_CRLF)
        self.sent_body += n
        return 0

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
        self._head()
        self.conn._flush()
        if left > 0:            # (a count of 0 would mean "to the end")
            self.sent_body += sendfile(f, pos, left)

    cdef int _finish(self) except -1:
        cdef _Conn c = self.conn
        if not self.headers_sent:
            if self.length < 0 and not self.head and \
                    self.status is not None and \
                    not self._no_body_status():
                self.length = 0     # an empty body, said so
            self._head()
            c._flush()
        elif self.chunked:
            c._send(b"0\r\n\r\n")
        if self.length >= 0 and self.sent_body < self.length and \
                not self.head:
            # Fewer bytes than promised: the client would wait for the
            # rest.  Closing is the only way to say it went wrong.
            self.must_close = True
        return 0
