"""The MSH segment read alone: what an ACK, the store and a filter on type need, without parsing the rest."""

from __future__ import annotations

from dataclasses import dataclass

from engine.hl7.encoding import encoding_chars, valid_delimiters


@dataclass(frozen=True, slots=True)
class Msh:
    """The MSH segment, split only into fields.  ``fields[n]`` is MSH-n (``fields[1]`` = MSH-1)."""

    field_sep: str
    encoding: str
    fields: tuple[str, ...]

    def field(self, n: int) -> str:
        """Raw (still escaped) MSH-n with the standard numbering; '' when absent."""
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def component(self, n: int, c: int = 1) -> str:
        """Raw component ``c`` of the first repetition of MSH-n; '' when absent."""
        comp, rep, _esc, _sub = encoding_chars(self.encoding)
        parts = self.field(n).split(rep, 1)[0].split(comp)
        return parts[c - 1] if c <= len(parts) else ""

    field_count = property(lambda self: len(self.fields) - 1, doc="MSH-1 counts as field 1")
    control_id = property(lambda self: self.component(10).strip())
    sender = property(lambda self: self.component(3).strip())
    sender_facility = property(lambda self: self.component(4).strip())
    processing_id = property(lambda self: self.component(11).strip())
    version = property(lambda self: self.component(12).strip())
    charset = property(lambda self: self.component(18).strip())

    @property
    def message_type(self) -> str:
        """'ADT^A08' (MSH-9.1 and MSH-9.2, always joined by '^'), 'ADT' without a trigger."""
        code, trigger = self.component(9).strip(), self.component(9, 2).strip()
        return f"{code}^{trigger}" if code and trigger else code


def peek_msh(text: str) -> Msh | None:
    """Split only the first segment; None unless it is MSH with valid delimiters (MSH-1, MSH-2)."""
    if text[:1] == "\ufeff":
        text = text[1:]
    if len(text) < 5 or not text.startswith("MSH"):
        return None
    end = len(text)
    for stop in ("\r", "\n"):
        found = text.find(stop, 4, end)
        if found != -1:
            end = found
    field_sep = text[3]
    parts = text[:end].split(field_sep)
    if not valid_delimiters(field_sep, parts[1]):
        return None
    return Msh(field_sep, parts[1], ("MSH", field_sep, *parts[1:]))
