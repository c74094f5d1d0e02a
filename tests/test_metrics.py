"""fibers.metrics: the prometheus_client collector and its endpoint.

- The exposition, read back with prometheus_client's own parsers, says
  exactly what ``Scheduler.stats()`` says, family by family, and every
  key of ``stats()`` is either exported or named as deliberately not.
- Which scheduler a collector reports: the scraping fiber's, the one it
  was made for, or (scraped from another thread) the one current where
  it was made.
- ``install()`` is idempotent and refuses a second scheduler;
  ``uninstall()`` undoes it; bad arguments are one-line errors; without
  prometheus_client the import names the extra.
- ``serve()`` answers HTTP from a fiber, on each pump backend: a fiber
  client in the same scheduler (virtual clock), both exposition formats;
  and a real Prometheus server (Debian's ``prometheus``, started here on a
  free loopback port with its own scrape config) scrapes the endpoint,
  served by a real-clock scheduler in a thread, and its query API gives
  the values back.
"""
import math
import os
import subprocess
import sys
import threading
import time

import pytest

import capabilities
import fibers
import fibers.net

capabilities.importorskip("prometheus_client", "prometheus_client")
capabilities.importorskip("httptools", "http_deps")

import fibers.metrics as fm  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.openmetrics.exposition import (  # noqa: E402
    CONTENT_TYPE_LATEST as OPENMETRICS_TYPE)
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics)
from prometheus_client.parser import (  # noqa: E402
    text_string_to_metric_families as parse_text)

import promhelp  # noqa: E402

WAIT = 20               # seconds a thread may take to start or stop
READ_LIMIT = 100.0      # virtual seconds a client waits for the server


def families(text, parser=parse_text):
    return {f.name: f for f in parser(text)}


def value(fams, name, **labels):
    """The one sample of family `name` whose labels include `labels`."""
    got = [s.value for s in fams[name].samples
           if all(s.labels.get(k) == v for k, v in labels.items())
           and not s.name.endswith(("_created",))]
    assert len(got) == 1, (name, labels, fams[name].samples)
    return got[0]


def scrape(registry):
    return families(generate_latest(registry).decode())


def busy(sched_signals=("a", "b", "c")):
    """Fibers that leave marks in stats(): one asleep for an hour (a
    timer), one per signal name waiting on it, one in wait_for (a
    condition).  Returns them; the caller kills them."""
    out = [fibers.spawn(fibers.sleep, 3600)]
    out += [fibers.spawn(fibers.wait_signal, name) for name in sched_signals]
    out.append(fibers.spawn(fibers.wait_for, lambda: False))
    fibers.yield_now()          # they all start and park
    return out


# ---- the exposition is stats() -----------------------------------------------------

def test_every_stats_key_is_exported_or_named(sched):
    exported = {k for k, *_ in fm._SCALARS}
    named = exported | set(fm._COMPOSITE) | set(fm._NOT_EXPORTED)
    assert not exported & (set(fm._COMPOSITE) | set(fm._NOT_EXPORTED))
    missing = set(sched.stats()) - named
    assert not missing, f"stats() keys fibers.metrics does not map: {missing}"


def test_exposition_matches_stats(sched):
    reg = CollectorRegistry()
    fm.install(reg, sched)

    def main():
        helpers = busy()
        for _ in range(5):
            fibers.yield_now()
        # collect() runs to the end without yielding: nothing happens in
        # the scheduler between these lines.  (Only the blocking-call
        # pool's threads are the process's, and an idle one may exit at
        # any moment: those are checked between a read before and after.)
        before = sched.stats()
        text = generate_latest(reg).decode()
        st = sched.stats()
        st["_pool_before"] = before["blocking_threads"]
        for f in helpers:
            f.kill()
        return text, st

    text, st = sched.run(main)
    fams = families(text)
    assert CONTRACT <= set(st), CONTRACT - set(st)
    # The text format has no info type: a gauge with _info in its name.
    assert value(fams, "fibers_scheduler_info",
                 backend=sched.backend) == 1.0
    assert fams["fibers_scheduler_info"].type == "gauge"
    for key, name, kind, _doc in fm._SCALARS:
        fam = fams[name]
        assert fam.type == kind, (name, fam.type)
        if kind == "counter":
            assert [s.name for s in fam.samples] == [name + "_total"]
        if key == "blocking_threads":
            assert st[key] <= value(fams, name) <= st["_pool_before"]
        else:
            assert value(fams, name) == st[key], (key, name)
    # What busy() put there, as the program knows it.
    assert st["timers"] >= 1 and st["conditions"] == 1 and \
        st["signals"] == 3
    assert value(fams, "fibers_signals_waited") == 3
    assert value(fams, "fibers_conditions") == 1
    assert value(fams, "fibers_ticks") == st["ticks"] > 5
    # Fibers by state: the five busy() made are parked, main runs.
    assert fams["fibers_fibers"].type == "gauge"
    for state in ("ready", "running", "suspended"):
        assert value(fams, "fibers_fibers", state=state) == \
            st["states"][state]
    assert st["states"] == {"ready": 0, "running": 1, "suspended": 5}
    check_tick_families(fams, st)


CONTRACT = {"tick_p50", "tick_p99", "tick_max", "tick_sum", "tick_buckets",
            "states", "pump_waits", "blocking_threads", "blocking_queue"}


def check_tick_families(fams, st):
    """fibers_tick_seconds and fibers_tick_recent_seconds are stats()'s
    tick_* figures, sample by sample."""
    hist = fams["fibers_tick_seconds"]
    assert hist.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in hist.samples
               if s.name == "fibers_tick_seconds_bucket"]
    assert [float(le) for le, _ in buckets] == \
        [b for b, _ in st["tick_buckets"]]
    assert buckets[-1][0] == "+Inf"
    assert [n for _, n in buckets] == [n for _, n in st["tick_buckets"]]
    assert [s.value for s in hist.samples
            if s.name == "fibers_tick_seconds_count"] == \
        [st["tick_buckets"][-1][1]]
    assert [s.value for s in hist.samples
            if s.name == "fibers_tick_seconds_sum"] == [st["tick_sum"]]
    for key, q in (("tick_p50", "0.5"), ("tick_p99", "0.99"),
                   ("tick_max", "1")):
        assert value(fams, "fibers_tick_recent_seconds", quantile=q) == \
            st[key], key


def test_a_long_tick_shows(sched):
    # One fiber holds the thread for 20 ms (really: the long tick is the
    # thing measured); the exposition's longest recent tick and the
    # histogram's upper buckets show it.
    reg = CollectorRegistry()
    fm.install(reg, sched)

    def hog():
        time.sleep(0.02)

    def main():
        for _ in range(20):
            fibers.yield_now()          # short ticks first
        fibers.spawn(hog).join()
        fibers.yield_now()              # the hog's tick has finished
        text = generate_latest(reg).decode()
        return text, sched.stats()

    text, st = sched.run(main)
    fams = families(text)
    check_tick_families(fams, st)
    longest = value(fams, "fibers_tick_recent_seconds", quantile="1")
    assert longest >= 0.02
    assert value(fams, "fibers_tick_recent_seconds", quantile="0.5") < 0.02
    le = {s.labels["le"]: s.value for s in fams["fibers_tick_seconds"].samples
          if s.name == "fibers_tick_seconds_bucket"}
    # At least one tick above 10 ms, and not all: the short ones are below.
    assert le["+Inf"] - le["0.01"] >= 1
    assert 0 < le["0.01"] < le["+Inf"]
    assert math.isfinite(st["tick_sum"]) and st["tick_sum"] >= 0.02


def test_io_inflight_and_blocking_jobs(io_sched):
    # Operations in flight that fibers wait for: a recv on each of two
    # socketpairs, and a call on the blocking-call pool held on a lock.
    reg = CollectorRegistry()
    fm.install(reg, io_sched)
    gate = threading.Lock()
    gate.acquire()
    inside_r, inside_w = os.pipe()

    def held():
        os.write(inside_w, b"!")        # a pool thread has the call now
        return gate.acquire(True, WAIT)

    def main():
        a1, b1 = fibers.net.socketpair()
        a2, b2 = fibers.net.socketpair()
        r1 = fibers.spawn(b1.recv, 10)
        r2 = fibers.spawn(b2.recv, 10)
        job = fibers.spawn(fibers.blocking, held)
        fibers.wait_readable(inside_r)
        assert os.read(inside_r, 1) == b"!"
        fibers.yield_now()
        fams = scrape(reg)
        st = io_sched.stats()
        gate.release()
        assert job.join() is True
        a1.sendall(b"x")
        a2.sendall(b"y")
        assert (r1.join(), r2.join()) == (b"x", b"y")
        after = scrape(reg)
        for s in (a1, b1, a2, b2):
            s.close()
        os.close(inside_r)
        os.close(inside_w)
        return fams, st, after

    fams, st, after = io_sched.run(main)
    assert st["io_pending"] >= 2 and st["blocking_jobs"] == 1
    # The pool has a thread in the held call; nothing waits for one.
    # (Its thread count is the process's: an idle thread of an earlier
    # test may leave it between two reads, so only the floor is exact.)
    assert value(fams, "fibers_blocking_threads") >= 1
    assert st["blocking_threads"] >= 1
    assert value(fams, "fibers_blocking_queued") == st["blocking_queue"] == 0
    # The run loop waited in the pump for the held call and the recvs.
    assert value(after, "fibers_pump_waits") > 0
    assert value(fams, "fibers_io_inflight") == st["io_pending"]
    assert value(fams, "fibers_blocking_jobs") == 1
    assert value(after, "fibers_blocking_jobs") == 0
    assert value(after, "fibers_io_inflight") < st["io_pending"]


# ---- which scheduler -------------------------------------------------------------

def _spawned(fams):
    return value(fams, "fibers_spawned")


def test_collector_reports_the_scraping_fibers_scheduler(sched):
    other = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True))
    try:
        reg = CollectorRegistry()
        got = {}

        def made_here():
            # Made in a fiber of `sched`: its home is `sched`.
            got["collector"] = fm.install(reg)
            for _ in range(3):
                fibers.spawn(int)
            fibers.yield_now()
            got["in sched"] = _spawned(scrape(reg))
            got["sched spawned"] = sched.stats()["spawned"]

        sched.run(made_here)

        def in_other():
            for _ in range(7):
                fibers.spawn(int)
            fibers.yield_now()
            got["in other"] = _spawned(scrape(reg))
            got["other spawned"] = other.stats()["spawned"]

        other.run(in_other)

        # From a thread with no fibers: the collector's home, `sched` (not
        # a new, empty scheduler of that thread).
        t = threading.Thread(
            target=lambda: got.__setitem__("thread", _spawned(scrape(reg))))
        t.start()
        t.join(WAIT)
        assert not t.is_alive()

        assert got["in sched"] == got["sched spawned"] == 4
        assert got["in other"] == got["other spawned"] == 8
        assert got["thread"] == sched.stats()["spawned"] == 4
        assert got["collector"].scheduler is None
    finally:
        other.close()


def test_collector_for_a_given_scheduler(sched):
    other = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True))
    try:
        other.run(lambda: [fibers.spawn(int) for _ in range(6)])
        reg = CollectorRegistry()
        c = fm.install(reg, other)
        assert c.scheduler is other
        # Scraped in a fiber of `sched`, it still reports `other`.
        assert sched.run(lambda: _spawned(scrape(reg))) == \
            other.stats()["spawned"] == 7
    finally:
        other.close()


# ---- install, uninstall, bad input -----------------------------------------------

def test_install_is_idempotent_and_uninstall_undoes_it(sched):
    reg = CollectorRegistry()
    c = fm.install(reg)
    assert fm.install(reg) is c
    assert sum(1 for f in reg.collect() if f.name == "fibers_ticks") == 1
    with pytest.raises(ValueError, match="uninstall"):
        fm.install(reg, sched)
    assert fm.uninstall(reg) is c
    assert not any(f.name.startswith("fibers_") for f in reg.collect())
    assert fm.uninstall(reg) is None
    pinned = fm.install(reg, sched)
    assert pinned is not c and pinned.scheduler is sched
    assert fm.install(reg, sched) is pinned
    # One the user registered by hand counts as installed.
    reg2 = CollectorRegistry()
    mine = fm.FibersCollector(sched)
    reg2.register(mine)
    assert fm.install(reg2, sched) is mine


def test_default_registry(sched):
    from prometheus_client import REGISTRY
    assert fm.REGISTRY is REGISTRY
    c = fm.install()
    try:
        assert fm.install() is c
        assert "fibers_ticks" in {f.name for f in REGISTRY.collect()}
    finally:
        assert fm.uninstall() is c
    assert "fibers_ticks" not in {f.name for f in REGISTRY.collect()}


def test_bad_arguments():
    with pytest.raises(TypeError, match="fibers.Scheduler or None, not str"):
        fm.FibersCollector("main")
    with pytest.raises(TypeError, match="fibers.Scheduler or None, not int"):
        fm.install(CollectorRegistry(), 3)
    with pytest.raises(TypeError, match="CollectorRegistry, not dict"):
        fm.install({})
    with pytest.raises(TypeError, match="CollectorRegistry, not list"):
        fm.uninstall([])


def test_serve_bad_arguments(sched):
    def main():
        with pytest.raises(TypeError, match="CollectorRegistry, not str"):
            fm.serve(("127.0.0.1", 0), registry="r")
        with pytest.raises(TypeError, match="fibers.http.Limits"):
            fm.serve(("127.0.0.1", 0), registry=CollectorRegistry(),
                     limits={})
    sched.run(main)


def _import_fails(block):
    # A fresh interpreter where `block` cannot be imported (None in
    # sys.modules makes import raise ImportError).
    code = (f"import sys; sys.modules[{block!r}] = None\n"
            "try:\n"
            "    import fibers.metrics as m\n"
            "    import fibers\n"
            "    fibers.run(m.serve, ('127.0.0.1', 0))\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    print('no error')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_without_prometheus_client_names_the_extra():
    msg = _import_fails("prometheus_client")
    assert msg.startswith("fibers.metrics needs prometheus_client"), msg
    assert "pip install 'fibers[metrics]'" in msg


def test_serve_without_httptools_names_the_extra():
    msg = _import_fails("httptools")
    assert msg.startswith("fibers.metrics.serve() needs httptools"), msg
    assert "pip install 'fibers[metrics]'" in msg


# ---- serve(): HTTP from a fiber --------------------------------------------------

def refused(address, ticks=3):
    """True once a connect to ``address`` is refused, within ``ticks``
    ticks.  (On io_uring, fibers.http's Server.stop() returns with the
    cancel of its accept still in the pump, and the listener takes SYNs
    until that completes, in the next tick: a connect at once is accepted
    and then reset.  Noted for fibers.http; here the endpoint's stop is
    what is tested.)"""
    for _ in range(ticks):
        fibers.yield_now()
        try:
            fibers.net.connect(address).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            continue
    return False


def http_get(address, path="/metrics", headers=()):
    """GET over a fibers socket, Connection: close; (status line,
    {header: value}, body)."""
    sock = fibers.net.connect(address)
    try:
        head = [f"GET {path} HTTP/1.1", "Host: metrics",
                "Connection: close", *(f"{k}: {v}" for k, v in headers)]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        data = bytearray()
        with fibers.timeout(READ_LIMIT):
            for _ in range(100_000):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            else:
                raise AssertionError("the server never closed")
    finally:
        sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs, body


def test_serve_answers_from_a_fiber(io_sched, backend):
    reg = CollectorRegistry()

    def main():
        helpers = busy(("x", "y"))
        server = fm.serve(("127.0.0.1", 0), registry=reg)
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
        try:
            status, hdrs, body = http_get(server.address)
            st = io_sched.stats()
            om_status, om_hdrs, om_body = http_get(
                server.address, "/", [("Accept", OPENMETRICS_TYPE)])
        finally:
            server.stop()
        assert refused(server.address)
        for f in helpers:
            f.kill()
        return status, hdrs, body, st, om_status, om_hdrs, om_body

    status, hdrs, body, st, om_status, om_hdrs, om_body = io_sched.run(main)
    assert status == "HTTP/1.1 200 OK"
    # No Accept header: the classic text format.
    assert hdrs["content-type"].startswith("text/plain; version=0.0.4")
    assert int(hdrs["content-length"]) == len(body)
    fams = families(body.decode())
    # serve() installed the collector: the scraping fiber's scheduler.
    assert value(fams, "fibers_scheduler_info", backend=backend) == 1.0
    assert value(fams, "fibers_signals_waited") == st["signals"] == 2
    # Nothing was spawned between the scrape and stats(): the connection's
    # fiber came before it.  Ticks went on while the answer was sent.
    assert value(fams, "fibers_spawned") == st["spawned"]
    assert 0 < value(fams, "fibers_ticks") <= st["ticks"]

    assert om_status == "HTTP/1.1 200 OK"
    assert om_hdrs["content-type"].startswith("application/openmetrics-text")
    assert om_body.endswith(b"# EOF\n")
    om = families(om_body.decode(), parse_openmetrics)
    assert om["fibers_ticks"].type == "counter"
    assert om["fibers_scheduler"].type == "info"
    assert value(om, "fibers_scheduler", backend=backend) == 1.0


def test_serve_keeps_an_installed_collector(io_sched):
    # serve() installs only when the registry has no FibersCollector: one
    # pinned to another scheduler stays, and is what is served.
    other = fibers.Scheduler(clock=fibers.VirtualClock(autojump=True))
    try:
        other.run(lambda: [fibers.spawn(int) for _ in range(9)])
        reg = CollectorRegistry()
        pinned = fm.install(reg, other)

        def main():
            with fm.serve(("127.0.0.1", 0), registry=reg) as server:
                _, _, body = http_get(server.address)
            return families(body.decode())

        fams = io_sched.run(main)
        assert fm.uninstall(reg) is pinned
        assert _spawned(fams) == other.stats()["spawned"] == 10
    finally:
        other.close()


def test_close_stops_at_once(io_sched):
    reg = CollectorRegistry()

    def main():
        server = fm.serve(("127.0.0.1", 0), registry=reg)
        # A client that connected and said nothing: close() does not wait
        # for it (stop(grace=None) would wait for requests in flight only).
        idle = fibers.net.connect(server.address)
        fibers.yield_now()
        server.close()
        assert refused(server.address)
        with fibers.timeout(READ_LIMIT):
            assert idle.recv(10) == b""
        idle.close()
        return repr(server)

    assert io_sched.run(main).startswith("<fibers.metrics.MetricsServer (")


# ---- a real Prometheus scrapes it ------------------------------------------------

class MetricsThread:
    """``fibers.metrics.serve()`` from a fiber of a real-clock scheduler on
    ``backend``, in a thread of its own, with fibers parked on the signal
    names ``waits``; ``close()`` stops the server and the scheduler and
    returns the scheduler's last stats()."""

    def __init__(self, backend, registry, waits=("p", "q", "r")):
        self.address = None
        self.error = None
        self.sched = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(backend, registry, waits), daemon=True,
            name=f"fibers.metrics {backend}")
        self._thread.start()
        if not self._ready.wait(WAIT):
            raise AssertionError("the metrics thread did not start")
        if self.error is not None:
            raise self.error

    def _run(self, backend, registry, waits):
        def main():
            parked = [fibers.spawn(fibers.wait_signal, n) for n in waits]
            server = fm.serve(("127.0.0.1", 0), registry=registry)
            self.address = server.address
            fibers.yield_now()
            self._ready.set()
            try:
                fibers.wait_signal("stop")
            finally:
                server.stop(grace=5)
                for f in parked:
                    f.kill()

        try:
            self.sched = fibers.Scheduler(backend=backend)
            try:
                self.sched.run(main)
            finally:
                self.sched.close()
        except BaseException as e:
            self.error = e
        finally:
            self._ready.set()

    def close(self):
        if self._thread.is_alive():
            self.sched.signal_all("stop")     # through call_threadsafe
            self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the metrics thread did not stop"
        if self.error is not None:
            raise self.error
        return self.sched.stats()


needs_prometheus = capabilities.requires("prometheus", promhelp.WHY_NOT)


@needs_prometheus
def test_scraped_by_a_real_prometheus(backend):
    server = MetricsThread(backend, CollectorRegistry())
    target = f"127.0.0.1:{server.address[1]}"
    prom = promhelp.Prometheus([target], interval=0.1)
    try:
        prom.start()
        ticks = prom.wait_for('fibers_ticks_total{job="fibers"}')
        # The next queries read what that scrape (or a later one) stored.
        up = prom.query('up{job="fibers"}')
        info = prom.query("fibers_scheduler_info")
        waited = prom.query("fibers_signals_waited")
        spawned = prom.query("fibers_spawned_total")
        suspended = prom.query('fibers_fibers{state="suspended"}')
        timed = prom.query("fibers_tick_seconds_count")
        p99 = prom.query(
            "histogram_quantile(0.99, fibers_tick_seconds_bucket)")
        longest = prom.query('fibers_tick_recent_seconds{quantile="1"}')
    finally:
        prom.stop()
        final = server.close()
    (labels, v), = ticks
    assert labels["instance"] == target and labels["job"] == "fibers"
    assert labels["__name__"] == "fibers_ticks_total"
    assert 0 < v <= final["ticks"]
    assert up == [({"__name__": "up", "instance": target, "job": "fibers"},
                   1.0)]
    (info_labels, one), = info
    assert info_labels["backend"] == backend and one == 1.0
    # Three parked on their own names, main on "stop".
    assert [w for _, w in waited] == [4.0]
    assert 0 < spawned[0][1] <= final["spawned"]
    # The three parked, main on "stop", the acceptor (and the scrape's
    # connection, between scrapes).
    assert [v for _, v in suspended][0] >= 5
    # Prometheus read the histogram as one: its count, and a quantile of
    # its buckets, a number of seconds within the last bucket that counts.
    (_, n), = timed
    assert 0 < n <= final["ticks"]
    (_, q), = p99
    assert 0 < q <= 10.0
    (_, most), = longest
    assert 0 < most <= final["tick_sum"]
