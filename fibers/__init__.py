"""fibers: plain sequential Python, run as thousands of cooperative fibers
on one OS thread.

    import fibers

    def worker(n):
        fibers.sleep(0.1)
        return n * 2

    def main():
        jobs = [fibers.spawn(worker, i) for i in range(1000)]
        return sum(f.join() for f in jobs)

    print(fibers.run(main))

The scheduler core is compiled (Cython/C).  There is no pure-Python
fallback: if the extension is missing, importing fibers fails.
"""

try:
    from . import _core
except ImportError as e:  # pragma: no cover - exercised only on broken builds
    raise ImportError(
        "fibers' compiled core (fibers._core) is missing or failed to load; "
        "build it with 'pip install .' or 'make build'"
    ) from e

from ._core import (
    BlockingReport,
    Trigger,
    Deadlock,
    ExceptionGroup,
    Fiber,
    FiberExit,
    FiberInfo,
    Group,
    Pool,
    Scheduler,
    Timeout,
    TimeoutScope,
    Timer,
    VirtualClock,
    _C_API,
    backend,
    backends,
    blocking,
    blocking_limit,
    blocking_stats,
    current,
    delay,
    first,
    get_include,
    group,
    in_fiber,
    monitor,
    move_on_after,
    now,
    on_signal,
    periodic,
    run,
    set_blocking_limit,
    signal_all,
    signal_one,
    sleep,
    spawn,
    step,
    stop,
    suspend,
    timeout,
    wait_for,
    wait_os_signal,
    wait_readable,
    wait_writable,
    wait_fd,
    wait_signal,
    when,
    whenever,
    yield_now,
)
from ._heap import Blob, Heap
from .functor import Functor
from . import fs, io, net, ring  # noqa: E402  (submodules: fibers.net, ...)
from . import sync  # noqa: E402
from .sync import (  # noqa: E402
    BoundedSemaphore, Channel, ChannelClosed, Condition, Event, LifoQueue,
    Lock, PriorityQueue, Queue, RLock, Semaphore,
)
from . import subprocess  # noqa: E402  (fibers.subprocess)
from .patching import patch, patched, unpatch  # noqa: E402
from . import debug  # noqa: E402  (fibers.debug: the view's tools)
from .debug import dump, dump_on  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Condition", "Deadlock", "Fiber", "FiberExit", "Functor", "Scheduler",
    "Timeout", "TimeoutScope", "Timer", "VirtualClock", "current", "delay",
    "in_fiber",
    "move_on_after", "now", "on_signal", "periodic", "run", "signal_all",
    "signal_one", "sleep", "spawn", "step", "stop", "suspend", "timeout",
    "wait_for", "wait_os_signal", "wait_readable", "wait_writable", "wait_signal", "when",
    "whenever", "yield_now", "backend", "backends", "fs", "io", "net", "ring",
    "blocking", "set_blocking_limit", "blocking_limit", "blocking_stats",
    "get_include", "Heap", "Blob",
    "Trigger", "wait_fd", "sync", "Lock", "RLock", "Semaphore",
    "BoundedSemaphore", "Event", "LifoQueue", "PriorityQueue", "Queue",
    "Channel", "ChannelClosed",
    "group", "Group", "Pool", "first", "ExceptionGroup",
    "subprocess", "patch", "unpatch", "patched",
    "FiberInfo", "debug", "dump", "dump_on",
    "monitor", "BlockingReport",
]
