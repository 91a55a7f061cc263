"""The file destination (``[[destination]] type = "file"``): one file per message, written atomically.

Write to a temp file in the same directory, fsync it, rename it into place, fsync the directory
(RELIABILITY promises), so a reader never sees half a file and a crash never leaves one.  The
filename is a template (``{{ meta.account }}-{{ id }}.json``) rendered per message; a rendered
name that would leave the directory is refused.  The disk work runs in a thread: the reactor
never waits for an fsync.

With ``batch`` ("daily", "hourly" or a duration such as "15m") the destination appends every
message of a period to one file instead (``filename`` must use ``{{ period }}``), with
``batch_header`` as its first line; the file appears under its name only once the period is over.
How that is kept safe across crashes is ``engine.connectors.file_batch``'s docstring.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from twisted.internet import defer, threads
from twisted.logger import Logger

from engine.connectors.file import batch as file_batch
from engine.connectors.file.naming import FilenameTemplate
from engine.core.clock import wall_time
from engine.core.contracts import PermanentError, SendResult, TransientError
from engine.hl7.encoding import with_final_cr
from engine.hookspecs import hookimpl
from engine.config.schema import OptionSpec, batch_period

log = Logger(namespace="switchboard.file")

# Bytes a name needs beside it for the temp file: ".NAME.tmp-PID" (13 with a 7-digit pid), and a
# batch's ".partial/NAME.journal" (8) or a numbered "NAME-12.ext" when the name is taken.
TEMP_NAME_ROOM = 16


def write_atomically(directory: Path, filename: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    temp = directory / f".{filename}.tmp-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data) if len(data) < 1 << 20 else _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FileDestination:
    type_name = "file"
    option_schema = {
        "directory": OptionSpec("path", required=True),
        "filename": OptionSpec("str", "{{ id }}.txt"),
        "batch": OptionSpec("str", check=batch_period),     # daily | hourly | "15m": one file per period
        "batch_header": OptionSpec("str", ""),               # first line of each batch file
    }

    def __init__(self, config, context, reactor) -> None:
        options = config.options
        self.directory = Path(options["directory"])
        source = options.get("filename") or "{{ id }}.txt"
        self.filename = FilenameTemplate(context, source, f"destination[{config.name}].filename",
                                         reserve=TEMP_NAME_ROOM, directory=self.directory)
        self.channel = context.channel_name
        self.reactor = reactor
        self.batch = None
        self.timer = None
        self.closing: defer.Deferred | None = None
        self.stopped = False
        if options.get("batch"):
            self._setup_batch(options, source, context.templates)
        elif options.get("batch_header"):
            raise ValueError("batch_header is only used with batch (one file per period)")

    def _setup_batch(self, options, source: str, templates) -> None:
        from jinja2 import meta

        self.period = file_batch.parse_period(options["batch"])
        if "period" not in meta.find_undeclared_variables(templates.environment.parse(source)):
            raise ValueError('with batch, filename must use {{ period }} (e.g. "placements-{{ period }}.csv"): '
                             "each period needs a file name of its own")
        self.header = options.get("batch_header") or ""
        self.batch = file_batch.shared(self.directory)
        if self.reactor is not None:   # `switchboard check` builds connectors without a reactor
            self.timer = self.reactor.callLater(0, self._tick)

    def _name(self, delivery, **extra) -> str:
        return self.filename.render(delivery, **extra)

    def _write(self, delivery, body: bytes) -> Path:
        return write_atomically(self.directory, self._name(delivery), body)

    def send(self, delivery):
        body = with_final_cr(delivery.body).encode("utf-8")   # HL7: the last segment ends with CR (§3.5)
        if self.batch is not None:
            label, _end = file_batch.period_of(self.period, self._now())
            name = self._name(delivery, period=label)
            d = threads.deferToThread(self.batch.append, name, label, delivery.id, body, self.header)
            d.addCallback(lambda added: SendResult(
                f"{'appended to' if added else 'already in'} batch {name} (period {label})"))
        else:
            if self.filename.needs_message:   # the name reads the stored message: in the thread too
                d = threads.deferToThread(self._write, delivery, body)
            else:
                d = threads.deferToThread(write_atomically, self.directory, self._name(delivery), body)
            d.addCallback(lambda path: SendResult(f"written {path.name}"))
        return d.addErrback(_write_failed)

    def _now(self) -> float:
        return wall_time(self.reactor) if self.reactor is not None else time.time()

    def _tick(self) -> None:
        """Close the batch files of past periods, then come back when this period ends."""
        self.timer = None
        label, end = file_batch.period_of(self.period, self._now())
        self.closing = threads.deferToThread(self.batch.close_except, label)
        self.closing.addCallbacks(self._closed, self._close_failed)
        self.closing.addBoth(self._next_tick, end)

    def _closed(self, names: list[str]) -> None:
        for name in names:
            log.info("batch file {name} closed in {directory}", name=name, directory=str(self.directory))

    def _close_failed(self, failure) -> None:
        log.error("batch files in {directory} could not be closed: {error}", directory=str(self.directory),
                  error=getattr(failure.value, "strerror", None) or type(failure.value).__name__)

    def _next_tick(self, _result, end: float) -> None:
        self.closing = None
        if self.reactor is not None and self.batch is not None and not self.stopped:
            self.timer = self.reactor.callLater(max(end - self._now() + 0.01, 0.05), self._tick)

    def close(self):
        """Stop the period timer (open batches stay in .partial/ and are resumed or closed at the next
        start); wait for a close in progress."""
        self.stopped = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        return self.closing


def _write_failed(failure):
    """A write the file system refused for the name itself (too long for a file system with a
    smaller NAME_MAX than the folder reported, a byte sequence it cannot store) is permanent: the
    same name fails again.  Anything else (disk full, permissions, I/O) is retried."""
    error = failure.value
    if isinstance(error, OSError) and error.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
        raise PermanentError(f"write failed: {error.strerror}")
    if isinstance(error, OSError):
        raise TransientError(f"write failed: {error.strerror or type(error).__name__}")
    return failure


@hookimpl
def register_destinations():
    return [FileDestination]
