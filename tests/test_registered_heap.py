"""Registered heaps: on io_uring, file reads and writes with blobs of a
Heap(register=True) use the fixed-buffer operations; on epoll the same
calls work through the pool.  Either way the bytes are the file's."""
import gc
import os

import pytest

import fibers
import fibers.io


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    payload = os.urandom(1 << 20)
    path.write_bytes(payload)
    return str(path), payload


def test_preadinto_a_registered_blob_matches_os_pread(io_sched, backend,
                                                     data_file):
    path, payload = data_file
    heap = fibers.Heap(max_size=1 << 20, register=True)
    blob = heap.alloc(65536)

    def main():
        got = []
        with fibers.io.open(path, "rb") as f:
            for offset in (0, 4096, 300_000, len(payload) - 1000):
                n = f.preadinto(blob, offset)
                got.append((offset, bytes(memoryview(blob)[:n])))
        return got

    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, data in io_sched.run(main):
            assert data == os.pread(fd, 65536, offset)
    finally:
        os.close(fd)
    fixed = io_sched.stats()["fixed_ops"]
    assert fixed == (4 if backend == "io_uring" else 0)


def test_pwrite_and_readinto_with_registered_blobs(io_sched, backend,
                                                   tmp_path):
    heap = fibers.Heap(max_size=1 << 20, register=True)
    out = heap.alloc(5000)
    back = heap.alloc(5000)
    memoryview(out)[:] = os.urandom(5000)
    path = str(tmp_path / "w.bin")

    def main():
        with fibers.io.open(path, "w+b") as f:
            assert f.pwrite(out, 123) == 5000
            f.seek(123)
            assert f.readinto(back) == 5000
    io_sched.run(main)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 5000, 123) == bytes(out)
    finally:
        os.close(fd)
    assert bytes(back) == bytes(out)
    assert io_sched.stats()["fixed_ops"] == (2 if backend == "io_uring"
                                             else 0)


def test_an_unregistered_heap_uses_plain_operations(io_sched, data_file):
    path, payload = data_file
    blob = fibers.Heap().alloc(100)

    def main():
        with fibers.io.open(path, "rb") as f:
            return f.preadinto(blob, 10)
    assert io_sched.run(main) == 100
    assert bytes(blob) == payload[10:110]
    assert io_sched.stats()["fixed_ops"] == 0


def test_a_new_heap_after_the_old_one_died_reads_correctly(io_sched,
                                                           data_file):
    # The first heap's registration must not serve the second heap, even
    # if its memory lands at the same address.
    path, payload = data_file

    def read_with_fresh_heap(offset):
        heap = fibers.Heap(max_size=1 << 20, register=True)
        blob = heap.alloc(4096)
        with fibers.io.open(path, "rb") as f:
            n = f.preadinto(blob, offset)
        return bytes(memoryview(blob)[:n])

    def main():
        first = read_with_fresh_heap(0)
        gc.collect()
        second = read_with_fresh_heap(8192)
        return first, second

    first, second = io_sched.run(main)
    assert first == payload[:4096]
    assert second == payload[8192:8192 + 4096]
