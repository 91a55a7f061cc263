"""The SFTP connectors' own decisions, without a network: splitting, error classes, the poll cycle.

The real OpenSSH round trips are in test_sftp_e2e.py.  Here the SFTP client is replaced by a thin
adapter onto a local directory (the same calls paramiko's SFTPClient answers), and time by a
``Clock``, so each edge (a store refusal, a failed move, a file still growing) is exact.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from twisted.internet import defer, task

from engine.channel import Receipt
from engine.config_schema import BUILTIN, Context, check_table
from engine.connectors import sftp
from engine.delivery import Delivery, PermanentError, TransientError
from engine.templates import Templates
from support import hl7


# -- splitting -------------------------------------------------------------------------------
def test_hl7_batch_file_splits_into_cr_messages():
    text = "FHS|^~\\&\nBHS|^~\\&\n" + hl7("B1").replace("\r", "\n") + "\n" + hl7("B2").replace("\r", "\n") \
        + "\nBTS|2\nFTS|1\n"
    messages, problem = sftp.split_messages(text, "hl7-batch", "hl7")
    assert problem is None
    assert [text for text, _msh in messages] == [hl7("B1"), hl7("B2")]
    assert [msh.control_id for _text, msh in messages] == ["B1", "B2"]


def test_batch_count_mismatch_refuses_the_file():
    text = "BHS|^~\\&\r" + hl7("C1") + "\rBTS|3"
    messages, problem = sftp.split_messages(text, "hl7-batch", "hl7")
    assert messages == [] and "BTS-1" in problem


def test_one_bad_message_refuses_the_whole_file():
    text = hl7("G1") + "\r" + "MSH|^~\\&|too|short"
    messages, problem = sftp.split_messages(text, "hl7-batch", "hl7")
    assert messages == [] and problem.startswith("message 2:")


def test_csv_lines_keep_the_header_on_each_row():
    messages, problem = sftp.split_messages("account,amount\r\nA1,10\n\nA2,20\n", "lines", "csv")
    assert problem is None
    assert [text for text, _ in messages] == ["account,amount\nA1,10", "account,amount\nA2,20"]


@pytest.mark.parametrize("text", ["", "\ufeff\n \n"])
def test_an_empty_file_is_refused(text):
    assert sftp.split_messages(text, "none", "hl7") == ([], "the file holds no message")


# -- a local stand-in for paramiko's SFTPClient ------------------------------------------------
class LocalSftp:
    """The SFTPClient calls the connectors make, answered from the local disk."""

    fail_rename_into: str | None = None

    def listdir_attr(self, path):
        return [SimpleNamespace(filename=entry.name, st_mode=entry.stat().st_mode, st_size=entry.stat().st_size,
                                st_mtime=entry.stat().st_mtime) for entry in os.scandir(path)]

    def open(self, path, mode):
        handle = open(path, mode)
        handle.prefetch = handle.set_pipelined = lambda *a: None
        return handle

    def stat(self, path):
        return os.stat(path)

    def mkdir(self, path):
        os.mkdir(path)

    def posix_rename(self, old, new):
        if self.fail_rename_into and Path(new).parent.name == self.fail_rename_into:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        os.replace(old, new)

    def remove(self, path):
        os.remove(path)


class LocalSession:
    def __init__(self) -> None:
        self.sftp = LocalSftp()

    def run(self, function, *args):
        return defer.maybeDeferred(function, self.sftp, *args)

    def close(self):
        return defer.succeed(None)


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.refuse = False
        self.rejected: list[str] = []
        self.events: list[tuple[str, str]] = []

    def receive(self, text, *, msh=None, idempotency_key=None):
        if self.refuse:
            return defer.succeed(Receipt(None, False, error="the message could not be stored"))
        self.received.append((text, idempotency_key))
        return defer.succeed(Receipt(len(self.received), True))

    def note_rejected(self, reason):
        self.rejected.append(reason)

    def note_event(self, kind, detail):
        self.events.append((kind, detail))


def options(side: str, tmp_path: Path, **extra) -> dict:
    problems = []
    table = {"host": "127.0.0.1", "username": "u", "remote_path": str(tmp_path), **extra}
    result = check_table(table, BUILTIN[(side, "sftp")][0], side,
                         Context(tmp_path, side, lambda key, reason: problems.append((key, reason))))
    assert problems == []
    return result


def make_source(tmp_path, **extra):
    clock, sink = task.Clock(), Sink()
    config = SimpleNamespace(name="c", inbound="hl7",
                             source=SimpleNamespace(options=options("source", tmp_path, **extra)))
    source = sftp.SftpSource(config, sink, clock)
    source.session = LocalSession()
    return source, sink, clock


def test_store_refusal_leaves_the_file_and_the_reread_uses_the_same_keys(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("S1") + "\r" + hl7("S2"))
    source, sink, clock = make_source(tmp_path, split="hl7-batch", settle="0s", poll_interval="5s")
    sink.refuse = True
    source.start()
    clock.advance(0)
    assert (tmp_path / "a.hl7").exists() and sink.events[0][0] == "source_error"
    sink.refuse = False
    clock.advance(5)
    assert [text for text, _ in sink.received] == [hl7("S1"), hl7("S2")]
    assert (tmp_path / "done" / "a.hl7").exists() and not (tmp_path / "a.hl7").exists()
    keys = [key for _, key in sink.received]
    assert len(set(keys)) == 2 and all(key.startswith("sftp:") for key in keys)
    # a later re-read of the very same file (say after a crash before the move) repeats those keys
    os.replace(tmp_path / "done" / "a.hl7", tmp_path / "a.hl7")
    clock.advance(5)
    assert [key for _, key in sink.received[2:]] == keys


def test_a_failed_move_is_retried_without_storing_again(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("M1"))
    source, sink, clock = make_source(tmp_path, settle="0s", poll_interval="5s")
    source.session.sftp.fail_rename_into = "done"
    source.start()
    clock.advance(0)
    assert len(sink.received) == 1 and (tmp_path / "a.hl7").exists()
    source.session.sftp.fail_rename_into = None
    clock.advance(5)
    assert len(sink.received) == 1 and (tmp_path / "done" / "a.hl7").exists()


def test_oversize_and_non_utf8_files_go_to_error_with_a_reason(tmp_path):
    (tmp_path / "big.hl7").write_text(hl7("BIG") + "\rNTE|" + "x" * 2048)
    (tmp_path / "latin.hl7").write_bytes(hl7("L1").encode().replace(b"DOE", b"D\xd6E"))
    source, sink, clock = make_source(tmp_path, settle="0s", max_file_size="1KB", after="delete")
    source.start()
    clock.advance(0)
    assert sink.received == []
    assert "max_file_size" in (tmp_path / "error" / "big.hl7.reason").read_text()
    assert "UTF-8" in (tmp_path / "error" / "latin.hl7.reason").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["error"]


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
    assert [text for text, _ in sink.received] == [hl7("G1") + "\rNTE|1|more"]
    assert [p.name for p in tmp_path.iterdir()] == [".upload.hl7.tmp"]


def test_stop_cuts_the_settle_wait_short(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("ST1"))
    source, sink, clock = make_source(tmp_path, settle="1m")
    source.start()
    clock.advance(0)
    stopped = source.stop()
    assert stopped.called and sink.received == [] and sink.events == []
    assert not clock.getDelayedCalls()


# -- the destination's answer to each failure ------------------------------------------------
class FailingSession:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def run(self, function, *args):
        return defer.fail(self.error)


def destination(tmp_path, error=None, filename="{{ id }}.hl7"):
    config = SimpleNamespace(name="remote", options=options("destination", tmp_path, filename=filename))
    context = SimpleNamespace(templates=Templates(None), channel_name="c")
    connector = sftp.SftpDestination(config, context, None)
    connector.session = FailingSession(error) if error is not None else LocalSession()
    return connector


def outcome(connector):
    failures = []
    d = connector.send(Delivery(7, 42, hl7("D1")))
    d.addErrback(failures.append)
    return failures[0].value if failures else d.result


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
])
def test_everything_else_is_transient(tmp_path, error, words, duplicate):
    failed = outcome(destination(tmp_path, error))
    assert isinstance(failed, TransientError) and words in failed.reason
    assert failed.possible_duplicate is duplicate


def test_a_filename_leaving_the_directory_is_permanent(tmp_path):
    assert isinstance(outcome(destination(tmp_path, filename="../{{ id }}")), PermanentError)


def test_upload_renames_into_place_and_leaves_no_temp(tmp_path):
    result = outcome(destination(tmp_path))
    assert result.response == "uploaded 42.hl7"
    assert [p.name for p in tmp_path.iterdir()] == ["42.hl7"]
    assert (tmp_path / "42.hl7").read_bytes() == hl7("D1").encode()
