"""engine.channel's stall guard: how many slow pipelines in a row pause a channel, and what resets
the count.  The pipeline's duration comes from a fake clock (no sleeps); the end-to-end proof
with a real looping template is tests/e2e/test_limits_e2e.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import defer

from engine.core import channel as channel_module
from engine.core.channel import STALL_LIMIT, STALL_SECONDS, Channel
from engine.core.pipeline import Outcome


class SteppingClock:
    """``time.monotonic`` whose next pipeline lasts ``durations.pop(0)`` seconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.durations: list[float] = []
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the second read of a message: after its pipeline
            self.now += self.durations.pop(0)
        return self.now


class Store:
    def __init__(self) -> None:
        self.next_id = 0

    def reserve_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def put_processed(self, channel, raw, *, message_id, **kwargs):
        return defer.succeed((message_id, False, "TRANSFORMED", {}))


class Pipeline:
    def metadata(self, message):
        return {}

    def safe_run(self, message, meta):
        return Outcome("TRANSFORMED")


class Events:
    def emit(self, *args, **kwargs):
        pass


@pytest.fixture
def clock(monkeypatch):
    fake = SteppingClock()
    monkeypatch.setattr(channel_module.time, "monotonic", fake)
    return fake


def make_channel():
    config = SimpleNamespace(name="chan", inbound="hl7", dedupe=0,
                             source=SimpleNamespace(options={"ack": "stored"}))
    channel = Channel(config, store=Store(), pipeline=Pipeline(), events=Events(), reactor=None)
    tripped: list[tuple[int, float]] = []
    channel.on_stalled = lambda count, seconds: tripped.append((count, seconds))
    return channel, tripped


def receive(channel, clock, *durations: float) -> None:
    for duration in durations:
        clock.durations.append(duration)
        channel.receive("MSH|^~\\&|A|B|C|D|20260101||ADT^A08|X1|P|2.5\r")


def test_the_limit_in_a_row_trips_once_and_starts_counting_again(clock):
    channel, tripped = make_channel()
    receive(channel, clock, *[STALL_SECONDS + 1] * (STALL_LIMIT - 1))
    assert tripped == [] and channel.stalls == STALL_LIMIT - 1
    receive(channel, clock, STALL_SECONDS + 1)
    assert tripped == [(STALL_LIMIT, STALL_SECONDS + 1)] and channel.stalls == 0
    receive(channel, clock, *[STALL_SECONDS] * (STALL_LIMIT - 1))  # exactly the threshold counts
    assert len(tripped) == 1 and channel.stalls == STALL_LIMIT - 1


def test_a_fast_message_between_slow_ones_resets_the_count(clock):
    channel, tripped = make_channel()
    slow, fast = STALL_SECONDS + 1, 0.001
    receive(channel, clock, *([slow] * (STALL_LIMIT - 1) + [fast]) * 3)
    assert tripped == [] and channel.stalls == 0
