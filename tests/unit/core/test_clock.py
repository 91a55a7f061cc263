"""engine/core/clock.py on a real Twisted reactor object (created, never run or installed)."""

from __future__ import annotations

import time

from twisted.internet import task
from twisted.internet.selectreactor import SelectReactor

from engine.core.clock import use_monotonic_timers, wall_time


def test_twisted_counts_timers_in_wall_seconds_by_default():
    """The premise of the module: if this ever changes, use_monotonic_timers is a no-op."""
    assert SelectReactor().seconds is time.time


def test_timers_move_to_the_monotonic_clock_keeping_their_delays():
    reactor = SelectReactor()
    try:
        before = reactor.callLater(30, lambda: None)
        use_monotonic_timers(reactor)
        after = reactor.callLater(10, lambda: None)
        assert reactor.seconds is time.monotonic and reactor.wall_seconds is time.time
        assert abs(before.getTime() - (time.monotonic() + 30)) < 1
        assert abs(after.getTime() - (time.monotonic() + 10)) < 1
        assert 9 < reactor.timeout() <= 10
        before.reset(5)                              # a DelayedCall's own clock moved too
        assert abs(before.getTime() - (time.monotonic() + 5)) < 1
        use_monotonic_timers(reactor)                # idempotent
        assert abs(after.getTime() - (time.monotonic() + 10)) < 1
        before.cancel()
        after.cancel()
    finally:
        reactor.disconnectAll()


def test_wall_time_is_the_wall_clock_or_a_test_clock():
    reactor = SelectReactor()
    use_monotonic_timers(reactor)
    assert abs(wall_time(reactor) - time.time()) < 1
    clock = task.Clock()
    clock.advance(1_700_000_000)
    assert wall_time(clock) == 1_700_000_000
