/*
 * fib_greenlet.h -- the one greenlet switch the scheduler makes.
 *
 * Cython would hold a new reference to the target greenlet across the call
 * to PyGreenlet_Switch.  The caller's stack then pins the target for as long
 * as the caller stays switched out, which for a worker parked in the pool
 * can be forever, and a pinned greenlet never dies.  This helper passes a
 * borrowed pointer instead.  It is safe: the target is referenced by its
 * fiber (the scheduler's _current) or by the scheduler (the hub), and
 * greenlet holds the running greenlet itself.
 */
#ifndef FIB_GREENLET_H
#define FIB_GREENLET_H

#include <greenlet/greenlet.h>

/* Returns 0 when switched back to, or -1 with an exception set (for
 * example GreenletExit when the caller's greenlet is being collected). */
static inline int fib__switch_to(PyObject *g)
{
    PyObject *r = PyGreenlet_Switch((PyGreenlet *)g, NULL, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

#endif /* FIB_GREENLET_H */
