"""One message per transaction set, each still a valid interchange.

Why keep the envelope around each ST..SE: the delimiters live in the ISA, so a bare ST..SE cannot
be read alone, and a stored message that is itself an interchange can be replayed, re-split or
handed to any X12 tool (pyx12 included) as it is.  The message is the original ISA and GS, the
set's segments, and a GE/IEA rewritten for one set:

    ISA*...*000000101*0*P*:~
    GS*HP*ACMEHEALTH01*HOSPRECEIVER01*20250115*1430*101*X*005010X221A1~
    ST*835*0001~ ... SE*71*0001~
    GE*1*101~
    IEA*1*000000101~

ISA-13 and GS-06 are kept, so the identifiers in ``meta`` are the ones the text shows.  Segments
are written with the input's terminator and line break (``Delimiters.terminator``), so a
well-formed input comes out byte for byte as its own lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.x12.delimiters import read_delimiters, split_segments
from engine.x12.envelope import (
    FunctionalGroup,
    Interchange,
    TransactionSet,
    parse_interchanges,
)
from engine.x12.errors import X12Error


@dataclass(frozen=True, slots=True)
class X12Transaction:
    """One transaction set as a message: its text, envelope identifiers, and the errors that
    concern it (the interchange's, its group's and its own, in that order)."""

    text: str
    meta: dict[str, str]
    errors: tuple[X12Error, ...] = ()

    @property
    def accepted(self) -> bool:
        """True when the 999 accepts this set (IK5 A or E) and its group and interchange stand."""
        return not any(e.reject for e in self.errors)


def transaction_meta(interchange: Interchange, group: FunctionalGroup,
                     tset: TransactionSet) -> dict[str, str]:
    """The envelope identifiers of one set, keyed by segment and element number (no padding).

    ``isa6``/``isa8`` are the interchange sender/receiver without their fixed-width padding,
    ``isa13`` the interchange control number, ``isa15`` P (production) or T (test); ``gs1`` the
    functional id (HP, HC, HS, HB, FA), ``gs2``/``gs3`` the application sender/receiver, ``gs6``
    the group control number, ``gs8`` the version (005010X221A1); ``st1`` the set id (835),
    ``st2`` its control number, ``st3`` its implementation guide when given.
    """
    isa = interchange.isa
    return {
        "isa6": interchange.sender,
        "isa8": interchange.receiver,
        "isa13": interchange.control,
        "isa15": isa[15] if len(isa) > 15 else "",
        "gs1": group.functional_id,
        "gs2": group.sender,
        "gs3": group.receiver,
        "gs6": group.control,
        "gs8": group.version,
        "st1": tset.st1,
        "st2": tset.st2,
        "st3": tset.st3,
    }


def split_interchange(interchange: Interchange) -> list[X12Transaction]:
    """The sets of an already parsed interchange, in order; none when its ISA was unreadable."""
    d = interchange.delimiters
    if d is None:
        return []
    segments, term, sep = interchange.segments, d.terminator, d.element
    isa_line = segments[0] + term
    trailer_iea = f"IEA{sep}1{sep}{interchange.control}{term}"
    out = []
    for group in interchange.groups:
        head = isa_line + segments[group.first] + term
        tail = f"GE{sep}1{sep}{group.control}{term}{trailer_iea}"
        shared = (*interchange.errors, *group.errors)
        for tset in group.sets:
            body = term.join(segments[tset.first:tset.last + 1]) + term
            out.append(X12Transaction(head + body + tail,
                                      transaction_meta(interchange, group, tset),
                                      (*shared, *tset.errors)))
    return out


def split_claims(transaction: X12Transaction) -> list[X12Transaction]:
    """An accepted 835 set as one message per claim payment (CLP, loop 2100); other sets as they are.

    Why: the EHR posts a remittance claim by claim (one DFT^P03 per patient account), and a
    channel turns one message into one output.  Each claim's message is still a valid interchange
    read by the same paths: the original ISA and GS, ST, the set's header (BPR, TRN, the payer and
    payee loops: everything before the first LX), the LX of the claim's header loop, the claim's
    own loop (CLP with its CAS, NM1, DTM, SVC...), an SE counting these, GE and IEA as in
    ``split_interchange``.  PLB (provider-level adjustments) belongs to no claim and is left out.
    ``meta`` gains ``claim``: the claim's ordinal in its set, 1 up.
    """
    if transaction.meta.get("st1") != "835":
        return [transaction]
    d = read_delimiters(transaction.text)
    segments = split_segments(transaction.text, d)
    sep, term = d.element, d.terminator
    ids = [s.split(sep, 1)[0] for s in segments]
    try:
        st, se = ids.index("ST"), len(ids) - 1 - ids[::-1].index("SE")
    except ValueError:
        return [transaction]
    body = range(st + 1, se)
    first_loop = next((i for i in body if ids[i] in ("LX", "CLP")), se)
    header = segments[st:first_loop]
    claims, lx, current = [], None, None
    for i in range(first_loop, se):
        seg_id = ids[i]
        if seg_id == "LX":
            lx, current = segments[i], None
        elif seg_id == "CLP":
            current = ([lx] if lx else []) + [segments[i]]
            claims.append(current)
        elif seg_id == "PLB":
            current = None
        elif current is not None:
            current.append(segments[i])
    if not claims:
        return [transaction]
    st2 = transaction.meta.get("st2", "")
    envelope_head, envelope_tail = segments[:st], segments[se + 1:]
    out = []
    for number, claim in enumerate(claims, start=1):
        set_segments = header + claim
        se_line = f"SE{sep}{len(set_segments) + 1}{sep}{st2}"
        text = term.join([*envelope_head, *set_segments, se_line, *envelope_tail]) + term
        out.append(X12Transaction(text, {**transaction.meta, "claim": str(number)},
                                  transaction.errors))
    return out


def split(data: str | bytes) -> list[X12Transaction]:
    """Parse ``data`` (one or several interchanges) and split it into transaction sets.

    Broken input is split as far as it can be read; each message carries its errors, and the
    acknowledgment is built from the ``Interchange`` (``parse_interchanges``) the caller keeps.
    """
    return [t for interchange in parse_interchanges(data) for t in split_interchange(interchange)]
