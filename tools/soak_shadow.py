"""`make soak-shadow`: fibers-shadow SIGKILLed over and over while a writer
keeps changing the tree; afterwards, does the store tell the tree's story
exactly once?

    python -m tools.soak_shadow [--kills 20] [--fs-backend inotify|fanotify|both]
                                [--store sqlite|postgresql|both] [--seed 1]
                                [--ops 100000] [--rate 200] [--files 3000]
                                [--bad-names 0.1] [--keep]
    (from the repository's root)

Design.  fibers-shadow promises that every file-system event reaches the
store once, whatever happens to the process.  This harness checks that
promise from outside: it knows the program only by its command line
(``python -m fibers.shadow``, ``ctl status``) and the store only by its
``events`` table, so it judges any version of the program the same way.

1. The program's first start, on an empty root, sees a tree of a few
   thousand files made (so that later start-up scans take a while; made
   while it runs, so that the store holds their creation too), and a clean
   SIGTERM.  Then a writer in a child process of its own: seeded random
   creates (some names not valid UTF-8), appends, deletes, file renames
   (also over an existing file), nested mkdirs, ``rm -r`` of directories
   with contents, directory renames, re-creation of deleted names.  It runs
   at a fixed rate for the whole soak, also while the program is down:
   what changes then must be found by the start-up scan.
2. The killer starts the program on the same state directory and store
   each time, and SIGKILLs it at one of three sorts of moment, in turn:
   ``mid`` (running, with the writer busy), ``startup`` (a few hundred ms
   after the start: during the start-up scan) and ``drain`` (SIGTERM, then
   SIGKILL 2 to 120 ms later: during the shutdown drain; a drain that
   ends first counts as a clean stop, and the rounds go on until the
   number of kills asked for have landed).
   While it is down, it often deletes files the store already holds as
   created (the field report: deletions made while down never reached the
   store).
3. At the end the writer stops, the program starts once more, a marker
   file is made, and the harness waits (bounded) until the marker's
   ``created`` row is stored and ``ctl status`` shows an empty journal;
   then SIGTERM, which must exit 0.
4. The replay check: the rows, in seq order, applied to a model of the tree
   (path -> is a directory).  A ``created`` of a path the model holds is a
   DUPLICATE; a ``deleted`` of one it does not hold is SPURIOUS; a
   ``moved`` from an unknown path and a change (modified, closed_write,
   attrib) of one are counted too.  The model is then compared with the
   real tree: a real path the model lacks (or holds with the wrong type)
   is LOST; a path of the model that does not exist is a GHOST.  seq must
   run 1..N without gaps, each (host, source, seq) once.

The result is a table of figures, one column per (fs backend, store); the
exit status is 1 if any run has anything lost, ghost, duplicated,
spurious, a move from an unknown path, a seq gap or duplicate, or a final
sync or exit that failed.  Every wait is bounded: a program that hangs on
SIGTERM is reported, then SIGKILLed.

The writer is this module too: ``python -m tools.soak_shadow writer ROOT ...``.
Importable: ``soak(base, fs_backend, ...)`` runs one soak and returns its
``Result`` (tests/test_shadow_crash.py).
"""
import argparse
import collections
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from tools.shadowproc import Shadow, is_pg, poll, store_rows

# The repository's root: the writer runs as `python -m tools.soak_shadow`
# there, as `make soak-shadow` runs the harness.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SORTS = ("mid", "startup", "drain")
# Not a kill: SIGTERM and a clean exit.  A control run of only these shows
# that the harness itself counts nothing where nothing went wrong.
CLEAN = "clean"
READY_TIMEOUT = 60.0        # start until `ctl status` answers
FINAL_TIMEOUT = 180.0       # the last start's catch-up
STALL_TIMEOUT = 30.0        # ... or nothing new in the store or journal
TERM_TIMEOUT = 30.0         # SIGTERM until exit
WRITER_STOP_TIMEOUT = 15.0
BAD_NAME = b"bad-\xff\xfe-%d"


# ---- the writer (a child process) ---------------------------------------------

class Writer:
    """Seeded random changes under `root` (bytes).  It keeps no picture of
    the tree: every target is found by a random walk through the real tree,
    so changes made by others (the killer's deletions) are no surprise,
    and an operation whose target vanished meanwhile is just a miss."""

    WEIGHTS = {"create": 30, "append": 15, "delete": 12, "rename": 10,
               "rename_over": 2, "mkdir": 6, "rmtree": 2, "rename_dir": 3,
               "recreate": 5}
    RMTREE_MAX = 60         # entries: rm -r takes small directories only

    def __init__(self, root, rng, bad_names):
        self.root = root
        self.rng = rng
        self.bad = bad_names
        self.n = 0
        self.deleted = collections.deque(maxlen=64)
        self.counts = collections.Counter()
        self.ops = list(self.WEIGHTS)
        self.weights = [self.WEIGHTS[k] for k in self.ops]

    def name(self, prefix):
        self.n += 1
        if self.rng.random() < self.bad:
            return BAD_NAME % self.n
        return b"%s%d" % (prefix, self.n)

    def rand_dir(self, stop=0.35):
        d = self.root
        for _ in range(8):
            if self.rng.random() < stop:
                break
            try:
                subs = [e.path for e in os.scandir(d)
                        if e.is_dir(follow_symlinks=False)]
            except OSError:
                break
            if not subs:
                break
            d = self.rng.choice(subs)
        return d

    def rand_file(self):
        for _ in range(5):
            try:
                files = [e.path for e in os.scandir(self.rand_dir())
                         if e.is_file(follow_symlinks=False)]
            except OSError:
                continue
            if files:
                return self.rng.choice(files)
        raise FileNotFoundError("no file found")

    def rand_subdir(self):
        for _ in range(5):
            d = self.rand_dir(stop=0.2)
            if d != self.root:
                return d
        raise FileNotFoundError("no directory found")

    def _fill(self, path):
        with open(path, "xb") as f:
            f.write(os.urandom(self.rng.randrange(0, 2048)))

    def step(self):
        op = self.rng.choices(self.ops, self.weights)[0]
        try:
            getattr(self, "op_" + op)()
            self.counts[op] += 1
        except OSError:
            self.counts["missed"] += 1

    def op_create(self):
        self._fill(os.path.join(self.rand_dir(), self.name(b"f")))

    def op_append(self):
        with open(self.rand_file(), "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(b"more\n" * self.rng.randrange(1, 20))

    def op_delete(self):
        p = self.rand_file()
        os.unlink(p)
        self.deleted.append(p)

    def op_rename(self):
        os.rename(self.rand_file(),
                  os.path.join(self.rand_dir(), self.name(b"r")))

    def op_rename_over(self):
        src, dst = self.rand_file(), self.rand_file()
        if src != dst:
            os.rename(src, dst)

    def op_mkdir(self):
        d = self.rand_dir()
        for _ in range(self.rng.randrange(1, 4)):
            d = os.path.join(d, self.name(b"d"))
            os.mkdir(d)
        # files made at once in a new directory: the watch on it may not
        # be in place yet
        for _ in range(self.rng.randrange(0, 6)):
            self._fill(os.path.join(d, self.name(b"f")))

    def op_rmtree(self):
        d = self.rand_subdir()
        n = 0
        for _, dirs, files in os.walk(d):
            n += len(dirs) + len(files)
            if n > self.RMTREE_MAX:
                raise FileNotFoundError("too big to remove")
        shutil.rmtree(d)

    def op_rename_dir(self):
        src = self.rand_subdir()
        parent = self.rand_dir()
        if parent == src or parent.startswith(src + b"/"):
            raise FileNotFoundError("into itself")
        os.rename(src, os.path.join(parent, self.name(b"m")))

    def op_recreate(self):
        if not self.deleted:
            raise FileNotFoundError("nothing deleted yet")
        self._fill(self.deleted.popleft())


def writer_main(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.soak_shadow writer")
    ap.add_argument("root")
    ap.add_argument("--sorts", default=",".join(SORTS),
                    help="the sorts of kill, taken in turn (default "
                         "%(default)s; 'clean' is a SIGTERM and a clean "
                         "exit, for a control run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--bad-names", type=float, default=0.1)
    a = ap.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    w = Writer(os.fsencode(a.root), random.Random(a.seed), a.bad_names)
    t0 = time.monotonic()
    for i in range(a.ops):
        if stopping or time.monotonic() - t0 > a.seconds:
            break
        w.step()
        delay = t0 + (i + 1) / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps(dict(w.counts)), flush=True)
    return 0


def populate(root, files, rng):
    """A start-up tree: `files` files in directories of about 50, two
    levels deep."""
    root = os.fsencode(root)
    for i in range(files):
        d = os.path.join(root, b"pre%d" % (i // 500), b"p%d" % (i // 50))
        if i % 50 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, b"pre-%d" % i), "wb") as f:
            f.write(b"x" * rng.randrange(0, 256))


# ---- the replay check ---------------------------------------------------------

class Replay:
    """The store's rows applied to a model of the tree (path -> is_dir),
    counting every row the model contradicts."""

    def __init__(self):
        self.model = {}
        self.counts = collections.Counter()
        self.examples = collections.defaultdict(list)

    def _note(self, what, path):
        self.counts[what] += 1
        if len(self.examples[what]) < 5:
            self.examples[what].append(path)

    def _drop(self, path):
        """Remove path and everything under it."""
        if self.model.pop(path, None):
            pre = path + b"/"
            for p in [p for p in self.model if p.startswith(pre)]:
                del self.model[p]

    def apply(self, kind, path, src, is_dir):
        m = self.model
        if kind == "created":
            if path in m:
                self._note("duplicated", path)
            m[path] = is_dir
        elif kind == "deleted":
            if path not in m:
                self._note("spurious", path)
            self._drop(path)
        elif kind == "moved":
            if src not in m:
                self._note("moved_unknown", src)
            self._drop(path)            # a rename replaces its target
            was_dir = m.pop(src, is_dir)
            m[path] = is_dir
            if was_dir or is_dir:
                pre = src + b"/"
                for p in [p for p in m if p.startswith(pre)]:
                    m[path + p[len(src):]] = m.pop(p)
        else:                           # modified, closed_write, attrib
            if path not in m:
                self._note("changed_unknown", path)

    def compare(self, root):
        """LOST and GHOST against the real tree under `root`."""
        real = {}
        for dirpath, dirs, files in os.walk(os.fsencode(root)):
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                try:
                    real[p] = stat.S_ISDIR(os.lstat(p).st_mode)
                except FileNotFoundError:
                    pass
        for p, d in sorted(real.items()):
            if self.model.get(p, not d) != d:
                self._note("lost", p)
        for p in sorted(self.model):
            if p not in real:
                self._note("ghost", p)


def check_seq(rows):
    """(sources, gaps, duplicates): seq must run 1..N per (host, source),
    each once."""
    by = collections.defaultdict(list)
    for h, s, q, *_ in rows:
        by[(h, s)].append(q)
    gaps = dups = 0
    for seqs in by.values():
        dups += len(seqs) - len(set(seqs))
        gaps += len(set(range(1, max(seqs) + 1)) - set(seqs))
    return len(by), gaps, dups


# ---- one soak -----------------------------------------------------------------

# The figures that must be 0, in the table's order.
FAILURES = ("lost", "ghost", "duplicated", "spurious", "moved_unknown",
            "seq_gaps", "seq_dups")
LABELS = {
    "kills": "kills (mid/startup/drain)", "writer_ops": "writer operations",
    "down_deleted": "deleted while down", "events": "events stored",
    "lost": "LOST", "ghost": "GHOST", "duplicated": "duplicated creations",
    "spurious": "spurious deletions", "moved_unknown": "moves from unknown",
    "changed_unknown": "changes of unknown", "seq_gaps": "seq gaps",
    "seq_dups": "seq duplicates", "sources": "sources",
    "final": "final sync, exit"}


class Result:
    def __init__(self, name):
        self.name = name
        self.kills = collections.Counter()
        self.figures = collections.Counter()
        self.problems = []          # what went wrong besides the figures
        self.examples = {}
        self.final = "-"

    def failed(self):
        return {k: self.figures[k] for k in FAILURES if self.figures[k]}

    @property
    def ok(self):
        return not self.failed() and not self.problems

    def cell(self, key):
        if key == "kills":
            landed = sum(n for k, n in self.kills.items() if k != CLEAN)
            return (f"{landed} ({self.kills['mid']}/"
                    f"{self.kills['startup']}/{self.kills['drain']})"
                    + (f" +{self.kills[CLEAN]} clean" if self.kills[CLEAN]
                       else ""))
        if key == "final":
            return self.final
        return str(self.figures[key])

    def __repr__(self):
        return (f"Result({self.name}: {dict(self.figures)}, kills "
                f"{dict(self.kills)}, final {self.final}, problems "
                f"{self.problems}, examples {self.examples})")


def _store_model(target):
    r = Replay()
    for _, _, _, k, p, sp, d in store_rows(target):
        r.apply(k, p, sp, d)
    return r.model


def _start(sh, res):
    """Start the program; seconds until `ctl status` answered, or None
    (it died or did not come up: a problem, reported)."""
    t0 = time.monotonic()
    sh.start(wait=False)
    try:
        poll(sh.try_status, "the control socket", READY_TIMEOUT, 0.02)
    except AssertionError as e:
        res.problems.append(f"run {sh.runs}: {str(e)[:300]}")
        sh.kill()
        return None
    return time.monotonic() - t0


def _alive_or_report(sh, res, when):
    if sh.proc.poll() is not None:
        res.problems.append(f"run {sh.runs}: exited {sh.proc.returncode} "
                            f"by itself {when}: {sh.stderr()[-300:]}")
        return False
    return True


def soak(base, fs_backend, store_url=None, kills=20, seed=1, ops=100_000,
         rate=200.0, files=3000, bad_names=0.1, sorts=None, log=None):
    """One soak under the directory `base` (made if absent): `kills` kills
    (of `sorts`, in turn: default all three), then the final sync and the
    replay check.  `store_url` None is a SQLite store in `base`.  Returns a
    Result."""
    log = log or (lambda msg: None)
    rng = random.Random(seed)
    name = f"{fs_backend}/{'postgresql' if store_url else 'sqlite'}"
    res = Result(name)
    os.makedirs(base, exist_ok=True)
    sh = Shadow(base, fs_backend, store_url)
    target = sh.store_target()
    # The store must tell the whole story, the first files included: the
    # tree is made while the program runs (a tree that is there at the
    # very first start is taken as it is, and never reported).
    if _start(sh, res) is None:
        res.final = "did not start"
        return res
    populate(sh.root, files, rng)
    if not _sync(sh, res, target, log, "set-up"):
        sh.close()
        _check(sh, res, target)
        return res
    wlog = open(os.path.join(base, "writer.out"), "w")
    writer = subprocess.Popen(
        [sys.executable, "-m", "tools.soak_shadow", "writer", sh.root,
         "--seed", str(seed), "--ops", str(ops), "--rate", str(rate),
         "--bad-names", str(bad_names)], cwd=REPO, stdout=wlog,
        stderr=subprocess.STDOUT)
    sorts = list(sorts or SORTS)
    # A drain that ends before its SIGKILL is a clean stop, not a kill:
    # go on (bounded) until `kills` kills have landed.
    order = [sorts[i % len(sorts)] for i in range(2 * kills)]
    ready = 1.0                 # seconds to come up; measured below
    try:
        for i, sort in enumerate(order):
            if sum(n for k, n in res.kills.items() if k != CLEAN) >= kills:
                break
            t0 = time.monotonic()
            if sort == "startup":
                sh.start(wait=False)
                # within the first few hundred ms, or within the time it
                # takes to come up if that is longer
                delay = rng.uniform(0.05, max(0.4, ready))
                time.sleep(delay)
                if not _alive_or_report(sh, res, "during start-up"):
                    sh.kill()
                    continue
                sh.kill()
                what = f"SIGKILL {delay * 1000:.0f} ms after the start"
            else:
                took = _start(sh, res)
                if took is None:
                    continue
                ready = took
                time.sleep(rng.uniform(0.3, 2.5))
                if not _alive_or_report(sh, res, "while running"):
                    sh.kill()
                    continue
                if sort == CLEAN:
                    rc = sh.terminate(TERM_TIMEOUT)
                    what = f"SIGTERM: exit {rc}"
                    if rc != 0:
                        res.problems.append(f"run {sh.runs}: SIGTERM exit "
                                            f"{rc}: {sh.stderr()[-300:]}")
                elif sort == "drain":
                    sh.proc.send_signal(signal.SIGTERM)
                    delay = rng.uniform(0.002, 0.12)
                    try:
                        rc = sh.proc.wait(timeout=delay)
                        what = f"SIGTERM: exited {rc} within {delay * 1000:.0f} ms"
                        sort = CLEAN
                        if rc != 0:
                            res.problems.append(f"run {sh.runs}: SIGTERM "
                                                f"exit {rc}: "
                                                f"{sh.stderr()[-300:]}")
                    except subprocess.TimeoutExpired:
                        what = f"SIGTERM, SIGKILL {delay * 1000:.0f} ms later"
                    sh.kill()
                else:
                    sh.kill()
                    what = (f"SIGKILL after {time.monotonic() - t0:.1f} s "
                            f"(came up in {took:.2f} s)")
            res.kills[sort] += 1
            # while down: the writer goes on; and often some files the
            # store holds as created are deleted (the field report)
            extra = ""
            if rng.random() < 0.6:
                model = _store_model(target)
                shipped = [p for p, d in model.items() if not d
                           and os.path.isfile(p) and not os.path.islink(p)]
                n = 0
                for p in rng.sample(shipped, min(20, len(shipped))):
                    try:
                        os.unlink(p)
                        n += 1
                    except OSError:
                        pass
                res.figures["down_deleted"] += n
                extra = f"; deleted {n} shipped files while down"
            time.sleep(rng.uniform(0.0, 0.5))
            log(f"  [{name}] round {i + 1} {sort}: {what}{extra}")
        # the end: the writer stops; one more start catches up
        writer.send_signal(signal.SIGTERM)
        try:
            writer.wait(WRITER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            res.problems.append("the writer did not stop on SIGTERM")
            writer.kill()
            writer.wait(10)
        if writer.returncode != 0:
            res.problems.append(f"the writer exited {writer.returncode} "
                                f"(see {base}/writer.out)")
        _final(sh, res, target, log)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        wlog.close()
        sh.close()
    with open(os.path.join(base, "writer.out")) as f:
        for line in f:              # its last line: ops done, by kind
            try:
                done = json.loads(line)
            except ValueError:
                continue
            res.figures["writer_ops"] = sum(
                v for k, v in done.items() if k != "missed")
    _check(sh, res, target)
    return res


def _final(sh, res, target, log):
    if _start(sh, res) is None:
        res.final = "did not start"
        return
    _sync(sh, res, target, log, "final")


def _sync(sh, res, target, log, what):
    """Make a marker file, wait until the store holds it and the journal
    is empty, then SIGTERM (exit 0 expected).  True if all went well."""
    mark = os.path.join(os.fsencode(sh.root), b"soak-%s-mark" % what.encode())
    open(mark, "wb").close()
    t0 = time.monotonic()
    last = {"progress": None, "at": t0}

    def caught_up():
        st = sh.try_status()
        rows = store_rows(target)
        if st and st["journal"]["depth"] == 0 and any(
                k == "created" and p == mark for _, _, _, k, p, _, _ in rows):
            return True
        # a program that has stopped making progress is not waited for
        # until the deadline
        now = time.monotonic()
        progress = (len(rows), st and st["journal"]["last_seq"],
                 st and st["journal"]["depth"])
        if progress != last["progress"]:
            last.update(progress=progress, at=now)
        elif now - last["at"] > STALL_TIMEOUT:
            raise AssertionError(f"no progress for {STALL_TIMEOUT:.0f} s")
        return False
    try:
        poll(caught_up, "the marker in the store and an empty journal",
             FINAL_TIMEOUT, 0.2)
        synced = f"synced in {time.monotonic() - t0:.1f} s"
    except AssertionError as e:
        try:
            depth = sh.try_status()["journal"]["depth"]
        except (AssertionError, TypeError):
            depth = "?"
        res.problems.append(f"{what} sync: {e} (journal depth {depth})")
        synced = "NO SYNC"
    log(f"  [{res.name}] {what} start: {synced}")
    rc = sh.terminate(TERM_TIMEOUT)
    ok = synced != "NO SYNC"
    if rc is None:
        res.problems.append(f"the {what} SIGTERM: no exit within "
                            f"{TERM_TIMEOUT:.0f} s (SIGKILLed)")
        res.final = f"{what}: {synced}, hung"
        return False
    if rc != 0:
        res.problems.append(f"the {what} SIGTERM: exit {rc}: "
                            f"{sh.stderr()[-300:]}")
    res.final = f"{'ok' if ok else what + ': NO SYNC'}, {rc}"
    return ok and rc == 0


def _check(sh, res, target):
    rows = store_rows(target)
    res.figures["events"] = len(rows)
    if rows:
        n_src, gaps, dups = check_seq(rows)
        res.figures["sources"] = n_src
        res.figures["seq_gaps"] = gaps
        res.figures["seq_dups"] = dups
        if n_src != 1:
            res.problems.append(f"{n_src} sources in the store, not 1")
    r = Replay()
    for _, _, _, k, p, sp, d in rows:
        r.apply(k, p, sp, d)
    r.compare(sh.root)
    for k, v in r.counts.items():
        res.figures[k] = v
    root = os.fsencode(sh.root)
    res.examples = {k: [os.path.relpath(p, root) for p in v]
                    for k, v in r.examples.items()}


# ---- the command --------------------------------------------------------------

def table(results):
    w0 = max(len(v) for v in LABELS.values())
    cols = [max(len(r.name), *(len(r.cell(k)) for k in LABELS))
            for r in results]
    lines = ["  ".join([" " * w0] + [r.name.rjust(c)
                                     for r, c in zip(results, cols)])]
    for k, label in LABELS.items():
        lines.append("  ".join([label.ljust(w0)] +
                               [r.cell(k).rjust(c)
                                for r, c in zip(results, cols)]))
    return "\n".join(lines)


def _fresh_db(server, name):
    import psycopg
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["writer"]:
        return writer_main(argv[1:])
    ap = argparse.ArgumentParser(
        description="fibers-shadow killed over and over; the store "
                    "checked against the tree.")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--fs-backend", choices=("inotify", "fanotify", "both"),
                    default="both")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "both"),
                    default="sqlite")
    ap.add_argument("--sorts", default=",".join(SORTS),
                    help="the sorts of kill, taken in turn (default "
                         "%(default)s; 'clean' is a SIGTERM and a clean "
                         "exit, for a control run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=100_000,
                    help="the writer's operations at most (default "
                         "%(default)s; it stops at the end anyway)")
    ap.add_argument("--rate", type=float, default=200.0,
                    help="the writer's operations per second")
    ap.add_argument("--files", type=int, default=3000,
                    help="files in the tree before the first start")
    ap.add_argument("--bad-names", type=float, default=0.1,
                    help="fraction of new names that are not UTF-8")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp directories for inspection")
    a = ap.parse_args(argv)
    sorts = a.sorts.split(",")
    for s in sorts:
        if s not in SORTS + (CLEAN,):
            ap.error(f"unknown sort of kill {s!r}")

    import fibers.fs
    avail = fibers.fs.backends()
    fs_list = ["inotify", "fanotify"] if a.fs_backend == "both" \
        else [a.fs_backend]
    stores = ["sqlite", "postgresql"] if a.store == "both" else [a.store]
    tmp = tempfile.mkdtemp(prefix="soak-shadow-")
    server = None
    results, errors = [], []
    try:
        if "postgresql" in stores:
            from tools.pgcluster import PgServer, PgUnavailable
            try:
                server = PgServer()
                server.start()
            except PgUnavailable as e:
                errors.append(f"no PostgreSQL server: {e}")
                stores.remove("postgresql")
        for fs in fs_list:
            if avail[fs] is not None:
                print(f"soak: fs backend {fs} cannot run here: {avail[fs]}; "
                      f"skipped", flush=True)
                continue
            for st in stores:
                base = os.path.join(tmp, f"{fs}-{st}")
                url = (_fresh_db(server, f"soak_{fs}") if st == "postgresql"
                       else None)
                print(f"soak: {fs} -> {st}, {a.kills} kills, seed "
                      f"{a.seed}, in {base}", flush=True)
                r = soak(base, fs, url, kills=a.kills, seed=a.seed,
                         ops=a.ops, rate=a.rate, files=a.files,
                         bad_names=a.bad_names, sorts=sorts,
                         log=lambda m: print(m, flush=True))
                results.append(r)
    except KeyboardInterrupt:
        errors.append("interrupted")
    finally:
        if server is not None:
            server.stop()
        if a.keep:
            print(f"soak: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if results:
        print()
        print(table(results))
    for r in results:
        for p in r.problems:
            print(f"{r.name}: {p}")
        for k, ex in sorted(r.examples.items()):
            print(f"{r.name}: {k}, e.g. "
                  + ", ".join(repr(p) for p in ex))
    for e in errors:
        print(f"soak: {e}", file=sys.stderr)
    bad = [r.name for r in results if not r.ok]
    print(f"\nsoak: {'FAILED: ' + ', '.join(bad) if bad else 'all runs clean'}"
          if results else "soak: nothing ran")
    return 1 if bad or errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
