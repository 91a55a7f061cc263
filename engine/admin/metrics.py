"""``GET /metrics``: Prometheus metrics from prometheus-client, one registry per engine.

Counters (label ``channel``; ``destination`` where a send is counted, "" for a channel-level
error) are fed by ``Events.listeners``, the in-process side of the ``message_event`` hook:
``switchboard_messages_{received,filtered,errored,sent,rejected,duplicate,replayed}_total``.
Gauges are computed at scrape time (a custom collector): queue depth and oldest-queued age per
destination (the durable queue in the store, not just the in-memory window: one indexed GROUP BY
over the QUEUED rows, in a thread), consecutive failures of each queue's head, channel state
and the store's size on disk.

Histograms: ``switchboard_ingest_latency_seconds`` (a source handing a message over -> stored,
the moment an ACK may go out; measured by wrapping the channel's ``receive`` when the engine is
wired, which keeps ``channel.py`` free of metrics code) and ``switchboard_delivery_latency_seconds``
(stored -> a destination's SENT, end to end; kept for up to ``TRACKED`` messages in flight, so a
backlog larger than that stops being measured rather than growing memory).

A per-engine ``CollectorRegistry``, not the global one: tests and tools build several engines
in one process, and the global registry would also export this process's Python internals.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from twisted.internet import threads
from twisted.logger import Logger

log = Logger(namespace="switchboard.metrics")

TRACKED = 20_000
INGEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0)
STATES = ("started", "paused", "stopped", "failed")
COUNTED = {"received": "received", "filtered": "filtered", "rejected": "rejected",
           "duplicate": "duplicate", "replayed": "replayed"}


def age_seconds(iso: str | None, now: float) -> float:
    if not iso:
        return 0.0
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, now - then)


class Metrics:
    def __init__(self, runtime, *, clock=time.monotonic) -> None:
        self.runtime = runtime
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.counters = {
            kind: Counter(f"switchboard_messages_{kind}", f"Messages {kind} per channel", ["channel"], registry=r)
            for kind in COUNTED.values()
        }
        self.errored = Counter("switchboard_messages_errored", "Messages that went ERROR (destination '' = "
                               "the channel's own filters or transform)", ["channel", "destination"], registry=r)
        self.sent = Counter("switchboard_messages_sent", "Deliveries SENT", ["channel", "destination"], registry=r)
        self.ingest = Histogram("switchboard_ingest_latency_seconds", "Source hand-over to stored (ACK-able)",
                                ["channel"], buckets=INGEST_BUCKETS, registry=r)
        self.delivery = Histogram("switchboard_delivery_latency_seconds", "Stored to SENT, per destination",
                                  ["channel", "destination"], buckets=DELIVERY_BUCKETS, registry=r)
        self.registry.register(_ScrapeCollector(self))
        self._stored_at: OrderedDict[int, float] = OrderedDict()
        self._children: dict = {}  # (id(metric), labels) -> its labelled child (``_child``)
        self._figures: dict = {"queues": {}, "store_bytes": 0, "at": time.time()}
        for service in runtime.channels().values():
            self.channel_added(service)
        runtime.observe(self.observe)
        runtime.on_channel_added(self.channel_added)

    def channel_added(self, service) -> None:
        """A channel built after start (live reload, engine/runtime/reload.py): its series and ingest timing."""
        for counter in self.counters.values():
            counter.labels(service.name)
        self.errored.labels(service.name, "")
        for destination in service.queues:
            self.sent.labels(service.name, destination)
            self.errored.labels(service.name, destination)
        if service.channel is not None:
            self._time_receive(service.channel)

    # -- feeding ----------------------------------------------------------------------------
    def observe(self, event) -> None:
        """An Events listener: it must never raise (Events calls listeners on the message's way)."""
        try:
            self._observe(event)
        except Exception:
            log.failure("metrics: could not count a {kind} event", kind=event.kind)

    def _observe(self, event) -> None:
        kind, channel = event.kind, event.channel
        if kind in COUNTED:
            self._child(self.counters[COUNTED[kind]], channel).inc()
        if kind == "received" and event.message_id is not None:
            self._stored_at[event.message_id] = self.clock()
            if len(self._stored_at) > TRACKED:
                self._stored_at.popitem(last=False)
        elif kind == "sent":
            self._child(self.sent, channel, event.destination or "").inc()
            stored = self._stored_at.get(event.message_id)
            if stored is not None:
                self._child(self.delivery, channel, event.destination or "").observe(self.clock() - stored)
        elif kind == "error":
            self._child(self.errored, channel, event.destination or "").inc()
            if event.destination is None:
                self._stored_at.pop(event.message_id, None)
        elif kind == "filtered":
            self._stored_at.pop(event.message_id, None)

    def _child(self, metric, *labels):
        """``metric.labels(*labels)``, kept: prometheus-client's lookup (label checks, a lock, a
        dict) runs on every event otherwise, and events come several per message."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _time_receive(self, channel) -> None:
        receive, child, clock = channel.receive, self.ingest.labels(channel.name), self.clock

        def timed_receive(text, **kwargs):
            started = clock()
            d = receive(text, **kwargs)

            def stored(receipt):
                if getattr(receipt, "ok", False) and not getattr(receipt, "duplicate", False):
                    child.observe(clock() - started)
                return receipt

            return d.addCallback(stored)

        channel.receive = timed_receive

    # -- scraping ---------------------------------------------------------------------------
    def read_store(self) -> dict:
        """In a thread: the figures that need disk (queue table, file sizes)."""
        path = self.runtime.store.path
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.path.getsize(path + suffix)
            except OSError:
                pass
        return {"queues": self.runtime.store.queue_stats(), "store_bytes": size, "at": time.time()}

    def render(self):
        """Deferred[bytes]: the exposition text, store figures read in a thread first."""
        d = threads.deferToThread(self.read_store)

        def fill(figures):
            self._figures = figures
            return generate_latest(self.registry)

        return d.addCallback(fill)


class _ScrapeCollector:
    """The gauges: computed from the queues in memory and the figures read for this scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        runtime, figures = self.metrics.runtime, self.metrics._figures
        depth = GaugeMetricFamily("switchboard_queue_depth", "Deliveries QUEUED per destination",
                                  labels=["channel", "destination"])
        oldest = GaugeMetricFamily("switchboard_queue_oldest_age_seconds",
                                   "Age of the oldest QUEUED delivery per destination (0: empty)",
                                   labels=["channel", "destination"])
        failing = GaugeMetricFamily("switchboard_queue_failures", "Consecutive failed attempts of the queue's head",
                                    labels=["channel", "destination"])
        state = GaugeMetricFamily("switchboard_channel_state", "1 for the channel's current state",
                                  labels=["channel", "state"])
        for name, service in runtime.channels().items():
            for value in STATES:
                state.add_metric([name, value], 1.0 if service.state == value else 0.0)
            for destination, queue in service.queues.items():
                stats = figures["queues"].get((name, destination), {})
                depth.add_metric([name, destination], float(stats.get("depth", 0)))
                oldest.add_metric([name, destination], age_seconds(stats.get("oldest_queued_at"), figures["at"]))
                failing.add_metric([name, destination], float(queue.failures))
        size = GaugeMetricFamily("switchboard_store_size_bytes", "The store's database and WAL files on disk")
        size.add_metric([], float(figures["store_bytes"]))
        return [depth, oldest, failing, state, size]
