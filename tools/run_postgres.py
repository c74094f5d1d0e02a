"""`make run-postgres`: fibers-shadow into a real PostgreSQL, for a while.

    python -m tools.run_postgres [--seconds 15]     (from the repository's root)

1. starts a throwaway PostgreSQL cluster (tools/pgcluster.py, as the tests
   do: initdb in a temporary directory, a private port on 127.0.0.1);
2. makes a demo directory and a writer thread that keeps changing it
   (files created, written, renamed, deleted; directories made and moved);
3. runs ``fibers-shadow --no-ui --store postgresql://...`` on it, printing
   a line a second from its JSON status;
4. stops the writer, then fibers-shadow (SIGTERM: it drains and exits 0),
   and prints a summary read back from the ``events`` table;
5. stops the server and removes the cluster, also after Ctrl-C or an error.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tools.pgcluster import PgServer, PgUnavailable


def writer(root, stop):
    """Varied activity in ``root`` until ``stop`` is set."""
    i = 0
    while not stop.is_set():
        d = os.path.join(root, f"dir{i // 100}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"note{i}.txt")
        with open(p, "w") as f:
            f.write("hello " * (i % 40))
        try:                        # a neighbour may be gone already
            if i % 4 == 1:
                with open(os.path.join(d, f"note{i - 1}.txt"), "r+") as f:
                    f.seek(0, os.SEEK_END)
                    f.write(" and more")
        except FileNotFoundError:
            pass
        try:
            if i % 7 == 3:
                os.rename(os.path.join(d, f"note{i - 2}.txt"),
                          os.path.join(d, f"renamed{i - 2}.txt"))
            if i % 5 == 4:
                os.unlink(os.path.join(d, f"note{i - 4}.txt"))
        except FileNotFoundError:
            pass
        if i % 100 == 99:
            os.rename(d, os.path.join(root, f"done{i // 100}"))
        i += 1
        stop.wait(0.01)             # about 100 files/s: a readable demo


def relay(proc, start):
    """One line a second from fibers-shadow's JSON status lines."""
    for line in proc.stdout:
        try:
            st = json.loads(line)
        except ValueError:
            continue
        c, j, s = st["counts"], st["journal"], st["store"]
        print(f"  {time.monotonic() - start:5.1f}s  seen {c['seen']:6d}  "
              f"journaled {c['journaled']:6d}  shipped {c['shipped']:6d}  "
              f"lag {j['lag']:4d}  store {s['state']}"
              + (f" ({s['last_error']})" if s.get("last_error") else ""),
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("RUN_SECONDS", 15)))
    a = ap.parse_args()
    server = PgServer()
    tmp = tempfile.mkdtemp(prefix="fibers-shadow-pg-")
    stop = threading.Event()
    proc = None
    try:
        print("starting a throwaway PostgreSQL cluster ...", flush=True)
        server.start()
        url = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        root = os.path.join(tmp, "demo")
        os.mkdir(root)
        print(f"store {url}\nshadowing {root} for {a.seconds:g} s",
              flush=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fibers.shadow", "--no-ui", "--root",
             root, "--state-dir", os.path.join(tmp, "state"), "--store",
             url], stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        threading.Thread(target=relay, args=(proc, start),
                         daemon=True).start()
        w = threading.Thread(target=writer, args=(root, stop), daemon=True)
        w.start()
        end = start + a.seconds
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        stop.set()
        w.join(5)
        if proc.poll() is None:
            time.sleep(0.5)         # the coalescing window, then drain
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        import psycopg
        with psycopg.connect(server.conninfo) as c:
            kinds = c.execute("SELECT kind, count(*) FROM events GROUP BY "
                              "kind ORDER BY kind").fetchall()
            n, lo, hi = c.execute("SELECT count(*), min(seq), max(seq) "
                                  "FROM events").fetchone()
            last = c.execute("SELECT seq, kind, path FROM events ORDER BY "
                             "seq DESC LIMIT 3").fetchall()
        print(f"\nfibers-shadow exited {rc}.  In PostgreSQL: {n} events, "
              f"seq {lo}..{hi}"
              + (" (no gaps)" if n and hi - lo + 1 == n else ""))
        for k, cnt in kinds:
            print(f"  {k:10s} {cnt}")
        for seq, k, p in last:
            print(f"  #{seq} {k} {os.path.relpath(os.fsdecode(p), root)}")
        return 0 if rc == 0 else 1
    except PgUnavailable as e:
        print(f"cannot start PostgreSQL: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print("PostgreSQL stopped, cluster removed.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
