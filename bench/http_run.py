"""`make bench-http`: WSGI servers (and one ASGI peer) under wrk, on loopback.

    python -m bench.http_run [--rounds 3] [--duration 5] [--warmup 1]
                             [--servers fibers-http,granian,bjoern,...]
                             [--apps hello,big] [--conns 50,500]
                             [--json PATH]

The apps (bench/http_apps.py): `hello` answers every request with 200,
Content-Type text/plain and "Hello, world!"; `big` the same with a 16 KiB
body; uvicorn runs the equivalent ASGI apps.  The servers, each as its
users start it, one worker, access log off:

  fibers-http      python -m fibers.http (1 worker)
  fibers-http-2w   the same with --workers 2 (SO_REUSEPORT prefork), NOT
                   pinned: its workers use both CPUs, the second one shared
                   with wrk, so it shows what prefork gives on this machine
                   with the client competing, not a server's capacity
  granian          granian --interface wsgi, 1 worker, 1 blocking thread
  granian-default  the same with granian's default blocking threads
  bjoern           bjoern.run(app, host, port) (bench/http_servers.py)
  gunicorn-gevent  gunicorn -k gevent -w 1
  gevent-pywsgi    gevent.pywsgi.WSGIServer(..., log=None) (bench/http_servers.py)
  uvicorn          uvicorn --loop uvloop --http httptools, ASGI app, 1 worker
  waitress         waitress with its default 4 threads; its connection
                   limit raised from 100 to 1024, or 400 of wrk's 500
                   connections would wait in the backlog and time out

For every app x connection count x server, one measurement is: start the
server alone (in its own process group, pinned to CPU 0 with taskset; its
workers inherit the pinning), wait until it answers GET / with the app's
exact body, run wrk pinned to CPU 1 (`wrk -t1 -cN --latency`, keep-alive)
for --warmup seconds unmeasured, then for --duration seconds measured, and
stop the server.  Giving each side a core of its own keeps the client from
stealing cycles from the server under test (except for fibers-http-2w).

Reported per cell: wrk's requests/s, requests per server-CPU-second and
wrk's p99 latency.  Server CPU is read from /proc/PID/task/*/schedstat of
every thread of the server's whole process tree (gunicorn's master and
worker, granian's workers, fibers-http-2w's workers) over the measured wrk
run's lifetime; requests per server-CPU-second is the requests wrk
completed divided by those seconds: the figure that does not depend on
how much of its core a server gets, and the one the targets are about.

As in bench/echo_run.py (whose helpers are shared: bench/procs.py,
bench/samples.py): every measurement gets a fresh process and a fresh
port; rounds are interleaved (round 1 of every cell and server, then round
2, ...) so drift on this shared machine hits every server alike; tables
report medians; before each measurement the harness waits (bounded) for
both CPUs to go quiet, and a sample in which either side waited for its
CPU is flagged and left out of medians when the cell has clean ones.  A
server that fails to start, dies, answers wrongly, refuses connections or
answers non-2xx gets an error for that sample and the run goes on; a cell
with no good sample shows ERR.  wrk's read/write/timeout socket errors are
kept in the JSON and mark the cell with '!'.

Every wait is bounded: the server's first answer within READY_TIMEOUT_S,
wrk by a timeout here (then killed), server shutdown by SIGTERM then
SIGKILL to its whole process group.  Every server also runs under
`timeout`, a hard lifetime in case this harness itself is killed.  Traffic
is loopback only: servers bind 127.0.0.1 and wrk is pointed at it.

Results (all raw samples with wrk's output, medians, ratios, target
checks) are saved to bench/results/http-<timestamp>.json.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from bench.http_apps import BODIES
from bench.procs import (HOST, SATURATED, QuietWaiter, ServerProcess, cpu_pair,
                         free_port, log, run_client)
from bench.samples import (csv_list, print_check, is_noisy, median_cpu, median_of, print_table,
                           warn_background)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

READY_TIMEOUT_S = 30      # import + bind (+ fork workers); a loaded machine
STOP_GRACE_S = 5          # SIGTERM -> SIGKILL (graceful servers drain)
WRK_SLACK_S = 30          # beyond the duration: connecting, wrk's exit
WRK_TIMEOUT = "2s"        # wrk's own per-request timeout (its default)

HEADLINE = "fibers-http"
MULTI = "fibers-http-2w"


def _module(module, *args):
    return [sys.executable, "-m", module, *args]


def _fibers(workers):
    return lambda app, port: _module("fibers.http", f"bench.http_apps:{app}",
                                     "--bind", f"{HOST}:{port}",
                                     "--workers", str(workers))


def _granian(threads):
    extra = ["--blocking-threads", str(threads)] if threads else []
    return lambda app, port: _module(
        "granian", "--interface", "wsgi", "--host", HOST, "--port", str(port),
        "--workers", "1", *extra, "--log-level", "warning", "--no-ws",
        f"bench.http_apps:{app}")


def _runner(name):
    return lambda app, port: _module("bench.http_servers", name,
                                     f"bench.http_apps:{app}", str(port))


# name -> (argv(app, port), pinned to the server CPU?)
SERVERS = {
    "fibers-http": (_fibers(1), True),
    "fibers-http-2w": (_fibers(2), False),
    "granian": (_granian(1), True),
    "granian-default": (_granian(None), True),
    "bjoern": (_runner("bjoern"), True),
    "gunicorn-gevent": (lambda app, port: _module(
        "gunicorn", "-k", "gevent", "-w", "1", "-b", f"{HOST}:{port}",
        "--log-level", "warning", f"bench.http_apps:{app}"), True),
    "gevent-pywsgi": (_runner("gevent-pywsgi"), True),
    "uvicorn": (lambda app, port: _module(
        "uvicorn", f"bench.http_apps:{app}_asgi", "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
        "--no-access-log", "--log-level", "warning"), True),
    "waitress": (lambda app, port: _module(
        "waitress", f"--listen={HOST}:{port}", "--threads=4",
        "--connection-limit=1024", f"bench.http_apps:{app}"), True),
}
APPS = ("hello", "big")
CONNS = (50, 500)

# (peer, minimum ratio of HEADLINE's requests per server-CPU-second to the
# peer's), checked with the hello app at every connection count measured.
TARGET_APP = "hello"
TARGETS = [
    ("granian", 1.0),
    ("granian-default", 1.0),
    ("bjoern", 0.8),
    ("uvicorn", 2.0),
    ("gunicorn-gevent", 5.0),
]


# ------------------------------------------------------------ wrk's output

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_duration_ms(text):
    """wrk's formatted time ("785.12us", "1.56ms", "2.00s", "1.00m") in ms."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


def parse_wrk(text):
    """The figures of one `wrk --latency` run's output.

    Returns {"requests", "duration_s", "rps", "p50_ms", "p99_ms",
    "socket_errors": {"connect", "read", "write", "timeout"}, "non2xx"};
    raises ValueError when the output lacks the request count or the
    rate (wrk failed).  Absent error lines mean zero errors."""
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+(?:us|ms|s|m|h)),", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not m or not rate:
        raise ValueError("no request count or rate in wrk's output")
    out = {"requests": int(m.group(1)),
           "duration_s": parse_duration_ms(m.group(2)) / 1e3,
           "rps": float(rate.group(1))}
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        p = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
        out[key] = parse_duration_ms(p.group(1)) if p else None
    errs = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if e:
        errs = dict(zip(errs, map(int, e.groups())))
    out["socket_errors"] = errs
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(n.group(1)) if n else 0
    return out


def ratio(mine, theirs):
    """mine / theirs, or None when either figure is missing."""
    if mine is None or not theirs:
        return None
    return mine / theirs


# ------------------------------------------------------------ processes

class HttpServer(ServerProcess):
    """One server under `timeout` (its hard lifetime), pinned to `cpu`
    unless the server's row says otherwise.  It prints nothing to wait
    for: it is ready when it answers (wait_ready)."""

    def __init__(self, name, app, port, cpu, lifetime):
        argv_fn, pinned = SERVERS[name]
        argv = argv_fn(app, port)
        if pinned:
            argv = ["taskset", "-c", str(cpu)] + argv
        # timeout sends SIGTERM to the whole group at the end of the
        # lifetime, then SIGKILL 5 s later.
        argv = ["timeout", "-k", "5", str(lifetime)] + argv
        env = dict(os.environ)
        env.pop("FIBERS_BACKEND", None)      # each server's default
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        super().__init__(argv, env, ROOT, stdout_pipe=False)

    def wait_ready(self, timeout, body):
        """None once GET / answers 200 with `body`; otherwise why not
        (exited, wrong answer, or no answer within `timeout`)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                return f"exited ({self.proc.returncode}): {self.stderr_last_line()}"
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                got = resp.read()
                if resp.status == 200 and got == body:
                    return None
                return f"wrong answer to GET /: {resp.status}, {len(got)} bytes"
            except (OSError, http.client.HTTPException) as e:
                last = f"no answer ({e.__class__.__name__}: {e})"
            finally:
                conn.close()
            time.sleep(0.1)
        return f"{last} within {timeout} s: {self.stderr_last_line()}"

    def stop(self):
        super().stop(STOP_GRACE_S)


def wrk_argv(cpus, port, conns, seconds, latency):
    argv = ["taskset", "-c", str(cpus[1]), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
            "--timeout", WRK_TIMEOUT]
    if latency:
        argv.append("--latency")
    return argv + [f"http://{HOST}:{port}/"]


def run_wrk(port, cpus, conns, args, server_pid):
    """Warm up (unmeasured), then one measured wrk run: parse_wrk()'s
    figures plus CPU accounting, or raise RuntimeError."""
    if args.warmup:
        try:
            subprocess.run(wrk_argv(cpus, port, conns, args.warmup, False),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=args.warmup + WRK_SLACK_S,
                           check=True)
        except subprocess.TimeoutExpired:
            raise RuntimeError("wrk (warm-up) timed out")
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"wrk (warm-up) exit {e.returncode}")
    rc, stdout, stderr, acct = run_client(
        wrk_argv(cpus, port, conns, args.duration, True),
        args.duration + WRK_SLACK_S, server_pid, cpus, tree=True, cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"wrk exit {rc}: {(stderr or stdout).strip()[-500:]}")
    try:
        res = parse_wrk(stdout)
    except ValueError as e:
        raise RuntimeError(f"{e}: {stdout.strip()[-300:]}")
    res["wrk_output"] = stdout
    res.update((k, acct[k]) for k in ("server_sched", "loadgen_sched", "steal")
               if k in acct)
    if "others" in acct:
        res["others"] = acct["others"]
    cpu_s = acct["server_cpu_s"]
    res["server_cpu_s"] = round(cpu_s, 4)
    res["per_cpu"] = res["requests"] / cpu_s if cpu_s > 0 else None
    return res


def measure(name, app, conns, args, cpus, quiet):
    """One sample: {"rps", "per_cpu", "p99_ms" (None on error), "error", ...}."""
    busy_before = quiet.wait()
    lifetime = int(args.warmup + args.duration + 2 * WRK_SLACK_S + READY_TIMEOUT_S + 30)
    failed = {"rps": None, "per_cpu": None, "p99_ms": None}
    for attempt in (1, 2):
        port = free_port()
        srv = HttpServer(name, app, port, cpus[0], lifetime)
        srv.port = port
        try:
            why = srv.wait_ready(READY_TIMEOUT_S, BODIES[app])
            if why:
                tail = srv.stderr_tail()
                if attempt == 1 and "in use" in tail:   # lost the port race
                    continue
                return dict(failed, server_stderr=tail,
                            error=f"server failed to start: {why}")
            try:
                res = run_wrk(port, cpus, conns, args, srv.proc.pid)
            except RuntimeError as e:
                return dict(failed, error=str(e), server_stderr=srv.stderr_tail())
            res["busy_before"] = round(busy_before, 3)
            # A server that refuses connections, answers errors or answers
            # nothing is broken, not slow: its figures stay in the JSON, out
            # of medians.  Read/write/timeout errors are reported ('!').
            res["error"] = None
            errs = res["socket_errors"]
            if not srv.alive():
                res["error"] = f"server died during the run: {srv.stderr_last_line()}"
            elif errs["connect"]:
                res["error"] = f"{errs['connect']} connect error(s)"
            elif res["non2xx"]:
                res["error"] = f"{res['non2xx']} non-2xx/3xx response(s)"
            elif not res["requests"]:
                res["error"] = "no request completed"
            if res["error"]:
                res.update(raw=dict(rps=res["rps"], per_cpu=res["per_cpu"],
                                    p99_ms=res["p99_ms"]),
                           server_stderr=srv.stderr_tail(), **failed)
            return res
        finally:
            srv.stop()
    return dict(failed, error="server failed to start: port in use twice")


# ------------------------------------------------------------ reporting

def cell_key(app, conns):
    return f"{app}/{conns}"


def has_socket_errors(samples):
    return any(x.get("socket_errors") and any(x["socket_errors"].values())
               for x in samples if x["rps"] is not None)


def report(servers, cells, samples, med, rounds):
    label = lambda a, c: f"{a} / {c}"  # noqa: E731
    print(f"\nMedians of {rounds} round(s) (uncontended samples first); '*' = some "
          "rounds failed, '~' = only CPU-contended samples, '!' = wrk saw "
          "read/write/timeout errors, ERR = none succeeded.")
    if MULTI in servers:
        print(f"{MULTI} is not pinned: its 2 workers share the machine's 2 CPUs with wrk.")
    formats = [("rps", "requests/s", "{:,.0f}"),
               ("per_cpu", "requests per server-CPU-second", "{:,.0f}"),
               ("p99_ms", "p99 latency, ms", "{:,.2f}")]
    for key, title, fmt in formats:
        print(f"\n{title}")
        rows = []
        for a, c in cells:
            row = [label(a, c)]
            for name in servers:
                xs = samples[name][cell_key(a, c)]
                m = med[name][key][cell_key(a, c)]
                if m is None:
                    row.append("ERR")
                    continue
                bad = any(x["rps"] is None for x in xs)
                noisy = all(is_noisy(x) for x in xs if x["rps"] is not None)
                row.append(fmt.format(m) + ("*" if bad else "") + ("~" if noisy else "")
                           + ("!" if has_socket_errors(xs) else ""))
            rows.append(row)
        print_table(["app / conns"] + servers, rows)

    print("\nCPU used, server / wrk, in cores (wrk at ~1.0: the client limits req/s)")
    rows = []
    for a, c in cells:
        row = [label(a, c)]
        for name in servers:
            xs = samples[name][cell_key(a, c)]
            s, w = median_cpu(xs, "server_sched"), median_cpu(xs, "loadgen_sched")
            row.append("-" if s is None or w is None else f"{s:.2f} / {w:.2f}")
        rows.append(row)
    print_table(["app / conns"] + servers, rows)

    ratios = {}
    peers = [p for p in servers if p not in (HEADLINE, MULTI)]
    if HEADLINE in servers and peers:
        print(f"\n{HEADLINE} requests per server-CPU-second divided by each peer's "
              "(above 1.0 = fibers does more per CPU-second)")
        rows = []
        for a, c in cells:
            k = cell_key(a, c)
            row = [label(a, c)]
            for p in peers:
                r = ratio(med[HEADLINE]["per_cpu"][k], med[p]["per_cpu"][k])
                ratios.setdefault(p, {})[k] = r
                row.append("-" if r is None else f"{r:.2f}x")
            rows.append(row)
        print_table(["app / conns"] + peers, rows)
    if HEADLINE in servers and MULTI in servers:
        print(f"\n{MULTI} against {HEADLINE}: requests/s and requests per "
              "server-CPU-second (not pinned; wrk competes for the second CPU)")
        rows = []
        for a, c in cells:
            k = cell_key(a, c)
            r = [ratio(med[MULTI][m][k], med[HEADLINE][m][k]) for m in ("rps", "per_cpu")]
            ratios.setdefault(MULTI, {})[k] = {"rps": r[0], "per_cpu": r[1]}
            rows.append([label(a, c)] + ["-" if x is None else f"{x:.2f}x" for x in r])
        print_table(["app / conns", "req/s", "req per CPU-s"], rows)

    # One line per distinct (server, error); full stderr is in the JSON.
    errs = {}
    for name in servers:
        for a, c in cells:
            for x in samples[name][cell_key(a, c)]:
                if x["error"]:
                    errs.setdefault((name, x["error"][:300]), []).append(label(a, c))
    if errs:
        print("\nerrors:")
        for (name, msg), where in errs.items():
            at = where[0] if len(where) == 1 else f"{len(where)} samples"
            print(f"  {name} ({at}): {msg}")
    return ratios


def check_targets(servers, apps, conns_list, samples, med):
    """The issue's targets, in requests per server-CPU-second."""
    checks = []
    print(f"\ntargets ({HEADLINE} requests per server-CPU-second relative to the "
          f"peer's, app {TARGET_APP}):")
    for conns in conns_list:
        k = cell_key(TARGET_APP, conns)
        for peer, minimum in TARGETS:
            c = {"cell": k, "peer": peer, "target": minimum, "ratio": None, "met": False}
            if HEADLINE not in servers or peer not in servers or TARGET_APP not in apps:
                c["note"] = "not measured in this run"
            elif med[HEADLINE]["per_cpu"][k] is None or not med[peer]["per_cpu"][k]:
                failed = HEADLINE if med[HEADLINE]["per_cpu"][k] is None else peer
                c["note"] = f"no data: {failed} failed"
            else:
                c["ratio"] = med[HEADLINE]["per_cpu"][k] / med[peer]["per_cpu"][k]
                c["met"] = c["ratio"] >= minimum
                # Per CPU-second is fair even when wrk is the bottleneck, but
                # a server that idles part of its core may batch better.
                capped = [n for n in (peer, HEADLINE)
                          if (median_cpu(samples[n][k], "loadgen_sched") or 0) > SATURATED]
                if capped:
                    c["loadgen_bound"] = capped
                    c["note"] = f"wrk had no idle CPU against {' and '.join(capped)}"
            checks.append(c)
            print_check(c, f"{conns} conns vs {peer}", minimum)
    return checks


# ------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5,
                    help="measured seconds per sample, whole (wrk's -d; default 5)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured seconds of load before each sample (default 1)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--conns", default=",".join(map(str, CONNS)))
    ap.add_argument("--json", default=None, help="where to save results")
    args = ap.parse_args(argv)

    servers = csv_list(args.servers)
    apps = csv_list(args.apps)
    conns_list = csv_list(args.conns, int)
    unknown = [s for s in servers if s not in SERVERS] + [a for a in apps if a not in BODIES]
    if unknown:
        ap.error(f"unknown server(s) or app(s) {', '.join(unknown)}; known: "
                 f"{', '.join(SERVERS)}; {', '.join(BODIES)}")
    if not (1 <= args.rounds <= 50 and 1 <= args.duration <= 120
            and 0 <= args.warmup <= 30 and all(1 <= c <= 10000 for c in conns_list)):
        ap.error("need 1 <= rounds <= 50, 1 <= duration <= 120, 0 <= warmup <= 30, "
                 "1 <= conns <= 10000")
    for tool, pkg in (("taskset", "util-linux"), ("wrk", "wrk"), ("timeout", "coreutils")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian package {pkg}; `make bench-http` installs it)")

    cpus = cpu_pair()
    cells = [(a, c) for a in apps for c in conns_list]
    total = args.rounds * len(servers) * len(cells)
    est = total * (args.duration + args.warmup + 1.5)   # + quiet check, start/stop
    log(f"{total} measurements, about {est / 60:.0f} min "
        f"(servers on CPU {cpus[0]}, wrk on CPU {cpus[1]})")

    samples = {n: {cell_key(a, c): [] for a, c in cells} for n in servers}
    quiet = QuietWaiter(cpus)
    done = 0
    t_start = time.monotonic()
    for rnd in range(args.rounds):
        for app, conns in cells:
            for name in servers:
                res = measure(name, app, conns, args, cpus, quiet)
                samples[name][cell_key(app, conns)].append(res)
                done += 1
                if res["rps"] is not None:
                    shown = (f"{res['rps']:,.0f} req/s, {res['per_cpu']:,.0f} per CPU-s, "
                             f"p99 {res['p99_ms']:.2f} ms")
                else:
                    shown = "ERROR " + res["error"].splitlines()[0][:160]
                srv, gen = res.get("server_sched"), res.get("loadgen_sched")
                if srv and gen:
                    shown += (f"  (cpu: server {srv['cpu']:.2f}, wrk {gen['cpu']:.2f};"
                              f" wrk's wait {gen['wait']:.2f},"
                              f" others on these CPUs {res.get('others', 0):.2f})")
                log(f"[{done}/{total}] round {rnd + 1} {app} / {conns} conns {name}: {shown}")
    elapsed = time.monotonic() - t_start
    if quiet.waited >= 1:
        log(f"waited {quiet.waited:.0f} s in total for other processes to leave the CPUs")

    med = {n: {key: {k: median_of(v, key) for k, v in per.items()}
               for key in ("rps", "per_cpu", "p99_ms")}
           for n, per in samples.items()}
    ratios = report(servers, cells, samples, med, args.rounds)
    noisy = warn_background(samples)
    checks = check_targets(servers, apps, conns_list, samples, med)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(ROOT, "bench", "results", f"http-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({
            "when": stamp, "python": platform.python_version(),
            "machine": platform.machine(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "server_cpu": cpus[0], "wrk_cpu": cpus[1],
            "command": "python -m bench.http_run " + " ".join(argv or sys.argv[1:]),
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "elapsed_s": round(elapsed, 1), "servers": servers, "apps": apps,
            "conns": conns_list, "unpinned": [n for n in servers if not SERVERS[n][1]],
            "headline": HEADLINE, "noisy_samples": noisy,
            "quiet_wait_s": round(quiet.waited, 1), "samples": samples,
            "medians": med, "ratios": ratios, "targets": checks,
        }, f, indent=2)
    print(f"\nsaved {path} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
