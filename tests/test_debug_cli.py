"""The control socket (fibers.debug.serve) and ``python -m fibers ps|top``:
the socket's mode and its JSON validation in-process, then the commands
as a person runs them, in a subprocess, against a real program -- ``top``
in a real tmux pane, read back with capture-pane."""
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import time

import pytest

import fibers
import fibers.debug
from fibers import net

from debughelp import PROGRAM, ServerProcess
from tmuxhelp import TmuxPane, need_tmux

DEADLINE = 30.0


def ask(conn, buf, line):
    """Send one raw line on a fibers socket; return the reply (a dict)
    and what is left of the buffer."""
    conn.sendall(line)
    while b"\n" not in buf:
        data = conn.recv(65536)
        assert data, "the server closed the connection"
        buf += data
    reply, buf = buf.split(b"\n", 1)
    return json.loads(reply), buf


# ---- the socket, in-process -------------------------------------------------

def test_serve_makes_a_0600_socket_and_answers_ps(io_sched, tmp_path):
    path = str(tmp_path / "ctl.sock")
    out = {}

    def worker(q):
        q.get()

    def main():
        os.umask(0o022)
        srv = fibers.debug.serve(path)
        out["mode"] = stat.S_IMODE(os.stat(path).st_mode)
        out["sock"] = stat.S_ISSOCK(os.stat(path).st_mode)
        q = fibers.Queue()
        fibers.spawn(worker, q).name = "w"
        conn = net.connect(path)
        out["ps"], buf = ask(conn, b"", b'{"cmd": "ps"}\n')
        out["stacks"], buf = ask(conn, buf,
                                 b'{"cmd": "ps", "stacks": true}\n')
        out["top"], buf = ask(conn, buf, b'{"cmd": "top"}\n')
        out["q"] = id(q)
        conn.close()
        srv.stop()
        out["gone"] = not os.path.exists(path)

    io_sched.run(main)
    assert out["mode"] == 0o600 and out["sock"] and out["gone"]
    ps = out["ps"]
    assert ps["ok"] is True and ps["pid"] == os.getpid()
    assert ps["backend"] == io_sched.backend
    rows = {r["name"]: r for r in ps["fibers"]}
    assert rows["w"]["state"] == "suspended"
    assert rows["w"]["waiting"] == f"Queue.get 0x{out['q']:x}"
    assert rows["w"]["where"] == \
        f"test_debug_cli.py:{worker.__code__.co_firstlineno + 1} in worker"
    assert "stack" not in rows["w"]
    assert rows["fibers.debug connection"]["state"] == "running"
    assert rows[f"fibers.debug serve {path}"]["waiting"].startswith("accept")
    (w,) = [r for r in out["stacks"]["fibers"] if r["name"] == "w"]
    assert w["stack"][-1] == [__file__, worker.__code__.co_firstlineno + 1,
                              "worker", "q.get()"]
    top = out["top"]
    assert top["ok"] is True
    assert top["states"] == {"ready": 0, "running": 1, "suspended": 3}
    assert top["ticks"] >= 1 and top["ticks_per_second"] >= 0
    assert top["io_pending"] >= 1           # the accept at least
    assert top["blocking_jobs"] == 0
    assert top["blocking_threads"] == fibers.blocking_stats()["threads"]
    assert top["blocking_queue"] == 0
    assert isinstance(top["tick_max"], float) and top["tick_max"] > 0
    assert top["spawned"] >= 4
    assert [r["name"] for r in top["fibers"]] == \
        [r["name"] for r in ps["fibers"]]


BAD = [
    (b"{not json\n", "bad JSON: "),
    (b"\xff\xfe\n", "bad JSON: "),
    (b"[1, 2]\n", "a request is a JSON object"),
    (b'{"cmd": "kill"}\n', "unknown command 'kill'; the commands are ps, top"),
    (b'{"nocmd": 1}\n', "unknown command None"),
    (b'{"cmd": "ps", "all": true}\n', "ps: unknown key(s) 'all'"),
    (b'{"cmd": "ps", "stacks": 1}\n', "ps: 'stacks' must be true or false"),
    (b'{"cmd": "top", "stacks": true}\n', "top: unknown key(s) 'stacks'"),
]


def test_bad_requests_get_an_error_and_the_connection_goes_on(io_sched,
                                                             tmp_path):
    path = str(tmp_path / "ctl.sock")
    replies = []

    def main():
        srv = fibers.debug.serve(path)
        conn = net.connect(path)
        buf = b""
        for line, _ in BAD:
            reply, buf = ask(conn, buf, line)
            replies.append(reply)
            # still sane: a good request right after
            reply, buf = ask(conn, buf, b'{"cmd": "ps"}\n')
            replies.append(reply)
        # blank lines are skipped; two requests in one write both answered
        conn.sendall(b'\n\n{"cmd": "ps"}\n{"cmd": "top"}\n')
        a, buf = ask(conn, buf, b"")
        b, buf = ask(conn, buf, b"")
        replies.append((a["ok"], "states" in a, b["ok"], "states" in b))
        conn.close()
        srv.stop()

    io_sched.run(main)
    last = replies.pop()
    assert last == (True, False, True, True)
    for (line, want), bad, good in zip(BAD, replies[::2], replies[1::2]):
        assert bad["ok"] is False and bad["error"].startswith(want), line
        assert good["ok"] is True


def test_a_line_too_long_ends_the_connection(io_sched, tmp_path):
    path = str(tmp_path / "ctl.sock")
    out = {}

    def main():
        srv = fibers.debug.serve(path)
        conn = net.connect(path)
        conn.sendall(b"x" * (fibers.debug.MAX_LINE + 10))
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
        out["reply"] = json.loads(buf)
        conn.close()
        srv.stop()

    io_sched.run(main)
    assert out["reply"] == {"ok": False, "error": "line longer than "
                                                  "1048576 bytes"}


def test_serve_replaces_only_a_stale_socket(io_sched, tmp_path):
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()                       # the file stays; nobody listens
    regular = tmp_path / "file"
    regular.write_text("mine")
    out = {}

    def main():
        srv = fibers.debug.serve(stale)
        out["mode"] = stat.S_IMODE(os.stat(stale).st_mode)
        with pytest.raises(OSError, match="already listens"):
            fibers.debug.serve(stale)
        with pytest.raises(FileExistsError, match="is not a socket"):
            fibers.debug.serve(str(regular))
        with pytest.raises(TypeError):
            fibers.debug.serve(7)
        srv.stop()

    io_sched.run(main)
    assert out["mode"] == 0o600
    assert regular.read_text() == "mine"


# ---- python -m fibers ps ----------------------------------------------------

def fibers_cmd(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fibers", *args],
                          capture_output=True, text=True, timeout=timeout)


def line_of(text):
    """The line of the test program (debughelp.PROGRAM) that has text."""
    (n,) = [i for i, ln in enumerate(PROGRAM.split("\n"), 1) if text in ln]
    return n


def test_ps_prints_the_table(backend, tmp_path):
    with ServerProcess(tmp_path, backend) as srv:
        r = fibers_cmd("ps", srv.path)
        rs = fibers_cmd("ps", "--stacks", srv.path)
        pid = srv.proc.pid
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == (f"pid {pid}, {backend}, 7 fibers: 1 running, "
                        f"0 ready, 6 suspended")
    assert lines[1].split() == ["ID", "STATE", "AGE", "NAME", "WAITING",
                                "WHERE"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:]}
    assert rows["1"][1] == "suspended" and rows["1"][3] == "Fiber-1"
    assert " ".join(rows["1"][4:7]) == "os signal SIGTERM"
    assert rows["1"][7] == f"server.py:{line_of('wait_os_signal')}"
    for i, n in ((3, 0), (4, 1), (5, 2)):
        assert rows[str(i)][3] == f"worker-{n}"
        assert rows[str(i)][4] == "Queue.get"
        assert rows[str(i)][5].startswith("0x")
        assert rows[str(i)][6:] == [f"server.py:{line_of('q.get()')}",
                                    "in", "worker"]
    assert rows["6"][3] == "sleeper" and rows["6"][4:6] == ["sleep", "until"]
    assert rows["8"][1] == "running"        # 7 was the "ready" printer
    assert rs.returncode == 0
    assert f'server.py", line {line_of("q.get()")}, in worker\n' \
        "    q.get()\n" in rs.stdout


@pytest.mark.parametrize("kind", ["missing", "regular", "stale"])
def test_ps_without_a_server_is_one_line_and_exit_1(tmp_path, kind):
    path = tmp_path / "ctl.sock"
    if kind == "regular":
        path.write_text("")
    elif kind == "stale":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    r = fibers_cmd("ps", str(path))
    assert r.returncode == 1 and r.stdout == ""
    why = {"missing": "No such file or directory",
           "regular": "Connection refused",
           "stale": "Connection refused"}[kind]
    assert r.stderr == f"fibers ps: no fibers debug server at {path}: " \
                       f"{why}\n"


def test_bad_arguments_exit_2():
    r = fibers_cmd("top", "/nowhere", "-d", "0")
    assert r.returncode == 2 and "must be > 0" in r.stderr
    r = fibers_cmd("ps")
    assert r.returncode == 2
    r = fibers_cmd("frob", "x")
    assert r.returncode == 2


# ---- python -m fibers top ---------------------------------------------------

def test_top_without_a_terminal_prints_n_screens(backend, tmp_path):
    with ServerProcess(tmp_path, backend) as srv:
        r = fibers_cmd("top", srv.path, "-n", "2", "-d", "0.05")
    assert r.returncode == 0, r.stderr
    screens = r.stdout.split("fibers top  pid ")[1:]
    assert len(screens) == 2
    for sc in screens:
        assert "Fibers: 7 live, 1 running, 0 ready, 6 suspended" in sc
        assert "I/O in flight: " in sc and "Blocking pool: 0 threads" in sc
        assert "worker-2" in sc
    assert "\x1b" not in r.stdout


def test_top_exits_1_when_the_server_goes_away(backend, tmp_path):
    srv = ServerProcess(tmp_path, backend).__enter__()
    out = open(tmp_path / "top.out", "w+")
    top = subprocess.Popen([sys.executable, "-m", "fibers", "top", srv.path,
                            "-d", "0.05"], stdout=out,
                           stderr=subprocess.PIPE, text=True)
    try:
        # the first screen, then the server dies
        deadline = time.monotonic() + DEADLINE
        while "fibers top" not in (tmp_path / "top.out").read_text():
            assert time.monotonic() < deadline and top.poll() is None
            time.sleep(0.02)
        srv.proc.kill()
        rc = top.wait(DEADLINE)
        err = top.stderr.read()
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(10)
        out.close()
        top.stderr.close()
        srv.stop()
    assert rc == 1
    assert err.startswith(f"fibers top: the server at {srv.path} went away")
    assert err.count("\n") == 1


class Pane(TmuxPane):
    """`python -m fibers top` in a detached tmux session on a private
    server; a wrapper writes its exit status to a file."""

    def __init__(self, tmp_path, path):
        self.rc = tmp_path / "rc"
        cmd = " ".join(shlex.quote(a) for a in (
            sys.executable, "-m", "fibers", "top", path, "-d", "0.2"))
        script = (f"{cmd}; echo $? >{shlex.quote(str(self.rc))}; "
                  f"printf 'WRAPPER-PROMPT$ '; exec sleep 600")
        super().__init__(f"fibers-top-{os.getpid()}", "top", script, 120, 30)

    def wait_for(self, pred, what):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            screen = self.screen()
            if pred(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{what} never showed; the screen:\n"
                             f"{self.screen()}")


def test_top_in_tmux_redraws_until_q(backend, tmp_path):
    need_tmux()
    with ServerProcess(tmp_path, backend) as srv:
        pane = Pane(tmp_path, srv.path)
        try:
            # (a detached session may start its command before the
            # window has its size: top follows the size at each screen)
            first = pane.wait_for(lambda s: "worker-2" in s and
                                  "(q: quit)" in s, "the table")
            lines = first.splitlines()
            width = int(pane.tmux("display-message", "-p", "-t", "top",
                                  "#{pane_width}"))
            assert lines[0] == (f"fibers top  pid {srv.proc.pid}  {backend}"
                                f"  {srv.path}  (q: quit)")[:width]
            assert lines[1].startswith("Fibers: 7 live, 1 running, 0 ready, "
                                       "6 suspended")
            assert lines[2].startswith("Ticks: ") and "/s, longest " in \
                lines[2]
            assert lines[3] == ("Blocking pool: 0 threads, 0 queued, 0 of "
                                "this scheduler's calls out")
            # it redraws: the connection fiber's age grows between screens
            conn_age = [ln.split()[2] for ln in lines
                        if "fibers.debug connection" in ln]
            pane.wait_for(lambda s: [ln.split()[2] for ln in s.splitlines()
                                     if "fibers.debug connection" in ln]
                          != conn_age, "a new screen")
            pane.tmux("send-keys", "-t", "top", "q")
            after = pane.wait_for(lambda s: "WRAPPER-PROMPT$" in s,
                                  "the end of top")
            # top's own screen is gone (the alternate screen was left)
            assert "Fibers:" not in after
            assert pane.rc.read_text().strip() == "0"
        finally:
            pane.close()
