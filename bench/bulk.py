"""`make bench-bulk`: bulk upload into an accepted connection, on loopback.

    python -m bench.bulk [--rounds 5] [--mb 200] [--servers a,b,...]

One measurement: start a sink server alone on CPU 0 (taskset), wait for
its READY line, then a client on CPU 1 connects, sends --mb MiB in 1 MiB
sendall() calls, shuts down its write side and waits for the server's
reply: the byte count it received, which must equal what was sent.  The
figure is MB/s from connect to that reply, and MB per CPU-second the
server process spent from accept to end of stream (it reports its own
process_time()), which is steadier than MB/s on a shared machine.  Every sample is a fresh server
process; rounds are interleaved across servers and the table reports
medians, as bench/echo_run.py does.

The sink is what a user writes: accept, then recv(65536) in a loop until
EOF (blocking style for fibers and gevent; asyncio.Protocol on uvloop).

Traffic is loopback only; every wait is bounded (READY, the transfer, the
server's exit).
"""
import argparse
import datetime
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
READ_SIZE = 65536
CHUNK = 1 << 20
TRANSFER_TIMEOUT_S = 120
READY_TIMEOUT_S = 20

SERVERS = {
    "fibers-io_uring": {"FIBERS_BACKEND": "io_uring"},
    "fibers-io_uring-single": {"FIBERS_BACKEND": "io_uring",
                               "FIBERS_MULTISHOT": "0"},
    "fibers-epoll": {"FIBERS_BACKEND": "epoll"},
    "uvloop-protocol": {},
    "gevent": {},
}
HEADLINE = "fibers-io_uring"
TARGET = ("fibers-epoll", 0.9)


# ------------------------------------------------------------ the servers

def _ready():
    print("READY", flush=True)


def _drain(conn):
    """The blocking-style sink: recv(65536) until EOF, then the reply."""
    cpu0 = time.process_time()
    total = 0
    while True:
        data = conn.recv(READ_SIZE)
        if not data:
            break
        total += len(data)
    conn.sendall(_reply(total, cpu0))
    conn.close()


def _reply(total, cpu0):
    # What the sink received, and the CPU seconds its process spent from
    # accepting the connection to end of stream (all its threads).
    return f"{total} {time.process_time() - cpu0:.6f}".encode()


def sink_fibers(port):
    import fibers
    from fibers import net

    def main():
        lsock = net.listen((HOST, port), backlog=16)
        _ready()
        conn, _ = lsock.accept()
        _drain(conn)

    want = os.environ.get("FIBERS_BACKEND") or None
    sched = fibers.Scheduler(backend=want)
    if want and sched.backend != want:
        sys.exit(f"asked for {want!r}, got {sched.backend!r}")
    sched.run(main)


def sink_gevent(port):
    from gevent import socket as gsocket

    lsock = gsocket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((HOST, port))
    lsock.listen(16)
    _ready()
    conn, _ = lsock.accept()
    _drain(conn)


def sink_uvloop(port):
    import asyncio
    import uvloop

    class Sink(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.total = 0
            self.cpu0 = time.process_time()

        def data_received(self, data):
            self.total += len(data)

        def eof_received(self):
            self.transport.write(_reply(self.total, self.cpu0))
            self.transport.close()
            done.set_result(None)

    async def main():
        global done
        done = asyncio.get_running_loop().create_future()
        server = await asyncio.get_running_loop().create_server(
            Sink, HOST, port, backlog=16)
        _ready()
        await done
        server.close()

    uvloop.run(main())


def serve(name, port):
    signal.alarm(TRANSFER_TIMEOUT_S + READY_TIMEOUT_S + 30)
    if name.startswith("fibers"):
        sink_fibers(port)
    elif name == "gevent":
        sink_gevent(port)
    elif name == "uvloop-protocol":
        sink_uvloop(port)
    else:
        raise SystemExit(f"unknown server {name}")


# ------------------------------------------------------------ the client

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def measure(name, mb):
    port = free_port()
    env = dict(os.environ)
    env.pop("FIBERS_BACKEND", None)
    env.pop("FIBERS_MULTISHOT", None)
    env.update(SERVERS[name])
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "bench.bulk",
         "--serve", name, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env,
        start_new_session=True)
    try:
        r, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        if not r or b"READY" not in proc.stdout.readline():
            return {"mbps": None, "error": "no READY: " +
                    proc.stderr.read().decode()[-300:] if proc.poll() is not None
                    else "no READY"}
        res = subprocess.run(
            ["taskset", "-c", "1", sys.executable, "-m", "bench.bulk",
             "--client", str(port), "--mb", str(mb)],
            capture_output=True, text=True, cwd=ROOT,
            timeout=TRANSFER_TIMEOUT_S)
        if res.returncode != 0:
            return {"mbps": None, "error": res.stderr.strip()[-300:]}
        return json.loads(res.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"mbps": None, "error": "transfer timed out"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def client(port, mb):
    payload = memoryview(bytes(range(256)) * (CHUNK // 256))
    total = mb * CHUNK
    with socket.create_connection((HOST, port), timeout=TRANSFER_TIMEOUT_S) as s:
        t0 = time.perf_counter()
        for _ in range(mb):
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(64)
            if not chunk:
                break
            reply += chunk
        dt = time.perf_counter() - t0
    parts = reply.split()
    got = int(parts[0]) if parts else -1
    if got != total:
        raise SystemExit(f"server counted {got} bytes, {total} were sent")
    cpu = float(parts[1])
    print(json.dumps({"mbps": round(total / dt / 1e6, 1), "seconds": dt,
                      "bytes": total, "server_cpu_s": cpu,
                      "mb_per_cpu_s": round(total / cpu / 1e6, 1)
                      if cpu > 0 else None, "error": None}))


# ------------------------------------------------------------ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--client", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port)
    if args.client:
        return client(args.client, args.mb)
    if not (1 <= args.rounds <= 50 and 1 <= args.mb <= 4096):
        ap.error("need 1 <= rounds <= 50 and 1 <= mb <= 4096")
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s): {', '.join(unknown)}")
    samples = {n: [] for n in servers}
    for rnd in range(args.rounds):
        for name in servers:
            res = measure(name, args.mb)
            samples[name].append(res)
            shown = (f"{res['mbps']:,.0f} MB/s, "
                     f"{res.get('mb_per_cpu_s') or 0:,.0f} MB/CPU-s"
                     if res["mbps"] is not None
                     else "ERROR " + str(res["error"])[:200])
            print(f"round {rnd + 1} {name}: {shown}", file=sys.stderr, flush=True)
    def median(v, key):
        xs = [x[key] for x in v if x.get(key) is not None]
        return statistics.median(xs) if xs else None

    med = {n: median(v, "mbps") for n, v in samples.items()}
    eff = {n: median(v, "mb_per_cpu_s") for n, v in samples.items()}
    print(f"\nbulk upload of {args.mb} MiB into an accepted connection, "
          f"median of {args.rounds}:")
    print("| server | MB/s | vs fibers-epoll | MB per server CPU-s | "
          "vs fibers-epoll |")
    print("|---|---:|---:|---:|---:|")
    base = med.get("fibers-epoll")
    ebase = eff.get("fibers-epoll")
    for n in servers:
        m, e = med[n], eff[n]
        ratio = f"{m / base:.2f}x" if m and base else "-"
        eratio = f"{e / ebase:.2f}x" if e and ebase else "-"
        print(f"| {n} | {'ERR' if m is None else f'{m:,.0f}'} | {ratio} | "
              f"{'-' if e is None else f'{e:,.0f}'} | {eratio} |")
    peer, minimum = TARGET
    checks = None
    if med.get(HEADLINE) and med.get(peer):
        r = med[HEADLINE] / med[peer]
        checks = {"peer": peer, "target": minimum, "ratio": r, "met": r >= minimum}
        print(f"\ntarget: {HEADLINE} >= {minimum}x {peer}: "
              f"{'MET' if r >= minimum else 'MISSED'} ({r:.2f}x)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or os.path.join(ROOT, "bench", "results", f"bulk-{stamp}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"when": stamp, "python": platform.python_version(),
                   "kernel": platform.release(), "mb": args.mb,
                   "rounds": args.rounds, "samples": samples, "medians": med,
                   "mb_per_cpu_s": eff,
                   "target": checks}, f, indent=2)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
