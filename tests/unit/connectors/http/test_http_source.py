"""The HTTP source's request handling in process, where the end-to-end tests cannot reach: a store
that fails (503, never 2xx), the exact ``max_body`` edge of a chunked body, and the bounded drain
of a refused connection (time and bytes) driven by a ``task.Clock``."""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from engine.core.channel import Receipt
from engine.connectors.http.source import LINGER_BYTES, LINGER_SECONDS, HttpSourceFactory
from support.daemon import hl7

MAX_BODY = 64


class Sink:
    """Records what it is given and answers with the receipt it was told to."""

    def __init__(self, receipt: Receipt) -> None:
        self.receipt = receipt
        self.received: list[tuple[str, str | None]] = []
        self.originals: list[bytes | None] = []
        self.rejected: list[str] = []
        self.events: list[tuple[str, str]] = []

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        self.received.append((text, idempotency_key))
        self.originals.append(original)
        return defer.succeed(self.receipt)

    def note_rejected(self, reason):
        self.rejected.append(reason)

    def note_event(self, kind, detail):
        self.events.append((kind, detail))


def connect(sink: Sink, inbound: str = "json", max_body: int = MAX_BODY):
    options = {"path": "/in", "token": "t0k", "max_body": max_body, "max_headers": 20,
               "max_header_size": 4096, "idle_timeout": 60.0, "max_connections": 5, "ack": "stored"}
    config = SimpleNamespace(name="unit", inbound=inbound, source=SimpleNamespace(options=options))
    clock = task.Clock()
    factory = HttpSourceFactory(config, sink, clock)
    channel = factory.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


def request(body: bytes, *, chunked: bool = False, extra: str = "") -> bytes:
    head = "POST /in HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n" + extra
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def status_of(transport: StringTransport) -> int:
    return int(transport.value().split(b" ", 2)[1])


def body_of(transport: StringTransport) -> bytes:
    return transport.value().partition(b"\r\n\r\n")[2]


def test_store_failure_is_503_never_2xx():
    sink = Sink(Receipt(None, False, error="the message could not be stored"))
    channel, transport, _clock = connect(sink)
    channel.dataReceived(request(b'{"a": 1}', extra="Idempotency-Key: k-1\r\n"))
    assert sink.received == [('{"a": 1}', "k-1")]
    assert status_of(transport) == 503
    assert json.loads(body_of(transport)) == {"error": "the message could not be stored"}


def test_hl7_store_failure_is_ae_with_503():
    sink = Sink(Receipt(None, False, error="the message could not be stored"))
    channel, transport, _clock = connect(sink, inbound="hl7", max_body=4096)
    channel.dataReceived(request(hl7("U-1").encode()))
    assert status_of(transport) == 503
    assert b"MSA|AE|U-1" in body_of(transport)


def test_an_hl7_body_invalid_for_its_charset_is_taken_and_its_bytes_passed_on():
    """RELIABILITY 17: replaced in the text, the body's exact bytes handed to the channel; a valid
    body (here valid as its Content-Type charset says) hands on nothing more."""
    lossy = hl7("U-2").encode().replace(b"DOE", b"D\xff\xe9E")
    latin = hl7("U-3").encode().replace(b"DOE", b"D\xe9E")
    for body, extra in ((lossy, ""), (latin, "Content-Type: x-application/hl7-v2+er7; charset=ISO-8859-1\r\n")):
        sink = Sink(Receipt(7, True))
        channel, transport, _clock = connect(sink, inbound="hl7", max_body=4096)
        channel.dataReceived(request(body, extra=extra))
        assert status_of(transport) == 200 and b"MSA|AA|" in body_of(transport)
        (text, _key), = sink.received
        if body is lossy:
            assert "D\ufffd\ufffdE" in text and sink.originals == [lossy]
        else:
            assert "D\u00e9E" in text and sink.originals == [None]


def test_chunked_body_at_the_cap_is_taken_one_byte_more_is_413():
    sink = Sink(Receipt(7, True))
    exact = b'"' + b"x" * (MAX_BODY - 2) + b'"'
    channel, transport, _clock = connect(sink)
    channel.dataReceived(request(exact, chunked=True))
    assert status_of(transport) == 202 and len(sink.received) == 1

    over = b'"' + b"x" * (MAX_BODY - 1) + b'"'
    channel, transport, _clock = connect(sink)
    channel.dataReceived(request(over, chunked=True))
    assert status_of(transport) == 413 and len(sink.received) == 1


def test_refused_connection_is_drained_briefly_then_closed():
    sink = Sink(Receipt(1, True))
    channel, transport, clock = connect(sink)
    channel.dataReceived(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"y" * 1000)
    assert status_of(transport) == 401
    assert not transport.disconnecting            # still reading (and dropping) the body
    channel.dataReceived(b"y" * 1000)
    clock.advance(LINGER_SECONDS)
    assert transport.disconnecting
    assert sink.received == [] and sink.events == [("http_refused", "401: a valid bearer token is required")]


def test_refused_connection_that_keeps_sending_is_closed_early():
    sink = Sink(Receipt(1, True))
    channel, transport, _clock = connect(sink)
    channel.dataReceived(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(transport) == 404
    channel.dataReceived(b"z" * (LINGER_BYTES + 1))
    assert transport.disconnecting


def test_pipelined_requests_each_answered_in_order():
    sink = Sink(Receipt(3, True))
    channel, transport, _clock = connect(sink)
    channel.dataReceived(request(b'{"n": 1}') + request(b'{"n": 2}'))
    answers = transport.value().count(b"HTTP/1.1 202 Accepted")
    assert answers == 2 and [text for text, _ in sink.received] == ['{"n": 1}', '{"n": 2}']
