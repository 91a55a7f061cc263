"""Each real Mirth Connect 4.5.0 export of the corpus (tests/fixtures/mirth) converts to the channel
file DESIGN §3.10 describes, and that file passes `switchboard check` (edit steps aside, see
mirth_support.check_output)."""
from __future__ import annotations

from .mirth_support import channel, check_output, export, imported, notes


def converted(tmp_path, *numbers, config_map=True):
    out = imported(tmp_path, *[export(n) for n in numbers], config_map=config_map)
    problems, removed, config = check_output(out)
    assert problems == []
    return out, removed, config


def test_01_mllp_router_rule_builder_message_builder_and_mapper(tmp_path):
    out, removed, _ = converted(tmp_path, "01")
    data = channel(out, "adt-router-pas-to-ris")
    assert data["name"] == "adt-router-pas-to-ris"
    assert data["description"].startswith("Routes registration events (A01 admit")
    assert data["enabled"] is True and data["inbound"] == "hl7"
    assert data["source"] == {"type": "mllp", "listen": "127.0.0.1:26101", "ack": "processed", "max_connections": 10}
    assert data["filter"] == [{"when": "msg['MSH.9.1'] == 'ADT' and msg['MSH.9.2'] in ('A01', 'A04', 'A08')"}]
    assert data["metadata"] == {"mrn": "PID.3.1"}
    [destination] = data["destination"]
    assert destination["name"] == "to-ris" and destination["type"] == "mllp"
    assert destination["connect"] == "127.0.0.1:26501" and destination["ack_timeout"] == "5s"
    assert destination["retry"] == {"attempts": 1, "interval": "10s", "backoff": 1.0}
    assert destination["transform"] == [{"edit": [{"set": "MSH.5.1", "value": "RIS"},
                                                  {"set": "MSH.6.1", "value": "RADIOLOGY"}]}]
    assert removed == [] and destination["transform"][0]["edit"]   # checked as written: the edit step exists
    assert 'channel "ADT Router - PAS to RIS"' in (out / "channels" / "adt-router-pas-to-ris.toml").read_text()
    assert "Nothing: every channel" in notes(out)


def test_02_file_writer_with_velocity_name_and_mapper_default(tmp_path):
    out, removed, config = converted(tmp_path, "02")
    data = channel(out, "lis-results-to-file-drop")
    assert data["filter"] == [{"when": "msg['MSH.9.1'] == 'ORU'"}]
    assert data["metadata"] == {"mrn": "(msg['PID.3.1'] or 'NOMRN')"}
    [destination] = data["destination"]
    assert destination["type"] == "file"
    assert destination["directory"] == "/var/spool/interfaces/lab-results/outbox"
    assert destination["filename"] == "ORU_{{ meta.mrn }}_{{ id }}.hl7"
    assert "transform" not in destination          # ${message.encodedData}: the message as it is
    assert removed == [] and "Nothing" in notes(out)


def test_03_javascript_step_goes_to_the_notes_and_the_channel_passes_messages_through(tmp_path):
    out, removed, _ = converted(tmp_path, "03")
    data = channel(out, "pas-adt-strip-z-segments")
    assert "transform" not in data and removed == []
    assert data["destination"][0]["connect"] == "127.0.0.1:26503"
    text = notes(out)
    assert 'Source transformer, step 1 "Strip Z segments" (JavaScript)' in text
    assert "delete msg['ZPD'];" in text and "delete msg[zSegments[i]];" in text


def test_04_message_builder_converts_around_the_javascript_step(tmp_path):
    out, removed, _ = converted(tmp_path, "04")
    data = channel(out, "lis-results-unit-and-flag-mapping")
    assert data["transform"] == [{"edit": [{"set": "MSH.3.1", "value": "LIS"},
                                           {"set": "MSH.4.1", "value": "MAIN_LAB"}]}]
    assert removed == []
    text = notes(out)
    assert "Map OBX units and abnormal flags" in text and "mapUnit(unit)" in text
    assert "function mapUnit(code)" in text and "function mapAbnormalFlag(flag)" in text   # embedded library
    assert (out / "lookups" / "mapUnit.csv").read_text().splitlines()[:2] == ["key,value", "tera.l-1,10*12/L"]
    assert "HI,H" in (out / "lookups" / "mapAbnormalFlag.csv").read_text()
    assert (out / "lookups" / "mapAbnormalFlag.toml").read_text() == 'case = "insensitive"\n'


def test_05_and_06_file_reader_batch_and_channel_writer_to_channel_reader(tmp_path):
    out, _, config = converted(tmp_path, "05", "06")
    intake = channel(out, "adt-batch-file-intake")
    assert intake["source"] == {"type": "file", "path": "/var/spool/interfaces/adt-batch/inbox", "pattern": "*.hl7",
                                "after": "move", "split": "hl7-batch", "settle": "1s", "poll_interval": "2s"}
    assert intake["destination"][0] == {"name": "to-adt-archive-router", "type": "channel",
                                        "channel": "adt-archive-writer",
                                        "retry": {"attempts": 1, "interval": "10s", "backoff": 1.0}}
    archive = channel(out, "adt-archive-writer")
    assert archive["source"] == {"type": "channel"}
    assert archive["metadata"] == {"mrn": "(msg['PID.3.1'] or 'UNKNOWN')", "eventType": "MSH.9.2"}
    assert archive["destination"][0]["filename"] == "{{ meta.mrn }}_{{ meta.eventType }}_{{ id }}.hl7"
    assert config.channel("adt-batch-file-intake").destinations[0].options["channel"] == "adt-archive-writer"


def test_05_alone_leaves_the_channel_writer_out_with_a_note(tmp_path):
    out = imported(tmp_path, export("05"))
    assert "destination" not in channel(out, "adt-batch-file-intake")
    assert "f5a94dcb-d061-408d-a310-d7d82caa613a, which is not in this import" in notes(out)
    assert check_output(out)[0] == []


def test_07_http_listener_json_destination_set_filters_and_http_senders(tmp_path):
    out, _, _ = converted(tmp_path, "07")
    data = channel(out, "order-events-json-router")
    assert data["inbound"] == "json"
    assert data["source"] == {"type": "http", "listen": "127.0.0.1:26107", "path": "/orders", "ack": "processed"}
    assert data["metadata"] == {"orderId": "orderId",
                                "department": "((msg['department'] | default('') | string) or 'UNKNOWN')"}
    lis, ris = data["destination"]
    assert lis["url"] == "http://127.0.0.1:26507/lis/orders" and lis["timeout"] == "30s"
    assert lis["headers"] == {"X-Order-Id": "{{ meta.orderId }}", "Content-Type": "application/json; charset=UTF-8"}
    department = "(msg['department'] | default('') | string)"
    assert [f["when"] for f in lis["filter"]] == [
        f"not ({department} == 'RAD')", f"not ({department} not in ('LAB', 'RAD'))",
        "(msg['eventType'] | default('') | string) in ('order.created', 'order.updated')"]
    assert [f["when"] for f in ris["filter"]] == [
        f"not ({department} == 'LAB')", f"not ({department} not in ('LAB', 'RAD'))",
        "(msg['patient']['mrn'] | string) != ''"]
    assert ris["headers"]["X-Order-Id"] == "{{ meta.orderId }}"   # Mirth's per-message header, a template
    text = notes(out)
    assert "X-Order-Id" not in text and "javascript" not in text


def test_08_queue_and_retry_settings(tmp_path):
    out, removed, _ = converted(tmp_path, "08")
    data = channel(out, "dft-charges-to-billing")
    accounting, audit = data["destination"]
    assert accounting["retry"] == {"attempts": 1, "interval": "10s", "backoff": 1.0}
    assert audit["retry"] == {"attempts": 0, "interval": "10s", "backoff": 1.0}
    assert audit["transform"] == [{"edit": [{"set": "MSH.5.1", "value": "CHGAUDIT"}]}]
    assert data["metadata"] == {"account": "PID.18.1"}
    assert "queue on failure, 2 retries first" in (out / "channels" / "dft-charges-to-billing.toml").read_text()


def test_09_disabled_channel_stays_disabled(tmp_path):
    out, _, config = converted(tmp_path, "09")
    data = channel(out, "pharmacy-orders-to-omnicell-retired")
    assert data["enabled"] is False
    assert data["description"].startswith("RETIRED 2024-03")
    assert config.channel("pharmacy-orders-to-omnicell-retired").enabled is False
    assert "Nothing" in notes(out)


def test_10_disabled_rule_left_out_and_disabled_destination_kept_disabled(tmp_path):
    out, _, config = converted(tmp_path, "10")
    data = channel(out, "adt-to-bed-board")
    assert data["filter"] == [{"when": "msg['MSH.9.1'] == 'ADT'"}]
    text = (out / "channels" / "adt-to-bed-board.toml").read_text()
    assert 'disabled in Mirth, left out: rule 2 "Accept message if' in text
    bed, legacy = data["destination"]
    assert "enabled" not in bed and legacy["enabled"] is False and legacy["connect"] == "127.0.0.1:26520"
    assert [d.name for d in config.channel("adt-to-bed-board").destinations] == ["to-bed-board"]


def test_11_every_rule_builder_condition_with_javascript_precedence(tmp_path):
    out, _, _ = converted(tmp_path, "11")
    [rule] = channel(out, "inpatient-adt-to-nurse-call")["filter"]
    assert rule["when"] == (
        "(msg['MSH.9.1'] == 'ADT' and msg['PID.3.1'] != '' and msg['PID.29.1'] == '' "
        "and msg['PV1.2.1'] not in ('P', 'O') and ('ROOM' in msg['PV1.3.1'] or 'ICU' in msg['PV1.3.1']) "
        "and ('TEST' not in msg['PID.5.1'] and 'ZZZ' not in msg['PID.5.1'])) or msg['MSH.9.2'] == 'A03'")


def test_12_mapper_defaults_replacements_message_builder_and_configuration_map(tmp_path):
    out, removed, _ = converted(tmp_path, "12")
    data = channel(out, "radiology-worklist-feed")
    assert data["metadata"] == {
        "mrn": "((msg['PID.3.1'] or 'NOMRN')).lstrip('0')",
        "patientPhone": "((msg['PID.13.1'] or '0000000000') | select('in', '0123456789') | join)",
        "attending": "(msg['PV1.7.2'] or 'UNASSIGNED')",          # /\s+/g never matched in Mirth
    }
    assert data["transform"] == [{"edit": [
        {"set": "MSH.5.1", "value": "PACS"},
        {"set": "PV1.3.1", "value": "{{ (msg['PV1.3.1'] or 'RADIOLOGY') }}"},
        {"set": "PID.5.1", "value": "{{ ((msg['PID.5.1'] | upper) or 'UNKNOWN') }}"}]}]
    archive, worklist = data["destination"]
    assert archive["directory"] == "${outputDir:-/var/spool/interfaces/radiology-worklist}/hl7"
    assert archive["filename"] == "{{ id }}.hl7"
    assert worklist["filename"] == "WL_{{ meta.mrn }}_{{ id }}.txt"
    assert worklist["transform"] == [{"template": "radiology-worklist-feed/worklist-extract.txt.j2",
                                      "outbound": "text"}]
    template = out / "transforms" / "radiology-worklist-feed" / "worklist-extract.txt.j2"
    assert template.read_text() == "{{ meta.mrn }}|{{ meta.patientPhone }}|{{ meta.attending }}|{{ id }}"
    assert "Nothing" in notes(out)


def test_12_without_the_configuration_map_notes_the_variable(tmp_path):
    out = imported(tmp_path, export("12"), config_map=False)
    assert channel(out, "radiology-worklist-feed")["destination"][0]["directory"] == "${outputDir}/hl7"
    assert "Environment variable outputDir" in notes(out)
    problems, _, _ = check_output(out)
    assert [p.reason for p in problems][:1] == ["${outputDir} is not set and has no default (set it, or write "
                                                "${outputDir:-default})"]
    assert check_output(out, environ={"outputDir": str(tmp_path / "spool")})[0] == []


def test_the_whole_corpus_imports_in_one_call_and_passes_check(tmp_path):
    from .mirth_support import CHANNELS, LIBRARY

    out = imported(tmp_path, *sorted(CHANNELS.glob("*.xml")), LIBRARY)
    problems, removed, config = check_output(out)
    assert problems == []
    assert len(config.channels) == 12
    assert removed == []          # the edit steps of 01, 04, 08 and 12 pass check as written
