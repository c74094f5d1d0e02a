"""The state directory, checked against its journal.

Design: the journal's picture of the tree is what start-up diffs the disk
against, so a picture that does not belong to the disk would report a
wrong world: a journal that vanished or was replaced (its unshipped events
gone), or a root that is another directory now.  These are refused at
start (StateError, ``--reset`` starts afresh) and, for the journal, while
running, rather than guessed around.  Two facts make them checkable: a
small marker file names the journal's source id (proof, if the journal
vanishes, that one existed), and the journal keeps each root's device and
inode.
"""

from __future__ import annotations

import os

import fibers

from .errors import StateError
from .journal import Journal, journal_path, marker_path

__all__ = ["open_journal", "root_ids", "watch_journal", "real", "root_id"]


def open_journal(state_dir: str, host: str, source: str = "",
                 on_error=None) -> Journal:
    """The state directory's journal, opened (see :class:`Journal` for
    ``source`` and ``on_error``) and checked against the marker, which a
    new journal writes.  StateError if a journal existed and is gone or
    was replaced; JournalError if it cannot be opened."""
    jpath = journal_path(state_dir)
    marker = _read_marker(state_dir)
    if marker is not None and not _nonempty(jpath):
        raise StateError(
            f"the journal {jpath} is missing or empty, but the state "
            f"directory shows one existed (source {marker}); its "
            f"unshipped events are gone; to start afresh, run with "
            f"--reset")
    j = Journal(jpath, host, source, on_error=on_error)
    try:
        if marker is not None and marker != j.own_source:
            raise StateError(
                f"the journal {j.path} was replaced (source "
                f"{j.own_source}, the state directory says {marker}); to "
                f"start afresh, run with --reset")
        if marker is None:
            _write_marker(state_dir, j.own_source)
    except BaseException:
        j.close(1.0)
        raise
    return j


def root_ids(journal: Journal, roots: list):
    """``(ids, known)``: each root's (device, inode), and the roots the
    journal has a picture of.  StateError if one of those is not the
    directory the journal describes (replaced or moved)."""
    ids = {r: root_id(r) for r in roots}
    known = [r for r in roots if journal.has_picture and r in journal.roots]
    for r in known:
        if journal.roots[r] is not None and ids[r] != journal.roots[r]:
            raise StateError(
                f"the root {os.fsdecode(r)} is not the directory the "
                f"journal describes (device and inode differ: it was "
                f"replaced or moved); to start afresh, run with "
                f"--reset")
    return ids, known


def watch_journal(journal: Journal, state_dir: str):
    """Return never; raise StateError once the journal's file is deleted
    or replaced (checked every second)."""
    # A journal deleted or replaced under a running daemon would take
    # every later event with it, silently (SQLite writes on to the
    # unlinked file): stop, and say why.
    path = journal.path
    first = os.stat(path)
    while True:
        fibers.sleep(1.0)
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (first.st_dev,
                                                   first.st_ino):
            raise StateError(
                f"the journal {path} was deleted or replaced while "
                f"running (the state directory {state_dir} removed?); "
                f"stopping, since events could no longer be kept")


def real(root) -> bytes:
    """A root as the journal keys it: its real path, bytes."""
    r = os.path.realpath(os.fsencode(root))
    return r.rstrip(b"/") if len(r) > 1 else r


def root_id(r: bytes):
    """The (device, inode) of the root at ``r``."""
    st = os.stat(r)
    return (st.st_dev, st.st_ino)


def _nonempty(path) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _read_marker(state_dir):
    try:
        with open(marker_path(state_dir)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _write_marker(state_dir, source):
    path = marker_path(state_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(source + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
