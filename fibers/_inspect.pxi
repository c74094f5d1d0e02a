# The fiber view (Scheduler.fibers, FiberInfo) and FIBERS_DEBUG's reports.
# Included by _core.pyx; fibers/debug.py builds dump(), the control socket
# and `python -m fibers ps|top` on top of it.
#
# Design note
# ===========
#
# Looking costs; running must not.  Nothing here runs unless someone asks
# (fibers(), a dump) or FIBERS_DEBUG is on.  The scheduler keeps no list
# of its fibers and the waits record nothing extra on the hot path, so the
# view is assembled from what the scheduler already has:
#
# - *Which fibers*: the running one (_current), the one the hub is about
#   to start (_start_next), the ready ring (read in place, fib__ring_at),
#   and _live, which holds every fiber that ever parked and is not dead.
#   A fiber that never parked is running or in the ring, so nothing live
#   is missed.
# - *What a suspended fiber waits on*, in the order asked:
#   1. the WaitQueue it is parked in (Fiber._wq, which the queue keeps
#      anyway): every queue is labelled once, when it is made, with a word
#      ("Lock", "Queue.get") and its owner's address; a join's queue is the
#      target's, a named signal's is found in Scheduler._signals;
#   2. out of any WaitQueue, Fiber._wq_item, set by the few waits nothing
#      else can find (a blocking-pool call, a multishot stream, a thread
#      lock, sleep forever);
#   3. its sleep node, armed only while it sleeps: the deadline;
#   4. the pump's list of records in flight, whose owners name the fiber
#      waiting (so "recv fd 7" costs the I/O path nothing);
#   5. the OS-signal waits and wait_for's conditions, from their tables;
#   6. else plain suspend().
# - *Spawn sites* (FIBERS_DEBUG) live in the scheduler's debug state,
#   keyed by fiber until it ends, not in a field every Fiber would carry.
# - *Age* needs a birth time per fiber.  An exact clock read per spawn
#   would be a visible part of spawn's cost, so the monotonic clock is read
#   coarse (fib__monotonic_coarse_ns: the kernel's last tick, a few ms,
#   no time-stamp counter); a VirtualClock is a field read, and a custom
#   clock is asked (custom clocks are for tests).
# - *Stacks* come from greenlet: a parked fiber's gr_frame, and the
#   caller's frames for the fiber that is running.  Lines of source are
#   looked up only when formatted.
#
# FIBERS_DEBUG=1 (or fibers.debug.enable()) adds, at a predictable branch
# per switch and spawn when off: the spawn site of each fiber (named in
# the existing "uncaught exception" log line, and in the reports); a
# warning for each fiber run longer than the slow threshold (100 ms),
# naming the fiber and where it gave control back; and, at close() and at
# interpreter exit, one report of the fibers still alive (with their
# stacks), the fibers whose exceptions nobody joined, and the slow runs.

import sys as _sys
import traceback as _traceback

# FIBERS_DEBUG: module-wide, read on the hot paths as a plain C flag.
cdef bint _debug_on = False
cdef int64_t _slow_ns = 100000000
# Fiber._wq_item of a fiber in sleep(math.inf).
cdef object _FOREVER = object()
# How many dead-with-an-unseen-exception fibers a scheduler's report keeps.
cdef Py_ssize_t _UNSEEN_MAX = 100

_debug_scheds = _weakref.WeakSet()


# --------------------------------------------------------------------------
# FiberInfo
# --------------------------------------------------------------------------

@cython.final
cdef class FiberInfo:
    """One live fiber as :meth:`Scheduler.fibers` saw it; read-only.

    ``fiber`` the :class:`Fiber`; ``id`` its number (spawn order); ``name``;
    ``state`` (``'ready'``, ``'running'`` or ``'suspended'``); ``age`` in
    seconds on the scheduler's clock since it was spawned (to a few
    milliseconds on the monotonic clock); ``waiting``, what a suspended
    fiber waits on (``'sleep until 12.500'``, ``'recv fd 7'``,
    ``'Queue.get 0x7f..'``, ``"join <Fiber 'x' suspended>"``,
    ``"signal 'name'"``, ...), else None; ``stack``, its Python stack as
    :class:`traceback.FrameSummary` entries, innermost last (empty if it
    never ran); ``spawned_at``, where it was spawned, the same way, under
    FIBERS_DEBUG only (else None)."""

    cdef readonly Fiber fiber
    cdef readonly uint64_t id
    cdef readonly str name
    cdef readonly str state
    cdef readonly double age
    cdef readonly object waiting
    cdef readonly object stack
    cdef readonly object spawned_at

    def __init__(self, *args, **kwargs):
        raise TypeError("FiberInfo objects come from Scheduler.fibers()")

    def format(self):
        """A block of text for people: a heading line, then the stack as
        tracebacks print it (and the spawn site, when known)."""
        head = f"Fiber {self.id} {self.name!r} {self.state}, " \
               f"age {self.age:.3f} s"
        if self.waiting is not None:
            head += f", waiting on {self.waiting}"
        parts = [head + "\n"]
        if self.stack:
            parts.extend(_traceback.format_list(self.stack))
        elif self.state == "ready":
            parts.append("  (not started yet)\n")
        if self.spawned_at:
            parts.append("  spawned at:\n")
            parts.extend("  " + line.replace("\n  ", "\n    ")
                         for line in _traceback.format_list(self.spawned_at))
        return "".join(parts)

    def __repr__(self):
        return (f"<FiberInfo {self.id} {self.name!r} {self.state} "
                f"waiting={self.waiting!r}>")


# --------------------------------------------------------------------------
# Scheduler.fibers()
# --------------------------------------------------------------------------

cdef inline int64_t _birth_ns(Scheduler s) except? -1:
    # Fiber._born_ns at spawn (see the design note: cheap, not exact).
    if s._clock_kind == CLOCK_VIRTUAL:
        return s._vclock._ns
    if s._clock_kind == CLOCK_MONOTONIC:
        return fib__monotonic_coarse_ns()
    return s._now_ns()


cdef list _live_fibers(Scheduler s, bint ordered=True):
    # Every fiber that is not dead: the running one, the one the hub is
    # about to start, the ready ring (which keeps fibers killed before they
    # ever ran until their turn) and the parked ones; oldest (lowest id)
    # first when `ordered`.
    cdef dict seen = {}
    cdef Fiber f
    cdef size_t i
    if s._current is not None:
        seen[s._current] = None
    if s._start_next is not None:
        seen[s._start_next] = None
    for i in range(s._ready.count):
        f = <Fiber>fib__ring_at(&s._ready, i)
        seen[f] = None
    if s._live is not None:
        for f in list(s._live):
            seen[f] = None
    out = [f for f in seen if (<Fiber>f)._state != ST_DEAD]
    if ordered:
        out.sort(key=_fiber_id)
    return out


def _fiber_id(Fiber f):
    return f._id


cdef class _WaitIndex:
    # What the scheduler's tables say a fiber waits on, built once per
    # fibers() call and only if some fiber is suspended.
    cdef dict io            # Fiber -> _Op (the pump's records in flight)
    cdef dict os            # Fiber -> [signum, ...]
    cdef dict conds         # Fiber -> Trigger (wait_for)
    cdef dict signals       # id(WaitQueue) -> signal name
    cdef dict by_addr       # address -> live Fiber (join targets)


cdef _WaitIndex _wait_index(Scheduler s, list live):
    cdef _WaitIndex ix = _WaitIndex.__new__(_WaitIndex)
    cdef fib__op *op
    cdef _Op o
    cdef _OsSigWait w
    cdef Trigger c
    ix.io = {}
    ix.os = {}
    ix.conds = {}
    ix.signals = {}
    ix.by_addr = {}
    if s._io.is_open:
        op = s._io.c.live
        while op != NULL:
            o = <_Op>op.owner
            if o.kind == OP_FIBER and o.fiber is not None:
                ix.io[o.fiber] = o
            op = op.live_next
    for signum, waits in _os_waiters.items():
        for w in waits:
            if w.sched is s and w.fiber is not None:
                ix.os.setdefault(w.fiber, []).append(signum)
    for c in s._conds:
        if c._active and c._kind == CK_WAIT_FOR and c._fiber is not None:
            ix.conds[c._fiber] = c
    for name, q in s._signals.items():
        ix.signals[id(q)] = name
    for f in live:
        ix.by_addr[<size_t><PyObject *>f] = f
    return ix


cdef str _op_words(int code, int fd, int events):
    # An I/O record as a person reads it: "recv fd 7".
    cdef str word
    if code == FIB__OP_POLL:
        if events & POLLIN and events & POLLOUT:
            word = "readable|writable"
        elif events & POLLOUT:
            word = "writable"
        else:
            word = "readable"
    elif code == FIB__OP_RECV or code == FIB__OP_RECV_MULTI:
        word = "recv"
    elif code == FIB__OP_SEND:
        word = "send"
    elif code == FIB__OP_ACCEPT or code == FIB__OP_ACCEPT_MULTI:
        word = "accept"
    elif code == FIB__OP_READ or code == FIB__OP_READ_FIXED:
        word = "read"
    elif code == FIB__OP_WRITE or code == FIB__OP_WRITE_FIXED:
        word = "write"
    elif code == FIB__OP_FSYNC:
        word = "fsync"
    else:
        word = f"op {code}"
    return f"{word} fd {fd}"


cdef str _callable_name(object fn):
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{name}" if mod and mod != "builtins" else name


cdef object _os_names(list nums):
    return ", ".join(_os_signal_value(n).name
                     if hasattr(_os_signal_value(n), "name") else str(n)
                     for n in nums)


cdef object _waiting_of(Fiber f, _WaitIndex ix, int64_t now):
    # What a suspended fiber waits on, as a string (see the design note for
    # the order in which the places are asked).
    cdef WaitQueue q = f._wq
    cdef object w = f._wq_item
    cdef _Job j
    cdef _Stream st
    if q is not None:
        if q._what == "signal":
            return f"signal {ix.signals.get(id(q), '?')!r}"
        if q._what == "join":
            target = ix.by_addr.get(q._owner)
            if target is not None:
                return f"join {target!r}"
            return f"join 0x{q._owner:x}"
        if q._what is not None:
            return f"{q._what} 0x{q._owner:x}"
        return f"WaitQueue 0x{id(q):x}"
    if w is _FOREVER:
        return "sleep forever"
    if type(w) is _Job:
        j = <_Job>w
        if j.op is not None:
            return _op_words(j.op.op.code, j.op.op.fd, j.op.op.events) \
                + " (blocking pool)"
        return f"blocking {_callable_name(j.fn)}"
    if type(w) is _Stream:
        st = <_Stream>w
        word = "accept" if st.accepting else "recv"
        if st.op is not None:
            return f"{word} fd {st.op.op.fd}"
        return word
    if isinstance(w, _ThreadWaitable):
        return f"{type(w).__name__} 0x{id(w):x}"
    if fib__timer_armed(&f._sleep_node):
        return f"sleep until {f._sleep_node.deadline / 1e9:.3f} " \
               f"(in {max(0, f._sleep_node.deadline - now) / 1e9:.3f} s)"
    o = ix.io.get(f)
    if o is not None:
        return _op_words((<_Op>o).op.code, (<_Op>o).op.fd,
                         (<_Op>o).op.events)
    nums = ix.os.get(f)
    if nums is not None:
        return f"os signal {_os_names(nums)}"
    c = ix.conds.get(f)
    if c is not None:
        return f"wait_for {_callable_name((<Trigger>c)._pred)}"
    return "suspend"


cdef object _frames_summary(object frame):
    # The stack from `frame` outwards, innermost last; source lines are
    # looked up when formatted, not here.
    if frame is None:
        return _traceback.StackSummary()
    st = _traceback.StackSummary.extract(_traceback.walk_stack(frame),
                                         lookup_lines=False)
    st.reverse()
    return st


cdef object _own_frame():
    # The calling greenlet's innermost frame outside fibers.debug (dump()
    # and the control socket look at the fiber they run in).
    frame = _sys._getframe()
    while frame is not None and \
            frame.f_globals.get("__name__") == "fibers.debug":
        frame = frame.f_back
    return frame


cdef object _stack_of(Fiber f):
    cdef object g = f._glet
    if g is None:
        return _traceback.StackSummary()
    if g is PyGreenlet_GetCurrent():
        return _frames_summary(_own_frame())
    return _frames_summary(g.gr_frame)


cdef list _fibers_of(Scheduler s):
    _check_thread(s, "fibers")
    cdef list live = _live_fibers(s)
    cdef list out = []
    cdef _WaitIndex ix = None
    cdef FiberInfo info
    cdef Fiber f
    cdef int64_t now = s._now_ns()
    for f in live:
        info = FiberInfo.__new__(FiberInfo)
        info.fiber = f
        info.id = f._id
        info.name = f.name
        info.state = _STATE_NAMES[f._state]
        info.age = max(0, now - f._born_ns) / 1e9
        if f._state == ST_SUSPENDED:
            if ix is None:
                ix = _wait_index(s, live)
            info.waiting = _waiting_of(f, ix, now)
        info.stack = _stack_of(f)
        if s._debug is not None:
            info.spawned_at = (<_DebugState>s._debug).sites.get(f)
        out.append(info)
    return out


def _thread_scheduler():
    """Internal: the calling thread's scheduler (the running one, or its
    default), or None; never makes one (fibers.debug.dump)."""
    cdef void *p = fib__tls_get()
    if p != NULL:
        return <Scheduler>p
    return getattr(_tls, "scheduler", None)


# --------------------------------------------------------------------------
# FIBERS_DEBUG
# --------------------------------------------------------------------------

@cython.final
cdef class _DebugState:
    # A scheduler's FIBERS_DEBUG state (Scheduler._debug).
    cdef dict sites             # live Fiber -> where it was spawned
    cdef list unseen            # dead fibers whose exception nobody joined
    cdef Py_ssize_t unseen_dropped
    cdef Py_ssize_t slow        # runs over the threshold
    cdef int64_t slow_max       # the longest, ns
    cdef object slow_fiber      # its fiber's repr


cdef _DebugState _debug_state(Scheduler s):
    cdef _DebugState st
    if s._debug is None:
        st = _DebugState.__new__(_DebugState)
        st.sites = {}
        st.unseen = []
        s._debug = st
        _debug_scheds.add(s)
    return <_DebugState>s._debug


cdef int _debug_spawned(Scheduler s, Fiber f) except -1:
    _debug_state(s).sites[f] = _spawn_site()
    return 0


cdef int _debug_ended(Scheduler s, Fiber f) except -1:
    # The end of _finish: the fiber's spawn site is no longer needed (a
    # failure nobody joined keeps it, with the fiber, in `unseen`).
    (<_DebugState>s._debug).sites.pop(f, None)
    return 0


cdef object _spawn_site():
    # Where spawn() was called, for FIBERS_DEBUG: the caller's frames, the
    # fibers package's own left out (spawn may come through a Group, ...).
    frame = _sys._getframe()
    while frame is not None and \
            frame.f_globals.get("__name__", "").startswith("fibers."):
        frame = frame.f_back
    return _frames_summary(frame)


cdef int _debug_switch(Scheduler s, Fiber nxt) except -1:
    # At every switch while FIBERS_DEBUG is on: the run of the fiber that
    # leaves (s._current) ends; nxt's begins (None: the hub's, not timed).
    cdef int64_t now = fib__monotonic_ns()
    cdef Fiber cur = s._current
    if cur is not None and s._run_ns != 0 and now - s._run_ns >= _slow_ns:
        _debug_slow(s, cur, now - s._run_ns)
    s._run_ns = now if nxt is not None else 0
    return 0


cdef int _debug_slow(Scheduler s, Fiber f, int64_t ns) except -1:
    # asyncio's "Executing <Task> took 0.2 seconds", for a fiber run.
    cdef _DebugState st
    try:
        st = _debug_state(s)
        st.slow += 1
        if ns > st.slow_max:
            st.slow_max = ns
            st.slow_fiber = repr(f)
        if f._state == ST_DEAD:
            where = "it ran to its end"
        elif f._glet is PyGreenlet_GetCurrent():
            where = "it gave control back at:\n" + "".join(
                _traceback.format_list(_frames_summary(_own_frame()))
            ).rstrip("\n")
        else:
            where = ""
        _log.warning("slow fiber run: %s ran %.3f s without giving the "
                     "scheduler a turn (FIBERS_DEBUG; the threshold is "
                     "%.3f s); %s", repr(f), ns / 1e9, _slow_ns / 1e9, where)
    except Exception:
        pass
    return 0


cdef int _log_uncaught(Scheduler s, Fiber f, object exc) except -1:
    # The one log line of a fiber that died of an exception nobody joined
    # (yet); FIBERS_DEBUG adds where the fiber was spawned, and keeps the
    # fiber for the report at close (if still nobody has joined it then).
    cdef _DebugState st
    site = None
    if s._debug is not None:
        site = (<_DebugState>s._debug).sites.get(f)
    if site is not None:
        _log.error("uncaught exception in %r, spawned at:\n%s", f,
                   "".join(_traceback.format_list(site)).rstrip(),
                   exc_info=(type(exc), exc, exc.__traceback__))
    else:
        _log.error("uncaught exception in %r", f,
                   exc_info=(type(exc), exc, exc.__traceback__))
    if _debug_on:
        st = _debug_state(s)
        if len(st.unseen) < _UNSEEN_MAX:
            st.unseen.append(f)
        else:
            st.unseen_dropped += 1
    return 0


cdef str _raised_at(object exc):
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f', raised at File "{code.co_filename}", line {tb.tb_lineno}, ' \
           f'in {code.co_name}'


cdef str _debug_report(Scheduler s, str when):
    # FIBERS_DEBUG's report on s, or "" when there is nothing to say.
    cdef Fiber f
    cdef _DebugState st = _debug_state(s)
    live = _fibers_of(s)
    unseen = [f for f in st.unseen if not f._joined]
    if not live and not unseen and not st.slow:
        return ""
    parts = [f"FIBERS_DEBUG report on {s!r} {when}:\n"]
    if live:
        parts.append(f"{len(live)} fiber(s) never finished:\n")
        for info in live:
            parts.append(info.format())
    if unseen:
        parts.append(f"{len(unseen)} fiber(s) ended with an exception that "
                     f"nobody joined (each logged when it happened):\n")
        for f in unseen:
            parts.append(f"  {f!r}: {f._exception!r}"
                         f"{_raised_at(f._exception)}\n")
        if st.unseen_dropped:
            parts.append(f"  ... and {st.unseen_dropped} more\n")
    if st.slow:
        parts.append(f"{st.slow} fiber run(s) took over "
                     f"{_slow_ns / 1e9:.3f} s; the longest, "
                     f"{st.slow_max / 1e9:.3f} s, was {st.slow_fiber}\n")
    # Reported once: a later report says only what is new.
    st.unseen = []
    st.unseen_dropped = 0
    st.slow = 0
    st.slow_max = 0
    st.slow_fiber = None
    return "".join(parts).rstrip("\n")


cdef int _debug_close(Scheduler s) except -1:
    report = _debug_report(s, "at close(); the fibers still alive are "
                              "killed now")
    if report:
        _log.warning("%s", report)
    return 0


def _debug_at_exit():
    # Interpreter exit under FIBERS_DEBUG: the main thread's default
    # scheduler is closed here (so its report comes with its close), then
    # the schedulers of this thread still open report what they hold.
    # Registered after _close_at_exit, so it runs first (atexit is LIFO).
    if not _debug_on:
        return
    _close_left_behind(getattr(_tls, "scheduler", None))
    me = <long>PyThread_get_thread_ident()
    for s in list(_debug_scheds):
        if (<Scheduler>s)._closed or (<Scheduler>s)._running or \
                (<Scheduler>s)._owner_thread != me:
            continue
        report = _debug_report(<Scheduler>s, "at interpreter exit (never "
                                             "closed)")
        if report:
            _log.warning("%s", report)


_atexit.register(_debug_at_exit)


def _debug_enable(bint on, slow=0.1):
    """Internal: fibers.debug.enable() / disable()."""
    global _debug_on, _slow_ns
    cdef int64_t ns = _to_ns(slow, "enable")
    if ns <= 0:
        raise ValueError(f"enable() needs slow > 0, got {slow!r}")
    _slow_ns = ns
    _debug_on = on


def _debug_settings():
    """Internal: (on, slow threshold in seconds)."""
    return _debug_on, _slow_ns / 1e9


cdef object _env_debug = _os.environ.get("FIBERS_DEBUG", "")
if _env_debug.strip() not in ("", "0"):
    _debug_on = True
