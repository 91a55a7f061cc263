"""``switchboard report [--since 30d] [--channel C] [--csv | --json]``: the collections KPIs.

Read from the store (read-only, beside a running daemon) over the messages received in the
window:

* per channel: received, filtered, errors and the error rate (ERROR / received), sent, still
  queued, and the time from receipt to delivery (first successful attempt of each SENT delivery:
  median, 95th percentile, maximum, in seconds);
* why messages were filtered, by channel, filter and rule: every FILTERED message has a
  ``filtered`` event naming the filter and its reason (``placement-rules: not-aged: ...``);
  the rule is the reason's leading word (``not-aged``), else the whole reason;
* the collections kit's own numbers, from the verdicts its filters leave as ``filter_passed``
  events: accounts placed (``placement-rules``) and how many reached every destination, by the
  rule that placed them; payments posted back to the EHR (``agency-payment``, SENT); recalls and
  adjustments sent to the agency (``account-status``, SENT).

A message processed again (replay) has several verdicts; the latest one per message and filter
counts.  Event details are PHI-free by the filter contract, and the report prints only names,
rules and counts.  Times are computed in Python from the stored ISO strings, so the SQL stays
plain (DESIGN §4: not SQLite-only where that costs nothing).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from datetime import datetime, timezone

PLACEMENT_FILTER = "placement-rules"
PAYMENT_FILTER = "agency-payment"
STATUS_FILTER = "account-status"
_RULE = re.compile(r"[A-Za-z0-9_.-]+")


def add_arguments(parser) -> None:
    parser.add_argument("--since", default="30d", help="a duration back from now (30d, 12h) or an ISO time")
    parser.add_argument("--channel", help="only this channel")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="metric,channel,detail,value rows")
    output.add_argument("--json", action="store_true")


def report_command(args, path) -> int:
    from engine.cli.common import open_store, time_bound
    from engine.store.sqlite.schema import connect_reader

    config, store = open_store(path)
    since = time_bound(args.since)
    conn = connect_reader(config.store.path)
    try:
        data = build_report(conn, since=since, channel=args.channel)
    finally:
        conn.close()
        store.close_readers()
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.csv:
        sys.stdout.write(to_csv(data))
    else:
        print(to_text(data))
    return 0


def build_report(conn, *, since: datetime | None, channel: str | None = None, now: datetime | None = None) -> dict:
    """The report as one JSON-able dict (the shape ``--json`` prints)."""
    from engine.store.sqlite.schema import to_iso

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


def _verdicts(conn, clause: str, params: list) -> dict:
    latest = (
        "SELECT MAX(e.id) FROM events e JOIN messages m ON m.id = e.message_id"
        f" WHERE e.kind IN ('filtered', 'filter_passed') AND {clause}"
        " GROUP BY e.message_id, substr(e.detail, 1, instr(e.detail, ': '))"
    )
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


# -- output ----------------------------------------------------------------------------------------


def rows(data: dict) -> list[tuple[str, str, str, object]]:
    """(metric, channel, detail, value): the one flat shape both text and CSV are printed from."""
    out: list[tuple[str, str, str, object]] = []
    for entry in data["channels"]:
        for metric in ("received", "filtered", "errors", "error_rate", "sent", "queued"):
            out.append((metric, entry["name"], "", entry[metric]))
        for key in ("p50", "p95", "max"):
            out.append((f"delivery_seconds_{key}", entry["name"], "", entry["delivery_seconds"][key]))
    for item in data["filtered_by_rule"]:
        out.append(("filtered_by_rule", item["channel"], f"{item['filter']}: {item['rule']}", item["count"]))
    placements = data["placements"]
    out += [("placements", "", "placed", placements["placed"]),
            ("placements", "", "delivered", placements["delivered"])]
    out += [("placements_by_rule", "", rule, n) for rule, n in sorted(placements["by_rule"].items())]
    payments = data["payments"]
    out += [("payments_posted_back", "", key, payments[key]) for key in ("posted", "pending", "errors")]
    changes = data["status_changes"]
    out += [("recalls_sent", "", "", changes["recalls_sent"]),
            ("adjustments_sent", "", "", changes["adjustments_sent"])]
    out += [("status_changes_by_reason", "", rule, n) for rule, n in sorted(changes["by_reason"].items())]
    return out


def to_csv(data: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "channel", "detail", "value"])
    for metric, channel, detail, value in rows(data):
        writer.writerow([metric, channel, detail, "" if value is None else value])
    return buffer.getvalue()


def to_text(data: dict) -> str:
    lines = [f"Switchboard report since {data['since'] or 'the beginning'} (until {data['until']})"
             + (f", channel {data['channel']}" if data["channel"] else "")]
    lines.append("")
    lines.append(f"{'channel':<24}{'received':>9}{'filtered':>9}{'errors':>8}{'err %':>7}{'sent':>7}"
                 f"{'queued':>7}{'p50 s':>9}{'p95 s':>9}")
    for entry in data["channels"]:
        spread = entry["delivery_seconds"]
        lines.append(f"{entry['name']:<24}{entry['received']:>9}{entry['filtered']:>9}{entry['errors']:>8}"
                     f"{entry['error_rate'] * 100:>6.1f}%{entry['sent']:>7}{entry['queued']:>7}"
                     f"{_seconds(spread['p50']):>9}{_seconds(spread['p95']):>9}")
    placements = data["placements"]
    lines += ["", f"Accounts placed: {placements['placed']} ({placements['delivered']} delivered)"]
    lines += [f"  by rule {rule}: {n}" for rule, n in sorted(placements["by_rule"].items())]
    lines.append("Filtered, by rule:" if data["filtered_by_rule"] else "Filtered, by rule: none")
    lines += [f"  {item['channel']} / {item['filter']}: {item['rule']}: {item['count']}"
              for item in data["filtered_by_rule"]]
    payments, changes = data["payments"], data["status_changes"]
    lines.append(f"Payments posted back to the EHR: {payments['posted']} (pending {payments['pending']}, "
                 f"errors {payments['errors']})")
    lines.append(f"Recalls sent: {changes['recalls_sent']}; adjustments sent: {changes['adjustments_sent']}")
    lines += [f"  {rule}: {n}" for rule, n in sorted(changes["by_reason"].items())]
    return "\n".join(lines)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f}"
