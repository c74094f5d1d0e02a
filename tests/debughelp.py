"""A program to look at, for the fiber view's tests: a real process with a
control socket (fibers.debug.serve), a few fibers parked in known places,
and, if asked, fibers.dump_on(SIGUSR1).  It says "ready" on stdout once
everything is parked, and ends on SIGTERM."""
import os
import select
import signal
import subprocess
import sys
import time

PROGRAM = r'''
import signal, sys
import fibers, fibers.debug

path, dump = sys.argv[1], sys.argv[2] == "1"

def worker(q):
    q.get()

def main():
    if dump:
        fibers.dump_on(signal.SIGUSR1)
    srv = fibers.debug.serve(path)
    q = fibers.Queue()
    for i in range(3):
        fibers.spawn(worker, q).name = f"worker-{i}"
    fibers.spawn(fibers.sleep, 3600).name = "sleeper"
    # "ready" once main is parked too: the fiber printing it is spawned
    # by the timer step, after this tick's fibers have run
    fibers.delay(lambda: print("ready", flush=True), 0)
    fibers.wait_os_signal(signal.SIGTERM)
    srv.stop(grace=0.5)     # a client's open connection may not hold it

fibers.run(main)
'''


def read_until(pipe, text, timeout):
    """Read `pipe` (a binary pipe) until `text` has appeared in what was
    read; returns that, decoded.  Fails after `timeout` seconds."""
    fd = pipe.fileno()
    got = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} did not come within {timeout} s;"
                                 f" got {got.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the pipe closed before {text!r}; "
                                     f"got {got.decode(errors='replace')!r}")
            got += chunk
    return got.decode()


class ServerProcess:
    """The program above, started; `path` is its control socket."""

    def __init__(self, tmp_path, backend, dump_on=False):
        self.path = str(tmp_path / "fibers.sock")
        script = tmp_path / "server.py"
        script.write_text(PROGRAM)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), self.path, "1" if dump_on else "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "FIBERS_BACKEND": backend})

    def __enter__(self):
        try:
            read_until(self.proc.stdout, "ready\n", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __exit__(self, *exc_info):
        self.stop()
