"""A downstream MLLP peer for the end-to-end benchmark: ACKs every frame AA and times arrivals.

``python bench/sink_peer.py --port 0 --expect N [--expect M]`` prints ``READY <port>``, then ``DONE
<count> <first> <last>`` (wall-clock seconds of the first and the N-th frame) each time N frames arrived, so the
benchmark measures the delivery rate where it matters: at the destination.  asyncio, one process,
so its cost is not the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

START, END = b"\x0b", b"\x1c\x0d"


class Sink(asyncio.Protocol):
    count = 0
    first = 0.0
    expect: tuple[int, ...] = ()

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while END in self.buffer:
            end = self.buffer.index(END)
            payload, self.buffer = self.buffer[1:end], self.buffer[end + 2:]
            msh = payload.split(b"\r", 1)[0]
            fields = msh.split(msh[3:4]) if len(msh) > 3 else []
            control_id = fields[9] if len(fields) > 9 else b""
            self.transport.write(START + b"MSH|^~\\&|SINK|SINK|SWB|SWB|20240101||ACK|A|P|2.5\rMSA|AA|"
                                 + control_id + END)
            cls = type(self)
            if cls.count == 0:
                cls.first = time.time()
            cls.count += 1
            if cls.count in cls.expect:
                print(f"DONE {cls.count} {cls.first:.6f} {time.time():.6f}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, action="append", required=True,
                        help="print DONE when this many frames have arrived (repeatable)")
    args = parser.parse_args()
    Sink.expect = tuple(args.expect)
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", args.port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
