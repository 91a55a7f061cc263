"""An MLLP client connection: send one frame, read one answer frame, with a timeout.

Used by the MLLP destination (one persistent connection per destination) and by
``switchboard send``.  Request/response, one message in flight: order is the point of an
interface queue, and MLLP peers answer in order anyway.
"""

from __future__ import annotations

from twisted.internet import defer, protocol

from engine.connectors.mllp_framing import FrameDecoder, frame
from engine.connectors.tls import client_endpoint

MAX_ANSWER = 16 * 1024 * 1024


class AnswerTimeout(Exception):
    """No answer frame within ack_timeout."""


class ConnectionClosed(Exception):
    """The peer closed or reset the connection before answering."""


class BadFraming(Exception):
    """The peer answered with bytes that are not a valid MLLP frame."""


class MllpClientProtocol(protocol.Protocol):
    def __init__(self) -> None:
        self.decoder = FrameDecoder(MAX_ANSWER)
        self.waiting: defer.Deferred | None = None
        self.timer = None
        self.closed: defer.Deferred = defer.Deferred()
        self.connected_ok = False

    def connectionMade(self) -> None:
        self.connected_ok = True

    def request(self, payload: bytes, timeout: float, reactor) -> defer.Deferred:
        """Write one frame; fire with the answer payload (bytes) or fail."""
        if self.waiting is not None:
            raise RuntimeError("one request at a time")
        self.waiting = defer.Deferred()
        self.timer = reactor.callLater(timeout, self._timeout)
        self.transport.write(frame(payload))
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if event.kind == "frame":
                self._answer(event.payload)
            elif event.kind in ("bad_end", "oversize"):
                self._fail(BadFraming(f"peer sent an invalid frame ({event.kind})"))
                self.transport.abortConnection()
            # junk between answers is ignored: some peers send a stray CR or LF

    def _answer(self, payload: bytes) -> None:
        waiting, self.waiting = self.waiting, None
        self._cancel_timer()
        if waiting is not None:
            waiting.callback(payload)

    def _fail(self, error: Exception) -> None:
        waiting, self.waiting = self.waiting, None
        self._cancel_timer()
        if waiting is not None:
            waiting.errback(error)

    def _timeout(self) -> None:
        self.timer = None
        self._fail(AnswerTimeout("no answer within the ACK timeout"))
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def connectionLost(self, reason=None) -> None:
        self._fail(ConnectionClosed("connection closed before the answer"))
        if not self.closed.called:
            self.closed.callback(None)


class MllpConnection:
    """A lazily (re)connected MLLP client to one peer."""

    def __init__(self, reactor, host: str, port: int, *, tls=None, connect_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.endpoint = client_endpoint(reactor, host, port, tls, timeout=connect_timeout)
        self.protocol: MllpClientProtocol | None = None

    @defer.inlineCallbacks
    def request(self, payload: bytes, timeout: float):
        if self.protocol is None or not self.protocol.transport or not self.protocol.transport.connected:
            factory = protocol.Factory.forProtocol(MllpClientProtocol)
            self.protocol = yield self.endpoint.connect(factory)
        proto = self.protocol
        try:
            answer = yield proto.request(payload, timeout, self.reactor)
        except Exception:
            self.protocol = None
            raise
        return answer

    def close(self, grace: float = 5.0) -> defer.Deferred:
        """Close politely; abort after ``grace`` seconds (a TLS peer that never answers our
        close_notify nor closes its socket would otherwise hold the daemon's stop forever)."""
        proto, self.protocol = self.protocol, None
        if proto is None or proto.transport is None or not proto.transport.connected:
            return defer.succeed(None)
        proto.transport.loseConnection()
        timer = self.reactor.callLater(grace, proto.transport.abortConnection)
        proto.closed.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return proto.closed
