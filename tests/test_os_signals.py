"""OS signals: handlers run promptly on both backends, Ctrl-C unwinds the
main fiber, and fibers can wait for signals (wait_os_signal)."""
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import capabilities
import fibers
from iohelp import skip_unless_pump_wait_seen

# A hang guard for the child processes, not a timing margin: each child
# finishes in well under a second when the behaviour is right, and waits
# for an hour when it is not.
CHILD_LIMIT = 60
TESTS = os.path.dirname(os.path.abspath(__file__))


def _child(code, backend):
    skip_unless_pump_wait_seen()
    # tests/ on the child's path: it imports iohelp.
    env = dict(os.environ, FIBERS_BACKEND=backend, PYTHONPATH=TESTS)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env=env, capture_output=True, text=True,
                          timeout=CHILD_LIMIT)


# The child's common part: an idle server (an armed accept, submitted in
# the same tick as the wait), a main fiber sleeping for an hour on the real
# clock, and a thread that sends the signal once the main fiber is parked
# (`parked` is set just before it parks) and the kernel shows the main
# thread asleep in the pump's wait.  A signal sent any earlier would be
# seen without waking anything; if main never gets there, the child fails.
PRELUDE = """
    import os, signal, sys, threading, time
    import fibers
    from fibers import net
    from iohelp import wait_until_blocked_in_pump

    parked = threading.Event()

    def send_when_parked(signum):
        def go():
            parked.wait(30)
            try:
                wait_until_blocked_in_pump(threading.main_thread().native_id)
            except AssertionError as e:
                print(e, file=sys.stderr, flush=True)
                os._exit(3)
            os.kill(os.getpid(), signum)
        threading.Thread(target=go, daemon=True).start()
"""


def test_a_python_handler_runs_at_once_in_an_idle_server(backend):
    r = _child(PRELUDE + """
    def on_usr1(signum, frame):
        print("handler ran", flush=True)
        fibers.stop()

    signal.signal(signal.SIGUSR1, on_usr1)

    def main():
        server = net.serve(("127.0.0.1", 0), lambda c, a: None)
        send_when_parked(signal.SIGUSR1)
        parked.set()
        fibers.sleep(3600)

    t0 = time.monotonic()
    fibers.run(main)
    print("run returned after", int(time.monotonic() - t0), "s")
    """, backend)
    assert r.returncode == 0, r.stderr
    assert "handler ran" in r.stdout
    assert "run returned after 0 s" in r.stdout


def test_ctrl_c_unwinds_main_and_run_reraises(backend):
    r = _child(PRELUDE + """
    def main():
        server = net.serve(("127.0.0.1", 0), lambda c, a: None)
        try:
            send_when_parked(signal.SIGINT)
            parked.set()
            fibers.sleep(3600)
        finally:
            server.stop(grace=1)
            print("finally ran; stopped:", server, flush=True)

    try:
        fibers.run(main)
    except KeyboardInterrupt:
        print("run raised KeyboardInterrupt", flush=True)
    """, backend)
    assert r.returncode == 0, r.stderr
    assert "finally ran; stopped: <fibers.net.Server" in r.stdout
    assert "stopped connections=0>" in r.stdout
    assert "run raised KeyboardInterrupt" in r.stdout


def test_sigterm_shuts_a_server_down_gracefully(backend):
    r = _child(PRELUDE + """
    got_it = fibers.Event()

    def handler(conn, addr):
        conn.sendall(b"hello")
        parked.set()                # main waits already; this parks next
        got_it.wait()               # a request in progress at SIGTERM,
        fibers.sleep(0.2)           # and still when the stop begins

    def client(address):
        with net.connect(address) as c:
            print("client got", c.recv(5), c.recv(5), flush=True)

    def main():
        server = net.serve(("127.0.0.1", 0), handler)
        fibers.spawn(client, server.address)
        send_when_parked(signal.SIGTERM)
        got = fibers.wait_os_signal(signal.SIGTERM)
        print("got", got.name, flush=True)
        got_it.set()
        server.stop(grace=5)
        return "clean"

    print(fibers.run(main))
    print("handler restored:",
          signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    """, backend)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "got SIGTERM" in out and "clean" in out
    assert "client got b'hello' b''" in out      # the handler finished
    assert "handler restored: True" in out


# ---- a handler that raises: the exception goes into main ----------------

# Python raises what a signal handler raised out of the call the main
# thread was blocked in (select(), recv()); the stdlib's own tests rely on
# it (test_selectors' test_select_interrupt_exc, test_socket's
# InterruptedTimeout tests, with signal.alarm).  Under fibers that thread
# is blocked in the hub's wait on behalf of main, so main gets it at its
# wait.  Regression: it came out of run() past main, which stayed parked.
RAISING_HANDLER = """
    log = []

    def on_usr1(signum, frame):
        raise ZeroDivisionError("from the handler")

    signal.signal(signal.SIGUSR1, on_usr1)

    def bystander():
        try:
            fibers.sleep(3600)
        except BaseException as e:
            log.append(f"bystander got {type(e).__name__}")
            raise

    def main():
        fibers.spawn(bystander)
        open_io()
        send_when_parked(signal.SIGUSR1)
        parked.set()
        try:
            fibers.sleep(3600)
        except ZeroDivisionError as e:
            log.append(f"main caught {e}")
        fibers.yield_now()
        return "main returned"

    t0 = time.monotonic()
    print(fibers.run(main), log, int(time.monotonic() - t0), flush=True)
"""


def test_a_handler_that_raises_raises_in_main_at_its_wait(backend):
    r = _child(PRELUDE + """
    def open_io():
        net.serve(("127.0.0.1", 0), lambda c, a: None)
    """ + RAISING_HANDLER, backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == \
        "main returned ['main caught from the handler'] 0"


def test_a_handler_that_raises_in_the_wakers_wait_goes_to_main(backend):
    # No I/O yet: the tick waits on the waker alone (ppoll), not in the
    # pump; the same rule holds there.
    if platform.machine() != "x86_64":
        capabilities.skip("x86_64", "ppoll's system call number is known "
                          "here for x86_64 only")
    r = _child(PRELUDE.replace(
        "wait_until_blocked_in_pump(threading.main_thread().native_id)",
        "wait_in_ppoll(threading.main_thread().native_id)") + """
    def wait_in_ppoll(tid):
        for _ in range(60000):
            with open(f"/proc/self/task/{tid}/syscall") as f:
                if f.read().split()[0] == "271":        # ppoll
                    return
            time.sleep(0.0005)
        raise AssertionError("main never waited in ppoll")

    def open_io():
        pass
    """ + RAISING_HANDLER, backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == \
        "main returned ['main caught from the handler'] 0"


def test_a_handler_that_raises_without_main_raises_from_run(backend):
    # run() without main: its caller is the one blocked, and gets it.
    r = _child(PRELUDE + """
    def on_usr1(signum, frame):
        raise ZeroDivisionError("from the handler")

    signal.signal(signal.SIGUSR1, on_usr1)

    def sleeper():
        net.serve(("127.0.0.1", 0), lambda c, a: None)
        send_when_parked(signal.SIGUSR1)
        parked.set()
        fibers.sleep(3600)

    fibers.spawn(sleeper)
    try:
        fibers.run()
    except ZeroDivisionError as e:
        print("run raised", e, flush=True)
    """, backend)
    assert r.returncode == 0, r.stderr
    assert "run raised from the handler" in r.stdout


# ---- in-process: KeyboardInterrupt raised elsewhere goes into main -------

def test_keyboard_interrupt_in_another_fiber_unwinds_main(sched):
    log = []

    def culprit():
        fibers.sleep(1)
        raise KeyboardInterrupt

    def main():
        fibers.spawn(culprit)
        try:
            fibers.sleep(100)
        finally:
            log.append(("main finally", fibers.now()))

    with pytest.raises(KeyboardInterrupt):
        sched.run(main)
    assert log == [("main finally", 1.0)]


def test_system_exit_from_a_quantum_step_unwinds_main(sched):
    log = []

    def step():
        raise SystemExit(3)

    sched.add_quantum_step(step)

    def main():
        try:
            fibers.wait_signal("never", timeout=50)
        finally:
            log.append("main finally")

    with pytest.raises(SystemExit) as e:
        sched.run(main)
    assert e.value.code == 3
    assert log == ["main finally"]


def test_ctrl_c_is_not_lost_when_main_swallows_it(sched):
    def culprit():
        raise KeyboardInterrupt

    def main():
        fibers.spawn(culprit)
        try:
            fibers.sleep(10)
        except KeyboardInterrupt:
            return "swallowed"

    with pytest.raises(KeyboardInterrupt):
        sched.run(main)


def test_without_main_run_raises_it_as_before(sched):
    log = []

    def bystander():
        try:
            fibers.sleep(10)
        finally:
            log.append("bystander finally")

    def culprit():
        fibers.sleep(1)
        raise KeyboardInterrupt

    sched.spawn(bystander)
    sched.spawn(culprit)
    with pytest.raises(KeyboardInterrupt):
        sched.run()
    assert log == []            # left parked, as with any run() that ends
    sched.close()
    assert log == ["bystander finally"]


# ---- wait_os_signal ------------------------------------------------------

def test_wait_os_signal_returns_the_signal_and_restores_the_handler(sched):
    before = signal.getsignal(signal.SIGUSR1)
    got_it = threading.Event()

    def kill_later():
        os.kill(os.getpid(), signal.SIGUSR1)
        got_it.wait(30)         # alive until main has it: no Deadlock

    def main():
        waiter = fibers.spawn(fibers.wait_os_signal, signal.SIGUSR2,
                              signal.SIGUSR1)
        fibers.yield_now()      # installed and parked
        assert signal.getsignal(signal.SIGUSR1) is not before
        t = threading.Thread(target=kill_later)
        t.start()
        try:
            return waiter.join()
        finally:
            got_it.set()
            t.join()

    got = sched.run(main)
    assert type(got) is signal.Signals and got is signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_every_waiter_sees_the_signal(sched):
    def main():
        ws = [fibers.spawn(fibers.wait_os_signal, signal.SIGUSR1)
              for _ in range(3)]
        fibers.yield_now()
        signal.raise_signal(signal.SIGUSR1)
        return [w.join() for w in ws]

    assert sched.run(main) == [signal.SIGUSR1] * 3


def test_a_real_time_signal_comes_back_as_an_int(io_sched):
    # Regression: the result was signal.Signals(n), which raises ValueError
    # for the real-time signals between SIGRTMIN and SIGRTMAX (the enum has
    # no member for them), after the signal was consumed.  The stdlib hands
    # them out as plain ints (signal.sigpending, pthread_sigmask).
    rt = signal.SIGRTMIN + 1
    assert rt not in set(signal.Signals)
    before = signal.getsignal(rt)

    def main():
        waiter = fibers.spawn(fibers.wait_os_signal, rt)
        fibers.yield_now()      # installed and parked
        signal.raise_signal(rt)
        return waiter.join()

    got = io_sched.run(main)
    assert type(got) is int and got == rt
    assert signal.getsignal(rt) == before


def test_wait_os_signal_times_out_on_the_virtual_clock(sched, clock):
    def main():
        with pytest.raises(fibers.Timeout):
            fibers.wait_os_signal(signal.SIGUSR1, timeout=30)
        return fibers.now()

    assert sched.run(main) == 30.0
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_wait_os_signal_bad_input(sched):
    def main():
        with pytest.raises(TypeError):
            fibers.wait_os_signal()
        with pytest.raises(TypeError):
            fibers.wait_os_signal("SIGTERM")
        with pytest.raises(ValueError):
            fibers.wait_os_signal(0)
        with pytest.raises(ValueError):
            fibers.wait_os_signal(signal.SIGUSR1, timeout=float("nan"))
        # SIGKILL cannot be caught: the error comes from signal.signal,
        # and what was installed before it is undone.
        with pytest.raises(OSError):
            fibers.wait_os_signal(signal.SIGUSR1, signal.SIGKILL)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL

    sched.run(main)

    errors = []

    def other_thread():
        try:
            fibers.wait_os_signal(signal.SIGUSR1, timeout=1)
        except ValueError as e:
            errors.append(str(e))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors and "main thread" in errors[0]


def test_wait_os_signal_alone_is_not_a_deadlock(backend):
    # Regression: with no other fiber, timer or thread, a fiber waiting in
    # wait_os_signal got Deadlock at once, although a signal can come.
    # SIGWINCH is ignored by default, so one sent before the wait begins
    # is harmless; the parent sends it until the child is done (bounded).
    code = textwrap.dedent("""
        import signal, fibers
        print("ready", flush=True)
        print(fibers.run(lambda: fibers.wait_os_signal(signal.SIGWINCH)).name,
              flush=True)
    """)
    env = dict(os.environ, FIBERS_BACKEND=backend)
    p = subprocess.Popen([sys.executable, "-c", code], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        for _ in range(200):
            p.send_signal(signal.SIGWINCH)
            try:
                p.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                pass
        out, err = p.communicate(timeout=CHILD_LIMIT)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert out.strip() == "SIGWINCH"
