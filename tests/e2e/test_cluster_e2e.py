"""Two and three nodes on one PostgreSQL store, each its own process with its own MLLP port (as
behind a TCP load balancer): one node sends each destination's queue, the others store and ACK;
SIGKILL of the holder under load hands the queue over within the lease plus a retry interval;
a node cut from the database (pg_terminate_backend, connections refused) answers AE, never AA.

Every AA'd message is delivered; each sender's messages arrive in the order they were AA'd."""

from __future__ import annotations

import time

import pytest

from support import pg
from support.daemon import Daemon, LoadSender, MllpClient, MllpPeer, control_id_of, first_seen, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

LEASE = 3.0
RETRY = 0.2


def cluster_node(root, name: str, url: str, channel: str, source: str, peer_port: int) -> Daemon:
    """One node of the cluster on ``url``: channel ``channel`` with ``source`` (TOML lines) and an
    MLLP destination ``ehr`` to the peer, retried every RETRY seconds."""
    text = source + f"""
[[destination]]
name = "ehr"
type = "mllp"
connect = "127.0.0.1:{peer_port}"
ack_timeout = "2s"
retry = {{ interval = "{int(RETRY * 1000)}ms", backoff = 1.0, max_interval = "{int(RETRY * 1000)}ms" }}
"""
    daemon = Daemon(root / name, {channel: text}, extra_config=f'[cluster]\nnode = "{name}"\nlease = "{LEASE}s"\n')
    pg.use_store(daemon, url)
    return daemon


def node(root, name: str, url: str, peer_port: int) -> Daemon:
    return cluster_node(root, name, url, "relay", f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:{free_port()}"\n',
                        peer_port)


def holder(daemon: Daemon) -> str | None:
    for entry in daemon.cli_json("nodes", "--json"):
        if "queue:relay/ehr" in entry["holds"]:
            return entry["name"]
    return None


@pytest.fixture
def database():
    with pg.database("sbnodes") as url:
        yield url


def test_two_nodes_share_the_work_and_a_killed_holder_is_taken_over(tmp_path, database):
    peer = MllpPeer()
    nodes = {name: node(tmp_path, name, database, peer.port) for name in ("a", "b")}
    senders = []
    try:
        for daemon in nodes.values():
            daemon.start(1)
        first = wait_for(lambda: holder(nodes["a"]), timeout=LEASE * 3, what="a node to hold the queue")
        listed = {entry["name"] for entry in nodes["b"].cli_json("nodes", "--json")}
        assert listed == {"a", "b"}
        health = nodes[first].api("GET", "/healthz?ready", token=None)
        assert health[0] == 200 and health[1]["ready"] and "queue:relay/ehr" in health[1]["holds"]

        senders = [LoadSender(f"{name.upper()}-", nodes[name].ports["relay"]) for name in nodes]
        for sender in senders:
            sender.start()
        wait_for(lambda: all(len(s.acked) >= 30 for s in senders), timeout=20, what="traffic on both nodes")
        wait_for(lambda: len(set(peer.control_ids())) >= 40, timeout=20, what="deliveries by the holder")

        survivor = "b" if first == "a" else "a"
        nodes[first].kill()                 # SIGKILL the holder under load (reaped: it sends no more)
        killed_at = time.monotonic()
        delivered_before = len(peer.received)
        wait_for(lambda: len(peer.received) > delivered_before + 1, timeout=LEASE * 3, interval=0.01,
                 what="the survivor to deliver")
        took = time.monotonic() - killed_at     # SIGKILL -> the first delivery by the new holder
        assert holder(nodes[survivor]) == survivor
        survivor_sender = next(s for s in senders if s.prefix.startswith(survivor.upper()))
        dead_sender = next(s for s in senders if s is not survivor_sender)
        dead_sender.finish.set()
        wait_for(lambda: len(survivor_sender.acked) >= 100, timeout=20, what="more traffic on the survivor")
        for sender in senders:
            sender.finish.set()
            sender.join(10)
        acked = {cid for s in senders for cid in s.acked}
        wait_for(lambda: acked <= set(peer.control_ids()), timeout=30, what="every AA'd message delivered")
        delivered = [control_id_of(p) for p in peer.received]
        for sender in senders:
            mine = [cid for cid in first_seen(delivered) if cid.startswith(sender.prefix)]
            assert mine[:len(sender.acked)] == sender.acked, sender.prefix   # order per sender
        duplicates = len(delivered) - len(set(delivered))
        twice = {cid for cid in delivered if delivered.count(cid) > 1}
        wait_for(lambda: not pg.sql(database, "SELECT 1 FROM deliveries WHERE status = 'QUEUED' LIMIT 1"),
                 timeout=30, what="every delivery recorded")
        flagged = {row[0] for row in pg.sql(
            database, "SELECT m.control_id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
                      " JOIN messages m ON m.id = d.message_id WHERE a.possible_duplicate = 1")}
        assert twice <= flagged, sorted(twice - flagged)   # every duplicate delivery is flagged
        print(f"takeover after SIGKILL: {took:.2f} s (lease {LEASE} s, retry {RETRY} s); "
              f"{len(acked)} AA'd, {duplicates} duplicate deliveries")
        assert took <= LEASE + RETRY + LEASE / 3   # + one lease round of slack for this shared machine
        assert survivor_sender.codes() == {"AA"}
    finally:
        for sender in senders:
            sender.finish.set()
        for daemon in nodes.values():
            daemon.stop()
        peer.close()


def test_three_nodes_one_holder_and_a_node_cut_from_the_database_answers_ae(tmp_path, database):
    peer = MllpPeer()
    nodes = {name: node(tmp_path, name, database, peer.port) for name in ("a", "b", "c")}
    name = database.rsplit("/", 1)[1]
    try:
        for daemon in nodes.values():
            daemon.start(1)
        wait_for(lambda: holder(nodes["a"]), timeout=LEASE * 3, what="a node to hold the queue")
        entries = nodes["c"].cli_json("nodes", "--json")
        assert sorted(e["name"] for e in entries) == ["a", "b", "c"]
        assert sum("queue:relay/ehr" in e["holds"] for e in entries) == 1
        acked = []
        for n, daemon in enumerate(nodes.values()):
            client = MllpClient(daemon.ports["relay"])
            for k in range(10):
                control_id = f"N{n}-{k:03d}"
                assert client.request(hl7(control_id))["code"] == "AA"
                acked.append(control_id)
            client.close()
        wait_for(lambda: set(acked) <= set(peer.control_ids()), timeout=20, what="all three nodes' messages")
        assert len(peer.control_ids()) == len(set(peer.control_ids()))   # each once: one node sends

        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg.sql(pg._url("postgres"), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
               (name,))
        client = MllpClient(nodes["b"].ports["relay"])
        codes = [client.request(hl7(f"CUT-{k}"))["code"] for k in range(3)]
        assert set(codes) == {"AE"}, codes
        wait_for(lambda: nodes["b"].api("GET", "/healthz?ready", token=None)[0] == 503, timeout=LEASE * 2,
                 what="the cut node to say it is not ready")
        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        wait_for(lambda: client.request(hl7("BACK-1"))["code"] == "AA", timeout=LEASE * 3, what="AA again")
        client.close()
        wait_for(lambda: nodes["b"].api("GET", "/healthz?ready", token=None)[0] == 200, timeout=LEASE * 2,
                 what="ready again")
        wait_for(lambda: "BACK-1" in peer.control_ids(), timeout=LEASE * 4, what="delivered after the cut")
    finally:
        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        for daemon in nodes.values():
            daemon.stop()
        peer.close()


POLL = 0.5


def file_node(root, name: str, url: str, inbox, peer_port: int) -> Daemon:
    return cluster_node(root, name, url, "drop", f"""
[source]
type = "file"
path = "{inbox}"
pattern = "*.hl7"
settle = "0s"
poll = true
poll_interval = "{int(POLL * 1000)}ms"
""", peer_port)


def poller_holders(daemon: Daemon, channel: str = "drop") -> list[str]:
    return [entry["name"] for entry in daemon.cli_json("nodes", "--json")
            if f"poller:{channel}" in entry["holds"]]


def holder_of(daemon: Daemon, resource: str) -> str | None:
    return next((entry["name"] for entry in daemon.cli_json("nodes") if resource in entry["holds"]), None)


def drop_file(inbox, name: str, control_ids: list[str]) -> None:
    """Write a file beside the inbox and rename it in (a finished file appears at once)."""
    temporary = inbox.parent / f".{name}.tmp"
    temporary.write_bytes(b"".join(hl7(cid).encode() + b"\r" for cid in control_ids))
    temporary.rename(inbox / name)


def stored_counts(url: str) -> dict[str, int]:
    return dict(pg.sql(url, "SELECT control_id, count(*) FROM messages GROUP BY control_id"))


def test_two_nodes_poll_one_folder_on_one_node_and_a_killed_poller_is_taken_over(tmp_path, database):
    peer = MllpPeer()
    inbox = tmp_path / "shared" / "inbox"
    inbox.mkdir(parents=True)
    nodes = {name: file_node(tmp_path, name, database, inbox, peer.port) for name in ("a", "b")}
    try:
        for daemon in nodes.values():
            daemon.start()
        wait_for(lambda: poller_holders(nodes["a"]), timeout=LEASE * 3, what="a node to hold the poller")
        assert len(poller_holders(nodes["b"])) == 1
        first = poller_holders(nodes["b"])[0]
        survivor = "b" if first == "a" else "a"
        expected = []
        for n in range(20):
            ids = [f"F{n:02d}-{k}" for k in range(3)]
            drop_file(inbox, f"batch{n:02d}.hl7", ids)
            expected += ids
        wait_for(lambda: set(expected) <= set(stored_counts(database)), timeout=20, what="every file stored")
        wait_for(lambda: not list(inbox.glob("*.hl7")), timeout=10, what="every file moved out")
        counts = stored_counts(database)
        assert {cid: counts[cid] for cid in expected} == {cid: 1 for cid in expected}   # each message once
        assert sorted(p.name for p in (inbox / "done").glob("*.hl7")) == [f"batch{n:02d}.hl7" for n in range(20)]
        assert not any("polling " in line and str(inbox) in line for line in nodes[survivor].log_lines)
        queue_holder = wait_for(lambda: holder_of(nodes["a"], "queue:drop/ehr"), timeout=LEASE * 3,
                                what="a node to hold the queue")
        held = {"poller:drop": first, "queue:drop/ehr": queue_holder}
        for daemon in nodes.values():        # status and the API say which node holds what, from any node
            assert [row["held_by"] for row in daemon.cli_json("status") if row["name"] == "drop"] == [held]
            code, views = daemon.api("GET", "/api/channels")
            assert code == 200 and views[0]["held_by"] == held, views
            assert views[0]["destinations"][0]["node"] == queue_holder
        text = nodes[survivor].cli("status").stdout
        assert f"node {first}: last seen" in text and f"poller:drop on {first}" in text, text

        nodes[first].kill()                 # SIGKILL the poller's holder
        killed_at = time.monotonic()
        drop_file(inbox, "after.hl7", ["AFTER-1"])
        wait_for(lambda: "AFTER-1" in stored_counts(database), timeout=LEASE * 3, interval=0.05,
                 what="the survivor to take the folder over")
        took = time.monotonic() - killed_at     # SIGKILL -> the file's message stored by the survivor
        assert poller_holders(nodes[survivor]) == [survivor]
        assert any("polling " in line and str(inbox) in line for line in nodes[survivor].log_lines)
        wait_for(lambda: set(expected + ["AFTER-1"]) <= set(peer.control_ids()), timeout=20,
                 what="every stored message delivered")
        print(f"poller takeover after SIGKILL: {took:.2f} s (lease {LEASE} s, poll {POLL} s)")
        assert took <= LEASE + POLL + LEASE / 3   # + one lease round of slack for this shared machine
        assert stored_counts(database)["AFTER-1"] == 1
    finally:
        for daemon in nodes.values():
            daemon.stop()
        peer.close()


def sftp_node(root, name: str, url: str, sshd, remote, known_hosts, peer_port: int) -> Daemon:
    from e2e.test_sftp_e2e import ssh_options

    return cluster_node(root, name, url, "remote", '[source]\ntype = "sftp"\n' + ssh_options(sshd, remote, known_hosts)
                        + f'pattern = "*.hl7"\nsplit = "hl7-batch"\nsettle = "0s"\npoll_interval = "{int(POLL * 1000)}ms"\n',
                        peer_port)


def sftp_files_taken(daemon: Daemon) -> list[str]:
    """The remote files this node read and moved to done/ (from its log: names, never content)."""
    return [line.split("sftp file ", 1)[1].split(":", 1)[0] for line in daemon.log_lines
            if "channel remote: sftp file " in line and "moved to done/" in line]


def test_two_nodes_poll_one_sftp_folder_on_one_node_and_a_killed_poller_is_taken_over(tmp_path, database):
    """The SFTP source is leased like the file source: against one real OpenSSH server, only the
    node holding ``poller:remote`` lists and reads the remote folder, each file's messages are
    stored once, and after SIGKILL of that node the other takes the folder over."""
    from e2e.test_sftp_e2e import put_remote, sshd_or_skip

    server = sshd_or_skip(tmp_path).start()
    peer = MllpPeer()
    remote = tmp_path / "remote" / "inbox"
    remote.mkdir(parents=True)
    known_hosts = server.known_hosts("known_hosts")
    nodes = {name: sftp_node(tmp_path, name, database, server, remote, known_hosts, peer.port) for name in ("a", "b")}
    try:
        for daemon in nodes.values():
            daemon.start()
        wait_for(lambda: poller_holders(nodes["a"], "remote"), timeout=LEASE * 3, what="a node to hold the poller")
        [first] = poller_holders(nodes["b"], "remote")
        survivor = "b" if first == "a" else "a"
        expected, names = [], []
        for n in range(10):
            ids = [f"S{n:02d}-{k}" for k in range(3)]
            put_remote(remote, f"batch{n:02d}.hl7", "".join(hl7(cid) + "\r" for cid in ids))
            expected += ids
            names.append(f"batch{n:02d}.hl7")
        wait_for(lambda: set(expected) <= set(stored_counts(database)), timeout=20, what="every remote file stored")
        wait_for(lambda: not list(remote.glob("*.hl7")), timeout=10, what="every remote file moved out")
        counts = stored_counts(database)
        assert {cid: counts[cid] for cid in expected} == {cid: 1 for cid in expected}   # each message once
        assert sorted(p.name for p in (remote / "done").glob("*.hl7")) == names
        wait_for(lambda: sorted(sftp_files_taken(nodes[first])) == names, timeout=10, what="the poller's log")
        assert sftp_files_taken(nodes[survivor]) == []                  # exactly one node polled

        nodes[first].kill()                 # SIGKILL the poller's holder
        killed_at = time.monotonic()
        put_remote(remote, "after.hl7", hl7("SFTP-AFTER-1") + "\r")
        wait_for(lambda: "SFTP-AFTER-1" in stored_counts(database), timeout=LEASE * 3, interval=0.05,
                 what="the survivor to take the remote folder over")
        took = time.monotonic() - killed_at     # SIGKILL -> the remote file's message stored by the survivor
        assert poller_holders(nodes[survivor], "remote") == [survivor]
        wait_for(lambda: sftp_files_taken(nodes[survivor]) == ["after.hl7"], timeout=10, what="the survivor's log")
        wait_for(lambda: set(expected + ["SFTP-AFTER-1"]) <= set(peer.control_ids()), timeout=20,
                 what="every stored message delivered")
        print(f"sftp poller takeover after SIGKILL: {took:.2f} s (lease {LEASE} s, poll {POLL} s)")
        assert took <= LEASE + POLL + LEASE / 3   # + one lease round of slack for this shared machine
        assert stored_counts(database)["SFTP-AFTER-1"] == 1
    finally:
        for daemon in nodes.values():
            daemon.stop()
        peer.close()
        server.stop()


def test_a_message_resent_to_the_other_node_is_stored_and_delivered_once_and_the_pages_show_the_holder(
        tmp_path, database):
    """The re-send rule holds across nodes (they share one store): a sender that got no answer
    from node a and sends again to node b gets AA and nothing twice.  The API and the dashboard's
    channel pages name the node holding each queue."""
    from e2e.test_dashboard_e2e import Browserless

    peer = MllpPeer()
    nodes = {name: node(tmp_path, name, database, peer.port) for name in ("a", "b")}
    try:
        for daemon in nodes.values():
            daemon.start(1)
        first = wait_for(lambda: holder(nodes["a"]), timeout=LEASE * 3, what="a node to hold the queue")
        message = hl7("TWICE-1")
        for daemon in nodes.values():
            client = MllpClient(daemon.ports["relay"])
            assert client.request(message)["code"] == "AA"
            client.close()
        wait_for(lambda: "TWICE-1" in peer.control_ids(), timeout=LEASE * 3, what="the delivery")
        stored = pg.sql(database, "SELECT id FROM messages WHERE control_id = 'TWICE-1'")
        assert len(stored) == 1
        wait_for(lambda: not pg.sql(database, "SELECT 1 FROM deliveries WHERE status = 'QUEUED' LIMIT 1"),
                 timeout=20, what="the delivery recorded")
        assert peer.control_ids().count("TWICE-1") == 1

        for name, daemon in nodes.items():   # either node says who holds what
            status, views = daemon.api("GET", "/api/channels")
            [view] = [v for v in views if v["name"] == "relay"]
            assert status == 200 and view["held_by"]["queue:relay/ehr"] == first
            assert view["destinations"][0]["node"] == first
            browser = Browserless(daemon.admin_port)
            browser.sign_in()
            status, _headers, page = browser.request("GET", "/channels/relay")
            assert status == 200 and f"queue:relay/ehr on {first}" in page
            status, _headers, page = browser.request("GET", "/")
            assert status == 200 and f'<small class="node">sent by node {first}</small>' in page
    finally:
        for daemon in nodes.values():
            daemon.stop()
        peer.close()
