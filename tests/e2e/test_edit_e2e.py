"""The edit step (DESIGN §3.8) through the real daemon: the analyst's task (set MSH-5/6, map PV1-3.1
through a code table, drop NTE and Z segments) over every shipped sample to a real MLLP peer, the
output differing from the input only at the edited positions; ``check`` naming each mistake in an
edit list; a ``map`` with ``missing = "error"`` failing the message without its value."""

from __future__ import annotations

import csv
import json

from support.daemon import SAMPLES, Daemon, MllpClient, MllpPeer, last_reload, run_cli, wait_for, wait_reload

ANALYST_CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
edit = [
  {{ set = "MSH.5", value = "LAB" }},
  {{ set = "MSH.6", value = "{{{{ msg['MSH.4'] }}}}-EAST" }},
  {{ map = "PV1.3.1", table = "units" }},
  {{ delete = "NTE" }},
  {{ delete = "Z*" }},
]

[[destination]]
name = "lab"
type = "mllp"
connect = "127.0.0.1:{port}"
"""


def wire_form(path) -> str:
    """A sample as a sender puts it on the wire: BOM dropped, one CR per segment."""
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()]
    return "\r".join(lines) + "\r"


def segments(text: str) -> list[str]:
    return [segment for segment in text.split("\r") if segment]


def unit_of(pv1: str, field_sep: str, comp: str, rep: str) -> str:
    fields = pv1.split(field_sep)
    return fields[3].split(rep)[0].split(comp)[0] if len(fields) > 3 else ""


def expected(text: str, table: dict[str, str]) -> list[str]:
    """The analyst's edit written independently of engine/hl7: string surgery on a known shape."""
    out = []
    field_sep = text[3]
    comp, rep = text[4], text[5]
    for segment in segments(text):
        name = segment[:3]
        if name == "NTE" or name.startswith("Z"):
            continue
        fields = segment.split(field_sep)
        if name == "MSH":
            while len(fields) < 6:
                fields.append("")
            fields[4] = "LAB"
            fields[5] = escaped(f"{fields[3]}-EAST", field_sep, text[4:8])   # ``set`` escapes its value
        elif name == "PV1" and len(fields) > 3 and not out_has(out, "PV1"):
            reps = fields[3].split(rep)
            components = reps[0].split(comp)
            if components[0] in table:
                components[0] = table[components[0]]
            reps[0] = comp.join(components)
            fields[3] = rep.join(reps)
        out.append(field_sep.join(fields))
    return out


def escaped(value: str, field_sep: str, encoding: str) -> str:
    comp, rep, esc, sub = encoding
    value = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_sep, "F"), (comp, "S"), (sub, "T"), (rep, "R")):
        value = value.replace(char, f"{esc}{code}{esc}")
    return value


def out_has(out: list[str], name: str) -> bool:
    return any(segment.startswith(name) for segment in out)


def test_the_analyst_task_changes_only_the_edited_positions_over_every_sample(tmp_path):
    inputs = [wire_form(path) for path in sorted(SAMPLES.glob("*.hl7"))]
    inputs = [text for text in inputs if text.startswith("MSH") and "\\" not in text.split("\r")[0][8:]]
    units = sorted({unit_of(s, text[3], text[4], text[5]) for text in inputs for s in segments(text)
                    if s.startswith("PV1")} - {""})
    table = {unit: f"{unit}-MAPPED" for unit in units[::2] if not set(unit) & set("\\&~^")}   # half mapped, half kept
    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    with open(root / "lookups" / "units.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["code", "value"])
        writer.writerows(table.items())
    peer = MllpPeer()
    daemon = Daemon(root, {"edit": ANALYST_CHANNEL.format(port=peer.port)}).start(1)
    try:
        client = MllpClient(daemon.ports["edit"])
        for text in inputs:
            assert client.request(text)["code"] == "AA"
        client.close()
        assert wait_for(lambda: len(peer.received) >= len(inputs), timeout=60)
    finally:
        daemon.stop()
        peer.close()
    assert len(inputs) > 100
    mapped = 0
    for text, payload in zip(inputs, peer.received):
        got = segments(payload.decode("utf-8"))
        assert got == expected(text, table)
        mapped += any(s.startswith("PV1") and "-MAPPED" in s for s in got)
    assert mapped > 0


def test_check_names_every_mistake_in_an_edit_list_without_values(tmp_path):
    bad = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
edit = [
  { set = "PID.x", value = "SECRET-VALUE" },
  { frobnicate = "PID.3" },
  { map = "PV1.3.1", table = "nope" },
  { map = "PV1.2", table = "units", missing = "sometimes" },
]
"""
    json_channel = """
inbound = "json"
[source]
type = "http"
listen = "127.0.0.1:0"

[[transform]]
edit = [{ set = "MSH.5", value = "LAB" }]
"""
    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    (root / "lookups" / "units.csv").write_text("code,value\nER,EMERG\n")
    daemon = Daemon(root, {"bad": bad, "json": json_channel})
    result = run_cli("-c", str(daemon.config), "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    err = result.stderr
    assert "transform[1].edit[1].set" in err and "PID.x" in err
    assert "transform[1].edit[2]" in err and "frobnicate" in err
    assert "transform[1].edit[3]" in err and "nope" in err
    assert "transform[1].edit[4]" in err and "missing" in err
    assert "json.toml: transform[1].edit" in err and "needs HL7 v2" in err
    assert "SECRET-VALUE" not in err


def test_a_missing_key_with_missing_error_fails_the_message_naming_table_and_path(tmp_path):
    channel = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
edit = [{ map = "PV1.3.1", table = "units", missing = "error" }]

[[destination]]
name = "out"
type = "file"
directory = "out"
"""
    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    (root / "lookups" / "units.csv").write_text("code,value\nER,EMERG\n")
    daemon = Daemon(root, {"strict": channel}).start(1)
    try:
        client = MllpClient(daemon.ports["strict"])
        text = "MSH|^~\\&|EHR|HOSP|SWB|AG|20240101||ADT^A01|K1|P|2.5\rPV1|1|I|WARD-SECRET^1\r"
        assert client.request(text)["code"] == "AA"
        client.close()
        messages = json.loads(run_cli("-c", str(daemon.config), "messages", "--json").stdout)
        shown = json.loads(run_cli("-c", str(daemon.config), "show", str(messages[0]["id"]), "--json").stdout)
    finally:
        daemon.stop()
    assert shown["status"] == "ERROR"
    assert "units" in shown["error"] and "PV1.3.1" in shown["error"]
    assert "WARD-SECRET" not in shown["error"]
    assert "WARD-SECRET" not in "\n".join(daemon.log_lines)


FILE_CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"
{extra}
[[destination]]
name = "out"
type = "file"
directory = "{out}"
filename = "{{{{ id }}}}.txt"
"""


def unit_message(control_id: str, unit: str) -> str:
    return f"MSH|^~\\&|EHR|HOSP|SWB|AG|20240101||ADT^A01|{control_id}|P|2.5\rPV1|1|I|{unit}^101^A\r"


def written(out) -> list[str]:
    return [path.read_bytes().decode() for path in sorted(out.glob("*.txt"), key=lambda p: int(p.stem))]


def test_lookup_reads_the_code_tables_in_when_and_in_templates(tmp_path):
    out = tmp_path / "out"
    extra = """
[[filter]]
name = "emergencies"
when = "msg['PV1.3.1'] | lookup('units', default='') == 'EMERG'"

[[transform]]
inline = "{{ msg['MSH.10'] }} {{ lookup('units', msg['PV1.3.1']) }}"
"""
    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    (root / "lookups" / "units.csv").write_text("code,value\nER,EMERG\nICU,CRIT\n")
    daemon = Daemon(root, {"units": FILE_CHANNEL.format(extra=extra, out=out)}).start(1)
    try:
        client = MllpClient(daemon.ports["units"])
        assert client.request(unit_message("L1", "ER"))["code"] == "AA"
        assert client.request(unit_message("L2", "ICU"))["code"] == "AA"
        client.close()
        assert wait_for(lambda: len(written(out)) == 1)
        statuses = {m["control_id"]: m["status"] for m in daemon.cli_json("messages")}
    finally:
        daemon.stop()
    assert written(out) == ["L1 EMERG"]
    assert statuses == {"L1": "SENT", "L2": "FILTERED"}


def test_a_changed_table_is_reloaded_live_and_a_broken_one_keeps_the_last_good_one(tmp_path):
    out = tmp_path / "out"
    extra = '\n[[transform]]\nedit = [{ map = "PV1.3.1", table = "units" }]\n'
    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    table = root / "lookups" / "units.csv"
    table.write_text("code,value\nER,EMERG\n")
    daemon = Daemon(root, {"units": FILE_CHANNEL.format(extra=extra, out=out)}).start(1)
    try:
        client = MllpClient(daemon.ports["units"])
        assert client.request(unit_message("T1", "ER"))["code"] == "AA"
        assert wait_for(lambda: len(written(out)) == 1)

        before = last_reload(daemon)
        table.write_text("code,value\nER,EMERGENCY\n")
        wait_reload(daemon, before, "the table's channel redeployed", lambda s: s["redeployed"] == ["units"])
        assert client.request(unit_message("T2", "ER"))["code"] == "AA"
        assert wait_for(lambda: len(written(out)) == 2)

        before = last_reload(daemon)
        table.write_text("code,value\nER,SECRET-ONE\nER,SECRET-TWO\n")      # a duplicate key: broken
        state = wait_reload(daemon, before, "the refused reload", lambda s: s["problems"])
        assert client.request(unit_message("T3", "ER"))["code"] == "AA"
        assert wait_for(lambda: len(written(out)) == 3)
        client.close()
    finally:
        daemon.stop()
    mapped = [text.split("\r")[1].split("|")[3] for text in written(out)]
    assert mapped == ["EMERG^101^A", "EMERGENCY^101^A", "EMERGENCY^101^A"]   # the last good table kept
    assert state["kept"] == ["units"] and not state["redeployed"]
    problem = state["problems"][0]["text"]
    assert "units.csv" in problem and "line 3" in problem
    assert "SECRET" not in problem and "SECRET" not in daemon.log
