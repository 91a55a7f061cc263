"""One message per transaction set, each a valid interchange of its own with its identifiers."""

from __future__ import annotations

from pathlib import Path

from engine.x12 import X12View, parse_interchange, split

SAMPLES = Path(__file__).parents[2] / "samples" / "x12"


def test_835_splits_into_its_two_payments_with_their_identifiers():
    first, second = split((SAMPLES / "835_remittance.x12").read_bytes())
    common = {"isa6": "ACMEHEALTH01", "isa8": "HOSPRECEIVER01", "isa13": "000000101",
              "isa15": "P", "gs1": "HP", "gs2": "ACMEHEALTH01", "gs3": "HOSPRECEIVER01",
              "gs6": "101", "gs8": "005010X221A1", "st1": "835", "st3": ""}
    assert first.meta == {**common, "st2": "0001"}
    assert second.meta == {**common, "st2": "0002"}
    assert first.accepted and second.accepted and first.errors == ()


def test_each_message_is_an_interchange_that_reads_alone():
    source = parse_interchange((SAMPLES / "835_newlines.x12").read_bytes())
    messages = split((SAMPLES / "835_newlines.x12").read_bytes())
    for tset, message in zip(source.groups[0].sets, messages, strict=True):
        again = parse_interchange(message.text)
        assert again.all_errors() == []
        [group] = again.groups
        [one] = group.sets
        assert again.segments[one.first:one.last + 1] == source.segments[tset.first:tset.last + 1]
        assert again.segments[0] == source.segments[0] and again.segments[1] == source.segments[1]
        assert message.text.endswith(f"SE*{tset.segment_count}*{tset.st2}~\nGE*1*101~\n"
                                     "IEA*1*000000101~\n")


def test_a_one_set_interchange_comes_out_byte_for_byte():
    raw = (SAMPLES / "837P_claims.x12").read_text()
    [message] = split(raw)
    assert message.text == raw
    assert message.meta["st3"] == "005010X222A1" and message.meta["gs1"] == "HC"


def test_line_breaks_follow_the_input():
    plain = split((SAMPLES / "835_remittance.x12").read_bytes())
    crlf = split((SAMPLES / "835_crlf.x12").read_bytes())
    assert [m.meta for m in plain] == [m.meta for m in crlf]
    assert [m.text.replace("~\r\n", "~") for m in crlf] == [m.text for m in plain]


def test_broken_sets_carry_their_errors():
    [message] = split((SAMPLES / "malformed_se_count.x12").read_bytes())
    assert not message.accepted and [e.code for e in message.errors] == ["4"]
    [message] = split((SAMPLES / "malformed_iea_control.x12").read_bytes())
    assert not message.accepted and [e.code for e in message.errors] == ["001"]
    assert X12View(message.text)["CLP.1"] == "ACCT10006"


def test_an_unreadable_isa_splits_into_nothing():
    assert split((SAMPLES / "malformed_isa_short.x12").read_bytes()) == []


def test_several_interchanges_in_one_text():
    text = (SAMPLES / "837P_claims.x12").read_text() + (SAMPLES / "837I_claims.x12").read_text()
    messages = split(text)
    assert [(m.meta["isa13"], m.meta["gs8"]) for m in messages] == [
        ("000000201", "005010X222A1"), ("000000202", "005010X223A2")]
