"""``switchboard report [--since 30d] [--channel C] [--csv | --json]``: the collections KPIs.

The numbers come from the store (``Store.report``, read-only, beside a running daemon or
without one); this module parses the flags and prints them as text, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import sys


def add_arguments(parser) -> None:
    parser.add_argument("--since", default="30d", help="a duration back from now (30d, 12h) or an ISO time")
    parser.add_argument("--channel", help="only this channel")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="metric,channel,detail,value rows")
    output.add_argument("--json", action="store_true")


def report_command(args, path) -> int:
    from engine.cli.common import open_store, time_bound

    _config, store = open_store(path)
    try:
        data = store.report(since=time_bound(args.since), channel=args.channel)
    finally:
        store.close_readers()
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.csv:
        sys.stdout.write(to_csv(data))
    else:
        print(to_text(data))
    return 0


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
    lines.append("")
    lines.append("Filtered, by rule:" if data["filtered_by_rule"] else "Filtered, by rule: none")
    lines += [f"  {item['channel']} / {item['filter']}: {item['rule']}: {item['count']}"
              for item in data["filtered_by_rule"]]
    if not has_kit_figures(data):
        return "\n".join(lines)
    placements, payments, changes = data["placements"], data["payments"], data["status_changes"]
    lines += ["", f"Accounts placed: {placements['placed']} ({placements['delivered']} delivered)"]
    lines += [f"  by rule {rule}: {n}" for rule, n in sorted(placements["by_rule"].items())]
    lines.append(f"Payments posted back to the EHR: {payments['posted']} (pending {payments['pending']}, "
                 f"errors {payments['errors']})")
    lines.append(f"Recalls sent: {changes['recalls_sent']}; adjustments sent: {changes['adjustments_sent']}")
    lines += [f"  {rule}: {n}" for rule, n in sorted(changes["by_reason"].items())]
    return "\n".join(lines)


def has_kit_figures(data: dict) -> bool:
    """The collections kit's sections are shown only when the report covers a kit channel: one
    whose kit filters (placement-rules, agency-payment, account-status) left a verdict."""
    placements, payments, changes = data["placements"], data["payments"], data["status_changes"]
    return bool(placements["placed"] or payments["posted"] or payments["pending"] or payments["errors"]
                or changes["recalls_sent"] or changes["adjustments_sent"] or changes["pending"])


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f}"
