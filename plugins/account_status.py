"""``account-status``: an account event in the EHR that the collection agency must hear about.

```toml
[[filter]]
use = "account-status"
# recall_on = ["charity", "bankruptcy", "deceased", "dispute", "closed", "zero-balance"]
# adjust_on = ["insurance-payment", "adjustment"]          # add "patient-payment" if wanted
# closed_types = ["BAR^P06"]                               # end of account
# closed_values = ["CLOSED", "PAID IN FULL", "ZERO BALANCE"]   # in the account status (PV1-41)
# and every field option of placement-rules (financial_class_field, exclude = {...}, ...)
```

Passes a message only when it is one of these events, the first that applies:

* **recall** (stop collecting): the financial class or account status says charity (charity care
  approved), bankruptcy, deceased or dispute, or the death indicator is Y (the same ``exclude``
  terms as placement-rules); the account was closed (``closed_types`` such as BAR^P06, or the
  account status says closed); or an adjustment left no balance (``zero-balance``).
* **adjust** (the balance changed): an insurance payment was posted (a payment-type FT1 naming an
  insurance plan in FT1-14), the balance was adjusted (an AJ FT1), or, when asked for, the patient
  paid the hospital directly.

Anything else is FILTERED (``no-status-change``).  As in placement-rules the stored ``reason``
names the rule only (``recall-charity``, ``adjust-insurance-payment``), the ``rules`` shown by
``switchboard test`` carry the values read, and the decision is left in the template context as
``account_event`` (action, reason, balance, the transactions that triggered it) for the JSON
template.  A payment the agency itself posted back (see agency-payments) is recognised by its
FT1-3 batch id ``agency_batch_id`` and ignored, so it is not echoed to the agency as an
adjustment of its own payment.
"""

from __future__ import annotations


from engine.hookspecs import hookimpl
from engine.core.plugins import load_sibling
from engine.core.pipeline import FilterResult, StageError


account = load_sibling(__file__, "_account")
ADJUST_KINDS = ("insurance-payment", "adjustment", "patient-payment")


class AccountStatus:
    def __init__(self, options: dict) -> None:
        reader = account.Options("account-status", options)
        self.fields = account.AccountOptions.take(reader)
        recall_known = (*self.fields.exclude, "closed", "zero-balance")
        self.recall_on = self._choose(reader, "recall_on", recall_known, recall_known)
        self.adjust_on = self._choose(reader, "adjust_on", ADJUST_KINDS, ("insurance-payment", "adjustment"))
        self.closed_types = reader.words("closed_types", ("BAR^P06",))
        self.closed_values = reader.words("closed_values", ("CLOSED", "PAID IN FULL", "ZERO BALANCE"))
        self.batch_path = reader.path("transaction_batch_field", "FT1.3")
        self.agency_batch = reader.words("agency_batch_id", ("AGENCY",))
        reader.done()
        self.name = "account-status"

    @staticmethod
    def _choose(reader, key: str, known, default) -> tuple[str, ...]:
        value = reader.options.pop(key, default)
        if isinstance(value, str) or not all(isinstance(v, str) and v in known for v in value):
            raise ValueError(f"account-status: {key} must be a list drawn from {', '.join(known)}")
        return tuple(value)

    def check(self, message, context) -> FilterResult:
        if message.inbound != "hl7":
            raise StageError(f"account-status reads HL7 messages, not {message.inbound}")
        view = message.view
        facts = account.read_account(view, self.fields)
        rules: list[str] = []
        action, rule, triggers = self.decide(view, message.message_type.upper(), facts, rules)
        context["account_event"] = dict(facts.as_dict(), action=action or "", reason=rule,
                                        triggers=[t.as_dict() for t in triggers])
        if action is None:
            rules.append("=> SKIPPED: no recall or adjustment event")
            return FilterResult(False, "no-status-change: no recall or adjustment event", rules)
        rules.append(f"=> {action.upper()} ({rule})")
        return FilterResult(True, f"{action}-{rule}: {self.describe(action, rule)}", rules)

    def decide(self, view, message_type: str, facts, rules: list[str]):
        recalls = [category for category, _place in facts.exclusions if category in self.recall_on]
        rules.append("exclusions: " + (", ".join(f"{c} (in {p})" for c, p in facts.exclusions) or "none")
                     + f" (financial class {facts.financial_class!r}, account status {facts.status!r})")
        if recalls:
            return "recall", recalls[0], []
        closed_by_type = message_type in self.closed_types
        closed_by_status = bool(facts.status) and any(account.matches(facts.status, v)
                                                      for v in self.closed_values)
        rules.append(f"closed: {'yes' if closed_by_type or closed_by_status else 'no'} (type "
                     f"{message_type or '(none)'}, account status {facts.status!r})")
        if "closed" in self.recall_on and (closed_by_type or closed_by_status):
            return "recall", "closed", []
        kinds = self.classify(view, facts)
        for kind, items in kinds.items():
            shown = ", ".join(f"{t.day or 'no date'} {account.money_text(t.amount)}" for t in items)
            rules.append(f"{kind}: {shown or 'none'}{'' if kind in self.adjust_on else ' (not asked for)'}")
        wanted = [(kind, items) for kind, items in kinds.items() if items and kind in self.adjust_on]
        if not wanted:
            return None, "no-status-change", []
        triggers = [t for _kind, items in wanted for t in items]
        rules.append(f"balance: {account.money_text(facts.balance) or 'unknown'}"
                     f"{' from ' + facts.balance_source if facts.balance_source else ''}")
        if "zero-balance" in self.recall_on and facts.balance is not None and facts.balance <= 0:
            return "recall", "zero-balance", triggers
        return "adjust", wanted[0][0], triggers

    def classify(self, view, facts) -> dict[str, list]:
        """Transactions by kind, leaving out the agency's own payments (FT1-3 batch id)."""
        segments = view.segments(self.fields.paths["transaction_amount_field"].segment) \
            if self.fields.paths["transaction_amount_field"] else []
        kinds: dict[str, list] = {kind: [] for kind in ADJUST_KINDS}
        for segment, transaction in zip(segments, facts.transactions):
            batch = ""
            if self.batch_path is not None:
                batch = segment.lookup(self.batch_path.field, self.batch_path.field_rep,
                                       self.batch_path.component, self.batch_path.subcomponent).strip()
            if batch.upper() in self.agency_batch:
                continue
            if transaction.type in self.fields.adjustment_types:
                kinds["adjustment"].append(transaction)
            elif transaction.type in self.fields.payment_types:
                kinds["insurance-payment" if transaction.payer else "patient-payment"].append(transaction)
        return kinds

    @staticmethod
    def describe(action: str, rule: str) -> str:
        if rule == "closed":
            return "the account was closed"
        if rule == "zero-balance":
            return "no balance remains"
        if action == "recall":
            return f"the financial class, account status or death indicator says {rule}"
        return {"insurance-payment": "an insurance payment was posted",
                "adjustment": "the balance was adjusted",
                "patient-payment": "the patient paid the hospital"}[rule]


@hookimpl
def register_filters():
    return {"account-status": AccountStatus}
