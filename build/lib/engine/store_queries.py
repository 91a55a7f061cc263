"""Read side of the message store: searches, one message's full record, counts, the queues.

Every function takes a plain DB-API connection (a read-only SQLite one from ``Store``) and returns
plain dicts shaped like the CLI's and the admin API's JSON (DESIGN §3.6), so the CLI can read the
store whether or not the daemon runs (WAL lets readers and the one writer work side by side).

Each query is written to be answered from an index (``tests/test_store.py`` checks the plans);
the SQL is deliberately plain (no SQLite-only syntax) so it ports to PostgreSQL (DESIGN §4). The
two-query reads (rows, then their metadata) run inside one read transaction so they see one
snapshot; every cursor is drained with ``fetchall`` so no read snapshot outlives a call and
blocks the writer's checkpoints.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

from .store_schema import normalize_status, to_iso

_SUMMARY = "id, channel, status, received_at, type, control_id"
_META_CHUNK = 500  # ids per "IN (...)": well under SQLite's bound-parameter limit


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction around several SELECTs (the connection is in autocommit mode)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def search_sql(
    channel=None,
    status=None,
    since=None,
    until=None,
    type=None,
    control_id=None,
    meta=None,
    limit=100,
    offset=0,
) -> tuple[str, list]:
    """The SQL and parameters of :func:`search` (also what ``Store.search_plan`` explains).

    ``since`` is inclusive, ``until`` inclusive; both accept datetimes or ISO 8601 strings."""
    where, params = [], []
    if channel is not None:
        where.append("channel = ?")
        params.append(channel)
    if status is not None:
        where.append("status = ?")
        params.append(normalize_status(status))
    if since is not None:
        where.append("received_at >= ?")
        params.append(to_iso(since))
    if until is not None:
        where.append("received_at <= ?")
        params.append(to_iso(until))
    if type is not None:
        where.append("type = ?")
        params.append(type)
    if control_id is not None:
        where.append("control_id = ?")
        params.append(control_id)
    for key, value in (meta or {}).items():
        where.append("id IN (SELECT message_id FROM metadata WHERE key = ? AND value = ?)")
        params.extend((str(key), str(value)))
    sql = f"SELECT {_SUMMARY} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_at DESC, id DESC LIMIT ? OFFSET ?"
    params.extend((int(limit), int(offset)))
    return sql, params


def _summary(row) -> dict:
    return {
        "id": row[0],
        "channel": row[1],
        "status": row[2],
        "received_at": row[3],
        "type": row[4],
        "control_id": row[5],
        "meta": {},
    }


def _attach_meta(conn: sqlite3.Connection, summaries: list[dict]) -> list[dict]:
    by_id = {s["id"]: s for s in summaries}
    ids = list(by_id)
    for start in range(0, len(ids), _META_CHUNK):
        chunk = ids[start : start + _META_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT message_id, key, value FROM metadata WHERE message_id IN ({marks})", chunk
        ).fetchall()
        for message_id, key, value in rows:
            by_id[message_id]["meta"][key] = value
    return summaries


def search(conn: sqlite3.Connection, **filters) -> list[dict]:
    """Message summaries, newest first: ``{"id", "channel", "status", "received_at", "type",
    "control_id", "meta"}``."""
    sql, params = search_sql(**filters)
    with snapshot(conn):
        summaries = [_summary(row) for row in conn.execute(sql, params).fetchall()]
        return _attach_meta(conn, summaries)


def get_message(conn: sqlite3.Connection, message_id: int) -> dict | None:
    """Everything kept about one message (``show --json``), or None for an unknown id."""
    with snapshot(conn):
        row = conn.execute(
            f"SELECT {_SUMMARY}, sender, inbound, processed_at, pruned, error, raw, transformed"
            " FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return None
        message = _attach_meta(conn, [_summary(row)])[0]
        transformed = row[12]
        message.update(
            sender=row[6],
            inbound=row[7],
            processed_at=row[8],
            pruned=bool(row[9]),
            error=row[10],
            raw=row[11],
            transformed=transformed,
        )
        deliveries = conn.execute(
            "SELECT id, destination, status, attempts, next_attempt_at, updated_at, error,"
            " response, body_is_transformed, body FROM deliveries WHERE message_id = ? ORDER BY id",
            (message_id,),
        ).fetchall()
        attempts = conn.execute(
            "SELECT delivery_id, at, ok, error, response, possible_duplicate FROM attempts"
            " WHERE delivery_id IN (SELECT id FROM deliveries WHERE message_id = ?) ORDER BY id",
            (message_id,),
        ).fetchall()
    tried: dict[int, list[dict]] = {}
    for delivery_id, at, ok, error, response, possible_duplicate in attempts:
        tried.setdefault(delivery_id, []).append(
            {
                "at": at,
                "ok": bool(ok),
                "error": error,
                "response": response,
                "possible_duplicate": bool(possible_duplicate),
            }
        )
    message["destinations"] = [
        {
            "name": d[1],
            "status": d[2],
            "attempts": tried.get(d[0], []),
            "sent": transformed if d[8] else d[9],
            "error": d[6],
            "response": d[7],
            "next_attempt_at": d[4],
            "updated_at": d[5],
            "delivery_id": d[0],
        }
        for d in deliveries
    ]
    return message


_COUNT_KEYS = {"FILTERED": "filtered", "QUEUED": "queued", "SENT": "sent", "ERROR": "errored"}


def channel_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per channel: received (every message) and filtered/queued/sent/errored by message status.
    One GROUP BY over the (channel, status, received_at) index: no table rows are read."""
    counts: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        "SELECT channel, status, COUNT(*) FROM messages GROUP BY channel, status"
    ).fetchall()
    for channel, status, n in rows:
        entry = counts.setdefault(
            channel, {"received": 0, "filtered": 0, "queued": 0, "sent": 0, "errored": 0}
        )
        entry["received"] += n
        key = _COUNT_KEYS.get(status)
        if key:
            entry[key] += n
    return counts


def unprocessed(conn: sqlite3.Connection, channel: str) -> list[int]:
    """Ids of the channel's messages stored but not processed (status RECEIVED), oldest first."""
    rows = conn.execute(
        "SELECT id FROM messages WHERE channel = ? AND status = 'RECEIVED' ORDER BY id", (channel,)
    ).fetchall()
    return [r[0] for r in rows]


def queued_destinations(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Every (channel, destination) with at least one QUEUED delivery (queues to resume)."""
    rows = conn.execute(
        "SELECT DISTINCT channel, destination FROM deliveries WHERE status = 'QUEUED'"
        " ORDER BY channel, destination"
    ).fetchall()
    return [(c, d) for c, d in rows]


def next_queued(
    conn: sqlite3.Connection, channel: str, destination: str, limit: int = 100, after: int = 0
) -> list[dict]:
    """The destination's QUEUED deliveries in message order (the order they must go out in),
    starting after message id ``after``; each with the body to send."""
    rows = conn.execute(
        "SELECT d.id, d.message_id, d.attempts, d.next_attempt_at,"
        " CASE WHEN d.body_is_transformed = 1 THEN m.transformed ELSE d.body END"
        " FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.channel = ? AND d.destination = ? AND d.status = 'QUEUED' AND d.message_id > ?"
        " ORDER BY d.message_id LIMIT ?",
        (channel, destination, after, int(limit)),
    ).fetchall()
    return [
        {
            "id": r[0],
            "message_id": r[1],
            "channel": channel,
            "destination": destination,
            "attempts": r[2],
            "next_attempt_at": r[3],
            "body": r[4],
        }
        for r in rows
    ]


def metadata_for(conn: sqlite3.Connection, message_ids: list[int]) -> dict[int, dict[str, str]]:
    """Metadata of several messages at once (a queue window refilled from the store)."""
    found: dict[int, dict[str, str]] = {}
    for start in range(0, len(message_ids), 500):
        chunk = message_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for message_id, key, value in conn.execute(
            f"SELECT message_id, key, value FROM metadata WHERE message_id IN ({marks})", chunk
        ):
            found.setdefault(message_id, {})[key] = value
    return found


def recent_events(
    conn: sqlite3.Connection, limit: int = 100, channel=None, message_id=None
) -> list[dict]:
    """Engine events (PHI-free), newest first."""
    where, params = [], []
    if channel is not None:
        where.append("channel = ?")
        params.append(channel)
    if message_id is not None:
        where.append("message_id = ?")
        params.append(message_id)
    sql = "SELECT id, at, channel, message_id, kind, detail FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, int(limit))).fetchall()
    keys = ("id", "at", "channel", "message_id", "kind", "detail")
    return [dict(zip(keys, r)) for r in rows]


def queue_stats(conn: sqlite3.Connection) -> dict[tuple[str, str], dict]:
    """Per (channel, destination) with QUEUED deliveries: ``{"depth", "oldest_queued_at"}``.

    The depth is the whole durable queue (the in-memory window holds only its head); "queued at"
    is the time the message was (re)processed, i.e. when its delivery joined the queue. Reads the
    partial QUEUED index, so it costs the size of the live queues, not of the history."""
    rows = conn.execute(
        "SELECT d.channel, d.destination, COUNT(*), MIN(m.processed_at)"
        " FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.status = 'QUEUED' GROUP BY d.channel, d.destination"
    ).fetchall()
    return {(c, d): {"depth": n, "oldest_queued_at": oldest} for c, d, n, oldest in rows}


def replay_candidates(
    conn: sqlite3.Connection,
    *,
    ids=None,
    channel=None,
    status=None,
    since=None,
    until=None,
    limit: int = 100_000,
) -> list[dict]:
    """Messages a replay selects, in id order (the order they go out again), each with what the
    replay must know before it touches them: ``{"id", "channel", "status", "pruned",
    "deliveries": {destination: status}}``. Either explicit ``ids`` or a ``channel`` with optional
    status and time window; at most ``limit`` rows."""
    with snapshot(conn):
        if ids is not None:
            found = []
            wanted = sorted({int(i) for i in ids})
            for start in range(0, len(wanted), _META_CHUNK):
                chunk = wanted[start : start + _META_CHUNK]
                marks = ",".join("?" * len(chunk))
                found += conn.execute(
                    f"SELECT id, channel, status, pruned FROM messages WHERE id IN ({marks})", chunk
                ).fetchall()
            rows = sorted(found)[: int(limit)]
        else:
            where, params = ["channel = ?"], [channel]
            if status is not None:
                where.append("status = ?")
                params.append(normalize_status(status))
            if since is not None:
                where.append("received_at >= ?")
                params.append(to_iso(since))
            if until is not None:
                where.append("received_at <= ?")
                params.append(to_iso(until))
            rows = conn.execute(
                "SELECT id, channel, status, pruned FROM messages WHERE " + " AND ".join(where)
                + " ORDER BY id LIMIT ?",
                (*params, int(limit)),
            ).fetchall()
        candidates = {
            r[0]: {"id": r[0], "channel": r[1], "status": r[2], "pruned": bool(r[3]), "deliveries": {}}
            for r in rows
        }
        keys = list(candidates)
        for start in range(0, len(keys), _META_CHUNK):
            chunk = keys[start : start + _META_CHUNK]
            marks = ",".join("?" * len(chunk))
            for message_id, destination, dstatus in conn.execute(
                f"SELECT message_id, destination, status FROM deliveries WHERE message_id IN ({marks})",
                chunk,
            ).fetchall():
                candidates[message_id]["deliveries"][destination] = dstatus
    return list(candidates.values())


def file_seen(conn: sqlite3.Connection, channel: str, sha256: str) -> dict | None:
    """The latest ``done`` row of ``source_files`` for this content on this channel, or None."""
    row = conn.execute(
        "SELECT name, messages, done_at FROM source_files WHERE channel = ? AND sha256 = ?"
        " AND status = 'done' ORDER BY id DESC LIMIT 1",
        (channel, sha256),
    ).fetchone()
    return None if row is None else {"name": row[0], "messages": row[1], "done_at": row[2]}
