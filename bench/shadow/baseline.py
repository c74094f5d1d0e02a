"""The threaded baseline of `make bench-shadow`: the fibers-shadow pipeline
written the obvious way.

watchdog's observer thread puts each event on a queue.Queue; one worker
thread takes them in batches (up to BATCH events, or what arrived within
50 ms) and inserts them into PostgreSQL with plain psycopg, ON CONFLICT DO
NOTHING on (host, source, seq), committing each batch.  No journal, no
coalescing: it is the lighter design, so the comparison flatters it.

    python -m bench.shadow.baseline ROOT CONNINFO HOST SOURCE

Prints READY once watching; stops on SIGTERM after draining the queue, and
prints its CPU seconds (all threads) as JSON.
"""
import json
import os
import queue
import resource
import signal
import sys
import threading
import time

import psycopg
from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
                             FileCreatedEvent, FileDeletedEvent,
                             FileMovedEvent, FileSystemEventHandler)
from watchdog.observers.inotify import InotifyObserver

BATCH = 1000
KINDS = {FileCreatedEvent: "created", DirCreatedEvent: "created",
         FileDeletedEvent: "deleted", DirDeletedEvent: "deleted",
         FileMovedEvent: "moved", DirMovedEvent: "moved"}
INSERT = ("INSERT INTO events (host, source, seq, kind, path, src_path, "
          "is_dir, time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
          "ON CONFLICT DO NOTHING")


class Handler(FileSystemEventHandler):
    def __init__(self, q):
        self.q = q

    def on_any_event(self, ev):
        kind = KINDS.get(type(ev))
        if kind is None:
            return
        if kind == "moved":
            self.q.put((kind, ev.dest_path, ev.src_path, ev.is_directory,
                        time.time()))
        else:
            self.q.put((kind, ev.src_path, None, ev.is_directory,
                        time.time()))


def ship(q, conninfo, host, source, stop):
    conn = psycopg.connect(conninfo)
    # As fibers-shadow's store does: a commit is a confirmation only once
    # it is durable on the server's terms.
    conn.execute("SET synchronous_commit TO on")
    conn.commit()
    seq = 0
    while True:
        batch = []
        deadline = time.monotonic() + 0.05
        while len(batch) < BATCH:
            try:
                batch.append(q.get(timeout=max(0.0, deadline -
                                               time.monotonic())))
            except queue.Empty:
                break
        if not batch:
            if stop.is_set():
                break
            continue
        rows = []
        for kind, path, src, is_dir, t in batch:
            seq += 1
            rows.append((host, source, seq, kind, path, src, is_dir, t))
        with conn.cursor() as cur:
            cur.executemany(INSERT, rows)
        conn.commit()
    conn.close()


def main():
    root, conninfo, host, source = sys.argv[1:5]
    q = queue.Queue()
    stop = threading.Event()
    obs = InotifyObserver()
    obs.schedule(Handler(q), root, recursive=True)
    obs.start()
    worker = threading.Thread(target=ship,
                              args=(q, conninfo, host, source, stop))
    worker.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    print("READY", flush=True)
    done.wait(600)
    obs.stop()
    obs.join(10)
    stop.set()
    worker.join(60)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
