"""The audit log's hash chain: rows written through the store's writer, and every kind of tampering
(a removed row, an edited row, removed newest rows) found by ``Store.verify_audit`` and by
``switchboard audit --verify``."""

from __future__ import annotations

import json
import sqlite3

import pytest
import pytest_twisted

from engine.admin.audit import AuditLog
from engine.store import Store
from engine.store.sqlite.audit import GENESIS, row_hash
from support.daemon import run_cli


@pytest_twisted.async_yield_fixture
async def logged(tmp_path):
    """A store with five audit rows written the way the daemon writes them."""
    (tmp_path / "var").mkdir()
    store = Store(tmp_path / "var" / "switchboard.db")
    audit = AuditLog(store)
    for number in range(1, 6):
        await audit.record("admin" if number % 2 else "ops", "view", f"message:{number}")
    await audit.record("ops", "search", "messages", {"filters": {"channel": "adt"}, "ids": [1, 2]})
    yield store
    await store.close()


def connect(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


def test_rows_are_chained(logged):
    rows = list(reversed(logged.audit_entries()))
    check = logged.verify_audit()
    assert check.ok and check.rows == 6
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in zip(rows, rows[1:]):
        assert after["prev_hash"] == before["hash"]
    last = rows[-1]
    detail = json.dumps(last["detail"], sort_keys=True, separators=(",", ":"))
    assert last["hash"] == row_hash(last["prev_hash"], 6, last["at"], "ops", "search", "messages", detail)
    assert last["detail"] == {"filters": {"channel": "adt"}, "ids": [1, 2]}


def test_a_deleted_row_is_found(logged):
    with connect(logged) as conn:
        conn.execute("DELETE FROM audit WHERE id = 3")
    check = logged.verify_audit()
    assert not check.ok
    assert any("3 removed" in problem for problem in check.problems)
    assert any("row 4 does not follow" in problem for problem in check.problems)


def test_an_edited_row_is_found(logged):
    with connect(logged) as conn:
        conn.execute("UPDATE audit SET who = 'nobody' WHERE id = 2")
    check = logged.verify_audit()
    assert check.problems == ["row 2 was changed after it was written"]


def test_removed_newest_rows_are_found(logged):
    with connect(logged) as conn:
        conn.execute("DELETE FROM audit WHERE id >= 5")
    check = logged.verify_audit()
    assert check.problems == ["the newest row(s) 5-6 removed"]


@pytest_twisted.ensureDeferred
async def test_appending_after_a_deletion_still_shows_the_gap(logged):
    with connect(logged) as conn:
        conn.execute("DELETE FROM audit WHERE id = 6")
    await AuditLog(logged).record("admin", "channel.stop", "channel:adt")
    check = logged.verify_audit()
    newest = logged.audit_entries(limit=1)[0]
    assert newest["id"] == 7
    assert check.problems == ["row(s) 6 removed (the chain jumps from row 5 to 7)"]


def test_cli_lists_and_verifies(logged, tmp_path):
    config = tmp_path / "config.toml"
    (tmp_path / "channels").mkdir()
    config.write_text('[store]\npath = "var/switchboard.db"\n[admin]\ntoken = "t"\n')
    listed = run_cli("-c", str(config), "audit", "--json", "--who", "ops")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [6, 4, 2]
    ok = run_cli("-c", str(config), "audit", "--verify")
    assert ok.returncode == 0 and "6 row(s)" in ok.stdout
    with connect(logged) as conn:
        conn.execute("DELETE FROM audit WHERE id = 2")
    broken = run_cli("-c", str(config), "audit", "--verify")
    assert broken.returncode == 1
    assert "row(s) 2 removed" in broken.stderr and "tampered" in broken.stderr


@pytest.mark.parametrize("detail", [None, {"b": 1, "a": [3, 2]}])
def test_hash_depends_on_every_field(detail):
    text = "" if detail is None else json.dumps(detail, sort_keys=True, separators=(",", ":"))
    base = row_hash(GENESIS, 1, "2026-01-01T00:00:00.000Z", "admin", "view", "message:1", text)
    changed = [
        row_hash("1" * 64, 1, "2026-01-01T00:00:00.000Z", "admin", "view", "message:1", text),
        row_hash(GENESIS, 2, "2026-01-01T00:00:00.000Z", "admin", "view", "message:1", text),
        row_hash(GENESIS, 1, "2026-01-01T00:00:00.001Z", "admin", "view", "message:1", text),
        row_hash(GENESIS, 1, "2026-01-01T00:00:00.000Z", "ops", "view", "message:1", text),
        row_hash(GENESIS, 1, "2026-01-01T00:00:00.000Z", "admin", "search", "message:1", text),
        row_hash(GENESIS, 1, "2026-01-01T00:00:00.000Z", "admin", "view", "message:2", text),
        row_hash(GENESIS, 1, "2026-01-01T00:00:00.000Z", "admin", "view", "message:1", text + " "),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
