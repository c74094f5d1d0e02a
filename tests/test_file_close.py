"""Closing a File while another fiber's operation on it is still to start:
the operation must never run against a different file that got the same
fd number.  (Issue item 9: silent corruption.)"""
import os
import threading

import pytest

import fibers
import fibers.io
from fibers import _core
from iohelp import fill_holes_below, warm_up


@pytest.fixture
def busy_pool():
    """Occupies every thread of the blocking-call pool, so that a file job
    (the epoll backend's way to do file I/O) waits in the queue: the pool
    thread would otherwise call pwrite() at a moment the test cannot
    choose.  Yields a function that fills the pool (call it in a fiber);
    releasing happens through the returned gate."""
    gate = threading.Event()
    started = threading.Semaphore(0)
    old_limit = fibers.blocking_limit()

    def blocker():
        started.release()
        gate.wait(30)

    def fill():
        # Idle threads must not exit (nor new ones start) meanwhile.
        _core._set_blocking_idle(3600)
        fibers.set_blocking_limit(1)
        n = max(1, fibers.blocking_stats()["threads"])
        jobs = [fibers.spawn(fibers.blocking, blocker) for _ in range(n)]
        fibers.sleep(0)                     # they submit their calls
        for _ in range(n):
            assert started.acquire(timeout=10), "a pool thread never started"
        return jobs

    yield fill, gate
    gate.set()
    fibers.set_blocking_limit(old_limit)
    _core._set_blocking_idle(10)


@pytest.mark.parametrize("op", ["write", "pread", "pwrite"])
def test_close_with_an_operation_not_yet_started(io_sched, tmp_path,
                                                 busy_pool, op):
    fill, gate = busy_pool
    xpath, ypath = str(tmp_path / "x.bin"), str(tmp_path / "y.bin")
    with open(xpath, "wb") as f:
        f.write(b"XXXX")
    with open(ypath, "wb") as f:
        f.write(b"Y" * 16)
    out = {}

    def main():
        warm_up()
        x = fibers.io.open(xpath, "r+b")
        xfd = x.fileno()
        x_ino = os.fstat(xfd).st_ino
        blockers = fill()
        # So that xfd is the lowest free number once X is closed: the
        # number the next open() in the process would get.
        fillers = fill_holes_below(xfd)

        def issuer():          # fiber A: its operation is issued, not run
            try:
                if op == "write":
                    out["ret"] = x.write(b"DATA")
                elif op == "pwrite":
                    out["ret"] = x.pwrite(b"DATA", 0)
                else:
                    out["ret"] = x.pread(4, 0)
            except (OSError, ValueError) as e:
                out["err"] = e

        def closer():          # fiber B, in the same tick
            x.close()
            yfd = os.open(ypath, os.O_RDWR | os.O_CLOEXEC)
            out["yfd"] = yfd
            # The invariant: the number still names X while A's operation
            # can start.
            out["xfd_is_x"] = os.fstat(xfd).st_ino == x_ino
            if op == "pread":
                # Y's content, where the read would find it if it went there.
                os.pwrite(yfd, b"YYYY", 0)

        a = fibers.spawn(issuer)
        b = fibers.spawn(closer)
        b.join()
        gate.set()
        a.join()
        for j in blockers:
            j.join()
        # A is done: now the number must be released.
        try:
            os.fstat(xfd)
            out["xfd_released"] = out["yfd"] != xfd and xfd not in fillers
        except OSError:
            out["xfd_released"] = True
        os.close(out["yfd"])
        for n in fillers:
            os.close(n)

    io_sched.run(main)
    with open(ypath, "rb") as f:
        assert f.read() == b"Y" * 16, "the operation went to the wrong file"
    assert out["xfd_is_x"], "X's fd number was released while an " \
        "operation naming it could still start"
    assert out["xfd_released"], "X's fd was never closed"
    with open(xpath, "rb") as f:
        x_now = f.read()
    if "err" in out:
        # Cancelled before it started: a clear error, nothing written.
        e = out["err"]
        assert isinstance(e, ValueError) or e.errno == 9, e    # EBADF
        assert x_now == b"XXXX"
    elif op == "pread":
        assert out["ret"] == b"XXXX"
    else:
        assert out["ret"] == 4 and x_now == b"DATA"


def test_close_cancels_an_operation_no_one_has_started(io_sched, tmp_path,
                                                       busy_pool):
    # With every pool thread busy, epoll's file job waits in the queue:
    # close() takes it back at once, so the writer gets EBADF and the fd is
    # released without waiting for a pool thread.  (On io_uring the write
    # is the kernel's: cancelled or done, it is over without the pool too.)
    fill, gate = busy_pool
    xpath = str(tmp_path / "x.bin")
    out = {}

    def main():
        warm_up()
        x = fibers.io.open(xpath, "wb")
        xfd = x.fileno()
        blockers = fill()

        def issuer():
            try:
                out["ret"] = x.write(b"DATA")
            except OSError as e:
                out["err"] = e

        a = fibers.spawn(issuer)
        fibers.sleep(0)                          # A's write is issued
        x.close()
        with fibers.timeout(5):                  # the pool stays blocked
            a.join()
        try:
            os.fstat(xfd)
            out["released"] = False
        except OSError:
            out["released"] = True
        gate.set()
        for j in blockers:
            j.join()

    io_sched.run(main)
    assert out["released"]
    if "err" in out:
        assert out["err"].errno == 9                      # EBADF
        with open(xpath, "rb") as f:
            assert f.read() == b""
    else:
        assert io_sched.backend == "io_uring" and out["ret"] == 4
