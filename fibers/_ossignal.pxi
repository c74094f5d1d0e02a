# OS signals for fibers (fibers.wait_os_signal).  Included by _core.pyx.
#
# Python runs signal handlers in the main thread, between bytecodes or when
# C code calls PyErr_CheckSignals -- which the scheduler does after every
# wait, and the waker is the signal wakeup fd, so a signal ends the tick's
# wait at once (see Scheduler._enter).  So a handler is all we need: while
# a fiber waits for a signal, ours is installed; it records the number and
# wakes every fiber waiting for it.  When the last waiter for a signal
# leaves, the previous handler comes back: outside a wait a signal keeps
# its usual meaning (SIGTERM still ends the process, SIGINT still raises
# KeyboardInterrupt).  These are OS signals; TINN's named signals
# (wait_signal, signal_one) are another thing.

cdef dict _os_waiters = {}      # signum -> list of _OsSigWait
cdef dict _os_prev = {}         # signum -> the handler ours replaced


@cython.final
cdef class _OsSigWait:
    cdef Scheduler sched
    cdef Fiber fiber
    cdef int got


def _os_signal_handler(signum, frame):
    cdef _OsSigWait w
    cdef bint woke = False
    for w in _os_waiters.get(signum, ()):
        if w.got == 0:
            w.got = signum
            w.sched._wake(w.fiber, None)
            woke = True
    if woke:
        return
    # Between the wake and the waiter's clean-up nobody waits any more:
    # behave as the handler we replaced would have.
    prev = _os_prev.get(signum)
    if callable(prev):
        prev(signum, frame)
    elif prev == _signal.SIG_IGN:
        pass
    elif signum == _signal.SIGINT:
        raise KeyboardInterrupt
    else:
        _signal.signal(signum, _signal.SIG_DFL)
        _os.kill(_os.getpid(), signum)


cdef object _os_signal_value(int n):
    # The signal as the stdlib hands signals out (signal._int_to_enum, in
    # pthread_sigmask() and sigpending()): its signal.Signals member, or
    # the plain int for the real-time signals between SIGRTMIN and SIGRTMAX,
    # which have none -- Signals(n) would raise ValueError for them, after
    # the signal was consumed.
    try:
        return _signal.Signals(n)
    except ValueError:
        return n


cdef list _os_signums(tuple signums):
    cdef list nums = []
    cdef int n
    if not signums:
        raise TypeError("wait_os_signal() needs at least one signal number")
    for x in signums:
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"wait_os_signal() needs signal numbers, got "
                            f"{type(x).__name__}")
        n = x
        if n < 1 or n >= _signal.NSIG:
            raise ValueError(f"signal number out of range: {x!r}")
        if n not in nums:
            nums.append(n)
    return nums


def _wait_os_signal_body(list nums, timeout):
    cdef Scheduler s = _sched()
    return _os_wait(s, s._current, nums, timeout)


cdef object _os_wait(Scheduler s, Fiber me, list nums, object timeout):
    cdef _OsSigWait w = _OsSigWait.__new__(_OsSigWait)
    cdef list installed = []
    cdef Timer t = None
    cdef int n
    w.sched = s
    w.fiber = me
    try:
        for n in nums:
            if n not in _os_prev:
                # Raises for SIGKILL and SIGSTOP, and outside the main
                # thread; what was installed so far is undone below.
                _os_prev[n] = _signal.signal(n, _os_signal_handler)
                installed.append(n)
            _os_waiters.setdefault(n, []).append(w)
        if timeout is not None:
            t = s._arm_timeout(me, timeout)
        # While a fiber waits for a signal the scheduler is not idle (no
        # Deadlock): its tick waits on the waker, which is Python's signal
        # wakeup fd, so the signal ends the wait.
        s._os_waits += 1
        try:
            while w.got == 0:
                s._park(me)
        finally:
            s._os_waits -= 1
        return _os_signal_value(w.got)
    finally:
        if t is not None:
            s._disarm_timeout(me, t)
        for n in nums:
            waits = _os_waiters.get(n)
            if waits is not None and w in waits:
                waits.remove(w)
            if not waits:
                _os_waiters.pop(n, None)
                if n in _os_prev:
                    _signal.signal(n, _os_prev.pop(n))


def wait_os_signal(*signums, timeout=None):
    """Suspend this fiber until one of the OS signals ``signums`` arrives
    (``signal.SIGTERM``, ...), and return it as a :class:`signal.Signals`
    (a plain int for a real-time signal, which has no member there, as
    :func:`signal.sigpending` does).

    For graceful shutdown::

        def main():
            server = net.serve(("127.0.0.1", 8000), handler)
            fibers.wait_os_signal(signal.SIGTERM, signal.SIGINT)
            server.stop(grace=5)

    While a fiber waits, fibers' handler is installed for those signals;
    every fiber waiting for a signal is woken by it.  When the last waiter
    leaves, the previous handler is restored, so outside a wait a signal
    keeps its usual meaning.  Raises :class:`Timeout` after ``timeout``
    seconds.  Python handles signals in the main thread only, so this must
    be called there (ValueError otherwise, as :func:`signal.signal`).
    Outside any fiber it drives the scheduler meanwhile.
    """
    cdef Scheduler s = _sched()
    cdef Fiber me = s._current
    cdef list nums = _os_signums(signums)
    if <long>PyThread_get_thread_ident() != _main_ident:
        raise ValueError("wait_os_signal() only works in the main thread: "
                         "Python handles OS signals there")
    if timeout is not None:
        _to_ns(timeout, "wait_os_signal")
    if me is None:
        return s._drive("wait_os_signal", _wait_os_signal_body,
                        (nums, timeout))
    return _os_wait(s, me, nums, timeout)


def _set_os_handler(int signum, handler):
    """Internal (fibers.debug.dump_on): make ``handler`` the Python handler
    of ``signum``, as signal.signal() does, and return the previous one --
    unless fibers' own handler holds the signal for fibers in
    wait_os_signal(): replacing it would strand them, so ``handler`` is
    then the one put back when their wait ends (meanwhile the signal is
    theirs)."""
    if signum in _os_prev:
        old = _os_prev[signum]
        _os_prev[signum] = handler
        return old
    return _signal.signal(signum, handler)
