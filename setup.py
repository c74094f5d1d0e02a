"""Build script for fibers: one compiled core, no pure-Python fallback."""
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build requirement
    sys.exit("fibers needs Cython >= 3 to build (pip install cython)")

import greenlet


def greenlet_include():
    # greenlet ships greenlet.h inside the package directory; the header is
    # included as <greenlet/greenlet.h>, so we need the directory above it.
    return os.path.dirname(os.path.dirname(greenlet.__file__))


debug = os.environ.get("FIBERS_DEBUG") == "1"
cflags = ["-O0", "-g"] if debug else ["-O2"]
cflags += ["-std=gnu11", "-Wno-unused-function"]

extensions = [
    Extension(
        "fibers._core",
        sources=["fibers/_core.pyx", "csrc/fib_heap.c", "csrc/fib_stack.c"],
        include_dirs=["csrc", greenlet_include()],
        extra_compile_args=cflags,
        depends=["csrc/fib_ring.h", "csrc/fib_heap.h", "csrc/fib_sys.h",
                 "csrc/fib_stack.h", "csrc/fib_greenlet.h",
                 "fibers/_core.pxd"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        annotate=os.environ.get("FIBERS_ANNOTATE") == "1",
    ),
)
