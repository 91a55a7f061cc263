"""The report's flat rows (metric, channel, detail, value) and its CSV, shared by ``switchboard
report --csv`` (engine/cli/report.py) and the dashboard's ``/report/csv`` so both files are the
same; and whether a report covers a collections-kit channel (its sections are shown only then)."""

from __future__ import annotations

import csv
import io


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
    remittances = data.get("remittances") or EMPTY_REMITTANCES
    out += [("remittance_claims", "", "", remittances["claims"])]
    out += [("remittances_posted_to_ehr", "", key, remittances[key]) for key in ("posted", "pending", "errors")]
    out += [("remittance_recalls_sent", "", "", remittances["recalls_sent"]),
            ("remittance_adjustments_sent", "", "", remittances["adjustments_sent"]),
            ("remittance_agency_pending", "", "", remittances["agency_pending"])]
    out += [("remittance_updates_by_reason", "", reason, n) for reason, n in sorted(remittances["by_reason"].items())]
    return out


EMPTY_REMITTANCES = {"claims": 0, "posted": 0, "pending": 0, "errors": 0, "recalls_sent": 0,
                     "adjustments_sent": 0, "agency_pending": 0, "by_reason": {}}


def to_csv(data: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "channel", "detail", "value"])
    for metric, channel, detail, value in rows(data):
        writer.writerow([metric, channel, detail, "" if value is None else value])
    return buffer.getvalue()


def has_kit_figures(data: dict) -> bool:
    """The collections kit's sections are shown only when the report covers a kit channel: one
    whose kit filters (placement-rules, agency-payment, account-status, remittance-claim) left a verdict."""
    placements, payments, changes = data["placements"], data["payments"], data["status_changes"]
    return bool(placements["placed"] or payments["posted"] or payments["pending"] or payments["errors"]
                or changes["recalls_sent"] or changes["adjustments_sent"] or changes["pending"]
                or (data.get("remittances") or EMPTY_REMITTANCES)["claims"])
