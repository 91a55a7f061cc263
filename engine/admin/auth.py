"""Who may use the admin API: bearer tokens, checked before a byte of the body is read.

Tokens: ``[admin] token`` (named ``admin`` in the audit log) and ``[admin] tokens = { name =
"value" }`` (admins with phi), and each ``[[admin.user]]``'s ``token_sha256`` (DESIGN §3.12; roles
and the 403s in ``engine/admin/roles.py``, checked here too, before the body).  With no ``[admin]
token`` the daemon generates one at first start and keeps it in ``admin.token`` beside the store,
mode 0600 (DESIGN §3.1); its start-up log says where, never what.  The CLI reads the same file.

The check happens at the end of the request headers, with the HTTP source's technique
(``engine.connectors.http_source.SourceChannel``): the channel asks ``screen`` before the body is
read, and a refused request is answered 401 with a JSON body and ``Connection: close`` while
whatever the client still sends is dropped (RELIABILITY "Request bodies are parsed only after
authentication").  Only ``GET /healthz``, exactly, is open.  Each presented token is compared
with every configured one through ``hmac.compare_digest`` over SHA-256 digests, so neither the
content nor the length of a token shows in the time an answer takes, and the loop does not stop
at the first match.  Every answer -- pages, JSON, redirects, refusals -- carries
``SECURITY_HEADERS``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.web import server

from engine.admin.roles import User, need_for, refusal
from engine.connectors.http.source import CappedBody, Refusal, SourceChannel

log = Logger(namespace="switchboard.admin")

OPEN_PATHS = (b"/healthz",)
SECURITY_HEADERS = (
    (b"Content-Security-Policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)
MAX_BODY = 1 << 20              # a replay selection is a few hundred bytes; a long id list stays far below
TOKEN_FILE = "admin.token"
# an argon2id hash of a random string: unknown names are verified against it (same time as a wrong password)
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$jluw7irpYuaFAs/mtdq7Uw$CkB81n7rkCDJKBTvWUeSpwGfwxGgG8rt382Se0TSOEg"
UNAUTHORIZED = Refusal(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                       ((b"WWW-Authenticate", b'Bearer realm="switchboard"'),))


def token_file(config) -> Path:
    """Where the generated token lives: beside the store."""
    return Path(config.store.path).parent / TOKEN_FILE


def ensure_token_file(path: Path) -> tuple[str, bool]:
    """Read the kept token, or create one (mode 0600, never overwriting). Returns (token, created)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warn("{path} can be read by other users (mode {mode:o}); chmod 600 it", path=str(path), mode=mode)
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)       # an empty file left by a crash is replaced, never appended to
    return token, True


def configured_tokens(config) -> list[tuple[str, str]]:
    """(name, token) pairs from the config, without the generated one."""
    pairs = [("admin", config.admin.token)] if config.admin.token else []
    pairs += [(name, value) for name, value in (config.admin.tokens or {}).items() if value]
    return pairs


class Tokens:
    """Who a presented token or password is: ``who(presented)`` -> ``roles.User`` or None.

    Tokens: ``[admin] token`` and ``[admin] tokens`` (admins with phi) and each ``[[admin.user]]``'s
    ``token_sha256``; all kept as SHA-256 digests and compared in constant time, every one of them
    each time.  Passwords (``[[admin.user]] password``) are argon2id hashes checked with
    argon2-cffi, which is slow on purpose: call ``check_password`` in a thread."""

    def __init__(self, pairs: list[tuple[str, str]], users=()) -> None:
        entries = [(User(name, "admin", True), hashlib.sha256(value.encode("utf-8")).digest()) for name, value in pairs]
        self._hashed: dict[str, tuple[User, str]] = {}
        for config in users:
            user = User(config.name, config.role, bool(config.phi))
            if config.token_sha256:
                entries.append((user, bytes.fromhex(config.token_sha256)))
            if config.password:
                self._hashed[config.name] = (user, config.password)
        if not entries and not self._hashed:
            raise ValueError("the admin API needs at least one token")
        self._digests = entries

    @classmethod
    def for_engine(cls, config) -> "Tokens":
        pairs = configured_tokens(config)
        if not config.admin.token:
            path = token_file(config)
            token, created = ensure_token_file(path)
            log.info("admin token {how} {path} (mode 0600); the CLI reads it from there",
                     how="generated and kept in" if created else "read from", path=str(path))
            pairs.insert(0, ("admin", token))
        return cls(pairs, getattr(config.admin, "users", ()))

    def who(self, presented: bytes) -> User | None:
        """The user whose token this is (every digest compared, in constant time), or None."""
        digest = hashlib.sha256(presented).digest()
        found = None
        for user, expected in self._digests:
            if hmac.compare_digest(digest, expected) and found is None:
                found = user
        return found

    def check_password(self, name: str, password: str) -> User | None:
        """The user whose name and password these are, or None; blocking (argon2), use a thread.
        An unknown name is checked against a dummy hash so that it takes as long as a wrong password."""
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error, InvalidHashError

        user, hashed = self._hashed.get(name, (None, _DUMMY_HASH))
        try:
            PasswordHasher().verify(hashed, password)
        except (Argon2Error, InvalidHashError):
            return None
        return user

    def has_user(self, name: str) -> bool:
        return name in self._hashed or any(user.name == name for user, _ in self._digests)

    def from_headers(self, request) -> User | None:
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) != 1:
            return None
        scheme, _, presented = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return None
        return self.who(presented.strip())


class AdminRequest(CappedBody, server.Request):
    """A twisted.web request with the HTTP source's capped in-memory body.

    ``user`` (``roles.User``) and ``who`` (its name, for the audit log) are set by
    ``AdminSite.screen`` before the body is read.  Every answer carries ``SECURITY_HEADERS``,
    set when the request is made, so no handler can forget them."""

    who: str | None = None
    user: User | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, value in SECURITY_HEADERS:
            self.responseHeaders.setRawHeaders(name, [value])

    def body_limit(self) -> int:
        return MAX_BODY


class AdminChannel(SourceChannel):
    """The HTTP source's channel: caps and refusals decided at the end of the headers; a refusal
    carries the security headers too."""

    def refuse(self, refusal: Refusal) -> None:
        names = {name.lower() for name, _ in refusal.headers}
        extra = tuple(pair for pair in SECURITY_HEADERS if pair[0].lower() not in names)
        super().refuse(Refusal(refusal.code, refusal.reason, refusal.headers + extra))


class AdminSite(server.Site):
    """twisted.web's Site with the token check, a connection cap and no access log (URLs may
    carry search values such as ``meta.mrn=...``: they must not reach a log)."""

    protocol = AdminChannel
    requestFactory = AdminRequest
    displayTracebacks = False
    noisy = False

    def __init__(self, resource, tokens: Tokens, reactor, *, max_connections: int = 64) -> None:
        super().__init__(resource, timeout=60, reactor=reactor)
        self.tokens = tokens
        self.max_connections = max_connections
        self.max_body = MAX_BODY
        self.connections: set = set()

    def log(self, request) -> None:
        """No access log: see the class docstring."""

    def admit(self, channel) -> bool:
        if len(self.connections) >= self.max_connections:
            return False
        channel.admitted = True
        self.connections.add(channel)
        return True

    def release(self, channel) -> None:
        self.connections.discard(channel)

    def note_refused(self, refusal: Refusal, peer) -> None:
        log.info("admin API: HTTP {code} to {peer}: {reason}", code=refusal.code,
                 peer=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}", reason=refusal.reason)

    def admit_user(self, request: AdminRequest, user: User, method: bytes, uri: bytes) -> None:
        """The one role check (engine/admin/roles.py): 403 with a sentence, or ``request.user`` set."""
        path, _, query = uri.partition(b"?")
        need, _named = need_for(method, path, parse_qs(query.decode("utf-8", "replace")) if query else {})
        reason = refusal(user, need)
        if reason is not None:
            raise Refusal(403, reason)
        request.user, request.who = user, user.name

    def screen(self, request: AdminRequest, method: bytes, uri: bytes, length) -> None:
        """Raise ``Refusal`` for a request we will not take; runs before the body is read."""
        path = uri.split(b"?", 1)[0]
        if path in OPEN_PATHS and method in (b"GET", b"HEAD"):
            return
        user = self.tokens.from_headers(request)
        if user is None:
            raise UNAUTHORIZED
        self.admit_user(request, user, method, uri)
        if length is not None and length > MAX_BODY:
            raise Refusal(413, f"the body is larger than {MAX_BODY} bytes")
