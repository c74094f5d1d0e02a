"""Build script for fibers: one compiled core, no pure-Python fallback.

Environment switches:
  FIBERS_DEBUG=1        build with -O0 -g
  FIBERS_ANNOTATE=1     write Cython's HTML annotation
  FIBERS_NO_LIBURING=1  build without liburing even where pkg-config finds
                        it: the epoll backend alone, as on a machine
                        without liburing-dev (used to test that build)
"""
import os
import subprocess
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


def liburing():
    """Compiler and linker flags for liburing, from pkg-config.  Without it
    the package still builds, with the epoll backend alone, and
    fibers.backends() says why io_uring is missing."""
    if os.environ.get("FIBERS_NO_LIBURING") == "1":
        print("fibers: FIBERS_NO_LIBURING=1; building with the epoll "
              "backend only", file=sys.stderr)
        return [], []
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", "liburing"],
                                capture_output=True, text=True, check=True)
        libs = subprocess.run(["pkg-config", "--libs", "liburing"],
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        print("fibers: liburing not found by pkg-config; building with "
              "the epoll backend only", file=sys.stderr)
        return [], []
    return (["-DFIB_HAVE_LIBURING"] + cflags.stdout.split(),
            libs.stdout.split())


debug = os.environ.get("FIBERS_DEBUG") == "1"
cflags = ["-O0", "-g"] if debug else ["-O2"]
cflags += ["-std=gnu11", "-Wno-unused-function"]
# A C API slot filled with a function of another type than fibers.h says
# must not build.
cflags += ["-Werror=incompatible-pointer-types"]
uring_cflags, uring_libs = liburing()
# fib_uring.c is compiled only with liburing: without it there is no
# io_uring table to build, and fib_pump.c supplies the probe that says why.
pump_sources = ["csrc/fib_pump.c", "csrc/fib_epoll.c"]
if uring_cflags:
    pump_sources.append("csrc/fib_uring.c")

extensions = [
    Extension(
        "fibers._core",
        sources=["fibers/_core.pyx", "csrc/fib_heap.c", "csrc/fib_stack.c",
                 "csrc/fib_pool.c", "csrc/fib_monitor.c"] + pump_sources,
        # fibers/include: the C API's header, which _capi.pxi includes.
        include_dirs=["csrc", "fibers/include", greenlet_include()],
        extra_compile_args=cflags + uring_cflags,
        extra_link_args=uring_libs + ["-pthread"],
        depends=["csrc/fib_ring.h", "csrc/fib_heap.h", "csrc/fib_sys.h",
                 "csrc/fib_stack.h", "csrc/fib_greenlet.h",
                 "csrc/fib_pump.h", "fibers/_core.pxd", "fibers/_pump.pxi",
                 "fibers/_pump.pxd", "fibers/_net.pxd", "fibers/_file.pxd",
                 "fibers/_ring.pxd", "fibers/_blocking.pxd",
                 "fibers/_net.pxi", "fibers/_stream.pxd",
                 "fibers/_stream.pxi", "fibers/_file.pxi", "fibers/_ring.pxi",
                 "fibers/_blocking.pxi", "fibers/_capi.pxi",
                 "fibers/_group.pxd", "fibers/_group.pxi",
                 "fibers/_threadlock.pxd", "fibers/_threadlock.pxi",
                 "csrc/fib_pool.h", "fibers/_heap.pxd", "csrc/fib_arena.h",
                 "fibers/include/fibers.h", "csrc/fib_monitor.h",
                 "fibers/_monitor.pxd", "fibers/_monitor.pxi"],
    ),
    # The native heap (fibers.Heap, fibers.Blob).  _core cimports its
    # classes (registered heaps), hence _heap.pxd in _core's depends too.
    Extension(
        "fibers._heap",
        sources=["fibers/_heap.pyx", "csrc/fib_arena.c"],
        include_dirs=["csrc"],
        extra_compile_args=cflags,
        depends=["csrc/fib_arena.h", "fibers/_heap.pxd"],
    ),
    # fibers.http's connection loop (the parser is httptools', at run time).
    # It cimports the core's Scheduler and socket state (its hot path reads
    # and times out without Python calls): _core.pxd's headers come along.
    Extension(
        "fibers._http",
        sources=["fibers/_http.pyx"],
        include_dirs=["csrc", "fibers/include", greenlet_include()],
        extra_compile_args=cflags + uring_cflags,
        depends=["fibers/_core.pxd", "fibers/_net.pxd", "fibers/_pump.pxd",
                 "fibers/_stream.pxd"],
    ),
    # fibers.fs: the file-system watcher (fanotify / inotify records are
    # parsed by csrc/fib_fs.h).
    Extension(
        "fibers._fs",
        sources=["fibers/_fs.pyx"],
        # _fs cimports the core's WaitQueue, Fiber and Scheduler: the
        # headers _core.pxd names come along.
        include_dirs=["csrc", "fibers/include", greenlet_include()],
        extra_compile_args=cflags + uring_cflags,
        depends=["csrc/fib_fs.h", "fibers/_fs.pxd", "fibers/_fs_inotify.pxi",
                 "fibers/_fs_fanotify.pxi", "fibers/_core.pxd"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        annotate=os.environ.get("FIBERS_ANNOTATE") == "1",
    ),
)
