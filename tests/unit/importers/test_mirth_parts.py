"""The importer's parts on their own: E4X paths, Rule Builder precedence, replacements, Velocity,
TOML quoting, and the conversions the corpus does not show (lacking connectors, odd names, a
JavaScript filter rule)."""
from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, strategies as st

from engine.importers.mirth import e4x, rules, steps
from engine.importers.mirth.toml_text import literal, quote, quote_multiline
from engine.importers.mirth.velocity import Velocity

from .mirth_support import channel, check_output, export, imported, notes


@pytest.mark.parametrize("source, path", [
    ("msg['PID']['PID.3']['PID.3.1']", "PID.3.1"),
    ("msg['PID']['PID.3'][0]['PID.3.1'].toString()", "PID.3.1"),
    ("msg['PID']['PID.3'][1]['PID.3.1']", "PID.3(2).1"),
    ("msg['OBX'][2]['OBX.5']['OBX.5.1']", "OBX(3).5.1"),
    ("msg['MSH']['MSH.10']", "MSH.10"),
    ("msg['PID']['PID.5'][0]['PID.5.1']['PID.5.1.2']", "PID.5.1.2"),
])
def test_e4x_paths_become_ours(source, path):
    assert e4x.convert(source, "hl7").hl7_path == path


@pytest.mark.parametrize("source", ["msg['PID']", "msg['PID']['PV1.3']", "tmp['PID']['PID.3']",
                                    "msg['PID']['PID.3'][i]", "someFunction(msg)", "msg.children().length()"])
def test_what_is_not_a_simple_expression(source):
    with pytest.raises(e4x.NotSimple):
        e4x.convert(source, "hl7")


def test_json_paths_and_map_variables():
    assert e4x.convert("msg['patient']['mrn']", "json").jinja == "msg['patient']['mrn']"
    assert e4x.convert("$('mrn') + '-' + channelMap.get('visit')", "hl7", {"mrn", "visit"}).jinja == \
        "(meta.mrn ~ '-' ~ meta.visit)"
    with pytest.raises(e4x.NotSimple):
        e4x.convert("$('unknown')", "hl7", set())


def test_and_binds_tighter_than_or():
    assert rules.combine([("NONE", "a"), ("OR", "b"), ("AND", "c"), ("AND", "d"), ("OR", "e")]) == \
        "a or (b and c and d) or e"
    assert rules.combine([("NONE", "a"), ("AND", "b")]) == "a and b"


@pytest.mark.parametrize("left, right, expected", [
    ("'-'", "''", "(v | replace('-', ''))"),
    ("'^0+'", "''", "(v).lstrip('0')"),
    ("'0+$'", "''", "(v).rstrip('0')"),
    ('"[^0-9]"', '""', "(v | select('in', '0123456789') | join)"),
    ("'[-() ]'", "''", "(v | reject('in', '-() ') | join)"),
    ("/\\s+/g", "'_'", "v"),                       # never matched in Mirth: a no-op
])
def test_replacements(left, right, expected):
    assert steps.replacement("v", left, right, "hl7", set())[0] == expected


@pytest.mark.parametrize("left, right", [("'\\\\s+'", "'_'"), ("'(a)(b)'", "'$2$1'"), ("'a|b'", "''")])
def test_replacements_not_converted(left, right):
    with pytest.raises(e4x.NotSimple):
        steps.replacement("v", left, right, "hl7", set())


def test_velocity_by_field_kind():
    velocity = Velocity({"outputDir": "/srv", "sftpPassword": "s3cret"})
    name = velocity.convert("${mrn}_${message.messageId}.hl7", variables={"mrn"}, allowed={"id", "meta"})
    assert name.toml(jinja=True) == "{{ meta.mrn }}_{{ id }}.hl7"
    assert velocity.convert("${outputDir}/x", variables=set(), allowed=set()).toml(jinja=False) == "${outputDir:-/srv}/x"
    assert velocity.convert("${sftpPassword}", variables=set(), allowed=set()).toml(jinja=False) == "${sftpPassword}"
    assert velocity.convert("${originalFilename}", variables=set(), allowed={"id"}).missing == ["${originalFilename}"]
    assert velocity.convert("${mrn}", variables={"mrn"}, allowed=set()).missing == ["${mrn}"]   # a folder is no template
    assert velocity.convert("$5 {{x}}", variables=set(), allowed={"id"}).toml(jinja=True) == \
        "{% raw %}$5 {{x}}{% endraw %}"


@given(st.text())
def test_toml_strings_read_back_exactly(text):
    assert tomllib.loads(f"a = {quote(text)}\nb = {quote_multiline(text)}\n") == {"a": text, "b": text}


def test_literal_protects_dollar_brace_from_substitution():
    assert literal("cost ${x} $${y}") == "cost $${x} $$${y}"


def edited(tmp_path, number, old, new, name="edited.xml"):
    text = export(number).read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def test_a_destination_we_lack_is_left_out_and_noted(tmp_path):
    path = edited(tmp_path, "10", "<transportName>TCP Sender</transportName>\n      <mode>DESTINATION</mode>\n"
                  "      <enabled>false</enabled>", "<transportName>Database Writer</transportName>\n"
                  "      <mode>DESTINATION</mode>\n      <enabled>false</enabled>")
    path.write_text(path.read_text().replace(
        'com.mirth.connect.connectors.tcp.TcpDispatcherProperties" version="4.5.0">\n        '
        '<destinationConnectorProperties version="4.5.0">\n          <queueEnabled>false</queueEnabled>\n'
        '          <sendFirst>false</sendFirst>\n          <retryIntervalMillis>10000</retryIntervalMillis>\n'
        '          <regenerateTemplate>false</regenerateTemplate>\n          <retryCount>0</retryCount>\n'
        '          <rotate>false</rotate>\n          <includeFilterTransformer>false</includeFilterTransformer>\n'
        '          <threadCount>1</threadCount>\n          <threadAssignmentVariable></threadAssignmentVariable>\n'
        '          <validateResponse>true</validateResponse>\n          <resourceIds class="linked-hash-map">\n'
        '            <entry>\n              <string>Default Resource</string>\n'
        '              <string>[Default Resource]</string>\n            </entry>\n          </resourceIds>\n'
        '          <queueBufferSize>1000</queueBufferSize>\n          <reattachAttachments>true</reattachAttachments>\n'
        '        </destinationConnectorProperties>\n        <transmissionModeProperties class="com.mirth.connect.model.transmission.framemode.FrameModeProperties">\n'
        '          <pluginPointName>MLLP</pluginPointName>\n          <startOfMessageBytes>0B</startOfMessageBytes>\n'
        '          <endOfMessageBytes>1C0D</endOfMessageBytes>\n        </transmissionModeProperties>\n'
        '        <serverMode>false</serverMode>\n        <remoteAddress>127.0.0.1</remoteAddress>\n'
        '        <remotePort>26520</remotePort>',
        'com.mirth.connect.connectors.jdbc.DatabaseDispatcherProperties" version="4.5.0">\n        '
        '<destinationConnectorProperties version="4.5.0"><queueEnabled>false</queueEnabled></destinationConnectorProperties>'
        '<remotePort>26520</remotePort>'))
    out = imported(tmp_path, path)
    assert [d["name"] for d in channel(out, "adt-to-bed-board")["destination"]] == ["to-bed-board"]
    assert 'Destination "To Legacy Census (decommissioned)" (Database Writer)' in notes(out)
    assert check_output(out)[0] == []


def test_a_source_we_lack_leaves_the_channel_disabled_and_loadable(tmp_path):
    path = edited(tmp_path, "11", "<pluginPointName>MLLP</pluginPointName>", "<pluginPointName>Basic</pluginPointName>")
    out = imported(tmp_path, path)
    data = channel(out, "inpatient-adt-to-nurse-call")
    assert data["enabled"] is False and data["source"] == {"type": "channel"}
    assert "TCP Listener in Basic mode" in notes(out)
    assert check_output(out)[0] == []


def test_a_javascript_filter_rule_leaves_the_whole_filter_out(tmp_path):
    rule = ("<com.mirth.connect.plugins.javascriptrule.JavaScriptRule version=\"4.5.0\"><name>Only weekdays</name>"
            "<sequenceNumber>2</sequenceNumber><enabled>true</enabled><operator>AND</operator>"
            "<script>return new Date().getDay() % 6 != 0;</script>"
            "</com.mirth.connect.plugins.javascriptrule.JavaScriptRule>\n      </elements>\n    </filter>\n"
            "    <transportName>TCP Listener</transportName>")
    path = edited(tmp_path, "01", "</elements>\n    </filter>\n    <transportName>TCP Listener</transportName>", rule)
    out = imported(tmp_path, path)
    assert "filter" not in channel(out, "adt-router-pas-to-ris")
    text = notes(out)
    assert "return new Date().getDay() % 6 != 0;" in text and "every message passes it" in text
    assert "`AND msg['MSH.9.2'] in ('A01', 'A04', 'A08')`" in text


def test_names_become_file_names_and_clashes_are_numbered(tmp_path):
    first = edited(tmp_path, "02", "<name>LIS Results to File Drop</name>", "<name>Lab / Résults: *drop*</name>", "a.xml")
    second = edited(tmp_path, "11", "<name>Inpatient ADT to Nurse Call</name>", "<name>lab-r-sults-drop</name>", "b.xml")
    out = imported(tmp_path, first, second)
    assert sorted(p.name for p in (out / "channels").iterdir()) == ["lab-r-sults-drop-2.toml", "lab-r-sults-drop.toml"]
    assert 'channel "Lab / Résults: *drop*"' in (out / "channels" / "lab-r-sults-drop.toml").read_text()
    assert check_output(out)[0] == []


def test_sftp_file_writer_keeps_no_password(tmp_path):
    path = edited(tmp_path, "02", "<scheme>FILE</scheme>\n        <host>/var/spool/interfaces/lab-results/outbox</host>",
                  "<scheme>SFTP</scheme>\n        <host>sftp.example.org:2222/inbound/results</host>")
    path.write_text(path.read_text().replace("<anonymous>true</anonymous>\n        <username>anonymous</username>\n"
                                             "        <password>anonymous</password>",
                                             "<anonymous>false</anonymous>\n        <username>lab</username>\n"
                                             "        <password>hunter2</password>"))
    out = imported(tmp_path, path)
    [destination] = channel(out, "lis-results-to-file-drop")["destination"]
    assert destination["type"] == "sftp" and destination["host"] == "sftp.example.org" and destination["port"] == 2222
    assert destination["remote_path"] == "/inbound/results" and destination["username"] == "lab"
    assert destination["password"] == "${LIS_RESULTS_TO_FILE_DROP_WRITE_RESULT_FILE_DESTINATION_PASSWORD}"
    assert "hunter2" not in (out / "channels" / "lis-results-to-file-drop.toml").read_text() + notes(out)
    problems, _, _ = check_output(out, environ={"LIS_RESULTS_TO_FILE_DROP_WRITE_RESULT_FILE_DESTINATION_PASSWORD": "x"})
    assert problems == []


def test_the_json_reserialization_template_writes_what_json_stringify_wrote():
    """07's step: Mirth sent JSON.stringify(msg), compact with keys in order; the template the import
    writes does the same in the engine's sandbox (empty containers, nesting, escapes, non-ASCII)."""
    import json

    from engine.core.templates import Templates
    from engine.importers.mirth.channel import _COMPACT_JSON

    data = json.loads('{"z": [], "a": {}, "list": [1, {"k": null}, [true, false]], "text": "é \\"q\\" \\\\ \\n",'
                      ' "n": -2.5, "big": 12345678901234567890}')
    rendered = Templates(None).from_string(_COMPACT_JSON, "mirth-json").render({"msg": data})
    assert rendered == ('{"z":[],"a":{},"list":[1,{"k":null},[true,false]],"text":"é \\"q\\" \\\\ \\n",'
                        '"n":-2.5,"big":12345678901234567890}')
    assert json.loads(rendered) == data
