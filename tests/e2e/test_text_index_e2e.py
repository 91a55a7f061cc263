"""The full-text index is written in bulk a little after a message's commit (engine/store/sqlite/
writer.py ``stage``): a message is found by ``messages --text`` within a second of its AA, and a
daemon killed between a message's commit and its indexing indexes it at the next start (text.py
``catch_up``)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from support.daemon import MLLP_CHANNEL, Daemon, MllpClient, hl7, wait_for

pytestmark = pytest.mark.slow


def indexed_through(daemon: Daemon) -> int:
    with closing(sqlite3.connect(daemon.db)) as conn:
        return conn.execute("SELECT indexed_through FROM text_index WHERE id = 1").fetchone()[0]


def found(daemon: Daemon, word: str) -> list[str]:
    return [m["control_id"] for m in daemon.cli_json("messages", "--text", word)]


def test_searchable_within_a_second_and_indexed_after_a_kill(tmp_path):
    daemon = Daemon(tmp_path, {"inbound": MLLP_CHANNEL.format(source_extra="")}).start(expect_channels=1)
    try:
        client = MllpClient(daemon.ports["inbound"])
        assert client.request(hl7("SOON-1", mrn="MRNSOON1"))["code"] == "AA"
        acked = time.monotonic()
        wait_for(lambda: indexed_through(daemon) >= 1, timeout=5, interval=0.01, what="the index")
        assert time.monotonic() - acked < 1.0
        assert found(daemon, "MRNSOON1") == ["SOON-1"]

        assert client.request(hl7("KILL-2", mrn="MRNKILLED2"))["code"] == "AA"
        daemon.kill()  # SIGKILL right after the AA: its index rows are still held (0.5 s)
        assert indexed_through(daemon) == 1  # committed, not yet indexed
        client.close()
        daemon.start(expect_channels=1)
        assert indexed_through(daemon) == 2
        assert found(daemon, "MRNKILLED2") == ["KILL-2"]
    finally:
        daemon.stop()
