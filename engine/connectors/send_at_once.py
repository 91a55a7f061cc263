"""Connections that send at once: a write on a connection with nothing queued leaves in the same
reactor turn instead of the next one (listeners' connections and the MLLP client's).

Twisted buffers every write and sends it when the reactor next finds the socket writable: per
answer, an ``epoll_ctl`` to watch the socket, one more turn of the loop, the ``send``, and an
``epoll_ctl`` to stop watching it.  An engine writes one ACK per message, nearly always on a
connection with nothing else waiting, so that buffering buys nothing and costs a fixed share of
every message (bench/README.md, "Cuts, this round").  ``SendAtOnceServer`` sends when nothing is queued
before the write, and hands what the kernel did not take (a slow reader, a full socket buffer)
to Twisted's own buffering, so order and back-pressure stay Twisted's.  A write while a producer
is registered or the connection is closing takes Twisted's path unchanged.  TLS connections get
it too: their ciphertext is written to the same TCP transport.
"""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.posixbase import PosixReactorBase
from twisted.protocols.tls import TLSMemoryBIOFactory


class _SendAtOnce:
    """The write of ``tcp.Connection``'s subclasses, first trying the socket when nothing is queued."""

    def write(self, data: bytes) -> None:
        if (type(data) is bytes and 0 < len(data) <= self.SEND_LIMIT and self.connected
                and not self.disconnecting and not self._writeDisconnected and self.producer is None
                and not self._tempDataBuffer and self.offset == len(self.dataBuffer)):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0  # EAGAIN, or a broken connection that Twisted's own send will meet and close
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)

    def writeSequence(self, iovec) -> None:
        self.write(b"".join(iovec))


class SendAtOnceServer(_SendAtOnce, tcp.Server):
    pass


class SendAtOnceClient(_SendAtOnce, tcp.Client):
    pass


class _Connector(tcp.Connector):
    def _makeTransport(self) -> tcp.Client:
        return SendAtOnceClient(self.host, self.port, self.bindAddress, self, self.reactor)


class SendAtOnceConnecting:
    """The reactor as a client endpoint sees it: ``connectTCP`` and ``connectSSL`` make
    ``SendAtOnceClient`` connections; everything else is the reactor's own."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):  # noqa: N802 - Twisted's name
        connector = _Connector(host, port, factory, timeout, bindAddress, self._reactor)
        connector.connect()
        return connector

    def connectSSL(self, host, port, factory, contextFactory, timeout=30, bindAddress=None):  # noqa: N802, N803
        return self.connectTCP(host, port, TLSMemoryBIOFactory(contextFactory, True, factory), timeout, bindAddress)


def connecting(reactor):
    """What a client endpoint should connect through: ``SendAtOnceConnecting`` over a real
    reactor, the reactor itself otherwise (a test's ``MemoryReactor`` records its connections)."""
    return SendAtOnceConnecting(reactor) if isinstance(reactor, PosixReactorBase) else reactor


def send_at_once(port) -> None:
    """Make ``port`` (a listening TCP or TLS port) accept its connections as ``SendAtOnceServer``."""
    if getattr(port, "transport", None) is tcp.Server:
        port.transport = SendAtOnceServer
