"""The file source's reactor side (engine/connectors/file_source.py) on a task.Clock: when a file is
taken, in which order things happen, and what is left in the inbox when something fails.

Disk work runs synchronously here (``in_thread`` runs the function at once) on a real temp inbox;
time is the Clock's, so "not before settle" is checked exactly, without sleeping."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from twisted.internet import defer, task

from engine.core.channel import Receipt
from engine.connectors.file import source as file_source
from engine.connectors.file.source import FileSource
from support.daemon import hl7


class FakeReactor(task.Clock):
    def callFromThread(self, function, *args):
        function(*args)


class Sink:
    """Records receives; ``refuse`` makes the store say no; ``hold`` keeps receipts pending."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.originals: list[bytes | None] = []
        self.events: list[tuple[str, str]] = []
        self.refuse = False
        self.hold: list[defer.Deferred] | None = None
        self.keys: set[str] = set()
        self.store = Store(self)

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        if self.refuse:
            return defer.succeed(Receipt(None, False, error="the message could not be stored"))
        duplicate = idempotency_key in self.keys
        self.keys.add(idempotency_key)
        self.received.append((text, idempotency_key))
        self.originals.append(original)
        receipt = Receipt(len(self.received), True, duplicate=duplicate)
        if self.hold is not None:
            d = defer.Deferred()
            self.hold.append((d, receipt))
            return d
        return defer.succeed(receipt)

    def note_rejected(self, reason):
        self.events.append(("rejected", reason))

    def note_event(self, kind, detail):
        self.events.append((kind, detail))


class Store:
    def __init__(self, sink) -> None:
        self.sink = sink
        self.files: list[tuple] = []
        self.inbox_when_marked: list[list[str]] = []
        self.directory = None

    def mark_file(self, channel, sha256, name, status, messages):
        self.files.append((channel, sha256, name, status, messages))
        self.inbox_when_marked.append(sorted(os.listdir(self.directory)))
        return defer.succeed(len(self.files))

    def file_seen(self, channel, sha256):
        done = [f for f in self.files if f[0] == channel and f[1] == sha256 and f[3] == "done"]
        return {"name": done[-1][2]} if done else None


def make_source(tmp_path, *, settle=1.0, interval=30.0, inbound="hl7", split="hl7-batch", after="move",
                sink=None, start=True, observer_factory=None):
    options = {"path": tmp_path, "pattern": "*.hl7", "after": after, "split": split, "settle": settle,
               "poll": observer_factory is None, "poll_interval": interval, "max_file_size": 1 << 20}
    config = SimpleNamespace(name="files", inbound=inbound, source=SimpleNamespace(options=options))
    sink = sink or Sink()
    sink.store.directory = tmp_path
    reactor = FakeReactor()
    source = FileSource(config, sink, reactor, in_thread=lambda f, *a, **k: defer.maybeDeferred(f, *a, **k),
                        observer_factory=observer_factory)
    if start:
        source.start()
    return source, sink, reactor


def done(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path / "done"))


def test_a_file_is_taken_only_after_settle_without_change(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=1.0)
    path = tmp_path / "a.hl7"
    path.write_text(hl7("A")[:40])
    source.check("a.hl7")                      # as watchdog's "created" would
    for step in range(5):                      # the writer adds a little every 0.5 s
        clock.advance(0.5)
        assert sink.received == [] and path.exists()
        with open(path, "a") as out:
            out.write(hl7("A")[40:][step * 10:(step + 1) * 10] if step < 4 else hl7("A")[80:])
    clock.advance(0.99)                        # a look finds it changed: the settle starts over
    assert sink.received == []
    clock.advance(1.0)                         # unchanged for a whole settle: taken
    assert [text for text, _ in sink.received] == [hl7("A") + "\r"]
    assert done(tmp_path) == ["a.hl7"]


def test_a_file_renamed_into_place_is_taken_at_once(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=10.0)
    (tmp_path / "staging.tmp").write_text(hl7("R"))
    os.rename(tmp_path / "staging.tmp", tmp_path / "r.hl7")
    source.event(str(tmp_path / "r.hl7"), moved=True)
    assert [text for text, _ in sink.received] == [hl7("R") + "\r"]
    assert clock.seconds() == 0


def test_events_outside_the_inbox_or_pattern_are_ignored(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0)
    (tmp_path / "done" / "x.hl7").write_text(hl7("X"))
    (tmp_path / "x.txt").write_text(hl7("X"))
    source.event(str(tmp_path / "done" / "x.hl7"), moved=True)
    source.event(str(tmp_path / "x.txt"), moved=True)
    clock.advance(1)
    assert sink.received == []


def test_watchdog_events_reach_the_reactor_through_call_from_thread(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0)
    calls = []
    clock.callFromThread = lambda function, *args: calls.append(args) or function(*args)
    (tmp_path / "w.hl7").write_text(hl7("W"))
    handler = file_source._Handler(source)
    handler.dispatch(SimpleNamespace(is_directory=False, event_type="moved", src_path=str(tmp_path / "w.tmp"),
                                     dest_path=str(tmp_path / "w.hl7")))
    handler.dispatch(SimpleNamespace(is_directory=False, event_type="deleted", src_path=str(tmp_path / "y.hl7")))
    assert calls == [(str(tmp_path / "w.hl7"), True)]
    assert [text for text, _ in sink.received] == [hl7("W") + "\r"]


def test_messages_carry_per_file_keys_and_the_file_is_recorded_before_it_moves(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0)
    (tmp_path / "b.hl7").write_text(hl7("B1") + "\r" + hl7("B2"))
    source.check("b.hl7")
    clock.advance(0)
    sha = sink.store.files[0][1]
    assert [key for _, key in sink.received] == [f"file:{sha}:1", f"file:{sha}:2"]
    assert sink.store.files == [("files", sha, "b.hl7", "done", 2)]
    assert "b.hl7" in sink.store.inbox_when_marked[0]       # recorded while still in the inbox
    assert done(tmp_path) == ["b.hl7"]


def test_a_file_invalid_for_its_charset_hands_its_bytes_on_with_its_first_message(tmp_path):
    """RELIABILITY 17: the file is decoded whole, so its exact bytes go with message 1 only."""
    source, sink, clock = make_source(tmp_path, settle=0)
    data = hl7("F1").encode().replace(b"DOE", b"D\xffE") + b"\r" + hl7("F2").encode()
    (tmp_path / "f.hl7").write_bytes(data)
    (tmp_path / "g.hl7").write_bytes(hl7("G1").encode())
    for name in ("f.hl7", "g.hl7"):
        source.check(name)
        clock.advance(0)
    assert "D\ufffdE" in sink.received[0][0]
    assert sink.originals == [data, None, None]


def test_identical_content_is_moved_without_being_processed_again(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0)
    for name in ("one.hl7", "two.hl7"):
        (tmp_path / name).write_text(hl7("SAME"))
        source.check(name)
        clock.advance(0)
    assert len(sink.received) == 1
    assert done(tmp_path) == ["one.hl7", "two.hl7"]
    assert ("file_duplicate", "content already processed") in sink.events


def test_store_refusal_leaves_the_file_for_the_next_scan(tmp_path):
    (tmp_path / "s.hl7").write_text(hl7("S"))
    source, sink, clock = make_source(tmp_path, settle=0, interval=5.0, start=False)
    sink.refuse = True
    source.start()                       # the first scan finds it
    clock.advance(0)
    assert (tmp_path / "s.hl7").exists() and sink.store.files == []
    assert os.listdir(tmp_path / "error") == []
    problems = [e for e in sink.events if e[0] == "source_error"]
    clock.advance(5.0)                   # the next scan tries again: still refused, not logged twice
    clock.advance(0)
    assert [e for e in sink.events if e[0] == "source_error"] == problems and len(problems) == 1
    sink.refuse = False
    clock.advance(5.0)
    clock.advance(0)
    assert done(tmp_path) == ["s.hl7"] and len(sink.received) == 1


def test_refused_file_goes_to_error_and_is_recorded(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0)
    (tmp_path / "bad.hl7").write_text("not hl7")
    source.check("bad.hl7")
    clock.advance(0)
    assert sorted(os.listdir(tmp_path / "error")) == ["bad.hl7", "bad.hl7.reason"]
    assert sink.store.files[0][3] == "error" and sink.received == []
    assert sink.events[0][0] == "rejected"


def test_a_file_that_cannot_be_moved_is_ignored_until_it_changes(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0, interval=5.0)
    os.rmdir(tmp_path / "done")
    (tmp_path / "done").write_text("a file where done/ should be")
    (tmp_path / "m.hl7").write_text(hl7("M"))
    clock.advance(5.0)                   # a scan finds it
    clock.advance(0)
    assert len(sink.received) == 1 and (tmp_path / "m.hl7").exists()
    for _ in range(3):                   # scans come and go: the file is not taken again
        clock.advance(5.0)
        clock.advance(0)
    assert len(sink.received) == 1
    os.unlink(tmp_path / "done")
    with open(tmp_path / "m.hl7", "a") as out:   # it changed: a new look, a new try
        out.write("\rNTE|1||changed")
    clock.advance(5.0)
    clock.advance(0)
    assert done(tmp_path) == ["m.hl7"]


def test_stop_inside_a_file_leaves_it_in_the_inbox(tmp_path):
    sink = Sink()
    sink.hold = []
    source, sink, clock = make_source(tmp_path, settle=0, sink=sink)
    total = file_source.CHUNK + 10
    (tmp_path / "big.hl7").write_text("\r".join(hl7(f"M{n}") for n in range(total)))
    source.check("big.hl7")
    clock.advance(0)
    assert len(sink.hold) == file_source.CHUNK          # one chunk in flight, the rest waits
    stopped = source.stop()
    assert not stopped.called
    for d, receipt in sink.hold:
        d.callback(receipt)
    assert stopped.called
    assert len(sink.received) == file_source.CHUNK
    assert (tmp_path / "big.hl7").exists() and done(tmp_path) == [] and sink.store.files == []


def test_after_delete(tmp_path):
    source, sink, clock = make_source(tmp_path, settle=0, after="delete")
    (tmp_path / "d.hl7").write_text(hl7("D"))
    source.check("d.hl7")
    clock.advance(0)
    assert not (tmp_path / "d.hl7").exists() and done(tmp_path) == [] and len(sink.received) == 1


@pytest.mark.parametrize("inbound, split, message", [
    ("csv", "hl7-batch", "needs inbound"),
    ("csv", "none", "needs split"),
])
def test_start_refuses_settings_that_cannot_work(tmp_path, inbound, split, message):
    source, _sink, _clock = make_source(tmp_path, inbound=inbound, split=split, start=False)
    failures = []
    source.start().addErrback(failures.append)
    assert failures and failures[0].check(ValueError) and message in str(failures[0].value)
    assert not source.running


def test_start_refuses_a_missing_inbox(tmp_path):
    source, _sink, _clock = make_source(tmp_path / "missing", start=False)
    failures = []
    source.start().addErrback(failures.append)
    assert failures and failures[0].check(FileNotFoundError)


def test_without_change_notification_the_scan_still_takes_files(tmp_path):
    def no_inotify():
        raise OSError(28, "inotify watch limit reached")

    source, sink, clock = make_source(tmp_path, settle=1.0, interval=2.0, observer_factory=no_inotify)
    assert source.running and source.observer is None
    (tmp_path / "p.hl7").write_text(hl7("P"))
    clock.advance(2.0)                   # a scan sees it
    assert sink.received == []
    clock.advance(1.0)                   # a look a settle later: unchanged, taken
    assert [text for text, _ in sink.received] == [hl7("P") + "\r"]
