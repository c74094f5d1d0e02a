# The blocking-call detector (fibers.monitor) and the tick figures of
# Scheduler.stats().  Included by _core.pyx.
#
# Design notes
# ------------
# A cooperative scheduler is only as good as its worst fiber: one that
# computes for a second, or calls a blocking function, stops every other
# fiber of its thread for that second.  The detector finds such fibers in
# production, where a profiler cannot go.
#
# - The watching is C (csrc/fib_monitor.c): one thread per process reads
#   each scheduler's slot (fib_monitor.h) without the GIL.  A scheduler
#   publishes the start of its current *busy stretch* (a tick, less its
#   wait in the pump) with plain atomic stores; a stretch past the
#   threshold is an incident.  So a scheduler pays nothing extra for being
#   watched: the tick accounting reads the clock once per tick anyway
#   (twice more around a wait in the pump).
# - At detection (DETECT) the callback below takes the GIL and captures
#   the blocked thread's Python stack (sys._current_frames() gives the
#   running greenlet's frame) and the running fiber's name, while the
#   thread is still stuck.  A C call that holds the GIL delays that until
#   it returns; the thread gives the GIL up at its next bytecode boundary,
#   still inside the same tick, so the stack then shows the call's site.
# - The report goes out once per incident, when the stretch ends, with the
#   block's exact length as the scheduler measured it (ENDED) -- or, if it
#   has not ended one more threshold (at least a second) later, then, with
#   the length so far and `ended=False` (ONGOING), so an endless loop is
#   reported too.  Reporting at the end rather than at detection is what
#   lets one record carry both the place and the full duration.
# - Reports go to the `fibers` logger at WARNING, or to the user's
#   callback instead, on the monitor thread.  Nothing raised there may
#   escape into C: a failing callback is logged with its report.
# - Shutdown: the thread is stopped by an atexit hook, before the
#   interpreter starts finalizing (a thread that takes the GIL during
#   finalization is ended abruptly); the callback also checks
#   Py_IsFinalizing() before it asks for the GIL.  fork(): the child starts
#   a thread of its own if the monitor was on (os.register_at_fork).

from libc.math cimport ceil
import sys as _sys
import traceback as _traceback

cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030D0000
    #define fib__py_finalizing() Py_IsFinalizing()
    #else
    #define fib__py_finalizing() _Py_IsFinalizing()
    #endif
    """
    int fib__py_finalizing() nogil


# How long an exit or monitor(None) waits for the thread to finish a report
# it is in the middle of.
cdef int64_t MONITOR_STOP_WAIT_NS = 1000000000

cdef bint _mon_env_read = False     # FIBERS_MONITOR looked at (or overridden)
cdef double _mon_threshold = 0.0    # seconds; 0 while off
cdef int64_t _mon_threshold_ns = 0
cdef object _mon_callback = None
# (serial, start) -> (fiber name or None, stack): captured at DETECT, taken
# by the report.
cdef dict _mon_pending = {}

_TICK_BOUNDS = tuple([fib__tick_bounds_ns[i] / 1e9
                      for i in range(FIB__TICK_BOUNDS)]) + (float("inf"),)


@cython.final
cdef class BlockingReport:
    """What :func:`monitor` found: one fiber kept its scheduler's thread
    from the loop for longer than the threshold.  Read-only.

    ``thread_id``, ``thread_name``: the scheduler's OS thread.
    ``fiber_name``: the fiber that was running, or None when the scheduler's
    own greenlet was (a quantum step, a predicate, a signal handler) or the
    block ended before the monitor could look.  ``duration``: how long the
    block lasted, in seconds of real time; ``ended`` is False when it was
    still going on at the report (then ``duration`` is the time so far).
    ``threshold``: the monitor's threshold then.  ``stack``: the blocked
    code's Python stack as :class:`traceback.FrameSummary` objects,
    innermost last (empty when it could not be taken).  ``text``: all of
    it, formatted as the log shows it (also ``str(report)``)."""
    cdef readonly object thread_id
    cdef readonly str thread_name
    cdef readonly object fiber_name
    cdef readonly double duration
    cdef readonly bint ended
    cdef readonly double threshold
    cdef readonly list stack
    cdef readonly str text

    def __init__(self, *args, **kwargs):
        raise TypeError("BlockingReport objects are made by fibers.monitor()")

    def __str__(self):
        return self.text

    def __repr__(self):
        return (f"<BlockingReport fiber={self.fiber_name!r} "
                f"thread={self.thread_name!r} duration={self.duration:.3f}"
                f"{'' if self.ended else ' (ongoing)'}>")


def monitor(threshold=0.1, callback=None):
    """Start the blocking-call detector: report every time a scheduler's
    thread spends longer than ``threshold`` seconds (real time) away from
    its loop -- a fiber computing, or calling something that blocks,
    without yielding.

    One thread per process watches every scheduler without taking the
    GIL; it costs the schedulers nothing measurable.  Each incident is
    reported once: when the block ends, with its duration, or after one
    more threshold (at least a second) if it is still going on.  A report
    names the thread, the fiber and the line it was blocked at, with its
    stack: as a WARNING on the ``fibers`` logger, or, with ``callback``, as
    a :class:`BlockingReport` handed to ``callback(report)`` instead (on
    the monitor's thread: keep it short).

    Calling it again changes the threshold and the callback;
    ``monitor(None)`` turns it off, and so does the interpreter's exit:
    both first deliver the reports still owed (a block that has just
    ended; one still going on, as ongoing).  The environment variable
    ``FIBERS_MONITOR=<seconds>`` turns it on when the first scheduler
    starts running, unless ``monitor()`` was called first.

    Raises ValueError for a threshold that is not a positive, finite
    number of seconds, TypeError for a callback that is not callable.
    """
    global _mon_env_read, _mon_threshold, _mon_threshold_ns, _mon_callback
    cdef double s
    cdef int64_t ns
    cdef int rc
    if threshold is None:
        if callback is not None:
            raise TypeError("monitor(None) turns the monitor off; it takes "
                            "no callback")
        _mon_env_read = True
        _monitor_stop()
        return
    s = _seconds(threshold, "monitor")
    if s == 0 or s >= 4e9:
        raise ValueError(f"monitor() needs a threshold > 0 and finite, got "
                         f"{threshold!r}")
    ns = <int64_t>llround(s * 1e9)
    if ns < 1:
        raise ValueError(f"monitor(): a threshold of {threshold!r} s is "
                         f"below a nanosecond")
    if callback is not None and not callable(callback):
        raise TypeError(f"monitor() needs a callable callback, got "
                        f"{type(callback).__name__}")
    _mon_env_read = True
    _mon_callback = callback
    _mon_threshold = s
    _mon_threshold_ns = ns
    with nogil:
        rc = fib__monitor_start(ns, _mon_event)
    if rc < 0:
        _mon_threshold = 0.0
        _mon_threshold_ns = 0
        raise _oserror(-rc, "monitor(): cannot start the monitor thread")


cdef int _monitor_stop() except -1:
    global _mon_threshold, _mon_threshold_ns, _mon_callback
    # The thread's last pass reports what is still owed (a block that ended
    # just now) through the callback and threshold in force: clear them
    # after it.
    with nogil:
        fib__monitor_stop(MONITOR_STOP_WAIT_NS)
    _mon_threshold = 0.0
    _mon_threshold_ns = 0
    _mon_callback = None
    _mon_pending.clear()
    return 0


cdef int _monitor_from_env() except -1:
    # The first time a scheduler starts running: FIBERS_MONITOR=<seconds>.
    # A bad value is a warning, not an error: a diagnostic switch set wrong
    # must not stop the program it was meant to watch.
    global _mon_env_read
    _mon_env_read = True
    value = _os.environ.get("FIBERS_MONITOR", "").strip()
    if not value or value == "0":
        return 0
    try:
        monitor(float(value))
    except (ValueError, TypeError, OSError) as e:
        _log.warning("FIBERS_MONITOR=%r: %s; the blocking-call monitor "
                     "stays off", value, e)
    return 0


def _monitor_at_exit():
    # Before finalization: a thread that asks for the GIL once the
    # interpreter is finalizing is ended abruptly.
    if _mon_threshold_ns:
        _monitor_stop()


def _monitor_after_fork():
    # The child has no monitor thread; start one if the parent had it on.
    cdef int64_t ns = _mon_threshold_ns
    _mon_pending.clear()
    if ns:
        fib__monitor_start(ns, _mon_event)


_atexit.register(_monitor_at_exit)
_os.register_at_fork(after_in_child=_monitor_after_fork)


# ---- the monitor thread's callback ---------------------------------------

cdef void _mon_event(const fib__mon_event *ev) noexcept nogil:
    # On the monitor thread, without the GIL (fib_monitor.c).
    if fib__py_finalizing():
        return
    with gil:
        if fib__monitor_stopping():
            return          # a stop gave up on this thread meanwhile
        _mon_handle(ev)


cdef void _mon_handle(const fib__mon_event *ev) noexcept:
    cdef Scheduler s
    cdef Fiber f
    key = (ev.serial, ev.start)
    try:
        if ev.kind == FIB__MON_DETECT:
            # Still the same stretch, so the scheduler is alive and its
            # thread stuck (it may not run Python while we hold the GIL).
            if not fib__mon_current(ev.slot, ev.serial, ev.start):
                return      # it ended meanwhile: the report says so
            s = <Scheduler>ev.slot.owner
            f = s._current
            frame = _sys._current_frames().get(ev.thread_id)
            # The thread's name now: it may have ended by the report.
            _mon_pending[key] = (None if f is None else f.name,
                                 list(_frames_summary(frame)),
                                 _thread_name(ev.thread_id))
            return
        _mon_emit(_new_report(ev, _mon_pending.pop(key, None)))
    except BaseException:
        try:
            _log.exception("fibers.monitor(): a report failed")
        except BaseException:
            pass


cdef str _thread_name(unsigned long ident):
    # threading's name for the thread (no lock taken: the thread it would
    # wait for may be the blocked one).
    th = getattr(threading, "_active", {}).get(ident)
    return th.name if th is not None else f"thread {ident}"


cdef BlockingReport _new_report(const fib__mon_event *ev, object captured):
    cdef BlockingReport r = BlockingReport.__new__(BlockingReport)
    r.thread_id = ev.thread_id
    r.duration = ev.ns / 1e9
    r.ended = ev.kind == FIB__MON_ENDED
    r.threshold = _mon_threshold
    if captured is None:
        r.fiber_name = None
        r.stack = []
        r.thread_name = _thread_name(ev.thread_id)
        who = "a fiber"
    else:
        r.fiber_name, r.stack, r.thread_name = captured
        who = ("the scheduler's own greenlet (a quantum step, predicate or "
               "signal handler)" if r.fiber_name is None
               else f"fiber {r.fiber_name!r}")
    if r.ended:
        how = f"blocked thread {r.thread_name!r} for {r.duration:.3f} s"
    else:
        how = (f"has blocked thread {r.thread_name!r} for {r.duration:.3f} s "
               f"so far (still blocked)")
    if r.stack:
        fs = r.stack[len(r.stack) - 1]     # (no wraparound in this module)
        where = f" at {fs.filename}:{fs.lineno} in {fs.name}"
        tail = "\n" + "".join(_traceback.format_list(r.stack)).rstrip("\n")
    else:
        where = ""
        tail = ("\n  (no stack: the block ended before the monitor could "
                "look)" if captured is None else "")
    r.text = (f"fibers.monitor: {who} {how}{where} (threshold "
              f"{r.threshold:g} s){tail}")
    return r


cdef int _mon_emit(BlockingReport r) except -1:
    cb = _mon_callback
    if cb is None:
        _log.warning("%s", r.text)
        return 0
    try:
        cb(r)
    except Exception:
        _log.exception("fibers.monitor(): the callback %r raised on this "
                       "report:\n%s", cb, r.text)
    return 0


# ---- Scheduler.stats(): ticks, states, the pool ----------------------------

cdef inline Py_ssize_t _rank(double q, Py_ssize_t n):
    # The nearest-rank percentile's index in n sorted values.
    cdef Py_ssize_t i = <Py_ssize_t>ceil(q * n) - 1
    return 0 if i < 0 else (n - 1 if i >= n else i)


cdef dict _tick_stats(Scheduler s):
    # The figures stats() adds: computed here, when asked, never per tick.
    cdef fib__tick_stats *t = &s._tstats
    cdef Py_ssize_t n = <Py_ssize_t>(t.count if t.count < FIB__TICK_WINDOW
                                     else FIB__TICK_WINDOW)
    cdef Py_ssize_t i
    cdef uint64_t cum = 0
    cdef unsigned threads, idle, queued
    cdef list w = [t.window[i] for i in range(n)]
    cdef list buckets = []
    w.sort()
    for i in range(FIB__TICK_BOUNDS + 1):
        cum += t.buckets[i]
        buckets.append((_TICK_BOUNDS[i], cum))
    fib__pool_stats(&threads, &idle, &queued)
    return {
        "tick_p50": w[_rank(0.5, n)] / 1e9 if n else 0.0,
        "tick_p99": w[_rank(0.99, n)] / 1e9 if n else 0.0,
        "tick_max": w[n - 1] / 1e9 if n else 0.0,
        "tick_sum": t.sum_ns / 1e9,
        "tick_buckets": tuple(buckets),
        "states": _fiber_states(s),
        "pump_waits": t.pump_waits,
        "blocking_threads": threads,
        "blocking_queue": queued,
    }


cdef dict _fiber_states(Scheduler s):
    # Live fibers by state: the fiber view's walk (_inspect.pxi), counted.
    cdef Py_ssize_t n[3]
    cdef Fiber f
    n[0] = n[1] = n[2] = 0
    for f in _live_fibers(s, False):
        n[f._state] += 1
    return {"ready": n[ST_READY], "running": n[ST_RUNNING],
            "suspended": n[ST_SUSPENDED]}
