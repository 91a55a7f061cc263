"""Browser sessions for the dashboard, and the admin site's screening with them.

A browser signs in at ``/login`` with a name and password (``[[admin.user]] password``, argon2id)
or a token (DESIGN §3.7, §3.12).  The daemon then keeps a session in memory -- the user (name, role,
phi: for the role check and the audit log), a CSRF token, when it was made and last used -- under
the SHA-256 of a random 256-bit id, and gives the browser that id in a cookie: ``HttpOnly`` (no
script reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/``, and ``Secure``
when the request came over TLS.  Memory holds no usable cookie, only its digest; a restart signs
everyone out.  A session ends at ``POST /logout`` (with the CSRF token; ``GET /logout`` only shows
the button), after ``IDLE`` seconds unused or ``LIFETIME`` seconds in all; at most
``MAX_SESSIONS`` are kept (the least recently used goes first).

``DashboardSite.screen`` extends ``AdminSite.screen`` (still before a byte of the body is read):

* open: ``GET /healthz``, ``GET /login``, ``GET /static/*`` (CSS and JS, no data), ``GET
  /favicon.ico`` (an empty 204), and
  ``POST /login`` with a ``Content-Length`` of at most ``LOGIN_MAX_BODY`` bytes, unless the
  address is waiting after failed sign-ins (``Throttle``: 429 with Retry-After);
* a request with an ``Authorization`` header, and every ``/api`` and ``/metrics`` request, is
  checked as before: a bearer token or 401 JSON (scripts keep their contract; a session cookie is
  never enough for the JSON API, whose POSTs carry no CSRF token);
* a dashboard page (``/``, ``/channels``, ``/messages``, ``/search``, ``/report``, ``/logout``) with a valid
  session cookie is taken as the session's user; without one a GET is redirected to ``/login``
  (303) and anything else is refused (401);
* either way the user's role is checked (``AdminSite.admit_user``, engine/admin/roles.py): 403
  with a sentence.

CSRF: every POST form carries the session's token in a hidden ``csrf`` field and the dashboard
compares it (``hmac.compare_digest``) before acting; a bearer-token request needs none.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from engine.admin.auth import MAX_BODY, OPEN_PATHS, AdminSite
from engine.admin.roles import User
from engine.connectors.http.source import Refusal

COOKIE = "switchboard_session"
IDLE = 30 * 60.0
LIFETIME = 12 * 3600.0
MAX_SESSIONS = 1000
LOGIN_MAX_BODY = 4096
PAGES = (b"channels", b"messages", b"search", b"report", b"logout")
SIGN_IN = Refusal(303, "sign in at /login", ((b"Location", b"/login"),))
SIGN_IN_FIRST = Refusal(401, "sign in at /login, or send a bearer token")


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float
    flash: list[str] = field(default_factory=list)   # one-time notes shown on the next page

    @property
    def who(self) -> str:
        return self.user.name


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, *, clock=time.monotonic, idle: float = IDLE, lifetime: float = LIFETIME,
                 limit: int = MAX_SESSIONS) -> None:
        self.clock, self.idle, self.lifetime, self.limit = clock, idle, lifetime, limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: User) -> tuple[str, Session]:
        """(cookie value, session) for a browser that just signed in as ``user``."""
        value = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, secrets.token_urlsafe(32), now, now)
        self._sessions[_digest(value)] = session
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
        return value, session

    def find(self, value: str | None) -> Session | None:
        if not value:
            return None
        key = _digest(value)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.created > self.lifetime:
            del self._sessions[key]
            return None
        session.seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, value: str | None) -> None:
        if value:
            self._sessions.pop(_digest(value), None)

    def __len__(self) -> int:
        return len(self._sessions)


class Throttle:
    """Failed sign-ins per address: the first ``free`` cost nothing, then each one locks the
    address out for ``base`` seconds doubled per further failure, up to ``longest``; ``/login``
    answers 429 with Retry-After meanwhile.  An address with no failure for ``forget`` seconds
    starts afresh; at most ``limit`` addresses are remembered (the least recent goes first), so a
    flood of addresses cannot grow memory."""

    def __init__(self, *, clock=time.monotonic, free: int = 5, base: float = 1.0, longest: float = 300.0,
                 forget: float = 900.0, limit: int = 10_000) -> None:
        self.clock, self.free, self.base, self.longest = clock, free, base, longest
        self.forget, self.limit = forget, limit
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()   # count, last, locked until

    def wait(self, address: str) -> float:
        """Seconds this address must still wait before trying again (0: it may try now)."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last, until = entry
        now = self.clock()
        if now - last > self.forget:
            del self._failures[address]
            return 0.0
        return max(0.0, until - now)

    def failed(self, address: str) -> None:
        now = self.clock()
        count, last, _until = self._failures.pop(address, (0, now, now))
        if now - last > self.forget:
            count = 0
        count += 1
        lock = 0.0 if count < self.free else min(self.longest, self.base * 2 ** (count - self.free))
        self._failures[address] = (count, now, now + lock)
        while len(self._failures) > self.limit:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def peer_host(request) -> str:
    return getattr(request.getClientAddress(), "host", "?")


def cookie_value(request) -> str | None:
    """The session cookie, read from the headers: ``screen`` runs before twisted.web parses
    cookies (that happens once the body is in)."""
    wanted = COOKIE.encode("ascii")
    for header in request.requestHeaders.getRawHeaders(b"cookie") or []:
        for item in header.split(b";"):
            name, sep, value = item.strip().partition(b"=")
            if sep and name == wanted and value:
                return value.decode("ascii", "replace")
    return None


def set_cookie_header(value: str, *, secure: bool, clear: bool = False) -> bytes:
    parts = [f"{COOKIE}={'' if clear else value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if clear:
        parts.append("Max-Age=0")
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")


def csrf_ok(session: Session | None, presented: str | None) -> bool:
    if session is None:
        return False
    return hmac.compare_digest(session.csrf.encode(), (presented or "").encode("utf-8", "replace"))


def is_page(path: bytes) -> bool:
    return path == b"/" or path.split(b"/")[1] in PAGES


class DashboardSite(AdminSite):
    """``AdminSite`` with the dashboard's sessions (see the module docstring)."""

    def __init__(self, resource, tokens, reactor, sessions: Sessions, throttle: Throttle | None = None,
                 **kwargs) -> None:
        super().__init__(resource, tokens, reactor, **kwargs)
        self.sessions = sessions
        self.throttle = throttle or Throttle()

    def screen(self, request, method: bytes, uri: bytes, length) -> None:
        path = uri.split(b"?", 1)[0]
        reading = method in (b"GET", b"HEAD")
        if reading and (path in OPEN_PATHS or path in (b"/login", b"/favicon.ico") or path.startswith(b"/static/")):
            return
        if path == b"/login" and method == b"POST":
            wait = math.ceil(self.throttle.wait(peer_host(request)))
            if wait:
                raise Refusal(429, f"too many failed sign-ins from this address; try again in {wait} s",
                              ((b"Retry-After", b"%d" % wait),))
            if length is None or length > LOGIN_MAX_BODY:
                raise Refusal(413, f"a sign-in form is at most {LOGIN_MAX_BODY} bytes, with a Content-Length")
            return
        if request.requestHeaders.hasHeader(b"authorization") or not is_page(path):
            return super().screen(request, method, uri, length)
        session = self.sessions.find(cookie_value(request))
        if session is None:
            raise SIGN_IN if reading else SIGN_IN_FIRST
        self.admit_user(request, session.user, method, uri)
        request.dashboard_session = session
        if length is not None and length > MAX_BODY:
            raise Refusal(413, f"the body is larger than {MAX_BODY} bytes")
