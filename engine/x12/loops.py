"""Where the loops of an 835, 837 or 270/271 begin and end, from their trigger segments.

X12 loops have no closing segment: a loop is its trigger segment and what follows, up to the next
segment that cannot belong to it.  Here that is the next trigger of a loop that is not nested in
this one (the same loop again, a sibling or an enclosing loop), or a segment that ends every loop
of the set (SE; PLB in an 835, the provider adjustments after the last claim).  A trigger may need
a qualifier to be told apart (HL-03 level code, N1-01/NM1-01 entity code).

Loops supported (005010 implementation guides; ids as the guides number them):

====== ======================================= ===============================================
set    loop: trigger                           nested inside it
====== ======================================= ===============================================
835    1000A N1*PR (payer), 1000B N1*PE (payee) -
835    2000 LX (header number)                 2100, 2110
835    2100 CLP (claim payment)                2110
835    2110 SVC (service line payment)         -
837    1000A NM1*41 (submitter), 1000B NM1*40  -
837    2000A HL*..*20 (billing provider)       2000B, 2000C, 2300, 2400
837    2000B HL*..*22 (subscriber)             2000C, 2300, 2400
837    2000C HL*..*23 (patient)                2300, 2400
837    2300 CLM (claim)                        2400
837    2400 LX (service line)                  -
270/1  2000A HL*..*20 (information source)     2000B, 2000C, 2000D
270/1  2000B HL*..*21 (information receiver)   2000C, 2000D
270/1  2000C HL*..*22 (subscriber)             2000D
270/1  2000D HL*..*23 (dependent)              -
====== ======================================= ===============================================

Not yet: the 2010xx/2100x name loops, 837's 2310x/2320/2330x/2410/2420x and 271's 2110x/2120x
(they sit inside the loops above, so their segments are reachable from them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoopSpec:
    """A loop's trigger: segment id, optional (element, accepted values), and inner loops."""

    loop: str
    segment: str
    qualifier: tuple[int, frozenset[str]] | None
    inner: frozenset[str]


def _spec(loop: str, segment: str, inner: str = "", element: int = 0,
          values: str = "") -> LoopSpec:
    qualifier = (element, frozenset(values.split())) if element else None
    return LoopSpec(loop, segment, qualifier, frozenset(inner.split()))


_HL_270 = (
    _spec("2000A", "HL", "2000B 2000C 2000D", 3, "20"),
    _spec("2000B", "HL", "2000C 2000D", 3, "21"),
    _spec("2000C", "HL", "2000D", 3, "22"),
    _spec("2000D", "HL", "", 3, "23"),
)

LOOPS: dict[str, tuple[LoopSpec, ...]] = {
    "835": (
        _spec("1000A", "N1", "", 1, "PR"),
        _spec("1000B", "N1", "", 1, "PE"),
        _spec("2000", "LX", "2100 2110"),
        _spec("2100", "CLP", "2110"),
        _spec("2110", "SVC"),
    ),
    "837": (
        _spec("1000A", "NM1", "", 1, "41"),
        _spec("1000B", "NM1", "", 1, "40"),
        _spec("2000A", "HL", "2000B 2000C 2300 2400", 3, "20"),
        _spec("2000B", "HL", "2000C 2300 2400", 3, "22"),
        _spec("2000C", "HL", "2300 2400", 3, "23"),
        _spec("2300", "CLM", "2400"),
        _spec("2400", "LX"),
    ),
    "270": _HL_270,
    "271": _HL_270,
}

# Segments that close every open loop of the set.
ENDS: dict[str, frozenset[str]] = {"835": frozenset(("PLB", "SE"))}
DEFAULT_ENDS = frozenset(("SE",))

KNOWN_LOOPS = frozenset(spec.loop for specs in LOOPS.values() for spec in specs)
TRIGGER_SEGMENTS: dict[str, frozenset[str]] = {
    set_id: frozenset(spec.segment for spec in specs) for set_id, specs in LOOPS.items()
}


def loop_ranges(ids: list[str], element_of, set_id_of, loop: str) -> list[tuple[int, int]]:
    """[(first, last)] segment indexes (inclusive) of each occurrence of ``loop``.

    ``ids`` are the segment ids in order; ``element_of(i, n)`` returns element n of segment i
    (only called for trigger candidates); ``set_id_of(i)`` returns ST-01 for an ST at index i.
    The set type starts as ``set_id_of(-1)`` (a view without an ST inherits it) and changes at
    each ST.  ValueError for a loop id no supported set defines (a typo, not missing data).
    """
    if loop not in KNOWN_LOOPS:
        known = ", ".join(sorted(KNOWN_LOOPS))
        raise ValueError(f"unknown X12 loop {loop!r}: supported loops are {known}")
    ranges: list[tuple[int, int]] = []
    specs, ends, triggers, inner = _for_set(set_id_of(-1), loop)
    start = -1
    for i, seg_id in enumerate(ids):
        if seg_id == "ST":
            if start != -1:
                ranges.append((start, i - 1))
                start = -1
            specs, ends, triggers, inner = _for_set(set_id_of(i), loop)
            continue
        if start != -1 and seg_id in ends:
            ranges.append((start, i - 1))
            start = -1
            continue
        if seg_id not in triggers:
            continue
        found = _match(specs, seg_id, i, element_of)
        if found is None:
            continue
        if found == loop:
            if start != -1:
                ranges.append((start, i - 1))
            start = i
        elif start != -1 and found not in inner:
            ranges.append((start, i - 1))
            start = -1
    if start != -1:
        ranges.append((start, len(ids) - 1))
    return ranges


def _for_set(set_id: str, loop: str):
    specs = LOOPS.get(set_id, ())
    own = next((s for s in specs if s.loop == loop), None)
    if own is None:  # this set type has no such loop: nothing will match
        return (), DEFAULT_ENDS, frozenset(), frozenset()
    return specs, ENDS.get(set_id, DEFAULT_ENDS), TRIGGER_SEGMENTS[set_id], own.inner


def _match(specs: tuple[LoopSpec, ...], seg_id: str, i: int, element_of) -> str | None:
    for spec in specs:
        if spec.segment != seg_id:
            continue
        if spec.qualifier is None:
            return spec.loop
        element, values = spec.qualifier
        if element_of(i, element) in values:
            return spec.loop
    return None


def loops_of(set_id: str) -> tuple[str, ...]:
    """The loop ids supported for a set type, in the order of ``LOOPS`` ('835' -> 1000A ...)."""
    return tuple(spec.loop for spec in LOOPS.get(set_id, ()))
