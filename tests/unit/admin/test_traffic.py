"""A channel's last hour per minute (engine/admin/traffic.py over Store.traffic_by_minute, whose
SQL tests/unit/store/test_store_stats.py checks on both backends): one point per minute, the
minutes without messages zero; the window's words checked; the SVG is markup we build (no
script, numbers only) with the totals in its label."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import pytest_twisted
from twisted.internet import defer

from engine.admin.traffic import chart, traffic, window_seconds
from support.daemon import hl7


def stored(store, channel, control_id, status):
    return defer.maybeDeferred(lambda: store.put_processed(
        channel, hl7(control_id), message_id=store.reserve_id(), status=status, control_id=control_id, type="ADT^A08",
        deliveries=[{"destination": "out", "status": "SENT" if status == "SENT" else "QUEUED"}]))


@pytest_twisted.ensureDeferred
async def test_each_minute_of_the_window_is_counted_by_arrival(store, clock):
    now = datetime.fromtimestamp(clock.now, timezone.utc)
    clock.now -= 2 * 3600                                    # two hours ago: outside the window
    await stored(store, "ehr", "OLD", "SENT")
    clock.now += 2 * 3600 - 600                              # ten minutes ago
    for control_id, status in (("A", "SENT"), ("B", "SENT"), ("C", "ERROR")):
        await stored(store, "ehr", control_id, status)
    await stored(store, "lab", "L", "SENT")                  # another channel
    clock.now += 600
    await stored(store, "ehr", "D", "QUEUED")                # this minute

    figures = traffic(store, "ehr", 3600, now=now)
    assert len(figures["minutes"]) == 60 and figures["window_seconds"] == 3600
    assert figures["minutes"][-1]["minute"] == now.strftime("%Y-%m-%dT%H:%MZ")
    assert figures["minutes"][-1] == {"minute": figures["minutes"][-1]["minute"], "received": 1, "sent": 0, "errors": 0}
    assert figures["minutes"][-11] == {"minute": figures["minutes"][-11]["minute"], "received": 3, "sent": 2, "errors": 1}
    assert figures["totals"] == {"received": 4, "sent": 2, "errors": 1}
    assert sum(1 for m in figures["minutes"] if m["received"]) == 2


@pytest_twisted.ensureDeferred
async def test_the_chart_is_our_markup_with_the_totals(store, clock):
    await stored(store, "ehr", "A", "SENT")
    svg = str(chart(traffic(store, "ehr", 3600, now=datetime.fromtimestamp(clock.now, timezone.utc))))
    assert svg.startswith('<svg class="traffic"') and svg.count("<rect") == 2       # received and sent bars
    assert "1 received, 1 sent, 0 errors" in svg and "<script" not in svg and "style=" not in svg


@pytest.mark.parametrize("text, seconds", [(None, 3600), ("1h", 3600), ("30m", 1800), ("24h", 86400), ("90", 60)])
def test_windows(text, seconds):
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0m", "30s", "25h", "2d", "1e9h", "-1h", "h", "1 hour"])
def test_windows_out_of_range_are_refused_with_a_sentence(text):
    with pytest.raises(ValueError, match="window must be a duration from 1m to 24h"):
        window_seconds(text)


def test_the_counts_are_read_from_covering_indexes(store):
    from engine.store.sqlite.stats import TRAFFIC_SQL

    plan = store.explain(TRAFFIC_SQL, ("ehr", "2026-01-01T00:00:00.000Z") * 3)
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert len(searches) == 3 and all("USING COVERING INDEX" in step for step in searches), plan

