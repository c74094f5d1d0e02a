"""fibers.patch(): the stdlib's blocking calls, cooperative inside fibers.

Design note.  gevent's monkey-patching makes every blocking call
cooperative everywhere, so real threads stop being threads.  We can tell a
fiber from a thread: each replacement asks :func:`fibers._core._in_fiber`
(a thread-local pointer and one field, no scheduler made) and, outside a
fiber, is the stdlib's own call, unchanged.  Inside one it suspends only
the calling fiber.

Each option names a part in ``_PARTS``: a function returning
``(owner, attr, replacement)`` triples.  :func:`patch` saves what each
attribute held and sets the replacement; :func:`unpatch` puts back exactly
the saved objects.  Replacement classes (``socket.socket``,
``subprocess.Popen``, ``select.epoll``) subclass the stdlib's, so
``class X(socket.socket)`` and ``isinstance`` checks keep working; made
inside a fiber they return fibers' cooperative objects, made elsewhere the
stdlib's own.

Waits on fds fibers does not own (select, poll, os.read) never set
O_NONBLOCK on them: the fiber waits, through the pump, on an epoll fd
watching them (or on the fd itself with :func:`fibers.wait_fd`), and the
stdlib call then finds them ready.
"""

import contextlib as _contextlib
import os as _os
import select as _select
import selectors as _selectors
import socket as _socket
import stat as _stat
import subprocess as _subprocess
import sys as _sys
import threading as _threading
import time as _time

from . import _core
from ._core import _in_fiber

__all__ = ["patch", "unpatch", "patched"]


def _original(module, name):
    # fibers may be imported after another patcher ran (gevent removes
    # select.epoll and replaces the rest): take the stdlib's object from
    # that patcher's record, so importing fibers still works and patch()
    # can refuse with a clear error instead.
    monkey = _sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original(module.__name__, name)
        except (AttributeError, KeyError, ImportError):
            pass
    return getattr(module, name)


# The stdlib's, bound at import; we never look these up where a patch may
# have put ours.
_std_sleep = _original(_time, "sleep")
_std_select = _original(_select, "select")
_std_poll = _original(_select, "poll")
_std_epoll = _original(_select, "epoll")       # fibers is Linux-only
_std_socket = _original(_socket, "socket")
_std_getaddrinfo = _original(_socket, "getaddrinfo")
_std_Popen = _original(_subprocess, "Popen")
_std_os_read = _original(_os, "read")
_std_os_write = _original(_os, "write")
_PIPE_BUF = getattr(_select, "PIPE_BUF", 512)

_lock = _threading.Lock()
_saved = []                 # [(owner, attr, original)] in patch order
_active = {}                # option -> True while patched

_OPTIONS = ("socket", "ssl", "select", "selectors", "time", "subprocess",
            "os", "threading", "queue")


# ---- time -------------------------------------------------------------------

def _sleep(secs):
    if _in_fiber():
        if isinstance(secs, bool) or not isinstance(secs, (int, float)):
            # The stdlib's error, from the stdlib.
            return _std_sleep(secs)
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        return _core.sleep(secs)
    return _std_sleep(secs)


_sleep.__doc__ = _std_sleep.__doc__
_sleep.__name__ = "sleep"


def _time_part():
    return [(_time, "sleep", _sleep)]


# ---- socket -----------------------------------------------------------------

class _StdLike(type):
    # The replacement classes answer isinstance/issubclass as the stdlib's
    # class would: a stdlib object made outside a fiber, or a fibers one,
    # is an instance of the patched name.
    def __instancecheck__(cls, obj):
        return isinstance(obj, cls.__std__) or \
            type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub):
        return issubclass(sub, cls.__std__) or \
            type.__subclasscheck__(cls, sub)


def _socket_part():
    from . import net

    class socket(_std_socket, metaclass=_StdLike):
        __std__ = _std_socket
        __doc__ = _std_socket.__doc__

        def __new__(cls, family=-1, type=-1, proto=-1, fileno=None):
            if cls is not _PatchedSocket:
                # A subclass (class X(socket.socket)) is the stdlib's.
                return _std_socket.__new__(cls, family, type, proto, fileno)
            if _in_fiber():
                # Assumes fibers.net.Socket(family, type, proto, fileno)
                # with the stdlib's -1 defaults; its type is not a
                # subclass of this class, so __init__ is not run again.
                return net.Socket(family, type, proto, fileno)
            return _std_socket(family, type, proto, fileno)

    socket.__module__ = "socket"
    socket.__qualname__ = "socket"
    global _PatchedSocket
    _PatchedSocket = socket

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if _in_fiber():
            return net.getaddrinfo(host, port, family, type, proto, flags)
        return _std_getaddrinfo(host, port, family, type, proto, flags)

    getaddrinfo.__doc__ = _std_getaddrinfo.__doc__
    # create_connection, socketpair, fromfd, create_server and accept all
    # call the module's global `socket` (and getaddrinfo) at call time.
    return [(_socket, "socket", socket), (_socket, "getaddrinfo", getaddrinfo)]


_PatchedSocket = None


# ---- ssl --------------------------------------------------------------------

def _ssl_part():
    import ssl
    from . import net
    from . import ssl as tls

    std_wrap = ssl.SSLContext.wrap_socket

    def wrap_socket(self, sock, server_side=False,
                    do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):
        if _in_fiber() and isinstance(sock, net.Socket) and \
                type(sock) is not _std_socket:
            t = tls.wrap(sock, self, server_side=server_side,
                         server_hostname=server_hostname,
                         do_handshake_on_connect=False,
                         suppress_ragged_eofs=suppress_ragged_eofs)
            if session is not None:
                t._obj.session = session
            if do_handshake_on_connect:
                try:
                    t.do_handshake()
                except BaseException:
                    t.close()
                    raise
            return t
        return std_wrap(self, sock, server_side, do_handshake_on_connect,
                        suppress_ragged_eofs, server_hostname, session)

    wrap_socket.__doc__ = std_wrap.__doc__
    return [(ssl.SSLContext, "wrap_socket", wrap_socket)]


# ---- select and selectors ---------------------------------------------------

def _fileno(f):
    if isinstance(f, int):
        return f
    return f.fileno()


def _wait_any(watch, timeout):
    """Suspend this fiber until one of ``watch`` ({fd: epoll mask}) is
    ready or ``timeout`` seconds (None: forever) pass.  An epoll fd of the
    stdlib's watches them; the pump waits on that one fd, so theirs keep
    their blocking mode."""
    ep = _std_epoll()
    try:
        for fd, mask in watch.items():
            try:
                ep.register(fd, mask)
            except PermissionError:
                return              # a regular file: always ready
        try:
            _core.wait_readable(ep.fileno(), timeout)
        except _core.Timeout:
            pass
    finally:
        ep.close()


def _select_fn(rlist, wlist, xlist, timeout=None):
    if not _in_fiber():
        return _std_select(rlist, wlist, xlist, timeout)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            return _std_select(rlist, wlist, xlist, timeout)   # its error
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    ready = _std_select(rlist, wlist, xlist, 0)
    if any(ready) or timeout == 0:
        return ready
    watch = {}
    for f in rlist:
        watch[_fileno(f)] = watch.get(_fileno(f), 0) | _select.EPOLLIN
    for f in wlist:
        watch[_fileno(f)] = watch.get(_fileno(f), 0) | _select.EPOLLOUT
    for f in xlist:
        watch[_fileno(f)] = watch.get(_fileno(f), 0) | _select.EPOLLPRI
    if not watch:
        _core.sleep(timeout if timeout is not None else float("inf"))
        return [], [], []
    _wait_any(watch, timeout)
    return _std_select(rlist, wlist, xlist, 0)


_select_fn.__doc__ = _std_select.__doc__
_select_fn.__name__ = "select"


def _ms_to_s(timeout):
    if timeout is None or timeout < 0:
        return None
    return timeout / 1000.0


class _Poll:
    """select.poll() whose poll() waits cooperatively inside a fiber."""

    __slots__ = ("_p", "_masks")

    def __init__(self):
        self._p = _std_poll()
        self._masks = {}

    def register(self, fd, eventmask=_select.POLLIN | _select.POLLPRI |
                 _select.POLLOUT):
        self._p.register(fd, eventmask)
        self._masks[_fileno(fd)] = eventmask

    def modify(self, fd, eventmask):
        self._p.modify(fd, eventmask)
        self._masks[_fileno(fd)] = eventmask

    def unregister(self, fd):
        self._p.unregister(fd)
        del self._masks[_fileno(fd)]

    def poll(self, timeout=None):
        if not _in_fiber():
            return self._p.poll(timeout)
        ready = self._p.poll(0)
        if ready or (timeout is not None and timeout == 0):
            return ready
        if timeout is not None and not isinstance(timeout, (int, float)):
            return self._p.poll(timeout)        # the stdlib's TypeError
        watch = {fd: m & (_select.POLLIN | _select.POLLOUT | _select.POLLPRI)
                 for fd, m in self._masks.items()}
        secs = _ms_to_s(timeout)
        if not watch:
            _core.sleep(secs if secs is not None else float("inf"))
            return []
        _wait_any(watch, secs)
        return self._p.poll(0)


def _poll_fn():
    return _Poll()


_poll_fn.__doc__ = _std_poll.__doc__
_poll_fn.__name__ = "poll"


class _Epoll(metaclass=_StdLike):
    """select.epoll whose poll() waits cooperatively inside a fiber.  The
    stdlib's epoll type cannot be subclassed: this wraps one."""

    __std__ = _std_epoll
    __slots__ = ("_ep",)

    def __init__(self, sizehint=-1, flags=0):
        self._ep = _std_epoll(sizehint, flags)

    @classmethod
    def fromfd(cls, fd):
        self = cls.__new__(cls)
        self._ep = _std_epoll.fromfd(fd)
        return self

    closed = property(lambda self: self._ep.closed)

    def fileno(self):
        return self._ep.fileno()

    def close(self):
        self._ep.close()

    def register(self, fd, eventmask=_select.EPOLLIN | _select.EPOLLPRI |
                 _select.EPOLLOUT):
        self._ep.register(fd, eventmask)

    def modify(self, fd, eventmask):
        self._ep.modify(fd, eventmask)

    def unregister(self, fd):
        self._ep.unregister(fd)

    def __enter__(self):
        self._ep.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._ep.__exit__(*exc_info)

    def poll(self, timeout=None, maxevents=-1):
        ep = self._ep
        if not _in_fiber():
            return ep.poll(timeout, maxevents)
        ready = ep.poll(0, maxevents)
        if ready or (timeout is not None and timeout == 0):
            return ready
        if timeout is not None and not isinstance(timeout, (int, float)):
            return ep.poll(timeout, maxevents)      # the stdlib's TypeError
        secs = None if timeout is None or timeout < 0 else timeout
        try:
            # An epoll fd is readable when any fd it watches is ready.
            _core.wait_readable(ep.fileno(), secs)
        except _core.Timeout:
            return []
        return ep.poll(0, maxevents)


_Epoll.__name__ = _Epoll.__qualname__ = "epoll"
_Epoll.__module__ = "select"
_Epoll.__doc__ = _std_epoll.__doc__


def _select_part():
    return [(_select, "select", _select_fn), (_select, "poll", _poll_fn),
            (_select, "epoll", _Epoll)]


def _selectors_part():
    # The selector classes bound select.poll / select.epoll at import; the
    # SelectSelector looks select.select up at call time (select part).
    return [(_selectors.PollSelector, "_selector_cls", _Poll),
            (_selectors.EpollSelector, "_selector_cls", _Epoll)]


# ---- subprocess -------------------------------------------------------------

def _subprocess_part():
    from . import subprocess as fsub

    class Popen(_std_Popen, metaclass=_StdLike):
        __std__ = _std_Popen
        __doc__ = _std_Popen.__doc__

        def __new__(cls, *args, **kwargs):
            if cls is not _PatchedPopen:
                return _std_Popen.__new__(cls)
            if _in_fiber():
                return fsub.Popen(*args, **kwargs)
            return _std_Popen(*args, **kwargs)

    Popen.__module__ = "subprocess"
    Popen.__qualname__ = "Popen"
    global _PatchedPopen
    _PatchedPopen = Popen
    # run, call, check_call, check_output and getoutput call the module's
    # global Popen at call time; communicate() and wait() are then
    # fibers.subprocess's, timeouts included.
    return [(_subprocess, "Popen", Popen)]


_PatchedPopen = None


# ---- os ---------------------------------------------------------------------

def _waitable(fd):
    # Pipes and sockets wait in the pump; regular files and ttys do not
    # (they are "always ready" to poll, and a read of a file does not wait
    # for a peer).  A non-blocking fd is the caller's business.
    try:
        mode = _os.fstat(fd).st_mode
    except (OSError, TypeError, ValueError, OverflowError):
        return False
    return (_stat.S_ISFIFO(mode) or _stat.S_ISSOCK(mode)) and \
        _os.get_blocking(fd)


def _os_read(fd, n):
    if _in_fiber() and _waitable(fd):
        _core.wait_fd(fd, _select.POLLIN)
    return _std_os_read(fd, n)


def _os_write(fd, data):
    if _in_fiber() and _waitable(fd):
        _core.wait_fd(fd, _select.POLLOUT)
        # Readiness promises room for PIPE_BUF bytes, not for all of them:
        # a bigger write could block the thread.  os.write may write less
        # than asked; its callers loop.
        with memoryview(data) as m:
            if m.nbytes > _PIPE_BUF:
                return _std_os_write(fd, m.cast("B")[:_PIPE_BUF])
    return _std_os_write(fd, data)


_os_read.__doc__ = _std_os_read.__doc__
_os_read.__name__ = "read"
_os_write.__doc__ = _std_os_write.__doc__
_os_write.__name__ = "write"


def _os_part():
    return [(_os, "read", _os_read), (_os, "write", _os_write)]


# ---- threading and queue (fibers/_threadpatch.py) -----------------------------

def _threading_part():
    from . import _threadpatch
    return list(_threadpatch.threading_targets())


def _queue_part():
    from . import _threadpatch
    return list(_threadpatch.queue_targets())


_PARTS = {
    "socket": _socket_part,
    "ssl": _ssl_part,
    "select": _select_part,
    "selectors": _selectors_part,
    "time": _time_part,
    "subprocess": _subprocess_part,
    "os": _os_part,
    "threading": _threading_part,
    "queue": _queue_part,
}


# ---- the calls --------------------------------------------------------------

def _check_caller():
    if _threading.current_thread() is not _threading.main_thread():
        raise RuntimeError("fibers.patch() must be called from the main "
                           "thread")
    monkey = _sys.modules.get("gevent.monkey")
    if monkey is not None:
        for name in ("socket", "select", "time", "thread", "threading",
                     "ssl", "subprocess", "os", "selectors", "queue"):
            if monkey.is_module_patched(name):
                raise RuntimeError("fibers.patch() cannot work while "
                                   f"gevent's monkey patching is active "
                                   f"({name!r} is patched by gevent)")


def _options(opts):
    out = {}
    for name in _OPTIONS:
        v = opts.pop(name, True)
        if not isinstance(v, bool):
            raise TypeError(f"fibers.patch() argument {name!r} must be "
                            f"bool, not {type(v).__name__}")
        out[name] = v
    if opts:
        raise TypeError("fibers.patch() got an unexpected keyword argument "
                        f"{next(iter(opts))!r}")
    return out


def patch(*, socket=True, ssl=True, select=True, selectors=True, time=True,
          subprocess=True, os=True, threading=True, queue=True):
    """Make the stdlib's blocking calls suspend only the calling fiber when
    made inside one; everywhere else (other threads, before
    :func:`fibers.run`, outside any fiber) they stay the stdlib's own.

    Each option (default True) names a part; False leaves it out.  Call
    from the main thread.  Idempotent: a part already patched is left as
    it is.  :func:`unpatch` restores every attribute.  See docs/patch.md
    for exactly what each part replaces."""
    opts = _options({"socket": socket, "ssl": ssl, "select": select,
                     "selectors": selectors, "time": time,
                     "subprocess": subprocess, "os": os,
                     "threading": threading, "queue": queue})
    _check_caller()
    with _lock:
        for name, want in opts.items():
            if not want or _active.get(name):
                continue
            triples = _PARTS[name]()
            for owner, attr, new in triples:
                _saved.append((owner, attr, owner.__dict__.get(attr, _MISSING)
                               if isinstance(owner, type) else
                               getattr(owner, attr, _MISSING)))
                setattr(owner, attr, new)
            _active[name] = True


_MISSING = object()


def unpatch():
    """Undo :func:`patch`: every attribute it replaced holds again the
    object it held before.  Objects made while patched keep working."""
    if _threading.current_thread() is not _threading.main_thread():
        raise RuntimeError("fibers.unpatch() must be called from the main "
                           "thread")
    with _lock:
        _restore(0)
        _active.clear()


def _restore(keep):
    # Undoes the saved replacements past the first `keep`, newest first.
    while len(_saved) > keep:
        owner, attr, old = _saved.pop()
        if old is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, old)


def is_patched(name=None):
    """True when part ``name`` (or, with no name, any part) is patched."""
    if name is None:
        return bool(_active)
    if name not in _PARTS:
        raise ValueError(f"no such part: {name!r}")
    return bool(_active.get(name))


@_contextlib.contextmanager
def patched(**opts):
    """``with fibers.patched(...):`` patches (as :func:`patch`) for the
    block, and unpatches at its end what it patched."""
    was = dict(_active)
    saved_len = len(_saved)
    patch(**opts)
    try:
        yield
    finally:
        with _lock:
            _restore(saved_len)
            _active.clear()
            _active.update(was)
