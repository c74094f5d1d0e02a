"""fibers-shadow: shadow a directory tree's activity to a store, live.

An application built only on fibers' public API: ``fibers.fs`` watches,
a pipeline of fibers filters, coalesces, journals to a local SQLite outbox
and ships to a store (``sqlite:///path`` for now), while a control socket
changes the rules as it runs.  Run it as ``fibers-shadow`` or
``python -m fibers.shadow``; ``fibers-shadow --help`` lists the options.

Modules: ``config`` (settings, TOML), ``journal`` (the outbox), ``store``
(the destination), ``pipeline`` (the stages), ``control`` (the socket),
``sync`` (a fiber mutex and channel), ``__main__`` (the command line).
"""
