"""`make bench-tls`: TLS echo throughput of fibers.ssl and its peers, on
loopback.

    python -m bench.tls_run [--rounds 3] [--duration 2.5] [--warmup 0.5]
                            [--servers fibers-io_uring,uvloop-streams,...]
                            [--sizes 64,16384] [--conns 50] [--json PATH]

The method is bench/echo_run.py's, over TLS: each measurement starts one
server alone on CPU 0 (taskset), waits for its READY line, runs the C load
generator bench/echo/tls_loadgen.c (OpenSSL; closed loop, one message in
flight per connection, every echo checked) alone on CPU 1 for --warmup +
--duration seconds, and stops the server.  All TLS handshakes happen before
the warmup, so the figures are about moving encrypted records, not about
handshakes.  Rounds are interleaved, tables report medians, CPU-contended
samples are flagged and left out of medians when a cell has clean ones.

Servers (bench/echo/tls_servers.py) all load the same throwaway self-signed
certificate (an EC P-256 key made here with `openssl req`, in a temporary
directory removed at the end); the load generator does not verify it.
TLS 1.3 with OpenSSL's default cipher choice on both sides.

Two figures per cell: requests per second, and requests per server
CPU-second (req/s divided by the cores the server process used, from
/proc/PID/schedstat), which is what a server costs per request even when
the load generator, not the server, is the bottleneck.

The target (issue 16): fibers (io_uring) >= 1.0x uvloop-streams
(asyncio.start_server(ssl=...)) in both figures, at 64 B and 16 KiB with
50 connections.  Results go to bench/results/tls-<timestamp>.json.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import echo_run as E
from bench.procs import ServerProcess, wait_ready

ROOT = E.ROOT
LOADGEN = os.path.join(E.BUILD_DIR, "tls_loadgen")
LOADGEN_SRC = os.path.join(E.ECHO_DIR, "tls_loadgen.c")

HEADLINE = "fibers-io_uring"
PEERS_FOR_TARGET = ("uvloop-streams",)


def _py_server(name):
    return lambda port, life, cert, key: [
        sys.executable, "-m", "bench.echo.tls_servers", name, str(port), cert,
        key, "--max-seconds", str(life)]


SERVERS = {
    "fibers-io_uring": (_py_server("fibers"), {"FIBERS_BACKEND": "io_uring"}),
    "fibers-epoll": (_py_server("fibers"), {"FIBERS_BACKEND": "epoll"}),
    "uvloop-streams": (_py_server("uvloop-streams"), {}),
    "uvloop-protocol": (_py_server("uvloop-protocol"), {}),
    "gevent": (_py_server("gevent"), {}),
}
SIZES = (64, 16384)
CONNS = (50,)


def ensure_built():
    os.makedirs(E.BUILD_DIR, exist_ok=True)
    if os.path.exists(LOADGEN) and \
            os.path.getmtime(LOADGEN) >= os.path.getmtime(LOADGEN_SRC):
        return
    cc = os.environ.get("CC", "gcc")
    E.log(f"compiling {os.path.relpath(LOADGEN_SRC, ROOT)}")
    subprocess.run([cc, "-O2", "-Wall", "-o", LOADGEN, LOADGEN_SRC, "-lssl",
                    "-lcrypto"], check=True, timeout=120)


def make_cert(d):
    """A self-signed EC certificate for localhost: (cert path, key path)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Server(E.Server):
    """bench.echo_run's server process, started with TLS arguments."""

    def __init__(self, name, port, cpu, lifetime, cert, key):
        argv_fn, extra_env = SERVERS[name]
        env = dict(os.environ)
        env.pop("FIBERS_BACKEND", None)
        env.update(extra_env)
        ServerProcess.__init__(
            self, ["taskset", "-c", str(cpu)] + argv_fn(port, lifetime, cert, key),
            env, ROOT)

    def wait_ready(self, timeout):
        return wait_ready(self.proc, timeout)


def measure(name, size, conns, args, cpus, quiet, cert, key):
    """One sample, as bench.echo_run.measure, plus "per_cpu" (requests per
    server CPU-second)."""
    busy_before = quiet.wait()
    lifetime = int(args.warmup + args.duration + E.LOADGEN_SLACK_S +
                   E.READY_TIMEOUT_S + 30)
    for attempt in (1, 2):
        port = E.free_port()
        srv = Server(name, port, cpus[0], lifetime, cert, key)
        try:
            if not srv.wait_ready(E.READY_TIMEOUT_S):
                tail = srv.stderr_tail()
                if attempt == 1 and "in use" in tail:
                    continue
                return {"rps": None, "per_cpu": None, "server_stderr": tail,
                        "error": f"server failed to start: "
                                 f"{srv.stderr_last_line()}"}
            try:
                res = E.run_loadgen(port, cpus, size, conns, args.duration,
                                    args.warmup, srv.proc.pid,
                                    loadgen=LOADGEN)
            except RuntimeError as e:
                return {"rps": None, "per_cpu": None, "error": str(e),
                        "server_stderr": srv.stderr_tail()}
            res["busy_before"] = round(busy_before, 3)
            res["error"] = None
            if not srv.alive():
                res["error"] = ("server died during the run: "
                                f"{srv.stderr_last_line()}")
            elif res["errors"]:
                first = (res.get("stderr") or "").splitlines()[:1]
                res["error"] = (f"{res['errors']} connection error(s): "
                                f"{''.join(first)}")
            elif not res["requests"]:
                res["error"] = "no round trip completed"
            cpu = (res.get("server_sched") or {}).get("cpu")
            res["per_cpu"] = res["rps"] / cpu if cpu and not res["error"] \
                else None
            if res["error"]:
                res.update(raw_rps=res["rps"], rps=None,
                           server_stderr=srv.stderr_tail())
            return res
        finally:
            srv.stop()
    return {"rps": None, "per_cpu": None,
            "error": "server failed to start: port in use twice"}


def median_key(samples, key):
    xs = [x for x in E.usable(samples) if x.get(key) is not None]
    return statistics.median(x[key] for x in xs) if xs else None


def report(servers, cells, samples, rounds):
    meds = {}
    for key, title in (("rps", "requests per second"),
                       ("per_cpu", "requests per server CPU-second")):
        print(f"\nTLS echo, {title}, median of {rounds} round(s) "
              "('~' = only CPU-contended samples, ERR = none succeeded)")
        rows = []
        for s, c in cells:
            k = E.cell_key(s, c)
            row = [f"{s} B / {c}"]
            for name in servers:
                m = median_key(samples[name][k], key)
                meds[(key, name, k)] = m
                noisy = all(E.is_noisy(x) for x in samples[name][k]
                            if x["rps"] is not None)
                row.append("ERR" if m is None else
                           f"{m:,.0f}" + ("~" if noisy else ""))
            rows.append(row)
        E.print_table(["size / conns"] + servers, rows)
    checks = []
    if HEADLINE in servers:
        print(f"\n{HEADLINE} divided by each peer (above 1.0 = fibers "
              "better; target >= 1.0x uvloop-streams)")
        rows = []
        for s, c in cells:
            k = E.cell_key(s, c)
            for key in ("rps", "per_cpu"):
                row = [f"{s} B / {c} {key}"]
                for p in servers:
                    if p == HEADLINE:
                        continue
                    a, b = meds[(key, HEADLINE, k)], meds[(key, p, k)]
                    r = a / b if a is not None and b else None
                    row.append("-" if r is None else f"{r:.2f}x")
                    if p in PEERS_FOR_TARGET:
                        checks.append({"cell": k, "figure": key, "peer": p,
                                       "ratio": r, "target": 1.0,
                                       "met": r is not None and r >= 1.0})
                rows.append(row)
        E.print_table(["cell"] + [p for p in servers if p != HEADLINE], rows)
    return meds, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.5)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--conns", default=",".join(map(str, CONNS)))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    servers = E.csv_list(args.servers)
    sizes = E.csv_list(args.sizes, int)
    conns_list = E.csv_list(args.conns, int)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}; known: "
                 f"{', '.join(SERVERS)}")
    if not (1 <= args.rounds <= 50 and 0.1 <= args.duration <= 120
            and 0 <= args.warmup <= 30):
        ap.error("need 1 <= rounds <= 50, 0.1 <= duration <= 120, "
                 "0 <= warmup <= 30")
    for tool, pkg in (("taskset", "util-linux"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (package {pkg})")

    ensure_built()
    cpus = E.cpu_pair()
    cells = [(s, c) for s in sizes for c in conns_list]
    total = args.rounds * len(servers) * len(cells)
    E.log(f"{total} measurements, about "
          f"{total * (args.duration + args.warmup + 0.6) / 60:.0f} min "
          f"(server on CPU {cpus[0]}, load generator on CPU {cpus[1]})")
    samples = {n: {E.cell_key(s, c): [] for s, c in cells} for n in servers}
    quiet = E.QuietWaiter(cpus)
    done = 0
    with tempfile.TemporaryDirectory(prefix="fibers-bench-tls-") as d:
        cert, key = make_cert(d)
        for rnd in range(args.rounds):
            for size, conns in cells:
                for name in servers:
                    res = measure(name, size, conns, args, cpus, quiet, cert,
                                  key)
                    samples[name][E.cell_key(size, conns)].append(res)
                    done += 1
                    shown = (f"{res['rps']:,.0f} req/s" if res["rps"] is not None
                             else "ERROR " + res["error"].splitlines()[0][:120])
                    if res.get("per_cpu"):
                        shown += f", {res['per_cpu']:,.0f} req/server-CPU-s"
                    E.log(f"[{done}/{total}] round {rnd + 1} {size} B / "
                          f"{conns} conns {name}: {shown}")
    meds, checks = report(servers, cells, samples, args.rounds)
    E.warn_background(samples)
    errs = {(n, x["error"][:300]) for n in servers for v in samples[n].values()
            for x in v if x["error"]}
    if errs:
        print("\nerrors:")
        for n, msg in sorted(errs):
            print(f"  {n}: {msg}")
    for c in checks:
        got = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
        print(f"  [{'MET' if c['met'] else 'MISSED'}] {c['cell']} "
              f"{c['figure']} vs {c['peer']}: {got} (target >= 1.0x)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(ROOT, "bench", "results",
                                     f"tls-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"args": vars(args), "servers": servers,
                   "samples": samples, "checks": checks,
                   "medians": {f"{k}|{n}|{c}": v
                               for (k, n, c), v in meds.items()}},
                  f, indent=1)
    E.log(f"results saved to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
