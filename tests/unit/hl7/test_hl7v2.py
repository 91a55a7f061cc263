"""engine/hl7: MSH peek, paths, escaping, ACKs, batches, dates, and a cross-check of the lazy
view against python-hl7 on every sample message."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path as FsPath

import hl7
import pytest

from engine.hl7.view import HL7View, SegmentView
from engine.hl7.path import Path, parse_path
from engine.hl7.ack import build_ack, build_reject, parse_ack
from engine.hl7.encoding import build_segment, escape, normalize_segments, unescape
from engine.hl7.dates import format_hl7_datetime, parse_hl7_datetime
from engine.hl7.msh import peek_msh
from engine.hl7.batch import split_batch

SAMPLES = FsPath(__file__).resolve().parents[2] / "samples" / "hl7v2"
SAMPLE_FILES = sorted(SAMPLES.glob("*.hl7"))
NOW = datetime(2024, 1, 2, 3, 4, 5)
PHI = "ZEBRAPHI"  # a marker that must never appear in an error message

MSH_FIELDS = ["SApp", "SFac^1.2.3^ISO", "RApp", "RFac", "20240101120000", "", "ADT^A08^ADT_A01",
              "CTRL1", "P", "2.5.1", "", "", "", "", "", "UNICODE UTF-8"]
MSH = "|".join(["MSH", "^~\\&", *MSH_FIELDS])
PID = "PID|1||ID1^^^HOSP^MR~ID2^^^SSA^SS||DOE^JOHN^Q^JR||19700101|M|||1 MAIN ST&APT 2^^TOWN||" \
      "O\\T\\BRIEN"
FT1_A = "FT1|1|||20240101||CG|CODE1^Charge one|||1|10.00"
FT1_B = "FT1|2|||20240102||CG|CODE2^Charge two|||2|20.00"
MESSAGE = "\r".join([MSH, PID, FT1_A, FT1_B])


# -- normalize and peek_msh ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["A|1\r\nB|2\r\n", "A|1\nB|2\n", "A|1\rB|2\r", "A|1\rB|2",
                                  "\ufeffA|1\nB|2\r\n"])
def test_normalize_segments_to_cr(text):
    # DESIGN §3.5: LF/CRLF -> CR, a BOM dropped, a missing final CR added; nothing else
    assert normalize_segments(text) == "A|1\rB|2\r"


@pytest.mark.parametrize("text, expected", [
    ("A|1 \rB|2||| ", "A|1 \rB|2||| \r"),           # trailing spaces are data
    ("A|1\nB|2|||\n\n", "A|1\rB|2|||\r\r"),          # empty trailing fields, a blank line kept
    ("A|1\tX\r", "A|1\tX\r"),
])
def test_normalize_segments_changes_nothing_else(text, expected):
    assert normalize_segments(text) == expected
    assert normalize_segments(expected) == expected   # idempotent


def test_normalize_keeps_mllp_bytes_visible():
    # 0x0B/0x1C must survive so the caller can AR them (RELIABILITY 6, 7).
    assert normalize_segments("\x0bMSH|x\x1c") == "\x0bMSH|x\x1c\r"   # only the final CR added


def test_peek_msh_standard_numbering():
    msh = peek_msh(MESSAGE)
    assert (msh.field(1), msh.field(2)) == ("|", "^~\\&")
    for n, value in enumerate(MSH_FIELDS, start=3):
        assert msh.field(n) == value
    assert msh.field(0) == "" and msh.field(len(MSH_FIELDS) + 3) == ""
    assert msh.field_count == len(MSH_FIELDS) + 2
    assert msh.control_id == "CTRL1"
    assert msh.message_type == "ADT^A08"
    assert (msh.sender, msh.sender_facility) == ("SApp", "SFac")
    assert (msh.version, msh.processing_id, msh.charset) == ("2.5.1", "P", "UNICODE UTF-8")


def test_peek_msh_fewer_than_12_fields():
    msh = peek_msh("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1\rPID|1")
    assert msh.field_count == 10
    assert msh.field(11) == "" and msh.field(12) == "" and msh.version == ""
    assert msh.control_id == "X1"


def test_peek_msh_reads_only_first_segment_with_lf():
    msh = peek_msh("MSH|^~\\&|A\nPID|1|2|3|4|5|6|7|8|9|10|11|12")
    assert msh.field_count == 3


def test_peek_msh_message_type_without_trigger():
    assert peek_msh("MSH|^~\\&|||||||ADT|1|P|2.5").message_type == "ADT"
    assert peek_msh("MSH|^~\\&|||||||||1|P|2.5").message_type == ""


def test_peek_msh_unusual_delimiters():
    msh = peek_msh("MSH#$*@!#SApp#SFac#RApp#RFac#2024##ORU$R01#C9#P#2.4")
    assert (msh.field_sep, msh.encoding) == ("#", "$*@!")
    assert msh.message_type == "ORU^R01"  # the property always joins with '^'
    assert msh.control_id == "C9" and msh.sender == "SApp"


@pytest.mark.parametrize("text", ["", "PID|1", "MSH", "MSH|", "MSH||A", "MSHA^~\\&", "MSH|^~^&|A",
                                  "MSH|a~\\&|A", "MSH|^~ &|A", "MSH|^~\\&#!%|A", " MSH|^~\\&|A",
                                  "MSH |^~\\&"])
def test_peek_msh_rejects_non_msh(text):
    assert peek_msh(text) is None


# -- paths ---------------------------------------------------------------------------------------

def test_parse_path_forms():
    assert parse_path("PID") == Path("PID")
    assert parse_path("PID.5.1") == Path("PID", 1, 5, None, 1)
    assert parse_path("PID.3(2).1") == Path("PID", 1, 3, 2, 1)
    assert parse_path("FT1(2).11") == Path("FT1", 2, 11)
    assert parse_path("PID.11.1.2") == Path("PID", 1, 11, None, 1, 2)
    assert parse_path("ZX1(3).4(5).6.7") == Path("ZX1", 3, 4, 5, 6, 7)
    assert parse_path("PID.5.1") is parse_path("PID.5.1")  # cached


@pytest.mark.parametrize("bad", ["", "PI", "pid.5", "PID.0", "PID.3(0)", "PID(0).1", "PID..3",
                                 "PID.3.1.2.4", "PID-5-1", "PID.5.", "PID.a", "1ID.5"])
def test_parse_path_invalid(bad):
    with pytest.raises(ValueError) as error:
        parse_path(bad)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("path, expected", [
    ("MSH.1", "|"), ("MSH.2", "^~\\&"), ("MSH.3", "SApp"), ("MSH.4.2", "1.2.3"),
    ("MSH.9.1", "ADT"), ("MSH.9.2", "A08"), ("MSH.10", "CTRL1"), ("MSH.12", "2.5.1"),
    ("PID.1", "1"), ("PID.3.1", "ID1"), ("PID.3(1).4", "HOSP"), ("PID.3(2).1", "ID2"),
    ("PID.3(2).5", "SS"), ("PID.3(3).1", ""), ("PID.5.1", "DOE"), ("PID.5.4", "JR"),
    ("PID.5.5", ""), ("PID.5.1.1", "DOE"), ("PID.5.1.2", ""), ("PID.5", "DOE^JOHN^Q^JR"),
    ("PID.3", "ID1^^^HOSP^MR"), ("PID.3(2)", "ID2^^^SSA^SS"), ("PID.7", "19700101"),
    ("PID.7(2)", ""), ("PID.11", "1 MAIN ST&APT 2^^TOWN"), ("PID.11.1", "1 MAIN ST"),
    ("PID.11.1.1", "1 MAIN ST"),
    ("PID.11.1.2", "APT 2"), ("PID.11.1.3", ""), ("PID.11.3", "TOWN"), ("PID.13", "O&BRIEN"),
    ("PID.13.1", "O&BRIEN"), ("PID.99", ""), ("PID.2", ""), ("FT1.11", "10.00"),
    ("FT1(2).11", "20.00"), ("FT1(2).7.2", "Charge two"), ("FT1(3).11", ""), ("ZZZ.1", ""),
    ("PV1(2).3", ""), ("PID", PID), ("MSH.1.2", ""), ("MSH.2(2)", ""),
])
def test_view_paths(path, expected):
    assert HL7View(MESSAGE)[path] == expected


def test_view_segments_and_relative_paths():
    view = HL7View(MESSAGE)
    assert view.segment_names() == ["MSH", "PID", "FT1", "FT1"]
    ft1 = view.segments("FT1")
    assert [type(s) for s in ft1] == [SegmentView, SegmentView]
    assert [s["11"] for s in ft1] == ["10.00", "20.00"]
    assert ft1[1][11] == "20.00" and ft1[1]["7.1"] == "CODE2" and ft1[0]["7"] == "CODE1^Charge one"
    assert ft1[0].name == "FT1" and str(ft1[0]) == FT1_A
    assert view.segments("MSH")[0]["9.2"] == "A08"
    assert view.segments("PID")[0]["3(2).4"] == "SSA"
    assert view.segments("OBX") == []
    assert ft1[0].get("30", "none") == "none" and view.get("PID.99", "none") == "none"
    assert view.get("PID.5.1", "none") == "DOE"
    for bad in ("x", "0", "1.", "PID.1"):
        with pytest.raises(ValueError):
            ft1[0][bad]
    with pytest.raises(ValueError):
        ft1[0][0]
    with pytest.raises(ValueError):
        view["nope"]


def test_view_reads_lf_text_and_unusual_delimiters():
    assert HL7View(MESSAGE.replace("\r", "\n"))["FT1(2).11"] == "20.00"
    text = "MSH#$*@!#SApp#SFac#R#F#2024##ORU$R01#C9#P#2.4\rOBX#1#ST#A$B!C*D$E#x@F@y"
    view = HL7View(text)
    assert (view["MSH.1"], view["MSH.2"], view["MSH.9.2"]) == ("#", "$*@!", "R01")
    assert (view["OBX.3.1"], view["OBX.3.2.2"], view["OBX.3(2).2"]) == ("A", "C", "E")
    assert view["OBX.4"] == "x#y"


def test_view_is_lazy():
    view = HL7View(MESSAGE)
    assert view._index is None  # construction splits nothing
    view["FT1(2).11"]
    assert [v is not None for v in view._views] == [False, False, False, True]
    assert view.segments("FT1")[1]._fields is not None and view.segments("FT1")[0]._fields is None


def test_view_repr_has_no_content():
    view = HL7View(MESSAGE)
    assert "DOE" not in repr(view) and "DOE" not in repr(view.segments("PID")[0])


# -- escaping ------------------------------------------------------------------------------------

VALUES = ["plain", "", "a|b", "^~\\&", "O'Brien & Sons | ^ ~", "x\ry", "x\ny", "\r\n", "tab\there",
          "é€😀 ü", "\x0b\x1c\x00\x7f", "\\E\\ already", "\\", "#$*@!", "MSH|^~\\&|\rPID|1"]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("encoding, field_sep", [("^~\\&", "|"), ("$*@!", "#"), ("^~\\&#", "|")])
def test_escape_round_trip_and_inert(value, encoding, field_sep):
    escaped = escape(value, encoding, field_sep)
    assert unescape(escaped, encoding, field_sep) == value
    delimiters = set(field_sep + encoding) - {encoding[2]}
    assert not delimiters & set(escaped)
    assert not {"\r", "\n", "\x0b", "\x1c"} & set(escaped)


@pytest.mark.parametrize("value", VALUES)
def test_escaped_value_cannot_inject_fields_or_segments(value):
    built = build_segment("NTE", ["1", "L", value, "after"])
    text = "\r".join([MSH, built, "ZZZ|end"])
    view = HL7View(text)
    assert view.segment_names() == ["MSH", "NTE", "ZZZ"]
    assert view["NTE.3"] == value and view["NTE.3.1"] == value and view["NTE.3(1).1.1"] == value
    assert view["NTE.4"] == "after" and view["NTE.5"] == ""


def test_build_segment_components_and_subcomponents():
    segment = build_segment("PID", [1, None, [["A|1", "B"], "C^D"], ("x~y",)])
    view = HL7View("\r".join([MSH, segment]))
    assert view["PID.1"] == "1" and view["PID.2"] == ""
    assert (view["PID.3.1.1"], view["PID.3.1.2"], view["PID.3.2"]) == ("A|1", "B", "C^D")
    assert view["PID.4"] == "x~y" and view["PID.4(2)"] == ""


@pytest.mark.parametrize("name", ["MSH", "BHS", "pid", "PI", "PIDX", "", None])
def test_build_segment_bad_names(name):
    with pytest.raises(ValueError):
        build_segment(name, ["x"])


def test_build_segment_too_deep():
    with pytest.raises(ValueError):
        build_segment("NTE", [[["a", ["b"]]]])


def test_unescape_standard_sequences_like_python_hl7():
    container = hl7.parse(MSH)
    for text in ["a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f", "\\X0D\\\\X0A\\", "line\\.br\\two", "\\XE9\\",
                 "no escapes"]:
        assert unescape(text) == hl7.util.unescape(container, text)


def test_unescape_unknown_and_unterminated_kept_without_logging(caplog):
    caplog.set_level(logging.DEBUG)
    odd = f"{PHI} \\Q7\\ \\Xzz\\ \\X123\\ tail\\"
    assert unescape(odd) == odd
    assert unescape("a\\H\\b\\N\\c\\\\d") == "abc\\\\d"
    assert unescape("\\XE9\\") == "é"  # not valid UTF-8: read as Latin-1
    assert unescape("\\XC3A9\\") == "é"  # python-hl7 would give 'Ã©' (byte by byte)
    assert caplog.records == []


# -- ACKs ----------------------------------------------------------------------------------------

def test_ack_mirrors_msh():
    received = peek_msh(MESSAGE)
    ack = build_ack(received, "AA", now=NOW)
    assert ack.endswith("\r") and ack.count("\r") == 2   # every segment ends with CR (DESIGN §3.5)
    msh = peek_msh(ack)
    assert (msh.field(3), msh.field(4)) == (received.field(5), received.field(6))
    assert (msh.field(5), msh.field(6)) == (received.field(3), received.field(4))
    assert msh.field(6) == "SFac^1.2.3^ISO"  # copied verbatim, components and all
    assert (msh.processing_id, msh.version) == (received.processing_id, received.version)
    assert msh.field(9) == "ACK^A08^ACK" and msh.field(7) == "20240102030405"
    assert msh.control_id == "ACK" + received.control_id
    assert parse_ack(ack) == ("AA", "CTRL1", "")
    assert "ERR" not in HL7View(ack).segment_names()


def test_ack_uses_the_message_delimiters():
    text = "MSH#$*@!#SApp#SFac#RApp#RFac#2024##ORU$R01#C9#P#2.4\rOBX#1"
    note = "odd # $ * @ ! chars"
    ack = build_ack(peek_msh(text), "AE", note, error=note, now=NOW, control_id="A#1")
    assert ack.startswith("MSH#$*@!#RApp#RFac#SApp#SFac#20240102030405##ACK$R01$ACK#A@F@1#P#2.4\r")
    assert parse_ack(ack) == ("AE", "C9", note)
    view = HL7View(ack)
    assert view["MSH.10"] == "A#1" and view["ERR.7"] == note and view["ERR.3.3"] == "HL70357"
    assert "|" not in ack and "^" not in ack


def test_ack_ae_with_err():
    ack = build_ack(peek_msh(MESSAGE), "AE", "not stored", error="disk | full\rreally", now=NOW)
    view = HL7View(ack)
    assert view.segment_names() == ["MSH", "MSA", "ERR"]
    assert (view["MSA.1"], view["MSA.2"], view["MSA.3"]) == ("AE", "CTRL1", "not stored")
    assert (view["ERR.3.1"], view["ERR.3.3"]) == ("207", "HL70357")
    assert view["ERR.3.2"] == "Application internal error"
    assert view["ERR.4"] == "E" and view["ERR.7"] == "disk | full\rreally"


def test_ack_without_trigger_and_short_msh():
    msh = peek_msh("MSH|^~\\&|A|B|C|D|2024||ADT|X1")
    ack = build_ack(msh, "AR", "rejected", error="MSH has 10 fields", now=NOW)
    view = HL7View(ack)
    assert view["MSH.9"] == "ACK" and view["MSA.2"] == "X1" and view["MSA.1"] == "AR"


def test_ack_rejects_unknown_code():
    with pytest.raises(ValueError):
        build_ack(peek_msh(MESSAGE), "OK")


@pytest.mark.parametrize("reason", ["empty frame", "not HL7: the first segment is not MSH"])
def test_build_reject(reason):
    ack = build_reject(reason, now=NOW)
    msh = peek_msh(ack)
    assert msh.field_count >= 12 and msh.control_id and msh.field(7) == "20240102030405"
    assert parse_ack(ack) == ("AR", "", reason)
    assert "MSA|AR||" in ack and HL7View(ack)["ERR.7"] == reason


def test_parse_ack_variants():
    assert parse_ack("MSH|^~\\&|||||||ACK|1|P|2.5\nMSA|CA|C1|a\\T\\b\n") == ("CA", "C1", "a&b")
    assert parse_ack("MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AA") == ("AA", "", "")
    with pytest.raises(ValueError):
        parse_ack(f"garbage {PHI}")
    with pytest.raises(ValueError) as error:
        parse_ack(f"MSH|^~\\&|{PHI}\rERR|1")
    assert PHI not in str(error.value)


# -- batches -------------------------------------------------------------------------------------

def _message(n: int) -> str:
    return "\r".join([MSH.replace("CTRL1", f"C{n}"), PID, f"NTE|{n}"]) + "\r"   # messages end with CR (§3.5)


def test_split_batch_fhs_bhs():
    messages = [_message(n) for n in range(3)]
    batch = "\r".join(["FHS|^~\\&|S", "BHS|^~\\&|S", *[m[:-1] for m in messages], "BTS|3", "FTS|1"])
    assert split_batch(batch) == (messages, 3)
    assert split_batch(batch.replace("\r", "\r\n") + "\r\n") == (messages, 3)
    parsed = hl7.parse_file(batch)
    assert [str(m).rstrip("\r") + "\r" for b in parsed for m in b] == messages


def test_split_batch_counts():
    one, two = _message(1), _message(2)
    assert split_batch("".join(["BHS|^~\\&\r", one, two, "BTS"])) == ([one, two], None)
    assert split_batch("\r".join([one, "", two])) == ([one, two], None)
    two_batches = ["FHS|^~\\&", "BHS|^~\\&", one[:-1], "BTS|1", "BHS|^~\\&", two[:-1], "BTS|1", "FTS|2"]
    assert split_batch("\r".join(two_batches)) == ([one, two], 2)
    assert split_batch("BHS|^~\\&\rBTS|0") == ([], 0)
    # the declared count is returned as found: the caller compares it
    assert split_batch("".join(["BHS|^~\\&\r", one, "BTS|5"])) == ([one], 5)


def test_split_batch_unusual_delimiters():
    batch = "BHS#$*@!\rMSH#$*@!#A\rPID#1\rBTS#1"
    assert split_batch(batch) == (["MSH#$*@!#A\rPID#1\r"], 1)


@pytest.mark.parametrize("segments", [
    [f"PID|{PHI}", "MSH|^~\\&|A"],
    ["BHS|^~\\&", "MSH|^~\\&|A", f"BTS|{PHI}"],
    ["BHS|^~\\&", "MSH|^~\\&|A"],
    ["FHS|^~\\&", "MSH|^~\\&|A"],
    ["FHS|^~\\&", "MSH|^~\\&|A", "FTS|1", f"MSH|^~\\&|{PHI}"],
    ["MSH|^~\\&|A", "BTS|1"],
    ["BHS|^~\\&", "BHS|^~\\&", "MSH|^~\\&|A", "BTS|1", "BTS|1"],
    ["MSH|^~\\&|A", "FHS|^~\\&", "FTS|0"],
    [f"{PHI} {PHI}", "MSH|^~\\&|A"],
])
def test_split_batch_malformed(segments):
    with pytest.raises(ValueError) as error:
        split_batch("\r".join(segments))
    assert PHI not in str(error.value) and "malformed batch" in str(error.value)


# -- dates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2024", "202401", "20240102", "2024010203", "202401020304",
                                   "20240102030405", "20240102030405.123", "20240102030405+0200",
                                   "202401020304-0530", "19700101"])
def test_parse_hl7_datetime_matches_python_hl7(value):
    ours, theirs = parse_hl7_datetime(value), hl7.parse_datetime(value)
    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()
    assert ours.tzinfo is None or isinstance(ours.tzinfo, timezone)


@pytest.mark.parametrize("value", ["", "   ", "abc", "202", "2024013", "20241340", "2024-01-02",
                                   "20240102T0304", "2024010203.5", "20240230",
                                   "20240102030405.12345"])
def test_parse_hl7_datetime_junk(value):
    assert parse_hl7_datetime(value) is None


@pytest.mark.parametrize("text, precision", [
    ("2024", "year"), ("202401", "month"), ("20240102", "day"), ("2024010203", "hour"),
    ("202401020304", "minute"), ("20240102030405", "second"),
    ("20240102030405.120", "millisecond"), ("20240102030405-0530", "second"),
])
def test_format_round_trip(text, precision):
    assert format_hl7_datetime(parse_hl7_datetime(text), precision) == text


def test_format_variants():
    aware = datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_hl7_datetime(aware) == "09990102030405+0200"
    assert format_hl7_datetime(date(2024, 5, 6), "day") == "20240506"
    with pytest.raises(ValueError):
        format_hl7_datetime(NOW, "fortnight")


# -- every sample against python-hl7 -------------------------------------------------------------

def _leaf_paths(message):
    """(segment name, occurrence, field, rep, comp, sub) for every leaf python-hl7 parsed."""
    occurrences: dict[str, int] = {}
    for segment in message:
        name = str(segment[0][0])
        occurrences[name] = occurrences.get(name, 0) + 1
        for f in range(1, len(segment)):
            field = segment[f]
            reps = len(field) if field and isinstance(field[0], hl7.Repetition) else 1
            for r in range(1, reps + 1):
                rep = field(r) if reps > 1 or isinstance(field[0], hl7.Repetition) else field[0]
                comps = len(rep) if isinstance(rep, hl7.Repetition) else 1
                for c in range(1, comps + 2):  # one past the end too
                    comp = rep(c) if isinstance(rep, hl7.Repetition) and c <= comps else None
                    subs = len(comp) if isinstance(comp, hl7.Component) else 1
                    for s in range(1, subs + 2):
                        yield name, occurrences[name], segment, f, r, c, s


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=[p.name for p in SAMPLE_FILES])
def test_samples_against_python_hl7(sample):
    text = normalize_segments(sample.read_text(encoding="utf-8"))
    # python-hl7 strips the whole message (a trailing space in the last field goes); we keep data
    # as received (DESIGN §3.5), so compare with python-hl7 over the text it would keep
    text = text.rstrip(" \r") + "\r"
    parsed = hl7.parse(text)
    msh, their_msh = peek_msh(text), parsed.segment("MSH")
    assert msh is not None and msh.field_count == len(their_msh) - 1
    assert [msh.field(n) for n in range(1, len(their_msh))] == [str(f) for f in their_msh[1:]]
    view = HL7View(text)
    assert view.segment_names() == [str(s[0][0]) for s in parsed]
    checked = 0
    for name, occurrence, segment, f, r, c, s in _leaf_paths(parsed):
        try:
            expected = segment.extract_field(occurrence, f, r, c, s)
        except IndexError:
            expected = ""  # python-hl7 raises for what we answer '' (a missing piece)
        assert view[f"{name}({occurrence}).{f}({r}).{c}.{s}"] == expected
        if s == 1:  # a component path without subcomponent: the first subcomponent, like hl7
            assert view[f"{name}({occurrence}).{f}({r}).{c}"] == expected
        checked += 1
    assert checked > 50
    assert view["MSH.10"] == msh.control_id == parsed.extract_field("MSH", 1, 10, 1, 1, 1).strip()
    if "PID" in view.segment_names():
        assert view["PID.5.1"] == parsed.segment("PID").extract_field(1, 5, 1, 1, 1)


# -- two MSH in one frame, FTS-1 (issue 15, point 8) ----------------------------------------------
def test_a_frame_with_a_second_msh_is_not_one_message():
    from engine.hl7.acceptance import check_hl7

    one = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X1|P|2.5\rPID|1\r"
    _msh, problem = check_hl7(one + one.replace("X1", "X2"))
    assert problem.startswith("the frame holds 2 messages") and "X2" not in problem
    assert check_hl7(one)[1] is None


@pytest.mark.parametrize("fts, problem", [("1", None), ("", None), ("2", "FTS-1 declares 2"),
                                          ("x", "FTS-1 at segment 8 is not a number")])
def test_fts1_is_checked_like_bts1(fts, problem):
    from engine.hl7.batch import split_batch

    one = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|X1|P|2.5\rPID|1\r"
    text = f"FHS|^~\\&\rBHS|^~\\&\r{one}{one.replace('X1', 'X2')}BTS|2\rFTS|{fts}\r"
    if problem is None:
        assert len(split_batch(text)[0]) == 2
    else:
        with pytest.raises(ValueError, match=problem):
            split_batch(text)
