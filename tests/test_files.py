"""fibers.io.open: binary files read and written without blocking the
other fibers."""
import hashlib
import os
import random
import threading

import pytest

import fibers
import fibers.io
from iohelp import open_fds, warm_up


@pytest.fixture
def content():
    return random.Random(11).randbytes(300_000)


@pytest.fixture
def data_file(tmp_path, content):
    p = tmp_path / "data.bin"
    p.write_bytes(content)
    return str(p)


# ---- write / read ------------------------------------------------------------

def test_write_then_read_back(io_sched, tmp_path):
    path = str(tmp_path / "w.bin")

    def main():
        with fibers.io.open(path, "wb") as f:
            assert (f.name, f.mode, f.closed) == (path, "wb", False)
            assert f.write(b"hello") == 5
            assert f.write(b" world") == 6
        assert f.closed
        with fibers.io.open(path, "rb") as f:
            return f.read()
    assert io_sched.run(main) == b"hello world"
    with open(path, "rb") as f:
        assert f.read() == b"hello world"


def test_read_sequential_chunks_and_eof(io_sched, data_file, content):
    def main():
        with fibers.io.open(data_file) as f:   # default mode 'rb'
            assert f.mode == "rb"
            head = f.read(10)
            nxt = f.read(5)
            rest = f.read()
            return head, nxt, rest, f.read(), f.read(10)
    head, nxt, rest, at_eof, at_eof_n = io_sched.run(main)
    assert head == content[:10]
    assert nxt == content[10:15]
    assert rest == content[15:]
    assert at_eof == b"" and at_eof_n == b""


def test_read_all_of_a_large_file(io_sched, tmp_path):
    big = random.Random(5).randbytes(3 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(big)

    def main():
        with fibers.io.open(str(path), "rb") as f:
            return f.read()
    assert io_sched.run(main) == big


def test_large_write(io_sched, tmp_path):
    big = random.Random(6).randbytes(3 << 20)
    path = str(tmp_path / "big.bin")

    def main():
        with fibers.io.open(path, "wb") as f:
            return f.write(big)
    assert io_sched.run(main) == len(big)
    with open(path, "rb") as f:
        assert f.read() == big


def test_readinto(io_sched, data_file, content):
    def main():
        with fibers.io.open(data_file, "rb") as f:
            buf = bytearray(1000)
            n1 = f.readinto(buf)
            first = bytes(buf[:n1])
            f.read(len(content) - 1000 - 10)
            n2 = f.readinto(buf)
            second = bytes(buf[:n2])
            n3 = f.readinto(buf)
            return n1, first, n2, second, n3
    n1, first, n2, second, n3 = io_sched.run(main)
    assert (n1, first) == (1000, content[:1000])
    assert (n2, second) == (10, content[-10:])
    assert n3 == 0


def test_readinto_a_memoryview_slice(io_sched, data_file, content):
    def main():
        buf = bytearray(b"-" * 20)
        with fibers.io.open(data_file, "rb") as f:
            n = f.readinto(memoryview(buf)[5:15])
        return n, bytes(buf)
    n, buf = io_sched.run(main)
    assert n == 10
    assert buf == b"-" * 5 + content[:10] + b"-" * 5


# ---- pread / pwrite --------------------------------------------------------------

def test_pwrite_and_pread_at_offsets_agree_with_os(io_sched, tmp_path):
    path = str(tmp_path / "p.bin")

    def main():
        with fibers.io.open(path, "w+b") as f:
            fd = f.fileno()
            f.write(b"a" * 1000)
            assert f.pwrite(b"XYZ", 10) == 3
            assert os.pread(fd, 5, 9) == b"aXYZa"
            os.pwrite(fd, b"123", 500)
            assert f.pread(5, 499) == b"a123a"
            assert f.pread(10, 995) == b"aaaaa"    # short at EOF
            assert f.pread(10, 5000) == b""        # past EOF
            assert f.pwrite(b"end", 2000) == 3     # past EOF: a hole
            assert os.pread(fd, 3, 2000) == b"end"
            assert os.pread(fd, 4, 1000) == b"\0" * 4
            assert f.pread(8, 996) == b"aaaa\0\0\0\0"
            return os.fstat(fd).st_size
    assert io_sched.run(main) == 2003


def test_pread_matches_os_pread_everywhere(io_sched, data_file, content):
    rng = random.Random(2)
    spots = [(rng.randrange(len(content)), rng.randint(0, 70_000))
             for _ in range(50)]

    def main():
        with fibers.io.open(data_file, "rb") as f:
            fd = f.fileno()
            return [(f.pread(n, off), os.pread(fd, n, off)) for off, n in spots]
    for ours, theirs in io_sched.run(main):
        assert ours == theirs


def test_pread_and_pwrite_leave_the_position_alone(io_sched, data_file, content):
    def main():
        with fibers.io.open(data_file, "r+b") as f:
            a = f.read(4)
            f.pread(100, 1000)
            f.pwrite(b"!!", 0)
            b = f.read(4)
            return a, b
    a, b = io_sched.run(main)
    assert a == content[:4]
    assert b == content[4:8]
    with open(data_file, "rb") as f:
        assert f.read(4) == b"!!" + content[2:4]


# ---- modes ----------------------------------------------------------------------------

def test_fsync(io_sched, tmp_path):
    path = str(tmp_path / "s.bin")

    def main():
        with fibers.io.open(path, "wb") as f:
            f.write(b"durable")
            return f.fsync()
    assert io_sched.run(main) is None
    with open(path, "rb") as f:
        assert f.read() == b"durable"


def test_append_mode(io_sched, tmp_path):
    path = str(tmp_path / "a.bin")

    def main():
        with fibers.io.open(path, "wb") as f:
            f.write(b"abc")
        with fibers.io.open(path, "ab") as f:
            f.write(b"def")
        with fibers.io.open(path, "ab") as f:
            f.write(b"ghi")
        with fibers.io.open(path, "a+b") as f:
            f.write(b"jkl")
            return f.pread(100, 0)
    assert io_sched.run(main) == b"abcdefghijkl"
    with open(path, "rb") as f:
        assert f.read() == b"abcdefghijkl"


def test_wb_truncates(io_sched, data_file):
    def main():
        with fibers.io.open(data_file, "wb") as f:
            f.write(b"short")
    io_sched.run(main)
    with open(data_file, "rb") as f:
        assert f.read() == b"short"


def test_xb_refuses_an_existing_file(io_sched, data_file, tmp_path):
    fresh = str(tmp_path / "fresh.bin")

    def main():
        with pytest.raises(FileExistsError):
            fibers.io.open(data_file, "xb")
        with fibers.io.open(fresh, "xb") as f:
            f.write(b"new")
    io_sched.run(main)
    with open(fresh, "rb") as f:
        assert f.read() == b"new"


def test_open_missing_file(io_sched, tmp_path):
    def main():
        with pytest.raises(FileNotFoundError):
            fibers.io.open(str(tmp_path / "missing"), "rb")
    io_sched.run(main)


@pytest.mark.parametrize("mode", ["r", "rt", "w", "a", "x", "r+", "zz", ""])
def test_text_or_bogus_modes_raise_valueerror(io_sched, data_file, mode):
    def main():
        with pytest.raises(ValueError):
            fibers.io.open(data_file, mode)
    io_sched.run(main)


def test_closed_file_raises_valueerror(io_sched, data_file):
    def main():
        f = fibers.io.open(data_file, "r+b")
        f.close()
        f.close()                                  # idempotent
        assert f.closed
        for op in (lambda: f.read(1), lambda: f.read(),
                   lambda: f.readinto(bytearray(1)), lambda: f.pread(1, 0),
                   lambda: f.write(b"x"), lambda: f.pwrite(b"x", 0),
                   lambda: f.fsync()):
            with pytest.raises(ValueError):
                op()
    io_sched.run(main)


def test_close_releases_the_fd(io_sched, data_file):
    def main():
        f = fibers.io.open(data_file, "rb")
        fd = f.fileno()
        f.close()
        with pytest.raises(OSError):
            os.fstat(fd)
    io_sched.run(main)


# ---- other fibers keep running ---------------------------------------------------------

def test_other_fibers_run_while_a_file_is_read(io_sched, backend, tmp_path):
    # io_uring reads in the kernel; epoll, which cannot wait on files,
    # reads on the blocking-call pool.  Either way the ticker interleaves.
    big = random.Random(8).randbytes(4 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    chunk = 64 * 1024
    state = {"ticks": 0, "reading": True}
    samples = []                                   # ticks seen after each read

    def ticker():
        for _ in range(10_000_000):
            if not state["reading"]:
                return state["ticks"]
            state["ticks"] += 1
            fibers.yield_now()
        raise AssertionError("reader never finished")

    def reader():
        h = hashlib.sha256()
        try:
            with fibers.io.open(str(path), "rb") as f:
                for _ in range(len(big) // chunk + 2):
                    data = f.read(chunk)
                    if not data:
                        break
                    h.update(data)
                    samples.append(state["ticks"])
        finally:
            state["reading"] = False
        return h.digest()

    def main():
        t = fibers.spawn(ticker)
        r = fibers.spawn(reader)
        return r.join(), t.join()
    digest, ticks = io_sched.run(main)
    assert digest == hashlib.sha256(big).digest()
    assert len(samples) == len(big) // chunk
    advanced = sum(b > a for a, b in zip(samples, samples[1:]))
    # The ticker ran between most consecutive reads, not just before/after.
    assert advanced >= len(samples) // 2
    assert ticks >= advanced


# ---- argument and path errors, as the stdlib gives them -------------------------

def test_open_a_directory_raises_isadirectoryerror(io_sched, tmp_path):
    # open(2) accepts O_RDONLY on a directory; the stdlib's open() refuses
    # at once rather than at the first read.
    def main():
        warm_up()
        before = open_fds()
        with pytest.raises(IsADirectoryError) as ei:
            fibers.io.open(str(tmp_path), "rb")
        assert ei.value.filename == str(tmp_path)
        with pytest.raises(IsADirectoryError):
            fibers.io.open("/", "rb")
        with pytest.raises(IsADirectoryError):
            fibers.io.open(str(tmp_path), "r+b")
        assert open_fds() == before              # nothing leaked
    io_sched.run(main)


@pytest.mark.parametrize("call, name", [
    (lambda f: f.pread(4, "0"), "offset"),
    (lambda f: f.pread("4", 0), "size"),
    (lambda f: f.pread(4, 1.5), "offset"),
    (lambda f: f.preadinto(bytearray(4), "0"), "offset"),
    (lambda f: f.pwrite(b"x", "0"), "offset"),
    (lambda f: f.pwrite(b"x", None), "offset"),
    (lambda f: f.read("4"), "size"),
])
def test_non_integer_sizes_and_offsets_raise_typeerror(io_sched, data_file,
                                                       call, name):
    def main():
        with fibers.io.open(data_file, "r+b") as f:
            with pytest.raises(TypeError, match=f"'{name}'"):
                call(f)
            # Integers and anything with __index__ still work.
            assert f.pread(2, True) == f.pread(2, 1)
    io_sched.run(main)


def test_read_size_none_reads_everything(io_sched, data_file, content):
    def main():
        with fibers.io.open(data_file, "rb") as f:
            return f.read(None)
    assert io_sched.run(main) == content


# ---- opening does not block the other fibers -------------------------------------

def test_opening_a_fifo_blocks_only_the_opening_fiber(io_sched, tmp_path):
    # open(2) of a FIFO waits for the other end.  Done on the scheduler's
    # thread it would freeze every fiber; here the ticker keeps going.
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    ticks = []

    def ticker():
        for _ in range(1000):
            ticks.append(fibers.now())
            fibers.sleep(0.1)

    def unblock():
        # Only if open(2) ran on the scheduler's thread and froze it (the
        # bug): a writer, so that the test fails instead of hanging.
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.close(w)

    def main():
        warm_up()
        before = open_fds()
        t = fibers.spawn(ticker)
        # 1. Nobody comes: the timeout scope ends the wait, not the open.
        net = threading.Timer(20, unblock)
        net.start()
        try:
            with pytest.raises(fibers.Timeout):
                with fibers.timeout(1):
                    fibers.io.open(fifo, "rb")
        finally:
            net.cancel()
        assert fibers.now() == pytest.approx(1)
        assert len(ticks) >= 10                    # the ticker ran meanwhile
        # The abandoned open(2) is still waiting on a pool thread; a writer
        # lets it finish, and the fd it got must not leak.
        assert fibers.Scheduler.current().stats()["blocking_jobs"] == 1
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.close(w)
        for _ in range(1000):
            if not fibers.Scheduler.current().stats()["blocking_jobs"]:
                break
            fibers.sleep(0.01)
        assert fibers.Scheduler.current().stats()["blocking_jobs"] == 0
        assert open_fds() == before

        # 2. A writer arrives at t+1: the open completes then.
        start = fibers.now()
        n0 = len(ticks)

        def writer():
            fibers.sleep(1)
            with fibers.io.open(fifo, "wb") as f:
                f.write(b"through the fifo")

        wf = fibers.spawn(writer)
        with fibers.io.open(fifo, "rb") as f:
            opened_at = fibers.now()
            ticks_then = len(ticks) - n0
            data = f.read()
        wf.join()
        t.kill()
        return start, opened_at, ticks_then, data

    start, opened_at, ticks_then, data = io_sched.run(main)
    assert opened_at - start >= 1 - 1e-9           # the writer came at +1
    assert ticks_then >= 10
    assert data == b"through the fifo"


def test_open_outside_a_fiber_drives_the_scheduler(data_file, content):
    # Like the other words: the open is a fiber, and the scheduler runs
    # (here, the fiber spawned before) until it is done.
    ran = []
    fibers.spawn(ran.append, "other fiber")
    with fibers.io.open(data_file, "rb") as f:     # no fiber, no run()
        assert ran == ["other fiber"]
        assert f.read(10) == content[:10]


def test_open_errors_are_the_stdlibs(io_sched, tmp_path):
    def main():
        with pytest.raises(FileNotFoundError) as ei:
            fibers.io.open(str(tmp_path / "nope"), "rb")
        assert ei.value.filename == str(tmp_path / "nope")
        with pytest.raises(ValueError):
            fibers.io.open(str(tmp_path) + "\0x", "rb")
        with pytest.raises(TypeError):
            fibers.io.open(3, "rb")
        with fibers.io.open(tmp_path / "p.bin", "wb") as f:   # PathLike
            f.write(b"p")
        with fibers.io.open(os.fsencode(tmp_path / "p.bin"), "rb") as f:
            return f.read()
    assert io_sched.run(main) == b"p"
