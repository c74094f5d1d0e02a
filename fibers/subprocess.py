"""Subprocesses that suspend only the calling fiber: the stdlib's
:mod:`subprocess`, cooperative.

    from fibers import subprocess

    def main():
        out = subprocess.check_output(["git", "rev-parse", "HEAD"])
        r = subprocess.run(["sh", "-c", "sleep 1; echo done"],
                           capture_output=True, text=True, timeout=5)
        return out, r.stdout

Same names, signatures, constants and exceptions as the stdlib's
(``PIPE``, ``DEVNULL``, ``STDOUT``, ``TimeoutExpired``,
``CalledProcessError`` *are* the stdlib's objects, so ``except
subprocess.TimeoutExpired`` catches either module's).  Called outside any
fiber, every blocking call drives the scheduler until it is done, as the
other blocking words do.

Design
------
:class:`Popen` subclasses :class:`subprocess.Popen` and replaces only what
blocks: waiting for the exit, :meth:`Popen.communicate`, and the pipe file
objects.  Argument checking, spawning (fork/exec in ``_posixsubprocess``,
which is quick and stays synchronous), ``poll()``, ``send_signal()``,
``kill()``, ``__exit__`` and ``__del__`` are the stdlib's own code.

*Exit.*  Right after the spawn the child gets a pidfd (``os.pidfd_open``,
Linux 5.3+), which turns readable when it exits.  A waiter waits for that
with :func:`fibers.wait_readable` (a poll completion on io_uring, an
epoll registration on epoll), then reaps with ``waitpid(pid, WNOHANG)``
under the stdlib's ``_waitpid_lock`` and its ``_handle_exitstatus``, so
``returncode`` has one writer however ``poll()``, ``wait()`` and
``__del__`` interleave.  No SIGCHLD handler and no polling.  A fiber
killed or timed out while waiting only stops waiting: the child runs on
and can be waited for again.  The pidfd is closed once the child is reaped
and no fiber waits on it.  Where pidfd_open is refused (ENOSYS on an old
kernel, EPERM from a seccomp filter; or ``FIBERS_SUBPROCESS_PIDFD=0`` in
the environment, which the tests use) the wait falls back to
``os.waitid(P_PID, pid, WEXITED | WNOWAIT)`` on the blocking-call pool
(:func:`fibers.blocking`): it sees the exit without reaping, so the reap
stays the same code.  That costs a pool thread per waiting child, kept
until the child exits even if its fiber gives up.

*Pipes.*  The parent's pipe ends are switched to O_NONBLOCK.  A read or
write is tried at once, and only on EAGAIN does the fiber wait for
readiness (``wait_readable`` / ``wait_writable``), then try again.  Why
readiness and not the pump's READ/WRITE completions: a pipe holds 64 KiB
by default, so the extra read(2) per wait is amortised over up to 64 KiB;
on epoll the pump would do the very same try-wait-retry; and a cancelled
poll carries no data, whereas a cancelled io_uring read may still
complete with bytes that would then need a home -- here a fiber killed
mid-read loses nothing, since data only ever moves in the synchronous
read(2) that returned it.  ``Popen.stdin``/``stdout``/``stderr`` are the
stdlib's layering (``BufferedReader``/``BufferedWriter``, and
``TextIOWrapper`` in text mode, with the same encoding, errors and line
buffering) over a raw file (:class:`PipeIO`) that waits instead of
raising BlockingIOError.

A pipe end of ours handed to another child as its stdin, stdout or
stderr (``Popen(..., stdin=p1.stdout)``, a shell pipeline) must not reach
it non-blocking: O_NONBLOCK belongs to the open file, which the child
would share, and a child reading a non-blocking stdin takes EAGAIN for
end of input.  Such an end is reopened for the child through
``/proc/self/fd`` -- a new open file on the same pipe, blocking, as the
stdlib's pipes are -- and that copy is closed once the child is spawned.

*communicate().*  Each open pipe gets a loop of its own (one runs in the
calling fiber, the others in helper fibers), so a child that fills stdout
while its stdin is still being written never deadlocks; output is kept in
the stdlib's ``_fileobj2output`` lists and the input offset in
``_input_offset``, so after a TimeoutExpired (or a kill of the calling
fiber) the next communicate() carries on where this one stopped.  The
helpers are killed, and have finished, before communicate() returns or
raises.  Memory is the stdlib's: all output is held until the end.

*run(), call(), check_call(), check_output()* are the stdlib's, over this
Popen: on a timeout, or any exception (a fiber kill included), the child
is killed and then reaped before the exception goes on.
"""

import errno as _errno
import functools as _functools
import io as _io
import os as _os
import stat as _stat
import subprocess as _std
import weakref as _weakref

import fibers as _fibers

from subprocess import (  # noqa: F401  (re-exported: the stdlib's objects)
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    CompletedProcess,
    SubprocessError,
    TimeoutExpired,
    list2cmdline,
)

__all__ = [
    "Popen", "PIPE", "STDOUT", "DEVNULL", "SubprocessError", "TimeoutExpired",
    "CalledProcessError", "CompletedProcess", "run", "call", "check_call",
    "check_output", "list2cmdline", "PipeIO",
]

# One read(2) takes at most this much: the default pipe capacity, so one
# read usually empties the pipe; and under glibc's mmap threshold, so the
# bytes object is not an mmap/munmap pair.
_READ_CHUNK = 65536
# One write(2) offers at most this much; a non-blocking pipe takes what
# fits and says how much.
_WRITE_CHUNK = 1 << 20

_pidfd_probed = None        # None: not yet; else True/False

# The pipe ends PipeIO made non-blocking, by fd: what Popen reopens
# blocking when one is handed to another child (see the design note).
_nonblocking_ends = _weakref.WeakValueDictionary()


def _pidfd_usable():
    """Whether exits can be awaited on pidfds here (probed once)."""
    global _pidfd_probed
    if _os.environ.get("FIBERS_SUBPROCESS_PIDFD", "1") == "0":
        return False
    if _pidfd_probed is None:
        try:
            fd = _os.pidfd_open(_os.getpid())
        except (AttributeError, OSError):
            # AttributeError: no os.pidfd_open (not Linux); OSError: ENOSYS
            # (kernel < 5.3) or EPERM (a seccomp filter).
            _pidfd_probed = False
        else:
            _os.close(fd)
            _pidfd_probed = True
    return _pidfd_probed


def _outside(fn, *args):
    # A blocking call outside any fiber: run it in one and drive the
    # scheduler meanwhile, as fibers' own blocking words do.
    return _fibers.run(_functools.partial(fn, *args))


def _check_timeout(timeout, word):
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float))):
        raise TypeError(f"{word}() argument 'timeout' must be a number or "
                        f"None, not {type(timeout).__name__}")


def _text_mode(kwargs):
    return bool(kwargs.get("universal_newlines") or kwargs.get("text") or
                kwargs.get("encoding") or kwargs.get("errors"))


def _check_input(input, text, word):
    # The stdlib finds a wrong input type only once the child runs (or
    # never, for empty input); here it is a TypeError at the call.
    if input is None:
        return
    if text:
        if not isinstance(input, str):
            raise TypeError(f"{word}() argument 'input' must be str in text "
                            f"mode, not {type(input).__name__}")
        return
    if isinstance(input, str):
        raise TypeError(f"{word}() argument 'input' must be a bytes-like "
                        f"object in binary mode, not str")
    try:
        memoryview(input)
    except TypeError:
        raise TypeError(f"{word}() argument 'input' must be a bytes-like "
                        f"object, not {type(input).__name__}") from None


def _returning_error(fn):
    # A communicate() helper: its error goes back through join() to the
    # caller, which raises it, instead of being logged as uncaught.
    try:
        fn()
    except Exception as e:
        return e
    return None


class PipeIO(_io.RawIOBase):
    """The raw file under :class:`Popen`'s ``stdin``, ``stdout`` and
    ``stderr``: a pipe end that suspends only the calling fiber.

    It owns the stdlib's :class:`io.FileIO` on the (non-blocking) pipe and
    waits for readiness whenever that would raise BlockingIOError, so the
    buffered and text layers above it block cooperatively.  Outside any
    fiber a wait drives the scheduler."""

    def __init__(self, fileio):
        super().__init__()
        self._f = fileio
        _os.set_blocking(fileio.fileno(), False)
        _nonblocking_ends[fileio.fileno()] = self

    def readinto(self, b):
        f = self._f
        while True:
            n = f.readinto(b)
            if n is not None:
                return n
            _fibers.wait_readable(f.fileno())

    def readall(self):
        # RawIOBase's would read 8 KiB at a time.
        f = self._f
        fd = f.fileno()
        chunks = []
        while True:
            try:
                data = _os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                _fibers.wait_readable(fd)
                continue
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def write(self, b):
        f = self._f
        while True:
            n = f.write(b)
            if n is not None:
                return n
            _fibers.wait_writable(f.fileno())

    def fileno(self):
        return self._f.fileno()

    def readable(self):
        return self._f.readable()

    def writable(self):
        return self._f.writable()

    def seekable(self):
        return False

    def isatty(self):
        return False

    @property
    def closed(self):
        return self._f.closed

    @property
    def name(self):
        return self._f.name

    @property
    def mode(self):
        return self._f.mode

    def close(self):
        if not self._f.closed and \
                _nonblocking_ends.get(self._f.fileno()) is self:
            del _nonblocking_ends[self._f.fileno()]
        self._f.close()
        super().close()

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self._f.fileno()}"
        return f"<fibers.subprocess.PipeIO {self._f.mode!r} {state}>"


def _blocking_copy(fd):
    # For a child: a blocking open file on the pipe end fd, if fd is one we
    # made non-blocking; else None (the child gets fd itself).
    end = _nonblocking_ends.get(fd)
    if end is None or end.closed or end.fileno() != fd:
        return None
    try:
        if not _stat.S_ISFIFO(_os.fstat(fd).st_mode):
            return None
        access = _os.O_RDONLY if end.readable() else _os.O_WRONLY
        # O_NONBLOCK for the open alone: a FIFO's blocking open waits for
        # the other end.  A write end with no reader left fails (ENXIO);
        # the child's writes fail with EPIPE either way then.
        copy = _os.open(f"/proc/self/fd/{fd}", access | _os.O_NONBLOCK)
    except OSError:
        return None             # no /proc: the child shares our flag
    _os.set_blocking(copy, True)
    return copy


def _cooperative(obj, buffer_size):
    # The same layering as the stdlib built on the pipe (FileIO, under a
    # BufferedReader/Writer unless bufsize=0, under a TextIOWrapper in text
    # mode), rebuilt over a PipeIO.  The stdlib's wrappers are detached,
    # not closed: the FileIO keeps the fd and moves under the PipeIO.
    text = None
    if isinstance(obj, _io.TextIOWrapper):
        text = dict(encoding=obj.encoding, errors=obj.errors,
                    line_buffering=obj.line_buffering,
                    write_through=obj.write_through)
        obj = obj.detach()
    buffered = isinstance(obj, (_io.BufferedReader, _io.BufferedWriter))
    if buffered:
        obj = obj.detach()
    raw = PipeIO(obj)
    if buffered:
        kind = _io.BufferedReader if raw.readable() else _io.BufferedWriter
        obj = kind(raw, buffer_size)
    else:
        obj = raw
    if text is not None:
        obj = _io.TextIOWrapper(obj, **text)
    return obj


class Popen(_std.Popen):
    """:class:`subprocess.Popen` whose waits suspend only the calling fiber.

    Same arguments and attributes as the stdlib's.  ``wait()`` and
    ``communicate()`` wait for the exit on a pidfd and move pipe data
    through non-blocking reads and writes; ``stdin``, ``stdout`` and
    ``stderr`` (when ``PIPE``) are cooperative file objects.  A fiber
    killed or timed out in a wait leaves the child running: wait again, or
    ``kill()`` it.  ``with Popen(...) as p:`` waits for the child at the
    end of the block, as the stdlib's does."""

    _pidfd = -1
    _fib_waiters = 0

    def __init__(self, args, bufsize=-1, *more, **kwargs):
        # Spawning is the stdlib's, synchronous: fork/exec (vfork where it
        # can) costs well under a millisecond.
        self._fib_copies = []
        try:
            super().__init__(args, bufsize, *more, **kwargs)
        finally:
            for fd in self._fib_copies:
                _os.close(fd)
            del self._fib_copies
        if bufsize is None or bufsize in (-1, 1):
            bufsize = _io.DEFAULT_BUFFER_SIZE
        try:
            if self.stdin is not None:
                self.stdin = _cooperative(self.stdin, bufsize)
            if self.stdout is not None:
                self.stdout = _cooperative(self.stdout, bufsize)
            if self.stderr is not None:
                self.stderr = _cooperative(self.stderr, bufsize)
            if _pidfd_usable():
                # Before any reap, so the pid cannot have been reused: it
                # names our child, a zombie at worst.
                self._pidfd = _os.pidfd_open(self.pid)
        except BaseException:
            self.kill()
            self.__exit__(None, None, None)
            raise

    def _get_handles(self, stdin, stdout, stderr):
        # The stdlib's, then the child's ends that are non-blocking pipe
        # ends of ours swapped for blocking copies (see the design note).
        handles = list(super()._get_handles(stdin, stdout, stderr))
        copies = {}
        for i in (0, 3, 5):         # p2cread, c2pwrite, errwrite
            fd = handles[i]
            if fd != -1 and fd not in copies:
                copies[fd] = _blocking_copy(fd)
                if copies[fd] is not None:
                    self._fib_copies.append(copies[fd])
            if copies.get(fd) is not None:
                handles[i] = copies[fd]
        return tuple(handles)

    def _fib_release(self):
        # The child is reaped: the pidfd goes, unless a fiber still waits
        # on it (it will be woken: the child's exit made it readable).
        if self._pidfd >= 0 and self._fib_waiters == 0:
            fd, self._pidfd = self._pidfd, -1
            _os.close(fd)

    def _fib_reap(self):
        # waitpid(WNOHANG) under the stdlib's lock and bookkeeping.  True
        # when returncode is set; None when another thread holds the lock.
        if self.returncode is not None:
            return True
        if not self._waitpid_lock.acquire(False):
            return None
        try:
            if self.returncode is not None:
                return True
            pid, sts = self._try_wait(_os.WNOHANG)
            if pid == self.pid:
                self._handle_exitstatus(sts)
                return True
            return False
        finally:
            self._waitpid_lock.release()

    def _fib_exit_wait(self):
        # Until the child has exited (not reaped), or an exception.
        if self._pidfd >= 0:
            self._fib_waiters += 1
            try:
                _fibers.wait_readable(self._pidfd)
            finally:
                self._fib_waiters -= 1
        else:
            try:
                _fibers.blocking(_os.waitid, _os.P_PID, self.pid,
                                 _os.WEXITED | _os.WNOWAIT)
            except ChildProcessError:
                pass        # reaped behind our back: _try_wait copes

    def _wait(self, timeout):
        # The stdlib's wait() (and __exit__) call this.
        if self.returncode is not None:
            self._fib_release()
            return self.returncode
        _check_timeout(timeout, "wait")
        if not _fibers.in_fiber():
            return _outside(self._wait, timeout)
        return self._fib_wait_until(
            None if timeout is None else _fibers.now() + timeout, timeout)

    def _fib_wait_until(self, deadline, timeout):
        # Bounded: each round either finds the exit, or waits for it (the
        # pidfd stays readable once it happened), or times out.  A None
        # from _fib_reap (another thread inside waitpid) waits a little.
        while True:
            done = self._fib_reap()
            if done:
                self._fib_release()
                return self.returncode
            left = None if deadline is None else deadline - _fibers.now()
            if left is not None and left <= 0:
                raise TimeoutExpired(self.args, timeout)
            with _fibers.move_on_after(left):
                if done is None:
                    _fibers.sleep(0.001)
                else:
                    self._fib_exit_wait()

    def wait(self, timeout=None):
        """Wait for the child to exit; return its ``returncode``.  Raises
        :class:`TimeoutExpired` after ``timeout`` seconds (the child keeps
        running).  Only the calling fiber waits."""
        _check_timeout(timeout, "wait")
        return super().wait(timeout)

    def communicate(self, input=None, timeout=None):
        """Send ``input`` to stdin and close it, read stdout and stderr to
        their ends, wait for the child to exit; return ``(stdout,
        stderr)``.

        As the stdlib's: bytes, or str in text mode; None for a stream
        that is not a pipe.  On :class:`TimeoutExpired` (which carries the
        output so far) the child keeps running, and calling communicate()
        again continues where this call stopped.  The same holds if the
        calling fiber is killed.  Other fibers run throughout."""
        _check_timeout(timeout, "communicate")
        if self._communication_started and input:
            raise ValueError("Cannot send input after starting communication")
        if not self._communication_started:
            _check_input(input, self.text_mode, "communicate")
        if not _fibers.in_fiber():
            return _outside(self.communicate, input, timeout)
        deadline = None if timeout is None else _fibers.now() + timeout
        try:
            stdout, stderr = self._fib_communicate(input, deadline, timeout)
        finally:
            self._communication_started = True
        # The stdlib's TimeoutExpired here names what remained of the
        # timeout; this one names the timeout the caller gave.
        self._fib_wait_until(deadline, timeout)
        return stdout, stderr

    def _fib_communicate(self, input, deadline, orig_timeout):
        if self.stdin and not self._communication_started:
            # Flush what the user wrote to stdin, as the stdlib does.
            try:
                self.stdin.flush()
            except BrokenPipeError:
                pass
            if not input:
                try:
                    self.stdin.close()
                except BrokenPipeError:
                    pass
        if not self._communication_started:
            self._fileobj2output = {}
            if self.stdout:
                self._fileobj2output[self.stdout] = []
            if self.stderr:
                self._fileobj2output[self.stderr] = []
        stdout = self._fileobj2output[self.stdout] if self.stdout else None
        stderr = self._fileobj2output[self.stderr] if self.stderr else None
        self._save_input(input)

        loops = []
        if self.stdin and not self.stdin.closed:
            loops.append(self._fib_feed)
        for f in (self.stdout, self.stderr):
            if f and not f.closed:
                loops.append(_functools.partial(self._fib_drain, f))
        left = None if deadline is None else deadline - _fibers.now()
        expired = left is not None and left <= 0 and bool(loops)
        if loops and not expired:
            helpers = [_fibers.spawn(_returning_error, fn)
                       for fn in loops[1:]]
            try:
                with _fibers.move_on_after(left) as scope:
                    loops[0]()
                    for h in helpers:
                        err = h.join()
                        if err is not None:
                            raise err
                expired = scope.expired
            finally:
                # Whatever happened, no helper touches the pipes once this
                # call is over (kill() waits for each to finish).
                for h in helpers:
                    if not h.dead:
                        h.kill()
        if expired:
            raise TimeoutExpired(
                self.args, orig_timeout,
                output=b"".join(stdout) if stdout else None,
                stderr=b"".join(stderr) if stderr else None)

        if stdout is not None:
            stdout = b"".join(stdout)
        if stderr is not None:
            stderr = b"".join(stderr)
        if self.text_mode:
            if stdout is not None:
                stdout = self._translate_newlines(
                    stdout, self.stdout.encoding, self.stdout.errors)
            if stderr is not None:
                stderr = self._translate_newlines(
                    stderr, self.stderr.encoding, self.stderr.errors)
        return stdout, stderr

    def _fib_feed(self):
        # Writes the rest of self._input, then closes stdin.  The offset
        # moves with every write, so an interrupted feed resumes exactly.
        fd = self.stdin.fileno()
        data = self._input
        if data:
            view = memoryview(data).cast("B")
            end = len(view)
            while self._input_offset < end:
                off = self._input_offset
                try:
                    n = _os.write(fd, view[off:off + _WRITE_CHUNK])
                except BlockingIOError:
                    _fibers.wait_writable(fd)
                    continue
                except BrokenPipeError:
                    break       # communicate() ignores a reader gone
                self._input_offset = off + n
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _fib_drain(self, f):
        # Reads f to its end into the stdlib's output list, then closes it.
        # Each chunk is appended as soon as read(2) returns it: a kill
        # between reads loses nothing.
        out = self._fileobj2output[f]
        fd = f.fileno()
        while True:
            try:
                data = _os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                _fibers.wait_readable(fd)
                continue
            if not data:
                break
            out.append(data)
        f.close()

    def __del__(self):
        fd = self._pidfd
        if fd >= 0 and self._fib_waiters == 0:
            self._pidfd = -1
            _os.close(fd)
        super().__del__()


# ---- the convenience functions: the stdlib's, over this Popen ----------------

def run(*popenargs, input=None, capture_output=False, timeout=None,
        check=False, **kwargs):
    """Run a command and wait for it; return a :class:`CompletedProcess`.

    The stdlib's :func:`subprocess.run`, suspending only the calling fiber.
    ``input=`` is fed to stdin (str in text mode, bytes otherwise);
    ``capture_output=True`` captures stdout and stderr; ``check=True``
    raises :class:`CalledProcessError` on a non-zero exit.  After
    ``timeout`` seconds the child is killed, reaped, and
    :class:`TimeoutExpired` raised with the output so far.  If anything
    else interrupts it (the fiber is killed, a :func:`fibers.timeout`
    scope expires) the child is killed and reaped too."""
    _check_timeout(timeout, "run")
    _check_input(input, _text_mode(kwargs), "run")
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or \
                kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used "
                             "with capture_output.")
        kwargs["stdout"] = PIPE
        kwargs["stderr"] = PIPE
    if not _fibers.in_fiber():
        return _fibers.run(lambda: _run(popenargs, input, timeout, check,
                                        kwargs))
    return _run(popenargs, input, timeout, check, kwargs)


def _run(popenargs, input, timeout, check, kwargs):
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process.kill()
            process.wait()      # communicate() put the output in the error
            raise
        except BaseException:
            # A kill of this fiber included: the child goes too, and
            # __exit__ reaps it.
            process.kill()
            raise
        retcode = process.poll()
        if check and retcode:
            raise CalledProcessError(retcode, process.args,
                                     output=stdout, stderr=stderr)
    return CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs, timeout=None, **kwargs):
    """Run a command, wait for it, and return its exit code (the stdlib's
    :func:`subprocess.call`).  On a timeout or any other exception the
    child is killed and reaped before the exception goes on."""
    _check_timeout(timeout, "call")
    if not _fibers.in_fiber():
        return _fibers.run(lambda: call(*popenargs, timeout=timeout,
                                        **kwargs))
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException:
            p.kill()
            raise


def check_call(*popenargs, **kwargs):
    """:func:`call`, raising :class:`CalledProcessError` on a non-zero
    exit; returns 0."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs, timeout=None, **kwargs):
    """Run a command and return its stdout (bytes, or str in text mode);
    :class:`CalledProcessError` on a non-zero exit.  The stdlib's
    :func:`subprocess.check_output`: ``stderr=STDOUT`` merges stderr in,
    ``input=`` feeds stdin."""
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be "
                             f"overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        # Explicit input=None was equivalent to empty input: kept.
        kwargs["input"] = "" if _text_mode(kwargs) else b""
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True,
               **kwargs).stdout
