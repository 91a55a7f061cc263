"""A hospital account as the collections kit reads it from an HL7 v2 message (shared code).

Not a plugin: the leading underscore keeps the plugin loader away.  ``placement_rules.py`` and
``account_status.py`` load it by path (plugins are files, not a package) and build their options on
``AccountOptions``,
so both filters read the same fields the same way and an option means one thing everywhere.

Why each choice:

* **Every field is an option naming its HL7 path**, with HL7 v2.5 defaults (PID-18 account, PV1-20
  financial class, PV1-41 account status, PV1-46..49 balance/charges/adjustments/payments, FT1-4
  date, FT1-6 type, FT1-11 amount, IN1-32 billing status).  EHRs move these around (a Z segment,
  a custom PV1 field); an analyst changes a path, not code.
* **Money is ``Decimal``**, read leniently ("$1,234.50", "(12.00)" as a negative) because EHRs
  format amounts every way; an amount that is not a number counts as absent, never as zero.
* **The patient balance** is PV1-46 when sent; else PV1-47 - PV1-48 - PV1-49; else the sum of the
  FT1 transactions.  Payments and adjustments reduce it by their magnitude whatever their sign:
  EHRs disagree on signs, and a credit adjustment is by far the common case.
* **The oldest unpaid service** applies credits to the oldest charges first (the usual posting
  rule): the unpaid part of the balance is made of the newest charges, so walking the dated
  charges newest first until the balance is covered finds the oldest one still (partly) unpaid.
  Without dated charges (an ADT or BAR), the discharge or admit date stands in.
* **A patient payment** is a payment-type FT1 with no insurance plan (FT1-14): a payer's payment
  names its plan.
* **Exclusion terms** match a whole word of the financial class or account status, case
  insensitively: "CH" matches the code "CH" but not "CHECK"; "CHARITY" matches "CHARITY CARE".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.hl7.path import Path as HL7Path
from engine.hl7.dates import parse_hl7_datetime
from engine.hl7.path import parse_path

FIELD_DEFAULTS = {
    "account_field": "PID.18.1",
    "financial_class_field": "PV1.20.1",
    "account_status_field": "PV1.41",
    "death_indicator_field": "PID.30",
    "balance_field": "PV1.46",
    "charges_field": "PV1.47",
    "adjustments_field": "PV1.48",
    "payments_field": "PV1.49",
    "statement_date_field": "",          # no v2.5 field: sites use a Z segment, e.g. "ZFN.3"
    "claim_status_field": "IN1.32",      # billing status, read in every IN1
    "transaction_date_field": "FT1.4",
    "transaction_type_field": "FT1.6",
    "transaction_amount_field": "FT1.11.1",
    "transaction_payer_field": "FT1.14",
}
LIST_DEFAULTS = {
    "service_date_fields": ("PV1.45", "PV1.44"),   # discharge, then admit: when no FT1 is dated
    "charge_types": ("CG",),
    "payment_types": ("PY",),
    "adjustment_types": ("AJ",),
    "pending_claim_values": ("PENDING", "BILLED", "SUBMITTED", "IN PROCESS"),
}
EXCLUDE_DEFAULTS = {
    "charity": ("CHARITY", "CHARITY CARE", "FINANCIAL ASSISTANCE", "CH"),
    "bankruptcy": ("BANKRUPTCY", "BANKRUPT", "BK"),
    "deceased": ("DECEASED", "EXPIRED", "DEC"),
    "dispute": ("DISPUTE", "DISPUTED", "DSP"),
}
_MONEY_JUNK = re.compile(r"[\s,$]")
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]*")


# -- options ---------------------------------------------------------------------------------------


class Options:
    """Takes a plugin's options one by one and complains, in one ValueError, about the rest."""

    def __init__(self, plugin: str, options: dict) -> None:
        self.plugin = plugin
        self.options = dict(options)

    def _fail(self, key: str, reason: str) -> ValueError:
        return ValueError(f"{self.plugin}: option {key!r} {reason}")

    def path(self, key: str, default: str) -> HL7Path | None:
        """An HL7 path (``PV1.46``); "" turns the field off."""
        text = self.options.pop(key, default)
        if not isinstance(text, str):
            raise self._fail(key, "must be an HL7 path like \"PV1.46\" (or \"\" for none)")
        if not text.strip():
            return None
        try:
            return parse_path(text.strip())
        except ValueError as error:
            raise self._fail(key, f"is not valid: {error}") from None

    def paths(self, key: str, default: tuple[str, ...]) -> tuple[HL7Path, ...]:
        return tuple(parse_path(p) for p in self._strings(key, default, upper=False))

    def words(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        return self._strings(key, default, upper=True)

    def _strings(self, key: str, default, *, upper: bool) -> tuple[str, ...]:
        value = self.options.pop(key, default)
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "must be a list of strings")
        items = tuple(v.strip().upper() if upper else v.strip() for v in value if v.strip())
        if not upper:
            for item in items:
                try:
                    parse_path(item)
                except ValueError as error:
                    raise self._fail(key, f"holds an invalid path: {error}") from None
        return items

    def integer(self, key: str, default: int) -> int:
        value = self.options.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "must be a whole number, 0 or more")
        return value

    def money(self, key: str, default: str) -> Decimal:
        value = self.options.pop(key, default)
        amount = None if isinstance(value, bool) else to_decimal(value)
        if amount is None or amount < 0:
            raise self._fail(key, "must be an amount, 0 or more (25 or \"25.00\")")
        return amount

    def flag(self, key: str, default: bool) -> bool:
        value = self.options.pop(key, default)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false")
        return value

    def day(self, key: str) -> date | None:
        """A fixed date (YYYY-MM-DD or YYYYMMDD); "" or absent means today, every time."""
        value = self.options.pop(key, "")
        if not isinstance(value, str):
            raise self._fail(key, "must be a date like \"2024-06-30\" or \"\"")
        if not value.strip():
            return None
        parsed = parse_hl7_datetime(value.strip().replace("-", ""))
        if parsed is None or len(value.strip().replace("-", "")) != 8:
            raise self._fail(key, "must be a date like \"2024-06-30\" or \"\"")
        return parsed.date()

    def exclusions(self, key: str) -> dict[str, tuple[str, ...]]:
        """``exclude = { charity = [...], ... }``: given categories replace the defaults one by one."""
        value = self.options.pop(key, {})
        if not hasattr(value, "items"):
            raise self._fail(key, "must be a table of category = [terms], e.g. { charity = [\"CHARITY\"] }")
        merged = dict(EXCLUDE_DEFAULTS)
        for category, terms in value.items():
            if not _CATEGORY.fullmatch(category):
                raise self._fail(key, f"category {category!r} must be lower-case letters, digits, '-', '_'")
            if isinstance(terms, str) or not all(isinstance(t, str) for t in terms):
                raise self._fail(f"{key}.{category}", "must be a list of strings")
            merged[category] = tuple(t.strip().upper() for t in terms if t.strip())
        return merged

    def done(self) -> None:
        if self.options:
            raise ValueError(f"{self.plugin}: unknown option(s) {', '.join(sorted(self.options))}")


@dataclass(frozen=True)
class AccountOptions:
    """Where the account's facts live in the message (every key an option of the filters)."""

    paths: dict[str, HL7Path | None]
    service_date_fields: tuple[HL7Path, ...]
    charge_types: tuple[str, ...]
    payment_types: tuple[str, ...]
    adjustment_types: tuple[str, ...]
    pending_claim_values: tuple[str, ...]
    exclude: dict[str, tuple[str, ...]]

    @classmethod
    def take(cls, reader: Options) -> "AccountOptions":
        paths = {key: reader.path(key, default) for key, default in FIELD_DEFAULTS.items()}
        segments = {paths[key].segment for key in FIELD_DEFAULTS
                    if key.startswith("transaction_") and paths[key] is not None}
        if len(segments) > 1:
            raise ValueError(f"{reader.plugin}: the transaction_* fields must all name one segment "
                             f"(found {', '.join(sorted(segments))})")
        return cls(paths, reader.paths("service_date_fields", LIST_DEFAULTS["service_date_fields"]),
                   reader.words("charge_types", LIST_DEFAULTS["charge_types"]),
                   reader.words("payment_types", LIST_DEFAULTS["payment_types"]),
                   reader.words("adjustment_types", LIST_DEFAULTS["adjustment_types"]),
                   reader.words("pending_claim_values", LIST_DEFAULTS["pending_claim_values"]),
                   reader.exclusions("exclude"))

    def where(self, key: str) -> str:
        """The path as the analyst wrote it, for explanations."""
        return path_text(self.paths.get(key))


# -- reading ---------------------------------------------------------------------------------------


def path_text(path: HL7Path | None) -> str:
    if path is None:
        return "(off)"
    text = path.segment + (f"({path.segment_rep})" if path.segment_rep != 1 else "")
    for part, rep in ((path.field, path.field_rep), (path.component, None), (path.subcomponent, None)):
        if part is None:
            break
        text += f".{part}" + (f"({rep})" if rep else "")
    return text


def to_decimal(value: Any) -> Decimal | None:
    """A money amount, leniently; None when absent or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    text = _MONEY_JUNK.sub("", str(value))
    if text.startswith("(") and text.endswith(")"):
        text = "-" + text[1:-1]
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def to_date(value: str) -> date | None:
    parsed = parse_hl7_datetime(value or "")
    return parsed.date() if isinstance(parsed, datetime) else None


def money_text(amount: Decimal | None) -> str:
    return "" if amount is None else f"{amount.quantize(Decimal('0.01')):f}"


def read(view, path: HL7Path | None) -> str:
    return "" if path is None else view[path].strip()


def read_every(view, path: HL7Path | None) -> list[str]:
    """The field in every occurrence of its segment (IN1.32 of each insurance)."""
    if path is None:
        return []
    return [segment.lookup(path.field, path.field_rep, path.component, path.subcomponent).strip()
            for segment in view.segments(path.segment)]


@dataclass
class Transaction:
    day: date | None
    type: str
    amount: Decimal | None
    payer: str

    def as_dict(self) -> dict:
        return {"date": self.day.isoformat() if self.day else "", "type": self.type,
                "amount": money_text(self.amount), "payer": self.payer}


@dataclass
class Account:
    """What the filters decide on; ``as_dict`` is what templates see (strings, ISO dates)."""

    number: str = ""
    financial_class: str = ""
    status: str = ""
    death_indicator: str = ""
    balance: Decimal | None = None
    balance_source: str = ""
    charges: Decimal | None = None
    adjustments: Decimal | None = None
    payments: Decimal | None = None
    transactions: list[Transaction] = field(default_factory=list)
    oldest_unpaid: date | None = None
    oldest_unpaid_source: str = ""
    last_patient_payment: date | None = None
    claim_statuses: list[str] = field(default_factory=list)
    exclusions: list[tuple[str, str]] = field(default_factory=list)   # (category, where)

    def as_dict(self) -> dict:
        return {
            "account": self.number, "financial_class": self.financial_class,
            "account_status": self.status, "balance": money_text(self.balance),
            "charges": money_text(self.charges), "adjustments": money_text(self.adjustments),
            "payments": money_text(self.payments),
            "oldest_unpaid_date": self.oldest_unpaid.isoformat() if self.oldest_unpaid else "",
            "last_patient_payment_date": (self.last_patient_payment.isoformat()
                                          if self.last_patient_payment else ""),
            "transactions": [t.as_dict() for t in self.transactions],
            "exclusions": [category for category, _where in self.exclusions],
        }


def matches(value: str, term: str) -> bool:
    return bool(re.search(rf"(?<![A-Z0-9]){re.escape(term)}(?![A-Z0-9])", value.upper()))


def read_account(view, options: AccountOptions) -> Account:
    p = options.paths
    account = Account(read(view, p["account_field"]), read(view, p["financial_class_field"]),
                      read(view, p["account_status_field"]), read(view, p["death_indicator_field"]))
    account.transactions = _transactions(view, options)
    credit_types = options.payment_types + options.adjustment_types

    def total(types, magnitude: bool = True) -> Decimal | None:
        amounts = [abs(t.amount) if magnitude else t.amount
                   for t in account.transactions if t.type in types and t.amount is not None]
        return sum(amounts, Decimal(0)) if amounts else None

    fields = {key: to_decimal(read(view, p[key]))
              for key in ("balance_field", "charges_field", "adjustments_field", "payments_field")}
    account.charges = (fields["charges_field"] if fields["charges_field"] is not None
                       else total(options.charge_types, magnitude=False))
    account.adjustments = (abs(fields["adjustments_field"]) if fields["adjustments_field"] is not None
                           else total(options.adjustment_types))
    account.payments = (abs(fields["payments_field"]) if fields["payments_field"] is not None
                        else total(options.payment_types))
    if fields["balance_field"] is not None:
        account.balance, account.balance_source = fields["balance_field"], options.where("balance_field")
    elif fields["charges_field"] is not None:
        account.balance = account.charges - (account.adjustments or 0) - (account.payments or 0)
        account.balance_source = (f"{options.where('charges_field')} - {options.where('adjustments_field')}"
                                  f" - {options.where('payments_field')}")
    elif any(t.type in options.charge_types + credit_types for t in account.transactions):
        account.balance = (account.charges or 0) - (account.adjustments or 0) - (account.payments or 0)
        account.balance_source = f"{options.paths['transaction_amount_field'].segment} transactions"
    _oldest_unpaid(view, options, account)
    patient_payments = [t.day for t in account.transactions
                        if t.type in options.payment_types and not t.payer and t.day is not None]
    account.last_patient_payment = max(patient_payments, default=None)
    account.claim_statuses = read_every(view, p["claim_status_field"])
    for category, terms in options.exclude.items():
        for key in ("financial_class_field", "account_status_field"):
            value = read(view, p[key])
            if value and any(matches(value, term) for term in terms):
                account.exclusions.append((category, options.where(key)))
                break
    if "deceased" in options.exclude and account.death_indicator.upper() == "Y":
        if not any(category == "deceased" for category, _ in account.exclusions):
            account.exclusions.append(("deceased", options.where("death_indicator_field")))
    return account


def _transactions(view, options: AccountOptions) -> list[Transaction]:
    p = options.paths
    amount_path = p["transaction_amount_field"]
    if amount_path is None:
        return []

    def pick(segment, path):
        if path is None:
            return ""
        return segment.lookup(path.field, path.field_rep, path.component, path.subcomponent).strip()

    return [Transaction(to_date(pick(s, p["transaction_date_field"])),
                        pick(s, p["transaction_type_field"]).upper(),
                        to_decimal(pick(s, amount_path)), pick(s, p["transaction_payer_field"]))
            for s in view.segments(amount_path.segment)]


def _oldest_unpaid(view, options: AccountOptions, account: Account) -> None:
    """FIFO: credits pay the oldest charges first, so the unpaid ones are the newest."""
    if account.balance is None or account.balance <= 0:
        return
    candidates: list[tuple[date, str]] = []
    charges = sorted((t for t in account.transactions if t.type in options.charge_types
                      and t.day is not None and t.amount is not None and t.amount > 0),
                     key=lambda t: t.day, reverse=True)
    remaining = account.balance
    for charge in charges:
        candidates = [(charge.day, f"{options.where('transaction_date_field')} service date")]
        remaining -= charge.amount
        if remaining <= 0:
            break
    if remaining > 0:  # charges in this message do not explain the whole balance
        for path in options.service_date_fields:
            day = to_date(read(view, path))
            if day is not None:
                candidates.append((day, f"{path_text(path)} service date"))
                break
    statement = to_date(read(view, options.paths["statement_date_field"]))
    if statement is not None:
        candidates.append((statement, f"{options.where('statement_date_field')} statement date"))
    if candidates:
        account.oldest_unpaid, account.oldest_unpaid_source = min(candidates)
