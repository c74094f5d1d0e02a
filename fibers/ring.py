"""The low-level completion ring, with callbacks instead of fibers.

    import fibers.ring

    def done(result, data):
        if result < 0:
            print("failed:", fibers.ring.strerror(result))
        else:
            print("read", data)

    with fibers.ring.Ring() as ring:
        ring.read(fd, 4096, 0, done)
        ring.submit_and_wait(1)
        ring.process_completions()

The ring keeps each operation's buffer and callback alive until it
completes; closing it cancels whatever is still in flight.
"""

from ._core import Ring, strerror

__all__ = ["Ring", "strerror"]
