"""Where the daemon's CPU goes per message, by kind of work: py-spy samples scaled by /proc CPU time.

``python bench/profile_paths.py [--case ingest-8] [--case e2e-8] [--messages 20000] [--rate 500]``
starts the real daemon for each case (the same channels as ``run.py`` and ``scenarios.py``), warms
it up, attaches ``py-spy record --format raw`` (``pip install py-spy``) for the measured client run,
and reads every thread's CPU time from /proc before and after.  Each sample's stack is put in one
group (``GROUPS``: the innermost frame that matches a rule decides, so time in a helper is charged
to the work that called it, e.g. ``encoding_chars`` under ``peek_msh`` to "MSH peeks"), per thread
(reactor = the main thread, writer = the store's writer thread).  A group's µs per message is its
share of that thread's samples times that thread's /proc CPU µs per message in the same run, so
the figures add up to what ``cpu_budget.py`` reports.  The CPU per message comes from an unprofiled
run just before the profiled one (same daemon, same message count): py-spy's default blocking
mode stops every thread at each sample, which inflates every thread's kernel time.

Without py-spy's ``--native`` frames, time in C (SQLite, the socket calls, ``str.split``) is charged
to the Python function that called it: the writer's ``execute`` of COMMIT holds the fsync's
kernel time, the reactor's ``doRead``/``writeSomeData`` the socket system calls.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402
import scenarios  # noqa: E402

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
WRITER = harness.ROOT / "engine" / "store" / "sqlite" / "writer.py"


def _line_of(path: Path, needle: str) -> int:
    try:
        return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
    except (OSError, StopIteration):
        return -1


COMMIT_LINE = _line_of(WRITER, 'conn.execute("COMMIT")')

# (group, test on (function, file)); checked for each frame from the innermost outwards; the first
# frame that matches any rule decides the group (rules are tried in this order for that frame).
GROUPS: list[tuple[str, callable]] = [
    ("logging", lambda f, p: "twisted/logger" in p or "/logging/" in p),
    ("FTS indexing", lambda f, p: f in ("_run_staged", "_staged_ran", "_flush_held") or "store/sqlite/text.py" in p),
    ("store writer: COMMIT (WAL write + fsync)", lambda f, p: "store/sqlite/writer.py" in p and p.endswith(f":{COMMIT_LINE}")),
    ("store writer SQL", lambda f, p: "store/sqlite/" in p and f not in ("_fire", "_write", "reserve_id")),
    ("thread hand-off (queue, callFromThread, firing a batch)",
     lambda f, p: f in ("_fire", "_write", "callFromThread", "wakeUp", "doRead_waker")
     or ("twisted/internet/posixbase.py" in p and "Waker" in f) or p.endswith("/queue.py")
     or "twisted/python/threadable" in p),
    ("ACK build", lambda f, p: "hl7/ack.py" in p or "hl7/dates.py" in p or f == "ack_for"),
    ("MSH peeks", lambda f, p: "hl7/msh.py" in p or "hl7/acceptance.py" in p),
    ("events/metrics", lambda f, p: "core/events.py" in p or "metrics" in p or "prometheus_client" in p
     or "pluggy" in p or f == "_record_verdicts"),
    ("pipeline", lambda f, p: "core/pipeline.py" in p or "hl7/view.py" in p or "hl7/path.py" in p
     or "core/templates.py" in p or "template_helpers" in p or "jinja2" in p or "<template>" in p
     or "core/message.py" in p or "core/statuses.py" in p or "hl7/encoding.py" in p and f != "normalize_segments"),
    ("destination send (queue, MLLP client, peer ACK)",
     lambda f, p: "core/queue.py" in p or "connectors/mllp/client.py" in p or "connectors/mllp/destination.py" in p
     or "connectors/mllp/send.py" in p or "connectors/mllp_client" in p),
    ("framing/decode", lambda f, p: "connectors/mllp/framing.py" in p or "hl7/charset.py" in p
     or f == "normalize_segments" or "connectors/mllp/source.py" in p),
    ("channel + ingest glue (receive, answer_frame, store calls)",
     lambda f, p: "core/channel.py" in p or "core/ingest.py" in p or f == "reserve_id" or "core/faults.py" in p),
    ("Deferred chains", lambda f, p: "twisted/internet/defer.py" in p),
    ("reactor loop + socket system calls (source reads and ACK writes, destination ACK reads)", lambda f, p: "twisted/internet/" in p or "twisted/python/" in p
     or "selectors" in p),
]


def parse_frame(text: str) -> tuple[str, str]:
    """(function, "file:line") of one frame of py-spy's raw output."""
    match = FRAME.match(text.strip())
    if not match:
        return text.strip(), ""
    func = match["func"].rpartition(".")[2]  # "Deferred.callback" -> "callback"
    return func, f"{match['file']}:{match['line']}" if match["line"] else match["file"]


def idle(frames: list[tuple[str, str]]) -> bool:
    """A thread waiting (py-spy here samples waiting threads too): the reactor in epoll, the
    writer blocked on its queue, any thread in a Condition/Queue wait."""
    if not frames:
        return True
    func, path = frames[-1]
    return (func in ("doPoll", "do_poll") or (func == "_run" and "store/sqlite/writer.py" in path)
            or func in ("wait", "get") and ("threading.py" in path or "queue.py" in path))


# Helpers charged to whoever called them (the frame outside them decides).
TRANSPARENT = {"untilConcludes", "callWithContext", "callWithLogger", "currentContext", "getContext"}


LOOP = GROUPS[-1][0]
# The pipeline's time, split by the stage that ran it (the outermost pipeline frame that says).
PIPELINE_PARTS = [("pipeline: transform (Jinja render, output check)", ("apply", "check_outbound", "transform")),
                  ("pipeline: filters", ("check",)),
                  ("pipeline: metadata", ("metadata",))]


def pipeline_part(frames: list[tuple[str, str]]) -> str:
    if any("store/sqlite/" in path for _func, path in frames):
        return "store writer SQL"  # the store deriving a status (engine/core/statuses.py)
    for func, path in frames:
        if "core/pipeline.py" in path:
            for group, funcs in PIPELINE_PARTS:
                if func in funcs:
                    return group
    return "pipeline: parse, context, plans"
DESTINATION = next(group for group, _test in GROUPS if group.startswith("destination send"))


def classify(frames: list[tuple[str, str]]) -> str:
    found = None
    for func, path in reversed(frames):
        if func in TRANSPARENT:
            continue
        for group, test in GROUPS:
            if test(func, path):
                if found is None:
                    found = group
                    if group == "pipeline":
                        return pipeline_part(frames)
                    if group != LOOP:
                        return group
                elif group == DESTINATION:
                    return group  # the destination's own writes (epoll, send) are its cost
                break
    return found or "other"


def thread_of(frames: list[tuple[str, str]]) -> str:
    paths = " ".join(path for _func, path in frames)
    if "store/sqlite/writer.py" in paths and any(func == "_run" for func, _ in frames):
        return "writer"
    if any(func == "_bootstrap" for func, _ in frames):
        return "other"
    return "reactor"


def read_raw(path: Path) -> dict[str, collections.Counter]:
    """{thread: Counter(group -> samples)} from py-spy's raw (collapsed) output."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text(errors="replace").splitlines():
        stack, _sep, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [parse_frame(frame) for frame in stack.split(";") if frame]
        frames = [frame for frame in frames if not frame[0].startswith("process ") and not frame[0].startswith("thread ")]
        if not idle(frames):
            counts[thread_of(frames)][classify(frames)] += int(count)
    return counts


def profile(server_pid: int, port: int, connections: int, messages: int, rate: int, out: Path,
            wait=None) -> tuple[dict, dict]:
    """Two client runs of ``messages``: the first unprofiled, for the CPU per message from /proc;
    the second under py-spy, for the shares (py-spy in its default blocking mode stops every thread
    at each sample, which costs the stopped threads kernel time of their own)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    harness.run_client(port, 1, 300, 1, 10)  # warm-up
    before = harness.thread_times(server_pid)
    result = harness.run_client(port, connections, messages, 1, 60)
    done = (wait() if wait is not None else None) or result["ok"]
    cpu = harness.cpu_per_message(server_pid, before, harness.thread_times(server_pid), done)
    cpu["msg_per_s"] = result["msg_per_s"]
    proc = subprocess.Popen([spy, "record", "--format", "raw", "--rate", str(rate), "--pid", str(server_pid),
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attached
    harness.run_client(port, connections, messages, 1, 60)
    if wait is not None:
        wait()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    return cpu, read_raw(out)


def report(name: str, cpu: dict, counts: dict) -> None:
    threads = {"reactor": cpu["reactor_us"], "writer": cpu["writer_us"],
               "other": max(cpu["daemon_us"] - cpu["reactor_us"] - cpu["writer_us"], 0.0)}
    rows: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for thread, counter in counts.items():
        total = sum(counter.values())
        for group, samples in counter.items():
            rows[group][thread] += threads[thread] * samples / total if total else 0.0
    print(f"\n### {name}: {cpu['msg_per_s']:,.0f} msg/s unprofiled; daemon {cpu['daemon_us']:.0f} µs/msg "
          f"(reactor {cpu['reactor_us']:.0f}, writer {cpu['writer_us']:.0f}); samples "
          + ", ".join(f"{t} {sum(c.values())}" for t, c in counts.items()))
    print("\n| group | reactor µs | writer µs | other threads µs | total µs | share |")
    print("|---|---|---|---|---|---|")
    daemon = sum(sum(row.values()) for row in rows.values()) or 1.0
    for group, row in sorted(rows.items(), key=lambda item: -sum(item[1].values())):
        total = sum(row.values())
        print(f"| {group} | {row['reactor']:.0f} | {row['writer']:.0f} | {row['other']:.0f} | {total:.0f} | "
              f"{100 * total / daemon:.0f} % |")


def ingest_case(tmp: Path, connections: int, messages: int, rate: int):
    server = harness.start_switchboard(tmp)
    try:
        return profile(server.proc.pid, server.port, connections, messages, rate, tmp / "ingest.raw")
    finally:
        server.stop()


def e2e_case(tmp: Path, connections: int, messages: int, rate: int):
    sink = harness.start_ready_line("sink", [sys.executable, str(harness.BENCH / "sink_peer.py"), "--port", "0",
                                             "--expect", str(messages + 300), "--expect", str(2 * messages + 300)], tmp)
    port = harness.free_port()
    text = scenarios.channel_text(scenarios.E2E_CHANNEL, HOST=harness.HOST, PORT=port, SINK=sink.port)
    server, _ = scenarios.start_with_channels(tmp, {"bench": text})

    delivered = [300]

    def wait():
        done = scenarios.wait_done(sink, 120)
        if not done:
            return None
        count, delivered[0] = int(done[1]) - delivered[0], int(done[1])
        return count
    try:
        return profile(server.proc.pid, port, connections, messages, rate, tmp / "e2e.raw", wait)
    finally:
        server.stop()
        sink.stop()


CASES = {"ingest-1": (ingest_case, 1), "ingest-8": (ingest_case, 8), "e2e-8": (e2e_case, 8)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--keep", help="copy the raw py-spy output to this directory")
    parser.add_argument("--raw", nargs=2, metavar=("FILE", "REACTOR,WRITER,DAEMON,MSG_PER_S"),
                        help="only group a kept raw file again, with the CPU figures its run printed")
    args = parser.parse_args(argv)
    if args.raw:
        reactor, writer, daemon, rate = (float(x) for x in args.raw[1].split(","))
        report(Path(args.raw[0]).stem, {"reactor_us": reactor, "writer_us": writer, "daemon_us": daemon,
                                        "msg_per_s": rate}, read_raw(Path(args.raw[0])))
        return 0
    for name in args.case or ["ingest-8", "e2e-8"]:
        run_case, connections = CASES[name]
        with tempfile.TemporaryDirectory(prefix="switchboard-profile-") as tmp:
            cpu, counts = run_case(Path(tmp), connections, args.messages, args.rate)
            if args.keep:
                for raw in Path(tmp).glob("*.raw"):
                    shutil.copy(raw, Path(args.keep) / f"{name}.raw")
        report(name, cpu, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
