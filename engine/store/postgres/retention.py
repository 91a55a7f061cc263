"""Pruning on PostgreSQL: what is pruned and what is kept are SQLite's rules (``sqlite/retention.py``:
``candidates``, ``count_prunable``, ``record_pruned`` are shared); only how the content goes differs.

A pruned message's content is cleared by an UPDATE: PostgreSQL writes a new row version either
way (there is no page rebalancing to gain from SQLite's delete-and-insert), and autovacuum gives
the old versions' space back to the table, so a batch has no vacuum step. Its words leave
``message_text`` in the same transaction.
"""

from __future__ import annotations

import psycopg

from engine.store.postgres.connection import PgConnection, _reason
from engine.store.postgres.schema import SCHEMA_VERSION, schema_version
from engine.store.sqlite.retention import BATCH, candidates, record_pruned
from engine.store.sqlite.schema import StoreError


def prune_batch(conn, cutoff: str, *, include_errors: bool = False, limit: int = BATCH, vacuum_pages: int = 0) -> int:
    """Prune up to ``limit`` messages received before ``cutoff`` in the caller's transaction."""
    rows = candidates(conn, cutoff, include_errors, limit)
    if rows:
        ids = [row[0] for row in rows]
        conn.execute("DELETE FROM message_text WHERE id = ANY(?)", (ids,))
        conn.execute("UPDATE messages SET raw = NULL, transformed = NULL, original = NULL, pruned = 1"
                     " WHERE id = ANY(?)", (ids,))
        conn.execute("UPDATE deliveries SET body = NULL, response = NULL WHERE message_id = ANY(?)"
                     " AND (body IS NOT NULL OR response IS NOT NULL)", (ids,))
        conn.execute("UPDATE attempts SET response = NULL WHERE response IS NOT NULL AND delivery_id IN"
                     " (SELECT id FROM deliveries WHERE message_id = ANY(?))", (ids,))
    return len(rows)


def prune_offline(url: str, cutoff: str, include_errors: bool, now: float) -> tuple[int, int, int]:
    """``switchboard prune`` on PostgreSQL: batch after batch, each its own transaction, beside
    running nodes. Returns ``(pruned, bytes before, bytes after)`` (the database's size)."""
    conn = PgConnection(url)
    try:
        if schema_version(conn.raw) != SCHEMA_VERSION:
            raise StoreError("the store's schema is not this Switchboard's; start the daemon once to migrate it")
        before = _size(conn)
        pruned = 0
        while True:
            with conn.raw.transaction():
                n = prune_batch(conn, cutoff, include_errors=include_errors)
            pruned += n
            if n < BATCH:
                break
        if pruned:
            with conn.raw.transaction():
                record_pruned(conn, pruned, cutoff, "cli", include_errors, now)
        return pruned, before, _size(conn)
    except psycopg.Error as error:
        raise StoreError(f"the store is not writable ({_reason(error)}); every batch pruned so far is"
                         " committed, the one under way was rolled back: run prune again") from None
    finally:
        conn.close()


def _size(conn) -> int:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
