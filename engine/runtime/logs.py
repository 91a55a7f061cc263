"""Logging for the daemon: one line per event, text or JSON, filtered by level, to stderr.

Log lines carry ids (channel, message id, control id), counts and PHI-free reasons; message
content and field values never reach a log call (a test sends a marker and greps every line).
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    jsonFileLogObserver,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn, "error": LogLevel.error}


def text_observer(stream):
    def observe(event):
        text = formatEvent(event)
        if event.get("log_failure") is not None:
            failure = event["log_failure"]
            text = f"{text}: {failure.getErrorMessage()}"
        level = event.get("log_level", LogLevel.info).name.upper()
        namespace = event.get("log_namespace", "")
        stream.write(f"{level:5} {namespace}: {text}\n")
        stream.flush()

    return observe


def start_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    stream = stream or sys.stderr
    observer = jsonFileLogObserver(stream) if fmt == "json" else text_observer(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS.get(level, LogLevel.info))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)
