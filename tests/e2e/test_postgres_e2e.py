"""The real daemon on PostgreSQL (``[store] url``): ingest, retention, SIGKILL recovery, and a
database that goes away and comes back. (The pipeline and replay suites run one test each on
both backends: ``store_backend`` in test_pipeline_e2e.py and test_replay_e2e.py.)

Each test gets a fresh database on the server named by ``SWITCHBOARD_TEST_PG`` and drops it after;
the tests are skipped when that server does not answer (``.ci/run`` starts one in CI)."""

from __future__ import annotations

import random
import time

import pytest

from e2e.test_crash_e2e import FAULT_PHASES, SENDERS, Sender, kill_in_turn, restart_and_settle
from support import pg
from support.daemon import (Daemon, LoadSender, MllpClient, MllpPeer, ack_for, control_id_of, first_seen, free_port, hl7, run_cli,
                            wait_for)

pytestmark = pytest.mark.slow


@pytest.fixture
def database():
    with pg.database("sbe2e") as url:
        yield url


def relay(peer_port: int, listen: str = "127.0.0.1:0", retry: str = 'interval = "50ms", backoff = 1.5, max_interval = "300ms"',
          extra: str = "") -> str:
    return f"""
[source]
type = "mllp"
listen = "{listen}"
{extra}

[metadata]
mrn = "PID.3.1"

[[destination]]
name = "ehr"
type = "mllp"
connect = "127.0.0.1:{peer_port}"
ack_timeout = "2s"
retry = {{ {retry} }}
"""


def rows(url: str, like: str = "%") -> list[tuple]:
    return pg.sql(url, "SELECT control_id, id, status, pruned, raw FROM messages WHERE control_id LIKE %s ORDER BY id",
                  (like,))


def test_ingest_acks_after_the_postgresql_commit_and_dedupes(tmp_path, database):
    peer = MllpPeer()
    daemon = Daemon(tmp_path / "d", {"inbound": relay(peer.port)})
    pg.use_store(daemon, database)
    daemon.start(1)
    try:
        client = MllpClient(daemon.ports["inbound"])
        ack = client.request(hl7("PG-1", mrn="MRNPGONE"))
        assert ack["code"] == "AA" and ack["control_id"] == "PG-1"
        assert [r[0] for r in rows(database)] == ["PG-1"]  # committed before the ACK: no waiting
        assert client.request(hl7("PG-1", mrn="MRNPGONE"))["code"] == "AA"  # a re-send: ACKed, not stored again
        client.close()
        assert [r[0] for r in rows(database)] == ["PG-1"]
        listed = daemon.cli_json("messages", "--control-id", "PG-1")
        assert [m["control_id"] for m in listed] == ["PG-1"] and listed[0]["meta"]["mrn"] == "MRNPGONE"
        daemon.wait_status(listed[0]["id"], "SENT")
        found = wait_for(lambda: daemon.cli_json("messages", "--text", "mrnpgone"), what="a search by words")
        assert [m["id"] for m in found] == [listed[0]["id"]]
        assert peer.control_ids() == ["PG-1"]
        status = daemon.cli_json("status")
        assert [c["received"] for c in status if c["name"] == "inbound"] == [1]
        assert not (daemon.root / "var" / "switchboard.db").exists()  # the store is the database
    finally:
        daemon.stop()
        peer.close()


def test_the_daemon_prunes_old_content_on_postgresql(tmp_path, database):
    peer = MllpPeer()
    daemon = Daemon(tmp_path / "d", {"main": relay(peer.port)})
    pg.use_store(daemon, database)
    daemon.config.write_text(daemon.config.read_text().replace("[store]\n", '[store]\nretention = "10m"\n', 1))
    daemon.start(1)
    try:
        client = MllpClient(daemon.ports["main"])
        for n in range(30):
            assert client.request(hl7(f"OLD-{n}", mrn=f"MRNOLD{n}"))["code"] == "AA"
        wait_for(lambda: {r[2] for r in rows(database, "OLD-%")} == {"SENT"}, timeout=20, what="old ones sent")
        pg.sql(database, "UPDATE messages SET received_at = '2020-01-01T00:00:00.000Z' WHERE control_id LIKE 'OLD-%%'")
        for n in range(10):
            assert client.request(hl7(f"NEW-{n}", mrn=f"MRNNEW{n}"))["code"] == "AA"
        client.close()
        wait_for(lambda: all(r[3] for r in rows(database, "OLD-%")), timeout=30, what="the old content pruned")
        assert all(r[4] is None for r in rows(database, "OLD-%"))
        assert not any(r[3] for r in rows(database, "NEW-%"))
        assert daemon.cli_json("messages", "--text", "MRNOLD3") == []
        found = wait_for(lambda: daemon.cli_json("messages", "--text", "MRNNEW3"), what="a new message by its words")
        assert [m["control_id"] for m in found] == ["NEW-3"]
        assert daemon.cli_json("show", str(rows(database, "OLD-3")[0][1]))["raw"] is None
    finally:
        daemon.stop()
        peer.close()


def test_sigkill_at_random_and_injected_points_loses_nothing_on_postgresql(tmp_path, database):
    """test_crash_e2e's senders and kills, on PostgreSQL: every AA'd message stored once and
    delivered in each sender's order; a killed daemon answers nothing, never AE."""
    rng = random.Random()
    peer = MllpPeer()
    port = free_port()
    daemon = Daemon(tmp_path / "d", {"crash": relay(peer.port, listen=f"127.0.0.1:{port}")})
    pg.use_store(daemon, database)
    base_env = dict(daemon.env)
    senders = [Sender(n, port) for n in range(SENDERS)]
    phases = [None, *FAULT_PHASES]
    rng.shuffle(phases)
    kills = []
    try:
        kill_in_turn(daemon, senders, phases, rng, lambda fault: kills.append(fault or "random"))
        daemon.env = dict(base_env)
        journal, acked = restart_and_settle(
            daemon, senders, peer, lambda: pg.sql(database, "SELECT 1 FROM deliveries WHERE status = 'QUEUED' LIMIT 1"))
    finally:
        for sender in senders:
            sender.finish.set()
        daemon.kill()
        peer.close()
    for sender in senders:
        assert not sender.errors and not sender.not_aa, (sender.errors, sender.not_aa)
    stored = [r[0] for r in pg.sql(database, "SELECT control_id FROM messages")]
    assert sorted(stored) == sorted(acked)
    delivered = [control_id_of(p) for p in peer.received]
    assert set(delivered) == acked
    for prefix, ids in journal.items():
        assert [cid for cid in first_seen(delivered) if cid.startswith(prefix)] == ids, prefix
    assert set(FAULT_PHASES) <= set(kills)


def test_while_the_database_is_unreachable_the_daemon_answers_ae_then_resumes_by_itself(tmp_path, database):
    """The database refuses this daemon (its connections killed by pg_terminate_backend, new ones
    refused): every message is answered AE, never AA; once it is back, AA again, and every AA'd
    message is delivered."""
    peer = MllpPeer(lambda payload: ack_for(payload, "AA"))
    daemon = Daemon(tmp_path / "d", {"cut": relay(peer.port)})
    pg.use_store(daemon, database)
    daemon.start(1)
    name = database.rsplit("/", 1)[1]
    try:
        client = MllpClient(daemon.ports["cut"])
        assert client.request(hl7("UP-1"))["code"] == "AA"
        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg.sql(pg._url("postgres"), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        codes = [client.request(hl7(f"DOWN-{n}"))["code"] for n in range(5)]
        assert set(codes) == {"AE"}, codes
        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        codes = [client.request(hl7(f"BACK-{n}"))["code"] for n in range(5)]
        client.close()
        assert codes[-1] == "AA" and set(codes) <= {"AA", "AE"}
        acked = {"UP-1"} | {f"BACK-{n}" for n, code in enumerate(codes) if code == "AA"}
        wait_for(lambda: acked <= set(peer.control_ids()), timeout=20, what="every AA'd message delivered")
        assert not {f"DOWN-{n}" for n in range(5)} & {r[0] for r in rows(database)}
        assert "Traceback" not in daemon.log
    finally:
        pg.sql(pg._url("postgres"), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        daemon.stop()
        peer.close()


def test_a_store_url_nobody_answers_is_one_clear_sentence(tmp_path):
    """A wrong [store] url: the daemon exits 1 naming the store (without its password), no
    traceback; url with path is a config error naming the key."""
    pg.require()
    daemon = Daemon(tmp_path / "d", {})
    pg.use_store(daemon, pg._url("sbtest_missing_db").replace("postgres@", "postgres:s3cret@"))
    result = run_cli("-c", str(daemon.config), "run", timeout=60)
    assert result.returncode == 1 and "cannot open the store postgresql://postgres@" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    daemon.config.write_text(daemon.config.read_text() + '\n')
    text = daemon.config.read_text().replace("[store]\n", '[store]\npath = "x.db"\n', 1)
    daemon.config.write_text(text)
    checked = run_cli("-c", str(daemon.config), "check")
    assert checked.returncode == 1 and "store.url: give either url (PostgreSQL) or path (SQLite), not both" in checked.stderr


RESTART_LEASE = 2.0


def test_postgresql_restarted_under_load_two_nodes_answer_ae_then_resume_by_themselves(tmp_path):
    """A private PostgreSQL server (never the shared one) under two nodes and load is stopped
    (fast shutdown) and started again: while it is down both nodes answer AE, never AA, and say
    not-ready on /healthz?ready; once it is back they answer AA again by themselves, and every
    AA'd message is delivered."""
    with pg.private_server() as server:
        peer = MllpPeer()
        cluster = f'[cluster]\nnode = "{{}}"\nlease = "{RESTART_LEASE}s"\n'
        nodes = {}
        for name in ("a", "b"):
            nodes[name] = Daemon(tmp_path / name, {"relay": relay(peer.port)}, extra_config=cluster.format(name))
            pg.use_store(nodes[name], server.url)
        senders = []
        try:
            for daemon in nodes.values():
                daemon.start(1)
            senders = [LoadSender(f"{name.upper()}-", daemon.ports["relay"], pause=0, refused_pause=0.02) for name, daemon in nodes.items()]
            for sender in senders:
                sender.start()
            wait_for(lambda: all(len(s.acked) >= 20 for s in senders), timeout=20, what="load on both nodes")
            wait_for(lambda: len(peer.received) >= 20, timeout=20, what="deliveries before the stop")

            server.stop("fast")
            down_at = time.monotonic()
            for name, daemon in nodes.items():
                wait_for(lambda: daemon.api("GET", "/healthz?ready", token=None)[0] == 503,
                         timeout=RESTART_LEASE * 2, what=f"node {name} to say it is not ready")
            wait_for(lambda: all(any(t > down_at and code == "AE" for t, _cid, code in s.answers) for s in senders),
                     timeout=10, what="an AE from each node while the database is down")
            up_at = time.monotonic()
            server.start()
            while_down = [(cid, code) for s in senders for t, cid, code in s.answers if down_at < t < up_at]
            assert while_down and {code for _cid, code in while_down} == {"AE"}, [
                (round(t - down_at, 3), cid, code) for s in senders for t, cid, code in s.answers
                if down_at < t < up_at and code == "AA"]

            counts = {s.prefix: len(s.acked) for s in senders}
            wait_for(lambda: all(len(s.acked) >= counts[s.prefix] + 20 for s in senders), timeout=RESTART_LEASE * 5,
                     what="AA again on both nodes")
            resumed = max(min(t for t, _cid, code in s.answers if t > up_at and code == "AA") for s in senders) - up_at
            for name, daemon in nodes.items():
                wait_for(lambda: daemon.api("GET", "/healthz?ready", token=None)[0] == 200,
                         timeout=RESTART_LEASE * 3, what=f"node {name} ready again")
            ready = time.monotonic() - up_at
            for sender in senders:
                sender.finish.set()
                sender.join(10)
            acked = {cid for s in senders for cid in s.acked}
            wait_for(lambda: acked <= set(peer.control_ids()), timeout=30, what="every AA'd message delivered")
            never_aa = {cid for s in senders for _t, cid, code in s.answers if code == "AE"} - acked
            assert not never_aa & {r[0] for r in rows(server.url)}   # an AE'd message never re-sent is not stored
            for name, daemon in nodes.items():
                assert "Traceback" not in daemon.log, name
            print(f"PostgreSQL restart: {len(while_down)} AE while down ({up_at - down_at:.1f} s), both nodes "
                  f"answering AA {resumed:.2f} s after the start, both ready within {ready:.2f} s; "
                  f"{len(acked)} AA'd, all delivered")
        finally:
            for sender in senders:
                sender.finish.set()
            for daemon in nodes.values():
                daemon.stop()
            peer.close()
