"""The errors fibers-shadow's parts raise, in one module that imports none
of them.

Design: the settings check store URLs (``config`` calls ``store``) and the
store reports a bad URL as a setting's error (``store`` raises
``ConfigError``); with the errors here, the modules import each other one
way only.  Each module re-exports the errors it raises, so
``config.ConfigError`` or ``journal.JournalError`` still name them.
"""

from __future__ import annotations

__all__ = ["ConfigError", "StoreError", "JournalError", "StateError"]


class ConfigError(Exception):
    """A setting is missing, malformed or points at nothing.  The message
    is meant for the user as is."""


class StoreError(Exception):
    """The store cannot be reached or refused a write; the shipper
    reconnects and resends."""


class JournalError(Exception):
    """The journal cannot be written (disk full, read-only, corrupt).
    Nothing of the failed commit is in the file."""


class StateError(ValueError):
    """The state directory does not match the journal (a journal missing
    or replaced, a root that is another directory now): starting would
    report a wrong picture, so fibers-shadow refuses to."""
