"""fibers-shadow: shadow a directory tree's activity to a store, live.

An application built only on fibers' public API: ``fibers.fs`` watches,
a pipeline of fibers filters, coalesces, journals to a local SQLite outbox
and ships to a store, while a control socket and the config file change
the rules as it runs.  Everything runs on one OS thread.

Run it::

    fibers-shadow --root ~/projects --store sqlite:////tmp/shadow.db --no-ui
    fibers-shadow ctl status                 # from another terminal
    fibers-shadow ctl set kinds=created,deleted
    fibers-shadow ctl pause                  # stop shipping; keep journaling
    sqlite3 /tmp/shadow.db 'select seq, kind, path from events'

(``python -m fibers.shadow`` is the same program.)  The store URL is
``sqlite:///RELATIVE/PATH`` (from the working directory),
``sqlite:////ABSOLUTE/PATH`` (four slashes: SQLAlchemy's convention) or
``postgresql://user@host/db``; the live UI needs the ``shadow`` extra
(``pip install 'fibers[shadow]'``), ``--no-ui`` does not.  ``--config FILE``
reads a TOML file (see :mod:`fibers.shadow.config` for its keys), which
is watched: saving it applies new rules within a second, and a bad edit
is logged while the old rules stay.  The state directory (default
``$XDG_STATE_HOME/fibers-shadow``) holds the journal (the outbox and the
picture of the tree) and the control socket; it is never shadowed itself.

Guarantees: every event that passes the rules reaches the store once,
with no gap and no duplicate in seq per (host, source), across store
outages, lost confirmations, SIGKILL and restarts; changes made while the
program was down are found at start-up by comparing the tree with the
journal's picture, which each commit changes together with the outbox, so
nothing is reported twice or missed.  Paths are bytes end to end.
SIGTERM or SIGINT drains for about 2 s and exits 0; what is left ships at
the next start.  Exit status 2 means bad input (a missing root, an
unreadable config, a bad store URL or a store directory that does not
exist, a second instance on the same state directory, the live UI without
rich, a journal missing or replaced, or a root replaced: ``--reset``
starts afresh); 1 means a stage failed (the journal could not be written,
the state directory was deleted), said on stderr and in the status.

Modules: ``config`` (settings, TOML: every key is described there),
``rules`` (what ships), ``stages`` (one class per stage, joined by
:class:`fibers.Queue`), ``journal`` (the outbox), ``store`` (the
destination), ``state`` (the state directory's checks), ``pipeline``
(``Shadow``: the life cycle), ``control`` (the socket and its commands),
``errors``, ``ui`` (the live terminal UI), ``__main__`` (the command line).
"""
