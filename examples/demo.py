"""`make demo`: a tour of the scheduling words, then of the I/O.

A periodic ticker, a few workers that sleep and report, signals that hand
out work, and conditions that react when enough of it is done.  Then an
echo server on loopback with a hundred client fibers, a file written
and read back through the completion pump, and a directory tree watched
with fibers.fs while another fiber changes it.  Everything runs on one OS
thread; the output shows how the fibers interleave.
"""
import os
import tempfile

import fibers
import fibers.fs
import fibers.io
import fibers.net

start = fibers.now()
done = []


def say(who, what):
    print(f"{fibers.now() - start:6.2f}s  {who:<10} {what}")


def ticker():
    say("ticker", "tick")


def worker(n):
    job = fibers.wait_signal("job")
    say(f"worker-{n}", f"got {job!r}, working for {0.1 * n:.1f}s")
    fibers.sleep(0.1 * n)
    done.append(n)
    say(f"worker-{n}", "done")
    return n * n


def main():
    tick = fibers.periodic(ticker, 0.25)
    workers = [fibers.spawn(worker, n) for n in range(1, 6)]
    fibers.yield_now()                      # let them park on the signal

    fibers.when(lambda: len(done) >= 3,
                lambda: say("when", "three workers finished"))
    # whenever fires in every tick its predicate holds, so make the
    # predicate an edge: "progress since the last report".
    reported = [0]

    def report():
        reported[0] = len(done)
        say("whenever", f"progress: {reported[0]}/5 done")
    watcher = fibers.whenever(lambda: len(done) != reported[0], report)
    fibers.on_signal(lambda v: say("on_signal", f"heard {v!r}"), "bye")

    say("main", "handing the first job to one worker")
    fibers.signal_one("job", "first")
    fibers.sleep(0.3)
    n = fibers.signal_all("job", "the rest")
    say("main", f"signal_all woke {n} workers")

    try:
        with fibers.timeout(0.2):
            fibers.wait_for(lambda: len(done) == 5)
    except fibers.Timeout:
        say("main", "not all done after 0.2s; waiting without a limit")
        fibers.wait_for(lambda: len(done) == 5)

    results = [w.join() for w in workers]
    say("main", f"results {results}")
    fibers.delay(lambda: say("delay", "one-shot timer fired"), 0.1)
    fibers.sleep(0.15)
    watcher.cancel()
    tick.cancel()
    fibers.signal_all("bye", "goodbye")
    fibers.sleep(0)
    stats = fibers.Scheduler.current().stats()
    say("main", f"{stats['spawned']} fibers ran on "
                f"{stats['workers_created']} greenlets")
    network()
    files()
    fs()


def echo(conn, addr):
    # Blocking style: each connection is one fiber.
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def client(address, n, rounds):
    with fibers.net.connect(address, timeout=5) as sock:
        for i in range(rounds):
            msg = f"client {n} message {i}".encode()
            sock.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += sock.recv(len(msg) - len(got))
            assert got == msg, (got, msg)
    return rounds


def network():
    say("net", f"completion pump: {fibers.backend()}")
    server = fibers.net.serve(("127.0.0.1", 0), echo)
    say("net", f"echo server on {server.address[0]}:{server.address[1]}")
    t0 = fibers.now()
    clients = [fibers.spawn(client, server.address, n, 100)
               for n in range(100)]
    total = sum(c.join() for c in clients)
    dt = fibers.now() - t0
    say("net", f"{len(clients)} client fibers made {total} round trips "
               f"in {dt:.2f}s ({total / dt:,.0f}/s, clients and server "
               f"on one thread)")
    server.stop(grace=1)


def files():
    path = os.path.join(tempfile.mkdtemp(), "demo.bin")
    with fibers.io.open(path, "w+b") as f:
        f.write(b"fibers " * 1000)
        f.pwrite(b"FIBERS", 7)
        f.fsync()
        say("file", f"read back {f.pread(20, 0)!r}")
    os.remove(path)
    os.rmdir(os.path.dirname(path))


def fs():
    root = tempfile.mkdtemp()
    with fibers.fs.watch(root) as w:
        say("fs", f"watching {root} with {w.backend}")

        def changer():
            os.makedirs(os.path.join(root, "a", "b"))
            with open(os.path.join(root, "a", "b", "notes.txt"), "w") as f:
                f.write("hello")
            fibers.sleep(0.05)
            os.rename(os.path.join(root, "a", "b", "notes.txt"),
                      os.path.join(root, "a", "notes.txt"))
            fibers.sleep(0.05)
            os.remove(os.path.join(root, "a", "notes.txt"))
            os.rmdir(os.path.join(root, "a", "b"))
            os.rmdir(os.path.join(root, "a"))

        fibers.spawn(changer)
        while True:
            try:
                ev = w.get(timeout=0.5)
            except fibers.Timeout:
                break
            rel = os.path.relpath(ev.path, root)
            src = f" (from {os.path.relpath(ev.src_path, root)})" \
                if ev.src_path else ""
            say("fs", f"#{ev.seq} {ev.kind:<12} {rel}{src}")
    os.rmdir(root)


if __name__ == "__main__":
    fibers.run(main)
