"""Batch files for the file destination: every message of a period appended to one file, which
appears under its real name only when the period is over.

Why an append-only part file, and not "rewrite the whole batch atomically on each append":
rewriting costs O(n) per message (O(n^2) per day: 20,000 placements of 300 bytes rewrite ~60 GB),
and, worse, the batch would be *visible* while it still grows, so an agency polling the directory
would take half a day's file and miss the rest.  Here the visible name appears once, complete.

Layout, per rendered file name NAME (``directory/.partial/`` keeps work in progress out of the
agency's directory listing; it is on the same file system, so closing is a rename, not a copy):
  ``.partial/NAME.part``     the data: batch_header (once, first line), then each body + "\\n"
  ``.partial/NAME.journal``  the commit log: ``switchboard-batch 1 <period>`` then one line
                             ``<delivery id> <end offset>`` per committed append

Append (one send): write the body at the committed end of ``.part`` (``pwrite``, so a torn tail
from a crash is overwritten), fsync it, then append the journal line and fsync that.  The journal
is what counts: at the next start a ``.part`` longer than its last journal offset is truncated
back (a crash mid-append), and a delivery id already in the journal is not appended again (a crash
after the append but before the queue recorded SENT re-sends it: at-least-once upstream, exactly
once in the file).  Two fsyncs per message: for daily agency files that is plenty fast.

Close (the period is over: a timer at the period's end, at start-up for a part of a past period,
or an append to the same NAME in a new period): hard-link ``.part`` to ``directory/NAME`` (atomic,
never overwrites: if NAME exists the file becomes ``NAME-1.ext``, ``NAME-2.ext``...), fsync the
directory, then remove the journal and the part.  A crash between the link and the removals is
recognised at the next close (the name is the same inode) and just finishes.  A file system
without hard links falls back to ``rename`` onto a name checked to be free.  A period in which
nothing was written produces no file.

Periods are the daemon's local time: ``daily`` -> ``20261125``, ``hourly`` -> ``2026112514``, a
duration (``"15m"``) -> the start of its slot counted from local midnight, ``20261125141500``.
A message belongs to the period in which it is *written* (a message retried past midnight goes
into the next day's file).  Several batch destinations may share a directory: every instance of
one directory shares one ``BatchFiles`` (one lock, one cache), in this process.
"""

from __future__ import annotations

import errno
import math
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from engine.core import units

PARTIAL = ".partial"
MAGIC = "switchboard-batch 1 "
_SHARED: dict[str, "BatchFiles"] = {}
_SHARED_LOCK = threading.Lock()


# -- periods -------------------------------------------------------------------------------------
def parse_period(value: str) -> str | float:
    """``daily`` / ``hourly`` as they are, else a duration in seconds (1s to 1d)."""
    if value in ("daily", "hourly"):
        return value
    seconds = units.parse_duration(value)
    if not 1 <= seconds <= 86400:
        raise ValueError('a batch period is "daily", "hourly" or a duration from 1s to 1d')
    return seconds


def period_of(spec: str | float, epoch: float) -> tuple[str, float]:
    """(label, epoch at which the period ends) for the local time ``epoch``."""
    local = datetime.fromtimestamp(epoch)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if spec == "daily":
        return midnight.strftime("%Y%m%d"), (midnight + timedelta(days=1)).timestamp()
    if spec == "hourly":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y%m%d%H"), (start + timedelta(hours=1)).timestamp()
    slot = math.floor((local - midnight).total_seconds() / spec)
    start = midnight + timedelta(seconds=slot * spec)
    end = min(start + timedelta(seconds=spec), midnight + timedelta(days=1))
    return start.strftime("%Y%m%d%H%M%S"), end.timestamp()


# -- the files -----------------------------------------------------------------------------------
@dataclass
class Part:
    label: str
    length: int = 0
    ids: set[int] = field(default_factory=set)


def shared(directory: Path) -> "BatchFiles":
    """The one ``BatchFiles`` of ``directory`` in this process."""
    key = str(Path(directory).resolve())
    with _SHARED_LOCK:
        files = _SHARED.get(key)
        if files is None:
            files = _SHARED[key] = BatchFiles(Path(key))
        return files


class BatchFiles:
    """The open batch files of one directory.  Blocking: call from a pool thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.partial = directory / PARTIAL
        self.lock = threading.Lock()
        self.parts: dict[str, Part] = {}

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.partial / f"{name}.part", self.partial / f"{name}.journal"

    # -- appending -------------------------------------------------------------------------
    def append(self, name: str, label: str, delivery_id: int, body: bytes, header: str = "") -> bool:
        """Append ``body`` to NAME's batch of period ``label``; False when it is there already."""
        with self.lock:
            part = self._load(name)
            if part is not None and part.label != label:
                self._close(name, part)
                part = None
            if part is None:
                part = self._create(name, label)
            if delivery_id in part.ids:
                return False
            chunk = (header.rstrip("\r\n").encode("utf-8") + b"\n") if header and part.length == 0 else b""
            chunk += body if body.endswith(b"\n") else body + b"\n"
            data, journal = self._paths(name)
            try:
                _pwrite_synced(data, chunk, part.length)
                end = part.length + len(chunk)
                _append_synced(journal, f"{delivery_id} {end}\n".encode())
            except BaseException:
                self.parts.pop(name, None)   # reload from disk next time: the journal decides
                raise
            part.length = end
            part.ids.add(delivery_id)
            return True

    def _create(self, name: str, label: str) -> Part:
        fresh = not self.partial.is_dir()
        self.partial.mkdir(parents=True, exist_ok=True)
        if fresh:
            _fsync_dir(self.directory)
        data, journal = self._paths(name)
        _write_synced(journal, f"{MAGIC}{label}\n".encode())
        _write_synced(data, b"")
        _fsync_dir(self.partial)
        part = self.parts[name] = Part(label)
        return part

    def _load(self, name: str) -> Part | None:
        """NAME's open part, read from its journal (repairing a crash) the first time."""
        part = self.parts.get(name)
        if part is not None:
            return part
        data, journal = self._paths(name)
        try:
            raw = journal.read_bytes()
        except FileNotFoundError:
            raw = b""
        lines = raw.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        if not complete or not complete[0].startswith(MAGIC.encode()):
            for path in (journal, data):   # never committed anything: nothing to keep
                _unlink(path)
            return None
        part = Part(complete[0][len(MAGIC):].decode("utf-8", "replace"))
        for line in complete[1:]:
            delivery_id, end = line.split(b" ")
            part.ids.add(int(delivery_id))
            part.length = int(end)
        if torn:   # a journal line cut by a crash: drop it so the next line starts clean
            os.truncate(journal, len(raw) - len(torn))
        size = data.stat().st_size if data.exists() else 0
        if size > part.length:   # an append that never reached the journal
            os.truncate(data, part.length)
        elif size < part.length:
            raise OSError(f"batch part {name} is shorter than its journal says; left in {PARTIAL}/")
        self.parts[name] = part
        return part

    # -- closing ---------------------------------------------------------------------------
    def close_except(self, label: str) -> list[str]:
        """Close every part whose period is not ``label``; the names the files got."""
        closed = []
        with self.lock:
            if not self.partial.is_dir():
                return closed
            for path in sorted(self.partial.iterdir()):
                if path.name.endswith(".journal"):
                    name = path.name[: -len(".journal")]
                elif path.name.endswith(".part") and not self._paths(path.name[: -len(".part")])[1].exists():
                    name = path.name[: -len(".part")]   # an orphan part: _load removes it
                else:
                    continue
                part = self._load(name)
                if part is not None and part.label != label:
                    final = self._close(name, part)
                    if final:
                        closed.append(final)
        return closed

    def _close(self, name: str, part: Part) -> str | None:
        """Give the part its visible name; None when it held nothing."""
        data, journal = self._paths(name)
        final = None
        if part.length > 0:
            final = _publish(data, self.directory, name)
            _fsync_dir(self.directory)
        _unlink(journal)
        _unlink(data)
        _fsync_dir(self.partial)
        self.parts.pop(name, None)
        return final


def numbered(name: str, number: int) -> str:
    """``placements-20261125.csv`` -> ``placements-20261125-1.csv``."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{number}.{ext}" if dot and stem else f"{name}-{number}"


def _publish(data: Path, directory: Path, name: str) -> str:
    number = 0
    while True:
        target = directory / (numbered(name, number) if number else name)
        try:
            os.link(data, target)
            return target.name
        except FileExistsError:
            if _same_file(data, target):   # linked before a crash: finish the close
                return target.name
        except OSError:   # no hard links here (some network file systems): rename onto a free name
            if not os.path.lexists(target):
                os.rename(data, target)
                return target.name
        number += 1


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- small synced file operations -------------------------------------------------------------------
def _pwrite_synced(path: Path, chunk: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_synced(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        _write_whole(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        _write_whole(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_whole(fd: int, content: bytes) -> None:
    """One short line: a short write (disk full) is an error, never a silently torn line."""
    if content and os.write(fd, content) != len(content):
        raise OSError(errno.ENOSPC, "short write")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
