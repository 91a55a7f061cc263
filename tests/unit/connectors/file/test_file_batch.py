"""Batch files of the file destination (engine/connectors/file_batch.py): periods, appends, crash
repair and closing, on real temp directories.  A "crash" is a new ``BatchFiles`` over the same
directory (a new process) after the files were left as a crash would leave them."""

from __future__ import annotations

import os
from datetime import datetime
from types import SimpleNamespace

import pytest

from engine.connectors.file import batch as file_batch
from engine.connectors.file.batch import BatchFiles
from engine.connectors.file.destination import FileDestination
from engine.core.templates import Templates

HEADER = "account,amount"


def at(*fields) -> float:
    """Epoch of a local wall-clock time."""
    return datetime(*fields).timestamp()


# -- periods -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, when, label, end", [
    ("daily", (2026, 11, 25, 14, 7, 30), "20261125", (2026, 11, 26)),
    ("daily", (2026, 12, 31, 23, 59, 59), "20261231", (2027, 1, 1)),
    ("hourly", (2026, 11, 25, 14, 7, 30), "2026112514", (2026, 11, 25, 15)),
    (900.0, (2026, 11, 25, 14, 7, 30), "20261125140000", (2026, 11, 25, 14, 15)),
    (900.0, (2026, 11, 25, 14, 15, 0), "20261125141500", (2026, 11, 25, 14, 30)),
    (7 * 3600.0, (2026, 11, 25, 22, 0, 0), "20261125210000", (2026, 11, 26)),   # the day's last slot is short
])
def test_period_labels_and_ends(spec, when, label, end):
    assert file_batch.period_of(spec, at(*when)) == (label, at(*end))


@pytest.mark.parametrize("value, parsed", [("daily", "daily"), ("hourly", "hourly"), ("15m", 900.0), ("1d", 86400.0)])
def test_parse_period(value, parsed):
    assert file_batch.parse_period(value) == parsed


@pytest.mark.parametrize("value", ["weekly", "500ms", "2d"])
def test_parse_period_refuses(value):
    with pytest.raises(ValueError):
        file_batch.parse_period(value)


# -- appending and closing -------------------------------------------------------------------------
def visible(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_appends_stay_hidden_until_the_period_closes(tmp_path):
    files = BatchFiles(tmp_path)
    assert files.append("p-1.csv", "1", 10, b"A1,10", HEADER)
    assert files.append("p-1.csv", "1", 11, b"A2,20\n", HEADER)
    assert visible(tmp_path) == []                              # an agency sees nothing yet
    assert files.close_except("1") == [] and visible(tmp_path) == []
    assert files.close_except("2") == ["p-1.csv"]
    assert (tmp_path / "p-1.csv").read_text() == "account,amount\nA1,10\nA2,20\n"
    assert os.listdir(tmp_path / ".partial") == []


def test_the_same_delivery_is_written_once(tmp_path):
    files = BatchFiles(tmp_path)
    assert files.append("p.csv", "1", 7, b"A1", HEADER)
    assert not files.append("p.csv", "1", 7, b"A1", HEADER)
    again = BatchFiles(tmp_path)                                # after a restart, from the journal
    assert not again.append("p.csv", "1", 7, b"A1", HEADER)
    again.close_except("2")
    assert (tmp_path / "p.csv").read_text() == "account,amount\nA1\n"


def test_a_torn_append_is_cut_back_at_restart(tmp_path):
    BatchFiles(tmp_path).append("p.csv", "1", 1, b"A1", HEADER)
    with open(tmp_path / ".partial" / "p.csv.part", "ab") as part:
        part.write(b"A2,half a row")                           # written, never journaled: a crash
    files = BatchFiles(tmp_path)
    files.append("p.csv", "1", 2, b"A2,20", HEADER)
    files.close_except("2")
    assert (tmp_path / "p.csv").read_text() == "account,amount\nA1\nA2,20\n"


def test_a_torn_journal_line_is_dropped(tmp_path):
    BatchFiles(tmp_path).append("p.csv", "1", 1, b"A1", HEADER)
    with open(tmp_path / ".partial" / "p.csv.journal", "ab") as journal:
        journal.write(b"2 9")                                   # cut mid-line by a crash
    with open(tmp_path / ".partial" / "p.csv.part", "ab") as part:
        part.write(b"A2\n")
    files = BatchFiles(tmp_path)
    assert files.append("p.csv", "1", 2, b"A2", HEADER)        # not counted as written
    assert files.append("p.csv", "1", 3, b"A3", HEADER)
    files.close_except("2")
    assert (tmp_path / "p.csv").read_text() == "account,amount\nA1\nA2\nA3\n"


def test_a_crash_between_link_and_cleanup_finishes_without_a_copy(tmp_path):
    BatchFiles(tmp_path).append("p.csv", "1", 1, b"A1", HEADER)
    os.link(tmp_path / ".partial" / "p.csv.part", tmp_path / "p.csv")   # the close got this far
    assert BatchFiles(tmp_path).close_except("2") == ["p.csv"]
    assert visible(tmp_path) == ["p.csv"] and os.listdir(tmp_path / ".partial") == []


def test_closing_never_overwrites_a_file_not_yet_picked_up(tmp_path):
    (tmp_path / "p.csv").write_text("yesterday's, still there\n")
    files = BatchFiles(tmp_path)
    files.append("p.csv", "1", 1, b"A1", HEADER)
    assert files.close_except("2") == ["p-1.csv"]
    assert (tmp_path / "p.csv").read_text() == "yesterday's, still there\n"
    assert (tmp_path / "p-1.csv").read_text() == "account,amount\nA1\n"


def test_a_new_period_for_the_same_name_closes_the_old_one_first(tmp_path):
    files = BatchFiles(tmp_path)
    files.append("p.csv", "1", 1, b"A1", HEADER)
    files.append("p.csv", "2", 2, b"A2", HEADER)
    assert (tmp_path / "p.csv").read_text() == "account,amount\nA1\n"
    files.close_except("3")
    assert (tmp_path / "p-1.csv").read_text() == "account,amount\nA2\n"


def test_empty_and_orphan_parts_publish_nothing(tmp_path):
    files = BatchFiles(tmp_path)
    files._create("empty.csv", "1")                             # created, nothing committed
    (tmp_path / ".partial" / "orphan.csv.part").write_bytes(b"never journaled")
    assert files.close_except("2") == []
    assert visible(tmp_path) == [] and os.listdir(tmp_path / ".partial") == []


def test_without_header_and_with_names_per_account(tmp_path):
    files = BatchFiles(tmp_path)
    files.append("a-1.txt", "1", 1, b"x")
    files.append("b-1.txt", "1", 2, b"y")
    assert sorted(files.close_except("2")) == ["a-1.txt", "b-1.txt"]
    assert (tmp_path / "a-1.txt").read_text() == "x\n" and (tmp_path / "b-1.txt").read_text() == "y\n"


def test_shared_per_directory(tmp_path):
    assert file_batch.shared(tmp_path) is file_batch.shared(tmp_path / "." )
    assert file_batch.shared(tmp_path) is not file_batch.shared(tmp_path / "other")


# -- the destination's checks ----------------------------------------------------------------------
def destination(tmp_path, **options):
    config = SimpleNamespace(name="agency", options={"directory": tmp_path, "filename": "{{ id }}.txt",
                                                     "batch": None, "batch_header": "", **options})
    context = SimpleNamespace(templates=Templates(None), channel_name="c")
    return FileDestination(config, context, None)


def test_batch_filename_must_use_period(tmp_path):
    with pytest.raises(ValueError, match="period"):
        destination(tmp_path, batch="daily", filename="placements.csv")
    made = destination(tmp_path, batch="daily", filename="{{ meta.agency }}-{{ period }}.csv")
    assert made.batch is file_batch.shared(tmp_path) and made.timer is None   # no reactor: no timer


def test_batch_header_needs_batch(tmp_path):
    with pytest.raises(ValueError, match="batch_header"):
        destination(tmp_path, batch_header=HEADER)
