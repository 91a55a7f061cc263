"""Limits through the real daemon, each shown biting and the daemon serving on afterwards.

Where a limit is already shown end to end elsewhere it is not repeated here: MLLP connections per
listener and idle timeout (test_ingest_e2e.py, RELIABILITY 11), HTTP source connections, header
count and size, body size and chunked bodies (test_http_source_e2e.py, RELIABILITY 27), the admin
API's body cap (test_admin_api_e2e.py), template time and size on a channel transform
(test_reliability_catalogue.py, RELIABILITY 22).  Here: the per-destination queue depth warning,
the admin listener's connection cap, and the template limits on a *destination* transform (one
destination ERROR, its sibling SENT).
"""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from support.daemon import Daemon, MllpClient, MllpPeer, api_call, delivered_files, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "300ms" }'


def mllp_source(tail: str = "") -> str:
    return f'[source]\ntype = "mllp"\nlisten = "127.0.0.1:0"\n\n{tail}'


def statuses(daemon: Daemon, channel: str) -> dict[str, str]:
    with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT control_id, status FROM messages WHERE channel = ?", (channel,)))


def queue_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log_lines if "backlog/peer" in line and "queue" in line]


def test_queue_depth_warning_once_then_back_under(tmp_path):
    port = free_port()
    channel = mllp_source(f'[[destination]]\nname = "peer"\ntype = "mllp"\nconnect = "127.0.0.1:{port}"\n'
                          f'queue_warning = 5\n{FAST_RETRY}\n')
    daemon = Daemon(tmp_path / "d", {"backlog": channel}).start(1)
    peer = None
    try:
        client = MllpClient(daemon.ports["backlog"])
        ids = [f"QW-{n}" for n in range(8)]
        for control_id in ids:                                    # the peer is down: they pile up
            assert client.request(hl7(control_id, mrn="QWSECRET"))["code"] == "AA"
        warned = wait_for(lambda: [line for line in queue_lines(daemon) if "not keeping up" in line],
                          what="the queue warning")
        assert len(warned) == 1
        assert "5 deliveries queued, at or over queue_warning = 5" in warned[0]
        peer = MllpPeer(port=port)                                 # the peer comes back: it drains
        wait_for(lambda: set(statuses(daemon, "backlog").values()) == {"SENT"}, what="all SENT")
        back = wait_for(lambda: [line for line in queue_lines(daemon) if "back under" in line],
                        what="the back-under line")
        assert len(back) == 1 and "back under 2 (2 queued; queue_warning = 5)" in back[0]
        assert client.request(hl7("QW-AFTER"))["code"] == "AA"    # and serves on
        client.close()
        wait_for(lambda: statuses(daemon, "backlog").get("QW-AFTER") == "SENT", what="the next one SENT")
        lines = queue_lines(daemon)
        assert len([line for line in lines if "not keeping up" in line]) == 1   # once per crossing
        assert not any("QW-" in line or "QWSECRET" in line for line in lines)  # counts, never content
    finally:
        daemon.stop()
        if peer is not None:
            peer.close()


def test_queue_warning_must_be_positive(tmp_path):
    channel = mllp_source('[[destination]]\nname = "peer"\ntype = "mllp"\nconnect = "127.0.0.1:9"\n'
                          "queue_warning = 0\n")
    daemon = Daemon(tmp_path / "d", {"bad": channel})
    result = daemon.cli("check")
    assert result.returncode == 1
    assert "queue_warning" in result.stdout + result.stderr


def test_admin_listener_connection_cap(tmp_path):
    daemon = Daemon(tmp_path / "d", {}).start()
    held: list[socket.socket] = []
    try:
        for _ in range(64):                                        # AdminSite max_connections
            held.append(socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=10))
        assert api_call(daemon.admin_port, "GET", "/api/channels", timeout=10)[0] == 503
        assert api_call(daemon.admin_port, "GET", "/healthz", token=None, timeout=10)[0] == 503
        for sock in held[:8]:
            sock.close()
        wait_for(lambda: api_call(daemon.admin_port, "GET", "/api/channels", timeout=10) == (200, []),
                 what="the API once connections were released")
    finally:
        for sock in held:
            sock.close()
        daemon.stop()


def test_destination_template_limits_error_that_delivery_only(tmp_path):
    huge = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
    channel = mllp_source(f"""
[[destination]]
name = "huge"
type = "file"
directory = "{tmp_path / 'huge'}"
  [destination.transform]
  inline = "{huge}"

[[destination]]
name = "wide"
type = "file"
directory = "{tmp_path / 'wide'}"
  [destination.transform]
  inline = "{{{{ '{{:>1000000000000000}}'.format(msg['PID.5.1']) }}}}"

[[destination]]
name = "plain"
type = "file"
directory = "{tmp_path / 'plain'}"
""")
    daemon = Daemon(tmp_path / "d", {"split": channel}).start(1)
    try:
        client = MllpClient(daemon.ports["split"])
        assert client.request(hl7("DL-1"))["code"] == "AA"
        assert client.request(hl7("DL-2"))["code"] == "AA"        # the next message is answered
        client.close()
        def deliveries():
            with sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT m.control_id, d.destination, d.status, d.error FROM deliveries d"
                                    " JOIN messages m ON m.id = d.message_id ORDER BY d.id").fetchall()

        rows = wait_for(lambda: (found := deliveries()) and all(r[2] != "QUEUED" for r in found) and found,
                        what="every delivery settled")
        assert len(delivered_files(tmp_path / "plain")) == 2
        by_destination = {(cid, dest): (status, error) for cid, dest, status, error in rows}
        for control_id in ("DL-1", "DL-2"):
            status, error = by_destination[(control_id, "huge")]
            assert status == "ERROR" and "output exceeds 1048576 bytes" in error
            status, error = by_destination[(control_id, "wide")]   # refused before it allocates
            assert status == "ERROR" and "output exceeds 1048576 bytes" in error
            assert by_destination[(control_id, "plain")][0] == "SENT"
        assert not (tmp_path / "huge").exists() or not list((tmp_path / "huge").iterdir())
    finally:
        daemon.stop()


def test_a_channel_whose_template_keeps_hitting_the_time_limit_is_paused_and_the_others_serve_on(tmp_path):
    """The pipeline runs in the reactor: three messages in a row held 2 s each by a looping
    template pause their channel (RELIABILITY: one channel's template bug never stalls another)."""
    looping = mllp_source('''
[[transform]]
inline = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
''')
    daemon = Daemon(tmp_path / "d", {"looping": looping, "healthy": mllp_source()}).start(2)
    try:
        client = MllpClient(daemon.ports["looping"], timeout=30)
        for number in range(3):
            assert client.request(hl7(f"LOOP-{number}"))["code"] == "AA"   # stored; its transform ERROR
        client.close()
        state = wait_for(lambda: (found := daemon.api("GET", "/api/channels/looping")[1]).get("state") == "paused"
                         and found, what="the looping channel paused")
        assert state["state"] == "paused"
        assert any("channel looping paused" in line and "3 messages in a row" in line for line in daemon.log_lines)
        with pytest.raises(OSError):  # its listener is closed: senders retry later, nothing is lost
            MllpClient(daemon.ports["looping"], timeout=5).request(hl7("LOOP-3"))
        healthy = MllpClient(daemon.ports["healthy"])
        started = time.monotonic()
        for number in range(20):
            assert healthy.request(hl7(f"OK-{number}"))["code"] == "AA"
        assert time.monotonic() - started < 5   # 20 round trips, no 2-second stalls among them
        healthy.close()
        assert statuses(daemon, "looping") == {f"LOOP-{n}": "ERROR" for n in range(3)}
        assert daemon.api("POST", "/api/channels/looping/start")[0] == 200   # the operator resumes it
        assert daemon.api("GET", "/api/channels/looping")[1]["state"] == "started"
    finally:
        daemon.stop()
