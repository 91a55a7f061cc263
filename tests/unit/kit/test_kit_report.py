"""The KPI report (``Store.report``, ``switchboard report``) over a store written with the real schema (rows put in by SQL,
as the daemon would leave them), then through the CLI verb."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from engine.cli import report
from engine.store import open_readonly
from engine.store.sqlite.schema import connect_writer, iso_utc, migrate
from support.daemon import run_cli

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


class Store:
    """Rows the way the daemon leaves them: messages, deliveries, attempts, verdict events."""

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = connect_writer(str(path))
        migrate(self.conn)
        self.next_id = 0

    def message(self, channel: str, status: str, *, age: timedelta = timedelta(hours=1),
                verdicts: tuple[tuple[str, str], ...] = (), delivered_after: tuple[float, ...] = ()) -> int:
        self.next_id += 1
        received = (NOW - age).timestamp()
        self.conn.execute(
            "INSERT INTO messages (id, channel, received_at, status, type, control_id, sha256, raw)"
            " VALUES (?, ?, ?, ?, 'ADT^A08', ?, 'x', 'raw')",
            (self.next_id, channel, iso_utc(received), status, f"C{self.next_id}"))
        for kind, detail in verdicts:
            self.conn.execute("INSERT INTO events (at, channel, message_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
                              (iso_utc(received + 0.001), channel, self.next_id, kind, detail))
        for number, seconds in enumerate(delivered_after):
            delivery = self.conn.execute(
                "INSERT INTO deliveries (message_id, channel, destination, status, attempts) VALUES (?, ?, ?, 'SENT', 2)",
                (self.next_id, channel, f"d{number}")).lastrowid
            self.conn.execute("INSERT INTO attempts (delivery_id, at, ok, error) VALUES (?, ?, 0, 'refused')",
                              (delivery, iso_utc(received + seconds / 2)))
            self.conn.execute("INSERT INTO attempts (delivery_id, at, ok) VALUES (?, ?, 1)",
                              (delivery, iso_utc(received + seconds)))
        return self.next_id


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "var" / "sb.db")
    yield s
    s.conn.close()


def build(store, **options):
    reader = open_readonly(store.path)
    try:
        return reader.report(now=NOW, **options)
    finally:
        reader.close_readers()


def test_kpis_from_verdicts_statuses_and_attempts(store):
    for seconds in (1.0, 2.0, 3.0, 40.0):
        store.message("ehr-placements", "SENT", verdicts=(("filter_passed", "placement-rules: aged: 90+ days"),),
                      delivered_after=(seconds,))
    store.message("ehr-placements", "QUEUED", verdicts=(("filter_passed", "placement-rules: payment-plan-failed: x"),))
    for _ in range(3):
        store.message("ehr-placements", "FILTERED", verdicts=(("filtered", "placement-rules: not-aged: under 90 days"),))
    store.message("ehr-placements", "FILTERED", verdicts=(("filtered", "filter[1] when: when \"x\" was false"),))
    store.message("ehr-placements", "ERROR")
    store.message("agency-payments", "SENT", verdicts=(("filter_passed", "agency-payment: payment: ok"),))
    store.message("agency-payments", "ERROR", verdicts=(("filter_passed", "agency-payment: payment: ok"),))
    store.message("account-status", "SENT", verdicts=(("filter_passed", "account-status: recall-charity: x"),))
    store.message("account-status", "SENT", verdicts=(("filter_passed", "account-status: adjust-adjustment: x"),))
    store.message("ehr-placements", "SENT", age=timedelta(days=45),
                  verdicts=(("filter_passed", "placement-rules: aged: old"),))
    data = build(store, since=NOW - timedelta(days=30))
    assert data["placements"] == {"placed": 5, "delivered": 4, "by_rule": {"aged": 4, "payment-plan-failed": 1}}
    assert data["filtered_by_rule"] == [
        {"channel": "ehr-placements", "filter": "placement-rules", "rule": "not-aged", "count": 3},
        {"channel": "ehr-placements", "filter": "filter[1] when", "rule": 'when "x" was false', "count": 1}]
    assert data["payments"] == {"posted": 1, "pending": 0, "errors": 1, "by_event": {"payment": 1}}
    assert data["status_changes"]["recalls_sent"] == 1 and data["status_changes"]["adjustments_sent"] == 1
    channels = {c["name"]: c for c in data["channels"]}
    placements = channels["ehr-placements"]
    assert (placements["received"], placements["filtered"], placements["errors"], placements["sent"]) == (10, 4, 1, 4)
    assert placements["error_rate"] == 0.1
    assert placements["delivery_seconds"] == {"count": 4, "p50": 2.0, "p95": 40.0, "max": 40.0}


def test_a_replayed_message_counts_once_with_its_latest_verdict(store):
    store.message("ehr-placements", "SENT", verdicts=(("filtered", "placement-rules: insurance-pending: x"),
                                                      ("filter_passed", "placement-rules: aged: x")))
    data = build(store, since=None)
    assert data["placements"]["placed"] == 1 and data["filtered_by_rule"] == []


def test_the_channel_option_narrows_everything(store):
    store.message("ehr-placements", "FILTERED", verdicts=(("filtered", "placement-rules: not-aged: x"),))
    store.message("account-status", "FILTERED", verdicts=(("filtered", "account-status: no-status-change: x"),))
    data = build(store, since=None, channel="account-status")
    assert [c["name"] for c in data["channels"]] == ["account-status"]
    assert [r["rule"] for r in data["filtered_by_rule"]] == ["no-status-change"]


def test_csv_and_text_carry_the_same_numbers(store):
    store.message("ehr-placements", "SENT", verdicts=(("filter_passed", "placement-rules: aged: x"),),
                  delivered_after=(0.5,))
    store.message("ehr-placements", "FILTERED", verdicts=(("filtered", "placement-rules: min-balance: x"),))
    data = build(store, since=None)
    rows = list(csv.reader(io.StringIO(report.to_csv(data))))
    assert rows[0] == ["metric", "channel", "detail", "value"]
    assert ["filtered_by_rule", "ehr-placements", "placement-rules: min-balance", "1"] in rows
    assert ["placements_by_rule", "", "aged", "1"] in rows
    assert ["delivery_seconds_p50", "ehr-placements", "", "0.5"] in rows
    text = report.to_text(data)
    assert "Accounts placed: 1 (1 delivered)" in text and "placement-rules: min-balance: 1" in text


def test_the_cli_verb(store, tmp_path):
    store.message("ehr-placements", "SENT", verdicts=(("filter_passed", "placement-rules: aged: x"),))
    (tmp_path / "channels").mkdir()
    config = tmp_path / "config.toml"
    config.write_text('[store]\npath = "var/sb.db"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n')
    result = run_cli("-c", str(config), "report", "--since", "3650d", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["placements"]["placed"] == 1
    assert run_cli("-c", str(config), "report", "--since", "soon").returncode == 1
    assert run_cli("-c", str(config), "report", "--csv", "--json").returncode == 2


def test_the_kit_sections_appear_only_for_kit_channels():
    """A report over channels that are not the collections kit's shows no placement, payment or
    recall lines (issue 14): those numbers would be zeros that mean nothing for an ADT feed."""
    from engine.cli.report import to_text

    empty_kit = {"placed": 0, "delivered": 0, "by_rule": {}}
    data = {"since": None, "until": "2026-01-01T00:00:00Z", "channel": None, "filtered_by_rule": [],
            "channels": [{"name": "adt", "received": 3, "filtered": 0, "errors": 0, "error_rate": 0.0,
                          "sent": 3, "queued": 0, "delivery_seconds": {"p50": 0.01, "p95": 0.02}}],
            "placements": empty_kit,
            "payments": {"posted": 0, "pending": 0, "errors": 0, "by_event": {}},
            "status_changes": {"recalls_sent": 0, "adjustments_sent": 0, "pending": 0, "by_reason": {}}}
    text = to_text(data)
    assert "adt" in text and "Accounts placed" not in text and "Recalls sent" not in text
    data["placements"] = {"placed": 2, "delivered": 2, "by_rule": {"min-balance": 2}}
    assert "Accounts placed: 2 (2 delivered)" in to_text(data)


def test_remittances_are_counted_and_printed(store):
    """The remittance channel's claims: DFT^P03s posted to the EHR (the channel's own output) and
    the recalls and adjustments the agency was sent (a delivery with its own JSON body)."""
    def claim(status: str, agency: tuple[str, str] | None, verdict: str = "claim-status-1") -> None:
        message_id = store.message("remittance", status, verdicts=(("filter_passed", f"remittance-claim: {verdict}"),))
        store.conn.execute("INSERT INTO deliveries (message_id, channel, destination, status, attempts,"
                           " body_is_transformed) VALUES (?, 'remittance', 'ehr', ?, 1, 1)", (message_id, status))
        body = None if agency is None else json.dumps({"action": agency[0], "reason": agency[1]})
        store.conn.execute("INSERT INTO deliveries (message_id, channel, destination, status, attempts, body)"
                           " VALUES (?, 'remittance', 'agency', ?, 1, ?)",
                           (message_id, "FILTERED" if agency is None else status, body))

    claim("SENT", ("recall", "insurance-paid"))
    claim("SENT", ("adjust", "insurance-reversal"), verdict="claim-status-22")
    claim("SENT", None, verdict="claim-status-4")
    claim("ERROR", None)
    data = build(store, since=None)
    assert data["remittances"] == {"claims": 4, "posted": 3, "pending": 0, "errors": 1, "recalls_sent": 1,
                                   "adjustments_sent": 1, "agency_pending": 0,
                                   "by_reason": {"insurance-paid": 1, "insurance-reversal": 1}}
    text = report.to_text(data)
    assert "Remittance claims: 4; DFT^P03 posted to the EHR: 3 (pending 0, errors 1)" in text
    assert "Remittance updates to the agency: recalls 1, adjustments 1 (pending 0)" in text
    rows = list(csv.reader(io.StringIO(report.to_csv(data))))
    assert ["remittances_posted_to_ehr", "", "posted", "3"] in rows
    assert ["remittance_recalls_sent", "", "", "1"] in rows
    assert ["remittance_updates_by_reason", "", "insurance-reversal", "1"] in rows
    assert "Remittance" not in report.to_text(build(store, since=None, channel="ehr-placements"))
