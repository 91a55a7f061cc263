"""The audit log's rows and their hash chain (the ``audit`` table, migration ``_m003_audit``).

Rows are appended inside the store's writer, so an audit row commits in the group commit like
every other write, and the admin API can wait for that commit before it answers.

Tamper evidence: each row holds ``prev_hash`` (the previous row's hash; 64 zeros for the first)
and ``hash = sha256(prev_hash + canonical row)``, the canonical row being the JSON array
``[id, at, who, action, target, detail]``.  ``verify_chain`` walks the table: an edited row no
longer matches its hash, a removed row leaves a gap in the ids and a broken link, and removing
the newest rows shows because ``sqlite_sequence`` still remembers the last id handed out
(AUTOINCREMENT).  What this does not stop is someone who rewrites the whole chain from the point
they changed, and ``sqlite_sequence`` with it: for that, ship the rows elsewhere
(``switchboard audit --json``) as they are written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from engine.store.sqlite.schema import equal_terms

GENESIS = "0" * 64
COLUMNS = ("id", "at", "who", "action", "target", "detail", "prev_hash", "hash")


def canonical_detail(detail) -> str:
    """``detail`` as the text that is stored and hashed: sorted, compact JSON ('' for None)."""
    return "" if detail is None else json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, row_id: int, at: str, who: str, action: str, target: str, detail: str) -> str:
    canonical = json.dumps([row_id, at, who, action, target, detail], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def append(conn, at: str, who: str, action: str, target: str, detail: str) -> int:
    """In the store's writer thread: add one row, chained to the newest. Returns its id."""
    last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = last[0] if last else GENESIS
    row_id = conn.execute(
        "INSERT INTO audit (at, who, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, '')",
        (at, who, action, target, detail, prev),
    ).lastrowid
    conn.execute("UPDATE audit SET hash = ? WHERE id = ?",
                 (row_hash(prev, row_id, at, who, action, target, detail), row_id))
    return row_id


def entries(conn, *, limit: int | None = None, who: str | None = None, action: str | None = None) -> list[dict]:
    """Rows, newest first, ``detail`` decoded."""
    where, params = equal_terms(who=who, action=action)
    sql = f"SELECT {', '.join(COLUMNS)} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = []
    for values in conn.execute(sql, params).fetchall():
        row = dict(zip(COLUMNS, values))
        try:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        except ValueError:
            pass  # an edited row: verify_chain says so; show it as it is
        rows.append(row)
    return rows


@dataclass
class ChainCheck:
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(conn) -> ChainCheck:
    """Walk the chain in id order; every problem is one sentence naming the row ids."""
    check = ChainCheck()
    prev_hash, prev_id = GENESIS, 0
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit ORDER BY id")
    while True:
        batch = cursor.fetchmany(1000)
        if not batch:
            break
        for row_id, at, who, action, target, detail, stored_prev, stored_hash in batch:
            check.rows += 1
            if row_id != prev_id + 1:
                gap = f"{prev_id + 1}" if row_id == prev_id + 2 else f"{prev_id + 1}-{row_id - 1}"
                check.problems.append(f"row(s) {gap} removed (the chain jumps from row {prev_id} to {row_id})")
            if stored_prev != prev_hash:
                check.problems.append(f"row {row_id} does not follow the row before it (a row was removed or "
                                      "changed)")
            if row_hash(stored_prev, row_id, at, who, action, target, detail) != stored_hash:
                check.problems.append(f"row {row_id} was changed after it was written")
            prev_hash, prev_id = stored_hash, row_id
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    if seq is not None and seq[0] > prev_id:
        last = f"{prev_id + 1}" if seq[0] == prev_id + 1 else f"{prev_id + 1}-{seq[0]}"
        check.problems.append(f"the newest row(s) {last} removed")
    return check
