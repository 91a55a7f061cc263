"""The MLLP listener (``[source] type = "mllp"``): frames in, one ACK frame out per frame, in order.

Every rule of RELIABILITY 1-17 lands here or in ``mllp_framing``: junk before 0x0B is counted and
dropped, a frame over ``max_message_size`` closes the connection before the buffer grows, a bad
end byte answers AR and closes, an idle connection (with or without a partial frame) is closed
after ``idle_timeout``, and a connection over ``max_connections`` is closed at once.  ACKs are
written in the order frames arrived even though storing is asynchronous, each in one ``write``.
Nothing here logs content: counts, ids and peer addresses only.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from engine.connectors.mllp.framing import FrameDecoder, frame
from engine.connectors.listener import ListeningSource
from engine.core.ingest import answer_frame
from engine.hl7.ack import build_reject
from engine.hl7.encoding import normalize_segments
from engine.hookspecs import hookimpl
from engine.hl7.charset import decode_frame
from engine.config.schema import OptionSpec, choice_spec, positive

log = Logger(namespace="switchboard.mllp")


class MllpServerProtocol(protocol.Protocol, TimeoutMixin):
    """One MLLP connection: decode frames, hand them on, answer in arrival order."""

    def __init__(self, factory: "MllpServerFactory") -> None:
        self.factory = factory
        self.decoder = FrameDecoder(factory.max_size, lenient_end=factory.lenient_end)
        self.answers: deque[list] = deque()  # [answer bytes or None, close_after]
        self.closing = False

    def connectionMade(self) -> None:
        if not self.factory.admit(self):
            log.warn("{channel}: connection from {peer} refused: {limit} connections open",
                     channel=self.factory.channel_name, peer=self._peer(), limit=self.factory.max_connections)
            self.transport.abortConnection()
            return
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
        for event in self.decoder.feed(data):
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

    def timeoutConnection(self) -> None:
        if self.decoder.partial:
            self.factory.sink.note_event("partial_frame_discarded", "idle timeout inside a frame")
            self.decoder.inside = False  # reported here; connectionLost must not report it again
        self.transport.loseConnection()

    def _take_frame(self, payload: bytes) -> None:
        slot = [None, False]
        self.answers.append(slot)
        text, original = decode_frame(payload)  # original: the payload, only if a byte was invalid
        d = answer_frame(self.factory.sink, normalize_segments(text), split_batches=self.factory.split_batches,
                         original=original)
        d.addErrback(self._internal_error)
        d.addCallback(self._fill, slot)

    def _internal_error(self, failure) -> str:
        log.failure("{channel}: internal error answering a frame", failure, channel=self.factory.channel_name)
        return build_reject("internal error")

    def _fill(self, answer: str, slot: list) -> None:
        slot[0] = b"" if self.factory.silent else answer.encode("utf-8")
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
                self.transport.loseConnection()
        if not self.answers:
            self.factory.idle(self)

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


class MllpServerFactory(protocol.Factory):
    noisy = False  # Twisted would log every factory start/stop: ours says it in one line
    def __init__(self, channel_name: str, sink, options) -> None:
        self.channel_name = channel_name
        self.sink = sink
        self.max_size = options["max_message_size"]
        self.idle_timeout = options["idle_timeout"] or None
        self.max_connections = options["max_connections"]
        self.lenient_end = options.get("lenient_end_byte", False)
        self.split_batches = options.get("split", "none") == "hl7-batch"
        self.silent = options.get("ack") == "none"  # ack = "none": store, never answer
        self.connections: set[MllpServerProtocol] = set()
        self._drained: list[defer.Deferred] = []

    def buildProtocol(self, addr):
        return MllpServerProtocol(self)

    def admit(self, connection) -> bool:
        if len(self.connections) >= self.max_connections:
            return False
        self.connections.add(connection)
        return True

    def release(self, connection) -> None:
        self.connections.discard(connection)
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
        "tls": OptionSpec("tls"),
        "lenient_end_byte": OptionSpec("bool", False),  # RELIABILITY 3: 0x1C alone ends a frame
        "split": choice_spec("none", "none", "hl7-batch"),
    }
    default_inbound = "hl7"

    def __init__(self, channel_config, sink, reactor) -> None:
        self.config = channel_config
        self.options = channel_config.source.options
        self.reactor = reactor
        self.factory = MllpServerFactory(channel_config.name, sink, self.options)
        self.port = None


@hookimpl
def register_sources():
    return [MllpSource]


@hookimpl
def register_destinations():
    from engine.connectors.mllp.destination import MllpDestination

    return [MllpDestination]
