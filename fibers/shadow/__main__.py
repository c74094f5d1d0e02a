"""fibers-shadow's command line.

    fibers-shadow [--config FILE] [--root DIR]... [--store URL]
                  [--state-dir DIR] [--metrics HOST:PORT] [--no-ui]
                  [--reset]
    fibers-shadow ctl [--state-dir DIR] status|pause|resume|set KEY=VALUE

Design: everything runs in fibers.run on the main thread: the pipeline,
the control socket, the status output (the live UI of ui.py on a
terminal, JSON lines with --no-ui), the Prometheus endpoint with
--metrics (metrics.py) and the wait for SIGTERM/SIGINT.
Errors the user can fix (a missing root, an unreadable config, a bad
store URL or a store directory that does not exist, a second instance on
the same state directory, the live UI without rich, --metrics without
prometheus_client or on an address it cannot bind) are reported
in one line and exit with status 2, before anything starts.  SIGTERM and
SIGINT stop watching, drain into the journal, ship what can be shipped in
about 2 s, and exit 0; what is left ships at the next start.

``fibers-shadow ctl`` (the commands are in ``CTL_COMMANDS`` and
control.py) prints the reply as JSON and exits 0, or says what went
wrong on stderr and exits 1 (no instance running on that state
directory, a setting refused), or 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import signal
import sys
import textwrap

import fibers

from . import config, control
from .journal import JournalError
from .pipeline import Shadow

log = logging.getLogger("fibers.shadow")

DRAIN_SECONDS = 2.0


def _write_all(fd, data: bytes):
    # Cooperative: a slow reader of our stdout parks this fiber only.
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            fibers.wait_writable(fd)
            continue
        data = data[n:]


def _store_state(s) -> str:
    # "stalled 12 s": how long the store has not answered
    if s.get("stalled_for") is not None:
        return f"{s['state']} {s['stalled_for']:.0f} s"
    return s["state"]


def _status_line(st) -> str:
    j, s, c = st["journal"], st["store"], st["counts"]
    return (f"seen {c['seen']}  journaled {c['journaled']}  shipped "
            f"{c['shipped']}  depth {j['depth']}  lag {j['lag']}  store "
            f"{_store_state(s)}{'  PAUSED' if st['paused'] else ''}")


def _reporter(app, headless: bool):
    fd = sys.stdout.fileno()
    while True:
        fibers.sleep(1.0)
        st = app.status()
        if headless:
            _write_all(fd, (json.dumps(st) + "\n").encode())
        else:
            _write_all(fd, ("\r\x1b[K" + _status_line(st)).encode())


def _run_ui(ui, done):
    # A UI that fails has restored the terminal (its finally); the
    # application then stops rather than run on unseen.
    try:
        ui.run()
    except Exception:
        log.exception("the UI failed; stopping")
        done.set()


def _lock_state_dir(state_dir):
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as e:
        raise config.ConfigError(f"cannot create the state directory "
                                 f"{state_dir!r}: {e.strerror}") from None
    fd = os.open(os.path.join(state_dir, "lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise config.ConfigError(
                f"another fibers-shadow is running with the state "
                f"directory {state_dir!r}") from None
        raise
    return fd


def _headless(settings) -> bool:
    return not settings.ui or not sys.stdout.isatty()


def _live_ui(settings) -> bool:
    return (not _headless(settings) and sys.stdin.isatty()
            and os.environ.get("TERM", "dumb") != "dumb")


def _check_ui_deps(settings):
    # rich comes with the `shadow` extra only; without it the UI would
    # fail once the pipeline runs, so say so before anything starts.
    if not _live_ui(settings):
        return
    try:
        import rich.console  # noqa: F401
        import rich.text  # noqa: F401
    except ImportError as e:
        raise config.ConfigError(
            f"the live UI needs the package {e.name or 'rich'!r}, which is "
            f"not installed: pip install 'fibers[shadow]' (or run with "
            f"--no-ui)") from None


def _check_metrics_deps(settings):
    # prometheus_client and httptools come with the `metrics` extra.
    if not settings.metrics:
        return
    import importlib
    for name in ("prometheus_client", "httptools"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise config.ConfigError(
                f"--metrics needs the package {name!r}, which is not "
                f"installed: pip install 'fibers[metrics]'") from None


def _start_metrics(settings):
    # Bound before the pipeline starts, so an address that cannot be
    # bound is refused before anything runs.
    if not settings.metrics:
        return None, None
    from . import metrics
    address = config.parse_address(settings.metrics)
    try:
        return metrics.serve(address)
    except OSError as e:
        raise config.ConfigError(f"cannot serve metrics on "
                                 f"{settings.metrics}: {e.strerror or e}") \
            from None


def _serve(settings, overrides) -> int:
    headless = _headless(settings)
    live_ui = _live_ui(settings)
    app = Shadow(settings, overrides)
    done = fibers.Event()       # set: stop (a signal, a fatal error, the UI)
    why = {}

    def on_signal():
        why["signal"] = fibers.wait_os_signal(signal.SIGTERM, signal.SIGINT)
        done.set()

    def on_fatal():
        app.wait_fatal()
        done.set()

    sig = fibers.spawn(on_signal)
    fibers.yield_now()          # the signal handler is in place from here
    try:
        metrics_server, registry = _start_metrics(settings)
    except config.ConfigError as e:
        print(f"fibers-shadow: {e}", file=sys.stderr)
        sig.kill()
        return 2
    try:
        app.start()
    except (OSError, JournalError, ValueError) as e:
        print(f"fibers-shadow: cannot start: {e}", file=sys.stderr)
        sig.kill()
        if metrics_server is not None:
            metrics_server.close()
        return 2
    if registry is not None:
        from .metrics import ShadowCollector
        registry.register(ShadowCollector(app))
        host, port = metrics_server.address[:2]
        log.info("metrics on http://%s:%d/metrics",
                 f"[{host}]" if ":" in host else host, port)
    server = control.serve(app, control.socket_path(settings.state_dir))
    fatal = fibers.spawn(on_fatal)
    fd = sys.stdout.fileno()
    was_blocking = os.get_blocking(fd)
    if not sys.stdout.isatty():
        os.set_blocking(fd, False)
    ui = None
    if live_ui:
        from .ui import UI
        ui = UI(app, done.set)
        reporter = fibers.spawn(_run_ui, ui, done)
    else:
        reporter = fibers.spawn(_reporter, app, headless)
    try:
        done.wait()
        if "signal" in why:
            log.info("%s: draining for up to %.0f s", why["signal"].name,
                     DRAIN_SECONDS)
        server.stop()
        if ui is not None:
            ui.stop()               # it restores the terminal and returns
            try:
                reporter.join(3.0)
            except fibers.Timeout:
                pass
        if not reporter.dead:
            reporter.kill()
        shipped = app.stop(DRAIN_SECONDS)
        final = app.status()
        if headless:
            _write_all(fd, (json.dumps(final) + "\n").encode())
        elif live_ui:
            _write_all(fd, (_status_line(final) + "\n").encode())
        else:
            _write_all(fd, b"\n")
        if not shipped and app.fatal is None:
            log.info("%d event(s) left in the journal; they ship at the "
                     "next start", final["journal"]["depth"])
    finally:
        for f in (sig, fatal, reporter):
            if not f.dead:
                f.kill()
        if metrics_server is not None:
            metrics_server.close()
        os.set_blocking(fd, was_blocking)
    if app.fatal is not None:
        print(f"fibers-shadow: stopped: {app.fatal}", file=sys.stderr)
        return 1
    return 0


def _parser():
    p = argparse.ArgumentParser(
        prog="fibers-shadow",
        description="Shadow file-system activity to a store, on fibers. "
                    "'fibers-shadow ctl --help' for the control client.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML settings file (watched: edits apply live)")
    p.add_argument("--root", metavar="DIR", action="append",
                   help="directory to shadow (repeatable; overrides the "
                        "file's roots)")
    p.add_argument("--store", metavar="URL",
                   help="where events go: sqlite:///RELATIVE/PATH (from "
                        "the working directory), sqlite:////ABSOLUTE/PATH "
                        "(four slashes), or "
                        "postgresql://[USER@]HOST[:PORT]/DB (default: "
                        "store.db in the state directory)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="journal and control socket (default: "
                        "$XDG_STATE_HOME/fibers-shadow)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics over HTTP there (e.g. "
                        "127.0.0.1:9464; needs the metrics extra)")
    p.add_argument("--no-ui", action="store_true",
                   help="headless: one JSON status line per second on "
                        "stdout")
    p.add_argument("--reset", action="store_true",
                   help="start afresh: forget the journal (and any event "
                        "in it not yet shipped) and the picture of the "
                        "tree; the store keeps what it has")
    return p


def _reset(state_dir):
    """Remove the journal and its marker (under the state lock)."""
    from .journal import journal_path, marker_path
    j = journal_path(state_dir)
    for p in (j, j + "-wal", j + "-shm", marker_path(state_dir),
              os.path.join(state_dir, "snapshot")):
        try:
            os.unlink(p)
        except FileNotFoundError:
            continue
        log.info("reset: removed %s", p)


# The control client's commands, for its --help (control.py serves them).
CTL_COMMANDS = {
    "status": "print the running instance's status as JSON: counts, "
              "journal (depth, lag), store (state, last error), rules, "
              "watcher",
    "pause": "stop shipping; events are still journaled, and ship after "
             "resume",
    "resume": "ship again, from the first event the store has not "
              "confirmed",
    "set": "set KEY=VALUE: change one setting now, KEY one of "
           f"{', '.join(config.RULE_KEYS)} (lists comma-separated, "
           "e.g. kinds=created,deleted); prints the settings in force.  "
           "Lasts until the config file is read again or a restart",
}


def _ctl_parser():
    p = argparse.ArgumentParser(
        prog="fibers-shadow ctl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Talk to a running fibers-shadow, through the control\n"
                    "socket in its state directory.",
        epilog="commands:\n" + "\n".join(
            textwrap.fill(text, 76, initial_indent=f"  {name:<10}",
                          subsequent_indent=" " * 12)
            for name, text in CTL_COMMANDS.items()))
    p.add_argument("--state-dir", metavar="DIR",
                   default=config.default_state_dir(),
                   help="the state directory of the instance to talk to "
                        "(default: $XDG_STATE_HOME/fibers-shadow)")
    p.add_argument("command", choices=tuple(CTL_COMMANDS),
                   help="what to do (see below)")
    p.add_argument("assignment", nargs="?", metavar="KEY=VALUE",
                   help="for set: the setting and its new value")
    return p


def _ctl(argv) -> int:
    p = _ctl_parser()
    a = p.parse_args(argv)
    if a.command == "set":
        if not a.assignment:
            p.error("set needs KEY=VALUE")
        try:
            key, value = config.parse_set(a.assignment)
        except config.ConfigError as e:
            p.error(str(e))
        req = {"cmd": "set", "key": key, "value": value}
    else:
        if a.assignment:
            p.error(f"{a.command} takes no argument")
        req = {"cmd": a.command}
    path = control.socket_path(os.path.abspath(a.state_dir))
    try:
        reply = control.request(path, req)
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"fibers-shadow ctl: no fibers-shadow is running with the "
              f"state directory {a.state_dir!r}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"fibers-shadow ctl: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"fibers-shadow ctl: {reply.get('error')}", file=sys.stderr)
        return 1
    reply.pop("ok")
    body = reply.get("status") or reply.get("rules") or reply
    print(json.dumps(body, indent=2, sort_keys=True))
    return 0


def main(argv=None) -> int:
    """The console script's entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ctl"]:
        return _ctl(argv[1:])
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="fibers-shadow: %(levelname)s: %(message)s")
    try:
        settings, overrides = config.load(a.config, a.root, a.store,
                                          a.state_dir, ui=not a.no_ui,
                                          metrics=a.metrics)
        _check_ui_deps(settings)
        _check_metrics_deps(settings)
        lock = _lock_state_dir(settings.state_dir)
        if a.reset:
            _reset(settings.state_dir)
    except config.ConfigError as e:
        print(f"fibers-shadow: {e}", file=sys.stderr)
        return 2
    try:
        # after the lock, which makes the state directory: the default
        # store lives there
        config.check_store(settings)
    except config.ConfigError as e:
        os.close(lock)
        print(f"fibers-shadow: {e}", file=sys.stderr)
        return 2
    try:
        return fibers.run(_serve, settings, overrides)
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
