"""The built-in template filters and globals: HL7 escaping and dates, money, CSV and XML.

They register through ``register_template_helpers``, the hook any plugin uses, so a site can see
exactly how to add its own.  Rules they keep:

* **Values in, text out, no surprises.**  ``None`` is ``''``; a ``StrictUndefined`` argument raises
  (so a misspelt name is still an error); a missing HL7 field is ``''`` already and gives ``''``
  (or ``None`` from ``days_between``) rather than an error, because real feeds leave dates empty.
* **Money is ``decimal.Decimal``, never float**, rounded half-up (how statements and agencies round,
  unlike Python's default half-even).  A value that is not a number raises: silently placing a
  debt of 0.00 would be worse than an ERROR an analyst can see and replay.
* **Errors never quote the value** (templates.py's rule): a helper that explains itself raises
  ``jinja2.TemplateRuntimeError`` with a message naming the helper, never the input.
* ``hl7_escape`` is what makes RELIABILITY 19 hold: ``| ^ ~ \\ &`` and CR/LF in a value become
  escape sequences, so a value can never add a field, component or segment.
"""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from jinja2 import TemplateRuntimeError

from engine.hl7.dates import format_hl7_datetime, parse_hl7_datetime
from engine.hl7.encoding import DEFAULT_ENCODING, DEFAULT_FIELD_SEP, build_segment, escape
from engine.hookspecs import hookimpl

_MONEY_JUNK = re.compile(r"[\s,$]")
# Characters XML 1.0 cannot carry at all, escaped or not.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"})


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


# -- HL7 ------------------------------------------------------------------------------------------


def hl7_escape(value, encoding: str = DEFAULT_ENCODING,
               field_sep: str = DEFAULT_FIELD_SEP) -> str:
    """HL7-escape a value placed into HL7 output (``{{ msg.name | hl7_escape }}``)."""
    return escape(_text(value), encoding, field_sep)


def _as_datetime(value) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return parse_hl7_datetime(_text(value))


def hl7_date(value, format: str = "%Y-%m-%d") -> str:  # noqa: A002 - the filter's keyword
    """An HL7 TS (``20240115``, ``20240115083000-0500``) formatted with strftime; '' when empty or
    not a date."""
    parsed = _as_datetime(value)
    return parsed.strftime(format) if parsed is not None else ""


def hl7_datetime(value) -> str:
    """An HL7 TS as ISO 8601 (``2024-01-15T08:30:00-05:00``; no offset when the TS has none)."""
    parsed = _as_datetime(value)
    return parsed.isoformat() if parsed is not None else ""


_now_stamp: list = [None, ""]  # [the whole second, its "second" HL7 TS]


def hl7_now(precision: str = "second") -> str:
    """The current local time as an HL7 TS with its UTC offset (``20240115083000-0500``).

    At the default precision the text changes once a second, so it is formatted once a second:
    a transform calling it per message spent most of its own time in ``datetime`` formatting."""
    if precision != "second":
        return format_hl7_datetime(datetime.now().astimezone(), precision)
    second = int(time.time())
    if _now_stamp[0] != second:
        _now_stamp[1] = format_hl7_datetime(datetime.fromtimestamp(second).astimezone(), precision)
        _now_stamp[0] = second
    return _now_stamp[1]


def hl7_segment(name: str, *fields) -> str:
    """One segment from plain values, each HL7-escaped: ``hl7_segment('NTE', 1, '', note)``.

    A list value is components, a list in it subcomponents; None is an empty field.
    """
    try:
        return build_segment(name, list(fields))
    except ValueError:
        raise TemplateRuntimeError(
            "hl7_segment: the name must be three capitals/digits other than MSH, BHS or FHS, "
            "and values nest at most two levels"
        ) from None


def days_between(hl7_date_a, hl7_date_b="") -> int | None:
    """Whole days from date a to date b (b defaults to today, local); None if either is empty or
    not a date.  ``days_between(msg['PV1.45'])`` is how long ago the discharge was."""
    first = _as_datetime(hl7_date_a)
    if first is None:
        return None
    if hl7_date_b == "" or hl7_date_b is None:
        second_day = date.today()
    else:
        second = _as_datetime(hl7_date_b)
        if second is None:
            return None
        second_day = second.date()
    return (second_day - first.date()).days


# -- money ----------------------------------------------------------------------------------------


def _decimal(value, helper: str) -> Decimal:
    if isinstance(value, bool):
        raise TemplateRuntimeError(f"{helper}: the value is not a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the shortest text of the float, not its binary expansion
    else:
        text = _MONEY_JUNK.sub("", _text(value))
        if text.startswith("(") and text.endswith(")"):  # accounting negative: (12.50)
            text = "-" + text[1:-1]
        if text in ("", "-", "+"):
            return Decimal(0)
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise TemplateRuntimeError(f"{helper}: the value is not a number") from None
    if not number.is_finite():
        raise TemplateRuntimeError(f"{helper}: the value is not a finite number")
    return number


def _quantize(value, places: int, helper: str) -> Decimal:
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 12:
        raise TemplateRuntimeError(f"{helper}: places must be a whole number from 0 to 12")
    try:
        amount = _decimal(value, helper).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    except InvalidOperation:
        raise TemplateRuntimeError(f"{helper}: the value is too large") from None
    return amount if amount else abs(amount)  # never "-0.00"


def money(value, places: int = 2) -> str:
    """A decimal string with exactly ``places`` decimals: '1,234.5' -> '1234.50', '' -> '0.00'.

    Accepts thousands separators, a dollar sign, spaces and accounting parentheses for negatives.
    """
    return f"{_quantize(value, places, 'money'):f}"


def cents(value) -> int:
    """The amount in whole cents as an int: '12.345' -> 1235, '' -> 0."""
    return int(_quantize(value, 2, "cents").scaleb(2))


# -- CSV and XML ----------------------------------------------------------------------------------


def csv_row(values) -> str:
    """One CSV line (no line ending) from a list, quoted per RFC 4180 by the csv module."""
    buffer = io.StringIO()
    # lineterminator must be CRLF here: the csv module only quotes CR/LF that are in it.
    csv.writer(buffer, lineterminator="\r\n").writerow(
        ["" if value is None else value for value in values]
    )
    return buffer.getvalue()[:-2]


def csv_field(value) -> str:
    """One CSV field, quoted only when it must be (a comma, a quote, CR or LF in it)."""
    text = _text(value)
    return csv_row([text]) if text else ""


def xml_escape(value) -> str:
    """Text safe in XML content and attribute values (``& < > " '`` as entities).

    Characters XML 1.0 cannot carry at all (control characters other than tab, CR, LF) become
    U+FFFD, so the document stays well-formed.
    """
    return _XML_INVALID.sub("\ufffd", _text(value)).translate(_XML_ENTITIES)


# -- other globals --------------------------------------------------------------------------------


def now() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


def today() -> date:
    """Today's local date (HL7 dates are the sender's local dates)."""
    return date.today()


FILTERS = {
    "hl7_escape": hl7_escape,
    "hl7_date": hl7_date,
    "hl7_datetime": hl7_datetime,
    "money": money,
    "cents": cents,
    "csv_field": csv_field,
    "csv_row": csv_row,
    "xml_escape": xml_escape,
}
GLOBALS = {
    "now": now,
    "today": today,
    "hl7_now": hl7_now,
    "hl7_segment": hl7_segment,
    "days_between": days_between,
}


@hookimpl
def register_template_helpers():
    return {"filters": dict(FILTERS), "globals": dict(GLOBALS)}
