"""The rules: which events ship, compiled from the settings.

Design: the filter is pure (no fibers, no I/O except one lstat for
``min_size``), so the stages can ask it about every event and a reload can
swap in a new one between two batches.  The globs are judged on the path
below its root, so the same rules fit any root.
"""

from __future__ import annotations

import fnmatch
import os

import fibers.fs

from . import config

__all__ = ["Rules"]


class Rules:
    """The filter, compiled from the settings.  A glob without ``/``
    matches any component of the path below its root (so ``.git`` or
    ``*.swp`` work anywhere); a glob with ``/`` matches the whole path
    below the root (``build/*``).  ``include`` empty means everything."""

    def __init__(self, s: config.Settings):
        self.kinds = frozenset(s.kinds)
        self.include = tuple(s.include)
        self.exclude = tuple(s.exclude)
        self.min_size = s.min_size
        self.roots = sorted((r.rstrip("/") + "/" for r in s.roots),
                            key=len, reverse=True)

    def _rel(self, path):
        for r in self.roots:
            if path.startswith(r):
                return path[len(r):]
        return path.lstrip("/")

    @staticmethod
    def _match(rel, globs):
        parts = rel.split("/")
        for g in globs:
            if "/" in g:
                if fnmatch.fnmatchcase(rel, g.strip("/")):
                    return True
            elif any(fnmatch.fnmatchcase(p, g) for p in parts):
                return True
        return False

    def path_ok(self, path) -> bool:
        if path is None:
            return False
        rel = self._rel(path)
        if self.include and not self._match(rel, self.include):
            return False
        return not (self.exclude and self._match(rel, self.exclude))

    def too_small(self, path) -> bool:
        """Whether the file at ``path`` is below ``min_size`` now (a file
        already gone is not: its event goes through)."""
        if self.min_size:
            try:
                return os.lstat(path).st_size < self.min_size
            except OSError:
                pass
        return False

    def apply(self, ev) -> list:
        """The events to ship for ``ev`` by kind and path (``min_size`` is
        judged later, see the coalescer): none, ``[ev]``, or, for a move
        the rules see only one side of (a path excluded, or the kind
        ``moved`` off), what a reader of the store should see instead: a
        ``deleted`` of the old path and/or a ``created`` of the new one.
        (A directory moved that way is reported for the directory only.)"""
        k = ev.kind
        if k == "moved":
            src_ok = self.path_ok(ev.src_path)
            dst_ok = self.path_ok(ev.path)
            if "moved" in self.kinds and src_ok and dst_ok:
                return [ev]
            out = []
            if src_ok and "deleted" in self.kinds:
                out.append(fibers.fs.Event(
                    "deleted", ev.src_path, None, ev.is_dir, ev.pid,
                    ev.time, ev.seq))
            if dst_ok and "created" in self.kinds:
                out.append(fibers.fs.Event(
                    "created", ev.path, None, ev.is_dir, ev.pid, ev.time,
                    ev.seq))
            return out
        if k in self.kinds and self.path_ok(ev.path):
            return [ev]
        return []

    def kernel_kinds(self) -> frozenset:
        """The kinds to ask the watcher for: a move must still be seen
        when only ``created`` or ``deleted`` is wanted."""
        if self.kinds & {"created", "deleted"}:
            return self.kinds | {"moved"}
        return self.kinds
