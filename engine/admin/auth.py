"""Who may use the admin API: bearer tokens, checked before a byte of the body is read.

Tokens: ``[admin] token`` (named ``admin`` in the audit log) and ``[admin] tokens = { name =
"value" }``.  With no ``[admin] token`` the daemon generates one at first start and keeps it in
``admin.token`` beside the store, mode 0600 (DESIGN §3.1); its start-up log says where, never
what.  The CLI reads the same file.

The check happens at the end of the request headers, with the HTTP source's technique
(``engine.connectors.http_source.SourceChannel``): the channel asks ``screen`` before the body is
read, and a refused request is answered 401 with a JSON body and ``Connection: close`` while
whatever the client still sends is dropped (RELIABILITY "Request bodies are parsed only after
authentication").  Only ``GET /healthz``, exactly, is open.  Each presented token is compared
with every configured one through ``hmac.compare_digest`` over SHA-256 digests, so neither the
content nor the length of a token shows in the time an answer takes, and the loop does not stop
at the first match.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from twisted.logger import Logger
from twisted.web import server

from engine.connectors.http.source import CappedBody, Refusal, SourceChannel

log = Logger(namespace="switchboard.admin")

OPEN_PATHS = (b"/healthz",)
MAX_BODY = 1 << 20              # a replay selection is a few hundred bytes; a long id list stays far below
TOKEN_FILE = "admin.token"
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
    """The accepted tokens; ``who(presented)`` -> the token's name or None."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        if not pairs:
            raise ValueError("the admin API needs at least one token")
        self._digests = [(name, hashlib.sha256(value.encode("utf-8")).digest()) for name, value in pairs]

    @classmethod
    def for_engine(cls, config) -> "Tokens":
        pairs = configured_tokens(config)
        if not config.admin.token:
            path = token_file(config)
            token, created = ensure_token_file(path)
            log.info("admin token {how} {path} (mode 0600); the CLI reads it from there",
                     how="generated and kept in" if created else "read from", path=str(path))
            pairs.insert(0, ("admin", token))
        return cls(pairs)

    def who(self, presented: bytes) -> str | None:
        digest = hashlib.sha256(presented).digest()
        found = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found

    def from_headers(self, request) -> str | None:
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) != 1:
            return None
        scheme, _, presented = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return None
        return self.who(presented.strip())


class AdminRequest(CappedBody, server.Request):
    """A twisted.web request with the HTTP source's capped in-memory body.

    ``who`` is set by ``AdminSite.screen`` (the token's name) before the body is read."""

    who: str | None = None

    def body_limit(self) -> int:
        return MAX_BODY


class AdminChannel(SourceChannel):
    """The HTTP source's channel: caps and refusals decided at the end of the headers."""


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

    def screen(self, request: AdminRequest, method: bytes, uri: bytes, length) -> None:
        """Raise ``Refusal`` for a request we will not take; runs before the body is read."""
        path = uri.split(b"?", 1)[0]
        if path in OPEN_PATHS and method in (b"GET", b"HEAD"):
            return
        who = self.tokens.from_headers(request)
        if who is None:
            raise UNAUTHORIZED
        request.who = who
        if length is not None and length > MAX_BODY:
            raise Refusal(413, f"the body is larger than {MAX_BODY} bytes")
