"""RELIABILITY.md, case by case: one test per numbered case, through the real daemon.

Each case is also proven at more length elsewhere (tests/e2e/test_ingest_e2e.py 1-17 and 26,
test_pipeline_e2e.py 18, 21, 23, 25, test_templates.py 19-22, test_http_source_e2e.py 27-30,
test_file_source_e2e.py 31-33); this file stands on its own and names the number, so that
"is every promise tested?" is answered by reading one list.  One module-scoped daemon serves
every case that can share it (MLLP, HTTP, mutual-TLS HTTP and file sources, templates, three
downstream peers); 11 (shutdown with open connections) and 26 (a locked database) need a daemon
of their own.  Stored rows are read from SQLite directly (read-only) and engine events through a
small ``message_event`` plugin writing JSON lines: both are the daemon's real outputs.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.daemon import (Daemon, MllpClient, MllpPeer, ack_for, control_id_of, free_port, hl7, parse_ack,
                     wait_for)

from engine.hl7.view import HL7View

pytestmark = pytest.mark.slow

TOKEN = "catalogue-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "500ms" }'

EVENTS_PLUGIN = '''
import json, os
from engine.hookspecs import hookimpl

@hookimpl
def message_event(event):
    with open(os.environ["CATALOGUE_EVENTS"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"kind": event.kind, "channel": event.channel, "id": event.message_id,
                              "destination": event.destination, "reason": event.reason}) + "\\n")
'''

ESCAPE_TEMPLATE = (
    "MSH|^~\\&|SWB|OUT|AGENCY|AG|20240101||ADT^A08|{{ msg['MSH.10'] | hl7_escape }}|P|2.5\n"
    "PID|1||{{ msg['PID.3.1'] | hl7_escape }}||{{ msg['PID.5.1'] | hl7_escape }}^{{ msg['PID.5.2'] | hl7_escape }}\n"
)
SANDBOX_TEMPLATE = ("{% if msg['PID.3.1'] == 'EVIL' %}{{ ''.__class__.__mro__ }}"
                    "{% elif msg['PID.3.1'] == 'DIV' %}{{ msg['PID.3.1'] | length // 0 }}{% endif %}"
                    "ok {{ msg['MSH.10'] }}")
LIMITS_TEMPLATE = ("{% if msg['PID.3.1'] == 'LOOP' %}"
                   "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                   "{% elif msg['PID.3.1'] == 'HUGE' %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
                   "{% endif %}ok {{ msg['MSH.10'] }}")


# -- a throwaway PKI for the mutual-TLS listener (case 28) --------------------------------------
def _issue(subject: str, issuer_key=None, issuer=None, *, ca=False, usage=None, sans=()):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write(directory: Path, stem: str, key, certificate) -> None:
    (directory / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> Path:
    directory.mkdir()
    ca_key, ca = _issue("Catalogue CA", ca=True)
    _write(directory, "ca", ca_key, ca)
    local = [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]
    _write(directory, "server", *_issue("localhost", ca_key, ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=local))
    _write(directory, "client", *_issue("client", ca_key, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    rogue_key, rogue = _issue("Rogue CA", ca=True)
    _write(directory, "rogue", *_issue("rogue", rogue_key, rogue, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    return directory


# -- the world: peers, then one daemon ---------------------------------------------------------
def mllp_channel(extra: str = "", tail: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n{extra}\n{tail}'


def transform_to_files(template: str, outbox: str, outbound: str = "text") -> str:
    return (f'[[transform]]\ntemplate = "{template}"\noutbound = "{outbound}"\n\n'
            f'[[destination]]\nname = "files"\ntype = "file"\ndirectory = "{outbox}"\n'
            'filename = "{{ id }}.out"\n')


def mllp_to(port: int, extra: str = "") -> str:
    return (f'[[destination]]\nname = "peer"\ntype = "mllp"\nconnect = "127.0.0.1:{port}"\n'
            f'{FAST_RETRY}\n{extra}\n')


def http_channel(path: str, inbound: str = "json", extra: str = "") -> str:
    return (f'inbound = "{inbound}"\n[source]\ntype = "http"\nlisten = "127.0.0.1:0"\npath = "{path}"\n'
            f'token = "{TOKEN}"\nmax_body = "4KB"\nmax_headers = 20\nmax_header_size = "4KB"\n{extra}\n')


class Downstream:
    """Case 23's peer: answers per control id (see ``answer``), counting what it saw."""

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        self.peer = MllpPeer(self.answer)

    def answer(self, payload: bytes) -> bytes:
        control_id = control_id_of(payload)
        self.seen[control_id] += 1
        first = self.seen[control_id] == 1
        if control_id in ("D-AE", "D-AR", "D-CE", "D-CR"):
            return ack_for(payload, control_id[2:])
        if first and control_id == "D-GARBAGE":
            return b"this is not an acknowledgment"
        if first and control_id == "D-WRONG":
            return b"MSH|^~\\&|PEER|PEER|SWB|SWB|20240101||ACK|A1|P|2.5\rMSA|AA|SOMEONE-ELSE"
        if first and control_id == "D-NOMSA":
            return b"MSH|^~\\&|PEER|PEER|SWB|SWB|20240101||ACK|A2|P|2.5"
        return ack_for(payload, "AA")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    pki = make_pki(root / "pki")
    downstream = Downstream()
    silent_once: Counter = Counter()

    def answer_after_a_silence(payload: bytes):
        silent_once[control_id_of(payload)] += 1
        return None if silent_once[control_id_of(payload)] == 1 else ack_for(payload, "AA")

    slow_peer = MllpPeer(answer_after_a_silence)
    refused_port = free_port()
    tls = (f'tls = {{ cert = "{pki / "server.pem"}", key = "{pki / "server.key"}", '
           f'client_ca = "{pki / "ca.pem"}" }}')
    channels = {
        "mllp": mllp_channel('idle_timeout = "1s"\nmax_message_size = "64KB"'),
        "lenient": mllp_channel("lenient_end_byte = true"),
        "batches": mllp_channel('split = "hl7-batch"'),
        "dup": mllp_channel(tail='[[destination]]\nname = "files"\ntype = "file"\ndirectory = "outbox/dup"\n'),
        "escape": mllp_channel(tail=transform_to_files("escape.hl7.j2", "outbox/escape", "hl7")),
        "sandbox": mllp_channel(tail=transform_to_files("sandbox.j2", "outbox/sandbox")),
        "limits": mllp_channel(tail=transform_to_files("limits.j2", "outbox/limits")),
        "downstream": mllp_channel(tail=mllp_to(downstream.peer.port)),
        "slowpeer": mllp_channel(tail=mllp_to(slow_peer.port, 'ack_timeout = "300ms"')),
        "refused": mllp_channel(tail=mllp_to(refused_port)),
        "http": http_channel("/in"),
        "xml": http_channel("/xml", "xml"),
        "mtls": http_channel("/tls", extra=tls),
        "files": ('[source]\ntype = "file"\npath = "inbox/files"\npattern = "*.hl7"\nsettle = "200ms"\n'
                  'split = "hl7-batch"\nmax_file_size = "64KB"\npoll_interval = "1s"\n'),
    }
    events_file = root / "events.jsonl"
    daemon = Daemon(root / "d", channels, plugins={"catalogue_events.py": EVENTS_PLUGIN},
                    templates={"escape.hl7.j2": ESCAPE_TEMPLATE, "sandbox.j2": SANDBOX_TEMPLATE,
                               "limits.j2": LIMITS_TEMPLATE},
                    env={"CATALOGUE_EVENTS": str(events_file)})
    (daemon.root / "inbox" / "files").mkdir(parents=True)
    daemon.start(expect_channels=len(channels) - 1)      # the file source does not listen
    world = {"daemon": daemon, "pki": pki, "events": events_file, "downstream": downstream,
             "slow_peer": slow_peer, "refused_port": refused_port}
    yield world
    daemon.stop()
    downstream.peer.close()
    slow_peer.close()


# -- helpers -------------------------------------------------------------------------------------
def query(daemon: Daemon, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def messages(daemon: Daemon, channel: str, control_id: str) -> list[tuple]:
    """(id, status, error, raw) of a channel's messages with this control id, oldest first."""
    return query(daemon, "SELECT id, status, error, raw FROM messages WHERE channel = ? AND control_id = ?"
                 " ORDER BY id", channel, control_id)


def wait_id_status(daemon: Daemon, message_id: int, status: str, timeout: float = 15.0) -> None:
    wait_for(lambda: query(daemon, "SELECT status FROM messages WHERE id = ?", message_id)[0][0] == status,
             timeout, what=f"message {message_id} to be {status}")


def wait_status(daemon: Daemon, channel: str, control_id: str, status: str, timeout: float = 15.0) -> tuple:
    def done():
        rows = messages(daemon, channel, control_id)
        return rows[-1] if rows and rows[-1][1] == status else None

    return wait_for(done, timeout, what=f"{channel}/{control_id} to be {status}")


def attempts(daemon: Daemon, channel: str, control_id: str) -> tuple[str, list[dict]]:
    """The (single) delivery's status and its attempts, oldest first."""
    rows = query(daemon, "SELECT d.status, a.ok, a.error, a.response, a.possible_duplicate FROM messages m"
                 " JOIN deliveries d ON d.message_id = m.id LEFT JOIN attempts a ON a.delivery_id = d.id"
                 " WHERE m.channel = ? AND m.control_id = ? ORDER BY a.id", channel, control_id)
    assert rows, f"no delivery for {channel}/{control_id}"
    tried = [{"ok": bool(ok), "error": error, "response": response, "possible_duplicate": bool(dup)}
             for _status, ok, error, response, dup in rows if ok is not None]
    return rows[0][0], tried


def events(world, kind: str, channel: str) -> list[dict]:
    path = world["events"]
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e for e in found if e["kind"] == kind and e["channel"] == channel]


def request(port: int, message) -> dict:
    client = MllpClient(port)
    try:
        return client.request(message)
    finally:
        client.close()


def closed_without_answer(client: MllpClient, timeout: float = 5.0) -> bool:
    closed = client.closed_by_peer(timeout)
    return closed and client.buffer == b""


def raw_http(port: int, head: bytes) -> tuple[int, bytes, socket.socket]:
    """Send ``head`` (and no more); return the status, the raw answer and the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data[:80]!r}"
        data += chunk
    return int(data.split(b" ", 2)[1]), data, sock


def http_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(port: int, path: str, body, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={**AUTH, **(headers or {})})
        answer = conn.getresponse()
        return answer.status, dict(answer.headers), answer.read()
    finally:
        conn.close()


def peer_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def out_file(daemon: Daemon, outbox: str, message_id: int) -> Path:
    path = daemon.root / "outbox" / outbox / f"{message_id}.out"
    return wait_for(lambda: path if path.exists() else None, what=f"{path.name} in outbox/{outbox}")


# == MLLP input ==================================================================================
def test_reliability_01_junk_before_start_byte(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["mllp"])
    client.send_raw(b"\x00\x00\x00\x00\x00JUNKJUNK")                 # 13 bytes outside any frame
    ack = client.request(hl7("R01-1"))
    client.close()
    assert ack["code"] == "AA" and ack["control_id"] == "R01-1"
    wait_for(lambda: any("discarded 13 bytes" in line for line in daemon.log_lines), what="the junk warning")
    assert not any("JUNK" in line for line in daemon.log_lines)      # a count, never the bytes
    assert len(messages(daemon, "mllp", "R01-1")) == 1


def test_reliability_02_hl7_without_any_frame(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["mllp"])
    client.send_raw(hl7("R02-1").encode() + b"\r")
    assert closed_without_answer(client)                              # idle_timeout = 1s, no ACK
    client.close()
    assert messages(daemon, "mllp", "R02-1") == []


def test_reliability_03_end_byte_without_cr_strict_unless_the_option_says(world):
    daemon = world["daemon"]
    lenient = MllpClient(daemon.ports["lenient"])                     # lenient_end_byte = true
    lenient.send_raw(b"\x0b" + hl7("R03-1").encode() + b"\x1c" + b"\x0b" + hl7("R03-2").encode() + b"\x1c\x0d")
    acks = [parse_ack(lenient.read_frame()) for _ in range(2)]
    lenient.close()
    assert [(a["code"], a["control_id"]) for a in acks] == [("AA", "R03-1"), ("AA", "R03-2")]
    strict = MllpClient(daemon.ports["mllp"])                         # the default
    strict.send_raw(b"\x0b" + hl7("R03-3").encode() + b"\x1c" + b"\x0b" + hl7("R03-4").encode() + b"\x1c\x0d")
    assert parse_ack(strict.read_frame())["code"] == "AR"
    assert strict.closed_by_peer()
    strict.close()
    assert messages(daemon, "mllp", "R03-3") == [] and messages(daemon, "mllp", "R03-4") == []


def test_reliability_04_end_byte_followed_by_another_byte(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["mllp"])
    client.send_raw(b"\x0b" + hl7("R04-1").encode() + b"\x1c\x1c\x0d")
    ack = parse_ack(client.read_frame())
    assert ack["code"] == "AR" and ack["control_id"] == ""
    assert client.closed_by_peer()
    client.close()
    assert messages(daemon, "mllp", "R04-1") == []
    assert request(daemon.ports["mllp"], hl7("R04-2"))["code"] == "AA"    # the listener serves on


def test_reliability_05_partial_frame_then_silence_fin_or_rst(world):
    daemon = world["daemon"]
    partial = b"\x0b" + hl7("R05-1", mrn="R05SECRET").encode()[:90]
    before = len(events(world, "partial_frame_discarded", "mllp"))
    silent, fin, rst = (MllpClient(daemon.ports["mllp"]) for _ in range(3))
    for client in (silent, fin, rst):
        client.send_raw(partial)
    fin.sock.shutdown(socket.SHUT_WR)
    rst.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rst.close()
    assert closed_without_answer(fin)
    assert closed_without_answer(silent)                              # after idle_timeout
    fin.close()
    silent.close()
    def new_events():
        found = events(world, "partial_frame_discarded", "mllp")[before:]
        return found if any(e["reason"] == "idle timeout inside a frame" for e in found) and len(found) >= 3 else None

    discarded = wait_for(new_events, what="an event for each discarded partial frame")
    reasons = {e["reason"] for e in discarded}
    assert reasons == {"connection closed inside a frame", "idle timeout inside a frame"}
    assert not any("R05" in e["reason"] for e in discarded)          # PHI-free: no content
    assert messages(daemon, "mllp", "R05-1") == []


def test_reliability_06_start_byte_inside_a_message(world):
    daemon = world["daemon"]
    text = hl7("R06-1")
    ack = request(daemon.ports["mllp"], text[:40] + "\x0b" + text[40:])
    assert ack["code"] == "AR" and ack["control_id"] == "R06-1"
    assert messages(daemon, "mllp", "R06-1") == []
    wait_for(lambda: any("framing byte" in e["reason"] for e in events(world, "rejected", "mllp")),
             what="the rejection event")


def test_reliability_07_end_byte_inside_a_message(world):
    daemon = world["daemon"]
    data = hl7("R07-1").encode()
    client = MllpClient(daemon.ports["mllp"])
    client.send_raw(b"\x0b" + data[:60] + b"\x1c" + data[60:] + b"\x1c\x0d")
    assert parse_ack(client.read_frame())["code"] == "AR"             # for the fragment
    assert client.closed_by_peer()                                    # the rest is discarded
    client.close()
    assert messages(daemon, "mllp", "R07-1") == []


def test_reliability_08_frame_over_max_message_size(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["mllp"])
    client.sock.settimeout(0.02)
    sent, closed, piece = 0, False, b"\x0b" + b"MSH|^~\\&|" + b"A" * (16 * 1024)
    while sent < 16 * 1024 * 1024 and not closed:                     # a 16 MB frame, if let through
        try:
            client.sock.sendall(piece)
            sent += len(piece)
            piece = b"A" * (16 * 1024)
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        try:
            closed = client.sock.recv(1) == b""
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
    client.close()
    assert closed and sent < 4 * 1024 * 1024, f"still reading after {sent} bytes of a frame capped at 64 KB"
    assert request(daemon.ports["mllp"], hl7("R08-1"))["code"] == "AA"


def test_reliability_09_several_messages_in_one_read(world):
    daemon = world["daemon"]
    ids = [f"R09-{n}" for n in range(10)]
    client = MllpClient(daemon.ports["mllp"])
    client.send_raw(b"".join(b"\x0b" + hl7(i).encode() + b"\x1c\x0d" for i in ids))
    acks = [parse_ack(client.read_frame()) for _ in ids]
    client.close()
    assert [(a["code"], a["control_id"]) for a in acks] == [("AA", i) for i in ids]
    stored = query(daemon, "SELECT control_id FROM messages WHERE channel = 'mllp' AND control_id LIKE 'R09-%'"
                   " ORDER BY id")
    assert [row[0] for row in stored] == ids


def test_reliability_10_one_byte_at_a_time(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["mllp"])
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in b"\x0b" + hl7("R10-1").encode() + b"\x1c\x0d":
        client.send_raw(bytes([byte]))
    ack = parse_ack(client.read_frame())
    client.close()
    assert (ack["code"], ack["control_id"]) == ("AA", "R10-1")
    assert messages(daemon, "mllp", "R10-1")[0][3] == hl7("R10-1") + "\r"   # the final CR added (§3.5)


def test_reliability_11_connection_cap_idle_timeout_and_clean_shutdown(tmp_path):
    daemon = Daemon(tmp_path / "d", {"capped": mllp_channel('idle_timeout = "1s"\nmax_connections = 2')}).start(1)
    try:
        port = daemon.ports["capped"]
        held = [MllpClient(port) for _ in range(2)]
        for number, client in enumerate(held):
            assert client.request(hl7(f"R11-{number}"))["code"] == "AA"
        try:
            extra = MllpClient(port)
        except ConnectionError:
            pass                                                      # refused while connecting
        else:
            assert closed_without_answer(extra, timeout=0.5)          # over the cap: closed at once
            extra.close()
        assert all(closed_without_answer(c) for c in held)            # idle: closed after 1s
        for client in held:
            client.close()

        def admitted():
            try:
                return request(port, hl7("R11-2"))["code"] == "AA"
            except ConnectionError:
                return False

        wait_for(admitted, what="a connection once the idle ones were closed")
        idle, partial = MllpClient(port), MllpClient(port)
        partial.send_raw(b"\x0b" + hl7("R11-3").encode()[:30])
        started = time.monotonic()
        assert daemon.stop() == 0                                     # with both connections open
        assert time.monotonic() - started < 5
        assert any("switchboard stopped" in line for line in daemon.log_lines)
        assert idle.closed_by_peer(2) and partial.closed_by_peer(2)
        idle.close()
        partial.close()
    finally:
        daemon.kill()


def test_reliability_12_empty_frame(world):
    ack = request(world["daemon"].ports["mllp"], b"")
    assert ack["code"] == "AR" and ack["control_id"] == ""


def test_reliability_13_batch_or_first_segment_other_than_msh(world):
    daemon = world["daemon"]
    batch = "\r".join(["FHS|^~\\&|EHR", "BHS|^~\\&|EHR", hl7("R13-1"), hl7("R13-2"), "BTS|2", "FTS|1"])
    assert request(daemon.ports["mllp"], batch)["code"] == "AR"       # this channel does not split
    assert request(daemon.ports["mllp"], "PID|1||R13-3\r" + hl7("R13-3"))["code"] == "AR"
    assert request(daemon.ports["batches"], batch)["code"] == "AA"   # split = "hl7-batch"
    assert [r[0] for r in query(daemon, "SELECT control_id FROM messages WHERE control_id LIKE 'R13-%'"
                                " ORDER BY id")] == ["R13-1", "R13-2"]
    assert {r[0] for r in query(daemon, "SELECT channel FROM messages WHERE control_id LIKE 'R13-%'")} == {"batches"}


def test_reliability_14_no_msh10_or_short_msh(world):
    daemon = world["daemon"]
    no_id = hl7("R14-X").replace("|R14-X|", "||")
    short = "MSH|^~\\&|EHR|HOSP|SWB|AG|2024||ADT^A08|R14-2"            # 10 fields
    for message in (no_id, short):
        assert request(daemon.ports["mllp"], message)["code"] == "AR"
    assert messages(daemon, "mllp", "R14-2") == [] and messages(daemon, "mllp", "") == []


def test_reliability_15_unusual_delimiters(world):
    daemon = world["daemon"]
    text = hl7("R15-1").replace("|", "#").replace("^", "$")             # MSH#$~\&#...
    ack = request(daemon.ports["mllp"], text)
    assert ack["sep"] == "#" and (ack["code"], ack["control_id"]) == ("AA", "R15-1")
    assert ack["segments"][0].startswith("MSH#$~\\&#")
    row = messages(daemon, "mllp", "R15-1")[0]
    assert HL7View(row[3])["PID.5.2"] == "JANE"                        # parsed with the declared ones


def test_reliability_16_lf_and_crlf_segment_endings(world):
    daemon = world["daemon"]
    assert request(daemon.ports["mllp"], hl7("R16-1").replace("\r", "\n"))["code"] == "AA"
    assert request(daemon.ports["mllp"], hl7("R16-2").replace("\r", "\r\n"))["code"] == "AA"
    for control_id in ("R16-1", "R16-2"):
        raw = messages(daemon, "mllp", control_id)[0][3]
        assert raw == hl7(control_id) + "\r"                           # CR only, the final one added (§3.5)


def show_bytes(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    """``switchboard ARGS`` with stdout as bytes (``show --original``)."""
    return subprocess.run([sys.executable, "-m", "engine.cli.main", "-c", str(daemon.config), *args],
                          cwd=daemon.root, env=daemon.env, capture_output=True, timeout=60)


def declaring(control_id: str, charset: str) -> bytes:
    return hl7(control_id).replace("|2.5", f"|2.5||||||{charset}", 1).encode()


def test_reliability_17_invalid_bytes_for_the_declared_charset(world):
    daemon = world["daemon"]
    # declares UTF-8, holds two bytes that are never UTF-8 and a Latin-1 é (a lead byte before 'N')
    utf8 = declaring("R17-1", "UNICODE UTF-8").replace(b"DOE^JANE", b"D\xff\xfeE^J\xe9NE")
    latin1 = declaring("R17-2", "8859/1").replace(b"DOE", b"D\xe9E")
    assert request(daemon.ports["mllp"], utf8)["code"] == "AA"
    assert request(daemon.ports["mllp"], latin1)["code"] == "AA"
    (lossy_id, _status, _error, raw), = messages(daemon, "mllp", "R17-1")
    assert (HL7View(raw)["PID.5.1"], HL7View(raw)["PID.5.2"]) == ("D\ufffd\ufffdE", "J\ufffdNE")  # replaced
    (valid_id, _status, _error, raw), = messages(daemon, "mllp", "R17-2")
    assert HL7View(raw)["PID.5.1"] == "DéE"                                  # decoded as declared

    kept = show_bytes(daemon, "show", str(lossy_id), "--original")           # the raw bytes were kept
    assert (kept.returncode, kept.stdout) == (0, utf8)
    assert daemon.cli_json("show", str(lossy_id))["original_bytes"] == len(utf8)
    assert daemon.api("GET", f"/api/messages/{lossy_id}")[1]["original_bytes"] == len(utf8)
    shown = daemon.cli("show", str(lossy_id))
    assert f"original bytes kept: {len(utf8):,} bytes (not valid utf-8;" in shown.stdout
    assert "J\ufffdNE" in shown.stdout                                      # show prints the text...
    assert not any("J\ufffdNE" in line or "JANE" in line for line in daemon.log_lines)  # ...logs never

    none = show_bytes(daemon, "show", str(valid_id), "--original")          # valid: nothing extra kept
    assert none.returncode == 1 and none.stdout == b"" and b"no original bytes kept" in none.stderr
    assert daemon.cli_json("show", str(valid_id))["original_bytes"] is None
    both = show_bytes(daemon, "show", str(lossy_id), "--original", "--json")    # bytes or JSON, not both
    assert both.returncode == 1 and both.stdout == b"" and b"does not go with --json" in both.stderr
    assert query(daemon, "SELECT count(*) FROM messages WHERE original IS NOT NULL AND control_id = 'R17-2'") == [(0,)]


def test_reliability_17_a_lossy_batch_or_file_keeps_its_bytes_once(world):
    """A batch frame or a file is decoded whole, so its bytes cannot be cut per message: they are
    kept once, with its first message (a copy on each would multiply them by the message count)."""
    daemon = world["daemon"]
    first = declaring("R17-3", "UNICODE UTF-8").replace(b"DOE", b"D\xffE")
    batch = b"\r".join([b"FHS|^~\\&|EHR", b"BHS|^~\\&|EHR", first, hl7("R17-4").encode(), b"BTS|2", b"FTS|1"])
    assert request(daemon.ports["batches"], batch)["code"] == "AA"
    drop(daemon, "lossy.hl7", first.replace(b"R17-3", b"R17-5") + b"\r" + hl7("R17-6").encode())
    wait_path(inbox(daemon) / "done" / "lossy.hl7")
    for channel, whole, (with_bytes, without) in (("batches", batch, ("R17-3", "R17-4")),
                                                    ("files", first.replace(b"R17-3", b"R17-5") + b"\r"
                                                     + hl7("R17-6").encode(), ("R17-5", "R17-6"))):
        kept = show_bytes(daemon, "show", str(messages(daemon, channel, with_bytes)[0][0]), "--original")
        assert (kept.returncode, kept.stdout) == (0, whole)
        assert show_bytes(daemon, "show", str(messages(daemon, channel, without)[0][0]), "--original").returncode == 1


def test_reliability_18_a_resent_message_is_acked_again_and_delivered_once(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["dup"])
    first = hl7("R18-1")
    assert client.request(first)["code"] == "AA"
    assert client.request(first)["code"] == "AA"                       # our ACK was lost: re-sent
    assert client.request(hl7("R18-1", account="OTHER"))["code"] == "AA"   # same id, other content
    client.close()
    rows = messages(daemon, "dup", "R18-1")
    assert len(rows) == 2
    for row in rows:
        wait_id_status(daemon, row[0], "SENT")
    outputs = [(daemon.root / "outbox" / "dup" / f"{row[0]}.txt") for row in rows]
    wait_for(lambda: all(p.exists() for p in outputs), what="two deliveries")
    assert len(list((daemon.root / "outbox" / "dup").iterdir())) == 2


# -- templates ------------------------------------------------------------------------------------
def test_reliability_19_delimiters_and_cr_in_values_are_escaped_in_hl7_output(world):
    daemon = world["daemon"]
    evil = "O\\F\\BRIEN\\S\\X\\R\\Y\\E\\Z\\T\\W\\X0D\\MSH\\F\\INJECTED"  # O|BRIEN^X~Y\Z&W<CR>MSH|INJECTED
    message = hl7("R19-1").replace("DOE^JANE", f"{evil}^JANE")
    assert request(daemon.ports["escape"], message)["code"] == "AA"
    row = wait_status(daemon, "escape", "R19-1", "SENT")
    output = out_file(daemon, "escape", row[0]).read_text()
    view = HL7View(output)
    assert view.segment_names() == ["MSH", "PID"]
    assert view["PID.5.1"] == "O|BRIEN^X~Y\\Z&W\rMSH|INJECTED" and view["PID.5.2"] == "JANE"
    assert len(str(view.segments("PID")[0]).split("|")) == 6


def test_reliability_20_template_syntax_in_a_field_is_data(world):
    daemon = world["daemon"]
    message = hl7("R20-1", mrn="{{ 7*7 }}").replace("DOE^JANE", "{% for x in range(3) %}x{% endfor %}^JANE")
    assert request(daemon.ports["escape"], message)["code"] == "AA"
    row = wait_status(daemon, "escape", "R20-1", "SENT")
    view = HL7View(out_file(daemon, "escape", row[0]).read_text())
    assert view["PID.3.1"] == "{{ 7*7 }}"
    assert view["PID.5.1"] == "{% for x in range(3) %}x{% endfor %}"


def test_reliability_21_transform_error_or_sandbox_refusal_is_error_and_replayable(world):
    daemon = world["daemon"]
    port = daemon.ports["sandbox"]
    assert request(port, hl7("R21-1", mrn="EVIL"))["code"] == "AA"
    assert request(port, hl7("R21-2", mrn="DIV"))["code"] == "AA"
    assert request(port, hl7("R21-3", mrn="FINE"))["code"] == "AA"    # the channel keeps running
    evil = wait_status(daemon, "sandbox", "R21-1", "ERROR")
    division = wait_status(daemon, "sandbox", "R21-2", "ERROR")
    wait_status(daemon, "sandbox", "R21-3", "SENT")
    assert "unsafe operation refused by the sandbox" in evil[2]
    assert "ZeroDivisionError" in division[2]
    (daemon.root / "transforms" / "sandbox.j2").write_text("ok {{ msg['MSH.10'] }}")   # the fix
    status, _answer = daemon.api("POST", f"/api/messages/{evil[0]}/replay")
    assert status == 200
    wait_status(daemon, "sandbox", "R21-1", "SENT")
    assert out_file(daemon, "sandbox", evil[0]).read_text() == "ok R21-1"


def test_reliability_22_template_time_and_size_limits(world):
    daemon = world["daemon"]
    port = daemon.ports["limits"]
    assert request(port, hl7("R22-1", mrn="LOOP"))["code"] == "AA"
    assert request(port, hl7("R22-2", mrn="HUGE"))["code"] == "AA"
    assert request(port, hl7("R22-3", mrn="FINE"))["code"] == "AA"    # answered after both
    looped = wait_status(daemon, "limits", "R22-1", "ERROR")
    huge = wait_status(daemon, "limits", "R22-2", "ERROR")
    assert "render took longer than 2s" in looped[2]
    assert "output exceeds 1048576 bytes" in huge[2]
    assert out_file(daemon, "limits", wait_status(daemon, "limits", "R22-3", "SENT")[0]).read_text() == "ok R22-3"


# == Downstream =================================================================================
def test_reliability_23_downstream_naks_garbage_and_wrong_acks(world):
    daemon = world["daemon"]
    client = MllpClient(daemon.ports["downstream"])
    refusals = ["D-AE", "D-AR", "D-CE", "D-CR"]
    retried = ["D-GARBAGE", "D-WRONG", "D-NOMSA"]
    for control_id in refusals + retried:
        assert client.request(hl7(control_id))["code"] == "AA"
    client.close()
    for control_id in refusals:                                        # permanent: ERROR, not retried
        wait_status(daemon, "downstream", control_id, "ERROR")
        status, tried = attempts(daemon, "downstream", control_id)
        assert status == "ERROR" and len(tried) == 1 and not tried[0]["ok"]
        assert f"MSA|{control_id[2:]}|{control_id}" in tried[0]["response"]   # the ACK is kept
    for control_id in retried:                                         # transient: retried, then SENT
        wait_status(daemon, "downstream", control_id, "SENT")
        status, tried = attempts(daemon, "downstream", control_id)
        assert [a["ok"] for a in tried] == [False, True]
    assert all(world["downstream"].seen[c] == 1 for c in refusals)
    assert all(world["downstream"].seen[c] == 2 for c in retried)


def test_reliability_24_ack_timeout_is_retried_and_marked_possible_duplicate(world):
    daemon = world["daemon"]
    assert request(daemon.ports["slowpeer"], hl7("R24-1"))["code"] == "AA"
    wait_status(daemon, "slowpeer", "R24-1", "SENT")
    _status, tried = attempts(daemon, "slowpeer", "R24-1")
    assert [(a["ok"], a["possible_duplicate"]) for a in tried] == [(False, True), (True, False)]
    assert "ack_timeout" in tried[0]["error"]
    assert world["slow_peer"].control_ids() == ["R24-1", "R24-1"]     # at least once: twice here


class ResettingPeer:
    """Accepts each connection and resets it at once (RST): a peer that drops us mid-send."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.1)
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.server.close()


def test_reliability_25_connection_refused_or_reset_is_queued_with_backoff(world):
    daemon = world["daemon"]
    port = world["refused_port"]
    assert request(daemon.ports["refused"], hl7("R25-1"))["code"] == "AA"
    wait_for(lambda: len(attempts(daemon, "refused", "R25-1")[1]) >= 3, what="three refused attempts")
    status, tried = attempts(daemon, "refused", "R25-1")
    assert status == "QUEUED" and not any(a["ok"] or a["possible_duplicate"] for a in tried)
    # other channels are unaffected meanwhile
    assert request(daemon.ports["escape"], hl7("R25-OTHER"))["code"] == "AA"
    wait_status(daemon, "escape", "R25-OTHER", "SENT")
    resetting = ResettingPeer(port)
    try:
        wait_for(lambda: resetting.accepted >= 2, what="attempts reset by the peer")
    finally:
        resetting.close()
    assert attempts(daemon, "refused", "R25-1")[0] == "QUEUED"
    peer = MllpPeer(port=port)
    try:
        wait_status(daemon, "refused", "R25-1", "SENT")
        assert peer.control_ids() == ["R25-1"]
    finally:
        peer.close()
    times = [datetime.datetime.fromisoformat(row[0]) for row in query(
        daemon, "SELECT a.at FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN messages m"
        " ON m.id = d.message_id WHERE m.channel = 'refused' ORDER BY a.id")]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    # backoff: 100 ms growing by 1.5 (times are stamped at commit, hence the slack): no tight loop
    assert len(gaps) >= 4 and min(gaps) > 0.02 and max(gaps) >= 0.25


def test_reliability_26_store_failure_at_ingest_is_never_aa(tmp_path):
    daemon = Daemon(tmp_path / "d", {"locked": mllp_channel()}).start(1)
    try:
        client = MllpClient(daemon.ports["locked"], timeout=30)
        assert client.request(hl7("R26-0"))["code"] == "AA"
        blocker = sqlite3.connect(daemon.db, isolation_level=None, timeout=1)
        blocker.execute("BEGIN EXCLUSIVE")                             # the database cannot commit
        try:
            ack = client.request(hl7("R26-1"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (ack["code"], ack["control_id"]) == ("AE", "R26-1")
        assert any(segment.startswith("ERR") for segment in ack["segments"])
        assert client.request(hl7("R26-2"))["code"] == "AA"            # recovered without a restart
        client.close()
        assert messages(daemon, "locked", "R26-1") == []
    finally:
        daemon.stop()


# == HTTP ========================================================================================
def test_reliability_27_http_caps(world):
    daemon = world["daemon"]
    port = daemon.ports["http"]
    status, _raw, sock = raw_http(port, http_head("/in", {**AUTH, "Content-Length": str(50 * 1024 * 1024)}))
    assert status == 413 and peer_closed(sock)                         # huge body: before it is sent
    sock.close()
    status, _raw, sock = raw_http(port, http_head("/in", {**AUTH, "Transfer-Encoding": "chunked"})
                                  + b"zz\r\n{}\r\n0\r\n\r\n")
    assert status == 400                                               # bad chunk encoding
    sock.close()
    status, _raw, sock = raw_http(port, http_head("/in", {**AUTH, **{f"X-H{i}": "1" for i in range(30)}}))
    assert status == 431                                               # too many headers
    sock.close()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(http_head("/in", {**AUTH, "Transfer-Encoding": "chunked"}))
    sock.settimeout(0.05)
    answer, sent = b"", 0
    while not answer and sent < 256:                                   # an endless chunked body
        try:
            sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            sent += 1
            answer = sock.recv(65536)
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            break
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:40]
    assert sent <= 16                                                  # cut near max_body = 4 KB
    assert post(port, "/in", json.dumps({"after": "caps"}))[0] == 202  # and serving on


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Bearer {TOKEN}x"])
def test_reliability_28_no_or_wrong_token_refused_before_the_body(world, authorization):
    daemon = world["daemon"]
    before = query(daemon, "SELECT COUNT(*) FROM messages WHERE channel = 'http'")[0][0]
    headers = {"Content-Type": "application/json", "Content-Length": str(50 * 1024 * 1024)}
    if authorization:
        headers["Authorization"] = authorization
    status, _raw, sock = raw_http(daemon.ports["http"], http_head("/in", headers))   # no body sent
    assert status == 401 and peer_closed(sock)
    sock.close()
    assert query(daemon, "SELECT COUNT(*) FROM messages WHERE channel = 'http'")[0][0] == before


@pytest.mark.parametrize("certificate", [None, "rogue"])
def test_reliability_28_bad_client_certificate_refused(world, certificate):
    daemon, pki = world["daemon"], world["pki"]

    def context(name):
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if name:
            ctx.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
        return ctx

    def tls_post(name, body):
        conn = http.client.HTTPSConnection("localhost", daemon.ports["mtls"], timeout=10, context=context(name))
        try:
            conn.request("POST", "/tls", body=body, headers=AUTH)
            return conn.getresponse().status
        finally:
            conn.close()

    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        tls_post(certificate, json.dumps({"who": f"R28-{certificate}"}))
    assert query(daemon, "SELECT COUNT(*) FROM messages WHERE channel = 'mtls' AND raw LIKE ?",
                 f"%R28-{certificate}%")[0][0] == 0
    assert tls_post("client", json.dumps({"who": f"R28-trusted-{certificate}"})) == 202   # the listener works


@pytest.mark.parametrize("document", [
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "boom">]><r>&x;</r>',
    '<!DOCTYPE r SYSTEM "http://127.0.0.1:1/evil.dtd"><r/>',
    '<?xml version="1.0"?><!doctype r [<!entity x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
])
def test_reliability_29_xml_with_a_dtd_or_entities_refused(world, document):
    daemon = world["daemon"]
    before = query(daemon, "SELECT COUNT(*) FROM messages WHERE channel = 'xml'")[0][0]
    status, _headers, body = post(daemon.ports["xml"], "/xml", document, {"Content-Type": "application/xml"})
    assert status == 400 and "DTD" in json.loads(body)["error"]
    assert query(daemon, "SELECT COUNT(*) FROM messages WHERE channel = 'xml'")[0][0] == before
    control = f"<r><a>{hashlib.sha256(document.encode()).hexdigest()}</a></r>"   # unique: not a re-send
    assert post(daemon.ports["xml"], "/xml", control)[0] == 202


def test_reliability_30_client_gone_after_store_retry_not_processed_twice(world):
    daemon = world["daemon"]
    port = daemon.ports["http"]
    body = json.dumps({"payment": "R30-1"}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(http_head("/in", {**AUTH, "Content-Length": str(len(body)), "Idempotency-Key": "R30-key"}) + body)
    sock.close()                                                       # gone before the answer
    stored = wait_for(lambda: query(daemon, "SELECT id FROM messages WHERE channel = 'http' AND raw LIKE ?",
                                    "%R30-1%"), what="the message stored")
    retry = post(port, "/in", json.dumps({"payment": "R30-1"}, indent=1), {"Idempotency-Key": "R30-key"})
    assert retry[0] == 200 and json.loads(retry[2]) == {"id": stored[0][0], "status": "DUPLICATE",
                                                         "duplicate": True}
    resend = post(port, "/in", body)                                   # no key: the same bytes again
    assert resend[0] == 200 and json.loads(resend[2])["id"] == stored[0][0]
    assert len(query(daemon, "SELECT id FROM messages WHERE channel = 'http' AND raw LIKE ?", "%R30-1%")) == 1


# == File watcher ================================================================================
def inbox(daemon: Daemon) -> Path:
    return daemon.root / "inbox" / "files"


def drop(daemon: Daemon, name: str, content) -> None:
    staging = daemon.root / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    os.replace(staging / name, inbox(daemon) / name)                  # renamed into place


def wait_path(path: Path, timeout: float = 10.0) -> Path:
    return wait_for(lambda: path if os.path.lexists(path) else None, timeout, what=f"{path.name}")


def test_reliability_31_a_file_still_being_written_is_read_once_stable(world):
    daemon = world["daemon"]
    data = hl7("R31-1", extra="NTE|1||" + "slow" * 100).encode()
    path = inbox(daemon) / "slow.hl7"
    pieces = [data[i:i + 64] for i in range(0, len(data), 64)]
    with open(path, "wb") as out:
        for piece in pieces:                                           # one write per 50 ms (settle: 200 ms)
            out.write(piece)
            out.flush()
            time.sleep(0.05)                                           # the writer's pace, not a wait
            assert messages(daemon, "files", "R31-1") == []
    wait_path(inbox(daemon) / "done" / "slow.hl7")
    assert [row[3] for row in messages(daemon, "files", "R31-1")] == [data.decode() + "\r"]   # the final CR added (§3.5)
    drop(daemon, "renamed.hl7", hl7("R31-2"))                          # renamed into place: taken
    wait_path(inbox(daemon) / "done" / "renamed.hl7")
    assert len(messages(daemon, "files", "R31-2")) == 1


def test_reliability_32_a_failing_file_goes_to_error_with_a_reason_once(world):
    daemon = world["daemon"]
    content = b"\x00\xffnot HL7 at all R32"
    drop(daemon, "refused.hl7", content)
    reason = wait_path(inbox(daemon) / "error" / "refused.hl7.reason")   # written before the move
    wait_path(inbox(daemon) / "error" / "refused.hl7")
    assert reason.read_text().strip() and "R32" not in reason.read_text()
    assert (inbox(daemon) / "error" / "refused.hl7").read_bytes() == content    # never deleted
    mentioned = wait_for(lambda: sum("refused.hl7" in line for line in daemon.log_lines), what="the log line")
    drop(daemon, "next-one.hl7", hl7("R32-2"))                        # the watcher moved on
    wait_path(inbox(daemon) / "done" / "next-one.hl7")
    assert sorted(p.name for p in (inbox(daemon) / "error").glob("refused.hl7*")) == ["refused.hl7", "refused.hl7.reason"]
    assert sum("refused.hl7" in line for line in daemon.log_lines) == mentioned   # taken once, never looping


def test_reliability_33_odd_files_skipped_and_identical_files_recognised(world, tmp_path):
    daemon = world["daemon"]
    error = inbox(daemon) / "error"
    target = tmp_path / "outside.hl7"
    target.write_text(hl7("R33-LINK"))
    os.symlink(target, inbox(daemon) / "link.hl7")
    drop(daemon, "empty-batch.hl7", "FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r")
    drop(daemon, "huge.hl7", hl7("R33-HUGE", extra="NTE|1||" + "x" * 70_000))
    drop(daemon, "x\\..\\evil.hl7", hl7("R33-TRAVERSAL"))
    folder = os.fsencode(inbox(daemon))
    with open(os.path.join(folder, b"bad-\xff.hl7"), "wb") as out:
        out.write(hl7("R33-NAME").encode())
    expected = {"link.hl7": "symbolic link", "empty-batch.hl7": "no message", "huge.hl7": "max_file_size",
                "x\\..\\evil.hl7": "path traversal"}
    for name, words in expected.items():
        assert words in wait_path(error / f"{name}.reason").read_text(), name
    wait_for(lambda: os.path.exists(os.path.join(os.fsencode(error), b"bad-\xff.hl7.reason")), what="reason")
    assert target.read_bytes() == hl7("R33-LINK").encode()                       # the link was never followed
    for control_id in ("R33-LINK", "R33-HUGE", "R33-TRAVERSAL", "R33-NAME"):
        assert messages(daemon, "files", control_id) == []
    drop(daemon, "same.hl7", hl7("R33-SAME"))
    wait_path(inbox(daemon) / "done" / "same.hl7")
    drop(daemon, "same-again.hl7", hl7("R33-SAME"))                    # identical content, other name
    wait_path(inbox(daemon) / "done" / "same-again.hl7")
    assert len(messages(daemon, "files", "R33-SAME")) == 1
    wait_for(lambda: any("already processed" in line for line in daemon.log_lines), what="the log note")
