"""The writer's held statements (engine/store/sqlite/writer.py ``stage``): the full-text index written in bulk
after the commits that store the messages, never for a write that failed, kept through a failed
commit, flushed on close, repaired after a crash. The writer's group commit itself: test_store.py."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor, task

from engine.store import Store
from engine.store.sqlite.schema import FTS_INSERT_SQL, connect_writer
from support import pg
from support.store import hl7, put, settle


# --- held writes: the full-text index -----------------------------------------------------------


def text_ids(store: Store, words: str) -> list[int]:
    return [m["id"] for m in store.search(text=words)]


def indexed_through(store) -> int:
    return pg.indexed_through(store)


@pytest_twisted.ensureDeferred
async def test_messages_are_indexed_in_bulk_after_their_commit(store):
    """A message's words are held until hold_rows are held (or hold_seconds pass, or a flush
    is asked for), then indexed in one statement, in a commit of their own or the next batch's."""
    store.hold_seconds = 3600  # only the row count or an explicit flush may run them here
    store.hold_rows = 5
    first = [(await put(store, "ehr", hl7(f"C{i}", mrn=f"MRNA{i}"), control_id=f"C{i}"))[0]
             for i in range(4)]
    assert text_ids(store, "MRNA0") == [] and indexed_through(store) == 0  # held
    fifth, _ = await put(store, "ehr", hl7("C4", mrn="MRNA4"), control_id="C4")
    assert text_ids(store, "MRNA0") == [first[0]] and text_ids(store, "MRNA4") == [fifth]
    assert indexed_through(store) == fifth
    commits = store.stats["commits"]
    sixth, _ = await put(store, "ehr", hl7("C5", mrn="MRNA5"), control_id="C5")
    await store.flush_staged()
    assert text_ids(store, "MRNA5") == [sixth]
    assert store.stats["commits"] == commits + 2  # the put's, then the flush's


@pytest_twisted.ensureDeferred
async def test_a_message_is_searchable_within_a_second_of_its_ack(store):
    """With the default hold (hold_rows or hold_seconds, then in the next commit or one of its own)."""
    message_id, _ = await put(store, "ehr", hl7("C1", mrn="MRNSOON"), control_id="C1")
    acked = time.monotonic()
    while indexed_through(store) < message_id and time.monotonic() - acked < 10:
        await task.deferLater(reactor, 0.01, lambda: None)
    assert time.monotonic() - acked < 1.0
    assert text_ids(store, "MRNSOON") == [message_id]


@pytest_twisted.ensureDeferred
async def test_held_words_are_indexed_after_hold_seconds_without_another_write(store):
    store.hold_seconds = 0.05
    message_id, _ = await put(store, "ehr", hl7("C1", mrn="MRNQUIET"), control_id="C1")
    deadline = time.monotonic() + 10
    while not text_ids(store, "MRNQUIET") and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.02, lambda: None)
    assert text_ids(store, "MRNQUIET") == [message_id]
    assert store.stats["flushes"] >= 1


@pytest_twisted.ensureDeferred
async def test_a_failed_write_leaves_nothing_to_index(store):
    def stage_then_fail(conn):
        store.stage(FTS_INSERT_SQL, (4242, "PID|SECRETWORD"))
        raise ValueError("boom")

    (ok, error), = await settle([store._write(stage_then_fail)])
    assert not ok and isinstance(error, ValueError)
    message_id, _ = await put(store, "ehr", hl7("C1", mrn="MRNKEPT"), control_id="C1")
    await store.flush_staged()
    assert text_ids(store, "SECRETWORD") == [] and text_ids(store, "MRNKEPT") == [message_id]
    pg.check_text_index(store)  # index and content agree


@pytest_twisted.ensureDeferred
async def test_held_words_survive_a_failed_commit_and_are_indexed_once_it_clears(store):
    store.hold_seconds = 3600
    kept, _ = await put(store, "ehr", hl7("C1", mrn="MRNFIRST"), control_id="C1")

    def break_commit(conn):
        conn.execute("PRAGMA defer_foreign_keys=ON")
        conn.execute("INSERT INTO metadata VALUES (-1, 'orphan', 'x')")

    store._before_commit = break_commit
    (ok, _error), = await settle([store.flush_staged()])
    assert not ok  # the flush's commit failed: nothing indexed, the held words stay held
    store._before_commit = None
    await store.flush_staged()
    assert text_ids(store, "MRNFIRST") == [kept]


@pytest_twisted.ensureDeferred
async def test_close_indexes_what_is_held(store_location):
    store = pg.open_store_at(store_location)
    store.hold_seconds = 3600
    message_id, _ = await put(store, "ehr", hl7("C1", mrn="MRNCLOSE"), control_id="C1")
    await store.close()
    assert indexed_through(store) == message_id


@pytest_twisted.ensureDeferred
async def test_a_store_reopened_after_a_crash_indexes_the_messages_it_had_not(store_location):
    store = pg.open_store_at(store_location)
    indexed, _ = await put(store, "ehr", hl7("C1", mrn="MRNOLD"), control_id="C1")
    await store.close()
    crashed = ("INSERT INTO messages (id, channel, received_at, status, sha256, raw) VALUES"
               " (%s, 'ehr', '2026-01-01T00:00:00.000Z', 'RECEIVED', 'x', 'PID|MRNCRASH')")
    if pg.is_postgres(store):  # a commit whose indexing a crash prevented
        pg.sql(store.path, crashed, (indexed + 1,))
    else:
        conn = connect_writer(str(store_location))
        conn.execute(crashed.replace("%s", "?"), (indexed + 1,))
        conn.close()
    store = pg.open_store_at(store_location)
    try:
        assert text_ids(store, "MRNCRASH") == [indexed + 1] and text_ids(store, "MRNOLD") == [indexed]
        assert indexed_through(store) == indexed + 1
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_received_at_never_goes_back_in_id_order(store, clock):
    """A text search turns its time window into an id range on this promise."""
    first, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    clock.now -= 3600  # the wall clock steps back an hour
    second, _ = await put(store, "ehr", hl7("C2"), control_id="C2")
    clock.now += 7200
    third, _ = await put(store, "ehr", hl7("C3"), control_id="C3")
    times = [store.get_message(i)["received_at"] for i in (first, second, third)]
    assert times[0] == times[1] < times[2] and second > first
