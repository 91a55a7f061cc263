"""Logging for the daemon: one line per event, text or JSON, filtered by level, to stderr (DESIGN §3.6).

``text``: ``2026-11-01T12:00:00.123Z INFO  switchboard.queue: message 42 ...`` -- the UTC time first
(ISO 8601, milliseconds), the level padded to five characters, the logger (Twisted's namespace),
the rendered text.  ``json``: one JSON object per line and no other bytes: ``time``, ``level``,
``logger``, ``message`` (the rendered text) and the event's ids where they apply (``channel``,
``message_id``, ``destination``).  Nothing else from the event is copied: an event's other fields
may hold anything, and log lines carry ids, counts and PHI-free reasons only -- message content
and field values never reach a log call (a test sends a marker and greps every line).
"""

from __future__ import annotations

import json
import sys
import time

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn, "error": LogLevel.error}
LEVEL_NAMES = {LogLevel.debug: "DEBUG", LogLevel.info: "INFO", LogLevel.warn: "WARN", LogLevel.error: "ERROR",
               LogLevel.critical: "CRITICAL"}


def utc_timestamp(seconds: float | None = None) -> str:
    """``2026-11-01T12:00:00.123Z``."""
    seconds = time.time() if seconds is None else seconds
    whole = int(seconds)
    millis = int(round((seconds - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def rendered(event: dict) -> str:
    """The event's text, with a logged failure's one-line error (never its traceback) appended."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}: {failure.getErrorMessage() or type(failure.value).__name__}"
    return text.replace("\r", " ").replace("\n", " ")   # one line per event, whatever the text held


def level_name(event: dict) -> str:
    return LEVEL_NAMES.get(event.get("log_level", LogLevel.info), "INFO")


def event_ids(event: dict) -> dict:
    """The ids an event carries: ``channel``, ``message_id`` (logged as ``id=`` or ``message_id=``),
    ``destination``.  Only strings and integers are taken: ids, never objects."""
    ids = {}
    for key, sources in (("channel", ("channel",)), ("message_id", ("message_id", "id")),
                         ("destination", ("destination",))):
        for source in sources:
            value = event.get(source)
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                continue
            ids[key] = value
            break
    return ids


def logger_name(event: dict) -> str:
    """Twisted's namespace; ``twisted`` for its legacy ``log.msg`` lines (namespace ``log_legacy``)."""
    namespace = event.get("log_namespace", "") or "-"
    return "twisted" if namespace == "log_legacy" else namespace


def text_line(event: dict) -> str:
    return f"{utc_timestamp(event.get('log_time'))} {level_name(event):5} {logger_name(event)}: {rendered(event)}\n"


def json_line(event: dict) -> str:
    record = {"time": utc_timestamp(event.get("log_time")), "level": level_name(event).lower(),
              "logger": logger_name(event), "message": rendered(event), **event_ids(event)}
    return json.dumps(record, ensure_ascii=False) + "\n"


def observer_for(fmt: str, stream):
    format_line = json_line if fmt == "json" else text_line

    def observe(event):
        try:
            line = format_line(event)
        except Exception as error:  # noqa: BLE001 - a log call with a bad format must not lose the line
            line = format_line({**{k: event.get(k) for k in ("log_time", "log_level", "log_namespace")},
                                "log_format": f"(unformattable log event: {type(error).__name__})"})
        stream.write(line)
        stream.flush()

    return observe


def text_observer(stream):
    return observer_for("text", stream)


def json_observer(stream):
    return observer_for("json", stream)


def start_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    stream = stream or sys.stderr
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS.get(level, LogLevel.info))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer_for(fmt, stream), [predicate])],
                                     redirectStandardIO=False)
