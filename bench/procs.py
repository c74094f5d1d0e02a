"""Helpers the benchmark harnesses share for their child processes."""
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time


def wait_ready(proc, timeout):
    """True once `proc` (stdout a pipe, in bytes) printed READY; False if it
    exited (stdout closed) or the timeout passed first."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    seen = b""
    while b"READY" not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                return False
            seen += chunk
    return True


def stop(proc, grace, group=False):
    """SIGTERM `proc` (its whole process group with `group`), then SIGKILL
    if it has not ended within `grace` seconds; True once it has ended,
    False if it survived even SIGKILL (stuck in uninterruptible I/O)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            continue
    return proc.poll() is not None


# ------------------------------------------------------------ benchmark CPUs
# Shared by the loopback harnesses (echo_run, tls_run, http_run): a server
# pinned to one CPU, its client to another, every sample's CPU use and
# run-queue wait read from /proc, and a wait for the CPUs to go quiet first.

HOST = "127.0.0.1"

# Before each measurement, wait for the benchmark's CPUs to be this idle,
# up to QUIET_WAIT_S each time and QUIET_BUDGET_S per run (then measure
# anyway; the sample gets flagged if it is contended).
QUIET_BUSY = 0.10
QUIET_WAIT_S = 10
QUIET_BUDGET_S = 120

# CPU accounting thresholds, in cores (see cpu_use()).
BUSY_WAIT = 0.05          # kept off its CPU more than this: noisy sample
SATURATED = 0.9           # a side using more CPU than this is the bottleneck
POLL_S = 0.1              # how often run_client() reads the client's threads


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    """A port the kernel just handed out on loopback.  Another process could
    grab it before the server binds; the harnesses retry once if that
    happens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_pair():
    """(server CPU, load generator CPU): CPUs 0 and 1 on this machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("warning: only one CPU available; server and load generator share it")
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


def sched_ns(pid):
    """(ns run on a CPU, ns spent runnable but waiting for one), summed over
    the process's threads, from /proc/PID/task/*/schedstat; None if gone.
    Also readable for a zombie, which is how the load generator is read."""
    run = wait = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                r, w, _ = f.read().split()
            run += int(r)
            wait += int(w)
    except (OSError, ValueError):
        return None
    return run, wait


def thread_waits(pid):
    """{tid: ns runnable but waiting for a CPU} of `pid`'s live threads."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def group_cpu_ns(pid):
    """CPU time (user + system) of `pid`'s whole thread group, ended threads
    included, from /proc/PID/stat (in clock ticks); also for a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime are fields 14 and 15; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """`pid` and every process below it (children, grandchildren...), from
    the parent field of each /proc/*/stat: multi-process servers (a
    master and its workers, a wrapper and what it execs) are one tree."""
    parent_of = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name (field 2) may hold spaces and
                # parentheses: the parent pid is the 2nd field after its ')'.
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parent_of[int(name)] = ppid
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent_of.items() if pp == p and c not in tree]
        tree.update(kids)
        todo.extend(kids)
    return tree


def tree_sched(pid):
    """{tid: (run ns, wait ns)} for every thread of `pid`'s process tree;
    two readings give the tree's use in between through sched_delta()."""
    out = {}
    for p in descendants(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    r, w, _ = f.read().split()
            except (OSError, ValueError):
                continue
            out[int(tid)] = (int(r), int(w))
    return out


def sched_delta(before, after):
    """(run ns, wait ns) the threads of `after` used since `before`; a
    thread born in between counts whole.  A thread that ended in between
    is lost (its last slice is not counted): the servers measured here do
    not churn threads or processes under load."""
    run = wait = 0
    for tid, (r, w) in after.items():
        r0, w0 = before.get(tid, (0, 0))
        run += max(0, r - r0)
        wait += max(0, w - w0)
    return run, wait


def steal_ticks(cpus):
    """Per-CPU steal time (ticks) from /proc/stat: time the hypervisor gave
    this VM's CPU to someone else, invisible to schedstat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *v = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                out[int(name[3:])] = int(v[7])
    return out


def cpu_ticks(cpus):
    """{cpu: (busy ticks, all ticks)} of the given CPUs, from /proc/stat;
    idle and iowait are not busy."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *v = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = [int(x) for x in v[:8]]
                out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def cpu_busy(cpus, interval=0.2):
    """Busiest of the given CPUs over `interval` seconds (0.0 idle .. 1.0)."""
    a = cpu_ticks(cpus)
    time.sleep(interval)
    b = cpu_ticks(cpus)
    return max(((b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in a), default=0.0)


class QuietWaiter:
    """Holds each measurement back while something else keeps the
    benchmark's CPUs busy (on this shared 2-core machine: a build, a test
    run).  Bounded per call and per run, so a machine that never goes quiet
    only costs QUIET_BUDGET_S before the harness measures regardless."""

    def __init__(self, cpus):
        self.cpus = cpus
        self.budget = QUIET_BUDGET_S
        self.waited = 0.0

    def wait(self):
        t0 = time.monotonic()
        limit = min(QUIET_WAIT_S, self.budget)
        busy = cpu_busy(self.cpus)
        while busy > QUIET_BUSY and time.monotonic() - t0 < limit:
            busy = cpu_busy(self.cpus, 0.5)
        spent = time.monotonic() - t0
        self.budget = max(0.0, self.budget - spent)
        self.waited += spent
        return busy


def cpu_use(before, after, wall):
    """{"cpu": cores used, "wait": cores' worth of time kept off the CPU}.

    "cpu" near 1.0 marks the bottleneck: when it is the load generator's,
    the req/s figure is a floor for that server, not its capacity.  "wait"
    is scheduler run-queue delay: time the process was ready to run while
    something else had its CPU.  Both CPUs are in use on a 2-core machine,
    so any other busy process shows up here (a compile next door halves
    the numbers); the report warns when it exceeds BUSY_WAIT."""
    if before is None or after is None or wall <= 0:
        return None
    return {"cpu": round((after[0] - before[0]) / 1e9 / wall, 3),
            "wait": round((after[1] - before[1]) / 1e9 / wall, 3)}


def run_client(argv, timeout, server_pid, cpus, tree=False, cwd=None):
    """Run a load generator (`argv`, already pinned by the caller) to its
    end, within `timeout` seconds, accounting CPU on both sides.

    Returns (returncode, stdout, stderr, acct) with acct holding
    "server_sched" and "loadgen_sched" (cpu_use() of each over the client's
    lifetime), "steal" (the worst of `cpus`, in cores), "wall" and, with
    `tree`, "server_cpu_s": CPU seconds of the server's whole process tree
    and "others": cores' worth of time anything else ran on `cpus`.
    Raises RuntimeError on a timeout (the client is killed)."""
    if tree:
        srv0 = tree_sched(server_pid)
    else:
        srv0 = sched_ns(server_pid)
    steal0, busy0 = steal_ticks(cpus), cpu_ticks(cpus)
    t0 = time.monotonic()
    # The client's output is at most a few kilobytes, far below a pipe's
    # capacity, so it can be read after exit without deadlock.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    # taskset execs the client, so proc.pid is the client.  Wait for its
    # exit on a pidfd without reaping it, so that its figures can still be
    # read; then reap.  A zombie's other threads are gone from /proc (a
    # multi-threaded client such as wrk loses its worker's schedstat), so
    # its threads' run-queue wait is also read every POLL_S while it runs,
    # and its CPU time comes from the zombie's /proc/PID/stat, which keeps
    # the whole thread group's.
    pidfd = os.pidfd_open(proc.pid)
    waits = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            exited, _, _ = select.select([pidfd], [], [], max(0.0, min(POLL_S, left)))
            waits.update(thread_waits(proc.pid))
            if exited or left <= 0:
                break
    finally:
        os.close(pidfd)
    if not exited:
        proc.kill()
        proc.communicate(timeout=5)
        raise RuntimeError("load generator timed out")
    wall = time.monotonic() - t0
    cpu_ns = group_cpu_ns(proc.pid)
    gen = None if cpu_ns is None else (cpu_ns, sum(waits.values()))
    if tree:
        srv = sched_delta(srv0, tree_sched(server_pid))
        srv0 = (0, 0)
    else:
        srv = sched_ns(server_pid)
    steal1, busy1 = steal_ticks(cpus), cpu_ticks(cpus)
    stdout, stderr = proc.communicate(timeout=5)
    tick = os.sysconf("SC_CLK_TCK")
    busy_s = sum(busy1[c][0] - busy0[c][0] for c in busy0 if c in busy1) / tick
    acct = {
        "wall": wall,
        "server_sched": cpu_use(srv0, srv, wall),
        "loadgen_sched": cpu_use((0, 0), gen, wall),
        "steal": max(((steal1.get(c, 0) - steal0.get(c, 0)) / tick / wall for c in steal0),
                     default=0.0),
    }
    if tree:
        acct["server_cpu_s"] = srv[0] / 1e9
        # What else ran on the benchmark's CPUs: their busy time less the
        # server's and the client's.  A server with several threads on one
        # CPU (waitress, granian) queues behind itself, so its run-queue
        # wait says nothing about other processes; this does.
        if gen is not None:
            acct["others"] = round(max(0.0, busy_s - (srv[0] + gen[0]) / 1e9) / wall, 3)
    return proc.returncode, stdout, stderr, acct


class ServerProcess:
    """One server process in its own process group (start_new_session), so
    stopping it also stops anything it spawned (workers, a wrapper's
    child).  Its stderr goes to a file, not a pipe: nobody reads it during
    the measurement, and a full pipe would block the server.  stdout is a
    pipe when the harness reads a READY line from it (`stdout_pipe`),
    otherwise the same file."""

    def __init__(self, argv, env, cwd, stdout_pipe=True):
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self.errfile,
            stderr=self.errfile, cwd=cwd, env=env, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, limit=2000):
        self.errfile.seek(0)
        text = self.errfile.read().decode(errors="replace").strip()
        return text[-limit:]

    def stderr_last_line(self):
        """The line that says what went wrong (a traceback's last line)."""
        lines = self.stderr_tail().splitlines()
        return lines[-1].strip() if lines else "(no stderr)"

    def stop(self, grace):
        if not stop(self.proc, grace, group=True):
            log(f"warning: server pid {self.proc.pid} survived SIGKILL")
        if self.proc.stdout:
            self.proc.stdout.close()
        self.errfile.close()
