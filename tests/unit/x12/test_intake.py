"""engine.x12.intake (what a source stores and answers) and split_claims (one message per 835 claim)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from engine.config.schema import inbound_problems
from engine.core.message import Message
from engine.x12 import X12View, parse_interchanges, split_claims, split_interchange, take

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "x12"
WALKTHROUGH = Path(__file__).resolve().parents[3] / "docs" / "collections-kit" / "remittance-835.x12"
NOW = datetime(2026, 1, 2, 3, 4)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def test_a_good_interchange_gives_its_sets_and_an_accepting_999():
    intake = take(sample("835_remittance.x12"), now=NOW)
    assert [t.meta["st2"] for t in intake.messages] == ["0001", "0002"]
    assert intake.problem is None and intake.refused == []
    assert "AK9*A*2*2*2~" in intake.answer


def test_a_rejected_set_is_not_stored_and_the_reason_names_positions_only():
    intake = take(sample("malformed_non_ascii.x12"), now=NOW)
    assert intake.messages == []
    assert intake.problem.startswith("transaction set 835 0001 of group 111 rejected (999 IK5 R): segment 19 (NM1-04)")
    assert "IK5*R*5" in intake.answer and "JOS" not in intake.problem


def test_an_unreadable_interchange_is_answered_by_a_ta1_alone():
    intake = take(sample("malformed_iea_control.x12"), now=NOW)
    assert intake.messages == [] and intake.problem.startswith("interchange 1 rejected (TA1 R, note 001)")
    assert "TA1*000000111*250116*0800*R*001" in intake.answer and "ST*999" not in intake.answer


def test_two_interchanges_in_one_file_get_two_answers_and_a_bad_one_does_not_block_the_good():
    data = sample("malformed_iea_control.x12") + sample("270_eligibility.x12")
    intake = take(data, now=NOW)
    assert [t.meta["st1"] for t in intake.messages] == ["270"]
    assert intake.answer.count("ISA*") == 2 and len(intake.refused) == 1 and intake.problem is None


def test_split_claims_gives_one_valid_interchange_per_claim():
    (transaction,) = split_interchange(parse_interchanges(WALKTHROUGH.read_bytes())[0])
    claims = split_claims(transaction)
    assert [X12View(c.text)["CLP.1"] for c in claims] == ["ACC55012", "ACC60231", "ACC61877", "ACC61877", "ACC62004"]
    assert [c.meta["claim"] for c in claims] == ["1", "2", "3", "4", "5"]
    for claim in claims:   # each still passes every envelope check, its SE recounted
        (interchange,) = parse_interchanges(claim.text)
        assert interchange.readable and all(t.accepted for t in split_interchange(interchange))
        view = X12View(claim.text)
        assert view["BPR.2"] == "1012.5" and view["N1.2"] == "BLUE RIVER HEALTH PLAN" and len(view.loops("2100")) == 1


def test_split_claims_leaves_other_sets_whole():
    (transaction,) = split_interchange(parse_interchanges(sample("270_eligibility.x12"))[0])
    assert split_claims(transaction) == [transaction]


def test_an_x12_message_reads_by_path_and_fills_the_store_columns():
    message = Message(take(WALKTHROUGH.read_bytes(), now=NOW, claims=True).messages[2].text, "x12")
    assert message.view["CLP.2"] == "22" and message.view["SVC.1.2"] == ""
    assert (message.message_type, message.control_id, message.msh.sender) == ("835", "000004417", "BLUERIVERHP")


def test_check_refuses_x12_channels_that_split_nothing_and_999_without_x12():
    assert inbound_problems("x12", "file", {"split": "none"})[0][0] == "source.split"
    assert inbound_problems("x12", "mllp", {})[0][0] == "inbound"
    assert inbound_problems("hl7", "file", {"ack": "999"}) == [("source.ack", 'ack = "999" needs inbound = "x12"')]
    assert inbound_problems("json", "file", {"split": "claims"})[0][0] == "source.split"
    assert inbound_problems("x12", "file", {"split": "claims", "ack": "999"}) == []
    assert inbound_problems("x12", "http", {"ack": "999"}) == []
