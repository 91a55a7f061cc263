"""Soak: minutes of steady load end to end with a flapping destination; memory and queue over time.

``python bench/soak.py [--minutes 10] [--rate 300] [--connections 4] [--sample 10]`` (``make
bench-soak``).  Not a test: it takes as long as it is told to, on a machine that is shared.

Set-up (reusing ``scenarios.py``'s daemon and channel, ``run.py``'s helpers):

- the real daemon, one channel: MLLP source -> filter -> Jinja HL7 transform -> MLLP destination
  (``scenarios.E2E_CHANNEL``) with a short ``ack_timeout``/``connect_timeout`` and a retry that
  starts at ``interval`` and backs off to ``max_interval``, so a flap costs seconds, not minutes;
- the destination is ``sink_peer.py --flap UP,DOWN --hang-every K --record FILE``: up, then down
  (connections refused), and every K-th time hung instead (reads and records, never answers: the
  peer that processed a message but whose ACK never came, so every timed-out attempt is a
  duplicate at the peer);
- ``load_client.py --rate R --journal FILE``: R msg/s in total, strict request/response over N
  connections, every control id that got a correct AA written to the journal.

Every ``--sample`` seconds: daemon VmRSS and VmHWM (``/proc/<pid>/status``), its CPU share, the
destination's queue depth and consecutive failures (``GET /api/channels/bench``), the ids AA'd so far
(journal lines), the frames answered by the sink so far (record lines), and the sink's state.

When the load ends the sink is told to stop flapping (SIGUSR1) and the queue must drain (depth 0
within ``--drain-limit`` s).  Then the checks, each printed, and the exit status 1 if any fails:
every AA'd id reached the sink (lost = 0; with "all SENT" below this also means each was
acknowledged by the sink, since it records a frame before it answers); the first arrivals of each connection's ids
(``B<conn>-<seq>-<run>``) are in increasing seq (the queue is FIFO over ingest order); the client
had no errors; the daemon is still running; the store holds exactly the AA'd count, all SENT.
Duplicates at the sink are counted per flap: after a refusal at most the messages in flight when
the connection was cut (one: the queue sends one at a time); after a hang one per attempt that
timed out.  A duplicate whose delivery has two *successful* attempts in the store (``switchboard
show``) was sent again after the peer's AA, which no flap explains: that fails the run too.  The daemon's log is copied to ``/tmp/soak-evidence/`` when a check fails.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402
import scenarios  # noqa: E402

EVIDENCE = Path("/tmp/soak-evidence")
DESTINATION = """\
ack_timeout = "{ack_timeout}"
connect_timeout = "2s"
retry = {{ attempts = 0, interval = "{interval}", backoff = 2.0, max_interval = "{max_interval}" }}
"""


class Tail:
    """Counts the lines of a file another process appends to, reading only what is new."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.lines
        cut = data.rfind(b"\n") + 1  # a half-written last line is counted next time
        self.lines += data.count(b"\n", 0, cut)
        self.offset += cut
        return self.lines


class SinkStates:
    """The sink's ``STATE <name> <time> <frames>`` lines, read by a thread as they come."""

    def __init__(self, proc: subprocess.Popen):
        self.events: list[tuple[str, float, int]] = []
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "STATE":
                self.events.append((parts[1], float(parts[2]), int(parts[3])))

    def current(self) -> str:
        return self.events[-1][0] if self.events else "?"

    def flaps(self) -> list[tuple[str, float, int]]:
        return [event for event in self.events if event[0] in ("down", "hang")]


def proc_status(pid: int) -> dict:
    figures = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    figures[line[:5]] = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        figures["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return figures


class Admin:
    def __init__(self, home: Path):
        self.address = (home / "var" / "admin.address").read_text().strip()
        self.token = next(line.split('"')[1] for line in (home / "config.toml").read_text().splitlines()
                          if line.startswith("token"))

    def channel(self, name: str) -> dict:
        request = urllib.request.Request(f"http://{self.address}/api/channels/{name}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
        return body


def sample(phase: str, began: float, server: harness.Server, admin: Admin, acked: Tail, arrived: Tail,
           sink: SinkStates, last: dict | None) -> dict:
    status = proc_status(server.proc.pid)
    row = {"t": round(time.monotonic() - began, 1), "phase": phase, "sink": sink.current(),
           "rss_mb": round(status.get("VmRSS", 0) / 1024, 1), "hwm_mb": round(status.get("VmHWM", 0) / 1024, 1),
           "cpu_s": status.get("cpu_s", 0.0), "depth": None, "failures": None, "sent": None,
           "acked": acked.count(), "at_sink": arrived.count()}
    try:
        view = admin.channel("bench")
        destination = view["destinations"][0]
        row.update(depth=destination["depth"], failures=destination["failures"], sent=view["sent"])
    except (OSError, ValueError, KeyError, IndexError) as error:
        row["api_error"] = type(error).__name__
    if last is not None and row["t"] > last["t"]:
        row["cpu_pct"] = round(100 * (row["cpu_s"] - last["cpu_s"]) / (row["t"] - last["t"]))
    return row


def print_row(row: dict) -> None:
    print(f"{row['t']:>7.0f} {row['phase']:>5} {row['sink']:>6} {row['rss_mb']:>7.1f} {row['hwm_mb']:>7.1f} "
          f"{row.get('cpu_pct', 0):>4} {str(row['depth']):>6} {str(row['failures']):>4} {row['acked']:>8} "
          f"{row['at_sink']:>8} {str(row['sent']):>8}", flush=True)


HEADER = f"{'t s':>7} {'phase':>5} {'sink':>6} {'RSS MB':>7} {'HWM MB':>7} {'cpu%':>4} {'depth':>6} {'fail':>4} " \
         f"{'AA':>8} {'at sink':>8} {'SENT':>8}"


def read_ids(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def check_order(arrivals: list[str]) -> list[str]:
    """Ids whose first arrival came after a later-sent id of the same connection."""
    last: dict[str, int] = {}
    seen: set[str] = set()
    wrong = []
    for control_id in arrivals:
        if control_id in seen:
            continue
        seen.add(control_id)
        conn, seq, _run = control_id.split("-", 2)
        if int(seq) <= last.get(conn, 0):
            wrong.append(control_id)
        last[conn] = max(last.get(conn, 0), int(seq))
    return wrong


def duplicates_per_flap(arrivals: list[str], flaps: list[tuple[str, float, int]]) -> list[int]:
    """Repeated arrivals, bucketed by the flap they follow (bucket 0: before the first flap)."""
    marks = [frames for _name, _t, frames in flaps]
    buckets = [0] * (len(marks) + 1)
    seen: set[str] = set()
    for index, control_id in enumerate(arrivals):
        if control_id in seen:
            buckets[bisect.bisect_right(marks, index)] += 1
        seen.add(control_id)
    return buckets


def cli_json(home: Path, *words: str):
    done = subprocess.run(harness.switchboard_command() + ["-c", str(home / "config.toml"), *words, "--json"],
                          capture_output=True, text=True, timeout=120, cwd=home)
    return json.loads(done.stdout or "null")


def store_counts(home: Path) -> dict:
    return next((row for row in cli_json(home, "status") or [] if row["name"] == "bench"), {})


def resent_after_ack(home: Path, control_ids: list[str], limit: int = 50) -> dict[str, int]:
    """Of the duplicated ids (the first ``limit``): those whose delivery has more than one successful
    attempt, i.e. the engine sent again a message the peer had already acknowledged."""
    found = {}
    for control_id in control_ids[:limit]:
        for row in cli_json(home, "messages", "--control-id", control_id) or []:
            message = cli_json(home, "show", str(row["id"])) or {}
            for destination in message.get("destinations", []):
                successes = sum(1 for attempt in destination.get("attempts", []) if attempt.get("ok"))
                if successes > 1:
                    found[control_id] = successes
    return found


def soak(args, tmpdir: Path) -> tuple[dict, list[dict]]:
    journal, record = tmpdir / "acked.ids", tmpdir / "sink.ids"
    sink_cmd = [sys.executable, str(harness.BENCH / "sink_peer.py"), "--port", "0", "--flap", args.flap,
                "--hang-every", str(args.hang_every), "--record", str(record)]
    sink = harness.start_ready_line("sink", sink_cmd, tmpdir)
    states = SinkStates(sink.proc)
    port = harness.free_port()
    text = scenarios.channel_text(scenarios.E2E_CHANNEL, HOST=harness.HOST, PORT=port, SINK=sink.port)
    text += DESTINATION.format(ack_timeout=args.ack_timeout, interval=args.retry_interval,
                               max_interval=args.retry_max)
    server, _ = scenarios.start_with_channels(tmpdir, {"bench": text})
    home = tmpdir / "switchboard"
    admin = Admin(home)
    seconds = args.minutes * 60
    client = subprocess.Popen(
        [sys.executable, str(harness.CLIENT), "--host", harness.HOST, "--port", str(port),
         "--connections", str(args.connections), "--rate", str(args.rate),
         "--messages", str(int(args.rate * seconds * 2) + 1000), "--duration-limit", str(seconds),
         "--journal", str(journal), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked, arrived = Tail(journal), Tail(record)
    rows: list[dict] = []
    began = time.monotonic()
    print(f"soak: {args.minutes} min at {args.rate} msg/s over {args.connections} connections; sink flaps "
          f"{args.flap} (every {args.hang_every}. down phase a hang); work dir {tmpdir}\n{HEADER}", flush=True)
    try:
        tick = began
        while client.poll() is None:
            tick += args.sample
            while client.poll() is None and time.monotonic() < tick:
                time.sleep(min(0.2, max(0.0, tick - time.monotonic())))  # bounded by the tick
            phase = "load" if client.poll() is None else "end"  # "end": the client has just finished
            rows.append(sample(phase, began, server, admin, acked, arrived, states, rows[-1] if rows else None))
            print_row(rows[-1])
        out, err = client.communicate(timeout=30)
        load_ended = time.monotonic()
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"errors": -1, "stderr": err}
        sink.proc.send_signal(signal.SIGUSR1)  # the sink stops flapping and stays up
        steady_at = time.monotonic()
        drained_at = drained_wall = None
        shown = steady_at
        while time.monotonic() - steady_at < args.drain_limit:
            time.sleep(0.5)  # a bounded poll: the loop ends at depth 0 or at the drain limit
            row = sample("drain", began, server, admin, acked, arrived, states, rows[-1])
            if row["depth"] == 0:
                drained_at, drained_wall = time.monotonic(), time.time()
            if drained_at is not None or time.monotonic() - shown >= args.sample:
                rows.append(row)
                print_row(row)
                shown = time.monotonic()
            if drained_at is not None:
                break
        alive = server.proc.poll() is None
        final = proc_status(server.proc.pid)
        store = store_counts(home) if alive else {}
    finally:
        if client.poll() is None:
            client.kill()
        server.stop()
        sink.stop()  # SIGTERM: the sink writes the last ids before it exits
    flaps = states.flaps()
    last_up, previous = 0.0, "up"  # the moment the sink last came back up (the end of the last flap)
    for name, at, _frames in states.events:
        if name == "up" or (name == "steady" and previous in ("down", "hang")):
            last_up = at
        previous = name if name != "steady" else "up"
    ids, arrivals = read_ids(journal), read_ids(record)
    acked_set, arrived_set = set(ids), set(arrivals)
    lost = sorted(acked_set - arrived_set)
    out_of_order = check_order(arrivals)
    per_flap = duplicates_per_flap(arrivals, flaps)
    duplicated = sorted({cid for cid, n in collections.Counter(arrivals).items() if n > 1})
    resent = resent_after_ack(home, duplicated)
    after = {"down": [n for event, n in zip(flaps, per_flap[1:]) if event[0] == "down"],
             "hang": [n for event, n in zip(flaps, per_flap[1:]) if event[0] == "hang"]}
    load_rows = [row for row in rows if row["phase"] in ("load", "end")]
    after_2min = next((row for row in load_rows if row["t"] >= 120), load_rows[0] if load_rows else None)
    summary = {
        "minutes": args.minutes, "rate": args.rate, "connections": args.connections, "flap": args.flap,
        "hang_every": args.hang_every, "ack_timeout": args.ack_timeout,
        "retry": f"{args.retry_interval} x2 up to {args.retry_max}",
        "client": {k: result.get(k) for k in ("ok", "errors", "bad_acks", "lost", "timeouts", "msg_per_s",
                                               "p50_ms", "p99_ms", "max_ms", "behind")},
        "acked": len(ids), "acked_unique": len(acked_set), "arrivals": len(arrivals),
        "unique_at_sink": len(arrived_set), "lost": len(lost), "lost_ids": lost[:20],
        "unexpected_at_sink": len(arrived_set - acked_set),
        "duplicates": len(arrivals) - len(arrived_set), "flaps": len(flaps),
        "hangs": sum(1 for event in flaps if event[0] == "hang"),
        "duplicates_after_refusals": after["down"], "duplicates_after_hangs": after["hang"],
        "duplicates_before_first_flap": per_flap[0], "duplicated_ids": duplicated[:20],
        "resent_after_ack": resent, "sink_events": states.events,
        "out_of_order": len(out_of_order), "out_of_order_ids": out_of_order[:20],
        "daemon_alive": alive, "store": {k: store.get(k) for k in ("received", "queued", "sent", "errored")},
        "max_depth": max((row["depth"] or 0 for row in rows), default=0),
        "drained": drained_at is not None,
        "drain_s_after_load": round(drained_at - load_ended, 1) if drained_at else None,
        "drain_s_after_last_flap": round(drained_wall - last_up, 1) if drained_wall and last_up else None,
        "peak_rss_mb": round(max(final.get("VmHWM", 0), server.peak_rss_kb) / 1024, 1),
        "rss_mb_at_2min": after_2min["rss_mb"] if after_2min else None,
        "rss_mb_end_of_load": load_rows[-1]["rss_mb"] if load_rows else None,
        "rss_mb_after_drain": rows[-1]["rss_mb"] if rows else None,
    }
    if after_2min and load_rows:
        summary["rss_growth_mb_2min_to_end"] = round(load_rows[-1]["rss_mb"] - after_2min["rss_mb"], 1)
    summary["checks"] = {
        "nothing lost": not lost and len(ids) > 0,
        "order per connection": not out_of_order,
        "no re-send after an AA": not resent,
        "client errors 0": result.get("errors") == 0,
        "daemon running": alive,
        "queue drained": drained_at is not None,
        "store count = AA'd, all SENT": store.get("received") == len(acked_set) == store.get("sent"),
    }
    summary["ok"] = all(summary["checks"].values())
    return summary, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=300, help="msg/s in total")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--flap", default="45,15", help="sink: UP,DOWN seconds")
    parser.add_argument("--hang-every", type=int, default=3, help="every K-th down phase is a hang (0: never)")
    parser.add_argument("--ack-timeout", default="3s", help="the destination's ack_timeout")
    parser.add_argument("--retry-interval", default="500ms")
    parser.add_argument("--retry-max", default="4s", help="the retry's max_interval")
    parser.add_argument("--drain-limit", type=float, default=180, help="seconds to wait for depth 0")
    parser.add_argument("--json-out", help="also write the summary and every sample to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    tmpdir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    try:
        summary, rows = soak(args, tmpdir)
    except harness.Unavailable as error:
        print(f"soak: unavailable: {error}")
        return 2
    print("\n" + "\n".join(f"  {'ok  ' if passed else 'FAIL'} {name}" for name, passed in summary["checks"].items()))
    print(f"  lost {summary['lost']}, duplicates {summary['duplicates']} over {summary['flaps']} flaps "
          f"(after each refusal {summary['duplicates_after_refusals']}, after each hang "
          f"{summary['duplicates_after_hangs']}; sent again after an AA: {summary['resent_after_ack'] or 0}), "
          f"out of order {summary['out_of_order']}, "
          f"max depth {summary['max_depth']}, peak RSS {summary['peak_rss_mb']} MB, RSS growth minute 2 -> end "
          f"{summary.get('rss_growth_mb_2min_to_end')} MB")
    events = summary.pop("sink_events")  # in the files below, not on the terminal
    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "samples": rows, "sink_events": events}, indent=1))
    if not summary["ok"]:
        evidence = EVIDENCE / tmpdir.name
        evidence.mkdir(parents=True, exist_ok=True)
        for name in ("switchboard.log", "sink.log", "acked.ids", "sink.ids"):
            if (tmpdir / name).exists():
                shutil.copy(tmpdir / name, evidence / name)
        (evidence / "summary.json").write_text(json.dumps({"summary": summary, "samples": rows, "sink_events": events}, indent=1))
        print(f"evidence copied to {evidence}; work dir kept: {tmpdir}")
    elif not args.keep:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
