"""Alerts: when a destination has been failing or its queue waiting too long, or messages went
ERROR, call every ``alert`` plugin (hookspecs.alert).  The built-in webhook plugin
(``engine.admin.alert_webhook``) POSTs them; others can page, mail or open tickets.

A check runs every ``[alerts] check_interval`` (a LoopingCall on the engine's reactor, so tests
drive it with ``task.Clock``):

- ``destination_failing``: the queue's head has failed (transient failures, retrying) without a
  success in between for ``failing_longer_than``.  "Since" is the first check that saw it failing,
  so it is late by at most one interval; it is kept in memory (a restart starts it again).
- ``destination_queued``: the oldest QUEUED delivery of a destination (read from the store in a
  thread: the in-memory window is only the queue's head) was queued longer than
  ``queued_longer_than`` ago.
- ``message_error``: ``error`` events seen since the last check, one alert per channel with the
  count and up to 50 ids, so a burst of failures is one call, not thousands.

A condition alerts once when it starts, again every ``repeat_after`` while it lasts, and once more
with ``state = "resolved"`` when it clears.  Each plugin is called on its own and an exception it
raises is logged by plugin name: one broken alert plugin never silences the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from engine.admin.metrics import age_seconds
from engine.core.clock import wall_time
from engine.store.sqlite.schema import iso_utc

log = Logger(namespace="switchboard.alerts")

MAX_IDS = 50


@dataclass(frozen=True)
class Alert:
    kind: str                       # destination_failing | destination_queued | message_error
    state: str                      # firing | resolved
    channel: str
    destination: str | None = None
    since: str | None = None        # ISO 8601 UTC: when the condition began
    at: str = ""                    # when this alert was raised
    detail: str = ""                # a stored, PHI-free reason (connector errors, stage names)
    count: int = 0                  # queued deliveries, or messages that went ERROR
    message_ids: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        where = f"{self.channel}/{self.destination}" if self.destination else self.channel
        if self.state == "resolved":
            return f"switchboard: resolved: {self.kind.replace('_', ' ')} on {where}"
        if self.kind == "destination_failing":
            return f"switchboard: destination {where} failing since {self.since}: {self.detail}"
        if self.kind == "destination_queued":
            return f"switchboard: destination {where} has {self.count} queued, the oldest since {self.since}"
        return f"switchboard: {self.count} message(s) of channel {where} went ERROR"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["message_ids"] = list(self.message_ids)
        data["text"] = self.text
        data["source"] = "switchboard"
        return data


@dataclass(frozen=True)
class AlertContext:
    """What an alert plugin may use: the engine's config (``config.alerts``) and its reactor."""

    config: Any
    reactor: Any


class AlertMonitor:
    def __init__(self, runtime, *, clock=None, read_stats=None) -> None:
        self.runtime = runtime
        self.settings = runtime.config.alerts
        self.clock = clock or runtime.reactor
        self.read_stats = read_stats or (lambda: threads.deferToThread(runtime.store.queue_stats))
        self.context = AlertContext(runtime.config, runtime.reactor)
        self.failing_since: dict[tuple[str, str], float] = {}
        self.active: dict[tuple[str, str, str], dict] = {}    # (kind, channel, destination) -> state
        self.errors: dict[str, dict] = {}                      # channel -> {"count", "ids", "first"}
        self.loop: task.LoopingCall | None = None
        runtime.observe(self.observe)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.loop = task.LoopingCall(self.check)
        self.loop.clock = self.clock
        self.loop.start(self.settings.check_interval, now=False)

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    # -- input ------------------------------------------------------------------------------
    def observe(self, event) -> None:
        if event.kind != "error" or not self.settings.on_error:
            return
        entry = self.errors.setdefault(event.channel, {"count": 0, "ids": [], "first": wall_time(self.clock)})
        entry["count"] += 1
        if event.message_id is not None and len(entry["ids"]) < MAX_IDS and event.message_id not in entry["ids"]:
            entry["ids"].append(event.message_id)

    # -- the periodic check -----------------------------------------------------------------
    @defer.inlineCallbacks
    def check(self):
        """One round; never fails (a failed LoopingCall would stop checking for good)."""
        try:
            stats = {}
            if self.settings.queued_longer_than:
                stats = yield self.read_stats()
            self.evaluate(stats)
        except Exception:
            log.failure("alert check failed; trying again in {interval}s", interval=self.settings.check_interval)

    def evaluate(self, stats: dict) -> None:
        now = wall_time(self.clock)   # dates are shown and compared with stored ones
        settings = self.settings
        for name, service in self.runtime.channels().items():
            for destination, queue in service.queues.items():
                key = (name, destination)
                failing = queue.failures > 0
                if failing:
                    since = self.failing_since.setdefault(key, now)
                else:
                    self.failing_since.pop(key, None)
                    since = now
                self._condition("destination_failing", key,
                                bool(settings.failing_longer_than) and failing
                                and now - since >= settings.failing_longer_than,
                                now, since=since, detail=queue.last_error or "")
                figures = stats.get(key) or {}
                age = age_seconds(figures.get("oldest_queued_at"), now) if figures.get("depth") else 0.0
                self._condition("destination_queued", key,
                                bool(settings.queued_longer_than) and age >= settings.queued_longer_than,
                                now, since=now - age, count=int(figures.get("depth") or 0))
        errors, self.errors = self.errors, {}
        for channel, entry in errors.items():
            self.fire(Alert("message_error", "firing", channel, since=iso_utc(entry["first"]), at=iso_utc(now),
                            count=entry["count"], message_ids=tuple(entry["ids"])))

    def _condition(self, kind: str, key: tuple[str, str], holds: bool, now: float, *, since: float,
                   detail: str = "", count: int = 0) -> None:
        slot = (kind, *key)
        state = self.active.get(slot)
        if holds:
            repeat = self.settings.repeat_after
            if state is None:
                state = self.active[slot] = {"since": since, "sent": None}
            elif not (repeat and now - state["sent"] >= repeat):
                return
            state["sent"] = now
            self.fire(Alert(kind, "firing", key[0], key[1], since=iso_utc(state["since"]), at=iso_utc(now),
                            detail=detail, count=count))
        elif state is not None:
            del self.active[slot]
            self.fire(Alert(kind, "resolved", key[0], key[1], since=iso_utc(state["since"]), at=iso_utc(now)))

    # -- output -----------------------------------------------------------------------------
    def fire(self, alert: Alert) -> None:
        log.warn("alert: {text}", text=alert.text)
        arguments = {"alert": alert, "context": self.context}
        for impl in self.runtime.hook.alert.get_hookimpls():
            try:
                impl.function(*[arguments[name] for name in impl.argnames])
            except Exception:
                log.failure("alert plugin {plugin} raised", plugin=impl.plugin_name)
