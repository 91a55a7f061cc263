"""The benchmark scenarios beyond plain ingest: end to end, 64 connections, memory, start-up.

``python bench/scenarios.py [--runs 3] [--only NAME]`` (``make bench-full`` runs it after
``run.py``).  Each scenario starts the real daemon as its own process (``run.start_switchboard``),
drives it with the same load client (``bench/load_client.py``) and prints one line of medians:

- ``e2e-8``: filter + Jinja transform (HL7 out) + MLLP destination to ``sink_peer.py``, 8
  connections; the delivery rate is measured AT THE DESTINATION (first to last frame received).
  Beside the rates, the daemon's CPU µs per delivered message from /proc (``reactor_us``: its main
  thread; ``writer_us``: the store writer; ``daemon_us``: every thread), ingest and delivery both.
- ``e2e-8-pipelined``: the same with ``max_in_flight = 8`` on the MLLP destination.
- ``ingest-64``: MLLP -> store -> AA over 64 connections.
- ``idle-rss``: 10 channels, 1,000 idle connections held open, then 8-connection load on one
  channel; peak RSS (VmHWM) of the daemon.
- ``startup-20``: time from process start to "switchboard started" with 20 channels.
- ``replay-100k``: 100,000 stored and delivered messages replayed through the admin API; time
  until the last replayed message reaches the destination.
- ``ingest-workers`` (needs ``--store-url``): MLLP -> store -> AA with ``[engine] workers = N``
  for each N of ``--workers`` (default 1,2) at each count of ``--connections`` (default 8,64),
  taking turns within each run (N = 1, N = 2, N = 1, ...) so the machine's noise hits both alike;
  ``cpu_us`` is the CPU per message of the supervisor and every worker, summed from /proc, and
  ``pg_cpu_us`` that of the PostgreSQL server's processes over the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (bench/run.py: targets, client runner, Server)

E2E_CHANNEL = """\
name = "bench"
[source]
type = "mllp"
listen = "HOST:PORT"

[[filter]]
when = "msg['MSH.9.1'] == 'ADT'"

[metadata]
mrn = "PID.3.1"

[[transform]]
outbound = "hl7"
inline = '''MSH|^~\\&|SWB|HOSP|AGENCY|AGENCY|{{ hl7_now() }}||ADT^A08|{{ msg['MSH.10'] }}|P|2.5
PID|1||{{ msg['PID.3.1'] | hl7_escape }}||{{ msg['PID.5.1'] | hl7_escape }}^{{ msg['PID.5.2'] | hl7_escape }}
PV1|1|{{ msg['PV1.2'] | hl7_escape }}'''

[[destination]]
name = "sink"
type = "mllp"
connect = "HOST:SINK"
"""


def channel_text(template: str, **values) -> str:
    for key, value in values.items():
        template = template.replace(key, str(value))
    return template


def start_with_channels(tmpdir: Path, channels: dict[str, str], *, store: str | None = None, extra: str = "",
                        name: str = "switchboard", workers: int = 1) -> tuple[harness.Server, float]:
    """The daemon with several channel files; returns (server, seconds until 'switchboard started',
    with ``workers`` > 1 until every worker has started).
    ``store``: the [store] table to use (default: SQLite, or a fresh database with --store-url)."""
    ready_line = f"all {workers} workers started" if workers > 1 else "switchboard started"
    home = tmpdir / name
    for sub in ("channels", "transforms", "plugins", "var"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    admin_port = harness.free_port()
    (home / "config.toml").write_text(
        '[engine]\nlog_level = "info"\n' + (f"workers = {workers}\n" if workers > 1 else "")
        + (store or harness.store_table(harness.STORE_SERVER)) + extra +
        f'[admin]\nlisten = "{harness.HOST}:{admin_port}"\ntoken = "bench-token-{admin_port}"\n')
    for name, text in channels.items():
        (home / "channels" / f"{name}.toml").write_text(text)
    log = tmpdir / f"{name}.log"
    started = time.monotonic()
    proc = subprocess.Popen(harness.switchboard_command() + ["-c", str(home / "config.toml"), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=home, text=True)
    ready = threading.Event()
    stamp: list[float] = []

    def drain() -> None:  # a thread, not select(): readline() buffers lines select() cannot see
        with open(log, "w") as out:
            for line in proc.stdout:
                out.write(line)
                if ready_line in line and not ready.is_set():
                    stamp.append(time.monotonic() - started)
                    ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise harness.Unavailable(f"daemon did not start ({harness.last_line(log)})")
    seconds = stamp[0]
    return harness.Server("switchboard", proc, 0, log), seconds


def mllp_channel(name: str, port: int, max_connections: int = 100) -> str:
    return (f'name = "{name}"\n[source]\ntype = "mllp"\nlisten = "{harness.HOST}:{port}"\n'
            f'max_connections = {max_connections}\n')


def e2e_8(tmpdir: Path, messages: int = 10000, max_in_flight: int = 1) -> dict:
    sink = harness.start_ready_line("sink", [sys.executable, str(harness.BENCH / "sink_peer.py"), "--port", "0",
                                             "--expect", str(messages)], tmpdir)
    port = harness.free_port()
    text = channel_text(E2E_CHANNEL, HOST=harness.HOST, PORT=port, SINK=sink.port)
    if max_in_flight > 1:
        text += f"max_in_flight = {max_in_flight}\n"
    server, _ = start_with_channels(tmpdir, {"bench": text})
    try:
        began = time.time()
        before = harness.thread_times(server.proc.pid)
        ingest = harness.run_client(port, 8, messages, 1, 60)
        done = wait_done(sink, 120)
        cpu = harness.cpu_per_message(server.proc.pid, before, harness.thread_times(server.proc.pid),
                                      int(done[1]) if done else ingest["ok"])
        delivered = int(done[1]) if done else 0
        last = float(done[3]) if done else time.time()
        return {"ingest_msg_per_s": ingest["msg_per_s"], "ingest_p99_ms": ingest["p99_ms"],
                "delivered": delivered, "delivery_msg_per_s": round(delivered / (last - began), 1),
                "reactor_us": round(cpu["reactor_us"]), "writer_us": round(cpu["writer_us"]),
                "daemon_us": round(cpu["daemon_us"]),
                "errors": ingest["errors"], "peak_rss_mb": round(server.read_peak_rss() / 1024, 1)}
    finally:
        server.stop()
        sink.stop()


def e2e_8_pipelined(tmpdir: Path) -> dict:
    """``e2e-8`` with the MLLP destination pipelining 8 messages (``max_in_flight = 8``)."""
    return e2e_8(tmpdir, max_in_flight=8)


def wait_done(sink: harness.Server, timeout: float) -> list[str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([sink.proc.stdout], [], [], 1)[0]:
            line = sink.proc.stdout.readline()
            if line.startswith("DONE"):
                return line.split()
    return None


def replay_100k(tmpdir: Path, messages: int = 100_000) -> dict:
    """Ingest N (pipelined, to fill the store fast), let them be delivered, then replay all N
    through the admin API and time until the N-th replayed message reaches the destination."""
    import urllib.request

    sink = harness.start_ready_line("sink", [sys.executable, str(harness.BENCH / "sink_peer.py"), "--port", "0",
                                             "--expect", str(messages), "--expect", str(2 * messages)], tmpdir)
    port = harness.free_port()
    server, _ = start_with_channels(tmpdir, {"bench": channel_text(E2E_CHANNEL, HOST=harness.HOST, PORT=port,
                                                                    SINK=sink.port)})
    try:
        cmd = [sys.executable, str(harness.CLIENT), "--host", harness.HOST, "--port", str(port), "--connections", "8",
               "--messages", str(messages), "--pipeline", "16", "--duration-limit", "600", "--json"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=700, check=False)
        if wait_done(sink, 600) is None:
            raise harness.Unavailable("the first delivery of the messages did not finish")
        home = tmpdir / "switchboard"
        address = (home / "var" / "admin.address").read_text().strip()
        token = next(line.split('"')[1] for line in (home / "config.toml").read_text().splitlines()
                     if line.startswith("token"))
        request = urllib.request.Request(f"http://{address}/api/replay", method="POST",
                                          data=json.dumps({"channel": "bench"}).encode(),
                                          headers={"Authorization": f"Bearer {token}",
                                                   "Content-Type": "application/json"})
        began = time.time()
        with urllib.request.urlopen(request, timeout=600) as answer:
            accepted = time.time() - began
            answer.read()
        done = wait_done(sink, 900)
        if done is None:
            raise harness.Unavailable("the replayed messages did not all arrive")
        seconds = float(done[3]) - began
        return {"replayed": messages, "seconds": round(seconds, 1), "msg_per_s": round(messages / seconds, 1),
                "api_answer_s": round(accepted, 2), "peak_rss_mb": round(server.read_peak_rss() / 1024, 1)}
    finally:
        server.stop()
        sink.stop()


def ingest_64(tmpdir: Path, messages: int = 20000) -> dict:
    port = harness.free_port()
    server, _ = start_with_channels(tmpdir, {"bench": mllp_channel("bench", port, 100)})
    try:
        result = harness.run_client(port, 64, messages, 1, 60)
        return {"msg_per_s": result["msg_per_s"], "p99_ms": result["p99_ms"], "errors": result["errors"],
                "peak_rss_mb": round(server.read_peak_rss() / 1024, 1)}
    finally:
        server.stop()


def ingest_2_nodes(tmpdir: Path, messages: int = 5000) -> dict:
    """Two nodes on one PostgreSQL database (--store-url), 4 connections to each at once: the
    cluster's ingest rate (the sum), beside one node with 8 connections on the same server."""
    if not harness.STORE_SERVER:
        raise harness.Unavailable("needs --store-url")
    store = harness.store_table(harness.STORE_SERVER)
    ports = [harness.free_port(), harness.free_port()]
    servers = []
    try:
        for name, port in zip(("a", "b"), ports):
            servers.append(start_with_channels(tmpdir, {"bench": mllp_channel("bench", port, 100)}, store=store,
                                               extra=f'[cluster]\nnode = "{name}"\n', name=f"node-{name}")[0])
        results: list[dict] = []
        threads = [threading.Thread(target=lambda p=port: results.append(harness.run_client(p, 4, messages, 1, 30)))
                   for port in ports]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"msg_per_s": round(sum(r["msg_per_s"] for r in results), 1),
                "p99_ms": max(r["p99_ms"] for r in results), "errors": sum(r["errors"] for r in results)}
    finally:
        for server in servers:
            server.stop()


WORKERS, CONNECTIONS = (1, 2), (8, 64)    # ingest-workers: --workers, --connections
DEDUPE: str | None = None                  # ingest-workers: --dedupe (None: the channel default, 24h)


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its living children (the supervisor and its
    workers), from /proc."""
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for each in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / harness.TICK
    return total


def postgres_cpu() -> float:
    """CPU seconds (user + system) of every PostgreSQL server process on this machine, from /proc:
    the store's side of the work, which a SQLite daemon does in its own writer thread."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.endswith("(postgres"):
            fields = tail.split()
            total += (int(fields[11]) + int(fields[12])) / harness.TICK
    return total


def ingest_workers(tmpdir: Path, messages: int = 10000) -> dict:
    """One run: for each connection count, each worker count in turn on a fresh database."""
    if not harness.STORE_SERVER:
        raise harness.Unavailable("needs --store-url (workers > 1 run on PostgreSQL only)")
    result = {}
    for connections in CONNECTIONS:
        for workers in WORKERS:
            port = harness.free_port()
            # per-address cap above the load: every connection comes from 127.0.0.1, and the cap
            # (default 10) counts per worker, so N workers would admit N times as many
            channel = mllp_channel("bench", port, 200) + "max_connections_per_address = 200\n"
            if DEDUPE is not None:
                channel += f'dedupe = "{DEDUPE}"\n'

            server, _ = start_with_channels(tmpdir, {"bench": channel},
                                            store=harness.store_table(harness.STORE_SERVER), workers=workers,
                                            extra='[cluster]\nnode = "bench"\n', name=f"w{workers}-c{connections}")
            try:
                harness.run_client(port, connections, 300 * workers, 1, 10)  # warm-up: every worker's imports, caches
                before, store_before = process_tree_cpu(server.proc.pid), postgres_cpu()
                run = harness.run_client(port, connections, messages, 1, 60)
                spent, store_spent = process_tree_cpu(server.proc.pid) - before, postgres_cpu() - store_before
            finally:
                server.stop()
            key = f"c{connections}_w{workers}"
            done = max(run["ok"], 1)
            result[f"{key}_msg_per_s"] = run["msg_per_s"]
            result[f"{key}_cpu_us"] = round(spent * 1e6 / done)
            result[f"{key}_pg_cpu_us"] = round(store_spent * 1e6 / done)
            result[f"{key}_p99_ms"] = run["p99_ms"]
            result[f"{key}_errors"] = run["errors"]
            print(f"  {connections} connections, workers = {workers}: {run['msg_per_s']:,} msg/s, "
                  f"{result[f'{key}_cpu_us']:,} µs CPU/msg (+ PostgreSQL {result[f'{key}_pg_cpu_us']:,}), "
                  f"p99 {run['p99_ms']} ms, errors {run['errors']} "
                  f"(bad {run['bad_acks']}, lost {run['lost']}, timeouts {run['timeouts']}); "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return result


def idle_rss(tmpdir: Path) -> dict:
    ports = [harness.free_port() for _ in range(10)]
    channels = {f"ch{n}": mllp_channel(f"ch{n}", port, 200) for n, port in enumerate(ports)}
    server, _ = start_with_channels(tmpdir, channels)
    idle: list[socket.socket] = []
    try:
        for n in range(1000):
            idle.append(socket.create_connection((harness.HOST, ports[n % 10]), timeout=5))
        result = harness.run_client(ports[0], 8, 10000, 1, 60)
        return {"idle_connections": len(idle), "msg_per_s_under_load": result["msg_per_s"],
                "errors": result["errors"], "peak_rss_mb": round(server.read_peak_rss() / 1024, 1)}
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def startup_20(tmpdir: Path) -> dict:
    channels = {f"ch{n}": mllp_channel(f"ch{n}", harness.free_port()) for n in range(20)}
    server, seconds = start_with_channels(tmpdir, channels)
    server.stop()
    return {"startup_s": round(seconds, 3)}


SCENARIOS = {"e2e-8": e2e_8, "e2e-8-pipelined": e2e_8_pipelined, "ingest-64": ingest_64, "idle-rss": idle_rss, "startup-20": startup_20,
             "replay-100k": replay_100k, "ingest-2-nodes": ingest_2_nodes, "ingest-workers": ingest_workers}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=sorted(SCENARIOS))
    parser.add_argument("--store-url", metavar="URL",
                        help="run the daemon on PostgreSQL: a fresh database per run on this server")
    parser.add_argument("--workers", default="1,2", help="ingest-workers: the worker counts to take turns with")
    parser.add_argument("--connections", default="8,64", help="ingest-workers: the connection counts")
    parser.add_argument("--dedupe", help='ingest-workers: the channel\'s dedupe window ("0": off)')
    args = parser.parse_args(argv)
    harness.STORE_SERVER = args.store_url
    global WORKERS, CONNECTIONS, DEDUPE
    DEDUPE = args.dedupe
    WORKERS = tuple(int(n) for n in args.workers.split(","))
    CONNECTIONS = tuple(int(n) for n in args.connections.split(","))
    summary = {}
    for name, scenario in SCENARIOS.items():
        if args.only and name != args.only:
            continue
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
                try:
                    runs.append(scenario(Path(tmp)))
                except harness.Unavailable as error:
                    print(f"{name}: unavailable: {error}")
                    break
        if runs:
            medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            summary[name] = medians
            print(f"{name}: " + ", ".join(f"{k} {v:,}" if isinstance(v, (int, float)) else f"{k} {v}"
                                          for k, v in medians.items()) + f"  (median of {len(runs)})")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
