"""The HTTP listener (``[source] type = "http"``): one POST (or PUT) body = one message.

twisted.web's ``HTTPChannel`` parses requests well but has no body limit of its own and buffers
the whole body before ``Request.process`` runs (RELIABILITY 27).  So the channel is subclassed to
decide at the end of the headers — before a byte of the body is read — whether to take the
request at all: wrong path 404, no or wrong bearer token 401 (compared with ``hmac.compare_digest``),
other methods 405, a Content-Length over ``max_body`` 413 (RELIABILITY 28).  A chunked body is
counted while it streams and refused with 413 as soon as it passes ``max_body``; bad chunk
encoding and other malformed requests answer 400; too many or too large headers 431 (Twisted's
``maxHeaders`` / ``totalHeadersSize`` / ``MAX_LENGTH`` are set from our options, and we answer
before Twisted's own bare 400).  A refused connection is answered at once with
``Connection: close``; whatever the client still sends is read and dropped for a short moment
(bounded in time and bytes) so that closing does not reset the connection under our answer.

Only a body that parses as the channel's ``inbound`` is stored (RELIABILITY 29: XML with a DTD is
refused by ``engine.message.parse_inbound``); a client's ``Idempotency-Key`` header goes with it to
the store so a retry is answered with the original id (RELIABILITY 30), and the same key with
another body is answered 409, nothing stored (catalogue H10; JSON that could never be stored --
lone surrogates, 100+-digit numbers -- is 400: ``json_input``).  Per-address caps and the
whole-request deadline (408) come from ``guard`` (catalogue H4).  Answers: 202
``{"id", "status"}`` once stored, 200 for a duplicate (``"duplicate": true``), and with
``ack = "processed"`` 200 with the processing status or 422 when processing failed (the message is
kept for replay; resending would not help).  A store failure is 503, never 2xx.  HL7 bodies are
answered with the HL7 ACK of DESIGN §3.5 (``engine.hl7_ingest.answer_frame``); X12 bodies
(``inbound = "x12"``) are split per transaction set and, with ``ack = "999"``, answered with the
999s (a TA1 for an unreadable interchange) as ``application/edi-x12``.  Nothing here
logs content: status codes, reasons, ids and peer addresses only.
"""

from __future__ import annotations

import hmac
import io
import json
import re
from datetime import datetime
from http import HTTPStatus

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.web import http

from engine.connectors.http.guard import GuardedChannel
from engine.connectors.http.json_input import check_json, same_json
from engine.connectors.listener import ConnectionGate, ListeningSource
from engine.core.ingest import answer_frame
from engine.hl7.ack import build_reject
from engine.hl7.encoding import normalize_segments
from engine.hookspecs import hookimpl
from engine.core.message import MessageParseError, parse_inbound
from engine.hl7.charset import charset_codec, decode_frame
from engine.x12 import intake as x12_intake
from engine.config.schema import OptionSpec, choice_spec, positive, url_path

log = Logger(namespace="switchboard.http")

JSON_TYPE = b"application/json"
HL7_TYPE = b"x-application/hl7-v2+er7"
X12_TYPE = b"application/edi-x12"
METHODS = (b"POST", b"PUT")
LINGER_SECONDS = 1.0           # how long a refused connection is drained before it is closed
LINGER_BYTES = 1 << 20         # ...and how much of the refused body we read (and drop) at most
MAX_IDEMPOTENCY_KEY = 255
KEY_CONFLICT = "this Idempotency-Key was used for a different body; nothing was stored (use a new key)"
_CHARSET = re.compile(rb";\s*charset\s*=\s*\"?([A-Za-z0-9._:+-]+)", re.IGNORECASE)


def phrase(code: int) -> bytes:
    return HTTPStatus(code).phrase.encode("ascii")


def json_body(data: dict) -> bytes:
    return json.dumps(data).encode("utf-8")


def raw_response(code: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete ``Connection: close`` response, for answers given outside a Request."""
    lines = [b"HTTP/1.1 %d %s" % (code, phrase(code)), b"Content-Type: " + JSON_TYPE,
             b"Content-Length: %d" % len(body), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Refusal(Exception):
    """An answer decided before the body is read: status, PHI-free reason, extra headers.
    ``quiet``: already logged (by the connection gate's summary), not once more per refusal."""

    def __init__(self, code: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = (), *,
                 quiet: bool = False) -> None:
        super().__init__(reason)
        self.code, self.reason, self.headers, self.quiet = code, reason, headers, quiet


class CappedBody:
    """Request mixin: the body goes to a capped in-memory buffer (never a temp file), and a body
    over ``body_limit()`` -- a chunked one that keeps coming -- is refused 413 as it arrives.
    Shared by the HTTP source and the admin API; the channel must have ``refused``/``refuse``."""

    _parsePOSTFormSubmission = False   # the body is ours to parse, not a form

    def body_limit(self) -> int:
        raise NotImplementedError

    def gotLength(self, length) -> None:
        self.content = io.BytesIO()
        self.body_size = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or channel.refused:
            return
        self.body_size += len(data)
        limit = self.body_limit()
        if self.body_size > limit:
            channel.refuse(Refusal(413, f"the body is larger than {limit} bytes"))
            return
        self.content.write(data)


class SourceRequest(CappedBody, http.Request):
    """The HTTP source's request: capped body, handled by the factory."""

    def body_limit(self) -> int:
        return self.channel.factory.max_body

    def process(self) -> None:
        self.channel.factory.handle(self)


class SourceChannel(GuardedChannel, http.HTTPChannel):
    """``HTTPChannel`` with our caps and refusals; see the module docstring.  The guards
    (engine/connectors/http/guard.py) add the per-address caps and the whole-request deadline."""

    requestFactory = SourceRequest
    refused = False
    _quiet = False
    _linger_call = None
    _dropped = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self.guard_admit():
            return
        if not self.factory.admit(self):
            self.refuse(Refusal(503, "too many connections"))

    def connectionLost(self, reason) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self.guard_lost()
        self.factory.release(self)
        super().connectionLost(reason)

    def refuse_guarded(self, code: int, reason: str) -> None:
        # quiet when the gate's summary logged it; a flag on the channel too, so that a subclass
        # that rebuilds the Refusal (the admin's adds headers) keeps it quiet
        self._quiet = getattr(self.factory, "gate", None) is not None
        self.refuse(Refusal(code, reason, quiet=self._quiet))

    # -- caps, checked before Twisted's own (which would answer a bare 400) -----------------
    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            self._drop(data)
            return
        self.guard_data()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        # _receivedHeaderSize is HTTPChannel's running count for this request's head
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(Refusal(431, "the request headers are too large"))
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(Refusal(431, "a request header line is too long"))

    def headerReceived(self, line: bytes) -> bool:
        if self.refused:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(Refusal(431, "too many request headers"))
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        if self.refused:
            return
        try:
            self.factory.screen(self.requests[-1], self._command, self._path, self.length)
        except Refusal as refusal:
            self.refuse(refusal)
            return
        super().allHeadersReceived()   # may answer "100 Continue": only for requests we take

    def allContentReceived(self) -> None:
        self.guard_request_read()
        if not self.refused:
            super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's path for malformed request lines, headers, lengths and chunk encodings
        self.refuse(Refusal(400, "malformed HTTP request"))

    # -- refusing ---------------------------------------------------------------------------
    def refuse(self, refusal: Refusal) -> None:
        """Answer now, stop parsing, drain what the client still sends for a moment, close."""
        if self.refused:
            return
        self.refused = True
        self.guard_request_read()      # answered: no deadline of ours runs on
        if not (refusal.quiet or self._quiet):
            self.factory.note_refused(refusal, self.transport.getPeer())
        self.transport.write(raw_response(refusal.code, json_body({"error": refusal.reason}), refusal.headers))
        self._linger_call = self.callLater(LINGER_SECONDS, self._close)

    def _drop(self, data: bytes) -> None:
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if self.transport is not None:
            self.transport.loseConnection()


class _KeyedSink:
    """The channel's sink as ``answer_frame`` sees it, adding the Idempotency-Key and keeping the
    receipt (the HTTP status depends on why an AE was given)."""

    def __init__(self, sink, key: str | None) -> None:
        self.sink, self.key, self.receipt = sink, key, None

    def receive(self, text: str, *, msh=None, idempotency_key=None, original=None):
        d = self.sink.receive(text, msh=msh, idempotency_key=self.key, original=original)
        return d.addCallback(self._keep)

    def _keep(self, receipt):
        self.receipt = receipt
        return receipt

    def note_rejected(self, reason: str) -> None:
        self.sink.note_rejected(reason)

    def note_event(self, kind: str, detail: str) -> None:
        self.sink.note_event(kind, detail)


class HttpSourceFactory(protocol.ServerFactory):
    """Per listener: the options, the connection count, and the request handling."""

    protocol = SourceChannel
    noisy = False

    def __init__(self, channel_config, sink, reactor) -> None:
        options = channel_config.source.options
        self.channel_name = channel_config.name
        self.inbound = channel_config.inbound
        self.sink = sink
        self.reactor = reactor
        self.path = options.get("path") or "/"
        token = options.get("token") or ""
        self.token = token.encode("utf-8") if token else None
        self.max_body = options.get("max_body") or 1 << 20
        self.max_headers = options.get("max_headers") or 100
        self.max_header_size = options.get("max_header_size") or 16384
        self.idle_timeout = options.get("idle_timeout") or None
        self.max_connections = options.get("max_connections") or 100
        self.request_timeout = options.get("request_timeout") or None
        self.ack_mode = options.get("ack") or "stored"
        self.gate = ConnectionGate(f"{self.channel_name}: HTTP", max_connections=self.max_connections,
                                   per_address=options.get("max_connections_per_address"), reactor=reactor)
        self.connections: set[SourceChannel] = self.gate.connections
        self.in_flight = 0
        self._drained: list[defer.Deferred] = []

    def buildProtocol(self, addr):
        channel = protocol.ServerFactory.buildProtocol(self, addr)
        channel.callLater = self.reactor.callLater
        channel.timeOut = self.idle_timeout
        channel.maxHeaders = self.max_headers
        channel.totalHeadersSize = self.max_header_size
        channel.MAX_LENGTH = self.max_header_size
        return channel

    def log(self, request) -> None:
        """Twisted's access log would write URLs and agents; we log ids ourselves."""

    # -- connections -----------------------------------------------------------------------
    def admit(self, channel: SourceChannel) -> bool:
        return True     # the gate (``guard_admit``) holds both caps

    def release(self, channel: SourceChannel) -> None:
        """The gate forgets the connection (``guard_lost``)."""

    def note_refused(self, refusal: Refusal, peer) -> None:
        log.info("{channel}: HTTP {code} to {peer}: {reason}", channel=self.channel_name, code=refusal.code,
                 peer=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}", reason=refusal.reason)
        self.sink.note_event("http_refused", f"{refusal.code}: {refusal.reason}")

    # -- the head of a request, before its body ---------------------------------------------
    def screen(self, request: SourceRequest, method: bytes, uri: bytes, length) -> None:
        """Raise ``Refusal`` for a request we will not take; runs before the body is read."""
        path = uri.split(b"?", 1)[0]
        if path != self.path.encode("utf-8"):
            raise Refusal(404, "no such path")
        if self.token is not None and not self._authorized(request):
            raise Refusal(401, "a valid bearer token is required", ((b"WWW-Authenticate", b"Bearer"),))
        if method not in METHODS:
            raise Refusal(405, "use POST or PUT", ((b"Allow", b"POST, PUT"),))
        if length is not None and length > self.max_body:
            raise Refusal(413, f"the body is larger than {self.max_body} bytes")

    def _authorized(self, request: SourceRequest) -> bool:
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) != 1:
            return False
        scheme, _, presented = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(presented.strip(), self.token)

    # -- a complete request -----------------------------------------------------------------
    def handle(self, request: SourceRequest) -> None:
        self.in_flight += 1
        d = defer.maybeDeferred(self._answer, request)

        def internal_error(failure):
            log.failure("{channel}: internal error answering an HTTP request", failure,
                        channel=self.channel_name)
            return 500, json_body({"error": "internal error"}), JSON_TYPE

        d.addErrback(internal_error)
        d.addCallback(lambda answer: self._respond(request, *answer))
        d.addErrback(lambda failure: log.failure("{channel}: could not write an HTTP answer", failure,
                                                 channel=self.channel_name))
        d.addBoth(self._finished)

    @defer.inlineCallbacks
    def _answer(self, request: SourceRequest):
        body = request.content.getvalue()
        charset = _charset(request)
        try:
            key = _idempotency_key(request)
        except ValueError as error:
            return 400, json_body({"error": str(error)}), JSON_TYPE
        if self.inbound == "hl7":
            answer = yield self._answer_hl7(body, charset, key)
            return answer
        if self.inbound == "x12":
            answer = yield self._answer_x12(body, key)
            return answer
        try:
            text = _decode(body, charset)
            if self.inbound == "json":
                check_json(text)      # lone surrogates, huge numbers, deep nesting: 400, not 5xx
            parse_inbound(text, self.inbound)
        except MessageParseError as error:
            self.sink.note_rejected(str(error))
            return 400, json_body({"error": str(error)}), JSON_TYPE
        receipt = yield self.sink.receive(text, idempotency_key=key)
        if self._key_conflict(receipt, key, text):
            return 409, json_body({"id": receipt.message_id, "error": KEY_CONFLICT}), JSON_TYPE
        code, data = self._receipt_answer(receipt)
        return code, json_body(data), JSON_TYPE

    def _key_conflict(self, receipt, key: str | None, text: str) -> bool:
        """A duplicate by ``Idempotency-Key`` whose body differs from the stored one: the client
        reused a key for another message (409, nothing stored), not a retry.  A message whose
        content was pruned cannot be compared and counts as the same."""
        if key is None or receipt is None or not receipt.duplicate or receipt.message_id is None:
            return False
        store = getattr(self.sink, "store", None)
        stored = store.get_message(receipt.message_id) if store is not None else None
        raw = (stored or {}).get("raw")
        if raw is None or raw == text:
            return False
        if self.inbound == "json":
            return not same_json(raw, text)
        if self.inbound == "hl7":
            return normalize_segments(raw).rstrip("\r") != normalize_segments(text).rstrip("\r")
        return True

    @defer.inlineCallbacks
    def _answer_hl7(self, body: bytes, charset: str, key: str | None):
        text, original = decode_frame(body, charset)  # original: the body, only if a byte was invalid
        keyed = _KeyedSink(self.sink, key)
        ack = yield answer_frame(keyed, normalize_segments(text), split_batches=False, original=original)
        receipt = keyed.receipt
        if self._key_conflict(receipt, key, text):
            return 409, build_reject(KEY_CONFLICT).encode("utf-8"), HL7_TYPE
        if receipt is None:
            code = 400                  # AR: not an acceptable HL7 message; nothing stored
        elif receipt.ok:
            code = 200
        elif receipt.message_id is None:
            code = 503                  # AE: not stored
        else:
            code = 422                  # AE: stored, processing failed (ack = "processed")
        return code, ack.encode("utf-8"), HL7_TYPE

    @defer.inlineCallbacks
    def _answer_x12(self, body: bytes, key: str | None):
        """An X12 interchange: each accepted transaction set stored (``engine.x12.intake``), then
        answered.  With ``ack = "999"`` the body is the 999s (a TA1 for an unreadable interchange);
        otherwise JSON with the ids.  200 once every accepted set is stored; 400 when nothing in
        the body was accepted (not stored); 503 when the store refused a set."""
        intake = x12_intake.take(body, now=datetime.now())
        for reason in intake.refused:
            self.sink.note_rejected(reason)
        receipts = yield defer.gatherResults([
            self.sink.receive(t.text, idempotency_key=f"{key}:{n}" if key else None)
            for n, t in enumerate(intake.messages, start=1)], consumeErrors=True)
        if any(not r.ok and r.message_id is None for r in receipts):
            code = 503
        elif not intake.messages:
            code = 400
        elif any(not r.ok for r in receipts):
            code = 422
        else:
            code = 200
        if self.ack_mode == "999":
            return code, intake.answer.encode("latin-1", "replace"), X12_TYPE
        data = {"ids": [r.message_id for r in receipts],
                "statuses": [("DUPLICATE" if r.duplicate else r.status) for r in receipts]}
        if intake.problem is not None or intake.refused:
            data["rejected"] = intake.refused
        return code, json_body(data), JSON_TYPE

    def _receipt_answer(self, receipt) -> tuple[int, dict]:
        if not receipt.ok and receipt.message_id is None:
            return 503, {"error": receipt.error or "the message could not be stored"}
        if receipt.duplicate:
            return 200, {"id": receipt.message_id, "status": "DUPLICATE", "duplicate": True}
        if not receipt.ok:
            return 422, {"id": receipt.message_id, "status": receipt.status,
                         "error": receipt.error or "processing failed"}
        if self.ack_mode == "processed":
            return 200, {"id": receipt.message_id, "status": receipt.status}
        return 202, {"id": receipt.message_id, "status": receipt.status}

    def _respond(self, request: SourceRequest, code: int, body: bytes, content_type: bytes) -> None:
        if request._disconnected or request.finished:
            log.info("{channel}: client left before its HTTP {code} answer", channel=self.channel_name, code=code)
            return
        request.setResponseCode(code, phrase(code))
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(body)
        request.finish()

    def _finished(self, _result) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred:
        """Fires once every request taken has been answered."""
        if not self.in_flight:
            return defer.succeed(None)
        d = defer.Deferred()
        self._drained.append(d)
        return d


def _charset(request: SourceRequest) -> str:
    content_type = (request.requestHeaders.getRawHeaders(b"content-type") or [b""])[0]
    match = _CHARSET.search(content_type)
    return match.group(1).decode("ascii") if match else ""


def _idempotency_key(request: SourceRequest) -> str | None:
    values = request.requestHeaders.getRawHeaders(b"idempotency-key") or []
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("more than one Idempotency-Key header")
    try:
        key = values[0].decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("the Idempotency-Key header must be printable ASCII") from None
    if not key.isprintable() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"the Idempotency-Key header must be printable ASCII of at most "
                         f"{MAX_IDEMPOTENCY_KEY} characters")
    return key or None


def _decode(body: bytes, charset: str) -> str:
    """Strict decoding for json/csv/xml/text: a body that is not what it declares is refused."""
    codec = "utf-8"
    if charset:
        codec = charset_codec(charset)
        if codec is None:
            raise MessageParseError("unsupported charset in Content-Type")
    if codec.replace("_", "-") in ("utf-8", "utf8") and body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        return body.decode(codec)
    except UnicodeDecodeError as error:
        raise MessageParseError(f"the body is not valid {codec} (byte {error.start})") from None


class HttpSource(ListeningSource):
    """``[source] type = "http"``: an HTTP (or HTTPS, or mutual TLS) listener feeding one channel."""

    type_name = "http"
    option_schema = {
        "listen": OptionSpec("address", required=True),
        "path": OptionSpec("str", "/", check=url_path),
        "token": OptionSpec("str", ""),
        "max_body": OptionSpec("size", "1MB", check=positive),
        "max_connections": OptionSpec("int", 100, check=positive),
        "max_connections_per_address": OptionSpec("int", 20, check=positive),
        "request_timeout": OptionSpec("duration", "30s", check=positive),   # headers and body, whole
        "max_headers": OptionSpec("int", 100, check=positive),        # more: 431
        "max_header_size": OptionSpec("size", "16KB", check=positive),  # request line + headers; more: 431
        "idle_timeout": OptionSpec("duration", "1m", check=positive),
        "tls": OptionSpec("tls"),
        "ack": choice_spec("stored", "stored", "processed", "999"),   # "999": X12 answered in the body
    }
    default_inbound = "json"

    def __init__(self, channel_config, sink, reactor) -> None:
        self.options = channel_config.source.options
        self.reactor = reactor
        self.factory = HttpSourceFactory(channel_config, sink, reactor)
        self.port = None

    def start(self):
        if self.factory.token is None:
            log.warn("{channel}: the http source has no token: anyone who can reach it may post",
                     channel=self.factory.channel_name)
        return ListeningSource.start(self)


@hookimpl
def register_sources():
    return [HttpSource]
