"""The built-in template helpers, called directly and through the sandboxed environment."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ElementTree
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from jinja2 import TemplateRuntimeError

from engine.hl7.dates import format_hl7_datetime, parse_hl7_datetime
from engine.core import template_helpers
from engine.hl7.view import HL7View
from engine.core.plugins import new_manager
from engine.core.template_helpers import (
    cents,
    csv_field,
    csv_row,
    days_between,
    hl7_date,
    hl7_datetime,
    hl7_escape,
    hl7_now,
    money,
    now,
    today,
    xml_escape,
)
from engine.core.templates import TemplateError, Templates

MSH = "MSH|^~\\&|EPIC|MAIN|AGENCY|AG|20240115083000||ADT^A08|MSG0001|P|2.5"
HOSTILE = "O'NEIL|X^Y~Z\\W&V\rMSH|^~\\&|EVIL\nZZZ|1\x0b\x1c"


@pytest.fixture
def templates():
    """An environment built from what the hook returns, as the engine builds it."""
    manager = new_manager()
    manager.register(template_helpers, name="engine.core.template_helpers")
    (helpers,) = manager.hook.register_template_helpers()
    return Templates(None, filters=helpers["filters"], globals=helpers["globals"])


def render(templates, source, **context):
    return templates.from_string(source, "t").render(context)


def test_hook_registers_every_helper(templates):
    assert set(template_helpers.FILTERS) <= set(templates.environment.filters)
    assert set(template_helpers.GLOBALS) <= set(templates.environment.globals)


# -- HL7 escaping (RELIABILITY 19) ------------------------------------------------------------


@pytest.mark.parametrize("char, sequence", [
    ("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("\\", "\\E\\"), ("&", "\\T\\"),
])
def test_hl7_escape_turns_each_delimiter_into_its_sequence(char, sequence):
    assert hl7_escape(f"a{char}b") == f"a{sequence}b"


def test_hl7_escape_leaves_carriage_return_no_way_to_end_a_segment():
    escaped = hl7_escape("line1\rline2\nline3")
    assert "\r" not in escaped and "\n" not in escaped


def test_hl7_escape_of_none_and_numbers():
    assert hl7_escape(None) == ""
    assert hl7_escape(12.5) == "12.5"


def test_escaped_value_cannot_inject_fields_or_segments(templates):
    source = "PID|1||{{ mrn | hl7_escape }}||{{ family | hl7_escape }}^{{ given | hl7_escape }}\n"
    pid = render(templates, source, mrn=HOSTILE, family=HOSTILE, given="ANN")
    view = HL7View(MSH + "\r" + pid.rstrip("\n"))
    assert view.segment_names() == ["MSH", "PID"]
    assert view["PID.3.1"] == HOSTILE
    assert view["PID.5.1"] == HOSTILE
    assert view["PID.5.2"] == "ANN"
    assert view["PID.6"] == ""
    assert len(view.segments("PID")[0].text.split("|")) == 6


def test_hl7_segment_builds_an_escaped_segment(templates):
    segment = render(templates, "{{ hl7_segment('NTE', 1, '', note, ['A|B', 'C']) }}", note=HOSTILE)
    view = HL7View(MSH + "\r" + segment)
    assert view.segment_names() == ["MSH", "NTE"]
    assert view["NTE.1"] == "1"
    assert view["NTE.3"] == HOSTILE
    assert (view["NTE.4.1"], view["NTE.4.2"]) == ("A|B", "C")


def test_hl7_segment_refuses_a_header_segment_without_quoting_values(templates):
    with pytest.raises(TemplateError) as caught:
        render(templates, "{{ hl7_segment('MSH', secret) }}", secret="MRN123")
    assert caught.value.reason.startswith("hl7_segment: ")
    assert "MRN123" not in str(caught.value)


# -- dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, fmt, expected", [
    ("20240115", "%Y-%m-%d", "2024-01-15"),
    ("20240115083000-0500", "%m/%d/%Y %H:%M", "01/15/2024 08:30"),
    ("202401150830", "%Y-%m-%dT%H:%M", "2024-01-15T08:30"),
    (" 20240115 ", "%Y-%m-%d", "2024-01-15"),
    (date(2024, 2, 29), "%d.%m.%Y", "29.02.2024"),
    ("", "%Y-%m-%d", ""),
    (None, "%Y-%m-%d", ""),
    ("not a date", "%Y-%m-%d", ""),
    ("20241350", "%Y-%m-%d", ""),
])
def test_hl7_date(value, fmt, expected):
    assert hl7_date(value, fmt) == expected


def test_hl7_date_default_format_in_a_template(templates):
    assert render(templates, "{{ d | hl7_date }}|{{ d | hl7_date('%Y') }}", d="19800101") == "1980-01-01|1980"


@pytest.mark.parametrize("value, expected", [
    ("20240115083000-0500", "2024-01-15T08:30:00-05:00"),
    ("20240115083000+0130", "2024-01-15T08:30:00+01:30"),
    ("20240115083000", "2024-01-15T08:30:00"),
    ("20240115", "2024-01-15T00:00:00"),
    ("", ""),
    ("2024-01-15", ""),
])
def test_hl7_datetime(value, expected):
    assert hl7_datetime(value) == expected


def test_hl7_now_is_current_and_parses_back():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = hl7_now()
    after = datetime.now(timezone.utc)
    parsed = parse_hl7_datetime(stamp)
    assert parsed is not None and parsed.tzinfo is not None
    assert before <= parsed <= after


def test_now_and_today():
    before = datetime.now(timezone.utc)
    value = now()
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert before <= value <= datetime.now(timezone.utc)
    day_before = date.today()
    assert day_before <= today() <= date.today()


@pytest.mark.parametrize("a, b, expected", [
    ("20240101", "20240131", 30),
    ("20240131", "20240101", -30),
    ("20240228", "20240301", 2),
    ("202401012359", "202401020001", 1),
    (date(2024, 1, 1), "20250101", 366),
    ("", "20240101", None),
    ("junk", "20240101", None),
    ("20240101", "junk", None),
])
def test_days_between(a, b, expected):
    assert days_between(a, b) == expected


def test_days_between_defaults_to_today(templates):
    ninety_days_ago = format_hl7_datetime(date.today() - timedelta(days=90), "day")
    assert days_between(ninety_days_ago) == 90
    assert render(templates, "{{ days_between(d) > 60 }}", d=ninety_days_ago) == "True"


# -- money ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, places, expected", [
    ("123.4", 2, "123.40"),
    ("-12", 2, "-12.00"),
    ("1,234.5", 2, "1234.50"),
    ("", 2, "0.00"),
    (None, 2, "0.00"),
    ("   ", 2, "0.00"),
    ("$1,000", 2, "1000.00"),
    ("(12.50)", 2, "-12.50"),
    ("+7", 2, "7.00"),
    ("0.005", 2, "0.01"),        # half-up, not half-even
    ("2.675", 2, "2.68"),        # float arithmetic would give 2.67
    ("-2.675", 2, "-2.68"),
    ("-0.001", 2, "0.00"),       # never a negative zero
    ("1e3", 2, "1000.00"),
    (Decimal("1.005"), 2, "1.01"),
    (3, 2, "3.00"),
    (0.1, 2, "0.10"),
    ("123.456", 0, "123"),
    ("123.4", 3, "123.400"),
    ("99999999999999.99", 2, "99999999999999.99"),
])
def test_money(value, places, expected):
    assert money(value, places) == expected


@pytest.mark.parametrize("value", ["abc", "12.3.4", "NaN", "Infinity", "1e40", True, "1-2"])
def test_money_refuses_what_is_not_an_amount(value):
    with pytest.raises(TemplateRuntimeError):
        money(value)


@pytest.mark.parametrize("places", [-1, 13, "2", 1.5])
def test_money_refuses_bad_places(places):
    with pytest.raises(TemplateRuntimeError):
        money("1", places)


def test_money_error_in_a_template_does_not_quote_the_value(templates):
    with pytest.raises(TemplateError) as caught:
        render(templates, "{{ msg['PID.5.1'] | money }}", msg=HL7View(MSH + "\rPID|1||||DOE"))
    assert caught.value.reason == "money: the value is not a number"
    assert "DOE" not in str(caught.value)


def test_money_in_a_template(templates):
    assert render(templates, "{{ a | money }} {{ a | money(0) }}", a="1,234.5") == "1234.50 1235"


@pytest.mark.parametrize("value, expected", [
    ("12.345", 1235), ("", 0), ("-1.5", -150), ("1,234.56", 123456), (Decimal("0.01"), 1), (7, 700),
])
def test_cents(value, expected):
    result = cents(value)
    assert result == expected and type(result) is int


# -- CSV and XML ------------------------------------------------------------------------------


def read_csv_line(line: str) -> list[str]:
    return next(csv.reader(io.StringIO(line, newline="")))


@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("a,b", '"a,b"'),
    ('say "hi"', '"say ""hi"""'),
    ("two\nlines", '"two\nlines"'),
    ("cr\rhere", '"cr\rhere"'),
    ("", ""),
    (None, ""),
    (12.5, "12.5"),
])
def test_csv_field(value, expected):
    assert csv_field(value) == expected


def test_csv_row_round_trips_through_the_csv_module(templates):
    values = ["a", "b,c", None, 3, 'x"y', "multi\r\nline", ""]
    line = csv_row(values)
    assert not line.endswith(("\n", "\r"))
    assert read_csv_line(line) == ["a", "b,c", "", "3", 'x"y', "multi\r\nline", ""]
    assert render(templates, "{{ [a, b] | csv_row }}", a="x", b="y,z") == 'x,"y,z"'


def test_xml_escape_keeps_documents_well_formed(templates):
    value = "Tom & \"Jerry\" <O'Neil>"
    out = render(templates, "<p name=\"{{ v | xml_escape }}\" alt='{{ v | xml_escape }}'>{{ v | xml_escape }}</p>",
                 v=value)
    element = ElementTree.fromstring(out)
    assert element.text == value
    assert element.get("name") == value and element.get("alt") == value


def test_xml_escape_replaces_characters_xml_cannot_carry():
    out = xml_escape("a\x0bb\x1cc\td")
    assert ElementTree.fromstring(f"<p>{out}</p>").text == "a\ufffdb\ufffdc\td"
    assert xml_escape(None) == ""
