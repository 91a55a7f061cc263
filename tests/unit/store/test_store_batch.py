"""The batch-wide ingest write (engine/store/sqlite/put_many.py, the writer's runs in writer.py):
a run of ``put_processed`` writes in one group commit is done in one go, with each write's result
and rows exactly what it gets one write at a time; a bad write in a run still fails alone, and a
failed COMMIT still fails every write. Both backends."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from twisted.internet import defer

from engine.store import StoreError
from engine.store.sqlite.put_many import DEDUPE_MANY_SQL, IDEMPOTENCY_MANY_SQL
from support import pg
from support.store import hl7, pause_writer, put, settle

WINDOW = 3600


def put_full(store, channel, raw, **fields):
    """``put_processed`` with a status and whatever else the test gives; fires with its full result."""
    status = fields.pop("status", "TRANSFORMED")
    return defer.maybeDeferred(
        lambda: store.put_processed(channel, raw, message_id=store.reserve_id(), status=status, **fields))


async def as_one_run(store, calls):
    """Queue every call while the writer is held, so they reach it as one batch; their outcomes."""
    release, blocker = pause_writer(store)
    deferreds = [call() for call in calls]
    release.set()
    await settle([blocker])  # its own batch: it fails too when a test breaks every commit
    return await settle(deferreds)


# What each test below queues: a mix of fresh messages, duplicates of the run's own messages and of
# stored ones (by bytes, by idempotency key), other channels, metadata, deliveries, statuses.
def script(channel: str, other: str) -> list[tuple[str, str, dict]]:
    dest = [{"destination": "agency", "body": "T"}, {"destination": "archive", "status": "FILTERED"},
            {"destination": "billing", "body": "B", "status": "ERROR", "error": "refused"}]
    return [
        (channel, hl7("A"), {"control_id": "A", "dedupe_seconds": WINDOW, "meta": {"mrn": "M1", "acct": "X"}}),
        (channel, hl7("A"), {"control_id": "A", "dedupe_seconds": WINDOW}),                  # dup of 0
        (other, hl7("A"), {"control_id": "A", "dedupe_seconds": WINDOW}),                    # other channel
        (channel, hl7("A", mrn="M2"), {"control_id": "A", "dedupe_seconds": WINDOW}),        # other bytes
        (channel, hl7("A"), {"control_id": "A", "dedupe_seconds": 0}),                       # dedupe off
        (channel, '{"n": 1}', {"inbound": "json", "idempotency_key": "k1"}),
        (channel, '{"n": 2}', {"inbound": "json", "idempotency_key": "k1"}),                 # dup of 5
        (other, '{"n": 1}', {"inbound": "json", "idempotency_key": "k1"}),                   # other channel
        (channel, hl7("B"), {"control_id": "B", "dedupe_seconds": WINDOW, "transformed": "T", "deliveries": dest,
                             "status": "ERROR"}),
        (channel, hl7("B"), {"control_id": "B", "dedupe_seconds": WINDOW, "deliveries": dest}),  # dup of 8
        (channel, hl7("C"), {"control_id": "C", "dedupe_seconds": WINDOW, "idempotency_key": "k2",
                             "deliveries": dest[:1], "transformed": "T", "status": "QUEUED"}),
        (channel, hl7("D"), {"control_id": "D", "dedupe_seconds": WINDOW, "idempotency_key": "k2"}),  # dup of 10
        (channel, hl7("EARLIER"), {"control_id": "EARLIER", "dedupe_seconds": WINDOW}),     # dup of a stored one
        (channel, '{"n": 9}', {"inbound": "json", "idempotency_key": "stored"}),              # dup of a stored one
    ]


def shape(store, outcomes, earlier: dict[int, str]):
    """What a run's outcomes say, with ids replaced by which write (or earlier message) they name,
    and what was stored for each stored message."""
    position = {value[0]: n for n, (ok, value) in enumerate(outcomes) if ok and not value[1]}
    out = []
    for ok, value in outcomes:
        assert ok, value
        message_id, duplicate, status, ids = value
        named = earlier.get(message_id, position.get(message_id))
        if duplicate:
            out.append(("duplicate of", named, status, ids))
            continue
        stored = store.get_message(message_id)
        destinations = {d["name"]: (d["delivery_id"], d["status"], d["error"], d["sent"])
                        for d in stored["destinations"]}
        assert {name: row[0] for name, row in destinations.items()} == ids  # ids mapped back to the right rows
        out.append(("stored", named, status, {key: stored[key] for key in (
            "status", "raw", "meta", "transformed", "error", "inbound", "control_id")},
            stored["processed_at"] is not None, {name: row[1:] for name, row in destinations.items()}))
    return out


async def stored_before(store, channel) -> dict[int, str]:
    earlier_bytes, _ = await put(store, channel, hl7("EARLIER"), control_id="EARLIER", dedupe_seconds=WINDOW)
    earlier_key, _ = await put(store, channel, '{"n": 0}', inbound="json", idempotency_key="stored")
    return {earlier_bytes: "earlier bytes", earlier_key: "earlier key"}


@pytest_twisted.ensureDeferred
async def test_a_run_stores_exactly_what_one_write_at_a_time_stores(store):
    one_at_a_time = await stored_before(store, "one")
    singles = []
    for channel, raw, fields in script("one", "one-other"):
        singles += await settle([put_full(store, channel, raw, **fields)])
    batched = await stored_before(store, "run")
    before = dict(store.stats)
    outcomes = await as_one_run(store, [lambda c=c, r=r, f=f: put_full(store, c, r, **f)
                                        for c, r, f in script("run", "run-other")])
    assert store.stats["runs"] - before["runs"] == 1
    assert store.stats["run_writes"] - before["run_writes"] == len(outcomes)
    assert store.stats["commits"] - before["commits"] == 2  # the blocker's, then the whole run
    assert shape(store, outcomes, batched) == shape(store, singles, one_at_a_time)
    assert [value[1] for _ok, value in outcomes] == [False, True, False, False, False, False, True, False,
                                                     False, True, False, True, True, True]


@pytest_twisted.ensureDeferred
async def test_the_second_of_two_identical_messages_in_one_run_is_a_duplicate(store, clock):
    (_, first), (_, second), (_, third) = await as_one_run(store, [
        lambda: put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=WINDOW),
        lambda: put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=WINDOW),
        lambda: put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=WINDOW)])
    assert first[1] is False and second == third == (first[0], True)
    clock.now += WINDOW + 1  # out of the window: stored again, and the copy in the same run is its duplicate
    (_, late), (_, late_copy) = await as_one_run(store, [
        lambda: put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=WINDOW),
        lambda: put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=WINDOW)])
    assert late[1] is False and late[0] != first[0] and late_copy == (late[0], True)
    assert len(store.search(channel="ehr")) == 2


@pytest_twisted.ensureDeferred
async def test_the_second_use_of_an_idempotency_key_in_one_run_is_a_duplicate(store):
    (_, first), (_, second), (_, elsewhere) = await as_one_run(store, [
        lambda: put(store, "http", '{"n": 1}', inbound="json", idempotency_key="k1"),
        lambda: put(store, "http", '{"n": 2}', inbound="json", idempotency_key="k1"),
        lambda: put(store, "other", '{"n": 1}', inbound="json", idempotency_key="k1")])
    assert first[1] is False and second == (first[0], True)
    assert elsewhere[1] is False and elsewhere[0] != first[0]
    (_, again), (_, fresh) = await as_one_run(store, [
        lambda: put(store, "http", '{"n": 3}', inbound="json", idempotency_key="k1"),
        lambda: put(store, "http", '{"n": 3}', inbound="json", idempotency_key="k2")])
    assert again == (first[0], True) and fresh[1] is False


@pytest.mark.parametrize("bad", ["not unicode", "refused by the database"])
@pytest_twisted.ensureDeferred
async def test_a_bad_write_in_a_run_fails_alone_and_the_others_are_stored(store, bad):
    before = dict(store.stats)
    if bad == "not unicode":  # refused in Python, before any SQL
        failing = lambda: put(store, "ehr", "PID|\udcff|", control_id="X")  # noqa: E731
    else:  # two rows for one destination: the unique index refuses the delivery INSERT
        failing = lambda: put_full(store, "ehr", hl7("X"), control_id="X",  # noqa: E731
                                   deliveries=[{"destination": "a"}, {"destination": "a"}])
    outcomes = await as_one_run(store, [
        lambda: put(store, "ehr", hl7("A"), control_id="A", meta={"mrn": "M1"}),
        failing,
        lambda: put_full(store, "ehr", hl7("B"), control_id="B", deliveries=[{"destination": "a"}])])
    (ok_a, a), (ok_bad, error), (ok_b, b) = outcomes
    assert ok_a and ok_b and not ok_bad and isinstance(error, StoreError)
    assert "\udcff" not in str(error) and "PID" not in str(error)
    assert store.stats["run_fallbacks"] - before["run_fallbacks"] == 1
    assert store.stats["runs"] == before["runs"]  # the run was redone one write at a time
    assert store.get_message(a[0])["meta"] == {"mrn": "M1"}
    assert [d["delivery_id"] for d in store.get_message(b[0])["destinations"]] == [b[3]["a"]]
    assert sorted(m["control_id"] for m in store.search(channel="ehr")) == ["A", "B"]
    await store.flush_staged()
    assert [m["id"] for m in store.search(text="MRN1")] == sorted([a[0], b[0]], reverse=True)


@pytest_twisted.ensureDeferred
async def test_a_run_whose_commit_fails_fails_every_write_then_recovers(store):
    def break_commit(conn):
        conn.execute("PRAGMA defer_foreign_keys=ON")
        conn.execute("INSERT INTO metadata VALUES (-1, 'orphan', 'x')")

    before = dict(store.stats)
    store._before_commit = break_commit
    outcomes = await as_one_run(store, [lambda i=i: put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}")
                                        for i in range(5)])
    assert store.stats["runs"] - before["runs"] == 1
    assert all(not ok and isinstance(err, StoreError) and "commit failed" in str(err) for ok, err in outcomes)
    assert store.search(channel="ehr") == []
    store._before_commit = None
    outcomes = await as_one_run(store, [lambda i=i: put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}")
                                        for i in range(5)])
    assert all(ok for ok, _ in outcomes) and len(store.search(channel="ehr")) == 5


@pytest_twisted.ensureDeferred
async def test_received_at_never_goes_back_within_a_run(store, clock):
    reads = iter(range(10**6))

    def stepping_back():  # every read of the clock an hour earlier than the one before
        return clock.now - 3600 * next(reads)

    store._clock = stepping_back
    outcomes = await as_one_run(store, [lambda i=i: put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}")
                                        for i in range(4)])
    ids = [value[0] for _ok, value in outcomes]
    times = [store.get_message(i)["received_at"] for i in ids]
    assert ids == sorted(ids) and len(set(times)) == 1  # held at the first message's time, not earlier


@pytest.mark.sqlite_only  # SQLite's query plans
@pytest_twisted.ensureDeferred
async def test_the_runs_duplicate_lookups_use_the_indexes(store):
    rows = ", ".join(["(?, ?, ?)"] * 4)
    plan = " | ".join(store.explain(IDEMPOTENCY_MANY_SQL.format(rows=rows), [0, "c", "k"] * 4))
    assert re.search(r"SEARCH m USING (COVERING )?INDEX idx_messages_idempotency \(channel=\? AND idempotency_key=\?\)",
                     plan), plan
    rows = ", ".join(["(?, ?, ?, ?, ?)"] * 4)
    plan = " | ".join(store.explain(DEDUPE_MANY_SQL.format(rows=rows), [0, "c", "C1", "x", "2026"] * 4))
    assert re.search(r"SEARCH m USING (COVERING )?INDEX idx_messages_dedupe \(control_id=\? AND channel=\? AND sha256=\? "
                     r"AND received_at>\?\)", plan), plan


@pytest_twisted.ensureDeferred
async def test_the_postgresql_writer_plans_its_statements_at_every_execution(pg_database, clock):
    """A generic plan made while the store was empty kept the wrong index for the duplicate lookup
    (a walk of the channel's window per message as the table filled): the writer's connection
    plans each execution instead (engine/store/postgres/connection.py).  PostgreSQL's own."""
    pg.empty(pg_database)
    store = pg.open_store_at(pg_database, clock=clock)
    try:
        mode = await store._write(lambda conn: conn.raw.execute("SHOW plan_cache_mode").fetchone()[0])
    finally:
        await store.close()
    assert mode == "force_custom_plan"
