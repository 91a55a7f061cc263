"""The dashboard's raw -> transformed diff (engine/hl7/segment_diff.py)."""

from engine.hl7.segment_diff import segment_changes


def test_changed_deleted_and_added_segments_by_position():
    before = "MSH|^~\\&|A|B\rPID|1||M1\rNTE|1||x\rPV1|1|I|ER\r"
    after = "MSH|^~\\&|A|LAB\rPID|1||M1\rPV1|1|I|EMERG\rZSB|1\r"
    changes = [tuple(change) for change in segment_changes(before, after)]
    assert changes == [
        (1, 1, "MSH|^~\\&|A|B", "MSH|^~\\&|A|LAB"),
        (3, None, "NTE|1||x", None),
        (4, 3, "PV1|1|I|ER", "PV1|1|I|EMERG"),
        (None, 4, None, "ZSB|1"),
    ]


def test_the_same_message_has_no_changes_whatever_its_line_ends():
    assert segment_changes("MSH|a\rPID|1\r", "MSH|a\nPID|1") == []


def test_at_most_limit_changes():
    before = "\r".join(f"OBX|{n}|a" for n in range(50))
    after = "\r".join(f"OBX|{n}|b" for n in range(50))
    assert len(segment_changes(before, after, limit=10)) == 10
