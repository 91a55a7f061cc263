"""Fixtures shared by the store's unit tests (test_store*, test_retention): a fake clock and a
fresh store on it.  A test module may define its own ``clock`` or ``store``; pytest prefers it."""

from __future__ import annotations

import signal

import pytest
import pytest_twisted

from engine.store import Store
from support.store import FakeClock

# A suite started in the background by a shell (`make test &`, nohup) inherits SIGINT ignored, and
# so would every daemon it starts: Twisted, like any Unix program, then leaves Ctrl-C alone, and
# the graceful-stop-on-SIGINT test waits for nothing.  A handled SIGINT here is reset to the
# default at exec, so the daemons get a SIGINT they act on.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def clock():
    return FakeClock()


@pytest_twisted.async_yield_fixture
async def store(tmp_path, clock):
    s = Store(tmp_path / "store.db", clock=clock)
    yield s
    await s.close()
