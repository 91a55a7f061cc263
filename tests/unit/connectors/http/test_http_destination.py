"""The HTTP destination's pure parts: Retry-After parsing, the body's Content-Type, URL rendering."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.web.http_headers import Headers

from engine.connectors.http.destination import HttpDestination, body_type, retry_after
from engine.core.contracts import Delivery, PermanentError
from engine.core.templates import Templates

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def headers(value: str | None) -> Headers:
    return Headers({b"Retry-After": [value.encode()]} if value is not None else {})


@pytest.mark.parametrize("value, expected", [
    ("120", 120.0),
    ("0", 0.0),
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
    (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),   # a date in the past: now
    ("soon", None),
    ("-5", None),
    (None, None),
])
def test_retry_after(value, expected):
    assert retry_after(headers(value), now=NOW) == expected


def step(outbound):
    return SimpleNamespace(outbound=outbound)


def test_body_type_is_the_last_declared_outbound():
    channel = SimpleNamespace(inbound="hl7", transforms=(step("json"),))
    assert body_type(channel, SimpleNamespace(transforms=())) == "json"
    assert body_type(channel, SimpleNamespace(transforms=(step("xml"), step(None)))) == "xml"
    assert body_type(SimpleNamespace(inbound="csv", transforms=()), SimpleNamespace(transforms=())) == "csv"
    assert body_type(None, SimpleNamespace(transforms=())) == "text"


def destination(tmp_path: Path, url: str, **options) -> HttpDestination:
    config = SimpleNamespace(name="api", options={"url": url, **options}, transforms=())
    context = SimpleNamespace(channel_name="ch one", templates=Templates(tmp_path), engine=None)
    return HttpDestination(config, context, None)


def test_url_values_are_percent_encoded(tmp_path):
    dest = destination(tmp_path, "https://h.example/p/{{ meta.mrn }}?c={{ channel }}&id={{ id }}")
    url = dest.render_url(Delivery(1, 42, "", meta={"mrn": "A/B?x=1&y"}))
    assert url == "https://h.example/p/A%2FB%3Fx%3D1%26y?c=ch%20one&id=42"


def test_url_that_renders_to_no_url_is_permanent(tmp_path):
    dest = destination(tmp_path, "{{ meta.base }}/x")
    with pytest.raises(PermanentError):
        dest.render_url(Delivery(1, 42, "", meta={"base": "http://other.example"}))


def test_tls_with_plain_http_url_is_refused(tmp_path):
    with pytest.raises(ValueError, match="https"):
        destination(tmp_path, "http://h.example/x", tls={"verify": True})
