"""fibers-shadow's Prometheus endpoint (``--metrics``) and its UI's
scheduler line.

- The real program in a subprocess with ``--metrics 127.0.0.1:0`` (the
  port it bound is in its log): after files are made and shipped, a scrape
  parsed with prometheus_client's parser says what ``ctl status`` says
  (counts, journal, store state, kinds), plus the scheduler's and the
  process's families; a real Prometheus scrapes the same endpoint and its
  query API gives the same numbers.  Each fs backend, each pump backend.
- Bad input is a one-line error and exit 2: a malformed address, one that
  cannot be bound, a bad ``metrics`` key in the settings file, and the
  ``metrics`` extra missing.
- The UI's scheduler row is drawn from the same ``stats()`` the fibers
  collector exports: on one snapshot, every figure on the row is the
  exposition's.
"""
import os
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

import capabilities
import fibers
from fshelp import skip_unless_fs_backend_runs
from iohelp import skip_unless_backend_runs
from tools.shadowproc import DEADLINE, Shadow, poll

capabilities.importorskip("prometheus_client", "prometheus_client")
capabilities.importorskip("httptools", "http_deps")

import fibers.metrics as fm  # noqa: E402
from fibers.shadow import config, ui  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import (  # noqa: E402
    text_string_to_metric_families as parse_text)

import promhelp  # noqa: E402

# (fs backend, pump backend): each of both, in two runs.
PAIRS = [("inotify", "io_uring"), ("fanotify", "epoll")]
LOGGED = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def families(text):
    return {f.name: f for f in parse_text(text)}


def value(fams, name, **labels):
    """The one sample named `name` (a counter's with its _total) whose
    labels include `labels`."""
    got = [s.value for f in fams.values() for s in f.samples
           if s.name == name
           and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (name, labels, got)
    return got[0]


@pytest.fixture(params=PAIRS, ids=["-".join(p) for p in PAIRS])
def msh(request, tmp_path):
    fs_backend, pump = request.param
    skip_unless_fs_backend_runs(fs_backend)
    skip_unless_backend_runs(pump)
    s = Shadow(tmp_path, fs_backend)
    s.env["FIBERS_BACKEND"] = pump
    s.pump = pump
    yield s
    s.close()


def metrics_port(sh):
    m = poll(lambda: LOGGED.search(sh.stderr()), "the metrics address "
             "in the log")
    return int(m.group(1))


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=DEADLINE) as r:
        return families(r.read().decode())


def quiet_status(sh):
    """``ctl status`` once nothing is moving: two in a row agree on every
    count (the tree is not being changed, so they settle)."""
    def settled():
        a, b = sh.status(), sh.status()
        keys = ("counts", "kinds", "journal")
        return b if all(a[k] == b[k] for k in keys) else None
    return poll(settled, "the counts to settle")


def check_against_status(fams, st):
    c, j, s = st["counts"], st["journal"], st["store"]
    assert value(fams, "fibers_shadow_events_seen_total") == c["seen"]
    assert value(fams, "fibers_shadow_events_filtered_total") == \
        c["filtered"]
    assert value(fams, "fibers_shadow_events_coalesced_total") == \
        c["coalesced"]
    assert value(fams, "fibers_shadow_rows_journaled_total") == \
        c["journaled"]
    assert value(fams, "fibers_shadow_rows_shipped_total") == c["shipped"]
    assert value(fams, "fibers_shadow_watcher_overflows_total") == \
        c["overflows"]
    for kind, n in st["kinds"].items():
        assert value(fams, "fibers_shadow_rows_journaled_by_kind_total",
                     kind=kind) == n
    for key in ("depth", "lag", "last_seq", "committed_seq", "acked_seq"):
        assert value(fams, f"fibers_shadow_journal_{key}") == j[key], key
    for state in ("connecting", "connected", "stalled", "down", "paused"):
        assert value(fams, "fibers_shadow_store_state", state=state) == \
            (1.0 if s["state"] == state else 0.0), state
    assert value(fams, "fibers_shadow_store_batches_total") == s["batches"]
    assert value(fams, "fibers_shadow_paused") == float(st["paused"])
    assert value(fams, "fibers_shadow_fatal") == 0.0


def busy_tree(sh):
    for i in range(5):
        sh.write(f"f{i}", "data")
    os.mkdir(sh.p("d"))
    # Shipped, and d watched: the move is neither coalesced away nor seen
    # as a deletion and a creation in a directory not yet watched.
    sh.sync()
    os.rename(sh.p("f0"), sh.p("d/f0"))
    sh.sync()


def test_metrics_endpoint_says_what_status_says(msh):
    msh.start("--metrics", "127.0.0.1:0")
    port = metrics_port(msh)
    busy_tree(msh)
    st = quiet_status(msh)
    fams = scrape(port)
    check_against_status(fams, st)
    assert st["counts"]["shipped"] >= 8 and st["journal"]["lag"] == 0
    assert value(fams, "fibers_shadow_store_state", state="connected") == 1
    assert value(fams, "fibers_shadow_rows_journaled_by_kind_total",
                 kind="moved") == 1
    # The scheduler's families, from the application's one scheduler, and
    # the process's.
    assert value(fams, "fibers_scheduler_info", backend=msh.pump) == 1.0
    assert value(fams, "fibers_ticks_total") > 0
    assert value(fams, "process_open_fds") > 0
    assert msh.stop() == 0
    # The endpoint stopped with the program.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@capabilities.requires("prometheus", promhelp.WHY_NOT)
def test_scraped_by_a_real_prometheus(msh):
    msh.start("--metrics", "127.0.0.1:0")
    port = metrics_port(msh)
    busy_tree(msh)
    st = quiet_status(msh)
    prom = promhelp.Prometheus([f"127.0.0.1:{port}"], interval=0.1,
                               job="shadow")
    try:
        prom.start()
        (labels, shipped), = prom.wait_for("fibers_shadow_rows_shipped_total")
        (_, lag), = prom.query("fibers_shadow_journal_lag")
        connected = prom.query('fibers_shadow_store_state{state="connected"}')
        info = prom.query("fibers_scheduler_info")
    finally:
        prom.stop()
    after = msh.status()
    assert msh.stop() == 0
    assert labels["job"] == "shadow"
    assert labels["instance"] == f"127.0.0.1:{port}"
    # Nothing moved in the tree: the numbers Prometheus stored are the
    # status's, before and after.
    assert shipped == st["counts"]["shipped"] == after["counts"]["shipped"]
    assert lag == 0
    assert [v for _, v in connected] == [1.0]
    assert [lb["backend"] for lb, _ in info] == [msh.pump]


def run_once(sh, *args, env=None):
    return subprocess.run([sys.executable, "-m", "fibers.shadow",
                           "--state-dir", sh.state, "--no-ui", *args],
                          capture_output=True, text=True, timeout=60,
                          env=env or sh.env)


def assert_one_line_error(r, words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert words in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, \
        r.stderr


def test_bad_metrics_input_exits_2(msh, tmp_path):
    for bad in ("9464", "localhost", ":9464", "127.0.0.1:99999",
                "::1:9464", "127.0.0.1:http"):
        r = run_once(msh, "--root", msh.root, "--metrics", bad)
        assert_one_line_error(r, f"--metrics must be HOST:PORT")
    cfg = tmp_path / "c.toml"
    cfg.write_text("metrics = 9464\n")
    r = run_once(msh, "--root", msh.root, "--config", str(cfg))
    assert_one_line_error(r, "metrics must be a HOST:PORT string")
    # An address taken: refused before anything starts.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_once(msh, "--root", msh.root, "--metrics",
                     f"127.0.0.1:{port}")
    assert_one_line_error(r, f"cannot serve metrics on 127.0.0.1:{port}")
    assert not os.path.exists(os.path.join(msh.state, "journal.db"))
    # Without the extra: a prometheus_client that cannot be imported
    # (first on the path).
    blocker = tmp_path / "blocked" / "prometheus_client"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ImportError('not installed here')\n")
    env = dict(msh.env, PYTHONPATH=os.pathsep.join(
        [str(blocker.parent)] + sys.path))
    r = run_once(msh, "--root", msh.root, "--metrics", "127.0.0.1:0",
                 env=env)
    assert_one_line_error(r, "--metrics needs the package "
                             "'prometheus_client'")
    assert "pip install 'fibers[metrics]'" in r.stderr


def test_settings_metrics_key():
    s = config.from_dict({"metrics": "[::1]:9464"})
    assert s.metrics == "[::1]:9464"
    assert config.parse_address(s.metrics) == ("::1", 9464)
    assert config.parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert config.parse_address("localhost:9464") == ("localhost", 9464)
    assert config.from_dict({"metrics": ""}).metrics == ""
    with pytest.raises(config.ConfigError, match="HOST:PORT"):
        config.from_dict({"metrics": "nowhere"})
    with pytest.raises(config.ConfigError, match="metrics, and the tables"):
        config.from_dict({"metric": "127.0.0.1:1"})


# ---- the UI's scheduler row is the collector's numbers -----------------------------

def numbers(line):
    """The row's figures by name, as the UI writes them."""
    out = {}
    for key, pat in (("fibers", r"fibers (\d+)"), ("io", r"io (\d+)"),
                     ("blocking_jobs", r"blocking (\d+)"),
                     ("ready", r"\((\d+) ready\)"),
                     ("p99", r"tick p99 ([\d.]+) ms"),
                     ("max", r"max ([\d.]+) ms"),
                     ("threads", r"(\d+) threads"),
                     ("queued", r"(\d+) queued")):
        m = re.search(pat, line)
        if m:
            out[key] = float(m.group(1))
    return out


def test_ui_scheduler_row_is_the_exposition(io_sched):
    reg = CollectorRegistry()
    fm.install(reg, io_sched)

    def main():
        a, b = fibers.net.socketpair()
        readers = [fibers.spawn(b.recv, 1), fibers.spawn(a.recv, 1)]
        sleepers = [fibers.spawn(fibers.sleep, 60) for _ in range(3)]
        for _ in range(4):
            fibers.yield_now()
        st = io_sched.stats()           # one snapshot: no yield between
        line = ui.scheduler_line(st, 12.0)
        text = generate_latest(reg).decode()
        for f in readers + sleepers:
            f.kill()
        a.close()
        b.close()
        return st, line, text

    st, line, text = io_sched.run(main)
    fams = families(text)
    got = numbers(line)
    assert "ticks/s 12" in line
    assert got["io"] == value(fams, "fibers_io_inflight") == \
        st["io_pending"] >= 2
    assert got["blocking_jobs"] == value(fams, "fibers_blocking_jobs")
    assert got["ready"] == value(fams, "fibers_fibers", state="ready")
    # The two readers and three sleepers are parked; main runs.
    assert value(fams, "fibers_fibers", state="suspended") >= 5
    assert got["fibers"] == sum(
        s.value for s in fams["fibers_fibers"].samples) >= 6
    assert len(line) <= 105, line
    assert got["p99"] == round(value(
        fams, "fibers_tick_recent_seconds", quantile="0.99") * 1000, 1)
    assert got["max"] == round(value(
        fams, "fibers_tick_recent_seconds", quantile="1") * 1000, 1)
    # The pool's threads are the process's: one idle since an earlier
    # test may exit between the two reads (nothing here starts one).
    assert got["threads"] == st["blocking_threads"] >= \
        value(fams, "fibers_blocking_threads")
    assert got["queued"] == value(fams, "fibers_blocking_queued") == 0
