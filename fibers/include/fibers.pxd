# The fibers C API for Cython modules: `cimport fibers` with
# fibers.get_include() on the include path, then call Fibers_Import() once
# when the module initialises.  Mirrors fibers.h's Fibers_* macros, slot
# for slot and in order (tests/test_capi.py compares them).

cdef extern from "fibers.h":
    int FIBERS_CAPI_VERSION

    int Fibers_Import() except -1
    object Fibers_Spawn(object callable, object args, object kwargs)
    int Fibers_Yield() except -1
    int Fibers_Sleep(double seconds) except -1
    int Fibers_WaitFd(int fd, int events, double timeout) except -1
    int Fibers_Offload(int (*fn)(void *arg) noexcept nogil, void *arg,
                       int *result) except -1
    object Fibers_Current()
    int Fibers_SignalAll(object name, object value) except -1
