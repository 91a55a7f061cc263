"""The collections report's queries (``switchboard report``), over the messages received in a
window, returned as one JSON-able dict:

* per channel: received, filtered, errors and the error rate (ERROR / received), sent, still
  queued, and the time from receipt to delivery (first successful attempt of each SENT delivery:
  median, 95th percentile, maximum, in seconds);
* why messages were filtered, by channel, filter and rule: every FILTERED message has a
  ``filtered`` event naming the filter and its reason (``placement-rules: not-aged: ...``);
  the rule is the reason's leading word (``not-aged``), else the whole reason;
* the collections kit's own numbers, from the verdicts its filters leave as ``filter_passed``
  events: accounts placed (``placement-rules``) and how many reached every destination, by the
  rule that placed them; payments posted back to the EHR (``agency-payment``, SENT); recalls and
  adjustments sent to the agency (``account-status``, SENT);
* the remittance channel's (``remittance-claim``, one message per claim payment of an 835): the
  DFT^P03 postings to the EHR (the deliveries carrying the channel's own output, the DFT: posted
  when one is SENT, else pending or in error), and the agency updates actually sent (a SENT
  delivery with a body of its own, the agency JSON: its ``action``, recall or adjust, and
  ``reason``; a claim the destination filter kept from the agency has no such delivery). The
  update's body is read for those two words only.

A message processed again (replay) has several verdicts; the latest one per message and filter
counts.  Event details are PHI-free by the filter contract, and the report holds only names,
rules and counts.  Times are computed in Python from the stored ISO strings, so the SQL stays
plain (DESIGN §4: not SQLite-only where that costs nothing).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from engine.store.sqlite.schema import to_iso

PLACEMENT_FILTER = "placement-rules"
PAYMENT_FILTER = "agency-payment"
STATUS_FILTER = "account-status"
REMITTANCE_FILTER = "remittance-claim"
_RULE = re.compile(r"[A-Za-z0-9_.-]+")


def build_report(conn, *, since: datetime | None, channel: str | None = None, now: datetime | None = None) -> dict:
    """The report as one JSON-able dict (the shape ``switchboard report --json`` prints)."""
    now = now or datetime.now(timezone.utc)
    where, params = ["m.received_at >= ?"], [to_iso(since) if since else "0000"]
    if channel:
        where.append("m.channel = ?")
        params.append(channel)
    clause = " AND ".join(where)
    return {
        "since": to_iso(since) if since else None,
        "until": to_iso(now),
        "channel": channel,
        "channels": _channels(conn, clause, params),
        **_verdicts(conn, clause, params),
        "remittances": _remittances(conn, clause, params),
    }


def _channels(conn, clause: str, params: list) -> list[dict]:
    rows: dict[str, dict] = {}
    for name, status, count in conn.execute(
            f"SELECT m.channel, m.status, COUNT(*) FROM messages m WHERE {clause} GROUP BY m.channel, m.status",
            params):
        entry = rows.setdefault(name, {"name": name, "received": 0, "filtered": 0, "errors": 0, "sent": 0,
                                       "queued": 0})
        entry["received"] += count
        key = {"FILTERED": "filtered", "ERROR": "errors", "SENT": "sent", "QUEUED": "queued"}.get(status)
        if key:
            entry[key] += count
    delays: dict[str, list[float]] = {}
    for name, received_at, delivered_at in conn.execute(
            "SELECT m.channel, m.received_at, MIN(a.at) FROM deliveries d"
            " JOIN messages m ON m.id = d.message_id JOIN attempts a ON a.delivery_id = d.id AND a.ok = 1"
            f" WHERE {clause} AND d.status = 'SENT' GROUP BY d.id, m.channel, m.received_at", params):
        delays.setdefault(name, []).append(max(0.0, (_parse(delivered_at) - _parse(received_at)).total_seconds()))
    for name, entry in rows.items():
        entry["error_rate"] = round(entry["errors"] / entry["received"], 4) if entry["received"] else 0.0
        entry["delivery_seconds"] = _spread(delays.get(name, []))
    return [rows[name] for name in sorted(rows)]


def _latest(clause: str) -> str:
    """The id of each message's latest verdict per filter (a replay may have left several)."""
    return (
        "SELECT MAX(e.id) FROM events e JOIN messages m ON m.id = e.message_id"
        f" WHERE e.kind IN ('filtered', 'filter_passed') AND {clause}"
        " GROUP BY e.message_id, substr(e.detail, 1, instr(e.detail, ': '))"
    )


def _verdicts(conn, clause: str, params: list) -> dict:
    latest = _latest(clause)
    filtered: dict[tuple[str, str, str], int] = {}
    placements = {"placed": 0, "delivered": 0, "by_rule": {}}
    payments = {"posted": 0, "pending": 0, "errors": 0, "by_event": {}}
    status_changes = {"recalls_sent": 0, "adjustments_sent": 0, "pending": 0, "by_reason": {}}
    for kind, detail, status, name in conn.execute(
            "SELECT e.kind, e.detail, m.status, m.channel FROM events e JOIN messages m ON m.id = e.message_id"
            f" WHERE e.id IN ({latest})", params):
        filter_name, _, reason = (detail or "").partition(": ")
        rule = _rule(reason)
        if kind == "filtered":
            key = (name, filter_name, rule)
            filtered[key] = filtered.get(key, 0) + 1
        elif filter_name == PLACEMENT_FILTER:
            placements["placed"] += 1
            placements["delivered"] += status == "SENT"
            placements["by_rule"][rule] = placements["by_rule"].get(rule, 0) + 1
        elif filter_name == PAYMENT_FILTER:
            payments["posted"] += status == "SENT"
            payments["pending"] += status == "QUEUED"
            payments["errors"] += status == "ERROR"
            if status == "SENT":
                payments["by_event"][rule] = payments["by_event"].get(rule, 0) + 1
        elif filter_name == STATUS_FILTER:
            if status == "SENT":
                key = "recalls_sent" if rule.startswith("recall-") else "adjustments_sent"
                status_changes[key] += 1
                status_changes["by_reason"][rule] = status_changes["by_reason"].get(rule, 0) + 1
            elif status == "QUEUED":
                status_changes["pending"] += 1
    return {
        "filtered_by_rule": [{"channel": c, "filter": f, "rule": r, "count": n}
                             for (c, f, r), n in sorted(filtered.items(), key=lambda item: (item[0][0], -item[1]))],
        "placements": placements,
        "payments": payments,
        "status_changes": status_changes,
    }


def _remittances(conn, clause: str, params: list) -> dict:
    out = {"claims": 0, "posted": 0, "pending": 0, "errors": 0,
           "recalls_sent": 0, "adjustments_sent": 0, "agency_pending": 0, "by_reason": {}}
    claims: dict[int, dict] = {}
    for message_id, status, own_output, body in conn.execute(
            "SELECT e.message_id, d.status, d.body_is_transformed, d.body FROM events e"
            " LEFT JOIN deliveries d ON d.message_id = e.message_id"
            f" WHERE e.id IN ({_latest(clause)}) AND e.kind = 'filter_passed' AND e.detail LIKE ?",
            [*params, REMITTANCE_FILTER + ": %"]):
        claim = claims.setdefault(message_id, {"ehr": set(), "agency": set(), "sent": None})
        if status is None:
            continue
        if own_output:
            claim["ehr"].add(status)
        elif body:
            action = _agency_action(body)
            if action is None:
                continue
            claim["agency"].add(status)
            if status == "SENT":
                claim["sent"] = action
    for claim in claims.values():
        out["claims"] += 1
        ehr = claim["ehr"]
        key = "posted" if "SENT" in ehr else "pending" if "QUEUED" in ehr else "errors" if "ERROR" in ehr else None
        if key:
            out[key] += 1
        if claim["sent"] is not None:
            action, reason = claim["sent"]
            out["recalls_sent" if action == "recall" else "adjustments_sent"] += 1
            out["by_reason"][reason] = out["by_reason"].get(reason, 0) + 1
        elif "QUEUED" in claim["agency"]:
            out["agency_pending"] += 1
    return out


def _agency_action(body: str) -> tuple[str, str] | None:
    """(action, reason) of an agency update body (recall / adjust JSON), else None."""
    try:
        update = json.loads(body)
    except ValueError:
        return None
    if not isinstance(update, dict) or update.get("action") not in ("recall", "adjust"):
        return None
    return update["action"], str(update.get("reason") or "")


def _rule(reason: str) -> str:
    """``not-aged: the oldest...`` -> ``not-aged``; a reason without a rule word stays whole."""
    head, sep, _rest = reason.partition(":")
    return head if sep and _RULE.fullmatch(head) else reason


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _spread(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def pick(fraction: float) -> float:  # nearest rank: a value that was actually seen
        return round(ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.999999) - 1))], 3)

    return {"count": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "max": round(ordered[-1], 3)}
