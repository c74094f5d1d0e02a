"""The C API: an extension compiled at test time against
fibers.get_include() uses every function and walks the table; a Cython
module cimports fibers; the table's declarations cannot drift apart."""
import importlib
import os
import re
import shutil
import sys
import threading

import pytest

import fibers

C_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fibers.h>

/* Every member after `version` is a function pointer; walked as such. */
typedef void (*any_slot)(void);
_Static_assert((sizeof(Fibers_CAPI) - offsetof(Fibers_CAPI, Spawn))
               % sizeof(any_slot) == 0,
               "Fibers_CAPI: after version, only function pointers");

/* table() -> (version in the capsule, FIBERS_CAPI_VERSION of this header,
 * how many slots the header's struct has, indices of the NULL ones) */
static PyObject *table(PyObject *self, PyObject *unused)
{
    const char *base = (const char *)Fibers_API;
    size_t first = offsetof(Fibers_CAPI, Spawn);
    size_t n = (sizeof(Fibers_CAPI) - first) / sizeof(any_slot);
    PyObject *nulls = PyList_New(0);
    if (nulls == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        any_slot f;
        memcpy(&f, base + first + i * sizeof(f), sizeof(f));
        if (f == NULL) {
            PyObject *k = PyLong_FromSize_t(i);
            if (k == NULL || PyList_Append(nulls, k) < 0) {
                Py_XDECREF(k);
                Py_DECREF(nulls);
                return NULL;
            }
            Py_DECREF(k);
        }
    }
    return Py_BuildValue("iinN", Fibers_API->version, FIBERS_CAPI_VERSION,
                         (Py_ssize_t)n, nulls);
}

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
    {"table", table, METH_NOARGS, NULL},
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


# -- one table, declared once ----------------------------------------------

def _balanced(text, i):
    """The text inside the parenthesis that opens at text[i]."""
    assert text[i] == "("
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    raise ValueError("unbalanced parentheses")


def _arity(params):
    """How many parameters a C or Cython parameter list has."""
    params = params.strip()
    if params in ("", "void"):
        return 0
    depth, n = 0, 1
    for c in params:
        depth += {"(": 1, ")": -1}.get(c, 0)
        n += c == "," and depth == 0
    return n


def _calls(text, pattern):
    """[(name, arity)] for each match of pattern, whose last character is
    the opening parenthesis of a parameter list, in order."""
    return [(m.group(1), _arity(_balanced(text, m.end() - 1)))
            for m in re.finditer(pattern, text)]


def _members(members):
    """[(name, arity)] of the function-pointer members of a struct, one
    member per string: `ret (*Name)(params)`, params possibly nested."""
    out = []
    for member in members:
        m = re.match(r"[^(]*\(\s*\*\s*(\w+)\s*\)\s*\(", member)
        assert m, f"not a function pointer: {member!r}"
        out.append((m.group(1), _arity(_balanced(member, m.end() - 1))))
    return out


def _header():
    with open(os.path.join(fibers.get_include(), "fibers.h")) as f:
        return re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)


def _header_slots():
    """The header's struct: [(slot, arity)] after `version`."""
    body = re.search(r"typedef struct \{(.*?)\} Fibers_CAPI;", _header(),
                     re.S).group(1)
    members = [m.strip() for m in body.split(";") if m.strip()]
    assert members[0] == "int version", "version must come first"
    return _members(members[1:])


def _header_version():
    return int(re.search(r"#define FIBERS_CAPI_VERSION (\d+)",
                         _header()).group(1))


def test_every_table_slot_is_filled(ext):
    # Walks the table as the header lays it out, slot by slot, without
    # naming them: a slot the header has but _capi.pxi leaves unset is NULL.
    version, header_version, nslots, nulls = ext.table()
    slots = [name for name, _ in _header_slots()]
    assert nslots == len(slots)
    assert [slots[i] for i in nulls] == []
    assert version == header_version == _header_version()


def test_header_macros_pxd_pxi_and_readme_list_the_slots_in_order():
    slots = _header_slots()
    header = _header()
    # Client side of the header: one Fibers_<slot> macro each.
    assert _calls(header, r"#define Fibers_(\w+)\(") == slots
    # fibers.pxd, for Cython clients, declares those macros.
    with open(os.path.join(fibers.get_include(), "fibers.pxd")) as f:
        pxd = re.sub(r"#.*", "", f.read())
    assert [c for c in _calls(pxd, r"\bFibers_(\w+)\(")
            if c[0] != "Import"] == slots
    assert re.search(r"\bint Fibers_Import\(\) except -1", pxd)
    assert re.search(r"\bint FIBERS_CAPI_VERSION\b", pxd)
    # _capi.pxi names the header's fields for Cython in the same order.
    pxi_path = os.path.join(os.path.dirname(fibers.__file__), "_capi.pxi")
    if os.path.exists(pxi_path):
        with open(pxi_path) as f:
            pxi = f.read()
        block = re.search(r"ctypedef struct Fibers_CAPI:\n((?:        .*\n)+)",
                          pxi).group(1)
        members = block.strip().split("\n")
        assert members[0].split() == ["int", "version"]
        assert _members(members[1:]) == slots
        assert "_capi.version = FIBERS_CAPI_VERSION\n" in pxi
    # The table of functions on the C API's page.
    readme = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(fibers.__file__))), "docs", "c-api.md")
    if os.path.exists(readme):
        with open(readme) as f:
            rows = [line for line in f if line.startswith("| `")]
        assert _calls("".join(rows), r"\bFibers_(\w+)\(") == slots


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
    assert cyext.api_version() == _header_version()
