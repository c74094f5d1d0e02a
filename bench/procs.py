"""Helpers the benchmark harnesses share for their child processes."""
import os
import select
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
