"""The shipped collections channels and templates, checked and dry-run as an analyst would.

``switchboard check`` must pass for the shipped config; then each channel's real pipeline runs
over the walkthrough samples and the shared samples (``engine.dry_run``, the code behind
``switchboard test``): the agency JSON and CSV, the recall JSON, the DFT^P03 for the EHR and the
FHIR Bundle, which is validated with fhir.resources' R4B models.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import hl7
import pytest
from fhir.resources.R4B.bundle import Bundle

from engine.runtime.check import check
from engine.runtime.dry_run import dry_run
from support.daemon import run_cli

ROOT = Path(__file__).resolve().parents[3]
KIT = ROOT / "docs" / "collections-kit"
SAMPLES = ROOT / "tests" / "samples" / "hl7v2"
KIT_CHANNELS = ("ehr-placements", "agency-payments", "account-status", "fhir-export")
CLINICAL_TEXT = ("Chest pain", "Electrocardiogram", "ED visit", "troponin", "cardiology", "Penicillin",
                 "Hives", "R07.9", "93000", "99284", "WELBY", "CASEY", "Progress note")


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[engine]\nchannels_dir = "{ROOT / "channels"}"\ntransforms_dir = "{ROOT / "transforms"}"\n'
        f'plugins_dir = "{ROOT / "plugins"}"\nlookups_dir = "{ROOT / "lookups"}"\n[store]\npath = "{tmp_path / "var" / "sb.db"}"\n'
        '[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n')
    return config


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    config, registry, problems = check(write_config(tmp_path_factory.mktemp("kit")),
                                       environ={"PLACEMENT_AS_OF": "2024-06-30"})
    assert problems == []
    return config, registry


def run(shipped, channel: str, *texts: str) -> list[dict]:
    config, registry = shipped
    return dry_run(config, registry, config.channel(channel), list(texts))


def body_of(result: dict, destination: str) -> str:
    plan = next(d for d in result["destinations"] if d["name"] == destination)
    assert plan["error"] is None, plan["error"]
    return plan["body"]


def hl7_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\n", "\r").strip("\r\ufeff")


def test_switchboard_check_passes_for_the_shipped_config(tmp_path):
    result = run_cli("-c", str(write_config(tmp_path)), "check")
    assert result.returncode == 0, result.stderr
    assert "ok (" in result.stdout


def test_make_run_config_checks_clean_with_the_admin_port_free():
    config, _registry, problems = check(ROOT / "config.toml", environ={})
    assert problems == []
    taken = [c.source.options["listen"] for c in config.channels if c.source.options.get("listen")]
    assert config.admin.listen not in taken and len(taken) == len(set(taken))


def test_peers_are_off_until_configured(shipped, tmp_path):
    destinations = {c.name: [d.name for d in c.destinations] for c in shipped[0].channels if c.name in KIT_CHANNELS}
    assert destinations == {"ehr-placements": ["agency-outbox", "daily-csv", "fhir-export"],
                            "agency-payments": ["ehr-outbox"],
                            "account-status": ["agency-status-outbox"],
                            "fhir-export": ["fhir-outbox"]}
    env = {"AGENCY_HTTP": "true", "AGENCY_OUTBOX": "false", "EHR_MLLP_ENABLED": "true", "EHR_OUTBOX": "false",
           "FHIR_HTTP": "true", "FHIR_OUTBOX": "false", "AGENCY_URL": "https://agency.example/placements"}
    configured, _registry, problems = check(write_config(tmp_path), environ=env)
    assert problems == []
    live = {c.name: [d.name for d in c.destinations] for c in configured.channels if c.name in KIT_CHANNELS}
    assert live["ehr-placements"] == ["agency-api", "daily-csv", "fhir-export"]
    assert live["agency-payments"] == ["ehr"] and live["fhir-export"] == ["fhir-server"]
    assert configured.channel("ehr-placements").destinations[0].options["url"] == "https://agency.example/placements"


def test_the_kit_listens_on_its_own_ports(shipped):
    config, _registry = shipped
    listens = {c.name: c.source.options.get("listen") for c in config.channels}
    assert listens["ehr-placements"] == ("127.0.0.1", 2576)
    assert listens["account-status"] == ("127.0.0.1", 2577)
    assert listens["agency-payments"] == ("127.0.0.1", 8481)
    ports = [address[1] for address in listens.values() if address] + [config.admin.listen[1]]
    assert len(ports) == len(set(ports))


def test_an_aged_account_becomes_the_agency_json_and_a_csv_line(shipped):
    [result] = run(shipped, "ehr-placements", hl7_text(KIT / "aged-account.hl7"))
    assert result["status"] == "QUEUED"
    placement = json.loads(body_of(result, "agency-outbox"))
    assert placement["placed_by_rule"] == "aged"
    assert placement["account"]["number"] == "ACC55012" and placement["account"]["balance"] == "482.50"
    assert placement["account"]["oldest_unpaid_service_date"] == "2024-01-10"
    assert placement["account"]["days_outstanding"] == 172
    assert placement["patient"]["birth_date"] == "1972-03-14"
    assert placement["patient"]["home_phone"] == "2175550142"
    assert placement["guarantor"]["relationship"] == "SEL"
    assert placement["insurance"][0]["policy_number"] == "XQH4471123"
    assert [t["type"] for t in placement["transactions"]] == ["CG", "CG", "PY", "AJ"]
    row = next(csv.reader(io.StringIO(body_of(result, "daily-csv"))))
    assert row[2:5] == ["ACC55012", "MRN100234", "RIVERA"] and row[12] == "482.50" and row[-1] == "aged"
    for destination in ("agency-outbox", "daily-csv", "fhir-export"):
        body = body_of(result, destination)
        assert not [text for text in CLINICAL_TEXT if text.lower() in body.lower()], destination


def test_skipped_accounts_say_which_rule(shipped):
    pending, charity = run(shipped, "ehr-placements", hl7_text(KIT / "insurance-pending.hl7"),
                           hl7_text(KIT / "charity-approved.hl7"))
    assert pending["status"] == charity["status"] == "FILTERED"
    assert pending["filters"][-1]["reason"].startswith("insurance-pending:")
    assert charity["filters"][-1]["reason"].startswith("excluded-charity:")
    assert "insurance: 1 of 1 claim(s) pending ('PENDING' in IN1.32) -> wait" in pending["filters"][-1]["rules"]


@pytest.mark.parametrize("name", ["ADT-A04-01.hl7", "ADT-A08-01.hl7", "DFT-P03-01.hl7", "DFT-P03-02.hl7",
                                  "BAR-P01-01.hl7", "BAR-P01-02.hl7"])
def test_shared_samples_are_placed_once_aged_and_never_leak_clinical_data(shipped, name):
    raw = hl7_text(SAMPLES / name)
    [as_received] = run(shipped, "ehr-placements", raw)
    assert as_received["status"] == "FILTERED"       # PID-30 = Y in the samples: deceased
    assert as_received["filters"][-1]["reason"].startswith("excluded-deceased")
    aged = aged_version(raw)
    [result] = run(shipped, "ehr-placements", aged)
    assert result["status"] == "QUEUED", result
    placement = body_of(result, "agency-outbox")
    for text in ("Chest pain", "Ischemic stroke", "Biopsy", "PENICILLIN", "pharyngitis", "Physician Notes",
                 "Xray", "heartrate", "Stewart", "Woolfson", "Lipid"):
        assert text.lower() not in placement.lower(), (name, text)
    assert json.loads(placement)["account"]["balance"] == "350.00"


def aged_version(raw: str) -> str:
    """The sample as an aged self-pay account: alive, a balance, an old discharge, adjudicated."""
    segments = []
    for segment in raw.split("\r"):
        fields = segment.split("|")
        if fields[0] in ("PID", "PV1", "IN1"):
            need = {"PID": 30, "PV1": 46, "IN1": 32}[fields[0]]
            fields += [""] * (need + 1 - len(fields))
        if fields[0] == "PID":
            fields[30] = "N"
        elif fields[0] == "PV1":
            fields[41], fields[45], fields[46] = "ACTIVE", "20231201", "350.00"
        elif fields[0] == "IN1":
            fields[32] = "PAID"
        segments.append("|".join(fields))
    return "\r".join(segments)


def test_the_fhir_bundle_validates_as_r4(shipped):
    [placed] = run(shipped, "ehr-placements", hl7_text(KIT / "aged-account.hl7"))
    [exported] = run(shipped, "fhir-export", body_of(placed, "fhir-export"))
    bundle = Bundle.model_validate_json(body_of(exported, "fhir-outbox"))
    resources = {entry.resource.get_resource_type(): entry.resource for entry in bundle.entry}
    assert bundle.type == "transaction" and len(bundle.entry) == 4
    assert set(resources) == {"Patient", "Account", "Coverage", "PaymentReconciliation"}
    assert resources["Patient"].identifier[0].value == "MRN100234"
    assert resources["Patient"].gender == "female" and str(resources["Patient"].birthDate) == "1972-03-14"
    assert resources["Account"].identifier[0].value == "ACC55012"
    assert float(resources["Account"].extension[0].valueMoney.value) == 482.5
    assert resources["Account"].coverage[0].coverage.reference == f"Coverage/{resources['Coverage'].id}"
    assert resources["Coverage"].subscriberId == "XQH4471123"
    assert float(resources["PaymentReconciliation"].paymentAmount.value) == 450.0
    assert str(resources["PaymentReconciliation"].paymentDate) == "2024-03-01"
    text = body_of(exported, "fhir-outbox")
    assert not [t for t in CLINICAL_TEXT if t.lower() in text.lower()]
    [again] = run(shipped, "fhir-export", body_of(placed, "fhir-export"))
    assert Bundle.model_validate_json(body_of(again, "fhir-outbox")).entry[0].resource.id == resources["Patient"].id


def test_a_self_pay_account_exports_a_self_pay_coverage(shipped):
    raw = hl7_text(KIT / "aged-account.hl7")
    raw = "\r".join(s for s in raw.split("\r") if not s.startswith(("IN1", "GT1")))
    [placed] = run(shipped, "ehr-placements", raw)
    [exported] = run(shipped, "fhir-export", body_of(placed, "fhir-export"))
    bundle = Bundle.model_validate_json(body_of(exported, "fhir-outbox"))
    coverage = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Coverage")
    assert coverage.type.coding[0].code == "pay"
    assert coverage.payor[0].reference.startswith("Patient/")


def test_a_webhook_payment_becomes_a_dft_p03_with_an_ft1_payment(shipped):
    [result] = run(shipped, "agency-payments", (KIT / "agency-payment.json").read_text())
    text = body_of(result, "ehr-outbox")
    message = hl7.parse(text)
    assert str(message.segment("MSH")[9]) == "DFT^P03^DFT_P03"
    assert str(message.segment("MSH")[10]) == "AGY1"              # from the stored message id
    ft1 = message.segment("FT1")
    assert (str(ft1[2]), str(ft1[3]), str(ft1[4]), str(ft1[6]), str(ft1[11])) == \
        ("ACME-PAY-77120", "AGENCY", "20240702", "PY", "-125.00")
    assert str(message.segment("PID")[18]) == "ACC55012" and str(message.segment("PID")[3][0][0]) == "MRN100234"


def test_webhook_values_cannot_inject_hl7(shipped):
    body = json.loads((KIT / "agency-payment.json").read_text())
    body["payment_id"] = "X|Y^Z"
    body["mrn"] = "M1\rOBX|1|TX|evil"
    [result] = run(shipped, "agency-payments", json.dumps(body))
    text = body_of(result, "ehr-outbox")
    assert text.endswith("\r")   # every segment, the last one too, ends with CR (DESIGN §3.5)
    assert [s[:3] for s in text[:-1].split("\r")] == ["MSH", "EVN", "PID", "PV1", "FT1"]
    assert "X\\F\\Y\\S\\Z" in text


def test_status_changes_become_recall_or_adjust_json(shipped):
    results = run(shipped, "account-status", hl7_text(KIT / "charity-approved.hl7"),
                  hl7_text(KIT / "insurance-payment.hl7"), hl7_text(KIT / "account-closed.hl7"))
    bodies = [json.loads(body_of(r, "agency-status-outbox")) for r in results]
    assert [(b["action"], b["reason"]) for b in bodies] == [("recall", "charity"), ("adjust", "insurance-payment"),
                                                            ("recall", "closed")]
    assert bodies[1]["balance"] == "282.50" and bodies[1]["transactions"][0]["amount"] == "-200.00"
    assert all(b["account"] == "ACC55012" for b in bodies)
    assert all("family_name" not in json.dumps(b) and "RIVERA" not in json.dumps(b) for b in bodies)


def test_switchboard_test_prints_the_rules(tmp_path):
    config = write_config(tmp_path)
    result = run_cli("-c", str(config), "test", "ehr-placements", str(KIT / "insurance-pending.hl7"),
                     env={"PLACEMENT_AS_OF": "2024-06-30", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "FILTERED (insurance-pending: an insurance claim is still pending)" in result.stdout
    assert "balance: 310.00 from PV1.46; min_balance 25.00 -> ok" in result.stdout
    assert "=> SKIPPED by rule insurance-pending" in result.stdout


def test_a_disabled_destination_is_still_checked(tmp_path):
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "x.toml").write_text(
        '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'
        '[[destination]]\nname = "later"\ntype = "http"\nenabled = "${LATER:-false}"\nurl = "ftp://nowhere"\n'
        '[[destination]]\nname = "files"\ntype = "file"\nenabled = false\ndirectory = "out"\n')
    (tmp_path / "config.toml").write_text('[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n')
    _config, _registry, problems = check(tmp_path / "config.toml", environ={})
    assert [(p.key, "http" in p.reason) for p in problems] == [("destination[later].url", True)]
    (tmp_path / "channels" / "x.toml").write_text(
        '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'
        '[[destination]]\nname = "files"\ntype = "file"\nenabled = "maybe"\ndirectory = "out"\n')
    _config, _registry, problems = check(tmp_path / "config.toml", environ={})
    assert [p.key for p in problems] == ["destination[files].enabled"]
