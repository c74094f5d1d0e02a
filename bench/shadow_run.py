"""`make bench-shadow`: fibers-shadow against the obvious threaded pipeline,
end to end into PostgreSQL.

    python -m bench.shadow_run [--repeats 3] [--max-ops 100000]
                               [--rate-ops 50000] [--rate 10000]

Method.  A throwaway PostgreSQL cluster (tools/pgcluster.py, on 127.0.0.1) is
the store for both contenders.  One sample = one contender, one mode:
  1. a fresh `events` table, with one extra column the contenders do not
     write, ins_ts DEFAULT clock_timestamp(): when the row was inserted;
  2. the contender starts on CPU 0 over an empty directory: fibers-shadow
     (--no-ui, PostgreSQL store, its defaults: 200 ms coalescing, SQLite
     journal; watching with fanotify, fibers.fs's default as root, or
     with inotify: "fibers-shadow-inotify") or bench/shadow/baseline.py (watchdog's observer thread, a
     queue, a worker thread with plain psycopg);
  3. the C writer of bench-fs (bench/fs/writer.c) runs on CPU 1, paced at
     --rate operations/s or flat out; FS_WRITER_WINDOW spaces the
     operations on one path beyond the coalescing window, so each one is
     an event of its own for both contenders;
  4. the harness polls the table until every operation's event is there,
     or nothing new has come for 15 s; then stops the contender.
Figures: events shipped and acknowledged per second (from the writer's
first operation to the last row's insert); CPU seconds of the contender
process per 100,000 events (user + sys of all its threads, from
/proc/<pid>/stat); end-to-end latency from the operation (CLOCK_MONOTONIC
before its system call) to its row's insert (clock_timestamp(), mapped to
the monotonic clock); events lost.  Medians over interleaved rounds.
The cluster runs with fsync off (tools/pgcluster.py): both contenders alike.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

from bench.procs import stop
from tools.pgcluster import PgServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(HERE)

WRITER = os.path.join(ROOT_DIR, "build", "fs", "writer")
HOST = socket.gethostname()
TABLE = """
DROP TABLE IF EXISTS events;
CREATE TABLE events (
    host TEXT NOT NULL, source TEXT NOT NULL, seq BIGINT NOT NULL,
    kind TEXT NOT NULL, path TEXT NOT NULL, src_path TEXT,
    is_dir BOOLEAN NOT NULL, time DOUBLE PRECISION NOT NULL,
    ins_ts TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (host, source, seq));
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")
OFFSET_NS = time.time_ns() - time.monotonic_ns()


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def expected(log, root):
    """One canonical event per writer operation: (kind, path[, src])."""
    out = []
    with open(log) as f:
        for line in f:
            parts = line.split()
            ns, op, path = int(parts[0]), parts[1], os.path.join(root,
                                                                 parts[2])
            if op in ("mkdir", "create"):
                out.append((ns, ("created", path)))
            elif op == "rename":
                out.append((ns, ("moved", os.path.join(root, parts[3]),
                                 path)))
            elif op == "delete":
                out.append((ns, ("deleted", path)))
    return out


def rows(conninfo):
    with psycopg.connect(conninfo) as c:
        rows = c.execute("SELECT kind, path, src_path, "
                         "extract(epoch from ins_ts)::float8 FROM events"
                         ).fetchall()
    # fibers-shadow stores paths as bytea; the baseline as text
    dec = lambda p: os.fsdecode(p) if isinstance(p, bytes) else p
    return [(k, dec(p), dec(s), t) for k, p, s, t in rows]


def match(exp, got):
    """Per expected operation, the insert time (monotonic ns) of its event,
    or None: a rename counts as moved, or as deleted + created."""
    first = {}
    for kind, path, src, ts in got:
        key = (kind, path, src) if kind == "moved" else (kind, path)
        t = int(ts * 1e9) - OFFSET_NS
        if key not in first or t < first[key]:
            first[key] = t
    out = []
    for ns, key in exp:
        t = first.get(key)
        if t is None and key[0] == "moved":
            a = first.get(("deleted", key[2]))
            b = first.get(("created", key[1]))
            if a is not None and b is not None:
                t = max(a, b)
        out.append((ns, t))
    return out


def start_contender(name, root, state, url, conninfo):
    env = dict(os.environ)
    if name.startswith("fibers-shadow"):
        # "fibers-shadow" watches with fibers.fs's default (fanotify as
        # root); "fibers-shadow-inotify" forces inotify.
        if name.endswith("-inotify"):
            env["FIBERS_FS_BACKEND"] = "inotify"
        cmd = [sys.executable, "-m", "fibers.shadow", "--no-ui", "--root",
               root, "--store", url, "--state-dir", state]
    else:
        cmd = [sys.executable, "-m", "bench.shadow.baseline", root,
               conninfo, HOST, "baseline"]
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, cwd=ROOT_DIR,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    line = p.stdout.readline()            # READY, or the first status line
    if not line:
        raise RuntimeError(f"{name} did not start: {p.stderr.read()[-2000:]}")
    return p


def fresh(pg, workdir, prefix):
    """An empty events table, a root to watch and a state directory."""
    with psycopg.connect(pg.conninfo, autocommit=True) as c:
        c.execute(TABLE)
    return (tempfile.mkdtemp(dir=workdir, prefix=prefix),
            tempfile.mkdtemp(dir=workdir, prefix="state-"))


def write(root, n, rate, log):
    """The writer on CPU 1; its summary (the last line it prints)."""
    env = dict(os.environ, FS_WRITER_WINDOW="4096")
    w = subprocess.run(["taskset", "-c", "1", WRITER, root, str(n),
                        str(rate), log, "120"], env=env,
                       capture_output=True, text=True, timeout=180)
    if w.returncode != 0:
        raise RuntimeError(f"writer failed: {w.stderr}")
    return json.loads(w.stdout.strip().splitlines()[-1])


def shipped_by(exp, conninfo, deadline_s, stall_s=None):
    """match() of the store's rows, polled until every expected event is
    there, `deadline_s` passes, or (with `stall_s`) nothing new came for
    that long."""
    deadline = time.monotonic() + deadline_s
    last, last_change = -1, time.monotonic()
    while True:
        m = match(exp, rows(conninfo))
        done = sum(t is not None for _, t in m)
        now = time.monotonic()
        if done == len(exp) or now >= deadline:
            return m
        if done != last:
            last, last_change = done, now
        elif stall_s is not None and now - last_change > stall_s:
            return m
        time.sleep(0.25)


def url_of(pg):
    return f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"


def sample(name, mode, n, rate, pg, workdir):
    root, state = fresh(pg, workdir, f"{name}-")
    log = os.path.join(state, "writer.log")
    p = start_contender(name, root, state, url_of(pg), pg.conninfo)
    try:
        time.sleep(0.5)                   # the watch is in place
        cpu0 = cpu_of(p.pid)
        writer = write(root, n, rate, log)
        exp = expected(log, root)
        m = shipped_by(exp, pg.conninfo, 300, stall_s=15)
        cpu = cpu_of(p.pid) - cpu0
    finally:
        stop(p, 30)
    lat = sorted((t - ns) / 1e6 for ns, t in m if t is not None)
    shipped = len(lat)
    t_first = min(ns for ns, _ in exp)
    t_last = max(t for _, t in m if t is not None) if shipped else t_first
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    return {"contender": name, "mode": mode, "expected": len(exp),
            "shipped": shipped, "lost": len(exp) - shipped,
            "per_s": shipped / max(1e-9, (t_last - t_first) / 1e9),
            "cpu_s": cpu, "cpu_per_100k": cpu / max(1, shipped) * 1e5,
            "events_per_cpu_s": shipped / max(1e-9, cpu),
            "p50_ms": lat[len(lat) // 2] if lat else None,
            "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
            "writer_ops_per_s": writer["ops"] / (writer["elapsed_ns"] / 1e9)}


def ui_sample(n, rate, pg, workdir):
    """fibers-shadow with its live UI, in a 120x40 tmux pane, while the
    writer runs at `rate`: the longest gap between two frames (the UI
    measures it and writes it out at exit)."""
    root, state = fresh(pg, workdir, "ui-")
    stats = os.path.join(state, "ui.json")
    log = os.path.join(state, "writer.log")
    tmux = ["tmux", "-L", f"bench-shadow-{os.getpid()}"]
    cmd = (f"cd {ROOT_DIR} && FIBERS_SHADOW_UI_STATS={stats} taskset -c 0 "
           f"{sys.executable} -m fibers.shadow --root {root} "
           f"--store {url_of(pg)} --state-dir {state}")
    subprocess.run(tmux + ["new-session", "-d", "-x", "120", "-y", "40",
                           cmd], check=True, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(tmux + ["capture-pane", "-p"],
                                    capture_output=True, text=True).stdout
            if "journal" in screen and "keys" in screen:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        write(root, n, rate, log)
        exp = expected(log, root)
        m = shipped_by(exp, pg.conninfo, 120)
        subprocess.run(tmux + ["send-keys", "q"], timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.path.exists(stats):
            time.sleep(0.1)
        with open(stats) as f:
            out = json.load(f)
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True,
                       timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    out["shipped"] = sum(t is not None for _, t in m)
    out["expected"] = len(exp)
    return out


def table(results, mode, title):
    out = [f"### {title}", "",
           "| pipeline | events/s shipped | CPU-s per 100k events | "
           "events per CPU-s | vs threaded | lost | p50 ms | p99 ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    med = {}
    for name in dict.fromkeys(r["contender"] for r in results):
        rs = [r for r in results if r["contender"] == name
              and r["mode"] == mode]
        if not rs:
            continue
        med[name] = {k: statistics.median(r[k] for r in rs
                                          if r[k] is not None)
                     for k in ("per_s", "cpu_per_100k", "events_per_cpu_s",
                               "lost", "p50_ms", "p99_ms",
                               "writer_ops_per_s")}
    base = med.get("threaded", {}).get("events_per_cpu_s")
    for name, m in med.items():
        ratio = f"{m['events_per_cpu_s'] / base:.2f}x" if base else "-"
        out.append(f"| {name} | {m['per_s']:,.0f} | "
                   f"{m['cpu_per_100k']:.2f} | {m['events_per_cpu_s']:,.0f}"
                   f" | {ratio} | {m['lost']:,.0f} | {m['p50_ms']:.1f} | "
                   f"{m['p99_ms']:.1f} |")
    w = statistics.median(m["writer_ops_per_s"] for m in med.values())
    out += ["", f"writer: median {w:,.0f} ops/s", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-ops", type=int, default=100_000)
    ap.add_argument("--rate-ops", type=int, default=50_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--contenders",
                    default="fibers-shadow,fibers-shadow-inotify,threaded")
    ap.add_argument("--md", default=os.path.join(ROOT_DIR, "bench",
                                                 "results", "shadow.md"))
    a = ap.parse_args()
    pg = PgServer()
    pg.start()
    workdir = tempfile.mkdtemp(prefix="bench-shadow-")
    results = []
    try:
        for rnd in range(a.repeats):
            for mode, n, rate in (("rate", a.rate_ops, a.rate),
                                  ("max", a.max_ops, 0)):
                for name in a.contenders.split(","):
                    r = sample(name, mode, n, rate, pg, workdir)
                    results.append(r)
                    print(f"round {rnd + 1} {mode} {name}: "
                          f"{r['shipped']}/{r['expected']} shipped, "
                          f"{r['per_s']:,.0f}/s, "
                          f"{r['events_per_cpu_s']:,.0f}/CPU-s, "
                          f"p50 {r['p50_ms'] or 0:.1f} ms, "
                          f"p99 {r['p99_ms'] or 0:.1f} ms",
                          flush=True)
        ui = []
        if shutil.which("tmux"):
            for rnd in range(a.repeats):
                u = ui_sample(a.rate_ops, a.rate, pg, workdir)
                ui.append(u)
                print(f"ui round {rnd + 1}: {u}", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = "\n".join([
        f"## bench-shadow ({stamp})", "",
        f"{os.uname().release}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}; medians of {a.repeats} rounds; "
        f"contender on CPU 0, writer on CPU 1, PostgreSQL unpinned.", "",
        table(results, "rate", f"fixed rate: {a.rate_ops:,} ops at "
                               f"{a.rate:,} ops/s"),
        table(results, "max", f"writer flat out: {a.max_ops:,} ops"),
        "### the live UI under load", "",
        (f"fibers-shadow with its UI in a 120x40 tmux pane, "
         f"{a.rate_ops:,} ops at {a.rate:,} ops/s: longest gap between two "
         f"frames (10 Hz) per round: "
         + ", ".join(f"{u['max_frame_gap_ms']:.0f} ms" for u in ui)
         + f"; median {statistics.median(u['max_frame_gap_ms'] for u in ui):.0f} ms; "
         f"shipped " + ", ".join(f"{u['shipped']}/{u['expected']}" for u in ui))
        if ui else "tmux not found: the UI was not measured", ""])
    print(md)
    with open(a.md, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(os.path.dirname(a.md), f"shadow-{stamp}.json"),
              "w") as f:
        json.dump({"pipelines": results, "ui": ui}, f, indent=1)


if __name__ == "__main__":
    main()
