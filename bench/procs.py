"""Helpers the benchmark harnesses share for their child processes."""
import os
import select
import signal
import subprocess
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
