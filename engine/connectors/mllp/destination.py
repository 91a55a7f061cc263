"""The MLLP sender (``[[destination]] type = "mllp"``): deliver, read the ACK, judge it.

AA/CA: SENT.  AE/AR/CE/CR: permanent ERROR with the ACK kept (the peer refused this message;
retrying would not change its mind).  No answer in ``ack_timeout``: transient, and the attempt is
marked a possible duplicate (the peer may have taken it).  A refused or reset connection, garbage
or an ACK whose MSA-2 is not our MSH-10: transient (RELIABILITY 23-25).

``max_in_flight = N`` (default 1) pipelines: up to N messages go out before the first one's ACK,
ACKs are matched in order (engine/connectors/mllp_client.py), and the queue (engine/core/queue.py)
retries from the oldest unsent on a transient failure -- a message refused transiently while
later ones were accepted then arrives after them.  For peers that read one connection in order
and answer every frame, and only where that reordering on a failure is acceptable.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionLost, ConnectionRefusedError, TimeoutError

from engine.connectors.mllp.client import AnswerTimeout, BadFraming, ConnectionClosed, MllpConnection
from engine.core.contracts import PermanentError, SendResult, TransientError
from engine.hl7.ack import parse_ack
from engine.hl7.encoding import with_final_cr
from engine.hl7.msh import peek_msh
from engine.config.schema import OptionSpec, peer_port, positive

ACCEPT = ("AA", "CA")
REFUSE = ("AE", "AR", "CE", "CR")


class MllpDestination:
    type_name = "mllp"
    option_schema = {
        "connect": OptionSpec("address", required=True, check=peer_port),
        "ack_timeout": OptionSpec("duration", "30s", check=positive),
        "connect_timeout": OptionSpec("duration", "10s", check=positive),
        "tls": OptionSpec("tls"),
        # messages sent before the first one's ACK (pipelining; engine/core/queue.py): 1 = strict order
        "max_in_flight": OptionSpec("int", 1, check=lambda n: None if 1 <= n <= 64 else "must be 1 to 64"),
    }

    def __init__(self, config, context, reactor) -> None:
        options = config.options
        host, port = options["connect"]
        self.ack_timeout = options["ack_timeout"]
        self.max_in_flight = options.get("max_in_flight", 1)  # the queue reads it (pipelining)
        self.connection = MllpConnection(reactor, host, port, tls=options.get("tls"),
                                         connect_timeout=options.get("connect_timeout", 10.0))

    def send(self, delivery) -> defer.Deferred:
        """Send one message and read its ACK (a Deferred chain, not ``inlineCallbacks``: this runs
        once per delivered message, and the generator machinery cost more than the rest of it)."""
        body = with_final_cr(delivery.body)   # HL7 on the wire: its last segment ends with CR (§3.5)
        msh = peek_msh(body)
        d = self.connection.request(body.encode("utf-8"), self.ack_timeout)
        d.addCallbacks(_judge_answer, _transport_failure, callbackArgs=(msh.control_id if msh else "",))
        return d

    def close(self):
        return self.connection.close()


def _transport_failure(failure):
    error = failure.value
    if isinstance(error, AnswerTimeout):
        raise TransientError("no ACK within ack_timeout", possible_duplicate=True) from None
    if isinstance(error, (ConnectionRefusedError, ConnectError, TimeoutError)):
        raise TransientError(f"cannot connect: {type(error).__name__}") from None
    if isinstance(error, (ConnectionClosed, ConnectionLost, BadFraming)):
        raise TransientError(f"connection failed: {error}", possible_duplicate=True) from None
    return failure


def _judge_answer(answer: bytes, expected: str) -> SendResult:
    text = answer.decode("utf-8", "replace")
    try:
        code, control_id, _text = parse_ack(text.replace("\n", "\r"))
    except ValueError:
        raise TransientError("the peer's answer is not an HL7 ACK", text) from None
    if expected and control_id != expected:
        raise TransientError("the ACK's MSA-2 does not match the message's MSH-10", text)
    if code in ACCEPT:
        return SendResult(text)
    if code in REFUSE:
        raise PermanentError(f"peer answered {code}", text)
    raise TransientError(f"unknown MSA-1 code {code!r}", text)
