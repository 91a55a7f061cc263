"""``switchboard store copy``: SQLite -> PostgreSQL -> SQLite keeps every row (counts and content
hashes per table), the queues and the audit chain; a non-empty target is refused."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from engine.store import StoreError
from engine.store.copy import copy_store, fingerprint
from support import pg
from support.daemon import run_cli
from support.store import FakeClock, hl7, put


async def fill(store, clock) -> dict:
    """A store with every kind of row: each status, queued work, attempts, events, audit, files,
    metadata, kept original bytes and a pruned message."""
    ids = {}
    ids["received"], _ = await put(store, "ehr", hl7("R1", mrn="MRNRECEIVED"), control_id="R1")
    clock.now += 1
    queued = store.reserve_id()
    ids["queued"] = queued
    await store.put_processed("ehr", hl7("Q1", mrn="MRNQUEUED"), message_id=queued, status="QUEUED",
                              transformed="{}", control_id="Q1", meta={"mrn": "MRNQUEUED", "account": "A1"},
                              deliveries=[{"destination": "agency", "body": "{}"}, {"destination": "archive", "body": "B"}],
                              original=b"\xffraw")
    clock.now += 1
    sent = store.reserve_id()
    ids["sent"] = sent
    _, _, _, deliveries = await store.put_processed("lab", hl7("S1", mrn="MRNSENT"), message_id=sent, status="QUEUED",
                                                    transformed="T", control_id="S1",
                                                    deliveries=[{"destination": "agency", "body": "T"}])
    await store.record_attempt(deliveries["agency"], ok=False, error="timeout", next_attempt_at=clock.now + 5)
    await store.record_attempt(deliveries["agency"], ok=True, response="MSA|AA|S1", possible_duplicate=True)
    clock.now += 1
    old = store.reserve_id()
    await store.put_processed("lab", hl7("P1", mrn="MRNPRUNED"), message_id=old, status="FILTERED", control_id="P1")
    await store.flush_staged()  # pruning takes only messages already in the text index
    assert await store.prune_batch(clock.now + 0.5) == 2  # the SENT and the FILTERED one
    clock.now += 1
    await store.add_event("started", channel="ehr", detail="listening")
    await store.mark_file("files", "ab" * 32, "in.hl7", "done", 2)
    for n in range(3):
        await store.append_audit("maria", "view", str(n), {"n": n})
    await store.flush_staged()
    return ids


@pytest_twisted.ensureDeferred
async def test_a_store_copied_to_postgresql_and_back_is_the_same(tmp_path):
    pg.require()
    clock = FakeClock()
    first = pg.open_store_at(tmp_path / "first.db", clock=clock)
    ids = await fill(first, clock)
    await first.close()
    original = fingerprint(tmp_path / "first.db")
    assert original["messages"][0] == 4 and original["audit"][0] == 3 and original["attempts"][0] == 2
    with pg.database() as url:
        copied = copy_store(tmp_path / "first.db", url)
        assert copied == {table: rows for table, (rows, _digest) in original.items()}
        assert fingerprint(url) == original
        back = tmp_path / "back.db"
        copy_store(url, back)
        assert fingerprint(back) == original
        moved = pg.open_store_at(url, clock=clock)
        try:  # the copy is a working store: queues, search by text, the audit chain, new ids
            assert moved.queued_destinations() == [("ehr", "agency"), ("ehr", "archive")]
            assert [m["id"] for m in moved.search(text="MRNQUEUED")] == [ids["queued"]]
            assert moved.search(text="MRNPRUNED") == []
            assert moved.get_original(ids["queued"]) == b"\xffraw"
            assert moved.verify_audit().ok and moved.verify_audit().rows == 3
            assert await moved.append_audit("maria", "view", "4") == 4
            assert moved.reserve_id() == max(ids.values()) + 2
            sent = moved.get_message(ids["sent"])["destinations"][0]["attempts"]
            assert [a["possible_duplicate"] for a in sent] == [False, True]
        finally:
            await moved.close()
        with pytest.raises(StoreError, match="not empty"):
            copy_store(back, url)


def test_the_cli_copies_the_configured_store_and_refuses_a_non_empty_target(tmp_path):
    pg.require()
    (tmp_path / "channels").mkdir()
    (tmp_path / "config.toml").write_text('[store]\npath = "var/switchboard.db"\n')
    absent = run_cli("-c", str(tmp_path / "config.toml"), "store", "copy", "--to", str(tmp_path / "x.db"))
    assert absent.returncode == 1 and "no message store" in absent.stderr and "Traceback" not in absent.stderr
    (tmp_path / "var").mkdir()
    pg.migrated_sqlite(tmp_path / "var" / "switchboard.db")
    with pg.database() as url:
        done = run_cli("-c", str(tmp_path / "config.toml"), "store", "copy", "--to", url, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["messages"] == 0
        pg.sql(url, "INSERT INTO events (at, kind) VALUES ('2026-01-01T00:00:00.000Z', 'x')")
        again = run_cli("-c", str(tmp_path / "config.toml"), "store", "copy", "--to", url)
        assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
