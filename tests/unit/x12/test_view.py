"""Paths SEG(n).ELEMENT(rep).COMPONENT, segments and loops over X12 text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.x12 import X12View, split

SAMPLES = Path(__file__).parents[2] / "samples" / "x12"


@pytest.fixture(scope="module")
def remit() -> X12View:
    return X12View(split((SAMPLES / "835_newlines.x12").read_bytes())[0].text)


def test_paths(remit):
    assert remit["CLP.4"] == "850"
    assert remit["SVC.1.2"] == "99214"
    assert remit["SVC(2).1"] == "HC:80053:QW"      # an element without component: as written
    assert remit["SVC(2).1.3"] == "QW"
    assert remit["NM1(2).3"] == "EXAMPLE"
    assert remit["CLP(4).2"] == "22"
    assert remit["ISA.13"] == "000000101" and remit["GS.6"] == "101"
    assert remit["ISA.6"] == "ACMEHEALTH01   "     # fixed-width, as written
    assert remit["ISA.16"] == ":" and remit["ISA.11"] == "^"
    assert remit["TRN"] == "TRN*1*EFT20250115001*1512345678"


@pytest.mark.parametrize("path", ["CLP.40", "CLP(99).1", "ZZZ.1", "CLP.4.2", "CLP.4(2)", "CLP.1.9",
                                  "BPR.17"])
def test_missing_is_empty(remit, path):
    assert remit[path] == ""
    assert remit.get(path, "none") == "none"


@pytest.mark.parametrize("path", ["clp.4", "CLP.0", "CLP(0).1", "CLP.4.1.1", "CLP-4", "", "C.1"])
def test_invalid_paths_are_value_errors(remit, path):
    with pytest.raises(ValueError, match="invalid X12 path"):
        remit[path]


def test_repetitions():
    view = X12View((SAMPLES / "271_eligibility.x12").read_bytes())
    assert (view["EB.3"], view["EB.3(2)"], view["EB.3(13)"], view["EB.3(14)"]) == (
        "30", "1", "UC", "")
    assert view["EB(2).3(2)"] == ""


def test_segments_with_relative_keys(remit):
    claims = remit.segments("CLP")
    assert [c["1"] for c in claims] == ["ACCT10001", "ACCT10002", "ACCT10003", "ACCT10004",
                                        "ACCT10004"]
    assert [c[2] for c in claims] == ["1", "1", "4", "22", "1"]
    assert claims[0].id == "CLP" and claims[0]["7"] == "CLM2025000001"
    assert remit.segments("SVC")[1]["1.2"] == "80053"
    assert remit.segments("NOPE") == []
    assert len(remit.segments()) == len(remit.segment_ids()) == 75
    with pytest.raises(ValueError):
        claims[0][0]
    with pytest.raises(ValueError):
        claims[0]["x"]


def test_835_claim_loops(remit):
    claims = remit.loops("2100")
    assert [c["CLP.1"] for c in claims] == ["ACCT10001", "ACCT10002", "ACCT10003", "ACCT10004",
                                            "ACCT10004"]
    first = claims[0]
    assert first.segment_ids()[:4] == ["CLP", "CAS", "CAS", "NM1"]
    # claim-level CAS first, then the service lines' (2110 is nested in 2100)
    claim_cas = [(s["1"], s["2"], s["3"]) for s in first.segments("CAS")][:2]
    assert claim_cas == [("CO", "45", "200"), ("PR", "1", "100")]
    assert [line["SVC.1.2"] for line in first.loops("2110")] == ["99214", "80053"]
    assert [line.segment_ids() for line in first.loops("2110")][1] == [
        "SVC", "DTM", "CAS", "CAS", "REF", "AMT"]
    reversal = claims[3]
    assert reversal["CLP.2"] == "22" and reversal["CAS.3"] == "-100"
    assert reversal["NM1.3"] == "PLACEHOLDER"
    # the last claim stops before PLB (provider adjustments belong to no claim)
    assert claims[-1].segment_ids()[-1] == "CAS" and "PLB" not in claims[-1].segment_ids()
    assert claims[-1].text.startswith("CLP*ACCT10004*1*")
    assert claims[-1].text.endswith("CAS*OA*23*50~\n")


def test_835_header_loops(remit):
    assert [lx["LX.1"] for lx in remit.loops("2000")] == ["1", "2"]
    assert [len(lx.loops("2100")) for lx in remit.loops("2000")] == [3, 2]
    assert remit.loops("1000A")[0].segment_ids() == ["N1", "N3", "N4", "REF", "PER"]
    assert remit.loops("1000B")[0]["N1.3"] == "XX"


def test_loops_across_sets_of_a_whole_interchange():
    view = X12View((SAMPLES / "835_remittance.x12").read_bytes())
    assert [c["CLP.1"] for c in view.loops("2100")][-1] == "ACCT10005"
    assert view.loops("2100")[4].segment_ids()[-1] == "CAS"  # ends before PLB of set 0001


def test_837p_loops():
    view = X12View((SAMPLES / "837P_claims.x12").read_bytes())
    claims = view.loops("2300")
    assert [c["CLM.1"] for c in claims] == ["ACCT10001", "ACCT10002"]
    assert [c["HI.1.2"] for c in claims] == ["J069", "S93401A"]
    assert [[line["SV1.1.2"] for line in c.loops("2400")] for c in claims] == [["99213", "87880"],
                                                                               ["99212"]]
    subscribers = view.loops("2000B")
    assert [s["NM1.3"] for s in subscribers] == ["SAMPLE", "DEMO"]
    assert [len(s.loops("2300")) for s in subscribers] == [1, 1]  # the dependent's claim is inside
    [patient] = view.loops("2000C")
    assert patient["NM1.4"] == "JORDAN" and patient["CLM.1"] == "ACCT10002"
    [provider] = view.loops("2000A")
    assert provider.segment_ids()[0] == "HL" and provider.segment_ids()[-1] == "DTP"
    assert view.loops("1000B")[0]["NM1.3"] == "CLEARINGHOUSE INC"


def test_837i_loops():
    view = X12View((SAMPLES / "837I_claims.x12").read_bytes())
    inpatient, outpatient = view.loops("2300")
    assert [h["1.1"] for h in inpatient.segments("HI")] == ["ABK", "ABJ", "ABF"]
    assert [line["SV2.1"] for line in inpatient.loops("2400")] == ["0120", "0250", "0300", "0450"]
    assert outpatient["CLM.5.1"] == "13" and len(outpatient.loops("2400")) == 2


def test_270_271_hierarchical_loops():
    view = X12View((SAMPLES / "271_eligibility.x12").read_bytes())
    assert view.set_id == "271"
    [subscriber] = view.loops("2000C")
    assert subscriber["NM1.3"] == "SAMPLE" and len(subscriber.segments("EB")) == 5
    [source] = view.loops("2000A")
    assert source.loops("2000C")[0]["TRN.2"] == "ELIGTRACE0001"
    assert view.loops("2000D") == []


def test_a_loop_of_another_set_type_is_empty_and_a_typo_is_an_error(remit):
    assert remit.loops("2300") == []
    with pytest.raises(ValueError, match="unknown X12 loop"):
        remit.loops("2l00")


def test_bare_segments_use_the_usual_delimiters():
    view = X12View("ST*835*0001~\nCLP*A1*1*100*80~\nSVC*HC:99213*100*80~\nSE*4*0001~\n")
    assert view["SVC.1.2"] == "99213"
    assert [c["CLP.1"] for c in view.loops("2100")] == ["A1"]
