"""Read side of the message store: searches, one message's full record, counts, the queues.

Every function takes a plain DB-API connection (a read-only SQLite one from ``Store``) and returns
plain dicts shaped like the CLI's and the admin API's JSON (DESIGN §3.6), so the CLI can read the
store whether or not the daemon runs (WAL lets readers and the one writer work side by side).

Each query is written to be answered from an index (``tests/unit/store/test_store.py`` checks the plans);
the SQL is deliberately plain (no SQLite-only syntax) so it ports to PostgreSQL (DESIGN §4). The
two-query reads (rows, then their metadata) run inside one read transaction so they see one
snapshot; every cursor is drained with ``fetchall`` so no read snapshot outlives a call and
blocks the writer's checkpoints.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

from engine.store.sqlite import text as sqlite_text
from engine.store.sqlite.schema import equal_terms, normalize_status, to_iso

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


MAX_LIMIT = 100_000
MAX_TYPES = 200  # concrete types one "ADT" may stand for


def _page(limit, offset) -> tuple[int, int]:
    limit, offset = int(limit), int(offset)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise ValueError("offset must be 0 or more")
    return limit, offset


def search_sql(
    channel=None,
    status=None,
    since=None,
    until=None,
    type=None,
    control_id=None,
    meta=None,
    text=None,
    limit=100,
    offset=0,
    before_id=None,
    probe=False,
    text_index=sqlite_text,
) -> tuple[str, list]:
    """The SQL and parameters of one search (also what ``Store.search_plan`` explains).

    ``since`` and ``until`` are inclusive and accept datetimes, ISO 8601 strings or epoch
    seconds. ``type`` is one type (``ADT^A08``) or a tuple of types (:func:`search` expands a
    bare ``ADT`` into the types stored under it). Without ``text`` the rows come newest first
    by (received_at, id), and ``before_id`` keeps the rows that come after that message in this
    order (keyset paging: pass the last id of a page to get the next). With ``text`` they come
    by id, newest first, driven by the full-text index (FTS5 walks its doclists in rowid order,
    so the first page of a common word costs a page, not every match), and ``before_id`` is
    ``id < before_id``; with a control id or a metadata filter, which find a few messages, those
    drive and each candidate is probed in the index instead; ``probe`` does the same for a
    channel or status filter (:func:`search` asks for it when the word is common and those
    messages are few). ``text_index``: the module whose ``MATCH_*`` SQL reaches the full-text
    index (``sqlite/text.py``, ``postgres/text.py``)."""
    limit, offset = _page(limit, offset)
    where, params = _message_filters("m.", channel, status, since, until)
    if isinstance(type, (tuple, list)):
        where.append(f"m.type IN ({','.join('?' * len(type))})")
        params.extend(type)
    elif type is not None:
        where.append("m.type = ?")
        params.append(type)
    if control_id is not None:
        where.append("m.control_id = ?")
        params.append(control_id)
    for number, (key, value) in enumerate((meta or {}).items()):
        if number == 0:  # the first pair finds the candidates (search() puts the rarest first)...
            where.append("m.id IN (SELECT message_id FROM metadata WHERE key = ? AND value = ?)")
        else:  # ...each other pair is one primary-key probe per candidate, never a whole set
            where.append("EXISTS (SELECT 1 FROM metadata WHERE message_id = m.id AND key = ? AND value = ?)")
        params.extend((str(key), str(value)))
    select = "SELECT m.id, m.channel, m.status, m.received_at, m.type, m.control_id"
    if text is None:
        if before_id is not None:
            at = "(SELECT received_at FROM messages WHERE id = ?)"
            where.append(f"m.received_at <= {at} AND (m.received_at < {at} OR m.id < ?)")
            params.extend((int(before_id),) * 3)
        sql = f"{select} FROM messages m"
        order = "m.received_at DESC, m.id DESC"
    else:
        if before_id is not None:
            where.append("m.id < ?")
            params.append(int(before_id))
        match = text_index.match_expression(text)
        # The time window as an id range too, so FTS5 seeks to it instead of walking every newer
        # match (a common word with last month's window): received_at never goes back in id
        # order (the writer stamps it so), so the window's first and last ids bound it exactly.
        if since is not None:
            where.append("m.id >= (SELECT id FROM messages WHERE received_at >= ?"
                         " ORDER BY received_at, id LIMIT 1)")
            params.append(to_iso(since))
        if until is not None:
            where.append("m.id <= (SELECT id FROM messages WHERE received_at <= ?"
                         " ORDER BY received_at DESC, id DESC LIMIT 1)")
            params.append(to_iso(until))
        few = control_id is not None or bool(meta)
        if few or probe:
            sql = f"{select} FROM messages m"
            where.append(text_index.MATCH_EXISTS)
            params.append(match)
        else:
            sql = f"{select} FROM {text_index.MATCH_FROM}"
            where.insert(0, text_index.MATCH_WHERE)
            params.insert(0, match)
            rowid = text_index.MATCH_ROWID
            where = [w.replace("m.id <", f"{rowid} <").replace("m.id >", f"{rowid} >")
                     for w in where]  # FTS5 seeks on rowid
        order = ("m.id DESC" if few else "m.received_at DESC, m.id DESC" if probe
                 else f"{text_index.MATCH_ROWID} DESC")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
    params.extend((limit, offset))
    return sql, params


def rarest_first(conn: sqlite3.Connection, meta: dict, cap: int = 1000) -> dict:
    """The metadata pairs ordered by how many messages hold them (counted up to ``cap``, a short
    index range each), so the rarest (an MRN, not a facility) finds the candidates."""
    def held_by(pair) -> int:
        return conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM metadata WHERE key = ? AND value = ? LIMIT ?)",
            (str(pair[0]), str(pair[1]), cap),
        ).fetchone()[0]
    return dict(sorted(meta.items(), key=held_by))


def types_under(conn: sqlite3.Connection, code: str) -> list[str]:
    """The stored types a bare message code stands for: ``ADT`` -> ``ADT``, ``ADT^A01``,
    ``ADT^A08``, ... One index seek per distinct type (``type > previous``), never a scan."""
    found = [code] if conn.execute(
        "SELECT 1 FROM messages WHERE type = ? LIMIT 1", (code,)).fetchone() else []
    last, end = code + "^", code + "_"  # '_' sorts right after '^'
    while len(found) < MAX_TYPES:
        row = conn.execute(
            "SELECT type FROM messages WHERE type > ? AND type < ? ORDER BY type LIMIT 1", (last, end)
        ).fetchone()
        if row is None:
            break
        found.append(row[0])
        last = row[0]
    return found


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


def search(conn: sqlite3.Connection, text_index=sqlite_text, **filters) -> list[dict]:
    """Message summaries, newest first: ``{"id", "channel", "status", "received_at", "type",
    "control_id", "meta"}``. Filters: see :func:`search_sql`; ``type`` without a ``^`` (``ADT``)
    matches every trigger of that message code.

    Every plan is answered from an index (``tests/unit/store/test_store_queries.py`` checks each filter
    and their combinations). A bare code standing for several types is searched type by type,
    each an indexed newest-first walk of ``limit + offset`` rows, and the pages merged: one
    ``type IN (...)`` would make SQLite sort every message of those types."""
    type_ = filters.get("type")
    with snapshot(conn):
        if len(filters.get("meta") or {}) > 1:
            filters["meta"] = rarest_first(conn, filters["meta"])
        if isinstance(type_, str) and "^" not in type_:
            types = types_under(conn, type_)
            if not types:
                _page(filters.get("limit", 100), filters.get("offset", 0))  # still refuse bad paging
                return []
            filters["type"] = types[0] if len(types) == 1 else tuple(types)
        if filters.get("text") is not None and text_index.probe_is_cheaper(conn, filters):
            filters["probe"] = True
        if isinstance(filters.get("type"), tuple) and filters.get("text") is None:
            rows = _merged_by_type(conn, filters, text_index)
        else:
            sql, params = search_sql(**filters, text_index=text_index)
            rows = conn.execute(sql, params).fetchall()
        return _attach_meta(conn, [_summary(row) for row in rows])


def _merged_by_type(conn: sqlite3.Connection, filters: dict, text_index=sqlite_text) -> list[tuple]:
    limit, offset = _page(filters.get("limit", 100), filters.get("offset", 0))
    if limit + offset > MAX_LIMIT:
        raise ValueError(f"with a message code (not one type) limit + offset must be at most {MAX_LIMIT};"
                         " page with before_id instead")
    rows: list[tuple] = []
    for one in filters["type"]:
        sql, params = search_sql(**{**filters, "type": one, "limit": limit + offset, "offset": 0},
                                 text_index=text_index)
        rows += conn.execute(sql, params).fetchall()
    rows.sort(key=lambda row: (row[3], row[0]), reverse=True)  # (received_at, id), newest first
    return rows[offset:offset + limit]


def get_message(conn: sqlite3.Connection, message_id: int) -> dict | None:
    """Everything kept about one message (``show --json``), or None for an unknown id."""
    with snapshot(conn):
        row = conn.execute(
            f"SELECT {_SUMMARY}, sender, inbound, processed_at, pruned, error, raw, transformed,"
            " length(original) FROM messages WHERE id = ?",
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
            original_bytes=row[13],  # the length only (None: nothing kept); get_original has the bytes
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


def get_original(conn: sqlite3.Connection, message_id: int) -> bytes | None:
    """The bytes a message arrived as, when decoding them was lossy (RELIABILITY 17), else None."""
    row = conn.execute("SELECT original FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


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
    where, params = equal_terms(channel=channel, message_id=message_id)
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


def _message_filters(prefix: str, channel, status, since, until) -> tuple[list[str], list]:
    """WHERE terms and parameters for a channel, a status and an inclusive time window (each
    optional) on the messages table, its columns prefixed with ``prefix`` (an alias, or '')."""
    where, params = [], []
    for column, value in (("channel", channel), ("status", None if status is None else normalize_status(status))):
        if value is not None:
            where.append(f"{prefix}{column} = ?")
            params.append(value)
    for operator, bound in ((">=", since), ("<=", until)):
        if bound is not None:
            where.append(f"{prefix}received_at {operator} ?")
            params.append(to_iso(bound))
    return where, params


def replay_candidates(
    conn: sqlite3.Connection,
    *,
    ids=None,
    channel=None,
    status=None,
    since=None,
    until=None,
    limit: int = 100_000,
) -> Iterator[dict]:
    """Messages a replay selects, in id order (the order they go out again), each with what the
    replay must know before it touches them: ``{"id", "channel", "status", "pruned",
    "deliveries": {destination: status}}``. Either explicit ``ids`` or a ``channel`` with optional
    status and time window; at most ``limit`` rows.

    A generator, read page by page inside one snapshot: a replay of 100,000 messages once held
    them all as dicts at the same time (+80 MB peak RSS in ``bench/scenarios.py replay-100k``);
    the caller keeps only what it needs of each.  Consume it in one thread, to the end."""
    with snapshot(conn):
        if ids is not None:
            wanted = sorted({int(i) for i in ids})[: int(limit)]
            pages = (wanted[start : start + _META_CHUNK] for start in range(0, len(wanted), _META_CHUNK))
            for page in pages:
                marks = ",".join("?" * len(page))
                yield from _candidate_page(conn, conn.execute(
                    f"SELECT id, channel, status, pruned FROM messages WHERE id IN ({marks}) ORDER BY id", page
                ).fetchall())
            return
        where, params = _message_filters("", channel, status, since, until)
        where.append("id > ?")
        params.append(0)
        sql = "SELECT id, channel, status, pruned FROM messages WHERE " + " AND ".join(where) + " ORDER BY id LIMIT ?"
        left = int(limit)
        while left > 0:
            rows = conn.execute(sql, (*params, min(left, _META_CHUNK))).fetchall()
            if not rows:
                return
            yield from _candidate_page(conn, rows)
            left -= len(rows)
            params[-1] = rows[-1][0]  # keyset: the next page starts after this one's last id


def _candidate_page(conn: sqlite3.Connection, rows: list) -> list[dict]:
    page = {r[0]: {"id": r[0], "channel": r[1], "status": r[2], "pruned": bool(r[3]), "deliveries": {}}
            for r in rows}
    if page:
        marks = ",".join("?" * len(page))
        for message_id, destination, dstatus in conn.execute(
            f"SELECT message_id, destination, status FROM deliveries WHERE message_id IN ({marks})", list(page)
        ):
            page[message_id]["deliveries"][destination] = dstatus
    return list(page.values())


def file_seen(conn: sqlite3.Connection, channel: str, sha256: str) -> dict | None:
    """The latest ``done`` row of ``source_files`` for this content on this channel, or None."""
    row = conn.execute(
        "SELECT name, messages, done_at FROM source_files WHERE channel = ? AND sha256 = ?"
        " AND status = 'done' ORDER BY id DESC LIMIT 1",
        (channel, sha256),
    ).fetchone()
    return None if row is None else {"name": row[0], "messages": row[1], "done_at": row[2]}
