# fibers: build, test, demo and benchmarks.  Every target installs what it
# needs itself: Debian packages (tools/sysdeps.sh) and a private virtualenv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

BUILD_DEPS := setuptools wheel "Cython>=3.0" "greenlet>=3.0"
TEST_DEPS  := pytest
BENCH_DEPS := pytest-benchmark gevent uvloop trio

SOURCES := $(wildcard fibers/*.pyx fibers/*.pxi fibers/*.pxd csrc/*.c csrc/*.h \
                      fibers/include/*.h) setup.py

.PHONY: all sysdeps venv build test pytest test-pythons ctest run bench bench-echo bench-bulk bench-fixed bench-pytest clean

all: build

sysdeps:
	@PYTHON=$(PYTHON) sh tools/sysdeps.sh

$(VENV)/.base: | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(BUILD_DEPS) $(TEST_DEPS)
	touch $@

venv: $(VENV)/.base

$(VENV)/.built: $(VENV)/.base $(SOURCES)
	$(PIP) install --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

test: build ctest
	$(PY) -m pytest -q tests

# The Python suite alone (test-pythons runs it with VENV and PYTHON set).
pytest: build
	$(PY) -m pytest -q tests

# The Python suite on every CPython 3.10-3.13 under $(pyenv root)/versions,
# each in its own .venv-3.x; absent ones are skipped (and said so).
test-pythons:
	@MAKE="$(MAKE)" bash tools/test_pythons.sh

# The C parts alone, under AddressSanitizer and UBSan: the timer heap and
# ready ring, the completion pump's contract on each backend, the native
# heap's allocator, and the blocking-call pool's cancel.
SANITIZE := -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
# fib_uring.c is compiled only when pkg-config finds liburing (as in
# setup.py).  test_pump is built twice: as configured here, and always also
# without liburing (epoll only, fib_pump.c's fallback probe), so the build
# without liburing is tested on every run.
HAVE_URING := $(shell pkg-config --exists liburing 2>/dev/null && echo 1)
URING_FLAGS = $(if $(HAVE_URING),-DFIB_HAVE_LIBURING $(shell pkg-config --cflags liburing))
URING_SRCS  = $(if $(HAVE_URING),csrc/fib_uring.c)
URING_LIBS  = $(if $(HAVE_URING),$(shell pkg-config --libs liburing))

ctest: | sysdeps
	mkdir -p build
	$(CC) $(SANITIZE) -Icsrc tests/c/test_heap_ring.c csrc/fib_heap.c \
	    -o build/test_heap_ring
	./build/test_heap_ring
	$(CC) $(SANITIZE) $(URING_FLAGS) -Icsrc tests/c/test_pump.c \
	    csrc/fib_pump.c csrc/fib_epoll.c $(URING_SRCS) \
	    $(URING_LIBS) -o build/test_pump
	./build/test_pump
	$(CC) $(SANITIZE) -Icsrc tests/c/test_pump.c \
	    csrc/fib_pump.c csrc/fib_epoll.c -o build/test_pump_nouring
	./build/test_pump_nouring
	$(CC) $(SANITIZE) -Icsrc tests/c/test_arena.c csrc/fib_arena.c -o build/test_arena
	./build/test_arena
	$(CC) $(SANITIZE) -Icsrc tests/c/test_pool.c csrc/fib_pool.c -lpthread \
	    -o build/test_pool
	./build/test_pool

run: build
	$(PY) examples/demo.py

# The words demo: ticker, workers, signals, conditions, an echo server, a file.
.PHONY: demo
demo: build
	$(PY) examples/demo.py

$(VENV)/.bench: $(VENV)/.base
	$(PIP) install $(BENCH_DEPS)
	touch $@

bench: build $(VENV)/.bench
	$(PY) -m bench.run

# TCP echo servers on loopback: fibers vs its peers and a plain C epoll
# server, driven by a C load generator (compiled into build/echo/).
bench-echo: build $(VENV)/.bench
	$(PY) -m bench.echo_run

# Bulk upload into an accepted connection: fibers on each backend (and
# io_uring without multishot) against uvloop and gevent.
bench-bulk: build $(VENV)/.bench
	$(PY) -m bench.bulk

# Reads into blobs of a registered heap (io_uring fixed buffers) against
# plain buffers.
bench-fixed: build
	$(PY) -m bench.fixed_buffers

bench-pytest: build $(VENV)/.bench
	$(PY) -m pytest bench/test_bench.py --benchmark-only \
	    --benchmark-json=bench/results/pytest-benchmark.json

clean:
	rm -rf build $(VENV) .venv-3.* *.egg-info fibers/*.so fibers/_core.c fibers/_heap.c fibers/*.html
