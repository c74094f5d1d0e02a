# fibers.fs on inotify: one watch per directory, made recursive by hand.
#
# Included by _fs.pyx.  The hard parts, as Watchman does them:
# - A new directory is watched *before* it is listed, and the listing
#   reports what is already inside (`mkdir -p a/b/c && touch a/b/c/f`
#   happens faster than any watcher can add three watches).  Whatever the
#   listing and the queued events both report is deduplicated by the tree.
# - IN_MOVED_FROM / IN_MOVED_TO pair by cookie.  The pair is adjacent in
#   the queue, but a read may end between them, so an unpaired FROM waits
#   MOVE_GRACE (5 ms) for the next read (_pending; the reader's wait
#   between reads is this backend's own, _wait_more); anything else that
#   arrives first, or the grace running out, makes it a deletion (a move
#   out of the tree).  An unpaired TO is a creation, listed like a new
#   directory.
# - Watches are forgotten on IN_IGNORED; ENOSPC (max_user_watches) is an
#   'error' event naming the directory left unwatched, never swallowed.
# - A reader that runs behind the kernel (a busy scheduler, a flood) holds a
#   tree that describes the past while paths resolve in the present: the
#   directory created at a/x may have been renamed, and a/x may name another
#   one, by the time the event is read.  So a watch is added through an O_PATH
#   fd of the directory and records that directory's inode (the node's key); a
#   listing names its inode too, and one of another directory than the watch's
#   is not merged (_list).  A wd belongs to one node (_by_wd: wd -> node,
#   _wd_of: node -> wd, both this backend's): inotify_add_watch answering with
#   a wd another node holds means the path names that node's directory (a
#   rename still queued), and the new node stays without a watch until the
#   queue says more: it is an alias of that directory (_aliases), and if the
#   events drop the owner while it stands, it inherits the wd.  Listings at
#   two moments can make two aliases of one directory; one inherits, the
#   other stays an alias of the heir, so the directory is never left
#   unwatched while a node of it is in the tree.  Each node watched (or left
#   without a watch) by a path is checked once the queue has been read to the
#   end and nothing new has come while checking: lstat of its path must give
#   its watch's inode.  One that fails is reported ('overflow'), watched again
#   and its parent rescanned; one never listed is listed.  Those repairs (and
#   a rescan's listings) can raise doubts of their own after the last event,
#   so the idle reader reads again every 5 ms while any are left (_recheck),
#   and stats() says 'rescanning' until they are settled, and while a check
#   runs (it parks on the pool, and what it finds is reported after the
#   events of the read that ran it).  So a lagging reader is exact when the
#   events allow it and never silent when they do not.
# - A root's own watch reports it deleted or moved away (IN_DELETE_SELF /
#   IN_MOVE_SELF).  A root that is gone is waited for with a watch on the
#   deepest ancestor left (IN_CREATE | IN_MOVED_TO, the name filtered
#   here), added with IN_MASK_ADD since that directory may be in the tree
#   too (one watch per inode), and removed once nothing waits there.

from libc.stdint cimport uint32_t

cdef extern from "fib_fs.h":
    int fib_fs_ino_watch(int ifd, const char *path, uint32_t mask,
                         int via_proc, unsigned long long *ino)
    long fib_fs_queued(int fd)
    ctypedef struct fib_fs_ino:
        int wd
        uint32_t mask
        uint32_t cookie
        const char *name
        size_t nlen
    int fib_fs_ino_next(const char *buf, size_t len, size_t *off,
                        fib_fs_ino *ev)
    int inotify_init1(int flags)
    int inotify_add_watch(int fd, const char *path, uint32_t mask)
    int inotify_rm_watch(int fd, int wd)
    enum:
        IN_NONBLOCK
        IN_CLOEXEC
        IN_CREATE
        IN_DELETE
        IN_MODIFY
        IN_CLOSE_WRITE
        IN_ATTRIB
        IN_MOVED_FROM
        IN_MOVED_TO
        IN_DELETE_SELF
        IN_MOVE_SELF
        IN_ONLYDIR
        IN_MASK_ADD
        IN_DONT_FOLLOW
        IN_EXCL_UNLINK
        IN_Q_OVERFLOW
        IN_IGNORED
        IN_ISDIR


# How long an unpaired IN_MOVED_FROM waits for its IN_MOVED_TO (seconds).
cdef double MOVE_GRACE = 0.005


def _stat_inos(list paths):
    # Each path's inode number (lstat), or -1 if it names nothing.
    out = []
    for p in paths:
        try:
            out.append(os.lstat(p).st_ino)
        except OSError:
            out.append(-1)
    return out


cdef class _InotifyWatcher(Watcher):

    cdef int _open(self) except -1:
        cdef int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        self._backend_name = "inotify"
        self._by_wd = []
        self._wd_of = {}
        self._pending = None
        self._nw = 0
        self._doubted = []
        self._aliases = {}
        self._via_proc = os.path.isdir(b"/proc/self/fd")
        if fd < 0:
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self._fd = fd
        return 0

    cdef uint32_t _mask(self):
        cdef uint32_t m = (IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                           IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                           IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
        if self._kinds & K_MODIFIED:
            m |= IN_MODIFY
        if self._kinds & K_CLOSED_WRITE:
            m |= IN_CLOSE_WRITE
        if self._kinds & K_ATTRIB:
            m |= IN_ATTRIB
        return m

    cdef int _add_watch(self, _Dir d) except -1:
        # 0, or the errno of a refusal.  d.key: the inode watched (or found
        # at the path), 0 if none.
        cdef unsigned long long ino
        cdef int wd = fib_fs_ino_watch(self._fd, PyBytes_AS_STRING(d.path),
                                       self._mask(), self._via_proc, &ino)
        d.key = ino
        if wd < 0:
            return -wd
        while len(self._by_wd) <= wd:
            self._by_wd.append(None)
        owner = self._by_wd[wd]
        if owner is not None and owner is not d:
            # Another node's directory: the path was renamed or replaced
            # after the event that made d, and the queue still holds how.
            # Taking the wd would blind that node; d gets it if the events
            # drop that node (_forget) while d stands.
            al = self._aliases.setdefault(ino, [])
            if d not in al:
                al.append(d)
            return 0
        if owner is None:
            self._nw += 1
        self._by_wd[wd] = d
        self._wd_of[d] = wd
        return 0

    cdef bint _owns(self, _Dir d):
        cdef int wd = self._wd_of.get(d, -1)
        return 0 <= wd < len(self._by_wd) and self._by_wd[wd] is d

    cdef int _watch_root(self, _Dir d) except -1:
        cdef int err = self._add_watch(d)
        if err:
            raise OSError(err, f"inotify_add_watch: {os.strerror(err)}",
                          os.fsdecode(d.path))
        return 0

    cdef int _watch_dir(self, _Dir d) except -1:
        # Idempotent: a node that has its watch keeps it (a moved one).  One
        # that gets a watch now is listed by the caller (listed is False).
        cdef int err
        if self._owns(d):
            return 0
        err = self._add_watch(d)
        if err and err != _errno.ENOENT and err != _errno.ENOTDIR and \
                err != _errno.ELOOP:
            # Out of watches (ENOSPC) or not allowed: say which subtree is
            # blind now, and keep watching the rest.
            self._emit_error(d.path, err)
            return 0
        if self._owns(d):
            d.listed = False
        self._doubt(d)
        return 0

    cdef object _list(self, _Dir d):
        # By path: merged only if it is of the directory d's watch is on.
        ino, listing = fibers.blocking(_list_dir, d.path)
        if d.key is not None and ino != d.key:
            return None
        return listing, None

    cdef int _doubt(self, _Dir d) except -1:
        if d.parent is not None:
            self._doubted.append(d)
        return 0

    cdef int _forget(self, _Dir d) except -1:
        cdef _Dir a
        cdef list al
        cdef int wd = self._wd_of.pop(d, -1)
        if wd >= 0 and self._by_wd[wd] is d:
            al = self._aliases.get(d.key)
            while al:
                a = <_Dir>al.pop(0)
                if not a.dead and a not in self._wd_of and a.key == d.key:
                    # The events say d's directory left, but a listing that
                    # ran ahead of them found it at a's path (a move whose
                    # far side no watch saw): a inherits the watch.  The
                    # other aliases stay in the list, aliases of a now: a's
                    # path may be an old one too (listings at two moments
                    # found the directory at two paths), and when the events
                    # drop a, the next one inherits.  Dropping them here
                    # took the watch off a directory still in the tree, which
                    # then went blind: its entries deleted or moved away
                    # stayed in the tree (ghosts), and a directory moved out
                    # of it unseen could be moved into its own subtree.
                    if not al:
                        del self._aliases[d.key]
                    self._by_wd[wd] = a
                    self._wd_of[a] = wd
                    self._doubt(a)
                    return 0
            self._aliases.pop(d.key, None)
            inotify_rm_watch(self._fd, wd)   # EINVAL if already gone
            self._by_wd[wd] = None
            self._nw -= 1
        return 0

    cdef int _caught_up(self) except -1:
        if self._doubted and self._pending is None and \
                fib_fs_queued(self._fd) == 0:
            self._audit()
        return 0

    cdef object _recheck(self):
        # Doubts can outlive the last event: a rescan's listings and an
        # audit's own repairs raise them after the queue was read to the
        # end.  The idle reader polls for them (bounded: a node found wrong
        # round after round without a new event, such as one directory
        # bind-mounted at two paths in the tree, waits for the next event).
        if (self._doubted or self._rescan_fiber is not None) and \
                self._idle_repairs < 8:
            return 0.005
        if self._auditing:
            # An audit parked on the pool (its lstats, its listings) has
            # taken the doubts it checks, and may still report what it
            # finds: stats() says 'rescanning' until it is done.
            return 0.005
        return None

    cdef int _audit(self) except -1:
        if self._auditing:
            return 0
        self._auditing = True
        try:
            return self._audit_now()
        finally:
            self._auditing = False

    cdef int _audit_now(self) except -1:
        # The tree now holds every event the kernel had queued; if nothing
        # new comes while the doubted nodes' paths are looked up, each path
        # must name its node's watched directory.
        cdef _Dir d, c
        cdef list nodes = [], bad = [], tops = [], stack
        cdef set seen = set()
        cdef long q
        for d in self._doubted:
            if not d.dead and d not in seen:
                seen.add(d)
                nodes.append(d)
        # Taken now: a node doubted while the lstats below run on the pool
        # (a rescan's listing) is checked at the next catch-up, not dropped.
        self._doubted = []
        paths = [d.path for d in nodes]
        if len(paths) > 64:
            inos = fibers.blocking(_stat_inos, paths)
        else:
            inos = _stat_inos(paths)
        q = fib_fs_queued(self._fd)
        if q != 0 or self._pending is not None or self._closed:
            # changed meanwhile: at the next catch-up
            self._doubted = nodes + self._doubted
            return 0
        for d, ino in zip(nodes, inos):
            if d.dead or (ino == d.key and self._owns(d)):
                continue
            bad.append(d)
        if bad:
            self._idle_repairs += 1
        # Every wrong watch goes first, so a right one can take its wd.
        for d in bad:
            self._forget(d)
        for d in bad:
            self._watch_dir(d)
            d.listed = False
            stack = list(d.entries.values())
            while stack:                 # below it, watches to check again
                v = stack.pop()
                if type(v) is _Dir:
                    c = <_Dir>v
                    self._doubted.append(c)
                    stack.extend(c.entries.values())
            if d.parent not in tops:
                tops.append(d.parent)
        if tops:
            self._tnow = fibers.now()
            self._rescan_at(tops)
        for d in nodes:
            if not d.dead and not d.listed and d not in bad and \
                    self._owns(d):
                # Watched all along, but its listing found the path naming
                # another directory: list it now.
                self._scan_new(d, None)
        return 0

    cdef int _apply_mask(self) except -1:
        cdef uint32_t m = self._mask()
        cdef _Dir d
        cdef int wd
        for d in list(self._by_wd):
            if d is None or d not in self._wd_of:
                continue
            # Re-adding a watched path replaces its mask, same wd.
            wd = inotify_add_watch(self._fd, PyBytes_AS_STRING(d.path), m)
            if wd >= 0 and wd != <int>self._wd_of[d] and (
                    wd >= len(self._by_wd) or self._by_wd[wd] is None):
                inotify_rm_watch(self._fd, wd)   # the path moved under us
        return 0

    cdef object _wait_dir(self, bytes path):
        cdef int wd = inotify_add_watch(
            self._fd, PyBytes_AS_STRING(path),
            IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
            IN_ONLYDIR | IN_MASK_ADD)
        cdef int err
        if wd < 0:
            err = errno
            if err == _errno.ENOENT or err == _errno.ENOTDIR:
                return None
            raise OSError(err, f"inotify_add_watch: {os.strerror(err)}",
                          os.fsdecode(path))
        return wd

    cdef int _unwait(self, object token) except -1:
        cdef int wd = <int>token
        if wd >= len(self._by_wd) or self._by_wd[wd] is None:
            inotify_rm_watch(self._fd, wd)   # else the tree's watch too
        return 0

    cdef int _n_watches(self):
        cdef int n = self._nw
        for wd in self._waits:
            if wd >= len(self._by_wd) or self._by_wd[wd] is None:
                n += 1
        return n

    cdef int _wait_more(self, bint got) except -1:
        # An unpaired MOVED_FROM waits MOVE_GRACE for the next read, without
        # the reader's coalescing pause; its pair, if the move stayed in the
        # tree, is the next record.
        if self._pending is None:
            return Watcher._wait_more(self, got)
        try:
            fibers.wait_readable(self._fd, MOVE_GRACE)
        except fibers.Timeout:
            # The partner may have come while this fiber waited for its
            # turn on a busy scheduler: read first.
            self._drain()
            self._tnow = fibers.now()
            if self._pending is not None:
                self._flush_pending()
                self._caught_up()
            self._deliver()
        return 0

    cdef int _flush_pending(self) except -1:
        # An unpaired MOVED_FROM: the entry left the tree.
        cdef _Dir d
        if self._pending is not None:
            p = self._pending
            self._pending = None
            d = <_Dir>p[1]
            if not d.dead:
                self._deleted(d, p[2], None)
        return 0

    cdef int _parse(self, ssize_t n) except -1:
        cdef fib_fs_ino ev
        cdef size_t off = 0
        cdef int rc, bits
        cdef uint32_t m
        cdef _Dir d
        cdef Py_ssize_t k
        cdef bint isdir
        self._idle_repairs = 0
        while True:
            rc = fib_fs_ino_next(self._buf, <size_t>n, &off, &ev)
            if rc <= 0:
                if rc < 0:
                    raise OSError(-rc, "fibers.fs: a truncated inotify "
                                  "record")
                return 0
            m = ev.mask
            if m & IN_Q_OVERFLOW:
                self._flush_pending()
                self._overflowed()
                continue
            if self._waits and ev.wd in self._waits:
                # A directory a gone root waits on (it may be in the tree
                # too: then the record goes on below).
                self._flush_pending()
                if m & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    # It went as well: wait further up.
                    rs = self._waits.pop(ev.wd)
                    if not (m & IN_IGNORED):
                        self._unwait(ev.wd)
                    for r in rs:
                        self._waiting.pop(r, None)
                        self._arm(<_Dir>r)
                elif m & IN_ISDIR and m & (IN_CREATE | IN_MOVED_TO):
                    self._root_came(ev.wd, PyBytes_FromStringAndSize(
                        ev.name, ev.nlen))
            if ev.wd < 0 or ev.wd >= len(self._by_wd):
                continue
            d = <_Dir>self._by_wd[ev.wd]
            if d is None:
                continue
            if self._pending is not None and not (
                    m & IN_MOVED_TO and ev.cookie == self._pending[0]):
                self._flush_pending()
            if m & IN_IGNORED:
                if self._wd_of.get(d, -1) == ev.wd:
                    self._by_wd[ev.wd] = None
                    self._nw -= 1
                    del self._wd_of[d]
                    if not d.dead:
                        # its directory is gone; the tree hears of it from
                        # the parent, or the check finds it
                        self._doubt(d)
                continue
            if ev.nlen == 0:
                # The watched directory itself.  Its parent's watch reports
                # the same change by name, except for a root.
                if d.parent is None and not d.dead:
                    if m & (IN_DELETE_SELF | IN_MOVE_SELF):
                        self._root_gone(d, None)
                    elif m & IN_ATTRIB:
                        self._emit_path(K_ATTRIB, d.path, True, None)
                continue
            isdir = (m & IN_ISDIR) != 0
            if not (m & (IN_MOVED_FROM | IN_MOVED_TO)):
                # Excluded: dropped here, before any Python object.
                k = self._path_in(self._pbuf, d, ev.name, ev.nlen)
                if k < 0 or self._excluded(self._pbuf, k, ev.name):
                    continue
            name = PyBytes_FromStringAndSize(ev.name, ev.nlen)
            if m & IN_CREATE:
                self._created(d, name, isdir, None, 0, True)
            bits = 0
            if m & IN_MODIFY:
                bits |= K_MODIFIED
            if m & IN_ATTRIB:
                bits |= K_ATTRIB
            if m & IN_CLOSE_WRITE:
                bits |= K_CLOSED_WRITE
            if bits:
                self._changed(d, name, bits, isdir, None)
            if m & IN_DELETE:
                self._deleted(d, name, None)
            if m & IN_MOVED_FROM:
                self._pending = (ev.cookie, d, name, isdir)
            if m & IN_MOVED_TO:
                p = self._pending
                self._pending = None
                if p is not None and not (<_Dir>p[1]).dead:
                    # _moved weighs the exclusion of each side
                    self._moved(<_Dir>p[1], <bytes>p[2], d, name, isdir,
                                None)
                elif not self._excluded_entry(d, name):
                    # moved in from outside: a creation, unless its name is
                    # excluded (moves skipped the check above)
                    self._created(d, name, isdir, None, 0, True)
        return 0
