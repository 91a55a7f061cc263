"""remittance-claim (plugins/remittance.py): one 835 claim payment read for the EHR and the agency."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from engine.core.message import Message
from engine.core.pipeline import StageError
from engine.core.plugins import load_plugins
from engine.x12 import take

ROOT = Path(__file__).resolve().parents[3]
WALKTHROUGH = ROOT / "docs" / "collections-kit" / "remittance-835.x12"
SAMPLES = ROOT / "tests" / "samples" / "x12"


@pytest.fixture(scope="module")
def claims():
    factory = load_plugins(ROOT / "plugins", entry_points=False).filters["remittance-claim"]
    messages = take(WALKTHROUGH.read_bytes(), now=datetime(2026, 1, 1), claims=True).messages
    results = []
    for transaction in messages:
        context: dict = {}
        result = factory({}).check(Message(transaction.text, "x12"), context)
        results.append((result, context["remittance"]))
    return factory, results


def test_each_claim_is_read_with_its_money_and_the_agency_action(claims):
    _factory, results = claims
    facts = [r for _result, r in results]
    assert [(f["account"], f["status"], f["paid"], f["patient_responsibility"]) for f in facts] == [
        ("ACC55012", "2", "482.50", "0.00"), ("ACC60231", "1", "560.00", "60.00"),
        ("ACC61877", "22", "-240.00", "-60.00"), ("ACC61877", "1", "210.00", "90.00"),
        ("ACC62004", "4", "0.00", "0.00")]
    assert [(f["agency_action"], f["agency_reason"]) for f in facts] == [
        ("recall", "insurance-paid"), ("adjust", "insurance-payment"), ("adjust", "insurance-reversal"),
        ("adjust", "insurance-payment"), ("", "")]
    assert facts[1]["adjustments"] == [
        {"group": "CO", "reason": "45", "amount": "180.00", "credit": "-180.00", "level": "line"},
        {"group": "PR", "reason": "2", "amount": "60.00", "credit": "-60.00", "level": "line"}]
    assert facts[0]["adjustments"][0]["level"] == "claim" and facts[2]["paid_credit"] == "240.00"
    assert (facts[0]["payer"], facts[0]["trace"], facts[0]["paid_on"], facts[0]["member_id"]) == (
        {"name": "BLUE RIVER HEALTH PLAN", "id": "BRHP01"}, "EFT240815001", "20240815", "BRX884412")


def test_the_stored_reason_is_the_status_code_and_the_rules_show_the_balance(claims):
    _factory, results = claims
    result, _facts = results[2]
    assert result.passed and result.reason == "claim-status-22"
    assert any("balances charge - paid" in rule for rule in result.rules)


def test_a_whole_835_set_or_another_format_is_refused_with_a_clear_error(claims):
    factory, _results = claims
    whole = take((SAMPLES / "835_remittance.x12").read_bytes(), now=datetime(2026, 1, 1)).messages[0].text
    with pytest.raises(StageError, match='holds 5: set split = "claims"'):
        factory({}).check(Message(whole, "x12"), {})
    eligibility = take((SAMPLES / "270_eligibility.x12").read_bytes(), now=datetime(2026, 1, 1)).messages[0].text
    with pytest.raises(StageError, match="not a 270 set"):
        factory({}).check(Message(eligibility, "x12"), {})
    with pytest.raises(ValueError, match="unknown option"):
        factory({"recal": True})
