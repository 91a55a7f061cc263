"""A downstream MLLP peer for the end-to-end benchmark: ACKs every frame AA and times arrivals.

``python bench/sink_peer.py --port 0 --expect N [--expect M]`` prints ``READY <port>``, then ``DONE
<count> <first> <last>`` (wall-clock seconds of the first and the N-th frame) each time N frames arrived, so the
benchmark measures the delivery rate where it matters: at the destination.  asyncio, one process,
so its cost is not the engine's.

For the soak (``bench/soak.py``) it can also misbehave, and keep a record:

- ``--flap UP,DOWN``: serve UP seconds, then go down for DOWN seconds, and repeat.  Down means the
  listening socket is closed and every open connection aborted (RST), so connects are refused; then
  it listens again on the same port.  With ``--hang-every K`` every K-th down phase is a hang
  instead: connections are accepted and frames read (and recorded: a peer may well have processed
  a message it never acknowledged) but never answered, so the engine must time out and send them
  again; at the end of the phase every connection is aborted.  Each change prints ``STATE
  <up|down|hang> <wall time> <frames read so far>``.
  SIGUSR1 ends the flapping: the peer comes (or stays) up and serves until it is stopped, which
  prints ``STATE steady ...``.
- ``--record FILE``: the control id (MSH-10) of every frame read is appended to FILE, one per line,
  in arrival order; written every ``FLUSH_EVERY`` seconds and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

START, END = b"\x0b", b"\x1c\x0d"
FLUSH_EVERY = 0.25


class Sink(asyncio.Protocol):
    count = 0
    first = 0.0
    expect: tuple[int, ...] = ()
    hanging = False
    swallowed = 0                       # frames read while hanging (recorded, never answered)
    connections: set[Sink] = set()
    record: list[bytes] | None = None   # ids not yet written to --record

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        Sink.connections.add(self)

    def connection_lost(self, exc):
        Sink.connections.discard(self)

    def data_received(self, data):
        self.buffer += data
        while END in self.buffer:
            end = self.buffer.index(END)
            payload, self.buffer = self.buffer[1:end], self.buffer[end + 2:]
            cls = type(self)
            msh = payload.split(b"\r", 1)[0]
            fields = msh.split(msh[3:4]) if len(msh) > 3 else []
            control_id = fields[9] if len(fields) > 9 else b""
            if cls.hanging:
                cls.swallowed += 1
            else:
                self.transport.write(START + b"MSH|^~\\&|SINK|SINK|SWB|SWB|20240101||ACK|A|P|2.5\rMSA|AA|"
                                     + control_id + END)
            if cls.record is not None:
                cls.record.append(control_id)
            if cls.count == 0:
                cls.first = time.time()
            cls.count += 1
            if cls.count in cls.expect:
                print(f"DONE {cls.count} {cls.first:.6f} {time.time():.6f}", flush=True)

    @classmethod
    def abort_all(cls) -> None:
        for conn in list(cls.connections):
            conn.transport.abort()


def state(name: str) -> None:
    print(f"STATE {name} {time.time():.3f} {Sink.count}", flush=True)


class Flapper:
    """Up, down (refused or hung), up again on the same port, until ``steady()``."""

    def __init__(self, port: int, server: asyncio.Server, up: float, down: float, hang_every: int):
        self.port, self.server = port, server
        self.up, self.down, self.hang_every = up, down, hang_every
        self.listening = True
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        cycle = 0
        while True:
            await asyncio.sleep(self.up)
            cycle += 1
            if self.hang_every and cycle % self.hang_every == 0:
                Sink.hanging = True
                state("hang")
                await asyncio.sleep(self.down)
                Sink.abort_all()
                Sink.hanging = False
            else:
                self.server.close()
                self.listening = False
                Sink.abort_all()
                state("down")
                await asyncio.sleep(self.down)
                await self.listen()
            state("up")

    async def listen(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", self.port)
        self.listening = True

    async def steady(self) -> None:
        """Stop flapping: end a hang, listen again if down, and stay up."""
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        if Sink.hanging:
            Sink.abort_all()
            Sink.hanging = False
        if not self.listening:
            await self.listen()
        state("steady")


async def write_record(path: str, stop: asyncio.Event) -> None:
    with open(path, "ab") as handle:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            except asyncio.TimeoutError:
                pass
            if Sink.record:
                handle.write(b"\n".join(Sink.record) + b"\n")
                Sink.record.clear()
                handle.flush()
            if stop.is_set():
                return


def parse_flap(text: str) -> tuple[float, float]:
    up, down = (float(part) for part in text.split(","))
    if up <= 0 or down <= 0:
        raise ValueError("--flap needs two positive numbers of seconds: UP,DOWN")
    return up, down


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--expect", type=int, action="append", default=[],
                        help="print DONE when this many frames have arrived (repeatable)")
    parser.add_argument("--flap", type=parse_flap, metavar="UP,DOWN", help="serve UP s, refuse DOWN s, repeat")
    parser.add_argument("--hang-every", type=int, default=0, metavar="K",
                        help="with --flap: every K-th down phase accepts but never answers")
    parser.add_argument("--record", metavar="FILE", help="append every answered control id to FILE")
    args = parser.parse_args()
    Sink.expect = tuple(args.expect)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(Sink, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    recorder = flapper = None
    if args.record:
        Sink.record = []
        recorder = asyncio.ensure_future(write_record(args.record, stop))
    if args.flap:
        state("up")
        flapper = Flapper(port, server, *args.flap, args.hang_every)
        loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(flapper.steady()))
    await stop.wait()
    if flapper is not None:
        flapper.task.cancel()
    if recorder is not None:
        await recorder  # the last ids reach the file before the process ends
    print(f"STOPPED {time.time():.3f} {Sink.count} {Sink.swallowed}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
