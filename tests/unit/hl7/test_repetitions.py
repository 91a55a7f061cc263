"""``msg.repetitions(path)`` (DESIGN §3.3): a field's repetitions, each read as a path would read it."""

from __future__ import annotations

import pytest

from engine.hl7.view import HL7View

MESSAGE = ("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|X1|P|2.5\r"
           "PID|1||MRN1^^^HOSP^MR~SSN9^^^SSA^SS~O\\T\\BRIEN||DOE^JANE\r"
           "PID|2||ONLY\r")


def test_repetitions_of_a_field_and_of_a_component():
    view = HL7View(MESSAGE)
    assert view.repetitions("PID.3") == ["MRN1^^^HOSP^MR", "SSN9^^^SSA^SS", "O&BRIEN"]   # a simple value: decoded
    assert view.repetitions("PID.3.1") == ["MRN1", "SSN9", "O&BRIEN"]
    assert view.repetitions("PID.3.4") == ["HOSP", "SSA", ""]
    assert view.repetitions("PID(2).3") == ["ONLY"]
    assert view.repetitions("PID.9") == [] and view.repetitions("ZZZ.1") == []


def test_a_repetition_in_the_path_is_refused():
    with pytest.raises(ValueError):
        HL7View(MESSAGE).repetitions("PID.3(2)")
