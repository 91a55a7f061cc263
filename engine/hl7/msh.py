"""The MSH segment read alone: what an ACK, the store and a filter on type need, without parsing the rest."""

from __future__ import annotations

from engine.hl7.encoding import encoding_chars, valid_delimiters


class Msh:
    """The MSH segment, split only into fields.  ``fields[n]`` is MSH-n (``fields[1]`` = MSH-1).

    Read-only by convention.  Every message's MSH is read by the acceptance check, the store's
    columns (type, control id, sender) and the ACK, so the values they read are worked out once
    and kept (a plain slotted class: a frozen dataclass pays ``object.__setattr__`` per field)."""

    __slots__ = ("field_sep", "encoding", "fields", "_control_id", "_message_type", "_sender")

    def __init__(self, field_sep: str, encoding: str, fields: tuple[str, ...]) -> None:
        self.field_sep, self.encoding, self.fields = field_sep, encoding, fields
        self._control_id = self._message_type = self._sender = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Msh):
            return NotImplemented
        return (self.field_sep, self.encoding, self.fields) == (other.field_sep, other.encoding, other.fields)

    def __hash__(self) -> int:
        return hash((self.field_sep, self.encoding, self.fields))

    def __repr__(self) -> str:
        return f"Msh(field_sep={self.field_sep!r}, encoding={self.encoding!r}, {len(self.fields) - 1} fields)"

    def field(self, n: int) -> str:
        """Raw (still escaped) MSH-n with the standard numbering; '' when absent."""
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def component(self, n: int, c: int = 1) -> str:
        """Raw component ``c`` of the first repetition of MSH-n; '' when absent."""
        comp, rep, _esc, _sub = encoding_chars(self.encoding)
        parts = self.field(n).split(rep, 1)[0].split(comp)
        return parts[c - 1] if c <= len(parts) else ""

    field_count = property(lambda self: len(self.fields) - 1, doc="MSH-1 counts as field 1")
    sender_facility = property(lambda self: self.component(4).strip())
    processing_id = property(lambda self: self.component(11).strip())
    version = property(lambda self: self.component(12).strip())
    charset = property(lambda self: self.component(18).strip())

    @property
    def control_id(self) -> str:
        if self._control_id is None:
            self._control_id = self.component(10).strip()
        return self._control_id

    @property
    def sender(self) -> str:
        if self._sender is None:
            self._sender = self.component(3).strip()
        return self._sender

    @property
    def message_type(self) -> str:
        """'ADT^A08' (MSH-9.1 and MSH-9.2, always joined by '^'), 'ADT' without a trigger."""
        if self._message_type is None:
            code, trigger = self.component(9).strip(), self.component(9, 2).strip()
            self._message_type = f"{code}^{trigger}" if code and trigger else code
        return self._message_type


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
