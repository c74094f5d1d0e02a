"""Choosing the completion backend, and waiting on foreign fds."""
import ctypes
import errno
import os
import platform
import subprocess
import sys

import pytest

import fibers
from capabilities import requires, skip

NAMES = {"io_uring", "epoll"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- helpers -----------------------------------------------------------------

def default_backend_in_subprocess(**env_overrides):
    """fibers.backend() in a fresh interpreter, FIBERS_BACKEND unset unless
    given."""
    env = dict(os.environ)
    env.pop("FIBERS_BACKEND", None)
    env.update(env_overrides)
    proc = subprocess.run(
        [sys.executable, "-c", "import fibers; print(fibers.backend())"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def io_uring_usable():
    """Probe the kernel directly, independently of fibers: io_uring_setup(4)
    must return an fd.  Returns (usable, why not)."""
    if platform.machine() not in ("x86_64", "aarch64"):
        skip("x86_64", f"io_uring_setup's syscall number is not known for "
             f"{platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = (ctypes.c_ubyte * 120)()              # struct io_uring_params
    fd = libc.syscall(ctypes.c_long(425), ctypes.c_uint(4), ctypes.byref(params))
    if fd < 0:
        err = ctypes.get_errno()
        return False, f"io_uring_setup failed: {errno.errorcode.get(err, err)}"
    os.close(fd)
    return True, None


def built_without_liburing():
    """fibers.backends() names a build without liburing (no fib_uring.c
    compiled; FIBERS_NO_LIBURING=1 or no liburing-dev at build time)."""
    why = fibers.backends()["io_uring"]
    return why is not None and "built without liburing" in why


# The kernel may allow io_uring while this build cannot use it: tests of the
# probe's kernel-side reasons, or of io_uring being chosen, need liburing.
needs_liburing = requires(
    "liburing", "fibers was built without liburing (epoll only)"
    if built_without_liburing() else None)


# ---- names -----------------------------------------------------------------------

def test_backend_is_one_of_the_two_names():
    assert fibers.backend() in NAMES


def test_backends_shape():
    b = fibers.backends()
    assert isinstance(b, dict)
    assert set(b) == NAMES
    assert b["epoll"] is None
    reason = b["io_uring"]
    assert reason is None or (isinstance(reason, str) and reason.strip())


def test_scheduler_reports_its_backend(io_sched, backend):
    assert io_sched.backend == backend
    assert io_sched.run(fibers.backend) == backend


def test_unknown_backend_raises_valueerror():
    with pytest.raises(ValueError):
        fibers.Scheduler(backend="nope")


# A child that cannot use io_uring: a seccomp filter makes io_uring_setup
# fail with EPERM, as container runtimes do, before fibers is imported.
SECCOMP_CHILD = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
# BPF: A = arch; if A != x86_64 allow; A = nr; if A == 425 return EPERM.
prog = [
    (0x20, 0, 0, 4),            # ld [4]: arch
    (0x15, 1, 0, 0xC000003E),   # jeq AUDIT_ARCH_X86_64 ? next+1
    (0x06, 0, 0, 0x7FFF0000),   # ret ALLOW
    (0x20, 0, 0, 0),            # ld [0]: syscall nr
    (0x15, 0, 1, 425),          # jeq io_uring_setup
    (0x06, 0, 0, 0x00050001),   # ret ERRNO(EPERM)
    (0x06, 0, 0, 0x7FFF0000),   # ret ALLOW
]
raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(raw)
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Prog(len(prog), ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0                          # NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()
import fibers
if sys.argv[1] == "default":
    print(fibers.backend())
    print(fibers.backends()["io_uring"])
else:
    try:
        fibers.Scheduler(backend="io_uring")
    except RuntimeError as e:
        print("RuntimeError:", e)
"""


def seccomp_child(mode, **env_overrides):
    if platform.machine() != "x86_64":
        skip("x86_64", "the seccomp filter here is written for x86_64")
    env = dict(os.environ)
    env.pop("FIBERS_BACKEND", None)
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", SECCOMP_CHILD, mode],
                          env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines(), proc.stderr


@needs_liburing
def test_falls_back_to_epoll_when_seccomp_refuses_io_uring():
    out, err = seccomp_child("default")
    assert out[0] == "epoll"
    assert "EPERM" in out[1] and "seccomp" in out[1]
    # One log line says why.
    lines = [l for l in err.splitlines() if "io_uring" in l]
    assert len(lines) == 1 and "EPERM" in lines[0], err


@needs_liburing
def test_forcing_unavailable_io_uring_raises():
    out, _ = seccomp_child("force")
    assert out and out[0].startswith("RuntimeError:")
    assert "io_uring cannot run here" in out[0] and "EPERM" in out[0]


def test_forcing_unavailable_io_uring_via_env_raises():
    env = dict(os.environ, FIBERS_BACKEND="io_uring")
    if platform.machine() != "x86_64":
        skip("x86_64", "the seccomp filter here is written for x86_64")
    proc = subprocess.run([sys.executable, "-c", SECCOMP_CHILD, "default"],
                          env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "FIBERS_BACKEND='io_uring' was asked for" in proc.stderr


# ---- the default, in a fresh interpreter -------------------------------------------

def test_env_var_forces_epoll():
    assert default_backend_in_subprocess(FIBERS_BACKEND="epoll") == "epoll"


def test_default_is_io_uring_exactly_when_the_kernel_allows_it():
    usable, why = io_uring_usable()
    if usable and built_without_liburing():
        usable, why = False, "built without liburing"
    default = default_backend_in_subprocess()
    if usable:
        assert default == "io_uring", (
            "io_uring_setup works on this machine but the default backend "
            f"is {default!r}")
        assert fibers.backends()["io_uring"] is None
    else:
        assert default == "epoll", why
        assert fibers.backends()["io_uring"] is not None


@needs_liburing
def test_env_var_forces_io_uring_when_usable():
    usable, why = io_uring_usable()
    if not usable:
        skip("io_uring", why)
    assert default_backend_in_subprocess(FIBERS_BACKEND="io_uring") == "io_uring"


# ---- wait_readable / wait_writable on a foreign fd ------------------------------------

@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def fill_pipe(w):
    """Write until the pipe is full (bounded)."""
    os.set_blocking(w, False)
    for _ in range(10_000):
        try:
            os.write(w, b"f" * 65536)
        except BlockingIOError:
            return
    raise AssertionError("pipe never filled")


def test_wait_writable_on_an_empty_pipe_returns_at_once(io_sched, pipe):
    r, w = pipe

    def main():
        t0 = fibers.now()
        assert fibers.wait_writable(w, timeout=5) is None
        return fibers.now() - t0
    assert io_sched.run(main) == 0


def test_wait_readable_times_out(io_sched, pipe):
    r, w = pipe

    def main():
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout) as info:
            fibers.wait_readable(r, timeout=5)
        assert isinstance(info.value, TimeoutError)
        return fibers.now() - t0
    elapsed = io_sched.run(main)
    assert 5 <= elapsed < 5.5


def test_wait_readable_wakes_when_written(io_sched, pipe):
    r, w = pipe

    def writer():
        fibers.sleep(1)
        os.write(w, b"x")

    def main():
        t0 = fibers.now()
        fibers.spawn(writer)
        assert fibers.wait_readable(r, timeout=5) is None
        elapsed = fibers.now() - t0
        assert os.read(r, 10) == b"x"
        return elapsed
    elapsed = io_sched.run(main)
    assert 1 <= elapsed < 1.5


def test_wait_writable_on_a_full_pipe_times_out_then_wakes(io_sched, pipe):
    r, w = pipe

    def reader():
        fibers.sleep(3)
        assert os.read(r, 4096) == b"f" * 4096     # frees room; never blocks

    def main():
        fill_pipe(w)
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            fibers.wait_writable(w, timeout=2)
        timed_out_after = fibers.now() - t0
        fibers.spawn(reader)
        t1 = fibers.now()
        assert fibers.wait_writable(w, timeout=10) is None
        return timed_out_after, fibers.now() - t1
    timed_out_after, woke_after = io_sched.run(main)
    assert 2 <= timed_out_after < 2.5
    assert 3 <= woke_after < 3.5


def test_wait_readable_inside_a_timeout_scope(io_sched, pipe):
    r, w = pipe

    def main():
        t0 = fibers.now()
        with pytest.raises(fibers.Timeout):
            with fibers.timeout(4):
                fibers.wait_readable(r)
        return fibers.now() - t0
    elapsed = io_sched.run(main)
    assert 4 <= elapsed < 4.5


def test_waiting_again_on_a_reused_fd_number(io_sched):
    # The fd a timed-out wait used is closed and its number reused by a new
    # pipe: a stale registration must not break (or satisfy) the new wait.
    def main():
        r, w = os.pipe()
        with pytest.raises(fibers.Timeout):
            fibers.wait_readable(r, timeout=1)
        os.close(r)
        os.close(w)
        r2, w2 = os.pipe()
        try:
            with pytest.raises(fibers.Timeout):
                fibers.wait_readable(r2, timeout=1)
            os.write(w2, b"y")
            t0 = fibers.now()
            assert fibers.wait_readable(r2, timeout=5) is None
            return fibers.now() - t0
        finally:
            os.close(r2)
            os.close(w2)
    assert io_sched.run(main) == 0


def test_two_fibers_wait_on_the_same_fd(io_sched, pipe):
    r, w = pipe

    def main():
        waiters = [fibers.spawn(fibers.wait_readable, r, 10) for _ in range(2)]
        fibers.yield_now()
        assert all(f.state == "suspended" for f in waiters)
        os.write(w, b"z")
        return [f.join(timeout=5) for f in waiters]
    assert io_sched.run(main) == [None, None]
