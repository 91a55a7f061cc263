"""MLLP ingest through the real daemon: store before ACK, and RELIABILITY 1-17 over real sockets."""

from __future__ import annotations

import sqlite3

import pytest

from support.daemon import MLLP_CHANNEL, Daemon, MllpClient, hl7, sample, wait_for

pytestmark = pytest.mark.slow


def channel(source_extra: str = "") -> str:
    return MLLP_CHANNEL.format(source_extra=source_extra)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    d = Daemon(root, {
        "inbound": channel('idle_timeout = "1s"\nmax_message_size = "64KB"\nmax_connections = 3'),
        "batches": channel('split = "hl7-batch"'),
        "capped": channel('idle_timeout = "1s"\nmax_connections = 2'),
    })
    d.start(expect_channels=3)
    yield d
    d.stop()


def stored_control_ids(daemon: Daemon, channel_name: str = "inbound") -> list[str]:
    with sqlite3.connect(daemon.db) as conn:
        return [row[0] for row in conn.execute(
            "SELECT control_id FROM messages WHERE channel = ? ORDER BY id", (channel_name,))]


def test_aa_after_store_and_listed(daemon):
    client = MllpClient(daemon.ports["inbound"])
    ack = client.request(hl7("E2E-1"))
    client.close()
    assert ack["code"] == "AA" and ack["control_id"] == "E2E-1"
    # stored before the ACK: the row is there the moment we read it, no waiting
    assert "E2E-1" in stored_control_ids(daemon)
    listed = daemon.cli_json("messages", "--control-id", "E2E-1")
    assert [m["control_id"] for m in listed] == ["E2E-1"]
    assert listed[0]["type"] == "ADT^A08" and listed[0]["meta"]["mrn"] == "MRN1"


def test_ack_mirrors_msh(daemon):
    client = MllpClient(daemon.ports["inbound"])
    ack = client.request(hl7("E2E-MIRROR"))
    client.close()
    msh = ack["segments"][0].split("|")
    assert msh[2:6] == ["SWB", "AGENCY", "EHR", "HOSP"]   # sender and receiver swapped
    assert msh[10] == "P" and msh[11] == "2.5"


def test_junk_before_start_byte(daemon):  # RELIABILITY 1
    client = MllpClient(daemon.ports["inbound"])
    client.send_raw(b"\x00\x00junk\r\n")
    ack = client.request(hl7("E2E-JUNK"))
    client.close()
    assert ack["code"] == "AA"
    assert not any("junk" in line and "E2E" in line for line in daemon.log_lines)
    wait_for(lambda: any("discarded 8 bytes" in line for line in daemon.log_lines), what="junk warning")


def test_unframed_hl7_is_not_stored_and_closed_on_idle(daemon):  # RELIABILITY 2
    client = MllpClient(daemon.ports["inbound"])
    client.send_raw(hl7("E2E-UNFRAMED").encode())
    assert client.closed_by_peer(timeout=5)
    client.close()
    assert "E2E-UNFRAMED" not in stored_control_ids(daemon)


@pytest.mark.parametrize("tail", [b"\x1cX", b"\x1c\x1c\x0d"])
def test_bad_end_byte_answers_ar_and_closes(daemon, tail):  # RELIABILITY 3, 4, 7
    client = MllpClient(daemon.ports["inbound"])
    client.send_raw(b"\x0b" + hl7("E2E-BADEND").encode() + tail + b"more")
    frame = client.read_frame()
    assert b"MSA|AR" in frame
    assert client.closed_by_peer(timeout=5)
    client.close()
    assert "E2E-BADEND" not in stored_control_ids(daemon)


def test_partial_frame_discarded_after_idle(daemon):  # RELIABILITY 5
    client = MllpClient(daemon.ports["inbound"])
    client.send_raw(b"\x0b" + hl7("E2E-PARTIAL").encode()[:40])
    assert client.closed_by_peer(timeout=5)
    client.close()
    assert "E2E-PARTIAL" not in stored_control_ids(daemon)


def test_start_byte_inside_message_is_ar(daemon):  # RELIABILITY 6
    client = MllpClient(daemon.ports["inbound"])
    text = hl7("E2E-VT")
    ack = client.request(text[:30] + "\x0b" + text[30:])
    client.close()
    assert ack["code"] == "AR"
    assert "E2E-VT" not in stored_control_ids(daemon)


def test_oversize_frame_closes_connection(daemon):  # RELIABILITY 8
    client = MllpClient(daemon.ports["inbound"])
    client.send_raw(b"\x0b" + b"MSH|^~\\&|" + b"A" * (70 * 1024))
    assert client.closed_by_peer(timeout=5)
    client.close()
    follow = MllpClient(daemon.ports["inbound"])
    assert follow.request(hl7("E2E-AFTER-BIG"))["code"] == "AA"
    follow.close()


def test_coalesced_frames_each_acked_in_order(daemon):  # RELIABILITY 9
    client = MllpClient(daemon.ports["inbound"])
    ids = [f"E2E-CO-{i}" for i in range(20)]
    client.send_raw(b"".join(b"\x0b" + hl7(i).encode() + b"\x1c\x0d" for i in ids))
    acks = [client.read_frame() for _ in ids]
    client.close()
    assert [a.split(b"MSA|AA|")[1].split(b"\r")[0].decode() for a in acks] == ids
    stored = stored_control_ids(daemon)
    assert [s for s in stored if s.startswith("E2E-CO-")] == ids


def test_one_byte_at_a_time(daemon):  # RELIABILITY 10
    client = MllpClient(daemon.ports["inbound"])
    data = b"\x0b" + hl7("E2E-DRIP").encode() + b"\x1c\x0d"
    for i in range(len(data)):
        client.send_raw(data[i:i + 1])
    frame = client.read_frame()
    client.close()
    assert b"MSA|AA|E2E-DRIP" in frame


def test_connection_cap_and_idle_timeout(daemon):  # RELIABILITY 11
    port = daemon.ports["capped"]
    clients = [MllpClient(port) for _ in range(2)]
    for number, client in enumerate(clients):
        assert client.request(hl7(f"E2E-CAP-{number}"))["code"] == "AA"
    try:
        extra = MllpClient(port)
    except ConnectionError:
        pass  # refused while connecting: as good as closed at once
    else:
        assert extra.closed_by_peer(timeout=5)
        extra.close()
    assert all(c.closed_by_peer(timeout=5) for c in clients)  # idle_timeout = 1s closes them
    for c in clients:
        c.close()
    fresh = wait_for(lambda: _admitted(port), what="a connection once the idle ones were closed")
    assert fresh.request(hl7("E2E-CAP"))["code"] == "AA"
    fresh.close()


def _admitted(port: int):
    client = MllpClient(port)
    try:
        client.send(hl7("E2E-CAP-PROBE"))
        client.read_frame()
    except ConnectionError:
        client.close()
        return None
    return client


def test_empty_frame_is_ar_with_empty_msa2(daemon):  # RELIABILITY 12
    client = MllpClient(daemon.ports["inbound"])
    ack = client.request(b"")
    client.close()
    assert ack["code"] == "AR" and ack["control_id"] == ""


def test_batch_split_or_rejected(daemon):  # RELIABILITY 13
    batch = "\r".join(["FHS|^~\\&|EHR", "BHS|^~\\&|EHR", hl7("E2E-B1"), hl7("E2E-B2"), "BTS|2", "FTS|1"])
    client = MllpClient(daemon.ports["inbound"])
    assert client.request(batch)["code"] == "AR"
    client.close()
    splitter = MllpClient(daemon.ports["batches"])
    assert splitter.request(batch)["code"] == "AA"
    splitter.close()
    assert stored_control_ids(daemon, "batches")[-2:] == ["E2E-B1", "E2E-B2"]
    assert "E2E-B1" not in stored_control_ids(daemon, "inbound")


def test_missing_control_id_or_short_msh_is_ar(daemon):  # RELIABILITY 14
    client = MllpClient(daemon.ports["inbound"])
    assert client.request(hl7("")).get("code") == "AR"
    assert client.request("MSH|^~\\&|EHR|HOSP|SWB|AGENCY|2024||ADT^A08|SHORT-1")["code"] == "AR"
    client.close()
    assert "SHORT-1" not in stored_control_ids(daemon)


def test_unusual_delimiters(daemon):  # RELIABILITY 15
    text = hl7("E2E-DELIM").replace("|", "#").replace("^", "$")
    text = text.replace("MSH#$~\\&", "MSH#$~\\&")
    client = MllpClient(daemon.ports["inbound"])
    ack = client.request(text)
    client.close()
    assert ack["sep"] == "#"
    assert ack["code"] == "AA" and ack["control_id"] == "E2E-DELIM"


def test_lf_and_crlf_segment_endings(daemon):  # RELIABILITY 16
    client = MllpClient(daemon.ports["inbound"])
    assert client.request(hl7("E2E-LF").replace("\r", "\n"))["code"] == "AA"
    assert client.request(hl7("E2E-CRLF").replace("\r", "\r\n"))["code"] == "AA"
    client.close()
    for control_id in ("E2E-LF", "E2E-CRLF"):
        message = daemon.cli_json("messages", "--control-id", control_id)[0]
        raw = daemon.cli_json("show", str(message["id"]))["raw"]
        assert "\n" not in raw and raw.count("\r") == 4 and raw.endswith("\r")   # every segment ends with CR (§3.5)


def test_invalid_bytes_for_charset(daemon):  # RELIABILITY 17
    payload = hl7("E2E-BYTES").encode().replace(b"DOE", b"D\xff\xfeE")
    client = MllpClient(daemon.ports["inbound"])
    assert client.request(payload)["code"] == "AA"
    client.close()
    message = daemon.cli_json("messages", "--control-id", "E2E-BYTES")[0]
    assert "\ufffd" in daemon.cli_json("show", str(message["id"]))["raw"]


def test_real_samples_are_accepted(daemon):
    client = MllpClient(daemon.ports["inbound"])
    for name in ("ADT-A08-01.hl7", "DFT-P03-01.hl7", "BAR-P01-01.hl7"):
        ack = client.request(sample(name))
        assert ack["code"] == "AA", name
    client.close()


def test_status_counts(daemon):
    rows = {row["name"]: row for row in daemon.cli_json("status")}
    assert rows["inbound"]["received"] >= 5
    assert rows["inbound"]["received"] == len(stored_control_ids(daemon))


def test_no_content_in_log(daemon):
    marker = "ZZMARKER4711"
    client = MllpClient(daemon.ports["inbound"])
    assert client.request(hl7("E2E-MARK", mrn=marker))["code"] == "AA"
    client.request(hl7("E2E-MARK2", mrn=marker)[:20])
    client.close()
    wait_for(lambda: "E2E-MARK" in stored_control_ids(daemon), what="marker stored")
    assert marker not in daemon.log


def test_locked_store_answers_ae_then_recovers(tmp_path):  # RELIABILITY 26, promise 1
    """Another process holds the database's write lock: never AA; AE once the commit fails; AA again
    once the lock is gone, without restarting the daemon."""
    daemon = Daemon(tmp_path / "d", {"locked": channel()}).start(1)
    try:
        client = MllpClient(daemon.ports["locked"], timeout=30)
        assert client.request(hl7("LOCK-0"))["code"] == "AA"
        blocker = sqlite3.connect(daemon.db, isolation_level=None, timeout=1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            ack = client.request(hl7("LOCK-1"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert ack["code"] == "AE" and ack["control_id"] == "LOCK-1"
        assert any(segment.startswith("ERR") for segment in ack["segments"])
        assert client.request(hl7("LOCK-2"))["code"] == "AA"
        client.close()
        assert "LOCK-1" not in stored_control_ids(daemon, "locked")
        assert "LOCK-2" in stored_control_ids(daemon, "locked")
    finally:
        daemon.stop()
