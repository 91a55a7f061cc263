"""The SFTP source (``[source] type = "sftp"``): poll a remote directory, store, then move remotely.

It follows the file source's rules (``engine.connectors.file_source``; RELIABILITY 31-33) and reuses
its pure parts (``file_inbox``: name checks, decoding, splitting), so one file means the same
messages whether it arrives on disk or over SFTP.  Every ``poll_interval``, in one pass:

- list ``remote_path``: names matching ``pattern`` and not starting with ``.`` (uploads in
  progress), directories aside, sorted by name; list again after ``settle`` and keep only the
  entries whose size and mtime held still (a file still being uploaded waits for the next poll);
- a link or special file, a bad name, a file over ``max_file_size``: refused without reading;
- download the file (the open handle is ``fstat``-ed: a file swapped or changed since the listing
  is left for the next poll), hash it; content this channel has processed before (the store's
  ``source_files``, by sha256) is not processed again, only moved;
- decode and split as the file source does; one bad message refuses the file: it goes to
  ``error/NAME`` with ``error/NAME.reason`` (written first, via a temp name and a rename);
- store every message (idempotency key ``sftp:<sha256>:<n>``, so a re-read after a crash never
  stores twice, whatever ``dedupe`` says), record the file as done in the store, and only then
  move it to ``done/`` (or delete it).  Moves never overwrite: ``NAME.1``, ``NAME.2``... when taken
  (OpenSSH's plain SFTP rename refuses an existing target, so a race cannot overwrite either).

X12 files (``inbound = "x12"``) are taken as the file source takes them (``inbox.prepare_x12``), and
with ``ack = "999"`` their 999 or TA1 is uploaded beside them (``done/NAME.999``, ``error/NAME.999``).

When the store refuses a message or the link drops, the file stays and the next poll tries again
(only the move, when the messages are already in).  When the server refuses a move (permissions)
the file is ignored until its size or mtime changes, so nothing loops.  Problems are logged once per
change of reason; logs carry escaped file names and PHI-free reasons, never content.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from engine.connectors.file import inbox
from engine.connectors.file.inbox import Entry, Refused, shown
from engine.connectors.file.source import CHUNK
from engine.config.schema import OptionSpec
from engine.connectors.sftp.options import SSH_OPTIONS, positive, session_module

log = Logger(namespace="switchboard.sftp")

DONE, ERROR = inbox.DONE, inbox.ERROR


SOURCE_OPTIONS = {
    **SSH_OPTIONS,
    "pattern": OptionSpec("str", "*"),
    "after": OptionSpec("choice", "move", choices=("move", "delete")),
    "split": OptionSpec("choice", "none", choices=("none", "hl7-batch", "lines", "x12", "claims")),
    "ack": OptionSpec("choice", "none", choices=("none", "999")),   # "999": the X12 answer beside the file
    "settle": OptionSpec("duration", "1s", check=lambda v: None if v >= 0 else "must be 0 or more"),
    "poll_interval": OptionSpec("duration", "30s", check=positive),
    "max_file_size": OptionSpec("size", "16MB", check=positive),
}


class StoreRefused(Exception):
    """The channel did not take a message: the file stays for the next poll."""


# -- blocking steps, run in a pool thread by SftpSession --------------------------------------
def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    return "link" if stat.S_ISLNK(mode) else "other"


def list_entries(sftp, directory: str, pattern: str) -> list[Entry]:
    """Wanted entries other than directories, sorted by name (readdir attributes are lstat's)."""
    found = []
    for attrs in sftp.listdir_attr(directory):
        mode = attrs.st_mode or 0
        if inbox.wanted(attrs.filename, pattern) and not stat.S_ISDIR(mode):
            # SFTP (v3) mtimes are whole seconds: Entry.mtime_ns holds seconds here (compared, never shown)
            found.append(Entry(attrs.filename, _kind(mode), attrs.st_size or 0, int(attrs.st_mtime or 0)))
    return sorted(found, key=lambda entry: entry.name)


def download(sftp, directory: str, entry: Entry, limit: int) -> bytes | None:
    """The bytes, or None when the file is not what the listing said any more (read it next poll)."""
    with sftp.open(posixpath.join(directory, entry.name), "rb") as remote:
        before = remote.stat()
        if not stat.S_ISREG(before.st_mode or 0) or (before.st_size, int(before.st_mtime or 0)) != (
                entry.size, entry.mtime_ns):
            return None
        if before.st_size:
            remote.prefetch(before.st_size)
        data = remote.read(limit + 1)
    return data if len(data) == entry.size else None


def _exists(sftp, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _folder(sftp, directory: str, sub: str) -> str:
    folder = posixpath.join(directory, sub)
    try:
        sftp.mkdir(folder)
    except OSError:
        if not stat.S_ISDIR(sftp.stat(folder).st_mode or 0):
            raise
    return folder


def _free_name(sftp, folder: str, name: str, with_reason: bool = False) -> str:
    candidate, number = name, 0
    while _exists(sftp, posixpath.join(folder, candidate)) or (
            with_reason and _exists(sftp, posixpath.join(folder, f"{candidate}.reason"))):
        number += 1
        candidate = f"{name}.{number}"
    return candidate


def _put(sftp, folder: str, name: str, data: bytes) -> None:
    """Write ``folder/name`` under a temp name, then rename it into place."""
    temp = posixpath.join(folder, f".{name}.tmp")
    with sftp.open(temp, "wb") as remote:
        remote.write(data)
    sftp.posix_rename(temp, posixpath.join(folder, name))


def _put_answer(sftp, folder: str, final: str, answer: str | None) -> None:
    if answer:
        _put(sftp, folder, f"{final}{inbox.ANSWER_SUFFIX}", answer.encode("latin-1", "replace"))


def move_done(sftp, directory: str, name: str, answer: str | None = None) -> str:
    """Move a processed file to ``done/``, its X12 ``answer`` first written as ``done/NAME.999``."""
    folder = _folder(sftp, directory, DONE)
    final = _free_name(sftp, folder, name)
    while answer and _exists(sftp, posixpath.join(folder, f"{final}{inbox.ANSWER_SUFFIX}")):
        final = _free_name(sftp, folder, f"{final}.1")
    _put_answer(sftp, folder, final, answer)
    sftp.rename(posixpath.join(directory, name), posixpath.join(folder, final))
    return final


def move_error(sftp, directory: str, name: str, reason: str, sha256: str, answer: str | None = None) -> str:
    """Write ``error/<final>.reason`` (temp name, then rename) and the X12 ``answer`` as
    ``error/<final>.999``, then move the file beside them."""
    folder = _folder(sftp, directory, ERROR)
    final = _free_name(sftp, folder, name, with_reason=True)
    text = "\n".join([reason] + ([f"sha256: {sha256}"] if sha256 else [])) + "\n"
    temp = posixpath.join(folder, f".{final}.reason.tmp")
    with sftp.open(temp, "wb") as remote:
        remote.write(text.encode("utf-8"))
    sftp.posix_rename(temp, posixpath.join(folder, f"{final}.reason"))
    _put_answer(sftp, folder, final, answer)
    sftp.rename(posixpath.join(directory, name), posixpath.join(folder, final))
    return final


def delete(sftp, directory: str, name: str, answer: str | None = None) -> str:
    """Delete a processed file; its X12 ``answer`` still goes to ``done/NAME.999``."""
    if answer:
        folder = _folder(sftp, directory, DONE)
        _put_answer(sftp, folder, _free_name(sftp, folder, name), answer)
    sftp.remove(posixpath.join(directory, name))
    return name


# -- the source -------------------------------------------------------------------------------
class SftpSource:
    type_name = "sftp"
    leased = True   # several nodes on one store: polled by one node at a time (engine/runtime/cluster.py)
    option_schema = SOURCE_OPTIONS

    def __init__(self, channel_config, sink, reactor) -> None:
        self.options = options = channel_config.source.options
        self.channel = channel_config.name
        self.inbound = channel_config.inbound
        self.sink = sink
        self.reactor = reactor
        self.store = getattr(sink, "store", None)
        self.remote = options["remote_path"]
        self.session = session_module().SftpSession(options, reactor, label=f"{self.channel}/source")
        self.running = False
        self.next_poll = None                       # DelayedCall of the next poll
        self.polling: defer.Deferred | None = None
        self.settling: defer.Deferred | None = None
        self.stored: set[Entry] = set()             # messages stored; the move is still to do
        self.skip: dict[str, tuple] = {}            # could not be moved: ignored until it changes
        self.answers: dict[Entry, str] = {}         # X12 answers of stored files not yet moved
        self.problem: str | None = None

    # -- life --------------------------------------------------------------------------------
    def retarget(self, sink) -> None:
        """What arrives from now on goes to ``sink`` (live reload)."""
        self.sink = sink

    def start(self) -> None:
        """Begin polling.  A server that is down is not a start failure: each poll retries."""
        if self.options["split"] == "hl7-batch" and self.inbound != "hl7":
            raise ValueError(f'split = "hl7-batch" needs inbound = "hl7" (this channel\'s inbound is '
                             f'"{self.inbound}")')
        if self.inbound == "csv" and self.options["split"] != "lines":
            raise ValueError('inbound = "csv" needs split = "lines" (the first line is the header)')
        if self.inbound == "x12" and self.options["split"] not in ("none", "x12", "claims"):
            raise ValueError(f'inbound = "x12" splits by transaction set; split = '
                             f'"{self.options["split"]}" does not apply')
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
        """Stop polling (the file in hand is finished first), then close the connection."""
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

    # -- one poll ----------------------------------------------------------------------------
    @defer.inlineCallbacks
    def poll(self):
        """One pass over the remote directory.  Never fails: problems are logged once per change."""
        pattern = self.options["pattern"]
        try:
            entries = yield self.session.run(list_entries, self.remote, pattern)
            self.stored &= set(entries)              # forget files someone else removed meanwhile
            settle = self.options["settle"] or 0
            if entries and settle > 0:
                self.settling = task.deferLater(self.reactor, settle, lambda: None)
                yield self.settling
                self.settling = None
                first = set(entries)
                entries = [e for e in (yield self.session.run(list_entries, self.remote, pattern)) if e in first]
            for entry in entries:
                if not self.running:
                    break
                if self.skip.get(entry.name) != entry.signature:
                    yield self.take(entry)
        except defer.CancelledError:
            return                                   # stop() cut the settle wait short
        except StoreRefused as error:
            self._problem(str(error))
        except Exception as error:  # noqa: BLE001 - connection trouble: the next poll retries
            self._problem(session_module().describe(error))
        else:
            if self.problem is not None:
                log.info("channel {channel}: sftp source working again", channel=self.channel)
                self.problem = None

    def _problem(self, reason: str) -> None:
        if reason != self.problem:
            log.warn("channel {channel}: sftp source: {reason}; retrying every poll", channel=self.channel,
                     reason=reason)
            self.sink.note_event("source_error", reason)
        self.problem = reason

    @defer.inlineCallbacks
    def take(self, entry: Entry):
        name = entry.name
        self.skip.pop(name, None)
        if entry in self.stored:
            yield self.finish(entry, "messages stored at an earlier poll")
            return
        limit = self.options["max_file_size"]
        problem = inbox.name_problem(name)
        if problem is None and entry.kind != "file":
            problem = ("the file is a symbolic link (links are not followed)" if entry.kind == "link"
                       else "not a regular file")
        elif problem is None and entry.size > limit:
            problem = f"the file is {entry.size} bytes, over max_file_size ({limit} bytes)"
        elif problem is None and entry.size == 0:
            problem = "the file is empty"
        if problem is not None:
            yield self.refuse(entry, problem, "")
            return
        data = yield self.session.run(download, self.remote, entry, limit)
        if data is None:
            return                                   # changed since the listing: next poll
        sha256 = hashlib.sha256(data).hexdigest()
        if (yield self.seen(sha256)):
            log.info("channel {channel}: sftp file {name} has the content of a file already processed "
                     "(same sha256); not processed again", channel=self.channel, name=shown(name))
            self.sink.note_event("file_duplicate", "content already processed")
            if self.inbound == "x12" and self.options.get("ack") == "999":   # answered again
                self.answers[entry] = inbox.prepare_x12(data, sha256, claims=False).answer
            yield self.finish(entry, "already processed")
            return
        answer, partial = None, []
        if self.inbound == "x12":
            prepared = inbox.prepare_x12(data, sha256, claims=self.options["split"] == "claims")
            messages, original = prepared.messages, None
            problem = prepared.reason if prepared.outcome == "refused" else None
            partial = prepared.partial
            answer = prepared.answer if self.options.get("ack") == "999" and prepared.answer else None
        else:
            try:
                text, original = inbox.decode_file(data, self.inbound)
                messages, problem = inbox.split_messages(text, self.options["split"], self.inbound)
            except Refused as error:
                messages, problem, original = [], str(error), None
        if problem is not None:
            yield self.refuse(entry, problem, sha256, answer)
            return
        yield self.store_messages(sha256, messages, original)
        if self.store is not None:
            try:
                yield self.store.mark_file(self.channel, sha256, name, "done", len(messages))
            except Exception as error:  # noqa: BLE001 - the file stays; its keys dedupe the re-read
                raise StoreRefused(f"a file's messages are stored but the file could not be recorded "
                                   f"({type(error).__name__}); it stays on the server") from None
        self.stored.add(entry)
        for reason in partial:   # X12 sets the 999 rejected; the rest of the file is taken
            self.sink.note_rejected(reason)
            log.warn("channel {channel}: sftp file {name}: {reason}", channel=self.channel,
                     name=shown(name), reason=reason)
        if answer:
            self.answers[entry] = answer
        yield self.finish(entry, f"{len(messages)} message(s) stored")

    def seen(self, sha256: str) -> defer.Deferred:
        """Has this channel processed this content before?  (a store read, in a pool thread)"""
        if self.store is None:
            return defer.succeed(False)
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         lambda: self.store.file_seen(self.channel, sha256) is not None)

    @defer.inlineCallbacks
    def store_messages(self, sha256: str, messages, original: bytes | None = None):
        """``original``: the file's bytes when decoding it was lossy, kept with its first message."""
        for start in range(0, len(messages), CHUNK):
            chunk = messages[start:start + CHUNK]
            receipts = yield defer.gatherResults([
                self.sink.receive(text, msh=msh, idempotency_key=f"sftp:{sha256}:{number}",
                                  original=original if number == 1 else None)
                for number, (text, msh) in enumerate(chunk, start=start + 1)], consumeErrors=True)
            refused = sum(1 for receipt in receipts if not receipt.ok)
            if refused:
                raise StoreRefused(f"{refused} message(s) of a file could not be stored; the file stays "
                                   "on the server and is tried again at the next poll")

    @defer.inlineCallbacks
    def finish(self, entry: Entry, what: str):
        delete_it = self.options["after"] == "delete"
        try:
            final = yield self.session.run(delete if delete_it else move_done, self.remote, entry.name,
                                           self.answers.get(entry))
        except Exception as error:
            if not session_module().is_server_answer(error):
                raise                                # the link: the next poll retries the move
            self._cannot_move(entry, "delete it" if delete_it else "done/", error)
            return
        self.stored.discard(entry)
        self.answers.pop(entry, None)
        where = "deleted" if delete_it else f"moved to done/{shown(final)}"
        log.info("channel {channel}: sftp file {name}: {what}; {where}", channel=self.channel,
                 name=shown(entry.name), what=what, where=where)

    @defer.inlineCallbacks
    def refuse(self, entry: Entry, reason: str, sha256: str, answer: str | None = None):
        self.sink.note_rejected(reason)
        try:
            final = yield self.session.run(move_error, self.remote, entry.name, reason, sha256, answer)
        except Exception as error:
            if not session_module().is_server_answer(error):
                raise
            self._cannot_move(entry, "error/", error)
            return
        log.warn("channel {channel}: sftp file {name} moved to error/{final}: {reason}", channel=self.channel,
                 name=shown(entry.name), final=shown(final), reason=reason)
        if sha256 and self.store is not None:
            try:
                yield self.store.mark_file(self.channel, sha256, entry.name, "error", 0)
            except Exception as error:  # noqa: BLE001 - only an audit record
                log.warn("channel {channel}: could not record refused sftp file {name}: {error}",
                         channel=self.channel, name=shown(entry.name), error=type(error).__name__)

    def _cannot_move(self, entry: Entry, where: str, error: Exception) -> None:
        self.skip[entry.name] = entry.signature
        log.error("channel {channel}: cannot move sftp file {name} to {where} ({error}); it is ignored "
                  "until it changes", channel=self.channel, name=shown(entry.name), where=where,
                  error=session_module().describe(error))
        self.sink.note_event("source_error", f"cannot move a file to {where}")


def _relay(result, waiter: defer.Deferred):
    waiter.callback(None)
    return result
