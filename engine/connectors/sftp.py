"""SFTP source and destination, shipped as a built-in plugin (the same hooks a third party uses).

Source (``[source] type = "sftp"``): every ``poll_interval``, list ``remote_path``, take the files
matching ``pattern`` (sorted by name; dot files are skipped: they are uploads in progress by
convention) whose size and mtime held still for ``settle``, download each into memory (at most
``max_file_size``), split it into messages (``split``), store them, and only then move the remote
file to ``remote_path/done/`` (or delete it).  A file that cannot be read as messages goes to
``remote_path/error/`` with a ``NAME.reason`` file beside it.  When the store refuses a message
or the link drops, the file stays where it is and is read again at the next poll; each message is
stored with an idempotency key derived from the file (host, path, name, mtime, content hash), so a
re-read never stores a message twice, whatever the channel's ``dedupe`` window.  Files stored but
not yet moved are remembered in memory so the next poll only retries the move.

Destination (``[[destination]] type = "sftp"``): upload to ``remote_path/.NAME<temp_suffix>``, then
``posix-rename@openssh.com`` to NAME (atomic on OpenSSH, and it replaces an existing NAME), so a
reader never sees half a file.  Permission denied or no such directory: PermanentError (the
message goes ERROR).  Connection trouble, timeouts, host-key or authentication failures and any
other server failure: TransientError (retried, holding the line); a failure during the rename is a
possible duplicate.  paramiko has no ``fsync@openssh.com`` call, so durability on the remote disk
is the server's (OpenSSH closes the file before it answers the rename).

Both sides keep one connection open between polls/sends (``engine.connectors.sftp_session``).
Logs carry file names and PHI-free reasons, never content.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import stat

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.connectors.file_destination import safe_filename
from engine.connectors.sftp_session import SftpSession, describe, is_refusal, is_server_answer
from engine.delivery import PermanentError, SendResult, TransientError
from engine.hl7_ingest import check_hl7
from engine.hl7v2 import normalize_segments, split_batch
from engine.hookspecs import hookimpl

log = Logger(namespace="switchboard.sftp")

DONE, ERROR = "done", "error"


class StoreRefused(Exception):
    """The channel did not take a message: leave the file for the next poll."""


# -- splitting a file into messages ----------------------------------------------------------
def split_messages(text: str, split: str, inbound: str) -> tuple[list[tuple[str, object]], str | None]:
    """([(message text, msh or None)], None) or ([], PHI-free reason the file is refused).

    ``none``: the file is one message; ``hl7-batch``: FHS/BHS batches or concatenated messages;
    ``lines``: each non-empty line is one (for csv the first line is the header, kept on each).
    HL7 messages are checked as the MLLP source checks a frame; one bad message refuses the file.
    """
    if text[:1] == "\ufeff":
        text = text[1:]
    if split == "hl7-batch":
        try:
            parts, declared = split_batch(text)
        except ValueError as error:
            return [], str(error)
        if declared is not None and declared != len(parts):
            return [], f"batch declares {declared} messages (BTS-1) but holds {len(parts)}"
    elif split == "lines":
        lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
        if inbound == "csv":
            parts = [f"{lines[0]}\n{line}" for line in lines[1:]] if len(lines) > 1 else []
        else:
            parts = lines
    else:
        parts = [text] if text.strip() else []
    if not parts:
        return [], "the file holds no message"
    if inbound != "hl7":
        return [(part, None) for part in parts], None
    messages = []
    for number, part in enumerate(parts, start=1):
        part = normalize_segments(part)
        msh, problem = check_hl7(part)
        if problem is not None:
            return [], f"message {number}: {problem}"
        messages.append((part, msh))
    return messages, None


# -- blocking SFTP steps (run in a pool thread by SftpSession) -------------------------------
def list_files(sftp, directory: str, pattern: str) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of the regular, non-dot files matching ``pattern``, sorted by name."""
    found = []
    for entry in sftp.listdir_attr(directory):
        name = entry.filename
        if name.startswith(".") or not stat.S_ISREG(entry.st_mode or 0):
            continue
        if fnmatch.fnmatchcase(name, pattern):
            found.append((name, entry.st_size or 0, int(entry.st_mtime or 0)))
    return sorted(found)


def download(sftp, path: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than ``limit`` bytes."""
    with sftp.open(path, "rb") as remote:
        remote.prefetch()
        data = remote.read(limit + 1)
    return None if len(data) > limit else data


def ensure_dir(sftp, path: str) -> None:
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            return
    except FileNotFoundError:
        pass
    try:
        sftp.mkdir(path)
    except OSError:
        if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):  # raced with another poller: fine if a dir
            raise


def move_into(sftp, directory: str, name: str, subdir: str, reason: str | None = None) -> None:
    target = posixpath.join(directory, subdir)
    ensure_dir(sftp, target)
    if reason is not None:
        with sftp.open(posixpath.join(target, f"{name}.reason"), "wb") as remote:
            remote.write((reason + "\n").encode("utf-8"))
    sftp.posix_rename(posixpath.join(directory, name), posixpath.join(target, name))


def remove(sftp, directory: str, name: str) -> None:
    sftp.remove(posixpath.join(directory, name))


def upload(sftp, directory: str, name: str, suffix: str, data: bytes) -> str:
    """Write ``.NAME<suffix>`` then rename it to NAME; on failure say at which stage (``stage``)."""
    temp, final = posixpath.join(directory, f".{name}{suffix}"), posixpath.join(directory, name)
    try:
        with sftp.open(temp, "wb") as remote:
            remote.set_pipelined(True)
            remote.write(data)
    except Exception as error:
        error.sftp_stage = "upload"
        if is_server_answer(error):  # the link is fine: do not leave a half-written temp behind
            try:
                sftp.remove(temp)
            except Exception:  # noqa: BLE001 - best effort; the next attempt truncates it anyway
                pass
        raise
    try:
        sftp.posix_rename(temp, final)
    except Exception as error:
        error.sftp_stage = "rename"
        raise
    return name


# -- the source ------------------------------------------------------------------------------
class SftpSource:
    type_name = "sftp"
    option_schema = None  # built in: engine.config_schema

    def __init__(self, channel_config, sink, reactor) -> None:
        self.options = options = channel_config.source.options
        self.channel = channel_config.name
        self.inbound = channel_config.inbound
        self.sink = sink
        self.reactor = reactor
        self.remote = options["remote_path"]
        self.session = SftpSession(options, reactor, label=f"{self.channel}/source")
        self.running = False
        self.next_poll = None           # the DelayedCall of the next poll
        self.polling: defer.Deferred | None = None
        self.settling: defer.Deferred | None = None
        self.stored: set[tuple[str, int, int]] = set()   # stored, remote move still to do
        self.last_problem: str | None = None

    def start(self) -> None:
        """Begin polling; a remote that is down is not a start failure (each poll retries)."""
        self.running = True
        self.next_poll = self.reactor.callLater(0, self._tick)

    def _tick(self) -> None:
        self.next_poll = None
        self.polling = self.poll()
        self.polling.addBoth(self._after_poll)

    def _after_poll(self, _result) -> None:
        self.polling = None
        if self.running:
            self.next_poll = self.reactor.callLater(self.options["poll_interval"], self._tick)

    @defer.inlineCallbacks
    def stop(self):
        """Stop polling; a file being handled is finished first, then the connection closes."""
        self.running = False
        if self.next_poll is not None and self.next_poll.active():
            self.next_poll.cancel()
        if self.settling is not None:
            self.settling.cancel()
        if self.polling is not None:
            finished = defer.Deferred()
            self.polling.addBoth(_relay, finished)
            yield finished
        yield self.session.close()

    @defer.inlineCallbacks
    def poll(self):
        """One pass over the remote directory.  Never fails: problems are logged once per change."""
        try:
            files = yield self.session.run(list_files, self.remote, self.options["pattern"])
            self.stored &= set(files)   # forget files someone else removed meanwhile
            settle = self.options.get("settle") or 0
            if files and settle > 0:
                self.settling = task.deferLater(self.reactor, settle, lambda: None)
                yield self.settling
                self.settling = None
                again = yield self.session.run(list_files, self.remote, self.options["pattern"])
                files = [entry for entry in again if entry in set(files)]
            for entry in files:
                if not self.running:
                    break
                yield self.take(entry)
        except defer.CancelledError:
            return   # stop() cut the settle wait short
        except StoreRefused as error:
            self._problem(str(error))
        except Exception as error:
            self._problem(describe(error))
        else:
            if self.last_problem is not None:
                log.info("channel {channel}: sftp source polling again", channel=self.channel)
                self.last_problem = None

    def _problem(self, reason: str) -> None:
        if reason != self.last_problem:
            log.warn("channel {channel}: sftp source: {reason}; retrying every poll", channel=self.channel,
                     reason=reason)
            self.sink.note_event("source_error", reason)
        self.last_problem = reason

    @defer.inlineCallbacks
    def take(self, entry: tuple[str, int, int]):
        name, size, mtime = entry
        if entry not in self.stored:
            limit = self.options["max_file_size"]
            data = None
            if size <= limit:
                data = yield self.session.run(download, posixpath.join(self.remote, name), limit)
            if data is None:
                yield self.refuse(name, "the file is larger than max_file_size")
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                yield self.refuse(name, "the file is not UTF-8 text")
                return
            messages, problem = split_messages(text, self.options["split"], self.inbound)
            if problem is not None:
                yield self.refuse(name, problem)
                return
            yield self.store(name, mtime, data, messages)
            self.stored.add(entry)
        if self.options["after"] == "delete":
            yield self.session.run(remove, self.remote, name)
        else:
            yield self.session.run(move_into, self.remote, name, DONE)
        self.stored.discard(entry)
        log.info("channel {channel}: sftp file {name} taken", channel=self.channel, name=name)

    @defer.inlineCallbacks
    def store(self, name: str, mtime: int, data: bytes, messages):
        opts = self.options
        identity = hashlib.sha256(f"{opts['host']}:{opts['port']}:{self.remote}:{name}:{mtime}:".encode()
                                  + data).hexdigest()
        receipts = yield defer.gatherResults(
            [self.sink.receive(text, msh=msh, idempotency_key=f"sftp:{identity}:{number}")
             for number, (text, msh) in enumerate(messages, start=1)], consumeErrors=True)
        refused = sum(1 for receipt in receipts if not receipt.ok)
        if refused:
            raise StoreRefused(f"{refused} of {len(receipts)} message(s) of a file could not be stored; "
                               "the file stays for the next poll")

    @defer.inlineCallbacks
    def refuse(self, name: str, reason: str):
        self.sink.note_rejected(reason)
        log.warn("channel {channel}: sftp file {name} moved to {where}/: {reason}", channel=self.channel,
                 name=name, where=ERROR, reason=reason)
        yield self.session.run(move_into, self.remote, name, ERROR, reason)


def _relay(result, waiter: defer.Deferred):
    waiter.callback(None)
    return result


# -- the destination -------------------------------------------------------------------------
class SftpDestination:
    type_name = "sftp"
    option_schema = None  # built in: engine.config_schema

    def __init__(self, config, context, reactor) -> None:
        options = config.options
        self.remote = options["remote_path"]
        self.suffix = options.get("temp_suffix") or ".tmp"
        self.filename = context.templates.from_string(options.get("filename") or "{{ id }}.txt",
                                                      f"destination[{config.name}].filename")
        self.channel = context.channel_name
        self.session = SftpSession(options, reactor, label=f"{context.channel_name}/{config.name}")

    def send(self, delivery):
        from engine.templates import TemplateError

        try:
            name = safe_filename(self.filename.render({
                "id": delivery.message_id, "meta": delivery.meta or {}, "channel": self.channel,
                "delivery": delivery.id,
            }))
        except TemplateError as error:
            return defer.fail(PermanentError(f"filename template: {error}"))
        except PermanentError as error:
            return defer.fail(error)
        d = self.session.run(upload, self.remote, name, self.suffix, delivery.body.encode("utf-8"))
        return d.addCallbacks(lambda written: SendResult(f"uploaded {written}"), self._failed)

    @staticmethod
    def _failed(failure):
        error = failure.value
        stage = getattr(error, "sftp_stage", None)
        reason = describe(error) if stage is None else f"{stage} failed: {describe(error)}"
        if is_refusal(error):
            raise PermanentError(reason)
        raise TransientError(reason, possible_duplicate=stage == "rename")

    def close(self):
        return self.session.close()


@hookimpl
def register_sources():
    return [SftpSource]


@hookimpl
def register_destinations():
    return [SftpDestination]
