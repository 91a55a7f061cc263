"""The file source (``[source] type = "file"``): files dropped in an inbox become stored messages.

How a file is noticed: watchdog (inotify on Linux) reports created / modified / closed / moved-in
names; its observer thread hands each one to the reactor with ``callFromThread``.  A directory
scan every ``poll_interval`` is the safety net (events are lost when the inotify queue overflows,
and a file present at start-up produced none); with ``poll = true`` (network mounts, where inotify
sees nothing written by other hosts) the scan is the only mechanism.  Every ``stat``, listing,
read and move runs in a pool thread: the reactor never waits for a disk.

When a file is read (RELIABILITY 31): once it is stable — two ``lstat`` results ``settle`` apart
with the same size and mtime — or at once when it was *renamed into* the inbox (a moved-in event:
the writer finished elsewhere and renamed it into place; one ``lstat`` still checks it is a file).
A slow writer keeps changing size or mtime, so each look schedules another one ``settle`` later.

What happens to it (``engine.connectors.file_inbox`` does the blocking part), one file at a time:
- its sha256 is looked up in the store (``source_files``): content already processed is not
  processed again (RELIABILITY 33) — it is moved to ``done/`` (or deleted, with ``after =
  "delete"``) and the log says so;
- otherwise it is split into messages, every one checked first (one bad message refuses the
  file: ``error/NAME`` + ``error/NAME.reason``, nothing stored); then each goes through
  ``sink.receive`` with the idempotency key ``file:<sha256>:<n>``, at most ``CHUNK`` at a time;
- once every message is committed, the file is recorded as ``done`` in the store, and only then
  moved to ``done/`` or deleted (RELIABILITY 32).

Why idempotency keys rather than the channel's ``dedupe`` alone: if the daemon dies after storing
3 of a file's 10 messages, the file is still in the inbox at restart and is read again; the keys
make the first 3 duplicates whatever ``dedupe`` says (it may be "0", or the restart may come after
the window), and two identical rows *within* one file stay two messages when dedupe is off.  The
key lookup is one probe of the partial ``idx_messages_idempotency`` index.  A crash after the
``done`` record but before the move is harmless too: the file is then recognised by its hash.

X12 (``inbound = "x12"``, DESIGN §3.11): the file is read by ``engine.x12.intake`` instead of being
split by lines or MSH: one message per transaction set (``split = "claims"``: per 835 claim
payment), only the sets the 999 accepts are stored, and the file is refused only when none is.
With ``ack = "999"`` the answer is written beside the file, atomically and before the file is moved:
``done/NAME.999``, or ``error/NAME.999`` (a TA1 when the interchange cannot be read).

When the store refuses a message (disk full...), the file stays where it is and is tried again
at the next scan: that is a transient fault, not the file's.  A file that cannot be moved
(permissions) is remembered with its size and mtime and ignored until it changes, so nothing
loops.  Logs carry file names (escaped) and PHI-free reasons, never content.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer, threads
from twisted.logger import Logger
from watchdog.events import FileSystemEventHandler

from engine.connectors.file import inbox
from engine.connectors.file.inbox import Entry, shown
from engine.hookspecs import hookimpl
from engine.config.schema import OptionSpec, choice_spec, not_negative, positive

log = Logger(namespace="switchboard.file")

CHUNK = 256           # messages of one file handed to the store at once (group commit shares fsyncs)
DEFAULT_MAX_SIZE = 100 * 1024 * 1024


@dataclass
class Tracked:
    """A file being watched until it is stable."""

    signature: tuple | None = None
    since: float = 0.0
    call: object = None       # the DelayedCall of the next look
    checking: bool = False    # a stat is in flight


class FileSource:
    """``[source] type = "file"``: an inbox directory feeding one channel."""

    type_name = "file"
    leased = True   # several nodes on one store: polled by one node at a time (engine/runtime/cluster.py)
    option_schema = {
        "path": OptionSpec("path", required=True),
        "pattern": OptionSpec("str", "*"),
        "after": choice_spec("move", "move", "delete"),
        "split": choice_spec("none", "none", "hl7-batch", "lines", "x12", "claims"),
        "ack": choice_spec("none", "none", "999"),   # "999": the X12 answer beside the file
        "settle": OptionSpec("duration", "1s", check=not_negative),
        "poll": OptionSpec("bool", False),
        "poll_interval": OptionSpec("duration", "5s", check=positive),   # the scan (safety net / polling)
        "max_file_size": OptionSpec("size", "100MB", check=positive),
    }
    default_inbound = "hl7"

    def __init__(self, channel_config, sink, reactor, *, in_thread=None, observer_factory=None) -> None:
        options = channel_config.source.options
        self.channel = channel_config.name
        self.inbound = channel_config.inbound
        self.sink = sink
        self.reactor = reactor
        self.directory = Path(options["path"])
        self.pattern = options.get("pattern") or "*"
        self.after = options.get("after") or "move"
        self.split = options.get("split") or "none"
        self.ack = options.get("ack") or "none"
        self.settle = float(options.get("settle") or 0.0)
        self.interval = float(options.get("poll_interval") or 5.0)
        self.max_size = int(options.get("max_file_size") or DEFAULT_MAX_SIZE)
        self.poll = bool(options.get("poll"))
        self.store = getattr(sink, "store", None)
        self._in_thread = in_thread or self._pool_thread
        self._observer_factory = observer_factory
        self.tracking: dict[str, Tracked] = {}
        self.ready: deque[tuple[str, Entry]] = deque()
        self.busy: set[str] = set()                  # queued or being processed
        self.skip: dict[str, tuple] = {}             # could not be moved: ignored until it changes
        self.running = False
        self.working: defer.Deferred | None = None
        self.observer = None
        self.scan_call = None
        self.problems: dict[str, str] = {}          # kind (scan, store...) -> last reason logged

    def _pool_thread(self, function, *args, **kwargs) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function, *args, **kwargs)

    # -- life --------------------------------------------------------------------------------
    def retarget(self, sink) -> None:
        """What arrives from now on goes to ``sink`` (live reload)."""
        self.sink = sink

    @defer.inlineCallbacks
    def start(self):
        if self.split == "hl7-batch" and self.inbound != "hl7":
            raise ValueError(f'split = "hl7-batch" needs inbound = "hl7" (this channel\'s inbound is '
                             f'"{self.inbound}")')
        if self.inbound == "csv" and self.split != "lines":
            raise ValueError('inbound = "csv" needs split = "lines" (the first line is the header)')
        if self.inbound == "x12" and self.split not in ("none", "x12", "claims"):
            raise ValueError(f'inbound = "x12" splits by transaction set; split = "{self.split}" does not apply')
        yield self._in_thread(inbox.ensure_inbox, self.directory)
        self.running = True
        if not self.poll:
            self.observer = self._watch()
        self._scan()
        how = "polling" if self.observer is None else "watching"
        log.info("channel {channel}: {how} {path} for {pattern} (settle {settle}s, scan every {interval}s)",
                 channel=self.channel, how=how, path=str(self.directory), pattern=self.pattern,
                 settle=self.settle, interval=self.interval)

    def _watch(self):
        """Start a watchdog observer; on failure (inotify limits...) fall back to polling alone."""
        try:
            if self._observer_factory is not None:
                observer = self._observer_factory()
            else:
                from watchdog.observers import Observer

                observer = Observer()
            observer.schedule(_Handler(self), str(self.directory), recursive=False)
            observer.start()
            return observer
        except Exception as error:  # noqa: BLE001 - any watchdog failure: the scan still works
            log.warn("channel {channel}: cannot watch {path} ({error}); scanning every {interval}s only",
                     channel=self.channel, path=str(self.directory), error=type(error).__name__,
                     interval=self.interval)
            return None

    @defer.inlineCallbacks
    def stop(self):
        """Stop noticing files; a file being stored stops after its current chunk (it stays in the
        inbox and is finished at the next start, without duplicates)."""
        self.running = False
        if self.scan_call is not None and self.scan_call.active():
            self.scan_call.cancel()
        for tracked in self.tracking.values():
            if tracked.call is not None and tracked.call.active():
                tracked.call.cancel()
        self.tracking.clear()
        if self.observer is not None:
            observer, self.observer = self.observer, None
            observer.stop()
            yield self._in_thread(observer.join, 5)
        if self.working is not None:
            finished = defer.Deferred()
            self.working.addBoth(_relay, finished)
            yield finished

    # -- noticing ----------------------------------------------------------------------------
    def event(self, path: str, moved: bool) -> None:
        """In the reactor: watchdog saw ``path`` created, modified, closed or moved in."""
        folder, name = os.path.split(path)
        if not self.running or os.path.normpath(folder) != str(self.directory):
            return
        if inbox.wanted(name, self.pattern):
            self.check(name, moved)

    def check(self, name: str, moved: bool = False) -> None:
        """Look at one name (in a thread) unless a look is already on its way."""
        if not self.running or name in self.busy:
            return
        tracked = self.tracking.get(name)
        if tracked is None:
            tracked = self.tracking[name] = Tracked()
        elif not moved and (tracked.checking or (tracked.call is not None and tracked.call.active())):
            return
        tracked.checking = True
        d = self._in_thread(inbox.stat_entry, self.directory, name)
        d.addCallbacks(self._looked, self._look_failed, callbackArgs=(name, moved), errbackArgs=(name,))

    def _looked(self, entry: Entry | None, name: str, moved: bool) -> None:
        tracked = self.tracking.get(name)
        if tracked is not None:
            tracked.checking = False
        self.note(name, entry, moved)

    def _look_failed(self, failure, name: str) -> None:
        self._forget(name)
        self._problem("scan", f"cannot stat a file: {type(failure.value).__name__}")

    def note(self, name: str, entry: Entry | None, moved: bool = False) -> None:
        """Decide on one look: gone, ignored, stable (-> ready), or look again later."""
        if not self.running or name in self.busy:
            return
        if entry is None:
            self._forget(name)
            self.skip.pop(name, None)
            return
        if self.skip.get(name) == entry.signature:
            self._forget(name)
            return
        self.skip.pop(name, None)
        tracked = self.tracking.setdefault(name, Tracked())
        now = self.reactor.seconds()
        if moved or entry.kind != "file":
            self._enqueue(name, entry)
        elif tracked.signature != entry.signature:
            tracked.signature, tracked.since = entry.signature, now
            self._look_later(name, tracked, self.settle)
        elif now - tracked.since >= self.settle:
            self._enqueue(name, entry)
        else:
            self._look_later(name, tracked, tracked.since + self.settle - now)

    def _look_later(self, name: str, tracked: Tracked, delay: float) -> None:
        if tracked.call is None or not tracked.call.active():
            tracked.call = self.reactor.callLater(max(delay, 0.0), self._look_again, name)

    def _look_again(self, name: str) -> None:
        tracked = self.tracking.get(name)
        if tracked is not None:
            tracked.call = None
            self.check(name)

    def _forget(self, name: str) -> None:
        tracked = self.tracking.pop(name, None)
        if tracked is not None and tracked.call is not None and tracked.call.active():
            tracked.call.cancel()

    def _scan(self) -> None:
        self.scan_call = None
        if not self.running:
            return
        d = self._in_thread(inbox.scan, self.directory, self.pattern)
        d.addCallbacks(self._scanned, self._scan_failed)
        d.addBoth(self._next_scan)

    def _next_scan(self, _result) -> None:
        if self.running:
            self.scan_call = self.reactor.callLater(self.interval, self._scan)

    def _scanned(self, entries: list[Entry]) -> None:
        present = {entry.name for entry in entries}
        for name in [n for n, t in self.tracking.items() if n not in present and not t.checking]:
            self._forget(name)
        for name in [n for n in self.skip if n not in present]:
            del self.skip[name]
        for entry in entries:
            tracked = self.tracking.get(entry.name)
            if tracked is not None and (tracked.checking or (tracked.call is not None and tracked.call.active())):
                continue  # a look is on its way already
            self.note(entry.name, entry)
        self._resolved("scan")

    def _scan_failed(self, failure) -> None:
        self._problem("scan", f"cannot list the inbox: {type(failure.value).__name__}: "
                      f"{getattr(failure.value, 'strerror', None) or 'error'}")

    def _problem(self, kind: str, reason: str) -> None:
        """Log a problem once per change of reason (a dead network mount must not flood the log)."""
        if self.problems.get(kind) != reason:
            log.warn("channel {channel}: file source: {reason}", channel=self.channel, reason=reason)
            self.sink.note_event("source_error", reason)
        self.problems[kind] = reason

    def _resolved(self, kind: str) -> None:
        if self.problems.pop(kind, None) is not None:
            log.info("channel {channel}: file source: {kind} working again", channel=self.channel, kind=kind)

    # -- taking ------------------------------------------------------------------------------
    def _enqueue(self, name: str, entry: Entry) -> None:
        self._forget(name)
        self.busy.add(name)
        self.ready.append((name, entry))
        if self.working is None:
            self.working = self._work()
            self.working.addBoth(self._worked)

    def _worked(self, _result) -> None:
        self.working = None

    @defer.inlineCallbacks
    def _work(self):
        while self.ready and self.running:
            name, entry = self.ready.popleft()
            try:
                yield self.take(name, entry)
            except Exception:  # noqa: BLE001 - one file's surprise must not stop the inbox
                log.failure("channel {channel}: internal error taking file {name}", channel=self.channel,
                            name=shown(name))
            finally:
                self.busy.discard(name)
        for name, _entry in self.ready:   # stopped: forget what was queued (it stays in the inbox)
            self.busy.discard(name)
        self.ready.clear()

    @defer.inlineCallbacks
    def take(self, name: str, entry: Entry):
        """Read, store and move one stable file."""
        prepared = yield self._in_thread(
            inbox.prepare, self.directory, entry, split=self.split, inbound=self.inbound,
            max_size=self.max_size, seen=self._seen)
        if prepared.outcome == "gone":
            return
        if prepared.outcome == "changed":
            self.reactor.callLater(0, self.check, name)
            return
        if prepared.outcome == "refused":
            yield self._refuse(name, entry, prepared.reason, prepared.sha256, self._answer(prepared))
            return
        if prepared.outcome == "seen":
            log.info("channel {channel}: file {name} has the content of a file already processed "
                     "(same sha256); not processed again", channel=self.channel, name=shown(name))
            self.sink.note_event("file_duplicate", "content already processed")
            yield self._finish(name, entry, "already processed", self._answer(prepared))
            return
        stored = yield self._store(name, prepared)
        if stored is None:
            return
        if self.store is not None:
            try:
                yield self.store.mark_file(self.channel, prepared.sha256, _storable(name), "done", stored)
            except Exception as error:  # noqa: BLE001 - the file stays; next time its keys dedupe it
                self._problem("store", f"file {shown(name)}: its messages are stored but the file could "
                              f"not be recorded ({type(error).__name__}); it stays in the inbox")
                return
        for reason in prepared.partial:   # X12 sets the 999 rejected; the rest of the file is taken
            self.sink.note_rejected(reason)
            log.warn("channel {channel}: file {name}: {reason}", channel=self.channel, name=shown(name),
                     reason=reason)
        yield self._finish(name, entry, f"{stored} message(s) stored", self._answer(prepared))

    def _answer(self, prepared) -> str | None:
        """The X12 999/TA1 to write beside the file, when the channel answers (ack = "999")."""
        return prepared.answer if self.ack == "999" and prepared.answer else None

    def _seen(self, sha256: str) -> bool:
        """In a pool thread: has this content been processed on this channel? (a store read)."""
        return self.store is not None and self.store.file_seen(self.channel, sha256) is not None

    @defer.inlineCallbacks
    def _store(self, name: str, prepared):
        """Hand every message to the channel, CHUNK at a time; the count, or None to leave the file."""
        messages, total, duplicates = prepared.messages, len(prepared.messages), 0
        for start in range(0, total, CHUNK):
            if not self.running:
                log.info("channel {channel}: stopping inside file {name}; the rest is taken at the next "
                         "start", channel=self.channel, name=shown(name))
                return None
            chunk = messages[start:start + CHUNK]
            try:
                receipts = yield defer.gatherResults([
                    self.sink.receive(text, msh=msh, idempotency_key=f"file:{prepared.sha256}:{number}",
                                      original=prepared.original if number == 1 else None)  # once a file
                    for number, (text, msh) in enumerate(chunk, start=start + 1)], consumeErrors=True)
            except Exception as error:  # noqa: BLE001 - a sink bug: treat as not stored
                receipts = [None]
                log.error("channel {channel}: receiving file {name} failed: {error}", channel=self.channel,
                          name=shown(name), error=type(error).__name__)
            refused = sum(1 for receipt in receipts if receipt is None or not receipt.ok)
            if refused:
                self._problem("store", f"file {shown(name)}: {refused} message(s) could not be stored; the file "
                              f"stays in the inbox and is tried again at the next scan")
                return None
            duplicates += sum(1 for receipt in receipts if receipt.duplicate)
        self._resolved("store")
        if duplicates:
            log.info("channel {channel}: file {name}: {dup} of {total} message(s) were stored already",
                     channel=self.channel, name=shown(name), dup=duplicates, total=total)
        return total

    @defer.inlineCallbacks
    def _finish(self, name: str, entry: Entry, what: str, answer: str | None = None):
        mover = inbox.delete if self.after == "delete" else inbox.move_done
        try:
            final = yield self._in_thread(mover, self.directory, name, answer)
        except OSError as error:
            self._cannot_move(name, entry, "done/" if self.after == "move" else "delete it", error)
            return
        where = "deleted" if self.after == "delete" else f"moved to done/{shown(final)}"
        if answer:
            where += f" ({inbox.ANSWER_SUFFIX} written to done/)"
        log.info("channel {channel}: file {name}: {what}; {where}", channel=self.channel, name=shown(name),
                 what=what, where=where)

    @defer.inlineCallbacks
    def _refuse(self, name: str, entry: Entry, reason: str, sha256: str, answer: str | None = None):
        self.sink.note_rejected(reason)
        try:
            final = yield self._in_thread(inbox.move_error, self.directory, name, reason, sha256, answer)
        except OSError as error:
            self._cannot_move(name, entry, "error/", error)
            return
        log.warn("channel {channel}: file {name} moved to error/{final}: {reason}", channel=self.channel,
                 name=shown(name), final=shown(final), reason=reason)
        if sha256 and self.store is not None:
            try:
                yield self.store.mark_file(self.channel, sha256, _storable(name), "error", 0)
            except Exception as error:  # noqa: BLE001 - only an audit record
                log.warn("channel {channel}: could not record refused file {name}: {error}",
                         channel=self.channel, name=shown(name), error=type(error).__name__)

    def _cannot_move(self, name: str, entry: Entry, where: str, error: OSError) -> None:
        self.skip[name] = entry.signature
        log.error("channel {channel}: cannot move file {name} to {where} ({error}); it is ignored until "
                  "it changes", channel=self.channel, name=shown(name), where=where,
                  error=error.strerror or type(error).__name__)
        self.sink.note_event("source_error", f"cannot move a file to {where}")


def _storable(name: str) -> str:
    """A file name as text the store can hold (undecodable bytes escaped)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _relay(result, waiter: defer.Deferred):
    waiter.callback(None)
    return result


class _Handler(FileSystemEventHandler):
    """watchdog's handler: runs in the observer thread, so it only hands names to the reactor."""

    def __init__(self, source: FileSource) -> None:
        super().__init__()
        self.source = source

    def dispatch(self, event) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind == "moved":
            path, moved = event.dest_path, True
        elif kind in ("created", "modified", "closed"):
            path, moved = event.src_path, False
        else:
            return
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        self.source.reactor.callFromThread(self.source.event, path, moved)


@hookimpl
def register_sources():
    return [FileSource]
