"""The one error type of the X12 layer, shaped so an acknowledgment can be built from it.

Why one dataclass instead of an exception hierarchy: a broken interchange is data, not a crash.
The envelope reader collects every problem it finds (a 999 lists them all) and the caller decides
what to store and what to answer.  Each error already carries the X12 code its acknowledgment
needs, so ``ack`` only lays them out.

Privacy: ``reason`` names segment ids, positions and counts the reader computed, never an element
value (an 835 carries patient names and amounts).  Keep it so when adding errors.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERCHANGE = "interchange"  # answered by a TA1 (code: TA1-5 note code, X12 element 1 I18)
GROUP = "group"              # answered by AK9 (code: AK9-5.., element 716)
SET = "set"                  # answered by IK5 (code: IK5-2.., element 718) with optional IK3/IK4


@dataclass(frozen=True, slots=True)
class X12Error:
    """One problem found in an interchange.

    ``position`` is the segment's 1-based ordinal in the interchange (ISA = 1; 0 when the problem
    is not in one segment, e.g. the text ends early).  ``set_position`` is its ordinal inside its
    transaction set (ST = 1), as IK3-2 reports it.  ``element``/``component`` are 1-based, 0 when
    the problem is the segment as a whole.  ``segment_code`` (IK3-4, element 620) and
    ``element_code`` (IK4-3, element 621) are set when a 999 should point at the segment/element.
    ``reject`` False means the 999 says E (accepted with errors) instead of R for this problem.
    """

    level: str
    segment: str
    position: int
    code: str
    reason: str
    set_position: int = 0
    element: int = 0
    component: int = 0
    segment_code: str = ""
    element_code: str = ""
    reject: bool = True

    def __str__(self) -> str:
        return self.reason


class X12SyntaxError(ValueError):
    """Raised where reading cannot go on (an ISA whose delimiters cannot be read).

    Carries the ``X12Error`` so ``parse_interchange`` can turn it into a TA1 without a second code
    path; its message is the error's reason (segment and position only).
    """

    def __init__(self, error: X12Error):
        super().__init__(error.reason)
        self.error = error
