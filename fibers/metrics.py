"""Prometheus metrics for fibers: a ``prometheus_client`` collector, and an
endpoint served from a fiber.

    import fibers
    import fibers.metrics

    def main():
        fibers.metrics.install()                  # into prometheus_client's REGISTRY
        server = fibers.metrics.serve(("127.0.0.1", 9464))
        ...                                       # the program
        server.stop()

    fibers.run(main)

Needs the ``metrics`` extra (``pip install 'fibers[metrics]'``):
``prometheus_client``, and ``httptools`` for :func:`serve`.

Design
------
*One source.*  Every number comes from one call of
:meth:`fibers.Scheduler.stats` per scrape, so a scrape is a consistent
snapshot, and anything else that shows the scheduler's figures (the
fibers-shadow UI) reads the very same function: the two cannot disagree.
The mapping from a ``stats()`` key to a metric family is the table
``_SCALARS`` below; a key the running core does not have yet (an older
build) is left out of the scrape rather than reported as 0.

*Which scheduler.*  A collector made with ``scheduler=S`` reports S,
from whatever thread scrapes it (``stats()`` answers from any thread).
Made without one, it reports the scheduler of the fiber that is scraping
-- with :func:`serve`, or any WSGI app that fibers.http serves, that is
the scheduler the program runs on, including each worker process of
``fibers.http.run(workers=N)``, which forked after the collector was made
-- and, when no fiber is scraping (prometheus_client's own
``start_http_server`` thread, a push from plain code), the scheduler that
was current where the collector was made.  The current scheduler at
collect time alone would be wrong there: in a foreign thread it is a new,
empty scheduler made for that thread.

*Serving.*  :func:`serve` is ``fibers.http`` serving prometheus_client's
own ``make_wsgi_app``: content negotiation (OpenMetrics for a Prometheus
server, the text format for curl), gzip and ``name[]`` filtering are
prometheus_client's, the HTTP parsing, limits and timeouts fibers.http's.
No thread: a scrape is one fiber's request.
"""

try:
    import prometheus_client as _pc
    from prometheus_client.core import (
        CounterMetricFamily as _Counter,
        GaugeMetricFamily as _Gauge,
        HistogramMetricFamily as _Histogram,
        InfoMetricFamily as _Info,
    )
    from prometheus_client.registry import REGISTRY
    from prometheus_client.utils import floatToGoString as _go_float
except ImportError as e:                                # pragma: no cover
    raise ImportError(
        f"fibers.metrics needs prometheus_client ({e}): pip install "
        f"'fibers[metrics]' (or pip install prometheus_client)") from e

import fibers as _fibers
from ._core import _in_fiber

__all__ = ["FibersCollector", "MetricsServer", "install", "uninstall",
           "serve", "REGISTRY", "DEFAULT_ADDRESS"]

DEFAULT_ADDRESS = ("127.0.0.1", 9464)   # loopback; 9464: the usual exporter port

# stats() key -> (metric family name, kind, help).  A counter's name is
# given without ``_total``: prometheus_client adds it to the sample.
_SCALARS = (
    ("ticks", "fibers_ticks", "counter",
     "Ticks the scheduler's run loop has finished"),
    ("spawned", "fibers_spawned", "counter", "Fibers ever spawned"),
    ("pump_waits", "fibers_pump_waits", "counter",
     "Times the run loop waited in the completion pump (io_uring or "
     "epoll)"),
    ("workers_created", "fibers_workers_created", "counter",
     "Worker greenlets ever created"),
    ("workers_reused", "fibers_workers_reused", "counter",
     "Fibers that ran on a recycled worker greenlet"),
    ("fixed_ops", "fibers_fixed_buffer_ops", "counter",
     "io_uring operations on registered (fixed) buffers"),
    ("workers_idle", "fibers_workers_idle", "gauge",
     "Idle worker greenlets kept for reuse"),
    ("timers", "fibers_timers", "gauge",
     "Timers armed: sleeps, delays, periodics, timeouts"),
    ("conditions", "fibers_conditions", "gauge",
     "Predicates waited on (wait_for, when, whenever)"),
    ("signals", "fibers_signals_waited", "gauge",
     "Signal names fibers are waiting on"),
    ("io_pending", "fibers_io_inflight", "gauge",
     "I/O operations in the pump that a fiber waits for"),
    ("blocking_jobs", "fibers_blocking_jobs", "gauge",
     "This scheduler's calls on the blocking-call pool not yet back"),
    ("blocking_threads", "fibers_blocking_threads", "gauge",
     "Threads of the process's blocking-call pool"),
    ("blocking_queue", "fibers_blocking_queued", "gauge",
     "Calls queued on the blocking-call pool, waiting for a thread"),
)

# stats() keys shown through other families (fibers_fibers,
# fibers_tick_seconds, fibers_tick_recent_seconds) or on purpose not at
# all: ``ready`` and ``live`` are what ``states`` splits by state.
_COMPOSITE = ("states", "tick_buckets", "tick_sum", "tick_p50", "tick_p99",
              "tick_max")
_NOT_EXPORTED = ("ready", "live")

# The recent-tick figures, as the quantile label says them.
_RECENT = (("tick_p50", "0.5"), ("tick_p99", "0.99"), ("tick_max", "1"))


def _check_scheduler(scheduler):
    if scheduler is not None and not isinstance(scheduler,
                                                _fibers.Scheduler):
        raise TypeError(f"scheduler must be a fibers.Scheduler or None, "
                        f"not {type(scheduler).__name__}")


class FibersCollector:
    """A ``prometheus_client`` collector of one scheduler's
    :meth:`~fibers.Scheduler.stats`, read when scraped.

    ``scheduler``: the :class:`fibers.Scheduler` to report.  None (the
    default): the scheduler of the fiber that scrapes, or, when the scrape
    runs outside any fiber (another thread), the scheduler that was
    current where the collector was made.

    Register it yourself (``REGISTRY.register(FibersCollector())``) or
    with :func:`install`.  The families are listed in docs/metrics.md."""

    def __init__(self, scheduler=None):
        _check_scheduler(scheduler)
        self.scheduler = scheduler
        # For scrapes outside any fiber, when no scheduler was given.
        self._home = scheduler if scheduler is not None else \
            _fibers.Scheduler.current()

    def _target(self):
        if self.scheduler is not None:
            return self.scheduler
        if _in_fiber():         # never makes a scheduler for a thread
            return _fibers.Scheduler.current()
        return self._home

    def collect(self):
        """The metric families, from one ``stats()`` of the scheduler."""
        sched = self._target()
        st = sched.stats()
        yield _Info("fibers_scheduler", "The scheduler's completion pump",
                    value={"backend": sched.backend})
        for key, name, kind, doc in _SCALARS:
            if kind == "counter":
                yield _Counter(name, doc, value=st[key])
            else:
                yield _Gauge(name, doc, value=st[key])
        states = st["states"]
        g = _Gauge("fibers_fibers", "Live fibers, by state", labels=["state"])
        for state in sorted(states):
            g.add_metric([state], states[state])
        yield g
        yield _Histogram(
            "fibers_tick_seconds",
            "Wall time of each finished tick of the run loop",
            buckets=[(_go_float(le), n) for le, n in st["tick_buckets"]],
            sum_value=st["tick_sum"])
        g = _Gauge("fibers_tick_recent_seconds",
                   "Tick wall time over the last 1024 ticks: median "
                   "(0.5), 99th percentile (0.99), longest (1)",
                   labels=["quantile"])
        for key, q in _RECENT:
            g.add_metric([q], st[key])
        yield g

    def __repr__(self):
        which = "scraping fiber's" if self.scheduler is None else \
            repr(self.scheduler)
        return f"<fibers.metrics.FibersCollector {which}>"


def _ours(registry):
    # The FibersCollectors registered in `registry`, however they got
    # there (install() or the user's own register()).  prometheus_client
    # keeps its collectors in this dict; a registry of another kind
    # without it is taken to hold none.
    return [c for c in list(getattr(registry, "_collector_to_names", ()))
            if isinstance(c, FibersCollector)]


def _check_registry(registry, need):
    if not hasattr(registry, need):
        raise TypeError(f"registry must be a prometheus_client "
                        f"CollectorRegistry, not {type(registry).__name__}")


def install(registry=REGISTRY, scheduler=None):
    """Register a :class:`FibersCollector` in ``registry`` (default:
    prometheus_client's ``REGISTRY``) and return it.  Idempotent: when the
    registry already has one for the same ``scheduler``, that one is
    returned.

    ``scheduler`` as for :class:`FibersCollector`.  ValueError if the
    registry has one for another scheduler: one registry cannot hold two,
    their families have the same names (:func:`uninstall` it first, or
    give each scheduler a registry of its own)."""
    _check_scheduler(scheduler)
    _check_registry(registry, "register")
    for have in _ours(registry):
        if have.scheduler is scheduler:
            return have
        raise ValueError(f"this registry already has {have!r}; "
                         f"fibers.metrics.uninstall() it first")
    collector = FibersCollector(scheduler)
    registry.register(collector)
    return collector


def uninstall(registry=REGISTRY):
    """Unregister the :class:`FibersCollector` in ``registry``.  Returns
    it, or None if there was none."""
    _check_registry(registry, "unregister")
    found = _ours(registry)
    for c in found:
        registry.unregister(c)
    return found[0] if found else None


class MetricsServer:
    """The endpoint :func:`serve` started.  ``address`` is the bound
    address (the real port when 0 was asked for)."""

    def __init__(self, server):
        self._server = server
        self.address = server.address

    def stop(self, grace=None):
        """Stop accepting, let scrapes in flight finish within ``grace``
        seconds (None: as long as they take), close.  Suspends the calling
        fiber while it waits."""
        self._server.stop(grace)

    def close(self):
        """Stop at once: as ``stop(grace=0)``."""
        self._server.stop(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return f"<fibers.metrics.MetricsServer {self.address!r}>"


def serve(address=DEFAULT_ADDRESS, *, registry=REGISTRY, limits=None):
    """Serve ``registry`` (default: prometheus_client's ``REGISTRY``) for
    Prometheus to scrape, over HTTP on ``address`` (``(host, port)``,
    loopback port 9464 by default, or a Unix socket path), from fibers of
    the calling scheduler: no thread.  Installs the fibers collector in
    ``registry`` first (:func:`install`: nothing if it is there).  Call it
    from a fiber; returns a :class:`MetricsServer`.

    Any path answers with the metrics (prometheus_client's WSGI app: the
    format the scraper asks for, gzip when accepted, ``?name[]=`` to
    choose families).  ``limits``: a :class:`fibers.http.Limits`."""
    _check_registry(registry, "collect")
    try:
        from . import http as _http
    except ImportError as e:
        raise ImportError(f"fibers.metrics.serve() needs httptools, for "
                          f"fibers.http ({e}): pip install "
                          f"'fibers[metrics]'") from e
    if not _ours(registry):
        install(registry)
    app = _pc.make_wsgi_app(registry)
    return MetricsServer(_http.serve(app, address, limits=limits))

