"""``placement-rules``: does this account go to the collection agency, and which rule said so?

```toml
[[filter]]
use = "placement-rules"
min_age_days = 90          # since the oldest unpaid service (or statement) date; 0 turns aging off
min_balance = "25.00"      # patient balance at least this
require_adjudicated = true # no insurance claim pending (IN1-32 in pending_claim_values)
as_of = "${PLACEMENT_AS_OF:-}"   # a fixed "today" for repeatable dry runs in CI; "" = today
# every field is an option naming its HL7 path (v2.5 defaults): balance_field = "PV1.46", ...
```

The decision, in this order (the first rule that decides wins, so the reason is always one rule):

1. ``excluded-<category>``: never place when the financial class (PV1-20) or account status
   (PV1-41) says charity, bankruptcy, deceased or dispute (terms per category in ``exclude``), or
   the death indicator (PID-30) is Y.
2. ``no-balance`` / ``min-balance``: a patient balance must remain, at least ``min_balance``.
3. ``payment-plan-failed`` places at once (PV1-41 says the plan failed): no aging needed.
4. ``insurance-pending``: insurance has not adjudicated (a claim is pending): wait.
5. ``no-service-date`` / ``not-aged``: the oldest unpaid service or statement date is at least
   ``min_age_days`` old.
6. ``recent-payment``: no patient payment (FT1 PY without an insurance plan) within that time.
7. Otherwise ``aged``: placed.

Why the verdict comes in two shapes: ``reason`` (stored as an event, counted by ``switchboard
report``) names the rule and its thresholds only, never a value from the message, so it is safe in
the store and in logs; ``rules`` (printed by ``switchboard test`` to the analyst's own terminal,
never stored) shows every rule with the values it read, so an analyst can see why an account was
placed or kept back.

The filter also leaves what it read in the template context as ``placement`` (balance, charges,
payments, oldest unpaid date, age, the deciding rule...), so the placement template sends the
same balance the rules judged instead of recomputing it.  It is computed afresh on every run of
the pipeline (daemon, replay, dry run), from the raw message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from engine.hookspecs import hookimpl
from engine.core.plugins import load_sibling
from engine.core.pipeline import FilterResult, StageError


account = load_sibling(__file__, "_account")
PLAN_FAILED_DEFAULT = ("PAYMENT PLAN FAILED", "PLAN FAILED", "PLAN DEFAULT", "PPF")


@dataclass
class Verdict:
    placed: bool
    rule: str
    reason: str


class PlacementRules:
    """The filter; ``today`` is injectable for tests (``as_of`` is the analyst's way)."""

    def __init__(self, options: dict, today=date.today) -> None:
        reader = account.Options("placement-rules", options)
        self.fields = account.AccountOptions.take(reader)
        self.min_age_days = reader.integer("min_age_days", 90)
        self.min_balance = reader.money("min_balance", "25.00")
        self.require_adjudicated = reader.flag("require_adjudicated", True)
        self.plan_path = reader.path("payment_plan_field", "PV1.41")
        self.plan_failed_values = reader.words("payment_plan_failed_values", PLAN_FAILED_DEFAULT)
        as_of = reader.day("as_of")
        reader.done()
        self.today = (lambda: as_of) if as_of is not None else today
        self.name = "placement-rules"

    def check(self, message, context) -> FilterResult:
        if message.inbound != "hl7":
            raise StageError(f"placement-rules reads HL7 messages, not {message.inbound}")
        view = message.view
        facts = account.read_account(view, self.fields)
        today = self.today()
        rules, verdict = self.decide(view, facts, today)
        age = (today - facts.oldest_unpaid).days if facts.oldest_unpaid else None
        context["placement"] = dict(facts.as_dict(), placed=verdict.placed, rule=verdict.rule,
                                    age_days=age, as_of=today.isoformat())
        rules.append(f"=> {'PLACED' if verdict.placed else 'SKIPPED'} by rule {verdict.rule}")
        return FilterResult(verdict.placed, verdict.reason, rules)

    # -- the rules ---------------------------------------------------------------------------

    def decide(self, view, facts, today: date) -> tuple[list[str], Verdict]:
        """Explain every rule (values included), then let the first deciding one give the verdict."""
        where = self.fields.where
        rules, verdicts = [], []
        if facts.exclusions:
            found = ", ".join(f"{category} (in {place})" for category, place in facts.exclusions)
            rules.append(f"exclusions: {found}")
            category = facts.exclusions[0][0]
            verdicts.append(self.skip(f"excluded-{category}", "the financial class, account status or "
                                      f"death indicator says {category}"))
        else:
            rules.append(f"exclusions: none (financial class {facts.financial_class!r} in "
                         f"{where('financial_class_field')}, account status {facts.status!r} in "
                         f"{where('account_status_field')}, death indicator "
                         f"{facts.death_indicator!r} in {where('death_indicator_field')})")
        rules.append(self.explain_balance(facts))
        if facts.balance is None or facts.balance <= 0:
            verdicts.append(self.skip("no-balance", "no patient balance remains"))
        elif facts.balance < self.min_balance:
            verdicts.append(self.skip("min-balance", f"the patient balance is below {self.min_balance}"))
        plan_value = account.read(view, self.plan_path)
        failed = bool(plan_value) and any(account.matches(plan_value, t) for t in self.plan_failed_values)
        rules.append(f"payment plan: {'FAILED' if failed else 'not failed'} ({plan_value!r} in "
                     f"{account.path_text(self.plan_path)})")
        if failed:
            verdicts.append(Verdict(True, "payment-plan-failed",
                                    "payment-plan-failed: the payment plan failed"))
        rules.append(self.explain_insurance(facts))
        if self.require_adjudicated and self.pending(facts):
            verdicts.append(self.skip("insurance-pending", "an insurance claim is still pending"))
        rules.append(self.explain_age(facts, today))
        if self.min_age_days:
            if facts.oldest_unpaid is None:
                verdicts.append(self.skip("no-service-date",
                                          "no unpaid service or statement date to age from"))
            elif (today - facts.oldest_unpaid).days < self.min_age_days:
                verdicts.append(self.skip("not-aged", "the oldest unpaid service or statement is "
                                          f"under {self.min_age_days} days old"))
        rules.append(self.explain_payments(facts, today))
        last = facts.last_patient_payment
        if self.min_age_days and last is not None and (today - last).days < self.min_age_days:
            verdicts.append(self.skip("recent-payment",
                                      f"the patient paid within the last {self.min_age_days} days"))
        verdicts.append(Verdict(True, "aged", f"aged: {self.min_age_days}+ days unpaid, balance at "
                                f"least {self.min_balance}, no claim pending, no recent patient payment"))
        return rules, verdicts[0]

    @staticmethod
    def skip(rule: str, why: str) -> Verdict:
        return Verdict(False, rule, f"{rule}: {why}")

    def pending(self, facts) -> list[str]:
        return [s for s in facts.claim_statuses
                if s and any(account.matches(s, term) for term in self.fields.pending_claim_values)]

    def explain_balance(self, facts) -> str:
        if facts.balance is None:
            return (f"balance: unknown (nothing in {self.fields.where('balance_field')}, "
                    f"{self.fields.where('charges_field')} or the transactions)")
        verdict = "ok" if facts.balance >= self.min_balance and facts.balance > 0 else "too low"
        return (f"balance: {account.money_text(facts.balance)} from {facts.balance_source}; "
                f"min_balance {self.min_balance} -> {verdict}")

    def explain_insurance(self, facts) -> str:
        where = self.fields.where("claim_status_field")
        if not self.require_adjudicated:
            return "insurance: not checked (require_adjudicated = false)"
        if not facts.claim_statuses:
            return f"insurance: no {where.split('.')[0]} segment (self-pay) -> ok"
        pending = self.pending(facts)
        shown = ", ".join(repr(s) for s in facts.claim_statuses)
        return (f"insurance: {len(pending)} of {len(facts.claim_statuses)} claim(s) pending "
                f"({shown} in {where}) -> {'wait' if pending else 'adjudicated'}")

    def explain_age(self, facts, today: date) -> str:
        if facts.oldest_unpaid is None:
            return "age: no unpaid service or statement date found"
        days = (today - facts.oldest_unpaid).days
        verdict = "ok" if days >= self.min_age_days else "too recent"
        return (f"age: oldest unpaid {facts.oldest_unpaid.isoformat()} ({facts.oldest_unpaid_source}),"
                f" {days} days as of {today.isoformat()}; min_age_days {self.min_age_days} -> {verdict}")

    def explain_payments(self, facts, today: date) -> str:
        last = facts.last_patient_payment
        if last is None:
            return "patient payments: none in the transactions -> ok"
        days = (today - last).days
        verdict = "recent" if days < self.min_age_days else "ok"
        return f"patient payments: last on {last.isoformat()}, {days} days ago -> {verdict}"


@hookimpl
def register_filters():
    return {"placement-rules": PlacementRules}
