"""Retention: what pruning clears and keeps, the full-text index kept in step, space given back,
and the daemon's loop pruning in batches while writes flow. End to end: test_retention_e2e.py."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from engine.runtime.retention import Retention, check_interval
from engine.store import PRUNE_BATCH as BATCH
from engine.store import Store
from engine.store.sqlite import text as store_text
from engine.store.sqlite.retention import candidates
from engine.store.sqlite.schema import to_iso
from support.pg import check_text_index
from support.store import assert_indexed, hl7, plans_of

DAY = 86400.0


def writer_conn(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.path)


async def message(store: Store, name: str, status: str, *, queued_too: bool = False, size: int = 1100,
                  original: bytes | None = None) -> int:
    """A processed message in ``status`` with one delivery (and an attempt with a response when
    it was sent or refused), metadata, and a distinctive word ``W<name>`` in its content;
    ``original``: the bytes kept for a lossy decode (RELIABILITY 17)."""
    raw = hl7(name, mrn=f"W{name}", size=size)
    body = json.dumps({"mrn": f"W{name}", "note": "x" * 300})
    deliveries = [] if status in ("FILTERED", "TRANSFORMED", "RECEIVED") else [
        {"destination": "agency", "status": "QUEUED", "body": body}]
    if queued_too:
        deliveries.append({"destination": "archive", "status": "QUEUED", "body": "MSH|copy"})
    message_id = store.reserve_id()
    await store.put_processed("ehr", raw, message_id=message_id, status="QUEUED" if deliveries else status,
                              transformed=body if status != "RECEIVED" else None, deliveries=deliveries,
                              control_id=name, meta={"mrn": f"W{name}"}, original=original)
    if status in ("SENT", "ERROR"):
        delivery = store.get_message(message_id)["destinations"][0]["delivery_id"]
        await store.record_attempt(delivery, ok=status == "SENT", final_status=status,
                                   error=None if status == "SENT" else "AE: refused",
                                   response=f"MSA|{'AA' if status == 'SENT' else 'AE'}|{name}")
    if status == "RECEIVED":
        await store._write(lambda conn: conn.execute("UPDATE messages SET status = 'RECEIVED' WHERE id = ?",
                                                     (message_id,)))
    return message_id


async def prune(store: Store, cutoff: float, **options) -> int:
    total = 0
    while True:
        n = await store.prune_batch(to_iso(cutoff), **options)
        total += n
        if n < options.get("limit", BATCH):
            return total


def text_ids(store: Store, words: str) -> list[int]:
    return [m["id"] for m in store.search(text=words)]


def check_index(store: Store) -> None:
    check_text_index(store)  # the index holds exactly the words of the content


@pytest_twisted.ensureDeferred
async def test_pruning_clears_content_and_keeps_the_record(store, clock):
    lossy = {s: f"Wold{s} D\xe9E".encode("latin-1") for s in  # the bytes a lossy decode kept (PHI too)
             ("SENT", "FILTERED", "TRANSFORMED", "ERROR", "QUEUED", "RECEIVED")}
    old = {s: await message(store, f"old{s}", s, original=lossy[s]) for s in lossy}
    clock.now += 2 * DAY
    new = await message(store, "newSENT", "SENT", original=b"WnewSENT \xff")
    before = {i: store.get_message(i) for i in [*old.values(), new]}
    await store.flush_staged()

    assert await prune(store, clock.now - DAY) == 3

    for status in ("SENT", "FILTERED", "TRANSFORMED"):
        pruned, was = store.get_message(old[status]), before[old[status]]
        assert pruned["pruned"] is True and pruned["raw"] is None and pruned["transformed"] is None
        assert pruned["original_bytes"] is None and store.get_original(old[status]) is None
        assert was["original_bytes"] == len(lossy[status])
        keep = ("id", "channel", "status", "received_at", "type", "control_id", "meta", "error", "processed_at")
        assert {k: pruned[k] for k in keep} == {k: was[k] for k in keep}
        for dest, was_dest in zip(pruned["destinations"], was["destinations"]):
            assert dest["sent"] is None and dest["response"] is None and dest["status"] == was_dest["status"]
            assert [(a["at"], a["ok"], a["error"]) for a in dest["attempts"]] == [
                (a["at"], a["ok"], a["error"]) for a in was_dest["attempts"]]
            assert all(a["response"] is None for a in dest["attempts"])
        assert text_ids(store, f"Wold{status}") == []
    for status in ("ERROR", "QUEUED", "RECEIVED"):  # kept until resolved
        assert store.get_message(old[status]) == before[old[status]]
        assert store.get_original(old[status]) == lossy[status]
        assert text_ids(store, f"Wold{status}") == [old[status]]
    assert store.get_message(new) == before[new] and store.get_original(new) == b"WnewSENT \xff"
    assert text_ids(store, "WnewSENT") == [new]
    assert store.channel_counts()["ehr"]["received"] == 7  # counts do not change
    check_index(store)


@pytest_twisted.ensureDeferred
async def test_include_errors_prunes_errors_but_never_unfinished_work(store, clock):
    error = await message(store, "err", "ERROR")
    error_still_queued = await message(store, "errq", "ERROR", queued_too=True)
    queued = await message(store, "q", "QUEUED")
    received = await message(store, "r", "RECEIVED")
    assert store.get_message(error_still_queued)["status"] == "ERROR"
    clock.now += 2 * DAY
    await store.flush_staged()
    counts = store.count_prunable(to_iso(clock.now - DAY), True)
    assert counts["ERROR"] == 2 and counts["ERROR_QUEUED"] == 1

    assert await prune(store, clock.now - DAY, include_errors=True) == 1
    assert store.get_message(error)["pruned"] is True
    for kept in (error_still_queued, queued, received):
        assert store.get_message(kept)["pruned"] is False and store.get_message(kept)["raw"]
    check_index(store)


@pytest_twisted.ensureDeferred
async def test_only_messages_older_than_the_cutoff_are_pruned(store, clock):
    ids = []
    for day in range(5):
        ids.append(await message(store, f"d{day}", "SENT"))
        clock.now += DAY
    await store.flush_staged()
    assert await prune(store, clock.now - 2.5 * DAY) == 3
    assert [store.get_message(i)["pruned"] for i in ids] == [True, True, True, False, False]


@pytest_twisted.ensureDeferred
async def test_words_not_yet_indexed_are_never_deleted(store, clock):
    """Pruning works below the index's high-water mark: a 'delete' of words the index never got
    would corrupt it. The held message is pruned once it is indexed."""
    store.hold_seconds = 3600
    held = await message(store, "held", "FILTERED")
    clock.now += 2 * DAY
    assert await prune(store, clock.now - DAY) == 0
    await store.flush_staged()
    assert await prune(store, clock.now - DAY) == 1 and store.get_message(held)["pruned"] is True
    check_index(store)


@pytest.mark.sqlite_only  # SQLite's pages and query plans
@pytest_twisted.ensureDeferred
async def test_pruning_gives_the_space_back(store, clock):
    ids = [await message(store, f"s{i}", "SENT", size=3000) for i in range(300)]
    clock.now += 2 * DAY
    await store.flush_staged()
    conn = writer_conn(store)
    try:
        pages_before = conn.execute("PRAGMA page_count").fetchone()[0]
        assert await prune(store, clock.now - DAY, vacuum_pages=100_000) == len(ids)
        pages_after = conn.execute("PRAGMA page_count").fetchone()[0]
        free_after = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    freed = (pages_before - pages_after) * 4096
    assert free_after == 0
    assert freed >= len(ids) * 3000  # at least the raw text of every pruned message
    check_index(store)


@pytest.mark.sqlite_only  # SQLite's pages and query plans
@pytest_twisted.ensureDeferred
async def test_prune_reads_only_the_index_of_unpruned_messages(store, clock):
    await message(store, "a", "SENT")
    clock.now += 2 * DAY
    await store.flush_staged()
    for read in (lambda: store.count_prunable(to_iso(clock.now), True),
                 lambda: candidates(store._reader(), to_iso(clock.now), True, BATCH)):
        plans = plans_of(store, read)
        assert_indexed(plans)
        by_status = [lines for sql, lines in plans.items() if "status = ?" in sql or "status = '" in sql]
        assert by_status and all("idx_messages_unpruned" in " ".join(lines) for lines in by_status), plans


@pytest.mark.parametrize("retention, interval", [(30 * DAY, 60.0), (3600.0, 3.6), (10.0, 1.0)])
def test_the_check_interval_follows_the_window(retention, interval):
    assert check_interval(retention) == pytest.approx(interval)


@pytest_twisted.ensureDeferred
async def test_retention_0_keeps_everything(store, clock):
    kept = await message(store, "keep", "SENT")
    clock.now += 365 * DAY
    retention = Retention(store, 0, reactor, clock=clock)
    retention.start()
    assert await retention.run_pass() == 0
    assert store.get_message(kept)["pruned"] is False
    await retention.stop()


@pytest_twisted.ensureDeferred
async def test_the_daemon_loop_prunes_in_batches_while_writes_flow(store, clock):
    """Old messages go, batch after batch, while new ones are written between the batches; every
    message that was not old keeps its content and is found by its words."""
    old = [await message(store, f"old{i}", "SENT") for i in range(45)]
    clock.now += 2 * DAY
    await store.flush_staged()
    retention = Retention(store, DAY, reactor, batch=10, interval=0.01, clock=clock)
    batches_before = store.stats["batches"]
    retention.start()
    new = []
    while retention.pruned_total < len(old):
        assert len(new) < 2000, "the loop never pruned the old messages"
        new += await defer.gatherResults([defer.ensureDeferred(message(store, f"new{len(new) + i}", "SENT"))
                                          for i in range(5)])
    await retention.stop()
    assert all(store.get_message(i)["pruned"] for i in old)
    await store.flush_staged()
    for i in new:
        shown = store.get_message(i)
        assert not shown["pruned"] and shown["raw"] == hl7(shown["control_id"], mrn=f"W{shown['control_id']}")
    assert text_ids(store, f"W{store.get_message(new[0])['control_id']}") == [new[0]]
    assert store.stats["batches"] - batches_before > 5  # pruning shared the writer, it did not take it
    events = [e for e in store.recent_events() if e["kind"] == "pruned"]
    assert events and sum(json.loads(e["detail"])["messages"] for e in events) == len(old)
    check_index(store)


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_the_batch_in_flight(tmp_path, clock):
    store = Store(tmp_path / "store.db", clock=clock)
    for i in range(30):
        await message(store, f"m{i}", "SENT")
    clock.now += 2 * DAY
    await store.flush_staged()
    retention = Retention(store, DAY, reactor, batch=5, interval=3600, clock=clock)
    running = retention.run_pass()
    await retention.stop()  # the batch in flight commits; no more are sent
    await store.close()
    assert running.called
    conn = sqlite3.connect(tmp_path / "store.db")
    try:
        pruned = conn.execute("SELECT count(*) FROM messages WHERE pruned = 1").fetchone()[0]
    finally:
        conn.close()
    assert 0 < pruned < 30
    assert os.path.exists(tmp_path / "store.db")
