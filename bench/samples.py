"""Samples, medians and tables, shared by the loopback harnesses.

A sample is a dict: "rps" (None when the sample failed, with "error"
saying why), and the CPU accounting of bench.procs.run_client():
"server_sched" and "loadgen_sched" ({"cpu", "wait"} in cores) and
"steal".  A cell's figure is the median of its usable samples.
"""
import statistics

from bench.procs import BUSY_WAIT


def csv_list(text, cast=str):
    return [cast(x) for x in text.split(",") if x.strip()]


def sample_wait(x):
    """Worst time lost to others in one sample (run-queue wait of either
    side, or hypervisor steal on their CPUs), or None if not measured.
    Where the sample measured "others" (bench.procs.run_client(tree=True):
    other processes' time on the benchmark's CPUs), that stands for the
    server's wait, which counts its own threads queueing behind each other."""
    sides = ("loadgen_sched",) if "others" in x else ("server_sched", "loadgen_sched")
    w = [x[k]["wait"] for k in sides if x.get(k)]
    if "others" in x:
        w.append(x["others"])
    if "steal" in x:
        w.append(x["steal"])
    return max(w) if w else None


def is_noisy(x):
    w = sample_wait(x)
    return w is not None and w > BUSY_WAIT


def usable(samples):
    """The samples a cell's figures come from: those without errors and,
    when there are any, those where neither side waited for its CPU.
    Contention only ever lowers req/s, so a noisy sample is no evidence
    about the server; it counts only if nothing better exists."""
    good = [x for x in samples if x["rps"] is not None]
    return [x for x in good if not is_noisy(x)] or good


def median_of(samples, key="rps"):
    """Median of `key` over the usable samples that have it; None if none."""
    xs = [x[key] for x in usable(samples) if x.get(key) is not None]
    return statistics.median(xs) if xs else None


def median_cpu(samples, side):
    vals = [x[side]["cpu"] for x in usable(samples) if x.get(side)]
    return statistics.median(vals) if vals else None


def print_table(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(n) for c, n in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (n + 2) for n in widths) + "|")
    for row in rows:
        print(line(row))


def warn_background(samples):
    """Count samples in which server or load generator waited for its CPU."""
    waits = [w for per in samples.values() for v in per.values() for x in v
             if (w := sample_wait(x)) is not None]
    noisy = sum(1 for w in waits if w > BUSY_WAIT)
    if noisy:
        print(f"\nWARNING: in {noisy} of {len(waits)} samples the server or the load "
              f"generator waited for its CPU more than {BUSY_WAIT:.0%} of the time "
              f"(worst {max(waits):.0%}): other processes (or the hypervisor) were "
              "using the benchmark's CPUs.  Medians skip those samples where a cell has "
              "others; cells marked '~' had none.  For final numbers, rerun on an "
              "idle machine.")
    return noisy


def print_check(c, label, minimum):
    """One target line: ``[MET|MISSED] <label>: <ratio>x (target ...)``,
    with the check's note (``c["note"]``) when it has one."""
    got = f"{c['ratio']:.2f}x" if c["ratio"] is not None else c["note"]
    extra = f"  [{c['note']}]" if c["ratio"] is not None and "note" in c else ""
    print(f"  [{'MET' if c['met'] else 'MISSED'}] {label}: {got} "
          f"(target >= {minimum}x){extra}")
