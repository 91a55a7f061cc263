"""The HTTP destination through the real daemon, against real HTTP peers (http.server in threads).

One daemon, one channel per behaviour, each channel with its own scripted peer: 5xx retried until
it succeeds, Retry-After honoured, 4xx permanent with the response kept, connection refused
retried, a slow peer timed out (possible duplicate), and the url template with headers and
Content-Type.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.daemon import Daemon, MllpClient, free_port, hl7, wait_for

pytestmark = pytest.mark.slow

FAST_RETRY = 'retry = { interval = "100ms", backoff = 1.5, max_interval = "5s" }'


class HttpPeer:
    """A downstream HTTP server: records each request; answers from ``script`` then ``default``.

    A script entry is ``(status, headers, body)``, or a ``threading.Event`` to wait on (at most
    10 s) before answering 200: a peer that is slow until the test says otherwise.
    """

    def __init__(self, script=(), default=(200, {}, b'{"ok": true}'), port: int = 0) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with peer.lock:
                    peer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "body": body, "at": time.monotonic()})
                    answer = peer.script.pop(0) if peer.script else peer.default
                if isinstance(answer, threading.Event):
                    answer.wait(10)
                    answer = peer.default
                status, headers, content = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass   # a client that gave up (the timeout test) is expected, not a failure

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def channel(url: str, extra: str = "", transform: str = "", timeout: str = "2s") -> str:
    return f"""
[source]
type = "mllp"
listen = "127.0.0.1:0"

[metadata]
mrn = "PID.3.1"
{transform}
[[destination]]
name = "api"
type = "http"
url = "{url}"
timeout = "{timeout}"
{FAST_RETRY}
{extra}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    slow_release = threading.Event()
    peers = {
        "flaky": HttpPeer([(503, {}, b"busy"), (503, {}, b"busy")], default=(200, {}, b"accepted-at-last")),
        "later": HttpPeer([(429, {"Retry-After": "1"}, b"slow down")]),
        "refuses": HttpPeer([(400, {"Content-Type": "application/json"}, b'{"error": "unknown account"}')]),
        "templated": HttpPeer(),
        "slow": HttpPeer([slow_release]),
    }
    down_port = free_port()
    channels = {name: channel(f"http://127.0.0.1:{peer.port}/in") for name, peer in peers.items()}
    channels["slow"] = channel(f"http://127.0.0.1:{peers['slow'].port}/in", timeout="300ms")
    channels["templated"] = channel(
        f"http://127.0.0.1:{peers['templated'].port}/patients/{{{{ meta.mrn }}}}/events?id={{{{ id }}}}",
        'method = "PUT"\nheaders = { Authorization = "Bearer ${AGENCY_TOKEN}", X-Source = "switchboard", '
        'X-Patient = "{{ meta.mrn }}" }',
        '[[transform]]\ninline = \'{"mrn": {{ msg["PID.3.1"] | tojson }}}\'\noutbound = "json"\n')
    channels["injected"] = channel(f"http://127.0.0.1:{peers['templated'].port}/in",
                                   'headers = { X-Patient = "{{ meta.mrn }}" }')
    channels["down"] = channel(f"http://127.0.0.1:{down_port}/in")
    daemon = Daemon(tmp_path_factory.mktemp("http-dest"), channels, env={"AGENCY_TOKEN": "agency-secret"})
    daemon.start(expect_channels=len(channels))
    yield daemon, peers, down_port, slow_release
    daemon.stop()
    slow_release.set()
    for peer in peers.values():
        peer.close()


def send(daemon: Daemon, channel_name: str, control_id: str, **fields) -> int:
    client = MllpClient(daemon.ports[channel_name])
    assert client.request(hl7(control_id, **fields))["code"] == "AA"
    client.close()
    return daemon.cli_json("messages", "--control-id", control_id)[0]["id"]


def attempts(daemon: Daemon, message_id: int) -> list[dict]:
    return daemon.cli_json("show", str(message_id))["destinations"][0]["attempts"]


def test_5xx_retried_until_it_succeeds(setup):
    daemon, peers, _, _ = setup
    message_id = send(daemon, "flaky", "HD-FLAKY")
    shown = daemon.wait_status(message_id, "SENT")
    tried = shown["destinations"][0]["attempts"]
    assert [a["ok"] for a in tried] == [False, False, True]
    assert [a["error"] for a in tried[:2]] == ["HTTP 503", "HTTP 503"]
    assert tried[0]["response"] == "busy" and tried[2]["response"] == "accepted-at-last"
    bodies = [r["body"] for r in peers["flaky"].requests]
    assert len(bodies) == 3 and len(set(bodies)) == 1 and b"HD-FLAKY" in bodies[0]
    assert peers["flaky"].requests[0]["headers"]["Content-Type"] == "x-application/hl7-v2+er7; charset=utf-8"


def test_retry_after_is_honoured(setup):
    daemon, peers, _, _ = setup
    message_id = send(daemon, "later", "HD-LATER")
    daemon.wait_status(message_id, "SENT")
    first, second = peers["later"].requests[:2]
    # the channel's own interval is 100 ms; the peer asked for 1 s
    assert second["at"] - first["at"] >= 0.95
    assert attempts(daemon, message_id)[0]["error"] == "HTTP 429"


def test_4xx_is_permanent_with_the_response_kept(setup):
    daemon, peers, _, _ = setup
    refused = send(daemon, "refuses", "HD-400")
    shown = daemon.wait_status(refused, "ERROR")
    destination = shown["destinations"][0]
    assert destination["status"] == "ERROR"
    assert [a["error"] for a in destination["attempts"]] == ["HTTP 400"]
    assert json.loads(destination["attempts"][0]["response"]) == {"error": "unknown account"}
    follower = send(daemon, "refuses", "HD-AFTER-400")   # the line moves on
    daemon.wait_status(follower, "SENT")
    assert len(peers["refuses"].requests) == 2           # the 400 was not retried


def test_url_template_headers_and_content_type(setup):
    daemon, peers, _, _ = setup
    message_id = send(daemon, "templated", "HD-TPL", mrn="A/B 7")
    daemon.wait_status(message_id, "SENT")
    request = peers["templated"].requests[-1]
    assert request["method"] == "PUT"
    assert request["path"] == f"/patients/A%2FB%207/events?id={message_id}"   # the value fills one segment
    assert request["headers"]["Authorization"] == "Bearer agency-secret"
    assert request["headers"]["X-Source"] == "switchboard"
    assert request["headers"]["X-Patient"] == "A/B 7"             # a header template, per message
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(request["body"]) == {"mrn": "A/B 7"}
    assert "agency-secret" not in daemon.log


def test_a_header_template_rendering_a_line_break_is_permanent_and_smuggles_nothing(setup):
    daemon, peers, _, _ = setup
    before = len(peers["templated"].requests)
    message_id = send(daemon, "injected", "HD-CRLF", mrn="X\\X0D0A\\Injected: yes")
    shown = daemon.wait_status(message_id, "ERROR")
    [attempt] = shown["destinations"][0]["attempts"]
    assert attempt["error"] == "header X-Patient: the rendered value holds a line break"
    follower = send(daemon, "injected", "HD-AFTER-CRLF", mrn="M7")   # the line moves on
    daemon.wait_status(follower, "SENT")
    sent = peers["templated"].requests[before:]
    assert [r["headers"]["X-Patient"] for r in sent] == ["M7"]
    assert not any("Injected" in name for r in sent for name in r["headers"])


def test_connection_refused_is_retried_until_the_peer_is_up(setup):
    daemon, _, down_port, _ = setup
    message_id = send(daemon, "down", "HD-DOWN")
    wait_for(lambda: attempts(daemon, message_id), what="a failed attempt while the peer is down")
    assert attempts(daemon, message_id)[0]["error"] == "cannot connect: ConnectionRefusedError"
    peer = HttpPeer(port=down_port)
    try:
        daemon.wait_status(message_id, "SENT")
        assert b"HD-DOWN" in peer.requests[0]["body"]
    finally:
        peer.close()


def test_slow_peer_times_out_and_is_retried_as_possible_duplicate(setup):
    daemon, peers, _, slow_release = setup
    message_id = send(daemon, "slow", "HD-SLOW")
    first = wait_for(lambda: attempts(daemon, message_id), what="the timed-out attempt")[0]
    assert first["error"] == "no complete response within 0.3s" and first["possible_duplicate"]
    slow_release.set()
    shown = daemon.wait_status(message_id, "SENT")
    assert shown["destinations"][0]["attempts"][-1]["ok"]
    assert len(peers["slow"].requests) >= 2
