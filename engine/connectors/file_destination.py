"""The file destination (``[[destination]] type = "file"``): one file per message, written atomically.

Write to a temp file in the same directory, fsync it, rename it into place, fsync the directory
(RELIABILITY promises), so a reader never sees half a file and a crash never leaves one.  The
filename is a template (``{{ meta.account }}-{{ id }}.json``) rendered per message; a rendered
name that would leave the directory is refused.  The disk work runs in a thread: the reactor
never waits for an fsync.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import threads

from engine.delivery import PermanentError, SendResult, TransientError
from engine.hookspecs import hookimpl


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


def safe_filename(name: str) -> str:
    """Refuse names that could leave the directory or hide (path traversal, NUL, dot files)."""
    name = name.strip()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise PermanentError("the rendered filename is empty or not a plain file name")
    return name


class FileDestination:
    type_name = "file"
    option_schema = None  # built in: engine.config_schema

    def __init__(self, config, context, reactor) -> None:
        self.directory = Path(config.options["directory"])
        self.filename = context.templates.from_string(config.options.get("filename") or "{{ id }}.txt",
                                                      f"destination[{config.name}].filename")
        self.channel = context.channel_name

    def send(self, delivery):
        from engine.templates import TemplateError

        try:
            name = safe_filename(self.filename.render({
                "id": delivery.message_id, "meta": delivery.meta or {}, "channel": self.channel,
                "delivery": delivery.id,
            }))
        except TemplateError as error:
            raise PermanentError(f"filename template: {error}") from None
        d = threads.deferToThread(write_atomically, self.directory, name, delivery.body.encode("utf-8"))

        def failed(failure):
            error = failure.value
            if isinstance(error, OSError):
                raise TransientError(f"write failed: {error.strerror or type(error).__name__}")
            return failure

        return d.addCallbacks(lambda path: SendResult(f"written {path.name}"), failed)


@hookimpl
def register_destinations():
    return [FileDestination]
