"""Leases and heartbeats of several nodes on one PostgreSQL store (DESIGN §4): the SQL of
``engine/runtime/cluster.py``.

A lease is a row per resource (``queue:CHANNEL/DESTINATION``, ``retention``): who holds it, until
when, and a fencing token. ``tick`` is a node's whole round in one transaction: its heartbeat, then
for each resource it wants, take it if it is free or expired, renew it if it is its own; leases it
no longer wants are given up. Expiry is compared with the server's ``clock_timestamp()``, never a
node's clock, so a node whose wall clock jumps cannot steal or keep a lease by mistake. The token
grows by one at every change of holder: a write that matters carries the token its node saw
(``fence``), and a node that lost its lease without knowing it (paused, cut off) finds its token
stale and its write refused, instead of recording over the new holder's work.
"""

from __future__ import annotations

from engine.store.sqlite.schema import StoreError

_TAKE = (
    "INSERT INTO leases (resource, node, token, acquired_at, expires_at)"
    " VALUES (%s, %s, 1, clock_timestamp(), clock_timestamp() + %s * interval '1 second')"
    " ON CONFLICT (resource) DO UPDATE SET node = excluded.node,"
    " token = leases.token + CASE WHEN leases.node = excluded.node THEN 0 ELSE 1 END,"
    " acquired_at = CASE WHEN leases.node = excluded.node THEN leases.acquired_at ELSE clock_timestamp() END,"
    " expires_at = excluded.expires_at"
    " WHERE leases.node = excluded.node OR leases.expires_at < clock_timestamp()"
    " RETURNING token, acquired_at = clock_timestamp()"
)


def tick(conn, node: str, resources: list[str], lease_seconds: float) -> tuple[dict[str, int], float | None]:
    """One round for ``node`` (a raw psycopg connection, autocommit): heartbeat, take or renew
    each wanted resource, give up the others. Returns ``({resource: token} of what it holds,
    seconds until the first lease another node holds on a wanted resource expires, or None)``."""
    held: dict[str, int] = {}
    with conn.transaction():
        conn.execute("INSERT INTO nodes (name) VALUES (%s) ON CONFLICT (name) DO UPDATE"
                     " SET last_seen = clock_timestamp()", (node,))
        for resource in resources:
            row = conn.execute(_TAKE, (resource, node, float(lease_seconds))).fetchone()
            if row is not None:
                held[resource] = row[0]
        conn.execute("DELETE FROM leases WHERE node = %s AND NOT (resource = ANY(%s))", (node, list(held)))
        soonest = conn.execute("SELECT extract(epoch FROM min(expires_at) - clock_timestamp()) FROM leases"
                               " WHERE resource = ANY(%s) AND node <> %s", (list(resources), node)).fetchone()[0]
    return held, None if soonest is None else max(0.0, float(soonest))


def release(conn, node: str) -> None:
    """A node stopping gives up every lease at once (the others need not wait for expiry)."""
    conn.execute("DELETE FROM leases WHERE node = %s", (node,))


def nodes(conn) -> list[dict]:
    """``switchboard nodes``: every node, its last heartbeat (ISO UTC) and what it holds."""
    rows = conn.execute(
        "SELECT n.name, to_char(n.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
        " extract(epoch FROM clock_timestamp() - n.last_seen),"
        " coalesce(array_agg(l.resource ORDER BY l.resource) FILTER (WHERE l.resource IS NOT NULL"
        " AND l.expires_at > clock_timestamp()), '{}')"
        " FROM nodes n LEFT JOIN leases l ON l.node = n.name GROUP BY n.name, n.last_seen ORDER BY n.name"
    ).fetchall()
    return [{"name": name, "last_seen": seen, "seconds_ago": round(float(ago), 1), "holds": list(holds)}
            for name, seen, ago, holds in rows]


def check_fence(conn, fences: dict, pairs) -> None:
    """In a write: StoreError unless this node still holds, with the same token, the lease of
    every (channel, destination) in ``pairs`` that it records under a lease (``fences``:
    ``{(channel, destination): (resource, node, token)}``)."""
    for pair in set(pairs):
        fence = fences.get(pair)
        if fence is None:
            continue
        resource, node, fencing = fence      # a counter, not a secret
        row = conn.execute("SELECT node, token FROM leases WHERE resource = ?", (resource,)).fetchone()
        if row is None or row[0] != node or row[1] != fencing:
            raise StoreError(f"lease lost: {resource} is no longer held by node {node}; not recorded")
