"""`make run`: a tour of the scheduling words.

A periodic ticker, a few workers that sleep and report, signals that hand
out work, and conditions that react when enough of it is done.  Everything
runs on one OS thread; the output shows how the fibers interleave.
"""
import fibers

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


if __name__ == "__main__":
    fibers.run(main)
