"""``[engine] workers``: its range, PostgreSQL only, and a fixed port for every listening channel."""

from __future__ import annotations

import socket

import pytest

from engine.config.loader import load_config

from unit.config.test_config import mllp, only, problems_of, write_tree

PG = '[store]\nurl = "postgresql://switchboard@db.example.org/switchboard"\n'


def test_workers_default_to_one_and_take_a_number_on_postgresql(tmp_path):
    assert load_config(write_tree(tmp_path, {"a.toml": mllp(0)}, config=""), environ={}).engine.workers == 1
    config = write_tree(tmp_path, {"a.toml": mllp(2575)}, config="[engine]\nworkers = 4\n" + PG)
    assert load_config(config, environ={}).engine.workers == 4


@pytest.mark.parametrize("value, reason", [
    ("0", "must be from 1 to 64 (worker processes)"),
    ("65", "must be from 1 to 64 (worker processes)"),
    ('"two"', "must be a whole number, not 'two'"),
    ("1.5", "must be a whole number"),
])
def test_workers_out_of_range_or_not_a_number(tmp_path, value, reason):
    problem = only(problems_of(write_tree(tmp_path, {"a.toml": mllp(2575)}, config=f"[engine]\nworkers = {value}\n"
                                          + PG)), "engine.workers")
    assert problem.file.endswith("config.toml") and reason in problem.reason


def test_several_workers_on_sqlite_and_port_0_are_named_together(tmp_path):
    channels = {"a.toml": mllp(0), "b.toml": mllp(2575), "c.toml": mllp(0, enabled="false")}
    problems = problems_of(write_tree(tmp_path, channels, config="[engine]\nworkers = 2\n"))
    sqlite = only(problems, "engine.workers")
    assert sqlite.file.endswith("config.toml")
    assert sqlite.reason == ("needs [store] url (PostgreSQL): on SQLite one writer at a time makes a second worker "
                             "slower; see bench/README.md, 'A second core'")
    port = only(problems, "source.listen")    # a.toml only: b has a port, c is disabled
    assert port.file.endswith("a.toml") and port.reason.startswith("workers > 1 needs a fixed port in listen")


def test_one_worker_keeps_port_0_and_sqlite(tmp_path):
    config = load_config(write_tree(tmp_path, {"a.toml": mllp(0)}, config="[engine]\nworkers = 1\n"), environ={})
    assert config.engine.workers == 1


def test_a_system_without_so_reuseport_is_told(tmp_path, monkeypatch):
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    problem = only(problems_of(write_tree(tmp_path, {"a.toml": mllp(2575)}, config="[engine]\nworkers = 2\n" + PG)),
                   "engine.workers")
    assert "SO_REUSEPORT" in problem.reason and "workers = 1" in problem.reason
