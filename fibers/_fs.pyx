# cython: language_level=3, boundscheck=False, wraparound=False
"""fibers._fs: file-system activity, watched cooperatively.

Design
- A Watcher owns one kernel notification fd (fanotify or inotify) and one
  reader fiber.  The reader waits for the fd through the pump
  (fibers.wait_readable), reads it into a 256 KiB buffer until EAGAIN, and
  walks the records in C (csrc/fib_fs.h).  Consumers (get, get_batch,
  iteration) take events from a deque and park when it is empty, on the
  scheduler's own intrusive wait queue (WaitQueue, cimported from _core, as
  fibers.sync parks): no allocation and no signal-dict lookup per wait.
  The reader wakes the parked consumers once per read, not per event.  The
  deque is bounded: once it holds max_queue events the reader stops
  reading (parked in a second WaitQueue until a consumer takes events), so
  a consumer that falls behind makes the *kernel* queue overflow, which is
  reported and repaired (below), instead of memory growing without end.
- The watcher keeps a tree of the directories under its roots (_Dir nodes:
  path, entries name -> stat tuple | None | child _Dir).  The tree is what
  makes recursion, renames and overflow repair work: inotify maps wd ->
  node, fanotify maps (fsid, directory handle) -> node, a directory rename
  re-parents one node and re-writes its subtree's paths, and a rescan diffs
  a fresh listing against it.
- Backends differ only in a few cdef methods (open, watch a new root, apply
  the event mask, drain the fd, forget a node, wait on a directory for a
  gone root); _fs_inotify.pxi and
  _fs_fanotify.pxi hold them.  Everything else (emitting, the tree, rescans,
  snapshots) is here and shared.
- Overflow is never silent.  On IN_Q_OVERFLOW / FAN_Q_OVERFLOW the watcher
  delivers an 'overflow' event and a rescan fiber lists every directory
  (on the blocking pool, so a huge directory stalls nobody), diffs it
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
  _roots, dead, waiting on the deepest ancestor left for the next name on
  its path (_arm; the backends' _wait_dir); a directory that appears there
  becomes a new root node, listed like a directory moved in.
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


# ---------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------

@cython.final
cdef class _Dir:
    # A directory under a root.  entries: name (bytes) -> None (a file whose
    # stat is not known), (ino, size, mtime_ns) (a file), or a _Dir.

    def __repr__(self):
        return f"<_Dir {self.path!r} wd={self.wd} dead={self.dead}>"


cdef _Dir _new_dir(bytes path, bytes name, _Dir parent):
    cdef _Dir d = _Dir.__new__(_Dir)
    d.path = path
    d.name = name
    d.parent = parent
    d.entries = {}
    d.wd = -1
    d.ino = None
    d.key = None
    d.dead = False
    d.listed = False
    return d


cdef bint _under(_Dir d, _Dir top):
    # d is top or below it in the tree.
    while d is not None:
        if d is top:
            return True
        d = d.parent
    return False


cdef inline bytes _join(bytes dirpath, bytes name):
    if PyBytes_GET_SIZE(dirpath) == 1:   # b"/"
        return dirpath + name
    return dirpath + b"/" + name


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


def _stat_inos(list paths):
    # Each path's inode number (lstat), or -1 if it names nothing.
    out = []
    for p in paths:
        try:
            out.append(os.lstat(p).st_ino)
        except OSError:
            out.append(-1)
    return out


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
        self._pbuf = <char *>malloc(PATHCAP)
        self._pbuf2 = <char *>malloc(PATHCAP)
        if self._buf == NULL or self._pbuf == NULL or self._pbuf2 == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self._fd >= 0:
            c_close(self._fd)
            self._fd = -1
        free(self._buf)
        free(self._pbuf)
        free(self._pbuf2)

    # ---- set-up, shared ----------------------------------------------------

    cdef int _setup(self, list roots, int kinds, bint recursive, exclude,
                    int max_queue, snapshot, baseline,
                    double coalesce) except -1:
        self._coalesce = coalesce
        self._kinds = kinds
        self._recursive = recursive
        self._queue = collections.deque()
        self._max_queue = max_queue
        self._getters = WaitQueue.__new__(WaitQueue)
        self._room = WaitQueue.__new__(WaitQueue)
        self._roots = []
        self._waiting = {}
        self._waits = {}
        self._ex_dirs = []
        self._ex_pats = []
        self._ex_pat_path = []
        self._seq = 0
        self._pending = None
        self._rescan_fiber = None
        self._rescan_again = False
        self._rescan_todo = []
        self._closed = False
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
            self._add_root(r, False)
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

    cdef bint _excluded(self, const char *full, Py_ssize_t n,
                        const char *name):
        # full: the absolute path (NUL-terminated, length n); name: its last
        # component.  C compares only: nothing here makes a Python object.
        cdef Py_ssize_t i, m
        cdef bytes p
        for i in range(len(self._ex_dirs)):
            p = <bytes>self._ex_dirs[i]
            m = PyBytes_GET_SIZE(p)
            if m <= n and memcmp(PyBytes_AS_STRING(p), full, m) == 0 and (
                    m == n or full[m] == b'/'):
                return True
        for i in range(len(self._ex_pats)):
            p = <bytes>self._ex_pats[i]
            if self._ex_pat_path[i]:
                if fnmatch(PyBytes_AS_STRING(p), full, 0) == 0:
                    return True
            elif fnmatch(PyBytes_AS_STRING(p), name, 0) == 0:
                return True
        return False

    cdef Py_ssize_t _path_in(self, char *buf, _Dir d, const char *name,
                             Py_ssize_t nlen) except -2:
        # d.path + "/" + name into buf (NUL-terminated); -1 if too long.
        cdef Py_ssize_t dl = PyBytes_GET_SIZE(d.path)
        cdef Py_ssize_t n
        if dl == 1:
            dl = 0
        n = dl + 1 + nlen
        if n + 1 > PATHCAP:
            return -1
        memcpy(buf, PyBytes_AS_STRING(d.path), dl)
        buf[dl] = b'/'
        memcpy(buf + dl + 1, name, nlen)
        buf[n] = 0
        return n

    cdef bint _excluded_entry(self, _Dir d, bytes name):
        cdef Py_ssize_t n = self._path_in(self._pbuf, d, name,
                                          PyBytes_GET_SIZE(name))
        if n < 0:
            return True
        return self._excluded(self._pbuf, n, PyBytes_AS_STRING(name))

    cdef int _add_root(self, path, bint live) except -1:
        cdef _Dir d
        p = os.fsencode(path)
        st = os.stat(p)            # FileNotFoundError for a missing root
        if not _stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(_errno.ENOTDIR,
                                     "fibers.fs watches directories", path)
        rp = os.path.realpath(p)
        if len(rp) > 1:
            rp = rp.rstrip(b"/")
        for d in self._roots:
            if d.path == rp:
                return 0
        d = _new_dir(rp, os.path.basename(rp), None)
        d.st = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._watch_root(d)
        self._roots.append(d)
        self._build(d)
        return 0

    cdef list _root_paths(self):
        cdef _Dir r
        cdef list out = []
        for r in self._roots:
            out.append(r.path)
        return out

    cdef _Dir _root_of(self, bytes p):
        cdef _Dir r
        for r in self._roots:
            if r.dead:
                continue        # gone: nothing is under it until it is back
            if p == r.path or (p.startswith(r.path) and (
                    len(r.path) == 1 or p[len(r.path)] == 47)):
                return r
        return None

    cdef _Dir _node_at(self, bytes p, bint create):
        # The node for directory path p, walking from its root; with create,
        # missing nodes are made (and marked unlisted).  None if p is not
        # under a root, is excluded, or (without create) is unknown.
        cdef _Dir r = self._root_of(p), d, c
        if r is None:
            return None
        d = r
        rest = p[len(r.path):].strip(b"/")
        if not rest:
            return r
        if not self._recursive:
            return None
        for comp in rest.split(b"/"):
            v = d.entries.get(comp)
            c = <_Dir>v if type(v) is _Dir else None
            if c is None:
                if not create or self._excluded_entry(d, comp):
                    return None
                c = _new_dir(_join(d.path, comp), comp, d)
                d.entries[comp] = c
            d = c
        return d

    # ---- emitting ----------------------------------------------------------

    cdef inline int _push(self, int bit, object path, object src,
                          bint is_dir, object pid, int err) except -1:
        cdef Event ev
        if not (bit & self._kinds):
            return 0
        ev = Event.__new__(Event)
        ev.kind = _kind_str(bit)
        ev.path = path
        ev.src_path = src
        ev.is_dir = is_dir
        ev.pid = pid
        ev.time = self._tnow
        self._seq += 1
        ev.seq = self._seq
        ev._err = err
        self._queue.append(ev)
        self._n_events += 1
        return 0

    cdef int _emit_at(self, int bits, _Dir d, const char *name,
                      Py_ssize_t nlen, bint is_dir, object pid) except -1:
        # Emit each kind in bits (in the fixed order created, modified,
        # attrib, closed_write, deleted) for d/name, unless excluded.
        cdef Py_ssize_t n
        bits &= self._kinds
        if not bits:
            return 0
        n = self._path_in(self._pbuf, d, name, nlen)
        if n < 0 or self._excluded(self._pbuf, n, name):
            return 0
        path = PyUnicode_DecodeFSDefaultAndSize(self._pbuf, n)
        if bits & K_CREATED:
            self._push(K_CREATED, path, None, is_dir, pid, 0)
        if bits & K_MODIFIED:
            self._push(K_MODIFIED, path, None, is_dir, pid, 0)
        if bits & K_ATTRIB:
            self._push(K_ATTRIB, path, None, is_dir, pid, 0)
        if bits & K_CLOSED_WRITE:
            self._push(K_CLOSED_WRITE, path, None, is_dir, pid, 0)
        if bits & K_DELETED:
            self._push(K_DELETED, path, None, is_dir, pid, 0)
        return 0

    cdef int _emit_path(self, int bit, bytes path, bint is_dir,
                        object pid) except -1:
        if bit & self._kinds:
            self._push(bit, os.fsdecode(path), None, is_dir, pid, 0)
        return 0

    cdef int _emit_error(self, bytes path, int err) except -1:
        self._n_errors += 1
        self._push(K_ERROR, os.fsdecode(path), None, True, None, err)
        return 0

    # ---- tree changes, shared by both backends -----------------------------

    cdef int _created(self, _Dir d, bytes name, bint is_dir, object pid,
                      int extra, bint scan) except -1:
        # name appeared in d.  extra: further kinds seen with it (modified,
        # attrib, closed_write).  A directory gets a node, a watch (inotify)
        # and, with scan, a listing that emits what is already inside: the
        # race every naive recursive watcher loses.
        cdef _Dir c
        cdef object old = d.entries.get(name, self)
        cdef int bits = extra
        if old is self:
            bits |= K_CREATED
        elif (type(old) is _Dir) != is_dir:
            # replaced by the other type while we were not looking
            self._deleted(d, name, pid)
            bits |= K_CREATED
        if is_dir:
            if type(d.entries.get(name)) is not _Dir:
                c = _new_dir(_join(d.path, name), name, d)
                d.entries[name] = c
                self._emit_at(bits, d, name, len(name), True, pid)
                if self._recursive:
                    self._watch_dir(c)
                    if scan:
                        self._scan_new(c, pid)
                    else:
                        c.listed = True     # seen from its birth (fanotify)
                return 0
        else:
            d.entries[name] = None
        self._emit_at(bits, d, name, len(name), is_dir, pid)
        if is_dir and scan and self._recursive:
            # Known already (a listing that ran ahead of the events saw it):
            # it still needs a watch of its own (inotify: one added by path
            # may have failed or found another node's directory) and a
            # listing.
            c = <_Dir>d.entries[name]
            self._watch_dir(c)
            if not c.listed:
                self._scan_new(c, pid)
        return 0

    cdef int _deleted(self, _Dir d, bytes name, object pid) except -1:
        cdef object old = d.entries.pop(name, self)
        if old is self:
            return 0       # already gone: a duplicate
        if type(old) is _Dir:
            self._drop_subtree(<_Dir>old, True, pid)
            self._emit_at(K_DELETED, d, name, len(name), True, pid)
        else:
            self._emit_at(K_DELETED, d, name, len(name), False, pid)
        return 0

    cdef int _changed(self, _Dir d, bytes name, int bits, bint is_dir,
                      object pid) except -1:
        # modified / attrib / closed_write on d/name: the stat we had is
        # stale now.
        cdef object old = d.entries.get(name, self)
        if old is not self and type(old) is not _Dir:
            d.entries[name] = None
        self._emit_at(bits, d, name, len(name), is_dir, pid)
        return 0

    cdef int _drop_subtree(self, _Dir d, bint emit, object pid) except -1:
        # d is gone (deleted, moved out, or found missing): forget it and
        # everything below, emitting deleted for the descendants (deepest
        # first) so a per-path model needs no subtree rule.
        cdef _Dir c
        for name, v in list(d.entries.items()):
            if type(v) is _Dir:
                self._drop_subtree(<_Dir>v, emit, pid)
                if emit:
                    self._emit_at(K_DELETED, d, name, len(name), True, pid)
            elif emit:
                self._emit_at(K_DELETED, d, name, len(name), False, pid)
        d.entries.clear()
        d.dead = True
        self._forget(d)
        return 0

    cdef int _moved(self, _Dir d1, bytes n1, _Dir d2, bytes n2, bint is_dir,
                    object pid) except -1:
        # A rename inside the tree.  Either side may be None (outside the
        # roots, or excluded): then it is a deletion or a creation.
        cdef object v
        cdef _Dir c
        cdef Py_ssize_t a, b
        cdef bint out1 = d1 is None or self._excluded_entry(d1, n1)
        cdef bint out2 = d2 is None or self._excluded_entry(d2, n2)
        if out1 and out2:
            return 0
        if out2:
            return self._deleted(d1, n1, pid)
        if out1:
            return self._created(d2, n2, is_dir, pid, 0, True)
        v = d1.entries.pop(n1, self)
        if v is self:
            # A source the tree never held (a listing that ran behind the
            # rename saw only the new name): to a consumer this is the new
            # name appearing, not a move from a path it never heard of.
            return self._created(d2, n2, is_dir, pid, 0, True)
        old = d2.entries.pop(n2, None)
        if type(old) is _Dir and old is not v:
            # Replaced: an empty directory, unless a listing that ran ahead
            # of the events filled it; what it held is reported deleted, so
            # a model that applies the events still holds the tree.
            self._drop_subtree(<_Dir>old, True, pid)
        if type(v) is _Dir:
            c = <_Dir>v
            c.parent = d2
            c.name = n2
            self._repath(c, _join(d2.path, n2))
            d2.entries[n2] = c
            if self._recursive:
                # inotify: a directory renamed before its watch could be
                # added by path (or whose path then named another node's
                # directory) gets its own watch here; it is listed below.
                self._watch_dir(c)
        elif is_dir:
            # a directory the tree did not know: treat it as new
            c = _new_dir(_join(d2.path, n2), n2, d2)
            d2.entries[n2] = c
            if self._recursive:
                self._watch_dir(c)
        else:
            d2.entries[n2] = v
        if K_MOVED & self._kinds:
            a = self._path_in(self._pbuf, d1, n1, len(n1))
            b = self._path_in(self._pbuf2, d2, n2, len(n2))
            if a >= 0 and b >= 0:
                self._push(K_MOVED,
                           PyUnicode_DecodeFSDefaultAndSize(self._pbuf2, b),
                           PyUnicode_DecodeFSDefaultAndSize(self._pbuf, a),
                           is_dir, pid, 0)
        if is_dir and self._recursive and (type(v) is not _Dir or
                                           not (<_Dir>v).listed):
            # New to the tree, or a directory a listing missed because it
            # was being renamed: report what is inside.
            self._scan_new(<_Dir>d2.entries[n2], pid)
        return 0

    cdef int _repath(self, _Dir d, bytes path) except -1:
        cdef list stack = [(d, path)]
        cdef _Dir x
        while stack:
            x, p = stack.pop()
            x.path = p
            self._repathed(x)
            for name, v in x.entries.items():
                if type(v) is _Dir:
                    stack.append((v, _join(p, name)))
        return 0

    # ---- listing: start-up, new directories, rescans ----------------------

    cdef int _build(self, _Dir root) except -1:
        # The first listing of a root, silently: the tree as it is now.
        # Watches go on before each listing, so nothing slips between.
        self._scan(root, False, None, False)
        return 0

    cdef int _scan_new(self, _Dir d, object pid) except -1:
        # A directory that just appeared (or was moved in): report what is
        # already inside, recursively.
        self._scan(d, True, pid, False)
        return 0

    cdef int _scan(self, _Dir top, bint emit, object pid,
                   bint verify) except -1:
        # List top and the directories below it, breadth first, merging each
        # listing into the tree.  emit: report differences; verify: confirm
        # each difference with lstat first (rescans, where kernel events
        # still queued may already describe it).
        cdef list todo = [top]
        cdef _Dir d, c
        cdef Py_ssize_t i = 0
        while i < len(todo):
            d = <_Dir>todo[i]
            i += 1
            if d.dead:
                continue
            asked = d.path
            try:
                ino, listing, keys = self._list(d)
            except OSError as e:
                if e.errno not in (_errno.ENOENT, _errno.ENOTDIR,
                                   _errno.ELOOP, _errno.ESTALE):
                    if emit or d is top:
                        self._emit_error(d.path, e.errno or 0)
                    continue
                ino = -1
            if d.dead or self._closed:
                continue
            if ino == -1 or (d.ino is not None and ino != d.ino):
                # Gone, renamed under us, or (inotify, reading behind the
                # kernel) the path names another directory than the one d's
                # watch is on.  If the rename has been read meanwhile (the
                # node has its new path), list it there; otherwise the
                # rename, when read, lists it (listed is False), and the
                # backend checks d once it has read all there is, so its
                # subtree is never skipped.
                d.listed = False
                if d.path != asked:
                    todo.append(d)
                else:
                    self._doubt(d)
                continue
            d.listed = True
            self._tnow = fibers.now()
            seen = set()
            for name, is_dir, st in listing:
                seen.add(name)
                if self._excluded_entry(d, name):
                    continue
                old = d.entries.get(name, self)
                k = None
                if keys is not None and is_dir:
                    # fanotify: the listing names each directory by its
                    # key (listed by handle, it is of d's own directory).
                    k = keys[name]
                    c = self._node_of(k)
                    if c is not None and c is not old:
                        # The tree holds that directory elsewhere: a rename
                        # still queued brings it here.  A rescan (events may
                        # have been lost) moves it now.
                        if verify and c.parent is not None and \
                                not _under(d, c):
                            self._moved(c.parent, c.name, d, name, True, pid)
                            todo.append(c)
                        continue
                    if type(old) is _Dir and (<_Dir>old).key is not None \
                            and (<_Dir>old).key != k:
                        # another directory than the one the tree has
                        # there: replaced
                        self._deleted(d, name, pid)
                        old = self
                if old is self or (type(old) is _Dir) != is_dir:
                    if verify:
                        now = self._entry_now(d, name)
                        if now is None:
                            continue
                        is_dir, st = now
                    if old is not self:
                        self._deleted(d, name, pid)
                    if is_dir:
                        c = _new_dir(_join(d.path, name), name, d)
                        c.st = st
                        self._keyed(c, k)
                        d.entries[name] = c
                        if emit:
                            self._emit_at(K_CREATED, d, name, len(name),
                                          True, pid)
                        if self._recursive:
                            self._watch_dir(c)
                            todo.append(c)
                    else:
                        d.entries[name] = st
                        if emit:
                            self._emit_at(K_CREATED, d, name, len(name),
                                          False, pid)
                elif type(old) is _Dir:
                    if self._recursive:
                        # inotify: one whose watch by path failed (renamed
                        # before it could be added) gets it here
                        self._watch_dir(<_Dir>old)
                        todo.append(old)
                elif old != st:
                    d.entries[name] = st
                    if verify or (emit and old is not None):
                        self._emit_at(K_MODIFIED, d, name, len(name),
                                      False, pid)
            if emit:
                for name in [n for n in d.entries if n not in seen]:
                    if verify and self._entry_now(d, name) is not None:
                        continue
                    self._deleted(d, name, pid)
            if self._queue:
                _wake_all(self._getters)
        return 0

    cdef int _overflowed(self) except -1:
        return self._rescan_at(None)

    cdef int _rescan_at(self, list tops) except -1:
        # Events were lost: say so, and rescan the subtrees tops (None:
        # every root).
        self._n_overflows += 1
        self._push(K_OVERFLOW, None, None, False, None, 0)
        if tops is None:
            self._rescan_todo.append(None)
        else:
            self._rescan_todo.extend(tops)
        if self._rescan_fiber is not None:
            self._rescan_again = True
        else:
            self._rescan_fiber = fibers.spawn(self._rescan_loop)
        return 0

    def _rescan_loop(self):
        cdef _Dir r
        try:
            while True:
                self._rescan_again = False
                self._n_rescans += 1
                todo = self._rescan_todo
                self._rescan_todo = []
                for r in (list(self._roots) if None in todo else todo):
                    if self._closed:
                        return
                    if r.parent is not None or r not in self._roots:
                        # a subtree whose check failed (fs-lag's repair)
                        if not r.dead:
                            self._scan(r, True, None, True)
                        continue
                    # A root's going or coming back may be among the events
                    # lost: its path tells.
                    if r.dead:
                        self._arm(r)
                        continue
                    now = _lstat_now(r.path)
                    if now is None or not now[0] or (
                            r.st is not None and now[1][0] != r.st[0]):
                        self._root_gone(r, None)
                        continue
                    self._scan(r, True, None, True)
                if not self._rescan_again:
                    break
        finally:
            self._rescan_fiber = None

    # ---- roots that go away and come back ----------------------------------

    cdef int _root_gone(self, _Dir r, object pid) except -1:
        # The root r was deleted, moved away or replaced.  What the tree held
        # under it is reported deleted (deepest first), then an error
        # (ENOENT) names the root, so an application knows that nothing is
        # watched there now.  r stays in the roots, dead (nothing maps to it
        # any more, so the moved directory's events are not reported under
        # its old path), and the watcher waits for a directory at its path.
        if r.dead or r.parent is not None:
            return 0
        self._unwait_root(r)
        self._drop_subtree(r, True, pid)
        self._emit_error(r.path, _errno.ENOENT)
        self._arm(r)
        return 0

    cdef int _arm(self, _Dir r) except -1:
        # r is a root that is gone.  If a directory is at its path, watch it
        # again; else wait on the deepest ancestor that is left for the next
        # component of the path (_root_came brings it back here, one level
        # down each time).  The ancestor is watched before the component is
        # looked for, so one that appears in between is not missed.  Bounded:
        # a path that keeps changing under it ends waiting where it stands.
        cdef int rounds = 0
        cdef bytes a, name
        while True:
            self._unwait_root(r)
            if not r.dead or self._closed or r not in self._roots:
                return 0
            now = _lstat_now(r.path)
            if now is not None and now[0]:
                if self._reattach(r):
                    return 0
            else:
                a = r.path
                while True:
                    a = os.path.dirname(a)
                    if a == b"/":
                        break
                    now = _lstat_now(a)
                    if now is not None and now[0]:
                        break
                name = r.path[len(a):].lstrip(b"/").split(b"/", 1)[0]
                try:
                    token = self._wait_dir(a)
                except OSError as e:
                    # Cannot wait there (out of watches, another filesystem):
                    # say so; the root stays gone.
                    self._emit_error(r.path, e.errno or 0)
                    return 0
                if token is not None:
                    self._wait_root(r, token, name)
                    now = _lstat_now(_join(a, name))
                    if now is None or not now[0] or rounds >= 64:
                        return 0
            rounds += 1
            if rounds > 64:
                return 0

    cdef int _reattach(self, _Dir old) except -1:
        # A directory is at the path of the gone root old: watch it as a new
        # root node in old's place and report its contents created, as for
        # a directory moved in.  0 if it went again before it was watched.
        cdef _Dir r
        now = _lstat_now(old.path)
        if now is None or not now[0]:
            return 0
        r = _new_dir(old.path, old.name, None)
        r.st = now[1]
        try:
            self._watch_root(r)
        except OSError as e:
            if e.errno in (_errno.ENOENT, _errno.ENOTDIR):
                return 0
            self._emit_error(r.path, e.errno or 0)
            return 1
        self._roots[self._roots.index(old)] = r
        self._scan(r, True, None, False)
        return 1

    cdef int _wait_root(self, _Dir r, object token, bytes name) except -1:
        self._waiting[r] = (token, name)
        self._waits.setdefault(token, []).append(r)
        return 0

    cdef int _unwait_root(self, _Dir r) except -1:
        cdef list rs
        w = self._waiting.pop(r, None)
        if w is None:
            return 0
        rs = self._waits.get(w[0])
        if rs is not None:
            if r in rs:
                rs.remove(r)
            if not rs:
                del self._waits[w[0]]
                self._unwait(w[0])
        return 0

    cdef int _root_came(self, object token, bytes name) except -1:
        # A directory called name appeared in the directory token stands
        # for: the gone roots waiting for it there look again.
        cdef _Dir r
        rs = self._waits.get(token)
        if rs is None:
            return 0
        for r in list(rs):
            if r.dead and self._waiting.get(r, (None, None))[1] == name:
                self._arm(r)
        return 0

    # ---- snapshots ---------------------------------------------------------

    cdef dict _flatten(self):
        # path -> (is_dir, (ino, size, mtime_ns) | None) for the whole tree.
        cdef dict out = {}
        cdef list stack = [r for r in self._roots if not (<_Dir>r).dead]
        cdef _Dir d
        while stack:
            d = <_Dir>stack.pop()
            out[d.path] = (True, d.st)
            for name, v in d.entries.items():
                if type(v) is _Dir:
                    stack.append(v)
                else:
                    out[_join(d.path, name)] = (False, v)
        return out

    def picture(self, root=None):
        """The watcher's picture of the tree now, as a dict: path (bytes)
        -> ``(is_dir, (st_ino, st_size, st_mtime_ns) or None)`` (None: a
        file seen by an event, not yet listed).  With ``root``, only that
        root's part.  Passed back as ``watch(..., baseline=)``, it makes
        the new watcher report what differs from it."""
        flat = self._flatten()
        if root is None:
            return flat
        r = os.path.realpath(os.fsencode(root))
        if len(r) > 1:
            r = r.rstrip(b"/")
        pre = r if r == b"/" else r + b"/"
        return {p: v for p, v in flat.items()
                if p == r or p.startswith(pre)}

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

    cdef int _diff_from(self, old) except -1:
        # Report what differs between the picture ``old`` and the tree just
        # listed: deletions deepest first, then creations and changes.
        new = self._flatten()
        roots = self._root_paths()
        self._tnow = fibers.now()
        for p in sorted((p for p in old if p not in new), reverse=True):
            if self._root_of(p) is not None:
                self._emit_path(K_DELETED, p, old[p][0], None)
        for p in sorted(new):
            isd, st = new[p]
            if p in roots:
                continue
            o = old.get(p)
            if o is None:
                self._emit_path(K_CREATED, p, isd, None)
            elif o[0] != isd:
                self._emit_path(K_DELETED, p, o[0], None)
                self._emit_path(K_CREATED, p, isd, None)
            elif not isd and o[1] != st:
                self._emit_path(K_MODIFIED, p, False, None)
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
                if self._queue:
                    _wake_all(self._getters)
                if self._coalesce > 0 and self._n_reads != reads and \
                        self._pending is None:
                    # Let a burst gather before the next read: one wake-up
                    # per `coalesce` at most, however fast events come.  A
                    # lone event still wakes the reader at once.
                    fibers.sleep(self._coalesce)
                    if self._closed:
                        return
                    continue
                if self._pending is not None:
                    try:
                        fibers.wait_readable(self._fd, 0.005)
                    except fibers.Timeout:
                        # The partner may have come while this fiber waited
                        # for its turn on a busy scheduler: read first.
                        self._drain()
                        self._tnow = fibers.now()
                        if self._pending is not None:
                            self._flush_pending()
                            self._caught_up()
                        if self._queue:
                            _wake_all(self._getters)
                else:
                    try:
                        fibers.wait_readable(self._fd, self._recheck())
                    except fibers.Timeout:
                        # Checks left over with no event to trigger them
                        # (a rescan's, or an audit's own repairs): the
                        # read says EAGAIN and they run.
                        self._drain()
                        if self._queue:
                            _wake_all(self._getters)
        except fibers.FiberExit:
            pass
        except OSError as e:
            if not self._closed:
                self._push(K_ERROR, None, None, False, None, e.errno or 0)
                self._n_errors += 1
                _wake_all(self._getters)

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
        self._add_root(path, True)

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

    # ---- the backend contract (each backend's .pxi overrides these) -------

    cdef int _open(self) except -1:
        raise NotImplementedError

    cdef int _watch_root(self, _Dir d) except -1:
        raise NotImplementedError

    cdef int _unwatch_root(self, _Dir d) except -1:
        return 0

    cdef int _watch_dir(self, _Dir d) except -1:
        return 0

    cdef int _forget(self, _Dir d) except -1:
        return 0

    cdef int _repathed(self, _Dir d) except -1:
        return 0

    cdef object _wait_dir(self, bytes path):
        # Start seeing the names that appear in directory path (for gone
        # roots): a token that _root_came is called with, None if path is
        # gone already, OSError if it cannot be seen.
        raise NotImplementedError

    cdef int _unwait(self, object token) except -1:
        return 0

    cdef int _apply_mask(self) except -1:
        raise NotImplementedError

    cdef int _parse(self, ssize_t n) except -1:
        raise NotImplementedError

    cdef int _flush_pending(self) except -1:
        return 0

    cdef int _doubt(self, _Dir d) except -1:
        # d's watch or listing may not be of d's directory: check it once
        # the queue has been read to the end.
        return 0

    cdef object _list(self, _Dir d):
        # d's listing, on the blocking pool: (inode, [(name, is_dir, stat)],
        # None | {name: key} for the directories in it).
        ino, listing = fibers.blocking(_list_dir, d.path)
        return ino, listing, None

    cdef _Dir _node_of(self, object key):
        # The live node of the directory key names (fanotify), or None.
        return None

    cdef int _keyed(self, _Dir d, object key) except -1:
        # d is the directory key names (fanotify).
        return 0

    cdef object _entry_now(self, _Dir d, bytes name):
        # _lstat_now of the entry name in d's directory.
        return _lstat_now(_join(d.path, name))

    cdef int _caught_up(self) except -1:
        # The reader has just read the kernel queue to the end.
        return 0

    cdef object _recheck(self):
        # None, or how soon the idle reader should read again (and so call
        # _caught_up) though the kernel has nothing new.
        return None

    cdef int _n_watches(self):
        return 0

    cdef int _close_fd(self) except -1:
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
