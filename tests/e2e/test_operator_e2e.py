"""The operator's basics through the real daemon and the real CLI (issue 14 points 3-6).

Logs (a timestamp first; JSON one object per line), ``--version``, ``check`` naming the address,
``test`` over several files read as the live source reads them, ``[[filter]] name`` in ``show``,
``show --json``, the API and the dashboard, ``status`` with the running daemon's state and each
destination's last error, no traceback on a closed pipe, a template error's words, a listener
that cannot open stopping the start, and the favicon without a 401.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from support.daemon import SAMPLES, Daemon, MllpClient, free_port, hl7, run_cli, wait_for

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR|CRITICAL) \S+: .*$")
MARKER = "ZZMARKERPHI"


def gate_channel(out: Path) -> str:
    return ('[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n\n'
            '[[filter]]\nname = "adt-only"\nwhen = "msg[\'MSH.9.1\'] == \'ADT\'"\n\n'
            '[[filter]]\nwhen = "msg[\'PID.3.1\'] != \'BLOCKED\'"\n\n'
            f'[[destination]]\nname = "files"\ntype = "file"\ndirectory = "{out}"\n')


def down_channel(port: int) -> str:
    return ('[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n\n'
            f'[[destination]]\nname = "nobody"\ntype = "mllp"\nconnect = "127.0.0.1:{port}"\n'
            'retry = { interval = "200ms", max_interval = "1s" }\n')


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("operator")
    daemon = Daemon(root, {"gate": gate_channel(root / "out"), "down": down_channel(free_port())})
    daemon.start(expect_channels=2)
    yield daemon
    daemon.stop()


def send(daemon, channel: str, message: str) -> None:
    client = MllpClient(daemon.ports[channel])
    try:
        assert client.request(message)["code"] == "AA"
    finally:
        client.close()


def message_id(daemon, control_id: str) -> int:
    rows = daemon.cli_json("messages", "--control-id", control_id)
    return rows[0]["id"]


# -- logs -------------------------------------------------------------------------------------------
def run_and_log(tmp_path: Path, fmt: str) -> list[str]:
    """A real run: start, one message stored, filtered and delivered, one ERROR, a graceful stop."""
    out = tmp_path / "out"
    daemon = Daemon(tmp_path / fmt, {"gate": gate_channel(out), "down": down_channel(free_port())})
    config = daemon.config.read_text().replace("[engine]\n", f'[engine]\nlog_format = "{fmt}"\n')
    daemon.config.write_text(config)
    daemon.start(expect_channels=2)
    send(daemon, "gate", hl7("LOG-1", mrn=MARKER))
    send(daemon, "gate", hl7("LOG-2", msg_type="ORM^O01", mrn=MARKER))
    send(daemon, "down", hl7("LOG-3", mrn=MARKER))
    wait_for(lambda: list(out.glob("*")), 15, what="the delivered file")
    wait_for(lambda: any("attempt" in line for line in daemon.log_lines), 15, what="a failed attempt logged")
    assert daemon.stop() == 0
    assert daemon.log_lines and not any(MARKER in line for line in daemon.log_lines)
    return daemon.log_lines


def test_text_logs_start_with_a_utc_timestamp(tmp_path):
    lines = run_and_log(tmp_path, "text")
    bad = [line for line in lines if not TEXT_LINE.match(line)]
    assert bad == []
    assert any(" INFO  switchboard.engine: switchboard started" in line for line in lines)


def test_json_logs_are_one_object_per_line_with_ids(tmp_path):
    lines = run_and_log(tmp_path, "json")
    records = [json.loads(line) for line in lines]          # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        assert not any(key.startswith("log_") or key == "__class_uuid__" for key in record)
    started = [r for r in records if r["message"].startswith("channel gate started")]
    assert started and started[0]["channel"] == "gate" and started[0]["logger"] == "switchboard.engine"
    failed = [r for r in records if "attempt 1 failed" in r["message"]]
    assert failed and failed[0]["channel"] == "down" and failed[0]["destination"] == "nobody"
    assert isinstance(failed[0]["message_id"], int)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"switchboard {version('switchboard')}"


# -- check ------------------------------------------------------------------------------------------
def test_check_names_the_address_two_channels_share(tmp_path):
    (tmp_path / "channels").mkdir()
    for name in ("one", "two"):
        (tmp_path / "channels" / f"{name}.toml").write_text('[source]\ntype = "mllp"\nlisten = "127.0.0.1:2600"\n')
    (tmp_path / "config.toml").write_text('[store]\npath = "var/s.db"\n')
    result = run_cli("-c", str(tmp_path / "config.toml"), "check")
    assert result.returncode == 1
    assert "two.toml: source.listen: 127.0.0.1:2600 is already used by channel 'one'" in result.stderr


# -- test CHANNEL FILE... ---------------------------------------------------------------------------
BOM_SAMPLES = ["ADT01-23.hl7", "ADT01-28.hl7", "ADT04-23.hl7", "ADT04-251.hl7", "ADT04-28.hl7"]


def test_dry_run_takes_several_files_and_reads_them_as_the_live_source(tmp_path):
    """The five BOM samples that once failed in ``test`` and passed live, and a file of two LF
    messages: each message's body is exactly what the live file source stores (the same code)."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    channel = (f'[source]\ntype = "file"\npath = "{inbox}"\npattern = "*.hl7"\nsettle = "100ms"\n\n'
               f'[[destination]]\nname = "files"\ntype = "file"\ndirectory = "{out}"\n')
    daemon = Daemon(tmp_path / "d", {"files": channel})
    two = tmp_path / "two.hl7"
    two.write_bytes((hl7("TWO-1") + "\n" + hl7("TWO-2") + "\n").replace("\r", "\n").encode())
    files = [str(SAMPLES / name) for name in BOM_SAMPLES] + [str(two)]
    result = daemon.cli("test", "files", *files, "--json")
    assert result.returncode == 0, result.stderr
    dry = [r["destinations"][0]["body"] for r in json.loads(result.stdout)]
    assert len(dry) == 7 and all(body.endswith("\r") and "\n" not in body and "\ufeff" not in body for body in dry)
    inbox.mkdir()
    daemon.start(expect_channels=0)
    try:
        for number, path in enumerate(files):
            (inbox / f"{number:02d}.hl7").write_bytes(Path(path).read_bytes())
        rows = wait_for(lambda: (lambda r: r if len(r) == 7 else None)(daemon.cli_json("messages", "--limit", "20")),
                        20, interval=0.2, what="the 7 messages stored")
        stored = sorted(daemon.cli_json("show", str(row["id"]))["raw"] for row in rows)
        assert stored == sorted(dry)
    finally:
        daemon.stop()


def test_dry_run_keeps_a_template_errors_words(tmp_path):
    channel = ('[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n\n[transform]\n'
               "inline = \"{{ msg['PID.7'] | hl7_date(fmt='%d') }}\"\n")
    daemon = Daemon(tmp_path, {"dates": channel})
    (tmp_path / "m.hl7").write_text(hl7("TPL-ERR", mrn=MARKER))
    result = daemon.cli("test", "dates", str(tmp_path / "m.hl7"), "--json")
    error = json.loads(result.stdout)[0]["error"]
    assert result.returncode == 1 and "hl7_date() got an unexpected keyword argument 'fmt'" in error
    assert MARKER not in result.stdout + result.stderr


# -- filtered_by ------------------------------------------------------------------------------------
def test_show_says_which_filter_stopped_a_message_and_why(daemon):
    send(daemon, "gate", hl7("FLT-1", msg_type="ORM^O01"))
    send(daemon, "gate", hl7("FLT-2", mrn="BLOCKED"))
    first = daemon.wait_status(message_id(daemon, "FLT-1"), "FILTERED")
    assert first["filtered_by"] == {"name": "adt-only", "reason": "when \"msg['MSH.9.1'] == 'ADT'\" was false"}
    second = daemon.wait_status(message_id(daemon, "FLT-2"), "FILTERED")
    assert second["filtered_by"]["name"] == "filter[2]"        # the default name
    text = daemon.cli("show", str(first["id"])).stdout
    assert "filtered by adt-only: when" in text
    status, api = daemon.api("GET", f"/api/messages/{first['id']}")
    assert status == 200 and api["filtered_by"]["name"] == "adt-only"
    status, page = daemon.api("GET", f"/messages/{first['id']}")
    assert status == 200 and 'id="filtered-by"' in page and "adt-only" in page


# -- status -----------------------------------------------------------------------------------------
def test_status_shows_the_daemons_state_and_each_destinations_last_error(daemon):
    send(daemon, "down", hl7("DOWN-1"))
    def last_error():
        rows = {row["name"]: row for row in daemon.cli_json("status")}
        errors = [d["last_error"] for d in rows["down"]["destinations"] if d["last_error"]]
        return (rows, errors[0]) if errors else None
    rows, error = wait_for(last_error, 15, interval=0.2, what="the destination's last error")
    assert rows["gate"]["state"] == "started" and "cannot connect" in error
    assert daemon.api("POST", "/api/channels/gate/pause")[0] == 200
    try:
        text = daemon.cli("status").stdout
        assert re.search(r"^gate\s+paused\s", text, re.MULTILINE), text
        assert "destination nobody: last error: cannot connect" in text
        assert text.startswith("daemon: running")
    finally:
        assert daemon.api("POST", "/api/channels/gate/start")[0] == 200


def test_status_into_a_closed_pipe_has_no_traceback(daemon):
    read_end, write_end = os.pipe()
    os.close(read_end)                      # the reader is gone before status writes a byte
    try:
        result = subprocess.run([sys.executable, "-m", "engine.cli.main", "-c", str(daemon.config), "status"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=daemon.root)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 0


def test_status_without_a_daemon_says_stopped(tmp_path):
    daemon = Daemon(tmp_path, {"lone": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
    daemon.start(expect_channels=1)
    daemon.stop()
    rows = daemon.cli_json("status")
    assert [(row["name"], row["state"]) for row in rows] == [("lone", "stopped")]
    assert daemon.cli("status").stdout.startswith("daemon: not reachable")


# -- listeners at start, favicon --------------------------------------------------------------------
def test_a_channel_listener_that_cannot_open_stops_the_start(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        daemon = Daemon(tmp_path, {"busy": f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:{port}"\n',
                                   "fine": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
        result = daemon.cli("run", timeout=60)
    assert result.returncode == 1
    assert f"switchboard run: channel 'busy' cannot start: Couldn't listen on 127.0.0.1:{port}" in result.stderr


def test_an_admin_listener_that_cannot_open_stops_the_start(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        daemon = Daemon(tmp_path, {"fine": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
        daemon.config.write_text(daemon.config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        result = daemon.cli("run", timeout=60)
    assert result.returncode == 1
    assert f"switchboard run: the admin API cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_favicon_is_answered_without_a_401(daemon):
    status, body = daemon.api("GET", "/favicon.ico", token=None)
    assert status == 204 and body == ""
    assert not any("favicon" in line and "401" in line for line in daemon.log_lines)
