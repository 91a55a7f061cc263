"""HL7 v2 encoding: the delimiters of MSH-1/MSH-2, segment endings, escaping and building segments.

Why not python-hl7's ``escape``/``unescape``: they hex-escape every non-ASCII character (an 'é'
becomes bytes invalid in a UTF-8 message) and log the whole field on an unknown sequence (PHI in
the log).  Here one ``str.translate`` / one regex keeps non-ASCII text as is and hex-escapes
control characters (CR, LF, the MLLP bytes) so no value can add a segment or break a frame.
"""

from __future__ import annotations

import re
from functools import lru_cache

DEFAULT_FIELD_SEP = "|"
DEFAULT_ENCODING = "^~\\&"
HEADER_SEGMENTS = frozenset({"MSH", "BHS", "FHS"})
_TRIM = " \t\r\n"
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def normalize_segments(text: str) -> str:
    """The only changes made to a received HL7 message (DESIGN §3.5, RELIABILITY 16): a leading BOM
    is dropped, CRLF and LF segment endings become CR, and a missing final CR is added.

    Nothing else is touched: trailing spaces, empty trailing fields, blank segments, 0x0B/0x1C (the
    caller must still see them to answer AR, RELIABILITY 6, 7).  Idempotent.  An empty or blank
    text gets no CR added (it is not a message; the caller answers AR).
    """
    if text[:1] == "\ufeff":
        text = text[1:]
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    if text and text[-1] != "\r" and text.strip(_TRIM):
        text += "\r"
    return text


def hl7_output(text: str) -> str:
    """HL7 a template wrote (DESIGN §3.3): lines (CR, LF or CRLF) become CR-terminated segments;
    blank lines (what ``{% if %}`` lines leave) and blank space before the first segment are
    dropped; a segment's own trailing spaces are data and kept; every segment, the last one
    included, ends with CR (§3.5)."""
    lines = text.lstrip(_TRIM).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(line + "\r" for line in lines if line.strip(" \t"))


def with_final_cr(text: str) -> str:
    """An HL7 message (one starting with MSH, FHS or BHS) as it goes on the wire: its last segment
    ends with CR (§3.5).  Anything else, and HL7 already ending with CR, is returned unchanged."""
    if text[:3] in HEADER_SEGMENTS and text[-1:] != "\r":
        return normalize_segments(text)
    return text


@lru_cache(maxsize=64)
def encoding_chars(encoding: str) -> tuple[str, str, str, str]:
    """(component, repetition, escape, subcomponent) from MSH-2, defaults for absent ones."""
    defaults = DEFAULT_ENCODING
    return tuple(encoding[i] if len(encoding) > i else defaults[i] for i in range(4))


@lru_cache(maxsize=64)
def valid_delimiters(field_sep: str, encoding: str) -> bool:
    chars = field_sep + encoding
    return (1 <= len(encoding) <= 5 and len(set(chars)) == len(chars)
            and not any(c.isalnum() or c.isspace() for c in chars))


@lru_cache(maxsize=64)
def _escape_table(encoding: str, field_sep: str) -> dict[int, str]:
    comp, rep, esc, sub = encoding_chars(encoding)
    table = {code: f"{esc}X{code:02X}{esc}" for code in [*range(0x20), 0x7F] if code != 0x09}
    for char, name in ((field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T"), (esc, "E")):
        table[ord(char)] = f"{esc}{name}{esc}"
    if len(encoding) >= 5:  # v2.7 truncation character
        table[ord(encoding[4])] = f"{esc}P{esc}"
    return table


def escape(value: str, encoding: str = DEFAULT_ENCODING,
           field_sep: str = DEFAULT_FIELD_SEP) -> str:
    """HL7-escape a value (RELIABILITY 19): delimiters become \\F\\ \\S\\ \\R\\ \\T\\ \\E\\, control
    characters (CR, LF, 0x0B, 0x1C...) become \\Xhh\\; tab and non-ASCII text are kept."""
    if not value:
        return ""
    return value.translate(_escape_table(encoding, field_sep))


@lru_cache(maxsize=64)
def _unescaper(encoding: str, field_sep: str):
    comp, rep, esc, sub = encoding_chars(encoding)
    names = {"F": field_sep, "S": comp, "R": rep, "T": sub, "E": esc, ".br": "\r", "H": "", "N": ""}
    if len(encoding) >= 5:
        names["P"] = encoding[4]
    pattern = re.compile(f"{re.escape(esc)}([^{re.escape(esc)}]*){re.escape(esc)}")

    def replace(match: re.Match) -> str:
        body = match.group(1)
        known = names.get(body)
        if known is not None:
            return known
        if body[:1] in "Xx" and len(body) % 2 == 1 and _HEX.fullmatch(body, 1):
            data = bytes.fromhex(body[1:])
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        return match.group(0)  # unknown sequence: kept verbatim, nothing is lost

    return lambda value: pattern.sub(replace, value)


def unescape(value: str, encoding: str = DEFAULT_ENCODING,
             field_sep: str = DEFAULT_FIELD_SEP) -> str:
    """Decode HL7 escape sequences.  \\Xhh..\\ is read as UTF-8 (else Latin-1); \\H\\ and \\N\\
    (highlighting) vanish; an unknown or unterminated sequence is kept verbatim."""
    esc = encoding[2] if len(encoding) > 2 else "\\"
    if not value or esc not in value:
        return value or ""
    return _unescaper(encoding, field_sep)(value)


def build_segment(name: str, fields: list, encoding: str = DEFAULT_ENCODING,
                  field_sep: str = DEFAULT_FIELD_SEP) -> str:
    """One segment from plain values, each escaped.  A list/tuple value is components (joined by
    the component separator); a list inside it is subcomponents.  None is an empty field."""
    if not isinstance(name, str) or not _SEGMENT_NAME.fullmatch(name):
        raise ValueError(f"invalid segment name {name!r}")
    if name in HEADER_SEGMENTS:
        raise ValueError(f"{name} carries the delimiters and cannot be built from values")
    comp, _rep, _esc, sub = encoding_chars(encoding)

    def encode(value, depth: int) -> str:
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            if depth == 2:
                raise ValueError("values nest at most two levels (components, subcomponents)")
            return (comp if depth == 0 else sub).join(encode(v, depth + 1) for v in value)
        return escape(str(value), encoding, field_sep)

    return field_sep.join([name, *(encode(v, 0) for v in fields)])
