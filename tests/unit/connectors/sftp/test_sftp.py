"""The SFTP connectors' own decisions, without a network: error classes and the poll cycle.

The real OpenSSH round trips are in test_sftp_e2e.py.  Here the SFTP client is replaced by a thin
adapter onto a local directory (the SFTPClient calls the connectors make, answered the way OpenSSH
answers them), and time by a ``Clock``, so each edge (a store refusal, a failed move, a file still
growing, a re-dropped file) is exact.  Splitting and decoding are the file source's
(``file_inbox``) and tested there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from twisted.internet import defer, task

from engine.core.channel import Receipt
from engine.config.schema import Context, check_table
from engine.connectors.sftp import destination as sftp
from engine.core.contracts import Delivery, PermanentError, TransientError
from engine.core.plugins import load_plugins
from engine.core.templates import Templates
from support.daemon import hl7


def test_registered_through_the_plugin_hooks_with_schemas():
    registry = load_plugins(None, entry_points=False)
    assert registry.sources["sftp"] is sftp.SftpSource and registry.destinations["sftp"] is sftp.SftpDestination
    for cls in (sftp.SftpSource, sftp.SftpDestination):
        assert {"host", "username", "known_hosts", "remote_path"} <= set(cls.option_schema)
        assert cls.option_schema["insecure_skip_host_key_check"].default is False


# -- a local stand-in for paramiko's SFTPClient ------------------------------------------------
class LocalFile:
    def __init__(self, path, mode) -> None:
        self.handle = open(path, mode)

    def stat(self):
        return os.fstat(self.handle.fileno())

    def prefetch(self, size=None):
        pass

    def set_pipelined(self, on=True):
        pass

    def read(self, size):
        return self.handle.read(size)

    def write(self, data):
        self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


class LocalSftp:
    """SFTPClient's calls answered from the local disk; ``broken`` makes renames into a folder fail."""

    broken: dict[str, BaseException] = {}

    def listdir_attr(self, path):
        return [SimpleNamespace(filename=entry.name, **{k: getattr(entry.stat(follow_symlinks=False), k)
                                                        for k in ("st_mode", "st_size", "st_mtime")})
                for entry in os.scandir(path)]

    def open(self, path, mode):
        return LocalFile(path, mode)

    def stat(self, path):
        return os.stat(path)

    def lstat(self, path):
        return os.lstat(path)

    def mkdir(self, path):
        os.mkdir(path)

    def _into(self, new):
        error = self.broken.get(Path(new).parent.name)
        if error is not None:
            raise error

    def rename(self, old, new):          # OpenSSH's SSH_FXP_RENAME refuses an existing target
        self._into(new)
        if os.path.lexists(new):
            raise IOError("Failure")
        os.rename(old, new)

    def posix_rename(self, old, new):
        self._into(new)
        os.replace(old, new)

    def remove(self, path):
        os.remove(path)


class LocalSession:
    def __init__(self) -> None:
        self.sftp = LocalSftp()
        self.sftp.broken = {}

    def run(self, function, *args):
        return defer.maybeDeferred(function, self.sftp, *args)

    def close(self):
        return defer.succeed(None)


class Store:
    """The two store calls a source makes about files (``source_files``)."""

    def __init__(self) -> None:
        self.files: list[tuple[str, str, int]] = []

    def mark_file(self, channel, sha256, name, status, messages=0):
        self.files.append((sha256, status, messages))
        return defer.succeed(len(self.files))

    def file_seen(self, channel, sha256):
        return next(({"messages": n} for sha, status, n in self.files if sha == sha256 and status == "done"), None)


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.originals: list[bytes | None] = []
        self.refuse = False
        self.rejected: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.store = Store()

    def receive(self, text, *, msh=None, idempotency_key=None, original=None):
        if self.refuse:
            return defer.succeed(Receipt(None, False, error="the message could not be stored"))
        self.received.append((text, idempotency_key))
        self.originals.append(original)
        return defer.succeed(Receipt(len(self.received), True))

    def note_rejected(self, reason):
        self.rejected.append(reason)

    def note_event(self, kind, detail):
        self.events.append((kind, detail))


def options(schema, tmp_path: Path, **extra) -> dict:
    problems = []
    table = {"host": "127.0.0.1", "username": "u", "remote_path": str(tmp_path), **extra}
    result = check_table(table, schema, "x", Context(tmp_path, "source", lambda k, r: problems.append((k, r))))
    assert problems == []
    return result


def make_source(tmp_path, inbound="hl7", **extra):
    clock, sink = task.Clock(), Sink()
    config = SimpleNamespace(name="c", inbound=inbound,
                             source=SimpleNamespace(options=options(sftp.SftpSource.option_schema, tmp_path, **extra)))
    source = sftp.SftpSource(config, sink, clock)
    source.session = LocalSession()
    source.seen = lambda sha256: defer.succeed(sink.store.file_seen("c", sha256) is not None)
    return source, sink, clock


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_a_batch_is_stored_recorded_then_moved_never_overwriting(tmp_path):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.hl7").write_text("an older file of the same name")
    (tmp_path / "a.hl7").write_text(hl7("S1").replace("\r", "\n") + "\n" + hl7("S2").replace("\r", "\n"))
    source, sink, clock = make_source(tmp_path, split="hl7-batch", settle="0s")
    source.start()
    clock.advance(0)
    assert [text for text, _ in sink.received] == [hl7("S1") + "\r", hl7("S2") + "\r"]
    keys = [key for _, key in sink.received]
    assert len(set(keys)) == 2 and all(key.startswith("sftp:") for key in keys)
    assert [(status, n) for _sha, status, n in sink.store.files] == [("done", 2)]
    assert names(tmp_path / "done") == ["a.hl7", "a.hl7.1"]
    assert (tmp_path / "done" / "a.hl7").read_text() == "an older file of the same name"


def test_a_file_invalid_for_its_charset_hands_its_bytes_on_with_its_first_message(tmp_path):
    """RELIABILITY 17, as the local file source: replaced in the text, the exact bytes once."""
    data = hl7("S1").encode().replace(b"DOE", b"D\xffE") + b"\r" + hl7("S2").encode()
    (tmp_path / "a.hl7").write_bytes(data)
    source, sink, clock = make_source(tmp_path, split="hl7-batch", settle="0s")
    source.start()
    clock.advance(0)
    assert "D\ufffdE" in sink.received[0][0] and sink.originals == [data, None]


def test_store_refusal_leaves_the_file_for_the_next_poll(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("R1"))
    source, sink, clock = make_source(tmp_path, settle="0s", poll_interval="5s")
    sink.refuse = True
    source.start()
    clock.advance(0)
    assert names(tmp_path) == ["a.hl7"] and sink.events[0][0] == "source_error"
    assert sink.store.files == []
    sink.refuse = False
    clock.advance(5)
    assert [text for text, _ in sink.received] == [hl7("R1") + "\r"] and names(tmp_path / "done") == ["a.hl7"]


def test_a_re_dropped_identical_file_is_recognised_and_only_moved(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("D1"))
    source, sink, clock = make_source(tmp_path, settle="0s", poll_interval="5s")
    source.start()
    clock.advance(0)
    (tmp_path / "again.hl7").write_text(hl7("D1"))
    clock.advance(5)
    assert len(sink.received) == 1
    assert ("file_duplicate", "content already processed") in sink.events
    assert names(tmp_path / "done") == ["a.hl7", "again.hl7"]


def test_a_dropped_link_during_the_move_retries_only_the_move(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("M1"))
    source, sink, clock = make_source(tmp_path, settle="0s", poll_interval="5s")
    source.session.sftp.broken["done"] = EOFError()
    source.start()
    clock.advance(0)
    assert len(sink.received) == 1 and names(tmp_path) == ["a.hl7", "done"]
    source.session.sftp.broken.clear()
    clock.advance(5)
    assert len(sink.received) == 1 and names(tmp_path / "done") == ["a.hl7"]
    assert [status for _sha, status, _n in sink.store.files] == ["done"]


def test_a_move_the_server_refuses_is_not_retried_until_the_file_changes(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("P1"))
    source, sink, clock = make_source(tmp_path, settle="0s", poll_interval="5s")
    source.session.sftp.broken["done"] = PermissionError(errno.EACCES, "Permission denied")
    source.start()
    clock.advance(0)
    clock.advance(5)
    clock.advance(5)
    assert len(sink.received) == 1
    assert sink.events.count(("source_error", "cannot move a file to done/")) == 1
    source.session.sftp.broken.clear()
    os.utime(tmp_path / "a.hl7", (0, 1_000_000))      # it changed: looked at again, content known
    clock.advance(5)
    assert len(sink.received) == 1 and names(tmp_path / "done") == ["a.hl7"]


def test_refused_files_go_to_error_with_reasons_and_nothing_is_stored(tmp_path):
    (tmp_path / "big.hl7").write_text(hl7("BIG") + "\rNTE|" + "x" * 2048)
    (tmp_path / "junk.hl7").write_text("not hl7 at all\n")
    (tmp_path / "empty.hl7").write_text("")
    os.symlink("/etc/passwd", tmp_path / "link.hl7")
    source, sink, clock = make_source(tmp_path, settle="0s", max_file_size="1KB", after="delete")
    source.start()
    clock.advance(0)
    assert sink.received == [] and len(sink.rejected) == 4
    error = tmp_path / "error"
    assert names(tmp_path) == ["error"]
    assert "max_file_size" in (error / "big.hl7.reason").read_text()
    assert "not HL7" in (error / "junk.hl7.reason").read_text()
    assert "empty" in (error / "empty.hl7.reason").read_text()
    assert "symbolic link" in (error / "link.hl7.reason").read_text()
    assert os.path.islink(error / "link.hl7")                        # moved, never followed
    assert "sha256: " in (error / "junk.hl7.reason").read_text()     # read, so its hash is known
    assert not any(name.startswith(".") for name in names(error))    # no temp reason file left


def test_a_growing_file_waits_for_settle_and_dot_files_are_ignored(tmp_path):
    growing = tmp_path / "g.hl7"
    growing.write_text(hl7("G1"))
    (tmp_path / ".upload.hl7.tmp").write_text(hl7("HIDDEN"))
    source, sink, clock = make_source(tmp_path, settle="1s", poll_interval="5s", after="delete")
    source.start()
    clock.advance(0)
    growing.write_text(hl7("G1") + "\rNTE|1|more")    # still being written during the settle wait
    clock.advance(1)
    assert sink.received == [] and growing.exists()
    clock.advance(5)
    clock.advance(1)
    assert [text for text, _ in sink.received] == [hl7("G1") + "\rNTE|1|more\r"]
    assert names(tmp_path) == [".upload.hl7.tmp"]


def test_stop_cuts_the_settle_wait_short(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("ST1"))
    source, sink, clock = make_source(tmp_path, settle="1m")
    source.start()
    clock.advance(0)
    stopped = source.stop()
    assert stopped.called and sink.received == [] and sink.events == []
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("inbound, split", [("json", "hl7-batch"), ("csv", "none")])
def test_contradictory_split_fails_the_start(tmp_path, inbound, split):
    source, _sink, _clock = make_source(tmp_path, inbound=inbound, split=split)
    with pytest.raises(ValueError, match="needs"):
        source.start()


# -- the destination's answer to each failure ------------------------------------------------
class FailingSession:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def run(self, function, *args):
        return defer.fail(self.error)


def destination(tmp_path, error=None, filename="{{ id }}.hl7"):
    config = SimpleNamespace(name="remote", options=options(sftp.SftpDestination.option_schema, tmp_path,
                                                            filename=filename))
    context = SimpleNamespace(templates=Templates(None), channel_name="c")
    connector = sftp.SftpDestination(config, context, None)
    connector.session = FailingSession(error) if error is not None else LocalSession()
    return connector


def outcome(connector):
    failures = []
    d = connector.send(Delivery(7, 42, hl7("D1")))
    d.addErrback(failures.append)
    return failures[0].value if failures else d.result


def connecting(error):
    error.sftp_connecting = True
    return error


def staged(error, stage):
    error.sftp_stage = stage
    return error


@pytest.mark.parametrize("error", [
    IOError(errno.ENOENT, "No such file"),          # what paramiko raises for SSH_FX_NO_SUCH_FILE
    IOError(errno.EACCES, "Permission denied"),      # ... and for SSH_FX_PERMISSION_DENIED
])
def test_missing_directory_or_permission_is_permanent(tmp_path, error):
    assert isinstance(outcome(destination(tmp_path, error)), PermanentError)


@pytest.mark.parametrize("error, words, duplicate", [
    (ConnectionResetError(errno.ECONNRESET, "reset"), "connection failed", False),
    (TimeoutError("timed out"), "timed out", False),
    (paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 22): OSError("refused")}), "refused", False),
    (paramiko.AuthenticationException("no"), "authentication failed", False),
    (paramiko.BadHostKeyException("h", SimpleNamespace(get_base64=lambda: "A"),
                                  SimpleNamespace(get_base64=lambda: "B")), "host key does not match", False),
    (IOError("Failure"), "reported a failure", False),                 # SSH_FX_FAILURE: disk full, ...
    (staged(EOFError(), "rename"), "rename failed", True),              # it may have been renamed
    (connecting(FileNotFoundError(errno.ENOENT, "No such file")), "cannot connect", False),  # our key file
])
def test_everything_else_is_transient(tmp_path, error, words, duplicate):
    failed = outcome(destination(tmp_path, error))
    assert isinstance(failed, TransientError) and words in failed.reason
    assert failed.possible_duplicate is duplicate


def test_a_filename_leaving_the_directory_is_permanent(tmp_path):
    assert isinstance(outcome(destination(tmp_path, filename="../{{ id }}")), PermanentError)


def test_upload_renames_into_place_and_leaves_no_temp(tmp_path):
    (tmp_path / "42.hl7").write_bytes(b"an earlier attempt")         # a re-send replaces it
    result = outcome(destination(tmp_path))
    assert result.response == "uploaded 42.hl7"
    assert names(tmp_path) == ["42.hl7"]
    assert (tmp_path / "42.hl7").read_bytes() == (hl7("D1") + "\r").encode()   # HL7 written ends with CR (§3.5)
