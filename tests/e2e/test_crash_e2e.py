"""kill -9 at any moment loses nothing that was ACKed (RELIABILITY "Promises", DESIGN §5).

One real daemon, an MLLP source and an MLLP destination to a peer that journals what it receives.
Four senders send strict request/response with unique control ids, journal every AA, and (like a
real sender) reconnect and re-send what was not AA'd.  The daemon is killed with SIGKILL at random
moments and at the injected points of ``engine.faults`` (after commit before ACK, after commit
before the in-memory queues are fed, after a downstream ACK before SENT is recorded).  After the
last restart, with faults disarmed: every AA'd message is stored (once) and delivered at least
once, duplicates stay within the in-flight bound, each sender's messages are first delivered in
the order they were AA'd, and ``PRAGMA integrity_check`` is ok after every kill.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from contextlib import closing

import pytest

from support.daemon import Daemon, MllpClient, MllpPeer, control_id_of, first_seen, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

SENDERS = 4
RANDOM_KILL = (0.2, 1.5)            # seconds after traffic is flowing
FAULT_PHASES = ("kill_after_commit_before_ack", "kill_after_commit_before_queueing",
                "kill_after_downstream_ack_before_sent")


class Sender(threading.Thread):
    """A well-behaved HL7 sender: one message in flight, re-send until AA, journal every AA."""

    def __init__(self, number: int, port: int) -> None:
        super().__init__(name=f"sender-{number}", daemon=True)
        self.prefix = f"S{number}-"
        self.port = port
        self.acked: list[str] = []       # the journal: control ids in the order they were AA'd
        self.not_aa: list[str] = []      # answers other than AA (retried)
        self.errors: list[str] = []      # an AA for another message: a bug, reported by the test
        self.resends = 0
        self.finish = threading.Event()  # stop after the message in flight is AA'd

    def run(self) -> None:
        number, pending, client = 0, None, None
        while True:
            if pending is None:
                if self.finish.is_set():
                    break
                number += 1
                pending = f"{self.prefix}{number:05d}"
                attempts = 0
            if client is None:
                try:
                    client = MllpClient(self.port, timeout=5)
                except OSError:
                    time.sleep(0.02)  # the daemon is down or starting: a sender's reconnect interval
                    continue
            attempts += 1
            self.resends += attempts > 1
            try:
                ack = client.request(hl7(pending))
            except (OSError, ConnectionError, AssertionError, IndexError):
                client.close()
                client = None
                continue
            if ack["code"] != "AA":
                self.not_aa.append(f"{pending}: {ack['code']}")
                continue
            if ack["control_id"] != pending:
                self.errors.append(f"AA for {ack['control_id']} while waiting for {pending}")
                continue
            self.acked.append(pending)
            pending = None
        if client is not None:
            client.close()


def integrity(db) -> list:
    """``PRAGMA integrity_check`` on a read-only connection (it neither checkpoints nor removes the
    WAL, so the daemon's own recovery still sees what the crash left)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def start(daemon: Daemon, fault: str | None) -> bool:
    """Start the daemon; True if it is up.  With a fault armed it may legitimately kill itself
    while it starts (recovered deliveries pass the point before "started" is logged)."""
    try:
        daemon.start(1)
        return True
    except AssertionError:
        if fault and daemon.process.returncode == -signal.SIGKILL and f"SIGKILL at {fault}" in daemon.log:
            daemon.kill()  # reap, close the pipe
            return False
        raise


def restart_and_settle(daemon: Daemon, senders: list, peer: MllpPeer, queued) -> tuple[dict, set]:
    """After the last kill: start the daemon again, let each sender finish its message in flight,
    wait until every AA'd message is delivered and ``queued()`` is 0 (every delivery recorded
    SENT), and stop the daemon cleanly.  Returns each sender's journal and the AA'd control ids."""
    daemon.start(1)
    for sender in senders:
        sender.finish.set()
    for sender in senders:
        sender.join(20)
        assert not sender.is_alive(), f"{sender.name} did not finish its last message"
    journal = {s.prefix: list(s.acked) for s in senders}
    acked = {cid for ids in journal.values() for cid in ids}
    wait_for(lambda: acked <= set(peer.control_ids()), timeout=30, what="every AA'd message delivered")
    wait_for(lambda: not queued(), timeout=20, what="every delivery recorded SENT")
    assert daemon.stop() == 0
    return journal, acked


def kill_in_turn(daemon: Daemon, senders: list, phases: list, rng: random.Random, after_kill) -> None:
    """Start the daemon once per phase under the senders' traffic (they start with the first) and
    SIGKILL it: at the armed fault point of the phase, or at a random moment once traffic flows;
    ``after_kill(fault)`` checks what it must after each death.  The daemon is left dead."""
    base_env = dict(daemon.env)
    for number, fault in enumerate(phases):
        daemon.env = dict(base_env)
        if fault:
            daemon.env["SWITCHBOARD_FAULTS"] = f"{fault}:@{rng.randint(3, 40)}"
        up = start(daemon, fault)
        if number == 0:
            for sender in senders:
                sender.start()
        if up and fault:
            daemon.process.wait(15)   # it kills itself at the armed point
            daemon.kill()
        elif up:
            before = sum(len(s.acked) for s in senders)
            wait_for(lambda: sum(len(s.acked) for s in senders) >= before + 20, timeout=15,
                     what="traffic through the daemon")
            time.sleep(rng.uniform(*RANDOM_KILL))   # a random moment, on purpose
            daemon.kill()
        assert daemon.process.returncode == -signal.SIGKILL
        if fault:   # it died at the armed point, not anywhere else
            assert f"SIGKILL at {fault}" in daemon.log, daemon.log[-2000:]
        after_kill(fault)
    daemon.env = base_env


def test_sigkill_at_random_and_injected_points_loses_nothing(tmp_path):
    began = time.monotonic()
    rng = random.Random()
    peer = MllpPeer()
    port = free_port()
    channel = f"""
[source]
type = "mllp"
listen = "127.0.0.1:{port}"

[[destination]]
name = "ehr"
type = "mllp"
connect = "127.0.0.1:{peer.port}"
ack_timeout = "2s"
retry = {{ interval = "50ms", backoff = 1.5, max_interval = "300ms" }}
"""
    daemon = Daemon(tmp_path / "d", {"crash": channel})
    base_env = dict(daemon.env)
    senders = [Sender(n, port) for n in range(SENDERS)]
    kills: list[str] = []
    dupes_at_kill: list[int] = []     # duplicate deliveries so far, at each kill
    phases = [None, *FAULT_PHASES, None]
    rng.shuffle(phases)
    try:
        def after_kill(fault):
            kills.append(fault or "random")
            dupes_at_kill.append(_duplicates(peer))
            assert integrity(daemon.db) == [("ok",)], f"after kill {len(kills)} ({kills[-1]})"

        kill_in_turn(daemon, senders, phases, rng, after_kill)
        daemon.env = dict(base_env)
        journal, acked = restart_and_settle(daemon, senders, peer, lambda: _queued(daemon.db))
    finally:
        for sender in senders:
            sender.finish.set()
        daemon.kill()
        peer.close()

    for sender in senders:
        assert not sender.errors, sender.errors
        assert not sender.not_aa, sender.not_aa   # a killed daemon answers nothing, never AE
    assert len(kills) >= 3 and set(FAULT_PHASES) <= set(kills)
    assert all(len(ids) >= 20 for ids in journal.values()), {p: len(ids) for p, ids in journal.items()}
    assert sum(s.resends for s in senders) >= 1, "no sender ever had to re-send: the kills hit nothing"

    with closing(sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)) as conn:
        stored = [row[0] for row in conn.execute("SELECT control_id FROM messages WHERE channel = 'crash'")]
        statuses = {row[0] for row in conn.execute("SELECT status FROM deliveries")}
    assert integrity(daemon.db) == [("ok",)]
    # every AA'd message is in the store, once (a re-send of a committed message is a duplicate
    # of it, never a second row); nothing is stored that its sender did not finally get AA for
    assert sorted(stored) == sorted(acked)
    assert statuses == {"SENT"}

    delivered = [control_id_of(p) for p in peer.received]
    assert acked <= set(delivered)
    assert set(delivered) <= acked
    duplicates = _duplicates(peer)
    per_kill = [b - a for a, b in zip(dupes_at_kill, dupes_at_kill[1:] + [duplicates])]
    assert duplicates <= len(kills) * (SENDERS + 1), \
        f"{duplicates} duplicates after {len(kills)} kills: {list(zip(kills, per_kill))}"

    for prefix, ids in journal.items():
        assert [cid for cid in first_seen(delivered) if cid.startswith(prefix)] == ids, f"order of sender {prefix}"

    elapsed = time.monotonic() - began
    print(f"crash test: {len(kills)} kills ({', '.join(kills)}), {len(acked)} messages AA'd, "
          f"{sum(s.resends for s in senders)} re-sends, {duplicates} duplicate deliveries (per kill {per_kill}), "
          f"{elapsed:.1f}s")
    assert elapsed < 60


def _queued(db) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT count(*) FROM deliveries WHERE status = 'QUEUED'").fetchone()[0]


def _duplicates(peer: MllpPeer) -> int:
    delivered = [control_id_of(p) for p in list(peer.received)]
    return len(delivered) - len(set(delivered))
