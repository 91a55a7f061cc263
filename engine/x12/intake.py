"""What a source does with received X12 bytes: the messages to store, the answer, the refusals.

One function, ``take``, shared by the file, SFTP and HTTP sources so that one interchange means
the same messages and the same 999 whichever way it arrived:

- every interchange in the bytes is read (``parse_interchanges``); an unreadable one (a broken
  ISA, IEA-02 not ISA-13, content outside a group...) gives nothing to store and is answered by a
  TA1 ``R``;
- a readable one is split into one message per transaction set (or, with ``claims=True``, per
  claim payment of an 835: ``split_claims``); only the sets its 999 accepts (IK5 A or E, in a
  group that is not rejected) are stored -- a set the 999 rejects is the sender's to fix and send
  again, so storing it would process what the receiver just said it did not take;
- the answer is one acknowledgment interchange per received interchange (``acknowledge``), joined.

Reasons name segments, positions and control numbers, never element values (``errors``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine.x12.ack import acknowledge
from engine.x12.envelope import parse_interchanges
from engine.x12.split import X12Transaction, split_claims, split_interchange


@dataclass
class Intake:
    """``messages``: what to store, in order.  ``answer``: the 999s/TA1s.  ``refused``: one
    PHI-free sentence per interchange or transaction set not taken."""

    messages: list[X12Transaction] = field(default_factory=list)
    answer: str = ""
    refused: list[str] = field(default_factory=list)

    @property
    def problem(self) -> str | None:
        """Why nothing is stored (the file's ``.reason``, the HTTP error), or None."""
        if self.messages:
            return None
        if self.refused:
            return "; ".join(self.refused[:5]) + (f" (and {len(self.refused) - 5} more)"
                                                  if len(self.refused) > 5 else "")
        return "the interchange holds no transaction set"


def take(data: str | bytes, *, now: datetime, claims: bool = False) -> Intake:
    """Read ``data`` (one or more interchanges); see the module docstring."""
    intake = Intake()
    answers = []
    for number, interchange in enumerate(parse_interchanges(data), start=1):
        answers.append(acknowledge(interchange, now=now))
        if not interchange.readable:
            error = interchange.errors[0]
            intake.refused.append(f"interchange {number} rejected (TA1 R, note {error.code}): "
                                  f"{error.reason}")
            continue
        for transaction in split_interchange(interchange):
            if transaction.accepted:
                intake.messages.extend(split_claims(transaction) if claims else [transaction])
                continue
            meta = transaction.meta
            reasons = "; ".join(str(e) for e in transaction.errors if e.reject) or "rejected"
            intake.refused.append(f"transaction set {meta['st1']} {meta['st2']} of group "
                                  f"{meta['gs6']} rejected (999 IK5 R): {reasons}")
    intake.answer = "".join(answers)
    return intake
