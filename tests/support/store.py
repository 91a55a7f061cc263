"""Helpers shared by the store's tests (test_store.py, test_store_queries.py, test_store_text.py,
test_retention.py): synthetic messages, a movable clock, a store fixture, a way to hold the writer,
and the query-plan checks. (Each test file defines its own ``clock`` and ``store`` fixtures.)"""

from __future__ import annotations

import re
import sqlite3
import threading

from twisted.internet import defer

from engine.store import Store

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def hl7(control_id: str, mrn: str = "MRN1", size: int = 1100) -> str:
    """A synthetic ADT^A08 of about `size` characters (no real person)."""
    text = (
        f"MSH|^~\\&|EPIC|MERCY|AGENCY|COLLECT|20261125030412||ADT^A08|{control_id}|P|2.5.1\r"
        f"PID|1||{mrn}^^^MERCY^MR||DOE^JANE||19700101|F\r"
        "PV1|1|O|CLINIC^101^1^MERCY\r"
    )
    return text + "ZPD|" + "X" * max(0, size - len(text) - 5) + "\r"


class FakeClock:
    """Seconds since the epoch, moved by the test (the writer stamps received_at with it)."""

    def __init__(self, start: float = 1_795_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def pause_writer(store: Store):
    """Hold the writer inside a write until released, so the writes queued meanwhile form one
    batch. Returns (release, the blocking write's Deferred)."""
    started, release = threading.Event(), threading.Event()

    def block(conn):
        started.set()
        assert release.wait(10), "the test never released the writer"

    d = store._write(block)
    assert started.wait(10), "the writer thread did not pick up the blocking write"
    return release, d


def put(store: Store, channel: str, raw: str, **fields) -> defer.Deferred:
    """Store a message received and not yet processed (status RECEIVED) the way the channel
    stores one, ``reserve_id`` then ``put_processed``. Fires with ``(id, duplicate)``; fails like
    the write (a read-only store fails with StoreError)."""
    d = defer.maybeDeferred(
        lambda: store.put_processed(channel, raw, message_id=store.reserve_id(), status="RECEIVED", **fields))
    return d.addCallback(lambda result: result[:2])


async def settle(deferreds):
    """Wait for every Deferred; return (ok, value-or-exception) per Deferred, in order."""
    results = await defer.DeferredList(list(deferreds), consumeErrors=True)
    return [(ok, value if ok else value.value) for ok, value in results]


def count_rows(path, table: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


async def populate(store: Store, clock: FakeClock) -> dict[str, int]:
    """Five messages, one second apart, on two channels with varied types, statuses and meta."""
    ids = {}
    rows = [
        ("a", "ehr", "ADT^A08", {"mrn": "M1", "account": "X1"}),
        ("b", "ehr", "DFT^P03", {"mrn": "M2", "account": "X2"}),
        ("c", "lab", "ORU^R01", {"mrn": "M1"}),
        ("d", "ehr", "ADT^A08", {"mrn": "M1", "account": "X3"}),
        ("e", "lab", "ADT^A08", {}),
    ]
    for control_id, channel, type_, meta in rows:
        ids[control_id], _ = await put(store, 
            channel, hl7(control_id), type=type_, control_id=control_id, meta=meta)
        clock.now += 1
    await store.set_message_result(ids["a"], status="SENT")
    await store.set_message_result(ids["b"], status="ERROR", error="bad")
    await store.set_message_result(ids["c"], status="FILTERED")
    await store.set_message_result(ids["d"], status="QUEUED")
    return ids


def control_ids(rows):
    return [row["control_id"] for row in rows]


def plans_of(store: Store, call) -> dict[str, list[str]]:
    """Run a read and return the query plan of every statement it executed."""
    conn = store._reader()
    statements = []
    conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    # FTS5 runs statements of its own on its shadow tables (its config, a handful of rows read
    # once per query; its segments, by rowid): they are its business, not ours to plan.
    return {sql: store.explain(sql) for sql in statements
            if sql.lstrip().upper().startswith("SELECT") and "'messages_fts_" not in sql}


def assert_indexed(plans: dict[str, list[str]]) -> None:
    assert plans
    for sql, lines in plans.items():
        assert any(re.search(r"USING (COVERING |INTEGER PRIMARY KEY|PRIMARY KEY|INDEX)", line)
                   or re.search(r"VIRTUAL TABLE INDEX \d+:\S*M", line) for line in lines), (sql, lines)
        bare = [line for line in lines if re.match(r"SCAN \w+( AS \w+)?$", line.strip())]
        assert not bare, (sql, lines)
        # A full-text table is read through its index only when the plan passes it the MATCH
        # (FTS5 writes "M" into its index string); without it, it would read every row.
        whole = [line for line in lines if "VIRTUAL TABLE" in line and not re.search(r"INDEX \d+:\S*M", line)]
        assert not whole, (sql, lines)


