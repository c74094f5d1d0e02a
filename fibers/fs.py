"""fibers.fs: file-system activity, read by serial-looking code.

    import fibers, fibers.fs

    def main():
        with fibers.fs.watch("/srv/data", exclude=["*.tmp"]) as w:
            for ev in w:                      # parks this fiber only
                print(ev.seq, ev.kind, ev.path)

    fibers.run(main)

``watch(paths, events=ALL, *, recursive=True, exclude=(), backend=None,
snapshot=None, baseline=None, max_queue=65536, unlimited_queue=True,
coalesce=0.001)``
returns a
:class:`Watcher` over one directory or several.

- ``events``: the kinds to deliver (a subset of :data:`KINDS`); change them
  later with :meth:`Watcher.set_events`, which changes the kernel's mask in
  place.  ``overflow`` and ``error`` are always delivered.
- ``exclude``: glob patterns (matched against the entry's name, or against
  the whole path if the pattern has a ``/``) and directories (everything
  under them).  Excluded events are dropped in C, before Python sees them,
  and excluded directories are not watched at all.
- ``backend``: ``'fanotify'``, ``'inotify'`` or None.  None picks fanotify
  where it can run (root or CAP_SYS_ADMIN, Linux 5.17+, a filesystem that
  takes FID marks) and inotify elsewhere; the environment variable
  ``FIBERS_FS_BACKEND`` overrides that choice.  Asking for fanotify where it
  cannot run raises OSError with the reason; :func:`backends` tells.
- ``snapshot``: a file where the watcher keeps its picture of the tree.  If
  the file exists, ``watch`` lists the tree and reports what changed since
  it was saved (created / deleted / modified) before any live event; the
  picture is saved again by ``close()`` and :meth:`Watcher.save_snapshot`.
  A snapshot of other roots, or of a root that has since been replaced
  (its device and inode differ), is refused with ValueError: delete the
  file to start afresh.
- ``baseline``: a picture of the tree kept by the application itself (a
  dict as :meth:`Watcher.picture` returns: path bytes -> ``(is_dir,
  (st_ino, st_size, st_mtime_ns) or None)``); like a snapshot, ``watch``
  reports what differs from it before any live event.  An application
  that must never report a change twice or miss one across a crash keeps
  this picture in the same transaction as what it did with the events
  (fibers-shadow keeps it in its journal).
- ``max_queue``: events held for the consumer before the watcher stops
  reading the kernel (which then overflows, and that is reported).
- ``coalesce``: after a read that found events, the reader waits this long
  (seconds) before the next, so a burst is read in batches: at most one
  wake-up per ``coalesce``, which is most of the CPU a watcher spends.  A
  lone event is read at once; the added latency is at most ``coalesce``.
  0 reads again at once.
- ``unlimited_queue``: fanotify only: ask the kernel for an unbounded queue
  (FAN_UNLIMITED_QUEUE).  With False the kernel's
  ``/proc/sys/fs/fanotify/max_queued_events`` applies.

Reading: ``for ev in watcher``, ``watcher.get(timeout=None)``,
``watcher.get_batch(max_events=1024, timeout=None)``.  Each parks only the
calling fiber; called outside any fiber, each runs the scheduler meanwhile,
as fibers' other blocking words do.  A timeout raises
:class:`fibers.Timeout`.

Event kinds, and what each backend reports them from:

==============  ==========================  ===========================
kind            inotify                     fanotify
==============  ==========================  ===========================
created         IN_CREATE; an unpaired      FAN_CREATE; a FAN_RENAME
                IN_MOVED_TO; an entry       from outside the roots
                found by listing a new
                directory
deleted         IN_DELETE; an unpaired      FAN_DELETE; a FAN_RENAME
                IN_MOVED_FROM (moved out)   to outside the roots
modified        IN_MODIFY (a write)         FAN_MODIFY
closed_write    IN_CLOSE_WRITE              FAN_CLOSE_WRITE
attrib          IN_ATTRIB (mode, owner,     FAN_ATTRIB
                times, link count, xattrs)
moved           IN_MOVED_FROM + IN_MOVED_TO FAN_RENAME (both sides in
                paired by cookie            the roots)
overflow        IN_Q_OVERFLOW               FAN_Q_OVERFLOW
error           a directory could not be    (same, for listings)
                watched (ENOSPC: out of
                max_user_watches; EACCES)
error (ENOENT)  a root deleted or moved     a FAN_DELETE or FAN_RENAME
                away: IN_DELETE_SELF /      of the root's name in its
                IN_MOVE_SELF on the root    parent (the record's target
                                            handle is the root's)
==============  ==========================  ===========================

- ``pid`` is known on fanotify only (the process that made the change).
- A directory ``deleted`` (or moved out) is preceded by ``deleted`` for
  everything the watcher knew inside it, deepest first.  A directory
  ``moved`` moves its whole subtree.
- A root that is deleted, moved away or replaced (a directory renamed
  over it) is reported as ``deleted`` for everything the watcher knew
  inside it, deepest first, then one ``error`` event with the root's path
  and ``errno`` ENOENT; nothing is reported from the moved directory any
  more, under either path.  The root stays in :attr:`Watcher.roots`
  (``stats()["missing_roots"]`` counts such roots; :meth:`Watcher.remove`
  still drops one), and the watcher waits for a directory at its path
  again, watching the deepest ancestor that is left (inotify: a watch on
  it; fanotify: its filesystem mark already sees it), never polling.
  When one is made there or moved there, it is watched and its contents
  are reported ``created``, as for a directory moved into the tree.
- fanotify merges queued events on one entry; the watcher splits them again
  in the order created, modified, attrib, closed_write, deleted (a create
  and a delete of one object merged are always that order).
- A reader that falls behind (a busy scheduler) applies events about names
  that have since been renamed or replaced; both backends still bring a
  consumer's model to the true tree, exactly or, where the queued events
  cannot tell, through an ``overflow`` and a rescan of the affected
  subtree.
- After an ``overflow``, the watcher rescans every root and emits created /
  deleted / modified for each difference from its picture of the tree, so a
  consumer that applies the events ends with the true state.  On inotify an
  ``overflow`` also reports a directory whose watch turned out, once the
  reader caught up, not to be on that directory (the reader ran far behind
  a tree being renamed); then that directory's parent is rescanned.  The
  rescan also looks at each root's path, so a root that went (or came
  back) while events were lost is handled as above.  A file whose change
  was already reported may be reported ``modified`` once more.
- ``time`` is the scheduler's clock (:func:`fibers.now`) when the event was
  read; ``seq`` counts each watcher's events from 1 with no gaps.
"""

from ._fs import ALL, KINDS, Event, Watcher, backends, watch

__all__ = ["ALL", "KINDS", "Event", "Watcher", "backends", "watch"]
