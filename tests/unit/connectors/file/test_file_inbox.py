"""The file source's blocking half (engine/connectors/file_inbox.py): judging, reading, splitting
and moving files, on real temp directories."""

from __future__ import annotations

import os

import pytest

from engine.connectors.file import inbox
from engine.connectors.file.inbox import Entry
from support.daemon import hl7

BATCH_HEAD = ["FHS|^~\\&|EHR", "BHS|^~\\&|EHR"]


def batch(*messages: str, count: str | None = None) -> str:
    bts = f"BTS|{len(messages) if count is None else count}"
    return "\r".join([*BATCH_HEAD, *messages, bts, "FTS|1"])


def control_ids(messages) -> list[str]:
    return [msh.control_id for _text, msh in messages]


# -- splitting -----------------------------------------------------------------------------------
def test_hl7_batch_is_split_and_counted():
    messages, problem = inbox.split_messages(batch(hl7("A"), hl7("B")), "hl7-batch", "hl7")
    assert problem is None and control_ids(messages) == ["A", "B"]
    assert all(text.startswith("MSH|") and "BTS" not in text for text, _ in messages)


def test_bts_count_mismatch_refuses_the_file():
    messages, problem = inbox.split_messages(batch(hl7("A"), hl7("B"), count="3"), "hl7-batch", "hl7")
    assert messages == [] and problem == "batch declares 3 messages (BTS-1) but holds 2"


def test_truncated_batch_is_refused():
    text = "\r".join([*BATCH_HEAD, hl7("A")])
    assert "truncated" in inbox.split_messages(text, "hl7-batch", "hl7")[1]


@pytest.mark.parametrize("split", ["none", "hl7-batch"])
def test_concatenated_messages_split_at_each_msh(split):
    text = hl7("A").replace("\r", "\r\n") + "\r\n" + hl7("B").replace("\r", "\n") + "\n"
    messages, problem = inbox.split_messages(text, split, "hl7")
    assert problem is None and control_ids(messages) == ["A", "B"]
    assert messages[1][0] == hl7("B") + "\r"  # segment endings normalized to CR, the last one too


def test_batch_needs_hl7_batch_split():
    problem = inbox.split_messages(batch(hl7("A")), "none", "hl7")[1]
    assert "split = \"hl7-batch\"" in problem


@pytest.mark.parametrize("text, expected", [
    ("hello\nworld\n", "not HL7"),
    (" \n\r\n", "holds no message"),
    ("FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1", "holds no message"),
    (hl7("A") + "\rMSH|^~\\&|X", "message 2 of 2: MSH has"),
    (hl7("") + "\r", "message 1 of 1: MSH-10"),
])
def test_refusals_name_the_problem_not_the_content(text, expected):
    messages, problem = inbox.split_messages(text, "hl7-batch", "hl7")
    assert messages == [] and expected in problem
    assert "DOE" not in problem and "hello" not in problem


def test_csv_lines_keep_the_header_on_each_row():
    messages, problem = inbox.split_messages("\ufeffaccount,amount\r\nA1,1\r\n\r\nA2,2\n", "lines", "csv")
    assert problem is None
    assert [text for text, _ in messages] == ["account,amount\nA1,1", "account,amount\nA2,2"]


def test_csv_header_only_and_bad_row():
    assert "no rows" in inbox.split_messages("account,amount\n", "lines", "csv")[1]
    problem = inbox.split_messages("a,b\n1,2\n1,2,3\n", "lines", "csv")[1]
    assert problem.startswith("message 2 of 2: invalid CSV")


def test_json_lines_and_whole_json_file():
    messages, problem = inbox.split_messages('{"a": 1}\n{"a": 2}\n', "lines", "json")
    assert problem is None and len(messages) == 2
    assert inbox.split_messages('{"a": [1,\n 2]}', "none", "json") == ([('{"a": [1,\n 2]}', None)], None)
    assert "invalid JSON" in inbox.split_messages('{"a": ', "none", "json")[1]


# -- names -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, problem", [
    ("ok-name.hl7", None),
    ("caf\u00e9.hl7", None),
    (os.fsdecode(b"bad\xff.hl7"), "not valid UTF-8"),
    ("line\nbreak.hl7", "control characters"),
    ("..", "path"),
    ("a\\..\\b.hl7", "path"),
])
def test_name_problems(name, problem):
    found = inbox.name_problem(name)
    assert (found is None) if problem is None else (problem in found)


def test_shown_escapes_what_a_log_must_not_carry():
    assert inbox.shown(os.fsdecode(b"bad\xff.hl7")) == "bad\\xff.hl7"
    assert inbox.shown("a\nb\x1b") == "a\\x0ab\\x1b"
    assert inbox.shown("caf\u00e9") == "caf\u00e9"


def test_wanted_skips_dot_files_and_other_patterns():
    assert inbox.wanted("a.hl7", "*.hl7") and not inbox.wanted(".a.hl7", "*.hl7")
    assert not inbox.wanted("a.HL7", "*.hl7")   # case matters, as on the file system


# -- reading ---------------------------------------------------------------------------------------
def entry_of(tmp_path, name) -> Entry:
    return inbox.stat_entry(tmp_path, name)


def prepare(tmp_path, name, *, seen=lambda sha: False, max_size=1 << 20, split="hl7-batch", inbound="hl7"):
    return inbox.prepare(tmp_path, entry_of(tmp_path, name), split=split, inbound=inbound, max_size=max_size,
                         seen=seen)


def test_prepare_reads_hashes_and_splits(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("A"))
    prepared = prepare(tmp_path, "a.hl7")
    assert prepared.outcome == "messages" and control_ids(prepared.messages) == ["A"]
    import hashlib

    assert prepared.sha256 == hashlib.sha256(hl7("A").encode()).hexdigest()


def test_prepare_seen_content_is_not_split(tmp_path):
    (tmp_path / "a.hl7").write_text("garbage that would be refused")
    asked = []
    prepared = prepare(tmp_path, "a.hl7", seen=lambda sha: asked.append(sha) or True)
    assert prepared.outcome == "seen" and asked == [prepared.sha256]


def test_prepare_refuses_links_fifos_empty_and_huge_without_reading(tmp_path):
    (tmp_path / "target.hl7").write_text(hl7("T"))
    os.symlink(tmp_path / "target.hl7", tmp_path / "link.hl7")
    os.mkfifo(tmp_path / "pipe.hl7")
    (tmp_path / "empty.hl7").write_bytes(b"")
    (tmp_path / "big.hl7").write_text(hl7("B", extra="NTE|1||" + "x" * 200))
    assert "symbolic link" in prepare(tmp_path, "link.hl7").reason
    assert prepare(tmp_path, "pipe.hl7").reason == "not a regular file"
    assert prepare(tmp_path, "empty.hl7").reason == "the file is empty"
    huge = prepare(tmp_path, "big.hl7", max_size=100)
    assert huge.outcome == "refused" and "over max_file_size (100 bytes)" in huge.reason


def test_read_refuses_a_file_swapped_for_a_link(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("A"))
    entry = entry_of(tmp_path, "a.hl7")
    os.unlink(tmp_path / "a.hl7")
    os.symlink(tmp_path / "elsewhere", tmp_path / "a.hl7")
    with pytest.raises(inbox.Refused, match="symbolic link"):
        inbox.read_stable(tmp_path, entry, 1000)


def test_a_file_that_changed_since_its_last_look_is_not_used(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("A"))
    entry = entry_of(tmp_path, "a.hl7")
    with open(tmp_path / "a.hl7", "a") as out:
        out.write("\rNTE|1||more")
    assert inbox.prepare(tmp_path, entry, split="none", inbound="hl7", max_size=1000,
                         seen=lambda sha: False).outcome == "changed"


def test_a_file_gone_before_the_read(tmp_path):
    (tmp_path / "a.hl7").write_text(hl7("A"))
    entry = entry_of(tmp_path, "a.hl7")
    os.unlink(tmp_path / "a.hl7")
    assert inbox.prepare(tmp_path, entry, split="none", inbound="hl7", max_size=1000,
                         seen=lambda sha: False).outcome == "gone"


def test_decoding_follows_msh_18_and_refuses_non_utf8_csv(tmp_path):
    latin = hl7("L", extra="NTE|1||caf\u00e9").replace("|P|2.5", "|P|2.5||||||8859/1").encode("latin-1")
    batch_latin = b"FHS|^~\\&\rBHS|^~\\&\r" + latin + b"\rBTS|1\rFTS|1"
    for data in (latin, batch_latin):
        text, original = inbox.decode_file(data, "hl7")
        assert "caf\u00e9" in text and original is None          # valid as declared: nothing kept
    with pytest.raises(inbox.Refused, match="not UTF-8"):
        inbox.decode_file("a,b\ncaf\u00e9,1".encode("latin-1"), "csv")
    assert inbox.decode_file("\ufeffa,b".encode("utf-8"), "csv") == ("a,b", None)


def test_a_file_with_bytes_invalid_for_its_charset_keeps_them(tmp_path):
    """RELIABILITY 17: Latin-1 bytes in a file that declares UTF-8 become U+FFFD in the text and the
    file's exact bytes come back as ``original`` (kept with its first message by the source)."""
    data = hl7("U", extra="NTE|1||caf\u00e9").replace("|P|2.5", "|P|2.5||||||UNICODE UTF-8").encode("latin-1")
    (tmp_path / "a.hl7").write_bytes(data + b"\r" + hl7("V").encode())
    prepared = prepare(tmp_path, "a.hl7")
    assert [msh.control_id for _text, msh in prepared.messages] == ["U", "V"]
    assert "caf\ufffd" in prepared.messages[0][0]
    assert prepared.original == data + b"\r" + hl7("V").encode()
    (tmp_path / "b.hl7").write_bytes(hl7("W").encode())
    assert prepare(tmp_path, "b.hl7").original is None


def test_scan_lists_files_and_links_not_directories(tmp_path):
    inbox.ensure_inbox(tmp_path)
    (tmp_path / "b.hl7").write_text("b")
    (tmp_path / ".hidden.hl7").write_text("h")
    (tmp_path / "c.txt").write_text("c")
    os.symlink(tmp_path / "b.hl7", tmp_path / "a.hl7")
    (tmp_path / "dir.hl7").mkdir()
    found = {entry.name: entry.kind for entry in inbox.scan(tmp_path, "*.hl7")}
    assert found == {"b.hl7": "file", "a.hl7": "link"}


def test_ensure_inbox_refuses_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        inbox.ensure_inbox(tmp_path / "missing")
    inbox.ensure_inbox(tmp_path)
    assert (tmp_path / "done").is_dir() and (tmp_path / "error").is_dir()


# -- moving ----------------------------------------------------------------------------------------
def test_moves_never_overwrite(tmp_path):
    inbox.ensure_inbox(tmp_path)
    for round_ in range(3):
        (tmp_path / "a.hl7").write_text(f"round {round_}")
        inbox.move_done(tmp_path, "a.hl7")
    done = tmp_path / "done"
    assert sorted(p.name for p in done.iterdir()) == ["a.hl7", "a.hl7.1", "a.hl7.2"]
    assert (done / "a.hl7.2").read_text() == "round 2"


def test_move_error_writes_the_reason_beside_the_file(tmp_path):
    inbox.ensure_inbox(tmp_path)
    (tmp_path / "error" / "x.hl7.reason").write_text("an old reason without its file")
    (tmp_path / "x.hl7").write_text("data")
    final = inbox.move_error(tmp_path, "x.hl7", "the reason", "abc")
    assert final == "x.hl7.1"
    assert (tmp_path / "error" / "x.hl7.1").read_text() == "data"
    assert (tmp_path / "error" / "x.hl7.1.reason").read_text() == "the reason\nsha256: abc\n"
    assert not (tmp_path / "x.hl7").exists()


def test_undecodable_name_is_moved_under_its_own_bytes(tmp_path):
    inbox.ensure_inbox(tmp_path)
    raw = b"bad\xff.hl7"
    with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as out:
        out.write(b"x")
    name = os.fsdecode(raw)
    inbox.move_error(tmp_path, name, inbox.name_problem(name))
    error = os.fsencode(tmp_path / "error")
    assert sorted(os.listdir(error)) == [raw, raw + b".reason"]


def test_moving_a_link_moves_the_link_not_its_target(tmp_path):
    inbox.ensure_inbox(tmp_path)
    target = tmp_path / "target"
    target.write_text("t")
    os.symlink(target, tmp_path / "l.hl7")
    inbox.move_error(tmp_path, "l.hl7", "link")
    assert (tmp_path / "error" / "l.hl7").is_symlink() and target.read_text() == "t"
