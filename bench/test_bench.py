"""pytest-benchmark suite over the same workloads as `make bench`.

    python -m pytest bench/test_bench.py --benchmark-only

pytest-benchmark times each call; the workload's own figure (ns/op,
seconds, or bytes per idle task, measured in a fresh process) is kept in
extra_info so the JSON it saves carries the comparable numbers.
"""
import pytest

from bench.run import measure_once
from bench.workloads import RUNTIMES, WORKLOADS, measure


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("workload", [w for w in WORKLOADS if w != "idle_mem"])
def test_speed(benchmark, runtime, workload):
    figures = []
    benchmark.pedantic(lambda: figures.append(measure(runtime, workload)),
                       rounds=3, iterations=1)
    benchmark.extra_info["unit"] = WORKLOADS[workload][0]
    benchmark.extra_info["figures"] = figures
    assert all(f > 0 for f in figures)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_idle_memory(benchmark, runtime):
    figures = []
    benchmark.pedantic(lambda: figures.append(measure_once(runtime, "idle_mem")),
                       rounds=1, iterations=1)
    benchmark.extra_info["unit"] = "bytes"
    benchmark.extra_info["figures"] = figures
    assert figures[0] > 0
