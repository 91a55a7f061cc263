"""The HTTP guards (engine/connectors/http/guard.py) on a ``task.Clock``: a request that trickles
in is cut at ``request_timeout`` whatever its pace (slowloris), a prompt one is never cut, and one
address gets at most ``max_connections_per_address`` -- on the HTTP source and, through
``guard()``, on the admin API's site."""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet import address, defer, task
from twisted.internet.testing import StringTransport
from twisted.web import resource

from engine.admin.auth import AdminSite, Tokens
from engine.connectors.http.guard import ADMIN_REQUEST_TIMEOUT, guard
from engine.connectors.http.source import HttpSourceFactory
from engine.core.contracts import Receipt


class Sink:
    def __init__(self) -> None:
        self.received: list[str] = []

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        self.received.append(text)
        return defer.succeed(Receipt(len(self.received), True))

    def note_rejected(self, reason):
        pass

    def note_event(self, kind, detail):
        pass


def source_factory(clock, **options):
    base = {"path": "/in", "token": "", "max_body": 4096, "max_headers": 20, "max_header_size": 4096,
            "idle_timeout": 60.0, "max_connections": 10, "max_connections_per_address": 2,
            "request_timeout": 2.0, "ack": "stored"}
    config = SimpleNamespace(name="unit", inbound="json", source=SimpleNamespace(options={**base, **options}))
    return HttpSourceFactory(config, Sink(), clock)


def connect(factory, host: str = "10.2.2.2"):
    channel = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", host, 40000))
    channel.makeConnection(transport)
    return channel, transport


def status_of(transport) -> int | None:
    value = transport.value()
    return int(value.split(b" ", 2)[1]) if value else None


def test_a_request_trickling_in_is_cut_at_the_deadline_however_slow_its_bytes():
    clock = task.Clock()
    channel, transport = connect(source_factory(clock))
    head = b"POST /in HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    for byte in range(19):                            # one byte every 0.1 s: the idle timeout never fires
        channel.dataReceived(head[byte:byte + 1])
        clock.advance(0.1)
    assert status_of(transport) is None
    clock.advance(0.1)
    assert status_of(transport) == 408
    assert b"within 2s" in transport.value()
    clock.advance(1.0)                                # the usual short drain, then closed
    assert transport.disconnecting


def test_a_prompt_request_is_answered_and_the_next_one_gets_its_own_deadline():
    clock = task.Clock()
    factory = source_factory(clock)
    channel, transport = connect(factory)
    body = json.dumps({"n": 1}).encode()
    channel.dataReceived(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    clock.advance(1.5)
    channel.dataReceived(body)
    assert status_of(transport) == 202
    clock.advance(10)                                 # the finished request's deadline is gone
    assert b"408" not in transport.value() and factory.sink.received == ['{"n": 1}']
    transport.clear()
    channel.dataReceived(b"POST /in HTTP/1.1\r\n")   # keep-alive: a new request, a new deadline
    clock.advance(2.0)
    assert status_of(transport) == 408


def test_one_address_gets_its_share_others_still_get_in():
    clock = task.Clock()
    factory = source_factory(clock)
    first, second = connect(factory), connect(factory)
    third_channel, third = connect(factory)
    assert status_of(third) == 503 and b"from your address" in third.value()
    assert status_of(first[1]) is None and status_of(second[1]) is None
    _other, elsewhere = connect(factory, host="10.3.3.3")
    assert status_of(elsewhere) is None and len(factory.connections) == 3


def test_guard_gives_the_admin_site_both():
    clock = task.Clock()
    site = guard(AdminSite(resource.Resource(), Tokens([("admin", "t")]), clock), max_connections_per_address=1)
    first_channel, first = connect(site)
    _second, second = connect(site)
    assert status_of(second) == 503                   # the address has its one connection
    first_channel.dataReceived(b"GET /api/channels HTTP/1.1\r\n")
    clock.advance(ADMIN_REQUEST_TIMEOUT)
    assert status_of(first) == 408


def test_a_request_refused_before_its_deadline_is_not_cut_again():
    clock = task.Clock()
    factory = source_factory(clock, token="secret")
    channel, transport = connect(factory)
    channel.dataReceived(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert status_of(transport) == 401
    clock.advance(5)
    assert transport.value().count(b"HTTP/1.1") == 1 and factory.gate.refusals.total == 0
