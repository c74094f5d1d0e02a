"""Scheduler.close() with I/O still armed: every operation is cancelled,
multishot ones included, and close() returns.

Each case runs in a child process with a bound, so that a close() that
never returns fails the test instead of hanging the suite."""
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys
    import fibers, fibers.net

    backend, case = sys.argv[1], sys.argv[2]
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    ended = []
    keep = []

    def parked(name, fn, *args):
        try:
            fn(*args)
        finally:
            ended.append(name)

    def main():
        lst = fibers.net.listen(("127.0.0.1", 0))
        keep.append(lst)
        if case == "accept":
            fibers.spawn(parked, "accept", lst.accept)
        elif case == "recv":
            cli = fibers.net.connect(lst.getsockname())
            conn, _ = lst.accept()
            # Data first, so the connection's multishot recv is surely armed
            # (on io_uring) before the reader parks for more.
            cli.sendall(b"x")
            assert conn.recv(1) == b"x"
            keep.extend([cli, conn])
            fibers.spawn(parked, "recv", conn.recv, 10)
            fibers.spawn(parked, "recv_into", conn.recv_into, bytearray(4))
        elif case == "serve":
            lst.close()
            got = []

            def handler(conn, addr):
                got.append(conn.recv(1))
                parked("handler", conn.recv, 10)

            server = fibers.net.serve(("127.0.0.1", 0), handler)
            keep.append(server)
            cli = fibers.net.connect(server._sock.getsockname())
            keep.append(cli)
            cli.sendall(b"y")
            for _ in range(1000):
                if got:
                    break
                fibers.sleep(0.01)
            assert got == [b"y"]
        fibers.sleep(1)           # everyone is parked in the pump now
        # Leave them parked: run() returns at the end of this tick.
        fibers.stop()

    s.run(main)
    print("ran", flush=True)
    s.close()
    print("closed", sorted(ended), flush=True)
""")


def run_child(backend, case):
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, backend, case],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout
        stage = "close()" if out and "ran" in out else "run(main)"
        pytest.fail(f"{stage} never returned ({backend}, {case})")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""            # nothing logged: the fibers were killed
    ran, closed = proc.stdout.strip().splitlines()
    assert ran == "ran"
    return closed


def test_close_with_a_fiber_parked_in_accept(backend):
    assert run_child(backend, "accept") == "closed ['accept']"


def test_close_with_fibers_parked_in_recv_on_an_accepted_connection(backend):
    assert run_child(backend, "recv") == "closed ['recv', 'recv_into']"


def test_close_while_serve_runs_without_stop(backend):
    assert run_child(backend, "serve") == "closed ['handler']"
