"""Monkey-patching the stdlib with fibers' own classes and functions (the
first thing a gevent user tries) must work, and never crash the
interpreter: fibers binds the stdlib names it calls at import."""
import os
import subprocess
import sys
import textwrap

import pytest

import fibers


def run_child(backend, code):
    env = dict(os.environ, FIBERS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fibers.__file__)),
         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env=env, capture_output=True, text=True,
                          timeout=60)


PATCHED_SOCKETS = """
    import fcntl, os, socket
    import fibers, fibers.io, fibers.net

    socket.socket = fibers.net.Socket
    socket.socketpair = fibers.net.socketpair
    socket.getaddrinfo = fibers.net.getaddrinfo
    socket.gethostbyname = fibers.net.gethostbyname
    fcntl.ioctl = fibers.io.ioctl
    os.open = lambda *a, **k: fibers.io.open(a[0])

    def main():
        s = socket.socket()
        assert isinstance(s, fibers.net.Socket), type(s)
        s.close()
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        u.close()

        a, b = socket.socketpair()
        assert isinstance(a, fibers.net.Socket), type(a)
        a.sendall(b"pair")
        assert b.recv(4) == b"pair"
        a.close()
        b.close()

        def echo(conn, addr):
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                conn.sendall(data)
        server = fibers.net.serve(("127.0.0.1", 0), echo)
        # By name: the resolver goes through the patched getaddrinfo.
        c = fibers.net.connect(("localhost", server.address[1]))
        c.sendall(b"round trip")
        got = b""
        for _ in range(100):
            if got == b"round trip":
                break
            got += c.recv(1024)
        c.close()
        server.stop()
        assert got == b"round trip", got
        assert fibers.net.getaddrinfo("127.0.0.1", 80)
        assert fibers.net.gethostbyname("127.0.0.1") == "127.0.0.1"
        r = socket.socket()
        rf = r.makefile("rwb")
        rf.close()
        r.close()
        with fibers.io.open(os.devnull) as f:
            assert f.read(1) == b""
        print("ok")

    fibers.run(main)
"""


def test_stdlib_patched_with_fibers_sockets(backend):
    r = run_child(backend, PATCHED_SOCKETS)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.strip() == "ok"


def test_socket_socket_patched_outside_any_fiber(backend):
    # The report's two lines, as they were.
    r = run_child(backend, """
        import socket
        import fibers.net
        socket.socket = fibers.net.Socket
        socket.socket().close()
        print("ok")
    """)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.strip() == "ok"
