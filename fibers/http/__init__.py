"""A WSGI (PEP 3333) server on fibers: one fiber per connection.

    import fibers
    from fibers import http

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, world!"]

    http.run(app, ("127.0.0.1", 8000))           # until SIGTERM / SIGINT
    http.run(app, ("0.0.0.0", 8000), workers=0)  # a process per core

or, inside a fiber, ``server = http.serve(app, address)`` and later
``server.stop(grace=10)``.  From a shell: ``fibers-http module:app --bind
127.0.0.1:8000 --workers 4`` (``python -m fibers.http`` is the same).

Design
------
The connection loop -- parse (httptools), environ, start_response, write --
is compiled (``fibers/_http.pyx``; its design note says how requests,
bodies, limits and errors are handled).  This module is the rest: the
accept loop and its connection limit, graceful stop, and the processes.

*Accepting.*  One acceptor fiber takes a slot of a
:class:`fibers.Semaphore` (``limits.max_connections``) before each
``accept()``, so at the limit new connections wait in the kernel's backlog
rather than being accepted and starved.

*Stopping.*  :meth:`Server.stop` closes the listener, closes connections
that are waiting for their next request at once, lets requests in flight
finish within ``grace`` seconds (their connections close after the
response), then kills what is left.

*Processes.*  ``run(workers=N)`` forks N workers that each bind the
address with ``SO_REUSEPORT``, so the kernel spreads connections among
them; the parent only supervises: it restarts a worker that dies, passes
SIGTERM/SIGINT on, and returns when they have all exited (SIGKILL after
``grace`` plus 5 s).  For port 0 the parent binds the port first, so every
worker gets the same one.  Across machines, put a load balancer in front.
"""
import errno as _errno
import logging as _logging
import os as _os
import signal as _signal
import socket as _socket
import sys as _sys
import time as _time

import fibers as _fibers

try:
    import httptools as _httptools  # noqa: F401  (needed by _http)
except ImportError as e:                                # pragma: no cover
    raise ImportError("fibers.http needs httptools: pip install httptools "
                      "(or fibers[http])") from e

from .._http import FileWrapper, HTTPLimitError, Limits, _Conn

__all__ = ["serve", "run", "Server", "Limits", "FileWrapper",
           "HTTPLimitError"]

_log = _logging.getLogger("fibers.http")


def _check_app(app, word):
    if not callable(app):
        raise TypeError(f"{word}() needs a WSGI app (a callable), got "
                        f"{type(app).__name__}")


def _check_limits(limits):
    if limits is None:
        return Limits()
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a fibers.http.Limits, not "
                        f"{type(limits).__name__}")
    return limits


class Server:
    """A running WSGI server, returned by :func:`serve`.

    ``address`` is the bound address (the real port when 0 was asked
    for); ``connections`` how many connections are open."""

    def __init__(self, sock, app, ssl, limits, access_log, multiprocess,
                 handshake_timeout):
        self._sock = sock
        self._app = app
        self._ssl = ssl
        self._limits = limits
        self._access = (_logging.getLogger("fibers.http.access")
                        if access_log else None)
        self._handshake_timeout = handshake_timeout
        self._slots = _fibers.Semaphore(limits.max_connections)
        self._conns = {}            # handler fiber -> its _Conn (or None)
        self._stopping = False
        self.address = sock.getsockname()
        if isinstance(self.address, tuple):
            name, port = self.address[0], str(self.address[1])
        else:
            name, port = str(self.address), ""
        self._env = {
            "SERVER_NAME": name, "SERVER_PORT": port, "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if ssl is not None else "http",
            "wsgi.errors": _sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": multiprocess, "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper, "wsgi.input_terminated": True,
        }
        self._acceptor = _fibers.spawn(self._accept_loop)
        self._acceptor.name = f"fibers.http accept {self.address!r}"

    @property
    def connections(self):
        return len(self._conns)

    def _accept_loop(self):
        while not self._stopping:
            self._slots.acquire()
            try:
                conn, addr = self._sock.accept()
            except OSError as e:
                self._slots.release()
                if self._stopping:
                    return
                # Out of fds, or a connection reset before we took it.
                _log.warning("fibers.http %r: accept failed: %s",
                             self.address, e)
                _fibers.sleep(0.01)
                continue
            if conn.family != _socket.AF_UNIX:
                conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            f = _fibers.spawn(self._serve_conn, conn, addr)
            self._conns[f] = None

    def _serve_conn(self, conn, addr):
        me = _fibers.current()
        try:
            with conn:
                sock = conn
                if self._ssl is not None:
                    sock = self._handshake(conn, addr)
                    if sock is None:
                        return
                env = self._env.copy()
                if isinstance(addr, tuple):
                    env["REMOTE_ADDR"] = addr[0]
                    env["REMOTE_PORT"] = str(addr[1])
                else:
                    env["REMOTE_ADDR"] = ""
                c = _Conn(sock, self._app, self, self._limits, env, addr,
                          self._access)
                if self._stopping:
                    c.closing = True
                self._conns[me] = c
                try:
                    c.serve()
                finally:
                    if sock is not conn:
                        sock.close()
        except OSError as e:
            _log.debug("fibers.http %r: connection from %r ended: %s",
                       self.address, addr, e)
        finally:
            self._conns.pop(me, None)
            self._slots.release()

    def _handshake(self, conn, addr):
        from .. import ssl as tls
        try:
            return tls.wrap(conn, self._ssl, server_side=True,
                            handshake_timeout=self._handshake_timeout)
        except OSError as e:
            _log.debug("fibers.http %r: TLS handshake with %r failed: %s",
                       self.address, addr, e)
            return None

    def stop(self, grace=None):
        """Stop accepting; close idle keep-alive connections at once; let
        requests in flight finish within ``grace`` seconds (None: as long
        as they take), closing each connection after its response; then
        kill what is left.  Suspends the calling fiber while it waits."""
        if grace is not None and not grace >= 0:
            raise ValueError(f"grace must be >= 0 or None, got {grace!r}")
        if self._stopping:
            return
        self._stopping = True
        self._acceptor.kill()
        self._sock.close()
        for f, c in list(self._conns.items()):
            if c is None or c.idle:
                f.kill()
            else:
                c.closing = True
        with _fibers.move_on_after(grace):
            for f in list(self._conns):
                f.join()
        for f in list(self._conns):
            f.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "stopped" if self._stopping else "serving"
        return (f"<fibers.http.Server {self.address!r} {state} "
                f"connections={len(self._conns)}>")


def serve(app, address, *, ssl=None, backlog=1024, limits=None,
          access_log=False, reuse_port=False, handshake_timeout=60.0,
          _multiprocess=False):
    """Serve the WSGI ``app`` on ``address`` (``(host, port)``, or a Unix
    socket path), a fiber per connection; returns a :class:`Server` at
    once.  Call it from a fiber.

    ``ssl`` is an :class:`ssl.SSLContext` for HTTPS (each handshake in its
    connection's fiber, within ``handshake_timeout`` seconds).  ``limits``
    is a :class:`Limits` (header size and count, body size, header and
    keep-alive timeouts, concurrent connections).  ``access_log=True``
    logs each request in the common log format to the
    ``fibers.http.access`` logger at INFO."""
    _check_app(app, "serve")
    limits = _check_limits(limits)
    if ssl is not None:
        import ssl as _ssl
        if not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, not "
                            f"{type(ssl).__name__}")
    if not isinstance(backlog, int) or isinstance(backlog, bool):
        raise TypeError(f"backlog must be an int, not "
                        f"{type(backlog).__name__}")
    sock = _fibers.net.listen(address, backlog, reuse_port)
    return Server(sock, app, ssl, limits, access_log, _multiprocess,
                  handshake_timeout)


_STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT)


def _worker(app, address, opts, grace, backend, multiprocess, ready=None,
            blocked=False):
    # One process's server, until SIGTERM or SIGINT.  A forked worker
    # starts with them blocked (``blocked``): one sent before the waiter
    # below is in place stays pending instead of being lost, and arrives
    # once it is.
    def main():
        server = serve(app, address, _multiprocess=multiprocess, **opts)
        if ready is not None:
            ready(server)
        try:
            waiter = _fibers.spawn(_fibers.wait_os_signal, *_STOP_SIGNALS)
            _fibers.yield_now()         # it waits: its handler is set
            if blocked:
                _signal.pthread_sigmask(_signal.SIG_UNBLOCK, _STOP_SIGNALS)
            got = waiter.join()
            _log.info("fibers.http %r: %s: stopping", server.address,
                      _signal.Signals(got).name)
        finally:
            server.stop(grace)
    sched = _fibers.Scheduler(backend=backend) if backend else \
        _fibers.Scheduler()
    try:
        sched.run(main)
    finally:
        sched.close()


def run(app, address, *, workers=1, ssl=None, backlog=1024, limits=None,
        access_log=False, grace=30.0, backend=None):
    """Serve ``app`` on ``address`` until SIGTERM or SIGINT, then stop
    gracefully (``grace`` seconds for requests in flight), as
    ``bjoern.run`` does.  Not from inside a fiber.

    ``workers=N`` runs N processes, each with its own scheduler, sharing
    the port through ``SO_REUSEPORT``; ``workers=0`` means one per core.
    The calling process then supervises them (a worker that dies is
    restarted) and returns once they have all stopped."""
    _check_app(app, "run")
    if not isinstance(workers, int) or isinstance(workers, bool):
        raise TypeError(f"workers must be an int, not "
                        f"{type(workers).__name__}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if _fibers.in_fiber():
        raise RuntimeError("fibers.http.run() blocks the process: call it "
                           "outside any fiber (or use serve())")
    _check_limits(limits)
    opts = dict(ssl=ssl, backlog=backlog, limits=limits,
                access_log=access_log)
    if workers == 0:
        workers = len(_os.sched_getaffinity(0)) or 1
    if workers == 1:
        return _worker(app, address, opts, grace, backend, False)
    return _Supervisor(app, address, opts, grace, backend, workers).run()


class _Supervisor:
    # The parent of run(workers=N): forks, restarts, forwards signals.
    RESTART_DELAY = 0.1         # doubled per quick death, up to 5 s
    POLL = 0.05                 # seconds between looks at the workers

    def __init__(self, app, address, opts, grace, backend, workers):
        self.app, self.opts, self.grace = app, opts, grace
        self.backend, self.n = backend, workers
        self.children = {}      # pid -> started (monotonic)
        self.stopping = None    # the signal that stops us
        self.address = address
        self._hold = None
        if isinstance(address, tuple) and address[1] == 0:
            # Every worker must bind the same port: take one now, and
            # keep it bound (not listening) so nobody else gets it.
            fam = _socket.AF_INET6 if ":" in address[0] else \
                _socket.AF_INET
            self._hold = _socket.socket(fam, _socket.SOCK_STREAM)
            self._hold.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR,
                                  1)
            self._hold.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT,
                                  1)
            self._hold.bind(address)
            self.address = self._hold.getsockname()[:2]

    def _spawn(self):
        # SIGTERM and SIGINT are blocked across the fork: the parent's
        # handler, run in the parent only once the child is in
        # self.children, passes them on; the child, which would otherwise
        # run the parent's handler (or its default) on one that came too
        # early and lose it, keeps them pending until its own waiter is in
        # place (_worker(blocked=True)).  pthread_sigmask() runs the
        # handlers of signals that came before it: once they are blocked,
        # self.stopping is final until the fork is done.
        old_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if self.stopping is not None:
                return              # nobody would tell this one to stop
            pid = _os.fork()
            if pid == 0:                # the worker
                code = 1
                try:
                    for s in _STOP_SIGNALS:
                        _signal.signal(s, _signal.SIG_DFL)
                    if self._hold is not None:
                        self._hold.close()
                    opts = dict(self.opts, reuse_port=True)
                    _worker(self.app, self.address, opts, self.grace,
                            self.backend, True, blocked=True)
                    code = 0
                except BaseException:
                    _log.exception("fibers.http worker %d failed",
                                   _os.getpid())
                finally:
                    _os._exit(code)
            self.children[pid] = _time.monotonic()
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)

    def _on_signal(self, signum, frame):
        if self.stopping is None:
            self.stopping = signum
        for pid in list(self.children):
            try:
                _os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self):
        old = {s: _signal.signal(s, self._on_signal)
               for s in (_signal.SIGTERM, _signal.SIGINT)}
        delay = self.RESTART_DELAY
        try:
            for _ in range(self.n):
                self._spawn()
            while self.children and self.stopping is None:
                # Not a blocking wait(): after a signal handler returns,
                # Python retries it (PEP 475), so a stop would be seen
                # only when a worker exits -- never, for one that does
                # not, and _drain's deadline would not apply.
                try:
                    pid, status = _os.waitpid(-1, _os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    _time.sleep(self.POLL)
                    continue
                started = self.children.pop(pid, None)
                if started is None or self.stopping is not None:
                    continue
                _log.warning("fibers.http worker %d exited (%s); "
                             "restarting", pid,
                             _os.waitstatus_to_exitcode(status))
                # A worker dying at once again and again (a bad app) is
                # restarted ever more slowly, not in a tight loop.
                if _time.monotonic() - started < 1.0:
                    _time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                else:
                    delay = self.RESTART_DELAY
                if self.stopping is None:
                    self._spawn()
            self._drain()
        finally:
            for s, h in old.items():
                _signal.signal(s, h)
            if self._hold is not None:
                self._hold.close()

    def _drain(self):
        # After the stop signal: every worker exits within grace + 5 s,
        # or is killed.
        limit = (self.grace if self.grace is not None else 30.0) + 5.0
        deadline = _time.monotonic() + limit
        while self.children:
            try:
                pid, _ = _os.waitpid(-1, _os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
                continue
            if _time.monotonic() > deadline:
                for pid in list(self.children):
                    _log.warning("fibers.http worker %d did not stop in "
                                 "%.0f s: killed", pid, limit)
                    try:
                        _os.kill(pid, _signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    _os.waitpid(pid, 0)
                    self.children.pop(pid, None)
                break
            _time.sleep(0.02)
