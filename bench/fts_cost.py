"""What the full-text index costs the store writer, and where: with it, and without it, same minutes.

``python bench/fts_cost.py [--messages 6000] [--concurrency 1 8] [--rounds 3]`` runs the real
``Store`` (``put_processed``, as ``store_bench.py``: 1.1 KB ADT, dedupe on) in this process, the
two cases taking turns: ``fts`` as the store is, and ``no-fts`` with the store's ``stage`` (the
hook that holds the index rows, engine/store/sqlite/writer.py) replaced on this one instance by a
no-op, so the messages are stored exactly as before without their index rows.  It reads the writer
thread's CPU from /proc and times every put (call -> commit callback), and prints per case:
messages/s, the writer's CPU µs per message, and the put latency p50 / p99 / max.

The held index rows run inside the next commit once 256 are held (or the oldest waited 0.5 s):
the messages of that commit wait for the index insert of 256 others before their ACK.  The
latency columns show what that costs the slowest puts; the CPU column what it costs in all.
Run it with two trees' venvs in turn (each tree's own copy) to compare a change to the writer.
Bench code only: the store is not changed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import defer, task  # noqa: E402

from engine.store import Store  # noqa: E402
from store_bench import adt_a08  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def one_case(reactor, fts: bool, total: int, concurrency: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="switchboard-fts-") as tmp:
        store = Store(os.path.join(tmp, "bench.db"), reactor)
        if not fts:
            store.stage = lambda sql, params: None  # this instance only: no index rows held
        writer = next(t for t in threading.enumerate() if t.name == "store-writer").native_id
        messages = [adt_a08(n) for n in range(total)]
        counter = iter(range(total))
        latencies: list[float] = []

        async def caller():
            for n in counter:
                began = time.perf_counter()
                await store.put_processed("bench", messages[n], message_id=store.reserve_id(), status="RECEIVED",
                                          type="ADT^A08", control_id=f"CTRL{n:09d}", dedupe_seconds=86400)
                latencies.append(time.perf_counter() - began)

        cpu0, began = thread_cpu(writer), time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(caller()) for _ in range(concurrency)])
        elapsed, cpu = time.perf_counter() - began, thread_cpu(writer) - cpu0
        await store.close()
    latencies.sort()
    return {"msg_per_s": total / elapsed, "writer_us": cpu * 1e6 / total,
            "p50_ms": latencies[len(latencies) // 2] * 1e3, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "max_ms": latencies[-1] * 1e3}


async def main(reactor, args) -> None:
    results: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for concurrency in args.concurrency:
            for name in ("fts", "no-fts"):
                results.setdefault((concurrency, name), []).append(
                    await one_case(reactor, name == "fts", args.messages, concurrency))
    print("| callers | case | messages/s | writer CPU µs/msg | put p50 / p99 / max ms |")
    print("|---|---|---|---|---|")
    for (concurrency, name), runs in results.items():
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {concurrency} | {name} | {m['msg_per_s']:,.0f} | {m['writer_us']:.0f} | "
              f"{m['p50_ms']:.2f} / {m['p99_ms']:.2f} / {m['max_ms']:.1f} |")
    print(f"\nMedians of {args.rounds} rounds of {args.messages} messages, the cases taking turns; "
          f"{time.strftime('%Y-%m-%d %H:%M')}.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
