"""The file source's blocking half: list the inbox, judge a file, read it, split it, move it.

Everything here touches the disk, so ``engine.connectors.file_source`` runs it in pool threads,
never on the reactor thread (an inbox on a network mount can stall a ``stat`` for seconds).
Nothing here logs; reasons returned are PHI-free (sizes, positions, segment names, never content)
because they are written to ``error/NAME.reason`` and to the log.

What is taken (RELIABILITY 31-33):
- Only names matching ``pattern`` that do not start with ``.``: dot files are uploads in progress
  by convention (``.NAME.tmp`` then a rename), and our own temp files start with a dot too.
- A symbolic link is never followed: the link itself is moved to ``error/`` (the target is never
  read, so a link cannot make us read ``/etc/shadow`` or a file outside the inbox).  A FIFO,
  socket or device is moved to ``error/`` as well (opening a FIFO would block a thread forever).
  The read itself opens with ``O_NOFOLLOW | O_NONBLOCK`` and re-checks with ``fstat``, so a file
  swapped for a link or a FIFO between the listing and the read is refused the same way.
- A name that is not valid UTF-8 (Linux hands it to Python with surrogate escapes), holds control
  characters, or looks like a path (``/``, ``\\``, ``.``, ``..``) is refused: moved to ``error/``
  under its own bytes, shown escaped in logs.  Names come from one directory listing, so they are
  single components already; the check is a second line of defence, not the only one.
- A file over ``max_file_size`` is refused without being read; an empty file (or one holding only
  blank space, or a CSV header without rows) is refused as "holds no message".
- A file that changed while it was read (size or mtime) is not used: the source watches it again.

Moving never overwrites and never deletes a refused file: ``done/NAME`` or ``error/NAME`` when
free, else ``NAME.1``, ``NAME.2``...; the reason goes to ``error/<final name>.reason``, written
atomically before the file is moved, so an ``error/`` file always has its reason beside it.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from engine.connectors.file.destination import write_atomically
from engine.hl7.acceptance import check_hl7, is_batch
from engine.hl7.encoding import normalize_segments
from engine.hl7.msh import peek_msh
from engine.hl7.batch import split_batch
from engine.core.message import MessageParseError, parse_inbound
from engine.hl7.charset import decode_frame
from engine.x12 import intake as x12_intake

DONE, ERROR = "done", "error"
ANSWER_SUFFIX = ".999"   # the X12 acknowledgment written beside a file (a TA1 alone keeps the name)
HL7_STARTS = ("MSH", "FHS", "BHS")


@dataclass(frozen=True)
class Entry:
    """One inbox entry as ``lstat`` saw it.  ``kind``: file | link | other."""

    name: str
    kind: str
    size: int
    mtime_ns: int

    @property
    def signature(self) -> tuple[str, int, int]:
        return self.kind, self.size, self.mtime_ns


@dataclass
class Prepared:
    """What reading one file gave.  ``outcome``: messages | refused | seen | changed | gone."""

    outcome: str
    messages: list = field(default_factory=list)  # [(text, msh or None)]
    sha256: str = ""
    reason: str = ""
    original: bytes | None = None  # the file's bytes when decoding replaced invalid ones (RELIABILITY 17)
    answer: str = ""               # X12: the 999s/TA1s answering the file's interchanges
    partial: list = field(default_factory=list)  # X12: why the sets not taken were refused (PHI-free)


class Refused(Exception):
    """The file cannot be taken; ``str()`` is the PHI-free reason for ``error/NAME.reason``."""


class Changed(Exception):
    """The file changed while it was read: not stable after all."""


# -- names ---------------------------------------------------------------------------------------
def shown(name: str) -> str:
    """A name safe to log: control characters and undecodable bytes as ``\\xNN`` escapes."""
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:      # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 32 or code == 127 or not char.isprintable():
            out.append(f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def name_problem(name: str) -> str | None:
    """Why a (listed, pattern-matching) name is refused, or None when it is fine."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8"
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return "the file name looks like a path (path traversal is refused)"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "the file name holds control characters"
    return None


def wanted(name: str, pattern: str) -> bool:
    return not name.startswith(".") and fnmatch.fnmatchcase(name, pattern)


# -- listing -------------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    return "link" if stat.S_ISLNK(mode) else "other"


def ensure_inbox(directory: Path) -> None:
    """The inbox must exist (a misspelt path is an error, not a new empty directory); done/ and
    error/ are made when missing."""
    if not directory.is_dir():
        raise FileNotFoundError(f"the inbox directory {directory} does not exist")
    for sub in (DONE, ERROR):
        (directory / sub).mkdir(exist_ok=True)


def scan(directory: Path, pattern: str) -> list[Entry]:
    """Every wanted entry except directories, oldest first (arrival order, roughly)."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not wanted(entry.name, pattern):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                found.append(Entry(entry.name, _kind(info.st_mode), info.st_size, info.st_mtime_ns))
    return sorted(found, key=lambda e: (e.mtime_ns, e.name))


def stat_entry(directory: Path, name: str) -> Entry | None:
    """The entry now, or None when it is gone or is a directory."""
    try:
        info = os.lstat(directory / name)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return None
    return Entry(name, _kind(info.st_mode), info.st_size, info.st_mtime_ns)


# -- reading -------------------------------------------------------------------------------------
def read_stable(directory: Path, entry: Entry, max_size: int) -> bytes:
    """The file's bytes, provided it is still the regular file ``entry`` describes."""
    try:
        fd = os.open(directory / entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Refused("the file is a symbolic link (links are not followed)") from None
        raise
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise Refused("not a regular file")
        if (before.st_size, before.st_mtime_ns) != (entry.size, entry.mtime_ns):
            raise Changed()
        if before.st_size > max_size:
            raise Refused(f"the file is {before.st_size} bytes, over max_file_size ({max_size} bytes)")
        chunks, total = [], 0
        while total <= max_size:
            chunk = os.read(fd, min(1 << 20, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        after = os.fstat(fd)
        if total != after.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise Changed()
        return b"".join(chunks)
    finally:
        os.close(fd)


def _batch_charset(data: bytes) -> str:
    """MSH-18 of the first message of an FHS/BHS file (decode_frame looks at a leading MSH only)."""
    for marker in (b"\rMSH", b"\nMSH"):
        at = data.find(marker)
        if at != -1:
            line = data[at + 1:].split(b"\r", 1)[0].split(b"\n", 1)[0]
            msh = peek_msh(line.decode("latin-1"))
            return msh.charset if msh is not None else ""
    return ""


def decode_file(data: bytes, inbound: str) -> tuple[str, bytes | None]:
    """``(text, original)``.  HL7 as the MLLP source decodes a frame (BOM, MSH-18, else UTF-8; bad
    bytes replaced and then ``original`` is ``data``, to be kept with the file's first message,
    RELIABILITY 17); every other format must be UTF-8 (a BOM is dropped), so nothing is lost."""
    if inbound == "hl7":
        hint = _batch_charset(data) if data[:3] in (b"FHS", b"BHS") else ""
        return decode_frame(data, hint)
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as error:
        raise Refused(f"the file is not UTF-8 text (invalid byte at offset {error.start})") from None


def split_messages(text: str, split: str, inbound: str) -> tuple[list[tuple[str, object]], str | None]:
    """([(message text, msh or None)], None), or ([], PHI-free reason the whole file is refused).

    HL7: the file is split at each MSH (a message cannot hold a second MSH), FHS/BHS/BTS/FTS
    envelopes are accepted with ``split = "hl7-batch"`` and the BTS-1 counts checked.  ``lines``:
    one message per non-empty line; for csv the first line is the header, kept on each row's
    message ("header\\nrow").  ``none`` (other formats): the file is one message.  Every message is
    checked before any is stored (HL7 as the MLLP source checks a frame, other formats parsed):
    one bad message refuses the whole file, so a refused file never leaves half its messages stored.
    """
    if text[:1] == "\ufeff":
        text = text[1:]
    if split == "lines":
        lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if inbound == "csv":
            if len(lines) == 1:
                return [], "the file holds a CSV header and no rows"
            parts = [f"{lines[0]}\n{line}" for line in lines[1:]]
        else:
            parts = lines
    elif inbound == "hl7":
        body = normalize_segments(text)
        if not body.strip():
            return [], "the file holds no message"
        if body[:3] not in HL7_STARTS:
            return [], "not HL7: the file does not begin with an MSH, FHS or BHS segment"
        if split != "hl7-batch" and is_batch(body):
            return [], 'the file is an HL7 batch (FHS/BHS); set split = "hl7-batch" to take batches'
        try:
            parts, declared = split_batch(body)
        except ValueError as error:
            return [], str(error)
        if declared is not None and declared != len(parts):
            return [], f"batch declares {declared} messages (BTS-1) but holds {len(parts)}"
    else:
        parts = [text] if text.strip() else []
    if not parts:
        return [], "the file holds no message"
    return _checked(parts, inbound)


def _checked(parts: list[str], inbound: str) -> tuple[list[tuple[str, object]], str | None]:
    messages: list[tuple[str, object]] = []
    for number, part in enumerate(parts, start=1):
        if inbound == "hl7":
            part = normalize_segments(part)
            msh, problem = check_hl7(part)
            if problem is not None:
                return [], f"message {number} of {len(parts)}: {problem}"
            messages.append((part, msh))
            continue
        try:
            parse_inbound(part, inbound)
        except MessageParseError as error:
            return [], f"message {number} of {len(parts)}: {error}"
        messages.append((part, None))
    return messages, None


def prepare(directory: Path, entry: Entry, *, split: str, inbound: str, max_size: int,
            seen: Callable[[str], bool]) -> Prepared:
    """Judge, read, hash and split one stable file.  ``seen(sha256)``: already processed?"""
    problem = name_problem(entry.name)
    if problem is None and entry.kind == "link":
        problem = "the file is a symbolic link (links are not followed)"
    elif problem is None and entry.kind != "file":
        problem = "not a regular file"
    elif problem is None and entry.size > max_size:
        problem = f"the file is {entry.size} bytes, over max_file_size ({max_size} bytes)"
    elif problem is None and entry.size == 0:
        problem = "the file is empty"
    if problem is not None:
        return Prepared("refused", reason=problem)
    try:
        data = read_stable(directory, entry, max_size)
    except FileNotFoundError:
        return Prepared("gone")
    except Changed:
        return Prepared("changed")
    except Refused as error:
        return Prepared("refused", reason=str(error))
    digest = hashlib.sha256(data).hexdigest()
    if seen(digest):
        # an X12 sender that sends the same interchange again still expects its answer
        answer = x12_intake.take(data, now=datetime.now()).answer if inbound == "x12" else ""
        return Prepared("seen", sha256=digest, answer=answer)
    if inbound == "x12":
        return prepare_x12(data, digest, claims=split == "claims")
    try:
        text, original = decode_file(data, inbound)
    except Refused as error:
        return Prepared("refused", sha256=digest, reason=str(error))
    messages, problem = split_messages(text, split, inbound)
    if problem is not None:
        return Prepared("refused", sha256=digest, reason=problem)
    return Prepared("messages", messages=messages, sha256=digest, original=original)


def prepare_x12(data: bytes, digest: str, *, claims: bool, now: datetime | None = None) -> Prepared:
    """X12 bytes as ``engine.x12.intake`` takes them: the accepted transaction sets (or 835 claims)
    as messages, the 999/TA1 answer, and the file refused only when nothing in it was accepted.
    Bytes are read as Latin-1 (one character per byte, so a non-ASCII byte is reported where it
    is instead of failing to decode); the sets taken are ASCII, as the envelope check requires."""
    intake = x12_intake.take(data, now=now or datetime.now(), claims=claims)
    if intake.problem is not None:
        return Prepared("refused", sha256=digest, reason=intake.problem, answer=intake.answer)
    return Prepared("messages", messages=[(t.text, None) for t in intake.messages], sha256=digest,
                    answer=intake.answer, partial=intake.refused)


# -- moving --------------------------------------------------------------------------------------
def free_name(folder: Path, name: str, *, with_reason: bool = False, with_answer: bool = False) -> str:
    """``name``, or ``name.1``, ``name.2``... : the first that neither exists nor has a reason
    file (``with_reason``) or an X12 answer (``with_answer``) beside it."""
    candidate, number = name, 0
    while (os.path.lexists(folder / candidate)
           or (with_reason and os.path.lexists(folder / f"{candidate}.reason"))
           or (with_answer and os.path.lexists(folder / f"{candidate}{ANSWER_SUFFIX}"))):
        number += 1
        candidate = f"{name}.{number}"
    return candidate


def _write_answer(folder: Path, final: str, answer: str | None) -> None:
    """The X12 999/TA1 beside the file, written atomically before the file is moved there."""
    if answer:
        write_atomically(folder, f"{final}{ANSWER_SUFFIX}", answer.encode("latin-1", "replace"))


def move_done(directory: Path, name: str, answer: str | None = None) -> str:
    """Move a processed file to ``done/`` (its X12 ``answer`` written first as ``done/NAME.999``);
    returns the name it got there."""
    folder = directory / DONE
    folder.mkdir(exist_ok=True)
    final = free_name(folder, name, with_answer=bool(answer))
    _write_answer(folder, final, answer)
    os.rename(directory / name, folder / final)
    return final


def move_error(directory: Path, name: str, reason: str, sha256: str = "", answer: str | None = None) -> str:
    """Write ``error/<final>.reason`` (atomically) and the X12 ``answer`` as ``error/<final>.999``,
    then move the file beside them."""
    folder = directory / ERROR
    folder.mkdir(exist_ok=True)
    final = free_name(folder, name, with_reason=True, with_answer=bool(answer))
    lines = [reason] + ([f"sha256: {sha256}"] if sha256 else [])
    write_atomically(folder, f"{final}.reason", ("\n".join(lines) + "\n").encode("utf-8"))
    _write_answer(folder, final, answer)
    os.rename(directory / name, folder / final)
    return final


def delete(directory: Path, name: str, answer: str | None = None) -> str:
    """Delete a processed file; its X12 ``answer`` still goes to ``done/NAME.999``."""
    if answer:
        folder = directory / DONE
        folder.mkdir(exist_ok=True)
        _write_answer(folder, free_name(folder, name, with_answer=True), answer)
    os.unlink(directory / name)
    return name
