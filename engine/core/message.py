"""The message as the pipeline sees it: raw text, its inbound type, and a lazily parsed view.

Parsing is deferred to the first ``view`` access (DESIGN §2 "touch only what is needed"): the
MLLP path reads only MSH (``peek_msh``) to ACK, and a message whose filters need nothing is never
parsed.  Errors are ``MessageParseError`` with PHI-free text: positions and kinds, never content.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime

from engine.hl7.acceptance import check_hl7
from engine.hl7.encoding import normalize_segments
from engine.hl7.msh import Msh, peek_msh
from engine.hl7.view import HL7View
from engine.x12.errors import X12SyntaxError
from engine.x12.view import X12View

INBOUND_TYPES = frozenset({"hl7", "json", "csv", "xml", "text", "x12"})
# The envelope identifiers every X12 message carries as metadata (DESIGN §3.11): path -> key.
X12_ENVELOPE_META = {"ISA.6": "isa6", "ISA.8": "isa8", "ISA.13": "isa13", "GS.2": "gs2",
                     "GS.3": "gs3", "GS.6": "gs6", "ST.1": "st1", "ST.2": "st2"}
_UNSET = object()
_DTD = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class MessageParseError(ValueError):
    """The text does not parse as its inbound type.  The message never quotes the content."""


class XmlView:
    """``view['tag/path']`` is ``root.findtext(path)`` ('' when missing); ``.root`` the element."""

    __slots__ = ("root",)

    def __init__(self, root: ElementTree.Element):
        self.root = root

    def __getitem__(self, path: str) -> str:
        try:
            return self.root.findtext(path, default="")
        except (SyntaxError, TypeError, KeyError) as error:
            raise ValueError(f"invalid XML path {path!r}") from error

    def get(self, path: str, default: str = "") -> str:
        return self[path] or default

    def findall(self, path: str) -> list[ElementTree.Element]:
        try:
            return self.root.findall(path)
        except (SyntaxError, TypeError, KeyError) as error:
            raise ValueError(f"invalid XML path {path!r}") from error

    def __repr__(self) -> str:
        return f"<XmlView root={self.root.tag!r}>"


def _parse_json(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise MessageParseError(
            f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise MessageParseError("invalid JSON: nested too deeply") from None


def _parse_csv(raw: str) -> dict[str, str]:
    """Header line + one row line -> dict keyed by header (DESIGN §3.2, file source csv)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(raw.lstrip("\ufeff"), newline="")) if row]
    except csv.Error as error:
        raise MessageParseError(f"invalid CSV: {error}") from None
    if len(rows) != 2:
        raise MessageParseError(
            f"a CSV message is a header line and one row; found {len(rows)} lines")
    header, row = [name.strip() for name in rows[0]], rows[1]
    if len(set(header)) != len(header):
        raise MessageParseError("invalid CSV: the header repeats a column name")
    if len(row) > len(header):
        raise MessageParseError(
            f"invalid CSV: the row has {len(row)} values for {len(header)} columns")
    row = row + [""] * (len(header) - len(row))
    return dict(zip(header, row))


def _parse_xml(raw: str) -> XmlView:
    """Refuse any DTD or entity declaration before parsing (RELIABILITY 29)."""
    if _DTD.search(raw):
        raise MessageParseError("XML with a DTD or entity declaration is refused")
    try:
        return XmlView(ElementTree.fromstring(raw))
    except ElementTree.ParseError as error:
        line, column = error.position
        raise MessageParseError(f"invalid XML at line {line} column {column}") from None


def _parse_hl7(raw: str) -> HL7View:
    text = normalize_segments(raw)
    if peek_msh(text) is None:
        raise MessageParseError("not an HL7 message: the first segment is not MSH")
    return HL7View(text)


def _parse_x12(raw: str) -> X12View:
    """A transaction set as the sources store it: an interchange holding one ST..SE."""
    if not raw.lstrip("\ufeff\r\n\t ").startswith(("ISA", "ST")):
        raise MessageParseError("not an X12 message: it does not begin with ISA or ST")
    try:
        return X12View(raw)
    except X12SyntaxError as error:
        raise MessageParseError(f"not a readable X12 interchange: {error}") from None


class X12Header:
    """What the store keeps of an X12 message in the columns HL7 fills from MSH: the set id as
    the type ('835'), ISA-13 as the control id (the number a payer quotes), ISA-06 as sender."""

    __slots__ = ("control_id", "message_type", "sender")

    def __init__(self, view: X12View) -> None:
        self.message_type = view["ST.1"]
        self.control_id = view["ISA.13"].strip()
        self.sender = view["ISA.6"].strip()


def x12_envelope_meta(view: X12View) -> dict[str, str]:
    """The envelope identifiers of an X12 message (``X12_ENVELOPE_META``), padding stripped."""
    return {key: view[path].strip() for path, key in X12_ENVELOPE_META.items()}


_PARSERS = {"hl7": _parse_hl7, "x12": _parse_x12, "json": _parse_json, "csv": _parse_csv, "xml": _parse_xml,
            "text": lambda raw: raw}


def _check_inbound(inbound: str) -> None:
    if inbound not in INBOUND_TYPES:
        raise ValueError(f"unknown inbound type {inbound!r}; use one of {sorted(INBOUND_TYPES)}")


class Message:
    """One message.  ``view`` parses on first use and caches: an ``HL7View`` for hl7, the decoded
    object for json, a dict for csv, an ``XmlView`` for xml, an ``X12View`` for x12, the string
    for text.  ``msh`` is the MSH for hl7 and an ``X12Header`` for x12 (type, control id, sender
    for the store's columns)."""

    __slots__ = ("raw", "inbound", "id", "channel", "received_at", "_view", "_msh")

    def __init__(self, raw: str, inbound: str = "hl7", *, id: int | None = None,  # noqa: A002
                 channel: str = "", received_at: datetime | None = None, msh: Msh | None = None):
        """``msh``: the MSH a source already read from ``raw`` (its acceptance check), so that it
        is not read again here; only for hl7."""
        _check_inbound(inbound)
        self.raw, self.inbound, self.id = raw, inbound, id
        self.channel, self.received_at = channel, received_at
        self._view = _UNSET
        self._msh = msh if msh is not None and inbound == "hl7" else _UNSET

    @property
    def view(self):
        if self._view is _UNSET:
            if self.inbound == "hl7" and self._msh is not _UNSET and self._msh is not None:
                self._view = HL7View(normalize_segments(self.raw))  # its MSH was read already
            else:
                self._view = _PARSERS[self.inbound](self.raw)
        return self._view

    @property
    def msh(self) -> Msh | None:
        if self._msh is _UNSET:
            if self.inbound == "x12":
                try:
                    self._msh = X12Header(self.view)
                except MessageParseError:
                    self._msh = None
            else:
                self._msh = peek_msh(self.raw) if self.inbound == "hl7" else None
        return self._msh

    @property
    def message_type(self) -> str:
        msh = self.msh
        return msh.message_type if msh is not None else ""

    @property
    def control_id(self) -> str:
        msh = self.msh
        return msh.control_id if msh is not None else ""

    def __repr__(self) -> str:
        return f"<Message id={self.id!r} inbound={self.inbound} channel={self.channel!r}>"


def parse_inbound(raw: str, inbound: str) -> None:
    """Validate eagerly (the HTTP source answers 400 before storing).

    For hl7 this is the one acceptance check of every HL7 source (``engine.hl7.acceptance``):
    only MSH is read.
    """
    _check_inbound(inbound)
    if inbound != "hl7":
        _PARSERS[inbound](raw)
        return
    _msh, problem = check_hl7(normalize_segments(raw))
    if problem is not None:
        raise MessageParseError(problem)
