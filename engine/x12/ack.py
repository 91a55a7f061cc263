"""Acknowledgments of an interchange: 999 per functional group, TA1 for the interchange.

``acknowledge(interchange, now=...)`` answers one received interchange with one interchange:

- interchange readable: a 999 (005010X231A1) for each functional group, all in one FA group,
  preceded by a TA1 ``A``/``000`` when the sender asked for one (ISA-14 = 1);
- not readable (an interchange-level error: ISA, IEA, content outside a group): a TA1 alone,
  ``R`` with the note code of the first such error, and no 999 (its groups cannot be trusted).

Inside a 999: AK1 names the group (GS-01, GS-06, GS-08); per set an AK2 (ST-01, ST-02, ST-03),
an IK3 (segment id, position in the set with ST = 1, error code 620) and IK4 (element[:component]
position, error code 621) for each error that points at a segment, then IK5: A (no error),
E (only errors that do not reject), R (any that does), with up to five 718 codes.  AK9: R when the
group has a rejecting error (GE missing, GE-01/GE-02 wrong) or no set is accepted, P when some
are, E when all are but with notes, else A; then GE-01 as received (the sets counted when it is
missing), the sets received and accepted, and up to five 716 codes.  IK4-4 (a copy of the bad
value) and CTX are never written: no element value leaves the reader.

Control numbers: the answer's ISA-13 (and, without leading zeros, its GS-06) is ``control`` when
given, else the received ISA-13, so acknowledging the same input twice gives the same text (a
replay or a retried write cannot produce a second number).  When the received ISA-13 cannot be
read it is a CRC of the input.  Each 999's ST-02 is its ordinal, 0001 up.  Sender and receiver
are swapped from the input; delimiters are the input's (the defaults ``* : ^ ~`` when its ISA
could not be read).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime

from engine.x12.delimiters import Delimiters
from engine.x12.envelope import FunctionalGroup, Interchange, TransactionSet
from engine.x12.errors import X12Error

IMPLEMENTATION_999 = "005010X231A1"


def _control(interchange: Interchange, control: str | int | None) -> str:
    if control is not None:
        value = str(control)
        if not value.isdigit() or len(value) > 9:
            raise ValueError("an interchange control number is at most nine digits")
        return value.zfill(9)
    received = interchange.control
    if received.isdigit() and len(received) == 9:
        return received
    return f"{zlib.crc32(interchange.text.encode('latin-1', 'replace')) % 10**9:09d}"


def _fixed(value: str, width: int) -> str:
    return value[:width].ljust(width)


def _isa(interchange: Interchange, d: Delimiters, control: str, now: datetime) -> str:
    isa = interchange.isa + ("",) * (17 - len(interchange.isa))
    e = d.element
    fields = (
        "00", " " * 10, "00", " " * 10,
        _fixed(isa[7] or "ZZ", 2), _fixed(isa[8], 15),   # we answer as the receiver
        _fixed(isa[5] or "ZZ", 2), _fixed(isa[6], 15),
        now.strftime("%y%m%d"), now.strftime("%H%M"),
        d.repetition or "^", "00501", control, "0", (isa[15] or "P")[:1], d.component,
    )
    return "ISA" + e + e.join(fields)


def _codes(errors: Iterable[X12Error]) -> list[str]:
    """Up to five distinct codes, rejecting errors first (the element repeats five times)."""
    errors = sorted(errors, key=lambda err: not err.reject)
    out: list[str] = []
    for err in errors:
        if err.code and err.code not in out:
            out.append(err.code)
    return out[:5]


def set_status(tset: TransactionSet) -> str:
    """IK5-1: A, E or R."""
    if not tset.errors:
        return "A"
    return "R" if any(e.reject for e in tset.errors) else "E"


def group_status(group: FunctionalGroup) -> str:
    """AK9-1: A, E, P or R."""
    statuses = [set_status(t) for t in group.sets]
    accepted = sum(s != "R" for s in statuses)
    if any(e.reject for e in group.errors) or (statuses and not accepted):
        return "R"
    if accepted < len(statuses):
        return "P"
    if group.errors or "E" in statuses:
        return "E"
    return "A"


def _999_body(group: FunctionalGroup, e: str, c: str) -> list[str]:
    """The segments between ST and SE of the 999 for one group."""
    out = [e.join(("AK1", group.functional_id, group.control, group.version))]
    for tset in group.sets:
        ak2 = ["AK2", tset.st1, tset.st2] + ([tset.st3] if tset.st3 else [])
        out.append(e.join(ak2))
        for err in tset.errors:
            if not err.segment_code:
                continue
            out.append(e.join(("IK3", err.segment, str(err.set_position), "", err.segment_code)))
            if err.element_code and err.element:
                where = str(err.element) + (f"{c}{err.component}" if err.component else "")
                out.append(e.join(("IK4", where, "", err.element_code)))
        out.append(e.join(("IK5", set_status(tset), *_codes(tset.errors))))
    accepted = sum(set_status(t) != "R" for t in group.sets)
    included = group.ge_count if group.ge_count is not None else len(group.sets)
    out.append(e.join(("AK9", group_status(group), str(included), str(len(group.sets)),
                       str(accepted), *_codes(group.errors))))
    return out


def build_999(interchange: Interchange, groups: Iterable[FunctionalGroup] | None = None, *,
              now: datetime, control: str | int | None = None) -> str:
    """An interchange holding one 999 per group (default: every group of ``interchange``)."""
    d = interchange.delimiters or Delimiters()
    e, term = d.element, d.terminator
    ctl = _control(interchange, control)
    groups = list(interchange.groups if groups is None else groups)
    segments = [_isa(interchange, d, ctl, now)]
    if interchange.isa[14:15] == ("1",):
        segments.append(_ta1(interchange, e, "A", "000"))
    first = groups[0] if groups else None
    gs6 = str(int(ctl))
    segments.append(e.join(("GS", "FA", first.receiver if first else interchange.receiver,
                            first.sender if first else interchange.sender, now.strftime("%Y%m%d"),
                            now.strftime("%H%M"), gs6, "X", IMPLEMENTATION_999)))
    for n, group in enumerate(groups, 1):
        st2 = f"{n:04d}"
        body = _999_body(group, e, d.component)
        segments.append(e.join(("ST", "999", st2, IMPLEMENTATION_999)))
        segments.extend(body)
        segments.append(e.join(("SE", str(len(body) + 2), st2)))
    segments.append(e.join(("GE", str(len(groups)), gs6)))
    segments.append(e.join(("IEA", "1", ctl)))
    return term.join(segments) + term


def _ta1(interchange: Interchange, e: str, status: str, note: str) -> str:
    isa = interchange.isa + ("",) * (17 - len(interchange.isa))
    received = isa[13] if isa[13].isdigit() and len(isa[13]) == 9 else "000000000"
    date = isa[9] if len(isa[9]) == 6 and isa[9].isdigit() else "000000"
    time = isa[10] if len(isa[10]) == 4 and isa[10].isdigit() else "0000"
    return e.join(("TA1", received, date, time, status, note))


def build_ta1(interchange: Interchange, *, now: datetime,
              control: str | int | None = None) -> str:
    """An interchange holding only a TA1: R with the first interchange error's note code, or
    A/000 when the interchange has none."""
    d = interchange.delimiters or Delimiters()
    e, term = d.element, d.terminator
    ctl = _control(interchange, control)
    if interchange.errors:
        status, note = "R", interchange.errors[0].code
    else:
        status, note = "A", "000"
    segments = [_isa(interchange, d, ctl, now), _ta1(interchange, e, status, note),
                e.join(("IEA", "0", ctl))]
    return term.join(segments) + term


def acknowledge(interchange: Interchange, *, now: datetime,
                control: str | int | None = None) -> str:
    """The answer to one received interchange: 999s when it can be read, else a TA1."""
    if not interchange.readable:
        return build_ta1(interchange, now=now, control=control)
    return build_999(interchange, now=now, control=control)
