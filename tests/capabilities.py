"""What the suite needs from the machine, and skips that cannot hide.

A test that cannot run here (no root for fanotify, no PostgreSQL, no tmux)
skips *for a capability*: through :func:`skip`, the :func:`requires`
marker or :func:`importorskip` below, never through a bare
``pytest.skip``.  The capabilities are declared once, in CAPABILITIES.

This module is also a pytest plugin (conftest.py registers it).  At the end
of a run it names every capability that some test skipped for, with what
it takes to have it.  With ``FIBERS_REQUIRE`` set (.ci/run sets
``FIBERS_REQUIRE=ci``) the run FAILS if a test skipped for a required
capability, or skipped without naming one: on the project's CI machine
nothing may go untested quietly.

    FIBERS_REQUIRE=ci               every capability marked required on CI
    FIBERS_REQUIRE=io_uring,tmux    just these (names from CAPABILITIES)

The check is by the skip's capability, never by matching reason strings:
a skip raised here is a ``Missing`` (a ``pytest.skip.Exception``) that
carries its capability's name.
"""
import os

import pytest

# name: (required on the CI machine, what it takes to have it)
CAPABILITIES = {
    "io_uring": (True, "fibers' io_uring backend: a kernel >= 5.19 that "
                 "lets this process set up a ring (no seccomp filter or "
                 "io_uring_disabled sysctl), and a build with liburing"),
    "liburing": (True, "fibers built with liburing (liburing-dev at build "
                 "time; sh tools/sysdeps.sh installs it)"),
    "fanotify": (True, "fibers.fs' fanotify backend: root (CAP_SYS_ADMIN) "
                 "and a kernel >= 5.9 with fanotify"),
    "inotify": (True, "fibers.fs' inotify backend: a kernel with inotify"),
    "root": (True, "running as root (kernel queue limits, privilege drops, "
             "mounts)"),
    "mount": (True, "root allowed to mount a tmpfs (a container may refuse "
              "it)"),
    "userns": (True, "unprivileged user namespaces (unshare(1) from "
               "util-linux, not refused by the kernel)"),
    "postgresql": (True, "PostgreSQL's server binaries (sh tools/sysdeps.sh "
                   "--test installs Debian's postgresql)"),
    "tmux": (True, "the tmux command (sh tools/sysdeps.sh --test)"),
    "openssl": (True, "the openssl command (sh tools/sysdeps.sh --test)"),
    "psycopg": (True, "psycopg 3 (make's TEST_DEPS)"),
    "gevent": (True, "gevent, to check that fibers.patch() refuses to "
               "run under gevent's monkey patching (make's TEST_DEPS)"),
    "redis_server": (True, "the redis-server command (sh tools/sysdeps.sh "
                     "--test installs Debian's redis-server)"),
    "client_libs": (True, "the unmodified client libraries the patch is "
                    "tested with: redis, requests, urllib3, pg8000, aiosmtpd, "
                    "dnspython (make's TEST_DEPS)"),
    "http_deps": (True, "httptools (fibers.http's parser) and Flask, a real "
                  "app for it (make's TEST_DEPS)"),
    "curl": (True, "the curl command (sh tools/sysdeps.sh --test)"),
    "wrk": (True, "the wrk load generator (sh tools/sysdeps.sh --test)"),
    "ab": (True, "ApacheBench, ab (Debian's apache2-utils; sh "
           "tools/sysdeps.sh --test)"),
    "prometheus_client": (True, "prometheus_client, fibers.metrics' "
                          "collector API and parser (make's TEST_DEPS)"),
    "prometheus": (True, "the prometheus server command (sh "
                   "tools/sysdeps.sh --test installs Debian's prometheus)"),
    "trustme": (True, "trustme, which makes test certificates (make's "
                "TEST_DEPS)"),
    "rich": (True, "rich, for fibers-shadow's UI (the shadow extra, make's "
             "SHADOW_DEPS)"),
    "mkdocs": (True, "MkDocs with the Material theme, to build the docs "
               "(make's DOCS_DEPS: make test and make docs install it)"),
    "pidfd": (True, "pidfd_open(2) (Linux >= 5.3, not refused by seccomp)"),
    "ipv6": (True, "an IPv6 loopback (::1) to bind"),
    "fd_limit": (True, "a hard RLIMIT_NOFILE of a few thousand fds"),
    "syn_drop": (True, "a loopback listener whose full accept queue drops "
                 "SYNs (the Linux default)"),
    "x86_64": (True, "an x86_64 machine: the seccomp filters and raw "
               "syscall numbers some tests use are written for it"),
    "proc_syscall": (True, "/proc/<pid>/task/<tid>/syscall, to see a "
                     "thread blocked in the pump's wait"),
    # Not a property of the machine: CPython 3.10 has no frame data stack,
    # so test-pythons' 3.10 run cannot test it, and that is not a failure.
    "datastack": (False, "CPython >= 3.11 (frames on a data stack)"),
}

REQUIRED_ON_CI = frozenset(n for n, (ci, _) in CAPABILITIES.items() if ci)


class Missing(pytest.skip.Exception):
    """A skip for want of a capability: ``capability`` names it."""

    # Reported as "Missing: [tmux] ...", as pytest's own is "Skipped: ...".
    __module__ = "builtins"

    def __init__(self, capability, reason, allow_module_level=False,
                 _use_item_location=False):
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}: declare "
                             f"it in tests/capabilities.py")
        super().__init__(f"[{capability}] {reason}",
                         allow_module_level=allow_module_level,
                         _use_item_location=_use_item_location)
        self.capability = capability
        if allow_module_level:
            _module_skips.append(self)


def skip(capability, reason):
    """Skip the calling test: it needs `capability`, absent here."""
    __tracebackhide__ = True        # report the caller's line
    raise Missing(capability, reason)


def requires(capability, why_not):
    """A marker: the test needs `capability`; `why_not` is None when it is
    there, else the reason it is not (the test then skips at setup)."""
    return pytest.mark.requires(capability, why_not)


def importorskip(modname, capability, reason=None):
    """The module `modname`, or skip the whole calling test module."""
    __tracebackhide__ = True
    try:
        return __import__(modname, fromlist=["_"])
    except ImportError as e:
        raise Missing(capability, reason or f"cannot import {modname}: {e}",
                      allow_module_level=True) from None


# ---- the plugin ----------------------------------------------------------------

# Skips raised while a module is imported (collection): the collect report
# does not carry the exception, so the one raised last is kept here for the
# report hook, which runs right after that collection.
_module_skips = []

_SKIPPED = pytest.StashKey()     # capability (None: untagged) -> [(id, why)]
_REQUIRED = pytest.StashKey()    # the required capabilities' names


def required_from_env(value):
    """The capabilities FIBERS_REQUIRE's value names ("ci" for every one
    REQUIRED_ON_CI); a UsageError for a name not declared."""
    names = set()
    for word in filter(None, (w.strip() for w in value.split(","))):
        if word == "ci":
            names |= REQUIRED_ON_CI
        elif word in CAPABILITIES:
            names.add(word)
        else:
            raise pytest.UsageError(
                f"FIBERS_REQUIRE: unknown capability {word!r} (known: ci, "
                f"{', '.join(sorted(CAPABILITIES))})")
    return names


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires(capability, why_not): the test needs "
        "capability (tests/capabilities.py); skips when why_not is not None")
    config.stash[_SKIPPED] = {}
    config.stash[_REQUIRED] = required_from_env(
        os.environ.get("FIBERS_REQUIRE", ""))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        capability, why_not = mark.args
        if why_not is not None:
            # At the test's own line, as pytest's skipif reports.
            raise Missing(capability, why_not, _use_item_location=True)


def _record(config, report, exc):
    """Note a skip: exc is the Missing raised, or None for any other."""
    if exc is not None:
        capability, reason = exc.capability, exc.msg
    else:
        capability = None
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) \
            else str(report.longrepr)
    config.stash[_SKIPPED].setdefault(capability, []).append(
        (report.nodeid, reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and call.excinfo is not None and not hasattr(
            report, "wasxfail"):
        exc = call.excinfo.value
        _record(item.config, report, exc if isinstance(exc, Missing) else None)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    del _module_skips[:]
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        _record(collector.config, report,
                _module_skips[-1] if _module_skips else None)


def _untested(config):
    """(capability or None, [(test id, reason)]) for each skipped-for one,
    required ones first."""
    skipped = config.stash[_SKIPPED]
    required = config.stash[_REQUIRED]
    return sorted(skipped.items(), key=lambda kv: (
        not _fails(kv[0], required), kv[0] or ""))


def _fails(capability, required):
    # With a requirement in force, an untagged skip fails too: it could
    # be hiding anything.
    return capability in required or (capability is None and bool(required))


def pytest_sessionfinish(session, exitstatus):
    required = session.config.stash[_REQUIRED]
    if any(_fails(c, required) for c in session.config.stash[_SKIPPED]) \
            and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    tr = terminalreporter
    required = config.stash[_REQUIRED]
    untested = _untested(config)
    if not untested:
        if required:
            tr.write_line(f"capabilities: no test skipped for a required one "
                          f"({', '.join(sorted(required))})", green=True)
        return
    tr.section("capabilities not tested here", sep="-")
    for capability, skips in untested:
        fails = _fails(capability, required)
        if capability is None:
            what = " without naming a capability (skip through " \
                   "tests/capabilities.py)"
        else:
            what = f"; needs {CAPABILITIES[capability][1]}"
        tr.write_line(f"{'REQUIRED ' if fails else ''}"
                      f"{capability or '(untagged)'}: {len(skips)} skipped"
                      f"{what}", red=fails, yellow=not fails)
        tr.write_line(f"    e.g. {skips[0][0]}: {skips[0][1]}")
    names = ", ".join(c or "(untagged)" for c, _ in untested)
    failing = [c or "(untagged)" for c, _ in untested if _fails(c, required)]
    if failing:
        tr.write_line(f"FAILED (FIBERS_REQUIRE): required capabilities not "
                      f"tested: {', '.join(failing)}", red=True, bold=True)
    else:
        tr.write_line(f"capabilities not tested here: {names}", yellow=True)
