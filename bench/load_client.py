"""MLLP load client for the benchmarks: N connections, strict or pipelined, ACKs checked.

Why a hand-written asyncio Protocol and not python-hl7's ``open_hl7_connection``: the client shares
this machine's two cores with the server it measures, so every microsecond it spends is taken from
the server. A callback-driven Protocol (send the next message from ``data_received``, no coroutine
or StreamReader per message) costs a few microseconds per message; it never parses an ACK beyond
finding its MSA segment.

Each message is a ~1.1 KB ADT^A08 (built in, or ``--message-file``) whose MSH-10 is unique per
message (``B<conn>-<seq>-<runid>``), so a server's dedupe never answers from a cache. An ACK counts
as ok only if MSA-1 is ``AA`` and MSA-2 is the control id of the message it answers (ACKs are
matched in order on each connection). The run is bounded: it stops after ``messages`` in total or
after ``duration_limit`` seconds, whichever comes first; a message that gets no ACK within
``ack_timeout`` is a timeout. Loopback hosts only: this is a benchmark, not a load generator for
other people's servers.

For the soak (``bench/soak.py``), both off by default: ``--rate R`` paces R msg/s in total, each
connection on its own evenly spaced, staggered ticks (``loop.call_at``), still strict request/response
(a tick due while an ACK is outstanding sends when it arrives; more than ``MAX_LAG`` behind, missed
ticks are dropped and counted as ``behind`` rather than burst).  ``--journal FILE`` appends every
control id that got a correct AA to FILE, one per line, in batches, so each acknowledged message
can be checked against what reached the destination.

    python bench/load_client.py --port 2575 --connections 8 --messages 10000 --json
    python bench/load_client.py --port 2575 --connections 4 --rate 300 --messages 10000000 \
        --duration-limit 600 --journal /tmp/acked.txt --json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import json
import math
import os
import sys
import time

START = b"\x0b"
END = b"\x1c\r"
MAX_LAG = 1.0          # seconds a paced connection may fall behind before it skips ticks
JOURNAL_BATCH = 1000   # ids per journal write
JOURNAL_EVERY = 0.25   # seconds between journal flushes while ids trickle in

# A realistic ADT^A08 of about 1.1 KB (the size DESIGN.md's costs are measured on); synthetic data.
# MSH-10 is replaced per message.
BUILTIN_TEMPLATE = (
    "MSH|^~\\&|EPIC|GHH_ADT|AGENCY|COLLECT_RCV|20261125101530||ADT^A08^ADT_A01|TEMPLATE|P|2.5.1"
    "|||AL|NE||UNICODE UTF-8\r"
    "EVN|A08|20261125101530|||JSMITH^Smith^Jane^^^^^^GHH_STAFF|20261125101500\r"
    "PID|1||4417265^^^GHH^MR~999-21-4417^^^USSSA^SS||EVERYMAN^ADAM^A^III||19610615|M||2106-3^White^HL70005"
    "|2222 HOME STREET^APT 4B^GREENSBORO^NC^27401-1020^USA^H||(336)555-0164^PRN^PH~(336)555-0199^PRN^CP"
    "|(336)555-0100^WPN^PH|eng^English^ISO6391|M^Married|CHR^Christian|77001234^^^GHH^AN|999-21-4417\r"
    "PD1|||GHH MEDICAL GROUP^^1001|1234567893^PRIMARY^PAT^^^^MD^^NPI\r"
    "PV1|1|I|4E^412^B^GHH^^^^MED||||1234567893^PRIMARY^PAT^^^^MD^^NPI|2345678901^CONSULT^CARL^^^^MD^^NPI"
    "||MED|||||||1234567893^PRIMARY^PAT^^^^MD^^NPI|IN||SELF|||||||||||||||||||GHH||A|||20261120083000\r"
    "GT1|1|88213^^^GHH^GT|EVERYMAN^ADAM^A^III||2222 HOME STREET^APT 4B^GREENSBORO^NC^27401-1020^USA"
    "|(336)555-0164^PRN^PH||19610615|M||SEL^Self^HL70063|999-21-4417\r"
    "IN1|1|BCBS-PPO^Blue Cross PPO|60054|BLUE CROSS BLUE SHIELD OF NC|PO BOX 2291^^DURHAM^NC^27702^USA"
    "||(800)555-0111|GRP-40417|GHH EMPLOYEES|||20260101|20261231|||PPO|EVERYMAN^ADAM^A^III|SEL^Self"
    "|19610615|2222 HOME STREET^APT 4B^GREENSBORO^NC^27401-1020^USA|||1||||||||||||||XGH447129001\r"
)

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names for them."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_template(path: str | None) -> str:
    """The message text with CR segment separators (a sample file's LF or CRLF become CR)."""
    if path is None:
        return BUILTIN_TEMPLATE
    with open(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line]
    return "\r".join(lines) + "\r"


def split_template(text: str) -> tuple[bytes, bytes]:
    """Cut the message around MSH-10 so each message is one cheap bytes concatenation."""
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("the message must start with an MSH segment")
    sep = text[3]
    msh_end = text.find("\r")
    msh = text[:msh_end] if msh_end >= 0 else text
    fields = msh.split(sep)  # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n-1]
    while len(fields) < 10:
        fields.append("")
    prefix = sep.join(fields[:9]) + sep
    suffix = sep + sep.join(fields[10:]) if len(fields) > 10 else ""
    rest = text[len(msh):]
    return prefix.encode("utf-8"), (suffix + rest).encode("utf-8")


def check_ack(frame: bytes, control_id: bytes) -> bool:
    """MSA-1 must be AA and MSA-2 the control id sent; the field separator comes from MSH-1."""
    if not frame.startswith(b"MSH") or len(frame) < 4:
        return False
    sep = frame[3:4]
    start = frame.find(b"\rMSA" + sep)
    if start < 0:
        return False
    end = frame.find(b"\r", start + 1)
    fields = frame[start + 1 : end if end >= 0 else len(frame)].split(sep)
    return len(fields) > 2 and fields[1] == b"AA" and fields[2] == control_id


class Journal:
    """The AA'd control ids, appended to a file in batches (one id per line)."""

    def __init__(self, path: str):
        self.handle = open(path, "ab")
        self.ids: list[bytes] = []

    def add(self, control_id: bytes) -> None:
        self.ids.append(control_id)
        if len(self.ids) >= JOURNAL_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            self.handle.write(b"\n".join(self.ids) + b"\n")
            self.ids.clear()
        self.handle.flush()

    def close(self) -> None:
        self.flush()
        self.handle.close()


class Run:
    """Shared state of one run: the global message budget, deadline, and results."""

    def __init__(self, messages: int, pipeline: int, deadline: float, prefix: bytes, suffix: bytes,
                 interval: float = 0.0, journal: Journal | None = None):
        self.remaining = messages
        self.pipeline = pipeline
        self.deadline = deadline
        self.prefix = prefix
        self.suffix = suffix
        self.runid = os.urandom(3).hex()
        self.latencies: list[float] = []
        self.ok = 0
        self.bad = 0
        self.lost = 0
        self.timeouts = 0
        self.sent = 0
        self.last_ack = 0.0
        self.interval = interval   # seconds between one connection's sends (0: as fast as ACKs come)
        self.journal = journal
        self.behind = 0            # paced ticks skipped because a connection fell MAX_LAG behind

    def take(self) -> bool:
        """Claim one message from the global budget, unless it or the time is used up."""
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


class LoadProtocol(asyncio.Protocol):
    """One connection: keep up to ``pipeline`` messages outstanding, match ACKs in order."""

    def __init__(self, run: Run, conn: int):
        self.run = run
        self.conn = conn
        self.seq = 0
        self.outstanding: collections.deque[tuple[bytes, float]] = collections.deque()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.connected: asyncio.Future = asyncio.get_running_loop().create_future()
        self.exhausted = False     # the budget or the time is used up: finish once answered
        self.next_due = 0.0        # paced mode: loop time of the next send
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.connected.set_result(None)

    def start(self, first_due: float | None = None) -> None:
        if self.run.interval:
            self.next_due = first_due if first_due is not None else asyncio.get_running_loop().time()
            self.send_paced()
            return
        for _ in range(self.run.pipeline):
            if not self.send_one():
                break
        self.maybe_finish()

    def send_paced(self) -> None:
        """Send now if this connection's tick is due and nothing is outstanding, else wait for it."""
        self.timer = None
        if self.outstanding or self.exhausted or self.done.done():
            return  # the ACK's arrival calls again
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self.next_due:
            self.timer = loop.call_at(self.next_due, self.send_paced)
            return
        if now - self.next_due > MAX_LAG:
            skipped = int((now - self.next_due) / self.run.interval)
            self.run.behind += skipped
            self.next_due += skipped * self.run.interval
        self.next_due += self.run.interval
        if not self.send_one():
            self.maybe_finish()

    def send_one(self) -> bool:
        run = self.run
        if not run.take():
            self.exhausted = True
            return False
        self.seq += 1
        control_id = f"B{self.conn}-{self.seq}-{run.runid}".encode("ascii")
        self.outstanding.append((control_id, time.perf_counter()))
        self.transport.write(START + run.prefix + control_id + run.suffix + END)
        run.sent += 1
        return True

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        run = self.run
        while True:
            end = buffer.find(END)
            if end < 0:
                break
            frame = buffer[:end]
            buffer = buffer[end + 2 :]
            now = time.perf_counter()
            if not self.outstanding:
                run.bad += 1  # an answer nobody asked for
                continue
            control_id, sent_at = self.outstanding.popleft()
            run.latencies.append(now - sent_at)
            run.last_ack = now
            start = frame.find(START)
            if start >= 0 and check_ack(frame[start + 1 :], control_id):
                run.ok += 1
                if run.journal is not None:
                    run.journal.add(control_id)
            else:
                run.bad += 1
            if run.interval:
                self.send_paced()
            else:
                self.send_one()
        self.buffer = buffer
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if not self.outstanding and self.exhausted and not self.done.done():
            self.done.set_result(None)
            self.transport.close()

    def abandon(self, as_timeouts: bool) -> None:
        """Count what is still outstanding as lost or timed out, and close."""
        if as_timeouts:
            self.run.timeouts += len(self.outstanding)
        else:
            self.run.lost += len(self.outstanding)
        self.outstanding.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.done.done():
            self.done.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc):
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before connected"))
        self.abandon(as_timeouts=False)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds (0 when there is nothing to rank)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank] * 1000.0


async def _watch(protocols: list[LoadProtocol], run: Run, ack_timeout: float, grace: float) -> None:
    """Abandon a connection whose oldest ACK is overdue, or everything once deadline + grace passes;
    flush the journal now and then."""
    flushed = time.perf_counter()
    while True:
        await asyncio.sleep(0.2)
        now = time.perf_counter()
        if run.journal is not None and now - flushed >= JOURNAL_EVERY:
            run.journal.flush()
            flushed = now
        hard_stop = now >= run.deadline + grace
        for proto in protocols:
            if proto.done.done():
                continue
            if hard_stop or (proto.outstanding and now - proto.outstanding[0][1] > ack_timeout):
                proto.abandon(as_timeouts=True)


async def run_load(
    host: str,
    port: int,
    connections: int,
    messages: int,
    pipeline: int = 1,
    duration_limit: float = 60,
    message_file: str | None = None,
    ack_timeout: float = 10.0,
    rate: float = 0.0,
    journal: str | None = None,
) -> dict:
    """Send ``messages`` over ``connections`` (bounded by ``duration_limit`` s); return the summary.
    ``rate`` > 0 paces the sends (messages per second in total, strict request/response);
    ``journal`` is a file to append every AA'd control id to."""
    if not is_loopback(host):
        raise ValueError(f"refusing non-loopback host {host!r}: the benchmark runs on loopback only")
    if connections < 1 or messages < 1 or pipeline < 1 or duration_limit <= 0 or rate < 0:
        raise ValueError("connections, messages, pipeline and duration_limit must be positive")
    if rate and pipeline != 1:
        raise ValueError("--rate is strict request/response: use it with --pipeline 1")
    prefix, suffix = split_template(load_template(message_file))
    loop = asyncio.get_running_loop()
    interval = connections / rate if rate else 0.0
    run = Run(messages, pipeline, float("inf"), prefix, suffix, interval,
              Journal(journal) if journal else None)
    protocols = [LoadProtocol(run, conn) for conn in range(connections)]
    try:
        for proto in protocols:
            await asyncio.wait_for(loop.create_connection(lambda p=proto: p, host, port), timeout=10)
        started = time.perf_counter()
        run.deadline = started + duration_limit
        now = loop.time()
        for conn, proto in enumerate(protocols):
            proto.start(now + conn * interval / connections)  # staggered ticks when paced
        watcher = asyncio.ensure_future(_watch(protocols, run, ack_timeout, min(ack_timeout, 2.0)))
        try:
            await asyncio.gather(*(proto.done for proto in protocols))
        finally:
            watcher.cancel()
            for proto in protocols:
                if proto.transport is not None:
                    proto.transport.close()
    finally:
        if run.journal is not None:
            run.journal.close()
    seconds = max((run.last_ack or time.perf_counter()) - started, 1e-9)
    latencies = sorted(run.latencies)
    return {
        "connections": connections,
        "messages": run.sent,
        "requested": messages,
        "pipeline": pipeline,
        "ok": run.ok,
        "errors": run.bad + run.lost + run.timeouts,
        "bad_acks": run.bad,
        "lost": run.lost,
        "timeouts": run.timeouts,
        "seconds": round(seconds, 4),
        "msg_per_s": round(run.ok / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p90_ms": round(percentile(latencies, 0.90), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1] * 1000.0, 3) if latencies else 0.0,
        "message_bytes": len(prefix) + len(suffix) + len(f"B0-1-{run.runid}"),
        **({"rate": rate, "behind": run.behind} if rate else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MLLP load client (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--messages", type=int, default=1000, help="total over all connections")
    parser.add_argument("--duration-limit", type=float, default=60.0, help="seconds")
    parser.add_argument("--pipeline", type=int, default=1, help="outstanding messages per connection")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--message-file", help="HL7 file to send (LF/CRLF/CR segments)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="messages per second in total, paced over the connections (strict)")
    parser.add_argument("--journal", help="append every AA'd control id to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(
            run_load(args.host, args.port, args.connections, args.messages, args.pipeline,
                     args.duration_limit, args.message_file, args.ack_timeout, args.rate, args.journal)
        )
    except (OSError, ValueError, asyncio.TimeoutError) as exc:
        print(f"load_client: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['ok']}/{result['messages']} ok, {result['errors']} errors in "
              f"{result['seconds']:.2f} s: {result['msg_per_s']:.0f} msg/s, p50 {result['p50_ms']:.2f} ms, "
              f"p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms")
    return 0 if result["errors"] == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
