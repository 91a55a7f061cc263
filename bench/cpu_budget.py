"""Where the CPU goes, per message: the daemon's threads and the load client, from /proc.

``python bench/cpu_budget.py [--runs 3]`` starts the real daemon for each case below, drives it
with the same load client as ``run.py``, and reads every thread's user and system CPU time
(``/proc/<pid>/task/<tid>/stat``) before and after the measured run.  It prints, per case, the
messages per second and the CPU microseconds per message of: the reactor (the main thread: framing,
pipeline, ACKs, destination sends), the store writer (the busiest other thread: SQLite inserts
and commits, including the kernel's share of the fsyncs), the daemon in all, and the client.

Why this and not a profiler: py-spy and cProfile slow the daemon by 2-3x and shift where the
time goes; /proc counters cost nothing.  The question they answer is the one the goals ask.  The
reactor is one thread: every message's framing, pipeline, ACK and destination send run on it one
after another, so 1 s / (its user + system µs per message) -- the "reactor ceiling" -- is a rate
no number of connections can pass, even with the writer and the client costing nothing.  They do
not: the writer's Python shares the reactor's GIL, and the client shares the two cores.

Cases: ``ingest-1`` and ``ingest-8`` (run.py's ingest channel, strict request/response),
``e2e-8`` and ``e2e-8-pipelined`` (scenarios.py's filter + transform + MLLP destination).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402
import scenarios  # noqa: E402

thread_times = harness.thread_times


def children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def measure(server: harness.Server, port: int, connections: int, messages: int) -> dict:
    harness.run_client(port, 1, 300, 1, 10)  # warm-up: imports, caches, first pages
    before, client_before = thread_times(server.proc.pid), children_cpu()
    result = harness.run_client(port, connections, messages, 1, 60)
    after, client_after = thread_times(server.proc.pid), children_cpu()
    done = max(result["ok"], 1)
    cpu = harness.cpu_per_message(server.proc.pid, before, after, done)
    return {"msg_per_s": result["msg_per_s"], "errors": result["errors"], "p99_ms": result["p99_ms"],
            **{key: cpu[key] for key in ("reactor_user_us", "reactor_sys_us", "writer_user_us",
                                         "writer_sys_us", "daemon_us")},
            "client_us": (client_after - client_before) * 1e6 / done}


def ingest(connections: int, messages: int):
    def case(tmpdir: Path) -> dict:
        server = harness.start_switchboard(tmpdir)
        try:
            return measure(server, server.port, connections, messages)
        finally:
            server.stop()
    return case


def e2e(max_in_flight: int, messages: int = 10000):
    def case(tmpdir: Path) -> dict:
        sink = harness.start_ready_line("sink", [sys.executable, str(harness.BENCH / "sink_peer.py"), "--port", "0",
                                                 "--expect", str(messages + 300)], tmpdir)
        port = harness.free_port()
        text = scenarios.channel_text(scenarios.E2E_CHANNEL, HOST=harness.HOST, PORT=port, SINK=sink.port)
        if max_in_flight > 1:
            text += f"max_in_flight = {max_in_flight}\n"
        server, _ = scenarios.start_with_channels(tmpdir, {"bench": text})
        try:
            measured = measure(server, port, 8, messages)
            if scenarios.wait_done(sink, 120) is None:  # the CPU of delivering is in the figures
                measured["errors"] += 1
            return measured
        finally:
            server.stop()
            sink.stop()
    return case


CASES = {"ingest-1": ingest(1, 5000), "ingest-8": ingest(8, 20000), "e2e-8": e2e(1), "e2e-8-pipelined": e2e(8)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    args = parser.parse_args(argv)
    print(f"machine: {harness.machine()}")
    print("| case | msg/s | reactor user / sys µs | writer user / sys µs | daemon µs | client µs | "
          "reactor ceiling | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="switchboard-cpu-") as tmp:
                try:
                    runs.append(case(Path(tmp)))
                except (harness.Unavailable, RuntimeError, subprocess.TimeoutExpired) as error:
                    print(f"{name}: unavailable: {error}")
                    break
        if not runs:
            continue
        m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        reactor = m["reactor_user_us"] + m["reactor_sys_us"]
        print(f"| {name} | {m['msg_per_s']:,.0f} | {m['reactor_user_us']:.0f} / {m['reactor_sys_us']:.0f} | "
              f"{m['writer_user_us']:.0f} / {m['writer_sys_us']:.0f} | {m['daemon_us']:.0f} | {m['client_us']:.0f} | "
              f"{1e6 / reactor:,.0f} msg/s | {m['p99_ms']:.2f} |" + (f" errors {m['errors']:.0f}" if m["errors"] else ""), flush=True)
    print(f"\nMedians of {args.runs} runs; µs of CPU per message; started {time.strftime('%Y-%m-%d %H:%M')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
