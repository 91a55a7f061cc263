"""Issue 18's bad input: what Switchboard lacks is left out and noted, never a refusal of the whole
channel; a name that is not a file name is made one; two channels with one name, one listen address
or one read folder are reported in `switchboard check`'s words, and the import still passes check."""
from __future__ import annotations

import re

from .mirth_support import channel, check_output, export, imported, notes


def variant(tmp_path, number, name, *swaps) -> object:
    """A copy of a corpus export with text swapped (and a new channel id, so it is another channel)."""
    text = export(number).read_text(encoding="utf-8")
    text = re.sub(r"(<channel version=\"[^\"]+\">\s*<id>)[^<]+", r"\g<1>00000000-0000-4000-8000-" + f"{len(name):012d}",
                  text, count=1)
    for old, new in swaps:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_data_type_we_lack_is_imported_as_text_and_noted(tmp_path):
    path = variant(tmp_path, "03", "ncpdp.xml", ("<inboundDataType>HL7V2</inboundDataType>",
                                                 "<inboundDataType>NCPDP</inboundDataType>"))
    out = imported(tmp_path, path)
    data = channel(out, "pas-adt-strip-z-segments")
    assert data["inbound"] == "text" and data["enabled"] is True and data["destination"]
    assert "The channel's data type is NCPDP, which Switchboard does not parse" in notes(out)
    assert check_output(out)[0] == []


def test_a_name_that_is_not_a_file_name_is_made_one_and_the_mirth_name_kept(tmp_path):
    path = variant(tmp_path, "02", "odd.xml",
                   ("<name>LIS Results to File Drop</name>", "<name>../LIS: results*</name>"))
    out = imported(tmp_path, path)
    assert [p.name for p in (out / "channels").iterdir()] == ["lis-results.toml"]
    text = (out / "channels" / "lis-results.toml").read_text()
    assert 'channel "../LIS: results*"' in text and 'name = "lis-results"' in text
    assert check_output(out)[0] == []


def test_two_channels_with_one_name_are_reported_as_check_would_and_the_second_numbered(tmp_path):
    twin = variant(tmp_path, "02", "twin.xml", ("<name>LIS Results to File Drop</name>",
                                                 "<name>ADT Router - PAS to RIS</name>"), ("26102", "26199"))
    out = imported(tmp_path, export("01"), twin)
    assert channel(out, "adt-router-pas-to-ris-2")["name"] == "adt-router-pas-to-ris-2"
    assert ("`channels/adt-router-pas-to-ris-2.toml: name: channel name 'adt-router-pas-to-ris' is already used by "
            "channels/adt-router-pas-to-ris.toml`") in notes(out)
    assert check_output(out)[0] == []


def test_two_channels_on_one_port_are_reported_as_check_would_and_the_second_disabled(tmp_path):
    same_port = variant(tmp_path, "02", "port.xml", ("26102", "26101"))
    out = imported(tmp_path, export("01"), same_port)
    assert channel(out, "adt-router-pas-to-ris")["enabled"] is True
    assert channel(out, "lis-results-to-file-drop")["enabled"] is False
    assert ("`channels/lis-results-to-file-drop.toml: source.listen: 127.0.0.1:26101 is already used by channel "
            "'adt-router-pas-to-ris' (channels/adt-router-pas-to-ris.toml)`") in notes(out)
    assert check_output(out)[0] == []
    # what check says of the same two channels both enabled: the sentence the notes quote
    path = out / "channels" / "lis-results-to-file-drop.toml"
    path.write_text(path.read_text().replace("enabled = false", "enabled = true"))
    [problem] = check_output(out)[0]
    assert str(problem).replace(f"{out.parent / 'check'}/", "") == (
        "channels/lis-results-to-file-drop.toml: source.listen: 127.0.0.1:26101 is already used by "
        "channel 'adt-router-pas-to-ris' (channels/adt-router-pas-to-ris.toml)")


def test_two_channels_reading_one_folder_are_reported_and_the_second_disabled(tmp_path):
    same_folder = variant(tmp_path, "05", "folder.xml", ("<name>ADT Batch File Intake</name>",
                                                         "<name>ADT Batch Copy</name>"))
    out = imported(tmp_path, export("05"), export("06"), same_folder)
    assert channel(out, "adt-batch-file-intake")["enabled"] is True
    assert channel(out, "adt-batch-copy")["enabled"] is False
    assert ("`channels/adt-batch-copy.toml: source.path: /var/spool/interfaces/adt-batch/inbox is already read by "
            "channel 'adt-batch-file-intake' (channels/adt-batch-file-intake.toml)`") in notes(out)
    assert check_output(out)[0] == []
