# Fields of fibers._fs's classes, by layer: the tree (_fs_tree.pxi), the
# reader and public API (_fs.pyx), the backends (_fs_inotify.pxi,
# _fs_fanotify.pxi).  The backend contract is set out in _fs.pyx's design
# note.

from libc.stdint cimport uint32_t, uint64_t

from fibers._core cimport WaitQueue


# Event kinds: one bit each, in the order of _KIND_NAMES (_fs.pyx)
cdef enum:
    K_CREATED = 1
    K_DELETED = 2
    K_MODIFIED = 4
    K_CLOSED_WRITE = 8
    K_ATTRIB = 16
    K_MOVED = 32
    K_OVERFLOW = 64
    K_ERROR = 128
    # overflow and error are always delivered: they are how loss is reported
    K_ALWAYS = K_OVERFLOW | K_ERROR

# Buffers
cdef enum:
    BUFSIZE = 262144    # the reader's: one read of the kernel queue
    PATHCAP = 8192      # a joined path (PATH_MAX is 4096)


cdef class Event:
    cdef readonly str kind
    cdef readonly object path
    cdef readonly object src_path
    cdef readonly bint is_dir
    cdef readonly object pid
    cdef readonly double time
    cdef readonly unsigned long long seq
    cdef int _err            # errno: a C macro, so not the field's name


cdef class _Dir:
    cdef bytes path          # absolute, no trailing slash (but b"/")
    cdef bytes name
    cdef _Dir parent         # None for a root
    cdef dict entries        # name -> None | (ino, size, mtime_ns) | _Dir
    cdef object st           # the directory's own (ino, size, mtime_ns)
    cdef object key          # its identity as the backend knows it
                             # (fanotify: fsid + file handle; inotify: the
                             # inode its watch is on, 0 if none), or None
    cdef bint dead
    cdef bint listed


# _fs_tree.pxi: the tree, its rescans and its picture; no kernel.
cdef class _Tree:
    cdef list _roots          # _Dir (dead: gone, waited for at its path)
    cdef bint _recursive
    cdef int _kinds           # K_* bits delivered
    cdef list _ex_dirs        # bytes: excluded directory prefixes
    cdef list _ex_pats        # bytes: fnmatch patterns
    cdef list _ex_pat_path    # bool: the pattern matches the whole path
    cdef char *_pbuf          # paths are joined here, in C
    cdef char *_pbuf2
    cdef object _queue        # deque of Event, emitted in order
    cdef unsigned long long _seq
    cdef double _tnow         # the time events are stamped with
    cdef dict _waiting        # root _Dir -> (token, name) it waits on
    cdef dict _waits          # token -> [root _Dir]: see _wait_dir
    cdef list _rescan_todo    # _Dir subtrees to rescan; None: every root
    cdef bint _closed
    cdef unsigned long long _n_events, _n_overflows, _n_rescans, _n_errors

    cdef bint _excluded(self, const char *full, Py_ssize_t n,
                        const char *name)
    cdef Py_ssize_t _path_in(self, char *buf, _Dir d, const char *name,
                             Py_ssize_t nlen) except -2
    cdef bint _excluded_entry(self, _Dir d, bytes name)
    cdef int _new_root(self, bytes path, object st) except -1
    cdef list _root_paths(self)
    cdef _Dir _root_of(self, bytes p)
    cdef _Dir _node_at(self, bytes p)
    cdef int _push(self, int bit, object path, object src, bint is_dir,
                   object pid, int err) except -1
    cdef int _emit_at(self, int bits, _Dir d, const char *name,
                      Py_ssize_t nlen, bint is_dir, object pid) except -1
    cdef int _emit_path(self, int bit, bytes path, bint is_dir,
                        object pid) except -1
    cdef int _emit_error(self, bytes path, int err) except -1
    cdef int _created(self, _Dir d, bytes name, bint is_dir, object pid,
                      int extra, bint scan) except -1
    cdef int _deleted(self, _Dir d, bytes name, object pid) except -1
    cdef int _changed(self, _Dir d, bytes name, int bits, bint is_dir,
                      object pid) except -1
    cdef int _drop_subtree(self, _Dir d, bint emit, object pid) except -1
    cdef int _moved(self, _Dir d1, bytes n1, _Dir d2, bytes n2, bint is_dir,
                    object pid) except -1
    cdef int _repath(self, _Dir d, bytes path) except -1
    cdef int _build(self, _Dir root) except -1
    cdef int _scan_new(self, _Dir d, object pid) except -1
    cdef int _scan(self, _Dir top, bint emit, object pid,
                   bint verify) except -1
    cdef int _overflowed(self) except -1
    cdef int _rescan_at(self, list tops) except -1
    cdef int _rescan_pass(self) except -1
    cdef int _root_gone(self, _Dir r, object pid) except -1
    cdef int _arm(self, _Dir r) except -1
    cdef int _reattach(self, _Dir old) except -1
    cdef int _wait_root(self, _Dir r, object token, bytes name) except -1
    cdef int _unwait_root(self, _Dir r) except -1
    cdef int _root_came(self, object token, bytes name) except -1
    cdef dict _flatten(self)
    cdef dict _picture(self, bytes root)
    cdef int _diff_from(self, old) except -1
    # the backend contract, the tree's half: what it asks of its world
    cdef object _list(self, _Dir d)
    cdef object _entry_now(self, _Dir d, bytes name)
    cdef int _watch_root(self, _Dir d) except -1
    cdef int _watch_dir(self, _Dir d) except -1
    cdef int _forget(self, _Dir d) except -1
    cdef int _doubt(self, _Dir d) except -1
    cdef int _keyed(self, _Dir d, object key) except -1
    cdef _Dir _node_of(self, object key)
    cdef object _wait_dir(self, bytes path)
    cdef int _unwait(self, object token) except -1
    # ... and what the watcher (or _Replay) gives it
    cdef object _path_now(self, bytes path)
    cdef double _now(self) except? -1
    cdef int _deliver(self) except -1
    cdef int _rescan_soon(self) except -1


# _fs.pyx: the reader and the public API.
cdef class Watcher(_Tree):
    cdef int _fd
    cdef char *_buf           # the read buffer
    cdef Py_ssize_t _max_queue
    cdef WaitQueue _getters   # consumers parked for an event (or close)
    cdef WaitQueue _room      # the reader parked for room in _queue
    cdef object _reader
    cdef object _rescan_fiber
    cdef bint _rescan_again
    cdef bytes _snapshot
    cdef str _backend_name
    cdef double _coalesce     # seconds between reads of a burst
    cdef unsigned long long _n_reads

    cdef int _setup(self, list roots, int kinds, bint recursive, exclude,
                    int max_queue, snapshot, baseline,
                    double coalesce) except -1
    cdef int _add_exclude(self, x) except -1
    cdef int _add_root(self, path) except -1
    cdef int _save(self, bytes target) except -1
    cdef int _startup_diff(self) except -1
    cdef int _wait_more(self, bint got) except -1
    cdef int _drain(self) except -1
    cdef int _check_open(self, str word) except -1
    cdef int _wait(self, timeout) except -1
    # the backend contract, the reader's half
    cdef int _open(self) except -1
    cdef int _parse(self, ssize_t n) except -1
    cdef int _caught_up(self) except -1
    cdef object _recheck(self)
    cdef int _apply_mask(self) except -1
    cdef int _unwatch_root(self, _Dir d) except -1
    cdef int _n_watches(self)
    cdef int _close_fd(self) except -1


# _fs_tree.pxi: the tree driven by hand, for tests
cdef class _Replay(_Tree):
    cdef readonly dict world  # path -> (is_dir, stat): what listings see
    cdef readonly list doubted  # the paths _doubt was called with, in order
    cdef readonly list waits  # the paths _wait_dir was called with

    cdef _Dir _at(self, dirpath)


# _fs_inotify.pxi
cdef class _InotifyWatcher(Watcher):
    cdef list _by_wd          # wd -> the _Dir that owns it | None
    cdef dict _wd_of          # _Dir -> the wd it owns
    cdef object _pending      # an unpaired MOVED_FROM: (cookie, _Dir, name,
                              # is_dir), waiting MOVE_GRACE for its pair
    cdef int _nw
    cdef list _doubted        # _Dir to check once the queue is empty
    cdef dict _aliases        # ino -> [_Dir whose path found another's wd]
    cdef bint _via_proc       # /proc/self/fd is there to watch an open fd
    cdef int _idle_repairs    # audits that repaired since the last read
    cdef bint _auditing       # an audit runs (it parks: lstats, listings)

    cdef uint32_t _mask(self)
    cdef int _add_watch(self, _Dir d) except -1
    cdef bint _owns(self, _Dir d)
    cdef int _flush_pending(self) except -1
    cdef int _audit(self) except -1
    cdef int _audit_now(self) except -1


# _fs_fanotify.pxi
cdef class _FanotifyWatcher(Watcher):
    cdef dict _cache          # fsid + directory handle -> its _Dir
    cdef set _dead            # keys of directories deleted (merged records)
    cdef object _target       # the key of the record being applied
    cdef dict _mounts         # fsid -> an fd on that filesystem
    cdef dict _marks          # fsid -> [root paths]
    cdef dict _root_fsid      # root path -> fsid
    cdef dict _root_key       # root path -> its own fsid + handle
    cdef bint _unlimited
    cdef unsigned long long _mask_now

    cdef uint64_t _mask(self)
    cdef _Dir _dir_for(self, const unsigned char *key, size_t klen)
    cdef int _dir_entry(self, uint64_t m, _Dir d, bytes name, bytes k,
                        object pid) except -1
    cdef int _dir_moved(self, _Dir d1, bytes n1, _Dir d2, bytes n2,
                        bytes k, object pid) except -1
    cdef int _relocate(self, _Dir c, _Dir d2, bytes n2, object pid) except -1
    cdef object _key_of(self, bytes path)
    cdef int _watch_root_keys(self, _Dir d) except -1
    cdef int _fan_roots(self, bytes key, bytes name, bint left, bint came,
                        bint over, object target, object pid) except -1
