"""account-status (plugins/account_status.py): which EHR events recall or adjust a placed account."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7.encoding import build_segment
from engine.core.message import Message
from engine.core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[3]
KIT = ROOT / "docs" / "collections-kit"


@pytest.fixture(scope="module")
def make():
    factory = load_plugins(ROOT / "plugins", entry_points=False).filters["account-status"]
    return lambda **options: factory(options)


def segment(name: str, values: dict[int, object]) -> str:
    fields = [None] * max(values)
    for number, value in values.items():
        fields[number - 1] = value
    return build_segment(name, fields)


def event(msg_type="ADT^A08", pv1=None, ft1=(), pid=None) -> str:
    pv1_values = {1: "1", 2: "O", 20: "SP", 41: "ACTIVE", 46: "300.00"}
    pv1_values.update(pv1 or {})
    pid_values = {1: "1", 3: "MRN1", 18: "ACC1", 30: "N"}
    pid_values.update(pid or {})
    segments = [f"MSH|^~\\&|EHR|GH|SWB|AGENCY|20240701||{msg_type}|C1|P|2.5",
                segment("PID", pid_values), segment("PV1", pv1_values)]
    segments += [segment("FT1", {1: str(n), **values}) for n, values in enumerate(ft1, 1)]
    return "\r".join(segments)


def check(filter_, raw: str):
    context: dict = {}
    result = filter_.check(Message(raw), context)
    return result, context["account_event"]


@pytest.mark.parametrize("pv1, pid, reason", [
    ({20: "CHARITY"}, None, "charity"),
    ({41: "BANKRUPTCY FILED"}, None, "bankruptcy"),
    (None, {30: "Y"}, "deceased"),
    ({41: "DISPUTE"}, None, "dispute"),
])
def test_exclusions_recall_the_account(make, pv1, pid, reason):
    result, found = check(make(), event(pv1=pv1, pid=pid))
    assert result.passed and result.reason.startswith(f"recall-{reason}:")
    assert found["action"] == "recall" and found["reason"] == reason and found["account"] == "ACC1"


def test_closing_the_account_recalls_it(make):
    assert check(make(), event("BAR^P06"))[1]["reason"] == "closed"
    assert check(make(), event(pv1={41: "PAID IN FULL"}))[1]["reason"] == "closed"


def test_an_insurance_payment_or_adjustment_adjusts(make):
    paid = event("DFT^P03", ft1=[{4: "20240701", 6: "PY", 11: "-120.00", 14: "BCBS"}])
    result, found = check(make(), paid)
    assert result.reason.startswith("adjust-insurance-payment:")
    assert found["triggers"] == [{"date": "2024-07-01", "type": "PY", "amount": "-120.00", "payer": "BCBS"}]
    adjusted = event("DFT^P03", ft1=[{4: "20240702", 6: "AJ", 11: "-40.00"}])
    assert check(make(), adjusted)[1]["reason"] == "adjustment"


def test_an_adjustment_to_zero_is_a_recall(make):
    raw = event("DFT^P03", pv1={46: "0.00"}, ft1=[{4: "20240702", 6: "AJ", 11: "-300.00"}])
    result, found = check(make(), raw)
    assert found["action"] == "recall" and found["reason"] == "zero-balance"
    assert check(make(recall_on=["charity"]), raw)[1]["action"] == "adjust"


def test_patient_payments_adjust_only_when_asked(make):
    raw = event("DFT^P03", ft1=[{4: "20240701", 6: "PY", 11: "-20.00"}])
    assert not check(make(), raw)[0].passed
    assert check(make(adjust_on=["patient-payment"]), raw)[1]["reason"] == "patient-payment"


def test_the_agencys_own_payment_echoed_by_the_ehr_is_ignored(make):
    raw = event("DFT^P03", ft1=[{3: "AGENCY", 4: "20240701", 6: "PY", 11: "-125.00", 14: "X"}])
    result, _ = check(make(), raw)
    assert not result.passed and result.reason.startswith("no-status-change")


def test_a_plain_update_is_filtered_with_every_check_explained(make):
    result, found = check(make(), event())
    assert not result.passed and found["action"] == ""
    assert [line.split(":")[0] for line in result.rules][:2] == ["exclusions", "closed"]


def test_the_walkthrough_samples(make):
    for name, action, reason in (("charity-approved.hl7", "recall", "charity"),
                                 ("insurance-payment.hl7", "adjust", "insurance-payment"),
                                 ("account-closed.hl7", "recall", "closed")):
        _, found = check(make(), (KIT / name).read_text())
        assert (found["action"], found["reason"]) == (action, reason), name


@pytest.mark.parametrize("options", [{"recall_on": ["fraud"]}, {"adjust_on": "adjustment"},
                                     {"closed_types": "BAR^P06"}, {"bogus": 1}])
def test_bad_options_are_refused(make, options):
    with pytest.raises(ValueError, match="account-status"):
        make(**options)
