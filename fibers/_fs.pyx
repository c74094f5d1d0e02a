# cython: language_level=3, boundscheck=False, wraparound=False
"""fibers._fs: file-system activity, watched cooperatively.

Design: three layers, each a class that extends the one before.
- The tree (_fs_tree.pxi: _Tree, _Dir; no kernel).  The directories under
  the roots as _Dir nodes (path, entries name -> stat tuple | None | child
  _Dir), changed by plain events on nodes (created, deleted, changed,
  moved, root gone, overflow) and by listings, emitting Events into a
  deque.  It is what makes recursion, renames, duplicate suppression,
  overflow rescans, gone roots and the picture (snapshots, baseline=)
  work.  tests/test_fs_tree.py drives it by hand (_Replay) with no kernel.
- The reader and the public API (this file: Watcher, a _Tree).  One reader
  fiber waits for the kernel fd through the pump (fibers.wait_readable),
  reads it into a 256 KiB buffer until EAGAIN and hands each read to the
  backend's parser.  Consumers (get, get_batch, iteration) take events
  from the deque and park when it is empty, on the scheduler's own
  intrusive wait queue (WaitQueue, cimported from _core, as fibers.sync
  parks): no allocation and no signal-dict lookup per wait.  The reader
  wakes the parked consumers once per read, not per event.  The deque is
  bounded: once it holds max_queue events the reader stops reading
  (parked in a second WaitQueue until a consumer takes events), so a
  consumer that falls behind makes the *kernel* queue overflow, which is
  reported and repaired, instead of memory growing without end.  Rescans
  run in a fiber of their own; listings run on the blocking pool, so a
  huge directory stalls nobody.
- The backends (_fs_inotify.pxi, _fs_fanotify.pxi: Watcher subclasses).
  Each keeps its own state and timing: inotify its wds, its unpaired
  MOVED_FROM and the grace it waits for the pair, its checks after a
  lagging read; fanotify its marks, its handle -> node map and its
  record of deleted directories.

The backend contract is the set of cdef methods a backend overrides:
nineteen, in two halves (the default in brackets; _open, _parse,
_apply_mask, _watch_root and _wait_dir have none).
- The tree's ten (declared by _Tree, answered through paths by Watcher):
  _list(d) and _entry_now(d, name) [by path on the blocking pool; fanotify
  goes by handle, inotify refuses a listing of another directory than d's
  watch is on]; _watch_root(d), _watch_dir(d) and _forget(d) [nothing: a
  node entered or left the tree]; _doubt(d) [nothing; inotify checks d
  once it has caught up]; _keyed(d, key) and _node_of(key) [nothing;
  fanotify follows directories by handle]; _wait_dir(path) and
  _unwait(token) (a gone root waits on an ancestor).  The rest of what
  the tree asks (_path_now, _now, _deliver, _rescan_soon) is Watcher's.
- The reader's nine (declared by Watcher): _open, _parse(n), _caught_up
  [nothing], _wait_more(got) [coalesce, then wait for the fd; inotify
  holds an unpaired MOVED_FROM for its grace], _recheck [never],
  _apply_mask, _unwatch_root [nothing], _n_watches [0], _close_fd [the
  fd].

What the layers promise together:
- Overflow is never silent.  On IN_Q_OVERFLOW / FAN_Q_OVERFLOW the watcher
  delivers an 'overflow' event and a rescan lists every directory, diffs it
  against the tree and emits created / deleted / modified for what
  differs.  A difference is confirmed with lstat at the moment it is
  emitted, so events that were still queued in the kernel, replayed after,
  bring a consumer's model to the true state instead of undoing the repair.
- A reader behind the kernel applies old events to a tree whose paths
  resolve in the present; inotify pins each watch and listing to an inode
  and checks the nodes it watched by path once it has caught up (see
  _fs_inotify.pxi).  A check that fails is an 'overflow' too, with a rescan
  of the parent of what failed.  fanotify needs no check: records name
  directories by handle, every node is keyed by its directory's handle
  when it enters the tree, records are resolved through that key only and
  listings open the directory by it (_list, _node_of, _keyed; see
  _fs_fanotify.pxi), so what the records say is applied to the directory
  they were about, whatever its path is by the time they are read.  The
  one case they cannot settle (a move below a node a listing placed ahead
  of them) is an 'overflow' with a rescan.
- A root that goes (deleted, moved away, replaced) leaves the tree: its
  node is dead, so nothing (inotify wd, fanotify handle) maps to it and
  the moved directory is never reported under the root's old path; the
  contents are reported deleted, then an 'error' (ENOENT).  It stays in
  the roots, dead, waiting on the deepest ancestor left for the next name
  on its path (_arm; the backends' _wait_dir); a directory that appears
  there becomes a new root node, listed like a directory moved in.
- Duplicates are suppressed against the tree: a 'created' for a name the
  tree already holds (the scan of a new directory saw it first) or a
  'deleted' for one it lacks is dropped, so counts are exact.
- Exclusion happens on the joined path in a C buffer (prefix compare and
  fnmatch(3)) before any Python object is made for the event.  Excluded
  directories are never watched and never enter the tree.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EAGAIN, EINTR, ENOMEM, ESTALE
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memcmp, strlen
from libc.stdint cimport int64_t

from fibers._core cimport Fiber, Scheduler, Timer, WaitQueue
from fibers._core import current as _current

import collections
import errno as _errno
import os
import pickle
import stat as _stat
import sys

import fibers

cdef extern from "Python.h":
    object PyUnicode_DecodeFSDefaultAndSize(const char *s, Py_ssize_t size)
    object PyBytes_FromStringAndSize(const char *s, Py_ssize_t n)

cdef extern from "<fnmatch.h>":
    int fnmatch(const char *pattern, const char *string, int flags) nogil

cdef extern from "<unistd.h>":
    ssize_t c_read "read"(int fd, void *buf, size_t n) nogil
    int c_close "close"(int fd) nogil


# ---------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------

# The kinds' bits (K_*) are enums in _fs.pxd.
cdef tuple _KIND_NAMES = ("created", "deleted", "modified", "closed_write",
                          "attrib", "moved", "overflow", "error")
cdef dict _KIND_BITS = {n: 1 << i for i, n in enumerate(_KIND_NAMES)}
cdef str S_CREATED = "created", S_DELETED = "deleted", S_MODIFIED = "modified"
cdef str S_CLOSED_WRITE = "closed_write", S_ATTRIB = "attrib"
cdef str S_MOVED = "moved", S_OVERFLOW = "overflow", S_ERROR = "error"

KINDS = frozenset(_KIND_NAMES)
ALL = KINDS


cdef str _kind_str(int bit):
    if bit == K_CREATED: return S_CREATED
    if bit == K_DELETED: return S_DELETED
    if bit == K_MODIFIED: return S_MODIFIED
    if bit == K_CLOSED_WRITE: return S_CLOSED_WRITE
    if bit == K_ATTRIB: return S_ATTRIB
    if bit == K_MOVED: return S_MOVED
    if bit == K_OVERFLOW: return S_OVERFLOW
    return S_ERROR


cdef int _kinds_mask(events) except -1:
    cdef int m = 0
    if isinstance(events, (str, bytes)):
        events = (events,)
    try:
        it = iter(events)
    except TypeError:
        raise TypeError(f"events must be an iterable of kind names, got "
                        f"{type(events).__name__}") from None
    for k in it:
        b = _KIND_BITS.get(k) if isinstance(k, str) else None
        if b is None:
            raise ValueError(f"unknown event kind {k!r}; the kinds are "
                             f"{', '.join(_KIND_NAMES)}")
        m |= <int>b
    return m | K_ALWAYS


# ---------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------

@cython.final
@cython.freelist(128)
cdef class Event:
    """One thing that happened under a watched root (immutable).

    ``kind`` is one of :data:`KINDS`; ``path`` is absolute; ``src_path`` is
    the old path of a ``moved`` event (else None); ``is_dir`` says whether
    the object is a directory; ``pid`` is the process that did it where the
    backend knows (fanotify), else None; ``time`` is the scheduler clock
    when the watcher read it; ``seq`` counts the watcher's events from 1
    with no gaps; ``errno`` is set for ``error`` events."""

    def __init__(self, kind, path, src_path=None, is_dir=False, pid=None,
                 time=0.0, seq=0, errno=0):
        if kind not in _KIND_BITS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.kind = str(kind)
        self.path = path
        self.src_path = src_path
        self.is_dir = is_dir
        self.pid = pid
        self.time = time
        self.seq = seq
        self._err = errno

    @property
    def errno(self):
        return self._err

    def _key(self):
        return (self.kind, self.path, self.src_path, self.is_dir, self.pid,
                self.time, self.seq, self._err)

    def __eq__(self, other):
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == (<Event>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):
        return (Event, self._key())

    def __repr__(self):
        extra = ""
        if self.src_path is not None:
            extra += f", src_path={self.src_path!r}"
        if self.is_dir:
            extra += ", is_dir=True"
        if self.pid is not None:
            extra += f", pid={self.pid}"
        if self._err:
            extra += f", errno={self._err}"
        return (f"Event({self.kind!r}, {self.path!r}{extra}, "
                f"seq={self.seq})")


include "_fs_tree.pxi"


# ---------------------------------------------------------------------------
# The world through paths: listings and stat figures on the blocking pool
# ---------------------------------------------------------------------------

def _list_dir(bytes path):
    # Runs on the blocking pool: the inode of the directory at path and its
    # entries with their lstat figures, as (name, is_dir, (ino, size,
    # mtime_ns)).  One open directory (never through a final symlink) gives
    # both, so they are of one directory even if the path is renamed
    # meanwhile.
    cdef list out = []
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                 os.O_CLOEXEC)
    try:
        ino = os.fstat(fd).st_ino
        with os.scandir(fd) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append((os.fsencode(e.name), _stat.S_ISDIR(st.st_mode),
                            (st.st_ino, st.st_size, st.st_mtime_ns)))
    finally:
        os.close(fd)
    return ino, out


cdef object _lstat_now(bytes path):
    # (is_dir, (ino, size, mtime_ns)), or None if the path is gone.
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (_stat.S_ISDIR(st.st_mode), (st.st_ino, st.st_size,
                                        st.st_mtime_ns))


def _stat_many(list paths):
    # On the blocking pool: fill in stat figures for a snapshot.
    out = []
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def _write_snapshot(bytes path, object state):
    # On the blocking pool: write atomically (temp file, fsync, rename), so
    # a crash leaves the old snapshot or the new one, never half of one.
    tmp = path + b".tmp"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _root_ids(list roots):
    # root path -> (st_dev, st_ino), for the roots that exist now.
    out = {}
    for r in roots:
        try:
            st = os.stat(r)
        except OSError:
            continue
        out[r] = (st.st_dev, st.st_ino)
    return out


def _read_snapshot(bytes path):
    with open(path, "rb") as f:
        return pickle.load(f)


# ---------------------------------------------------------------------------
# The watcher
# ---------------------------------------------------------------------------

cdef inline int _wake_all(WaitQueue q) except -1:
    # Make every fiber parked in q ready; each looks again at what it waits
    # for (an event, room), so a wake-up with nothing for it is harmless.
    cdef Fiber f
    while q._count:
        f = q.popleft()
        f._sched._wake(f, None)
    return 0


cdef int _park_in(WaitQueue q) except -1:
    # Park the running fiber in q until _wake_all (or a kill, or an
    # enclosing timeout, which raise here and leave q as it was).
    cdef Fiber me = <Fiber?>_current()
    me._sched._wait_in(me, q)
    return 0


cdef class Watcher:
    """Watches directory trees; see :func:`watch`.  Read events with
    ``for ev in watcher``, :meth:`get` or :meth:`get_batch`.  Close it (or
    use it as a context manager) when done."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Watcher objects are made by fibers.fs.watch()")

    def __cinit__(self):
        self._fd = -1
        self._buf = <char *>malloc(BUFSIZE)
        if self._buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self._fd >= 0:
            c_close(self._fd)
            self._fd = -1
        free(self._buf)

    # ---- set-up ------------------------------------------------------------

    cdef int _setup(self, list roots, int kinds, bint recursive, exclude,
                    int max_queue, snapshot, baseline,
                    double coalesce) except -1:
        self._coalesce = coalesce
        self._kinds = kinds
        self._recursive = recursive
        self._max_queue = max_queue
        # labelled for the fiber view (Scheduler.fibers)
        self._getters = WaitQueue.__new__(WaitQueue)
        self._getters._what = "Watcher.get"
        self._getters._owner = <size_t><void *>self
        self._room = WaitQueue.__new__(WaitQueue)
        self._room._what = "Watcher (queue full)"
        self._room._owner = <size_t><void *>self
        self._rescan_fiber = None
        self._rescan_again = False
        self._snapshot = None if snapshot is None else os.fsencode(
            os.path.abspath(os.fsdecode(snapshot)))
        for x in exclude:
            self._add_exclude(x)
        if self._snapshot is not None:
            # The watcher's own state file is never an event.
            self._ex_dirs.append(self._snapshot)
            self._ex_dirs.append(self._snapshot + b".tmp")
        self._open()
        for r in roots:
            self._add_root(r)
        if baseline is not None:
            self._diff_from(baseline)
        elif self._snapshot is not None:
            self._startup_diff()
        self._reader = fibers.spawn(self._read_loop)
        return 0

    cdef int _add_exclude(self, x) except -1:
        if not isinstance(x, (str, bytes, os.PathLike)):
            raise TypeError(f"exclude entries must be paths or glob "
                            f"patterns, got {type(x).__name__}")
        b = os.fsencode(x)
        if not any(c in b for c in b"*?["):
            if b.startswith(b"/") or os.path.isdir(b):
                p = os.path.realpath(b).rstrip(b"/") or b"/"
                self._ex_dirs.append(p)
                return 0
        self._ex_pats.append(b)
        self._ex_pat_path.append(b"/" in b)
        return 0

    cdef int _add_root(self, path) except -1:
        p = os.fsencode(path)
        st = os.stat(p)            # FileNotFoundError for a missing root
        if not _stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(_errno.ENOTDIR,
                                     "fibers.fs watches directories", path)
        rp = os.path.realpath(p)
        if len(rp) > 1:
            rp = rp.rstrip(b"/")
        return self._new_root(rp, (st.st_ino, st.st_size, st.st_mtime_ns))

    # ---- snapshots ---------------------------------------------------------

    def picture(self, root=None):
        """The watcher's picture of the tree now, as a dict: path (bytes)
        -> ``(is_dir, (st_ino, st_size, st_mtime_ns) or None)`` (None: a
        file seen by an event, not yet listed).  With ``root``, only that
        root's part.  Passed back as ``watch(..., baseline=)``, it makes
        the new watcher report what differs from it."""
        if root is None:
            return self._picture(None)
        r = os.path.realpath(os.fsencode(root))
        if len(r) > 1:
            r = r.rstrip(b"/")
        return self._picture(r)

    def save_snapshot(self, path=None):
        """Save the watcher's picture of the tree (path -> inode, size,
        mtime, type) to ``path`` (default: the ``snapshot=`` given to
        :func:`watch`), atomically.  A later ``watch(..., snapshot=path)``
        reports what changed in between.  Allowed after :meth:`close`: the
        picture is then the one at the close."""
        if not fibers.in_fiber():
            return fibers.run(self.save_snapshot, path)
        if path is None:
            if self._snapshot is None:
                raise ValueError("save_snapshot() needs a path: this "
                                 "watcher was made without snapshot=")
            target = self._snapshot
        else:
            target = os.fsencode(os.path.abspath(os.fsdecode(path)))
        self._save(target)

    cdef int _save(self, bytes target) except -1:
        flat = self._flatten()
        unknown = [p for p, (isd, st) in flat.items() if st is None]
        if unknown:
            for p, st in zip(unknown, fibers.blocking(_stat_many, unknown)):
                if st is None:
                    flat.pop(p, None)
                else:
                    flat[p] = (flat[p][0], st)
        state = {"version": 1, "roots": self._root_paths(),
                 "ids": _root_ids(self._root_paths()), "entries": flat}
        fibers.blocking(_write_snapshot, target, state)
        return 0

    cdef int _startup_diff(self) except -1:
        # What changed while nobody watched: the saved picture against the
        # tree just listed.
        try:
            state = fibers.blocking(_read_snapshot, self._snapshot)
        except FileNotFoundError:
            return 0
        except Exception as e:
            raise ValueError(f"fibers.fs: cannot read the snapshot "
                             f"{os.fsdecode(self._snapshot)!r}: {e}") from e
        name = os.fsdecode(self._snapshot)
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError(f"fibers.fs: {name!r} is not a fibers.fs "
                             f"snapshot")
        # A picture of another tree would turn into a flood of created and
        # deleted events: refuse it, and say how to start afresh.
        roots = self._root_paths()
        if not set(state.get("roots", ())) & set(roots):
            raise ValueError(f"fibers.fs: the snapshot {name!r} describes "
                             f"other roots; delete it to start afresh")
        now = _root_ids(roots)
        for r, ident in (state.get("ids") or {}).items():
            if r in now and tuple(now[r]) != tuple(ident):
                raise ValueError(
                    f"fibers.fs: the snapshot {name!r} describes another "
                    f"directory at {os.fsdecode(r)!r} (device and inode "
                    f"differ: replaced or moved); delete it to start afresh")
        self._diff_from(state["entries"])
        return 0

    # ---- the reader fiber --------------------------------------------------

    def _read_loop(self):
        try:
            while not self._closed:
                while len(self._queue) >= self._max_queue:
                    # Back-pressure to the kernel: stop reading until a
                    # consumer makes room (the kernel queue may overflow,
                    # which is reported and repaired).
                    _park_in(self._room)
                    if self._closed:
                        return
                reads = self._n_reads
                self._drain()
                self._deliver()
                self._wait_more(self._n_reads != reads)
        except fibers.FiberExit:
            pass
        except OSError as e:
            if not self._closed:
                self._push(K_ERROR, None, None, False, None, e.errno or 0)
                self._n_errors += 1
                _wake_all(self._getters)

    cdef int _wait_more(self, bint got) except -1:
        # Between two reads: got says the last one found records.  A
        # backend that holds a record until a deadline overrides this
        # (inotify's unpaired MOVED_FROM).
        if self._coalesce > 0 and got:
            # Let a burst gather before the next read: one wake-up per
            # `coalesce` at most, however fast events come.  A lone event
            # still wakes the reader at once.
            fibers.sleep(self._coalesce)
            return 0
        try:
            fibers.wait_readable(self._fd, self._recheck())
        except fibers.Timeout:
            # Checks left over with no event to trigger them (a rescan's,
            # or an audit's own repairs): the read says EAGAIN and they
            # run.
            self._drain()
            self._deliver()
        return 0

    cdef int _drain(self) except -1:
        cdef ssize_t n
        self._tnow = fibers.now()
        while not self._closed and len(self._queue) < self._max_queue:
            n = c_read(self._fd, self._buf, BUFSIZE)
            if n < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    return self._caught_up()
                raise OSError(errno, os.strerror(errno))
            if n == 0:
                return 0
            self._n_reads += 1
            self._parse(n)
            if n < BUFSIZE - 8192:
                # The kernel hands out as many whole records as fit: a
                # short read emptied the queue, and the read that would say
                # EAGAIN is a system call saved (the next wait sees
                # anything newer).
                return self._caught_up()
        return 0

    cdef int _deliver(self) except -1:
        if self._queue:
            _wake_all(self._getters)
        return 0

    cdef double _now(self) except? -1:
        return fibers.now()

    # ---- rescans, in a fiber of their own ----------------------------------

    cdef int _rescan_soon(self) except -1:
        if self._rescan_fiber is not None:
            self._rescan_again = True
        else:
            self._rescan_fiber = fibers.spawn(self._rescan_loop)
        return 0

    def _rescan_loop(self):
        try:
            while True:
                self._rescan_again = False
                self._rescan_pass()
                if not self._rescan_again or self._closed:
                    break
        finally:
            self._rescan_fiber = None

    # ---- the world through paths (the tree's, unless a backend knows
    # better) -----------------------------------------------------------------

    cdef object _list(self, _Dir d):
        ino, listing = fibers.blocking(_list_dir, d.path)
        return listing, None

    cdef object _path_now(self, bytes path):
        return _lstat_now(path)

    # ---- the public side ---------------------------------------------------

    @property
    def backend(self):
        """``'fanotify'`` or ``'inotify'``."""
        return self._backend_name

    def fileno(self):
        """The kernel notification fd (inotify or fanotify), for
        inspection (``/proc/self/fdinfo``); -1 once closed.  Do not read
        it: the watcher's reader does."""
        return self._fd

    @property
    def closed(self):
        return self._closed

    @property
    def roots(self):
        """The watched roots (absolute, real paths), with any that are gone
        (deleted or moved away) and waited for at their paths."""
        return [os.fsdecode(p) for p in self._root_paths()]

    @property
    def events(self):
        """The kinds delivered now (overflow and error always are)."""
        return frozenset(_KIND_NAMES[i] for i in range(8)
                         if self._kinds & (1 << i))

    cdef int _check_open(self, str word) except -1:
        if self._closed:
            raise ValueError(f"{word}() on a closed watcher")
        return 0

    def get(self, timeout=None):
        """The next event; waits (this fiber only) until there is one.
        Raises :class:`fibers.Timeout` after ``timeout`` seconds, and
        ValueError once the watcher is closed and drained."""
        return self._take(1, timeout, True)

    def get_batch(self, max_events=1024, timeout=None):
        """Every event ready now, up to ``max_events``, waiting for at least
        one.  Raises :class:`fibers.Timeout` after ``timeout`` seconds, and
        ValueError once the watcher is closed and drained."""
        if not isinstance(max_events, int) or isinstance(max_events, bool):
            raise TypeError(f"max_events must be an int, got "
                            f"{type(max_events).__name__}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        return self._take(max_events, timeout, False)

    def _take(self, int n, timeout, bint one):
        cdef list out
        cdef bint room
        if not fibers.in_fiber():
            return fibers.run(self._take, n, timeout, one)
        if not self._queue:
            if self._closed:
                raise ValueError("get() on a closed watcher")
            self._wait(timeout)
            if not self._queue:
                raise ValueError("get() on a closed watcher")
        room = len(self._queue) >= self._max_queue
        if one:
            ev = self._queue.popleft()
        else:
            out = []
            while self._queue and n > 0:
                out.append(self._queue.popleft())
                n -= 1
            ev = out
        if room:
            _wake_all(self._room)
        return ev

    cdef int _wait(self, timeout) except -1:
        # Park in _getters until there is an event or the watcher closes;
        # fibers.Timeout after `timeout` seconds (at once if <= 0).
        cdef Fiber me = <Fiber?>_current()
        cdef Scheduler s = me._sched
        cdef Timer t = None
        cdef double secs
        if timeout is not None:
            secs = timeout
            if secs <= 0:
                raise fibers.Timeout("no event within the timeout")
            t = s._arm_exc(me, <int64_t>(secs * 1e9 + 0.5),
                           fibers.Timeout("no event within the timeout"))
        try:
            while not self._queue and not self._closed:
                s._wait_in(me, self._getters)
        finally:
            if t is not None:
                s._disarm_timeout(me, t)
        return 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed and not self._queue:
            raise StopIteration
        try:
            return self._take(1, None, True)
        except ValueError:
            raise StopIteration from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_events(self, kinds):
        """Deliver only ``kinds`` from now on; the kernel's event mask
        changes in place (no events are lost for the kinds kept)."""
        self._check_open("set_events")
        cdef int m = _kinds_mask(kinds)
        self._kinds = m
        self._apply_mask()

    def add(self, path):
        """Watch one more root (a directory); FileNotFoundError if it does
        not exist."""
        self._check_open("add")
        if not fibers.in_fiber():
            return fibers.run(self.add, path)
        self._add_root(path)

    def remove(self, path):
        """Stop watching the root ``path``; KeyError if it is not one."""
        cdef _Dir r
        self._check_open("remove")
        p = os.path.realpath(os.fsencode(path))
        if len(p) > 1:
            p = p.rstrip(b"/")
        for r in self._roots:
            if r.path == p:
                self._roots.remove(r)
                self._unwait_root(r)
                self._drop_subtree(r, False, None)
                self._unwatch_root(r)
                return
        raise KeyError(f"{os.fsdecode(path)!r} is not a watched root")

    def stats(self):
        """Counters: events delivered, overflows seen, rescans run, watches
        (inotify) or filesystem marks (fanotify) held, events queued for
        the consumer, errors reported, reads of the kernel fd, whether a
        repair is under way (a rescan, or inotify's check of its watches
        after a lagging read), and how many roots are gone (deleted or moved
        away, and waited for at their paths)."""
        return {"backend": self._backend_name, "events": self._n_events,
                "overflows": self._n_overflows, "rescans": self._n_rescans,
                "watches": self._n_watches(), "queued": len(self._queue),
                "errors": self._n_errors, "reads": self._n_reads,
                "rescanning": self._rescan_fiber is not None or
                              self._recheck() is not None,
                "missing_roots": sum(1 for r in self._roots
                                     if (<_Dir>r).dead)}

    def close(self, save=True):
        """Stop watching: the reader ends, the kernel fd is closed and, if
        the watcher was made with ``snapshot=`` and ``save`` is true, the
        tree is saved there.  (An application that saves only once it has
        stored what it was given passes ``save=False`` and calls
        :meth:`save_snapshot` itself.)  Events already queued can still be
        read.  Closing twice is a no-op."""
        if self._closed:
            return
        if not fibers.in_fiber():
            return fibers.run(self.close, save)
        try:
            if save and self._snapshot is not None:
                self._save(self._snapshot)
        finally:
            self._closed = True
            me = fibers.current()
            for f in (self._reader, self._rescan_fiber):
                if f is not None and f is not me and not f.dead:
                    f.kill()
            self._close_fd()
            _wake_all(self._getters)
            _wake_all(self._room)

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<fibers.fs.Watcher {self._backend_name} {state} "
                f"roots={self.roots!r}>")

    # ---- the backend contract's reader half ------------------------------
    # (the tree half is _Tree's; the design note above lists both)

    cdef int _open(self) except -1:
        # Make the kernel notification fd (self._fd), before any root.
        raise NotImplementedError

    cdef int _parse(self, ssize_t n) except -1:
        # Apply the records in self._buf[:n] to the tree.
        raise NotImplementedError

    cdef int _caught_up(self) except -1:
        # The reader has just read the kernel queue to the end.
        return 0

    cdef object _recheck(self):
        # None, or how soon the idle reader should read again (and so call
        # _caught_up) though the kernel has nothing new; stats() says
        # 'rescanning' meanwhile.
        return None

    cdef int _apply_mask(self) except -1:
        # self._kinds changed: change the kernel's mask in place.
        raise NotImplementedError

    cdef int _unwatch_root(self, _Dir d) except -1:
        # The root d is no longer watched (remove(); its nodes were
        # forgotten already).
        return 0

    cdef int _n_watches(self):
        # For stats(): watches (inotify) or marks (fanotify) held.
        return 0

    cdef int _close_fd(self) except -1:
        # Close the notification fd and whatever else the backend holds.
        if self._fd >= 0:
            c_close(self._fd)
            self._fd = -1
        return 0


include "_fs_inotify.pxi"
include "_fs_fanotify.pxi"


# ---------------------------------------------------------------------------
# Choosing a backend
# ---------------------------------------------------------------------------

def backends():
    """{name: None if it can run here, else the reason it cannot}."""
    return {"fanotify": _fanotify_unavailable(), "inotify": None}


def watch(paths, events=ALL, *, recursive=True, exclude=(), backend=None,
          snapshot=None, baseline=None, max_queue=65536,
          unlimited_queue=True, coalesce=0.001):
    """Watch ``paths`` (one directory or several) and return a
    :class:`Watcher`.  See the module documentation for the arguments."""
    cdef Watcher w
    cdef int kinds = _kinds_mask(events)
    if isinstance(paths, (str, bytes, os.PathLike)):
        roots = [paths]
    else:
        roots = list(paths)
    if not roots:
        raise ValueError("watch() needs at least one path")
    for p in roots:
        if not isinstance(p, (str, bytes, os.PathLike)):
            raise TypeError(f"paths must be str, bytes or os.PathLike, got "
                            f"{type(p).__name__}")
        os.stat(p)               # FileNotFoundError, before anything opens
    if isinstance(exclude, (str, bytes, os.PathLike)):
        exclude = (exclude,)
    if not isinstance(max_queue, int) or max_queue < 1:
        raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
    if not isinstance(coalesce, (int, float)) or not 0 <= coalesce <= 1:
        raise ValueError(f"coalesce must be a number of seconds in [0, 1], "
                         f"got {coalesce!r}")
    if baseline is not None:
        if snapshot is not None:
            raise ValueError("watch() takes snapshot= or baseline=, not both")
        if not isinstance(baseline, dict):
            raise TypeError(f"baseline must be a dict (see "
                            f"Watcher.picture()), got "
                            f"{type(baseline).__name__}")
    args = (roots, kinds, recursive, tuple(exclude), backend, snapshot,
            baseline, max_queue, unlimited_queue, coalesce)
    if not fibers.in_fiber():
        return fibers.run(_watch_body, *args)
    return _watch_body(*args)


def _watch_body(list roots, int kinds, recursive, tuple exclude, backend,
                snapshot, baseline, int max_queue, unlimited_queue,
                double coalesce):
    cdef Watcher w
    name = backend
    if name is None:
        name = os.environ.get("FIBERS_FS_BACKEND") or None
    if name is None:
        name = "fanotify" if _fanotify_unavailable() is None else "inotify"
        forced = False
    else:
        forced = True
    if name == "fanotify":
        why = _fanotify_unavailable()
        if why is not None:
            raise OSError(_errno.EPERM, f"fibers.fs: fanotify cannot run "
                          f"here: {why}")
        w = _FanotifyWatcher.__new__(_FanotifyWatcher)
        (<_FanotifyWatcher>w)._unlimited = bool(unlimited_queue)
        try:
            w._setup(roots, kinds, bool(recursive), exclude, max_queue,
                     snapshot, baseline, coalesce)
            return w
        except _MarkRefused as e:
            w._close_fd()
            if forced:
                raise OSError(e.args[0], f"fibers.fs: fanotify cannot mark "
                              f"{e.args[1]!r}: {os.strerror(e.args[0])}")
        except BaseException:
            w._close_fd()
            raise
        name = "inotify"
    if name != "inotify":
        raise ValueError(f"unknown fibers.fs backend {name!r}; the backends "
                         f"are 'fanotify' and 'inotify'")
    w = _InotifyWatcher.__new__(_InotifyWatcher)
    try:
        w._setup(roots, kinds, bool(recursive), exclude, max_queue, snapshot,
                 baseline, coalesce)
    except BaseException:
        w._close_fd()
        raise
    return w
