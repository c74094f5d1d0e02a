"""Cooperative networking: blocking-style sockets for fibers.

    import fibers
    from fibers import net

    def echo(conn, addr):
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)

    def main():
        server = net.serve(("127.0.0.1", 8000), echo)
        fibers.sleep(60)
        server.stop(grace=5)

    fibers.run(main)

Every call that would block suspends only the calling fiber; the
completion pump (io_uring, or epoll) resumes it.  Errors are the stdlib's.

TLS: pass ``ssl=context`` (an :class:`ssl.SSLContext`) to :func:`connect`,
:func:`listen` or :func:`serve` and the connections are
:class:`fibers.ssl.TLSSocket` objects, with the same calls.
"""

import os as _os
import socket as _socket

from . import _core
from ._core import Socket, _adopt_socket

# The stdlib's, bound at import: a program may monkey-patch the socket
# module with ours (socket.socket = Socket, socket.socketpair = socketpair,
# ...), and looked up at call time they would then call themselves.
_StdSocket = _socket.socket
_raw_socketpair = _socket._socket.socketpair
_std_getaddrinfo = _socket.getaddrinfo
_std_gethostbyname = _socket.gethostbyname

__all__ = ["Socket", "Server", "socketpair", "listen", "connect", "serve",
           "getaddrinfo", "gethostbyname"]


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    """Cooperative :func:`socket.getaddrinfo`: the resolver runs on the
    blocking-call pool while other fibers run."""
    return _core.blocking(_std_getaddrinfo, host, port, family, type,
                          proto, flags)


def gethostbyname(name):
    """Cooperative :func:`socket.gethostbyname`."""
    return _core.blocking(_std_gethostbyname, name)


def _family_of(address):
    if isinstance(address, (str, bytes)):
        return _socket.AF_UNIX
    if isinstance(address, tuple) and address and isinstance(address[0], str) \
            and ":" in address[0]:
        return _socket.AF_INET6
    return _socket.AF_INET


def socketpair(family=_socket.AF_UNIX, type=_socket.SOCK_STREAM, proto=0):
    """A pair of connected Sockets, as :func:`socket.socketpair`."""
    # As socket.socketpair does, but with the stdlib class bound above: the
    # stdlib function wraps the pair with whatever socket.socket is now.
    a, b = _raw_socketpair(family, type, proto)
    a = _StdSocket(family, type, proto, a.detach())
    b = _StdSocket(family, type, proto, b.detach())
    return _adopt_socket(a), _adopt_socket(b)


def _check_ssl(ssl, word):
    if ssl is not None:
        from . import ssl as tls    # the stdlib ssl only when TLS is used
        if not isinstance(ssl, tls._ssl.SSLContext):
            raise TypeError(f"{word}(): ssl must be an ssl.SSLContext or "
                            f"None, got {type(ssl).__name__}")
        return tls
    return None


def listen(address, backlog=1024, reuse_port=False, *, ssl=None,
           handshake_timeout=60.0):
    """A listening stream Socket bound to ``address``.

    The family follows the address: a str (or bytes) path is a Unix socket,
    a host with ':' is IPv6, anything else IPv4.  SO_REUSEADDR is set for
    IP sockets; ``reuse_port=True`` also sets SO_REUSEPORT, so several
    processes can share the port.

    With ``ssl=context`` it returns a :class:`fibers.ssl.TLSListener`,
    whose ``accept()`` gives :class:`fibers.ssl.TLSSocket` connections;
    each one's handshake runs at its first call, in the fiber that makes
    it, limited to ``handshake_timeout`` seconds (None: no limit)."""
    tls = _check_ssl(ssl, "listen")
    family = _family_of(address)
    sock = Socket(family, _socket.SOCK_STREAM)
    try:
        if family != _socket.AF_UNIX:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    if tls is not None:
        return tls.TLSListener(sock, ssl, handshake_timeout)
    return sock


def connect(address, timeout=None, *, ssl=None, server_hostname=None,
            handshake_timeout=None):
    """A stream Socket connected to ``address`` (a Unix path, or a
    ``(host, port)`` pair).  ``timeout`` limits the connect, raising
    :class:`fibers.Timeout` as every ``timeout=`` argument does, and stays
    on the socket for its later calls, as with
    :func:`socket.create_connection`.

    With ``ssl=context`` the TLS handshake follows and a
    :class:`fibers.ssl.TLSSocket` is returned.  ``server_hostname`` (for
    SNI and certificate checks) defaults to the host connected to;
    ``handshake_timeout`` (default: ``timeout``) limits the handshake."""
    tls = _check_ssl(ssl, "connect")
    if tls is not None and server_hostname is None and \
            isinstance(address, tuple) and address and \
            isinstance(address[0], str):
        server_hostname = address[0]
    sock = Socket(_family_of(address), _socket.SOCK_STREAM)
    try:
        if timeout is not None:
            sock.settimeout(timeout)
        if sock.family != _socket.AF_UNIX:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        try:
            sock.connect(address)
        except TimeoutError as e:
            if isinstance(e, _core.Timeout):
                raise           # an enclosing timeout scope's: not ours
            # The socket's own 'timed out', which is this argument's.
            raise _core.Timeout(f"connect to {address!r} timed out after "
                                f"{timeout} s") from None
    except BaseException:
        sock.close()
        raise
    if tls is not None:
        try:
            return tls.wrap(sock, ssl, server_hostname=server_hostname,
                            handshake_timeout=(timeout
                                               if handshake_timeout is None
                                               else handshake_timeout))
        except TimeoutError as e:
            if isinstance(e, _core.Timeout):
                raise
            # The socket's own timeout (this argument's) in the handshake.
            raise _core.Timeout(f"TLS handshake with {address!r} timed out "
                                f"after {timeout} s") from None
    return sock


class Server:
    """A running server, returned by :func:`serve`.

    ``address`` is the bound address (with the real port when 0 was
    asked for); ``connections`` is how many handlers are running."""

    def __init__(self, sock, handler, ssl=None, handshake_timeout=None):
        self._sock = sock
        self._handler = handler
        self._ssl = ssl
        self._handshake_timeout = handshake_timeout
        self._handlers = set()
        self._stopping = False
        self._unix_file = None      # (path, st_dev, st_ino) to remove
        self.address = sock.getsockname()
        self._acceptor = _core.spawn(self._accept_loop)
        self._acceptor.name = f"serve {self.address!r}"

    @property
    def connections(self):
        return len(self._handlers)

    def _accept_loop(self):
        log = _core._log
        while not self._stopping:
            try:
                conn, addr = self._sock.accept()
            except OSError as e:
                if self._stopping:
                    return
                # Out of fds, or a connection reset before we took it:
                # keep serving the others.
                log.warning("serve %r: accept failed: %s", self.address, e)
                _core.sleep(0.01)
                continue
            if conn.family != _socket.AF_UNIX:
                conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            f = _core.spawn(self._run_handler, conn, addr)
            self._handlers.add(f)

    def _run_handler(self, conn, addr):
        try:
            with conn:
                if self._ssl is None:
                    self._handler(conn, addr)
                else:
                    tls = self._handshake(conn, addr)
                    if tls is not None:
                        with tls:       # close_notify when it can
                            self._handler(tls, addr)
        except (ConnectionResetError, BrokenPipeError) as e:
            # The client went away: the end of this connection, not an
            # error of the server's (as in gevent's StreamServer).
            _core._log.debug("serve %r: connection from %r ended: %s",
                             self.address, addr, e)
        finally:
            self._handlers.discard(_core.current())

    def _handshake(self, conn, addr):
        # In the handler's own fiber: a client that never speaks TLS costs
        # only this fiber, for handshake_timeout at most.
        from . import ssl as tls
        try:
            return tls.wrap(conn, self._ssl, server_side=True,
                            handshake_timeout=self._handshake_timeout)
        except OSError as e:
            # SSLError, a timeout, a reset: this client's failure only.
            _core._log.debug("serve %r: TLS handshake with %r failed: %s",
                             self.address, addr, e)
            return None

    def stop(self, grace=None):
        """Stop accepting, wait up to ``grace`` seconds for the running
        handlers to finish (None: as long as they take), then kill the rest.
        Suspends the calling fiber while it waits.  The Unix socket file
        that :func:`serve` created, if any, is removed."""
        if self._stopping:
            return
        self._stopping = True
        self._sock.close()
        self._remove_unix_file()
        self._acceptor.join()
        if grace is None:
            for f in list(self._handlers):
                f.join()
        else:
            with _core.move_on_after(grace):
                for f in list(self._handlers):
                    f.join()
        for f in list(self._handlers):
            f.kill()
        self._handlers.clear()

    def _remove_unix_file(self):
        # Only the file serve() created by binding, and only if it is still
        # that file (not one someone else has put at the path since).
        if self._unix_file is None:
            return
        path, dev, ino = self._unix_file
        self._unix_file = None
        try:
            st = _os.stat(path)
            if (st.st_dev, st.st_ino) == (dev, ino):
                _os.unlink(path)
        except OSError:
            pass                # already gone

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "stopped" if self._stopping else "serving"
        return (f"<fibers.net.Server {self.address!r} {state} "
                f"connections={len(self._handlers)}>")


def serve(address, handler, *, reuse_port=False, backlog=1024, ssl=None,
          handshake_timeout=60.0):
    """Listen on ``address`` and run ``handler(conn, addr)`` in a new fiber
    for each connection; ``conn`` is closed when the handler returns.
    Returns a :class:`Server` at once (call it from a fiber, or before
    :func:`fibers.run`).

    A handler that ends with :class:`ConnectionResetError` or
    :class:`BrokenPipeError` (the client went away) ends its connection
    quietly, with a debug line on the ``fibers`` logger; other exceptions
    are logged as errors.  For a Unix socket path, :meth:`Server.stop`
    removes the socket file that serve() created.

    With ``ssl=context`` each connection's TLS handshake runs in its
    handler's fiber, limited to ``handshake_timeout`` seconds (None: no
    limit), and ``conn`` is a :class:`fibers.ssl.TLSSocket`.  A failed
    handshake ends that connection with a debug line, and the handler is
    not called."""
    if not callable(handler):
        raise TypeError(f"serve() needs a callable handler, got "
                        f"{type(handler).__name__}")
    _check_ssl(ssl, "serve")
    sock = listen(address, backlog, reuse_port)
    unix_file = None
    if sock.family == _socket.AF_UNIX and isinstance(address, (str, bytes)) \
            and address and address[:1] not in ("\0", b"\0"):
        # bind() made this file (it fails if the path exists): stop()
        # removes it.  Abstract addresses (a leading NUL) have no file.
        try:
            st = _os.stat(address)
            unix_file = (address, st.st_dev, st.st_ino)
        except OSError:
            pass
    server = Server(sock, handler, ssl, handshake_timeout)
    server._unix_file = unix_file
    return server
