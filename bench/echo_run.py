"""`make bench-echo`: TCP echo throughput of fibers and its peers, on loopback.

    python -m bench.echo_run [--rounds 3] [--duration 2.5] [--warmup 0.5]
                             [--servers fibers-io_uring,uvloop-protocol,...]
                             [--sizes 64,1024,16384] [--conns 1,50,500]
                             [--json PATH]

For every server x message size x connection count, one measurement is:
start the server alone on CPU 0 (taskset), wait for its "READY" line, run
the C load generator alone on CPU 1 for --warmup + --duration seconds, stop
the server.  Giving each side a core of its own keeps the client from
stealing cycles from the server under test, so req/s is the server's.

The load generator (bench/echo/loadgen.c) is closed-loop: each connection
has one message in flight and sends the next only when the whole echo is
back.  The reference server (bench/echo/c_server.c, "c-epoll") is a plain C
epoll loop: the most this machine does with no runtime in the way.  Both
are compiled into build/echo/ with gcc -O2 when their source is newer.

As in bench/run.py, every measurement gets a fresh process (and a fresh
port), and rounds are interleaved (round 1 of every cell and server, then
round 2, ...) so drift on this shared machine hits every server alike; the
tables report medians.  A server that fails to start, dies, or makes the
load generator see connection errors gets an error for that sample and the
run goes on; a cell with no good sample shows ERR.

Each sample also records, from /proc/PID/schedstat, how much CPU the
server and the load generator used and how long each waited for its CPU.
Waiting means another process ran on the benchmark's cores (on a 2-core
machine, any build or test run next door does that); such samples are
flagged and left out of medians when the cell has clean ones.  A side at
~1.0 CPU is the bottleneck: against c-epoll that is usually the load
generator, which makes c-epoll's figure a floor.

Before each measurement the harness also waits (briefly, within a budget)
for those CPUs to go quiet.

Every wait is bounded: READY within READY_TIMEOUT_S, the load generator by
its own alarm() and by a timeout here, server shutdown by SIGTERM
then SIGKILL to its whole process group.  Servers also carry a hard
lifetime (--max-seconds) in case this harness itself is killed.  Traffic is
loopback only: servers bind 127.0.0.1 and the load generator refuses any
non-loopback address.

Results (all raw samples, medians, ratios, target checks) are saved to
bench/results/echo-<timestamp>.json.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from bench.procs import (HOST, SATURATED, QuietWaiter, ServerProcess, cpu_pair,
                         free_port, log, run_client, wait_ready)
from bench.samples import (csv_list, print_check, is_noisy, median_cpu, median_of, print_table,
                           warn_background)
from bench.samples import usable  # noqa: F401  (bench/tls_run.py reads E.usable)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO_DIR = os.path.join(ROOT, "bench", "echo")
BUILD_DIR = os.path.join(ROOT, "build", "echo")
LOADGEN = os.path.join(BUILD_DIR, "loadgen")
C_SERVER = os.path.join(BUILD_DIR, "c_server")
C_PROGRAMS = {LOADGEN: "loadgen.c", C_SERVER: "c_server.c"}

READY_TIMEOUT_S = 20      # import + bind; generous for a loaded machine
STOP_GRACE_S = 3          # SIGTERM -> SIGKILL
LOADGEN_SLACK_S = 30      # beyond warmup + duration: connect phase, exit

HEADLINE = "fibers-io_uring"

def _py_server(name):
    return lambda port, life: [sys.executable, "-m", "bench.echo.servers", name,
                               str(port), "--max-seconds", str(life)]


# name -> (argv(port, lifetime_s), extra environment)
SERVERS = {
    "fibers-io_uring": (_py_server("fibers"), {"FIBERS_BACKEND": "io_uring"}),
    "fibers-epoll": (_py_server("fibers"), {"FIBERS_BACKEND": "epoll"}),
    # io_uring with single-shot accept/recv, to keep multishot honest.
    "fibers-io_uring-single": (_py_server("fibers"),
                               {"FIBERS_BACKEND": "io_uring",
                                "FIBERS_MULTISHOT": "0"}),
    "uvloop-protocol": (_py_server("uvloop-protocol"), {}),
    "uvloop-streams": (_py_server("uvloop-streams"), {}),
    "asyncio-streams": (_py_server("asyncio-streams"), {}),
    "gevent": (_py_server("gevent"), {}),
    "trio": (_py_server("trio"), {}),
    "c-epoll": (lambda port, life: [C_SERVER, str(port), str(life)], {}),
}
SIZES = (64, 1024, 16384)
CONNS = (1, 50, 500)

# Checked at one cell: (peer, minimum req/s ratio HEADLINE / peer).
# Higher is better here, unlike bench/run.py's times.
TARGET_CELL = (64, 50)
TARGETS = [
    ("uvloop-protocol", 1.0),
    ("uvloop-streams", 1.7),
    ("gevent", 2.5),
    ("c-epoll", 0.8),
    ("fibers-epoll", 1.0),
]


# ------------------------------------------------------------ building

def ensure_built():
    """Compile the C programs into build/echo/ when missing or stale."""
    os.makedirs(BUILD_DIR, exist_ok=True)
    for exe, src in C_PROGRAMS.items():
        src = os.path.join(ECHO_DIR, src)
        if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
            continue
        cc = os.environ.get("CC", "gcc")
        log(f"compiling {os.path.relpath(src, ROOT)}")
        subprocess.run([cc, "-O2", "-Wall", "-o", exe, src], check=True, timeout=120)


# ------------------------------------------------------------ processes

class Server(ServerProcess):
    """One echo server, pinned to `cpu`, that prints READY when accepting."""

    def __init__(self, name, port, cpu, lifetime):
        argv_fn, extra_env = SERVERS[name]
        env = dict(os.environ)
        env.pop("FIBERS_BACKEND", None)   # only the fibers rows set it
        env.pop("FIBERS_MULTISHOT", None)
        env.update(extra_env)
        super().__init__(["taskset", "-c", str(cpu)] + argv_fn(port, lifetime),
                         env, ROOT)

    def wait_ready(self, timeout):
        return wait_ready(self.proc, timeout)

    def stop(self):
        super().stop(STOP_GRACE_S)


def run_loadgen(port, cpus, size, conns, duration, warmup, server_pid,
                loadgen=None):
    """Run the load generator (``loadgen``: another binary with the same
    arguments and output, such as bench/tls_run.py's); return its JSON
    result with CPU accounting for both sides, or raise RuntimeError."""
    argv = ["taskset", "-c", str(cpus[1]), loadgen or LOADGEN, HOST, str(port), str(conns),
            str(size), str(duration), str(warmup)]
    rc, stdout, stderr, acct = run_client(argv, warmup + duration + LOADGEN_SLACK_S,
                                          server_pid, cpus, cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"load generator exit {rc}: {stderr.strip()[-500:]}")
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("load generator printed nothing")
    res = json.loads(lines[-1])
    if stderr.strip():
        res["stderr"] = stderr.strip()[-500:]
    res.update((k, acct[k]) for k in ("server_sched", "loadgen_sched", "steal"))
    return res


def measure(name, size, conns, args, cpus, quiet):
    """One sample: {"rps": float or None, "error": None or str, ...}."""
    busy_before = quiet.wait()
    lifetime = int(args.warmup + args.duration + LOADGEN_SLACK_S + READY_TIMEOUT_S + 30)
    for attempt in (1, 2):
        port = free_port()
        srv = Server(name, port, cpus[0], lifetime)
        try:
            if not srv.wait_ready(READY_TIMEOUT_S):
                tail = srv.stderr_tail()
                if attempt == 1 and "in use" in tail:   # lost the port race
                    continue
                why = "exited" if not srv.alive() else f"no READY in {READY_TIMEOUT_S} s"
                return {"rps": None, "server_stderr": tail,
                        "error": f"server failed to start ({why}): {srv.stderr_last_line()}"}
            try:
                res = run_loadgen(port, cpus, size, conns, args.duration,
                                  args.warmup, srv.proc.pid)
            except RuntimeError as e:
                return {"rps": None, "error": str(e), "server_stderr": srv.stderr_tail()}
            res["busy_before"] = round(busy_before, 3)
            if res["errors"] or not res["requests"]:
                # Connections reset by a crashing server can end the load
                # generator before the server has finished exiting.
                try:
                    srv.proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            # A server that drops, corrupts or ignores connections is not
            # fast, it is broken: its numbers stay in the JSON, out of medians.
            res["error"] = None
            if not srv.alive():
                res["error"] = f"server died during the run: {srv.stderr_last_line()}"
            elif res["errors"]:
                first = (res.get("stderr") or "").splitlines()[:1]
                res["error"] = f"{res['errors']} connection error(s): {''.join(first)}"
            elif not res["requests"]:
                res["error"] = "no round trip completed (server not echoing?)"
            if res["error"]:
                res.update(raw_rps=res["rps"], rps=None, server_stderr=srv.stderr_tail())
            return res
        finally:
            srv.stop()
    return {"rps": None, "error": "server failed to start: port in use twice"}


# ------------------------------------------------------------ reporting

def cell_key(size, conns):
    return f"{size}/{conns}"


def report(servers, sizes, conns_list, samples, med, rounds):
    cells = [(s, c) for s in sizes for c in conns_list]
    label = lambda s, c: f"{s} B / {c}"  # noqa: E731

    print(f"\nreq/s, median of {rounds} round(s) (uncontended samples first); "
          "'*' = some rounds failed, '~' = only CPU-contended samples, "
          "ERR = none succeeded")
    rows = []
    for s, c in cells:
        row = [label(s, c)]
        for name in servers:
            m = med[name][cell_key(s, c)]
            if m is None:
                row.append("ERR")
            else:
                xs = samples[name][cell_key(s, c)]
                bad = any(x["rps"] is None for x in xs)
                noisy = all(is_noisy(x) for x in xs if x["rps"] is not None)
                row.append(f"{m:,.0f}" + ("*" if bad else "") + ("~" if noisy else ""))
        rows.append(row)
    print_table(["size / conns"] + servers, rows)

    ratios = {}
    peers = [p for p in servers if p != HEADLINE]
    if HEADLINE in servers and peers:
        print(f"\n{HEADLINE} req/s divided by each peer's (above 1.0 = fibers faster)")
        rows = []
        for s, c in cells:
            k = cell_key(s, c)
            mine = med[HEADLINE][k]
            row = [label(s, c)]
            for p in peers:
                theirs = med[p][k]
                r = mine / theirs if mine is not None and theirs else None
                ratios.setdefault(p, {})[k] = r
                row.append("-" if r is None else f"{r:.2f}x")
            rows.append(row)
        print_table(["size / conns"] + peers, rows)

    # One line per distinct (server, error): a server that cannot start
    # fails every cell the same way, and that should read as one problem.
    # Full stderr is in the JSON.
    errs = {}
    for name in servers:
        for s, c in cells:
            for x in samples[name][cell_key(s, c)]:
                if x["error"]:
                    errs.setdefault((name, x["error"][:300]), []).append(label(s, c))
    if errs:
        print("\nerrors:")
        for (name, msg), where in errs.items():
            at = where[0] if len(where) == 1 else f"{len(where)} samples"
            print(f"  {name} ({at}): {msg}")
    return ratios


def check_targets(servers, sizes, conns_list, samples, med):
    size, conns = TARGET_CELL
    k = cell_key(size, conns)
    checks = []
    print(f"\ntargets at {conns} conns / {size} B ({HEADLINE} req/s relative to peer):")
    for peer, minimum in TARGETS:
        c = {"cell": k, "peer": peer, "target": minimum, "ratio": None, "met": False}
        if HEADLINE not in servers or peer not in servers \
                or size not in sizes or conns not in conns_list:
            c["note"] = "not measured in this run"
        elif med[HEADLINE][k] is None or not med[peer][k]:
            failed = HEADLINE if med[HEADLINE][k] is None else peer
            c["note"] = f"no data: {failed} failed"
        else:
            c["ratio"] = med[HEADLINE][k] / med[peer][k]
            c["met"] = c["ratio"] >= minimum
        # When the load generator had no idle CPU it may be the bottleneck,
        # and that server's req/s only a floor: against the peer, the ratio
        # overstates fibers; against fibers, it understates it.
        if "note" not in c:
            capped = [n for n in (peer, HEADLINE)
                      if (median_cpu(samples[n][k], "loadgen_sched") or 0) > SATURATED]
            if capped:
                c["loadgen_bound"] = capped
                c["note"] = (f"load generator had no idle CPU against "
                             f"{' and '.join(capped)}: the client may be what limits "
                             "req/s there, so treat it as a floor for the server")
        checks.append(c)
        print_check(c, f"vs {peer}", minimum)
    return checks


# ------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.5,
                    help="measured seconds per sample (default 2.5)")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="unmeasured seconds of load before each sample (default 0.5)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--conns", default=",".join(map(str, CONNS)))
    ap.add_argument("--json", default=None, help="where to save results")
    args = ap.parse_args(argv)

    servers = csv_list(args.servers)
    sizes = csv_list(args.sizes, int)
    conns_list = csv_list(args.conns, int)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    if not (1 <= args.rounds <= 50 and 0.1 <= args.duration <= 120
            and 0 <= args.warmup <= 30):
        ap.error("need 1 <= rounds <= 50, 0.1 <= duration <= 120, 0 <= warmup <= 30")
    if shutil.which("taskset") is None:
        sys.exit("taskset not found (package util-linux)")

    ensure_built()
    cpus = cpu_pair()
    total = args.rounds * len(servers) * len(sizes) * len(conns_list)
    est = total * (args.duration + args.warmup + 0.4)   # + quiet check, start/stop
    log(f"{total} measurements, about {est / 60:.0f} min "
        f"(server on CPU {cpus[0]}, load generator on CPU {cpus[1]})")

    samples = {n: {cell_key(s, c): [] for s in sizes for c in conns_list} for n in servers}
    quiet = QuietWaiter(cpus)
    done = 0
    t_start = time.monotonic()
    for rnd in range(args.rounds):
        for size in sizes:
            for conns in conns_list:
                for name in servers:
                    res = measure(name, size, conns, args, cpus, quiet)
                    samples[name][cell_key(size, conns)].append(res)
                    done += 1
                    shown = (f"{res['rps']:,.0f} req/s" if res["rps"] is not None
                             else "ERROR " + res["error"].splitlines()[0][:120])
                    srv, gen = res.get("server_sched"), res.get("loadgen_sched")
                    if srv and gen:
                        shown += (f"  (cpu/wait: server {srv['cpu']:.2f}/{srv['wait']:.2f},"
                                  f" loadgen {gen['cpu']:.2f}/{gen['wait']:.2f})")
                    log(f"[{done}/{total}] round {rnd + 1} {size} B / {conns} conns "
                        f"{name}: {shown}")
    elapsed = time.monotonic() - t_start
    if quiet.waited >= 1:
        log(f"waited {quiet.waited:.0f} s in total for other processes to leave the CPUs")

    med = {n: {k: median_of(v) for k, v in per.items()} for n, per in samples.items()}
    ratios = report(servers, sizes, conns_list, samples, med, args.rounds)
    noisy = warn_background(samples)
    checks = check_targets(servers, sizes, conns_list, samples, med)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(ROOT, "bench", "results", f"echo-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({
            "when": stamp, "python": platform.python_version(),
            "machine": platform.machine(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "server_cpu": cpus[0], "loadgen_cpu": cpus[1],
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "elapsed_s": round(elapsed, 1), "servers": servers, "sizes": sizes,
            "conns": conns_list, "unit": "req/s", "headline": HEADLINE,
            "noisy_samples": noisy, "quiet_wait_s": round(quiet.waited, 1),
            "samples": samples, "medians": med, "ratios": ratios, "targets": checks,
        }, f, indent=2)
    print(f"\nsaved {path} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
