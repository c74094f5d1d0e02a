# cython: language_level=3
"""fibers._heap: a native memory heap whose blocks are garbage collected.

    heap = fibers.Heap(max_size=1 << 20)
    blob = heap.alloc(4096)          # a writable buffer in native memory
    n = sock.recv_into(blob)         # no copy: the kernel writes into it
    blob.realloc(8192)               # grows in place when it can
    del blob                         # the block goes back to the heap

Design
- The allocator is C (csrc/fib_arena.c): mmap'ed regions tiled by blocks
  with boundary tags, size-class free lists, splitting and immediate
  merging.  This module only wraps it and ties it to Python's lifetimes.
- A Blob holds a strong reference to its Heap, so the heap's memory can
  only be unmapped (Heap.__dealloc__) once the Heap object and every live
  Blob are gone.  Blob is declared no_gc_clear: when the GC frees garbage,
  a blob keeps its heap until its own __dealloc__ has given the block back.
  A Heap references no Python object, so it is not GC-tracked at all.
- Blob exports its memory through the buffer protocol and counts the open
  exports; free() and realloc() refuse with BufferError while any is open
  (bytearray's rule), so memory a memoryview or a pending I/O can reach is
  never freed or moved.  A blob cannot be collected while an export is
  open, since the export holds a reference to it.
- Use after free() is a ValueError: data is set to NULL and every entry
  point checks it.  free() twice is a no-op, like close() on a file.
- Heap(register=True) makes one fixed region that never moves or grows,
  for io_uring buffer registration; see _heap.pxd for the C fields.
- Everything runs under the GIL; the arena has no lock of its own.
"""

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.number cimport PyNumber_Index
from libc.errno cimport EINVAL, ENOMEM
from libc.stdint cimport uintptr_t
from libc.string cimport memset

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


# Heaps whose arena is initialised and not yet destroyed; for tests.
cdef Py_ssize_t _alive = 0


def _arenas_alive():
    """The number of heaps whose native memory is still held (test hook)."""
    return _alive


cdef object _size_arg(object value, str what):
    """value as a non-negative int: TypeError for non-integers, ValueError
    for negative numbers and NaN."""
    if isinstance(value, float):
        if value != value:
            raise ValueError(f"{what} must be a number of bytes, not NaN")
        raise TypeError(f"{what} must be an int, not float")
    try:
        n = PyNumber_Index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, not "
                        f"{type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


cdef str _CORRUPT_KINDS = "size, prev, link, used"


@cython.final
@cython.auto_pickle(False)
cdef class Heap:
    """Heap(initial_size=0, max_size=None, register=False)

    A native memory arena.  ``alloc(n)`` returns a :class:`Blob`, a
    writable buffer of ``n`` bytes that goes back to the heap when it is
    freed or garbage collected.  The heap's memory is returned to the
    operating system once the Heap and all of its blobs are gone.

    ``initial_size`` bytes are reserved at once and kept for the heap's
    life.  ``max_size`` (None: unlimited) bounds the bytes the heap
    reserves from the OS, block headers (16 bytes per blob) and alignment
    included, so an ``alloc(max_size)`` cannot succeed; past it, alloc()
    and realloc() raise MemoryError.  Otherwise the heap grows by mapping
    further regions as needed and unmaps a grown region once it is empty.

    ``register=True`` makes a heap of one fixed region of ``max_size``
    bytes (or ``initial_size`` when max_size is None), reserved at once,
    that never grows or moves, so that it can be registered with io_uring
    as a fixed buffer.  It needs one of the two sizes.

    Sizes must be ints: other types raise TypeError, negative sizes and NaN
    ValueError.  Not thread-safe beyond what the GIL gives: use a heap from
    one thread (or under a lock), like the scheduler.
    """

    def __cinit__(self, initial_size=0, max_size=None, register=False):
        global _alive
        cdef size_t initial, limit
        cdef void *base
        cdef size_t length
        cdef int rc
        cdef bint fixed = bool(register)
        self.buf_index = -1
        self.base = NULL
        self.length = 0
        init = _size_arg(initial_size, "initial_size")
        if max_size is None:
            limit = FIB__ARENA_UNLIMITED
        else:
            m = _size_arg(max_size, "max_size")
            if m > PY_SSIZE_T_MAX:
                raise ValueError(f"max_size is too large: {m}")
            limit = m
            if init > m:
                raise ValueError(f"initial_size ({init}) is larger than "
                                 f"max_size ({m})")
        if init > PY_SSIZE_T_MAX:
            raise MemoryError(f"cannot reserve {init} bytes")
        initial = init
        if fixed and max_size is None and initial == 0:
            raise ValueError("register=True needs max_size or initial_size")
        rc = fib__arena_init(&self.arena, initial, limit, fixed)
        if rc == -EINVAL:
            raise ValueError("register=True needs a region of at least "
                             "96 bytes")
        if rc < 0:
            raise MemoryError(f"cannot reserve {initial} bytes")
        self._live = True
        _alive += 1
        if fixed:
            fib__arena_fixed_region(&self.arena, &base, &length)
            self.base = <char *>base
            self.length = <Py_ssize_t>length
            self.registered = True

    def __dealloc__(self):
        global _alive
        if self._live:
            fib__arena_destroy(&self.arena)
            self._live = False
            _alive -= 1

    cdef Blob _new_blob(self, Py_ssize_t n, bint zero):
        """A new blob of n >= 0 bytes; MemoryError when nothing fits."""
        cdef void *p
        cdef Blob b
        if self._corrupt:
            raise RuntimeError("heap was corrupted by a test hook")
        if fib__arena_alloc(&self.arena, <size_t>n, &p) < 0:
            raise MemoryError(self._why_not(n))
        b = Blob.__new__(Blob)
        b.data = <char *>p
        b._size = n
        b.heap = self
        if zero:
            memset(p, 0, <size_t>n)
        return b

    def _why_not(self, n):
        if self.arena.max_size != FIB__ARENA_UNLIMITED:
            return (f"cannot allocate {n} bytes: heap max_size is "
                    f"{self.arena.max_size} ({self.arena.mapped} reserved, "
                    f"{self.arena.used} in use)")
        return f"cannot allocate {n} bytes"

    def alloc(self, size, *, bint zero=False):
        """alloc(size, *, zero=False) -> Blob

        Allocate ``size`` bytes (0 is allowed), 16-byte aligned.  The
        contents are unspecified unless ``zero`` is true.  MemoryError when
        the heap cannot hold it within max_size."""
        n = _size_arg(size, "size")
        if n > PY_SSIZE_T_MAX:
            raise MemoryError(f"cannot allocate {n} bytes")
        return self._new_blob(n, zero)

    @property
    def used(self):
        """Bytes held by live blobs, each rounded up to 16; 0 when every
        blob has been freed."""
        return self.arena.used

    @property
    def mapped(self):
        """Bytes reserved from the operating system (headers included)."""
        return self.arena.mapped

    @property
    def max_size(self):
        """The bound on :attr:`mapped`, or None for an unlimited heap."""
        if self.arena.max_size == FIB__ARENA_UNLIMITED:
            return None
        return self.arena.max_size

    def validate(self):
        """Walk the allocator's structures and check that they agree: block
        boundaries and boundary tags, the free lists, and the used and
        reserved totals.  True when consistent.  Meant for tests and
        debugging: it takes time linear in the number of blocks."""
        cdef int rc = fib__arena_validate(&self.arena)
        if rc == -ENOMEM:
            raise MemoryError("no memory to validate the heap")
        return rc == 0

    def _corrupt_for_test(self, Blob blob=None, str how="size"):
        """Test hook: break the heap on purpose, so a test can see that
        validate() notices.  ``how`` is 'size' (the blob's block size),
        'prev' (its boundary tag), 'link' (the free-list link of the free
        block just after the blob) or 'used' (the used counter).  Call
        _repair_for_test() with the same arguments to undo it; until then
        every other operation on the heap raises RuntimeError and blobs
        that die are leaked into the heap."""
        self._toggle(blob, how)
        self._corrupt += 1

    def _repair_for_test(self, Blob blob=None, str how="size"):
        """Undo _corrupt_for_test(blob, how)."""
        if self._corrupt <= 0:
            raise RuntimeError("the heap is not corrupted")
        self._toggle(blob, how)
        self._corrupt -= 1

    def _toggle(self, Blob blob, str how):
        cdef dict kinds = {"size": FIB__ARENA_CORRUPT_SIZE,
                           "prev": FIB__ARENA_CORRUPT_PREV,
                           "link": FIB__ARENA_CORRUPT_LINK,
                           "used": FIB__ARENA_CORRUPT_USED}
        cdef void *p = NULL
        if how not in kinds:
            raise ValueError(f"how must be one of {_CORRUPT_KINDS}")
        if how != "used":
            if blob is None:
                raise ValueError(f"how={how!r} needs a blob")
            if blob.data == NULL:
                raise ValueError("operation on a freed Blob")
            if blob.heap is not self:
                raise ValueError("the blob belongs to another heap")
            p = blob.data
        if fib__arena_debug_corrupt(&self.arena, p, kinds[how]) < 0:
            raise ValueError("the block after the blob is not free")

    def __repr__(self):
        limit = self.max_size
        return (f"<fibers.Heap used={self.arena.used} "
                f"mapped={self.arena.mapped} max_size={limit}"
                f"{' registered' if self.registered else ''}>")


@cython.final
@cython.no_gc_clear
@cython.auto_pickle(False)
cdef class Blob:
    """A block of native memory from a :class:`Heap` (made by
    ``Heap.alloc()``).

    A Blob is a writable buffer: ``memoryview(blob)``, ``bytes(blob)``,
    ``sock.recv_into(blob)``, ``file.readinto(blob)`` and
    ``file.pwrite(blob, offset)`` all use its memory directly, without a
    copy.  The block goes back to the heap on :meth:`free` or when the blob
    is garbage collected.  A blob keeps its heap alive.

    After free(), every use of the blob (size, realloc, a buffer, ...)
    raises ValueError; free() itself may be called again and does nothing.
    While a buffer export is open (a memoryview, a pending I/O), free() and
    realloc() raise BufferError, as resizing an exported bytearray does.

    A Blob is also a context manager that frees it on exit.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("Blob objects are made by Heap.alloc()")

    def __dealloc__(self):
        # no_gc_clear: self.heap is still set here, even when the GC is
        # tearing down a cycle that held this blob.
        if self.data != NULL and self.heap is not None:
            if not self.heap._corrupt:
                fib__arena_free(&self.heap.arena, self.data)
            self.data = NULL

    cdef int _check(self) except -1:
        if self.data == NULL:
            raise ValueError("operation on a freed Blob")
        if self.heap._corrupt:
            raise RuntimeError("heap was corrupted by a test hook")
        return 0

    cdef int _release(self) except -1:
        cdef Heap heap = self.heap
        fib__arena_free(&heap.arena, self.data)
        self.data = NULL
        self._size = 0
        self.heap = None    # may drop the last reference to the heap
        return 0

    @property
    def size(self):
        """The blob's size in bytes, as asked for."""
        self._check()
        return self._size

    def __len__(self):
        self._check()
        return self._size

    @property
    def address(self):
        """The address of the blob's first byte (for ctypes and tests)."""
        self._check()
        return <uintptr_t>self.data

    @property
    def freed(self):
        """True once the blob has been freed."""
        return self.data == NULL

    def free(self):
        """Give the memory back to the heap now.  Later uses of the blob
        raise ValueError; freeing again does nothing.  BufferError while a
        buffer export (memoryview) is open."""
        if self.data == NULL:
            return
        self._check()
        if self._exports > 0:
            raise BufferError("Existing exports of data: object cannot be "
                              "freed")
        self._release()

    def realloc(self, size, bint in_place_only=False):
        """realloc(size, in_place_only=False)

        Change the blob's size.  Shrinking is always done in place;
        growing is done in place when the block after this one is free and
        big enough, else the contents move to a new block (the first
        min(old, new) bytes are kept; new bytes are unspecified).  With
        ``in_place_only=True`` a grow that cannot be done in place raises
        MemoryError and leaves the blob as it was; so does a move past the
        heap's max_size.  BufferError while a buffer export is open."""
        cdef void *p
        cdef int rc
        self._check()
        n = _size_arg(size, "size")
        if self._exports > 0:
            raise BufferError("Existing exports of data: object cannot be "
                              "re-sized")
        if n > PY_SSIZE_T_MAX:
            raise MemoryError(f"cannot allocate {n} bytes")
        p = self.data
        rc = fib__arena_realloc(&self.heap.arena, &p, <size_t>n,
                                in_place_only)
        if rc < 0:
            if in_place_only:
                raise MemoryError(f"cannot grow the blob to {n} bytes in "
                                  f"place: the next block is not free or "
                                  f"too small")
            raise MemoryError(self.heap._why_not(n))
        self.data = <char *>p
        self._size = n

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.data == NULL:
            raise ValueError("operation on a freed Blob")
        PyBuffer_FillInfo(view, self, self.data, self._size, 0, flags)
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self._exports -= 1

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc_info):
        self.free()

    def __repr__(self):
        if self.data == NULL:
            return "<fibers.Blob freed>"
        return (f"<fibers.Blob size={self._size} "
                f"at 0x{<uintptr_t>self.data:x}>")
