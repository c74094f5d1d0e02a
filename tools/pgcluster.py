"""A throwaway PostgreSQL server, for tests, benchmarks and demos.

`PgServer` runs Debian's PostgreSQL (``/usr/lib/postgresql/<version>/bin``,
installed by ``tools/sysdeps.sh --test``) in a cluster of its own: ``initdb``
into a fresh temporary directory, then ``pg_ctl start`` with the server
listening on a free port of 127.0.0.1 only and on a Unix socket in that same
directory, trust authentication, and settings for speed rather than
durability (``fsync=off``).  As root, the server runs as the ``postgres``
user (PostgreSQL refuses to run as root); otherwise as the caller.

``stop()`` is ``pg_ctl stop -m immediate`` and removes the directory.
``kill()`` SIGKILLs the postmaster and its backends, the way a crash would,
and ``start()`` brings the same cluster back on the same port (crash
recovery included).

Used by tests/pg.py (the pytest fixtures), bench/shadow_run.py and
tools/run_postgres.py (``make run-postgres``).  Standard library only.

Every wait is bounded.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 30      # seconds, for initdb and for pg_ctl's own waits
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "16MB",
    "max_wal_size": "256MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


class PgUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def find_bindir():
    """The newest /usr/lib/postgresql/<version>/bin that has initdb."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = initdb.split("/")[4]
        try:
            found.append((float(version), os.path.dirname(initdb)))
        except ValueError:
            continue
    if not found:
        raise PgUnavailable("no /usr/lib/postgresql/*/bin/initdb: install "
                            "Debian's postgresql (sh tools/sysdeps.sh --test)")
    return max(found)[1]


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_alive(pids):
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


class PgServer:
    """One throwaway cluster.  ``start()``, ``stop()``, ``kill()``."""

    def __init__(self, bindir=None):
        self.bindir = bindir or find_bindir()
        self.tmpdir = None
        self.datadir = None
        self.port = None
        self.user = None            # the OS user the server runs as
        self._initialized = False

    # ---- connection strings ---------------------------------------------

    @property
    def host(self):
        return "127.0.0.1"

    @property
    def conninfo(self):
        """libpq conninfo for TCP on 127.0.0.1."""
        return (f"host=127.0.0.1 port={self.port} user=postgres "
                f"dbname=postgres connect_timeout=10")

    @property
    def unix_conninfo(self):
        """libpq conninfo for the Unix socket in the cluster's directory."""
        return (f"host={self.tmpdir} port={self.port} user=postgres "
                f"dbname=postgres connect_timeout=10")

    @property
    def logfile(self):
        return os.path.join(self.tmpdir, "server.log")

    # ---- processes ---------------------------------------------------------

    def _run(self, *args, timeout=START_TIMEOUT):
        kwargs = {}
        if os.geteuid() == 0:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        env = dict(os.environ, LC_ALL="C", LANG="C")
        pw = pwd.getpwnam(self.user)
        env["HOME"] = pw.pw_dir
        env["USER"] = env["LOGNAME"] = self.user
        for var in ("PGHOST", "PGPORT", "PGDATA", "PGUSER", "PGDATABASE"):
            env.pop(var, None)
        try:
            return subprocess.run(args, cwd=self.tmpdir, env=env,
                                  capture_output=True, text=True,
                                  timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired as e:
            raise PgUnavailable(f"{args[0]} took more than {timeout} s: "
                                f"{e.stderr or ''}{self.log_tail()}") from None
        except OSError as e:
            raise PgUnavailable(f"cannot run {args[0]}: {e}") from None

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def log_tail(self, lines=20):
        try:
            with open(self.logfile, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except (OSError, TypeError):
            return ""
        return "\nserver log:\n" + "\n".join(tail) if tail else ""

    def _init(self):
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root, but there is no "
                                    "'postgres' user to run the server as")
            self.user = "postgres"
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.tmpdir = tempfile.mkdtemp(prefix="fibers-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.tmpdir, 0o700)
        self.datadir = os.path.join(self.tmpdir, "data")
        r = self._run(self._bin("initdb"), "-D", self.datadir, "-U",
                      "postgres", "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync")
        if r.returncode != 0:
            raise PgUnavailable(f"initdb failed ({r.returncode}): "
                                f"{r.stderr.strip()}")
        self._initialized = True

    def start(self):
        """Start the server (initdb first, the first time), and wait until
        it accepts connections.  Raises PgUnavailable with the reason."""
        if not self._initialized:
            self._init()
        last = ""
        for _ in range(3):          # another process may take a free port
            if self.port is None:
                self.port = free_port()
            opts = [f"-p {self.port}", f"-k {self.tmpdir}"]
            opts += [f"-c {k}={v}" for k, v in SETTINGS.items()]
            r = self._run(self._bin("pg_ctl"), "-D", self.datadir, "-l",
                          self.logfile, "-w", "-t", str(START_TIMEOUT),
                          "-o", " ".join(opts), "start",
                          timeout=START_TIMEOUT + 10)
            if r.returncode == 0:
                return self
            last = f"{r.stdout.strip()} {r.stderr.strip()}{self.log_tail()}"
            if "already in use" not in last:
                break
            self.port = None
        raise PgUnavailable(f"pg_ctl start failed: {last}")

    def postmaster_pid(self):
        """The running postmaster's pid, or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError, TypeError):
            return None
        return pid if _pids_alive([pid]) else None

    @property
    def running(self):
        return self.postmaster_pid() is not None

    def kill(self, timeout=10.0):
        """SIGKILL the postmaster and every backend, as a crash would, and
        wait (at most `timeout` s) until they are gone.  start() brings the
        cluster back."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid] + _children(pid)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while _pids_alive(victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres processes {victims} survived "
                                   f"SIGKILL for {timeout} s")
            time.sleep(0.01)
        # Our processes are gone, but the postmaster may linger as a zombie
        # (an init that does not reap), and its pid would still answer
        # kill(pid, 0): the next postmaster would take the lock files for a
        # live server's.  They are stale; remove them.
        for lock in [os.path.join(self.datadir, "postmaster.pid")] + \
                glob.glob(os.path.join(self.tmpdir, ".s.PGSQL.*.lock")):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass

    def stop(self):
        """Stop the server at once (``-m immediate``) and remove the
        cluster.  Safe to call twice, or after kill()."""
        if self.tmpdir is None:
            return
        try:
            if self.running:
                r = self._run(self._bin("pg_ctl"), "-D", self.datadir, "-m",
                              "immediate", "-w", "-t", "30", "stop",
                              timeout=40)
                if r.returncode != 0:
                    self.kill()
        except PgUnavailable:
            self.kill()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
            self._initialized = False
