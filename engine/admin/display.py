"""How the dashboard shows stored content: HL7 one segment per line with field numbers on hover;
JSON and XML indented (``pretty``).

Everything here returns ``markupsafe.Markup`` built from *escaped* pieces: message content is
shown as text, never as HTML (a field holding ``<script>`` is printed as those characters).
Each field is a ``<span title="PID-5">``; MSH (and FHS/BHS) count as the standard does, the field
separator itself being MSH-1 and the encoding characters MSH-2.
"""

from __future__ import annotations

import json
import re

from markupsafe import Markup, escape

HEADERS = ("MSH", "FHS", "BHS")
SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}$")
LINES = re.compile(r"\r\n|\r|\n")
MAX_TITLED_FIELDS = 500     # fields of one segment given a numbered span; the rest stay text


def looks_like_hl7(text: str | None) -> bool:
    return bool(text) and text.startswith(HEADERS) and len(text) > 8


def hl7_markup(text: str | None) -> Markup:
    """Segments on their own lines, fields in titled spans; non-HL7 text comes back escaped.

    Built with plain string joins around ``escape`` (C): ``Markup.format`` per span cost ~15 µs,
    too much for a page that must not hold the GIL long.  Segment names are checked against
    ``SEGMENT_NAME`` and field numbers are ints, so only values and separators need escaping."""
    if text is None:
        return Markup("")
    if not looks_like_hl7(text):
        return escape(text)
    separator = text[3]
    sep = str(escape(separator))
    lines = []
    for segment in LINES.split(text):
        if not segment:
            continue
        fields = segment.split(separator)
        name = fields[0]
        if not SEGMENT_NAME.match(name):
            lines.append(str(escape(segment)))
            continue
        header = name in HEADERS
        parts = [f'<span class="seg">{name}</span>']
        for index, value in enumerate(fields[1:], 1):
            if index > MAX_TITLED_FIELDS:          # a pathological segment: the rest as plain text
                parts.append(str(escape(separator + separator.join(fields[index:]))))
                break
            if header and index == 1:
                parts.append(f'<span class="sep" title="{name}-1">{sep}</span>')
            else:
                parts.append(sep)
            parts.append(f'<span class="f" title="{name}-{index + 1 if header else index}">{escape(value)}</span>')
        lines.append("".join(parts))
    return Markup("\n".join(lines))


def age(seconds) -> str:
    """12s, 3m 20s, 2h 5m, 3d 4h: how long the oldest queued delivery has waited."""
    try:
        total = int(float(seconds or 0))
    except (TypeError, ValueError):
        return ""
    if total <= 0:
        return ""
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


XML_TOKENS = re.compile(r"(<[^<>]*>)")
MAX_PRETTY = 256 * 1024     # characters: larger contents are shown as they are


def pretty(text: str | None) -> str | None:
    """JSON and XML indented for reading (two spaces); anything else, HL7 included, unchanged.
    Only the display changes: downloads give the stored content exactly."""
    if not text or len(text) > MAX_PRETTY or looks_like_hl7(text):
        return text
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):
            return text
    if stripped.startswith("<") and stripped.endswith(">"):
        return indent_xml(stripped)
    return text


def indent_xml(text: str) -> str:
    """One tag or text run per line, indented by depth; a tokenizer, not a parser (nothing is
    resolved or fetched: entities and DTDs stay text).  Text between an opening and its closing
    tag stays on the tag's line (``<given>JANE</given>``)."""
    lines: list[str] = []
    depth = 0
    parts = [part for part in XML_TOKENS.split(text) if part.strip()]
    index = 0
    while index < len(parts):
        part = parts[index].strip()
        closing = part.startswith("</")
        opening = part.startswith("<") and not closing and not part.endswith("/>") and part[1:2] not in "?!"
        if opening and index + 2 < len(parts) and not parts[index + 1].startswith("<") \
                and parts[index + 2].strip().startswith("</"):
            lines.append("  " * depth + part + parts[index + 1].strip() + parts[index + 2].strip())
            index += 3
            continue
        if closing:
            depth = max(depth - 1, 0)
        lines.append("  " * depth + part)
        if opening:
            depth += 1
        index += 1
    return "\n".join(lines)
