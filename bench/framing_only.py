"""The limit: a Twisted MLLP server that frames and answers AA, and does nothing else.

No parse, no store, no fsync: what is left is Twisted's reactor, TCP on loopback and MLLP framing
(``LineOnlyReceiver`` with the MLLP end block as its delimiter). Nothing built on Twisted can ACK
faster than this on the same machine, so the benchmark reports the engine as a fraction of it.

The ACK is precomputed except for MSA-2, which must echo the received MSH-10 for the load client's
check to pass; MSH-10 is taken by splitting the MSH line alone (cheap, no HL7 parse).

    python bench/framing_only.py --port 0      # prints "READY <port>" once listening
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineOnlyReceiver

START = b"\x0b"
END = b"\x1c\r"
ACK_HEAD = START + b"MSH|^~\\&|BENCH|LIMIT|||20261125000000||ACK^A08^ACK|"
ACK_MIDDLE = b"|P|2.5.1\rMSA|AA|"
ACK_TAIL = b"\r"


class FramingOnly(LineOnlyReceiver):
    """One MLLP frame in, one AA out."""

    delimiter = END
    MAX_LENGTH = 1024 * 1024

    def lineReceived(self, line: bytes) -> None:
        start = line.find(START)
        frame = line[start + 1 :] if start >= 0 else line
        msh_end = frame.find(b"\r")
        msh = frame[: msh_end if msh_end >= 0 else len(frame)]
        fields = msh.split(msh[3:4] or b"|", 10)  # fields[9] is MSH-10
        control_id = fields[9] if len(fields) > 9 else b""
        self.transport.writeSequence((ACK_HEAD, control_id, ACK_MIDDLE, control_id, ACK_TAIL, END))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="framing-only Twisted MLLP server (the limit)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", help="ignored: accepted so every reference takes the same flags")
    args = parser.parse_args(argv)
    factory = protocol.Factory.forProtocol(FramingOnly)
    port = reactor.listenTCP(args.port, factory, interface=args.host, backlog=128)
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
