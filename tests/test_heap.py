"""fibers.Heap and fibers.Blob: a native heap whose blocks are garbage
collected, used as zero-copy I/O buffers."""
import gc
import os
import random
import weakref

import pytest

import fibers
import fibers.io
import fibers.net
from fibers import Blob, Heap
from fibers._heap import _arenas_alive


def fill(blob, seed):
    """Fill a blob with seeded random bytes; returns them."""
    data = random.Random(seed).randbytes(blob.size)
    memoryview(blob)[:] = data
    return data


# ---- lifecycle ---------------------------------------------------------------

def test_alloc_size_used_and_round_trip():
    heap = Heap()
    assert heap.used == 0 and heap.max_size is None
    b = heap.alloc(100)
    assert isinstance(b, Blob) and b.heap is heap
    assert b.size == len(b) == 100 and not b.freed
    assert heap.used == 112            # rounded up to 16
    assert b.address % 16 == 0
    m = memoryview(b)
    assert (m.nbytes, m.format, m.itemsize, m.readonly) == (100, "B", 1, False)
    m[:] = bytes(range(100))
    m.release()
    assert bytes(b) == bytes(range(100))
    assert bytearray(b) == bytearray(range(100))
    assert heap.validate()
    del b
    assert heap.used == 0
    assert heap.validate()


def test_zero_size_and_zeroed_alloc():
    heap = Heap()
    empty = heap.alloc(0)
    assert empty.size == 0 and bytes(empty) == b""
    dirty = heap.alloc(4096)
    memoryview(dirty)[:] = b"\xff" * 4096
    dirty.free()
    clean = heap.alloc(4096, zero=True)
    assert bytes(clean) == bytes(4096)


def test_used_returns_to_zero_under_gc():
    heap = Heap()
    before = heap.used
    # blobs held by reference cycles: only the cycle collector frees them
    for i in range(50):
        cycle = [heap.alloc(i * 37)]
        cycle.append(cycle)
    del cycle
    assert heap.used > before
    gc.collect()
    assert heap.used == 0
    assert heap.validate()


def test_heap_memory_released_after_heap_and_last_blob():
    base = _arenas_alive()
    heap = Heap(initial_size=1 << 16)
    ref = weakref.ref(heap)
    assert _arenas_alive() == base + 1
    blob = heap.alloc(1000)
    fill(blob, 1)
    del heap
    gc.collect()
    assert ref() is not None               # the blob keeps its heap
    assert _arenas_alive() == base + 1
    assert blob.heap.used == 1008
    del blob
    gc.collect()
    assert ref() is None
    assert _arenas_alive() == base


def test_heap_released_when_blob_dies_in_a_cycle():
    # The heap's last reference is a blob inside garbage: the GC must give
    # the block back before the heap (and its memory) goes.
    base = _arenas_alive()
    heap = Heap()
    ref = weakref.ref(heap)
    junk = [heap.alloc(n) for n in (10, 2000, 70000)]
    junk.append(junk)
    del heap, junk
    assert ref() is not None
    gc.collect()
    assert ref() is None
    assert _arenas_alive() == base


def test_free_drops_the_heap_reference():
    base = _arenas_alive()
    heap = Heap()
    ref = weakref.ref(heap)
    blob = heap.alloc(10)
    del heap
    blob.free()
    assert blob.heap is None
    assert ref() is None and _arenas_alive() == base


def test_context_manager_frees():
    heap = Heap()
    with heap.alloc(64) as b:
        memoryview(b)[:2] = b"ok"
        assert heap.used == 64
    assert b.freed and heap.used == 0


def test_grown_regions_are_given_back():
    heap = Heap()
    big = heap.alloc(8 << 20)
    assert heap.mapped >= 8 << 20
    big.free()
    assert heap.mapped == 0 and heap.used == 0
    kept = Heap(initial_size=1 << 20)
    assert kept.mapped == 1 << 20
    kept.alloc(100).free()
    assert kept.mapped == 1 << 20          # the initial region stays


def test_blob_cannot_be_made_directly():
    with pytest.raises(TypeError):
        Blob()


# ---- realloc -------------------------------------------------------------------

def test_realloc_in_place_and_moving():
    heap = Heap()
    a = heap.alloc(100)
    data = fill(a, 2)
    addr = a.address
    a.realloc(1000)                 # the rest of the region follows: in place
    assert a.address == addr and a.size == 1000
    assert bytes(a)[:100] == data
    data = fill(a, 3)
    b = heap.alloc(10)              # takes the block right after a
    assert b.address == addr + 1024
    with pytest.raises(MemoryError):
        a.realloc(5000, in_place_only=True)
    assert a.address == addr and a.size == 1000 and bytes(a) == data
    a.realloc(5000)                 # moves, contents kept
    assert a.address != addr and a.size == 5000
    assert bytes(a)[:1000] == data
    assert heap.validate()
    # shrinking is always in place
    addr = a.address
    a.realloc(10, in_place_only=True)
    assert a.address == addr and bytes(a) == data[:10]
    a.realloc(0)
    assert a.size == 0 and a.address == addr
    assert heap.validate()
    a.free()
    b.free()
    assert heap.used == 0


def test_realloc_into_a_freed_neighbour():
    heap = Heap()
    a = heap.alloc(64)
    b = heap.alloc(4000)
    c = heap.alloc(64)
    data = fill(a, 4)
    with pytest.raises(MemoryError):
        a.realloc(1000, in_place_only=True)
    b.free()
    a.realloc(1000, in_place_only=True)     # now the neighbour is free
    assert bytes(a)[:64] == data
    a.realloc(64 + 16 + 4000, in_place_only=True)   # all of it
    with pytest.raises(MemoryError):
        a.realloc(64 + 16 + 4000 + 16, in_place_only=True)
    assert heap.validate()
    del a, c
    assert heap.used == 0


def test_realloc_past_max_size_leaves_the_blob():
    heap = Heap(max_size=64 << 10)
    a = heap.alloc(1000)
    data = fill(a, 5)
    with pytest.raises(MemoryError):
        a.realloc(64 << 10)
    assert a.size == 1000 and bytes(a) == data


# ---- exports and freed blobs -----------------------------------------------------

def test_exported_buffer_blocks_free_and_realloc():
    heap = Heap()
    b = heap.alloc(100)
    m = memoryview(b)
    with pytest.raises(BufferError):
        b.free()
    with pytest.raises(BufferError):
        b.realloc(200)
    with pytest.raises(BufferError):
        b.realloc(10)
    assert b.size == 100 and not b.freed
    # the same rule as bytearray's
    ba = bytearray(100)
    mb = memoryview(ba)
    with pytest.raises(BufferError):
        ba.extend(b"x")
    mb.release()
    m.release()
    b.realloc(200)
    with memoryview(b) as m2, memoryview(b) as m3:
        with pytest.raises(BufferError):
            b.free()
        m2[0] = 7
        assert m3[0] == 7
    b.free()
    assert heap.used == 0


def test_export_keeps_the_blob_alive():
    heap = Heap()
    b = heap.alloc(32)
    m = memoryview(b)
    del b
    gc.collect()
    assert heap.used == 32
    m[:5] = b"alive"
    assert bytes(m[:5]) == b"alive"
    del m
    gc.collect()
    assert heap.used == 0


def test_freed_blob_raises_value_error():
    heap = Heap()
    b = heap.alloc(10)
    b.free()
    assert b.freed and b.heap is None
    for use in (lambda: b.size, lambda: len(b), lambda: b.address,
                lambda: b.realloc(20), lambda: memoryview(b),
                lambda: bytes(b), lambda: b.__enter__()):
        with pytest.raises(ValueError):
            use()
    b.free()                # a second free is a no-op
    assert "freed" in repr(b)
    assert heap.used == 0 and heap.validate()


# ---- limits and bad input ----------------------------------------------------------

def test_max_size():
    heap = Heap(max_size=64 << 10)
    assert heap.max_size == 64 << 10
    with pytest.raises(MemoryError):
        heap.alloc(64 << 10)        # headers count against max_size
    a = heap.alloc(60_000)
    with pytest.raises(MemoryError):
        heap.alloc(8000)
    assert heap.mapped <= 64 << 10
    a.free()
    heap.alloc(8000).free()
    with pytest.raises(MemoryError):
        Heap().alloc(10 ** 30)
    zero = Heap(max_size=0)
    with pytest.raises(MemoryError):
        zero.alloc(0)


@pytest.mark.parametrize("kwargs, exc", [
    ({"initial_size": -1}, ValueError),
    ({"max_size": -5}, ValueError),
    ({"initial_size": float("nan")}, ValueError),
    ({"max_size": float("nan")}, ValueError),
    ({"initial_size": "10"}, TypeError),
    ({"initial_size": 1.5}, TypeError),
    ({"max_size": 4096.0}, TypeError),
    ({"max_size": b"1"}, TypeError),
    ({"initial_size": 100, "max_size": 10}, ValueError),
    ({"register": True}, ValueError),
    ({"register": True, "max_size": 10}, ValueError),
])
def test_bad_heap_arguments(kwargs, exc):
    with pytest.raises(exc):
        Heap(**kwargs)


@pytest.mark.parametrize("size, exc", [
    (-1, ValueError), (float("nan"), ValueError), ("x", TypeError),
    (None, TypeError), (2.0, TypeError), ([], TypeError),
])
def test_bad_sizes(size, exc):
    heap = Heap()
    with pytest.raises(exc):
        heap.alloc(size)
    b = heap.alloc(8)
    with pytest.raises(exc):
        b.realloc(size)
    assert b.size == 8


# ---- validate ------------------------------------------------------------------------

def test_validate_after_random_operations():
    rng = random.Random(20261123)
    heap = Heap(max_size=4 << 20)
    live = {}                       # id -> (blob, expected bytes)
    next_id = 0
    for step in range(4000):
        op = rng.random()
        if op < 0.45 or not live:
            n = rng.choice([0, 1, 15, 16, 17]) if rng.random() < 0.1 else \
                rng.randint(0, rng.choice([256, 4096, 65536, 400_000]))
            try:
                b = heap.alloc(n)
            except MemoryError:
                continue
            live[next_id] = (b, fill(b, step))
            next_id += 1
        elif op < 0.75:
            key = rng.choice(list(live))
            b, data = live.pop(key)
            assert bytes(b) == data
            if rng.random() < 0.5:
                b.free()
            # else: dropped, the blob's refcount frees it
        else:
            key = rng.choice(list(live))
            b, data = live[key]
            n = rng.randint(0, 2 * b.size + 100)
            try:
                b.realloc(n, in_place_only=rng.random() < 0.3)
            except MemoryError:
                assert bytes(b) == data
                continue
            kept = data[:n]
            assert bytes(b)[:len(kept)] == kept
            live[key] = (b, kept + fill_tail(b, len(kept), step))
        if step % 100 == 0:
            assert heap.validate()
            # each blob holds at least its size rounded up to 16 (a
            # shrunken blob may keep a little more)
            assert heap.used >= sum(max(16, -(-len(b) // 16) * 16)
                                    for b, _ in live.values())
    assert heap.validate()
    for b, data in live.values():
        assert bytes(b) == data
    live.clear()
    b = data = None                 # the loop's last references
    gc.collect()
    assert heap.used == 0 and heap.mapped == 0
    assert heap.validate()


def fill_tail(blob, start, seed):
    tail = random.Random(seed).randbytes(blob.size - start)
    memoryview(blob)[start:] = tail
    return tail


@pytest.mark.parametrize("how", ["size", "prev", "link", "used"])
def test_validate_detects_corruption(how):
    heap = Heap()
    a = heap.alloc(100)
    b = heap.alloc(200)
    c = heap.alloc(300)
    b.free()                        # so that a is followed by a free block
    assert heap.validate()
    heap._corrupt_for_test(a, how)
    assert heap.validate() is False
    with pytest.raises(RuntimeError):
        heap.alloc(10)
    with pytest.raises(RuntimeError):
        a.realloc(10)
    heap._repair_for_test(a, how)
    assert heap.validate() is True
    del a, c
    assert heap.used == 0 and heap.validate()


def test_corruption_hook_arguments():
    heap = Heap()
    a = heap.alloc(10)
    b = heap.alloc(10)
    with pytest.raises(ValueError):
        heap._corrupt_for_test(a, "link")   # a's neighbour is in use
    with pytest.raises(ValueError):
        heap._corrupt_for_test(a, "bogus")
    with pytest.raises(ValueError):
        heap._corrupt_for_test(None, "size")
    with pytest.raises(ValueError):
        Heap()._corrupt_for_test(a, "size")
    with pytest.raises(RuntimeError):
        heap._repair_for_test(a, "size")
    assert heap.validate()
    del b


# ---- registered heaps ----------------------------------------------------------------

def test_registered_heap_is_one_fixed_region():
    heap = Heap(max_size=1 << 20, register=True)
    assert heap.registered and heap.buf_index == -1
    assert heap.mapped == 1 << 20 and heap.max_size == 1 << 20
    heap.buf_index = 3
    assert heap.buf_index == 3
    blobs = []
    with pytest.raises(MemoryError):
        for _ in range(1000):
            blobs.append(heap.alloc(100_000))
    assert len(blobs) == 10
    assert heap.mapped == 1 << 20           # never grows
    blobs.clear()
    assert heap.used == 0 and heap.mapped == 1 << 20
    by_initial = Heap(initial_size=65536, register=True)
    assert by_initial.registered and by_initial.max_size is None
    assert by_initial.mapped == 65536
    with pytest.raises(MemoryError):
        by_initial.alloc(65536)
    assert not Heap().registered and Heap().buf_index == -1


# ---- zero-copy I/O ---------------------------------------------------------------------

@pytest.mark.parametrize("register", [False, True])
def test_recv_into_a_blob(io_sched, register):
    heap = Heap(max_size=1 << 20, register=register)
    blob = heap.alloc(65536)
    payload = random.Random(7).randbytes(50_000)

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            a.sendall(payload)
            got = 0
            view = memoryview(blob)
            while got < len(payload):
                n = b.recv_into(view[got:])
                assert n > 0
                got += n
            view.release()
            return got
    assert io_sched.run(main) == len(payload)
    assert bytes(blob)[:len(payload)] == payload

    def direct():
        # the blob itself, not a view of it
        a, b = fibers.net.socketpair()
        with a, b:
            a.sendall(b"direct")
            return b.recv_into(blob)
    n = io_sched.run(direct)
    assert bytes(blob)[:n] == b"direct"[:n] and n > 0


def test_pwrite_and_readinto_with_blobs(io_sched, tmp_path):
    path = str(tmp_path / "blob.bin")
    heap = Heap()
    out = heap.alloc(100_000)
    data = fill(out, 8)
    into = heap.alloc(100_000, zero=True)

    def main():
        with fibers.io.open(path, "w+b") as f:
            assert f.pwrite(out, 0) == len(data)
            assert f.pwrite(out, len(data)) == len(data)
        with fibers.io.open(path, "rb") as f:
            got = 0
            view = memoryview(into)
            while got < len(into):
                n = f.readinto(view[got:])
                assert n > 0
                got += n
            view.release()
            return got
    assert io_sched.run(main) == len(data)
    with open(path, "rb") as f:
        assert f.read() == data + data
    assert bytes(into) == data

    def whole():
        with fibers.io.open(path, "rb") as f:
            return f.readinto(into)
    into.realloc(10)
    assert io_sched.run(whole) == 10
    assert bytes(into) == data[:10]


def test_blob_cannot_be_freed_during_pending_recv(io_sched):
    heap = Heap()
    blob = heap.alloc(1024)

    def main():
        a, b = fibers.net.socketpair()
        with a, b:
            reader = fibers.spawn(b.recv_into, blob)
            fibers.yield_now()
            fibers.yield_now()
            with pytest.raises(BufferError):
                blob.free()
            with pytest.raises(BufferError):
                blob.realloc(1 << 20)
            a.sendall(b"late")
            return reader.join()
    n = io_sched.run(main)
    assert bytes(blob)[:n] == b"late"[:n]
    blob.free()
    assert heap.used == 0
