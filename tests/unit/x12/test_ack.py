"""999 per functional group (AK1/AK2/IK3/IK4/IK5/AK9) and TA1 for an unreadable interchange."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from engine.x12 import (
    SET,
    X12Error,
    X12View,
    acknowledge,
    build_999,
    build_ta1,
    parse_interchange,
)

SAMPLES = Path(__file__).parents[2] / "samples" / "x12"
NOW = datetime(2025, 1, 16, 9, 30)


def ack_of(name: str, **kw) -> str:
    return acknowledge(parse_interchange((SAMPLES / name).read_bytes()), now=NOW, **kw)


def body(ack: str) -> list[str]:
    """The segments between ST and SE of a 999, terminators and line breaks removed."""
    segments = [s.strip() for s in ack.split("~") if s.strip()]
    return segments[segments.index(next(s for s in segments if s.startswith("ST*"))) + 1:-3]


def test_an_accepted_837_with_a_ta1_requested():
    assert ack_of("837P_claims.x12") == (
        "ISA*00*          *00*          *ZZ*CLEARINGHSE01  *ZZ*HOSPSENDER01   *250116*0930*^*00501*"
        "000000201*0*P*:~\n"
        "TA1*000000201*250115*0900*A*000~\n"   # ISA-14 = 1 asked for it; before the GS
        "GS*FA*CLEARINGHSE01*HOSPSENDER01*20250116*0930*201*X*005010X231A1~\n"
        "ST*999*0001*005010X231A1~\n"
        "AK1*HC*201*005010X222A1~\n"
        "AK2*837*0001*005010X222A1~\n"
        "IK5*A~\n"
        "AK9*A*1*1*1~\n"
        "SE*6*0001~\n"
        "GE*1*201~\n"
        "IEA*1*000000201~\n")


def test_the_ack_is_itself_a_clean_interchange_and_deterministic():
    for name in ("835_remittance.x12", "malformed_se_count.x12", "malformed_non_ascii.x12"):
        ack = ack_of(name)
        assert ack == ack_of(name)
        again = parse_interchange(ack)
        assert again.all_errors() == [], name
        assert X12View(ack)["AK1.1"] == "HP"


def test_an_835_with_two_sets_is_accepted():
    assert body(ack_of("835_remittance.x12")) == [
        "AK1*HP*101*005010X221A1", "AK2*835*0001", "IK5*A", "AK2*835*0002", "IK5*A",
        "AK9*A*2*2*2"]


def test_se_count_wrong_rejects_the_set():
    assert body(ack_of("malformed_se_count.x12")) == [
        "AK1*HP*111*005010X221A1", "AK2*835*0001", "IK5*R*4", "AK9*R*1*1*0"]


def test_non_ascii_gives_ik3_and_ik4():
    assert body(ack_of("malformed_non_ascii.x12")) == [
        "AK1*HP*111*005010X221A1", "AK2*835*0001", "IK3*NM1*17**8", "IK4*4**6", "IK5*R*5",
        "AK9*R*1*1*0"]


def test_missing_terminator_gives_ik3_and_ik4():
    assert body(ack_of("malformed_missing_terminator.x12"))[2:4] == ["IK3*CAS*16**8", "IK4*3**6"]


def test_a_composite_position_in_ik4():
    text = (SAMPLES / "835_newlines.x12").read_text().replace("SVC*HC:99214", "SVC*HC:9921\u00e9")
    assert "IK4*1:2**6" in body(acknowledge(parse_interchange(text), now=NOW))


def test_one_set_rejected_of_two_is_partial():
    text = (SAMPLES / "835_newlines.x12").read_text().replace("SE*26*0002", "SE*25*0002")
    assert body(acknowledge(parse_interchange(text), now=NOW)) == [
        "AK1*HP*101*005010X221A1", "AK2*835*0001", "IK5*A", "AK2*835*0002", "IK5*R*4",
        "AK9*P*2*2*1"]


def test_errors_that_do_not_reject_give_e():
    interchange = parse_interchange((SAMPLES / "835_remittance.x12").read_bytes())
    tset = interchange.groups[0].sets[0]
    tset.errors.append(X12Error(SET, "CLP", 17, "I5", "segment 17 (CLP-07): a note",
                                set_position=15, element=7, segment_code="8",
                                element_code="I12", reject=False))
    assert body(build_999(interchange, now=NOW)) == [
        "AK1*HP*101*005010X221A1", "AK2*835*0001", "IK3*CLP*15**8", "IK4*7**I12", "IK5*E*I5",
        "AK2*835*0002", "IK5*A", "AK9*E*2*2*2"]


def test_group_errors_reject_the_group():
    text = (SAMPLES / "835_newlines.x12").read_text().replace("GE*2*101", "GE*3*101")
    assert body(acknowledge(parse_interchange(text), now=NOW))[-1] == "AK9*R*3*2*2*5"
    text = (SAMPLES / "835_newlines.x12").read_text().replace("GE*2*101", "GE*2*102")
    assert body(acknowledge(parse_interchange(text), now=NOW))[-1] == "AK9*R*2*2*2*4"


def test_ta1_for_an_iea_control_number_mismatch():
    assert ack_of("malformed_iea_control.x12") == (
        "ISA*00*          *00*          *ZZ*HOSPRECEIVER01 *ZZ*ACMEHEALTH01   *250116*0930*^*00501*"
        "000000111*0*P*:~\n"
        "TA1*000000111*250116*0800*R*001~\n"
        "IEA*0*000000111~\n")


def test_ta1_for_an_isa_that_is_too_short():
    ack = ack_of("malformed_isa_short.x12")
    assert "TA1*000000111*250116*0800*R*022~" in ack
    assert ack.startswith("ISA*00*          *00*          *ZZ*HOSPRECEIVER01 *ZZ*ACMEHEALTH01   *")
    assert parse_interchange(ack).all_errors() == []


def test_ta1_when_nothing_of_the_isa_can_be_read():
    interchange = parse_interchange(b"\x00\x01garbage")
    ack = build_ta1(interchange, now=NOW)
    assert "TA1*000000000*000000*0000*R*022~" in ack
    assert parse_interchange(ack).all_errors() == []
    assert ack == build_ta1(parse_interchange(b"\x00\x01garbage"), now=NOW)


def test_given_control_number():
    ack = ack_of("835_remittance.x12", control=42)
    view = X12View(ack)
    assert (view["ISA.13"], view["GS.6"], view["GE.2"], view["IEA.2"]) == (
        "000000042", "42", "42", "000000042")


def test_several_groups_give_one_999_each():
    interchange = parse_interchange((SAMPLES / "835_remittance.x12").read_bytes())
    group = interchange.groups[0]
    second = dataclasses.replace(group, gs=group.gs[:6] + ("102",) + group.gs[7:])
    interchange.groups.append(second)
    view = X12View(build_999(interchange, now=NOW))
    assert [s["2"] for s in view.segments("ST")] == ["0001", "0002"]
    assert [s["2"] for s in view.segments("AK1")] == ["101", "102"]
    assert view["GE.1"] == "2"
