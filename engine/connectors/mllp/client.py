"""An MLLP client connection: send frames, read their answer frames in order, with a timeout.

Used by the MLLP destination (one persistent connection per destination) and by
``switchboard send``.  One message in flight by default: order is the point of an interface
queue.  The destination's ``max_in_flight`` lets several frames go out before their answers
(pipelining); MLLP peers answer in order on a connection, so answers are matched first in, first
out, and anything that breaks the connection fails every request still waiting on it.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from engine.connectors.mllp.framing import FrameDecoder, frame
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
        self.waiting: deque[tuple[defer.Deferred, object]] = deque()  # (answer, its timer), in send order
        self.closed: defer.Deferred = defer.Deferred()
        self.connected_ok = False

    def connectionMade(self) -> None:
        self.connected_ok = True

    def request(self, payload: bytes, timeout: float, reactor) -> defer.Deferred:
        """Write one frame; fire with its answer payload (bytes) or fail."""
        waiting = defer.Deferred()
        self.waiting.append((waiting, reactor.callLater(timeout, self._timeout)))
        self.transport.write(frame(payload))
        return waiting

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if event.kind == "frame":
                self._answer(event.payload)
            elif event.kind in ("bad_end", "oversize"):
                self._fail(BadFraming(f"peer sent an invalid frame ({event.kind})"))
                self.transport.abortConnection()
                return
            # junk between answers is ignored: some peers send a stray CR or LF

    def _answer(self, payload: bytes) -> None:
        if not self.waiting:
            return  # an answer nobody is waiting for (after a timeout, or unsolicited)
        waiting, timer = self.waiting.popleft()
        if timer.active():
            timer.cancel()
        waiting.callback(payload)

    def _fail(self, error: Exception) -> None:
        """The connection is done for: every request still waiting fails with ``error``."""
        pending, self.waiting = self.waiting, deque()
        for waiting, timer in pending:
            if timer.active():
                timer.cancel()
            waiting.errback(error)

    def _timeout(self) -> None:
        self._fail(AnswerTimeout("no answer within the ACK timeout"))
        self.transport.abortConnection()

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
        self._connect_waiters: list[defer.Deferred] = []

    def request(self, payload: bytes, timeout: float) -> defer.Deferred:
        """Send ``payload`` on the connection (opened first if needed; requests made while it
        opens wait for the same connection) and fire with the answer."""
        d = self._connected()
        d.addCallback(lambda proto: proto.request(payload, timeout, self.reactor))
        d.addErrback(self._forget)
        return d

    def _connected(self) -> defer.Deferred:
        proto = self.protocol
        if proto is not None and proto.transport is not None and proto.transport.connected:
            return defer.succeed(proto)
        waiter = defer.Deferred()
        self._connect_waiters.append(waiter)
        if len(self._connect_waiters) == 1:
            factory = protocol.Factory.forProtocol(MllpClientProtocol)
            factory.noisy = False  # Twisted would log "Starting factory" at every (re)connect
            self.endpoint.connect(factory).addBoth(self._connect_done)
        return waiter

    def _connect_done(self, result) -> None:
        if not isinstance(result, Failure):
            self.protocol = result
        waiters, self._connect_waiters = self._connect_waiters, []
        for waiter in waiters:
            waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)

    def _forget(self, failure):
        """A failed request leaves no connection behind: the next one connects afresh."""
        self.protocol = None
        return failure

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
