"""placement-rules (plugins/placement_rules.py, plugins/_account.py): which rule places or skips.

Messages are built field by field with ``build_segment`` at the HL7 v2.5 positions the issue names,
and every test pins "today" with ``as_of`` so ages are exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7.encoding import build_segment
from engine.core.message import Message
from engine.core.pipeline import StageError
from engine.core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[3]
AS_OF = "2024-06-30"


@pytest.fixture(scope="module")
def registry():
    return load_plugins(ROOT / "plugins", entry_points=False)


def segment(name: str, values: dict[int, object]) -> str:
    fields = [None] * max(values)
    for number, value in values.items():
        fields[number - 1] = value
    return build_segment(name, fields)


def account(*, pv1: dict | None = None, pid: dict | None = None, ft1: list[dict] = (), in1: list[dict] = (),
            extra: list[str] = (), msg_type: str = "DFT^P03") -> str:
    """A v2.5 account message; PV1 defaults: self-pay, active, 482.50 owed, discharged 2024-01-10."""
    pid_values = {1: "1", 3: ["MRN7001", "", "", "GH", "MR"], 5: ["TESTPERSON", "ALEX"], 7: "19800101",
                  8: "U", 18: "ACC-9001", 30: "N"}
    pid_values.update(pid or {})
    pv1_values = {1: "1", 2: "O", 20: "SP", 41: "ACTIVE", 44: "20240110", 45: "20240110", 46: "482.50"}
    pv1_values.update(pv1 or {})
    segments = [f"MSH|^~\\&|EHR|GH|SWB|AGENCY|20240630120000||{msg_type}|CTRL-1|P|2.5",
                segment("PID", pid_values), segment("PV1", pv1_values)]
    for number, values in enumerate(ft1, 1):
        segments.append(segment("FT1", {1: str(number), **values}))
    for number, values in enumerate(in1, 1):
        segments.append(segment("IN1", {1: str(number), 2: "PLAN", **values}))
    return "\r".join([*segments, *extra])


def charge(day: str, amount: str) -> dict:
    return {4: day, 6: "CG", 11: amount}


def payment(day: str, amount: str, plan: str = "") -> dict:
    return {4: day, 6: "PY", 11: amount, 14: plan}


def run(registry, raw: str, **options):
    rules = registry.filters["placement-rules"]({"as_of": AS_OF, **options})
    context: dict = {}
    result = rules.check(Message(raw), context)
    return result, context["placement"]


def rule_of(result) -> str:
    return result.reason.split(":")[0]


def test_an_aged_self_pay_balance_is_placed_by_the_aged_rule(registry):
    result, placement = run(registry, account(ft1=[charge("20240110", "482.50")]))
    assert result.passed and rule_of(result) == "aged"
    assert placement["balance"] == "482.50" and placement["oldest_unpaid_date"] == "2024-01-10"
    assert placement["age_days"] == 172 and placement["placed"] is True
    assert result.rules[-1] == "=> PLACED by rule aged"


def test_reasons_name_rules_and_thresholds_never_values(registry):
    raw = account(pv1={46: "12.34"}, ft1=[charge("20240110", "12.34")])
    result, _ = run(registry, raw)
    assert rule_of(result) == "min-balance"
    assert "12.34" not in result.reason and "ACC-9001" not in result.reason and "MRN7001" not in result.reason
    assert "25.00" in result.reason                         # the threshold is config, not data
    assert any("12.34" in line for line in result.rules)    # the dry run shows the value


@pytest.mark.parametrize("where, value, category", [
    ({"pv1": {20: "CHARITY"}}, None, "charity"),
    ({"pv1": {41: "CHARITY CARE APPROVED"}}, None, "charity"),
    ({"pv1": {20: "BK"}}, None, "bankruptcy"),
    ({"pv1": {41: "BANKRUPTCY CH7"}}, None, "bankruptcy"),
    ({"pv1": {41: "EXPIRED"}}, None, "deceased"),
    ({"pid": {30: "Y"}}, None, "deceased"),
    ({"pv1": {41: "DISPUTED"}}, None, "dispute"),
])
def test_never_placed_when_charity_bankruptcy_deceased_or_dispute(registry, where, value, category):
    result, placement = run(registry, account(ft1=[charge("20240110", "482.50")], **where))
    assert not result.passed and rule_of(result) == f"excluded-{category}"
    assert placement["exclusions"][0] == category


def test_exclusion_terms_match_whole_words_only(registry):
    result, _ = run(registry, account(pv1={20: "CHECKUP", 41: "DECLINED"}, ft1=[charge("20240110", "90")]))
    assert result.passed, result.rules       # CH and DEC are codes, not prefixes


def test_exclusion_terms_are_options(registry):
    raw = account(pv1={20: "FA"}, ft1=[charge("20240110", "90")])
    assert run(registry, raw)[0].passed
    result, _ = run(registry, raw, exclude={"charity": ["FA"], "attorney": ["ATTY"]})
    assert rule_of(result) == "excluded-charity"
    result, _ = run(registry, account(pv1={41: "ATTY REP"}, ft1=[charge("20240110", "90")]),
                    exclude={"attorney": ["ATTY"]})
    assert rule_of(result) == "excluded-attorney"


def test_no_or_small_balance_is_skipped(registry):
    assert rule_of(run(registry, account(pv1={46: "0.00"}))[0]) == "no-balance"
    assert rule_of(run(registry, account(pv1={46: ""}))[0]) == "no-balance"
    assert rule_of(run(registry, account(pv1={46: "24.99"}))[0]) == "min-balance"
    assert run(registry, account(pv1={46: "24.99"}), min_balance=10)[0].passed


def test_pending_insurance_claim_waits(registry):
    raw = account(ft1=[charge("20240110", "482.50")], in1=[{32: "PAID"}, {32: "PENDING"}])
    result, _ = run(registry, raw)
    assert rule_of(result) == "insurance-pending"
    assert run(registry, raw, require_adjudicated=False)[0].passed
    adjudicated = account(ft1=[charge("20240110", "482.50")], in1=[{32: "PAID"}, {32: "DENIED"}])
    assert run(registry, adjudicated)[0].passed


def test_too_recent_service_is_not_aged(registry):
    raw = account(pv1={44: "20240601", 45: "20240605"}, ft1=[charge("20240605", "482.50")])
    result, placement = run(registry, raw)
    assert rule_of(result) == "not-aged" and placement["age_days"] == 25
    assert run(registry, raw, min_age_days=20)[0].passed


def test_a_statement_date_older_than_the_service_ages_the_account(registry):
    raw = account(pv1={44: "20240601", 45: "20240605"}, ft1=[charge("20240605", "482.50")],
                  extra=["ZFN|1|20240301"])
    result, placement = run(registry, raw, statement_date_field="ZFN.2")
    assert result.passed and placement["oldest_unpaid_date"] == "2024-03-01"


def test_credits_pay_the_oldest_charges_first(registry):
    # 300 charged, 150 paid: the January charge is paid, 50 of March and all of May remain.
    raw = account(pv1={46: "150.00", 44: "", 45: ""},
                  ft1=[charge("20240105", "100.00"), charge("20240315", "100.00"),
                       charge("20240520", "100.00"), payment("20240401", "-150.00", plan="BCBS")])
    result, placement = run(registry, raw)
    assert placement["oldest_unpaid_date"] == "2024-03-15"
    assert rule_of(result) == "aged"                    # 107 days
    result, _ = run(registry, raw, min_age_days=120)
    assert rule_of(result) == "not-aged"                # January is older, but it is paid


def test_a_recent_patient_payment_holds_placement_but_an_insurance_payment_does_not(registry):
    base = [charge("20240110", "600.00")]
    patient_paid = account(ft1=[*base, payment("20240615", "-50.00")])
    assert rule_of(run(registry, patient_paid)[0]) == "recent-payment"
    insurer_paid = account(ft1=[*base, payment("20240615", "-50.00", plan="BCBS-PPO")])
    assert run(registry, insurer_paid)[0].passed
    old_patient_payment = account(ft1=[*base, payment("20240201", "-50.00")])
    assert run(registry, old_patient_payment)[0].passed


def test_a_failed_payment_plan_places_without_waiting(registry):
    raw = account(pv1={41: "PAYMENT PLAN FAILED", 44: "20240601", 45: "20240601"},
                  ft1=[charge("20240601", "482.50")])
    result, _ = run(registry, raw)
    assert result.passed and rule_of(result) == "payment-plan-failed"
    excluded = account(pv1={20: "CHARITY", 41: "PAYMENT PLAN FAILED"})
    assert rule_of(run(registry, excluded)[0]) == "excluded-charity"   # exclusions always win


def test_balance_from_totals_or_transactions_when_pv1_46_is_empty(registry):
    totals = account(pv1={46: "", 47: "1,250.00", 48: "317.50", 49: "(450.00)"})
    _, placement = run(registry, totals)
    assert placement["balance"] == "482.50"
    transactions = account(pv1={46: ""}, ft1=[charge("20240110", "300"), charge("20240111", "200"),
                                             payment("20240301", "-100", plan="X"), {4: "20240302", 6: "AJ", 11: "25"}])
    result, placement = run(registry, transactions)
    assert placement["balance"] == "375.00" and placement["charges"] == "500.00"
    assert any("from FT1 transactions" in line for line in result.rules)


def test_every_field_is_an_option(registry):
    raw = account(pv1={46: ""}, extra=["ZAC|1|ACC-Z|912.00|HARDSHIP"])
    result, placement = run(registry, raw, balance_field="ZAC.3", account_field="ZAC.2",
                            financial_class_field="ZAC.4", exclude={"charity": ["HARDSHIP"]})
    assert rule_of(result) == "excluded-charity" and placement["account"] == "ACC-Z"
    _, placement = run(registry, raw, balance_field="ZAC.3")
    assert placement["balance"] == "912.00"


def test_the_dry_run_explanation_covers_every_rule(registry):
    result, _ = run(registry, account(ft1=[charge("20240110", "482.50")], in1=[{32: "PAID"}]))
    heads = [line.split(":")[0] for line in result.rules]
    assert heads == ["exclusions", "balance", "payment plan", "insurance", "age", "patient payments",
                     "=> PLACED by rule aged"]


@pytest.mark.parametrize("options, word", [
    ({"min_age_days": -1}, "min_age_days"),
    ({"min_balance": "lots"}, "min_balance"),
    ({"balance_field": "PV1..46"}, "balance_field"),
    ({"as_of": "June"}, "as_of"),
    ({"exclude": {"Charity": ["X"]}}, "exclude"),
    ({"transaction_date_field": "ZFT.4"}, "transaction_"),
    ({"min_age": 90}, "unknown option"),
])
def test_bad_options_are_refused_with_the_option_named(registry, options, word):
    with pytest.raises(ValueError, match=word):
        registry.filters["placement-rules"](options)


def test_non_hl7_input_is_a_stage_error(registry):
    rules = registry.filters["placement-rules"]({})
    with pytest.raises(StageError):
        rules.check(Message('{"a": 1}', "json"), {})


def test_shared_samples_with_a_death_indicator_are_never_placed(registry):
    sample = (ROOT / "tests" / "samples" / "hl7v2" / "DFT-P03-01.hl7").read_text(encoding="utf-8")
    result, placement = run(registry, sample)
    assert rule_of(result) == "excluded-deceased"       # PID-30 is Y in the sample
    assert placement["balance"] == "220.00"             # 100 + 120 USD charges (FT1-11.1)
