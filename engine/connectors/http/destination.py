"""The HTTP sender (``[[destination]] type = "http"``): one request per message, judged by status.

2xx: SENT, the response body kept (the first ``MAX_RESPONSE`` bytes; the rest is read and
dropped so a chatty peer cannot fill memory and the connection can go back to the pool).  408,
429 and 5xx: transient, retried after the queue's backoff or the peer's ``Retry-After`` (seconds
or an HTTP date), whichever is longer.  A refused, reset or timed-out connection: transient; when
the request may have reached the peer (no answer, timeout) the attempt is marked a possible
duplicate.  Every other status (4xx, and 3xx: redirects are not followed) is permanent: the peer
refused this message, the response is kept, the line moves on.

The ``url`` is a template rendered per message with ``id``, ``meta`` and ``channel``; the values
are percent-encoded before they are placed, so a metadata value can fill a path segment or query
value but never add one (the way HL7 output escapes its values).  Header values may use ${ENV}
(substituted when the config loads) and may be templates rendered per message with the same names
(``X-Order-Id = "{{ meta.order_id }}"``, as Mirth's per-message headers); a rendered value holding a
line break or a character outside Latin-1 is a permanent error naming the header, never a second
header smuggled into the request.  ``Content-Type`` follows the body's declared type (the last
``outbound`` of the channel's and this destination's transforms, else the channel's inbound)
unless ``headers`` sets it.  Built on ``twisted.web.client.Agent`` with a persistent connection
pool (treq is not a dependency); TLS through ``engine.connectors.tls.client_context`` via a small
``IPolicyForHTTPS``.  Automatic retries by the pool are off: every attempt is ours and recorded.
"""

from __future__ import annotations

import io
import urllib.parse
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    _HTTP11ClientFactory,
    FileBodyProducer,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from engine.hl7.encoding import with_final_cr
from engine.connectors.tls import client_context
from engine.core.contracts import PermanentError, SendResult, TransientError
from engine.hookspecs import hookimpl
from engine.config.schema import OptionSpec, choice_spec, http_url, positive

MAX_RESPONSE = 64 * 1024
CLOSE_TIMEOUT = 5.0
CONTENT_TYPES = {"json": "application/json", "hl7": "x-application/hl7-v2+er7", "csv": "text/csv",
                 "xml": "application/xml", "text": "text/plain"}
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


@implementer(IPolicyForHTTPS)
class TlsPolicy:
    """Agent's TLS policy from a ``tls = { ca, cert, key, verify, server_name }`` table."""

    def __init__(self, tls) -> None:
        self.tls = tls or {}
        self._creators: dict[tuple[str, int], object] = {}

    def creatorForNetloc(self, hostname: bytes, port: int):
        key = (hostname.decode("ascii"), port)
        if key not in self._creators:
            self._creators[key] = client_context(self.tls, key[0])
        return self._creators[key]


class _CappedBody(protocol.Protocol):
    """Collect the first ``limit`` bytes of a response body; read (and drop) the rest."""

    def __init__(self, finished: defer.Deferred, limit: int) -> None:
        self.finished, self.limit = finished, limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.truncated = False

    def dataReceived(self, data: bytes) -> None:
        room = self.limit - self.kept
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.parts.append(data)
            self.kept += len(data)

    def connectionLost(self, reason) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):   # PotentialDataLoss: ended by close
            self.finished.callback((b"".join(self.parts), self.truncated))
        else:
            self.finished.errback(reason)


def read_capped(response, limit: int = MAX_RESPONSE) -> defer.Deferred:
    """(body bytes, truncated) of ``response``; cancelling it aborts the connection."""
    body = None

    def cancel(_d):
        abort = getattr(body.transport, "abortConnection", None) if body is not None else None
        if abort is not None:
            abort()

    finished = defer.Deferred(cancel)
    body = _CappedBody(finished, limit)
    response.deliverBody(body)
    return finished


def retry_after(headers: Headers, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    values = headers.getRawHeaders(b"retry-after") or []
    if not values:
        return None
    value = values[0].decode("latin-1").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def body_type(channel_config, destination_config) -> str:
    """The declared type of what this destination sends: the last ``outbound`` wins."""
    kind = getattr(channel_config, "inbound", None) or "text"
    for step in (*getattr(channel_config, "transforms", ()), *destination_config.transforms):
        kind = step.outbound or kind
    return kind


def _reason(failure_types: list[str], prefix: str) -> str:
    names = sorted(set(failure_types))
    return f"{prefix}: {', '.join(names)}" if names else prefix


def _inner_failures(error) -> list[str]:
    """Type names inside a ResponseNeverReceived / ResponseFailed (PHI-free)."""
    return [type(reason.value).__name__ for reason in getattr(error, "reasons", []) or []]


class HttpDestination:
    type_name = "http"
    option_schema = {
        "url": OptionSpec("str", required=True, check=http_url),
        "method": choice_spec("POST", "POST", "PUT", "PATCH"),
        "headers": OptionSpec("mapping", {}),
        "timeout": OptionSpec("duration", "10s", check=positive),
        "tls": OptionSpec("tls"),
    }

    def __init__(self, config, context, reactor) -> None:
        options = config.options
        self.config = config
        self.context = context
        self.reactor = reactor
        self.channel = context.channel_name
        self.method = (options.get("method") or "POST").encode("ascii")
        self.timeout = options.get("timeout") or 10.0
        self.tls = options.get("tls")
        self.url = context.templates.from_string(options["url"], f"destination[{config.name}].url")
        if self.tls is not None and options["url"].strip().lower().startswith("http://"):
            raise ValueError("tls is set but the url is http://: use https:// (or remove tls)")
        self.headers = dict(options.get("headers") or {})
        self._header_templates = {
            name: context.templates.from_string(value, f"destination[{config.name}].headers.{name}")
            for name, value in self.headers.items() if "{{" in value or "{%" in value}
        self._content_type = next((value for name, value in self.headers.items()
                                   if name.lower() == "content-type"), None)
        self._agent = None
        self._pool = None

    # -- per message -----------------------------------------------------------------------
    def render_url(self, delivery) -> str:
        from engine.core.templates import TemplateError

        meta = {key: urllib.parse.quote(str(value), safe="") for key, value in (delivery.meta or {}).items()}
        try:
            url = self.url.render({"id": delivery.message_id, "meta": meta,
                                   "channel": urllib.parse.quote(self.channel, safe=""),
                                   "delivery": delivery.id}).strip()
        except TemplateError as error:
            raise PermanentError(f"url template: {error}") from None
        url = urllib.parse.quote(url, safe=_URL_SAFE)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError("the rendered url is not an http:// or https:// URL")
        if self.tls is not None and parts.scheme != "https":
            raise PermanentError("tls is set but the rendered url is not https://")
        return url

    def render_headers(self, delivery) -> Headers:
        from engine.core.templates import TemplateError

        headers = Headers()
        for name, value in self.headers.items():
            template = self._header_templates.get(name)
            if template is not None:
                try:
                    value = template.render({"id": delivery.message_id, "meta": delivery.meta or {},
                                             "channel": self.channel, "delivery": delivery.id}).strip()
                except TemplateError as error:
                    raise PermanentError(f"header {name} template: {error}") from None
            if any(char in value for char in "\r\n\0"):
                raise PermanentError(f"header {name}: the rendered value holds a line break")
            try:
                encoded = value.encode("latin-1")
            except UnicodeEncodeError:
                raise PermanentError(f"header {name}: the rendered value holds a character outside Latin-1") from None
            headers.addRawHeader(name.encode("latin-1"), encoded)
        return headers

    def content_type(self) -> str:
        if self._content_type is not None:
            return self._content_type
        channel = self.context.find_channel(self.channel)
        kind = body_type(getattr(channel, "config", None), self.config)
        return CONTENT_TYPES.get(kind, "text/plain") + "; charset=utf-8"

    def send(self, delivery) -> defer.Deferred:
        try:
            url = self.render_url(delivery)
        except PermanentError as error:
            return defer.fail(error)
        try:
            headers = self.render_headers(delivery)
        except PermanentError as error:
            return defer.fail(error)
        if self._content_type is None:
            headers.addRawHeader(b"Content-Type", self.content_type().encode("ascii"))
        exchange = self._exchange(url, headers, with_final_cr(delivery.body).encode("utf-8"))
        # our own timer rather than addTimeout: cancelling the Agent surfaces as a wrapped
        # CancelledError (ResponseNeverReceived), and the reason must say "timed out"
        timer = self.reactor.callLater(self.timeout, exchange.cancel)

        def settled(result):
            timed_out = not timer.active()
            if not timed_out:
                timer.cancel()
            if timed_out and isinstance(result, Failure):
                raise TransientError(f"no complete response within {self.timeout:g}s", possible_duplicate=True)
            return result

        exchange.addBoth(settled)
        exchange.addErrback(self._transport_failure)
        exchange.addCallback(self._judge)
        return exchange

    @defer.inlineCallbacks
    def _exchange(self, url: str, headers: Headers, body: bytes):
        response = yield self.agent().request(self.method, url.encode("ascii"), headers,
                                              FileBodyProducer(io.BytesIO(body)))
        content, truncated = yield read_capped(response)
        return response, content, truncated

    def _transport_failure(self, failure):
        error = failure.value
        if isinstance(error, TransientError):
            return failure
        if isinstance(error, (ConnectionRefusedError, ConnectError, DNSLookupError, ConnectTimeout)):
            raise TransientError(f"cannot connect: {type(error).__name__}")
        if isinstance(error, RequestTransmissionFailed):
            raise TransientError(_reason(_inner_failures(error), "request not sent"))
        if isinstance(error, (ResponseNeverReceived, ResponseFailed)):
            raise TransientError(_reason(_inner_failures(error), "no response"), possible_duplicate=True)
        return failure

    def _judge(self, result) -> SendResult:
        response, content, truncated = result
        text = content.decode("utf-8", "replace")
        if truncated:
            text += f"\n[response truncated at {MAX_RESPONSE} bytes]"
        code = response.code
        if 200 <= code < 300:
            return SendResult(text)
        if code in (408, 429) or code >= 500:
            raise TransientError(f"HTTP {code}", text, retry_after=retry_after(response.headers))
        if 300 <= code < 400:
            raise PermanentError(f"HTTP {code} (redirects are not followed)", text)
        raise PermanentError(f"HTTP {code}", text)

    # -- connections -----------------------------------------------------------------------
    def agent(self) -> Agent:
        """Built on first use: ``switchboard check`` constructs connectors without a reactor."""
        if self._agent is None:
            self._pool = HTTPConnectionPool(self.reactor, persistent=True)
            self._pool.retryAutomatically = False
            self._pool._factory = _QuietClientFactory   # (private) no "Starting factory" line per connection
            self._agent = Agent(self.reactor, contextFactory=TlsPolicy(self.tls),
                                connectTimeout=self.timeout, pool=self._pool)
        return self._agent

    def close(self) -> defer.Deferred:
        """Close pooled connections; bounded, since a TLS peer may never answer our close_notify."""
        pool, self._pool, self._agent = self._pool, None, None
        if pool is None:
            return defer.succeed(None)
        done = defer.Deferred()
        timer = self.reactor.callLater(CLOSE_TIMEOUT, lambda: done.called or done.callback(None))

        def closed(_):
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        pool.closeCachedConnections().addBoth(closed)
        return done


@hookimpl
def register_destinations():
    return [HttpDestination]
