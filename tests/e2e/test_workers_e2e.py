"""``[engine] workers = 2`` on PostgreSQL: the real supervisor and its two worker processes on one
MLLP port (SO_REUSEPORT), real sockets, a real downstream MLLP peer.

Which worker holds a connection, a listening socket or the peer's connection is read from /proc
(the supervisor's children, their socket inodes, /proc/net/tcp): the kernel's view, not the
daemon's.  Every AA'd message is stored once and delivered; a worker killed with SIGKILL is
restarted; a pause through worker 1's API closes the port on every worker, a restarted one too."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import pg
from support.daemon import Daemon, LoadSender, MllpClient, MllpPeer, control_id_of, first_seen, free_port, run_cli, wait_for

from e2e.test_tls_e2e import TlsMllpClient, client_context, pki  # noqa: F401 - pki: the fixture

pytestmark = pytest.mark.slow

LEASE = 3.0
WORKERS = 2
LISTEN, ESTABLISHED = "0A", "01"


@pytest.fixture
def database():
    with pg.database("sbworkers") as url:
        yield url


def workers_daemon(root: Path, url: str, port: int, peer_port: int | None = None, *,
                   more: dict[str, str] | None = None) -> Daemon:
    """A daemon with ``workers = 2`` on ``url``: channel ``relay`` listening on ``port`` and, with
    ``peer_port``, an MLLP destination ``ehr`` to the peer; ``more`` channels beside it."""
    text = f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:{port}"\n'
    if peer_port is not None:
        text += f"""
[[destination]]
name = "ehr"
type = "mllp"
connect = "127.0.0.1:{peer_port}"
ack_timeout = "2s"
retry = {{ interval = "200ms", backoff = 1.0, max_interval = "200ms" }}
"""
    daemon = Daemon(root, {"relay": text, **(more or {})}, extra_config=f'[cluster]\nnode = "box"\nlease = "{LEASE}s"\n')
    pg.use_store(daemon, url)
    config = daemon.config.read_text().replace("[engine]\n", f"[engine]\nworkers = {WORKERS}\n", 1)
    daemon.config.write_text(config.replace('log_level = "debug"', 'log_level = "info"'))
    return daemon


def start(daemon: Daemon) -> Daemon:
    daemon.start(1)
    wait_for(lambda: "all 2 workers started" in daemon.log, timeout=20, what="both workers to start")
    return daemon


def workers(daemon: Daemon) -> dict[int, int]:
    """``{worker index: pid}`` of the supervisor's living children (from /proc)."""
    found = {}
    supervisor = daemon.process.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in map(int, children):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"--worker" in argv and state != "Z":
            found[int(argv[argv.index(b"--worker") + 1])] = pid
    return found


def sockets(pid: int, port: int, state: str, *, remote: bool = False) -> int:
    """How many TCP sockets of process ``pid`` in ``state`` have ``port`` as their local (or, with
    ``remote``, their remote) port."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match:
                inodes.add(match.group(1))
    except OSError:
        return 0
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, peer, st, inode = fields[1], fields[2], fields[3], fields[9]
            address = peer if remote else local
            if st == state and inode in inodes and int(address.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def holders(daemon: Daemon) -> dict[str, list[str]]:
    return {entry["name"]: entry["holds"] for entry in daemon.cli_json("nodes", "--json")}


def queue_holder(daemon: Daemon) -> str | None:
    return next((name for name, holds in holders(daemon).items() if "queue:relay/ehr" in holds), None)


def stored(url: str) -> list[str]:
    return [row[0] for row in pg.sql(url, "SELECT control_id FROM messages WHERE channel = 'relay'")]


def stop_cleanly(daemon: Daemon, url: str) -> None:
    """SIGTERM to the supervisor: exit 0, no worker left, every lease released."""
    pids = list(workers(daemon).values())
    assert daemon.stop(signal.SIGTERM) == 0, daemon.log[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "all workers stopped" in daemon.log
    assert pg.sql(url, "SELECT resource, node FROM leases") == [], daemon.log[-5000:]


@pytest.fixture
def relaying(tmp_path, database):
    """Two workers, channel ``relay`` on one port with a destination to a peer; the senders a test
    adds to ``senders`` are stopped after it, the daemon killed if the test left it running."""
    peer, port = MllpPeer(), free_port()
    setup = SimpleNamespace(daemon=workers_daemon(tmp_path, database, port, peer.port), peer=peer, port=port,
                            senders=[])
    try:
        start(setup.daemon)
        yield setup
    finally:
        for sender in setup.senders:
            sender.finish.set()
        setup.daemon.kill()
        peer.close()


def test_two_workers_share_one_port_store_each_message_once_and_the_holder_delivers(relaying, database):
    daemon, peer, port = relaying.daemon, relaying.peer, relaying.port
    pids = workers(daemon)
    assert sorted(pids) == [1, 2]
    holder = wait_for(lambda: queue_holder(daemon), timeout=LEASE * 3, what="a worker to hold the queue")
    assert set(holders(daemon)) == {"box-1", "box-2"}

    senders = relaying.senders = [LoadSender(f"S{n}-", port) for n in range(8)]
    for sender in senders:
        sender.start()
    wait_for(lambda: all(len(s.acked) >= 5 for s in senders), timeout=20, what="traffic on 8 connections")
    taken = {index: sockets(pid, port, ESTABLISHED) for index, pid in pids.items()}
    if min(taken.values()) == 0:        # the kernel hashes: 1 in 128 puts all 8 on one worker
        taken = spread(pids, port, lambda: MllpClient(port))
    assert min(taken.values()) > 0, taken     # both workers took connections
    wait_for(lambda: sum(len(s.acked) for s in senders) >= 400, timeout=30, what="400 messages AA'd")
    for sender in senders:
        sender.finish.set()
        sender.join(10)
    acked = [cid for s in senders for cid in s.acked]
    wait_for(lambda: set(acked) <= set(peer.control_ids()), timeout=30, what="every AA'd message delivered")

    in_store = stored(database)
    assert sorted(in_store) == sorted(set(in_store)) and set(acked) <= set(in_store)   # stored once
    delivered = peer.control_ids()
    assert len(delivered) == len(set(delivered))                                        # delivered once
    for sender in senders:
        mine = [cid for cid in first_seen(delivered) if cid.startswith(sender.prefix)]
        assert mine == sender.acked, sender.prefix                                      # in order
    held_by = int(queue_holder(daemon).rsplit("-", 1)[1])
    assert queue_holder(daemon) == holder
    sending = {index: sockets(pid, peer.port, ESTABLISHED, remote=True) for index, pid in pids.items()}
    assert sending[held_by] >= 1 and sending[3 - held_by] == 0, sending   # only the holder sends
    print(f"{len(acked)} AA'd on 8 connections; connections per worker {taken}; queue held by box-{held_by}")
    stop_cleanly(daemon, database)


def test_a_worker_killed_under_load_is_restarted_and_no_acked_message_is_lost(relaying, database):
    daemon, peer, port = relaying.daemon, relaying.peer, relaying.port
    holder = wait_for(lambda: queue_holder(daemon), timeout=LEASE * 3, what="a worker to hold the queue")
    victim = int(holder.rsplit("-", 1)[1])
    before = workers(daemon)
    senders = relaying.senders = [LoadSender(f"K{n}-", port) for n in range(4)]
    for sender in senders:
        sender.start()
    wait_for(lambda: all(len(s.acked) >= 20 for s in senders), timeout=20, what="traffic")
    os.kill(before[victim], signal.SIGKILL)          # the queue's holder, under load
    wait_for(lambda: workers(daemon).get(victim) not in (None, before[victim]), timeout=10,
             what="the supervisor to restart the killed worker")
    assert re.search(rf"worker {victim} \(pid {before[victim]}\) exited with signal 9 \(SIGKILL\); "
                     rf"restarting in 1s", daemon.log), daemon.log[-2000:]
    wait_for(lambda: daemon.log.count("switchboard started") >= 3, timeout=20, what="the new worker to start")
    counts = [len(s.acked) for s in senders]
    wait_for(lambda: all(len(s.acked) >= n + 20 for s, n in zip(senders, counts)), timeout=20,
             what="traffic after the restart")
    for sender in senders:
        sender.finish.set()
        sender.join(10)
    acked = {cid for s in senders for cid in s.acked}
    wait_for(lambda: acked <= set(peer.control_ids()), timeout=LEASE * 6, what="every AA'd message delivered")
    assert acked <= set(stored(database))
    new_holder = queue_holder(daemon)
    assert new_holder in {"box-1", "box-2"}
    assert set(holders(daemon)) == {"box-1", "box-2"}
    delivered = peer.control_ids()
    print(f"killed box-{victim} (the holder); {len(acked)} AA'd, all delivered; "
          f"{len(delivered) - len(set(delivered))} sent twice; queue now held by {new_holder}")
    stop_cleanly(daemon, database)


def refused(port: int, tries: int = 20) -> bool:
    """Every one of ``tries`` connections to ``port`` is refused."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            continue
    return True


def spread(pids: dict[int, int], port: int, connect) -> dict[int, int]:
    """Open connections with ``connect()`` until each worker holds one (at most 32): how many each
    holds.  The kernel picks by a hash of the client's port, so a few may all land on one."""
    opened = []
    try:
        while len(opened) < 32:
            opened.append(connect())
            taken = {index: sockets(pid, port, ESTABLISHED) for index, pid in pids.items()}
            if min(taken.values()) > 0:
                break
        return taken
    finally:
        for client in opened:
            client.close()


def test_pause_through_the_api_holds_on_every_worker_and_on_a_restarted_one(tmp_path, database, pki):
    port, tls_port = free_port(), free_port()
    secure = (f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:{tls_port}"\n'
              f'tls = {{ cert = "{pki}/server.pem", key = "{pki}/server.key", client_ca = "{pki}/ca.pem" }}\n')
    daemon = start(workers_daemon(tmp_path, database, port, more={"secure": secure}))
    try:
        pids = workers(daemon)
        assert all(sockets(pid, port, LISTEN) == 1 for pid in pids.values())
        assert all(sockets(pid, tls_port, LISTEN) == 1 for pid in pids.values())    # TLS shares its port too

        def tls_client():
            client = TlsMllpClient(tls_port, client_context(pki))
            assert client.request("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|T-1|P|2.5")["code"] == "AA"
            return client

        assert min(spread(pids, tls_port, tls_client).values()) > 0     # both workers answered over TLS
        client = MllpClient(port)
        assert client.request("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|P-1|P|2.5")["code"] == "AA"
        client.close()

        status, view = daemon.api("POST", "/api/channels/relay/pause")
        assert status == 200 and view["state"] == "paused", view
        wait_for(lambda: all(sockets(pid, port, LISTEN) == 0 for pid in pids.values()), timeout=10,
                 what="every worker to stop listening")
        assert refused(port)

        os.kill(pids[2], signal.SIGKILL)                # a restarted worker comes up paused too
        wait_for(lambda: daemon.log.count("channel relay: pause (relayed") >= 2, timeout=20,
                 what="the restarted worker to take the pause")
        restarted = workers(daemon)[2]
        assert restarted != pids[2] and sockets(restarted, port, LISTEN) == 0
        assert refused(port)

        status, view = daemon.api("POST", "/api/channels/relay/start")
        assert status == 200 and view["state"] == "started", view
        pids = workers(daemon)
        wait_for(lambda: all(sockets(pid, port, LISTEN) == 1 for pid in pids.values()), timeout=10,
                 what="every worker to listen again")
        client = MllpClient(port)
        assert client.request("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|P-2|P|2.5")["code"] == "AA"
        client.close()
        stop_cleanly(daemon, database)
    finally:
        daemon.kill()


def test_a_worker_that_cannot_listen_stops_the_start_with_its_reason(tmp_path, database):
    blocker = socket.create_server(("127.0.0.1", 0))     # no SO_REUSEPORT: the workers cannot join it
    port = blocker.getsockname()[1]
    daemon = workers_daemon(tmp_path, database, port)
    try:
        result = run_cli("-c", str(daemon.config), "run", cwd=daemon.root, timeout=30)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "cannot start" in result.stderr and str(port) in result.stderr, result.stderr[-2000:]
        assert "failed at start" in result.stderr and "stopping the other workers" in result.stderr
        assert pg.sql(database, "SELECT resource FROM leases") == []
    finally:
        blocker.close()


def test_check_names_every_workers_problem(tmp_path):
    root = tmp_path / "sqlite"
    daemon = Daemon(root, {"relay": '[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n'})
    daemon.config.write_text(daemon.config.read_text().replace("[engine]\n", "[engine]\nworkers = 2\n", 1))
    result = daemon.cli("check")
    assert result.returncode == 1
    assert "config.toml: engine.workers: needs [store] url (PostgreSQL)" in result.stderr, result.stderr
    assert "'A second core'" in result.stderr
    assert "relay.toml: source.listen: workers > 1 needs a fixed port in listen" in result.stderr, result.stderr
    for value, reason in (("0", "must be from 1 to 64"), ('"two"', "must be a whole number")):
        daemon.config.write_text(re.sub(r"workers = \S+", f"workers = {value}", daemon.config.read_text()))
        result = daemon.cli("check")
        assert result.returncode == 1 and f"config.toml: engine.workers: {reason}" in result.stderr, result.stderr
    result = run_cli("-c", str(daemon.config), "run", cwd=root, timeout=30)   # run refuses it the same way
    assert result.returncode == 1 and "engine.workers" in result.stderr and "Traceback" not in result.stderr
