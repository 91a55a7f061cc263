"""The dashboard through the real daemon, over plain HTTP (no browser): signing in sets an HttpOnly,
SameSite cookie; pages redirect to /login without one; every page is complete without JavaScript
(counts and messages in the HTML, no inline script); state-changing forms need the CSRF token;
every message view is audited; message content is shown as text (a ``<script>`` in a field stays
inert) with HL7 fields numbered on hover; bearer tokens work for scripts; the JSON API never takes
the cookie; sign-out ends the session."""

from __future__ import annotations

import http.client
import re
import threading
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from support.daemon import (ADMIN_TOKEN, Daemon, MllpClient, MllpPeer, ack_for, control_id_of, free_port, hl7,
                            relay_channel, wait_for)

pytestmark = pytest.mark.slow

CHANNELS = {
    "intake": """
description = "ADT feed from the EHR"

[source]
type = "mllp"
listen = "127.0.0.1:0"

[metadata]
mrn = "PID.3.1"

[[destination]]
name = "outbox"
type = "file"
directory = "{outbox}"
""",
    # a filter by name, and JSON out (shown indented on the message page)
    "fhir": """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[filter]]
name = "no-results"
when = "msg['MSH.9.1'] != 'ORU'"

[[transform]]
edit = [{{ set = "MSH.5", value = "LAB" }}, {{ delete = "NTE" }}]

[[transform]]
inline = '{{"id": {{{{ msg["MSH.10"] | tojson }}}}, "mrn": {{{{ msg["PID.3.1"] | tojson }}}}}}'
outbound = "json"

[[destination]]
name = "files"
type = "file"
directory = "{outbox}-fhir"
""",
    # a destination nobody listens on: retried; secrets in its file (masked on the channel page)
    "down": """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[destination]]
name = "nobody"
type = "http"
url = "http://robot:pw-in-url@127.0.0.1:{closed}/in"   # a comment kept
headers = {{ Authorization = "Bearer ${{DASH_TOKEN:-default-secret}}", X-Api-Key = "literal-secret" }}
""",
}


class Page(HTMLParser):
    """What a test needs from a page: counts per channel, scripts, forms' hidden fields, text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, int]] = {}
        self.scripts: list[dict] = []
        self.hidden: dict[str, str] = {}
        self.titles: dict[str, str] = {}
        self._tbody = None
        self._count = None
        self._title = None
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody" and (attrs.get("id") or "").startswith("channel-"):
            self._tbody = attrs["id"][len("channel-"):]
        if tag == "td" and "data-count" in attrs and self._tbody:
            self._count = attrs["data-count"]
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "input" and attrs.get("type") == "hidden":
            self.hidden[attrs["name"]] = attrs.get("value") or ""
        if tag == "span" and attrs.get("title"):
            self._title = attrs["title"]

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._tbody = None
        if tag == "span":
            self._title = None

    def handle_data(self, data):
        self.text.append(data)
        if self._count:
            self.counts.setdefault(self._tbody, {})[self._count] = int(data.strip())
            self._count = None
        if self._title and self._title not in self.titles:
            self.titles[self._title] = data


class Browserless:
    """http.client with one cookie and no automatic redirects: every answer is seen as sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None

    def request(self, method: str, path: str, form: dict | list | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = urlencode(form).encode() if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            sent["Cookie"] = self.cookie
        connection.request(method, path, body=body, headers=sent)
        answer = connection.getresponse()
        text = answer.read().decode("utf-8")
        connection.close()
        return answer.status, answer.headers, text

    def sign_in(self, token: str = ADMIN_TOKEN):
        status, headers, text = self.request("POST", "/login", {"token": token})
        cookie = headers.get("Set-Cookie")
        if status == 303 and cookie:
            self.cookie = cookie.split(";", 1)[0]
        return status, headers, text


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    refuse = threading.Event()
    refuse.set()
    peer = MllpPeer(lambda payload: ack_for(payload, "AE" if refuse.is_set() else "AA"))
    channels = {"intake": CHANNELS["intake"].format(outbox=root / "outbox"),
                "relay": relay_channel(peer.port),
                "fhir": CHANNELS["fhir"].format(outbox=root / "outbox"),
                "down": CHANNELS["down"].format(closed=free_port())}
    daemon = Daemon(root / "d", channels)
    daemon.start(4)
    client = MllpClient(daemon.ports["intake"])
    for number in range(3):
        assert client.request(hl7(f"IN-{number}", mrn=f"M{number}"))["code"] == "AA"
    assert client.request(hl7("XSS-1", mrn='<script>alert("x")</script>'))["code"] == "AA"
    client.close()
    wait_for(lambda: daemon.api("GET", "/api/channels/intake")[1]["sent"] == 4, what="intake delivered")
    yield daemon, peer, refuse
    daemon.stop()
    peer.close()


@pytest.fixture
def browser(site):
    daemon, _peer, _refuse = site
    client = Browserless(daemon.admin_port)
    status, _headers, _text = client.sign_in()
    assert status == 303
    return client


def message_id(daemon, control_id: str) -> int:
    return daemon.cli_json("messages", "--control-id", control_id)[0]["id"]


def test_pages_send_a_browser_without_a_session_to_login(site):
    daemon, _peer, _refuse = site
    anonymous = Browserless(daemon.admin_port)
    for path in ("/", "/channels/intake", "/messages/1", "/search?status=error"):
        status, headers, _text = anonymous.request("GET", path)
        assert (status, headers["Location"]) == (303, "/login"), path
    status, _headers, text = anonymous.request("GET", "/login")
    assert status == 200 and 'name="token"' in text and 'type="password"' in text
    status, _headers, _text = anonymous.request("POST", "/channels/intake/stop", {"csrf": "x"})
    assert status == 401
    assert daemon.api("GET", "/api/channels/intake")[1]["state"] == "started"


def test_a_wrong_token_gets_no_session(site):
    daemon, _peer, _refuse = site
    client = Browserless(daemon.admin_port)
    status, headers, text = client.sign_in("not-the-token")
    assert status == 401 and headers.get("Set-Cookie") is None
    assert "not an admin token" in text


def test_a_huge_sign_in_form_is_refused_before_it_is_read(site):
    daemon, _peer, _refuse = site
    status, _headers, _text = Browserless(daemon.admin_port).request("POST", "/login", {"token": "x" * 10_000})
    assert status == 413


def test_signing_in_sets_an_httponly_samesite_cookie(site):
    daemon, _peer, _refuse = site
    client = Browserless(daemon.admin_port)
    status, headers, _text = client.sign_in()
    assert status == 303 and headers["Location"] == "/"
    attributes = [part.strip() for part in headers["Set-Cookie"].split(";")]
    assert attributes[0].startswith("switchboard_session=") and len(attributes[0]) > 40
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes        # plain HTTP here; set when the request came over TLS
    status, _headers, text = client.request("GET", "/")
    assert status == 200 and "signed in as <strong>admin</strong>" in text


def test_the_channels_page_is_complete_without_javascript(site, browser):
    daemon, _peer, _refuse = site
    status, headers, text = browser.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = Page(text)
    api = {view["name"]: view for view in daemon.api("GET", "/api/channels")[1]}
    assert set(page.counts) == {"intake", "relay", "fhir", "down"}
    for name, counts in page.counts.items():
        assert counts == {key: api[name][key] for key in ("received", "filtered", "queued", "sent", "errored")}
    assert page.counts["intake"]["sent"] == 4
    assert all(script.get("src") == "/static/dashboard.js" for script in page.scripts)   # no inline script
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
    status, _headers, text = browser.request("GET", "/channels/intake")
    assert status == 200
    listed = re.findall(r'href="/messages/(\d+)"', text)
    assert len(listed) == 4 and "IN-0" in text


def test_state_changes_need_the_csrf_token(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, _text = browser.request("POST", "/channels/intake/pause", {"next": "/"})
    assert status == 403
    status, _headers, _text = browser.request("POST", "/channels/intake/pause", {"csrf": "forged", "next": "/"})
    assert status == 403
    assert daemon.api("GET", "/api/channels/intake")[1]["state"] == "started"
    csrf = Page(browser.request("GET", "/")[2]).hidden["csrf"]
    status, headers, _text = browser.request("POST", "/channels/intake/pause", {"csrf": csrf, "next": "/"})
    assert status == 303 and headers["Location"] == "/"
    assert daemon.api("GET", "/api/channels/intake")[1]["state"] == "paused"
    status, _headers, text = browser.request("GET", "/")
    assert "Channel intake: pause done; it is now paused." in text        # the one-time note
    assert "it is now paused" not in browser.request("GET", "/")[2]
    status, _headers, _text = browser.request("POST", "/channels/intake/start", {"csrf": csrf, "next": "http://evil/"})
    assert status == 303 and _headers["Location"] == "/channels/intake"   # only local redirects
    assert daemon.api("GET", "/api/channels/intake")[1]["state"] == "started"
    audit = daemon.cli_json("audit", "--action", "channel.pause")
    assert audit[0]["target"] == "channel:intake" and audit[0]["detail"]["via"] == "dashboard"


def test_every_message_view_is_audited(site, browser):
    daemon, _peer, _refuse = site
    wanted = message_id(daemon, "IN-1")
    before = len(daemon.cli_json("audit", "--action", "view", "--limit", "1000"))
    for _ in range(2):
        assert browser.request("GET", f"/messages/{wanted}")[0] == 200
    views = daemon.cli_json("audit", "--action", "view", "--limit", "1000")
    assert len(views) == before + 2
    assert [(row["who"], row["target"]) for row in views[:2]] == [("admin", f"message:{wanted}")] * 2
    searches = daemon.cli_json("audit", "--action", "search")
    browser.request("GET", "/channels/intake?go=1&meta=mrn%3DM2")
    latest = daemon.cli_json("audit", "--action", "search")[0]
    assert len(daemon.cli_json("audit", "--action", "search")) == len(searches) + 1
    assert latest["detail"]["filters"]["meta_keys"] == ["mrn"] and "M2" not in str(latest["detail"])
    assert latest["detail"]["ids"] == [message_id(daemon, "IN-2")]


def test_message_content_is_text_never_markup(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, text = browser.request("GET", f"/messages/{message_id(daemon, 'XSS-1')}")
    assert status == 200
    assert '<script>alert("x")</script>' not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    page = Page(text)
    assert page.titles["MSH-9"] == "ADT^A08" and page.titles["MSH-10"] == "XSS-1"
    assert page.titles["PID-3"].startswith('<script>alert("x")')       # parsed back: it was text
    assert page.titles["MSH-1"] == "|"
    segments = text.count('<span class="seg">')
    assert segments >= 8                                       # raw, and as sent to the outbox
    assert len(re.findall(r'(?:\n|<pre class="content">)<span class="seg">', text)) == segments   # one per line


def test_a_failed_message_replayed_from_its_page(site, browser):
    daemon, peer, refuse = site
    client = MllpClient(daemon.ports["relay"])
    assert client.request(hl7("FAIL-1"))["code"] == "AA"
    client.close()
    wanted = message_id(daemon, "FAIL-1")
    daemon.wait_status(wanted, "ERROR")
    status, _headers, text = browser.request("GET", f"/messages/{wanted}")
    assert "status-ERROR" in text and "AE" in text
    refuse.clear()
    csrf = Page(text).hidden["csrf"]
    status, headers, _text = browser.request("POST", f"/messages/{wanted}/replay", {"csrf": csrf, "destination": ""})
    assert status == 303 and headers["Location"] == f"/messages/{wanted}"
    daemon.wait_status(wanted, "SENT")
    assert [control_id_of(p) for p in peer.received].count("FAIL-1") == 2
    page = browser.request("GET", f"/messages/{wanted}")[2]
    assert "Replayed: 1 QUEUED." in page
    assert daemon.cli_json("audit", "--action", "replay")[0]["detail"]["ids"] == [wanted]
    # the attempt the replay made is marked, the first one is not
    rows = re.findall(r"<tr>\s*<td class=\"num\">\d+</td>(.*?)</tr>", page, re.S)
    assert len(rows) == 2 and "replay-mark" not in rows[0] and '<span class="replay-mark"' in rows[1]
    assert "Replayed 1 time(s)" in page and '<h3 class="sent-label">Sent</h3>' in page


def test_search_page_filters_across_channels(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, text = browser.request("GET", "/search")
    assert status == 200 and "<select name=\"channel\">" in text and "message-link" not in text   # nothing searched yet
    status, _headers, text = browser.request("GET", "/search?go=1&control_id=IN-2")
    assert re.findall(r'class="message-link">(\d+)<', text) == [str(message_id(daemon, "IN-2"))]
    status, _headers, text = browser.request("GET", "/search?go=1&since=yesterday")
    assert status == 400 and "neither a duration" in text          # the form again, with the sentence


def test_bearer_tokens_open_pages_and_the_api_ignores_cookies(site, browser):
    daemon, _peer, _refuse = site
    scripted = Browserless(daemon.admin_port)
    status, _headers, text = scripted.request("GET", "/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200 and "intake" in text
    status, _headers, text = scripted.request("GET", "/", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "bearer token" in text
    status, _headers, text = browser.request("GET", "/api/channels")
    assert status == 401                     # the session cookie is for pages only


def test_signing_out_ends_the_session(site):
    daemon, _peer, _refuse = site
    client = Browserless(daemon.admin_port)
    client.sign_in()
    csrf = Page(client.request("GET", "/")[2]).hidden["csrf"]
    status, headers, _text = client.request("POST", "/logout", {"csrf": csrf})
    assert status == 303 and headers["Location"] == "/login" and "Max-Age=0" in headers["Set-Cookie"]
    status, headers, _text = client.request("GET", "/")
    assert status == 303 and headers["Location"] == "/login"


EDITED = """
[source]
type = "mllp"
listen = "127.0.0.1:0"

[[transform]]
edit = [{ set = "MSH.5", value = "LAB" }, { map = "PV1.3.1", table = "units" }, { delete = "NTE" }]

[[destination]]
name = "files"
type = "file"
directory = "outbox"
"""


def test_the_message_page_shows_what_the_edit_changed_and_a_broken_table_is_shown(tmp_path):
    """Issue 16: the raw -> transformed diff per segment on the message page, as `switchboard test`
    shows it; a code table that breaks is named in `switchboard status` and on the dashboard while
    the daemon keeps the last good one."""
    from support.daemon import last_reload, wait_reload

    root = tmp_path / "d"
    (root / "lookups").mkdir(parents=True)
    table = root / "lookups" / "units.csv"
    table.write_text("code,value\nER,EMERG\n")
    (root / "lookups" / "spare.csv").write_text("code,value\nA\n")       # no channel uses it: shown all the same
    daemon = Daemon(root, {"edited": EDITED}).start(1)
    try:
        client = MllpClient(daemon.ports["edited"])
        message = "MSH|^~\\&|EHR|HOSP|SWB|AG|20240101||ADT^A01|D-1|P|2.5\rPV1|1|I|ER^101^A\rNTE|1||a note\r"
        assert client.request(message)["code"] == "AA"
        client.close()
        number = message_id(daemon, "D-1")
        status, _headers, page = Browserless(daemon.admin_port).request(
            "GET", f"/messages/{number}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200 and 'id="changes"' in page
        diff = page[page.index('id="changes"'):page.index("</article>", page.index('id="changes"'))]
        assert "- [1]</span> <code>MSH|^~\\&amp;|EHR|HOSP|SWB|AG|" in diff
        assert "+ [1]</span> <code>MSH|^~\\&amp;|EHR|HOSP|LAB|AG|" in diff
        assert "- [2]</span> <code>PV1|1|I|ER^101^A</code>" in diff and "+ [2]</span> <code>PV1|1|I|EMERG^101^A</code>" in diff
        assert "- [3]</span> <code>NTE|1||a note</code>" in diff

        before = last_reload(daemon)
        table.write_text("code,value\nER,EMERG\nER,AGAIN\n")              # a duplicate key: broken
        wait_reload(daemon, before, "the refused reload", lambda s: s["problems"])
        status, _headers, page = Browserless(daemon.admin_port).request(
            "GET", "/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200 and "units.csv" in page and "line 3" in page
        assert "code table" in page and "spare.csv line 2" in page
        shown = daemon.cli("status")
        assert shown.returncode == 0 and "units.csv" in shown.stdout and "line 3" in shown.stdout
        assert "spare.csv line 2" in shown.stdout
    finally:
        daemon.stop()


# -- issue 21: the analyst's day -------------------------------------------------------------------
def destination_texts(page: str) -> dict[str, str]:
    """destination name -> its state word as the channel list shows it."""
    return dict(re.findall(r'data-destination="([^"]+)">.*?<span class="dstate dstate-\w+">([^<]+)</span>', page, re.S))


def test_the_channel_list_shows_targets_states_the_description_and_the_last_hour(site, browser):
    daemon, peer, _refuse = site
    status, _headers, page = browser.request("GET", "/")
    assert status == 200 and "ADT feed from the EHR" in page
    api = {view["name"]: view for view in daemon.api("GET", "/api/channels")[1]}
    assert api["intake"]["description"] == "ADT feed from the EHR"
    assert api["relay"]["destinations"][0]["target"] == f"127.0.0.1:{peer.port}"
    assert api["intake"]["destinations"][0]["target"].endswith("outbox")
    for name in ("intake", "relay"):
        assert f"→ {api[name]['destinations'][0]['target']}" in page
    assert page.count('<svg class="traffic"') == 4
    status, figures = daemon.api("GET", "/api/channels/intake/stats?window=1h")
    assert status == 200 and len(figures["minutes"]) == 60
    assert figures["totals"]["received"] == api["intake"]["received"]      # every message of this test is recent
    assert figures["totals"]["sent"] == api["intake"]["sent"]
    assert f"{figures['totals']['received']} received, {figures['totals']['sent']} sent" in page
    assert daemon.api("GET", "/api/channels/intake/stats?window=3d")[0] == 400
    assert daemon.api("GET", "/api/channels/nosuch/stats")[0] == 404


def test_state_words_are_the_same_in_the_cli_the_api_and_the_dashboard(site, browser):
    daemon, _peer, refuse = site
    client = MllpClient(daemon.ports["down"])
    assert client.request(hl7("DOWN-1"))["code"] == "AA"
    client.close()
    refuse.set()
    client = MllpClient(daemon.ports["relay"])
    assert client.request(hl7("FAIL-2"))["code"] == "AA"
    client.close()
    try:
        daemon.wait_status(message_id(daemon, "FAIL-2"), "ERROR")

        def words():
            views = {view["name"]: view for view in daemon.api("GET", "/api/channels")[1]}
            found = {name: views[name]["destinations"][0]["state"] for name in ("down", "relay", "intake")}
            return views if found == {"down": "retrying", "relay": "failing", "intake": "ok"} else None
        views = wait_for(words, 15, interval=0.2, what="retrying, failing and ok")
        since = views["down"]["destinations"][0]["state_since"]
        shown = destination_texts(browser.request("GET", "/")[2])
        assert shown["nobody"] == f"retrying since {since[11:19]} UTC"
        assert shown["peer"] == "failing" and shown["outbox"] == "ok"
        rows = {row["name"]: row for row in daemon.cli_json("status")}
        assert {name: (row["state"], row["destinations"][0]["state"]) for name, row in rows.items()} == {
            name: (view["state"], view["destinations"][0]["state"]) for name, view in views.items()}
        text = daemon.cli("status").stdout
        assert f"retrying since {since[11:19]} UTC (sends to http://127.0.0.1:" in text
        assert "-- failing (sends to 127.0.0.1:" in text and "pw-in-url" not in text
        page = browser.request("GET", f"/messages/{message_id(daemon, 'DOWN-1')}")[2]
        assert '<h3 class="sent-label">To send</h3>' in page and '<h3 class="sent-label">Sent</h3>' not in page
    finally:
        refuse.clear()
    status, headers, _text = browser.request("GET", "/favicon.ico")
    assert status == 204 and "Content-Security-Policy" in headers


def test_the_message_page_names_the_filter_and_indents_json(site, browser):
    daemon, _peer, _refuse = site
    client = MllpClient(daemon.ports["fhir"])
    assert client.request(hl7("J-1", mrn="M77"))["code"] == "AA"
    assert client.request(hl7("R-1", msg_type="ORU^R01"))["code"] == "AA"
    client.close()
    found = {row["control_id"]: row["id"] for row in daemon.api("GET", "/api/messages?channel=fhir")[1]}
    filtered, json_id = found["R-1"], found["J-1"]
    daemon.wait_status(filtered, "FILTERED")
    page = browser.request("GET", f"/messages/{filtered}")[2]
    assert '<dd id="filtered-by"><strong>no-results</strong>' in page
    assert 'id="not-transformed">none: filter <strong>no-results</strong> stopped the message' in page
    assert "no channel transform, or it failed" not in page
    daemon.wait_status(json_id, "SENT")
    page = browser.request("GET", f"/messages/{json_id}")[2]
    assert '{\n  &#34;id&#34;: &#34;J-1&#34;,\n  &#34;mrn&#34;: &#34;M77&#34;\n}' in page
    stored = daemon.api("GET", f"/api/messages/{json_id}")[1]["transformed"]
    assert "\n" not in stored                                  # only the display is indented
    download = browser.request("GET", f"/messages/{json_id}/transformed")[2]
    assert download == stored


def test_the_channel_page_shows_its_file_masked_its_steps_and_targets(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, page = browser.request("GET", "/channels/down")
    assert status == 200
    config = page[page.index('id="config"'):page.index("</details>")]
    for secret in ("pw-in-url", "default-secret", "literal-secret"):
        assert secret not in page, secret
    assert "Bearer ${DASH_TOKEN:-•••}" in config and "X-Api-Key = &#34;•••&#34;" in config
    assert "http://•••@127.0.0.1:" in config and "# a comment kept" in config
    target = daemon.api("GET", "/api/channels/down")[1]["destinations"][0]
    assert target["target"].startswith("http://127.0.0.1:") and "robot" not in target["target"]
    assert f'<td class="target">{target["target"]}</td>' in page
    status, _headers, page = browser.request("GET", "/channels/fhir")
    steps = page[page.index('id="steps"'):page.index("</section>", page.index('id="steps"'))]
    assert re.search(r'filter</span> <strong>no-results</strong>', steps)
    assert "<code>set MSH.5 value=LAB</code>" in steps and "<code>delete NTE</code>" in steps
    assert re.findall(r'class="kind">(\w+)</span>', steps) == ["filter", "edit", "inline"]
    page = browser.request("GET", "/channels/intake")[2]
    assert len(re.findall(r'class="message-link"', page)) >= 4       # its recent messages


def test_the_messages_page_counts_and_replays_or_downloads_the_ticked_ones(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, page = browser.request("GET", "/messages?go=1&channel=intake")
    listed = re.findall(r'name="id" value="(\d+)"', page)
    assert status == 200 and 'id="count">4 messages match; showing 1–4.' in page and len(listed) == 4
    assert 'id="replay-selected"' in page and 'id="download-selected"' in page
    picked = [message_id(daemon, "IN-0"), message_id(daemon, "IN-2")]
    csrf = Page(page).hidden["csrf"]
    form = [("csrf", csrf), ("next", "/messages?go=1&channel=intake")] + [("id", str(i)) for i in picked]
    status, _headers, _text = browser.request("POST", "/messages/replay", [("id", str(picked[0]))])
    assert status == 403                                                # no CSRF token
    replays = len(daemon.cli_json("audit", "--action", "replay", "--limit", "1000"))
    status, headers, _text = browser.request("POST", "/messages/replay", form)
    assert status == 303 and headers["Location"] == "/messages?go=1&channel=intake"
    audit = daemon.cli_json("audit", "--action", "replay", "--limit", "1000")
    assert len(audit) == replays + 1 and audit[0]["detail"]["ids"] == picked      # one replay of the selection
    assert "Replayed 2 of 2 selected message(s)" in browser.request("GET", "/messages?go=1&channel=intake")[2]

    status, headers, body = browser.request("POST", "/messages/download", form)
    assert status == 200 and headers["Content-Disposition"] == f'attachment; filename="messages-{picked[0]}-{picked[1]}-2.hl7"'
    assert daemon.cli_json("audit", "--action", "view")[0]["detail"]["ids"] == picked
    raws = [daemon.api("GET", f"/api/messages/{i}")[1]["raw"] for i in picked]
    assert body == "".join(raw + "\n" for raw in raws)
    status, _headers, page = browser.request("GET", "/messages?go=1&channel=nosuch")
    assert 'id="count">0 messages match.' in page and 'id="selection"' not in page


def test_the_report_page_is_what_switchboard_report_prints_with_a_chart_and_its_csv(site, browser):
    daemon, _peer, _refuse = site
    status, _headers, page = browser.request("GET", "/report")
    assert status == 200 and 'id="report-channels"' in page
    printed = daemon.cli_json("report")
    for entry in printed["channels"]:
        row = re.search(rf'<tr data-channel="{entry["name"]}">(.*?)</tr>', page, re.S).group(1)
        cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)
        assert cells[:3] == [str(entry["received"]), str(entry["filtered"]), str(entry["errors"])], entry["name"]
        assert cells[3] == f"{entry['error_rate'] * 100:.1f}%"
    days = re.findall(r'<g class="day" data-day="([\d-]+)"><title>([^<]*)</title>', page)
    assert len(days) == 31 and days[-1][0] == printed["until"][:10]          # 30d back to today, each day
    assert days[-1][1].startswith(f"{days[-1][0]}: {sum(c['received'] for c in printed['channels'])} received")
    assert "No messages" not in days[0][1] and days[0][1].endswith("0 queued")
    csv_link = re.search(r'id="report-csv" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    status, headers, body = browser.request("GET", csv_link)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert body == daemon.cli("report", "--csv").stdout
    status, _headers, page = browser.request("GET", "/report?since=soon")
    assert status == 400 and "since:" in page
    status, _headers, page = browser.request("GET", "/report?since=1h&channel=intake")
    assert re.findall(r'<tr data-channel="([^"]+)">', page) == ["intake"]


LISTED = 1000


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    """A daemon whose store holds 1,000 more messages than a page lists."""
    root = tmp_path_factory.mktemp("thousand")
    daemon = Daemon(root / "d", {"intake": CHANNELS["intake"].format(outbox=root / "outbox")}).start(1)
    client = MllpClient(daemon.ports["intake"])
    for number in range(LISTED + 20):
        assert client.request(hl7(f"K-{number}", mrn=f"M{number % 97}"))["code"] == "AA"
    client.close()
    yield daemon
    daemon.stop()


def test_a_page_of_1000_messages_is_rendered_in_under_300_ms_of_server_time(thousand):
    """Issue 21's bound, read from the page's own Server-Timing header (from the request's arrival
    to its answer: the search, the count, the audit row's commit and the rendering); the fastest
    of five, so another process on the machine does not decide it."""
    client = Browserless(thousand.admin_port)
    assert client.sign_in()[0] == 303
    timings = []
    for _ in range(5):
        status, headers, page = client.request("GET", f"/messages?go=1&per_page={LISTED}")
        assert status == 200 and len(re.findall(r'class="message-link"', page)) == LISTED
        timings.append(float(re.fullmatch(r"page;dur=([\d.]+)", headers["Server-Timing"]).group(1)))
    assert 'id="count">1,020 messages match; showing 1–1000.' in page and "older »" in page
    print(f"server time of a 1,000-message page, ms: {sorted(timings)}")
    assert min(timings) < 300, timings
