# Declarations for fibers._heap: the GC-managed native heap (Heap, Blob).
#
# Every cdef class field lives here so that other compiled modules (the
# scheduler core, which registers fixed heaps with io_uring) can cimport
# them:
#
#     from fibers._heap cimport Heap, Blob
#
#     cdef Heap h = ...
#     if h.registered:            # one fixed region, never moves or grows
#         iov.iov_base = h.base   # register [base, base + length)
#         iov.iov_len = h.length
#         h.buf_index = index     # -1 until registered
#     cdef Blob b = ...
#     b.data, b._size             # NULL / 0 once freed; b.heap is None then
#
# Keep a buffer export (PyObject_GetBuffer) on a blob for as long as the
# kernel may touch its memory: free() and realloc() refuse with BufferError
# while an export is open, and a blob cannot be garbage collected then.

from libc.stdint cimport uint64_t


cdef extern from "fib_arena.h":
    enum:
        FIB__ARENA_NBINS
        FIB__ARENA_CORRUPT_SIZE
        FIB__ARENA_CORRUPT_PREV
        FIB__ARENA_CORRUPT_LINK
        FIB__ARENA_CORRUPT_USED
    size_t FIB__ARENA_UNLIMITED

    ctypedef struct fib__arena:
        size_t used
        size_t mapped
        size_t max_size
        size_t nregions
        int fixed

    int fib__arena_init(fib__arena *a, size_t initial, size_t max_size,
                        int fixed)
    void fib__arena_destroy(fib__arena *a)
    int fib__arena_alloc(fib__arena *a, size_t n, void **out)
    int fib__arena_free(fib__arena *a, void *p)
    int fib__arena_resize(fib__arena *a, void *p, size_t n)
    int fib__arena_realloc(fib__arena *a, void **pp, size_t n,
                           int in_place_only)
    size_t fib__arena_usable(const void *p)
    int fib__arena_fixed_region(const fib__arena *a, void **base,
                                size_t *len)
    int fib__arena_validate(const fib__arena *a)
    int fib__arena_debug_corrupt(fib__arena *a, void *p, int how)


cdef class Heap:
    # The allocator; valid from __cinit__ to __dealloc__.
    cdef fib__arena arena
    cdef bint _live           # arena initialised (and counted as alive)
    cdef int _corrupt         # test-hook corruptions in force: no more ops
    # Registration (register=True): the one fixed region.  base is NULL
    # and length 0 for a heap that was not made with register=True.
    cdef readonly bint registered
    cdef char *base
    cdef Py_ssize_t length
    # The io_uring fixed-buffer index, set by whoever registers the heap;
    # -1 when not registered.
    cdef public int buf_index
    cdef object __weakref__

    cdef Blob _new_blob(self, Py_ssize_t n, bint zero)


cdef class Blob:
    # data is NULL once the blob is freed; then _size is 0 and heap None.
    cdef char *data
    cdef Py_ssize_t _size
    cdef readonly Heap heap
    cdef Py_ssize_t _exports  # open buffer exports (memoryviews, I/O)

    cdef int _check(self) except -1
    cdef int _release(self) except -1
