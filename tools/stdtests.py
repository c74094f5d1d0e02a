"""CPython's own tests under ``fibers.patch()``: ``make stdtests``.

Design note.  gevent runs the stdlib's test suite under its monkey patch
(``gevent.testing``): the same tests, the patch applied before they are
imported, each test body inside a greenlet, a timeout around each.  This
runner does the same for fibers and compares against the same tests run
without the patch, so a failure that only the patched run shows is ours
(or a difference we document).

Each (module, mode) runs in a child process of its own, with unittest.
The *patched* child calls ``fibers.patch()`` before it imports the test
module and runs every test (``TestCase.__call__``: setUp, the test,
tearDown and the cleanups) as the main fiber of one ``fibers.Scheduler``
on the chosen backend.  Class and module fixtures (``setUpClass``,
``setUpModule``) run outside any fiber, so what they make is the stdlib's
own, as the patch promises for objects made outside fibers.  The
*unpatched* child runs the same tests with plain unittest.

The child writes one JSON line per event (a test started, a test ended
with its outcome) to a results file and flushes it, so the parent knows
what ran even when the child dies.  Hangs are the danger (one wedged
test must not eat the run), so there are three guards, from the inside
out: faulthandler in the child dumps every thread's stack and exits when
a test runs past its limit; the parent, watching the results file, kills
a child whose current test has run well past it (a test may cancel
faulthandler's timer with one of its own); and the parent bounds each
module's whole run.  A test that hung or crashed the child is recorded
as ``hang`` or ``crash`` (counted as failures) and the child is started
again with everything already recorded left out.

Usage::

    python tools/stdtests.py [--backend io_uring|epoll] [--python PY]
                             [--test-timeout S] [-k PATTERN] [module ...]

``--python`` must be an interpreter that imports fibers (a virtualenv
made by ``make build`` or ``make test-pythons``).  The output is a
Markdown table (pass/fail/error/skip per module, unpatched and patched)
and, per module, the tests that pass unpatched but not patched.
"""

import argparse
import datetime
import faulthandler
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MODULES = ["test_selectors", "test_socket", "test_httplib",
           "test_urllib2_localnet", "test_subprocess"]

# Outcomes, and the column each is counted in.  An expected failure is a
# pass (the test says so); an unexpected success, a hang and a crash of
# the child are failures.
COLUMN = {"pass": "pass", "xfail": "pass", "fail": "fail", "uxpass": "fail",
          "hang": "fail", "crash": "fail", "error": "error", "skip": "skip"}
COLUMNS = ("pass", "fail", "error", "skip")
# Worst first: a test's outcome is the worst of its subtests'.
SEVERITY = ("crash", "hang", "error", "fail", "uxpass", "skip", "xfail",
            "pass")

# Resources test.support checks (support.requires): loopback-only work is
# enabled; the network beyond it, GUIs, audio and huge files are not.
RESOURCES = ["subprocess", "decimal", "walltime"]

# How much longer than the per-test limit the parent waits before it
# kills a child itself (faulthandler in the child should have fired).
GRACE = 15.0
MAX_RESTARTS = 50


# ---- the child: one module, one mode --------------------------------------

class _Recorder:
    """The child's TestResult: one JSON line per event, flushed."""

    def __init__(self, out, limit, log):
        import unittest

        class Result(unittest.TestResult):
            def startTest(res, test):
                super().startTest(test)
                res._outcome_of = "pass"
                res._detail = ""
                self._emit({"ev": "start", "id": test.id()})
                faulthandler.dump_traceback_later(limit, exit=True, file=log)

            def stopTest(res, test):
                faulthandler.cancel_dump_traceback_later()
                self._emit({"ev": "end", "id": test.id(),
                            "outcome": res._outcome_of,
                            "detail": res._detail})
                super().stopTest(test)

            def _note(res, test, outcome, detail):
                if not isinstance(test, unittest.TestCase) or \
                        type(test).__name__ == "_ErrorHolder":
                    # setUpClass, setUpModule and their teardowns: no
                    # startTest; recorded as a test of their own.
                    self._emit({"ev": "end", "id": str(test),
                                "outcome": outcome, "detail": detail})
                    return
                if SEVERITY.index(outcome) < SEVERITY.index(res._outcome_of):
                    res._outcome_of = outcome
                    res._detail = detail

            def addError(res, test, err):
                super().addError(test, err)
                res._note(test, "error", _format(res, err, test))

            def addFailure(res, test, err):
                super().addFailure(test, err)
                res._note(test, "fail", _format(res, err, test))

            def addSkip(res, test, reason):
                super().addSkip(test, reason)
                res._note(test, "skip", str(reason))

            def addExpectedFailure(res, test, err):
                super().addExpectedFailure(test, err)
                res._note(test, "xfail", "")

            def addUnexpectedSuccess(res, test):
                super().addUnexpectedSuccess(test)
                res._note(test, "uxpass", "unexpected success")

            def addSubTest(res, test, subtest, err):
                super().addSubTest(test, subtest, err)
                if err is not None:
                    kind = "fail" if issubclass(
                        err[0], test.failureException) else "error"
                    res._note(test, kind,
                              f"{subtest}: " + _format(res, err, test))

        self.out = out
        self.result = Result()

    def _emit(self, rec):
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()


def _format(res, err, test):
    # The full traceback, minus unittest's own frames, capped: enough to
    # tell a fibers frame from a test's.
    text = res._exc_info_to_string(err, test)
    return text[-6000:]


def _drop(suite, skip):
    """The suite without the tests whose ids are in ``skip``."""
    import unittest
    out = type(suite)() if isinstance(suite, unittest.TestSuite) else None
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            out.addTest(_drop(t, skip))
        elif t.id() not in skip:
            out.addTest(t)
    return out


def child(args):
    import unittest

    log = sys.stderr
    faulthandler.enable(file=log)
    skip = set()
    if args.skip_file:
        with open(args.skip_file) as f:
            skip = set(json.load(f))
    out = open(args.results, "a", buffering=1)
    rec = _Recorder(out, args.test_timeout, log)
    if args.mode == "patched":
        # Before the test module is imported: names it binds at import
        # (from socket import socket) then get the patched objects.
        import fibers
        fibers.patch()
        sched = fibers.Scheduler(backend=args.backend)
        call = unittest.TestCase.__call__

        def in_fiber(self, *a, **kw):
            # setUp, the test, tearDown and the cleanups: one fiber.
            return sched.run(call, self, *a, **kw)

        unittest.TestCase.__call__ = in_fiber
    from test import support
    support.verbose = 0
    support.use_resources = list(RESOURCES)
    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p
                                   for p in args.k]
    sys.path[:0] = args.path or []
    name = args.module if "." in args.module or args.path \
        else "test." + args.module
    suite = loader.loadTestsFromName(name)
    suite = _drop(suite, skip)
    suite.run(rec.result)       # the top suite: module teardowns too
    rec._emit({"ev": "done"})
    out.close()
    sys.stdout.flush()
    # The tests leave threads and fibers behind at times; the results
    # are written, so do not wait for them.
    os._exit(0)


# ---- the parent: a module's run, bounded ------------------------------------

def _child_cmd(python, module, mode, backend, limit, results, skip_file, k,
               path):
    cmd = [python, os.path.abspath(__file__), "--child", module,
           "--mode", mode, "--backend", backend,
           "--test-timeout", str(limit), "--results", results]
    if skip_file:
        cmd += ["--skip-file", skip_file]
    for p in k or ():
        cmd += ["-k", p]
    for p in path or ():
        cmd += ["--path", p]
    return cmd


def run_module(python, module, mode, backend, limit, module_limit, k=None,
               logdir=None, echo=None, path=None):
    """Run ``module`` in ``mode`` ("patched" or "unpatched") in child
    processes; returns ``{test id: (outcome, detail)}`` in run order."""
    outcomes = {}
    work = tempfile.mkdtemp(prefix=f"stdtests-{module}-{mode}-")
    results = os.path.join(work, "results.jsonl")
    skip_file = os.path.join(work, "skip.json")
    logname = os.path.join(logdir or work, f"{module}.{mode}.log")
    deadline = time.monotonic() + module_limit
    env = dict(os.environ, FIBERS_BACKEND=backend, PYTHONFAULTHANDLER="1")
    env.pop("PYTHONPATH", None)
    try:
        for attempt in range(MAX_RESTARTS):
            with open(skip_file, "w") as f:
                json.dump(sorted(outcomes), f)
            open(results, "w").close()
            cwd = tempfile.mkdtemp(dir=work)     # tests write into cwd
            with open(logname, "a") as log:
                start = log.tell()          # this attempt's output only
                log.write(f"---- attempt {attempt}: {module} {mode} "
                          f"{backend}\n")
                log.flush()
                proc = subprocess.Popen(
                    _child_cmd(python, module, mode, backend, limit,
                               results, skip_file if outcomes else None, k,
                               path),
                    cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
                why = _watch(proc, results, limit, deadline)
            current, done = _read(results, outcomes)
            if done:
                break
            tail = _tail(logname, start)
            if current is None:
                # Died between tests (module import, setUpModule...).
                current = f"{module} (child, {why})"
                if current in outcomes:
                    break
            outcome = "hang" if why in ("test limit", "module limit") or \
                "Timeout (" in tail else "crash"
            outcomes[current] = (outcome, f"{why}; log tail:\n{tail}")
            if echo:
                echo(f"  {module} {mode}: {current}: {outcome}")
            if why == "module limit":
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return outcomes


def _watch(proc, results, limit, deadline):
    # Polls the child: returns why it ended ("exit N", "test limit",
    # "module limit").  The current test's start is when the parent first
    # saw its start line, so a slow poll only adds to the limit.
    current, since = None, time.monotonic()
    pos = 0
    while True:
        try:
            rc = proc.wait(0.5)
            return f"exit {rc}"
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        with open(results) as f:
            f.seek(pos)
            chunk = f.read()
        lines = chunk.split("\n")
        pos += len(chunk) - len(lines[-1])
        for line in lines[:-1]:
            ev = json.loads(line)
            if ev["ev"] == "start":
                current, since = ev["id"], now
            elif ev["ev"] == "end" and ev["id"] == current:
                current = None
        if current is not None and now - since > limit + GRACE:
            _kill(proc)
            return "test limit"
        if now > deadline:
            _kill(proc)
            return "module limit"


def _kill(proc):
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


def _read(results, outcomes):
    """Adds the finished tests to ``outcomes``; returns (the test that
    started and did not end, whether the child finished)."""
    current, done = None, False
    with open(results) as f:
        for line in f:
            if not line.endswith("\n"):
                break               # cut short by a kill
            ev = json.loads(line)
            if ev["ev"] == "start":
                current = ev["id"]
            elif ev["ev"] == "end":
                outcomes[ev["id"]] = (ev["outcome"], ev["detail"])
                if ev["id"] == current:
                    current = None
            elif ev["ev"] == "done":
                done = True
    return current, done


def _tail(path, start, n=3000):
    with open(path, errors="replace") as f:
        f.seek(start)
        return f.read()[-n:]


# ---- the report -------------------------------------------------------------

def counts(outcomes):
    c = dict.fromkeys(COLUMNS, 0)
    for outcome, _ in outcomes.values():
        c[COLUMN[outcome]] += 1
    return c


def regressions(unpatched, patched):
    """Tests that pass (or xfail) unpatched but do not patched, and tests
    the patched run has that the unpatched run never ran."""
    out = []
    for tid, (outcome, detail) in patched.items():
        if COLUMN[outcome] in ("pass", "skip"):
            continue
        before = unpatched.get(tid, ("absent", ""))[0]
        if before == "absent" or COLUMN[before] == "pass":
            out.append((tid, outcome, detail))
    return out


def _fmt(c):
    return "/".join(str(c[k]) for k in COLUMNS)


def _summary(detail):
    # The last line of a traceback (the exception), and the last frame
    # inside fibers if there is one: the two facts a reader needs.
    lines = [ln for ln in detail.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    exc = lines[-1].strip()
    where = ""
    for ln in lines:
        s = ln.strip()
        if s.startswith("File ") and "/fibers/" in s:
            where = s
    if where:
        return f"{exc} (at {where})"
    return exc


def report(results, backend, python_version, when):
    """Markdown: the table, then per module what fails only patched."""
    out = [f"CPython {python_version}, backend {backend}, {when}. "
           "Counts are pass/fail/error/skip; an expected failure counts as "
           "a pass, a hang (a test past its limit) or a crash of the child "
           "as a failure.", "",
           "| module | unpatched | patched | not run patched |",
           "|---|---|---|---|"]
    for module, (unp, pat) in results.items():
        # Tests the unpatched run ran and the patched one never reached
        # (its module limit cut it short): counted nowhere else.
        missing = sum(1 for t in unp if t not in pat)
        out.append(f"| {module} | {_fmt(counts(unp))} | "
                   f"{_fmt(counts(pat))} | {missing} |")
    for module, (unp, pat) in results.items():
        reg = regressions(unp, pat)
        out += ["", f"### {module}: pass unpatched, not patched "
                    f"({len(reg)})", ""]
        for tid, outcome, detail in reg:
            out.append(f"- `{tid}`: {outcome}: {_summary(detail)}")
        if not reg:
            out.append("(none)")
    return "\n".join(out) + "\n"


def _python_version(python):
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", default=None,
                   help=f"test modules (default: {' '.join(MODULES)})")
    p.add_argument("--backend", choices=("io_uring", "epoll"),
                   default="io_uring")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--mode", choices=("both", "patched", "unpatched"),
                   default="both")
    p.add_argument("--test-timeout", type=float, default=60.0,
                   help="seconds one test may run (a hang is a failure)")
    p.add_argument("--module-timeout", type=float, default=1800.0,
                   help="seconds one module's run may take, per mode")
    p.add_argument("-k", action="append",
                   help="only tests whose name matches (unittest -k)")
    p.add_argument("--path", action="append",
                   help="a directory the children import tests from "
                        "(a module name with a dot is imported as is; "
                        "without, from CPython's test package)")
    p.add_argument("--json", help="write every outcome here")
    p.add_argument("--logdir", help="keep the children's output here")
    # The child's side.
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--skip-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.module = args.child
        return child(args)
    modules = args.modules or MODULES
    args.path = [os.path.abspath(d) for d in args.path or ()]
    if args.logdir:
        os.makedirs(args.logdir, exist_ok=True)
    version = _python_version(args.python)
    when = datetime.date.today().isoformat()
    modes = ["unpatched", "patched"] if args.mode == "both" else [args.mode]
    results = {}

    def echo(msg):
        print(msg, file=sys.stderr, flush=True)

    for module in modules:
        per = {}
        for mode in modes:
            t0 = time.monotonic()
            per[mode] = run_module(args.python, module, mode, args.backend,
                                   args.test_timeout, args.module_timeout,
                                   args.k, args.logdir, echo, args.path)
            echo(f"{module} {mode}: {_fmt(counts(per[mode]))} "
                 f"in {time.monotonic() - t0:.0f} s")
        results[module] = (per.get("unpatched", {}), per.get("patched", {}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": version, "backend": args.backend,
                       "date": when,
                       "results": {m: {"unpatched": u, "patched": pt}
                                   for m, (u, pt) in results.items()}},
                      f, indent=1)
    sys.stdout.write(report(results, args.backend, version, when))
    return 0


if __name__ == "__main__":
    sys.exit(main())
