"""Delimiters come from the fixed-width ISA; a broken ISA is refused with a TA1 note code and a
reason that names positions, never values."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.x12 import (
    Delimiters,
    X12SyntaxError,
    X12View,
    parse_interchange,
    read_delimiters,
    split,
)

SAMPLES = Path(__file__).parents[2] / "samples" / "x12"
ISA = ("ISA*00*          *00*          *ZZ*ACMEHEALTH01   *ZZ*HOSPRECEIVER01 *250115*1430*^*00501*"
       "000000101*0*P*:~")


def test_the_sample_delimiters_and_the_line_break_after_the_terminator():
    plain = read_delimiters((SAMPLES / "835_remittance.x12").read_text())
    assert plain == Delimiters("*", ":", "^", "~", "")
    assert read_delimiters((SAMPLES / "835_newlines.x12").read_text()).suffix == "\n"
    assert read_delimiters((SAMPLES / "835_crlf.x12").read_bytes().decode()).terminator == "~\r\n"


def test_a_bom_and_blank_lines_before_the_isa_are_tolerated():
    assert read_delimiters("\ufeff\r\n  " + ISA + "GS*HP~").element == "*"


def test_isa11_of_4010_is_not_a_repetition_separator():
    isa4010 = ISA.replace("*^*00501*", "*U*00401*")
    assert read_delimiters(isa4010).repetition is None


def test_a_newline_as_segment_terminator():
    d = read_delimiters(ISA[:-1] + "\nGS*HP\n")
    assert (d.segment, d.suffix) == ("\n", "")


@pytest.mark.parametrize(("text", "code", "words"), [
    ("GS*HP*X~", "022", "does not start with an ISA"),
    (ISA[:80], "023", "ISA is 80 characters"),
    (ISA.replace("ACMEHEALTH01   ", "ACMEHEALTH01") + "GS*HP~", "022", "not at character"),
    (ISA.replace("*", "A"), "026", "element separator"),
    (ISA[:104] + "*~", "027", "ISA-16"),
    (ISA[:105] + ":", "004", "segment terminator"),
    (ISA[:105] + "A", "004", "segment terminator"),
])
def test_a_broken_isa_is_refused_with_a_ta1_note_code(text, code, words):
    with pytest.raises(X12SyntaxError) as caught:
        read_delimiters(text)
    error = caught.value.error
    assert (error.level, error.segment, error.position) == ("interchange", "ISA", 1)
    assert error.code == code
    assert words in str(caught.value)
    for value in ("ACMEHEALTH01", "HOSPRECEIVER01", "000000101", "250115"):
        assert value not in error.reason


def test_the_short_isa_sample_names_the_separator_position():
    interchange = parse_interchange((SAMPLES / "malformed_isa_short.x12").read_bytes())
    assert interchange.delimiters is None and not interchange.readable
    [error] = interchange.errors
    assert error.code == "022" and "character 54" in error.reason
    assert interchange.isa[13] == "000000111"  # read best effort, to address the TA1


_DELIMS = st.sampled_from(list("*|!^:>~+#$%&@`{}\\;\x1d\x1e\x1f"))


@settings(max_examples=60, deadline=None)
@given(element=_DELIMS, component=_DELIMS, repetition=_DELIMS, segment=_DELIMS,
       suffix=st.sampled_from(["", "\n", "\r\n"]))
def test_any_distinct_delimiters_round_trip(element, component, repetition, segment, suffix):
    if len({element, component, repetition, segment}) < 4:
        return
    e, c = element, component
    isa = e.join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SENDER".ljust(15), "ZZ",
                  "RECEIVER".ljust(15), "250115", "1430", repetition, "00501", "000000007", "0",
                  "T", c])
    body = [f"GS{e}HP{e}S{e}R{e}20250115{e}1430{e}7{e}X{e}005010X221A1",
            f"ST{e}835{e}0001",
            f"CLP{e}ACCT1{e}1{e}100{e}80",
            f"SVC{e}HC{c}99213{c}25{e}100{e}80",
            f"EB{e}1{e}IND{e}30{repetition}98",
            f"SE{e}5{e}0001", f"GE{e}1{e}7", f"IEA{e}1{e}000000007"]
    text = "".join(s + segment + suffix for s in [isa, *body])
    d = read_delimiters(text)
    assert d == Delimiters(element, component, repetition, segment, suffix)
    interchange = parse_interchange(text)
    assert interchange.all_errors() == []
    [message] = split(text)
    view = X12View(message.text)
    assert (view["CLP.4"], view["SVC.1.2"], view["SVC.1.3"], view["EB.3(2)"]) == (
        "80", "99213", "25", "98")
    assert message.meta["isa13"] == "000000007" and message.meta["st2"] == "0001"
