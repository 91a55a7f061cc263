"""Read an interchange's envelopes (ISA/IEA, GS/GE, ST/SE) and check them.

One pass over the segments: the text is split once on the terminator, each segment's id is read,
and only envelope segments (ISA, GS, ST, SE, GE, IEA) are split into elements.  The body of a
transaction set is not looked at beyond its segment ids, which is what keeps the hot path cheap.

What is checked, and at which level the problem is answered (see ``errors``):

- interchange (TA1): the ISA's delimiters and width, ISA-13 nine digits, IEA present, IEA-1 = the
  number of groups, IEA-2 = ISA-13, no segment outside a group (TA1 aside) or after IEA, the
  envelope segments themselves free of non-ASCII bytes and missing terminators.
  ``Interchange.readable`` is then False.
- group (AK9): GE present, GE-1 = the number of sets, GE-2 = GS-6.
- set (IK5, with IK3/IK4 when one segment is to blame): SE present, SE-1 = the segments from ST to
  SE inclusive, SE-2 = ST-2, ST-1 and ST-2 present, ST-2 unique in its group; inside the set a
  segment id that is not 2-3 upper-case letters or digits, a non-ASCII byte, a missing terminator.

A missing terminator can only be seen where the sender put a line break after each terminator
(``CLP*...\\nCAS*...`` with no ``~``) or at the very end of the text; the reader then splits at the
line break, so the positions of later segments stay right, and reports the segment.  Without line
breaks two segments silently merge; the SE count then no longer matches and that is reported.

Bytes are decoded as Latin-1 so that every byte is one character: positions stay byte positions
and a non-ASCII byte is seen as such instead of failing to decode.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache

from engine.x12.delimiters import (
    ISA_LENGTH,
    ISA_SEPARATORS,
    Delimiters,
    isa_start,
    read_delimiters,
)
from engine.x12.errors import GROUP, INTERCHANGE, SET, X12Error, X12SyntaxError

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{1,2}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ENVELOPE = frozenset(("ISA", "GS", "GE", "IEA"))
_EVENTS = frozenset(("ISA", "GS", "ST", "SE", "GE", "IEA", "TA1"))
_BREAKS = "\r\n"


@dataclass(slots=True)
class TransactionSet:
    """One ST..SE.  ``first``/``last`` index ``Interchange.segments`` (ST and SE, inclusive; when
    SE is missing, ``last`` is the set's last segment)."""

    st1: str
    st2: str
    st3: str
    first: int
    last: int = -1
    errors: list[X12Error] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """No error that rejects the set (an IK5 of A or E)."""
        return not any(e.reject for e in self.errors)

    @property
    def segment_count(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class FunctionalGroup:
    """One GS..GE: its GS elements (``gs[1]`` is GS-01), its sets, and group-level errors."""

    gs: tuple[str, ...]
    first: int
    last: int = -1
    sets: list[TransactionSet] = field(default_factory=list)
    ge_count: int | None = None  # GE-01 as a number; None when GE is missing or GE-01 is not one
    errors: list[X12Error] = field(default_factory=list)

    def _gs(self, n: int) -> str:
        return self.gs[n] if n < len(self.gs) else ""

    @property
    def functional_id(self) -> str:  # GS-01: HP (835), HC (837), HS (270), HB (271), FA (999)
        return self._gs(1)

    @property
    def sender(self) -> str:  # GS-02
        return self._gs(2)

    @property
    def receiver(self) -> str:  # GS-03
        return self._gs(3)

    @property
    def control(self) -> str:  # GS-06
        return self._gs(6)

    @property
    def version(self) -> str:  # GS-08, e.g. 005010X221A1
        return self._gs(8)


@dataclass(slots=True)
class Interchange:
    """An interchange as read: its segments, groups and every error found.

    ``segments`` are the segment texts without terminator or line break.  ``isa`` is the 16 ISA
    elements plus the id at index 0, read by fixed position (best effort when the ISA is broken,
    for the TA1's addresses).  ``end`` is where the next interchange of the same text begins, or
    None.
    """

    text: str
    delimiters: Delimiters | None
    isa: tuple[str, ...]
    segments: list[str] = field(default_factory=list)
    groups: list[FunctionalGroup] = field(default_factory=list)
    errors: list[X12Error] = field(default_factory=list)
    end: int | None = None

    def _isa(self, n: int) -> str:
        return self.isa[n] if n < len(self.isa) else ""

    @property
    def readable(self) -> bool:
        """False when a TA1 must answer instead of 999s: an interchange-level error was found."""
        return not self.errors

    @property
    def control(self) -> str:  # ISA-13
        return self._isa(13)

    @property
    def sender(self) -> str:  # ISA-06, without its fixed-width padding
        return self._isa(6).strip()

    @property
    def receiver(self) -> str:  # ISA-08
        return self._isa(8).strip()

    def all_errors(self) -> list[X12Error]:
        """Every error, interchange first, then by group and set (for logs and a stored reason)."""
        found = list(self.errors)
        for group in self.groups:
            found.extend(group.errors)
            for tset in group.sets:
                found.extend(tset.errors)
        return found


def _isa_fields(isa: str) -> tuple[str, ...]:
    """The ISA's elements by fixed position; index 0 is "ISA"."""
    bounds = (*ISA_SEPARATORS, 105)
    return ("ISA", *(isa[a + 1:b] for a, b in itertools.pairwise(bounds)))


def _best_effort_isa(text: str, start: int) -> tuple[str, ...]:
    """What can be read of a broken ISA, so a TA1 can still be addressed; '' where unknown."""
    head = text[start:start + ISA_LENGTH]
    if not head.startswith("ISA") or len(head) < 4:
        return ()
    head = head.split("\n", 1)[0]
    parts = head.split(head[3])[:17]
    return tuple(parts) + ("",) * (17 - len(parts))


@lru_cache(maxsize=512)
def _valid_id(seg_id: str) -> bool:
    return _SEGMENT_ID.fullmatch(seg_id) is not None


def _element(segment: str, sep: str, n: int) -> str:
    parts = segment.split(sep)
    return parts[n] if n < len(parts) else ""


def _count(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def _where(segment: str, index: int, delims: Delimiters) -> tuple[int, int]:
    """Element and component (1-based) holding character ``index`` of ``segment``; the component
    is 0 when the element is not composite (IK4-1 gives it only for composites)."""
    element = segment.count(delims.element, 0, index)
    if not element:
        return 0, 0
    value = segment.split(delims.element)[element]
    if delims.component not in value:
        return element, 0
    start = segment.rfind(delims.element, 0, index) + 1
    return element, segment.count(delims.component, start, index) + 1


def parse_interchange(data: str | bytes, start: int | None = None) -> Interchange:
    """Read the interchange beginning at ``start`` (default: the first ISA) and check it.

    Never raises for bad content: every problem is an ``X12Error`` in the result.
    """
    text = data.decode("latin-1") if isinstance(data, (bytes, bytearray)) else data
    if start is None:
        start = isa_start(text)
    try:
        delims = read_delimiters(text, start)
    except X12SyntaxError as exc:
        return Interchange(text, None, _best_effort_isa(text, start), errors=[exc.error])
    reader = _Reader(text, start, delims)
    reader.run()
    return reader.result


def parse_interchanges(data: str | bytes) -> list[Interchange]:
    """Every interchange of a text holding several back to back (ISA..IEA ISA..IEA)."""
    text = data.decode("latin-1") if isinstance(data, (bytes, bytearray)) else data
    found = [parse_interchange(text)]
    while found[-1].end is not None:
        found.append(parse_interchange(text, found[-1].end))
    return found


class _Reader:
    """The one pass; a class only so the state machine's helpers share their state."""

    def __init__(self, text: str, start: int, delims: Delimiters):
        self.text, self.start, self.d = text, start, delims
        isa = text[start:start + ISA_LENGTH - 1]
        self.result = Interchange(text, delims, _isa_fields(isa))
        self.group: FunctionalGroup | None = None
        self.tset: TransactionSet | None = None
        self.orphan = False  # inside an ST..SE that has no group: skipped, already reported
        self.seen_iea = False
        self.st2s: set[str] = set()

    # -- errors -------------------------------------------------------------------------------

    def _interchange(self, code: str, segment: str, position: int, reason: str) -> None:
        self.result.errors.append(X12Error(INTERCHANGE, segment, position, code, reason))

    def _set(self, code: str, segment: str, position: int, reason: str,
             tset: TransactionSet | None = None, **detail) -> None:
        tset = tset or self.tset
        set_position = position - tset.first if position else 0
        tset.errors.append(X12Error(SET, segment, position, code, reason, set_position, **detail))

    # -- the pass -----------------------------------------------------------------------------

    def _segments(self) -> tuple[list[str], dict[int, str]]:
        """The segment texts, and {index: problem} where problem is 'noterm' (a line break where
        the terminator should be) or 'tail' (the text ends without a terminator).

        Whole-list operations on the common path (one split, one strip per piece, one join to
        look for stray line breaks); the per-piece walk only runs when something is off.
        """
        d = self.d
        raw = self.text[self.start:].split(d.segment)
        newline_term = d.segment == "\n"
        pieces = raw if newline_term else [p.strip(_BREAKS) for p in raw]
        if "ISA" in self.text[self.start + 3:]:  # maybe a next interchange (or just "LISA")
            later = next((n for n, p in enumerate(pieces) if n and p.startswith("ISA")), None)
            if later is not None:
                lead = len(raw[later]) - len(raw[later].lstrip(_BREAKS + " \t"))
                self.result.end = self.start + sum(len(r) + 1 for r in raw[:later]) + lead
                pieces = pieces[:later]
                raw = raw[:later]
        problems: dict[int, str] = {}
        tail = pieces[-1] != "" and self.result.end is None
        if not newline_term and ("\n" in (joined := "".join(pieces)) or "\r" in joined):
            out: list[str] = []
            for piece in pieces:
                if "\n" in piece or "\r" in piece:
                    lines = [line for line in _LINE_BREAK.split(piece) if line]
                    for line in lines[:-1]:
                        problems[len(out)] = "noterm"
                        out.append(line)
                    out.extend(lines[-1:])
                elif piece:
                    out.append(piece)
            pieces = out
        elif "" in pieces:
            pieces = [p for p in pieces if p]
        if tail and pieces:
            problems[len(pieces) - 1] = "tail"
        return pieces, problems

    def run(self) -> None:
        d, result = self.d, self.result
        segments, problems = self._segments()
        result.segments = segments
        sep = d.element
        ids = [s[:4].split(sep, 1)[0] for s in segments]
        suspects = set(problems)
        if not self.text.isascii():
            suspects.update(i for i, s in enumerate(segments) if not s.isascii())
        bad_ids = {x for x in set(ids) if not _valid_id(x)}
        if bad_ids:
            suspects.update(i for i, x in enumerate(ids) if x in bad_ids)
        self.ids, self.problems, self.suspects = ids, problems, suspects
        done = 0  # segments before this index are handled
        for i in [i for i, x in enumerate(ids) if x in _EVENTS]:
            self._gap(done, i)
            self._event(ids[i], segments[i], i)
            done = i + 1
        self._gap(done, len(ids))
        self._finish(len(segments))

    def _event(self, seg_id: str, seg: str, i: int) -> None:
        """An envelope segment (or TA1) at index ``i``."""
        position = i + 1
        owner = self.tset  # SE's own problems belong to the set it closes
        if seg_id == "ISA":
            control = self.result.control
            if not control.isdigit() or len(control) != 9:
                self._interchange("018", "ISA", 1, "ISA-13: the interchange control number "
                                                   "is not nine digits")
        elif seg_id == "GS":
            self._gs(seg, position)
        elif seg_id == "ST":
            self._st(seg, i)
        elif seg_id == "SE":
            self._se(seg, i)
        elif seg_id == "GE":
            self._ge(seg, i)
        elif seg_id == "IEA":
            self._iea(seg, position)
        elif self.group is not None or self.tset is not None or self.seen_iea:  # TA1
            self._gap(i, i + 1)
            return
        # else a TA1 before the groups: an acknowledgment of an earlier interchange, allowed
        if i in self.suspects:
            self._check_segment(seg, seg_id, i, self.problems.get(i, ""),
                                owner if seg_id == "SE" else self.tset)

    def _gap(self, start: int, end: int) -> None:
        """Non-envelope segments ``start..end-1``: fine inside a set, an error elsewhere."""
        if start >= end:
            return
        inside = self.tset is not None or self.orphan
        if not inside:
            for i in range(start, end):
                position, label = i + 1, self.ids[i][:3]
                if self.seen_iea:
                    reason = f"segment {position} comes after IEA"
                else:
                    where = "a transaction set" if self.group is not None else "a functional group"
                    reason = f"segment {position} is outside {where}"
                self._interchange("024", label, position, reason)
        if self.suspects:
            for i in sorted(j for j in self.suspects if start <= j < end):
                self._check_segment(self.result.segments[i], self.ids[i], i,
                                    self.problems.get(i, ""), self.tset)

    def _check_segment(self, seg: str, seg_id: str, i: int, problem: str,
                       owner: TransactionSet | None) -> None:
        """Problems inside one segment: its id, a non-ASCII byte, a missing terminator."""
        position = i + 1
        in_set = owner is not None and seg_id not in _ENVELOPE
        bad_id = not _valid_id(seg_id)
        label = seg_id[:3] if not bad_id else "?"
        if bad_id:
            if in_set:
                self._set("5", label, position, f"segment {position}: the segment id is not "
                          "2-3 letters or digits", owner, segment_code="1")
            else:
                self._interchange("024", label, position, f"segment {position}: the segment id "
                                                          "is not 2-3 letters or digits")
        if not seg.isascii():
            index = next(k for k, ch in enumerate(seg) if ord(ch) > 127)
            element, component = _where(seg, index, self.d)
            where = f"{label}-{element:02d}" if element else label
            reason = f"segment {position} ({where}): a non-ASCII byte"
            if in_set:
                self._set("5", label, position, reason, owner, element=element, component=component,
                          segment_code="8", element_code="6")
            else:
                self._interchange("024" if label != "ISA" else "022", label, position, reason)
        if problem:
            reason = (f"segment {position} ({label}): the segment terminator is missing"
                      + (" at the end of the text" if problem == "tail" else ""))
            if in_set:
                last = seg.count(self.d.element)
                self._set("5", label, position, reason, owner, element=last, segment_code="8",
                          element_code="6")
            else:
                self._interchange("023" if problem == "tail" else "022", label, position, reason)

    # -- envelope segments --------------------------------------------------------------------

    def _close_set(self, i: int, why: str) -> None:
        """The open set ends without its SE (at segment index ``i``, which is not part of it)."""
        tset = self.tset
        tset.last = i - 1
        self._set("2", "SE", 0, f"ST at segment {tset.first + 1}: no SE before segment {i + 1} "
                                f"({why})")
        self.tset = None

    def _close_group(self, i: int, why: str) -> None:
        group = self.group
        group.last = i - 1
        group.errors.append(X12Error(GROUP, "GE", 0, "3", f"GS at segment {group.first + 1}: no GE "
                                                          f"before segment {i + 1} ({why})"))
        self.group = None

    def _gs(self, seg: str, position: int) -> None:
        i = position - 1
        if self.tset is not None:
            self._close_set(i, "GS")
        self.orphan = False
        if self.group is not None:
            self._close_group(i, "GS")
        if self.seen_iea:
            self._interchange("024", "GS", position, f"segment {position} (GS) comes after IEA")
        self.group = FunctionalGroup(tuple(seg.split(self.d.element)), i)
        self.result.groups.append(self.group)
        self.st2s = set()

    def _st(self, seg: str, i: int) -> None:
        position = i + 1
        if self.tset is not None:
            self._close_set(i, "ST")
        if self.group is None:
            self._interchange("024", "ST", position, f"segment {position} (ST) is outside a "
                                                     "functional group")
            self.orphan = True
            return
        sep = self.d.element
        st1, st2, st3 = (_element(seg, sep, n) for n in (1, 2, 3))
        self.tset = TransactionSet(st1, st2, st3, i)
        self.group.sets.append(self.tset)
        if not st1:
            self._set("6", "ST", position, f"segment {position} (ST-01): the transaction set id "
                                           "is missing", element=1, segment_code="8",
                      element_code="1")
        if not st2:
            self._set("7", "ST", position, f"segment {position} (ST-02): the control number is "
                                           "missing", element=2, segment_code="8", element_code="1")
        elif st2 in self.st2s:
            self._set("23", "ST", position, f"segment {position} (ST-02): the control number is "
                                            "not unique in its group")
        self.st2s.add(st2)

    def _se(self, seg: str, i: int) -> None:
        position = i + 1
        if self.orphan:
            self.orphan = False
            return
        if self.tset is None:
            self._interchange("024", "SE", position, f"segment {position} (SE) has no ST")
            return
        tset = self.tset
        tset.last = i
        sep = self.d.element
        counted = i - tset.first + 1
        if _count(_element(seg, sep, 1)) != counted:
            self._set("4", "SE", position, f"segment {position} (SE-01): the segment count does "
                      f"not match the {counted} segments from ST to SE", element=1)
        if _element(seg, sep, 2) != tset.st2:
            self._set("3", "SE", position, f"segment {position} (SE-02): the control number "
                      f"does not match ST-02 at segment {tset.first + 1}", element=2)
        self.tset = None

    def _ge(self, seg: str, i: int) -> None:
        position = i + 1
        if self.tset is not None:
            self._close_set(i, "GE")
        self.orphan = False
        group = self.group
        if group is None:
            self._interchange("024", "GE", position, f"segment {position} (GE) has no GS")
            return
        group.last = i
        sep = self.d.element
        group.ge_count = _count(_element(seg, sep, 1))
        if group.ge_count != len(group.sets):
            group.errors.append(X12Error(
                GROUP, "GE", position, "5", f"segment {position} (GE-01): the transaction set "
                f"count does not match the {len(group.sets)} sets in the group", element=1))
        if _element(seg, sep, 2) != group.control:
            group.errors.append(X12Error(
                GROUP, "GE", position, "4", f"segment {position} (GE-02): the group control "
                f"number does not match GS-06 at segment {group.first + 1}", element=2))
        self.group = None

    def _iea(self, seg: str, position: int) -> None:
        i = position - 1
        if self.tset is not None:
            self._close_set(i, "IEA")
        if self.group is not None:
            self._close_group(i, "IEA")
        if self.seen_iea:
            self._interchange("024", "IEA", position, f"segment {position}: a second IEA")
            return
        self.seen_iea = True
        sep = self.d.element
        groups = len(self.result.groups)
        if _count(_element(seg, sep, 1)) != groups:
            self._interchange("021", "IEA", position, f"segment {position} (IEA-01): the group "
                              f"count does not match the {groups} groups in the interchange")
        if _element(seg, sep, 2) != self.result.control:
            self._interchange("001", "IEA", position, f"segment {position} (IEA-02): the "
                              "interchange control number does not match ISA-13")

    def _finish(self, count: int) -> None:
        if self.tset is not None:
            self._close_set(count, "end of text")
        if self.group is not None:
            self._close_group(count, "end of text")
        if not self.seen_iea:
            self._interchange("023", "IEA", 0, f"no IEA: the interchange ends after segment "
                                               f"{count}")
