"""The collections kit through the real daemon: the shipped channels, templates and plugins.

The test plays the hospital's EHR (an MLLP client sending, and an MLLP peer taking payments with
its ACK) and the collection agency (an HTTP server taking placements and status changes, and a
client posting payment webhooks).  The channel files are the shipped ones; only the environment
changes, exactly as the docs tell an installer to: listen on free ports, point the agency and
EHR destinations at the peers, switch the file outboxes off.
"""

from __future__ import annotations

import csv
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from support.daemon import Daemon, MllpClient, MllpPeer, ack_for, sample, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "docs" / "collections-kit"
CHANNELS = ("ehr-placements", "agency-payments", "account-status", "fhir-export")
SHARED = ("DFT-P03-01.hl7", "DFT-P03-02.hl7", "BAR-P01-01.hl7", "BAR-P01-02.hl7", "ADT-A04-01.hl7",
          "ADT-A08-01.hl7")
# Diagnoses, procedures, notes, allergies and providers found in the messages sent below.
CLINICAL_TEXT = ("Chest pain", "Nasal congestion", "Ischemic stroke", "Biopsy", "PENICILLIN", "Hives",
                 "Physician Notes", "pharyngitis", "Electrocardiogram", "troponin", "cardiology", "Xray",
                 "heartrate", "Lipid", "R07.9", "29857009", "422504002", "99284", "93000", "WELBY",
                 "Woolfson", "Stewart", "Progress note", "spinal fracture", "myocardial")
AGENCY_TOKEN, HOOK_TOKEN = "agency-secret-1", "hook-secret-2"


class Agency:
    """The agency's API: records every request; answers 200 (or ``status_for(path)``)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        agency = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                agency.requests.append({"path": self.path, "headers": dict(self.headers),
                                        "body": body.decode("utf-8")})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ehr_answer(payload: bytes) -> bytes:
    """The EHR refuses a payment for an account it does not know (AE), takes the rest (AA)."""
    return ack_for(payload, "AE" if b"ACC-UNKNOWN" in payload else "AA")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    agency, ehr = Agency(), MllpPeer(ehr_answer)
    root = tmp_path_factory.mktemp("collections-kit")
    daemon = Daemon(
        root,
        {name: (ROOT / "channels" / f"{name}.toml").read_text() for name in CHANNELS},
        templates={p.name: p.read_text() for p in (ROOT / "transforms").glob("*.j2")},
        plugins={p.name: p.read_text() for p in (ROOT / "plugins").glob("*.py")},
        env={"EHR_PLACEMENTS_LISTEN": "127.0.0.1:0", "ACCOUNT_STATUS_LISTEN": "127.0.0.1:0",
             "AGENCY_PAYMENTS_LISTEN": "127.0.0.1:0",
             "AGENCY_HTTP": "true", "AGENCY_OUTBOX": "false", "AGENCY_TOKEN": AGENCY_TOKEN,
             "AGENCY_URL": f"http://127.0.0.1:{agency.port}/placements",
             "AGENCY_STATUS_URL": f"http://127.0.0.1:{agency.port}/account-status",
             "EHR_MLLP_ENABLED": "true", "EHR_OUTBOX": "false", "EHR_MLLP": f"127.0.0.1:{ehr.port}",
             "AGENCY_WEBHOOK_TOKEN": HOOK_TOKEN, "AGENCY_CSV_BATCH": "1s"},
    )
    daemon.start(expect_channels=3)
    yield daemon, agency, ehr
    daemon.stop()
    agency.close()
    ehr.close()


def send_hl7(daemon: Daemon, channel: str, text: str) -> str:
    client = MllpClient(daemon.ports[channel])
    try:
        return client.request(text)["code"]
    finally:
        client.close()


def kit_message(name: str) -> str:
    return (KIT / name).read_text().replace("\n", "\r").strip("\r")


def post_payment(daemon: Daemon, body: dict | str, token: str = HOOK_TOKEN) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.ports["agency-payments"], timeout=10)
    try:
        conn.request("POST", "/payments", body=body if isinstance(body, str) else json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        conn.close()


def aged_version(raw: str) -> str:
    """A shared sample as an aged self-pay account: alive, 350.00 owed since 2023, adjudicated."""
    out = []
    for segment in raw.split("\r"):
        fields = segment.split("|")
        need = {"PID": 30, "PV1": 46, "IN1": 32}.get(fields[0])
        if need:
            fields += [""] * (need + 1 - len(fields))
        if fields[0] == "PID":
            fields[30] = "N"
        elif fields[0] == "PV1":
            fields[41], fields[45], fields[46] = "ACTIVE", "20231201", "350.00"
        elif fields[0] == "IN1":
            fields[32] = "PAID"
        elif fields[0] == "MSH":
            fields[9] = fields[9] + "-AGED"
        out.append("|".join(fields))
    return "\r".join(out)


def message_of(daemon: Daemon, channel: str, control_id: str) -> dict:
    found = daemon.cli_json("messages", "--channel", channel, "--control-id", control_id)
    assert len(found) == 1, found
    return found[0]


def test_ehr_placements_places_an_aged_account_with_the_agency(kit):
    daemon, agency, _ehr = kit
    assert send_hl7(daemon, "ehr-placements", kit_message("aged-account.hl7")) == "AA"
    placements = wait_for(lambda: agency.bodies("/placements"), what="the placement at the agency")
    placement = placements[0]
    assert placement["account"]["number"] == "ACC55012" and placement["account"]["balance"] == "482.50"
    assert placement["placed_by_rule"] == "aged" and placement["patient"]["family_name"] == "RIVERA"
    request = agency.requests[0]
    assert request["headers"]["Authorization"] == f"Bearer {AGENCY_TOKEN}"
    assert request["headers"]["Content-Type"].startswith("application/json")
    stored = message_of(daemon, "ehr-placements", "GH-DFT-0001")
    daemon.wait_status(stored["id"], "SENT")
    assert stored["meta"]["account"] == "ACC55012"


def test_ehr_placements_skips_pending_insurance_and_says_why(kit):
    daemon, _agency, _ehr = kit
    assert send_hl7(daemon, "ehr-placements", kit_message("insurance-pending.hl7")) == "AA"
    stored = message_of(daemon, "ehr-placements", "GH-BAR-0002")
    daemon.wait_status(stored["id"], "FILTERED")


def test_ehr_placements_takes_the_shared_dft_bar_and_adt_samples(kit):
    daemon, agency, _ehr = kit
    client = MllpClient(daemon.ports["ehr-placements"])
    try:
        for name in SHARED:
            raw = sample(name)
            assert client.request(raw)["code"] == "AA", name
            assert client.request(aged_version(raw))["code"] == "AA", name
    finally:
        client.close()
    wait_for(lambda: len(agency.bodies("/placements")) >= 1 + len(SHARED), timeout=20,
             what="the aged samples at the agency")
    placed = [p for p in agency.bodies("/placements") if p["account"]["balance"] == "350.00"]
    assert len(placed) == len(SHARED)
    statuses = {m["status"] for m in daemon.cli_json("messages", "--channel", "ehr-placements", "--limit", "100")}
    assert statuses <= {"SENT", "FILTERED", "QUEUED"}


def test_agency_payments_posts_a_payment_to_the_ehr_and_checks_its_ack(kit):
    daemon, _agency, ehr = kit
    code, answer = post_payment(daemon, json.loads((KIT / "agency-payment.json").read_text()))
    assert code == 200 and answer["status"] in ("QUEUED", "SENT")
    wait_for(lambda: ehr.received, what="the DFT at the EHR")
    dft = ehr.received[0].decode().split("\r")
    assert dft[0].split("|")[8] == "DFT^P03^DFT_P03"
    ft1 = next(s for s in dft if s.startswith("FT1")).split("|")
    assert (ft1[2], ft1[3], ft1[6], ft1[11]) == ("ACME-PAY-77120", "AGENCY", "PY", "-125.00")
    daemon.wait_status(answer["id"], "SENT")


def test_agency_payments_refused_by_the_ehr_is_an_error(kit):
    daemon, _agency, ehr = kit
    body = dict(json.loads((KIT / "agency-payment.json").read_text()), payment_id="ACME-PAY-77121",
                account="ACC-UNKNOWN")
    code, answer = post_payment(daemon, body)
    assert code == 200
    shown = daemon.wait_status(answer["id"], "ERROR")
    attempt = shown["destinations"][0]["attempts"][-1]
    assert attempt["ok"] is False and "AE" in attempt["error"]


def test_agency_payments_refuses_bad_payments_and_strangers(kit):
    daemon, _agency, _ehr = kit
    body = dict(json.loads((KIT / "agency-payment.json").read_text()), payment_id="ACME-PAY-77122", amount="-5")
    code, answer = post_payment(daemon, body)
    assert code == 422
    shown = daemon.cli_json("show", str(answer["id"]))
    assert shown["status"] == "ERROR" and "'amount'" in shown["error"] and "-5" not in shown["error"]
    assert post_payment(daemon, body, token="wrong")[0] == 401


def test_account_status_recalls_a_charity_account_and_adjusts_an_insurance_payment(kit):
    daemon, agency, _ehr = kit
    assert send_hl7(daemon, "account-status", kit_message("charity-approved.hl7")) == "AA"
    assert send_hl7(daemon, "account-status", kit_message("insurance-payment.hl7")) == "AA"
    changes = wait_for(lambda: len(agency.bodies("/account-status")) >= 2 and agency.bodies("/account-status"),
                       what="the status changes at the agency")
    assert [(c["action"], c["reason"], c["account"]) for c in changes] == [
        ("recall", "charity", "ACC55012"), ("adjust", "insurance-payment", "ACC55012")]
    plain = kit_message("aged-account.hl7").replace("GH-DFT-0001", "GH-DFT-0009")
    plain = "\r".join(s for s in plain.split("\r") if not s.startswith("FT1"))
    assert send_hl7(daemon, "account-status", plain) == "AA"
    daemon.wait_status(message_of(daemon, "account-status", "GH-DFT-0009")["id"], "FILTERED")


def test_fhir_export_writes_a_valid_r4_bundle_for_each_placement(kit):
    daemon, agency, _ehr = kit
    outbox = daemon.root / "var" / "outbox" / "fhir"
    wait_for(lambda: outbox.is_dir() and len(list(outbox.glob("*.json"))) >= len(agency.bodies("/placements")),
             timeout=20, what="a bundle per placement")
    accounts = set()
    for path in outbox.glob("*.json"):
        bundle = Bundle.model_validate_json(path.read_text())
        kinds = sorted(e.resource.get_resource_type() for e in bundle.entry)
        assert kinds[0] == "Account" and "Patient" in kinds and "PaymentReconciliation" in kinds
        assert "Coverage" in kinds
        accounts.add(next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Account")
                     .identifier[0].value)
    assert "ACC55012" in accounts


def test_ehr_placements_daily_csv_holds_every_placement(kit):
    daemon, agency, _ehr = kit
    outbox = daemon.root / "var" / "outbox" / "agency-csv"

    def rows():
        found = []
        for path in sorted(outbox.glob("placements-*.csv")):
            with path.open(newline="") as handle:
                found += list(csv.DictReader(handle))
        return found if len(found) >= len(agency.bodies("/placements")) else None

    found = wait_for(rows, timeout=20, what="the batch files to close")
    assert {row["placement_id"] for row in found} == {p["placement_id"] for p in agency.bodies("/placements")}
    assert next(row for row in found if row["account"] == "ACC55012")["balance"] == "482.50"


def test_nothing_sent_to_the_agency_carries_clinical_data(kit):
    daemon, agency, _ehr = kit
    bodies = [r["body"] for r in agency.requests]
    bodies += [p.read_text() for p in (daemon.root / "var" / "outbox").rglob("*") if p.is_file()]
    assert len(agency.requests) >= 1 + len(SHARED) + 2
    leaks = [(text, body[:60]) for body in bodies for text in CLINICAL_TEXT if text.lower() in body.lower()]
    assert leaks == []


def test_report_counts_placements_rules_payments_and_recalls(kit):
    daemon, agency, _ehr = kit
    wait_for(lambda: not daemon.cli_json("messages", "--status", "queued"), timeout=20, what="queues to drain")
    report = daemon.cli_json("report")
    assert report["placements"]["placed"] == 1 + len(SHARED)
    assert report["placements"]["delivered"] == 1 + len(SHARED)
    assert report["placements"]["by_rule"] == {"aged": 1 + len(SHARED)}
    rules = {(r["channel"], r["filter"], r["rule"]): r["count"] for r in report["filtered_by_rule"]}
    assert rules[("ehr-placements", "placement-rules", "excluded-deceased")] == len(SHARED)
    assert rules[("ehr-placements", "placement-rules", "insurance-pending")] == 1
    assert rules[("account-status", "account-status", "no-status-change")] == 1
    assert report["payments"]["posted"] == 1 and report["payments"]["errors"] == 1
    assert report["status_changes"]["recalls_sent"] == 1
    assert report["status_changes"]["adjustments_sent"] == 1
    channels = {c["name"]: c for c in report["channels"]}
    assert channels["agency-payments"]["errors"] == 2 and channels["agency-payments"]["error_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert channels["ehr-placements"]["delivery_seconds"]["count"] >= 3 * (1 + len(SHARED))
    assert channels["ehr-placements"]["delivery_seconds"]["p95"] < 30
    text = daemon.cli("report", "--channel", "ehr-placements", "--csv")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "metric,channel,detail,value"
    assert "filtered_by_rule,ehr-placements,placement-rules: excluded-deceased,6" in lines
    human = daemon.cli("report", "--since", "1h")
    assert human.returncode == 0 and "Accounts placed: 7 (7 delivered)" in human.stdout
