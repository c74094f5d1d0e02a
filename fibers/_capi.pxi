# The C API (fibers/include/fibers.h): a table of function pointers in the
# capsule fibers._C_API.  Included by _core.pyx; the table's type, version
# and capsule name come from the header.
#
# Each entry is a cdef function whose C signature is exactly the header's:
# `object` results compile to new references with NULL on error, and
# `except -1` ints to -1 with the exception set.

from cpython.pycapsule cimport PyCapsule_New

# The table's one declaration is the public header.  FIBERS_MODULE leaves
# out its client side (the static table pointer, Fibers_Import() and the
# Fibers_* macros); the ctypedef below only names the fields for Cython, the
# layout is the header's.  A slot this side does not fill stays NULL, which
# tests/test_capi.py catches, and a slot whose type differs from the
# header's is a C compiler diagnostic here.
cdef extern from *:
    """
    #define FIBERS_MODULE
    #include "fibers.h"
    """
    const char *FIBERS_CAPI_NAME
    int FIBERS_CAPI_VERSION
    ctypedef struct Fibers_CAPI:
        int version
        object (*Spawn)(object, object, object)
        int (*Yield)() except -1
        int (*Sleep)(double) except -1
        int (*WaitFd)(int, int, double) except -1
        int (*Offload)(fib__job_fn, void *, int *) except -1
        object (*Current)()
        int (*SignalAll)(object, object) except -1

cdef extern from *:
    """
    /* C callers may pass NULL where Python would pass None. */
    static PyObject *(*fib__capi_spawn_impl)(PyObject *, PyObject *,
                                             PyObject *) = NULL;
    static int (*fib__capi_signal_impl)(PyObject *, PyObject *) = NULL;

    static PyObject *fib__capi_spawn_shim(PyObject *fn, PyObject *args,
                                          PyObject *kwargs)
    {
        if (fn == NULL) {
            PyErr_SetString(PyExc_TypeError, "Fibers_Spawn: callable is NULL");
            return NULL;
        }
        return fib__capi_spawn_impl(fn, args ? args : Py_None,
                                    kwargs ? kwargs : Py_None);
    }

    static int fib__capi_signal_shim(PyObject *name, PyObject *value)
    {
        if (name == NULL) {
            PyErr_SetString(PyExc_TypeError, "Fibers_SignalAll: name is NULL");
            return -1;
        }
        return fib__capi_signal_impl(name, value ? value : Py_None);
    }
    """
    object (*fib__capi_spawn_impl)(object, object, object)
    int (*fib__capi_signal_impl)(object, object) except -1
    object fib__capi_spawn_shim(object, object, object)
    int fib__capi_signal_shim(object, object) except -1

cdef extern from "<poll.h>":
    enum:
        POLLERR
        POLLHUP

cdef Fibers_CAPI _capi


cdef Scheduler _capi_sched(str word, bint need_fiber):
    # The calling thread's running scheduler, or a RuntimeError.
    cdef void *p = fib__tls_get()
    cdef Scheduler s
    if p == NULL or not (<Scheduler>p)._running:
        raise RuntimeError(f"fibers C API {word}(): no scheduler is running "
                           f"in this thread")
    s = <Scheduler>p
    if need_fiber and s._current is None:
        raise RuntimeError(f"fibers C API {word}() must be called from a "
                           f"fiber")
    return s


cdef object _capi_spawn(object fn, object args, object kwargs):
    cdef Scheduler s = _capi_sched("Fibers_Spawn", False)
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        raise TypeError("Fibers_Spawn: args must be a tuple or NULL")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("Fibers_Spawn: kwargs must be a dict or NULL")
    return s._spawn(fn, <tuple>args, <dict>kwargs if kwargs else None)


cdef int _capi_yield() except -1:
    cdef Scheduler s = _capi_sched("Fibers_Yield", True)
    return s._yield(s._current)


cdef int _capi_sleep(double seconds) except -1:
    cdef Scheduler s = _capi_sched("Fibers_Sleep", True)
    return s._sleep(s._current, _to_ns(seconds, "Fibers_Sleep"))


cdef int _capi_wait_fd(int fd, int events, double timeout) except -1:
    cdef Scheduler s = _capi_sched("Fibers_WaitFd", True)
    cdef Fiber me = s._current
    cdef Timer t = None
    cdef int rc
    if events != POLLIN and events != POLLOUT:
        raise ValueError("Fibers_WaitFd: events must be POLLIN or POLLOUT")
    if fd < 0:
        raise ValueError(f"Fibers_WaitFd: bad fd {fd}")
    if timeout >= 0:
        t = s._arm_exc(me, _to_ns(timeout, "Fibers_WaitFd"),
                       Timeout("Fibers_WaitFd timed out"))
    try:
        rc = _poll_foreign(s, me, fd, events, t, "Fibers_WaitFd")
    except BaseException as e:
        if t is not None and e is t._exc:
            return 0
        raise
    return rc & (events | POLLERR | POLLHUP)


cdef int _capi_offload(fib__job_fn fn, void *arg, int *result) except -1:
    cdef Scheduler s = _capi_sched("Fibers_Offload", True)
    cdef _Job j
    if fn == NULL:
        raise TypeError("Fibers_Offload: fn is NULL")
    if fib__on_thread_stack(arg):
        # The waiting fiber's stack is copied out while other greenlets run
        # on it: the pool thread would write into someone else's frames.
        raise ValueError("Fibers_Offload: arg points into the C stack; "
                         "fibers switch by copying stacks, so pass heap "
                         "or static memory")
    j = _Job.__new__(_Job)
    j.job.fn = fn
    j.job.arg = arg
    _offload(s, s._current, j, True)
    if result != NULL:
        result[0] = j.job.result
    return 0


cdef object _capi_current():
    cdef Scheduler s = _capi_sched("Fibers_Current", True)
    return s._current


cdef int _capi_signal_all(object name, object value) except -1:
    cdef Scheduler s = _capi_sched("Fibers_SignalAll", False)
    return s.signal_all(name, value)


_capi.version = FIBERS_CAPI_VERSION
fib__capi_spawn_impl = _capi_spawn
fib__capi_signal_impl = _capi_signal_all
_capi.Spawn = fib__capi_spawn_shim
_capi.Yield = _capi_yield
_capi.Sleep = _capi_sleep
_capi.WaitFd = _capi_wait_fd
_capi.Offload = _capi_offload
_capi.Current = _capi_current
_capi.SignalAll = fib__capi_signal_shim

_C_API = PyCapsule_New(<void *>&_capi, FIBERS_CAPI_NAME, NULL)


def get_include():
    """The directory holding ``fibers.h`` and ``fibers.pxd``, for building
    C and Cython extensions against the fibers C API."""
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)),
                         "include")
