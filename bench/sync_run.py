"""Lock hand-off and Queue ping-pong, in ns per operation: fibers.sync
against asyncio.Lock/asyncio.Queue on uvloop and gevent.lock/gevent.queue.

    make bench-sync                       # the real run (the lead's)
    python -m bench.sync_run --n 2000 --repeats 1     # a smoke run

Each (runtime, workload, repeat) runs in a fresh child process, so that
gevent's hub, uvloop's loop and fibers' scheduler never share one, and the
median of the repeats is reported, with the ratio to uvloop (the issue's
target: fibers <= 0.5x uvloop).

Workloads:
- lock: two workers take turns on one lock, yielding while they hold it,
  so every acquisition is a hand-off from the other worker (ns per
  acquisition).
- queue: a ping-pong of one item between two workers over two unbounded
  queues (ns per message, a round trip being two).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

IMPLS = ("fibers", "uvloop", "gevent")
WORKLOADS = ("lock", "queue")


def child_fibers(workload, n):
    import fibers
    from fibers.sync import Lock, Queue

    def main():
        if workload == "lock":
            lock = Lock()

            def worker():
                for _ in range(n):
                    with lock:
                        fibers.yield_now()
            t = time.perf_counter()
            fs = [fibers.spawn(worker) for _ in range(2)]
            for f in fs:
                f.join()
            return (time.perf_counter() - t) / (2 * n)
        a, b = Queue(), Queue()

        def echo():
            for _ in range(n):
                b.put(a.get())
        t = time.perf_counter()
        e = fibers.spawn(echo)
        for i in range(n):
            a.put(i)
            b.get()
        e.join()
        return (time.perf_counter() - t) / (2 * n)
    return fibers.run(main)


def child_uvloop(workload, n):
    import asyncio
    import uvloop

    async def main():
        if workload == "lock":
            lock = asyncio.Lock()

            async def worker():
                for _ in range(n):
                    async with lock:
                        await asyncio.sleep(0)
            t = time.perf_counter()
            await asyncio.gather(worker(), worker())
            return (time.perf_counter() - t) / (2 * n)
        a, b = asyncio.Queue(), asyncio.Queue()

        async def echo():
            for _ in range(n):
                await b.put(await a.get())
        t = time.perf_counter()
        e = asyncio.ensure_future(echo())
        for i in range(n):
            await a.put(i)
            await b.get()
        await e
        return (time.perf_counter() - t) / (2 * n)
    uvloop.install()
    return asyncio.run(main())


def child_gevent(workload, n):
    import gevent
    import gevent.lock
    import gevent.queue

    if workload == "lock":
        lock = gevent.lock.Semaphore(1)     # gevent's Lock is a Semaphore

        def worker():
            for _ in range(n):
                with lock:
                    gevent.sleep(0)
        t = time.perf_counter()
        gevent.joinall([gevent.spawn(worker), gevent.spawn(worker)])
        return (time.perf_counter() - t) / (2 * n)
    a, b = gevent.queue.Queue(), gevent.queue.Queue()

    def echo():
        for _ in range(n):
            b.put(a.get())
    t = time.perf_counter()
    e = gevent.spawn(echo)
    for i in range(n):
        a.put(i)
        b.get()
    e.join()
    return (time.perf_counter() - t) / (2 * n)


def run_child(impl, workload, n):
    out = subprocess.run(
        [sys.executable, "-m", "bench.sync_run", "--child", impl,
         "--workload", workload, "--n", str(n)],
        check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])["ns"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200000,
                    help="operations per worker per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = {"fibers": child_fibers, "uvloop": child_uvloop,
              "gevent": child_gevent}[args.child]
        print(json.dumps({"ns": fn(args.workload, args.n) * 1e9}))
        return
    impls = args.impls.split(",")
    results = {}
    for w in WORKLOADS:
        for impl in impls:
            runs = [run_child(impl, w, args.n) for _ in range(args.repeats)]
            results[w, impl] = statistics.median(runs)
            print(f"# {w} {impl}: {', '.join(f'{r:.0f}' for r in runs)} ns",
                  file=sys.stderr)
    print(f"\nn={args.n} per worker, median of {args.repeats} runs, "
          f"Python {sys.version.split()[0]}\n")
    print("| workload | " + " | ".join(f"{i} ns/op" for i in impls)
          + " | fibers / uvloop |")
    print("|---|" + "---:|" * (len(impls) + 1))
    for w in WORKLOADS:
        row = [f"{results[w, i]:.0f}" for i in impls]
        ratio = (f"{results[w, 'fibers'] / results[w, 'uvloop']:.2f}x"
                 if "fibers" in impls and "uvloop" in impls else "-")
        name = {"lock": "Lock hand-off", "queue": "Queue ping-pong"}[w]
        print(f"| {name} | " + " | ".join(row) + f" | {ratio} |")


if __name__ == "__main__":
    main()
