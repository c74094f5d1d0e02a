"""`make bench`: the core workloads on fibers and its peers, in one run.

Each (runtime, workload) measurement runs in a fresh interpreter, so memory
figures start clean and one runtime's garbage cannot slow the next.  Rounds
are interleaved (round 1 of every runtime, then round 2, ...) so that noise
on this shared machine hits every runtime alike; the table reports medians.

    python -m bench.run [--rounds N] [--workloads yield,pingpong] [--json PATH]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from bench.workloads import RUNTIMES, WORKLOADS

# (workload, peer, max ratio fibers/peer).  Lower is better for all units.
TARGETS = [
    ("yield", "uvloop", 0.6),
    ("yield", "gevent", 0.3),
    ("spawn_join", "uvloop", 0.25),
    ("pingpong", "uvloop", 0.5),
    ("sleepers", "uvloop", 0.5),
    ("idle_mem", "gevent", 0.35),
]
ABSOLUTE = [("idle_mem", 2500.0)]   # bytes per idle fiber

TIMEOUT_S = 300


def measure_once(runtime, workload):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "bench.workloads", runtime, workload],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise RuntimeError(f"{runtime}/{workload} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def fmt(value, unit):
    if unit == "ns/op":
        return f"{value:,.0f} ns"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.0f} B"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    runtimes = [r for r in args.runtimes.split(",") if r]

    samples = {w: {r: [] for r in runtimes} for w in workloads}
    for rnd in range(args.rounds):
        for w in workloads:
            for r in runtimes:
                samples[w][r].append(measure_once(r, w))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)

    med = {w: {r: statistics.median(v) for r, v in samples[w].items()}
           for w in workloads}

    # Table: one row per workload, a column per runtime, then fibers' ratio
    # to each peer (fibers / peer: below 1.0 means fibers is better).
    peers = [r for r in runtimes if r != "fibers"]
    head = ["workload"] + runtimes + [f"/{p}" for p in peers if "fibers" in runtimes]
    rows = []
    for w in workloads:
        unit = WORKLOADS[w][0]
        row = [f"{w} ({unit})"] + [fmt(med[w][r], unit) for r in runtimes]
        if "fibers" in runtimes:
            row += [f"{med[w]['fibers'] / med[w][p]:.2f}x" for p in peers]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(n) for c, n in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (n + 2) for n in widths) + "|")
    for row in rows:
        print(line(row))

    checks = []
    if "fibers" in runtimes:
        for w, peer, limit in TARGETS:
            if w in med and peer in med[w]:
                ratio = med[w]["fibers"] / med[w][peer]
                checks.append({"workload": w, "peer": peer, "ratio": ratio,
                               "target": limit, "met": ratio <= limit})
        for w, limit in ABSOLUTE:
            if w in med:
                v = med[w]["fibers"]
                checks.append({"workload": w, "peer": None, "value": v,
                               "target": limit, "met": v <= limit})
    print()
    for c in checks:
        what = (f"{c['workload']}: fibers/{c['peer']} = {c['ratio']:.2f}"
                if c["peer"] else f"{c['workload']}: fibers = {c['value']:,.0f}")
        print(f"  [{'met ' if c['met'] else 'MISS'}] {what} (target <= {c['target']})")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(os.path.dirname(__file__), "results",
                                     f"core-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({
            "when": stamp, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "rounds": args.rounds, "units": {w: WORKLOADS[w][0] for w in workloads},
            "samples": samples, "medians": med, "targets": checks,
        }, f, indent=2)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
