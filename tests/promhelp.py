"""A real Prometheus server for the tests of fibers.metrics.

:class:`Prometheus` runs Debian's ``prometheus`` on a free port of
127.0.0.1, with a scrape config of its own (one job, the targets given,
a short scrape interval) and its data in a temporary directory; nothing
of the system's (/etc/prometheus, a service on :9090) is used or touched.
:meth:`Prometheus.query` asks its HTTP API; :meth:`Prometheus.wait_for`
polls a query, bounded, until it has a sample.  ``stop()`` terminates it
and waits (bounded), then kills it if it has not gone.

The polls here are the only waits on wall time: Prometheus scrapes on its
own clock, and its API is the only way to learn that it did.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from tools.pgcluster import free_port

PROMETHEUS = shutil.which("prometheus")
START_WAIT = 30         # seconds Prometheus may take to be ready
SAMPLE_WAIT = 30        # seconds a query may take to show a first sample
POLL = 0.1              # seconds between two looks at the API
STOP_WAIT = 10          # seconds it may take to stop after SIGTERM

WHY_NOT = None if PROMETHEUS else (
    "the prometheus command (Debian package prometheus; sh tools/sysdeps.sh "
    "--test installs it) is not installed")


class PrometheusError(Exception):
    pass


class Prometheus:
    """``prometheus`` scraping ``targets`` ("host:port" strings) every
    ``interval`` seconds, as job ``job``."""

    def __init__(self, targets, interval=0.1, job="fibers"):
        self.dir = tempfile.mkdtemp(prefix="fibers-prometheus-")
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.dir, "prometheus.log")
        ms = max(10, int(interval * 1000))
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            # JSON is YAML: no YAML writer needed.
            json.dump({
                "global": {"scrape_interval": f"{ms}ms",
                           "scrape_timeout": f"{ms}ms"},
                "scrape_configs": [{
                    "job_name": job,
                    "static_configs": [{"targets": list(targets)}],
                }],
            }, f)

    def start(self):
        # A free port may be taken between the probe and the bind: retry.
        for _ in range(5):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={self.config}",
                     f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--log.level=warn"],
                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                    cwd=self.dir)
            if self._wait_ready():
                return self
            self._end()
        raise PrometheusError("prometheus did not start: " + self.log())

    def _wait_ready(self):
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False            # exited: port taken, bad config
            try:
                with urllib.request.urlopen(self.url("/-/ready"),
                                            timeout=5) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(POLL)
        return False

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def api(self, path, **params):
        """GET /api/v1/PATH; the ``data`` of a successful answer."""
        url = self.url(f"/api/v1/{path}?" + urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise PrometheusError(f"{url}: {body}")
        return body["data"]

    def query(self, promql):
        """The instant vector of ``promql``: [(labels, float value)]."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_for(self, promql, timeout=SAMPLE_WAIT):
        """Poll ``promql`` until it has a sample (bounded); its vector."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.query(promql)
            if got:
                return got
            if time.monotonic() >= deadline:
                targets = self.api("targets")
                raise PrometheusError(
                    f"no sample of {promql!r} in {timeout} s; targets: "
                    f"{targets.get('activeTargets')}; log: {self.log()}")
            time.sleep(POLL)

    def _end(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_WAIT)
        self.proc = None

    def stop(self):
        self._end()
        shutil.rmtree(self.dir, ignore_errors=True)
