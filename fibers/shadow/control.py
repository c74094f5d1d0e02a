"""The control socket: another process reads the status and changes rules.

Design: a Unix socket in the state directory, one JSON object per line
each way, so ``socat`` or a three-line script can talk to it as well as
``fibers-shadow ctl``.  It is served by fibers.net, one fiber per
connection, on the application's thread: a command runs between two
pipeline steps and sees a consistent state, with no locks.

Requests and replies::

    {"cmd": "status"}                       -> {"ok": true, "status": {...}}
    {"cmd": "pause"} / {"cmd": "resume"}    -> {"ok": true, "paused": ...}
    {"cmd": "set", "key": "kinds", "value": "created,deleted"}
                                            -> {"ok": true, "rules": {...}}
    anything wrong                          -> {"ok": false, "error": "..."}

The commands (``fibers-shadow ctl COMMAND`` sends them):

- ``status``: the status, as ``Shadow.status`` describes it.
- ``pause``: stop shipping; events are still journaled (the journal
  grows), and ship after ``resume``.  A stop while paused leaves them in
  the journal for the next start.
- ``resume``: ship again, from the first row the store has not confirmed.
- ``set``: change one setting now; ``key`` is one of ``config.RULE_KEYS``
  (the ``[rules]`` keys, ``batch`` and ``ship_window``), ``value`` a TOML
  value or its string form (lists comma-separated).  Replies with the
  settings in force.  The change lasts until the config file is read
  again or the program restarts.
"""

from __future__ import annotations

import json
import logging
import os
import socket

from fibers import net

from .config import ConfigError

__all__ = ["serve", "request", "socket_path"]

log = logging.getLogger("fibers.shadow")

MAX_LINE = 1 << 20


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, "control.sock")


def handle(app, req) -> dict:
    """One request (a dict) -> one reply (a dict)."""
    if not isinstance(req, dict):
        return {"ok": False, "error": "a request is a JSON object"}
    cmd = req.get("cmd")
    if cmd == "status":
        return {"ok": True, "status": app.status()}
    if cmd == "pause":
        app.pause()
        return {"ok": True, "paused": True}
    if cmd == "resume":
        app.resume()
        return {"ok": True, "paused": False}
    if cmd == "set":
        try:
            return {"ok": True, "rules": app.set(str(req.get("key")),
                                                 req.get("value"))}
        except ConfigError as e:
            return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"unknown command {cmd!r}; the commands "
                                  f"are status, pause, resume, set"}


def serve(app, path: str):
    """Serve the control socket at ``path`` (a stale file left by a killed
    instance is replaced; the caller holds the state directory's lock).
    Returns the fibers.net Server."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

    def conn_handler(conn, addr):
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        reply = handle(app, json.loads(line))
                    except ValueError as e:
                        reply = {"ok": False, "error": f"bad JSON: {e}"}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                if len(buf) > MAX_LINE:
                    conn.sendall(b'{"ok": false, "error": "line too long"}\n')
                    return

    server = net.serve(path, conn_handler)
    os.chmod(path, 0o600)
    return server


def request(path: str, req: dict, timeout: float = 5.0) -> dict:
    """Send one request to a running instance and return its reply (plain
    blocking sockets: this runs in the `ctl` client, not in a fiber)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(65536)
            if not data:
                break
            buf += data
    if not buf:
        raise ConnectionError("the instance closed the connection")
    return json.loads(buf)
