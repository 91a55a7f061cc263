"""The file source through the real daemon: RELIABILITY 31-33 on a real inbox directory."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from support.daemon import SAMPLES, Daemon, hl7, sample, wait_for

pytestmark = pytest.mark.slow

SETTLE = 0.2

FILE_CHANNEL = """
[source]
type = "file"
path = "inbox/{name}"
pattern = "{pattern}"
settle = "200ms"
{extra}

[metadata]
account = "{account}"

[[destination]]
name = "out"
type = "file"
directory = "outbox/{name}"
filename = "{{{{ id }}}}.txt"
{transform}
"""


def channel(name: str, *, pattern: str = "*.hl7", extra: str = "", account: str = "PID.18.1",
            transform: str = "", inbound: str = "") -> str:
    if "poll_interval" not in extra:
        extra += '\npoll_interval = "1s"'
    text = FILE_CHANNEL.format(name=name, pattern=pattern, extra=extra, account=account, transform=transform)
    return (f'inbound = "{inbound}"\n' if inbound else "") + text


CSV_TRANSFORM = """
  [destination.transform]
  inline = "{{ msg.account }};{{ msg['amount'] }}"
  outbound = "text"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    for name in ("hl7", "csv", "polled", "deleting"):
        (root / "inbox" / name).mkdir(parents=True)
    d = Daemon(root, {
        "hl7": channel("hl7", extra='split = "hl7-batch"\nmax_file_size = "64KB"'),
        "csv": channel("csv", pattern="*.csv", extra='split = "lines"', account="account",
                       transform=CSV_TRANSFORM, inbound="csv"),
        "polled": channel("polled", extra='poll = true\npoll_interval = "200ms"'),
        "deleting": channel("deleting", extra='after = "delete"'),
    })
    d.start()
    yield d
    d.stop()


def rows(daemon: Daemon, channel_name: str, control_id: str | None = None) -> list[tuple]:
    sql = "SELECT id, control_id, raw FROM messages WHERE channel = ?"
    args: tuple = (channel_name,)
    if control_id is not None:
        sql, args = sql + " AND control_id = ?", (*args, control_id)
    with sqlite3.connect(daemon.db) as conn:
        return conn.execute(sql + " ORDER BY id", args).fetchall()


def inbox(daemon: Daemon, name: str):
    return daemon.root / "inbox" / name


def drop(daemon: Daemon, channel_name: str, name: str, content: str | bytes) -> None:
    """Write a file elsewhere, then rename it into the inbox (how a careful sender delivers)."""
    staging = daemon.root / "staging"
    staging.mkdir(exist_ok=True)
    path = staging / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.replace(path, inbox(daemon, channel_name) / name)


def wait_file(path, timeout: float = 10.0):
    return wait_for(path.exists, timeout, what=f"{path.name} to appear in {path.parent.name}/")


def batch(*messages: str, count: int | None = None) -> str:
    declared = len(messages) if count is None else count
    return "\r".join(["FHS|^~\\&|EHR", "BHS|^~\\&|EHR", *messages, f"BTS|{declared}", "FTS|1"]) + "\r"


def test_batch_file_split_stored_and_delivered(daemon):
    drop(daemon, "hl7", "batch-1.hl7", batch(hl7("FB-1", account="A1"), hl7("FB-2", account="A2"),
                                             hl7("FB-3", account="A3")))
    wait_file(inbox(daemon, "hl7") / "done" / "batch-1.hl7")
    stored = [r for r in rows(daemon, "hl7") if r[1].startswith("FB-")]
    assert [r[1] for r in stored] == ["FB-1", "FB-2", "FB-3"]
    assert all(r[2].startswith("MSH|") and "BHS" not in r[2] for r in stored)
    for message_id, control_id, raw in stored:
        daemon.wait_status(message_id, "SENT")
        assert (daemon.root / "outbox" / "hl7" / f"{message_id}.txt").read_bytes().decode() == raw
    listed = daemon.cli_json("messages", "--channel", "hl7", "--control-id", "FB-2")
    assert listed[0]["meta"]["account"] == "A2"
    assert not (inbox(daemon, "hl7") / "batch-1.hl7").exists()


def test_plain_sequence_of_messages_is_split(daemon):
    text = "\n".join([hl7("SEQ-1").replace("\r", "\n"), hl7("SEQ-2").replace("\r", "\n")]) + "\n"
    drop(daemon, "hl7", "sequence.hl7", text)
    wait_file(inbox(daemon, "hl7") / "done" / "sequence.hl7")
    assert [r[1] for r in rows(daemon, "hl7") if r[1].startswith("SEQ-")] == ["SEQ-1", "SEQ-2"]


def test_real_sample_files(daemon):
    names = sorted(p.name for p in SAMPLES.glob("*.hl7"))[:5]
    for name in names:
        drop(daemon, "hl7", f"sample-{name}", sample(name).replace("\r", "\r\n"))   # CRLF files
    for name in names:
        wait_file(inbox(daemon, "hl7") / "done" / f"sample-{name}")


def test_slow_writer_is_not_read_early(daemon):  # RELIABILITY 31
    message = hl7("SLOW-1", extra="NTE|1||" + "slow writer" * 40)
    path = inbox(daemon, "hl7") / "slow.hl7"
    data = message.encode()
    pieces = [data[i:i + len(data) // 20 + 1] for i in range(0, len(data), len(data) // 20 + 1)]
    started = time.monotonic()
    with open(path, "wb") as out:
        for piece in pieces:          # a write every 60 ms (< settle) for over a second
            out.write(piece)
            out.flush()
            time.sleep(0.06)          # the writer's pace, not a wait for the daemon
            assert rows(daemon, "hl7", "SLOW-1") == []
            assert not (inbox(daemon, "hl7") / "error" / "slow.hl7").exists()
            assert path.exists()
    assert time.monotonic() - started > 5 * SETTLE
    wait_file(inbox(daemon, "hl7") / "done" / "slow.hl7")
    stored = rows(daemon, "hl7", "SLOW-1")
    assert len(stored) == 1 and stored[0][2] == message + "\r"   # the final CR added (§3.5)


def test_bts_count_mismatch_goes_to_error(daemon):
    drop(daemon, "hl7", "short.hl7", batch(hl7("BTS-1"), hl7("BTS-2"), count=3))
    wait_file(inbox(daemon, "hl7") / "error" / "short.hl7.reason")
    wait_file(inbox(daemon, "hl7") / "error" / "short.hl7")  # the reason is written before the move
    reason = (inbox(daemon, "hl7") / "error" / "short.hl7.reason").read_text()
    assert "BTS-1" in reason and "3" in reason and "2" in reason
    assert (inbox(daemon, "hl7") / "error" / "short.hl7").exists()
    assert rows(daemon, "hl7", "BTS-1") == [] and rows(daemon, "hl7", "BTS-2") == []


def test_garbage_file_goes_to_error_with_reason(daemon):
    drop(daemon, "hl7", "garbage.hl7", b"\x00\xffPK\x03\x04 not a message DOE^JANE\n")
    reason_file = inbox(daemon, "hl7") / "error" / "garbage.hl7.reason"
    wait_file(reason_file)
    wait_file(inbox(daemon, "hl7") / "error" / "garbage.hl7")  # the reason is written before the move
    reason = reason_file.read_text()
    assert reason.startswith("not HL7") and "DOE" not in reason
    assert (inbox(daemon, "hl7") / "error" / "garbage.hl7").read_bytes().startswith(b"\x00\xffPK")


def test_one_bad_message_refuses_the_whole_file(daemon):
    short_msh = "MSH|^~\\&|EHR|HOSP\rPID|1"
    drop(daemon, "hl7", "mixed.hl7", hl7("MIX-1") + "\r" + short_msh + "\r")
    reason_file = inbox(daemon, "hl7") / "error" / "mixed.hl7.reason"
    wait_file(reason_file)
    assert "message 2 of 2" in reason_file.read_text()
    assert rows(daemon, "hl7", "MIX-1") == []   # nothing of a refused file is stored


def test_csv_rows_become_messages(daemon):
    drop(daemon, "csv", "payments.csv", "account,amount\r\nACC-1,10.00\r\n\r\nACC-2,20.50\r\nACC-3,7\r\n")
    wait_file(inbox(daemon, "csv") / "done" / "payments.csv")
    stored = rows(daemon, "csv")
    assert [r[2] for r in stored] == ["account,amount\nACC-1,10.00", "account,amount\nACC-2,20.50",
                                      "account,amount\nACC-3,7"]
    outputs = []
    for message_id, _cid, _raw in stored:
        daemon.wait_status(message_id, "SENT")
        outputs.append((daemon.root / "outbox" / "csv" / f"{message_id}.txt").read_text())
    assert outputs == ["ACC-1;10.00", "ACC-2;20.50", "ACC-3;7"]
    assert daemon.cli_json("messages", "--channel", "csv", "--meta", "account=ACC-2")[0]["id"] == stored[1][0]


def test_csv_header_without_rows_is_refused(daemon):
    drop(daemon, "csv", "header-only.csv", "account,amount\n")
    reason_file = inbox(daemon, "csv") / "error" / "header-only.csv.reason"
    wait_file(reason_file)
    assert "no rows" in reason_file.read_text()


def test_identical_file_dropped_again_is_not_processed(daemon):  # RELIABILITY 33
    content = hl7("AGAIN-1")
    drop(daemon, "hl7", "again.hl7", content)
    wait_file(inbox(daemon, "hl7") / "done" / "again.hl7")
    drop(daemon, "hl7", "again.hl7", content)            # same name, same content
    wait_file(inbox(daemon, "hl7") / "done" / "again.hl7.1")
    drop(daemon, "hl7", "again-renamed.hl7", content)    # other name, same content
    wait_file(inbox(daemon, "hl7") / "done" / "again-renamed.hl7")
    assert len(rows(daemon, "hl7", "AGAIN-1")) == 1
    wait_for(lambda: sum("already processed" in line for line in daemon.log_lines) >= 2, what="log notes")


def test_symlink_empty_and_empty_batch_are_refused(daemon, tmp_path):  # RELIABILITY 33
    target = tmp_path / "outside.hl7"
    target.write_text(hl7("LINK-1"))
    os.symlink(target, inbox(daemon, "hl7") / "link.hl7")
    (inbox(daemon, "hl7") / "empty.hl7").write_bytes(b"")
    drop(daemon, "hl7", "empty-batch.hl7", "FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r")
    error = inbox(daemon, "hl7") / "error"
    for name in ("link.hl7", "empty.hl7", "empty-batch.hl7"):
        wait_file(error / f"{name}.reason")
    assert "symbolic link" in (error / "link.hl7.reason").read_text()
    assert (error / "link.hl7").is_symlink() and target.read_bytes() == hl7("LINK-1").encode()   # never followed
    assert "empty" in (error / "empty.hl7.reason").read_text()
    assert "no message" in (error / "empty-batch.hl7.reason").read_text()
    assert rows(daemon, "hl7", "LINK-1") == []


def test_huge_file_is_refused_unread(daemon):
    drop(daemon, "hl7", "huge.hl7", hl7("HUGE-1", extra="NTE|1||" + "x" * 70_000))
    reason_file = inbox(daemon, "hl7") / "error" / "huge.hl7.reason"
    wait_file(reason_file)
    assert "max_file_size" in reason_file.read_text()
    assert rows(daemon, "hl7", "HUGE-1") == []


def test_undecodable_and_control_character_names(daemon):
    folder = os.fsencode(inbox(daemon, "hl7"))
    with open(os.path.join(folder, b"bad-\xff-name.hl7"), "wb") as out:
        out.write(hl7("NAME-1").encode())
    with open(os.path.join(folder, b"line\nbreak.hl7"), "wb") as out:
        out.write(hl7("NAME-2").encode())
    error = os.path.join(folder, b"error")
    wait_for(lambda: os.path.exists(os.path.join(error, b"bad-\xff-name.hl7.reason")), 10, what="reason")
    wait_for(lambda: os.path.exists(os.path.join(error, b"line\nbreak.hl7.reason")), 10, what="reason")
    with open(os.path.join(error, b"bad-\xff-name.hl7.reason"), "rb") as reason:
        assert b"not valid UTF-8" in reason.read()
    with open(os.path.join(error, b"line\nbreak.hl7.reason"), "rb") as reason:
        assert b"control characters" in reason.read()
    assert rows(daemon, "hl7", "NAME-1") == [] and rows(daemon, "hl7", "NAME-2") == []
    wait_for(lambda: any("bad-\\xff-name.hl7" in line for line in daemon.log_lines), 10,
             what="the escaped name in the log")   # the line follows the .reason file
    assert not any(line.endswith("line") for line in daemon.log_lines)          # no raw newline


def test_dot_files_and_other_patterns_are_left_alone(daemon):
    hidden = inbox(daemon, "hl7") / ".upload.hl7"
    other = inbox(daemon, "hl7") / "notes.txt"
    hidden.write_text(hl7("DOT-1"))
    other.write_text(hl7("DOT-2"))
    (inbox(daemon, "hl7") / "after-dot.hl7").write_text(hl7("DOT-3"))   # written last, same settle path
    # files are taken one at a time in the order they became stable: had the first two been taken,
    # they would have been finished before this one
    wait_file(inbox(daemon, "hl7") / "done" / "after-dot.hl7")
    assert hidden.exists() and other.exists()
    assert rows(daemon, "hl7", "DOT-1") == [] and rows(daemon, "hl7", "DOT-2") == []


def test_polling_mode(daemon):
    (inbox(daemon, "polled") / "polled.hl7").write_text(hl7("POLL-1"))
    wait_file(inbox(daemon, "polled") / "done" / "polled.hl7")
    assert len(rows(daemon, "polled", "POLL-1")) == 1
    assert any("polling" in line and "inbox/polled" in line for line in daemon.log_lines)


def test_after_delete_deletes_only_processed_files(daemon):
    drop(daemon, "deleting", "gone.hl7", hl7("DEL-1"))
    drop(daemon, "deleting", "kept.hl7", "not hl7 at all")
    wait_file(inbox(daemon, "deleting") / "error" / "kept.hl7.reason")
    wait_for(lambda: rows(daemon, "deleting", "DEL-1") and not (inbox(daemon, "deleting") / "gone.hl7").exists(),
             what="gone.hl7 stored and deleted")
    assert not (inbox(daemon, "deleting") / "done" / "gone.hl7").exists()
    assert (inbox(daemon, "deleting") / "error" / "kept.hl7").read_text() == "not hl7 at all"


def test_no_content_in_log(daemon):
    assert not any("DOE" in line or "JANE" in line or "ACC-1" in line for line in daemon.log_lines)


# -- restarts: their own daemons -----------------------------------------------------------------
def test_restart_reads_nothing_twice(tmp_path):
    (tmp_path / "inbox" / "r").mkdir(parents=True)
    d = Daemon(tmp_path, {"r": channel("r")})
    d.start()
    try:
        drop(d, "r", "first.hl7", hl7("RST-1"))
        wait_file(inbox(d, "r") / "done" / "first.hl7")
    finally:
        d.stop()
    drop(d, "r", "first.hl7", hl7("RST-1"))                 # dropped again while stopped
    os.link(inbox(d, "r") / "done" / "first.hl7", inbox(d, "r") / "copy.hl7")
    d.start()
    try:
        wait_file(inbox(d, "r") / "done" / "first.hl7.1")
        wait_file(inbox(d, "r") / "done" / "copy.hl7")
        assert len(rows(d, "r", "RST-1")) == 1
    finally:
        d.stop()


def test_kill_mid_file_resumes_without_duplicates(tmp_path):
    """SIGKILL while a big file is being stored: at restart the file is read again and only the
    messages not yet stored are added (dedupe is off here: the per-file keys do it)."""
    (tmp_path / "inbox" / "big").mkdir(parents=True)
    d = Daemon(tmp_path, {"big": channel("big", extra='dedupe = "0"\nmax_file_size = "50MB"')})
    d.start()
    total = 20_000
    text = "\r".join(hl7(f"BIG-{n}") for n in range(total)) + "\r"
    try:
        drop(d, "big", "big.hl7", text)
        wait_for(lambda: len(rows(d, "big")) > 0, 20, interval=0.005, what="the first messages stored")
    finally:
        d.kill()
    stored_before = len(rows(d, "big"))
    assert 0 < stored_before < total, "the file was finished before the kill: make it bigger"
    assert (inbox(d, "big") / "big.hl7").exists()
    d.start()
    try:
        wait_file(inbox(d, "big") / "done" / "big.hl7", timeout=60)
        stored = rows(d, "big")
        assert len(stored) == total
        assert len({r[1] for r in stored}) == total
    finally:
        d.stop()
