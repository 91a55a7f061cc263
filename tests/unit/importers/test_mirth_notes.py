"""IMPORT-NOTES.md lists exactly what needs a person: the JavaScript (quoted in full) and what truly did
not convert, and nothing for the channels that converted whole."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from .mirth_support import CHANNELS, LIBRARY, export, imported, notes


DIFFERENCES = "Differences from Mirth (converted; nothing to port)"


def headings(text: str) -> list[str]:
    return re.findall(r"^#{2,3} (.*)$", text, flags=re.M)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```javascript\n(.*?)\n```$", text, flags=re.M | re.S)


def script_of(number: str, step_name: str) -> str:
    root = ET.parse(export(number)).getroot()
    for step in root.iter("com.mirth.connect.plugins.javascriptstep.JavaScriptStep"):
        if step.findtext("name") == step_name:
            return step.findtext("script")
    raise AssertionError(step_name)


def test_the_corpus_notes_list_exactly_the_javascript(tmp_path):
    out = imported(tmp_path, *sorted(CHANNELS.glob("*.xml")), LIBRARY)
    text = notes(out)
    assert headings(text) == [
        'Channel "LIS Results to File Drop" -> channels/lis-results-to-file-drop.toml',
        DIFFERENCES,
        'Channel "PAS ADT - Strip Z Segments" -> channels/pas-adt-strip-z-segments.toml',
        '1. Source transformer, step 1 "Strip Z segments" (JavaScript)',
        'Channel "LIS Results - Unit and Flag Mapping" -> channels/lis-results-unit-and-flag-mapping.toml',
        '1. Source transformer, step 3 "Map OBX units and abnormal flags" (JavaScript)',
        'Channel "ADT Batch File Intake" -> channels/adt-batch-file-intake.toml',
        DIFFERENCES,
        'Channel "ADT Archive Writer" -> channels/adt-archive-writer.toml',
        DIFFERENCES,
        'Channel "Radiology Worklist Feed" -> channels/radiology-worklist-feed.toml',
        DIFFERENCES,
        'Code template libraries',
        '1. Library "Lab Code Mapping", template "Log control ID" (code snippet)',
        '2. Library "Lab Code Mapping", template "mapAbnormalFlag" (function)',
        '3. Library "Lab Code Mapping", template "mapUnit" (function)',
    ]
    blocks = code_blocks(text)
    assert blocks[0] == script_of("03", "Strip Z segments").rstrip("\n")
    assert blocks[1] == script_of("04", "Map OBX units and abnormal flags").rstrip("\n")
    library = ET.parse(LIBRARY).getroot()
    assert blocks[2:] == [t.findtext("properties/code") for t in library.iter("codeTemplate")]
    assert text.count("Called by: channel \"LIS Results - Unit and Flag Mapping\"") == 2
    assert "No imported channel's JavaScript calls it." in text          # the drag-and-drop snippet
    assert 'a `map` edit operation with `table = "mapUnit"`' in text
    assert '`missing = "default"`, `default = "N"`' in text


def test_channels_that_convert_whole_have_no_notes(tmp_path):
    for number in ("01", "08", "09", "10", "11"):
        out = imported(tmp_path / number, export(number))
        assert headings(notes(out)) == [], number


def test_a_file_name_with_the_message_id_is_a_difference_not_an_item(tmp_path):
    out = imported(tmp_path, export("02"))
    text = notes(out)
    assert headings(text) == ['Channel "LIS Results to File Drop" -> channels/lis-results-to-file-drop.toml',
                              DIFFERENCES]
    assert 'Destination "Write Result File" uses `${message.messageId}`, now `{{ id }}`' in text
    assert text.startswith("# Mirth Connect import: what needs a person\n\nNothing: every channel")


def test_a_difference_from_mirth_is_said_for_its_channel_and_is_not_an_item(tmp_path):
    """12's Message Builder reads PID.5.1 and PV1.3.1 with E4X toString(): where those have
    subcomponents Mirth wrote XML markup into the field (its input 1); nothing to port, no item."""
    out = imported(tmp_path, export("12"))
    text = notes(out)
    assert headings(text) == ['Channel "Radiology Worklist Feed" -> channels/radiology-worklist-feed.toml',
                              DIFFERENCES]
    assert text.startswith("# Mirth Connect import: what needs a person\n\nNothing: every channel")
    assert text.count("with E4X `.toString()`") == 2 and "`<PID.5.1>...`" in text
    assert text.count("uses `${message.messageId}`") == 2           # the archive's name, the extract's body
    assert "```" not in text


# -- the notes quote exactly the JavaScript of each export ----------------------------------------
DEFAULT_SCRIPT = re.compile(r"^(return( message)?;)?$")


def bare(script: str) -> str:
    script = re.sub(r"/\*.*?\*/", "", script, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"//[^\n]*", "", script)).strip()


def javascript_of(path) -> set[str]:
    """Every piece of JavaScript Mirth would run or offer from this export, read straight from the XML:
    enabled JavaScript filter rules and transformer steps (response transformers too), channel
    scripts that are not Mirth's default `return;`, batch scripts and code templates."""
    root = ET.parse(path).getroot()
    found = set()
    for element in root.iter():
        tag = element.tag.rsplit(".", 1)[-1]
        if tag in ("JavaScriptStep", "JavaScriptRule") and element.findtext("enabled", "true") == "true":
            found.add(element.findtext("script").rstrip("\n"))
        elif tag in ("deployScript", "undeployScript", "preprocessingScript", "postprocessingScript",
                     "batchScript") and not DEFAULT_SCRIPT.match(bare(element.text or "")):
            found.add(element.text.rstrip("\n"))
        elif tag == "codeTemplate":
            found.add(element.findtext("properties/code").rstrip("\n"))
    return found


@pytest.mark.parametrize("path", sorted(CHANNELS.glob("*.xml")), ids=lambda p: p.stem[:2])
def test_the_notes_quote_exactly_the_javascript_of_each_export(tmp_path, path):
    out = imported(tmp_path, path)
    assert set(code_blocks(notes(out))) == javascript_of(path)


def test_the_notes_quote_exactly_the_javascript_of_the_whole_corpus_and_library(tmp_path):
    out = imported(tmp_path, *sorted(CHANNELS.glob("*.xml")), LIBRARY)
    expected = set().union(*(javascript_of(path) for path in CHANNELS.glob("*.xml")), javascript_of(LIBRARY))
    blocks = code_blocks(notes(out))
    assert len(blocks) == len(set(blocks)) and set(blocks) == expected   # each once, the library once


def test_the_library_alone_and_the_channel_export_embedding_it_are_one_library(tmp_path):
    out = imported(tmp_path, export("04"), LIBRARY)
    assert len([h for h in headings(notes(out)) if h.startswith(("1. Library", "2. Library", "3. Library"))]) == 3


def test_non_default_channel_scripts_are_quoted(tmp_path):
    text = export("02").read_text()
    custom = text.replace("<deployScript>// This script executes once when the channel is deployed",
                          "<deployScript>globalMap.put('started', new Date());\n// This script executes once")
    path = tmp_path / "custom.xml"
    path.write_text(custom)
    out = imported(tmp_path, path)
    assert headings(notes(out))[1] == "1. Deploy script"
    assert "globalMap.put('started', new Date());" in notes(out)
