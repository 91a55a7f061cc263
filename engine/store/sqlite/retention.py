"""Pruning: clearing old messages' content while keeping their record (DESIGN §3.1 retention).

Pruning clears a message's content and keeps its record: ``raw``, ``transformed``, ``original``
(the bytes kept when decoding was lossy, RELIABILITY 17), every delivery's body and response and
every attempt's response are set to NULL, its words leave the full-text index, and ``pruned = 1``.
Its id, channel, times, type, control id, status, metadata, error reasons, delivery statuses,
attempt times and outcomes, events and the audit log stay, so ``messages`` still finds it,
``status`` still counts it and ``show`` says its content was pruned.

What is never pruned on its own:

- ERROR messages are kept until resolved (replayed and sent) so someone can see what failed and
  replay it; ``include_errors`` prunes them too, unless one of their destinations is still QUEUED.
- QUEUED and RECEIVED messages are kept, even with ``include_errors``: they are unfinished work
  (a queued delivery's body is what will be sent; a RECEIVED message is processed after a
  restart), and pruning them would lose messages that were ACKed.

Small batches: one batch is one write through the store's writer (``Store.prune_batch``), so it
commits among the ingest writes instead of holding the write lock for long. Each batch then gives
up to ``VACUUM_PAGES`` free pages back to the file system (``incremental_vacuum``: the store is
created with ``auto_vacuum=INCREMENTAL``).

``prune_offline`` is the CLI's way (``switchboard prune``): it writes with a connection of its
own beside a running daemon. WAL and the busy timeout make the two writers take turns, each batch
is its own short transaction, and pruning inserts no new message ids, so the daemon's id counter
is unaffected.
"""

from __future__ import annotations

import json
import sqlite3

from engine.store.sqlite.schema import (
    FTS_DELETE_SQL,
    SCHEMA_VERSION,
    StoreError,
    connect_writer,
    iso_utc,
    user_version,
)
from engine.store.sqlite.text import indexed_through

BATCH = 100
VACUUM_PAGES = 256  # 1 MB a batch
PRUNABLE = ("SENT", "FILTERED", "TRANSFORMED")
KEPT = ("ERROR", "QUEUED", "RECEIVED")


def statuses(include_errors: bool) -> tuple[str, ...]:
    """The statuses a prune clears."""
    return PRUNABLE + ("ERROR",) if include_errors else PRUNABLE


# Every column but the content, in table order (raw, transformed and original are left out, so the
# row inserted again holds NULL for them).
_KEPT_COLUMNS = ("id, channel, received_at, status, type, control_id, sender, inbound, processed_at,"
                 " idempotency_key, sha256, error")


def candidates(conn, cutoff: str, include_errors: bool, limit: int) -> list[tuple]:
    """Up to ``limit`` prunable messages received before ``cutoff``, oldest first per status:
    their kept columns, then ``raw``. Only messages the full-text index already holds (below
    its high-water mark), so every 'delete' removes words that were added."""
    last = last_id_before(conn, cutoff)
    mark = min(indexed_through(conn), last)
    rows: list = []
    for status in statuses(include_errors):
        if len(rows) >= limit or not mark:
            break
        guard = ("" if status != "ERROR" else
                 " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id"
                 " AND d.status = 'QUEUED')")
        rows += conn.execute(
            f"SELECT {_KEPT_COLUMNS}, raw FROM messages WHERE pruned = 0 AND status = ?"
            f" AND id <= ? AND received_at < ?{guard} ORDER BY id LIMIT ?",
            (status, mark, cutoff, limit - len(rows)),
        ).fetchall()
    return rows


def last_id_before(conn, cutoff: str) -> int:
    """The id of the last message received before ``cutoff`` (0 if none): ids grow with
    received_at, so every older message has an id at most this."""
    row = conn.execute("SELECT id FROM messages WHERE received_at < ? ORDER BY received_at DESC, id DESC"
                       " LIMIT 1", (cutoff,)).fetchone()
    return row[0] if row else 0


def prune_batch(conn, cutoff: str, *, include_errors: bool = False, limit: int = BATCH,
                vacuum_pages: int = VACUUM_PAGES) -> int:
    """Prune up to ``limit`` messages received before ``cutoff`` (ISO UTC) in the caller's
    transaction; then give up to ``vacuum_pages`` free pages back. Returns how many it pruned.

    A pruned message's row is deleted and inserted again without its content rather than
    updated: SQLite rebalances a table page that a DELETE leaves under a third full (so whole
    pages come free for the vacuum), but an UPDATE that shrinks a row leaves the page as it is,
    and since new messages are appended at the end of the table, that space would never be used
    again. Foreign keys are deferred for the moment the row is away (its metadata and deliveries
    point at it)."""
    rows = candidates(conn, cutoff, include_errors, limit)
    if rows:
        conn.executemany(FTS_DELETE_SQL, [(row[0], row[-1]) for row in rows if row[-1] is not None])
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        conn.execute("PRAGMA defer_foreign_keys = ON")
        try:
            conn.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            conn.executemany(
                f"INSERT INTO messages ({_KEPT_COLUMNS}, pruned) VALUES ({','.join('?' * 12)}, 1)",
                [row[:-1] for row in rows])
        finally:
            conn.execute("PRAGMA defer_foreign_keys = OFF")  # the next write checks at once again
        conn.execute(f"UPDATE deliveries SET body = NULL, response = NULL WHERE message_id IN ({marks})"
                     " AND (body IS NOT NULL OR response IS NOT NULL)", ids)
        conn.execute("UPDATE attempts SET response = NULL WHERE response IS NOT NULL AND delivery_id IN"
                     f" (SELECT id FROM deliveries WHERE message_id IN ({marks}))", ids)
    vacuum(conn, vacuum_pages)
    return len(rows)


def vacuum(conn, pages: int) -> int:
    """Give up to ``pages`` free pages back to the file system; returns how many.

    One ``PRAGMA incremental_vacuum(1)`` per page: SQLite frees one page per step of that
    statement, and Python's sqlite3 steps a statement that returns no columns only once, so
    ``incremental_vacuum(N)`` from Python frees a single page."""
    free = min(int(pages), conn.execute("PRAGMA freelist_count").fetchone()[0])
    for _ in range(free):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return free


def count_prunable(conn, cutoff: str, include_errors: bool = False) -> dict[str, int]:
    """Per status, how many messages received before ``cutoff`` still hold content: those a
    prune would clear and those it keeps (``--dry-run``); with ``include_errors``, also
    ``ERROR_QUEUED``: the ERROR ones still queued somewhere, which are kept. Index-only counts."""
    counts = {}
    last = last_id_before(conn, cutoff)
    for status in PRUNABLE + KEPT:
        counts[status] = conn.execute(
            "SELECT count(*) FROM messages WHERE pruned = 0 AND status = ? AND id <= ? AND received_at < ?",
            (status, last, cutoff),
        ).fetchone()[0]
    if include_errors and counts["ERROR"]:
        counts["ERROR_QUEUED"] = conn.execute(
            "SELECT count(*) FROM messages WHERE pruned = 0 AND status = 'ERROR' AND id <= ?"
            " AND received_at < ? AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id"
            " AND d.status = 'QUEUED')", (last, cutoff)).fetchone()[0]
    return counts


def record_pruned(conn, pruned: int, cutoff: str, by: str, include_errors: bool, now: float) -> int:
    """One PHI-free ``events`` row per pass that pruned something. Returns its id."""
    detail = json.dumps({"messages": pruned, "older_than": cutoff, "by": by,
                         "include_errors": include_errors}, sort_keys=True)
    return conn.execute(
        "INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, NULL, NULL, 'pruned', ?)",
        (iso_utc(now), detail)).lastrowid


# --- with a connection of its own (switchboard prune) -------------------------------------------


def prune_offline(path, cutoff: str, include_errors: bool, now: float) -> tuple[int, int, int]:
    """Prune through a writer connection of this process's own, beside a running daemon or
    without one: batch after batch, each its own short transaction so the daemon's writer gets
    its turns, then one ``pruned`` event, then every free page given back.

    Returns ``(pruned, bytes before, bytes after)``. Raises StoreError with a sentence for the
    user (SQLite's error name only, never content)."""
    try:
        conn = connect_writer(str(path))
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store for writing ({error.sqlite_errorname})") from None
    try:
        if user_version(conn) != SCHEMA_VERSION:
            raise StoreError("the store's schema is not this Switchboard's; start the daemon once to migrate it")
        before = _size(conn)
        pruned = 0
        while True:
            n = _transaction(conn, lambda c: prune_batch(c, cutoff, include_errors=include_errors, vacuum_pages=0))
            pruned += n
            if n < BATCH:
                break
        if pruned:
            _transaction(conn, record_pruned, pruned, cutoff, "cli", include_errors, now)
        while _transaction(conn, vacuum, 2048):
            pass
        return pruned, before, _size(conn)
    except sqlite3.Error as error:
        raise StoreError(f"the store is busy or not writable ({error.sqlite_errorname}); every batch"
                         " pruned so far is committed, the one under way was rolled back: run prune again") from None
    finally:
        conn.close()


def _transaction(conn, fn, *args):
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return value


def _size(conn) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
