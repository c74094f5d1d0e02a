"""fibers-shadow's Prometheus metrics (``--metrics HOST:PORT``).

Design: the application's figures come from :meth:`Shadow.status`, the
very object the live UI draws, ``ctl status`` prints and ``--no-ui``
writes each second, read once per scrape by :class:`ShadowCollector`; the
scheduler's come from ``fibers.metrics.FibersCollector``, which reads
``Scheduler.stats()``, as the UI's scheduler line does.  So a number on
the screen and the same number in Prometheus cannot disagree.

The endpoint is ``fibers.metrics.serve()`` (a fiber of the application's
one thread) on a registry of its own: the fibers families, these, and
prometheus_client's process collector (CPU, memory, fds).  Only fibers'
and prometheus_client's public API is used, as any application would.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

import fibers.metrics

__all__ = ["ShadowCollector", "serve", "STORE_STATES"]

# Every state the shipper's link to the store can be in (the status's
# store.state); the gauge has one series per state, 1 for the current one.
STORE_STATES = ("connecting", "connected", "stalled", "down", "paused")

# status["counts"] key -> (family, help); counters.
_COUNTS = (
    ("seen", "fibers_shadow_events_seen",
     "Events the watcher delivered"),
    ("filtered", "fibers_shadow_events_filtered",
     "Events kept from the store by the rules"),
    ("coalesced", "fibers_shadow_events_coalesced",
     "Events merged into an earlier event of their path"),
    ("journaled", "fibers_shadow_rows_journaled",
     "Rows written to the journal (the outbox)"),
    ("shipped", "fibers_shadow_rows_shipped",
     "Rows the store confirmed"),
    ("overflows", "fibers_shadow_watcher_overflows",
     "Overflows the watcher reported (each repaired by a rescan)"),
    ("errors", "fibers_shadow_watcher_errors",
     "Errors the watcher reported"),
)


class ShadowCollector:
    """A ``prometheus_client`` collector of a running
    :class:`~fibers.shadow.pipeline.Shadow`'s status."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        st = self.app.status()
        for key, name, doc in _COUNTS:
            yield CounterMetricFamily(name, doc, value=st["counts"][key])
        kinds = CounterMetricFamily(
            "fibers_shadow_rows_journaled_by_kind",
            "Rows written to the journal, per kind of event",
            labels=["kind"])
        for kind in sorted(st["kinds"]):
            kinds.add_metric([kind], st["kinds"][kind])
        yield kinds
        j, s, w = st["journal"], st["store"], st["watcher"]
        yield GaugeMetricFamily(
            "fibers_shadow_journal_depth",
            "Rows in the journal the store has not confirmed",
            value=j["depth"])
        yield GaugeMetricFamily(
            "fibers_shadow_journal_lag",
            "Rows committed to the journal and not yet confirmed by the "
            "store (committed_seq - acked_seq)", value=j["lag"])
        for key, doc in (("last_seq", "The last row journaled"),
                         ("committed_seq", "The last row on disk"),
                         ("acked_seq", "Every row up to this one is "
                                       "confirmed by the store")):
            yield GaugeMetricFamily(f"fibers_shadow_journal_{key}", doc,
                                    value=j[key])
        state = GaugeMetricFamily(
            "fibers_shadow_store_state",
            "The link to the store: 1 for the state it is in",
            labels=["state"])
        for name in STORE_STATES:
            state.add_metric([name], 1.0 if s["state"] == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "fibers_shadow_store_stalled_seconds",
            "How long the store has not answered a batch, when stalled "
            "(0 otherwise)", value=s["stalled_for"] or 0.0)
        yield CounterMetricFamily(
            "fibers_shadow_store_batches", "Batches the store confirmed",
            value=s["batches"])
        yield CounterMetricFamily(
            "fibers_shadow_store_reconnects",
            "Times the shipper reconnected to the store",
            value=s["reconnects"])
        if w.get("events") is not None:     # None once the watcher closed
            yield CounterMetricFamily(
                "fibers_shadow_watcher_events",
                "Events the watcher delivered from the kernel",
                value=w["events"])
            yield CounterMetricFamily(
                "fibers_shadow_watcher_rescans",
                "Rescans the watcher ran (after an overflow)",
                value=w["rescans"])
            yield GaugeMetricFamily(
                "fibers_shadow_watcher_queued",
                "Events the watcher holds for the pipeline to take",
                value=w["queued"])
        yield GaugeMetricFamily("fibers_shadow_paused",
                                "1 while shipping is paused",
                                value=1.0 if st["paused"] else 0.0)
        yield GaugeMetricFamily(
            "fibers_shadow_config_error",
            "1 while the settings file's last edit is refused",
            value=0.0 if st["config_error"] is None else 1.0)
        yield GaugeMetricFamily(
            "fibers_shadow_fatal", "1 once a stage has failed",
            value=0.0 if st["fatal"] is None else 1.0)
        yield GaugeMetricFamily(
            "fibers_shadow_start_time_seconds",
            "When the application started, in seconds since the epoch",
            value=self.app.started)


def serve(address):
    """Start the endpoint on ``address`` ((host, port)) with the fibers
    families and the process's; returns ``(server, registry)``.  The
    application's own families are added with
    ``registry.register(ShadowCollector(app))`` once it has started.
    Call it from a fiber."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    fibers.metrics.install(registry)
    return fibers.metrics.serve(address, registry=registry), registry
