"""The channel pipeline through the real daemon: filters, transforms, destinations, queue, recovery."""

from __future__ import annotations

import json
import signal

import pytest

from support.pg import store_backend  # noqa: F401 - a fixture
from support.daemon import (Daemon, MllpClient, MllpPeer, ack_for, control_id_of, delivered_files, first_seen, free_port,
                     hl7, relay_channel, wait_for)

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "500ms" }'


def mllp_source(extra: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n{extra}\n[metadata]\naccount = "PID.18.1"\n'


def to_ehr(port: int, extra: str = "", retry: str = FAST_RETRY) -> str:
    """An MLLP source channel (with its account metadata) and one MLLP destination "ehr" on ``port``."""
    return relay_channel(port, f"{extra}\n{retry}", name="ehr") + '[metadata]\naccount = "PID.18.1"\n'


def send_all(daemon, channel: str, ids: list[str]) -> None:
    """Send each control id's message and require an AA for each, in order."""
    client = MllpClient(daemon.ports[channel])
    for control_id in ids:
        assert client.request(hl7(control_id))["code"] == "AA"
    client.close()


def test_filter_and_transform_results_in_files(tmp_path):
    outbox = tmp_path / "outbox"
    channel = mllp_source() + f"""
[[filter]]
when = "msg['MSH.9.1'] == 'ADT'"

[[transform]]
template = "summary.json.j2"
outbound = "json"

[[destination]]
name = "files"
type = "file"
directory = "{outbox}"
filename = "{{{{ meta.account }}}}-{{{{ id }}}}.json"

[[destination]]
name = "only-big"
type = "file"
directory = "{tmp_path / 'big'}"
  [[destination.filter]]
  when = "msg['PID.18.1'] == 'BIG'"
"""
    template = '{"account": {{ msg["PID.18.1"] | tojson }}, "name": {{ msg["PID.5.1"] | tojson }}}\n'
    daemon = Daemon(tmp_path / "d", {"pipe": channel}, templates={"summary.json.j2": template}).start(1)
    try:
        client = MllpClient(daemon.ports["pipe"])
        assert client.request(hl7("P-1", account="A1"))["code"] == "AA"
        assert client.request(hl7("P-2", msg_type="DFT^P03", account="A2"))["code"] == "AA"
        assert client.request(hl7("P-3", account="BIG"))["code"] == "AA"
        client.close()
        files = wait_for(lambda: sorted(p.name for p in outbox.glob("*.json")) if len(list(outbox.glob("*.json"))) == 2 else None,
                         what="two transformed files")
        assert files[0].startswith("A1-") and files[1].startswith("BIG-")
        assert json.loads((outbox / files[0]).read_text()) == {"account": "A1", "name": "DOE"}
        assert not list(outbox.glob(".*"))  # no temp file left behind
        big = wait_for(lambda: delivered_files(tmp_path / "big"), what="the destination-filtered file")
        assert len(big) == 1 and json.loads(big[0].read_text())["account"] == "BIG"
        filtered = daemon.cli_json("messages", "--control-id", "P-2")[0]
        assert filtered["status"] == "FILTERED"
        first = daemon.wait_status(daemon.cli_json("messages", "--control-id", "P-1")[0]["id"], "SENT")
        dests = {d["name"]: d["status"] for d in first["destinations"]}
        assert dests == {"files": "SENT", "only-big": "FILTERED"}
        assert json.loads(first["transformed"])["account"] == "A1"
        assert daemon.cli_json("messages", "--meta", "account=BIG")[0]["control_id"] == "P-3"
    finally:
        daemon.stop()


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)
def test_downstream_down_then_up_receives_all_in_order(tmp_path, store_backend):
    port = free_port()
    daemon = store_backend(Daemon(tmp_path / "d", {"down": to_ehr(port, 'ack_timeout = "2s"')})).start(1)
    peer = None
    try:
        ids = [f"ORD-{i}" for i in range(30)]
        send_all(daemon, "down", ids)
        first = daemon.cli_json("messages", "--control-id", "ORD-0")[0]
        wait_for(lambda: any(d["attempts"] for d in daemon.cli_json("show", str(first["id"]))["destinations"]),
                 what="a failed attempt while the peer is down")
        peer = MllpPeer(port=port)
        wait_for(lambda: len(set(peer.control_ids())) >= 30, timeout=20, what="all 30 delivered")
        assert first_seen(peer.control_ids()) == ids
        shown = daemon.wait_status(first["id"], "SENT")
        attempts = shown["destinations"][0]["attempts"]
        assert not attempts[0]["ok"] and attempts[-1]["ok"]
        assert "Starting factory" not in daemon.log  # reconnects are not logged line by line
    finally:
        daemon.stop()
        if peer:
            peer.close()


def test_nak_marks_only_that_message_error(tmp_path):
    peer = MllpPeer(lambda payload: ack_for(payload, "AE" if control_id_of(payload) == "NAK-2" else "AA"))
    daemon = Daemon(tmp_path / "d", {"nak": to_ehr(peer.port)}).start(1)
    try:
        send_all(daemon, "nak", [f"NAK-{i}" for i in range(1, 5)])
        wait_for(lambda: peer.control_ids() == ["NAK-1", "NAK-2", "NAK-3", "NAK-4"], what="all four sent once")
        statuses = {}
        for i in range(1, 5):
            row = daemon.cli_json("messages", "--control-id", f"NAK-{i}")[0]
            statuses[f"NAK-{i}"] = daemon.wait_status(row["id"], "ERROR" if i == 2 else "SENT")
        error_dest = statuses["NAK-2"]["destinations"][0]
        assert error_dest["status"] == "ERROR"
        assert "MSA|AE|NAK-2" in error_dest["attempts"][-1]["response"]
        assert len(error_dest["attempts"]) == 1  # permanent: not retried
        assert daemon.cli_json("messages", "--status", "error")[0]["control_id"] == "NAK-2"
    finally:
        daemon.stop()
        peer.close()


class HoldingPeer(MllpPeer):
    """Answers nothing until ``hold`` frames have arrived, then all of them in order, then each at
    once: only a sender with ``hold`` messages in flight gets past the start.  AE for ``refuse``."""

    def __init__(self, hold: int, refuse: str) -> None:
        self.hold, self.refuse, self.held = hold, refuse, []
        super().__init__()

    def answer(self, conn, payload: bytes) -> bool:
        self.held.append(payload)
        if len(self.received) < self.hold:
            return True
        held, self.held = self.held, []
        for frame in held:
            code = "AE" if control_id_of(frame) == self.refuse else "AA"
            self.responder = lambda payload, code=code: ack_for(payload, code)
            if not super().answer(conn, frame):
                return False
        return True


def test_pipelined_destination_keeps_several_in_flight_and_order(tmp_path):
    peer = HoldingPeer(hold=4, refuse="PIPE-6")
    daemon = Daemon(tmp_path / "d", {"pipe": to_ehr(peer.port, 'ack_timeout = "5s"\nmax_in_flight = 4')}).start(1)
    try:
        ids = [f"PIPE-{i}" for i in range(1, 21)]
        send_all(daemon, "pipe", ids)
        wait_for(lambda: len(peer.received) >= 20, timeout=20, what="all 20 delivered")
        assert peer.control_ids() == ids  # once each, in order: nothing timed out and was re-sent
        last = daemon.cli_json("messages", "--control-id", "PIPE-20")[0]
        daemon.wait_status(last["id"], "SENT")
        refused = daemon.cli_json("messages", "--control-id", "PIPE-6")[0]
        assert daemon.wait_status(refused["id"], "ERROR")["destinations"][0]["attempts"][0]["ok"] is False
        assert {row["control_id"] for row in daemon.cli_json("messages", "--status", "sent", "--limit", "50")} == \
            set(ids) - {"PIPE-6"}
    finally:
        daemon.stop()
        peer.close()


def test_template_bug_errors_messages_and_daemon_keeps_serving(tmp_path):
    outbox = tmp_path / "outbox"
    broken = mllp_source() + f"""
[[transform]]
template = "broken.j2"

[[destination]]
name = "files"
type = "file"
directory = "{outbox}"
"""
    healthy = mllp_source() + f"""
[[destination]]
name = "files"
type = "file"
directory = "{tmp_path / 'healthy'}"
"""
    template = "line one\n{{ msg['PID.3.1'] }}\n{{ no_such_name.attr }}\n"
    daemon = Daemon(tmp_path / "d", {"broken": broken, "healthy": healthy},
                    templates={"broken.j2": template}).start(2)
    try:
        client = MllpClient(daemon.ports["broken"])
        for i in range(3):
            assert client.request(hl7(f"TB-{i}"))["code"] == "AA"
        client.close()
        row = daemon.cli_json("messages", "--control-id", "TB-0")[0]
        shown = daemon.wait_status(row["id"], "ERROR")
        assert "broken.j2 line 3" in shown["error"] and "no_such_name" in shown["error"]
        other = MllpClient(daemon.ports["healthy"])
        assert other.request(hl7("TB-OK"))["code"] == "AA"
        other.close()
        wait_for(lambda: delivered_files(tmp_path / "healthy"), what="the healthy channel's file")
        again = MllpClient(daemon.ports["broken"])
        assert again.request(hl7("TB-3"))["code"] == "AA"
        again.close()
        assert not outbox.exists() or not list(outbox.iterdir())
    finally:
        daemon.stop()


@pytest.mark.parametrize("store_backend", ["sqlite", "postgres"], indirect=True)
def test_kill_mid_queue_loses_nothing(tmp_path, store_backend):
    port = free_port()
    daemon = store_backend(Daemon(tmp_path / "d", {"crash": to_ehr(port)})).start(1)
    peer = None
    try:
        ids = [f"KILL-{i}" for i in range(40)]
        send_all(daemon, "crash", ids)
        daemon.kill()  # SIGKILL with everything QUEUED (the peer is down)
        peer = MllpPeer(port=port)
        daemon.start(1)
        wait_for(lambda: set(ids) <= set(peer.control_ids()), timeout=20, what="every ACKed message delivered")
        assert first_seen(peer.control_ids()) == ids
    finally:
        daemon.stop()
        if peer:
            peer.close()


def test_kill_between_ack_and_processing_recovers(tmp_path):
    """Messages stored RECEIVED (ACKed, never processed) are processed at the next start."""
    outbox = tmp_path / "outbox"
    channel = mllp_source() + f"""
[[destination]]
name = "files"
type = "file"
directory = "{outbox}"
"""
    daemon = Daemon(tmp_path / "d", {"rec": channel}).start(1)
    client = MllpClient(daemon.ports["rec"])
    assert client.request(hl7("REC-1"))["code"] == "AA"
    client.close()
    daemon.stop()
    import sqlite3

    with sqlite3.connect(daemon.db) as conn:  # put it back to the state a crash after the ACK leaves
        conn.execute("DELETE FROM deliveries")
        conn.execute("UPDATE messages SET status = 'RECEIVED', transformed = NULL")
    for path in outbox.glob("*"):
        path.unlink()
    daemon.start(1)
    try:
        wait_for(lambda: delivered_files(outbox), what="the recovered message delivered")
        assert any("stored before the last stop" in line for line in daemon.log_lines)
    finally:
        daemon.stop()


def test_resent_message_is_delivered_once(tmp_path):
    peer = MllpPeer()
    daemon = Daemon(tmp_path / "d", {"dup": to_ehr(peer.port, retry="")}).start(1)
    try:
        client = MllpClient(daemon.ports["dup"])
        first = hl7("DUP-1")
        assert client.request(first)["code"] == "AA"
        assert client.request(first)["code"] == "AA"       # the sender lost our ACK and re-sent
        changed = hl7("DUP-1", account="OTHER")             # same control id, other content: new
        assert client.request(changed)["code"] == "AA"
        client.close()
        wait_for(lambda: len(peer.received) >= 2, what="deliveries")
        rows = daemon.cli_json("messages", "--control-id", "DUP-1")
        assert len(rows) == 2
        for row in rows:
            daemon.wait_status(row["id"], "SENT")
        assert peer.control_ids() == ["DUP-1", "DUP-1"]
        assert peer.received[0] != peer.received[1]
    finally:
        daemon.stop()
        peer.close()


def test_ack_processed_answers_ae_when_processing_fails(tmp_path):
    channel = mllp_source('ack = "processed"') + f"""
[[transform]]
inline = "{{{{ msg['PID.3.1'] | int // 0 }}}}"

[[destination]]
name = "files"
type = "file"
directory = "{tmp_path / 'out'}"
"""
    daemon = Daemon(tmp_path / "d", {"proc": channel}).start(1)
    try:
        client = MllpClient(daemon.ports["proc"])
        ack = client.request(hl7("PROC-1", mrn="12"))
        client.close()
        assert ack["code"] == "AE" and ack["control_id"] == "PROC-1"
        assert any(segment.startswith("ERR") for segment in ack["segments"])
        assert daemon.cli_json("messages", "--control-id", "PROC-1")[0]["status"] == "ERROR"
    finally:
        daemon.stop()


def test_graceful_stop_on_sigint(tmp_path):
    daemon = Daemon(tmp_path / "d", {"stopme": mllp_source()}).start(1)
    client = MllpClient(daemon.ports["stopme"])
    assert client.request(hl7("STOP-1"))["code"] == "AA"
    code = daemon.stop(signal.SIGINT)
    client.close()
    assert code == 0
    assert any("switchboard stopped" in line for line in daemon.log_lines)


def test_ack_none_stores_without_answering(tmp_path):
    daemon = Daemon(tmp_path / "d", {"quiet": mllp_source('ack = "none"')}).start(1)
    try:
        client = MllpClient(daemon.ports["quiet"])
        client.send(hl7("QUIET-1"))
        wait_for(lambda: daemon.cli_json("messages", "--control-id", "QUIET-1"), what="stored")
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.read_frame()
        client.close()
    finally:
        daemon.stop()
