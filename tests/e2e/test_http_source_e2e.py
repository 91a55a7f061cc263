"""The HTTP source through the real daemon: answers, caps and refusals (RELIABILITY 27-30).

Requests are written with ``http.client`` or, where the point is what happens *before* the body
is sent, as raw bytes on a socket: a refusal that arrives while the body is still unsent proves
the daemon decided on the headers alone.
"""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3

import pytest

from support.daemon import Daemon, hl7, wait_for

pytestmark = pytest.mark.slow

TOKEN = "hook-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def http_source(path: str, extra: str = "", inbound: str = "json") -> str:
    return (f'inbound = "{inbound}"\n[source]\ntype = "http"\nlisten = "127.0.0.1:0"\npath = "{path}"\n'
            f'token = "${{HOOK_TOKEN}}"\nmax_body = "4KB"\n{extra}\n')


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-source")
    d = Daemon(root, {
        "hooks": http_source("/payments", 'max_headers = 20\nmax_header_size = "4KB"\nidle_timeout = "5s"'),
        "xmlin": http_source("/xml", inbound="xml"),
        "hl7in": http_source("/hl7", inbound="hl7") + '\n[metadata]\nmrn = "PID.3.1"\n',
        "processed": http_source("/p", 'ack = "processed"') + (
            '\n[[transform]]\ninline = "{{ msg.order.total }}"\n'),
        "capped": http_source("/c", "max_connections = 2"),
    }, env={"HOOK_TOKEN": TOKEN})
    d.start(expect_channels=5)
    yield d
    d.stop()


def post(port: int, path: str, body: bytes | str, headers: dict | None = None, method: str = "POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={**AUTH, **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def stored(daemon: Daemon, channel: str) -> list[tuple[int, str]]:
    with sqlite3.connect(daemon.db) as conn:
        return conn.execute("SELECT id, raw FROM messages WHERE channel = ? ORDER BY id", (channel,)).fetchall()


class RawClient:
    """A socket that writes request bytes as given and reads one response (bounded)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before a response: {data[:100]!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "closed inside the response body"
            body += chunk
        return int(lines[0].split()[1]), headers, body[:length]

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_post_is_stored_then_answered_202(daemon):
    status, headers, body = post(daemon.ports["hooks"], "/payments", json.dumps({"account": "A-1", "amount": 5}),
                                 {"Content-Type": "application/json"})
    assert status == 202 and headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    # stored before the answer: the row is there the moment we look, with the status we were told
    rows = dict(stored(daemon, "hooks"))
    assert json.loads(rows[answer["id"]]) == {"account": "A-1", "amount": 5}
    shown = daemon.cli_json("show", str(answer["id"]))
    assert shown["channel"] == "hooks" and shown["status"] == answer["status"]


@pytest.mark.parametrize("authorization", [None, f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}"])
def test_bad_or_missing_token_refused_before_the_body(daemon, authorization):  # RELIABILITY 28
    before = len(stored(daemon, "hooks"))
    client = RawClient(daemon.ports["hooks"])
    headers = {"Content-Type": "application/json", "Content-Length": "50000000"}
    if authorization:
        headers["Authorization"] = authorization
    client.send(head("/payments", headers))          # the 50 MB body is never sent
    status, answer_headers, body = client.response()
    assert status == 401 and answer_headers["www-authenticate"] == "Bearer"
    assert answer_headers["connection"] == "close"
    assert "error" in json.loads(body)
    assert client.closed_by_peer()
    client.close()
    assert len(stored(daemon, "hooks")) == before


def test_content_length_over_max_body_is_413_before_the_body(daemon):  # RELIABILITY 27
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {**AUTH, "Content-Length": str(4096 + 1)}))
    status, _headers, _body = client.response()
    assert status == 413
    assert client.closed_by_peer()
    client.close()


def test_expect_continue_gets_no_100_when_refused(daemon):
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {"Content-Length": "10", "Expect": "100-continue"}))
    status, _headers, _body = client.response()
    assert status == 401            # not "100 Continue": the client must not start sending
    client.close()


def test_endless_chunked_body_is_cut_at_max_body(daemon):  # RELIABILITY 27
    before = len(stored(daemon, "hooks"))
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {**AUTH, "Transfer-Encoding": "chunked"}))
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"     # 1 KB chunks, and never the last chunk
    answer, sent = b"", 0
    client.sock.settimeout(0.05)
    while not answer and sent < 64:                 # 64 KB: far past the 4 KB cap
        client.sock.sendall(chunk)
        sent += 1
        try:
            answer = client.sock.recv(65536)
        except socket.timeout:
            pass
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:40]
    assert sent <= 16, f"answered only after {sent} KB of a body capped at 4 KB"
    client.close()
    assert len(stored(daemon, "hooks")) == before


def test_bad_chunk_encoding_is_400(daemon):  # RELIABILITY 27
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {**AUTH, "Transfer-Encoding": "chunked"}) + b"zz\r\n{}\r\n0\r\n\r\n")
    status, _headers, _body = client.response()
    assert status == 400
    client.close()


def test_too_many_headers_is_431(daemon):  # RELIABILITY 27
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {**AUTH, **{f"X-Extra-{i}": "1" for i in range(30)}, "Content-Length": "2"}))
    status, _headers, _body = client.response()
    assert status == 431
    client.close()


def test_headers_too_large_is_431(daemon):  # RELIABILITY 27
    client = RawClient(daemon.ports["hooks"])
    client.send(head("/payments", {**AUTH, "X-Big": "a" * 5000, "Content-Length": "2"}))
    status, _headers, _body = client.response()
    assert status == 431
    client.close()


def test_other_path_404_other_method_405(daemon):
    assert post(daemon.ports["hooks"], "/elsewhere", "{}")[0] == 404
    status, headers, _ = post(daemon.ports["hooks"], "/payments", None, method="GET")
    assert status == 405 and headers["Allow"] == "POST, PUT"
    assert post(daemon.ports["hooks"], "/payments?source=x", "{}", method="PUT")[0] == 202


def test_malformed_json_is_400_and_not_stored(daemon):
    before = stored(daemon, "hooks")
    status, _headers, body = post(daemon.ports["hooks"], "/payments", '{"account": "A-2",')
    assert status == 400
    assert json.loads(body)["error"].startswith("invalid JSON")
    assert stored(daemon, "hooks") == before


def test_body_not_in_declared_charset_is_400(daemon):
    before = stored(daemon, "hooks")
    status, _headers, _body = post(daemon.ports["hooks"], "/payments", b'{"name": "\xff\xfe"}',
                                   {"Content-Type": "application/json; charset=utf-8"})
    assert status == 400
    assert stored(daemon, "hooks") == before


@pytest.mark.parametrize("document", [
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "boom">]><r>&x;</r>',
    '<!DOCTYPE r SYSTEM "http://127.0.0.1:1/evil.dtd"><r/>',
])
def test_xml_with_dtd_refused(daemon, document):  # RELIABILITY 29
    before = stored(daemon, "xmlin")
    status, _headers, body = post(daemon.ports["xmlin"], "/xml", document, {"Content-Type": "application/xml"})
    assert status == 400 and "DTD" in json.loads(body)["error"]
    assert stored(daemon, "xmlin") == before
    assert post(daemon.ports["xmlin"], "/xml", f"<r><a>{len(document)}</a></r>")[0] == 202


def test_idempotency_key_returns_the_original(daemon):  # RELIABILITY 30
    before = len(stored(daemon, "hooks"))
    key = {"Idempotency-Key": "order-77-attempt"}
    first = post(daemon.ports["hooks"], "/payments", json.dumps({"order": 77}), key)
    # a retry after a lost answer; even a re-serialized body is recognised by its key
    second = post(daemon.ports["hooks"], "/payments", json.dumps({"order": 77}, indent=2), key)
    assert first[0] == 202 and second[0] == 200
    assert json.loads(second[2]) == {"id": json.loads(first[2])["id"], "status": "DUPLICATE", "duplicate": True}
    assert len(stored(daemon, "hooks")) == before + 1
    other = post(daemon.ports["hooks"], "/payments", json.dumps({"order": 77}, indent=2),
                 {"Idempotency-Key": "order-77-other"})
    assert other[0] == 202 and json.loads(other[2])["id"] != json.loads(first[2])["id"]


def test_hl7_body_answered_with_an_ack(daemon):
    status, headers, body = post(daemon.ports["hl7in"], "/hl7", hl7("HTTP-HL7-1", mrn="M-77"),
                                 {"Content-Type": "x-application/hl7-v2+er7"})
    assert status == 200 and headers["Content-Type"] == "x-application/hl7-v2+er7"
    segments = body.decode().split("\r")
    assert segments[0].startswith("MSH|^~\\&|SWB|AGENCY|EHR|HOSP|")
    assert segments[1].startswith("MSA|AA|HTTP-HL7-1")
    listed = daemon.cli_json("messages", "--control-id", "HTTP-HL7-1")
    assert len(listed) == 1 and listed[0]["meta"]["mrn"] == "M-77"


def test_non_hl7_body_on_an_hl7_channel_is_ar_400(daemon):
    before = stored(daemon, "hl7in")
    status, headers, body = post(daemon.ports["hl7in"], "/hl7", '{"not": "hl7"}')
    assert status == 400 and headers["Content-Type"] == "x-application/hl7-v2+er7"
    assert "MSA|AR|" in body.decode()
    assert stored(daemon, "hl7in") == before


def test_ack_processed_answers_the_outcome(daemon):
    ok = post(daemon.ports["processed"], "/p", json.dumps({"order": {"total": 3}}))
    assert ok[0] == 200 and json.loads(ok[2])["status"] == "TRANSFORMED"
    failed = post(daemon.ports["processed"], "/p", json.dumps({"order": {}}))
    answer = json.loads(failed[2])
    assert failed[0] == 422 and answer["status"] == "ERROR" and answer["id"]
    assert daemon.cli_json("show", str(answer["id"]))["status"] == "ERROR"   # kept for replay


def test_connection_cap(daemon):
    port = daemon.ports["capped"]
    held = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
    try:
        for number, conn in enumerate(held):      # two keep-alive connections, each answered once
            conn.request("POST", "/c", body=json.dumps({"held": number}), headers=AUTH)
            response = conn.getresponse()
            response.read()
            assert response.status == 202
        extra = RawClient(port)
        status, _headers, _body = extra.response()
        extra.close()
        assert status == 503
    finally:
        for conn in held:
            conn.close()
    probes = iter(range(1000))
    wait_for(lambda: post(port, "/c", json.dumps({"probe": next(probes)}))[0] == 202,
             what="a connection once the others closed")


def test_refusals_logged_without_content(daemon):
    post(daemon.ports["hooks"], "/payments", '{"secret-name": "DOE^JANE"', {"Authorization": "Bearer nope"})
    wait_for(lambda: any("HTTP 401" in line for line in daemon.log_lines), what="the refusal in the log")
    assert not any("DOE" in line or "secret-name" in line or TOKEN in line for line in daemon.log_lines)
