"""Connections that send at once (engine/connectors/send_at_once.py), on real loopback sockets:
what the kernel takes leaves in the same reactor turn, what it does not take is queued behind it
in order, and both listeners and client endpoints use it."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor, threads

from engine.connectors.send_at_once import SendAtOnceClient, SendAtOnceServer, send_at_once
from engine.connectors.tls import client_endpoint

CHUNK = 64 * 1024
CHUNKS = 160  # 10 MB: far more than the socket buffers hold, so most of it is queued in Twisted


class Writer(protocol.Protocol):
    """Writes one small answer on an idle connection, then a stream far larger than the socket buffers."""

    def connectionMade(self) -> None:
        self.transport.write(b"hello")
        self.factory.left_at_once.callback(not self.transport._tempDataBuffer and not self.transport.dataBuffer)
        for index in range(CHUNKS):
            self.transport.write(bytes([index % 251]) * CHUNK)
        self.factory.queued.callback(bool(self.transport._tempDataBuffer or self.transport.dataBuffer))
        self.transport.loseConnection()


def read_all(port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window is set then
        client.settimeout(30)  # a stall fails the test instead of hanging it
        client.connect(("127.0.0.1", port))
        chunks = []
        while True:
            chunk = client.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest_twisted.ensureDeferred
async def test_a_listener_sends_at_once_and_queues_what_the_kernel_does_not_take_in_order():
    factory = protocol.Factory.forProtocol(Writer)
    factory.left_at_once, factory.queued = defer.Deferred(), defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    send_at_once(port)
    try:
        assert port.transport is SendAtOnceServer
        received = await threads.deferToThread(read_all, port.getHost().port)
        assert await factory.left_at_once is True   # "hello" left in the turn that wrote it
        assert await factory.queued is True         # what the kernel did not take waited in Twisted
        expected = b"hello" + b"".join(bytes([index % 251]) * CHUNK for index in range(CHUNKS))
        assert len(received) == len(expected) and received == expected
    finally:
        await port.stopListening()


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Collect(protocol.Protocol):
    def connectionMade(self) -> None:
        self.received = b""
        self.done = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= 2 * CHUNK + 3 and not self.done.called:
            self.done.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_a_client_endpoint_connects_with_a_connection_that_sends_at_once():
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    try:
        endpoint = client_endpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)
        client = await endpoint.connect(protocol.Factory.forProtocol(Collect))
        assert isinstance(client.transport, SendAtOnceClient)
        client.transport.writeSequence([b"abc", b"x" * CHUNK, b"y" * CHUNK])
        echoed = await client.done
        assert echoed == b"abc" + b"x" * CHUNK + b"y" * CHUNK
        client.transport.loseConnection()
    finally:
        await port.stopListening()
