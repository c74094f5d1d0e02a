"""run(main) and blocking words driven from outside a fiber return as soon
as their own work is done, whatever other fibers still wait for."""
import os
import subprocess
import sys
import textwrap

import pytest

import fibers
from fibers import net


def test_run_returns_when_main_returns_leaving_a_sleeper(sched, clock):
    log = []

    def sleeper():
        try:
            fibers.sleep(5)
            log.append(("woke", fibers.now()))
        finally:
            log.append("finally")

    def main():
        fibers.spawn(sleeper)
        fibers.sleep(1)
        return "done"

    assert sched.run(main) == "done"
    # The tick in which main ended did not wait for the sleeper's timer.
    assert clock.now() == 1.0
    assert log == []
    # Left behind, it goes on at the next run.
    sched.run()
    assert log == [("woke", 5.0), "finally"]


def test_close_kills_what_run_left_behind(clock):
    s = fibers.Scheduler(clock=clock)
    log = []

    def sleeper():
        try:
            fibers.sleep(3600)
        finally:
            log.append("finally")

    s.run(lambda: fibers.spawn(sleeper) and None)
    s.run(lambda: fibers.yield_now())
    assert log == [] and clock.now() == 0.0
    s.close()
    assert log == ["finally"]


def test_run_returns_with_a_server_left_running(io_sched):
    clock = io_sched.clock

    def handler(conn, addr):
        conn.sendall(conn.recv(100))

    def main():
        server = net.serve(("127.0.0.1", 0), handler)
        fibers.spawn(fibers.sleep, 1000)      # a far timer, too
        return server

    server = io_sched.run(main)
    # Neither the armed accept nor the timer held run() up: an
    # autojumping clock would have jumped to 1000.
    assert clock.now() == 0.0

    def client():
        with net.connect(server.address) as c:
            c.sendall(b"ping")
            return c.recv(100)

    # The server is still there at the next run.
    assert io_sched.run(client) == b"ping"
    assert clock.now() == 0.0
    io_sched.run(lambda: server.stop(grace=0))


def _child(code, backend, timeout=60):
    env = dict(os.environ, FIBERS_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_outside_any_fiber_serve_then_sleep_returns(backend):
    # "Scripts and the REPL just work": a blocking word called with no
    # fiber drives the thread's default scheduler until its own work is
    # done, not until the server's accept completes (it never would).
    r = _child("""
        import time
        import fibers
        from fibers import net
        server = net.serve(("127.0.0.1", 0), lambda c, a: None)
        t0 = time.monotonic()
        fibers.sleep(0.2)
        fibers.sleep(0.1)
        print("slept", round(time.monotonic() - t0, 1))
        s = net.connect(server.address)
        s.close()
        print("connected")
    """, backend)
    assert r.returncode == 0, r.stderr
    assert "slept 0.3" in r.stdout and "connected" in r.stdout


def test_interpreter_exit_kills_fibers_left_behind(backend):
    r = _child("""
        import fibers
        from fibers import net

        def sleeper():
            try:
                fibers.sleep(3600)
            finally:
                print("sleeper finally", flush=True)

        def reader(sock):
            try:
                sock.recv(10)
            finally:
                print("reader finally", flush=True)

        def main():
            a, b = net.socketpair()
            fibers.spawn(sleeper)
            fibers.spawn(reader, a)
            fibers.yield_now()
            return "main done"

        print(fibers.run(main), flush=True)
    """, backend)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "main done"
    assert sorted(lines[1:3]) == ["reader finally", "sleeper finally"]
