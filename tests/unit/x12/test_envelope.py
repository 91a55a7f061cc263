"""Envelope checks: each problem is found at the right level (TA1 / AK9 / IK5), names the segment
and its position, and never an element value."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.x12 import X12Error, parse_interchange, parse_interchanges

SAMPLES = Path(__file__).parents[2] / "samples" / "x12"
# Values that appear in the samples and must never appear in a reason.
PRIVATE = ("SAMPLE", "JAMIE", "JOS", "ACCT10006", "W000000008", "ACMEHEALTH01", "HOSPRECEIVER01",
           "000000111", "000000112", "180", "95", "CHK000482299")


def lines(name: str) -> list[str]:
    """The segments of a sample written one per line, without their terminators."""
    return [line.rstrip("~") for line in (SAMPLES / name).read_text().splitlines()]


def read(segments: list[str]):
    return parse_interchange("".join(s + "~\n" for s in segments))


def summary(error: X12Error) -> tuple:
    return (error.level, error.code, error.segment, error.position, error.set_position,
            error.element, error.segment_code, error.element_code)


def assert_private(interchange) -> None:
    for error in interchange.all_errors():
        for value in PRIVATE:
            assert value not in error.reason, (value, error.reason)


@pytest.mark.parametrize(("name", "sets"), [
    ("835_remittance.x12", [("835", "0001", 71), ("835", "0002", 26)]),
    ("835_newlines.x12", [("835", "0001", 71), ("835", "0002", 26)]),
    ("835_crlf.x12", [("835", "0001", 71), ("835", "0002", 26)]),
    ("837P_claims.x12", [("837", "0001", 49)]),
    ("837I_claims.x12", [("837", "0001", 55)]),
    ("270_eligibility.x12", [("270", "0001", 13)]),
    ("271_eligibility.x12", [("271", "0001", 20)]),
    ("999_ack.x12", [("999", "0001", 10)]),
])
def test_well_formed_samples_read_clean(name, sets):
    interchange = parse_interchange((SAMPLES / name).read_bytes())
    assert interchange.all_errors() == [] and interchange.readable
    [group] = interchange.groups
    assert [(t.st1, t.st2, t.segment_count) for t in group.sets] == sets
    assert all(t.accepted for t in group.sets) and group.ge_count == len(sets)


def test_bytes_and_text_read_alike():
    raw = (SAMPLES / "835_newlines.x12").read_bytes()
    assert parse_interchange(raw).segments == parse_interchange(raw.decode()).segments


def test_se_count_wrong_sample():
    interchange = parse_interchange((SAMPLES / "malformed_se_count.x12").read_bytes())
    [error] = interchange.all_errors()
    assert summary(error) == ("set", "4", "SE", 23, 21, 1, "", "")
    assert "the 21 segments from ST to SE" in error.reason
    assert interchange.readable and not interchange.groups[0].sets[0].accepted
    assert_private(interchange)


def test_iea_control_number_mismatch_sample():
    interchange = parse_interchange((SAMPLES / "malformed_iea_control.x12").read_bytes())
    [error] = interchange.all_errors()
    assert summary(error) == ("interchange", "001", "IEA", 25, 0, 0, "", "")
    assert not interchange.readable
    assert_private(interchange)


def test_missing_terminator_sample_is_found_at_the_line_break():
    interchange = parse_interchange((SAMPLES / "malformed_missing_terminator.x12").read_bytes())
    [error] = interchange.all_errors()
    # CAS*PR*1*85 lost its '~': segment 18 of the interchange, 16 of the set, its last element 3
    assert summary(error) == ("set", "5", "CAS", 18, 16, 3, "8", "6")
    assert "terminator is missing" in error.reason
    # the reader split at the line break, so the SE count still matches
    assert interchange.groups[0].sets[0].segment_count == 21
    assert_private(interchange)


def test_non_ascii_sample_points_at_the_element():
    interchange = parse_interchange((SAMPLES / "malformed_non_ascii.x12").read_bytes())
    [error] = interchange.all_errors()
    assert summary(error) == ("set", "5", "NM1", 19, 17, 4, "8", "6")
    assert error.reason == "segment 19 (NM1-04): a non-ASCII byte"
    assert_private(interchange)


def test_non_ascii_in_a_composite_names_the_component():
    text = lines("835_newlines.x12")
    text[26] = text[26].replace("HC:99214", "HC:9921\u00e9")
    assert text[26].startswith("SVC")
    [error] = read(text).all_errors()
    assert (error.segment, error.element, error.component) == ("SVC", 1, 2)


def test_non_ascii_in_an_envelope_segment_is_interchange_level():
    text = lines("835_newlines.x12")
    text[1] = text[1].replace("ACMEHEALTH01", "ACMEHEALTH\u00d601")
    [error] = read(text).all_errors()
    assert (error.level, error.code, error.segment, error.position) == (
        "interchange", "024", "GS", 2)


def test_the_last_terminator_missing_is_a_premature_end():
    text = (SAMPLES / "835_remittance.x12").read_text()
    interchange = parse_interchange(text[:-1])
    [error] = interchange.all_errors()
    assert (error.level, error.code, error.segment) == ("interchange", "023", "IEA")


def test_a_truncated_interchange_lacks_its_trailers():
    text = lines("835_newlines.x12")[:40]
    interchange = read(text)
    found = [(e.level, e.code, e.segment) for e in interchange.all_errors()]
    assert found == [("interchange", "023", "IEA"), ("group", "3", "GE"), ("set", "2", "SE")]


def test_group_count_and_control_number():
    text = lines("835_newlines.x12")
    assert text[-2].startswith("GE*")
    text[-2] = "GE*3*999"
    group = read(text).groups[0]
    assert [(e.level, e.code, e.segment, e.position, e.element) for e in group.errors] == [
        ("group", "5", "GE", 100, 1), ("group", "4", "GE", 100, 2)]
    assert "the 2 sets in the group" in group.errors[0].reason


def test_iea_group_count():
    text = lines("835_newlines.x12")
    text[-1] = "IEA*2*000000101"
    [error] = read(text).errors
    assert (error.code, error.segment, error.position) == ("021", "IEA", 101)


def test_se_control_number_and_missing_st_elements():
    text = lines("835_newlines.x12")
    se = next(i for i, s in enumerate(text) if s.startswith("SE*"))
    text[se] = text[se].replace("0001", "0009")
    nxt = se + 1
    assert text[nxt].startswith("ST*835*0002")
    text[nxt] = "ST*835"
    sets = read(text).groups[0].sets
    assert [(e.code, e.segment, e.set_position, e.element) for e in sets[0].errors] == [
        ("3", "SE", 71, 2)]
    codes = [e.code for e in sets[1].errors]
    assert codes[0] == "7" and "3" in codes  # ST-02 missing, and so SE-02 cannot match it


def test_duplicate_set_control_number_in_a_group():
    text = lines("835_newlines.x12")
    text = [s.replace("*0002", "*0001") if s.startswith(("ST*", "SE*")) else s for s in text]
    sets = read(text).groups[0].sets
    assert [e.code for e in sets[1].errors] == ["23"]


def test_a_missing_se_is_reported_on_its_set():
    text = lines("835_newlines.x12")
    se = next(i for i, s in enumerate(text) if s.startswith("SE*"))
    del text[se]
    interchange = read(text)
    first, second = interchange.groups[0].sets
    assert [(e.code, e.segment) for e in first.errors] == [("2", "SE")]
    assert "no SE before segment" in first.errors[0].reason
    assert second.accepted


def test_segments_outside_a_set_or_after_iea():
    text = lines("835_newlines.x12")
    text.insert(2, "REF*EV*X")       # between GS and ST
    text.append("N1*PR*AFTER")       # after IEA
    found = [(e.code, e.segment, e.position) for e in read(text).errors]
    assert found == [("024", "REF", 3), ("024", "N1", 103)]


def test_an_invalid_segment_id_inside_a_set():
    text = lines("835_newlines.x12")
    text[5] = "tr*1*X"
    [error] = read(text).all_errors()
    assert (error.segment, error.code, error.segment_code, error.set_position) == ("?", "5", "1", 4)


def test_isa13_must_be_nine_digits():
    text = lines("835_newlines.x12")
    text[0] = text[0].replace("000000101", "00000010A")
    text[-1] = "IEA*1*00000010A"
    [error] = read(text).errors
    assert (error.code, error.segment, error.position) == ("018", "ISA", 1)


def test_interchanges_back_to_back():
    one = (SAMPLES / "835_newlines.x12").read_text()
    two = (SAMPLES / "837P_claims.x12").read_text()
    found = parse_interchanges(one + two)
    assert [i.control for i in found] == ["000000101", "000000201"]
    assert all(i.readable and not i.all_errors() for i in found)
    assert found[1].groups[0].sets[0].st1 == "837"
