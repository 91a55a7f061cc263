"""The MLLP client protocol without a socket: answers matched in order, a timeout on ``task.Clock``,
a broken frame failing what waits."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport

from engine.connectors.mllp.client import AnswerTimeout, BadFraming, MllpClientProtocol
from engine.connectors.mllp.framing import frame


def connected():
    protocol = MllpClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_answers_are_matched_first_in_first_out():
    clock = task.Clock()
    protocol, transport = connected()
    first = protocol.request(b"MSH|1", 5, clock)
    second = protocol.request(b"MSH|2", 5, clock)
    assert transport.value() == frame(b"MSH|1") + frame(b"MSH|2")
    got = []
    first.addCallback(got.append)
    second.addCallback(got.append)
    protocol.dataReceived(frame(b"MSA|AA|1") + frame(b"MSA|AA|2")[:4])
    assert got == [b"MSA|AA|1"]
    protocol.dataReceived(frame(b"MSA|AA|2")[4:])
    assert got == [b"MSA|AA|1", b"MSA|AA|2"]
    assert not clock.getDelayedCalls()


def test_no_answer_within_the_timeout_fails_the_request():
    clock = task.Clock()
    protocol, _transport = connected()
    waiting = protocol.request(b"MSH|1", 30, clock)
    failures = []
    waiting.addErrback(failures.append)
    clock.advance(29.9)
    assert failures == []
    clock.advance(0.2)
    assert len(failures) == 1 and failures[0].check(AnswerTimeout)


def test_a_broken_answer_frame_fails_the_request_and_drops_the_connection():
    clock = task.Clock()
    protocol, transport = connected()
    waiting = protocol.request(b"MSH|1", 30, clock)
    failures = []
    waiting.addErrback(failures.append)
    protocol.dataReceived(b"\x0bMSA|AA|1\x1cX")
    assert len(failures) == 1 and failures[0].check(BadFraming)
    assert transport.disconnecting
    assert "MSA" not in str(failures[0].value)          # PHI-free: the reason names the kind only
