"""`make bench-subprocess`: many subprocesses at once under a ticker.

    python -m bench.subprocess_run [--rounds 5] [--procs 100] [--sleep 0.2]
                                   [--runners a,b,...]

One measurement, in a fresh interpreter per sample: a ticker wakes every
10 ms and records the real time between its wake-ups; once it has settled,
--procs children ``sleep --sleep`` are started at once (one fiber or task
each: spawn, then wait for the exit) and awaited.  Figures: the wall time
from the first spawn to the last exit (ideal: --sleep), and the ticker's
worst gap in that window (ideal: 10 ms; every millisecond above is a
moment no other fiber or task could run).  All exit codes must be 0.

Runners: fibers.subprocess.run on each pump backend, and asyncio's
create_subprocess_exec on uvloop (the issue's peer) and on the default
asyncio loop.  Rounds are interleaved across runners; the table reports
medians, as bench/bulk.py does.  Every wait is bounded (a child's alarm,
the parent's timeout on it).
"""
import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK_S = 0.010
SETTLE_S = 0.1
SAMPLE_TIMEOUT_S = 120

RUNNERS = {
    "fibers-io_uring": {"FIBERS_BACKEND": "io_uring"},
    "fibers-epoll": {"FIBERS_BACKEND": "epoll"},
    "uvloop": {},
    "asyncio": {},
}
HEADLINE = "fibers-io_uring"
PEER = "uvloop"


# ------------------------------------------------------------ the runners

def run_fibers(procs, secs):
    import fibers
    from fibers import subprocess as sp

    def main():
        gaps = []
        done = [False]

        def ticker():
            last = time.perf_counter()
            while not done[0]:
                fibers.sleep(TICK_S)
                t = time.perf_counter()
                gaps.append(t - last)
                last = t

        def child():
            return sp.run(["sleep", str(secs)]).returncode

        tk = fibers.spawn(ticker)
        fibers.sleep(SETTLE_S)
        gaps.clear()
        t0 = time.perf_counter()
        kids = [fibers.spawn(child) for _ in range(procs)]
        codes = [k.join() for k in kids]
        wall = time.perf_counter() - t0
        worst = max(gaps, default=0.0)
        done[0] = True
        tk.join()
        return wall, worst, codes

    return fibers.run(main)


def run_asyncio(procs, secs, use_uvloop):
    import asyncio

    async def main():
        gaps = []
        done = [False]

        async def ticker():
            last = time.perf_counter()
            while not done[0]:
                await asyncio.sleep(TICK_S)
                t = time.perf_counter()
                gaps.append(t - last)
                last = t

        async def child():
            p = await asyncio.create_subprocess_exec("sleep", str(secs))
            return await p.wait()

        tk = asyncio.ensure_future(ticker())
        await asyncio.sleep(SETTLE_S)
        gaps.clear()
        t0 = time.perf_counter()
        codes = await asyncio.gather(*[child() for _ in range(procs)])
        wall = time.perf_counter() - t0
        worst = max(gaps, default=0.0)
        done[0] = True
        await tk
        return wall, worst, list(codes)

    if use_uvloop:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def one(name, procs, secs):
    signal.alarm(SAMPLE_TIMEOUT_S)
    if name.startswith("fibers"):
        wall, worst, codes = run_fibers(procs, secs)
    elif name in ("uvloop", "asyncio"):
        wall, worst, codes = run_asyncio(procs, secs, name == "uvloop")
    else:
        raise SystemExit(f"unknown runner {name}")
    bad = [c for c in codes if c != 0]
    if len(codes) != procs or bad:
        raise SystemExit(f"{len(codes)} children, exit codes {bad[:5]}")
    print(json.dumps({"wall_s": wall, "worst_gap_ms": worst * 1e3,
                      "error": None}))


# ------------------------------------------------------------ main

def measure(name, procs, secs):
    env = dict(os.environ)
    env.pop("FIBERS_BACKEND", None)
    env.update(RUNNERS[name])
    try:
        res = subprocess.run(
            [sys.executable, "-m", "bench.subprocess_run", "--one", name,
             "--procs", str(procs), "--sleep", str(secs)],
            capture_output=True, text=True, cwd=ROOT, env=env,
            timeout=SAMPLE_TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "error": "timed out"}
    if res.returncode != 0:
        return {"wall_s": None, "error": res.stderr.strip()[-300:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--procs", type=int, default=100)
    ap.add_argument("--sleep", type=float, default=0.2)
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not (1 <= args.procs <= 2000 and 0 <= args.sleep <= 30):
        ap.error("need 1 <= procs <= 2000 and 0 <= sleep <= 30")
    if args.one:
        return one(args.one, args.procs, args.sleep)
    if not 1 <= args.rounds <= 50:
        ap.error("need 1 <= rounds <= 50")
    runners = [r for r in args.runners.split(",") if r]
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        ap.error(f"unknown runner(s): {', '.join(unknown)}")
    samples = {n: [] for n in runners}
    for rnd in range(args.rounds):
        for name in runners:
            res = measure(name, args.procs, args.sleep)
            samples[name].append(res)
            shown = (f"wall {res['wall_s']:.3f} s, worst gap "
                     f"{res['worst_gap_ms']:.1f} ms"
                     if res["wall_s"] is not None
                     else "ERROR " + str(res["error"])[:200])
            print(f"round {rnd + 1} {name}: {shown}", file=sys.stderr,
                  flush=True)

    def median(v, key):
        xs = [x[key] for x in v if x.get(key) is not None]
        return statistics.median(xs) if xs else None

    wall = {n: median(v, "wall_s") for n, v in samples.items()}
    gap = {n: median(v, "worst_gap_ms") for n, v in samples.items()}
    print(f"\n{args.procs} subprocesses `sleep {args.sleep}` at once under a "
          f"{TICK_S * 1e3:.0f} ms ticker, median of {args.rounds} "
          f"(lower is better):")
    print(f"| runner | wall s | vs {PEER} | ticker's worst gap ms | "
          f"vs {PEER} |")
    print("|---|---:|---:|---:|---:|")
    for n in runners:
        w, g = wall[n], gap[n]
        wr = f"{w / wall[PEER]:.2f}x" if w and wall.get(PEER) else "-"
        gr = f"{g / gap[PEER]:.2f}x" if g and gap.get(PEER) else "-"
        print(f"| {n} | {'ERR' if w is None else f'{w:.3f}'} | {wr} | "
              f"{'-' if g is None else f'{g:.1f}'} | {gr} |")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(ROOT, "bench", "results",
                                     f"subprocess-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"when": stamp, "python": platform.python_version(),
                   "kernel": platform.release(), "procs": args.procs,
                   "sleep": args.sleep, "rounds": args.rounds,
                   "headline": HEADLINE, "peer": PEER, "samples": samples,
                   "wall_s": wall, "worst_gap_ms": gap}, f, indent=2)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
