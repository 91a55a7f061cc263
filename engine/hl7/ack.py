"""HL7 ACKs (DESIGN §3.5): building ours (AA/AE/AR mirroring the message) and reading a peer's."""

from __future__ import annotations

import time
from datetime import datetime

from engine.hl7.dates import format_hl7_datetime
from engine.hl7.encoding import (
    DEFAULT_ENCODING,
    DEFAULT_FIELD_SEP,
    encoding_chars,
    escape,
    normalize_segments,
    unescape,
)
from engine.hl7.msh import Msh, peek_msh

ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
# HL7 table 0357 (message error condition codes), for ERR-3.
ERROR_CODES = {"100": "Segment sequence error", "101": "Required field missing",
               "102": "Data type error", "103": "Table value not found",
               "200": "Unsupported message type", "201": "Unsupported event code",
               "207": "Application internal error"}


def build_ack(msh: Msh, code: str, text: str = "", error: str | None = None, *,
              now: datetime | None = None, control_id: str | None = None,
              error_code: str = "207") -> str:
    """An original-mode ACK mirroring ``msh`` (DESIGN §3.5), in the message's own delimiters.

    Copied fields (MSH-3..6, MSH-9.2, MSH-10..12) are copied verbatim, already escaped; our own
    text (MSA-3, ERR, a given control id) is escaped.  ``error`` adds a v2.5 ERR segment:
    ERR|||<error_code>^<table 0357 text>^HL70357|E|||<error>.  Every segment, the last one
    included, ends with CR (DESIGN §3.5).
    """
    if code not in ACK_CODES:
        raise ValueError(f"unknown acknowledgment code {code!r}")
    sep, enc = msh.field_sep, msh.encoding
    comp = encoding_chars(enc)[0]
    stamp = format_hl7_datetime(now) if now is not None else _now_stamp()
    trigger = msh.component(9, 2)
    msg_type = f"ACK{comp}{trigger}{comp}ACK" if trigger.strip() else "ACK"
    if control_id is not None:
        ack_id = escape(control_id, enc, sep)
    else:
        ack_id = "ACK" + (msh.control_id or stamp)
    header = sep.join(["MSH", enc, msh.field(5), msh.field(6), msh.field(3), msh.field(4), stamp,
                       "", msg_type, ack_id, msh.field(11), msh.field(12)])
    msa = ["MSA", code, msh.field(10)]
    if text:
        msa.append(escape(text, enc, sep))
    segments = [header, sep.join(msa)]
    if error is not None:
        condition = comp.join([escape(error_code, enc, sep),
                               escape(ERROR_CODES.get(error_code, ""), enc, sep), "HL70357"])
        segments.append(sep.join(["ERR", "", "", condition, "E", "", "", escape(error, enc, sep)]))
    return "".join(segment + "\r" for segment in segments)  # every segment ends with CR (§3.5)


_stamp = [-1, ""]  # [the second, its MSH-7 text]: every ACK of one second carries the same stamp


def _now_stamp() -> str:
    """``format_hl7_datetime(datetime.now())``, worked out once a second (MSH-7 has no fractions)."""
    second = int(time.time())
    if _stamp[0] != second:
        _stamp[:] = [second, format_hl7_datetime(datetime.fromtimestamp(second))]
    return _stamp[1]


_REJECT_MSH = Msh(DEFAULT_FIELD_SEP, DEFAULT_ENCODING,
                  ("MSH", DEFAULT_FIELD_SEP, DEFAULT_ENCODING, *[""] * 8, "P", "2.5"))


def build_reject(reason: str, *, now: datetime | None = None, error_code: str = "100") -> str:
    """AR for a frame with no usable MSH (RELIABILITY 12, 13): default delimiters, empty MSA-2,
    the reason in MSA-3 and ERR-7.  ``reason`` must be PHI-free."""
    return build_ack(_REJECT_MSH, "AR", reason, error=reason, now=now, error_code=error_code)


def parse_ack(text: str) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3) of a peer's ACK, read with the ACK's own delimiters.

    MSA-1 and MSA-2 are stripped but otherwise as sent (MSA-2 compares with the MSH-10 we sent);
    MSA-3 is unescaped.  ValueError (PHI-free) when there is no MSH or no MSA.
    """
    text = normalize_segments(text)
    msh = peek_msh(text)
    if msh is None:
        raise ValueError("the answer is not HL7: it does not start with an MSH segment")
    sep = msh.field_sep
    for segment in text.split("\r"):
        if segment == "MSA" or segment.startswith("MSA" + sep):
            fields = segment.split(sep) + ["", "", ""]
            return (fields[1].strip(), fields[2].strip(), unescape(fields[3], msh.encoding, sep))
    raise ValueError("the answer has no MSA segment")
