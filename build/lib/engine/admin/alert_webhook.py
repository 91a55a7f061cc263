"""The built-in alert plugin: POST each alert as JSON to ``[alerts] webhook_url``.

Registered like any plugin (``engine.plugins.BUILTIN_PLUGINS``) through the ``alert`` hook; it
does nothing while ``webhook_url`` is empty.  The body is ``Alert.as_dict()``: kind, state,
channel, destination, since, at, detail, count, message ids and a one-line ``text`` (the key chat
webhooks display) -- ids and reasons, never message content.  ``webhook_headers`` go with it
(e.g. an Authorization header), and ``webhook_timeout`` bounds the whole exchange.

One attempt per alert: a repeat comes with ``repeat_after`` while the condition lasts, and a
webhook that is down must not build a queue of its own inside the engine.  Failures are logged
with the webhook's host only (chat webhook URLs carry their secret in the path).
"""

from __future__ import annotations

import json
from io import BytesIO
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from engine.hookspecs import hookimpl

log = Logger(namespace="switchboard.alerts")


def post_alert(reactor, settings, alert):
    """POST one alert; the Deferred fires with the HTTP status (None after a failure, logged)."""
    url = settings.webhook_url
    host = urlsplit(url).hostname or "?"
    headers = Headers({b"Content-Type": [b"application/json"], b"User-Agent": [b"switchboard-alerts"]})
    for name, value in (settings.webhook_headers or {}).items():
        headers.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    body = FileBodyProducer(BytesIO(json.dumps(alert.as_dict()).encode("utf-8")))
    agent = Agent(reactor, connectTimeout=settings.webhook_timeout)
    d = agent.request(b"POST", url.encode("utf-8"), headers, body)
    d.addTimeout(settings.webhook_timeout, reactor)

    def answered(response):
        done = readBody(response)
        done.addCallback(lambda _body: response.code)
        return done

    def checked(code):
        if not 200 <= code < 300:
            log.warn("alert webhook at {host} answered HTTP {code} to a {kind} alert", host=host, code=code,
                     kind=alert.kind)
        return code

    def failed(failure):
        log.warn("alert webhook at {host} failed for a {kind} alert: {error}", host=host, kind=alert.kind,
                 error=type(failure.value).__name__)
        return None

    return d.addCallback(answered).addCallback(checked).addErrback(failed)


@hookimpl
def alert(alert, context):
    settings = context.config.alerts
    if settings.webhook_url:
        post_alert(context.reactor, settings, alert)
