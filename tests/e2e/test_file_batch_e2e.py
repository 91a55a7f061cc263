"""Batch files of the file destination through the real daemon: rows appended to one hidden file
per period, which appears under its name, complete, only when the period is over.

The daily test moves the daemon to another day by restarting it in another time zone (POSIX TZ
strings, no tzdata needed): UTC-12 and UTC+14 are always on different calendar days."""

from __future__ import annotations

import re
import sqlite3

import pytest

from support.daemon import MLLP_CHANNEL, Daemon, MllpClient, hl7, wait_for

pytestmark = pytest.mark.slow

WEST, EAST = "WEST+12", "EAST-14"     # POSIX: UTC-12 and UTC+14
HEADER = "account,amount"
BATCH_DESTINATION = """
[[destination]]
name = "agency"
type = "file"
directory = "outbox"
filename = "placements-{{{{ period }}}}.csv"
batch = "{batch}"
batch_header = "{header}"
  [destination.transform]
  inline = "{{{{ msg['PID.18.1'] }}}},{{{{ msg['PV1.46'] }}}}"
  outbound = "text"
"""


def batch_channel(batch: str) -> str:
    return MLLP_CHANNEL.format(source_extra="") + BATCH_DESTINATION.format(batch=batch, header=HEADER)


def send(daemon: Daemon, *accounts: str) -> list[int]:
    client = MllpClient(daemon.ports["placements"])
    try:
        for account in accounts:
            assert client.request(hl7(f"CTL-{account}", account=account))["code"] == "AA"
    finally:
        client.close()
    wanted = [f"CTL-{account}" for account in accounts]

    def all_sent():
        with sqlite3.connect(daemon.db) as conn:
            found = conn.execute(f"SELECT id, status FROM messages WHERE control_id IN "
                                 f"({','.join('?' * len(wanted))})", wanted).fetchall()
        return [row[0] for row in found] if len(found) == len(wanted) and all(
            row[1] == "SENT" for row in found) else None

    return wait_for(all_sent, what="the messages to be SENT")


def visible(daemon: Daemon) -> list[str]:
    outbox = daemon.root / "outbox"
    return sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) if outbox.exists() else []


def parts(daemon: Daemon) -> list[str]:
    partial = daemon.root / "outbox" / ".partial"
    return sorted(p.name for p in partial.glob("*.part")) if partial.exists() else []


def test_daily_batch_is_hidden_until_the_day_is_over(tmp_path):
    d = Daemon(tmp_path, {"placements": batch_channel("daily")}, env={"TZ": WEST})
    d.start(expect_channels=1)
    try:
        send(d, "A1", "A2", "A3")
        assert visible(d) == []                        # the agency sees nothing while the day runs
        [part] = parts(d)
        label = re.fullmatch(r"placements-(\d{8})\.csv\.part", part).group(1)
    finally:
        d.kill()                                       # no goodbye: the part must survive as it is
    d.env["TZ"] = EAST                                 # a later day
    d.start(expect_channels=1)
    try:
        closed = wait_for(lambda: visible(d), what="the batch closed at start-up")
        assert closed == [f"placements-{label}.csv"]
        assert (tmp_path / "outbox" / closed[0]).read_text() == "account,amount\nA1,250.00\nA2,250.00\nA3,250.00\n"
        send(d, "B1")                                  # today's rows go to today's (hidden) file
        assert visible(d) == closed and len(parts(d)) == 1 and parts(d) != [part]
        assert any(f"batch file {closed[0]} closed" in line for line in d.log_lines)
    finally:
        d.stop()


def test_periods_close_by_timer_and_every_row_is_written_once(tmp_path):
    d = Daemon(tmp_path, {"placements": batch_channel("1s")})
    d.start(expect_channels=1)
    try:
        accounts = [f"T{n}" for n in range(6)]
        send(d, *accounts)
        wait_for(lambda: visible(d) and not parts(d), timeout=10, what="every period closed")
        rows = []
        for name in visible(d):
            assert re.fullmatch(r"placements-\d{14}(-\d+)?\.csv", name)
            lines = (tmp_path / "outbox" / name).read_text().splitlines()
            assert lines[0] == HEADER and HEADER not in lines[1:]
            rows += lines[1:]
        assert sorted(rows) == sorted(f"{account},250.00" for account in accounts)
    finally:
        d.stop()


def test_check_refuses_a_batch_filename_without_period(tmp_path):
    channel = batch_channel("daily").replace("placements-{{ period }}.csv", "placements.csv")
    d = Daemon(tmp_path, {"placements": channel})
    result = d.cli("check")
    assert result.returncode != 0 and "{{ period }}" in result.stderr
    bad_period = Daemon(tmp_path / "b", {"placements": batch_channel("weekly")})
    result = bad_period.cli("check")
    assert result.returncode != 0 and "batch" in result.stderr and "daily" in result.stderr
