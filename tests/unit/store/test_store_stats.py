"""The dashboard's reads of the store (engine/store/sqlite/stats.py), on SQLite and PostgreSQL:
traffic per minute counted by the minute of arrival (other channels and older messages left
out), the list page's count (the search's own filters, up to a cap, a bare message code for its
types, text through the backend's full-text index), and the report's messages per day."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import pytest_twisted
from twisted.internet import defer

from support.daemon import hl7


def stored(store, channel, control_id, status, text=""):
    raw = hl7(control_id) + (f"NTE|1||{text}\r" if text else "")
    return defer.maybeDeferred(lambda: store.put_processed(
        channel, raw, message_id=store.reserve_id(), status=status, control_id=control_id, type="ADT^A08",
        deliveries=[{"destination": "out", "status": "SENT" if status == "SENT" else "QUEUED"}]))


def minute(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M")


@pytest_twisted.ensureDeferred
async def test_traffic_by_minute(store, clock):
    start = clock.now
    clock.now -= 2 * 3600
    await stored(store, "ehr", "OLD", "SENT")
    clock.now = start - 600
    for control_id, status in (("A", "SENT"), ("B", "SENT"), ("C", "ERROR")):
        await stored(store, "ehr", control_id, status)
    await stored(store, "lab", "L", "SENT")
    clock.now = start
    await stored(store, "ehr", "D", "QUEUED")
    found = store.traffic_by_minute("ehr", start - 3600)
    assert found == {minute(start - 600): {"received": 3, "sent": 2, "errors": 1},
                     minute(start): {"received": 1, "sent": 0, "errors": 0}}


@pytest_twisted.ensureDeferred
async def test_the_list_count_is_the_search_counted_up_to_a_cap(store):
    for index in range(5):
        await stored(store, "ehr", f"A{index}", "SENT", text="pneumonia" if index < 2 else "")
    await stored(store, "lab", "L0", "ERROR")
    await store.flush_staged()                                   # the text index is written in bulk
    assert store.count_matches(100) == 6 and store.count_matches(3) == 3
    assert store.count_matches(100, channel="ehr") == 5 == len(store.search(channel="ehr"))
    assert store.count_matches(100, status="ERROR") == 1
    assert store.count_matches(100, type="ADT") == 6 and store.count_matches(100, type="ORU") == 0
    assert store.count_matches(100, control_id="A3", limit=1, offset=0) == 1
    assert store.count_matches(100, text="pneumonia") == 2 == len(store.search(text="pneumonia"))
    assert store.count_matches(100, text="pneumonia", channel="lab") == 0


@pytest_twisted.ensureDeferred
async def test_daily_counts(store, clock):
    start = clock.now
    clock.now = start - 86400
    await stored(store, "ehr", "Y", "ERROR")
    clock.now = start
    await stored(store, "ehr", "T1", "SENT")
    await stored(store, "lab", "T2", "QUEUED")
    days = store.daily_counts(start - 2 * 86400)
    today, yesterday = minute(start)[:10], minute(start - 86400)[:10]
    assert days[yesterday] == {"received": 1, "sent": 0, "filtered": 0, "errors": 1, "queued": 0}
    assert days[today] == {"received": 2, "sent": 1, "filtered": 0, "errors": 0, "queued": 1}
    assert store.daily_counts(start - 2 * 86400, "lab") == {today: {"received": 1, "sent": 0, "filtered": 0,
                                                                    "errors": 0, "queued": 1}}
