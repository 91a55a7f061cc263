"""Who may do what on the admin listener (DESIGN §3.12): the one place that decides.

Every request to the admin listener -- the JSON API, the dashboard's pages and forms, and so the
CLI's calls to the daemon -- is decided here, by ``DashboardSite.screen`` (engine/admin/sessions.py)
before a byte of its body is read: ``need_for(method, path, query)`` gives the route's ``Need``
and ``refusal(user, need)`` the sentence of a 403, or None.

Roles are ordered: ``viewer`` (channels, counts, message summaries and metadata) < ``operator``
(+ replay, pause, start, stop) < ``admin`` (+ everything: reload, and any route not listed
below -- a new route is admin-only until it is given a rule).  ``phi`` is separate from the role:
without it a user gets no message content (raw, transformed, sent, responses), no text search and
no original bytes.  Routes that show a message to a user without ``phi`` show it through
``redact`` (summary and metadata kept, content replaced by ``None`` and a ``content_hidden``
sentence).

The ``[admin] token`` is the user ``admin`` (role admin, phi); ``[admin] tokens`` names are admins
with phi too (they predate roles and keep their rights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.config.schema import ROLES
RANK = {role: rank for rank, role in enumerate(ROLES)}
READ = frozenset({b"GET", b"HEAD"})
POST = frozenset({b"POST"})
ACTION = r"(start|stop|pause)"
CHANNEL = r"[^/]+"
ID = r"[^/]+"          # the route checks the number itself (400 with a sentence)


@dataclass(frozen=True)
class User:
    name: str
    role: str = "admin"
    phi: bool = True


@dataclass(frozen=True)
class Need:
    """What a route asks: ``role`` (None: open to anyone), ``phi``, and what it is, for the 403."""

    role: str | None
    phi: bool = False
    what: str = ""


OPEN = Need(None)
VIEW = Need("viewer", what="see channels and message summaries")
CONTENT = Need("viewer", phi=True, what="see message content")
SEARCH_TEXT = Need("viewer", phi=True, what="search the content of messages (text)")
OPERATE = Need("operator", what="replay messages or start, stop and pause channels")
ADMINISTER = Need("admin", what="do this (it is for admins)")

# (methods, path pattern, need), first match wins; anything else is ADMINISTER.
RULES: tuple[tuple[frozenset, re.Pattern, Need], ...] = tuple(
    (methods, re.compile(pattern), need) for methods, pattern, need in (
        (READ, r"/healthz", OPEN),
        (READ, r"/login|/favicon\.ico|/static/[^/]+", OPEN),
        (POST, r"/login|/logout", OPEN),          # the form's own checks: throttled sign-in, CSRF
        (READ, r"/|/api/?|/metrics|/search|/messages/?|/logout", VIEW),
        (READ, rf"/api/channels/?|/api/channels/{CHANNEL}/?|/channels/?|/channels/{CHANNEL}/?", VIEW),
        (READ, rf"/api/channels/{CHANNEL}/stats", VIEW),
        (READ, rf"/api/messages/?|/api/messages/{ID}/?|/messages/{ID}/?", VIEW),
        (READ, rf"/messages/{ID}/(raw|transformed|original|sent|response)", CONTENT),
        (READ, r"/api/reload/?|/api/nodes/?", VIEW),
        (READ, r"/report/?|/report/csv", VIEW),         # names, rules and counts: no message content
        (POST, rf"/api/channels/{CHANNEL}/{ACTION}|/channels/{CHANNEL}/{ACTION}", OPERATE),
        (POST, rf"/api/messages/{ID}/replay|/messages/{ID}/replay|/api/replay/?|/messages/replay", OPERATE),
        (POST, r"/messages/download", CONTENT),
        (POST, r"/api/reload/?", ADMINISTER),
    ))
SEARCHES = re.compile(r"/api/messages/?|/messages/?|/search|/channels/[^/]+/?")


def need_for(method: bytes, path: bytes, query: dict | None = None) -> tuple[Need, bool]:
    """(the route's need, whether a rule named it); ``query`` is the parsed query string
    (str -> [str]): a non-empty ``text`` on a search asks for ``phi``."""
    text = path.decode("utf-8", "replace")
    for methods, pattern, need in RULES:
        if method in methods and pattern.fullmatch(text):
            if need is VIEW and SEARCHES.fullmatch(text) and any(v.strip() for v in (query or {}).get("text", [])):
                return SEARCH_TEXT, True
            return need, True
    return ADMINISTER, False


def allowed(user: User | None, need: Need) -> bool:
    if need.role is None:
        return True
    if user is None:
        return False
    return RANK.get(user.role, -1) >= RANK[need.role] and (user.phi or not need.phi)


def refusal(user: User, need: Need) -> str | None:
    """The 403 sentence, or None when ``user`` may."""
    if allowed(user, need):
        return None
    if need.phi and RANK.get(user.role, -1) >= RANK[need.role]:
        return (f"user {user.name} may not {need.what}: the account has no PHI access "
                "(phi = false in its [[admin.user]])")
    return f"user {user.name} is a{'n' if user.role[0] in 'aeiou' else ''} {user.role} and may not {need.what}"


def may(user: User | None, what: str) -> bool:
    """For pages: whether to show a control (``operate``, ``content``, ``administer``)."""
    return allowed(user, {"operate": OPERATE, "content": CONTENT, "administer": ADMINISTER, "view": VIEW}[what])


HIDDEN = "message content is hidden: this account has no PHI access"
CONTENT_KEYS = ("raw", "transformed")
DELIVERY_CONTENT = ("sent", "response")


def redact(message: dict | None, user: User | None) -> dict | None:
    """``message`` as ``user`` may see it: unchanged with phi, else without content (keys kept,
    values None, ``content_hidden`` says why)."""
    if message is None or (user is not None and user.phi):
        return message
    shown = {**message, **{key: None for key in CONTENT_KEYS if key in message}, "content_hidden": HIDDEN}
    shown["destinations"] = [
        {**d, **{key: None for key in DELIVERY_CONTENT if key in d},
         "attempts": [{**a, "response": None} for a in d.get("attempts", [])]}
        for d in message.get("destinations", [])]
    return shown
