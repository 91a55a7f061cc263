"""Alerts through the real daemon and the built-in webhook plugin, received by a real HTTP server:
a destination failing and queued longer than the thresholds, its recovery, and messages that went
ERROR -- each body PHI-free."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.daemon import Daemon, MllpClient, MllpPeer, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

MARKER = "ZZALERTMRN"


class Hook:
    """A webhook receiver: keeps each POSTed JSON body and its headers."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body.decode()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, kind: str | None = None, state: str | None = None) -> list[dict]:
        bodies = [json.loads(body) for _headers, body in list(self.received)]
        return [b for b in bodies if (kind is None or b["kind"] == kind) and (state is None or b["state"] == state)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_alerts(tmp_path):
    hook = Hook()
    peer_port = free_port()
    relay = f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "ehr"
type = "mllp"
connect = "127.0.0.1:{peer_port}"
retry = {{ interval = "100ms", backoff = 1.0, max_interval = "100ms" }}
"""
    broken = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
inline = "{{ undefined_thing }}"

[[destination]]
name = "nowhere"
type = "file"
directory = "out"
"""
    alerts = (f'[alerts]\nfailing_longer_than = "500ms"\nqueued_longer_than = "700ms"\ncheck_interval = "100ms"\n'
              f'webhook_url = "http://127.0.0.1:{hook.port}/hooks/switchboard"\n'
              'webhook_headers = { Authorization = "Bearer hook-secret" }\n')
    daemon = Daemon(tmp_path / "d", {"relay": relay, "broken": broken}, extra_config=alerts).start(2)
    peer = None
    try:
        client = MllpClient(daemon.ports["relay"])
        assert client.request(hl7("ALERT-1", mrn=MARKER, account=MARKER))["code"] == "AA"
        client.close()
        (failing,) = wait_for(lambda: hook.alerts("destination_failing", "firing"), timeout=15,
                              what="a destination_failing alert")
        assert (failing["channel"], failing["destination"]) == ("relay", "ehr")
        assert "cannot connect" in failing["detail"] and failing["source"] == "switchboard"
        assert failing["since"] <= failing["at"] and "relay/ehr" in failing["text"]
        (queued,) = wait_for(lambda: hook.alerts("destination_queued", "firing"), timeout=15,
                             what="a destination_queued alert")
        assert (queued["channel"], queued["destination"], queued["count"]) == ("relay", "ehr", 1)
        headers = hook.received[0][0]
        assert headers["Authorization"] == "Bearer hook-secret"
        assert headers["Content-Type"] == "application/json"

        peer = MllpPeer(port=peer_port)                  # the peer comes back: both conditions clear
        wait_for(lambda: peer.control_ids() == ["ALERT-1"], timeout=15, what="the delivery")
        resolved = wait_for(lambda: {a["kind"] for a in hook.alerts(state="resolved")} >=
                            {"destination_failing", "destination_queued"}, timeout=15, what="both resolved")
        assert resolved

        client = MllpClient(daemon.ports["broken"])
        for number in range(3):
            assert client.request(hl7(f"BROKEN-{number}", mrn=MARKER))["code"] == "AA"
        client.close()
        ids = {m["id"] for m in daemon.cli_json("messages", "--channel", "broken")}
        errors = wait_for(lambda: (found := hook.alerts("message_error")) and
                          sum(a["count"] for a in found) == 3 and found, timeout=15, what="message_error alerts")
        assert {i for a in errors for i in a["message_ids"]} == ids
        assert all(a["channel"] == "broken" for a in errors)
    finally:
        daemon.stop()
        hook.close()
        if peer is not None:
            peer.close()
    assert len(hook.alerts("destination_failing", "firing")) == 1   # once, not once per check
    assert MARKER not in "".join(body for _headers, body in hook.received)
    assert MARKER not in daemon.log
