"""`make bench-fs`: file-system watchers, fibers.fs against its peers.

    python -m bench.fs_run [--repeats 5] [--max-ops 100000]
                           [--rate-ops 50000] [--rate 10000]
                           [--contenders fibers-fanotify,watchdog,...]
                           [--modes rate,max] [--dir DIR]
                           [--md bench/results/fs.md] [--json PATH]

Method.  One sample = one contender, one workload mode, one fresh empty
directory:
  1. start the watcher process (bench/fs/watchers.py) alone on CPU 0 and
     wait for its READY (its watch is in place);
  2. run the C writer (bench/fs/writer.c) on CPU 1: its operations (mkdir
     of the tree, then create / rename / delete of files), each stamped
     with CLOCK_MONOTONIC just before its system call, then ROOT/DONE;
  3. the watcher stops after DONE (or its timeout) and writes the events it
     got, each with the time.monotonic_ns() of its receipt, and the CPU it
     used (user + sys, all threads, measured by itself with getrusage);
  4. match the events to the writer's operations (see match()).
Pinning the two sides to different CPUs keeps the writer from taking the
watcher's CPU; every thread of a watcher (watchdog's observer and emitter,
watchfiles' Rust thread) shares CPU 0.  Modes: "rate" paces the writer at
--rate ops/s (open loop) for the latency figures; "max" runs it flat out,
for throughput and loss.  Rounds are interleaved (round 1 of every mode
and contender, then round 2, ...) so drift on a shared machine hits all
alike, and the table shows medians over the rounds, each column's median
taken on its own.

Figures per contender:
  delivered/s   canonical events delivered / (receipt of the last one -
                the writer's first operation)
  per CPU-s     canonical events delivered / watcher CPU-seconds
  vs watchdog   per CPU-s relative to watchdog's
  lost          canonical events expected and not delivered
  p50, p99      latency from the operation's timestamp to receipt
  raw           every event the library handed to Python (all kinds,
                duplicates, the sentinel)
A sample whose watcher waited for its CPU (schedstat run-queue wait) for
more than BUSY_WAIT of its time was contended by some other process; it is
flagged in the JSON and the report warns.  Inotify-based contenders are
subject to fs.inotify.max_queued_events (recorded in the JSON): a reader
that falls further behind than that loses events (an overflow).  fibers.fs
on fanotify marks the whole filesystem and drops what is outside the root
itself, so other activity on that filesystem costs it CPU here: --dir can
put the trees on a filesystem of their own.

Every wait is bounded: READY, the writer (its own alarm() and a timeout
here), the watcher (its own --timeout, then SIGKILL to its process group
from here).  Results: the markdown table goes to stdout and to --md; every
sample, raw, to --json (default bench/results/fs-<timestamp>.json).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.fs.watchers import IDLE_S, WATCHFILES_DEBOUNCE_MS, WATCHFILES_STEP_MS
from bench.procs import stop, wait_ready

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITER_SRC = os.path.join(ROOT, "bench", "fs", "writer.c")
WRITER = os.path.join(ROOT, "build", "fs", "writer")

CONTENDERS = ["fibers-fanotify", "fibers-inotify", "watchdog", "inotify_simple",
              "watchfiles"]
BASELINE = "watchdog"
MODES = ("rate", "max")

READY_TIMEOUT_S = 20      # interpreter start + imports + the first watch
STOP_GRACE_S = 3          # SIGTERM -> SIGKILL
WRITER_MIN_OPS_S = 5000   # writer budget: ops / this, times 3, plus slack
SLACK_S = 20
LOST_SHOWN = 10          # lost operations listed per sample in the JSON
BUSY_WAIT = 0.05          # watcher runnable but off-CPU more than this: noisy


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------ building

def ensure_writer():
    """Compile the writer when missing or older than its source (make does
    it too; this keeps `python -m bench.fs_run` usable on its own)."""
    if os.path.exists(WRITER) and os.path.getmtime(WRITER) >= os.path.getmtime(WRITER_SRC):
        return
    os.makedirs(os.path.dirname(WRITER), exist_ok=True)
    cc = os.environ.get("CC", "cc")
    log(f"compiling {os.path.relpath(WRITER_SRC, ROOT)}")
    subprocess.run([cc, "-O2", "-Wall", "-o", WRITER, WRITER_SRC], check=True, timeout=120)


def cpu_pair():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("warning: one CPU only; watcher and writer share it")
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


# ------------------------------------------------------------ one sample

def budget_s(ops, rate):
    """How long the writer may take: three times its expected duration
    (at the floor rate WRITER_MIN_OPS_S when unpaced), plus slack."""
    expected = ops / rate if rate else ops / WRITER_MIN_OPS_S
    return 3 * expected + SLACK_S


def kill_group(proc):
    if not stop(proc, STOP_GRACE_S, group=True):
        log(f"warning: pid {proc.pid} survived SIGKILL")


def tail(path, limit=1500):
    try:
        with open(path, errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return ""
    return text[-limit:]


def run_sample(name, ops, rate, cpus, workdir):
    """One watcher against one writer run; the metrics, or {"error": ...}."""
    root = os.path.realpath(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    scratch = tempfile.mkdtemp(prefix="out-", dir=workdir)   # outside the watched tree
    out_json = os.path.join(scratch, "watcher.json")
    err_path = os.path.join(scratch, "watcher.err")
    log_path = os.path.join(scratch, "writer.log")
    writer_s = budget_s(ops, rate)
    watcher_timeout = READY_TIMEOUT_S + writer_s + 10
    env = dict(os.environ)
    env.pop("FIBERS_FS_BACKEND", None)     # the contender names the backend
    try:
        with open(err_path, "wb") as err:
            watcher = subprocess.Popen(
                ["taskset", "-c", str(cpus[0]), sys.executable, "-m", "bench.fs.watchers",
                 name, root, "--out", out_json, "--timeout", str(watcher_timeout)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                cwd=ROOT, env=env, start_new_session=True)
        try:
            if not wait_ready(watcher, READY_TIMEOUT_S):
                kill_group(watcher)
                last = (tail(err_path).splitlines() or ["(no stderr)"])[-1]
                return {"error": f"watcher not ready: {last}", "stderr": tail(err_path)}
            try:
                w = subprocess.run(
                    ["taskset", "-c", str(cpus[1]), WRITER, root, str(ops), str(rate),
                     log_path, str(int(writer_s) + 5)],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                    timeout=writer_s + 10)
            except subprocess.TimeoutExpired:
                return {"error": "writer timed out"}
            if w.returncode != 0:
                return {"error": f"writer exit {w.returncode}: {w.stderr.strip()[-300:]}"}
            writer = json.loads(w.stdout.strip().splitlines()[-1])
            try:
                watcher.wait(timeout=watcher_timeout + 10)
            except subprocess.TimeoutExpired:
                return {"error": "watcher did not stop"}
            if watcher.returncode != 0 or not os.path.exists(out_json):
                last = (tail(err_path).splitlines() or ["(no stderr)"])[-1]
                return {"error": f"watcher exit {watcher.returncode}: {last}",
                        "stderr": tail(err_path)}
        finally:
            if watcher.poll() is None:
                kill_group(watcher)
            watcher.stdout.close()
        with open(out_json) as f:
            got = json.load(f)
        res = match(read_log(log_path, root), got["events"], root)
        res.update(writer=writer,
                   watcher={k: v for k, v in got.items() if k != "events"})
        cpu = got["cpu_user_s"] + got["cpu_sys_s"]
        res["cpu_s"] = cpu
        res["per_cpu_s"] = res["delivered"] / cpu if cpu > 0 else None
        wait = got.get("runq_wait_s")
        res["noisy"] = bool(wait is not None and got["wall_s"] > 0
                            and wait / got["wall_s"] > BUSY_WAIT)
        # "idle": DONE's own event was lost (counted with the rest); only a
        # watcher that ran into its timeout has no trustworthy figures.
        res["stop"] = got["extra"].get("stop")
        if res["stop"] not in ("done", "idle"):
            res["error"] = f"watcher stopped by {res['stop']}, not DONE"
        return res
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------ matching

def read_log(path, root):
    """The writer's operations: [(ns, op, abs path, abs new path or None)],
    the sentinel left out."""
    ops = []
    with open(path) as f:
        for line in f:
            ns, op, *paths = line.split()
            if op == "done":
                continue
            new = os.path.join(root, paths[1]) if len(paths) > 1 else None
            ops.append((int(ns), op, os.path.join(root, paths[0]), new))
    return ops


def match(ops, events, root):
    """Which operations were delivered, and when.

    The canonical event of each operation, and what counts as delivering it:
      mkdir D, create P   created(P)
      rename S -> T       moved(S -> T); or both deleted(S) and created(T),
                          as libraries without move pairing report it (the
                          later of the two is the delivery time).  One half
                          alone leaves the rename lost (counted as partial).
      delete P            deleted(P)
    Every path is used once by the workload, so (kind, path) identifies the
    operation; only the first such event counts, later repeats are
    duplicates.  Other kinds (modified, ...) are counted in raw only.
    """
    first = {}              # (kind, path[, src]) -> first receipt ns
    overflows = 0
    for kind, path, src, t in events:
        if kind == "overflow":
            overflows += 1
            continue
        if kind == "moved":
            key = ("moved", path, src) if src else ("created", path)
        else:
            key = (kind, path)
        if key not in first:
            first[key] = t
    lat = []
    last = None
    partial = 0
    lost = []               # the first few lost operations, for diagnosis
    for ns, op, path, new in ops:
        if op in ("mkdir", "create"):
            t = first.get(("created", path))
        elif op == "delete":
            t = first.get(("deleted", path))
        else:
            t = first.get(("moved", new, path))
            if t is None:
                halves = [first.get(("deleted", path)), first.get(("created", new))]
                if None not in halves:
                    t = max(halves)
                elif halves != [None, None]:
                    partial += 1
        if t is not None:
            lat.append(t - ns)
            last = t if last is None else max(last, t)
        elif len(lost) < LOST_SHOWN:
            what = f"{op} {os.path.relpath(path, root)}"
            lost.append(what + (f" -> {os.path.relpath(new, root)}" if new else ""))
    delivered = len(lat)
    span = (last - ops[0][0]) / 1e9 if delivered else None
    lat.sort()
    return {
        "expected": len(ops), "delivered": delivered, "lost": len(ops) - delivered,
        "partial_renames": partial, "raw": len(events), "overflows": overflows,
        "per_s": delivered / span if span else None,
        "p50_ms": pct(lat, 50) / 1e6 if lat else None,
        "p99_ms": pct(lat, 99) / 1e6 if lat else None,
        "max_ms": lat[-1] / 1e6 if lat else None,
        "lost_first": lost,
    }


def pct(sorted_xs, p):
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_xs) - 1, -(-p * len(sorted_xs) // 100) - 1))
    return sorted_xs[k]


# ------------------------------------------------------------ reporting

def med(samples, key):
    xs = [s[key] for s in samples if not s.get("error") and s.get(key) is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def mode_title(mode, args):
    if mode == "rate":
        return f"fixed rate: {args.rate_ops:,} ops at {args.rate:,} ops/s"
    return f"max rate: {args.max_ops:,} ops, writer unpaced"


def table(mode, contenders, samples, args):
    """The markdown table of one mode, as a list of lines."""
    base = med(samples[BASELINE][mode], "per_cpu_s") if BASELINE in samples else None
    # What the writer achieved (it is the same program for every contender;
    # unpaced, it is the ceiling of delivered/s).
    runs = [s["writer"] for per in samples.values() for s in per[mode] if s.get("writer")]
    achieved = ""
    if runs:
        rate = statistics.median(r["ops"] / (r["elapsed_ns"] / 1e9) for r in runs)
        late = statistics.median(r["worst_late_ns"] for r in runs) / 1e6
        achieved = f"writer: median {rate:,.0f} ops/s"
        achieved += f", worst lateness against its schedule {late:.2f} ms" if mode == "rate" else ""
        achieved += "."
    lines = [f"### {mode_title(mode, args)}", ""] + ([achieved, ""] if achieved else []) + [
             "| contender | delivered/s | per CPU-s | vs watchdog | lost | "
             "p50 ms | p99 ms | raw events | overflows |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in contenders:
        xs = samples[name][mode]
        good = [s for s in xs if not s.get("error")]
        if not good:       # the reason is under Errors, below the tables
            lines.append(f"| {name} | ERR | | | | | | | |")
            continue
        per_cpu = med(xs, "per_cpu_s")
        ratio = per_cpu / base if per_cpu and base else None
        lost, expected = med(xs, "lost"), med(xs, "expected")
        mark = "*" if len(good) < len(xs) else ""
        lines.append(
            f"| {name}{mark} | {fmt(med(xs, 'per_s'), ',.0f')} | {fmt(per_cpu, ',.0f')} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {lost:,.0f} / {expected:,.0f} | "
            f"{fmt(med(xs, 'p50_ms'), '.2f')} | {fmt(med(xs, 'p99_ms'), '.2f')} | "
            f"{fmt(med(xs, 'raw'), ',.0f')} | {fmt(med(xs, 'overflows'), ',.0f')} |")
    return lines


def report(contenders, modes, samples, args, meta):
    lines = [f"## bench-fs ({meta['when']})", "",
             f"{meta['kernel']}, {meta['cpus']} CPUs, Python {meta['python']}; "
             f"fs.inotify.max_queued_events = {meta['max_queued_events']}; "
             f"medians of {args.repeats} round(s); watcher on CPU {meta['watcher_cpu']}, "
             f"writer on CPU {meta['writer_cpu']}.  Versions: "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".", ""]
    for mode in modes:
        lines += table(mode, contenders, samples, args) + [""]
    lines += [
        "Canonical events: one per writer operation (mkdir, create: created; "
        "rename: moved, or deleted + created; delete: deleted).  delivered/s is "
        "over the span from the writer's first operation to the last delivery; "
        "per CPU-s divides by the watcher process's user + sys CPU; latency is "
        "from the operation's timestamp (taken just before its system call) to "
        "receipt in Python; vs watchdog is per CPU-s over watchdog's; raw events is "
        "every event handed to Python (other kinds, duplicates, a rename as two "
        "events, the sentinel).  `*`: some rounds failed (see the JSON).", "",
        "Settings (bench/fs/watchers.py): fibers.fs with events = created, deleted, "
        "moved, overflow, error (defaults otherwise), read by get_batch(max_events=4096) "
        "in fibers.run(); "
        "watchdog's InotifyObserver with event_filter = the created / deleted / moved "
        "classes and a handler that keeps each event; inotify_simple with one watch "
        "per directory, new directories watched then listed, moves paired by cookie; "
        f"watchfiles.watch(watch_filter=None, debounce={WATCHFILES_DEBOUNCE_MS}, "
        f"step={WATCHFILES_STEP_MS}) (its defaults, 1600 / 50 ms, trade latency for "
        "fewer wake-ups).  watchdog holds each IN_MOVED_FROM for 0.5 s to pair it and "
        "delivers nothing queued behind it meanwhile: whenever its reader catches up "
        "with the queue at a rename, latency and delivered/s reflect that delay, not "
        "its CPU.", ""]
    errs = {}
    for name in contenders:
        for mode in modes:
            for s in samples[name][mode]:
                if s.get("error"):
                    errs.setdefault((name, s["error"][:300]), 0)
                    errs[(name, s["error"][:300])] += 1
    if errs:
        lines.append("Errors:")
        lines += [f"- {name} ({n}x): {msg}" for (name, msg), n in errs.items()]
        lines.append("")
    idle = sum(s.get("stop") == "idle" for per in samples.values()
               for xs in per.values() for s in xs)
    if idle:
        lines += [f"In {idle} sample(s) the watcher never got the DONE sentinel's "
                  f"event (lost with others) and stopped after {IDLE_S:g} s without "
                  "events; its losses are counted as usual.", ""]
    noisy = sum(s.get("noisy", False) for per in samples.values()
                for xs in per.values() for s in xs)
    if noisy:
        lines += [f"WARNING: in {noisy} sample(s) the watcher waited for its CPU "
                  f"more than {BUSY_WAIT:.0%} of the time: other processes were "
                  "using the benchmark's CPUs.  Rerun on an idle machine for final "
                  "numbers.", ""]
    return lines


def versions():
    """The installed version of each library under test."""
    from importlib import metadata
    out = {}
    for dist in ("fibers", "watchdog", "inotify_simple", "watchfiles"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def max_queued_events():
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-ops", type=int, default=100_000,
                    help="operations in the max-rate mode (default 100000)")
    ap.add_argument("--rate-ops", type=int, default=50_000,
                    help="operations in the fixed-rate mode (default 50000)")
    ap.add_argument("--rate", type=int, default=10_000,
                    help="ops/s of the fixed-rate mode (default 10000)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--dir", default=None,
                    help="where the watched trees are made (default: a temp dir; "
                         "a filesystem of their own keeps unrelated activity "
                         "out of fanotify's filesystem-wide mark)")
    ap.add_argument("--md", default=os.path.join(ROOT, "bench", "results", "fs.md"),
                    help="where to write the markdown report")
    ap.add_argument("--json", default=None, help="where to save all samples")
    args = ap.parse_args(argv)

    contenders = [c for c in args.contenders.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    bad = [c for c in contenders if c not in CONTENDERS] + [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}; contenders: {', '.join(CONTENDERS)}; "
                 f"modes: {', '.join(MODES)}")
    if not (1 <= args.repeats <= 50 and 20 <= args.max_ops <= 10_000_000
            and 20 <= args.rate_ops <= 10_000_000 and 1 <= args.rate <= 1_000_000):
        ap.error("need 1 <= repeats <= 50, 20 <= ops <= 1e7, 1 <= rate <= 1e6")
    if shutil.which("taskset") is None:
        sys.exit("taskset not found (package util-linux)")

    ensure_writer()
    cpus = cpu_pair()
    workdir = tempfile.mkdtemp(prefix="bench-fs-", dir=args.dir)
    plan = {"rate": (args.rate_ops, args.rate), "max": (args.max_ops, 0)}
    samples = {c: {m: [] for m in modes} for c in contenders}
    total = args.repeats * len(modes) * len(contenders)
    log(f"{total} samples: {', '.join(contenders)} x {', '.join(modes)} x "
        f"{args.repeats} round(s); watcher on CPU {cpus[0]}, writer on CPU {cpus[1]}")
    done = 0
    t0 = time.monotonic()
    try:
        for rnd in range(args.repeats):
            for mode in modes:
                ops, rate = plan[mode]
                for name in contenders:
                    s = run_sample(name, ops, rate, cpus, workdir)
                    samples[name][mode].append(s)
                    done += 1
                    if s.get("error"):
                        shown = "ERROR " + s["error"]
                    else:
                        shown = (f"{s['delivered']}/{s['expected']} delivered, "
                                 f"{fmt(s['per_s'], ',.0f')}/s, "
                                 f"{fmt(s['per_cpu_s'], ',.0f')}/CPU-s, "
                                 f"p50 {fmt(s['p50_ms'], '.2f')} ms, "
                                 f"p99 {fmt(s['p99_ms'], '.2f')} ms"
                                 + (" (contended)" if s["noisy"] else ""))
                    log(f"[{done}/{total}] round {rnd + 1} {mode} {name}: {shown}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - t0

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"when": stamp, "python": platform.python_version(),
            "kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "watcher_cpu": cpus[0], "writer_cpu": cpus[1],
            "max_queued_events": max_queued_events(), "versions": versions()}
    lines = report(contenders, modes, samples, args, meta)
    text = "\n".join(lines)
    print("\n" + text)
    os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
    with open(args.md, "w") as f:
        f.write(text)
    path = args.json or os.path.join(ROOT, "bench", "results", f"fs-{stamp}.json")
    with open(path, "w") as f:
        json.dump({**meta, "repeats": args.repeats, "max_ops": args.max_ops,
                   "rate_ops": args.rate_ops, "rate": args.rate, "modes": modes,
                   "contenders": contenders, "elapsed_s": round(elapsed, 1),
                   "samples": samples}, f, indent=1)
    print(f"\nwrote {args.md} and {path} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
