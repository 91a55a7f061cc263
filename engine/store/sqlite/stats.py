"""How many messages a search matches (the list page's count), and traffic of a channel minute by minute: the figures behind the dashboard's charts and
``GET /api/channels/{name}/stats`` (engine/admin/traffic.py).

Three grouped SELECTs over ``messages``, each answered from a covering index without reading a
row (``idx_messages_channel_received`` for what was received, ``idx_messages_channel_status`` for
what of it is now SENT and ERROR): the messages received in each minute of the window, and how
many of *those* are now SENT and ERROR.  Counting outcomes by the minute of arrival keeps the read on one index (the
deliveries table has no index by time); for a chart of the last hour it is the same picture, a
message being sent within a second or so of its arrival.  Plain SQL (``substr``, ``CASE``), so it
runs on PostgreSQL through the translating connection as the other read modules do.
"""

from __future__ import annotations

from engine.store.sqlite import queries as q
from engine.store.sqlite import text as sqlite_text

MINUTE = "substr(received_at, 1, 16)"
TRAFFIC_SQL = " UNION ALL ".join(
    f"SELECT '{series}', {MINUTE}, COUNT(*) FROM messages WHERE channel = ?{condition}"
    f" AND received_at >= ? GROUP BY {MINUTE}"
    for series, condition in (("received", ""), ("sent", " AND status = 'SENT'"), ("errors", " AND status = 'ERROR'")))


def traffic_by_minute(conn, channel: str, since_iso: str) -> dict[str, dict[str, int]]:
    """``{"2026-12-02T03:55": {"received", "sent", "errors"}}`` for the minutes of ``channel``
    since ``since_iso`` (our stored time format) that had messages; empty minutes are absent."""
    found: dict[str, dict[str, int]] = {}
    for series, minute, count in conn.execute(TRAFFIC_SQL, (channel, since_iso) * 3).fetchall():
        found.setdefault(minute, {"received": 0, "sent": 0, "errors": 0})[series] = int(count)
    return found


def count_matches(conn, cap: int, text_index=None, **filters) -> int:
    """How many messages a search (``queries.search``'s filters) matches, counted up to ``cap``
    (the list page says "more than CAP" beyond): the search's own SQL with ``LIMIT cap`` inside a
    ``COUNT(*)``, so it walks the same index as the page it counts, at most ``cap`` entries.
    ``text_index``: the store's full-text module, as for ``queries.search``."""
    text_index = text_index or sqlite_text
    filters = {key: value for key, value in filters.items() if key not in ("limit", "offset", "before_id")}
    with q.snapshot(conn):
        if len(filters.get("meta") or {}) > 1:
            filters["meta"] = q.rarest_first(conn, filters["meta"])
        types = [filters.get("type")]
        if isinstance(filters.get("type"), str) and "^" not in filters["type"]:
            types = q.types_under(conn, filters["type"])
            if not types:
                return 0
        if filters.get("text") is not None and text_index.probe_is_cheaper(conn, {**filters, "type": types[0]}):
            filters["probe"] = True
        total = 0
        for one in types:
            sql, params = q.search_sql(**{**filters, "type": one, "limit": cap, "offset": 0}, text_index=text_index)
            total += conn.execute(f"SELECT COUNT(*) FROM ({sql}) AS found", params).fetchone()[0]
            if total >= cap:
                return cap
        return total


DAILY_SQL = ("SELECT substr(received_at, 1, 10), status, COUNT(*) FROM messages WHERE received_at >= ?{channel}"
             " GROUP BY substr(received_at, 1, 10), status")


def daily_counts(conn, since_iso: str, channel: str | None = None) -> dict[str, dict[str, int]]:
    """``{"2026-12-02": {"received", "sent", "filtered", "errors", "queued"}}`` per UTC day of
    arrival since ``since_iso`` (the report page's chart; the same window and statuses as
    ``report.py``'s per-channel figures, so the days add up to them)."""
    params = [since_iso] + ([channel] if channel else [])
    sql = DAILY_SQL.format(channel=" AND channel = ?" if channel else "")
    days: dict[str, dict[str, int]] = {}
    keys = {"SENT": "sent", "FILTERED": "filtered", "ERROR": "errors", "QUEUED": "queued"}
    for day, status, count in conn.execute(sql, params).fetchall():
        entry = days.setdefault(day, {"received": 0, "sent": 0, "filtered": 0, "errors": 0, "queued": 0})
        entry["received"] += count
        if status in keys:
            entry[keys[status]] += count
    return days
