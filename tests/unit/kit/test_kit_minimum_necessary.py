"""minimum-necessary (plugins/minimum_necessary.py) over every shared sample message.

What must hold for each of the 139 samples: no clinical segment survives, every clinical field
is empty in every occurrence and repetition, and the demographics (PID), guarantor (GT1),
insurance (IN1, IN2) and financial fields (FT1 amounts and dates, PV1 account fields) are exactly
as received.  The clinical segments and fields are the issue's list, written out here rather than
imported from the plugin, so the test checks the plugin against the requirement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7.view import HL7View
from engine.hl7.encoding import normalize_segments
from engine.core.message import Message
from engine.core.pipeline import StageError
from engine.core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "tests" / "samples" / "hl7v2").glob("*.hl7"))
ISSUE_SEGMENTS = {"DG1", "PR1", "OBX", "OBR", "ORC", "NTE", "AL1", "DRG", "DB1", "PDA", "ABS", "RMI",
                  "BLC", "ROL", "IN3"}
ISSUE_FIELDS = {"FT1": (19, 25, 26, 29), "PV1": (7, 8, 9, 10, 17, 36), "PV2": (3,)}
UNCHANGED_SEGMENTS = ("MSH", "PID", "GT1", "IN1", "IN2")
FINANCIAL_FIELDS = {"FT1": (1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 17, 18, 22, 30, 31),
                    "PV1": (2, 18, 19, 20, 41, 44, 45, 46, 47, 48, 49)}
# Text from the samples' clinical segments and fields: none of it may be left anywhere.
CLINICAL_TEXT = ("Chest pain", "Nasal congestion", "Ischemic stroke", "Biopsy of colon", "PENICILLIN",
                 "Physician Notes", "heartrate", "Chronic pharyngitis", "spinal fracture",
                 "myocardial infarction", "Lipid panel", "Xray exam chest", "Ulcer of Intestine",
                 "Sore eye", "ASPIRIN", "Vegan")


@pytest.fixture(scope="module")
def step():
    return load_plugins(ROOT / "plugins", entry_points=False).transforms["minimum-necessary"]({})


def read(path: Path) -> str:
    return normalize_segments(path.read_text(encoding="utf-8"))


def names(text: str) -> list[str]:
    return [segment[:3] for segment in text.split("\r") if segment]


def test_the_samples_are_all_there():
    assert len(SAMPLES) == 139


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_no_clinical_segment_or_field_survives(step, path):
    raw = read(path)
    out = step.apply(Message(raw), {})
    kept = names(out)
    assert not ISSUE_SEGMENTS & set(kept)
    assert not [name for name in kept if name.startswith("Z")]
    view = HL7View(out)
    for name, numbers in ISSUE_FIELDS.items():
        for seg in view.segments(name):
            for number in numbers:
                assert seg[number] == "", f"{name}-{number} survived in {path.name}"
    for text in CLINICAL_TEXT:
        assert text.lower() not in out.lower(), f"{text!r} survived in {path.name}"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_demographics_guarantor_insurance_and_financial_fields_are_unchanged(step, path):
    raw = read(path)
    out = step.apply(Message(raw), {})
    before, after = HL7View(raw), HL7View(out)
    for name in UNCHANGED_SEGMENTS:
        assert [s.text for s in after.segments(name)] == [s.text for s in before.segments(name)], name
    for name, numbers in FINANCIAL_FIELDS.items():
        old, new = before.segments(name), after.segments(name)
        assert len(old) == len(new)
        for old_segment, new_segment in zip(old, new):
            for number in numbers:
                assert new_segment[number] == old_segment[number], f"{name}-{number} in {path.name}"
    old_codes = [s["7.1"] for s in before.segments("FT1")]
    assert [s["7.1"] for s in after.segments("FT1")] == old_codes     # the charge code stays


def test_billing_segments_stay_in_order(step):
    raw = read(ROOT / "tests" / "samples" / "hl7v2" / "DFT-P03-02.hl7")
    out = step.apply(Message(raw), {})
    assert names(out) == ["MSH", "EVN", "PID", "PV1", "PV2", "FT1", "FT1", "GT1", "IN1", "IN2"]


def test_an_allow_list_keeps_only_what_it_names(step):
    plugin = load_plugins(ROOT / "plugins", entry_points=False).transforms["minimum-necessary"]
    allow = plugin({"keep": ["PID", "FT1", "ZFN"]})
    raw = read(ROOT / "tests" / "samples" / "hl7v2" / "DFT-P03-01.hl7") + "\rZFN|1|20240301"
    out = allow.apply(Message(raw), {})
    assert names(out) == ["MSH", "PID", "FT1", "FT1", "ZFN"]
    assert HL7View(out)["FT1.19"] == ""          # blanking still applies to what is kept


def test_also_remove_and_also_blank_extend_the_defaults():
    plugin = load_plugins(ROOT / "plugins", entry_points=False).transforms["minimum-necessary"]
    step = plugin({"also_remove": ["IN2"], "also_blank": ["PID.13", "GT1.6.1"], "keep_z_segments": True})
    raw = read(ROOT / "tests" / "samples" / "hl7v2" / "BAR-P01-01.hl7") + "\rZPM|1|plan"
    out = step.apply(Message(raw), {})
    view = HL7View(out)
    assert "IN2" not in names(out) and "DG1" not in names(out) and "ZPM" in names(out)
    assert view["PID.13"] == "" and view["PID.11.1"] == "1000"
    assert view["GT1.6(1).1"] == "" and view["GT1.6(1).3"] == "Internet"   # one component, every repetition
    assert view["GT1.6(2).1"] == ""


def test_the_message_keeps_its_own_delimiters():
    step = load_plugins(ROOT / "plugins", entry_points=False).transforms["minimum-necessary"]({})
    raw = "\r".join(["MSH#$~\\&#EHR#GH#SWB#AG#20240101##DFT$P03#C1#P#2.5",
                     "PID#1##M1$$$GH$MR##DOE$JO", "DG1#1##I10$Chest pain$I10",
                     "FT1#1#T1##20240101##CG#99284$ED visit$C4####10.00########R07.9$Chest pain$I10"])
    out = step.apply(Message(raw), {})
    assert names(out) == ["MSH", "PID", "FT1"]
    view = HL7View(out)
    assert view["FT1.7.1"] == "99284" and view["FT1.7.2"] == "" and view["FT1.19"] == ""
    assert view["FT1.11"] == "10.00" and "Chest pain" not in out


@pytest.mark.parametrize("options", [
    {"keep": ["PID"], "also_remove": ["NK1"]},
    {"remove": ["dg1"]},
    {"blank": ["FT1"]},
    {"also_blank": ["MSH.10"]},
    {"keep_z_segments": "yes"},
    {"strip": ["DG1"]},
])
def test_bad_options_are_refused(options):
    plugin = load_plugins(ROOT / "plugins", entry_points=False).transforms["minimum-necessary"]
    with pytest.raises(ValueError, match="minimum-necessary"):
        plugin(options)


def test_non_hl7_input_is_a_stage_error(step):
    with pytest.raises(StageError):
        step.apply(Message('{"a": 1}', "json"), {})
