"""Settings for fibers-shadow: a TOML file, overridden by command-line flags.

Design: one dataclass holds every setting, so the pipeline, the control
socket and the reloader all speak of the same names.  The file is parsed
into a fresh Settings and validated completely before anything uses it;
that is what lets a live reload keep the old rules when an edit is bad.
Flags are remembered as overrides and re-applied over every reload, so a
flag given at start-up keeps winning over the file for the whole run.

The file (every key optional)::

    roots = ["~/projects"]              # directories to shadow
    store = "sqlite:///~/shadow.db"     # where events are shipped:
                                        # sqlite:///RELATIVE/PATH,
                                        # sqlite:////ABSOLUTE/PATH or
                                        # postgresql://user@host/db
    state_dir = "~/.local/state/fibers-shadow"
    source = "laptop-home"              # optional; default: one per journal
    metrics = "127.0.0.1:9464"          # optional: serve Prometheus metrics

    [rules]                             # changeable while running
    kinds = ["created", "deleted", "modified", "moved"]
    include = []                        # globs; empty = everything
    exclude = ["*.swp", ".git/*"]
    min_size = 0                        # bytes; smaller files are skipped
    window_ms = 200                     # coalescing window per path

    [ship]
    batch = 500                         # rows per batch sent to the store
    window = 4                          # unacknowledged batches in flight

The keys, one by one.  A list may also be written as one string of
comma-separated items; a path may start with ``~``, and a relative one is
taken from the working directory.

Top level (a change in the file applies at the next start, except
``roots``):

- ``roots``: the directories to shadow, each with everything below it.
  Each must exist and be a directory.  A change in the file applies while
  running: a root added is watched from then on (its files as they are
  become part of the picture, not events), a root removed is forgotten.
  ``--root`` (repeatable) replaces the file's roots for the whole run.
  Required, from the file or the flag.
- ``store``: where the events are shipped, a URL: ``sqlite:///RELATIVE/
  PATH``, ``sqlite:////ABSOLUTE/PATH`` (four slashes), ``sqlite:///~/
  PATH``, or ``postgresql://[USER@]HOST[:PORT]/DB[?PARAM=VALUE...]``
  (also ``postgres://``).  A SQLite store's directory must exist.
  Default: ``store.db`` in the state directory.  ``--store`` overrides it.
- ``state_dir``: the journal (the outbox and the picture of the tree), the
  control socket and the lock that keeps a second instance out.  Never
  shadowed itself.  Default: ``$XDG_STATE_HOME/fibers-shadow`` (or
  ``~/.local/state/fibers-shadow``).  ``--state-dir`` overrides it.
- ``source``: the name of this stream of events in the store, whose rows
  are keyed by (host, source, seq).  Default: the journal's own id, 12
  random hex digits made with the journal.
- ``metrics``: ``HOST:PORT`` (``[HOST]:PORT`` for IPv6) to serve
  Prometheus metrics on, over HTTP: the application's counts, journal and
  store figures and the scheduler's (see docs/metrics.md).  Needs the
  ``metrics`` extra.  Default: empty (no endpoint).  ``--metrics``
  overrides it.

``[rules]`` (applied while running on every save of the file, and by
``ctl set KEY=VALUE`` under the same names):

- ``kinds``: the kinds of event shipped, at least one of ``created``,
  ``deleted``, ``modified``, ``moved``, ``attrib`` and ``closed_write``.
  Default: created, deleted, modified, moved.  A move with one side
  outside the rules, or with ``moved`` off, ships as a ``deleted`` of the
  old path and/or a ``created`` of the new one, as the kinds allow.  (The
  watcher's ``overflow`` and ``error`` reports are never shipped; the
  status counts them.)
- ``include``: globs; when not empty, only paths matching one ship.  A
  glob without ``/`` matches any component of the path below its root
  (``*.py``, ``.git``); one with ``/`` matches the whole path below the
  root (``src/*.c``).  Default: empty (everything).
- ``exclude``: globs, as ``include``; a path matching one does not ship.
  Default: empty.
- ``min_size``: bytes, 0 to 2**62.  A file smaller than this when its
  coalescing window ends is kept from the store (its deletion too) until
  it grows past it, and then ships as ``created`` (if that kind is on).
  Directories always ship.  Default: 0 (off).
- ``window_ms``: milliseconds, 0 to 60000.  An event waits this long
  before it is journaled, and meanwhile later ``modified``,
  ``closed_write`` or ``attrib`` events of its path and kind ride on it
  (ship as one); a new file's ``modified`` rides on its ``created``.
  Default: 200.

``[ship]`` (applied while running, as the rules):

- ``batch``: rows per batch sent to the store, 1 to 100000.  Default: 500.
- ``window``: batches sent and not yet confirmed by the store, at most,
  1 to 64.  ``ctl set`` calls it ``ship_window``.  Default: 4.

A change made by ``ctl set`` lasts until the file is read again (a save)
or the program restarts; to keep it, write it in the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

try:
    import tomllib as _toml
except ImportError:  # Python 3.10
    try:
        import tomli as _toml
    except ImportError:
        _toml = None

from fibers.fs import KINDS

from .errors import ConfigError
from .store import parse_url

__all__ = ["ConfigError", "Settings", "RULE_KEYS", "load", "parse_set",
           "default_state_dir", "apply_rule", "parse_address"]

# The kinds a user can pick; overflow and error are always reported.
USER_KINDS = tuple(k for k in KINDS if k not in ("overflow", "error"))
DEFAULT_KINDS = ("created", "deleted", "modified", "moved")

# Settings that may change while running (file reload, `ctl set`).
RULE_KEYS = ("kinds", "include", "exclude", "min_size", "window_ms",
             "batch", "ship_window")


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "fibers-shadow")


@dataclass
class Settings:
    """Everything fibers-shadow needs to run.  Each field is the key of
    the same name in the file (see the module's documentation), except
    ``ship_window`` (``window`` in ``[ship]``), ``ui`` (false with
    ``--no-ui``) and ``config_file`` (``--config``)."""
    roots: list = field(default_factory=list)
    store: str = ""                     # "" = sqlite in the state dir
    state_dir: str = field(default_factory=default_state_dir)
    source: str = ""                    # "" = the journal's own id
    metrics: str = ""                   # "" = no metrics endpoint
    kinds: frozenset = frozenset(DEFAULT_KINDS)
    include: tuple = ()
    exclude: tuple = ()
    min_size: int = 0
    window_ms: int = 200
    batch: int = 500
    ship_window: int = 4
    ui: bool = True
    config_file: str = ""

    @property
    def window(self) -> float:
        return self.window_ms / 1000.0

    def store_url(self) -> str:
        return self.store or "sqlite:///" + os.path.join(self.state_dir,
                                                         "store.db")

    def rules(self) -> dict:
        """The live-changeable settings, as plain JSON-able values."""
        return {"kinds": sorted(self.kinds), "include": list(self.include),
                "exclude": list(self.exclude), "min_size": self.min_size,
                "window_ms": self.window_ms, "batch": self.batch,
                "ship_window": self.ship_window}


def parse_address(v, what="metrics"):
    """``"HOST:PORT"`` (or ``"[V6HOST]:PORT"``) -> ``(host, port)``;
    ConfigError if malformed."""
    if not isinstance(v, str):
        raise ConfigError(f"{what} must be a HOST:PORT string, got {v!r}")
    host, sep, port = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""                       # an IPv6 address needs brackets
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT (or [IPV6]:PORT) with "
                          f"a port 0-65535, got {v!r}")
    return host, int(port)


def _path(v, what):
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{what} must be a non-empty string, got {v!r}")
    return os.path.abspath(os.path.expanduser(v))


def _str_list(v, what):
    if isinstance(v, str):
        v = [x for x in (s.strip() for s in v.split(",")) if x]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str)
                                                    for x in v):
        raise ConfigError(f"{what} must be a list of strings, got {v!r}")
    return tuple(v)


def _int(v, what, lo, hi):
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            raise ConfigError(f"{what} must be an integer, got {v!r}") \
                from None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(f"{what} must be an integer in [{lo}, {hi}], "
                          f"got {v!r}")
    return v


def apply_rule(s: Settings, key: str, value) -> None:
    """Set one live-changeable setting on ``s``, validating it (value may
    be the string form used by ``ctl set``, or the TOML value)."""
    if key == "kinds":
        kinds = _str_list(value, "kinds")
        if not kinds:
            # an empty set would silently shadow nothing at all
            raise ConfigError(f"kinds must name at least one kind of "
                              f"{', '.join(USER_KINDS)} (to stop shipping "
                              f"for a while, use pause)")
        bad = [k for k in kinds if k not in USER_KINDS]
        if bad:
            raise ConfigError(f"unknown event kind(s) {', '.join(bad)}; "
                              f"the kinds are {', '.join(USER_KINDS)}")
        s.kinds = frozenset(kinds)
    elif key in ("include", "exclude"):
        setattr(s, key, _str_list(value, key))
    elif key == "min_size":
        s.min_size = _int(value, key, 0, 1 << 62)
    elif key == "window_ms":
        s.window_ms = _int(value, key, 0, 60_000)
    elif key == "batch":
        s.batch = _int(value, key, 1, 100_000)
    elif key == "ship_window":
        s.ship_window = _int(value, key, 1, 64)
    else:
        raise ConfigError(f"unknown setting {key!r}; the settings that can "
                          f"change are {', '.join(RULE_KEYS)}")


def parse_set(arg: str):
    """``"KEY=VALUE"`` -> (key, value); ConfigError if malformed."""
    key, sep, value = arg.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected KEY=VALUE, got {arg!r}")
    return key, value.strip()


def read_file(path: str) -> dict:
    """The TOML file as a dict; ConfigError (with the reason) if it cannot
    be read or parsed."""
    if _toml is None:
        raise ConfigError("reading a config file on Python 3.10 needs the "
                          "'tomli' package (pip install tomli)")
    try:
        with open(path, "rb") as f:
            return _toml.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: "
                          f"{e.strerror or e}") from None
    except _toml.TOMLDecodeError as e:
        raise ConfigError(f"config file {path!r} is not valid TOML: {e}") \
            from None
    except UnicodeDecodeError as e:
        # TOML is UTF-8 by definition; the parser decodes the whole file
        # first and lets the codec's error (a ValueError, not a
        # TOMLDecodeError) through.
        line = e.object.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"config file {path!r} is not valid UTF-8 (as "
                          f"TOML must be): byte 0x{e.object[e.start]:02x} "
                          f"at line {line}") from None


def from_dict(data: dict, base: Settings | None = None) -> Settings:
    """A Settings from a parsed TOML file, over ``base`` (default: the
    defaults).  Validates everything; raises ConfigError."""
    s = dataclasses.replace(base) if base is not None else Settings()
    data = dict(data)
    rules = data.pop("rules", {})
    ship = data.pop("ship", {})
    if not isinstance(rules, dict) or not isinstance(ship, dict):
        raise ConfigError("[rules] and [ship] must be tables")
    if "roots" in data:
        s.roots = [_path(r, "each root") for r in
                   _str_list(data.pop("roots"), "roots")]
    if "store" in data:
        s.store = data.pop("store")
        if not isinstance(s.store, str):
            raise ConfigError(f"store must be a URL string, got {s.store!r}")
    if "state_dir" in data:
        s.state_dir = _path(data.pop("state_dir"), "state_dir")
    if "source" in data:
        s.source = data.pop("source")
        if not isinstance(s.source, str):
            raise ConfigError(f"source must be a string, got {s.source!r}")
    if "metrics" in data:
        s.metrics = data.pop("metrics")
        if s.metrics != "":
            parse_address(s.metrics)
    for key, value in rules.items():
        apply_rule(s, key, value)
    for key, value in ship.items():
        if key not in ("batch", "window"):
            raise ConfigError(f"unknown key {key!r} in [ship]; the keys are "
                              f"batch and window")
        apply_rule(s, "ship_window" if key == "window" else key, value)
    if data:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(data))}; the "
                          f"top-level keys are roots, store, state_dir, "
                          f"source, metrics, and the tables [rules] and "
                          f"[ship]")
    return s


def check(s: Settings) -> None:
    """The checks that need the file system: roots exist and are
    directories, the store URL is one we know."""
    if not s.roots:
        raise ConfigError("nothing to shadow: give --root DIR or roots = "
                          "[...] in the config file")
    for r in s.roots:
        if not os.path.isdir(r):
            raise ConfigError(f"root {r!r} does not exist or is not a "
                              f"directory")
    parse_url(s.store_url())


def check_store(s: Settings) -> None:
    """The check of the store that needs the state directory made (the
    default store lives there): a SQLite store's directory exists.  A
    typo there would otherwise only show as a store that is down, retried
    for ever."""
    url = s.store_url()
    scheme, path = parse_url(url)
    if scheme != "sqlite":
        return
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        hint = ("; sqlite:///PATH is relative to the working directory, "
                "sqlite:////PATH (four slashes) is absolute"
                if url.startswith("sqlite:///")
                and not url.startswith(("sqlite:////", "sqlite:///~"))
                else "")
        raise ConfigError(f"the directory {d!r} of the store {url!r} does "
                          f"not exist{hint}")
    if os.path.isdir(path):
        raise ConfigError(f"the store {url!r} is a directory, not a "
                          f"database file")


def load(config_file=None, roots=None, store=None, state_dir=None,
         ui=None, metrics=None) -> tuple[Settings, dict]:
    """The settings at start-up: the file (if any), then the flags.
    Returns (settings, overrides) where overrides are the flags to
    re-apply over every reload of the file."""
    overrides = {}
    if roots:
        overrides["roots"] = [_path(r, "--root") for r in roots]
    if store is not None:
        overrides["store"] = store
    if state_dir is not None:
        overrides["state_dir"] = _path(state_dir, "--state-dir")
    if metrics is not None:
        if metrics != "":
            parse_address(metrics, "--metrics")
        overrides["metrics"] = metrics
    s = Settings()
    if config_file:
        config_file = os.path.abspath(os.path.expanduser(config_file))
        s = from_dict(read_file(config_file))
        s.config_file = config_file
    for k, v in overrides.items():
        setattr(s, k, v)
    if ui is not None:
        s.ui = ui
    check(s)
    return s, overrides


def reload(s: Settings, overrides: dict) -> Settings:
    """The file read again over the defaults, with the flags re-applied;
    ConfigError if anything is wrong (the caller keeps ``s``)."""
    new = from_dict(read_file(s.config_file))
    for k, v in overrides.items():
        setattr(new, k, v)
    new.config_file = s.config_file
    new.ui = s.ui
    check(new)
    return new

