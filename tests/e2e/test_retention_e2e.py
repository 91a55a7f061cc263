"""Retention through the real daemon: its loop prunes old content while live MLLP traffic flows,
`switchboard prune` does it by hand, and `messages --text` finds messages by their words.

Messages are made old deterministically: they are sent, processed and delivered like any other,
then their received_at is set back (a plain UPDATE through sqlite3 while the daemon runs, as an
operator's tool would); everything sent afterwards is new.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from support.daemon import Daemon, MllpClient, MllpPeer, ack_for, control_id_of, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "500ms" }'
LONG_AGO = "2020-01-01T00:00:00.000Z"


def channel(port: int) -> str:
    return f"""[source]
type = "mllp"
listen = "127.0.0.1:0"

[metadata]
mrn = "PID.3.1"

[[destination]]
name = "downstream"
type = "mllp"
connect = "127.0.0.1:{port}"
ack_timeout = "2s"
{FAST_RETRY}
"""


def word(control_id: str) -> str:
    """The distinctive word (MRN) carried by a message: letters and digits only."""
    return "MRN" + control_id.replace("-", "X")


def message(control_id: str) -> str:
    return hl7(control_id, mrn=word(control_id))


def daemon_with(tmp_path, retention: str) -> tuple[Daemon, MllpPeer]:
    """Channel "main" delivers to a peer that refuses BAD-* (ERROR); "stuck" delivers to a port
    where nothing listens (its messages stay QUEUED)."""
    peer = MllpPeer(lambda payload: ack_for(payload, "AE" if control_id_of(payload).startswith("BAD") else "AA"))
    daemon = Daemon(tmp_path / "d", {"main": channel(peer.port), "stuck": channel(free_port())})
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace('[store]\n', f'[store]\nretention = "{retention}"\n', 1))
    return daemon, peer


def send_all(port: int, control_ids: list[str]) -> None:
    client = MllpClient(port)
    try:
        for control_id in control_ids:
            assert client.request(message(control_id))["code"] == "AA", control_id
    finally:
        client.close()


def rows(daemon: Daemon, like: str) -> dict[str, tuple]:
    """control id -> (id, status, pruned, raw) of the stored messages whose control id is LIKE."""
    conn = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True, timeout=10)
    try:
        found = conn.execute("SELECT control_id, id, status, pruned, raw FROM messages WHERE control_id LIKE ?",
                             (like,)).fetchall()
    finally:
        conn.close()
    by_control_id = {r[0]: r[1:] for r in found}
    assert len(by_control_id) == len(found), "a control id was stored twice"
    return by_control_id


def make_old(daemon: Daemon, ids: list[int]) -> None:
    conn = sqlite3.connect(daemon.db, timeout=10)
    try:
        with conn:
            conn.executemany("UPDATE messages SET received_at = ? WHERE id = ?", [(LONG_AGO, i) for i in ids])
    finally:
        conn.close()


def old_traffic(daemon: Daemon, peer: MllpPeer) -> dict[str, list[str]]:
    """Send the messages that will be made old and wait until each is SENT, ERROR or QUEUED."""
    sets = {"sent": [f"OLD-{i}" for i in range(40)], "error": [f"BAD-{i}" for i in range(5)],
            "queued": [f"STK-{i}" for i in range(5)]}
    send_all(daemon.ports["main"], sets["sent"] + sets["error"])
    send_all(daemon.ports["stuck"], sets["queued"])
    wanted = {**{c: "SENT" for c in sets["sent"]}, **{c: "ERROR" for c in sets["error"]},
              **{c: "QUEUED" for c in sets["queued"]}}

    def settled():
        stored = {**rows(daemon, "OLD-%"), **rows(daemon, "BAD-%"), **rows(daemon, "STK-%")}
        return all(stored.get(c, (None, None))[1] == s for c, s in wanted.items())

    wait_for(settled, timeout=30, what="the old messages to be sent, refused and queued")
    return sets


class LiveTraffic:
    """Sends LIVE-n messages over MLLP from a thread until stopped, keeping every ACK code."""

    def __init__(self, port: int) -> None:
        self.port, self.acks, self.stop = port, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = MllpClient(self.port)
        try:
            n = 0
            while not self.stop.is_set() or n < 100:
                control_id = f"LIVE-{n}"
                self.acks[control_id] = client.request(message(control_id))["code"]
                n += 1
        finally:
            client.close()

    def __enter__(self) -> "LiveTraffic":
        self.thread.start()
        wait_for(lambda: len(self.acks) >= 20, timeout=20, what="live traffic to flow")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def check_live(daemon: Daemon, peer: MllpPeer, live: LiveTraffic) -> None:
    """Every live message was ACKed AA, is stored once with its text intact, and was delivered."""
    assert set(live.acks.values()) == {"AA"}
    stored = rows(daemon, "LIVE-%")
    assert set(stored) == set(live.acks)
    for control_id, (_id, _status, pruned, raw) in stored.items():
        assert not pruned and raw == message(control_id) + "\r"   # the final CR added (§3.5)
    wait_for(lambda: set(live.acks) <= set(peer.control_ids()), timeout=30, what="live messages delivered")


def test_the_daemon_prunes_old_content_while_live_traffic_flows(tmp_path):
    daemon, peer = daemon_with(tmp_path, "10m")  # checked every second
    daemon.start(expect_channels=2)
    try:
        sets = old_traffic(daemon, peer)
        old = {**rows(daemon, "OLD-%"), **rows(daemon, "BAD-%"), **rows(daemon, "STK-%")}
        with LiveTraffic(daemon.ports["main"]) as live:
            make_old(daemon, [v[0] for v in old.values()])
            wait_for(lambda: all(r[2] for r in rows(daemon, "OLD-%").values()), timeout=30,
                     what="the daemon to prune the old SENT messages")
        check_live(daemon, peer, live)

        for control_id in sets["error"] + sets["queued"]:  # kept until resolved
            _id, status, pruned, raw = rows(daemon, control_id)[control_id]
            assert not pruned and raw == message(control_id) + "\r", (control_id, status)   # the final CR added (§3.5)
        shown = daemon.cli("show", str(old["OLD-3"][0]))
        assert shown.returncode == 0 and "content pruned" in shown.stdout
        assert "raw:" not in shown.stdout and "PID|" not in shown.stdout  # its metadata (the mrn) stays
        assert daemon.cli_json("show", str(old["OLD-3"][0]))["raw"] is None
        assert daemon.cli_json("messages", "--meta", f"mrn={word('OLD-3')}")[0]["control_id"] == "OLD-3"

        assert daemon.cli_json("messages", "--text", word("OLD-3")) == []   # its words left with it
        assert [m["control_id"] for m in daemon.cli_json("messages", "--text", word("BAD-2"))] == ["BAD-2"]
        found = wait_for(lambda: daemon.cli_json("messages", "--text", word("LIVE-7")), timeout=10,
                         what="a live message to be found by its words")
        assert [m["control_id"] for m in found] == ["LIVE-7"]
        assert daemon.stop() == 0
        assert "retention: pruned the content of" in daemon.log
    finally:
        daemon.stop()
        peer.close()


def test_switchboard_prune_by_hand_while_the_daemon_runs(tmp_path):
    daemon, peer = daemon_with(tmp_path, "0")  # the daemon keeps everything
    daemon.start(expect_channels=2)
    try:
        sets = old_traffic(daemon, peer)
        old = {**rows(daemon, "OLD-%"), **rows(daemon, "BAD-%"), **rows(daemon, "STK-%")}
        make_old(daemon, [v[0] for v in old.values()])

        nothing = daemon.cli("prune")
        assert nothing.returncode == 0 and "nothing pruned" in nothing.stdout
        dry = daemon.cli("prune", "--older-than", "1h", "--dry-run")
        assert dry.returncode == 0 and "would prune the content of 40 message(s)" in dry.stdout
        assert "5 ERROR" in dry.stdout and "5 QUEUED" in dry.stdout
        assert not any(r[2] for r in rows(daemon, "OLD-%").values())  # a dry run changes nothing

        with LiveTraffic(daemon.ports["main"]) as live:
            done = daemon.cli("prune", "--older-than", "1h")
            assert done.returncode == 0, done.stderr
            assert "pruned the content of 40 message(s)" in done.stdout
            errors = daemon.cli("prune", "--older-than", "1h", "--include-errors")
            assert errors.returncode == 0 and "pruned the content of 5 message(s)" in errors.stdout
        check_live(daemon, peer, live)

        assert all(r[2] and r[3] is None for r in rows(daemon, "OLD-%").values())
        assert all(r[2] for r in rows(daemon, "BAD-%").values())
        for control_id in sets["queued"]:  # never pruned: still to be sent
            assert rows(daemon, control_id)[control_id][2:] == (0, message(control_id) + "\r")   # the final CR added (§3.5)
        bad = daemon.cli("prune", "--older-than", "soon")
        assert bad.returncode == 1 and "not a duration" in bad.stderr
    finally:
        daemon.stop()
        peer.close()
