"""`make bench-monitor`: what the blocking-call detector costs when it is on.

The core workloads of `make bench` (yield, pingpong, spawn_join) run on
fibers with the monitor off and with it on (FIBERS_MONITOR=0.1, as a user
turns it on), each in a fresh interpreter, rounds interleaved (off, on,
off, on, ...) so that noise on the machine hits both alike.  One sample is
the median of REPS back-to-back runs of the workload in that interpreter
(one run of yield takes ~20 ms, shorter than the monitor's period of 25 ms
at that threshold, so a sample spans many of its wake-ups).  The table
reports the medians of the samples and on/off; the target is the issue's:
under 2% on yield.

With --baseline DIR (another checkout of fibers, built in place with this
interpreter) a third configuration runs that tree's fibers, for the cost
of the tick accounting itself (which is on whether the monitor is or not).

    python -m bench.monitor_run [--rounds N] [--workloads yield,pingpong]
                                [--baseline DIR] [--json PATH]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from bench.samples import csv_list, print_table
from bench.workloads import WORKLOADS

WORKLOADS_HERE = ("yield", "pingpong", "spawn_join")
TARGET = ("yield", 1.02)        # on / off
REPS = 25
TIMEOUT_S = 300
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import os, statistics, sys
import fibers
from bench.workloads import measure
wl, reps = sys.argv[1], int(sys.argv[2])
assert os.path.realpath(os.path.dirname(os.path.dirname(fibers.__file__))) \
    == os.path.realpath(sys.argv[3]), fibers.__file__
vals = [measure("fibers", wl) for _ in range(reps)]
names = [open(f"/proc/self/task/{t}/comm").read().strip()
         for t in os.listdir("/proc/self/task")]
assert names.count("fibers-monitor") == \
    (1 if os.environ.get("FIBERS_MONITOR") else 0), names
print(statistics.median(vals))
"""


def configs(baseline):
    env = {k: v for k, v in os.environ.items() if k != "FIBERS_MONITOR"}
    out = [("off", dict(env), HERE),
           ("on", dict(env, FIBERS_MONITOR="0.1"), HERE)]
    if baseline:
        base = os.path.abspath(baseline)
        out.append(("baseline", dict(env, PYTHONPATH=base), base))
    return out


def sample(workload, env, tree):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, workload, str(REPS), tree],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=tree)
    if out.returncode != 0:
        raise RuntimeError(f"{workload} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--workloads", default=",".join(WORKLOADS_HERE))
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    workloads = csv_list(args.workloads)
    for w in workloads:
        if w not in WORKLOADS_HERE:
            ap.error(f"unknown workload {w!r} (one of "
                     f"{', '.join(WORKLOADS_HERE)})")
    confs = configs(args.baseline)
    names = [c[0] for c in confs]
    samples = {w: {n: [] for n in names} for w in workloads}
    for rnd in range(args.rounds):
        for w in workloads:
            for name, env, tree in confs:
                samples[w][name].append(sample(w, env, tree))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    med = {w: {n: statistics.median(v) for n, v in samples[w].items()}
           for w in workloads}

    head = ["workload"] + names + ["on/off"] + \
        (["off/baseline"] if args.baseline else [])
    rows = []
    for w in workloads:
        m = med[w]
        row = [f"{w} ({WORKLOADS[w][0]})"] + [f"{m[n]:,.1f}" for n in names]
        row.append(f"{m['on'] / m['off']:.3f}")
        if args.baseline:
            row.append(f"{m['off'] / m['baseline']:.3f}")
        rows.append(row)
    print_table(head, rows)
    checks = []
    w, limit = TARGET
    if w in med:
        ratio = med[w]["on"] / med[w]["off"]
        checks.append({"workload": w, "ratio": ratio, "target": limit,
                       "met": ratio <= limit})
        print(f"\n  [{'met ' if ratio <= limit else 'MISS'}] {w}: monitor "
              f"on/off = {ratio:.3f} (target <= {limit})")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(HERE, "bench", "results",
                                     f"monitor-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"when": stamp, "python": platform.python_version(),
                   "machine": platform.machine(), "cpus": os.cpu_count(),
                   "rounds": args.rounds, "reps": REPS,
                   "baseline": args.baseline, "samples": samples,
                   "medians": med, "targets": checks}, f, indent=2)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
