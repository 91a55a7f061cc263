"""What sending at once saves the reactor: the framing-only server (``framing_only.py``) with
Twisted's buffered writes against the same server whose connections are
``engine.connectors.send_at_once.SendAtOnceServer``, taking turns under the same load client.

No store, no parse: the difference is the write path alone (an ``epoll_ctl`` pair and a loop turn
per answer).  Prints each run and the medians of the server's CPU µs per message (user / system
from /proc) and msg/s.

    python bench/send_at_once.py --rounds 5 --connections 8 --messages 20000
    python bench/send_at_once.py --serve [--at-once]      # one server (prints READY <port>)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))


def serve(at_once: bool) -> int:
    from twisted.internet import protocol, reactor

    from engine.connectors.send_at_once import send_at_once
    from framing_only import FramingOnly

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(FramingOnly), interface="127.0.0.1", backlog=128)
    if at_once:
        send_at_once(port)
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()
    return 0


def compare(rounds: int, connections: int, messages: int) -> int:
    import tempfile

    import run as harness

    results: dict[str, list[dict]] = {"buffered": [], "at once": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, rounds + 1):
            for label, extra in (("buffered", []), ("at once", ["--at-once"])):
                server = harness.start_ready_line(
                    label.replace(" ", "-"), [sys.executable, __file__, "--serve", *extra], Path(tmp))
                try:
                    harness.run_client(server.port, 1, 300, 1, 10)  # warm-up
                    before = harness.thread_times(server.proc.pid)
                    result = harness.run_client(server.port, connections, messages, 1, 60)
                    after = harness.thread_times(server.proc.pid)
                finally:
                    server.stop()
                cpu = harness.cpu_per_message(server.proc.pid, before, after, result["ok"])
                row = {"msg_per_s": result["msg_per_s"], "user_us": cpu["reactor_user_us"],
                       "sys_us": cpu["reactor_sys_us"]}
                results[label].append(row)
                print(f"round {round_} {label:9} {row['msg_per_s']:8,.0f} msg/s  CPU µs/msg user {row['user_us']:5.1f}"
                      f" sys {row['sys_us']:5.1f}  errors {result['errors']}", flush=True)
    print()
    for label, rows in results.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{label:9} median {med['msg_per_s']:8,.0f} msg/s  CPU µs/msg {med['user_us'] + med['sys_us']:5.1f}"
              f" (user {med['user_us']:.1f} / sys {med['sys_us']:.1f})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--at-once", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args(argv)
    return serve(args.at_once) if args.serve else compare(args.rounds, args.connections, args.messages)


if __name__ == "__main__":
    sys.exit(main())
