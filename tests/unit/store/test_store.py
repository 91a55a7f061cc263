"""The message store: group commit, failure isolation, dedupe, statuses, migrations, size.
Reads and query plans: test_store_queries.py; held index writes: test_store_writer.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer

from engine.store.sqlite import schema as store_schema
from engine.store import Store, StoreError, derive_status
from engine.store.sqlite.schema import SCHEMA_VERSION, connect_writer, migrate, to_iso
from support import pg
from support.store import ISO_MS, count_rows, hl7, pause_writer, put, settle


# --- the writer -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_received_message_is_stored(store):
    message_id, duplicate = await put(
        store, "ehr", hl7("C1"), type="ADT^A08", control_id="C1", sender="EPIC", meta={"mrn": "MRN1"}
    )
    assert isinstance(message_id, int) and duplicate is False
    message = store.get_message(message_id)
    assert message["raw"] == hl7("C1")
    assert message["status"] == "RECEIVED"
    assert message["channel"] == "ehr" and message["type"] == "ADT^A08"
    assert message["control_id"] == "C1" and message["meta"] == {"mrn": "MRN1"}
    assert ISO_MS.match(message["received_at"])


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_share_commits(store):
    before = dict(store.stats)
    release, blocker = pause_writer(store)
    puts = [put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}") for i in range(100)]
    release.set()
    await blocker
    results = await defer.gatherResults(puts)
    ids = [message_id for message_id, _dup in results]
    assert len(set(ids)) == 100
    assert store.stats["ops"] - before["ops"] == 101
    assert store.stats["commits"] - before["commits"] == 2  # the blocker's, then all 100 in one
    assert store.stats["max_batch"] >= 100
    assert len(store.search(channel="ehr", limit=1000)) == 100


class CountingReactor:
    """The real reactor, counting the writer thread's hand-overs to it."""

    def __init__(self):
        from twisted.internet import reactor

        self.reactor, self.handovers = reactor, 0

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        self.handovers += 1
        return self.reactor.callFromThread(f, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_batch_is_handed_back_to_the_reactor_in_one_call(tmp_path):
    reactor = CountingReactor()
    store = Store(tmp_path / "store.db", reactor)
    try:
        release, blocker = pause_writer(store)
        puts = [put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}") for i in range(50)]
        release.set()
        await blocker
        await defer.gatherResults(puts)
        assert reactor.handovers == 2  # the blocker's batch, then all 50 writes at once
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failing_write_rolls_back_only_itself(store):
    def bad(conn):
        conn.execute("INSERT INTO events (at, kind) VALUES ('2026-01-01T00:00:00.000Z', 'bad')")
        raise ValueError("boom")

    before = dict(store.stats)
    release, blocker = pause_writer(store)
    first = put(store, "ehr", hl7("A"), control_id="A")
    failing = store._write(bad)
    last = put(store, "ehr", hl7("B"), control_id="B")
    release.set()
    await blocker
    (ok_a, a), (ok_bad, error), (ok_b, b) = await settle([first, failing, last])
    assert ok_a and ok_b and not ok_bad
    assert isinstance(error, ValueError) and str(error) == "boom"
    assert store.stats["commits"] - before["commits"] == 2  # A, bad and B shared one transaction
    assert store.get_message(a[0])["control_id"] == "A"
    assert store.get_message(b[0])["control_id"] == "B"
    assert store.recent_events() == []  # the failed write's own insert was rolled back


@pytest_twisted.ensureDeferred
async def test_sqlite_errors_in_a_write_become_store_errors(store):
    orphan = store._write(
        lambda conn: conn.execute("INSERT INTO metadata VALUES (424242, 'k', 'v')")
    )
    unknown = store.set_message_result(424242, status="SENT")
    fine = put(store, "ehr", hl7("C1"), control_id="C1")
    (ok_o, err_o), (ok_u, err_u), (ok_f, _value) = await settle([orphan, unknown, fine])
    assert not ok_o and isinstance(err_o, StoreError) and ("FOREIGNKEY" in str(err_o) or "23503" in str(err_o))
    assert not ok_u and isinstance(err_u, StoreError) and "424242" in str(err_u)
    assert ok_f


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_fails_every_write_of_the_batch_then_recovers(store):
    def break_commit(conn):
        # A real COMMIT failure: a deferred foreign-key violation is only checked at COMMIT.
        conn.execute("PRAGMA defer_foreign_keys=ON")
        conn.execute("INSERT INTO metadata VALUES (-1, 'orphan', 'x')")

    store._before_commit = break_commit
    puts = [put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}") for i in range(5)]
    outcomes = await settle(puts)
    assert all(not ok and isinstance(err, StoreError) for ok, err in outcomes)
    assert "commit failed" in str(outcomes[0][1])
    assert store.stats["failed_batches"] >= 1
    assert store.search(channel="ehr") == []  # nothing of the failed batches is stored

    store._before_commit = None  # the fault clears: the writer carries on
    message_id, _ = await put(store, "ehr", hl7("C9"), control_id="C9")
    assert [m["id"] for m in store.search(channel="ehr")] == [message_id]


@pytest.mark.sqlite_only  # SQLite's max_page_count; PostgreSQL: a write error, tested e2e
@pytest_twisted.ensureDeferred
async def test_disk_full_fails_the_whole_batch_and_recovers_when_space_returns(store):
    await put(store, "ehr", hl7("C0"), control_id="C0")

    def cap_to_current_size(conn):
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")

    await store._write(cap_to_current_size)
    release, blocker = pause_writer(store)
    small = put(store, "ehr", hl7("C1"), control_id="C1")
    large = put(store, "ehr", hl7("C2", size=400_000), control_id="C2")
    release.set()
    await blocker
    outcomes = await settle([small, large])
    # SQLITE_FULL makes SQLite roll the whole transaction back, so even the small write that
    # itself succeeded was not stored and must not be reported as stored.
    assert all(not ok and isinstance(err, StoreError) for ok, err in outcomes)
    assert [m["control_id"] for m in store.search(channel="ehr")] == ["C0"]

    await store._write(lambda conn: conn.execute("PRAGMA max_page_count=1073741823"))
    await put(store, "ehr", hl7("C2", size=400_000), control_id="C2")
    assert sorted(m["control_id"] for m in store.search(channel="ehr")) == ["C0", "C2"]


@pytest_twisted.ensureDeferred
async def test_close_commits_pending_writes_and_refuses_new_ones(tmp_path):
    path = tmp_path / "store.db"
    store = Store(path)
    puts = [put(store, "ehr", hl7(f"C{i}"), control_id=f"C{i}") for i in range(50)]
    closing = store.close()
    refused = put(store, "ehr", hl7("late"), control_id="late")
    await closing
    assert len(await defer.gatherResults(puts)) == 50
    (ok, error), = await settle([refused])
    assert not ok and isinstance(error, StoreError)
    assert count_rows(path, "messages") == 50
    assert not os.path.exists(f"{path}-wal") or os.path.getsize(f"{path}-wal") == 0


@pytest_twisted.ensureDeferred
async def test_a_reopened_store_keeps_its_messages(tmp_path):
    path = tmp_path / "store.db"
    first = Store(path)
    old_id, _ = await put(first, "ehr", hl7("C1"), control_id="C1", meta={"mrn": "M1"})
    await first.close()
    second = Store(path)
    try:
        assert second.get_message(old_id)["meta"] == {"mrn": "M1"}
        assert second.unprocessed("ehr") == [old_id]
        new_id, _ = await put(second, "ehr", hl7("C2"), control_id="C2")
        assert new_id > old_id
    finally:
        await second.close()


@pytest_twisted.ensureDeferred
async def test_unencodable_text_is_refused_without_echoing_it(store):
    (ok, error), = await settle([put(store, "ehr", "PID|\udcff|")])  # a lone surrogate
    assert not ok and isinstance(error, StoreError)
    assert "\udcff" not in str(error) and "PID" not in str(error)


@pytest_twisted.ensureDeferred
async def test_the_bytes_of_a_lossy_decode_are_kept_beside_its_text(store, backend):
    """RELIABILITY 17: ``original`` is stored as given (a BLOB, byte for byte) whatever the status, and
    read back only by ``get_original``; ``get_message`` gives its length, None when none was kept."""
    lossy = hl7("L1").encode().replace(b"DOE", b"D\xff\xfe\x00E")
    nul = "\x00" if backend == "sqlite" else "\ufffd"  # PostgreSQL text holds no NUL (the next test)
    received, _ = await put(store, "ehr", hl7("L1").replace("DOE", f"D\ufffd\ufffd{nul}E"),
                            control_id="L1", original=lossy)
    processed = store.reserve_id()
    await store.put_processed("ehr", hl7("L2"), message_id=processed, status="FILTERED", control_id="L2",
                              original=b"\xe9")
    clean, _ = await put(store, "ehr", hl7("L3"), control_id="L3")
    assert (store.get_original(received), store.get_original(processed)) == (lossy, b"\xe9")
    assert store.get_message(received)["original_bytes"] == len(lossy)
    assert store.get_message(processed)["original_bytes"] == 1
    assert store.get_message(clean)["original_bytes"] is None and store.get_original(clean) is None
    assert store.get_original(10**6) is None                               # no such message
    assert lossy not in json.dumps(store.get_message(received)).encode()   # the JSON view holds no bytes


@pytest_twisted.ensureDeferred
async def test_text_with_a_nul_is_stored_by_sqlite_and_refused_by_postgresql(store, backend):
    """PostgreSQL's text holds no NUL character: such a message is refused with a StoreError that
    quotes no content (the sender gets AE), where SQLite stores it."""
    outcome = (await settle([put(store, "ehr", hl7("N1").replace("DOE", "D\x00E"), control_id="N1")]))[0]
    if backend == "sqlite":
        assert outcome[0]
    else:
        assert not outcome[0] and isinstance(outcome[1], StoreError) and "NUL" in str(outcome[1])
        assert "DOE" not in str(outcome[1]) and "PID" not in str(outcome[1])


@pytest_twisted.ensureDeferred
async def test_a_duplicate_keeps_the_first_copys_bytes(store):
    first, _ = await put(store, "ehr", "MSH|\ufffd", idempotency_key="k", original=b"MSH|\xff")
    assert await put(store, "ehr", "MSH|\ufffd", idempotency_key="k", original=b"MSH|\xfe") == (first, True)
    assert store.get_original(first) == b"MSH|\xff"


# --- dedupe -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_resent_message_within_the_window_is_a_duplicate(store, clock):
    window = 3600
    first, dup = await put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=window)
    assert dup is False
    clock.now += window - 1
    assert await put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=window) == (first, True)
    other_channel, dup = await put(store, "lab", hl7("C1"), control_id="C1", dedupe_seconds=window)
    assert dup is False and other_channel != first
    changed, dup = await put(store, "ehr", hl7("C1", mrn="MRN2"), control_id="C1",
                             dedupe_seconds=window)
    assert dup is False and changed != first  # same control id, other content: a new message
    clock.now += 2  # the first copy is now older than the window
    late, dup = await put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=window)
    assert dup is False and late not in (first, changed)
    again, dup = await put(store, "ehr", hl7("C1"), control_id="C1", dedupe_seconds=0)
    assert dup is False and again != late  # dedupe off
    assert len(store.search(channel="ehr")) == 4


@pytest_twisted.ensureDeferred
async def test_an_idempotency_key_is_honoured_within_its_channel(store, clock):
    first, _ = await put(store, "http", '{"n": 1}', inbound="json", idempotency_key="k1")
    clock.now += 90 * 86400
    assert await put(store, "http", '{"n": 2}', inbound="json", idempotency_key="k1") == (first, True)
    elsewhere, dup = await put(store, "other", '{"n": 1}', idempotency_key="k1")
    assert dup is False and elsewhere != first
    no_key, dup = await put(store, "http", '{"n": 1}', inbound="json")
    assert dup is False and no_key != first


# --- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statuses, flags, expected",
    [
        ([], {}, "TRANSFORMED"),
        (["FILTERED", "FILTERED"], {}, "TRANSFORMED"),
        (["SENT"], {}, "SENT"),
        (["SENT", "FILTERED"], {}, "SENT"),
        (["sent", "Queued"], {}, "QUEUED"),
        (["QUEUED", "ERROR", "SENT"], {}, "ERROR"),
        (["ERROR", "FILTERED"], {}, "ERROR"),
        (["SENT"], {"error": True}, "ERROR"),
        ([], {"filtered": True}, "FILTERED"),
    ],
)
def test_derive_status(statuses, flags, expected):
    assert derive_status(statuses, **flags) == expected


def test_derive_status_refuses_unknown_words():
    with pytest.raises(ValueError):
        derive_status(["DELIVERED"])


@pytest_twisted.ensureDeferred
async def test_processing_and_delivery_outcomes_drive_the_message_status(store):
    message_id, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    body = '{"account": "A1"}'
    status, ids = await store.set_message_result(
        message_id, status=None, transformed=body,
        deliveries=[
            {"destination": "agency", "status": "QUEUED", "body": body},
            {"destination": "archive", "status": "QUEUED", "body": "MSH|other"},
            {"destination": "audit", "status": "FILTERED", "body": None},
        ],
    )
    assert status == "QUEUED" and set(ids) == {"agency", "archive", "audit"}
    assert store.queued_destinations() == [("ehr", "agency"), ("ehr", "archive")]
    head = store.next_queued("ehr", "agency")
    assert [(row["id"], row["message_id"], row["body"], row["attempts"]) for row in head] == [
        (ids["agency"], message_id, body, 0)]

    retry_at = dt.datetime(2026, 11, 25, 3, 5, tzinfo=dt.timezone.utc)
    assert await store.record_attempt(ids["agency"], ok=False, error="connection refused",
                                      next_attempt_at=retry_at) == "QUEUED"
    assert store.next_queued("ehr", "agency")[0]["attempts"] == 1
    assert await store.record_attempt(ids["agency"], ok=True, response="AA") == "QUEUED"
    assert await store.record_attempt(ids["archive"], ok=False, final_status="error",
                                      error="AE: unknown account", response="MSA|AE") == "ERROR"
    assert store.queued_destinations() == []

    message = store.get_message(message_id)
    assert message["status"] == "ERROR" and message["transformed"] == body
    by_name = {d["name"]: d for d in message["destinations"]}
    assert by_name["agency"]["status"] == "SENT" and by_name["agency"]["sent"] == body
    assert [(a["ok"], a["error"], a["response"]) for a in by_name["agency"]["attempts"]] == [
        (False, "connection refused", None), (True, None, "AA")]
    assert by_name["archive"]["sent"] == "MSH|other" and by_name["archive"]["status"] == "ERROR"
    assert by_name["audit"]["status"] == "FILTERED" and by_name["audit"]["sent"] is None


@pytest_twisted.ensureDeferred
async def test_record_sent_does_for_many_what_record_attempt_does_for_one(store):
    """Two stores fed the same outcomes, one SENT at a time and all at once, end up equal."""
    async def fill():
        ids = []
        for n, destinations in enumerate((["agency"], ["agency", "archive"], ["agency"])):
            message_id, _ = await put(store, "ehr", hl7(f"S{n}"), control_id=f"S{n}")
            _status, by_name = await store.set_message_result(
                message_id, status=None, transformed=f"body{n}",
                deliveries=[{"destination": name, "body": f"body{n}"} for name in destinations])
            ids.append((message_id, by_name))
        return ids

    def view(message_id):
        message = store.get_message(message_id)
        return message["status"], [(d["name"], d["status"], [(a["ok"], a["response"]) for a in d["attempts"]])
                                   for d in message["destinations"]]

    one, many = await fill(), await fill()
    await store.record_attempt(one[2][1]["agency"], ok=False, error="down")   # a failure first
    await store.record_attempt(many[2][1]["agency"], ok=False, error="down")
    for _message_id, by_name in one:
        await store.record_attempt(by_name["agency"], ok=True, response="AA", final_status="SENT")
    await store.record_sent([(by_name["agency"], "AA") for _message_id, by_name in many])
    for (first, _), (second, _) in zip(one, many):
        assert view(first) == view(second)
    assert [view(message_id)[0] for message_id, _ in many] == ["SENT", "QUEUED", "SENT"]  # archive still queued
    assert store.get_message(many[2][0])["destinations"][0]["attempts"][0]["error"] == "down"


@pytest_twisted.ensureDeferred
async def test_processing_a_message_again_updates_its_deliveries(store):
    message_id, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    _status, ids = await store.set_message_result(
        message_id, status="QUEUED", transformed="v1",
        deliveries=[{"destination": "agency", "body": "v1"}])
    await store.record_attempt(ids["agency"], ok=False, final_status="ERROR", error="AR")
    status, again = await store.set_message_result(
        message_id, status="QUEUED", transformed="v2",
        deliveries=[{"destination": "agency", "body": "v2"}])
    assert status == "QUEUED" and again == ids  # the same row, not a second one
    destination, = store.get_message(message_id)["destinations"]
    assert destination["status"] == "QUEUED" and destination["sent"] == "v2"
    assert len(destination["attempts"]) == 1  # the earlier attempt's history stays


@pytest_twisted.ensureDeferred
async def test_a_transform_error_or_a_filter_decides_the_status(store):
    failed, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    filtered, _ = await put(store, "ehr", hl7("C2"), control_id="C2")
    assert await store.set_message_result(failed, status=None, error="template: undefined") == ("ERROR", {})
    assert await store.set_message_result(filtered, status="filtered") == ("FILTERED", {})
    assert store.get_message(failed)["error"] == "template: undefined"
    (ok, error), = await settle([store.set_message_result(failed, status="DONE")])
    assert not ok and isinstance(error, ValueError)


@pytest_twisted.ensureDeferred
async def test_events_are_kept(store):
    message_id, _ = await put(store, "ehr", hl7("C1"), control_id="C1")
    event_id = await store.add_event("nak", channel="ehr", message_id=message_id, detail="AE sent")
    events = store.recent_events(message_id=message_id)
    assert [(e["id"], e["kind"], e["channel"], e["detail"]) for e in events] == [
        (event_id, "nak", "ehr", "AE sent")]
    assert ISO_MS.match(events[0]["at"])


# --- schema -----------------------------------------------------------------------------------


def test_migrations_run_once_and_in_order(tmp_path):
    conn = connect_writer(str(tmp_path / "m.db"))
    calls = []

    def m_extra(db):
        calls.append(db["messages"].exists())
        db.execute("CREATE TABLE extra (x TEXT)")

    steps = [*store_schema.MIGRATIONS, m_extra]
    try:
        assert migrate(conn, steps) == len(steps)
        assert migrate(conn, steps) == len(steps)  # a second open changes nothing
        assert calls == [True]
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(StoreError):
            migrate(conn, store_schema.MIGRATIONS[:1])  # the store is newer than this code
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_version_1_store_is_upgraded_when_opened(tmp_path):
    path = tmp_path / "old.db"
    conn = connect_writer(str(path))
    migrate(conn, store_schema.MIGRATIONS[:1])
    conn.execute("INSERT INTO messages (channel, received_at, status, sha256, raw)"
                 " VALUES ('ehr', '2026-01-01T00:00:00.000Z', 'RECEIVED', 'x', 'MSH|')")
    conn.close()
    store = Store(path)
    try:
        conn = sqlite3.connect(path)
        columns = [r[2] for r in conn.execute("PRAGMA index_info(idx_messages_dedupe)")]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()
        assert columns == ["control_id", "channel", "sha256", "received_at"]  # m002, then m008
        assert version == SCHEMA_VERSION
        assert len(store.search()) == 1
        assert len(store.search(text="MSH")) == 1  # messages stored before m006 are indexed by it
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_version_6_store_gains_the_original_column_without_touching_its_rows(tmp_path):
    path = tmp_path / "v6.db"
    conn = connect_writer(str(path))
    migrate(conn, store_schema.MIGRATIONS[:6])
    conn.execute("INSERT INTO messages (channel, received_at, status, sha256, raw)"
                 " VALUES ('ehr', '2026-01-01T00:00:00.000Z', 'SENT', 'x', 'MSH|')")
    conn.close()
    store = Store(path)
    try:
        conn = sqlite3.connect(path)
        columns = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(messages)")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()
        assert columns["original"] == "BLOB" and version == SCHEMA_VERSION
        (old,) = store.search()
        assert store.get_message(old["id"])["original_bytes"] is None and store.get_message(old["id"])["raw"] == "MSH|"
    finally:
        await store.close()


def _store_before_m008(backend, tmp_path):
    """A store of either backend migrated up to the step before the one index by control id,
    with one message in it; its location."""
    row = ("ehr", "2026-01-01T00:00:00.000Z", "SENT", "ADT^A08", "C1", hashlib.sha256(hl7("C1").encode()).hexdigest(),
           hl7("C1"))
    insert = ("INSERT INTO messages (id, channel, received_at, status, type, control_id, sha256, raw)"
              " VALUES (1, {0}, {0}, {0}, {0}, {0}, {0}, {0})")
    if backend == "sqlite":
        path = tmp_path / "v7.db"
        conn = connect_writer(str(path))
        migrate(conn, store_schema.MIGRATIONS[:7])
        conn.execute(insert.format("?"), row)
        conn.close()
        return path
    import psycopg

    from engine.store.postgres import schema as pg_schema

    pg.require()
    url = pg.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        pg_schema.migrate(conn, pg_schema.MIGRATIONS[:2])
        conn.execute(insert.format("%s"), row)
    return url


def _message_indexes(backend, location) -> dict[str, list[str]]:
    """{index name: its columns} of the messages table, read past the store."""
    if backend == "sqlite":
        conn = sqlite3.connect(location)
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' AND sql IS NOT NULL")]
            return {n: [r[2] for r in conn.execute(f"PRAGMA index_info({n})")] for n in names}
        finally:
            conn.close()
    rows = pg.sql(location, "SELECT i.relname, a.attname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                            " JOIN pg_class t ON t.oid = x.indrelid JOIN LATERAL unnest(x.indkey)"
                            " WITH ORDINALITY AS k(attnum, n) ON true JOIN pg_attribute a"
                            " ON a.attrelid = t.oid AND a.attnum = k.attnum"
                            " WHERE t.relname = 'messages' AND NOT x.indisprimary ORDER BY i.relname, k.n")
    found: dict[str, list[str]] = {}
    for name, column in rows:
        found.setdefault(name, []).append(column)
    return found


@pytest_twisted.ensureDeferred
async def test_a_store_from_before_m008_gets_one_index_by_control_id(backend, tmp_path):
    """The upgrade at start replaces the control-id index and the duplicate index by one
    (control_id, channel, sha256, received_at) index, and what both served still works: the
    duplicate lookup, a search by control id, and one by channel and control id."""
    location = _store_before_m008(backend, tmp_path)
    try:
        before = _message_indexes(backend, location)
        assert before["idx_messages_control_id"] == ["control_id"]
        store = pg.open_store_at(location)
        try:
            indexes = _message_indexes(backend, location)
            assert "idx_messages_control_id" not in indexes
            assert indexes["idx_messages_dedupe"] == ["control_id", "channel", "sha256", "received_at"]
            assert len(indexes) == len(before) - 1
            again = await store.put_processed("ehr", hl7("C1"), message_id=store.reserve_id(), status="RECEIVED",
                                              control_id="C1", dedupe_seconds=400 * 86400)
            assert again[:2] == (1, True)
            assert [m["id"] for m in store.search(control_id="C1")] == [1]
            assert [m["id"] for m in store.search(channel="ehr", control_id="C1")] == [1]
            assert store.search(channel="lab", control_id="C1") == []
        finally:
            await store.close()
        if backend == "sqlite":
            conn = sqlite3.connect(location)
            stats = dict(conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'messages'").fetchall())
            conn.close()
            assert "idx_messages_control_id" not in stats
            assert stats["idx_messages_dedupe"] == store_schema.PLANNER_STATS[("messages", "idx_messages_dedupe")]
    finally:
        if backend != "sqlite":
            pg.drop_database(location)


# --- size and time ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_processed_message_costs_under_3_kb_of_store(tmp_path):
    """DESIGN §5: <= 3 KB stored per 1.1 KB message (received, transformed, sent, 2 meta,
    indexed for text search). Measured as the growth over an empty store: the ~30 tables and
    indexes of an empty store take one page each (~120 KB), which is not a per-message cost."""
    path = tmp_path / "size.db"
    await Store(path).close()
    empty = os.path.getsize(path)
    store = Store(path)
    count = 600

    async def life(n):
        mrn, account = f"MRN{n * 7919 % 10**6:06d}", f"A{n * 104729 % 10**7:07d}"
        message_id, _ = await put(
            store, "ehr", hl7(f"C{n:06d}", mrn=mrn), type="ADT^A08", control_id=f"C{n:06d}",
            meta={"mrn": mrn, "account": account}, dedupe_seconds=86400)
        body = json.dumps({"account": account, "mrn": mrn, "balance": "1234.56",
                           "guarantor": {"family": "DOE", "given": "JANE"}, "notes": "n" * 400})
        _status, ids = await store.set_message_result(
            message_id, status="QUEUED", transformed=body,
            deliveries=[{"destination": "agency", "body": body}])
        await store.record_attempt(ids["agency"], ok=True, response='{"accepted": true}',
                                   final_status="SENT")

    await defer.gatherResults([defer.ensureDeferred(life(n)) for n in range(count)])
    await store.close()
    assert count_rows(path, "messages") == count
    assert (os.path.getsize(path) - empty) / count <= 3 * 1024


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-25T03:04:12Z", "2026-11-25T03:04:12.000Z"),
        ("2026-11-25T05:04:12.123+02:00", "2026-11-25T03:04:12.123Z"),
        ("2026-11-25", "2026-11-25T00:00:00.000Z"),
        (dt.datetime(2026, 11, 25, 3, 4, 12, 123456), "2026-11-25T03:04:12.123Z"),
        (dt.datetime(2026, 11, 24, 22, 4, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
         "2026-11-25T03:04:12.000Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (None, None),
    ],
)
def test_times_are_normalized_to_iso_utc_with_milliseconds(value, expected):
    assert to_iso(value) == expected


def test_a_malformed_time_is_refused():
    with pytest.raises(ValueError):
        to_iso("yesterday-ish")


def test_reopening_a_migrated_store_does_not_import_sqlite_utils(tmp_path):
    """sqlite-utils runs the migrations; a store already at the current version does not need it
    (it and what it imports cost ~3.7 MB resident in the daemon)."""
    import subprocess
    import sys

    path = tmp_path / "store.db"
    code = ("import sys, sqlite3; from engine.store.sqlite.schema import connect_writer, migrate; "
            f"conn = connect_writer({str(path)!r}); print(migrate(conn), 'sqlite_utils' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert first.stdout.split() == [str(SCHEMA_VERSION), "True"], first.stderr
    assert again.stdout.split() == [str(SCHEMA_VERSION), "False"], again.stderr
