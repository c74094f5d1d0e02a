"""Seeing inside a running program: every fiber's state and stack, on
demand, on a signal, or from another process.

    import signal
    import fibers, fibers.debug

    fibers.dump_on(signal.SIGUSR1)       # kill -USR1 <pid> prints all fibers

    def main():
        fibers.debug.serve("/run/myapp/fibers.sock")
        ...                              # python -m fibers ps|top that path

Everything here reads :meth:`fibers.Scheduler.fibers`, the live view the
scheduler assembles from what it already keeps (docs/debugging.md), and
:meth:`fibers.Scheduler.stats`.  Nothing costs anything until it is asked.

Design note
===========

The control socket is a Unix socket (mode 0600: only its owner may look)
served by fibers.net on the application's own scheduler, one fiber per
connection, like fibers-shadow's: a request is answered between two
fibers' runs and sees one consistent state, with no locks.  One JSON
object per line each way, so ``socat`` can talk to it as well as
``python -m fibers``::

    {"cmd": "ps"}                  -> {"ok": true, "pid": ..., "fibers": [row, ...]}
    {"cmd": "ps", "stacks": true}  -> the same, each row with its whole stack
    {"cmd": "top"}                 -> the rows, plus the scheduler's figures
    anything else                  -> {"ok": false, "error": "..."}

A bad line gets an error reply and the connection goes on; only a line
longer than 1 MiB ends it.  A row is ``{"id", "name", "state", "age",
"waiting", "where"}`` (``where``: the innermost frame, "file:line in
func"); with ``stacks``, ``"stack": [[file, line, function, text], ...]``,
innermost last.  ``top`` adds ``ticks_per_second``, measured in real time
since the connection's previous ``top`` (or since serve() for its first).

dump() runs in the signal handler itself, not in a fiber: a program stuck
in one fiber's endless loop (the case one most wants to see) never gives
a fiber of its own a turn, but Python runs handlers between any two
bytecodes.  When the scheduler waits instead, the signal's byte on the
wakeup fd ends the wait (Scheduler._enter sets it), and the hub runs the
handler at once.
"""

import json
import os
import signal as _signal
import socket as _socket
import stat as _stat
import sys
import time

from . import _core

__all__ = ["dump", "dump_on", "format_dump", "serve", "request", "enable",
           "disable", "enabled", "format_table", "COMMANDS"]

COMMANDS = ("ps", "top")
MAX_LINE = 1 << 20


# --------------------------------------------------------------------------
# FIBERS_DEBUG
# --------------------------------------------------------------------------

def enable(slow=0.1):
    """Turn on what ``FIBERS_DEBUG=1`` turns on: fibers remember where they
    were spawned; a fiber run longer than ``slow`` seconds is logged as it
    ends; and close() (and interpreter exit) reports the fibers still alive
    with their stacks, the ones whose exceptions nobody joined, and the
    slow runs, on the ``fibers`` logger (WARNING).  Fibers spawned before
    have no spawn site."""
    _core._debug_enable(True, slow)


def disable():
    """Turn FIBERS_DEBUG's checks off again."""
    _core._debug_enable(False, _core._debug_settings()[1])


def enabled():
    """True while FIBERS_DEBUG's checks are on."""
    return _core._debug_settings()[0]


# --------------------------------------------------------------------------
# dump
# --------------------------------------------------------------------------

def format_dump(scheduler=None):
    """What :func:`dump` prints, as a string."""
    s = _core._thread_scheduler() if scheduler is None else scheduler
    import threading
    thread = threading.current_thread().name
    if s is None:
        return f"=== fibers: no scheduler in thread {thread!r} ===\n"
    infos = s.fibers()
    parts = [f"=== fibers: {len(infos)} live in {s!r}, thread {thread!r}, "
             f"pid {os.getpid()}, clock {s.now():.3f} ===\n"]
    for info in infos:
        parts.append(info.format())
        parts.append("\n")
    return "".join(parts)


def dump(file=None, scheduler=None):
    """Print every live fiber of this thread's scheduler (or of
    ``scheduler``) to ``file`` (default: ``sys.stderr``), as gevent's
    ``format_run_info`` does: for each, its number, name, state, age, what
    it waits on, and its stack."""
    text = format_dump(scheduler)
    if file is None:
        file = sys.stderr
    file.write(text)            # in one piece: see dump_on
    file.flush()


def dump_on(signum=_signal.SIGUSR1, file=None):
    """Make OS signal ``signum`` (default SIGUSR1) print :func:`dump` of
    the main thread's scheduler to ``file`` (default: ``sys.stderr`` at the
    time).  Returns the previous handler (give it to ``signal.signal`` to
    undo).  Must be called in the main thread, as ``signal.signal``.

    The dump happens in the handler, at once: in the fiber that is running
    (even one that never yields: it is listed as running, with the line
    it is at), or in the scheduler's wait, which the signal ends.  While a
    fiber waits for the same signal with :func:`fibers.wait_os_signal`,
    the signal is that fiber's, and the dump waits until it is done."""
    if not isinstance(signum, int) or isinstance(signum, bool):
        raise TypeError(f"dump_on() needs a signal number, got "
                        f"{type(signum).__name__}")
    if not 1 <= signum < _signal.NSIG:
        raise ValueError(f"signal number out of range: {signum!r}")

    def _dump_handler(signo, frame):
        try:
            dump(file)
        except Exception:
            # Raised out of a handler, it would land in whatever fiber was
            # running: a dump must never cost the program anything.
            _core._log.exception("fibers.dump_on: the dump failed")

    return _core._set_os_handler(signum, _dump_handler)


# --------------------------------------------------------------------------
# The control socket
# --------------------------------------------------------------------------

def _where(info):
    if not info.stack:
        return None
    fr = info.stack[-1]
    return f"{os.path.basename(fr.filename)}:{fr.lineno} in {fr.name}"


def _rows(infos, stacks):
    rows = []
    for info in infos:
        row = {"id": info.id, "name": info.name, "state": info.state,
               "age": round(info.age, 3), "waiting": info.waiting,
               "where": _where(info)}
        if stacks:
            row["stack"] = [[fr.filename, fr.lineno, fr.name, fr.line or ""]
                            for fr in info.stack]
        rows.append(row)
    return rows


class _Conn:
    # One client's connection: the sample its next `top` rate is taken from.
    __slots__ = ("t", "ticks")

    def __init__(self, t, ticks):
        self.t = t
        self.ticks = ticks


def _top(s, conn):
    st = s.stats()
    t = time.monotonic()
    ticks = st["ticks"]
    dt = t - conn.t
    rate = (ticks - conn.ticks) / dt if dt > 0 else 0.0
    conn.t, conn.ticks = t, ticks
    return {
        "states": dict(st["states"]),
        "ticks": ticks,
        "ticks_per_second": round(rate, 1),
        "tick_max": st["tick_max"],
        "io_pending": st["io_pending"],
        "blocking_threads": st["blocking_threads"],
        "blocking_queue": st["blocking_queue"],
        "blocking_jobs": st["blocking_jobs"],
        "spawned": st["spawned"],
    }


_KEYS = {"ps": {"cmd", "stacks"}, "top": {"cmd"}}


def _answer(s, line, conn):
    """One request line (bytes) -> one reply (a dict)."""
    try:
        req = json.loads(line)
    except ValueError as e:         # UnicodeDecodeError is one too
        return {"ok": False, "error": f"bad JSON: {e}"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "a request is a JSON object, such as "
                                      "{\"cmd\": \"ps\"}"}
    cmd = req.get("cmd")
    if cmd not in _KEYS:
        return {"ok": False, "error": f"unknown command {cmd!r}; the "
                                      f"commands are {', '.join(COMMANDS)}"}
    extra = sorted(set(req) - _KEYS[cmd])
    if extra:
        return {"ok": False, "error": f"{cmd}: unknown key(s) "
                                      f"{', '.join(map(repr, extra))}"}
    stacks = req.get("stacks", False)
    if not isinstance(stacks, bool):
        return {"ok": False, "error": f"{cmd}: 'stacks' must be true or "
                                      f"false, got {stacks!r}"}
    infos = s.fibers()
    reply = {"ok": True, "pid": os.getpid(), "now": s.now(),
             "backend": s.backend}
    if cmd == "top":
        reply.update(_top(s, conn))
    reply["fibers"] = _rows(infos, stacks)
    return reply


def _send(sock, reply):
    sock.sendall(json.dumps(reply, default=str).encode()
                 + b"\n")


def _serve_conn(s, started, sock, addr):
    _core.current().name = "fibers.debug connection"
    conn = _Conn(*started)
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                _send(sock, _answer(s, line, conn))
        if len(buf) > MAX_LINE:
            _send(sock, {"ok": False, "error": f"line longer than "
                                               f"{MAX_LINE} bytes"})
            return


def _check_path(path):
    # A socket left by a process that is gone is replaced; a live server's
    # or anything that is not a socket is not ours to remove.
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not _stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"serve(): {path!r} exists and is not a socket")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)             # stale: nobody listens there
        return
    except BlockingIOError:
        pass                        # listening, its backlog full
    finally:
        probe.close()
    raise OSError(f"serve(): a server already listens at {path!r}")


def serve(path):
    """Serve the control socket at ``path`` (a Unix socket, mode 0600) from
    this thread's scheduler, for ``python -m fibers ps|top PATH``.  Call it
    from a fiber or before :func:`fibers.run`, as
    :func:`fibers.net.serve`.  A socket file left by a process that is gone
    is replaced; a live server's, or a file that is not a socket, raises.
    Returns the :class:`fibers.net.Server`; its ``stop()`` removes the
    file."""
    from . import net
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path or path.startswith("\0"):
        raise TypeError(f"serve() needs a file system path, got {path!r}")
    _check_path(path)
    s = _core.Scheduler.current()
    started = (time.monotonic(), s.stats()["ticks"])
    # The file is made by bind(): under this umask it is 0600 from the
    # start, not for a moment readable by others.
    old = os.umask(0o177)
    try:
        server = net.serve(path, lambda sock, addr:
                           _serve_conn(s, started, sock, addr))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server._acceptor.name = f"fibers.debug serve {path}"
    return server


def request(path, req, timeout=5.0):
    """Send one request (a dict) to the control socket at ``path`` and
    return the reply (a dict).  Plain blocking sockets: for clients, in
    or out of fibers' reach."""
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        return _Client(sock).ask(req)


class _Client:
    # A connection kept open across requests (top's rate is per
    # connection).
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def ask(self, req):
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


# --------------------------------------------------------------------------
# Tables, for people
# --------------------------------------------------------------------------

def _age(sec):
    if sec < 100:
        return f"{sec:.1f}s"
    if sec < 6000:
        return f"{int(sec // 60)}m{int(sec % 60):02d}s"
    return f"{int(sec // 3600)}h{int(sec % 3600 // 60):02d}m"


def _clip(text, n):
    return text if len(text) <= n else text[:max(n - 1, 0)] + "~"


def format_table(rows, width=None):
    """The rows of a ``ps`` reply as lines of a table (``width``: clip each
    line to it)."""
    name_w = min(max([4] + [len(r["name"]) for r in rows]), 28)
    wait_w = min(max([7] + [len(r["waiting"] or "-") for r in rows]), 44)
    lines = [f"{'ID':>6} {'STATE':<9} {'AGE':>7}  {'NAME':<{name_w}}  "
             f"{'WAITING':<{wait_w}}  WHERE"]
    for r in rows:
        lines.append(
            f"{r['id']:>6} {r['state']:<9} {_age(r['age']):>7}  "
            f"{_clip(r['name'], name_w):<{name_w}}  "
            f"{_clip(r['waiting'] or '-', wait_w):<{wait_w}}  "
            f"{r['where'] or '-'}")
    if width is not None:
        lines = [_clip(line, width) for line in lines]
    return [line.rstrip() for line in lines]
