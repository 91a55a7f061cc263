"""The ``switchboard`` command line: exit codes, errors for people, check/test/send/show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.daemon import ROOT, SAMPLES, Daemon, MllpPeer, ack_for, control_id_of, hl7, run_cli

SHIPPED_SAMPLES = {  # a realistic sample for each shipped channel's inbound type
    "hl7": SAMPLES / "ADT-A08-01.hl7",
}


def write_tree(root: Path, channels: dict[str, str], config_extra: str = "") -> Path:
    (root / "channels").mkdir(parents=True)
    (root / "transforms").mkdir()
    for name, text in channels.items():
        (root / "channels" / f"{name}.toml").write_text(text)
    (root / "config.toml").write_text('[store]\npath = "var/s.db"\n' + config_extra)
    return root / "config.toml"


def test_check_reports_every_problem_at_once_without_traceback(tmp_path):
    config = write_tree(tmp_path, {
        "one": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:2600"\n',
        "two": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:2600"\n',
        "three": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:70000"\n',
        "four": '[source]\ntype = "carrier-pigeon"\n',
        "five": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n[[filter]]\nwhen = "msg[\'PID.3\'] =="\n',
    })
    result = run_cli("-c", str(config), "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any("two.toml" in line and "source.listen" in line for line in lines)
    assert any("three.toml" in line and "70000" in line for line in lines)
    assert any("four.toml" in line and "carrier-pigeon" in line for line in lines)
    assert lines[-1].startswith("switchboard check: ")


def test_check_reports_template_errors_with_file_and_key(tmp_path):
    config = write_tree(tmp_path, {
        "bad": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n[[filter]]\nwhen = "msg[\'PID.3\'] =="\n',
    })
    result = run_cli("check", "-c", str(config))  # -c after the verb works too
    assert result.returncode == 1
    assert "bad.toml: filter[1]" in result.stderr


def test_check_ok_exit_zero(tmp_path):
    config = write_tree(tmp_path, {"fine": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
    result = run_cli("-c", str(config), "check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_usage_error_exits_2():
    assert run_cli("frobnicate").returncode == 2


def test_missing_config_is_a_clear_error(tmp_path):
    result = run_cli("-c", str(tmp_path / "nope.toml"), "check")
    assert result.returncode == 1 and "nope.toml" in result.stderr and "Traceback" not in result.stderr


def test_read_commands_before_first_start_are_clear(tmp_path):
    config = write_tree(tmp_path, {"fine": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
    result = run_cli("-c", str(config), "messages")
    assert result.returncode == 1 and "no message store" in result.stderr


def test_shipped_channels_pass_check_and_test():
    config = ROOT / "config.toml"
    result = run_cli("-c", str(config), "check", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    from engine.config.loading import load

    shipped, _registry = load(config)
    assert shipped.channels, "no shipped channel"
    for channel in shipped.channels:
        if channel.inbound not in SHIPPED_SAMPLES:
            continue
        result = run_cli("-c", str(config), "test", channel.name, str(SHIPPED_SAMPLES[channel.inbound]), "--json",
                         cwd=ROOT)
        assert result.returncode == 0, f"{channel.name}: {result.stdout}{result.stderr}"
        assert json.loads(result.stdout)[0]["status"] in ("QUEUED", "FILTERED", "TRANSFORMED")


def test_dry_run_stores_and_sends_nothing_and_fails_on_error(tmp_path):
    out = tmp_path / "out"
    config = write_tree(tmp_path, {
        "dry": f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'
               f'[[transform]]\ninline = "{{{{ msg[\'PID.3.1\'] }}}}-{{{{ missing_name }}}}"\n'
               f'[[destination]]\nname = "f"\ntype = "file"\ndirectory = "{out}"\n',
    })
    messages = tmp_path / "in.hl7"
    messages.write_text(hl7("DRY-1").replace("\r", "\n") + "\n" + hl7("DRY-2").replace("\r", "\r\n"))
    result = run_cli("-c", str(config), "test", "dry", str(messages), "--json")
    assert result.returncode == 1
    results = json.loads(result.stdout)
    assert len(results) == 2 and all(r["status"] == "ERROR" for r in results)
    assert "missing_name" in results[0]["error"]
    assert not out.exists() and not (tmp_path / "var").exists()
    human = run_cli("-c", str(config), "test", "dry", str(messages))
    assert "message 1: ERROR" in human.stdout
    unknown = run_cli("-c", str(config), "test", "nope", str(messages))
    assert unknown.returncode == 1 and "no channel named 'nope'" in unknown.stderr


@pytest.fixture
def nak_peer():
    peer = MllpPeer(lambda payload: ack_for(payload, "AR" if control_id_of(payload) == "S-2" else "AA"))
    yield peer
    peer.close()


def test_send_prints_each_msa_and_exits_1_on_refusal(tmp_path, nak_peer):
    messages = tmp_path / "batch.hl7"
    messages.write_text("\n".join(hl7(f"S-{n}").replace("\r", "\n") for n in (1, 2, 3)))
    result = run_cli("send", f"127.0.0.1:{nak_peer.port}", str(messages))
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["1 S-1 AA S-1", "2 S-2 AR S-2", "3 S-3 AA S-3"]
    assert nak_peer.control_ids() == ["S-1", "S-2", "S-3"]


def test_send_to_the_daemon_then_show(tmp_path):
    daemon = Daemon(tmp_path / "d", {"in": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'}).start(1)
    try:
        messages = tmp_path / "one.hl7"
        messages.write_text(hl7("SEND-1").replace("\r", "\n"))
        result = daemon.cli("send", f"127.0.0.1:{daemon.ports['in']}", str(messages))
        assert result.returncode == 0 and "AA SEND-1" in result.stdout
        row = daemon.cli_json("messages", "--control-id", "SEND-1")[0]
        shown = daemon.cli("show", str(row["id"]))
        assert shown.returncode == 0 and "SEND-1" in shown.stdout
        assert daemon.cli("show", "999999").returncode == 1
        assert "no message with id 999999" in daemon.cli("show", "999999").stderr
    finally:
        daemon.stop()


def test_send_with_nothing_listening_exits_1(tmp_path):
    from support.daemon import free_port

    messages = tmp_path / "one.hl7"
    messages.write_text(hl7("NOBODY").replace("\r", "\n"))
    result = run_cli("send", f"127.0.0.1:{free_port()}", str(messages), "--timeout", "2s")
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_an_http_source_open_beyond_loopback_needs_a_token(tmp_path):
    config = write_tree(tmp_path, {"hook": '[source]\ntype = "http"\nlisten = "0.0.0.0:0"\npath = "/in"\n'})
    result = run_cli("-c", str(config), "check")
    assert result.returncode == 1
    assert "hook.toml: source.token" in result.stderr and "0.0.0.0" in result.stderr


def test_import_mirth_writes_channels_that_check_accepts_and_refuses_a_foreign_file(tmp_path):
    """``switchboard import mirth`` as a user runs it: the whole public corpus in one command, the
    result checked by ``switchboard check`` as written; a foreign XML is one sentence, exit 1."""
    corpus = ROOT / "tests" / "fixtures" / "mirth"
    out = tmp_path / "migrated"
    exports = sorted(str(path) for path in (corpus / "channels").glob("*.xml"))
    result = run_cli("import", "mirth", *exports, str(corpus / "configuration-map.xml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list((out / "channels").glob("*.toml"))) == len(exports)
    notes = (out / "IMPORT-NOTES.md").read_text()
    assert "delete msg['ZPD']" in notes                       # channel 03's JavaScript, quoted
    (out / "config.toml").write_text('[store]\npath = "var/s.db"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "t"\n')
    checked = run_cli("-c", str(out / "config.toml"), "check", env=dict(os.environ, CHANNEL_TOKEN="x"))
    assert checked.returncode == 0, checked.stderr

    foreign = tmp_path / "pom.xml"
    foreign.write_text("<project><modelVersion>4.0.0</modelVersion></project>")
    again = run_cli("import", "mirth", str(foreign), "--out", str(tmp_path / "other"))
    assert again.returncode == 1 and "Traceback" not in again.stderr and again.stderr.count("\n") == 1
    assert not (tmp_path / "other" / "channels").exists()
    strict = run_cli("import", "mirth", exports[2], "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1                              # 03 needs a person: its JavaScript
