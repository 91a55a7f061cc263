"""``remittance-claim``: one claim payment of a payer's 835, read for the EHR and the agency.

```toml
[[filter]]
use = "remittance-claim"
# recall_when_paid_in_full = true     # insurance paid and nothing is left to the patient -> recall
```

The channel splits each 835 into one message per claim payment (``split = "claims"``), so this
filter reads exactly one CLP loop (2100).  It never drops money: a message without a claim is
FILTERED (``no-claim``), and one with more than one is an ERROR telling the analyst to split by
claim.  It leaves ``remittance`` in the template context:

* ``account`` (CLP-01, the hospital's patient control number), ``status`` (CLP-02),
  ``status_text``, ``reversal`` (CLP-02 = 22), ``denied`` (CLP-02 = 4), ``payer_claim`` (CLP-07);
* money as strings with two decimals, signed as the 835 signs them: ``charge`` (CLP-03), ``paid``
  (CLP-04), ``patient_responsibility`` (CLP-05), and ``adjustments``: every CAS triple of the
  claim and of its service lines (group, reason, amount, ``level`` claim or line), in order;
  ``paid_credit`` and each adjustment's ``credit`` are the same amounts negated, as the EHR
  posts them (a payment credits the account; a reversal's negative payment debits it again);
* ``payer`` (N1*PR name and id), ``trace`` (TRN-02, the check or EFT number), ``paid_on`` (BPR-16,
  else DTM*405), ``service_from`` (DTM*232, else the first line's DTM*472), ``member_id``
  (NM1*QC-09);
* ``agency_action`` and ``agency_reason``: what the agency must hear if the account is placed
  with it -- ``recall``/``insurance-paid`` when insurance paid and nothing is left to the patient,
  ``adjust``/``insurance-payment`` when insurance paid part, ``adjust``/``insurance-reversal`` for
  a reversal (the balance goes back up); none for a denial or a claim that paid nothing.

Whether the account *is* placed is the channel's decision (a ``when`` on the agency destination,
reading the ``placed_accounts`` code table), so this filter stays a pure reading of the 835.
``switchboard test`` shows the rules with the amounts read; the stored reason names the claim
status code only (no account, no amount).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from engine.core.pipeline import FilterResult, StageError
from engine.hookspecs import hookimpl

CENTS = Decimal("0.01")
# CLP-02, claim status codes (X12 element 1029) as the 835 guide lists them.
CLAIM_STATUS = {
    "1": "processed as primary", "2": "processed as secondary", "3": "processed as tertiary",
    "4": "denied", "19": "processed as primary, forwarded", "20": "processed as secondary, forwarded",
    "21": "processed as tertiary, forwarded", "22": "reversal of previous payment",
    "23": "not our claim, forwarded", "25": "predetermination pricing only",
}


def money(value: str) -> Decimal | None:
    try:
        return Decimal(value.strip()).quantize(CENTS) if value.strip() else None
    except InvalidOperation:
        return None


def _text(amount: Decimal | None) -> str:
    return "" if amount is None else f"{amount:.2f}"


def cas_triples(segment) -> list[dict]:
    """(group, reason, amount) of each CAS reason triple: elements 2-4, 5-7 ... 17-19."""
    group, out = segment["1"], []
    for first in range(2, 20, 3):
        reason, amount = segment[str(first)], money(segment[str(first + 1)])
        if reason and amount is not None:
            out.append({"group": group, "reason": reason, "amount": _text(amount), "credit": _text(-amount)})
    return out


class RemittanceClaim:
    def __init__(self, options: dict) -> None:
        options = dict(options)
        self.recall_in_full = bool(options.pop("recall_when_paid_in_full", True))
        if options:
            raise ValueError(f"remittance-claim: unknown option(s) {', '.join(sorted(options))}")
        self.name = "remittance-claim"

    def check(self, message, context) -> FilterResult:
        if message.inbound != "x12":
            raise StageError(f"remittance-claim reads X12 835 messages, not {message.inbound}")
        view = message.view
        if view.set_id != "835":
            raise StageError(f"remittance-claim reads 835 remittances, not a {view.set_id or 'non-X12'} set")
        claims = view.loops("2100")
        if not claims:
            return FilterResult(False, "no-claim: the remittance holds no claim payment (CLP)")
        if len(claims) > 1:
            raise StageError(f"remittance-claim reads one claim per message; this one holds {len(claims)}: "
                             'set split = "claims" on the source')
        facts, rules = self.read(view, claims[0])
        context["remittance"] = facts
        return FilterResult(True, f"claim-status-{facts['status'] or 'missing'}", rules)

    def read(self, view, claim) -> tuple[dict, list[str]]:
        status = claim["CLP.2"]
        charge, paid, patient = (money(claim[p]) for p in ("CLP.3", "CLP.4", "CLP.5"))
        adjustments = [dict(t, level="claim") for seg in claim.segments("CAS") if _claim_level(claim, seg)
                       for t in cas_triples(seg)]
        for line in claim.loops("2110"):
            adjustments += [dict(t, level="line") for seg in line.segments("CAS") for t in cas_triples(seg)]
        payers = view.loops("1000A")
        payer = payers[0] if payers else view
        lines = claim.loops("2110")
        facts = {
            "account": claim["CLP.1"], "status": status, "status_text": CLAIM_STATUS.get(status, "unknown"),
            "reversal": status == "22", "denied": status == "4", "payer_claim": claim["CLP.7"],
            "charge": _text(charge), "paid": _text(paid), "patient_responsibility": _text(patient),
            "paid_credit": _text(None if paid is None else -paid),
            "adjustments": adjustments,
            "payer": {"name": payer["N1.2"], "id": payer["N1.4"] or _ref(payer, "2U")},
            "trace": view["TRN.2"], "paid_on": view["BPR.16"] or _dtm(view, "405"),
            "service_from": _dtm(claim, "232") or (_dtm(lines[0], "472") if lines else ""),
            "member_id": _nm1(claim, "QC", "9"),
        }
        facts["agency_action"], facts["agency_reason"] = self.agency(status, paid, patient)
        total = sum((Decimal(a["amount"]) for a in adjustments), Decimal(0))
        balanced = charge is not None and paid is not None and charge - paid == total
        rules = [
            f"claim {facts['account']!r}: CLP-02 {status} ({facts['status_text']})",
            f"charge {facts['charge']}, paid {facts['paid']}, patient responsibility {facts['patient_responsibility']}",
            f"adjustments: {len(adjustments)} totalling {total:.2f} "
            f"({'balances' if balanced else 'does NOT balance'} charge - paid)",
            f"agency: {facts['agency_action'] or 'nothing to tell'}"
            + (f" ({facts['agency_reason']}) if the account is placed" if facts["agency_action"] else ""),
        ]
        return facts, rules

    def agency(self, status: str, paid: Decimal | None, patient: Decimal | None) -> tuple[str, str]:
        if status == "22":
            return "adjust", "insurance-reversal"
        if status == "4" or paid is None or paid <= 0:
            return "", ""
        if self.recall_in_full and (patient is None or patient <= 0):
            return "recall", "insurance-paid"
        return "adjust", "insurance-payment"


def _claim_level(claim, segment) -> bool:
    """A CAS before the first SVC belongs to the claim; the later ones to their service line."""
    ids = claim.segment_ids()
    first_svc = ids.index("SVC") if "SVC" in ids else len(ids)
    return any(s is segment for s in claim.segments()[:first_svc])


def _dtm(view, qualifier: str) -> str:
    for segment in view.segments("DTM"):
        if segment["1"] == qualifier:
            return segment["2"]
    return ""


def _ref(view, qualifier: str) -> str:
    for segment in view.segments("REF"):
        if segment["1"] == qualifier:
            return segment["2"]
    return ""


def _nm1(view, entity: str, element: str) -> str:
    for segment in view.segments("NM1"):
        if segment["1"] == entity:
            return segment[element]
    return ""


@hookimpl
def register_filters():
    return {"remittance-claim": RemittanceClaim}
