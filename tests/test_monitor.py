"""fibers.monitor(): the blocking-call detector.

These tests really block the scheduler's thread (300 ms, mostly): the
block is the thing under test, so it runs in real time.  Reports are
waited for with a bounded wait on the collector, never a sleep margin.
"Exactly once" is checked with a barrier: a second, distinct incident
afterwards; the monitor handles incidents in order, so a duplicate of the
first would have come before the second's report.
"""
import ctypes
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fibers

HERE = os.path.abspath(__file__)


def line_of(marker):
    """The line of this file that carries `marker` (a comment)."""
    with open(HERE) as f:
        for n, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return n
    raise AssertionError(f"no line with {marker!r}")


class Reports:
    """A monitor callback that collects reports, for bounded waits."""

    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, report):
        with self.cond:
            self.items.append(report)
            self.cond.notify_all()

    def wait(self, n, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, timeout), \
                f"expected {n} report(s), got {self.items}"
            return list(self.items)


@pytest.fixture
def reports():
    r = Reports()
    fibers.monitor(0.1, r)
    yield r
    fibers.monitor(None)


def monitor_threads():
    """The OS threads of this process named fibers-monitor."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass            # a thread that just ended
    return names.count("fibers-monitor")


def sleeper():
    time.sleep(0.3)  # BLOCK-SLEEP


def spinner():
    t = time.monotonic()
    while time.monotonic() - t < 0.3:  # BLOCK-SPIN
        pass


def marker():
    time.sleep(0.15)  # BLOCK-MARKER


def run_named(sched, *fns_and_names):
    """Runs each function as a fiber of that name, one after the other."""
    def main():
        for fn, name in fns_and_names:
            f = fibers.spawn(fn)
            f.name = name
            f.join()
    sched.run(main)


def check_report(r, fiber, marker_comment, at_least):
    line = line_of(marker_comment)
    assert r.fiber_name == fiber
    assert r.ended is True
    assert r.duration >= at_least
    assert r.threshold == 0.1
    assert r.thread_id == threading.get_ident()
    assert r.thread_name == threading.current_thread().name
    top = r.stack[-1]
    assert (top.filename, top.lineno) == (HERE, line)
    assert f"{HERE}:{line}" in r.text and repr(fiber) in r.text
    assert f"{r.duration:.3f} s" in r.text


def test_a_sleep_in_a_fiber_is_reported_once_with_its_line(sched, reports):
    run_named(sched, (sleeper, "sleeper"), (marker, "marker"))
    got = reports.wait(2)
    assert [r.fiber_name for r in got] == ["sleeper", "marker"]
    check_report(got[0], "sleeper", "# BLOCK-SLEEP", 0.3)
    check_report(got[1], "marker", "# BLOCK-MARKER", 0.15)
    assert got[0].duration < 10
    assert "time.sleep(0.3)" in got[0].text
    assert str(got[0]) == got[0].text
    assert all(isinstance(fs, __import__("traceback").FrameSummary)
               for fs in got[0].stack)


def test_a_busy_loop_is_reported_with_its_line(sched, reports):
    run_named(sched, (spinner, "spinner"), (marker, "marker"))
    got = reports.wait(2)
    assert [r.fiber_name for r in got] == ["spinner", "marker"]
    check_report(got[0], "spinner", "# BLOCK-SPIN", 0.3)


# A C function called through ctypes.PyDLL keeps the GIL for the whole
# call (as a careless C extension does): the monitor cannot look until it
# returns, and then reports the Python line that made the call.
_libc = ctypes.PyDLL(None)
_libc.usleep.argtypes = [ctypes.c_uint]


def gil_holder():
    _libc.usleep(300000)  # BLOCK-GIL


def test_a_c_call_holding_the_gil_is_reported_at_its_call_site(sched, reports):
    run_named(sched, (gil_holder, "gil_holder"), (marker, "marker"))
    got = reports.wait(2)
    assert [r.fiber_name for r in got] == ["gil_holder", "marker"]
    check_report(got[0], "gil_holder", "# BLOCK-GIL", 0.3)


def test_reports_go_to_the_fibers_logger_by_default(sched, errlog):
    r = Reports()
    fibers.monitor(0.1)
    try:
        run_named(sched, (sleeper, "sleeper"))
        # The report comes once the monitor has seen the block end.
        deadline = time.monotonic() + 10
        while not errlog.records and time.monotonic() < deadline:
            time.sleep(0.005)
        # The barrier goes to a callback: reports stop going to the log.
        fibers.monitor(0.1, r)
        run_named(sched, (marker, "marker"))
        assert [x.fiber_name for x in r.wait(1)] == ["marker"]
    finally:
        fibers.monitor(None)
    assert len(errlog.records) == 1
    rec = errlog.records[0]
    assert rec.levelno == logging.WARNING and rec.name == "fibers"
    msg = rec.getMessage()
    first = msg.splitlines()[0]
    assert "fiber 'sleeper'" in first
    assert f"{HERE}:{line_of('# BLOCK-SLEEP')}" in first
    assert "time.sleep(0.3)" in msg


def test_a_block_in_another_thread_names_that_thread(reports):
    def body():
        s = fibers.Scheduler()
        try:
            run_named(s, (sleeper, "sleeper"))
        finally:
            s.close()
    t = threading.Thread(target=body, name="worker-7")
    t.start()
    t.join(10)
    got = reports.wait(1)
    assert got[0].fiber_name == "sleeper"
    assert got[0].thread_name == "worker-7"
    assert got[0].thread_id == t.ident


def test_a_block_in_a_quantum_step_has_no_fiber(sched, reports):
    calls = []

    def step():
        if not calls:
            calls.append(1)
            time.sleep(0.3)  # BLOCK-STEP

    sched.add_quantum_step(step)
    run_named(sched, (fibers.yield_now, "y"))
    sched.remove_quantum_step(step)
    run_named(sched, (marker, "marker"))
    got = reports.wait(2)
    assert [r.fiber_name for r in got] == [None, "marker"]
    assert got[0].stack[-1].lineno == line_of("# BLOCK-STEP")
    assert "quantum step" in got[0].text


def test_short_ticks_and_waits_are_not_reported(sched, reports):
    # Many ticks, each short, for longer than the threshold in all: the
    # threshold is per stretch, not per run.  Then a real wait in the pump
    # (a monotonic scheduler sleeping) is not a block either.
    def main():
        t = time.monotonic()
        while time.monotonic() - t < 0.4:
            fibers.yield_now()
    sched.run(main)
    s = fibers.Scheduler()
    try:
        s.run(fibers.sleep, 0.3)
    finally:
        s.close()
    run_named(sched, (marker, "marker"))
    got = reports.wait(1)
    assert [r.fiber_name for r in got] == ["marker"]


def test_a_block_that_goes_on_is_reported_before_it_ends(sched):
    # Still blocked one threshold (at least 1 s) after the detection: the
    # report comes then, with ended=False; none when the block ends.
    r = Reports()
    fibers.monitor(0.05, r)
    try:
        def stuck():
            with r.cond:
                # The block: this fiber waits for its own report.
                assert r.cond.wait_for(lambda: r.items, 10)  # BLOCK-ONGOING

        def main():
            f = fibers.spawn(stuck)
            f.name = "stuck"
            f.join()
            fibers.monitor(0.1, r)
            m = fibers.spawn(marker)
            m.name = "marker"
            m.join()
        sched.run(main)
        got = r.wait(2)
    finally:
        fibers.monitor(None)
    assert [x.fiber_name for x in got] == ["stuck", "marker"]
    assert got[0].ended is False and got[1].ended is True
    assert got[0].duration >= 1.05
    # (the innermost frames are threading's own: the wait)
    assert (HERE, line_of("# BLOCK-ONGOING")) in [
        (fs.filename, fs.lineno) for fs in got[0].stack]
    assert "still blocked" in got[0].text


def test_calling_monitor_again_changes_threshold_and_callback(sched):
    first, second = Reports(), Reports()
    fibers.monitor(0.1, first)
    try:
        fibers.monitor(1.0, second)
        run_named(sched, (sleeper, "sleeper"))     # under 1 s: not reported
        fibers.monitor(0.1, second)
        run_named(sched, (marker, "marker"))
        got = second.wait(1)
    finally:
        fibers.monitor(None)
    assert [r.fiber_name for r in got] == ["marker"]
    assert first.items == []


def test_monitor_none_stops_the_thread(sched):
    r = Reports()
    assert monitor_threads() == 0
    fibers.monitor(0.1, r)
    assert monitor_threads() == 1
    fibers.monitor(0.2, r)
    assert monitor_threads() == 1       # still one per process
    fibers.monitor(None)
    assert monitor_threads() == 0
    fibers.monitor(None)                # idempotent
    run_named(sched, (sleeper, "sleeper"))
    fibers.monitor(0.1, r)
    try:
        run_named(sched, (marker, "marker"))
        got = r.wait(1)
    finally:
        fibers.monitor(None)
    assert [x.fiber_name for x in got] == ["marker"]


def test_monitor_none_delivers_a_report_still_owed(sched):
    # The block ends and monitor(None) comes before the thread's next look:
    # the stop's last pass reports it, through the callback, before
    # monitor(None) returns.
    got = []
    fibers.monitor(0.1, got.append)
    try:
        run_named(sched, (sleeper, "sleeper"))
    finally:
        fibers.monitor(None)
    assert [r.fiber_name for r in got] == ["sleeper"]
    check_report(got[0], "sleeper", "# BLOCK-SLEEP", 0.3)


def test_a_callback_that_raises_is_logged_and_the_monitor_goes_on(
        sched, errlog):
    r = Reports()

    def bad(report):
        r(report)
        if report.fiber_name == "sleeper":
            raise RuntimeError("callback broke")

    fibers.monitor(0.1, bad)
    try:
        run_named(sched, (sleeper, "sleeper"), (marker, "marker"))
        got = r.wait(2)
    finally:
        fibers.monitor(None)
    assert [x.fiber_name for x in got] == ["sleeper", "marker"]
    errors = [rec for rec in errlog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "callback broke" in str(errors[0].exc_info[1])
    assert "fiber 'sleeper'" in errors[0].getMessage()


@pytest.mark.parametrize("bad", [0, -1, -0.5, math.nan, math.inf, 1e-12])
def test_bad_thresholds_raise_value_error(bad):
    with pytest.raises(ValueError):
        fibers.monitor(bad)
    assert monitor_threads() == 0


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError):
        fibers.monitor("0.1")
    with pytest.raises(TypeError):
        fibers.monitor(0.1, callback=42)
    with pytest.raises(TypeError):
        fibers.monitor(None, callback=print)
    assert monitor_threads() == 0


def test_reports_are_read_only():
    r = Reports()
    fibers.monitor(0.1, r)
    s = fibers.Scheduler()
    try:
        run_named(s, (marker, "marker"))
        rep = r.wait(1)[0]
    finally:
        fibers.monitor(None)
        s.close()
    with pytest.raises(AttributeError):
        rep.duration = 0
    with pytest.raises(TypeError):
        fibers.BlockingReport()


def run_script(code, env_monitor, timeout=60):
    env = dict(os.environ)
    env.pop("FIBERS_MONITOR", None)
    if env_monitor is not None:
        env["FIBERS_MONITOR"] = env_monitor
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env,
                          timeout=timeout)


SCRIPT = """
    import logging, time, fibers
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    def blocker():
        time.sleep(0.3)   # line 6

    def main():
        f = fibers.spawn(blocker)
        f.name = "envfiber"
        f.join()
    fibers.run(main)
    # The report comes once the monitor sees the tick end: wait for it
    # (bounded) before the process exits.
    for _ in range(500):
        if done: break
        time.sleep(0.01)
"""


def test_the_environment_variable_turns_it_on():
    code = SCRIPT.replace("fibers.run(main)", """
    done = []
    class H(logging.Handler):
        def emit(self, record):
            done.append(record)
    logging.getLogger("fibers").addHandler(H())
    fibers.run(main)""")
    p = run_script(code, "0.1")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("WARNING fibers")]
    assert len(lines) == 1, p.stderr
    assert "fiber 'envfiber'" in lines[0]
    assert "<string>:6 in blocker" in lines[0]


# For a script: how many monitor threads the process has, by their names.
PRINT_MONITOR_THREADS = """
        import os
        names = [open(f"/proc/self/task/{t}/comm").read().strip()
                 for t in os.listdir("/proc/self/task")]
        print("monitor threads:", names.count("fibers-monitor"))
"""


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_a_bad_environment_variable_is_a_warning(value):
    p = run_script("""
        import logging, fibers
        logging.basicConfig(level=logging.WARNING)
        fibers.run(fibers.yield_now)
        fibers.run(fibers.yield_now)
    """ + PRINT_MONITOR_THREADS, value)
    assert p.returncode == 0, p.stderr
    assert "monitor threads: 0" in p.stdout
    warnings = [ln for ln in p.stderr.splitlines() if "FIBERS_MONITOR" in ln]
    assert len(warnings) == 1 and "stays off" in warnings[0], p.stderr


def test_an_explicit_call_wins_over_the_environment():
    p = run_script("""
        import os, fibers
        fibers.monitor(None)
        fibers.run(fibers.yield_now)
    """ + PRINT_MONITOR_THREADS, "0.1")
    assert p.returncode == 0, p.stderr
    assert "monitor threads: 0" in p.stdout


def test_a_block_that_ends_just_before_exit_is_reported():
    # No wait after run(): the program exits while the monitor has yet to
    # look at the ended block; the exit's stop reports it all the same.
    code = SCRIPT[:SCRIPT.index("    # The report comes")]
    p = run_script(code, "0.1")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines()
             if ln.startswith("WARNING fibers")]
    assert len(lines) == 1, p.stderr
    assert "fiber 'envfiber' blocked thread 'MainThread'" in lines[0]
    assert "<string>:6 in blocker" in lines[0]


def test_exit_with_the_monitor_on_and_a_thread_blocked_is_clean():
    # The interpreter exits while a daemon thread's fiber is blocked and
    # reported on: the monitor is stopped before finalization, no crash,
    # no hang, exit status 0.
    p = run_script("""
        import threading, time, fibers
        seen = threading.Event()
        fibers.monitor(0.05, lambda r: seen.set())
        def body():
            def stuck():
                time.sleep(30)
            fibers.run(stuck)
        threading.Thread(target=body, daemon=True).start()
        assert seen.wait(10)
        print("exiting")
    """, None, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "exiting"
    assert p.stderr == ""


def test_a_forked_child_has_a_monitor_of_its_own():
    p = run_script("""
        import os, sys, threading, time, fibers
        got = []
        ev = threading.Event()
        def cb(r):
            got.append(r)
            ev.set()
        fibers.monitor(0.1, cb)
        pid = os.fork()
        if pid == 0:
            def blocker():
                time.sleep(0.3)
            f = None
            def main():
                f = fibers.spawn(blocker)
                f.name = "child-fiber"
                f.join()
            fibers.run(main)
            ok = ev.wait(10)
            print("child", ok, [r.fiber_name for r in got], flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent", got, os.waitstatus_to_exitcode(status), flush=True)
    """, None)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert "child True ['child-fiber']" in out
    assert "parent [] 0" in out
