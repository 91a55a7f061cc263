"""X12 paths over a lazily split interchange or transaction set: ``X12View``.

Paths follow DESIGN §3.11, the HL7 notation carried over: ``SEG(n).ELEMENT(rep).COMPONENT``,
1-based.  ``view['CLP.4']`` is element 4 of the first CLP, ``view['SVC.1.2']`` component 2 of
element 1 of the first SVC, ``view['NM1(2).3']`` element 3 of the second NM1, ``view['EB.3(2)']``
the second repetition of EB-03.  A missing segment, element, repetition or component is ''.
An element named without a component is its first repetition, components still joined by the
component separator (as ``HL7View`` shows a field).  ``view['CLP']`` is the segment's text.
ISA elements are returned as written (fixed-width, padded) and never split: ISA-11 and ISA-16
*are* the separators.  X12 has no escape sequences, so values need no decoding.

Why lazy: a filter reads a few elements of a message it may drop.  The view reads the ISA's
delimiters when built, splits the text into segments on first use, indexes them by id, and
splits a segment into elements only when a path touches it (kept per segment).

``view.loops('2100')`` gives each occurrence of a loop as a view of its own (see ``loops`` for
which loops and how their ends are found); paths in it are relative to the loop, so
``claim['CLP.1']`` and ``claim.segments('SVC')`` stay inside that claim.
"""

from __future__ import annotations

import re
from functools import lru_cache

from engine.x12.delimiters import Delimiters, isa_start, read_delimiters, split_segments
from engine.x12.errors import X12SyntaxError
from engine.x12.loops import loop_ranges, loops_of

_PATH = re.compile(r"([A-Z][A-Z0-9]{1,2})(?:\((\d+)\))?(?:\.(\d+)(?:\((\d+)\))?(?:\.(\d+))?)?")
_PATH_SHAPE = "SEG[(n)][.ELEMENT[(rep)][.COMPONENT]], 1-based"
_RELATIVE_SHAPE = "ELEMENT[(rep)][.COMPONENT]"


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str, int, int | None, int | None, int | None]:
    """``SEG(n).ELEMENT(rep).COMPONENT`` → (segment, n, element, rep, component); None = not
    given.  ValueError naming the path (a template's text, not message data) if invalid."""
    match = _PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise ValueError(f"invalid X12 path {path!r}: expected {_PATH_SHAPE}")
    occurrence, element, rep, component = (int(g) if g is not None else None
                                           for g in match.groups()[1:])
    if 0 in (occurrence, element, rep, component):
        raise ValueError(f"invalid X12 path {path!r}: positions start at 1")
    return match.group(1), occurrence or 1, element, rep, component


@lru_cache(maxsize=1024)
def _parse_relative(key: str) -> tuple[int | None, int | None, int | None]:
    try:
        _seg, _n, element, rep, component = parse_path(f"SEG.{key}")
    except ValueError:
        raise ValueError(f"invalid X12 segment path {key!r}: expected {_RELATIVE_SHAPE}") from None
    return element, rep, component


class SegmentView:
    """One segment; ``seg['4']``, ``seg['1.2']``, ``seg['3(2)']`` and ``seg[4]`` are paths
    relative to it, with the rules of ``X12View``.  ``seg.id`` is the segment id."""

    __slots__ = ("_d", "_elements", "id", "text")

    def __init__(self, text: str, seg_id: str, delimiters: Delimiters):
        self.text, self.id, self._d, self._elements = text, seg_id, delimiters, None

    @property
    def elements(self) -> list[str]:
        """The raw elements; index 0 is the segment id, so ``elements[4]`` is element 4."""
        if self._elements is None:
            self._elements = self.text.split(self._d.element)
        return self._elements

    def lookup(self, element: int | None, rep: int | None = None,
               component: int | None = None) -> str:
        if element is None:
            return self.text
        elements = self.elements
        if element >= len(elements):
            return ""
        value = elements[element]
        if self.id == "ISA":  # fixed-width; ISA-11 and ISA-16 are separators themselves
            return value if (rep or 1) == 1 and (component or 1) == 1 else ""
        d = self._d
        if d.repetition is not None and d.repetition in value:
            parts = value.split(d.repetition)
            value = parts[(rep or 1) - 1] if (rep or 1) <= len(parts) else ""
        elif (rep or 1) != 1:
            return ""
        if component is None:
            return value
        if d.component not in value:
            return value if component == 1 else ""
        parts = value.split(d.component)
        return parts[component - 1] if component <= len(parts) else ""

    def __getitem__(self, key: str | int) -> str:
        if isinstance(key, int) and not isinstance(key, bool):
            if key < 1:
                raise ValueError(f"invalid X12 element number {key!r}: elements start at 1")
            return self.lookup(key)
        if not isinstance(key, str):
            raise ValueError(f"invalid X12 segment path {key!r}")
        return self.lookup(*_parse_relative(key))

    def get(self, key: str | int, default: str = "") -> str:
        return self[key] or default

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<SegmentView {self.id}>"


class X12View:
    """Lazy, read-only access to X12 text by path (DESIGN §3.11).

    ``text`` is an interchange (ISA..IEA: delimiters come from the ISA) or bare segments
    (``ST*835*...~...``: the usual ``* : ^ ~`` are assumed).  An ISA whose delimiters cannot be
    read is an ``X12SyntaxError``; nothing else is: a view reads what is there.
    """

    __slots__ = ("_ids", "_index", "_segments", "_set_id", "_text", "_views", "delimiters")

    def __init__(self, text: str | bytes):
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("latin-1")
        start = isa_start(text)
        if text.startswith("ISA", start):
            self.delimiters = read_delimiters(text, start)
            text = text[start:]
        else:
            self.delimiters = Delimiters()
        self._text: str | None = text
        self._segments: list[str] | None = None
        self._ids = self._index = self._views = None
        self._set_id: str | None = None

    @classmethod
    def _part_of(cls, parent: X12View, first: int, last: int, set_id: str) -> X12View:
        """A view over segments ``first..last`` of ``parent`` (a loop): nothing is split again,
        and the segment views already built are shared."""
        view = cls.__new__(cls)
        view.delimiters, view._text = parent.delimiters, None
        view._segments = parent._segments[first:last + 1]
        view._ids = parent._ids[first:last + 1]
        view._views = parent._views[first:last + 1]
        view._index = {}
        view._set_id = set_id
        return view

    @property
    def text(self) -> str:
        """The text viewed; for a loop, its segments written with the input's terminator."""
        if self._text is None:
            term = self.delimiters.terminator
            self._text = term.join(self._segments) + term
        return self._text

    def _split(self) -> list[str]:
        """Split into segments and read their ids (once); positions per id come on demand."""
        if self._segments is None:
            self._segments = split_segments(self._text, self.delimiters)
        sep = self.delimiters.element
        self._ids = [s[:4].split(sep, 1)[0] for s in self._segments]
        self._index = {}
        self._views = [None] * len(self._ids)
        return self._ids

    def _positions(self, seg_id: str) -> list[int]:
        """Indexes of the segments with this id: one scan per id asked for, then cached (a
        filter asks for a few ids; indexing every id up front cost more than the scans)."""
        ids = self._ids if self._ids is not None else self._split()
        found = self._index.get(seg_id)
        if found is None:
            found = self._index[seg_id] = [i for i, x in enumerate(ids) if x == seg_id]
        return found

    def _view_at(self, position: int) -> SegmentView:
        view = self._views[position]
        if view is None:
            view = SegmentView(self._segments[position], self._ids[position], self.delimiters)
            self._views[position] = view
        return view

    def __getitem__(self, path: str) -> str:
        seg_id, occurrence, element, rep, component = parse_path(path)
        positions = self._positions(seg_id)
        if occurrence > len(positions):
            return ""
        return self._view_at(positions[occurrence - 1]).lookup(element, rep, component)

    def get(self, path: str, default: str = "") -> str:
        return self[path] or default

    def segments(self, seg_id: str | None = None) -> list[SegmentView]:
        """The segments with this id, in order (all segments when ``seg_id`` is None)."""
        if seg_id is None:
            ids = self._ids if self._ids is not None else self._split()
            return [self._view_at(position) for position in range(len(ids))]
        return [self._view_at(position) for position in self._positions(seg_id)]

    def segment_ids(self) -> list[str]:
        return list(self._ids if self._ids is not None else self._split())

    @property
    def set_id(self) -> str:
        """ST-01 of the first transaction set ('835'), or the set a loop view came from."""
        if self._set_id is None:
            self._set_id = self["ST.1"]
        return self._set_id

    def loops(self, loop: str) -> list[X12View]:
        """Each occurrence of ``loop`` ('2100', '2300', '2000B', ...) as a view of its own.

        [] when the set type has no such loop or none occurs; ValueError for a loop id that no
        supported set type defines.
        """
        if self._ids is None:
            self._split()

        def element_of(i: int, n: int) -> str:
            return self._view_at(i).lookup(n)

        def set_id_of(i: int) -> str:
            return self.set_id if i < 0 else self._view_at(i).lookup(1)

        ranges = loop_ranges(self._ids, element_of, set_id_of, loop)
        return [X12View._part_of(self, first, last, self._set_of(first)) for first, last in ranges]

    def outline(self) -> dict:
        """What ``switchboard test`` shows of a transaction: the set id, its control numbers, and
        how many of each supported loop it holds (ids and counts only, never a value)."""
        ids = self.segment_ids()
        counts = {loop: len(self.loops(loop)) for loop in loops_of(self.set_id)}
        return {"set": self.set_id, "isa13": self["ISA.13"], "gs6": self["GS.6"], "st2": self["ST.2"],
                "version": self["GS.8"] or self["ST.3"], "segments": len(ids),
                "loops": {loop: n for loop, n in counts.items() if n}}

    def _set_of(self, position: int) -> str:
        """ST-01 of the set holding segment ``position`` (the view's own type if no ST before)."""
        before = [p for p in self._positions("ST") if p <= position]
        return self._view_at(before[-1]).lookup(1) if before else self.set_id

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<X12View {len(self.text)} chars>"


__all__ = ["SegmentView", "X12SyntaxError", "X12View", "parse_path"]
