# fibers.fs on fanotify: one filesystem-wide mark per filesystem holding a
# root, FID reporting with directory names (Linux 5.17+, CAP_SYS_ADMIN).
#
# Included by _fs.pyx.  How records become events:
# - Each record names a directory by its key (fsid + file handle) and an
#   entry in it.  The key is the directory's identity: it survives renames,
#   and names nothing once the directory is deleted.  Every tree node is
#   keyed when it enters the tree, from what made it: the record's target
#   (FAN_REPORT_TARGET_FID) for a directory made or moved in, the listing
#   for one found by a listing, name_to_handle_at for a root.  So _cache
#   (key -> live node) answers every record with one dict lookup and no
#   system call: a key it lacks is of a directory that was not in the tree
#   when the record was made (outside the roots, excluded, gone).  A
#   handle is never resolved to the path it has now: a reader behind the
#   kernel applies old records, and the directory may have been renamed
#   since (the old way lost what such records said).
# - A listing (a directory moved in, a rescan) opens the directory by its
#   handle, not by the path the tree has for it, and keys each directory
#   in it from the same open (fib_fs_key_at).  It describes the present,
#   ahead of the records still queued, which then replay on top of it:
#   duplicates drop out against the tree.  A directory it finds that the
#   tree holds elsewhere is left there: a queued rename brings it.
# - Records about a directory follow its key, not its name: a create,
#   rename or delete acts on the node keyed so wherever the tree has it
#   (a listing may have put it where it is now) and leaves alone a name the
#   tree holds for another directory (a later one the listing saw, whose
#   own record is still to come).  A move that would put a node below
#   itself (a listing put something on that path ahead of the records, and
#   which link is ahead cannot be told) is reported as an 'overflow' and
#   its subtree rescanned, never made a cycle.
# - Renames come as one FAN_RENAME record with the old and the new
#   directory and name; a side outside the roots makes it a deletion or a
#   creation (a directory moved in is listed).
# - The kernel merges a queued event into an earlier one on the same entry
#   and target, so a merged record stands where the first of them was.  A
#   create cannot merge into anything earlier, so create + delete is always
#   "made, then deleted" (never the other order: the target differs).  A
#   deletion can thus be read before renames of the target that came
#   first; a directory deleted so is remembered as dead (_dead) until the
#   reader has caught up, and those renames do not bring it back.  The
#   other kinds are reported created, modified, attrib, closed_write,
#   deleted.  (A file renamed away and back to one name before it was
#   deleted, all while queued, is still ambiguous: files are not keyed.)
# - The mark sees inside a new directory from the moment it exists, so
#   unlike inotify a new directory needs no listing; one moved in from
#   outside the roots does.
# - A root's own entry is in its parent, usually outside the roots.  The
#   parent's key is recorded when the root is added, so a delete or rename
#   there of the root's name is seen; the record's target handle, compared
#   with the root's own, tells the root from an earlier one at that path
#   (records are read late).  A gone root waits on the key of its deepest
#   ancestor left, which the mark sees as well: nothing more is marked.

from libc.stdint cimport uint64_t, int32_t

cdef extern from "fib_fs.h":
    ctypedef struct fib_fs_fan:
        uint64_t mask
        int32_t pid
        const unsigned char *dkey
        size_t dkey_len
        const char *name
        size_t nlen
        const unsigned char *dkey2
        size_t dkey2_len
        const char *name2
        size_t nlen2
        const unsigned char *tkey
        size_t tkey_len
    int fib_fs_fan_next(const char *buf, size_t len, size_t *off,
                        fib_fs_fan *ev)
    int fib_fs_fan_open(int mount_fd, const unsigned char *key, size_t klen,
                        int flags)
    ssize_t fib_fs_key_at(int dirfd, const char *name, unsigned char *out,
                          size_t cap, unsigned long long *ino)
    ssize_t fib_fs_key(const char *path, unsigned char *out, size_t cap)
    int fib_fs_fsid(const char *path, unsigned char *out)
    int fanotify_init(unsigned flags, unsigned event_f_flags)
    int fanotify_mark(int fd, unsigned flags, uint64_t mask, int dirfd,
                      const char *path)
    enum:
        FAN_CLASS_NOTIF
        FAN_CLOEXEC
        FAN_NONBLOCK
        FAN_UNLIMITED_QUEUE
        FAN_REPORT_DFID_NAME_TARGET
        FAN_MARK_ADD
        FAN_MARK_REMOVE
        FAN_MARK_FILESYSTEM
        FAN_CREATE
        FAN_DELETE
        FAN_MODIFY
        FAN_ATTRIB
        FAN_CLOSE_WRITE
        FAN_RENAME
        FAN_ONDIR
        FAN_Q_OVERFLOW
        AT_FDCWD
        O_RDONLY
        O_CLOEXEC
        O_DIRECTORY
        O_PATH


def _fan_list(int mfd, bytes key):
    # Runs on the blocking pool: _list_dir for the directory key names,
    # opened by its handle wherever it is now, with the key of each
    # directory in it (fib_fs_key_at; one that went meanwhile is left out:
    # the events say where it went).
    cdef unsigned char out[8 + 8 + 128]
    cdef unsigned long long ino
    cdef ssize_t n
    cdef list listing = []
    cdef dict keys = {}
    cdef int fd = fib_fs_fan_open(mfd, <const unsigned char *>
                                  PyBytes_AS_STRING(key), len(key),
                                  O_RDONLY | O_DIRECTORY)
    if fd < 0:
        if -fd == ENOMEM:
            # open_by_handle_at gives ENOMEM, not ESTALE, when it cannot
            # reconnect a directory that is being removed or moved (seen
            # with a reader far behind a churning tree): it is gone from
            # here; the records say where it went, and the check after
            # the queue is read lists it again if need be.
            fd = -ESTALE
        raise OSError(-fd, os.strerror(-fd))
    try:
        dino = os.fstat(fd).st_ino
        with os.scandir(fd) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                name = os.fsencode(e.name)
                isdir = _stat.S_ISDIR(st.st_mode)
                if isdir:
                    n = fib_fs_key_at(fd, PyBytes_AS_STRING(name), out,
                                      sizeof(out), &ino)
                    if n < 0 or ino != st.st_ino:
                        continue
                    keys[name] = PyBytes_FromStringAndSize(<char *>out, n)
                listing.append((name, isdir, (st.st_ino, st.st_size,
                                              st.st_mtime_ns)))
    finally:
        c_close(fd)
    return dino, listing, keys


class _MarkRefused(Exception):
    # The filesystem refuses a FID mark (EXDEV, ENODEV, EOPNOTSUPP): the
    # automatic choice falls back to inotify.
    pass


cdef object _fan_reason = False


def _fanotify_unavailable():
    """None if a fanotify watcher can run here, else why not (cached)."""
    global _fan_reason
    cdef int fd, err
    if _fan_reason is not False:
        return _fan_reason
    fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK |
                       FAN_REPORT_DFID_NAME_TARGET, O_RDONLY)
    if fd < 0:
        err = errno
        if err == _errno.EPERM:
            why = "it needs CAP_SYS_ADMIN (run as root)"
        elif err == _errno.EINVAL:
            why = ("the kernel lacks FAN_REPORT_DFID_NAME_TARGET "
                   "(Linux 5.17 or later is needed)")
        elif err == _errno.ENOSYS:
            why = "the kernel was built without fanotify"
        else:
            why = f"fanotify_init: {os.strerror(err)}"
        _fan_reason = why
        return why
    # FAN_RENAME is 5.17's; an older kernel refuses it in the mask.
    # Since 5.13 an unprivileged fanotify_init succeeds, but filesystem
    # marks still need CAP_SYS_ADMIN; and FAN_RENAME is 5.17's.
    _fan_reason = None
    if fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                     FAN_RENAME | FAN_ONDIR, AT_FDCWD, b"/") < 0:
        err = errno
        if err == _errno.EPERM:
            _fan_reason = ("filesystem marks need CAP_SYS_ADMIN (run as "
                           "root)")
        elif err == _errno.EINVAL:
            _fan_reason = ("the kernel lacks FAN_RENAME (Linux 5.17 or "
                           "later is needed)")
    c_close(fd)
    return _fan_reason


cdef class _FanotifyWatcher(Watcher):

    def __dealloc__(self):
        # Never closed (and its scheduler gone): the fds on each filesystem
        # go with it, as the notification fd does in Watcher's.
        if self._mounts:
            for fd in self._mounts.values():
                c_close(<int>fd)

    cdef int _open(self) except -1:
        cdef unsigned flags = (FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK |
                               FAN_REPORT_DFID_NAME_TARGET)
        cdef int fd
        self._backend_name = "fanotify"
        self._cache = {}
        self._dead = set()
        self._target = None
        self._mounts = {}
        self._marks = {}
        self._root_fsid = {}
        self._root_key = {}
        if self._unlimited:
            flags |= FAN_UNLIMITED_QUEUE
        fd = fanotify_init(flags, O_RDONLY)
        if fd < 0:
            raise OSError(errno, f"fanotify_init: {os.strerror(errno)}")
        self._fd = fd
        self._mask_now = self._mask()
        return 0

    cdef uint64_t _mask(self):
        cdef uint64_t m = FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR
        if self._kinds & K_MODIFIED:
            m |= FAN_MODIFY
        if self._kinds & K_CLOSED_WRITE:
            m |= FAN_CLOSE_WRITE
        if self._kinds & K_ATTRIB:
            m |= FAN_ATTRIB
        return m

    cdef int _watch_root(self, _Dir d) except -1:
        cdef unsigned char fsid[8]
        cdef int rc = fib_fs_fsid(PyBytes_AS_STRING(d.path), fsid)
        cdef int err
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc), os.fsdecode(d.path))
        key = PyBytes_FromStringAndSize(<char *>fsid, 8)
        if d.path in self._root_fsid:
            # Back again: the filesystem is marked already.
            return self._watch_root_keys(d)
        if key not in self._marks:
            if fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                             self._mask_now, AT_FDCWD,
                             PyBytes_AS_STRING(d.path)) < 0:
                err = errno
                if err in (_errno.EXDEV, _errno.ENODEV, _errno.EOPNOTSUPP,
                           _errno.EINVAL):
                    raise _MarkRefused(err, os.fsdecode(d.path))
                raise OSError(err, f"fanotify_mark: {os.strerror(err)}",
                              os.fsdecode(d.path))
            self._mounts[key] = os.open(d.path, os.O_RDONLY | os.O_DIRECTORY
                                        | os.O_CLOEXEC)
            self._marks[key] = []
        self._marks[key].append(d.path)
        self._root_fsid[d.path] = key
        return self._watch_root_keys(d)

    cdef int _watch_root_keys(self, _Dir d) except -1:
        # The root's own handle and its parent's, to see it go (_fan_roots).
        # A key that cannot be had (gone meanwhile: its deletion is still to
        # be read) is left out.
        mine = self._key_of(d.path)
        if mine is not None:
            self._root_key[d.path] = mine
            self._keyed(d, mine)
        if d.path != b"/":
            up = self._key_of(os.path.dirname(d.path))
            if up is not None:
                self._wait_root(d, up, d.name)
        return 0

    cdef int _unwatch_root(self, _Dir d) except -1:
        self._unwait_root(d)
        self._root_key.pop(d.path, None)
        key = self._root_fsid.pop(d.path, None)
        if key is None:
            return 0
        paths = self._marks[key]
        paths.remove(d.path)
        if not paths:
            # Through the fd held on the filesystem: the root's path may be
            # gone.
            fanotify_mark(self._fd, FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM,
                          self._mask_now, <int>self._mounts[key], NULL)
            del self._marks[key]
            os.close(self._mounts.pop(key))
        return 0

    cdef int _apply_mask(self) except -1:
        cdef uint64_t new = self._mask(), old = self._mask_now
        cdef int mfd
        for key in self._marks:
            # Through the fd held on the filesystem, not a root's path: a
            # root may be gone.
            mfd = <int>self._mounts[key]
            if new & ~old:
                if fanotify_mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
                                 new, mfd, NULL) < 0:
                    raise OSError(errno, f"fanotify_mark: "
                                  f"{os.strerror(errno)}")
            if old & ~new:
                if fanotify_mark(self._fd,
                                 FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM,
                                 old & ~new, mfd, NULL) < 0:
                    raise OSError(errno, f"fanotify_mark: "
                                  f"{os.strerror(errno)}")
        self._mask_now = new
        return 0

    cdef int _n_watches(self):
        return len(self._marks)

    cdef object _key_of(self, bytes path):
        # path's key as records carry it, or None (gone, or no handles: the
        # filesystem is marked, so it gives them).
        cdef unsigned char out[8 + 8 + 128]
        cdef ssize_t n = fib_fs_key(PyBytes_AS_STRING(path), out, sizeof(out))
        if n < 0:
            return None
        return PyBytes_FromStringAndSize(<char *>out, n)

    cdef object _wait_dir(self, bytes path):
        # The directory's key: records naming it as the parent are seen
        # (_fan_roots), and so is its own going (the record's target).
        key = self._key_of(path)
        if key is not None and key[:8] not in self._mounts:
            # The mark is on the roots' filesystems only.
            raise OSError(_errno.EXDEV, "not on a marked filesystem",
                          os.fsdecode(path))
        return key

    cdef int _fan_roots(self, bytes key, bytes name, bint left, bint came,
                        bint over, object target, object pid) except -1:
        # A record on the entry name in the directory key, which roots wait
        # on: a present root's name in its parent, or the name a gone root
        # waits for.  left: the entry there was deleted or renamed away;
        # came: one was made there; over: one was renamed there (replacing
        # what was there).  target: the handle of the entry concerned.
        cdef _Dir r
        rs = self._waits.get(key)
        if rs is None:
            return 0
        for r in list(rs):
            w = self._waiting.get(r)
            if w is None or w[1] != name:
                continue
            if r.dead:
                if came or over:
                    self._arm(r)
                continue
            mine = self._root_key.get(r.path)
            it = target is None or mine is None or target == mine
            # A record about another directory that was at this path (read
            # after the root was already watched again) changes nothing.
            if (left and it) or (over and not it):
                self._root_gone(r, pid)
        return 0

    cdef int _close_fd(self) except -1:
        Watcher._close_fd(self)
        if self._mounts:
            for fd in self._mounts.values():
                os.close(fd)
            self._mounts.clear()
        return 0

    cdef _Dir _dir_for(self, const unsigned char *key, size_t klen):
        # The tree node of the directory a record names, or None when it is
        # not in the tree (outside the roots, excluded, gone): one dict
        # lookup.  Every node is keyed when it enters the tree, so a key
        # the map lacks is of a directory the tree did not hold when the
        # record was made.
        v = self._cache.get(PyBytes_FromStringAndSize(<const char *>key,
                                                      klen))
        if v is None or (<_Dir>v).dead:
            return None
        return <_Dir>v

    cdef _Dir _node_of(self, object key):
        v = self._cache.get(key)
        if v is None or (<_Dir>v).dead:
            return None
        return <_Dir>v

    cdef int _keyed(self, _Dir d, object key) except -1:
        # d is the directory key names; None: take its key by path (a root,
        # or a rescan's listing that raced with a change of type).
        if key is None:
            key = self._key_of(d.path)
            if key is None:
                return 0
        d.key = key
        self._cache[key] = d
        return 0

    cdef int _watch_dir(self, _Dir d) except -1:
        # A node made for the record being applied (_created, _moved) is
        # the record's target.
        if d.key is None and self._target is not None:
            self._keyed(d, self._target)
            self._target = None
        return 0

    cdef int _forget(self, _Dir d) except -1:
        if d.key is not None and self._cache.get(d.key) is d:
            del self._cache[d.key]
        return 0

    cdef object _list(self, _Dir d):
        # By handle: the directory of d's node, wherever it is now (its
        # path in the tree is the one it had when the records still queued
        # were made).
        mfd = None if d.key is None else self._mounts.get(d.key[:8])
        if mfd is None:
            return Watcher._list(self, d)
        dino, listing, keys = fibers.blocking(_fan_list, mfd, d.key)
        return listing, keys

    cdef int _caught_up(self) except -1:
        # Every record made before the directories in _dead were deleted
        # has been read.
        if self._dead:
            self._dead.clear()
        return 0

    cdef int _parse(self, ssize_t n) except -1:
        cdef fib_fs_fan ev
        cdef size_t off = 0
        cdef int rc, mods
        cdef uint64_t m
        cdef _Dir d, d2
        cdef Py_ssize_t k
        cdef bint isdir, prior
        while True:
            rc = fib_fs_fan_next(self._buf, <size_t>n, &off, &ev)
            if rc <= 0:
                if rc < 0:
                    raise OSError(-rc, "fibers.fs: a malformed fanotify "
                                  "record")
                return 0
            m = ev.mask
            if m & FAN_Q_OVERFLOW:
                self._overflowed()
                continue
            if ev.dkey == NULL:
                continue
            if m & FAN_ONDIR and m & (FAN_CREATE | FAN_DELETE | FAN_RENAME) \
                    and self._waits:
                # A root going, or coming back (see _fan_roots).
                target = None
                if ev.tkey != NULL:
                    target = PyBytes_FromStringAndSize(
                        <const char *>ev.tkey, ev.tkey_len)
                if target is not None and m & (FAN_DELETE | FAN_RENAME) \
                        and target in self._waits:
                    # A directory gone roots wait on went too: they wait
                    # further up.
                    for r in list(self._waits[target]):
                        if (<_Dir>r).dead:
                            self._arm(<_Dir>r)
                self._fan_roots(PyBytes_FromStringAndSize(
                                    <const char *>ev.dkey, ev.dkey_len),
                                PyBytes_FromStringAndSize(ev.name, ev.nlen),
                                (m & (FAN_DELETE | FAN_RENAME)) != 0,
                                (m & FAN_CREATE) != 0, False, target, ev.pid)
                if m & FAN_RENAME and ev.dkey2 != NULL:
                    self._fan_roots(PyBytes_FromStringAndSize(
                                        <const char *>ev.dkey2,
                                        ev.dkey2_len),
                                    PyBytes_FromStringAndSize(ev.name2,
                                                              ev.nlen2),
                                    False, False, True, target, ev.pid)
            d = self._dir_for(ev.dkey, ev.dkey_len)
            if d is not None and not self._recursive and d.parent is not None:
                d = None
            isdir = (m & FAN_ONDIR) != 0
            if m & FAN_RENAME:
                d2 = None
                if ev.dkey2 != NULL:
                    d2 = self._dir_for(ev.dkey2, ev.dkey2_len)
                    if d2 is not None and not self._recursive and \
                            d2.parent is not None:
                        d2 = None
                if d is None and d2 is None:
                    continue
                name = PyBytes_FromStringAndSize(ev.name2, ev.nlen2)
                if isdir and ev.tkey != NULL:
                    self._dir_moved(d, PyBytes_FromStringAndSize(ev.name,
                                                                 ev.nlen),
                                    d2, name, PyBytes_FromStringAndSize(
                                        <const char *>ev.tkey, ev.tkey_len),
                                    ev.pid)
                else:
                    n1 = PyBytes_FromStringAndSize(ev.name, ev.nlen)
                    if d is not None and type(d.entries.get(n1)) is _Dir:
                        # A directory a listing ahead of the records saw
                        # there: not the file moved.
                        d = None
                        if d2 is None:
                            continue
                    self._moved(d, n1, d2, name, isdir, ev.pid)
                continue
            if d is None:
                continue
            if ev.nlen == 0 or (ev.nlen == 1 and ev.name[0] == b'.'):
                # An event on the directory itself (its attributes): the
                # record names the directory, with "." for a name.
                if m & FAN_ATTRIB:
                    if d.parent is None:
                        self._emit_path(K_ATTRIB, d.path, True, ev.pid)
                    else:
                        self._changed(d.parent, d.name, K_ATTRIB, True,
                                      ev.pid)
                continue
            k = self._path_in(self._pbuf, d, ev.name, ev.nlen)
            if k < 0 or self._excluded(self._pbuf, k, ev.name):
                continue
            name = PyBytes_FromStringAndSize(ev.name, ev.nlen)
            pid = ev.pid
            mods = 0
            if m & FAN_MODIFY:
                mods |= K_MODIFIED
            if m & FAN_ATTRIB:
                mods |= K_ATTRIB
            if m & FAN_CLOSE_WRITE:
                mods |= K_CLOSED_WRITE
            if isdir and ev.tkey != NULL and m & (FAN_CREATE | FAN_DELETE):
                self._dir_entry(m, d, name, PyBytes_FromStringAndSize(
                    <const char *>ev.tkey, ev.tkey_len), pid)
            elif m & FAN_CREATE and m & FAN_DELETE and ev.tkey != NULL:
                # One file (the target) made, then deleted: records are
                # merged by target, and it cannot be made after it is gone.
                # What the tree holds at the name is that file (a listing
                # saw it before it went) or a later one, whose own record
                # is still to come: either way it goes.
                self._created(d, name, False, pid, mods, False)
                self._deleted(d, name, pid)
            elif m & FAN_CREATE and m & FAN_DELETE:
                # Merged: which came first?  What is there now, and what the
                # tree held before, tell.
                prior = name in d.entries
                now = _lstat_now(PyBytes_FromStringAndSize(self._pbuf, k))
                if now is not None:
                    if prior:
                        self._deleted(d, name, pid)
                    self._created(d, name, now[0], pid, mods, False)
                else:
                    if not prior:
                        self._created(d, name, isdir, pid, mods, False)
                    self._deleted(d, name, pid)
            elif m & FAN_CREATE:
                self._created(d, name, isdir, pid, mods, False)
            elif m & FAN_DELETE:
                if mods:
                    self._changed(d, name, mods, isdir, pid)
                self._deleted(d, name, pid)
            elif mods:
                self._changed(d, name, mods, isdir, pid)
        return 0

    cdef int _dir_entry(self, uint64_t m, _Dir d, bytes name, bytes k,
                        object pid) except -1:
        # A directory (key k) made or deleted as d/name.  The tree follows
        # the directory, not the name: one the tree already holds elsewhere
        # (a listing ran ahead of the records) stays there, and a name the
        # tree holds for another directory or a file is a later one's.
        cdef _Dir c = self._node_of(k)
        if c is None:
            v = d.entries.get(name)
            if type(v) is _Dir and (<_Dir>v).key is None:
                c = <_Dir>v                 # a node without a key: by name
        if m & FAN_DELETE:
            # Gone for good.  With FAN_CREATE the record is the creation's,
            # the deletion merged into it: records still to be read (renames
            # of it) happened before it went, and must not bring it back.
            self._dead.add(k)
            if c is not None:
                if c.parent is not None:
                    self._deleted(c.parent, c.name, pid)
            elif m & FAN_CREATE and name not in d.entries:
                self._emit_at(K_CREATED | K_DELETED, d, name, len(name), True,
                              pid)
            return 0
        if c is not None:
            if c.parent is not None and d.entries.get(name) is not c:
                # Where a listing ahead of the records saw it: it was made
                # here, and the records to come take it there.
                self._relocate(c, d, name, pid)
            return 0
        if k in self._dead or name in d.entries:
            return 0
        self._target = k
        try:
            self._created(d, name, True, pid, 0, False)
        finally:
            self._target = None
        return 0

    cdef int _dir_moved(self, _Dir d1, bytes n1, _Dir d2, bytes n2, bytes k,
                        object pid) except -1:
        # The directory k renamed from d1/n1 to d2/n2 (either side None:
        # outside the roots).  Followed by its key: the tree may hold it
        # elsewhere than d1/n1 (a listing ahead of the records saw it
        # there), or not at all (then it is new to the tree, and listed by
        # its handle).
        cdef _Dir c = self._node_of(k)
        cdef bint into = d2 is not None and not self._excluded_entry(d2, n2) \
            and k not in self._dead
        if c is None and d1 is not None:
            v = d1.entries.get(n1)
            if type(v) is _Dir and (<_Dir>v).key is None:
                c = <_Dir>v                 # a node without a key: by name
        if c is not None and c.parent is None:
            return 0                        # a root: see _fan_roots
        if c is None:
            if not into:
                return 0
            if type(d2.entries.get(n2)) is _Dir:
                # Another directory: replaced by the rename, or a later one
                # a listing saw (the records bring it back).
                self._deleted(d2, n2, pid)
            self._target = k
            try:
                self._created(d2, n2, True, pid, 0, True)
            finally:
                self._target = None
        elif into:
            if d2.entries.get(n2) is not c:
                self._relocate(c, d2, n2, pid)
        else:
            self._deleted(c.parent, c.name, pid)
        return 0

    cdef int _relocate(self, _Dir c, _Dir d2, bytes n2, object pid) except -1:
        # Put the node c at d2/n2, where a record says its directory went.
        # If d2 is below c in the tree, a listing ahead of the records put
        # something on that path where the records have not taken it yet,
        # and which link that is cannot be told: the subtree is rescanned
        # (reported as an overflow), never made a cycle.
        if _under(d2, c):
            self._rescan_at([c.parent])
            return 0
        return self._moved(c.parent, c.name, d2, n2, True, pid)

    cdef object _entry_now(self, _Dir d, bytes name):
        # Through d's handle: d's path in the tree may be an old one.
        cdef int fd
        mfd = None if d.key is None else self._mounts.get(d.key[:8])
        if mfd is None:
            return _Tree._entry_now(self, d, name)
        fd = fib_fs_fan_open(<int>mfd, <const unsigned char *>
                             PyBytes_AS_STRING(d.key), len(d.key),
                             O_PATH | O_DIRECTORY)
        if fd < 0:
            return None
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            c_close(fd)
        return (_stat.S_ISDIR(st.st_mode), (st.st_ino, st.st_size,
                                            st.st_mtime_ns))
