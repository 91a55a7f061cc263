"""`make bench`: the engine and two references under the same load client, reported as ratios.

This machine is shared and noisy, so an absolute msg/s means little from one day to the next; the
ratio to two references measured in the same minute does. Every target is started here as its own
process on a loopback port, and the load client (bench/load_client.py, another process) runs
against each in turn: for each scenario, repetition after repetition, the targets take turns, so a
burst of noise from a neighbour lands on all of them rather than on one. Results are the medians.

A target is one entry of ``TARGETS``: a name and a ``start(tmpdir)`` that returns a running
``Server`` (its process and port) or raises ``Unavailable``. The references print "READY <port>";
the daemon is waited for until its port accepts connections. Peak memory is each server's VmHWM
from /proc (psutil is not installed), read just before it is stopped.

Bounded: each client run stops after its message count or ``--duration-limit`` seconds, and the
whole run skips what is left once ``--budget`` seconds have passed (default well under 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLIENT = BENCH / "load_client.py"
HOST = "127.0.0.1"

# name, connections, messages per run (strict request/response unless --pipeline)
SCENARIOS = [("1 conn", 1, 3000), ("8 conn", 8, 10000)]

INGEST_CHANNEL = """\
name = "bench"
description = "bench: MLLP -> durable store -> AA, nothing else"

[source]
type = "mllp"
listen = "{host}:{port}"
ack = "stored"
"""


class Unavailable(Exception):
    """A target that cannot run here (yet); the benchmark reports it and carries on."""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    peak_rss_kb: int = 0

    def read_peak_rss(self) -> int:
        """VmHWM (peak resident set) of the server process, in kB; 0 if it has gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = int(line.split()[1])
        except OSError:
            pass
        return self.peak_rss_kb

    def stop(self) -> None:
        self.read_peak_rss()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def thread_times(pid: int) -> dict[int, tuple[float, float]]:
    """{tid: (user s, system s)} for every thread of ``pid``, from /proc (costs the daemon nothing)."""
    times = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended between listdir and open
        times[int(tid)] = (int(fields[11]) / TICK, int(fields[12]) / TICK)
    return times


def cpu_per_message(pid: int, before: dict, after: dict, messages: int) -> dict:
    """CPU µs per message between two ``thread_times`` snapshots: the main thread (the reactor),
    the busiest other thread (the store writer) and the whole process, each user + system."""
    done = max(messages, 1)
    per = {tid: ((u - before.get(tid, (0, 0))[0]) * 1e6 / done, (s - before.get(tid, (0, 0))[1]) * 1e6 / done)
           for tid, (u, s) in after.items()}
    main = per.pop(pid, (0.0, 0.0))
    writer = max(per.values(), key=sum, default=(0.0, 0.0))
    return {"reactor_user_us": main[0], "reactor_sys_us": main[1], "writer_user_us": writer[0],
            "writer_sys_us": writer[1], "reactor_us": sum(main), "writer_us": sum(writer),
            "daemon_us": sum(main) + sum(sum(v) for v in per.values())}


def cpu_cell(reactor: float | None, writer: float | None, total: float | None) -> str:
    """'reactor / writer / total' µs per message, as the tables print it."""
    if total is None:
        return "–"
    return f"{reactor:.0f} / {writer:.0f} / {total:.0f}"


def free_port() -> int:
    """A port that was free a moment ago (for a daemon that must be told its port in a file)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def start_ready_line(name: str, cmd: list[str], tmpdir: Path, env: dict | None = None,
                     timeout: float = 20.0) -> Server:
    """Start a server that prints "READY <port>" on stdout once it listens."""
    log = tmpdir / f"{name}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=tmpdir,
                                env={**os.environ, **(env or {})}, text=True)
    deadline = time.monotonic() + timeout
    line = ""
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], remaining)[0]:
            break  # silent until the deadline
        line = proc.stdout.readline()  # the server prints READY or exits; both end the wait
        if not line or line.startswith("READY "):
            break
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise Unavailable(f"did not print READY ({last_line(log) or 'no output'})")
    return Server(name, proc, int(line.split()[1]), log)


def wait_for_port(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """Bounded wait until something accepts on HOST:port, or the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def switchboard_command() -> list[str]:
    for candidate in (Path(sys.executable).parent / "switchboard", ROOT / ".venv" / "bin" / "switchboard"):
        if candidate.exists():
            return [str(candidate)]
    raise Unavailable("no switchboard executable next to this Python or in .venv/bin")


STORE_SERVER: str | None = None  # --store-url: the PostgreSQL server of the "switchboard-pg" target


def store_table(store_url: str | None) -> str:
    """The [store] table: the SQLite file, or ``url`` = a fresh database on ``store_url``'s server."""
    if not store_url:
        return '[store]\npath = "var/switchboard.db"\nretention = "0"\n'
    from pgdb import fresh_database

    return f'[store]\nurl = "{fresh_database(store_url)}"\nretention = "0"\n'


def start_switchboard(tmpdir: Path, channel: str = INGEST_CHANNEL, timeout: float = 20.0,
                      store_url: str | None = None, name: str = "switchboard") -> Server:
    """The real daemon with one channel (ingest by default) in a throwaway config directory."""
    home = tmpdir / name
    for sub in ("channels", "transforms", "plugins", "var"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    (home / "config.toml").write_text(
        "[engine]\n"
        'channels_dir = "channels"\ntransforms_dir = "transforms"\nplugins_dir = "plugins"\n'
        'log_level = "warning"\n\n'
        + store_table(store_url) + "\n"
        f'[admin]\nlisten = "{HOST}:{admin_port}"\ntoken = "${{SWITCHBOARD_TOKEN}}"\n'
    )
    (home / "channels" / "bench.toml").write_text(channel.format(host=HOST, port=port))
    cmd = switchboard_command() + ["-c", str(home / "config.toml"), "run"]
    log = tmpdir / f"{name}.log"
    env = {**os.environ, "SWITCHBOARD_TOKEN": secrets.token_hex(16)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=home, env=env)
    if not wait_for_port(proc, port, timeout):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise Unavailable(f"not listening on {port} ({last_line(log) or 'no output'})")
    return Server(name, proc, port, log)


def start_switchboard_pg(tmpdir: Path) -> Server:
    if not STORE_SERVER:
        raise Unavailable("no --store-url given")
    return start_switchboard(tmpdir, store_url=STORE_SERVER, name="switchboard-pg")


def start_naive(tmpdir: Path) -> Server:
    return start_ready_line("naive", [sys.executable, str(BENCH / "baseline_naive.py"),
                                      "--port", "0", "--db", str(tmpdir / "naive.db")], tmpdir)


def start_framing(tmpdir: Path) -> Server:
    return start_ready_line("framing", [sys.executable, str(BENCH / "framing_only.py"), "--port", "0"], tmpdir)


# The order of the table. "naive" and "limit" are the two references the ratios are taken against.
TARGETS = [
    {"name": "switchboard", "label": "switchboard (ingest: MLLP -> store -> AA)", "start": start_switchboard},
    {"name": "switchboard-pg", "label": "switchboard, [store] url = PostgreSQL (--store-url)",
     "start": start_switchboard_pg},
    {"name": "naive", "label": "naive: python-hl7 asyncio + SQLite commit/msg", "start": start_naive},
    {"name": "limit", "label": "limit: Twisted MLLP framing only", "start": start_framing},
]


@dataclass
class Result:
    runs: dict = field(default_factory=dict)  # scenario name -> list of client result dicts

    def median(self, scenario: str, key: str) -> float | None:
        values = [run[key] for run in self.runs.get(scenario, [])]
        return statistics.median(values) if values else None

    def errors(self) -> int:
        return sum(run["errors"] for runs in self.runs.values() for run in runs)


def run_client(port: int, connections: int, messages: int, pipeline: int, limit: float) -> dict:
    cmd = [sys.executable, str(CLIENT), "--host", HOST, "--port", str(port), "--connections",
           str(connections), "--messages", str(messages), "--pipeline", str(pipeline),
           "--duration-limit", str(limit), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 60)
    lines = done.stdout.strip().splitlines()
    if done.returncode not in (0, 3) or not lines:
        raise RuntimeError(done.stderr.strip() or f"load client exited {done.returncode}")
    return json.loads(lines[-1])


def fs_type(path: Path) -> str:
    """The filesystem under path (a tmpfs would make fsync free and the numbers meaningless)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def ratio(value: float | None, base: float | None, spec: str = ".2f") -> str:
    return "–" if not value or not base else format(value / base, spec)


def table(results: dict[str, Result], rss: dict[str, int], runs: int, unavailable: set[str]) -> str:
    """The markdown table: medians per target, then ratios to the naive server and to the limit."""
    names = [s[0] for s in SCENARIOS]
    head = ["target"]
    for name in names:
        head += [f"{name} msg/s", f"{name} p50/p99 ms", f"{name} CPU µs/msg (reactor / writer / total)"]
    head += ["× naive (" + " / ".join(names) + ")", "of limit (" + " / ".join(names) + ")",
             "peak RSS MB", "errors"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    naive, limit = results.get("naive"), results.get("limit")
    for target in TARGETS:
        res = results.get(target["name"])
        if res is None:
            if target["name"] in unavailable:
                rows.append(f"| {target['label']} | unavailable |" + " |" * (len(head) - 2))
            continue
        cells = [target["label"]]
        for name in names:
            cells.append(fmt(res.median(name, "msg_per_s")))
            cells.append(f"{fmt(res.median(name, 'p50_ms'), '.2f')} / {fmt(res.median(name, 'p99_ms'), '.2f')}")
            cells.append(cpu_cell(res.median(name, "reactor_us"), res.median(name, "writer_us"),
                                  res.median(name, "daemon_us")))
        cells.append(" / ".join(ratio(res.median(n, "msg_per_s"), naive and naive.median(n, "msg_per_s"))
                                for n in names))
        cells.append(" / ".join(ratio(res.median(n, "msg_per_s"), limit and limit.median(n, "msg_per_s"), ".0%")
                                for n in names))
        cells.append(fmt(rss.get(target["name"], 0) / 1024, ".0f"))
        cells.append(str(res.errors()))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\nMedians of {runs} runs per cell; strict request/response unless noted. CPU: "
                               "the server's own user + system time from /proc per acknowledged message; "
                               "reactor = its main thread, writer = its busiest other thread.")


# DESIGN.md §5, for the ingest scenario. Absolute numbers on a shared machine: read with the ratios.
GOALS = [("1 conn", "msg_per_s", ">=", 2000), ("8 conn", "msg_per_s", ">=", 10000),
         ("1 conn", "p99_ms", "<=", 2.0)]
PEAK_RSS_GOAL_MB = 80


def goals(res: Result, rss_kb: int) -> str:
    """One line per goal of DESIGN.md §5 that this benchmark measures: the median, met or not."""
    lines = ["", "switchboard against DESIGN.md §5 (medians):"]
    for scenario, key, op, goal in GOALS:
        value = res.median(scenario, key)
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        lines.append(f"  {scenario} {key} {fmt(value, ',.2f')} (goal {op} {goal:,}): {'met' if met else 'NOT met'}")
    mb = rss_kb / 1024
    lines.append(f"  peak RSS {mb:.0f} MB (goal <= {PEAK_RSS_GOAL_MB}): "
                 f"{'met' if rss_kb and mb <= PEAK_RSS_GOAL_MB else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark switchboard against its references")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration-limit", type=float, default=6.0, help="seconds per client run")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for all client runs")
    parser.add_argument("--pipeline", type=int, default=1, help="outstanding messages per connection")
    parser.add_argument("--only", action="append", help="run only these targets (by name)")
    parser.add_argument("--json-out", help="also write every run's numbers to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (databases, logs)")
    parser.add_argument("--store-url", metavar="URL",
                        help="also run the daemon on PostgreSQL: a fresh database on this server"
                             " (postgresql://127.0.0.1:5432/), target switchboard-pg")
    args = parser.parse_args(argv)
    global STORE_SERVER
    STORE_SERVER = args.store_url

    started = time.monotonic()
    tmpdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    print(f"machine: {machine()}; work dir {tmpdir} ({fs_type(tmpdir)})", flush=True)
    servers: dict[str, Server] = {}
    results: dict[str, Result] = {}
    rss: dict[str, int] = {}
    unavailable: set[str] = set()
    try:
        for target in TARGETS:
            if args.only and target["name"] not in args.only:
                continue
            try:
                servers[target["name"]] = target["start"](tmpdir)
            except Unavailable as exc:
                unavailable.add(target["name"])
                print(f"{target['name']}: unavailable, skipped: {exc}", flush=True)
                continue
            results[target["name"]] = Result()
            try:
                run_client(servers[target["name"]].port, 1, 300, 1, args.duration_limit)  # warm-up
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"{target['name']}: warm-up failed: {exc}", flush=True)
        for scenario, connections, messages in SCENARIOS:
            for rep in range(args.runs):
                for name, server in servers.items():
                    if time.monotonic() - started > args.budget:
                        print(f"budget of {args.budget:.0f} s used: skipping {name} {scenario} run {rep + 1}")
                        continue
                    if server.proc.poll() is not None:
                        continue
                    try:
                        before = thread_times(server.proc.pid)
                        out = run_client(server.port, connections, messages, args.pipeline, args.duration_limit)
                        out.update(cpu_per_message(server.proc.pid, before, thread_times(server.proc.pid),
                                                   out["ok"]))
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        print(f"{name} {scenario} run {rep + 1}: client failed: {exc}", flush=True)
                        continue
                    results[name].runs.setdefault(scenario, []).append(out)
                    print(f"{name:12} {scenario} run {rep + 1}: {out['msg_per_s']:>9,.0f} msg/s  "
                          f"p99 {out['p99_ms']:.2f} ms  CPU µs/msg {cpu_cell(out['reactor_us'], out['writer_us'], out['daemon_us'])}"
                          f"  ok {out['ok']}  errors {out['errors']}", flush=True)
    finally:
        for name, server in servers.items():
            server.stop()
            rss[name] = server.peak_rss_kb
            if server.proc.returncode not in (0, -15, None):
                print(f"{name}: exited {server.proc.returncode}; log: {server.log}")
    print()
    print(table(results, rss, args.runs, unavailable))
    if "switchboard" in results:
        print(goals(results["switchboard"], rss.get("switchboard", 0)))
    if args.pipeline > 1:
        print(f"Pipelined: up to {args.pipeline} outstanding messages per connection.")
    print(f"\nTotal {time.monotonic() - started:.0f} s.")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"machine": machine(), "runs": {n: r.runs for n, r in results.items()}, "peak_rss_kb": rss},
            indent=2))
    failed = any(r.errors() for r in results.values())
    if args.keep or failed:
        print(f"work dir kept: {tmpdir}")
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
