"""Bad input and the output folder: one sentence and exit 1 for a file that is not a safe Mirth export,
nothing written; no overwrite without --force; --strict fails when the notes list anything."""
from __future__ import annotations

import pytest

from .mirth_support import export, run

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE channel [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<channel version="4.5.0"><name>&lol2;</name></channel>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE channel SYSTEM "file:///etc/passwd">
<channel version="4.5.0"><name>x</name></channel>
"""


@pytest.mark.parametrize("content, sentence", [
    ("<channel version='4.5.0'><name>x</name>", "not well-formed XML (line 1, column"),
    ("\x00\x01garbage", "not well-formed XML"),
    ("<project><name>maven</name></project>", "not a Mirth Connect export: its root element is <project>"),
    ("<channel version='4.5.0'><name>x</name></channel>", "a <channel> without a source connector"),
    ("<list><user/></list>", "not a Mirth Connect export: its <list> holds <user>"),
    ("<map><foo/></map>", "not a Mirth Connect configuration map"),
    (BILLION_LAUGHS, "refused: it declares a DTD, entities or external references"),
    (EXTERNAL, "refused: it declares a DTD, entities or external references"),
])
def test_a_bad_file_is_one_sentence_exit_1_and_nothing_written(tmp_path, content, sentence):
    bad = tmp_path / "bad.xml"
    bad.write_text(content)
    out = tmp_path / "out"
    code, stdout, stderr = run([export("01"), bad], out)
    assert code == 1 and stdout == ""
    assert stderr.startswith(f"{bad}: ") and sentence in stderr
    assert stderr.count("\n") == 1
    assert not out.exists()


def test_a_missing_file_is_one_sentence(tmp_path):
    code, _, stderr = run([tmp_path / "nope.xml"], tmp_path / "out")
    assert code == 1 and stderr == f"{tmp_path / 'nope.xml'}: file not found.\n"


def test_existing_files_are_not_overwritten_without_force(tmp_path):
    out = tmp_path / "out"
    assert run([export("01")], out)[0] == 0
    target = out / "channels" / "adt-router-pas-to-ris.toml"
    target.write_text("# mine\n")
    (out / "IMPORT-NOTES.md").unlink()
    code, stdout, stderr = run([export("01")], out)
    assert code == 1 and stdout == ""
    assert stderr == f"{target} already exists; nothing was written (use --force to overwrite).\n"
    assert target.read_text() == "# mine\n" and not (out / "IMPORT-NOTES.md").exists()
    code, _, _ = run([export("01")], out, force=True)
    assert code == 0 and target.read_text().startswith("# Imported from Mirth Connect 4.5.0")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []      # no staging left behind


def test_strict_fails_when_the_notes_list_anything(tmp_path):
    code, stdout, stderr = run([export("03")], tmp_path / "a", strict=True)
    assert code == 1 and "IMPORT-NOTES.md: 1 item needs a person." in stdout
    assert stderr == f"--strict: 1 item in {tmp_path / 'a' / 'IMPORT-NOTES.md'} needs a person.\n"
    assert (tmp_path / "a" / "IMPORT-NOTES.md").is_file()        # written, for the person to read
    code, _, stderr = run([export("11")], tmp_path / "b", strict=True)
    assert code == 0 and stderr == ""


def test_the_summary_names_each_channel_file(tmp_path):
    code, stdout, _ = run([export("01"), export("10")], tmp_path / "out")
    assert code == 0
    assert stdout.splitlines() == [
        'channels/adt-router-pas-to-ris.toml  <- Mirth channel "ADT Router - PAS to RIS"',
        'channels/adt-to-bed-board.toml  <- Mirth channel "ADT to Bed Board"',
        "IMPORT-NOTES.md: 0 items need a person.",
    ]
