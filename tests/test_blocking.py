"""fibers.blocking: calls on pool threads, completions through the pump."""
import errno
import gc
import os
import socket
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

import fibers
import fibers.io
import fibers.net
from poolhelp import fresh_pool, limit, wait_until  # noqa: F401 (fixtures)


def test_twenty_sleeps_run_in_parallel_while_a_ticker_ticks(io_sched, limit):
    limit(32)
    ticks = []

    def main():
        tick = fibers.periodic(lambda: ticks.append(fibers.now()), 0.01)
        t0 = time.monotonic()
        jobs = [fibers.spawn(fibers.blocking, time.sleep, 0.2)
                for _ in range(20)]
        for j in jobs:
            j.join()
        real = time.monotonic() - t0
        tick.cancel()
        return real

    real = io_sched.run(main)
    # Serially this is 4 s; in parallel about 0.2 s.
    assert real < 2.0
    # The ticker kept its schedule meanwhile (virtual time, exact).
    assert len(ticks) >= 2
    assert ticks == [pytest.approx(0.01 * (i + 1)) for i in range(len(ticks))]


def test_result_and_arguments_come_back(io_sched):
    def main():
        return fibers.blocking(lambda a, b=0: a * 10 + b, 4, b=2)
    assert io_sched.run(main) == 42


def test_exceptions_cross_the_thread_with_their_traceback(io_sched):
    def fails():
        raise KeyError("from the pool")

    def main():
        with pytest.raises(KeyError) as info:
            fibers.blocking(fails)
        names = [e.name for e in info.traceback]
        assert "fails" in names
        assert info.value.args == ("from the pool",)
        return True
    assert io_sched.run(main)


def test_not_callable_raises_type_error():
    with pytest.raises(TypeError):
        fibers.blocking(42)


def test_bad_limits():
    with pytest.raises(ValueError):
        fibers.set_blocking_limit(0)
    with pytest.raises(TypeError):
        fibers.set_blocking_limit(2.5)


def test_outside_a_fiber_it_drives_the_scheduler():
    assert fibers.blocking(sum, [1, 2, 3]) == 6


def test_killing_a_waiting_fiber_drops_the_result(io_sched):
    release = threading.Event()
    finished = []

    def slow():
        release.wait(5)
        finished.append(True)
        return "dropped"

    def main():
        f = fibers.spawn(fibers.blocking, slow)
        fibers.yield_now()
        assert f.state == "suspended"
        f.kill()
        assert f.dead and isinstance(f.exception, fibers.FiberExit)
        assert not finished                  # the thread is still in it
        release.set()
        return True

    assert io_sched.run(main)
    # run(main) returns once main is done; the orphaned job's completion
    # comes back at the next run, which waits for it (it is pending work).
    io_sched.run()
    assert finished == [True]


def test_pool_grows_to_its_cap_queues_past_it_and_shrinks(limit, fresh_pool):
    limit(3)
    gate = threading.Event()
    sched = fibers.Scheduler()

    def main():
        jobs = [fibers.spawn(fibers.blocking, gate.wait, 5)
                for _ in range(6)]
        fibers.yield_now()
        # The three threads take a job each; three jobs wait.
        wait_until(lambda: fibers.blocking_stats()["queued"] == 3)
        stats = fibers.blocking_stats()
        gate.set()
        for j in jobs:
            j.join()
        return stats

    stats = sched.run(main)
    sched.close()
    assert stats["threads"] == 3 and stats["queued"] == 3
    assert wait_until(lambda: fibers.blocking_stats()["threads"] == 0)


def test_timeout_scope_applies(io_sched):
    release = threading.Event()

    def main():
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(3):
                fibers.blocking(release.wait, 5)
        elapsed = fibers.now() - t0
        release.set()
        return elapsed

    assert 3 <= io_sched.run(main) < 3.5


def test_getaddrinfo_and_connect_by_name(io_sched):
    def main():
        infos = fibers.net.getaddrinfo("localhost", 80,
                                       type=socket.SOCK_STREAM)
        assert any(i[4][0] in ("127.0.0.1", "::1") for i in infos)
        assert fibers.net.gethostbyname("localhost").startswith("127.")
        lst = fibers.net.listen(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        c = fibers.net.connect(("localhost", port))
        conn, _ = lst.accept()
        c.sendall(b"hi")
        got = conn.recv(10)
        for s in (c, conn, lst):
            s.close()
        return got
    assert io_sched.run(main) == b"hi"


def test_ioctl_is_cooperative(io_sched):
    r, w = os.pipe()
    try:
        os.write(w, b"12345")

        def main():
            buf = bytearray(4)
            fibers.io.ioctl(r, termios.FIONREAD, buf)
            return int.from_bytes(buf, "little")
        assert io_sched.run(main) == 5
    finally:
        os.close(r)
        os.close(w)


def test_ioctl_errors_are_oserrors(io_sched):
    fd = os.open("/dev/null", os.O_RDONLY)

    def main():
        with pytest.raises(OSError) as info:
            fibers.io.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        return info.value.errno
    try:
        assert io_sched.run(main) == errno.ENOTTY
    finally:
        os.close(fd)


def test_close_releases_the_pools_fd(backend):
    # A Scheduler is freed only by the cycle collector; what close() does
    # not release stays open until some later collection closes it.
    from iohelp import open_fds
    gc.collect()
    before = open_fds()
    s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                         backend=backend)
    assert s.run(lambda: fibers.blocking(len, "abc")) == 3
    assert open_fds() - before          # the pump's fd and the pool's
    s.close()
    # The pool thread drops its own reference to the sink just after it
    # hands the result over, in real time.
    assert wait_until(lambda: open_fds() == before), {
        f: os.readlink(f"/proc/self/fd/{f}") for f in open_fds() - before}


def test_virtual_clock_waits_its_grace_for_a_pool_job(io_sched):
    # Regression: on epoll the first wait after the pool's eventfd was
    # registered returned at once (its EPOLLOUT edge, which no record
    # wants), and an autojumping clock then jumped straight to the next
    # deadline: wait_for(timeout=60) timed out while a 10 ms job ran.
    def main():
        done = []

        def job():
            fibers.blocking(time.sleep, 0.01)
            done.append(fibers.now())

        fibers.spawn(job)
        fibers.wait_for(lambda: done, timeout=60)
        return done[0]
    assert io_sched.run(main) == 0.0


# ---- close() with a call stuck in the kernel -------------------------------

# Each case runs in a child process with a bound, so that a close() that
# never returns fails the test instead of hanging the suite.  The call is
# open() of a FIFO that never gets a writer: it blocks in the kernel for
# good, and CPython retries it if a signal interrupts it.
STUCK_CHILD = textwrap.dedent("""
    import logging, sys, time
    import fibers

    logging.basicConfig(format="%(name)s: %(message)s")
    backend, how, fifo = sys.argv[1], sys.argv[2], sys.argv[3]
    ended = []

    def stuck():
        try:
            fibers.blocking(open, fifo)
        finally:
            ended.append("stuck")

    def taken():
        st = fibers.blocking_stats()
        return st["threads"] >= 1 and st["queued"] == 0 and st["idle"] == 0

    def main():
        fibers.spawn(stuck)
        fibers.yield_now()          # stuck() hands its call to the pool
        # A pool thread takes the call (it is not just queued) before main
        # returns; the thread then blocks in open() for good.  Watched in
        # real time: the pool's threads do not run on the virtual clock.
        deadline = time.monotonic() + 20
        while not taken():
            assert time.monotonic() < deadline, "no pool thread took it"
            time.sleep(0.001)
        return "ran"

    if how == "close":
        s = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True),
                             backend=backend)
        print(s.run(main), flush=True)
        t0 = time.monotonic()
        s.close()
        print("closed", ended, round(time.monotonic() - t0), flush=True)
    else:
        # The default scheduler, closed at interpreter exit.
        print(fibers.run(main), flush=True)
        print("exiting", flush=True)
""")


@pytest.mark.parametrize("how", ["close", "exit"])
def test_close_abandons_a_call_stuck_in_open_of_a_fifo(backend, how,
                                                       tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = dict(os.environ, FIBERS_BACKEND=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", STUCK_CHILD, backend, how, str(fifo)],
            capture_output=True, text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout
        stage = "the run" if not out or "ran" not in out else how
        pytest.fail(f"{stage} never returned ({backend}, {how}): {out!r}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "ran"
    if how == "close":
        # The fiber was killed at once; close() waited its bound (about a
        # second) for the call, then gave up on it.
        assert lines[1] in ("closed ['stuck'] 1", "closed ['stuck'] 2")
    else:
        assert lines[1] == "exiting"
    assert ("fibers: close(): abandoned 1 call(s) still running on the "
            "blocking pool (close() waits at most 1.0 s for them)"
            ) in proc.stderr
