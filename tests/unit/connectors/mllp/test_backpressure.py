"""The MLLP listener's backpressure and connection admission, in process (the end-to-end flood is
tests/e2e/test_hardening_net_e2e.py): the transport's pause stops the decoding, unanswered frames
are bounded, a read's frames are decoded a turn's budget at a time, and a connection whose peer
does not read is aborted at its idle timeout rather than left to drain for ever."""

from __future__ import annotations

from twisted.internet import address, defer, task
from twisted.internet.testing import StringTransport

from engine.connectors.mllp.framing import FrameDecoder
from engine.connectors.mllp.source import MAX_PENDING, TURN_BUDGET, MllpServerFactory
from engine.core.contracts import Receipt

EMPTY = b"\x0b\x1c\x0d"


def message(number: int) -> bytes:
    return (b"\x0b" + f"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|C{number}|P|2.5\rPID|1||M".encode()
            + b"\x1c\x0d")


class Sink:
    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.held: list[defer.Deferred] = []
        self.received = 0

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        self.received += 1
        d = defer.Deferred()
        if self.hold:
            self.held.append(d)
        else:
            d.callback(Receipt(self.received, True))
        return d

    def note_rejected(self, reason):
        pass

    def note_event(self, kind, detail):
        pass


def factory(sink, clock, **options):
    base = {"max_message_size": 1 << 20, "idle_timeout": 5.0, "max_connections": 10,
            "max_connections_per_address": 3, "ack": "stored"}
    return MllpServerFactory("unit", sink, {**base, **options}, clock)


def connect(f, host: str = "10.1.1.1"):
    protocol = f.buildProtocol(None)
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", host, 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def answered(transport) -> int:
    return sum(1 for e in FrameDecoder(1 << 24).feed(transport.value()) if e.kind == "frame")


def test_a_full_write_buffer_stops_reading_and_decoding_until_it_drains():
    clock = task.Clock()
    protocol, transport = connect(factory(Sink(), clock))
    assert transport.producer is protocol and transport.streaming
    protocol.pauseProducing()                         # what the transport does when its buffer is full
    assert transport.producerState == "paused"
    protocol.dataReceived(message(1) + message(2))
    assert answered(transport) == 0                   # kept as bytes, not decoded
    protocol.resumeProducing()
    assert transport.producerState == "producing" and answered(transport) == 2


def test_unanswered_frames_are_bounded_per_connection():
    clock, sink = task.Clock(), Sink(hold=True)
    protocol, transport = connect(factory(sink, clock))
    protocol.dataReceived(b"".join(message(n) for n in range(MAX_PENDING + 50)))
    for _ in range(20):
        clock.advance(0)
    assert sink.received == MAX_PENDING and transport.producerState == "paused"
    for d in list(sink.held):
        sink.held.remove(d)
        d.callback(Receipt(1, True))
    for _ in range(20):
        clock.advance(0)
    assert sink.received == MAX_PENDING + 50
    for d in sink.held:
        d.callback(Receipt(1, True))
    assert answered(transport) == MAX_PENDING + 50 and transport.producerState == "producing"


def test_one_read_of_many_frames_is_decoded_a_budget_per_reactor_turn():
    clock = task.Clock()
    protocol, transport = connect(factory(Sink(), clock))
    protocol.dataReceived(EMPTY * 1000)               # one read: 1,000 empty frames (AR each)
    assert answered(transport) == TURN_BUDGET and transport.producerState == "paused"
    turns = 0
    while clock.calls and clock.calls[0].getTime() <= clock.seconds():   # a turn at a time
        call = clock.calls.pop(0)
        call.func(*call.args, **call.kw)
        turns += 1
        assert answered(transport) == min(1000, TURN_BUDGET * (turns + 1))
    assert answered(transport) == 1000 and transport.producerState == "producing"


def test_idle_timeout_aborts_a_connection_whose_peer_does_not_read():
    clock = task.Clock()
    protocol, transport = connect(factory(Sink(), clock))
    protocol.pauseProducing()
    clock.advance(5.0)
    assert transport.disconnected                      # aborted: its answers would never drain
    protocol2, transport2 = connect(factory(Sink(), clock))
    clock.advance(5.0)
    assert transport2.disconnecting and not transport2.disconnected and transport2.producer is None


def test_an_idle_connection_that_never_had_a_message_makes_room_for_a_new_one():
    clock = task.Clock()
    f = factory(Sink(), clock, max_connections_per_address=2)
    sender, sender_transport = connect(f)
    sender.dataReceived(message(1))                   # a message taken: never evicted
    idle, idle_transport = connect(f)
    newcomer, newcomer_transport = connect(f)
    assert idle_transport.disconnected and not sender_transport.disconnecting
    assert f.connections == {sender, newcomer}
    third, third_transport = connect(f)               # the newcomer is idle and never sent: it goes
    assert newcomer_transport.disconnected and f.connections == {sender, third}
    elsewhere, elsewhere_transport = connect(f, host="10.9.9.9")
    assert not elsewhere_transport.disconnecting and len(f.connections) == 3
    f.gate.stop()
