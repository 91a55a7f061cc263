"""Would a second worker process write more into one SQLite store?  One writer vs two, same WAL file.

``python bench/wal_writers.py [--seconds 5] [--batch 1 8] [--rounds 2]`` creates a store with the
engine's schema (``connect_writer`` + ``migrate``: WAL, ``synchronous=FULL``), then runs 1 and
then 2 processes against it, the cases taking turns for ``--rounds``.  Each process loops
``BEGIN IMMEDIATE; INSERT`` x ``--batch`` ``; COMMIT`` for ``--seconds`` -- the store writer's
group commit reduced to its SQL: a message row (1.1 KB ADT, every index of the schema) and its
full-text row, per message.  A process waits for SQLite's write lock with the store's busy timeout,
as a second node on the same file would.  Prints per case: messages and commits per second in all,
the CPU per message of the writers (user + system, their own ``os.times``), and the share of their
time spent waiting for the lock (in ``BEGIN IMMEDIATE``).

This is what ``[engine] workers = N`` on SQLite would be bounded by: N processes can parse,
filter and answer in parallel, but their commits take turns on one lock and one fsync each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine.store.sqlite import schema  # noqa: E402
from engine.store.sqlite.schema import FTS_INSERT_SQL  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store_bench import adt_a08  # noqa: E402

INSERT = ("INSERT INTO messages (channel, received_at, status, type, control_id, sender, inbound, sha256, raw,"
          " processed_at) VALUES (?, ?, 'TRANSFORMED', 'ADT^A08', ?, 'EPIC', 'hl7', ?, ?, ?)")


def writer(path: str, seconds: float, batch: int, worker: int, start_at: float, out) -> None:
    conn = schema.connect_writer(path)
    messages = commits = 0
    waited = 0.0
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0, began = os.times(), time.perf_counter()
    n = 0
    while time.perf_counter() - began < seconds:
        asked = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        waited += time.perf_counter() - asked
        for _ in range(batch):
            n += 1
            raw = adt_a08(worker * 10_000_000 + n)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            rowid = conn.execute(INSERT, ("bench", stamp, f"W{worker}-{n}", f"{worker}-{n:064d}"[-64:], raw,
                                          stamp)).lastrowid
            conn.execute(FTS_INSERT_SQL, (rowid, raw))
        conn.execute("COMMIT")
        messages += batch
        commits += 1
    elapsed = time.perf_counter() - began
    cpu1 = os.times()
    conn.close()
    out.put({"messages": messages, "commits": commits, "elapsed": elapsed, "waited": waited,
             "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)})


def case(path: str, processes: int, seconds: float, batch: int) -> dict:
    out = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = [multiprocessing.Process(target=writer, args=(path, seconds, batch, w, start_at, out))
             for w in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = max(r["elapsed"] for r in results)
    messages = sum(r["messages"] for r in results)
    return {"msg_per_s": messages / elapsed, "commits_per_s": sum(r["commits"] for r in results) / elapsed,
            "cpu_us_per_msg": sum(r["cpu"] for r in results) * 1e6 / messages,
            "lock_wait_share": sum(r["waited"] for r in results) / sum(r["elapsed"] for r in results)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    results: dict[tuple[int, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="switchboard-wal-") as tmp:
        path = os.path.join(tmp, "store.db")
        conn = schema.connect_writer(path)
        schema.migrate(conn)
        conn.close()
        for _ in range(args.rounds):
            for batch in args.batch:
                for processes in (1, 2):
                    results.setdefault((batch, processes), []).append(case(path, processes, args.seconds, batch))
    print("| messages per commit | writer processes | messages/s | commits/s | writers' CPU µs/msg | "
          "time waiting for the lock |")
    print("|---|---|---|---|---|---|")
    for (batch, processes), runs in sorted(results.items()):
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"| {batch} | {processes} | {m['msg_per_s']:,.0f} | {m['commits_per_s']:,.0f} | "
              f"{m['cpu_us_per_msg']:.0f} | {100 * m['lock_wait_share']:.0f} % |")
    print(f"\nMedians of {args.rounds} rounds of {args.seconds:.0f} s, the cases taking turns; "
          f"{time.strftime('%Y-%m-%d %H:%M')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
