"""The live fiber view (Scheduler.fibers, FiberInfo), fibers.dump and
dump_on (with a real SIGUSR1), and FIBERS_DEBUG's reports: spawn sites,
slow runs, and what is left at close() and at interpreter exit."""
import io
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest

import fibers
import fibers.debug
from fibers import net
from fibers._core import ThreadLock

from debughelp import ServerProcess, read_until
from iohelp import skip_unless_pump_wait_seen, wait_until_blocked_in_pump

HERE = os.path.abspath(__file__)


def by_id(infos):
    return {i.id: i for i in infos}


def infos_of(sched, *fs):
    """The FiberInfo of each of fs, in that order."""
    got = {i.fiber: i for i in sched.fibers()}
    return [got[f] for f in fs]


# ---- which fibers, in which state ------------------------------------------

def test_fibers_lists_every_live_fiber_in_its_state(sched):
    seen = {}

    def parked():
        fibers.suspend()

    def main():
        p = fibers.spawn(parked)
        fibers.yield_now()                  # p runs and parks
        fresh = fibers.spawn(parked)        # never run: in the ready ring
        killed = fibers.spawn(parked)
        killed.kill()                       # dead, though still in the ring
        done = fibers.spawn(lambda: None)
        fibers.yield_now()                  # done ends; fresh parks
        late = fibers.spawn(parked)
        infos = sched.fibers()
        seen["infos"] = infos
        seen["fs"] = (fibers.current(), p, fresh, killed, done, late)
        for f in (p, fresh, late):
            f.kill()

    sched.run(main)
    me, p, fresh, killed, done, late = seen["fs"]
    infos = seen["infos"]
    assert [i.fiber for i in infos] == [me, p, fresh, late]
    assert [i.id for i in infos] == sorted(i.id for i in infos)
    assert [i.state for i in infos] == ["running", "suspended",
                                        "suspended", "ready"]
    assert infos[3].stack == [] and infos[3].waiting is None
    assert infos[0].waiting is None
    assert [i.name for i in infos] == [f.name for f in (me, p, fresh, late)]


def test_fiber_info_is_read_only(sched):
    def main():
        return sched.fibers()[0]

    info = sched.run(main)
    with pytest.raises(AttributeError):
        info.state = "dead"
    with pytest.raises(AttributeError):
        info.waiting = None
    with pytest.raises(TypeError):
        fibers.FiberInfo()


def test_fibers_belongs_to_the_schedulers_thread(sched):
    errors = []

    def other():
        try:
            sched.fibers()
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors and "another thread" in errors[0]


def test_many_ready_fibers_across_the_rings_wrap(sched):
    # More than the ring's first capacity (256), with its head moved on.
    def main():
        for _ in range(3):
            fibers.spawn(lambda: None)
        fibers.yield_now()
        fs = [fibers.spawn(fibers.suspend) for _ in range(600)]
        infos = sched.fibers()
        assert [i.fiber for i in infos[1:]] == fs
        assert {i.state for i in infos[1:]} == {"ready"}
        fibers.yield_now()
        assert {i.state for i in sched.fibers()[1:]} == {"suspended"}
        for f in fs:
            f.kill()

    sched.run(main)


def test_age_is_time_on_the_schedulers_clock(sched):
    def main():
        a = fibers.spawn(fibers.sleep, 100)
        fibers.sleep(3)
        b = fibers.spawn(fibers.sleep, 100)
        fibers.sleep(2)
        ia, ib = infos_of(sched, a, b)
        assert (ia.age, ib.age) == (5.0, 2.0)
        assert sched.fibers()[0].age == 5.0      # main itself
        a.kill()
        b.kill()

    sched.run(main)


def test_age_on_the_monotonic_clock_is_close():
    # The birth time is read coarse (a few ms): the age is never negative
    # and never off by more than the kernel's tick.
    with fibers.Scheduler() as s:
        def main():
            f = fibers.spawn(fibers.suspend)
            fibers.yield_now()
            t0 = time.monotonic()
            (info,) = infos_of(s, f)
            assert 0.0 <= info.age <= time.monotonic() - t0 + 0.05
            f.kill()

        s.run(main)


# ---- what a fiber waits on -------------------------------------------------

def test_waiting_names_each_kind_of_wait(sched):
    lk, rl = fibers.Lock(), fibers.RLock()
    sem, bsem = fibers.Semaphore(0), fibers.BoundedSemaphore(1)
    ev, cond = fibers.Event(), fibers.Condition()
    q, full, lifo = fibers.Queue(), fibers.Queue(maxsize=1), \
        fibers.LifoQueue()
    ch, ch2 = fibers.Channel(), fibers.Channel()
    out = {}

    def never():
        return False

    def cond_wait():
        with cond:
            cond.wait()

    def main():
        lk.acquire()
        holder = threading.Event()
        fibers.spawn(rl.acquire)        # holds it, from another fiber
        bsem.acquire()
        full.put(1)
        q.put(1)
        q.get()                         # an unfinished task: join waits
        target = fibers.spawn(fibers.suspend)
        waits = {
            "sleep": lambda: fibers.sleep(10),
            "forever": lambda: fibers.sleep(float("inf")),
            "suspend": fibers.suspend,
            "lock": lk.acquire,
            "rlock": rl.acquire,
            "sem": sem.acquire,
            "bsem": bsem.acquire,
            "event": ev.wait,
            "cond": cond_wait,
            "get": q.get,
            "put": lambda: full.put(2),
            "qjoin": q.join,
            "lifo": lifo.get,
            "send": lambda: ch.send(1),
            "recv": ch2.recv,
            "join": target.join,
            "signal": lambda: fibers.wait_signal("reload"),
            "wait_for": lambda: fibers.wait_for(never),
            "timed": lambda: lk.acquire(timeout=50),
            "blocking": lambda: fibers.blocking(holder.wait, 30),
        }
        fs = {k: fibers.spawn(fn) for k, fn in waits.items()}
        fibers.yield_now()
        fibers.yield_now()
        got = {i.fiber: i.waiting for i in sched.fibers()}
        out.update({k: got[f] for k, f in fs.items()})
        out["target"] = repr(target)
        holder.set()
        for f in list(fs.values()) + [target]:
            f.kill()
        lk.release()

    sched.run(main)
    assert out.pop("target") in out["join"]
    assert out == {
        "sleep": "sleep until 10.000 (in 10.000 s)",
        "forever": "sleep forever",
        "suspend": "suspend",
        "lock": f"Lock 0x{id(lk):x}",
        "rlock": f"RLock 0x{id(rl):x}",
        "sem": f"Semaphore 0x{id(sem):x}",
        "bsem": f"BoundedSemaphore 0x{id(bsem):x}",
        "event": f"Event.wait 0x{id(ev):x}",
        "cond": f"Condition.wait 0x{id(cond):x}",
        "get": f"Queue.get 0x{id(q):x}",
        "put": f"Queue.put 0x{id(full):x}",
        "qjoin": f"Queue.join 0x{id(q):x}",
        "lifo": f"LifoQueue.get 0x{id(lifo):x}",
        "send": f"Channel.send 0x{id(ch):x}",
        "recv": f"Channel.recv 0x{id(ch2):x}",
        "join": out["join"],
        "signal": "signal 'reload'",
        "wait_for": "wait_for test_debug_view."
                    "test_waiting_names_each_kind_of_wait.<locals>.never",
        "timed": f"Lock 0x{id(lk):x}",
        "blocking": "blocking threading.Event.wait",
    }
    assert out["join"].startswith("join <Fiber 'Fiber-")


def test_waiting_in_groups_pools_and_races(sched):
    out = {}

    def main():
        pool = fibers.Pool(1)
        gate = fibers.Event()
        pool.spawn(gate.wait)

        def in_group():
            with fibers.group() as g:
                g.spawn(gate.wait)

        waits = {
            "group": in_group,
            "pool_spawn": lambda: pool.spawn(gate.wait),
            "pool_join": pool.join,
            "map": lambda: fibers.Pool(2).map(lambda x: gate.wait(), [1]),
            "first": lambda: fibers.first(gate.wait, gate.wait),
        }
        fs = {k: fibers.spawn(fn) for k, fn in waits.items()}
        for _ in range(3):
            fibers.yield_now()
        got = {i.fiber: i.waiting for i in sched.fibers()}
        out.update({k: got[f] for k, f in fs.items()})
        out["pool"] = id(pool)
        gate.set()
        for f in fs.values():
            f.join()
        pool.join()

    sched.run(main)
    pool = out.pop("pool")
    assert out["group"].startswith("Group.wait 0x")
    assert out["pool_spawn"] == f"Pool.spawn 0x{pool:x}"
    assert out["pool_join"] == f"Pool.join 0x{pool:x}"
    assert out["map"].startswith("Pool.map 0x")
    assert out["first"].startswith("first 0x")


def test_waiting_on_os_signals_and_thread_locks(sched):
    tl = ThreadLock()
    out = {}

    def main():
        tl.acquire()
        fs = {"os": fibers.spawn(fibers.wait_os_signal, signal.SIGUSR2,
                                 signal.SIGHUP),
              "tl": fibers.spawn(tl.acquire)}
        fibers.yield_now()
        got = {i.fiber: i.waiting for i in sched.fibers()}
        out.update({k: got[f] for k, f in fs.items()})
        tl.release()
        for f in fs.values():
            f.kill()

    sched.run(main)
    assert out == {"os": "os signal SIGUSR2, SIGHUP",
                   "tl": f"ThreadLock 0x{id(tl):x}"}


def test_waiting_on_io(io_sched):
    s = io_sched
    out = {}

    def handler(conn, addr):
        conn.recv(10)

    def main():
        a, _a = net.socketpair()        # a's peer never reads: send fills
        _b, b = net.socketpair()        # b's peer never writes
        lst = net.listen(("127.0.0.1", 0))
        r, w = os.pipe()
        srv = net.serve(("127.0.0.1", 0), handler)
        c = net.connect(srv.address)
        fs = {"recv": fibers.spawn(b.recv, 1),
              "send": fibers.spawn(a.sendall, b"x" * (1 << 24)),
              "accept": fibers.spawn(lst.accept),
              "readable": fibers.spawn(fibers.wait_readable, r)}
        while srv.connections == 0:
            fibers.yield_now()
        fibers.yield_now()
        (handler_fiber,) = [i for i in s.fibers()
                            if i.stack and i.stack[-1].name == "handler"]
        got = {i.fiber: i.waiting for i in s.fibers()}
        out.update({k: got[f] for k, f in fs.items()})
        out["handler"] = handler_fiber.waiting
        out["fds"] = (a.fileno(), b.fileno(), lst.fileno(), r)
        for f in fs.values():
            f.kill()
        c.close()
        srv.stop(0)
        for x in (a, _a, b, _b, lst):
            x.close()
        os.close(r)
        os.close(w)

    s.run(main)
    fa, fb, fl, fr = out.pop("fds")
    handler = out.pop("handler")
    assert out == {"recv": f"recv fd {fb}", "send": f"send fd {fa}",
                   "accept": f"accept fd {fl}",
                   "readable": f"readable fd {fr}"}
    assert handler.startswith("recv fd ")


# ---- stacks ----------------------------------------------------------------

def test_stacks_innermost_last(sched):
    def inner(ev):
        ev.wait()                               # the parked line

    def outer(ev):
        inner(ev)

    def main():
        ev = fibers.Event()
        f = fibers.spawn(outer, ev)
        fibers.yield_now()
        mine, theirs = infos_of(sched, fibers.current(), f)
        ev.set()
        return mine, theirs

    mine, theirs = sched.run(main)
    assert all(isinstance(fr, traceback.FrameSummary) for fr in theirs.stack)
    assert [fr.name for fr in theirs.stack] == ["outer", "inner"]
    assert theirs.stack[-1].filename == HERE
    assert theirs.stack[-1].line == "ev.wait()                               "\
        "# the parked line"
    # The running fiber's own stack ends where it asked.
    assert [fr.name for fr in mine.stack[-2:]] == ["main", "infos_of"]
    assert "infos_of(sched" in mine.stack[-2].line
    text = theirs.format()
    assert text.splitlines()[0] == (
        f"Fiber {theirs.id} {theirs.name!r} suspended, age 0.000 s, "
        f"waiting on Event.wait 0x{int(theirs.waiting.split('0x')[1], 16):x}")
    assert f'File "{HERE}", line ' in text and "in inner\n    ev.wait()" \
        in text


# ---- dump and dump_on ------------------------------------------------------

def test_dump_prints_every_fiber(sched):
    buf = io.StringIO()

    def worker(q):
        q.get()

    def main():
        q = fibers.Queue()
        f = fibers.spawn(worker, q)
        f.name = "worker-a"
        fibers.yield_now()
        fibers.dump(file=buf)
        f.kill()

    sched.run(main)
    text = buf.getvalue()
    first = text.splitlines()[0]
    assert first.startswith("=== fibers: 2 live in <Scheduler ")
    assert f"pid {os.getpid()}" in first
    assert "Fiber 2 'worker-a' suspended, age 0.000 s, waiting on Queue.get" \
        in text
    assert "in worker\n    q.get()\n" in text
    assert "Fiber 1 'Fiber-1' running" in text


def test_dump_in_a_thread_without_scheduler():
    buf = io.StringIO()
    t = threading.Thread(target=fibers.dump, args=(buf,), name="bare")
    t.start()
    t.join(10)
    assert buf.getvalue() == "=== fibers: no scheduler in thread 'bare' ===\n"


def test_dump_on_a_real_sigusr1_inside_a_busy_fiber(sched):
    # The handler runs in the fiber that is running -- one that would never
    # give a fiber of the dump's own a turn.
    buf = io.StringIO()
    prev = fibers.dump_on(signal.SIGUSR1, file=buf)
    try:
        spinning = threading.Event()

        def send():
            spinning.wait(10)
            os.kill(os.getpid(), signal.SIGUSR1)

        def busy():
            t = threading.Thread(target=send)
            t.start()
            spinning.set()
            deadline = time.monotonic() + 10
            while not buf.getvalue() and time.monotonic() < deadline:
                pass                            # spins, never yields
            t.join()

        def main():
            f = fibers.spawn(busy)
            f.name = "spinner"
            other = fibers.spawn(fibers.sleep, 7)
            f.join()
            other.kill()

        sched.run(main)
    finally:
        signal.signal(signal.SIGUSR1, prev)
    text = buf.getvalue()
    assert "Fiber 2 'spinner' running" in text
    assert "in busy\n    while not buf.getvalue()" in text
    assert "Fiber 3 'Fiber-3' ready" in text or \
        "Fiber 3 'Fiber-3' suspended" in text
    assert "_dump_handler" not in text          # fibers.debug's own frames


def test_dump_on_refuses_bad_signals():
    with pytest.raises(TypeError):
        fibers.dump_on("SIGUSR1")
    with pytest.raises(ValueError):
        fibers.dump_on(0)


def test_dump_on_beside_wait_os_signal(sched):
    # A fiber waiting for the signal has it; the dump handler comes back
    # when the wait ends (fibers' handler must not be replaced under it).
    buf = io.StringIO()
    prev = signal.getsignal(signal.SIGUSR1)
    try:
        def main():
            w = fibers.spawn(fibers.wait_os_signal, signal.SIGUSR1)
            fibers.yield_now()
            fibers.dump_on(signal.SIGUSR1, file=buf)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert w.join() == signal.SIGUSR1
            assert buf.getvalue() == ""
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                if buf.getvalue():
                    break
                fibers.yield_now()

        sched.run(main)
    finally:
        signal.signal(signal.SIGUSR1, prev)
    assert buf.getvalue().startswith("=== fibers: 1 live")


def test_sigusr1_from_another_process_ends_the_wait(backend, tmp_path):
    # The program waits in its pump (nothing ready, no timer): the signal's
    # byte on the wakeup fd ends the wait and the dump appears at once.
    skip_unless_pump_wait_seen()
    with ServerProcess(tmp_path, backend, dump_on=True) as srv:
        # "ready" is printed by a fiber that may not have ended yet: the
        # signal goes once the main thread is blocked in the pump's wait.
        wait_until_blocked_in_pump(srv.proc.pid, pid=srv.proc.pid)
        srv.proc.send_signal(signal.SIGUSR1)
        text = read_until(srv.proc.stderr, "sleeper", 30)
        assert "=== fibers: 6 live in <Scheduler" in text
        assert "Fiber 3 'worker-0' suspended" in text
        assert "waiting on Queue.get 0x" in text
        assert "waiting on os signal SIGTERM" in text
        # and again: the handler stays
        wait_until_blocked_in_pump(srv.proc.pid, pid=srv.proc.pid)
        srv.proc.send_signal(signal.SIGUSR1)
        assert "=== fibers: 6 live" in read_until(srv.proc.stderr,
                                                   "sleeper", 30)


# ---- FIBERS_DEBUG ----------------------------------------------------------

@pytest.fixture
def debug_on():
    fibers.debug.enable()
    try:
        yield
    finally:
        fibers.debug.disable()


def messages(errlog):
    return [r.getMessage() for r in errlog.records]


def test_without_debug_no_spawn_site_and_no_report(sched, errlog):
    assert not fibers.debug.enabled()

    def main():
        f = fibers.spawn(fibers.suspend)
        return sched.fibers()[1].spawned_at

    assert sched.run(main) is None
    sched.close()
    assert messages(errlog) == []


def test_debug_reports_leaked_fibers_at_close(clock, errlog, debug_on):
    s = fibers.Scheduler(clock=clock)

    def stuck(ev):
        ev.wait()

    def main():
        ev = fibers.Event()
        f = fibers.spawn(stuck, ev)                 # the spawn line
        f.name = "stuck"
        fibers.sleep(1)

    s.run(main)
    assert messages(errlog) == []
    s.close()
    (report,) = messages(errlog)
    assert errlog.records[0].levelname == "WARNING"
    lines = report.splitlines()
    assert lines[0].startswith("FIBERS_DEBUG report on <Scheduler ")
    assert lines[1] == "1 fiber(s) never finished:"
    assert lines[2].startswith("Fiber 2 'stuck' suspended, age 1.000 s, "
                               "waiting on Event.wait 0x")
    assert lines[3:] == [
        f'  File "{HERE}", line {stuck.__code__.co_firstlineno + 1}, '
        f'in stuck',
        "    ev.wait()",
        "  spawned at:",
        f'    File "{HERE}", line {main.__code__.co_firstlineno + 2}, '
        f'in main',
        "      f = fibers.spawn(stuck, ev)                 # the spawn line",
    ]


def test_debug_names_the_spawn_site_of_an_unjoined_failure(sched, errlog,
                                                           debug_on):
    def bad():
        raise ValueError("boom")

    def later():
        raise KeyError("seen")

    def main():
        fibers.spawn(bad)
        f = fibers.spawn(later)
        fibers.sleep(1)
        with pytest.raises(KeyError):
            f.join()                    # joined after all: not in the report

    sched.run(main)
    first = errlog.records[0]
    assert first.getMessage().startswith(
        "uncaught exception in <Fiber 'Fiber-2' dead>, spawned at:\n"
        f'  File "{HERE}", line {main.__code__.co_firstlineno + 1}, '
        f"in main\n    fibers.spawn(bad)")
    assert first.exc_info[0] is ValueError
    assert len(errlog.records) == 2     # the log line of each, and no more
    sched.close()
    report = errlog.records[2].getMessage()
    assert "1 fiber(s) ended with an exception that nobody joined" in report
    assert ("<Fiber 'Fiber-2' dead>: ValueError('boom'), raised at File "
            f'"{HERE}", line {bad.__code__.co_firstlineno + 1}, in bad') \
        in report
    assert "KeyError" not in report
    assert "never finished" not in report


def test_debug_logs_a_slow_run_with_the_fiber(sched, errlog, debug_on):
    # A real 150 ms block of the thread: that is the thing under test.
    def hog():
        time.sleep(0.15)
        fibers.yield_now()                      # gives control back here

    def main():
        f = fibers.spawn(hog)
        f.name = "hog"
        f.join()
        fibers.yield_now()

    sched.run(main)
    (rec,) = errlog.records
    msg = rec.getMessage()
    assert rec.levelname == "WARNING"
    assert msg.startswith("slow fiber run: <Fiber 'hog' ready> ran 0.1")
    took = float(msg.split(" ran ")[1].split(" s ")[0])
    assert 0.15 <= took < 5
    assert msg.endswith(
        "it gave control back at:\n"
        f'  File "{HERE}", line {hog.__code__.co_firstlineno + 2}, in hog\n'
        "    fibers.yield_now()                      # gives control back "
        "here")
    sched.close()
    assert "1 fiber run(s) took over 0.100 s; the longest, 0.1" in \
        errlog.records[1].getMessage()
    assert "was <Fiber 'hog'" in errlog.records[1].getMessage()


def test_debug_enable_refuses_a_bad_threshold():
    with pytest.raises(ValueError):
        fibers.debug.enable(slow=0)
    with pytest.raises(ValueError):
        fibers.debug.enable(slow=float("nan"))
    assert not fibers.debug.enabled()


EXIT_PROGRAM = r'''
import time, fibers

def bad():
    raise ValueError("boom")

def stuck(ev):
    ev.wait()

def hog():
    time.sleep(0.15)

def main():
    fibers.spawn(bad)
    fibers.spawn(stuck, fibers.Event()).name = "stuck"
    fibers.spawn(hog).join()
    fibers.sleep(0.01)

fibers.run(main)
# left open on purpose: reported at exit, never closed
other = fibers.Scheduler()
other.spawn(fibers.suspend).name = "orphan"
other.step()
'''


@pytest.mark.parametrize("env", ["1", "0"])
def test_fibers_debug_env_reports_at_interpreter_exit(backend, tmp_path,
                                                      env):
    prog = tmp_path / "prog.py"
    prog.write_text(EXIT_PROGRAM)
    r = subprocess.run([sys.executable, str(prog)], capture_output=True,
                       text=True, timeout=60,
                       env={**os.environ, "FIBERS_DEBUG": env,
                            "FIBERS_BACKEND": backend})
    assert r.returncode == 0
    err = r.stderr
    assert "uncaught exception in <Fiber 'Fiber-2' dead>" in err
    if env == "0":
        assert "spawned at" not in err and "FIBERS_DEBUG" not in err
        return
    assert "spawned at:\n  File" in err
    assert "slow fiber run: <Fiber 'Fiber-4'" in err
    # the default scheduler's report (closed at exit), then the other's
    report, orphan = err.split("FIBERS_DEBUG report on")[1:]
    assert "at close(); the fibers still alive are killed now" in report
    assert "Fiber 3 'stuck' suspended" in report
    assert "in stuck\n    ev.wait()" in report
    assert "ValueError('boom'), raised at File" in report
    assert "1 fiber run(s) took over 0.100 s" in report
    assert "at interpreter exit (never closed)" in orphan
    assert "Fiber 1 'orphan' suspended, age" in orphan
