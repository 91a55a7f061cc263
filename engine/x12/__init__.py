"""X12 (the revenue cycle's format): delimiters, envelope checks, the split into one message per
transaction set, a lazy path view with loops, and 999/TA1 acknowledgments (DESIGN §3.11).

A leaf layer: pure Python, no Twisted, no store, nothing else from ``engine`` imported.  The
typical use by a source::

    interchanges = parse_interchanges(raw)            # never raises on bad content
    for interchange in interchanges:
        messages = split_interchange(interchange)     # X12Transaction(text, meta, errors)
        answer = acknowledge(interchange, now=now)    # a 999 interchange, or a TA1
    view = X12View(messages[0].text); view['CLP.4']; view.loops('2100')

Sources use the one-call form, ``take(raw, now=now, claims=False)`` (``intake``): the accepted sets
(or 835 claims, ``split_claims``) to store, the answer, and why anything was refused.
"""

from engine.x12.ack import acknowledge, build_999, build_ta1, group_status, set_status
from engine.x12.delimiters import Delimiters, read_delimiters, split_segments
from engine.x12.envelope import (
    FunctionalGroup,
    Interchange,
    TransactionSet,
    parse_interchange,
    parse_interchanges,
)
from engine.x12.errors import GROUP, INTERCHANGE, SET, X12Error, X12SyntaxError
from engine.x12.loops import KNOWN_LOOPS, LOOPS
from engine.x12.intake import Intake, take
from engine.x12.split import (
    X12Transaction,
    split,
    split_claims,
    split_interchange,
    transaction_meta,
)
from engine.x12.view import SegmentView, X12View, parse_path

__all__ = [
    "GROUP", "INTERCHANGE", "KNOWN_LOOPS", "LOOPS", "SET",
    "Delimiters", "FunctionalGroup", "Intake", "Interchange", "SegmentView", "TransactionSet",
    "X12Error", "X12SyntaxError", "X12Transaction", "X12View",
    "acknowledge", "build_999", "build_ta1", "group_status", "parse_interchange",
    "parse_interchanges", "parse_path", "read_delimiters", "set_status", "split",
    "split_claims", "split_interchange", "split_segments", "take", "transaction_meta",
]
