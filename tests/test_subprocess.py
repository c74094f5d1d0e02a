"""fibers.subprocess: the stdlib's subprocess API over pidfd exit waits and
non-blocking pipes, on both pump backends, with real children (sh, cat,
sleep, python -c).

Timeouts run on an autojumping VirtualClock wherever the child's own
timing does not matter: there a timeout only ever expires on a child that
is blocked for good (sleep 100, sigwait, read), because the clock jumps
after 50 ms of real time without I/O, and a loaded machine can take that
long to start a Python child.  So in those tests, waits on a child that
is making progress take no timeout: they are bounded by the child's end
and by the backend fixture's hang guard.  The tests on the real clock only
assert what holds whatever the load (a child sleeping 100 s does not
finish within a 0.2 s timeout)."""
import os
import signal
import subprocess as std
import sys

import pytest

import fibers
from capabilities import skip
from fibers import subprocess as sp
from iohelp import open_fds, warm_up

PY = sys.executable


@pytest.fixture(params=["pidfd", "waitid"])
def exit_wait(request, monkeypatch):
    """How the exit is awaited: on a pidfd (the normal way), or with
    waitid(WNOWAIT) on the blocking-call pool (the fallback where
    pidfd_open is refused, forced by FIBERS_SUBPROCESS_PIDFD=0)."""
    if request.param == "waitid":
        monkeypatch.setenv("FIBERS_SUBPROCESS_PIDFD", "0")
    elif not sp._pidfd_usable():
        skip("pidfd", "pidfd_open is refused here")
    return request.param


@pytest.fixture
def real_sched(backend):
    """A scheduler on the real clock, for tests whose child runs on it."""
    s = fibers.Scheduler(backend=backend)
    yield s
    s.close()


def reaped(pid):
    """True when `pid` is no longer our child (it was waited for).  Looks
    without reaping (WNOWAIT)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


# ---- the API is the stdlib's ---------------------------------------------------

def test_constants_and_exceptions_are_the_stdlibs():
    assert sp.PIPE is std.PIPE
    assert sp.STDOUT is std.STDOUT
    assert sp.DEVNULL is std.DEVNULL
    assert sp.TimeoutExpired is std.TimeoutExpired
    assert sp.CalledProcessError is std.CalledProcessError
    assert sp.CompletedProcess is std.CompletedProcess
    assert issubclass(sp.Popen, std.Popen)
    assert fibers.subprocess is sp
    assert "subprocess" in fibers.__all__


def test_run_captures_output_exit_code_and_check(io_sched, backend):
    def main():
        r = sp.run(["sh", "-c", "echo out; echo err >&2; exit 3"],
                   capture_output=True)
        assert (r.args, r.returncode, r.stdout, r.stderr) == (
            ["sh", "-c", "echo out; echo err >&2; exit 3"], 3,
            b"out\n", b"err\n")
        with pytest.raises(std.CalledProcessError) as e:
            sp.run(["sh", "-c", "echo out; exit 4"], stdout=sp.PIPE,
                   check=True)
        assert (e.value.returncode, e.value.output) == (4, b"out\n")
        r = sp.run(["sh", "-c", "exit 0"])
        assert (r.returncode, r.stdout, r.stderr) == (0, None, None)
        r = sp.run(["sh", "-c", "echo gone"], stdout=sp.DEVNULL)
        assert (r.returncode, r.stdout) == (0, None)
    io_sched.run(main)


def test_text_encoding_errors_and_universal_newlines(io_sched, backend):
    def main():
        out = sp.check_output(["sh", "-c", "echo out; echo err >&2"],
                              stderr=sp.STDOUT, text=True)
        assert out == "out\nerr\n"
        code = "import sys; sys.stdout.buffer.write(b'a\\r\\nb\\xff\\n')"
        assert sp.check_output([PY, "-c", code], universal_newlines=True,
                               errors="replace") == "a\nb\ufffd\n"
        assert sp.check_output([PY, "-c", code], encoding="latin-1") == \
            "a\nb\xff\n"
        with pytest.raises(UnicodeDecodeError):
            sp.check_output([PY, "-c", code], encoding="utf-8")
        assert sp.check_output([PY, "-c", code]) == b"a\r\nb\xff\n"
        r = sp.run(["cat"], input="h\u00e9llo\n", capture_output=True,
                   encoding="utf-8")
        assert r.stdout == "h\u00e9llo\n" and r.stderr == ""
    io_sched.run(main)


def test_input_and_explicit_none_input(io_sched, backend):
    def main():
        assert sp.run(["cat"], input=b"abc", stdout=sp.PIPE).stdout == b"abc"
        assert sp.run(["cat"], input=bytearray(b"xy"),
                      stdout=sp.PIPE).stdout == b"xy"
        # input=None to check_output means empty input, as the stdlib's.
        assert sp.check_output(["cat"], input=None) == b""
        assert sp.check_output(["cat"], input=None, text=True) == ""
        with pytest.raises(ValueError, match="stdin and input"):
            sp.run(["cat"], input=b"x", stdin=sp.PIPE)
        with pytest.raises(ValueError, match="capture_output"):
            sp.run(["cat"], capture_output=True, stdout=sp.PIPE)
        with pytest.raises(ValueError, match="stdout argument not allowed"):
            sp.check_output(["true"], stdout=sp.PIPE)
    io_sched.run(main)


def test_call_and_check_call(io_sched, backend, exit_wait):
    def main():
        assert sp.call(["sh", "-c", "exit 5"]) == 5
        assert sp.check_call(["true"]) == 0
        with pytest.raises(std.CalledProcessError) as e:
            sp.check_call(["sh", "-c", "exit 2"])
        assert e.value.returncode == 2
        assert e.value.cmd == ["sh", "-c", "exit 2"]
    io_sched.run(main)


def test_wrong_types_raise_typeerror_naming_the_argument(io_sched, backend):
    def main():
        with pytest.raises(TypeError, match="'input'"):
            sp.run(["cat"], input="text in binary mode")
        with pytest.raises(TypeError, match="'input'"):
            sp.run(["cat"], input=b"bytes in text mode", text=True)
        with pytest.raises(TypeError, match="'input'"):
            sp.run(["cat"], input=12)
        with pytest.raises(TypeError, match="'timeout'"):
            sp.run(["true"], timeout="1")
        with pytest.raises(TypeError, match="'timeout'"):
            sp.call(["true"], timeout=[])
        with pytest.raises(TypeError, match="bufsize"):
            sp.Popen(["true"], bufsize="big")
        with pytest.raises(TypeError):
            sp.Popen([1, 2])
        with sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE) as p:
            with pytest.raises(TypeError, match="'timeout'"):
                p.wait(timeout="soon")
            with pytest.raises(TypeError, match="'timeout'"):
                p.communicate(timeout=b"1")
            with pytest.raises(TypeError, match="'input'"):
                p.communicate("str")
            assert p.communicate(b"ok") == (b"ok", None)
        assert p.returncode == 0
    io_sched.run(main)


# ---- waiting for the exit ---------------------------------------------------------

def test_wait_timeout_is_timeoutexpired_and_the_child_runs_on(
        io_sched, backend, exit_wait):
    def main():
        p = sp.Popen(["sleep", "100"])
        assert (p._pidfd >= 0) == (exit_wait == "pidfd")
        t0 = fibers.now()
        with pytest.raises(sp.TimeoutExpired) as e:
            p.wait(timeout=5)
        assert fibers.now() - t0 >= 5
        assert e.value.timeout == 5 and e.value.cmd == ["sleep", "100"]
        assert p.poll() is None and p.returncode is None
        with pytest.raises(sp.TimeoutExpired):
            p.wait(timeout=0)
        p.kill()
        assert p.wait() == -signal.SIGKILL
        assert p.poll() == -signal.SIGKILL
        assert reaped(p.pid)
        assert p._pidfd == -1
    io_sched.run(main)


def test_killed_waiter_kills_nothing_and_the_child_can_be_waited_again(
        io_sched, backend, exit_wait):
    def main():
        p = sp.Popen(["cat"], stdin=sp.PIPE)
        waiter = fibers.spawn(p.wait)
        fibers.sleep(1)         # the waiter is parked on the exit
        assert waiter.state == "suspended"
        waiter.kill()
        assert waiter.dead and waiter.join() is None
        assert p.poll() is None             # cat still runs
        again = fibers.spawn(p.wait)
        p.stdin.close()                     # cat sees EOF and exits
        assert again.join() == 0
        assert p.returncode == 0 and reaped(p.pid)
    io_sched.run(main)


def test_many_waiters_on_many_children(io_sched, backend, exit_wait):
    # Every child blocks on its stdin until told; all waits are parked at
    # once, and each ends when its own child is released, in any order.
    def main():
        procs = [sp.Popen(["sh", "-c", f"read x; exit {i}"], stdin=sp.PIPE)
                 for i in range(20)]
        waiters = [fibers.spawn(p.wait) for p in procs]
        twice = fibers.spawn(procs[0].wait)     # two waiters on one child
        fibers.sleep(1)
        assert all(w.state == "suspended" for w in waiters)
        for p in reversed(procs):
            p.stdin.write(b"go\n")
            p.stdin.close()
        assert [w.join() for w in waiters] == list(range(20))
        assert twice.join() == 0
        assert all(reaped(p.pid) for p in procs)
        assert all(p._pidfd == -1 for p in procs)
    io_sched.run(main)


def test_poll_and_wait_agree_whoever_reaps(io_sched, backend):
    def main():
        p = sp.Popen(["sh", "-c", "exit 7"])
        # poll() (the stdlib's waitpid WNOHANG) reaps first; wait() then
        # reads the same returncode.  waitid(WNOWAIT) sees the exit
        # without reaping (it blocks this thread, until the child's exit).
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        assert p.poll() == 7
        assert p.returncode == 7 and p.wait() == 7
        q = sp.Popen(["sh", "-c", "exit 9"])
        assert q.wait() == 9 and q.poll() == 9
    io_sched.run(main)


def test_no_fd_leak(io_sched, backend, exit_wait):
    def main():
        warm_up()
        before = open_fds()
        for _ in range(5):
            sp.run(["sh", "-c", "cat; echo e >&2"], input=b"x",
                   capture_output=True)
            with sp.Popen(["sleep", "100"]) as p:
                with pytest.raises(sp.TimeoutExpired):
                    p.wait(timeout=1)
                p.kill()
        assert open_fds() == before
    io_sched.run(main)


def test_run_timeout_kills_and_reaps_the_child_real_clock(real_sched,
                                                          exit_wait):
    def main():
        with pytest.raises(sp.TimeoutExpired) as e:
            sp.run(["sh", "-c", "echo $$; exec sleep 100"], stdout=sp.PIPE,
                   timeout=0.2)
        assert e.value.timeout == 0.2
        # The pid may or may not have been read before the deadline.
        if e.value.output:
            assert reaped(int(e.value.output))
        with pytest.raises(sp.TimeoutExpired):
            sp.call(["sleep", "100"], timeout=0.2)
        with pytest.raises(sp.TimeoutExpired):
            sp.check_output(["sleep", "100"], timeout=0.2)
    real_sched.run(main)


def test_run_kills_its_child_when_the_fiber_is_killed(io_sched, backend):
    def main():
        r, w = os.pipe()
        try:
            runner = fibers.spawn(sp.run, ["sh", "-c", "echo $$; exec sleep 100"],
                                  stdout=w)
            fibers.sleep(1)
            pid = int(os.read(r, 100))      # the child is running
            assert runner.state == "suspended"
            runner.kill()
            assert runner.dead
            assert reaped(pid)              # killed and reaped by run()
        finally:
            os.close(r)
            os.close(w)
    io_sched.run(main)


# ---- pipes ------------------------------------------------------------------

def test_pipe_files_are_cooperative_with_the_stdlib_layering(io_sched,
                                                             backend):
    def main():
        with sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE,
                      text=True, bufsize=1) as p:
            assert isinstance(p.stdin, __import__("io").TextIOWrapper)
            assert p.stdin.line_buffering and p.stdin.write_through
            assert isinstance(p.stdout.buffer.raw, sp.PipeIO)
            assert not os.get_blocking(p.stdout.fileno())
            # readline() parks this fiber; the others run meanwhile.
            reader = fibers.spawn(p.stdout.readline)
            fibers.yield_now()
            ticker = fibers.spawn(lambda: [fibers.yield_now()
                                           for _ in range(100)])
            ticker.join()
            assert reader.state == "suspended"
            p.stdin.write("line one\n")     # line buffered: sent now
            assert reader.join() == "line one\n"
            assert p.communicate("rest") == ("rest", None)
        with sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE,
                      bufsize=0) as p:
            assert type(p.stdout) is sp.PipeIO
            assert p.stdin.write(b"raw") == 3
            assert p.stdout.read(3) == b"raw"
            p.stdin.close()
            assert p.stdout.read() == b""
        with sp.Popen(["sh", "-c", "head -c 300000 /dev/zero"],
                      stdout=sp.PIPE) as p:
            assert p.stdout.read() == bytes(300000)
    io_sched.run(main)


# A child that reports whether its stdin and stdout are blocking, then
# copies stdin to stdout.
BLOCKING_CAT = ("import os, sys\n"
                "sys.stderr.write(f'{os.get_blocking(0)} {os.get_blocking(1)}')\n"
                "sys.stdout.buffer.write(sys.stdin.buffer.read())\n")


def test_a_pipe_end_handed_to_another_child_is_blocking_there(io_sched,
                                                               backend):
    # Our pipe ends are non-blocking; O_NONBLOCK belongs to the open file,
    # so a child given one as stdin (a pipeline, CPython's
    # test_pipe_cloexec_real_tools) read EAGAIN as end of input, and its
    # writer died of EPIPE.  The child now gets a blocking copy.
    def main():
        warm_up()
        before = open_fds()
        p1 = sp.Popen([PY, "-c", BLOCKING_CAT], stdin=sp.PIPE,
                      stdout=sp.PIPE, stderr=sp.PIPE)
        p2 = sp.Popen([PY, "-c", BLOCKING_CAT], stdin=p1.stdout,
                      stdout=sp.PIPE, stderr=sp.PIPE)
        # Our own ends stay non-blocking: we read and write them.
        assert not os.get_blocking(p1.stdout.fileno())
        assert not os.get_blocking(p2.stdout.fileno())
        p1.stdout.close()
        data = bytes(range(256)) * 1024
        p1.stdin.write(data)        # larger than the pipe: p2 must drain
        p1.stdin.close()
        assert p2.stdout.read() == data
        assert p1.wait() == 0 and p2.wait() == 0
        flags = [p.stderr.read() for p in (p1, p2)]
        for f in (p2.stdout, p1.stderr, p2.stderr):
            f.close()
        # p2 read a blocking stdin (the copy) and wrote a blocking stdout
        # (a pipe of its own, made by the stdlib); p1's are its own pipes.
        assert flags == [b"True True", b"True True"]
        assert open_fds() == before     # the copies are closed
    io_sched.run(main)


def test_a_pipe_end_handed_to_a_child_as_stdout_is_blocking_there(io_sched,
                                                                  backend):
    def main():
        warm_up()
        before = open_fds()
        reader = sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE)
        writer = sp.Popen([PY, "-c", BLOCKING_CAT], stdin=sp.PIPE,
                          stdout=reader.stdin, stderr=sp.STDOUT)
        reader.stdin.close()
        writer.stdin.close()
        # stderr=STDOUT: the same copy serves as both.
        assert reader.stdout.read() == b"True True"
        assert writer.wait() == 0 and reader.wait() == 0
        reader.stdout.close()
        assert open_fds() == before
    io_sched.run(main)


def big_writer(n_mib, *streams):
    return (f"import sys\nb = bytes(range(256)) * 4096\n"
            f"for i in range({n_mib}):\n" +
            "".join(f"    sys.{s}.buffer.write(b)\n" for s in streams))


def test_communicate_100_mb_does_not_block_other_fibers(io_sched, backend):
    def main():
        ticks = [0]

        def ticker():
            for _ in range(10 ** 7):
                ticks[0] += 1
                fibers.yield_now()
        t = fibers.spawn(ticker)
        p = sp.Popen([PY, "-c", big_writer(100, "stdout")], stdout=sp.PIPE)
        out, err = p.communicate()
        t.kill()
        assert err is None and p.returncode == 0
        assert len(out) == 100 << 20
        assert out == (bytes(range(256)) * 4096) * 100
        # Every wait of communicate() let the ticker run.
        assert ticks[0] > 100
    io_sched.run(main)


def test_communicate_large_stdin_stdout_and_stderr_at_once(io_sched,
                                                           backend):
    # The classic deadlock: the child writes as much as it reads, and
    # neither side's pipe can hold it all.
    def main():
        data = os.urandom(1 << 20) * 24
        code = ("import sys\n"
                "while True:\n"
                "    b = sys.stdin.buffer.read1(65536)\n"
                "    if not b: break\n"
                "    sys.stdout.buffer.write(b); sys.stderr.buffer.write(b)\n")
        p = sp.Popen([PY, "-c", code], stdin=sp.PIPE, stdout=sp.PIPE,
                     stderr=sp.PIPE)
        out, err = p.communicate(data)
        assert p.returncode == 0
        assert out == data and err == data
        r = sp.run(["cat"], input=data, capture_output=True)
        assert r.stdout == data and r.stderr == b""
    io_sched.run(main)


SIGNALLED = ("import signal, sys\n"
             "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n"
             "print('first', flush=True)\n"
             "signal.sigwait([signal.SIGUSR1])\n"
             "print('second', flush=True)\n")


def test_communicate_timeout_keeps_output_and_resumes(io_sched, backend):
    def main():
        p = sp.Popen([PY, "-c", SIGNALLED], stdout=sp.PIPE)
        fibers.wait_readable(p.stdout)    # 'first' is there
        with pytest.raises(sp.TimeoutExpired) as e:
            p.communicate(timeout=5)
        assert e.value.output == b"first\n" and e.value.timeout == 5
        assert p.poll() is None
        with pytest.raises(ValueError, match="Cannot send input"):
            p.communicate(b"late")
        p.send_signal(signal.SIGUSR1)
        assert p.communicate() == (b"first\nsecond\n", None)
        assert p.returncode == 0
    io_sched.run(main)


def test_communicate_killed_fiber_keeps_output_and_child(io_sched, backend):
    def main():
        p = sp.Popen([PY, "-c", SIGNALLED], stdin=sp.PIPE, stdout=sp.PIPE,
                     stderr=sp.PIPE)
        fibers.wait_readable(p.stdout)
        c = fibers.spawn(p.communicate)
        fibers.sleep(1)
        assert c.state == "suspended"
        c.kill()
        assert c.dead and p.poll() is None
        p.send_signal(signal.SIGUSR1)
        assert p.communicate() == (b"first\nsecond\n", b"")
    io_sched.run(main)


def test_outside_any_fiber_the_calls_drive_the_scheduler(backend):
    # In a fresh interpreter, so the thread's default scheduler is its own.
    code = ("from fibers import subprocess as sp\n"
            "import fibers\n"
            "assert fibers.backend() == %r\n"
            "assert sp.check_output(['cat'], input=b'x') == b'x'\n"
            "p = sp.Popen(['sh', '-c', 'exit 3'], stdout=sp.PIPE)\n"
            "assert p.communicate() == (b'', None) and p.wait() == 3\n"
            "p = sp.Popen(['sleep', '100'])\n"
            "try:\n"
            "    p.wait(timeout=0.1)\n"
            "except sp.TimeoutExpired:\n"
            "    p.kill(); print(p.wait())\n" % backend)
    env = dict(os.environ, FIBERS_BACKEND=backend)
    out = std.run([PY, "-c", code], env=env, capture_output=True,
                  timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b"-9\n"


def test_wait_defers_to_a_thread_holding_the_waitpid_lock(io_sched, backend):
    # The stdlib's Popen reaps under _waitpid_lock (poll(), wait() in
    # another thread); while someone holds it, this wait must not reap, and
    # it finishes once the lock is free.
    def main():
        p = sp.Popen(["sh", "-c", "exit 4"])
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)   # it has exited
        assert p._waitpid_lock.acquire(False)
        try:
            with pytest.raises(sp.TimeoutExpired):
                p.wait(timeout=1)
            assert p.returncode is None and not reaped(p.pid)
        finally:
            p._waitpid_lock.release()
        assert p.wait() == 4 and reaped(p.pid)
    io_sched.run(main)
