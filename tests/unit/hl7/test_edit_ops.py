"""The edit step's operations (DESIGN §3.8): compiling with problems keyed by the config path,
applying in order with templates and code tables, and the analyst's task over every sample."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.lookups import MISSING, Table
from engine.hl7.edit_ops import (
    AddOp,
    ClearOp,
    CopyOp,
    DeleteSegmentsOp,
    MapOp,
    SetOp,
    compile_edits,
)
from engine.hl7.editable import EditableMessage, EditError, SegmentChange
from engine.hl7.view import HL7View

from .hl7_model import changed_keys, load_samples, model, segments, within

SAMPLES = load_samples()
KEY = "transform[1].edit"
UNITS = Table("units", {"ER": "EMERG", "ICU": "CRIT"})
TABLES = {"units": UNITS, "classes": Table("classes", {"I": "INPATIENT", "E": "EMER|GENCY"})}
SECRET = "SECRET-VALUE-123"

ADT = ("MSH|^~\\&|EPIC|MERCY|LAB|EAST|20261125030412||ADT^A08|CTRL1|P|2.5.1\r"
       "EVN|A08|20261125030412\r"
       "PID|1||MRN1^^^MERCY^MR~ACCT9^^^MERCY^AN||DOE^JANE^Q||19700101|F\r"
       "NTE|1||first note\r"
       "PV1|1|I|ICU^101^A\r"
       "OBX|1|NM|GLU^Glucose||5.5|mmol/L\r"
       "OBX|2|NM|HGB^Hemoglobin||13|g/dL\r"
       "ZAC|BALANCE^12.50\r")


def lookup(table, key):
    return TABLES[table].get(key)


def fake_render(source, text):
    """A stand-in for the pipeline's Jinja: {{MSH.4}} reads the message as edited so far."""
    view = HL7View(text)
    out = source
    while "{{" in out:
        start, end = out.index("{{"), out.index("}}")
        out = out[:start] + view[out[start + 2:end].strip()] + out[end + 2:]
    return out


def run(ops, text=ADT, **kwargs):
    script, problems = compile_edits(ops, tables=set(TABLES), key=KEY)
    assert problems == []
    return script.apply(text, render=kwargs.pop("render", fake_render),
                        lookup=kwargs.pop("lookup", lookup))


def problems_of(ops, tables=frozenset(TABLES), **kwargs):
    return compile_edits(ops, tables=tables, key=KEY, **kwargs)[1]


# -- compiling ---------------------------------------------------------------------------------

def test_the_design_example_compiles():
    script, problems = compile_edits([
        {"set": "MSH.5", "value": "LAB"},
        {"set": "MSH.6", "value": "{{ msg['MSH.4'] }}-EAST"},
        {"set": "PV1.3", "value": "EMERG^101^A", "escape": False},
        {"map": "PV1.3.1", "table": "units"},
        {"map": "OBX(*).3.1", "table": "loinc", "missing": "error"},
        {"map": "PV1.2", "table": "classes", "missing": "default", "default": "O"},
        {"copy": "PID.3(1).1", "to": "PID.2.1"},
        {"delete": "NTE"},
        {"delete": "Z*"},
        {"delete": "PID.19"},
        {"add": "ZSB|1|{{ meta.account }}", "after": "PID"},
    ], tables={"units", "loinc", "classes"}, key=KEY)
    assert problems == []
    assert [type(op) for op in script.ops] == [SetOp, SetOp, SetOp, MapOp, MapOp, MapOp, CopyOp,
                                              DeleteSegmentsOp, DeleteSegmentsOp, ClearOp, AddOp]
    assert [op.template for op in script.ops if isinstance(op, SetOp)] == [False, True, False]
    assert script.tables == {"units", "loinc", "classes"}
    assert script.ops[4].key == "transform[1].edit[5]"


@pytest.mark.parametrize("op, key, reason", [
    ({"frob": "PID.3"}, "[1]", "no verb"),
    ({}, "[1]", "no verb"),
    ({"set": "PID.3", "map": "PID.3", "value": "x"}, "[1]", "one verb per operation"),
    ({"set": "PID.3", "value": "x", "tabel": "units"}, "[1].tabel", "unknown key"),
    ({"set": "PID.3"}, "[1].value", "needs value"),
    ({"set": "PID.3", "value": 5}, "[1].value", "must be a string"),
    ({"set": "PID.3", "value": "x", "escape": "no"}, "[1].escape", "true or false"),
    ({"set": "PID.3.1.1.1", "value": "x"}, "[1].set", "invalid HL7 path"),
    ({"set": "pid.3", "value": "x"}, "[1].set", "invalid HL7 path"),
    ({"set": "PID", "value": "x"}, "[1].set", "field position"),
    ({"set": "MSH.2", "value": "x"}, "[1].set", "delimiters"),
    ({"set": "PID.3", "value": "a\rZZZ|1", "escape": False}, "[1].value", "line break"),
    ({"map": "PV1.3.1"}, "[1].table", "needs table"),
    ({"map": "PV1.3.1", "table": "unit"}, "[1].table", "no code table named 'unit'"),
    ({"map": "PV1.3.1", "table": "units", "missing": "drop"}, "[1].missing", "keep, error, default"),
    ({"map": "PV1.3.1", "table": "units", "missing": "default"}, "[1].default", "needs a default"),
    ({"map": "PV1.3.1", "table": "units", "default": "X"}, "[1].default", "only with"),
    ({"map": "PV1.3.1", "table": "units", "escape": False}, "[1].escape", "unknown key for map"),
    ({"map": "PV1.3(1", "table": "units"}, "[1].map", "invalid HL7 path"),
    ({"copy": "PID.3"}, "[1].to", "needs to"),
    ({"copy": "OBX(*).3", "to": "PID.2"}, "[1].copy", "one position"),
    ({"copy": "MSH.1", "to": "PID.2"}, "[1].copy", "delimiters"),
    ({"copy": "PID.3", "to": "MSH.2"}, "[1].to", "delimiters"),
    ({"delete": "M*"}, "[1].delete", "MSH header"),
    ({"delete": "MSH"}, "[1].delete", "MSH header"),
    ({"delete": "nte"}, "[1].delete", "segment name or glob"),
    ({"delete": "OBX(2)"}, "[1].delete", "segment name or glob"),
    ({"delete": "PID.x"}, "[1].delete", "invalid HL7 path"),
    ({"delete": "MSH.1"}, "[1].delete", "delimiters"),
    ({"delete": 3}, "[1].delete", "must be a string"),
    ({"add": "zsb|1"}, "[1].add", "three-character name"),
    ({"add": "MSH|^~\\&|X"}, "[1].add", "new message"),
    ({"add": "ZSB|1\rZSC|2"}, "[1].add", "line break"),
    ({"add": "ZSB|1", "after": "pid"}, "[1].after", "segment name"),
    ({"add": "ZSB|1", "after": "PID", "before": "PV1"}, "[1].before", "unknown key for add"),
])
def test_each_mistake_is_a_problem_keyed_by_its_place(op, key, reason):
    found = problems_of([{"set": "MSH.5", "value": "LAB"}, op])
    assert len(found) >= 1
    assert found[0][0] == f"{KEY}[2]{key[3:]}" and reason in found[0][1], found


def test_problems_are_collected_for_every_operation():
    found = problems_of([{"set": "PID", "value": "x"}, "not a table", {"map": "PV1.3", "table": "x",
                                                                      "missing": "drop"}])
    assert [key for key, _ in found] == [f"{KEY}[1].set", f"{KEY}[2]", f"{KEY}[3].table",
                                         f"{KEY}[3].missing"]
    assert problems_of("set MSH.5") == [(KEY, "must be a list of inline tables, one verb each")]
    assert problems_of([{"map": "PV1.3", "table": "anything"}], tables=None) == []


def test_a_template_that_does_not_compile_is_a_problem():
    def check(source):
        if "{{ bad" in source:
            raise SyntaxError("unexpected end of template")

    found = problems_of([{"set": "PID.3", "value": "{{ bad"}, {"set": "PID.4", "value": "{{ ok }}"},
                         {"add": "ZSB|{{ bad"}], check_template=check)
    assert found == [(f"{KEY}[1].value", "the template does not compile: unexpected end of template"),
                     (f"{KEY}[3].add", "the template does not compile: unexpected end of template")]


# -- applying ----------------------------------------------------------------------------------

def test_set_literal_and_template_see_the_message_as_edited_so_far():
    out, _ = run([{"set": "MSH.4", "value": "WEST"},
                  {"set": "MSH.6", "value": "{{ MSH.4 }}-EAST"},
                  {"set": "PID.8", "value": "a|b"},
                  {"set": "PV1.3", "value": "EMERG^101^A", "escape": False}])
    view = HL7View(out)
    assert view["MSH.6"] == "WEST-EAST"
    assert view["PID.8"] == "a|b" and "F|a\\F\\b" not in out and "|a\\F\\b" in out
    assert view["PV1.3.1"] == "EMERG" and view["PV1.3.3"] == "A"


def test_render_gets_the_source_and_the_current_text():
    calls = []

    def render(source, text):
        calls.append((source, text))
        return "X"

    run([{"set": "MSH.5", "value": "LIS"}, {"set": "MSH.6", "value": "{{ anything }}"}],
        render=render)
    assert calls == [("{{ anything }}", ADT.replace("|LAB|", "|LIS|"))]


def test_map_through_a_table():
    out, changes = run([{"map": "PV1.3.1", "table": "units"}])
    assert HL7View(out)["PV1.3"] == "CRIT^101^A"
    assert changes == [SegmentChange(5, 5, "PV1|1|I|ICU^101^A", "PV1|1|I|CRIT^101^A")]
    out, _ = run([{"map": "PV1.2", "table": "classes"}, {"map": "PV1.4", "table": "classes"}])
    assert HL7View(out)["PV1.2"] == "INPATIENT" and HL7View(out)["PV1.4"] == ""


def test_map_key_is_the_decoded_value_and_the_written_value_is_escaped():
    text = ADT.replace("PV1|1|I|", "PV1|1|E|")
    out, _ = run([{"map": "PV1.2", "table": "classes"}], text=text)
    assert "|EMER\\F\\GENCY|" in out and HL7View(out)["PV1.2"] == "EMER|GENCY"


@pytest.mark.parametrize("missing, expected", [("keep", "ZZ"), ("default", "UNKNOWN")])
def test_map_missing_key_keep_or_default(missing, expected):
    text = ADT.replace("ICU^", "ZZ^")
    extra = {"default": "UNKNOWN"} if missing == "default" else {}
    out, _ = run([{"map": "PV1.3.1", "table": "units", "missing": missing, **extra}], text=text)
    assert HL7View(out)["PV1.3.1"] == expected


def test_map_missing_key_error_names_the_table_and_path_never_the_value():
    text = ADT.replace("ICU^", SECRET + "^")
    with pytest.raises(EditError) as caught:
        run([{"set": "MSH.5", "value": "X"},
             {"map": "PV1.3.1", "table": "units", "missing": "error"}], text=text)
    reason = str(caught.value)
    assert reason.startswith("transform[1].edit[2]: ") and "units" in reason and "PV1.3.1" in reason
    assert SECRET not in reason


def test_map_on_an_absent_segment():
    no_pv1 = ADT.replace("PV1|1|I|ICU^101^A\r", "")
    assert run([{"map": "PV1.3.1", "table": "units"}], text=no_pv1)[0] == no_pv1
    with pytest.raises(EditError, match=r"edit\[1\]: map PV1.3.1: the PV1 segment is absent"):
        run([{"map": "PV1.3.1", "table": "units", "missing": "error"}], text=no_pv1)
    out, _ = run([{"map": "PV1.3.1", "table": "units", "missing": "default", "default": "U"}],
                 text=no_pv1)
    assert out == no_pv1 + "PV1|||U\r"
    # (*) over no occurrence: nothing to map, not an error
    assert run([{"map": "AL1(*).3.1", "table": "units", "missing": "error"}])[0] == ADT


def test_map_every_occurrence():
    TABLES["loinc"] = Table("loinc", {"GLU": "2345-7", "HGB": "718-7"})
    try:
        out, _ = run([{"map": "OBX(*).3.1", "table": "loinc", "missing": "error"}])
    finally:
        del TABLES["loinc"]
    assert [s.split("|")[3] for s in segments(out) if s.startswith("OBX")] == [
        "2345-7^Glucose", "718-7^Hemoglobin"]


def test_lookup_may_answer_none_or_missing_for_an_absent_key():
    for absent in (None, MISSING):
        out, _ = run([{"map": "PV1.3.1", "table": "units", "missing": "default", "default": "D"}],
                     lookup=lambda table, key, absent=absent: absent)
        assert HL7View(out)["PV1.3.1"] == "D"


def test_copy_moves_the_encoded_text():
    text = ADT.replace("MRN1^", "MRN\\F\\1&X^")
    out, _ = run([{"copy": "PID.3(1).1", "to": "PID.2.1"}, {"copy": "PID.3(2)", "to": "ZAC.5"},
                  {"copy": "OBX(2).5", "to": "OBX(*).7"}], text=text)
    view = HL7View(out)
    assert out.split("\r")[2].startswith("PID|1|MRN\\F\\1&X|")
    assert view["ZAC.5"] == "ACCT9^^^MERCY^AN"
    assert [view[f"OBX({n}).7"] for n in (1, 2)] == ["13", "13"]


def test_delete_segments_and_fields():
    out, changes = run([{"delete": "NTE"}, {"delete": "Z*"}, {"delete": "PID.3"},
                        {"delete": "OBX(*).6"}])
    assert [s[:3] for s in segments(out)] == ["MSH", "EVN", "PID", "PV1", "OBX", "OBX"]
    assert segments(out)[2] == "PID|1||||DOE^JANE^Q||19700101|F"
    assert segments(out)[4:] == ["OBX|1|NM|GLU^Glucose||5.5|", "OBX|2|NM|HGB^Hemoglobin||13|"]
    assert [(c.before_index, c.after_index) for c in changes] == [(3, 3), (4, None), (6, 5), (7, 6),
                                                                  (8, None)]


def test_add_after_the_last_named_segment_else_at_the_end():
    out, _ = run([{"add": "ZSB|1|{{ PID.3.1 }}", "after": "PID"}, {"add": "ZSC|2", "after": "OBX"},
                  {"add": "ZSD|3", "after": "AL1"}])
    assert [s[:3] for s in segments(out)] == ["MSH", "EVN", "PID", "ZSB", "NTE", "PV1", "OBX",
                                              "OBX", "ZSC", "ZAC", "ZSD"]
    assert "ZSB|1|MRN1" in out


def test_a_template_value_that_would_add_a_segment_is_refused():
    with pytest.raises(EditError) as caught:
        run([{"set": "PID.3", "value": "{{ x }}", "escape": False}],
            render=lambda source, text: SECRET + "\rZZZ|1")
    assert "transform[1].edit[1]" in str(caught.value) and SECRET not in str(caught.value)
    out, _ = run([{"set": "PID.3", "value": "{{ x }}"}], render=lambda source, text: "a\rb")
    assert out.count("\r") == ADT.count("\r") and "a\\X0D\\b" in out
    with pytest.raises(EditError, match=r"edit\[1\]: add"):
        run([{"add": "ZSB|{{ x }}"}], render=lambda source, text: "ZSB|1\rZSC|2")


def test_a_message_that_is_not_hl7_is_an_error_naming_the_step():
    with pytest.raises(EditError, match=r"^transform\[1\]\.edit: not an HL7 v2 message"):
        run([{"set": "MSH.5", "value": "X"}], text='{"account": "A1"}')


def test_no_edit_is_byte_identical():
    for text in SAMPLES.values():
        assert run([], text=text) == (text, [])
        assert run([{"set": "AL9.1", "value": ""}, {"delete": "QQQ"}], text=text) == (text, [])


# -- the analyst's task, over every sample -----------------------------------------------------

ANALYST = [
    {"set": "MSH.5", "value": "LAB"},
    {"set": "MSH.6", "value": "EAST"},
    {"map": "PV1.3.1", "table": "units"},
    {"delete": "NTE"},
    {"delete": "Z*"},
]


def check_analyst_task(text):
    out, changes = run(ANALYST, text=text)
    before, after = model(text), model(out)
    kept = [s for s in segments(text) if not fnmatch.fnmatchcase(s[:3], "Z*") and s[:3] != "NTE"]
    kept_after = segments(out)
    assert len(kept_after) == len(kept)
    for old, new in zip(kept, kept_after):
        if old[:3] not in ("MSH", "PV1"):
            assert new == old  # byte-identical
    # within MSH and PV1 only the edited positions differ (positions of deleted segments aside)
    deleted = {key[:2] for key in before if key[0] == "NTE" or key[0].startswith("Z")}
    for key in changed_keys(before, after):
        if key[:2] in deleted:
            continue
        assert (within(key, "MSH", 1, 5, 1) or within(key, "MSH", 1, 6, 1)
                or within(key, "PV1", 1, 3, 1, 1)), key
    view_in, view_out = HL7View(text), HL7View(out)
    assert view_out["MSH.5"] == "LAB" and view_out["MSH.6"] == "EAST"
    if "PV1" in view_in.segment_names():
        code = EditableMessage(text).decode(EditableMessage(text).get("PV1.3.1"))
        expected = UNITS.get(code) or code
        assert EditableMessage(out).decode(EditableMessage(out).get("PV1.3.1")) == expected
    assert out.endswith("\r") == text.endswith("\r")
    assert all(c.after is not None or c.before[:3] == "NTE" or c.before[:1] == "Z" for c in changes)
    return out


def test_the_analyst_task_over_every_sample():
    mapped = 0
    for name, text in SAMPLES.items():
        check_analyst_task(text)
        check_analyst_task(text[:-1])
        if "\rPV1|" in text:
            for code in ("ER", "ICU"):  # the samples' own units, then the two the table maps
                variant = EditableMessage(text)
                variant.set("PV1.3.1", code)
                out = check_analyst_task(variant.text())
                assert EditableMessage(out).get("PV1.3.1") == UNITS.get(code)
                mapped += 1
    assert mapped > 100


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.sampled_from(["ER", "ICU", "OR", "", "E\\S\\R"]),
       st.lists(st.sampled_from(["NTE", "ZPD", "ZAC"]), max_size=3))
def test_the_analyst_task_on_samples_with_extra_segments(name, code, extra):
    msg = EditableMessage(SAMPLES[name])
    for segment in extra:
        msg.add_segment(f"{segment}|1|x")
    if msg.count("PV1"):
        msg.set("PV1.3.1", code, escape=False)
    check_analyst_task(msg.text())
