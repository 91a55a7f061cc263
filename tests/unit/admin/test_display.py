"""How the dashboard shows content (engine/admin/display.py): HL7 one segment per line, each field
in a span titled with its number (MSH counted as the standard does), everything escaped."""

from __future__ import annotations

import html
import re

import pytest
from markupsafe import Markup

from engine.admin.display import age, hl7_markup, looks_like_hl7


def titled(markup: str) -> dict[str, str]:
    """title -> the text of its span, unescaped."""
    found = re.findall(r'<span class="(?:f|sep)" title="([^"]+)">([^<]*)</span>', markup)
    return {title: html.unescape(text) for title, text in found}


def test_fields_are_numbered_as_the_standard_counts_them():
    text = "MSH|^~\\&|EHR|HOSP|SWB|AGENCY|20240101||ADT^A08|CTRL-1|P|2.5\rPID|1||MRN1^^^HOSP^MR||DOE^JANE"
    fields = titled(hl7_markup(text))
    assert fields["MSH-1"] == "|" and fields["MSH-2"] == "^~\\&"
    assert fields["MSH-9"] == "ADT^A08" and fields["MSH-10"] == "CTRL-1"
    assert fields["PID-3"] == "MRN1^^^HOSP^MR" and fields["PID-5"] == "DOE^JANE"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_one_segment_per_line_whatever_the_separator(separator):
    text = separator.join(["MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5", "EVN|A01", "PID|1", "PV1|1|O"])
    lines = str(hl7_markup(text)).split("\n")
    assert [re.match(r'<span class="seg">(\w+)</span>', line).group(1) for line in lines] == ["MSH", "EVN", "PID", "PV1"]


def test_declared_delimiters_are_used():
    fields = titled(hl7_markup("MSH#^~\\&#EHR#HOSP#SWB#AGENCY#2024##ADT^A08#C9#P#2.5\rPID#1##M|1"))
    assert fields["MSH-1"] == "#" and fields["MSH-10"] == "C9" and fields["PID-3"] == "M|1"


def test_content_is_escaped_never_markup():
    text = 'MSH|^~\\&|<b>EHR</b>|H&M|SWB|"A"|2024||ADT^A08|1|P|2.5\rPID|1||<script>alert(1)</script>'
    markup = hl7_markup(text)
    assert isinstance(markup, Markup)
    assert "<script>" not in markup and "<b>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup and "H&amp;M" in markup and "&#34;A&#34;" in markup


def test_a_line_that_is_not_a_segment_is_shown_escaped_without_numbers():
    markup = str(hl7_markup("MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\r<img src=x>|junk"))
    assert markup.split("\n")[1] == "&lt;img src=x&gt;|junk"


def test_other_content_comes_back_escaped_as_it_is():
    body = '{"account": "<A&B>"}\n  indented'
    assert not looks_like_hl7(body)
    assert hl7_markup(body) == '{&#34;account&#34;: &#34;&lt;A&amp;B&gt;&#34;}\n  indented'
    assert hl7_markup(None) == ""


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, ""), (None, ""), ("x", ""), (12.7, "12s"), (200, "3m 20s"), (7500, "2h 5m"), (3 * 86400 + 4 * 3600, "3d 4h"),
])
def test_age(seconds, shown):
    assert age(seconds) == shown


def test_json_and_xml_are_indented_and_the_rest_left_alone():
    from engine.admin.display import pretty

    assert pretty('{"resourceType":"Patient","name":[{"family":"DOE"}]}') == (
        '{\n  "resourceType": "Patient",\n  "name": [\n    {\n      "family": "DOE"\n    }\n  ]\n}')
    assert pretty("<a><b>x</b><c/></a>") == "<a>\n  <b>x</b>\n  <c/>\n</a>"
    assert pretty('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>').splitlines()[-1] == "<x>&e;</x>"
    for text in ("MSH|^~\\&|A|B", "{not json", "plain text", "", None):
        assert pretty(text) == text
