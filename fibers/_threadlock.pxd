# Declarations for the thread-safe locks and queue of fibers.patch()'s
# threading and queue parts (fibers/_threadlock.pxi).  Included by
# _core.pxd, so that they sit beside their code while _core stays one
# compilation unit.

cdef class _ThreadWait:
    # One fiber's wait on a ThreadLock or ThreadSimpleQueue, as its wakers
    # see it.  A fresh one per registration, so a wake-up meant for an
    # earlier registration can never be mistaken for one meant for this.
    cdef Scheduler sched
    cdef Fiber fiber
    cdef _ThreadWait prev
    cdef _ThreadWait next
    cdef bint linked            # in its _ThreadWaiters
    cdef bint woken             # a waker took it out: a wake-up is owed
    cdef bint parked            # the fiber is parked on it right now


cdef class _ThreadWaiters:
    # A FIFO of _ThreadWait, shared by every thread that touches the lock.
    # Each method runs start to end holding the GIL, with no call that
    # could release it or run Python code in between: that is what makes
    # it thread-safe (see the design note in _threadlock.pxi).
    cdef _ThreadWait head
    cdef _ThreadWait tail
    cdef Py_ssize_t count

    cdef void add(self, _ThreadWait w)
    cdef void remove(self, _ThreadWait w)
    cdef int wake_one(self) except -1
    cdef void clear(self)


cdef class _ThreadWaitable:
    # What a fiber waits on: a lock, a queue.
    cdef _ThreadWaiters _waiters
    cdef object __weakref__

    cdef object _try(self)
    cdef object _wait_for(self, Fiber me, object timeout)


cdef class ThreadLock(_ThreadWaitable):
    cdef object _lock           # the real _thread.lock
    cdef object _acquire        # its bound methods, looked up once
    cdef object _release

    cdef object _acquire_in(self, Fiber me, object blocking, object timeout)
    cdef int _release_and_wake(self) except -1


cdef class ThreadRLock:
    cdef ThreadLock _block
    # The owner is a (thread, fiber) pair: the thread's ident and the
    # running fiber, or None for code outside any fiber.
    cdef unsigned long _owner_tid
    cdef object _owner_fiber
    cdef unsigned long _count
    cdef object __weakref__

    cdef bint _mine(self)


cdef class ThreadSimpleQueue(_ThreadWaitable):
    cdef object _q              # the real _queue.SimpleQueue
