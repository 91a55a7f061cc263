"""``switchboard send``: send messages over MLLP one at a time and print each ACK's MSA."""

from __future__ import annotations

import sys

from twisted.internet import defer

from engine.connectors.mllp.client import MllpConnection
from engine.hl7.ack import parse_ack
from engine.hl7.msh import peek_msh


@defer.inlineCallbacks
def send_all(reactor, host: str, port: int, messages: list[str], timeout: float, failures: list[int]):
    connection = MllpConnection(reactor, host, port)
    try:
        for index, message in enumerate(messages, 1):
            msh = peek_msh(message)
            control_id = msh.control_id if msh else ""
            try:
                answer = yield connection.request(message.encode("utf-8"), timeout)
            except Exception as error:
                print(f"{index} {control_id or '-'} no ACK: {error}")
                failures.append(index)
                continue
            try:
                code, acked_id, text = parse_ack(answer.decode("utf-8", "replace").replace("\n", "\r"))
            except ValueError:
                print(f"{index} {control_id or '-'} answer is not an HL7 ACK")
                failures.append(index)
                continue
            print(f"{index} {control_id or '-'} {code} {acked_id}{(' ' + text) if text else ''}")
            if code not in ("AA", "CA") or acked_id != control_id:
                failures.append(index)
    finally:
        yield connection.close()
    sys.stdout.flush()
