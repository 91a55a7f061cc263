"""``put_processed`` for a run of messages at once: the writer's batch method for the ingest write.

Why: one message at a time, the ingest write runs a SAVEPOINT, its duplicate lookups, the message
INSERT, its metadata and delivery INSERTs and a RELEASE, each one ``execute``; on PostgreSQL each
is a trip to the server (pipelined: still two waits per message). When a group commit holds a run
of consecutive ``put_processed`` writes, the writer (``writer.py``) hands the whole run to
``put_many`` instead, inside one savepoint, and each write gets the result it would have had alone:

- the run's duplicate lookups in one query per kind (idempotency keys; the byte-dedupe window),
  both sent before either is read, so PostgreSQL answers both in one wait;
- duplicates *within* the run found here, in order, as the one-at-a-time path finds them among
  the rows the run's earlier writes inserted: the second of two identical messages is a duplicate
  of the first;
- the message rows in one ``executemany``, the metadata rows in one, the delivery rows in one
  multi-row ``INSERT ... RETURNING`` whose rows give each (message, destination) its id;
- ``received_at`` stamped message by message in run order (``stamp``), never going back.

Anything that fails here (text that is not Unicode, a value the database refuses) fails the whole
call; the writer then rolls the run back and does its writes one at a time, so that write fails
alone. The lookups list each row's position ``n`` because SQL does not promise their order, and
their length is rounded up to a power of two (the last row repeated) so a few statement texts
serve every run length and stay in the connection's statement cache.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from engine.store.sqlite.schema import FTS_INSERT_SQL, StoreError, iso_utc

MESSAGE_INSERT_SQL = (
    "INSERT INTO messages (id, channel, received_at, status, type, control_id, sender,"
    " inbound, idempotency_key, sha256, raw, transformed, error, processed_at, original)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
METADATA_INSERT_SQL = "INSERT INTO metadata (message_id, key, value) VALUES (?, ?, ?)"
DELIVERY_COLUMNS = ("INSERT INTO deliveries (message_id, channel, destination, status, error,"
                    " body_is_transformed, body, updated_at) VALUES ")
DELIVERY_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
DELIVERY_INSERT_SQL = DELIVERY_COLUMNS + DELIVERY_ROW

IDEMPOTENCY_MANY_SQL = (
    "WITH wanted (n, channel, idempotency_key) AS (VALUES {rows})"
    " SELECT n, (SELECT m.id FROM messages m WHERE m.channel = wanted.channel"
    " AND m.idempotency_key = wanted.idempotency_key ORDER BY m.id DESC LIMIT 1) FROM wanted"
)
DEDUPE_MANY_SQL = (
    "WITH wanted (n, channel, control_id, sha256, since) AS (VALUES {rows})"
    " SELECT n, (SELECT m.id FROM messages m WHERE m.channel = wanted.channel"
    " AND m.control_id = wanted.control_id AND m.sha256 = wanted.sha256"
    " AND m.received_at >= wanted.since ORDER BY m.received_at DESC LIMIT 1) FROM wanted"
)
DELIVERY_ROWS_PER_STATEMENT = 500  # 4,000 bound values: well under SQLite's limit


def digest_of(raw: str) -> str:
    """The sha256 the byte-dedupe looks up; StoreError (quoting nothing) for text that is not Unicode."""
    try:
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        raise StoreError("message text is not valid Unicode; not stored") from None


def message_row(message_id, channel, received, status, type_, control_id, sender, inbound, key, digest,
                raw, transformed, error, original) -> tuple:
    return (message_id, channel, received, status, type_, control_id, sender, inbound, key, digest, raw,
            transformed, error, None if status == "RECEIVED" else received, original)


def delivery_row(message_id, channel, destination, status, body, error, transformed, now) -> tuple:
    """A body equal to the transform output is stored once, as a flag (``body_is_transformed``)."""
    shared = body is not None and body == transformed
    return (message_id, channel, destination, status, error, int(shared), None if shared else body, now)


def put_many(conn, writes: list, stamp: Callable[[], float], stage: Callable[[str, tuple], None],
             now: str) -> list[tuple]:
    """Store a run of ``put_processed`` writes, each given as the argument tuple the one-at-a-time
    write takes ``(put_args, status, transformed, error, rows, original)``; returns one result
    per write, in order: ``(id, False, status, {destination: delivery id})``, or for a duplicate
    ``(earlier id, True, None, {})``. ``stamp()`` gives the next message's receive time (epoch
    seconds), ``stage`` holds its full-text row, ``now`` stamps the delivery rows."""
    run = [(*write, digest_of(write[0][1]), stamp()) for write in writes]
    key_hits, dedupe_hits = _lookups(conn, run)

    keys_seen: dict[tuple, int] = {}     # (channel, key) -> id, inserted by this run
    bytes_seen: dict[tuple, tuple] = {}  # (channel, control_id, sha256) -> (received_at, id)
    results: list = []
    stored: list[tuple[int, int, list[str]]] = []  # (position in results, id, destinations)
    messages, metadata, deliveries = [], [], []
    for n, (put_args, status, transformed, error, rows, original, digest, received) in enumerate(run):
        channel, raw, type_, control_id, sender, inbound, meta_rows, dedupe_seconds, key, message_id = put_args
        duplicate = None
        if key is not None:
            duplicate = keys_seen.get((channel, key), key_hits.get(n))
        if duplicate is None and dedupe_seconds > 0:
            seen = bytes_seen.get((channel, control_id, digest))
            if seen is not None and seen[0] >= iso_utc(received - dedupe_seconds):
                duplicate = seen[1]
            else:
                duplicate = dedupe_hits.get(n)
        if duplicate is not None:
            results.append((duplicate, True, None, {}))
            continue
        received_iso = iso_utc(received)
        messages.append(message_row(message_id, channel, received_iso, status, type_, control_id, sender,
                                    inbound, key, digest, raw, transformed, error, original))
        metadata += [(message_id, k, v) for k, v in meta_rows]
        deliveries += [delivery_row(message_id, channel, dest, dstatus, body, derr, transformed, now)
                       for dest, dstatus, body, derr in rows]
        stage(FTS_INSERT_SQL, (message_id, raw))
        if key is not None:
            keys_seen[(channel, key)] = message_id
        bytes_seen[(channel, control_id, digest)] = (received_iso, message_id)
        stored.append((len(results), message_id, [dest for dest, *_ in rows]))
        results.append((message_id, False, status, {}))

    if messages:
        conn.executemany(MESSAGE_INSERT_SQL, messages)
    if metadata:
        conn.executemany(METADATA_INSERT_SQL, metadata)
    if deliveries:
        ids = insert_deliveries(conn, deliveries)
        for at, message_id, destinations in stored:
            results[at] = (message_id, False, results[at][2], {dest: ids[(message_id, dest)] for dest in destinations})
    return results


def _lookups(conn, run: list) -> tuple[dict[int, int], dict[int, int]]:
    """Both kinds of duplicate lookup for the whole run, sent before either is read:
    ``({n: id} by idempotency key, {n: id} by bytes within the window)``."""
    by_key, by_bytes = [], []
    for n, (put_args, _status, _transformed, _error, _rows, _original, digest, received) in enumerate(run):
        channel, _raw, _type, control_id, _sender, _inbound, _meta, dedupe_seconds, key, _id = put_args
        if key is not None:
            by_key.append((n, channel, key))
        if dedupe_seconds > 0:
            by_bytes.append((n, channel, control_id, digest, iso_utc(received - dedupe_seconds)))
    pending = [_send(conn, template, wanted) if wanted else None
               for template, wanted in ((IDEMPOTENCY_MANY_SQL, by_key), (DEDUPE_MANY_SQL, by_bytes))]
    return tuple({n: found for n, found in cursor.fetchall() if found is not None} if cursor is not None else {}
                 for cursor in pending)


def _send(conn, template: str, wanted: list[tuple]):
    padded = wanted + [wanted[-1]] * (_power_of_two(len(wanted)) - len(wanted))
    marks = "(" + ", ".join("?" * len(wanted[0])) + ")"
    sql = template.format(rows=", ".join([marks] * len(padded)))
    return conn.execute(sql, [value for row in padded for value in row])


def _power_of_two(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


def insert_deliveries(conn, rows: list[tuple]) -> dict[tuple, int]:
    """Insert delivery rows (``delivery_row``) in multi-row statements; ``{(message id,
    destination): delivery id}`` from their RETURNING rows (whose order SQL does not promise)."""
    ids = {}
    for start in range(0, len(rows), DELIVERY_ROWS_PER_STATEMENT):
        chunk = rows[start:start + DELIVERY_ROWS_PER_STATEMENT]
        sql = DELIVERY_COLUMNS + ", ".join([DELIVERY_ROW] * len(chunk)) + " RETURNING id, message_id, destination"
        for delivery_id, message_id, destination in conn.execute(sql, [v for row in chunk for v in row]).fetchall():
            ids[(message_id, destination)] = delivery_id
    return ids
