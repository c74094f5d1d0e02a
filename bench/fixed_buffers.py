"""Registered heaps: reads into blobs of a registered fibers.Heap use
io_uring's fixed-buffer operations (READ_FIXED), which skip pinning and
unpinning the pages on every call.  This measures what that buys.

    python -m bench.fixed_buffers [--rounds 5] [--mib 256] [--chunk 65536]

One fiber reads a file (in the page cache after a warm-up pass) with
File.preadinto, chunk by chunk, into:

  bytearray   an ordinary Python buffer
  blob        a blob of a plain Heap
  registered  a blob of a Heap(register=True): the fixed-buffer path

Rounds are interleaved; the table shows medians in GiB/s and the ratio of
each to bytearray.  Results go to bench/results/fixed-<timestamp>.json.
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import fibers
import fibers.io

KINDS = ("bytearray", "blob", "registered")


def make_buffer(kind, chunk):
    if kind == "bytearray":
        return None, bytearray(chunk)
    heap = fibers.Heap(initial_size=4 * chunk, max_size=4 * chunk,
                       register=(kind == "registered"))
    return heap, heap.alloc(chunk)


def read_all(path, buf, size, chunk):
    def main():
        done = 0
        with fibers.io.open(path, "rb") as f:
            while done < size:
                n = f.preadinto(buf, done)
                if n <= 0:
                    break
                done += n
        return done

    sched = fibers.Scheduler(backend="io_uring")
    try:
        t0 = time.perf_counter()
        got = sched.run(main)
        dt = time.perf_counter() - t0
        fixed = sched.stats()["fixed_ops"]
    finally:
        sched.close()
    assert got == size, (got, size)
    return dt, fixed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=65536)
    args = ap.parse_args(argv)
    if fibers.backends()["io_uring"] is not None:
        raise SystemExit(f"io_uring unavailable: {fibers.backends()['io_uring']}")
    size = args.mib << 20
    fd, path = tempfile.mkstemp(prefix="fibers-fixed-")
    try:
        block = os.urandom(1 << 20)
        for _ in range(args.mib):
            os.write(fd, block)
        os.close(fd)
        samples = {k: [] for k in KINDS}
        fixed_counts = {}
        for kind in KINDS:                     # warm the page cache
            heap, buf = make_buffer(kind, args.chunk)
            read_all(path, buf, size, args.chunk)
        for r in range(args.rounds):
            for kind in KINDS:
                heap, buf = make_buffer(kind, args.chunk)
                dt, fixed = read_all(path, buf, size, args.chunk)
                samples[kind].append(size / dt / (1 << 30))
                fixed_counts[kind] = fixed
                print(f"round {r + 1} {kind:>10}: {samples[kind][-1]:.2f} GiB/s"
                      f" ({fixed} fixed-buffer reads)", flush=True)
        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"\n{args.mib} MiB in {args.chunk} B preadinto calls, "
              f"median of {args.rounds} rounds")
        print("| buffer | GiB/s | vs bytearray | fixed-buffer reads |")
        print("|---|---|---|---|")
        for k in KINDS:
            print(f"| {k} | {med[k]:.2f} | {med[k] / med['bytearray']:.2f}x "
                  f"| {fixed_counts[k]} |")
        os.makedirs(os.path.join(os.path.dirname(__file__), "results"),
                    exist_ok=True)
        out = os.path.join(os.path.dirname(__file__), "results",
                           time.strftime("fixed-%Y%m%d-%H%M%S.json"))
        with open(out, "w") as f:
            json.dump({"mib": args.mib, "chunk": args.chunk,
                       "samples": samples, "medians": med,
                       "fixed_reads": fixed_counts}, f, indent=1)
        print(f"saved {out}")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
