"""Fixtures shared by the store's unit tests (test_store*, test_retention): a fake clock and a
fresh store on it.  A test module may define its own ``clock`` or ``store``; pytest prefers it."""

from __future__ import annotations

import pytest
import pytest_twisted

from engine.store import Store
from support.store import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest_twisted.async_yield_fixture
async def store(tmp_path, clock):
    s = Store(tmp_path / "store.db", clock=clock)
    yield s
    await s.close()
