"""engine.message: lazy views per inbound type, eager validation, XML DTD refusal, byte decoding."""

from __future__ import annotations

import codecs
import json
import xml.etree.ElementTree as ElementTree

import pytest

from engine.hl7.view import HL7View
from engine.hl7.msh import peek_msh
from engine.core.message import Message, MessageParseError, XmlView, parse_inbound
from engine.hl7.charset import charset_codec, decode_bytes, decode_frame, frame_codec

PHI = "ZEBRAPHI"  # must never appear in an error message
HL7 = ("MSH|^~\\&|EHR|HOSP|AGENCY|COLL|20240102030405||ADT^A08^ADT_A01|CTRL7|P|2.5\n"
       "PID|1||MRN1||DOE^JANE")


def _hl7_bytes(charset: str, body: bytes) -> bytes:
    msh = f"MSH|^~\\&|A|B|C|D|2024||ADT^A08|C1|P|2.5||||||{charset}".encode("ascii")
    return msh + b"\rPID|1||" + body


# -- Message and its views -----------------------------------------------------------------------

def test_hl7_message_view_and_msh():
    message = Message(HL7, id=4, channel="adt")
    assert isinstance(message.view, HL7View)
    assert message.view is message.view  # parsed once, cached
    assert message.view["PID.5.2"] == "JANE" and message.view["MSH.9.2"] == "A08"
    assert message.msh is message.msh and message.msh.control_id == "CTRL7"
    assert (message.message_type, message.control_id) == ("ADT^A08", "CTRL7")
    assert (message.id, message.channel, message.inbound, message.raw) == (4, "adt", "hl7", HL7)


def test_views_are_lazy():
    message = Message(f"{{not json {PHI}", "json")  # constructing never parses
    with pytest.raises(MessageParseError) as error:
        message.view
    assert PHI not in str(error.value) and "line 1" in str(error.value)


def test_hl7_view_of_non_hl7_text():
    with pytest.raises(MessageParseError) as error:
        Message(f"PID|{PHI}").view
    assert PHI not in str(error.value)


def test_json_view():
    data = {"account": "A1", "amount": 12.5, "lines": [1, 2]}
    message = Message(json.dumps(data), "json")
    assert message.view == data
    assert message.msh is None and message.message_type == "" and message.control_id == ""


@pytest.mark.parametrize("raw, expected", [
    ("account,amount\nA1,12.50\n", {"account": "A1", "amount": "12.50"}),
    ("\ufeffaccount, amount\r\nA1,12.50", {"account": "A1", "amount": "12.50"}),
    ('account,note\nA1,"a, quoted\nnote"', {"account": "A1", "note": "a, quoted\nnote"}),
    ("account,amount,status\nA1,3\n\n", {"account": "A1", "amount": "3", "status": ""}),
])
def test_csv_view(raw, expected):
    assert Message(raw, "csv").view == expected


@pytest.mark.parametrize("raw", [f"account\n{PHI}\n{PHI}", "account,amount", f"a,b\n{PHI},2,3",
                                 f"a,a\n{PHI},2", ""])
def test_csv_view_invalid(raw):
    with pytest.raises(MessageParseError) as error:
        Message(raw, "csv").view
    assert PHI not in str(error.value)


def test_xml_view():
    raw = "<?xml version='1.0' encoding='UTF-8'?><payment><account>A1</account>" \
          "<amount currency='USD'>12.50</amount><empty/></payment>"
    view = Message(raw, "xml").view
    assert isinstance(view, XmlView) and isinstance(view.root, ElementTree.Element)
    assert view.root.tag == "payment"
    assert view["account"] == "A1" and view["amount"] == "12.50" and view["./amount"] == "12.50"
    assert view["missing/deeper"] == "" and view["empty"] == "" and view.get("missing", "x") == "x"
    assert [e.get("currency") for e in view.findall("amount")] == ["USD"]
    with pytest.raises(ValueError):
        view["amount["]


@pytest.mark.parametrize("raw", [
    f'<!DOCTYPE a [<!ENTITY x "{PHI}">]><a>&x;</a>',
    '<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
    '<?xml version="1.0"?>\n<!doctype a><a/>',
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>',
    f"<a>{PHI}<!ENTITY y 'z'></a>",
])
def test_xml_dtd_and_entities_refused(raw):
    with pytest.raises(MessageParseError) as error:
        Message(raw, "xml").view
    assert "DTD" in str(error.value) and PHI not in str(error.value)


def test_xml_invalid():
    with pytest.raises(MessageParseError) as error:
        Message(f"<a>{PHI}</b>", "xml").view
    assert PHI not in str(error.value) and "line 1" in str(error.value)


def test_text_view():
    assert Message("free text\nline two", "text").view == "free text\nline two"


def test_unknown_inbound():
    with pytest.raises(ValueError):
        Message("x", "yaml")
    with pytest.raises(ValueError):
        parse_inbound("x", "yaml")


def test_repr_has_no_content():
    assert "JANE" not in repr(Message(HL7, id=1)) and "1" in repr(Message(HL7, id=1))


# -- parse_inbound -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, inbound", [(HL7, "hl7"), ('{"a": 1}', "json"), ("a,b\n1,2", "csv"),
                                          ("<a><b>1</b></a>", "xml"), ("anything", "text"),
                                          ("", "text")])
def test_parse_inbound_accepts(raw, inbound):
    assert parse_inbound(raw, inbound) is None


@pytest.mark.parametrize("raw, inbound, words", [
    (f"PID|{PHI}", "hl7", "not an HL7 message"),
    ("", "hl7", "not an HL7 message"),
    (f"MSH|^~\\&|{PHI}|B|C|D|2024||ADT^A01|C1", "hl7", "at least 12"),
    (f"MSH|^~\\&|{PHI}|B|C|D|2024||ADT^A01| |P|2.5", "hl7", "MSH-10"),
    (f'{{"a": "{PHI}"', "json", "JSON"),
    (f"<a>{PHI}", "xml", "XML"),
    ('<!DOCTYPE a><a/>', "xml", "DTD"),
    (f"a\n{PHI}\n{PHI}", "csv", "CSV"),
])
def test_parse_inbound_rejects(raw, inbound, words):
    with pytest.raises(MessageParseError) as error:
        parse_inbound(raw, inbound)
    assert words in str(error.value) and PHI not in str(error.value)
    assert isinstance(error.value, ValueError)


# -- decode_bytes --------------------------------------------------------------------------------

def test_decode_utf8_default_and_bom():
    text = "MSH|^~\\&|A\rPID|1||Zoë Ünal"
    assert decode_bytes(text.encode("utf-8")) == text
    assert decode_bytes(b"\xef\xbb\xbf" + text.encode("utf-8")) == text
    assert decode_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text


@pytest.mark.parametrize("charset, body, expected", [
    ("8859/1", b"Zo\xeb", "Zoë"),
    ("ISO IR100", b"Zo\xeb", "Zoë"),
    ("8859/15", b"\xa4", "€"),
    ("UNICODE UTF-8", "Zoë".encode(), "Zoë"),
    ("windows-1252", b"\x80", "€"),
    ("", "Zoë".encode(), "Zoë"),
    ("KLINGON", "Zoë".encode(), "Zoë"),  # unknown: UTF-8
    ("unicode_escape", b"\\x41", "\\x41"),  # not a plain charset: ignored, UTF-8
    ("ASCII", b"Zo\xeb", "Zo\ufffd"),
    ("UNICODE UTF-8", b"Zo\xeb\xff", "Zo\ufffd\ufffd"),
])
def test_decode_by_msh18(charset, body, expected):
    text = decode_bytes(_hl7_bytes(charset, body))
    assert peek_msh(text).charset == charset
    assert text.endswith("PID|1||" + expected)
    assert text.startswith("MSH|^~\\&|A|B")


def test_decode_with_lf_and_hint():
    raw = b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|C1|P|2.5||||||8859/1\nPID|1||Zo\xeb"
    assert decode_bytes(raw).endswith("Zoë")
    assert decode_bytes(b"PID|1||Zo\xeb", charset_hint="8859/1") == "PID|1||Zoë"
    declared_utf8 = _hl7_bytes("UNICODE UTF-8", b"Zo\xeb")
    assert decode_bytes(declared_utf8, charset_hint="8859/1").endswith("Zoë")


@pytest.mark.parametrize("charset", ["", "ASCII", "UNICODE UTF-8", "UNICODE UTF-16", "8859/1",
                                     "ISO IR87", "BIG-5", "GB 18030-2000", "utf-32", "nonsense"])
def test_decode_never_raises(charset):
    junk = bytes(range(256)) * 3 + b"\xf0\x28\x8c\x28\xc3"
    assert isinstance(decode_bytes(_hl7_bytes(charset, junk)), str)
    assert isinstance(decode_bytes(junk, charset_hint=charset), str)
    assert isinstance(decode_bytes(b"MSH|" + junk), str)


# -- decode_frame: the original bytes, kept only when decoding was lossy (RELIABILITY 17) ----------

@pytest.mark.parametrize("raw, hint", [
    (_hl7_bytes("UNICODE UTF-8", "Zoë".encode()), ""),
    (_hl7_bytes("8859/1", b"Zo\xeb"), ""),
    (b"\xef\xbb\xbf" + _hl7_bytes("", "Zoë".encode()), ""),
    (codecs.BOM_UTF16_BE + "MSH|^~\\&|A\rPID|1||Zoë".encode("utf-16-be"), ""),
    (b"PID|1||Zo\xeb", "8859/1"),
])
def test_a_valid_frame_keeps_no_original(raw, hint):
    text, original = decode_frame(raw, hint)
    assert original is None
    assert "Zoë" in text and "\ufffd" not in text


@pytest.mark.parametrize("raw, hint", [
    (_hl7_bytes("UNICODE UTF-8", b"D\xff\xfeE^J\xe9NE"), ""),      # not UTF-8 at all; a Latin-1 byte
    (_hl7_bytes("", b"Zo\xeb"), ""),                                # undeclared: UTF-8, and it is not
    (_hl7_bytes("ASCII", b"Zo\xeb"), ""),
    (b"\xef\xbb\xbf" + _hl7_bytes("", b"Zo\xeb"), ""),              # the BOM is part of what is kept
    (codecs.BOM_UTF16_LE + "MSH|A".encode("utf-16-le") + b"\x00", ""),  # odd length
    (b"PID|1||Zo\xeb", "UTF-8"),
])
def test_a_lossy_frame_keeps_its_exact_bytes(raw, hint):
    text, original = decode_frame(raw, hint)
    assert "\ufffd" in text
    assert original is raw                    # the frame itself: no copy, byte for byte
    assert decode_bytes(raw, hint) == text    # the old entry point gives the same text


def test_replacement_is_per_invalid_sequence_and_keeps_the_rest():
    text, original = decode_frame(_hl7_bytes("UNICODE UTF-8", b"D\xff\xfeE^J\xe9NE"))
    assert text.endswith("PID|1||D\ufffd\ufffdE^J\ufffdNE") and original is not None


def test_frame_codec_names_what_decode_frame_uses():
    assert frame_codec(_hl7_bytes("8859/1", b"")) == "latin-1"
    assert frame_codec(_hl7_bytes("UNICODE UTF-8", b"")) == "utf-8"
    assert frame_codec(_hl7_bytes("8859/1", b""), "UTF-8") == "utf-8"        # the hint wins over MSH-18
    assert frame_codec(b"\xef\xbb\xbf" + _hl7_bytes("8859/1", b"")) == "utf-8-sig"  # a BOM over both
    assert frame_codec(codecs.BOM_UTF16_LE + b"M\x00") == "utf-16"
    assert frame_codec(b"PID|1") == frame_codec(_hl7_bytes("KLINGON", b"")) == "utf-8"


@pytest.mark.parametrize("charset", ["", "ASCII", "UNICODE UTF-8", "UNICODE UTF-16", "8859/1",
                                     "ISO IR87", "BIG-5", "GB 18030-2000", "utf-32", "nonsense"])
def test_decode_frame_never_raises_and_keeps_junk(charset):
    junk = bytes(range(256)) * 3 + b"\xf0\x28\x8c\x28\xc3"
    for raw, hint in ((_hl7_bytes(charset, junk), ""), (junk, charset), (b"MSH|" + junk, "")):
        text, original = decode_frame(raw, hint)
        assert isinstance(text, str)
        assert original is None or original is raw
        if original is None:                  # only a codec that maps every byte may keep nothing
            assert "\ufffd" not in text


def test_charset_codec():
    assert charset_codec("UNICODE UTF-8") == "utf-8"
    assert charset_codec(" 8859/1 ") == "latin-1"
    assert charset_codec("utf8") == "utf-8"
    assert charset_codec("base64") is None and charset_codec("rot13") is None
    assert charset_codec("") is None and charset_codec("nope") is None
