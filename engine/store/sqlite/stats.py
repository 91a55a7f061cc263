"""Traffic of a channel minute by minute: the figures behind the dashboard's charts and
``GET /api/channels/{name}/stats`` (engine/admin/traffic.py).

One grouped SELECT over ``messages`` answered from ``idx_messages_channel_received`` (channel,
received_at): the messages received in each minute of the window, and how many of *those* are
now SENT and ERROR.  Counting outcomes by the minute of arrival keeps the read on one index (the
deliveries table has no index by time); for a chart of the last hour it is the same picture, a
message being sent within a second or so of its arrival.  Plain SQL (``substr``, ``CASE``), so it
runs on PostgreSQL through the translating connection as the other read modules do.
"""

from __future__ import annotations

TRAFFIC_SQL = (
    "SELECT substr(received_at, 1, 16) AS minute, COUNT(*) AS received,"
    " SUM(CASE WHEN status = 'SENT' THEN 1 ELSE 0 END) AS sent,"
    " SUM(CASE WHEN status = 'ERROR' THEN 1 ELSE 0 END) AS errors"
    " FROM messages WHERE channel = ? AND received_at >= ?"
    " GROUP BY substr(received_at, 1, 16) ORDER BY minute"
)


def traffic_by_minute(conn, channel: str, since_iso: str) -> dict[str, dict[str, int]]:
    """``{"2026-12-02T03:55": {"received", "sent", "errors"}}`` for the minutes of ``channel``
    since ``since_iso`` (our stored time format) that had messages; empty minutes are absent."""
    rows = conn.execute(TRAFFIC_SQL, (channel, since_iso)).fetchall()
    return {minute: {"received": int(received or 0), "sent": int(sent or 0), "errors": int(errors or 0)}
            for minute, received, sent, errors in rows}
