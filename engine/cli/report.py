"""``switchboard report [--since 30d] [--channel C] [--csv | --json]``: the collections KPIs.

The numbers come from the store (``Store.report``, read-only, beside a running daemon or
without one); this module parses the flags and prints them as text, CSV or JSON.
"""

from __future__ import annotations

import json
import sys

from engine.admin.report_rows import has_kit_figures, rows, to_csv  # noqa: F401 (rows: the CSV's shape)


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
    remittances = data.get("remittances") or {}
    if remittances.get("claims"):
        lines.append(f"Remittance claims: {remittances['claims']}; DFT^P03 posted to the EHR: {remittances['posted']} "
                     f"(pending {remittances['pending']}, errors {remittances['errors']})")
        lines.append(f"Remittance updates to the agency: recalls {remittances['recalls_sent']}, adjustments "
                     f"{remittances['adjustments_sent']} (pending {remittances['agency_pending']})")
        lines += [f"  {reason}: {n}" for reason, n in sorted(remittances["by_reason"].items())]
    return "\n".join(lines)


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f}"
