# fibers: build, test, demo and benchmarks.  Every target installs what it
# needs itself: Debian packages (tools/sysdeps.sh) and a private virtualenv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

BUILD_DEPS := setuptools wheel "Cython>=3.0" "greenlet>=3.0"
# psycopg's binary wheel bundles libpq: tests/test_psycopg.py runs
# fibers.psycopg against a throwaway PostgreSQL server (tests/pg.py).
# trustme makes the certificates tests/test_ssl.py uses.  The unmodified
# client libraries tests/test_libs_*.py run under fibers.patch(): redis-py,
# requests, urllib3, pg8000, dnspython, and aiosmtpd as their SMTP server;
# gevent, to see fibers.patch() refuse to run under its monkey patching.
# httptools is fibers.http's parser (the `http` extra); Flask, a real app
# for it.  prometheus_client is fibers.metrics' (the `metrics` extra): its
# collector API, its exposition and its parser, which the tests read the
# endpoint with.
TEST_DEPS  := pytest "psycopg[binary]>=3.1" trustme redis requests urllib3 \
              pg8000 aiosmtpd dnspython gevent "httptools>=0.6" flask \
              prometheus_client
BENCH_DEPS := pytest-benchmark gevent uvloop trio
BENCH_FS_DEPS := watchdog inotify_simple watchfiles
# bench-http's peer servers: granian, bjoern (built from source against
# Debian's libev-dev, hence sysdeps-bench), gunicorn with its gevent worker,
# gevent.pywsgi, uvicorn with uvloop and httptools, waitress.
BENCH_HTTP_DEPS := granian bjoern gunicorn gevent uvicorn uvloop httptools waitress

SOURCES := $(wildcard fibers/*.pyx fibers/*.pxi fibers/*.pxd csrc/*.c csrc/*.h \
                      fibers/include/*.h) setup.py pyproject.toml

.PHONY: stdtests all sysdeps sysdeps-test sysdeps-bench venv build test pytest test-pythons ctest soak-shadow run bench bench-echo bench-tls bench-bulk bench-fixed bench-fs bench-shadow bench-sync bench-subprocess bench-http bench-pytest bench-monitor clean

all: build

sysdeps:
	@PYTHON=$(PYTHON) sh tools/sysdeps.sh

# The build's packages plus Debian's postgresql, for the tests.
sysdeps-test:
	@PYTHON=$(PYTHON) sh tools/sysdeps.sh --test

# The build's packages plus OpenSSL's headers, for bench-tls.
sysdeps-bench:
	@PYTHON=$(PYTHON) sh tools/sysdeps.sh --bench

$(VENV)/.base: | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(BUILD_DEPS)
	touch $@

# The test dependencies are a step of their own, redone whenever this file
# changes, so a virtualenv made before a dependency was added gets it too.
$(VENV)/.test-deps: $(VENV)/.base Makefile
	$(PIP) install $(TEST_DEPS)
	touch $@

venv: $(VENV)/.base

$(VENV)/.built: $(VENV)/.base $(SOURCES)
	$(PIP) install --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

test: build ctest $(VENV)/.test-deps $(VENV)/.shadow-deps | sysdeps-test
	$(PY) -m pytest -q -rs tests

# The Python suite alone (test-pythons runs it with VENV and PYTHON set).
pytest: build $(VENV)/.test-deps $(VENV)/.shadow-deps | sysdeps-test
	$(PY) -m pytest -q -rs tests

# The Python suite on every CPython 3.10-3.13 under $(pyenv root)/versions,
# each in its own .venv-3.x; absent ones are skipped (and said so).
test-pythons:
	@MAKE="$(MAKE)" bash tools/test_pythons.sh

# The C parts alone, under AddressSanitizer and UBSan: the timer heap and
# ready ring, the completion pump's contract on each backend, the native
# heap's allocator, the blocking-call pool's cancel, and the blocking-call
# detector's thread.
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
	$(CC) $(SANITIZE) -Icsrc tests/c/test_monitor.c csrc/fib_monitor.c \
	    -lpthread -o build/test_monitor
	./build/test_monitor

# fibers-shadow's promise (every file-system event reaches the store once,
# whatever happens) under crashes: SIGKILLed SOAK_KILLS times (mid-run,
# during the start-up scan, during the shutdown drain) while a writer keeps
# changing the tree, on each fs backend, into SQLite and into a throwaway
# PostgreSQL; then the store's rows are replayed against the tree.  A table
# of figures; fails if anything was lost, duplicated or spurious.  See
# tools/soak_shadow.py (--keep keeps the directories for inspection).
SOAK_KILLS ?= 24
SOAK_ARGS  ?=
soak-shadow: build $(VENV)/.test-deps $(VENV)/.shadow-deps | sysdeps-test
	$(PY) -m tools.soak_shadow --kills $(SOAK_KILLS) --fs-backend both \
	    --store both $(SOAK_ARGS)

# The main job: fibers-shadow on a demo directory that a producer keeps
# busy (creates, writes, renames, deletes, mkdir), shipping to an embedded
# SQLite store.  The live UI on a terminal (q quits); otherwise headless for
# about 15 s.  Then a summary of what the store holds, per kind.
run: build $(VENV)/.shadow-deps
	$(PY) -m fibers.shadow.demo

# The `shadow` extra (pyproject.toml), redone whenever this file changes.
SHADOW_DEPS := "rich>=13" "psycopg[binary]>=3.1"
$(VENV)/.shadow-deps: $(VENV)/.base Makefile
	$(PIP) install $(SHADOW_DEPS) $$($(PY) -c 'import sys; print("tomli>=1.1" if sys.version_info < (3, 11) else "")')
	touch $@

# fibers-shadow into a throwaway PostgreSQL cluster (tools/pgcluster.py, as
# the tests use), on a demo directory, headless, for RUN_SECONDS (15), then a
# summary read back from the table; the server is stopped at the end.
RUN_SECONDS ?= 15
run-postgres: build $(VENV)/.test-deps | sysdeps-test
	$(PY) -m tools.run_postgres --seconds $(RUN_SECONDS)

# The words demo: ticker, workers, signals, conditions, an echo server, a file.
.PHONY: run-postgres
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

# TLS echo servers (fibers.ssl, uvloop, gevent's ssl) on loopback, driven by
# a C load generator on OpenSSL (compiled into build/echo/; needs libssl-dev).
bench-tls: build $(VENV)/.bench | sysdeps-bench
	$(PY) -m bench.tls_run

# Bulk upload into an accepted connection: fibers on each backend (and
# io_uring without multishot) against uvloop and gevent.
bench-bulk: build $(VENV)/.bench
	$(PY) -m bench.bulk

# Reads into blobs of a registered heap (io_uring fixed buffers) against
# plain buffers.
bench-fixed: build
	$(PY) -m bench.fixed_buffers

# File-system watchers: fibers.fs (fanotify, inotify) against watchdog,
# inotify_simple and watchfiles, fed by a C writer (compiled into
# build/fs/).  The full run is long; for a quick check, e.g.
#   make bench-fs BENCH_FS_REPEATS=1 BENCH_FS_MAX_OPS=2000 BENCH_FS_RATE_OPS=2000
BENCH_FS_REPEATS  ?= 5
BENCH_FS_MAX_OPS  ?= 100000
BENCH_FS_RATE_OPS ?= 50000
BENCH_FS_RATE     ?= 10000

$(VENV)/.bench-fs: $(VENV)/.base
	$(PIP) install $(BENCH_FS_DEPS)
	touch $@

build/fs/writer: bench/fs/writer.c
	mkdir -p build/fs
	$(CC) -O2 -Wall -o $@ $<

bench-fs: build $(VENV)/.bench-fs build/fs/writer
	$(PY) -m bench.fs_run --repeats $(BENCH_FS_REPEATS) --max-ops $(BENCH_FS_MAX_OPS) \
	    --rate-ops $(BENCH_FS_RATE_OPS) --rate $(BENCH_FS_RATE)

# fibers-shadow end to end into PostgreSQL, against the obvious threaded
# pipeline (watchdog + queue + psycopg thread); see bench/shadow_run.py.
bench-shadow: build $(VENV)/.bench-fs $(VENV)/.test-deps build/fs/writer | sysdeps-test
	$(PY) -m bench.shadow_run

# Lock hand-off and Queue ping-pong (ns/op) against uvloop and gevent; see
# bench/sync_run.py.
bench-sync: build $(VENV)/.bench
	$(PY) -m bench.sync_run

# 100 subprocesses `sleep 0.2` at once under a 10 ms ticker: wall time and
# the ticker's worst gap, fibers.subprocess on each backend against
# asyncio's subprocess on uvloop (and on plain asyncio); see
# bench/subprocess_run.py.  Quick check, e.g.
#   make bench-subprocess BENCH_SUBPROCESS_ARGS="--rounds 1 --procs 5"
BENCH_SUBPROCESS_ARGS ?=
bench-subprocess: build $(VENV)/.bench
	$(PY) -m bench.subprocess_run $(BENCH_SUBPROCESS_ARGS)

# HTTP servers on loopback running a hello-world WSGI app (and one of
# 16 KiB): fibers.http against granian, bjoern, gunicorn's gevent worker,
# gevent.pywsgi, uvicorn (ASGI) and waitress, driven by wrk; req/s,
# requests per server-CPU-second and p99 latency.  See bench/http_run.py.
# Quick check, e.g.
#   make bench-http BENCH_HTTP_ARGS="--rounds 1 --duration 1 --servers bjoern"
BENCH_HTTP_ARGS ?=
$(VENV)/.bench-http: $(VENV)/.base Makefile | sysdeps-bench
	$(PIP) install $(BENCH_HTTP_DEPS)
	touch $@

bench-http: build $(VENV)/.bench-http | sysdeps-bench
	$(PY) -m bench.http_run $(BENCH_HTTP_ARGS)

# The blocking-call detector's cost: the core workloads with the monitor
# off and on (FIBERS_MONITOR=0.1), interleaved; see bench/monitor_run.py.
# BENCH_MONITOR_ARGS="--baseline DIR" adds another built checkout.
BENCH_MONITOR_ARGS ?=
bench-monitor: build $(VENV)/.bench
	$(PY) -m bench.monitor_run $(BENCH_MONITOR_ARGS)

bench-pytest: build $(VENV)/.bench $(VENV)/.test-deps
	$(PY) -m pytest bench/test_bench.py --benchmark-only \
	    --benchmark-json=bench/results/pytest-benchmark.json

# Everything a build, a test run or a benchmark writes into the tree: the
# C Cython makes of each fibers/*.pyx, the annotation pages of FIBERS_ANNOTATE=1
# (one per .pyx and .pxi), the extensions of every interpreter, the
# virtualenvs, build/ (ctest, the benchmarks' C programs), and the caches.
CYTHON_PYX := $(wildcard fibers/*.pyx)
clean:
	rm -rf build $(VENV) .venv-3.* *.egg-info .pytest_cache .benchmarks \
	    fibers/*.so $(CYTHON_PYX:.pyx=.c) fibers/*.html
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The documentation site (mkdocs.yml, docs/): the page of differences from
# socket.socket is written from tests/test_conformance.py first, then MkDocs
# with the Material theme builds everything into build/site/, with warnings
# as errors.  tests/test_docs.py builds it too and runs every example of the
# README and the pages, so the tests install MkDocs as well.
DOCS_DEPS := "mkdocs>=1.6,<2" "mkdocs-material>=9.5,<10"
$(VENV)/.docs-deps: $(VENV)/.base Makefile
	$(PIP) install $(DOCS_DEPS)
	touch $@

.PHONY: docs
docs: $(VENV)/.docs-deps
	$(PY) tools/gen_socket_differences.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test pytest: $(VENV)/.docs-deps

# CPython's own test_socket, test_selectors, test_httplib,
# test_urllib2_localnet and test_subprocess, unpatched and under
# fibers.patch() (each test a fiber), compared (tools/stdtests.py), on
# both pump backends: the table of docs/patch.md.  Minutes long: not part
# of `make test`.  STDTESTS_ARGS adds options (-k, --module-timeout ...).
STDTESTS_ARGS ?=
stdtests: build
	$(PY) tools/stdtests.py --backend io_uring $(STDTESTS_ARGS)
	$(PY) tools/stdtests.py --backend epoll $(STDTESTS_ARGS)
