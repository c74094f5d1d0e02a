"""The C API: an extension compiled at test time against
fibers.get_include() uses every function; a Cython module cimports fibers."""
import importlib
import os
import shutil
import sys
import threading

import pytest

import fibers

C_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <fibers.h>

typedef struct { const unsigned char *buf; size_t n; uint64_t hash; } hash_job;

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int hash_in_pool(void *arg)
{
    hash_job *job = arg;
    job->hash = fnv1a(job->buf, job->n);
    return 7;
}

static unsigned char *pattern(size_t n)
{
    unsigned char *buf = malloc(n);
    if (buf != NULL)
        for (size_t i = 0; i < n; i++)
            buf[i] = (unsigned char)(i * 2654435761u >> 13);
    return buf;
}

/* hash(nbytes, offload) -> (hash, fn's result) */
static PyObject *hash(PyObject *self, PyObject *args)
{
    Py_ssize_t n;
    int offload, result = -1;
    if (!PyArg_ParseTuple(args, "np", &n, &offload))
        return NULL;
    /* Heap memory: the fiber's stack is not stable while it waits. */
    hash_job *job = malloc(sizeof(*job));
    if (job == NULL)
        return PyErr_NoMemory();
    job->buf = pattern((size_t)n);
    job->n = (size_t)n;
    job->hash = 0;
    if (job->buf == NULL) {
        free(job);
        return PyErr_NoMemory();
    }
    if (offload) {
        if (Fibers_Offload(hash_in_pool, job, &result) < 0) {
            free((void *)job->buf);
            free(job);
            return NULL;
        }
    } else {
        result = hash_in_pool(job);
    }
    unsigned long long h = job->hash;
    free((void *)job->buf);
    free(job);
    return Py_BuildValue("Ki", h, result);
}

/* Offloading a pointer into the stack must be refused, not corrupt. */
static PyObject *offload_stack_arg(PyObject *self, PyObject *unused)
{
    hash_job job = {NULL, 0, 0};
    int result = 0;
    if (Fibers_Offload(hash_in_pool, &job, &result) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *spawn(PyObject *self, PyObject *args)
{
    PyObject *fn, *fargs = NULL, *kwargs = NULL;
    if (!PyArg_ParseTuple(args, "O|OO", &fn, &fargs, &kwargs))
        return NULL;
    return Fibers_Spawn(fn, fargs, kwargs);
}

static PyObject *yield_(PyObject *self, PyObject *unused)
{
    if (Fibers_Yield() < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *sleep_(PyObject *self, PyObject *args)
{
    double s;
    if (!PyArg_ParseTuple(args, "d", &s) || Fibers_Sleep(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *wait_fd(PyObject *self, PyObject *args)
{
    int fd, readable, rc;
    double timeout;
    if (!PyArg_ParseTuple(args, "ipd", &fd, &readable, &timeout))
        return NULL;
    rc = Fibers_WaitFd(fd, readable ? POLLIN : POLLOUT, timeout);
    if (rc < 0)
        return NULL;
    return PyLong_FromLong(rc);
}

static PyObject *current(PyObject *self, PyObject *unused)
{
    return Fibers_Current();
}

static PyObject *signal_all(PyObject *self, PyObject *args)
{
    PyObject *name, *value = NULL;
    int n;
    if (!PyArg_ParseTuple(args, "O|O", &name, &value))
        return NULL;
    n = Fibers_SignalAll(name, value);
    if (n < 0)
        return NULL;
    return PyLong_FromLong(n);
}

static PyMethodDef methods[] = {
    {"hash", hash, METH_VARARGS, NULL},
    {"offload_stack_arg", offload_stack_arg, METH_NOARGS, NULL},
    {"spawn", spawn, METH_VARARGS, NULL},
    {"yield_", yield_, METH_NOARGS, NULL},
    {"sleep", sleep_, METH_VARARGS, NULL},
    {"wait_fd", wait_fd, METH_VARARGS, NULL},
    {"current", current, METH_NOARGS, NULL},
    {"signal_all", signal_all, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capi_ext", NULL,
                                    -1, methods};

PyMODINIT_FUNC PyInit_capi_ext(void)
{
    if (Fibers_Import() < 0)
        return NULL;
    return PyModule_Create(&module);
}
"""

PYX_SOURCE = r"""
# cython: language_level=3
cimport fibers
from libc.stdlib cimport malloc, free

fibers.Fibers_Import()

cdef int add_in_pool(void *arg) noexcept nogil:
    cdef int *p = <int *>arg
    return p[0] + p[1]

def offload_add(int a, int b):
    cdef int *pair = <int *>malloc(2 * sizeof(int))
    cdef int result = 0
    pair[0] = a
    pair[1] = b
    try:
        fibers.Fibers_Offload(add_in_pool, pair, &result)
    finally:
        free(pair)
    return result

def nap(double s):
    fibers.Fibers_Sleep(s)

def who():
    return fibers.Fibers_Current()

def api_version():
    return fibers.FIBERS_CAPI_VERSION
"""


def build(tmp_path_factory, name, filename, source, cython=False):
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    d = tmp_path_factory.mktemp(name)
    src = d / filename
    src.write_text(source)
    ext = Extension(name, [str(src)], include_dirs=[fibers.get_include()])
    if cython:
        from Cython.Build import cythonize
        ext = cythonize([ext], include_path=[fibers.get_include()],
                        quiet=True, build_dir=str(d / "c"))[0]
    dist = Distribution({"name": name, "ext_modules": [ext]})
    cmd = build_ext(dist)
    cmd.build_lib = str(d)
    cmd.build_temp = str(d / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    sys.path.insert(0, str(d))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(d))


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.fail("a C compiler is needed to test the C API")
    return build(tmp_path_factory, "capi_ext", "capi_ext.c", C_SOURCE)


@pytest.fixture(scope="module")
def cyext(tmp_path_factory):
    return build(tmp_path_factory, "capi_cy", "capi_cy.pyx", PYX_SOURCE,
                 cython=True)


def test_get_include_has_the_header_and_pxd():
    inc = fibers.get_include()
    assert os.path.isfile(os.path.join(inc, "fibers.h"))
    assert os.path.isfile(os.path.join(inc, "fibers.pxd"))


def test_offload_hashes_256_mib_while_a_ticker_keeps_time(ext, io_sched):
    n = 256 << 20
    ticks = []

    def main():
        tick = fibers.periodic(lambda: ticks.append(fibers.now()), 0.01)
        fibers.yield_now()
        result = ext.hash(n, True)
        tick.cancel()
        return result

    (h, rc) = io_sched.run(main)
    assert rc == 7
    assert h == ext.hash(n, False)[0]
    # The ticker ran while the pool hashed, on schedule.
    assert len(ticks) >= 2
    assert ticks == [pytest.approx(0.01 * (i + 1)) for i in range(len(ticks))]


def test_spawn_yield_sleep_current(ext, io_sched):
    log = []

    def child(tag, *, extra=None):
        log.append((tag, extra))
        return tag

    def main():
        me = ext.current()
        assert me is fibers.current()
        f = ext.spawn(child, ("a",), {"extra": 1})
        g = ext.spawn(child, ("b",))
        ext.yield_()
        assert log == [("a", 1), ("b", None)]
        t0 = fibers.now()
        ext.sleep(2.5)
        return f.join(), g.join(), fibers.now() - t0

    assert io_sched.run(main) == ("a", "b", 2.5)


def test_wait_fd_ready_and_timeout(ext, io_sched):
    r, w = os.pipe()
    try:
        def main():
            t0 = fibers.now()
            assert ext.wait_fd(r, True, 1.5) == 0          # timed out
            waited = fibers.now() - t0
            fibers.delay(lambda: os.write(w, b"x"), 0.5)
            ready = ext.wait_fd(r, True, -1)
            return waited, ready, ext.wait_fd(w, False, 0)

        waited, ready, writable = io_sched.run(main)
        assert 1.5 <= waited < 2.0
        assert ready & 1            # POLLIN
        assert writable & 4         # POLLOUT
    finally:
        os.close(r)
        os.close(w)


def test_signal_all(ext, io_sched):
    def main():
        waiters = [fibers.spawn(fibers.wait_signal, "go") for _ in range(3)]
        fibers.yield_now()
        assert ext.signal_all("go", "v") == 3
        assert ext.signal_all("nobody") == 0
        return [w.join() for w in waiters]
    assert io_sched.run(main) == ["v", "v", "v"]


def test_calls_without_a_running_scheduler_raise_runtime_error(ext):
    with pytest.raises(RuntimeError, match="no scheduler is running"):
        ext.yield_()
    errors = []

    def other_thread():
        try:
            ext.sleep(0.1)
        except RuntimeError as e:
            errors.append(str(e))
    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert errors and "no scheduler is running" in errors[0]


def test_offload_refuses_a_pointer_into_the_stack(ext, io_sched):
    def main():
        with pytest.raises(ValueError, match="C stack"):
            ext.offload_stack_arg()
        return True
    assert io_sched.run(main)


def test_bad_input(ext, io_sched):
    def main():
        with pytest.raises(ValueError):
            ext.sleep(-1)
        with pytest.raises(TypeError):
            ext.spawn(42)
        with pytest.raises(ValueError):
            ext.wait_fd(-1, True, 0)
        return True
    assert io_sched.run(main)


def test_a_cython_module_cimports_fibers(cyext, io_sched):
    def main():
        t0 = fibers.now()
        cyext.nap(1.0)
        return cyext.offload_add(40, 2), fibers.now() - t0, cyext.who()

    total, waited, who = io_sched.run(main)
    assert total == 42 and waited == 1.0
    assert isinstance(who, fibers.Fiber)
    assert cyext.api_version() >= 1
