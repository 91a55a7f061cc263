"""The admin listener under a hostile or careless client (issue 15, points 4-6; docs/reliability.md
"Admin listener"), through the real daemon:

* H1 security headers on every answer: pages, JSON, redirects, refusals, errors, static files;
* H2 ``GET /logout`` does not sign out; ``POST /logout`` needs the session's CSRF token;
* H3 out-of-range numbers and times (huge ``since``, ids, offsets, ``before_id``, ``/messages/²``,
  lone surrogates, 5,000-digit JSON numbers) are answered 400 with a sentence, never 500;
* H4 a 1 MB ORU (OBX ``|a`` x 500,000) opened in the dashboard: the page shows the first part with
  a download link for the whole, and another channel's MLLP ACK p99 stays under 50 ms meanwhile;
* H5 failed sign-ins from one address are answered 429 with Retry-After, with a growing wait.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from urllib.parse import urlencode

import pytest

from support.daemon import ADMIN_TOKEN, Daemon, MllpClient, hl7, http_call, wait_for

pytestmark = pytest.mark.slow

HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
CHANNEL = """
[source]
type = "mllp"
listen = "127.0.0.1:0"
max_message_size = "2MB"

[[destination]]
name = "files"
type = "file"
directory = "outbox-{name}"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening-admin")
    daemon = Daemon(root / "d", {name: CHANNEL.replace("{name}", name) for name in ("big", "fast")})
    daemon.start(2)
    yield daemon
    daemon.stop()


def call(daemon, method: str, path: str, *, token: str | None = ADMIN_TOKEN, body: bytes | None = None,
         kind: str = "application/json", cookie: str | None = None):
    return http_call(daemon.admin_port, method, path, token, body, kind, cookie)


def sign_in(daemon) -> tuple[str, str]:
    """(cookie, csrf) of a new dashboard session."""
    status, headers, _text = call(daemon, "POST", "/login", token=None, body=urlencode({"token": ADMIN_TOKEN}).encode(),
                                  kind="application/x-www-form-urlencoded")
    assert status == 303
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    _status, _headers, page = call(daemon, "GET", "/", token=None, cookie=cookie)
    return cookie, re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_h1_security_headers_on_every_answer(world):
    daemon = world
    cases = [
        ("GET", "/api/channels", ADMIN_TOKEN, None, 200),          # JSON
        ("GET", "/api/nothing", ADMIN_TOKEN, None, 404),           # JSON error
        ("GET", "/api/channels", "wrong", None, 401),              # refused before the body
        ("POST", "/api/replay", ADMIN_TOKEN, b"x" * (2 << 20), 413),
        ("GET", "/channels", None, None, 303),                     # redirect to /login
        ("GET", "/login", None, None, 200),                        # page
        ("GET", "/messages/999999", ADMIN_TOKEN, None, 404),       # HTML error page
        ("GET", "/static/dashboard.css", None, None, 200),
        ("GET", "/favicon.ico", None, None, 204),
        ("GET", "/healthz", None, None, 200),
        ("GET", "/metrics", ADMIN_TOKEN, None, 200),
        ("POST", "/api/channels/fast/nothing", ADMIN_TOKEN, b"", 404),
        ("GET", "/api/messages/%C2%B2", ADMIN_TOKEN, None, 400),
    ]
    for method, path, token, body, expected in cases:
        status, headers, _text = call(daemon, method, path, token=token, body=body)
        assert status == expected, (path, status)
        for name, part in HEADERS.items():
            assert part in (headers.get(name) or ""), (path, status, name, headers.get(name))


def test_h2_logout_needs_a_post_with_the_csrf_token(world):
    daemon = world
    cookie, csrf = sign_in(daemon)
    status, _headers, page = call(daemon, "GET", "/logout", token=None, cookie=cookie)
    assert status == 200 and 'id="confirm-sign-out"' in page
    assert call(daemon, "GET", "/", token=None, cookie=cookie)[0] == 200        # still signed in
    form = "application/x-www-form-urlencoded"
    status, _headers, _page = call(daemon, "POST", "/logout", token=None, cookie=cookie, body=b"csrf=forged", kind=form)
    assert status == 403
    assert call(daemon, "GET", "/", token=None, cookie=cookie)[0] == 200        # still signed in
    status, headers, _page = call(daemon, "POST", "/logout", token=None, cookie=cookie,
                                  body=urlencode({"csrf": csrf}).encode(), kind=form)
    assert status == 303 and headers["Location"] == "/login"
    status, headers, _page = call(daemon, "GET", "/", token=None, cookie=cookie)
    assert status == 303 and headers["Location"] == "/login"


RANGES = [
    ("GET", "/api/messages?since=99999999999d", None, "100 years"),
    ("GET", "/api/messages?since=9999-12-31T23:59:59-14:00", None, "years 1-9999"),
    ("GET", "/api/messages?until=0001-01-01T00:00:00%2B14:00", None, "years 1-9999"),
    ("GET", "/api/messages/99999999999999999999999", None, "message id"),
    ("GET", "/api/messages/%C2%B2", None, "message id"),                       # '²' passes str.isdigit
    ("GET", "/api/messages/-1", None, "message id"),
    ("GET", "/api/messages?offset=999999999999999999999999", None, "offset"),
    ("GET", "/api/messages?before_id=99999999999999999999999", None, "before_id"),
    ("GET", "/api/messages?limit=%C2%B2", None, "limit"),
    ("POST", "/api/replay", {"ids": [10 ** 30]}, "message id"),
    ("POST", "/api/replay", {"channel": "fast", "since": "99999999999d"}, "100 years"),
    ("POST", "/api/replay", b'{"channel": "\\ud800"}', "surrogate"),
    ("POST", "/api/replay", b'{"ids": [' + b"9" * 5000 + b"]}", "JSON"),
    ("POST", "/api/messages/99999999999999999999/replay", {}, "message id"),
    ("GET", "/messages/%C2%B2", None, "message id"),
    ("GET", "/messages/99999999999999999999", None, "message id"),
    ("GET", "/search?go=1&since=99999999999d", None, "100 years"),
    ("GET", "/search?go=1&offset=99999999999999999999", None, "offset"),
    ("GET", "/channels/fast?go=1&until=9999-12-31T23:59:59-14:00", None, "years 1-9999"),
]


@pytest.mark.parametrize("method,path,body,sentence", RANGES)
def test_h3_out_of_range_input_is_a_400_with_a_sentence(world, method, path, body, sentence):
    daemon = world
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, _headers, text = call(daemon, method, path, body=raw)
    assert status == 400, (path, status, text[:300])
    assert sentence in text
    assert "Traceback" not in daemon.log and "CRITICAL" not in daemon.log


VIEWER = """
import http.client, json, sys, time
port, token, big, small, keep = sys.argv[1:]
for number in range(24):
    kind, wanted = ("big", big) if number % 2 == 0 else ("small", small)
    start = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    connection.request("GET", f"/messages/{wanted}", headers={"Authorization": f"Bearer {token}"})
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    print(json.dumps({"kind": kind, "start": start, "end": time.monotonic(), "status": answer.status}), flush=True)
    if number == 0:
        open(keep, "wb").write(body)
    time.sleep(0.05)
"""


def rows_of(daemon, control_id: str) -> list:
    return wait_for(lambda: daemon.api("GET", f"/api/messages?control_id={control_id}")[1], 15,
                    what=f"{control_id} stored")


def big_oru() -> str:
    return ("MSH|^~\\&|LAB|HOSP|SWB|AGENCY|20240101120000||ORU^R01|BIG-1|P|2.5\rPID|1||M1^^^HOSP^MR||DOE^JANE\r"
            "OBR|1\rOBX|1|TX|NOTE||" + "|a" * 500_000)


def test_h4_a_1mb_message_page_does_not_hold_the_reactor(world):
    daemon = world
    client = MllpClient(daemon.ports["big"], timeout=60)
    assert client.request(big_oru())["code"] == "AA"
    client.close()
    rows = wait_for(lambda: daemon.api("GET", "/api/messages?channel=big&control_id=BIG-1")[1], 30,
                    what="the big message stored")
    big = rows[0]["id"]
    daemon.wait_status(big, "SENT", timeout=30)
    fast = MllpClient(daemon.ports["fast"])
    assert fast.request(hl7("WARM-0"))["code"] == "AA"       # the connection and the store warmed up
    small = rows_of(daemon, "WARM-0")[0]["id"]

    # ACKs are sent without pause while another process opens the 1 MB message's page and a small
    # one's in turn, 12 times each, 50 ms apart.  Each ACK is classed by the page view it overlaps
    # (or none): the same minutes of this shared box, with a big page, a small page and no page
    # being built.  Times are CLOCK_MONOTONIC (time.monotonic), one clock for both processes.
    viewer = subprocess.Popen([sys.executable, "-c", VIEWER, str(daemon.admin_port), ADMIN_TOKEN, str(big), str(small),
                               str(daemon.root / "big-page.html")], stdout=subprocess.PIPE, text=True)
    acks = []
    try:
        while viewer.poll() is None and len(acks) < 5000:
            started = time.monotonic()
            assert fast.request(hl7(f"FAST-{len(acks)}"))["code"] == "AA"
            acks.append((started, time.monotonic()))
    finally:
        out, _ = viewer.communicate(timeout=60)
        fast.close()
    views = [json.loads(line) for line in out.splitlines()]
    assert len(views) == 24 and all(view["status"] == 200 for view in views), views
    page = (daemon.root / "big-page.html").read_text()
    assert len(page) < 2_000_000 and "download the whole" in page and "of 1000" in page

    def during(kind: str | None) -> list[float]:
        def kind_of(start: float, end: float) -> str | None:
            return next((v["kind"] for v in views if start < v["end"] and v["start"] < end), None)
        return [end - start for start, end in acks if kind_of(start, end) == kind]

    big_acks, small_acks, between = during("big"), during("small"), during(None)
    assert min(len(big_acks), len(small_acks), len(between)) >= 10, (len(big_acks), len(small_acks), len(between))
    p99 = {name: statistics.quantiles(values, n=100, method="inclusive")[98]
           for name, values in (("big", big_acks), ("small", small_acks), ("between", between))}
    figures = (f"p99 ACK latency {p99['big'] * 1000:.1f} ms over {len(big_acks)} ACKs while the 1 MB page was "
               f"built, {p99['small'] * 1000:.1f} ms while a small page was, {p99['between'] * 1000:.1f} ms "
               f"between views ({len(between)}); slowest {max(big_acks) * 1000:.0f} ms")
    print(figures)
    # 50 ms on a quiet box (measured: 20-35 ms).  On a busy shared box a page view of any size costs
    # the other channel a commit (its audit row) and CPU shared out slowly; what the 1 MB may not
    # add is a held reactor: at most twice a small page's cost, or four times the box's own p99
    assert p99["big"] < max(0.050, 2 * p99["small"], 4 * p99["between"]), figures
    assert max(big_acks) < 1.0, figures                     # before: no ACK at all for 10-11 s
    status, headers, whole = call(daemon, "GET", f"/messages/{big}/raw")
    assert status == 200 and "attachment" in headers["Content-Disposition"] and "|a" * 10 in whole[-30:]
    assert len(whole) > 1_000_000


def test_h5_failed_sign_ins_are_throttled_per_address(world):
    """Last in this file: the daemon now refuses sign-ins from 127.0.0.1 for a while."""
    daemon = world
    form = "application/x-www-form-urlencoded"

    def attempt(token: str):
        return call(daemon, "POST", "/login", token=None, body=urlencode({"token": token}).encode(), kind=form)

    statuses = [attempt(f"wrong-{n}")[0] for n in range(5)]
    assert statuses == [401] * 5
    status, headers, text = attempt(ADMIN_TOKEN)                  # even the right token waits now
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "try again in" in json.loads(text)["error"]
    for name, part in HEADERS.items():
        assert part in (headers.get(name) or "")
    wait_for(lambda: attempt("wrong-again")[0] != 429, 5, interval=0.2, what="the first wait to end")
    status, headers, _text = attempt(ADMIN_TOKEN)
    assert status == 429 and int(headers["Retry-After"]) >= 2        # the wait doubled
    wait_for(lambda: attempt(ADMIN_TOKEN)[0] == 303, 10, interval=0.25, what="a sign-in after the wait")
