"""Dashboard sessions and the admin site's screening with them (engine/admin/sessions.py): what is
open, what redirects to /login, what needs a bearer token, how sessions expire."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from engine.admin.auth import Tokens
from engine.admin.roles import User
from engine.admin.sessions import COOKIE, DashboardSite, Sessions, cookie_value, csrf_ok, set_cookie_header
from engine.connectors.http.source import Refusal

TOKEN = "the-admin-token"


class Now:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def request(headers: dict[str, str] | None = None):
    made = DummyRequest([b""])
    for name, value in (headers or {}).items():
        made.requestHeaders.addRawHeader(name.encode(), value.encode())
    return made


@pytest.fixture
def site():
    return DashboardSite(Resource(), Tokens([("admin", TOKEN), ("ops", "ops-token")]), Clock(), Sessions())


def screen(site, method: str, uri: str, headers=None, length=None):
    made = request(headers)
    site.screen(made, method.encode(), uri.encode(), length)
    return made


def refused(site, method: str, uri: str, headers=None, length=None) -> Refusal:
    with pytest.raises(Refusal) as caught:
        screen(site, method, uri, headers, length)
    return caught.value


def test_sessions_expire_when_idle_or_old_and_the_oldest_goes_first():
    now = Now()
    sessions = Sessions(clock=now, idle=60, lifetime=300, limit=2)
    value, session = sessions.create(User("ops"))
    assert sessions.find(value) is session and sessions.find("other") is None and sessions.find(None) is None
    for _ in range(4):                        # used every 59 s: alive until the lifetime is over
        now.value += 59
        assert sessions.find(value) is session
    now.value += 70
    assert sessions.find(value) is None       # 306 s old
    first, _ = sessions.create(User("a"))
    second, _ = sessions.create(User("b"))
    sessions.find(first)                      # first is now the most recently used
    sessions.create(User("c"))
    assert len(sessions) == 2 and sessions.find(second) is None and sessions.find(first) is not None
    sessions.end(first)
    assert sessions.find(first) is None


def test_the_cookie_value_is_not_kept_in_memory():
    sessions = Sessions()
    value, _session = sessions.create(User("admin"))
    assert value not in repr(sessions.__dict__)


def test_csrf_tokens_are_compared_exactly():
    _value, session = Sessions().create(User("admin"))
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, session.csrf + "x") and not csrf_ok(session, "") and not csrf_ok(session, None)
    assert not csrf_ok(None, session.csrf)


def test_cookie_header_and_parsing():
    assert set_cookie_header("abc", secure=False) == b"switchboard_session=abc; Path=/; HttpOnly; SameSite=Strict"
    assert set_cookie_header("abc", secure=True).endswith(b"; Secure")
    assert b"Max-Age=0" in set_cookie_header("", secure=False, clear=True)
    assert cookie_value(request({"Cookie": f"theme=dark; {COOKIE}=v1; x=y"})) == "v1"
    assert cookie_value(request({"Cookie": "theme=dark"})) is None


@pytest.mark.parametrize(("method", "uri", "length"), [
    ("GET", "/healthz", None), ("GET", "/login", None), ("HEAD", "/login", None), ("GET", "/static/dashboard.css", None),
    ("POST", "/login", 30),
])
def test_open_paths(site, method, uri, length):
    assert getattr(screen(site, method, uri, length=length), "who", None) is None


@pytest.mark.parametrize("length", [None, 4097])
def test_a_sign_in_form_needs_a_small_content_length(site, length):
    assert refused(site, "POST", "/login", length=length).code == 413


@pytest.mark.parametrize("uri", ["/", "/channels/a", "/messages/7", "/search?status=error", "/logout"])
def test_pages_without_a_session_redirect_to_login(site, uri):
    refusal = refused(site, "GET", uri)
    assert refusal.code == 303 and (b"Location", b"/login") in refusal.headers
    assert refused(site, "POST", uri, length=10).code == 401


def test_a_session_opens_pages_but_never_the_api(site):
    value, _session = site.sessions.create(User("ops"))
    cookie = {"Cookie": f"{COOKIE}={value}"}
    made = screen(site, "GET", "/channels/a", cookie)
    assert made.who == "ops" and made.dashboard_session.who == "ops"
    assert screen(site, "POST", "/messages/7/replay", cookie, length=40).who == "ops"
    for uri in ("/api/channels", "/metrics", "/healthz/"):
        assert refused(site, "GET", uri, cookie).code == 401
    assert refused(site, "GET", "/", {"Cookie": f"{COOKIE}=forged"}).code == 303


def test_a_bearer_token_is_checked_as_for_the_api(site):
    assert screen(site, "GET", "/", {"Authorization": f"Bearer {TOKEN}"}).who == "admin"
    assert screen(site, "GET", "/api/channels", {"Authorization": "Bearer ops-token"}).who == "ops"
    value, _session = site.sessions.create(User("ops"))
    # a wrong header is refused even with a good cookie: scripts see their mistake
    assert refused(site, "GET", "/", {"Authorization": "Bearer wrong", "Cookie": f"{COOKIE}={value}"}).code == 401
