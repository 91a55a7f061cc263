"""X12 through the real daemon: the shipped remittance and claims-837 channels, a generic X12 inbox,
and an HTTP source answering with the 999 (DESIGN §3.11, issue 19).

One daemon for the module: the remittance channel (file inbox of 835s, split per claim) delivers
DFT^P03s to a real MLLP peer and agency updates to its file outbox; every file gets its 999 (or
TA1) beside it; malformed interchanges are refused with a rejecting 999 or a TA1 and the next good
file is still processed.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.daemon import ROOT, Daemon, MllpPeer, delivered_files, run_cli, wait_for

SAMPLES = ROOT / "tests" / "samples" / "x12"
WALKTHROUGH = ROOT / "docs" / "collections-kit" / "remittance-835.x12"

X12_INBOX = """
description = "any X12 to a file, per transaction set"
inbound = "x12"
[source]
type = "file"
path = "{inbox}"
settle = "0s"
poll_interval = "200ms"
ack = "999"
[metadata]
set = "ST.1"
[[destination]]
name = "out"
type = "file"
directory = "var/outbox/x12"
filename = "set-{{{{ id }}}}.x12"
"""

X12_HTTP = """
inbound = "x12"
[source]
type = "http"
listen = "127.0.0.1:0"
path = "/x12"
ack = "999"
[[destination]]
name = "out"
type = "file"
directory = "var/outbox/x12-http"
filename = "set-{{ id }}.x12"
"""


@pytest.fixture(scope="module")
def x12(tmp_path_factory):
    root = tmp_path_factory.mktemp("x12")
    inboxes = {name: root / "inbox" / name for name in ("remittance", "claims-837", "x12")}
    for path in inboxes.values():
        path.mkdir(parents=True)
    shutil.copytree(ROOT / "lookups", root / "lookups")
    ehr = MllpPeer()
    daemon = Daemon(
        root,
        {"remittance": (ROOT / "channels" / "remittance.toml").read_text(),
         "claims-837": (ROOT / "channels" / "claims-837.toml").read_text(),
         "x12-inbox": X12_INBOX.format(inbox=inboxes["x12"]),
         "x12-http": X12_HTTP},
        templates={p.name: p.read_text() for p in (ROOT / "transforms").glob("*.j2")},
        plugins={p.name: p.read_text() for p in (ROOT / "plugins").glob("*.py")},
        env={"REMITTANCE_ENABLED": "true", "REMITTANCE_INBOX": str(inboxes["remittance"]),
             "CLAIMS_837_ENABLED": "true", "CLAIMS_837_INBOX": str(inboxes["claims-837"]),
             "EHR_MLLP_ENABLED": "true", "EHR_OUTBOX": "false", "EHR_MLLP": f"127.0.0.1:{ehr.port}",
             "AGENCY_HTTP": "false", "AGENCY_OUTBOX": "true"},
    )
    daemon.start(expect_channels=1)
    yield daemon, inboxes, ehr
    daemon.stop()
    ehr.close()


def drop(inbox: Path, name: str, data: bytes) -> None:
    """Write beside the inbox, then rename in: the source takes a moved-in file at once."""
    temp = inbox / f".{name}.tmp"
    temp.write_bytes(data)
    temp.rename(inbox / name)


def answer_of(inbox: Path, name: str, where: str = "done") -> str:
    path = inbox / where / f"{name}.999"
    wait_for(path.exists, 20, what=f"{where}/{name}.999")
    return path.read_text("latin-1")


def segments(x12_text: str) -> list[str]:
    return [s.strip() for s in x12_text.split("~") if s.strip()]


def fields(payload: bytes) -> list[list[str]]:
    return [segment.split("|") for segment in payload.decode().split("\r") if segment]


def test_the_835_walkthrough_posts_each_claim_to_the_ehr_and_tells_the_agency(x12):
    daemon, inboxes, ehr = x12
    drop(inboxes["remittance"], "era-20240815.835", WALKTHROUGH.read_bytes())
    answer = segments(answer_of(inboxes["remittance"], "era-20240815.835"))
    assert [s for s in answer if s.startswith(("AK1", "AK2", "IK5", "AK9"))] == [
        "AK1*HP*4417*005010X221A1", "AK2*835*0001", "IK5*A", "AK9*A*1*1*1"]
    assert answer[0].split("*")[13] == "000004417" and answer[0].split("*")[6].strip() == "GENHOSP01"

    wait_for(lambda: len(ehr.received) >= 5, 20, what="five DFT^P03 at the EHR")
    dfts = [fields(p) for p in ehr.received]
    assert all(m[0][8] == "DFT^P03^DFT_P03" and p.endswith(b"\r") for m, p in zip(dfts, ehr.received))
    by_account = {}
    for message in dfts:
        pid = next(s for s in message if s[0] == "PID")
        by_account.setdefault(pid[18], []).append([s for s in message if s[0] == "FT1"])
    assert sorted(by_account) == ["ACC55012", "ACC60231", "ACC61877", "ACC62004"]
    (maria,) = by_account["ACC55012"]
    assert [(f[6], f[7].split("^")[:2], f[11]) for f in maria] == [
        ("PY", ["INSPAY", "Insurance payment"], "-482.50"),
        ("AJ", ["ADJ-PRIOR-PAYER", "OA-23"], "-767.50")]
    (daniel,) = by_account["ACC60231"]
    assert [(f[6], f[7].split("^")[0], f[11]) for f in daniel] == [
        ("PY", "INSPAY", "-560.00"), ("AJ", "ADJ-CONTRACTUAL", "-180.00"), ("TR", "PR-COINSURANCE", "60.00")]
    reversal, corrected = by_account["ACC61877"]
    assert (reversal[0][6], reversal[0][11], reversal[0][8]) == ("PY", "240.00", "reversal of previous payment")
    assert (corrected[0][11], corrected[1][7].split("^")[0], corrected[1][11]) == ("-210.00", "PR-DEDUCTIBLE", "90.00")
    (denied,) = by_account["ACC62004"]
    assert [(f[6], f[7].split("^")[0], f[11]) for f in denied] == [
        ("PY", "INSPAY", "0.00"), ("AJ", "ADJ-DENIED-NONCOVERED", "-150.00")]

    outbox = daemon.root / "var" / "outbox" / "agency-status"
    wait_for(lambda: outbox.is_dir() and len(delivered_files(outbox)) >= 3, 20, what="three agency updates")
    updates = sorted((json.loads(p.read_text()) for p in delivered_files(outbox)), key=lambda u: u["event_id"])
    assert [(u["account"], u["action"], u["reason"], u["balance"]) for u in updates] == [
        ("ACC55012", "recall", "insurance-paid", "0.00"),
        ("ACC61877", "adjust", "insurance-reversal", None),
        ("ACC61877", "adjust", "insurance-payment", "90.00")]
    assert all("NGUYEN" not in json.dumps(u) and "BRX" not in json.dumps(u) for u in updates)

    listed = daemon.cli_json("messages", "--channel", "remittance")
    rows = listed["messages"] if isinstance(listed, dict) else listed
    assert len(rows) == 5 and {r.get("type") for r in rows} == {"835"}
    shown = daemon.cli_json("show", str(rows[0]["id"]))
    meta = shown.get("meta") or shown.get("metadata")
    assert meta["isa13"] == "000004417" and meta["gs6"] == "4417" and meta["st2"] == "0001"
    assert meta["account"] in by_account and meta["trace"] == "EFT240815001"

    def remittances():   # the report counts what was delivered (deliveries are recorded after sending)
        figures = daemon.cli_json("report", "--channel", "remittance")["remittances"]
        return figures if figures["posted"] == 5 and figures["recalls_sent"] + figures["adjustments_sent"] == 3 else None

    figures = wait_for(remittances, 20, what="the report to count the remittances")
    assert figures == {"claims": 5, "posted": 5, "pending": 0, "errors": 0, "recalls_sent": 1,
                       "adjustments_sent": 2, "agency_pending": 0,
                       "by_reason": {"insurance-paid": 1, "insurance-payment": 1, "insurance-reversal": 1}}
    text = daemon.cli("report", "--channel", "remittance").stdout
    assert "DFT^P03 posted to the EHR: 5" in text and "recalls 1, adjustments 2" in text, text


def test_claims_837_become_agency_json_without_diagnosis_codes(x12):
    daemon, inboxes, _ehr = x12
    drop(inboxes["claims-837"], "claims-p.837", (SAMPLES / "837P_claims.x12").read_bytes())
    drop(inboxes["claims-837"], "claims-i.837", (SAMPLES / "837I_claims.x12").read_bytes())
    for name in ("claims-p.837", "claims-i.837"):
        answer = segments(answer_of(inboxes["claims-837"], name))
        assert any(s.startswith("AK9*A*1*1*1") for s in answer)
    # the 837P asked for a TA1 (ISA-14 = 1): it comes before the 999's group
    answer_p = segments((inboxes["claims-837"] / "done" / "claims-p.837.999").read_text())
    assert answer_p[1].startswith("TA1*000000201*") and answer_p[1].endswith("*A*000")
    outbox = daemon.root / "var" / "outbox" / "agency-claims"
    wait_for(lambda: outbox.is_dir() and len(delivered_files(outbox)) >= 2, 20, what="two claim records")
    records = {json.loads(p.read_text())["kind"]: p.read_text() for p in delivered_files(outbox)}
    professional, institutional = json.loads(records["professional"]), json.loads(records["institutional"])
    assert [c["account"] for c in professional["claims"]] == ["ACCT10001", "ACCT10002"]
    assert professional["claims"][1]["patient"]["relationship"] == "dependent"
    assert [c["total_charge"] for c in institutional["claims"]] == ["8450", "1320"]
    for text in records.values():   # diagnosis (HI) and procedure codes never leave
        for code in ("J069", "R0981", "J189", "E119", "I10", "M5416", "99213", "87880", "72100", "0120"):
            assert code not in text


@pytest.mark.parametrize("sample, set_id", [
    ("270_eligibility.x12", "270"), ("271_eligibility.x12", "271"), ("999_ack.x12", "999"),
    ("837I_claims.x12", "837"), ("835_crlf.x12", "835")])
def test_each_supported_set_is_stored_per_transaction_and_acknowledged(x12, sample, set_id):
    daemon, inboxes, _ehr = x12
    name = f"in-{sample}"
    drop(inboxes["x12"], name, (SAMPLES / sample).read_bytes())
    answer = segments(answer_of(inboxes["x12"], name))
    group = next(s for s in answer if s.startswith("AK9"))
    assert group.split("*")[1] == "A"
    expected = sum(1 for s in segments((SAMPLES / sample).read_text("latin-1")) if s.startswith("ST*"))
    assert [s for s in answer if s.startswith("AK2")] and len([s for s in answer if s.startswith("IK5*A")]) == expected

    def stored():
        listed = daemon.cli_json("messages", "--channel", "x12-inbox")
        rows = listed["messages"] if isinstance(listed, dict) else listed
        return [r for r in rows if r.get("type") == set_id] or None

    rows = wait_for(stored, 20, what=f"{set_id} stored")
    assert len(rows) >= expected


MALFORMED = ["malformed_se_count.x12", "malformed_missing_terminator.x12", "malformed_non_ascii.x12",
             "malformed_iea_control.x12", "malformed_isa_short.x12"]


@pytest.mark.parametrize("sample, where, expect", [
    ("malformed_se_count.x12", "error", "IK5*R*4"),
    ("malformed_missing_terminator.x12", "error", "IK3*CAS*16**8"),
    ("malformed_non_ascii.x12", "error", "IK4*4**6"),
    ("malformed_iea_control.x12", "error", "TA1*000000111*250116*0800*R*001"),
    ("malformed_isa_short.x12", "error", "*R*022"),
])
def test_malformed_interchanges_are_refused_with_a_999_or_ta1_and_the_channel_goes_on(x12, sample, where, expect):
    daemon, inboxes, _ehr = x12
    name = f"bad-{sample}"
    data = (SAMPLES / sample).read_bytes()
    drop(inboxes["x12"], name, data)
    answer = answer_of(inboxes["x12"], name, where)
    assert expect in answer
    moved = inboxes["x12"] / "error" / name       # the answer is written first, then the file moved
    wait_for(moved.exists, 20, what=f"error/{name}")
    assert moved.read_bytes() == data
    reason = (inboxes["x12"] / "error" / f"{name}.reason").read_text()
    assert "segment" in reason or "ISA" in reason
    for value in ("SAMPLE", "ALEX", "JOS", "W00000000", "ACCT1000"):   # positions, never values
        assert value not in reason
    # the channel still takes the next good file (its own control number: new content, not a re-send)
    good, control = f"after-{sample}", f"{500 + MALFORMED.index(sample):09d}".encode()
    drop(inboxes["x12"], good, (SAMPLES / "835_remittance.x12").read_bytes().replace(b"000000101", control))
    assert "AK9*A*2*2*2" in answer_of(inboxes["x12"], good)
    assert daemon.process.poll() is None


def test_http_source_answers_with_the_999_and_a_ta1_for_an_unreadable_interchange(x12):
    daemon, _inboxes, _ehr = x12
    port = daemon.ports["x12-http"]

    def post(body: bytes) -> tuple[int, str, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/x12", data=body, method="POST",
                                         headers={"Content-Type": "application/edi-x12"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read().decode("latin-1")
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode("latin-1")

    status, kind, body = post((SAMPLES / "270_eligibility.x12").read_bytes())
    assert (status, kind) == (200, "application/edi-x12") and "AK9*A*1*1*1" in body
    status, _kind, body = post((SAMPLES / "malformed_iea_control.x12").read_bytes())
    assert status == 400 and "TA1*000000111*250116*0800*R*001" in body and "ST*999" not in body
    status, _kind, body = post((SAMPLES / "malformed_se_count.x12").read_bytes())
    assert status == 400 and "AK9*R*1*1*0" in body
    outbox = daemon.root / "var" / "outbox" / "x12-http"
    wait_for(lambda: outbox.is_dir() and len(delivered_files(outbox)) == 1, 20, what="the 270 stored and written")


def test_switchboard_test_shows_transactions_and_loops(x12):
    daemon, _inboxes, _ehr = x12
    result = daemon.cli("test", "remittance", str(WALKTHROUGH))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("x12: 835 set 0001 of group 4417, interchange 000004417 (005010X221A1") == 5
    assert "loops: 1000A x1, 1000B x1, 2000 x1, 2100 x1, 2110 x1" in out
    assert "agency: recall (insurance-paid) if the account is placed" in out
    bad = daemon.cli("test", "x12-inbox", str(SAMPLES / "malformed_se_count.x12"))
    assert bad.returncode != 0 and "segment 23 (SE-01)" in bad.stderr and "Traceback" not in bad.stderr


def test_a_file_with_a_bad_and_a_good_interchange_is_taken_with_both_answers(x12):
    daemon, inboxes, _ehr = x12
    data = (SAMPLES / "malformed_iea_control.x12").read_bytes() + (SAMPLES / "271_eligibility.x12").read_bytes()
    drop(inboxes["x12"], "mixed.x12", data)
    answer = answer_of(inboxes["x12"], "mixed.x12")
    assert "TA1*000000111*250116*0800*R*001" in answer and "AK9*A*1*1*1" in answer
    assert answer.count("ISA*") == 2
    # the same content again: not stored twice, but answered again
    drop(inboxes["x12"], "mixed-again.x12", data)
    assert answer_of(inboxes["x12"], "mixed-again.x12").count("ISA*") == 2
    assert "already processed" in daemon.log or "same sha256" in daemon.log


def test_check_refuses_an_x12_channel_that_splits_nothing(tmp_path):
    (tmp_path / "channels").mkdir()
    (tmp_path / "inbox").mkdir()
    (tmp_path / "channels" / "whole.toml").write_text(
        'inbound = "x12"\n[source]\ntype = "file"\npath = "inbox"\nsplit = "none"\n')
    (tmp_path / "channels" / "hl7-999.toml").write_text(
        '[source]\ntype = "file"\npath = "inbox"\nack = "999"\n')
    (tmp_path / "config.toml").write_text('[store]\npath = "var/s.db"\n')
    result = run_cli("-c", str(tmp_path / "config.toml"), "check", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    shown = result.stdout + result.stderr
    assert "whole.toml" in shown and "source.split" in shown and "splits each interchange" in shown
    assert "hl7-999.toml" in shown and 'ack = "999" needs inbound = "x12"' in shown
