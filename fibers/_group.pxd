# Declarations for fiber groups, pools and races (fibers/_group.pxi),
# included from _core.pxd.

cdef class _Owner:
    # What a fiber reports its end to (Fiber._owner), from Scheduler._finish:
    # on every way a fiber ends, including a kill before it ever ran, where
    # no code of the fiber's own runs.  Must not raise or switch.
    cdef Scheduler _sched
    cdef int _child_done(self, Fiber f, object exc) except -1


cdef class Group(_Owner):
    cdef Fiber _parent          # the fiber running the with block
    cdef set _children          # live children
    cdef list _errors           # failures, in the order they happened
    cdef int _phase             # GP_NEW, GP_BODY, GP_CLOSING, GP_DONE
    cdef bint _cancelling       # children killed: no new child runs
    cdef readonly bint cancel_called
    cdef object _cancel_exc     # thrown into the parent's body to end it
    cdef object _timeout
    cdef object _scope          # the TimeoutScope for timeout=
    cdef WaitQueue _waiter      # the parent, at the end of the block

    cdef int _cancel(self) except -1


cdef class _Batch:
    # One map() or imap_unordered() call on a Pool.
    cdef dict _index            # live task -> its position (map)
    cdef list _results          # map: results by position
    cdef object _done           # imap_unordered: deque of (exc, result)
    cdef object _failure        # the first task exception (map)
    cdef bint _failed
    cdef bint _wake_each        # imap_unordered: wake on every completion
    cdef WaitQueue _waiter

    cdef int _task_done(self, Fiber f, object exc) except -1


cdef class Pool(_Owner):
    cdef Py_ssize_t _size
    cdef Py_ssize_t _used       # running tasks + slots handed to waiters
    cdef dict _running          # task -> its _Batch, or None
    cdef WaitQueue _slotq       # spawn()s waiting for a slot, FIFO
    cdef WaitQueue _idleq       # join()s waiting for the pool to empty

    cdef Scheduler _bind(self, str word)
    cdef int _acquire(self, Scheduler s, str word) except -1
    cdef int _release(self) except -1
    cdef Fiber _start(self, Scheduler s, object fn, tuple args, _Batch b)
    cdef int _cleanup(self, Scheduler s, _Batch b) except -1


cdef class _Race(_Owner):
    # One first() call.
    cdef set _live
    cdef Fiber _winner
    cdef object _win_exc
    cdef object _win_result
    cdef WaitQueue _waiter
