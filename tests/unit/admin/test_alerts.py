"""The alert monitor on ``task.Clock``: thresholds, repeats, resolution, error bursts folded into one
alert, and a broken alert plugin that does not silence the others."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import defer, task

from engine.admin.alerts import MAX_IDS, AlertMonitor
from engine.config.loader import AlertsConfig
from engine.core.events import Events
from engine.core.plugins import load_plugins
from engine.hookspecs import hookimpl
from engine.runtime.facade import Runtime
from engine.store.sqlite.schema import iso_utc

START = 1_795_000_000.0


class Collector:
    def __init__(self) -> None:
        self.alerts = []

    @hookimpl
    def alert(self, alert, context):
        self.alerts.append(alert)


class Broken:
    @hookimpl(tryfirst=True)
    def alert(self, alert):
        raise RuntimeError("this plugin is broken")


@pytest.fixture
def world():
    clock = task.Clock()
    clock.advance(START)
    registry = load_plugins(None, entry_points=False)
    collector = Collector()
    registry.manager.register(Broken(), name="broken")
    registry.manager.register(collector, name="collector")
    queue = SimpleNamespace(failures=0, last_error=None)
    stats = {}
    engine = SimpleNamespace(
        config=SimpleNamespace(alerts=AlertsConfig(failing_longer_than=60, queued_longer_than=300, check_interval=10,
                                                   repeat_after=600)),
        reactor=clock, registry=registry, events=Events(registry.hook),
        channel_services={"adt": SimpleNamespace(queues={"agency": queue})})
    monitor = AlertMonitor(Runtime(engine), clock=clock, read_stats=lambda: defer.succeed(stats))
    monitor.start()
    yield SimpleNamespace(clock=clock, queue=queue, stats=stats, alerts=collector.alerts, monitor=monitor,
                          events=engine.events)
    monitor.stop()


def kinds(alerts):
    return [(a.kind, a.state) for a in alerts]


def test_failing_fires_after_the_threshold_repeats_and_resolves(world):
    world.queue.failures, world.queue.last_error = 3, "cannot connect: ConnectionRefusedError"
    world.clock.pump([10] * 5)                        # seen failing for 40 s: under the threshold
    assert world.alerts == []
    world.clock.pump([10] * 3)                        # 60 s at the check of +70 s
    assert kinds(world.alerts) == [("destination_failing", "firing")]
    first = world.alerts[0]
    assert (first.channel, first.destination, first.detail) == ("adt", "agency", "cannot connect: ConnectionRefusedError")
    assert first.since == iso_utc(START + 10)         # the first check that saw it
    world.clock.pump([10] * 58)                       # still failing, 590 s since it was sent
    assert len(world.alerts) == 1
    world.clock.pump([10])
    assert kinds(world.alerts) == [("destination_failing", "firing")] * 2
    world.queue.failures = 0
    world.clock.pump([10, 10])
    assert kinds(world.alerts)[-1] == ("destination_failing", "resolved")
    assert len(world.alerts) == 3


def test_queued_longer_than_the_threshold(world):
    world.stats[("adt", "agency")] = {"depth": 7, "oldest_queued_at": iso_utc(START - 200)}
    world.clock.pump([10] * 9)                        # the oldest is 290 s old
    assert world.alerts == []
    world.clock.pump([10])
    (alert,) = world.alerts
    assert (alert.kind, alert.count, alert.since) == ("destination_queued", 7, iso_utc(START - 200))
    assert "7 queued" in alert.text
    world.stats.clear()
    world.clock.pump([10])
    assert kinds(world.alerts)[-1] == ("destination_queued", "resolved")


def test_an_error_burst_is_one_alert(world):
    for message_id in range(1, 101):
        world.events.emit("error", "adt", message_id, reason="transform failed")
    world.events.emit("sent", "adt", 500, destination="agency")
    world.clock.advance(10)
    (alert,) = world.alerts
    assert (alert.kind, alert.channel, alert.count) == ("message_error", "adt", 100)
    assert list(alert.message_ids) == list(range(1, MAX_IDS + 1))
    world.clock.advance(10)
    assert len(world.alerts) == 1                     # nothing new, nothing sent


def test_a_failing_check_keeps_the_loop_running(world):
    calls = []

    def flaky():
        calls.append(1)
        return defer.fail(OSError("disk gone")) if len(calls) == 1 else defer.succeed({})

    world.monitor.read_stats = flaky
    world.clock.pump([10, 10])
    assert len(calls) == 2 and world.monitor.loop.running
