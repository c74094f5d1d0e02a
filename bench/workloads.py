"""The core benchmark workloads, written once per runtime.

Every workload times itself and returns one number: ns per operation, or
seconds of wall time (sleepers), or bytes per idle task (idle_mem).  Setup
that is not the operation (creating the event loop, say) stays outside the
timed region.  Each runtime gets the code its users would write: fibers and
gevent blocking-style, asyncio/uvloop/trio with await.

Run one from the command line (the harness does this for the memory
workload, so each measurement starts from a fresh process):

    python -m bench.workloads fibers idle_mem
"""
import gc
import random
import sys
import time

RUNTIMES = ("fibers", "gevent", "asyncio", "uvloop", "trio")

YIELD_TASKS, YIELDS_EACH = 100, 2_000
SPAWNS = 200_000
PINGPONGS = 200_000
SLEEPERS, SLEEP_MAX = 100_000, 0.05
IDLE = 100_000

# name -> (unit, ops per run); ns/op = elapsed / ops
WORKLOADS = {
    "yield": ("ns/op", YIELD_TASKS * YIELDS_EACH),
    "spawn_join": ("ns/op", SPAWNS),
    "pingpong": ("ns/op", PINGPONGS),
    "sleepers": ("s", 1),
    "idle_mem": ("bytes", 1),
}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def sleep_times():
    rnd = random.Random(12345)
    return [rnd.random() * SLEEP_MAX for _ in range(SLEEPERS)]


# --------------------------------------------------------------- fibers

def fibers_workload(name):
    import fibers

    def yield_main():
        def w():
            for _ in range(YIELDS_EACH):
                fibers.yield_now()
        t0 = time.perf_counter()
        fs = [fibers.spawn(w) for _ in range(YIELD_TASKS)]
        for f in fs:
            f.join()
        return time.perf_counter() - t0

    def spawn_main():
        def trivial():
            return 1
        t0 = time.perf_counter()
        fs = [fibers.spawn(trivial) for _ in range(SPAWNS)]
        for f in fs:
            f.join()
        return time.perf_counter() - t0

    def ping_main():
        def pong():
            for _ in range(PINGPONGS):
                fibers.wait_signal("ping")
                fibers.signal_one("pong")
        p = fibers.spawn(pong)
        fibers.yield_now()
        t0 = time.perf_counter()
        for _ in range(PINGPONGS):
            fibers.signal_one("ping")
            fibers.wait_signal("pong")
        elapsed = time.perf_counter() - t0
        p.join()
        return elapsed

    def sleepers_main():
        times = sleep_times()
        t0 = time.perf_counter()
        fs = [fibers.spawn(fibers.sleep, t) for t in times]
        for f in fs:
            f.join()
        return time.perf_counter() - t0

    def idle_main():
        def idle():
            fibers.wait_signal("never")
        gc.collect()
        before = rss_bytes()
        fs = [fibers.spawn(idle) for _ in range(IDLE)]
        fibers.sleep(0)
        fibers.sleep(0)
        assert all(f.state == "suspended" for f in fs)
        gc.collect()
        used = (rss_bytes() - before) / IDLE
        fibers.signal_all("never")
        return used

    mains = {"yield": yield_main, "spawn_join": spawn_main,
             "pingpong": ping_main, "sleepers": sleepers_main,
             "idle_mem": idle_main}
    return fibers.run(mains[name])


# --------------------------------------------------------------- gevent

def gevent_workload(name):
    import gevent
    import gevent.event

    if name == "yield":
        def w():
            for _ in range(YIELDS_EACH):
                gevent.sleep(0)
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(w) for _ in range(YIELD_TASKS)])
        return time.perf_counter() - t0
    if name == "spawn_join":
        def trivial():
            return 1
        t0 = time.perf_counter()
        gs = [gevent.spawn(trivial) for _ in range(SPAWNS)]
        for g in gs:
            g.join()
        return time.perf_counter() - t0
    if name == "pingpong":
        a, b = gevent.event.Event(), gevent.event.Event()

        def pong():
            for _ in range(PINGPONGS):
                a.wait()
                a.clear()
                b.set()
        p = gevent.spawn(pong)
        gevent.sleep(0)
        t0 = time.perf_counter()
        for _ in range(PINGPONGS):
            a.set()
            b.wait()
            b.clear()
        elapsed = time.perf_counter() - t0
        p.join()
        return elapsed
    if name == "sleepers":
        times = sleep_times()
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(gevent.sleep, t) for t in times])
        return time.perf_counter() - t0
    if name == "idle_mem":
        ev = gevent.event.Event()
        gc.collect()
        before = rss_bytes()
        gs = [gevent.spawn(ev.wait) for _ in range(IDLE)]
        gevent.sleep(0)
        gevent.sleep(0)
        gc.collect()
        used = (rss_bytes() - before) / IDLE
        ev.set()
        gevent.joinall(gs)
        return used
    raise KeyError(name)


# ------------------------------------------------------ asyncio / uvloop

def asyncio_workload(name, use_uvloop=False):
    import asyncio

    async def yield_main():
        async def w():
            for _ in range(YIELDS_EACH):
                await asyncio.sleep(0)
        t0 = time.perf_counter()
        await asyncio.gather(*[w() for _ in range(YIELD_TASKS)])
        return time.perf_counter() - t0

    async def spawn_main():
        async def trivial():
            return 1
        t0 = time.perf_counter()
        ts = [asyncio.ensure_future(trivial()) for _ in range(SPAWNS)]
        for t in ts:
            await t
        return time.perf_counter() - t0

    async def ping_main():
        a, b = asyncio.Event(), asyncio.Event()

        async def pong():
            for _ in range(PINGPONGS):
                await a.wait()
                a.clear()
                b.set()
        p = asyncio.ensure_future(pong())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for _ in range(PINGPONGS):
            a.set()
            await b.wait()
            b.clear()
        elapsed = time.perf_counter() - t0
        await p
        return elapsed

    async def sleepers_main():
        times = sleep_times()
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.sleep(t) for t in times])
        return time.perf_counter() - t0

    async def idle_main():
        ev = asyncio.Event()
        gc.collect()
        before = rss_bytes()
        ts = [asyncio.ensure_future(ev.wait()) for _ in range(IDLE)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gc.collect()
        used = (rss_bytes() - before) / IDLE
        ev.set()
        await asyncio.gather(*ts)
        return used

    mains = {"yield": yield_main, "spawn_join": spawn_main,
             "pingpong": ping_main, "sleepers": sleepers_main,
             "idle_mem": idle_main}
    if use_uvloop:
        import uvloop
        return uvloop.run(mains[name]())
    return asyncio.run(mains[name]())


# ----------------------------------------------------------------- trio

def trio_workload(name):
    import trio

    async def yield_main():
        async def w():
            for _ in range(YIELDS_EACH):
                await trio.lowlevel.checkpoint()
        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for _ in range(YIELD_TASKS):
                n.start_soon(w)
        return time.perf_counter() - t0

    async def spawn_main():
        async def trivial():
            return 1
        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for _ in range(SPAWNS):
                n.start_soon(trivial)
        return time.perf_counter() - t0

    async def ping_main():
        # trio's Event cannot be cleared: a fresh one per round is the idiom.
        box = {"a": trio.Event(), "b": trio.Event()}

        async def pong():
            for _ in range(PINGPONGS):
                await box["a"].wait()
                box["a"] = trio.Event()
                box["b"].set()
        async with trio.open_nursery() as n:
            n.start_soon(pong)
            await trio.lowlevel.checkpoint()
            t0 = time.perf_counter()
            for _ in range(PINGPONGS):
                box["a"].set()
                await box["b"].wait()
                box["b"] = trio.Event()
            elapsed = time.perf_counter() - t0
        return elapsed

    async def sleepers_main():
        times = sleep_times()
        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for t in times:
                n.start_soon(trio.sleep, t)
        return time.perf_counter() - t0

    async def idle_main():
        ev = trio.Event()
        async with trio.open_nursery() as n:
            gc.collect()
            before = rss_bytes()
            for _ in range(IDLE):
                n.start_soon(ev.wait)
            await trio.sleep(0)
            await trio.sleep(0)
            gc.collect()
            used = (rss_bytes() - before) / IDLE
            ev.set()
        return used

    mains = {"yield": yield_main, "spawn_join": spawn_main,
             "pingpong": ping_main, "sleepers": sleepers_main,
             "idle_mem": idle_main}
    return trio.run(mains[name])


def measure(runtime, name):
    """Run one workload once; returns its figure in WORKLOADS[name]'s unit."""
    if runtime == "fibers":
        raw = fibers_workload(name)
    elif runtime == "gevent":
        raw = gevent_workload(name)
    elif runtime == "asyncio":
        raw = asyncio_workload(name)
    elif runtime == "uvloop":
        raw = asyncio_workload(name, use_uvloop=True)
    elif runtime == "trio":
        raw = trio_workload(name)
    else:
        raise KeyError(runtime)
    unit, ops = WORKLOADS[name]
    if unit == "ns/op":
        return raw / ops * 1e9
    return raw


if __name__ == "__main__":
    rt, wl = sys.argv[1], sys.argv[2]
    print(repr(measure(rt, wl)))
