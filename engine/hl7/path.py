"""HL7 paths in Mirth/HAPI notation (DESIGN §3.3): ``SEG(n).FIELD(rep).COMPONENT.SUBCOMPONENT``.

python-hl7's own accessor (``m['PID.3.1']``) means field 3 *repetition* 1, which is not our notation,
so paths are parsed here and never handed to python-hl7.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_PATH = re.compile(r"([A-Z][A-Z0-9]{2})(?:\((\d+)\))?"
                   r"(?:\.(\d+)(?:\((\d+)\))?(?:\.(\d+)(?:\.(\d+))?)?)?")
_PATH_SHAPE = "SEG[(n)][.FIELD[(rep)][.COMPONENT[.SUBCOMPONENT]]], 1-based"


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed HL7 path (DESIGN §3.3).  None means "not given" (the first, or the whole)."""

    segment: str
    segment_rep: int = 1
    field: int | None = None
    field_rep: int | None = None
    component: int | None = None
    subcomponent: int | None = None


@lru_cache(maxsize=4096)
def parse_path(path: str) -> Path:
    """Parse ``SEG(n).FIELD(rep).COMPONENT.SUBCOMPONENT``; ValueError naming the path if invalid."""
    match = _PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise ValueError(f"invalid HL7 path {path!r}: expected {_PATH_SHAPE}")
    seg_rep, field, rep, comp, sub = (int(g) if g is not None else None for g in match.groups()[1:])
    if 0 in (seg_rep, field, rep, comp, sub):
        raise ValueError(f"invalid HL7 path {path!r}: indexes start at 1")
    return Path(match.group(1), seg_rep or 1, field, rep, comp, sub)


@lru_cache(maxsize=4096)
def parse_relative(key: str) -> tuple[int, int | None, int | None, int | None]:
    try:
        path = parse_path(f"SEG.{key}")
    except ValueError:
        shape = "FIELD[(rep)][.COMPONENT[.SUBCOMPONENT]]"
        raise ValueError(f"invalid HL7 segment path {key!r}: expected {shape}") from None
    return path.field, path.field_rep, path.component, path.subcomponent
