"""Log lines (DESIGN §3.6): text starts with a UTC ISO-8601 time; JSON is one object with the ids."""

from __future__ import annotations

import io
import json
import re

from twisted.logger import Logger, LogLevel, LogPublisher

from engine.runtime.logs import json_line, observer_for, text_line, utc_timestamp


def event(**extra):
    return {"log_time": 1793534400.1234, "log_level": LogLevel.warn, "log_namespace": "switchboard.queue",
            "log_format": "{channel}/{destination}: message {id} attempt {n} failed", "channel": "c",
            "destination": "d", "id": 42, "n": 3, **extra}


def test_utc_timestamp_has_milliseconds_and_z():
    assert utc_timestamp(1793534400.1234) == "2026-11-01T12:00:00.123Z"
    assert utc_timestamp(1793534400.9996) == "2026-11-01T12:00:01.000Z"


def test_text_line():
    assert text_line(event()) == "2026-11-01T12:00:00.123Z WARN  switchboard.queue: c/d: message 42 attempt 3 failed\n"


def test_json_line_has_the_rendered_message_and_the_ids_only():
    record = json.loads(json_line(event(raw="MSH|secret", log_source=object())))
    assert record == {"time": "2026-11-01T12:00:00.123Z", "level": "warn", "logger": "switchboard.queue",
                      "message": "c/d: message 42 attempt 3 failed", "channel": "c", "message_id": 42,
                      "destination": "d"}


def test_a_real_logger_through_the_observer_writes_one_line_per_event():
    stream = io.StringIO()
    publisher = LogPublisher(observer_for("json", stream))
    log = Logger(namespace="switchboard.channel", observer=publisher)
    log.info("{channel}: message {id}\nstored", channel="a", id=7)
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("{channel}: failed", channel="a")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "a: message 7 stored" and first["message_id"] == 7
    assert second["level"] == "critical" and second["message"] == "a: failed: boom"
    text = io.StringIO()
    Logger(namespace="x", observer=LogPublisher(observer_for("text", text))).error("plain")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR x: plain\n", text.getvalue())
