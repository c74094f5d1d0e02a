"""Cooperative files: reads and writes that suspend only the calling fiber.

    with fibers.io.open("data.bin", "rb") as f:
        header = f.pread(64, 0)

On io_uring the kernel does the I/O while other fibers run.  The epoll
backend cannot wait on regular files, so there a thread of the
blocking-call pool does each call, while other fibers run.  Opening runs
on the pool on both backends: open(2) of a FIFO without a peer, or of a
file on a slow network file system, waits in the kernel for as long as it
likes.  A :func:`fibers.timeout` scope applies to every call.
"""

from ._core import File, _open_file, ioctl


def open(path, mode="rb"):  # noqa: A001 - mirrors the builtin on purpose
    """Open ``path`` and return a :class:`File`.

    ``mode`` is a binary mode: ``'rb'``, ``'wb'``, ``'ab'``, ``'xb'``,
    ``'r+b'``, ``'w+b'`` or ``'a+b'``.  Text modes raise ValueError.
    Errors opening the file are the stdlib's (FileNotFoundError,
    IsADirectoryError for a directory, ...).  ``path`` is a str, bytes or
    path-like object.  Only the calling fiber waits for the open; outside
    any fiber, the scheduler runs meanwhile.
    """
    return _open_file(path, mode)


__all__ = ["File", "open", "ioctl"]
