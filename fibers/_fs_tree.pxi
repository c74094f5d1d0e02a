# fibers.fs: the tree.  No kernel here.
#
# Included by _fs.pyx, before the Watcher (which is a _Tree).  The tree is
# the watcher's picture of the directories under its roots: a _Dir node per
# directory, its entries name -> None (a file seen by an event, not yet
# listed) | (ino, size, mtime_ns) (a file) | a child _Dir.  It is driven by
# plain events on nodes (_created, _deleted, _changed, _moved, _root_gone,
# _overflowed), which the backends' parsers call, and by listings, which
# it asks of its world; it emits Events into _queue.  What it does:
# - Duplicates drop out against it: a 'created' for a name it holds (a
#   listing saw it first) or a 'deleted' for one it lacks emits nothing, so
#   a consumer's counts are exact.  A directory replaced by a file (or the
#   other way round) is a deletion, of its subtree too, and a creation.
# - Recursion and renames: a directory that enters the tree is listed and
#   what is inside is reported created (a new directory fills faster than
#   any watch is added); a renamed directory's node is re-parented and its
#   subtree's paths rewritten, one 'moved' for it; a side of a rename
#   outside the roots (or excluded) makes it a deletion or a creation.  A
#   rename into the moved directory's own subtree (as the tree has it: a
#   move out of that subtree went unseen) is never applied, which would
#   make a cycle: it is an overflow, and the roots are rescanned.
#   Subtrees go deepest first, so a per-path model needs no subtree rule.
# - Rescans: after an overflow, every root (or a subtree whose check
#   failed) is listed again and diffed against the tree; each difference
#   is confirmed (_entry_now) when it is emitted, so events still queued
#   in the kernel, replayed after, bring a consumer to the true state
#   instead of undoing the repair.
# - Roots that go: the contents are reported deleted, then an 'error'
#   (ENOENT); the root stays, dead, waiting on the deepest ancestor left
#   for the next name on its path, and a directory that appears there
#   becomes a new root node, listed like a directory moved in.
# - The picture: the tree flattened to path -> (is_dir, stat | None), which
#   snapshots store and baseline= diffs against.
#
# What the tree asks of its world: the backend contract's tree half, in
# the section at the end of _Tree.  Watcher answers it through paths
# (_fs.pyx), the backends where they know better (fanotify lists by
# handle), and _Replay, at the end of this file, from a dict: that is how
# tests/test_fs_tree.py drives this code without a kernel.


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------

@cython.final
cdef class _Dir:
    # A directory under a root.  entries: name (bytes) -> None (a file whose
    # stat is not known), (ino, size, mtime_ns) (a file), or a _Dir.

    def __repr__(self):
        return f"<_Dir {self.path!r} key={self.key!r} dead={self.dead}>"


cdef _Dir _new_dir(bytes path, bytes name, _Dir parent):
    cdef _Dir d = _Dir.__new__(_Dir)
    d.path = path
    d.name = name
    d.parent = parent
    d.entries = {}
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


# ---------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------

cdef class _Tree:

    def __cinit__(self, *args, **kwargs):
        self._pbuf = <char *>malloc(PATHCAP)
        self._pbuf2 = <char *>malloc(PATHCAP)
        if self._pbuf == NULL or self._pbuf2 == NULL:
            raise MemoryError()
        self._roots = []
        self._ex_dirs = []
        self._ex_pats = []
        self._ex_pat_path = []
        self._queue = collections.deque()
        self._waiting = {}
        self._waits = {}
        self._rescan_todo = []

    def __dealloc__(self):
        free(self._pbuf)
        free(self._pbuf2)

    # ---- exclusion ---------------------------------------------------------

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

    # ---- roots -------------------------------------------------------------

    cdef int _new_root(self, bytes path, object st) except -1:
        # path: absolute, resolved, no trailing slash; st: its stat figures.
        # Watched, then listed silently: the tree as it is now.
        cdef _Dir d
        for d in self._roots:
            if d.path == path:
                return 0
        d = _new_dir(path, os.path.basename(path), None)
        d.st = st
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

    cdef _Dir _node_at(self, bytes p):
        # The node for directory path p, walking from its root; None if p
        # is not under a root or the tree holds no directory there.
        cdef _Dir r = self._root_of(p), d
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
            if type(v) is not _Dir:
                return None
            d = <_Dir>v
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

    # ---- changes: what the backends' records say ---------------------------

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
        if not out1 and not is_dir and type(d1.entries.get(n1)) is _Dir:
            # A file renamed from a name the tree holds as a directory: not
            # the file (a listing ahead of the events, or events lost, put
            # the directory there).  The directory stays; the file comes
            # as if from outside.  Moving the node would move a subtree
            # under a 'moved' that says a file, which a consumer's model
            # cannot follow.
            out1 = True
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
        if type(v) is _Dir and _under(d2, <_Dir>v):
            # Into its own subtree, as the tree has it: impossible on disk,
            # so the tree missed a move out of that subtree (a directory in
            # it that no watch saw).  Never a cycle: the node stays where it
            # was and the roots are rescanned (reported as an overflow),
            # which puts both where they are now.
            d1.entries[n1] = v
            return self._rescan_at(None)
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
        # each difference with _entry_now first (rescans, where kernel
        # events still queued may already describe it).
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
                got = self._list(d)
            except OSError as e:
                if e.errno not in (_errno.ENOENT, _errno.ENOTDIR,
                                   _errno.ELOOP, _errno.ESTALE):
                    if emit or d is top:
                        self._emit_error(d.path, e.errno or 0)
                    continue
                got = None
            if d.dead or self._closed:
                continue
            if got is None:
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
            listing, keys = got
            d.listed = True
            self._tnow = self._now()
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
            self._deliver()
        return 0

    # ---- rescans -----------------------------------------------------------

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
        self._rescan_soon()
        return 0

    cdef int _rescan_pass(self) except -1:
        # One pass over what _rescan_at asked for; what it asks meanwhile
        # waits for the next pass.
        cdef _Dir r
        self._n_rescans += 1
        todo = self._rescan_todo
        self._rescan_todo = []
        for r in (list(self._roots) if None in todo else todo):
            if self._closed:
                return 0
            if r.parent is not None or r not in self._roots:
                # a subtree whose check failed (fs-lag's repair)
                if not r.dead:
                    self._scan(r, True, None, True)
                continue
            # A root's going or coming back may be among the events lost:
            # its path tells.
            if r.dead:
                self._arm(r)
                continue
            now = self._path_now(r.path)
            if now is None or not now[0] or (
                    r.st is not None and now[1][0] != r.st[0]):
                self._root_gone(r, None)
                continue
            self._scan(r, True, None, True)
        return 0

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
            now = self._path_now(r.path)
            if now is not None and now[0]:
                if self._reattach(r):
                    return 0
            else:
                a = r.path
                while True:
                    a = os.path.dirname(a)
                    if a == b"/":
                        break
                    now = self._path_now(a)
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
                    now = self._path_now(_join(a, name))
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
        now = self._path_now(old.path)
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

    # ---- the picture -------------------------------------------------------

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

    cdef dict _picture(self, bytes root):
        # _flatten, or with root (resolved) only that root's part.
        flat = self._flatten()
        if root is None:
            return flat
        pre = root if root == b"/" else root + b"/"
        return {p: v for p, v in flat.items()
                if p == root or p.startswith(pre)}

    cdef int _diff_from(self, old) except -1:
        # Report what differs between the picture ``old`` and the tree just
        # listed: deletions deepest first, then creations and changes.
        new = self._flatten()
        roots = self._root_paths()
        self._tnow = self._now()
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

    # ---- what the tree asks of its world -----------------------------------
    # The backend contract's tree half (the reader's half is Watcher's):
    # Watcher answers through paths, a backend overrides what it knows
    # better, _Replay answers from a dict.

    cdef object _list(self, _Dir d):
        # d's directory listed: ([(name, is_dir, (ino, size, mtime_ns))],
        # None | {name: key} for the directories in it, where the backend's
        # listings name them by key).  None if d's path does not name d's
        # directory now; OSError if it cannot be listed.  May park.
        raise NotImplementedError

    cdef object _entry_now(self, _Dir d, bytes name):
        # _path_now of the entry name in d's directory.
        return self._path_now(_join(d.path, name))

    cdef int _watch_root(self, _Dir d) except -1:
        # d is a root, or a gone root's directory back: see into it.
        # OSError if that cannot be.
        raise NotImplementedError

    cdef int _watch_dir(self, _Dir d) except -1:
        # d entered the tree below a root, or moved there (a recursive
        # tree): see into it.  Idempotent.
        return 0

    cdef int _forget(self, _Dir d) except -1:
        # d left the tree: nothing is seen through it any more.
        return 0

    cdef int _doubt(self, _Dir d) except -1:
        # d's watch or listing may not be of d's directory: check it once
        # the kernel's queue has been read to the end (inotify).
        return 0

    cdef int _keyed(self, _Dir d, object key) except -1:
        # d is the directory key names, from its parent's listing; None:
        # the listing named none (fanotify takes it by path).
        return 0

    cdef _Dir _node_of(self, object key):
        # The live node of the directory key names (fanotify), or None.
        return None

    cdef object _wait_dir(self, bytes path):
        # Start seeing the names that appear in directory path (for gone
        # roots): a token that _root_came is called with, None if path is
        # gone already, OSError if it cannot be seen.
        raise NotImplementedError

    cdef int _unwait(self, object token) except -1:
        # Nothing waits on token's directory any more.
        return 0

    # Not a backend's: Watcher's (through paths, the scheduler, fibers).

    cdef object _path_now(self, bytes path):
        # (is_dir, (ino, size, mtime_ns)) of what is at path now (never
        # through a final symlink), or None.
        raise NotImplementedError

    cdef double _now(self) except? -1:
        # The time events are stamped with.
        raise NotImplementedError

    cdef int _deliver(self) except -1:
        # Events are queued: let the consumers have them.
        return 0

    cdef int _rescan_soon(self) except -1:
        # _rescan_at asked for a rescan: run _rescan_pass until nothing is
        # asked (where listings park: in a fiber of its own).
        raise NotImplementedError


# ---------------------------------------------------------------------------
# A tree without a kernel
# ---------------------------------------------------------------------------

cdef class _Replay(_Tree):
    """A tree driven by hand: events are method calls, and its world is
    ``world``, a dict path (bytes) -> ``(is_dir, (ino, size, mtime_ns))``
    in the form :meth:`Watcher.picture` returns, which the caller changes
    as it likes between calls.  Listings, rescans and checks read it.
    Made, it lists its roots silently, then reports what differs from
    ``baseline`` (a picture), as ``watch(baseline=)`` does.
    Events name the directory by path and the entry by name (bytes), as
    the backends' records do; one for a directory the tree does not hold
    is dropped, as theirs are.  For tests/test_fs_tree.py: the same tree
    code the backends drive, with no kernel under it."""

    def __init__(self, dict world, roots, *, recursive=True, exclude=(),
                 events=ALL, baseline=None):
        self.world = world
        self.doubted = []
        self.waits = []
        self._recursive = recursive
        self._kinds = _kinds_mask(events)
        for x in exclude:
            x = os.fsencode(x)
            if x.startswith(b"/") and not any(c in x for c in b"*?["):
                self._ex_dirs.append(x)
            else:
                self._ex_pats.append(x)
                self._ex_pat_path.append(b"/" in x)
        for r in roots:
            self._new_root(r, world[r][1])
        if baseline is not None:
            self._diff_from(baseline)

    cdef _Dir _at(self, dirpath):
        return None if dirpath is None else self._node_at(dirpath)

    # ---- events ------------------------------------------------------------

    def created(self, dirpath, bytes name, bint is_dir=False,
                bint scan=True):
        """name appeared in dirpath (a new directory is listed, unless
        ``scan`` is false: fanotify sees inside it from its birth)."""
        cdef _Dir d = self._at(dirpath)
        if d is not None and not self._excluded_entry(d, name):
            self._created(d, name, is_dir, None, 0, scan)

    def deleted(self, dirpath, bytes name):
        cdef _Dir d = self._at(dirpath)
        if d is not None and not self._excluded_entry(d, name):
            self._deleted(d, name, None)

    def changed(self, dirpath, bytes name, kinds, bint is_dir=False):
        """modified / attrib / closed_write (the names in kinds)."""
        cdef _Dir d = self._at(dirpath)
        cdef int bits = _kinds_mask(kinds) & ~K_ALWAYS
        if d is not None and not self._excluded_entry(d, name):
            self._changed(d, name, bits, is_dir, None)

    def moved(self, dir1, bytes n1, dir2, bytes n2, bint is_dir=False):
        """A rename; a side whose directory is None or not in the tree is
        outside the roots."""
        cdef _Dir d1 = self._at(dir1), d2 = self._at(dir2)
        if d1 is not None or d2 is not None:
            self._moved(d1, n1, d2, n2, is_dir, None)

    def overflow(self):
        """Events were lost: an 'overflow', and a rescan is asked for."""
        self._overflowed()

    def rescan(self):
        """Run what overflow() asked for (a watcher runs it in a fiber);
        the number of passes."""
        cdef int n = 0
        while self._rescan_todo:
            self._rescan_pass()
            n += 1
        return n

    def root_gone(self, bytes path):
        """The root at path was deleted, moved away or replaced."""
        cdef _Dir r
        for r in self._roots:
            if r.path == path:
                self._root_gone(r, None)

    def root_came(self, bytes dirpath, bytes name):
        """A directory called name appeared in dirpath, which a gone root
        waits on."""
        self._root_came(dirpath, name)

    # ---- what it says ------------------------------------------------------

    def events(self):
        """The events emitted since the last call, in order."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def picture(self, root=None):
        return self._picture(None if root is None else os.fsencode(root))

    @property
    def roots(self):
        """[(path, gone)] of each root."""
        cdef _Dir r
        return [(r.path, r.dead) for r in self._roots]

    @property
    def rescanning(self):
        return bool(self._rescan_todo)

    # ---- its world ---------------------------------------------------------

    cdef object _list(self, _Dir d):
        cdef Py_ssize_t n = len(d.path) if d.path != b"/" else 0
        v = self.world.get(d.path)
        if v is None or not v[0]:
            return None
        out = []
        for p, (isd, st) in self.world.items():
            if len(p) > n + 1 and p[n] == 47 and p.startswith(d.path) and \
                    b"/" not in p[n + 1:]:
                out.append((p[n + 1:], isd, st))
        return out, None

    cdef object _path_now(self, bytes path):
        return self.world.get(path)

    cdef int _watch_root(self, _Dir d) except -1:
        v = self.world.get(d.path)
        if v is None or not v[0]:
            raise FileNotFoundError(_errno.ENOENT, "no such directory",
                                    os.fsdecode(d.path))
        return 0

    cdef int _doubt(self, _Dir d) except -1:
        self.doubted.append(d.path)
        return 0

    cdef object _wait_dir(self, bytes path):
        v = self.world.get(path)
        if path != b"/" and (v is None or not v[0]):
            return None
        self.waits.append(path)
        return path

    cdef double _now(self) except? -1:
        return 0.0

    cdef int _rescan_soon(self) except -1:
        return 0      # rescan() runs it
