"""The MLLP listener (``[source] type = "mllp"``): frames in, one ACK frame out per frame, in order.

Every rule of RELIABILITY 1-17 lands here or in ``mllp_framing``: junk before 0x0B is counted and
dropped, a frame over ``max_message_size`` closes the connection before the buffer grows, a bad
end byte answers AR and closes, an idle connection (with or without a partial frame) is closed
after ``idle_timeout``, and a connection over ``max_connections`` or
``max_connections_per_address`` is closed at once unless an idle one that never had a message
taken can make room (``engine.connectors.listener.ConnectionGate``; catalogue H3).  ACKs are
written in the order frames arrived even though storing is asynchronous, each in one ``write``.
A peer that does not read its ACKs is not read either (``MllpServerProtocol``: backpressure).
Nothing here logs content: counts, ids and peer addresses only.
"""

from __future__ import annotations

import socket
import time
from collections import deque

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from engine.connectors.mllp.framing import FrameDecoder, frame
from engine.connectors.listener import ConnectionGate, ListeningSource, peer_host
from engine.core.ingest import answer_frame
from engine.hl7.ack import build_reject
from engine.hl7.encoding import normalize_segments
from engine.hookspecs import hookimpl
from engine.hl7.charset import decode_frame
from engine.config.schema import OptionSpec, choice_spec, positive

log = Logger(namespace="switchboard.mllp")

MAX_PENDING = 256              # frames read but not yet answered, per connection, before reading pauses
MAX_PENDING_BYTES = 8 << 20    # ...or their payload bytes
SEND_BUFFER = 64 << 10         # the kernel's send buffer per connection (it doubles it for bookkeeping)
TURN_BUDGET = 64               # frames decoded per connection before the reactor serves the others


@implementer(IPushProducer)
class MllpServerProtocol(protocol.Protocol, TimeoutMixin):
    """One MLLP connection: decode frames, hand them on, answer in arrival order.

    Backpressure: the protocol is registered as the transport's streaming producer, so Twisted
    calls ``pauseProducing`` once our unsent ACKs pass the transport's buffer (64 KB: a client
    that does not read its ACKs) and ``resumeProducing`` once they drained.  While paused, or
    while more than ``MAX_PENDING`` frames (or ``MAX_PENDING_BYTES``) wait for their answers, the
    socket is not read and bytes already read stay undecoded in the decoder: a client that sends
    without reading gets TCP backpressure instead of growing our memory."""

    def __init__(self, factory: "MllpServerFactory") -> None:
        self.factory = factory
        self.decoder = FrameDecoder(factory.max_size, lenient_end=factory.lenient_end)
        self.answers: deque[list] = deque()  # [answer bytes or None, close_after]
        self.pending_bytes = 0               # payload bytes of frames not yet answered
        self.closing = False
        self.write_paused = False            # the transport's buffer is full (the peer does not read)
        self.reading_paused = False          # we asked the transport to stop reading
        self.accepted = False                # a message from this connection was taken (evictable otherwise)
        self.last_active = time.monotonic()
        self.yielding = False                # the decode loop gave its turn away (TURN_BUDGET)
        self.registered = False              # we are the transport's producer
        self._decoding = False

    def connectionMade(self) -> None:
        if not self.factory.gate.admit(self, peer_host(self.transport)):
            self.closing = True
            self.transport.abortConnection()
            return
        self.transport.registerProducer(self, True)
        self.registered = True
        _cap_send_buffer(self.transport)
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason=None) -> None:
        self.setTimeout(None)
        self.factory.release(self)
        if self.decoder.partial:
            self.factory.sink.note_event("partial_frame_discarded", "connection closed inside a frame")

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.resetTimeout()
        self.last_active = time.monotonic()
        self.decoder.append(data)
        self._decode()

    def _decode(self) -> None:
        """Handle the decoder's events until it has none or reading is paused (not re-entered:
        an answer given at once may resume reading from inside this loop)."""
        if self._decoding:
            return
        self._decoding = True
        try:
            budget = TURN_BUDGET
            while not self.reading_paused and not self.closing:
                if not budget:
                    self._yield_turn()
                    break
                event = self.decoder.next_event()
                if event is None:
                    break
                self._handle(event)
                budget -= 1
        finally:
            self._decoding = False

    def _yield_turn(self) -> None:
        """A read can hold thousands of frames (64 KB of empty ones: 21,845): after
        ``TURN_BUDGET`` of them, stop reading and let the reactor serve everyone else first."""
        self.yielding = True
        self._steer()
        self.factory.call_soon(self._after_yield)

    def _after_yield(self) -> None:
        self.yielding = False
        self._steer()

    def _handle(self, event) -> None:
        if event.kind == "frame":
            self._take_frame(event.payload)
        elif event.kind == "junk":
            log.warn("{channel}: discarded {count} bytes outside any frame",
                     channel=self.factory.channel_name, count=event.count)
        elif event.kind == "bad_end":
            reason = "frame end byte 0x1C not followed by 0x0D"
            self.factory.sink.note_rejected(reason)
            self._queue_answer(build_reject(reason).encode(), close_after=True)
            self.closing = True
        elif event.kind == "oversize":
            log.warn("{channel}: frame over {limit} bytes from {peer}; connection closed",
                     channel=self.factory.channel_name, limit=self.factory.max_size, peer=self._peer())
            self.factory.sink.note_event("frame_too_large", f"over {self.factory.max_size} bytes")
            self.closing = True
            self.transport.abortConnection()

    # -- backpressure (IPushProducer, called by the transport) ---------------------------------
    def pauseProducing(self) -> None:
        self.write_paused = True
        self._steer()

    def resumeProducing(self) -> None:
        self.write_paused = False
        self._steer()

    def stopProducing(self) -> None:
        self.closing = True

    def _steer(self) -> None:
        """Pause or resume reading the socket from the write buffer and the unanswered frames."""
        hold = (self.write_paused or self.yielding or len(self.answers) >= MAX_PENDING
                or self.pending_bytes >= MAX_PENDING_BYTES)
        if self.transport is None or self.closing:
            return
        if hold and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()
        elif not hold and self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()
        if not hold:
            self._decode()      # what was read before the pause

    # -- closing -------------------------------------------------------------------------------
    def timeoutConnection(self) -> None:
        if self.decoder.partial:
            self.factory.sink.note_event("partial_frame_discarded", "idle timeout inside a frame")
            self.decoder.inside = False  # reported here; connectionLost must not report it again
        self.shut()

    def shut(self) -> None:
        """Close after the answers already written -- at once when the peer does not read them
        (they would never drain, and the connection would never close)."""
        self.closing = True
        if self.transport is None:
            return
        if self.write_paused:
            self.transport.abortConnection()
            return
        if self.registered:
            self.registered = False
            self.transport.unregisterProducer()   # a registered producer would keep the connection open
        self.transport.loseConnection()

    def evictable(self) -> bool:
        """Closing it loses nothing: no message was ever taken from it and no answer is owed."""
        return not self.accepted and not self.answers and not self.closing

    def evict(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abortConnection()

    # -- frames and answers --------------------------------------------------------------------
    def _take_frame(self, payload: bytes) -> None:
        slot = [None, False]
        self.answers.append(slot)
        size = len(payload)
        self.pending_bytes += size
        text, original = decode_frame(payload)  # original: the payload, only if a byte was invalid
        d = answer_frame(self, normalize_segments(text), split_batches=self.factory.split_batches,
                         original=original)
        d.addErrback(self._internal_error)
        d.addCallback(self._fill, slot, size)
        self._steer()

    # answer_frame's sink: the channel's, noting whether this connection had a message taken
    def receive(self, text: str, **kwargs):
        return self.factory.sink.receive(text, **kwargs).addCallback(self._noted)

    def _noted(self, receipt):
        if receipt is not None and getattr(receipt, "ok", False):
            self.accepted = True
        return receipt

    def note_rejected(self, reason: str) -> None:
        self.factory.sink.note_rejected(reason)

    def note_event(self, kind: str, detail: str) -> None:
        self.factory.sink.note_event(kind, detail)

    def _internal_error(self, failure) -> str:
        log.failure("{channel}: internal error answering a frame", failure, channel=self.factory.channel_name)
        return build_reject("internal error")

    def _fill(self, answer: str, slot: list, size: int) -> None:
        slot[0] = b"" if self.factory.silent else answer.encode("utf-8")
        self.pending_bytes -= size
        self._flush()

    def _queue_answer(self, answer: bytes, *, close_after: bool) -> None:
        self.answers.append([answer, close_after])
        self._flush()

    def _flush(self) -> None:
        while self.answers and self.answers[0][0] is not None:
            answer, close_after = self.answers.popleft()
            if self.transport is None or not self.transport.connected:
                continue
            if answer:
                self.transport.write(frame(answer))
            if close_after:
                self.shut()
        if not self.answers:
            self.factory.idle(self)
        self._steer()

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


def _cap_send_buffer(transport) -> None:
    """A fixed kernel send buffer for the ACK stream: without one Linux grows it up to 4 MB for a
    peer that never reads, and fills it with ~35,000 answers (a second of CPU) before our own
    buffer -- and with it backpressure -- is reached.  ACKs are small: pipelined ones by the
    hundred fit in SEND_BUFFER."""
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except (AttributeError, OSError):
        pass    # not a socket (a test's transport): nothing to cap


class MllpServerFactory(protocol.Factory):
    noisy = False  # Twisted would log every factory start/stop: ours says it in one line
    def __init__(self, channel_name: str, sink, options, reactor=None) -> None:
        self.channel_name = channel_name
        self.sink = sink
        self.max_size = options["max_message_size"]
        self.idle_timeout = options["idle_timeout"] or None
        self.max_connections = options["max_connections"]
        self.lenient_end = options.get("lenient_end_byte", False)
        self.split_batches = options.get("split", "none") == "hl7-batch"
        self.silent = options.get("ack") == "none"  # ack = "none": store, never answer
        self.gate = ConnectionGate(f"{channel_name}: MLLP", max_connections=self.max_connections,
                                   per_address=options.get("max_connections_per_address"), reactor=reactor,
                                   evict=True)
        self.connections: set[MllpServerProtocol] = self.gate.connections
        self.reactor = reactor
        self._drained: list[defer.Deferred] = []

    def call_soon(self, function) -> None:
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
        reactor.callLater(0, function)

    def buildProtocol(self, addr):
        connection = MllpServerProtocol(self)
        if self.reactor is not None:
            connection.callLater = self.reactor.callLater   # the idle timeout's clock
        return connection

    def release(self, connection) -> None:
        self.gate.release(connection)
        self.idle(connection)

    def idle(self, _connection=None) -> None:
        if self._drained and not any(c.answers for c in self.connections):
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred:
        """Fires once no connection waits for an answer (in-flight commits finished)."""
        d = defer.Deferred()
        self._drained.append(d)
        self.idle()
        return d


class MllpSource(ListeningSource):
    """``[source] type = "mllp"``: a TCP (or TLS) listener feeding one channel."""

    type_name = "mllp"
    option_schema = {
        "listen": OptionSpec("address", required=True),
        "ack": choice_spec("stored", "stored", "processed", "none"),
        "max_message_size": OptionSpec("size", "1MB", check=positive),
        "idle_timeout": OptionSpec("duration", "5m", check=positive),
        "max_connections": OptionSpec("int", 100, check=positive),
        "max_connections_per_address": OptionSpec("int", 10, check=positive),
        "tls": OptionSpec("tls"),
        "lenient_end_byte": OptionSpec("bool", False),  # RELIABILITY 3: 0x1C alone ends a frame
        "split": choice_spec("none", "none", "hl7-batch"),
    }
    default_inbound = "hl7"

    def __init__(self, channel_config, sink, reactor) -> None:
        self.config = channel_config
        self.options = channel_config.source.options
        self.reactor = reactor
        self.factory = MllpServerFactory(channel_config.name, sink, self.options, reactor)
        self.port = None


@hookimpl
def register_sources():
    return [MllpSource]


@hookimpl
def register_destinations():
    from engine.connectors.mllp.destination import MllpDestination

    return [MllpDestination]
