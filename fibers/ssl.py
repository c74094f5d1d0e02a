"""TLS for fibers: :func:`wrap` a connected :class:`fibers.net.Socket` in a
:class:`TLSSocket`, whose calls suspend only the calling fiber.

    import ssl
    import fibers
    from fibers import net

    ctx = ssl.create_default_context()

    def main():
        with net.connect(("example.org", 443), ssl=ctx) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\nHost: example.org\\r\\n\\r\\n")
            print(s.recv(65536))

    fibers.run(main)

Servers pass ``ssl=context`` to :func:`fibers.net.serve` (each connection's
handshake runs in its own handler fiber) or :func:`fibers.net.listen`.
Errors are the stdlib's: :class:`ssl.SSLError` and its subclasses
(:class:`ssl.SSLCertVerificationError` for a bad certificate or host name,
:class:`ssl.SSLEOFError` for a peer that closes mid-handshake), OSErrors
of the transport, :class:`TimeoutError` ('timed out') for the socket's
own timeout and :class:`fibers.Timeout` for ``handshake_timeout=``.

Design
------
The stdlib's ``SSLContext.wrap_socket`` drives OpenSSL from inside the
socket's blocking system calls, which is readiness I/O and blocks the
whole thread.  Here OpenSSL never touches the socket: an
:class:`ssl.SSLObject` works between two :class:`ssl.MemoryBIO` buffers,
and the fiber moves the bytes with the Socket's own recv/sendall, so they
go through the completion pump like every other socket call (the design
of trio's SSLStream).  Each SSLObject call (do_handshake, read, write,
unwrap) may append to the outgoing BIO and may raise SSLWantReadError;
the rule is: send what it produced, then (if it wanted to read) receive
into the incoming BIO, and call it again -- a write that wanted to read
is retried with the same data, as OpenSSL requires.

Several fibers may use one TLSSocket at once (one reading, one writing,
full duplex), and even a read may need to send (a TLS 1.2 renegotiation,
a TLS 1.3 key update) or a write to receive.  So the transport is shared
under two rules, kept with a wait list rather than locks (a waiter that is
killed or times out just leaves the list):

* one fiber at a time receives from the transport; another fiber that
  needs data meanwhile waits for that receive to end and then retries its
  SSLObject call (the data it needed may have come with it);
* encrypted bytes go out in the order they left the outgoing BIO: a fiber
  that finds another fiber sending queues its bytes behind it, and the
  sender sends the queue, joined into one sendall, before it stops.

A receive interrupted by a timeout or a kill loses nothing (the Socket
keeps what it received, and the BIO is only fed after a receive
returns), so a timed-out recv can simply be called again.  A send
interrupted part-way, or a handshake that failed or was interrupted,
leaves the stream broken: later calls raise SSLError.

The hot path is kept short: a read goes straight to the transport when
neither the incoming BIO nor OpenSSL holds anything (no
SSLWantReadError raised and caught per record), transport reads are big
(64 KiB), a write's records leave in one sendall, and big writes are
encrypted in 256 KiB slices so that memory stays bounded.

End of stream: a peer's close_notify makes recv return ``b''``.  A
transport EOF without one (a "ragged EOF", which many HTTPS peers send)
also returns ``b''`` unless ``suppress_ragged_eofs=False``, as in the
stdlib; then it raises :class:`ssl.SSLEOFError`.  :meth:`TLSSocket.close`
sends close_notify if the socket takes it at once (the stdlib sends none,
which strict peers such as OpenSSL 3's tools report as an error) and
never waits; :meth:`TLSSocket.shutdown` with SHUT_WR or SHUT_RDWR sends it
(waiting if it must), and :meth:`TLSSocket.unwrap` does the whole closing
exchange and hands back the plain Socket.
"""

import io as _io
import socket as _socket
import ssl as _ssl

from . import _core

__all__ = ["TLSSocket", "wrap"]

_MemoryBIO = _ssl.MemoryBIO
_SSLError = _ssl.SSLError
_SSLWantReadError = _ssl.SSLWantReadError
_SSLEOFError = _ssl.SSLEOFError

# Transport reads: big enough for a full-size TLS record (16 KiB + header)
# several times over, small enough to stay below malloc's mmap threshold.
_RECV_SIZE = 65536
# Plaintext encrypted per slice of a big write: the outgoing BIO holds at
# most about this much (plus record overhead) before it is sent.
_WRITE_SLICE = 262144

# Stream states.
_NEW, _OPEN, _BROKEN, _CLOSED = range(4)


def _as_eof(exc):
    """SSLEOFError for a transport EOF in the middle of TLS, whatever form
    this CPython/OpenSSL pair gives it (3.10 with OpenSSL 3 raises a plain
    SSLError 'UNEXPECTED_EOF_WHILE_READING'); else None."""
    if isinstance(exc, _SSLEOFError):
        return exc
    if "UNEXPECTED_EOF_WHILE_READING" in str(exc) or \
            isinstance(exc, _ssl.SSLSyscallError):
        e = _SSLEOFError(_ssl.SSL_ERROR_EOF,
                         "EOF occurred in violation of protocol")
        e.__cause__ = exc
        return e
    return None


def _park(waiters):
    # Suspend until _wake_all; a kill or timeout leaves the list.
    me = _core.current()
    waiters.append(me)
    try:
        _core.suspend()
    finally:
        try:
            waiters.remove(me)
        except ValueError:
            pass


def _wake_all(waiters):
    if waiters:
        ws = list(waiters)
        waiters.clear()
        for f in ws:
            # One whose timeout or kill has already made it ready is on
            # its way out of _park; resuming it again would be an error.
            if f.state == "suspended":
                f.resume()


def _outside_fiber(method, *args):
    # Called outside any fiber: run the call in one, driving the scheduler
    # until it is done, as fibers' Socket does.
    return _core.spawn(method, *args).join()


class TLSSocket:
    """A TLS connection over a :class:`fibers.net.Socket`, with the
    methods of :class:`ssl.SSLSocket` that apply.  Make one with
    :func:`wrap`, ``fibers.net.connect(..., ssl=ctx)``, or a server made
    with ``ssl=ctx``.

    Calls that wait suspend only the calling fiber; outside any fiber they
    run the scheduler until done.  One fiber may read while another
    writes.  A timeout set with :meth:`settimeout` applies to each wait on
    the transport and raises :class:`TimeoutError` ('timed out'), after
    which a recv may be retried; a send or handshake that is interrupted
    (timeout or kill) leaves the connection broken, so close it."""

    __slots__ = ("_sock", "_in", "_out", "_obj", "_context", "_hs_timeout",
                 "_ragged_ok", "_state", "_failure", "_waiters", "_hs_busy",
                 "_rx_busy", "_rx_count", "_tx_busy", "_tx_queue", "_tx_seq",
                 "_tx_done", "_io_refs", "_close_pending", "_read_done",
                 "__weakref__")

    def __init__(self, sock, context, server_side=False,
                 server_hostname=None, handshake_timeout=None,
                 suppress_ragged_eofs=True):
        if not isinstance(sock, _core.Socket):
            raise TypeError(f"sock must be a fibers.net.Socket, got "
                            f"{type(sock).__name__}")
        if not isinstance(context, _ssl.SSLContext):
            raise TypeError(f"context must be an ssl.SSLContext, got "
                            f"{type(context).__name__}")
        if handshake_timeout is not None:
            if isinstance(handshake_timeout, bool) or \
                    not isinstance(handshake_timeout, (int, float)):
                raise TypeError(f"handshake_timeout must be a number of "
                                f"seconds or None, got "
                                f"{type(handshake_timeout).__name__}")
            if not handshake_timeout > 0:
                raise ValueError("handshake_timeout must be > 0")
        if sock.type != _socket.SOCK_STREAM:
            raise ValueError("TLS needs a stream socket")
        if sock.gettimeout() == 0:
            raise ValueError("TLS over a non-blocking socket is not "
                             "supported: use a timeout instead")
        # The stdlib's SSLSocket checks these; its SSLObject does not (and
        # would then skip the host name check).
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in "
                             "server mode")
        if context.check_hostname and not server_side and \
                not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._sock = sock
        self._in = _MemoryBIO()
        self._out = _MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out,
                                     server_side=server_side,
                                     server_hostname=server_hostname)
        self._context = context
        self._hs_timeout = handshake_timeout
        self._ragged_ok = bool(suppress_ragged_eofs)
        self._state = _NEW
        self._failure = None        # why the stream broke
        self._waiters = []          # fibers waiting on any of the below
        self._hs_busy = False       # a fiber is doing the handshake
        self._rx_busy = False       # a fiber is receiving from the transport
        self._rx_count = 0          # transport receives so far
        self._tx_busy = False       # a fiber is sending to the transport
        self._tx_queue = []         # bytes queued behind it, in order
        self._tx_seq = 0            # chunks queued so far
        self._tx_done = 0           # chunks sent so far
        self._read_done = False     # recv has returned the end of stream
        self._io_refs = 0           # makefile() objects open
        self._close_pending = False

    # ---- the engine -------------------------------------------------------

    def _check(self):
        # Before any I/O: the handshake done, the stream usable.
        state = self._state
        if state == _OPEN:
            return
        if state == _NEW:
            self._handshake()
        elif state == _CLOSED:
            raise OSError(9, "Bad file descriptor")
        else:
            raise self._broken()

    def _broken(self):
        e = _SSLError(f"the TLS connection is broken: {self._failure}")
        return e

    def _break(self, why):
        if self._state in (_NEW, _OPEN):
            self._state = _BROKEN
            self._failure = why
        _wake_all(self._waiters)

    def _fill(self):
        """Receive from the transport into the incoming BIO, or, if another
        fiber is receiving, wait until it has."""
        if self._rx_busy:
            seen = self._rx_count
            while self._rx_busy and self._rx_count == seen and \
                    self._state in (_NEW, _OPEN):
                _park(self._waiters)
            return
        self._rx_busy = True
        try:
            data = self._sock.recv(_RECV_SIZE)
        finally:
            self._rx_busy = False
            self._rx_count += 1
            if self._waiters:
                _wake_all(self._waiters)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def _flush(self):
        """Send what the outgoing BIO holds, after whatever other fibers
        queued before it."""
        data = self._out.read()
        if not data:
            return
        if self._tx_busy:
            self._tx_queue.append(data)
            self._tx_seq += 1
            mine = self._tx_seq
            while self._tx_done < mine and self._tx_busy and \
                    self._state in (_NEW, _OPEN):
                _park(self._waiters)
            if self._tx_done < mine:
                raise self._broken()
            return
        self._tx_busy = True
        try:
            self._sock.sendall(data)
            while self._tx_queue:
                last = self._tx_seq
                batch = b"".join(self._tx_queue)
                self._tx_queue.clear()
                self._sock.sendall(batch)
                self._tx_done = last
                _wake_all(self._waiters)
        except BaseException as e:
            # Some unknown part went out: the record stream is cut.
            self._break(f"a send was interrupted ({type(e).__name__}: {e})")
            raise
        finally:
            self._tx_busy = False

    def _retry(self, fn, *args):
        """Call an SSLObject method until it completes, sending what it
        produces and receiving what it wants."""
        while True:
            try:
                ret = fn(*args)
            except _SSLWantReadError:
                if self._out.pending:
                    # Send first, then call again: the data it wants may
                    # come meanwhile through another fiber's receive.
                    self._flush()
                else:
                    self._fill()
                continue
            except _SSLError:
                if self._out.pending:
                    # The alert that tells the peer why.
                    try:
                        self._flush()
                    except OSError:
                        pass
                raise
            if self._out.pending:
                self._flush()
            return ret

    def _handshake(self):
        if self._hs_busy:
            # Another fiber is doing it: wait for its outcome.
            while self._hs_busy and self._state == _NEW:
                _park(self._waiters)
            if self._state != _OPEN:
                if self._state == _CLOSED:
                    raise OSError(9, "Bad file descriptor")
                raise self._broken()
            return
        self._hs_busy = True
        limit = self._hs_timeout
        scope = _core.timeout(limit)
        try:
            try:
                with scope:
                    self._retry(self._obj.do_handshake)
            except _core.Timeout:
                if not scope.expired:
                    raise               # an enclosing scope's, not ours
                raise _core.Timeout(f"TLS handshake timed out after "
                                    f"{limit} s") from None
            except _SSLError as e:
                eof = _as_eof(e)
                if eof is not None and eof is not e:
                    raise eof from None
                raise
        except BaseException as e:
            self._break(f"the handshake failed ({type(e).__name__}: {e})")
            raise
        else:
            if self._state == _NEW:
                self._state = _OPEN
        finally:
            self._hs_busy = False
            _wake_all(self._waiters)

    def _read(self, n, buffer=None):
        # One decrypted read: data (or a count) > 0, or b'' / 0 at the end.
        if self._read_done:
            # The end was read already (a close_notify leaves the transport
            # open, so asking it again could wait for ever).
            return b"" if buffer is None else 0
        obj = self._obj
        inb = self._in
        while True:
            if not inb.pending and not inb.eof and not obj.pending():
                # Nothing to decrypt yet: go to the transport at once
                # rather than have OpenSSL raise SSLWantReadError.
                self._fill()
                continue
            try:
                if buffer is None:
                    data = obj.read(n)
                else:
                    data = obj.read(n, buffer)
            except _SSLWantReadError:
                if self._out.pending:
                    self._flush()
                else:
                    self._fill()
                continue
            except _ssl.SSLZeroReturnError:
                data = b"" if buffer is None else 0
            except _SSLError as e:
                eof = _as_eof(e)
                if eof is None:
                    raise
                if self._ragged_ok:
                    data = b"" if buffer is None else 0
                elif eof is e:
                    raise
                else:
                    raise eof from None
            if self._out.pending:
                # A key update or renegotiation answer: send it along.
                self._flush()
            if not data:
                self._read_done = True
            return data

    # ---- the Socket API ---------------------------------------------------

    def do_handshake(self):
        """Do the TLS handshake now, if it is not done yet (every other
        call does it first anyway).  ``handshake_timeout`` limits it."""
        if not _core.in_fiber():
            return _outside_fiber(self.do_handshake)
        self._check()

    def recv(self, bufsize=1024, flags=0):
        """Receive up to ``bufsize`` decrypted bytes; ``b''`` at the end of
        the stream."""
        if flags != 0:
            raise ValueError("non-zero flags not allowed in calls to recv() "
                             "on TLSSocket")
        if not _core.in_fiber():
            return _outside_fiber(self.recv, bufsize, flags)
        if self._state != _OPEN:
            self._check()
        if bufsize <= 0:
            if bufsize < 0:
                raise ValueError("negative buffersize in recv")
            return b""
        return self._read(bufsize)

    read = recv

    def recv_into(self, buffer, nbytes=0, flags=0):
        """Receive into a writable buffer; returns the number of bytes
        (0 at the end of the stream)."""
        if flags != 0:
            raise ValueError("non-zero flags not allowed in calls to "
                             "recv_into() on TLSSocket")
        if not _core.in_fiber():
            return _outside_fiber(self.recv_into, buffer, nbytes, flags)
        if self._state != _OPEN:
            self._check()
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes == 0:
            nbytes = len(view)
        elif nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        if nbytes == 0:
            return 0
        return self._read(nbytes, view)

    def send(self, data, flags=0):
        """Send some of ``data`` (up to 256 KiB); returns how many bytes
        went."""
        if flags != 0:
            raise ValueError("non-zero flags not allowed in calls to send() "
                             "on TLSSocket")
        if not _core.in_fiber():
            return _outside_fiber(self.send, data, flags)
        if self._state != _OPEN:
            self._check()
        view = memoryview(data).cast("B")
        if len(view) > _WRITE_SLICE:
            view = view[:_WRITE_SLICE]
        return self._retry(self._obj.write, view)

    write = send

    def sendall(self, data, flags=0):
        """Send all of ``data``."""
        if flags != 0:
            raise ValueError("non-zero flags not allowed in calls to "
                             "sendall() on TLSSocket")
        if not _core.in_fiber():
            return _outside_fiber(self.sendall, data, flags)
        if self._state != _OPEN:
            self._check()
        n = len(data) if type(data) is bytes else None
        if n is not None and n <= _WRITE_SLICE:
            # The common case, one slice: no memoryview.
            self._retry(self._obj.write, data)
            return
        view = memoryview(data).cast("B")
        off = 0
        total = len(view)
        while off < total:
            off += self._retry(self._obj.write,
                               view[off:off + _WRITE_SLICE])

    def unwrap(self):
        """Close the TLS layer: send close_notify, wait for the peer's, and
        return the plain :class:`fibers.net.Socket`, which stays open.
        Bytes the peer sent after its close_notify are not lost: the
        Socket's next recv returns them."""
        if not _core.in_fiber():
            return _outside_fiber(self.unwrap)
        self._check()
        try:
            self._retry(self._obj.unwrap)
        except _SSLError as e:
            eof = _as_eof(e)
            if eof is not None and eof is not e:
                raise eof from None
            raise
        sock = self._sock
        rest = self._in.read()
        if rest:
            sock._unread(rest)
        self._state = _CLOSED
        self._sock = None
        _wake_all(self._waiters)
        return sock

    def shutdown(self, how):
        """Shut down one or both halves of the connection.  For SHUT_WR
        and SHUT_RDWR, close_notify is sent first (once), so the peer reads
        a clean end of stream rather than a bare EOF."""
        if self._state == _CLOSED:
            raise OSError(9, "Bad file descriptor")
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR) and \
                self._state == _OPEN and _core.in_fiber():
            try:
                self._obj.unwrap()
            except _SSLError:
                pass        # it wants the peer's close_notify: not waited for
            if self._out.pending:
                self._flush()
        self._sock.shutdown(how)

    def close(self):
        """Close the connection (the underlying Socket too).  Fibers
        blocked on it get OSError(EBADF).  If the socket can take it at
        once, a close_notify goes first, so the peer sees a clean end of
        stream (the stdlib's close sends none, and OpenSSL peers then
        report an unexpected EOF); close never waits for it."""
        if self._state == _CLOSED:
            return
        if self._io_refs > 0:
            # As the stdlib's SSLSocket: the connection stays usable
            # through the files until the last makefile() file closes
            # (urllib.request closes the socket under its response's
            # file, then reads the body from the file).
            self._close_pending = True
            return
        self._close_now()

    def _close_now(self):
        if self._state == _OPEN and not self._tx_busy and \
                self._sock is not None:
            self._close_notify()
        self._state = _CLOSED
        _wake_all(self._waiters)
        self._real_close()

    def _close_notify(self):
        # Best effort, without waiting: the socket goes non-blocking (it is
        # being closed) and takes the few bytes or not.
        try:
            self._obj.unwrap()
        except _SSLError:
            pass        # it wants the peer's close_notify: not waited for
        except ValueError:
            return
        data = self._out.read()
        if data:
            try:
                self._sock.settimeout(0)
                self._sock.send(data)
            except OSError:
                pass

    def _real_close(self):
        sock = self._sock
        if sock is not None:
            sock.close()

    def _decref_socketios(self):
        # socket.SocketIO calls this when a makefile() object closes.
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._close_pending and self._io_refs == 0:
            self._close_pending = False
            if self._state != _CLOSED:
                self._close_now()

    def makefile(self, mode="r", buffering=None, *, encoding=None,
                 errors=None, newline=None):
        """A file object over the TLS connection, as socket.makefile()
        returns; its reads and writes suspend only this fiber."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = _socket.SocketIO(self, ("r" if reading else "") +
                               ("w" if writing else ""))
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = _io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buf = _io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buf = _io.BufferedReader(raw, buffering)
        else:
            buf = _io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buf
        text = _io.TextIOWrapper(buf, _io.text_encoding(encoding), errors,
                                 newline)
        text.mode = mode
        return text

    # ---- timeouts and the socket underneath --------------------------------

    def settimeout(self, value):
        """None: wait without limit; a positive number: each wait on the
        transport raises TimeoutError('timed out') after that long.  A
        TLSSocket cannot be non-blocking: 0 raises ValueError."""
        if value is not None and not isinstance(value, bool) and \
                isinstance(value, (int, float)) and value == 0:
            raise ValueError("a TLSSocket cannot be non-blocking: use a "
                             "timeout instead")
        self._raw().settimeout(value)

    def gettimeout(self):
        return self._raw().gettimeout()

    def setblocking(self, flag):
        self.settimeout(None if flag else 0)

    def _raw(self):
        if self._sock is None:
            raise OSError(9, "Bad file descriptor")
        return self._sock

    def fileno(self):
        """The underlying socket's fd, or -1 once closed or unwrapped."""
        if self._state == _CLOSED or self._sock is None:
            return -1
        return self._sock.fileno()

    def getsockname(self):
        return self._raw().getsockname()

    def getpeername(self):
        return self._raw().getpeername()

    def setsockopt(self, *args):
        self._raw().setsockopt(*args)

    def getsockopt(self, *args):
        return self._raw().getsockopt(*args)

    @property
    def family(self):
        return self._raw().family

    @property
    def type(self):
        return self._raw().type

    @property
    def proto(self):
        return self._raw().proto

    @property
    def closed(self):
        return self._state == _CLOSED

    @property
    def socket(self):
        """The plain :class:`fibers.net.Socket` underneath (None once
        unwrapped)."""
        return self._sock

    # ---- what the handshake agreed ----------------------------------------

    @property
    def context(self):
        return self._context

    @property
    def server_side(self):
        return self._obj.server_side

    @property
    def server_hostname(self):
        return self._obj.server_hostname

    def getpeercert(self, binary_form=False):
        """The peer's certificate, as :meth:`ssl.SSLSocket.getpeercert`;
        ValueError before the handshake."""
        if self._state == _NEW:
            raise ValueError("handshake not done yet")
        return self._obj.getpeercert(binary_form)

    def selected_alpn_protocol(self):
        """The protocol ALPN chose, or None."""
        return self._obj.selected_alpn_protocol()

    def version(self):
        """'TLSv1.3' and so on; None before the handshake."""
        if self._state == _NEW:
            return None
        return self._obj.version()

    def cipher(self):
        """(name, protocol, secret bits); None before the handshake."""
        if self._state == _NEW:
            return None
        return self._obj.cipher()

    def shared_ciphers(self):
        return self._obj.shared_ciphers()

    def compression(self):
        return self._obj.compression()

    def get_channel_binding(self, cb_type="tls-unique"):
        return self._obj.get_channel_binding(cb_type)

    def pending(self):
        """Decrypted bytes ready to be read without waiting."""
        return self._obj.pending()

    @property
    def session(self):
        return self._obj.session

    @property
    def session_reused(self):
        return self._obj.session_reused

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._state == _CLOSED:
            return "<fibers.ssl.TLSSocket [closed]>"
        state = {_NEW: "handshake pending", _OPEN: self._obj.version(),
                 _BROKEN: "broken"}[self._state]
        return (f"<fibers.ssl.TLSSocket fd={self._sock.fileno()} "
                f"{'server' if self._obj.server_side else 'client'} "
                f"{state}>")


def wrap(sock, context, *, server_side=False, server_hostname=None,
         handshake_timeout=None, do_handshake_on_connect=True,
         suppress_ragged_eofs=True):
    """Wrap a connected :class:`fibers.net.Socket` in a :class:`TLSSocket`
    (which then owns it) and do the handshake.

    ``server_hostname`` names the server a client expects (for SNI and,
    with ``context.check_hostname``, verification).  ``handshake_timeout``
    seconds limit the handshake as a whole, raising :class:`fibers.Timeout`
    (None: no limit but the socket's own timeout).  With
    ``do_handshake_on_connect=False`` the handshake waits for the first
    call that needs it (or :meth:`TLSSocket.do_handshake`), in whichever
    fiber makes it.  ``suppress_ragged_eofs`` is the stdlib's: a transport
    EOF without close_notify reads as ``b''`` when true, and raises
    :class:`ssl.SSLEOFError` when false.

    If the handshake fails (or is interrupted), the socket is closed, as
    the stdlib's ``wrap_socket`` does.
    """
    tls = TLSSocket(sock, context, server_side, server_hostname,
                    handshake_timeout, suppress_ragged_eofs)
    if do_handshake_on_connect:
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
    return tls


class TLSListener:
    """A listening socket whose :meth:`accept` gives :class:`TLSSocket`
    connections; returned by ``fibers.net.listen(..., ssl=ctx)``.  The
    handshake of each connection runs later, at its first call, in the
    fiber that makes it, so a silent client does not hold up accept()."""

    def __init__(self, sock, context, handshake_timeout=None):
        self.socket = sock
        self.context = context
        self.handshake_timeout = handshake_timeout

    def accept(self):
        """Wait for a connection: ``(TLSSocket, address)``, handshake
        pending."""
        conn, addr = self.socket.accept()
        try:
            tls = wrap(conn, self.context, server_side=True,
                       handshake_timeout=self.handshake_timeout,
                       do_handshake_on_connect=False)
        except BaseException:
            conn.close()
            raise
        return tls, addr

    def close(self):
        self.socket.close()

    def fileno(self):
        return self.socket.fileno()

    def getsockname(self):
        return self.socket.getsockname()

    def settimeout(self, value):
        self.socket.settimeout(value)

    def gettimeout(self):
        return self.socket.gettimeout()

    def setsockopt(self, *args):
        self.socket.setsockopt(*args)

    def getsockopt(self, *args):
        return self.socket.getsockopt(*args)

    @property
    def family(self):
        return self.socket.family

    @property
    def closed(self):
        return self.socket.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<fibers.ssl.TLSListener {self.socket!r}>"
