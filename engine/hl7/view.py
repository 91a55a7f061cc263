"""HL7 paths (Mirth/HAPI notation) over a lazily split message: ``HL7View``.

Why not ``hl7.parse``: it builds the whole tree (4.3 ms for the 8.5 KB ADT-A08-01 sample, 1.2 ms
for a 1.5 KB ADT), where ``HL7View(text)`` plus five lookups costs 11-19 µs: the text is split into
segments once, segments are indexed by name on demand, and only the fields of the segments a path
touches are split (cached per segment).  A filter reads a handful of fields; nothing else is split.
python-hl7's own accessor (``m['PID.3.1']``) means field 3 *repetition* 1, not our notation
(DESIGN §3.3), so it is not exposed.
"""

from __future__ import annotations

from engine.hl7.encoding import (
    DEFAULT_ENCODING,
    DEFAULT_FIELD_SEP,
    HEADER_SEGMENTS,
    encoding_chars,
    normalize_segments,
    unescape,
    valid_delimiters,
)
from engine.hl7.path import Path, parse_path, parse_relative


def _pick(value: str, sep: str, n: int | None) -> str | None:
    """Piece ``n`` (1-based; None means 1) of ``value`` split by ``sep``; None when absent."""
    if sep not in value:
        return value if (n or 1) == 1 else None
    parts = value.split(sep)
    return parts[(n or 1) - 1] if (n or 1) <= len(parts) else None


class SegmentView:
    """One segment; its fields are split on first use and kept.

    ``seg['11']``, ``seg['5.1']``, ``seg['3(2).1']`` and ``seg[11]`` are paths relative to the
    segment, with the same rules as ``HL7View``.
    """

    __slots__ = ("text", "name", "encoding_chars", "_fields")

    def __init__(self, text: str, name: str, delims: tuple[str, str, str, str, str, str]):
        self.text, self.name, self.encoding_chars, self._fields = text, name, delims, None

    def _split(self) -> list[str]:
        fields = self.text.split(self.encoding_chars[0])
        if self.name in HEADER_SEGMENTS:
            fields.insert(1, self.encoding_chars[0])
        self._fields = fields
        return fields

    def lookup(self, field: int | None, rep: int | None = None, comp: int | None = None,
               sub: int | None = None) -> str:
        if field is None:
            return self.text
        fields = self._fields if self._fields is not None else self._split()
        if field >= len(fields):
            return ""
        value = fields[field]
        if field <= 2 and self.name in HEADER_SEGMENTS:  # MSH-1, MSH-2: the delimiters themselves
            return value if (rep or 1) == 1 and (comp or 1) == 1 and (sub or 1) == 1 else ""
        field_sep, comp_sep, rep_sep, _esc, sub_sep, encoding = self.encoding_chars
        value = _pick(value, rep_sep, rep)
        if value is not None and comp is None:
            if comp_sep in value or sub_sep in value:
                return value  # not a leaf: the raw encoded text
        elif value is not None:
            value = _pick(value, comp_sep, comp)
            value = _pick(value, sub_sep, sub) if value is not None else None
        return "" if value is None else unescape(value, encoding, field_sep)

    def __getitem__(self, key: str | int) -> str:
        if isinstance(key, int) and not isinstance(key, bool):
            if key < 1:
                raise ValueError(f"invalid HL7 field number {key!r}: fields start at 1")
            return self.lookup(key)
        if not isinstance(key, str):
            raise ValueError(f"invalid HL7 segment path {key!r}")
        return self.lookup(*parse_relative(key))

    def get(self, key: str | int, default: str = "") -> str:
        return self[key] or default

    def repetition_count(self, field: int) -> int:
        """How many repetitions field ``field`` holds (0 when it is absent or empty)."""
        fields = self._fields if self._fields is not None else self._split()
        if field >= len(fields) or not fields[field]:
            return 0
        if field <= 2 and self.name in HEADER_SEGMENTS:
            return 1
        return fields[field].count(self.encoding_chars[2]) + 1

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<SegmentView {self.name}>"


class HL7View:
    """Lazy, read-only access to an HL7 message by Mirth/HAPI paths (DESIGN §3.3).

    ``view['PID.5.1']`` is the unescaped value; a missing segment, field, repetition, component or
    subcomponent is ''.  A path naming a component is a value: when that component has
    subcomponents it is the first one (``PID.5.1`` of ``EVERYMAN&&&&Aniston^ADAM`` is
    ``EVERYMAN``, the family name, as HAPI's Terser and python-hl7 answer).  A path naming a
    field without a component is the whole first (or given) repetition, as Mirth shows it:
    ``view['PID.5']`` is ``EVERYMAN&&&&Aniston^ADAM``, raw and still escaped when it has
    components (unescaping would make an escaped ``\\S\\`` look like a real separator), unescaped
    when it is a simple value.  ``view['PID']`` is the raw segment.  MSH.1 is the field
    separator and MSH.2 the encoding characters, verbatim.
    """

    __slots__ = ("text", "field_sep", "encoding", "encoding_chars", "_segments", "_names", "_index",
                 "_views")

    def __init__(self, text: str):
        if "\n" in text:
            text = normalize_segments(text)
        self.text = text
        field_sep, encoding = DEFAULT_FIELD_SEP, DEFAULT_ENCODING
        if text[:3] in HEADER_SEGMENTS and len(text) > 4:
            end = text.find("\r")
            first = text[3:end] if end != -1 else text[3:]
            declared = first[1:].split(first[0], 1)[0]
            if valid_delimiters(first[0], declared):
                field_sep, encoding = first[0], declared
        self.field_sep, self.encoding = field_sep, encoding
        self.encoding_chars = (field_sep, *encoding_chars(encoding), encoding)
        self._segments = self._names = self._index = self._views = None

    def _build_index(self) -> dict[str, list[int]]:
        segments = self.text.split("\r")
        if "" in segments:  # blank lines
            segments = [s for s in segments if s]
        field_sep = self.field_sep
        names = [s[:3] if s[3:4] == field_sep else s.split(field_sep, 1)[0] for s in segments]
        index: dict[str, list[int]] = {}
        for position, name in enumerate(names):
            index.setdefault(name, []).append(position)
        self._segments, self._names, self._index = segments, names, index
        self._views = [None] * len(segments)
        return index

    def _view_at(self, position: int) -> SegmentView:
        view = self._views[position]
        if view is None:
            view = SegmentView(self._segments[position], self._names[position], self.encoding_chars)
            self._views[position] = view
        return view

    def __getitem__(self, path: str | Path) -> str:
        if not isinstance(path, Path):
            path = parse_path(path)
        index = self._index if self._index is not None else self._build_index()
        positions = index.get(path.segment)
        if not positions or path.segment_rep > len(positions):
            return ""
        segment = self._view_at(positions[path.segment_rep - 1])
        return segment.lookup(path.field, path.field_rep, path.component, path.subcomponent)

    def get(self, path: str | Path, default: str = "") -> str:
        return self[path] or default

    def repetitions(self, path: str | Path) -> list[str]:
        """Every repetition of a field, each read as ``view['PID.3(n)...']`` would read it:
        ``msg.repetitions('PID.3')`` -> ``['MRN1^^^HOSP^MR', 'SSN9^^^SSA^SS']`` (raw, components
        joined by ``^``, when they have components; unescaped when simple), and
        ``msg.repetitions('PID.3.1')`` -> ``['MRN1', 'SSN9']`` (that component of each, unescaped).
        ``[]`` when the segment or field is absent or empty.  A repetition in the path is refused
        (ValueError): the path names the field, the list is its repetitions."""
        if not isinstance(path, Path):
            path = parse_path(path)
        if path.field is None or path.field_rep is not None:
            raise ValueError("repetitions() takes a field path without a repetition: 'PID.3' or 'PID.3.1'")
        index = self._index if self._index is not None else self._build_index()
        positions = index.get(path.segment)
        if not positions or path.segment_rep > len(positions):
            return []
        segment = self._view_at(positions[path.segment_rep - 1])
        return [segment.lookup(path.field, n, path.component, path.subcomponent)
                for n in range(1, segment.repetition_count(path.field) + 1)]

    def segments(self, name: str) -> list[SegmentView]:
        index = self._index if self._index is not None else self._build_index()
        return [self._view_at(position) for position in index.get(name, ())]

    def segment_names(self) -> list[str]:
        if self._index is None:
            self._build_index()
        return list(self._names)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<HL7View {len(self.text)} chars>"
