"""Delimiters of an X12 interchange, read from its fixed-width ISA segment.

X12 declares its delimiters by position, not by name: the ISA is always 106 characters, so the
element separator is character 4, the repetition separator is ISA-11 (5010; in 4010 that element
was the standards id ``U``), the component separator is ISA-16 and the segment terminator is the
character right after ISA-16.  Reading by position is what translators do, and it is the only way
to tell a short ISA from a long one: counting separators would run into the GS.  So an ISA whose
separators are not where the standard puts them is refused rather than guessed at.

Files often carry a line break after each terminator (``~\\n`` or ``~\\r\\n``); they are not part
of any segment and are dropped when segments are split.  The break seen after the ISA is kept as
``Delimiters.suffix`` so that text written back (split messages, acknowledgments) looks like what
came in.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.x12.errors import INTERCHANGE, X12Error, X12SyntaxError

ISA_LENGTH = 106  # "ISA", 16 elements, 16 separators, the terminator
# Index of each of the 16 element separators in a well-formed ISA (fixed widths 2,10,2,10,2,15,2,
# 15,6,4,1,5,9,1,1,1).
ISA_SEPARATORS = (3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103)
_LEADING = "\ufeff \t\r\n"  # a BOM or blank lines before the ISA are tolerated
_BREAKS = "\r\n"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The four X12 delimiters, plus the line break the input put after each terminator."""

    element: str = "*"
    component: str = ":"
    repetition: str | None = "^"  # None when ISA-11 is not a separator (4010's "U")
    segment: str = "~"
    suffix: str = ""  # "", "\n" or "\r\n": what followed the ISA's terminator

    @property
    def terminator(self) -> str:
        """What ends a segment in text written in the input's own style."""
        return self.segment + self.suffix


def isa_start(text: str) -> int:
    """Index of the ISA in ``text``: after a BOM and blank space, which senders sometimes add."""
    return len(text) - len(text.lstrip(_LEADING))


def _fail(code: str, reason: str) -> X12SyntaxError:
    return X12SyntaxError(X12Error(INTERCHANGE, "ISA", 1, code, reason))


def _bad_delimiter(char: str) -> bool:
    return char.isalnum() or char == " " or not char.isascii()


def read_delimiters(text: str, start: int | None = None) -> Delimiters:
    """Read the delimiters of the interchange whose ISA begins at ``start`` (default: the first
    non-blank character).

    Raises ``X12SyntaxError`` with a TA1 note code (004 terminator, 022 control structure, 023 the
    text ends inside the ISA, 026/027 element/component separator) naming positions only.
    """
    if start is None:
        start = isa_start(text)
    isa = text[start:start + ISA_LENGTH]
    if not isa.startswith("ISA"):
        raise _fail("022", "the interchange does not start with an ISA segment")
    if len(isa) < ISA_LENGTH:
        raise _fail("023", f"ISA is {len(isa)} characters, the text ends before its "
                           f"{ISA_LENGTH} characters do")
    element = isa[3]
    if _bad_delimiter(element) or element in _BREAKS:
        raise _fail("026", "ISA: the element separator (character 4) is not a valid delimiter")
    for index in ISA_SEPARATORS:
        if isa[index] != element:
            before = ISA_SEPARATORS.index(index)
            raise _fail("022", f"ISA: the element separator before ISA-{before + 1:02d} is not at "
                               f"character {index + 1} (the ISA is fixed-width, {ISA_LENGTH} "
                               f"characters)")
    component, segment = isa[104], isa[105]
    if _bad_delimiter(component) or component in (element, *_BREAKS):
        raise _fail("027", "ISA-16: the component separator is not a valid delimiter")
    if segment != "\n" and (_bad_delimiter(segment) or segment in (element, component, "\r")):
        raise _fail("004", "ISA: the segment terminator (character 106) is not a valid delimiter")
    repetition: str | None = isa[82]
    if _bad_delimiter(repetition) or repetition in (element, component, segment, *_BREAKS):
        repetition = None
    after = text[start + ISA_LENGTH:start + ISA_LENGTH + 2]
    suffix = "\r\n" if after == "\r\n" else after[:1] if after[:1] in ("\n", "\r") else ""
    if segment == "\n":
        suffix = ""
    return Delimiters(element, component, repetition, segment, suffix)


def split_segments(text: str, delimiters: Delimiters) -> list[str]:
    """The segments of ``text`` without terminators, line breaks or blank pieces.

    The tolerant split the read view uses; the envelope reader does its own pass because it must
    also report where a terminator is missing.
    """
    pieces = text.split(delimiters.segment)
    if delimiters.segment != "\n":
        pieces = [p.strip(_BREAKS) for p in pieces]
    return [p for p in pieces if p]
