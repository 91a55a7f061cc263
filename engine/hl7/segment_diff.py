"""What differs between two HL7 v2 messages, segment by segment: the dashboard's view of an edit.

``switchboard test`` shows the changes the edit step recorded while it ran
(``EditableMessage.changes``); the dashboard has only what the store kept, the raw and the
transformed message, so it compares those two with ``difflib`` and reports the same
``SegmentChange`` rows (1-based positions; ``before`` None for an added segment, ``after`` None
for a deleted one).  A removed segment and the first added one with its name are one change (edited in place).
"""

from __future__ import annotations

import difflib
import re

from engine.hl7.editable import SegmentChange

SEGMENTS = re.compile(r"\r\n|\r|\n")


def split_segments(text: str) -> list[str]:
    return [segment for segment in SEGMENTS.split(text) if segment]


def segment_changes(before: str, after: str, *, limit: int = 200) -> list[SegmentChange]:
    """The changed segments of ``before`` -> ``after``, at most ``limit`` of them."""
    old, new = split_segments(before), split_segments(after)
    changes: list[SegmentChange] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        added = list(range(j1, j2))
        for i in range(i1, i2):
            j = next((j for j in added if new[j][:3] == old[i][:3]), None)
            if j is None:
                changes.append(SegmentChange(i + 1, None, old[i], None))
            else:
                added.remove(j)
                changes.append(SegmentChange(i + 1, j + 1, old[i], new[j]))
        changes += [SegmentChange(None, j + 1, None, new[j]) for j in added]
        if len(changes) >= limit:
            return changes[:limit]
    return changes
