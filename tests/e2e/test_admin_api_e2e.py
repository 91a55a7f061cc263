"""The admin API through the real daemon: tokens (refused before the body is read), channels and
their start/stop/pause, message views and searches in the audit log, and /metrics as Prometheus
text with the right counts."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.daemon import ADMIN_TOKEN, Daemon, MllpClient, MllpPeer, ack_for, api_call, hl7, relay_channel, wait_for

pytestmark = pytest.mark.slow

COUNTED = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[filter]]
when = "msg['MSH.9.1'] != 'DFT'"

[[transform]]
inline = "{% if msg['MSH.9.1'] == 'BAR' %}{{ no_such_name }}{% endif %}account {{ msg['PID.18.1'] }}"

[metadata]
mrn = "PID.3.1"

[[destination]]
name = "files"
type = "file"
directory = "{outbox}"
"""

RELAY_RETRY = 'ack_timeout = "20s"\nretry = { interval = "100ms", backoff = 1.0, max_interval = "100ms" }'


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("admin")
    gate = threading.Event()
    gate.set()
    peer = MllpPeer(lambda payload: ack_for(payload, "AA") if gate.wait(30) else None)
    daemon = Daemon(root / "d", {"counted": COUNTED.replace("{outbox}", str(root / "outbox")),
                                 "relay": relay_channel(peer.port, RELAY_RETRY)},
                    extra_config='tokens = { ops = "ops-token-0123456789" }\n')
    daemon.start(2)
    yield daemon, peer, gate
    gate.set()
    daemon.stop()
    peer.close()


def metrics(daemon) -> dict:
    status, text = daemon.api("GET", "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz_needs_no_token(world):
    daemon, _peer, _gate = world
    assert daemon.api("GET", "/healthz", token=None) == (200, {"status": "ok"})


@pytest.mark.parametrize("path", ["/api/channels", "/api/messages", "/api/messages/1", "/metrics",
                                  "/healthz/", "/api/nothing"])   # dashboard pages: test_dashboard_e2e.py
@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN + "x", ""])
def test_no_token_no_answer(world, path, token):
    daemon, _peer, _gate = world
    status, body = daemon.api("GET", path, token=token)
    assert status == 401
    assert "bearer token" in body["error"]


def test_refused_before_the_body_is_read(world):
    """A request announcing a 10 MB body it never sends is answered 401 at once: had the daemon
    waited for the body, this read would time out."""
    daemon, _peer, _gate = world
    with socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=5) as sock:
        sock.sendall(b"POST /api/replay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer not-the-token\r\nContent-Length: 10000000\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert b"www-authenticate: bearer" in head.lower()
    assert "bearer token" in json.loads(body)["error"]


def test_a_body_too_large_is_refused_with_a_token(world):
    daemon, _peer, _gate = world
    with socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=5) as sock:
        sock.sendall(b"POST /api/replay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode()
                     + b"\r\nContent-Length: 10000000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def test_unknown_paths_and_methods_answer_json(world):
    daemon, _peer, _gate = world
    assert daemon.api("GET", "/api/nothing")[0] == 404
    assert daemon.api("GET", "/api/channels/no-such-channel") == (404, {"error": "no channel named 'no-such-channel'"})
    status, body = daemon.api("DELETE", "/api/channels")
    assert status == 405 and body["error"] == "use GET"
    status, body = daemon.api("GET", "/api/messages?colour=red")
    assert status == 400 and "unknown filter 'colour'" in body["error"]
    status, body = daemon.api("POST", "/api/replay", {"ids": [1], "channel": "relay"})
    assert status == 400 and "either ids or a channel" in body["error"]


def test_channels_list(world):
    daemon, _peer, _gate = world
    status, channels = daemon.api("GET", "/api/channels")
    assert status == 200
    by_name = {channel["name"]: channel for channel in channels}
    assert set(by_name) == {"counted", "relay"}
    relay = by_name["relay"]
    assert relay["state"] == "started" and relay["address"] == f"127.0.0.1:{daemon.ports['relay']}"
    assert {"received", "filtered", "queued", "sent", "errored"} <= set(relay)
    assert [d["name"] for d in relay["destinations"]] == ["peer"]
    assert set(relay["destinations"][0]) >= {"name", "depth", "oldest_queued_age", "last_error"}
    assert daemon.api("GET", "/api/channels/relay") == (200, relay)


def test_metrics_parse_with_the_right_counts(world):
    daemon, _peer, _gate = world
    client = MllpClient(daemon.ports["counted"])
    for number in range(5):
        assert client.request(hl7(f"M-A{number}", mrn="ZZMETRICMRN"))["code"] == "AA"
    for number in range(2):
        assert client.request(hl7(f"M-D{number}", msg_type="DFT^P03"))["code"] == "AA"
    assert client.request(hl7("M-B0", msg_type="BAR^P01"))["code"] == "AA"
    client.close()
    sent_key = ("switchboard_messages_sent_total", (("channel", "counted"), ("destination", "files")))
    samples = wait_for(lambda: (s := metrics(daemon)).get(sent_key) == 5 and s, what="five messages sent")

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("switchboard_messages_received_total", channel="counted") == 8
    assert value("switchboard_messages_filtered_total", channel="counted") == 2
    assert value("switchboard_messages_errored_total", channel="counted", destination="") == 1
    assert value("switchboard_messages_errored_total", channel="counted", destination="files") == 0
    assert value("switchboard_ingest_latency_seconds_count", channel="counted") == 8
    assert value("switchboard_delivery_latency_seconds_count", channel="counted", destination="files") == 5
    assert value("switchboard_queue_depth", channel="counted", destination="files") == 0
    assert value("switchboard_queue_oldest_age_seconds", channel="counted", destination="files") == 0
    assert value("switchboard_channel_state", channel="counted", state="started") == 1
    assert value("switchboard_channel_state", channel="counted", state="paused") == 0
    assert value("switchboard_store_size_bytes") > 0
    assert "ZZMETRICMRN" not in daemon.api("GET", "/metrics")[1]


def test_pause_stops_the_source_and_the_queue_drains(world):
    daemon, peer, gate = world
    gate.clear()                                   # the peer holds its ACKs
    before = len(peer.received)
    client = MllpClient(daemon.ports["relay"])
    for number in range(3):
        assert client.request(hl7(f"PAUSE-{number}"))["code"] == "AA"
    client.close()
    wait_for(lambda: len(peer.received) > before, what="the first message at the peer")
    status, channel = daemon.api("POST", "/api/channels/relay/pause")
    assert status == 200 and channel["state"] == "paused" and channel["address"] is None
    with pytest.raises(ConnectionRefusedError):
        MllpClient(daemon.ports["relay"], timeout=5)
    gate.set()                                     # the destination keeps sending while paused
    wait_for(lambda: [c for c in peer.control_ids() if c.startswith("PAUSE-")] == ["PAUSE-0", "PAUSE-1", "PAUSE-2"],
             what="all three delivered while paused")
    assert daemon.api("GET", "/api/channels/relay")[1]["state"] == "paused"
    status, channel = daemon.api("POST", "/api/channels/relay/start")
    assert status == 200 and channel["state"] == "started"
    host, port = channel["address"].split(":")
    again = MllpClient(int(port), host=host)
    assert again.request(hl7("PAUSE-AFTER"))["code"] == "AA"
    again.close()
    wait_for(lambda: "PAUSE-AFTER" in peer.control_ids(), what="delivery after the restart")


def test_stop_and_start(world):
    daemon, peer, _gate = world
    client = MllpClient(daemon.ports["relay"])
    assert client.request(hl7("STOP-0"))["code"] == "AA"
    client.close()
    sent = wait_for(lambda: daemon.api("GET", "/api/messages?control_id=STOP-0&status=sent")[1], what="STOP-0 sent")[0]
    status, channel = daemon.api("POST", "/api/channels/relay/stop")
    assert (status, channel["state"]) == (200, "stopped")
    address = daemon.api("GET", "/api/channels/relay")[1]
    assert address["address"] is None
    status, body = daemon.api("POST", "/api/channels/relay/pause")
    assert status == 409 and "only a started channel can be paused" in body["error"]
    # a replay while stopped is queued, and goes out once the channel starts again
    status, result = daemon.api("POST", f"/api/messages/{sent['id']}/replay")
    assert status == 200 and result["ids"] == [sent["id"]] and result["statuses"] == {"QUEUED": 1}
    count = peer.control_ids().count(sent["control_id"])
    assert daemon.api("POST", "/api/channels/relay/start")[1]["state"] == "started"
    wait_for(lambda: peer.control_ids().count(sent["control_id"]) == count + 1, what="the replayed message")


def test_views_and_searches_are_audited_by_token_name(world):
    daemon, _peer, _gate = world
    client = MllpClient(daemon.ports["counted"])
    assert client.request(hl7("AUDIT-1", mrn="ZZAUDITMRN"))["code"] == "AA"
    client.close()
    found = wait_for(lambda: daemon.api("GET", "/api/messages?meta.mrn=ZZAUDITMRN&channel=counted",
                                        token="ops-token-0123456789")[1], what="the message found")
    (row,) = found
    status, message = daemon.api("GET", f"/api/messages/{row['id']}")
    assert status == 200 and "ZZAUDITMRN" in message["raw"]
    result = daemon.cli("audit", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    views = [r for r in rows if r["action"] == "view" and r["target"] == f"message:{row['id']}"]
    assert views and views[0]["who"] == "admin"
    searches = [r for r in rows if r["action"] == "search" and r["who"] == "ops"]
    assert searches and searches[0]["detail"]["filters"]["meta_keys"] == ["mrn"]
    assert row["id"] in searches[0]["detail"]["ids"]
    assert "ZZAUDITMRN" not in result.stdout        # a meta value may be patient data: keys only
    assert daemon.cli("audit", "--verify").returncode == 0


def test_generated_token_file(tmp_path):
    daemon = Daemon(tmp_path / "d", {})
    daemon.config.write_text(daemon.config.read_text().replace('token = "test-token"\n', ""))
    daemon.start()
    try:
        path = daemon.root / "var" / "admin.token"
        token = path.read_text().strip()
        assert len(token) >= 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert str(path) in daemon.log and token not in daemon.log
        assert daemon.api("GET", "/api/channels", token=token) == (200, [])
        assert daemon.api("GET", "/api/channels")[0] == 401            # no default token
        listed = daemon.cli("replay", "--channel", "none", "--dry-run")    # the CLI reads the file
        assert listed.returncode == 1 and "no channel named 'none'" in listed.stderr
    finally:
        daemon.stop()
    restarted = daemon.start()
    try:
        assert api_call(restarted.admin_port, "GET", "/api/channels", token=token)[0] == 200  # kept, not replaced
    finally:
        restarted.stop()
