"""Each channel of the Mirth Connect 4.5.0 corpus (tests/fixtures/mirth), brought over as a user does
it, behaves as Mirth did (issue 18, point 4; DESIGN §3.10).

Per case: ``switchboard import mirth`` on the channel's export (with the server's configuration map;
05 with 06, the channel its Channel Writer feeds), ``switchboard check`` on the result as written,
then ``switchboard test CHANNEL input-*... --json`` over every recorded input.  For each message and
each destination the verdict must be Mirth's (sent / filtered / error / disabled, expected.json) and,
where the channel's steps all converted, the bytes must be exactly those Mirth sent (output-*).
07's JSON matches because the import adds the step that compacts it as Mirth's JSON.stringify did.

Where a case cannot match, the test asserts the difference itself, precisely, and that IMPORT-NOTES
says it for that channel:
- 03 and 04: a JavaScript step, listed for a person and left out.  The test shows our output differs from
  Mirth's by exactly what the script did, then applies the port the notes point to (edit operations and the
  extracted code tables) and gets Mirth's bytes.
- 05: Mirth's batch reader dropped blanks at the end of segments (inputs 2 and 3); we keep them.
- 12 input 1: Mirth's E4X ``toString()`` wrote XML markup into PID-5.1; we write the text.
- ``${message.messageId}`` became ``{{ id }}``, whose value is the store's id, not Mirth's per-channel
  counter: 12's worklist extract ends with the id, so it is compared with that field masked (and the
  field checked to hold each side's own id).

The CLI runs in-process through ``engine.cli.main.main`` (the same parsing, verbs, output and exit
codes as the ``switchboard`` script) so that 12 channels cost seconds, not a Python start each;
test_cli.py runs the import of the whole corpus as a subprocess.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import tomllib
from pathlib import Path

import pytest

from engine.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mirth"
CASES = sorted(path.name for path in (CORPUS / "cases").iterdir() if path.is_dir())
IMPORTED_WITH = {"05": ["06"]}       # 05's Channel Writer sends to 06: a user imports both
CONFIG = '[store]\npath = "var/switchboard.db"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n'


def cli(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


def export(number: str) -> Path:
    return next((CORPUS / "channels").glob(f"{number}-*.xml"))


def number_of(path: Path) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


class Imported:
    """One case imported and checked: the channel file, the notes, and dry runs over inputs."""

    def __init__(self, tmp_path: Path, case: str) -> None:
        self.case = CORPUS / "cases" / case
        self.meta = json.loads((self.case / "channel.json").read_text())
        self.expected = json.loads((self.case / "expected.json").read_text())
        self.out = tmp_path / "imported"
        number = case[:2]
        files = [export(number), *[export(n) for n in IMPORTED_WITH.get(number, [])]]
        code, stdout, stderr = cli("import", "mirth", *map(str, files), str(CORPUS / "configuration-map.xml"),
                                   "--out", str(self.out))
        assert code == 0, stderr
        line = next(line for line in stdout.splitlines() if f'Mirth channel "{self.meta["channel"]}"' in line)
        self.path = self.out / line.split()[0]
        self.channel = tomllib.loads(self.path.read_text(encoding="utf-8"))
        self.notes = (self.out / "IMPORT-NOTES.md").read_text(encoding="utf-8")
        (self.out / "config.toml").write_text(CONFIG)
        self.check()

    def check(self) -> None:
        code, stdout, stderr = cli("-c", str(self.out / "config.toml"), "check")
        assert code == 0 and "ok" in stdout, stderr

    def inputs(self) -> list[Path]:
        return [self.case / entry["input"] for entry in self.expected]

    def dry_run(self) -> list[dict]:
        code, stdout, stderr = cli("-c", str(self.out / "config.toml"), "test", self.channel["name"],
                                   *map(str, self.inputs()), "--json")
        results = json.loads(stdout)
        assert code == (1 if any(r["status"] == "ERROR" for r in results) else 0), stderr
        return results

    def messages(self) -> list[dict]:
        """expected.json, one entry per message (a batch file's split messages in order)."""
        return [message for entry in self.expected for message in entry.get("messages") or [entry]]

    def section(self) -> str:
        """This channel's part of IMPORT-NOTES.md."""
        start = self.notes.find(f'## Channel "{self.meta["channel"]}"')
        if start < 0:
            return ""
        end = self.notes.find("\n## ", start + 1)
        return self.notes[start:] if end < 0 else self.notes[start:end]

    def port(self, toml: str) -> list[dict]:
        """Apply a person's port (a channel-file addition), check again and dry-run again."""
        with self.path.open("a", encoding="utf-8") as file:
            file.write(toml)
        self.check()
        return self.dry_run()


def mirth_verdict(destination: dict) -> str:
    if destination.get("disabled"):
        return "disabled"
    if destination.get("mirth_status") == "ERROR":
        return "error"
    if destination.get("filtered"):
        return "filtered"
    assert destination["mirth_status"] == "SENT" and destination["sent"]
    return "sent"


def our_verdict(result: dict, name: str, enabled: bool) -> str:
    planned = {d["name"]: d for d in result["destinations"]}
    if result["status"] == "FILTERED":
        return "filtered"
    if not enabled:
        assert name not in planned        # a disabled destination takes nothing
        return "disabled"
    if planned[name]["error"]:
        return "error"
    return "filtered" if planned[name]["filtered"] else "sent"


def mirth_bytes(case: Path, destination: dict) -> bytes:
    [name] = [destination["sent"]] if isinstance(destination["sent"], str) else destination["sent"]
    return (case / name).read_bytes()


def compare(run: Imported, results: list[dict]) -> list[tuple[int, str, bytes, bytes]]:
    """Assert every verdict; return (message number, destination, Mirth's bytes, ours) of each message
    both sent, for the byte comparison."""
    messages = run.messages()
    assert len(results) == len(messages)
    ours = [(d["name"], d.get("enabled", True)) for d in run.channel.get("destination", [])]
    assert len(ours) == len(run.meta["destinations"])       # one channel-file destination per Mirth one
    sent = []
    for number, (message, result) in enumerate(zip(messages, results), 1):
        assert (result["status"] == "FILTERED") == (message["source_status"] == "FILTERED"), number
        for mirth_name, (name, enabled) in zip(run.meta["destinations"], ours):
            expected = message["destinations"][mirth_name]
            verdict = mirth_verdict(expected)
            assert our_verdict(result, name, enabled) == verdict, (number, mirth_name)
            if verdict == "sent":
                body = next(d["body"] for d in result["destinations"] if d["name"] == name)
                sent.append((number, name, mirth_bytes(run.case, expected), body.encode("utf-8")))
    return sent


def assert_same_bytes(sent) -> None:
    for number, name, mirth, ours in sent:
        assert ours == mirth, f"message {number}, destination {name}"


def without_segments(data: bytes, pattern: str) -> bytes:
    return b"".join(segment + b"\r" for segment in data.split(b"\r")[:-1]
                    if not re.match(pattern.encode(), segment))


# -- the cases whose steps all converted: same verdicts, same bytes ---------------------------------
CONVERTED = ["01", "02", "06", "08", "10", "11"]


@pytest.mark.parametrize("case", [c for c in CASES if c[:2] in CONVERTED])
def test_a_converted_channel_gives_mirths_verdicts_and_bytes(tmp_path, case):
    run = Imported(tmp_path, case)
    assert "\n### 1. " not in run.section()    # nothing in this channel needs a person
    sent = compare(run, run.dry_run())
    assert sent                                 # every case has messages Mirth sent
    assert_same_bytes(sent)


def test_05_the_batch_goes_to_channel_06_as_mirth_split_it_but_for_trailing_blanks(tmp_path):
    """Mirth's batch reader dropped blanks at the end of each segment (input 2 has them, CRLF file;
    input 3's MRG too); Switchboard keeps what came (byte fidelity), and the notes say so."""
    run = Imported(tmp_path, "05-adt-batch-file-reader")
    sent = compare(run, run.dry_run())
    assert len(sent) == 6
    trimmed = 0
    for number, _name, mirth, ours in sent:
        segments = ours.split(b"\r")
        assert segments[-1] == b""
        assert b"".join(segment.rstrip(b" ") + b"\r" for segment in segments[:-1]) == mirth, number
        trimmed += ours != mirth
    assert trimmed == 2
    assert "dropped the blanks at the end of each segment" in run.section()
    assert "```" not in run.section()


def test_09_the_disabled_channel_stays_disabled_and_mirth_ran_nothing(tmp_path):
    run = Imported(tmp_path, "09-disabled-channel")
    assert run.expected == [] and run.channel["enabled"] is False
    assert run.section() == ""


def test_07_json_goes_out_compacted_as_mirth_serialized_it(tmp_path):
    """Mirth re-serialized the JSON message (JSON.stringify) because its source transformer had steps;
    the import adds the template step that does the same, so the pretty-printed inputs go out as one line."""
    run = Imported(tmp_path, "07-http-json-order-router")
    assert run.channel["transform"] == [{"template": "order-events-json-router/mirth-json.json.j2",
                                         "outbound": "json"}]
    sent = compare(run, run.dry_run())          # input 5: EXISTS on a missing key is an error in both
    assert [number for number, *_ in sent] == [1, 3]
    for number, _name, mirth, ours in sent:
        raw = (run.case / f"input-{number}.json").read_bytes()
        assert b"\n" in raw and ours == mirth and json.loads(ours) == json.loads(raw)


# -- the cases that cannot match as imported: the difference, precisely -----------------------------
def test_03_the_z_segments_javascript_is_listed_and_its_port_gives_mirths_bytes(tmp_path):
    run = Imported(tmp_path, "03-z-segment-stripper")
    assert "delete msg['ZPD'];" in run.section()                      # the script, quoted for a person
    sent = compare(run, run.dry_run())
    assert len(sent) == 5
    stripped = 0
    for number, _name, mirth, ours in sent:
        # meanwhile the channel forwards the message as received: Mirth's bytes plus its Z segments
        assert ours == (run.case / f"input-{number}.hl7").read_bytes()
        assert without_segments(ours, "Z") == mirth
        stripped += ours != mirth
    assert stripped == 4                                              # input 3 had no Z segment
    # the port the notes name: an edit step deleting the Z segments
    assert_same_bytes(compare(run, run.port('\n[[transform]]\nedit = [{ delete = "Z*" }]\n')))


def test_04_the_code_template_javascript_is_listed_and_its_port_gives_mirths_bytes(tmp_path):
    run = Imported(tmp_path, "04-lab-code-mapping")
    section = run.section()
    assert "mapUnit(unit)" in section and "Map OBX units and abnormal flags" in section
    sent = compare(run, run.dry_run())
    differing = 0
    for number, _name, mirth, ours in sent:
        # Message Builder converted (MSH-3/MSH-4 equal Mirth's); only OBX-6.1 and OBX-8.1 differ
        mine, theirs = ours.split(b"\r"), mirth.split(b"\r")
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            if a != b:
                fa, fb = a.split(b"|"), b.split(b"|")
                assert fa[0] == b"OBX" and len(fa) == len(fb)
                assert [i for i in range(len(fa)) if fa[i] != fb[i]] in ([6], [8], [6, 8])
                differing += 1
    assert differing >= 3
    # the port the notes name: map through the code tables the import extracted from the functions.
    # mapAbnormalFlag() ran only on a non-empty flag and returned 'N' for an unknown one: keep empty
    # flags empty with a row for the empty key, default the others to N
    with (run.out / "lookups" / "mapAbnormalFlag.csv").open("a") as table:
        table.write('"",\n')
    assert_same_bytes(compare(run, run.port(
        '\n[[transform]]\nedit = [\n'
        '  { map = "OBX(*).6.1", table = "mapUnit" },\n'
        '  { map = "OBX(*).8.1", table = "mapAbnormalFlag", missing = "default", default = "N" },\n]\n')))


E4X_MARKUP = re.compile(rb"<PID\.5\.1>.*?</PID\.5\.1>")


def test_12_matches_mirth_but_for_the_e4x_markup_and_the_message_id(tmp_path):
    run = Imported(tmp_path, "12-mapper-velocity-defaults")
    results = run.dry_run()
    sent = compare(run, results)
    assert len(sent) == 12
    for number, name, mirth, ours in sent:
        if name == "worklist-extract":
            # `${message.messageId}` -> `{{ id }}`: the last field is each engine's own message id
            mirth_head, mirth_id = mirth.rsplit(b"|", 1)
            our_head, our_id = ours.rsplit(b"|", 1)
            assert int(mirth_id) == run.messages()[number - 1]["mirth_message_id"]
            assert int(our_id) == results[number - 1]["id"]
            assert our_head == mirth_head, number
        elif number == 1:
            # Mirth's E4X toString() of PID-5.1, which has subcomponents, was XML markup, written as is
            assert E4X_MARKUP.search(mirth) and not E4X_MARKUP.search(ours)
            assert E4X_MARKUP.sub(b"EVERYMAN", mirth) == ours
        else:
            assert ours == mirth, (number, name)
    section = run.section()
    assert "Differences from Mirth" in section and "`PID.5.1` with E4X `.toString()`" in section
    assert 'Destination "Worklist Extract" uses `${message.messageId}`, now `{{ id }}`' in section
    assert "```" not in section                          # nothing to port: no script in this channel


DESTINATION_BUILDER = """<elements>
          <com.mirth.connect.plugins.messagebuilder.MessageBuilderStep version="4.5.0">
            <name>Receiving facility = ARCHIVE</name>
            <sequenceNumber>0</sequenceNumber>
            <enabled>true</enabled>
            <messageSegment>msg['MSH']['MSH.6']['MSH.6.1']</messageSegment>
            <mapping>'ARCHIVE'</mapping>
            <defaultValue></defaultValue>
            <replacements/>
          </com.mirth.connect.plugins.messagebuilder.MessageBuilderStep>
        </elements>"""


def test_a_destination_message_builder_works_on_the_source_transformers_output_as_in_mirth(tmp_path):
    """Mirth's destination transformer starts from the source transformer's output; a Switchboard
    destination's steps start from the message as received (DESIGN §3.3).  So the import repeats the
    source's edits at the head of the destination's edit step: 12's Archive HL7 destination with a
    Message Builder of its own sends Mirth's recorded archive bytes with only MSH-6.1 changed."""
    text = export("12").read_text(encoding="utf-8")
    archive = text.index("<name>Archive HL7</name>")
    at = text.index("<elements/>", archive)
    variant = tmp_path / "12-variant.xml"
    variant.write_text(text[:at] + DESTINATION_BUILDER + text[at + len("<elements/>"):], encoding="utf-8")
    out = tmp_path / "imported"
    code, _stdout, stderr = cli("import", "mirth", str(variant), str(CORPUS / "configuration-map.xml"),
                                "--out", str(out))
    assert code == 0, stderr
    (out / "config.toml").write_text(CONFIG)
    assert cli("-c", str(out / "config.toml"), "check")[0] == 0
    channel = tomllib.loads((out / "channels" / "radiology-worklist-feed.toml").read_text())
    source_edits = channel["transform"][0]["edit"]
    [destination_step] = channel["destination"][0]["transform"]
    assert destination_step["edit"] == source_edits + [{"set": "MSH.6.1", "value": "ARCHIVE"}]
    case = CORPUS / "cases" / "12-mapper-velocity-defaults"
    code, stdout, stderr = cli("-c", str(out / "config.toml"), "test", "radiology-worklist-feed",
                               *[str(case / f"input-{n}.hl7") for n in range(2, 7)], "--json")
    assert code == 0, stderr
    for number, result in enumerate(json.loads(stdout), 2):
        mirth = (case / f"output-{number}-archive-hl7.hl7").read_bytes().decode().split("\r")
        msh = mirth[0].split("|")
        msh[5] = "^".join(["ARCHIVE", *msh[5].split("^")[1:]])
        assert result["destinations"][0]["body"] == "\r".join(["|".join(msh), *mirth[1:]]), number


def test_a_whole_server_configuration_imports_in_one_command_and_runs(tmp_path):
    """Issue 18 "done when": a server configuration (Mirth's Backup Config: several channels, a channel
    group, the code template library, the configuration map) through one ``switchboard import mirth``,
    then ``switchboard check`` as written, then a dry run of one of its channels giving Mirth's bytes."""
    from unit.importers.mirth_support import server_configuration

    numbers = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
    server = tmp_path / "server-backup.xml"
    server.write_text(server_configuration(numbers), encoding="utf-8")
    out = tmp_path / "imported"
    code, stdout, stderr = cli("import", "mirth", str(server), "--out", str(out))
    assert code == 0, stderr
    assert len(list((out / "channels").glob("*.toml"))) == len(numbers)
    assert stdout.count("<- Mirth channel") == len(numbers)
    assert {p.name for p in (out / "lookups").iterdir()} >= {"mapUnit.csv", "mapAbnormalFlag.csv"}
    notes = (out / "IMPORT-NOTES.md").read_text()
    assert notes.count('template "mapUnit" (function)') == 1       # the library once, though 04 embeds it too
    (out / "config.toml").write_text(CONFIG)
    code, stdout, stderr = cli("-c", str(out / "config.toml"), "check")
    assert code == 0 and f"ok ({len(numbers)} channel(s))" in stdout, stderr
    case = CORPUS / "cases" / "08-dft-charges-queue"
    code, stdout, stderr = cli("-c", str(out / "config.toml"), "test", "dft-charges-to-billing",
                               str(case / "input-1.hl7"), "--json")
    assert code == 0, stderr
    [result] = json.loads(stdout)
    assert [d["body"].encode() for d in result["destinations"]] == [
        (case / "output-1-to-patient-accounting.hl7").read_bytes(),
        (case / "output-1-to-charge-audit-archive.hl7").read_bytes()]
