"""An editable HL7 v2 message: set, clear, delete and add by Mirth/HAPI path (DESIGN §3.3, §3.8).

Why not edit a python-hl7 tree: ``hl7.parse`` costs ~600 µs for a 1.1 KB ADT, and writing the tree
back re-encodes every segment, so trailing empty fields, odd escapes and spacing an upstream system
sent could change.  The contract is that an edit changes only the positions it edits.  So the
message is kept as its raw segments; a segment is split into fields only when it is written, and
only split segments are joined again.  Every other segment, and every other field of a written
one, is the very text that came in.

Writing follows the message's own delimiters (MSH-1, MSH-2, also BHS/FHS as in ``HL7View``):
``set`` escapes ``| ^ ~ \\ &`` as ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\`` with the message's own escape
character, and control characters as ``\\Xhh\\`` (a CR becomes ``\\X0D\\``), so an escaped value
can never add a field, component, repetition or segment.  With ``escape=False`` separators in the
value are structure, at any level; a CR, LF, 0x0B or 0x1C is refused (EditError) because it would
add a segment or break the MLLP frame.

Positions:

* A field path without a repetition (``PID.3``) is its first repetition for ``get``, ``set`` and
  ``copy``, as ``msg['PID.3']`` reads it.  ``clear('PID.3')`` empties the whole field, every
  repetition (a "delete this field" that left repetition 2 of an identifier behind would leak it);
  ``clear('PID.3(2)')`` empties only that repetition, its ``~`` kept.
* ``(*)`` on a segment (``OBX(*).3``) or a repetition (``PID.3(*).1``) means every occurrence that
  exists; none is no position, so nothing is done.
* Setting past the end pads with the separators needed; setting in an absent segment (or past its
  last occurrence) appends it at the end of the message.  Setting ``''`` where the value already
  reads ``''`` changes nothing (no padding for an empty value).
* MSH counts as the standard does: MSH.1 is the field separator, MSH.2 the encoding characters
  (both read verbatim and never written), MSH.3 the sending application.

Errors are ``EditError`` (a ValueError) whose message names the path, never a value: field values
are PHI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import fnmatch
from functools import lru_cache
from typing import NamedTuple

from engine.hl7.encoding import HEADER_SEGMENTS, encoding_chars, unescape, valid_delimiters
from engine.hl7.encoding import escape as hl7_escape
from engine.hl7.path import Path, parse_path
from engine.hl7.view import SegmentView

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_SEGMENT_GLOB = re.compile(r"[A-Z0-9*?\[\]!]+")
_BREAKS = ("\r", "\n", "\x0b", "\x1c")  # a segment or an MLLP frame boundary
_PATH_SHAPE = "SEG[(n|*)][.FIELD[(rep|*)][.COMPONENT[.SUBCOMPONENT]]], 1-based"


class EditError(ValueError):
    """An edit that cannot be made.  The message names the path or the segment, never a value."""


class SegmentChange(NamedTuple):
    """One segment an edit changed, for ``switchboard test``: 1-based positions in the input and in
    the output; ``before_index``/``before`` are None for an added segment, ``after_index``/``after``
    None for a deleted one."""

    before_index: int | None
    after_index: int | None
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed edit path: ``path`` with ``(*)`` read as 1, and which parts were ``(*)``."""

    path: Path
    every_segment: bool
    every_repetition: bool
    text: str


@lru_cache(maxsize=4096)
def parse_target(path: str) -> Target:
    """Parse a path of §3.3 that may hold ``(*)`` on the segment or the field repetition."""
    if not isinstance(path, str):
        raise EditError("invalid HL7 path: not text")
    concrete = path
    every_segment = concrete[3:6] == "(*)"
    if every_segment:
        concrete = concrete[:3] + "(1)" + concrete[6:]
    every_repetition = "(*)" in concrete
    if every_repetition:
        concrete = concrete.replace("(*)", "(1)", 1)
    try:
        parsed = parse_path(concrete)
    except ValueError:
        raise EditError(f"invalid HL7 path {path!r}: expected {_PATH_SHAPE}") from None
    if every_repetition and parsed.field_rep is None:  # pragma: no cover - the grammar prevents it
        raise EditError(f"invalid HL7 path {path!r}: (*) belongs to a segment or a repetition")
    return Target(parsed, every_segment, every_repetition, path)


def format_path(path: Path) -> str:
    """The text of a concrete path, e.g. ``OBX(2).5(1).1``; the inverse of ``parse_path``."""
    out = path.segment if path.segment_rep == 1 else f"{path.segment}({path.segment_rep})"
    if path.field is not None:
        out += f".{path.field}" if path.field_rep is None else f".{path.field}({path.field_rep})"
        if path.component is not None:
            out += f".{path.component}"
            if path.subcomponent is not None:
                out += f".{path.subcomponent}"
    return out


def _target(path: str | Path | Target) -> Target:
    if isinstance(path, Target):
        return path
    if isinstance(path, Path):
        return Target(path, False, False, format_path(path))
    return parse_target(path)


@lru_cache(maxsize=256)
def _segment_matcher(pattern: str):
    """None for a plain segment name, else the compiled fnmatch glob (case-sensitive: segment
    names are upper case).  EditError for anything else."""
    if not isinstance(pattern, str) or not _SEGMENT_GLOB.fullmatch(pattern):
        raise EditError(f"delete: {pattern!r} is not a segment name or glob (e.g. NTE, Z*)")
    if not any(c in pattern for c in "*?["):
        return None
    return re.compile(fnmatch.translate(pattern)).match


def _piece(value: str, sep: str, n: int) -> str | None:
    """Piece ``n`` (1-based) of ``value`` split by ``sep``; None when absent."""
    if sep not in value:
        return value if n == 1 else None
    parts = value.split(sep)
    return parts[n - 1] if n <= len(parts) else None


def _put(value: str, sep: str, n: int, new: str) -> str:
    """``value`` with piece ``n`` replaced by ``new``, padding with ``sep`` when it is absent."""
    if sep not in value:
        if n == 1:
            return new
        parts = [value]
    else:
        parts = value.split(sep)
    if n > len(parts):
        parts.extend([""] * (n - len(parts)))
    parts[n - 1] = new
    return sep.join(parts)


class EditableMessage:
    """An HL7 v2 message (segments separated by CR, as stored) that can be edited by path.

    A leading BOM and whether the text ended with CR are kept; LF or CRLF segment endings are read
    as CR (the one normalization pass-through allows, DESIGN §3.5).  The text must start with an
    MSH (or BHS/FHS) segment whose MSH-1/MSH-2 are valid delimiters, else EditError: writing with
    guessed delimiters would corrupt the message.
    """

    __slots__ = ("field_sep", "encoding", "_comp", "_rep", "_sub", "_view_delims", "_bom",
                 "_final_cr", "_segs", "_names", "_origin", "_original", "_source",
                 "_edited")

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise EditError("an HL7 v2 message must be text")
        bom = ""
        if text[:1] == "\ufeff":
            bom, text = "\ufeff", text[1:]
        if "\n" in text:
            text = text.replace("\r\n", "\r").replace("\n", "\r")
        if text[:3] not in HEADER_SEGMENTS or len(text) < 5:
            raise EditError("not an HL7 v2 message: it does not start with an MSH segment")
        field_sep = text[3]
        end = text.find("\r")
        stop = text.find(field_sep, 4, end if end != -1 else len(text))
        encoding = text[4:stop if stop != -1 else end if end != -1 else len(text)]
        if not valid_delimiters(field_sep, encoding):
            raise EditError(f"not an HL7 v2 message: {text[:3]}-1/{text[:3]}-2 are not valid "
                            "delimiters")
        comp, rep, esc, sub = encoding_chars(encoding)
        self.field_sep, self.encoding = field_sep, encoding
        self._comp, self._rep, self._sub = comp, rep, sub
        self._view_delims = (field_sep, comp, rep, esc, sub, encoding)
        self._bom = bom
        self._final_cr = text[-1:] == "\r"
        self._source, self._edited = bom + text, False  # text() until something is written
        original = text.split("\r")
        if self._final_cr:
            original.pop()
        self._original = original
        self._segs: list[str | list[str]] = original.copy()
        self._names = [s[:3] if s[3:4] == field_sep else s.split(field_sep, 1)[0]
                       for s in original]
        self._origin: list[int | None] | None = None  # input position of each; None: unmoved

    # -- reading ---------------------------------------------------------------------------------

    def text(self) -> str:
        """The message as text: untouched segments as they came, edited ones joined again."""
        if not self._edited:
            return self._source
        sep = self.field_sep
        body = "\r".join([s if s.__class__ is str else sep.join(s) for s in self._segs])
        return self._bom + body + "\r" if self._final_cr else self._bom + body

    __str__ = text

    def __repr__(self) -> str:
        return f"<EditableMessage {len(self._segs)} segments>"

    def segment_names(self) -> list[str]:
        return list(self._names)

    def count(self, name: str) -> int:
        """How many segments are named ``name``."""
        return self._names.count(name)

    def get(self, path: str | Path | Target) -> str:
        """The encoded text at ``path``, escapes and inner separators as they are (what ``copy``
        moves).  A field without a repetition is its first repetition; a segment alone is the
        whole segment.  MSH.1 and MSH.2 are the delimiters.  '' for an absent position."""
        p = self._single(path, "get")
        position = self._position(p.segment, p.segment_rep)
        if position is None:
            return ""
        if p.field is None:
            return self._segment_text(position)
        return self._read(position, p, p.field_rep or 1)

    def get_decoded(self, path: str | Path | Target) -> str:
        """The value at ``path`` exactly as a template's ``msg[path]`` reads it (``HL7View``): a
        leaf is unescaped; a field or component holding inner separators is its raw text; a
        component with subcomponents reads as its first subcomponent."""
        p = self._single(path, "get")
        position = self._position(p.segment, p.segment_rep)
        if position is None:
            return ""
        view = SegmentView(self._segment_text(position), self._names[position], self._view_delims)
        return view.lookup(p.field, p.field_rep, p.component, p.subcomponent)

    def repetitions(self, path: str | Path | Target) -> list[str]:
        """The encoded repetitions of the field at ``path`` (``PID.3``); [] when absent or empty."""
        p = self._single(path, "repetitions")
        if p.field is None or p.field_rep is not None or p.component is not None:
            raise EditError(f"repetitions {_target(path).text}: takes a field path (SEG.FIELD)")
        position = self._position(p.segment, p.segment_rep)
        if position is None:
            return []
        fields = self._fields_of(position)
        name = self._names[position]
        if name in HEADER_SEGMENTS and p.field <= 2:
            return [self.field_sep if p.field == 1 else fields[1]]
        slot = p.field - 1 if name in HEADER_SEGMENTS else p.field
        value = fields[slot] if slot < len(fields) else ""
        return value.split(self._rep) if value else []

    def expand(self, path: str | Path | Target) -> list[Path]:
        """The concrete positions ``path`` names: one, or with ``(*)`` each existing occurrence."""
        target = _target(path)
        if not (target.every_segment or target.every_repetition):
            return [target.path]
        p = target.path
        occurrences = self._positions(p.segment)
        out = []
        for number, position in enumerate(occurrences, 1):
            if not target.every_segment and number != p.segment_rep:
                continue
            reps = ([p.field_rep] if not target.every_repetition
                    else range(1, self._repetition_count(position, p.field) + 1))
            out.extend(Path(p.segment, number, p.field, rep, p.component, p.subcomponent)
                       for rep in reps)
        return out

    # -- writing ---------------------------------------------------------------------------------

    def set(self, path: str | Path | Target, value: str, escape: bool = True) -> None:
        """Write ``value`` at ``path`` (every occurrence for ``(*)``), HL7-escaped unless
        ``escape=False``.  Pads what is missing; appends an absent segment at the end."""
        target = self._writable(path, "set")
        if not isinstance(value, str):
            raise EditError(f"set {target.text}: the value must be text")
        if escape:
            encoded = hl7_escape(value, self.encoding, self.field_sep)
        else:
            if any(brk in value for brk in _BREAKS):
                raise EditError(f"set {target.text}: the value holds a CR, LF, 0x0B or 0x1C, "
                                "which would add a segment (escape = false)")
            encoded = value
        p = target.path
        if not (target.every_segment or target.every_repetition):
            position = self._position(p.segment, p.segment_rep)
            if position is not None:  # the common case: one existing segment
                self._write(position, p, p.field_rep or 1, encoded)
                return
        for position, rep in self._targets(target, create=bool(encoded)):
            self._write(position, p, rep, encoded)

    def clear(self, path: str | Path | Target) -> None:
        """Empty the position at ``path``, its separators kept.  A field path without a repetition
        empties the whole field, every repetition.  An absent position stays absent."""
        target = self._writable(path, "clear")
        p = target.path
        whole_field = p.field_rep is None and p.component is None
        for position, rep in self._targets(target, create=False):
            if whole_field:
                fields = self._split(position)
                slot = self._slot(position, p.field)
                if slot < len(fields) and fields[slot]:
                    fields[slot] = ""
            else:
                self._write(position, p, rep, "")

    def delete_segments(self, pattern: str) -> int:
        """Remove every segment whose name matches ``pattern`` (a name or an fnmatch glob such as
        ``Z*``); returns how many.  The message's first (header) segment is never removed."""
        match = _segment_matcher(pattern)
        if match is None:
            doomed = self._positions(pattern)
        else:
            doomed = [i for i, name in enumerate(self._names) if match(name)]
        if not doomed:
            return 0
        if doomed[0] == 0:
            raise EditError(f"delete {pattern!r} would remove the {self._names[0]} header "
                            "segment")
        origin = self._moved()
        for position in reversed(doomed):
            del self._segs[position], self._names[position], origin[position]
        return len(doomed)

    def add_segment(self, text: str, after: str | None = None) -> int:
        """Insert one segment after the last segment named ``after``, else at the end; returns
        its 1-based position.  ``text`` is the encoded segment, its separators structure."""
        if not isinstance(text, str) or any(brk in text for brk in _BREAKS):
            raise EditError("add: the segment text must be one segment, without CR, LF, 0x0B or "
                            "0x1C")
        name = text[:3]
        if not _SEGMENT_NAME.fullmatch(name) or text[3:4] not in ("", self.field_sep):
            raise EditError("add: a segment starts with its three-character name and the field "
                            "separator")
        if name in HEADER_SEGMENTS:
            raise EditError(f"add: a {name} segment starts a new message or batch; not added")
        position = len(self._segs)
        if after is not None:
            if not isinstance(after, str) or not _SEGMENT_NAME.fullmatch(after):
                raise EditError(f"add: after = {after!r} is not a segment name")
            found = self._positions(after)
            if found:
                position = found[-1] + 1
        self._insert(position, text, name)
        return position + 1

    def decode(self, encoded: str) -> str:
        """Unescape encoded text of this message (e.g. from ``get``) with its own delimiters."""
        return unescape(encoded, self.encoding, self.field_sep)

    def changes(self) -> list[SegmentChange]:
        """What the edits changed, segment by segment, in message order; where segments were
        both removed and added between two kept ones, the removed come first, as in a diff.  A
        segment written back to its original text is not a change."""
        original, sep = self._original, self.field_sep
        out: list[SegmentChange] = []
        if self._origin is None:  # nothing added or removed
            for index, entry in enumerate(self._segs):
                if entry.__class__ is not str:
                    text = sep.join(entry)
                    if text != original[index]:
                        out.append(SegmentChange(index + 1, index + 1, original[index], text))
            return out
        added: list[SegmentChange] = []
        next_original = 0
        for after_index, (entry, origin) in enumerate(zip(self._segs, self._origin), 1):
            if origin is None:
                text = entry if entry.__class__ is str else sep.join(entry)
                added.append(SegmentChange(None, after_index, None, text))
                continue
            while next_original < origin:
                out.append(SegmentChange(next_original + 1, None, original[next_original], None))
                next_original += 1
            if added:
                out.extend(added)
                added = []
            next_original = origin + 1
            if entry.__class__ is not str:
                text = sep.join(entry)
                if text != original[origin]:
                    out.append(SegmentChange(origin + 1, after_index, original[origin], text))
        for gone in range(next_original, len(original)):
            out.append(SegmentChange(gone + 1, None, original[gone], None))
        out.extend(added)
        return out

    # -- internals -------------------------------------------------------------------------------

    def _single(self, path: str | Path | Target, verb: str) -> Path:
        target = _target(path)
        if target.every_segment or target.every_repetition:
            raise EditError(f"{verb} {target.text}: (*) names several positions; use expand()")
        return target.path

    def _writable(self, path: str | Path | Target, verb: str) -> Target:
        target = _target(path)
        p = target.path
        if p.field is None:
            raise EditError(f"{verb} {target.text}: needs a field position (SEG.FIELD...)")
        if p.field <= 2 and p.segment in HEADER_SEGMENTS:
            raise EditError(f"{verb} {target.text}: {p.segment}-1 and {p.segment}-2 are the "
                            "message's delimiters and cannot be changed")
        return target

    def _positions(self, name: str) -> list[int]:
        """Where the segments named ``name`` are.  A scan, not a cached index: a message has tens
        of segments, and a scan needs no invalidation when segments are added or deleted."""
        names = self._names
        if name not in names:
            return []
        return [i for i, seg_name in enumerate(names) if seg_name == name]

    def _position(self, name: str, occurrence: int) -> int | None:
        names, found = self._names, -1
        try:
            for _ in range(occurrence):
                found = names.index(name, found + 1)
        except ValueError:
            return None
        return found

    def _segment_text(self, position: int) -> str:
        entry = self._segs[position]
        return entry if entry.__class__ is str else self.field_sep.join(entry)

    def _fields_of(self, position: int) -> list[str]:
        """The fields of a segment, for reading: split afresh unless already split for writing."""
        entry = self._segs[position]
        return entry.split(self.field_sep) if entry.__class__ is str else entry

    def _split(self, position: int) -> list[str]:
        """The fields of a segment, for writing: the list is kept and joined by ``text()``."""
        entry = self._segs[position]
        if entry.__class__ is str:
            entry = entry.split(self.field_sep)
            self._segs[position] = entry
            self._edited = True
        return entry

    def _slot(self, position: int, field: int) -> int:
        """Index in the split list of field ``field``: MSH-1 is the separator itself, so MSH-n
        is piece n-1."""
        return field - 1 if self._names[position] in HEADER_SEGMENTS else field

    def _read(self, position: int, p: Path, rep: int) -> str:
        fields = self._fields_of(position)
        if p.field <= 2 and self._names[position] in HEADER_SEGMENTS:
            plain = rep == 1 and (p.component or 1) == 1 and (p.subcomponent or 1) == 1
            return (self.field_sep if p.field == 1 else fields[1]) if plain else ""
        slot = self._slot(position, p.field)
        return self._within(fields[slot], p, rep) if slot < len(fields) else ""

    def _within(self, field: str, p: Path, rep: int) -> str:
        """The encoded text of repetition ``rep`` (and ``p``'s component, subcomponent) of a
        field's text; '' when absent."""
        value = _piece(field, self._rep, rep)
        if value is not None and p.component is not None:
            value = _piece(value, self._comp, p.component)
            if value is not None and p.subcomponent is not None:
                value = _piece(value, self._sub, p.subcomponent)
        return value or ""

    def _repetition_count(self, position: int, field: int | None) -> int:
        if field is None:
            return 0
        fields = self._fields_of(position)
        if field <= 2 and self._names[position] in HEADER_SEGMENTS:
            return 1
        slot = self._slot(position, field)
        value = fields[slot] if slot < len(fields) else ""
        return value.count(self._rep) + 1 if value else 0

    def _targets(self, target: Target, create: bool) -> list[tuple[int, int]]:
        """(segment position, repetition) pairs a write goes to; with ``create`` an absent
        segment occurrence is appended (with any occurrences before it) first."""
        p = target.path
        positions = self._positions(p.segment)
        if target.every_segment:
            chosen = list(positions)
        elif p.segment_rep <= len(positions):
            chosen = [positions[p.segment_rep - 1]]
        elif create and not target.every_repetition:  # (*) of a new segment: no repetition
            for _ in range(p.segment_rep - len(positions)):
                if p.segment in HEADER_SEGMENTS:
                    raise EditError(f"set {target.text}: a {p.segment} segment starts a new "
                                    "message or batch; not added")
                self._insert(len(self._segs), p.segment, p.segment)
            chosen = [len(self._segs) - 1]
        else:
            chosen = []
        if not target.every_repetition:
            rep = p.field_rep or 1
            return [(position, rep) for position in chosen]
        return [(position, rep) for position in chosen
                for rep in range(1, self._repetition_count(position, p.field) + 1)]

    def _write(self, position: int, p: Path, rep: int, encoded: str) -> None:
        entry = self._segs[position]
        fields = entry.split(self.field_sep) if entry.__class__ is str else entry
        slot = self._slot(position, p.field)
        old = fields[slot] if slot < len(fields) else ""
        if not encoded and not self._within(old, p, rep):
            return  # already empty or absent: nothing to write, and no padding for nothing
        if p.component is None:
            new = _put(old, self._rep, rep, encoded)
        else:
            repetition = _piece(old, self._rep, rep) or ""
            if p.subcomponent is None:
                inner = _put(repetition, self._comp, p.component, encoded)
            else:
                component = _piece(repetition, self._comp, p.component) or ""
                inner = _put(repetition, self._comp, p.component,
                             _put(component, self._sub, p.subcomponent, encoded))
            new = _put(old, self._rep, rep, inner)
        if new == old and slot < len(fields):
            return
        if entry.__class__ is str:
            self._segs[position] = fields
            self._edited = True
        if slot >= len(fields):
            fields.extend([""] * (slot + 1 - len(fields)))
        fields[slot] = new

    def _moved(self) -> list[int | None]:
        """The input position of each segment, made when segments first move."""
        if self._origin is None:
            self._origin = list(range(len(self._segs)))
            self._edited = True
        return self._origin

    def _insert(self, position: int, text: str, name: str) -> None:
        self._segs.insert(position, text)
        self._names.insert(position, name)
        self._moved().insert(position, None)

