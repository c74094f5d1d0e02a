/*
 * fibers.h -- the C API of fibers, for extension authors.
 *
 *     #include <fibers.h>
 *
 *     PyMODINIT_FUNC PyInit_mymod(void)
 *     {
 *         if (Fibers_Import() < 0)
 *             return NULL;
 *         ...
 *     }
 *
 * Build against fibers.get_include().  The functions come from the capsule
 * fibers._C_API, which Fibers_Import() loads once per extension module.
 * Every function needs the GIL.  On failure each returns -1 (or NULL) with
 * a Python exception set; PyObject results are new references.  Calls that
 * wait (Yield, Sleep, WaitFd, Offload) must come from a fiber of a running
 * scheduler; any call from a thread whose scheduler is not running fails
 * with RuntimeError.
 *
 * Compatibility: the table only ever grows at the end, and `version` says
 * how far.  Fibers_Import() refuses a fibers older than this header.
 *
 * This header is the one declaration of the table: fibers' own _core fills
 * it in (fibers/_capi.pxi) after `#define FIBERS_MODULE`, which, like
 * greenlet's GREENLET_MODULE, leaves out the client side below (the table
 * pointer, Fibers_Import() and the Fibers_* macros).  Adding a slot: append
 * it to the struct, bump FIBERS_CAPI_VERSION, add its Fibers_* macro here
 * and its declaration to fibers.pxd, and fill it in _capi.pxi;
 * tests/test_capi.py fails until all of these agree and no slot is NULL.
 */
#ifndef FIBERS_H
#define FIBERS_H

#include <Python.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FIBERS_CAPI_NAME "fibers._C_API"
#define FIBERS_CAPI_VERSION 1

/* The function table.  Public, read-only; new entries are only appended. */
typedef struct {
    int version;
    /* Start callable(*args, **kwargs) as a fiber; returns the Fiber.
     * args may be NULL (no arguments), kwargs may be NULL. */
    PyObject *(*Spawn)(PyObject *callable, PyObject *args, PyObject *kwargs);
    /* Let the other ready fibers run; 0 or -1. */
    int (*Yield)(void);
    /* Suspend this fiber for `seconds` (>= 0); 0 or -1. */
    int (*Sleep)(double seconds);
    /* Wait until fd is ready for `events` (POLLIN or POLLOUT); timeout < 0
     * waits forever.  Returns the ready events, 0 on timeout, or -1. */
    int (*WaitFd)(int fd, int events, double timeout);
    /* Run fn(arg) on a pool thread without the GIL while this fiber waits;
     * stores fn's return value in *result (which may be on your stack).
     * The call always finishes before Offload returns, even if the fiber
     * is killed meanwhile (the exception is then raised and -1 returned),
     * so heap memory that `arg` points to may be freed right after.
     * `arg` itself must NOT point into the C stack: fibers are greenlets,
     * which switch by copying stack slices, so while this fiber waits its
     * stack memory belongs to other fibers.  Such an arg is refused with
     * ValueError. */
    int (*Offload)(int (*fn)(void *arg), void *arg, int *result);
    /* The running fiber (new reference). */
    PyObject *(*Current)(void);
    /* Wake every fiber waiting on signal `name` with `value`; returns how
     * many, or -1. */
    int (*SignalAll)(PyObject *name, PyObject *value);
} Fibers_CAPI;

#ifndef FIBERS_MODULE

/* One copy per translation unit that includes this header. */
static Fibers_CAPI *Fibers_API = NULL;

/* Loads the table; 0, or -1 with an exception set. */
static int Fibers_Import(void)
{
    if (Fibers_API != NULL)
        return 0;
    Fibers_API = (Fibers_CAPI *)PyCapsule_Import(FIBERS_CAPI_NAME, 0);
    if (Fibers_API == NULL)
        return -1;
    if (Fibers_API->version < FIBERS_CAPI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "fibers C API version %d is older than this "
                     "extension needs (%d)", Fibers_API->version,
                     FIBERS_CAPI_VERSION);
        Fibers_API = NULL;
        return -1;
    }
    return 0;
}

#define Fibers_Spawn(callable, args, kwargs) \
    (Fibers_API->Spawn((callable), (args), (kwargs)))
#define Fibers_Yield() (Fibers_API->Yield())
#define Fibers_Sleep(seconds) (Fibers_API->Sleep(seconds))
#define Fibers_WaitFd(fd, events, timeout) \
    (Fibers_API->WaitFd((fd), (events), (timeout)))
#define Fibers_Offload(fn, arg, result) \
    (Fibers_API->Offload((fn), (arg), (result)))
#define Fibers_Current() (Fibers_API->Current())
#define Fibers_SignalAll(name, value) (Fibers_API->SignalAll((name), (value)))

#endif /* !FIBERS_MODULE */

#ifdef __cplusplus
}
#endif

#endif /* FIBERS_H */
