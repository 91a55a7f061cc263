"""EditableMessage (DESIGN §3.3, §3.8): edits by Mirth/HAPI path change only the edited positions.

Expected results come from how each input was built, or from the independent position model in
hl7_model.py: never from re-running the code's own logic.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.hl7.editable import (
    EditableMessage,
    EditError,
    SegmentChange,
    format_path,
    parse_target,
)
from engine.hl7.path import parse_path
from engine.hl7.view import HL7View

from .hl7_model import (
    TEXT,
    changed_keys,
    load_samples,
    messages,
    model,
    segments,
    within,
)

SAMPLES = load_samples()
FAST = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
SECRET = "DOE^JANE|999-99-9999"  # stands for PHI: must never appear in an error

ADT = ("MSH|^~\\&|EPIC|MERCY|LAB|EAST|20261125030412||ADT^A08|CTRL1|P|2.5.1\r"
       "EVN|A08|20261125030412\r"
       "PID|1||MRN1^^^MERCY^MR~ACCT9^^^MERCY^AN||DOE&VAN^JANE^Q||19700101|F|||| \r"
       "NTE|1||first note\r"
       "PV1|1|O|ER^101^A|||||||\r"
       "ZAC|BALANCE^12.50\r"
       "NTE|2||second note\r"
       "ZPD|X\r")


def test_samples_are_there():
    assert len(SAMPLES) == 139


@pytest.mark.parametrize("text", [ADT, ADT[:-1], "\ufeff" + ADT, ADT + "\r", ADT.replace("\r", "\r\r")])
def test_untouched_message_is_byte_identical(text):
    assert EditableMessage(text).text() == text
    assert EditableMessage(text).changes() == []


def test_every_sample_reads_back_byte_identical():
    for name, text in SAMPLES.items():
        assert EditableMessage(text).text() == text, name
        assert EditableMessage(text[:-1]).text() == text[:-1], name


def test_lf_segment_endings_are_read_as_cr():
    assert EditableMessage(ADT.replace("\r", "\n")).text() == ADT
    assert EditableMessage(ADT.replace("\r", "\r\n")).text() == ADT


@pytest.mark.parametrize("text", ["", "PID|1", "MSH", "MSH|", "MSH|^^\\&|X",
                                  "MSHA^~\\&|X", '{"a": 1}'])
def test_not_hl7_is_refused(text):
    with pytest.raises(EditError, match="not an HL7 v2 message"):
        EditableMessage(text)


def test_msh_is_numbered_as_the_standard():
    msg = EditableMessage(ADT)
    assert msg.get("MSH.1") == "|"
    assert msg.get("MSH.2") == "^~\\&"
    assert msg.get("MSH.3") == "EPIC"
    assert msg.get("MSH.9.1") == "ADT" and msg.get("MSH.9.2") == "A08"
    assert msg.get("MSH.10") == "CTRL1"
    msg.set("MSH.5", "LIS")
    msg.set("MSH.6", "WEST")
    assert msg.text().split("\r")[0] == "MSH|^~\\&|EPIC|MERCY|LIS|WEST|20261125030412||ADT^A08|CTRL1|P|2.5.1"
    assert msg.text().split("\r")[1:] == ADT.split("\r")[1:]


@pytest.mark.parametrize("path", ["MSH.1", "MSH.2", "MSH.2.1", "BHS.1"])
def test_the_delimiters_cannot_be_written(path):
    msg = EditableMessage(ADT)
    with pytest.raises(EditError, match="delimiters"):
        msg.set(path, "#")
    with pytest.raises(EditError, match="delimiters"):
        msg.clear(path)
    assert msg.text() == ADT


def test_get_is_the_encoded_text_and_get_decoded_reads_like_a_template():
    msg = EditableMessage("MSH|^~\\&|A\\F\\B|X\rPID|1||a\\S\\b^c&d~r2||DOE&VAN^JANE\r")
    assert msg.get("MSH.3") == "A\\F\\B"
    assert msg.get_decoded("MSH.3") == "A|B"
    assert msg.get("PID.3") == "a\\S\\b^c&d"            # first repetition, encoded
    assert msg.get("PID.3(2)") == "r2"
    assert msg.get("PID.3.2") == "c&d"                  # a component with its subcomponents
    assert msg.get("PID.3.2.2") == "d"
    assert msg.get("PID.5.1") == "DOE&VAN"
    assert msg.get("PID") == "PID|1||a\\S\\b^c&d~r2||DOE&VAN^JANE"
    assert msg.get("PID.40") == msg.get("OBX.1") == msg.get("PID(2).1") == ""
    view = HL7View(msg.text())
    for path in ("MSH.3", "PID.3", "PID.3.1", "PID.3.2", "PID.3(2)", "PID.5.1", "PID.5", "PID",
                 "PID.3.1.1", "PID.9"):
        assert msg.get_decoded(path) == view[path], path
    assert msg.decode(msg.get("PID.3.1")) == "a^b"


def test_repetitions_and_expand():
    msg = EditableMessage(ADT + "OBX|1||A\rOBX|2||B~C\rOBX|3\r")
    assert msg.repetitions("PID.3") == ["MRN1^^^MERCY^MR", "ACCT9^^^MERCY^AN"]
    assert msg.repetitions("PID.9") == [] and msg.repetitions("PID.99") == []
    assert msg.repetitions("OBX(2).3") == ["B", "C"]
    assert msg.repetitions("MSH.2") == ["^~\\&"]
    with pytest.raises(EditError):
        msg.repetitions("PID.3.1")
    assert [format_path(p) for p in msg.expand("PID.3(*).1")] == ["PID.3(1).1", "PID.3(2).1"]
    assert [format_path(p) for p in msg.expand("OBX(*).3")] == ["OBX.3", "OBX(2).3", "OBX(3).3"]
    assert [format_path(p) for p in msg.expand("OBX(*).3(*)")] == [
        "OBX.3(1)", "OBX(2).3(1)", "OBX(2).3(2)"]
    assert msg.expand("AL1(*).3") == [] and msg.expand("PID.9(*)") == []
    assert msg.expand("PV1.3.1") == [parse_path("PV1.3.1")]


def test_set_escapes_with_the_messages_own_delimiters():
    text = "MSH#$@?%#APP#FAC\rPID#1##A$B@C\r"     # ^ ~ \ & are $ @ ? % here
    msg = EditableMessage(text)
    msg.set("PID.5.1", "x#y$z@w?v%u|^~\\&\r\n")
    assert msg.get("PID.5.1") == "x?F?y?S?z?R?w?E?v?T?u|^~\\&?X0D??X0A?"
    assert msg.decode(msg.get("PID.5.1")) == "x#y$z@w?v%u|^~\\&\r\n"
    assert HL7View(msg.text())["PID.5.1"] == "x#y$z@w?v%u|^~\\&\r\n"
    assert msg.text().count("\r") == 2 and msg.text().split("\r")[1].count("#") == 5


def test_set_without_escape_writes_structure_but_never_a_segment():
    msg = EditableMessage(ADT)
    msg.set("PV1.3", "EMERG^101^A", escape=False)
    assert msg.get("PV1.3.1") == "EMERG" and msg.get("PV1.3.3") == "A"
    for bad in ("A\rZZZ|1", "A\nB", "A\x1cB", "A\x0bB"):
        with pytest.raises(EditError) as caught:
            msg.set("PV1.3", SECRET + bad, escape=False)
        assert SECRET not in str(caught.value) and "PV1.3" in str(caught.value)
    assert msg.text().count("\r") == ADT.count("\r")


@pytest.mark.parametrize("path, expected", [
    ("PV1.12", "PV1|1|O|ER^101^A|||||||||X"),
    ("PV1.3(3)", "PV1|1|O|ER^101^A~~X|||||||"),
    ("PV1.3.5", "PV1|1|O|ER^101^A^^X|||||||"),
    ("PV1.3.2.3", "PV1|1|O|ER^101&&X^A|||||||"),
    ("PV1.3(2).3.2", "PV1|1|O|ER^101^A~^^&X|||||||"),
    ("PV1.9.1.1", "PV1|1|O|ER^101^A||||||X|"),
    ("PV1.3", "PV1|1|O|X|||||||"),
    ("PV1.3.1", "PV1|1|O|X^101^A|||||||"),
])
def test_setting_past_the_end_pads(path, expected):
    msg = EditableMessage(ADT)
    msg.set(path, "X")
    out = msg.text().split("\r")
    assert out[4] == expected
    assert out[:4] + out[5:] == ADT.split("\r")[:4] + ADT.split("\r")[5:]


def test_setting_in_an_absent_segment_appends_it():
    msg = EditableMessage(ADT)
    msg.set("OBX.5.2", "mg")
    assert msg.text() == ADT + "OBX|||||^mg\r"
    msg.set("OBX(3).2", "NM")                      # past the last occurrence: the ones before too
    assert msg.text() == ADT + "OBX|||||^mg\rOBX\rOBX||NM\r"
    no_cr = EditableMessage(ADT[:-1])
    no_cr.set("ZSB.1", "1")
    assert no_cr.text() == ADT[:-1] + "\rZSB|1"


def test_setting_an_empty_value_where_there_is_none_changes_nothing():
    msg = EditableMessage(ADT)
    for path in ("PV1.40", "PV1.3(4)", "PV1.3.9", "OBX.3", "OBX(*).3", "PID.3(*).9", "EVN.2.2"):
        msg.set(path, "")
    assert msg.text() == ADT and msg.changes() == []


def test_star_applies_to_every_occurrence():
    msg = EditableMessage(ADT)
    msg.set("NTE(*).3", "redacted")
    msg.set("PID.3(*).4", "EAST")
    out = msg.text().split("\r")
    assert out[3] == "NTE|1||redacted" and out[6] == "NTE|2||redacted"
    assert out[2].startswith("PID|1||MRN1^^^EAST^MR~ACCT9^^^EAST^AN||")
    msg.set("OBX(*).3", "none")                    # no OBX: nothing to do, nothing added
    assert "OBX" not in msg.text()


def test_clear_keeps_the_place():
    msg = EditableMessage(ADT)
    msg.clear("PID.3")                              # the whole field, every repetition
    msg.clear("PID.5.1.2")
    msg.clear("PV1.3(1).2")
    msg.clear("PV1.30")                             # absent: stays absent
    msg.clear("OBX.3")
    out = msg.text().split("\r")
    assert out[2] == "PID|1||||DOE&^JANE^Q||19700101|F|||| "
    assert out[4] == "PV1|1|O|ER^^A|||||||"
    msg.clear("PID.3(2)")                           # already empty: nothing
    one = EditableMessage(ADT)
    one.clear("PID.3(2)")
    assert one.get("PID.3") == "MRN1^^^MERCY^MR" and one.repetitions("PID.3") == ["MRN1^^^MERCY^MR", ""]
    with pytest.raises(EditError, match="field position"):
        one.clear("PID")


def test_delete_segments_by_name_and_glob():
    msg = EditableMessage(ADT)
    assert msg.delete_segments("NTE") == 2
    assert msg.delete_segments("Z*") == 2
    assert msg.delete_segments("AL1") == 0
    assert msg.text() == "\r".join(ADT.split("\r")[i] for i in (0, 1, 2, 4)) + "\r"
    with pytest.raises(EditError, match="MSH header"):
        msg.delete_segments("M*")
    for bad in ("", "PID.3", "pid", "P D"):
        with pytest.raises(EditError):
            msg.delete_segments(bad)


def test_add_segment_after_the_last_named_else_at_the_end():
    msg = EditableMessage(ADT)
    assert msg.add_segment("ZSB|1|A", after="NTE") == 8
    assert msg.add_segment("ZSC|2", after="AL1") == 10
    assert msg.add_segment("ZSD") == 11
    out = msg.text().split("\r")
    assert out[6:] == ["NTE|2||second note", "ZSB|1|A", "ZPD|X", "ZSC|2", "ZSD", ""]
    for bad in ("ZSB|1\rZSC|2", "zsb|1", "ZS|1", "ZSBX|1", "MSH|^~\\&|X", "ZSB\n"):
        with pytest.raises(EditError):
            msg.add_segment(bad)
    with pytest.raises(EditError):
        msg.add_segment("ZSB|1", after="Z*")


def test_changes_segment_by_segment_in_diff_order():
    msg = EditableMessage(ADT)
    msg.set("MSH.5", "LIS")
    msg.set("PV1.2", "O")                           # written back to what it was: no change
    msg.delete_segments("NTE")
    msg.add_segment("ZSB|1", after="PID")
    msg.set("OBX.3", "A")
    before = ADT.split("\r")
    assert msg.changes() == [
        SegmentChange(1, 1, before[0], before[0].replace("|LAB|", "|LIS|")),
        SegmentChange(4, None, before[3], None),
        SegmentChange(None, 4, None, "ZSB|1"),
        SegmentChange(7, None, before[6], None),
        SegmentChange(None, 8, None, "OBX|||A"),
    ]


def test_errors_name_the_path_never_the_value():
    msg = EditableMessage(ADT)
    for call in (lambda: msg.set("PID.3.1.1.1", SECRET), lambda: msg.set("PID", SECRET),
                 lambda: msg.set("MSH.2", SECRET), lambda: msg.set("PID.3", 12),
                 lambda: msg.set("PID.0", SECRET), lambda: msg.set("PID.3(*)", SECRET + "\r", escape=False),
                 lambda: msg.get("OBX(*).3")):
        with pytest.raises(EditError) as caught:
            call()
        assert SECRET not in str(caught.value) and "999" not in str(caught.value)
        assert isinstance(caught.value, ValueError)


def test_parse_target_marks_stars():
    target = parse_target("OBX(*).5(*).1")
    assert target.every_segment and target.every_repetition
    assert target.path == parse_path("OBX.5(1).1")
    for bad in ("OBX.5.1(*)", "OBX(*)(*)", "(*)", "PID.3(**)", "pid.3"):
        with pytest.raises(EditError, match="invalid HL7 path"):
            parse_target(bad)


# -- properties -------------------------------------------------------------------------------

@st.composite
def position_in(draw, text: str):
    """A writable position of ``text``: an existing segment occurrence (or the next one of a
    name), a field up to a few past its end, maybe a repetition, component, subcomponent."""
    segs = [s for s in segments(text) if s]
    names = [s[:3] for s in segs]
    name = draw(st.sampled_from(names + ["OBX", "ZNW"]))
    occurrence = 1 if name == "MSH" else draw(st.integers(1, names.count(name) + 1))
    field_count = len(segs[[i for i, n in enumerate(names) if n == name][occurrence - 1]]
                      .split(text[3])) if occurrence <= names.count(name) else 1
    low = 3 if name == "MSH" else 1
    field = draw(st.integers(low, max(low, field_count + 2)))
    rep = draw(st.none() | st.integers(1, 4))
    comp = draw(st.none() | st.integers(1, 5))
    sub = draw(st.none() | st.integers(1, 3)) if comp is not None else None
    return name, occurrence, field, rep, comp, sub


def path_text(name, occurrence, field, rep, comp, sub) -> str:
    out = name if occurrence == 1 else f"{name}({occurrence})"
    out += f".{field}" if rep is None else f".{field}({rep})"
    if comp is not None:
        out += f".{comp}" + (f".{sub}" if sub is not None else "")
    return out


def check_only_the_position_changed(before_text, after_text, name, occurrence, field, rep,
                                    comp, sub, whole_field=False):
    before, after = model(before_text), model(after_text)
    rep = None if whole_field else (rep or 1)
    for key in changed_keys(before, after):
        assert within(key, name, occurrence, field, rep, comp, sub), key
    old, new = segments(before_text), segments(after_text)
    touched = [i for i, s in enumerate(old) if s[:3] == name][occurrence - 1:occurrence]
    kept_old = [s for i, s in enumerate(old) if i not in touched]
    kept_new = [s for i, s in enumerate(new) if i not in touched][:len(kept_old)]
    assert kept_new == kept_old  # every other segment byte-identical, in order
    assert after_text.endswith("\r") == before_text.endswith("\r")


def check_set(text, position, value):
    name, occurrence, field, rep, comp, sub = position
    path = path_text(*position)
    msg = EditableMessage(text)
    msg.set(path, value)
    out = msg.text()
    assert msg.decode(msg.get(path)) == value                    # set then get round-trips
    assert HL7View(out)[path] == value                           # and reads so in a template
    assert EditableMessage(out).text() == out
    check_only_the_position_changed(text, out, name, occurrence, field, rep, comp, sub)
    assert len(segments(out)) <= len(segments(text)) + occurrence


@FAST
@given(st.data(), messages(), TEXT)
def test_random_set_on_random_messages_changes_only_that_position(data, text, value):
    check_set(text, data.draw(position_in(text)), value)


@FAST
@given(st.data(), st.sampled_from(sorted(SAMPLES)), TEXT)
def test_random_set_on_samples_changes_only_that_position(data, sample, value):
    text = SAMPLES[sample]
    check_set(text, data.draw(position_in(text)), value)


@FAST
@given(st.data(), messages())
def test_random_clear_changes_only_that_position(data, text):
    name, occurrence, field, rep, comp, sub = position = data.draw(position_in(text))
    msg = EditableMessage(text)
    msg.clear(path_text(*position))
    out = msg.text()
    assert len(segments(out)) == len(segments(text))             # a clear never adds
    whole = rep is None and comp is None
    check_only_the_position_changed(text, out, name, occurrence, field, rep, comp, sub, whole)
    assert msg.get(path_text(*position)) == ""


@FAST
@given(st.data(), messages() | st.sampled_from(sorted(SAMPLES.values())))
def test_random_deletes_and_adds_keep_every_other_segment(data, text):
    msg = EditableMessage(text)
    pattern = data.draw(st.sampled_from(["NTE", "Z*", "OBX", "P??", "[IA]*", "EVN"]))
    after = data.draw(st.sampled_from([None, "PID", "OBX", "ZAB", "AL1"]))
    import fnmatch
    old = segments(text)
    kept = [s for i, s in enumerate(old) if i == 0 or not fnmatch.fnmatchcase(s[:3], pattern)]
    added = f"ZNW{text[3]}1"
    msg.delete_segments(pattern)
    msg.add_segment(added, after=after)
    out = segments(msg.text())
    assert [s for s in out if s != added] == kept
    names = [s[:3] for s in kept]
    expected_at = (len(names) - 1 - names[::-1].index(after) + 1) if after in names else len(kept)
    assert out.index(added) == expected_at
    changes = msg.changes()
    assert {c.before_index for c in changes if c.after is None} == {
        i + 1 for i, s in enumerate(old) if i and fnmatch.fnmatchcase(s[:3], pattern)}
    assert [c.after for c in changes if c.before is None] == [added]


@FAST
@given(messages(), st.lists(st.tuples(st.integers(1, 3), TEXT), min_size=1, max_size=6))
def test_several_sets_then_reading_every_written_value(text, edits):
    msg = EditableMessage(text)
    written = {}
    for component, value in edits:
        path = f"PID.5.{component}"
        msg.set(path, value)
        written[path] = value
    out = msg.text()
    reread = EditableMessage(out)
    for path, value in written.items():
        assert reread.decode(reread.get(path)) == value
    before, after = model(text), model(out)
    for key in changed_keys(before, after):
        assert key[:2] == ("PID", 1) and (len(key) == 2 or key[2:4] == (5, 1)), key


@FAST
@given(messages())
def test_untouched_random_messages_are_byte_identical(text):
    assume(text)
    assert EditableMessage(text).text() == text
    assert EditableMessage("\ufeff" + text).text() == "\ufeff" + text
