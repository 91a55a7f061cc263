"""The store's side of a replay: one write per message that records the new outcome and keeps
the old one in the history.

``Store.record_replay`` runs it in the writer, so it commits in the group commit like every
other write.

Why history needs help here: ``set_message_result`` upserts delivery rows and keeps their send
attempts, but a message that failed in *processing* (its channel transform raised, or a
destination transform did) never had a send attempt: its failure lives only in
``messages.error`` / ``deliveries.error``, which the new outcome overwrites.  So before replacing
a destination's outcome, this write turns that earlier processing failure into a failed attempt
(``ok = 0``, at the time of the earlier processing, error ``"processing failed before replay:
..."``).  ``show`` then lists the old failure and the new send side by side.  Every replay also
adds an ``events`` row (kind ``replayed``) naming who asked, the status before and after, and the
earlier message-level error (PHI-free, like every stored reason).

``destination``: replay to that destination only; the other delivery rows are left untouched and
the message's status is derived again from all of them.
"""

from __future__ import annotations

import json
import time

from engine.store.sqlite.schema import DELIVERY_STATUSES, derive_status, iso_utc, normalize_status

UPSERT_DELIVERY = (
    "INSERT INTO deliveries (message_id, channel, destination, status, error,"
    " body_is_transformed, body, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (message_id, destination) DO UPDATE SET status = excluded.status,"
    " error = excluded.error, body_is_transformed = excluded.body_is_transformed,"
    " body = excluded.body, response = NULL, next_attempt_at = NULL,"
    " updated_at = excluded.updated_at"
)
HISTORY_PREFIX = "processing failed before replay: "


def delivery_rows(deliveries) -> list[tuple]:
    """``[{"destination", "status", "body", "error"}]`` -> checked tuples (ValueError if bad)."""
    return [
        (str(d["destination"]), normalize_status(d.get("status", "QUEUED"), DELIVERY_STATUSES),
         d.get("body"), d.get("error"))
        for d in deliveries
    ]


def replay_result(conn, message_id: int, filtered: bool, transformed, error, rows: list[tuple],
                  destination: str | None, by: str, now: float | None = None):
    """In the writer thread: store a replay's outcome. Returns ``(status, {destination: id})``."""
    at = iso_utc(time.time() if now is None else now)
    row = conn.execute(
        "SELECT channel, status, error, processed_at FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no message {message_id}")
    channel, previous_status, previous_error, processed_at = row
    prior = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT destination, id, status, error, attempts FROM deliveries WHERE message_id = ?",
            (message_id,),
        ).fetchall()
    }
    for name, status, body, derr in rows:
        if destination is not None and name != destination:
            continue
        same = body is not None and body == transformed
        conn.execute(UPSERT_DELIVERY, (message_id, channel, name, status, derr, 1 if same else 0,
                                       None if same else body, at))
        reason = _earlier_failure(prior.get(name), previous_error)
        if reason:
            delivery_id = conn.execute(
                "SELECT id FROM deliveries WHERE message_id = ? AND destination = ?", (message_id, name)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO attempts (delivery_id, at, ok, possible_duplicate, error, response)"
                " VALUES (?, ?, 0, 0, ?, NULL)",
                (delivery_id, processed_at or at, HISTORY_PREFIX + reason),
            )
    statuses = [r[0] for r in conn.execute(
        "SELECT status FROM deliveries WHERE message_id = ?", (message_id,)).fetchall()]
    status = derive_status(statuses, filtered=filtered, error=error is not None)
    conn.execute(
        "UPDATE messages SET status = ?, transformed = ?, error = ?, processed_at = ? WHERE id = ?",
        (status, transformed, error, at, message_id),
    )
    detail = {"by": by, "previous_status": previous_status, "status": status}
    if previous_error:
        detail["previous_error"] = previous_error
    if destination is not None:
        detail["destination"] = destination
    conn.execute(
        "INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, ?, ?, 'replayed', ?)",
        (at, channel, message_id, json.dumps(detail, sort_keys=True)),
    )
    ids = dict(conn.execute(
        "SELECT destination, id FROM deliveries WHERE message_id = ?", (message_id,)).fetchall())
    return status, ids


def _earlier_failure(prior: tuple | None, message_error: str | None) -> str | None:
    """The processing failure a destination's history would otherwise lose, or None.

    No delivery row yet: the channel stage failed, so the message error is that failure.  A row in
    ERROR that was never attempted: its own (destination transform) error.  A row with attempts
    already keeps its failures there."""
    if prior is None:
        return message_error
    _id, status, error, attempts = prior
    if status == "ERROR" and not attempts:
        return error or message_error
    return None
