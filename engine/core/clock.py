"""The daemon's timers run on the monotonic clock, not the wall clock.

Twisted's reactor keeps ``callLater`` times in ``reactor.seconds()``, which is ``time.time`` (the
wall clock; checked in Twisted 25.5: ``twisted.python.runtime.seconds``).  When the wall clock steps
back (NTP correction, a VM restored, an operator fixing the date), every pending timer waits that
much longer: a step back of one hour held every retry, idle timeout and deadline for an hour.
``use_monotonic_timers(reactor)`` makes the reactor count in ``time.monotonic`` instead, rebasing
timers already scheduled, and keeps the wall clock at ``reactor.wall_seconds`` for the few callers
that need a date (``wall_time``: batch file periods).  Durations measured with ``reactor.seconds()``
stay right; nothing may store ``reactor.seconds()`` as a date.
"""

from __future__ import annotations

import time


def use_monotonic_timers(reactor) -> None:
    """Count the reactor's timers in monotonic seconds (idempotent)."""
    if getattr(reactor, "wall_seconds", None) is not None:
        return
    wall_now, mono_now = reactor.seconds(), time.monotonic()
    for call in reactor.getDelayedCalls():      # scheduled before the switch: same delay, new clock
        call.time = call.time - wall_now + mono_now
        call.seconds = time.monotonic
    reactor.wall_seconds = time.time
    reactor.seconds = time.monotonic


def wall_time(reactor) -> float:
    """The wall clock as the reactor knows it: ``wall_seconds`` after ``use_monotonic_timers``,
    else ``seconds()`` (a test's ``task.Clock`` stands for both)."""
    wall = getattr(reactor, "wall_seconds", None)
    return wall() if wall is not None else reactor.seconds()
