"""Replay through the real daemon and the ``switchboard replay`` CLI: a template fixed on disk
after five failures delivers all five with both attempts in ``show``; ``--dry-run`` changes
nothing; one destination only; messages still queued are skipped; a broken config refuses; the
daemon not running is one clear sentence; a bulk replay keeps order while live traffic flows."""

from __future__ import annotations

import json
import threading
import time

import pytest

from support.pg import store_backend  # noqa: F401 - a fixture
from support.daemon import Daemon, MllpClient, MllpPeer, ack_for, control_id_of, free_port, hl7, relay_channel, wait_for

pytestmark = pytest.mark.slow

BROKEN = '{"account": "{{ msg[\'PID.18.1\'] }}", "plan": "{{ payment_plan }}"}'
FIXED = '{"account": "{{ msg[\'PID.18.1\'] }}", "plan": "none"}'


def channel(outbox, extra: str = "") -> str:
    return f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
template = "placement.json.j2"
outbound = "json"

[[destination]]
name = "agency"
type = "file"
directory = "{outbox}"
filename = "{{{{ id }}}}.json"
{extra}"""


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """Five placements that went ERROR on a template bug (``payment_plan`` is not defined)."""
    root = tmp_path_factory.mktemp("replay")
    outbox = root / "outbox"
    dead_peer = free_port()
    waiting = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "down"
type = "mllp"
connect = "127.0.0.1:{dead_peer}"
retry = {{ interval = "100ms", backoff = 1.0, max_interval = "100ms" }}
"""
    daemon = Daemon(root / "d", {"placements": channel(outbox), "waiting": waiting},
                    templates={"placement.json.j2": BROKEN})
    daemon.start(2)
    client = MllpClient(daemon.ports["placements"])
    for number in range(5):
        assert client.request(hl7(f"PL-{number}", account=f"ACC{number}"))["code"] == "AA"
    client.close()
    errored = wait_for(lambda: len(rows := listed(daemon, "placements", "error")) == 5 and rows,
                       what="five placements in ERROR")
    yield daemon, sorted(row["id"] for row in errored), outbox
    daemon.stop()


def listed(daemon, channel_name: str, status: str) -> list[dict]:
    """Through the admin API: quicker to poll than a CLI process per look."""
    code, rows = daemon.api("GET", f"/api/messages?channel={channel_name}&status={status}")
    assert code == 200, rows
    return rows


def test_dry_run_lists_and_changes_nothing(placed):
    daemon, ids, outbox = placed
    result = daemon.cli("replay", "--channel", "placements", "--status", "error", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"would replay 5 message(s): {' '.join(map(str, ids))}"
    assert {m["status"] for m in daemon.cli_json("messages", "--channel", "placements")} == {"ERROR"}
    assert not outbox.exists() or not list(outbox.iterdir())
    audit = json.loads(daemon.cli("audit", "--json", "--action", "replay.dry_run").stdout)
    assert audit[0]["detail"]["ids"] == ids and audit[0]["who"] == "admin"


def test_fixed_template_replays_all_five_with_both_attempts(placed):
    daemon, ids, outbox = placed
    (daemon.root / "transforms" / "placement.json.j2").write_text(FIXED)
    result = daemon.cli("replay", "--channel", "placements", "--status", "error")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "replayed 5 message(s): 5 QUEUED"
    wait_for(lambda: len(listed(daemon, "placements", "sent")) == 5, what="all five SENT")
    for number, message_id in enumerate(ids):
        shown = daemon.cli_json("show", str(message_id))
        assert shown["status"] == "SENT"
        (agency,) = shown["destinations"]
        failed, sent = agency["attempts"]
        assert failed["ok"] is False and "payment_plan" in failed["error"] and "before replay" in failed["error"]
        assert sent["ok"] is True and failed["at"] <= sent["at"]
        assert json.loads((outbox / f"{message_id}.json").read_text()) == {"account": f"ACC{number}", "plan": "none"}
        assert shown["error"] is None
    audit = json.loads(daemon.cli("audit", "--json", "--action", "replay").stdout)
    assert (audit[0]["who"], audit[0]["target"], audit[0]["detail"]["ids"]) == ("admin", "channel:placements", ids)
    again = daemon.cli("replay", "--channel", "placements", "--status", "error", "--dry-run")
    assert again.stdout.startswith("would replay 0 message(s)")
    # a SENT message replayed by id goes out again: a third attempt
    result = daemon.cli("replay", str(ids[0]), "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["ids"], answer["replayed"], answer["statuses"]) == ([ids[0]], 1, {"QUEUED": 1})
    shown = wait_for(lambda: (m := daemon.api("GET", f"/api/messages/{ids[0]}")[1])["destinations"][0]["attempts"][2:]
                     and m, what="a third attempt")
    assert [a["ok"] for a in shown["destinations"][0]["attempts"]] == [False, True, True]


def test_still_queued_messages_are_skipped(placed):
    daemon, _ids, _outbox = placed
    client = MllpClient(daemon.ports["waiting"])
    assert client.request(hl7("WAIT-1"))["code"] == "AA"
    client.close()
    (row,) = wait_for(lambda: daemon.cli_json("messages", "--channel", "waiting", "--status", "queued"),
                      what="a queued message")
    result = daemon.cli("replay", str(row["id"]))
    assert result.returncode == 0
    assert f"skipped {row['id']}: still queued for down" in result.stdout


def test_a_broken_config_refuses_the_replay(placed):
    """The daemon rebuilds the channel from disk; a template that no longer compiles refuses the
    replay with the problem, and the message is left as it was."""
    daemon, ids, _outbox = placed
    template = daemon.root / "transforms" / "placement.json.j2"
    kept = template.read_text()
    before = daemon.api("GET", f"/api/messages/{ids[0]}")[1]
    template.write_text("{% if %}")
    try:
        result = daemon.cli("replay", str(ids[0]))
    finally:
        template.write_text(kept)
    assert result.returncode == 1
    assert "channel placements does not build from the files on disk" in result.stderr
    assert "placement.json.j2" in result.stderr
    assert daemon.api("GET", f"/api/messages/{ids[0]}")[1]["destinations"] == before["destinations"]


def test_only_the_replayed_channels_own_file_can_refuse_the_replay(placed):
    """Another channel's broken file does not hold a replay back; the channel's own does, naming
    its problems."""
    daemon, ids, _outbox = placed
    files = {name: daemon.root / "channels" / f"{name}.toml" for name in ("waiting", "placements")}
    kept = {name: path.read_text() for name, path in files.items()}
    try:
        files["waiting"].write_text("[source\n")
        result = daemon.cli("replay", str(ids[1]))
        assert result.returncode == 0, result.stderr
        files["placements"].write_text(kept["placements"] + "\nbogus_key = 1\n")
        refused = daemon.cli("replay", str(ids[1]))
    finally:
        for name, path in files.items():
            path.write_text(kept[name])
    assert refused.returncode == 1
    assert "channel placements's file on disk has problems" in refused.stderr
    assert "bogus_key" in refused.stderr and "waiting.toml" not in refused.stderr


def test_usage_errors(placed):
    daemon, ids, _outbox = placed
    assert daemon.cli("replay").returncode == 2
    assert daemon.cli("replay", str(ids[0]), "--channel", "placements").returncode == 2
    assert daemon.cli("replay", str(ids[0]), "--status", "error").returncode == 2
    missing = daemon.cli("replay", "999999")
    assert missing.returncode == 1 and "no message with id 999999" in missing.stderr


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)
def test_one_destination_only(tmp_path, store_backend):
    """Two destinations; one's own transform fails. Replaying that one leaves the other alone."""
    channel_text = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "good"
type = "file"
directory = "{tmp_path / 'good'}"

[[destination]]
name = "picky"
type = "file"
directory = "{tmp_path / 'picky'}"
  [destination.transform]
  template = "picky.j2"
"""
    daemon = store_backend(Daemon(tmp_path / "d", {"two": channel_text}, templates={"picky.j2": "{{ missing_helper() }}"}))
    daemon.start(1)
    try:
        client = MllpClient(daemon.ports["two"])
        assert client.request(hl7("TWO-1"))["code"] == "AA"
        client.close()
        (row,) = daemon.cli_json("messages", "--channel", "two")
        daemon.wait_status(row["id"], "ERROR")   # as soon as picky is ERROR; good may still be on its way
        first = wait_for(lambda: (lambda m: m if m["destinations"][0]["status"] == "SENT" else None)(
            daemon.cli_json("show", str(row["id"]))), what="good sent")
        assert {d["name"]: d["status"] for d in first["destinations"]} == {"good": "SENT", "picky": "ERROR"}
        (daemon.root / "transforms" / "picky.j2").write_text("picked {{ id }}")
        result = daemon.cli("replay", str(row["id"]), "--destination", "picky")
        assert result.returncode == 0, result.stderr
        shown = daemon.wait_status(row["id"], "SENT")
        good, picky = shown["destinations"]
        assert [a["ok"] for a in good["attempts"]] == [True]
        assert [a["ok"] for a in picky["attempts"]] == [False, True]
        assert "missing_helper" in picky["attempts"][0]["error"]
        assert len(list((tmp_path / "good").iterdir())) == 1
        assert [p.read_text() for p in (tmp_path / "picky").iterdir()] == [f"picked {row['id']}"]
        typo = daemon.cli("replay", "--channel", "two", "--destination", "pikcy")
        assert typo.returncode == 1 and "no destination 'pikcy'" in typo.stderr
    finally:
        daemon.stop()


def test_daemon_not_running_is_one_clear_sentence(tmp_path):
    daemon = Daemon(tmp_path / "d", {})
    daemon.start()
    daemon.stop()
    stopped = daemon.cli("replay", "1")
    assert stopped.returncode == 1
    assert "the daemon is not running" in stopped.stderr and "switchboard run" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    daemon.start()
    daemon.kill()                                     # no clean stop: its address file is left behind
    killed = daemon.cli("replay", "1")
    assert killed.returncode == 1
    assert "the daemon is not running (admin API at 127.0.0.1:" in killed.stderr
    assert "refused the connection); start it with `switchboard run`" in killed.stderr


def test_bulk_replay_keeps_order_while_live_traffic_flows(tmp_path):
    count = 1000
    refusing = threading.Event()
    refusing.set()
    peer = MllpPeer(lambda payload: ack_for(payload, "AE" if refusing.is_set() and
                                            control_id_of(payload).startswith("BULK-") else "AA"))
    channel_text = relay_channel(peer.port)
    daemon = Daemon(tmp_path / "d", {"bulk": channel_text}).start(1)
    try:
        client = MllpClient(daemon.ports["bulk"])
        client.send_raw(b"".join(b"\x0b" + hl7(f"BULK-{n:04d}").encode() + b"\x1c\x0d" for n in range(count)))
        assert all(b"MSA|AA|" in client.read_frame() for _ in range(count))
        wait_for(lambda: len(peer.received) == count, timeout=60, what="every message refused once")
        wait_for(lambda: daemon.cli_json("status")[0]["errored"] == count, timeout=30, what="all ERROR")
        refusing.clear()
        before = len(peer.received)
        answer = {}
        replay = threading.Thread(target=lambda: answer.update(
            zip(("status", "body"), daemon.api("POST", "/api/replay", {"channel": "bulk", "status": "error"}))))
        replay.start()
        live, latencies = 0, []
        while replay.is_alive() or live < 5:
            started = time.monotonic()
            assert client.request(hl7(f"LIVE-{live:03d}"))["code"] == "AA"
            latencies.append(time.monotonic() - started)
            live += 1
        replay.join()
        client.close()
        assert answer["status"] == 200 and answer["body"]["replayed"] == count
        wait_for(lambda: len(peer.received) == before + count + live, timeout=60, what="replayed and live delivered")
        again = [c for c in peer.control_ids()[before:] if c.startswith("BULK-")]
        assert again == [f"BULK-{n:04d}" for n in range(count)]          # in order, each once
        assert max(latencies) < 2.0, f"a live ACK took {max(latencies):.2f}s during the replay"
    finally:
        daemon.stop()
        peer.close()
