"""``agency-payment``: check a collection agency's payment webhook before it is posted to the EHR.

The webhook body (JSON) the agency-payments channel expects; key names are options:

```json
{"event": "payment", "payment_id": "PAY-0001", "account": "ACC55012", "mrn": "MRN100234",
 "amount": "125.00", "paid_at": "2024-06-12T14:03:00Z", "method": "card"}
```

``event`` is ``payment`` or ``reversal`` (a returned cheque, a charge-back); a body without it
is a payment.  Another event (a note, a ping) is FILTERED (``not-a-payment``).

Why a bad payment is an ERROR and not FILTERED: money must never vanish quietly.  A missing
account, an amount that is not a positive number with at most two decimals (or is above
``max_amount``), or a date that does not parse makes the message ERROR with the key named (never
its value), where an analyst sees it, fixes the agency's mapping and replays it.

What passes is left in the template context as ``payment``, normalised for HL7: ``amount``
("125.00"), ``signed_amount`` (negative for a payment, as the EHR posts credits), ``date``
(YYYYMMDD, the day as the agency wrote it), ``timestamp`` (an HL7 TS with its offset),
``event``, ``payment_id``, ``account``.  The DFT template uses these instead of parsing amounts
and dates itself.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from engine.hl7.dates import format_hl7_datetime
from engine.hookspecs import hookimpl
from engine.core.pipeline import FilterResult, StageError

_AMOUNT = re.compile(r"[0-9]+(\.[0-9]{1,2})?")
_DEFAULT_KEYS = {"event_key": "event", "id_key": "payment_id", "account_key": "account",
                 "amount_key": "amount", "date_key": "paid_at"}


def _text(options: dict, key: str, default: str) -> str:
    value = options.pop(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"agency-payment: {key} must be a non-empty string")
    return value.strip()


def _lookup(data, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


class AgencyPayment:
    def __init__(self, options: dict) -> None:
        options = dict(options)
        self.keys = {key: _text(options, key, default) for key, default in _DEFAULT_KEYS.items()}
        events = options.pop("events", ("payment", "reversal"))
        if isinstance(events, str) or not all(e in ("payment", "reversal") for e in events) or not events:
            raise ValueError("agency-payment: events must list \"payment\" and/or \"reversal\"")
        self.events = tuple(events)
        try:
            self.max_amount = Decimal(str(options.pop("max_amount", "100000.00")))
        except InvalidOperation:
            raise ValueError("agency-payment: max_amount must be an amount like \"100000.00\"") from None
        if options:
            raise ValueError(f"agency-payment: unknown option(s) {', '.join(sorted(options))}")
        self.name = "agency-payment"

    def check(self, message, context) -> FilterResult:
        data = message.view
        if not isinstance(data, dict):
            raise StageError("agency-payment: the body must be a JSON object")
        event = _lookup(data, self.keys["event_key"]) or "payment"
        if event not in self.events:
            return FilterResult(False, "not-a-payment: the event is not a payment or reversal",
                                [f"event: {event!r} not in {list(self.events)}"])
        payment_id = self._required(data, "id_key")
        account = self._required(data, "account_key")
        amount = self._amount(data)
        when = self._when(data)
        signed = amount if event == "reversal" else -amount
        context["payment"] = {
            "event": event, "payment_id": payment_id, "account": account, "amount": f"{amount:.2f}",
            "signed_amount": f"{signed:.2f}", "date": when.strftime("%Y%m%d"),
            "timestamp": format_hl7_datetime(when, "second"),
        }
        rules = [f"event: {event}", f"payment id: {payment_id!r}", f"account: {account!r}",
                 f"amount: {amount:.2f} (posted as {signed:.2f})", f"paid at: {when.isoformat()}"]
        return FilterResult(True, f"{event}: a valid agency {event}", rules)

    def _required(self, data, key: str) -> str:
        value = _lookup(data, self.keys[key])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise StageError(f"agency-payment: {self.keys[key]!r} is missing or empty")
        if any(ord(c) < 32 for c in value) or len(value) > 64:
            raise StageError(f"agency-payment: {self.keys[key]!r} must be at most 64 printable characters")
        return value.strip()

    def _amount(self, data) -> Decimal:
        name = self.keys["amount_key"]
        value = _lookup(data, name)
        text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
        if not _AMOUNT.fullmatch(text) or Decimal(text) <= 0:
            raise StageError(f"agency-payment: {name!r} must be a positive amount with at most two decimals")
        amount = Decimal(text)
        if amount > self.max_amount:
            raise StageError(f"agency-payment: {name!r} is above max_amount {self.max_amount}")
        return amount

    def _when(self, data) -> datetime:
        name = self.keys["date_key"]
        value = _lookup(data, name)
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if isinstance(value, str) else None
        except ValueError:
            when = None
        if when is None:
            raise StageError(f"agency-payment: {name!r} must be an ISO 8601 date or date-time")
        return when if when.tzinfo or len(str(value)) <= 10 else when.replace(tzinfo=timezone.utc)


@hookimpl
def register_filters():
    return {"agency-payment": AgencyPayment}
