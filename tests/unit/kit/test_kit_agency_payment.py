"""agency-payment (plugins/agency_payment.py): a payment webhook is checked before it is posted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.message import Message
from engine.core.pipeline import StageError
from engine.core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[3]
GOOD = {"event": "payment", "payment_id": "P-1", "account": "ACC1", "mrn": "M1", "amount": "125.5",
        "paid_at": "2024-07-02T15:04:05Z"}


@pytest.fixture(scope="module")
def factory():
    return load_plugins(ROOT / "plugins", entry_points=False).filters["agency-payment"]


def check(factory, body: dict, **options):
    context: dict = {}
    result = factory(options).check(Message(json.dumps(body), "json"), context)
    return result, context.get("payment")


def test_a_payment_is_normalised_for_the_dft(factory):
    result, payment = check(factory, GOOD)
    assert result.passed and result.reason.startswith("payment:")
    assert payment == {"event": "payment", "payment_id": "P-1", "account": "ACC1", "amount": "125.50",
                       "signed_amount": "-125.50", "date": "20240702", "timestamp": "20240702150405+0000"}
    assert "ACC1" not in result.reason and "125" not in result.reason


def test_a_reversal_debits_the_account(factory):
    _, payment = check(factory, dict(GOOD, event="reversal", paid_at="2024-07-03"))
    assert payment["signed_amount"] == "125.50" and payment["date"] == "20240703"


def test_other_events_are_filtered(factory):
    result, payment = check(factory, dict(GOOD, event="note"))
    assert not result.passed and result.reason.startswith("not-a-payment") and payment is None


@pytest.mark.parametrize("change, key", [
    ({"amount": "-5"}, "amount"), ({"amount": "0"}, "amount"), ({"amount": "12.345"}, "amount"),
    ({"amount": "1e3"}, "amount"), ({"amount": True}, "amount"), ({"amount": "250000"}, "max_amount"),
    ({"account": ""}, "account"), ({"account": None}, "account"), ({"payment_id": "x" * 65}, "payment_id"),
    ({"paid_at": "yesterday"}, "paid_at"), ({"account": "A\rMSH|"}, "account"),
])
def test_a_bad_payment_is_an_error_naming_the_key_not_the_value(factory, change, key):
    with pytest.raises(StageError, match=key) as raised:
        check(factory, dict(GOOD, **change))
    value = next(iter(change.values()))
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(raised.value)


def test_a_body_that_is_not_an_object_is_an_error(factory):
    with pytest.raises(StageError, match="JSON object"):
        factory({}).check(Message("[1, 2]", "json"), {})


def test_key_names_are_options_and_may_be_dotted(factory):
    body = {"kind": "payment", "id": 7, "acct": {"number": "ACC9"}, "total": 10, "on": "2024-01-02"}
    result, payment = check(factory, body, event_key="kind", id_key="id", account_key="acct.number",
                            amount_key="total", date_key="on")
    assert result.passed and payment["account"] == "ACC9" and payment["payment_id"] == "7"


@pytest.mark.parametrize("options", [{"events": ["refund"]}, {"max_amount": "a lot"}, {"amount_key": ""},
                                     {"currency": "USD"}])
def test_bad_options_are_refused(factory, options):
    with pytest.raises(ValueError, match="agency-payment"):
        factory(options)
