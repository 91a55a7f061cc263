"""IMPORT-NOTES.md: everything the import could not convert, each item for a person to port.

Only what needs a person is listed (JavaScript filters and steps quoted in full, code templates,
channel and global scripts that are not Mirth's defaults, response transformers, attachments,
connectors and settings Switchboard lacks, environment variables with no value): a channel whose
every part converted has no entry, so ``--strict`` can gate an import in CI.  What was converted with
a known difference from Mirth is said in a comment in the channel file instead; where that difference
shows in what a destination sends (a Mirth quirk Switchboard does not copy, a message id that counts
differently), the channel's section also lists it under "Differences from Mirth", which needs nobody
and does not count as an item.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Note:
    where: str                  # "Source transformer, step 1 "Strip Z segments" (JavaScript)"
    what: str                   # what was not converted, and what the channel does meanwhile
    port_to: str                # the Switchboard feature to port it to
    code: str | None = None     # the original, quoted in full
    language: str = "javascript"


@dataclass
class Section:
    title: str
    intro: str = ""
    notes: list[Note] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


def _fence(code: str) -> str:
    longest, run = 0, 0
    for char in code:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render(sections: list[Section]) -> str:
    items = sum(len(section.notes) for section in sections)
    lines = ["# Mirth Connect import: what needs a person", ""]
    if not items:
        lines += ["Nothing: every channel, step and setting of the imported exports was converted.", ""]
    else:
        lines += [f"{items} item{'s' if items != 1 else ''} below could not be converted. Each one is left out of "
                  "the channel files (never half-converted), so the channels pass `switchboard check` but do not do "
                  "these things until a person ports them. The original is quoted in full.", ""]
    for section in sections:
        if not section.notes and not section.differences:
            continue
        lines += [f"## {section.title}", ""]
        if section.intro and section.notes:
            lines += [section.intro, ""]
        for index, note in enumerate(section.notes, 1):
            lines += [f"### {index}. {note.where}", "", note.what, "", f"**Port to:** {note.port_to}", ""]
            if note.code is not None:
                fence = _fence(note.code)
                lines += [f"{fence}{note.language}", note.code.rstrip("\n"), fence, ""]
        if section.differences:
            lines += ["### Differences from Mirth (converted; nothing to port)", ""]
            lines += [f"- {difference}" for difference in section.differences] + [""]
    return "\n".join(lines)
