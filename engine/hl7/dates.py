"""HL7 dates and times (DTM): parsed with ``hl7.parse_datetime`` after a strict shape check; formatted."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import hl7

_DTM = re.compile(r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?"
                  r"(?:[+-]\d{4})?")
_PRECISION = {"year": 4, "month": 6, "day": 8, "hour": 10, "minute": 12, "second": 14}


def parse_hl7_datetime(value: str) -> datetime | None:
    """An HL7 DTM/TS (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]) as datetime; None for '' or junk.

    An offset gives an aware datetime (``datetime.timezone``); none gives a naive one.
    """
    value = (value or "").strip()
    if not _DTM.fullmatch(value):
        return None
    try:
        parsed = hl7.parse_datetime(value)
    except (ValueError, OverflowError):
        return None
    if parsed is not None and parsed.tzinfo is not None:
        parsed = parsed.replace(tzinfo=timezone(parsed.utcoffset()))
    return parsed


def format_hl7_datetime(dt: datetime | date, precision: str = "second") -> str:
    """HL7 DTM text at ``precision`` (year, month, day, hour, minute, second, millisecond); an aware
    datetime gets its +/-HHMM offset."""
    if not isinstance(dt, datetime):
        dt = datetime(dt.year, dt.month, dt.day)
    full = (f"{dt.year:04d}{dt.month:02d}{dt.day:02d}"
            f"{dt.hour:02d}{dt.minute:02d}{dt.second:02d}")
    if precision == "millisecond":
        out = f"{full}.{dt.microsecond // 1000:03d}"
    elif precision in _PRECISION:
        out = full[: _PRECISION[precision]]
    else:
        raise ValueError(f"unknown precision {precision!r}; use {[*_PRECISION, 'millisecond']}")
    offset = dt.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        out += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return out
