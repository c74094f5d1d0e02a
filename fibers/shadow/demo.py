"""`make run`: fibers-shadow on a demo directory with activity in it.

    python -m fibers.shadow.demo [--dir DIR] [--seconds 15] [--ui auto|on|off]
    python -m fibers.shadow.demo produce DIR [--rate OPS_PER_S]

Design: three processes, so that each part is what a user would run:

- the **producer** (``produce``) is a small fibers program: one fiber per
  "user" of the directory, each making varied file activity (creates,
  writes, appends, renames, chmods, deletes, mkdir/rmdir) at its own pace
  with ``fibers.sleep``, in bursts, so the rates on screen move;
- **fibers-shadow** itself, on that directory, with the embedded SQLite
  store: its live UI when stdout is a terminal (until ``q``), headless
  (``--no-ui``) for ``--seconds`` otherwise, its JSON status lines turned
  into one short line a second;
- this **runner**, which starts both, stops the producer, then
  fibers-shadow (SIGTERM: it drains and ships what it has), and prints
  what the store holds, per kind, read back with plain sqlite3.

Everything lives under one directory (default ``build/shadow-demo``),
emptied at each run and left behind so the store can be queried after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

__all__ = ["produce", "main"]

# ---- the producer ----------------------------------------------------------

WORDS = ("notes", "draft", "photo", "report", "todo", "budget", "song",
         "paper", "log", "backup", "index", "cache")
EXTS = (".txt", ".md", ".csv", ".json", ".log", ".tmp")
MAX_FILES = 60


def _user(root, name, rate, rng):
    """One simulated user of ``root``: a random walk over file operations."""
    import fibers
    home = os.path.join(root, name)
    os.makedirs(home, exist_ok=True)
    files, dirs = [], [home]
    n = 0
    while True:
        burst = rng.random() < 0.15
        for _ in range(rng.randint(5, 25) if burst else 1):
            n += 1
            op = rng.random()
            try:
                if op < 0.30 or not files:
                    p = os.path.join(rng.choice(dirs),
                                     f"{rng.choice(WORDS)}-{n}"
                                     f"{rng.choice(EXTS)}")
                    with open(p, "w") as f:
                        f.write(f"{name} wrote {n}\n" * rng.randint(1, 50))
                    files.append(p)
                elif op < 0.55:
                    with open(rng.choice(files), "a") as f:
                        f.write(f"more {n}\n")
                elif op < 0.68:
                    i = rng.randrange(len(files))
                    stem = os.path.basename(files[i]).split("~")[-1]
                    dst = os.path.join(rng.choice(dirs), f"r{n}~{stem}")
                    os.rename(files[i], dst)
                    files[i] = dst
                elif op < 0.74:
                    os.chmod(rng.choice(files), rng.choice((0o644, 0o600)))
                elif op < 0.88 or len(files) > MAX_FILES:
                    os.unlink(files.pop(rng.randrange(len(files))))
                elif op < 0.95 and len(dirs) < 6:
                    d = os.path.join(home, f"dir-{n}")
                    os.mkdir(d)
                    dirs.append(d)
                elif len(dirs) > 1:
                    d = dirs.pop(rng.randrange(1, len(dirs)))
                    for p in [p for p in files if p.startswith(d + "/")]:
                        files.remove(p)
                    shutil.rmtree(d)
            except FileNotFoundError:
                pass
        fibers.sleep(rng.expovariate(rate))


def produce(root: str, rate: float = 8.0, users: int = 3,
            seed: int | None = None):
    """Make file activity under ``root`` until killed (a fibers program:
    one fiber per simulated user)."""
    import fibers

    def main():
        rng = random.Random(seed)
        for i in range(users):
            fibers.spawn(_user, root, f"user{i + 1}", rate,
                         random.Random(rng.random()))
        fibers.wait_os_signal(signal.SIGTERM, signal.SIGINT)

    os.makedirs(root, exist_ok=True)
    fibers.run(main)


# ---- the runner ------------------------------------------------------------

def _summary(store_path) -> str:
    lines = []
    try:
        db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT kind, count(*) FROM events "
                              "GROUP BY kind ORDER BY count(*) DESC").fetchall()
            total, lo, hi = db.execute(
                "SELECT count(*), min(seq), max(seq) FROM events").fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        return f"the store {store_path} cannot be read: {e}"
    lines.append(f"events shipped to the store ({store_path}):")
    for kind, n in rows:
        lines.append(f"  {kind:<13}{n:>7}")
    lines.append(f"  {'total':<13}{total:>7}   (seq {lo}..{hi})")
    lines.append(f"look at them: sqlite3 {store_path} "
                 f"'select seq, kind, path from events order by seq'")
    return "\n".join(lines)


def _short(st) -> str:
    c, j, s = st["counts"], st["journal"], st["store"]
    kinds = " ".join(f"{k}={n}" for k, n in sorted(st["kinds"].items()))
    return (f"[{st['uptime']:5.1f}s] seen {c['seen']:>5}  journaled "
            f"{c['journaled']:>5}  shipped {c['shipped']:>5}  lag "
            f"{j['lag']:>3}  store {s['state']}  {kinds}")


def _run(args) -> int:
    base = os.path.abspath(args.dir)
    if os.path.exists(base):
        shutil.rmtree(base)
    root = os.path.join(base, "root")
    state = os.path.join(base, "state")
    store = os.path.join(base, "store.db")
    os.makedirs(root)
    ui = (args.ui == "on" or (args.ui == "auto" and sys.stdout.isatty()
                              and sys.stdin.isatty()))
    py = sys.executable
    producer = subprocess.Popen([py, "-m", "fibers.shadow.demo", "produce",
                                 root, "--rate", str(args.rate)])
    cmd = [py, "-m", "fibers.shadow", "--root", root, "--state-dir", state,
           "--store", "sqlite:///" + store]
    # Ctrl-C reaches the whole foreground group: fibers-shadow drains and
    # exits by itself, and this runner carries on to the summary.  (A
    # Python handler, unlike SIG_IGN, is not inherited by the children.)
    signal.signal(signal.SIGINT, lambda *_: None)
    rc = 0
    try:
        if ui:
            rc = subprocess.call(cmd)
        else:
            print(f"fibers-shadow headless for {args.seconds:g} s on {root} "
                  f"(run `make run` in a terminal for the live UI)",
                  flush=True)
            proc = subprocess.Popen(cmd + ["--no-ui"], stdout=subprocess.PIPE,
                                    text=True)
            end = time.monotonic() + args.seconds
            stopped = False
            for line in proc.stdout:
                try:
                    print(_short(json.loads(line)), flush=True)
                except (ValueError, KeyError):
                    print(line, end="", flush=True)
                if not stopped and time.monotonic() >= end:
                    producer.terminate()
                    producer.wait()
                    proc.send_signal(signal.SIGTERM)
                    stopped = True
            rc = proc.wait()
    finally:
        if producer.poll() is None:
            producer.terminate()
            producer.wait()
    print()
    print(_summary(store))
    if rc:
        print(f"fibers-shadow exited with status {rc}", file=sys.stderr)
    return rc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["produce"]:
        p = argparse.ArgumentParser(prog="fibers.shadow.demo produce")
        p.add_argument("root")
        p.add_argument("--rate", type=float, default=8.0,
                       help="mean bursts per second per user")
        p.add_argument("--seed", type=int)
        a = p.parse_args(argv[1:])
        produce(a.root, a.rate, seed=a.seed)
        return 0
    p = argparse.ArgumentParser(
        prog="fibers.shadow.demo",
        description="fibers-shadow on a demo directory with activity in it")
    p.add_argument("--dir", default=os.path.join("build", "shadow-demo"),
                   help="where the demo's files go (emptied first)")
    p.add_argument("--seconds", type=float, default=15.0,
                   help="how long a headless run lasts")
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--ui", choices=("auto", "on", "off"), default="auto")
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
